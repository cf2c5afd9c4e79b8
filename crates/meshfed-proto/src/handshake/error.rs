//! Handshake faults, named as facts, and their wire error codes — mapped here and nowhere else.

use crate::capability::Mismatch;
use crate::id::{FederationId, MeshId};
use crate::policy::Unsatisfiable;

use super::messages::MalformedMessage;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A step took longer than its timeout.
    #[error("timed out waiting for {expected}")]
    Timeout {
        /// What was awaited.
        expected: &'static str,
    },
    /// The peer sent a message the current step does not expect.
    #[error("expected {expected}, got {got}")]
    UnexpectedMessage {
        /// What was awaited.
        expected: &'static str,
        /// What arrived.
        got: String,
    },
    /// A message did not decode.
    #[error(transparent)]
    Malformed(#[from] MalformedMessage),
    /// A message decoded but a field is unacceptable.
    #[error("{message}.{field}: {reason}")]
    InvalidField {
        /// The message.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Capabilities could not be agreed.
    #[error(transparent)]
    Capability(#[from] Mismatch),
    /// The peer's certificate is not issued by the trust it offered or that is stored for it.
    #[error("peer certificate not trusted: {0}")]
    UntrustedPeer(String),
    /// The mesh or node the peer claims differs from its certificate.
    #[error("peer claims {claimed} but its certificate names {certified}")]
    IdentityMismatch {
        /// Claimed in a message.
        claimed: String,
        /// Named by the certificate.
        certified: String,
    },
    /// The peer is neither invited nor configured.
    #[error("mesh {0} has no invitation or configured trust here")]
    NotInvited(MeshId),
    /// A live federation with the peer exists already.
    #[error("mesh {peer} is already federated as {existing}; it must resume, not join again")]
    AlreadyFederated {
        /// The peer.
        peer: MeshId,
        /// The existing federation.
        existing: FederationId,
    },
    /// No invitation has that id.
    #[error("invitation {0} is unknown")]
    InvitationUnknown(String),
    /// The invitation was used before.
    #[error("invitation {0} was already used")]
    InvitationReused(String),
    /// The invitation expired.
    #[error("invitation {0} has expired")]
    InvitationExpired(String),
    /// The invitation names another mesh.
    #[error("invitation {token} is for mesh {invited}, not {presented}")]
    InvitationWrongMesh {
        /// The invitation.
        token: String,
        /// The mesh it was issued for.
        invited: MeshId,
        /// The mesh that presented it.
        presented: MeshId,
    },
    /// The proof of the invitation's secret does not verify on this channel.
    #[error("invitation {0}: proof of the secret does not verify on this channel")]
    InvitationProofInvalid(String),
    /// The peer's trust bundle does not contain the pinned CA.
    #[error("peer trust bundle does not contain the pinned CA (SHA-384 {0})")]
    FingerprintMismatch(String),
    /// Policies cannot be agreed.
    #[error(transparent)]
    PolicyUnsatisfiable(#[from] Unsatisfiable),
    /// Negotiation did not converge within the allowed rounds.
    #[error("policy negotiation did not converge within {0} rounds")]
    PolicyRoundsExhausted(u8),
    /// The agreement the initiator sent differs from what was negotiated.
    #[error("agreement field {0} differs from what was negotiated")]
    AgreementMismatch(&'static str),
    /// On resume, the two sides hold different agreements and neither is the verified
    /// renegotiated successor of the other.
    #[error("the stored agreements differ and cannot be reconciled: {0}")]
    AgreementNotReconciled(String),
    /// A signature does not verify.
    #[error("signature over {0} does not verify")]
    BadSignature(&'static str),
    /// No stored federation has that id.
    #[error("federation {0} is unknown here")]
    UnknownFederation(FederationId),
    /// The peer reported an error and closed.
    #[error("peer refused ({code}): {reason}")]
    PeerError {
        /// The peer's wire code.
        code: ErrorCode,
        /// The peer's reason.
        reason: String,
    },
    /// Something failed on this side (cryptography, the store); not the peer's fault.
    #[error("local failure: {0}")]
    Local(String),
}

/// Wire error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[expect(
    missing_docs,
    reason = "each code is named for the fault of the same name"
)]
pub enum ErrorCode {
    Timeout,
    UnexpectedMessage,
    Malformed,
    Capability,
    UntrustedPeer,
    IdentityMismatch,
    NotInvited,
    AlreadyFederated,
    InvitationUnknown,
    InvitationReused,
    InvitationExpired,
    InvitationWrongMesh,
    InvitationProofInvalid,
    FingerprintMismatch,
    PolicyUnsatisfiable,
    PolicyRoundsExhausted,
    AgreementMismatch,
    BadSignature,
    UnknownFederation,
    NotActive,
    HopLimit,
    AgreementViolated,
    TooLarge,
    Internal,
    /// A code this version does not know.
    Other(u16),
}

const CODES: [(ErrorCode, u16, &str); 24] = [
    (ErrorCode::Timeout, 1, "timeout"),
    (ErrorCode::UnexpectedMessage, 2, "unexpected_message"),
    (ErrorCode::Malformed, 3, "malformed"),
    (ErrorCode::Capability, 10, "capability_mismatch"),
    (ErrorCode::UntrustedPeer, 20, "untrusted_peer"),
    (ErrorCode::IdentityMismatch, 21, "identity_mismatch"),
    (ErrorCode::NotInvited, 22, "not_invited"),
    (ErrorCode::AlreadyFederated, 23, "already_federated"),
    (ErrorCode::InvitationUnknown, 24, "invitation_unknown"),
    (ErrorCode::InvitationReused, 25, "invitation_reused"),
    (ErrorCode::InvitationExpired, 26, "invitation_expired"),
    (ErrorCode::InvitationWrongMesh, 27, "invitation_wrong_mesh"),
    (
        ErrorCode::InvitationProofInvalid,
        28,
        "invitation_proof_invalid",
    ),
    (ErrorCode::FingerprintMismatch, 29, "fingerprint_mismatch"),
    (ErrorCode::PolicyUnsatisfiable, 30, "policy_unsatisfiable"),
    (
        ErrorCode::PolicyRoundsExhausted,
        31,
        "policy_rounds_exhausted",
    ),
    (ErrorCode::AgreementMismatch, 40, "agreement_mismatch"),
    (ErrorCode::BadSignature, 41, "bad_signature"),
    (ErrorCode::UnknownFederation, 42, "unknown_federation"),
    (ErrorCode::NotActive, 43, "not_active"),
    (ErrorCode::HopLimit, 44, "hop_limit"),
    (ErrorCode::AgreementViolated, 45, "agreement_violated"),
    (ErrorCode::TooLarge, 46, "too_large"),
    (ErrorCode::Internal, 50, "internal"),
];

impl ErrorCode {
    /// The number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Other(n) => n,
            c => CODES
                .iter()
                .find(|(k, _, _)| *k == c)
                .map_or(50, |(_, n, _)| *n),
        }
    }

    /// The code for a wire number.
    pub fn from_u16(n: u16) -> Self {
        CODES
            .iter()
            .find(|(_, v, _)| *v == n)
            .map_or(Self::Other(n), |(k, _, _)| *k)
    }

    /// The code's name, as logs and the API show it.
    pub fn name(self) -> &'static str {
        CODES
            .iter()
            .find(|(k, _, _)| *k == self)
            .map_or("unknown", |(_, _, s)| s)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Other(n) => write!(f, "code {n}"),
            c => f.write_str(c.name()),
        }
    }
}

