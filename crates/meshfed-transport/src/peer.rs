//! The protocol core's [`PeerVerifier`], implemented with X.509 (meshfed-trust).

use std::time::{Duration, UNIX_EPOCH};

use meshfed_proto::envelope::Timestamp;
use meshfed_proto::handshake::{PeerIdentity, PeerVerifier};
use meshfed_trust::{KeyPurpose, TrustBundle, verify_node_cert};
use rustls_pki_types::CertificateDer;

use crate::error::chain;

/// Verifies a peer's node certificate against a trust bundle for the federation handshake:
/// the leaf must be issued by a CA of the bundle (directly, or through the mesh's issuing CA
/// among the certificates the peer presented after it), valid at the given time, carry the extended key
/// usage of its TLS role, and name a node of the bundle's mesh.
///
/// Construct it with the purpose the peer's certificate served: [`KeyPurpose::ClientAuth`] when
/// the peer dialled us, [`KeyPurpose::ServerAuth`] when we dialled it.
#[derive(Debug, Clone, Copy)]
pub struct X509PeerVerifier {
    purpose: KeyPurpose,
}

impl X509PeerVerifier {
    /// A verifier for peers whose certificate served `purpose`.
    pub fn new(purpose: KeyPurpose) -> Self {
        Self { purpose }
    }

    /// The purpose the peer's certificate must carry.
    pub fn purpose(&self) -> KeyPurpose {
        self.purpose
    }
}

impl PeerVerifier for X509PeerVerifier {
    fn verify(
        &self,
        bundle: &[Vec<u8>],
        leaf: &[u8],
        intermediates: &[Vec<u8>],
        now: Timestamp,
    ) -> Result<PeerIdentity, String> {
        let cas = bundle
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect();
        let bundle =
            TrustBundle::new(cas).map_err(|e| format!("peer trust bundle: {}", chain(&e)))?;
        let now = UNIX_EPOCH
            .checked_add(Duration::from_millis(now.0))
            .ok_or_else(|| format!("time {} ms is out of range", now.0))?;
        let intermediates: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|der| CertificateDer::from(der.as_slice()))
            .collect();
        let info = verify_node_cert(
            &bundle,
            &CertificateDer::from(leaf),
            &intermediates,
            self.purpose,
            now,
        )
        .map_err(|e| format!("peer certificate: {}", chain(&e)))?;
        let key = info
            .public_key
            .verifying_key()
            .map_err(|e| format!("peer certificate key: {}", chain(&e)))?;
        Ok(PeerIdentity {
            mesh: info.mesh,
            node: info.node,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use meshfed_testkit::TestPki;
    use meshfed_trust::P384PublicKey;

    use super::*;

    fn ms(t: SystemTime) -> Timestamp {
        Timestamp(t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64)
    }

    fn bundle(pki: &TestPki) -> Vec<Vec<u8>> {
        vec![pki.ca().cert_der().to_vec()]
    }

    #[test]
    fn verifier_returns_the_identity_and_key_of_a_valid_peer() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let peer = X509PeerVerifier::new(KeyPurpose::ClientAuth)
            .verify(&bundle(&pki), &node.cert, &[], ms(pki.now()))
            .unwrap();
        assert_eq!(peer.mesh.as_str(), "plant-a");
        assert_eq!(peer.node.as_str(), "gw1");
        let sig = node.key.sign(b"agreement").unwrap();
        peer.key.verify(b"agreement", &sig).unwrap();
        assert_eq!(
            P384PublicKey::of(&node.key).as_bytes(),
            node.key.public_key()
        );
    }

    #[test]
    fn verifier_accepts_a_peer_of_the_issuing_ca_with_it_presented() {
        let pki = TestPki::new("plant-a");
        let node = pki.node_from_issuing_ca("gw2");
        let verifier = X509PeerVerifier::new(KeyPurpose::ClientAuth);
        let presented = [
            pki.issuing_ca().cert_der().to_vec(),
            pki.ca().cert_der().to_vec(),
        ];
        let peer = verifier
            .verify(&bundle(&pki), &node.cert, &presented, ms(pki.now()))
            .unwrap();
        assert_eq!(peer.node.as_str(), "gw2");
        let err = verifier
            .verify(&bundle(&pki), &node.cert, &presented[1..], ms(pki.now()))
            .unwrap_err();
        assert!(
            err.contains("not issued by a CA in the trust bundle"),
            "{err}"
        );
    }

    #[test]
    fn verifier_refuses_an_expired_peer() {
        let pki = TestPki::new("plant-a");
        let err = X509PeerVerifier::new(KeyPurpose::ServerAuth)
            .verify(
                &bundle(&pki),
                &pki.expired_node("gw1").cert,
                &[],
                ms(pki.now()),
            )
            .unwrap_err();
        assert!(
            err.starts_with("peer certificate: certificate expired at"),
            "{err}"
        );
    }

    #[test]
    fn verifier_refuses_a_peer_of_another_bundle() {
        let ours = TestPki::new("plant-a");
        let theirs = TestPki::new("plant-b");
        let err = X509PeerVerifier::new(KeyPurpose::ClientAuth)
            .verify(
                &bundle(&ours),
                &theirs.node("gw1").cert,
                &[],
                ms(ours.now()),
            )
            .unwrap_err();
        assert_eq!(
            err,
            "peer certificate: certificate was not issued by a CA in the trust bundle of mesh plant-a"
        );
    }

    #[test]
    fn verifier_refuses_a_wrongly_named_or_wrongly_signed_peer() {
        let pki = TestPki::new("plant-a");
        let verifier = X509PeerVerifier::new(KeyPurpose::ClientAuth);
        let named = pki.node_of_other_mesh("plant-b", "gw1");
        let err = verifier
            .verify(&bundle(&pki), &named.cert, &[], ms(pki.now()))
            .unwrap_err();
        assert_eq!(
            err,
            "peer certificate: certificate names mesh plant-b but was issued by the CA of mesh plant-a"
        );
        let signed = pki.node_signed_by_impostor("gw1");
        let err = verifier
            .verify(&bundle(&pki), &signed.cert, &[], ms(pki.now()))
            .unwrap_err();
        assert!(err.contains("signature does not verify"), "{err}");
    }

    #[test]
    fn verifier_refuses_an_empty_bundle_and_garbage() {
        let verifier = X509PeerVerifier::new(KeyPurpose::ClientAuth);
        let err = verifier.verify(&[], b"x", &[], Timestamp(0)).unwrap_err();
        assert_eq!(
            err,
            "peer trust bundle: trust bundle holds no CA certificate"
        );
        let pki = TestPki::new("plant-a");
        let err = verifier
            .verify(&bundle(&pki), b"garbage", &[], ms(pki.now()))
            .unwrap_err();
        assert!(err.starts_with("peer certificate:"), "{err}");
    }
}
