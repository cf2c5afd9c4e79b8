//! The outbox's bookkeeping per message and per order key.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use meshfed_proto::envelope::{Priority, Timestamp};

use crate::message::Message;
use crate::stream::{KeySeq, Seq};

/// A held message's place in acceptance order (first come, first served).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Ticket(pub(super) u64);

/// Where a held message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Reliable, not yet reported persisted: not accepted, not eligible.
    AwaitingPersistence,
    /// Accepted, never sent.
    Queued,
    /// Sent, waiting for an acknowledgement.
    InFlight {
        seq: Seq,
        sent_at: Timestamp,
        retransmit_at: Timestamp,
    },
    /// Sent before, to be sent again (timeout or link loss).
    AwaitingRetransmission { seq: Seq },
}

/// One held message.
#[derive(Debug)]
pub(super) struct Entry<P> {
    pub(super) message: Message<P>,
    pub(super) accepted_at: Timestamp,
    pub(super) state: State,
    /// Stored durably (or needs no storage: qos 0, restored); until then it is not accepted.
    pub(super) persisted: bool,
    pub(super) key_seq: Option<KeySeq>,
    pub(super) transmissions: u32,
    /// Restored after a restart: it may have been sent before.
    pub(super) restored: bool,
}

impl<P> Entry<P> {
    /// Whether the peer may have received this message.
    pub(super) fn maybe_sent(&self) -> bool {
        self.transmissions > 0 || self.restored
    }
}

/// The unsent messages of one order key, in acceptance order.
#[derive(Debug, Default)]
pub(super) struct KeyQueue {
    next: KeySeq,
    unsent: BTreeSet<Ticket>,
    /// Unsent messages per priority, for the key's highest priority in O(1).
    per_priority: [usize; 8],
    /// The key's entry in the ready set, if any.
    pub(super) scheduled: Option<(Reverse<Priority>, Ticket)>,
}

impl KeyQueue {
    /// Appends a message; its position in the key.
    pub(super) fn push(&mut self, ticket: Ticket, priority: Priority) -> KeySeq {
        let seq = self.next;
        self.next = seq.next();
        self.unsent.insert(ticket);
        self.per_priority[usize::from(priority.get())] += 1;
        seq
    }

    /// Removes a message (sent, acknowledged by id, dead-lettered); absent ones are ignored.
    pub(super) fn remove(&mut self, ticket: Ticket, priority: Priority) {
        if self.unsent.remove(&ticket) {
            self.per_priority[usize::from(priority.get())] -= 1;
        }
    }

    /// The first unsent message.
    pub(super) fn head(&self) -> Option<Ticket> {
        self.unsent.first().copied()
    }

    /// The highest priority among the unsent messages.
    pub(super) fn top_priority(&self) -> Option<Priority> {
        let top = self.per_priority.iter().rposition(|&n| n > 0)?;
        u8::try_from(top)
            .ok()
            .and_then(|p| Priority::try_from(p).ok())
    }
}