impl HandshakeError {
    /// The wire code this fault is reported with.
    pub fn code(&self) -> ErrorCode {
        use HandshakeError as E;
        match self {
            E::Timeout { .. } => ErrorCode::Timeout,
            E::UnexpectedMessage { .. } => ErrorCode::UnexpectedMessage,
            E::Malformed(_) | E::InvalidField { .. } => ErrorCode::Malformed,
            E::Capability(_) => ErrorCode::Capability,
            E::UntrustedPeer(_) => ErrorCode::UntrustedPeer,
            E::IdentityMismatch { .. } => ErrorCode::IdentityMismatch,
            E::NotInvited(_) => ErrorCode::NotInvited,
            E::AlreadyFederated { .. } => ErrorCode::AlreadyFederated,
            E::InvitationUnknown(_) => ErrorCode::InvitationUnknown,
            E::InvitationReused(_) => ErrorCode::InvitationReused,
            E::InvitationExpired(_) => ErrorCode::InvitationExpired,
            E::InvitationWrongMesh { .. } => ErrorCode::InvitationWrongMesh,
            E::InvitationProofInvalid(_) => ErrorCode::InvitationProofInvalid,
            E::FingerprintMismatch(_) => ErrorCode::FingerprintMismatch,
            E::PolicyUnsatisfiable(_) => ErrorCode::PolicyUnsatisfiable,
            E::PolicyRoundsExhausted(_) => ErrorCode::PolicyRoundsExhausted,
            E::AgreementMismatch(_) | E::AgreementNotReconciled(_) => ErrorCode::AgreementMismatch,
            E::BadSignature(_) => ErrorCode::BadSignature,
            E::UnknownFederation(_) => ErrorCode::UnknownFederation,
            E::PeerError { code, .. } => *code,
            E::Local(_) => ErrorCode::Internal,
        }
    }

    /// Whether the fault is the peer's report (so no error frame is sent back).
    pub fn is_from_peer(&self) -> bool {
        matches!(self, Self::PeerError { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_number() {
        for (code, n, _) in CODES {
            assert_eq!(code.to_u16(), n);
            assert_eq!(ErrorCode::from_u16(n), code);
        }
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Other(999));
        assert_eq!(ErrorCode::Other(999).to_u16(), 999);
    }
}
