//! The receiving side: per-peer stream tracking, acknowledgements, ordered delivery, the
//! exactly-once dedup window and credit.
//!
//! One [`Inbox`] serves every peer that sends to this node, keeping a stream per [`Peer`] and one
//! dedup window for all (the same envelope may come through two peers after a failover). The
//! driver loop around it:
//! 1. Feed each received transmission to [`Inbox::handle_transmit`], each [`Forward`] to
//!    [`Inbox::handle_forward`].
//! 2. Take **every** event from [`Inbox::poll_event`] and act on it: persist
//!    [`InboxEvent::RememberDelivered`] together with the [`InboxEvent::Deliver`] that follows it
//!    (before handing the message on), delete [`InboxEvent::Forget`]ed ids, report gaps and
//!    discards. Acknowledgements are withheld while events are pending, so nothing is
//!    acknowledged before the driver has taken custody of it.
//! 3. Send what [`Inbox::poll_ack`] and [`Inbox::poll_credit`] return.
//! 4. Report consumed messages with [`Inbox::handle_consumed`]; that frees credit.
//! 5. Call [`Inbox::handle_timeout`] when [`Inbox::poll_timeout`] says.
//! 6. Tell it about the peer's links ([`Inbox::handle_link_down`], [`Inbox::handle_link_up`]);
//!    on a new link the acknowledgement state goes out first ([`Inbox::ack_state`] can also be
//!    sent in the resumption exchange).
//!
//! After a restart the driver rebuilds the dedup window with [`Inbox::restore_delivered`].
//!
//! **Ordering.** `ordered` messages carry their position in their key ([`KeySeq`]). One that
//! arrives ahead of its predecessors is held back, unacknowledged (so a crash loses nothing the
//! sender thinks delivered). A gap is passed over only when the sender can no longer fill it:
//! every sequence number below the held message is accounted for ([`InboxEvent::GapSkipped`]).
//! A gap older than `gap_timeout` is reported ([`InboxEvent::GapDetected`]) and still waited on.
//!
//! **Credit.** Each peer may have `window` messages beyond those this side has freed (consumed,
//! discarded, or known never to come): what is held back, delivered and unconsumed, or still on
//! the way never exceeds the window.

mod dedup;
mod peer;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use meshfed_proto::envelope::{EnvelopeId, Timestamp};

use crate::message::{Message, OrderKey, Peer};
use crate::stream::{Ack, Credit, Epoch, Forward, KeySeq, Seq, Transmit};
use dedup::DedupWindow;
use peer::{PeerStream, Shared};

/// Limits and timing of an [`Inbox`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxConfig {
    /// Messages each peer may have outstanding here (held, unconsumed or on the way); the
    /// sender's [`OutboxConfig::initial_credit`](crate::OutboxConfig::initial_credit) must equal
    /// it. Default 256.
    pub window: u64,
    /// Most selective ranges in one acknowledgement. Default 32.
    pub max_ack_ranges: usize,
    /// Most ids in the dedup window; beyond it the soonest to expire are forgotten early.
    /// Default 100 000.
    pub dedup_capacity: usize,
    /// How long a delivered exactly-once id is remembered (less if its deadline comes first:
    /// a later copy would be late anyway). Must exceed the longest a sender may retransmit or
    /// store and forward. Default 1 hour.
    pub dedup_ttl: Duration,
    /// How long a gap may hold messages back before it is reported. Default 5 s.
    pub gap_timeout: Duration,
    /// How soon an unused credit grant is repeated (doubling each time, up to 64×), in case the
    /// sender missed it. Default 1 s.
    pub credit_refresh: Duration,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            window: 256,
            max_ack_ranges: 32,
            dedup_capacity: 100_000,
            dedup_ttl: Duration::from_secs(3600),
            gap_timeout: Duration::from_secs(5),
            credit_refresh: Duration::from_secs(1),
        }
    }
}

/// A message handed to the local consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<P> {
    /// Who sent it over the link.
    pub peer: Peer,
    /// The message.
    pub message: Message<P>,
    /// Its position in its order key, for `ordered` messages.
    pub key_seq: Option<KeySeq>,
    /// Its place in the peer's stream; `None` for one out of a broker's custody.
    pub seq: Option<Seq>,
}

