//! Reading meshfed certificates: the `meshfed://` names they carry and the facts a node needs
//! from them ([`NodeCertInfo`], [`CaCertInfo`]). Reading is not trusting: see
//! [`crate::verify_node_cert`] for that.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshfed_proto::{InvalidId, MeshId, NodeName};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY;
use x509_parser::time::ASN1Time;

use crate::key::P384PublicKey;

/// How the SAN URIs of meshfed identities begin.
pub const URI_PREFIX: &str = "meshfed://";

/// DER content octets of the secp384r1 (P-384) curve OID, 1.3.132.0.34.
const SECP384R1_OID: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// A certificate's content is not what meshfed requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a DER X.509 certificate: {reason}")]
    Malformed {
        /// The parser's reason.
        reason: String,
    },
    /// The text is not a PEM `CERTIFICATE` block.
    #[error("not a PEM CERTIFICATE block: {reason}")]
    NotPem {
        /// What was wrong.
        reason: String,
    },
    /// The certificate's key is not an ECDSA P-384 key.
    #[error("certificate key is not ECDSA P-384 (found {found})")]
    NotP384 {
        /// The key algorithm or curve found.
        found: String,
    },
    /// No SAN URI with the `meshfed://` scheme.
    #[error("certificate has no meshfed:// subject alternative name URI")]
    MissingMeshfedUri,
    /// More than one `meshfed://` SAN URI.
    #[error("certificate has {count} meshfed:// subject alternative name URIs, expected one")]
    SeveralMeshfedUris {
        /// How many were found.
        count: usize,
    },
    /// The `meshfed://` SAN URI is not of the expected form.
    #[error("certificate's subject alternative name {uri:?} is malformed")]
    MalformedMeshfedUri {
        /// The URI found.
        uri: String,
        /// What is wrong with it.
        #[source]
        source: UriError,
    },
    /// A CA certificate was given where a node certificate is expected.
    #[error("certificate is a CA certificate, not a node certificate")]
    IsCa,
    /// A node (leaf) certificate was given where a CA certificate is expected.
    #[error("certificate is not a CA certificate (basicConstraints CA:true is missing)")]
    NotCa,
}

/// A `meshfed://` URI is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// It does not start with `meshfed://`.
    #[error("does not start with meshfed://")]
    WrongScheme,
    /// It does not have the expected number of path segments.
    #[error("expected {expected}")]
    WrongShape {
        /// The form expected.
        expected: &'static str,
    },
    /// A segment is not a valid mesh id or node name.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
}

/// Who a node certificate names: `meshfed://<mesh>/<node>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    /// The node's mesh.
    pub mesh: MeshId,
    /// The node's name within its mesh.
    pub node: NodeName,
}

impl NodeIdentity {
    /// The SAN URI, `meshfed://<mesh>/<node>`.
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{URI_PREFIX}{}/{}", self.mesh, self.node)
    }
}

impl FromStr for NodeIdentity {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, UriError> {
        const SHAPE: &str = "meshfed://<mesh>/<node>";
        let rest = s.strip_prefix(URI_PREFIX).ok_or(UriError::WrongScheme)?;
        let (mesh, node) = rest
            .split_once('/')
            .ok_or(UriError::WrongShape { expected: SHAPE })?;
        if node.contains('/') {
            return Err(UriError::WrongShape { expected: SHAPE });
        }
        Ok(Self {
            mesh: mesh.parse()?,
            node: node.parse()?,
        })
    }
}

/// The SAN URI of a mesh CA: `meshfed://<mesh>`.
pub fn mesh_uri(mesh: &MeshId) -> String {
    format!("{URI_PREFIX}{mesh}")
}

fn parse_mesh_uri(s: &str) -> Result<MeshId, UriError> {
    let rest = s.strip_prefix(URI_PREFIX).ok_or(UriError::WrongScheme)?;
    if rest.contains('/') {
        return Err(UriError::WrongShape {
            expected: "meshfed://<mesh>",
        });
    }
    Ok(rest.parse()?)
}

