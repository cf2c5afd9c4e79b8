//! Durable local subscriptions: a named subscription keeps, in the journal, every qos ≥ 1
//! message that matches it until its subscriber acknowledges it — across restarts of the
//! gateway and of the subscriber.
//!
//! A subscriber reads its messages from the journal in arrival order, a window at a time, and
//! acknowledges them by envelope id. Each acknowledgement moves the subscription's cursor in the
//! journal (many share one commit) and is confirmed once committed, so a subscriber can choose
//! per message: print, then acknowledge (at least once: a crash may repeat the last ones), or
//! acknowledge, wait for the confirmation, then print (what the CLI does for qos 2: a gateway
//! crash repeats nothing).

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use meshfed_proto::envelope::export::Form;
use meshfed_proto::{MeshId, TopicPattern};
use meshfed_store::Write;
use meshfed_store::journal::{InboundSeq, Subscription, SubscriptionName};
use tokio::sync::{mpsc, watch};

use super::{Delivery, Local};
use crate::gateway::context::Context;

/// Messages sent to a durable subscriber and not yet acknowledged, at most.
const WINDOW: usize = 1024;
/// Messages read from the journal at a time.
const PAGE: usize = 256;

/// The journal queue of what this node relays as a trusted intermediary (see
/// `gateway::relaying`): kept like a durable subscription's messages, from the arrival's commit
/// until the relay stage has handed each to its destination's stream. Names starting with
/// `meshfed:` are the node's own: a subscriber cannot take them.
pub(crate) const RELAY_QUEUE: &str = "meshfed:relay";

/// Whether `name` is one of the node's own queues.
pub(crate) fn reserved(name: &SubscriptionName) -> bool {
    name.as_str().starts_with("meshfed:")
}

/// The queue connector `connector`'s import rule `index` keeps its messages in.
pub(crate) fn connector_queue(connector: &str, index: usize) -> SubscriptionName {
    let name = format!("meshfed:connector:{connector}:{index}");
    // Invariant: connector names are a-z, 0-9 and '-', which subscription names allow.
    name.parse().unwrap_or_else(|e| unreachable!("{name}: {e}"))
}

/// The relay queue's name.
pub(crate) fn relay_queue() -> SubscriptionName {
    // Invariant: the constant is a valid name.
    RELAY_QUEUE
        .parse()
        .unwrap_or_else(|e| unreachable!("{RELAY_QUEUE}: {e}"))
}

/// The outcome of one cursor save: the position committed, or why not.
pub(crate) type Saved = Result<InboundSeq, String>;

/// The durable subscriptions, mirrored from the journal.
pub(crate) struct Durable {
    subscriptions: RwLock<Vec<Subscription>>,
    /// Bumped whenever messages were journaled for durable subscriptions.
    appended: watch::Sender<u64>,
}

impl Durable {
    /// The subscriptions the journal holds.
    pub(crate) fn load(
        journal: &meshfed_store::Journal,
        connectors: &[crate::config::connector::ConnectorConfig],
    ) -> Result<Self, meshfed_store::StoreError> {
        let mut subscriptions = journal.subscriptions()?;
        // The queues of the connectors configured keep what arrives from the start (those of
        // connectors or rules no longer configured take nothing more); the relay queue is the
        // relay stage's own.
        let configured: std::collections::HashSet<SubscriptionName> = connectors
            .iter()
            .flat_map(|c| (0..c.imports.len()).map(|i| connector_queue(c.name.as_str(), i)))
            .collect();
        subscriptions.retain(|s| {
            s.name.as_str() != RELAY_QUEUE
                && (!s.name.as_str().starts_with("meshfed:connector:")
                    || configured.contains(&s.name))
        });
        Ok(Self {
            subscriptions: RwLock::new(subscriptions),
            appended: watch::channel(0).0,
        })
    }

