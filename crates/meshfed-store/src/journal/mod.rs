//! The journal: durable message storage with **group commit** (DESIGN.md §3.5, §3.12).
//!
//! One writer thread owns the journal's files: an append-only **segment log** for the hot path
//! (outbound messages waiting for acknowledgement, the exactly-once dedup window) and its own
//! connection to the SQLite store file (WAL, `synchronous=FULL`) for durable subscriptions, their
//! messages and cursors, and dead letters. `log/mod.rs` says what goes where, how a request that
//! touches both stays all-or-nothing, the file format, replay and compaction.
//!
//! Callers submit requests ([`Write`]s) through a bounded channel and get a [`Ticket`] (or a
//! callback). The writer takes everything queued — up to [`JournalConfig::max_batch_writes`]
//! writes or [`JournalConfig::max_batch_bytes`] payload bytes — writes the log records of the
//! whole batch as one frame and calls `fdatasync` **once**, commits **one** SQLite transaction
//! if the batch has SQLite writes (each request in its own savepoint; a request of one
//! single-statement write needs none), and only then completes the batch's tickets
//! (`batch.rs`). A request that fails on its own is left out alone ([`JournalError::Rejected`]);
//! a failed write or commit fails the requests it held ([`JournalError::CommitFailed`]). A
//! completed ticket therefore means: in the files, fsynced.
//!
//! Acknowledged outbound messages do not queue: [`Journal::acknowledge`] hands their ids to the
//! writer, which deletes them in the next batch it commits, whatever is queued ahead (see
//! `acks.rs`).
//!
//! Reads of the hot path ([`Journal::pending_outbound`], [`Journal::backlog`],
//! [`Journal::delivered_ids`]) come from the writer's in-memory index (and the segment files,
//! by offset); they wait at most for the batch being committed. The other reads use a second
//! SQLite connection; in WAL mode they never wait for the writer.
//!
//! Closing ([`Journal::close`], or dropping the journal) lets the writer drain and commit every
//! request already submitted, then waits for the thread to end.

mod acks;
mod apply;
mod batch;
mod cpu;
mod log;
mod read;
mod records;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meshfed_proto::MeshId;
use meshfed_proto::envelope::{EnvelopeId, Timestamp};
use rusqlite::Connection;

pub use records::{
    Backlog, Cursor, DeadLetter, DeliveredId, InboundMessage, InboundSeq, InvalidSubscriptionName,
    OrderScope, OutboundMessage, QueuePosition, StoredInbound, StoredOutbound, Subscription,
    SubscriptionName, Write,
};

use self::acks::{Acknowledged, Carried};
use self::cpu::ThreadCpu;
use self::log::{Index, Log};
use crate::error::{Doing, JournalError, StoreError};

/// How the journal queues and batches. The defaults suit a gateway: deep enough for many
/// concurrent senders, batches small enough that one commit stays in the low milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalConfig {
    /// Requests that may wait for the writer before [`Journal::submit`] blocks (backpressure).
    /// Default 4096.
    pub queue_capacity: usize,
    /// A batch closes once it holds this many writes. Default 4096.
    pub max_batch_writes: usize,
    /// A batch closes once its writes carry this many payload bytes. Default 8 MiB.
    pub max_batch_bytes: usize,
    /// A segment file of the log is sealed, and the next one begun, once it holds this many
    /// bytes (at least 4 KiB). Default 64 MiB.
    pub segment_bytes: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 4096,
            max_batch_writes: 4096,
            max_batch_bytes: 8 << 20,
            segment_bytes: 64 << 20,
        }
    }
}

/// What the writer reports for one request.
type Outcome = Result<(), JournalError>;

/// Called on the writer thread once the request's fate is known.
type Completion = Box<dyn FnOnce(Outcome) + Send>;

/// One submitted request: applied all-or-nothing.
struct Request {
    writes: Vec<Write>,
    done: Completion,
}

/// What waits in the writer's queue.
enum Queued {
    Request(Request),
    /// Acknowledgements are waiting ([`Acknowledged`]): commit them even if no request comes.
    Wake,
}

/// Durable message storage with group commit. See the [module documentation](self).
///
/// `Journal` is `Sync`: share it (e.g. in an `Arc`) and submit from any thread.
pub struct Journal {
    path: PathBuf,
    /// `None` once closing.
    sender: Option<SyncSender<Queued>>,
    /// `None` once joined.
    writer: Option<JoinHandle<()>>,
    reader: Mutex<Connection>,
    /// The log's index, which the writer keeps (locked while it commits a batch).
    index: Arc<Mutex<Index>>,
    acknowledged: Arc<Acknowledged>,
    counters: Arc<Counters>,
    /// Where the writer thread's CPU time is read (`None` where the system does not tell).
    writer_cpu: Option<ThreadCpu>,
    /// Told of each commit, once set.
    observer: Arc<OnceLock<Observer>>,
}

