//! Batch signatures: one ECDSA P-384 signature over the Merkle root of many envelopes.
//!
//! Every envelope stays individually verifiable and non-repudiable, at a fraction of the signing
//! and verifying cost of a signature per envelope (DESIGN §3.4, §7).
//!
//! # How it fits together
//! - An [`UnsignedEnvelope`] is an envelope whose header bytes and payload are final (sealed with
//!   AES-256-GCM under the header bytes as AAD, or clear) but that carries no signature. Signing
//!   it alone ([`UnsignedEnvelope::sign`]) gives the usual per-message [`WireEnvelope`]; that mode
//!   stays available by policy.
//! - Its **leaf** is `"meshfed-batch-leaf-v1\0" ‖ header bytes ‖ SHA-384(payload)`: the same bytes,
//!   as sent, that a per-message signature covers, under another domain, so a leaf is never a
//!   per-message signing input. Leaves are hashed into an RFC 6962 tree ([`merkle`]).
//! - A [`SignedBatch`] is 1 to [`SignedBatch::MAX_LEN`] envelopes from one origin node (same source
//!   mesh, gateway and certificate) with one [`BatchSignature`]: the signer, the count, the root,
//!   and the signature over `"meshfed-batch-v1\0" ‖ root ‖ count (u32, big-endian)`. On a link the
//!   batch carries its signature once and no proof bytes: the receiver recomputes the root
//!   ([`SignedBatch::verify`]).
//! - What the receiver keeps to prove any one envelope later (audit, export) is a
//!   [`BatchReceipt`]: the signature block and the 48-byte leaf hashes.
//! - A relay that splits a batch forwards [`ProvenEnvelope`]s: one envelope, the batch signature
//!   and its inclusion proof, verifiable alone ([`ProvenEnvelope::verify`]).
//! - A [`BatchProof`] is where one envelope sits in its batch (root, count, index, proof): what
//!   the logical [`Envelope`] carries as `batch`, and what its spec
//!   JSON shows as `federation.security.batch`. With the batch's signature and the envelope's
//!   header bytes and payload digest it is verified by [`BatchProof::verify`].
//!
//! Verification errors name what failed: [`BatchError::BadSignature`] (the signature block),
//! [`BatchError::RootMismatch`] (a header, digest or the order of envelopes),
//! [`BatchError::ProofInvalid`], [`BatchError::PayloadAltered`], and so on.
//!
//! # Wire layout (CBOR)
//!
//! ```text
//! SignedBatch    = [signature, [+ member]]             ; the EnvelopeBatch frame body
//! ProvenEnvelope = [signature, index, proof, member, certificate]
//!                                              ; one envelope split from a batch, with the
//!                                              ; signer's DER (empty if not known)
//! BatchReceipt   = [signature, leaves]                 ; what a receiver keeps
//! UnsignedEnvelope = member
//!
//! signature = [signer_mesh: tstr, signer_gateway: tstr, count: uint (1..=65536),
//!              root: bstr .size 48, signature: bstr .size 96]
//! member    = [path: [+ tstr], ttl: uint (u8), hops: uint (u8),
//!              header: bstr, digest: bstr .size 48, payload: bstr]
//! index     = uint, below count
//! proof     = bstr: the sibling hashes bottom up, 48 bytes each, as many as index and count fix
//! leaves    = bstr: the leaf hashes in signed order, 48 × count bytes
//! ```
//!
//! A member is a [`WireEnvelope`] without its signature field:
//! the hop fields, the header bytes as the origin encoded them, the payload digest and the
//! payload. The signature block is the same bytes wherever it appears. Decoders check every
//! field, refuse stray bytes after the item, and trust nothing (call `verify`).

pub mod merkle;
mod streamed;
mod wire;

pub use streamed::{BatchHead, Leaves, Receiving, StreamFault};

use crate::crypto::{
    CryptoError, DIGEST_LEN, Digest384, Opener, Sealer, Signature, SigningKey, TAG_LEN,
    VerifyingKey, sha384,
};
use crate::envelope::wire::{decode_header, encode_header};
use crate::envelope::{
    Cipher, Encryption, Envelope, EnvelopeError, Header, Hop, Source, WireEnvelope,
};
use merkle::{InclusionProof, ProofError, Tree, TreeHash};

