//! Streamed batch signatures (DESIGN §3.4): envelopes leave as soon as they are scheduled,
//! tagged with their batch number and index, and the batch's signature follows in a
//! [`BatchHead`] once the batch closes. No public-key operation waits on the path of one
//! envelope.
//!
//! Both ends keep the batch's [`Leaves`]: the sender to sign the root when it closes the batch
//! ([`Leaves::sign`]), the receiver to check the head against what it received
//! ([`Leaves::verify`]), which yields the [`BatchReceipt`] that proves any of its envelopes
//! later. The leaves are the same as a [`SignedBatch`](super::SignedBatch)'s, so an envelope of
//! a streamed batch has the same export form and the same proof.
//!
//! ```text
//! BatchHead = [number: uint, signature]     ; the BatchHead frame body
//! ```
//!
//! `signature` is the batch signature block of the parent module's layout.

use super::merkle::{self, TreeHash};
use super::{
    BatchError, BatchReceipt, BatchSignature, SignedBatch, UnsignedEnvelope, index_u32,
    signing_input,
};
use crate::crypto::{SigningKey, VerifyingKey};
use crate::envelope::{SignerCertificate, Source};

/// The signature of a streamed batch, sent once the batch closes: its number on the link and
/// the signature block over its root and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchHead {
    /// The batch's number on the link (the sender counts from 0 on each link session).
    pub number: u64,
    /// Who signed, how many envelopes, their root and the signature.
    pub signature: BatchSignature,
}

/// The leaves of one streamed batch as they are sent or received: one origin node, one
/// certificate, at most [`SignedBatch::MAX_LEN`] envelopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaves {
    number: u64,
    signer: Source,
    certificate: SignerCertificate,
    leaves: Vec<TreeHash>,
}

impl Leaves {
    /// An empty batch numbered `number`, for envelopes from `first`'s origin under its
    /// certificate (`first` is not added: [`Leaves::push`] it).
    pub fn new(number: u64, first: &UnsignedEnvelope) -> Self {
        Self {
            number,
            signer: first.header().source.clone(),
            certificate: first.header().certificate.clone(),
            leaves: Vec::new(),
        }
    }

    /// The batch's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Envelopes in the batch so far.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Whether no envelope was added yet.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Whether the batch can take no more envelopes.
    pub fn is_full(&self) -> bool {
        self.leaves.len() >= SignedBatch::MAX_LEN
    }

    /// The leaf hashes added, in order (to prove one envelope of the batch later).
    pub fn leaf_hashes(&self) -> &[TreeHash] {
        &self.leaves
    }

    /// The signing certificate every envelope of the batch names.
    pub fn certificate(&self) -> &SignerCertificate {
        &self.certificate
    }

    /// Whether `e` may join this batch: same origin node, same certificate.
    pub fn admits(&self, e: &UnsignedEnvelope) -> bool {
        e.header().source == self.signer && e.header().certificate == self.certificate
    }

    /// Adds `e` as the next envelope; returns its index. The receiver checks the payload
    /// against its digest here, once: it is what the leaf covers.
    pub fn push(&mut self, e: &UnsignedEnvelope) -> Result<u32, BatchError> {
        let index = index_u32(self.leaves.len());
        if self.is_full() {
            return Err(BatchError::TooLarge {
                len: self.leaves.len() + 1,
                max: SignedBatch::MAX_LEN,
            });
        }
        if e.header().source != self.signer {
            return Err(BatchError::SignerMismatch {
                index,
                signer: self.signer.clone(),
                found: e.header().source.clone(),
            });
        }
        if e.header().certificate != self.certificate {
            return Err(BatchError::CertificateMismatch { index });
        }
        self.leaves.push(e.leaf_hash());
        Ok(index)
    }

    /// Checks that `e`'s payload matches its digest (the receiver's one hash of the payload).
    pub fn check_payload(e: &UnsignedEnvelope, index: u32) -> Result<(), BatchError> {
        if e.payload_intact() {
            Ok(())
        } else {
            Err(BatchError::PayloadAltered { index })
        }
    }

    /// Signs the root of the leaves added: the head the sender sends once the batch closes.
    pub fn sign(&self, key: &SigningKey) -> Result<BatchHead, BatchError> {
        let count = super::batch_len(self.leaves.len())?;
        let root = merkle::root(&self.leaves);
        let signature = key.sign(&signing_input(&root, count))?;
        Ok(BatchHead {
            number: self.number,
            signature: BatchSignature {
                signer: self.signer.clone(),
                count,
                root,
                signature,
            },
        })
    }