/// One commit of the writer, as [`Journal::observe`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// From the start of applying the batch to the end of its commit (the fsync and the
    /// SQLite transaction included), measured on the writer thread.
    pub took: Duration,
    /// The writes of the batch's requests (an outbound message appended is one); 0 for a
    /// commit of acknowledgements alone.
    pub writes: usize,
}

/// What is called on the writer thread after each commit (see [`Journal::observe`]).
type Observer = Box<dyn Fn(Commit) + Send + Sync>;

/// What the writer has done since the journal was opened, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalStats {
    /// Transactions committed (one fsync each).
    pub commits: u64,
    /// Requests confirmed as stored.
    pub requests: u64,
    /// Requests that failed (rolled back alone, or in a failed commit).
    pub failed: u64,
    /// Writes of the requests confirmed as stored (an outbound message appended is one).
    pub writes: u64,
    /// Outbound messages deleted as acknowledged ([`Journal::acknowledge`]).
    pub acknowledged: u64,
    /// CPU time the writer thread has used (applying, committing, completing): divided by the
    /// messages written at full rate, what the journal costs per message. `None` where the
    /// system does not tell (it is read from Linux's `/proc`).
    pub writer_cpu: Option<Duration>,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    requests: AtomicU64,
    failed: AtomicU64,
    writes: AtomicU64,
    acknowledged: AtomicU64,
}