/// Domain of a batch leaf; differs from the per-message signing context
/// (`"meshfed-envelope-v1\0"`) at its ninth byte, so neither is ever the other.
const LEAF_CONTEXT: &[u8] = b"meshfed-batch-leaf-v1\0";
/// Domain of the batch signature's input.
const SIGNING_CONTEXT: &[u8] = b"meshfed-batch-v1\0";

/// Why a batch, a proven envelope or a receipt was refused. Each variant names what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The bytes are not the CBOR form of `what`.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// `envelope batch`, `proven envelope`, `batch receipt`, ...
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// Bytes follow the CBOR item.
    #[error("{what} is followed by {len} stray bytes")]
    TrailingBytes {
        /// What was decoded.
        what: &'static str,
        /// How many bytes follow it.
        len: usize,
    },
    /// A field of the batch signature, the index or the proof broke its rule.
    #[error("batch field {field}: {reason}")]
    InvalidField {
        /// The field: `batch.signer.mesh`, `batch.count`, `batch.root`, `batch.signature`,
        /// `batch.leaves`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// One envelope of the batch is invalid on its own.
    #[error("envelope {index} of the batch: {source}")]
    Envelope {
        /// Its position in the batch.
        index: u32,
        /// What is wrong with it.
        source: EnvelopeError,
    },
    /// A batch without envelopes was asked to be signed.
    #[error("a batch must hold at least one envelope")]
    Empty,
    /// More envelopes than one batch may hold were asked to be signed.
    #[error("a batch of {len} envelopes exceeds the maximum of {max}")]
    TooLarge {
        /// Envelopes offered.
        len: usize,
        /// [`SignedBatch::MAX_LEN`].
        max: usize,
    },
    /// The signature block counts another number of envelopes than the batch carries.
    #[error("the batch signature covers {signed} envelopes, but the batch carries {carried}")]
    CountMismatch {
        /// The signed count.
        signed: u32,
        /// Envelopes present.
        carried: usize,
    },
    /// An envelope names another source than the batch's signer.
    #[error(
        "envelope {index} comes from {}/{}, but the batch is signed by {}/{}",
        .found.mesh, .found.gateway, .signer.mesh, .signer.gateway
    )]
    SignerMismatch {
        /// Its position in the batch.
        index: u32,
        /// The batch's signer.
        signer: Source,
        /// The envelope's source.
        found: Source,
    },
    /// An envelope names another signing certificate than the first envelope of the batch.
    #[error("envelope {index} names another signing certificate than envelope 0 of the batch")]
    CertificateMismatch {
        /// Its position in the batch.
        index: u32,
    },
    /// The signature does not verify over the root and the count.
    #[error(
        "batch signature does not verify over its root and count (the root, the count or the \
         signature was altered, or another key signed it)"
    )]
    BadSignature,
    /// The envelopes do not hash to the signed root.
    #[error(
        "the batch's envelopes do not hash to its signed root (a header, a payload digest or the \
         order of the envelopes was altered)"
    )]
    RootMismatch,
    /// A payload does not match the digest its leaf covers.
    #[error(
        "envelope {index} of the batch: payload does not match its signed SHA-384 digest (the \
         payload, ciphertext or tag was altered)"
    )]
    PayloadAltered {
        /// Its position in the batch.
        index: u32,
    },
    /// The index is not inside the batch.
    #[error("envelope index {index} is out of range for a batch of {count}")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The batch's signed count.
        count: u32,
    },
    /// The inclusion proof does not have the shape its index and the count fix.
    #[error("inclusion proof of envelope {index}: {reason}")]
    ProofMalformed {
        /// The envelope's index.
        index: u64,
        /// What is wrong with the proof's shape.
        reason: ProofError,
    },
    /// The inclusion proof does not lead from the envelope to the signed root.
    #[error(
        "inclusion proof of envelope {index} does not lead to the batch's signed root (the \
         header, the payload digest, the index or the proof was altered)"
    )]
    ProofInvalid {
        /// The envelope's index.
        index: u32,
    },
    /// Signing failed.
    #[error("signing the batch failed: {0}")]
    Crypto(#[from] CryptoError),
}

