//! Interest (DESIGN §3.6): a qos 0 message is sent to a partner only if the partner has a
//! subscriber for its topic. Each link session keeps both sides of it ([`LinkInterest`], on
//! the session's `LinkPort`):
//!
//! - **Destination side.** This node's interest for the partner is the topic pattern of every
//!   live subscriber that may receive from it (its `from` filter names no other mesh).
//!   `links/interest.rs` sends it on each session when it comes up and whenever it changes
//!   (an `Interest` frame, the whole set, its version one more each time; a burst of changes
//!   becomes one frame, as the announcer reads the set when it gets to it), and notes what the
//!   partner acknowledged. Durable subscriptions keep only qos ≥ 1 messages, which always go
//!   (below); a connected durable subscriber's qos 0 messages reach it through a live
//!   subscription, which counts like any other. A new subscription is confirmed to its client
//!   only once every connected partner acknowledged an interest that includes it
//!   ([`LinkInterest::covered`], bounded by the heartbeat interval), so a message published
//!   at the partner after the subscribe returned is forwarded.
//! - **Origin side.** The partner's last interest, unknown until its first `Interest` on this
//!   session arrives: unknown means everything is sent. The submit stage does not send a qos 0
//!   message whose topic it does not want — nothing is queued, journaled or sent; it is counted
//!   (`meshfed_envelopes_unwanted_total`, `unwanted` in `federation show`) and its publisher
//!   still hears "accepted", as publishing to a topic nobody subscribes to does in MQTT or
//!   NATS.
//!
//! **qos ≥ 1 messages are always sent**, whatever the interest: they are journaled and
//! acknowledged to their publisher, and the interest the origin holds may be stale (a
//! subscriber may have arrived at the partner while its new interest is on its way, or come
//! back with a durable subscription that keeps them). Dropping them on that guess could lose
//! what the publisher was told is safe; the destination delivers them to whoever subscribes,
//! or to no one, as before.
//!
//! Through brokers, the exchange runs inside the tunnel like every frame of a relayed
//! federation's link: the origin filters before the first hop, and brokers carry nothing a
//! far side does not want.

use std::sync::RwLock;

use meshfed_proto::Topic;
use meshfed_proto::TopicPattern;
use meshfed_proto::interest::{Interest, InterestAck};
use tokio::sync::watch;

/// Both sides of the interest exchange on one link session.
pub(crate) struct LinkInterest {
    /// The peer's last interest; `None` until its first on this session (everything is sent).
    peer: RwLock<Option<Interest>>,
    /// What this side announced on the session and how far the peer acknowledged it.
    own: watch::Sender<Announced>,
}

/// This side's announcements on one session.
#[derive(Debug, Default)]
struct Announced {
    /// The last interest sent, and the subscription generation (see `local::live`) it holds.
    sent: Option<(Interest, u64)>,
    /// The last version the peer acknowledged.
    acked_version: u64,
    /// The subscription generation the peer acknowledged an interest for: every subscription
    /// registered up to it is in what the peer applied.
    acked_generation: u64,
}

impl Default for LinkInterest {
    fn default() -> Self {
        Self {
            peer: RwLock::new(None),
            own: watch::channel(Announced::default()).0,
        }
    }
}

