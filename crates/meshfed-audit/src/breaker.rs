//! A partner's circuit breaker (DESIGN §3.13): closed → open → half-open → closed.
//!
//! **What it is.** A [`Breaker`] says whether traffic to a partner may flow ([`Admission`]).
//! It opens when [tripped](Breaker::trip) (by an anomaly [`Deviation`](crate::anomaly::Deviation),
//! as policy decides) or after [`BreakerConfig::failure_threshold`] consecutive failures; once
//! the open time has passed it is half-open and lets a bounded number of messages through as
//! probes; after [`BreakerConfig::probes_to_close`] successful probes or clean windows it closes,
//! and any failure while half-open opens it again for twice as long (up to
//! [`BreakerConfig::max_open`]).
//!
//! **What it is not.** No IO and no clock: time is the `now` argument, the next moment the
//! breaker needs to be woken is [`Breaker::poll_timeout`], and every change of state leaves as a
//! [`Transition`] through [`Breaker::poll_event`], for the node to audit, count and log. It drops
//! nothing: while it holds, callers keep reliable messages queued.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// How long a breaker stays open and what closes it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// How long the breaker stays open the first time. Default 5 s.
    pub base_open: Duration,
    /// The longest it stays open: each failure while half-open doubles the open time up to
    /// this. Default 5 minutes.
    pub max_open: Duration,
    /// Successful probes or clean windows in a row that close a half-open breaker. Default 3.
    pub probes_to_close: u32,
    /// Messages let through as probes per probe window while half-open. Default 10.
    pub probes_per_window: u32,
    /// The probe window. Default 1 s.
    pub probe_window: Duration,
    /// Consecutive failures (link errors, timeouts) that open a closed breaker. Default 5.
    pub failure_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            base_open: Duration::from_secs(5),
            max_open: Duration::from_secs(300),
            probes_to_close: 3,
            probes_per_window: 10,
            probe_window: Duration::from_secs(1),
            failure_threshold: 5,
        }
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Traffic flows.
    Closed,
    /// Traffic is held until `until`.
    Open {
        /// When the breaker becomes half-open.
        until: Instant,
    },
    /// A few messages pass as probes; enough successes close the breaker, a failure opens it.
    HalfOpen {
        /// When the breaker became half-open.
        since: Instant,
        /// Successful probes or clean windows so far.
        successes: u32,
        /// Probes still allowed in the current probe window.
        probes_left: u32,
        /// When the current probe window ends and the probes are allowed afresh.
        window_end: Instant,
    },
}

impl State {
    /// The state's name, as transitions report it.
    pub fn name(&self) -> StateName {
        match self {
            Self::Closed => StateName::Closed,
            Self::Open { .. } => StateName::Open,
            Self::HalfOpen { .. } => StateName::HalfOpen,
        }
    }
}

/// A state's name, without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateName {
    /// [`State::Closed`].
    Closed,
    /// [`State::Open`].
    Open,
    /// [`State::HalfOpen`].
    HalfOpen,
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        })
    }
}

/// What a breaker lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send normally (closed).
    Pass,
    /// Send this message as a probe and report how it went with
    /// [`Breaker::probe_result`] (half-open).
    Probe,
    /// Keep the message queued (open, or half-open with no probe left in this window).
    Hold,
}

/// A change of a breaker's state, for the node to audit, count and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: StateName,
    /// The state entered.
    pub to: StateName,
    /// Why, as a phrase ("5 consecutive failures", "open time of 5s passed", ...).
    pub reason: String,
    /// When.
    pub at: Instant,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit {} → {}: {}", self.from, self.to, self.reason)
    }
}

/// One partner's circuit breaker; see the module documentation.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    /// The length of the current open period, or of the next one while closed.
    open_for: Duration,
    /// Failures in a row while closed.
    failures: u32,
    events: VecDeque<Transition>,
}