/// The batch leaf of an envelope with these header bytes and payload digest, hashed.
///
/// Auditors holding only the header bytes and the digest (payloads are never stored) can check
/// an envelope against a verified [`BatchSignature`] with this and an [`InclusionProof`].
pub fn leaf_hash(header_bytes: &[u8], payload_digest: &Digest384) -> TreeHash {
    merkle::leaf_hash_parts(&[LEAF_CONTEXT, header_bytes, payload_digest])
}

/// An envelope with final header bytes and payload but no signature of its own: waiting to be
/// signed alone or in a batch, or a member of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedEnvelope {
    /// The hop fields: the only part a relay changes.
    pub hop: Hop,
    header: Header,
    header_bytes: Vec<u8>,
    digest: Digest384,
    payload: Vec<u8>,
}

impl UnsignedEnvelope {
    /// Seals `plaintext` under the sealer's content key with the header bytes as AAD, exactly as
    /// [`WireEnvelope::seal`] does, without signing. `header.encryption` is filled in here.
    pub fn seal(
        mut header: Header,
        hop: Hop,
        plaintext: &[u8],
        sealer: &mut Sealer,
    ) -> Result<Self, EnvelopeError> {
        if sealer.sender() != &header.source.mesh {
            return Err(EnvelopeError::SenderMismatch {
                sealer: sealer.sender().clone(),
                named: header.source.mesh.clone(),
            });
        }
        let iv = sealer.next_iv()?;
        header.encryption = Some(Encryption {
            cipher: Cipher::Aes256Gcm,
            key_id: sealer.key_id().clone(),
            iv,
        });
        let header_bytes = encode_header(&header);
        let mut payload = Vec::with_capacity(plaintext.len() + TAG_LEN);
        payload.extend_from_slice(plaintext);
        sealer.seal_in_place(iv, &header_bytes, &mut payload)?;
        Ok(Self::from_parts(hop, header, header_bytes, payload))
    }

    /// An envelope with a clear payload (for agreements whose security policy allows it).
    pub fn clear(mut header: Header, hop: Hop, payload: Vec<u8>) -> Self {
        header.encryption = None;
        let header_bytes = encode_header(&header);
        Self::from_parts(hop, header, header_bytes, payload)
    }

    fn from_parts(hop: Hop, header: Header, header_bytes: Vec<u8>, payload: Vec<u8>) -> Self {
        let digest = sha384(&payload);
        Self {
            hop,
            header,
            header_bytes,
            digest,
            payload,
        }
    }

    /// Signs this envelope alone: the per-message signature mode.
    pub fn sign(self, signer: &SigningKey) -> Result<WireEnvelope, EnvelopeError> {
        WireEnvelope::sign(
            self.header,
            self.header_bytes,
            self.hop,
            self.payload,
            self.digest,
            signer,
        )
    }

    /// The signed fields.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The header bytes exactly as the origin encoded them.
    pub fn header_bytes(&self) -> &[u8] {
        &self.header_bytes
    }

    /// The SHA-384 digest of the payload, as carried.
    pub fn payload_digest(&self) -> &Digest384 {
        &self.digest
    }

    /// The payload as carried: ciphertext and tag when sealed.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The hash of this envelope's batch leaf (see [`leaf_hash`]).
    pub fn leaf_hash(&self) -> TreeHash {
        leaf_hash(&self.header_bytes, &self.digest)
    }

    /// Whether the payload matches its digest.
    pub(crate) fn payload_intact(&self) -> bool {
        sha384(&self.payload) == self.digest
    }

    /// Decrypts the payload. Verify the batch or the proof first: opening alone proves only that
    /// someone holding the content key sealed it.
    pub fn open(&self, opener: &Opener) -> Result<Vec<u8>, EnvelopeError> {
        crate::envelope::wire::open_payload(&self.header, &self.header_bytes, &self.payload, opener)
    }

    /// The payload of an envelope that is not encrypted.
    pub fn clear_payload(&self) -> Result<&[u8], EnvelopeError> {
        crate::envelope::wire::clear_payload(&self.header, &self.payload)
    }

