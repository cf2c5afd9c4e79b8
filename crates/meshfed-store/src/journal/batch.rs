//! One batch of the writer, across the segment log and SQLite (see `log/mod.rs` for which
//! write goes where).
//!
//! The batch's requests are staged in order against the in-memory index, which readers cannot
//! see meanwhile (the writer holds its lock until the batch is settled):
//!
//! 1. A request of log writes only is encoded into the batch's frame (and deletes in SQLite the
//!    delivered ids SQLite holds for it). A request with a SQLite write goes wholly to the
//!    batch's SQLite transaction, in a savepoint; its deletions of log records wait.
//! 2. Acknowledged messages are removed (`acks.rs`), and compaction copies some live records
//!    of the oldest segment forward, into the same frame.
//! 3. The frame is written and fsynced (`fdatasync`), then the SQLite transaction commits,
//!    then the deletions the SQLite requests made of log records go in a frame of their own.
//!    Only then are the tickets completed.
//!
//! A failure after something reached the disk rebuilds the index from the disk (segments and
//! SQLite), so that memory never claims what the files do not hold.

use std::sync::{Arc, PoisonError};

use meshfed_proto::envelope::{EnvelopeId, Timestamp};
use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::acks::{Deleted, Deletions};
use super::log::{self, COMPACT_BYTES, Frame, Index, Live, Loc, Log, check_append};
use super::records::Write;
use super::{Outcome, Request, Writer, apply, read};
use crate::error::{Doing, JournalError, StoreError};
use crate::time_fmt::to_sql;

/// Where a request is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Log,
    Sqlite,
}

impl Route {
    fn of(writes: &[Write]) -> Self {
        if writes.iter().any(Write::kept_in_sqlite) {
            Self::Sqlite
        } else {
            Self::Log
        }
    }
}

/// Deletions of log records by requests that went to SQLite: written once SQLite committed.
#[derive(Debug, Default)]
struct Deferred {
    remove: Vec<EnvelopeId>,
    forget: Vec<EnvelopeId>,
    expired: Option<Timestamp>,
}

impl Deferred {
    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.forget.is_empty() && self.expired.is_none()
    }
}

/// Compaction of the oldest segment in progress: its live records still to copy forward.
#[derive(Debug)]
pub(super) struct Compaction {
    segment: u64,
    todo: Vec<(Live, Loc)>,
    /// A record could not be read back: the segment is left as it is.
    stuck: bool,
}

/// The batch's SQLite transaction, begun at the first write that needs it.
struct Sql<'c> {
    conn: Option<&'c mut Connection>,
    tx: Option<Transaction<'c>>,
}

impl<'c> Sql<'c> {
    fn tx(&mut self) -> Result<&mut Transaction<'c>, StoreError> {
        if let Some(conn) = self.conn.take() {
            let tx = Connection::transaction_with_behavior(conn, TransactionBehavior::Immediate)
                .doing(|| "begin a journal batch".into())?;
            self.tx = Some(tx);
        }
        self.tx.as_mut().ok_or(StoreError::LogStopped)
    }

    /// Applies `writes` all-or-nothing: in a savepoint, unless it is one statement.
    fn request(&mut self, writes: &[&Write]) -> Result<(), StoreError> {
        let tx = self.tx()?;
        match writes {
            [] => Ok(()),
            // One SQL statement is undone alone when it fails: no savepoint needed.
            [write] if write.is_one_statement() => apply::apply(tx, write),
            writes => {
                let sp = tx
                    .savepoint()
                    .doing(|| "open a savepoint for a journal request".into())?;
                writes.iter().try_for_each(|w| apply::apply(&sp, w))?;
                sp.commit()
                    .doing(|| "release a journal request's savepoint".into())
            }
        }
    }
}

