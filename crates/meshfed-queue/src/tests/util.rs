//! The simulation harness: an [`Outbox`] and an [`Inbox`] joined by a link with loss, delay,
//! jitter (which reorders) and scheduled drops, a virtual clock, a store that persists in batches
//! (group commit), a consumer that takes its time, and a log of everything that happened.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use meshfed_proto::envelope::{EnvelopeId, Timestamp};

use crate::{
    Ack, Credit, DeadLetterReason, Delivery, Epoch, Forward, Inbox, InboxConfig, InboxEvent,
    Message, OfferError, Offered, Outbox, OutboxConfig, OutboxEvent, Peer,
};

/// A small deterministic generator (SplitMix64): the same seed, the same run.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }

    /// Uniform in `0..=max`.
    pub(crate) fn upto(&mut self, max: Duration) -> Duration {
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.next_u64() % (ms + 1))
    }
}

/// How hostile the link and how slow the endpoints are.
#[derive(Debug, Clone)]
pub(crate) struct Knobs {
    /// Chance that any one frame, either way, is lost.
    pub(crate) loss: f64,
    /// One-way delay.
    pub(crate) delay: Duration,
    /// Extra delay, uniform up to this: frames overtake each other.
    pub(crate) jitter: Duration,
    /// How long the store takes to commit a batch.
    pub(crate) persist_delay: Duration,
    /// How long the consumer keeps a delivered message before it is done with it.
    pub(crate) consume_delay: Duration,
    /// Feed the receiver's acknowledgement state to the sender when a link comes up (the
    /// resumption exchange).
    pub(crate) resume_with_ack_state: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            loss: 0.0,
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            persist_delay: Duration::from_millis(1),
            consume_delay: Duration::ZERO,
            resume_with_ack_state: true,
        }
    }
}

/// What the sender sends.
#[derive(Debug)]
enum Forth {
    Transmit(Transmit),
    Forward(Forward),
}

/// What the receiver sends back.
#[derive(Debug)]
enum Back {
    Ack(Ack),
    Credit(Credit),
}

/// Scheduled changes of the link or the sender.
#[derive(Debug, Clone, Copy)]
enum Change {
    LinkDown,
    LinkUp,
    /// The sender crashes and restarts from its store with a new epoch (link down meanwhile).
    SenderRestart,
}

/// Everything that happened, for the checks.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// Every message offered, by its number.
    pub(crate) offered: BTreeMap<u64, Message<u64>>,
    /// Refused offers.
    pub(crate) refused: Vec<(u64, OfferError)>,
    /// Reliable messages persisted (accepted), and qos 0 messages queued.
    pub(crate) accepted: BTreeSet<u64>,
    /// Deliveries at the receiver, in order, with their time.
    pub(crate) delivered: Vec<(Timestamp, Delivery<u64>)>,
    /// Messages the sender saw acknowledged.
    pub(crate) acknowledged: BTreeSet<u64>,
    /// Messages the sender dead-lettered.
    pub(crate) dead: BTreeMap<u64, DeadLetterReason>,
    /// Message numbers in order of first transmission.
    pub(crate) first_sent: Vec<u64>,
    /// Frames put on the link (both ways).
    pub(crate) frames: u64,
    /// Largest in-flight count seen at the sender.
    pub(crate) max_in_flight: usize,
    /// Largest held + unconsumed count seen at the receiver.
    pub(crate) max_occupancy: usize,
    /// Largest number of messages sent for the first time and not yet freed at the receiver
    /// (on the way, held, or delivered and unconsumed).
    pub(crate) max_outstanding: u64,
    /// Largest sequence number sent beyond the credit the sender knew, if any.
    pub(crate) beyond_credit: u64,
    /// Gap events at the receiver.
    pub(crate) gaps_skipped: u64,
    /// Floors sent on their own.
    pub(crate) forwards: u64,
}

impl Log {
    /// How often message `n` was delivered.
    pub(crate) fn deliveries_of(&self, n: u64) -> usize {
        self.delivered
            .iter()
            .filter(|(_, d)| d.message.payload == n)
            .count()
    }
}

/// The envelope id of message `n`.
pub(crate) fn id(n: u64) -> EnvelopeId {
    let mut random = [0u8; 10];
    random[2..].copy_from_slice(&n.to_be_bytes());
    EnvelopeId::new(Timestamp(0), random)
}

