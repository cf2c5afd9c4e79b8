//! What the log holds, in memory: the outbound queues (by destination, priority, acceptance
//! order) with where each message's record is, the dedup window, and each segment's live
//! records. Replay and the writer change it through the same methods, record by record, so the
//! index after a restart is the index before it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use meshfed_proto::MeshId;
use meshfed_proto::envelope::{EnvelopeId, Priority, Timestamp};

use super::codec::{Loc, Record};
use crate::journal::records::{Backlog, DeliveredId, OutboundMessage};

/// One segment file: its handle (for the writer and for readers, by offset), its length and
/// the records in it that are still live.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) file: Arc<SegmentFile>,
    /// Bytes in the file (up to the end of its last frame).
    pub(crate) len: u64,
    /// Live records in it: outbound messages not removed, the latest record of each delivered
    /// id still remembered.
    pub(crate) live_records: u64,
    /// Their bytes.
    pub(crate) live_bytes: u64,
}

/// An open segment file and its path (for errors).
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
}

/// A live record that compaction may move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Live {
    Outbound(EnvelopeId),
    Delivered(EnvelopeId),
}

#[derive(Debug)]
struct Slot {
    destination: MeshId,
    key: QueueKey,
    loc: Loc,
    size: u64,
}

/// Highest priority first, then acceptance order.
type QueueKey = (Reverse<Priority>, u64);

#[derive(Debug, Default)]
struct Queue {
    order: BTreeMap<QueueKey, EnvelopeId>,
    bytes: u64,
}

/// A delivered id: remembered in the log (until, and its latest record), in SQLite (a request
/// that also wrote SQLite tables), or both. It expires at the later of the two.
#[derive(Debug, Default, Clone, Copy)]
struct Dedup {
    log: Option<(Timestamp, Loc)>,
    sqlite: Option<Timestamp>,
}

impl Dedup {
    fn until(&self) -> Option<Timestamp> {
        self.log.map(|(t, _)| t).max(self.sqlite)
    }
}

/// The in-memory index of the log (and of the delivered ids SQLite holds).
#[derive(Debug, Default)]
pub(crate) struct Index {
    outbound: HashMap<EnvelopeId, Slot>,
    queues: BTreeMap<MeshId, Queue>,
    delivered: HashMap<EnvelopeId, Dedup>,
    log_expiry: BTreeSet<(Timestamp, EnvelopeId)>,
    sqlite_expiry: BTreeSet<(Timestamp, EnvelopeId)>,
    /// By number, oldest first; the last is the one written to.
    pub(crate) segments: BTreeMap<u64, Segment>,
    next_seq: u64,
}

impl Index {
    /// Applies a record read back from the log at `loc`.
    pub(crate) fn apply(&mut self, record: &Record, loc: Loc) {
        match record {
            Record::Append { seq, message } => self.insert_outbound(*seq, message, loc),
            Record::Remove(ids) => ids.iter().for_each(|id| {
                self.remove_outbound(id);
            }),
            Record::Remember(d) => self.remember_log(*d, loc),
            Record::Forget(ids) => ids.iter().for_each(|id| self.forget_log(id)),
            Record::ForgetExpired(now) => self.forget_expired_log(*now),
        }
    }

    /// The next acceptance number.
    pub(crate) fn take_seq(&mut self) -> u64 {
        self.next_seq = self.next_seq.max(1);
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn live(&mut self, loc: Loc) {
        if let Some(s) = self.segments.get_mut(&loc.segment) {
            s.live_records += 1;
            s.live_bytes += u64::from(loc.len);
        }
    }

    fn dead(&mut self, loc: Loc) {
        if let Some(s) = self.segments.get_mut(&loc.segment) {
            s.live_records = s.live_records.saturating_sub(1);
            s.live_bytes = s.live_bytes.saturating_sub(u64::from(loc.len));
        }
    }

    /// Whether an outbound message with this id is stored.
    pub(crate) fn has_outbound(&self, id: &EnvelopeId) -> bool {
        self.outbound.contains_key(id)
    }

    /// Stores an outbound message whose record is at `loc`. A message already stored stays as
    /// it is, unless the record is its copy (same `seq`, moved forward by compaction).
    pub(crate) fn insert_outbound(&mut self, seq: u64, m: &OutboundMessage, loc: Loc) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        if let Some(slot) = self.outbound.get_mut(&m.id) {
            if slot.key.1 == seq {
                let old = std::mem::replace(&mut slot.loc, loc);
                self.dead(old);
                self.live(loc);
            }
            return;
        }
        let key = (Reverse(m.priority), seq);
        let size = m.payload.len() as u64;
        let queue = self.queues.entry(m.destination.clone()).or_default();
        queue.order.insert(key, m.id);
        queue.bytes += size;
        self.outbound.insert(
            m.id,
            Slot {
                destination: m.destination.clone(),
                key,
                loc,
                size,
            },
        );
        self.live(loc);
    }

