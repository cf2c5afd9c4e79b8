//! Open: what arrives on a link becomes messages the inbox can take. A transfer frame is
//! decoded, its signer certificate checked against the peer's stored trust bundle, its
//! signature verified (once per batch, or each envelope's on every core); then each envelope is
//! checked ([`Terms::check_arrival`]: federation, source, destination, hops, encryption; and
//! `Terms::check_version`: the agreement version in force at its place in the link stream),
//! opened under the peer's content key and checked against the agreement
//! ([`Terms::admit`], the same check the sender made).
//!
//! A transfer that fails as a whole (does not decode, untrusted signer, bad signature) is
//! refused whole: nothing of it is acknowledged, so the sender sends it again. An envelope that
//! verified but fails its own checks is kept with its [`Refusal`]: it is settled, not delivered,
//! so that the sender stops sending it. Every refusal is counted by its reason.
//!
//! Each delivery keeps the envelope as it crossed — moved out of its batch, with the batch's
//! signed head shared by all of them — so that a subscriber asking for proof can get its export
//! form ([`Delivery::export`]); nothing is encoded here.
//!
//! [`Terms::check_arrival`]: meshfed_proto::admission::Terms::check_arrival
//! [`Terms::admit`]: meshfed_proto::admission::Terms::admit

use std::sync::Arc;

use meshfed_proto::admission::{Direction, Facts, Refusal, Terms};
use meshfed_proto::batch::{BatchSignature, SignedBatch, UnsignedEnvelope};
use meshfed_proto::crypto::{Opener, Signature};
use meshfed_proto::envelope::{BatchProof, Envelope, EnvelopeError, Header, Hop, WireEnvelope};
use meshfed_queue::wire::{Signed, Transfer};
use meshfed_queue::{Message, Transmit};

use super::context::Context;
use super::cores::on_every_core;
use super::inbox::{Arrived, Inbound, Input};
use super::local::{AsCrossed, Delivery};
use super::port::LinkPort;

/// A transfer frame from the peer of `link`: verified, opened, and handed to the inbox (which
/// waits while it is behind: back-pressure on the link).
pub(crate) async fn receive(ctx: &Context, inbound: &Inbound, link: &Arc<LinkPort>, body: &[u8]) {
    match open_transfer(ctx, link, body).await {
        Ok(transmits) => {
            inbound
                .send(Input::Transmits {
                    link: link.clone(),
                    transmits,
                })
                .await;
        }
        Err(refusal) => {
            ctx.metrics.refused(Direction::Inbound, &refusal);
            tracing::warn!(federation = %link.federation_id, peer = %link.peer, reason = refusal.reason(), error = %refusal, "refused a transfer");
        }
    }
}

async fn open_transfer(
    ctx: &Context,
    link: &LinkPort,
    body: &[u8],
) -> Result<Vec<Transmit<Arc<Arrived>>>, Refusal> {
    let malformed = |e: &dyn std::fmt::Display| Refusal::Malformed(e.to_string());
    let transfer = Transfer::decode(body).map_err(|e| malformed(&e))?;
    let Transfer {
        epoch,
        floor,
        items,
        envelopes,
    } = transfer;
    let wall = ctx.clock.wall();
    // The terms in force for this whole transfer: a switch point falls between frames.
    let terms = link.terms();
    let opened: Vec<Opened> = match envelopes {
        Signed::Batch(bytes) => {
            let batch = SignedBatch::decode(&bytes).map_err(|e| malformed(&e))?;
            if batch.len() != items.len() {
                return Err(Refusal::Malformed(format!(
                    "the transfer lists {} items and carries {} envelopes",
                    items.len(),
                    batch.len()
                )));
            }
            let cert = batch
                .envelopes()
                .first()
                .map(|e| e.header().certificate.clone())
                .ok_or_else(|| Refusal::Malformed("an empty batch".to_owned()))?;
            let key = link.trust.signer_key(&cert, wall)?;
            let receipt = batch
                .verify(&key)
                .map_err(|e| Refusal::BadSignature(e.to_string()))?;
            let signature = *receipt.signature().signature();
            // Shared by the batch's envelopes, to make their export form on request.
            let head = Arc::new(receipt.signature().clone());
            let tree = receipt.tree();
            batch
                .into_envelopes()
                .into_iter()
                .enumerate()
                .map(|(i, envelope)| {
                    let position = tree
                        .proof(i as u64)
                        .map_err(|e| e.to_string())
                        .and_then(|p| {
                            BatchProof::new(receipt.signature(), p).map_err(|e| e.to_string())
                        })
                        .map_err(Refusal::BadSignature)?;
                    let parts = Parts::InBatch {
                        envelope,
                        batch: head.clone(),
                    };
                    Ok(arrive(link, &terms, parts, signature, Some(position)))
                })
                .collect::<Result<_, Refusal>>()?
        }
        Signed::Each(list) => {
            let signed = list
                .iter()
                .map(|bytes| {
                    let wire = WireEnvelope::decode(bytes).map_err(|e| malformed(&e))?;
                    let key = link.trust.signer_key(&wire.header().certificate, wall)?;
                    Ok((wire, key))
                })
                .collect::<Result<Vec<_>, Refusal>>()?;
            let verified = on_every_core(signed, |(wire, key)| {
                wire.verify(&key).map_err(|e| e.to_string())?;
                Ok(wire)
            })
            .await
            .map_err(Refusal::BadSignature)?;
            verified
                .into_iter()
                .map(|wire| {
                    let signature = *wire.signature();
                    arrive(link, &terms, Parts::Alone(wire), signature, None)
                })
                .collect()
        }
    };
    Ok(items
        .into_iter()
        .zip(opened)
        .map(|(item, a)| {
            let message = Message::from_header(&a.header, a.size, Arc::new(a.arrived));
            Transmit {
                epoch,
                seq: item.seq,
                floor,
                key_seq: item.key_seq,
                retransmission: item.retransmission,
                message,
            }
        })
        .collect())
}

