//! The sending side of one federation: a task that owns the [`Outbox`] of the stream to the
//! peer mesh, has reliable messages journaled (group commit) before their senders hear "accepted",
//! sends what the outbox schedules in transfer frames (sealed under the current link session's
//! content key, signed as one batch or each alone), and settles messages as the peer
//! acknowledges them or their deadlines pass.
//!
//! With batch signatures and a non-zero `sign_window` (the default), transfers carry the
//! members of a *streamed* batch (DESIGN §3.4): they leave as soon as they are scheduled, and
//! the batch closes at `max_batch` envelopes or `sign_window` after its first one; its root is
//! then signed on a blocking thread by the stream's signer task, which sends the batch head on
//! the same link. Batches are numbered from 0 on each link session, one open at a time, and
//! signed in order, so heads follow their envelopes in order. A link that goes mid-batch takes
//! the batch with it: its envelopes are unacknowledged and go again on the next link.
//!
//! The outbox lives as long as the federation, not the link: while the peer is unreachable,
//! messages queue (store-and-forward, within the configured limits); on a new link the peer's
//! acknowledgement state comes first and only what it lacks is sent again, by priority.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshfed_proto::admission::{Direction, Refusal, Terms};
use meshfed_proto::batch::{Leaves, SignedBatch, UnsignedEnvelope};
use meshfed_proto::envelope::{EnvelopeId, Hop, Qos, Timestamp};
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::{FederationId, FederationState, MeshId, Termination, TopicPattern};
use meshfed_queue::wire::{Item, Signed, Transfer};
use meshfed_queue::{
    Ack, Credit, DeadLetterReason, Epoch, Message, OfferError, Outbox, OutboxConfig, OutboxEvent,
    RtoConfig, Transmit,
};
use meshfed_store::journal::{DeadLetter, OrderScope, OutboundMessage, StoredOutbound};
use meshfed_store::{FederationRecord, Write};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use super::context::Context;
use super::cores::on_every_core;
use super::pending::{Pending, decode_stored};
use super::port::LinkPort;
use super::room::Room;
use crate::audit::CrossedMessage;
use crate::config::SignatureMode;
use crate::metrics;
use meshfed_proto::policy::AuditLevel;

/// Offers waiting for the stream task before senders wait. Small: what waits here is held in
/// memory beside the queue (qos 0 offers reserve no room), and a turn of the task takes them
/// all anyway.
const OFFER_QUEUE: usize = 1024;
/// Offers taken in one turn of the task, so that their persistence shares one commit.
const OFFERS_PER_TURN: usize = 4096;
/// Credit a new stream may use before the receiver grants any: every receiver's window is at
/// least this (the configuration refuses smaller windows).
pub(crate) const INITIAL_CREDIT: u64 = 256;
/// Room left in a transfer frame for everything but the envelopes' payloads.
const PER_ENVELOPE_OVERHEAD: usize = 1536;
/// How long a graceful termination lets the stream deliver what it holds before the rest is
/// dead-lettered.
const DRAIN: Duration = Duration::from_secs(10);
/// How the sender is told what became of a message it waits for.
pub(crate) type Outcome = Result<(), DeadLetterReason>;

/// What the API sees of a federation's stream: the agreement to check sends against, and the
/// way in.
pub(crate) struct Stream {
    pub(crate) federation_id: FederationId,
    pub(crate) peer: MeshId,
    pub(crate) view: Mutex<View>,
    /// The link session the stream sends on, if any.
    link: Mutex<Option<Arc<LinkPort>>>,
    offers: mpsc::Sender<Offer>,
    control: mpsc::UnboundedSender<Control>,
    pub(crate) stats: Mutex<Stats>,
    /// Room for reliable messages, taken before they are offered (see [`super::room`]).
    pub(crate) room: Room,
    /// qos 0 messages not sent because the peer has no subscriber for their topic (see
    /// [`super::interest`]), and their series of the node's metrics.
    unwanted: (AtomicU64, Counter),
    /// What a broker's custody holds of this stream's messages, while a relayed peer is away.
    custody: Mutex<InCustody>,
}

/// What a broker's custody holds of a stream's messages (see `links/custody.rs`).
#[derive(Debug, Clone, Default)]
pub(crate) struct InCustody {
    /// Messages a broker took and the peer has not acknowledged yet.
    pub(crate) held: u64,
    /// Messages the broker refused into custody (they stay here and go again).
    pub(crate) refused: u64,
    /// The broker's last refusal.
    pub(crate) last_refusal: Option<String>,
}

/// The federation as sends are checked against it.
#[derive(Clone)]
pub(crate) struct View {
    pub(crate) state: FederationState,
    pub(crate) terms: Terms,
    /// The agreed rate of sends to the peer, if the agreement sets one.
    rate: Option<Arc<Rate>>,
    /// The agreed rates per topic pattern.
    topic_rates: Arc<[Arc<Rate>]>,
}

impl View {
    fn of(record: &FederationRecord) -> Option<Self> {
        let signed = meshfed_proto::agreement::SignedAgreement::decode(&record.agreement).ok()?;
        let agreement = signed.agreement().ok()?;
        let terms = Terms::of(&agreement, record.role.handshake_role());
        Some(Self {
            state: record.state,
            rate: terms.max_rate.map(|n| Rate::new(n, None)),
            topic_rates: (terms.topic_rates.iter())
                .map(|r| Rate::new(r.rate, Some(r.topics.clone())))
                .collect(),
            terms,
        })
    }

    /// Takes a message's token from each agreed rate its topic falls under, or refuses it.
    pub(crate) fn take(&self, topic: &meshfed_proto::Topic) -> Result<(), Refusal> {
        for rate in self.topic_rates.iter().filter(|r| r.covers(topic)) {
            rate.take()?;
        }
        match &self.rate {
            Some(rate) => rate.take(),
            None => Ok(()),
        }
    }
}

