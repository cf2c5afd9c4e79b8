//! The mesh CA: a self-signed ECDSA P-384 root that issues the mesh's node certificates, either
//! itself ([`MeshCa`]) or through an issuing CA it certifies ([`IssuingCa`]), so that the root
//! key can stay offline while gateways renew their certificates.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshfed_proto::{MeshId, NodeName};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P384_SHA384, PublicKeyData, SanType, SerialNumber,
    SignatureAlgorithm,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::bundle::{BundleError, Fingerprint, TrustBundle};
use crate::cert::{
    CaCertInfo, CertError, NodeCertInfo, NodeIdentity, cert_der_from_pem, inspect_ca_cert,
    inspect_node_cert, mesh_uri,
};
use meshfed_proto::crypto::SigningKey;

use crate::key::{KeyError, P384PublicKey, key_from_pkcs8_pem};

/// Default lifetime of a mesh CA certificate: ten years (of 365 days).
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Default lifetime of a node certificate: 24 hours.
pub const DEFAULT_NODE_CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Default lifetime of an issuing CA certificate: one year (365 days), cut to the root's.
pub const DEFAULT_ISSUING_CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// How far before "now" certificates start to be valid, so that peers whose clocks lag a little
/// accept them at once.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// Longest path of intermediate CAs below a mesh CA (`pathlen`): room for its issuing CA.
const CA_PATH_LEN: u8 = 1;

