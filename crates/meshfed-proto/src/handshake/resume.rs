//! Resuming across a renegotiation one side missed.
//!
//! A renegotiation switches the proposer as it sends its confirm and the answerer as it receives
//! it (`session/renegotiation.rs`), so a link that drops in between leaves the proposer with
//! agreement version v + 1 — signed by both sides — and the answerer with version v. On resume
//! the stored digests differ. Each side sends its stored agreement along (the initiator in
//! `Resume`, the responder in `ResumeConfirmation` when its own is the newer one), and a side
//! takes its peer's over only if it is exactly the renegotiated successor of its own: same
//! federation, parties, bundles and validity, version + 1, both signatures verifying with the
//! two nodes' keys ([`verify_successor`], the check the renegotiation itself makes). Anything
//! else stays an agreement mismatch.

use super::{Context, HandshakeError, PeerIdentity};
use crate::agreement::{Agreement, SignedAgreement};
use crate::crypto::{Digest384, VerifyingKey};
use crate::session::verify_successor;

/// Largest agreement a resume message may carry: two parties' full trust bundles and room for
/// the terms.
pub const MAX_AGREEMENT_LEN: usize = 2 * super::MAX_BUNDLE * super::MAX_CERT_LEN + (16 << 10);

/// An agreement this side takes over from its peer on resumption: the renegotiated successor of
/// the stored one, which the peer switched to and this side did not. Store it as a switch would,
/// the replaced one into the agreement history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaughtUp {
    /// The new agreement with both signatures.
    pub signed: SignedAgreement,
    /// The new agreement, decoded.
    pub agreement: Agreement,
    /// The digest of the stored agreement it replaces.
    pub replaces_digest: Digest384,
}

/// How the two stored agreements relate.
pub(super) enum Reconciled {
    /// The peer's is the successor of ours: this side takes it over.
    TakeTheirs(Box<CaughtUp>),
    /// Ours is the successor of the peer's: the peer takes it over.
    SendOurs,
}

/// How `ours` (stored here) and `theirs` (the peer's, from `message`), which differ, relate; an
/// error unless one is the verified renegotiated successor of the other.
pub(super) fn reconcile(
    cx: &Context,
    message: &'static str,
    ours: &SignedAgreement,
    theirs: &SignedAgreement,
    peer: &PeerIdentity,
) -> Result<Reconciled, HandshakeError> {
    let current = ours
        .agreement()
        .map_err(|e| HandshakeError::Local(format!("the stored agreement: {e}")))?;
    if theirs.bytes.len() > MAX_AGREEMENT_LEN {
        return Err(HandshakeError::InvalidField {
            message,
            field: "agreement",
            reason: format!(
                "is {} bytes, more than {MAX_AGREEMENT_LEN}",
                theirs.bytes.len()
            ),
        });
    }
    let other = theirs
        .agreement()
        .map_err(|e| HandshakeError::InvalidField {
            message,
            field: "agreement",
            reason: e.to_string(),
        })?;
    let own_key = VerifyingKey::from_sec1(cx.local.key.public_key())
        .map_err(|e| HandshakeError::Local(format!("this node's public key: {e}")))?;
    let (initiator_key, responder_key) = if current.initiator.mesh == cx.local.mesh {
        (&own_key, &peer.key)
    } else {
        (&peer.key, &own_key)
    };
    let refused = |violation: crate::session::RenegotiationViolation| {
        HandshakeError::AgreementNotReconciled(format!(
            "version {} here, version {} at the peer: {violation}",
            current.version, other.version
        ))
    };
    if Some(other.version) == current.version.checked_add(1) {
        let agreement =
            verify_successor(&current, theirs, initiator_key, responder_key).map_err(refused)?;
        return Ok(Reconciled::TakeTheirs(Box::new(CaughtUp {
            signed: theirs.clone(),
            agreement,
            replaces_digest: ours.digest(),
        })));
    }
    if Some(current.version) == other.version.checked_add(1) {
        verify_successor(&other, ours, initiator_key, responder_key).map_err(refused)?;
        return Ok(Reconciled::SendOurs);
    }
    let why = if current.version == other.version {
        "the same version with other contents"
    } else {
        "only agreements one renegotiation apart are reconciled"
    };
    Err(HandshakeError::AgreementNotReconciled(format!(
        "version {} here, version {} at the peer: {why}",
        current.version, other.version
    )))
}
