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
//! **Streamed batches** (DESIGN §3.4): a transfer may carry members of a batch whose signed
//! head follows. The link's reader keeps them in its [`Heads`]: each envelope's payload is
//! checked against its digest and its leaf added; it is checked and opened at once, and — when
//! the signer is the link's peer (the exact certificate it presented in this TLS session, its
//! mesh and node), at qos 0 or 1 — handed to the live subscribers that take the spec form
//! ([`Delivery::unproven`]). Nothing else happens until the head: no durable copy, no dedup
//! record, no acknowledgement. The head is verified off the reader (against the leaves
//! received: number, count, root, signature) and the batch then goes to the inbox like a
//! verified batch. A head that does not match, one out of order, a head that does not come
//! within `head_timeout`, or more unheaded envelopes than two credit windows are the peer's
//! misbehaviour ([`StreamFault::Misbehaved`]): the caller closes the link and suspends the
//! federation. A link that drops mid-batch is not: nothing of the batch was acknowledged, so
//! the peer sends it again on the next link.
//!
//! Each delivery keeps the envelope as it crossed — moved out of its batch, with the batch's
//! signed head shared by all of them — so that a subscriber asking for proof can get its export
//! form ([`Delivery::export`]); nothing is encoded here.
//!
//! [`Terms::check_arrival`]: meshfed_proto::admission::Terms::check_arrival
//! [`Terms::admit`]: meshfed_proto::admission::Terms::admit

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use meshfed_proto::MeshId;
use meshfed_proto::admission::{Direction, Facts, Refusal, Terms};
use meshfed_proto::batch::{
    BatchError, BatchHead, BatchReceipt, Receiving, SignedBatch, UnsignedEnvelope,
};
use meshfed_proto::crypto::{Opener, SIGNATURE_LEN, Signature};
use meshfed_proto::envelope::{
    BatchProof, Envelope, EnvelopeError, EnvelopeId, Header, Hop, Qos, WireEnvelope,
};
use meshfed_queue::wire::{Item, Signed, Transfer};
use meshfed_queue::{Epoch, Message, Seq, Transmit};
use tokio::task::JoinHandle;

use super::context::Context;
use super::cores::on_every_core;
use super::inbox::{Arrived, Inbound, Input};
use super::local::{AsCrossed, Delivery, Local};
use super::port::{LinkPort, PeerTrust};
use crate::policy::access::Incoming;
use meshfed_proto::envelope::{Properties, Sender, Transit};
use meshfed_proto::policy::SignatureMode;

/// A streamed batch went wrong in a way the caller acts on.
#[derive(Debug)]
pub(crate) enum StreamFault {
    /// The peer broke the streamed-batch protocol (DESIGN §3.4): the link closes and the
    /// federation is suspended.
    Misbehaved {
        /// What it did.
        reason: String,
        /// Envelopes that reached live subscribers unproven.
        delivered_unproven: Vec<EnvelopeId>,
    },
    /// A streamed batch cannot be taken (its signer is not trusted): the link closes; nothing
    /// of it was acknowledged, so the peer sends it again on the next link.
    Refused(Refusal),
}

/// A transfer frame from the peer of `link`: verified, opened, and handed to the inbox (which
/// waits while it is behind: back-pressure on the link). Members of a streamed batch are kept in
/// `heads` until their head verifies.
pub(crate) async fn receive(
    ctx: &Context,
    inbound: &Inbound,
    local: &Local,
    link: &Arc<LinkPort>,
    heads: &mut Heads,
    body: &[u8],
) -> Result<(), StreamFault> {
    let transfer = match Transfer::decode(body) {
        Ok(t) => t,
        Err(e) => {
            refused(ctx, link, &Refusal::Malformed(e.to_string()));
            return Ok(());
        }
    };
    if let Signed::Streamed { .. } = transfer.envelopes {
        return heads.take(ctx, local, link, transfer).await;
    }
    match open_transfer(ctx, link, transfer).await {
        Ok(transmits) => {
            inbound
                .send(Input::Transmits {
                    link: link.clone(),
                    transmits,
                })
                .await;
        }
        Err(refusal) => refused(ctx, link, &refusal),
    }
    Ok(())
}