    /// The subscriptions `delivery` is kept for, each with the form it keeps messages in.
    pub(crate) fn matching(&self, delivery: &Delivery) -> Vec<(SubscriptionName, Form)> {
        let subs = self.subscriptions.read().unwrap_or_else(|e| e.into_inner());
        subs.iter()
            .filter(|s| {
                s.topic.matches(&delivery.topic)
                    && s.from.as_ref().is_none_or(|m| *m == delivery.source)
            })
            .map(|s| (s.name.clone(), s.form))
            .collect()
    }

    pub(crate) fn notify(&self) {
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }
}

/// Creates subscription `name` (or updates its topic, source and form) and waits until it is
/// stored: from then on every matching qos ≥ 1 message is kept for it, in `form`. Messages
/// kept before a change of form stay in the form they were kept in.
pub(crate) async fn register(
    ctx: &Context,
    local: &Local,
    name: SubscriptionName,
    topic: TopicPattern,
    from: Option<MeshId>,
    form: Form,
) -> Result<(), String> {
    let sub = Subscription {
        name,
        topic,
        from,
        form,
        created: ctx.now(),
    };
    let journal = ctx.journal.clone();
    let stored = sub.clone();
    tokio::task::spawn_blocking(move || journal.submit(Write::PutSubscription(stored)).wait())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut subs = local
        .durable
        .subscriptions
        .write()
        .unwrap_or_else(|e| e.into_inner());
    subs.retain(|s| s.name != sub.name);
    subs.push(sub);
    Ok(())
}

/// One connected durable subscriber: what it was sent and what it acknowledged.
pub(crate) struct Reader {
    ctx: Arc<Context>,
    name: SubscriptionName,
    /// The last message read from the journal (sent or queued to send).
    read_to: Option<InboundSeq>,
    /// Sent and not acknowledged, oldest first.
    unacked: VecDeque<(String, InboundSeq)>,
    /// Read and not yet sent.
    ready: VecDeque<(String, InboundSeq, String)>,
    acked: Option<InboundSeq>,
    /// The position last handed to the journal.
    saved: Option<InboundSeq>,
    /// A cursor save is being committed: later acknowledgements wait and share the next one.
    saving: bool,
    /// Acknowledgements whose subscriber asked to hear when they are committed.
    confirms: Vec<(InboundSeq, String)>,
    done_tx: mpsc::UnboundedSender<Saved>,
    changes: watch::Receiver<u64>,
    /// The live stream, for the qos 0 messages the journal does not keep.
    live: super::live::Subscription,
}

/// What a durable subscriber is sent next.
pub(crate) enum Next {
    /// A message kept in the journal: its JSON, in the form the subscription kept it in.
    Stored(String),
    /// A qos 0 message of the live stream, which the journal does not keep.
    Live(Arc<Delivery>),
}

impl Reader {
    /// Opens subscription `name` for a connected subscriber; the receiver learns when each
    /// cursor save is committed (hand what it yields to [`Reader::saved`]).
    pub(crate) async fn open(
        ctx: Arc<Context>,
        local: &Local,
        name: SubscriptionName,
        pattern: TopicPattern,
        from: Option<MeshId>,
        proof: bool,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Saved>), String> {
        let changes = local.durable.changes();
        let live = local.live.subscribe(pattern, from, true, proof);
        let journal = ctx.journal.clone();
        let lookup = name.clone();
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Saved>();
        let cursor = tokio::task::spawn_blocking(move || journal.cursor(&lookup))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let reader = Self {
            ctx,
            name,
            read_to: cursor,
            unacked: VecDeque::new(),
            ready: VecDeque::new(),
            acked: cursor,
            saved: cursor,
            saving: false,
            confirms: Vec::new(),
            done_tx,
            changes,
            live,
        };
        Ok((reader, done_rx))
    }

    /// The generation of the live subscription for its qos 0 messages (see `live`).
    pub(crate) fn generation(&self) -> u64 {
        self.live.generation()
    }