    /// Deletes an outbound message; false if none is stored with this id.
    pub(crate) fn remove_outbound(&mut self, id: &EnvelopeId) -> bool {
        let Some(slot) = self.outbound.remove(id) else {
            return false;
        };
        if let Some(queue) = self.queues.get_mut(&slot.destination) {
            queue.order.remove(&slot.key);
            queue.bytes = queue.bytes.saturating_sub(slot.size);
            if queue.order.is_empty() {
                self.queues.remove(&slot.destination);
            }
        }
        self.dead(slot.loc);
        true
    }

    /// Until when the log remembers `id`, if it does.
    pub(crate) fn log_until(&self, id: &EnvelopeId) -> Option<Timestamp> {
        self.delivered.get(id).and_then(|d| d.log).map(|(t, _)| t)
    }

    /// Whether SQLite remembers `id`.
    pub(crate) fn in_sqlite(&self, id: &EnvelopeId) -> bool {
        self.delivered.get(id).is_some_and(|d| d.sqlite.is_some())
    }

    /// A delivered id remembered in the log by the record at `loc`: the later expiry wins, and
    /// an equal one moves the entry to the newer record (a copy made by compaction).
    pub(crate) fn remember_log(&mut self, d: DeliveredId, loc: Loc) {
        let entry = self.delivered.entry(d.id).or_default();
        let old = entry.log;
        if old.is_some_and(|(t, _)| t > d.until) {
            return;
        }
        entry.log = Some((d.until, loc));
        if let Some((t, old_loc)) = old {
            self.log_expiry.remove(&(t, d.id));
            self.dead(old_loc);
        }
        self.log_expiry.insert((d.until, d.id));
        self.live(loc);
    }

    /// Forgets what the log remembers of `id`.
    pub(crate) fn forget_log(&mut self, id: &EnvelopeId) {
        let Some(entry) = self.delivered.get_mut(id) else {
            return;
        };
        let Some((t, loc)) = entry.log.take() else {
            return;
        };
        if entry.sqlite.is_none() {
            self.delivered.remove(id);
        }
        self.log_expiry.remove(&(t, *id));
        self.dead(loc);
    }

    /// Whether the log remembers an id whose entry has expired at `now`.
    pub(crate) fn any_log_expired(&self, now: Timestamp) -> bool {
        self.log_expiry.first().is_some_and(|(t, _)| *t <= now)
    }

    /// Whether SQLite remembers an id whose entry has expired at `now`.
    pub(crate) fn any_sqlite_expired(&self, now: Timestamp) -> bool {
        self.sqlite_expiry.first().is_some_and(|(t, _)| *t <= now)
    }

    /// Forgets what the log remembers of the ids expired at `now`.
    pub(crate) fn forget_expired_log(&mut self, now: Timestamp) {
        while let Some(&(t, id)) = self.log_expiry.first()
            && t <= now
        {
            self.forget_log(&id);
        }
    }

    /// A delivered id SQLite remembers (its table keeps the later expiry).
    pub(crate) fn remember_sqlite(&mut self, d: DeliveredId) {
        let entry = self.delivered.entry(d.id).or_default();
        let old = entry.sqlite;
        if old.is_some_and(|t| t >= d.until) {
            return;
        }
        entry.sqlite = Some(d.until);
        if let Some(t) = old {
            self.sqlite_expiry.remove(&(t, d.id));
        }
        self.sqlite_expiry.insert((d.until, d.id));
    }

    /// Forgets what SQLite remembers of `id`.
    pub(crate) fn forget_sqlite(&mut self, id: &EnvelopeId) {
        let Some(entry) = self.delivered.get_mut(id) else {
            return;
        };
        let Some(t) = entry.sqlite.take() else {
            return;
        };
        if entry.log.is_none() {
            self.delivered.remove(id);
        }
        self.sqlite_expiry.remove(&(t, *id));
    }

