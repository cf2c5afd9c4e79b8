//! The envelope's CBOR wire form, and how it is sealed, signed, verified and opened.
//!
//! A wire envelope is a CBOR array
//! `[path, ttl, hops, header, digest, signature, payload, certificate]`: the three hop fields,
//! then the header bytes (a CBOR map, encoded once by the origin and never again), the SHA-384
//! digest of the payload, the 96-byte ECDSA P-384 signature, the payload (AES-256-GCM ciphertext
//! with its tag, or clear bytes where the agreement allows) and the signer's certificate. The
//! header names the certificate by its SHA-384 digest; on a link the certificate is announced
//! once and `certificate` is empty ([`WireEnvelope::encode_on_link`]), while a file or an export
//! carries its DER, so the envelope can be checked alone ([`WireEnvelope::encode`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};

use super::{
    Cipher, ContentType, DeliveryPolicy, Destination, Encryption, Envelope, EnvelopeId, Flags,
    Header, Hop, Label, MaxLatency, Metadata, Priority, Properties, Qos, SignerCertificate, Source,
    Timestamp, Version,
};
use crate::batch::UnsignedEnvelope;
use crate::cbor::exact_array;
use crate::crypto::{
    CryptoError, DIGEST_LEN, Digest384, Iv, Opener, SIGNATURE_LEN, Sealer, Signature, SigningKey,
    VerifyingKey, sha384,
};
use crate::id::{KeyId, MeshId};

/// Domain separation for envelope signatures, so they can never be taken for another signature.
const SIGNING_CONTEXT: &[u8] = b"meshfed-envelope-v1\0";
/// Longest path an envelope may carry (one entry per hop, and ttl is a byte).
pub(crate) const MAX_PATH: usize = 256;

/// Why an envelope was refused. Each variant names the part that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The bytes are not the CBOR array of a wire envelope.
    #[error("envelope frame is malformed: {0}")]
    MalformedFrame(String),
    /// The header bytes are not a CBOR header.
    #[error("envelope header is malformed: {0}")]
    MalformedHeader(String),
    /// A field decoded but broke its rule; `field` is its name in the spec's JSON.
    #[error("envelope field {field}: {reason}")]
    InvalidField {
        /// The field, as the spec's JSON names it (`policy.priority`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The signature does not verify over the header bytes and the payload digest.
    #[error(
        "envelope signature does not verify (the header or the signature was altered, or another key signed it)"
    )]
    BadSignature,
    /// The payload does not match the digest the signature covers.
    #[error(
        "envelope payload does not match its signed SHA-384 digest (the payload, ciphertext or tag was altered)"
    )]
    PayloadAltered,
    /// AES-GCM refused the payload under the right key.
    #[error(
        "envelope payload does not decrypt under content key {0}: the authentication tag check failed"
    )]
    DecryptionFailed(KeyId),
    /// The payload is sealed under another key than the one offered.
    #[error("envelope is sealed under content key {found}, not {offered}")]
    WrongKey {
        /// The key the envelope names.
        found: KeyId,
        /// The key that was offered.
        offered: KeyId,
    },
    /// Opening was asked of an envelope that is not encrypted.
    #[error("envelope payload is not encrypted")]
    NotEncrypted,
    /// The payload is encrypted but was read as if clear.
    #[error("envelope payload is encrypted under content key {0}")]
    Encrypted(KeyId),
    /// The sealer's key belongs to another sending mesh than the header names.
    #[error("the content key is for mesh {sealer}, but the envelope's source is {named}")]
    SenderMismatch {
        /// The sealer's mesh.
        sealer: MeshId,
        /// The header's source mesh.
        named: MeshId,
    },
    /// Sealing or signing failed.
    #[error("sealing the envelope failed: {0}")]
    Crypto(#[from] CryptoError),
}

