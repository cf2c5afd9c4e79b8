//! The link-level wire forms of the delivery streams: what the transport puts in its frames
//! between an [`Outbox`](crate::Outbox) and an [`Inbox`](crate::Inbox).
//!
//! A [`Transfer`] carries many transmissions of one stream at once: their stream fields as
//! [`Item`]s and their signed envelopes, either as one signed batch or one signed envelope per
//! item ([`Signed`]). [`Ack`], [`Credit`] and [`Forward`] travel back and forth on their own.
//!
//! Every form is one CBOR array (RFC 8949):
//!
//! ```text
//! transfer = [epoch, floor, [item, ...], 0, bytes]         ; the bytes of one SignedBatch
//!          / [epoch, floor, [item, ...], 1, [bytes, ...]]  ; one signed envelope per item
//!          / [epoch, floor, [item, ...], 2, [batch, first, [bytes, ...]]]
//!                         ; one unsigned batch member per item, indices first, first + 1, ...
//!                         ; of streamed batch `batch`, whose head follows (DESIGN §3.4)
//! item     = [seq, key_seq / null, retransmission]
//! ack      = [epoch, below, [[start, end], ...], [late, ...], [[refused, reason], ...], credit]
//!                         ; reason: the receiver's refusal code, 0 to 255
//! credit   = [epoch, limit]
//! forward  = [epoch, floor]
//! ```
//!
//! Numbers are unsigned integers, `retransmission` is a boolean, envelopes are byte strings.
//!
//! **Decoding is strict.** An array must hold exactly its items; every item must have its own
//! CBOR type (a byte string is not an array of small numbers, nor the other way round); tags
//! are refused; nothing may follow the value; and the rules each form states are checked.
//! [`WireError`] names what was wrong and where. Decoding never panics, and what it allocates
//! is bounded by the input. What decodes is well-formed, not trusted: the envelopes are still
//! to be verified, and the numbers of an [`Ack`] to be checked against what was sent
//! ([`Outbox::handle_ack`](crate::Outbox::handle_ack) does).

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Expected, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::Bytes;

use crate::stream::{Ack, Credit, Epoch, Forward, KeySeq, Seq, SeqRange, Transmit};

/// Most items in one [`Transfer`] (as many as one signed batch may hold).
pub const MAX_ITEMS: usize = 1 << 16;

/// Most selective ranges in one [`Ack`] on the wire.
pub const MAX_ACK_RANGES: usize = 4096;

/// Most late entries in one [`Ack`] on the wire.
pub const MAX_ACK_LATE: usize = 1 << 16;

/// The envelope kind of a [`Signed::Batch`] on the wire.
const KIND_BATCH: u8 = 0;
/// The envelope kind of a [`Signed::Each`] on the wire.
const KIND_EACH: u8 = 1;
/// The envelope kind of a [`Signed::Streamed`] on the wire.
const KIND_STREAMED: u8 = 2;

/// Array items reserved up front at most, whatever length the input announces.
const PREALLOCATE: usize = 1024;

/// Many transmissions of one stream in one frame.
///
/// [`Transfer::decode`] refuses a transfer without items or with more than [`MAX_ITEMS`], one
/// whose items repeat a sequence number or lie below `floor`, and, with [`Signed::Each`], one
/// without exactly one envelope per item. Encoding writes what it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The sender's stream.
    pub epoch: Epoch,
    /// Every number below this is settled at the sender: the lowest
    /// [`Transmit::floor`] among the transmissions carried, say. At most every item's `seq`.
    pub floor: Seq,
    /// The stream fields of each transmission, in envelope order.
    pub items: Vec<Item>,
    /// The signed envelopes: the `i`th is the message of `items[i]`.
    pub envelopes: Signed,
}

/// The stream fields of one transmission in a [`Transfer`] (its [`Transmit`] without the
/// message, which travels signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Item {
    /// The message's number in the stream.
    pub seq: Seq,
    /// The message's position within its order key, for `ordered` messages.
    pub key_seq: Option<KeySeq>,
    /// Whether the message was sent before.
    pub retransmission: bool,
}