/// Two endpoints and the link between them.
pub(crate) struct Pair {
    pub(crate) now: Timestamp,
    rng: Rng,
    pub(crate) knobs: Knobs,
    outbox_config: OutboxConfig,
    pub(crate) outbox: Outbox<u64>,
    pub(crate) inbox: Inbox<u64>,
    pub(crate) peer: Peer,
    link_up: bool,
    frame_no: u64,
    to_inbox: BTreeMap<(Timestamp, u64), Forth>,
    to_outbox: BTreeMap<(Timestamp, u64), Back>,
    /// Persist requests not yet handed to the store.
    unbatched: Vec<EnvelopeId>,
    /// Batches being committed, by completion time.
    committing: BTreeMap<Timestamp, Vec<EnvelopeId>>,
    /// Reliable messages stored and not yet finished (what a restart recovers).
    store: BTreeMap<u64, Message<u64>>,
    consuming: BTreeMap<(Timestamp, u64), EnvelopeId>,
    changes: BTreeMap<(Timestamp, u64), Change>,
    numbers: HashMap<EnvelopeId, u64>,
    window: u64,
    /// Sequence numbers used so far in the sender's current epoch.
    used: u64,
    pub(crate) log: Log,
}

type Transmit = crate::Transmit<u64>;

impl Pair {
    pub(crate) fn new(seed: u64, knobs: Knobs, outbox: OutboxConfig, inbox: InboxConfig) -> Self {
        Self {
            now: Timestamp(0),
            rng: Rng::new(seed),
            knobs,
            outbox: Outbox::new(outbox.clone(), Epoch(1)),
            outbox_config: outbox,
            inbox: Inbox::new(inbox.clone()),
            peer: Peer {
                mesh: "plant-a".parse().expect("valid mesh id"),
                node: "gw-1".parse().expect("valid node name"),
            },
            link_up: true,
            frame_no: 0,
            to_inbox: BTreeMap::new(),
            to_outbox: BTreeMap::new(),
            unbatched: Vec::new(),
            committing: BTreeMap::new(),
            store: BTreeMap::new(),
            consuming: BTreeMap::new(),
            changes: BTreeMap::new(),
            numbers: HashMap::new(),
            window: inbox.window,
            used: 0,
            log: Log::default(),
        }
    }

    /// A pair with default limits and window `window` on both sides.
    pub(crate) fn with_window(seed: u64, knobs: Knobs, window: u64) -> Self {
        Self::new(
            seed,
            knobs,
            OutboxConfig {
                initial_credit: window,
                ..OutboxConfig::default()
            },
            InboxConfig {
                window,
                ..InboxConfig::default()
            },
        )
    }

    /// Offers message `m` (its payload is its number) now.
    pub(crate) fn offer(&mut self, m: Message<u64>) -> Result<Offered, OfferError> {
        let n = m.payload;
        self.numbers.insert(m.id, n);
        self.log.offered.insert(n, m.clone());
        let result = self.outbox.offer(m, self.now);
        match &result {
            Ok(Offered::Queued) => {
                self.log.accepted.insert(n);
            }
            Ok(Offered::AwaitingPersistence) => {}
            Ok(Offered::Shed) => {
                self.log.dead.insert(n, DeadLetterReason::Shed);
            }
            Err(e) => self.log.refused.push((n, e.clone())),
        }
        self.drive();
        result
    }

    /// The link drops at `at` and comes back `down_for` later.
    pub(crate) fn drop_link(&mut self, at: Timestamp, down_for: Duration) {
        self.schedule(at, Change::LinkDown);
        self.schedule(at.saturating_add(down_for), Change::LinkUp);
    }

    /// The sender crashes at `at` and is back, with its link, `down_for` later.
    pub(crate) fn restart_sender(&mut self, at: Timestamp, down_for: Duration) {
        self.schedule(at, Change::SenderRestart);
        self.schedule(at.saturating_add(down_for), Change::LinkUp);
    }

    fn schedule(&mut self, at: Timestamp, change: Change) {
        self.frame_no += 1;
        self.changes.insert((at, self.frame_no), change);
    }

