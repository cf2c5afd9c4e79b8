//! The sending side of one stream: what to persist, what to send next, what to send again, and
//! what to give up on.
//!
//! An [`Outbox`] serves one link peer. The driver loop around it:
//! 1. [`Outbox::offer`] each message to send; a refusal ([`OfferError`]) is final and names why.
//! 2. Take events from [`Outbox::poll_event`]: persist every [`OutboxEvent::Persist`] (in one
//!    transaction for many, if it likes) and report the ids back with
//!    [`Outbox::handle_persisted`]; only then does a qos ≥ 1 message count as accepted and
//!    become eligible for sending. Report those it could not store with
//!    [`Outbox::handle_persist_failed`]. Delete or dead-letter stored messages as
//!    [`OutboxEvent::Acknowledged`] and [`OutboxEvent::DeadLettered`] say.
//! 3. Send what [`Outbox::poll_transmit`] returns, until it returns `None`; then what
//!    [`Outbox::poll_forward`] returns. The qos 0 messages sent leave the outbox then:
//!    [`Outbox::poll_released`] names them.
//! 4. Feed what the peer sends back: [`Outbox::handle_ack`], [`Outbox::handle_credit`].
//! 5. Call [`Outbox::handle_timeout`] when [`Outbox::poll_timeout`] says.
//! 6. On link loss call [`Outbox::handle_link_down`]; on a new link [`Outbox::handle_link_up`],
//!    then feed the peer's resumption acknowledgement ([`crate::Inbox::ack_state`]) before
//!    polling transmits, so only what is missing goes again.
//!
//! After a restart the driver builds a new `Outbox` with a larger [`Epoch`] and
//! [`Outbox::restore`]s the stored messages in the order they were accepted.
//!
//! **Scheduling.** Retransmissions go first, in sequence order. Then new messages by priority
//! (7 first), first come first served within a priority; an `ordered` message waits until every
//! earlier message of its key has been sent. So that a high-priority ordered message is not stuck
//! behind a low-priority predecessor, the first unsent message of a key is scheduled at the
//! highest priority among the key's unsent messages (priority inheritance). New transmissions
//! need credit from the receiver and room in the in-flight window.

mod state;
#[cfg(test)]
mod tests;
mod types;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use meshfed_proto::envelope::{EnvelopeId, Priority, Qos, Timestamp};

use crate::message::{Message, OrderKey};
use crate::rtt::RttEstimator;
use crate::stream::{Ack, Credit, Epoch, Forward, Seq, Transmit};
use state::{Entry, KeyQueue, State, Ticket};
pub use types::{
    AckError, Backlog, DeadLetterReason, Limit, OfferError, Offered, OutboxConfig, OutboxCounters,
    OutboxEvent,
};

/// Whether the link to the peer is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    Down,
}

/// The sending side of one stream to one link peer. See the module documentation for the
/// driving loop.
#[derive(Debug)]
pub struct Outbox<P> {
    config: OutboxConfig,
    epoch: Epoch,
    link: Link,
    next_ticket: u64,
    entries: BTreeMap<Ticket, Entry<P>>,
    by_id: HashMap<EnvelopeId, Ticket>,
    /// Every held message that has a sequence number (in flight or awaiting retransmission).
    by_seq: BTreeMap<Seq, Ticket>,
    /// Unsent, persisted messages eligible to go: (priority, acceptance order).
    ready: BTreeSet<(Reverse<Priority>, Ticket)>,
    /// Sequence numbers to send again.
    resend: BTreeSet<Seq>,
    /// Retransmission timers of messages in flight.
    timers: BTreeSet<(Timestamp, Seq)>,
    /// Deadline expiries of held messages not in flight.
    deadlines: BTreeSet<(Timestamp, Ticket)>,
    /// Unsent qos 0 messages, lowest priority and oldest first.
    sheddable: BTreeSet<(Priority, Ticket)>,
    keys: HashMap<OrderKey, KeyQueue>,
    next_seq: Seq,
    credit: Seq,
    /// The receiver's cumulative acknowledgement: what it knows to be settled.
    peer_below: Seq,
    /// When to send the floor on its own unless an acknowledgement shows the receiver has caught
    /// up to this floor.
    forward_retry: Option<(Timestamp, Seq)>,
    /// A [`Forward`] is to be sent.
    forward_due: bool,
    bytes: u64,
    by_priority: [usize; 8],
    awaiting_persistence: usize,
    rtt: RttEstimator,
    events: VecDeque<OutboxEvent<P>>,
    /// qos 0 messages sent since the driver last asked ([`Outbox::poll_released`]).
    released: VecDeque<EnvelopeId>,
    counters: OutboxCounters,
}

