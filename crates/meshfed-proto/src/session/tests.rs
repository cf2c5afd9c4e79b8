//! Deterministic simulation of two link sessions: a virtual clock, a delay per direction, a hook
//! that loses frames in either direction, and endpoints that can be frozen (a stopped process:
//! it neither sends nor reads nor keeps time). Each endpoint's driver is the loop of the module
//! documentation: frames in, frames out, events after, timeouts when due, and the link closed
//! after `Closed`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const INTERVAL: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

/// One endpoint and everything its driver saw, with times since the start.
struct Endpoint {
    session: LinkSession,
    events: Vec<(Duration, SessionEvent)>,
    received: Vec<(Duration, FrameType, Result<Received, SessionError>)>,
    sent: Vec<(Duration, Frame)>,
    frozen: bool,
    /// The driver closed the link after `Closed`: what still arrives is discarded.
    link_closed: bool,
}

impl Endpoint {
    fn new(session: LinkSession) -> Self {
        Self {
            session,
            events: Vec::new(),
            received: Vec::new(),
            sent: Vec::new(),
            frozen: false,
            link_closed: false,
        }
    }

    fn health_changes(&self) -> Vec<(Duration, Health)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match e {
                SessionEvent::HealthChanged(h) => Some((*t, *h)),
                _ => None,
            })
            .collect()
    }

    fn closed(&self) -> Option<(Duration, CloseReason)> {
        self.events.iter().find_map(|(t, e)| match e {
            SessionEvent::Closed(r) => Some((*t, r.clone())),
            _ => None,
        })
    }

    /// Events other than heartbeat bookkeeping (round trips).
    fn facts(&self) -> Vec<(Duration, SessionEvent)> {
        self.events
            .iter()
            .filter(|(_, e)| !matches!(e, SessionEvent::RttMeasured(_)))
            .cloned()
            .collect()
    }

    /// What became of the last frame of type `ty` that arrived.
    fn last_received(&self, ty: FrameType) -> &Result<Received, SessionError> {
        &self
            .received
            .iter()
            .rev()
            .find(|(_, t, _)| *t == ty)
            .unwrap_or_else(|| panic!("no {ty:?} arrived"))
            .2
    }
}

/// Decides whether a frame sent by a side at a time reaches the other side.
type Deliver = Box<dyn FnMut(Side, Duration, &Frame) -> bool>;

struct Pair {
    t0: Instant,
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    /// One-way delay of frames sent by A, and by B.
    delay: (Duration, Duration),
    /// In flight, by arrival time and sending order: (to, frame).
    flight: BTreeMap<(Instant, u64), (Side, Frame)>,
    sent_count: u64,
    deliver: Deliver,
}

impl Pair {
    fn new() -> Self {
        Self::starting(FlowState::Active, FlowState::Active)
    }

