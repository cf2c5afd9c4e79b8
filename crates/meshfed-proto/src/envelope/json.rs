//! The spec's JSON layout of an envelope — `{"federation": {...}, "message": ...}` — as the API,
//! the CLI and audit exports present it.
//!
//! Beyond the spec's example, `metadata.topic` names the federation topic (the example has no
//! place for it, and every message needs one). Binary fields (`signature`, `certificate`, `iv`)
//! are standard base64. `message` is shown by content type, so that it reads back to the same
//! bytes: the JSON document as written for JSON types, a string for `text/*`, base64 for anything
//! else, and `null` when the payload is sealed and unopened; a JSON payload that is not exactly
//! one document (or has spaces around it) is shown as a string and a JSON or text payload that
//! is not UTF-8 as base64, each marked by `message_encoding` (`text`, `base64`).
//!
//! `sender` (beside `federation` and `message`, absent when unknown) is who sent it, from the
//! sealed part of an `identified` envelope: `{"subject", "roles", "attributes"}`, as the receiving
//! mesh maps it (see [`Sender`]).
//!
//! `metadata.properties` (absent when the message has none) holds the message's properties, from
//! the sealed part of a `properties` envelope (see [`Properties`]): `{"user": [[name, value],
//! ...], "correlation_data": base64, "reply_to": topic}`, each member absent when empty.
//!
//! An envelope signed in a batch carries `security.batch`: `{"root": base64 (48 bytes), "count":
//! n, "index": i, "proof": base64 of the audit path (48-byte hashes, bottom up)}`, and its
//! `security.signature` is the batch's. The key is absent for an envelope signed alone (`null` is
//! read as absent too).
//!
//! An envelope of a streamed batch handed to a subscriber before its batch head arrived
//! (DESIGN §3.4) has an empty `security.signature` and no `security.batch`: its proof is still
//! to come. It reads back with an all-zero signature, which verifies under no key; a subscriber
//! that needs proof asks for the export form, which only proven envelopes take.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    Cipher, ContentType, DeliveryPolicy, Destination, Encryption, Envelope, EnvelopeId, Flags,
    Header, Hop, Label, MaxLatency, Metadata, Priority, Properties, Qos, Sender, SignerCertificate,
    Source, Timestamp, Version,
};
use crate::batch::merkle::{self, HASH_LEN, TreeHash};
use crate::batch::{BatchError, BatchProof, SignedBatch};
use crate::crypto::{Iv, SIGNATURE_LEN, Signature};
use crate::id::{FederationId, KeyId, MeshId, NodeName};
use crate::topic::Topic;

/// A spec-layout envelope that could not be read: says what and where.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not JSON, or a field of the wrong type or out of its rule (serde names line and column).
    #[error("envelope JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    /// A field parsed as JSON but its content is invalid.
    #[error("envelope JSON field federation.{field}: {reason}")]
    Field {
        /// Path below `federation`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `sender` parsed as JSON but breaks a rule of [`Sender::validate`].
    #[error("envelope JSON field sender: {0}")]
    Sender(String),
}

fn field(field: &'static str, reason: impl std::fmt::Display) -> JsonError {
    JsonError::Field {
        field,
        reason: reason.to_string(),
    }
}

/// `{"federation": ..., "message": ...}`
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeJson {
    federation: FederationJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sender: Option<SenderJson>,
    message: Box<RawValue>,
    /// How a JSON or text payload that `message` cannot show as is was written instead:
    /// `text` (a JSON payload that is not exactly one JSON document: shown as a string) or
    /// `base64` (a JSON or text payload that is not UTF-8). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_encoding: Option<String>,
}

