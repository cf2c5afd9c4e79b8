//! Submit: a message from the local side (the API, a connector) is checked against
//! its federation's agreement — the same [`Terms::admit`] the receiver applies — and its state,
//! wrapped in an envelope header, and handed to its route (the federation's stream).
//!
//! [`Terms::admit`]: meshfed_proto::admission::Terms::admit

use std::sync::Arc;

use meshfed_proto::admission::{Direction, Facts, Refusal};
use meshfed_proto::envelope::{
    ContentType, DeliveryPolicy, Destination, EnvelopeId, Flags, Header, Label, MaxLatency,
    Metadata, Priority, Properties, Qos, Sender, SignerCertificate, Source, Timestamp, Transit,
    Version,
};
use meshfed_proto::{FederationState, MeshId, Topic};
use tokio::sync::oneshot;

use super::context::Context;
use super::pending::{Pending, encode_stored};
use super::room::WhenFull;
use super::route::Routes;
use super::stream::{Outcome, Refused};
use crate::policy::access::Principal;

/// A message to send, as the API received it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Destination mesh.
    pub to: MeshId,
    /// Federation topic.
    pub topic: Topic,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Its media type.
    pub content_type: ContentType,
    /// Delivery guarantee.
    pub qos: Qos,
    /// 0–7.
    pub priority: Priority,
    /// Deadline.
    pub max_latency: Option<MaxLatency>,
    /// `reliable`, `ordered`.
    pub flags: Flags,
    /// The payload's schema.
    pub schema_id: Option<Label>,
    /// The data's classification label.
    pub classification: Option<Label>,
    /// Its properties (user properties, correlation data, reply-to), sealed with the payload
    /// after the sender's identity (see [`Properties`]); for a message this node relays, the
    /// origin's. They count in the agreed message size with the payload.
    pub properties: Properties,
    /// Who sends it: a component of this mesh, as its credential names it (the admin token's
    /// holder is subject `admin`, role `admin`). It crosses in the sealed part of the envelope.
    pub sender: Sender,
    /// Set when this node relays the message on another mesh's behalf (`relaying.rs`); then
    /// `sender` is not used.
    pub relay: Option<Relay>,
    /// The envelope id, when the local side fixes it (a connector taking a JetStream message,
    /// whose redelivery must be the same envelope); else a fresh one.
    pub id: Option<EnvelopeId>,
}

/// What a message this node relays as a trusted intermediary keeps of its origin.
#[derive(Debug, Clone)]
pub struct Relay {
    /// The origin's envelope id, kept end to end.
    pub id: EnvelopeId,
    /// Who sent it at the origin, as the origin's gateway sealed it.
    pub sender: Option<Sender>,
    /// What this node presents for it: the origin's envelope, its CAs, the delegations.
    pub transit: Transit,
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The federation or its agreement does not take it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The stream did not accept the message (queue full, storage failed, stopping).
    #[error(transparent)]
    Queue(#[from] Refused),
    /// Making the envelope id failed.
    #[error("cannot make an envelope id: {0}")]
    Random(String),
}

/// A message handed to its federation's stream.
pub(crate) struct Submitted {
    /// Its envelope id.
    pub(crate) id: EnvelopeId,
    /// Answers once the stream accepted it (for qos ≥ 1: journaled, fsynced).
    accepted: oneshot::Receiver<Result<(), Refused>>,
    /// Learns whether the peer acknowledged it or it was dead-lettered, when asked for.
    pub(crate) outcome: Option<oneshot::Receiver<Outcome>>,
}

impl Submitted {
    /// A qos 0 message the peer does not want, accepted and not sent.
    fn unwanted(ctx: &Context) -> Result<Self, SendError> {
        let (tx, accepted) = oneshot::channel();
        let _ = tx.send(Ok(()));
        Ok(Self {
            id: envelope_id(ctx.now())?,
            accepted,
            outcome: None,
        })
    }

    /// Waits until the stream accepted the message.
    pub(crate) async fn accepted(&mut self) -> Result<(), SendError> {
        match (&mut self.accepted).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(SendError::Queue(Refused::Stopping)),
        }
    }
}