    fn starting(a: FlowState, b: FlowState) -> Self {
        let t0 = Instant::now();
        let config = SessionConfig {
            heartbeat_interval: INTERVAL,
        };
        Self {
            t0,
            now: t0,
            a: Endpoint::new(LinkSession::new(config, t0, a)),
            b: Endpoint::new(LinkSession::new(config, t0, b)),
            delay: (ms(20), ms(20)),
            flight: BTreeMap::new(),
            sent_count: 0,
            deliver: Box::new(|_, _, _| true),
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn side(&mut self, side: Side) -> &mut Endpoint {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Loses every frame `from` sends from time `at` on.
    fn lose_from(&mut self, from: Side, at: Duration) {
        let mut before = std::mem::replace(&mut self.deliver, Box::new(|_, _, _| true));
        self.deliver = Box::new(move |side, t, f| (side != from || t < at) && before(side, t, f));
    }

    /// Puts a frame on the link as `from`'s driver would (data frames, or a misbehaving peer).
    fn send_raw(&mut self, from: Side, frame: Frame) {
        let now = self.elapsed();
        if !(self.deliver)(from, now, &frame) {
            return;
        }
        let delay = match from {
            Side::A => self.delay.0,
            Side::B => self.delay.1,
        };
        self.sent_count += 1;
        self.flight
            .insert((self.now + delay, self.sent_count), (from.other(), frame));
    }

    /// Each running endpoint's driver: frames out first, then events; the link closes after
    /// `Closed`.
    fn flush(&mut self) {
        let now = self.elapsed();
        for side in [Side::A, Side::B] {
            if self.side(side).frozen {
                continue;
            }
            while let Some(frame) = self.side(side).session.poll_transmit() {
                let ep = self.side(side);
                assert!(!ep.link_closed, "{side:?} sent {:?} after Closed", frame.ty);
                ep.sent.push((now, frame.clone()));
                self.send_raw(side, frame);
            }
            let ep = self.side(side);
            while let Some(event) = ep.session.poll_event() {
                assert!(!ep.link_closed, "{side:?} reported {event:?} after Closed");
                if matches!(event, SessionEvent::Closed(_)) {
                    ep.link_closed = true;
                }
                ep.events.push((now, event));
            }
        }
    }

    /// Runs until `until` after the start, virtual time only; what is due at `until` happens.
    fn run_until(&mut self, until: Duration) {
        let end = self.t0 + until;
        for _ in 0..1_000_000 {
            self.flush();
            let arrival = self
                .flight
                .iter()
                .find(|(_, (to, _))| !self.endpoint(*to).frozen)
                .map(|(k, _)| *k);
            let timer = [&self.a, &self.b]
                .into_iter()
                .filter(|ep| !ep.frozen)
                .filter_map(|ep| ep.session.poll_timeout())
                .min();
            let next = [arrival.map(|(at, _)| at), timer]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|t| *t <= end) else {
                self.now = self.now.max(end);
                self.flush();
                return;
            };
            self.now = self.now.max(next);
            match arrival {
                Some(key @ (at, _)) if timer.is_none_or(|t| at <= t) => {
                    let Some((to, frame)) = self.flight.remove(&key) else {
                        unreachable!("the key was just found");
                    };
                    let now = self.now;
                    let elapsed = self.elapsed();
                    let ep = self.side(to);
                    if !ep.link_closed {
                        let result = ep.session.handle_frame(&frame, now);
                        ep.received.push((elapsed, frame.ty, result));
                    }
                }
                _ => {
                    let now = self.now;
                    for side in [Side::A, Side::B] {
                        let ep = self.side(side);
                        if !ep.frozen && ep.session.poll_timeout().is_some_and(|t| t <= now) {
                            ep.session.handle_timeout(now);
                        }
                    }
                }
            }
        }
        panic!("simulation did not reach {until:?}");
    }

    fn endpoint(&self, side: Side) -> &Endpoint {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    fn status(&self, side: Side) -> SessionStatus {
        self.endpoint(side).session.status(self.now)
    }
}

fn data(ty: FrameType) -> Frame {
    Frame::new(ty, vec![0xd0, 0x0d])
}

fn refused(by: SuspendedBy) -> Result<Received, SessionError> {
    Ok(Received::Refused {
        frame: FrameType::Transfer,
        reason: Refusal::FlowSuspended(by),
    })
}

/// `from` sends a transfer and an acknowledgement; returns what became of each at the other side.
fn exchange(
    pair: &mut Pair,
    from: Side,
) -> (
    Result<Received, SessionError>,
    Result<Received, SessionError>,
) {
    pair.send_raw(from, data(FrameType::Transfer));
    pair.send_raw(from, data(FrameType::Ack));
    let t = pair.elapsed() + secs(1) / 2;
    pair.run_until(t);
    let to = pair.endpoint(from.other());
    (
        to.last_received(FrameType::Transfer).clone(),
        to.last_received(FrameType::Ack).clone(),
    )
}

#[test]
fn steady_heartbeats_keep_both_healthy_and_measure_the_simulated_round_trip() {
    let mut pair = Pair::new();
    pair.delay = (ms(30), ms(10));
    pair.run_until(secs(60));
    for side in [Side::A, Side::B] {
        let ep = pair.endpoint(side);
        assert_eq!(ep.health_changes(), [], "{side:?}");
        assert!(ep.closed().is_none(), "{side:?}");
        let rtts: Vec<_> = ep
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                SessionEvent::RttMeasured(d) => Some(*d),
                _ => None,
            })
            .collect();
        // Heartbeats at 0 s, 1 s, … 59 s were answered; the one at 60 s is on its way.
        assert_eq!(rtts, vec![ms(40); 60], "{side:?}");
        let heartbeats = ep
            .sent
            .iter()
            .filter(|(_, f)| f.ty == FrameType::Heartbeat)
            .count();
        assert_eq!(heartbeats, 61, "{side:?}");
        assert_eq!(
            pair.status(side),
            SessionStatus {
                health: Health::Healthy,
                last_heartbeat_ack: Some(pair.t0 + secs(59) + ms(40)),
                rtt: Some(ms(40)),
                connected_since: pair.t0,
                flow: FlowState::Active,
            }
        );
    }
}

#[test]
fn heartbeats_lost_one_way_degrade_then_close_the_deaf_side_at_two_and_three_intervals() {
    let mut pair = Pair::new();
    pair.lose_from(Side::A, secs(10));
    pair.run_until(secs(11) + ms(500));
    // B last heard A at 9.040 s: the acknowledgement of its own heartbeat of 9 s.
    assert_eq!(pair.status(Side::B).health, Health::Degraded);
    assert_eq!(pair.status(Side::A).health, Health::Healthy);
    pair.run_until(secs(30));
    assert_eq!(
        pair.b.facts(),
        [
            (
                secs(11) + ms(40),
                SessionEvent::HealthChanged(Health::Degraded)
            ),
            (
                secs(12) + ms(40),
                SessionEvent::HealthChanged(Health::Unreachable)
            ),
            (
                secs(12) + ms(40),
                SessionEvent::Closed(CloseReason::Silent(secs(3)))
            ),
        ]
    );
    // A heard B until B closed (its heartbeat of 12 s, at 12.020 s), then goes the same way.
    assert_eq!(
        pair.a.facts(),
        [
            (
                secs(14) + ms(20),
                SessionEvent::HealthChanged(Health::Degraded)
            ),
            (
                secs(15) + ms(20),
                SessionEvent::HealthChanged(Health::Unreachable)
            ),
            (
                secs(15) + ms(20),
                SessionEvent::Closed(CloseReason::Silent(secs(3)))
            ),
        ]
    );
    // A's last answer came back at 9.040 s; nothing newer is claimed.
    let a = pair.a.session.status(pair.t0 + secs(12));
    assert_eq!(a.last_heartbeat_ack, Some(pair.t0 + secs(9) + ms(40)));
    assert_eq!(pair.status(Side::A).health, Health::Unreachable);
}

#[test]
fn heartbeats_lost_both_ways_close_both_sides_after_three_intervals() {
    let mut pair = Pair::new();
    pair.lose_from(Side::A, secs(10));
    pair.lose_from(Side::B, secs(10));
    pair.run_until(secs(30));
    for side in [Side::A, Side::B] {
        assert_eq!(
            pair.endpoint(side).health_changes(),
            [
                (secs(11) + ms(40), Health::Degraded),
                (secs(12) + ms(40), Health::Unreachable),
            ],
            "{side:?}"
        );
        assert_eq!(
            pair.endpoint(side).closed(),
            Some((secs(12) + ms(40), CloseReason::Silent(secs(3))))
        );
    }
}

#[test]
fn frozen_peer_goes_degraded_then_unreachable() {
    let mut pair = Pair::new();
    pair.run_until(secs(10) - ms(1));
    pair.b.frozen = true;
    pair.run_until(secs(11) + ms(500));
    assert_eq!(pair.status(Side::A).health, Health::Degraded);
    pair.run_until(secs(30));
    // B's heartbeat of 9 s arrived at 9.020 s, its answer to A's at 9.040 s; then nothing.
    assert_eq!(
        pair.a.facts(),
        [
            (
                secs(11) + ms(40),
                SessionEvent::HealthChanged(Health::Degraded)
            ),
            (
                secs(12) + ms(40),
                SessionEvent::HealthChanged(Health::Unreachable)
            ),
            (
                secs(12) + ms(40),
                SessionEvent::Closed(CloseReason::Silent(secs(3)))
            ),
        ]
    );
    assert!(pair.b.events.iter().all(|(t, _)| *t < secs(10)));
}

/// `side` suspends at 5 s and resumes at 8 s; transfers are refused both ways meanwhile,
/// acknowledgements pass.
fn suspension_from(side: Side) {
    let peer = side.other();
    let mut pair = Pair::new();
    pair.run_until(secs(5));
    pair.side(side).session.suspend().unwrap();
    assert_eq!(pair.side(side).session.flow(), FlowState::Suspended);
    pair.run_until(secs(6));
    assert_eq!(pair.endpoint(peer).session.flow(), FlowState::Suspended);

    let (transfer, ack) = exchange(&mut pair, peer);
    assert_eq!(transfer, refused(SuspendedBy::Local));
    assert_eq!(ack, Ok(Received::Data(data(FrameType::Ack))));
    let (transfer, ack) = exchange(&mut pair, side);
    assert_eq!(transfer, refused(SuspendedBy::Peer));
    assert_eq!(ack, Ok(Received::Data(data(FrameType::Ack))));

    pair.run_until(secs(8));
    pair.side(side).session.resume().unwrap();
    pair.run_until(secs(9));
    let (transfer, _) = exchange(&mut pair, peer);
    assert_eq!(transfer, Ok(Received::Data(data(FrameType::Transfer))));
    let (transfer, _) = exchange(&mut pair, side);
    assert_eq!(transfer, Ok(Received::Data(data(FrameType::Transfer))));

    assert_eq!(
        pair.endpoint(side).facts(),
        [
            (secs(5), SessionEvent::FlowChanged(FlowState::Suspended)),
            (secs(8), SessionEvent::FlowChanged(FlowState::Active)),
        ]
    );
    assert_eq!(
        pair.endpoint(peer).facts(),
        [
            (secs(5) + ms(20), SessionEvent::PeerSuspended),
            (
                secs(5) + ms(20),
                SessionEvent::FlowChanged(FlowState::Suspended)
            ),
            (secs(8) + ms(20), SessionEvent::PeerResumed),
            (
                secs(8) + ms(20),
                SessionEvent::FlowChanged(FlowState::Active)
            ),
        ]
    );
    for s in [Side::A, Side::B] {
        assert_eq!(pair.status(s).health, Health::Healthy, "heartbeats go on");
    }
}

#[test]
fn suspension_from_a_refuses_transfers_both_ways_and_lets_acks_pass_until_a_resumes() {
    suspension_from(Side::A);
}

#[test]
fn suspension_from_b_refuses_transfers_both_ways_and_lets_acks_pass_until_b_resumes() {
    suspension_from(Side::B);
}

#[test]
fn interest_frames_pass_while_the_federation_is_suspended() {
    let mut pair = Pair::new();
    pair.run_until(secs(5));
    pair.a.session.suspend().unwrap();
    pair.run_until(secs(6));
    for ty in [FrameType::Interest, FrameType::InterestAck] {
        pair.send_raw(Side::A, data(ty));
        pair.send_raw(Side::B, data(ty));
        let t = pair.elapsed() + secs(1) / 2;
        pair.run_until(t);
        for side in [Side::A, Side::B] {
            let got = pair.endpoint(side).last_received(ty).clone();
            assert_eq!(got, Ok(Received::Data(data(ty))), "{side:?} {ty:?}");
        }
    }
}

#[test]
fn suspension_from_both_sides_resumes_only_when_both_have_resumed() {
    let mut pair = Pair::new();
    pair.run_until(secs(5));
    pair.a.session.suspend().unwrap();
    pair.run_until(secs(6));
    pair.b.session.suspend().unwrap();
    pair.run_until(secs(7));
    assert_eq!(pair.a.session.suspended_by(), Some(SuspendedBy::Both));
    assert_eq!(pair.b.session.suspended_by(), Some(SuspendedBy::Both));

    pair.a.session.resume().unwrap();
    pair.run_until(secs(8));
    assert_eq!(pair.a.session.suspended_by(), Some(SuspendedBy::Peer));
    assert_eq!(pair.b.session.suspended_by(), Some(SuspendedBy::Local));
    let (transfer, ack) = exchange(&mut pair, Side::A);
    assert_eq!(transfer, refused(SuspendedBy::Local));
    assert_eq!(ack, Ok(Received::Data(data(FrameType::Ack))));
    let (transfer, _) = exchange(&mut pair, Side::B);
    assert_eq!(transfer, refused(SuspendedBy::Peer));

    pair.run_until(secs(10));
    pair.b.session.resume().unwrap();
    pair.run_until(secs(11));
    for side in [Side::A, Side::B] {
        assert_eq!(pair.endpoint(side).session.flow(), FlowState::Active);
        let (transfer, _) = exchange(&mut pair, side);
        assert_eq!(transfer, Ok(Received::Data(data(FrameType::Transfer))));
    }
    // The flow changed once each way at each side: when it first stopped, and when both resumed.
    assert_eq!(
        pair.a.facts(),
        [
            (secs(5), SessionEvent::FlowChanged(FlowState::Suspended)),
            (secs(6) + ms(20), SessionEvent::PeerSuspended),
            (secs(10) + ms(20), SessionEvent::PeerResumed),
            (
                secs(10) + ms(20),
                SessionEvent::FlowChanged(FlowState::Active)
            ),
        ]
    );
    assert_eq!(
        pair.b.facts(),
        [
            (secs(5) + ms(20), SessionEvent::PeerSuspended),
            (
                secs(5) + ms(20),
                SessionEvent::FlowChanged(FlowState::Suspended)
            ),
            (secs(7) + ms(20), SessionEvent::PeerResumed),
            (secs(10), SessionEvent::FlowChanged(FlowState::Active)),
        ]
    );
}

#[test]
fn session_started_suspended_announces_its_hold_to_the_peer() {
    let mut pair = Pair::starting(FlowState::Suspended, FlowState::Active);
    assert_eq!(pair.a.session.suspended_by(), Some(SuspendedBy::Local));
    pair.run_until(secs(1));
    assert_eq!(pair.b.session.suspended_by(), Some(SuspendedBy::Peer));
    assert_eq!(
        pair.b.facts(),
        [
            (ms(20), SessionEvent::PeerSuspended),
            (ms(20), SessionEvent::FlowChanged(FlowState::Suspended)),
        ]
    );
    assert_eq!(pair.a.facts(), []);
}

/// `side` terminates at 5 s (just after sending a heartbeat and a lifecycle frame).
fn termination_from(side: Side, kind: Termination) {
    let peer = side.other();
    let mut pair = Pair::new();
    pair.run_until(secs(5));
    let ep = pair.side(side);
    ep.session.suspend().unwrap();
    ep.session.terminate(kind, "planned shutdown").unwrap();
    assert!(!ep.session.is_closed(), "closed once the frame is taken");
    assert_eq!(ep.session.poll_timeout(), None);
    pair.run_until(secs(20));

    let ep = pair.endpoint(side);
    let sent: Vec<_> = ep.sent.iter().map(|(t, f)| (*t, f.ty)).collect();
    assert_eq!(
        sent[sent.len() - 3..],
        [
            (secs(5), FrameType::Heartbeat),
            (secs(5), FrameType::Lifecycle),
            (secs(5), FrameType::Termination),
        ],
        "the termination frame is the last one sent"
    );
    assert_eq!(
        ep.closed(),
        Some((secs(5), CloseReason::TerminatedLocally(kind)))
    );
    assert!(ep.session.is_closed());

    let p = pair.endpoint(peer);
    assert_eq!(
        p.facts()[p.facts().len() - 2..],
        [
            (
                secs(5) + ms(20),
                SessionEvent::PeerTerminated {
                    kind,
                    reason: "planned shutdown".into(),
                }
            ),
            (
                secs(5) + ms(20),
                SessionEvent::Closed(CloseReason::TerminatedByPeer(kind))
            ),
        ]
    );
    assert!(p.session.is_closed());
    assert!(p.sent.iter().all(|(t, _)| *t <= secs(5) + ms(20)));
    assert_eq!(pair.status(peer).health, Health::Unreachable);

    let late = pair.side(side).session.terminate(kind, "again");
    assert_eq!(late, Err(SessionClosed));
}

#[test]
fn graceful_termination_from_either_side_is_sent_last_and_closes_both() {
    termination_from(Side::A, Termination::Graceful);
    termination_from(Side::B, Termination::Graceful);
}

#[test]
fn forced_termination_from_either_side_is_sent_last_and_closes_both() {
    termination_from(Side::A, Termination::Forced);
    termination_from(Side::B, Termination::Forced);
}

#[test]
fn peer_error_frame_reports_its_code_and_reason_and_closes_both() {
    let mut pair = Pair::new();
    pair.run_until(secs(3));
    pair.a
        .session
        .close_with_error(
            ErrorCode::BadSignature,
            "transfer signature does not verify",
        )
        .unwrap();
    pair.run_until(secs(10));
    assert_eq!(
        pair.a.sent.last().map(|(t, f)| (*t, f.ty)),
        Some((secs(3), FrameType::Error))
    );
    assert_eq!(
        pair.a.closed(),
        Some((secs(3), CloseReason::ErrorReported(ErrorCode::BadSignature)))
    );
    assert_eq!(
        pair.b.facts(),
        [
            (
                secs(3) + ms(20),
                SessionEvent::PeerReportedError {
                    code: ErrorCode::BadSignature,
                    reason: "transfer signature does not verify".into(),
                }
            ),
            (
                secs(3) + ms(20),
                SessionEvent::Closed(CloseReason::PeerReportedError(ErrorCode::BadSignature))
            ),
        ]
    );
    let reason = pair.b.closed().unwrap().1.to_string();
    assert_eq!(reason, "the peer reported error bad_signature");
}

#[test]
fn handshake_frame_on_an_established_session_is_refused_with_an_error_frame() {
    let mut pair = Pair::new();
    pair.run_until(secs(2));
    pair.send_raw(
        Side::B,
        Frame::new(FrameType::FederationRequest, vec![0xa0]),
    );
    pair.run_until(secs(10));
    let violation = ProtocolViolation::UnexpectedFrame(FrameType::FederationRequest);
    assert_eq!(
        pair.a.last_received(FrameType::FederationRequest),
        &Err(SessionError::Violation(violation.clone()))
    );
    assert_eq!(
        pair.a.closed(),
        Some((secs(2) + ms(20), CloseReason::ProtocolViolation(violation)))
    );
    assert_eq!(
        pair.b.facts()[0].1,
        SessionEvent::PeerReportedError {
            code: ErrorCode::UnexpectedMessage,
            reason: "a FederationRequest frame has no place on an established link session".into(),
        }
    );
    assert!(pair.b.session.is_closed());
}

fn bundle_statement(serial: u8) -> crate::statement::SignedStatement {
    crate::statement::SignedStatement {
        kind: crate::statement::StatementKind::TrustBundle,
        body: vec![serial].into(),
        chain: vec![vec![0x30, serial].into()],
        signature: vec![serial; 96].into(),
    }
}

#[test]
fn a_trust_bundle_reaches_the_peer_as_an_event_and_its_ack_comes_back() {
    let mut pair = Pair::new();
    pair.run_until(secs(2));
    pair.a.session.announce_bundle(bundle_statement(1)).unwrap();
    pair.run_until(secs(3));
    assert_eq!(
        pair.b.facts(),
        [(
            secs(2) + ms(20),
            SessionEvent::PeerBundle(bundle_statement(1))
        )]
    );
    pair.b.session.acknowledge_bundle(1).unwrap();
    pair.run_until(secs(4));
    assert_eq!(
        pair.a.facts(),
        [(
            secs(3) + ms(20),
            SessionEvent::BundleAcknowledged { serial: 1 }
        )]
    );
    assert_eq!(pair.status(Side::A).health, Health::Healthy);
    assert!(!pair.a.session.is_closed() && !pair.b.session.is_closed());
}

#[test]
fn a_trust_bundle_is_delivered_while_the_federation_is_suspended() {
    let mut pair = Pair::starting(FlowState::Suspended, FlowState::Active);
    pair.run_until(secs(1));
    pair.a.session.announce_bundle(bundle_statement(2)).unwrap();
    pair.run_until(secs(2));
    assert!(
        pair.b.facts().contains(&(
            secs(1) + ms(20),
            SessionEvent::PeerBundle(bundle_statement(2))
        )),
        "{:?}",
        pair.b.facts()
    );
}

#[test]
fn a_malformed_trust_bundle_closes_the_session_with_an_error_saying_why() {
    let mut pair = Pair::new();
    pair.run_until(secs(2));
    pair.send_raw(Side::B, Frame::new(FrameType::TrustBundle, vec![0xff]));
    pair.run_until(secs(3));
    assert!(matches!(
        pair.a.last_received(FrameType::TrustBundle),
        Err(SessionError::Violation(ProtocolViolation::Malformed(e))) if e.frame == FrameType::TrustBundle
    ));
    match &pair.b.facts()[0].1 {
        SessionEvent::PeerReportedError { code, reason } => {
            assert_eq!(*code, ErrorCode::Malformed);
            assert!(reason.starts_with("TrustBundle body refused"), "{reason}");
        }
        other => panic!("expected the peer's error, got {other:?}"),
    }
    assert!(pair.a.session.is_closed() && pair.b.session.is_closed());
}

#[test]
fn a_closed_session_takes_no_bundle_command() {
    let mut pair = Pair::new();
    pair.a
        .session
        .terminate(Termination::Graceful, "done")
        .unwrap();
    pair.run_until(secs(1));
    assert_eq!(
        pair.a.session.announce_bundle(bundle_statement(1)),
        Err(SessionClosed)
    );
    assert_eq!(pair.b.session.acknowledge_bundle(1), Err(SessionClosed));
}

fn one_session() -> (Instant, LinkSession) {
    let t0 = Instant::now();
    let config = SessionConfig {
        heartbeat_interval: INTERVAL,
    };
    (t0, LinkSession::new(config, t0, FlowState::Active))
}

fn drain(session: &mut LinkSession) -> (Vec<Frame>, Vec<SessionEvent>) {
    let frames = std::iter::from_fn(|| session.poll_transmit()).collect();
    let events = std::iter::from_fn(|| session.poll_event()).collect();
    (frames, events)
}

#[test]
fn every_handshake_frame_type_is_a_violation_on_a_session() {
    use FrameType as T;
    for ty in [
        T::FederationRequest,
        T::FederationResponse,
        T::TrustCredentialExchange,
        T::TrustCredentialVerification,
        T::PolicyProposal,
        T::PolicyAcceptance,
        T::PolicyCounterproposal,
        T::ConnectionEstablishment,
        T::ConnectionConfirmation,
        T::ActivationRequest,
        T::ActivationConfirmation,
        T::Resume,
        T::ResumeConfirmation,
    ] {
        let (t0, mut s) = one_session();
        let err = s.handle_frame(&Frame::new(ty, vec![]), t0).unwrap_err();
        assert_eq!(
            err,
            SessionError::Violation(ProtocolViolation::UnexpectedFrame(ty))
        );
        let (frames, _) = drain(&mut s);
        let last = frames.last().unwrap();
        assert_eq!(last.ty, T::Error);
        let Ok(Some(Control::Error(e))) = Control::from_frame(last) else {
            panic!("not an error frame");
        };
        assert_eq!(e.code, ErrorCode::UnexpectedMessage.to_u16());
    }
}

#[test]
fn malformed_bodies_close_the_session_with_an_error_naming_the_frame() {
    let cases: [(FrameType, &[u8], &str); 5] = [
        (
            FrameType::Heartbeat,
            &[0xff],
            "Heartbeat body refused: not its CBOR form",
        ),
        (
            FrameType::HeartbeatAck,
            &[0x01],
            "HeartbeatAck body refused: not its CBOR form",
        ),
        (
            FrameType::Lifecycle,
            &[],
            "Lifecycle body refused: not its CBOR form",
        ),
        (
            FrameType::Termination,
            &[0xa1, 0x61, b'x', 0x00],
            "Termination body refused: not its CBOR form",
        ),
        (
            FrameType::Error,
            &[0x80, 0x00],
            "Error body refused: not its CBOR form",
        ),
    ];
    for (ty, body, text) in cases {
        let (t0, mut s) = one_session();
        let err = s
            .handle_frame(&Frame::new(ty, body.to_vec()), t0 + ms(5))
            .unwrap_err();
        assert!(err.to_string().starts_with(text), "{err}");
        let SessionError::Violation(v @ ProtocolViolation::Malformed(BodyError { frame, .. })) =
            &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(*frame, ty);
        assert_eq!(
            s.handle_frame(&data(FrameType::Ack), t0 + ms(6)),
            Err(SessionError::Closed(SessionClosed)),
            "nothing is accepted while closing"
        );
        let (frames, events) = drain(&mut s);
        let Ok(Some(Control::Error(e))) = Control::from_frame(frames.last().unwrap()) else {
            panic!("the last frame is not an error frame");
        };
        assert_eq!(e.code, ErrorCode::Malformed.to_u16());
        assert!(e.reason.starts_with(text), "{}", e.reason);
        assert_eq!(
            events,
            [SessionEvent::Closed(CloseReason::ProtocolViolation(
                v.clone()
            ))]
        );
        assert!(s.is_closed());
    }
}

#[test]
fn ack_of_an_unknown_heartbeat_is_ignored() {
    let (t0, mut s) = one_session();
    let ack = |seq| Control::HeartbeatAck(HeartbeatAck { seq }).to_frame();
    assert_eq!(
        s.handle_frame(&ack(99), t0 + ms(10)),
        Ok(Received::UnknownHeartbeatAck { seq: 99 })
    );
    assert_eq!(s.handle_frame(&ack(1), t0 + ms(30)), Ok(Received::Consumed));
    assert_eq!(
        s.handle_frame(&ack(1), t0 + ms(40)),
        Ok(Received::UnknownHeartbeatAck { seq: 1 }),
        "an answer counts once"
    );
    let (_, events) = drain(&mut s);
    assert_eq!(events, [SessionEvent::RttMeasured(ms(30))]);
    assert_eq!(s.status(t0 + ms(40)).last_heartbeat_ack, Some(t0 + ms(30)));
}

#[test]
fn only_the_last_sixteen_heartbeats_are_remembered() {
    let (t0, mut s) = one_session();
    // 20 heartbeats (seq 1 to 20), the peer heard in between but not answering.
    for n in 1..20 {
        let at = t0 + INTERVAL * n;
        s.handle_frame(&data(FrameType::Credit), at).unwrap();
        s.handle_timeout(at);
    }
    let at = t0 + INTERVAL * 20;
    let ack = |seq| Control::HeartbeatAck(HeartbeatAck { seq }).to_frame();
    assert_eq!(
        s.handle_frame(&ack(4), at),
        Ok(Received::UnknownHeartbeatAck { seq: 4 })
    );
    assert_eq!(s.handle_frame(&ack(5), at), Ok(Received::Consumed));
    assert_eq!(s.status(at).rtt, Some(INTERVAL * 16));
    // Answers come in order: once 8 is answered, an answer to 7 is not expected any more.
    assert_eq!(s.handle_frame(&ack(8), at), Ok(Received::Consumed));
    assert_eq!(
        s.handle_frame(&ack(7), at),
        Ok(Received::UnknownHeartbeatAck { seq: 7 })
    );
}

#[test]
fn late_timer_reports_degraded_before_unreachable_and_sends_nothing_more() {
    let (t0, mut s) = one_session();
    s.handle_timeout(t0 + secs(10));
    let (frames, events) = drain(&mut s);
    assert_eq!(
        frames,
        [],
        "the queued heartbeat is dropped with the session"
    );
    assert_eq!(
        events,
        [
            SessionEvent::HealthChanged(Health::Degraded),
            SessionEvent::HealthChanged(Health::Unreachable),
            SessionEvent::Closed(CloseReason::Silent(secs(10))),
        ]
    );
    assert_eq!(
        s.status(t0 + secs(10)).health,
        Health::Unreachable,
        "a closed session is unreachable"
    );
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.suspend(), Err(SessionClosed));
}

