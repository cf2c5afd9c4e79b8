//! Tree heads: a log's size and root at a time, signed by the node that keeps the log and
//! countersigned by the federation partner, so that neither side can rewrite history unnoticed.
//!
//! - [`TreeHead`]: whose log (`mesh`, `scope`), its `size`, `root` and `time`.
//! - [`SignedHead`]: a head signed under the keeping node's key, over
//!   `"meshfed audit tree head v1\0" ‖ CBOR(head)`.
//! - [`Countersignature`]: the partner's signature over
//!   `"meshfed audit countersignature v1\0" ‖ CBOR([head, by, time])` — another domain, and it
//!   binds who countersigned and when.
//! - [`HeadOffer`]: what a node sends its partner over the federation's control channel: a
//!   signed head of the federation's log and the consistency proof from the size the partner
//!   last countersigned. [`Cosigner::check`] is the partner's check before countersigning; its
//!   [`HeadFault`] names a rollback (both sizes), a rewritten history, a bad signature, another
//!   mesh's or scope's head, or time going backwards.
//!
//! Every type has a CBOR form (`to_bytes` / `from_bytes`); decoders accept exactly the encoding
//! written, one value and nothing after it.
//!
//! ```text
//! TreeHead          = {mesh: tstr, scope: tstr, size: uint, root: bstr .size 48, time: uint}
//! SignedHead        = [TreeHead, signature: bstr .size 96]
//! Countersignature  = [by: tstr, time: uint, signature: bstr .size 96]
//! CountersignedHead = [TreeHead, Countersignature]
//! HeadOffer         = [SignedHead, consistency / null]
//! consistency       = [old_size: uint, new_size: uint, path: bstr]   ; 48-byte hashes
//! ```

use meshfed_proto::MeshId;
use meshfed_proto::batch::merkle::{ConsistencyProof, ProofError, TreeHash};
use meshfed_proto::crypto::{CryptoError, SIGNATURE_LEN, Signature, SigningKey, VerifyingKey};
use meshfed_proto::envelope::Timestamp;
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};

use crate::codec::serde_with::{time, tree_hash};
use crate::codec::{self, Fault};
use crate::record::Scope;

/// Domain of a head signature.
const HEAD_DOMAIN: &[u8] = b"meshfed audit tree head v1\0";
/// Domain of a countersignature.
const COUNTERSIGN_DOMAIN: &[u8] = b"meshfed audit countersignature v1\0";

/// A log's size and root at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TreeHead {
    /// The mesh whose node keeps the log.
    pub mesh: MeshId,
    /// Which of its logs.
    pub scope: Scope,
    /// How many records the log held.
    pub size: u64,
    /// The Merkle root over those records.
    #[serde(with = "tree_hash")]
    pub root: TreeHash,
    /// When the head was made.
    #[serde(with = "time")]
    pub time: Timestamp,
}

impl TreeHead {
    /// The head's CBOR form.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Reads a head written by [`TreeHead::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeadError> {
        decode("tree head", bytes, |h: &Self| h.to_bytes())
    }

    /// What the keeping node signs: `"meshfed audit tree head v1\0" ‖ CBOR(head)`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        [HEAD_DOMAIN, &self.to_bytes()].concat()
    }

    /// What the partner signs when `by` countersigns at `time`:
    /// `"meshfed audit countersignature v1\0" ‖ CBOR([head, by, time])`.
    pub fn countersigning_bytes(&self, by: &MeshId, time: Timestamp) -> Vec<u8> {
        let body = codec::encode(&(self, by, time.0));
        [COUNTERSIGN_DOMAIN, &body].concat()
    }
}

/// Why a head, a signature or an offer was refused: its bytes, or its signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The bytes are not the CBOR form of `what`.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// `tree head`, `signed head`, `countersignature`, `head offer`, …
        what: &'static str,
        /// What is wrong, and where.
        reason: String,
    },
    /// A field decoded but broke its rule.
    #[error("{what}: {field} {reason}")]
    InvalidField {
        /// What was decoded.
        what: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The signature does not verify under the key given.
    #[error(
        "the {what} signature does not verify (the head was altered, or another key signed it)"
    )]
    BadSignature {
        /// `tree head` or `countersignature`.
        what: &'static str,
    },
    /// Signing failed.
    #[error("signing the tree head failed: {0}")]
    Crypto(#[from] CryptoError),
}