/// The header as it is encoded in the header bytes. Short keys keep it small; unknown keys are
/// ignored so that minor versions can add fields.
#[derive(Serialize, Deserialize)]
struct WireHeader {
    v: [u8; 2],
    id: ByteBuf,
    ts: u64,
    src: String,
    sgw: String,
    dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dgw: Option<String>,
    fl: u8,
    fed: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    agr: u32,
    /// The signer certificate's SHA-384 digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crt: Option<ByteBuf>,
    /// The signer certificate's DER, as envelopes carried it before they named it by digest:
    /// read (headers stored or signed that way stay readable), never written.
    #[serde(default, skip_serializing)]
    cert: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enc: Option<WireEncryption>,
    pri: u8,
    qos: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lat: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cls: Option<String>,
    top: String,
    ct: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sch: Option<String>,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
struct WireEncryption {
    alg: u8,
    kid: String,
    iv: ByteBuf,
}

// The outer array as read: `[path, ttl, hops, header, digest, signature, payload, certificate]`.
exact_array! {
    struct WireIn(Vec<String>, u8, u8, ByteBuf, ByteBuf, ByteBuf, ByteBuf, ByteBuf);
}

/// The outer array as written, borrowing every part.
#[derive(Serialize)]
struct WireOut<'a>(
    Vec<&'a str>,
    u8,
    u8,
    &'a Bytes,
    &'a Bytes,
    &'a Bytes,
    &'a Bytes,
    &'a Bytes,
);

const CIPHER_AES_256_GCM: u8 = 1;

/// An envelope as it travels: the header bytes kept exactly as the origin signed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireEnvelope {
    /// The hop fields: the only part a relay changes.
    pub hop: Hop,
    header: Header,
    header_bytes: Vec<u8>,
    digest: Digest384,
    signature: Signature,
    payload: Vec<u8>,
}

impl WireEnvelope {
    /// Seals `plaintext` under the sealer's content key with the header bytes as AAD, then signs.
    /// `header.encryption` is filled in here; whatever it held is replaced.
    pub fn seal(
        header: Header,
        hop: Hop,
        plaintext: &[u8],
        sealer: &mut Sealer,
        signer: &SigningKey,
    ) -> Result<Self, EnvelopeError> {
        UnsignedEnvelope::seal(header, hop, plaintext, sealer)?.sign(signer)
    }

    /// Signs a clear payload (for agreements whose security policy allows it).
    pub fn sign_clear(
        header: Header,
        hop: Hop,
        payload: Vec<u8>,
        signer: &SigningKey,
    ) -> Result<Self, EnvelopeError> {
        UnsignedEnvelope::clear(header, hop, payload).sign(signer)
    }

    /// Signs sealed (or clear) parts whose payload digest is `digest`: the per-message signature.
    pub(crate) fn sign(
        header: Header,
        header_bytes: Vec<u8>,
        hop: Hop,
        payload: Vec<u8>,
        digest: Digest384,
        signer: &SigningKey,
    ) -> Result<Self, EnvelopeError> {
        let signature = signer.sign(&signing_input(&header_bytes, &digest))?;
        Ok(Self {
            hop,
            header,
            header_bytes,
            digest,
            signature,
            payload,
        })
    }

