//! The handshake's messages, message for message as in the spec's sequence diagram, plus the
//! two that re-establish a stored federation. Bodies are CBOR.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::agreement::SignedAgreement;
use crate::capability::{Accepted, Capabilities};
use crate::frame::{Frame, FrameType};
use crate::id::{FederationId, MeshId, NodeName};
use crate::policy::PolicyTerms;

/// Step 2, initiator → responder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationRequest {
    /// The initiator's mesh.
    pub mesh: MeshId,
    /// The initiator's node.
    pub node: NodeName,
    /// What the initiator offers.
    pub capabilities: Capabilities,
}

/// Step 2, responder → initiator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationResponse {
    /// The id the responder gives the federation.
    pub federation_id: FederationId,
    /// The responder's mesh.
    pub mesh: MeshId,
    /// The responder's node.
    pub node: NodeName,
    /// The capabilities accepted.
    pub accepted: Accepted,
}

/// Proof that the initiator holds an invitation's secret, bound to this TLS channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationProof {
    /// The invitation's public id.
    pub token_id: String,
    /// HMAC-SHA384 over the channel binding ([`super::invitation_mac`]).
    pub mac: ByteBuf,
}

/// Step 3, initiator → responder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustCredentialExchange {
    /// The initiator's trust bundle: its mesh CA certificates, DER.
    pub bundle: Vec<ByteBuf>,
    /// Present when joining by invitation.
    pub invitation: Option<InvitationProof>,
}

/// Step 3, responder → initiator: the initiator is verified; here is the responder's bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustCredentialVerification {
    /// The responder's trust bundle.
    pub bundle: Vec<ByteBuf>,
}

/// Step 4: terms proposed (by the initiator), round by round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyProposal {
    /// Negotiation round, from 1.
    pub round: u8,
    /// The proposed terms.
    pub terms: PolicyTerms,
}

/// Step 4: the proposal of `round` is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyAcceptance {
    /// The round accepted.
    pub round: u8,
}

/// Step 4: terms the responder can accept instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyCounterproposal {
    /// The round answered.
    pub round: u8,
    /// The counter terms.
    pub terms: PolicyTerms,
}

/// Step 5, initiator → responder: the agreement, signed, with the initiator's ECDH key share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionEstablishment {
    /// The agreement's CBOR bytes.
    pub agreement: ByteBuf,
    /// The initiator's signature over the agreement's digest.
    pub agreement_signature: ByteBuf,
    /// Ephemeral ECDH P-384 public key.
    pub key_share: ByteBuf,
    /// The initiator's signature over its key share, bound to the channel.
    pub key_share_signature: ByteBuf,
}

/// Step 5, responder → initiator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionConfirmation {
    /// The responder's signature over the agreement's digest.
    pub agreement_signature: ByteBuf,
    /// Ephemeral ECDH P-384 public key.
    pub key_share: ByteBuf,
    /// The responder's signature over both key shares, bound to the channel.
    pub key_share_signature: ByteBuf,
}

/// Step 6, initiator → responder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationRequest {
    /// The federation to activate.
    pub federation_id: FederationId,
}

/// Step 6, responder → initiator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationConfirmation {
    /// The federation now active.
    pub federation_id: FederationId,
}

/// Re-establishes a stored federation on a new link (after a restart or a drop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The stored federation.
    pub federation_id: FederationId,
    /// SHA-384 of the stored agreement.
    pub agreement_digest: ByteBuf,
    /// Ephemeral ECDH P-384 public key.
    pub key_share: ByteBuf,
    /// Signature over the resumption input, bound to the channel.
    pub signature: ByteBuf,
    /// The stored agreement itself (`agreement_digest` is its digest), so a responder that
    /// missed the confirm of the last renegotiation can take it over. Absent from initiators
    /// that predate this.
    #[serde(default)]
    pub agreement: Option<SignedAgreement>,
}

/// Answer to [`Resume`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeConfirmation {
    /// Ephemeral ECDH P-384 public key.
    pub key_share: ByteBuf,
    /// Signature over the confirmation input, bound to the channel.
    pub signature: ByteBuf,
    /// The responder's stored agreement, present only when it is the renegotiated successor of
    /// the initiator's: the initiator missed the confirm and takes it over. Both signatures
    /// then cover its digest.
    #[serde(default)]
    pub agreement: Option<SignedAgreement>,
}

/// A fault, ending the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// Wire error code (see [`super::ErrorCode`]).
    pub code: u16,
    /// Readable reason.
    pub reason: String,
}

