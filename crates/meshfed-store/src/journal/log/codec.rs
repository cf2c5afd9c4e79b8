//! The log's bytes: segment files of frames, frames of records, each record with its length and
//! CRC32. All integers are little-endian.
//!
//! ```text
//! segment = magic frame*                      magic: the 8 bytes "mfjlog01"
//! frame   = len:u32 crc:u32 record+           len: bytes of the records
//! record  = len:u32 crc:u32 tag:u8 field*     len: bytes after the 8-byte header, crc: their CRC32
//! ```
//!
//! A frame's CRC is the CRC32 of its `len` bytes followed by the 8 header bytes of each of its
//! records; each record header holds the CRC32 of that record's bytes, so the frame's CRC covers
//! everything in it while every payload byte is hashed once. A frame is what the writer commits
//! with one `fdatasync`: it is valid whole or not at all, and a request's records are never split
//! across frames. A record is also checked alone (its own CRC) when it is read back later.
//!
//! Records (`str` is `len:u16` and UTF-8 bytes, ids are 16 bytes, times are ms since the epoch):
//!
//! ```text
//! 1 append         seq:u64 id priority:u8 qos:u8 flags:u8 [deadline:u64] enqueued:u64
//!                  destination:str [order_source:str order_destination:str order_topic:str]
//!                  payload_len:u32 payload            flags: 1 deadline, 2 order scope
//! 2 remove         id*                                outbound messages gone
//! 3 remember       id until:u64                       a delivered id of the dedup window
//! 4 forget         id*                                delivered ids forgotten
//! 5 forget_expired now:u64                            delivered ids with until <= now forgotten
//! ```

use std::str::FromStr;

use meshfed_proto::envelope::{EnvelopeId, Priority, Qos, Timestamp};

use crate::error::StoreError;
use crate::journal::records::{DeliveredId, OrderScope, OutboundMessage};
use crate::time_fmt::to_sql;

/// The first bytes of every segment file (the format's name and version).
pub(crate) const MAGIC: [u8; 8] = *b"mfjlog01";

/// Bytes of a frame's or a record's header (length and CRC32).
pub(crate) const HEADER: usize = 8;

/// The largest record the log takes (a frame must stay within `u32`).
pub(crate) const MAX_RECORD: usize = 1 << 30;

const APPEND: u8 = 1;
const REMOVE: u8 = 2;
const REMEMBER: u8 = 3;
const FORGET: u8 = 4;
const FORGET_EXPIRED: u8 = 5;

const HAS_DEADLINE: u8 = 1;
const HAS_ORDER: u8 = 2;

/// Where a record is: its segment, the offset of its header in the file, and its length with
/// the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// One change, as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// An outbound message stored, at `seq` in acceptance order.
    Append { seq: u64, message: OutboundMessage },
    /// Outbound messages deleted.
    Remove(Vec<EnvelopeId>),
    /// A delivered id remembered (the later expiry wins).
    Remember(DeliveredId),
    /// Delivered ids forgotten.
    Forget(Vec<EnvelopeId>),
    /// Delivered ids expired at this instant forgotten.
    ForgetExpired(Timestamp),
}

/// A frame being built: records appended to one buffer that is written with one call.
#[derive(Debug)]
pub(crate) struct Frame {
    buf: Vec<u8>,
    segment: u64,
    start: u64,
}

impl Frame {
    /// An empty frame that will be written to `segment` at offset `start`.
    #[cfg(test)]
    pub(crate) fn new(segment: u64, start: u64) -> Self {
        Self::reusing(Vec::new(), segment, start)
    }

    /// An empty frame for `segment` at `start`, in the buffer of an earlier one (its
    /// allocation kept: a batch's frame holds all its payloads).
    pub(crate) fn reusing(mut buf: Vec<u8>, segment: u64, start: u64) -> Self {
        buf.clear();
        buf.extend_from_slice(&[0; HEADER]);
        Self {
            buf,
            segment,
            start,
        }
    }

