//! The **export form** of an envelope (DESIGN §3.4): what a subscriber that asked for proof
//! receives, and what `meshfed envelope inspect --ca` checks alone.
//!
//! It is the spec JSON as a gateway delivers it (with the opened `message`) plus one top-level
//! member, `"proof"`: standard base64 (padded) of the CBOR of the envelope exactly as it crossed
//! the link ([`Crossed`]) — a [`ProvenEnvelope`] when it was signed in a batch (the envelope with
//! its ciphertext payload, the batch's signed head and the inclusion proof), a [`WireEnvelope`]
//! when it was signed alone. Both carry the signer's certificate (DER) beside the header, which
//! names it by SHA-384 digest.
//!
//! ```text
//! {"federation": {...}, "message": ..., "proof": "base64 of the CBOR"}
//! ```
//!
//! The signature covers the header bytes and the SHA-384 digest of the payload as carried: for
//! a sealed payload that is the ciphertext in `proof`, not the clear `message` beside it. So the
//! export form proves who sent this envelope (its header, and the ciphertext); that `message` is
//! what that ciphertext decrypts to rests on the word of the receiving gateway, which held the
//! content key. [`Exported::from_json`] refuses a JSON whose header, signature or batch position
//! is not that of the envelope in `proof`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::json::JsonError;
use super::{Envelope, EnvelopeError, EnvelopeId, Header, WireEnvelope};
use crate::batch::{BatchError, BatchProof, ProvenEnvelope};
use crate::crypto::Digest384;

/// The name of the export form's extra member.
pub const PROOF_MEMBER: &str = "proof";

/// The form in which a subscriber receives envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Form {
    /// The spec JSON (`proof=none`, the default).
    #[default]
    Spec,
    /// The export form: the spec JSON with `proof` (`proof=required`).
    Export,
}

/// An envelope exactly as it crossed a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crossed {
    /// Signed alone (`[delivery] signatures = "message"`).
    Alone(WireEnvelope),
    /// One envelope of a signed batch, with the batch's signature and its inclusion proof.
    InBatch(ProvenEnvelope),
}

/// Why the bytes in `proof` are no envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is neither a wire envelope ({alone}) nor a proven envelope ({in_batch})")]
pub struct NotCrossed {
    /// What is wrong with it as a wire envelope.
    pub alone: Box<EnvelopeError>,
    /// What is wrong with it as a proven envelope.
    pub in_batch: Box<BatchError>,
}

impl Crossed {
    /// Reads a wire envelope, else a proven one. Nothing is trusted yet.
    pub fn decode(bytes: &[u8]) -> Result<Self, NotCrossed> {
        match WireEnvelope::decode(bytes) {
            Ok(wire) => Ok(Self::Alone(wire)),
            Err(alone) => ProvenEnvelope::decode(bytes)
                .map(Self::InBatch)
                .map_err(|in_batch| NotCrossed {
                    alone: Box::new(alone),
                    in_batch: Box::new(in_batch),
                }),
        }
    }

    /// The CBOR form.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Alone(w) => w.encode(),
            Self::InBatch(p) => p.encode(),
        }
    }

    /// The signed fields.
    pub fn header(&self) -> &Header {
        match self {
            Self::Alone(w) => w.header(),
            Self::InBatch(p) => p.envelope().header(),
        }
    }

    /// The header bytes as the origin encoded them.
    pub fn header_bytes(&self) -> &[u8] {
        match self {
            Self::Alone(w) => w.header_bytes(),
            Self::InBatch(p) => p.envelope().header_bytes(),
        }
    }

    /// The SHA-384 digest of the payload the signature covers.
    pub fn payload_digest(&self) -> &Digest384 {
        match self {
            Self::Alone(w) => w.payload_digest(),
            Self::InBatch(p) => p.envelope().payload_digest(),
        }
    }

    /// The payload as carried: ciphertext and tag when sealed.
    pub fn payload(&self) -> &[u8] {
        match self {
            Self::Alone(w) => w.payload(),
            Self::InBatch(p) => p.envelope().payload(),
        }
    }

    /// The logical envelope, with `message` when the caller has the clear payload.
    pub fn to_envelope(&self, message: Option<Vec<u8>>) -> Envelope {
        match self {
            Self::Alone(w) => w.to_envelope(message),
            Self::InBatch(p) => p.to_envelope(message),
        }
    }
}

