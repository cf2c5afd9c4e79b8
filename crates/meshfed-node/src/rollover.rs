//! `meshfed ca rotate | retire-old`: a mesh CA rollover, done on the node directory where the
//! mesh's root key is (DESIGN.md §2).
//!
//! 1. [`rotate`] makes a new mesh CA and an issuing CA below it, and writes the trust bundle
//!    `old + new` (`ca/ca.crt`) with a statement of it signed by the old CA
//!    (`ca/bundle.statement`). The node keeps issuing from the old issuing CA; the new one, and
//!    the new root key unless it goes elsewhere, wait in `ca/next/`. The running gateway sends
//!    the statement to every partner, which checks it against the bundle it stored, stores the
//!    new one and acknowledges it.
//! 2. [`retire_old`], once every partner has acknowledged, makes the bundle the new CA alone,
//!    signed by the new CA, moves the new issuing CA in, and issues this node a certificate
//!    from it. After the gateway announces it, partners verify this mesh against the new CA
//!    alone.
//!
//! Statements carry a serial that only grows ([`BundleStatement`]): a partner refuses an older
//! one, so a replayed rotation statement cannot bring a retired CA back. Each step writes its
//! files one by one, atomically, `ca/ca.crt` last, and removes `ca/next/` only at the very end:
//! a step interrupted half way can be run again.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use meshfed_proto::statement::{BundleStatement, SignedStatement, StatementKind};
use meshfed_proto::{MeshId, crypto::SigningKey};
use meshfed_trust::files::{self, FileMode, IfExists, WriteError};
use meshfed_trust::{
    CaError, DEFAULT_CA_VALIDITY, DEFAULT_ISSUING_CA_VALIDITY, Fingerprint, IssuingCa, MeshCa,
    P384PublicKey, TrustBundle, key_from_pkcs8_pem, key_to_pkcs8_pem, sign_statement,
};
use serde_bytes::ByteBuf;

use crate::config::NodeConfig;

/// File name of the signed bundle statement, beside the mesh CA certificate.
pub const STATEMENT_FILE: &str = "bundle.statement";
/// Directory, beside the mesh CA certificate, where the next CA waits during a rollover.
pub const NEXT_DIR: &str = "next";

/// Where the rollover's files are, from the node's configuration.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// The trust bundle: the mesh CA certificate, two during a rollover.
    pub bundle: PathBuf,
    /// The mesh CA key, when it is kept in the node directory.
    pub root_key: PathBuf,
    /// The issuing CA certificate and key the node issues from.
    pub issuing_cert: PathBuf,
    /// See `issuing_cert`.
    pub issuing_key: PathBuf,
    /// The node's certificate and key.
    pub node_cert: PathBuf,
    /// See `node_cert`.
    pub node_key: PathBuf,
    /// The latest signed bundle statement.
    pub statement: PathBuf,
    /// The next CA, during a rollover.
    pub next: PathBuf,
}

impl CaFiles {
    /// The files of the node in `dir` configured by `config`.
    pub fn of(dir: &Path, config: &NodeConfig) -> Self {
        let id = &config.identity;
        let bundle = id.ca_cert.resolve(dir);
        let beside = bundle
            .parent()
            .map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
        Self {
            root_key: id.ca_key.resolve(dir),
            issuing_cert: id.issuing_ca_cert.resolve(dir),
            issuing_key: id.issuing_ca_key.resolve(dir),
            node_cert: id.node_cert.resolve(dir),
            node_key: id.node_key.resolve(dir),
            statement: beside.join(STATEMENT_FILE),
            next: beside.join(NEXT_DIR),
            bundle,
        }
    }

    fn next_root_key(&self) -> PathBuf {
        self.next.join("ca.key")
    }

    fn next_issuing_cert(&self) -> PathBuf {
        self.next.join("issuing.crt")
    }

    fn next_issuing_key(&self) -> PathBuf {
        self.next.join("issuing.key")
    }
}

