//! One sending peer's stream as the inbox tracks it: what arrived, what is settled, what is held
//! back for order, and how much credit the peer has.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use meshfed_proto::envelope::{EnvelopeId, Qos, Timestamp};

use super::dedup::DedupWindow;
use super::{Delivery, DiscardReason, InboxConfig, InboxCounters, InboxError, InboxEvent};
use crate::message::{Message, OrderKey, Peer};
use crate::stream::{Ack, Credit, Epoch, KeySeq, Seq, SeqSet, Transmit};

/// How much longer than `credit_refresh` a refresh may back off.
const MAX_REFRESH_BACKOFF: u32 = 64;

/// What all streams of an inbox share.
#[derive(Debug)]
pub(super) struct Shared<P> {
    pub(super) config: InboxConfig,
    pub(super) dedup: DedupWindow,
    /// Delivered, not yet consumed: which stream's credit each frees, and how many copies.
    pub(super) unconsumed: HashMap<EnvelopeId, (Peer, Epoch, u32)>,
    pub(super) events: VecDeque<InboxEvent<P>>,
    pub(super) counters: InboxCounters,
}

impl<P> Shared<P> {
    /// Whether `message` is delivered now: not an exactly-once message delivered before
    /// (counted as a duplicate); an exactly-once one is remembered in the dedup window.
    pub(super) fn first_delivery(&mut self, message: &Message<P>, now: Timestamp) -> bool {
        if message.qos != Qos::ExactlyOnce {
            return true;
        }
        if self.dedup.contains(&message.id) {
            self.counters.duplicates += 1;
            return false;
        }
        let mut until = now.saturating_add(self.config.dedup_ttl);
        if let Some(d) = message.deadline {
            // A later copy would be discarded as late anyway.
            until = until.min(d.instant());
        }
        let evicted = self.dedup.insert(message.id, until);
        self.events.push_back(InboxEvent::RememberDelivered {
            id: message.id,
            until,
        });
        if !evicted.is_empty() {
            self.counters.dedup_evicted_early += evicted.len() as u64;
            self.events.push_back(InboxEvent::Forget { ids: evicted });
        }
        true
    }
}

/// A message held back until its key's earlier messages are delivered.
#[derive(Debug)]
struct Held<P> {
    seq: Seq,
    /// `None` once discarded for lateness: the position is passed over on release.
    message: Option<Message<P>>,
}

/// Delivery order of one key.
#[derive(Debug)]
struct KeyOrder<P> {
    next: KeySeq,
    held: BTreeMap<KeySeq, Held<P>>,
    /// Since when the current gap (before the first held message) has existed.
    gap_since: Timestamp,
    gap_reported: bool,
}

/// Re-announcing credit a sender may have missed, backing off while it does not use it.
#[derive(Debug, Clone, Copy)]
struct Refresh {
    at: Timestamp,
    interval: Duration,
    /// A transmission at or above this proves the sender learnt the newer grant.
    proof: Seq,
}

/// One peer's stream.
#[derive(Debug)]
pub(super) struct PeerStream<P> {
    pub(super) epoch: Epoch,
    pub(super) link_up: bool,
    pub(super) ack_due: bool,
    pub(super) credit_due: bool,
    /// Received (held or settled), or below the sender's floor.
    received: SeqSet,
    /// Dealt with for good: acknowledgeable.
    settled: SeqSet,
    next_unseen: Seq,
    late: BTreeSet<Seq>,
    /// Settled numbers whose message the consumer refused.
    refused: BTreeMap<Seq, u8>,
    keys: HashMap<OrderKey, KeyOrder<P>>,
    /// Keys with held messages.
    holding: BTreeSet<OrderKey>,
    /// Sequence numbers whose slot is free: consumed, discarded or never coming.
    freed: u64,
    announced: Seq,
    refresh: Option<Refresh>,
    pub(super) held: usize,
    pub(super) unconsumed: usize,
}

impl<P> PeerStream<P> {
    /// A stream first seen with the sender's `floor` (everything below is settled there).
    pub(super) fn new(epoch: Epoch, floor: Seq, window: u64) -> Self {
        Self {
            epoch,
            link_up: true,
            ack_due: false,
            credit_due: false,
            received: SeqSet::below(floor),
            settled: SeqSet::below(floor),
            next_unseen: floor,
            late: BTreeSet::new(),
            refused: BTreeMap::new(),
            keys: HashMap::new(),
            holding: BTreeSet::new(),
            freed: floor.0,
            announced: Seq(floor.0.saturating_add(window)),
            refresh: None,
            held: 0,
            unconsumed: 0,
        }
    }