impl Breaker {
    /// A closed breaker. A `max_open` below `base_open` is raised to it, and `probes_to_close`
    /// and `probes_per_window` are at least 1.
    pub fn new(config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            max_open: config.max_open.max(config.base_open),
            probes_to_close: config.probes_to_close.max(1),
            probes_per_window: config.probes_per_window.max(1),
            failure_threshold: config.failure_threshold.max(1),
            ..config
        };
        Self {
            open_for: config.base_open,
            config,
            state: State::Closed,
            failures: 0,
            events: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Where the breaker is.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// How long the breaker stays open when it next opens from closed, or (while open or
    /// half-open) how long its current or last open period is.
    pub fn open_for(&self) -> Duration {
        self.open_for
    }

    /// What the breaker lets through, without taking a probe: [`Admission::Probe`] while
    /// half-open with a probe left in the window. The data path uses [`admit`](Self::admit).
    pub fn allows(&self) -> Admission {
        match self.state {
            State::Closed => Admission::Pass,
            State::Open { .. } => Admission::Hold,
            State::HalfOpen { probes_left: 0, .. } => Admission::Hold,
            State::HalfOpen { .. } => Admission::Probe,
        }
    }

    /// What the breaker lets through for one message, taking a probe from the window's
    /// allowance when it answers [`Admission::Probe`].
    pub fn admit(&mut self, now: Instant) -> Admission {
        self.refill(now);
        let admission = self.allows();
        if let State::HalfOpen { probes_left, .. } = &mut self.state
            && admission == Admission::Probe
        {
            *probes_left = probes_left.saturating_sub(1);
        }
        admission
    }

    /// Opens the breaker: from closed for the current open time, from half-open for twice the
    /// last one (up to the maximum). Does nothing while open.
    pub fn trip(&mut self, now: Instant, reason: String) {
        match self.state {
            State::Closed => self.open(now, reason),
            State::HalfOpen { .. } => {
                self.open_for = self.open_for.saturating_mul(2).min(self.config.max_open);
                self.open(now, reason);
            }
            State::Open { .. } => {}
        }
    }

    /// Counts a failure (a link error, a timeout): the `failure_threshold`-th in a row while
    /// closed opens the breaker; one while half-open opens it again.
    pub fn failure(&mut self, now: Instant) {
        match self.state {
            State::Closed => {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.config.failure_threshold {
                    let reason = format!("{} consecutive failures", self.failures);
                    self.trip(now, reason);
                }
            }
            State::HalfOpen { .. } => self.trip(now, "failure while half-open".to_owned()),
            State::Open { .. } => {}
        }
    }

    /// Ends a run of failures.
    pub fn success(&mut self) {
        self.failures = 0;
    }

    /// Reports how a probe went: while half-open, a success counts towards closing and a
    /// failure opens the breaker again. Ignored in other states (a late answer).
    pub fn probe_result(&mut self, now: Instant, ok: bool) {
        if !matches!(self.state, State::HalfOpen { .. }) {
            return;
        }
        if ok {
            self.count_success(now, "probes");
        } else {
            self.trip(now, "probe failed".to_owned());
        }
    }

    /// Reports a window in which the partner's traffic raised no deviation: while half-open, it
    /// counts towards closing like a successful probe. Ignored in other states.
    pub fn clean(&mut self, now: Instant) {
        if matches!(self.state, State::HalfOpen { .. }) {
            self.count_success(now, "clean windows or probes");
        }
    }

    /// Moves an open breaker whose time has passed to half-open, and gives a half-open one its
    /// probes afresh when the probe window has ended.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Open { until } = self.state
            && now >= until
        {
            let reason = format!("open time of {:?} passed", self.open_for);
            self.state = State::HalfOpen {
                since: now,
                successes: 0,
                probes_left: self.config.probes_per_window,
                window_end: self.window_end(now),
            };
            self.record(StateName::Open, reason, now);
            return;
        }
        self.refill(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called: the end of the
    /// open time, or of a probe window in which probes were taken; `None` otherwise.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Open { until } => Some(until),
            State::HalfOpen {
                probes_left,
                window_end,
                ..
            } => (probes_left < self.config.probes_per_window).then_some(window_end),
        }
    }

