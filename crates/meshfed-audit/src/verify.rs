//! Checking one scope's whole log: its stored rows, its signed heads and the partner's
//! countersignatures, with the audit key.
//!
//! Pure and streaming: feed the rows in stored order to [`LogCheck::push`] (or hand an iterator
//! to [`verify`]); nothing decoded is kept, only the tree's frontier (O(log n) hashes) and the
//! gaps in the sequence, so a million records take a few seconds.
//!
//! Each row is checked by its MAC (an edited record, even with a recomputed hash), its body
//! against its leaf hash, its body's decoding, scope and seq, and its seq against the ones
//! before it (a gap is a deletion, a repeat an insertion, a smaller one a reordering). Pruned
//! rows (no body) are checked by leaf hash and MAC only. Every head is checked for its
//! signature (under the key the caller resolves for it: heads may be signed under an older
//! certificate) and against the log's root at its size; every countersignature for its
//! signature and its head against the log: a countersigned head beyond the end of the log, or
//! one that does not match it, means the log was rolled back or rewritten after the partner
//! countersigned it. Each [`Problem`] names the record (scope, position, seq) or the head
//! (size) and says what failed in a sentence.

use std::collections::BTreeMap;
use std::fmt;

use meshfed_proto::MeshId;
use meshfed_proto::batch::merkle::{self, Frontier, TreeHash};
use meshfed_proto::crypto::VerifyingKey;

use crate::head::{CountersignedHead, SignedHead};
use crate::record::{AuditKey, Record, RecordMac, Scope};

/// One stored row of a log, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The row's place in the store (its row id).
    pub position: u64,
    /// The seq the row is stored under.
    pub seq: u64,
    /// The record's bytes; `None` once pruned.
    pub bytes: Option<Vec<u8>>,
    /// The leaf hash stored with it.
    pub leaf_hash: TreeHash,
    /// The MAC stored with it.
    pub mac: RecordMac,
}

/// Which record a problem is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordAt {
    /// The log's scope.
    pub scope: Scope,
    /// The row's place in the store.
    pub position: u64,
    /// The seq it is stored under.
    pub seq: u64,
}

impl fmt::Display for RecordAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record {} of log {} (stored at position {})",
            self.seq, self.scope, self.position
        )
    }
}

/// Something wrong with a log. Its Display is a sentence naming the record or the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The body is not a record.
    Undecodable {
        /// The record.
        record: RecordAt,
        /// The decoder's words.
        reason: String,
    },
    /// The body does not hash to the stored leaf hash.
    BodyAltered {
        /// The record.
        record: RecordAt,
    },
    /// The stored MAC does not match the record's scope, seq and leaf hash.
    MacMismatch {
        /// The record.
        record: RecordAt,
    },
    /// Records are missing before this one.
    Deleted {
        /// The record after the gap.
        record: RecordAt,
        /// The first missing seq.
        first: u64,
        /// The last missing seq.
        last: u64,
    },
    /// A seq stored a second time.
    Inserted {
        /// The repeated record.
        record: RecordAt,
    },
    /// A seq stored after a later one.
    Reordered {
        /// The record out of place.
        record: RecordAt,
        /// The largest seq before it.
        after: u64,
    },
    /// The body says another seq than the row.
    SeqMismatch {
        /// The record.
        record: RecordAt,
        /// The seq in the body.
        body_seq: u64,
    },
    /// The body belongs to another log.
    WrongScope {
        /// The record.
        record: RecordAt,
        /// The scope in the body.
        found: Scope,
    },
    /// A head's root is not the log's root at its size.
    HeadRootMismatch {
        /// The log.
        scope: Scope,
        /// The head's size.
        size: u64,
    },
    /// A head is larger than the log.
    HeadBeyondLog {
        /// The log.
        scope: Scope,
        /// The head's size.
        size: u64,
        /// The log's size.
        log_size: u64,
    },
    /// A head of another log was stored with this one.
    HeadWrongScope {
        /// The log.
        scope: Scope,
        /// The head's size.
        size: u64,
        /// The head's scope.
        found: Scope,
    },
    /// No key is known for the head's signer.
    HeadKeyUnknown {
        /// The log.
        scope: Scope,
        /// The head's size.
        size: u64,
    },
    /// The head's signature does not verify.
    HeadSignatureInvalid {
        /// The log.
        scope: Scope,
        /// The head's size.
        size: u64,
    },
    /// No key is known for the countersigning partner.
    CountersignerUnknown {
        /// The log.
        scope: Scope,
        /// The head's size.
        size: u64,
        /// The partner.
        by: MeshId,
    },
    /// The countersignature does not verify.
    CountersignatureInvalid {
        /// The log.
        scope: Scope,
        /// The head's size.
        size: u64,
        /// The partner.
        by: MeshId,
    },
    /// A countersigned head is larger than the log: records were removed after the partner
    /// countersigned them.
    RolledBack {
        /// The log.
        scope: Scope,
        /// The countersigned size.
        size: u64,
        /// The log's size.
        log_size: u64,
        /// The partner.
        by: MeshId,
    },
    /// A countersigned head does not match the log at its size: rewritten after the partner
    /// countersigned it.
    CountersignedHeadMismatch {
        /// The log.
        scope: Scope,
        /// The countersigned size.
        size: u64,
        /// The partner.
        by: MeshId,
    },
}

