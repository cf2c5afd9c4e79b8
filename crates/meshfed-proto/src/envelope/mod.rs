//! The federation envelope: what wraps every message that crosses meshes.
//!
//! There are three views of one envelope:
//! - the **model** ([`Header`], [`Hop`], [`Envelope`]): typed values, nothing unchecked;
//! - the **spec JSON** ([`json`]): the layout of the specification's "Federation Envelope", as the
//!   API, the CLI and audit exports show it;
//! - the **wire form** ([`wire::WireEnvelope`]): a CBOR frame carrying the hop fields, the signed
//!   header bytes, the SHA-384 digest of the payload, the signature, the payload and the signer's
//!   certificate — which the header names by SHA-384 digest ([`SignerCertificate`]), so on a
//!   link, where each certificate is announced once (a `SignerCertificate` frame), it is left out;
//! - the **export form** ([`export`]): the spec JSON plus, as `proof`, the envelope exactly as it
//!   crossed (CBOR, base64), so that anyone holding the source mesh's CA can check it alone.
//!
//! The signature covers `"meshfed-envelope-v1\0" ‖ header bytes ‖ SHA-384(payload)` exactly as
//! sent; nothing is re-serialised to verify. The payload is sealed with AES-256-GCM under the
//! header bytes as AAD *before* it is signed (encrypt, then sign), so a relay can verify the
//! origin without being able to read the content. Hop fields (`path`, `ttl`, `hops`) change at
//! each hop and are protected by the link's TLS, not by the signature.
//!
//! An envelope signed in a batch (DESIGN §3.4) has no signature of its own: its `signature` is the
//! batch's, over the batch's Merkle root and count, and its `batch` ([`BatchProof`]) says where it
//! sits in the batch. [`Envelope::verify`] checks either kind.

pub mod export;
pub mod json;
mod properties;
mod sender;
mod transit;
mod types;
pub mod wire;

pub use crate::batch::BatchProof;
pub use properties::{Properties, PropertiesError};
pub use sender::Sender;
pub use transit::Transit;
pub use types::{
    ContentType, EnvelopeId, Flags, InvalidValue, Label, MaxLatency, Priority, Qos, Timestamp,
    Version,
};
pub use wire::{EnvelopeError, WireEnvelope, verify_signature};

use std::sync::Arc;

use crate::batch::BatchError;
use crate::crypto::{Digest384, Iv, Signature, VerifyingKey, sha384};
use crate::id::{FederationId, KeyId, MeshId, NodeName};
use crate::topic::Topic;

/// The sending side: a mesh and the gateway that signed the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The mesh the message comes from.
    pub mesh: MeshId,
    /// The gateway that wrapped and signed it.
    pub gateway: NodeName,
}

/// The signer's certificate as an envelope names it: by the SHA-384 digest of its DER, which
/// the header bytes carry (the certificate itself crosses each link once, DESIGN §3.4), and its
/// DER where it is known (the sender's own; the receiver's once a link announced it; the JSON
/// view's). Two are equal when their digests are: the digest binds the DER.
#[derive(Clone)]
pub struct SignerCertificate {
    digest: Digest384,
    der: Option<Arc<[u8]>>,
}

impl SignerCertificate {
    /// The certificate `der`, its digest computed here — once per certificate on a thread: a
    /// reader of many envelopes meets the same few certificates again and again, so the last
    /// one made on this thread is kept and given back (DER and digest shared) when `der` is
    /// the same bytes.
    pub fn new(der: impl Into<Arc<[u8]>>) -> Self {
        thread_local! {
            static LAST: std::cell::RefCell<Option<SignerCertificate>> =
                const { std::cell::RefCell::new(None) };
        }
        let der = der.into();
        LAST.with_borrow_mut(|last| {
            if let Some(known) = last.as_ref()
                && known.der.as_deref() == Some(&*der)
            {
                return known.clone();
            }
            let made = Self {
                digest: sha384(&der),
                der: Some(der),
            };
            *last = Some(made.clone());
            made
        })
    }

    /// A certificate known by its digest alone, as the header bytes name it.
    pub fn by_digest(digest: Digest384) -> Self {
        Self { digest, der: None }
    }

    /// The SHA-384 digest of the DER.
    pub fn digest(&self) -> &Digest384 {
        &self.digest
    }

    /// What [`SignerCertificate::digest_name`] puts before the digest's hex.
    pub const DIGEST_PREFIX: &str = "sha384:";