    /// The credit limit the stream's occupancy allows.
    pub(super) fn limit(&self, window: u64) -> Seq {
        Seq(self.freed.saturating_add(window))
    }

    /// Handles one transmission (its floor is at most its sequence number). The floor is
    /// applied even when the message itself is refused, so a sender's progress is never lost.
    pub(super) fn receive(
        &mut self,
        peer: &Peer,
        t: Transmit<P>,
        now: Timestamp,
        sh: &mut Shared<P>,
    ) -> Result<(), InboxError> {
        let window = sh.config.window;
        let base_before = self.received.base();
        self.apply_floor(t.floor);
        let occupancy = self.held + self.unconsumed;
        let overrun = !self.received.contains(t.seq)
            && u64::try_from(occupancy).unwrap_or(u64::MAX) >= window.saturating_mul(2);
        if !overrun {
            self.ack_due = true;
            if t.seq >= self.announced.max(self.limit(window)) {
                sh.counters.beyond_credit += 1;
            }
            if self.refresh.is_some_and(|r| t.seq >= r.proof) {
                self.refresh = None;
            }
            self.next_unseen = self.next_unseen.max(t.seq.next());
            if self.received.insert(t.seq) {
                self.accept(peer, t.seq, t.key_seq, t.message, now, sh);
            } else {
                sh.counters.duplicates += 1;
            }
        }
        if self.received.base() > base_before {
            self.skip_lost(peer, now, sh);
        }
        self.update_credit(window);
        if overrun {
            sh.counters.window_overrun += 1;
            return Err(InboxError::WindowOverrun {
                peer: peer.clone(),
                occupancy,
                window,
            });
        }
        Ok(())
    }

    /// A new sequence number's message: discarded late, held back, or delivered.
    fn accept(
        &mut self,
        peer: &Peer,
        seq: Seq,
        key_seq: Option<KeySeq>,
        message: Message<P>,
        now: Timestamp,
        sh: &mut Shared<P>,
    ) {
        if message.is_late(now) {
            self.discard_late(peer, seq, message.id, sh);
            return;
        }
        let (Some(key), Some(ks)) = (message.order.clone(), key_seq) else {
            self.deliver(peer, seq, message, None, now, sh);
            return;
        };
        let ko = self.keys.entry(key.clone()).or_insert_with(|| KeyOrder {
            next: KeySeq(0),
            held: BTreeMap::new(),
            gap_since: now,
            gap_reported: false,
        });
        if ks < ko.next || ko.held.contains_key(&ks) {
            // Its position was passed (delivered, skipped or discarded) or is taken: a copy.
            self.settled.insert(seq);
            self.freed += 1;
            sh.counters.duplicates += 1;
            return;
        }
        if ks > ko.next {
            if ko.held.is_empty() {
                ko.gap_since = now;
                ko.gap_reported = false;
            }
            ko.held.insert(
                ks,
                Held {
                    seq,
                    message: Some(message),
                },
            );
            self.held += 1;
            self.holding.insert(key);
            return;
        }
        ko.next = ks.next();
        self.deliver(peer, seq, message, Some(ks), now, sh);
        self.release(peer, &key, now, sh);
    }

    /// Delivers held messages of `key` that are next in line.
    fn release(&mut self, peer: &Peer, key: &OrderKey, now: Timestamp, sh: &mut Shared<P>) {
        let mut advanced = false;
        loop {
            let Some(ko) = self.keys.get_mut(key) else {
                return;
            };
            let Some(entry) = ko.held.first_entry() else {
                break;
            };
            if *entry.key() != ko.next {
                break;
            }
            let ks = *entry.key();
            let held = entry.remove();
            ko.next = ks.next();
            advanced = true;
            let Some(message) = held.message else {
                continue;
            };
            self.held -= 1;
            if message.is_late(now) {
                self.discard_late(peer, held.seq, message.id, sh);
            } else {
                self.deliver(peer, held.seq, message, Some(ks), now, sh);
            }
        }
        if let Some(ko) = self.keys.get_mut(key) {
            if ko.held.is_empty() {
                self.holding.remove(key);
            } else if advanced {
                ko.gap_since = now;
                ko.gap_reported = false;
            }
        }
    }

