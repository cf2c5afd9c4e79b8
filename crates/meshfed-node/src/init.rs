//! `meshfed init`: a new mesh identity in a node directory.
//!
//! Creates the mesh CA and its issuing CA, this node's key and certificate (issued by the issuing
//! CA), the issuer key of its component tokens, the admin token and `meshfed.toml`. The mesh CA key can be written outside the node
//! directory ([`InitOptions::root_key_out`]): the gateway renews from the issuing CA key alone.
//! An existing identity is never overwritten unless the caller asks for it
//! ([`IfExists::Replace`], the CLI's `--force`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use meshfed_proto::crypto::{CryptoError, SigningKey, random_fill};
use meshfed_proto::{MeshId, NodeName};
use meshfed_trust::files::{self, FileMode, IfExists, WriteError};
use meshfed_trust::{
    CaError, DEFAULT_CA_VALIDITY, DEFAULT_ISSUING_CA_VALIDITY, FileKeyStore, Fingerprint,
    InvalidKeyName, KeyName, KeyStore, KeyStoreError, MeshCa, NodeIdentity, P384PublicKey,
    TrustBundle, key_to_pkcs8_pem,
};

use crate::config::{CONFIG_FILE, DirPath, IdentityConfig, NodeConfig, StoreConfig};

/// Bytes of randomness in the admin token (256 bits).
pub const ADMIN_TOKEN_BYTES: usize = 32;

/// What to create and where.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The node directory (created if missing, mode 0700).
    pub dir: PathBuf,
    /// The new mesh's id.
    pub mesh: MeshId,
    /// This node's name.
    pub node: NodeName,
    /// `[federation] listen`.
    pub federation_listen: SocketAddr,
    /// `[api] listen`.
    pub api_listen: SocketAddr,
    /// `[node] role`: what `meshfed gateway` or `meshfed broker` will run.
    pub role: crate::config::Role,
    /// Whether an existing identity may be replaced.
    pub if_exists: IfExists,
    /// The time certificates are issued at.
    pub now: SystemTime,
    /// Lifetime of the CA certificate.
    pub ca_validity: Duration,
    /// Lifetime of the node certificate (also written as `node_cert_validity`).
    pub node_cert_validity: Duration,
    /// Where to write the mesh CA key instead of the node directory (mode 0600, never over an
    /// existing file), so that it can be kept offline. `None`: `ca/ca.key` in the directory.
    pub root_key_out: Option<PathBuf>,
}

impl InitOptions {
    /// Options for node `node` of mesh `mesh` in `dir`, with default addresses and lifetimes,
    /// refusing to replace an existing identity.
    pub fn new(dir: PathBuf, mesh: MeshId, node: NodeName, now: SystemTime) -> Self {
        let defaults = NodeConfig::new(mesh.clone(), node.clone());
        Self {
            dir,
            mesh,
            node,
            federation_listen: defaults.federation.listen,
            api_listen: defaults.api.listen,
            role: defaults.node.role,
            if_exists: IfExists::Refuse,
            now,
            ca_validity: DEFAULT_CA_VALIDITY,
            node_cert_validity: defaults.identity.node_cert_validity,
            root_key_out: None,
        }
    }
}

/// What `init` made.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The node directory.
    pub dir: PathBuf,
    /// The node's identity, `meshfed://<mesh>/<node>` (its certificate's SAN URI).
    pub identity: NodeIdentity,
    /// SHA-384 fingerprint of the CA certificate.
    pub ca_fingerprint: Fingerprint,
    /// When the CA certificate expires.
    pub ca_not_after: SystemTime,
    /// When the node certificate expires.
    pub node_cert_not_after: SystemTime,
    /// The files written, in the order written.
    pub files: Vec<WrittenFile>,
    /// What was there before, when an identity was replaced ([`IfExists::Replace`]).
    pub replaced: Option<Replaced>,
}

