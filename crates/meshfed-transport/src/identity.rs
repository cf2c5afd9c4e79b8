//! A node's TLS identity: its leaf certificate, its mesh's issuing CA certificate (if the leaf
//! was issued by one), its mesh CA certificate and its private key, checked for consistency once
//! and turned into rustls configuration.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use meshfed_proto::crypto::SigningKey;
use meshfed_proto::{MeshId, NodeName};
use meshfed_trust::cert::cert_der_from_pem;
use meshfed_trust::{
    KeyPurpose, NodeCertInfo, P384PublicKey, TrustBundle, inspect_node_cert, key_from_pkcs8_pem,
    verify_node_cert,
};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::ALPN;
use crate::error::{TransportError, chain};
use crate::tls::{SelfConsistentClientChain, ServerTrust, ServerTrustVerifier, provider};

/// What a node presents on every link: its leaf certificate, its mesh's issuing CA certificate
/// when the leaf was issued by one (so peers can build the path), and its mesh CA certificate
/// (so a joining peer can pin the CA), in that order; and the leaf's private key.
///
/// [`TlsIdentity::new`] checks that they belong together (the key is the leaf's, the leaf
/// verifies against the CA (through the issuing CA, if given), names a node of the CA's mesh and
/// may serve as TLS client and server). It does not check the time: an expired certificate
/// loads, and peers refuse it.
///
/// The leaf can be replaced while the node runs ([`TlsIdentity::renew`]): listeners and
/// diallers made from this identity (and its clones) present the new one from their next
/// handshake on, through rustls certificate resolvers that read the current leaf; links
/// already up keep the session they have.
#[derive(Clone)]
pub struct TlsIdentity {
    info: NodeCertInfo,
    /// What follows the leaf in the presented chain: the issuing CA (if any), then the mesh CA.
    /// Shared by clones, and replaced with the leaf by [`TlsIdentity::adopt`].
    tail: Arc<RwLock<Vec<CertificateDer<'static>>>>,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCert>,
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
        Self::issued_through(leaf_der, None, ca_der, key_pkcs8_der)
    }

    /// An identity from DER whose node certificate may have been issued by the mesh's issuing
    /// CA (`issuing_der`, an intermediate below the mesh CA `ca_der`).
    pub fn issued_through(
        leaf_der: Vec<u8>,
        issuing_der: Option<Vec<u8>>,
        ca_der: Vec<u8>,
        key_pkcs8_der: Vec<u8>,
    ) -> Result<Self, TransportError> {
        let leaf = CertificateDer::from(leaf_der);
        let mut tail: Vec<CertificateDer<'static>> =
            issuing_der.into_iter().map(CertificateDer::from).collect();
        tail.push(CertificateDer::from(ca_der));
        let info = inspect_node_cert(&leaf)
            .map_err(|e| identity_error(format!("node certificate: {}", chain(&e))))?;
        check_issued_by(&info, &leaf, &tail)?;
        let key = SigningKey::from_pkcs8(&key_pkcs8_der)
            .map_err(|e| identity_error(format!("private key: {}", chain(&e))))?;
        if P384PublicKey::of(&key) != info.public_key {
            return Err(identity_error(
                "the private key does not belong to the node certificate".to_owned(),
            ));
        }
        let provider = provider();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der));
        let certified = CertifiedKey::from_der(presented(leaf, &tail), key_der, &provider)
            .map_err(|e| identity_error(format!("rustls refused the key: {e}")))?;
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(certified))));
        let server = server_config(&provider, &current)?;
        Ok(Self {
            info,
            tail: Arc::new(RwLock::new(tail)),
            provider,
            current,
            server,
        })
    }

    /// Presents `leaf_der` from the next handshake on: a renewed certificate for the same node
    /// and the same key, issued by the same CA (and issuing CA). Returns what it says.
    pub fn renew(&self, leaf_der: Vec<u8>) -> Result<NodeCertInfo, TransportError> {
        let leaf = CertificateDer::from(leaf_der);
        let info = self.check_renewed(&leaf)?;
        let current = self.current.get();
        let presented_now = current
            .end_entity_cert()
            .map_err(|e| identity_error(format!("the certificate in use: {e}")))?;
        let now_info = inspect_node_cert(presented_now)
            .map_err(|e| identity_error(format!("the certificate in use: {}", chain(&e))))?;
        if info.public_key != now_info.public_key {
            return Err(identity_error(
                "the renewed node certificate is for another key than the node's".to_owned(),
            ));
        }
        let key = Arc::clone(&current.key);
        let certified = Arc::new(CertifiedKey::new(presented(leaf, &self.tail()), key));
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = certified;
        Ok(info)
    }

    /// Presents `leaf_der` with a new private key (`key_pkcs8_der`, the leaf's) from the next
    /// handshake on: node key rotation. The leaf must name the same node and chain to the same
    /// CA. Returns what it says.
    pub fn rekey(
        &self,
        leaf_der: Vec<u8>,
        key_pkcs8_der: Vec<u8>,
    ) -> Result<NodeCertInfo, TransportError> {
        let leaf = CertificateDer::from(leaf_der);
        let info = self.check_renewed(&leaf)?;
        let key = SigningKey::from_pkcs8(&key_pkcs8_der)
            .map_err(|e| identity_error(format!("new private key: {}", chain(&e))))?;
        if P384PublicKey::of(&key) != info.public_key {
            return Err(identity_error(
                "the new private key does not belong to the new node certificate".to_owned(),
            ));
        }
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der));
        let certified =
            CertifiedKey::from_der(presented(leaf, &self.tail()), key_der, &self.provider)
                .map_err(|e| identity_error(format!("rustls refused the new key: {e}")))?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        Ok(info)
    }

    /// A renewed leaf names this node and chains to this node's CA.
    fn check_renewed(
        &self,
        leaf: &CertificateDer<'static>,
    ) -> Result<NodeCertInfo, TransportError> {
        let info = inspect_node_cert(leaf)
            .map_err(|e| identity_error(format!("renewed node certificate: {}", chain(&e))))?;
        if info.mesh != self.info.mesh || info.node != self.info.node {
            return Err(identity_error(format!(
                "the renewed node certificate names {}, this node is {}",
                info.identity(),
                self.info.identity()
            )));
        }
        check_issued_by(&info, leaf, &self.tail())?;
        Ok(info)
    }

    /// Presents what `other` presents — its leaf, key and chain — from the next handshake on,
    /// here and in every clone (listeners, diallers): a node certificate issued under a new mesh
    /// CA after a CA rollover. `other` must be this same node.
    pub fn adopt(&self, other: &TlsIdentity) -> Result<(), TransportError> {
        if other.info.mesh != self.info.mesh || other.info.node != self.info.node {
            return Err(identity_error(format!(
                "the new identity is {}, this node is {}",
                other.info.identity(),
                self.info.identity()
            )));
        }
        let tail = other.tail();
        let certified = other.current.get();
        // The chain first: a renewal in between builds on the new one.
        *self.tail.write().unwrap_or_else(|e| e.into_inner()) = tail;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = certified;
        Ok(())
    }

    fn tail(&self) -> Vec<CertificateDer<'static>> {
        self.tail.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// An identity from PEM: a `CERTIFICATE` block for the node, one for its mesh's issuing CA
    /// (when the node certificate was issued by one), one for its mesh CA, and a PKCS#8
    /// `PRIVATE KEY` block.
    pub fn from_pem(
        leaf_pem: &str,
        issuing_pem: Option<&str>,
        ca_pem: &str,
        key_pem: &str,
    ) -> Result<Self, TransportError> {
        let leaf = cert_der_from_pem(leaf_pem)
            .map_err(|e| identity_error(format!("node certificate: {}", chain(&e))))?;
        let issuing = issuing_pem
            .map(cert_der_from_pem)
            .transpose()
            .map_err(|e| identity_error(format!("issuing CA certificate: {}", chain(&e))))?;
        let ca = cert_der_from_pem(ca_pem)
            .map_err(|e| identity_error(format!("CA certificate: {}", chain(&e))))?;
        let key = key_from_pkcs8_pem(key_pem)
            .and_then(|k| Ok(k.to_pkcs8()?))
            .map_err(|e| identity_error(format!("private key: {}", chain(&e))))?;
        Self::issued_through(leaf, issuing, ca, key)
    }

    /// This node's mesh, from its certificate.
    pub fn mesh(&self) -> &MeshId {
        &self.info.mesh
    }

    /// This node's name, from its certificate.
    pub fn node(&self) -> &NodeName {
        &self.info.node
    }

    /// The node certificate presented now, DER.
    pub fn leaf(&self) -> Vec<u8> {
        // `new` and `renew` always put the leaf first: the chain is never empty.
        self.current
            .get()
            .cert
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    /// The mesh CA certificate presented last, DER.
    pub fn ca(&self) -> Vec<u8> {
        // `issued_through` always puts the mesh CA last: the tail is never empty.
        self.tail().last().map(|c| c.to_vec()).unwrap_or_default()
    }

    /// The issuing CA certificate presented between the leaf and the mesh CA, DER, if any.
    pub fn issuing_ca(&self) -> Option<Vec<u8>> {
        match self.tail().as_slice() {
            [issuing, _ca] => Some(issuing.to_vec()),
            _ => None,
        }
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
            .with_client_cert_resolver(Arc::clone(&self.current) as Arc<dyn ResolvesClientCert>);
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

/// The chain a node presents: its leaf, then `tail` (issuing CA, if any, and mesh CA).
fn presented(
    leaf: CertificateDer<'static>,
    tail: &[CertificateDer<'static>],
) -> Vec<CertificateDer<'static>> {
    std::iter::once(leaf).chain(tail.iter().cloned()).collect()
}

/// The leaf must be a node of the CA's mesh, signed by that CA (through the issuing CA, when
/// `tail` holds one before the CA), usable for both TLS roles. Verified at the middle of the
/// leaf's validity, so the clock plays no part.
fn check_issued_by(
    info: &NodeCertInfo,
    leaf: &CertificateDer<'_>,
    tail: &[CertificateDer<'static>],
) -> Result<(), TransportError> {
    let Some((ca, intermediates)) = tail.split_last() else {
        return Err(identity_error("no CA certificate".to_owned()));
    };
    let bundle = TrustBundle::new(vec![ca.clone()])
        .map_err(|e| identity_error(format!("CA certificate: {}", chain(&e))))?;
    let half = info
        .not_after
        .duration_since(info.not_before)
        .unwrap_or_default()
        / 2;
    let at: SystemTime = info.not_before.checked_add(half).unwrap_or(info.not_before);
    for purpose in [KeyPurpose::ClientAuth, KeyPurpose::ServerAuth] {
        verify_node_cert(&bundle, leaf, intermediates, purpose, at).map_err(|e| {
            identity_error(format!(
                "node certificate does not verify against the CA certificate: {}",
                chain(&e)
            ))
        })?;
    }
    Ok(())
}

/// The certificate and key this node presents now, read by rustls at every handshake.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl CurrentCert {
    fn get(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    current: &Arc<CurrentCert>,
) -> Result<Arc<ServerConfig>, TransportError> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(Arc::new(SelfConsistentClientChain))
        .with_cert_resolver(Arc::clone(current) as Arc<dyn ResolvesServerCert>);
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
        let id = TlsIdentity::from_pem(
            &node.cert_pem(),
            None,
            &pki.ca().cert_pem(),
            &node.key_pem(),
        )
        .unwrap();
        assert_eq!(id.mesh().as_str(), "plant-a");
        assert_eq!(id.node().as_str(), "gw1");
        assert_eq!(id.leaf(), node.cert.to_vec());
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
    fn renewed_leaf_is_presented_from_then_on_by_every_clone() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let (leaf, ca, key) = der(&pki, &node);
        let id = TlsIdentity::new(leaf, ca, key).unwrap();
        let listener_copy = id.clone();
        let renewed = pki
            .ca()
            .issue_node_cert(
                id.node(),
                &P384PublicKey::of(&node.key),
                pki.now() + std::time::Duration::from_secs(60),
                meshfed_trust::DEFAULT_NODE_CERT_VALIDITY,
            )
            .unwrap();
        let info = id.renew(renewed.der().to_vec()).unwrap();
        assert_eq!(info.not_after, renewed.info().not_after);
        assert_eq!(listener_copy.leaf(), renewed.der().to_vec());
        let resolved = listener_copy.current.get();
        assert_eq!(
            resolved.cert,
            vec![renewed.der().clone(), pki.ca().cert_der().clone()]
        );
    }

    #[test]
    fn a_new_key_with_its_certificate_is_presented_from_then_on_and_renewals_follow_it() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let (leaf, ca, key) = der(&pki, &node);
        let id = TlsIdentity::new(leaf.clone(), ca, key).unwrap();
        let listener_copy = id.clone();
        // Another gw1 of this CA: a fresh key and its certificate.
        let fresh = pki.node("gw1");
        let (new_leaf, _, new_key) = der(&pki, &fresh);
        // A certificate for another key is not a renewal...
        assert!(id.renew(new_leaf.clone()).is_err());
        // ...but with that key it is a rotation.
        let err = id.rekey(new_leaf.clone(), der(&pki, &node).2).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        assert_eq!(id.leaf(), leaf, "a refused rotation changes nothing");
        id.rekey(new_leaf.clone(), new_key).unwrap();
        assert_eq!(listener_copy.leaf(), new_leaf);
        // Renewals now follow the new key, on every clone.
        let renewed = pki
            .ca()
            .issue_node_cert(
                id.node(),
                &P384PublicKey::of(&fresh.key),
                pki.now(),
                meshfed_trust::DEFAULT_NODE_CERT_VALIDITY,
            )
            .unwrap();
        listener_copy.renew(renewed.der().to_vec()).unwrap();
        assert_eq!(id.leaf(), renewed.der().to_vec());
        let old_key_cert = pki
            .ca()
            .issue_node_cert(
                id.node(),
                &P384PublicKey::of(&node.key),
                pki.now(),
                meshfed_trust::DEFAULT_NODE_CERT_VALIDITY,
            )
            .unwrap();
        let err = id.renew(old_key_cert.der().to_vec()).unwrap_err();
        assert!(err.to_string().contains("for another key"), "{err}");
    }

    #[test]
    fn renewal_refuses_a_certificate_for_another_key_or_node() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let (leaf, ca, key) = der(&pki, &node);
        let id = TlsIdentity::new(leaf.clone(), ca, key).unwrap();
        let err = id.renew(pki.node("gw1").cert.to_vec()).unwrap_err();
        assert!(err.to_string().contains("for another key"), "{err}");
        let err = id.renew(pki.node("gw2").cert.to_vec()).unwrap_err();
        assert!(
            err.to_string().contains("names meshfed://plant-a/gw2"),
            "{err}"
        );
        assert_eq!(id.leaf(), leaf, "the old leaf stays");
    }

    #[test]
    fn identity_issued_through_the_issuing_ca_presents_it_between_leaf_and_ca() {
        let pki = TestPki::new("plant-a");
        let node = pki.node_from_issuing_ca("gw1");
        let issuing = pki.issuing_ca().cert_der().clone();
        let id = TlsIdentity::from_pem(
            &node.cert_pem(),
            Some(&pki.issuing_ca().cert_pem()),
            &pki.ca().cert_pem(),
            &node.key_pem(),
        )
        .unwrap();
        assert_eq!(id.issuing_ca(), Some(issuing.to_vec()));
        assert_eq!(id.ca(), pki.ca().cert_der().as_ref());
        assert_eq!(
            id.current.get().cert,
            vec![
                node.cert.clone(),
                issuing.clone(),
                pki.ca().cert_der().clone()
            ]
        );
        let renewed = pki
            .issuing_ca()
            .issue_node_cert(
                id.node(),
                &P384PublicKey::of(&node.key),
                pki.now() + std::time::Duration::from_secs(60),
                meshfed_trust::DEFAULT_NODE_CERT_VALIDITY,
            )
            .unwrap();
        id.renew(renewed.der().to_vec()).unwrap();
        assert_eq!(
            id.current.get().cert,
            vec![renewed.der().clone(), issuing, pki.ca().cert_der().clone()]
        );
    }

    #[test]
    fn adopting_an_identity_under_a_new_ca_changes_what_every_clone_presents() {
        let old = TestPki::new("plant-a");
        let new = TestPki::new("plant-a");
        let (leaf, ca, key) = der(&old, &old.node("gw1"));
        let id = TlsIdentity::new(leaf, ca, key).unwrap();
        let listener_copy = id.clone();
        let gw1 = new.node("gw1");
        let (new_leaf, new_ca, new_key) = der(&new, &gw1);
        let next = TlsIdentity::new(new_leaf.clone(), new_ca.clone(), new_key).unwrap();
        id.adopt(&next).unwrap();
        assert_eq!(listener_copy.leaf(), new_leaf);
        assert_eq!(listener_copy.ca(), new_ca);
        // A renewal afterwards chains to the new CA.
        let renewed = new
            .ca()
            .issue_node_cert(
                id.node(),
                &P384PublicKey::of(&gw1.key),
                new.now() + std::time::Duration::from_secs(60),
                meshfed_trust::DEFAULT_NODE_CERT_VALIDITY,
            )
            .unwrap();
        id.renew(renewed.der().to_vec()).unwrap();
        assert_eq!(
            listener_copy.current.get().cert,
            vec![renewed.der().clone(), CertificateDer::from(new_ca)]
        );

        let (other, other_ca, other_key) = der(&new, &new.node("gw2"));
        let gw2 = TlsIdentity::new(other, other_ca, other_key).unwrap();
        let err = id.adopt(&gw2).unwrap_err().to_string();
        assert!(err.contains("this node is meshfed://plant-a/gw1"), "{err}");
        assert_eq!(
            id.leaf(),
            renewed.der().to_vec(),
            "a refused adoption changes nothing"
        );
    }

    #[test]
    fn identity_refuses_a_leaf_of_the_issuing_ca_without_it() {
        let pki = TestPki::new("plant-a");
        let (leaf, ca, key) = der(&pki, &pki.node_from_issuing_ca("gw1"));
        let err = TlsIdentity::new(leaf, ca, key).unwrap_err().to_string();
        assert!(
            err.contains("does not verify against the CA certificate"),
            "{err}"
        );
    }

    #[test]
    fn identity_refuses_garbage_pem() {
        let err = TlsIdentity::from_pem("nope", None, "nope", "nope").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("node TLS identity is unusable: node certificate"),
            "{err}"
        );
    }
}
