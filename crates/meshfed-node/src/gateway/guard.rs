//! The guard stage (DESIGN §3.9 "Anomaly detection", §3.13 "a circuit breaker per partner"):
//! one task that owns the anomaly [`Detector`] and one [`Breaker`] per partner mesh, fed by
//! the data path through `guarded.rs` (what it saw of each partner's traffic, and its links),
//! and ticking at the end of each of the detector's windows.
//!
//! A deviation is reported ([`report`]: a log line and `meshfed_anomalies_total`), then acted on
//! as the policy's `[anomaly] action` says: `record` does nothing more; `breaker` trips the
//! partner's breaker; `suspend` suspends the federation as an operator would (reason
//! `suspended: anomaly: …`), and an operator resumes it.
//!
//! A breaker holds, it never drops: while it is open the partner's stream sends nothing (its
//! messages stay queued, reliable ones journaled) and the link's reader takes no transfer from
//! the partner (nothing acknowledged, no credit: the partner keeps them and sends them again).
//! Once its open time has passed it is half-open: a bounded number of messages per probe window
//! go to the partner as probes, transfers from it are taken again, and each of the detector's
//! windows in which the partner's traffic raised no deviation counts towards closing it; a
//! deviation, or a link failure, opens it again for twice as long. Five link failures in a
//! row open a closed one. Every change of a breaker is reported ([`report`]: a log line,
//! `meshfed_breaker_state{peer}`, `meshfed_breaker_transitions_total{peer,to}`) and published
//! to the data path and the API (`guarded::BreakerView`).
//!
//! The detector and the breakers follow the policy in force: a changed `[anomaly]` section
//! takes effect at the next window (a changed detector starts learning afresh; a changed
//! breaker configuration applies to each breaker from its next closing).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshfed_audit::anomaly::{Detector, Deviation, Measure};
use meshfed_audit::breaker::{Breaker, StateName, Transition};
use meshfed_proto::{FederationId, MeshId};

use super::context::Context;
use super::federations::{self, FederationError, Federations, Operation};
use super::guarded::{BreakerView, Guard, LinkEvent, Seen, Shown, Watching};
use super::links::Links;
use super::route::Routes;
use crate::metrics::{PeerMeasureLabels, PeerStateLabels};
use crate::policy::anomaly::{AnomalyAction, AnomalyPolicy};

/// Observations taken from the channel in one turn.
const BATCH: usize = 1024;

/// What the guard reports: the one place its events become log lines and metrics.
#[derive(Debug)]
pub(crate) enum Reported {
    /// A partner's traffic deviated from its baseline, and the policy's action followed.
    Deviation(Deviation, AnomalyAction),
    /// A partner's breaker changed state.
    Transition(MeshId, Transition),
}

/// Reports a guard event: a log line, its metrics, and an audit record in the log of the
/// federation with the partner (`federation`; the node's own log when none runs).
fn report(ctx: &Context, federation: Option<FederationId>, event: Reported) {
    use meshfed_audit::record::{Event, Text};
    let audited = match &event {
        Reported::Deviation(d, action) => Event::Anomaly {
            peer: d.partner.clone(),
            topic: d.topic.as_deref().map(Text::new),
            measure: Text::new(measure_label(d.measure)),
            observed: d.observed,
            baseline: d.baseline,
            action: Text::new(action.to_string()),
        },
        Reported::Transition(peer, t) => Event::Breaker {
            peer: peer.clone(),
            from: Text::new(state_label(t.from)),
            to: Text::new(state_label(t.to)),
            reason: Text::new(t.reason.clone()),
        },
    };
    match &federation {
        Some(f) => ctx.audit.federation(f, audited),
        None => ctx.audit.node(audited),
    }
    match event {
        Reported::Deviation(deviation, action) => {
            let measure = measure_label(deviation.measure);
            ctx.metrics
                .anomalies
                .get_or_create(&PeerMeasureLabels {
                    peer: deviation.partner.to_string(),
                    measure,
                })
                .inc();
            tracing::warn!(
                peer = %deviation.partner,
                topic = deviation.topic.as_deref().unwrap_or("*"),
                measure,
                %action,
                "anomaly: {deviation}"
            );
        }
        Reported::Transition(peer, transition) => {
            ctx.metrics
                .breaker_transitions
                .get_or_create(&PeerStateLabels {
                    peer: peer.to_string(),
                    to: state_label(transition.to),
                })
                .inc();
            // The state gauge is set where the view is published (`Guard::publish`).
            tracing::warn!(%peer, from = %transition.from, to = %transition.to, "{transition}");
        }
    }
}