    /// The next transition not yet taken, oldest first.
    pub fn poll_event(&mut self) -> Option<Transition> {
        self.events.pop_front()
    }

    fn open(&mut self, now: Instant, reason: String) {
        let from = self.state.name();
        // An open time beyond the end of `Instant` is forever in practice.
        let until = now.checked_add(self.open_for).unwrap_or(now);
        self.state = State::Open { until };
        self.failures = 0;
        self.record(from, reason, now);
    }

    fn count_success(&mut self, now: Instant, what: &str) {
        let State::HalfOpen { successes, .. } = &mut self.state else {
            return;
        };
        *successes = successes.saturating_add(1);
        if *successes < self.config.probes_to_close {
            return;
        }
        let reason = format!("{} {what} in a row succeeded", self.config.probes_to_close);
        self.state = State::Closed;
        self.open_for = self.config.base_open;
        self.failures = 0;
        self.record(StateName::HalfOpen, reason, now);
    }

    fn refill(&mut self, now: Instant) {
        let next_end = self.window_end(now);
        if let State::HalfOpen {
            probes_left,
            window_end,
            ..
        } = &mut self.state
            && now >= *window_end
        {
            *probes_left = self.config.probes_per_window;
            *window_end = next_end;
        }
    }

    fn window_end(&self, now: Instant) -> Instant {
        now.checked_add(self.config.probe_window).unwrap_or(now)
    }

    fn record(&mut self, from: StateName, reason: String, at: Instant) {
        self.events.push_back(Transition {
            from,
            to: self.state.name(),
            reason,
            at,
        });
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn events(breaker: &mut Breaker) -> Vec<(StateName, StateName, String)> {
        std::iter::from_fn(|| breaker.poll_event())
            .map(|t| (t.from, t.to, t.reason))
            .collect()
    }

    /// Opens from closed, then waits the open time out: half-open at the returned instant.
    fn open_then_half_open(breaker: &mut Breaker, now: Instant) -> Instant {
        breaker.trip(now, "rate deviation".to_owned());
        let until = breaker.poll_timeout().unwrap();
        breaker.handle_timeout(until);
        assert_eq!(breaker.state().name(), StateName::HalfOpen);
        until
    }

    #[test]
    fn full_cycle_closed_open_half_open_closed() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        assert_eq!(b.allows(), Admission::Pass);
        assert_eq!(b.poll_timeout(), None);

        b.trip(t0, "partner supplier-b: rate 5,210/s".to_owned());
        assert_eq!(
            b.state(),
            &State::Open {
                until: t0 + secs(5)
            }
        );
        assert_eq!(b.allows(), Admission::Hold);
        assert_eq!(b.admit(t0 + secs(1)), Admission::Hold);
        assert_eq!(b.poll_timeout(), Some(t0 + secs(5)));

        b.handle_timeout(t0 + Duration::from_millis(4_999));
        assert_eq!(b.state().name(), StateName::Open);
        b.handle_timeout(t0 + secs(5));
        assert_eq!(
            b.state(),
            &State::HalfOpen {
                since: t0 + secs(5),
                successes: 0,
                probes_left: 10,
                window_end: t0 + secs(6),
            }
        );
        assert_eq!(b.admit(t0 + secs(5)), Admission::Probe);
        b.probe_result(t0 + secs(5), true);
        b.clean(t0 + secs(6));
        assert_eq!(b.state().name(), StateName::HalfOpen);
        b.probe_result(t0 + secs(6), true);
        assert_eq!(b.state(), &State::Closed);
        assert_eq!(b.allows(), Admission::Pass);
        assert_eq!(b.poll_timeout(), None);

        let t = b.poll_event().unwrap();
        assert_eq!(t.at, t0);
        assert_eq!(
            t.to_string(),
            "circuit closed → open: partner supplier-b: rate 5,210/s"
        );
        assert_eq!(
            events(&mut b),
            [
                (
                    StateName::Open,
                    StateName::HalfOpen,
                    "open time of 5s passed".to_owned()
                ),
                (
                    StateName::HalfOpen,
                    StateName::Closed,
                    "3 probes in a row succeeded".to_owned()
                ),
            ]
        );
        assert_eq!(b.poll_event(), None);
    }