impl<P: Clone> Outbox<P> {
    /// An empty outbox for stream `epoch`, link up.
    pub fn new(config: OutboxConfig, epoch: Epoch) -> Self {
        Self {
            credit: Seq(config.initial_credit),
            rtt: RttEstimator::new(config.rto),
            config,
            epoch,
            link: Link::Up,
            next_ticket: 0,
            entries: BTreeMap::new(),
            by_id: HashMap::new(),
            by_seq: BTreeMap::new(),
            ready: BTreeSet::new(),
            resend: BTreeSet::new(),
            timers: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            sheddable: BTreeSet::new(),
            keys: HashMap::new(),
            next_seq: Seq(0),
            peer_below: Seq(0),
            forward_retry: None,
            forward_due: false,
            bytes: 0,
            by_priority: [0; 8],
            awaiting_persistence: 0,
            events: VecDeque::new(),
            released: VecDeque::new(),
            counters: OutboxCounters::default(),
        }
    }

    /// This outbox's stream.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Offers a message for sending.
    ///
    /// At a limit, queued qos 0 messages the new one outranks (lower priority, or equal priority
    /// when the new one is reliable) are shed, lowest priority and oldest first. If that cannot
    /// make room, nothing is shed from the queue: a new qos 0 message is then the lowest ranked
    /// and is shed itself ([`Offered::Shed`], counted in [`OutboxCounters::shed`]), a new
    /// reliable one is refused with [`OfferError::Full`] (its sender must wait or retry). A
    /// reliable message already accepted is never removed to make room.
    pub fn offer(&mut self, message: Message<P>, now: Timestamp) -> Result<Offered, OfferError> {
        let victims = match self.admit(&message, now) {
            Ok(v) => v,
            Err(OfferError::Full { .. }) if !message.is_reliable() => {
                self.counters.accepted += 1;
                self.counters.shed += 1;
                return Ok(Offered::Shed);
            }
            Err(e) => {
                self.counters.refused += 1;
                return Err(e);
            }
        };
        for v in victims {
            self.dead_letter(v, DeadLetterReason::Shed);
        }
        self.counters.accepted += 1;
        if !message.is_reliable() {
            self.insert(message, now, State::Queued, false);
            Ok(Offered::Queued)
        } else if self.config.send_before_persisted {
            self.insert(message, now, State::Queued, true);
            Ok(Offered::AwaitingPersistence)
        } else {
            self.insert(message, now, State::AwaitingPersistence, true);
            Ok(Offered::AwaitingPersistence)
        }
    }

    /// Re-admits a message persisted before a restart, beyond the limits if need be (an accepted
    /// message is never lost) and without a new [`OutboxEvent::Persist`]. Restore in acceptance
    /// order: ordered keys keep it. A message whose deadline has passed is dead-lettered at once,
    /// as [`DeadLetterReason::ExpiredUnacknowledged`] (it may have been sent before the restart).
    pub fn restore(&mut self, message: Message<P>, now: Timestamp) -> Result<(), OfferError> {
        if self.by_id.contains_key(&message.id) {
            return Err(OfferError::AlreadyQueued { id: message.id });
        }
        let late = message.is_late(now);
        let ticket = self.insert(message, now, State::Queued, false);
        if let Some(entry) = self.entries.get_mut(&ticket) {
            entry.restored = true;
        }
        if late {
            // It may have been sent before the restart.
            self.dead_letter(ticket, DeadLetterReason::ExpiredUnacknowledged);
        }
        Ok(())
    }

    /// The driver has durably stored these messages: they are accepted and (unless
    /// [`OutboxConfig::send_before_persisted`] let them go already) may be sent. Unknown ids
    /// (say, acknowledged or dead-lettered meanwhile) are ignored.
    pub fn handle_persisted(&mut self, ids: impl IntoIterator<Item = EnvelopeId>) {
        for id in ids {
            let Some(&ticket) = self.by_id.get(&id) else {
                continue;
            };
            let Some(entry) = self.entries.get_mut(&ticket) else {
                continue;
            };
            if entry.persisted {
                continue;
            }
            entry.persisted = true;
            self.awaiting_persistence -= 1;
            if entry.state == State::AwaitingPersistence {
                entry.state = State::Queued;
                self.make_ready(ticket);
            }
        }
    }

