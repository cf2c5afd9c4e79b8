//! Messages across the federation: wrapping, sealing and signing what leaves; verifying,
//! opening and checking what arrives; handing it to local subscribers.
//!
//! Every arriving envelope is checked in this order, and refused with its reason logged and
//! counted: it decodes; it travels under this link's federation, from the link's peer, to this
//! mesh; its hop fields allow one more hop; its signer certificate is issued by the peer's stored
//! trust bundle; its signature and payload digest verify; it opens under the peer's content key;
//! its topic and size are within the agreement.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use meshfed_proto::capability::Accepted;
use meshfed_proto::crypto::{Opener, sha384};
use meshfed_proto::envelope::{
    ContentType, DeliveryPolicy, Destination, EnvelopeId, Flags, Header, Hop, MaxLatency, Metadata,
    Priority, Qos, Source, Version,
};
use meshfed_proto::{FederationState, MeshId, Topic, TopicPattern};
use meshfed_store::Role;
use meshfed_trust::KeyPurpose;
use rustls_pki_types::CertificateDer;
use tokio::sync::oneshot;

use super::delivery::outbound::{Outcome, Refused};
use super::delivery::{self, Pending};
use super::links::LinkHandle;
use super::{Node, now};

/// An envelope delivered to this mesh, as local subscribers receive it.
#[derive(Debug)]
pub struct Delivery {
    /// The mesh it came from.
    pub source: MeshId,
    /// Its federation topic.
    pub topic: Topic,
    /// Its delivery guarantee.
    pub qos: Qos,
    /// The spec-layout JSON envelope, with the opened message, as text.
    pub text: Arc<str>,
}

/// Message counters, exported as metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Envelopes received, verified and delivered locally.
    pub delivered: AtomicU64,
    /// Envelopes refused on arrival.
    pub rejected: AtomicU64,
    /// Envelopes received and not delivered (past their deadline, or held back when their
    /// sender restarted).
    pub discarded: AtomicU64,
}

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
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No federation with that mesh.
    #[error("no federation with mesh {0}; federate first (meshfed federation invite / join)")]
    UnknownDestination(MeshId),
    /// The federation does not carry messages now.
    #[error("the federation with {peer} is {state}; messages do not flow")]
    NotActive {
        /// The peer.
        peer: MeshId,
        /// Its state.
        state: FederationState,
    },
    /// The agreement does not let this topic flow to that mesh.
    #[error("topic {topic} is not in the agreement with {peer} (allowed: {allowed})")]
    TopicNotAgreed {
        /// The topic.
        topic: Topic,
        /// The peer.
        peer: MeshId,
        /// Patterns allowed in that direction.
        allowed: String,
    },
    /// The payload is over the agreed size.
    #[error("payload of {size} bytes exceeds the agreed maximum of {max} bytes")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// Agreed maximum.
        max: u32,
    },
    /// The QoS level is above what the federation agreed.
    #[error("qos {asked} is above the federation's maximum of {max}")]
    QosNotAgreed {
        /// Asked.
        asked: u8,
        /// Agreed maximum.
        max: u8,
    },
    /// The peer's link is down and the message is qos 0 (only reliable messages are stored
    /// and forwarded).
    #[error(
        "mesh {0} is unreachable: its link is down; qos 0 messages are not queued (send with qos 1 or 2 to store and forward)"
    )]
    Unreachable(MeshId),
    /// The stream did not accept the message (queue full, storage failed, stopping).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Making the envelope id failed.
    #[error("cannot make an envelope id: {0}")]
    Random(String),
    /// The registry failed.
    #[error("registry: {0}")]
    Store(#[from] meshfed_store::StoreError),
}

/// Topics that may flow from `role`'s side to its peer.
fn outbound(role: Role, accepted: &Accepted) -> &[TopicPattern] {
    match role {
        Role::Initiator => &accepted.services.to_responder,
        Role::Responder => &accepted.services.to_initiator,
    }
}

/// Topics that may flow from the peer to us.
fn inbound(handle: &LinkHandle) -> &[TopicPattern] {
    match handle.role {
        Role::Initiator => &handle.accepted.services.to_initiator,
        Role::Responder => &handle.accepted.services.to_responder,
    }
}

fn patterns(p: &[TopicPattern]) -> String {
    if p.is_empty() {
        return "none".to_owned();
    }
    p.iter()
        .map(TopicPattern::as_str)
        .collect::<Vec<_>>()
        .join(", ")
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
    /// Waits until the stream accepted the message.
    pub(crate) async fn accepted(&mut self) -> Result<(), SendError> {
        match (&mut self.accepted).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(SendError::Refused(Refused::Stopping)),
        }
    }
}

