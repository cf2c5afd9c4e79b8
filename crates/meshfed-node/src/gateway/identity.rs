//! This node's identity: its mesh and name, its signing key and certificate, its mesh CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshfed_proto::crypto::SigningKey;
use meshfed_proto::{MeshId, NodeName};
use meshfed_transport::TlsIdentity;
use meshfed_trust::{Fingerprint, MeshCa, P384PublicKey, TrustBundle};

use super::error::GatewayError;
use crate::config::NodeConfig;

/// This node's identity, loaded (and its certificate renewed when due) at start.
pub(crate) struct Identity {
    pub(crate) mesh: MeshId,
    pub(crate) node: NodeName,
    pub(crate) key: Arc<SigningKey>,
    pub(crate) cert_der: Vec<u8>,
    pub(crate) ca_der: Vec<u8>,
    pub(crate) ca_fingerprint: Fingerprint,
    pub(crate) bundle: TrustBundle,
    pub(crate) tls: TlsIdentity,
    pub(crate) cert_not_after: SystemTime,
}

pub(crate) fn read(what: &'static str, path: PathBuf) -> Result<String, GatewayError> {
    std::fs::read_to_string(&path).map_err(|source| GatewayError::Read { what, path, source })
}

/// Warns (on stderr, through the log) when the private key at `path` can be read by users other
/// than its owner: `init` writes keys with mode 0600, so a wider mode is a copy or a mistake.
fn warn_if_others_can_read(what: &str, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the {what} {} can be read by other users (mode {mode:04o}); restrict it: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (what, path);
}

/// Loads the node's identity; re-issues the node certificate from the mesh CA when a third or
/// less of its validity is left ("renewed automatically before expiry").
pub(crate) fn load(
    dir: &Path,
    config: &NodeConfig,
    now: SystemTime,
) -> Result<Identity, GatewayError> {
    let ids = &config.identity;
    let bad = |reason: String| GatewayError::Identity {
        dir: dir.to_path_buf(),
        reason,
    };
    warn_if_others_can_read("mesh CA key", &ids.ca_key.resolve(dir));
    warn_if_others_can_read("node key", &ids.node_key.resolve(dir));
    let ca_pem = read("mesh CA certificate", ids.ca_cert.resolve(dir))?;
    let key_pem = read("node key", ids.node_key.resolve(dir))?;
    let mut cert_pem = read("node certificate", ids.node_cert.resolve(dir))?;
    let key =
        meshfed_trust::key_from_pkcs8_pem(&key_pem).map_err(|e| bad(format!("node key: {e}")))?;
    let der = meshfed_trust::cert::cert_der_from_pem(&cert_pem)
        .map_err(|e| bad(format!("node certificate: {e}")))?;
    let info = meshfed_trust::inspect_node_cert(&der)
        .map_err(|e| bad(format!("node certificate: {e}")))?;
    let left = info.not_after.duration_since(now).unwrap_or(Duration::ZERO);
    if left < ids.node_cert_validity / 3 {
        let ca_key_pem = read("mesh CA key", ids.ca_key.resolve(dir))?;
        let ca =
            MeshCa::from_pem(&ca_pem, &ca_key_pem).map_err(|e| bad(format!("mesh CA: {e}")))?;
        let cert = ca
            .issue_node_cert(
                &config.node.name,
                &P384PublicKey::of(&key),
                now,
                ids.node_cert_validity,
            )
            .map_err(|e| bad(format!("renewing the node certificate: {e}")))?;
        cert_pem = cert.pem();
        let path = ids.node_cert.resolve(dir);
        meshfed_trust::files::write_file(
            &path,
            cert_pem.as_bytes(),
            meshfed_trust::files::FileMode::Public,
            meshfed_trust::files::IfExists::Replace,
        )
        .map_err(|e| bad(format!("writing the renewed node certificate: {e}")))?;
        tracing::info!(path = %path.display(), "renewed the node certificate");
    }
    let cert_der = meshfed_trust::cert::cert_der_from_pem(&cert_pem)
        .map_err(|e| bad(format!("node certificate: {e}")))?;
    let info = meshfed_trust::inspect_node_cert(&cert_der)
        .map_err(|e| bad(format!("node certificate: {e}")))?;
    if info.mesh != config.node.mesh || info.node != config.node.name {
        return Err(bad(format!(
            "the node certificate names {}/{}, the configuration {}/{}",
            info.mesh, info.node, config.node.mesh, config.node.name
        )));
    }
    let bundle =
        TrustBundle::from_pem(&ca_pem).map_err(|e| bad(format!("mesh CA certificate: {e}")))?;
    let ca_der = bundle
        .cas()
        .first()
        .map(|c| c.der().to_vec())
        .ok_or_else(|| bad("no CA certificate".into()))?;
    let tls = TlsIdentity::from_pem(&cert_pem, &ca_pem, &key_pem)
        .map_err(|e| bad(format!("TLS identity: {e}")))?;
    Ok(Identity {
        mesh: config.node.mesh.clone(),
        node: config.node.name.clone(),
        key: Arc::new(key),
        cert_der,
        ca_fingerprint: Fingerprint::of(&ca_der),
        ca_der,
        bundle,
        tls,
        cert_not_after: info.not_after,
    })
}