/// The signed envelopes of a [`Transfer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// The wire form of one [`SignedBatch`](meshfed_proto::batch::SignedBatch) holding every
    /// item's envelope, in item order. Its count is checked against the items only once the
    /// receiver decodes it.
    Batch(Vec<u8>),
    /// One signed [`WireEnvelope`](meshfed_proto::envelope::WireEnvelope) encoding per item, in
    /// item order.
    Each(Vec<Vec<u8>>),
    /// One [`UnsignedEnvelope`](meshfed_proto::batch::UnsignedEnvelope) encoding per item, in
    /// item order: the envelopes at indices `first`, `first + 1`, ... of streamed batch
    /// `batch`, whose [`BatchHead`](meshfed_proto::batch::BatchHead) follows on the link.
    Streamed {
        /// The batch's number on the link.
        batch: u64,
        /// The index of the first envelope in the batch.
        first: u32,
        /// The envelopes.
        members: Vec<Vec<u8>>,
    },
}

/// [`Signed`] borrowed, for [`Transfer::encode_parts`]: the envelopes need not be copied into a
/// [`Transfer`] to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedRef<'a> {
    /// As [`Signed::Batch`].
    Batch(&'a [u8]),
    /// As [`Signed::Each`].
    Each(&'a [&'a [u8]]),
    /// As [`Signed::Streamed`].
    Streamed {
        /// The batch's number on the link.
        batch: u64,
        /// The index of the first envelope in the batch.
        first: u32,
        /// The envelopes.
        members: &'a [&'a [u8]],
    },
}

/// Why bytes are not a stream frame of the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes are not one CBOR value of the form's shape (cut short, wrong types, arrays of
    /// the wrong length, tags); the reason says where.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// The form expected.
        what: &'static str,
        /// What was wrong, and where.
        reason: String,
    },
    /// Bytes follow the value.
    #[error("{len} stray bytes after the {what}")]
    TrailingBytes {
        /// The form decoded.
        what: &'static str,
        /// How many bytes follow it.
        len: usize,
    },
    /// A transfer carries no items.
    #[error("transfer carries no items")]
    NoItems,
    /// A transfer carries more than [`MAX_ITEMS`] items.
    #[error("transfer carries {count} items, more than {MAX_ITEMS}")]
    TooManyItems {
        /// How many it carries.
        count: usize,
    },
    /// A transfer item's sequence number lies below the transfer's floor.
    #[error("transfer item {index}: {seq} is below the floor {floor}")]
    ItemBelowFloor {
        /// The item's position in the transfer.
        index: usize,
        /// Its sequence number.
        seq: Seq,
        /// The transfer's floor.
        floor: Seq,
    },
    /// Two items of one transfer have the same sequence number.
    #[error("transfer item {index}: {seq} repeats item {first}")]
    DuplicateSeq {
        /// The later item's position.
        index: usize,
        /// The first item's position.
        first: usize,
        /// The repeated sequence number.
        seq: Seq,
    },
    /// A transfer's envelope kind is neither 0 (one signed batch) nor 1 (one envelope per item).
    #[error(
        "transfer envelope kind {kind} is unknown (0 is one signed batch, 1 one envelope per \
         item, 2 a streamed batch's members)"
    )]
    UnknownEnvelopeKind {
        /// The kind found.
        kind: u64,
    },
    /// A streamed transfer's envelopes would not fit in one batch from their first index.
    #[error(
        "streamed transfer starts at batch index {first} with {count} envelopes, past the \
         largest batch"
    )]
    StreamedIndex {
        /// The first index given.
        first: u64,
        /// Envelopes carried.
        count: usize,
    },
    /// A transfer with one envelope per item has a different number of envelopes.
    #[error("transfer carries {envelopes} envelopes for {items} items")]
    EnvelopeCount {
        /// How many items.
        items: usize,
        /// How many envelopes.
        envelopes: usize,
    },
    /// An acknowledgement carries more than [`MAX_ACK_RANGES`] ranges.
    #[error("ack carries {count} ranges, more than {MAX_ACK_RANGES}")]
    TooManyRanges {
        /// How many it carries.
        count: usize,
    },
    /// A refused entry's reason code above 255.
    #[error("ack names refusal code {code}, the codes are 0 to 255")]
    RefusalCode {
        /// The code.
        code: u64,
    },
    /// An acknowledgement carries more than [`MAX_ACK_LATE`] late (or refused) entries.
    #[error("ack carries {count} late or refused entries, more than {MAX_ACK_LATE}")]
    TooManyLate {
        /// How many it carries.
        count: usize,
    },
    /// An acknowledgement range ends before it starts.
    #[error("ack range {index}: {start}..{end} is inverted")]
    InvertedRange {
        /// The range's position.
        index: usize,
        /// Its start.
        start: Seq,
        /// Its end.
        end: Seq,
    },
    /// An acknowledgement range holds no number.
    #[error("ack range {index}: {start}..{end} is empty")]
    EmptyRange {
        /// The range's position.
        index: usize,
        /// Its start (and end).
        start: Seq,
        /// Its end.
        end: Seq,
    },
    /// An acknowledgement range does not start above the cumulative point (a range starting at
    /// it would belong to it).
    #[error("ack range {index}: {start}..{end} does not start above the cumulative point {below}")]
    RangeNotAbove {
        /// The range's position.
        index: usize,
        /// Its start.
        start: Seq,
        /// Its end.
        end: Seq,
        /// The acknowledgement's `below`.
        below: Seq,
    },
    /// An acknowledgement range does not start above the end of the range before it: the
    /// ranges overlap, touch or are out of order.
    #[error("ack range {index}: {start}..{end} does not start above the end {previous_end} of range {}", .index.saturating_sub(1))]
    RangeOutOfOrder {
        /// The range's position.
        index: usize,
        /// Its start.
        start: Seq,
        /// Its end.
        end: Seq,
        /// The end of the range before.
        previous_end: Seq,
    },
}