/// Checks a message against the federation's agreement, wraps it in an envelope and hands it
/// to the federation's stream. Many may be submitted before any is accepted, so that their
/// journal writes share one commit; [`Submitted::accepted`] says when one is accepted. With
/// `wait`, the result also carries the way to learn its outcome. A refusal is counted.
///
/// A reliable message first takes its room in the stream (see [`super::room`]): when there is
/// none, it waits for some or is refused with [`Refused::Full`], as `when_full` says. Waiting
/// ends with [`Refused::Stopping`] if the gateway stops.
pub(crate) async fn submit(
    ctx: &Context,
    routes: &Routes,
    mut msg: Outgoing,
    wait: bool,
    when_full: WhenFull,
) -> Result<Submitted, SendError> {
    let checked = check(ctx, routes, &mut msg);
    if let Err(refusal) = &checked {
        // Counted by partner only for a partner: the destination is the client's to name.
        match routes.to(&msg.to) {
            Some(_) => ctx
                .metrics
                .refused_by(&msg.to, Direction::Outbound, refusal),
            None => ctx.metrics.refused(Direction::Outbound, refusal),
        }
    }
    let stream = checked?;
    if msg.qos == Qos::AtMostOnce && !stream.wanted(&msg.topic) {
        // Nobody at the peer subscribes to it (see `super::interest`): not queued, not sent,
        // and accepted like a message that found no subscriber there.
        stream.count_unwanted();
        return Submitted::unwanted(ctx);
    }
    let room = if msg.qos == Qos::AtMostOnce {
        None
    } else {
        let size = msg.payload.len();
        Some(match when_full {
            WhenFull::Refuse => stream
                .room
                .try_reserve(size)
                .map_err(|source| Refused::Full {
                    peer: msg.to.clone(),
                    source,
                })?,
            WhenFull::Wait => tokio::select! {
                () = ctx.cancel.cancelled() => return Err(Refused::Stopping.into()),
                r = stream.room.reserve(size) => r,
            },
        })
    };
    let at = ctx.now();
    let id = match (&msg.relay, msg.id) {
        (Some(relay), _) => relay.id,
        (None, Some(id)) => id,
        (None, None) => envelope_id(at)?,
    };
    let header = Header {
        version: Version::CURRENT,
        id,
        timestamp: at,
        source: Source {
            mesh: ctx.id.mesh.clone(),
            gateway: ctx.id.node.clone(),
        },
        destination: Destination {
            mesh: msg.to.clone(),
            gateway: None,
        },
        flags: msg.flags,
        federation_id: stream.federation_id.clone(),
        // Both set when sealed for a transmission (see `Pending`), not stored with every
        // message: the agreement version in force then, and the signer's certificate.
        agreement_version: 0,
        certificate: SignerCertificate::default(),
        encryption: None,
        policy: DeliveryPolicy {
            priority: msg.priority,
            qos: msg.qos,
            max_latency: msg.max_latency,
            classification: msg.classification,
        },
        metadata: Metadata {
            topic: msg.topic,
            content_type: msg.content_type,
            content_encoding: None,
            schema_id: msg.schema_id,
        },
    };
    let pending = Pending {
        header,
        payload: msg.payload,
        room,
    };
    let stored = (msg.qos != Qos::AtMostOnce).then(|| encode_stored(&pending));
    let (outcome_tx, outcome) = if wait {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let accepted = stream.submit(Arc::new(pending), stored, outcome_tx).await?;
    Ok(Submitted {
        id,
        accepted,
        outcome,
    })
}

/// The stream to a partner this mesh delegated the relaying of `msg` to (DESIGN §2, trusted
/// intermediary), for a destination this mesh does not federate with: one whose delegation is
/// valid for the destination and topic, preferring an active federation. Only reliable
/// messages go through a relay: it keeps them until it has passed them on.
fn through_delegate(
    ctx: &Context,
    routes: &Routes,
    msg: &Outgoing,
) -> Result<Arc<super::stream::Stream>, Refusal> {
    let own = &ctx.id.mesh;
    let delegated =
        ctx.delegations
            .usable(own, None, &msg.to, &msg.topic, ctx.now(), |issuer, id| {
                ctx.revocations.delegation_revoked(issuer, id)
            });
    let streams: Vec<_> = delegated
        .iter()
        .filter_map(|h| routes.to(&h.delegation.delegate))
        .collect();
    let stream = streams
        .iter()
        .find(|s| s.view().state == FederationState::Active)
        .or(streams.first())
        .cloned()
        .ok_or_else(|| Refusal::UnknownDestination(msg.to.clone()))?;
    if msg.qos == Qos::AtMostOnce {
        return Err(Refusal::Transit(format!(
            "{} reaches {} through {}, which relays only qos 1 and 2 messages (it keeps them until they are passed on)",
            own, msg.to, stream.peer
        )));
    }
    Ok(stream)
}

/// A fresh envelope id for a message made `at`.
fn envelope_id(at: Timestamp) -> Result<EnvelopeId, SendError> {
    let mut random = [0u8; 10];
    meshfed_proto::crypto::random_fill(&mut random)
        .map_err(|e| SendError::Random(e.to_string()))?;
    Ok(EnvelopeId::new(at, random))
}

/// The stream a message goes to, if its federation takes it now: active, the topic, size and
/// qos agreed, and (for qos 0, which is not stored and forwarded) its link up; then the fields
/// the agreement redacts are taken out of its payload (before it is sealed and signed, so what
/// is proved is what is delivered), its properties (see [`Properties`]) and its sender's identity
/// are put in front of it (sealed with it, see [`Sender`]), and it takes its place within the
/// agreed rate.
fn check(
    ctx: &Context,
    routes: &Routes,
    msg: &mut Outgoing,
) -> Result<Arc<super::stream::Stream>, Refusal> {
    let stream = match routes.to(&msg.to) {
        Some(stream) => stream,
        None => through_delegate(ctx, routes, msg)?,
    };
    let view = stream.view();
    if view.state != FederationState::Active {
        return Err(Refusal::NotActive {
            peer: msg.to.clone(),
            state: view.state,
        });
    }
    let properties = (!msg.properties.is_empty()).then_some(&msg.properties);
    let facts = Facts {
        topic: &msg.topic,
        // The properties count with the payload, as the receiver counts them.
        size: msg.payload.len() + properties.map_or(0, Properties::sealed_len),
        qos: msg.qos,
        content_type: &msg.content_type,
        priority: msg.priority,
        max_latency: msg.max_latency,
        schema_id: msg.schema_id.as_ref(),
        classification: msg.classification.as_ref(),
    };
    view.terms.admit(Direction::Outbound, facts)?;
    if msg.qos == Qos::AtMostOnce && !stream.has_link() {
        return Err(Refusal::Unreachable(msg.to.clone()));
    }
    if msg.relay.is_none() {
        let sender = Principal {
            mesh: ctx.id.mesh.clone(),
            subject: msg.sender.subject.clone(),
            roles: msg.sender.roles.clone(),
            attributes: msg.sender.attributes.clone(),
        };
        if let Some(guard) = ctx.policy().outbound(sender, &msg.to) {
            guard
                .publish(&msg.topic)
                .map_err(|d| Refusal::Denied(d.to_string()))?;
        }
    }
    if let Some(redacted) = view.terms.redact(&msg.payload) {
        msg.payload = redacted;
    }
    if let Some(properties) = properties {
        msg.payload = properties.wrap(&msg.payload);
        msg.flags = msg.flags.with(Flags::PROPERTIES);
    }
    let malformed = |e: meshfed_proto::envelope::EnvelopeError| Refusal::Malformed(e.to_string());
    match &msg.relay {
        None => {
            msg.payload = msg.sender.wrap(&msg.payload).map_err(malformed)?;
            msg.flags = msg.flags.with(Flags::IDENTIFIED);
        }
        Some(relay) => {
            // The origin's sender stays in front of the payload, the transit part before both.
            if let Some(sender) = &relay.sender {
                msg.payload = sender.wrap(&msg.payload).map_err(malformed)?;
                msg.flags = msg.flags.with(Flags::IDENTIFIED);
            }
            msg.payload = relay.transit.wrap(&msg.payload).map_err(malformed)?;
            msg.flags = msg.flags.with(Flags::TRANSIT);
        }
    }
    view.take(&msg.topic)?;
    Ok(stream)
}
