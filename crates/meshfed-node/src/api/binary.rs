//! The binary frame format of the messaging WebSockets, which a client chooses with
//! `format=binary` on `GET /v1/messages/publish` and `GET /v1/messages/stream` (JSON text frames
//! stay the default). It carries the same fields as the JSON frames, with payloads, certificates,
//! signatures and proofs as raw bytes: no base64, no JSON to build or parse per message.
//!
//! Every frame is one WebSocket binary message. Its first byte is the format version
//! ([`VERSION`], 1), its second the frame kind; the fields follow in a fixed order. Integers are
//! big-endian. `str` is a `u16` byte length and UTF-8; `bytes` a `u32` byte length and the
//! bytes; an optional `str` whose rule forbids the empty string (a gateway name, a label, a
//! media type) is absent when empty. The last field of a frame may be *the rest of the frame*
//! (the WebSocket message delimits it). A reader refuses an unknown version or kind, a frame
//! that ends early and bytes after the last field, naming the field. A later version may add
//! fields; a v1 frame never changes.
//!
//! ```text
//! publish request (client -> gateway), kind 0x01: the fields of a JSON `SendRequest`
//!   u8 version = 1, u8 kind = 0x01
//!   u8 qos (0-2), u8 priority (0-7)
//!   u8 flags (bit 0 reliable, bit 1 ordered; others 0)
//!   u8 options (bit 0 wait, bit 1 labels, bit 2 properties; others 0)
//!   u32 max_latency in ms (0: none)
//!   str to, str topic
//!   str content_type (empty: application/octet-stream)
//!   if labels:    str schema_id, str classification (each empty: none)
//!   if properties: properties (below)
//!   payload: the rest of the frame, raw
//!
//! publish reply (gateway -> client), one per request, in order: a `PublishReply`
//!   u8 version, u8 kind = 0x02 accepted | 0x03 acknowledged: [16] envelope id (fed_ + hex)
//!   u8 version, u8 kind = 0x04 refused: str code, str message (an `ErrorBody`)
//!
//! delivered envelope (gateway -> subscriber), kind 0x10: the spec fields of the JSON frame
//!   u8 version, u8 kind = 0x10
//!   u8 parts: bit 0 signed (clear: a streamed batch's member sent before its head, as the
//!             JSON's empty signature), bit 1 encrypted, bit 2 batch, bit 3 message, bit 4 proof,
//!             bit 5 sender, bit 6 classified, bit 7 credential (with sender)
//!   u8 envelope major, u8 envelope minor
//!   [16] id, u64 timestamp (ms since the Unix epoch)
//!   u8 qos, u8 priority, u8 flags, u8 ttl, u8 hops
//!   u32 max_latency in ms (0: none), u32 agreement_version
//!   str source mesh, str source gateway, str destination mesh, str destination gateway
//!   str federation id
//!   u16 n, n x str path (the source first; n >= 1)
//!   str topic, str content_type, str content_encoding, str schema_id
//!   if classified: str classification
//!   if signed:    [96] signature (ECDSA P-384 r || s; the batch's when batch)
//!   if encrypted: str key_id, [12] iv (the cipher is AES-256-GCM)
//!   if batch:     [48] root, u32 count, u32 index, bytes audit path (48-byte hashes, bottom up)
//!   bytes certificate (DER; a gateway always delivers it, empty only if it were unknown)
//!   if sender:    str subject, u16 n, n x str role, u16 m, m x (str name, str value): the
//!                 JSON's `sender`, who sent it as this mesh maps them
//!   if credential: u64 expires (seconds since the Unix epoch; 0: none), str credential (empty:
//!                 none): the JSON's `sender.expires` and `sender.credential`
//!   if flags has bit 4 (properties): properties (below): the JSON's `metadata.properties`
//!   if proof:     bytes proof (`proof=required`: the CBOR of the envelope as it crossed, the
//!                 export form's `proof` without base64)
//!   if message:   payload: the rest of the frame, raw (clear: absent when sealed and unopened)
//!
//! properties: a message's properties (`meshfed_proto::envelope::Properties`, with its bounds)
//!   u16 n, n x (str name, str value): the user properties, in order
//!   bytes correlation_data (empty: none), str reply_to (empty: none)
//! ```
//!
//! `parts` has no bit left, so a delivered envelope's properties are announced by the envelope's
//! own `properties` flag (bit 4 of `flags`), which says its sealed part holds them: an envelope
//! without it is the same frame as before properties existed (and a reader that predates them
//! refuses the unknown flag rather than misread the frame). A gateway always delivers them
//! opened; a frame made of an unopened envelope carries them empty.
//!
//! A durable subscriber acknowledges with `DurableAck` JSON text frames on a binary stream too,
//! and receives `StreamReply` frames as JSON text: they are few, and not per message.