/// One verified envelope, checked and opened.
struct Opened {
    header: Header,
    size: usize,
    arrived: Arrived,
}

/// A verified envelope as it crossed: signed alone, or moved out of its verified batch.
enum Parts {
    Alone(WireEnvelope),
    InBatch {
        envelope: UnsignedEnvelope,
        batch: Arc<BatchSignature>,
    },
}

impl Parts {
    fn header(&self) -> &Header {
        match self {
            Self::Alone(w) => w.header(),
            Self::InBatch { envelope, .. } => envelope.header(),
        }
    }

    fn hop(&self) -> &Hop {
        match self {
            Self::Alone(w) => &w.hop,
            Self::InBatch { envelope, .. } => &envelope.hop,
        }
    }

    fn open(&self, opener: &Opener) -> Result<Vec<u8>, EnvelopeError> {
        match self {
            Self::Alone(w) => w.open(opener),
            Self::InBatch { envelope, .. } => envelope.open(opener),
        }
    }

    /// What a delivery keeps to make the envelope's export form; `None` for an envelope of a
    /// batch without its position (not made by [`open_transfer`]).
    fn kept(self, position: Option<BatchProof>) -> Option<AsCrossed> {
        match (self, position) {
            (Self::Alone(wire), _) => Some(AsCrossed::Alone(wire)),
            (Self::InBatch { envelope, batch }, Some(position)) => Some(AsCrossed::InBatch {
                envelope,
                batch,
                position,
            }),
            (Self::InBatch { .. }, None) => None,
        }
    }
}

/// Checks one envelope whose signature verified (alone, or in its batch at `position`), and
/// opens it. A failed check is kept as the reason it is refused (it is settled, not delivered).
fn arrive(
    link: &LinkPort,
    terms: &Terms,
    parts: Parts,
    signature: Signature,
    position: Option<BatchProof>,
) -> Opened {
    let header = parts.header().clone();
    let mut hop = parts.hop().clone();
    let checked = terms
        .check_arrival(&header, &mut hop)
        .and_then(|()| {
            if terms.check_version(&header, link.peer_switched())? {
                link.mark_peer_switched();
            }
            Ok(())
        })
        .and_then(|()| {
            let enc = header.encryption.as_ref().ok_or(Refusal::NotEncrypted)?;
            let opener = link.keys.opener(&header.source.mesh, &enc.key_id)?;
            parts
                .open(&opener)
                .map_err(|e| Refusal::Unsealable(e.to_string()))
        })
        .and_then(|clear| {
            let facts = Facts {
                topic: &header.metadata.topic,
                size: clear.len(),
                qos: header.policy.qos,
            };
            terms.admit(Direction::Inbound, facts)?;
            Ok(clear)
        });
    let (size, text, crossed, refused) = match checked {
        Ok(clear) => {
            let size = clear.len();
            let envelope = Envelope {
                header: header.clone(),
                hop,
                signature,
                message: Some(clear),
                batch: position,
            };
            let text = envelope.to_json_string();
            (size, text, parts.kept(envelope.batch), None)
        }
        Err(refusal) => (0, String::new(), None, Some(refusal)),
    };
    let delivery = Arc::new(Delivery::new(
        header.source.mesh.clone(),
        header.metadata.topic.clone(),
        header.policy.qos,
        text.into(),
        crossed,
    ));
    Opened {
        header,
        size,
        arrived: Arrived { delivery, refused },
    }
}