fn refused(ctx: &Context, link: &LinkPort, refusal: &Refusal) {
    ctx.guard.transfer_refused(link.mesh(), refusal);
    ctx.metrics
        .refused_by(link.mesh(), Direction::Inbound, refusal);
    crate::audit::refused(
        &ctx.audit,
        Some((&link.federation_id, link.terms().audit_level)),
        Direction::Inbound,
        Some(&link.peer.mesh),
        None,
        None,
        refusal,
    );
    tracing::warn!(federation = %link.federation_id, peer = %link.peer, reason = refusal.reason(), error = %refusal, "refused a transfer");
}

async fn open_transfer(
    ctx: &Context,
    link: &LinkPort,
    transfer: Transfer,
) -> Result<Vec<Transmit<Arc<Arrived>>>, Refusal> {
    let malformed = |e: &dyn std::fmt::Display| Refusal::Malformed(e.to_string());
    let Transfer {
        epoch,
        floor,
        items,
        envelopes,
    } = transfer;
    let wall = ctx.clock.wall();
    // The terms in force for this whole transfer: a switch point falls between frames.
    let terms = link.terms();
    let incoming =
        (ctx.policy().inbound(&terms.peer)).translating(&ctx.translator, wall, &terms.outbound);
    terms.check_signed(match envelopes {
        Signed::Each(_) => SignatureMode::PerMessage,
        Signed::Batch(_) | Signed::Streamed { .. } => SignatureMode::Batch,
    })?;
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
            let envelopes = batch.into_envelopes();
            let checked = envelopes
                .into_iter()
                .map(|e| {
                    let checked = check(ctx, link, &terms, &incoming, e.header(), &e.hop, |o| {
                        e.open(o)
                    });
                    (e, checked, false)
                })
                .collect();
            proven(&link.trust, receipt, checked)?
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
                .map(|mut wire| {
                    // The export form carries the certificate the link announced.
                    wire.fill_certificate(|d| link.trust.certificate(d));
                    let checked = check(
                        ctx,
                        link,
                        &terms,
                        &incoming,
                        wire.header(),
                        &wire.hop,
                        |o| wire.open(o),
                    );
                    alone(wire, checked)
                })
                .collect()
        }
        Signed::Streamed { .. } => {
            return Err(Refusal::Malformed(
                "a streamed transfer outside a streamed batch".to_owned(),
            ));
        }
    };
    Ok(transmits(epoch, floor, &items, opened))
}

/// The inbox's transmissions of `opened`, the `i`th at `items[i]`.
fn transmits(
    epoch: Epoch,
    floor: Seq,
    items: &[Item],
    opened: Vec<Opened>,
) -> Vec<Transmit<Arc<Arrived>>> {
    items
        .iter()
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
        .collect()
}

/// The envelopes of a batch verified into `receipt`, each with the outcome of its checks and
/// whether its unproven delivery went out, as deliveries that keep their position.
fn proven(
    trust: &PeerTrust,
    receipt: BatchReceipt,
    checked: Vec<(UnsignedEnvelope, Checked, bool)>,
) -> Result<Vec<Opened>, Refusal> {
    let signature = *receipt.signature().signature();
    let tree = receipt.tree();
    // Shared by the batch's envelopes, to make their export form and audit record on request.
    let head = Arc::new(receipt);
    checked
        .into_iter()
        .enumerate()
        .map(|(i, (mut envelope, checked, early))| {
            let position = tree
                .proof(i as u64)
                .map_err(|e| e.to_string())
                .and_then(|p| BatchProof::new(head.signature(), p).map_err(|e| e.to_string()))
                .map_err(Refusal::BadSignature)?;
            // The export form carries the certificate the link announced.
            envelope.fill_certificate(|d| trust.certificate(d));
            let header = envelope.header().clone();
            let crossed = AsCrossed::InBatch {
                envelope,
                batch: head.clone(),
                position: position.clone(),
            };
            Ok(opened(
                header,
                checked,
                signature,
                Some(position),
                Some(crossed),
                early,
            ))
        })
        .collect()
}

/// One verified envelope, checked and opened.
struct Opened {
    header: Header,
    size: usize,
    arrived: Arrived,
}

/// The outcome of one envelope's checks: its hop fields as they arrived and its opened sealed
/// part, or why it is refused (it is settled, not delivered).
type Checked = Result<(Hop, Clear), Refusal>;