    /// The digest as the JSON view shows a certificate it does not know: `sha384:` and hex.
    pub fn digest_name(&self) -> String {
        format!("{}{}", Self::DIGEST_PREFIX, hex::encode(self.digest))
    }

    /// The DER, if known.
    pub fn der(&self) -> Option<&Arc<[u8]>> {
        self.der.as_ref()
    }

    /// The DER, or no bytes where only the digest is known: the certificate element of the
    /// CBOR forms and the binary frames.
    pub fn der_bytes(&self) -> &[u8] {
        self.der.as_deref().unwrap_or_default()
    }

    /// Fills in the DER from `known` (the certificates a link announced, by digest) if it is not
    /// known yet.
    pub fn fill(&mut self, known: impl FnOnce(&Digest384) -> Option<Arc<[u8]>>) {
        if self.der.is_none() {
            self.der = known(&self.digest);
        }
    }
}

impl Default for SignerCertificate {
    /// No certificate yet: a message not yet signed (all-zero digest, no DER).
    fn default() -> Self {
        Self::by_digest([0; crate::crypto::DIGEST_LEN])
    }
}

impl PartialEq for SignerCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for SignerCertificate {}

impl std::fmt::Debug for SignerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SignerCertificate({}…{})",
            hex::encode(&self.digest[..8]),
            if self.der.is_some() {
                ", DER known"
            } else {
                ""
            }
        )
    }
}

/// The receiving side: a mesh and, when the sender knows it, the gateway to deliver to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The mesh the message goes to.
    pub mesh: MeshId,
    /// The gateway to deliver to; `None` lets the destination mesh choose.
    pub gateway: Option<NodeName>,
}

/// The only content cipher: AES-256-GCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-256-GCM with a 96-bit nonce and a 128-bit tag.
    Aes256Gcm,
}

impl Cipher {
    /// The spec's name, `AES-256-GCM`.
    pub fn name(self) -> &'static str {
        "AES-256-GCM"
    }
}

/// How the payload is sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    /// The cipher.
    pub cipher: Cipher,
    /// Names the content key (`ck1_…`).
    pub key_id: KeyId,
    /// The nonce, unique under that key.
    pub iv: Iv,
}

/// The delivery policy fields of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryPolicy {
    /// 0–7, 7 highest.
    pub priority: Priority,
    /// Delivery guarantee.
    pub qos: Qos,
    /// Deadline after `timestamp`; past it the message is dead-lettered.
    pub max_latency: Option<MaxLatency>,
    /// The data's classification label (`public`, `confidential`, ...), checked against the
    /// labels the agreement lets cross.
    pub classification: Option<Label>,
}

/// What the payload is and where it is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The federation topic the message is published under.
    pub topic: Topic,
    /// The payload's media type.
    pub content_type: ContentType,
    /// The payload's encoding (`utf-8`, `gzip`, ...), if any.
    pub content_encoding: Option<Label>,
    /// The payload's schema, if any.
    pub schema_id: Option<Label>,
}

/// Every signed field of an envelope: the part that is encoded once into the header bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Envelope format version.
    pub version: Version,
    /// The envelope's id.
    pub id: EnvelopeId,
    /// When the source gateway wrapped the message.
    pub timestamp: Timestamp,
    /// Who sent it.
    pub source: Source,
    /// Who it is for.
    pub destination: Destination,
    /// `reliable`, `ordered`.
    pub flags: Flags,
    /// The agreement it travels under.
    pub federation_id: FederationId,
    /// The version of that agreement in force when it was sent (stamped at transfer time; `0`
    /// before a sender stamps it). A receiver refuses another version than the one in force.
    pub agreement_version: u32,
    /// The signer's X.509 certificate, issued by the source mesh's CA: the header bytes carry
    /// its SHA-384 digest, the JSON view its DER.
    pub certificate: SignerCertificate,
    /// How the payload is sealed; `None` when the agreement allows plaintext.
    pub encryption: Option<Encryption>,
    /// Priority, QoS, deadline.
    pub policy: DeliveryPolicy,
    /// Topic and content description.
    pub metadata: Metadata,
}

/// The per-hop routing fields: changed by every relay, protected by each link's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The meshes the envelope has passed through, the source first.
    pub path: Vec<MeshId>,
    /// Hops left; an envelope that would need a hop at 0 is dropped.
    pub ttl: u8,
    /// Hops taken so far.
    pub hops: u8,
}

/// Why a hop refused to take an envelope further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HopError {
    /// The envelope already passed through this mesh.
    #[error("routing loop: mesh {0} is already in the path")]
    Loop(MeshId),
    /// The envelope has no hops left.
    #[error("ttl exhausted after {hops} hops")]
    TtlExhausted {
        /// Hops taken.
        hops: u8,
    },
}