/// Appends the `proof` member holding `crossed_cbor` to `spec_json`, the spec-layout JSON text
/// of the same envelope ([`Envelope::to_json_string`]): the export form. `None` when
/// `spec_json` is not a JSON object's text.
pub fn export_json(spec_json: &str, crossed_cbor: &[u8]) -> Option<String> {
    let body = spec_json.trim_end().strip_suffix('}')?;
    if !body.trim_start().starts_with('{') {
        return None;
    }
    let encoded = B64.encode(crossed_cbor);
    let mut out = String::with_capacity(body.len() + encoded.len() + 16);
    out.push_str(body);
    out.push_str(",\"");
    out.push_str(PROOF_MEMBER);
    out.push_str("\":\"");
    out.push_str(&encoded);
    out.push_str("\"}");
    Some(out)
}

/// A JSON envelope as read: the spec layout, with the envelope that crossed when the JSON is the
/// export form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The envelope the JSON shows (with its opened message).
    pub envelope: Envelope,
    /// The envelope in `proof`, checked to be the same envelope as the JSON's; `None` when the
    /// JSON has no `proof`.
    pub crossed: Option<Crossed>,
}

/// Why a JSON envelope (in the export form or not) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The JSON apart from `proof` is not a spec-layout envelope.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// `proof` is not a string of standard base64.
    #[error("envelope JSON member proof: {0}")]
    ProofNotBase64(String),
    /// `proof` decodes to bytes that are no envelope.
    #[error("envelope JSON member proof {0}")]
    ProofNotAnEnvelope(#[source] NotCrossed),
    /// The JSON shows another envelope than the one in `proof`.
    #[error(
        "the JSON's {field} is not that of the envelope in proof ({detail}): they are not the \
         same envelope, or one of them was altered"
    )]
    Mismatch {
        /// The JSON member that differs (`federation.id`, `federation.security.signature`, ...).
        field: &'static str,
        /// The two values, or what differs.
        detail: String,
    },
}

impl Exported {
    /// Reads a spec-layout JSON envelope, in the export form or not. In the export form the
    /// envelope in `proof` must be the JSON's: the same header (id and every signed field), the
    /// same signature and the same batch position. Its signature is not checked here.
    pub fn from_json(text: &str) -> Result<Self, ExportError> {
        let mut doc: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(JsonError::Syntax)?;
        let Some(proof) = doc.remove(PROOF_MEMBER) else {
            return Ok(Self {
                envelope: Envelope::from_json(text)?,
                crossed: None,
            });
        };
        let proof = proof.as_str().ok_or_else(|| {
            ExportError::ProofNotBase64(format!("is {proof}, not a base64 string"))
        })?;
        let bytes = B64
            .decode(proof)
            .map_err(|e| ExportError::ProofNotBase64(format!("is not standard base64: {e}")))?;
        let crossed = Crossed::decode(&bytes).map_err(ExportError::ProofNotAnEnvelope)?;
        // Invariant: a map of JSON values serializes.
        let rest = serde_json::to_string(&doc).map_err(JsonError::Syntax)?;
        let envelope = Envelope::from_json(&rest)?;
        same_envelope(&envelope, &crossed)?;
        Ok(Self {
            envelope,
            crossed: Some(crossed),
        })
    }
}

/// Refuses a JSON `envelope` that is not the envelope that `crossed`.
fn same_envelope(envelope: &Envelope, crossed: &Crossed) -> Result<(), ExportError> {
    let ours = crossed.header();
    if envelope.header.id != ours.id {
        return Err(mismatch("federation.id", envelope.header.id, ours.id));
    }
    if let Some(field) = differing_field(&envelope.header, ours) {
        return Err(ExportError::Mismatch {
            field,
            detail: "the same id, another value".to_owned(),
        });
    }
    let theirs = crossed.to_envelope(None);
    if envelope.signature != theirs.signature {
        return Err(ExportError::Mismatch {
            field: "federation.security.signature",
            detail: "another signature".to_owned(),
        });
    }
    if envelope.batch != theirs.batch {
        return Err(ExportError::Mismatch {
            field: "federation.security.batch",
            detail: batch_detail(envelope.batch.as_ref(), theirs.batch.as_ref()),
        });
    }
    Ok(())
}

