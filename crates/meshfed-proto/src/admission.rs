//! Admission: the checks a message passes to cross a federation, in either direction, and the
//! one enum that says why one was refused.
//!
//! The same [`Terms`] serve the sender (before a message is queued) and the receiver (after an
//! envelope is opened): what the agreement lets flow from one side to the other is checked by
//! one function, [`Terms::admit`], whichever side asks. The receiver adds the checks only it can
//! make ([`Terms::check_arrival`]: federation, source, destination, hops, encryption); the
//! cryptographic checks (signer, signature, opening) are made by the driver and reported with
//! the same [`Refusal`].
//!
//! Each refusal maps, in one place each, to its label ([`Refusal::reason`], the
//! `reason` of `meshfed_envelopes_rejected_total`), its wire code ([`Refusal::code`]) and, in the
//! service's API, its HTTP status. Sans-IO.

use std::fmt;

use crate::agreement::Agreement;
use crate::envelope::{ContentType, Header, Hop, HopError, Label, MaxLatency, Priority, Qos};
use crate::handshake::{ErrorCode, Role};
use crate::id::{FederationId, MeshId};
use crate::lifecycle::FederationState;
use crate::policy::SignatureMode;
use crate::topic::{Topic, TopicPattern};

/// Which way a message travels, seen from this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From this mesh to the peer.
    Outbound,
    /// From the peer to this mesh.
    Inbound,
}

