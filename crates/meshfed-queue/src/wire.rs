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
//! item     = [seq, key_seq / null, retransmission]
//! ack      = [epoch, below, [[start, end], ...], [late, ...], credit]
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
}

/// [`Signed`] borrowed, for [`Transfer::encode_parts`]: the envelopes need not be copied into a
/// [`Transfer`] to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedRef<'a> {
    /// As [`Signed::Batch`].
    Batch(&'a [u8]),
    /// As [`Signed::Each`].
    Each(&'a [&'a [u8]]),
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
        "transfer envelope kind {kind} is unknown (0 is one signed batch, 1 one envelope per item)"
    )]
    UnknownEnvelopeKind {
        /// The kind found.
        kind: u64,
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
    /// An acknowledgement carries more than [`MAX_ACK_LATE`] late entries.
    #[error("ack carries {count} late entries, more than {MAX_ACK_LATE}")]
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
    /// entries, or the peer refuses it.
    pub fn encode(&self) -> Vec<u8> {
        let wire = (
            self.epoch.0,
            self.below.0,
            RangesOut(&self.ranges),
            SeqsOut(&self.late),
            self.credit.0,
        );
        let mut out = Vec::with_capacity(32 + 18 * self.ranges.len() + 9 * self.late.len());
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
            credit,
        } = read(bytes)?;
        if ranges.len > MAX_ACK_RANGES {
            return Err(WireError::TooManyRanges { count: ranges.len });
        }
        if late.len > MAX_ACK_LATE {
            return Err(WireError::TooManyLate { count: late.len });
        }
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

/// The envelopes of a transfer: a byte string or an array of byte strings.
#[derive(Clone, Copy)]
enum EnvelopesOut<'a> {
    Batch(&'a [u8]),
    Each(&'a [&'a [u8]]),
    Owned(&'a [Vec<u8>]),
}

impl Serialize for EnvelopesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Self::Batch(b) => s.serialize_bytes(b),
            Self::Each(e) => s.collect_seq(e.iter().map(|b| Bytes::new(b))),
            Self::Owned(e) => s.collect_seq(e.iter().map(|b| Bytes::new(b))),
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
        reason: reason(e),
    })?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes {
            what: T::WHAT,
            len: rest.len(),
        });
    }
    Ok(value)
}

