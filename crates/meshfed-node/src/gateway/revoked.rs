//! The revocation lists this node holds — its own mesh's and each partner's — and the checks
//! they make: whether a certificate is revoked ([`Revocations::check`]), and the handshake's peer
//! verifier with the lists applied ([`Verifier`]). Publishing, receiving and enforcing lists is
//! `revocation.rs`; this module imports no stage, so the port and the context can hold it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use meshfed_proto::envelope::Timestamp;
use meshfed_proto::handshake::{PeerIdentity, PeerVerifier};
use meshfed_proto::revocation::{RevocationList, Revoked};
use meshfed_proto::session::RevocationsBody;
use meshfed_proto::statement::SignedStatement;
use meshfed_proto::{MeshId, NodeName};
use meshfed_store::{StoreError, StoredRevocations};
use meshfed_transport::X509PeerVerifier;
use meshfed_trust::{KeyPurpose, NodeCertInfo, inspect_node_cert};

/// The revocation lists this node holds: its own mesh's and each partner's, by mesh.
pub(crate) struct Revocations {
    lists: RwLock<HashMap<MeshId, Held>>,
    /// One change at a time (a publication, or a partner's list checked and stored): each
    /// version is made from, or checked against, the one before it.
    pub(super) changing: tokio::sync::Mutex<()>,
}

/// A stored list.
#[derive(Clone)]
pub(super) struct Held {
    pub(super) body: RevocationsBody,
    pub(super) stored: Timestamp,
}

/// A list as the API shows it.
#[derive(Debug, Clone)]
pub(crate) struct ListView {
    /// The list.
    pub(crate) list: RevocationList,
    /// When this node stored it.
    pub(crate) stored: Timestamp,
}

/// A certificate that a stored list revokes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the certificate of {mesh}/{node} (serial {serial}) is revoked by mesh {mesh}'s revocation list version {version} ({why})"
)]
pub(crate) struct RevokedCert {
    mesh: MeshId,
    node: NodeName,
    serial: String,
    version: u64,
    why: &'static str,
}

