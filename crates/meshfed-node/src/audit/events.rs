//! The gateway's facts as audit records: one function per kind of event a stage sees, so that
//! each stage records with one call and every record of a kind is made the same way.

use meshfed_audit::record::{
    AgreementCause, BatchRef, By, CredentialAction, Delivery, Direction, Event, HandshakeStep,
    RefusalKind, Role, Terms, Text,
};
use meshfed_proto::admission::{self, Refusal};
use meshfed_proto::agreement::SignedAgreement;
use meshfed_proto::batch::merkle::TreeHash;
use meshfed_proto::batch::{BatchHead, BatchReceipt, UnsignedEnvelope};
use meshfed_proto::envelope::EnvelopeId;
use meshfed_proto::envelope::{Header, WireEnvelope};
use meshfed_proto::handshake::{self, Established, Step};
use meshfed_proto::policy::AuditLevel;
use meshfed_proto::{FederationId, FederationState, MeshId};

use super::{Audit, BatchEvidence, Crossed, CrossedMessage, EnvelopeEvidence};

/// A handshake that established (or resumed) a federation: its steps, then the outcome, then
/// the agreement it put in force.
pub(crate) fn handshake(audit: &Audit, est: &Established, steps: Vec<Step>) {
    let role = match est.role {
        handshake::Role::Initiator => Role::Initiator,
        handshake::Role::Responder => Role::Responder,
    };
    let id = &est.federation_id;
    let peer = &est.peer.mesh;
    let step = |step| Event::Handshake {
        peer: Some(peer.clone()),
        role,
        step,
    };
    for s in steps {
        audit.federation(
            id,
            step(match s {
                Step::CapabilitiesAgreed => HandshakeStep::CapabilitiesAgreed,
                Step::PeerVerified => HandshakeStep::PeerVerified,
                Step::PolicyAgreed { rounds } => HandshakeStep::PolicyAgreed {
                    rounds: rounds.into(),
                },
                Step::AgreementSigned => HandshakeStep::AgreementSigned,
            }),
        );
    }
    audit.federation(
        id,
        step(if est.agreement.is_some() {
            HandshakeStep::Established
        } else {
            HandshakeStep::Resumed
        }),
    );
    if let Some(signed) = &est.agreement {
        agreement(audit, id, peer, signed, AgreementCause::Established);
    }
    if let Some(c) = &est.caught_up {
        agreement(audit, id, peer, &c.signed, AgreementCause::CaughtUp);
    }
}

/// An agreement in force from now on.
pub(crate) fn agreement(
    audit: &Audit,
    federation: &FederationId,
    peer: &MeshId,
    signed: &SignedAgreement,
    cause: AgreementCause,
) {
    let (version, policy) = match signed.agreement() {
        Ok(a) => (
            u64::from(a.version),
            serde_json::to_string(&a.policy).unwrap_or_else(|e| format!("unreadable: {e}")),
        ),
        Err(e) => (0, format!("unreadable: {e}")),
    };
    audit.federation(
        federation,
        Event::Agreement {
            peer: peer.clone(),
            version,
            agreement_digest: signed.digest(),
            policy: Terms::new(policy),
            cause,
        },
    );
}

/// A lifecycle transition of `federation`.
pub(crate) fn lifecycle(
    audit: &Audit,
    federation: &FederationId,
    peer: &MeshId,
    (from, to): (FederationState, FederationState),
    by: By,
    reason: &str,
) {
    if from == to {
        return;
    }
    audit.federation(
        federation,
        Event::Lifecycle {
            peer: peer.clone(),
            from,
            to,
            by,
            reason: Text::new(reason),
        },
    );
}

/// A refusal on `federation` (when its level records refusals), or of something that reached
/// no federation (the node's log).
pub(crate) fn refused(
    audit: &Audit,
    on: Option<(&FederationId, AuditLevel)>,
    direction: admission::Direction,
    peer: Option<&MeshId>,
    envelope: Option<EnvelopeId>,
    topic: Option<&str>,
    refusal: &Refusal,
) {
    let event = || Event::Refused {
        direction: Direction::from(direction),
        peer: peer.cloned(),
        envelope,
        topic: topic.map(Text::new),
        reason: RefusalKind::from(refusal),
        detail: Text::new(refusal.to_string()),
    };
    match on {
        Some((federation, level)) => {
            audit.at_level(level, AuditLevel::Refusals, federation, event);
        }
        None => audit.node(event()),
    }
}