use meshfed_proto::batch::BatchProof;
use meshfed_proto::batch::merkle::{HASH_LEN, TreeHash};
use meshfed_proto::crypto::{SIGNATURE_LEN, Signature};
use meshfed_proto::envelope::{
    Cipher, ContentType, DeliveryPolicy, Destination, Encryption, Envelope, EnvelopeId, Flags,
    Header, Hop, Label, MaxLatency, Metadata, Priority, Properties, Qos, Sender, SignerCertificate,
    Source, Timestamp, Version,
};
use meshfed_proto::{MeshId, Topic};

use super::models::{ErrorBody, ErrorDetail, MessageAccepted, MessageAcknowledged, PublishReply};

/// The format version every frame starts with.
pub const VERSION: u8 = 1;

/// The kind of a publish request.
const PUBLISH: u8 = 0x01;
/// The kind of a reply: accepted.
const ACCEPTED: u8 = 0x02;
/// The kind of a reply: acknowledged by the destination.
const ACKNOWLEDGED: u8 = 0x03;
/// The kind of a reply: refused.
const REFUSED: u8 = 0x04;
/// The kind of a delivered envelope.
const ENVELOPE: u8 = 0x10;

/// `parts` bits of a delivered envelope.
const SIGNED: u8 = 1;
const ENCRYPTED: u8 = 1 << 1;
const BATCH: u8 = 1 << 2;
const MESSAGE: u8 = 1 << 3;
const PROOF: u8 = 1 << 4;
const SENDER: u8 = 1 << 5;
/// A `parts` bit: the classification label follows the schema id.
const CLASSIFIED: u8 = 1 << 6;
/// A `parts` bit: the sender's credential expiry and translated credential follow it.
const CREDENTIAL: u8 = 1 << 7;
/// `options` bit of a publish request.
const WAIT: u8 = 1;
/// An `options` bit: the schema id and classification follow the content type.
const LABELS: u8 = 1 << 1;
/// An `options` bit: the message's properties follow (the labels, if any, else the content
/// type).
const PROPERTIES: u8 = 1 << 2;

/// The length of an initialisation vector of AES-256-GCM.
const IV_LEN: usize = 12;

/// What is wrong with a binary frame: the first fault met, with the field it is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No bytes at all.
    #[error(
        "an empty frame: a binary frame starts with the format version ({VERSION}) and the frame kind"
    )]
    Empty,
    /// A format version this gateway does not read.
    #[error("format version {0}: this gateway reads binary frames of version {VERSION}")]
    Version(u8),
    /// Another kind of frame than the one expected here.
    #[error("frame kind 0x{found:02x} is not {expected}")]
    Kind {
        /// The kind byte found.
        found: u8,
        /// What was expected (`a publish request (0x01)`).
        expected: &'static str,
    },
    /// The frame ends inside (or before) `field`.
    #[error("{field}: the frame is cut short ({missing} of its bytes missing)")]
    Short {
        /// The field.
        field: &'static str,
        /// Bytes missing.
        missing: usize,
    },
    /// A field's value breaks its rule.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Bytes follow the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
}

fn invalid(field: &'static str, reason: impl std::fmt::Display) -> FrameError {
    FrameError::Invalid {
        field,
        reason: reason.to_string(),
    }
}