    #[test]
    fn half_open_failure_doubles_the_open_time_up_to_the_maximum() {
        let mut now = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        now = open_then_half_open(&mut b, now);
        let mut open_times = vec![];
        for _ in 0..8 {
            b.probe_result(now, false);
            let State::Open { until } = *b.state() else {
                panic!("not open: {:?}", b.state());
            };
            open_times.push((until - now).as_secs());
            b.handle_timeout(until);
            now = until;
        }
        assert_eq!(open_times, [10, 20, 40, 80, 160, 300, 300, 300]);
        let reopened = events(&mut b)
            .into_iter()
            .filter(|(from, to, _)| (*from, *to) == (StateName::HalfOpen, StateName::Open))
            .count();
        assert_eq!(reopened, 8);
    }

    #[test]
    fn closing_resets_the_open_time() {
        let mut now = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        now = open_then_half_open(&mut b, now);
        b.failure(now);
        assert_eq!(b.open_for(), secs(10));
        now += secs(10);
        b.handle_timeout(now);
        for _ in 0..3 {
            b.clean(now);
        }
        assert_eq!(b.state(), &State::Closed);
        assert_eq!(b.open_for(), secs(5));
        b.trip(now, "again".to_owned());
        assert_eq!(
            b.state(),
            &State::Open {
                until: now + secs(5)
            }
        );
    }

