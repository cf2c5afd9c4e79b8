//! The bodies of the link session's control frames, typed, in CBOR — and [`Control`], the one
//! place where a control frame becomes a typed body.
//!
//! Every decoder refuses what is not exactly one well-formed body of its kind (including bytes
//! after it) with a [`BodyError`] naming the frame and the fault; none panics.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::revocations::{RevocationsAck, RevocationsBody};
use crate::frame::{Frame, FrameType};
use crate::handshake::messages::ErrorFrame;
use crate::lifecycle::Termination;
use crate::statement::{SignedStatement, StatementError, StatementKind};

use super::renegotiation::{RenegotiationAnswer, RenegotiationConfirm, RenegotiationProposal};

/// Longest termination reason, in bytes, a peer may send; [`TerminationBody::new`] truncates
/// longer ones, [`TerminationBody::decode`] refuses them.
pub const MAX_REASON_LEN: usize = 1024;

/// Liveness probe; the peer answers with a [`HeartbeatAck`] carrying the same `seq`. There is no
/// timestamp on the wire: the sender remembers when it sent each outstanding `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sequence number, from 1, increasing by one per heartbeat of a session.
    pub seq: u64,
}

/// The answer to a [`Heartbeat`], echoing its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The sequence number of the heartbeat answered.
    pub seq: u64,
}

/// Whether messages flow on a federation, as one side holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    /// Paused: no transfers or envelopes are sent or accepted; acknowledgements still settle.
    Suspended,
    /// Messages flow.
    Active,
}

/// The body of a `Lifecycle` frame: the sender suspended the federation or released its own
/// suspension. On the wire `{"state": "suspended" | "active"}`, as the service sent it before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleChange {
    /// The sender's hold after the change.
    pub state: FlowState,
}

/// The body of a `Termination` frame: how the federation ends and why, the reason at most
/// [`MAX_REASON_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminationBody {
    kind: Termination,
    reason: String,
}

/// A control frame's body, decoded. [`Control::from_frame`] is the one place control frames are
/// told apart; a new control body (a renegotiation proposal, a signed revocation list) is one
/// more variant here and one more arm in the session's dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// A [`Heartbeat`] frame.
    Heartbeat(Heartbeat),
    /// A [`HeartbeatAck`] frame.
    HeartbeatAck(HeartbeatAck),
    /// A `Lifecycle` frame.
    Lifecycle(LifecycleChange),
    /// A `Termination` frame.
    Termination(TerminationBody),
    /// An `Error` frame, with the handshake's body (the same wire).
    Error(ErrorFrame),
    /// A `TrustBundle` frame: the peer mesh's new trust bundle, a signed statement of kind
    /// [`StatementKind::TrustBundle`] (its signature is the driver's to check).
    TrustBundle(SignedStatement),
    /// A [`BundleAck`] frame.
    TrustBundleAck(BundleAck),
    /// A `Revocations` frame: the peer mesh's signed revocation list.
    Revocations(Box<RevocationsBody>),
    /// A `RevocationsAck` frame.
    RevocationsAck(RevocationsAck),
    /// A `RenegotiationProposal` frame.
    RenegotiationProposal(Box<RenegotiationProposal>),
    /// A `RenegotiationAnswer` frame.
    RenegotiationAnswer(RenegotiationAnswer),
    /// A `RenegotiationConfirm` frame: the switch point.
    RenegotiationConfirm(RenegotiationConfirm),
}

/// The answer to a `TrustBundle` frame: the bundle of this serial is stored (or one above it
/// was already).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleAck {
    /// The serial of the bundle statement stored.
    pub serial: u64,
}

impl BundleAck {
    /// The CBOR body.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads a body.
    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        decode(FrameType::TrustBundleAck, bytes)
    }
}

/// Reads a `TrustBundle` frame's body: one signed statement of kind trust bundle.
fn bundle_statement(bytes: &[u8]) -> Result<SignedStatement, BodyError> {
    let fault = |fault| BodyError {
        frame: FrameType::TrustBundle,
        fault,
    };
    let statement = SignedStatement::decode(bytes).map_err(|e| fault(BodyFault::Statement(e)))?;
    if statement.kind != StatementKind::TrustBundle {
        return Err(fault(BodyFault::WrongStatement(statement.kind)));
    }
    Ok(statement)
}

/// A control frame's body that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{frame:?} body refused: {fault}")]
pub struct BodyError {
    /// The frame whose body it is.
    pub frame: FrameType,
    /// What is wrong with it.
    pub fault: BodyFault,
}