    /// The next envelope to send, waiting for one; `None` when the gateway stops.
    pub(crate) async fn next(&mut self) -> Option<Next> {
        loop {
            if self.unacked.len() < WINDOW {
                if self.ready.is_empty() {
                    self.fill().await;
                }
                if let Some((id, seq, text)) = self.ready.pop_front() {
                    self.unacked.push_back((id, seq));
                    return Some(Next::Stored(text));
                }
            }
            tokio::select! {
                () = self.ctx.cancel.cancelled() => return None,
                changed = self.changes.changed(), if self.unacked.len() < WINDOW => {
                    if changed.is_err() {
                        return None;
                    }
                }
                live = self.live.rx.recv() => match live {
                    Some(d) => return Some(Next::Live(d)),
                    None => return None,
                },
            }
        }
    }

    async fn fill(&mut self) {
        let journal = self.ctx.journal.clone();
        let name = self.name.clone();
        let after = self.read_to;
        let rows =
            tokio::task::spawn_blocking(move || journal.inbound_after(&name, after, PAGE)).await;
        match rows {
            Ok(Ok(rows)) => {
                for r in rows {
                    self.read_to = Some(r.seq);
                    let text = String::from_utf8_lossy(&r.message.payload).into_owned();
                    self.ready
                        .push_back((r.message.id.to_string(), r.seq, text));
                }
            }
            Ok(Err(e)) => {
                tracing::error!(subscription = %self.name, error = %e, "cannot read the durable subscription's messages")
            }
            Err(e) => {
                tracing::error!(subscription = %self.name, error = %e, "reading the durable subscription failed")
            }
        }
    }

    /// The subscriber acknowledged envelope `id` and everything sent before it: the cursor
    /// moves there (in the journal, one save at a time: acknowledgements arriving meanwhile
    /// share the next). With `confirm`, [`Reader::saved`] names `id` once that is committed.
    pub(crate) fn ack(&mut self, id: &str, confirm: bool) -> Result<(), String> {
        let Some(pos) = self.unacked.iter().position(|(i, _)| i == id) else {
            return Err(format!(
                "{id} is not an unacknowledged envelope of this subscription"
            ));
        };
        let Some((_, delivered)) = self.unacked.drain(..=pos).next_back() else {
            return Err(format!("{id}: nothing to acknowledge"));
        };
        self.acked = Some(delivered);
        if confirm {
            self.confirms.push((delivered, id.to_owned()));
        }
        self.save();
        Ok(())
    }

    /// A cursor save was committed (or failed): returns the confirmed acknowledgements (or why
    /// they failed) and starts the next save if acknowledgements arrived meanwhile.
    pub(crate) fn saved(&mut self, outcome: Saved) -> Vec<Result<String, String>> {
        self.saving = false;
        let confirmed = match outcome {
            Ok(seq) => {
                let (done, waiting): (Vec<_>, Vec<_>) =
                    self.confirms.drain(..).partition(|(s, _)| *s <= seq);
                self.confirms = waiting;
                done.into_iter().map(|(_, id)| Ok(id)).collect()
            }
            Err(e) => {
                // Saved again with the next acknowledgement (or at the end).
                self.saved = None;
                self.confirms
                    .drain(..)
                    .map(|(_, id)| Err(format!("acknowledging {id} failed: {e}")))
                    .collect()
            }
        };
        self.save();
        confirmed
    }

    /// Hands the acknowledged position to the journal, unless a save is in progress or it has
    /// not moved.
    pub(crate) fn save(&mut self) {
        if self.saving || self.acked == self.saved {
            return;
        }
        let Some(delivered) = self.acked else {
            return;
        };
        self.saved = self.acked;
        self.saving = true;
        let name = self.name.clone();
        let done = self.done_tx.clone();
        self.ctx.journal.submit_then(
            vec![Write::SaveCursor {
                subscription: name.clone(),
                delivered,
            }],
            move |outcome| {
                if let Err(e) = &outcome {
                    tracing::warn!(subscription = %name, error = %e, "could not save the subscription's position; its subscriber may get some messages again");
                }
                let _ = done.send(outcome.map(|()| delivered).map_err(|e| e.to_string()));
            },
        );
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // The last position, even if a save is still in progress (a cursor never moves back).
        self.saving = false;
        self.save();
    }
}