    /// The frame's buffer, for the next frame.
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Whether it holds no record.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.len() == HEADER
    }

    /// The segment and offset it is for.
    pub(crate) fn place(&self) -> (u64, u64) {
        (self.segment, self.start)
    }

    fn record(&mut self, tag: u8, body: impl FnOnce(&mut Vec<u8>)) -> Loc {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER]);
        self.buf.push(tag);
        body(&mut self.buf);
        let len = self.buf.len() - at - HEADER;
        let crc = crc32fast::hash(&self.buf[at + HEADER..]);
        // Invariant: callers check sizes against MAX_RECORD first (`check_append`), and the
        // other records are a few bytes per id of a batch.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        Loc {
            segment: self.segment,
            offset: self.start + at as u64,
            len: len.saturating_add(HEADER as u32),
        }
    }

    /// Appends an outbound message (checked with [`check_append`] first).
    pub(crate) fn append(&mut self, seq: u64, m: &OutboundMessage) -> Loc {
        self.record(APPEND, |b| {
            b.extend_from_slice(&seq.to_le_bytes());
            b.extend_from_slice(&m.id.0);
            b.push(m.priority.get());
            b.push(m.qos.level());
            let flags = if m.deadline.is_some() {
                HAS_DEADLINE
            } else {
                0
            } | if m.order.is_some() { HAS_ORDER } else { 0 };
            b.push(flags);
            if let Some(d) = m.deadline {
                b.extend_from_slice(&d.0.to_le_bytes());
            }
            b.extend_from_slice(&m.enqueued.0.to_le_bytes());
            put_str(b, m.destination.as_str());
            if let Some(o) = &m.order {
                put_str(b, o.source.as_str());
                put_str(b, o.destination.as_str());
                put_str(b, o.topic.as_str());
            }
            let n = u32::try_from(m.payload.len()).unwrap_or(u32::MAX);
            b.extend_from_slice(&n.to_le_bytes());
            b.extend_from_slice(&m.payload);
        })
    }

    /// Records outbound messages deleted.
    pub(crate) fn remove(&mut self, ids: &[EnvelopeId]) -> Loc {
        self.record(REMOVE, |b| {
            ids.iter().for_each(|id| b.extend_from_slice(&id.0))
        })
    }

    /// Records a delivered id remembered.
    pub(crate) fn remember(&mut self, d: DeliveredId) -> Loc {
        self.record(REMEMBER, |b| {
            b.extend_from_slice(&d.id.0);
            b.extend_from_slice(&d.until.0.to_le_bytes());
        })
    }

    /// Records delivered ids forgotten.
    pub(crate) fn forget(&mut self, ids: &[EnvelopeId]) -> Loc {
        self.record(FORGET, |b| {
            ids.iter().for_each(|id| b.extend_from_slice(&id.0))
        })
    }

    /// Records delivered ids expired at `now` forgotten.
    pub(crate) fn forget_expired(&mut self, now: Timestamp) -> Loc {
        self.record(FORGET_EXPIRED, |b| {
            b.extend_from_slice(&now.0.to_le_bytes())
        })
    }

    /// Copies a record read back whole (header and body, its CRC checked) into this frame.
    pub(crate) fn copy(&mut self, record: &[u8]) -> Loc {
        let at = self.buf.len();
        self.buf.extend_from_slice(record);
        Loc {
            segment: self.segment,
            offset: self.start + at as u64,
            len: u32::try_from(record.len()).unwrap_or(u32::MAX),
        }
    }

    /// The frame's bytes, its header filled in.
    pub(crate) fn finish(&mut self) -> &[u8] {
        let len = u32::try_from(self.buf.len() - HEADER).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        let crc = frame_crc(&self.buf[..4], &self.buf[HEADER..]).unwrap_or(0);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }
}

/// Refuses what the log (and the SQLite tables it stands beside) cannot hold: timestamps beyond
/// `i64`, strings over 65,535 bytes, payloads over [`MAX_RECORD`].
pub(crate) fn check_append(m: &OutboundMessage) -> Result<(), StoreError> {
    to_sql("enqueued", m.enqueued)?;
    if let Some(d) = m.deadline {
        to_sql("deadline", d)?;
    }
    let strings = [m.destination.as_str()].into_iter().chain(
        m.order
            .iter()
            .flat_map(|o| [o.source.as_str(), o.destination.as_str(), o.topic.as_str()]),
    );
    for s in strings {
        if s.len() > usize::from(u16::MAX) {
            return Err(StoreError::TooLargeForLog {
                what: "a mesh id or topic",
                len: s.len(),
                max: usize::from(u16::MAX),
            });
        }
    }
    if m.payload.len() > MAX_RECORD - 4096 {
        return Err(StoreError::TooLargeForLog {
            what: "an outbound payload",
            len: m.payload.len(),
            max: MAX_RECORD - 4096,
        });
    }
    Ok(())
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    let n = u16::try_from(s.len()).unwrap_or(u16::MAX);
    b.extend_from_slice(&n.to_le_bytes());
    b.extend_from_slice(&s.as_bytes()[..usize::from(n)]);
}