/// A publish request: what a `SendRequest` says, the payload as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The destination mesh.
    pub to: MeshId,
    /// The federation topic.
    pub topic: Topic,
    /// The payload's media type.
    pub content_type: ContentType,
    /// The delivery guarantee.
    pub qos: Qos,
    /// 0 (lowest) to 7.
    pub priority: Priority,
    /// A delivery deadline.
    pub max_latency: Option<MaxLatency>,
    /// `reliable` (implied by qos ≥ 1) and `ordered`.
    pub flags: Flags,
    /// Answer only once the destination acknowledged it.
    pub wait: bool,
    /// The payload's schema.
    pub schema_id: Option<Label>,
    /// The data's classification label.
    pub classification: Option<Label>,
    /// The message's properties (user properties, correlation data, reply-to).
    pub properties: Properties,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Publish {
    /// A message of `payload` for `to` on `topic`, every other field at its default:
    /// `application/octet-stream`, qos 0, priority 0, no deadline, no flags, no waiting, no
    /// properties.
    pub fn new(to: MeshId, topic: Topic, payload: Vec<u8>) -> Self {
        Self {
            to,
            topic,
            content_type: ContentType::octet_stream(),
            qos: Qos::default(),
            priority: Priority::default(),
            max_latency: None,
            flags: Flags::empty(),
            wait: false,
            schema_id: None,
            classification: None,
            properties: Properties::default(),
            payload,
        }
    }

    /// The frame of this request.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(
            16 + self.to.as_str().len()
                + self.topic.as_str().len()
                + self.content_type.as_str().len()
                + self.payload.len(),
        );
        w.head(PUBLISH);
        w.u8(self.qos.level());
        w.u8(self.priority.get());
        w.u8(self.flags.bits());
        let labelled = self.schema_id.is_some() || self.classification.is_some();
        let with_properties = !self.properties.is_empty();
        w.u8(if self.wait { WAIT } else { 0 }
            | if labelled { LABELS } else { 0 }
            | if with_properties { PROPERTIES } else { 0 });
        w.u32(self.max_latency.map_or(0, MaxLatency::millis));
        w.str(self.to.as_str());
        w.str(self.topic.as_str());
        w.str(self.content_type.as_str());
        if labelled {
            w.str(self.schema_id.as_ref().map_or("", Label::as_str));
            w.str(self.classification.as_ref().map_or("", Label::as_str));
        }
        if with_properties {
            w.properties(&self.properties);
        }
        w.raw(&self.payload);
        w.0
    }

    /// Reads a publish request frame.
    pub fn decode(frame: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::open(frame, PUBLISH, "a publish request (0x01)")?;
        let qos = r.u8("qos")?;
        let qos = Qos::try_from(qos).map_err(|e| invalid("qos", e.rule))?;
        let priority = r.u8("priority")?;
        let priority = Priority::try_from(priority).map_err(|e| invalid("priority", e.rule))?;
        let flags = r.u8("flags")?;
        let flags = Flags::from_bits(flags).map_err(|e| invalid("flags", e.rule))?;
        let options = r.u8("options")?;
        if options & !(WAIT | LABELS | PROPERTIES) != 0 {
            return Err(invalid(
                "options",
                format!(
                    "{options:#04x}: only bits 0 (wait), 1 (labels) and 2 (properties) are defined"
                ),
            ));
        }
        let max_latency = r.max_latency()?;
        let to = r.parse("to")?;
        let topic = r.parse("topic")?;
        let content_type = match r.str("content_type")? {
            "" => ContentType::octet_stream(),
            ct => ct.parse().map_err(|e| invalid("content_type", e))?,
        };
        let (schema_id, classification) = if options & LABELS != 0 {
            (r.label("schema_id")?, r.label("classification")?)
        } else {
            (None, None)
        };
        let properties = if options & PROPERTIES != 0 {
            r.properties()?
        } else {
            Properties::default()
        };
        Ok(Self {
            to,
            topic,
            content_type,
            qos,
            priority,
            max_latency,
            flags,
            wait: options & WAIT != 0,
            schema_id,
            classification,
            properties,
            payload: r.rest().to_vec(),
        })
    }
}

/// The frame of a reply on the publish socket.
pub fn encode_reply(reply: &PublishReply) -> Vec<u8> {
    match reply {
        PublishReply::Accepted(MessageAccepted { id }) => id_frame(ACCEPTED, id),
        PublishReply::Acknowledged(MessageAcknowledged { id, .. }) => id_frame(ACKNOWLEDGED, id),
        PublishReply::Refused(ErrorBody { error }) => {
            let mut w = Writer::with_capacity(6 + error.code.len() + error.message.len());
            w.head(REFUSED);
            w.str(&error.code);
            w.str(&error.message);
            w.0
        }
    }
}

fn id_frame(kind: u8, id: &EnvelopeId) -> Vec<u8> {
    let mut w = Writer::with_capacity(18);
    w.head(kind);
    w.raw(&id.0);
    w.0
}