/// A measure as the metric's label names it.
fn measure_label(measure: Measure) -> &'static str {
    match measure {
        Measure::Rate => "rate",
        Measure::Size => "size",
        Measure::RefusalRatio => "refusal_ratio",
        Measure::ErrorRatio => "error_ratio",
        Measure::SignatureFailures => "signature_failures",
    }
}

/// A breaker state as the metric's label and the API name it.
pub(crate) fn state_label(state: StateName) -> &'static str {
    match state {
        StateName::Closed => "closed",
        StateName::HalfOpen => "half-open",
        StateName::Open => "open",
    }
}

/// Starts the guard task, which suspends federations through `links` and `routes`.
pub(crate) fn start(
    ctx: &Arc<Context>,
    watching: Watching,
    links: &Arc<Links>,
    routes: &Arc<Routes>,
) {
    let stage = Stage::new(&ctx.policy().anomaly, ctx.clock.instant());
    let federations = Federations {
        ctx: ctx.clone(),
        links: links.clone(),
        routes: routes.clone(),
    };
    let task = Task {
        ctx: ctx.clone(),
        federations: Arc::new(federations),
        stage,
    };
    ctx.tracker.spawn(task.run(watching));
}

struct Task {
    ctx: Arc<Context>,
    federations: Arc<Federations>,
    stage: Stage,
}

impl Task {
    async fn run(mut self, watching: Watching) {
        let Watching {
            mut seen,
            mut links,
        } = watching;
        let cancel = self.ctx.cancel.clone();
        let clock = self.ctx.clock.clone();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let wake = self.stage.wake();
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(event) = links.recv() => self.stage.link(event, clock.instant()),
                n = seen.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    for s in batch.drain(..) {
                        self.stage.observe(s);
                    }
                }
                () = clock.sleep_until(wake) => {
                    // What was seen before the window ended counts in it.
                    while let Ok(s) = seen.try_recv() {
                        self.stage.observe(s);
                    }
                    let now = clock.instant();
                    let policy = self.ctx.policy();
                    let windows = self.stage.windows;
                    for act in self.stage.handle_timeout(now, &policy.anomaly) {
                        self.act(act);
                    }
                    let closed = self.stage.windows.saturating_sub(windows);
                    self.ctx.metrics.anomaly_windows.inc_by(closed);
                    self.stage.refill(&self.ctx.guard, now);
                }
            }
            let wall = self.ctx.now();
            for (peer, transition) in self.stage.transitions(&self.ctx.guard, wall) {
                let federation = self.federation(&peer);
                let moved = (state_label(transition.from), state_label(transition.to));
                (self.ctx.changes).breaker(federation.as_ref(), &peer, moved, &transition.reason);
                report(
                    &self.ctx,
                    federation,
                    Reported::Transition(peer, transition),
                );
            }
        }
    }

    fn act(&self, act: Act) {
        match act {
            Act::Report(deviation, action) => {
                let federation = self.federation(&deviation.partner);
                report(
                    &self.ctx,
                    federation,
                    Reported::Deviation(deviation, action),
                );
            }
            Act::Suspend(peer, sentence) => self.suspend(peer, sentence),
        }
    }

    /// The federation running with `peer`.
    fn federation(&self, peer: &MeshId) -> Option<FederationId> {
        (self.federations.routes.to(peer)).map(|s| s.federation_id.clone())
    }

    /// Suspends the federation with `peer` as an operator would, off the guard's task.
    fn suspend(&self, peer: MeshId, sentence: String) {
        let Some(id) = self.federation(&peer) else {
            tracing::warn!(%peer, "an anomaly asks to suspend the federation, and none runs with this partner");
            return;
        };
        let federations = self.federations.clone();
        self.ctx.tracker.spawn(async move {
            let reason = format!("suspended: anomaly: {sentence}");
            let because = Some(reason.as_str());
            let suspend = Operation::Suspend;
            match federations::operate_because(&federations, id.clone(), suspend, because).await {
                Ok(_) => tracing::warn!(federation = %id, %peer, %reason, "federation suspended"),
                // Suspended already (by an earlier deviation, the peer or an operator).
                Err(FederationError::Conflict(why)) => {
                    tracing::debug!(federation = %id, %peer, %why, "not suspended again");
                }
                Err(e) => {
                    tracing::error!(federation = %id, %peer, error = %e, "could not suspend the federation after an anomaly");
                }
            }
        });
    }
}

