//! Writing files whole and durably, with the right permissions from the first byte.
//!
//! A file is written to a temporary sibling created with its final mode (never `chmod`ed after
//! the fact), synced, then moved into place and the directory synced. A reader therefore sees the
//! old file or the new one, never a torn one, and a secret is never readable by others, even
//! briefly.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Who may read a file written here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// Owner only (`0600`): private keys, tokens.
    Private,
    /// Owner writes, everyone reads (`0644`): certificates, configuration.
    Public,
}

impl FileMode {
    /// The Unix permission bits.
    pub fn bits(self) -> u32 {
        match self {
            Self::Private => 0o600,
            Self::Public => 0o644,
        }
    }
}

/// What to do when the target file already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Leave the existing file alone and fail with [`WriteError::Exists`].
    Refuse,
    /// Replace it atomically.
    Replace,
}

/// A file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The target exists and [`IfExists::Refuse`] was asked for.
    #[error("{} already exists", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A directory could not be created.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// The file system refused.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file or directory being written.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
}

/// Writes `contents` to `path` atomically and durably with the given mode.
///
/// The parent directory must exist. With [`IfExists::Refuse`] an existing file is left untouched
/// (the check and the write are one atomic step: a hard link that fails if the name is taken).
pub fn write_file(
    path: &Path,
    contents: &[u8],
    mode: FileMode,
    if_exists: IfExists,
) -> Result<(), WriteError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError::Io { path, source }
    };
    let dir = parent_dir(path);
    let tmp = temp_sibling(path).map_err(io_err(path))?;
    let placed = write_synced(&tmp, contents, mode)
        .map_err(io_err(&tmp))
        .and_then(|()| place(&tmp, path, if_exists));
    if placed.is_err() || if_exists == IfExists::Refuse {
        // After a hard link the temporary name is redundant; after a failure it is litter.
        // Removing it is best effort: the result that matters is `placed`.
        let _ = fs::remove_file(&tmp);
    }
    placed?;
    sync_dir(dir).map_err(io_err(dir))
}

/// Creates `path` and any missing parents with mode `0700`. Existing directories keep theirs.
pub fn create_private_dir(path: &Path) -> Result<(), WriteError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .map_err(|source| WriteError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_sibling(path: &Path) -> io::Result<PathBuf> {
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce)
        .map_err(|_| io::Error::other("random number generator failed"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", hex::encode(nonce)));
    Ok(parent_dir(path).join(tmp_name))
}

fn write_synced(tmp: &Path, contents: &[u8], mode: FileMode) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode.bits());
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(tmp)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn place(tmp: &Path, path: &Path, if_exists: IfExists) -> Result<(), WriteError> {
    let result = match if_exists {
        IfExists::Replace => fs::rename(tmp, path),
        IfExists::Refuse => fs::hard_link(tmp, path),
    };
    result.map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => WriteError::Exists {
            path: path.to_path_buf(),
        },
        _ => WriteError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    // On Unix a directory is synced through a read-only handle to it; elsewhere the rename is
    // as durable as it gets.
    if cfg!(unix) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_file_is_created_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_file(&path, b"s3cret", FileMode::Private, IfExists::Refuse).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"s3cret");
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn refuse_leaves_an_existing_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.crt");
        fs::write(&path, b"old").unwrap();
        let err = write_file(&path, b"new", FileMode::Public, IfExists::Refuse).unwrap_err();
        assert!(matches!(err, WriteError::Exists { .. }), "{err:?}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn replace_swaps_content_and_applies_the_new_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_file(&path, b"new", FileMode::Private, IfExists::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_parent_directory_is_an_io_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope/file");
        let err = write_file(&path, b"x", FileMode::Public, IfExists::Refuse).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn private_dir_gets_mode_0700() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b");
        create_private_dir(&path).unwrap();
        assert_eq!(mode_of(&path), 0o700);
        assert_eq!(mode_of(&dir.path().join("a")), 0o700);
    }
}
