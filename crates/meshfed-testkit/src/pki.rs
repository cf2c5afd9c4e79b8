//! A generated test PKI: one mesh CA, its issuing CA, and node certificates good and bad.

#![expect(
    clippy::expect_used,
    reason = "test support: a failure to make test certificates is a broken test setup"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshfed_proto::crypto::SigningKey;
use meshfed_proto::{MeshId, NodeName};
use meshfed_trust::{
    DEFAULT_CA_VALIDITY, DEFAULT_ISSUING_CA_VALIDITY, DEFAULT_NODE_CERT_VALIDITY, IssuingCa,
    MeshCa, P384PublicKey, TrustBundle, key_to_pkcs8_pem,
};
use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P384_SHA384, SanType,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// A mesh CA and a factory for node certificates, all relative to one fixed "now".
#[derive(Debug)]
pub struct TestPki {
    ca: MeshCa,
    issuing: IssuingCa,
    now: SystemTime,
}

/// A node's key and certificate as a test needs them.
#[derive(Debug)]
pub struct TestNode {
    /// The node's private key.
    pub key: SigningKey,
    /// The node's certificate, DER.
    pub cert: CertificateDer<'static>,
}

impl TestNode {
    /// The certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem_cert(&self.cert)
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        key_to_pkcs8_pem(&self.key).expect("export a test key")
    }
}

impl TestPki {
    /// A PKI for `mesh` (which must be a valid mesh id), "now" being the current time.
    pub fn new(mesh: &str) -> Self {
        Self::at(mesh, SystemTime::now())
    }

    /// A PKI for `mesh` whose certificates are valid around `now`.
    pub fn at(mesh: &str, now: SystemTime) -> Self {
        let ca =
            MeshCa::generate(&mesh_id(mesh), now, DEFAULT_CA_VALIDITY).expect("generate a test CA");
        let issuing = ca
            .issue_issuing_ca(now, DEFAULT_ISSUING_CA_VALIDITY)
            .expect("issue a test issuing CA");
        Self { ca, issuing, now }
    }

    /// The mesh CA.
    pub fn ca(&self) -> &MeshCa {
        &self.ca
    }

    /// The mesh's issuing CA (path length 0, signed by the mesh CA).
    pub fn issuing_ca(&self) -> &IssuingCa {
        &self.issuing
    }

    /// A valid node certificate for `node` issued by the issuing CA, now for 24 hours.
    pub fn node_from_issuing_ca(&self, node: &str) -> TestNode {
        let key = SigningKey::generate().expect("generate a test key");
        let cert = self
            .issuing
            .issue_node_cert(
                &node_name(node),
                &P384PublicKey::of(&key),
                self.now,
                DEFAULT_NODE_CERT_VALIDITY,
            )
            .expect("issue a test node certificate");
        TestNode {
            key,
            cert: cert.der().clone(),
        }
    }

    /// The trust bundle holding the mesh CA.
    pub fn bundle(&self) -> &TrustBundle {
        self.ca.trust_bundle()
    }

    /// The time the PKI's certificates are valid around.
    pub fn now(&self) -> SystemTime {
        self.now
    }

    /// The mesh.
    pub fn mesh(&self) -> &MeshId {
        self.ca.mesh()
    }

    /// A valid node certificate for `node`, issued now for 24 hours.
    pub fn node(&self, node: &str) -> TestNode {
        issue(&self.ca, node, self.now)
    }

    /// A node certificate for `node` that expired a day ago (issued two days ago for 24 hours).
    pub fn expired_node(&self, node: &str) -> TestNode {
        let two_days_ago = self
            .now
            .checked_sub(2 * DEFAULT_NODE_CERT_VALIDITY)
            .unwrap_or(UNIX_EPOCH);
        issue(&self.ca, node, two_days_ago)
    }

    /// A wrongly named certificate: signed by this mesh's CA but naming
    /// `meshfed://<other_mesh>/<node>`.
    pub fn node_of_other_mesh(&self, other_mesh: &str, node: &str) -> TestNode {
        let key = SigningKey::generate().expect("generate a test key");
        let uri = format!("meshfed://{}/{}", mesh_id(other_mesh), node_name(node));
        let cert = sign_leaf(&self.ca, &key, &uri, self.now);
        TestNode { key, cert }
    }

