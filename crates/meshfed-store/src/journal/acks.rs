//! Acknowledged outbound messages on their way out of the journal.
//!
//! An acknowledgement does not queue behind the requests waiting for the writer: callers add
//! the ids to [`Acknowledged`], and the writer deletes whatever is there in the batch it
//! commits next, together with that batch's requests. Under load that is the commit of the
//! appends already on their way (no fsync of its own); an idle writer is woken and commits the
//! deletions alone. So after a crash at most the acknowledgements of about one commit are
//! still stored and sent again.
//!
//! Callers acknowledge only messages whose append they have already submitted, but that append
//! may still be queued when the deletion runs. A deletion that matched nothing is therefore
//! tried again with later batches ([`Carried`]) until a batch has emptied the queue as it stood
//! after the deletion was taken: every append submitted before then has been applied, so an id
//! still not found was never stored (its append was rejected) and is let go.

use std::mem;
use std::sync::{Mutex, PoisonError};

use meshfed_proto::envelope::EnvelopeId;

/// Ids acknowledged since the writer last took them.
#[derive(Debug, Default)]
pub(crate) struct Acknowledged {
    ids: Mutex<Vec<EnvelopeId>>,
}

impl Acknowledged {
    /// Adds `ids`; true if the set was empty before and is not now (the writer may be idle and
    /// must be woken).
    pub(crate) fn add(&self, ids: impl IntoIterator<Item = EnvelopeId>) -> bool {
        let mut pending = self.lock();
        let was_empty = pending.is_empty();
        pending.extend(ids);
        was_empty && !pending.is_empty()
    }

    /// Everything added so far, leaving the set empty.
    pub(crate) fn take(&self) -> Vec<EnvelopeId> {
        mem::take(&mut *self.lock())
    }

    /// The set is a plain list: one that a panicking caller left is still whole.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<EnvelopeId>> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer's deletions that found no stored message yet (see the [module documentation](self)).
#[derive(Debug, Default)]
pub(crate) struct Carried {
    /// Taken in an earlier batch.
    older: Vec<EnvelopeId>,
}

/// The deletions of one batch: the ids taken for it and those carried from earlier ones.
#[derive(Debug, Default)]
pub(crate) struct Deletions {
    fresh: Vec<EnvelopeId>,
    older: Vec<EnvelopeId>,
}

/// What one batch's deletions found.
#[derive(Debug, Default)]
pub(crate) struct Deleted {
    /// Messages deleted.
    pub(crate) rows: u64,
    unmatched_fresh: Vec<EnvelopeId>,
    unmatched_older: Vec<EnvelopeId>,
}

impl Carried {
    /// The deletions for the next batch: `fresh` (just taken) and everything carried.
    pub(crate) fn with(&mut self, fresh: Vec<EnvelopeId>) -> Deletions {
        Deletions {
            fresh,
            older: mem::take(&mut self.older),
        }
    }

    /// The batch committed. What it did not find is tried again, except ids carried from an
    /// earlier batch when this one `drained` the queue: their appends would have been applied.
    pub(crate) fn committed(&mut self, deleted: Deleted, drained: bool) {
        self.older = deleted.unmatched_fresh;
        if !drained {
            self.older.extend(deleted.unmatched_older);
        }
    }

    /// The batch did not commit: every deletion is tried again.
    pub(crate) fn failed(&mut self, deletions: Deletions) {
        self.older = deletions.fresh;
        self.older.extend(deletions.older);
    }
}

impl Deletions {
    /// Whether there is nothing to delete.
    pub(crate) fn is_empty(&self) -> bool {
        self.fresh.is_empty() && self.older.is_empty()
    }

    /// Deletes the messages with `remove` (true if it found the message).
    /// An id named twice (a peer may acknowledge a message again) is deleted once and not
    /// carried: a carried copy would delete the message if it were ever appended again.
    pub(crate) fn apply(&self, mut remove: impl FnMut(&EnvelopeId) -> bool) -> Deleted {
        let mut deleted = Deleted::default();
        let mut seen = std::collections::HashSet::new();
        for (ids, unmatched) in [
            (&self.fresh, &mut deleted.unmatched_fresh),
            (&self.older, &mut deleted.unmatched_older),
        ] {
            for id in ids {
                if !seen.insert(*id) {
                    continue;
                }
                if remove(id) {
                    deleted.rows += 1;
                } else {
                    unmatched.push(*id);
                }
            }
        }
        deleted
    }
}
