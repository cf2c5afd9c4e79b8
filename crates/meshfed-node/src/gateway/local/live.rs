//! Live local subscribers: each connected (non-durable) subscriber has a bounded queue.
//!
//! A qos ≥ 1 message waits for room in a subscriber's queue, so a slow subscriber slows the
//! receiving task and, through credit, the sending mesh; it is not dropped. A subscriber whose
//! queue stays full for [`SLOW_CONSUMER`] is disconnected (as NATS does with slow consumers),
//! so that one stuck client cannot stall a federation. A qos 0 message that finds a queue full
//! is dropped for that subscriber (at most once) and counted.
//!
//! Each subscription made or ended is one more *generation* of the list: the interest this node
//! announces to its partners (`gateway::interest`) is read from the list at a generation, and a
//! subscription is covered by whatever was read at its generation or later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshfed_proto::envelope::Qos;
use meshfed_proto::{MeshId, TopicPattern};
use tokio::sync::{mpsc, watch};

use prometheus_client::metrics::counter::Counter;

use super::Delivery;

/// Messages queued for one live subscriber.
const QUEUE: usize = 8192;
/// How long a full subscriber queue may hold up a reliable message before the subscriber is
/// disconnected.
pub(crate) const SLOW_CONSUMER: Duration = Duration::from_secs(10);

struct Live {
    id: u64,
    pattern: TopicPattern,
    from: Option<MeshId>,
    /// Receives only qos 0 messages (a durable subscriber reads the others from the journal).
    qos0_only: bool,
    /// Asked for proof: receives each envelope once its proof is in, never unproven.
    proof: bool,
    tx: mpsc::Sender<Arc<Delivery>>,
}

impl Live {
    fn wants(&self, d: &Delivery) -> bool {
        // An unproven delivery goes to the spec-form subscribers, and the proven one made
        // after it to the others only.
        let stage = if self.proof { !d.unproven } else { !d.early };
        stage
            && (!self.qos0_only || d.qos == Qos::AtMostOnce)
            && self.pattern.matches(&d.topic)
            && self.from.as_ref().is_none_or(|m| *m == d.source)
    }
}

/// The subscriber list and its generation, one more at each change.
struct List {
    live: Mutex<Vec<Arc<Live>>>,
    generation: watch::Sender<u64>,
}

/// The connected live subscribers.
pub(crate) struct Subscribers {
    next: AtomicU64,
    list: Arc<List>,
    /// qos 0 messages dropped for subscribers that could not keep up.
    dropped: Counter,
    /// Subscribers disconnected for not keeping up.
    disconnected: Counter,
}

/// A subscription; it ends when this is dropped.
pub(crate) struct Subscription {
    list: Arc<List>,
    id: u64,
    /// The list's generation with this subscription in it.
    generation: u64,
    pub(crate) rx: mpsc::Receiver<Arc<Delivery>>,
}

impl Subscription {
    /// The subscriber list's generation this subscription was made at: an interest read at it
    /// or later holds its pattern.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        remove(&self.list, self.id);
    }
}

fn lock(list: &List) -> std::sync::MutexGuard<'_, Vec<Arc<Live>>> {
    list.live.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends subscription `id`; a new generation if it was in the list.
fn remove(list: &List, id: u64) {
    let mut live = lock(list);
    let before = live.len();
    live.retain(|l| l.id != id);
    if live.len() != before {
        list.generation.send_modify(|g| *g += 1);
    }
}

impl Subscribers {
    /// No subscribers yet; what is dropped and who is disconnected is counted in these.
    pub(crate) fn new(dropped: Counter, disconnected: Counter) -> Self {
        Self {
            next: AtomicU64::new(0),
            list: Arc::new(List {
                live: Mutex::new(Vec::new()),
                generation: watch::channel(0).0,
            }),
            dropped,
            disconnected,
        }
    }

    /// Registers a subscriber: from now on it receives what matches (only proven envelopes if
    /// it asked for `proof`).
    pub(crate) fn subscribe(
        &self,
        pattern: TopicPattern,
        from: Option<MeshId>,
        qos0_only: bool,
        proof: bool,
    ) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut live = lock(&self.list);
        live.push(Arc::new(Live {
            id,
            pattern,
            from,
            qos0_only,
            proof,
            tx,
        }));
        // Bumped while the list is held: whoever reads the new generation and then the list
        // finds this subscription in it.
        self.list.generation.send_modify(|g| *g += 1);
        let generation = *self.list.generation.borrow();
        drop(live);
        Subscription {
            list: self.list.clone(),
            id,
            generation,
            rx,
        }
    }

    /// Learns of each new generation of the list.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.list.generation.subscribe()
    }

    /// The patterns of the subscribers that may receive from `peer` (no `from`, or `peer`).
    pub(crate) fn patterns_from(&self, peer: &MeshId) -> Vec<TopicPattern> {
        lock(&self.list)
            .iter()
            .filter(|l| l.from.as_ref().is_none_or(|m| m == peer))
            .map(|l| l.pattern.clone())
            .collect()
    }

    /// Hands `deliveries` to every subscriber that wants them, in order.
    pub(crate) async fn deliver(&self, deliveries: &[Arc<Delivery>]) {
        let live: Vec<Arc<Live>> = lock(&self.list).clone();
        if live.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        for d in deliveries {
            for l in &live {
                if !l.wants(d) || gone.contains(&l.id) {
                    continue;
                }
                if d.qos == Qos::AtMostOnce {
                    if l.tx.try_send(d.clone()).is_err() {
                        self.dropped.inc();
                    }
                    continue;
                }
                match l.tx.send_timeout(d.clone(), SLOW_CONSUMER).await {
                    Ok(()) => {}
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        tracing::warn!(
                            subscriber = l.id,
                            "disconnected a live subscriber that took nothing for {}",
                            humantime::format_duration(SLOW_CONSUMER)
                        );
                        self.disconnected.inc();
                        remove(&self.list, l.id);
                        gone.push(l.id);
                    }
                    // Gone meanwhile.
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_subscription_made_or_ended_is_a_generation_and_from_filters_its_peers() {
        let subs = Subscribers::new(Counter::default(), Counter::default());
        let changes = subs.changes();
        let (plant, cloud): (MeshId, MeshId) =
            ("plant-a".parse().unwrap(), "cloud-c".parse().unwrap());
        let any = subs.subscribe("sensors/#".parse().unwrap(), None, false, false);
        let only_cloud = subs.subscribe(
            "alarms/#".parse().unwrap(),
            Some(cloud.clone()),
            true,
            false,
        );
        assert_eq!((any.generation(), only_cloud.generation()), (1, 2));
        assert_eq!(
            subs.patterns_from(&plant),
            vec!["sensors/#".parse().unwrap()]
        );
        assert_eq!(subs.patterns_from(&cloud).len(), 2);
        drop(any);
        assert_eq!(*changes.borrow(), 3);
        assert!(subs.patterns_from(&plant).is_empty());
        drop(only_cloud);
        assert_eq!(*changes.borrow(), 4);
    }
}