    /// A wrongly signed certificate: a well-formed node certificate for `node` of this mesh,
    /// issued by an impostor CA with the same mesh id and name but another key.
    pub fn node_signed_by_impostor(&self, node: &str) -> TestNode {
        let impostor = MeshCa::generate(self.ca.mesh(), self.now, DEFAULT_CA_VALIDITY)
            .expect("generate an impostor CA");
        issue(&impostor, node, self.now)
    }
}

fn issue(ca: &MeshCa, node: &str, now: SystemTime) -> TestNode {
    let key = SigningKey::generate().expect("generate a test key");
    let cert = ca
        .issue_node_cert(
            &node_name(node),
            &P384PublicKey::of(&key),
            now,
            DEFAULT_NODE_CERT_VALIDITY,
        )
        .expect("issue a test node certificate");
    TestNode {
        key,
        cert: cert.der().clone(),
    }
}

/// Signs a node-like leaf with `ca`'s key whatever `uri` says, as a misbehaving CA would.
fn sign_leaf(ca: &MeshCa, key: &SigningKey, uri: &str, now: SystemTime) -> CertificateDer<'static> {
    let issuer = Issuer::from_ca_cert_der(ca.cert_der(), rcgen_key(ca.key()))
        .expect("read the test CA as an issuer");
    let mut params = CertificateParams::default();
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let at = |secs: u64| {
        time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).expect("time in range"))
            .expect("time in range")
    };
    params.not_before = at(now_secs.saturating_sub(300));
    params.not_after = at(now_secs + DEFAULT_NODE_CERT_VALIDITY.as_secs());
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, uri);
    params.distinguished_name = name;
    params.subject_alt_names = vec![SanType::URI(
        Ia5String::try_from(uri).expect("URI is ASCII"),
    )];
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params
        .signed_by(&rcgen_key(key), &issuer)
        .expect("sign a test leaf")
        .der()
        .clone()
}

fn rcgen_key(key: &SigningKey) -> KeyPair {
    let der = key.to_pkcs8().expect("export a test key");
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der), &PKCS_ECDSA_P384_SHA384)
        .expect("read a P-384 key with rcgen")
}

fn pem_cert(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

fn mesh_id(s: &str) -> MeshId {
    s.parse().expect("test mesh id is valid")
}

fn node_name(s: &str) -> NodeName {
    s.parse().expect("test node name is valid")
}

#[cfg(test)]
mod tests {
    use meshfed_trust::{KeyPurpose, TrustError, verify_node_cert};

    use super::*;

    fn verify(pki: &TestPki, node: &TestNode) -> Result<meshfed_trust::NodeCertInfo, TrustError> {
        verify_node_cert(
            pki.bundle(),
            &node.cert,
            &[],
            KeyPurpose::ClientAuth,
            pki.now(),
        )
    }

    #[test]
    fn valid_node_verifies_and_its_key_matches_its_cert() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let info = verify(&pki, &node).unwrap();
        assert_eq!(info.identity().uri(), "meshfed://plant-a/gw1");
        assert_eq!(info.public_key, P384PublicKey::of(&node.key));
        assert!(node.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(node.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn expired_node_is_rejected_as_expired() {
        let pki = TestPki::new("plant-a");
        let err = verify(&pki, &pki.expired_node("gw1")).unwrap_err();
        assert!(matches!(err, TrustError::Expired { .. }), "{err:?}");
    }

    #[test]
    fn node_of_other_mesh_is_rejected_as_wrong_mesh() {
        let pki = TestPki::new("plant-a");
        let err = verify(&pki, &pki.node_of_other_mesh("plant-b", "gw1")).unwrap_err();
        assert!(matches!(err, TrustError::WrongMesh { .. }), "{err:?}");
    }

    #[test]
    fn impostor_signed_node_is_rejected_as_bad_signature() {
        let pki = TestPki::new("plant-a");
        let err = verify(&pki, &pki.node_signed_by_impostor("gw1")).unwrap_err();
        assert!(matches!(err, TrustError::BadSignature), "{err:?}");
    }

    #[test]
    fn temp_dir_exists_until_dropped() {
        let dir = crate::temp_dir();
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
    }
}