/// Checks a message against the federation's agreement, wraps it in an envelope and hands it
/// to the federation's stream. Many may be submitted before any is accepted, so that their
/// journal writes share one commit; [`Submitted::accepted`] says when one is accepted. With
/// `wait`, the result also carries the way to learn its outcome.
pub(crate) async fn submit(
    node: &Arc<Node>,
    msg: Outgoing,
    wait: bool,
) -> Result<Submitted, SendError> {
    let stream = delivery::stream_to(node, &msg.to)
        .ok_or_else(|| SendError::UnknownDestination(msg.to.clone()))?;
    let view = stream.view();
    if view.state != FederationState::Active {
        return Err(SendError::NotActive {
            peer: msg.to,
            state: view.state,
        });
    }
    let allowed = outbound(view.role, &view.accepted);
    if !allowed.iter().any(|p| p.matches(&msg.topic)) {
        return Err(SendError::TopicNotAgreed {
            topic: msg.topic,
            peer: msg.to,
            allowed: patterns(allowed),
        });
    }
    if msg.payload.len() > view.terms.max_message_size as usize {
        return Err(SendError::TooLarge {
            size: msg.payload.len(),
            max: view.terms.max_message_size,
        });
    }
    if msg.qos == Qos::AtMostOnce && super::links::link(node, &stream.federation_id).is_none() {
        return Err(SendError::Unreachable(msg.to));
    }
    let max_qos = view.accepted.qos.0;
    if msg.qos > max_qos {
        return Err(SendError::QosNotAgreed {
            asked: msg.qos.level(),
            max: max_qos.level(),
        });
    }
    let at = now();
    let mut random = [0u8; 10];
    meshfed_proto::crypto::random_fill(&mut random)
        .map_err(|e| SendError::Random(e.to_string()))?;
    let id = EnvelopeId::new(at, random);
    let header = Header {
        version: Version::CURRENT,
        id,
        timestamp: at,
        source: Source {
            mesh: node.id.mesh.clone(),
            gateway: node.id.node.clone(),
        },
        destination: Destination {
            mesh: msg.to.clone(),
            gateway: None,
        },
        flags: msg.flags,
        federation_id: stream.federation_id.clone(),
        // Set when sealed for a transmission (see `Pending`), not stored with every message.
        certificate: Vec::new(),
        encryption: None,
        policy: DeliveryPolicy {
            priority: msg.priority,
            qos: msg.qos,
            max_latency: msg.max_latency,
        },
        metadata: Metadata {
            topic: msg.topic,
            content_type: msg.content_type,
            content_encoding: None,
            schema_id: None,
        },
    };
    let pending = Pending {
        header,
        payload: msg.payload,
    };
    let stored = (msg.qos != Qos::AtMostOnce).then(|| delivery::encode_stored(&pending));
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

/// The checks of an arriving envelope before it is opened: it travels under this link's
/// federation, from the link's peer, to this mesh, may take one more hop, and is sealed under
/// a content key of the peer. Returns the opener for that key.
pub(crate) fn check(
    node: &Node,
    handle: &LinkHandle,
    h: &Header,
    hop: &mut Hop,
) -> Result<Arc<Opener>, String> {
    if h.federation_id != handle.federation_id {
        return Err(format!(
            "envelope names federation {}, the link carries {}",
            h.federation_id, handle.federation_id
        ));
    }
    if h.source.mesh != handle.peer {
        return Err(format!(
            "envelope from mesh {} arrived on the link of {}",
            h.source.mesh, handle.peer
        ));
    }
    if h.destination.mesh != node.id.mesh {
        return Err(format!(
            "envelope for mesh {} arrived at mesh {}",
            h.destination.mesh, node.id.mesh
        ));
    }
    hop.advance(&node.id.mesh).map_err(|e| e.to_string())?;
    let Some(enc) = &h.encryption else {
        return Err("envelope is not encrypted, and the agreement requires encryption".to_owned());
    };
    let mut openers = handle.openers.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(o) = openers.get(&enc.key_id) {
        return Ok(o.clone());
    }
    let o = Arc::new(
        handle
            .content
            .opener(&h.source.mesh, &enc.key_id)
            .map_err(|e| e.to_string())?,
    );
    openers.insert(enc.key_id.clone(), o.clone());
    Ok(o)
}

/// The checks of an opened envelope: its topic may flow this way and its size is agreed.
pub(crate) fn check_payload(handle: &LinkHandle, h: &Header, clear: &[u8]) -> Result<(), String> {
    let allowed = inbound(handle);
    if !allowed.iter().any(|p| p.matches(&h.metadata.topic)) {
        return Err(format!(
            "topic {} is not in the agreement (allowed: {})",
            h.metadata.topic,
            patterns(allowed)
        ));
    }
    if clear.len() > handle.terms.max_message_size as usize {
        return Err(format!(
            "payload of {} bytes exceeds the agreed {}",
            clear.len(),
            handle.terms.max_message_size
        ));
    }
    Ok(())
}

/// The verified public key of a signer certificate, checked once per certificate against the
/// peer's stored bundle.
pub(crate) fn signer_key(
    handle: &LinkHandle,
    cert: &[u8],
) -> Result<meshfed_proto::crypto::VerifyingKey, String> {
    let digest = sha384(cert);
    let now = std::time::SystemTime::now();
    let mut signers = handle.signers.lock().unwrap_or_else(|e| e.into_inner());
    // A cached certificate counts only until it expires; then it is verified again (and refused).
    if let Some((key, not_after)) = signers.get(&digest)
        && now <= *not_after
    {
        return Ok(key.clone());
    }
    let der = CertificateDer::from(cert.to_vec());
    let info = meshfed_trust::verify_node_cert(
        &handle.peer_bundle,
        &der,
        &[],
        KeyPurpose::ClientAuth,
        now,
    )
    .map_err(|e| format!("signer certificate: {e}"))?;
    let key = info
        .public_key
        .verifying_key()
        .map_err(|e| format!("signer key: {e}"))?;
    signers.insert(digest, (key.clone(), info.not_after));
    Ok(key)
}