/// What the guard's task does after a window.
#[derive(Debug)]
enum Act {
    /// Reports a deviation (the breaker, if the action trips it, is tripped already).
    Report(Deviation, AnomalyAction),
    /// Suspends the federation with this partner, for this sentence.
    Suspend(MeshId, String),
}

/// The guard's state, without IO: the detector, each partner's breaker and the time of the
/// next window's end. Time is an argument.
struct Stage {
    policy: AnomalyPolicy,
    detector: Detector,
    breakers: HashMap<MeshId, Watched>,
    /// When the open window of the detector ends.
    window_end: Instant,
    /// Windows closed so far.
    windows: u64,
}

/// One partner's breaker and its view.
struct Watched {
    breaker: Breaker,
    view: Arc<BreakerView>,
    /// While half-open: when the probe window ends and the probes are given afresh.
    refill: Option<Instant>,
}

impl Stage {
    fn new(policy: &AnomalyPolicy, now: Instant) -> Self {
        let detector = Detector::new(policy.detector.clone(), now);
        let window_end = now + detector.config().window;
        Self {
            policy: policy.clone(),
            detector,
            breakers: HashMap::new(),
            window_end,
            windows: 0,
        }
    }

    fn watched(&mut self, view: &Arc<BreakerView>) -> &mut Watched {
        let config = &self.policy.breaker;
        self.breakers
            .entry(view.peer().clone())
            .or_insert_with(|| Watched {
                breaker: Breaker::new(config.clone()),
                view: view.clone(),
                refill: None,
            })
    }

    fn observe(&mut self, seen: Seen) {
        self.watched(&seen.partner);
        let peer = seen.partner.peer();
        match &seen.topic {
            Some(topic) => self
                .detector
                .observe(peer, topic, seen.observation, seen.at),
            None => self
                .detector
                .observe_partner(peer, seen.observation, seen.at),
        }
    }

    fn link(&mut self, event: LinkEvent, now: Instant) {
        match event {
            LinkEvent::Up(view) => self.watched(&view).breaker.success(),
            LinkEvent::Failed(view) => self.watched(&view).breaker.failure(now),
        }
    }

    /// When the task should next call [`Stage::handle_timeout`]: the end of the window, of an
    /// open time or of a probe window, whichever comes first.
    fn wake(&self) -> Instant {
        self.breakers
            .values()
            .flat_map(|w| [w.breaker.poll_timeout(), w.refill])
            .flatten()
            .fold(self.window_end, Instant::min)
    }

    /// Closes the detector's window if it ended (its deviations reported, acted on by
    /// `policy`, and its clean windows counted by the half-open breakers), moves the breakers
    /// whose open time passed to half-open, and gives probes afresh where a probe window
    /// ended.
    fn handle_timeout(&mut self, now: Instant, policy: &AnomalyPolicy) -> Vec<Act> {
        let mut acts = Vec::new();
        if now >= self.window_end {
            // (A new detector begins its first window now.)
            self.follow(policy, now);
        }
        if now >= self.window_end {
            let deviations = self.detector.tick(now);
            let mut acted: Vec<MeshId> = Vec::new();
            for deviation in deviations {
                let action = self.policy.action;
                let first = !acted.contains(&deviation.partner);
                if first {
                    acted.push(deviation.partner.clone());
                }
                let suspend = match action {
                    AnomalyAction::Record => None,
                    AnomalyAction::Breaker => {
                        if let Some(w) = self.breakers.get_mut(&deviation.partner) {
                            w.breaker.trip(now, deviation.to_string());
                        }
                        None
                    }
                    // Once per partner and window, however many of its measures deviated.
                    AnomalyAction::Suspend => first
                        .then(|| Act::Suspend(deviation.partner.clone(), deviation.to_string())),
                };
                acts.push(Act::Report(deviation, action));
                acts.extend(suspend);
            }
            for (peer, w) in &mut self.breakers {
                if !acted.contains(peer) {
                    w.breaker.clean(now);
                }
            }
            // Every window that ended by now closed (quiet ones folded by the detector).
            let window = self.detector.config().window.as_nanos().max(1);
            let closed = now.saturating_duration_since(self.window_end).as_nanos() / window + 1;
            let ahead = u64::try_from(closed.saturating_mul(window)).unwrap_or(u64::MAX);
            self.window_end = (self.window_end)
                .checked_add(Duration::from_nanos(ahead))
                .unwrap_or(now);
            self.windows = (self.windows).saturating_add(u64::try_from(closed).unwrap_or(u64::MAX));
        }
        for w in self.breakers.values_mut() {
            w.breaker.handle_timeout(now);
        }
        acts
    }