    /// Fills in the signer certificate's DER from `known` (by digest) where the envelope names
    /// it by digest alone: the parsed header's view, not the signed bytes.
    pub fn fill_certificate(
        &mut self,
        known: impl FnOnce(&Digest384) -> Option<std::sync::Arc<[u8]>>,
    ) {
        self.header.certificate.fill(known);
    }

    /// Rebuilds an envelope from decoded parts: the header bytes are parsed, nothing is trusted.
    fn decoded(
        hop: Hop,
        header_bytes: Vec<u8>,
        digest: Digest384,
        payload: Vec<u8>,
    ) -> Result<Self, EnvelopeError> {
        let header = decode_header(&header_bytes)?;
        Ok(Self {
            hop,
            header,
            header_bytes,
            digest,
            payload,
        })
    }
}

/// The signature block of a batch: who signed, how many envelopes, their root, and the ECDSA
/// P-384 signature over `"meshfed-batch-v1\0" ‖ root ‖ count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSignature {
    signer: Source,
    count: u32,
    root: TreeHash,
    signature: Signature,
}

impl BatchSignature {
    /// The origin node; every envelope of the batch names it as its source.
    pub fn signer(&self) -> &Source {
        &self.signer
    }

    /// How many envelopes the batch holds (1 to [`SignedBatch::MAX_LEN`]).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The Merkle root of the envelopes' leaves.
    pub fn root(&self) -> &TreeHash {
        &self.root
    }

    /// The ECDSA P-384 signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Checks the signature over the root and the count. Says nothing about any envelope yet.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), BatchError> {
        key.verify(&signing_input(&self.root, self.count), &self.signature)
            .map_err(|_| BatchError::BadSignature)
    }

    /// `index` as a u32, if it is below the signed count.
    fn check_index(&self, index: u64) -> Result<u32, BatchError> {
        u32::try_from(index)
            .ok()
            .filter(|&i| i < self.count)
            .ok_or(BatchError::IndexOutOfRange {
                index,
                count: self.count,
            })
    }
}

fn signing_input(root: &TreeHash, count: u32) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + merkle::HASH_LEN + 4);
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(root.as_bytes());
    msg.extend_from_slice(&count.to_be_bytes());
    msg
}

/// Envelopes from one origin node under one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBatch {
    signature: BatchSignature,
    envelopes: Vec<UnsignedEnvelope>,
}

impl SignedBatch {
    /// Most envelopes in one batch; bounds a receiver's work per batch and a proof to 16 hashes.
    pub const MAX_LEN: usize = 1 << 16;

    /// Signs `envelopes` with one signature over their Merkle root. They must all come from one
    /// node: the same source mesh and gateway and the same certificate as the first.
    pub fn sign(envelopes: Vec<UnsignedEnvelope>, signer: &SigningKey) -> Result<Self, BatchError> {
        let count = batch_len(envelopes.len())?;
        // Invariant: `batch_len` refused an empty batch.
        let source = envelopes[0].header.source.clone();
        check_one_origin(&envelopes, &source)?;
        let leaves: Vec<TreeHash> = envelopes.iter().map(UnsignedEnvelope::leaf_hash).collect();
        let root = merkle::root(&leaves);
        let signature = signer.sign(&signing_input(&root, count))?;
        Ok(Self {
            signature: BatchSignature {
                signer: source,
                count,
                root,
                signature,
            },
            envelopes,
        })
    }

    /// Checks the signature, recomputes the root from the envelopes, then checks each payload
    /// against its digest. Returns what a receiver keeps to prove any envelope later.
    pub fn verify(&self, key: &VerifyingKey) -> Result<BatchReceipt, BatchError> {
        self.signature.verify(key)?;
        let leaves: Vec<TreeHash> = self
            .envelopes
            .iter()
            .map(UnsignedEnvelope::leaf_hash)
            .collect();
        if merkle::root(&leaves) != self.signature.root {
            return Err(BatchError::RootMismatch);
        }
        if let Some(index) = self.envelopes.iter().position(|e| !e.payload_intact()) {
            return Err(BatchError::PayloadAltered {
                index: index_u32(index),
            });
        }
        Ok(BatchReceipt {
            signature: self.signature.clone(),
            leaves,
        })
    }