/// Why a rollover step could not be done. Nothing was written unless the error says so.
#[derive(Debug, thiserror::Error)]
pub enum RolloverError {
    /// A file could not be read.
    #[error("cannot read the {what} {}", path.display())]
    Read {
        /// What the file holds.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds something unusable.
    #[error("the {what} {} is not usable: {reason}", path.display())]
    Invalid {
        /// What the file holds.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `rotate` while a rollover is under way.
    #[error(
        "a CA rollover is already under way ({} holds two CAs): finish it with `meshfed ca retire-old` first",
        path.display()
    )]
    InProgress {
        /// The bundle file.
        path: PathBuf,
    },
    /// `retire-old` without a rollover under way.
    #[error(
        "no CA rollover is under way ({} holds one CA): start one with `meshfed ca rotate`",
        path.display()
    )]
    NotInProgress {
        /// The bundle file.
        path: PathBuf,
    },
    /// The root key is not in the node directory and was not given.
    #[error(
        "the mesh CA key is not at {}: run this where the key is, with --root-key FILE",
        path.display()
    )]
    NoRootKey {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The key given does not belong to the CA it must sign for.
    #[error("{} is not the key of the {which} mesh CA ({fingerprint})", path.display())]
    WrongRootKey {
        /// The key file.
        path: PathBuf,
        /// "current" or "new".
        which: &'static str,
        /// The CA it should belong to.
        fingerprint: Fingerprint,
    },
    /// The root key came from outside the node directory, so the new one must go there too.
    #[error(
        "the mesh CA key was given with --root-key: say where the new one goes with --new-root-key-out FILE, so it too stays out of the node directory"
    )]
    NewRootKeyOutMissing,
    /// Making the new CA or a certificate failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// Signing failed.
    #[error("signing the bundle statement: {0}")]
    Sign(String),
    /// A file could not be written (files before it in the step's order were).
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl RolloverError {
    /// Whether the operator asked for something that cannot be done now (usage), rather than
    /// the step failing.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::InProgress { .. }
                | Self::NotInProgress { .. }
                | Self::NoRootKey { .. }
                | Self::NewRootKeyOutMissing
                | Self::WrongRootKey { .. }
        )
    }
}

/// What `rotate` takes besides the node's files.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// The current mesh CA key, when it is not in the node directory.
    pub root_key: Option<PathBuf>,
    /// Where to write the new mesh CA key (mode 0600, never over a file); required with
    /// `root_key`. Default: `ca/next/ca.key`, moved to `ca/ca.key` by `retire-old`.
    pub new_root_key_out: Option<PathBuf>,
    /// When the new CA starts.
    pub now: SystemTime,
}

/// What `retire_old` takes besides the node's files.
#[derive(Debug, Clone)]
pub struct RetireOptions {
    /// The new mesh CA key, when `rotate` wrote it outside the node directory.
    pub root_key: Option<PathBuf>,
    /// When the statement and the node certificate are issued.
    pub now: SystemTime,
    /// Lifetime of the node certificate issued from the new issuing CA.
    pub node_cert_validity: std::time::Duration,
}

/// What a step did.
#[derive(Debug, Clone)]
pub struct RolloverReport {
    /// The mesh.
    pub mesh: MeshId,
    /// The bundle now, the CA in use first.
    pub cas: Vec<Fingerprint>,
    /// The serial of the statement written.
    pub serial: u64,
    /// Where the new root key went (rotate).
    pub new_root_key: Option<PathBuf>,
}