impl Transfer {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let envelopes = match &self.envelopes {
            Signed::Batch(batch) => EnvelopesOut::Batch(batch),
            Signed::Each(each) => EnvelopesOut::Owned(each),
            Signed::Streamed {
                batch,
                first,
                members,
            } => EnvelopesOut::Streamed(*batch, *first, Members::Owned(members)),
        };
        encode_transfer(self.epoch, self.floor, &self.items, envelopes)
    }

    /// The wire form of a transfer made of these parts, without building one: the envelopes
    /// are copied only into the output.
    pub fn encode_parts(
        epoch: Epoch,
        floor: Seq,
        items: &[Item],
        envelopes: SignedRef<'_>,
    ) -> Vec<u8> {
        let envelopes = match envelopes {
            SignedRef::Batch(batch) => EnvelopesOut::Batch(batch),
            SignedRef::Each(each) => EnvelopesOut::Each(each),
            SignedRef::Streamed {
                batch,
                first,
                members,
            } => EnvelopesOut::Streamed(batch, first, Members::Borrowed(members)),
        };
        encode_transfer(epoch, floor, items, envelopes)
    }

    /// Parses a transfer and checks the rules in the type's documentation.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let TransferIn {
            epoch,
            floor,
            items,
            envelopes,
        } = read(bytes)?;
        if items.len == 0 {
            return Err(WireError::NoItems);
        }
        if items.len > MAX_ITEMS {
            return Err(WireError::TooManyItems { count: items.len });
        }
        let envelopes = match envelopes {
            EnvelopesIn::Batch(batch) => Signed::Batch(batch.0),
            EnvelopesIn::Each(each) if each.len != items.len => {
                return Err(WireError::EnvelopeCount {
                    items: items.len,
                    envelopes: each.len,
                });
            }
            EnvelopesIn::Each(each) => Signed::Each(each.items.into_iter().map(|b| b.0).collect()),
            EnvelopesIn::Streamed(s) if s.members.len != items.len => {
                return Err(WireError::EnvelopeCount {
                    items: items.len,
                    envelopes: s.members.len,
                });
            }
            EnvelopesIn::Streamed(s) => {
                let first = u32::try_from(s.first)
                    .ok()
                    .filter(|f| (*f as usize).saturating_add(items.len) <= MAX_ITEMS)
                    .ok_or(WireError::StreamedIndex {
                        first: s.first,
                        count: items.len,
                    })?;
                Signed::Streamed {
                    batch: s.batch,
                    first,
                    members: s.members.items.into_iter().map(|b| b.0).collect(),
                }
            }
            EnvelopesIn::Unknown(kind) => return Err(WireError::UnknownEnvelopeKind { kind }),
        };
        let floor = Seq(floor);
        let mut first: HashMap<Seq, usize> = HashMap::with_capacity(items.items.len());
        let items = items
            .items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let seq = Seq(item.seq);
                if seq < floor {
                    return Err(WireError::ItemBelowFloor { index, seq, floor });
                }
                if let Some(&first) = first.get(&seq) {
                    return Err(WireError::DuplicateSeq { index, first, seq });
                }
                first.insert(seq, index);
                Ok(Item {
                    seq,
                    key_seq: item.key_seq.map(KeySeq),
                    retransmission: item.retransmission,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            epoch: Epoch(epoch),
            floor,
            items,
            envelopes,
        })
    }
}