    /// The signature block.
    pub fn signature(&self) -> &BatchSignature {
        &self.signature
    }

    /// The envelopes, in signed order. Nothing is trusted before [`SignedBatch::verify`].
    pub fn envelopes(&self) -> &[UnsignedEnvelope] {
        &self.envelopes
    }

    /// The envelopes, for a relay to advance their hop fields (nothing else can change).
    pub fn envelopes_mut(&mut self) -> &mut [UnsignedEnvelope] {
        &mut self.envelopes
    }

    /// Takes the envelopes out, dropping the signature.
    pub fn into_envelopes(self) -> Vec<UnsignedEnvelope> {
        self.envelopes
    }

    /// Number of envelopes (at least one).
    pub fn len(&self) -> usize {
        self.envelopes.len()
    }

    /// Always false: a batch holds at least one envelope.
    pub fn is_empty(&self) -> bool {
        self.envelopes.is_empty()
    }

    /// The envelope at `index` with its inclusion proof, to forward alone. Builds the tree on
    /// each call: to split a whole batch use [`SignedBatch::into_proven`].
    pub fn proof(&self, index: u32) -> Result<ProvenEnvelope, BatchError> {
        let envelope = self
            .envelopes
            .get(index as usize)
            .ok_or(BatchError::IndexOutOfRange {
                index: u64::from(index),
                count: self.signature.count,
            })?;
        let proof =
            self.tree()
                .proof(u64::from(index))
                .map_err(|reason| BatchError::ProofMalformed {
                    index: u64::from(index),
                    reason,
                })?;
        Ok(ProvenEnvelope {
            envelope: envelope.clone(),
            batch: self.signature.clone(),
            proof,
        })
    }

    /// Splits the batch into envelopes that each carry the signature and their inclusion proof.
    pub fn into_proven(self) -> Vec<ProvenEnvelope> {
        let tree = self.tree();
        self.envelopes
            .into_iter()
            .zip(0u64..)
            .filter_map(|(envelope, i)| {
                // Every index below the tree's size has a proof; none is skipped.
                let proof = tree.proof(i).ok()?;
                Some(ProvenEnvelope {
                    envelope,
                    batch: self.signature.clone(),
                    proof,
                })
            })
            .collect()
    }

    fn tree(&self) -> Tree {
        Tree::from_leaf_hashes(
            self.envelopes
                .iter()
                .map(UnsignedEnvelope::leaf_hash)
                .collect(),
        )
    }
}

/// The count of a batch of `len` envelopes, if that is a batch's size.
fn batch_len(len: usize) -> Result<u32, BatchError> {
    if len == 0 {
        return Err(BatchError::Empty);
    }
    if len > SignedBatch::MAX_LEN {
        return Err(BatchError::TooLarge {
            len,
            max: SignedBatch::MAX_LEN,
        });
    }
    // Invariant: len ≤ MAX_LEN = 2^16.
    Ok(index_u32(len))
}

/// An index or length already bounded by [`SignedBatch::MAX_LEN`], as a u32.
fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// Checks that every envelope names `signer` as its source and the first one's certificate.
fn check_one_origin(envelopes: &[UnsignedEnvelope], signer: &Source) -> Result<(), BatchError> {
    let Some(first) = envelopes.first() else {
        return Err(BatchError::Empty);
    };
    for (i, e) in envelopes.iter().enumerate() {
        if &e.header.source != signer {
            return Err(BatchError::SignerMismatch {
                index: index_u32(i),
                signer: signer.clone(),
                found: e.header.source.clone(),
            });
        }
        if e.header.certificate != first.header.certificate {
            return Err(BatchError::CertificateMismatch {
                index: index_u32(i),
            });
        }
    }
    Ok(())
}

/// What a receiver keeps of a verified batch to prove any of its envelopes later: the signature
/// block and the leaf hashes (48 bytes per envelope; no payload, no header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReceipt {
    signature: BatchSignature,
    leaves: Vec<TreeHash>,
}

impl BatchReceipt {
    /// The signature block.
    pub fn signature(&self) -> &BatchSignature {
        &self.signature
    }

    /// The leaf hashes, in signed order.
    pub fn leaf_hashes(&self) -> &[TreeHash] {
        &self.leaves
    }