    /// The driver could not store these messages: they were never accepted, so they leave the
    /// outbox without an event (the driver tells their senders) and count as refused offers
    /// rather than accepted ones. Their room is free again and the rest of their order key
    /// moves up. Ids not awaiting persistence (unknown, or persisted already) are ignored.
    /// Returns how many messages left.
    ///
    /// An ordered message keeps its position in its key, so the receiver sees a gap there and
    /// passes over it (reporting it) when the key's next message arrives.
    pub fn handle_persist_failed(&mut self, ids: impl IntoIterator<Item = EnvelopeId>) -> usize {
        let mut removed = 0;
        for id in ids {
            let Some(&ticket) = self.by_id.get(&id) else {
                continue;
            };
            let awaiting = self.entries.get(&ticket).is_some_and(|e| !e.persisted);
            if awaiting && self.detach(ticket).is_some() {
                removed += 1;
                self.counters.accepted = self.counters.accepted.saturating_sub(1);
                self.counters.refused += 1;
            }
        }
        removed
    }

    /// The receiver's credit: new transmissions may use sequence numbers below its limit.
    /// A grant for another epoch, or lower than one already known, changes nothing.
    pub fn handle_credit(&mut self, credit: Credit) {
        if credit.epoch != self.epoch {
            self.counters.foreign_epoch += 1;
            return;
        }
        self.credit = self.credit.max(credit.limit);
    }

    /// The receiver's acknowledgement (cumulative and selective). Acknowledged messages leave
    /// the outbox as [`OutboxEvent::Acknowledged`] (or [`OutboxEvent::DeadLettered`] if the
    /// receiver got them late); the round trip of the newest one sent only once is measured.
    pub fn handle_ack(&mut self, ack: &Ack, now: Timestamp) -> Result<(), AckError> {
        if ack.epoch != self.epoch {
            self.counters.foreign_epoch += 1;
            return Ok(());
        }
        if let Some(r) = ack.ranges.iter().find(|r| r.start > r.end) {
            return Err(AckError::InvertedRange {
                start: r.start,
                end: r.end,
            });
        }
        let top = ack.ranges.iter().map(|r| r.end).fold(ack.below, Seq::max);
        if top > self.next_seq {
            return Err(AckError::AcknowledgesUnsent {
                seq: Seq(top.0 - 1),
                next: self.next_seq,
            });
        }
        self.handle_credit(ack.credit());
        let mut acked: Vec<Seq> = self.by_seq.range(..ack.below).map(|(s, _)| *s).collect();
        for r in &ack.ranges {
            acked.extend(self.by_seq.range(r.start..r.end).map(|(s, _)| *s));
        }
        let late: BTreeSet<Seq> = ack.late.iter().copied().collect();
        let refused: BTreeMap<Seq, u8> = ack.refused.iter().copied().collect();
        let mut sample: Option<(Seq, Timestamp)> = None;
        for seq in acked {
            let Some(&ticket) = self.by_seq.get(&seq) else {
                continue;
            };
            if let Some(entry) = self.entries.get(&ticket)
                && let State::InFlight { sent_at, .. } = entry.state
                && entry.transmissions == 1
                && sample.is_none_or(|(s, _)| s < seq)
            {
                sample = Some((seq, sent_at));
            }
            if let Some(&reason) = refused.get(&seq) {
                self.dead_letter(ticket, DeadLetterReason::RefusedByPeer { reason });
            } else if late.contains(&seq) {
                // A restored message may have been delivered in time before the restart.
                let restored = self.entries.get(&ticket).is_some_and(|e| e.restored);
                let reason = if restored {
                    DeadLetterReason::ExpiredUnacknowledged
                } else {
                    DeadLetterReason::ArrivedLate
                };
                self.dead_letter(ticket, reason);
            } else {
                self.acknowledged(ticket);
            }
        }
        if let Some((_, sent_at)) = sample {
            self.rtt
                .sample(Duration::from_millis(now.0.saturating_sub(sent_at.0)));
        }
        self.peer_below = self.peer_below.max(ack.below);
        if self
            .forward_retry
            .is_some_and(|(_, target)| self.peer_below >= target)
        {
            self.forward_retry = None;
        }
        self.arm_forward(now);
        Ok(())
    }

