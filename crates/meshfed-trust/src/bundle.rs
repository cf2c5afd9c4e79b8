//! Trust bundles (the CA certificates a mesh presents) and verifying node certificates against
//! them.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA384, SHA384_OUTPUT_LEN, digest};
use meshfed_proto::MeshId;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::cert::{CaCertInfo, CertError, NodeCertInfo, inspect_ca_cert, inspect_node_cert};

/// Most CA certificates a bundle holds: the current one and, during a rollover, its successor.
pub const MAX_BUNDLE_CAS: usize = 2;

/// SHA-384 digest of a certificate's DER encoding. Shown as 96 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; SHA384_OUTPUT_LEN]);

impl Fingerprint {
    /// The fingerprint of `der`.
    pub fn of(der: &[u8]) -> Self {
        let mut out = [0u8; SHA384_OUTPUT_LEN];
        out.copy_from_slice(digest(&SHA384, der).as_ref());
        Self(out)
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; SHA384_OUTPUT_LEN] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A fingerprint's text is not 96 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SHA-384 fingerprint {value:?}: must be 96 hex digits (':' separators allowed)")]
pub struct InvalidFingerprint {
    /// The rejected text, cut to a readable length.
    pub value: String,
}

impl FromStr for Fingerprint {
    type Err = InvalidFingerprint;

    fn from_str(s: &str) -> Result<Self, InvalidFingerprint> {
        let digits: String = s.chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; SHA384_OUTPUT_LEN];
        hex::decode_to_slice(&digits, &mut out).map_err(|_| InvalidFingerprint {
            value: s.chars().take(120).collect(),
        })?;
        Ok(Self(out))
    }
}

/// A trust bundle could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// No CA certificate was given.
    #[error("trust bundle holds no CA certificate")]
    Empty,
    /// More CA certificates than a rollover needs.
    #[error("trust bundle holds {count} CA certificates, at most {MAX_BUNDLE_CAS} are allowed")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A certificate is not a meshfed CA certificate.
    #[error("CA certificate #{position} of the trust bundle is not usable")]
    Ca {
        /// 1-based position in the bundle.
        position: usize,
        /// Why.
        #[source]
        source: CertError,
    },
    /// A certificate cannot serve as a trust anchor.
    #[error("CA certificate #{position} of the trust bundle cannot be a trust anchor: {reason}")]
    Anchor {
        /// 1-based position in the bundle.
        position: usize,
        /// webpki's reason.
        reason: String,
    },
    /// The CAs belong to different meshes.
    #[error("trust bundle mixes CAs of mesh {first} and mesh {other}")]
    MixedMeshes {
        /// The first CA's mesh.
        first: MeshId,
        /// Another CA's mesh.
        other: MeshId,
    },
    /// The same certificate appears twice.
    #[error("trust bundle holds CA certificate {fingerprint} twice")]
    Duplicate {
        /// Its fingerprint.
        fingerprint: Fingerprint,
    },
    /// The text is not PEM.
    #[error("trust bundle is not PEM: {reason}")]
    NotPem {
        /// The parser's reason.
        reason: String,
    },
}

/// One CA certificate of a [`TrustBundle`].
#[derive(Debug, Clone)]
pub struct BundleCa {
    der: CertificateDer<'static>,
    fingerprint: Fingerprint,
    info: CaCertInfo,
    anchor: TrustAnchor<'static>,
}

impl BundleCa {
    fn new(der: CertificateDer<'static>, position: usize) -> Result<Self, BundleError> {
        let info = inspect_ca_cert(&der).map_err(|source| BundleError::Ca { position, source })?;
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| BundleError::Anchor {
                position,
                reason: e.to_string(),
            })?
            .to_owned();
        Ok(Self {
            fingerprint: Fingerprint::of(&der),
            der,
            info,
            anchor,
        })
    }

    /// The certificate, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// SHA-384 fingerprint of the certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// What the certificate says.
    pub fn info(&self) -> &CaCertInfo {
        &self.info
    }
}

