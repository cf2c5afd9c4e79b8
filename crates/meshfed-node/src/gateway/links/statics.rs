//! Static peers: `[[peers]]` in meshfed.toml federate without an invitation (DESIGN.md §3.2,
//! discovery by static configuration). The peer's address and its CA's SHA-384 fingerprint
//! stand in for a token: this node dials it pinning that CA, and accepts its dial when the
//! fingerprint is in the bundle it presents.
//!
//! When both sides dial, the link the mesh with the smaller id dials is the one kept: the other
//! side's dial is refused (this node leaves a peer it dials itself out of what it accepts when
//! its own id is the smaller), so the two never store two federations. Once a federation with
//! the peer exists, by either dial or by invitation, it is kept connected like any stored
//! federation (by its initiator), and the static entry does nothing more.

use std::sync::Arc;

use meshfed_proto::handshake::{PinnedPeer, Target};
use meshfed_transport::ServerTrust;

use super::{LinkError, Links, backoff, initiate, maintain};
use crate::config::StaticPeer;

/// The peers this node accepts a dial from without an invitation.
pub(crate) fn accepted(links: &Links) -> Vec<PinnedPeer> {
    let own = &links.ctx.id.mesh;
    links
        .ctx
        .config
        .peers
        .iter()
        // Both may dial: then only the smaller id's dial is taken.
        .filter(|p| !(p.dial && own.as_str() < p.mesh.as_str()))
        .map(pinned)
        .collect()
}

fn pinned(p: &StaticPeer) -> PinnedPeer {
    PinnedPeer {
        mesh: p.mesh.clone(),
        ca_fingerprint: *p.ca_fingerprint.as_bytes(),
    }
}

/// Starts dialling every static peer this node dials.
pub(crate) fn start(links: &Arc<Links>) {
    for peer in links.ctx.config.peers.iter().filter(|p| p.dial) {
        links
            .ctx
            .tracker
            .spawn(keep_dialling(links.clone(), peer.clone()));
    }
}

/// Dials `peer` with backoff until a federation with its mesh exists, then hands it to
/// [`maintain`] if this dial made it.
async fn keep_dialling(links: Arc<Links>, peer: StaticPeer) {
    let mut attempt: u32 = 0;
    loop {
        if links.ctx.cancel.is_cancelled() {
            return;
        }
        let mesh = peer.mesh.clone();
        match links
            .ctx
            .blocking(move |s| s.live_federation_with(&mesh))
            .await
        {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(peer = %peer.mesh, error = %e, "cannot look up the federation with a static peer")
            }
        }
        match federate(&links, &peer).await {
            Ok(()) => return,
            Err(e) => {
                let delay = backoff(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(peer = %peer.mesh, attempt, retry_in = ?delay, error = %e, "federating with a static peer failed");
                tokio::select! {
                    () = links.ctx.cancel.cancelled() => return,
                    () = links.ctx.clock.sleep(delay) => {}
                }
            }
        }
    }
}

/// One dial of `peer`: the handshake with its pinned CA, the federation stored, its link up.
async fn federate(links: &Arc<Links>, peer: &StaticPeer) -> Result<(), LinkError> {
    let Some(address) = &peer.address else {
        return Ok(());
    };
    let trust = ServerTrust::PinnedCa {
        mesh: peer.mesh.clone(),
        fingerprint: *peer.ca_fingerprint.as_bytes(),
    };
    let timeout = links.ctx.config.federation.handshake_timeout;
    let link = meshfed_transport::dial(address, &links.ctx.id.tls, trust, timeout).await?;
    let target = Target::Pinned(pinned(peer));
    let (record, session) = initiate(links, link, target, vec![address.clone()]).await?;
    tracing::info!(federation = %record.id, peer = %peer.mesh, "federated with a static peer");
    links
        .ctx
        .tracker
        .spawn(maintain(links.clone(), record.id, Some(session)));
    Ok(())
}
