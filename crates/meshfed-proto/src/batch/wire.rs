//! The CBOR wire forms of batches, proven envelopes and receipts.
//!
//! See the layout in the [parent module](super)'s doc.

use serde::Serialize;
use serde_bytes::{ByteBuf, Bytes};

use crate::cbor::exact_array;

use super::merkle::{self, HASH_LEN, InclusionProof, TreeHash};
use super::{
    BatchError, BatchHead, BatchReceipt, BatchSignature, ProvenEnvelope, SignedBatch,
    UnsignedEnvelope, check_one_origin, index_u32,
};
use crate::crypto::{DIGEST_LEN, Digest384, SIGNATURE_LEN, Signature};
use crate::envelope::wire::{MAX_PATH, carried_certificate};
use crate::envelope::{EnvelopeError, Hop, Source};
use crate::id::MeshId;

exact_array! {
    struct SignatureIn(String, String, u64, ByteBuf, ByteBuf);
    struct MemberIn(Vec<String>, u8, u8, ByteBuf, ByteBuf, ByteBuf);
    struct BatchIn(SignatureIn, Vec<MemberIn>);
    struct ProvenIn(SignatureIn, u64, ByteBuf, MemberIn, ByteBuf);
    struct ReceiptIn(SignatureIn, ByteBuf);
    struct HeadIn(u64, SignatureIn);
}

#[derive(Serialize)]
struct SignatureOut<'a>(&'a str, &'a str, u32, &'a Bytes, &'a Bytes);

#[derive(Serialize)]
struct MemberOut<'a>(Vec<&'a str>, u8, u8, &'a Bytes, &'a Bytes, &'a Bytes);

#[derive(Serialize)]
struct BatchOut<'a>(SignatureOut<'a>, Vec<MemberOut<'a>>);

#[derive(Serialize)]
struct ProvenOut<'a>(SignatureOut<'a>, u64, &'a Bytes, MemberOut<'a>, &'a Bytes);

#[derive(Serialize)]
struct ReceiptOut<'a>(SignatureOut<'a>, &'a Bytes);

#[derive(Serialize)]
struct HeadOut<'a>(u64, SignatureOut<'a>);

const BATCH: &str = "envelope batch";
const PROVEN: &str = "proven envelope";
const RECEIPT: &str = "batch receipt";
const HEAD: &str = "batch head";

impl BatchHead {
    /// The wire form (the `BatchHead` frame body).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        write(&HeadOut(self.number, self.signature.wire()), &mut out);
        out
    }

    /// Parses a head; every field is checked, nothing is trusted (the receiver checks it
    /// against the leaves it received, [`Leaves::verify`](super::Leaves::verify)).
    pub fn decode(bytes: &[u8]) -> Result<Self, BatchError> {
        let HeadIn(number, signature) = read(HEAD, bytes)?;
        Ok(Self {
            number,
            signature: BatchSignature::from_wire(signature)?,
        })
    }
}

impl SignedBatch {
    /// Appends the wire form (the `EnvelopeBatch` frame body) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let members = self.envelopes.iter().map(UnsignedEnvelope::wire).collect();
        write(&BatchOut(self.signature.wire(), members), out);
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .envelopes
            .iter()
            .map(|e| e.header_bytes.len() + e.payload.len() + 96)
            .sum();
        let mut out = Vec::with_capacity(size + 256);
        self.encode_into(&mut out);
        out
    }

    /// Parses a batch: every field is checked, every envelope must name the signer as its source
    /// and one certificate; nothing is trusted yet (call [`SignedBatch::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, BatchError> {
        let BatchIn(signature, members) = read(BATCH, bytes)?;
        let signature = BatchSignature::from_wire(signature)?;
        if members.len() != signature.count as usize {
            return Err(BatchError::CountMismatch {
                signed: signature.count,
                carried: members.len(),
            });
        }
        let envelopes = members
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                UnsignedEnvelope::from_wire(m).map_err(|source| BatchError::Envelope {
                    index: index_u32(i),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_one_origin(&envelopes, &signature.signer)?;
        Ok(Self {
            signature,
            envelopes,
        })
    }
}