/// The identity (and store) an `init` with [`IfExists::Replace`] found and replaced.
#[derive(Debug, Clone)]
pub struct Replaced {
    /// The node the old `meshfed.toml` named, `mesh/node`, if it could be read.
    pub node: Option<String>,
    /// The old mesh CA's fingerprint, if its certificate could be read.
    pub ca_fingerprint: Option<Fingerprint>,
    /// Where the old store was moved: its federations trust the old CA, so the new identity
    /// starts with an empty registry. `None` when there was no store.
    pub store_moved_to: Option<PathBuf>,
}

/// A file `init` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// What it holds.
    pub kind: FileKind,
    /// Where it is.
    pub path: PathBuf,
    /// Who may read it.
    pub mode: FileMode,
}

/// What a file written by `init` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The mesh CA's private key.
    CaKey,
    /// The mesh CA's certificate.
    CaCert,
    /// The issuing CA's private key.
    IssuingCaKey,
    /// The issuing CA's certificate.
    IssuingCaCert,
    /// This node's private key.
    NodeKey,
    /// This node's certificate.
    NodeCert,
    /// The key this gateway signs component tokens with (`crate::credentials`).
    TokenIssuerKey,
    /// The admin API token.
    AdminToken,
    /// `meshfed.toml`.
    Config,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CaKey => "mesh CA key",
            Self::CaCert => "mesh CA certificate",
            Self::IssuingCaKey => "issuing CA key",
            Self::IssuingCaCert => "issuing CA certificate",
            Self::NodeKey => "node key",
            Self::NodeCert => "node certificate",
            Self::TokenIssuerKey => "token issuer key",
            Self::AdminToken => "admin token",
            Self::Config => "configuration",
        })
    }
}