/// What is wrong with a refused body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyFault {
    /// The bytes are not the body's CBOR form.
    #[error("not its CBOR form: {0}")]
    NotCbor(String),
    /// The body is followed by more bytes.
    #[error("{0} bytes follow the body")]
    TrailingBytes(usize),
    /// A signed statement that does not decode.
    #[error(transparent)]
    Statement(StatementError),
    /// A signed statement of another kind than the frame carries.
    #[error("a {0:?} statement where a trust bundle was expected")]
    WrongStatement(StatementKind),
    /// A termination reason longer than [`MAX_REASON_LEN`].
    #[error("a reason of {len} bytes exceeds the maximum of {max}")]
    ReasonTooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The body decodes but what it says cannot be accepted (e.g. a revocation list out of
    /// bounds).
    #[error("{0}")]
    Invalid(String),
    /// A signature field of this many bytes, not an ECDSA P-384 signature's 96.
    #[error("a signature of {0} bytes is not a P-384 signature")]
    NotASignature(usize),
}

impl Heartbeat {
    /// The CBOR body.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads a body.
    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        decode(FrameType::Heartbeat, bytes)
    }
}

impl HeartbeatAck {
    /// The CBOR body.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads a body.
    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        decode(FrameType::HeartbeatAck, bytes)
    }
}

impl LifecycleChange {
    /// The CBOR body.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads a body.
    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        decode(FrameType::Lifecycle, bytes)
    }
}

/// [`TerminationBody`] as CBOR carries it.
#[derive(Serialize, Deserialize)]
struct TerminationWire {
    kind: TerminationKind,
    reason: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TerminationKind {
    Graceful,
    Forced,
}

impl TerminationBody {
    /// A termination of `kind` for `reason`, cut at a character boundary to at most
    /// [`MAX_REASON_LEN`] bytes.
    pub fn new(kind: Termination, reason: &str) -> Self {
        Self {
            kind,
            reason: truncate(reason, MAX_REASON_LEN).to_owned(),
        }
    }

    /// How the federation ends.
    pub fn kind(&self) -> Termination {
        self.kind
    }

    /// Why, as the terminating side's operator or policy put it.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The CBOR body: `{"kind": "graceful" | "forced", "reason": text}`.
    pub fn encode(&self) -> Vec<u8> {
        encode(&TerminationWire {
            kind: match self.kind {
                Termination::Graceful => TerminationKind::Graceful,
                Termination::Forced => TerminationKind::Forced,
            },
            reason: self.reason.clone(),
        })
    }

    /// Reads a body; a reason over [`MAX_REASON_LEN`] bytes is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        let wire: TerminationWire = decode(FrameType::Termination, bytes)?;
        if wire.reason.len() > MAX_REASON_LEN {
            return Err(BodyError {
                frame: FrameType::Termination,
                fault: BodyFault::ReasonTooLong {
                    len: wire.reason.len(),
                    max: MAX_REASON_LEN,
                },
            });
        }
        let kind = match wire.kind {
            TerminationKind::Graceful => Termination::Graceful,
            TerminationKind::Forced => Termination::Forced,
        };
        Ok(Self {
            kind,
            reason: wire.reason,
        })
    }
}

impl Control {
    /// The control body a frame carries; `Ok(None)` for frames that are not session control
    /// frames (handshake and data frames).
    pub fn from_frame(frame: &Frame) -> Result<Option<Self>, BodyError> {
        use FrameType as T;
        let body = frame.body.as_ref();
        Ok(Some(match frame.ty {
            T::Heartbeat => Self::Heartbeat(Heartbeat::decode(body)?),
            T::HeartbeatAck => Self::HeartbeatAck(HeartbeatAck::decode(body)?),
            T::Lifecycle => Self::Lifecycle(LifecycleChange::decode(body)?),
            T::Termination => Self::Termination(TerminationBody::decode(body)?),
            T::Error => Self::Error(decode(T::Error, body)?),
            T::TrustBundle => Self::TrustBundle(bundle_statement(body)?),
            T::TrustBundleAck => Self::TrustBundleAck(BundleAck::decode(body)?),
            T::Revocations => Self::Revocations(Box::new(RevocationsBody::decode(body)?)),
            T::RevocationsAck => Self::RevocationsAck(RevocationsAck::decode(body)?),
            T::RenegotiationProposal => {
                Self::RenegotiationProposal(Box::new(RenegotiationProposal::decode(body)?))
            }
            T::RenegotiationAnswer => Self::RenegotiationAnswer(RenegotiationAnswer::decode(body)?),
            T::RenegotiationConfirm => {
                Self::RenegotiationConfirm(RenegotiationConfirm::decode(body)?)
            }
            _ => return Ok(None),
        }))
    }