/// The JSON name of the first signed field in which `json` and `proof` differ.
fn differing_field(json: &Header, proof: &Header) -> Option<&'static str> {
    let fields: [(&'static str, bool); 10] = [
        ("federation.version", json.version == proof.version),
        ("federation.timestamp", json.timestamp == proof.timestamp),
        ("federation.source_mesh", json.source == proof.source),
        (
            "federation.destination_mesh",
            json.destination == proof.destination,
        ),
        ("federation.routing.flags", json.flags == proof.flags),
        (
            "federation.security.federation_id",
            json.federation_id == proof.federation_id,
        ),
        (
            "federation.security.certificate",
            json.certificate == proof.certificate,
        ),
        (
            "federation.security.encryption",
            json.encryption == proof.encryption,
        ),
        ("federation.policy", json.policy == proof.policy),
        ("federation.metadata", json.metadata == proof.metadata),
    ];
    fields
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(name, _)| name)
        // Every field is listed above; should one be added later, the header still differs.
        .or_else(|| (json != proof).then_some("federation"))
}

fn mismatch(field: &'static str, json: EnvelopeId, proof: EnvelopeId) -> ExportError {
    ExportError::Mismatch {
        field,
        detail: format!("{json} in the JSON, {proof} in proof"),
    }
}

fn batch_detail(json: Option<&BatchProof>, proof: Option<&BatchProof>) -> String {
    let show = |b: Option<&BatchProof>| match b {
        Some(b) => format!("leaf {} of a batch of {}", b.index(), b.count()),
        None => "signed alone".to_owned(),
    };
    format!("{} in the JSON, {} in proof", show(json), show(proof))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{SignedBatch, UnsignedEnvelope};
    use crate::crypto::{ContentSecret, KeyEpoch, SigningKey};
    use crate::envelope::{
        ContentType, DeliveryPolicy, Destination, Flags, Hop, Metadata, Priority, Qos, Source,
        Timestamp, Version,
    };

    fn header(n: u8) -> Header {
        Header {
            version: Version::CURRENT,
            id: EnvelopeId::new(Timestamp(1_621_234_567_890), [n; 10]),
            timestamp: Timestamp(1_621_234_567_890),
            source: Source {
                mesh: "plant-a".parse().unwrap(),
                gateway: "gw1".parse().unwrap(),
            },
            destination: Destination {
                mesh: "supplier-b".parse().unwrap(),
                gateway: None,
            },
            flags: Flags::RELIABLE,
            federation_id: "fed_plant-a_supplier-b".parse().unwrap(),
            agreement_version: 1,
            certificate: crate::envelope::SignerCertificate::new(vec![0x30, 0x82, 1, 2, 3, 4]),
            encryption: None,
            policy: DeliveryPolicy {
                priority: Priority::try_from(2).unwrap(),
                qos: Qos::AtLeastOnce,
                max_latency: None,
                classification: None,
            },
            metadata: Metadata {
                topic: "line-3/temperature".parse().unwrap(),
                content_type: ContentType::json(),
                content_encoding: None,
                schema_id: None,
            },
        }
    }

    /// A batch of three sealed envelopes, signed.
    fn batch() -> SignedBatch {
        let secret = ContentSecret::derive(b"ecdh shared secret", b"fed_test");
        let mut sealer = secret
            .sealer(&"plant-a".parse().unwrap(), KeyEpoch([9; 16]))
            .unwrap();
        let hop = Hop::origin("plant-a".parse().unwrap(), Hop::DEFAULT_TTL);
        let envelopes = (0..3)
            .map(|i| {
                UnsignedEnvelope::seal(header(i), hop.clone(), br#"{"c":1}"#, &mut sealer).unwrap()
            })
            .collect();
        SignedBatch::sign(envelopes, &SigningKey::generate().unwrap()).unwrap()
    }

    /// The export form of envelope 1 of [`batch`], as a gateway writes it.
    fn exported() -> (String, ProvenEnvelope) {
        let proven = batch().proof(1).unwrap();
        let spec = proven
            .to_envelope(Some(br#"{"c":1}"#.to_vec()))
            .to_json_string();
        let text = export_json(&spec, &proven.encode()).unwrap();
        (text, proven)
    }

    #[test]
    fn export_form_reads_back_as_the_json_envelope_and_the_envelope_that_crossed() {
        let (text, proven) = exported();
        let read = Exported::from_json(&text).unwrap();
        assert_eq!(read.crossed, Some(Crossed::InBatch(proven.clone())));
        assert_eq!(read.envelope.message.as_deref(), Some(&br#"{"c":1}"#[..]));
        assert_eq!(read.envelope.header, *proven.envelope().header());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["proof"].is_string(), "{text}");
        assert!(v["federation"].is_object(), "{text}");
    }

    #[test]
    fn spec_json_without_proof_reads_as_before() {
        let (_, proven) = exported();
        let spec = proven.to_envelope(None).to_json_string();
        let read = Exported::from_json(&spec).unwrap();
        assert_eq!(read.crossed, None);
        assert_eq!(read.envelope, proven.to_envelope(None));
    }

    #[test]
    fn parts_encode_as_the_assembled_proven_envelope() {
        let b = batch();
        let receipt_sig = b.signature().clone();
        let proven = b.proof(2).unwrap();
        let parts =
            ProvenEnvelope::encode_parts(&receipt_sig, proven.proof(), proven.envelope()).unwrap();
        assert_eq!(parts, proven.encode());
        // A member of another batch size does not fit this proof.
        let other = batch().proof(0).unwrap();
        let small = SignedBatch::sign(
            vec![other.into_envelope()],
            &SigningKey::generate().unwrap(),
        )
        .unwrap();
        let err =
            ProvenEnvelope::encode_parts(small.signature(), proven.proof(), proven.envelope())
                .unwrap_err();
        assert!(matches!(err, BatchError::IndexOutOfRange { .. }), "{err}");
    }

    #[test]
    fn proof_of_another_envelope_is_a_mismatch_naming_both_ids() {
        let (text, _) = exported();
        let other = batch().proof(2).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["proof"] = B64.encode(other.encode()).into();
        let err = Exported::from_json(&v.to_string()).unwrap_err();
        assert!(
            matches!(
                err,
                ExportError::Mismatch {
                    field: "federation.id",
                    ..
                }
            ),
            "{err}"
        );
        let id = |h: &Header| h.id.to_string();
        assert_eq!(
            err.to_string(),
            format!(
                "the JSON's federation.id is not that of the envelope in proof ({} in the JSON, \
                 {} in proof): they are not the same envelope, or one of them was altered",
                id(&header(1)),
                id(&header(2))
            )
        );
    }

    #[test]
    fn json_header_changed_beside_its_proof_is_a_mismatch_naming_the_field() {
        let (text, _) = exported();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["federation"]["metadata"]["topic"] = "line-4/temperature".into();
        let err = Exported::from_json(&v.to_string()).unwrap_err();
        assert!(
            matches!(
                err,
                ExportError::Mismatch {
                    field: "federation.metadata",
                    ..
                }
            ),
            "{err}"
        );
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["federation"]["security"]["batch"]["index"] = 0.into();
        let err = Exported::from_json(&v.to_string()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the JSON's federation.security.batch"),
            "{err}"
        );
    }

    #[test]
    fn proof_that_is_not_base64_or_not_an_envelope_is_refused_naming_proof() {
        let (text, _) = exported();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["proof"] = "not base64!".into();
        let err = Exported::from_json(&v.to_string()).unwrap_err();
        assert!(matches!(err, ExportError::ProofNotBase64(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with("envelope JSON member proof: is not standard base64"),
            "{err}"
        );
        v["proof"] = 7.into();
        let err = Exported::from_json(&v.to_string()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "envelope JSON member proof: is 7, not a base64 string"
        );
        v["proof"] = B64.encode(b"garbage").into();
        let err = Exported::from_json(&v.to_string()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("envelope JSON member proof is neither a wire envelope"),
            "{err}"
        );
    }

    #[test]
    fn export_json_needs_an_object() {
        assert_eq!(export_json("[1]", b"x"), None);
        assert_eq!(
            export_json("{\"a\":1}", b"x").as_deref(),
            Some("{\"a\":1,\"proof\":\"eA==\"}")
        );
    }
}
