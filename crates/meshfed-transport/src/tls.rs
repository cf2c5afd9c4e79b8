//! The TLS profile (rustls with aws-lc-rs, TLS 1.3 only, P-384 only) and the two certificate
//! verifiers: the dialler's [`ServerTrust`] and the listener's self-consistent-chain rule.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshfed_proto::MeshId;
use meshfed_proto::crypto::Digest384;
use meshfed_trust::{Fingerprint, KeyPurpose, TrustBundle, TrustError, verify_node_cert};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{Refusal, chain};

/// The only signature algorithm meshfed accepts, in certificates and in the handshake.
static P384_ONLY: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[webpki::aws_lc_rs::ECDSA_P384_SHA384],
    mapping: &[(
        SignatureScheme::ECDSA_NISTP384_SHA384,
        &[webpki::aws_lc_rs::ECDSA_P384_SHA384],
    )],
};

/// aws-lc-rs, cut down to meshfed's profile: TLS 1.3 suites AES-256-GCM (preferred) and
/// AES-128-GCM, key exchange secp384r1 only, signatures ECDSA P-384 / SHA-384 only.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
            aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![aws_lc_rs::kx_group::SECP384R1],
        signature_verification_algorithms: P384_ONLY,
        ..aws_lc_rs::default_provider()
    })
}

/// How a dialler decides to trust the server it reaches.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Joining by invitation: the server's presented chain must contain a CA certificate whose
    /// SHA-384 fingerprint (of its DER) equals `fingerprint`; the server's leaf must verify
    /// against that CA (for TLS server authentication) and name `mesh`.
    PinnedCa {
        /// The mesh the invitation names.
        mesh: MeshId,
        /// SHA-384 of the mesh's CA certificate, from the invitation.
        fingerprint: Digest384,
    },
    /// An established federation: the server's leaf must verify against exactly this stored
    /// bundle (for TLS server authentication) and name `mesh`.
    Bundle {
        /// The peer mesh.
        mesh: MeshId,
        /// The peer's trust bundle, stored at the federation handshake.
        bundle: TrustBundle,
    },
}

impl ServerTrust {
    /// The mesh the server must belong to.
    pub fn mesh(&self) -> &MeshId {
        match self {
            Self::PinnedCa { mesh, .. } | Self::Bundle { mesh, .. } => mesh,
        }
    }
}

/// The dialler's verifier: applies a [`ServerTrust`].
#[derive(Debug)]
pub(crate) struct ServerTrustVerifier {
    trust: ServerTrust,
}

impl ServerTrustVerifier {
    pub(crate) fn new(trust: ServerTrust) -> Self {
        Self { trust }
    }

    fn check(
        &self,
        leaf: &CertificateDer<'_>,
        presented: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<(), String> {
        let info = match &self.trust {
            ServerTrust::PinnedCa { fingerprint, .. } => {
                let ca = presented
                    .iter()
                    .find(|c| Fingerprint::of(c).as_bytes() == fingerprint)
                    .ok_or_else(|| pin_mismatch(fingerprint, presented))?;
                let bundle = TrustBundle::new(vec![ca.clone().into_owned()]).map_err(|e| {
                    format!(
                        "the server's CA certificate matching the pin is unusable: {}",
                        chain(&e)
                    )
                })?;
                verify_node_cert(&bundle, leaf, presented, KeyPurpose::ServerAuth, now)
            }
            ServerTrust::Bundle { bundle, .. } => {
                verify_node_cert(bundle, leaf, presented, KeyPurpose::ServerAuth, now)
            }
        }
        .map_err(|e| format!("server certificate: {}", chain(&e)))?;
        let expected = self.trust.mesh();
        if info.mesh != *expected {
            return Err(format!(
                "server certificate names mesh {}, expected {expected}",
                info.mesh
            ));
        }
        Ok(())
    }
}

fn pin_mismatch(pin: &Digest384, presented: &[CertificateDer<'_>]) -> String {
    let found: Vec<String> = presented
        .iter()
        .take(4)
        .map(|c| Fingerprint::of(c).to_string())
        .collect();
    let found = if found.is_empty() {
        "none: the server presented its leaf alone".to_owned()
    } else {
        found.join(", ")
    };
    format!(
        "no CA in the server's chain matches the pinned fingerprint {} (presented: {found})",
        hex::encode(pin)
    )
}

impl ServerCertVerifier for ServerTrustVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, system_time(now))
            .map_err(|reason| Refusal(reason).into_rustls())?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &P384_ONLY)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        P384_ONLY.supported_schemes()
    }
}

/// The listener's verifier. A client must present a P-384 meshfed node certificate followed by
/// its mesh's issuing CA certificate (if an issuing CA signed it) and, last, its mesh CA
/// certificate; the chain must lead to that last CA, be valid now, and the leaf must name a
/// node of that CA's mesh. TLS proves the client holds the leaf's key. Whether that mesh is trusted is
/// not decided here: the federation handshake decides it (invitation proof or stored bundle).
#[derive(Debug)]
pub(crate) struct SelfConsistentClientChain;