#[test]
fn peer_heard_again_turns_degraded_back_to_healthy() {
    let (t0, mut s) = one_session();
    s.handle_timeout(t0 + secs(2));
    assert_eq!(s.status(t0 + secs(2)).health, Health::Degraded);
    assert_eq!(
        s.handle_frame(&data(FrameType::Forward), t0 + secs(2) + ms(500)),
        Ok(Received::Data(data(FrameType::Forward)))
    );
    let (_, events) = drain(&mut s);
    assert_eq!(
        events,
        [
            SessionEvent::HealthChanged(Health::Degraded),
            SessionEvent::HealthChanged(Health::Healthy),
        ]
    );
    // Next: the heartbeat due at 3 s, before the next degradation at 4.5 s.
    assert_eq!(s.poll_timeout(), Some(t0 + secs(3)));
}

#[test]
fn termination_goes_out_after_frames_already_queued() {
    let (_, mut s) = one_session();
    s.terminate(Termination::Graceful, "done").unwrap();
    assert_eq!(s.resume(), Err(SessionClosed));
    assert_eq!(s.poll_transmit().map(|f| f.ty), Some(FrameType::Heartbeat));
    assert_eq!(s.poll_event(), None);
    assert!(!s.is_closed());
    let last = s.poll_transmit().unwrap();
    let Ok(Some(Control::Termination(body))) = Control::from_frame(&last) else {
        panic!("{last:?}");
    };
    assert_eq!(
        (body.kind(), body.reason()),
        (Termination::Graceful, "done")
    );
    assert!(s.is_closed());
    assert_eq!(s.poll_transmit(), None);
    assert_eq!(
        s.poll_event(),
        Some(SessionEvent::Closed(CloseReason::TerminatedLocally(
            Termination::Graceful
        )))
    );
}