    /// Runs until virtual time `until`.
    pub(crate) fn run_until(&mut self, until: Timestamp) {
        while self.next_time().is_some_and(|t| t <= until) {
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs until the sender holds nothing and nothing is on its way to the receiver; false if
    /// that has not happened by `limit` (or nothing is left to happen: a deadlock).
    pub(crate) fn run_to_completion(&mut self, limit: Timestamp) -> bool {
        loop {
            if self.is_complete() {
                return true;
            }
            match self.next_time() {
                Some(t) if t <= limit => self.step(),
                _ => return false,
            }
        }
    }

    fn is_complete(&self) -> bool {
        self.outbox.is_empty()
            && self.unbatched.is_empty()
            && self.committing.is_empty()
            && self.to_inbox.is_empty()
            && !self
                .changes
                .values()
                .any(|c| matches!(c, Change::SenderRestart))
    }

    fn next_time(&self) -> Option<Timestamp> {
        [
            self.to_inbox.keys().next().map(|k| k.0),
            self.to_outbox.keys().next().map(|k| k.0),
            self.committing.keys().next().copied(),
            self.consuming.keys().next().map(|k| k.0),
            self.changes.keys().next().map(|k| k.0),
            self.outbox.poll_timeout(),
            self.inbox.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Advances to the next instant something happens, and handles everything due then.
    fn step(&mut self) {
        let Some(next) = self.next_time() else {
            return;
        };
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(entry) = self.changes.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let change = entry.remove();
            self.apply(change);
        }
        while let Some(entry) = self.to_inbox.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let result = match entry.remove() {
                Forth::Transmit(t) => self.inbox.handle_transmit(&self.peer, t, now),
                Forth::Forward(f) => self.inbox.handle_forward(&self.peer, f, now),
            };
            if let Err(e) = result {
                // Frames of a replaced stream may still be on the way after a restart.
                assert!(matches!(e, crate::InboxError::StaleEpoch { .. }), "{e}");
            }
        }
        while let Some(entry) = self.to_outbox.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Back::Ack(ack) => {
                    if let Err(e) = self.outbox.handle_ack(&ack, now) {
                        panic!("sender refused an acknowledgement: {e}");
                    }
                }
                Back::Credit(c) => self.outbox.handle_credit(c),
            }
        }
        while let Some(entry) = self.committing.first_entry() {
            if *entry.key() > now {
                break;
            }
            let ids = entry.remove();
            for id in &ids {
                if let Some(&n) = self.numbers.get(id)
                    && let Some(m) = self.log.offered.get(&n)
                {
                    self.store.insert(n, m.clone());
                    self.log.accepted.insert(n);
                }
            }
            self.outbox.handle_persisted(ids);
        }
        let mut consumed = Vec::new();
        while let Some(entry) = self.consuming.first_entry() {
            if entry.key().0 > now {
                break;
            }
            consumed.push(entry.remove());
        }
        self.inbox.handle_consumed(consumed);
        self.outbox.handle_timeout(now);
        self.inbox.handle_timeout(now);
        self.drive();
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::LinkDown => self.link_down(),
            Change::SenderRestart => {
                self.link_down();
                self.unbatched.clear();
                self.committing.clear();
                self.used = 0;
                let epoch = Epoch(self.outbox.epoch().0 + 1);
                self.outbox = Outbox::new(self.outbox_config.clone(), epoch);
                self.outbox.handle_link_down();
                for m in self.store.values() {
                    if let Err(e) = self.outbox.restore(m.clone(), self.now) {
                        panic!("restoring {}: {e}", m.payload);
                    }
                }
            }
            Change::LinkUp => {
                self.link_up = true;
                self.outbox.handle_link_up();
                self.inbox.handle_link_up(&self.peer);
                if self.knobs.resume_with_ack_state
                    && let Some(ack) = self.inbox.ack_state(&self.peer)
                {
                    // The resumption exchange is reliable (it is part of the handshake).
                    if let Err(e) = self.outbox.handle_ack(&ack, self.now) {
                        panic!("sender refused the resumption acknowledgement: {e}");
                    }
                }
            }
        }
    }

    fn link_down(&mut self) {
        self.link_up = false;
        self.to_inbox.clear();
        self.to_outbox.clear();
        self.outbox.handle_link_down();
        self.inbox.handle_link_down(&self.peer);
    }

    /// Lets both endpoints act on everything they have, at the current instant.
    fn drive(&mut self) {
        let now = self.now;
        loop {
            let mut progress = false;
            while let Some(ev) = self.outbox.poll_event() {
                progress = true;
                self.on_outbox_event(ev);
            }
            if !self.unbatched.is_empty() {
                let at = now.saturating_add(self.knobs.persist_delay);
                let batch = std::mem::take(&mut self.unbatched);
                self.committing.entry(at).or_default().extend(batch);
            }
            while self.link_up
                && let Some(t) = self.outbox.poll_transmit(now)
            {
                progress = true;
                if !t.retransmission {
                    self.log.first_sent.push(t.message.payload);
                    self.used = self.used.max(t.seq.0 + 1);
                }
                let credit = self.outbox.credit().limit;
                if !t.retransmission && t.seq >= credit {
                    self.log.beyond_credit = self.log.beyond_credit.max(t.seq.0);
                }
                if let Some(at) = self.arrival() {
                    self.to_inbox
                        .insert((at, self.frame_no), Forth::Transmit(t));
                }
            }
            while self.link_up
                && let Some(f) = self.outbox.poll_forward()
            {
                progress = true;
                self.log.forwards += 1;
                if let Some(at) = self.arrival() {
                    self.to_inbox.insert((at, self.frame_no), Forth::Forward(f));
                }
            }
            let in_flight = self.outbox.backlog(now).in_flight;
            self.log.max_in_flight = self.log.max_in_flight.max(in_flight);
            while let Some(ev) = self.inbox.poll_event() {
                progress = true;
                self.on_inbox_event(ev);
            }
            if let Some(o) = self.inbox.occupancy(&self.peer)
                && o.credit.epoch == self.outbox.epoch()
            {
                self.log.max_occupancy = self.log.max_occupancy.max(o.held + o.unconsumed);
                let freed = o.credit.limit.0 - self.window;
                let outstanding = self.used.saturating_sub(freed);
                self.log.max_outstanding = self.log.max_outstanding.max(outstanding);
            }
            while let Some((_, ack)) = self.inbox.poll_ack() {
                progress = true;
                if let Some(at) = self.arrival() {
                    self.to_outbox.insert((at, self.frame_no), Back::Ack(ack));
                }
            }
            while let Some((_, credit)) = self.inbox.poll_credit() {
                progress = true;
                if let Some(at) = self.arrival() {
                    self.to_outbox
                        .insert((at, self.frame_no), Back::Credit(credit));
                }
            }
            if !progress {
                break;
            }
        }
    }

    /// When a frame put on the link now arrives, or `None` if it is lost.
    fn arrival(&mut self) -> Option<Timestamp> {
        self.frame_no += 1;
        self.log.frames += 1;
        if self.rng.chance(self.knobs.loss) {
            return None;
        }
        let jitter = self.rng.upto(self.knobs.jitter);
        Some(self.now.saturating_add(self.knobs.delay + jitter))
    }

    fn on_outbox_event(&mut self, ev: OutboxEvent<u64>) {
        match ev {
            OutboxEvent::Persist(m) => self.unbatched.push(m.id),
            OutboxEvent::Acknowledged { id } => {
                let n = self.number(id);
                self.store.remove(&n);
                self.log.acknowledged.insert(n);
            }
            OutboxEvent::DeadLettered { id, reason } => {
                let n = self.number(id);
                self.store.remove(&n);
                self.log.dead.insert(n, reason);
            }
        }
    }

    fn on_inbox_event(&mut self, ev: InboxEvent<u64>) {
        match ev {
            InboxEvent::Deliver(d) => {
                self.frame_no += 1;
                let at = self.now.saturating_add(self.knobs.consume_delay);
                self.consuming.insert((at, self.frame_no), d.message.id);
                self.log.delivered.push((self.now, d));
            }
            InboxEvent::GapSkipped { .. } => self.log.gaps_skipped += 1,
            InboxEvent::RememberDelivered { .. }
            | InboxEvent::Forget { .. }
            | InboxEvent::GapDetected { .. }
            | InboxEvent::Discarded { .. } => {}
        }
    }

    fn number(&self, id: EnvelopeId) -> u64 {
        match self.numbers.get(&id) {
            Some(&n) => n,
            None => panic!("event for unknown message {id}"),
        }
    }
}