/// A handshake message, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(missing_docs, reason = "each variant is the message of the same name")]
pub enum Message {
    FederationRequest(FederationRequest),
    FederationResponse(FederationResponse),
    TrustCredentialExchange(TrustCredentialExchange),
    TrustCredentialVerification(TrustCredentialVerification),
    PolicyProposal(PolicyProposal),
    PolicyAcceptance(PolicyAcceptance),
    PolicyCounterproposal(PolicyCounterproposal),
    ConnectionEstablishment(ConnectionEstablishment),
    ConnectionConfirmation(ConnectionConfirmation),
    ActivationRequest(ActivationRequest),
    ActivationConfirmation(ActivationConfirmation),
    Resume(Resume),
    ResumeConfirmation(ResumeConfirmation),
    Error(ErrorFrame),
}

/// A handshake frame whose body does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{frame:?} body does not decode: {detail}")]
pub struct MalformedMessage {
    /// The frame type.
    pub frame: FrameType,
    /// The decoder's words.
    pub detail: String,
}

fn body<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Invariant: encoding plain structs into a Vec cannot fail.
    ciborium::into_writer(msg, &mut out).unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
    out
}

fn parse<T: DeserializeOwned>(frame: &Frame) -> Result<T, MalformedMessage> {
    ciborium::from_reader(frame.body.as_ref()).map_err(|e| MalformedMessage {
        frame: frame.ty,
        detail: e.to_string(),
    })
}

impl Message {
    /// The frame carrying this message.
    pub fn to_frame(&self) -> Frame {
        use FrameType as T;
        let (ty, b) = match self {
            Self::FederationRequest(m) => (T::FederationRequest, body(m)),
            Self::FederationResponse(m) => (T::FederationResponse, body(m)),
            Self::TrustCredentialExchange(m) => (T::TrustCredentialExchange, body(m)),
            Self::TrustCredentialVerification(m) => (T::TrustCredentialVerification, body(m)),
            Self::PolicyProposal(m) => (T::PolicyProposal, body(m)),
            Self::PolicyAcceptance(m) => (T::PolicyAcceptance, body(m)),
            Self::PolicyCounterproposal(m) => (T::PolicyCounterproposal, body(m)),
            Self::ConnectionEstablishment(m) => (T::ConnectionEstablishment, body(m)),
            Self::ConnectionConfirmation(m) => (T::ConnectionConfirmation, body(m)),
            Self::ActivationRequest(m) => (T::ActivationRequest, body(m)),
            Self::ActivationConfirmation(m) => (T::ActivationConfirmation, body(m)),
            Self::Resume(m) => (T::Resume, body(m)),
            Self::ResumeConfirmation(m) => (T::ResumeConfirmation, body(m)),
            Self::Error(m) => (T::Error, body(m)),
        };
        Frame::new(ty, b)
    }

    /// Reads a handshake message; `Ok(None)` for frames that are not handshake messages.
    pub fn from_frame(frame: &Frame) -> Result<Option<Self>, MalformedMessage> {
        use FrameType as T;
        Ok(Some(match frame.ty {
            T::FederationRequest => Self::FederationRequest(parse(frame)?),
            T::FederationResponse => Self::FederationResponse(parse(frame)?),
            T::TrustCredentialExchange => Self::TrustCredentialExchange(parse(frame)?),
            T::TrustCredentialVerification => Self::TrustCredentialVerification(parse(frame)?),
            T::PolicyProposal => Self::PolicyProposal(parse(frame)?),
            T::PolicyAcceptance => Self::PolicyAcceptance(parse(frame)?),
            T::PolicyCounterproposal => Self::PolicyCounterproposal(parse(frame)?),
            T::ConnectionEstablishment => Self::ConnectionEstablishment(parse(frame)?),
            T::ConnectionConfirmation => Self::ConnectionConfirmation(parse(frame)?),
            T::ActivationRequest => Self::ActivationRequest(parse(frame)?),
            T::ActivationConfirmation => Self::ActivationConfirmation(parse(frame)?),
            T::Resume => Self::Resume(parse(frame)?),
            T::ResumeConfirmation => Self::ResumeConfirmation(parse(frame)?),
            T::Error => Self::Error(parse(frame)?),
            _ => return Ok(None),
        }))
    }

    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::FederationRequest(_) => "FederationRequest",
            Self::FederationResponse(_) => "FederationResponse",
            Self::TrustCredentialExchange(_) => "TrustCredentialExchange",
            Self::TrustCredentialVerification(_) => "TrustCredentialVerification",
            Self::PolicyProposal(_) => "PolicyProposal",
            Self::PolicyAcceptance(_) => "PolicyAcceptance",
            Self::PolicyCounterproposal(_) => "PolicyCounterproposal",
            Self::ConnectionEstablishment(_) => "ConnectionEstablishment",
            Self::ConnectionConfirmation(_) => "ConnectionConfirmation",
            Self::ActivationRequest(_) => "ActivationRequest",
            Self::ActivationConfirmation(_) => "ActivationConfirmation",
            Self::Resume(_) => "Resume",
            Self::ResumeConfirmation(_) => "ResumeConfirmation",
            Self::Error(_) => "Error",
        }
    }
}