impl ProvenEnvelope {
    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let proof = self.proof.to_bytes();
        let wire = ProvenOut(
            self.batch.wire(),
            self.proof.index(),
            Bytes::new(&proof),
            self.envelope.wire(),
            Bytes::new(self.envelope.certificate_der()),
        );
        write(&wire, out);
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.envelope.header_bytes.len() + self.envelope.payload.len() + 1024,
        );
        self.encode_into(&mut out);
        out
    }

    /// The wire form of the proven envelope that `envelope` at `proof`'s index in the batch
    /// `batch` signs makes, without assembling one: for a receiver that keeps a batch's
    /// signature once and each envelope with its inclusion proof. Refuses parts that do not fit
    /// (a proof for another batch size or an index outside it, an envelope of another source),
    /// so what it returns decodes with [`ProvenEnvelope::decode`].
    pub fn encode_parts(
        batch: &BatchSignature,
        proof: &InclusionProof,
        envelope: &UnsignedEnvelope,
    ) -> Result<Vec<u8>, BatchError> {
        let index = proof.index();
        let i = batch.check_index(index)?;
        if proof.tree_size() != u64::from(batch.count) {
            return Err(BatchError::InvalidField {
                field: "batch.proof",
                reason: format!(
                    "is a proof for a batch of {}, but the batch signs {}",
                    proof.tree_size(),
                    batch.count
                ),
            });
        }
        if envelope.header.source != batch.signer {
            return Err(BatchError::SignerMismatch {
                index: i,
                signer: batch.signer.clone(),
                found: envelope.header.source.clone(),
            });
        }
        let path = proof.to_bytes();
        let mut out =
            Vec::with_capacity(envelope.header_bytes.len() + envelope.payload.len() + 1024);
        let wire = ProvenOut(
            batch.wire(),
            index,
            Bytes::new(&path),
            envelope.wire(),
            Bytes::new(envelope.certificate_der()),
        );
        write(&wire, &mut out);
        Ok(out)
    }

    /// Parses a proven envelope: the index must be inside the batch, the proof must have the
    /// shape the index and the count fix, and the envelope must name the signer as its source.
    /// Nothing is trusted yet (call [`ProvenEnvelope::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, BatchError> {
        let ProvenIn(signature, index, proof, member, certificate) = read(PROVEN, bytes)?;
        let signature = BatchSignature::from_wire(signature)?;
        let i = signature.check_index(index)?;
        let mut envelope = UnsignedEnvelope::from_wire(member)
            .map_err(|source| BatchError::Envelope { index: i, source })?;
        carried_certificate(&mut envelope.header, certificate.into_vec())
            .map_err(|source| BatchError::Envelope { index: i, source })?;
        Self::from_parts(signature, index, &proof, envelope)
    }
}

impl BatchReceipt {
    /// Appends the stored form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let leaves: Vec<u8> = self.leaves.iter().flat_map(|h| *h.as_bytes()).collect();
        write(&ReceiptOut(self.signature.wire(), Bytes::new(&leaves)), out);
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.leaves.len() * HASH_LEN + 256);
        self.encode_into(&mut out);
        out
    }

    /// Parses a stored receipt and checks that its leaves hash to its root. The signature is
    /// not checked here (that needs the signer's key: [`BatchSignature::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, BatchError> {
        let ReceiptIn(signature, leaves) = read(RECEIPT, bytes)?;
        let signature = BatchSignature::from_wire(signature)?;
        if !leaves.len().is_multiple_of(HASH_LEN) {
            return Err(BatchError::InvalidField {
                field: "batch.leaves",
                reason: format!(
                    "{} bytes are not a whole number of {HASH_LEN}-byte hashes",
                    leaves.len()
                ),
            });
        }
        let leaves: Vec<TreeHash> = leaves
            .chunks_exact(HASH_LEN)
            .filter_map(|c| c.try_into().ok().map(TreeHash::from_bytes))
            .collect();
        if leaves.len() != signature.count as usize {
            return Err(BatchError::CountMismatch {
                signed: signature.count,
                carried: leaves.len(),
            });
        }
        if merkle::root(&leaves) != signature.root {
            return Err(BatchError::RootMismatch);
        }
        Ok(Self { signature, leaves })
    }
}

