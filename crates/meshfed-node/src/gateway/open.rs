//! Open: what arrives on a link becomes messages the inbox can take. A transfer frame is
//! decoded, its signer certificate checked against the peer's stored trust bundle, its
//! signature verified (once per batch, or each envelope's on every core); then each envelope is
//! checked ([`Terms::check_arrival`]: federation, source, destination, hops, encryption),
//! opened under the peer's content key and checked against the agreement
//! ([`Terms::admit`], the same check the sender made).
//!
//! A transfer that fails as a whole (does not decode, untrusted signer, bad signature) is
//! refused whole: nothing of it is acknowledged, so the sender sends it again. An envelope that
//! verified but fails its own checks is kept with its [`Refusal`]: it is settled, not delivered,
//! so that the sender stops sending it. Every refusal is counted by its reason.
//!
//! [`Terms::check_arrival`]: meshfed_proto::admission::Terms::check_arrival
//! [`Terms::admit`]: meshfed_proto::admission::Terms::admit

use std::sync::Arc;

use meshfed_proto::admission::{Direction, Facts, Refusal};
use meshfed_proto::batch::SignedBatch;
use meshfed_proto::crypto::{Opener, Signature};
use meshfed_proto::envelope::{BatchProof, Envelope, EnvelopeError, Header, Hop, WireEnvelope};
use meshfed_queue::wire::{Signed, Transfer};
use meshfed_queue::{Message, Transmit};

use super::context::Context;
use super::cores::on_every_core;
use super::inbox::{Arrived, Inbound, Input};
use super::local::Delivery;
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
            let tree = receipt.tree();
            batch
                .into_envelopes()
                .into_iter()
                .enumerate()
                .map(|(i, env)| {
                    let proof = tree
                        .proof(i as u64)
                        .map_err(|e| e.to_string())
                        .and_then(|p| {
                            BatchProof::new(receipt.signature(), p).map_err(|e| e.to_string())
                        })
                        .map_err(Refusal::BadSignature)?;
                    let mut hop = env.hop.clone();
                    let header = env.header().clone();
                    Ok(arrive(
                        link,
                        header,
                        &mut hop,
                        signature,
                        Some(proof),
                        |o| env.open(o),
                    ))
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
                    let mut hop = wire.hop.clone();
                    arrive(
                        link,
                        wire.header().clone(),
                        &mut hop,
                        *wire.signature(),
                        None,
                        |o| wire.open(o),
                    )
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

/// Checks one envelope whose signature verified, and opens it. A failed check is kept as the
/// reason it is refused (it is settled, not delivered).
fn arrive(
    link: &LinkPort,
    header: Header,
    hop: &mut Hop,
    signature: Signature,
    batch: Option<BatchProof>,
    open: impl FnOnce(&Opener) -> Result<Vec<u8>, EnvelopeError>,
) -> Opened {
    let checked = link
        .terms
        .check_arrival(&header, hop)
        .and_then(|()| {
            let enc = header.encryption.as_ref().ok_or(Refusal::NotEncrypted)?;
            let opener = link.keys.opener(&header.source.mesh, &enc.key_id)?;
            open(&opener).map_err(|e| Refusal::Unsealable(e.to_string()))
        })
        .and_then(|clear| {
            let facts = Facts {
                topic: &header.metadata.topic,
                size: clear.len(),
                qos: header.policy.qos,
            };
            link.terms.admit(Direction::Inbound, facts)?;
            Ok(clear)
        });
    let (size, text, refused) = match checked {
        Ok(clear) => {
            let size = clear.len();
            let envelope = Envelope {
                header: header.clone(),
                hop: hop.clone(),
                signature,
                message: Some(clear),
                batch,
            };
            (size, envelope.to_json_string(), None)
        }
        Err(refusal) => (0, String::new(), Some(refusal)),
    };
    let delivery = Arc::new(Delivery {
        source: header.source.mesh.clone(),
        topic: header.metadata.topic.clone(),
        qos: header.policy.qos,
        text: text.into(),
    });
    Opened {
        header,
        size,
        arrived: Arrived { delivery, refused },
    }
}