/// Why a message or an arriving envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// There is no federation with the destination mesh.
    #[error("no federation with mesh {0}; federate first (meshfed federation invite / join)")]
    UnknownDestination(MeshId),
    /// The federation does not carry messages in its present state.
    #[error("the federation with {peer} is {state}; messages do not flow")]
    NotActive {
        /// The peer mesh.
        peer: MeshId,
        /// The federation's state.
        state: FederationState,
    },
    /// The federation is suspended (by either side): nothing is accepted until it resumes.
    #[error("the federation is suspended")]
    Suspended,
    /// The peer's link is down and the message is not stored and forwarded (qos 0).
    #[error(
        "mesh {0} is unreachable: its link is down; qos 0 messages are not queued (send with qos 1 or 2 to store and forward)"
    )]
    Unreachable(MeshId),
    /// The envelope names another federation than the link it came on.
    #[error("envelope names federation {named}, the link carries {link}")]
    WrongFederation {
        /// The federation the envelope names.
        named: FederationId,
        /// The link's federation.
        link: FederationId,
    },
    /// The envelope's source is not the link's peer.
    #[error("envelope from mesh {source_mesh} arrived on the link of {peer}")]
    WrongSource {
        /// The source the envelope names.
        source_mesh: MeshId,
        /// The link's peer.
        peer: MeshId,
    },
    /// The envelope is addressed to another mesh.
    #[error("envelope for mesh {destination} arrived at mesh {here}")]
    NotForUs {
        /// Its destination.
        destination: MeshId,
        /// This mesh.
        here: MeshId,
    },
    /// A routing loop or an exhausted ttl.
    #[error(transparent)]
    Hop(#[from] HopError),
    /// The envelope is not encrypted, and the agreement requires it.
    #[error("envelope is not encrypted, and the agreement requires encryption")]
    NotEncrypted,
    /// The envelope does not open under the peer's content key.
    #[error("envelope does not open: {0}")]
    Unsealable(String),
    /// The signer certificate is not issued by the peer's stored trust bundle (or expired).
    #[error("signer certificate: {0}")]
    UntrustedSigner(String),
    /// The signer certificate is revoked by its mesh's revocation list.
    #[error("signer certificate revoked: {0}")]
    RevokedSigner(String),
    /// The signature (or the batch's) does not verify.
    #[error("signature: {0}")]
    BadSignature(String),
    /// The frame or envelope does not decode.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The topic is not agreed in that direction.
    #[error("topic {topic} is not in the agreement with {peer} (allowed: {})", Patterns(.allowed))]
    TopicNotAgreed {
        /// The topic.
        topic: Topic,
        /// The peer mesh.
        peer: MeshId,
        /// Patterns allowed in that direction.
        allowed: Vec<TopicPattern>,
    },
    /// The payload is over the agreed size.
    #[error("payload of {size} bytes exceeds the agreed maximum of {max} bytes")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// Agreed maximum.
        max: u32,
    },
    /// The qos is above what the federation agreed.
    #[error("qos {} is above the federation's maximum of {}", .asked.level(), .max.level())]
    QosNotAgreed {
        /// Asked.
        asked: Qos,
        /// Agreed maximum.
        max: Qos,
    },
    /// The media type is not agreed.
    #[error("content type {content_type} is not agreed (allowed: {})", .allowed.join(", "))]
    ContentTypeNotAgreed {
        /// The message's media type.
        content_type: String,
        /// The agreed media types.
        allowed: Vec<String>,
    },
    /// The priority is above the agreed cap.
    #[error("priority {asked} is above the federation's cap of {max}")]
    PriorityNotAgreed {
        /// Asked.
        asked: u8,
        /// Agreed cap.
        max: u8,
    },
    /// The delivery deadline is longer than the agreed latency bound.
    #[error("max_latency of {asked_ms} ms is above the federation's bound of {max_ms} ms")]
    LatencyNotAgreed {
        /// Asked, in milliseconds.
        asked_ms: u32,
        /// Agreed bound.
        max_ms: u32,
    },
    /// A payload field the agreement redacts is present.
    #[error("payload holds {pointer}, which the agreement redacts")]
    NotRedacted {
        /// The JSON pointer.
        pointer: String,
    },
    /// The access rules do not let the sender do it.
    #[error("access denied: {0}")]
    Denied(String),
    /// The envelopes are signed in a mode the agreement does not allow.
    #[error("envelopes signed {mode}, the agreement allows {}", .allowed.join(", "))]
    SignatureModeNotAgreed {
        /// The mode used.
        mode: &'static str,
        /// The modes agreed.
        allowed: Vec<&'static str>,
    },
    /// More messages than the agreed rate, of the federation or of a topic pattern.
    #[error("over the federation's rate of {rate} messages per second{}", .topics.as_ref().map(|t| format!(" on {t}")).unwrap_or_default())]
    RateLimited {
        /// The agreed rate.
        rate: u32,
        /// The topics whose limit it is; `None`: the federation's.
        topics: Option<TopicPattern>,
    },
    /// A message relayed on another mesh's behalf (trusted intermediary) that may not pass:
    /// no delegation, one that does not cover it, or no transit rule that allows it.
    #[error("transit refused: {0}")]
    Transit(String),
    /// The envelope was sent under another agreement version than the one in force at its
    /// place in the link stream.
    #[error("envelope sent under agreement version {sent}, version {in_force} is in force")]
    WrongAgreementVersion {
        /// The version the envelope names.
        sent: u32,
        /// The version in force.
        in_force: u32,
    },
    /// The message names no schema, or one the agreement does not list.
    #[error("{}, and the agreement takes only schemas {}", Named("schema id", .schema), .allowed.join(", "))]
    SchemaNotAgreed {
        /// The schema id the message names.
        schema: Option<String>,
        /// The agreed schema ids.
        allowed: Vec<String>,
    },
    /// The message carries no classification label, or one the agreement does not let cross.
    #[error("{}, and the agreement lets only {} cross", Named("classification", .label), .allowed.join(", "))]
    ClassificationNotAgreed {
        /// The message's label.
        label: Option<String>,
        /// The agreed labels.
        allowed: Vec<String>,
    },
}

/// "the message names no X" or "X Y".
struct Named<'a>(&'static str, &'a Option<String>);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(v) => write!(f, "{} {v}", self.0),
            None => write!(f, "the message has no {}", self.0),
        }
    }
}

/// A signature mode as the policy file names it.
fn mode_name(mode: SignatureMode) -> &'static str {
    match mode {
        SignatureMode::Batch => "batch",
        SignatureMode::PerMessage => "per-message",
    }
}

/// Shows a list of patterns, `none` when empty.
struct Patterns<'a>(&'a [TopicPattern]);

impl fmt::Display for Patterns<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p.as_str())?;
        }
        Ok(())
    }
}

impl Refusal {
    /// Every label [`Refusal::reason`] can give, for metrics that start every series at zero.
    pub const REASONS: [&'static str; 28] = [
        "unknown_destination",
        "not_active",
        "suspended",
        "unreachable",
        "wrong_federation",
        "wrong_source",
        "not_for_us",
        "hop_limit",
        "not_encrypted",
        "unsealable",
        "untrusted_signer",
        "revoked_signer",
        "bad_signature",
        "malformed",
        "topic_not_agreed",
        "too_large",
        "qos_not_agreed",
        "wrong_agreement_version",
        "content_type_not_agreed",
        "priority_not_agreed",
        "latency_not_agreed",
        "not_redacted",
        "access_denied",
        "signature_mode_not_agreed",
        "rate_limited",
        "transit_refused",
        "schema_not_agreed",
        "classification_not_agreed",
    ];