/// A mesh CA could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The requested validity is zero or ends past what X.509 can express (year 9999).
    #[error("certificate validity of {validity:?} from the given time is out of range")]
    ValidityOutOfRange {
        /// The requested lifetime.
        validity: Duration,
    },
    /// The CA certificate is not a meshfed CA certificate.
    #[error("mesh CA certificate is not usable")]
    Cert(#[from] CertError),
    /// The CA key is not usable.
    #[error("mesh CA key is not usable")]
    Key(#[from] KeyError),
    /// The key is not the one the certificate was issued for.
    #[error("mesh CA key does not match the CA certificate's public key")]
    KeyMismatch,
    /// The CA certificate cannot anchor a trust bundle.
    #[error("mesh CA certificate cannot anchor a trust bundle")]
    Bundle(#[from] BundleError),
    /// The certificate is a CA of this mesh but not an issuing CA (path length 0) below the
    /// root.
    #[error("certificate of mesh {mesh} is not an issuing CA certificate (pathlen 0) of its root")]
    NotIssuingCa {
        /// The CA's mesh.
        mesh: MeshId,
    },
    /// The issuing CA certificate does not chain to the mesh's root CA certificate.
    #[error("issuing CA certificate does not verify against the mesh CA certificate")]
    NotIssuedByRoot(#[source] crate::bundle::TrustError),
    /// rcgen failed to build or sign a certificate.
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
}

/// A mesh's certificate authority: its self-signed certificate and its private key.
///
/// Make one with [`MeshCa::generate`] or load one with [`MeshCa::from_pem`]; issue node
/// certificates with [`MeshCa::issue_node_cert`].
pub struct MeshCa {
    info: CaCertInfo,
    der: CertificateDer<'static>,
    key: SigningKey,
    issuer: Issuer<'static, KeyPair>,
    bundle: TrustBundle,
}

impl MeshCa {
    /// Generates a new CA for `mesh`: a fresh P-384 key and a self-signed certificate valid
    /// from `now` (back-dated by [`CLOCK_SKEW_ALLOWANCE`]) for `validity`.
    pub fn generate(mesh: &MeshId, now: SystemTime, validity: Duration) -> Result<Self, CaError> {
        let key = SigningKey::generate().map_err(KeyError::from)?;
        let (not_before, not_after) = validity_window(now, validity)?;
        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        params.distinguished_name = ca_name(mesh);
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(mesh_uri(mesh))?)];
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(CA_PATH_LEN));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let rcgen_key = rcgen_key(&key)?;
        let der = params.self_signed(&rcgen_key)?.der().clone();
        Self::assemble(der, key)
    }

    /// Loads a CA from its PEM certificate and PEM PKCS#8 key, checking that the certificate is
    /// a meshfed CA certificate and that the key belongs to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let der = CertificateDer::from(cert_der_from_pem(cert_pem)?);
        let key = key_from_pkcs8_pem(key_pem)?;
        Self::assemble(der, key)
    }

    fn assemble(der: CertificateDer<'static>, key: SigningKey) -> Result<Self, CaError> {
        let info = inspect_ca_cert(&der)?;
        if info.public_key != P384PublicKey::of(&key) {
            return Err(CaError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&der, rcgen_key(&key)?)?;
        let bundle = TrustBundle::new(vec![der.clone()])?;
        Ok(Self {
            info,
            der,
            key,
            issuer,
            bundle,
        })
    }

    /// The mesh this CA belongs to.
    pub fn mesh(&self) -> &MeshId {
        &self.info.mesh
    }

    /// What the CA certificate says (mesh, validity, public key).
    pub fn info(&self) -> &CaCertInfo {
        &self.info
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.to_vec()))
    }

    /// The CA's private key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// SHA-384 fingerprint of the CA certificate (DER).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.der)
    }

    /// The trust bundle holding just this CA.
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// Issues a certificate for node `node` of this CA's mesh holding `public_key`: SAN URI
    /// `meshfed://<mesh>/<node>`, EKU serverAuth + clientAuth, key usage digitalSignature,
    /// valid from `now` (back-dated by [`CLOCK_SKEW_ALLOWANCE`]) for `validity`.
    pub fn issue_node_cert(
        &self,
        node: &NodeName,
        public_key: &P384PublicKey,
        now: SystemTime,
        validity: Duration,
    ) -> Result<NodeCert, CaError> {
        issue_node(
            &self.issuer,
            &self.info.mesh,
            node,
            public_key,
            now,
            validity,
        )
    }

    /// Issues the certificate a node's HTTPS API presents, as [`issue_api_cert`] says.
    pub fn issue_api_cert(
        &self,
        node: &NodeName,
        public_key: &P384PublicKey,
        addresses: &[IpAddr],
        now: SystemTime,
        validity: Duration,
    ) -> Result<CertificateDer<'static>, CaError> {
        issue_api_cert(
            &self.issuer,
            &self.info.mesh,
            node,
            public_key,
            addresses,
            now,
            validity,
        )
    }

    /// Makes an issuing CA for this mesh: a fresh P-384 key and a certificate signed by this
    /// root, `CA:TRUE` with path length 0 (it issues node certificates, never another CA), SAN
    /// URI `meshfed://<mesh>` like the root's, valid from `now` (back-dated by
    /// [`CLOCK_SKEW_ALLOWANCE`]) for `validity` but never past the root.
    ///
    /// It carries no X.509 name constraint (DESIGN.md §2 asks for `meshfed://<mesh>/…`):
    /// rustls-webpki refuses every certificate below a CA with a URI name constraint (it does
    /// not implement them and fails closed), so [`crate::verify_node_cert`] enforces the
    /// constraint itself: the issuing CA and the leaf must name the root's mesh.
    pub fn issue_issuing_ca(
        &self,
        now: SystemTime,
        validity: Duration,
    ) -> Result<IssuingCa, CaError> {
        let key = SigningKey::generate().map_err(KeyError::from)?;
        let (not_before, not_after) = validity_window(now, validity)?;
        let root_end =
            to_offset(self.info.not_after).ok_or(CaError::ValidityOutOfRange { validity })?;
        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after.min(root_end);
        params.serial_number = Some(random_serial()?);
        params.distinguished_name = issuing_ca_name(&self.info.mesh);
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(mesh_uri(
            &self.info.mesh,
        ))?)];
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.use_authority_key_identifier_extension = true;
        let der = params
            .signed_by(&PublicKeyBytes(&P384PublicKey::of(&key)), &self.issuer)?
            .der()
            .clone();
        IssuingCa::assemble(der, key, &self.bundle)
    }
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCa")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// A mesh's issuing CA: an intermediate below the mesh's root CA with path length 0, whose key
/// gateways keep to renew their node certificates while the root key stays offline.
///
/// Make one with [`MeshCa::issue_issuing_ca`] or load one with [`IssuingCa::from_pem`]; node
/// certificates it issues verify with its certificate given as the intermediate
/// ([`IssuingCa::cert_der`]).
pub struct IssuingCa {
    info: CaCertInfo,
    der: CertificateDer<'static>,
    key: SigningKey,
    issuer: Issuer<'static, KeyPair>,
}

