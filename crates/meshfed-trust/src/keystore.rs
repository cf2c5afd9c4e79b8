//! Keys at rest: the [`KeyStore`] abstraction and its file backend, [`FileKeyStore`]
//! (PKCS#8 PEM files, mode `0600`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::files::{self, FileMode, IfExists, WriteError};
use meshfed_proto::crypto::SigningKey;

use crate::key::{KeyError, key_from_pkcs8_pem, key_to_pkcs8_pem};

/// The name of a key in a [`KeyStore`]: one or more `/`-separated segments, each
/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,63}`, e.g. `node/node.key`.
///
/// No segment starts with a dot, so a name never climbs out of its store (`..`) or hides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyName(String);

/// A key name broke its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid key name {value:?}: must be '/'-separated segments of 1 to 64 letters, digits, \
     '.', '_' or '-', not starting with '.' or '-'"
)]
pub struct InvalidKeyName {
    /// The rejected value, cut to a readable length.
    pub value: String,
}

impl KeyName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyName {
    type Err = InvalidKeyName;

    fn from_str(s: &str) -> Result<Self, InvalidKeyName> {
        let segment_ok = |seg: &str| {
            let b = seg.as_bytes();
            (1..=64).contains(&b.len())
                && b.first()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        };
        if s.len() > 255 || !s.split('/').all(segment_ok) {
            return Err(InvalidKeyName {
                value: s.chars().take(80).collect(),
            });
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key could not be loaded from or stored in a key store.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// No key of that name.
    #[error("key {name} not found at {}", path.display())]
    NotFound {
        /// The key's name.
        name: KeyName,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A key file may be read by others than its owner.
    #[error(
        "key file {} is accessible to group or others (mode {mode:04o}); it must be mode 0600",
        path.display()
    )]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file could not be read.
    #[error("cannot read key file {}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// The stored key is not usable.
    #[error("key file {} does not hold a usable key", path.display())]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// The key could not be exported for storage.
    #[error("key {name} cannot be exported for storage")]
    Export {
        /// The key's name.
        name: KeyName,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// The key could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Where signing keys live at rest. A backend stores keys by [`KeyName`] and hands them back as
/// [`SigningKey`]s.
pub trait KeyStore {
    /// Loads the key stored under `name`.
    fn load(&self, name: &KeyName) -> Result<SigningKey, KeyStoreError>;

    /// Stores `key` under `name`; an existing key of that name is replaced only with
    /// [`IfExists::Replace`].
    fn store(
        &self,
        name: &KeyName,
        key: &SigningKey,
        if_exists: IfExists,
    ) -> Result<(), KeyStoreError>;
}

/// Keys as unencrypted PKCS#8 PEM files under a root directory, written atomically with mode
/// `0600` (and refused on load if others may read them).
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    root: PathBuf,
}

impl FileKeyStore {
    /// A store whose key `a/b.key` is the file `<root>/a/b.key`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The file that holds (or would hold) the key `name`.
    pub fn path(&self, name: &KeyName) -> PathBuf {
        self.root.join(name.as_str())
    }
}

impl KeyStore for FileKeyStore {
    fn load(&self, name: &KeyName) -> Result<SigningKey, KeyStoreError> {
        let path = self.path(name);
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeyStoreError::NotFound {
                    name: name.clone(),
                    path,
                });
            }
            Err(source) => return Err(KeyStoreError::Read { path, source }),
        };
        check_private(&path, &meta)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(source) => return Err(KeyStoreError::Read { path, source }),
        };
        key_from_pkcs8_pem(&text).map_err(|source| KeyStoreError::Invalid { path, source })
    }

    fn store(
        &self,
        name: &KeyName,
        key: &SigningKey,
        if_exists: IfExists,
    ) -> Result<(), KeyStoreError> {
        let pem = key_to_pkcs8_pem(key).map_err(|source| KeyStoreError::Export {
            name: name.clone(),
            source,
        })?;
        let path = self.path(name);
        if let Some(dir) = path.parent() {
            files::create_private_dir(dir)?;
        }
        files::write_file(&path, pem.as_bytes(), FileMode::Private, if_exists)?;
        Ok(())
    }
}

/// Refuses a key file that group or others may access.
#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), KeyStoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyStoreError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), KeyStoreError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn name(s: &str) -> KeyName {
        s.parse().unwrap()
    }

    #[test]
    fn stored_key_loads_back_and_its_file_is_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(dir.path());
        let key = SigningKey::generate().unwrap();
        store
            .store(&name("node/node.key"), &key, IfExists::Refuse)
            .unwrap();
        let path = dir.path().join("node/node.key");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
        let loaded = store.load(&name("node/node.key")).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
    }

    #[test]
    fn store_refuses_to_overwrite_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(dir.path());
        let first = SigningKey::generate().unwrap();
        let second = SigningKey::generate().unwrap();
        store
            .store(&name("ca.key"), &first, IfExists::Refuse)
            .unwrap();
        let err = store
            .store(&name("ca.key"), &second, IfExists::Refuse)
            .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(
            store.load(&name("ca.key")).unwrap().public_key(),
            first.public_key()
        );
        store
            .store(&name("ca.key"), &second, IfExists::Replace)
            .unwrap();
        assert_eq!(
            store.load(&name("ca.key")).unwrap().public_key(),
            second.public_key()
        );
    }

    #[test]
    fn load_refuses_a_key_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(dir.path());
        store
            .store(
                &name("k"),
                &SigningKey::generate().unwrap(),
                IfExists::Refuse,
            )
            .unwrap();
        let path = dir.path().join("k");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.load(&name("k")).unwrap_err();
        assert!(
            matches!(err, KeyStoreError::TooOpen { mode: 0o644, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("mode 0644"), "{err}");
    }

    #[test]
    fn missing_key_is_not_found_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileKeyStore::new(dir.path())
            .load(&name("nope.key"))
            .unwrap_err();
        assert!(matches!(err, KeyStoreError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("nope.key"), "{err}");
    }

    #[test]
    fn key_file_with_garbage_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(dir.path());
        files::write_file(
            &dir.path().join("k"),
            b"garbage",
            FileMode::Private,
            IfExists::Refuse,
        )
        .unwrap();
        let err = store.load(&name("k")).unwrap_err();
        assert!(matches!(err, KeyStoreError::Invalid { .. }), "{err:?}");
    }

    #[test]
    fn key_names_cannot_escape_the_store() {
        for bad in [
            "", "../x", "a/../b", ".hidden", "a//b", "/abs", "a/", "-x", "a b",
        ] {
            let err = bad.parse::<KeyName>().unwrap_err();
            assert!(err.to_string().contains("invalid key name"), "{bad}: {err}");
        }
        for good in ["ca/ca.key", "node.key", "a_b/c-d.pem"] {
            assert_eq!(good.parse::<KeyName>().unwrap().as_str(), good);
        }
    }
}