/// An agreed rate at egress — the federation's, or a topic pattern's: a token bucket (GCRA,
/// `governor`) holding a second's messages, refilled continuously.
pub(crate) struct Rate {
    per_second: u32,
    topics: Option<TopicPattern>,
    bucket: governor::DefaultDirectRateLimiter,
}

impl Rate {
    fn new(per_second: u32, topics: Option<TopicPattern>) -> Arc<Self> {
        let n = std::num::NonZeroU32::new(per_second).unwrap_or(std::num::NonZeroU32::MIN);
        Arc::new(Self {
            per_second,
            topics,
            bucket: governor::RateLimiter::direct(governor::Quota::per_second(n)),
        })
    }

    fn covers(&self, topic: &meshfed_proto::Topic) -> bool {
        self.topics.as_ref().is_none_or(|p| p.matches(topic))
    }

    /// Takes one message's token, or refuses it: over the agreed rate.
    fn take(&self) -> Result<(), Refusal> {
        self.bucket.check().map_err(|_| Refusal::RateLimited {
            rate: self.per_second,
            topics: self.topics.clone(),
        })
    }
}

/// What the stream reports for metrics and `federation show`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stats {
    pub(crate) backlog: meshfed_queue::Backlog,
    pub(crate) dead_lettered: HashMap<&'static str, u64>,
    pub(crate) sent: u64,
    pub(crate) retransmitted: u64,
    pub(crate) acknowledged: u64,
    pub(crate) transfers: u64,
    /// qos 0 messages not sent for want of interest (never in the outbox).
    pub(crate) unwanted: u64,
    /// The peer's interest on the current link: `None` without a link or before the peer's
    /// first `Interest` on it (then everything is sent).
    pub(crate) peer_interest: Option<meshfed_proto::interest::Interest>,
    /// What a broker's custody holds of this stream's messages.
    pub(crate) custody: InCustody,
}

impl Stats {
    pub(crate) fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered.values().sum()
    }
}

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The queue for the peer is at its limit (store-and-forward is bounded).
    #[error("the queue for {peer} is full ({source}); retry later")]
    Full {
        /// The peer mesh.
        peer: MeshId,
        /// The limit.
        source: OfferError,
    },
    /// The outbox refused it for another reason (a duplicate id, a passed deadline).
    #[error("{0}")]
    Offer(OfferError),
    /// It could not be journaled.
    #[error("the message could not be stored: {0}")]
    Store(String),
    /// The federation ended before the stream took it (it passed the API's check just before).
    #[error("the federation with {peer} is {state}; messages do not flow")]
    NotActive {
        /// The peer mesh.
        peer: MeshId,
        /// The federation's state.
        state: FederationState,
    },
    /// The gateway is stopping.
    #[error("the gateway is stopping")]
    Stopping,
}

struct Offer {
    message: Message<Arc<Pending>>,
    /// The stored form of a reliable message.
    stored: Option<Vec<u8>>,
    accepted: oneshot::Sender<Result<(), Refused>>,
    outcome: Option<oneshot::Sender<Outcome>>,
}

enum Control {
    Persisted(Vec<EnvelopeId>),
    PersistFailed(Vec<EnvelopeId>, String),
    LinkUp(Arc<LinkPort>),
    LinkDown(Arc<LinkPort>),
    Ack(Ack),
    Credit(Credit),
    State(FederationState),
    /// Answered once a graceful termination's drain is over (at once if none runs).
    Drained(oneshot::Sender<()>),
    /// Answered with the reliable messages the peer has not acknowledged (for custody).
    Held(oneshot::Sender<Vec<Arc<Pending>>>),
}

impl Stream {
    /// Hands a message to the stream (waiting only while the stream's queue is full); the
    /// receiver answers once it is accepted (for qos ≥ 1: journaled). `outcome`, if given,
    /// learns whether the peer acknowledged it or it was dead-lettered.
    pub(crate) async fn submit(
        &self,
        pending: Arc<Pending>,
        stored: Option<Vec<u8>>,
        outcome: Option<oneshot::Sender<Outcome>>,
    ) -> Result<oneshot::Receiver<Result<(), Refused>>, Refused> {
        let size = pending.payload.len();
        let message = Message::from_header(&pending.header, size, pending.clone());
        let (accepted, answer) = oneshot::channel();
        self.offers
            .send(Offer {
                message,
                stored,
                accepted,
                outcome,
            })
            .await
            .map_err(|_| Refused::Stopping)?;
        Ok(answer)
    }

    /// A link session to the peer is up: the stream sends on it.
    pub(crate) fn link_up(&self, link: Arc<LinkPort>) {
        *self.link.lock().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
        let _ = self.control.send(Control::LinkUp(link));
    }

    /// A link session ended.
    pub(crate) fn link_down(&self, link: Arc<LinkPort>) {
        {
            let mut current = self.link.lock().unwrap_or_else(|e| e.into_inner());
            if current.as_ref().is_some_and(|l| Arc::ptr_eq(l, &link)) {
                *current = None;
            }
        }
        let _ = self.control.send(Control::LinkDown(link));
    }

