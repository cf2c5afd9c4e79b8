//! Renegotiation in place (DESIGN.md §3.3, `active → renegotiating → active`): a new agreement
//! version on a live link, proposed and answered over the control channel, signed by both sides
//! and switched at a known point of the ordered link stream.
//!
//! The exchange, three control frames:
//! 1. The proposer sends a [`RenegotiationProposal`]: its current offer (capabilities and policy,
//!    exactly as the handshake would offer them) and the version it proposes, the one in force + 1.
//! 2. The answerer computes the result with the handshake's own functions — its wish ∧ the offer
//!    ([`Capabilities::negotiate`], [`PolicyOffer::combine`]) — builds the agreement (same
//!    federation, parties, bundles and validity as the one in force), signs it and answers
//!    [`RenegotiationAnswer::Accept`]; or it answers [`RenegotiationAnswer::Refuse`] saying why.
//! 3. The proposer checks the agreement lies within its offer and differs from the one in force
//!    only in version, capabilities and policy, verifies the answerer's signature, signs, and
//!    sends a [`RenegotiationConfirm`].
//!
//! The switch point is the confirm frame: the proposer switches as it queues it, the answerer as
//! it receives it. Nothing is switched before, so a link that drops before the confirm leaves the
//! old agreement in force on both sides. One that drops while the confirm is on its way leaves
//! the proposer on the new version (signed by both) and the answerer on the old one (having
//! signed the new); the resume handshake reconciles them (`handshake/resume.rs`, with
//! [`verify_successor`]). Both sides proposing at once: the proposal of the side that plays the
//! initiator in the agreement wins; the other side drops its own and answers.
//!
//! No IO, no clock: the [`super::LinkSession`] owning it passes the time in.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::SessionEvent;
use super::bodies::{self, BodyError, BodyFault, Control, MAX_REASON_LEN};
use crate::agreement::{Agreement, MalformedAgreement, SignedAgreement};
use crate::capability::{Accepted, Capabilities};
use crate::crypto::{Digest384, SIGNATURE_LEN, Signature, SigningKey, VerifyingKey, sha384};
use crate::frame::FrameType;
use crate::handshake::{ErrorCode, Role, agreement_input};
use crate::policy::{Evaluation, PolicyOffer};

/// The body of a `RenegotiationProposal` frame: the proposer's current offer and the version it
/// proposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenegotiationProposal {
    /// The version proposed: the one in force + 1.
    pub version: u32,
    /// The proposer's capabilities, as its handshake would offer them.
    pub capabilities: Capabilities,
    /// The proposer's policy offer.
    pub policy: PolicyOffer,
}

/// The body of a `RenegotiationAnswer` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenegotiationAnswer {
    /// The new agreement as the answerer built it, and the answerer's signature over it.
    Accept {
        /// The agreement's CBOR bytes, kept identical by both sides.
        agreement: ByteBuf,
        /// The answerer's signature, for the role it plays in the agreement.
        signature: ByteBuf,
    },
    /// The proposal is refused; the agreement in force stays.
    Refuse {
        /// The version that was proposed.
        version: u32,
        /// Why, at most [`MAX_REASON_LEN`] bytes.
        reason: String,
    },
}

/// The body of a `RenegotiationConfirm` frame: the proposer's signature. The frame is the switch
/// point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenegotiationConfirm {
    /// The version confirmed.
    pub version: u32,
    /// The proposer's signature, for the role it plays in the agreement.
    pub signature: ByteBuf,
}

impl RenegotiationProposal {
    /// The CBOR body.
    pub fn encode(&self) -> Vec<u8> {
        bodies::encode(self)
    }

    /// Reads a body.
    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        bodies::decode(FrameType::RenegotiationProposal, bytes)
    }
}

impl RenegotiationAnswer {
    /// A refusal of `version`, its reason cut to [`MAX_REASON_LEN`] bytes.
    pub fn refuse(version: u32, reason: &str) -> Self {
        Self::Refuse {
            version,
            reason: bodies::truncate(reason, MAX_REASON_LEN).to_owned(),
        }
    }