impl Journal {
    /// Opens the journal on the store file at `path` (creating it and bringing the schema up to
    /// date if needed) and starts the writer thread.
    pub fn open(path: &Path, config: JournalConfig) -> Result<Self, StoreError> {
        crate::create_parent(path)?;
        let open_conn = || -> Result<Connection, StoreError> {
            let mut conn = crate::connect(path)?;
            crate::configure(&mut conn, true)?;
            Ok(conn)
        };
        let wrap = |e| StoreError::Open {
            path: path.to_owned(),
            source: Box::new(e),
        };
        let writer_conn = open_conn()
            .and_then(|conn| {
                writer_settings(&conn)?;
                Ok(conn)
            })
            .map_err(wrap)?;
        let reader = open_conn().map_err(wrap)?;
        let (log, index) = open_log(path, &writer_conn, config.segment_bytes).map_err(wrap)?;
        let index = Arc::new(Mutex::new(index));
        let (sender, receiver) = mpsc::sync_channel(config.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let acknowledged = Arc::new(Acknowledged::default());
        let observer = Arc::new(OnceLock::new());
        let (cpu_tx, cpu_rx) = mpsc::sync_channel(1);
        let writer = Writer {
            conn: writer_conn,
            log,
            index: Arc::clone(&index),
            compaction: None,
            broken: false,
            config,
            acknowledged: Arc::clone(&acknowledged),
            carried: Carried::default(),
            counters: Arc::clone(&counters),
            observer: Arc::clone(&observer),
        };
        let writer = std::thread::Builder::new()
            .name("meshfed-journal".into())
            .spawn(move || {
                let _ = cpu_tx.send(ThreadCpu::current());
                writer.run(&receiver);
            })
            .map_err(StoreError::SpawnWriter)?;
        // The thread's first act: where its CPU time is read is known before the first stats.
        let writer_cpu = cpu_rx.recv().ok().flatten();
        Ok(Self {
            path: path.to_owned(),
            sender: Some(sender),
            writer: Some(writer),
            reader: Mutex::new(reader),
            index,
            acknowledged,
            counters,
            writer_cpu,
            observer,
        })
    }

    /// Has `observer` told of every commit from now on (how long it took, how many writes it
    /// held), on the writer thread: it must be quick (a metric's update). The first observer
    /// set stays; a later one is ignored and `false` returned.
    pub fn observe(&self, observer: impl Fn(Commit) + Send + Sync + 'static) -> bool {
        self.observer.set(Box::new(observer)).is_ok()
    }

    /// Commits and requests so far (`requests / commits` is the mean group size), and the
    /// writer's CPU time.
    pub fn stats(&self) -> JournalStats {
        JournalStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            acknowledged: self.counters.acknowledged.load(Ordering::Relaxed),
            writer_cpu: self.writer_cpu.as_ref().and_then(ThreadCpu::read),
        }
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Submits one write; the ticket completes once it is committed. Blocks while the queue is
    /// full.
    pub fn submit(&self, write: Write) -> Ticket {
        self.submit_all(vec![write])
    }

    /// Submits several writes to be applied all-or-nothing (e.g. a delivered id together with
    /// the inbound message it belongs to). Blocks while the queue is full.
    pub fn submit_all(&self, writes: Vec<Write>) -> Ticket {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit_then(writes, move |outcome| {
            // The ticket may have been dropped: nobody waits, nothing to tell.
            let _ = tx.send(outcome);
        });
        Ticket { outcome: rx }
    }

    /// Submits `writes` (all-or-nothing) and calls `done` with the outcome once it is known.
    /// `done` runs on the writer thread, so it must be quick (e.g. send on a channel, wake a
    /// task); an async driver can complete a oneshot here. Blocks while the queue is full.
    pub fn submit_then(
        &self,
        writes: Vec<Write>,
        done: impl FnOnce(Result<(), JournalError>) + Send + 'static,
    ) {
        let request = Request {
            writes,
            done: Box::new(done),
        };
        let Some(sender) = &self.sender else {
            (request.done)(Err(JournalError::WriterStopped));
            return;
        };
        if let Err(mpsc::SendError(Queued::Request(request))) =
            sender.send(Queued::Request(request))
        {
            (request.done)(Err(JournalError::WriterStopped));
        }
    }

    /// Deletes outbound messages the peer acknowledged, in the next transaction the writer
    /// commits: with the requests already queued (no commit of its own under load), or alone,
    /// at once, when the writer is idle. Nothing waits for it and nothing is reported: a
    /// deletion that does not reach the file (a crash first, a failing commit) only means the
    /// message is sent again after a restart.
    ///
    /// Acknowledge only messages whose append was submitted before; it may still be queued.
    pub fn acknowledge(&self, ids: impl IntoIterator<Item = EnvelopeId>) {
        if self.acknowledged.add(ids)
            && let Some(sender) = &self.sender
        {
            // A full queue means a busy writer: it takes the ids with its next batch anyway.
            let _ = sender.try_send(Queued::Wake);
        }
    }

    /// Stores an outbound message (`OutboxEvent::Persist`).
    pub fn append_outbound(&self, message: OutboundMessage) -> Ticket {
        self.submit(Write::AppendOutbound(message))
    }

    /// Deletes outbound messages as a request, in order with the others (for acknowledgements,
    /// [`Journal::acknowledge`] does not wait behind the queue).
    pub fn remove_outbound(&self, ids: Vec<EnvelopeId>) -> Ticket {
        self.submit(Write::RemoveOutbound(ids))
    }

    /// Remembers a delivered exactly-once id until `until`.
    pub fn remember_delivered(&self, id: EnvelopeId, until: Timestamp) -> Ticket {
        self.submit(Write::RememberDelivered(DeliveredId { id, until }))
    }

    /// Stores a message for a durable subscriber.
    pub fn append_inbound(&self, message: InboundMessage) -> Ticket {
        self.submit(Write::AppendInbound(message))
    }

    /// Moves a subscription's cursor forward and deletes the messages it passed.
    pub fn save_cursor(&self, subscription: SubscriptionName, delivered: InboundSeq) -> Ticket {
        self.submit(Write::SaveCursor {
            subscription,
            delivered,
        })
    }

    /// Lets the writer commit everything submitted so far, then stops it. Dropping the journal
    /// does the same; `close` also says whether the writer ended cleanly.
    pub fn close(mut self) -> Result<(), JournalError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), JournalError> {
        // Dropping the sender ends the writer's loop once it has drained the queue.
        self.sender = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Err(_panic)) => Err(JournalError::WriterStopped),
            _ => Ok(()),
        }
    }

    /// The outbound messages stored for `destination`: highest priority first, then in
    /// acceptance order. To restore in acceptance order instead, sort by `position`.
    pub fn pending_outbound(
        &self,
        destination: &MeshId,
    ) -> Result<Vec<StoredOutbound>, StoreError> {
        let found = self.index().pending(destination);
        found
            .into_iter()
            .map(|(seq, loc, file)| log::read_outbound(&file, seq, loc))
            .collect()
    }

    /// Messages and payload bytes stored per destination.
    pub fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        Ok(self.index().backlog())
    }

    /// Messages and payload bytes stored for `destination` (zero if none).
    pub fn backlog_of(&self, destination: &MeshId) -> Result<Backlog, StoreError> {
        Ok(self.index().backlog_of(destination))
    }

    /// The dedup window as stored: the delivered ids still remembered at `now`, soonest expiry
    /// first (feed them to `Inbox::restore_delivered`).
    pub fn delivered_ids(&self, now: Timestamp) -> Result<Vec<DeliveredId>, StoreError> {
        Ok(self.index().delivered(now))
    }

    /// The saved cursor of `subscription`, if any.
    pub fn cursor(
        &self,
        subscription: &SubscriptionName,
    ) -> Result<Option<InboundSeq>, StoreError> {
        read::cursor(&self.reader(), subscription)
    }

    /// Every saved cursor.
    pub fn cursors(&self) -> Result<Vec<Cursor>, StoreError> {
        read::cursors(&self.reader())
    }

    /// Up to `limit` stored messages of `subscription` after `after` (from the oldest if `None`),
    /// in sequence order.
    pub fn inbound_after(
        &self,
        subscription: &SubscriptionName,
        after: Option<InboundSeq>,
        limit: usize,
    ) -> Result<Vec<StoredInbound>, StoreError> {
        read::inbound_after(&self.reader(), subscription, after, limit)
    }

    /// Every durable subscription, by name.
    pub fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        read::subscriptions(&self.reader())
    }

    /// The `limit` latest dead letters, newest first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        read::dead_letters(&self.reader(), limit)
    }

    /// The log's index. The writer changes it only as whole batches: one it left when
    /// panicking is read as it is.
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The read connection. A panic elsewhere while it was held leaves it usable (reads only).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // A writer that panicked has already failed its tickets (`WriterStopped`).
        let _ = self.shut_down();
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("open", &self.sender.is_some())
            .finish_non_exhaustive()
    }
}