    /// Checks the origin's signature over the header bytes and the payload digest, then the
    /// payload against that digest. Relays can do this without the content key.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), EnvelopeError> {
        verify_signature(&self.header_bytes, &self.digest, &self.signature, key)?;
        if sha384(&self.payload) != self.digest {
            return Err(EnvelopeError::PayloadAltered);
        }
        Ok(())
    }

    /// Decrypts the payload. Call [`WireEnvelope::verify`] first: opening alone proves only that
    /// someone holding the content key sealed it.
    pub fn open(&self, opener: &Opener) -> Result<Vec<u8>, EnvelopeError> {
        open_payload(&self.header, &self.header_bytes, &self.payload, opener)
    }

    /// The payload of an envelope that is not encrypted.
    pub fn clear_payload(&self) -> Result<&[u8], EnvelopeError> {
        clear_payload(&self.header, &self.payload)
    }

    /// The signed fields.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Fills in the signer certificate's DER from `known` (by digest) where the envelope names
    /// it by digest alone: the parsed header's view, not the signed bytes.
    pub fn fill_certificate(&mut self, known: impl FnOnce(&Digest384) -> Option<Arc<[u8]>>) {
        self.header.certificate.fill(known);
    }

    /// The header bytes exactly as signed.
    pub fn header_bytes(&self) -> &[u8] {
        &self.header_bytes
    }

    /// The SHA-384 digest of the payload that the signature covers.
    pub fn payload_digest(&self) -> &Digest384 {
        &self.digest
    }

    /// The origin's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The payload as carried: ciphertext and tag when sealed.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The logical envelope, with `message` when the caller has the clear payload.
    pub fn to_envelope(&self, message: Option<Vec<u8>>) -> Envelope {
        Envelope {
            header: self.header.clone(),
            hop: self.hop.clone(),
            signature: self.signature,
            message,
            sender: None,
            properties: Properties::default(),
            batch: None,
        }
    }

    /// Appends the wire form to `out`, with the signer's certificate when it is known: what
    /// can be checked alone (a file, an export).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.write(self.header.certificate.der_bytes(), out);
    }

    /// The wire form, with the signer's certificate when it is known.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_bytes.len() + self.payload.len() + 1024);
        self.encode_into(&mut out);
        out
    }

    /// The wire form as it crosses a link: the certificate left out (the link announced it).
    pub fn encode_on_link(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_bytes.len() + self.payload.len() + 256);
        self.write(&[], &mut out);
        out
    }

    fn write(&self, certificate: &[u8], out: &mut Vec<u8>) {
        let outer = WireOut(
            self.hop.path.iter().map(MeshId::as_str).collect(),
            self.hop.ttl,
            self.hop.hops,
            Bytes::new(&self.header_bytes),
            Bytes::new(&self.digest),
            Bytes::new(&self.signature.0),
            Bytes::new(&self.payload),
            Bytes::new(certificate),
        );
        // Invariant: encoding plain structs into a Vec cannot fail (no IO, no non-string keys).
        ciborium::into_writer(&outer, out).unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
    }

    /// Parses a wire envelope; every field is checked, nothing is trusted yet (call `verify`).
    /// A certificate it carries must be the one its header names.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let WireIn(path, ttl, hops, header_bytes, digest, signature, payload, certificate) =
            ciborium::from_reader(bytes)
                .map_err(|e| EnvelopeError::MalformedFrame(e.to_string()))?;
        if path.is_empty() || path.len() > MAX_PATH {
            return Err(invalid(
                "routing.path",
                format!("has {} entries, must have 1 to {MAX_PATH}", path.len()),
            ));
        }
        let path = path
            .into_iter()
            .map(|m| m.parse::<MeshId>().map_err(|e| invalid("routing.path", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let digest: Digest384 = digest.as_slice().try_into().map_err(|_| {
            EnvelopeError::MalformedFrame(format!(
                "payload digest is {} bytes, not {DIGEST_LEN}",
                digest.len()
            ))
        })?;
        let signature: [u8; SIGNATURE_LEN] = signature.as_slice().try_into().map_err(|_| {
            invalid(
                "security.signature",
                format!("is {} bytes, not {SIGNATURE_LEN}", signature.len()),
            )
        })?;
        let header_bytes = header_bytes.into_vec();
        let mut header = decode_header(&header_bytes)?;
        carried_certificate(&mut header, certificate.into_vec())?;
        Ok(Self {
            hop: Hop { path, ttl, hops },
            header,
            header_bytes,
            digest,
            signature: Signature(signature),
            payload: payload.into_vec(),
        })
    }
}

/// Fills in the certificate an envelope carried (`der`, empty if none) after checking it is the
/// one `header` names by digest.
pub(crate) fn carried_certificate(header: &mut Header, der: Vec<u8>) -> Result<(), EnvelopeError> {
    if der.is_empty() {
        return Ok(());
    }
    let carried = SignerCertificate::new(der);
    if carried != header.certificate {
        return Err(invalid(
            "security.certificate",
            "the certificate carried is not the one the header names by digest",
        ));
    }
    header.certificate = carried;
    Ok(())
}

/// Decrypts a sealed payload under `opener`, the header bytes as AAD; shared by single and
/// batch-signed envelopes.
pub(crate) fn open_payload(
    header: &Header,
    header_bytes: &[u8],
    payload: &[u8],
    opener: &Opener,
) -> Result<Vec<u8>, EnvelopeError> {
    let enc = header
        .encryption
        .as_ref()
        .ok_or(EnvelopeError::NotEncrypted)?;
    if &enc.key_id != opener.key_id() {
        return Err(EnvelopeError::WrongKey {
            found: enc.key_id.clone(),
            offered: opener.key_id().clone(),
        });
    }
    opener
        .open(enc.iv, header_bytes, payload)
        .map_err(|_| EnvelopeError::DecryptionFailed(enc.key_id.clone()))
}

/// The payload of an envelope that is not encrypted.
pub(crate) fn clear_payload<'a>(
    header: &Header,
    payload: &'a [u8],
) -> Result<&'a [u8], EnvelopeError> {
    match &header.encryption {
        Some(enc) => Err(EnvelopeError::Encrypted(enc.key_id.clone())),
        None => Ok(payload),
    }
}