#[test]
fn too_short_heartbeat_interval_is_raised_to_the_minimum() {
    let t0 = Instant::now();
    let config = SessionConfig {
        heartbeat_interval: Duration::ZERO,
    };
    let s = LinkSession::new(config, t0, FlowState::Active);
    assert_eq!(s.poll_timeout(), Some(t0 + MIN_HEARTBEAT_INTERVAL));
    assert_eq!(SessionConfig::default().heartbeat_interval, secs(5));
}

/// One step of a random driver.
#[derive(Debug, Clone)]
enum Step {
    Frame(u8, Vec<u8>),
    Body(Control),
    Advance(u64),
    Suspend,
    Resume,
    Terminate,
    CloseWithError,
}

fn step() -> impl Strategy<Value = Step> {
    let control = prop_oneof![
        (0..40u64).prop_map(|seq| Control::Heartbeat(Heartbeat { seq })),
        (0..40u64).prop_map(|seq| Control::HeartbeatAck(HeartbeatAck { seq })),
        any::<bool>().prop_map(|s| Control::Lifecycle(LifecycleChange {
            state: if s {
                FlowState::Suspended
            } else {
                FlowState::Active
            }
        })),
        ".{0,8}".prop_map(|r| Control::Termination(TerminationBody::new(Termination::Forced, &r))),
        (any::<u16>(), ".{0,8}")
            .prop_map(|(code, reason)| Control::Error(ErrorFrame { code, reason })),
    ];
    prop_oneof![
        4 => (0x10..0x22u8, proptest::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(c, b)| Step::Frame(c, b)),
        1 => (0x00..0x30u8, proptest::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(c, b)| Step::Frame(c, b)),
        4 => control.prop_map(Step::Body),
        4 => (0..4_000u64).prop_map(Step::Advance),
        1 => Just(Step::Suspend),
        1 => Just(Step::Resume),
        1 => Just(Step::Terminate),
        1 => Just(Step::CloseWithError),
    ]
}