/// Reads a reply frame of the publish socket.
pub fn decode_reply(frame: &[u8]) -> Result<PublishReply, FrameError> {
    const EXPECTED: &str = "a publish reply (0x02, 0x03 or 0x04)";
    let mut r = Reader::open_any(frame, EXPECTED)?;
    let reply = match r.kind {
        ACCEPTED => PublishReply::Accepted(MessageAccepted {
            id: EnvelopeId(r.array("id")?),
        }),
        ACKNOWLEDGED => PublishReply::Acknowledged(MessageAcknowledged {
            id: EnvelopeId(r.array("id")?),
            status: super::models::DeliveryStatus::Acknowledged,
        }),
        REFUSED => PublishReply::Refused(ErrorBody {
            error: ErrorDetail {
                code: r.str("code")?.to_owned(),
                message: r.str("message")?.to_owned(),
            },
        }),
        found => {
            return Err(FrameError::Kind {
                found,
                expected: EXPECTED,
            });
        }
    };
    r.finish()?;
    Ok(reply)
}

/// The frame of a delivered envelope: `unproven` when its signature is still to come (it is
/// left out, as the spec JSON leaves it empty), with `proof` (the CBOR of the envelope as it
/// crossed) for a subscriber that asked for it.
pub fn encode_envelope(envelope: &Envelope, unproven: bool, proof: Option<&[u8]>) -> Vec<u8> {
    let h = &envelope.header;
    let batch = envelope.batch.as_ref().filter(|_| !unproven);
    let mut parts = 0;
    for (set, bit) in [
        (!unproven, SIGNED),
        (h.encryption.is_some(), ENCRYPTED),
        (batch.is_some(), BATCH),
        (envelope.message.is_some(), MESSAGE),
        (proof.is_some(), PROOF),
        (envelope.sender.is_some(), SENDER),
        (h.policy.classification.is_some(), CLASSIFIED),
        (
            (envelope.sender.as_ref())
                .is_some_and(|s| s.expires.is_some() || s.credential.is_some()),
            CREDENTIAL,
        ),
    ] {
        if set {
            parts |= bit;
        }
    }
    let strings = [
        h.source.mesh.as_str(),
        h.source.gateway.as_str(),
        h.destination.mesh.as_str(),
        h.destination.gateway.as_ref().map_or("", |g| g.as_str()),
        h.federation_id.as_str(),
        h.metadata.topic.as_str(),
        h.metadata.content_type.as_str(),
        h.metadata
            .content_encoding
            .as_ref()
            .map_or("", Label::as_str),
        h.metadata.schema_id.as_ref().map_or("", Label::as_str),
        h.policy.classification.as_ref().map_or("", Label::as_str),
    ];
    let capacity = 64
        + strings.iter().map(|s| s.len() + 2).sum::<usize>()
        + envelope
            .hop
            .path
            .iter()
            .map(|m| m.as_str().len() + 2)
            .sum::<usize>()
        + SIGNATURE_LEN
        + 200
        + h.certificate.der_bytes().len()
        + proof.map_or(0, <[u8]>::len)
        + envelope.sender.as_ref().map_or(0, |s| {
            s.subject.len()
                + s.roles.iter().map(|r| r.len() + 2).sum::<usize>()
                + (s.attributes.iter())
                    .map(|(k, v)| k.len() + v.len() + 4)
                    .sum::<usize>()
                + 6
        })
        + envelope.properties.sealed_len()
        + envelope.message.as_ref().map_or(0, Vec::len);
    let mut w = Writer::with_capacity(capacity);
    w.head(ENVELOPE);
    w.u8(parts);
    w.u8(h.version.major);
    w.u8(h.version.minor);
    w.raw(&h.id.0);
    w.u64(h.timestamp.0);
    w.u8(h.policy.qos.level());
    w.u8(h.policy.priority.get());
    w.u8(h.flags.bits());
    w.u8(envelope.hop.ttl);
    w.u8(envelope.hop.hops);
    w.u32(h.policy.max_latency.map_or(0, MaxLatency::millis));
    w.u32(h.agreement_version);
    for s in &strings[..5] {
        w.str(s);
    }
    // Invariant: a path has at most one mesh per hop (hops is a u8) and the source.
    w.u16(u16::try_from(envelope.hop.path.len()).unwrap_or(u16::MAX));
    for mesh in envelope.hop.path.iter().take(usize::from(u16::MAX)) {
        w.str(mesh.as_str());
    }
    for s in &strings[5..9] {
        w.str(s);
    }
    if h.policy.classification.is_some() {
        w.str(strings[9]);
    }
    if !unproven {
        w.raw(&envelope.signature.0);
    }
    if let Some(e) = &h.encryption {
        w.str(e.key_id.as_str());
        w.raw(&e.iv);
    }
    if let Some(b) = batch {
        w.raw(b.root().as_bytes());
        w.u32(b.count());
        w.u32(b.index());
        w.bytes(&b.proof().to_bytes());
    }
    w.bytes(h.certificate.der_bytes());
    if let Some(sender) = &envelope.sender {
        // Invariant: a sender has at most 32 roles and 32 attributes (`Sender::validate`).
        w.str(&sender.subject);
        w.u16(u16::try_from(sender.roles.len()).unwrap_or(u16::MAX));
        for role in &sender.roles {
            w.str(role);
        }
        w.u16(u16::try_from(sender.attributes.len()).unwrap_or(u16::MAX));
        for (name, value) in &sender.attributes {
            w.str(name);
            w.str(value);
        }
        if parts & CREDENTIAL != 0 {
            w.u64(sender.expires.unwrap_or(0));
            w.str(sender.credential.as_deref().unwrap_or(""));
        }
    }
    if h.flags.contains(Flags::PROPERTIES) {
        w.properties(&envelope.properties);
    }
    if let Some(proof) = proof {
        w.bytes(proof);
    }
    if let Some(message) = &envelope.message {
        w.raw(message);
    }
    w.0
}