    /// The refusal's label: the `reason` of `meshfed_envelopes_rejected_total` and the `code` of
    /// an API error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownDestination(_) => "unknown_destination",
            Self::NotActive { .. } => "not_active",
            Self::Suspended => "suspended",
            Self::Unreachable(_) => "unreachable",
            Self::WrongFederation { .. } => "wrong_federation",
            Self::WrongSource { .. } => "wrong_source",
            Self::NotForUs { .. } => "not_for_us",
            Self::Hop(_) => "hop_limit",
            Self::NotEncrypted => "not_encrypted",
            Self::Unsealable(_) => "unsealable",
            Self::UntrustedSigner(_) => "untrusted_signer",
            Self::RevokedSigner(_) => "revoked_signer",
            Self::BadSignature(_) => "bad_signature",
            Self::Malformed(_) => "malformed",
            Self::TopicNotAgreed { .. } => "topic_not_agreed",
            Self::TooLarge { .. } => "too_large",
            Self::QosNotAgreed { .. } => "qos_not_agreed",
            Self::WrongAgreementVersion { .. } => "wrong_agreement_version",
            Self::ContentTypeNotAgreed { .. } => "content_type_not_agreed",
            Self::PriorityNotAgreed { .. } => "priority_not_agreed",
            Self::LatencyNotAgreed { .. } => "latency_not_agreed",
            Self::NotRedacted { .. } => "not_redacted",
            Self::Denied(_) => "access_denied",
            Self::SignatureModeNotAgreed { .. } => "signature_mode_not_agreed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Transit(_) => "transit_refused",
            Self::SchemaNotAgreed { .. } => "schema_not_agreed",
            Self::ClassificationNotAgreed { .. } => "classification_not_agreed",
        }
    }

    /// Its number on the wire, where a receiver tells the sender why it refused a message (in
    /// its acknowledgements): its reason's place in [`Refusal::REASONS`].
    pub fn number(&self) -> u8 {
        let reason = self.reason();
        let place = Self::REASONS.iter().position(|r| *r == reason);
        // Invariant: every reason is listed (a test checks it); u8 holds the list's length.
        u8::try_from(place.unwrap_or(usize::MAX)).unwrap_or(u8::MAX)
    }

    /// The reason label a refusal number stands for; `None` for a number this version does not
    /// know (a newer peer's).
    pub fn reason_of(number: u8) -> Option<&'static str> {
        Self::REASONS.get(usize::from(number)).copied()
    }

    /// The wire error code a peer is told this refusal with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownDestination(_) | Self::WrongFederation { .. } => {
                ErrorCode::UnknownFederation
            }
            Self::NotActive { .. } | Self::Suspended | Self::Unreachable(_) => ErrorCode::NotActive,
            Self::WrongSource { .. } | Self::NotForUs { .. } => ErrorCode::IdentityMismatch,
            Self::Hop(_) => ErrorCode::HopLimit,
            Self::NotEncrypted
            | Self::TopicNotAgreed { .. }
            | Self::QosNotAgreed { .. }
            | Self::WrongAgreementVersion { .. }
            | Self::ContentTypeNotAgreed { .. }
            | Self::PriorityNotAgreed { .. }
            | Self::LatencyNotAgreed { .. }
            | Self::NotRedacted { .. }
            | Self::Denied(_)
            | Self::Transit(_)
            | Self::SchemaNotAgreed { .. }
            | Self::ClassificationNotAgreed { .. }
            | Self::SignatureModeNotAgreed { .. }
            | Self::RateLimited { .. } => ErrorCode::AgreementViolated,
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::Unsealable(_) | Self::Malformed(_) => ErrorCode::Malformed,
            Self::UntrustedSigner(_) | Self::RevokedSigner(_) => ErrorCode::UntrustedPeer,
            Self::BadSignature(_) => ErrorCode::BadSignature,
        }
    }
}

