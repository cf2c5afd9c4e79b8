//! The interest exchange on each link session (see `gateway::interest` for what it is for):
//! this side announces what its live subscribers want from the peer and the peer acknowledges
//! it; the peer's announcements are applied and acknowledged.

use std::sync::Arc;

use meshfed_proto::admission::{Direction, Refusal};
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::interest::{Interest, InterestAck};

use super::Links;
use crate::gateway::port::LinkPort;

/// Announces this node's interest for the peer of `port` when the session starts and each time
/// the live subscribers change, until the session ends. Each announcement reads the list as it
/// is then, so a burst of changes becomes one frame; one that changes nothing for this peer
/// sends nothing.
pub(super) async fn announce(links: Arc<Links>, port: Arc<LinkPort>) {
    let live = &links.local.live;
    let mut changes = live.changes();
    loop {
        // The generation first, then the list: the list read holds every subscription up to it.
        let generation = *changes.borrow_and_update();
        let patterns = live.patterns_from(port.mesh());
        if let Some(interest) = port.interest.announce(generation, patterns) {
            tracing::debug!(federation = %port.federation_id, peer = %port.peer, version = interest.version, patterns = interest.patterns().len(), "announcing this node's interest");
            let frame = Frame::new(FrameType::Interest, interest.encode());
            if port.send(frame).await.is_err() {
                return;
            }
        }
        tokio::select! {
            () = port.closed() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// The peer's `Interest` frame: applied to what is sent to it, and acknowledged.
pub(super) async fn receive(links: &Links, port: &LinkPort, body: &[u8]) {
    match Interest::decode(body) {
        Ok(interest) => {
            tracing::debug!(federation = %port.federation_id, peer = %port.peer, version = interest.version, patterns = ?interest.patterns(), "the peer announced its interest");
            let ack = port.interest.apply(interest);
            let _ = port
                .send(Frame::new(FrameType::InterestAck, ack.encode()))
                .await;
        }
        Err(e) => refused(links, port, &e),
    }
}

/// The peer's `InterestAck` frame.
pub(super) fn acknowledged(links: &Links, port: &LinkPort, body: &[u8]) {
    match InterestAck::decode(body) {
        Ok(ack) => port.interest.acknowledged(ack.version),
        Err(e) => refused(links, port, &e),
    }
}

/// A malformed interest frame is counted and ignored: the interest in force stays.
fn refused(links: &Links, port: &LinkPort, e: &meshfed_proto::interest::InterestError) {
    links
        .ctx
        .metrics
        .refused(Direction::Inbound, &Refusal::Malformed(e.to_string()));
    tracing::warn!(federation = %port.federation_id, peer = %port.peer, error = %e, "ignored a malformed interest frame");
}

/// Completes once every connected partner acknowledged an interest holding the subscriptions
/// registered up to `generation`, or after the heartbeat interval (then logged): a partner
/// that does not answer must not keep a subscriber waiting.
pub(crate) async fn covered(links: &Links, generation: u64) {
    let ports = links.ports();
    let all = async {
        for port in &ports {
            tokio::select! {
                () = port.closed() => {}
                () = port.interest.covered(generation) => {}
            }
        }
    };
    let ctx = &links.ctx;
    let wait = ctx.config.federation.heartbeat_interval;
    tokio::select! {
        () = all => {}
        () = ctx.clock.sleep(wait) => {
            let waiting: Vec<String> = ports
                .iter()
                .filter(|p| !p.is_closed() && !p.interest.is_covered(generation))
                .map(|p| p.mesh().to_string())
                .collect();
            tracing::warn!(?waiting, "confirming a subscription before every partner acknowledged the interest that holds it; qos 0 messages they publish meanwhile may not be forwarded");
        }
    }
}
