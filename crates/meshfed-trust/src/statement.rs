//! Signing a mesh's statements (a new trust bundle, a revocation list) and checking a partner's
//! against the bundle stored for it. The wire form is the protocol core's
//! [`SignedStatement`]; this module decides who signed it and whether that signer is trusted.
//!
//! A statement is signed either by a CA of the mesh's bundle itself (the root key, where it
//! is: a CA rollover needs it) or by one of the mesh's nodes, with its node certificate and the
//! issuing CA behind it (a gateway publishing its mesh's revocations).

use std::time::SystemTime;

use meshfed_proto::crypto::{SIGNATURE_LEN, Signature, SigningKey};
use meshfed_proto::statement::{SignedStatement, StatementKind, signed_message};
use rustls_pki_types::CertificateDer;
use serde_bytes::ByteBuf;

use crate::bundle::{Fingerprint, KeyPurpose, TrustBundle, TrustError, verify_node_cert};
use crate::cert::NodeCertInfo;

/// Who signed a statement that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// A CA of the bundle, by fingerprint.
    Ca(Fingerprint),
    /// A node of the mesh, with what its certificate says.
    Node(NodeCertInfo),
}

/// A statement that is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum StatementTrustError {
    /// The signer certificate is neither a CA of the bundle nor a node certificate it trusts.
    #[error("the statement's signer is not trusted by mesh {mesh}'s bundle: {source}")]
    UntrustedSigner {
        /// The bundle's mesh.
        mesh: meshfed_proto::MeshId,
        /// Why the signer certificate failed as a node certificate.
        #[source]
        source: TrustError,
    },
    /// The signer is a CA of the bundle whose validity has ended.
    #[error("the statement is signed by CA {fingerprint}, whose validity has ended")]
    CaExpired {
        /// The CA's fingerprint.
        fingerprint: Fingerprint,
    },
    /// The signature does not verify with the signer's key.
    #[error("the statement's signature does not verify with its signer's key")]
    BadSignature,
    /// The signer's public key is not usable.
    #[error("the statement's signer key: {0}")]
    Key(String),
}

/// Signs `body` as a statement of `kind` with `key`, whose certificate chain (signer first,
/// DER) goes with it.
pub fn sign_statement(
    kind: StatementKind,
    body: Vec<u8>,
    key: &SigningKey,
    chain: Vec<Vec<u8>>,
) -> Result<SignedStatement, meshfed_proto::crypto::CryptoError> {
    let signature = key.sign(&signed_message(kind, &body))?;
    Ok(SignedStatement {
        kind,
        body: ByteBuf::from(body),
        chain: chain.into_iter().map(ByteBuf::from).collect(),
        signature: ByteBuf::from(signature.0.to_vec()),
    })
}

/// Checks that `statement` was signed by a CA of `bundle` (valid at `now`) or by a node
/// certificate that `bundle` trusts at `now` (through the issuing CA in the chain), and that the
/// signature verifies. Says who signed.
pub fn verify_statement(
    bundle: &TrustBundle,
    statement: &SignedStatement,
    now: SystemTime,
) -> Result<Signer, StatementTrustError> {
    let Some(first) = statement.chain.first() else {
        return Err(StatementTrustError::BadSignature);
    };
    let fingerprint = Fingerprint::of(first);
    let (signer, key) = match bundle.cas().iter().find(|c| c.fingerprint() == fingerprint) {
        Some(ca) => {
            if now > ca.info().not_after || now < ca.info().not_before {
                return Err(StatementTrustError::CaExpired { fingerprint });
            }
            (Signer::Ca(fingerprint), ca.info().public_key.clone())
        }
        None => {
            let intermediates: Vec<CertificateDer<'_>> = statement.chain[1..]
                .iter()
                .map(|c| CertificateDer::from(&c[..]))
                .collect();
            let info = verify_node_cert(
                bundle,
                &CertificateDer::from(&first[..]),
                &intermediates,
                KeyPurpose::ClientAuth,
                now,
            )
            .map_err(|source| StatementTrustError::UntrustedSigner {
                mesh: bundle.mesh().clone(),
                source,
            })?;
            let key = info.public_key.clone();
            (Signer::Node(info), key)
        }
    };
    let key = key
        .verifying_key()
        .map_err(|e| StatementTrustError::Key(e.to_string()))?;
    let signature: [u8; SIGNATURE_LEN] = statement.signature[..]
        .try_into()
        .map_err(|_| StatementTrustError::BadSignature)?;
    key.verify(
        &signed_message(statement.kind, &statement.body),
        &Signature(signature),
    )
    .map_err(|_| StatementTrustError::BadSignature)?;
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use meshfed_proto::{MeshId, NodeName};

    use super::*;
    use crate::ca::MeshCa;
    use crate::key::P384PublicKey;

    fn mesh(name: &str) -> MeshId {
        MeshId::from_str(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ca(name: &str, now: SystemTime) -> MeshCa {
        MeshCa::generate(&mesh(name), now, Duration::from_secs(3600))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_statement_signed_by_a_bundle_ca_verifies_and_names_that_ca() {
        let now = SystemTime::now();
        let root = ca("plant-a", now);
        let s = sign_statement(
            StatementKind::TrustBundle,
            b"bundle".to_vec(),
            root.key(),
            vec![root.cert_der().to_vec()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let signer =
            verify_statement(root.trust_bundle(), &s, now).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(signer, Signer::Ca(root.fingerprint()));
    }

    #[test]
    fn a_statement_signed_by_a_node_of_the_mesh_verifies_through_the_issuing_ca() {
        let now = SystemTime::now();
        let root = ca("plant-a", now);
        let issuing = root
            .issue_issuing_ca(now, Duration::from_secs(3000))
            .unwrap_or_else(|e| panic!("{e}"));
        let node_key = SigningKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let node = NodeName::from_str("gw1").unwrap_or_else(|e| panic!("{e}"));
        let cert = issuing
            .issue_node_cert(
                &node,
                &P384PublicKey::of(&node_key),
                now,
                Duration::from_secs(600),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let s = sign_statement(
            StatementKind::Revocations,
            b"list".to_vec(),
            &node_key,
            vec![cert.der().to_vec(), issuing.cert_der().to_vec()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        match verify_statement(root.trust_bundle(), &s, now) {
            Ok(Signer::Node(info)) => assert_eq!(info.node, node),
            other => panic!("expected a node signer, got {other:?}"),
        }
    }

    #[test]
    fn another_mesh_a_changed_body_or_kind_and_an_expired_ca_are_refused() {
        let now = SystemTime::now();
        let root = ca("plant-a", now);
        let other = ca("plant-b", now);
        let s = sign_statement(
            StatementKind::TrustBundle,
            b"bundle".to_vec(),
            root.key(),
            vec![root.cert_der().to_vec()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            verify_statement(other.trust_bundle(), &s, now),
            Err(StatementTrustError::UntrustedSigner { .. })
        ));
        let mut changed = s.clone();
        changed.body = ByteBuf::from(b"bundlf".to_vec());
        assert!(matches!(
            verify_statement(root.trust_bundle(), &changed, now),
            Err(StatementTrustError::BadSignature)
        ));
        let mut kind = s.clone();
        kind.kind = StatementKind::Revocations;
        assert!(matches!(
            verify_statement(root.trust_bundle(), &kind, now),
            Err(StatementTrustError::BadSignature)
        ));
        let later = now + Duration::from_secs(7200);
        assert!(matches!(
            verify_statement(root.trust_bundle(), &s, later),
            Err(StatementTrustError::CaExpired { .. })
        ));
    }
}