impl BatchSignature {
    fn wire(&self) -> SignatureOut<'_> {
        SignatureOut(
            self.signer.mesh.as_str(),
            self.signer.gateway.as_str(),
            self.count,
            Bytes::new(self.root.as_bytes()),
            Bytes::new(&self.signature.0),
        )
    }

    fn from_wire(w: SignatureIn) -> Result<Self, BatchError> {
        let SignatureIn(mesh, gateway, count, root, signature) = w;
        let signer = Source {
            mesh: mesh.parse().map_err(|e| invalid("batch.signer.mesh", e))?,
            gateway: gateway
                .parse()
                .map_err(|e| invalid("batch.signer.gateway", e))?,
        };
        let count = u32::try_from(count)
            .ok()
            .filter(|&c| c >= 1 && c as usize <= SignedBatch::MAX_LEN)
            .ok_or_else(|| {
                invalid(
                    "batch.count",
                    format!("{count} is not 1 to {}", SignedBatch::MAX_LEN),
                )
            })?;
        let root: [u8; HASH_LEN] = root.as_slice().try_into().map_err(|_| {
            invalid(
                "batch.root",
                format!("is {} bytes, not {HASH_LEN}", root.len()),
            )
        })?;
        let signature: [u8; SIGNATURE_LEN] = signature.as_slice().try_into().map_err(|_| {
            invalid(
                "batch.signature",
                format!("is {} bytes, not {SIGNATURE_LEN}", signature.len()),
            )
        })?;
        Ok(Self {
            signer,
            count,
            root: TreeHash::from_bytes(root),
            signature: Signature(signature),
        })
    }
}

