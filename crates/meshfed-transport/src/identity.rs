//! A node's TLS identity: its leaf certificate, its mesh CA certificate and its private key,
//! checked for consistency once and turned into rustls configuration.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use meshfed_proto::crypto::SigningKey;
use meshfed_proto::{MeshId, NodeName};
use meshfed_trust::cert::cert_der_from_pem;
use meshfed_trust::{
    KeyPurpose, NodeCertInfo, P384PublicKey, TrustBundle, inspect_node_cert, key_from_pkcs8_pem,
    verify_node_cert,
};
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::ALPN;
use crate::error::{TransportError, chain};
use crate::tls::{SelfConsistentClientChain, ServerTrust, ServerTrustVerifier, provider};

/// What a node presents on every link: its leaf certificate and its mesh CA certificate (so a
/// joining peer can pin the CA), and the leaf's private key.
///
/// [`TlsIdentity::new`] checks that the three belong together (the key is the leaf's, the CA
/// signed the leaf, the leaf names a node of the CA's mesh and may serve as TLS client and
/// server). It does not check the time: an expired certificate loads, and peers refuse it.
#[derive(Clone)]
pub struct TlsIdentity {
    info: NodeCertInfo,
    leaf: CertificateDer<'static>,
    ca: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
    certified: Arc<CertifiedKey>,
    server: Arc<ServerConfig>,
}

impl TlsIdentity {
    /// An identity from DER: the node certificate, its mesh CA certificate and the node's PKCS#8
    /// private key.
    pub fn new(
        leaf_der: Vec<u8>,
        ca_der: Vec<u8>,
        key_pkcs8_der: Vec<u8>,
    ) -> Result<Self, TransportError> {
        let leaf = CertificateDer::from(leaf_der);
        let ca = CertificateDer::from(ca_der);
        let info = inspect_node_cert(&leaf)
            .map_err(|e| identity_error(format!("node certificate: {}", chain(&e))))?;
        check_issued_by(&info, &leaf, &ca)?;
        let key = SigningKey::from_pkcs8(&key_pkcs8_der)
            .map_err(|e| identity_error(format!("private key: {}", chain(&e))))?;
        if P384PublicKey::of(&key) != info.public_key {
            return Err(identity_error(
                "the private key does not belong to the node certificate".to_owned(),
            ));
        }
        let provider = provider();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der));
        let certified = CertifiedKey::from_der(vec![leaf.clone(), ca.clone()], key_der, &provider)
            .map_err(|e| identity_error(format!("rustls refused the key: {e}")))?;
        let certified = Arc::new(certified);
        let server = server_config(&provider, &certified)?;
        Ok(Self {
            info,
            leaf,
            ca,
            provider,
            certified,
            server,
        })
    }

    /// An identity from PEM: a `CERTIFICATE` block for the node, one for its mesh CA, and a
    /// PKCS#8 `PRIVATE KEY` block.
    pub fn from_pem(leaf_pem: &str, ca_pem: &str, key_pem: &str) -> Result<Self, TransportError> {
        let leaf = cert_der_from_pem(leaf_pem)
            .map_err(|e| identity_error(format!("node certificate: {}", chain(&e))))?;
        let ca = cert_der_from_pem(ca_pem)
            .map_err(|e| identity_error(format!("CA certificate: {}", chain(&e))))?;
        let key = key_from_pkcs8_pem(key_pem)
            .and_then(|k| Ok(k.to_pkcs8()?))
            .map_err(|e| identity_error(format!("private key: {}", chain(&e))))?;
        Self::new(leaf, ca, key)
    }

    /// This node's mesh, from its certificate.
    pub fn mesh(&self) -> &MeshId {
        &self.info.mesh
    }

    /// This node's name, from its certificate.
    pub fn node(&self) -> &NodeName {
        &self.info.node
    }

    /// The node certificate, DER.
    pub fn leaf(&self) -> &[u8] {
        &self.leaf
    }

    /// The mesh CA certificate presented after the leaf, DER.
    pub fn ca(&self) -> &[u8] {
        &self.ca
    }

    /// The listener's configuration.
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }

    /// A dialler's configuration for one dial.
    pub(crate) fn client_config(&self, trust: ServerTrust) -> Result<ClientConfig, TransportError> {
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerTrustVerifier::new(trust)))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(
                &self.certified,
            ))));
        config.alpn_protocols = vec![ALPN.to_vec()];
        // Trust is decided per dial, so a session must never be resumed under another rule.
        config.resumption = rustls::client::Resumption::disabled();
        // Peers are addressed by IP and verified by mesh: there is no server name to send.
        config.enable_sni = false;
        Ok(config)
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("node", &self.info.identity().uri())
            .finish_non_exhaustive()
    }
}

