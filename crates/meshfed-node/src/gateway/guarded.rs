//! What the guard stage (`guard.rs`: anomaly detection and a circuit breaker per partner,
//! DESIGN §3.9, §3.13) holds over each partner, as the data path sees it. Imports no stage.
//!
//! - The data path tells the guard what it saw, one call per kind of observation
//!   ([`Guard::delivered`], [`Guard::refused`], [`Guard::transfer_refused`] and its two
//!   kinds, [`Guard::link_up`], [`Guard::link_failed`]). A call never waits: an observation is
//!   one message on a bounded channel (the topic its only allocation), dropped and counted when
//!   the guard is that far behind.
//! - Each partner has one [`BreakerView`], the state of its breaker as the guard publishes it:
//!   the stream asks it how many messages it may send ([`BreakerView::allowance`]), the link's
//!   reader whether to take a transfer ([`Guard::hold_inbound`]). While every breaker is closed
//!   that question costs one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use meshfed_audit::anomaly::Observation;
use meshfed_audit::breaker::StateName;
use meshfed_proto::admission::Refusal;
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::{MeshId, Topic};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::metrics::{self, PeerLabel};

/// Observations waiting for the guard before new ones are dropped (and counted).
const OBSERVATIONS: usize = 65_536;

/// One thing the data path saw of a partner's traffic.
#[derive(Debug)]
pub(crate) struct Seen {
    pub(crate) partner: Arc<BreakerView>,
    /// `None`: about the partner's traffic as a whole (a transfer refused before its
    /// envelopes could be read).
    pub(crate) topic: Option<String>,
    pub(crate) observation: Observation,
    pub(crate) at: Instant,
}

/// What became of a link to a partner.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// A link session was established.
    Up(Arc<BreakerView>),
    /// A link closed with an error (it failed, or went silent).
    Failed(Arc<BreakerView>),
}

/// The guard's ends of the channels, for `guard::start`.
pub(crate) struct Watching {
    pub(crate) seen: mpsc::Receiver<Seen>,
    pub(crate) links: mpsc::UnboundedReceiver<LinkEvent>,
}

/// The series of the node's metrics the data path's side of the guard counts into.
#[derive(Debug, Clone, Default)]
pub(crate) struct GuardSeries {
    /// `meshfed_breaker_held_transfers_total{peer}`.
    pub(crate) held: Family<PeerLabel, Counter>,
    /// `meshfed_breaker_state{peer}`.
    pub(crate) state: Family<PeerLabel, Gauge>,
    /// `meshfed_anomaly_observations_dropped_total`.
    pub(crate) dropped: Counter,
}

impl GuardSeries {
    /// The series of `metrics`.
    pub(crate) fn of(metrics: &metrics::Metrics) -> Self {
        Self {
            held: metrics.breaker_held.clone(),
            state: metrics.breaker_state.clone(),
            dropped: metrics.anomaly_dropped.clone(),
        }
    }
}

/// The data path's way to the guard; see the module documentation.
pub(crate) struct Guard {
    seen: mpsc::Sender<Seen>,
    links: mpsc::UnboundedSender<LinkEvent>,
    partners: RwLock<HashMap<MeshId, Arc<BreakerView>>>,
    /// Breakers not closed now: while none is, nothing is held and no partner is looked up.
    not_closed: AtomicUsize,
    clock: Clock,
    series: GuardSeries,
}

impl Guard {
    /// The handle and the guard's ends of its channels.
    pub(crate) fn new(clock: Clock, series: GuardSeries) -> (Self, Watching) {
        let (seen, seen_rx) = mpsc::channel(OBSERVATIONS);
        let (links, links_rx) = mpsc::unbounded_channel();
        let guard = Self {
            seen,
            links,
            partners: RwLock::new(HashMap::new()),
            not_closed: AtomicUsize::new(0),
            clock,
            series,
        };
        let watching = Watching {
            seen: seen_rx,
            links: links_rx,
        };
        (guard, watching)
    }

    /// The breaker view of `peer`, made closed the first time it is asked for.
    pub(crate) fn view(&self, peer: &MeshId) -> Arc<BreakerView> {
        if let Some(view) = self.known(peer) {
            return view;
        }
        let mut partners = self.partners.write().unwrap_or_else(|e| e.into_inner());
        partners
            .entry(peer.clone())
            .or_insert_with(|| {
                self.series.state.get_or_create(&metrics::peer(peer)).set(0);
                Arc::new(BreakerView::new(peer.clone()))
            })
            .clone()
    }