impl<P> From<&Transmit<P>> for Item {
    fn from(t: &Transmit<P>) -> Self {
        Self {
            seq: t.seq,
            key_seq: t.key_seq,
            retransmission: t.retransmission,
        }
    }
}

impl Ack {
    /// The wire form. Encode no more than [`MAX_ACK_RANGES`] ranges and [`MAX_ACK_LATE`] late
    /// (and refused) entries, or the peer refuses it.
    pub fn encode(&self) -> Vec<u8> {
        let wire = (
            self.epoch.0,
            self.below.0,
            RangesOut(&self.ranges),
            SeqsOut(&self.late),
            RefusedOut(&self.refused),
            self.credit.0,
        );
        let mut out = Vec::with_capacity(
            32 + 18 * self.ranges.len() + 9 * self.late.len() + 12 * self.refused.len(),
        );
        write(&wire, &mut out);
        out
    }

    /// Parses an acknowledgement: at most [`MAX_ACK_RANGES`] ranges, each non-empty, above
    /// `below` and above the range before (ascending, neither overlapping nor touching), and
    /// at most [`MAX_ACK_LATE`] late entries.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let AckIn {
            epoch,
            below,
            ranges,
            late,
            refused,
            credit,
        } = read(bytes)?;
        if ranges.len > MAX_ACK_RANGES {
            return Err(WireError::TooManyRanges { count: ranges.len });
        }
        for len in [late.len, refused.len] {
            if len > MAX_ACK_LATE {
                return Err(WireError::TooManyLate { count: len });
            }
        }
        let refused = refused
            .items
            .into_iter()
            .map(|r| {
                u8::try_from(r.reason)
                    .map(|reason| (Seq(r.seq), reason))
                    .map_err(|_| WireError::RefusalCode { code: r.reason })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let below = Seq(below);
        let mut previous_end = None;
        let ranges = ranges
            .items
            .into_iter()
            .enumerate()
            .map(|(index, r)| {
                let (start, end) = (Seq(r.start), Seq(r.end));
                if start > end {
                    return Err(WireError::InvertedRange { index, start, end });
                }
                if start == end {
                    return Err(WireError::EmptyRange { index, start, end });
                }
                if start <= below {
                    return Err(WireError::RangeNotAbove {
                        index,
                        start,
                        end,
                        below,
                    });
                }
                if let Some(previous_end) = previous_end.filter(|&p| start <= p) {
                    return Err(WireError::RangeOutOfOrder {
                        index,
                        start,
                        end,
                        previous_end,
                    });
                }
                previous_end = Some(end);
                Ok(SeqRange { start, end })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            epoch: Epoch(epoch),
            below,
            ranges,
            late: late.items.into_iter().map(Seq).collect(),
            refused,
            credit: Seq(credit),
        })
    }
}

impl Credit {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        write(&(self.epoch.0, self.limit.0), &mut out);
        out
    }

    /// Parses a credit grant.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let CreditIn { epoch, limit } = read(bytes)?;
        Ok(Self {
            epoch: Epoch(epoch),
            limit: Seq(limit),
        })
    }
}

impl Forward {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        write(&(self.epoch.0, self.floor.0), &mut out);
        out
    }

    /// Parses a floor sent on its own.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let ForwardIn { epoch, floor } = read(bytes)?;
        Ok(Self {
            epoch: Epoch(epoch),
            floor: Seq(floor),
        })
    }
}

// ---- Encoding ----

fn encode_transfer(
    epoch: Epoch,
    floor: Seq,
    items: &[Item],
    envelopes: EnvelopesOut<'_>,
) -> Vec<u8> {
    let (kind, size) = match envelopes {
        EnvelopesOut::Batch(b) => (KIND_BATCH, b.len() + 9),
        EnvelopesOut::Each(e) => (KIND_EACH, e.iter().map(|b| b.len() + 9).sum()),
        EnvelopesOut::Owned(e) => (KIND_EACH, e.iter().map(|b| b.len() + 9).sum()),
        EnvelopesOut::Streamed(_, _, m) => (KIND_STREAMED, m.size() + 20),
    };
    let mut out = Vec::with_capacity(32 + 24 * items.len() + size);
    write(
        &(epoch.0, floor.0, ItemsOut(items), kind, envelopes),
        &mut out,
    );
    out
}

