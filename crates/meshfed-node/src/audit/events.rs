//! The gateway's facts as audit records: one function per kind of event a stage sees, so that
//! each stage records with one call and every record of a kind is made the same way.

use meshfed_audit::record::{
    AgreementCause, BatchRef, By, CredentialAction, Delivery, Direction, Event, HandshakeStep,
    RefusalKind, Role, Terms, Text,
};
use meshfed_proto::admission::{self, Refusal};
use meshfed_proto::agreement::SignedAgreement;
use meshfed_proto::batch::merkle::{Tree, TreeHash};
use meshfed_proto::batch::{BatchHead, UnsignedEnvelope};
use meshfed_proto::envelope::EnvelopeId;
use meshfed_proto::envelope::{Header, WireEnvelope};
use meshfed_proto::handshake::{self, Established, Step};
use meshfed_proto::policy::AuditLevel;
use meshfed_proto::{FederationId, FederationState, MeshId};

use super::{Audit, BatchEvidence, Crossed, Evidence};

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

/// The digest record of an envelope this node sends, before its batch is signed.
pub(crate) fn sent(e: &UnsignedEnvelope) -> Crossed {
    crossed_out(
        e.header(),
        e.header_bytes(),
        e.payload_digest(),
        e.payload().len(),
        None,
    )
}

/// The digest record of an envelope this node sends: what its header says, and its evidence
/// (with its own `signature` when it was signed alone).
fn crossed_out(
    h: &Header,
    header_bytes: &[u8],
    payload_digest: &[u8; 48],
    size: usize,
    signature: Option<serde_bytes::ByteBuf>,
) -> Crossed {
    Crossed {
        direction: Delivery::Sent,
        envelope: h.id,
        source: h.source.mesh.clone(),
        destination: h.destination.mesh.clone(),
        topic: h.metadata.topic.to_string(),
        size: size as u64,
        qos: h.policy.qos.level(),
        payload_digest: *payload_digest,
        batch: None,
        evidence: Some(Evidence {
            header: header_bytes.to_vec(),
            payload_digest: *payload_digest,
            batch: None,
            signature,
            certificate: *h.certificate.digest(),
        }),
        certificate: h.certificate.der().cloned(),
        intermediates: None,
    }
}

/// `sent` (each with its index in the batch), completed with the batch `signature` signed
/// over `leaves`: its root and signature, and each envelope's inclusion proof.
pub(crate) fn signed_batch(
    sent: Vec<(u32, Crossed)>,
    leaves: &[TreeHash],
    head: &BatchHead,
) -> Vec<Crossed> {
    if sent.is_empty() {
        return Vec::new();
    }
    let signature = &head.signature;
    let encoded = head.encode();
    let tree = Tree::from_leaf_hashes(leaves.to_vec());
    sent.into_iter()
        .map(|(index, mut c)| {
            c.batch = Some(BatchRef {
                number: head.number,
                index: u64::from(index),
                count: u64::from(signature.count()),
                root: *signature.root(),
            });
            if let Some(e) = c.evidence.as_mut() {
                e.batch = Some(BatchEvidence {
                    head: encoded.clone(),
                    index,
                    proof: tree
                        .proof(u64::from(index))
                        .map(|p| p.to_bytes())
                        .unwrap_or_default(),
                });
            }
            c
        })
        .collect()
}

/// The digest record of an envelope this node signed alone.
pub(crate) fn sent_alone(wire: &WireEnvelope) -> Crossed {
    let signature = serde_bytes::ByteBuf::from(wire.signature().0.to_vec());
    crossed_out(
        wire.header(),
        wire.header_bytes(),
        wire.payload_digest(),
        wire.payload().len(),
        Some(signature),
    )
}