/// The CA certificates one mesh presents: one, or two during a CA rollover. Every certificate is
/// an ECDSA P-384 CA naming the same mesh (`meshfed://<mesh>`).
#[derive(Debug, Clone)]
pub struct TrustBundle {
    mesh: MeshId,
    cas: Vec<BundleCa>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    /// Builds a bundle from one or two CA certificates (DER) of the same mesh.
    pub fn new(certs: Vec<CertificateDer<'static>>) -> Result<Self, BundleError> {
        match certs.len() {
            0 => return Err(BundleError::Empty),
            n if n > MAX_BUNDLE_CAS => return Err(BundleError::TooMany { count: n }),
            _ => {}
        }
        let mut mesh: Option<MeshId> = None;
        let mut cas: Vec<BundleCa> = Vec::with_capacity(certs.len());
        for (i, der) in certs.into_iter().enumerate() {
            let ca = BundleCa::new(der, i + 1)?;
            match &mesh {
                None => mesh = Some(ca.info.mesh.clone()),
                Some(first) if *first != ca.info.mesh => {
                    return Err(BundleError::MixedMeshes {
                        first: first.clone(),
                        other: ca.info.mesh,
                    });
                }
                Some(_) => {}
            }
            if cas.iter().any(|c| c.fingerprint == ca.fingerprint) {
                return Err(BundleError::Duplicate {
                    fingerprint: ca.fingerprint,
                });
            }
            cas.push(ca);
        }
        let mesh = mesh.ok_or(BundleError::Empty)?;
        let anchors = cas.iter().map(|c| c.anchor.clone()).collect();
        Ok(Self { mesh, cas, anchors })
    }

    /// Builds a bundle from PEM text holding one or two `CERTIFICATE` blocks.
    pub fn from_pem(text: &str) -> Result<Self, BundleError> {
        let blocks = pem::parse_many(text).map_err(|e| BundleError::NotPem {
            reason: e.to_string(),
        })?;
        let mut certs = Vec::with_capacity(blocks.len());
        for block in blocks {
            if block.tag() != "CERTIFICATE" {
                return Err(BundleError::NotPem {
                    reason: format!("block is labelled {:?}, expected CERTIFICATE", block.tag()),
                });
            }
            certs.push(CertificateDer::from(block.into_contents()));
        }
        Self::new(certs)
    }

    /// Builds a bundle from PEM text holding the mesh's CA certificates and, besides them, its
    /// issuing CA certificates: those with path length 0 are returned apart, as intermediates
    /// (DER) for [`verify_node_cert`], and the others make the bundle. A mesh CA made by
    /// `meshfed init` has path length 1, so `cat ca.crt issuing.crt` is such a text.
    pub fn from_pem_with_issuing_cas(
        text: &str,
    ) -> Result<(Self, Vec<CertificateDer<'static>>), BundleError> {
        let blocks = pem::parse_many(text).map_err(|e| BundleError::NotPem {
            reason: e.to_string(),
        })?;
        let mut roots = Vec::with_capacity(blocks.len());
        let mut issuing = Vec::new();
        for block in blocks {
            if block.tag() != "CERTIFICATE" {
                return Err(BundleError::NotPem {
                    reason: format!("block is labelled {:?}, expected CERTIFICATE", block.tag()),
                });
            }
            let der = CertificateDer::from(block.into_contents());
            match inspect_ca_cert(&der) {
                Ok(info) if info.path_len == Some(0) => issuing.push(der),
                _ => roots.push(der),
            }
        }
        Ok((Self::new(roots)?, issuing))
    }

    /// The mesh whose CAs these are.
    pub fn mesh(&self) -> &MeshId {
        &self.mesh
    }

    /// The CA certificates, current first.
    pub fn cas(&self) -> &[BundleCa] {
        &self.cas
    }

    /// The bundle as PEM `CERTIFICATE` blocks.
    pub fn to_pem(&self) -> String {
        let blocks: Vec<pem::Pem> = self
            .cas
            .iter()
            .map(|c| pem::Pem::new("CERTIFICATE", c.der.to_vec()))
            .collect();
        pem::encode_many(&blocks)
    }
}

/// What a node certificate is being verified for: the extended key usage it must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// The peer is the TLS server: we dialled it (`id-kp-serverAuth`).
    ServerAuth,
    /// The peer is the TLS client: it dialled us (`id-kp-clientAuth`).
    ClientAuth,
}