/// Items as an array of `[seq, key_seq / null, retransmission]`.
struct ItemsOut<'a>(&'a [Item]);

impl Serialize for ItemsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .iter()
                .map(|i| (i.seq.0, i.key_seq.map(|k| k.0), i.retransmission)),
        )
    }
}

/// The envelopes of a transfer: a byte string, an array of byte strings, or a streamed
/// batch's `[batch, first, [bytes, ...]]`.
#[derive(Clone, Copy)]
enum EnvelopesOut<'a> {
    Batch(&'a [u8]),
    Each(&'a [&'a [u8]]),
    Owned(&'a [Vec<u8>]),
    Streamed(u64, u32, Members<'a>),
}

/// Byte strings, borrowed or owned.
#[derive(Clone, Copy)]
enum Members<'a> {
    Borrowed(&'a [&'a [u8]]),
    Owned(&'a [Vec<u8>]),
}

impl Members<'_> {
    fn size(&self) -> usize {
        match self {
            Self::Borrowed(m) => m.iter().map(|b| b.len() + 9).sum(),
            Self::Owned(m) => m.iter().map(|b| b.len() + 9).sum(),
        }
    }
}

impl Serialize for Members<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Self::Borrowed(m) => s.collect_seq(m.iter().map(|b| Bytes::new(b))),
            Self::Owned(m) => s.collect_seq(m.iter().map(|b| Bytes::new(b))),
        }
    }
}

impl Serialize for EnvelopesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Self::Batch(b) => s.serialize_bytes(b),
            Self::Each(e) => Members::Borrowed(e).serialize(s),
            Self::Owned(e) => Members::Owned(e).serialize(s),
            Self::Streamed(batch, first, members) => (batch, first, members).serialize(s),
        }
    }
}

/// Ranges as an array of `[start, end]`.
struct RangesOut<'a>(&'a [SeqRange]);

impl Serialize for RangesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|r| (r.start.0, r.end.0)))
    }
}

/// Sequence numbers as an array of integers.
struct RefusedOut<'a>(&'a [(Seq, u8)]);

impl Serialize for RefusedOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(seq, reason)| (seq.0, *reason)))
    }
}

struct SeqsOut<'a>(&'a [Seq]);

impl Serialize for SeqsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|seq| seq.0))
    }
}

fn write(value: &impl Serialize, out: &mut Vec<u8>) {
    // Invariant: encoding integers, booleans, byte strings and arrays of them into a Vec
    // cannot fail (no IO, no maps).
    ciborium::into_writer(value, out).unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
}

// ---- Decoding ----
//
// Each wire value is read by a visitor that accepts exactly one CBOR type: every reader calls
// `deserialize_any`, so the CBOR item's own type picks the visitor method, and a method not
// implemented refuses. (ciborium's typed entry points are lenient: `deserialize_seq` takes a
// byte string as an array of numbers, `deserialize_byte_buf` an array as bytes, and most skip
// tags.) Readers carry the path to the value they read, so a refusal says where it happened.

/// One top-level wire form.
trait Form: ReadWire {
    /// What the form is called in errors.
    const WHAT: &'static str;
}

/// A value read from CBOR, refusing any other type.
trait ReadWire: Sized {
    fn read<'de, D: Deserializer<'de>>(d: D, at: &Path<'_>) -> Result<Self, D::Error>;
}

/// Where a value is within a form, as `transfer.items[3].seq`.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    step: Step,
}

#[derive(Clone, Copy)]
enum Step {
    Field(&'static str),
    Index(usize),
}

impl<'a> Path<'a> {
    fn root(what: &'static str) -> Self {
        Path {
            parent: None,
            step: Step::Field(what),
        }
    }

    fn join(&'a self, step: Step) -> Path<'a> {
        Path {
            parent: Some(self),
            step,
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}")?;
        }
        match (self.parent, self.step) {
            (None, Step::Field(name)) => f.write_str(name),
            (Some(_), Step::Field(name)) => write!(f, ".{name}"),
            (_, Step::Index(i)) => write!(f, "[{i}]"),
        }
    }
}

/// Reads a `T` at a path.
struct Seed<'a, T>(&'a Path<'a>, PhantomData<T>);

impl<'de, T: ReadWire> DeserializeSeed<'de> for Seed<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::read(d, self.0)
    }
}

/// A form that fills the input exactly.
struct Top<T>(T);

