//! The federation link session as a sans-IO state machine: what runs on a link once the
//! handshake has established it — heartbeats and health, suspension (held by each side on its
//! own), termination and error reports. It reads no clock and does no IO: time is an argument.
//!
//! # Driving it
//!
//! Make a [`LinkSession`] when the handshake is done, with the time and this side's own
//! suspension hold (see [`LinkSession::new`]). Then loop:
//! 1. Feed each frame the peer sends to [`LinkSession::handle_frame`]. Control frames are
//!    consumed; data frames come back as [`Received::Data`] for the delivery stages, or as
//!    [`Received::Refused`] while the federation is suspended (drop those, do not acknowledge
//!    them: the peer sends them again after it resumes). An `Err` means the session is closing.
//! 2. Send every frame [`LinkSession::poll_transmit`] gives, in order.
//! 3. Act on every [`LinkSession::poll_event`] (registry, audit, metrics). [`SessionEvent::Closed`]
//!    comes after the last frame the session sends has been taken in step 2: flush the link, close
//!    it, drop the session. Poll events after transmitting, so this one is seen.
//! 4. Wait for the next frame, a local command, or [`LinkSession::poll_timeout`], and at that time
//!    call [`LinkSession::handle_timeout`].
//!
//! Local commands — [`LinkSession::suspend`], [`LinkSession::resume`], [`LinkSession::terminate`],
//! [`LinkSession::close_with_error`], [`LinkSession::send_revocations`],
//! [`LinkSession::acknowledge_revocations`] — queue their frame for step 2. Data frames (transfers,
//! envelopes, acknowledgements, credit, floors) the driver sends itself; transfers and envelopes
//! only while [`LinkSession::flow`] is [`FlowState::Active`].
//!
//! # Health
//!
//! Every frame from the peer counts as heard. A session is [`Health::Healthy`] until
//! [`DEGRADED_AFTER`] heartbeat intervals pass with nothing heard, then [`Health::Degraded`];
//! after [`UNREACHABLE_AFTER`] intervals it is [`Health::Unreachable`] and closes. A heartbeat
//! goes out when the session starts and every interval after; the peer's answer gives the round
//! trip.
//!
//! # Adding a control frame
//!
//! A renegotiation proposal or a signed revocation list plugs in as one more control body: a
//! frame type in [`crate::frame`], a body type in [`bodies`] with its variant in [`Control`]
//! (decoded in [`Control::from_frame`], the one place control frames are told apart), one arm in
//! the session's `on_control`, and the facts it yields as new [`SessionEvent`]s.

pub mod bodies;
pub mod renegotiation;
pub mod revocations;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

pub use bodies::{
    BodyError, BodyFault, BundleAck, Control, FlowState, Heartbeat, HeartbeatAck, LifecycleChange,
    MAX_REASON_LEN, TerminationBody,
};
pub use renegotiation::{
    AgreementSwitch, ProposedBy, RenegotiateError, RenegotiationAnswer, RenegotiationConfirm,
    RenegotiationFailure, RenegotiationProposal, RenegotiationSetup, RenegotiationViolation,
    verify_successor,
};
pub use revocations::{RevocationsAck, RevocationsBody};

use crate::agreement::MalformedAgreement;
use crate::capability::Capabilities;
use crate::frame::{Frame, FrameType};
use crate::handshake::ErrorCode;
use crate::handshake::messages::ErrorFrame;
use crate::lifecycle::Termination;
use crate::policy::PolicyOffer;
use crate::statement::SignedStatement;
use renegotiation::Renegotiation;

/// Heartbeat intervals of silence after which a session is degraded.
pub const DEGRADED_AFTER: u32 = 2;
/// Heartbeat intervals of silence after which a session is unreachable and closes.
pub const UNREACHABLE_AFTER: u32 = 3;
/// Heartbeats remembered while unanswered; an answer to an older one is not recognised.
pub const MAX_OUTSTANDING_HEARTBEATS: usize = 16;
/// The shortest heartbeat interval; a shorter configured one is raised to it.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1);

/// How a link session behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Time between heartbeats; also the unit of health: degraded after [`DEGRADED_AFTER`]
    /// intervals without a frame from the peer, unreachable (and closed) after
    /// [`UNREACHABLE_AFTER`]. Default 5 s; at least [`MIN_HEARTBEAT_INTERVAL`].
    pub heartbeat_interval: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
        }
    }
}