impl KeyPurpose {
    fn usage(self) -> KeyUsage {
        match self {
            Self::ServerAuth => KeyUsage::server_auth(),
            Self::ClientAuth => KeyUsage::client_auth(),
        }
    }
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ServerAuth => "TLS server authentication",
            Self::ClientAuth => "TLS client authentication",
        })
    }
}

/// A node certificate is not trusted. Each variant states the fact that decided it.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The certificate's validity ended before the verification time.
    #[error("certificate expired at {} (verified at {})", rfc3339(*not_after), rfc3339(*now))]
    Expired {
        /// End of the certificate's validity.
        not_after: SystemTime,
        /// The verification time.
        now: SystemTime,
    },
    /// The certificate's validity starts after the verification time.
    #[error(
        "certificate is not valid before {} (verified at {})",
        rfc3339(*not_before),
        rfc3339(*now)
    )]
    NotYetValid {
        /// Start of the certificate's validity.
        not_before: SystemTime,
        /// The verification time.
        now: SystemTime,
    },
    /// The issuing CA of the bundle has itself expired.
    #[error("CA certificate {fingerprint} of mesh {mesh} expired at {}", rfc3339(*not_after))]
    CaExpired {
        /// The CA's mesh.
        mesh: MeshId,
        /// The CA certificate's fingerprint.
        fingerprint: Fingerprint,
        /// End of the CA's validity.
        not_after: SystemTime,
    },
    /// No CA of the bundle issued the certificate.
    #[error("certificate was not issued by a CA in the trust bundle of mesh {mesh}")]
    UnknownIssuer {
        /// The bundle's mesh.
        mesh: MeshId,
    },
    /// The certificate names a bundle CA as issuer but that CA's key did not sign it.
    #[error("certificate signature does not verify with the key of its issuing CA")]
    BadSignature,
    /// The certificate is signed with something other than ECDSA P-384 / SHA-384.
    #[error("certificate is signed with an algorithm other than ECDSA P-384 with SHA-384")]
    UnsupportedSignatureAlgorithm,
    /// The certificate lacks the extended key usage for what it is used for.
    #[error("certificate is not valid for {purpose} (extended key usage)")]
    NotValidForPurpose {
        /// What it was verified for.
        purpose: KeyPurpose,
    },
    /// A CA certificate was presented as a node certificate.
    #[error("a CA certificate was presented as a node certificate")]
    CaAsNodeCert,
    /// The certificate names a node of another mesh than its issuing CA's.
    #[error("certificate names mesh {found} but was issued by the CA of mesh {expected}")]
    WrongMesh {
        /// The issuing CA's mesh.
        expected: MeshId,
        /// The mesh in the certificate's SAN URI.
        found: MeshId,
    },
    /// The path holds more than the mesh's one issuing CA between the root and the leaf.
    #[error(
        "certificate path holds {count} intermediate CAs; a mesh allows one issuing CA at most"
    )]
    PathTooLong {
        /// How many intermediates the path holds.
        count: usize,
    },
    /// The intermediate on the path is not a meshfed CA certificate.
    #[error("issuing CA certificate on the path is invalid")]
    IssuingCaContent(#[source] CertError),
    /// The intermediate on the path names another mesh than the root's.
    #[error(
        "issuing CA certificate names mesh {found} but was issued by the CA of mesh {expected}"
    )]
    IssuingCaWrongMesh {
        /// The root's mesh.
        expected: MeshId,
        /// The mesh in the intermediate's SAN URI.
        found: MeshId,
    },
    /// The intermediate on the path may certify further CAs (its path length is not 0).
    #[error("issuing CA certificate of mesh {mesh} does not limit its path length to 0")]
    IssuingCaNotLimited {
        /// Its mesh.
        mesh: MeshId,
    },
    /// The certificate chains to the bundle but its content is not a meshfed node certificate.
    #[error("node certificate content is invalid")]
    Content(#[from] CertError),
    /// Path validation failed for another reason.
    #[error("certificate path validation failed: {0}")]
    Rejected(webpki::Error),
}