impl<'de, T: Form> Deserialize<'de> for Top<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::read(d, &Path::root(T::WHAT)).map(Top)
    }
}

/// One CBOR value of form `T` that must fill `bytes` exactly.
fn read<T: Form>(bytes: &[u8]) -> Result<T, WireError> {
    let mut rest = bytes;
    let Top(value) = ciborium::from_reader(&mut rest).map_err(|e| WireError::Malformed {
        what: T::WHAT,
        reason: meshfed_proto::cbor::reason(e),
    })?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes {
            what: T::WHAT,
            len: rest.len(),
        });
    }
    Ok(value)
}

/// Visits one leaf value of type `T` at a path.
struct Leaf<'a, T>(&'a Path<'a>, PhantomData<T>);

impl<'de> Visitor<'de> for Leaf<'_, u64> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an unsigned integer for {}", self.0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
}

impl<'de> Visitor<'de> for Leaf<'_, Option<u64>> {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an unsigned integer or null for {}", self.0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u64>, E> {
        Ok(Some(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }
}

impl<'de> Visitor<'de> for Leaf<'_, bool> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a boolean for {}", self.0)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
}

/// A CBOR byte string.
struct Blob(Vec<u8>);

impl<'de> Visitor<'de> for Leaf<'_, Blob> {
    type Value = Blob;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a byte string for {}", self.0)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
        Ok(Blob(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
        Ok(Blob(v))
    }
}

macro_rules! leaf {
    ($($ty:ty),+) => {$(
        impl ReadWire for $ty {
            fn read<'de, D: Deserializer<'de>>(d: D, at: &Path<'_>) -> Result<Self, D::Error> {
                d.deserialize_any(Leaf::<$ty>(at, PhantomData))
            }
        }
    )+};
}

leaf!(u64, Option<u64>, bool, Blob);

impl ReadWire for IgnoredAny {
    fn read<'de, D: Deserializer<'de>>(d: D, _: &Path<'_>) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d)
    }
}

/// A CBOR array of `T`s. At most `MAX` are read; the rest are only counted, so `len` may
/// exceed `items.len()`.
struct List<T, const MAX: usize> {
    items: Vec<T>,
    len: usize,
}

impl<T: ReadWire, const MAX: usize> ReadWire for List<T, MAX> {
    fn read<'de, D: Deserializer<'de>>(d: D, at: &Path<'_>) -> Result<Self, D::Error> {
        struct V<'a, T, const MAX: usize>(&'a Path<'a>, PhantomData<T>);

        impl<'de, T: ReadWire, const MAX: usize> Visitor<'de> for V<'_, T, MAX> {
            type Value = List<T, MAX>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array for {}", self.0)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let hint = seq.size_hint().unwrap_or(0).min(MAX).min(PREALLOCATE);
                let mut items = Vec::with_capacity(hint);
                let mut len = 0;
                loop {
                    let here = self.0.join(Step::Index(len));
                    if len < MAX {
                        match seq.next_element_seed(Seed::<T>(&here, PhantomData))? {
                            Some(item) => items.push(item),
                            None => break,
                        }
                    } else if seq.next_element::<IgnoredAny>()?.is_none() {
                        break;
                    }
                    len += 1;
                }
                Ok(List { items, len })
            }
        }

        d.deserialize_any(V::<T, MAX>(at, PhantomData))
    }
}

/// Reads the next array item, named `name`, as a `T`; `n` counts the items read.
fn element<'de, A: SeqAccess<'de>, T: ReadWire>(
    seq: &mut A,
    at: &Path<'_>,
    name: &'static str,
    n: &mut usize,
    shape: &dyn Expected,
) -> Result<T, A::Error> {
    let here = at.join(Step::Field(name));
    let item = seq
        .next_element_seed(Seed::<T>(&here, PhantomData))?
        .ok_or_else(|| de::Error::invalid_length(*n, shape))?;
    *n += 1;
    Ok(item)
}

/// Refuses an array holding more than the `n` items read, counting them all for the error.
fn finish<'de, A: SeqAccess<'de>>(
    mut seq: A,
    n: usize,
    shape: &dyn Expected,
) -> Result<(), A::Error> {
    let mut len = n;
    while seq.next_element::<IgnoredAny>()?.is_some() {
        len += 1;
    }
    if len > n {
        return Err(de::Error::invalid_length(len, shape));
    }
    Ok(())
}