    /// Checks `head` against the leaves received: its number, signer and count, the root they
    /// hash to, and the signature with `key` (the certificate's). Returns what proves each
    /// envelope later.
    pub fn verify(self, head: &BatchHead, key: &VerifyingKey) -> Result<BatchReceipt, BatchError> {
        let sig = &head.signature;
        if head.number != self.number {
            return Err(BatchError::InvalidField {
                field: "batch.number",
                reason: format!("is {}, but batch {} is open", head.number, self.number),
            });
        }
        if sig.signer != self.signer {
            return Err(BatchError::SignerMismatch {
                index: 0,
                signer: sig.signer.clone(),
                found: self.signer,
            });
        }
        if sig.count as usize != self.leaves.len() {
            return Err(BatchError::CountMismatch {
                signed: sig.count,
                carried: self.leaves.len(),
            });
        }
        if merkle::root(&self.leaves) != sig.root {
            return Err(BatchError::RootMismatch);
        }
        sig.verify(key)?;
        Ok(BatchReceipt {
            signature: sig.clone(),
            leaves: self.leaves,
        })
    }
}

/// How a peer broke the streamed batch protocol (DESIGN §3.4). Each is misbehaviour: a link
/// that drops mid-batch is not, and shows as none of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamFault {
    /// A new batch that is not the next number.
    #[error("streamed batch {found} where batch {due} was due")]
    OutOfSequence {
        /// The number expected.
        due: u64,
        /// The number received.
        found: u64,
    },
    /// Envelopes that do not continue their batch where it stands.
    #[error("streamed batch {batch} continues at index {first}, but {held} envelopes of it came")]
    WrongIndex {
        /// The batch.
        batch: u64,
        /// The index given.
        first: u32,
        /// Envelopes of the batch received.
        held: usize,
    },
    /// More envelopes waiting for their heads than allowed.
    #[error("more than {limit} envelopes without a batch head")]
    TooManyUnheaded {
        /// The limit.
        limit: usize,
    },
    /// An envelope that cannot join its batch (another origin or certificate, an altered
    /// payload, too many).
    #[error("streamed batch {batch}: {source}")]
    Member {
        /// The batch.
        batch: u64,
        /// What is wrong.
        source: BatchError,
    },
    /// A head for no open batch, or not for the oldest.
    #[error("a head for batch {found}, but {}", .oldest.map_or("no streamed batch is open".to_owned(), |o| format!("batch {o} is the oldest open")))]
    UnexpectedHead {
        /// The head's number.
        found: u64,
        /// The oldest open batch.
        oldest: Option<u64>,
    },
    /// A batch whose head did not come in time.
    #[error("no head for streamed batch {batch} within {}ms of its first envelope", .timeout.as_millis())]
    NoHead {
        /// The batch.
        batch: u64,
        /// The time allowed.
        timeout: std::time::Duration,
    },
}

/// The receiving side of a link's streamed batches: which batch comes next, where each stands,
/// what waits for its head (`T`: whatever the receiver keeps per envelope), and when a head is
/// overdue. Sans-IO: the caller gives the time.
#[derive(Debug)]
pub struct Receiving<T> {
    open: std::collections::VecDeque<Open<T>>,
    next: u64,
    held: usize,
    limit: usize,
    timeout: std::time::Duration,
    /// Whether each payload is hashed against its digest on arrival ([`Receiving::headers_only`]).
    payloads: bool,
}

#[derive(Debug)]
struct Open<T> {
    leaves: Leaves,
    since: std::time::Instant,
    members: Vec<T>,
}

impl<T> Receiving<T> {
    /// Nothing received yet; at most `limit` envelopes may wait for heads, each batch at most
    /// `timeout` from its first envelope.
    pub fn new(limit: usize, timeout: std::time::Duration) -> Self {
        Self {
            open: std::collections::VecDeque::new(),
            next: 0,
            held: 0,
            limit,
            timeout,
            payloads: true,
        }
    }

    /// Checks what the signature covers only — the headers, each naming its payload's digest —
    /// and not that each payload matches its digest: for a relay, which forwards what the
    /// destination hashes anyway, at half the cost.
    pub fn headers_only(mut self) -> Self {
        self.payloads = false;
        self
    }