/// Starts a CA rollover: see the module documentation.
pub fn rotate(files: &CaFiles, opts: &RotateOptions) -> Result<RolloverReport, RolloverError> {
    let bundle_pem = read("trust bundle", &files.bundle)?;
    let bundle = TrustBundle::from_pem(&bundle_pem)
        .map_err(|e| invalid("trust bundle", &files.bundle, e.to_string()))?;
    if bundle.cas().len() > 1 {
        return Err(RolloverError::InProgress {
            path: files.bundle.clone(),
        });
    }
    if opts.root_key.is_some() && opts.new_root_key_out.is_none() {
        return Err(RolloverError::NewRootKeyOutMissing);
    }
    let key_path = opts
        .root_key
        .clone()
        .unwrap_or_else(|| files.root_key.clone());
    let old = load_root(&bundle_pem, &key_path, "current", &bundle)?;
    let serial = last_serial(files)? + 1;

    let new = MeshCa::generate(bundle.mesh(), opts.now, DEFAULT_CA_VALIDITY)?;
    let issuing = new.issue_issuing_ca(opts.now, DEFAULT_ISSUING_CA_VALIDITY)?;
    let cas = vec![old.cert_der().to_vec(), new.cert_der().to_vec()];
    let statement = sign(bundle.mesh(), serial, opts.now, &cas, &issuing, &old)?;

    files::create_private_dir(&files.next)?;
    let new_key_path = opts
        .new_root_key_out
        .clone()
        .unwrap_or_else(|| files.next_root_key());
    let if_exists = if opts.new_root_key_out.is_some() {
        IfExists::Refuse
    } else {
        IfExists::Replace
    };
    write_key(&new_key_path, new.key(), if_exists)?;
    write_key(&files.next_issuing_key(), issuing.key(), IfExists::Replace)?;
    write_public(&files.next_issuing_cert(), issuing.cert_pem().as_bytes())?;
    write_public(&files.statement, &statement.encode())?;
    write_public(
        &files.bundle,
        format!("{}{}", old.cert_pem(), new.cert_pem()).as_bytes(),
    )?;
    tracing::info!(old = %old.fingerprint(), new = %new.fingerprint(), serial, "started a CA rollover");
    Ok(RolloverReport {
        mesh: bundle.mesh().clone(),
        cas: vec![old.fingerprint(), new.fingerprint()],
        serial,
        new_root_key: Some(new_key_path),
    })
}

/// Ends a CA rollover: see the module documentation.
pub fn retire_old(files: &CaFiles, opts: &RetireOptions) -> Result<RolloverReport, RolloverError> {
    let bundle_pem = read("trust bundle", &files.bundle)?;
    let bundle = TrustBundle::from_pem(&bundle_pem)
        .map_err(|e| invalid("trust bundle", &files.bundle, e.to_string()))?;
    let [_old, new_ca] = bundle.cas() else {
        return Err(RolloverError::NotInProgress {
            path: files.bundle.clone(),
        });
    };
    let new_bundle = TrustBundle::new(vec![new_ca.der().clone()])
        .map_err(|e| invalid("trust bundle", &files.bundle, e.to_string()))?;
    let new_pem = new_bundle.to_pem();
    let key_path = opts
        .root_key
        .clone()
        .unwrap_or_else(|| files.next_root_key());
    let new = load_root(&new_pem, &key_path, "new", &new_bundle)?;
    let issuing = IssuingCa::from_pem(
        &read("next issuing CA certificate", &files.next_issuing_cert())?,
        &read("next issuing CA key", &files.next_issuing_key())?,
        &new_bundle,
    )
    .map_err(|e| {
        invalid(
            "next issuing CA",
            &files.next_issuing_cert(),
            crate::gateway::error::chain(&e),
        )
    })?;
    let node_key = key_from_pkcs8_pem(&read("node key", &files.node_key)?)
        .map_err(|e| invalid("node key", &files.node_key, e.to_string()))?;
    let node_pem = read("node certificate", &files.node_cert)?;
    let node_info = meshfed_trust::cert::cert_der_from_pem(&node_pem)
        .and_then(|der| meshfed_trust::inspect_node_cert(&der))
        .map_err(|e| invalid("node certificate", &files.node_cert, e.to_string()))?;
    let node_cert = issuing.issue_node_cert(
        &node_info.node,
        &P384PublicKey::of(&node_key),
        opts.now,
        opts.node_cert_validity,
    )?;
    let serial = last_serial(files)? + 1;
    let statement = sign(
        new_bundle.mesh(),
        serial,
        opts.now,
        &[new.cert_der().to_vec()],
        &issuing,
        &new,
    )?;

    write_public(&files.statement, &statement.encode())?;
    write_key(&files.issuing_key, issuing.key(), IfExists::Replace)?;
    write_public(&files.issuing_cert, issuing.cert_pem().as_bytes())?;
    write_public(&files.node_cert, node_cert.pem().as_bytes())?;
    if opts.root_key.is_none() {
        // The new root key waited in the directory: it takes the old one's place.
        write_key(&files.root_key, new.key(), IfExists::Replace)?;
    } else {
        // Kept elsewhere: the retired key must not stay behind.
        remove(&files.root_key)?;
    }
    write_public(&files.bundle, new.cert_pem().as_bytes())?;
    match std::fs::remove_dir_all(&files.next) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(RolloverError::Write(WriteError::Io {
                path: files.next.clone(),
                source,
            }));
        }
    }
    tracing::info!(ca = %new.fingerprint(), serial, "retired the old mesh CA");
    Ok(RolloverReport {
        mesh: new_bundle.mesh().clone(),
        cas: vec![new.fingerprint()],
        serial,
        new_root_key: None,
    })
}