/// Why a received message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscardReason {
    /// It arrived (or came up for delivery) after its deadline.
    ArrivedLate,
    /// It was held back in a stream whose sender restarted; a reliable one is sent again.
    SenderRestarted,
}

impl fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ArrivedLate => "arrived after its deadline",
            Self::SenderRestarted => "held back when the sender restarted",
        })
    }
}

/// What the inbox tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxEvent<P> {
    /// Hand this message to the local consumer (or store it to forward).
    Deliver(Delivery<P>),
    /// Persist that this exactly-once message was delivered, until `until`, together with its
    /// delivery.
    RememberDelivered {
        /// The message.
        id: EnvelopeId,
        /// When the entry may go.
        until: Timestamp,
    },
    /// These ids left the dedup window (expired, or evicted to stay within capacity): delete
    /// their stored entries.
    Forget {
        /// The ids.
        ids: Vec<EnvelopeId>,
    },
    /// Messages of `key` have been held back behind `missing` for longer than the gap timeout.
    GapDetected {
        /// The sending peer.
        peer: Peer,
        /// The order key.
        key: OrderKey,
        /// The positions not yet received.
        missing: Range<KeySeq>,
        /// Since when.
        since: Timestamp,
    },
    /// The sender can no longer send `missing` (they expired, were shed, or were sent at most
    /// once and lost); the messages after them are delivered.
    GapSkipped {
        /// The sending peer.
        peer: Peer,
        /// The order key.
        key: OrderKey,
        /// The positions passed over.
        missing: Range<KeySeq>,
    },
    /// A received message was not delivered.
    Discarded {
        /// The sending peer.
        peer: Peer,
        /// The message.
        id: EnvelopeId,
        /// Why.
        reason: DiscardReason,
    },
}

/// A transmission the inbox refused (not acknowledged: a reliable message comes again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboxError {
    /// The transmission claims a floor above its own sequence number.
    #[error("{peer} sent {seq} with floor {floor} above it")]
    FloorAboveSequence {
        /// The sending peer.
        peer: Peer,
        /// The transmission's number.
        seq: Seq,
        /// Its floor.
        floor: Seq,
    },
    /// The peer has far more outstanding here than its credit allows: at twice the window,
    /// new messages are refused until the consumer catches up.
    #[error("{peer} overran its window: {occupancy} messages held or unconsumed, window {window}")]
    WindowOverrun {
        /// The sending peer.
        peer: Peer,
        /// Messages held back or unconsumed.
        occupancy: usize,
        /// The window.
        window: u64,
    },
    /// The transmission belongs to a stream the peer has since replaced.
    #[error("{peer} sent on {got} after {current} had started")]
    StaleEpoch {
        /// The sending peer.
        peer: Peer,
        /// The transmission's epoch.
        got: Epoch,
        /// The peer's current epoch.
        current: Epoch,
    },
}

/// How much of a peer's window is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    /// Messages held back for order.
    pub held: usize,
    /// Messages delivered and not yet consumed.
    pub unconsumed: usize,
    /// The credit limit the peer may use.
    pub credit: Credit,
}

/// Running totals, for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InboxCounters {
    /// Messages delivered.
    pub delivered: u64,
    /// Copies recognised and not delivered again (by sequence number, key position or dedup id).
    pub duplicates: u64,
    /// Messages discarded for arriving after their deadline.
    pub discarded_late: u64,
    /// Held messages discarded because their sender restarted.
    pub discarded_restarted: u64,
    /// Gaps reported after the gap timeout.
    pub gaps_detected: u64,
    /// Gaps passed over.
    pub gaps_skipped: u64,
    /// Key positions passed over in those gaps.
    pub messages_skipped: u64,
    /// Dedup entries forgotten before their time to stay within capacity.
    pub dedup_evicted_early: u64,
    /// Transmissions beyond the credit granted (a sender fault; accepted all the same up to
    /// twice the window, since a restarted receiver cannot know what its predecessor granted).
    pub beyond_credit: u64,
    /// Transmissions refused because the peer held twice its window here.
    pub window_overrun: u64,
    /// Transmissions of replaced streams, refused.
    pub stale_epoch: u64,
}

/// The receiving side for every peer of this node. See the module documentation for the
/// driving loop.
#[derive(Debug)]
pub struct Inbox<P> {
    streams: BTreeMap<Peer, PeerStream<P>>,
    shared: Shared<P>,
    /// The latest time any `handle_*` method was given.
    now: Timestamp,
}