/// What the admission checks need to know of one message.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Its federation topic.
    pub topic: &'a Topic,
    /// Its payload size in clear, in bytes.
    pub size: usize,
    /// Its delivery guarantee.
    pub qos: Qos,
    /// Its media type.
    pub content_type: &'a ContentType,
    /// Its priority.
    pub priority: Priority,
    /// Its delivery deadline.
    pub max_latency: Option<MaxLatency>,
    /// The schema it names.
    pub schema_id: Option<&'a Label>,
    /// Its classification label.
    pub classification: Option<&'a Label>,
}

impl<'a> Facts<'a> {
    /// The facts of an envelope whose payload is `size` bytes in clear.
    pub fn of(header: &'a Header, size: usize) -> Self {
        Self {
            topic: &header.metadata.topic,
            size,
            qos: header.policy.qos,
            content_type: &header.metadata.content_type,
            priority: header.policy.priority,
            max_latency: header.policy.max_latency,
            schema_id: header.metadata.schema_id.as_ref(),
            classification: header.policy.classification.as_ref(),
        }
    }
}

/// The agreement of one federation as one side applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// The federation.
    pub federation_id: FederationId,
    /// This side's mesh.
    pub local: MeshId,
    /// The peer mesh.
    pub peer: MeshId,
    /// Agreement version.
    pub version: u32,
    /// Topics that may flow from this side to the peer.
    pub outbound: Vec<TopicPattern>,
    /// Topics that may flow from the peer to this side.
    pub inbound: Vec<TopicPattern>,
    /// Largest payload, in bytes.
    pub max_message_size: u32,
    /// Highest qos either side may use.
    pub max_qos: Qos,
    /// Media types that may cross (essences, lowercased); empty: any.
    pub content_types: Vec<String>,
    /// Highest priority.
    pub max_priority: u8,
    /// Longest delivery deadline, in milliseconds.
    pub max_latency_ms: Option<u32>,
    /// JSON pointers removed from payloads before sealing.
    pub redact: Vec<String>,
    /// Most messages per second each way.
    pub max_rate: Option<u32>,
    /// How envelopes may be signed.
    pub signature_modes: Vec<SignatureMode>,
    /// Schema ids a message must name one of; empty: any.
    pub schemas: Vec<String>,
    /// Classification labels a message must carry one of; empty: any.
    pub classifications: Vec<String>,
    /// Rate limits per topic pattern, each way.
    pub topic_rates: Vec<crate::policy::TopicRate>,
    /// What both sides record of the traffic in their audit trails.
    pub audit_level: crate::policy::AuditLevel,
    /// How long records of exchanged messages are kept, in days.
    pub retention_days: u32,
}

impl Terms {
    /// The terms of `agreement` for the side that played `role` in its handshake.
    pub fn of(agreement: &Agreement, role: Role) -> Self {
        let services = &agreement.capabilities.services;
        let (local, peer, outbound, inbound) = match role {
            Role::Initiator => (
                &agreement.initiator,
                &agreement.responder,
                &services.to_responder,
                &services.to_initiator,
            ),
            Role::Responder => (
                &agreement.responder,
                &agreement.initiator,
                &services.to_initiator,
                &services.to_responder,
            ),
        };
        Self {
            federation_id: agreement.federation_id.clone(),
            local: local.mesh.clone(),
            peer: peer.mesh.clone(),
            version: agreement.version,
            outbound: outbound.clone(),
            inbound: inbound.clone(),
            max_message_size: agreement.policy.max_message_size,
            max_qos: agreement.capabilities.qos.0,
            content_types: (agreement.policy.content_types.iter())
                .map(|c| c.trim().to_ascii_lowercase())
                .collect(),
            max_priority: agreement.policy.max_priority,
            max_latency_ms: agreement.policy.max_latency_ms,
            redact: agreement.policy.redact.clone(),
            max_rate: agreement.policy.max_rate,
            signature_modes: agreement.policy.signature_modes.clone(),
            schemas: agreement.policy.schemas.clone(),
            classifications: agreement.policy.classifications.clone(),
            topic_rates: agreement.policy.topic_rates.clone(),
            audit_level: agreement.policy.audit_level,
            retention_days: agreement.policy.retention_days,
        }
    }

    /// The topics allowed `direction`.
    pub fn topics(&self, direction: Direction) -> &[TopicPattern] {
        match direction {
            Direction::Outbound => &self.outbound,
            Direction::Inbound => &self.inbound,
        }
    }