impl Problem {
    /// The record the problem is about, if it is about one.
    pub fn record(&self) -> Option<&RecordAt> {
        match self {
            Self::Undecodable { record, .. }
            | Self::BodyAltered { record }
            | Self::MacMismatch { record }
            | Self::Deleted { record, .. }
            | Self::Inserted { record }
            | Self::Reordered { record, .. }
            | Self::SeqMismatch { record, .. }
            | Self::WrongScope { record, .. } => Some(record),
            _ => None,
        }
    }

    /// The size of the head the problem is about, if it is about one.
    pub fn head_size(&self) -> Option<u64> {
        match self {
            Self::HeadRootMismatch { size, .. }
            | Self::HeadBeyondLog { size, .. }
            | Self::HeadWrongScope { size, .. }
            | Self::HeadKeyUnknown { size, .. }
            | Self::HeadSignatureInvalid { size, .. }
            | Self::CountersignerUnknown { size, .. }
            | Self::CountersignatureInvalid { size, .. }
            | Self::RolledBack { size, .. }
            | Self::CountersignedHeadMismatch { size, .. } => Some(*size),
            _ => None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Undecodable { record, reason } => {
                write!(f, "{record} cannot be read: {reason}")
            }
            Self::BodyAltered { record } => write!(
                f,
                "{record} was altered: its body does not match its stored hash"
            ),
            Self::MacMismatch { record } => write!(
                f,
                "{record} was edited: its MAC does not match (its body, hash or seq was changed by someone without the audit key)"
            ),
            Self::Deleted {
                record,
                first,
                last,
            } if first == last => write!(
                f,
                "record {first} was deleted: it is missing before {record}"
            ),
            Self::Deleted {
                record,
                first,
                last,
            } => write!(
                f,
                "records {first} to {last} were deleted: they are missing before {record}"
            ),
            Self::Inserted { record } => {
                write!(f, "{record} was inserted: its seq is stored a second time")
            }
            Self::Reordered { record, after } => write!(
                f,
                "{record} was reordered: it is stored after record {after}"
            ),
            Self::SeqMismatch { record, body_seq } => write!(
                f,
                "{record} was moved: its body says it is record {body_seq}"
            ),
            Self::WrongScope { record, found } => write!(
                f,
                "{record} belongs to another log: its body says log {found}"
            ),
            Self::HeadRootMismatch { scope, size } => write!(
                f,
                "the signed head of log {scope} at size {size} does not match the log's first {size} records (the log was rewritten)"
            ),
            Self::HeadBeyondLog {
                scope,
                size,
                log_size,
            } => write!(
                f,
                "the signed head of log {scope} at size {size} is beyond the end of the log ({log_size} records): records were removed"
            ),
            Self::HeadWrongScope { scope, size, found } => write!(
                f,
                "the signed head at size {size} stored with log {scope} is a head of log {found}"
            ),
            Self::HeadKeyUnknown { scope, size } => write!(
                f,
                "the signed head of log {scope} at size {size} cannot be checked: no certificate of this node is known for it"
            ),
            Self::HeadSignatureInvalid { scope, size } => write!(
                f,
                "the signed head of log {scope} at size {size} has an invalid signature"
            ),
            Self::CountersignerUnknown { scope, size, by } => write!(
                f,
                "the countersignature by {by} of log {scope} at size {size} cannot be checked: no key is known for {by}"
            ),
            Self::CountersignatureInvalid { scope, size, by } => write!(
                f,
                "the countersignature by {by} of log {scope} at size {size} is invalid"
            ),
            Self::RolledBack {
                scope,
                size,
                log_size,
                by,
            } => write!(
                f,
                "log {scope} was rolled back: {by} countersigned it at size {size}, but it holds {log_size} records"
            ),
            Self::CountersignedHeadMismatch { scope, size, by } => write!(
                f,
                "log {scope} was rewritten: its first {size} records do not match the head {by} countersigned"
            ),
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verification {
    /// Rows checked.
    pub records: u64,
    /// Of them, pruned (checked by hash and MAC only).
    pub pruned: u64,
    /// Signed heads checked.
    pub heads: u64,
    /// Countersignatures checked.
    pub countersignatures: u64,
    /// Everything wrong, in the order found.
    pub problems: Vec<Problem>,
}

impl Verification {
    /// Whether nothing is wrong.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How the check finds the keys that signed: this node's key for a head (heads may be signed
/// under an older certificate) and the partner's for a countersignature.
pub struct Keys<'a> {
    /// This node's key for a head, `None` when unknown.
    pub own: &'a dyn Fn(&SignedHead) -> Option<VerifyingKey>,
    /// The partner's key for a countersigned head, `None` when unknown.
    pub partner: &'a dyn Fn(&CountersignedHead) -> Option<VerifyingKey>,
}

impl fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(…)")
    }
}

/// A streaming check of one scope's log.
#[derive(Debug)]
pub struct LogCheck<'a> {
    scope: Scope,
    audit_key: &'a AuditKey,
    keys: Keys<'a>,
    /// Heads, by size, not yet reached.
    heads: Vec<&'a SignedHead>,
    countersigned: Vec<&'a CountersignedHead>,
    frontier: Frontier,
    /// The seq expected next: one above the largest seen.
    next_seq: u64,
    /// Missing seqs (first → last), filled when a reordered record turns up.
    gaps: BTreeMap<u64, u64>,
    result: Verification,
}