/// The latest signed bundle statement of the node, if a rollover ever wrote one.
pub fn read_statement(files: &CaFiles) -> Result<Option<SignedStatement>, RolloverError> {
    let bytes = match std::fs::read(&files.statement) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RolloverError::Read {
                what: "bundle statement",
                path: files.statement.clone(),
                source,
            });
        }
    };
    let statement = SignedStatement::decode(&bytes)
        .map_err(|e| invalid("bundle statement", &files.statement, e.to_string()))?;
    Ok(Some(statement))
}

fn last_serial(files: &CaFiles) -> Result<u64, RolloverError> {
    match read_statement(files)? {
        None => Ok(0),
        Some(s) => BundleStatement::decode(&s.body)
            .map(|b| b.serial)
            .map_err(|e| invalid("bundle statement", &files.statement, e.to_string())),
    }
}

fn sign(
    mesh: &MeshId,
    serial: u64,
    now: SystemTime,
    cas: &[Vec<u8>],
    issuing: &IssuingCa,
    signer: &MeshCa,
) -> Result<SignedStatement, RolloverError> {
    let body = BundleStatement {
        mesh: mesh.clone(),
        serial,
        issued_at: crate::clock::timestamp(now),
        cas: cas.iter().cloned().map(ByteBuf::from).collect(),
        issuing: vec![ByteBuf::from(issuing.cert_der().to_vec())],
    };
    sign_statement(
        StatementKind::TrustBundle,
        body.encode(),
        signer.key(),
        vec![signer.cert_der().to_vec()],
    )
    .map_err(|e| RolloverError::Sign(e.to_string()))
}

/// The CA of `cert_pem` (the first certificate) with the key at `key_path`, which must be its.
fn load_root(
    cert_pem: &str,
    key_path: &Path,
    which: &'static str,
    bundle: &TrustBundle,
) -> Result<MeshCa, RolloverError> {
    let key_pem = match std::fs::read_to_string(key_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RolloverError::NoRootKey {
                path: key_path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(RolloverError::Read {
                what: "mesh CA key",
                path: key_path.to_path_buf(),
                source,
            });
        }
    };
    let fingerprint = bundle
        .cas()
        .first()
        .map(|c| c.fingerprint())
        .unwrap_or_else(|| Fingerprint::of(b""));
    MeshCa::from_pem(cert_pem, &key_pem).map_err(|e| match e {
        CaError::KeyMismatch => RolloverError::WrongRootKey {
            path: key_path.to_path_buf(),
            which,
            fingerprint,
        },
        other => invalid("mesh CA", key_path, crate::gateway::error::chain(&other)),
    })
}