impl IssuingCa {
    /// Loads an issuing CA from its PEM certificate and PEM PKCS#8 key, checking that the
    /// certificate is an issuing CA (path length 0) signed by a CA of `root` and that the key
    /// belongs to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str, root: &TrustBundle) -> Result<Self, CaError> {
        let der = CertificateDer::from(cert_der_from_pem(cert_pem)?);
        let key = key_from_pkcs8_pem(key_pem)?;
        Self::assemble(der, key, root)
    }

    fn assemble(
        der: CertificateDer<'static>,
        key: SigningKey,
        root: &TrustBundle,
    ) -> Result<Self, CaError> {
        let info = inspect_ca_cert(&der)?;
        if info.path_len != Some(0) || info.mesh != *root.mesh() {
            return Err(CaError::NotIssuingCa { mesh: info.mesh });
        }
        if info.public_key != P384PublicKey::of(&key) {
            return Err(CaError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&der, rcgen_key(&key)?)?;
        let ca = Self {
            info,
            der,
            key,
            issuer,
        };
        ca.check_chains_to(root)?;
        Ok(ca)
    }

    /// Proves the certificate chains to `root` the way peers will check it: issues a node
    /// certificate (for the CA's own public key) in the middle of the CA's validity and
    /// verifies it with this certificate as the intermediate.
    fn check_chains_to(&self, root: &TrustBundle) -> Result<(), CaError> {
        let half = self
            .info
            .not_after
            .duration_since(self.info.not_before)
            .unwrap_or_default()
            / 2;
        let at = self.info.not_before + half;
        #[expect(clippy::expect_used, reason = "a constant that is a valid node name")]
        let name = NodeName::from_str("probe").expect("\"probe\" is a valid node name");
        let probe =
            self.issue_node_cert(&name, &self.info.public_key, at, Duration::from_secs(60))?;
        crate::bundle::verify_node_cert(
            root,
            probe.der(),
            std::slice::from_ref(&self.der),
            crate::bundle::KeyPurpose::ClientAuth,
            at,
        )
        .map_err(CaError::NotIssuedByRoot)?;
        Ok(())
    }

    /// The mesh this CA belongs to.
    pub fn mesh(&self) -> &MeshId {
        &self.info.mesh
    }

    /// What the certificate says (mesh, validity, public key, path length).
    pub fn info(&self) -> &CaCertInfo {
        &self.info
    }

    /// The issuing CA certificate, DER: the intermediate of every certificate it issues.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The issuing CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.to_vec()))
    }

    /// The issuing CA's private key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Issues a node certificate as [`MeshCa::issue_node_cert`] does, signed by this issuing CA.
    pub fn issue_node_cert(
        &self,
        node: &NodeName,
        public_key: &P384PublicKey,
        now: SystemTime,
        validity: Duration,
    ) -> Result<NodeCert, CaError> {
        issue_node(
            &self.issuer,
            &self.info.mesh,
            node,
            public_key,
            now,
            validity,
        )
    }
}

impl IssuingCa {
    /// Issues the certificate a node's HTTPS API presents, as [`issue_api_cert`] says.
    pub fn issue_api_cert(
        &self,
        node: &NodeName,
        public_key: &P384PublicKey,
        addresses: &[IpAddr],
        now: SystemTime,
        validity: Duration,
    ) -> Result<CertificateDer<'static>, CaError> {
        issue_api_cert(
            &self.issuer,
            &self.info.mesh,
            node,
            public_key,
            addresses,
            now,
            validity,
        )
    }
}