/// The bytes the signature covers.
/// Checks a per-message signature over `header_bytes` and `digest`.
/// Checks an envelope's own signature (`WireEnvelope::signature`) by `key` over its header bytes
/// and payload digest: what a proof of an envelope signed alone carries instead of the envelope.
pub fn verify_signature(
    header_bytes: &[u8],
    digest: &Digest384,
    signature: &Signature,
    key: &VerifyingKey,
) -> Result<(), EnvelopeError> {
    key.verify(&signing_input(header_bytes, digest), signature)
        .map_err(|_| EnvelopeError::BadSignature)
}

fn signing_input(header_bytes: &[u8], digest: &Digest384) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + header_bytes.len() + DIGEST_LEN);
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(header_bytes);
    msg.extend_from_slice(digest);
    msg
}

fn invalid(field: &'static str, reason: impl std::fmt::Display) -> EnvelopeError {
    EnvelopeError::InvalidField {
        field,
        reason: reason.to_string(),
    }
}

impl Header {
    /// The header's CBOR encoding, as envelopes carry it (for storing a header outside an
    /// envelope; an envelope keeps the bytes it was signed over).
    pub fn encode(&self) -> Vec<u8> {
        encode_header(self)
    }

    /// Parses a header encoding; every field is checked.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        decode_header(bytes)
    }
}

/// The header bytes of `h`, encoded once and then kept (also by [`crate::batch`]).
pub(crate) fn encode_header(h: &Header) -> Vec<u8> {
    let wire = WireHeader {
        v: [h.version.major, h.version.minor],
        id: ByteBuf::from(h.id.0.to_vec()),
        ts: h.timestamp.0,
        src: h.source.mesh.to_string(),
        sgw: h.source.gateway.to_string(),
        dst: h.destination.mesh.to_string(),
        dgw: h.destination.gateway.as_ref().map(ToString::to_string),
        fl: h.flags.bits(),
        fed: h.federation_id.to_string(),
        agr: h.agreement_version,
        crt: Some(ByteBuf::from(h.certificate.digest().to_vec())),
        cert: None,
        enc: h.encryption.as_ref().map(|e| WireEncryption {
            alg: CIPHER_AES_256_GCM,
            kid: e.key_id.to_string(),
            iv: ByteBuf::from(e.iv.to_vec()),
        }),
        pri: h.policy.priority.get(),
        qos: h.policy.qos.level(),
        lat: h.policy.max_latency.map(MaxLatency::millis),
        cls: h
            .policy
            .classification
            .as_ref()
            .map(|l| l.as_str().to_owned()),
        top: h.metadata.topic.to_string(),
        ct: h.metadata.content_type.to_string(),
        ce: h
            .metadata
            .content_encoding
            .as_ref()
            .map(|l| l.as_str().to_owned()),
        sch: h.metadata.schema_id.as_ref().map(|l| l.as_str().to_owned()),
    };
    let mut out = Vec::with_capacity(320);
    // Invariant: encoding plain structs into a Vec cannot fail.
    ciborium::into_writer(&wire, &mut out).unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
    out
}

/// Parses header bytes; every field is checked (also used by [`crate::batch`]). The common
/// case is read by hand, borrowing every string from `bytes` ([`fields`]); anything else —
/// a missing or repeated field, an unexpected type, a tag — is decoded by ciborium, which
/// accepts the same headers and names what is wrong with the others.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header, EnvelopeError> {
    match fields(bytes) {
        Some(f) => header(f),
        None => decode_header_with_ciborium(bytes),
    }
}

/// [`decode_header`]'s way for any header: ciborium into [`WireHeader`].
fn decode_header_with_ciborium(bytes: &[u8]) -> Result<Header, EnvelopeError> {
    let w: WireHeader =
        ciborium::from_reader(bytes).map_err(|e| EnvelopeError::MalformedHeader(e.to_string()))?;
    header(Fields {
        v: w.v,
        id: &w.id,
        ts: w.ts,
        src: &w.src,
        sgw: &w.sgw,
        dst: &w.dst,
        dgw: w.dgw.as_deref(),
        fl: w.fl,
        fed: &w.fed,
        agr: w.agr,
        crt: w.crt.as_deref().map(Vec::as_slice),
        cert: w.cert.as_deref().map(Vec::as_slice),
        enc: w.enc.as_ref().map(|e| EncryptionFields {
            alg: e.alg,
            kid: &e.kid,
            iv: &e.iv,
        }),
        pri: w.pri,
        qos: w.qos,
        lat: w.lat,
        cls: w.cls.as_deref(),
        top: &w.top,
        ct: &w.ct,
        ce: w.ce.as_deref(),
        sch: w.sch.as_deref(),
    })
}