    fn known(&self, peer: &MeshId) -> Option<Arc<BreakerView>> {
        let partners = self.partners.read().unwrap_or_else(|e| e.into_inner());
        partners.get(peer).cloned()
    }

    /// Whether a transfer from `peer` is held now (its breaker is open): it is not taken, not
    /// acknowledged and gives no credit, so the peer keeps it and sends it again. Counted.
    pub(crate) fn hold_inbound(&self, peer: &MeshId) -> bool {
        if self.not_closed.load(Ordering::Acquire) == 0 {
            return false;
        }
        let held = self
            .known(peer)
            .is_some_and(|v| v.state() == StateName::Open);
        if held {
            self.series.held.get_or_create(&metrics::peer(peer)).inc();
        }
        held
    }

    /// An envelope from `peer` on `topic` was delivered (or kept for relaying); `size` is its
    /// payload's.
    pub(crate) fn delivered(&self, peer: &MeshId, topic: &Topic, size: usize) {
        let size = u64::try_from(size).unwrap_or(u64::MAX);
        self.see(peer, Some(topic), Observation::Delivered { size });
    }

    /// An envelope from `peer` on `topic` verified and was refused (by the agreement or the
    /// access rules).
    pub(crate) fn refused(&self, peer: &MeshId, topic: &Topic) {
        self.see(peer, Some(topic), Observation::Refused);
    }

    /// A whole transfer (or a streamed batch) from `peer` was refused: a signature failure when
    /// its signature does not verify or its signer is not trusted, an error otherwise.
    pub(crate) fn transfer_refused(&self, peer: &MeshId, refusal: &Refusal) {
        match refusal {
            Refusal::BadSignature(_) | Refusal::UntrustedSigner(_) => self.signature_failure(peer),
            _ => self.error(peer),
        }
    }

    /// A signature of `peer`'s (an envelope's, a batch's or its head's) did not verify.
    pub(crate) fn signature_failure(&self, peer: &MeshId) {
        self.see(peer, None, Observation::SignatureFailure);
    }

    /// Something `peer` sent could not be handled (malformed, refused whole for another reason).
    pub(crate) fn error(&self, peer: &MeshId) {
        self.see(peer, None, Observation::Error);
    }

    /// A link session with `peer` was established.
    pub(crate) fn link_up(&self, peer: &MeshId) {
        let _ = self.links.send(LinkEvent::Up(self.view(peer)));
    }

    /// A link with `peer` closed with an error.
    pub(crate) fn link_failed(&self, peer: &MeshId) {
        let _ = self.links.send(LinkEvent::Failed(self.view(peer)));
    }

    fn see(&self, peer: &MeshId, topic: Option<&Topic>, observation: Observation) {
        let seen = Seen {
            partner: self.view(peer),
            topic: topic.map(|t| t.as_str().to_owned()),
            observation,
            at: self.clock.instant(),
        };
        if self.seen.try_send(seen).is_err() {
            self.series.dropped.inc();
        }
    }