/// A delivered envelope as read from its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The envelope, with its opened message. One sent before its batch head (not `signed`)
    /// reads with an all-zero signature, as its spec JSON does.
    pub envelope: Envelope,
    /// Whether its signature was still to come.
    pub unproven: bool,
    /// With `proof=required`: the CBOR of the envelope as it crossed
    /// (`meshfed_proto::envelope::export::Crossed::decode` reads it).
    pub proof: Option<Vec<u8>>,
}

impl Delivered {
    /// Reads a delivered envelope's frame.
    pub fn decode(frame: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::open(frame, ENVELOPE, "a delivered envelope (0x10)")?;
        let parts = r.u8("parts")?;
        if parts & CREDENTIAL != 0 && parts & SENDER == 0 {
            return Err(invalid(
                "parts",
                format!("{parts:#04x}: bit 7 (credential) needs bit 5 (sender)"),
            ));
        }
        let has = |bit| parts & bit != 0;
        if has(BATCH) && !has(SIGNED) {
            return Err(invalid(
                "parts",
                "a batch position (bit 2) needs the batch's signature (bit 0)",
            ));
        }
        let version = Version {
            major: r.u8("federation.version")?,
            minor: r.u8("federation.version")?,
        };
        if version.major != Version::CURRENT.major {
            return Err(invalid(
                "federation.version",
                format!("{version} is not 1.x"),
            ));
        }
        let id = EnvelopeId(r.array("federation.id")?);
        let timestamp = Timestamp(r.u64("federation.timestamp")?);
        let qos = r.u8("policy.qos")?;
        let qos = Qos::try_from(qos).map_err(|e| invalid("policy.qos", e.rule))?;
        let priority = r.u8("policy.priority")?;
        let priority =
            Priority::try_from(priority).map_err(|e| invalid("policy.priority", e.rule))?;
        let flags = r.u8("routing.flags")?;
        let flags = Flags::from_bits(flags).map_err(|e| invalid("routing.flags", e.rule))?;
        let ttl = r.u8("routing.ttl")?;
        let hops = r.u8("routing.hops")?;
        let max_latency = r.max_latency()?;
        let agreement_version = r.u32("security.agreement_version")?;
        let source = Source {
            mesh: r.parse("source_mesh.id")?,
            gateway: r.parse("source_mesh.gateway_id")?,
        };
        let destination = Destination {
            mesh: r.parse("destination_mesh.id")?,
            gateway: r.optional("destination_mesh.gateway_id")?,
        };
        let federation_id = r.parse("security.federation_id")?;
        let n = r.u16("routing.path")?;
        if n == 0 {
            return Err(invalid(
                "routing.path",
                "must name at least the source mesh",
            ));
        }
        let path = (0..n)
            .map(|_| r.parse("routing.path"))
            .collect::<Result<Vec<MeshId>, _>>()?;
        let topic = r.parse("metadata.topic")?;
        let content_type = r.parse("metadata.content_type")?;
        let content_encoding = r.label("metadata.content_encoding")?;
        let schema_id = r.label("metadata.schema_id")?;
        let classification = if has(CLASSIFIED) {
            r.label("policy.classification")?
        } else {
            None
        };
        let signature = if has(SIGNED) {
            Signature(r.array("security.signature")?)
        } else {
            Signature([0; SIGNATURE_LEN])
        };
        let encryption = if has(ENCRYPTED) {
            Some(Encryption {
                cipher: Cipher::Aes256Gcm,
                key_id: r.parse("security.encryption.key_id")?,
                iv: r.array::<IV_LEN>("security.encryption.iv")?,
            })
        } else {
            None
        };
        let batch = if has(BATCH) {
            let root = TreeHash::from_bytes(r.array::<HASH_LEN>("security.batch.root")?);
            let count = r.u32("security.batch.count")?;
            let index = r.u32("security.batch.index")?;
            let audit_path = r.bytes("security.batch.proof")?;
            Some(
                BatchProof::from_parts(root, count, index, audit_path)
                    .map_err(|e| invalid("security.batch", e))?,
            )
        } else {
            None
        };
        let certificate = match r.bytes("security.certificate")? {
            [] => SignerCertificate::default(),
            der => SignerCertificate::new(der.to_vec()),
        };
        let mut sender = if has(SENDER) { Some(r.sender()?) } else { None };
        if let Some(s) = sender.as_mut().filter(|_| has(CREDENTIAL)) {
            s.expires = Some(r.u64("sender.expires")?).filter(|&e| e > 0);
            s.credential = Some(r.str("sender.credential")?)
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
        }
        let properties = if flags.contains(Flags::PROPERTIES) {
            r.properties()?
        } else {
            Properties::default()
        };
        let proof = if has(PROOF) {
            Some(r.bytes("proof")?.to_vec())
        } else {
            None
        };
        let message = if has(MESSAGE) {
            Some(r.rest().to_vec())
        } else {
            r.finish()?;
            None
        };
        let envelope = Envelope {
            header: Header {
                version,
                id,
                timestamp,
                source,
                destination,
                flags,
                federation_id,
                agreement_version,
                certificate,
                encryption,
                policy: DeliveryPolicy {
                    priority,
                    qos,
                    max_latency,
                    classification,
                },
                metadata: Metadata {
                    topic,
                    content_type,
                    content_encoding,
                    schema_id,
                },
            },
            hop: Hop { path, ttl, hops },
            signature,
            message,
            sender,
            properties,
            batch,
        };
        Ok(Self {
            envelope,
            unproven: !has(SIGNED),
            proof,
        })
    }
}