fn read(what: &'static str, path: &Path) -> Result<String, RolloverError> {
    std::fs::read_to_string(path).map_err(|source| RolloverError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(what: &'static str, path: &Path, reason: impl Into<String>) -> RolloverError {
    RolloverError::Invalid {
        what,
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn write_key(path: &Path, key: &SigningKey, if_exists: IfExists) -> Result<(), RolloverError> {
    let pem = key_to_pkcs8_pem(key).map_err(CaError::from)?;
    files::write_file(path, pem.as_bytes(), FileMode::Private, if_exists)?;
    Ok(())
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), RolloverError> {
    files::write_file(path, bytes, FileMode::Public, IfExists::Replace)?;
    Ok(())
}

fn remove(path: &Path) -> Result<(), RolloverError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RolloverError::Write(WriteError::Io {
            path: path.to_path_buf(),
            source,
        })),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshfed_trust::{KeyPurpose, Signer, verify_node_cert, verify_statement};
    use rustls_pki_types::CertificateDer;

    use super::*;
    use crate::init::{InitOptions, init};

    struct Node {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        files: CaFiles,
        now: SystemTime,
    }

    fn node() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let report = init(InitOptions::new(
            tmp.path().join("meshfed"),
            "plant-a".parse().unwrap(),
            "gw1".parse().unwrap(),
            now,
        ))
        .unwrap();
        let config = NodeConfig::load(&report.dir).unwrap();
        let files = CaFiles::of(&report.dir, &config);
        Node {
            _tmp: tmp,
            dir: report.dir,
            files,
            now,
        }
    }

    fn rotate_opts(now: SystemTime) -> RotateOptions {
        RotateOptions {
            root_key: None,
            new_root_key_out: None,
            now,
        }
    }

    fn retire_opts(now: SystemTime) -> RetireOptions {
        RetireOptions {
            root_key: None,
            now,
            node_cert_validity: Duration::from_secs(3600),
        }
    }

    fn bundle(files: &CaFiles) -> TrustBundle {
        TrustBundle::from_pem(&std::fs::read_to_string(&files.bundle).unwrap()).unwrap()
    }

    fn stated(files: &CaFiles) -> (SignedStatement, BundleStatement) {
        let statement = read_statement(files).unwrap().unwrap();
        let body = BundleStatement::decode(&statement.body).unwrap();
        (statement, body)
    }

    #[test]
    fn rotate_makes_a_bundle_of_both_cas_signed_by_the_old_one() {
        let n = node();
        let before = bundle(&n.files);
        let report = rotate(&n.files, &rotate_opts(n.now)).unwrap();
        let after = bundle(&n.files);
        assert_eq!(after.cas().len(), 2);
        assert_eq!(after.cas()[0].fingerprint(), before.cas()[0].fingerprint());
        assert_eq!(report.cas[1], after.cas()[1].fingerprint());
        assert_eq!(report.serial, 1);
        let (statement, body) = stated(&n.files);
        assert_eq!(body.serial, 1);
        assert_eq!(body.cas.len(), 2);
        // A partner holding only the old CA accepts it: it is the old CA's signature.
        let signer = verify_statement(&before, &statement, n.now).unwrap();
        assert_eq!(signer, Signer::Ca(before.cas()[0].fingerprint()));
        // The node still issues from the old issuing CA until the old CA is retired.
        assert!(n.files.next.join("issuing.crt").exists());
        assert!(n.files.next.join("ca.key").exists());
    }

    #[test]
    fn retire_old_leaves_the_new_ca_alone_and_a_node_certificate_from_it() {
        let n = node();
        rotate(&n.files, &rotate_opts(n.now)).unwrap();
        let overlap = bundle(&n.files);
        let report = retire_old(&n.files, &retire_opts(n.now)).unwrap();
        let after = bundle(&n.files);
        assert_eq!(after.cas().len(), 1);
        assert_eq!(after.cas()[0].fingerprint(), overlap.cas()[1].fingerprint());
        assert_eq!(report.serial, 2);
        // Signed by the new CA, which partners hold since the rotation.
        let (statement, body) = stated(&n.files);
        assert_eq!(body.cas.len(), 1);
        assert_eq!(
            verify_statement(&overlap, &statement, n.now).unwrap(),
            Signer::Ca(overlap.cas()[1].fingerprint())
        );
        // The node certificate chains to the new CA alone, through the new issuing CA.
        let leaf = meshfed_trust::cert::cert_der_from_pem(
            &std::fs::read_to_string(&n.files.node_cert).unwrap(),
        )
        .unwrap();
        let issuing = meshfed_trust::cert::cert_der_from_pem(
            &std::fs::read_to_string(&n.files.issuing_cert).unwrap(),
        )
        .unwrap();
        let info = verify_node_cert(
            &after,
            &CertificateDer::from(leaf),
            &[CertificateDer::from(issuing)],
            KeyPurpose::ClientAuth,
            n.now + Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(info.node.as_str(), "gw1");
        assert!(!n.files.next.exists());
        // The root key in the directory is the new CA's.
        let key = std::fs::read_to_string(&n.files.root_key).unwrap();
        MeshCa::from_pem(&after.to_pem(), &key).unwrap();
        // The gateway can start from what is left.
        let config = NodeConfig::load(&n.dir).unwrap();
        crate::gateway::identity::load(&n.dir, &config, n.now + Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn steps_out_of_order_are_refused_and_change_nothing() {
        let n = node();
        let err = retire_old(&n.files, &retire_opts(n.now)).unwrap_err();
        assert!(matches!(err, RolloverError::NotInProgress { .. }), "{err}");
        assert!(err.is_usage());
        rotate(&n.files, &rotate_opts(n.now)).unwrap();
        let bundle_before = std::fs::read(&n.files.bundle).unwrap();
        let err = rotate(&n.files, &rotate_opts(n.now)).unwrap_err();
        assert!(err.to_string().contains("already under way"), "{err}");
        assert_eq!(std::fs::read(&n.files.bundle).unwrap(), bundle_before);
    }

    #[test]
    fn a_root_key_kept_outside_stays_outside_and_the_wrong_key_is_refused() {
        let n = node();
        let outside = n._tmp.path().join("offline-root.key");
        std::fs::rename(&n.files.root_key, &outside).unwrap();

        let err = rotate(&n.files, &rotate_opts(n.now)).unwrap_err();
        assert!(matches!(err, RolloverError::NoRootKey { .. }), "{err}");
        assert!(err.to_string().contains("--root-key"), "{err}");

        let mut opts = rotate_opts(n.now);
        opts.root_key = Some(outside.clone());
        let err = rotate(&n.files, &opts).unwrap_err();
        assert!(matches!(err, RolloverError::NewRootKeyOutMissing), "{err}");

        opts.root_key = Some(n.files.issuing_key.clone());
        opts.new_root_key_out = Some(n._tmp.path().join("new-root.key"));
        let err = rotate(&n.files, &opts).unwrap_err();
        assert!(
            matches!(
                err,
                RolloverError::WrongRootKey {
                    which: "current",
                    ..
                }
            ),
            "{err}"
        );

        opts.root_key = Some(outside);
        rotate(&n.files, &opts).unwrap();
        let new_key = n._tmp.path().join("new-root.key");
        assert!(new_key.exists());
        assert!(!n.files.next.join("ca.key").exists());

        let mut retire = retire_opts(n.now);
        retire.root_key = Some(new_key);
        retire_old(&n.files, &retire).unwrap();
        assert!(
            !n.files.root_key.exists(),
            "no root key is left in the directory"
        );
    }
}