impl Hop {
    /// Default number of hops an envelope may take.
    pub const DEFAULT_TTL: u8 = 10;

    /// The hop fields of a new envelope leaving `source`.
    pub fn origin(source: MeshId, ttl: u8) -> Self {
        Self {
            path: vec![source],
            ttl,
            hops: 0,
        }
    }

    /// Records that `mesh` took the envelope one hop further: refuses loops and exhausted ttl.
    pub fn advance(&mut self, mesh: &MeshId) -> Result<(), HopError> {
        if self.path.contains(mesh) {
            return Err(HopError::Loop(mesh.clone()));
        }
        if self.ttl == 0 {
            return Err(HopError::TtlExhausted { hops: self.hops });
        }
        self.path.push(mesh.clone());
        self.ttl -= 1;
        self.hops = self.hops.saturating_add(1);
        Ok(())
    }
}

/// The logical envelope: every field of the spec, with the payload when it is readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The signed fields.
    pub header: Header,
    /// The routing fields.
    pub hop: Hop,
    /// The origin's signature over the header bytes and the payload digest or, when `batch` is
    /// set, the batch's signature over its root and count.
    pub signature: Signature,
    /// The payload in clear; `None` when it is sealed and was not opened.
    pub message: Option<Vec<u8>>,
    /// Who sent it, from the sealed part (`identified` envelopes, opened): as delivered to a
    /// mesh's subscribers, the identity that mesh mapped it to.
    pub sender: Option<Sender>,
    /// The message's properties, from the sealed part (`properties` envelopes, opened): user
    /// properties, correlation data, reply-to. Empty when the envelope has none, or when its
    /// sealed part was not opened (then `message` is `None` too).
    pub properties: Properties,
    /// Where the envelope sits in the batch it was signed in; `None` when it was signed alone.
    pub batch: Option<BatchProof>,
}

/// Why an envelope's signature was refused: the per-message signature, or the batch it was signed
/// in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The envelope was signed alone and its signature does not verify.
    #[error(transparent)]
    Envelope(EnvelopeError),
    /// The envelope was signed in a batch, and its proof or the batch signature does not verify.
    #[error(transparent)]
    Batch(BatchError),
}

impl Envelope {
    /// Checks the signature of an envelope with these header bytes (as the origin encoded them,
    /// or [`Envelope::header_bytes`]) and payload digest under the signer's `key`: signed alone,
    /// the signature over both; signed in a batch, the proof from the envelope's leaf to the
    /// batch's root, then the batch signature over the root and the count
    /// ([`BatchProof::verify`]). The payload against the digest is the caller's check.
    pub fn verify(
        &self,
        header_bytes: &[u8],
        payload_digest: &Digest384,
        key: &VerifyingKey,
    ) -> Result<(), VerifyError> {
        match &self.batch {
            None => wire::verify_signature(header_bytes, payload_digest, &self.signature, key)
                .map_err(VerifyError::Envelope),
            Some(batch) => batch
                .verify(&self.signature, header_bytes, payload_digest, key)
                .map_err(VerifyError::Batch),
        }
    }

    /// The header bytes of this header, encoded as an origin encodes them. They are the signed
    /// bytes when the origin used this version's encoding (a header with fields of a later minor
    /// version encodes differently: keep the bytes as received where you can).
    pub fn header_bytes(&self) -> Vec<u8> {
        wire::encode_header(&self.header)
    }

    /// The SHA-384 digest of the payload as carried, when that is `message`: a clear payload.
    /// `None` when the payload is sealed (the digest covers the ciphertext) or not present.
    pub fn clear_payload_digest(&self) -> Option<Digest384> {
        if self.header.encryption.is_some() {
            return None;
        }
        self.message.as_deref().map(sha384)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_advance_appends_and_refuses_loops_and_zero_ttl() {
        let a: MeshId = "a".parse().unwrap();
        let b: MeshId = "b".parse().unwrap();
        let mut hop = Hop::origin(a.clone(), 1);
        hop.advance(&b).unwrap();
        assert_eq!((hop.path.len(), hop.ttl, hop.hops), (2, 0, 1));
        assert_eq!(hop.advance(&a), Err(HopError::Loop(a)));
        let c: MeshId = "c".parse().unwrap();
        assert_eq!(hop.advance(&c), Err(HopError::TtlExhausted { hops: 1 }));
    }
}