/// Declares a struct read from a CBOR array of exactly its fields, in order: serde's derived
/// visitor would accept an array that holds more items than it reads, so two encodings would
/// decode to one value.
macro_rules! exact_array {
    ($(struct $name:ident { $($field:ident: $ty:ty),+ $(,)? })+) => {$(
        struct $name {
            $($field: $ty),+
        }

        impl ReadWire for $name {
            fn read<'de, D: Deserializer<'de>>(d: D, at: &Path<'_>) -> Result<Self, D::Error> {
                struct V<'a>(&'a Path<'a>);

                impl<'de> Visitor<'de> for V<'_> {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        let fields = [$(stringify!($field)),+].join(", ");
                        write!(f, "an array [{fields}] for {}", self.0)
                    }

                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$name, A::Error> {
                        let mut n = 0;
                        $(let $field = element(&mut seq, self.0, stringify!($field), &mut n, &self)?;)+
                        finish(seq, n, &self)?;
                        Ok($name { $($field),+ })
                    }
                }

                d.deserialize_any(V(at))
            }
        }
    )+};
}

exact_array! {
    struct ItemIn { seq: u64, key_seq: Option<u64>, retransmission: bool }
    struct RangeIn { start: u64, end: u64 }
    struct RefusedIn { seq: u64, reason: u64 }
    struct AckIn {
        epoch: u64,
        below: u64,
        ranges: List<RangeIn, MAX_ACK_RANGES>,
        late: List<u64, MAX_ACK_LATE>,
        refused: List<RefusedIn, MAX_ACK_LATE>,
        credit: u64,
    }
    struct CreditIn { epoch: u64, limit: u64 }
    struct ForwardIn { epoch: u64, floor: u64 }
    struct StreamedIn { batch: u64, first: u64, members: List<Blob, MAX_ITEMS> }
}

impl Form for AckIn {
    const WHAT: &'static str = "ack";
}

impl Form for CreditIn {
    const WHAT: &'static str = "credit";
}

impl Form for ForwardIn {
    const WHAT: &'static str = "forward";
}

/// A transfer as read, before its rules are checked. Not an `exact_array!`: the type of its
/// last item depends on the one before.
struct TransferIn {
    epoch: u64,
    floor: u64,
    items: List<ItemIn, MAX_ITEMS>,
    envelopes: EnvelopesIn,
}

enum EnvelopesIn {
    Batch(Blob),
    Each(List<Blob, MAX_ITEMS>),
    Streamed(StreamedIn),
    /// An unknown kind: its envelopes were skipped.
    Unknown(u64),
}

impl Form for TransferIn {
    const WHAT: &'static str = "transfer";
}

impl ReadWire for TransferIn {
    fn read<'de, D: Deserializer<'de>>(d: D, at: &Path<'_>) -> Result<Self, D::Error> {
        struct V<'a>(&'a Path<'a>);

        impl<'de> Visitor<'de> for V<'_> {
            type Value = TransferIn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "an array [epoch, floor, items, kind, envelopes] for {}",
                    self.0
                )
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TransferIn, A::Error> {
                let mut n = 0;
                let epoch = element(&mut seq, self.0, "epoch", &mut n, &self)?;
                let floor = element(&mut seq, self.0, "floor", &mut n, &self)?;
                let items = element(&mut seq, self.0, "items", &mut n, &self)?;
                let kind: u64 = element(&mut seq, self.0, "kind", &mut n, &self)?;
                let envelopes = match u8::try_from(kind) {
                    Ok(KIND_BATCH) => {
                        EnvelopesIn::Batch(element(&mut seq, self.0, "envelopes", &mut n, &self)?)
                    }
                    Ok(KIND_EACH) => {
                        EnvelopesIn::Each(element(&mut seq, self.0, "envelopes", &mut n, &self)?)
                    }
                    Ok(KIND_STREAMED) => EnvelopesIn::Streamed(element(
                        &mut seq,
                        self.0,
                        "envelopes",
                        &mut n,
                        &self,
                    )?),
                    _ => {
                        let IgnoredAny = element(&mut seq, self.0, "envelopes", &mut n, &self)?;
                        EnvelopesIn::Unknown(kind)
                    }
                };
                finish(seq, n, &self)?;
                Ok(TransferIn {
                    epoch,
                    floor,
                    items,
                    envelopes,
                })
            }
        }

        d.deserialize_any(V(at))
    }
}

#[cfg(test)]
mod tests;