    #[test]
    fn consecutive_failures_trip_at_the_threshold_and_success_resets_them() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        for _ in 0..4 {
            b.failure(t0);
        }
        b.success();
        for _ in 0..4 {
            b.failure(t0);
        }
        assert_eq!(b.state(), &State::Closed);
        b.failure(t0 + secs(1));
        assert_eq!(
            b.state(),
            &State::Open {
                until: t0 + secs(6)
            }
        );
        assert_eq!(
            events(&mut b),
            [(
                StateName::Closed,
                StateName::Open,
                "5 consecutive failures".to_owned()
            )]
        );
    }

    #[test]
    fn half_open_lets_a_bounded_number_of_probes_through_per_window() {
        let config = BreakerConfig {
            probes_per_window: 2,
            ..BreakerConfig::default()
        };
        let mut b = Breaker::new(config);
        let start = open_then_half_open(&mut b, Instant::now());
        assert_eq!(b.poll_timeout(), None, "no probe taken, nothing to refill");
        assert_eq!(b.admit(start), Admission::Probe);
        assert_eq!(b.admit(start), Admission::Probe);
        assert_eq!(b.admit(start), Admission::Hold);
        assert_eq!(b.allows(), Admission::Hold);
        assert_eq!(b.poll_timeout(), Some(start + secs(1)));
        b.handle_timeout(start + secs(1));
        assert_eq!(b.allows(), Admission::Probe);
        assert_eq!(b.admit(start + secs(1)), Admission::Probe);
        // `admit` refills by itself too, if the driver's timer is late.
        assert_eq!(b.admit(start + secs(1)), Admission::Probe);
        assert_eq!(b.admit(start + secs(3)), Admission::Probe);
        assert_eq!(b.poll_timeout(), Some(start + secs(4)));
    }

    #[test]
    fn tripping_an_open_breaker_changes_nothing() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        b.trip(t0, "first".to_owned());
        b.trip(t0 + secs(4), "second".to_owned());
        b.failure(t0 + secs(4));
        assert_eq!(
            b.state(),
            &State::Open {
                until: t0 + secs(5)
            }
        );
        assert_eq!(events(&mut b).len(), 1);
    }

    #[test]
    fn clean_windows_and_probe_results_are_ignored_unless_half_open() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        b.probe_result(t0, false);
        b.clean(t0);
        assert_eq!(b.state(), &State::Closed);
        b.trip(t0, "deviation".to_owned());
        for _ in 0..5 {
            b.probe_result(t0, true);
            b.clean(t0);
        }
        b.probe_result(t0, false);
        assert_eq!(
            b.state(),
            &State::Open {
                until: t0 + secs(5)
            }
        );
        assert_eq!(events(&mut b).len(), 1);
    }

    #[test]
    fn failure_while_half_open_reopens() {
        let mut b = Breaker::new(BreakerConfig::default());
        let now = open_then_half_open(&mut b, Instant::now());
        b.clean(now);
        b.clean(now);
        b.failure(now);
        assert_eq!(
            b.state(),
            &State::Open {
                until: now + secs(10)
            }
        );
        let last = events(&mut b).pop().unwrap();
        assert_eq!(
            last,
            (
                StateName::HalfOpen,
                StateName::Open,
                "failure while half-open".to_owned()
            )
        );
    }

    #[test]
    fn config_out_of_range_is_brought_into_range() {
        let b = Breaker::new(BreakerConfig {
            base_open: secs(60),
            max_open: secs(1),
            probes_to_close: 0,
            probes_per_window: 0,
            failure_threshold: 0,
            ..BreakerConfig::default()
        });
        let c = b.config();
        assert_eq!(c.max_open, secs(60));
        assert_eq!(
            (c.probes_to_close, c.probes_per_window, c.failure_threshold),
            (1, 1, 1)
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Trip,
        Failure,
        Success,
        Probe(bool),
        Clean,
        Timeout,
        Admit,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Trip),
            Just(Op::Failure),
            Just(Op::Success),
            any::<bool>().prop_map(Op::Probe),
            Just(Op::Clean),
            Just(Op::Timeout),
            Just(Op::Admit),
        ]
    }

    proptest! {
        #[test]
        fn breaker_never_goes_from_closed_to_half_open(
            steps in prop::collection::vec((op(), 0u64..20_000), 0..300),
        ) {
            let config = BreakerConfig::default();
            let mut b = Breaker::new(config.clone());
            let mut now = Instant::now();
            let mut last = StateName::Closed;
            for (op, advance_ms) in steps {
                now += Duration::from_millis(advance_ms);
                match op {
                    Op::Trip => b.trip(now, "tripped".to_owned()),
                    Op::Failure => b.failure(now),
                    Op::Success => b.success(),
                    Op::Probe(ok) => b.probe_result(now, ok),
                    Op::Clean => b.clean(now),
                    Op::Timeout => b.handle_timeout(now),
                    Op::Admit => {
                        let admission = b.admit(now);
                        let expected = match b.state().name() {
                            StateName::Closed => Admission::Pass,
                            StateName::Open => Admission::Hold,
                            StateName::HalfOpen => admission,
                        };
                        prop_assert_eq!(admission, expected);
                    }
                }
                while let Some(t) = b.poll_event() {
                    prop_assert_eq!(t.from, last);
                    prop_assert_ne!((t.from, t.to), (StateName::Closed, StateName::HalfOpen));
                    prop_assert_ne!(t.from, t.to);
                    prop_assert_eq!(t.at, now);
                    last = t.to;
                }
                prop_assert_eq!(b.state().name(), last);
                prop_assert!(b.open_for() >= config.base_open);
                prop_assert!(b.open_for() <= config.max_open);
                if let State::Open { until } = *b.state() {
                    prop_assert!(until <= now + config.max_open);
                    prop_assert_eq!(b.allows(), Admission::Hold);
                }
                if let State::HalfOpen { probes_left, successes, .. } = *b.state() {
                    prop_assert!(probes_left <= config.probes_per_window);
                    prop_assert!(successes < config.probes_to_close);
                }
            }
        }
    }
}