    /// Takes envelopes `first`, `first + 1`, ... of batch `batch`, received at `now`: checks
    /// where they go and adds their leaves; `keep` makes what is kept of each (in order). Until
    /// the head, nothing of them is proven.
    pub fn take(
        &mut self,
        batch: u64,
        first: u32,
        envelopes: Vec<UnsignedEnvelope>,
        now: std::time::Instant,
        mut keep: impl FnMut(UnsignedEnvelope) -> T,
    ) -> Result<(), StreamFault> {
        let Some(head) = envelopes.first() else {
            return Ok(());
        };
        if self.held + envelopes.len() > self.limit {
            return Err(StreamFault::TooManyUnheaded { limit: self.limit });
        }
        if self.open.back().is_none_or(|b| b.leaves.number() != batch) {
            if batch != self.next {
                return Err(StreamFault::OutOfSequence {
                    due: self.next,
                    found: batch,
                });
            }
            self.next = batch.saturating_add(1);
            self.open.push_back(Open {
                leaves: Leaves::new(batch, head),
                since: now,
                members: Vec::new(),
            });
        }
        let Some(open) = self.open.back_mut() else {
            return Ok(());
        };
        if first as usize != open.leaves.len() {
            return Err(StreamFault::WrongIndex {
                batch,
                first,
                held: open.leaves.len(),
            });
        }
        for e in envelopes {
            let index = index_u32(open.leaves.len());
            let intact = if self.payloads {
                Leaves::check_payload(&e, index)
            } else {
                Ok(())
            };
            intact
                .and_then(|()| open.leaves.push(&e))
                .map_err(|source| StreamFault::Member { batch, source })?;
            open.members.push(keep(e));
            self.held += 1;
        }
        Ok(())
    }

    /// What is kept of the envelopes of the batch received last, in order, to add to.
    pub fn last_mut(&mut self) -> Option<&mut Vec<T>> {
        self.open.back_mut().map(|b| &mut b.members)
    }

    /// Envelopes waiting for their heads.
    pub fn held(&self) -> usize {
        self.held
    }

    /// A head: it must be the oldest open batch's. Returns that batch's leaves (to check the
    /// head against, [`Leaves::verify`]) and what was kept of its envelopes.
    pub fn head(&mut self, head: &BatchHead) -> Result<(Leaves, Vec<T>), StreamFault> {
        let oldest = self.open.front().map(|b| b.leaves.number());
        if oldest != Some(head.number) {
            return Err(StreamFault::UnexpectedHead {
                found: head.number,
                oldest,
            });
        }
        let Some(Open {
            leaves, members, ..
        }) = self.open.pop_front()
        else {
            return Err(StreamFault::UnexpectedHead {
                found: head.number,
                oldest,
            });
        };
        self.held = self.held.saturating_sub(members.len());
        Ok((leaves, members))
    }