    /// The CBOR body.
    pub fn encode(&self) -> Vec<u8> {
        bodies::encode(self)
    }

    /// Reads a body; a signature that is not one, or a reason over [`MAX_REASON_LEN`] bytes, is
    /// refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        let frame = FrameType::RenegotiationAnswer;
        let body: Self = bodies::decode(frame, bytes)?;
        match &body {
            Self::Accept { signature, .. } => check_signature(frame, signature)?,
            Self::Refuse { reason, .. } if reason.len() > MAX_REASON_LEN => {
                return Err(BodyError {
                    frame,
                    fault: BodyFault::ReasonTooLong {
                        len: reason.len(),
                        max: MAX_REASON_LEN,
                    },
                });
            }
            Self::Refuse { .. } => {}
        }
        Ok(body)
    }
}

impl RenegotiationConfirm {
    /// The CBOR body.
    pub fn encode(&self) -> Vec<u8> {
        bodies::encode(self)
    }

    /// Reads a body; a signature that is not one is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        let frame = FrameType::RenegotiationConfirm;
        let body: Self = bodies::decode(frame, bytes)?;
        check_signature(frame, &body.signature)?;
        Ok(body)
    }
}

fn check_signature(frame: FrameType, signature: &[u8]) -> Result<(), BodyError> {
    if signature.len() == SIGNATURE_LEN {
        return Ok(());
    }
    Err(BodyError {
        frame,
        fault: BodyFault::NotASignature(signature.len()),
    })
}

/// What a link session needs to renegotiate: the agreement in force, this side's part in it, its
/// key and the peer's, and this side's current offer.
#[derive(Debug, Clone)]
pub struct RenegotiationSetup {
    /// The role this side plays in the agreement (the registry's role). The initiator's proposal
    /// wins when both sides propose at once.
    pub role: Role,
    /// This node's key, to sign new agreements.
    pub key: Arc<SigningKey>,
    /// The peer node's key, from its certificate on this link.
    pub peer_key: VerifyingKey,
    /// The agreement in force.
    pub agreement: SignedAgreement,
    /// This side's capabilities offer (and wish, when answering).
    pub capabilities: Capabilities,
    /// This side's policy offer.
    pub policy: PolicyOffer,
    /// How long a proposal waits for its answer. The answerer waits twice this for the confirm,
    /// so it never gives up on an exchange the proposer still completes.
    pub timeout: Duration,
}

/// Which side proposed a renegotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposedBy {
    /// This side.
    Local,
    /// The peer.
    Peer,
}

/// A new agreement in force from this point of the link stream on: data frames sent or received
/// before the switch belong to the old version, after it to this one. Store it and apply its
/// terms before the next data frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreementSwitch {
    /// The new agreement with both signatures.
    pub signed: SignedAgreement,
    /// The new agreement, decoded.
    pub agreement: Agreement,
    /// The version replaced.
    pub previous: u32,
    /// Who proposed it.
    pub proposed_by: ProposedBy,
}

/// Why a renegotiation ended without a new agreement; the agreement in force stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenegotiationFailure {
    /// The peer refused this side's proposal, for this reason.
    RefusedByPeer(String),
    /// This side refused the peer's proposal, for this reason (sent to the peer).
    RefusedHere(String),
    /// No answer (or no confirm) came within this time.
    TimedOut(Duration),
    /// The peer proposed at the same time and its proposal won; this side answers it.
    Superseded,
}

impl fmt::Display for RenegotiationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RefusedByPeer(r) => write!(f, "the peer refused the proposal: {r}"),
            Self::RefusedHere(r) => write!(f, "refused the peer's proposal: {r}"),
            Self::TimedOut(d) => write!(f, "no answer within {d:?}"),
            Self::Superseded => f.write_str("the peer's simultaneous proposal took precedence"),
        }
    }
}