impl std::fmt::Debug for IssuingCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuingCa")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// A node certificate just issued, with what it says.
#[derive(Debug, Clone)]
pub struct NodeCert {
    der: CertificateDer<'static>,
    info: NodeCertInfo,
}

impl NodeCert {
    /// The certificate, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The certificate, PEM.
    pub fn pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.to_vec()))
    }

    /// What the certificate says.
    pub fn info(&self) -> &NodeCertInfo {
        &self.info
    }
}

/// Issues the server certificate of the HTTPS API of node `node` of `mesh`, signed by
/// `issuer`: SAN IP addresses `addresses` (where clients reach the API; a browser and the CLI
/// check the address they dialled against them) and the node's URI, EKU serverAuth only (it
/// never authenticates the node to a peer), key usage digitalSignature, valid from `now`
/// (back-dated by [`CLOCK_SKEW_ALLOWANCE`]) for `validity`.
fn issue_api_cert(
    issuer: &Issuer<'static, KeyPair>,
    mesh: &MeshId,
    node: &NodeName,
    public_key: &P384PublicKey,
    addresses: &[IpAddr],
    now: SystemTime,
    validity: Duration,
) -> Result<CertificateDer<'static>, CaError> {
    let identity = NodeIdentity {
        mesh: mesh.clone(),
        node: node.clone(),
    };
    let (not_before, not_after) = validity_window(now, validity)?;
    let mut params = CertificateParams::default();
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, mesh.as_str());
    name.push(DnType::CommonName, format!("{node} API"));
    params.distinguished_name = name;
    params.subject_alt_names = addresses.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    params
        .subject_alt_names
        .push(SanType::URI(Ia5String::try_from(identity.uri())?));
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params
        .signed_by(&PublicKeyBytes(public_key), issuer)?
        .der()
        .clone())
}

/// Issues a node certificate for `node` of `mesh`, signed by `issuer`.
fn issue_node(
    issuer: &Issuer<'static, KeyPair>,
    mesh: &MeshId,
    node: &NodeName,
    public_key: &P384PublicKey,
    now: SystemTime,
    validity: Duration,
) -> Result<NodeCert, CaError> {
    let identity = NodeIdentity {
        mesh: mesh.clone(),
        node: node.clone(),
    };
    let (not_before, not_after) = validity_window(now, validity)?;
    let mut params = CertificateParams::default();
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, mesh.as_str());
    name.push(DnType::CommonName, node.as_str());
    params.distinguished_name = name;
    params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(identity.uri())?)];
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let der = params
        .signed_by(&PublicKeyBytes(public_key), issuer)?
        .der()
        .clone();
    let info = inspect_node_cert(&der)?;
    Ok(NodeCert { der, info })
}

/// The distinguished name of a mesh's issuing CA: `CN=meshfed issuing CA <mesh>, O=<mesh>`.
fn issuing_ca_name(mesh: &MeshId) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, mesh.as_str());
    name.push(DnType::CommonName, format!("meshfed issuing CA {mesh}"));
    name
}

/// The distinguished name of a mesh CA: `CN=meshfed mesh CA <mesh>, O=<mesh>`.
fn ca_name(mesh: &MeshId) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, mesh.as_str());
    name.push(DnType::CommonName, format!("meshfed mesh CA {mesh}"));
    name
}

/// `[now - skew, now + validity]` in whole seconds, as rcgen wants it.
fn validity_window(
    now: SystemTime,
    validity: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime), CaError> {
    let out_of_range = || CaError::ValidityOutOfRange { validity };
    if validity.is_zero() {
        return Err(out_of_range());
    }
    let start = now
        .checked_sub(CLOCK_SKEW_ALLOWANCE)
        .ok_or_else(out_of_range)?;
    let end = now.checked_add(validity).ok_or_else(out_of_range)?;
    Ok((
        to_offset(start).ok_or_else(out_of_range)?,
        to_offset(end).ok_or_else(out_of_range)?,
    ))
}