    /// Passes over gaps the sender can no longer fill: when every sequence number below a held
    /// message is accounted for, its missing predecessors were never sent or were given up.
    fn skip_lost(&mut self, peer: &Peer, now: Timestamp, sh: &mut Shared<P>) {
        let keys: Vec<OrderKey> = self.holding.iter().cloned().collect();
        for key in keys {
            while let Some(ko) = self.keys.get_mut(&key) {
                let Some((&ks, held)) = ko.held.first_key_value() else {
                    break;
                };
                if held.seq >= self.received.base() || ks == ko.next {
                    break;
                }
                let missing = ko.next..ks;
                ko.next = ks;
                sh.counters.gaps_skipped += 1;
                sh.counters.messages_skipped = sh
                    .counters
                    .messages_skipped
                    .saturating_add(ks.0 - missing.start.0);
                sh.events.push_back(InboxEvent::GapSkipped {
                    peer: peer.clone(),
                    key: key.clone(),
                    missing,
                });
                self.release(peer, &key, now, sh);
            }
        }
    }

    fn deliver(
        &mut self,
        peer: &Peer,
        seq: Seq,
        message: Message<P>,
        key_seq: Option<KeySeq>,
        now: Timestamp,
        sh: &mut Shared<P>,
    ) {
        self.settled.insert(seq);
        if !sh.first_delivery(&message, now) {
            self.freed += 1;
            return;
        }
        self.unconsumed += 1;
        sh.unconsumed
            .entry(message.id)
            .and_modify(|(p, e, n)| {
                if *p == *peer && *e == self.epoch {
                    *n += 1;
                } else {
                    (*p, *e, *n) = (peer.clone(), self.epoch, 1);
                }
            })
            .or_insert_with(|| (peer.clone(), self.epoch, 1));
        sh.counters.delivered += 1;
        sh.events.push_back(InboxEvent::Deliver(Delivery {
            peer: peer.clone(),
            message,
            key_seq,
            seq: Some(seq),
        }));
    }

    fn discard_late(&mut self, peer: &Peer, seq: Seq, id: EnvelopeId, sh: &mut Shared<P>) {
        self.settled.insert(seq);
        self.late.insert(seq);
        self.freed += 1;
        sh.counters.discarded_late += 1;
        sh.events.push_back(InboxEvent::Discarded {
            peer: peer.clone(),
            id,
            reason: DiscardReason::ArrivedLate,
        });
    }

    /// The sender's floor on its own ([`crate::Forward`]): acknowledged, so the sender knows it
    /// arrived.
    pub(super) fn forward(&mut self, peer: &Peer, floor: Seq, now: Timestamp, sh: &mut Shared<P>) {
        let base_before = self.received.base();
        self.apply_floor(floor);
        if self.received.base() > base_before {
            self.skip_lost(peer, now, sh);
        }
        self.ack_due = true;
        self.update_credit(sh.config.window);
    }

    /// Everything below `floor` is settled at the sender: what never arrived never will.
    fn apply_floor(&mut self, floor: Seq) {
        self.freed = self.freed.saturating_add(self.received.fill_below(floor));
        self.settled.fill_below(floor);
        self.late = self.late.split_off(&floor);
        self.refused = self.refused.split_off(&floor);
    }

    /// The consumer refused the message at `seq` for `reason`: acknowledgements say so from
    /// now on.
    pub(super) fn refuse(&mut self, seq: Seq, reason: u8) {
        if self.settled.contains(seq) && self.refused.insert(seq, reason).is_none() {
            self.ack_due = true;
        }
    }

    /// A delivered message was consumed: its slot is free.
    pub(super) fn consumed(&mut self, window: u64) {
        self.unconsumed = self.unconsumed.saturating_sub(1);
        self.freed += 1;
        self.update_credit(window);
    }

    /// Marks a grant due when the credit grew by a quarter window, or at all while the sender
    /// may be waiting for it.
    pub(super) fn update_credit(&mut self, window: u64) {
        let limit = self.limit(window);
        if limit <= self.announced {
            return;
        }
        let step = (window / 4).max(1);
        let sender_waiting = self.next_unseen >= self.announced;
        if limit.0 - self.announced.0 >= step || sender_waiting {
            self.credit_due = true;
        }
    }