impl<'a> LogCheck<'a> {
    /// Starts checking the log of `scope` against its `heads` and the partner's
    /// `countersigned` heads.
    pub fn new(
        scope: Scope,
        audit_key: &'a AuditKey,
        heads: &'a [SignedHead],
        countersigned: &'a [CountersignedHead],
        keys: Keys<'a>,
    ) -> Self {
        let mut heads: Vec<&SignedHead> = heads.iter().collect();
        heads.sort_by_key(|h| std::cmp::Reverse(h.head.size));
        let mut countersigned: Vec<&CountersignedHead> = countersigned.iter().collect();
        countersigned.sort_by_key(|h| std::cmp::Reverse(h.head.size));
        let mut check = Self {
            scope,
            audit_key,
            keys,
            heads,
            countersigned,
            frontier: Frontier::new(),
            next_seq: 0,
            gaps: BTreeMap::new(),
            result: Verification::default(),
        };
        check.settle();
        check
    }

    /// Checks the next stored row.
    pub fn push(&mut self, row: &StoredRecord) {
        let scope = self.scope.clone();
        let at = || RecordAt {
            scope: scope.clone(),
            position: row.position,
            seq: row.seq,
        };
        self.result.records += 1;
        self.sequence(row, &at);
        if self.audit_key.mac(&self.scope, row.seq, &row.leaf_hash) != row.mac {
            self.result
                .problems
                .push(Problem::MacMismatch { record: at() });
        }
        match &row.bytes {
            None => self.result.pruned += 1,
            Some(bytes) => {
                if merkle::leaf_hash(bytes) != row.leaf_hash {
                    self.result
                        .problems
                        .push(Problem::BodyAltered { record: at() });
                }
                match Record::from_bytes(bytes) {
                    Err(e) => self.result.problems.push(Problem::Undecodable {
                        record: at(),
                        reason: e.to_string(),
                    }),
                    Ok(r) => {
                        if r.scope != self.scope {
                            self.result.problems.push(Problem::WrongScope {
                                record: at(),
                                found: r.scope,
                            });
                        }
                        if r.seq != row.seq {
                            self.result.problems.push(Problem::SeqMismatch {
                                record: at(),
                                body_seq: r.seq,
                            });
                        }
                    }
                }
            }
        }
        self.frontier.push(row.leaf_hash);
        self.settle();
    }

    /// The row's seq against the ones before it.
    fn sequence(&mut self, row: &StoredRecord, at: &dyn Fn() -> RecordAt) {
        let seq = row.seq;
        if seq >= self.next_seq {
            if seq > self.next_seq {
                self.gaps.insert(self.next_seq, seq - 1);
                self.result.problems.push(Problem::Deleted {
                    record: at(),
                    first: self.next_seq,
                    last: seq - 1,
                });
            }
            self.next_seq = seq.saturating_add(1);
            return;
        }
        // Smaller than one seen: filling a gap (reordered) or seen already (inserted).
        let gap = self
            .gaps
            .range(..=seq)
            .next_back()
            .map(|(&first, &last)| (first, last))
            .filter(|&(_, last)| last >= seq);
        match gap {
            Some((first, last)) => {
                self.gaps.remove(&first);
                if first < seq {
                    self.gaps.insert(first, seq - 1);
                }
                if seq < last {
                    self.gaps.insert(seq + 1, last);
                }
                self.result.problems.push(Problem::Reordered {
                    record: at(),
                    after: self.next_seq - 1,
                });
            }
            None => self
                .result
                .problems
                .push(Problem::Inserted { record: at() }),
        }
    }

