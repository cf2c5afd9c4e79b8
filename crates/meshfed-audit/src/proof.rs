//! The proof of one message: a self-contained JSON file that a third party checks with the
//! certificate authorities alone (`meshfed audit prove`).
//!
//! A [`MessageProof`] carries every link from an envelope to a countersigned log:
//!
//! 1. the `messages` record naming the envelope (its CBOR bytes, the Merkle leaf, and its JSON
//!    view for reading; it names the other envelopes of the same batch too, never a payload);
//! 2. its inclusion proof in the log at a head's size;
//! 3. that head, signed by the node that keeps the log, with that node's certificate chain;
//! 4. the federation partner's countersignature of the head, with the partner's chain;
//! 5. the opening of the record's payload commitment;
//! 6. the envelope's evidence: its signed header bytes (envelope id, source, destination,
//!    topic, signer certificate digest), its payload digest, the head of the signed batch it
//!    travelled in and its inclusion proof in that batch (or its own signature, when it was
//!    signed alone), and the signer's chain.
//!
//! [`MessageProof::check`] checks each link and names the one that fails. Certificate chains
//! are validated by the caller's closure (against the CAs it trusts, for the mesh it is told
//! the chain must belong to); this crate does no X.509.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use meshfed_proto::MeshId;
use meshfed_proto::batch::merkle::{HASH_LEN, InclusionProof, ProofError, TreeHash};
use meshfed_proto::batch::{BatchError, BatchHead, BatchProof};
use meshfed_proto::crypto::{SIGNATURE_LEN, Signature, VerifyingKey, sha384};
use meshfed_proto::envelope::{EnvelopeError, EnvelopeId, Header, Timestamp, verify_signature};
use serde::{Deserialize, Serialize};

use crate::head::{Countersignature, HeadError, SignedHead};
use crate::record::{Delivery, Event, MessageDigest, Opening, Record, RecordError};

/// The proof format this build writes and reads.
pub const VERSION: u32 = 1;

/// The proof of one message, as its JSON file holds it. Build it with [`MessageProof::new`];
/// nothing in it is trusted until [`MessageProof::check`] passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageProof {
    /// The format version ([`VERSION`]).
    pub version: u32,
    /// The `message` record.
    pub record: RecordEvidence,
    /// Where the record sits in the log at the head's size.
    pub inclusion: PathEvidence,
    /// The head, signed by the node that keeps the log.
    pub head: SignedEvidence,
    /// The partner's countersignature of the head.
    pub countersignature: SignedEvidence,
    /// The opening of the record's commitment, hex.
    pub opening: String,
    /// The envelope and its batch signature.
    pub envelope: EnvelopeEvidence,
}

/// A record in a proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordEvidence {
    /// Its CBOR bytes (the Merkle leaf), base64.
    pub cbor: String,
    /// Its JSON view, for reading; checked to match the CBOR.
    pub json: serde_json::Value,
}

/// An inclusion proof in a proof file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathEvidence {
    /// The leaf's index.
    pub index: u64,
    /// The tree's size.
    pub tree_size: u64,
    /// The sibling hashes, bottom up, hex.
    pub path: Vec<String>,
}

/// A signed statement (CBOR, base64) and its signer's certificate chain (DER, base64, the
/// signer's certificate first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEvidence {
    /// The CBOR form ([`SignedHead`] or [`Countersignature`]), base64.
    pub cbor: String,
    /// The signer's chain.
    pub chain: Vec<String>,
}

/// The envelope's evidence: its header, and its batch's signature with its place in the batch,
/// or its own signature when it was signed alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeEvidence {
    /// The signed header bytes, base64.
    pub header: String,
    /// The SHA-384 digest of the payload as sent, hex.
    pub payload_digest: String,
    /// The batch head (number, signer, count, root, signature) in its wire form, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_head: Option<String>,
    /// The envelope's inclusion proof in its batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion: Option<PathEvidence>,
    /// Its own signature (signed alone), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The signer's chain.
    pub chain: Vec<String>,
}

/// How the envelope of a proof was signed.
#[derive(Debug, Clone, Copy)]
pub enum SignedBy<'a> {
    /// In a batch: the batch head and the envelope's inclusion proof in it.
    Batch {
        /// The batch head.
        head: &'a BatchHead,
        /// The envelope's inclusion proof in the batch.
        inclusion: &'a InclusionProof,
    },
    /// Alone, with its own signature.
    Alone(&'a Signature),
}