    /// The current credit, now announced; arms the refresh if it grew.
    pub(super) fn announce(&mut self, now: Timestamp, config: &InboxConfig) -> Credit {
        let limit = self.limit(config.window);
        if limit > self.announced {
            self.refresh = Some(Refresh {
                at: now.saturating_add(config.credit_refresh),
                interval: config.credit_refresh,
                proof: self.announced,
            });
            self.announced = limit;
        }
        self.credit_due = false;
        Credit {
            epoch: self.epoch,
            limit: self.announced,
        }
    }

    /// The acknowledgement of everything settled (announcing the credit it carries).
    pub(super) fn ack(&mut self, now: Timestamp, config: &InboxConfig) -> Ack {
        let credit = self.announce(now, config);
        self.ack_due = false;
        Ack {
            epoch: self.epoch,
            below: self.settled.base(),
            ranges: self.settled.ranges(config.max_ack_ranges),
            late: self.late.iter().copied().collect(),
            refused: self.refused.iter().map(|(s, r)| (*s, *r)).collect(),
            credit: credit.limit,
        }
    }

    /// Nothing goes out until the link is back; an unconfirmed grant stays to be repeated.
    pub(super) fn link_down(&mut self) {
        self.link_up = false;
        self.ack_due = false;
        self.credit_due = false;
    }

    /// Acknowledgement and credit go out again; a grant the sender has not shown it knows is
    /// repeated a refresh interval later, in case this announcement is lost too.
    pub(super) fn link_up(&mut self, now: Timestamp) {
        self.link_up = true;
        self.ack_due = true;
        self.credit_due = true;
        if let Some(r) = &mut self.refresh {
            r.at = now.saturating_add(r.interval);
        }
    }

    /// Discards late held messages, reports old gaps, refreshes credit.
    pub(super) fn timeout(&mut self, peer: &Peer, now: Timestamp, sh: &mut Shared<P>) {
        let gap_timeout = sh.config.gap_timeout;
        let keys: Vec<OrderKey> = self.holding.iter().cloned().collect();
        for key in keys {
            let Some(ko) = self.keys.get_mut(&key) else {
                continue;
            };
            let mut late = Vec::new();
            for held in ko.held.values_mut() {
                if held.message.as_ref().is_some_and(|m| m.is_late(now))
                    && let Some(m) = held.message.take()
                {
                    late.push((held.seq, m.id));
                }
            }
            if !ko.gap_reported
                && now >= ko.gap_since.saturating_add(gap_timeout)
                && let Some(&first) = ko.held.keys().next()
            {
                ko.gap_reported = true;
                sh.counters.gaps_detected += 1;
                sh.events.push_back(InboxEvent::GapDetected {
                    peer: peer.clone(),
                    key: key.clone(),
                    missing: ko.next..first,
                    since: ko.gap_since,
                });
            }
            for (seq, id) in late {
                self.held -= 1;
                self.discard_late(peer, seq, id, sh);
            }
        }
        if self.link_up
            && let Some(r) = &mut self.refresh
            && r.at <= now
        {
            self.credit_due = true;
            r.interval = (r.interval * 2).min(sh.config.credit_refresh * MAX_REFRESH_BACKOFF);
            r.at = now.saturating_add(r.interval);
        }
        self.update_credit(sh.config.window);
    }

    /// When [`PeerStream::timeout`] has something to do.
    pub(super) fn next_timeout(&self, gap_timeout: Duration) -> Option<Timestamp> {
        let mut next = self.refresh.filter(|_| self.link_up).map(|r| r.at);
        let mut consider = |t: Timestamp| next = Some(next.map_or(t, |n| n.min(t)));
        for key in &self.holding {
            let Some(ko) = self.keys.get(key) else {
                continue;
            };
            if !ko.gap_reported {
                consider(ko.gap_since.saturating_add(gap_timeout));
            }
            for held in ko.held.values() {
                if let Some(d) = held.message.as_ref().and_then(|m| m.deadline) {
                    consider(d.expiry());
                }
            }
        }
        next
    }

    /// The sender restarted: held messages of this stream will not be completed (reliable ones
    /// come again in the new stream).
    pub(super) fn abandon(self, peer: &Peer, sh: &mut Shared<P>) {
        for (_, ko) in self.keys {
            for held in ko.held.into_values() {
                if let Some(m) = held.message {
                    sh.counters.discarded_restarted += 1;
                    sh.events.push_back(InboxEvent::Discarded {
                        peer: peer.clone(),
                        id: m.id,
                        reason: DiscardReason::SenderRestarted,
                    });
                }
            }
        }
    }
}