    /// Forgets what SQLite remembers of the ids expired at `now`.
    pub(crate) fn forget_expired_sqlite(&mut self, now: Timestamp) {
        while let Some(&(t, id)) = self.sqlite_expiry.first()
            && t <= now
        {
            self.forget_sqlite(&id);
        }
    }

    /// The stored outbound messages for `destination` in queue order: acceptance number, where
    /// the record is, and its file.
    pub(crate) fn pending(&self, destination: &MeshId) -> Vec<(u64, Loc, Arc<SegmentFile>)> {
        let Some(queue) = self.queues.get(destination) else {
            return Vec::new();
        };
        queue
            .order
            .iter()
            .filter_map(|(&(_, seq), id)| {
                let slot = self.outbound.get(id)?;
                let file = Arc::clone(&self.segments.get(&slot.loc.segment)?.file);
                Some((seq, slot.loc, file))
            })
            .collect()
    }

    /// Messages and payload bytes per destination, in destination order.
    pub(crate) fn backlog(&self) -> Vec<Backlog> {
        self.queues
            .iter()
            .map(|(destination, q)| Backlog {
                destination: destination.clone(),
                messages: q.order.len() as u64,
                bytes: q.bytes,
            })
            .collect()
    }

    /// Messages and payload bytes for `destination`.
    pub(crate) fn backlog_of(&self, destination: &MeshId) -> Backlog {
        let (messages, bytes) = self
            .queues
            .get(destination)
            .map_or((0, 0), |q| (q.order.len() as u64, q.bytes));
        Backlog {
            destination: destination.clone(),
            messages,
            bytes,
        }
    }

    /// The delivered ids not expired at `now` (log and SQLite), soonest expiry first, then by id.
    pub(crate) fn delivered(&self, now: Timestamp) -> Vec<DeliveredId> {
        let mut ids: Vec<DeliveredId> = self
            .delivered
            .iter()
            .filter_map(|(id, d)| {
                let until = d.until()?;
                (until > now).then_some(DeliveredId { id: *id, until })
            })
            .collect();
        ids.sort_by_key(|d| (d.until, d.id));
        ids
    }

    /// Bytes in all segment files, and bytes of their live records.
    pub(crate) fn totals(&self) -> (u64, u64) {
        self.segments
            .values()
            .fold((0, 0), |(t, l), s| (t + s.len, l + s.live_bytes))
    }

    /// The live records in `segment`, by offset (last first: compaction pops from the end).
    pub(crate) fn live_in(&self, segment: u64) -> Vec<(Live, Loc)> {
        let outbound = self
            .outbound
            .iter()
            .filter(|(_, s)| s.loc.segment == segment)
            .map(|(id, s)| (Live::Outbound(*id), s.loc));
        let delivered = self.delivered.iter().filter_map(|(id, d)| {
            let (_, loc) = d.log?;
            (loc.segment == segment).then_some((Live::Delivered(*id), loc))
        });
        let mut live: Vec<_> = outbound.chain(delivered).collect();
        live.sort_by_key(|(_, loc)| Reverse(loc.offset));
        live
    }

    /// Whether the live record of `what` is still the one at `loc`.
    pub(crate) fn is_at(&self, what: Live, loc: Loc) -> bool {
        match what {
            Live::Outbound(id) => self.outbound.get(&id).is_some_and(|s| s.loc == loc),
            Live::Delivered(id) => self
                .delivered
                .get(&id)
                .and_then(|d| d.log)
                .is_some_and(|(_, l)| l == loc),
        }
    }

    /// The live record of `what` was copied to `to` (as replay sees the copy: same seq, same
    /// expiry).
    pub(crate) fn moved(&mut self, what: Live, to: Loc) {
        let from = match what {
            Live::Outbound(id) => self.outbound.get_mut(&id).map(|s| &mut s.loc),
            Live::Delivered(id) => self
                .delivered
                .get_mut(&id)
                .and_then(|d| d.log.as_mut())
                .map(|(_, l)| l),
        };
        if let Some(from) = from {
            let old = std::mem::replace(from, to);
            self.dead(old);
            self.live(to);
        }
    }
}