impl Writer {
    /// Stores the batch and the acknowledgements: each request's outcome and what the
    /// deletions found; `Err` if nothing of the batch is stored.
    pub(super) fn apply_all(
        &mut self,
        batch: &[Request],
        deletions: &Deletions,
    ) -> Result<(Vec<Outcome>, Option<Deleted>), StoreError> {
        let shared = Arc::clone(&self.index);
        let mut index = shared.lock().unwrap_or_else(PoisonError::into_inner);
        if self.broken {
            return Err(StoreError::LogStopped);
        }
        let mut frame = self.log.frame(&mut index)?;
        let mut sql = Sql {
            conn: Some(&mut self.conn),
            tx: None,
        };
        let mut routes = Vec::with_capacity(batch.len());
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut deferred = Deferred::default();
        for request in batch {
            let route = Route::of(&request.writes);
            let applied = match route {
                Route::Log => stage_log(&mut index, &mut frame, &mut sql, &request.writes),
                Route::Sqlite => stage_sqlite(&mut index, &mut sql, &mut deferred, &request.writes),
            };
            routes.push(route);
            outcomes.push(applied.map_err(|e| JournalError::Rejected {
                source: Arc::new(e),
            }));
        }
        let deleted = stage_acks(&mut index, &mut frame, deletions);
        compact(&self.log, &mut self.compaction, &mut index, &mut frame);

        if !frame.is_empty()
            && let Err(failed) = self.log.write(&mut index, &mut frame)
        {
            drop(sql); // rolls the SQLite part back
            self.recover(&mut index, failed.cut_back);
            return Err(failed.error);
        }
        self.log.recycle(frame);
        let committed = match sql.tx.take() {
            Some(tx) => tx
                .commit()
                .doing(|| format!("commit a journal batch of {} requests", batch.len())),
            None => Ok(()),
        };
        drop(sql);
        if let Err(e) = committed {
            // The log's frame is stored: its requests are; those of SQLite are not.
            self.recover(&mut index, true);
            let source = Arc::new(e);
            for (outcome, route) in outcomes.iter_mut().zip(&routes) {
                if *route == Route::Sqlite && outcome.is_ok() {
                    *outcome = Err(JournalError::CommitFailed {
                        requests: batch.len(),
                        source: Arc::clone(&source),
                    });
                }
            }
            return Ok((outcomes, Some(deleted)));
        }
        if !deferred.is_empty() {
            // A failure here loses deletions only: the rebuilt index shows what is stored.
            match self.log.frame(&mut index) {
                Ok(mut frame) => {
                    stage_deferred(&mut index, &mut frame, deferred);
                    if !frame.is_empty()
                        && let Err(failed) = self.log.write(&mut index, &mut frame)
                    {
                        self.recover(&mut index, failed.cut_back);
                    }
                    self.log.recycle(frame);
                }
                Err(_) => self.recover(&mut index, true),
            }
        }
        // A segment that cannot be deleted now is tried again after the next batch.
        let _ = self.log.delete_dead(&mut index);
        Ok((outcomes, Some(deleted)))
    }

    /// After a failed write: the index is read again from the disk. If the log's tail could not
    /// be cut back, the log takes no more writes.
    fn recover(&mut self, index: &mut Index, cut_back: bool) {
        self.compaction = None;
        self.broken |= !cut_back;
        match self.rebuild() {
            Ok(fresh) => *index = fresh,
            Err(_) => self.broken = true,
        }
    }

    fn rebuild(&self) -> Result<Index, StoreError> {
        let mut index = self.log.replay()?;
        for d in read::delivered_rows(&self.conn)? {
            index.remember_sqlite(d);
        }
        Ok(index)
    }
}

/// A request of log writes: checked, then encoded into `frame`, and applied to the index.
fn stage_log(
    index: &mut Index,
    frame: &mut Frame,
    sql: &mut Sql<'_>,
    writes: &[Write],
) -> Result<(), StoreError> {
    let mut forget_in_sqlite = Vec::new();
    let mut expire_in_sqlite: Option<Timestamp> = None;
    for w in writes {
        match w {
            Write::AppendOutbound(m) => check_append(m)?,
            Write::RememberDelivered(d) => {
                to_sql("until", d.until)?;
            }
            Write::ForgetDelivered(ids) => {
                forget_in_sqlite.extend(ids.iter().filter(|id| index.in_sqlite(id)));
            }
            Write::ForgetExpired { now } => {
                to_sql("now", *now)?;
                if index.any_sqlite_expired(*now) {
                    expire_in_sqlite = expire_in_sqlite.max(Some(*now));
                }
            }
            _ => {}
        }
    }
    // Delivered ids that a request with SQLite writes remembered are forgotten there too.
    if !forget_in_sqlite.is_empty() || expire_in_sqlite.is_some() {
        let mut in_sqlite = Vec::new();
        if !forget_in_sqlite.is_empty() {
            in_sqlite.push(Write::ForgetDelivered(forget_in_sqlite.clone()));
        }
        if let Some(now) = expire_in_sqlite {
            in_sqlite.push(Write::ForgetExpired { now });
        }
        sql.request(&in_sqlite.iter().collect::<Vec<_>>())?;
    }
    for w in writes {
        match w {
            // Appending an id already stored changes nothing.
            Write::AppendOutbound(m) if !index.has_outbound(&m.id) => {
                let seq = index.take_seq();
                let loc = frame.append(seq, m);
                index.insert_outbound(seq, m, loc);
            }
            Write::RemoveOutbound(ids) => {
                let removed: Vec<EnvelopeId> = ids
                    .iter()
                    .filter(|id| index.remove_outbound(id))
                    .copied()
                    .collect();
                if !removed.is_empty() {
                    frame.remove(&removed);
                }
            }
            // The later expiry wins: an earlier one changes nothing.
            Write::RememberDelivered(d) if index.log_until(&d.id).is_none_or(|u| d.until > u) => {
                let loc = frame.remember(*d);
                index.remember_log(*d, loc);
            }
            Write::ForgetDelivered(ids) => forget_in_log(index, frame, ids),
            Write::ForgetExpired { now } if index.any_log_expired(*now) => {
                frame.forget_expired(*now);
                index.forget_expired_log(*now);
            }
            _ => {}
        }
    }
    for id in &forget_in_sqlite {
        index.forget_sqlite(id);
    }
    if let Some(now) = expire_in_sqlite {
        index.forget_expired_sqlite(now);
    }
    Ok(())
}