/// `init` did not complete.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A file of an identity already exists and replacing was not asked for.
    #[error(
        "{} already exists: {} already holds a meshfed identity; pass --force to replace it",
        path.display(),
        dir.display()
    )]
    AlreadyInitialized {
        /// The existing file.
        path: PathBuf,
        /// The node directory.
        dir: PathBuf,
    },
    /// The file for `--root-key-out` exists: it is never overwritten.
    #[error("{} already exists: the mesh CA key is never written over an existing file", path.display())]
    RootKeyOutExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A configured key path cannot name a key in the file key store.
    #[error("key path is not a key store name")]
    KeyPath(#[from] InvalidKeyName),
    /// The mesh CA or node certificate could not be made.
    #[error("cannot create the mesh identity")]
    Ca(#[from] CaError),
    /// A key or the admin token could not be generated.
    #[error("cannot generate keys or the admin token")]
    Crypto(#[from] CryptoError),
    /// A key could not be stored.
    #[error("cannot store a private key")]
    KeyStore(#[from] KeyStoreError),
    /// A file or directory could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The old store could not be moved aside.
    #[error("cannot move the old store {} aside", path.display())]
    MoveStore {
        /// The old store file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Creates a mesh identity in `opts.dir`: the CA (`ca/ca.crt`, `ca/ca.key` or the file
/// `opts.root_key_out`), its issuing CA (`ca/issuing.crt`, `ca/issuing.key`), this node's
/// certificate (issued by the issuing CA) and key (`node/node.crt`, `node/node.key`), the key
/// component tokens are signed with (`tokens/issuer.key`), the admin token (`admin.token`) and `meshfed.toml` with every setting. Keys and token are written with
/// mode 0600, the directories with mode 0700, every file atomically; `meshfed.toml` is written
/// last.
pub fn init(opts: InitOptions) -> Result<InitReport, InitError> {
    let mut config = NodeConfig::new(opts.mesh.clone(), opts.node.clone());
    config.federation.listen = opts.federation_listen;
    config.api.listen = opts.api_listen;
    config.node.role = opts.role;
    config.identity.node_cert_validity = opts.node_cert_validity;
    let plan = plan(&opts.dir, &config, opts.root_key_out.as_deref());
    if let Some(path) = &opts.root_key_out
        && path.symlink_metadata().is_ok()
    {
        return Err(InitError::RootKeyOutExists { path: path.clone() });
    }
    // Only the files in the node directory make an identity there.
    let in_dir: Vec<WrittenFile> = plan
        .iter()
        .filter(|f| !(f.kind == FileKind::CaKey && opts.root_key_out.is_some()))
        .cloned()
        .collect();
    if opts.if_exists == IfExists::Refuse {
        refuse_existing(&opts.dir, &in_dir)?;
    }
    let previous = existing_identity(&opts.dir, &in_dir);

    let ca = MeshCa::generate(&opts.mesh, opts.now, opts.ca_validity)?;
    let issuing = ca.issue_issuing_ca(opts.now, DEFAULT_ISSUING_CA_VALIDITY)?;
    let node_key = SigningKey::generate()?;
    let node_cert = issuing.issue_node_cert(
        &opts.node,
        &P384PublicKey::of(&node_key),
        opts.now,
        opts.node_cert_validity,
    )?;
    let issuer_key = SigningKey::generate()?;
    let token = admin_token()?;

    let replaced = match previous {
        Some(previous) => Some(replace(&opts.dir, previous, opts.now)?),
        None => None,
    };
    files::create_private_dir(&opts.dir)?;
    let keys = FileKeyStore::new(&opts.dir);
    for file in &plan {
        if let Some(parent) = file.path.parent()
            && !parent.as_os_str().is_empty()
        {
            files::create_private_dir(parent)?;
        }
        let id = &config.identity;
        match file.kind {
            FileKind::CaKey if opts.root_key_out.is_some() => {
                let pem = key_to_pkcs8_pem(ca.key()).map_err(CaError::from)?;
                files::write_file(&file.path, pem.as_bytes(), file.mode, IfExists::Refuse)
                    .map_err(|e| match e {
                        WriteError::Exists { path } => InitError::RootKeyOutExists { path },
                        other => InitError::Write(other),
                    })?;
            }
            FileKind::CaKey => store_key(&keys, &id.ca_key, ca.key(), &opts)?,
            FileKind::IssuingCaKey => store_key(&keys, &id.issuing_ca_key, issuing.key(), &opts)?,
            FileKind::IssuingCaCert => write(file, &issuing.cert_pem(), &opts)?,
            FileKind::NodeKey => store_key(&keys, &id.node_key, &node_key, &opts)?,
            FileKind::CaCert => write(file, &ca.cert_pem(), &opts)?,
            FileKind::NodeCert => write(file, &node_cert.pem(), &opts)?,
            FileKind::TokenIssuerKey => store_key(&keys, &issuer_key_path(), &issuer_key, &opts)?,
            FileKind::AdminToken => write(file, &format!("{token}\n"), &opts)?,
            FileKind::Config => write(file, &config.render(), &opts)?,
        }
    }
    if opts.root_key_out.is_some() {
        // A replaced identity's CA key must not stay behind in the directory.
        let stale = config.identity.ca_key.resolve(&opts.dir);
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(InitError::Write(WriteError::Io {
                    path: stale,
                    source,
                }));
            }
        }
    }
    tracing::info!(
        mesh = %opts.mesh,
        node = %opts.node,
        ca_fingerprint = %ca.fingerprint(),
        dir = %opts.dir.display(),
        "created mesh identity"
    );

    Ok(InitReport {
        dir: opts.dir,
        identity: node_cert.info().identity(),
        ca_fingerprint: ca.fingerprint(),
        ca_not_after: ca.info().not_after,
        node_cert_not_after: node_cert.info().not_after,
        files: plan,
        replaced,
    })
}

/// The identity found in `dir`, read as far as it can be, and where its store is (the path
/// from its `meshfed.toml`, else the default), when any file of `plan` exists.
fn existing_identity(dir: &Path, plan: &[WrittenFile]) -> Option<(Replaced, PathBuf)> {
    if !plan.iter().any(|f| f.path.symlink_metadata().is_ok()) {
        return None;
    }
    let config = NodeConfig::load(dir).ok();
    let (ca_cert, store) = match &config {
        Some(c) => (c.identity.ca_cert.clone(), c.store.path.clone()),
        None => (
            IdentityConfig::default().ca_cert,
            StoreConfig::default().path,
        ),
    };
    let ca_fingerprint = std::fs::read_to_string(ca_cert.resolve(dir))
        .ok()
        .and_then(|pem| TrustBundle::from_pem(&pem).ok())
        .and_then(|b| b.cas().first().map(|ca| ca.fingerprint()));
    let replaced = Replaced {
        node: config.map(|c| format!("{}/{}", c.node.mesh, c.node.name)),
        ca_fingerprint,
        store_moved_to: None,
    };
    Some((replaced, store.resolve(dir)))
}

/// Moves the old identity's store aside, so that the new identity does not inherit
/// federations that trust the old CA.
fn replace(
    dir: &Path,
    (mut previous, store): (Replaced, PathBuf),
    now: SystemTime,
) -> Result<Replaced, InitError> {
    previous.store_moved_to =
        crate::store_file::start_over(dir, &store, now).map_err(|source| InitError::MoveStore {
            path: store,
            source,
        })?;
    Ok(previous)
}

/// The files to write, in order: secrets and certificates first, `meshfed.toml` last, so that
/// an interrupted run never leaves a configuration pointing at missing files.
fn plan(dir: &Path, config: &NodeConfig, root_key_out: Option<&Path>) -> Vec<WrittenFile> {
    let id = &config.identity;
    let config_file = DirPath::from_static(CONFIG_FILE);
    let issuer_key = issuer_key_path();
    let root_key = WrittenFile {
        kind: FileKind::CaKey,
        path: root_key_out.map_or_else(|| id.ca_key.resolve(dir), Path::to_path_buf),
        mode: FileMode::Private,
    };
    let rest: Vec<WrittenFile> = [
        (FileKind::CaCert, &id.ca_cert, FileMode::Public),
        (
            FileKind::IssuingCaKey,
            &id.issuing_ca_key,
            FileMode::Private,
        ),
        (
            FileKind::IssuingCaCert,
            &id.issuing_ca_cert,
            FileMode::Public,
        ),
        (FileKind::NodeKey, &id.node_key, FileMode::Private),
        (FileKind::NodeCert, &id.node_cert, FileMode::Public),
        (FileKind::TokenIssuerKey, &issuer_key, FileMode::Private),
        (
            FileKind::AdminToken,
            &config.api.token_file,
            FileMode::Private,
        ),
        (FileKind::Config, &config_file, FileMode::Public),
    ]
    .into_iter()
    .map(|(kind, path, mode)| WrittenFile {
        kind,
        path: path.resolve(dir),
        mode,
    })
    .collect();
    std::iter::once(root_key).chain(rest).collect()
}

/// Fails on the first planned file that exists, looking at `meshfed.toml` and the CA key first.
fn refuse_existing(dir: &Path, plan: &[WrittenFile]) -> Result<(), InitError> {
    let mut order: Vec<&WrittenFile> = plan.iter().collect();
    order.sort_by_key(|f| match f.kind {
        FileKind::Config => 0,
        FileKind::CaKey => 1,
        _ => 2,
    });
    match order.iter().find(|f| f.path.symlink_metadata().is_ok()) {
        Some(f) => Err(InitError::AlreadyInitialized {
            path: f.path.clone(),
            dir: dir.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// Where the issuer key of component tokens is kept.
fn issuer_key_path() -> DirPath {
    DirPath::from_static(crate::credentials::ISSUER_KEY)
}

fn store_key(
    keys: &FileKeyStore,
    path: &DirPath,
    key: &SigningKey,
    opts: &InitOptions,
) -> Result<(), InitError> {
    let name: KeyName = path.as_str().parse()?;
    match keys.store(&name, key, opts.if_exists) {
        Ok(()) => Ok(()),
        Err(KeyStoreError::Write(e)) => Err(already_initialized(e, &opts.dir)),
        Err(e) => Err(e.into()),
    }
}

fn write(file: &WrittenFile, text: &str, opts: &InitOptions) -> Result<(), InitError> {
    files::write_file(&file.path, text.as_bytes(), file.mode, opts.if_exists)
        .map_err(|e| already_initialized(e, &opts.dir))
}

/// Reports a refused overwrite as the identity existing; other write errors as they are.
fn already_initialized(e: WriteError, dir: &Path) -> InitError {
    match e {
        WriteError::Exists { path } => InitError::AlreadyInitialized {
            path,
            dir: dir.to_path_buf(),
        },
        other => InitError::Write(other),
    }
}

/// A fresh admin token: 256 random bits as 64 lowercase hex digits.
pub(crate) fn admin_token() -> Result<String, CryptoError> {
    let mut bytes = [0u8; ADMIN_TOKEN_BYTES];
    random_fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    use meshfed_trust::{KeyPurpose, TrustBundle, verify_node_cert};
    use rustls_pki_types::CertificateDer;

    use super::*;

    fn opts(dir: &Path) -> InitOptions {
        InitOptions::new(
            dir.join("meshfed"),
            "plant-a".parse().unwrap(),
            "gw1".parse().unwrap(),
            SystemTime::now(),
        )
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_writes_every_file_with_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let report = init(opts(tmp.path())).unwrap();
        let dir = tmp.path().join("meshfed");
        let expected = [
            ("ca/ca.key", 0o600),
            ("ca/ca.crt", 0o644),
            ("ca/issuing.key", 0o600),
            ("ca/issuing.crt", 0o644),
            ("node/node.key", 0o600),
            ("node/node.crt", 0o644),
            ("tokens/issuer.key", 0o600),
            ("admin.token", 0o600),
            ("meshfed.toml", 0o644),
        ];
        let written: Vec<&Path> = report.files.iter().map(|f| f.path.as_path()).collect();
        let wanted: Vec<PathBuf> = expected.iter().map(|(p, _)| dir.join(p)).collect();
        assert_eq!(
            written,
            wanted.iter().map(PathBuf::as_path).collect::<Vec<_>>()
        );
        for (rel, bits) in expected {
            assert_eq!(mode(&dir.join(rel)), bits, "{rel}");
        }
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("ca")), 0o700);
        assert_eq!(report.identity.uri(), "meshfed://plant-a/gw1");
    }

    #[test]
    fn admin_token_is_256_bits_of_hex() {
        let tmp = tempfile::tempdir().unwrap();
        init(opts(tmp.path())).unwrap();
        let token = fs::read_to_string(tmp.path().join("meshfed/admin.token")).unwrap();
        let token = token.trim_end();
        assert_eq!(token.len(), 64);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn written_config_loads_and_its_node_cert_verifies_against_its_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = opts(tmp.path());
        o.federation_listen = "127.0.0.1:17443".parse().unwrap();
        let now = o.now;
        let report = init(o).unwrap();
        let cfg = NodeConfig::load(&report.dir).unwrap();
        assert_eq!(cfg.federation.listen.to_string(), "127.0.0.1:17443");
        let ca_pem = fs::read_to_string(cfg.identity.ca_cert.resolve(&report.dir)).unwrap();
        let bundle = TrustBundle::from_pem(&ca_pem).unwrap();
        assert_eq!(bundle.cas()[0].fingerprint(), report.ca_fingerprint);
        let node_pem = fs::read_to_string(cfg.identity.node_cert.resolve(&report.dir)).unwrap();
        let der = CertificateDer::from(pem::parse(&node_pem).unwrap().into_contents());
        let issuing_pem =
            fs::read_to_string(cfg.identity.issuing_ca_cert.resolve(&report.dir)).unwrap();
        let issuing = [CertificateDer::from(
            pem::parse(&issuing_pem).unwrap().into_contents(),
        )];
        let info = verify_node_cert(&bundle, &der, &issuing, KeyPurpose::ServerAuth, now).unwrap();
        assert_eq!(info.identity(), report.identity);
        assert_eq!(info.not_after, report.node_cert_not_after);
        // The stored node key is the one the certificate was issued for.
        let key = FileKeyStore::new(&report.dir)
            .load(&"node/node.key".parse().unwrap())
            .unwrap();
        assert_eq!(info.public_key, P384PublicKey::of(&key));
    }

    #[test]
    fn init_refuses_an_existing_identity_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        init(opts(tmp.path())).unwrap();
        let dir = tmp.path().join("meshfed");
        let before = snapshot(&dir);
        let err = init(opts(tmp.path())).unwrap_err();
        let InitError::AlreadyInitialized { path, .. } = &err else {
            panic!("expected AlreadyInitialized, got {err:?}");
        };
        assert!(path.ends_with("meshfed.toml"), "{}", path.display());
        assert!(err.to_string().contains("pass --force"), "{err}");
        assert_eq!(snapshot(&dir), before);
    }

    #[test]
    fn init_refuses_when_only_the_ca_key_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("meshfed");
        fs::create_dir_all(dir.join("ca")).unwrap();
        fs::write(dir.join("ca/ca.key"), "precious").unwrap();
        let err = init(opts(tmp.path())).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "{} already exists",
                dir.join("ca/ca.key").display()
            )),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(dir.join("ca/ca.key")).unwrap(),
            "precious"
        );
        assert!(!dir.join("meshfed.toml").exists());
    }

    #[test]
    fn init_with_replace_makes_a_new_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let first = init(opts(tmp.path())).unwrap();
        let mut again = opts(tmp.path());
        again.if_exists = IfExists::Replace;
        let second = init(again).unwrap();
        assert_ne!(first.ca_fingerprint, second.ca_fingerprint);
        let dir = tmp.path().join("meshfed");
        assert_eq!(mode(&dir.join("ca/ca.key")), 0o600);
        let ca_pem = fs::read_to_string(dir.join("ca/ca.crt")).unwrap();
        let bundle = TrustBundle::from_pem(&ca_pem).unwrap();
        assert_eq!(bundle.cas()[0].fingerprint(), second.ca_fingerprint);
    }

    #[test]
    fn init_with_replace_moves_the_old_store_aside_and_names_the_old_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let first = init(opts(tmp.path())).unwrap();
        assert!(first.replaced.is_none());
        let dir = tmp.path().join("meshfed");
        fs::create_dir_all(dir.join("store")).unwrap();
        fs::write(dir.join("store/meshfed.db"), b"old registry").unwrap();
        fs::write(dir.join("store.id"), b"0123\n").unwrap();
        let mut again = opts(tmp.path());
        again.if_exists = IfExists::Replace;
        let second = init(again).unwrap();
        let replaced = second.replaced.unwrap();
        assert_eq!(replaced.node.as_deref(), Some("plant-a/gw1"));
        assert_eq!(replaced.ca_fingerprint, Some(first.ca_fingerprint));
        let moved = replaced.store_moved_to.unwrap();
        assert_eq!(fs::read(&moved).unwrap(), b"old registry");
        assert!(!dir.join("store/meshfed.db").exists());
        assert!(!dir.join("store.id").exists());
    }

    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for sub in ["", "ca", "node"] {
            for entry in fs::read_dir(dir.join(sub)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    out.push((path.clone(), fs::read(&path).unwrap()));
                }
            }
        }
        out.sort();
        out
    }
}