/// A credential event of this node (its log).
pub(crate) fn credential(audit: &Audit, action: CredentialAction, subject: &str, id: &str) {
    audit.node(Event::Credential {
        action,
        subject: Text::new(subject),
        id: Text::new(id),
    });
}

/// The digest of envelope `index` of a batch this node sends, before the batch is signed.
pub(crate) fn sent(e: &UnsignedEnvelope, index: u32) -> CrossedMessage {
    crossed_message(
        e.header(),
        e.header_bytes(),
        e.payload_digest(),
        e.payload().len(),
        index,
        None,
    )
}

/// One envelope that crossed: what its header says, and its evidence (with its own
/// `signature` when it was signed alone).
pub(crate) fn crossed_message(
    h: &Header,
    header_bytes: &[u8],
    payload_digest: &[u8; 48],
    size: usize,
    index: u32,
    signature: Option<serde_bytes::ByteBuf>,
) -> CrossedMessage {
    CrossedMessage {
        envelope: h.id,
        source: h.source.mesh.clone(),
        destination: h.destination.mesh.clone(),
        topic: h.metadata.topic.to_string(),
        size: size as u64,
        qos: h.policy.qos.level(),
        index,
        evidence: EnvelopeEvidence {
            header: header_bytes.to_vec(),
            payload_digest: *payload_digest,
            signature,
        },
        certificate: h.certificate.der().cloned(),
        certificate_digest: *h.certificate.digest(),
    }
}

/// The batch `head` signed over `leaves`, as a `messages` record and its evidence name it.
pub(crate) fn batch(leaves: &[TreeHash], head: &BatchHead) -> (BatchRef, BatchEvidence) {
    let signature = &head.signature;
    (
        BatchRef {
            number: head.number,
            count: u64::from(signature.count()),
            root: *signature.root(),
        },
        BatchEvidence {
            head: head.encode(),
            leaves: leaves
                .iter()
                .fold(Vec::with_capacity(leaves.len() * 48), |mut out, l| {
                    out.extend_from_slice(l.as_bytes());
                    out
                }),
        },
    )
}

/// A verified batch received, as a `messages` record and its evidence name it (the receiver
/// numbers no batch: it knows the batch by its root).
pub(crate) fn received_batch(receipt: &BatchReceipt) -> (BatchRef, BatchEvidence) {
    let head = BatchHead {
        number: 0,
        signature: receipt.signature().clone(),
    };
    batch(receipt.leaf_hashes(), &head)
}

/// `sent` to `peer`, signed in the batch `head` over `leaves`.
pub(crate) fn signed_batch(
    peer: &MeshId,
    sent: Vec<CrossedMessage>,
    leaves: &[TreeHash],
    head: &BatchHead,
) -> Option<Crossed> {
    (!sent.is_empty()).then(|| Crossed {
        direction: Delivery::Sent,
        peer: peer.clone(),
        batch: Some(batch(leaves, head)),
        messages: sent,
        intermediates: None,
    })
}

/// Envelopes this node signed alone and sent to `peer`.
pub(crate) fn sent_alone(peer: &MeshId, wires: &[WireEnvelope]) -> Option<Crossed> {
    (!wires.is_empty()).then(|| Crossed {
        direction: Delivery::Sent,
        peer: peer.clone(),
        batch: None,
        messages: wires
            .iter()
            .zip(0u32..)
            .map(|(wire, index)| {
                crossed_message(
                    wire.header(),
                    wire.header_bytes(),
                    wire.payload_digest(),
                    wire.payload().len(),
                    index,
                    Some(serde_bytes::ByteBuf::from(wire.signature().0.to_vec())),
                )
            })
            .collect(),
        intermediates: None,
    })
}