    /// The frame carrying this body.
    pub fn to_frame(&self) -> Frame {
        use FrameType as T;
        let (ty, body) = match self {
            Self::Heartbeat(b) => (T::Heartbeat, b.encode()),
            Self::HeartbeatAck(b) => (T::HeartbeatAck, b.encode()),
            Self::Lifecycle(b) => (T::Lifecycle, b.encode()),
            Self::Termination(b) => (T::Termination, b.encode()),
            Self::Error(b) => (T::Error, encode(b)),
            Self::TrustBundle(b) => (T::TrustBundle, b.encode()),
            Self::TrustBundleAck(b) => (T::TrustBundleAck, b.encode()),
            Self::Revocations(b) => (T::Revocations, b.encode()),
            Self::RevocationsAck(b) => (T::RevocationsAck, b.encode()),
            Self::RenegotiationProposal(b) => (T::RenegotiationProposal, b.encode()),
            Self::RenegotiationAnswer(b) => (T::RenegotiationAnswer, b.encode()),
            Self::RenegotiationConfirm(b) => (T::RenegotiationConfirm, b.encode()),
        };
        Frame::new(ty, body)
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary.
pub(super) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(super) fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    crate::cbor::to_vec(body, 32)
}

pub(super) fn decode<T: DeserializeOwned>(frame: FrameType, bytes: &[u8]) -> Result<T, BodyError> {
    crate::cbor::from_slice(bytes).map_err(|fault| BodyError {
        frame,
        fault: match fault {
            crate::cbor::CborFault::NotCbor(e) => BodyFault::NotCbor(e),
            crate::cbor::CborFault::Trailing(n) => BodyFault::TrailingBytes(n),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_through_their_frames() {
        let bodies = [
            Control::Heartbeat(Heartbeat { seq: 7 }),
            Control::HeartbeatAck(HeartbeatAck { seq: u64::MAX }),
            Control::Lifecycle(LifecycleChange {
                state: FlowState::Suspended,
            }),
            Control::Lifecycle(LifecycleChange {
                state: FlowState::Active,
            }),
            Control::Termination(TerminationBody::new(Termination::Forced, "key leaked")),
            Control::Error(ErrorFrame {
                code: 3,
                reason: "bad".into(),
            }),
            Control::TrustBundle(SignedStatement {
                kind: StatementKind::TrustBundle,
                body: vec![1, 2].into(),
                chain: vec![vec![0x30].into()],
                signature: vec![7; 96].into(),
            }),
            Control::TrustBundleAck(BundleAck { serial: 2 }),
        ];
        for body in bodies {
            let frame = body.to_frame();
            assert_eq!(Control::from_frame(&frame).unwrap(), Some(body));
        }
    }

    #[test]
    fn lifecycle_body_keeps_the_services_wire_form() {
        #[derive(Serialize)]
        struct Before {
            state: String,
        }
        let before = encode(&Before {
            state: "suspended".into(),
        });
        let change = LifecycleChange {
            state: FlowState::Suspended,
        };
        assert_eq!(change.encode(), before);
        let unknown = encode(&Before {
            state: "paused".into(),
        });
        let err = LifecycleChange::decode(&unknown).unwrap_err();
        assert_eq!(err.frame, FrameType::Lifecycle);
        assert!(err.to_string().contains("paused"), "{err}");
    }

    #[test]
    fn long_termination_reason_is_truncated_when_sent_and_refused_when_received() {
        let long = "é".repeat(MAX_REASON_LEN);
        let body = TerminationBody::new(Termination::Graceful, &long);
        assert_eq!(body.reason().len(), MAX_REASON_LEN);
        assert!(long.starts_with(body.reason()));
        assert_eq!(TerminationBody::decode(&body.encode()).unwrap(), body);

        let over = encode(&TerminationWire {
            kind: TerminationKind::Graceful,
            reason: "x".repeat(MAX_REASON_LEN + 1),
        });
        let err = TerminationBody::decode(&over).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Termination body refused: a reason of 1025 bytes exceeds the maximum of 1024"
        );
    }

    #[test]
    fn bytes_after_a_body_are_refused() {
        let mut bytes = Heartbeat { seq: 1 }.encode();
        bytes.push(0);
        let err = Heartbeat::decode(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Heartbeat body refused: 1 bytes follow the body"
        );
    }

    #[test]
    fn garbage_is_refused_naming_the_frame() {
        for (ty, bytes) in [
            (FrameType::Heartbeat, &[0xff_u8][..]),
            (FrameType::HeartbeatAck, &[][..]),
            (FrameType::Termination, &[0xa0][..]),
            (FrameType::Error, &[0x01][..]),
        ] {
            let err = Control::from_frame(&Frame::new(ty, bytes.to_vec())).unwrap_err();
            assert_eq!(err.frame, ty);
            assert!(matches!(err.fault, BodyFault::NotCbor(_)), "{err}");
        }
    }

    #[test]
    fn a_trust_bundle_frame_carrying_another_statement_is_refused() {
        let revocations = SignedStatement {
            kind: StatementKind::Revocations,
            body: vec![1].into(),
            chain: vec![vec![0x30].into()],
            signature: vec![7; 96].into(),
        };
        let err = Control::from_frame(&Frame::new(FrameType::TrustBundle, revocations.encode()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "TrustBundle body refused: a Revocations statement where a trust bundle was expected"
        );
    }

    #[test]
    fn data_and_handshake_frames_are_not_control_bodies() {
        for ty in [FrameType::Transfer, FrameType::Ack, FrameType::Resume] {
            assert_eq!(Control::from_frame(&Frame::new(ty, vec![1])), Ok(None));
        }
    }
}