    /// Checks the heads whose size the log has reached.
    fn settle(&mut self) {
        let size = self.frontier.len();
        let mut root = None;
        while let Some(h) = self.heads.last().filter(|h| h.head.size == size).copied() {
            self.heads.pop();
            let root = *root.get_or_insert_with(|| self.frontier.root());
            self.check_head(h, Some(root));
        }
        while let Some(c) = self
            .countersigned
            .last()
            .filter(|c| c.head.size == size)
            .copied()
        {
            self.countersigned.pop();
            let root = *root.get_or_insert_with(|| self.frontier.root());
            self.check_countersigned(c, Some(root));
        }
    }

    /// One head: its scope, signature and root (`None`: beyond the log's end).
    fn check_head(&mut self, h: &SignedHead, root: Option<TreeHash>) {
        let (scope, size) = (self.scope.clone(), h.head.size);
        self.result.heads += 1;
        let problems = &mut self.result.problems;
        if h.head.scope != scope {
            problems.push(Problem::HeadWrongScope {
                scope,
                size,
                found: h.head.scope.clone(),
            });
            return;
        }
        match (self.keys.own)(h) {
            None => problems.push(Problem::HeadKeyUnknown {
                scope: scope.clone(),
                size,
            }),
            Some(key) if h.verify(&key).is_err() => problems.push(Problem::HeadSignatureInvalid {
                scope: scope.clone(),
                size,
            }),
            Some(_) => {}
        }
        match root {
            Some(root) if root != h.head.root => {
                problems.push(Problem::HeadRootMismatch { scope, size });
            }
            Some(_) => {}
            None => problems.push(Problem::HeadBeyondLog {
                scope,
                size,
                log_size: self.frontier.len(),
            }),
        }
    }

    /// One countersigned head: the countersignature, then the head against the log.
    fn check_countersigned(&mut self, c: &CountersignedHead, root: Option<TreeHash>) {
        let (scope, size) = (self.scope.clone(), c.head.size);
        let by = c.countersignature.by.clone();
        self.result.countersignatures += 1;
        let problems = &mut self.result.problems;
        if c.head.scope != scope {
            problems.push(Problem::HeadWrongScope {
                scope,
                size,
                found: c.head.scope.clone(),
            });
            return;
        }
        match (self.keys.partner)(c) {
            None => problems.push(Problem::CountersignerUnknown {
                scope: scope.clone(),
                size,
                by: by.clone(),
            }),
            Some(key) if c.countersignature.verify(&c.head, &key).is_err() => {
                problems.push(Problem::CountersignatureInvalid {
                    scope: scope.clone(),
                    size,
                    by: by.clone(),
                });
            }
            Some(_) => {}
        }
        match root {
            Some(root) if root != c.head.root => {
                problems.push(Problem::CountersignedHeadMismatch { scope, size, by });
            }
            Some(_) => {}
            None => problems.push(Problem::RolledBack {
                scope,
                size,
                log_size: self.frontier.len(),
                by,
            }),
        }
    }

    /// Ends the check: heads beyond the log's end are reported.
    pub fn finish(mut self) -> Verification {
        while let Some(h) = self.heads.pop() {
            self.check_head(h, None);
        }
        while let Some(c) = self.countersigned.pop() {
            self.check_countersigned(c, None);
        }
        self.result
    }
}

/// Checks the log of `scope`: its `rows` in stored order, its signed `heads` and the partner's
/// `countersigned` heads (see [`LogCheck`]).
pub fn verify<'a, I>(
    scope: Scope,
    audit_key: &'a AuditKey,
    rows: I,
    heads: &'a [SignedHead],
    countersigned: &'a [CountersignedHead],
    keys: Keys<'a>,
) -> Verification
where
    I: IntoIterator<Item = StoredRecord>,
{
    let mut check = LogCheck::new(scope, audit_key, heads, countersigned, keys);
    for row in rows {
        check.push(&row);
    }
    check.finish()
}

#[cfg(test)]
mod tests;