impl<P> Inbox<P> {
    /// An inbox with no streams yet.
    pub fn new(config: InboxConfig) -> Self {
        Self {
            streams: BTreeMap::new(),
            shared: Shared {
                dedup: DedupWindow::new(config.dedup_capacity),
                config,
                unconsumed: HashMap::new(),
                events: VecDeque::new(),
                counters: InboxCounters::default(),
            },
            now: Timestamp(0),
        }
    }

    /// Handles one transmission from `peer`: a new stream epoch replaces the old one; a stale
    /// one, a malformed one, or one far beyond the peer's credit is refused (the error names
    /// the peer's fault; the driver may count it or close the link).
    pub fn handle_transmit(
        &mut self,
        peer: &Peer,
        t: Transmit<P>,
        now: Timestamp,
    ) -> Result<(), InboxError> {
        self.now = self.now.max(now);
        if t.floor > t.seq {
            return Err(InboxError::FloorAboveSequence {
                peer: peer.clone(),
                seq: t.seq,
                floor: t.floor,
            });
        }
        let stream = Self::stream(&mut self.streams, &mut self.shared, peer, t.epoch, t.floor)?;
        stream.receive(peer, t, now, &mut self.shared)
    }

    /// One message that came outside any stream — from a broker's custody, for a sender that
    /// was away — delivered unless it is an exactly-once message delivered before (then it is
    /// counted as a duplicate). It takes no stream slot, sequence or order position: custody
    /// keeps a message's priority, not the order of its key. Returns whether it is delivered.
    pub fn handle_custody(&mut self, peer: &Peer, message: Message<P>, now: Timestamp) -> bool {
        self.now = self.now.max(now);
        let sh = &mut self.shared;
        if message.deadline.is_some_and(|d| d.passed(now)) {
            sh.counters.discarded_late += 1;
            sh.events.push_back(InboxEvent::Discarded {
                peer: peer.clone(),
                id: message.id,
                reason: DiscardReason::ArrivedLate,
            });
            return false;
        }
        if !sh.first_delivery(&message, now) {
            return false;
        }
        sh.counters.delivered += 1;
        sh.events.push_back(InboxEvent::Deliver(Delivery {
            peer: peer.clone(),
            message,
            key_seq: None,
            seq: None,
        }));
        true
    }

    /// The sender's floor on its own: gaps below it will not be filled (see [`Forward`]). A
    /// forward of a stale epoch is refused like a transmission.
    pub fn handle_forward(
        &mut self,
        peer: &Peer,
        forward: Forward,
        now: Timestamp,
    ) -> Result<(), InboxError> {
        self.now = self.now.max(now);
        let stream = Self::stream(
            &mut self.streams,
            &mut self.shared,
            peer,
            forward.epoch,
            forward.floor,
        )?;
        stream.forward(peer, forward.floor, now, &mut self.shared);
        Ok(())
    }