/// An envelope's sealed part, opened: the payload, who sent it as this mesh maps it (`None`:
/// the envelope named no sender) and the message's properties. For an envelope this node relays
/// (`relay_to`), the payload is the whole sealed part as the origin sealed it, identity and
/// properties included, and it is not mapped; for one a relay brought (`origin`), the mesh it
/// comes from.
struct Clear {
    payload: Vec<u8>,
    sender: Option<Sender>,
    properties: Properties,
    relay_to: Option<MeshId>,
    origin: Option<MeshId>,
}

/// What only a link's reader has for the transit checks: the context and the peer's trust.
#[derive(Clone, Copy)]
struct Via<'a> {
    ctx: &'a Context,
    trust: &'a PeerTrust,
}

/// Checks one envelope (its header, its hop fields, the version it was sent under) and opens
/// it with `open`, then checks the agreement and the access rules (`incoming`) admit it.
fn check(
    ctx: &Context,
    link: &LinkPort,
    terms: &Terms,
    incoming: &Incoming,
    header: &Header,
    hop: &Hop,
    open: impl FnOnce(&Opener) -> Result<Vec<u8>, EnvelopeError>,
) -> Checked {
    let relaying = super::transit::relaying(ctx, terms, header)?;
    // Through a tunnel, the brokers that relayed it are hops too (the tunnel's route names them).
    let hop = arrival(terms, &link.relays, header, hop, relaying)?;
    if terms.check_version(header, link.peer_switched())? {
        link.mark_peer_switched();
    }
    let enc = header.encryption.as_ref().ok_or(Refusal::NotEncrypted)?;
    let opener = link.keys.opener(&header.source.mesh, &enc.key_id)?;
    let via = Via {
        ctx,
        trust: &link.trust,
    };
    let clear = admitted(terms, incoming, header, &opener, open, Some(via), relaying)?;
    Ok((hop, clear))
}

/// `hop` once the brokers in `relays` are added to it, if `header` and it may arrive here.
fn arrival(
    terms: &Terms,
    relays: &[MeshId],
    header: &Header,
    hop: &Hop,
    relaying: bool,
) -> Result<Hop, Refusal> {
    let mut hop = hop.clone();
    for relay in relays {
        hop.advance(relay)?;
    }
    terms.check_arrival(header, &mut hop, relaying)?;
    Ok(hop)
}

/// Opens one envelope with `opener`, takes what a relay presents (see [`super::transit`]), its
/// sender's identity and its properties out of its sealed part, and checks the agreement admits
/// the payload (with the properties) and the access rules (`incoming`, or the origin's for a
/// relayed message) let the sender, mapped, publish it. An envelope this node relays
/// (`relaying`) is checked against the agreement and kept as sealed. Transit needs `via` (a
/// link's reader): without it (a broker's custody) a relayed envelope is refused.
fn admitted(
    terms: &Terms,
    incoming: &Incoming,
    header: &Header,
    opener: &Opener,
    open: impl FnOnce(&Opener) -> Result<Vec<u8>, EnvelopeError>,
    via: Option<Via<'_>>,
    relaying: bool,
) -> Result<Clear, Refusal> {
    let malformed = |e: EnvelopeError| Refusal::Malformed(e.to_string());
    let sealed = open(opener).map_err(|e| Refusal::Unsealable(e.to_string()))?;
    if relaying {
        // What the peer itself relays (a chain) has its transit part in front.
        let (_, inner) = Transit::unwrap(header.flags, sealed.clone()).map_err(malformed)?;
        let (_, inner) = Sender::unwrap(header.flags, inner).map_err(malformed)?;
        // The properties count in the agreed size with the payload, as the sender counted them.
        let size = inner.len();
        let (_, payload) = Properties::unwrap(header.flags, inner).map_err(malformed)?;
        terms.admit(Direction::Inbound, Facts::of(header, size))?;
        terms.check_redacted(&payload)?;
        return Ok(Clear {
            payload: sealed,
            sender: None,
            properties: Properties::default(),
            relay_to: Some(header.destination.mesh.clone()),
            origin: None,
        });
    }
    let (transit, sealed) = Transit::unwrap(header.flags, sealed).map_err(malformed)?;
    let (sender, sealed) = Sender::unwrap(header.flags, sealed).map_err(malformed)?;
    let size = sealed.len();
    let (properties, payload) = Properties::unwrap(header.flags, sealed).map_err(malformed)?;
    terms.admit(Direction::Inbound, Facts::of(header, size))?;
    terms.check_redacted(&payload)?;
    let origin = match (&transit, via) {
        (None, _) => None,
        (Some(t), Some(via)) => Some(super::transit::accept(
            via.ctx,
            terms,
            &via.trust.bundle(),
            header,
            t,
        )?),
        (Some(_), None) => {
            return Err(Refusal::Transit(
                "a relayed message cannot come out of a broker's custody".to_owned(),
            ));
        }
    };
    let mapped = match (&origin, via) {
        (Some(origin), Some(via)) => {
            via.ctx
                .policy()
                .inbound(origin)
                .admit(origin, sender.as_ref(), &header.metadata.topic)
        }
        _ => incoming.admit(&header.source.mesh, sender.as_ref(), &header.metadata.topic),
    }
    .map_err(|d| Refusal::Denied(d.to_string()))?;
    let shown = |s: &Sender| match &origin {
        Some(_) => mapped.sender(),
        None => incoming.delivered(&header.source.mesh, s, &mapped),
    };
    Ok(Clear {
        payload,
        sender: sender.as_ref().map(shown),
        properties,
        relay_to: None,
        origin,
    })
}