/// Converts to an `OffsetDateTime` truncated to the second; `None` outside years 1 to 9999.
fn to_offset(t: SystemTime) -> Option<OffsetDateTime> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok()?,
        Err(before) => i64::try_from(before.duration().as_secs())
            .ok()?
            .checked_neg()?,
    };
    OffsetDateTime::from_unix_timestamp(secs).ok()
}

/// A random positive 128-bit serial number (RFC 5280 allows up to 20 octets).
fn random_serial() -> Result<SerialNumber, KeyError> {
    let mut bytes = [0u8; 16];
    meshfed_proto::crypto::random_fill(&mut bytes)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x40; // keep the full length, so every serial encodes to 16 octets
    Ok(SerialNumber::from_slice(&bytes))
}

/// The same key as rcgen wants it for signing certificates (ASN.1 DER ECDSA signatures).
pub(crate) fn rcgen_key(key: &SigningKey) -> Result<KeyPair, CaError> {
    let der = key.to_pkcs8().map_err(KeyError::from)?;
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(der),
        &PKCS_ECDSA_P384_SHA384,
    )?)
}

/// A bare P-384 public key, as rcgen wants it for the certificate it issues.
struct PublicKeyBytes<'a>(&'a P384PublicKey);

impl PublicKeyData for PublicKeyBytes<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P384_SHA384
    }
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::ParsedExtension;

    use super::*;
    use crate::key::key_to_pkcs8_pem;

    fn mesh(s: &str) -> MeshId {
        s.parse().unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn generated_ca_is_a_p384_ca_naming_its_mesh() {
        let ca = MeshCa::generate(&mesh("plant-a"), at(NOW), DEFAULT_CA_VALIDITY).unwrap();
        assert_eq!(ca.mesh().as_str(), "plant-a");
        let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(1));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(
            cert.subject()
                .to_string()
                .contains("CN=meshfed mesh CA plant-a")
        );
        assert_eq!(ca.info().not_before, at(NOW - 300));
        assert_eq!(ca.info().not_after, at(NOW) + DEFAULT_CA_VALIDITY);
    }

    #[test]
    fn node_cert_carries_the_node_uri_and_both_auth_usages() {
        let ca = MeshCa::generate(&mesh("plant-a"), at(NOW), DEFAULT_CA_VALIDITY).unwrap();
        let key = SigningKey::generate().unwrap();
        let node = "gw1".parse().unwrap();
        let cert = ca
            .issue_node_cert(
                &node,
                &P384PublicKey::of(&key),
                at(NOW),
                DEFAULT_NODE_CERT_VALIDITY,
            )
            .unwrap();
        let info = cert.info();
        assert_eq!(info.identity().uri(), "meshfed://plant-a/gw1");
        assert_eq!(info.public_key, P384PublicKey::of(&key));
        assert_eq!(info.not_before, at(NOW - 300));
        assert_eq!(info.not_after, at(NOW + 24 * 3600));
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(
            parsed
                .key_usage()
                .unwrap()
                .unwrap()
                .value
                .digital_signature()
        );
        let has_aki = parsed.extensions().iter().any(|e| {
            matches!(
                e.parsed_extension(),
                ParsedExtension::AuthorityKeyIdentifier(_)
            )
        });
        assert!(has_aki);
        // CA:FALSE is the DER default: it must be omitted, not encoded (strict parsers refuse it).
        assert!(parsed.basic_constraints().unwrap().is_none());
    }

    #[test]
    fn an_api_cert_names_its_addresses_and_the_node_and_serves_only() {
        let root = MeshCa::generate(&mesh("plant-a"), at(NOW), DEFAULT_CA_VALIDITY).unwrap();
        let issuing = root
            .issue_issuing_ca(at(NOW), DEFAULT_ISSUING_CA_VALIDITY)
            .unwrap();
        let key = P384PublicKey::of(&SigningKey::generate().unwrap());
        let addresses: [IpAddr; 2] = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let der = issuing
            .issue_api_cert(
                &"gw1".parse().unwrap(),
                &key,
                &addresses,
                at(NOW),
                DEFAULT_NODE_CERT_VALIDITY,
            )
            .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = san
            .general_names
            .iter()
            .map(|n| match n {
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string(),
                    _ => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string(),
                },
                other => other.to_string(),
            })
            .collect();
        assert_eq!(names, ["127.0.0.1", "::1", "URI(meshfed://plant-a/gw1)"]);
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(parsed.basic_constraints().unwrap().is_none());
        // What an HTTPS client checks: the chain to the mesh CA, for server use, for the
        // address it dialled and no other.
        let anchors = [webpki::anchor_from_trusted_cert(root.cert_der())
            .unwrap()
            .to_owned()];
        let cert = webpki::EndEntityCert::try_from(&der).unwrap();
        cert.verify_for_usage(
            &[webpki::aws_lc_rs::ECDSA_P384_SHA384],
            &anchors,
            &[issuing.cert_der().clone()],
            rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(NOW + 60)),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .unwrap();
        let name = |ip: &'static str| rustls_pki_types::ServerName::try_from(ip).unwrap();
        cert.verify_is_valid_for_subject_name(&name("127.0.0.1"))
            .unwrap();
        cert.verify_is_valid_for_subject_name(&name("10.9.8.7"))
            .unwrap_err();
    }

    #[test]
    fn two_node_certs_get_different_serials() {
        let ca = MeshCa::generate(&mesh("m"), at(NOW), DEFAULT_CA_VALIDITY).unwrap();
        let key = P384PublicKey::of(&SigningKey::generate().unwrap());
        let node = "n".parse().unwrap();
        let serial = |c: &NodeCert| {
            let (_, p) = x509_parser::parse_x509_certificate(c.der()).unwrap();
            p.raw_serial().to_vec()
        };
        let a = ca
            .issue_node_cert(&node, &key, at(NOW), Duration::from_secs(60))
            .unwrap();
        let b = ca
            .issue_node_cert(&node, &key, at(NOW), Duration::from_secs(60))
            .unwrap();
        assert_ne!(serial(&a), serial(&b));
        assert_eq!(a.info().serial, serial(&a), "the info names the serial");
        assert_eq!(a.info().serial.len(), 16);
    }

    #[test]
    fn ca_loads_back_from_pem_and_keeps_issuing() {
        let ca = MeshCa::generate(&mesh("plant-a"), at(NOW), DEFAULT_CA_VALIDITY).unwrap();
        let loaded =
            MeshCa::from_pem(&ca.cert_pem(), &key_to_pkcs8_pem(ca.key()).unwrap()).unwrap();
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
        assert_eq!(loaded.info(), ca.info());
        let key = P384PublicKey::of(&SigningKey::generate().unwrap());
        let cert = loaded
            .issue_node_cert(
                &"gw2".parse().unwrap(),
                &key,
                at(NOW),
                DEFAULT_NODE_CERT_VALIDITY,
            )
            .unwrap();
        assert_eq!(cert.info().mesh.as_str(), "plant-a");
    }

    #[test]
    fn issuing_ca_is_a_ca_with_path_length_0_signed_by_the_root() {
        let root = MeshCa::generate(&mesh("plant-a"), at(NOW), DEFAULT_CA_VALIDITY).unwrap();
        let issuing = root
            .issue_issuing_ca(at(NOW), DEFAULT_ISSUING_CA_VALIDITY)
            .unwrap();
        assert_eq!(issuing.mesh().as_str(), "plant-a");
        assert_eq!(issuing.info().path_len, Some(0));
        assert_eq!(
            issuing.info().not_after,
            at(NOW) + DEFAULT_ISSUING_CA_VALIDITY
        );
        let (_, cert) = x509_parser::parse_x509_certificate(issuing.cert_der()).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        assert!(cert.key_usage().unwrap().unwrap().value.key_cert_sign());
        assert!(
            cert.subject()
                .to_string()
                .contains("CN=meshfed issuing CA plant-a")
        );
        let (_, root_cert) = x509_parser::parse_x509_certificate(root.cert_der()).unwrap();
        assert_eq!(cert.issuer(), root_cert.subject());
        assert_ne!(P384PublicKey::of(issuing.key()), root.info().public_key);
    }

    #[test]
    fn issuing_ca_never_outlives_its_root() {
        let root = MeshCa::generate(&mesh("m"), at(NOW), Duration::from_secs(3600)).unwrap();
        let issuing = root
            .issue_issuing_ca(at(NOW), DEFAULT_ISSUING_CA_VALIDITY)
            .unwrap();
        assert_eq!(issuing.info().not_after, root.info().not_after);
    }

    #[test]
    fn issuing_ca_loads_from_pem_only_below_its_root_and_with_its_key() {
        let root = MeshCa::generate(&mesh("plant-a"), at(NOW), DEFAULT_CA_VALIDITY).unwrap();
        let issuing = root
            .issue_issuing_ca(at(NOW), DEFAULT_ISSUING_CA_VALIDITY)
            .unwrap();
        let key_pem = key_to_pkcs8_pem(issuing.key()).unwrap();
        let loaded =
            IssuingCa::from_pem(&issuing.cert_pem(), &key_pem, root.trust_bundle()).unwrap();
        assert_eq!(loaded.info(), issuing.info());
        let other_root = MeshCa::generate(&mesh("plant-a"), at(NOW), DEFAULT_CA_VALIDITY).unwrap();
        let err = IssuingCa::from_pem(&issuing.cert_pem(), &key_pem, other_root.trust_bundle())
            .unwrap_err();
        assert!(matches!(err, CaError::NotIssuedByRoot(_)), "{err:?}");
        let wrong_key = key_to_pkcs8_pem(&SigningKey::generate().unwrap()).unwrap();
        let err =
            IssuingCa::from_pem(&issuing.cert_pem(), &wrong_key, root.trust_bundle()).unwrap_err();
        assert!(matches!(err, CaError::KeyMismatch), "{err:?}");
        // The root itself is not an issuing CA (path length 1).
        let root_key = key_to_pkcs8_pem(root.key()).unwrap();
        let err =
            IssuingCa::from_pem(&root.cert_pem(), &root_key, root.trust_bundle()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "certificate of mesh plant-a is not an issuing CA certificate (pathlen 0) of its root"
        );
    }

    #[test]
    fn loading_a_ca_with_another_key_is_a_key_mismatch() {
        let ca = MeshCa::generate(&mesh("plant-a"), at(NOW), DEFAULT_CA_VALIDITY).unwrap();
        let other = key_to_pkcs8_pem(&SigningKey::generate().unwrap()).unwrap();
        let err = MeshCa::from_pem(&ca.cert_pem(), &other).unwrap_err();
        assert!(matches!(err, CaError::KeyMismatch), "{err:?}");
    }

    #[test]
    fn loading_a_node_cert_as_ca_is_rejected_as_not_a_ca() {
        let ca = MeshCa::generate(&mesh("plant-a"), at(NOW), DEFAULT_CA_VALIDITY).unwrap();
        let key = SigningKey::generate().unwrap();
        let cert = ca
            .issue_node_cert(
                &"gw1".parse().unwrap(),
                &P384PublicKey::of(&key),
                at(NOW),
                DEFAULT_NODE_CERT_VALIDITY,
            )
            .unwrap();
        let err = MeshCa::from_pem(&cert.pem(), &key_to_pkcs8_pem(&key).unwrap()).unwrap_err();
        assert!(matches!(err, CaError::Cert(CertError::NotCa)), "{err:?}");
    }

    #[test]
    fn zero_or_huge_validity_is_out_of_range() {
        let m = mesh("m");
        for validity in [
            Duration::ZERO,
            Duration::from_secs(10_000 * 365 * 24 * 3600),
        ] {
            let err = MeshCa::generate(&m, at(NOW), validity).unwrap_err();
            assert!(matches!(err, CaError::ValidityOutOfRange { .. }), "{err:?}");
        }
    }
}