fn reason<E>(e: ciborium::de::Error<E>) -> String {
    use ciborium::de::Error;
    match e {
        Error::Io(_) => "the input ends early".to_owned(),
        Error::Syntax(at) => format!("not well-formed CBOR at byte {at}"),
        Error::Semantic(Some(at), msg) => format!("{msg} (at byte {at})"),
        Error::Semantic(None, msg) => msg,
        Error::RecursionLimitExceeded => "nested too deeply".to_owned(),
    }
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
    struct AckIn {
        epoch: u64,
        below: u64,
        ranges: List<RangeIn, MAX_ACK_RANGES>,
        late: List<u64, MAX_ACK_LATE>,
        credit: u64,
    }
    struct CreditIn { epoch: u64, limit: u64 }
    struct ForwardIn { epoch: u64, floor: u64 }
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
mod tests {
    use ciborium::Value;
    use proptest::prelude::*;

    use super::*;

    fn cbor(v: Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(&v, &mut out).unwrap();
        out
    }

    fn int(n: u64) -> Value {
        Value::Integer(n.into())
    }

    fn arr<const N: usize>(items: [Value; N]) -> Value {
        Value::Array(items.into())
    }

    fn item(seq: u64, key_seq: Option<u64>, retransmission: bool) -> Item {
        Item {
            seq: Seq(seq),
            key_seq: key_seq.map(KeySeq),
            retransmission,
        }
    }

    fn item_value(seq: u64) -> Value {
        arr([int(seq), Value::Null, Value::Bool(false)])
    }

    /// `[epoch 1, floor, items, kind, envelopes]`.
    fn transfer_value(floor: u64, items: Vec<Value>, kind: u64, envelopes: Value) -> Vec<u8> {
        cbor(arr([
            int(1),
            int(floor),
            Value::Array(items),
            int(kind),
            envelopes,
        ]))
    }

    fn transfer(envelopes: Signed) -> Transfer {
        Transfer {
            epoch: Epoch(3),
            floor: Seq(10),
            items: vec![item(12, Some(0), false), item(10, None, true)],
            envelopes,
        }
    }

    fn ack(below: u64, ranges: &[(u64, u64)], late: &[u64]) -> Ack {
        Ack {
            epoch: Epoch(2),
            below: Seq(below),
            ranges: ranges
                .iter()
                .map(|&(s, e)| SeqRange {
                    start: Seq(s),
                    end: Seq(e),
                })
                .collect(),
            late: late.iter().copied().map(Seq).collect(),
            credit: Seq(64),
        }
    }

    /// `[epoch 2, below, ranges, late, credit 64]`.
    fn ack_value(below: u64, ranges: Vec<Value>, late: Value) -> Vec<u8> {
        cbor(arr([
            int(2),
            int(below),
            Value::Array(ranges),
            late,
            int(64),
        ]))
    }

    fn range_value(start: u64, end: u64) -> Value {
        arr([int(start), int(end)])
    }

    fn transfer_error(bytes: &[u8]) -> String {
        Transfer::decode(bytes).unwrap_err().to_string()
    }

    fn ack_error(bytes: &[u8]) -> String {
        Ack::decode(bytes).unwrap_err().to_string()
    }

    #[test]
    fn transfer_round_trips_with_a_batch_and_with_one_envelope_per_item() {
        for t in [
            transfer(Signed::Batch(vec![7; 5000])),
            transfer(Signed::Each(vec![vec![1, 2, 3], vec![]])),
        ] {
            assert_eq!(Transfer::decode(&t.encode()), Ok(t));
        }
    }

    #[test]
    fn transfer_is_the_documented_array() {
        let t = Transfer {
            epoch: Epoch(1),
            floor: Seq(2),
            items: vec![item(3, None, false), item(4, Some(5), true)],
            envelopes: Signed::Each(vec![vec![0xaa], vec![0xbb]]),
        };
        let items = vec![
            arr([int(3), Value::Null, Value::Bool(false)]),
            arr([int(4), int(5), Value::Bool(true)]),
        ];
        let envelopes = arr([Value::Bytes(vec![0xaa]), Value::Bytes(vec![0xbb])]);
        assert_eq!(
            t.encode(),
            cbor(arr([
                int(1),
                int(2),
                Value::Array(items),
                int(1),
                envelopes
            ]))
        );
        let batch = Transfer {
            envelopes: Signed::Batch(vec![0xcc]),
            ..t
        };
        assert_eq!(batch.encode()[..2], [0x85, 0x01]);
        assert!(batch.encode().ends_with(&[0x00, 0x41, 0xcc]));
    }

    #[test]
    fn encode_parts_writes_what_encode_writes() {
        let each = transfer(Signed::Each(vec![vec![1; 300], vec![2; 70_000]]));
        let Signed::Each(envelopes) = &each.envelopes else {
            unreachable!()
        };
        let refs: Vec<&[u8]> = envelopes.iter().map(Vec::as_slice).collect();
        let parts =
            Transfer::encode_parts(each.epoch, each.floor, &each.items, SignedRef::Each(&refs));
        assert_eq!(parts, each.encode());

        let batch = transfer(Signed::Batch(vec![9; 1 << 20]));
        let parts = Transfer::encode_parts(
            batch.epoch,
            batch.floor,
            &batch.items,
            SignedRef::Batch(&[9; 1 << 20]),
        );
        assert_eq!(parts, batch.encode());
    }

    #[test]
    fn item_is_taken_from_a_transmission() {
        let t = Transmit {
            epoch: Epoch(1),
            seq: Seq(9),
            floor: Seq(4),
            key_seq: Some(KeySeq(2)),
            retransmission: true,
            message: crate::Message::new(
                meshfed_proto::envelope::EnvelopeId::new(
                    meshfed_proto::envelope::Timestamp(0),
                    [0; 10],
                ),
                1,
                (),
            ),
        };
        assert_eq!(Item::from(&t), item(9, Some(2), true));
    }

    #[test]
    fn ack_credit_and_forward_round_trip() {
        for a in [
            ack(0, &[], &[]),
            ack(5, &[(7, 9), (10, 11), (20, 40)], &[3, 8, 1]),
        ] {
            assert_eq!(Ack::decode(&a.encode()), Ok(a));
        }
        let credit = Credit {
            epoch: Epoch(u64::MAX),
            limit: Seq(1 << 40),
        };
        assert_eq!(Credit::decode(&credit.encode()), Ok(credit));
        let forward = Forward {
            epoch: Epoch(0),
            floor: Seq(17),
        };
        assert_eq!(Forward::decode(&forward.encode()), Ok(forward));
        assert_eq!(forward.encode(), cbor(arr([int(0), int(17)])));
    }

    #[test]
    fn transfer_without_items_is_refused() {
        let bytes = transfer_value(0, vec![], 1, arr([]));
        assert_eq!(transfer_error(&bytes), "transfer carries no items");
    }

    #[test]
    fn transfer_with_too_many_items_is_refused() {
        let t = Transfer {
            epoch: Epoch(1),
            floor: Seq(0),
            items: (0..=MAX_ITEMS as u64)
                .map(|s| item(s, None, false))
                .collect(),
            envelopes: Signed::Batch(vec![]),
        };
        assert_eq!(
            Transfer::decode(&t.encode()),
            Err(WireError::TooManyItems { count: 65_537 })
        );
        let at_limit = Transfer {
            items: t.items[..MAX_ITEMS].to_vec(),
            ..t
        };
        assert_eq!(Transfer::decode(&at_limit.encode()), Ok(at_limit));
    }

    #[test]
    fn transfer_item_below_the_floor_is_refused_naming_it() {
        let bytes = transfer_value(
            9,
            vec![item_value(9), item_value(7)],
            0,
            Value::Bytes(vec![]),
        );
        assert_eq!(
            transfer_error(&bytes),
            "transfer item 1: #7 is below the floor #9"
        );
    }

    #[test]
    fn transfer_repeating_a_sequence_number_is_refused() {
        let items = vec![item_value(4), item_value(5), item_value(4)];
        let bytes = transfer_value(0, items, 0, Value::Bytes(vec![]));
        assert_eq!(transfer_error(&bytes), "transfer item 2: #4 repeats item 0");
    }

    #[test]
    fn transfer_needs_one_envelope_per_item() {
        let envelopes = arr([Value::Bytes(vec![1])]);
        let bytes = transfer_value(0, vec![item_value(0), item_value(1)], 1, envelopes);
        assert_eq!(
            transfer_error(&bytes),
            "transfer carries 1 envelopes for 2 items"
        );
    }

    #[test]
    fn transfer_with_an_unknown_envelope_kind_is_refused() {
        let bytes = transfer_value(0, vec![item_value(0)], 2, Value::Bytes(vec![1]));
        assert_eq!(
            Transfer::decode(&bytes),
            Err(WireError::UnknownEnvelopeKind { kind: 2 })
        );
    }

    #[test]
    fn arrays_with_extra_items_are_refused() {
        let long_item = arr([int(0), Value::Null, Value::Bool(false), int(0)]);
        let bytes = transfer_value(0, vec![long_item], 0, Value::Bytes(vec![]));
        assert_eq!(
            transfer_error(&bytes),
            "malformed transfer: invalid length 4, expected an array [seq, key_seq, \
             retransmission] for transfer.items[0]"
        );
        let mut long_transfer = transfer(Signed::Batch(vec![])).encode();
        long_transfer[0] = 0x86;
        long_transfer.push(0x00);
        assert!(transfer_error(&long_transfer).contains("invalid length 6"));
        let credit = cbor(arr([int(1), int(2), int(3)]));
        assert_eq!(
            Credit::decode(&credit).unwrap_err().to_string(),
            "malformed credit: invalid length 3, expected an array [epoch, limit] for credit"
        );
        let short = cbor(arr([int(1)]));
        assert!(
            Forward::decode(&short)
                .unwrap_err()
                .to_string()
                .contains("invalid length 1, expected an array [epoch, floor] for forward")
        );
    }

    #[test]
    fn byte_strings_and_arrays_are_not_interchangeable() {
        // An envelope as an array of small numbers.
        let bytes = transfer_value(0, vec![item_value(0)], 0, arr([int(1), int(2)]));
        assert!(
            transfer_error(&bytes).contains("expected a byte string for transfer.envelopes"),
            "{}",
            transfer_error(&bytes)
        );
        // A range, and the late list, as byte strings.
        let bytes = ack_value(0, vec![Value::Bytes(vec![3, 4])], arr([]));
        assert!(ack_error(&bytes).contains("expected an array [start, end] for ack.ranges[0]"));
        let bytes = ack_value(0, vec![], Value::Bytes(vec![3, 4]));
        assert!(ack_error(&bytes).contains("expected an array for ack.late"));
    }

    #[test]
    fn wrong_types_are_refused_saying_where() {
        let bad_item = arr([int(0), Value::Text("x".into()), Value::Bool(false)]);
        let bytes = transfer_value(0, vec![item_value(1), bad_item], 0, Value::Bytes(vec![]));
        assert_eq!(
            transfer_error(&bytes),
            "malformed transfer: invalid type: string \"x\", expected an unsigned integer or \
             null for transfer.items[1].key_seq"
        );
        let bytes = ack_value(0, vec![], arr([int(1), Value::Integer((-1).into())]));
        assert_eq!(
            ack_error(&bytes),
            "malformed ack: invalid type: integer `-1`, expected an unsigned integer for \
             ack.late[1]"
        );
        let retransmission_as_number = arr([int(0), Value::Null, int(1)]);
        let bytes = transfer_value(0, vec![retransmission_as_number], 0, Value::Bytes(vec![]));
        assert!(
            transfer_error(&bytes)
                .contains("expected a boolean for transfer.items[0].retransmission")
        );
    }

    #[test]
    fn tags_truncation_and_trailing_bytes_are_refused() {
        let tagged = cbor(arr([
            Value::Tag(2, Box::new(Value::Bytes(vec![1]))),
            int(2),
        ]));
        assert!(Credit::decode(&tagged).is_err());
        let tagged = cbor(Value::Tag(24, Box::new(arr([int(1), int(2)]))));
        assert!(Credit::decode(&tagged).is_err());

        let whole = transfer(Signed::Each(vec![vec![1], vec![2]])).encode();
        let cut = &whole[..whole.len() - 1];
        assert_eq!(
            transfer_error(cut),
            "malformed transfer: the input ends early"
        );
        let mut longer = whole.clone();
        longer.extend([0, 0]);
        assert_eq!(transfer_error(&longer), "2 stray bytes after the transfer");
        assert!(Forward::decode(&[]).is_err());
        assert!(Forward::decode(&[0xff]).is_err());
    }

    #[test]
    fn ack_ranges_must_be_ascending_non_empty_and_above_the_cumulative_point() {
        let cases: [(&[(u64, u64)], &str); 6] = [
            (&[(6, 8), (10, 4)], "ack range 1: #10..#4 is inverted"),
            (&[(6, 6)], "ack range 0: #6..#6 is empty"),
            (
                &[(5, 8)],
                "ack range 0: #5..#8 does not start above the cumulative point #5",
            ),
            (
                &[(7, 9), (8, 12)],
                "ack range 1: #8..#12 does not start above the end #9 of range 0",
            ),
            (
                &[(7, 9), (9, 12)],
                "ack range 1: #9..#12 does not start above the end #9 of range 0",
            ),
            (
                &[(20, 30), (7, 9)],
                "ack range 1: #7..#9 does not start above the end #30 of range 0",
            ),
        ];
        for (ranges, error) in cases {
            let ranges = ranges.iter().map(|&(s, e)| range_value(s, e)).collect();
            assert_eq!(ack_error(&ack_value(5, ranges, arr([]))), error);
        }
    }

    #[test]
    fn ack_with_too_many_ranges_or_late_entries_is_refused() {
        let ranges = (0..=MAX_ACK_RANGES as u64)
            .map(|i| range_value(2 * i + 1, 2 * i + 2))
            .collect();
        assert_eq!(
            Ack::decode(&ack_value(0, ranges, arr([]))),
            Err(WireError::TooManyRanges { count: 4097 })
        );
        let late = Value::Array((0..=MAX_ACK_LATE as u64).map(int).collect());
        assert_eq!(
            ack_error(&ack_value(0, vec![], late)),
            "ack carries 65537 late entries, more than 65536"
        );
    }

    #[test]
    fn huge_announced_lengths_fail_without_allocating_them() {
        // An array announcing 2^62 items, then nothing.
        let mut bytes = vec![0x85, 0x01, 0x00, 0x9b];
        bytes.extend((1u64 << 62).to_be_bytes());
        assert_eq!(
            transfer_error(&bytes),
            "malformed transfer: the input ends early"
        );
        // A byte string announcing 2^62 bytes.
        let mut bytes = vec![0x85, 0x01, 0x00, 0x81, 0x83, 0x00, 0xf6, 0xf4, 0x00, 0x5b];
        bytes.extend((1u64 << 62).to_be_bytes());
        assert!(Transfer::decode(&bytes).is_err());
    }

    fn items() -> impl Strategy<Value = (u64, Vec<Item>)> {
        (
            0..u64::MAX / 2,
            prop::collection::btree_set(0..10_000u64, 1..40),
            prop::collection::vec((any::<Option<u64>>(), any::<bool>()), 40),
        )
            .prop_flat_map(|(floor, offsets, fields)| {
                let items: Vec<Item> = offsets
                    .into_iter()
                    .zip(fields)
                    .map(|(o, (k, r))| item(floor + o, k, r))
                    .collect();
                (Just(floor), Just(items).prop_shuffle())
            })
    }

    fn transfers() -> impl Strategy<Value = Transfer> {
        (
            any::<u64>(),
            items(),
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(epoch, (floor, items), batch, bytes)| {
                let envelopes = if batch {
                    Signed::Batch(bytes)
                } else {
                    Signed::Each(
                        items
                            .iter()
                            .map(|i| bytes[..(i.seq.0 % 7) as usize % (bytes.len() + 1)].to_vec())
                            .collect(),
                    )
                };
                Transfer {
                    epoch: Epoch(epoch),
                    floor: Seq(floor),
                    items,
                    envelopes,
                }
            })
    }

    fn acks() -> impl Strategy<Value = Ack> {
        (
            any::<(u64, u64)>(),
            0..u64::MAX / 2,
            prop::collection::vec((1..100u64, 1..100u64), 0..20),
            prop::collection::vec(any::<u64>(), 0..20),
        )
            .prop_map(|((epoch, credit), below, gaps, late)| {
                let mut end = below;
                let ranges = gaps
                    .into_iter()
                    .map(|(gap, len)| {
                        let start = end + gap;
                        end = start + len;
                        SeqRange {
                            start: Seq(start),
                            end: Seq(end),
                        }
                    })
                    .collect();
                Ack {
                    epoch: Epoch(epoch),
                    below: Seq(below),
                    ranges,
                    late: late.into_iter().map(Seq).collect(),
                    credit: Seq(credit),
                }
            })
    }

    proptest! {
        #[test]
        fn every_valid_frame_round_trips(t in transfers(), a in acks(), (e, s) in any::<(u64, u64)>()) {
            prop_assert_eq!(Transfer::decode(&t.encode()), Ok(t));
            prop_assert_eq!(Ack::decode(&a.encode()), Ok(a));
            let credit = Credit { epoch: Epoch(e), limit: Seq(s) };
            prop_assert_eq!(Credit::decode(&credit.encode()), Ok(credit));
            let forward = Forward { epoch: Epoch(e), floor: Seq(s) };
            prop_assert_eq!(Forward::decode(&forward.encode()), Ok(forward));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Transfer::decode(&bytes);
            let _ = Ack::decode(&bytes);
            let _ = Credit::decode(&bytes);
            let _ = Forward::decode(&bytes);
        }

        #[test]
        fn a_damaged_frame_is_refused_or_decodes_to_what_it_re_encodes(
            t in transfers(),
            a in acks(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = t.encode();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(t) = Transfer::decode(&bytes) {
                prop_assert_eq!(Transfer::decode(&t.encode()), Ok(t));
            }
            let mut bytes = a.encode();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(a) = Ack::decode(&bytes) {
                prop_assert_eq!(Ack::decode(&a.encode()), Ok(a));
            }
        }
    }
}