/// What a proof is made of, for [`MessageProof::new`].
#[derive(Debug, Clone, Copy)]
pub struct ProofParts<'a> {
    /// The stored record bytes.
    pub record: &'a [u8],
    /// Its inclusion proof at `head`'s size.
    pub inclusion: &'a InclusionProof,
    /// The signed head.
    pub head: &'a SignedHead,
    /// The keeping node's chain.
    pub head_chain: &'a [Vec<u8>],
    /// The partner's countersignature of `head`.
    pub countersignature: &'a Countersignature,
    /// The partner's chain.
    pub countersigner_chain: &'a [Vec<u8>],
    /// The commitment's opening.
    pub opening: &'a Opening,
    /// The envelope's header bytes.
    pub header: &'a [u8],
    /// The envelope's payload digest.
    pub payload_digest: &'a [u8; HASH_LEN],
    /// How it was signed.
    pub signed: SignedBy<'a>,
    /// The envelope signer's chain.
    pub batch_chain: &'a [Vec<u8>],
}

/// Whose chain the key closure is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerRole {
    /// The node that keeps the log and signed the head.
    HeadSigner,
    /// The partner that countersigned the head.
    Countersigner,
    /// The node that signed the envelope (its batch, or itself alone).
    BatchSigner,
}

impl fmt::Display for SignerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HeadSigner => "head signer",
            Self::Countersigner => "countersigner",
            Self::BatchSigner => "batch signer",
        })
    }
}

/// Which chain the key closure is asked to validate: whose role, and the mesh it must belong to.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    /// The role.
    pub role: SignerRole,
    /// The mesh the chain's certificate must name.
    pub mesh: &'a MeshId,
}

/// What a passing check establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The envelope.
    pub envelope: EnvelopeId,
    /// Its source mesh.
    pub source: MeshId,
    /// Its destination mesh.
    pub destination: MeshId,
    /// Its topic.
    pub topic: String,
    /// The mesh whose log holds the record and signed the head.
    pub head_signer: MeshId,
    /// The head's size.
    pub head_size: u64,
    /// The head's time.
    pub head_time: Timestamp,
    /// The partner that countersigned the head.
    pub countersigned_by: MeshId,
    /// The mesh that signed the envelope (its batch, or itself alone).
    pub batch_signer: MeshId,
    /// Whether it was signed in a batch (otherwise alone).
    pub in_batch: bool,
}

/// Which link of a proof failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofCheckError {
    /// Another format version.
    #[error("proof format version {0} is not supported (this build reads version 1)")]
    Version(u32),
    /// A field is not the base64 or hex it must be.
    #[error("proof field {field}: {reason}")]
    Field {
        /// The field (`record.cbor`, `envelope.payload_digest`, …).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The record bytes are not a record.
    #[error("the record does not decode: {0}")]
    Record(RecordError),
    /// The JSON view shows another record than the CBOR.
    #[error("the record's JSON view does not match its CBOR bytes")]
    JsonView,
    /// The record is not a messages record.
    #[error("the record is a {0} record, not a messages record")]
    NotAMessage(&'static str),
    /// The record and the envelope evidence disagree on how it was signed.
    #[error("the record says the envelope was signed {record}, the evidence carries {evidence}")]
    SignedHow {
        /// `in a batch` or `alone`.
        record: &'static str,
        /// What the evidence carries.
        evidence: &'static str,
    },
    /// The envelope's own signature does not verify.
    #[error("the envelope's own signature does not verify under its signer's certificate")]
    Signature,
    /// The record has no digest of the envelope the header names.
    #[error("the record has no digest of envelope {0}, which the header names")]
    NotInRecord(EnvelopeId),
    /// The head or the countersignature does not decode.
    #[error("the {what} does not decode: {source}")]
    Decode {
        /// `head` or `countersignature`.
        what: &'static str,
        /// Why.
        source: HeadError,
    },
    /// The caller did not accept a chain.
    #[error("the {role}'s certificate chain for mesh {mesh} is not accepted: {reason}")]
    Chain {
        /// Whose chain.
        role: SignerRole,
        /// The mesh it had to belong to.
        mesh: MeshId,
        /// The closure's reason.
        reason: String,
    },
    /// The head's signature does not verify under its chain's key.
    #[error("the head signature of mesh {0} does not verify under its certificate")]
    HeadSignature(MeshId),
    /// The head is of another log than the record's.
    #[error("the head is of log {head}, the record of log {record}")]
    ScopeMismatch {
        /// The head's scope.
        head: String,
        /// The record's scope.
        record: String,
    },
    /// The log's keeper is neither end of the message.
    #[error("the log is mesh {keeper}'s, which did not {did} the message")]
    NotAParty {
        /// The head's mesh.
        keeper: MeshId,
        /// `send` or `receive`.
        did: &'static str,
    },
    /// The inclusion proof is for another place or size.
    #[error(
        "the inclusion proof is for leaf {index} of {tree_size}, but the record is {seq} and the head has {head_size}"
    )]
    InclusionForOther {
        /// The proof's index.
        index: u64,
        /// The proof's size.
        tree_size: u64,
        /// The record's seq.
        seq: u64,
        /// The head's size.
        head_size: u64,
    },
    /// The record is not in the log under the head.
    #[error("the record is not in the log under the signed head: {0}")]
    Inclusion(ProofError),
    /// The countersigner is not the partner at the message's other end.
    #[error("the head is countersigned by {by}, not by the partner {partner}")]
    WrongCountersigner {
        /// Who countersigned.
        by: MeshId,
        /// Who should have.
        partner: MeshId,
    },
    /// The countersignature does not verify under its chain's key.
    #[error("the countersignature by {0} does not verify under its certificate")]
    Countersignature(MeshId),
    /// The header bytes are not a header.
    #[error("the envelope header does not decode: {0}")]
    Header(EnvelopeError),
    /// The header says something else than the record.
    #[error("the envelope header's {field} is {header}, the record's is {record}")]
    EnvelopeMismatch {
        /// `source`, `destination` or `topic`.
        field: &'static str,
        /// The header's.
        header: String,
        /// The record's.
        record: String,
    },
    /// The opening does not open the commitment to the payload digest.
    #[error("the commitment does not open to the envelope's payload digest with this opening")]
    Commitment,
    /// The batch head says something else than the record.
    #[error("the batch head's {field} is {head}, the record's is {record}")]
    BatchMismatch {
        /// `number`, `count`, `root`, `index` or `signer`.
        field: &'static str,
        /// The head's (or the proof's).
        head: String,
        /// The record's (or the header's).
        record: String,
    },
    /// The batch signer's chain is not the certificate the header names.
    #[error("the batch signer's certificate is not the one the envelope header names")]
    BatchCertificate,
    /// The envelope is not in the batch, or the batch signature does not verify.
    #[error("the envelope's batch does not verify: {0}")]
    Batch(BatchError),
}