/// A renegotiation frame that breaks the exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenegotiationViolation {
    /// An answer's agreement is not what this side's offer allows.
    #[error("the renegotiated agreement is not acceptable: {0}")]
    AgreementInvalid(String),
    /// A signature over the new agreement does not verify with the peer's key.
    #[error("the peer's signature over agreement version {0} does not verify")]
    BadSignature(u32),
    /// One of the two signatures on a renegotiated agreement does not verify with its party's key.
    #[error("the {role:?}'s signature over agreement version {version} does not verify")]
    PartySignatureInvalid {
        /// The agreement's version.
        version: u32,
        /// The party whose signature fails, as the agreement names it.
        role: Role,
    },
    /// A confirm for no agreement this side answered.
    #[error("a confirm of agreement version {0} answers no accepted proposal")]
    UnexpectedConfirm(u32),
    /// An answer or confirm on a session that does not renegotiate.
    #[error("a {0:?} frame on a session that does not renegotiate")]
    NotRenegotiating(FrameType),
}

impl RenegotiationViolation {
    /// The wire code it is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::AgreementInvalid(_) => ErrorCode::AgreementMismatch,
            Self::BadSignature(_) | Self::PartySignatureInvalid { .. } => ErrorCode::BadSignature,
            Self::UnexpectedConfirm(_) | Self::NotRenegotiating(_) => ErrorCode::UnexpectedMessage,
        }
    }
}

/// Why a local renegotiation request was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenegotiateError {
    /// The session has ended.
    #[error("the link session is closed")]
    Closed,
    /// The session was started without a [`RenegotiationSetup`].
    #[error("this link session does not renegotiate")]
    NotEnabled,
    /// An exchange for this version is under way.
    #[error("a renegotiation to agreement version {0} is under way")]
    InProgress(u32),
}

/// Where the exchange stands.
#[derive(Debug)]
enum Phase {
    Idle,
    /// This side proposed `version`; the answer is due by `deadline`.
    Proposed {
        version: u32,
        deadline: Option<Instant>,
    },
    /// This side accepted the peer's proposal and signed; the confirm is due by `deadline`.
    Answered {
        agreement: Box<Agreement>,
        bytes: Vec<u8>,
        own: Signature,
        deadline: Option<Instant>,
    },
}

/// The renegotiation exchange of one link session.
#[derive(Debug)]
pub(super) struct Renegotiation {
    setup: RenegotiationSetup,
    current: Agreement,
    phase: Phase,
}

/// Where the exchange's output goes: the session's frames and events.
pub(super) struct Out<'a> {
    pub(super) frames: &'a mut std::collections::VecDeque<crate::frame::Frame>,
    pub(super) events: &'a mut std::collections::VecDeque<SessionEvent>,
}

impl Out<'_> {
    fn send(&mut self, control: Control) {
        self.frames.push_back(control.to_frame());
    }

    fn failed(&mut self, version: u32, failure: RenegotiationFailure) {
        self.events
            .push_back(SessionEvent::RenegotiationFailed { version, failure });
    }
}

impl Renegotiation {
    pub(super) fn set_offer(&mut self, capabilities: Capabilities, policy: PolicyOffer) {
        self.setup.capabilities = capabilities;
        self.setup.policy = policy;
    }

    pub(super) fn new(setup: RenegotiationSetup) -> Result<Self, MalformedAgreement> {
        let current = setup.agreement.agreement()?;
        Ok(Self {
            setup,
            current,
            phase: Phase::Idle,
        })
    }

    /// The version in force at this point of the link stream.
    pub(super) fn version(&self) -> u32 {
        self.current.version
    }

    pub(super) fn propose(
        &mut self,
        now: Instant,
        out: &mut Out<'_>,
    ) -> Result<u32, RenegotiateError> {
        match &self.phase {
            Phase::Idle => {}
            Phase::Proposed { version, .. } => return Err(RenegotiateError::InProgress(*version)),
            Phase::Answered { agreement, .. } => {
                return Err(RenegotiateError::InProgress(agreement.version));
            }
        }
        let version = self.current.version.saturating_add(1);
        out.send(Control::RenegotiationProposal(Box::new(
            RenegotiationProposal {
                version,
                capabilities: self.setup.capabilities.clone(),
                policy: self.setup.policy.clone(),
            },
        )));
        self.phase = Phase::Proposed {
            version,
            deadline: now.checked_add(self.setup.timeout),
        };
        Ok(version)
    }