/// A header's fields as read, borrowed from its bytes: [`WireHeader`]'s fields.
struct Fields<'a> {
    v: [u8; 2],
    id: &'a [u8],
    ts: u64,
    src: &'a str,
    sgw: &'a str,
    dst: &'a str,
    dgw: Option<&'a str>,
    fl: u8,
    fed: &'a str,
    agr: u32,
    crt: Option<&'a [u8]>,
    cert: Option<&'a [u8]>,
    enc: Option<EncryptionFields<'a>>,
    pri: u8,
    qos: u8,
    lat: Option<u32>,
    cls: Option<&'a str>,
    top: &'a str,
    ct: &'a str,
    ce: Option<&'a str>,
    sch: Option<&'a str>,
}

/// [`WireEncryption`]'s fields, borrowed.
struct EncryptionFields<'a> {
    alg: u8,
    kid: &'a str,
    iv: &'a [u8],
}

/// Sets `slot` once: a field named twice is left to ciborium, which refuses it.
fn once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value?);
    Some(())
}

fn small<T: TryFrom<u64>>(n: Option<u64>) -> Option<T> {
    T::try_from(n?).ok()
}

/// The header's fields when `bytes` hold the plain form this crate writes (a definite map of
/// text keys, each known one once, unknown ones skipped as ciborium skips them); `None` for
/// anything else.
fn fields(bytes: &[u8]) -> Option<Fields<'_>> {
    use crate::cbor::{ARRAY, MAP, Reader};
    let mut r = Reader::new(bytes);
    let (MAP, entries) = r.head()? else {
        return None;
    };
    let (mut v, mut id, mut ts, mut src, mut sgw, mut dst, mut dgw) =
        (None, None, None, None, None, None, None);
    let (mut fl, mut fed, mut agr, mut crt, mut cert, mut enc, mut pri) =
        (None, None, None, None, None, None, None);
    let (mut qos, mut lat, mut top, mut ct, mut ce, mut sch) = (None, None, None, None, None, None);
    let mut cls = None;
    for _ in 0..entries {
        match r.text()? {
            "v" => {
                let (ARRAY, 2) = r.head()? else {
                    return None;
                };
                let pair = [small(r.uint())?, small(r.uint())?];
                once(&mut v, Some(pair))?;
            }
            "id" => once(&mut id, r.bytes())?,
            "ts" => once(&mut ts, r.uint())?,
            "src" => once(&mut src, r.text())?,
            "sgw" => once(&mut sgw, r.text())?,
            "dst" => once(&mut dst, r.text())?,
            "dgw" => once(&mut dgw, r.text())?,
            "fl" => once(&mut fl, small(r.uint()))?,
            "fed" => once(&mut fed, r.text())?,
            "agr" => once(&mut agr, small(r.uint()))?,
            "crt" => once(&mut crt, r.bytes())?,
            "cert" => once(&mut cert, r.bytes())?,
            "enc" => once(&mut enc, encryption_fields(&mut r))?,
            "pri" => once(&mut pri, small(r.uint()))?,
            "qos" => once(&mut qos, small(r.uint()))?,
            "lat" => once(&mut lat, small(r.uint()))?,
            "cls" => once(&mut cls, r.text())?,
            "top" => once(&mut top, r.text())?,
            "ct" => once(&mut ct, r.text())?,
            "ce" => once(&mut ce, r.text())?,
            "sch" => once(&mut sch, r.text())?,
            _ => r.skip(16)?,
        }
    }
    Some(Fields {
        v: v?,
        id: id?,
        ts: ts?,
        src: src?,
        sgw: sgw?,
        dst: dst?,
        dgw,
        fl: fl?,
        fed: fed?,
        agr: agr.unwrap_or(0),
        crt,
        cert,
        enc,
        pri: pri?,
        qos: qos?,
        lat,
        cls,
        top: top?,
        ct: ct?,
        ce,
        sch,
    })
}