/// One envelope out of a broker's custody: sent while this relayed federation's peer could not
/// reach this node, and sealed under the federation's custody secret (`opener`). The caller
/// verified its signature against the peer's stored trust. It is checked like any arrival —
/// the brokers that held it (`relays`) are its hops — and against the agreement in force
/// (which may be a later version than the one it was sent under), then opened.
pub(crate) fn custody(
    terms: &Terms,
    incoming: &Incoming,
    relays: &[MeshId],
    wire: WireEnvelope,
    opener: &Opener,
) -> Message<Arc<Arrived>> {
    let checked = arrival(terms, relays, wire.header(), &wire.hop, false).and_then(|hop| {
        let clear = admitted(
            terms,
            incoming,
            wire.header(),
            opener,
            |o| wire.open(o),
            None,
            false,
        )?;
        Ok((hop, clear))
    });
    let a = alone(wire, checked);
    Message::from_header(&a.header, a.size, Arc::new(a.arrived))
}

/// The delivery of one envelope signed alone, whose signature verified and whose checks gave
/// `checked`.
fn alone(wire: WireEnvelope, checked: Checked) -> Opened {
    let signature = *wire.signature();
    let header = wire.header().clone();
    opened(
        header,
        checked,
        signature,
        None,
        Some(AsCrossed::Alone(wire)),
        false,
    )
}

/// The delivery of one envelope whose signature verified (alone, or in its batch at
/// `position`) and whose checks gave `checked`.
fn opened(
    header: Header,
    checked: Checked,
    signature: Signature,
    position: Option<BatchProof>,
    crossed: Option<AsCrossed>,
    early: bool,
) -> Opened {
    let mut source = header.source.mesh.clone();
    let mut relay_to = None;
    let (size, envelope, crossed, refused) = match checked {
        Ok((mut hop, clear)) => {
            let size = clear.payload.len();
            if let Some(origin) = clear.origin {
                // Relayed on the origin's behalf: the origin is where it comes from.
                hop.path.insert(0, origin.clone());
                source = origin;
            }
            relay_to = clear.relay_to;
            let envelope = Envelope {
                header: header.clone(),
                hop,
                signature,
                message: Some(clear.payload),
                sender: clear.sender,
                properties: clear.properties,
                batch: position,
            };
            (size, Some(envelope), crossed, None)
        }
        Err(refusal) => (0, None, None, Some(refusal)),
    };
    let delivery = Arc::new(
        Delivery::new(
            source,
            header.metadata.topic.clone(),
            header.policy.qos,
            envelope,
            crossed,
            early,
        )
        .relayed_to(relay_to),
    );
    Opened {
        header,
        size,
        arrived: Arrived { delivery, refused },
    }
}

/// What a link's reader keeps of the peer's streamed batches until their heads verify: the
/// protocol state ([`Receiving`]: order, bounds, head timeout) with each envelope's stream
/// fields and checks, the ids of those that reached live subscribers unproven, and the heads
/// being verified off the reader.
pub(crate) struct Heads {
    receiving: Receiving<Member>,
    /// Batches whose head is being verified off the reader, in order.
    verifying: VecDeque<JoinHandle<Verified>>,
}