    pub(super) fn next_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Idle => None,
            Phase::Proposed { deadline, .. } | Phase::Answered { deadline, .. } => *deadline,
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Instant, out: &mut Out<'_>) {
        let (version, waited) = match &self.phase {
            Phase::Proposed { version, deadline } if deadline.is_some_and(|d| now >= d) => {
                (*version, self.setup.timeout)
            }
            Phase::Answered {
                agreement,
                deadline,
                ..
            } if deadline.is_some_and(|d| now >= d) => {
                (agreement.version, self.setup.timeout.saturating_mul(2))
            }
            _ => return,
        };
        self.phase = Phase::Idle;
        out.failed(version, RenegotiationFailure::TimedOut(waited));
    }

    pub(super) fn on_proposal(
        &mut self,
        p: RenegotiationProposal,
        now: Instant,
        out: &mut Out<'_>,
    ) {
        match &self.phase {
            Phase::Idle => {}
            // Both proposed at once: the agreement's initiator wins, and its peer answers.
            Phase::Proposed { .. } if self.setup.role == Role::Initiator => return,
            Phase::Proposed { version, .. } => {
                out.failed(*version, RenegotiationFailure::Superseded);
                self.phase = Phase::Idle;
            }
            Phase::Answered { agreement, .. } => {
                let reason = format!(
                    "already answered a proposal of version {} and waiting for its confirm",
                    agreement.version
                );
                out.send(Control::RenegotiationAnswer(RenegotiationAnswer::refuse(
                    p.version, &reason,
                )));
                return;
            }
        }
        let built = self.answer(&p);
        let (agreement, bytes, own) = match built {
            Ok(b) => b,
            Err(reason) => {
                out.send(Control::RenegotiationAnswer(RenegotiationAnswer::refuse(
                    p.version, &reason,
                )));
                out.failed(p.version, RenegotiationFailure::RefusedHere(reason));
                return;
            }
        };
        out.send(Control::RenegotiationAnswer(RenegotiationAnswer::Accept {
            agreement: ByteBuf::from(bytes.clone()),
            signature: ByteBuf::from(own.0.to_vec()),
        }));
        self.phase = Phase::Answered {
            agreement: Box::new(agreement),
            bytes,
            own,
            deadline: now.checked_add(self.setup.timeout.saturating_mul(2)),
        };
    }

    /// The agreement this side accepts for the peer's proposal, its bytes and this side's
    /// signature; or why it refuses.
    fn answer(&self, p: &RenegotiationProposal) -> Result<(Agreement, Vec<u8>, Signature), String> {
        let expected = self.current.version.saturating_add(1);
        if p.version != expected {
            return Err(format!(
                "proposes agreement version {}, but version {} is in force here (expected {expected})",
                p.version, self.current.version
            ));
        }
        let accepted = self
            .setup
            .capabilities
            .negotiate(&p.capabilities)
            .map_err(|e| e.to_string())?;
        let policy = self
            .setup
            .policy
            .combine(&p.policy.proposal())
            .map_err(|e| e.to_string())?;
        let agreement = Agreement {
            version: p.version,
            capabilities: oriented(accepted, self.setup.role),
            policy,
            ..self.current.clone()
        };
        let bytes = agreement.encode();
        let own = self
            .setup
            .key
            .sign(&agreement_input(self.setup.role, &sha384(&bytes)))
            .map_err(|e| format!("could not sign the agreement: {e}"))?;
        Ok((agreement, bytes, own))
    }

    pub(super) fn on_answer(
        &mut self,
        answer: RenegotiationAnswer,
        out: &mut Out<'_>,
    ) -> Result<(), RenegotiationViolation> {
        let Phase::Proposed { version, .. } = self.phase else {
            // An answer to a proposal that timed out or lost a collision: the peer's own wait for
            // a confirm ends the same way, and the agreement in force stays on both sides.
            return Ok(());
        };
        let (bytes, signature) = match answer {
            RenegotiationAnswer::Refuse { version: v, reason } if v == version => {
                self.phase = Phase::Idle;
                out.failed(version, RenegotiationFailure::RefusedByPeer(reason));
                return Ok(());
            }
            // A refusal of an earlier proposal of the same version: this one is still pending.
            RenegotiationAnswer::Refuse { .. } => return Ok(()),
            RenegotiationAnswer::Accept {
                agreement,
                signature,
            } => (agreement.into_vec(), signature),
        };
        let agreement = self.check_answer(version, &bytes)?;
        let digest = sha384(&bytes);
        let peer_signature = verify_signature(
            &self.setup.peer_key,
            other(self.setup.role),
            &digest,
            &signature,
            version,
        )?;
        let own = self
            .setup
            .key
            .sign(&agreement_input(self.setup.role, &digest))
            .map_err(|e| {
                RenegotiationViolation::AgreementInvalid(format!("could not sign it here: {e}"))
            })?;
        out.send(Control::RenegotiationConfirm(RenegotiationConfirm {
            version,
            signature: ByteBuf::from(own.0.to_vec()),
        }));
        self.switch(
            agreement,
            bytes,
            own,
            peer_signature,
            ProposedBy::Local,
            out,
        );
        Ok(())
    }

    /// The answer's agreement, if it is the one in force but for version, capabilities within
    /// this side's offer and policy terms this side accepts as they stand.
    fn check_answer(
        &self,
        version: u32,
        bytes: &[u8],
    ) -> Result<Agreement, RenegotiationViolation> {
        let invalid = RenegotiationViolation::AgreementInvalid;
        let agreement = successor(&self.current, version, bytes)?;
        // The capability checks read "initiator" as the side that offered: this side.
        let as_offered = oriented(agreement.capabilities.clone(), other(self.setup.role));
        self.setup
            .capabilities
            .check_accepted(&as_offered)
            .map_err(|e| invalid(e.to_string()))?;
        match self.setup.policy.evaluate(&agreement.policy) {
            Ok(Evaluation::Accept) => Ok(agreement),
            Ok(Evaluation::Counter(_)) => Err(invalid(
                "its policy terms are less restrictive than this side's offer".to_owned(),
            )),
            Err(e) => Err(invalid(e.to_string())),
        }
    }

    pub(super) fn on_confirm(
        &mut self,
        confirm: RenegotiationConfirm,
        out: &mut Out<'_>,
    ) -> Result<(), RenegotiationViolation> {
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        let Phase::Answered {
            agreement,
            bytes,
            own,
            deadline,
        } = phase
        else {
            self.phase = phase;
            return Err(RenegotiationViolation::UnexpectedConfirm(confirm.version));
        };
        if confirm.version != agreement.version {
            let version = confirm.version;
            self.phase = Phase::Answered {
                agreement,
                bytes,
                own,
                deadline,
            };
            return Err(RenegotiationViolation::UnexpectedConfirm(version));
        }
        let peer_signature = verify_signature(
            &self.setup.peer_key,
            other(self.setup.role),
            &sha384(&bytes),
            &confirm.signature,
            agreement.version,
        )?;
        self.switch(
            *agreement,
            bytes,
            own,
            peer_signature,
            ProposedBy::Peer,
            out,
        );
        Ok(())
    }

    fn switch(
        &mut self,
        agreement: Agreement,
        bytes: Vec<u8>,
        own: Signature,
        peer: Signature,
        proposed_by: ProposedBy,
        out: &mut Out<'_>,
    ) {
        let (initiator, responder) = match self.setup.role {
            Role::Initiator => (own, peer),
            Role::Responder => (peer, own),
        };
        let signed = SignedAgreement {
            bytes: ByteBuf::from(bytes),
            initiator_signature: ByteBuf::from(initiator.0.to_vec()),
            responder_signature: ByteBuf::from(responder.0.to_vec()),
        };
        let previous = self.current.version;
        self.current = agreement.clone();
        self.setup.agreement = signed.clone();
        self.phase = Phase::Idle;
        out.events
            .push_back(SessionEvent::AgreementSwitched(Box::new(AgreementSwitch {
                signed,
                agreement,
                previous,
                proposed_by,
            })));
    }
}