/// What a node certificate says, read without judging whether it is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCertInfo {
    /// The node's mesh, from the SAN URI.
    pub mesh: MeshId,
    /// The node's name, from the SAN URI.
    pub node: NodeName,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The node's public key: an uncompressed P-384 point.
    pub public_key: P384PublicKey,
    /// The certificate's serial number, big-endian, without leading zero bytes (what a
    /// revocation list names a single certificate by).
    pub serial: Vec<u8>,
}

impl NodeCertInfo {
    /// The certificate's identity, `meshfed://<mesh>/<node>`.
    pub fn identity(&self) -> NodeIdentity {
        NodeIdentity {
            mesh: self.mesh.clone(),
            node: self.node.clone(),
        }
    }
}

/// What a mesh CA certificate says, read without judging whether it is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertInfo {
    /// The mesh, from the SAN URI `meshfed://<mesh>`.
    pub mesh: MeshId,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The CA's public key: an uncompressed P-384 point.
    pub public_key: P384PublicKey,
    /// The basic constraints' path length: how many CAs may follow it on a path (`None`: no
    /// limit). A mesh's issuing CA has 0.
    pub path_len: Option<u32>,
}

/// Reads a node certificate (DER): its `meshfed://<mesh>/<node>` SAN URI, validity and P-384
/// public key. Rejects CA certificates.
pub fn inspect_node_cert(der: &[u8]) -> Result<NodeCertInfo, CertError> {
    let cert = parse(der)?;
    if cert.is_ca() {
        return Err(CertError::IsCa);
    }
    let uri = single_meshfed_uri(&cert)?;
    let identity: NodeIdentity = uri
        .parse()
        .map_err(|source| CertError::MalformedMeshfedUri {
            uri: uri.to_owned(),
            source,
        })?;
    Ok(NodeCertInfo {
        mesh: identity.mesh,
        node: identity.node,
        not_before: system_time(cert.validity().not_before),
        not_after: system_time(cert.validity().not_after),
        public_key: p384_key(&cert)?,
        serial: serial_bytes(cert.raw_serial()),
    })
}

/// A serial number's bytes without the leading zeros DER may add to keep it positive.
fn serial_bytes(raw: &[u8]) -> Vec<u8> {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    raw[start..].to_vec()
}

/// Reads a mesh CA certificate (DER): its `meshfed://<mesh>` SAN URI, validity and P-384 public
/// key. Rejects certificates without `CA:true`.
pub fn inspect_ca_cert(der: &[u8]) -> Result<CaCertInfo, CertError> {
    let cert = parse(der)?;
    if !cert.is_ca() {
        return Err(CertError::NotCa);
    }
    let path_len = cert
        .basic_constraints()
        .map_err(|e| CertError::Malformed {
            reason: format!("basic constraints: {e}"),
        })?
        .and_then(|bc| bc.value.path_len_constraint);
    let uri = single_meshfed_uri(&cert)?;
    let mesh = parse_mesh_uri(uri).map_err(|source| CertError::MalformedMeshfedUri {
        uri: uri.to_owned(),
        source,
    })?;
    Ok(CaCertInfo {
        mesh,
        not_before: system_time(cert.validity().not_before),
        not_after: system_time(cert.validity().not_after),
        public_key: p384_key(&cert)?,
        path_len,
    })
}

/// Decodes the single PEM `CERTIFICATE` block in `text` to DER.
pub fn cert_der_from_pem(text: &str) -> Result<Vec<u8>, CertError> {
    let block = pem::parse(text).map_err(|e| CertError::NotPem {
        reason: e.to_string(),
    })?;
    if block.tag() != "CERTIFICATE" {
        return Err(CertError::NotPem {
            reason: format!("block is labelled {:?}", block.tag()),
        });
    }
    Ok(block.into_contents())
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::Malformed {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(CertError::Malformed {
            reason: format!("{} bytes of trailing data", rest.len()),
        });
    }
    Ok(cert)
}