/// A frame being written.
struct Writer(Vec<u8>);

impl Writer {
    fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    fn head(&mut self, kind: u8) {
        self.0.extend_from_slice(&[VERSION, kind]);
    }

    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    /// A `u16` length and the text: every text a frame carries is bounded well below that by
    /// its rule (ids, topics, media types), but an error message, which has none, is cut at
    /// the last character that fits.
    fn str(&mut self, s: &str) {
        let mut end = s.len().min(usize::from(u16::MAX));
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        // Invariant: `end` is at most u16::MAX.
        self.u16(u16::try_from(end).unwrap_or(u16::MAX));
        self.raw(&s.as_bytes()[..end]);
    }

    /// A message's properties: the user properties, the correlation data, the reply-to.
    fn properties(&mut self, p: &Properties) {
        // Invariant: at most 64 user properties (`Properties::new`).
        self.u16(u16::try_from(p.user().len()).unwrap_or(u16::MAX));
        for (name, value) in p.user() {
            self.str(name);
            self.str(value);
        }
        self.bytes(p.correlation().unwrap_or_default());
        self.str(p.reply_to().map_or("", Topic::as_str));
    }

    /// A `u32` length and the bytes. Invariant: the API reads no body over 2 MiB and a
    /// certificate or proof is a few KiB, far below 4 GiB.
    fn bytes(&mut self, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.raw(&bytes[..len as usize]);
    }
}