/// Settings of the writer's connection that spare it CPU; durability is untouched.
///
/// - A page cache that holds a whole batch (up to [`JournalConfig::max_batch_bytes`], default 8
///   MiB, with indexes): SQLite's default of 2 MiB spilled dirty pages into the WAL in the
///   middle of a batch and read them back.
/// - Checkpoints every [`WAL_CHECKPOINT_PAGES`] pages rather than SQLite's 1,000: a page
///   written by an append and again by its deletion is copied into the file once.
fn writer_settings(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
        .doing(|| format!("set the writer's page cache to {WRITER_CACHE_KIB} KiB"))?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
        .doing(|| format!("checkpoint the WAL every {WAL_CHECKPOINT_PAGES} pages"))?;
    Ok(())
}

/// Pages the WAL grows by between two checkpoints (64 MiB of 4 KiB pages).
const WAL_CHECKPOINT_PAGES: i64 = 16_384;

/// The writer connection's page cache, in KiB: twice the default batch bound. A bound, not an
/// allocation: pages are allocated as they are used.
const WRITER_CACHE_KIB: i64 = 16 << 10;

/// The promise of one request's outcome: completes once the transaction holding it is
/// committed (fsynced), or with the reason it is not stored.
#[derive(Debug)]
#[must_use = "a write is only known to be durable once its ticket completes"]
pub struct Ticket {
    outcome: Receiver<Outcome>,
}

impl Ticket {
    /// Blocks until the request is committed (`Ok`) or known to have failed.
    pub fn wait(self) -> Result<(), JournalError> {
        self.outcome
            .recv()
            .unwrap_or(Err(JournalError::WriterStopped))
    }
}

/// Opens the segment log next to the store file at `path`, adds the delivered ids SQLite holds
/// to its index, and moves outbound messages an older meshfed kept in SQLite into the log.
fn open_log(
    path: &Path,
    conn: &Connection,
    segment_bytes: u64,
) -> Result<(Log, Index), StoreError> {
    let dir = log::dir_of(path);
    let recorded: bool = conn
        .query_row("SELECT EXISTS (SELECT 1 FROM journal_log)", [], |r| {
            r.get(0)
        })
        .doing(|| "read whether the journal's segment log was created".into())?;
    if recorded && !dir.exists() {
        return Err(StoreError::LogMissing { path: dir });
    }
    let (mut log, mut index) = Log::open(&dir, segment_bytes)?;
    if !recorded {
        conn.execute("INSERT INTO journal_log (created) VALUES (1)", [])
            .doing(|| "record that the journal's segment log was created".into())?;
    }
    for d in read::delivered_rows(conn)? {
        index.remember_sqlite(d);
    }
    loop {
        let legacy = read::legacy_outbound(conn, 512)?;
        let Some(last) = legacy.last().map(|m| m.position) else {
            break;
        };
        let mut frame = log.frame(&mut index)?;
        for m in &legacy {
            let seq = u64::try_from(m.position.0).map_err(|_| {
                StoreError::corrupt(
                    "outbound",
                    format!("seq {}", m.position.0),
                    "seq",
                    "not positive",
                )
            })?;
            // Stored before a crash cut the move short: it is in the log already.
            if !index.has_outbound(&m.message.id) {
                log::check_append(&m.message)?;
                let loc = frame.append(seq, &m.message);
                index.insert_outbound(seq, &m.message, loc);
            }
        }
        if !frame.is_empty() {
            log.write(&mut index, &mut frame).map_err(|f| f.error)?;
        }
        conn.execute("DELETE FROM outbound WHERE seq <= ?1", [last.0])
            .doing(|| "delete the outbound messages moved into the journal log".into())?;
    }
    Ok((log, index))
}