    /// The checks of the agreement every message passes, going `direction`: its topic is
    /// agreed that way, its size and qos are within the agreed limits.
    pub fn admit(&self, direction: Direction, msg: Facts<'_>) -> Result<(), Refusal> {
        let allowed = self.topics(direction);
        if !allowed.iter().any(|p| p.matches(msg.topic)) {
            return Err(Refusal::TopicNotAgreed {
                topic: msg.topic.clone(),
                peer: self.peer.clone(),
                allowed: allowed.to_vec(),
            });
        }
        if msg.size > self.max_message_size as usize {
            return Err(Refusal::TooLarge {
                size: msg.size,
                max: self.max_message_size,
            });
        }
        if msg.qos > self.max_qos {
            return Err(Refusal::QosNotAgreed {
                asked: msg.qos,
                max: self.max_qos,
            });
        }
        if !self.content_types.is_empty() {
            let essence = msg.content_type.essence();
            if !self.content_types.contains(&essence) {
                return Err(Refusal::ContentTypeNotAgreed {
                    content_type: msg.content_type.as_str().to_owned(),
                    allowed: self.content_types.clone(),
                });
            }
        }
        if msg.priority.get() > self.max_priority {
            return Err(Refusal::PriorityNotAgreed {
                asked: msg.priority.get(),
                max: self.max_priority,
            });
        }
        if let Some(max_ms) = self.max_latency_ms {
            // A message without a deadline takes the bound as its deadline (see
            // `Terms::deadline`), so only a longer one is refused.
            if let Some(asked) = msg.max_latency.filter(|l| l.millis() > max_ms) {
                return Err(Refusal::LatencyNotAgreed {
                    asked_ms: asked.millis(),
                    max_ms,
                });
            }
        }
        let listed = |allowed: &[String], value: Option<&Label>| {
            allowed.is_empty() || value.is_some_and(|v| allowed.iter().any(|a| a == v.as_str()))
        };
        if !listed(&self.schemas, msg.schema_id) {
            return Err(Refusal::SchemaNotAgreed {
                schema: msg.schema_id.map(|l| l.as_str().to_owned()),
                allowed: self.schemas.clone(),
            });
        }
        if !listed(&self.classifications, msg.classification) {
            return Err(Refusal::ClassificationNotAgreed {
                label: msg.classification.map(|l| l.as_str().to_owned()),
                allowed: self.classifications.clone(),
            });
        }
        Ok(())
    }

    /// The receiver's check of how a transfer's envelopes are signed.
    pub fn check_signed(&self, mode: SignatureMode) -> Result<(), Refusal> {
        if self.signature_modes.contains(&mode) {
            return Ok(());
        }
        Err(Refusal::SignatureModeNotAgreed {
            mode: mode_name(mode),
            allowed: self.signature_modes.iter().map(|&m| mode_name(m)).collect(),
        })
    }

    /// The mode a sender signs in: `preferred` if the agreement allows it, else one it does.
    pub fn signing_mode(&self, preferred: SignatureMode) -> SignatureMode {
        if self.signature_modes.contains(&preferred) || self.signature_modes.is_empty() {
            preferred
        } else {
            self.signature_modes[0]
        }
    }

    /// The payload the sender seals: `payload` without the fields the agreement redacts
    /// (`None`: as it is).
    pub fn redact(&self, payload: &[u8]) -> Option<Vec<u8>> {
        crate::redact::redact(payload, &self.redact)
    }