    /// Puts `policy` in force if it changed: a new detector (learning afresh) for a changed
    /// detector configuration; a changed breaker configuration for the closed breakers now,
    /// the others once they close.
    fn follow(&mut self, policy: &AnomalyPolicy, now: Instant) {
        if *policy == self.policy {
            return;
        }
        if policy.detector != self.policy.detector {
            tracing::info!("the [anomaly] policy changed: baselines are learned afresh");
            self.detector = Detector::new(policy.detector.clone(), now);
            self.window_end = now + self.detector.config().window;
        }
        self.policy = policy.clone();
        self.reconfigure_closed();
    }

    fn reconfigure_closed(&mut self) {
        for w in self.breakers.values_mut() {
            if w.breaker.state().name() == StateName::Closed
                && *w.breaker.config() != self.policy.breaker
            {
                w.breaker = Breaker::new(self.policy.breaker.clone());
            }
        }
    }

    /// Publishes every breaker's changes to its view and returns them, oldest first per
    /// partner.
    fn transitions(
        &mut self,
        guard: &Guard,
        wall: meshfed_proto::envelope::Timestamp,
    ) -> Vec<(MeshId, Transition)> {
        let mut out = Vec::new();
        let mut closed_any = false;
        for (peer, w) in &mut self.breakers {
            while let Some(t) = w.breaker.poll_event() {
                let config = w.breaker.config();
                let probes = match t.to {
                    StateName::HalfOpen => {
                        w.refill = t.at.checked_add(config.probe_window);
                        config.probes_per_window
                    }
                    StateName::Open | StateName::Closed => {
                        w.refill = None;
                        0
                    }
                };
                closed_any |= t.to == StateName::Closed;
                let shown = Shown {
                    state: t.to,
                    since: Some(wall),
                    reason: Some(t.reason.clone()),
                };
                guard.publish(&w.view, shown, probes);
                out.push((peer.clone(), t));
            }
        }
        if closed_any {
            self.reconfigure_closed();
        }
        out
    }