/// Verifies a node certificate presented by a peer of the mesh whose `bundle` this is.
///
/// The chain (`end_entity`, then optional `intermediates`, in any order; certificates of the
/// bundle among them are ignored) must lead to a CA of the bundle, be valid at `now`, carry the
/// extended key usage for `purpose`, and name a node of the root CA's mesh in its
/// `meshfed://<mesh>/<node>` SAN URI. Only ECDSA P-384 with SHA-384 is accepted.
///
/// The path holds at most one intermediate: the mesh's issuing CA, which must name the root's
/// mesh (SAN URI `meshfed://<mesh>`) and have path length 0. That is how an issuing CA is
/// "name-constrained to the mesh" (DESIGN.md §2): meshfed checks it here, not with an X.509
/// name constraints extension, because rustls-webpki does not implement URI name constraints
/// and refuses every certificate below a CA that carries one.
pub fn verify_node_cert(
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    purpose: KeyPurpose,
    now: SystemTime,
) -> Result<NodeCertInfo, TrustError> {
    let from_webpki = |e| webpki_error(e, bundle, purpose);
    let cert = EndEntityCert::try_from(end_entity).map_err(from_webpki)?;
    let path = cert
        .verify_for_usage(
            &[webpki::aws_lc_rs::ECDSA_P384_SHA384],
            &bundle.anchors,
            intermediates,
            unix_time(now),
            purpose.usage(),
            None,
            None,
        )
        .map_err(from_webpki)?;
    let anchor_spki = path.anchor().subject_public_key_info.as_ref();
    let issuer = bundle
        .cas
        .iter()
        .find(|ca| ca.anchor.subject_public_key_info.as_ref() == anchor_spki)
        .ok_or_else(|| TrustError::UnknownIssuer {
            mesh: bundle.mesh.clone(),
        })?;
    if issuer.info.not_after < now {
        return Err(TrustError::CaExpired {
            mesh: issuer.info.mesh.clone(),
            fingerprint: issuer.fingerprint,
            not_after: issuer.info.not_after,
        });
    }
    let on_path: Vec<_> = path.intermediate_certificates().collect();
    if on_path.len() > 1 {
        return Err(TrustError::PathTooLong {
            count: on_path.len(),
        });
    }
    for intermediate in on_path {
        let ca = inspect_ca_cert(&intermediate.der()).map_err(TrustError::IssuingCaContent)?;
        if ca.mesh != issuer.info.mesh {
            return Err(TrustError::IssuingCaWrongMesh {
                expected: issuer.info.mesh.clone(),
                found: ca.mesh,
            });
        }
        if ca.path_len != Some(0) {
            return Err(TrustError::IssuingCaNotLimited { mesh: ca.mesh });
        }
    }
    let info = inspect_node_cert(end_entity)?;
    if info.mesh != issuer.info.mesh {
        return Err(TrustError::WrongMesh {
            expected: issuer.info.mesh.clone(),
            found: info.mesh,
        });
    }
    Ok(info)
}

/// Names the fact behind a webpki rejection.
fn webpki_error(e: webpki::Error, bundle: &TrustBundle, purpose: KeyPurpose) -> TrustError {
    use webpki::Error as E;
    match e {
        E::CertExpired { time, not_after } => TrustError::Expired {
            not_after: system_time(not_after),
            now: system_time(time),
        },
        E::CertNotValidYet { time, not_before } => TrustError::NotYetValid {
            not_before: system_time(not_before),
            now: system_time(time),
        },
        E::UnknownIssuer => TrustError::UnknownIssuer {
            mesh: bundle.mesh.clone(),
        },
        E::InvalidSignatureForPublicKey => TrustError::BadSignature,
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | E::SignatureAlgorithmMismatch => TrustError::UnsupportedSignatureAlgorithm,
        E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => {
            TrustError::NotValidForPurpose { purpose }
        }
        E::CaUsedAsEndEntity => TrustError::CaAsNodeCert,
        other => TrustError::Rejected(other),
    }
}

fn unix_time(t: SystemTime) -> UnixTime {
    // A clock before 1970 makes every certificate "not yet valid", which is what it deserves.
    UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO))
}

fn system_time(t: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

/// Formats a time as RFC 3339 (UTC, seconds).
fn rfc3339(t: SystemTime) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(t)
}