proptest! {
    #[test]
    fn random_input_never_panics_and_nothing_follows_closed(
        steps in proptest::collection::vec(step(), 0..64),
        suspended in any::<bool>(),
    ) {
        let t0 = Instant::now();
        let flow = if suspended { FlowState::Suspended } else { FlowState::Active };
        let mut s = LinkSession::new(SessionConfig { heartbeat_interval: INTERVAL }, t0, flow);
        let mut now = t0;
        let mut closed = false;
        for step in steps {
            match step {
                Step::Frame(code, body) => {
                    if let Some(ty) = FrameType::from_code(code) {
                        let _ = s.handle_frame(&Frame::new(ty, body), now);
                    }
                }
                Step::Body(control) => {
                    let _ = s.handle_frame(&control.to_frame(), now);
                }
                Step::Advance(n) => {
                    now += ms(n);
                    s.handle_timeout(now);
                }
                Step::Suspend => { let _ = s.suspend(); }
                Step::Resume => { let _ = s.resume(); }
                Step::Terminate => { let _ = s.terminate(Termination::Graceful, "bye"); }
                Step::CloseWithError => { let _ = s.close_with_error(ErrorCode::Internal, "oops"); }
            }
            while let Some(frame) = s.poll_transmit() {
                prop_assert!(!closed, "{:?} sent after Closed", frame.ty);
            }
            while let Some(event) = s.poll_event() {
                prop_assert!(!closed, "{event:?} after Closed");
                if matches!(event, SessionEvent::Closed(_)) {
                    closed = true;
                    prop_assert!(s.is_closed());
                }
            }
            prop_assert_eq!(closed, s.is_closed());
            if closed {
                prop_assert_eq!(s.poll_timeout(), None);
                prop_assert_eq!(
                    s.handle_frame(&data(FrameType::Ack), now),
                    Err(SessionError::Closed(SessionClosed))
                );
            } else {
                prop_assert!(s.poll_timeout().is_some_and(|t| t > now));
            }
        }
    }
}