impl Revocations {
    /// The lists as stored. A stored list that no longer reads is an error: starting without it
    /// would quietly trust what it revoked.
    pub(crate) fn load(stored: Vec<StoredRevocations>) -> Result<Self, StoreError> {
        let mut lists = HashMap::new();
        for row in stored {
            let corrupt = |problem: String| StoreError::Corrupt {
                table: "revocation_lists",
                row: row.mesh.to_string(),
                column: "statement",
                problem,
            };
            let statement =
                SignedStatement::decode(&row.statement).map_err(|e| corrupt(e.to_string()))?;
            let body = RevocationsBody::new(statement).map_err(|e| corrupt(e.to_string()))?;
            if body.list().mesh != row.mesh || body.list().version != row.version {
                return Err(corrupt(format!(
                    "holds mesh {}'s version {}",
                    body.list().mesh,
                    body.list().version
                )));
            }
            lists.insert(
                row.mesh,
                Held {
                    body,
                    stored: row.stored,
                },
            );
        }
        Ok(Self {
            lists: RwLock::new(lists),
            changing: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether a stored list revokes the certificate `info` describes.
    pub(crate) fn check(&self, info: &NodeCertInfo) -> Result<(), RevokedCert> {
        let lists = self.lists.read().unwrap_or_else(|e| e.into_inner());
        let Some(held) = lists.get(&info.mesh) else {
            return Ok(());
        };
        check_in(held.body.list(), info)
    }

    /// Whether mesh `issuer`'s stored list withdraws its delegation `id`.
    pub(crate) fn delegation_revoked(&self, issuer: &MeshId, id: &str) -> bool {
        let lists = self.lists.read().unwrap_or_else(|e| e.into_inner());
        lists
            .get(issuer)
            .is_some_and(|h| h.body.list().revokes_delegation(id))
    }

    /// `mesh`'s stored list.
    pub(super) fn held(&self, mesh: &MeshId) -> Option<Held> {
        let lists = self.lists.read().unwrap_or_else(|e| e.into_inner());
        lists.get(mesh).cloned()
    }

    /// Every stored list, by mesh.
    pub(crate) fn views(&self) -> Vec<ListView> {
        let lists = self.lists.read().unwrap_or_else(|e| e.into_inner());
        let mut views: Vec<ListView> = lists
            .values()
            .map(|h| ListView {
                list: h.body.list().clone(),
                stored: h.stored,
            })
            .collect();
        views.sort_by(|a, b| a.list.mesh.cmp(&b.list.mesh));
        views
    }

    pub(super) fn install(&self, body: RevocationsBody, stored: Timestamp) {
        let mut lists = self.lists.write().unwrap_or_else(|e| e.into_inner());
        lists.insert(body.list().mesh.clone(), Held { body, stored });
    }
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lists = self.lists.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Revocations")
            .field(
                "versions",
                &lists
                    .iter()
                    .map(|(m, h)| (m.as_str(), h.body.list().version))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

pub(super) fn check_in(list: &RevocationList, info: &NodeCertInfo) -> Result<(), RevokedCert> {
    if list.mesh != info.mesh {
        return Ok(());
    }
    let why = match list.revokes(&info.node, &info.serial) {
        None => return Ok(()),
        Some(Revoked::Node) => "the node is revoked",
        Some(Revoked::Serial) => "the certificate's serial is revoked",
    };
    Err(RevokedCert {
        mesh: info.mesh.clone(),
        node: info.node.clone(),
        serial: hex::encode(&info.serial),
        version: list.version,
        why,
    })
}

/// The handshake's peer verifier with the revocation lists applied: a certificate the bundle
/// trusts is still refused when its mesh's list revokes it.
#[derive(Debug)]
pub(crate) struct Verifier {
    inner: X509PeerVerifier,
    revocations: Arc<Revocations>,
}

impl Verifier {
    /// Verifies peers for `purpose`, then against `revocations`.
    pub(crate) fn new(purpose: KeyPurpose, revocations: Arc<Revocations>) -> Self {
        Self {
            inner: X509PeerVerifier::new(purpose),
            revocations,
        }
    }
}

impl PeerVerifier for Verifier {
    fn verify(
        &self,
        bundle: &[Vec<u8>],
        leaf: &[u8],
        intermediates: &[Vec<u8>],
        now: Timestamp,
    ) -> Result<PeerIdentity, String> {
        let identity = self.inner.verify(bundle, leaf, intermediates, now)?;
        let info = inspect_node_cert(leaf).map_err(|e| format!("peer certificate: {e}"))?;
        self.revocations
            .check(&info)
            .map_err(|e| format!("peer certificate: {e}"))?;
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use meshfed_proto::crypto::SigningKey;
    use meshfed_proto::envelope::SignerCertificate;
    use meshfed_proto::statement::StatementKind;
    use meshfed_trust::{MeshCa, P384PublicKey};

    use super::*;

    fn stored_list(mesh: &str, version: u64, bytes: Vec<u8>) -> StoredRevocations {
        StoredRevocations {
            mesh: mesh.parse().unwrap(),
            version,
            statement: bytes,
            stored: Timestamp(9),
        }
    }

    #[test]
    fn certificates_of_a_revoked_node_are_refused_in_the_handshake_and_others_pass() {
        let now = SystemTime::now();
        let ca =
            MeshCa::generate(&"plant-a".parse().unwrap(), now, Duration::from_secs(3600)).unwrap();
        let cert = |name: &str| {
            let key = SigningKey::generate().unwrap();
            ca.issue_node_cert(
                &name.parse().unwrap(),
                &P384PublicKey::of(&key),
                now,
                Duration::from_secs(600),
            )
            .unwrap()
        };
        let (gw1, gw2) = (cert("gw1"), cert("gw2"));
        let list = RevocationList::empty("plant-a".parse().unwrap(), Timestamp(1))
            .revoke(&"gw2".parse().unwrap(), &[], Timestamp(2))
            .unwrap();
        let statement = meshfed_trust::sign_statement(
            StatementKind::Revocations,
            list.encode(),
            ca.key(),
            vec![ca.cert_der().to_vec()],
        )
        .unwrap();
        let revocations = Arc::new(
            Revocations::load(vec![stored_list("plant-a", 1, statement.encode())]).unwrap(),
        );
        assert!(revocations.check(gw1.info()).is_ok());
        let err = revocations.check(gw2.info()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the certificate of plant-a/gw2 (serial "),
            "{err}"
        );
        assert!(
            err.to_string().ends_with(
                "is revoked by mesh plant-a's revocation list version 1 (the node is revoked)"
            ),
            "{err}"
        );
        let verifier = Verifier::new(KeyPurpose::ClientAuth, revocations.clone());
        let bundle = vec![ca.cert_der().to_vec()];
        let at = Timestamp(
            u64::try_from(
                now.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap(),
        );
        assert!(verifier.verify(&bundle, gw1.der(), &[], at).is_ok());
        let refused = verifier.verify(&bundle, gw2.der(), &[], at).unwrap_err();
        assert!(refused.contains("is revoked"), "{refused}");
        let views = revocations.views();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].list, list);
    }

    #[test]
    fn envelopes_of_a_signer_revoked_while_the_link_is_up_are_refused_once_the_cache_is_cleared() {
        use meshfed_proto::admission::Refusal;

        use crate::gateway::port::PeerTrust;

        let now = SystemTime::now();
        let ca =
            MeshCa::generate(&"plant-a".parse().unwrap(), now, Duration::from_secs(3600)).unwrap();
        let key = SigningKey::generate().unwrap();
        let gw2 = ca
            .issue_node_cert(
                &"gw2".parse().unwrap(),
                &P384PublicKey::of(&key),
                now,
                Duration::from_secs(600),
            )
            .unwrap();
        let revocations = Arc::new(Revocations::load(Vec::new()).unwrap());
        let trust = PeerTrust::new(
            ca.trust_bundle().clone(),
            Vec::new(),
            Vec::new(),
            revocations.clone(),
        );
        // Envelopes name the certificate by digest: unknown until the peer announces it.
        let named = SignerCertificate::by_digest(meshfed_proto::crypto::sha384(gw2.der()));
        match trust.signer_key(&named, now) {
            Err(Refusal::UntrustedSigner(why)) => {
                assert!(why.contains("was not announced on this link"), "{why}");
            }
            other => panic!("an unannounced signer was not refused: {other:?}"),
        }
        trust.announce(gw2.der());
        assert!(trust.signer_key(&named, now).is_ok());
        let list = RevocationList::empty("plant-a".parse().unwrap(), Timestamp(1))
            .revoke(
                &"gw1".parse().unwrap(),
                &[gw2.info().serial.clone()],
                Timestamp(2),
            )
            .unwrap();
        let statement = meshfed_trust::sign_statement(
            StatementKind::Revocations,
            list.encode(),
            ca.key(),
            vec![ca.cert_der().to_vec()],
        )
        .unwrap();
        revocations.install(RevocationsBody::new(statement).unwrap(), Timestamp(3));
        // What the receiver does on storing a list: every link forgets its verified signers.
        trust.forget_signers();
        match trust.signer_key(&named, now) {
            Err(Refusal::RevokedSigner(why)) => {
                assert!(why.contains("the certificate's serial is revoked"), "{why}")
            }
            other => panic!("expected a revoked signer, got {other:?}"),
        }
    }

    #[test]
    fn a_stored_list_that_does_not_read_stops_the_start() {
        let err = Revocations::load(vec![stored_list("plant-a", 1, vec![0xff])]).unwrap_err();
        assert!(err.to_string().contains("revocation_lists"), "{err}");
    }
}