fn single_meshfed_uri<'a>(cert: &'a X509Certificate<'_>) -> Result<&'a str, CertError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::Malformed {
            reason: format!("subject alternative name: {e}"),
        })?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(URI_PREFIX) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(CertError::MissingMeshfedUri),
        [uri] => Ok(uri),
        _ => Err(CertError::SeveralMeshfedUris { count: uris.len() }),
    }
}

fn p384_key(cert: &X509Certificate<'_>) -> Result<P384PublicKey, CertError> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(CertError::NotP384 {
            found: format!("key algorithm {}", spki.algorithm.algorithm.to_id_string()),
        });
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    match curve {
        Some(oid) if oid.as_bytes() == SECP384R1_OID => {}
        Some(oid) => {
            return Err(CertError::NotP384 {
                found: format!("curve {}", oid.to_id_string()),
            });
        }
        None => {
            return Err(CertError::NotP384 {
                found: "EC key without a named curve".to_owned(),
            });
        }
    }
    P384PublicKey::from_uncompressed(&spki.subject_public_key.data).map_err(|e| {
        CertError::NotP384 {
            found: e.to_string(),
        }
    })
}

fn system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH + offset
    } else {
        UNIX_EPOCH - offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_identity_round_trips_through_its_uri() {
        let id: NodeIdentity = "meshfed://plant-a/gw1".parse().unwrap();
        assert_eq!(id.mesh.as_str(), "plant-a");
        assert_eq!(id.node.as_str(), "gw1");
        assert_eq!(id.uri(), "meshfed://plant-a/gw1");
    }

    #[test]
    fn node_identity_rejects_other_shapes() {
        let cases = [
            ("https://plant-a/gw1", UriError::WrongScheme),
            (
                "meshfed://plant-a",
                UriError::WrongShape {
                    expected: "meshfed://<mesh>/<node>",
                },
            ),
            (
                "meshfed://plant-a/gw1/x",
                UriError::WrongShape {
                    expected: "meshfed://<mesh>/<node>",
                },
            ),
        ];
        for (uri, expected) in cases {
            assert_eq!(uri.parse::<NodeIdentity>().unwrap_err(), expected, "{uri}");
        }
        let err = "meshfed://Plant/gw1".parse::<NodeIdentity>().unwrap_err();
        assert!(
            err.to_string().contains("invalid mesh id \"Plant\""),
            "{err}"
        );
    }

    #[test]
    fn mesh_uri_parses_back_to_the_mesh() {
        let mesh: MeshId = "plant-a".parse().unwrap();
        assert_eq!(parse_mesh_uri(&mesh_uri(&mesh)).unwrap(), mesh);
        assert!(parse_mesh_uri("meshfed://plant-a/gw1").is_err());
    }

    fn self_signed(key: &rcgen::KeyPair, uris: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*u).unwrap()))
            .collect();
        params.self_signed(key).unwrap().der().to_vec()
    }

    #[test]
    fn node_cert_with_a_p256_key_is_rejected_as_not_p384() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let err = inspect_node_cert(&self_signed(&key, &["meshfed://m/n"])).unwrap_err();
        assert_eq!(
            err,
            CertError::NotP384 {
                found: "curve 1.2.840.10045.3.1.7".to_owned()
            }
        );
    }

    #[test]
    fn node_cert_with_two_meshfed_uris_is_rejected() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let der = self_signed(&key, &["meshfed://m/a", "meshfed://m/b"]);
        let err = inspect_node_cert(&der).unwrap_err();
        assert_eq!(err, CertError::SeveralMeshfedUris { count: 2 });
    }

    #[test]
    fn node_cert_with_a_malformed_meshfed_uri_names_the_uri() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let der = self_signed(&key, &["https://x.invalid/", "meshfed://M/n"]);
        let err = inspect_node_cert(&der).unwrap_err();
        assert!(err.to_string().contains("\"meshfed://M/n\""), "{err}");
        assert!(
            matches!(err, CertError::MalformedMeshfedUri { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn garbage_is_reported_as_malformed() {
        let err = inspect_node_cert(b"not a certificate").unwrap_err();
        assert!(matches!(err, CertError::Malformed { .. }), "{err:?}");
    }
}