#[cfg(test)]
mod tests {
    use rcgen::string::Ia5String;
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, SanType};

    use super::*;
    use crate::ca::{DEFAULT_CA_VALIDITY, DEFAULT_NODE_CERT_VALIDITY, MeshCa, rcgen_key};
    use crate::key::P384PublicKey;
    use meshfed_proto::crypto::SigningKey;

    const NOW: u64 = 1_750_000_000;
    const HOUR: u64 = 3600;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn ca(mesh: &str) -> MeshCa {
        MeshCa::generate(&mesh.parse().unwrap(), at(NOW), DEFAULT_CA_VALIDITY).unwrap()
    }

    fn leaf(ca: &MeshCa, node: &str, issued: u64) -> CertificateDer<'static> {
        let key = P384PublicKey::of(&SigningKey::generate().unwrap());
        ca.issue_node_cert(
            &node.parse().unwrap(),
            &key,
            at(issued),
            DEFAULT_NODE_CERT_VALIDITY,
        )
        .unwrap()
        .der()
        .clone()
    }

    /// A leaf signed by `ca`'s key with whatever SAN URI and EKUs the test wants.
    fn misissued(
        ca: &MeshCa,
        uri: &str,
        ekus: Vec<ExtendedKeyUsagePurpose>,
    ) -> CertificateDer<'static> {
        let issuer = Issuer::from_ca_cert_der(ca.cert_der(), rcgen_key(ca.key()).unwrap()).unwrap();
        let key = rcgen_key(&SigningKey::generate().unwrap()).unwrap();
        let mut params = CertificateParams::default();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW as i64 - 60).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp((NOW + HOUR) as i64).unwrap();
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri).unwrap())];
        params.is_ca = IsCa::NoCa;
        params.extended_key_usages = ekus;
        params.signed_by(&key, &issuer).unwrap().der().clone()
    }

    fn verify(
        bundle: &TrustBundle,
        cert: &CertificateDer<'_>,
        now: u64,
    ) -> Result<NodeCertInfo, TrustError> {
        verify_node_cert(bundle, cert, &[], KeyPurpose::ClientAuth, at(now))
    }

    #[test]
    fn verify_accepts_a_node_cert_of_the_bundle_ca_for_both_purposes() {
        let ca = ca("plant-a");
        let cert = leaf(&ca, "gw1", NOW);
        for purpose in [KeyPurpose::ClientAuth, KeyPurpose::ServerAuth] {
            let info = verify_node_cert(ca.trust_bundle(), &cert, &[], purpose, at(NOW)).unwrap();
            assert_eq!(info.identity().uri(), "meshfed://plant-a/gw1");
        }
    }

    #[test]
    fn verify_rejects_an_expired_node_cert() {
        let ca = ca("plant-a");
        let cert = leaf(&ca, "gw1", NOW);
        let err = verify(ca.trust_bundle(), &cert, NOW + 25 * HOUR).unwrap_err();
        match err {
            TrustError::Expired { not_after, now } => {
                assert_eq!(not_after, at(NOW + 24 * HOUR));
                assert_eq!(now, at(NOW + 25 * HOUR));
            }
            other => panic!("expected Expired, got {other:?}"),
        }
        let text = verify(ca.trust_bundle(), &cert, NOW + 25 * HOUR)
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with("certificate expired at 2025-06-"),
            "{text}"
        );
    }

    #[test]
    fn verify_rejects_a_node_cert_not_yet_valid() {
        let ca = ca("plant-a");
        let cert = leaf(&ca, "gw1", NOW + 2 * HOUR);
        let err = verify(ca.trust_bundle(), &cert, NOW).unwrap_err();
        assert!(matches!(err, TrustError::NotYetValid { .. }), "{err:?}");
    }

    #[test]
    fn verify_accepts_a_node_clock_lagging_by_less_than_the_skew_allowance() {
        let ca = ca("plant-a");
        let cert = leaf(&ca, "gw1", NOW);
        verify(ca.trust_bundle(), &cert, NOW - 4 * 60).unwrap();
    }

    #[test]
    fn verify_rejects_leaf_from_another_ca() {
        let ours = ca("plant-a");
        let theirs = ca("plant-b");
        let err = verify(ours.trust_bundle(), &leaf(&theirs, "gw1", NOW), NOW).unwrap_err();
        assert!(
            matches!(&err, TrustError::UnknownIssuer { mesh } if mesh.as_str() == "plant-a"),
            "{err:?}"
        );
    }

    #[test]
    fn verify_rejects_leaf_signed_by_an_impostor_ca_of_the_same_name() {
        let ours = ca("plant-a");
        let impostor = ca("plant-a");
        let err = verify(ours.trust_bundle(), &leaf(&impostor, "gw1", NOW), NOW).unwrap_err();
        assert!(matches!(err, TrustError::BadSignature), "{err:?}");
    }

    #[test]
    fn verify_rejects_leaf_naming_another_mesh() {
        let ca = ca("plant-a");
        let both = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let cert = misissued(&ca, "meshfed://plant-b/gw1", both);
        let err = verify(ca.trust_bundle(), &cert, NOW).unwrap_err();
        assert_eq!(
            err.to_string(),
            "certificate names mesh plant-b but was issued by the CA of mesh plant-a"
        );
    }

    #[test]
    fn verify_rejects_leaf_without_the_purpose_eku() {
        let ca = ca("plant-a");
        let cert = misissued(
            &ca,
            "meshfed://plant-a/gw1",
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        );
        let err = verify(ca.trust_bundle(), &cert, NOW).unwrap_err();
        assert!(
            matches!(
                err,
                TrustError::NotValidForPurpose {
                    purpose: KeyPurpose::ClientAuth
                }
            ),
            "{err:?}"
        );
        let ok = verify_node_cert(
            ca.trust_bundle(),
            &cert,
            &[],
            KeyPurpose::ServerAuth,
            at(NOW),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn verify_rejects_leaf_without_a_meshfed_uri() {
        let ca = ca("plant-a");
        let cert = misissued(
            &ca,
            "https://example.invalid/",
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let err = verify(ca.trust_bundle(), &cert, NOW).unwrap_err();
        assert!(
            matches!(err, TrustError::Content(CertError::MissingMeshfedUri)),
            "{err:?}"
        );
    }

    #[test]
    fn verify_rejects_the_ca_cert_presented_as_node_cert() {
        let ca = ca("plant-a");
        let err = verify(ca.trust_bundle(), ca.cert_der(), NOW).unwrap_err();
        assert!(matches!(err, TrustError::CaAsNodeCert), "{err:?}");
    }

    #[test]
    fn verify_rejects_leaf_of_an_expired_ca() {
        let short = MeshCa::generate(
            &"plant-a".parse().unwrap(),
            at(NOW),
            Duration::from_secs(HOUR),
        )
        .unwrap();
        let key = P384PublicKey::of(&SigningKey::generate().unwrap());
        let cert = short
            .issue_node_cert(
                &"gw1".parse().unwrap(),
                &key,
                at(NOW),
                Duration::from_secs(3 * HOUR),
            )
            .unwrap();
        let err = verify(short.trust_bundle(), cert.der(), NOW + 2 * HOUR).unwrap_err();
        assert!(matches!(err, TrustError::CaExpired { .. }), "{err:?}");
    }

    /// A CA certificate for `uri` with `constraint`, signed by `issuer`, and its issuer.
    fn sub_ca(
        issuer: &Issuer<'_, rcgen::KeyPair>,
        uri: &str,
        constraint: rcgen::BasicConstraints,
    ) -> (CertificateDer<'static>, Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen_key(&SigningKey::generate().unwrap()).unwrap();
        let mut params = CertificateParams::default();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW as i64 - 60).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp((NOW + HOUR) as i64).unwrap();
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri).unwrap())];
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("sub CA {uri}"));
        params.is_ca = IsCa::Ca(constraint);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let der = params.signed_by(&key, issuer).unwrap().der().clone();
        let issuer = Issuer::from_ca_cert_der(&der, key).unwrap();
        (der, issuer)
    }

    /// A node certificate of `plant-a` signed by `issuer`.
    fn leaf_by(issuer: &Issuer<'_, rcgen::KeyPair>) -> CertificateDer<'static> {
        let key = rcgen_key(&SigningKey::generate().unwrap()).unwrap();
        let mut params = CertificateParams::default();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW as i64 - 60).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp((NOW + HOUR) as i64).unwrap();
        params.subject_alt_names = vec![SanType::URI(
            Ia5String::try_from("meshfed://plant-a/gw1").unwrap(),
        )];
        params.is_ca = IsCa::NoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.signed_by(&key, issuer).unwrap().der().clone()
    }

    fn root_issuer(ca: &MeshCa) -> Issuer<'static, rcgen::KeyPair> {
        Issuer::from_ca_cert_der(ca.cert_der(), rcgen_key(ca.key()).unwrap()).unwrap()
    }

    #[test]
    fn node_cert_of_the_issuing_ca_verifies_with_it_as_intermediate_and_not_without() {
        let root = ca("plant-a");
        let issuing = root
            .issue_issuing_ca(at(NOW), crate::ca::DEFAULT_ISSUING_CA_VALIDITY)
            .unwrap();
        let key = P384PublicKey::of(&SigningKey::generate().unwrap());
        let cert = issuing
            .issue_node_cert(
                &"gw1".parse().unwrap(),
                &key,
                at(NOW),
                DEFAULT_NODE_CERT_VALIDITY,
            )
            .unwrap();
        let chain = [issuing.cert_der().clone()];
        let info = verify_node_cert(
            root.trust_bundle(),
            cert.der(),
            &chain,
            KeyPurpose::ServerAuth,
            at(NOW),
        )
        .unwrap();
        assert_eq!(info.identity().uri(), "meshfed://plant-a/gw1");
        // TLS presents the root after the issuing CA: a bundle CA among them is harmless.
        let with_root = [issuing.cert_der().clone(), root.cert_der().clone()];
        verify_node_cert(
            root.trust_bundle(),
            cert.der(),
            &with_root,
            KeyPurpose::ClientAuth,
            at(NOW),
        )
        .unwrap();
        let err = verify(root.trust_bundle(), cert.der(), NOW).unwrap_err();
        assert!(
            matches!(&err, TrustError::UnknownIssuer { mesh } if mesh.as_str() == "plant-a"),
            "{err:?}"
        );
    }

    #[test]
    fn verify_refuses_an_intermediate_naming_another_mesh() {
        let root = ca("plant-a");
        let (other, issuer) = sub_ca(
            &root_issuer(&root),
            "meshfed://plant-b",
            rcgen::BasicConstraints::Constrained(0),
        );
        let cert = leaf_by(&issuer);
        let err = verify_node_cert(
            root.trust_bundle(),
            &cert,
            &[other],
            KeyPurpose::ClientAuth,
            at(NOW),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "issuing CA certificate names mesh plant-b but was issued by the CA of mesh plant-a"
        );
    }

    #[test]
    fn verify_refuses_an_intermediate_without_path_length_0() {
        let root = ca("plant-a");
        let (wide, issuer) = sub_ca(
            &root_issuer(&root),
            "meshfed://plant-a",
            rcgen::BasicConstraints::Unconstrained,
        );
        let err = verify_node_cert(
            root.trust_bundle(),
            &leaf_by(&issuer),
            &[wide],
            KeyPurpose::ClientAuth,
            at(NOW),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "issuing CA certificate of mesh plant-a does not limit its path length to 0"
        );
    }

    #[test]
    fn verify_refuses_a_path_longer_than_root_issuing_ca_node() {
        // A root without a path length limit, so that only meshfed's own check stands in the way.
        let key = SigningKey::generate().unwrap();
        let mut params = CertificateParams::default();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW as i64 - 60).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp((NOW + HOUR) as i64).unwrap();
        params.subject_alt_names = vec![SanType::URI(
            Ia5String::try_from("meshfed://plant-a").unwrap(),
        )];
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let root_der = params
            .self_signed(&rcgen_key(&key).unwrap())
            .unwrap()
            .der()
            .clone();
        let bundle = TrustBundle::new(vec![root_der.clone()]).unwrap();
        let root = Issuer::from_ca_cert_der(&root_der, rcgen_key(&key).unwrap()).unwrap();
        let (middle, middle_issuer) = sub_ca(
            &root,
            "meshfed://plant-a",
            rcgen::BasicConstraints::Unconstrained,
        );
        let (issuing, issuing_issuer) = sub_ca(
            &middle_issuer,
            "meshfed://plant-a",
            rcgen::BasicConstraints::Constrained(0),
        );
        let err = verify_node_cert(
            &bundle,
            &leaf_by(&issuing_issuer),
            &[issuing, middle],
            KeyPurpose::ClientAuth,
            at(NOW),
        )
        .unwrap_err();
        assert!(
            matches!(err, TrustError::PathTooLong { count: 2 }),
            "{err:?}"
        );
    }

    #[test]
    fn rollover_bundle_accepts_leaves_of_both_cas() {
        let old = ca("plant-a");
        let new = ca("plant-a");
        let bundle =
            TrustBundle::new(vec![old.cert_der().clone(), new.cert_der().clone()]).unwrap();
        verify(&bundle, &leaf(&old, "gw1", NOW), NOW).unwrap();
        verify(&bundle, &leaf(&new, "gw2", NOW), NOW).unwrap();
        assert_eq!(bundle.cas().len(), 2);
    }

    #[test]
    fn bundle_rejects_cas_of_two_meshes() {
        let err = TrustBundle::new(vec![ca("a").cert_der().clone(), ca("b").cert_der().clone()])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "trust bundle mixes CAs of mesh a and mesh b"
        );
    }

    #[test]
    fn bundle_rejects_zero_three_or_duplicate_cas() {
        assert!(matches!(TrustBundle::new(vec![]), Err(BundleError::Empty)));
        let a = ca("m");
        let three = vec![
            a.cert_der().clone(),
            ca("m").cert_der().clone(),
            ca("m").cert_der().clone(),
        ];
        assert!(matches!(
            TrustBundle::new(three),
            Err(BundleError::TooMany { count: 3 })
        ));
        let twice = vec![a.cert_der().clone(), a.cert_der().clone()];
        assert!(matches!(
            TrustBundle::new(twice),
            Err(BundleError::Duplicate { .. })
        ));
    }

    #[test]
    fn bundle_rejects_a_node_cert_as_ca() {
        let a = ca("m");
        let err = TrustBundle::new(vec![leaf(&a, "n", NOW)]).unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::Ca {
                    position: 1,
                    source: CertError::NotCa
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bundle_pem_round_trips() {
        let bundle =
            TrustBundle::new(vec![ca("m").cert_der().clone(), ca("m").cert_der().clone()]).unwrap();
        let again = TrustBundle::from_pem(&bundle.to_pem()).unwrap();
        let prints = |b: &TrustBundle| {
            b.cas()
                .iter()
                .map(BundleCa::fingerprint)
                .collect::<Vec<_>>()
        };
        assert_eq!(prints(&again), prints(&bundle));
        assert_eq!(again.mesh().as_str(), "m");
    }

    #[test]
    fn pem_with_issuing_cas_sets_the_issuing_ca_apart() {
        let root = ca("m");
        let issuing = root
            .issue_issuing_ca(at(NOW), crate::ca::DEFAULT_ISSUING_CA_VALIDITY)
            .unwrap();
        let text = format!("{}{}", root.cert_pem(), issuing.cert_pem());
        let (bundle, intermediates) = TrustBundle::from_pem_with_issuing_cas(&text).unwrap();
        assert_eq!(bundle.cas().len(), 1);
        assert_eq!(bundle.cas()[0].der(), root.cert_der());
        assert_eq!(intermediates, vec![issuing.cert_der().clone()]);
        let err = TrustBundle::from_pem_with_issuing_cas(&issuing.cert_pem()).unwrap_err();
        assert!(matches!(err, BundleError::Empty), "{err:?}");
    }

    #[test]
    fn fingerprint_is_sha384_of_the_der_in_hex_and_parses_back() {
        let ca = ca("m");
        let fp = ca.fingerprint();
        let text = fp.to_string();
        assert_eq!(text.len(), 96);
        assert_eq!(
            text,
            hex::encode(aws_lc_rs::digest::digest(&SHA384, ca.cert_der()).as_ref())
        );
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        let colons = fp
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(colons.parse::<Fingerprint>().unwrap(), fp);
        assert!("abc".parse::<Fingerprint>().is_err());
    }
}