    /// The whole tree, to hand out many proofs.
    pub fn tree(&self) -> Tree {
        Tree::from_leaf_hashes(self.leaves.clone())
    }

    /// The inclusion proof of envelope `index`.
    pub fn proof(&self, index: u32) -> Result<InclusionProof, BatchError> {
        let index = u64::from(index);
        self.signature.check_index(index)?;
        self.tree()
            .proof(index)
            .map_err(|reason| BatchError::ProofMalformed { index, reason })
    }

    /// `envelope`, kept since it arrived in this batch at `index`, with its proof: to export or
    /// forward it alone. Refuses an envelope that is not the one at `index`.
    pub fn prove(
        &self,
        index: u32,
        envelope: UnsignedEnvelope,
    ) -> Result<ProvenEnvelope, BatchError> {
        let proof = self.proof(index)?;
        if self.leaves.get(index as usize) != Some(&envelope.leaf_hash()) {
            return Err(BatchError::ProofInvalid { index });
        }
        Ok(ProvenEnvelope {
            envelope,
            batch: self.signature.clone(),
            proof,
        })
    }
}

/// One envelope of a batch, with the batch's signature and its inclusion proof: verifiable and
/// non-repudiable alone, as a relay that splits a batch forwards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenEnvelope {
    envelope: UnsignedEnvelope,
    batch: BatchSignature,
    /// Its tree size is the batch's count; checked at construction.
    proof: InclusionProof,
}

impl ProvenEnvelope {
    /// Checks the batch signature, then that the proof leads from this envelope's leaf to the
    /// signed root, then the payload against its digest.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), BatchError> {
        self.batch.verify(key)?;
        self.verify_inclusion()
    }

    /// The checks of [`ProvenEnvelope::verify`] without the signature: for a receiver that has
    /// already verified this exact [`BatchSignature`] (many envelopes of one split batch).
    pub fn verify_inclusion(&self) -> Result<(), BatchError> {
        let index = self.index();
        self.proof
            .verify_leaf_hash(&self.envelope.leaf_hash(), &self.batch.root)
            .map_err(|_| BatchError::ProofInvalid { index })?;
        if !self.envelope.payload_intact() {
            return Err(BatchError::PayloadAltered { index });
        }
        Ok(())
    }

    /// The envelope. Nothing is trusted before [`ProvenEnvelope::verify`].
    pub fn envelope(&self) -> &UnsignedEnvelope {
        &self.envelope
    }

    /// The hop fields, for a relay to advance.
    pub fn hop_mut(&mut self) -> &mut Hop {
        &mut self.envelope.hop
    }

    /// Takes the envelope out.
    pub fn into_envelope(self) -> UnsignedEnvelope {
        self.envelope
    }

    /// The signature block of the batch the envelope came in.
    pub fn batch_signature(&self) -> &BatchSignature {
        &self.batch
    }

    /// The envelope's index in its batch.
    pub fn index(&self) -> u32 {
        // Invariant: checked below the batch's u32 count at construction.
        u32::try_from(self.proof.index()).unwrap_or(u32::MAX)
    }

    /// The inclusion proof.
    pub fn proof(&self) -> &InclusionProof {
        &self.proof
    }

    /// Where the envelope sits in its batch, as the logical [`Envelope`] carries it.
    pub fn batch_proof(&self) -> BatchProof {
        BatchProof {
            root: self.batch.root,
            count: self.batch.count,
            proof: self.proof.clone(),
        }
    }

    /// The logical envelope, with `message` when the caller has the clear payload: its
    /// `signature` is the batch's and its `batch` says where it sits in the batch.
    pub fn to_envelope(&self, message: Option<Vec<u8>>) -> Envelope {
        Envelope {
            header: self.envelope.header.clone(),
            hop: self.envelope.hop.clone(),
            signature: self.batch.signature,
            message,
            sender: None,
            properties: crate::envelope::Properties::default(),
            batch: Some(self.batch_proof()),
        }
    }

    /// Assembles decoded parts, checking what can be checked without a key: the index against
    /// the count, the proof's shape, and the envelope's source against the signer.
    fn from_parts(
        batch: BatchSignature,
        index: u64,
        proof: &[u8],
        envelope: UnsignedEnvelope,
    ) -> Result<Self, BatchError> {
        let i = batch.check_index(index)?;
        let proof = InclusionProof::from_bytes(index, u64::from(batch.count), proof)
            .map_err(|reason| BatchError::ProofMalformed { index, reason })?;
        if envelope.header.source != batch.signer {
            return Err(BatchError::SignerMismatch {
                index: i,
                signer: batch.signer,
                found: envelope.header.source.clone(),
            });
        }
        Ok(Self {
            envelope,
            batch,
            proof,
        })
    }
}

