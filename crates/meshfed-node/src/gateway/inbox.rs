//! The receiving side of this node: one task owning the [`Inbox`] of every peer stream.
//!
//! The opening stage (`open`) verifies and opens what arrives and hands the task
//! stream transmissions. The task lets the inbox decide what to deliver, in what order, and
//! what is a duplicate; journals what must survive a crash — the dedup entry of each qos-2
//! message, and each qos ≥ 1 message for every durable subscription it matches — in one group
//! commit, and only after that commit hands the messages on and acknowledges them to the
//! sender. So an acknowledged message is never lost, and a qos-2 message is never delivered
//! twice, whichever side crashes when.
//!
//! A commit that fails is handled like a crash of this side, without the process ending: the
//! inbox already counts that commit's messages settled, so no acknowledgement it gives can be
//! trusted any more. The task acknowledges nothing more, waits for the commits in flight, hands
//! on what they committed, then rebuilds the inbox from the journal and closes every link; each
//! peer re-dials and sends again what it has not had acknowledged.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use meshfed_proto::admission::{Direction, Refusal};
use meshfed_proto::envelope::{EnvelopeId, Qos};
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::relay::custody::CustodyAck;
use meshfed_queue::{Forward, Inbox, InboxConfig, InboxEvent, Message, Peer, Transmit};
use meshfed_store::Write;
use meshfed_store::journal::InboundMessage;
use tokio::sync::mpsc;

use meshfed_proto::FederationId;
use meshfed_proto::policy::AuditLevel;

use super::context::Context;
use super::local::{Delivery, Local};
use super::pace::Pacing;
use super::port::LinkPort;
use crate::audit::Crossed;
use crate::metrics;

/// Transfers waiting for the receiving task before link read loops wait (back-pressure).
const QUEUE: usize = 64;

/// A message received, verified and opened, as the inbox carries it.
#[derive(Debug)]
pub(crate) struct Arrived {
    pub(crate) delivery: Arc<Delivery>,
    /// Why it is not delivered although it verified (say, a topic outside the agreement). It is
    /// settled all the same, so that the sender stops sending it.
    pub(crate) refused: Option<Refusal>,
}

pub(crate) enum Input {
    Transmits {
        link: Arc<LinkPort>,
        transmits: Vec<Transmit<Arc<Arrived>>>,
    },
    Forward {
        link: Arc<LinkPort>,
        forward: Forward,
    },
    LinkUp(Arc<LinkPort>),
    LinkDown(Arc<LinkPort>),
    /// Envelopes a broker handed on from its custody over `link` (opened: see
    /// `open::custody`), each with the peer that sent it, and those refused before the inbox
    /// with why. The broker learns what was taken once it is journaled.
    Custody {
        link: Arc<LinkPort>,
        messages: Vec<(Peer, Message<Arc<Arrived>>)>,
        refused: Vec<(EnvelopeId, String)>,
    },
}

/// The way into the receiving task.
pub(crate) struct Inbound {
    input: mpsc::Sender<Input>,
    control: mpsc::UnboundedSender<Input>,
}

/// The task's ends of the [`Inbound`] channels.
pub(crate) struct Receivers {
    input: mpsc::Receiver<Input>,
    control: mpsc::UnboundedReceiver<Input>,
}

impl Inbound {
    /// The channels into a receiving task that [`start`] runs later.
    pub(crate) fn channel() -> (Self, Receivers) {
        let (input, input_rx) = mpsc::channel(QUEUE);
        let (control, control_rx) = mpsc::unbounded_channel();
        (
            Self { input, control },
            Receivers {
                input: input_rx,
                control: control_rx,
            },
        )
    }

    /// Hands the task transmissions; waits while it is behind (back-pressure on the link).
    pub(crate) async fn send(&self, input: Input) {
        let _ = self.input.send(input).await;
    }

    /// Tells the task about links; never waits.
    pub(crate) fn notify(&self, input: Input) {
        let _ = self.control.send(input);
    }
}

/// What is released together once its journal request (if any) is committed.
struct Release {
    ticket: Option<u64>,
    deliveries: Vec<Arc<Delivery>>,
    consumed: Vec<EnvelopeId>,
    acks: Vec<(Peer, meshfed_queue::Ack)>,
    /// Custody acknowledgements to the brokers that handed envelopes on.
    custody: Vec<(Arc<LinkPort>, CustodyAck)>,
    durable_writes: bool,
}