/// A frame being read, field by field.
struct Reader<'a> {
    kind: u8,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the version and that the kind is `kind`.
    fn open(frame: &'a [u8], kind: u8, expected: &'static str) -> Result<Self, FrameError> {
        let r = Self::open_any(frame, expected)?;
        if r.kind != kind {
            return Err(FrameError::Kind {
                found: r.kind,
                expected,
            });
        }
        Ok(r)
    }

    /// Checks the version; the caller checks the kind.
    fn open_any(frame: &'a [u8], expected: &'static str) -> Result<Self, FrameError> {
        match frame {
            [] => Err(FrameError::Empty),
            [VERSION, kind, rest @ ..] => Ok(Self { kind: *kind, rest }),
            [VERSION] => Err(FrameError::Short {
                field: expected,
                missing: 1,
            }),
            [version, ..] => Err(FrameError::Version(*version)),
        }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(FrameError::Short {
                field,
                missing: n - self.rest.len(),
            });
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FrameError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FrameError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn max_latency(&mut self) -> Result<Option<MaxLatency>, FrameError> {
        match self.u32("max_latency")? {
            0 => Ok(None),
            // Invariant: only 0 is out of MaxLatency's range.
            ms => MaxLatency::try_from(ms)
                .map(Some)
                .map_err(|e| invalid("max_latency", e.rule)),
        }
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, FrameError> {
        let len = self.u16(field)?;
        let bytes = self.take(field, usize::from(len))?;
        std::str::from_utf8(bytes).map_err(|e| invalid(field, format!("not UTF-8: {e}")))
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], FrameError> {
        let len = self.u32(field)?;
        let len = usize::try_from(len).map_err(|_| invalid(field, "longer than memory"))?;
        self.take(field, len)
    }

    /// A `str` parsed into its type.
    fn parse<T>(&mut self, field: &'static str) -> Result<T, FrameError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        self.str(field)?.parse().map_err(|e| invalid(field, e))
    }

    /// A `str` parsed into its type; absent when empty.
    fn optional<T>(&mut self, field: &'static str) -> Result<Option<T>, FrameError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match self.str(field)? {
            "" => Ok(None),
            s => s.parse().map(Some).map_err(|e| invalid(field, e)),
        }
    }

    /// A sender: subject, roles, attributes, checked by [`Sender::validate`].
    fn sender(&mut self) -> Result<Sender, FrameError> {
        let subject = self.str("sender.subject")?.to_owned();
        let roles = (0..self.u16("sender.roles")?)
            .map(|_| self.str("sender.roles").map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        let attributes = (0..self.u16("sender.attributes")?)
            .map(|_| {
                Ok((
                    self.str("sender.attributes")?.to_owned(),
                    self.str("sender.attributes")?.to_owned(),
                ))
            })
            .collect::<Result<_, FrameError>>()?;
        let sender = Sender {
            subject,
            roles,
            attributes,
            expires: None,
            credential: None,
        };
        sender.validate().map_err(|e| invalid("sender", e))?;
        Ok(sender)
    }

    /// A message's properties, checked by [`Properties::new`].
    fn properties(&mut self) -> Result<Properties, FrameError> {
        let n = usize::from(self.u16("properties.user")?);
        if n > Properties::MAX_USER {
            return Err(invalid(
                "properties.user",
                format!(
                    "{n} user properties, at most {} are allowed",
                    Properties::MAX_USER
                ),
            ));
        }
        let user = (0..n)
            .map(|_| {
                Ok((
                    self.str("properties.user")?.to_owned(),
                    self.str("properties.user")?.to_owned(),
                ))
            })
            .collect::<Result<Vec<_>, FrameError>>()?;
        let correlation = match self.bytes("properties.correlation_data")? {
            [] => None,
            c => Some(c.to_vec()),
        };
        let reply_to = self.optional("properties.reply_to")?;
        Properties::new(user, correlation, reply_to).map_err(|e| invalid("properties", e))
    }

    fn label(&mut self, field: &'static str) -> Result<Option<Label>, FrameError> {
        match self.str(field)? {
            "" => Ok(None),
            s => Label::parse(field, s)
                .map(Some)
                .map_err(|e| invalid(field, e.rule)),
        }
    }

    /// The rest of the frame.
    fn rest(self) -> &'a [u8] {
        self.rest
    }

    /// Refuses bytes after the last field.
    fn finish(self) -> Result<(), FrameError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(FrameError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests;