fn b64(field: &'static str, s: &str) -> Result<Vec<u8>, ProofCheckError> {
    B64.decode(s).map_err(|e| ProofCheckError::Field {
        field,
        reason: format!("is not base64: {e}"),
    })
}

fn hex48(field: &'static str, s: &str) -> Result<[u8; HASH_LEN], ProofCheckError> {
    let mut out = [0u8; HASH_LEN];
    hex::decode_to_slice(s, &mut out).map_err(|e| ProofCheckError::Field {
        field,
        reason: format!("is not 96 hex digits: {e}"),
    })?;
    Ok(out)
}

fn chain(field: &'static str, chain: &[String]) -> Result<Vec<Vec<u8>>, ProofCheckError> {
    chain.iter().map(|c| b64(field, c)).collect()
}

impl PathEvidence {
    fn of(proof: &InclusionProof) -> Self {
        Self {
            index: proof.index(),
            tree_size: proof.tree_size(),
            path: proof.path().iter().map(ToString::to_string).collect(),
        }
    }

    fn hashes(&self, field: &'static str) -> Result<Vec<u8>, ProofCheckError> {
        let mut out = Vec::with_capacity(self.path.len() * HASH_LEN);
        for h in &self.path {
            out.extend_from_slice(&hex48(field, h)?);
        }
        Ok(out)
    }
}

fn encode_chain(chain: &[Vec<u8>]) -> Vec<String> {
    chain.iter().map(|c| B64.encode(c)).collect()
}

impl MessageProof {
    /// Assembles a proof from its parts (the node's `audit prove`).
    pub fn new(parts: ProofParts<'_>) -> Self {
        let json = Record::from_bytes(parts.record)
            .map(|r| r.to_json())
            .unwrap_or(serde_json::Value::Null);
        Self {
            version: VERSION,
            record: RecordEvidence {
                cbor: B64.encode(parts.record),
                json,
            },
            inclusion: PathEvidence::of(parts.inclusion),
            head: SignedEvidence {
                cbor: B64.encode(parts.head.to_bytes()),
                chain: encode_chain(parts.head_chain),
            },
            countersignature: SignedEvidence {
                cbor: B64.encode(parts.countersignature.to_bytes()),
                chain: encode_chain(parts.countersigner_chain),
            },
            opening: parts.opening.to_string(),
            envelope: match parts.signed {
                SignedBy::Batch { head, inclusion } => EnvelopeEvidence {
                    header: B64.encode(parts.header),
                    payload_digest: hex::encode(parts.payload_digest),
                    batch_head: Some(B64.encode(head.encode())),
                    inclusion: Some(PathEvidence::of(inclusion)),
                    signature: None,
                    chain: encode_chain(parts.batch_chain),
                },
                SignedBy::Alone(signature) => EnvelopeEvidence {
                    header: B64.encode(parts.header),
                    payload_digest: hex::encode(parts.payload_digest),
                    batch_head: None,
                    inclusion: None,
                    signature: Some(B64.encode(signature.0)),
                    chain: encode_chain(parts.batch_chain),
                },
            },
        }
    }