/// Messages delivered from a broker's custody (a relayed peer was away), remembered so that
/// the copy the origin sends again once its tunnel is back — it keeps every message until this
/// node acknowledges it end to end — is settled without being delivered twice. Bounded, and in
/// memory: after a restart, or beyond [`FromCustody::KEPT`], a qos 1 copy may be delivered
/// again (at least once); a qos 2 one never is (the dedup window).
#[derive(Default)]
struct FromCustody {
    /// Handed to the inbox from custody, not yet delivered.
    arriving: std::collections::HashSet<EnvelopeId>,
    delivered: std::collections::HashSet<EnvelopeId>,
    order: VecDeque<EnvelopeId>,
}

impl FromCustody {
    const KEPT: usize = 65_536;

    fn arriving(&mut self, id: EnvelopeId) {
        self.arriving.insert(id);
    }

    /// Whether a delivery of `id` goes ahead: the first from custody does (and is remembered),
    /// a copy of one delivered from custody does not.
    fn delivered(&mut self, id: EnvelopeId) -> bool {
        if self.arriving.remove(&id) {
            // A broker that did not see this node's acknowledgement hands it on again.
            if !self.delivered.insert(id) {
                return false;
            }
            self.order.push_back(id);
            if self.order.len() > Self::KEPT
                && let Some(old) = self.order.pop_front()
            {
                self.delivered.remove(&old);
            }
            return true;
        }
        self.delivered.is_empty() || !self.delivered.contains(&id)
    }
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts the receiving task, with the dedup window as the journal kept it.
pub(crate) fn start(ctx: &Arc<Context>, local: &Arc<Local>, rx: Receivers) {
    let task = Task {
        ctx: ctx.clone(),
        local: local.clone(),
        inbox: restored_inbox(ctx),
        links: HashMap::new(),
        pending: VecDeque::new(),
        custody: Vec::new(),
        from_custody: FromCustody::default(),
        next_ticket: 0,
        committed: None,
        starting_over: false,
        relay_queue: super::local::durable::relay_queue(),
        pacing: Pacing::default(),
    };
    ctx.tracker.spawn(task.run(rx));
}

/// An inbox with no streams and the dedup window the journal holds.
fn restored_inbox(ctx: &Context) -> Inbox<Arc<Arrived>> {
    let mut inbox = Inbox::new(InboxConfig {
        window: ctx.config.delivery.window,
        ..InboxConfig::default()
    });
    match ctx.journal.delivered_ids(ctx.now()) {
        Ok(ids) => {
            for d in ids {
                inbox.restore_delivered(d.id, d.until);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the dedup window: exactly-once messages could be delivered twice");
        }
    }
    inbox
}

struct Task {
    ctx: Arc<Context>,
    local: Arc<Local>,
    inbox: Inbox<Arc<Arrived>>,
    links: HashMap<Peer, Arc<LinkPort>>,
    pending: VecDeque<Release>,
    /// Custody acknowledgements for the next release.
    custody: Vec<(Arc<LinkPort>, CustodyAck)>,
    /// What came from a broker's custody, so that the origin's own copy is not delivered again.
    from_custody: FromCustody,
    next_ticket: u64,
    /// The last ticket whose commit completed.
    committed: Option<u64>,
    /// A commit failed: nothing is taken in or acknowledged until the commits in flight are done
    /// and the inbox is rebuilt from the journal.
    starting_over: bool,
    /// Where what this node relays is kept for the relay stage.
    relay_queue: meshfed_store::journal::SubscriptionName,
    /// The agreed rates at ingress: credit withheld from a peer over them.
    pacing: Pacing,
}

type Committed = (u64, Result<(), String>);

impl Task {
    async fn run(mut self, rx: Receivers) {
        let Receivers {
            mut input,
            mut control,
        } = rx;
        let (done_tx, mut done) = mpsc::unbounded_channel::<Committed>();
        let cancel = self.ctx.cancel.clone();
        let clock = self.ctx.clock.clone();
        loop {
            let wake = self.inbox.poll_timeout();
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some((ticket, outcome)) = done.recv() => {
                    if let Err(e) = outcome {
                        tracing::error!(error = %e, "journaling received messages failed: they are not acknowledged, and the receiving side starts over from the journal");
                        self.fail(ticket);
                    }
                    self.committed = Some(ticket);
                    self.release().await;
                    continue;
                }
                Some(c) = control.recv(), if !self.starting_over => self.input(c),
                i = input.recv(), if !self.starting_over => match i {
                    Some(i) => self.input(i),
                    None => break,
                },
                () = clock.sleep_until_timestamp(wake), if !self.starting_over => self.inbox.handle_timeout(self.ctx.now()),
                () = sleep_until(self.pacing.next()), if self.pacing.next().is_some() && !self.starting_over => {
                    let due = self.pacing.due();
                    if !due.is_empty() {
                        self.inbox.handle_consumed(due);
                    }
                }
            }
            self.collect(&done_tx);
            self.release().await;
        }
    }

    fn input(&mut self, input: Input) {
        let at = self.ctx.now();
        match input {
            Input::Transmits { link, transmits } => {
                let peer = link.peer.clone();
                self.links.insert(peer.clone(), link.clone());
                for t in transmits {
                    if let Err(e) = self.inbox.handle_transmit(&peer, t, at) {
                        self.ctx
                            .metrics
                            .refused(Direction::Inbound, &Refusal::Malformed(e.to_string()));
                        tracing::warn!(%peer, error = %e, "refused a transmission");
                    }
                }
            }
            Input::Forward { link, forward } => {
                let peer = link.peer.clone();
                if let Err(e) = self.inbox.handle_forward(&peer, forward, at) {
                    tracing::warn!(%peer, error = %e, "refused a forward");
                }
            }
            Input::LinkUp(link) => {
                let peer = link.peer.clone();
                self.links.insert(peer.clone(), link);
                self.inbox.handle_link_up(&peer);
            }
            Input::LinkDown(link) => {
                let peer = link.peer.clone();
                if self.links.get(&peer).is_some_and(|l| Arc::ptr_eq(l, &link)) {
                    self.links.remove(&peer);
                    self.inbox.handle_link_down(&peer);
                }
            }
            Input::Custody {
                link,
                messages,
                refused,
            } => {
                // A duplicate is taken too: it was delivered before.
                let taken = messages.iter().map(|(_, m)| m.id).collect();
                for (peer, message) in messages {
                    self.from_custody.arriving(message.id);
                    self.inbox.handle_custody(&peer, message, at);
                }
                self.custody.push((link, CustodyAck { taken, refused }));
            }
        }
    }

    /// Takes every event of the inbox and the acknowledgements they allow; journals what must
    /// be durable before either is released.
    fn collect(&mut self, done: &mpsc::UnboundedSender<Committed>) {
        if self.starting_over {
            return;
        }
        let mut writes = Vec::new();
        let mut deliveries = Vec::new();
        let mut consumed = Vec::new();
        let mut durable_writes = false;
        // By (link, batch): the federation and the envelopes that crossed together.
        let mut crossed: HashMap<(usize, usize), (FederationId, Crossed)> = HashMap::new();
        let at = self.ctx.now();
        let mut arrivals = self.ctx.metrics.arrivals(self.ctx.clock.wall());
        while let Some(event) = self.inbox.poll_event() {
            match event {
                InboxEvent::Deliver(d) => {
                    let arrived = d.message.payload;
                    let link = self.links.get(&d.peer);
                    let audit_on = link.map(|l| (l.federation_id.clone(), l.terms().audit_level));
                    let terms = link.map(|l| l.terms());
                    let topic = &arrived.delivery.topic;
                    match terms {
                        Some(terms) if !self.pacing.admit(&d.peer, &terms, d.message.id, topic) => {
                            self.ctx
                                .metrics
                                .ingress_paced
                                .get_or_create(&metrics::peer(&d.peer.mesh))
                                .inc();
                            tracing::debug!(peer = %d.peer, id = %d.message.id, "over the agreed rate: its credit is withheld");
                        }
                        _ => consumed.push(d.message.id),
                    }
                    if !self.from_custody.delivered(d.message.id) {
                        self.ctx.metrics.discarded.inc();
                        tracing::debug!(peer = %d.peer, id = %d.message.id, "did not deliver again what came from a broker's custody");
                        continue;
                    }
                    if let Some(refusal) = &arrived.refused {
                        self.ctx.guard.refused(&d.peer.mesh, topic);
                        self.ctx
                            .metrics
                            .refused_by(&d.peer.mesh, Direction::Inbound, refusal);
                        crate::audit::refused(
                            &self.ctx.audit,
                            audit_on.as_ref().map(|(f, level)| (f, *level)),
                            Direction::Inbound,
                            Some(&d.peer.mesh),
                            Some(d.message.id),
                            Some(topic.as_str()),
                            refusal,
                        );
                        tracing::warn!(peer = %d.peer, id = %d.message.id, reason = refusal.reason(), error = %refusal, "refused an envelope");
                        // The sender learns it was refused, not delivered (it dead-letters it).
                        if let Some(seq) = d.seq {
                            self.inbox.handle_refused(&d.peer, seq, refusal.number());
                        }
                        continue;
                    }
                    self.ctx
                        .guard
                        .delivered(&d.peer.mesh, topic, d.message.size);
                    if let (Some(l), Some(e)) = (link, arrived.delivery.envelope()) {
                        arrivals.observe(&l.terms(), topic, e.header.timestamp);
                    }
                    let delivery = arrived.delivery.clone();
                    if let Some((federation, AuditLevel::Full)) = &audit_on
                        && let Some(facts) = delivery.audit(d.message.size)
                    {
                        // One record per batch (per link for envelopes signed alone).
                        let key = (
                            link.map_or(0, |l| Arc::as_ptr(l) as usize),
                            facts.batch.as_ref().map_or(0, |b| Arc::as_ptr(b) as usize),
                        );
                        let (_, group) = crossed.entry(key).or_insert_with(|| {
                            let group = Crossed {
                                direction: meshfed_audit::record::Delivery::Received,
                                peer: d.peer.mesh.clone(),
                                batch: facts.batch.as_deref().map(crate::audit::received_batch),
                                messages: Vec::new(),
                                intermediates: link.map(|l| l.trust.intermediates().into()),
                            };
                            (federation.clone(), group)
                        });
                        group.messages.push(facts.message);
                    }
                    if let Some(record) = delivery.relay_record() {
                        // Relayed, not delivered here: kept for the relay stage, and
                        // acknowledged once that is committed.
                        durable_writes = true;
                        writes.push(Write::AppendInbound(InboundMessage {
                            subscription: self.relay_queue.clone(),
                            id: d.message.id,
                            received: at,
                            source: Some(d.peer.mesh.clone()),
                            payload: record,
                        }));
                        continue;
                    }
                    if delivery.qos != Qos::AtMostOnce {
                        for (name, form) in self.local.durable.matching(&delivery) {
                            durable_writes = true;
                            writes.push(Write::AppendInbound(InboundMessage {
                                subscription: name,
                                id: d.message.id,
                                received: at,
                                source: Some(d.peer.mesh.clone()),
                                payload: delivery.text_in(form).as_bytes().to_vec(),
                            }));
                        }
                    }
                    deliveries.push(delivery);
                }
                InboxEvent::RememberDelivered { id, until } => {
                    writes.push(Write::RememberDelivered(
                        meshfed_store::journal::DeliveredId { id, until },
                    ));
                }
                InboxEvent::Forget { ids } => writes.push(Write::ForgetDelivered(ids)),
                InboxEvent::GapDetected {
                    peer, key, missing, ..
                } => {
                    tracing::warn!(%peer, %key, from = missing.start.0, to = missing.end.0, "ordered messages held back behind a gap");
                }
                InboxEvent::GapSkipped { peer, key, missing } => {
                    tracing::info!(%peer, %key, from = missing.start.0, to = missing.end.0, "passed over a gap the sender can no longer fill");
                }
                InboxEvent::Discarded { peer, id, reason } => {
                    self.ctx.metrics.discarded.inc();
                    tracing::info!(%peer, %id, %reason, "did not deliver a received message");
                }
            }
        }
        for (federation, c) in crossed.into_values() {
            self.ctx.audit.crossed(&federation, Some(c));
        }
        let mut acks = Vec::new();
        while let Some(ack) = self.inbox.poll_ack() {
            acks.push(ack);
        }
        let custody = std::mem::take(&mut self.custody);
        if deliveries.is_empty()
            && consumed.is_empty()
            && acks.is_empty()
            && writes.is_empty()
            && custody.is_empty()
        {
            return;
        }
        let ticket = (!writes.is_empty()).then(|| {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            let done = done.clone();
            self.ctx.journal.submit_then(writes, move |outcome| {
                let _ = done.send((ticket, outcome.map_err(|e| e.to_string())));
            });
            ticket
        });
        self.pending.push_back(Release {
            ticket,
            deliveries,
            consumed,
            acks,
            custody,
            durable_writes,
        });
    }

    /// A journal request failed: what it held is not handed on, and nothing pending is
    /// acknowledged (each acknowledgement also covers the failed messages).
    fn fail(&mut self, ticket: u64) {
        self.starting_over = true;
        for r in &mut self.pending {
            r.acks.clear();
            r.custody.clear();
            if r.ticket == Some(ticket) {
                r.deliveries.clear();
                r.durable_writes = false;
            }
        }
    }

    /// Every commit in flight at a failure is done: the inbox starts again from the journal,
    /// as after a restart, and every link closes so that its peer re-dials and sends again
    /// whatever is unacknowledged.
    fn start_over(&mut self) {
        self.starting_over = false;
        self.inbox = restored_inbox(&self.ctx);
        for (peer, link) in self.links.drain() {
            tracing::warn!(%peer, "closing the link after a failed journal commit: the peer sends again what is unacknowledged");
            link.close();
        }
    }

    /// Hands on and acknowledges, in order, what no uncommitted journal request holds back.
    async fn release(&mut self) {
        let mut consumed = Vec::new();
        let mut notify = false;
        while let Some(front) = self.pending.front() {
            if front
                .ticket
                .is_some_and(|t| self.committed.is_none_or(|c| t > c))
            {
                break;
            }
            let Some(r) = self.pending.pop_front() else {
                break;
            };
            // Counted once per source mesh, not once per message.
            let mut by_source: Vec<(&meshfed_proto::MeshId, u64)> = Vec::new();
            for d in &r.deliveries {
                match by_source.iter_mut().find(|(m, _)| **m == d.source) {
                    Some((_, n)) => *n += 1,
                    None => by_source.push((&d.source, 1)),
                }
            }
            for (source, n) in by_source {
                self.ctx
                    .metrics
                    .delivered
                    .get_or_create(&metrics::peer(source))
                    .inc_by(n);
            }
            // No live subscriber is not an error: durable ones read the journal.
            self.local.live.deliver(&r.deliveries).await;
            notify |= r.durable_writes;
            consumed.extend(r.consumed);
            for (peer, ack) in r.acks {
                self.send(&peer, Frame::new(FrameType::Ack, ack.encode()))
                    .await;
            }
            for (link, ack) in r.custody {
                let _ = link
                    .send(Frame::new(FrameType::CustodyAck, ack.encode()))
                    .await;
            }
        }
        if notify {
            self.local.durable.notify();
        }
        if self.starting_over {
            // The old inbox's consumption, acknowledgements and credit all go with it.
            if self.pending.is_empty() {
                self.start_over();
            }
            return;
        }
        if !consumed.is_empty() {
            self.inbox.handle_consumed(consumed);
        }
        // Credit freed by consumption goes out at once; it promises nothing about durability.
        if self.pending.is_empty() {
            while let Some((peer, ack)) = self.inbox.poll_ack() {
                self.send(&peer, Frame::new(FrameType::Ack, ack.encode()))
                    .await;
            }
        }
        while let Some((peer, credit)) = self.inbox.poll_credit() {
            self.send(&peer, Frame::new(FrameType::Credit, credit.encode()))
                .await;
        }
    }

    async fn send(&self, peer: &Peer, frame: Frame) {
        if let Some(link) = self.links.get(peer) {
            let _ = link.send(frame).await;
        }
    }
}
