//! The journal's hot path on disk: an append-only **segment log** with group `fdatasync`, as
//! Kafka and JetStream keep theirs (DESIGN.md §3.12).
//!
//! ## What goes here, what stays in SQLite
//! Outbound messages (append, removal by acknowledgement or dead letter) and the exactly-once
//! dedup window (remember, forget, forget expired) go to the log: every queued message is
//! written once and deleted by a 16-byte tombstone, with no B-tree to update. Durable
//! subscriptions, their messages and cursors, dead letters and the registry stay in SQLite,
//! queryable. A request that mixes both (the inbox's copy for a durable subscriber with the
//! delivered id that makes it exactly-once) goes **wholly to SQLite**, in one transaction: its
//! delivered ids are kept in SQLite's `delivered` table, and reads merge both. Its deletions of
//! log records (a dead letter's outbound copy, forgotten ids the log holds) are written to the
//! log only after the SQLite commit, in a frame of their own: a deletion lost to a crash only
//! means a message sent again or an id remembered longer, and a dead-lettered message is never
//! gone from the log without its dead letter in SQLite. An outbound append cannot share a
//! request with a SQLite write (it is refused): nothing needs it, and it keeps every queued
//! message in one place.
//!
//! ## Files
//! Next to the store file `F`, the directory `F-segments/` holds `00000000000000000001.seg`,
//! `…2.seg`, …: each starts with a magic and holds frames of records (`codec.rs`: a length
//! and a CRC32 per frame and per record). The writer appends one frame per batch at the end of
//! the last segment, then calls `fdatasync` once, and only then completes the batch's tickets.
//! A segment that has reached [`JournalConfig::segment_bytes`](crate::JournalConfig) is
//! sealed and a new one created (the directory is fsynced after creating and after deleting a
//! file). The directory is locked (`flock`) while a journal has it open. The store file
//! records (table `journal_log`) that the log was created: a store file whose log has gone
//! (copied without it, say) does not open, rather than start with an empty queue.
//!
//! ## Opening
//! The segments are replayed in order into the in-memory [`Index`] (outbound queues by
//! destination, priority and acceptance number; the dedup window; live records per segment),
//! through the same methods the writer uses. Only the last frame of the last segment can have
//! been cut by a crash (each frame is fsynced before the next is written): a frame there that
//! is short or fails its CRC with nothing valid after it is a **torn tail** and is truncated.
//! Any other bad frame (in a sealed segment, or followed by a valid one) is an error naming
//! the file and the offset: the journal does not open rather than lose acknowledged messages.
//!
//! ## Reclaiming space
//! A removed message leaves its record in place. Segments are deleted **oldest first** only:
//! then a tombstone never outlives the record it cancels, so replay cannot bring a removed
//! message back. The oldest sealed segment is deleted once none of its records is live. While
//! the files hold more than twice the live bytes plus one segment, the writer copies the
//! oldest segment's live records forward (byte for byte, up to [`COMPACT_BYTES`] per batch,
//! in the batch's frame) until it holds none; replay takes a copy for the record it copies
//! (same acceptance number, same expiry). So a message left waiting for a partner that is down
//! does not pin every segment written after it, and the files stay within about twice what is
//! live.

mod codec;
mod index;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use codec::{Frame, Loc, check_append};
pub(crate) use index::{Index, Live, Segment, SegmentFile};

use self::codec::{HEADER, MAGIC, Record};
use crate::error::StoreError;
use crate::journal::records::{QueuePosition, StoredOutbound};

/// Live bytes the writer copies forward per batch at most while compacting.
pub(crate) const COMPACT_BYTES: u64 = 1 << 20;

/// The segment directory of the store file at `store`: `<store>-segments`.
pub(crate) fn dir_of(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push("-segments");
    PathBuf::from(name)
}

/// The segment log's files, as the writer handles them.
#[derive(Debug)]
pub(crate) struct Log {
    dir: PathBuf,
    /// The directory, open: locked while the journal is, fsynced after creating or deleting.
    dir_file: File,
    segment_bytes: u64,
    /// The last frame's buffer, reused by the next.
    spare: Vec<u8>,
}

/// A frame buffer larger than this is not kept for the next frame.
const SPARE_BYTES: usize = 32 << 20;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Log {
        action,
        path,
        source,
    }
}