/// Where one envelope sits in a signed batch: the batch's root and count, and the envelope's
/// index and inclusion proof. With the batch's signature (carried beside it, as an envelope's
/// `signature`) it makes the envelope verifiable alone ([`BatchProof::verify`]).
///
/// The signer is not repeated here: a batch's signer is the source that every envelope of the
/// batch names (mesh and gateway), and its key is the one in the envelope's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchProof {
    root: TreeHash,
    count: u32,
    /// Its tree size is `count` and its index is below it; checked at construction.
    proof: InclusionProof,
}

impl BatchProof {
    /// The position of the envelope that `proof` is for, in the batch that `batch` signs: e.g.
    /// `BatchProof::new(receipt.signature(), receipt.proof(index)?)`. Refuses a proof for a tree
    /// of another size than the signed count.
    pub fn new(batch: &BatchSignature, proof: InclusionProof) -> Result<Self, BatchError> {
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
        batch.check_index(proof.index())?;
        Ok(Self {
            root: batch.root,
            count: batch.count,
            proof,
        })
    }

    /// Assembles decoded parts, checking their shape: the count is a batch's size, the index is
    /// below it, and the proof (concatenated 48-byte hashes, bottom up) has the length the index
    /// and the count fix. Nothing is trusted yet (call [`BatchProof::verify`]).
    pub fn from_parts(
        root: TreeHash,
        count: u32,
        index: u32,
        proof: &[u8],
    ) -> Result<Self, BatchError> {
        if count == 0 || count as usize > SignedBatch::MAX_LEN {
            return Err(BatchError::InvalidField {
                field: "batch.count",
                reason: format!("{count} is not between 1 and {}", SignedBatch::MAX_LEN),
            });
        }
        let index = u64::from(index);
        if index >= u64::from(count) {
            return Err(BatchError::IndexOutOfRange { index, count });
        }
        let proof = InclusionProof::from_bytes(index, u64::from(count), proof)
            .map_err(|reason| BatchError::ProofMalformed { index, reason })?;
        Ok(Self { root, count, proof })
    }

    /// The Merkle root the batch signature covers.
    pub fn root(&self) -> &TreeHash {
        &self.root
    }

    /// How many envelopes the batch holds.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The envelope's index in its batch.
    pub fn index(&self) -> u32 {
        // Invariant: checked below the u32 count at construction.
        u32::try_from(self.proof.index()).unwrap_or(u32::MAX)
    }

    /// The inclusion proof.
    pub fn proof(&self) -> &InclusionProof {
        &self.proof
    }

    /// Checks an envelope with these header bytes and payload digest against this position and
    /// the batch's `signature` under `key`: the envelope's leaf must lead along the proof to the
    /// root ([`BatchError::ProofInvalid`]), and `signature` must verify over the root and the
    /// count ([`BatchError::BadSignature`]). Whether the payload matches the digest is the
    /// caller's check (it may hold only the digest).
    pub fn verify(
        &self,
        signature: &Signature,
        header_bytes: &[u8],
        payload_digest: &Digest384,
        key: &VerifyingKey,
    ) -> Result<(), BatchError> {
        self.proof
            .verify_leaf_hash(&leaf_hash(header_bytes, payload_digest), &self.root)
            .map_err(|_| BatchError::ProofInvalid {
                index: self.index(),
            })?;
        key.verify(&signing_input(&self.root, self.count), signature)
            .map_err(|_| BatchError::BadSignature)
    }
}

/// `DIGEST_LEN` and the tree hash length are one and the same.
const _: () = assert!(DIGEST_LEN == merkle::HASH_LEN);

#[cfg(test)]
mod tests;