    /// When the oldest open batch's head is due at the latest.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.open.front().map(|b| b.since + self.timeout)
    }

    /// Whether the oldest open batch's head is overdue at `now`.
    pub fn check_overdue(&self, now: std::time::Instant) -> Result<(), StreamFault> {
        match self.open.front() {
            Some(b) if now >= b.since + self.timeout => Err(StreamFault::NoHead {
                batch: b.leaves.number(),
                timeout: self.timeout,
            }),
            _ => Ok(()),
        }
    }

    /// What is kept of every envelope waiting for its head.
    pub fn waiting(&self) -> impl Iterator<Item = &T> {
        self.open.iter().flat_map(|b| b.members.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::{fixture, header, hop, payload, sealed};

    fn leaves_of(es: &[UnsignedEnvelope], number: u64) -> Leaves {
        let mut l = Leaves::new(number, &es[0]);
        for e in es {
            l.push(e).expect("same origin");
        }
        l
    }

    #[test]
    fn a_streamed_head_proves_what_a_signed_batch_proves() {
        let mut fx = fixture();
        let es = sealed(&mut fx, 5);
        let head = leaves_of(&es, 7).sign(&fx.signer).expect("signs");
        let decoded = BatchHead::decode(&head.encode()).expect("decodes");
        assert_eq!(decoded, head);
        let receipt = leaves_of(&es, 7)
            .verify(&decoded, &fx.verifier)
            .expect("verifies");
        let whole = SignedBatch::sign(es.clone(), &fx.signer).expect("signs");
        // Same leaves, same root: an envelope of a streamed batch has a batch member's proof.
        assert_eq!(receipt.signature().root(), whole.signature().root());
        let proven = receipt.prove(3, es[3].clone()).expect("proves");
        proven
            .verify(&fx.verifier)
            .expect("the proof verifies alone");
    }

    #[test]
    fn a_head_that_does_not_match_the_leaves_received_is_refused_naming_why() {
        let mut fx = fixture();
        let es = sealed(&mut fx, 4);
        let head = leaves_of(&es, 0).sign(&fx.signer).expect("signs");
        // An envelope the receiver never got: the head counts 4, 3 arrived.
        assert_eq!(
            leaves_of(&es[..3], 0).verify(&head, &fx.verifier),
            Err(BatchError::CountMismatch {
                signed: 4,
                carried: 3
            })
        );
        // Another envelope in place of one sent.
        let mut other = es.clone();
        other[2] = UnsignedEnvelope::clear(header(99), hop(), payload(99));
        assert_eq!(
            leaves_of(&other, 0).verify(&head, &fx.verifier),
            Err(BatchError::RootMismatch)
        );
        // The head of another batch.
        assert!(matches!(
            leaves_of(&es, 1).verify(&head, &fx.verifier),
            Err(BatchError::InvalidField {
                field: "batch.number",
                ..
            })
        ));
        // A forged head: signed by another key.
        let forger = crate::crypto::SigningKey::generate().expect("key");
        let forged = leaves_of(&es, 0).sign(&forger).expect("signs");
        assert_eq!(
            leaves_of(&es, 0).verify(&forged, &fx.verifier),
            Err(BatchError::BadSignature)
        );
    }

    #[test]
    fn head_decoding_refuses_bad_fields_and_stray_bytes() {
        let mut fx = fixture();
        let es = sealed(&mut fx, 2);
        let mut bytes = leaves_of(&es, 0).sign(&fx.signer).expect("signs").encode();
        bytes.push(0);
        assert!(matches!(
            BatchHead::decode(&bytes),
            Err(BatchError::TrailingBytes { .. })
        ));
        assert!(matches!(
            BatchHead::decode(&[0x82, 0x00]),
            Err(BatchError::Malformed { .. })
        ));
    }

    #[test]
    fn leaves_refuse_another_origin_or_certificate_and_an_altered_payload() {
        let mut fx = fixture();
        let es = sealed(&mut fx, 2);
        let mut l = Leaves::new(0, &es[0]);
        let mut h = header(5);
        h.source.gateway = "gw2".parse().expect("gateway");
        let stranger = UnsignedEnvelope::clear(h, hop(), payload(5));
        assert!(!l.admits(&stranger));
        assert!(matches!(
            l.push(&stranger),
            Err(BatchError::SignerMismatch { .. })
        ));
        let mut h = header(6);
        h.certificate = SignerCertificate::new(vec![1, 2, 3]);
        assert_eq!(
            l.push(&UnsignedEnvelope::clear(h, hop(), payload(6))),
            Err(BatchError::CertificateMismatch { index: 0 })
        );
        assert_eq!(l.push(&es[1]), Ok(0));
        let mut altered = es[0].clone();
        altered.payload[0] ^= 1;
        assert_eq!(
            Leaves::check_payload(&altered, 4),
            Err(BatchError::PayloadAltered { index: 4 })
        );
        assert_eq!(Leaves::check_payload(&es[0], 0), Ok(()));
    }

    fn at(ms: u64) -> std::time::Instant {
        // One base for all: tests compare instants only with each other.
        static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(std::time::Instant::now) + std::time::Duration::from_millis(ms)
    }

    fn receiving() -> Receiving<u64> {
        Receiving::new(8, std::time::Duration::from_secs(10))
    }

    #[test]
    fn envelopes_then_their_head_in_order_are_proven_batch_by_batch() {
        let mut fx = fixture();
        let es = sealed(&mut fx, 5);
        let mut r = receiving();
        let mut n = 0;
        let mut keep = |_: UnsignedEnvelope| {
            n += 1;
            n
        };
        r.take(0, 0, es[..2].to_vec(), at(0), &mut keep)
            .expect("batch 0");
        r.take(0, 2, es[2..3].to_vec(), at(1), &mut keep)
            .expect("batch 0 goes on");
        // The sender closed batch 0 and opened 1 before 0's head arrived.
        r.take(1, 0, es[3..].to_vec(), at(2), &mut keep)
            .expect("batch 1");
        assert_eq!(r.held(), 5);
        assert_eq!(r.deadline(), Some(at(10_000)));
        let head0 = leaves_of(&es[..3], 0).sign(&fx.signer).expect("signs");
        let (leaves, kept) = r.head(&head0).expect("the oldest batch's head");
        assert_eq!(kept, vec![1, 2, 3]);
        leaves.verify(&head0, &fx.verifier).expect("verifies");
        assert_eq!((r.held(), r.deadline()), (2, Some(at(10_002))));
        let head1 = leaves_of(&es[3..], 1).sign(&fx.signer).expect("signs");
        let (leaves, kept) = r.head(&head1).expect("batch 1's head");
        assert_eq!(kept, vec![4, 5]);
        leaves.verify(&head1, &fx.verifier).expect("verifies");
        assert_eq!((r.held(), r.deadline()), (0, None));
    }

    #[test]
    fn a_head_before_its_envelopes_or_out_of_order_is_a_fault() {
        let mut fx = fixture();
        let es = sealed(&mut fx, 4);
        let mut r = receiving();
        let head0 = leaves_of(&es[..2], 0).sign(&fx.signer).expect("signs");
        assert_eq!(
            r.head(&head0).map(|_| ()),
            Err(StreamFault::UnexpectedHead {
                found: 0,
                oldest: None
            })
        );
        r.take(0, 0, es[..2].to_vec(), at(0), |_| 0)
            .expect("batch 0");
        r.take(1, 0, es[2..].to_vec(), at(0), |_| 0)
            .expect("batch 1");
        let head1 = leaves_of(&es[2..], 1).sign(&fx.signer).expect("signs");
        assert_eq!(
            r.head(&head1).map(|_| ()),
            Err(StreamFault::UnexpectedHead {
                found: 1,
                oldest: Some(0)
            })
        );
        // A batch skipped, or a gap within one.
        assert_eq!(
            r.take(3, 0, es[..1].to_vec(), at(0), |_| 0),
            Err(StreamFault::OutOfSequence { due: 2, found: 3 })
        );
        assert_eq!(
            r.take(1, 5, es[..1].to_vec(), at(0), |_| 0),
            Err(StreamFault::WrongIndex {
                batch: 1,
                first: 5,
                held: 2
            })
        );
    }

    #[test]
    fn a_head_that_covers_an_envelope_never_received_or_a_forged_one_does_not_verify() {
        let mut fx = fixture();
        let es = sealed(&mut fx, 3);
        let mut r = receiving();
        // The sender sent three; the receiver got two of them as batch 0.
        r.take(0, 0, es[..2].to_vec(), at(0), |_| 0)
            .expect("batch 0");
        let head = leaves_of(&es, 0).sign(&fx.signer).expect("signs");
        let (leaves, _) = r.head(&head).expect("the oldest batch's head");
        assert_eq!(
            leaves.verify(&head, &fx.verifier),
            Err(BatchError::CountMismatch {
                signed: 3,
                carried: 2
            })
        );
        r.take(1, 0, es.clone(), at(0), |_| 0).expect("batch 1");
        let forger = crate::crypto::SigningKey::generate().expect("key");
        let forged = leaves_of(&es, 1).sign(&forger).expect("signs");
        let (leaves, _) = r.head(&forged).expect("batch 1's head");
        assert_eq!(
            leaves.verify(&forged, &fx.verifier),
            Err(BatchError::BadSignature)
        );
    }

    #[test]
    fn a_missing_head_is_overdue_after_the_timeout_and_unheaded_traffic_is_bounded() {
        let mut fx = fixture();
        let es = sealed(&mut fx, 9);
        let mut r = receiving();
        r.take(0, 0, es[..1].to_vec(), at(100), |_| 0)
            .expect("batch 0");
        assert_eq!(r.check_overdue(at(10_099)), Ok(()));
        assert_eq!(
            r.check_overdue(at(10_100)),
            Err(StreamFault::NoHead {
                batch: 0,
                timeout: std::time::Duration::from_secs(10)
            })
        );
        assert_eq!(
            r.take(0, 1, es[1..].to_vec(), at(101), |_| 0),
            Err(StreamFault::TooManyUnheaded { limit: 8 })
        );
    }

    #[test]
    fn an_altered_payload_or_a_stranger_cannot_join_a_batch() {
        let mut fx = fixture();
        let es = sealed(&mut fx, 2);
        let mut r = receiving();
        let mut altered = es[1].clone();
        altered.payload[0] ^= 1;
        assert_eq!(
            r.take(0, 0, vec![es[0].clone(), altered.clone()], at(0), |_| 0),
            Err(StreamFault::Member {
                batch: 0,
                source: BatchError::PayloadAltered { index: 1 }
            })
        );
        // A relay checking headers only takes it: the head still proves every header, and the
        // destination finds the payload altered.
        let mut relay = receiving().headers_only();
        relay
            .take(0, 0, vec![es[0].clone(), altered], at(0), |_| 0)
            .expect("headers only");
        let head = leaves_of(&es, 0).sign(&fx.signer).expect("signs");
        let (leaves, _) = relay.head(&head).expect("its head");
        leaves
            .verify(&head, &fx.verifier)
            .expect("the headers verify");
    }
}