    /// Publishes `view`'s breaker as `shown`, with `probes` messages allowed as probes while
    /// half-open, and wakes the stream that waits on it.
    pub(crate) fn publish(&self, view: &BreakerView, shown: Shown, probes: u32) {
        let code = code(shown.state);
        let before = view.state.swap(code, Ordering::AcqRel);
        view.probes.store(probes, Ordering::Release);
        match (before == CLOSED, code == CLOSED) {
            (true, false) => {
                self.not_closed.fetch_add(1, Ordering::AcqRel);
            }
            (false, true) => {
                self.not_closed.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
        self.series
            .state
            .get_or_create(&metrics::peer(&view.peer))
            .set(i64::from(code));
        *view.shown.lock().unwrap_or_else(|e| e.into_inner()) = shown;
        view.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Gives a half-open breaker's probes afresh (a new probe window) and wakes its stream.
    pub(crate) fn refill(&self, view: &BreakerView, probes: u32) {
        view.probes.store(probes, Ordering::Release);
        view.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

const CLOSED: u8 = 0;
const HALF_OPEN: u8 = 1;
const OPEN: u8 = 2;

/// A state's number, as `meshfed_breaker_state` shows it: 0 closed, 1 half-open, 2 open.
fn code(state: StateName) -> u8 {
    match state {
        StateName::Closed => CLOSED,
        StateName::HalfOpen => HALF_OPEN,
        StateName::Open => OPEN,
    }
}

/// A partner's breaker as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shown {
    pub(crate) state: StateName,
    /// When it entered the state; `None` for a breaker that never left closed.
    pub(crate) since: Option<Timestamp>,
    /// Why it did.
    pub(crate) reason: Option<String>,
}

/// One partner's breaker as the guard last published it.
#[derive(Debug)]
pub(crate) struct BreakerView {
    peer: MeshId,
    state: AtomicU8,
    /// Messages the stream may still send as probes in this probe window (half-open).
    probes: AtomicU32,
    /// Bumped at each publication, so that a stream holding messages wakes.
    changed: watch::Sender<u64>,
    shown: Mutex<Shown>,
}

impl BreakerView {
    fn new(peer: MeshId) -> Self {
        Self {
            peer,
            state: AtomicU8::new(CLOSED),
            probes: AtomicU32::new(0),
            changed: watch::channel(0).0,
            shown: Mutex::new(Shown {
                state: StateName::Closed,
                since: None,
                reason: None,
            }),
        }
    }

    /// The partner.
    pub(crate) fn peer(&self) -> &MeshId {
        &self.peer
    }

    /// The breaker's state.
    pub(crate) fn state(&self) -> StateName {
        match self.state.load(Ordering::Acquire) {
            CLOSED => StateName::Closed,
            HALF_OPEN => StateName::HalfOpen,
            _ => StateName::Open,
        }
    }

    /// How many of `wanted` messages may be sent to the partner now: all while closed, the
    /// probes left in this window while half-open, none while open (they stay queued).
    pub(crate) fn allowance(&self, wanted: usize) -> usize {
        match self.state() {
            StateName::Closed => wanted,
            StateName::Open => 0,
            StateName::HalfOpen => {
                let probes = usize::try_from(self.probes.load(Ordering::Acquire));
                wanted.min(probes.unwrap_or(usize::MAX))
            }
        }
    }

    /// `sent` messages went to the partner: while half-open, probes taken from the window's.
    pub(crate) fn took(&self, sent: usize) {
        if self.state() != StateName::HalfOpen {
            return;
        }
        let sent = u32::try_from(sent).unwrap_or(u32::MAX);
        let _ = (self.probes).fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
            Some(left.saturating_sub(sent))
        });
    }

    /// Changes with each publication: what a stream holding messages waits on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The breaker as the API shows it.
    pub(crate) fn shown(&self) -> Shown {
        self.shown.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn guard() -> (Guard, Watching) {
        Guard::new(Clock::manual(SystemTime::now()).0, GuardSeries::default())
    }

    fn shown(state: StateName) -> Shown {
        Shown {
            state,
            since: Some(Timestamp(1)),
            reason: Some("test".to_owned()),
        }
    }

    #[test]
    fn a_view_allows_all_while_closed_probes_while_half_open_and_nothing_while_open() {
        let (guard, _watching) = guard();
        let peer: MeshId = "plant-a".parse().unwrap();
        let view = guard.view(&peer);
        assert_eq!(
            (view.allowance(500), guard.hold_inbound(&peer)),
            (500, false)
        );
        guard.publish(&view, shown(StateName::Open), 0);
        assert_eq!((view.allowance(500), guard.hold_inbound(&peer)), (0, true));
        guard.publish(&view, shown(StateName::HalfOpen), 10);
        assert_eq!(
            (view.allowance(500), guard.hold_inbound(&peer)),
            (10, false)
        );
        view.took(4);
        assert_eq!(view.allowance(500), 6);
        view.took(40);
        assert_eq!(view.allowance(500), 0);
        guard.refill(&view, 10);
        assert_eq!(view.allowance(3), 3);
        guard.publish(&view, shown(StateName::Closed), 0);
        view.took(40);
        assert_eq!(
            (view.allowance(500), guard.hold_inbound(&peer)),
            (500, false)
        );
        assert_eq!(guard.not_closed.load(Ordering::Acquire), 0);
    }

    #[test]
    fn observations_are_dropped_and_counted_when_the_guard_is_behind() {
        let (guard, mut watching) = guard();
        let peer: MeshId = "plant-a".parse().unwrap();
        for _ in 0..OBSERVATIONS + 3 {
            guard.signature_failure(&peer);
        }
        assert_eq!(guard.series.dropped.get(), 3);
        let first = watching.seen.try_recv().unwrap();
        assert_eq!(
            (first.partner.peer(), first.topic, first.observation),
            (&peer, None, Observation::SignatureFailure)
        );
    }
}