/// A revocation list of mesh `plant-a` revoking `gw2`, in a statement (its signature is the
/// driver's to check, so any bytes do here).
fn revocations(version: u64) -> RevocationsBody {
    use crate::revocation::RevocationList;
    use crate::statement::{SignedStatement, StatementKind};
    let mut list = RevocationList::empty("plant-a".parse().unwrap(), crate::envelope::Timestamp(1))
        .revoke(
            &"gw2".parse().unwrap(),
            &[vec![0x42; 16]],
            crate::envelope::Timestamp(2),
        )
        .unwrap();
    list.version = version;
    RevocationsBody::new(SignedStatement {
        kind: StatementKind::Revocations,
        body: serde_bytes::ByteBuf::from(list.encode()),
        chain: vec![serde_bytes::ByteBuf::from(vec![0x30; 8])],
        signature: serde_bytes::ByteBuf::from(vec![1; 96]),
    })
    .unwrap()
}

#[test]
fn a_revocation_list_reaches_the_peer_as_an_event_and_its_ack_comes_back() {
    let mut pair = Pair::new();
    pair.run_until(secs(2));
    let body = revocations(3);
    pair.a.session.send_revocations(body.clone()).unwrap();
    pair.run_until(secs(2) + ms(100));
    let received: Vec<_> = pair
        .b
        .facts()
        .into_iter()
        .filter(|(_, e)| matches!(e, SessionEvent::RevocationsReceived(_)))
        .collect();
    assert_eq!(
        received,
        [(
            secs(2) + ms(20),
            SessionEvent::RevocationsReceived(Box::new(body.clone()))
        )]
    );
    assert_eq!(body.list().version, 3);
    // B's driver stores the list, then acknowledges the version it stored.
    let ack = RevocationsAck {
        mesh: "plant-a".parse().unwrap(),
        version: 3,
    };
    pair.b.session.acknowledge_revocations(ack.clone()).unwrap();
    pair.run_until(secs(3));
    assert!(
        pair.a.facts().contains(&(
            secs(2) + ms(120),
            SessionEvent::RevocationsAcknowledged(ack)
        )),
        "{:?}",
        pair.a.facts()
    );
    // The exchange is control traffic: both stay healthy and open.
    assert_eq!(pair.status(Side::A).health, Health::Healthy);
    assert_eq!(pair.status(Side::B).health, Health::Healthy);
    assert!(!pair.a.session.is_closed() && !pair.b.session.is_closed());
}