    /// The receiver's check of an opened payload: no field the agreement redacts is present.
    pub fn check_redacted(&self, payload: &[u8]) -> Result<(), Refusal> {
        match crate::redact::present(payload, &self.redact) {
            Some(pointer) => Err(Refusal::NotRedacted {
                pointer: pointer.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The checks only the receiver makes, before an envelope is opened: it travels under this
    /// federation, from the peer, to this mesh, may take one more hop (recorded in `hop`), is
    /// encrypted (every meshfed sender seals what it sends). With `relaying`, an envelope for another mesh is taken too: this mesh relays it there as
    /// a trusted intermediary (the caller checked it holds the origin's delegation).
    pub fn check_arrival(
        &self,
        header: &Header,
        hop: &mut Hop,
        relaying: bool,
    ) -> Result<(), Refusal> {
        if header.federation_id != self.federation_id {
            return Err(Refusal::WrongFederation {
                named: header.federation_id.clone(),
                link: self.federation_id.clone(),
            });
        }
        if header.source.mesh != self.peer {
            return Err(Refusal::WrongSource {
                source_mesh: header.source.mesh.clone(),
                peer: self.peer.clone(),
            });
        }
        if header.destination.mesh != self.local && !relaying {
            return Err(Refusal::NotForUs {
                destination: header.destination.mesh.clone(),
                here: self.local.clone(),
            });
        }
        hop.advance(&self.local)?;
        if header.encryption.is_none() {
            return Err(Refusal::NotEncrypted);
        }
        Ok(())
    }

    /// The version check of an arriving envelope: it names the version in force, or the one
    /// before while `peer_switched` is false (the peer may not have seen the switch point yet:
    /// what it sent before crosses what this side sent after). Returns whether the envelope
    /// shows the peer has switched to the version in force.
    pub fn check_version(&self, header: &Header, peer_switched: bool) -> Result<bool, Refusal> {
        let sent = header.agreement_version;
        if sent == self.version {
            return Ok(true);
        }
        if !peer_switched && sent.checked_add(1) == Some(self.version) {
            return Ok(false);
        }
        Err(Refusal::WrongAgreementVersion {
            sent,
            in_force: self.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{
        Cipher, ContentType, DeliveryPolicy, Destination, Encryption, EnvelopeId, Flags, Metadata,
        Source, Version,
    };

    fn terms() -> Terms {
        Terms {
            federation_id: "fed_ab".parse().unwrap(),
            local: "plant-a".parse().unwrap(),
            peer: "supplier-b".parse().unwrap(),
            version: 1,
            outbound: vec!["orders/#".parse().unwrap()],
            inbound: vec!["line-3/+".parse().unwrap()],
            max_message_size: 100,
            max_qos: Qos::AtLeastOnce,
            content_types: Vec::new(),
            max_priority: 7,
            max_latency_ms: None,
            redact: Vec::new(),
            max_rate: None,
            signature_modes: vec![SignatureMode::PerMessage],
            schemas: Vec::new(),
            classifications: Vec::new(),
            topic_rates: Vec::new(),
            audit_level: crate::policy::AuditLevel::Full,
            retention_days: 30,
        }
    }

    #[test]
    fn every_refusal_has_a_wire_number_that_names_its_reason_back() {
        let samples = [
            Refusal::Suspended,
            Refusal::NotEncrypted,
            Refusal::Denied("x".into()),
            Refusal::Transit("x".into()),
            Refusal::RateLimited {
                rate: 1,
                topics: None,
            },
        ];
        for r in samples {
            assert_eq!(Refusal::reason_of(r.number()), Some(r.reason()), "{r}");
        }
        assert_eq!(Refusal::reason_of(u8::MAX), None);
        assert!(Refusal::REASONS.len() < usize::from(u8::MAX));
    }

    #[test]
    fn transfers_signed_outside_the_agreed_modes_are_refused_and_senders_pick_an_agreed_one() {
        let t = terms();
        assert_eq!(t.check_signed(SignatureMode::PerMessage), Ok(()));
        let refused = t.check_signed(SignatureMode::Batch).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "envelopes signed batch, the agreement allows per-message"
        );
        assert_eq!(
            t.signing_mode(SignatureMode::Batch),
            SignatureMode::PerMessage
        );
    }

    fn arriving(topic: &str) -> Header {
        let t = terms();
        Header {
            version: Version::CURRENT,
            id: EnvelopeId::new(crate::envelope::Timestamp(1), [7; 10]),
            timestamp: crate::envelope::Timestamp(1),
            source: Source {
                mesh: t.peer.clone(),
                gateway: "gw1".parse().unwrap(),
            },
            destination: Destination {
                mesh: t.local.clone(),
                gateway: None,
            },
            flags: Flags::empty(),
            federation_id: t.federation_id,
            agreement_version: 1,
            certificate: crate::envelope::SignerCertificate::default(),
            encryption: Some(Encryption {
                cipher: Cipher::Aes256Gcm,
                key_id: "k1".parse().unwrap(),
                iv: [0; 12],
            }),
            policy: DeliveryPolicy::default(),
            metadata: Metadata {
                topic: topic.parse().unwrap(),
                content_type: ContentType::json(),
                content_encoding: None,
                schema_id: None,
            },
        }
    }

    static JSON: std::sync::LazyLock<ContentType> = std::sync::LazyLock::new(ContentType::json);

    fn facts(topic: &Topic, size: usize, qos: Qos) -> Facts<'_> {
        Facts {
            topic,
            size,
            qos,
            content_type: &JSON,
            priority: Priority::default(),
            max_latency: None,
            schema_id: None,
            classification: None,
        }
    }

    #[test]
    fn admission_refuses_content_type_priority_and_latency_outside_the_agreement() {
        let t = Terms {
            content_types: vec!["text/csv".into()],
            max_priority: 4,
            max_latency_ms: Some(1000),
            ..terms()
        };
        let order: Topic = "orders/new".parse().unwrap();
        let csv: ContentType = "text/csv; charset=utf-8".parse().unwrap();
        let ok = Facts {
            content_type: &csv,
            priority: Priority::try_from(4).unwrap(),
            max_latency: Some(MaxLatency::try_from(1000).unwrap()),
            ..facts(&order, 1, Qos::AtMostOnce)
        };
        assert_eq!(t.admit(Direction::Outbound, ok), Ok(()));
        let json = t
            .admit(Direction::Outbound, facts(&order, 1, Qos::AtMostOnce))
            .unwrap_err();
        assert_eq!(
            json.to_string(),
            "content type application/json is not agreed (allowed: text/csv)"
        );
        let urgent = Facts {
            priority: Priority::MAX,
            ..ok
        };
        assert_eq!(
            t.admit(Direction::Outbound, urgent).unwrap_err().reason(),
            "priority_not_agreed"
        );
        let slow = Facts {
            max_latency: Some(MaxLatency::try_from(1001).unwrap()),
            ..ok
        };
        assert_eq!(
            t.admit(Direction::Outbound, slow).unwrap_err().to_string(),
            "max_latency of 1001 ms is above the federation's bound of 1000 ms"
        );
    }

    #[test]
    fn admission_refuses_a_schema_or_classification_outside_the_agreement() {
        let t = Terms {
            schemas: vec!["order-v2".into()],
            classifications: vec!["internal".into(), "public".into()],
            ..terms()
        };
        let order: Topic = "orders/new".parse().unwrap();
        let v2 = Label::parse("schema_id", "order-v2").unwrap();
        let v1 = Label::parse("schema_id", "order-v1").unwrap();
        let public = Label::parse("classification", "public").unwrap();
        let secret = Label::parse("classification", "secret").unwrap();
        let ok = Facts {
            schema_id: Some(&v2),
            classification: Some(&public),
            ..facts(&order, 1, Qos::AtMostOnce)
        };
        assert_eq!(t.admit(Direction::Outbound, ok), Ok(()));
        let cases = [
            (
                Facts {
                    schema_id: Some(&v1),
                    ..ok
                },
                "schema id order-v1, and the agreement takes only schemas order-v2",
            ),
            (
                Facts {
                    schema_id: None,
                    ..ok
                },
                "the message has no schema id, and the agreement takes only schemas order-v2",
            ),
            (
                Facts {
                    classification: Some(&secret),
                    ..ok
                },
                "classification secret, and the agreement lets only internal, public cross",
            ),
            (
                Facts {
                    classification: None,
                    ..ok
                },
                "the message has no classification, and the agreement lets only internal, public cross",
            ),
        ];
        for (facts, want) in cases {
            let refused = t.admit(Direction::Outbound, facts);
            assert_eq!(refused.map_err(|r| r.to_string()), Err(want.to_owned()));
        }
        // Without lists in the agreement, neither is needed.
        let plain = facts(&order, 1, Qos::AtMostOnce);
        assert_eq!(terms().admit(Direction::Outbound, plain), Ok(()));
    }

    #[test]
    fn admission_checks_each_direction_against_its_own_topics() {
        let t = terms();
        let order: Topic = "orders/new".parse().unwrap();
        let reading: Topic = "line-3/temp".parse().unwrap();
        assert_eq!(
            t.admit(Direction::Outbound, facts(&order, 10, Qos::AtLeastOnce)),
            Ok(())
        );
        assert_eq!(
            t.admit(Direction::Inbound, facts(&reading, 10, Qos::AtMostOnce)),
            Ok(())
        );
        let refused = t
            .admit(Direction::Inbound, facts(&order, 10, Qos::AtMostOnce))
            .unwrap_err();
        assert_eq!(refused.reason(), "topic_not_agreed");
        assert_eq!(
            refused.to_string(),
            "topic orders/new is not in the agreement with supplier-b (allowed: line-3/+)"
        );
        let refused = t
            .admit(Direction::Outbound, facts(&reading, 10, Qos::AtMostOnce))
            .unwrap_err();
        assert!(
            refused.to_string().ends_with("(allowed: orders/#)"),
            "{refused}"
        );
    }

    #[test]
    fn admission_refuses_size_and_qos_over_the_agreement() {
        let t = terms();
        let order: Topic = "orders/new".parse().unwrap();
        let big = t
            .admit(Direction::Outbound, facts(&order, 101, Qos::AtMostOnce))
            .unwrap_err();
        assert_eq!(
            big,
            Refusal::TooLarge {
                size: 101,
                max: 100
            }
        );
        assert_eq!(big.code(), ErrorCode::TooLarge);
        let qos = t
            .admit(Direction::Outbound, facts(&order, 1, Qos::ExactlyOnce))
            .unwrap_err();
        assert_eq!(qos.reason(), "qos_not_agreed");
        assert_eq!(
            qos.to_string(),
            "qos 2 is above the federation's maximum of 1"
        );
    }

    #[test]
    fn arrival_checks_name_what_is_wrong() {
        let t = terms();
        let origin = || Hop::origin(t.peer.clone(), Hop::DEFAULT_TTL);
        let mut hop = origin();
        assert_eq!(
            t.check_arrival(&arriving("line-3/temp"), &mut hop, false),
            Ok(())
        );
        assert_eq!(hop.path, vec![t.peer.clone(), t.local.clone()]);

        let mut h = arriving("line-3/temp");
        h.federation_id = "fed_other".parse().unwrap();
        let e = t.check_arrival(&h, &mut origin(), false).unwrap_err();
        assert_eq!(e.reason(), "wrong_federation");

        let mut h = arriving("line-3/temp");
        h.source.mesh = "mallory".parse().unwrap();
        let e = t.check_arrival(&h, &mut origin(), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "envelope from mesh mallory arrived on the link of supplier-b"
        );

        let mut h = arriving("line-3/temp");
        h.destination.mesh = "elsewhere".parse().unwrap();
        let e = t.check_arrival(&h, &mut origin(), false).unwrap_err();
        assert_eq!(e.reason(), "not_for_us");

        let mut looped = origin();
        looped.path.push(t.local.clone());
        let e = t
            .check_arrival(&arriving("line-3/temp"), &mut looped, false)
            .unwrap_err();
        assert_eq!(e.reason(), "hop_limit");

        let mut h = arriving("line-3/temp");
        h.encryption = None;
        let e = t.check_arrival(&h, &mut origin(), false).unwrap_err();
        assert_eq!(e, Refusal::NotEncrypted);
    }

    #[test]
    fn the_previous_agreement_version_is_taken_only_until_the_peer_has_switched() {
        let mut t = terms();
        t.version = 3;
        let mut h = arriving("line-3/temp");
        h.agreement_version = 3;
        assert_eq!(t.check_version(&h, false), Ok(true));
        h.agreement_version = 2;
        assert_eq!(t.check_version(&h, false), Ok(false));
        let e = t.check_version(&h, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "envelope sent under agreement version 2, version 3 is in force"
        );
        assert_eq!(e.reason(), "wrong_agreement_version");
        for sent in [0, 1, 4] {
            h.agreement_version = sent;
            assert!(t.check_version(&h, false).is_err(), "version {sent}");
        }
    }

    #[test]
    fn every_refusal_has_a_listed_label_and_a_known_code() {
        let samples = [
            Refusal::UnknownDestination("x".parse().unwrap()),
            Refusal::Suspended,
            Refusal::NotEncrypted,
            Refusal::Unsealable(String::new()),
            Refusal::UntrustedSigner(String::new()),
            Refusal::RevokedSigner(String::new()),
            Refusal::BadSignature(String::new()),
            Refusal::Malformed(String::new()),
            Refusal::TooLarge { size: 1, max: 0 },
            Refusal::WrongAgreementVersion {
                sent: 1,
                in_force: 2,
            },
        ];
        for r in samples {
            assert!(Refusal::REASONS.contains(&r.reason()), "{}", r.reason());
            assert!(!matches!(r.code(), ErrorCode::Other(_)));
        }
    }
}