    /// The reliable messages held for the peer and not acknowledged by it, in acceptance
    /// order: what a relayed federation hands a broker's custody while the peer is away.
    pub(crate) async fn reliable_held(&self) -> Vec<Arc<Pending>> {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Held(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Whether the peer wants a qos 0 message on `topic` (see [`super::interest`]): true without
    /// a link or before the peer said what it wants.
    pub(crate) fn wanted(&self, topic: &meshfed_proto::Topic) -> bool {
        let current = self.link.lock().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .is_none_or(|l| l.interest.peer_wants(topic))
    }

    /// Counts a qos 0 message not sent because the peer did not want it.
    pub(crate) fn count_unwanted(&self) {
        self.unwanted.0.fetch_add(1, Ordering::Relaxed);
        self.unwanted.1.inc();
    }

    /// A broker now holds `held` of this stream's messages; it refused one more, if `refused`.
    pub(crate) fn custody_changed(&self, held: usize, refused: Option<&str>) {
        let mut c = self.custody.lock().unwrap_or_else(|e| e.into_inner());
        c.held = held as u64;
        if let Some(why) = refused {
            c.refused += 1;
            c.last_refusal = Some(why.to_owned());
        }
    }

    /// Whether a link session to the peer is open now.
    pub(crate) fn has_link(&self) -> bool {
        let current = self.link.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().is_some_and(|l| !l.is_closed())
    }

    /// A frame the peer sent about this stream: an acknowledgement or a credit grant.
    pub(crate) fn peer_frame(&self, frame: &Frame) -> Result<(), String> {
        let control = match frame.ty {
            FrameType::Ack => Control::Ack(Ack::decode(&frame.body).map_err(|e| e.to_string())?),
            FrameType::Credit => {
                Control::Credit(Credit::decode(&frame.body).map_err(|e| e.to_string())?)
            }
            other => return Err(format!("{other:?} is not a stream frame")),
        };
        let _ = self.control.send(control);
        Ok(())
    }

    /// The federation's state changed (suspended, resumed, terminated).
    pub(crate) fn set_state(&self, state: FederationState) {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).state = state;
        let _ = self.control.send(Control::State(state));
    }

    /// The federation renegotiated: sends are admitted under `terms` from now on.
    pub(crate) fn set_terms(&self, terms: Terms) {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if terms.max_rate != view.terms.max_rate {
            view.rate = terms.max_rate.map(|n| Rate::new(n, None));
        }
        if terms.topic_rates != view.terms.topic_rates {
            view.topic_rates = (terms.topic_rates.iter())
                .map(|r| Rate::new(r.rate, Some(r.topics.clone())))
                .collect();
        }
        view.terms = terms;
    }

    /// Completes once the stream holds nothing more for a federation that ends gracefully:
    /// everything was acknowledged, or dead-lettered when the link went or the drain timed out.
    pub(crate) async fn drained(&self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Drained(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    pub(crate) fn view(&self) -> View {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        stats.unwanted = self.unwanted.0.load(Ordering::Relaxed);
        stats.custody = (self.custody.lock().unwrap_or_else(|e| e.into_inner())).clone();
        let current = self.link.lock().unwrap_or_else(|e| e.into_inner());
        stats.peer_interest = current
            .as_ref()
            .filter(|l| !l.is_closed())
            .and_then(|l| l.interest.peer());
        stats
    }
}

/// Starts the stream of federation `record`, restoring what the journal holds for its peer.
pub(crate) fn start(
    ctx: &Arc<Context>,
    record: &FederationRecord,
    restored: Vec<StoredOutbound>,
) -> Option<Arc<Stream>> {
    let view = View::of(record)?;
    let (offers, offer_rx) = mpsc::channel(OFFER_QUEUE);
    let (control, control_rx) = mpsc::unbounded_channel();
    let stream = Arc::new(Stream {
        federation_id: record.id.clone(),
        peer: record.peer_mesh.clone(),
        view: Mutex::new(view.clone()),
        link: Mutex::new(None),
        offers,
        control,
        stats: Mutex::new(Stats::default()),
        room: Room::new(
            ctx.config.delivery.max_queued_messages,
            ctx.config.delivery.max_queued_bytes,
        ),
        unwanted: (
            AtomicU64::new(0),
            ctx.metrics
                .unwanted
                .get_or_create(&metrics::peer(&record.peer_mesh))
                .clone(),
        ),
        custody: Mutex::new(InCustody::default()),
    });
    let d = &ctx.config.delivery;
    let config = OutboxConfig {
        max_messages: d.max_queued_messages,
        max_bytes: d.max_queued_bytes,
        max_in_flight: usize::try_from(d.window).unwrap_or(usize::MAX),
        initial_credit: INITIAL_CREDIT,
        // The link is TCP: a message is lost only with its link (then everything unacknowledged
        // goes again at once) or when the peer refuses it. So the timer only has to catch the
        // rare refusal, and must not fire while a busy peer works through its window.
        rto: RtoConfig {
            initial: Duration::from_secs(2),
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
        },
        // The sender hears "accepted" only after the commit either way; sending meanwhile
        // takes the fsync off the path and lets transfers fill up.
        send_before_persisted: true,
    };
    // A later stream of this node must have a larger epoch: microseconds since the Unix epoch.
    let epoch = Epoch(ctx.clock.micros());
    let mut outbox = Outbox::new(config, epoch);
    outbox.handle_link_down();
    let mut held = HashMap::new();
    let at = ctx.now();
    let mut restored = restored;
    restored.sort_by_key(|s| s.position);
    for s in restored {
        match decode_stored(&s.message.payload) {
            Ok(pending) => {
                let pending = Arc::new(pending);
                let id = pending.header.id;
                let message =
                    Message::from_header(&pending.header, pending.payload.len(), pending.clone());
                if outbox.restore(message, at).is_ok() {
                    held.insert(id, pending);
                }
            }
            Err(e) => {
                tracing::error!(peer = %record.peer_mesh, id = %s.message.id, error = %e, "a stored outbound message is unreadable; it stays in the store and is not sent");
            }
        }
    }
    if !held.is_empty() {
        tracing::info!(peer = %record.peer_mesh, messages = held.len(), "restored the outbound backlog");
    }
    let (signer, to_sign) = mpsc::unbounded_channel();
    ctx.tracker.spawn(sign_heads(ctx.audit.clone(), to_sign));
    let mut task = Task {
        ctx: ctx.clone(),
        stream: stream.clone(),
        outbox,
        view,
        link: None,
        held,
        to_store: HashMap::new(),
        accepting: HashMap::new(),
        waiting: HashMap::new(),
        stats: Stats::default(),
        counters: Counters::of(ctx, &record.peer_mesh),
        drain_until: None,
        drained: Vec::new(),
        streamed: Streamed::default(),
        signer,
        breaker: ctx.guard.view(&record.peer_mesh),
    };
    if let FederationState::Terminated(_) = task.view.state {
        // Restored for a federation that has ended: dead-lettered on the task's first turn.
        task.end();
    }
    ctx.tracker.spawn(task.run(offer_rx, control_rx));
    Some(stream)
}

/// The series of the node's metrics a stream counts into.
struct Counters {
    sent: Counter,
    retransmitted: Counter,
    acknowledged: Counter,
    /// `dead_lettered{reason="shed"}`: counted as offers come, so looked up once.
    shed: Counter,
}

impl Counters {
    fn of(ctx: &Context, peer: &MeshId) -> Self {
        let m = &ctx.metrics;
        let label = metrics::peer(peer);
        Self {
            sent: m.sent.get_or_create(&label).clone(),
            retransmitted: m.retransmitted.get_or_create(&label).clone(),
            acknowledged: m.acknowledged.get_or_create(&label).clone(),
            shed: m
                .dead_lettered
                .get_or_create(&metrics::PeerReasonLabels {
                    peer: peer.to_string(),
                    reason: reason_label(DeadLetterReason::Shed),
                })
                .clone(),
        }
    }
}

/// The stream task's state.
struct Task {
    ctx: Arc<Context>,
    stream: Arc<Stream>,
    outbox: Outbox<Arc<Pending>>,
    view: View,
    link: Option<Arc<LinkPort>>,
    /// Every message the outbox holds.
    held: HashMap<EnvelopeId, Arc<Pending>>,
    /// Stored forms waiting for the outbox's persist event.
    to_store: HashMap<EnvelopeId, Vec<u8>>,
    /// Senders waiting for acceptance (persistence).
    accepting: HashMap<EnvelopeId, oneshot::Sender<Result<(), Refused>>>,
    /// Senders waiting for the outcome.
    waiting: HashMap<EnvelopeId, oneshot::Sender<Outcome>>,
    stats: Stats,
    /// This peer's series of the node's metrics, looked up once.
    counters: Counters,
    /// A graceful termination delivers what is held until then (DESIGN §3.3).
    drain_until: Option<Timestamp>,
    /// Waiting for the drain to end.
    drained: Vec<oneshot::Sender<()>>,
    /// The streamed batch open on the current link, and the next batch's number on it.
    streamed: Streamed,
    /// Signs closed streamed batches in order and sends their heads.
    signer: mpsc::UnboundedSender<Closed>,
    /// The peer's circuit breaker: nothing is sent while it holds (see `guard.rs`).
    breaker: Arc<super::guarded::BreakerView>,
}

/// The sender's streamed batches on one link session.
#[derive(Default)]
struct Streamed {
    /// The batch open now.
    open: Option<OpenBatch>,
    /// The number of the next batch.
    next: u64,
}

/// A streamed batch some of whose envelopes were sent.
struct OpenBatch {
    leaves: Leaves,
    /// Its envelopes' digest records, when the agreement's audit level is `full`: completed
    /// with the batch's root and signature once it is signed.
    sent: Vec<CrossedMessage>,
    /// When it closes at the latest (`sign_window` after its first envelope).
    close_at: Instant,
    /// The key of the certificate its envelopes name.
    key: Arc<meshfed_proto::crypto::SigningKey>,
}

/// A closed streamed batch, to be signed and its head sent on `link`.
struct Closed {
    link: Arc<LinkPort>,
    leaves: Leaves,
    sent: Vec<CrossedMessage>,
    key: Arc<meshfed_proto::crypto::SigningKey>,
}

/// Signs each closed batch off the stream task, in order, and sends its head on its link.
async fn sign_heads(audit: crate::audit::Audit, mut closed: mpsc::UnboundedReceiver<Closed>) {
    while let Some(Closed {
        link,
        leaves,
        sent,
        key,
    }) = closed.recv().await
    {
        let number = leaves.number();
        let peer = link.peer.mesh.clone();
        let signed = tokio::task::spawn_blocking(move || {
            let head = leaves.sign(&key)?;
            let sent = crate::audit::signed_batch(&peer, sent, leaves.leaf_hashes(), &head);
            Ok::<_, meshfed_proto::batch::BatchError>((sent, head))
        })
        .await;
        match signed {
            Ok(Ok((sent, head))) => {
                audit.crossed(&link.federation_id, sent);
                // A link gone meanwhile takes the batch with it: its envelopes go again.
                let _ = link
                    .send(Frame::new(FrameType::BatchHead, head.encode()))
                    .await;
            }
            Ok(Err(e)) => {
                tracing::error!(peer = %link.peer, batch = number, error = %e, "could not sign a streamed batch; closing the link");
                link.close();
            }
            Err(e) => {
                tracing::error!(peer = %link.peer, batch = number, error = %e, "the batch signer failed; closing the link");
                link.close();
            }
        }
    }
}

impl Task {
    async fn run(
        mut self,
        mut offers: mpsc::Receiver<Offer>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        let cancel = self.ctx.cancel.clone();
        let clock = self.ctx.clock.clone();
        let mut breaker = self.breaker.subscribe();
        loop {
            self.check_drain();
            self.settle_events();
            self.transmit().await;
            self.close_batch_if_due();
            self.publish_stats();
            let wake = match (self.outbox.poll_timeout(), self.drain_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let close_batch = self.streamed.open.as_ref().map(|b| b.close_at);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                c = control.recv() => match c {
                    Some(c) => {
                        self.control(c);
                        while let Ok(c) = control.try_recv() {
                            self.control(c);
                        }
                    }
                    None => break,
                },
                o = offers.recv() => match o {
                    Some(o) => {
                        self.offer(o);
                        for _ in 1..OFFERS_PER_TURN {
                            let Ok(o) = offers.try_recv() else { break };
                            self.offer(o);
                        }
                    }
                    None => break,
                },
                () = clock.sleep_until_timestamp(wake) => self.outbox.handle_timeout(self.ctx.now()),
                () = sleep_until(&clock, close_batch) => self.close_batch_if_due(),
                Ok(()) = breaker.changed() => {}
            }
        }
    }

    /// Closes the open streamed batch once its window has passed.
    fn close_batch_if_due(&mut self) {
        if self
            .streamed
            .open
            .as_ref()
            .is_some_and(|b| self.ctx.clock.instant() >= b.close_at)
        {
            self.close_batch();
        }
    }

    /// Closes the open streamed batch: the signer signs it and sends its head.
    fn close_batch(&mut self) {
        let Some(OpenBatch {
            leaves, sent, key, ..
        }) = self.streamed.open.take()
        else {
            return;
        };
        let Some(link) = self.link.clone() else {
            return;
        };
        let _ = self.signer.send(Closed {
            link,
            leaves,
            sent,
            key,
        });
    }

    fn offer(&mut self, offer: Offer) {
        if let FederationState::Terminated(_) = self.view.state {
            // Nothing more is taken once it ended (and a drain must be able to finish).
            let _ = offer.accepted.send(Err(Refused::NotActive {
                peer: self.stream.peer.clone(),
                state: self.view.state,
            }));
            return;
        }
        let id = offer.message.id;
        let pending = offer.message.payload.clone();
        match self.outbox.offer(offer.message, self.ctx.now()) {
            Ok(meshfed_queue::Offered::Shed) => {
                // qos 0 at a full queue holding nothing it outranks: at most once allows it to
                // go now; counted like the qos 0 messages shed from the queue (DESIGN §3.5),
                // and not logged one by one (under overload it is every offer).
                *self
                    .stats
                    .dead_lettered
                    .entry(reason_label(DeadLetterReason::Shed))
                    .or_default() += 1;
                self.counters.shed.inc();
                tracing::debug!(peer = %self.stream.peer, %id, "queue full: qos 0 message shed");
                let _ = offer.accepted.send(Ok(()));
                if let Some(o) = offer.outcome {
                    let _ = o.send(Err(DeadLetterReason::Shed));
                }
            }
            Ok(offered) => {
                self.held.insert(id, pending);
                if let Some(o) = offer.outcome {
                    self.waiting.insert(id, o);
                }
                match (offered, offer.stored) {
                    (meshfed_queue::Offered::AwaitingPersistence, Some(stored)) => {
                        self.to_store.insert(id, stored);
                        self.accepting.insert(id, offer.accepted);
                    }
                    (meshfed_queue::Offered::AwaitingPersistence, None) => {
                        // Invariant kept by `send`: reliable messages come with their stored form.
                        self.outbox.handle_persist_failed([id]);
                        self.held.remove(&id);
                        let _ = offer.accepted.send(Err(Refused::Store(
                            "a reliable message arrived without its stored form".into(),
                        )));
                    }
                    // (`Shed` is answered above.)
                    (meshfed_queue::Offered::Queued | meshfed_queue::Offered::Shed, _) => {
                        let _ = offer.accepted.send(Ok(()));
                    }
                }
            }
            Err(e @ OfferError::Full { .. }) => {
                let _ = offer.accepted.send(Err(Refused::Full {
                    peer: self.stream.peer.clone(),
                    source: e,
                }));
            }
            Err(e) => {
                let _ = offer.accepted.send(Err(Refused::Offer(e)));
            }
        }
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::Persisted(ids) => {
                for id in &ids {
                    if let Some(tx) = self.accepting.remove(id) {
                        let _ = tx.send(Ok(()));
                    }
                }
                self.outbox.handle_persisted(ids);
            }
            Control::PersistFailed(ids, why) => {
                self.outbox.handle_persist_failed(ids.iter().copied());
                for id in &ids {
                    self.held.remove(id);
                    self.waiting.remove(id);
                    if let Some(tx) = self.accepting.remove(id) {
                        let _ = tx.send(Err(Refused::Store(why.clone())));
                    }
                }
            }
            Control::LinkUp(link) => {
                // A new session may come up before the old one's end is reported: what was in
                // flight on the old one goes again now, not after a retransmission timeout.
                if self.link.replace(link).is_some() {
                    self.outbox.handle_link_down();
                }
                // Streamed batches are numbered afresh on each link session.
                self.streamed = Streamed::default();
                self.outbox.handle_link_up();
            }
            Control::LinkDown(link) => {
                if self.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, &link)) {
                    self.link = None;
                    self.streamed = Streamed::default();
                    self.outbox.handle_link_down();
                }
            }
            Control::Ack(ack) => {
                if let Err(e) = self.outbox.handle_ack(&ack, self.ctx.now()) {
                    tracing::warn!(peer = %self.stream.peer, error = %e, "ignored an acknowledgement");
                }
            }
            Control::Credit(credit) => self.outbox.handle_credit(credit),
            Control::State(state) => {
                if self.view.state == state {
                    return;
                }
                self.view.state = state;
                match state {
                    // Forced termination revokes at once (DESIGN §3.3): what waits is
                    // dead-lettered, recorded and reported rather than kept.
                    FederationState::Terminated(Termination::Forced) => self.end(),
                    // Graceful termination first delivers what is held.
                    FederationState::Terminated(Termination::Graceful) => {
                        self.drain_until = Some(self.ctx.now().saturating_add(DRAIN));
                    }
                    _ => {}
                }
            }
            Control::Held(tx) => {
                let held = (self.outbox.reliable_held())
                    .map(|m| m.payload.clone())
                    .collect();
                let _ = tx.send(held);
            }
            Control::Drained(tx) => {
                if self.drain_until.is_some() {
                    self.drained.push(tx);
                } else {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Ends a graceful termination's drain once nothing is held, the link is gone or the time
    /// is up.
    fn check_drain(&mut self) {
        if let Some(until) = self.drain_until
            && (self.outbox.is_empty() || self.link.is_none() || self.ctx.now() >= until)
        {
            self.end();
        }
    }

    /// The federation ended: whatever is still held is dead-lettered (recorded by the next
    /// `settle_events`), and whoever waits for the drain is told.
    fn end(&mut self) {
        self.drain_until = None;
        self.outbox.handle_federation_ended();
        for tx in self.drained.drain(..) {
            let _ = tx.send(());
        }
    }

    /// Acts on the outbox's events: journal what must be persisted (one request for all), delete
    /// what is acknowledged (with the journal's next commit, not behind its queue) or
    /// dead-letter it, tell waiting senders.
    fn settle_events(&mut self) {
        let mut persist = Vec::new();
        let mut persist_ids = Vec::new();
        let mut settled = Vec::new();
        let mut acknowledged = Vec::new();
        // Told once the dead letters are recorded, so that what they are told is listed.
        let mut dead = Vec::new();
        // A qos 0 message sent is gone from the outbox without an event: what is held for it
        // goes too (kept, it was a leak of every qos 0 message sent).
        while let Some(id) = self.outbox.poll_released() {
            self.held.remove(&id);
        }
        while let Some(event) = self.outbox.poll_event() {
            match event {
                OutboxEvent::Persist(m) => {
                    let Some(stored) = self.to_store.remove(&m.id) else {
                        continue;
                    };
                    persist_ids.push(m.id);
                    persist.push(Write::AppendOutbound(OutboundMessage {
                        id: m.id,
                        destination: self.stream.peer.clone(),
                        priority: m.priority,
                        qos: m.qos,
                        deadline: m.deadline.map(meshfed_queue::Deadline::instant),
                        order: m.order.map(|k| OrderScope {
                            source: k.source,
                            destination: k.destination,
                            topic: k.topic,
                        }),
                        enqueued: self.ctx.now(),
                        payload: stored,
                    }));
                }
                OutboxEvent::Acknowledged { id } => {
                    self.stats.acknowledged += 1;
                    self.counters.acknowledged.inc();
                    // A reliable message has a stored copy, or its append was submitted (in an
                    // earlier turn, before it was sent); `acknowledge` finds it either way.
                    if self
                        .held
                        .remove(&id)
                        .is_some_and(|p| p.header.policy.qos != Qos::AtMostOnce)
                    {
                        acknowledged.push(id);
                    }
                    if let Some(tx) = self.waiting.remove(&id) {
                        let _ = tx.send(Ok(()));
                    }
                }
                OutboxEvent::DeadLettered { id, reason } => {
                    let pending = self.held.remove(&id);
                    *self
                        .stats
                        .dead_lettered
                        .entry(reason_label(reason))
                        .or_default() += 1;
                    self.ctx
                        .metrics
                        .dead_lettered
                        .get_or_create(&metrics::PeerReasonLabels {
                            peer: self.stream.peer.to_string(),
                            reason: reason_label(reason),
                        })
                        .inc();
                    tracing::warn!(peer = %self.stream.peer, %id, reason = %describe(reason), "message dead-lettered");
                    if let Some(p) = pending {
                        settled.push(Write::DeadLetter(DeadLetter {
                            id,
                            destination: self.stream.peer.clone(),
                            topic: p.header.metadata.topic.clone(),
                            priority: p.header.policy.priority,
                            qos: p.header.policy.qos,
                            reason: describe(reason),
                            at: self.ctx.now(),
                        }));
                    }
                    if let Some(tx) = self.waiting.remove(&id) {
                        dead.push((tx, reason));
                    }
                }
            }
        }
        let journal = &self.ctx.journal;
        if !persist.is_empty() {
            let control = self.stream.control.clone();
            journal.submit_then(persist, move |outcome| {
                let _ = control.send(match outcome {
                    Ok(()) => Control::Persisted(persist_ids),
                    Err(e) => Control::PersistFailed(persist_ids, e.to_string()),
                });
            });
        }
        journal.acknowledge(acknowledged);
        if !settled.is_empty() {
            let peer = self.stream.peer.clone();
            journal.submit_then(settled, move |outcome| {
                if let Err(e) = outcome {
                    // The messages stay stored and come back after a restart: sent again, never lost.
                    tracing::warn!(%peer, error = %e, "could not delete settled messages from the journal");
                }
                for (tx, reason) in dead {
                    let _ = tx.send(Err(reason));
                }
            });
        } else {
            for (tx, reason) in dead {
                let _ = tx.send(Err(reason));
            }
        }
    }

    /// Sends what the outbox schedules, in transfer frames, while the link is up and the
    /// federation active.
    async fn transmit(&mut self) {
        let Some(link) = self.link.clone() else {
            return;
        };
        let sending = self.view.state == FederationState::Active || self.drain_until.is_some();
        if !sending || link.is_closed() {
            return;
        }
        let max_batch = self.ctx.config.delivery.max_batch;
        loop {
            // A transfer is built and queued under one agreement: a renegotiation's switch
            // point falls between transfers (see `LinkPort::switch_gate`).
            let gate = link.switch_gate().await;
            let budget = (link.max_frame() as usize).saturating_sub(4096) * 3 / 4;
            let at = self.ctx.now();
            // A transfer stays within the open streamed batch's room.
            let room = max_batch
                - self
                    .streamed
                    .open
                    .as_ref()
                    .map_or(0, |b| b.leaves.len().min(max_batch - 1));
            let room = self.breaker.allowance(room);
            let mut batch = Vec::new();
            let mut bytes = 0;
            while batch.len() < room && (batch.is_empty() || bytes < budget) {
                let Some(t) = self.outbox.poll_transmit(at) else {
                    break;
                };
                bytes += t.message.size + PER_ENVELOPE_OVERHEAD;
                batch.push(t);
            }
            if batch.is_empty() {
                drop(gate);
                break;
            }
            self.breaker.took(batch.len());
            let batch = self.admitted(&link, batch);
            if batch.is_empty() {
                continue;
            }
            for t in &batch {
                if t.retransmission {
                    self.stats.retransmitted += 1;
                    self.counters.retransmitted.inc();
                } else {
                    self.stats.sent += 1;
                    self.counters.sent.inc();
                }
            }
            let frame = match self.transfer(&link, &batch).await {
                Ok(f) => f,
                Err(e) => {
                    // Sealing or signing failed (a content key at its volume limit): the link
                    // goes, and the next session brings fresh keys; the messages stay queued.
                    tracing::error!(peer = %self.stream.peer, error = %e, "could not seal a transfer; closing the link");
                    link.close();
                    return;
                }
            };
            self.stats.transfers += 1;
            if link.send(frame).await.is_err() {
                // The link went; its end arrives as `LinkDown`, and the outbox sends again then.
                return;
            }
            // A full streamed batch closes once its last envelopes are on their way, so its
            // head follows them.
            if self
                .streamed
                .open
                .as_ref()
                .is_some_and(|b| b.leaves.len() >= max_batch)
            {
                self.close_batch();
            }
            drop(gate);
        }
        if let Some(f) = self.outbox.poll_forward() {
            let _ = link.send(Frame::new(FrameType::Forward, f.encode())).await;
        }
    }

    /// The part of `batch` the agreement in force admits. Messages were checked when they were
    /// accepted; a renegotiation since may refuse some (a topic, size or qos no longer agreed):
    /// those are dead-lettered with the refusal logged and counted, never sent.
    fn admitted(
        &mut self,
        link: &LinkPort,
        batch: Vec<Transmit<Arc<Pending>>>,
    ) -> Vec<Transmit<Arc<Pending>>> {
        let terms = link.terms();
        let mut refused = Vec::new();
        let admitted = batch
            .into_iter()
            .filter(|t| {
                let header = &t.message.payload.header;
                let facts = meshfed_proto::admission::Facts::of(
                    header,
                    t.message.payload.payload.len(),
                );
                let Err(refusal) = terms.admit(Direction::Outbound, facts) else {
                    return true;
                };
                let peer = &self.stream.peer;
                self.ctx.metrics.refused_by(peer, Direction::Outbound, &refusal);
                crate::audit::refused(
                    &self.ctx.audit,
                    Some((&link.federation_id, terms.audit_level)),
                    Direction::Outbound,
                    Some(&self.stream.peer),
                    Some(t.message.id),
                    Some(header.metadata.topic.as_str()),
                    &refusal,
                );
                tracing::warn!(peer = %self.stream.peer, id = %t.message.id, version = terms.version, %refusal, "the agreement in force refuses a queued message; dead-lettering it");
                refused.push(t.message.id);
                false
            })
            .collect();
        if !refused.is_empty() {
            self.outbox.handle_refused(refused);
            self.settle_events();
        }
        admitted
    }

    /// Seals each message under the link session's key and signs them as configured: as members
    /// of the open streamed batch (signed once it closes), as one batch, or each alone on every
    /// core (one P-384 signature per message is most of what such a transfer costs).
    async fn transfer(
        &mut self,
        link: &LinkPort,
        batch: &[Transmit<Arc<Pending>>],
    ) -> Result<Frame, String> {
        let ctx = self.ctx.clone();
        let mut envelopes = Vec::with_capacity(batch.len());
        // One certificate for the whole transfer, even if it is renewed meanwhile: a batch
        // is verified with the certificate of its first envelope.
        let cert = ctx.id.cert();
        #[cfg(feature = "test-hooks")]
        let cert = ctx.id.misbehaving(cert);
        // The caller holds the switch gate: the version cannot change while this transfer is
        // built, and the certificate's announcement is queued before it.
        link.announce(&cert.signer)
            .await
            .map_err(|_| "the link closed".to_owned())?;
        let version = link.terms().version;
        {
            let now = ctx.clock.instant();
            let mut sealing = link.keys.sealing();
            for t in batch {
                if link
                    .keys
                    .rotate_if_due(&mut sealing, now)
                    .map_err(|e| e.to_string())?
                {
                    tracing::debug!(peer = %link.peer, key = %sealing.sealer.key_id(), "content key rotated");
                }
                let p = &t.message.payload;
                let hop = Hop::origin(ctx.id.mesh.clone(), Hop::DEFAULT_TTL);
                let mut header = p.header.clone();
                header.certificate.clone_from(&cert.signer);
                header.agreement_version = version;
                let sealed = UnsignedEnvelope::seal(header, hop, &p.payload, &mut sealing.sealer)
                    .map_err(|e| e.to_string())?;
                envelopes.push(sealed);
            }
        }
        let delivery = &ctx.config.delivery;
        let full_audit = link.terms().audit_level == AuditLevel::Full;
        // The configured mode, unless the agreement excludes it.
        let agreed = link.terms().signing_mode(match delivery.signatures {
            SignatureMode::Batch => meshfed_proto::policy::SignatureMode::Batch,
            SignatureMode::Message => meshfed_proto::policy::SignatureMode::PerMessage,
        });
        let mode = match agreed {
            meshfed_proto::policy::SignatureMode::Batch => SignatureMode::Batch,
            meshfed_proto::policy::SignatureMode::PerMessage => SignatureMode::Message,
        };
        let signed = match mode {
            SignatureMode::Batch if !delivery.sign_window.is_zero() => {
                self.streamed(envelopes, &cert)?
            }
            SignatureMode::Batch => {
                let signed = SignedBatch::sign(envelopes, &cert.key).map_err(|e| e.to_string())?;
                if full_audit {
                    let sent = (signed.envelopes().iter().zip(0u32..))
                        .map(|(e, i)| crate::audit::sent(e, i))
                        .collect();
                    let leaves: Vec<_> = signed
                        .envelopes()
                        .iter()
                        .map(UnsignedEnvelope::leaf_hash)
                        .collect();
                    let head = meshfed_proto::batch::BatchHead {
                        number: 0,
                        signature: signed.signature().clone(),
                    };
                    let sent = crate::audit::signed_batch(&link.peer.mesh, sent, &leaves, &head);
                    ctx.audit.crossed(&link.federation_id, sent);
                }
                Signed::Batch(signed.encode())
            }
            SignatureMode::Message => {
                let key = cert.key.clone();
                let signed =
                    on_every_core(envelopes, move |e| e.sign(&key).map_err(|e| e.to_string()))
                        .await?;
                if full_audit {
                    let sent = crate::audit::sent_alone(&link.peer.mesh, &signed);
                    ctx.audit.crossed(&link.federation_id, sent);
                }
                Signed::Each(signed.iter().map(|w| w.encode_on_link()).collect())
            }
        };
        // The lowest floor holds for every item (each floor is at most its item's seq).
        let floor = batch.iter().map(|t| t.floor).min().unwrap_or_default();
        let transfer = Transfer {
            epoch: self.outbox.epoch(),
            floor,
            items: batch
                .iter()
                .map(|t| Item {
                    seq: t.seq,
                    key_seq: t.key_seq,
                    retransmission: t.retransmission,
                })
                .collect(),
            envelopes: signed,
        };
        Ok(Frame::new(FrameType::Transfer, transfer.encode()))
    }

    /// Adds `envelopes` to the open streamed batch (opening one if none is, or if the node's
    /// certificate was renewed since: a batch names one certificate).
    fn streamed(
        &mut self,
        envelopes: Vec<UnsignedEnvelope>,
        cert: &crate::gateway::identity::NodeCert,
    ) -> Result<Signed, String> {
        let Some(head) = envelopes.first() else {
            return Err("a transfer without envelopes".to_owned());
        };
        if self
            .streamed
            .open
            .as_ref()
            .is_some_and(|b| !b.leaves.admits(head))
        {
            self.close_batch();
        }
        let window = self.ctx.config.delivery.sign_window;
        let now = self.ctx.clock.instant();
        let streamed = &mut self.streamed;
        let open = streamed.open.get_or_insert_with(|| {
            let number = streamed.next;
            streamed.next += 1;
            OpenBatch {
                leaves: Leaves::new(number, head),
                sent: Vec::new(),
                close_at: now + window,
                key: cert.key.clone(),
            }
        });
        let first = u32::try_from(open.leaves.len()).map_err(|e| e.to_string())?;
        let full = self
            .link
            .as_ref()
            .is_some_and(|l| l.terms().audit_level == AuditLevel::Full);
        for e in &envelopes {
            let index = open.leaves.push(e).map_err(|e| e.to_string())?;
            if full {
                open.sent.push(crate::audit::sent(e, index));
            }
        }
        Ok(Signed::Streamed {
            batch: open.leaves.number(),
            first,
            members: envelopes.iter().map(UnsignedEnvelope::encode).collect(),
        })
    }

    fn publish_stats(&mut self) {
        self.stats.backlog = self.outbox.backlog(self.ctx.now());
        let mut shared = self.stream.stats.lock().unwrap_or_else(|e| e.into_inner());
        shared.clone_from(&self.stats);
    }
}

async fn sleep_until(clock: &crate::clock::Clock, at: Option<Instant>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The metric label of a dead-letter reason.
pub(crate) fn reason_label(r: DeadLetterReason) -> &'static str {
    match r {
        DeadLetterReason::ExpiredInQueue => "expired_in_queue",
        DeadLetterReason::ExpiredUnacknowledged => "expired_unacknowledged",
        DeadLetterReason::ArrivedLate => "arrived_late",
        DeadLetterReason::Shed => "shed",
        DeadLetterReason::FederationEnded => "federation_ended",
        DeadLetterReason::RefusedByAgreement => "refused_by_agreement",
        DeadLetterReason::RefusedByPeer { .. } => "refused_by_peer",
    }
}

/// A dead-letter reason in words, the receiver's reason named where it gave one.
pub(crate) fn describe(r: DeadLetterReason) -> String {
    match r {
        DeadLetterReason::RefusedByPeer { reason } => format!(
            "{r} ({})",
            meshfed_proto::admission::Refusal::reason_of(reason)
                .unwrap_or("a reason this gateway does not know")
        ),
        r => r.to_string(),
    }
}