/// `next`, if it is the agreement a renegotiation of `current` puts in force: the same federation,
/// parties, bundles and validity, version `current.version + 1`, and both parties' signatures
/// verifying as the exchange verifies them (`initiator_key` and `responder_key`: the keys of the
/// agreement's initiator and responder nodes). A side that missed the confirm of a renegotiation
/// its peer completed checks the agreement with this when the resume handshake brings it over.
pub fn verify_successor(
    current: &Agreement,
    next: &SignedAgreement,
    initiator_key: &VerifyingKey,
    responder_key: &VerifyingKey,
) -> Result<Agreement, RenegotiationViolation> {
    let version = current.version.checked_add(1).ok_or_else(|| {
        RenegotiationViolation::AgreementInvalid(format!(
            "version {} in force has no successor",
            current.version
        ))
    })?;
    let agreement = successor(current, version, &next.bytes)?;
    let digest = next.digest();
    for (key, role, signature) in [
        (initiator_key, Role::Initiator, &next.initiator_signature),
        (responder_key, Role::Responder, &next.responder_signature),
    ] {
        verify_signature(key, role, &digest, signature, version)
            .map_err(|_| RenegotiationViolation::PartySignatureInvalid { version, role })?;
    }
    Ok(agreement)
}

/// `bytes` decoded, if they are `current` but for version (`version`), capabilities and policy.
fn successor(
    current: &Agreement,
    version: u32,
    bytes: &[u8],
) -> Result<Agreement, RenegotiationViolation> {
    let invalid = RenegotiationViolation::AgreementInvalid;
    let agreement = Agreement::decode(bytes).map_err(|e| invalid(e.to_string()))?;
    if agreement.version != version {
        return Err(invalid(format!(
            "it has version {}, version {version} was proposed",
            agreement.version
        )));
    }
    let unchanged = Agreement {
        version,
        capabilities: agreement.capabilities.clone(),
        policy: agreement.policy.clone(),
        ..current.clone()
    };
    if unchanged != agreement {
        return Err(invalid(
            "it changes the federation, a party or the validity".to_owned(),
        ));
    }
    Ok(agreement)
}

/// `signature`, if it is `key`'s signature over agreement `digest` for `role`.
fn verify_signature(
    key: &VerifyingKey,
    role: Role,
    digest: &Digest384,
    signature: &[u8],
    version: u32,
) -> Result<Signature, RenegotiationViolation> {
    let signature = to_signature(signature).ok_or(RenegotiationViolation::BadSignature(version))?;
    key.verify(&agreement_input(role, digest), &signature)
        .map_err(|_| RenegotiationViolation::BadSignature(version))?;
    Ok(signature)
}

/// `accepted` as the capability functions compute it (the answering side in the responder's
/// place), turned to the agreement's view when the answering side is in fact its initiator: the
/// services' directions swap. Turning twice is the identity.
fn oriented(mut accepted: Accepted, answering: Role) -> Accepted {
    if answering == Role::Initiator {
        let s = &mut accepted.services;
        std::mem::swap(&mut s.to_initiator, &mut s.to_responder);
    }
    accepted
}

fn other(role: Role) -> Role {
    match role {
        Role::Initiator => Role::Responder,
        Role::Responder => Role::Initiator,
    }
}

fn to_signature(bytes: &[u8]) -> Option<Signature> {
    bytes.try_into().ok().map(Signature)
}
