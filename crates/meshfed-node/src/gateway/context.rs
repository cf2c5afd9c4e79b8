//! What every stage of a running gateway may use: its identity and configuration, the store and
//! the journal, the clock, the metrics, and the way to stop. Nothing here changes while the
//! gateway runs but the node certificate (renewed in place, see `identity.rs`); the state that
//! does (links, streams, subscribers) belongs to its stage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshfed_proto::envelope::Timestamp;
use meshfed_proto::handshake::LocalIdentity;
use meshfed_store::{Journal, Store};
use meshfed_trust::KeyPurpose;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::identity::Identity;
use super::revoked::{Revocations, Verifier};
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::metrics::Metrics;

/// The services a gateway's stages share.
pub(crate) struct Context {
    /// The node directory.
    pub(crate) dir: PathBuf,
    pub(crate) config: NodeConfig,
    pub(crate) id: Identity,
    /// The registry (federations, invitations).
    pub(crate) store: Arc<Store>,
    /// Durable message storage (group commit) on the store's file.
    pub(crate) journal: Arc<Journal>,
    pub(crate) clock: Clock,
    pub(crate) metrics: Metrics,
    /// The revocation lists this node holds (its mesh's and its partners').
    pub(crate) revocations: Arc<Revocations>,
    /// Where federation links are accepted.
    pub(crate) federation_addr: SocketAddr,
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

    /// The handshake's view of this node; the verifier checks peers for `purpose`, and refuses
    /// certificates the revocation lists revoke.
    pub(crate) fn local(&self, purpose: KeyPurpose) -> LocalIdentity {
        LocalIdentity {
            mesh: self.id.mesh.clone(),
            node: self.id.node.clone(),
            bundle: (self.id.trust().bundle.cas().iter())
                .map(|c| c.der().to_vec())
                .collect(),
            key: self.id.cert().key.clone(),
            capabilities: meshfed_proto::capability::Capabilities {
                max_frame: meshfed_proto::capability::frame_size::Offer(
                    self.config.federation.max_frame_size,
                ),
                ..Default::default()
            },
            policy: meshfed_proto::policy::PolicyOffer::default(),
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