impl LinkInterest {
    /// The peer's last interest, `None` while it has sent none on this session.
    pub(crate) fn peer(&self) -> Option<Interest> {
        self.peer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the peer wants a qos 0 message on `topic`: it has a subscriber for it, or has
    /// not said yet.
    pub(crate) fn peer_wants(&self, topic: &Topic) -> bool {
        let peer = self.peer.read().unwrap_or_else(|e| e.into_inner());
        peer.as_ref().is_none_or(|i| i.wants(topic))
    }

    /// Applies the peer's `interest` unless a later version is in force already (frames
    /// arrive in order, so only a confused peer sends that); the acknowledgement to answer,
    /// naming the version in force.
    pub(crate) fn apply(&self, interest: Interest) -> InterestAck {
        let mut peer = self.peer.write().unwrap_or_else(|e| e.into_inner());
        match peer.as_ref() {
            Some(current) if current.version >= interest.version => InterestAck {
                version: current.version,
            },
            _ => {
                let version = interest.version;
                *peer = Some(interest);
                InterestAck { version }
            }
        }
    }

    /// This side's interest `patterns`, read at subscription `generation`: the interest to
    /// send if it differs from the last one sent (the first is always sent), else `None`.
    pub(crate) fn announce(
        &self,
        generation: u64,
        patterns: Vec<TopicPattern>,
    ) -> Option<Interest> {
        let mut out = None;
        self.own.send_modify(|a| {
            let version = a
                .sent
                .as_ref()
                .map_or(1, |(i, _)| i.version.saturating_add(1));
            let next = Interest::new(version, patterns);
            match &mut a.sent {
                Some((sent, at)) if sent.patterns() == next.patterns() => {
                    // Nothing changed for this peer: the interest it has (or will have)
                    // already holds every subscription up to `generation`.
                    if a.acked_version == sent.version {
                        a.acked_generation = a.acked_generation.max(generation);
                    } else {
                        *at = (*at).max(generation);
                    }
                }
                _ => {
                    a.sent = Some((next.clone(), generation));
                    out = Some(next);
                }
            }
        });
        out
    }

    /// The peer applied this side's interest of `version`.
    pub(crate) fn acknowledged(&self, version: u64) {
        self.own.send_if_modified(|a| match &a.sent {
            Some((sent, at)) if sent.version == version => {
                a.acked_version = version;
                a.acked_generation = a.acked_generation.max(*at);
                true
            }
            _ => false,
        });
    }

    /// Whether the peer acknowledged an interest holding every subscription registered up to
    /// `generation`.
    pub(crate) fn is_covered(&self, generation: u64) -> bool {
        self.own.borrow().acked_generation >= generation
    }

    /// Completes once the peer acknowledged an interest holding every subscription registered
    /// up to `generation`.
    pub(crate) async fn covered(&self, generation: u64) {
        let mut own = self.own.subscribe();
        // The sender lives as long as `self`.
        let _ = own.wait_for(|a| a.acked_generation >= generation).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TopicPattern {
        s.parse().unwrap()
    }

    #[test]
    fn an_unknown_interest_wants_everything_and_a_known_one_its_topics() {
        let link = LinkInterest::default();
        let topic: Topic = "other/y".parse().unwrap();
        assert!(link.peer_wants(&topic));
        assert_eq!(link.apply(Interest::new(1, [p("sensors/#")])).version, 1);
        assert!(!link.peer_wants(&topic));
        assert!(link.peer_wants(&"sensors/x".parse().unwrap()));
        // An older version does not replace the one in force.
        assert_eq!(link.apply(Interest::new(1, [p("#")])).version, 1);
        assert!(!link.peer_wants(&topic));
    }

    #[test]
    fn announcing_sends_changes_only_and_tracks_what_was_acknowledged() {
        let link = LinkInterest::default();
        let first = link.announce(0, Vec::new()).unwrap();
        assert_eq!(first.version, 1);
        assert_eq!(link.announce(1, vec![p("a")]).unwrap().version, 2);
        link.acknowledged(1);
        assert_eq!(link.own.borrow().acked_generation, 0);
        link.acknowledged(2);
        assert_eq!(link.own.borrow().acked_generation, 1);
        // A subscription that changes nothing for this peer is covered at once.
        assert!(link.announce(2, vec![p("a")]).is_none());
        assert_eq!(link.own.borrow().acked_generation, 2);
        // While a version is unacknowledged, an unchanged set waits for it.
        assert_eq!(link.announce(3, Vec::new()).unwrap().version, 3);
        assert!(link.announce(4, Vec::new()).is_none());
        assert_eq!(link.own.borrow().acked_generation, 2);
        link.acknowledged(3);
        assert_eq!(link.own.borrow().acked_generation, 4);
    }
}