/// `sender`: who sent it (an `identified` envelope, opened), as the receiving mesh maps it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SenderJson {
    subject: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credential: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FederationJson {
    version: Version,
    id: EnvelopeId,
    timestamp: Timestamp,
    source_mesh: SourceJson,
    destination_mesh: DestinationJson,
    routing: RoutingJson,
    security: SecurityJson,
    policy: PolicyJson,
    metadata: MetadataJson,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceJson {
    id: MeshId,
    gateway_id: NodeName,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationJson {
    id: MeshId,
    gateway_id: Option<NodeName>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingJson {
    path: Vec<MeshId>,
    ttl: u8,
    hops: u8,
    flags: Vec<String>,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecurityJson {
    federation_id: FederationId,
    #[serde(default, skip_serializing_if = "is_zero")]
    agreement_version: u32,
    signature: String,
    certificate: String,
    encryption: Option<EncryptionJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch: Option<BatchJson>,
}

/// `security.batch`: where a batch-signed envelope sits in its batch.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchJson {
    root: String,
    count: u32,
    index: u32,
    proof: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptionJson {
    algorithm: String,
    key_id: KeyId,
    iv: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyJson {
    priority: Priority,
    qos: Qos,
    max_latency: Option<MaxLatency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    classification: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataJson {
    content_type: ContentType,
    content_encoding: Option<String>,
    schema_id: Option<String>,
    topic: Topic,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    properties: Option<PropertiesJson>,
}

/// `metadata.properties`: the message's properties, each member absent when empty.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PropertiesJson {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    user: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<Topic>,
}

impl PropertiesJson {
    /// `None` for no properties: the member is left out.
    fn show(p: &Properties) -> Option<Self> {
        (!p.is_empty()).then(|| Self {
            user: p.user().to_vec(),
            correlation_data: p.correlation().map(|c| B64.encode(c)),
            reply_to: p.reply_to().cloned(),
        })
    }

    fn read(self) -> Result<Properties, JsonError> {
        const NAME: &str = "metadata.properties";
        let correlation = self
            .correlation_data
            .map(|c| decode_b64("metadata.properties.correlation_data", &c))
            .transpose()?;
        Properties::new(self.user, correlation, self.reply_to).map_err(|e| field(NAME, e))
    }
}

impl Envelope {
    /// The spec-layout JSON value of this envelope.
    pub fn to_json(&self) -> serde_json::Value {
        // Invariant: these structs hold only strings, numbers, options and arrays.
        serde_json::to_value(self.json_doc())
            .unwrap_or_else(|e| unreachable!("envelope to JSON: {e}"))
    }

    /// The spec-layout JSON text of this envelope (keys in the spec's order), written without
    /// building a [`serde_json::Value`] first.
    pub fn to_json_string(&self) -> String {
        // Invariant: these structs hold only strings, numbers, options and arrays.
        serde_json::to_string(&self.json_doc())
            .unwrap_or_else(|e| unreachable!("envelope to JSON: {e}"))
    }

    /// The spec-layout JSON text of this envelope before its signature is known (a streamed
    /// batch's member handed over ahead of its head): `security.signature` is empty and
    /// `security.batch` absent, so it reads back as no envelope that verifies.
    pub fn to_json_string_unproven(&self) -> String {
        let mut doc = self.json_doc();
        doc.federation.security.signature = String::new();
        doc.federation.security.batch = None;
        // Invariant: as above.
        serde_json::to_string(&doc).unwrap_or_else(|e| unreachable!("envelope to JSON: {e}"))
    }

    fn json_doc(&self) -> EnvelopeJson {
        let h = &self.header;
        let (message, message_encoding) =
            present_message(&h.metadata.content_type, self.message.as_deref());
        EnvelopeJson {
            federation: FederationJson {
                version: h.version,
                id: h.id,
                timestamp: h.timestamp,
                source_mesh: SourceJson {
                    id: h.source.mesh.clone(),
                    gateway_id: h.source.gateway.clone(),
                },
                destination_mesh: DestinationJson {
                    id: h.destination.mesh.clone(),
                    gateway_id: h.destination.gateway.clone(),
                },
                routing: RoutingJson {
                    path: self.hop.path.clone(),
                    ttl: self.hop.ttl,
                    hops: self.hop.hops,
                    flags: h.flags.names().into_iter().map(str::to_owned).collect(),
                },
                security: SecurityJson {
                    federation_id: h.federation_id.clone(),
                    agreement_version: h.agreement_version,
                    signature: B64.encode(self.signature.0),
                    certificate: show_certificate(&h.certificate),
                    encryption: h.encryption.as_ref().map(|e| EncryptionJson {
                        algorithm: e.cipher.name().to_owned(),
                        key_id: e.key_id.clone(),
                        iv: B64.encode(e.iv),
                    }),
                    batch: self.batch.as_ref().map(|b| BatchJson {
                        root: B64.encode(b.root().as_bytes()),
                        count: b.count(),
                        index: b.index(),
                        proof: B64.encode(b.proof().to_bytes()),
                    }),
                },
                policy: PolicyJson {
                    priority: h.policy.priority,
                    qos: h.policy.qos,
                    max_latency: h.policy.max_latency,
                    classification: (h.policy.classification.as_ref())
                        .map(|l| l.as_str().to_owned()),
                },
                metadata: MetadataJson {
                    content_type: h.metadata.content_type.clone(),
                    content_encoding: h
                        .metadata
                        .content_encoding
                        .as_ref()
                        .map(|l| l.as_str().to_owned()),
                    schema_id: h.metadata.schema_id.as_ref().map(|l| l.as_str().to_owned()),
                    topic: h.metadata.topic.clone(),
                    properties: PropertiesJson::show(&self.properties),
                },
            },
            sender: self.sender.as_ref().map(|s| SenderJson {
                subject: s.subject.clone(),
                roles: s.roles.clone(),
                attributes: s.attributes.clone(),
                expires: s.expires,
                credential: s.credential.clone(),
            }),
            message,
            message_encoding: message_encoding.map(str::to_owned),
        }
    }

    /// Reads a spec-layout JSON envelope.
    pub fn from_json(text: &str) -> Result<Self, JsonError> {
        let doc: EnvelopeJson = serde_json::from_str(text)?;
        let f = doc.federation;
        let flags = f
            .routing
            .flags
            .iter()
            .try_fold(Flags::empty(), |acc, name| {
                Flags::from_name(name)
                    .map(|fl| acc.with(fl))
                    .map_err(|e| field("routing.flags", e))
            })?;
        // Empty: an envelope handed over before its batch head (`to_json_string_unproven`);
        // it reads with an all-zero signature, which verifies under no key.
        let signature: [u8; SIGNATURE_LEN] = if f.security.signature.is_empty() {
            [0; SIGNATURE_LEN]
        } else {
            let signature = decode_b64("security.signature", &f.security.signature)?;
            signature.as_slice().try_into().map_err(|_| {
                field(
                    "security.signature",
                    format!("is {} bytes, not {SIGNATURE_LEN}", signature.len()),
                )
            })?
        };
        let encryption = f.security.encryption.map(parse_encryption).transpose()?;
        let batch = f.security.batch.map(parse_batch).transpose()?;
        let label = |name, v: Option<String>| {
            v.map(|s| Label::parse(name, &s).map_err(|e| field(name, e)))
                .transpose()
        };
        if f.routing.path.is_empty() {
            return Err(field("routing.path", "must name at least the source mesh"));
        }
        let content_type = f.metadata.content_type;
        let message = read_message(&content_type, &doc.message, doc.message_encoding.as_deref())?;
        let properties = f
            .metadata
            .properties
            .map(PropertiesJson::read)
            .transpose()?
            .unwrap_or_default();
        let sender = doc
            .sender
            .map(|s| {
                let sender = Sender {
                    subject: s.subject,
                    roles: s.roles,
                    attributes: s.attributes,
                    expires: s.expires,
                    credential: s.credential,
                };
                sender.validate().map(|()| sender)
            })
            .transpose()
            .map_err(JsonError::Sender)?;
        Ok(Self {
            header: Header {
                version: f.version,
                id: f.id,
                timestamp: f.timestamp,
                source: Source {
                    mesh: f.source_mesh.id,
                    gateway: f.source_mesh.gateway_id,
                },
                destination: Destination {
                    mesh: f.destination_mesh.id,
                    gateway: f.destination_mesh.gateway_id,
                },
                flags,
                federation_id: f.security.federation_id,
                agreement_version: f.security.agreement_version,
                certificate: read_certificate(&f.security.certificate)?,
                encryption,
                policy: DeliveryPolicy {
                    priority: f.policy.priority,
                    qos: f.policy.qos,
                    max_latency: f.policy.max_latency,
                    classification: label("policy.classification", f.policy.classification)?,
                },
                metadata: Metadata {
                    topic: f.metadata.topic,
                    content_type,
                    content_encoding: label(
                        "metadata.content_encoding",
                        f.metadata.content_encoding,
                    )?,
                    schema_id: label("metadata.schema_id", f.metadata.schema_id)?,
                },
            },
            hop: Hop {
                path: f.routing.path,
                ttl: f.routing.ttl,
                hops: f.routing.hops,
            },
            signature: Signature(signature),
            message,
            sender,
            properties,
            batch,
        })
    }
}

fn parse_encryption(e: EncryptionJson) -> Result<Encryption, JsonError> {
    if e.algorithm != Cipher::Aes256Gcm.name() {
        return Err(field(
            "security.encryption.algorithm",
            format!("{:?} is not \"AES-256-GCM\"", e.algorithm),
        ));
    }
    let iv = decode_b64("security.encryption.iv", &e.iv)?;
    let iv: Iv = iv.as_slice().try_into().map_err(|_| {
        field(
            "security.encryption.iv",
            format!("is {} bytes, not 12", iv.len()),
        )
    })?;
    Ok(Encryption {
        cipher: Cipher::Aes256Gcm,
        key_id: e.key_id,
        iv,
    })
}

fn parse_batch(b: BatchJson) -> Result<BatchProof, JsonError> {
    let root = decode_b64("security.batch.root", &b.root)?;
    let root = TreeHash::try_from(root.as_slice()).map_err(|_| {
        field(
            "security.batch.root",
            format!("is {} bytes, not {HASH_LEN}", root.len()),
        )
    })?;
    let proof = decode_b64("security.batch.proof", &b.proof)?;
    // Say which field is wrong in the JSON's own terms before the shape checks of `from_parts`.
    if b.count == 0 || b.count as usize > SignedBatch::MAX_LEN {
        return Err(field(
            "security.batch.count",
            format!("{} is not between 1 and {}", b.count, SignedBatch::MAX_LEN),
        ));
    }
    if b.index >= b.count {
        return Err(field(
            "security.batch.index",
            format!("{} is not below the count {}", b.index, b.count),
        ));
    }
    if let Some(hashes) = merkle::path_len(u64::from(b.index), u64::from(b.count))
        && proof.len() != hashes * HASH_LEN
    {
        return Err(field(
            "security.batch.proof",
            format!(
                "is {} bytes, but leaf {} of a batch of {} needs {hashes} hashes of {HASH_LEN} \
                 bytes ({} bytes)",
                proof.len(),
                b.index,
                b.count,
                hashes * HASH_LEN
            ),
        ));
    }
    BatchProof::from_parts(root, b.count, b.index, &proof).map_err(|e| match e {
        BatchError::InvalidField { reason, .. } => field("security.batch.count", reason),
        BatchError::IndexOutOfRange { .. } => field("security.batch.index", e),
        other => field("security.batch.proof", other),
    })
}

/// `security.certificate`: the DER in base64, or the digest where the DER is not known (an
/// envelope as a link carries it, before the link's announcement filled it in), as
/// [`SignerCertificate::digest_name`] shows it.
fn show_certificate(c: &SignerCertificate) -> String {
    match c.der() {
        Some(der) => B64.encode(der),
        None => c.digest_name(),
    }
}

/// Reads `security.certificate` in either of the forms [`show_certificate`] writes.
fn read_certificate(s: &str) -> Result<SignerCertificate, JsonError> {
    const NAME: &str = "security.certificate";
    let Some(digest) = s.strip_prefix(SignerCertificate::DIGEST_PREFIX) else {
        return Ok(SignerCertificate::new(decode_b64(NAME, s)?));
    };
    let bytes = hex::decode(digest).map_err(|e| field(NAME, format!("digest is not hex: {e}")))?;
    let digest = bytes.as_slice().try_into().map_err(|_| {
        field(
            NAME,
            format!("digest is {} bytes, not a 48-byte SHA-384", bytes.len()),
        )
    })?;
    Ok(SignerCertificate::by_digest(digest))
}

fn decode_b64(name: &'static str, s: &str) -> Result<Vec<u8>, JsonError> {
    B64.decode(s)
        .map_err(|e| field(name, format!("is not base64: {e}")))
}

/// How a clear payload is shown under `message`, exactly: a JSON payload that is one JSON
/// document with nothing around it is shown as that document, as written (key order, numbers and
/// spacing kept); a text payload (or a JSON one that is not such a document, marked `text`) as a
/// string; anything else, or a JSON or text payload that is not UTF-8 (marked `base64`), as
/// base64. [`read_message`] gives back the same bytes.
fn present_message(
    ct: &ContentType,
    payload: Option<&[u8]>,
) -> (Box<RawValue>, Option<&'static str>) {
    // Invariant: `null`, and JSON strings serde_json wrote, are valid JSON.
    let raw = |text: String| {
        RawValue::from_string(text).unwrap_or_else(|e| unreachable!("JSON text: {e}"))
    };
    let string = |s: &str| {
        raw(serde_json::to_string(s).unwrap_or_else(|e| unreachable!("JSON string: {e}")))
    };
    let Some(bytes) = payload else {
        return (raw("null".to_owned()), None);
    };
    let text = std::str::from_utf8(bytes).ok();
    if ct.is_json() {
        return match text {
            Some(t)
                if !t.starts_with(|c: char| c.is_ascii_whitespace())
                    && !t.ends_with(|c: char| c.is_ascii_whitespace())
                    && serde_json::from_str::<&RawValue>(t).is_ok() =>
            {
                (raw(t.to_owned()), None)
            }
            Some(t) => (string(t), Some("text")),
            None => (string(&B64.encode(bytes)), Some("base64")),
        };
    }
    match text {
        Some(t) if ct.is_text() => (string(t), None),
        _ if ct.is_text() => (string(&B64.encode(bytes)), Some("base64")),
        _ => (string(&B64.encode(bytes)), None),
    }
}

/// The inverse of [`present_message`].
fn read_message(
    ct: &ContentType,
    message: &RawValue,
    encoding: Option<&str>,
) -> Result<Option<Vec<u8>>, JsonError> {
    let text = message.get();
    if text == "null" {
        return Ok(None);
    }
    let string = || {
        serde_json::from_str::<String>(text).map_err(|_| {
            field(
                "message",
                format!("a {ct} payload shown this way must be a string"),
            )
        })
    };
    let base64 = |s: String| {
        B64.decode(s)
            .map(Some)
            .map_err(|e| field("message", format!("{ct} payloads are base64 strings: {e}")))
    };
    match encoding {
        Some("base64") => base64(string()?),
        Some("text") => Ok(Some(string()?.into_bytes())),
        Some(other) => Err(field(
            "message_encoding",
            format!("is {other:?}; it is \"text\" or \"base64\" when present"),
        )),
        None if ct.is_json() => Ok(Some(text.as_bytes().to_vec())),
        None if ct.is_text() => Ok(Some(string()?.into_bytes())),
        None => base64(string()?),
    }
}