/// The writer thread: owns the segment log and the write connection, and commits batches.
struct Writer {
    conn: Connection,
    log: Log,
    index: Arc<Mutex<Index>>,
    compaction: Option<batch::Compaction>,
    /// The log failed in a way that leaves its tail unknown: no more writes.
    broken: bool,
    config: JournalConfig,
    acknowledged: Arc<Acknowledged>,
    /// Acknowledged ids whose messages were not found yet.
    carried: Carried,
    counters: Arc<Counters>,
    observer: Arc<OnceLock<Observer>>,
}

/// The requests of one batch, and whether taking them emptied the queue.
struct Batch {
    requests: Vec<Request>,
    drained: bool,
}

impl Writer {
    /// Commits batch after batch until every sender is gone and the queue is empty, then the
    /// acknowledgements that came last.
    fn run(mut self, queue: &Receiver<Queued>) {
        while let Ok(first) = queue.recv() {
            let batch = self.gather(first, queue);
            self.commit(batch);
        }
        self.commit(Batch {
            requests: Vec::new(),
            drained: true,
        });
    }

    /// `first` and whatever else is already queued, within the batch bounds.
    fn gather(&self, first: Queued, queue: &Receiver<Queued>) -> Batch {
        let mut writes = 0;
        let mut bytes = 0;
        let mut requests = Vec::new();
        let mut next = Some(first);
        let mut drained = false;
        while let Some(queued) = next.take() {
            if let Queued::Request(request) = queued {
                writes += request.writes.len();
                bytes += request.writes.iter().map(Write::bytes).sum::<usize>();
                requests.push(request);
            }
            if writes >= self.config.max_batch_writes || bytes >= self.config.max_batch_bytes {
                break;
            }
            match queue.try_recv() {
                Ok(queued) => next = Some(queued),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => drained = true,
            }
        }
        Batch { requests, drained }
    }

    /// Applies every request and the acknowledgements waiting in one transaction, commits it,
    /// then completes the requests. Commits nothing if there is nothing to write.
    fn commit(&mut self, batch: Batch) {
        let Batch {
            requests: batch,
            drained,
        } = batch;
        // Taken after the batch was gathered: an acknowledgement added after this wakes the
        // writer again.
        let deletions = self.carried.with(self.acknowledged.take());
        if batch.is_empty() && deletions.is_empty() {
            return;
        }
        let started = Instant::now();
        let applied = self.apply_all(&batch, &deletions);
        if applied.is_ok()
            && let Some(observe) = self.observer.get()
        {
            observe(Commit {
                took: started.elapsed(),
                writes: batch.iter().map(|r| r.writes.len()).sum(),
            });
        }
        let outcomes = match applied {
            Ok((outcomes, Some(deleted))) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .acknowledged
                    .fetch_add(deleted.rows, Ordering::Relaxed);
                self.carried.committed(deleted, drained);
                outcomes
            }
            Ok((outcomes, None)) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.carried.failed(deletions);
                outcomes
            }
            Err(e) => {
                self.carried.failed(deletions);
                let e = JournalError::CommitFailed {
                    requests: batch.len(),
                    source: Arc::new(e),
                };
                vec![Err(e); batch.len()]
            }
        };
        for (request, outcome) in batch.into_iter().zip(outcomes) {
            let counter = match outcome {
                Ok(()) => {
                    self.counters
                        .writes
                        .fetch_add(request.writes.len() as u64, Ordering::Relaxed);
                    &self.counters.requests
                }
                Err(_) => &self.counters.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            (request.done)(outcome);
        }
    }
}