/// A link's health, from how long ago the peer was last heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Heard within [`DEGRADED_AFTER`] heartbeat intervals.
    Healthy,
    /// Heard within [`UNREACHABLE_AFTER`] heartbeat intervals, not within [`DEGRADED_AFTER`].
    Degraded,
    /// Not heard for longer, or the session is closed.
    Unreachable,
}

impl Health {
    /// The name shown by the API and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unreachable => "unreachable",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which side holds a suspension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuspendedBy {
    /// This side only.
    Local,
    /// The peer only.
    Peer,
    /// Both sides: the flow resumes only when both have resumed.
    Both,
}

/// A session as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStatus {
    /// Health at the time asked.
    pub health: Health,
    /// When the last heartbeat was answered.
    pub last_heartbeat_ack: Option<Instant>,
    /// Round trip of the last answered heartbeat.
    pub rtt: Option<Duration>,
    /// When the session started.
    pub connected_since: Instant,
    /// Whether messages flow.
    pub flow: FlowState,
}

/// What became of a frame from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A control frame, handled by the session: see its events and frames to send.
    Consumed,
    /// A heartbeat ack for no heartbeat outstanding (answered already, too old, or never sent):
    /// ignored.
    UnknownHeartbeatAck {
        /// The sequence number it echoed.
        seq: u64,
    },
    /// A data frame for the driver's delivery stages.
    Data(Frame),
    /// A data frame that may not be accepted now: drop it unacknowledged.
    Refused {
        /// Its type.
        frame: FrameType,
        /// Why.
        reason: Refusal,
    },
}

/// Why a data frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The federation is suspended; transfers and envelopes wait until it resumes.
    FlowSuspended(SuspendedBy),
}

/// A fact for the driver to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Health changed (`Healthy → Degraded → Unreachable`, or back to `Healthy` when the peer is
    /// heard again).
    HealthChanged(Health),
    /// A heartbeat was answered after this round trip.
    RttMeasured(Duration),
    /// The peer suspended the federation.
    PeerSuspended,
    /// The peer released its suspension (the flow resumes only if this side holds none).
    PeerResumed,
    /// Messages start or stop flowing, whichever side caused it.
    FlowChanged(FlowState),
    /// The peer terminated the federation. [`SessionEvent::Closed`] follows.
    PeerTerminated {
        /// Graceful or forced.
        kind: Termination,
        /// The peer's reason.
        reason: String,
    },
    /// The peer reported an error. [`SessionEvent::Closed`] follows.
    PeerReportedError {
        /// The peer's code.
        code: ErrorCode,
        /// The peer's reason, at most [`MAX_REASON_LEN`] bytes.
        reason: String,
    },
    /// The peer mesh sent its trust bundle from now on, as a signed statement (a CA rollover).
    /// Check it against the bundle stored for the peer, store it, and answer with
    /// [`LinkSession::acknowledge_bundle`].
    PeerBundle(SignedStatement),
    /// The peer stored this mesh's trust bundle of this serial.
    BundleAcknowledged {
        /// The serial it stored.
        serial: u64,
    },
    /// The peer sent its mesh's revocation list (its form checked, its signature not yet):
    /// verify it, store it if it succeeds the stored one, then
    /// [`LinkSession::acknowledge_revocations`].
    RevocationsReceived(Box<RevocationsBody>),
    /// The peer stored this side's revocation list at this version.
    RevocationsAcknowledged(RevocationsAck),
    /// A renegotiated agreement is in force from this point of the link stream on (see
    /// [`renegotiation`]): store it, keep the old one in history, and apply its terms to every
    /// data frame from now on.
    AgreementSwitched(Box<AgreementSwitch>),
    /// A renegotiation to `version` ended without a new agreement: the one in force stays.
    RenegotiationFailed {
        /// The version that was proposed.
        version: u32,
        /// Why.
        failure: RenegotiationFailure,
    },
    /// The session ended: close the link. Nothing more is sent or accepted.
    Closed(CloseReason),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Nothing was heard from the peer for this long ([`UNREACHABLE_AFTER`] intervals or more).
    Silent(Duration),
    /// This side terminated the federation; the termination frame was sent last.
    TerminatedLocally(Termination),
    /// The peer terminated the federation.
    TerminatedByPeer(Termination),
    /// This side reported an error ([`LinkSession::close_with_error`]); the error frame was sent
    /// last.
    ErrorReported(ErrorCode),
    /// The peer reported an error.
    PeerReportedError(ErrorCode),
    /// The peer broke the session protocol; an error frame saying how was sent last.
    ProtocolViolation(ProtocolViolation),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Silent(d) => write!(f, "nothing heard from the peer for {d:?}"),
            Self::TerminatedLocally(k) => write!(f, "terminated ({}) here", termination_name(*k)),
            Self::TerminatedByPeer(k) => {
                write!(f, "terminated ({}) by the peer", termination_name(*k))
            }
            Self::ErrorReported(code) => write!(f, "closed here with error {code}"),
            Self::PeerReportedError(code) => write!(f, "the peer reported error {code}"),
            Self::ProtocolViolation(v) => write!(f, "the peer broke the session protocol: {v}"),
        }
    }
}