impl SelfConsistentClientChain {
    fn check(
        leaf: &CertificateDer<'_>,
        presented: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<(), String> {
        let Some((ca, intermediates)) = presented.split_last() else {
            return Err("client presented no CA certificate after its node certificate".to_owned());
        };
        let bundle = TrustBundle::new(vec![ca.clone().into_owned()])
            .map_err(|e| format!("client's CA certificate is unusable: {}", chain(&e)))?;
        verify_node_cert(&bundle, leaf, intermediates, KeyPurpose::ClientAuth, now).map_err(
            |e| match e {
                TrustError::UnknownIssuer { .. } | TrustError::BadSignature => format!(
                    "client certificate does not chain to the CA certificate it presents last ({})",
                    chain(&e)
                ),
                other => format!("client certificate: {}", chain(&other)),
            },
        )?;
        Ok(())
    }
}

impl ClientCertVerifier for SelfConsistentClientChain {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates, system_time(now))
            .map_err(|reason| Refusal(reason).into_rustls())?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &P384_ONLY)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        P384_ONLY.supported_schemes()
    }
}

/// Never reached: both configurations enable TLS 1.3 alone.
fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not accepted".to_owned())
}

fn system_time(t: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

#[cfg(test)]
mod tests {
    use meshfed_testkit::TestPki;

    use super::*;

    fn mesh(s: &str) -> MeshId {
        s.parse().unwrap()
    }

    #[test]
    fn pinned_ca_accepts_the_pinned_mesh_and_names_another() {
        let pki = TestPki::new("plant-b");
        let node = pki.node("gw1");
        let ca = pki.ca().cert_der().clone();
        let fingerprint = *pki.ca().fingerprint().as_bytes();
        let ok = ServerTrustVerifier::new(ServerTrust::PinnedCa {
            mesh: mesh("plant-b"),
            fingerprint,
        });
        ok.check(&node.cert, std::slice::from_ref(&ca), pki.now())
            .unwrap();
        let wrong = ServerTrustVerifier::new(ServerTrust::PinnedCa {
            mesh: mesh("plant-a"),
            fingerprint,
        });
        let err = wrong.check(&node.cert, &[ca], pki.now()).unwrap_err();
        assert_eq!(
            err,
            "server certificate names mesh plant-b, expected plant-a"
        );
    }

    #[test]
    fn pinned_ca_reports_a_leaf_presented_alone() {
        let pki = TestPki::new("plant-b");
        let node = pki.node("gw1");
        let verifier = ServerTrustVerifier::new(ServerTrust::PinnedCa {
            mesh: mesh("plant-b"),
            fingerprint: *pki.ca().fingerprint().as_bytes(),
        });
        let err = verifier.check(&node.cert, &[], pki.now()).unwrap_err();
        assert!(err.contains("presented: none"), "{err}");
    }

    #[test]
    fn client_chain_must_present_its_ca() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let err = SelfConsistentClientChain::check(&node.cert, &[], pki.now()).unwrap_err();
        assert_eq!(
            err,
            "client presented no CA certificate after its node certificate"
        );
        SelfConsistentClientChain::check(&node.cert, &[pki.ca().cert_der().clone()], pki.now())
            .unwrap();
    }

    #[test]
    fn both_verifiers_accept_a_leaf_of_the_issuing_ca_presented_with_it() {
        let pki = TestPki::new("plant-a");
        let node = pki.node_from_issuing_ca("gw1");
        let chain = [
            pki.issuing_ca().cert_der().clone(),
            pki.ca().cert_der().clone(),
        ];
        SelfConsistentClientChain::check(&node.cert, &chain, pki.now()).unwrap();
        let pinned = ServerTrustVerifier::new(ServerTrust::PinnedCa {
            mesh: mesh("plant-a"),
            fingerprint: *pki.ca().fingerprint().as_bytes(),
        });
        pinned.check(&node.cert, &chain, pki.now()).unwrap();
        let stored = ServerTrustVerifier::new(ServerTrust::Bundle {
            mesh: mesh("plant-a"),
            bundle: pki.bundle().clone(),
        });
        stored.check(&node.cert, &chain, pki.now()).unwrap();
        let err = SelfConsistentClientChain::check(&node.cert, &chain[1..], pki.now()).unwrap_err();
        assert!(
            err.starts_with(
                "client certificate does not chain to the CA certificate it presents last"
            ),
            "{err}"
        );
        let err = stored
            .check(&node.cert, &chain[1..], pki.now())
            .unwrap_err();
        assert!(
            err.contains("not issued by a CA in the trust bundle"),
            "{err}"
        );
    }

    #[test]
    fn client_chain_rejects_a_leaf_as_its_ca() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let err = SelfConsistentClientChain::check(
            &node.cert,
            std::slice::from_ref(&node.cert),
            pki.now(),
        )
        .unwrap_err();
        assert!(
            err.starts_with("client's CA certificate is unusable"),
            "{err}"
        );
    }
}