fn encryption_fields<'a>(r: &mut crate::cbor::Reader<'a>) -> Option<EncryptionFields<'a>> {
    let (crate::cbor::MAP, entries) = r.head()? else {
        return None;
    };
    let (mut alg, mut kid, mut iv) = (None, None, None);
    for _ in 0..entries {
        match r.text()? {
            "alg" => once(&mut alg, small(r.uint()))?,
            "kid" => once(&mut kid, r.text())?,
            "iv" => once(&mut iv, r.bytes())?,
            _ => r.skip(16)?,
        }
    }
    Some(EncryptionFields {
        alg: alg?,
        kid: kid?,
        iv: iv?,
    })
}

/// Checks every field and makes the header.
fn header(w: Fields<'_>) -> Result<Header, EnvelopeError> {
    if w.v[0] != Version::CURRENT.major {
        return Err(invalid(
            "version",
            format!(
                "{}.{} is not supported (this node speaks 1.x)",
                w.v[0], w.v[1]
            ),
        ));
    }
    let id: [u8; 16] =
        w.id.try_into()
            .map_err(|_| invalid("id", format!("is {} bytes, not 16", w.id.len())))?;
    let encryption = match w.enc {
        None => None,
        Some(e) => {
            if e.alg != CIPHER_AES_256_GCM {
                return Err(invalid(
                    "security.encryption.algorithm",
                    format!("cipher {} is not AES-256-GCM (1)", e.alg),
                ));
            }
            let iv: Iv = e.iv.try_into().map_err(|_| {
                invalid(
                    "security.encryption.iv",
                    format!("is {} bytes, not 12", e.iv.len()),
                )
            })?;
            let key_id = e
                .kid
                .parse()
                .map_err(|e| invalid("security.encryption.key_id", e))?;
            Some(Encryption {
                cipher: Cipher::Aes256Gcm,
                key_id,
                iv,
            })
        }
    };
    let certificate = match (w.crt, w.cert) {
        (Some(digest), _) => SignerCertificate::by_digest(digest.try_into().map_err(|_| {
            invalid(
                "security.certificate",
                format!(
                    "digest is {} bytes, not a {DIGEST_LEN}-byte SHA-384",
                    digest.len()
                ),
            )
        })?),
        (None, Some(der)) => SignerCertificate::new(der.to_vec()),
        (None, None) => return Err(invalid("security.certificate", "is missing")),
    };
    let optional_label = |field, v: Option<&str>| {
        v.map(|s| Label::parse(field, s).map_err(|e| invalid(field, e)))
            .transpose()
    };
    Ok(Header {
        version: Version {
            major: w.v[0],
            minor: w.v[1],
        },
        id: EnvelopeId(id),
        timestamp: Timestamp(w.ts),
        source: Source {
            mesh: w.src.parse().map_err(|e| invalid("source_mesh.id", e))?,
            gateway: w
                .sgw
                .parse()
                .map_err(|e| invalid("source_mesh.gateway_id", e))?,
        },
        destination: Destination {
            mesh: w
                .dst
                .parse()
                .map_err(|e| invalid("destination_mesh.id", e))?,
            gateway: w
                .dgw
                .map(|g| {
                    g.parse()
                        .map_err(|e| invalid("destination_mesh.gateway_id", e))
                })
                .transpose()?,
        },
        flags: Flags::from_bits(w.fl).map_err(|e| invalid("routing.flags", e))?,
        federation_id: w
            .fed
            .parse()
            .map_err(|e| invalid("security.federation_id", e))?,
        agreement_version: w.agr,
        certificate,
        encryption,
        policy: DeliveryPolicy {
            priority: Priority::try_from(w.pri).map_err(|e| invalid("policy.priority", e))?,
            qos: Qos::try_from(w.qos).map_err(|e| invalid("policy.qos", e))?,
            max_latency: w
                .lat
                .map(|ms| MaxLatency::try_from(ms).map_err(|e| invalid("policy.max_latency", e)))
                .transpose()?,
            classification: optional_label("policy.classification", w.cls)?,
        },
        metadata: Metadata {
            topic: w.top.parse().map_err(|e| invalid("metadata.topic", e))?,
            content_type: w
                .ct
                .parse::<ContentType>()
                .map_err(|e| invalid("metadata.content_type", e))?,
            content_encoding: optional_label("metadata.content_encoding", w.ce)?,
            schema_id: optional_label("metadata.schema_id", w.sch)?,
        },
    })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