/// The CRC a frame header must carry: over its `len` bytes and each record header in
/// `records`; `None` if the records do not tile `records` exactly.
fn frame_crc(len: &[u8], records: &[u8]) -> Option<u32> {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    let mut at = 0;
    while at < records.len() {
        let header = records.get(at..at + HEADER)?;
        h.update(header);
        at = at.checked_add(HEADER + read_u32(header) as usize)?;
    }
    (at == records.len()).then(|| h.finalize())
}

fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Checks the frame at `at` in `data` (a segment's bytes): its length, CRC and every record's
/// CRC. Returns where it ends, or what is wrong with it.
pub(crate) fn check_frame(data: &[u8], at: usize) -> Result<usize, String> {
    let Some(header) = data.get(at..at + HEADER) else {
        return Err(format!(
            "a frame header needs {HEADER} bytes, {} left",
            data.len() - at
        ));
    };
    let len = read_u32(header) as usize;
    if len == 0 {
        return Err("a frame of length 0".into());
    }
    let end = at + HEADER + len;
    let Some(records) = data.get(at + HEADER..end) else {
        return Err(format!(
            "a frame of {len} bytes, {} left in the file",
            data.len() - at - HEADER
        ));
    };
    let Some(crc) = frame_crc(&header[..4], records) else {
        return Err("the frame's records do not add up to its length".into());
    };
    if crc != read_u32(&header[4..]) {
        return Err("the frame's CRC32 does not match".into());
    }
    let mut r = 0;
    while r < records.len() {
        let rlen = read_u32(&records[r..]) as usize;
        let body = &records[r + HEADER..r + HEADER + rlen];
        if rlen == 0 || crc32fast::hash(body) != read_u32(&records[r + 4..]) {
            return Err(format!(
                "the record at offset {} fails its CRC32",
                at + HEADER + r
            ));
        }
        r += HEADER + rlen;
    }
    Ok(end)
}

/// The records of a frame that [`check_frame`] accepted: each record's offset in `data` and its
/// bytes, header included.
pub(crate) fn records(data: &[u8], at: usize, end: usize) -> impl Iterator<Item = (usize, &[u8])> {
    let mut r = at + HEADER;
    std::iter::from_fn(move || {
        if r >= end {
            return None;
        }
        let len = HEADER + read_u32(data.get(r..r + 4)?) as usize;
        let record = data.get(r..r + len)?;
        let offset = r;
        r += len;
        Some((offset, record))
    })
}

/// Checks one record read back alone (header and body): length and CRC32. Returns its body.
pub(crate) fn check_record(record: &[u8]) -> Result<&[u8], String> {
    let Some(header) = record.get(..HEADER) else {
        return Err("a record shorter than its header".into());
    };
    let body = &record[HEADER..];
    if read_u32(header) as usize != body.len() {
        return Err("the record's length does not match its place".into());
    }
    if crc32fast::hash(body) != read_u32(&header[4..]) {
        return Err("the record fails its CRC32".into());
    }
    Ok(body)
}

/// Decodes a record's body (after its header).
pub(crate) fn decode(body: &[u8]) -> Result<Record, String> {
    let mut r = Reader { b: body, at: 0 };
    let record = match r.u8()? {
        APPEND => {
            let seq = r.u64()?;
            let id = r.id()?;
            let priority = Priority::try_from(r.u8()?).map_err(|e| format!("priority: {e}"))?;
            let qos = Qos::try_from(r.u8()?).map_err(|e| format!("qos: {e}"))?;
            let flags = r.u8()?;
            if flags & !(HAS_DEADLINE | HAS_ORDER) != 0 {
                return Err(format!("unknown flags {flags:#04x}"));
            }
            let deadline = if flags & HAS_DEADLINE != 0 {
                Some(Timestamp(r.u64()?))
            } else {
                None
            };
            let enqueued = Timestamp(r.u64()?);
            let destination = r.parse("destination")?;
            let order = if flags & HAS_ORDER != 0 {
                Some(OrderScope {
                    source: r.parse("order source")?,
                    destination: r.parse("order destination")?,
                    topic: r.parse("order topic")?,
                })
            } else {
                None
            };
            let n = r.u32()? as usize;
            let payload = r.take(n)?.to_vec();
            Record::Append {
                seq,
                message: OutboundMessage {
                    id,
                    destination,
                    priority,
                    qos,
                    deadline,
                    order,
                    enqueued,
                    payload,
                },
            }
        }
        REMOVE => Record::Remove(r.ids()?),
        REMEMBER => Record::Remember(DeliveredId {
            id: r.id()?,
            until: Timestamp(r.u64()?),
        }),
        FORGET => Record::Forget(r.ids()?),
        FORGET_EXPIRED => Record::ForgetExpired(Timestamp(r.u64()?)),
        tag => return Err(format!("unknown record type {tag}")),
    };
    if r.at != body.len() {
        return Err(format!("{} bytes after the record", body.len() - r.at));
    }
    Ok(record)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .b
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| {
                format!(
                    "the record ends early (byte {} of {})",
                    self.at,
                    self.b.len()
                )
            })?;
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(read_u32(self.take(4)?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn id(&mut self) -> Result<EnvelopeId, String> {
        let mut a = [0; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(EnvelopeId(a))
    }

    fn ids(&mut self) -> Result<Vec<EnvelopeId>, String> {
        let rest = self.b.len() - self.at;
        if !rest.is_multiple_of(16) {
            return Err(format!("{rest} bytes is not a list of 16-byte ids"));
        }
        (0..rest / 16).map(|_| self.id()).collect()
    }

    fn parse<T>(&mut self, what: &str) -> Result<T, String>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let mut a = [0; 2];
        a.copy_from_slice(self.take(2)?);
        let n = usize::from(u16::from_le_bytes(a));
        let s = std::str::from_utf8(self.take(n)?).map_err(|e| format!("{what}: {e}"))?;
        s.parse().map_err(|e| format!("{what} {s:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn message(n: u8, order: bool, deadline: bool) -> OutboundMessage {
        OutboundMessage {
            id: EnvelopeId([n; 16]),
            destination: "plant-b".parse().unwrap(),
            priority: Priority::try_from(n % 8).unwrap(),
            qos: Qos::try_from(n % 3).unwrap(),
            deadline: deadline.then_some(Timestamp(u64::from(n) * 7)),
            order: order.then(|| OrderScope {
                source: "plant-a".parse().unwrap(),
                destination: "plant-z".parse().unwrap(),
                topic: "line/1/temp".parse().unwrap(),
            }),
            enqueued: Timestamp(1_000 + u64::from(n)),
            payload: vec![n; usize::from(n) * 3],
        }
    }

    fn frame_of(records: &[Record]) -> Vec<u8> {
        let mut f = Frame::new(1, MAGIC.len() as u64);
        for r in records {
            match r {
                Record::Append { seq, message } => f.append(*seq, message),
                Record::Remove(ids) => f.remove(ids),
                Record::Remember(d) => f.remember(*d),
                Record::Forget(ids) => f.forget(ids),
                Record::ForgetExpired(now) => f.forget_expired(*now),
            };
        }
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(f.finish());
        file
    }

    fn decode_all(file: &[u8]) -> Vec<Record> {
        let end = check_frame(file, MAGIC.len()).unwrap();
        assert_eq!(end, file.len());
        records(file, MAGIC.len(), end)
            .map(|(_, r)| decode(check_record(r).unwrap()).unwrap())
            .collect()
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (any::<u64>(), any::<u8>(), any::<bool>(), any::<bool>()).prop_map(|(seq, n, o, d)| {
                Record::Append {
                    seq,
                    message: message(n, o, d),
                }
            }),
            proptest::collection::vec(any::<[u8; 16]>(), 0..5)
                .prop_map(|v| Record::Remove(v.into_iter().map(EnvelopeId).collect())),
            (any::<[u8; 16]>(), any::<u64>()).prop_map(|(id, until)| Record::Remember(
                DeliveredId {
                    id: EnvelopeId(id),
                    until: Timestamp(until)
                }
            )),
            proptest::collection::vec(any::<[u8; 16]>(), 0..5)
                .prop_map(|v| Record::Forget(v.into_iter().map(EnvelopeId).collect())),
            any::<u64>().prop_map(|t| Record::ForgetExpired(Timestamp(t))),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(records in proptest::collection::vec(arb_record(), 1..8)) {
            let file = frame_of(&records);
            prop_assert_eq!(decode_all(&file), records);
        }

        #[test]
        fn any_flipped_bit_fails_the_frame(
            records in proptest::collection::vec(arb_record(), 1..4),
            pick in any::<usize>(),
            bit in 0u8..8,
        ) {
            let mut file = frame_of(&records);
            let at = MAGIC.len() + pick % (file.len() - MAGIC.len());
            file[at] ^= 1 << bit;
            prop_assert!(check_frame(&file, MAGIC.len()).is_err());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = check_record(&bytes);
            let _ = check_frame(&bytes, 0);
        }
    }

    #[test]
    fn a_truncated_frame_says_how_much_is_missing() {
        let file = frame_of(&[Record::ForgetExpired(Timestamp(5))]);
        let err = check_frame(&file[..file.len() - 3], MAGIC.len()).unwrap_err();
        assert_eq!(err, "a frame of 17 bytes, 14 left in the file");
    }
}
