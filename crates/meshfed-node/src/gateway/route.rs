//! Route: where a message bound for another mesh goes — today the stream of the federation with
//! its destination mesh, one per peer. A relay through a broker is one more kind of route here.
//!
//! The stage owns the streams: it starts them (with what the journal kept for each peer), hands
//! each its link sessions as they come and go, and the federation's state as it changes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use meshfed_proto::frame::Frame;
use meshfed_proto::{FederationState, MeshId};
use meshfed_store::FederationRecord;
use meshfed_store::journal::StoredOutbound;

use super::context::Context;
use super::port::LinkPort;
use super::stream::{self, Stream};

/// The streams of this node, by peer mesh.
pub(crate) struct Routes {
    ctx: Arc<Context>,
    streams: Mutex<HashMap<MeshId, Arc<Stream>>>,
}

impl Routes {
    /// No streams yet; [`Routes::start`] starts those of the stored federations.
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// Starts one stream per live federation, each with its stored backlog.
    ///
    /// A federation that ended while messages to its peer were still stored (the gateway
    /// stopped between storing the termination and recording the dead letters) gets a stream
    /// too, if no live federation with the same peer takes those messages: it dead-letters them
    /// at once, as the termination would have.
    pub(crate) async fn start(&self) {
        let records = match self.ctx.blocking(|s| s.federations()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot list stored federations");
                return;
            }
        };
        let mut peers: HashSet<MeshId> = records
            .iter()
            .filter(|r| r.state.is_live())
            .map(|r| r.peer_mesh.clone())
            .collect();
        for record in records {
            let live = record.state.is_live();
            if !live && !peers.insert(record.peer_mesh.clone()) {
                continue;
            }
            let journal = self.ctx.journal.clone();
            let peer = record.peer_mesh.clone();
            let restored =
                tokio::task::spawn_blocking(move || journal.pending_outbound(&peer)).await;
            let restored = match restored {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::error!(peer = %record.peer_mesh, error = %e, "cannot read the stored backlog");
                    Vec::new()
                }
                Err(e) => {
                    tracing::error!(peer = %record.peer_mesh, error = %e, "reading the stored backlog failed");
                    Vec::new()
                }
            };
            if live || !restored.is_empty() {
                self.ensure(&record, restored);
            }
        }
    }

    /// The stream to `record`'s peer, started if need be.
    fn ensure(
        &self,
        record: &FederationRecord,
        restored: Vec<StoredOutbound>,
    ) -> Option<Arc<Stream>> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = streams.get(&record.peer_mesh)
            && s.federation_id == record.id
        {
            return Some(s.clone());
        }
        let stream = stream::start(&self.ctx, record, restored)?;
        streams.insert(record.peer_mesh.clone(), stream.clone());
        Some(stream)
    }

    /// The stream to mesh `peer`, if federated.
    pub(crate) fn to(&self, peer: &MeshId) -> Option<Arc<Stream>> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.get(peer).cloned()
    }

    /// Every stream.
    pub(crate) fn all(&self) -> Vec<Arc<Stream>> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.values().cloned().collect()
    }

    /// A link session of `record` is up: its stream sends on it.
    pub(crate) fn link_up(&self, link: &Arc<LinkPort>, record: &FederationRecord) {
        if let Some(stream) = self.ensure(record, Vec::new()) {
            stream.set_state(record.state);
            stream.link_up(link.clone());
        }
    }

    /// A link session ended.
    pub(crate) fn link_down(&self, link: &Arc<LinkPort>) {
        if let Some(stream) = self.to(link.mesh()) {
            stream.link_down(link.clone());
        }
    }

    /// The federation with `peer` changed state.
    pub(crate) fn state_changed(&self, peer: &MeshId, state: FederationState) {
        if let Some(stream) = self.to(peer) {
            stream.set_state(state);
        }
    }

    /// The federation with `peer` renegotiated: sends are admitted under `terms` from now on.
    pub(crate) fn terms_changed(&self, peer: &MeshId, terms: meshfed_proto::admission::Terms) {
        if let Some(stream) = self.to(peer) {
            stream.set_terms(terms);
        }
    }

    /// An acknowledgement or credit frame from the peer of `link`.
    pub(crate) fn peer_frame(&self, link: &LinkPort, frame: &Frame) {
        let outcome = self
            .to(link.mesh())
            .ok_or_else(|| "no stream to this peer".to_owned())
            .and_then(|s| s.peer_frame(frame));
        if let Err(e) = outcome {
            tracing::warn!(peer = %link.peer, frame = ?frame.ty, error = %e, "ignored a stream frame");
        }
    }
}