/// The leaf must be a node of the CA's mesh, signed by that CA, usable for both TLS roles.
/// Verified at the middle of the leaf's validity, so the clock plays no part.
fn check_issued_by(
    info: &NodeCertInfo,
    leaf: &CertificateDer<'_>,
    ca: &CertificateDer<'static>,
) -> Result<(), TransportError> {
    let bundle = TrustBundle::new(vec![ca.clone()])
        .map_err(|e| identity_error(format!("CA certificate: {}", chain(&e))))?;
    let half = info
        .not_after
        .duration_since(info.not_before)
        .unwrap_or_default()
        / 2;
    let at: SystemTime = info.not_before.checked_add(half).unwrap_or(info.not_before);
    for purpose in [KeyPurpose::ClientAuth, KeyPurpose::ServerAuth] {
        verify_node_cert(&bundle, leaf, &[], purpose, at).map_err(|e| {
            identity_error(format!(
                "node certificate does not verify against the CA certificate: {}",
                chain(&e)
            ))
        })?;
    }
    Ok(())
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    certified: &Arc<CertifiedKey>,
) -> Result<Arc<ServerConfig>, TransportError> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(Arc::new(SelfConsistentClientChain))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(certified))));
    config.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption: every link proves its client certificate afresh.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

fn identity_error(reason: String) -> TransportError {
    TransportError::Identity { reason }
}

fn config_error(e: rustls::Error) -> TransportError {
    TransportError::TlsConfig {
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use meshfed_testkit::TestPki;

    use super::*;

    fn der(pki: &TestPki, node: &meshfed_testkit::TestNode) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        (
            node.cert.to_vec(),
            pki.ca().cert_der().to_vec(),
            node.key.to_pkcs8().unwrap(),
        )
    }

    #[test]
    fn identity_loads_from_pem_and_names_its_node() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let id =
            TlsIdentity::from_pem(&node.cert_pem(), &pki.ca().cert_pem(), &node.key_pem()).unwrap();
        assert_eq!(id.mesh().as_str(), "plant-a");
        assert_eq!(id.node().as_str(), "gw1");
        assert_eq!(id.leaf(), node.cert.as_ref());
        assert_eq!(id.ca(), pki.ca().cert_der().as_ref());
    }

    #[test]
    fn identity_refuses_a_key_of_another_node() {
        let pki = TestPki::new("plant-a");
        let (leaf, ca, _) = der(&pki, &pki.node("gw1"));
        let other = pki.node("gw2").key.to_pkcs8().unwrap();
        let err = TlsIdentity::new(leaf, ca, other).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node TLS identity is unusable: the private key does not belong to the node certificate"
        );
    }

    #[test]
    fn identity_refuses_a_ca_that_did_not_sign_the_leaf() {
        let pki = TestPki::new("plant-a");
        let node = pki.node_signed_by_impostor("gw1");
        let (leaf, ca, key) = der(&pki, &node);
        let err = TlsIdentity::new(leaf, ca, key).unwrap_err().to_string();
        assert!(
            err.contains("does not verify against the CA certificate"),
            "{err}"
        );
    }

    #[test]
    fn identity_loads_an_expired_certificate() {
        let pki = TestPki::new("plant-a");
        let (leaf, ca, key) = der(&pki, &pki.expired_node("gw1"));
        TlsIdentity::new(leaf, ca, key).unwrap();
    }

    #[test]
    fn identity_refuses_garbage_pem() {
        let err = TlsIdentity::from_pem("nope", "nope", "nope").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("node TLS identity is unusable: node certificate"),
            "{err}"
        );
    }
}