    /// Checks every link; `keys` validates a chain (DER, signer first) for the signer it is
    /// told of and returns the signer's key.
    pub fn check<K>(&self, keys: K) -> Result<Checked, ProofCheckError>
    where
        K: Fn(&[Vec<u8>], Signer<'_>) -> Result<VerifyingKey, String>,
    {
        if self.version != VERSION {
            return Err(ProofCheckError::Version(self.version));
        }
        let key = |chain: &[Vec<u8>], role, mesh: &MeshId| {
            keys(chain, Signer { role, mesh }).map_err(|reason| ProofCheckError::Chain {
                role,
                mesh: mesh.clone(),
                reason,
            })
        };

        // 1. The record.
        let record_bytes = b64("record.cbor", &self.record.cbor)?;
        let record = Record::from_bytes(&record_bytes).map_err(ProofCheckError::Record)?;
        if record.to_json() != self.record.json {
            return Err(ProofCheckError::JsonView);
        }
        let Event::Messages {
            direction,
            peer,
            batch,
            messages,
        } = &record.event
        else {
            return Err(ProofCheckError::NotAMessage(record.kind()));
        };
        let header_bytes = b64("envelope.header", &self.envelope.header)?;
        let header = Header::decode(&header_bytes).map_err(ProofCheckError::Header)?;
        let MessageDigest {
            envelope,
            source,
            destination,
            topic,
            index,
            commitment,
            ..
        } = messages
            .iter()
            .find(|m| m.envelope == header.id)
            .ok_or(ProofCheckError::NotInRecord(header.id))?;

        // 2, 3. The head, its signature, the record in it.
        let head =
            SignedHead::from_bytes(&b64("head.cbor", &self.head.cbor)?).map_err(|source| {
                ProofCheckError::Decode {
                    what: "head",
                    source,
                }
            })?;
        let h = &head.head;
        if h.scope != record.scope {
            return Err(ProofCheckError::ScopeMismatch {
                head: h.scope.to_string(),
                record: record.scope.to_string(),
            });
        }
        let (keeper, did) = match direction {
            Delivery::Sent => (source, "send"),
            Delivery::Received => (destination, "receive"),
        };
        if &h.mesh != keeper {
            return Err(ProofCheckError::NotAParty {
                keeper: h.mesh.clone(),
                did,
            });
        }
        let head_key = key(
            &chain("head.chain", &self.head.chain)?,
            SignerRole::HeadSigner,
            &h.mesh,
        )?;
        head.verify(&head_key)
            .map_err(|_| ProofCheckError::HeadSignature(h.mesh.clone()))?;
        let inc = &self.inclusion;
        if inc.index != record.seq || inc.tree_size != h.size {
            return Err(ProofCheckError::InclusionForOther {
                index: inc.index,
                tree_size: inc.tree_size,
                seq: record.seq,
                head_size: h.size,
            });
        }
        InclusionProof::from_bytes(inc.index, inc.tree_size, &inc.hashes("inclusion.path")?)
            .and_then(|p| p.verify(&record_bytes, &h.root))
            .map_err(ProofCheckError::Inclusion)?;

        // 4. The partner's countersignature.
        let counter = Countersignature::from_bytes(&b64(
            "countersignature.cbor",
            &self.countersignature.cbor,
        )?)
        .map_err(|source| ProofCheckError::Decode {
            what: "countersignature",
            source,
        })?;
        if &counter.by != peer {
            return Err(ProofCheckError::WrongCountersigner {
                by: counter.by.clone(),
                partner: peer.clone(),
            });
        }
        let counter_key = key(
            &chain("countersignature.chain", &self.countersignature.chain)?,
            SignerRole::Countersigner,
            &counter.by,
        )?;
        counter
            .verify(h, &counter_key)
            .map_err(|_| ProofCheckError::Countersignature(counter.by.clone()))?;

        // 5. The envelope header and the commitment.
        let digest = hex48("envelope.payload_digest", &self.envelope.payload_digest)?;
        let mismatch = |field, header: String, record: String| {
            Err(ProofCheckError::EnvelopeMismatch {
                field,
                header,
                record,
            })
        };
        if header.source.mesh != *source {
            return mismatch("source", header.source.mesh.to_string(), source.to_string());
        }
        if header.destination.mesh != *destination {
            return mismatch(
                "destination",
                header.destination.mesh.to_string(),
                destination.to_string(),
            );
        }
        if header.metadata.topic.as_str() != topic.as_str() {
            return mismatch(
                "topic",
                header.metadata.topic.as_str().to_owned(),
                topic.to_string(),
            );
        }
        let opening = Opening(hex48("opening", &self.opening)?);
        if !commitment.check(&opening, &digest) {
            return Err(ProofCheckError::Commitment);
        }

        // 6. The envelope's signature: its batch's, or its own.
        let batch_chain = chain("envelope.chain", &self.envelope.chain)?;
        if batch_chain.first().map(|c| sha384(c)) != Some(*header.certificate.digest()) {
            return Err(ProofCheckError::BatchCertificate);
        }
        let signer_key = key(&batch_chain, SignerRole::BatchSigner, &header.source.mesh)?;
        let ev = &self.envelope;
        match (batch, &ev.batch_head, &ev.inclusion, &ev.signature) {
            (Some(batch), Some(batch_head), Some(inclusion), None) => {
                let batch_head = BatchHead::decode(&b64("envelope.batch_head", batch_head)?)
                    .map_err(ProofCheckError::Batch)?;
                let sig = &batch_head.signature;
                let compare = |field, head: String, record: String| {
                    if head == record {
                        Ok(())
                    } else {
                        Err(ProofCheckError::BatchMismatch {
                            field,
                            head,
                            record,
                        })
                    }
                };
                compare(
                    "number",
                    batch_head.number.to_string(),
                    batch.number.to_string(),
                )?;
                compare("count", sig.count().to_string(), batch.count.to_string())?;
                compare("root", sig.root().to_string(), batch.root.to_string())?;
                compare("index", inclusion.index.to_string(), index.to_string())?;
                compare(
                    "signer",
                    format!("{}/{}", sig.signer().mesh, sig.signer().gateway),
                    format!("{}/{}", header.source.mesh, header.source.gateway),
                )?;
                let index = u32::try_from(inclusion.index).map_err(|_| ProofCheckError::Field {
                    field: "envelope.inclusion.index",
                    reason: "is beyond any batch".to_owned(),
                })?;
                let root = TreeHash::from_bytes(*sig.root().as_bytes());
                BatchProof::from_parts(
                    root,
                    sig.count(),
                    index,
                    &inclusion.hashes("envelope.inclusion.path")?,
                )
                .and_then(|p| p.verify(sig.signature(), &header_bytes, &digest, &signer_key))
                .map_err(ProofCheckError::Batch)?;
            }
            (None, None, None, Some(signature)) => {
                let bytes = b64("envelope.signature", signature)?;
                let signature: [u8; SIGNATURE_LEN] =
                    bytes
                        .try_into()
                        .map_err(|b: Vec<u8>| ProofCheckError::Field {
                            field: "envelope.signature",
                            reason: format!("is {} bytes, not {SIGNATURE_LEN}", b.len()),
                        })?;
                verify_signature(&header_bytes, &digest, &Signature(signature), &signer_key)
                    .map_err(|_| ProofCheckError::Signature)?;
            }
            (batch, ..) => {
                let evidence = match (&ev.batch_head, &ev.inclusion, &ev.signature) {
                    (Some(_), Some(_), None) => "a batch signature",
                    (None, None, Some(_)) => "its own signature",
                    _ => "neither a batch head with an inclusion proof nor its own signature",
                };
                return Err(ProofCheckError::SignedHow {
                    record: if batch.is_some() {
                        "in a batch"
                    } else {
                        "alone"
                    },
                    evidence,
                });
            }
        }

        Ok(Checked {
            envelope: *envelope,
            source: source.clone(),
            destination: destination.clone(),
            topic: topic.to_string(),
            head_signer: h.mesh.clone(),
            head_size: h.size,
            head_time: h.time,
            countersigned_by: counter.by,
            batch_signer: header.source.mesh,
            in_batch: batch.is_some(),
        })
    }

    /// The proof as its JSON file holds it.
    pub fn to_json(&self) -> String {
        // Invariant: plain strings, numbers and a JSON value serialise.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a proof file; says where it is not one.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests;