fn decode<T, F, W>(what: &'static str, bytes: &[u8], reencode: F) -> Result<T, HeadError>
where
    T: serde::de::DeserializeOwned,
    F: FnOnce(&T) -> W,
    W: AsRef<[u8]>,
{
    codec::decode(bytes, reencode).map_err(|f: Fault| HeadError::Malformed {
        what,
        reason: f.to_string(),
    })
}

fn signature(what: &'static str, bytes: &[u8]) -> Result<Signature, HeadError> {
    let sig: [u8; SIGNATURE_LEN] = bytes.try_into().map_err(|_| HeadError::InvalidField {
        what,
        field: "signature",
        reason: format!("has {} bytes, must have {SIGNATURE_LEN}", bytes.len()),
    })?;
    Ok(Signature(sig))
}

/// A head signed by the node that keeps the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    /// The head.
    pub head: TreeHead,
    /// ECDSA P-384 over [`TreeHead::signing_bytes`].
    pub signature: Signature,
}

#[derive(Serialize)]
struct SignedOut<'a>(&'a TreeHead, &'a Bytes);

#[derive(Deserialize)]
struct SignedIn(TreeHead, ByteBuf);

impl SignedHead {
    /// Signs `head` with the node's key.
    pub fn sign(head: TreeHead, key: &SigningKey) -> Result<Self, HeadError> {
        let signature = key.sign(&head.signing_bytes())?;
        Ok(Self { head, signature })
    }

    /// Checks the signature under `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), HeadError> {
        key.verify(&self.head.signing_bytes(), &self.signature)
            .map_err(|_| HeadError::BadSignature { what: "tree head" })
    }

    fn wire(&self) -> SignedOut<'_> {
        SignedOut(&self.head, Bytes::new(&self.signature.0))
    }

    /// The CBOR form `[head, signature]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(&self.wire())
    }

    /// Reads a signed head written by [`SignedHead::to_bytes`]; nothing is trusted yet.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeadError> {
        const WHAT: &str = "signed head";
        let SignedIn(head, sig) = decode(WHAT, bytes, |SignedIn(h, s): &SignedIn| {
            codec::encode(&SignedOut(h, Bytes::new(s)))
        })?;
        Ok(Self {
            head,
            signature: signature(WHAT, &sig)?,
        })
    }
}

/// A partner's countersignature of a head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Countersignature {
    /// The countersigning mesh.
    pub by: MeshId,
    /// When it countersigned.
    pub time: Timestamp,
    /// ECDSA P-384 over [`TreeHead::countersigning_bytes`].
    pub signature: Signature,
}

#[derive(Serialize)]
struct CounterOut<'a>(&'a MeshId, u64, &'a Bytes);

#[derive(Deserialize)]
struct CounterIn(MeshId, u64, ByteBuf);

impl Countersignature {
    /// `by` countersigns `head` at `time` with its node key.
    pub fn sign(
        head: &TreeHead,
        by: MeshId,
        time: Timestamp,
        key: &SigningKey,
    ) -> Result<Self, HeadError> {
        let signature = key.sign(&head.countersigning_bytes(&by, time))?;
        Ok(Self {
            by,
            time,
            signature,
        })
    }

    /// Checks that this countersigns `head` under `key`.
    pub fn verify(&self, head: &TreeHead, key: &VerifyingKey) -> Result<(), HeadError> {
        key.verify(
            &head.countersigning_bytes(&self.by, self.time),
            &self.signature,
        )
        .map_err(|_| HeadError::BadSignature {
            what: "countersignature",
        })
    }