#[test]
fn a_revocation_list_is_exchanged_while_the_federation_is_suspended() {
    let mut pair = Pair::starting(FlowState::Suspended, FlowState::Active);
    pair.run_until(secs(1));
    pair.a.session.send_revocations(revocations(1)).unwrap();
    pair.run_until(secs(2));
    assert!(
        pair.b.facts().iter().any(
            |(_, e)| matches!(e, SessionEvent::RevocationsReceived(b) if b.list().version == 1)
        )
    );
}

#[test]
fn malformed_revocation_bodies_close_the_session_with_an_error_frame() {
    let not_a_list = crate::statement::SignedStatement {
        kind: crate::statement::StatementKind::Revocations,
        body: serde_bytes::ByteBuf::from(vec![0xa0]),
        chain: vec![serde_bytes::ByteBuf::from(vec![1])],
        signature: serde_bytes::ByteBuf::from(vec![1; 96]),
    };
    let bundle = crate::statement::SignedStatement {
        kind: crate::statement::StatementKind::TrustBundle,
        ..revocations(1).statement().clone()
    };
    let cases: [(FrameType, Vec<u8>, &str); 5] = [
        (
            FrameType::Revocations,
            vec![0xff],
            "Revocations body refused: signed statement does not decode",
        ),
        (
            FrameType::Revocations,
            not_a_list.encode(),
            "Revocations body refused: revocation list does not decode",
        ),
        (
            FrameType::Revocations,
            bundle.encode(),
            "Revocations body refused: a TrustBundle statement",
        ),
        (
            FrameType::RevocationsAck,
            vec![0xa0],
            "RevocationsAck body refused: not its CBOR form",
        ),
        (
            FrameType::RevocationsAck,
            vec![],
            "RevocationsAck body refused: not its CBOR form",
        ),
    ];
    for (ty, body, text) in cases {
        let mut pair = Pair::new();
        pair.run_until(secs(1));
        pair.send_raw(Side::B, Frame::new(ty, body));
        pair.run_until(secs(3));
        let Err(SessionError::Violation(ProtocolViolation::Malformed(e))) =
            pair.a.last_received(ty)
        else {
            panic!("{ty:?}: {:?}", pair.a.last_received(ty));
        };
        assert!(e.to_string().starts_with(text), "{e}");
        assert!(
            matches!(
                pair.a.closed(),
                Some((_, CloseReason::ProtocolViolation(_)))
            ),
            "{:?}",
            pair.a.closed()
        );
        assert!(
            pair.b.facts().iter().any(|(_, e)| matches!(
                e,
                SessionEvent::PeerReportedError { code: ErrorCode::Malformed, reason } if reason.starts_with(text)
            )),
            "{:?}",
            pair.b.facts()
        );
    }
}

proptest! {
    #[test]
    fn any_revocations_body_is_refused_or_accepted_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ack in any::<bool>(),
    ) {
        let (t0, mut s) = one_session();
        let ty = if ack { FrameType::RevocationsAck } else { FrameType::Revocations };
        let _ = s.handle_frame(&Frame::new(ty, bytes), t0);
        let _ = drain(&mut s);
    }
}

mod renegotiation;