    /// Gives the half-open breakers whose probe window ended at `now` their probes afresh;
    /// the next probe window starts now.
    fn refill(&mut self, guard: &Guard, now: Instant) {
        for w in self.breakers.values_mut() {
            if w.refill.is_some_and(|at| at <= now) {
                let config = w.breaker.config();
                w.refill = now.checked_add(config.probe_window);
                guard.refill(&w.view, config.probes_per_window);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The stage driven by hand on a manual clock, fed through the data path's real handle
    //! (`guarded::Guard`) and its channel. What the link's reader does with a signature
    //! failure is one call (`Guard::transfer_refused`), so the burst is fed here, and what the
    //! reader then asks (`Guard::hold_inbound`) is asserted; `tests/guard.rs` has a real peer
    //! sign wrongly over a real link (feature `test-hooks`).

    use std::time::SystemTime;

    use meshfed_audit::breaker::BreakerConfig;
    use meshfed_proto::admission::Refusal;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::gateway::guarded::GuardSeries;

    const WINDOW: Duration = Duration::from_millis(100);

    struct Rig {
        clock: Clock,
        hand: ManualClock,
        guard: Guard,
        watching: Watching,
        stage: Stage,
        policy: AnomalyPolicy,
    }

    impl Rig {
        fn new(action: AnomalyAction) -> Self {
            let (clock, hand) = Clock::manual(SystemTime::now());
            let (guard, watching) = Guard::new(clock.clone(), GuardSeries::default());
            let mut policy = AnomalyPolicy {
                action,
                ..AnomalyPolicy::default()
            };
            policy.detector.window = WINDOW;
            policy.detector.warmup_windows = 3;
            policy.breaker = BreakerConfig {
                base_open: Duration::from_secs(1),
                max_open: Duration::from_secs(4),
                probes_to_close: 2,
                probes_per_window: 4,
                probe_window: Duration::from_millis(500),
                ..BreakerConfig::default()
            };
            let stage = Stage::new(&policy, clock.instant());
            Self {
                clock,
                hand,
                guard,
                watching,
                stage,
                policy,
            }
        }

        /// Takes what the channels hold, moves the clock by `by` and runs the stage's turn:
        /// the acts and the transitions, as the task would have them.
        fn advance(&mut self, by: Duration) -> (Vec<Act>, Vec<(StateName, StateName)>) {
            while let Ok(s) = self.watching.seen.try_recv() {
                self.stage.observe(s);
            }
            while let Ok(e) = self.watching.links.try_recv() {
                self.stage.link(e, self.clock.instant());
            }
            self.hand.advance(by);
            let now = self.clock.instant();
            let acts = self.stage.handle_timeout(now, &self.policy);
            self.stage.refill(&self.guard, now);
            let moved = self
                .stage
                .transitions(&self.guard, crate::clock::timestamp(self.clock.wall()))
                .into_iter()
                .map(|(_, t)| (t.from, t.to))
                .collect();
            (acts, moved)
        }

        /// Advances from wake-up to wake-up until a breaker moves; returns how.
        fn until_moved(&mut self) -> Vec<(StateName, StateName)> {
            for _ in 0..1000 {
                let by = (self.stage.wake()).saturating_duration_since(self.clock.instant());
                let (_, moved) = self.advance(by);
                if !moved.is_empty() {
                    return moved;
                }
            }
            panic!("no breaker moved");
        }
    }

    fn mesh(name: &str) -> MeshId {
        name.parse().unwrap()
    }

    fn topic() -> meshfed_proto::Topic {
        "t/steady".parse().unwrap()
    }

    fn deviations(acts: &[Act]) -> Vec<(MeshId, Measure, AnomalyAction)> {
        acts.iter()
            .filter_map(|a| match a {
                Act::Report(d, action) => Some((d.partner.clone(), d.measure, *action)),
                Act::Suspend(..) => None,
            })
            .collect()
    }

    #[test]
    fn a_burst_of_bad_signatures_opens_the_breaker_and_holds_the_partners_transfers() {
        let mut rig = Rig::new(AnomalyAction::Breaker);
        let (a, b) = (mesh("plant-a"), mesh("supplier-b"));
        let view = rig.guard.view(&a);
        for _ in 0..5 {
            rig.guard
                .transfer_refused(&a, &Refusal::BadSignature("does not verify".into()));
        }
        rig.guard.delivered(&b, &topic(), 10);
        assert!(!rig.guard.hold_inbound(&a));
        let (acts, moved) = rig.advance(WINDOW);
        assert_eq!(
            deviations(&acts),
            [(
                a.clone(),
                Measure::SignatureFailures,
                AnomalyAction::Breaker
            )]
        );
        let Act::Report(d, _) = &acts[0] else {
            unreachable!()
        };
        assert_eq!(
            d.topic, None,
            "a refused transfer counts for the partner as a whole"
        );
        assert_eq!(moved, [(StateName::Closed, StateName::Open)]);
        assert!(rig.guard.hold_inbound(&a), "the reader holds A's transfers");
        assert!(!rig.guard.hold_inbound(&b), "and only A's");
        assert_eq!(view.allowance(100), 0, "nothing goes to A either");
        let shown = view.shown();
        assert_eq!(shown.state, StateName::Open);
        let reason = shown.reason.unwrap();
        assert!(
            reason.starts_with("partner plant-a: 5 signature failures in one window"),
            "{reason}"
        );

        // Its open time passes: half-open, a bounded number of probes per probe window.
        assert_eq!(rig.until_moved(), [(StateName::Open, StateName::HalfOpen)]);
        assert!(!rig.guard.hold_inbound(&a));
        assert_eq!(view.allowance(100), 4);
        view.took(4);
        assert_eq!(view.allowance(100), 0);
        rig.advance(Duration::from_millis(500));
        assert_eq!(view.allowance(100), 4, "a new probe window");

        // Clean windows close it.
        let mut closed_after = 0;
        while view.state() != StateName::Closed {
            let (acts, _) = rig.advance(WINDOW);
            assert!(deviations(&acts).is_empty());
            closed_after += 1;
            assert!(closed_after <= 2, "still {:?}", view.state());
        }
        assert_eq!(view.allowance(100), 100);
        assert!(!rig.guard.hold_inbound(&a));
    }

    #[test]
    fn a_deviation_while_half_open_opens_again_for_twice_as_long() {
        let mut rig = Rig::new(AnomalyAction::Breaker);
        let a = mesh("plant-a");
        let view = rig.guard.view(&a);
        let burst = |rig: &Rig| {
            for _ in 0..5 {
                rig.guard.signature_failure(&a);
            }
        };
        burst(&rig);
        rig.advance(WINDOW);
        rig.until_moved();
        assert_eq!(view.state(), StateName::HalfOpen);
        burst(&rig);
        let opened = rig.clock.instant();
        let (_, moved) = rig.advance(WINDOW);
        assert_eq!(moved, [(StateName::HalfOpen, StateName::Open)]);
        assert_eq!(rig.until_moved(), [(StateName::Open, StateName::HalfOpen)]);
        assert_eq!(
            rig.clock.instant() - opened,
            WINDOW + Duration::from_secs(2),
            "opened for 2 s, twice the first time"
        );
    }

    #[test]
    fn record_only_reports_and_suspend_asks_once_per_partner() {
        let mut rig = Rig::new(AnomalyAction::Record);
        let a = mesh("plant-a");
        let view = rig.guard.view(&a);
        for _ in 0..5 {
            rig.guard.signature_failure(&a);
        }
        let (acts, moved) = rig.advance(WINDOW);
        assert_eq!(
            deviations(&acts),
            [(a.clone(), Measure::SignatureFailures, AnomalyAction::Record)]
        );
        assert!(moved.is_empty());
        assert_eq!(view.state(), StateName::Closed);

        // A spike deviates for the partner as a whole and for its topic, in one window:
        // one suspension.
        let mut rig = Rig::new(AnomalyAction::Suspend);
        let t = topic();
        for _ in 0..5 {
            rig.guard.delivered(&a, &t, 10);
            let (acts, _) = rig.advance(WINDOW);
            assert!(acts.is_empty(), "{acts:?}");
        }
        for _ in 0..500 {
            rig.guard.delivered(&a, &t, 10);
        }
        let (acts, moved) = rig.advance(WINDOW);
        assert_eq!(
            deviations(&acts),
            [
                (a.clone(), Measure::Rate, AnomalyAction::Suspend),
                (a.clone(), Measure::Rate, AnomalyAction::Suspend)
            ]
        );
        let suspended: Vec<&MeshId> = acts
            .iter()
            .filter_map(|a| match a {
                Act::Suspend(peer, sentence) => {
                    assert!(sentence.contains("rate 5,000/s"), "{sentence}");
                    Some(peer)
                }
                Act::Report(..) => None,
            })
            .collect();
        assert_eq!(suspended, [&a]);
        assert!(moved.is_empty(), "suspending does not trip the breaker");
    }

    #[test]
    fn five_link_failures_in_a_row_open_the_breaker_and_an_established_link_resets_them() {
        let mut rig = Rig::new(AnomalyAction::Breaker);
        let a = mesh("plant-a");
        let view = rig.guard.view(&a);
        for _ in 0..4 {
            rig.guard.link_failed(&a);
        }
        rig.guard.link_up(&a);
        for _ in 0..4 {
            rig.guard.link_failed(&a);
        }
        let (_, moved) = rig.advance(Duration::ZERO);
        assert!(moved.is_empty());
        rig.guard.link_failed(&a);
        let (_, moved) = rig.advance(Duration::ZERO);
        assert_eq!(moved, [(StateName::Closed, StateName::Open)]);
        assert_eq!(
            view.shown().reason.as_deref(),
            Some("5 consecutive failures")
        );
    }

    #[test]
    fn a_changed_policy_applies_at_the_next_window() {
        let mut rig = Rig::new(AnomalyAction::Breaker);
        let a = mesh("plant-a");
        rig.policy.action = AnomalyAction::Record;
        rig.policy.detector.sig_failures_burst = 2;
        for _ in 0..2 {
            rig.guard.signature_failure(&a);
        }
        // The window that closes now was measured under the old detector; the new one
        // starts learning afresh from here.
        rig.advance(WINDOW);
        assert_eq!(rig.stage.detector.config().sig_failures_burst, 2);
        for _ in 0..2 {
            rig.guard.signature_failure(&a);
        }
        let (acts, moved) = rig.advance(WINDOW);
        assert_eq!(
            deviations(&acts),
            [(a.clone(), Measure::SignatureFailures, AnomalyAction::Record)]
        );
        assert!(moved.is_empty());
    }
}