impl Log {
    /// Opens (creating) the segment directory, locks it and replays it into an index.
    pub(crate) fn open(dir: &Path, segment_bytes: u64) -> Result<(Self, Index), StoreError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("sync the directory holding", dir))?;
            }
        }
        let dir_file = File::open(dir).map_err(io_err("open", dir))?;
        dir_file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => StoreError::LogLocked {
                path: dir.to_owned(),
            },
            std::fs::TryLockError::Error(source) => StoreError::Log {
                action: "lock",
                path: dir.to_owned(),
                source,
            },
        })?;
        let log = Self {
            dir: dir.to_owned(),
            dir_file,
            segment_bytes: segment_bytes.max(4096),
            spare: Vec::new(),
        };
        let index = log.replay()?;
        Ok((log, index))
    }

    fn segment_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:020}.seg"))
    }

    /// Reads every segment into a fresh index, truncating a torn tail.
    pub(crate) fn replay(&self) -> Result<Index, StoreError> {
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            numbers.push(n);
        }
        numbers.sort_unstable();
        let mut index = Index::default();
        let last = numbers.last().copied();
        for n in numbers {
            self.replay_segment(&mut index, n, Some(n) == last)?;
        }
        if index.segments.is_empty() {
            self.create_segment(&mut index, 1)?;
        }
        Ok(index)
    }

    fn replay_segment(&self, index: &mut Index, n: u64, last: bool) -> Result<(), StoreError> {
        let path = self.segment_path(n);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let data = std::fs::read(&path).map_err(io_err("read", &path))?;
        let corrupt = |offset: usize, problem: String| StoreError::LogCorrupt {
            path: path.clone(),
            offset: offset as u64,
            problem,
        };
        let mut end = data.len();
        if !data.starts_with(&MAGIC) {
            // A segment created just before a crash may miss (part of) its magic.
            if !(last && data.len() < MAGIC.len() && MAGIC.starts_with(&data)) {
                return Err(corrupt(0, "not a meshfed journal segment".into()));
            }
            file.set_len(0)
                .and_then(|()| file.write_all_at(&MAGIC, 0))
                .and_then(|()| file.sync_data())
                .map_err(io_err("rewrite the header of", &path))?;
            end = MAGIC.len();
        }
        index.segments.insert(
            n,
            Segment {
                file: Arc::new(SegmentFile {
                    file,
                    path: path.clone(),
                }),
                len: MAGIC.len() as u64,
                live_records: 0,
                live_bytes: 0,
            },
        );
        let mut at = MAGIC.len();
        while at < end {
            let frame_end = match codec::check_frame(&data, at) {
                Ok(frame_end) => frame_end,
                Err(problem) => {
                    if last && !valid_frame_after(&data, at) {
                        self.truncate(index, n, at as u64)?;
                        return Ok(());
                    }
                    return Err(corrupt(at, problem));
                }
            };
            for (offset, bytes) in codec::records(&data, at, frame_end) {
                let record = codec::decode(&bytes[HEADER..]).map_err(|p| corrupt(offset, p))?;
                let loc = Loc {
                    segment: n,
                    offset: offset as u64,
                    len: bytes.len() as u32,
                };
                index.apply(&record, loc);
            }
            at = frame_end;
            if let Some(s) = index.segments.get_mut(&n) {
                s.len = at as u64;
            }
        }
        Ok(())
    }

    /// Cuts segment `n` (the last) at `at`: a torn tail, or a frame that failed to be written.
    fn truncate(&self, index: &mut Index, n: u64, at: u64) -> Result<(), StoreError> {
        let Some(segment) = index.segments.get_mut(&n) else {
            return Ok(());
        };
        let f = &segment.file;
        f.file
            .set_len(at)
            .and_then(|()| f.file.sync_data())
            .map_err(io_err("truncate the torn tail of", &f.path))?;
        segment.len = at;
        Ok(())
    }

    fn create_segment(&self, index: &mut Index, n: u64) -> Result<(), StoreError> {
        let path = self.segment_path(n);
        // Not `create_new`: a file left by an earlier attempt that failed is not in the index
        // (replay would have listed it), and is started afresh.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        file.write_all_at(&MAGIC, 0)
            .and_then(|()| file.sync_data())
            .and_then(|()| self.dir_file.sync_all())
            .map_err(io_err("create", &path))?;
        index.segments.insert(
            n,
            Segment {
                file: Arc::new(SegmentFile { file, path }),
                len: MAGIC.len() as u64,
                live_records: 0,
                live_bytes: 0,
            },
        );
        Ok(())
    }

    /// An empty frame at the end of the last segment, after sealing it (and creating the next)
    /// if it has reached the segment size.
    pub(crate) fn frame(&mut self, index: &mut Index) -> Result<Frame, StoreError> {
        let (n, len) = match index.segments.last_key_value() {
            Some((n, s)) => (*n, s.len),
            None => (0, self.segment_bytes),
        };
        let buf = std::mem::take(&mut self.spare);
        if len >= self.segment_bytes {
            self.create_segment(index, n + 1)?;
            return Ok(Frame::reusing(buf, n + 1, MAGIC.len() as u64));
        }
        Ok(Frame::reusing(buf, n, len))
    }

    /// Keeps `frame`'s buffer for the next frame.
    pub(crate) fn recycle(&mut self, frame: Frame) {
        let buf = frame.into_buffer();
        if buf.capacity() <= SPARE_BYTES {
            self.spare = buf;
        }
    }

    /// Writes `frame` and waits for `fdatasync`. On failure the segment is cut back to where
    /// the frame began (an error then too means the log cannot be trusted to append).
    pub(crate) fn write(&self, index: &mut Index, frame: &mut Frame) -> Result<(), WriteFailed> {
        let (n, start) = frame.place();
        let Some(segment) = index.segments.get_mut(&n) else {
            return Err(WriteFailed {
                error: StoreError::LogLost { segment: n },
                cut_back: false,
            });
        };
        let f = Arc::clone(&segment.file);
        let bytes = frame.finish();
        match f
            .file
            .write_all_at(bytes, start)
            .and_then(|()| f.file.sync_data())
        {
            Ok(()) => {
                segment.len = start + bytes.len() as u64;
                Ok(())
            }
            Err(source) => {
                let cut_back = f
                    .file
                    .set_len(start)
                    .and_then(|()| f.file.sync_data())
                    .is_ok();
                Err(WriteFailed {
                    error: StoreError::Log {
                        action: "append to",
                        path: f.path.clone(),
                        source,
                    },
                    cut_back,
                })
            }
        }
    }

    /// Deletes the oldest segments while they hold nothing live (never the last).
    pub(crate) fn delete_dead(&self, index: &mut Index) -> Result<(), StoreError> {
        while index.segments.len() > 1 {
            let Some(mut first) = index.segments.first_entry() else {
                break;
            };
            if first.get().live_records > 0 {
                break;
            }
            let path = first.get_mut().file.path.clone();
            std::fs::remove_file(&path).map_err(io_err("delete", &path))?;
            first.remove();
            self.dir_file
                .sync_all()
                .map_err(io_err("sync the directory after deleting", &path))?;
        }
        Ok(())
    }

    /// Whether compaction should copy the oldest segment forward: the files hold more than
    /// twice the live bytes plus one segment.
    pub(crate) fn compaction_due(&self, index: &Index) -> bool {
        let (total, live) = index.totals();
        index.segments.len() > 1 && total > 2 * live + self.segment_bytes
    }
}