/// A peer's frame that breaks the session protocol. The session answers with an error frame
/// and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolViolation {
    /// A frame with no place on an established session: a handshake message.
    #[error("a {0:?} frame has no place on an established link session")]
    UnexpectedFrame(FrameType),
    /// A control frame whose body does not decode.
    #[error(transparent)]
    Malformed(#[from] BodyError),
    /// A renegotiation frame that breaks the exchange.
    #[error(transparent)]
    Renegotiation(#[from] RenegotiationViolation),
}

impl ProtocolViolation {
    /// The wire code it is reported with — mapped here and nowhere else.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnexpectedFrame(_) => ErrorCode::UnexpectedMessage,
            Self::Malformed(_) => ErrorCode::Malformed,
            Self::Renegotiation(v) => v.code(),
        }
    }
}

/// The session has ended (or is sending its last frame) and takes no more input or commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the link session is closed")]
pub struct SessionClosed;

/// Why a frame from the peer was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The peer broke the protocol; the session is closing with an error frame.
    #[error(transparent)]
    Violation(#[from] ProtocolViolation),
    /// The session had already ended.
    #[error(transparent)]
    Closed(#[from] SessionClosed),
}

/// Where a session stands.
#[derive(Debug)]
enum State {
    Open,
    /// The last frame is queued; the session is closed for this reason once it is taken.
    Closing(CloseReason),
    Closed,
}

/// One established link's session. See the module documentation for the driving loop.
#[derive(Debug)]
pub struct LinkSession {
    interval: Duration,
    state: State,
    connected_since: Instant,
    last_heard: Instant,
    /// Health as last reported in an event.
    health: Health,
    /// `None` when the interval is too long for the clock to represent.
    next_heartbeat: Option<Instant>,
    next_seq: u64,
    /// Heartbeats sent and not answered, oldest first.
    outstanding: VecDeque<(u64, Instant)>,
    last_heartbeat_ack: Option<Instant>,
    rtt: Option<Duration>,
    /// This side's suspension hold.
    local: FlowState,
    /// The peer's suspension hold, as it last told.
    peer: FlowState,
    out: VecDeque<Frame>,
    events: VecDeque<SessionEvent>,
    /// The renegotiation exchange, when the driver enabled it.
    renegotiation: Option<Renegotiation>,
}

impl LinkSession {
    /// Starts the session of a link established at `now`; the first heartbeat is queued.
    ///
    /// `local` is this side's own hold: [`FlowState::Suspended`] if this side suspended the
    /// federation (the registry says so), which is announced to the peer at once. A suspension
    /// the peer holds is not passed here: the peer announces it on the new link in the same way.
    pub fn new(config: SessionConfig, now: Instant, local: FlowState) -> Self {
        let mut session = Self {
            interval: config.heartbeat_interval.max(MIN_HEARTBEAT_INTERVAL),
            state: State::Open,
            connected_since: now,
            last_heard: now,
            health: Health::Healthy,
            next_heartbeat: Some(now),
            next_seq: 1,
            outstanding: VecDeque::with_capacity(MAX_OUTSTANDING_HEARTBEATS),
            last_heartbeat_ack: None,
            rtt: None,
            local,
            peer: FlowState::Active,
            out: VecDeque::new(),
            events: VecDeque::new(),
            renegotiation: None,
        };
        if local == FlowState::Suspended {
            session.send(Control::Lifecycle(LifecycleChange { state: local }));
        }
        session.send_heartbeat(now);
        session
    }

    /// Lets this session renegotiate the agreement in `setup` (see [`renegotiation`]). Without
    /// it, a peer's proposal is refused and [`LinkSession::renegotiate`] fails.
    pub fn with_renegotiation(
        mut self,
        setup: RenegotiationSetup,
    ) -> Result<Self, MalformedAgreement> {
        self.renegotiation = Some(Renegotiation::new(setup)?);
        Ok(self)
    }

    /// Replaces this side's offer for the renegotiations to come (proposed or answered): its
    /// policy changed. The agreement in force stays until one is agreed.
    pub fn set_offer(&mut self, capabilities: Capabilities, policy: PolicyOffer) {
        if let Some(r) = self.renegotiation.as_mut() {
            r.set_offer(capabilities, policy);
        }
    }

    /// Proposes the next agreement version with this side's offer in the setup; returns the
    /// version proposed. The outcome comes as [`SessionEvent::AgreementSwitched`] or
    /// [`SessionEvent::RenegotiationFailed`].
    pub fn renegotiate(&mut self, now: Instant) -> Result<u32, RenegotiateError> {
        if !matches!(self.state, State::Open) {
            return Err(RenegotiateError::Closed);
        }
        let Some(r) = self.renegotiation.as_mut() else {
            return Err(RenegotiateError::NotEnabled);
        };
        r.propose(
            now,
            &mut renegotiation::Out {
                frames: &mut self.out,
                events: &mut self.events,
            },
        )
    }

    /// The agreement version in force at this point of the link stream, if the session
    /// renegotiates.
    pub fn agreement_version(&self) -> Option<u32> {
        self.renegotiation.as_ref().map(Renegotiation::version)
    }

    /// Handles one frame from the peer, received at `now`.
    pub fn handle_frame(&mut self, frame: &Frame, now: Instant) -> Result<Received, SessionError> {
        if !matches!(self.state, State::Open) {
            return Err(SessionClosed.into());
        }
        self.heard(now);
        match Control::from_frame(frame) {
            Ok(Some(control)) => self.on_control(control, now),
            Ok(None) => self.on_other(frame),
            Err(e) => Err(self.violated(e.into())),
        }
    }

    /// Sends a heartbeat or changes health, if one is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !matches!(self.state, State::Open) {
            return;
        }
        let health = self.health_at(now);
        if health != self.health {
            if self.health == Health::Healthy && health == Health::Unreachable {
                // Late timer: report the step in between, so health always reads in order.
                self.events
                    .push_back(SessionEvent::HealthChanged(Health::Degraded));
            }
            self.health = health;
            self.events.push_back(SessionEvent::HealthChanged(health));
        }
        if health == Health::Unreachable {
            let silence = now.saturating_duration_since(self.last_heard);
            self.close_now(CloseReason::Silent(silence));
            return;
        }
        if self.next_heartbeat.is_some_and(|t| now >= t) {
            self.send_heartbeat(now);
        }
        if let Some(r) = self.renegotiation.as_mut() {
            r.handle_timeout(
                now,
                &mut renegotiation::Out {
                    frames: &mut self.out,
                    events: &mut self.events,
                },
            );
        }
    }

    /// When [`LinkSession::handle_timeout`] should next be called: the next heartbeat or the next
    /// change of health, whichever is first. `None` once the session is closing.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !matches!(self.state, State::Open) {
            return None;
        }
        let health_change = match self.health {
            Health::Healthy => self.silence_deadline(DEGRADED_AFTER),
            Health::Degraded => self.silence_deadline(UNREACHABLE_AFTER),
            Health::Unreachable => None,
        };
        let renegotiation = self
            .renegotiation
            .as_ref()
            .and_then(Renegotiation::next_timeout);
        [self.next_heartbeat, health_change, renegotiation]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next frame to send. Once a closing session's last frame is taken, it is closed and
    /// [`SessionEvent::Closed`] is queued.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        let frame = self.out.pop_front()?;
        if self.out.is_empty()
            && matches!(self.state, State::Closing(_))
            && let State::Closing(reason) = std::mem::replace(&mut self.state, State::Closed)
        {
            self.events.push_back(SessionEvent::Closed(reason));
        }
        Some(frame)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Suspends the federation from this side: a lifecycle frame tells the peer. Suspending again
    /// while this side holds a suspension sends nothing.
    pub fn suspend(&mut self) -> Result<(), SessionClosed> {
        self.set_local(FlowState::Suspended)
    }

    /// Releases this side's suspension: a lifecycle frame tells the peer. The flow resumes only if
    /// the peer holds none. Resuming without holding a suspension sends nothing.
    pub fn resume(&mut self) -> Result<(), SessionClosed> {
        self.set_local(FlowState::Active)
    }

    /// Sends this mesh's trust bundle from now on (a signed statement of kind trust bundle): on a
    /// CA rollover, and on every new link while the bundle is not the one `meshfed init` made.
    pub fn announce_bundle(&mut self, statement: SignedStatement) -> Result<(), SessionClosed> {
        self.ensure_open()?;
        self.send(Control::TrustBundle(statement));
        Ok(())
    }

    /// Tells the peer its trust bundle of `serial` is stored.
    pub fn acknowledge_bundle(&mut self, serial: u64) -> Result<(), SessionClosed> {
        self.ensure_open()?;
        self.send(Control::TrustBundleAck(BundleAck { serial }));
        Ok(())
    }

    /// Terminates the federation: the termination frame (its reason cut to [`MAX_REASON_LEN`]
    /// bytes) is queued as the last frame, after those already queued; the session is closed once
    /// it is taken. Drain in-flight messages before a graceful termination.
    pub fn terminate(&mut self, kind: Termination, reason: &str) -> Result<(), SessionClosed> {
        self.ensure_open()?;
        let last = Control::Termination(TerminationBody::new(kind, reason)).to_frame();
        self.close_after(last, CloseReason::TerminatedLocally(kind));
        Ok(())
    }

    /// Ends the session with an error frame (its reason cut to [`MAX_REASON_LEN`] bytes), queued as
    /// the last frame; the session is closed once it is taken. For faults found by the driver,
    /// e.g. a data frame that does not verify.
    pub fn close_with_error(&mut self, code: ErrorCode, reason: &str) -> Result<(), SessionClosed> {
        self.ensure_open()?;
        self.close_after(error_frame(code, reason), CloseReason::ErrorReported(code));
        Ok(())
    }

    /// Sends this mesh's signed revocation list to the peer.
    pub fn send_revocations(&mut self, body: RevocationsBody) -> Result<(), SessionClosed> {
        self.ensure_open()?;
        self.send(Control::Revocations(Box::new(body)));
        Ok(())
    }

    /// Tells the peer which version of its revocation list this side now stores (after a
    /// [`SessionEvent::RevocationsReceived`]).
    pub fn acknowledge_revocations(&mut self, ack: RevocationsAck) -> Result<(), SessionClosed> {
        self.ensure_open()?;
        self.send(Control::RevocationsAck(ack));
        Ok(())
    }

    /// Whether messages flow: [`FlowState::Suspended`] while either side holds a suspension.
    pub fn flow(&self) -> FlowState {
        match self.suspended_by() {
            Some(_) => FlowState::Suspended,
            None => FlowState::Active,
        }
    }

    /// Which side holds a suspension, if any does.
    pub fn suspended_by(&self) -> Option<SuspendedBy> {
        use FlowState::{Active, Suspended};
        match (self.local, self.peer) {
            (Active, Active) => None,
            (Suspended, Active) => Some(SuspendedBy::Local),
            (Active, Suspended) => Some(SuspendedBy::Peer),
            (Suspended, Suspended) => Some(SuspendedBy::Both),
        }
    }

    /// The session's status at `now`.
    pub fn status(&self, now: Instant) -> SessionStatus {
        let health = match self.state {
            State::Open | State::Closing(_) => self.health_at(now),
            State::Closed => Health::Unreachable,
        };
        SessionStatus {
            health,
            last_heartbeat_ack: self.last_heartbeat_ack,
            rtt: self.rtt,
            connected_since: self.connected_since,
            flow: self.flow(),
        }
    }

    /// Whether the session has ended (its last frame, if any, has been taken).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// A decoded control frame. New control bodies get their arm here.
    fn on_control(&mut self, control: Control, now: Instant) -> Result<Received, SessionError> {
        match control {
            Control::Heartbeat(Heartbeat { seq }) => {
                self.send(Control::HeartbeatAck(HeartbeatAck { seq }));
            }
            Control::HeartbeatAck(HeartbeatAck { seq }) => {
                return Ok(self.on_heartbeat_ack(seq, now));
            }
            Control::Lifecycle(LifecycleChange { state }) => self.set_peer(state),
            Control::Termination(body) => {
                self.events.push_back(SessionEvent::PeerTerminated {
                    kind: body.kind(),
                    reason: body.reason().to_owned(),
                });
                self.close_now(CloseReason::TerminatedByPeer(body.kind()));
            }
            Control::Error(ErrorFrame { code, reason }) => {
                let code = ErrorCode::from_u16(code);
                self.events.push_back(SessionEvent::PeerReportedError {
                    code,
                    reason: bodies::truncate(&reason, MAX_REASON_LEN).to_owned(),
                });
                self.close_now(CloseReason::PeerReportedError(code));
            }
            Control::TrustBundle(statement) => {
                self.events.push_back(SessionEvent::PeerBundle(statement));
            }
            Control::TrustBundleAck(BundleAck { serial }) => {
                self.events
                    .push_back(SessionEvent::BundleAcknowledged { serial });
            }
            Control::Revocations(body) => {
                self.events
                    .push_back(SessionEvent::RevocationsReceived(body));
            }
            Control::RevocationsAck(ack) => {
                self.events
                    .push_back(SessionEvent::RevocationsAcknowledged(ack));
            }
            c @ (Control::RenegotiationProposal(_)
            | Control::RenegotiationAnswer(_)
            | Control::RenegotiationConfirm(_)) => self.on_renegotiation(c, now)?,
        }
        Ok(Received::Consumed)
    }

    /// A renegotiation frame, for the exchange if the session renegotiates. Without one, a
    /// proposal is refused and an answer or confirm breaks the protocol.
    fn on_renegotiation(&mut self, control: Control, now: Instant) -> Result<(), SessionError> {
        let Some(r) = self.renegotiation.as_mut() else {
            return match control {
                Control::RenegotiationProposal(p) => {
                    self.send(Control::RenegotiationAnswer(RenegotiationAnswer::refuse(
                        p.version,
                        "this side does not renegotiate on this link",
                    )));
                    Ok(())
                }
                other => {
                    let ty = other.to_frame().ty;
                    Err(self.violated(RenegotiationViolation::NotRenegotiating(ty).into()))
                }
            };
        };
        let mut out = renegotiation::Out {
            frames: &mut self.out,
            events: &mut self.events,
        };
        let result = match control {
            Control::RenegotiationProposal(p) => {
                r.on_proposal(*p, now, &mut out);
                Ok(())
            }
            Control::RenegotiationAnswer(a) => r.on_answer(a, &mut out),
            Control::RenegotiationConfirm(c) => r.on_confirm(c, &mut out),
            // `on_control` passes renegotiation bodies only.
            _ => Ok(()),
        };
        result.map_err(|v| self.violated(v.into()))
    }

    /// A frame that is not a session control frame.
    fn on_other(&mut self, frame: &Frame) -> Result<Received, SessionError> {
        match frame.ty {
            // Acknowledgements, credit, floors and batch heads settle what was sent before a
            // suspension; a head may need the signer certificate announced before it. Interest
            // holds whatever the flow: it says what to send once messages flow again. The audit
            // exchange covers what already crossed, so it goes on while the flow is held.
            FrameType::Ack
            | FrameType::Credit
            | FrameType::Forward
            | FrameType::BatchHead
            | FrameType::SignerCertificate
            | FrameType::RouteAdvertisement
            | FrameType::Descriptor
            | FrameType::Custody
            | FrameType::CustodyAck
            | FrameType::Interest
            | FrameType::InterestAck
            | FrameType::Audit => Ok(Received::Data(frame.clone())),
            FrameType::Transfer | FrameType::Envelope => Ok(match self.suspended_by() {
                Some(by) => Received::Refused {
                    frame: frame.ty,
                    reason: Refusal::FlowSuspended(by),
                },
                None => Received::Data(frame.clone()),
            }),
            // A tunnel frame a broker relays, or one of a tunnel this side is an end of: the
            // hop federation's own suspension holds it back like its own messages.
            FrameType::Relay => Ok(match self.suspended_by() {
                Some(by) => Received::Refused {
                    frame: frame.ty,
                    reason: Refusal::FlowSuspended(by),
                },
                None => Received::Data(frame.clone()),
            }),
            // Handshake messages (control frames were taken by `Control::from_frame`).
            ty => Err(self.violated(ProtocolViolation::UnexpectedFrame(ty))),
        }
    }

    fn on_heartbeat_ack(&mut self, seq: u64, now: Instant) -> Received {
        let Some(pos) = self.outstanding.iter().position(|&(s, _)| s == seq) else {
            return Received::UnknownHeartbeatAck { seq };
        };
        // `pos` was just found, so the index is in bounds.
        let sent = self.outstanding[pos].1;
        // Answers come in order: older unanswered heartbeats were lost.
        self.outstanding.drain(..=pos);
        let rtt = now.saturating_duration_since(sent);
        self.rtt = Some(rtt);
        self.last_heartbeat_ack = Some(now);
        self.events.push_back(SessionEvent::RttMeasured(rtt));
        Received::Consumed
    }

    fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
        if self.health != Health::Healthy {
            self.health = Health::Healthy;
            self.events
                .push_back(SessionEvent::HealthChanged(Health::Healthy));
        }
    }

    fn health_at(&self, now: Instant) -> Health {
        let silence = now.saturating_duration_since(self.last_heard);
        if silence >= self.interval.saturating_mul(UNREACHABLE_AFTER) {
            Health::Unreachable
        } else if silence >= self.interval.saturating_mul(DEGRADED_AFTER) {
            Health::Degraded
        } else {
            Health::Healthy
        }
    }

    /// When `intervals` of silence since the peer was last heard will have passed.
    fn silence_deadline(&self, intervals: u32) -> Option<Instant> {
        self.last_heard
            .checked_add(self.interval.saturating_mul(intervals))
    }

    fn send_heartbeat(&mut self, now: Instant) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.outstanding.len() == MAX_OUTSTANDING_HEARTBEATS {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((seq, now));
        self.send(Control::Heartbeat(Heartbeat { seq }));
        self.next_heartbeat = now.checked_add(self.interval);
    }

    fn set_local(&mut self, state: FlowState) -> Result<(), SessionClosed> {
        self.ensure_open()?;
        if self.local == state {
            return Ok(());
        }
        let before = self.flow();
        self.local = state;
        self.send(Control::Lifecycle(LifecycleChange { state }));
        self.flow_changed(before);
        Ok(())
    }

    fn set_peer(&mut self, state: FlowState) {
        if self.peer == state {
            return;
        }
        let before = self.flow();
        self.peer = state;
        self.events.push_back(match state {
            FlowState::Suspended => SessionEvent::PeerSuspended,
            FlowState::Active => SessionEvent::PeerResumed,
        });
        self.flow_changed(before);
    }

    fn flow_changed(&mut self, before: FlowState) {
        let after = self.flow();
        if after != before {
            self.events.push_back(SessionEvent::FlowChanged(after));
        }
    }

    fn ensure_open(&self) -> Result<(), SessionClosed> {
        match self.state {
            State::Open => Ok(()),
            State::Closing(_) | State::Closed => Err(SessionClosed),
        }
    }

    fn send(&mut self, control: Control) {
        self.out.push_back(control.to_frame());
    }

    /// The peer broke the protocol: tell it how, then close.
    fn violated(&mut self, violation: ProtocolViolation) -> SessionError {
        let last = error_frame(violation.code(), &violation.to_string());
        self.close_after(last, CloseReason::ProtocolViolation(violation.clone()));
        violation.into()
    }

    /// Queues `last` as the final frame; the session closes once it is taken.
    fn close_after(&mut self, last: Frame, reason: CloseReason) {
        self.out.push_back(last);
        self.state = State::Closing(reason);
    }

    /// Closes at once: nothing queued is sent any more.
    fn close_now(&mut self, reason: CloseReason) {
        self.out.clear();
        self.state = State::Closed;
        self.events.push_back(SessionEvent::Closed(reason));
    }
}

fn error_frame(code: ErrorCode, reason: &str) -> Frame {
    Control::Error(ErrorFrame {
        code: code.to_u16(),
        reason: bodies::truncate(reason, MAX_REASON_LEN).to_owned(),
    })
    .to_frame()
}

fn termination_name(kind: Termination) -> &'static str {
    match kind {
        Termination::Graceful => "graceful",
        Termination::Forced => "forced",
    }
}