    /// The stream of `peer` in `epoch` (first seen with `floor`): a new epoch replaces the old
    /// stream, a stale one is refused.
    fn stream<'a>(
        streams: &'a mut BTreeMap<Peer, PeerStream<P>>,
        shared: &mut Shared<P>,
        peer: &Peer,
        epoch: Epoch,
        floor: Seq,
    ) -> Result<&'a mut PeerStream<P>, InboxError> {
        let window = shared.config.window;
        let stream = streams
            .entry(peer.clone())
            .or_insert_with(|| PeerStream::new(epoch, floor, window));
        if epoch < stream.epoch {
            shared.counters.stale_epoch += 1;
            return Err(InboxError::StaleEpoch {
                peer: peer.clone(),
                got: epoch,
                current: stream.epoch,
            });
        }
        if epoch > stream.epoch {
            let old = std::mem::replace(stream, PeerStream::new(epoch, floor, window));
            old.abandon(peer, shared);
        }
        stream.link_up = true;
        Ok(stream)
    }

    /// The local consumer is done with these delivered messages: their slots are free for new
    /// credit. Unknown ids (already reported, or of a stream since replaced) are ignored.
    pub fn handle_consumed(&mut self, ids: impl IntoIterator<Item = EnvelopeId>) {
        let window = self.shared.config.window;
        for id in ids {
            let Some((peer, epoch, copies)) = self.shared.unconsumed.get_mut(&id) else {
                continue;
            };
            let (peer, epoch) = (peer.clone(), *epoch);
            *copies -= 1;
            if *copies == 0 {
                self.shared.unconsumed.remove(&id);
            }
            if let Some(stream) = self.streams.get_mut(&peer)
                && stream.epoch == epoch
            {
                stream.consumed(window);
            }
        }
    }

    /// The consumer refused a message delivered from `peer`'s stream at `seq` (it verified, and
    /// the receiver's checks — its agreement, its access rules — do not let it in): it stays
    /// settled, and the next acknowledgements tell the sender so, which dead-letters it
    /// instead of counting it delivered, with `reason` (the consumer's code for why). Call it
    /// before taking the next acknowledgement.
    pub fn handle_refused(&mut self, peer: &Peer, seq: Seq, reason: u8) {
        if let Some(stream) = self.streams.get_mut(peer) {
            stream.refuse(seq, reason);
        }
    }

    /// Forgets expired dedup entries, discards held messages past their deadline, reports old
    /// gaps, repeats credit grants that may have been missed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        let gone = self.shared.dedup.expire(now);
        if !gone.is_empty() {
            self.shared
                .events
                .push_back(InboxEvent::Forget { ids: gone });
        }
        for (peer, stream) in &mut self.streams {
            stream.timeout(peer, now, &mut self.shared);
        }
    }

    /// The link to `peer` is gone: nothing is sent to it until [`Inbox::handle_link_up`]. Held
    /// messages stay.
    pub fn handle_link_down(&mut self, peer: &Peer) {
        if let Some(stream) = self.streams.get_mut(peer) {
            stream.link_down();
        }
    }

    /// A new link to `peer` is up: its acknowledgement state and credit go out again.
    pub fn handle_link_up(&mut self, peer: &Peer) {
        if let Some(stream) = self.streams.get_mut(peer) {
            stream.link_up(self.now);
        }
    }

    /// Re-enters a dedup entry persisted before a restart (no event).
    pub fn restore_delivered(&mut self, id: EnvelopeId, until: Timestamp) {
        self.shared.dedup.insert(id, until);
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<InboxEvent<P>> {
        self.shared.events.pop_front()
    }

    /// The next acknowledgement to send (it carries the peer's credit). `None` while events are
    /// pending: take them first.
    pub fn poll_ack(&mut self) -> Option<(Peer, Ack)> {
        if !self.shared.events.is_empty() {
            return None;
        }
        let (peer, stream) = self
            .streams
            .iter_mut()
            .find(|(_, s)| s.ack_due && s.link_up)?;
        Some((peer.clone(), stream.ack(self.now, &self.shared.config)))
    }

    /// The next credit grant to send on its own (without an acknowledgement).
    pub fn poll_credit(&mut self) -> Option<(Peer, Credit)> {
        let (peer, stream) = self
            .streams
            .iter_mut()
            .find(|(_, s)| s.credit_due && s.link_up)?;
        Some((peer.clone(), stream.announce(self.now, &self.shared.config)))
    }

    /// When [`Inbox::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let gap = self.shared.config.gap_timeout;
        self.streams
            .values()
            .filter_map(|s| s.next_timeout(gap))
            .chain(self.shared.dedup.next_expiry())
            .min()
    }

    /// The acknowledgement state of `peer`'s stream, for the resumption exchange on a new link
    /// (announces the credit it carries). `None` for an unknown peer.
    pub fn ack_state(&mut self, peer: &Peer) -> Option<Ack> {
        let stream = self.streams.get_mut(peer)?;
        Some(stream.ack(self.now, &self.shared.config))
    }

    /// How much of `peer`'s window is taken.
    pub fn occupancy(&self, peer: &Peer) -> Option<Occupancy> {
        let stream = self.streams.get(peer)?;
        Some(Occupancy {
            held: stream.held,
            unconsumed: stream.unconsumed,
            credit: Credit {
                epoch: stream.epoch,
                limit: stream.limit(self.shared.config.window),
            },
        })
    }

    /// Running totals.
    pub fn counters(&self) -> &InboxCounters {
        &self.shared.counters
    }

    /// Ids in the dedup window.
    pub fn remembered(&self) -> usize {
        self.shared.dedup.len()
    }
}