/// A frame that could not be written.
#[derive(Debug)]
pub(crate) struct WriteFailed {
    pub(crate) error: StoreError,
    /// Whether the segment was cut back to where the frame began (else the tail is unknown).
    pub(crate) cut_back: bool,
}

/// Whether a frame that passes its checks starts where the bad frame at `at` says it ends: then
/// the bad frame is not a torn tail but damage in the middle.
fn valid_frame_after(data: &[u8], at: usize) -> bool {
    let Some(header) = data.get(at..at + HEADER) else {
        return false;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let next = at + HEADER + len;
    next < data.len() && codec::check_frame(data, next).is_ok()
}

/// Reads a record back (an outbound message, where the index says it is).
pub(crate) fn read_outbound(
    file: &SegmentFile,
    seq: u64,
    loc: Loc,
) -> Result<StoredOutbound, StoreError> {
    let mut bytes = vec![0; loc.len as usize];
    file.file
        .read_exact_at(&mut bytes, loc.offset)
        .map_err(io_err("read a record of", &file.path))?;
    let corrupt = |problem: String| StoreError::LogCorrupt {
        path: file.path.clone(),
        offset: loc.offset,
        problem,
    };
    let body = codec::check_record(&bytes).map_err(corrupt)?;
    match codec::decode(body).map_err(corrupt)? {
        Record::Append { seq: s, message } if s == seq => Ok(StoredOutbound {
            position: QueuePosition(i64::try_from(seq).unwrap_or(i64::MAX)),
            message,
        }),
        _ => Err(corrupt(format!(
            "expected outbound message #{seq}, found another record"
        ))),
    }
}

/// Reads a live record's bytes (header included, CRC checked) to copy it forward.
pub(crate) fn read_record(file: &SegmentFile, loc: Loc) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![0; loc.len as usize];
    file.file
        .read_exact_at(&mut bytes, loc.offset)
        .map_err(io_err("read a record of", &file.path))?;
    codec::check_record(&bytes).map_err(|problem| StoreError::LogCorrupt {
        path: file.path.clone(),
        offset: loc.offset,
        problem,
    })?;
    Ok(bytes)
}
