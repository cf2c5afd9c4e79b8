//! What every stage of a running gateway may use: its identity and configuration, the store and
//! the journal, the clock, the metrics, and the way to stop. Nothing here changes while the
//! gateway runs but the node certificate (renewed in place, see `identity.rs`); the state that
//! does (links, streams, subscribers) belongs to its stage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use meshfed_proto::agreement::Agreement;
use meshfed_proto::capability::Capabilities;
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::handshake::{LocalIdentity, Role};
use meshfed_proto::policy::{Evaluation, PolicyOffer};
use meshfed_store::{Journal, Store};
use meshfed_trust::KeyPurpose;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::identity::Identity;
use super::revoked::{Revocations, Verifier};
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::policy::Policy;

/// The services a gateway's stages share.
pub(crate) struct Context {
    /// The node directory.
    pub(crate) dir: PathBuf,
    pub(crate) config: NodeConfig,
    pub(crate) id: Arc<Identity>,
    /// The registry (federations, invitations).
    pub(crate) store: Arc<Store>,
    /// Durable message storage (group commit) on the store's file.
    pub(crate) journal: Arc<Journal>,
    pub(crate) clock: Clock,
    pub(crate) metrics: Metrics,
    /// The audit trail: what the stages record of every federation event.
    pub(crate) audit: crate::audit::Audit,
    /// The revocation lists this node holds (its mesh's and its partners').
    pub(crate) revocations: Arc<Revocations>,
    /// The delegations issued by this mesh and to it.
    pub(crate) delegations: super::delegated::Delegations,
    /// Credential translation: partners' senders as tokens of this mesh.
    pub(crate) translator: Arc<crate::credentials::translate::Translator>,
    /// This mesh's policy (`policy.toml`): what it offers partners. Replaced whole by
    /// `PUT /v1/policy`; agreements in force change only by renegotiation.
    pub(crate) policy: RwLock<Arc<Policy>>,
    /// Where federation links are accepted.
    pub(crate) federation_addr: SocketAddr,
    /// The guard's way in from the data path: what it saw of partners' traffic, and each
    /// partner's breaker (see `guard.rs`).
    pub(crate) guard: super::guarded::Guard,
    /// What changed in federations, links and breakers, for `GET /v1/events`.
    pub(crate) changes: super::events::Changes,
    /// Cancelled when the gateway stops.
    pub(crate) cancel: CancellationToken,
    /// Every task of the gateway, awaited when it stops.
    pub(crate) tracker: TaskTracker,
}

impl Context {
    /// The current time as a protocol timestamp.
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// This mesh's policy in force.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        // A poisoned lock held a whole `Arc`: what it holds is still consistent.
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `policy` in force for the handshakes and renegotiations to come.
    pub(crate) fn set_policy(&self, policy: Policy) {
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
    }

    /// What this node offers in a handshake or a renegotiation: its configuration's frame size
    /// and its policy file.
    pub(crate) fn offer(&self) -> Offer {
        let policy = self.policy();
        Offer {
            capabilities: Capabilities {
                max_frame: meshfed_proto::capability::frame_size::Offer(
                    self.config.federation.max_frame_size,
                ),
                services: policy.services.clone(),
                compliance: policy.compliance.clone(),
                ..Default::default()
            },
            policy: policy.offer.clone(),
        }
    }

    /// What invitations and descriptors give peers to dial: the advertised addresses, else
    /// the one listened on.
    pub(crate) fn advertised(&self) -> Vec<String> {
        if self.config.federation.advertise.is_empty() {
            vec![self.federation_addr.to_string()]
        } else {
            self.config.federation.advertise.clone()
        }
    }

    /// The handshake's view of this node; the verifier checks peers for `purpose`, and refuses
    /// certificates the revocation lists revoke.
    pub(crate) fn local(&self, purpose: KeyPurpose) -> LocalIdentity {
        let offer = self.offer();
        LocalIdentity {
            mesh: self.id.mesh.clone(),
            node: self.id.node.clone(),
            bundle: (self.id.trust().bundle.cas().iter())
                .map(|c| c.der().to_vec())
                .collect(),
            key: self.id.cert().key.clone(),
            capabilities: offer.capabilities,
            policy: offer.policy,
            verifier: Arc::new(Verifier::new(purpose, self.revocations.clone())),
            step_timeout: self.config.federation.handshake_timeout,
            agreement_validity: Duration::from_secs(365 * 24 * 3600),
        }
    }

    /// Runs blocking store work off the async threads.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> T {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(v) => v,
            // A panic in store code is a bug; surface it where it happened.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// This node's offer: its capabilities and its policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Offer {
    pub(crate) capabilities: Capabilities,
    pub(crate) policy: PolicyOffer,
}

impl Offer {
    /// The offer's CBOR form, as the registry keeps it to notice a change.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        // Invariant: encoding plain structs into a Vec cannot fail.
        ciborium::into_writer(self, &mut out)
            .unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
        out
    }

    /// Whether `agreement`, in which this node plays `role`, is what this offer alone allows:
    /// every capability within it, the same maximum frame, and policy terms it accepts as they
    /// stand.
    pub(crate) fn allows(&self, agreement: &Agreement, role: Role) -> bool {
        // The capability checks read the checking side as the initiator.
        let mut accepted = agreement.capabilities.clone();
        if role == Role::Responder {
            let s = &mut accepted.services;
            std::mem::swap(&mut s.to_initiator, &mut s.to_responder);
        }
        self.capabilities.check_accepted(&accepted).is_ok()
            && accepted.max_frame.0 == self.capabilities.max_frame.0
            && matches!(
                self.policy.evaluate(&agreement.policy),
                Ok(Evaluation::Accept)
            )
    }
}