    fn wire(&self) -> CounterOut<'_> {
        CounterOut(&self.by, self.time.0, Bytes::new(&self.signature.0))
    }

    /// The CBOR form `[by, time, signature]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(&self.wire())
    }

    /// Reads a countersignature written by [`Countersignature::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeadError> {
        const WHAT: &str = "countersignature";
        let CounterIn(by, time, sig) = decode(WHAT, bytes, |c: &CounterIn| {
            codec::encode(&CounterOut(&c.0, c.1, Bytes::new(&c.2)))
        })?;
        Ok(Self {
            by,
            time: Timestamp(time),
            signature: signature(WHAT, &sig)?,
        })
    }
}

/// A head with the partner's countersignature, as the keeping node stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountersignedHead {
    /// The head (the keeping node's).
    pub head: TreeHead,
    /// The partner's countersignature of it.
    pub countersignature: Countersignature,
}

impl CountersignedHead {
    /// The CBOR form `[head, countersignature]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(&(&self.head, self.countersignature.wire()))
    }

    /// Reads what [`CountersignedHead::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeadError> {
        const WHAT: &str = "countersigned head";
        let (head, CounterIn(by, time, sig)) =
            decode(WHAT, bytes, |(h, c): &(TreeHead, CounterIn)| {
                codec::encode(&(h, CounterOut(&c.0, c.1, Bytes::new(&c.2))))
            })?;
        Ok(Self {
            head,
            countersignature: Countersignature {
                by,
                time: Timestamp(time),
                signature: signature(WHAT, &sig)?,
            },
        })
    }
}

/// A signed head offered to the partner for countersigning, with the proof that it extends the
/// head the partner countersigned last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadOffer {
    /// The head.
    pub head: SignedHead,
    /// From the size the partner last countersigned to this head's size; `None` for the first
    /// offer (or one of the same size).
    pub consistency: Option<ConsistencyProof>,
}

#[derive(Serialize)]
struct OfferOut<'a>(SignedOut<'a>, Option<(u64, u64, &'a Bytes)>);

#[derive(Deserialize)]
struct OfferIn(SignedIn, Option<(u64, u64, ByteBuf)>);

impl HeadOffer {
    /// The CBOR form `[signed head, consistency / null]` (the control channel's body).
    pub fn to_bytes(&self) -> Vec<u8> {
        let path = self.consistency.as_ref().map(ConsistencyProof::to_bytes);
        let proof = self
            .consistency
            .as_ref()
            .zip(path.as_ref())
            .map(|(p, path)| (p.old_size(), p.new_size(), Bytes::new(path)));
        codec::encode(&OfferOut(self.head.wire(), proof))
    }

    /// Reads an offer; the proof's shape is checked, nothing is trusted yet
    /// ([`Cosigner::check`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeadError> {
        const WHAT: &str = "head offer";
        let OfferIn(SignedIn(head, sig), proof) = decode(WHAT, bytes, |o: &OfferIn| {
            let signed = SignedOut(&o.0.0, Bytes::new(&o.0.1));
            let proof = o.1.as_ref().map(|(a, b, p)| (*a, *b, Bytes::new(p)));
            codec::encode(&OfferOut(signed, proof))
        })?;
        let consistency = proof
            .map(|(old, new, path)| ConsistencyProof::from_bytes(old, new, &path))
            .transpose()
            .map_err(|e| HeadError::InvalidField {
                what: WHAT,
                field: "consistency",
                reason: e.to_string(),
            })?;
        Ok(Self {
            head: SignedHead {
                head,
                signature: signature(WHAT, &sig)?,
            },
            consistency,
        })
    }
}