impl UnsignedEnvelope {
    /// Appends the wire form (a batch member) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        write(&self.wire(), out);
    }

    /// The wire form (a batch member).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_bytes.len() + self.payload.len() + 128);
        self.encode_into(&mut out);
        out
    }

    /// Parses the wire form of a batch member; every field is checked, nothing is trusted.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        match member(bytes) {
            Some(m) => Self::from_member_parts(
                m.path,
                m.ttl,
                m.hops,
                m.header,
                m.digest,
                m.payload.to_vec(),
            ),
            None => Self::decode_with_ciborium(bytes),
        }
    }

    /// Like [`UnsignedEnvelope::decode`], without copying the payload, which is left empty: for
    /// a relay that checks the origin's signature over the headers (which name each payload's
    /// digest) and forwards the bytes it received, with
    /// [`Receiving::headers_only`](super::streamed::Receiving::headers_only). The envelope
    /// cannot be opened, and its payload does not match its digest.
    pub fn decode_headers(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        match member(bytes) {
            Some(m) => {
                Self::from_member_parts(m.path, m.ttl, m.hops, m.header, m.digest, Vec::new())
            }
            None => {
                let mut e = Self::decode_with_ciborium(bytes)?;
                e.payload = Vec::new();
                Ok(e)
            }
        }
    }

    pub(super) fn decode_with_ciborium(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let mut rest = bytes;
        let member: MemberIn = ciborium::from_reader(&mut rest)
            .map_err(|e| EnvelopeError::MalformedFrame(e.to_string()))?;
        if !rest.is_empty() {
            return Err(EnvelopeError::MalformedFrame(format!(
                "{} stray bytes after the envelope",
                rest.len()
            )));
        }
        Self::from_wire(member)
    }

    /// The signer certificate's DER, empty if only its digest is known.
    fn certificate_der(&self) -> &[u8] {
        self.header.certificate.der_bytes()
    }

    fn wire(&self) -> MemberOut<'_> {
        MemberOut(
            self.hop.path.iter().map(MeshId::as_str).collect(),
            self.hop.ttl,
            self.hop.hops,
            Bytes::new(&self.header_bytes),
            Bytes::new(&self.digest),
            Bytes::new(&self.payload),
        )
    }

    fn from_wire(w: MemberIn) -> Result<Self, EnvelopeError> {
        let MemberIn(path, ttl, hops, header_bytes, digest, payload) = w;
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        Self::from_member_parts(path, ttl, hops, &header_bytes, &digest, payload.into_vec())
    }

    fn from_member_parts(
        path: Vec<&str>,
        ttl: u8,
        hops: u8,
        header_bytes: &[u8],
        digest: &[u8],
        payload: Vec<u8>,
    ) -> Result<Self, EnvelopeError> {
        let field = |reason: String| EnvelopeError::InvalidField {
            field: "routing.path",
            reason,
        };
        if path.is_empty() || path.len() > MAX_PATH {
            return Err(field(format!(
                "has {} entries, must have 1 to {MAX_PATH}",
                path.len()
            )));
        }
        let path = path
            .into_iter()
            .map(|m| m.parse::<MeshId>().map_err(|e| field(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let digest: Digest384 = digest.try_into().map_err(|_| {
            EnvelopeError::MalformedFrame(format!(
                "payload digest is {} bytes, not {DIGEST_LEN}",
                digest.len()
            ))
        })?;
        Self::decoded(
            Hop { path, ttl, hops },
            header_bytes.to_vec(),
            digest,
            payload,
        )
    }
}

/// A batch member's parts, borrowed.
struct Member<'a> {
    path: Vec<&'a str>,
    ttl: u8,
    hops: u8,
    header: &'a [u8],
    digest: &'a [u8],
    payload: &'a [u8],
}

/// A member in the plain form this crate writes, read by hand (`[[path…], ttl, hops, header,
/// digest, payload]`, filling `bytes`); `None` for anything else, which ciborium then reads as
/// before (see [`crate::cbor::Reader`]).
fn member(bytes: &[u8]) -> Option<Member<'_>> {
    use crate::cbor::{ARRAY, Reader};
    let mut r = Reader::new(bytes);
    let (ARRAY, 6) = r.head()? else {
        return None;
    };
    let (ARRAY, entries) = r.head()? else {
        return None;
    };
    let mut path = Vec::with_capacity(usize::try_from(entries).ok()?.min(MAX_PATH + 1));
    for _ in 0..entries {
        path.push(r.text()?);
    }
    let member = Member {
        path,
        ttl: u8::try_from(r.uint()?).ok()?,
        hops: u8::try_from(r.uint()?).ok()?,
        header: r.bytes()?,
        digest: r.bytes()?,
        payload: r.bytes()?,
    };
    r.is_empty().then_some(member)
}

fn invalid(field: &'static str, reason: impl std::fmt::Display) -> BatchError {
    BatchError::InvalidField {
        field,
        reason: reason.to_string(),
    }
}

fn write(value: &impl Serialize, out: &mut Vec<u8>) {
    // Invariant: encoding plain structs into a Vec cannot fail (no IO, no non-string keys).
    ciborium::into_writer(value, out).unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
}

/// One CBOR item of type `T` that must fill `bytes` exactly.
fn read<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, BatchError> {
    let mut rest = bytes;
    let value = ciborium::from_reader(&mut rest).map_err(|e| BatchError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(BatchError::TrailingBytes {
            what,
            len: rest.len(),
        });
    }
    Ok(value)
}