    /// Acknowledgement by envelope id (say, the destination confirmed end to end): these
    /// messages leave the outbox wherever they are. Unknown ids are ignored.
    pub fn handle_ack_ids(&mut self, ids: impl IntoIterator<Item = EnvelopeId>) {
        for id in ids {
            if let Some(&ticket) = self.by_id.get(&id) {
                self.acknowledged(ticket);
            }
        }
    }

    /// Dead-letters what has passed its deadline and schedules retransmission of what has
    /// waited a retransmission timeout for its acknowledgement.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(&(at, ticket)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let sent_before = self.entries.get(&ticket).is_some_and(Entry::maybe_sent);
            let reason = if sent_before {
                DeadLetterReason::ExpiredUnacknowledged
            } else {
                DeadLetterReason::ExpiredInQueue
            };
            self.dead_letter(ticket, reason);
        }
        let mut fired = false;
        while let Some(&(at, seq)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            fired = true;
            let Some(&ticket) = self.by_seq.get(&seq) else {
                continue;
            };
            let late = self
                .entries
                .get(&ticket)
                .is_some_and(|e| e.message.is_late(now));
            if late {
                self.dead_letter(ticket, DeadLetterReason::ExpiredUnacknowledged);
            } else {
                self.await_retransmission(ticket, seq);
            }
        }
        if fired {
            self.rtt.back_off();
        }
        if let Some((at, target)) = self.forward_retry
            && at <= now
        {
            self.forward_retry = None;
            self.forward_due = self.peer_below < target;
        }
        self.arm_forward(now);
    }

    /// The federation ended: nothing will ever be sent or acknowledged again, so every message
    /// held, queued or in flight, is dead-lettered ([`DeadLetterReason::FederationEnded`]), and
    /// the outbox is empty afterwards.
    pub fn handle_federation_ended(&mut self) {
        let tickets: Vec<Ticket> = self.entries.keys().copied().collect();
        for ticket in tickets {
            self.dead_letter(ticket, DeadLetterReason::FederationEnded);
        }
    }

    /// The agreement in force refuses these messages (a renegotiation changed it since they were
    /// accepted): each is dead-lettered ([`DeadLetterReason::RefusedByAgreement`]) wherever it is,
    /// also just after [`Outbox::poll_transmit`] gave it, and never sent (again). A sequence
    /// number it took is settled like that of an expired message. Unknown ids are ignored.
    pub fn handle_refused(&mut self, ids: impl IntoIterator<Item = EnvelopeId>) {
        for id in ids {
            if let Some(&ticket) = self.by_id.get(&id) {
                self.dead_letter(ticket, DeadLetterReason::RefusedByAgreement);
            }
        }
    }

    /// The link is gone: everything in flight waits, in sequence order, for retransmission on
    /// the next link; nothing is sent until [`Outbox::handle_link_up`].
    pub fn handle_link_down(&mut self) {
        self.link = Link::Down;
        self.forward_retry = None;
        self.forward_due = false;
        for (_, seq) in std::mem::take(&mut self.timers) {
            if let Some(&ticket) = self.by_seq.get(&seq) {
                self.await_retransmission(ticket, seq);
            }
        }
    }

    /// A new link to the peer is up; if the receiver may not know the floor, a [`Forward`]
    /// goes first.
    pub fn handle_link_up(&mut self) {
        self.link = Link::Up;
        self.rtt.reset_back_off();
        self.forward_due = self.floor() > self.peer_below;
    }

    /// The next transmission, if the link, the credit and the in-flight window allow one.
    /// Messages whose deadline has passed are dead-lettered here rather than sent.
    pub fn poll_transmit(&mut self, now: Timestamp) -> Option<Transmit<P>> {
        let transmit = self.next_transmit(now);
        self.arm_forward(now);
        transmit
    }

    fn next_transmit(&mut self, now: Timestamp) -> Option<Transmit<P>> {
        if self.link == Link::Down {
            return None;
        }
        while let Some(seq) = self.resend.pop_first() {
            let Some(&ticket) = self.by_seq.get(&seq) else {
                continue;
            };
            if self.entries.get(&ticket)?.message.is_late(now) {
                self.dead_letter(ticket, DeadLetterReason::ExpiredUnacknowledged);
                continue;
            }
            self.counters.retransmitted += 1;
            return self.send(ticket, seq, now);
        }
        loop {
            let &(_, ticket) = self.ready.first()?;
            let entry = self.entries.get(&ticket)?;
            if entry.message.is_late(now) {
                let reason = if entry.maybe_sent() {
                    DeadLetterReason::ExpiredUnacknowledged
                } else {
                    DeadLetterReason::ExpiredInQueue
                };
                self.dead_letter(ticket, reason);
                continue;
            }
            if self.next_seq >= self.credit {
                return None;
            }
            if entry.message.is_reliable() && self.by_seq.len() >= self.config.max_in_flight {
                return None;
            }
            let seq = self.next_seq;
            self.next_seq = seq.next();
            self.unqueue(ticket);
            self.counters.transmitted += 1;
            return self.send(ticket, seq, now);
        }
    }

    /// The floor to send on its own, once [`Outbox::poll_transmit`] has nothing more: when the
    /// receiver has not acknowledged up to the floor within a retransmission timeout, so it may
    /// be waiting for sequence numbers that will never come (see [`Forward`]), and on a new link.
    pub fn poll_forward(&mut self) -> Option<Forward> {
        if self.link == Link::Down || !std::mem::take(&mut self.forward_due) {
            return None;
        }
        let floor = self.floor();
        (floor > self.peer_below).then_some(Forward {
            epoch: self.epoch,
            floor,
        })
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<OutboxEvent<P>> {
        self.events.pop_front()
    }

    /// The next qos 0 message that [`Outbox::poll_transmit`] gave and the outbox no longer
    /// holds: nothing acknowledges it, so no event follows; a driver that keeps something per
    /// held message lets it go now (else it would keep it for ever).
    pub fn poll_released(&mut self) -> Option<EnvelopeId> {
        self.released.pop_front()
    }

    /// When [`Outbox::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        [
            self.deadlines.first().map(|(at, _)| *at),
            self.timers.first().map(|(at, _)| *at),
            self.forward_retry.map(|(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The backlog at `now`.
    pub fn backlog(&self, now: Timestamp) -> Backlog {
        Backlog {
            messages: self.entries.len(),
            bytes: self.bytes,
            by_priority: self.by_priority,
            awaiting_persistence: self.awaiting_persistence,
            in_flight: self.by_seq.len(),
            oldest: self
                .entries
                .values()
                .next()
                .map(|e| Duration::from_millis(now.0.saturating_sub(e.accepted_at.0))),
        }
    }

    /// Running totals.
    pub fn counters(&self) -> &OutboxCounters {
        &self.counters
    }

    /// The round-trip estimate.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// The credit known from the receiver.
    pub fn credit(&self) -> Credit {
        Credit {
            epoch: self.epoch,
            limit: self.credit,
        }
    }

    /// Whether the outbox holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The reliable (qos ≥ 1), persisted messages held — not yet acknowledged by the peer —
    /// in acceptance order: what the driver may hand a broker's custody while the peer is away.
    pub fn reliable_held(&self) -> impl Iterator<Item = &Message<P>> {
        (self.entries.values())
            .filter(|e| e.persisted && e.message.qos != Qos::AtMostOnce)
            .map(|e| &e.message)
    }

    /// Whether this message is held (queued, awaiting persistence or unacknowledged).
    pub fn contains(&self, id: &EnvelopeId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Watches that the receiver catches up with the floor: unless an acknowledgement shows it
    /// within a retransmission timeout, a [`Forward`] goes.
    fn arm_forward(&mut self, now: Timestamp) {
        let floor = self.floor();
        if self.link == Link::Down || floor <= self.peer_below {
            self.forward_retry = None;
        } else if self.forward_retry.is_none() {
            self.forward_retry = Some((now.saturating_add(self.rtt.rto()), floor));
        }
    }

    /// Every sequence number below this is settled here: the lowest one still held, or the next
    /// one to use.
    fn floor(&self) -> Seq {
        self.by_seq
            .first_key_value()
            .map_or(self.next_seq, |(s, _)| *s)
    }

    /// Checks the offer against duplicates, deadline and limits; the qos 0 messages to shed to
    /// make room.
    fn admit(&self, m: &Message<P>, now: Timestamp) -> Result<Vec<Ticket>, OfferError> {
        if self.by_id.contains_key(&m.id) {
            return Err(OfferError::AlreadyQueued { id: m.id });
        }
        if let Some(deadline) = m.deadline
            && deadline.passed(now)
        {
            return Err(OfferError::DeadlinePassed { id: m.id, deadline });
        }
        let size = m.size as u64;
        if size > self.config.max_bytes {
            return Err(OfferError::TooLarge {
                id: m.id,
                size: m.size,
                max: self.config.max_bytes,
            });
        }
        let excess_count = (self.entries.len() + 1).saturating_sub(self.config.max_messages);
        let excess_bytes = (self.bytes + size).saturating_sub(self.config.max_bytes);
        let mut victims = Vec::new();
        let (mut freed_count, mut freed_bytes) = (0, 0);
        for &(priority, ticket) in &self.sheddable {
            if freed_count >= excess_count && freed_bytes >= excess_bytes {
                break;
            }
            let outranked = priority < m.priority || (priority == m.priority && m.is_reliable());
            if !outranked {
                break;
            }
            victims.push(ticket);
            freed_count += 1;
            freed_bytes += self
                .entries
                .get(&ticket)
                .map_or(0, |e| e.message.size as u64);
        }
        if freed_count < excess_count {
            return Err(OfferError::Full {
                limit: Limit::Messages {
                    max: self.config.max_messages,
                },
            });
        }
        if freed_bytes < excess_bytes {
            return Err(OfferError::Full {
                limit: Limit::Bytes {
                    max: self.config.max_bytes,
                },
            });
        }
        Ok(victims)
    }

    /// Holds `message` in `state`; with `persist`, it awaits persistence (a persist event is
    /// queued and it counts as not yet accepted until [`Outbox::handle_persisted`]).
    fn insert(
        &mut self,
        message: Message<P>,
        now: Timestamp,
        state: State,
        persist: bool,
    ) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        let key_seq = message.order.as_ref().map(|key| {
            let kq = self.keys.entry(key.clone()).or_default();
            kq.push(ticket, message.priority)
        });
        self.by_id.insert(message.id, ticket);
        self.bytes += message.size as u64;
        self.by_priority[usize::from(message.priority.get())] += 1;
        if let Some(d) = message.deadline {
            self.deadlines.insert((d.expiry(), ticket));
        }
        if persist {
            self.awaiting_persistence += 1;
            self.events.push_back(OutboxEvent::Persist(message.clone()));
        }
        self.entries.insert(
            ticket,
            Entry {
                message,
                accepted_at: now,
                state,
                persisted: !persist,
                key_seq,
                transmissions: 0,
                restored: false,
            },
        );
        if state == State::Queued {
            self.make_ready(ticket);
        }
        ticket
    }

    /// A queued message becomes eligible (for an ordered one: its key is rescheduled).
    fn make_ready(&mut self, ticket: Ticket) {
        let Some(entry) = self.entries.get(&ticket) else {
            return;
        };
        let priority = entry.message.priority;
        if !entry.message.is_reliable() {
            self.sheddable.insert((priority, ticket));
        }
        match entry.message.order.clone() {
            Some(key) => self.reschedule(&key),
            None => {
                self.ready.insert((Reverse(priority), ticket));
            }
        }
    }

    /// Puts the first unsent message of `key` in the ready set, at the key's highest unsent
    /// priority, if it is persisted.
    fn reschedule(&mut self, key: &OrderKey) {
        let Some(kq) = self.keys.get_mut(key) else {
            return;
        };
        if let Some(old) = kq.scheduled.take() {
            self.ready.remove(&old);
        }
        let Some(head) = kq.head() else {
            return;
        };
        let queued = self
            .entries
            .get(&head)
            .is_some_and(|e| e.state == State::Queued);
        if let (true, Some(priority)) = (queued, kq.top_priority()) {
            let slot = (Reverse(priority), head);
            self.ready.insert(slot);
            kq.scheduled = Some(slot);
        }
    }

    /// Takes a message about to be sent for the first time out of the queue structures.
    fn unqueue(&mut self, ticket: Ticket) {
        let Some(entry) = self.entries.get(&ticket) else {
            return;
        };
        let priority = entry.message.priority;
        self.ready.remove(&(Reverse(priority), ticket));
        self.sheddable.remove(&(priority, ticket));
        if let Some(d) = entry.message.deadline {
            self.deadlines.remove(&(d.expiry(), ticket));
        }
        if let Some(key) = entry.message.order.clone() {
            if let Some(kq) = self.keys.get_mut(&key) {
                kq.remove(ticket, priority);
            }
            self.reschedule(&key);
        }
    }

    /// Sends `ticket` as `seq`: reliable messages go in flight, qos 0 ones are forgotten.
    fn send(&mut self, ticket: Ticket, seq: Seq, now: Timestamp) -> Option<Transmit<P>> {
        let floor = self.floor().min(seq);
        let entry = self.entries.get_mut(&ticket)?;
        let retransmission = entry.transmissions > 0;
        entry.transmissions += 1;
        let key_seq = entry.key_seq;
        if !entry.message.is_reliable() {
            let entry = self.detach(ticket)?;
            self.released.push_back(entry.message.id);
            return Some(Transmit {
                epoch: self.epoch,
                seq,
                floor,
                key_seq,
                retransmission,
                message: entry.message,
            });
        }
        let retransmit_at = now.saturating_add(self.rtt.rto());
        entry.state = State::InFlight {
            seq,
            sent_at: now,
            retransmit_at,
        };
        let message = entry.message.clone();
        if let Some(d) = message.deadline {
            self.deadlines.remove(&(d.expiry(), ticket));
        }
        self.by_seq.insert(seq, ticket);
        self.timers.insert((retransmit_at, seq));
        Some(Transmit {
            epoch: self.epoch,
            seq,
            floor,
            key_seq,
            retransmission,
            message,
        })
    }

    /// A message sent before waits to be sent again.
    fn await_retransmission(&mut self, ticket: Ticket, seq: Seq) {
        let Some(entry) = self.entries.get_mut(&ticket) else {
            return;
        };
        if let State::InFlight { retransmit_at, .. } = entry.state {
            self.timers.remove(&(retransmit_at, seq));
        }
        entry.state = State::AwaitingRetransmission { seq };
        if let Some(d) = entry.message.deadline {
            self.deadlines.insert((d.expiry(), ticket));
        }
        self.resend.insert(seq);
    }

    fn acknowledged(&mut self, ticket: Ticket) {
        if let Some(entry) = self.detach(ticket) {
            self.counters.acknowledged += 1;
            self.events.push_back(OutboxEvent::Acknowledged {
                id: entry.message.id,
            });
        }
    }

    fn dead_letter(&mut self, ticket: Ticket, reason: DeadLetterReason) {
        let Some(entry) = self.detach(ticket) else {
            return;
        };
        let counter = match reason {
            DeadLetterReason::ExpiredInQueue => &mut self.counters.expired_in_queue,
            DeadLetterReason::ExpiredUnacknowledged => &mut self.counters.expired_unacknowledged,
            DeadLetterReason::ArrivedLate => &mut self.counters.arrived_late,
            DeadLetterReason::Shed => &mut self.counters.shed,
            DeadLetterReason::FederationEnded => &mut self.counters.federation_ended,
            DeadLetterReason::RefusedByAgreement => &mut self.counters.refused_by_agreement,
            DeadLetterReason::RefusedByPeer { .. } => &mut self.counters.refused_by_peer,
        };
        *counter += 1;
        self.events.push_back(OutboxEvent::DeadLettered {
            id: entry.message.id,
            reason,
        });
    }

    /// Removes a message from every structure.
    fn detach(&mut self, ticket: Ticket) -> Option<Entry<P>> {
        let entry = self.entries.remove(&ticket)?;
        let m = &entry.message;
        self.by_id.remove(&m.id);
        self.bytes -= m.size as u64;
        self.by_priority[usize::from(m.priority.get())] -= 1;
        if let Some(d) = m.deadline {
            self.deadlines.remove(&(d.expiry(), ticket));
        }
        self.sheddable.remove(&(m.priority, ticket));
        self.ready.remove(&(Reverse(m.priority), ticket));
        if !entry.persisted {
            self.awaiting_persistence -= 1;
        }
        match entry.state {
            State::AwaitingPersistence | State::Queued => {}
            State::InFlight {
                seq, retransmit_at, ..
            } => {
                self.by_seq.remove(&seq);
                self.timers.remove(&(retransmit_at, seq));
            }
            State::AwaitingRetransmission { seq } => {
                self.by_seq.remove(&seq);
                self.resend.remove(&seq);
            }
        }
        if let Some(key) = &m.order {
            if let Some(kq) = self.keys.get_mut(key) {
                kq.remove(ticket, m.priority);
            }
            self.reschedule(key);
        }
        Some(entry)
    }
}