/// Why a partner's head offer is not countersigned. Each names what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadFault {
    /// The head's signature does not verify under the partner's key.
    #[error("the partner's tree head signature does not verify")]
    BadSignature,
    /// The head is another mesh's.
    #[error("the tree head is mesh {found}'s, not the partner {expected}'s")]
    WrongMesh {
        /// The partner.
        expected: MeshId,
        /// The head's mesh.
        found: MeshId,
    },
    /// The head is of another log than this federation's.
    #[error("the tree head is of the log {found}, not of this federation's log {expected}")]
    WrongScope {
        /// This federation's scope.
        expected: Scope,
        /// The head's scope.
        found: Scope,
    },
    /// The log is smaller than it was when countersigned: records were removed.
    #[error(
        "rollback: the partner's log has {offered} records, but {countersigned} were countersigned before"
    )]
    Rollback {
        /// The size countersigned last.
        countersigned: u64,
        /// The size offered.
        offered: u64,
    },
    /// A larger head came without the proof that it extends the one countersigned.
    #[error(
        "the head of {offered} records comes without a consistency proof from the {countersigned} countersigned"
    )]
    ConsistencyMissing {
        /// The size countersigned last.
        countersigned: u64,
        /// The size offered.
        offered: u64,
    },
    /// The proof is for other sizes than the countersigned and the offered.
    #[error(
        "the consistency proof is from {old_size} to {new_size} records, not from the {countersigned} countersigned to the {offered} offered"
    )]
    ConsistencyForOtherSizes {
        /// The size countersigned last.
        countersigned: u64,
        /// The size offered.
        offered: u64,
        /// The proof's old size.
        old_size: u64,
        /// The proof's new size.
        new_size: u64,
    },
    /// The offered log does not extend the one countersigned.
    #[error(
        "history rewritten: the log of {offered} records does not extend the one of {countersigned} countersigned before ({reason})"
    )]
    HistoryRewritten {
        /// The size countersigned last.
        countersigned: u64,
        /// The size offered.
        offered: u64,
        /// What the check found.
        reason: ProofError,
    },
    /// The head is older than the one countersigned last.
    #[error(
        "time went backwards: the head is from {}, the one countersigned before from {}",
        crate::codec::rfc3339(*.offered),
        crate::codec::rfc3339(*.countersigned)
    )]
    TimeWentBack {
        /// The time of the head countersigned last.
        countersigned: Timestamp,
        /// The time of the head offered.
        offered: Timestamp,
    },
}

/// The partner's side of head exchange for one federation: what a head must be to be
/// countersigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigner {
    /// The partner mesh, whose log it is.
    pub mesh: MeshId,
    /// The federation's scope.
    pub scope: Scope,
}

impl Cosigner {
    /// Checks `offer` against the head countersigned last (`None` before the first): the
    /// partner's mesh and this federation's log, the signature under `key`, no smaller size, no
    /// earlier time, and a consistency proof from the countersigned head to this one.
    pub fn check(
        &self,
        last_countersigned: Option<&TreeHead>,
        offer: &HeadOffer,
        key: &VerifyingKey,
    ) -> Result<(), HeadFault> {
        let head = &offer.head.head;
        if head.mesh != self.mesh {
            return Err(HeadFault::WrongMesh {
                expected: self.mesh.clone(),
                found: head.mesh.clone(),
            });
        }
        if head.scope != self.scope {
            return Err(HeadFault::WrongScope {
                expected: self.scope.clone(),
                found: head.scope.clone(),
            });
        }
        offer
            .head
            .verify(key)
            .map_err(|_| HeadFault::BadSignature)?;
        let Some(last) = last_countersigned else {
            return Ok(());
        };
        let (countersigned, offered) = (last.size, head.size);
        if offered < countersigned {
            return Err(HeadFault::Rollback {
                countersigned,
                offered,
            });
        }
        if head.time < last.time {
            return Err(HeadFault::TimeWentBack {
                countersigned: last.time,
                offered: head.time,
            });
        }
        let rewritten = |reason| HeadFault::HistoryRewritten {
            countersigned,
            offered,
            reason,
        };
        let proof = match &offer.consistency {
            Some(p) => p,
            None if offered == countersigned => {
                let same =
                    ConsistencyProof::new(offered, offered, Vec::new()).map_err(rewritten)?;
                return same.verify(&last.root, &head.root).map_err(rewritten);
            }
            None => {
                return Err(HeadFault::ConsistencyMissing {
                    countersigned,
                    offered,
                });
            }
        };
        if proof.old_size() != countersigned || proof.new_size() != offered {
            return Err(HeadFault::ConsistencyForOtherSizes {
                countersigned,
                offered,
                old_size: proof.old_size(),
                new_size: proof.new_size(),
            });
        }
        proof.verify(&last.root, &head.root).map_err(rewritten)
    }
}

#[cfg(test)]
pub(crate) mod tests;