fn forget_in_log(index: &mut Index, frame: &mut Frame, ids: &[EnvelopeId]) {
    let mut forgotten = Vec::new();
    for id in ids {
        if index.log_until(id).is_some() {
            index.forget_log(id);
            forgotten.push(*id);
        }
    }
    if !forgotten.is_empty() {
        frame.forget(&forgotten);
    }
}

/// A request with a SQLite write: applied wholly in SQLite (its delivered ids too); its
/// deletions of log records wait for the SQLite commit.
fn stage_sqlite(
    index: &mut Index,
    sql: &mut Sql<'_>,
    deferred: &mut Deferred,
    writes: &[Write],
) -> Result<(), StoreError> {
    let mut statements = Vec::with_capacity(writes.len());
    for w in writes {
        match w {
            Write::AppendOutbound(m) => {
                return Err(StoreError::OutboundBesideSqliteWrites { id: m.id });
            }
            // Queued messages live in the log only.
            Write::RemoveOutbound(_) => {}
            w => statements.push(w),
        }
    }
    sql.request(&statements)?;
    for w in writes {
        match w {
            Write::RemoveOutbound(ids) => deferred.remove.extend(ids),
            Write::DeadLetter(d) => deferred.remove.push(d.id),
            Write::RememberDelivered(d) => index.remember_sqlite(*d),
            Write::ForgetDelivered(ids) => {
                for id in ids {
                    index.forget_sqlite(id);
                    deferred.forget.push(*id);
                }
            }
            Write::ForgetExpired { now } => {
                index.forget_expired_sqlite(*now);
                deferred.expired = deferred.expired.max(Some(*now));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Removes the acknowledged messages that are stored, in the batch's frame.
fn stage_acks(index: &mut Index, frame: &mut Frame, deletions: &Deletions) -> Deleted {
    let mut removed = Vec::new();
    let deleted = deletions.apply(|id| {
        let found = index.remove_outbound(id);
        if found {
            removed.push(*id);
        }
        found
    });
    if !removed.is_empty() {
        frame.remove(&removed);
    }
    deleted
}

/// The log deletions of the batch's SQLite requests, after their commit.
fn stage_deferred(index: &mut Index, frame: &mut Frame, deferred: Deferred) {
    let removed: Vec<EnvelopeId> = deferred
        .remove
        .into_iter()
        .filter(|id| index.remove_outbound(id))
        .collect();
    if !removed.is_empty() {
        frame.remove(&removed);
    }
    forget_in_log(index, frame, &deferred.forget);
    if let Some(now) = deferred.expired
        && index.any_log_expired(now)
    {
        frame.forget_expired(now);
        index.forget_expired_log(now);
    }
}

/// Copies live records of the oldest segment into `frame` while compaction is due (see
/// `log/mod.rs`), at most [`COMPACT_BYTES`] per batch.
fn compact(log: &Log, state: &mut Option<Compaction>, index: &mut Index, frame: &mut Frame) {
    let Some((&oldest, segment)) = index.segments.first_key_value() else {
        return;
    };
    if oldest == frame.place().0 || segment.live_records == 0 {
        return;
    }
    let file = Arc::clone(&segment.file);
    let compaction = match state {
        Some(c) if c.segment == oldest && (c.stuck || !c.todo.is_empty()) => c,
        _ => {
            if !log.compaction_due(index) {
                *state = None;
                return;
            }
            state.insert(Compaction {
                segment: oldest,
                todo: index.live_in(oldest),
                stuck: false,
            })
        }
    };
    if compaction.stuck {
        return;
    }
    let mut budget = COMPACT_BYTES;
    while budget > 0
        && let Some((what, loc)) = compaction.todo.pop()
    {
        if !index.is_at(what, loc) {
            continue;
        }
        match log::read_record(&file, loc) {
            Ok(bytes) => {
                let to = frame.copy(&bytes);
                index.moved(what, to);
                budget = budget.saturating_sub(u64::from(loc.len));
            }
            Err(_) => {
                // Reading it again is for `pending_outbound`, which reports the damage.
                compaction.stuck = true;
                return;
            }
        }
    }
}