/// One envelope of a streamed batch, waiting for its head.
struct Member {
    epoch: Epoch,
    floor: Seq,
    item: Item,
    envelope: UnsignedEnvelope,
    checked: Checked,
    /// Its unproven delivery went out.
    early: bool,
    /// Refused on arrival (the federation was suspended): it counts in the head, and is not
    /// handed on nor acknowledged, so it comes again.
    held_back: bool,
}

impl Heads {
    /// Nothing held yet. At most two credit windows may wait for heads (a sender stays within
    /// one, plus what it sends again after a new link); a head is due `head_timeout` after its
    /// batch's first envelope.
    pub(crate) fn new(ctx: &Context) -> Self {
        let window = usize::try_from(ctx.config.delivery.window).unwrap_or(usize::MAX);
        Self {
            receiving: Receiving::new(window.saturating_mul(2), ctx.config.delivery.head_timeout),
            verifying: VecDeque::new(),
        }
    }

    /// When the oldest open batch's head is overdue, if a batch is open.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.receiving.deadline()
    }

    /// The oldest open batch's head is overdue (call once [`Heads::deadline`] passed).
    pub(crate) fn overdue(&self, now: Instant) -> Result<(), StreamFault> {
        self.receiving
            .check_overdue(now)
            .map_err(|e| self.misbehaved(e.to_string()))
    }

    /// Whether a head is being verified.
    pub(crate) fn verifying(&self) -> bool {
        !self.verifying.is_empty()
    }

    fn misbehaved(&self, reason: String) -> StreamFault {
        let delivered_unproven = self
            .receiving
            .waiting()
            .filter(|m| m.early)
            .map(|m| m.envelope.header().id)
            .collect();
        StreamFault::Misbehaved {
            reason,
            delivered_unproven,
        }
    }

    /// Takes the members of a streamed transfer into their batch: checked and opened now,
    /// handed to spec-form live subscribers now if the peer signs them, everything else once
    /// the head verifies.
    async fn take(
        &mut self,
        ctx: &Context,
        local: &Local,
        link: &LinkPort,
        transfer: Transfer,
    ) -> Result<(), StreamFault> {
        let terms = link.terms();
        terms
            .check_signed(SignatureMode::Batch)
            .map_err(StreamFault::Refused)?;
        let incoming = (ctx.policy().inbound(&terms.peer)).translating(
            &ctx.translator,
            ctx.clock.wall(),
            &terms.outbound,
        );
        let mut unproven = Vec::new();
        self.take_with(ctx, transfer, |envelope| {
            let header = envelope.header();
            let checked = check(ctx, link, &terms, &incoming, header, &envelope.hop, |o| {
                envelope.open(o)
            });
            // TLS under the peer's key authenticated these bytes: a live subscriber may have
            // them now; the signature (transferable proof) follows in the head. Not what this
            // node relays, nor what it took from a relay: those wait for their checks' proof.
            let early = checked
                .as_ref()
                .is_ok_and(|(_, c)| c.relay_to.is_none() && c.origin.is_none())
                && header.policy.qos != Qos::ExactlyOnce
                && link.trust.is_peer(header);
            if let (true, Ok((hop, clear))) = (early, &checked) {
                unproven.push(Arc::new(Delivery::unproven(Envelope {
                    header: link.trust.known(header),
                    hop: hop.clone(),
                    signature: Signature([0; SIGNATURE_LEN]),
                    message: Some(clear.payload.clone()),
                    sender: clear.sender.clone(),
                    properties: clear.properties.clone(),
                    batch: None,
                })));
            }
            (checked, early, false)
        })?;
        if !unproven.is_empty() {
            ctx.metrics.delivered_unproven.inc_by(unproven.len() as u64);
            local.live.deliver(&unproven).await;
        }
        Ok(())
    }

    /// A streamed transfer refused on arrival (the federation is suspended): its envelopes
    /// join their batch for the head's sake, and go no further.
    pub(crate) fn hold_back(&mut self, ctx: &Context, body: &[u8]) -> Result<(), StreamFault> {
        match Transfer::decode(body) {
            Ok(transfer) => {
                self.take_with(ctx, transfer, |_| (Err(Refusal::Suspended), false, true))
            }
            Err(_) => Ok(()),
        }
    }

    /// Adds the envelopes of a streamed `transfer` to their batch; `judge` gives each its
    /// checks, whether its unproven delivery goes out and whether it is held back. A transfer
    /// that breaks the protocol part-way is the peer's fault, and whatever `judge` made of it
    /// reaches no one.
    fn take_with(
        &mut self,
        ctx: &Context,
        transfer: Transfer,
        mut judge: impl FnMut(&UnsignedEnvelope) -> (Checked, bool, bool),
    ) -> Result<(), StreamFault> {
        let Transfer {
            epoch,
            floor,
            items,
            envelopes:
                Signed::Streamed {
                    batch,
                    first,
                    members,
                },
        } = transfer
        else {
            return Ok(());
        };
        let envelopes = members
            .iter()
            .map(|bytes| UnsignedEnvelope::decode(bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.misbehaved(format!("a streamed envelope of batch {batch}: {e}")))?;
        let mut items = items.into_iter();
        let taken = self
            .receiving
            .take(batch, first, envelopes, ctx.clock.instant(), |envelope| {
                let (checked, early, held_back) = judge(&envelope);
                Member {
                    epoch,
                    floor,
                    // `Transfer::decode` checked there is one item per member.
                    item: items.next().unwrap_or(Item {
                        seq: floor,
                        key_seq: None,
                        retransmission: true,
                    }),
                    envelope,
                    checked,
                    early,
                    held_back,
                }
            });
        taken.map_err(|e| self.misbehaved(e.to_string()))
    }

    /// A batch head from the peer: it must be the oldest open batch's. Its signature is
    /// checked off the reader; [`Heads::verified`] yields the outcome.
    pub(crate) fn head(
        &mut self,
        ctx: &Context,
        link: &LinkPort,
        body: &[u8],
    ) -> Result<(), StreamFault> {
        let head = BatchHead::decode(body)
            .map_err(|e| self.misbehaved(format!("a malformed batch head: {e}")))?;
        let (leaves, members) = self
            .receiving
            .head(&head)
            .map_err(|e| self.misbehaved(e.to_string()))?;
        let key = link
            .trust
            .signer_key(leaves.certificate(), ctx.clock.wall())
            .map_err(StreamFault::Refused)?;
        self.verifying
            .push_back(tokio::task::spawn_blocking(move || Verified {
                number: leaves.number(),
                outcome: leaves.verify(&head, &key),
                members,
            }));
        Ok(())
    }

    /// The oldest head being verified, once checked: its batch goes to the inbox, or the peer
    /// misbehaved. Pending while none is being verified.
    pub(crate) async fn verified(
        &mut self,
        inbound: &Inbound,
        link: &Arc<LinkPort>,
    ) -> Result<(), StreamFault> {
        let Some(front) = self.verifying.front_mut() else {
            return std::future::pending().await;
        };
        let joined = front.await;
        self.verifying.pop_front();
        let Verified {
            number,
            members,
            outcome,
        } = joined.map_err(|e| StreamFault::Refused(Refusal::BadSignature(e.to_string())))?;
        let receipt = match outcome {
            Ok(r) => r,
            Err(e) => {
                return Err(StreamFault::Misbehaved {
                    reason: format!("the head of streamed batch {number} does not verify: {e}"),
                    delivered_unproven: members
                        .iter()
                        .filter(|m| m.early)
                        .map(|m| m.envelope.header().id)
                        .collect(),
                });
            }
        };
        let mut items = Vec::with_capacity(members.len());
        let mut checked = Vec::with_capacity(members.len());
        for m in members {
            items.push((m.epoch, m.floor, m.item, m.held_back));
            checked.push((m.envelope, m.checked, m.early));
        }
        let opened = proven(&link.trust, receipt, checked).map_err(StreamFault::Refused)?;
        let transmits: Vec<_> = items
            .into_iter()
            .zip(opened)
            .filter(|((.., held_back), _)| !held_back)
            .flat_map(|((epoch, floor, item, _), a)| transmits(epoch, floor, &[item], vec![a]))
            .collect();
        if transmits.is_empty() {
            return Ok(());
        }
        inbound
            .send(Input::Transmits {
                link: link.clone(),
                transmits,
            })
            .await;
        Ok(())
    }
}

/// A streamed batch whose head was checked.
struct Verified {
    number: u64,
    members: Vec<Member>,
    outcome: Result<BatchReceipt, BatchError>,
}
