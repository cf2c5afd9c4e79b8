//! What travels between an [`Outbox`](crate::Outbox) and an [`Inbox`](crate::Inbox) besides the
//! messages themselves: stream sequence numbers, acknowledgements and credit.
//!
//! One sender's stream to one receiver is numbered by [`Seq`]: a message takes the next number at
//! its first transmission and keeps it for every retransmission, so the receiver recognises
//! repeats and the sender can be told exactly what arrived. An [`Epoch`] names the incarnation of
//! the stream: a sender that restarts (and so forgets its numbering) starts a larger epoch.

use std::collections::BTreeMap;
use std::fmt;

use crate::message::Message;

/// A transmission's number in one stream, assigned at a message's first transmission and kept for
/// its retransmissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    /// The number after this one.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The incarnation of a sender's stream. A sender that restarts takes a larger epoch (the driver
/// persists a counter); the receiver then tracks the new stream from scratch, while its dedup
/// window (by envelope id) still catches exactly-once messages sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

/// A message's position among the ordered messages of its key, assigned at acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct KeySeq(pub u64);

impl KeySeq {
    /// The position after this one.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

/// A half-open range of sequence numbers, `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqRange {
    /// First number in the range.
    pub start: Seq,
    /// First number after the range.
    pub end: Seq,
}

impl SeqRange {
    /// Whether `seq` lies in the range.
    pub fn contains(&self, seq: Seq) -> bool {
        self.start <= seq && seq < self.end
    }
}

/// A credit grant: the sender may make first transmissions with sequence numbers below `limit`
/// in `epoch`.
///
/// Grants are cumulative limits rather than increments, so a lost grant is healed by the next one
/// and a repeated one does no harm. Retransmissions need no credit: they were counted when first
/// sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credit {
    /// The stream the grant is for.
    pub epoch: Epoch,
    /// New transmissions may use sequence numbers below this.
    pub limit: Seq,
}

/// What a receiver has settled in one stream: cumulatively, selectively, and which of those
/// arrived too late to be delivered. Carries the receiver's current credit too.
///
/// A sequence number is *settled* once the receiver has dealt with it for good: delivered, or
/// recognised as a duplicate, or discarded because its deadline had passed. Messages held back
/// for ordering are not settled and so are not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The stream acknowledged.
    pub epoch: Epoch,
    /// Every sequence number below this is settled.
    pub below: Seq,
    /// Further settled ranges above `below`, ascending (selective acknowledgement).
    pub ranges: Vec<SeqRange>,
    /// Settled numbers whose message arrived after its deadline and was not delivered.
    pub late: Vec<Seq>,
    /// Settled numbers whose message the receiver refused (its agreement or access checks),
    /// each with the receiver's reason code (the transport's: this crate only carries it).
    pub refused: Vec<(Seq, u8)>,
    /// The receiver's credit limit at the time of the acknowledgement.
    pub credit: Seq,
}

impl Ack {
    /// Whether `seq` is settled according to this acknowledgement.
    pub fn covers(&self, seq: Seq) -> bool {
        seq < self.below || self.ranges.iter().any(|r| r.contains(seq))
    }

    /// The credit this acknowledgement carries.
    pub fn credit(&self) -> Credit {
        Credit {
            epoch: self.epoch,
            limit: self.credit,
        }
    }
}

/// One transmission of a message in a stream, from an [`Outbox`](crate::Outbox) to the
/// [`Inbox`](crate::Inbox) at the other end of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<P> {
    /// The sender's stream.
    pub epoch: Epoch,
    /// The message's number in the stream (the same on every retransmission).
    pub seq: Seq,
    /// Every number below this is settled at the sender (acknowledged, or given up because its
    /// deadline passed, or sent at most once): the receiver need not wait for any of them. Never
    /// above `seq`.
    pub floor: Seq,
    /// The message's position within its order key, for `ordered` messages.
    pub key_seq: Option<KeySeq>,
    /// Whether the message was sent before.
    pub retransmission: bool,
    /// The message.
    pub message: Message<P>,
}

/// The sender's floor, sent on its own when no transmission carries it (as SCTP's FORWARD-TSN):
/// every sequence number below `floor` is settled at the sender, so the receiver stops waiting
/// for those that never arrived (qos 0 messages lost on the way, messages given up at their
/// deadline). Without it a receiver could hold messages back behind such a gap, its window full,
/// while the sender waits for credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Forward {
    /// The sender's stream.
    pub epoch: Epoch,
    /// Every number below this is settled at the sender.
    pub floor: Seq,
}

/// A set of sequence numbers: every number below `base`, plus disjoint, non-adjacent ranges above
/// it. Numbers join the base as soon as they are contiguous with it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeqSet {
    base: u64,
    /// start → end (exclusive), all starting above `base`.
    ranges: BTreeMap<u64, u64>,
}

impl SeqSet {
    /// A set holding every number below `base`.
    pub(crate) fn below(base: Seq) -> Self {
        Self {
            base: base.0,
            ranges: BTreeMap::new(),
        }
    }

    /// The first number not in the set.
    pub(crate) fn base(&self) -> Seq {
        Seq(self.base)
    }

    pub(crate) fn contains(&self, seq: Seq) -> bool {
        let s = seq.0;
        if s < self.base {
            return true;
        }
        self.ranges
            .range(..=s)
            .next_back()
            .is_some_and(|(_, &end)| s < end)
    }

    /// Adds `seq`; whether it was new.
    pub(crate) fn insert(&mut self, seq: Seq) -> bool {
        if self.contains(seq) {
            return false;
        }
        let s = seq.0;
        let mut start = s;
        let mut end = s.saturating_add(1);
        if let Some((&ps, &pe)) = self.ranges.range(..s).next_back()
            && pe == s
        {
            start = ps;
            self.ranges.remove(&ps);
        }
        if let Some(ne) = self.ranges.remove(&end) {
            end = ne;
        }
        if start == self.base {
            self.base = end;
        } else {
            self.ranges.insert(start, end);
        }
        true
    }

    /// Makes every number below `to` a member; returns how many of `base..to` were missing.
    pub(crate) fn fill_below(&mut self, to: Seq) -> u64 {
        let to = to.0;
        if to <= self.base {
            return 0;
        }
        let mut missing = to - self.base;
        let mut new_base = to;
        while let Some((&start, &end)) = self.ranges.first_key_value() {
            if start >= to {
                break;
            }
            self.ranges.remove(&start);
            missing -= end.min(to) - start;
            new_base = new_base.max(end);
        }
        if let Some(end) = self.ranges.remove(&new_base) {
            new_base = end;
        }
        self.base = new_base;
        missing
    }

    /// The ranges above the base, ascending, at most `max` of them.
    pub(crate) fn ranges(&self, max: usize) -> Vec<SeqRange> {
        self.ranges
            .iter()
            .take(max)
            .map(|(&s, &e)| SeqRange {
                start: Seq(s),
                end: Seq(e),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(members: &[u64]) -> SeqSet {
        let mut s = SeqSet::default();
        for &m in members {
            s.insert(Seq(m));
        }
        s
    }

    #[test]
    fn seq_set_merges_contiguous_numbers_into_the_base() {
        let mut s = set(&[2, 4, 3]);
        assert_eq!(s.base(), Seq(0));
        assert_eq!(s.ranges(8).len(), 1);
        assert!(s.insert(Seq(1)));
        assert!(s.insert(Seq(0)));
        assert_eq!(s.base(), Seq(5));
        assert!(s.ranges(8).is_empty());
        assert!(!s.insert(Seq(3)), "a repeat is not new");
    }

    #[test]
    fn seq_set_reports_selective_ranges_in_order() {
        let s = set(&[0, 3, 4, 7, 9, 10]);
        assert_eq!(s.base(), Seq(1));
        let r: Vec<(u64, u64)> = s.ranges(8).iter().map(|r| (r.start.0, r.end.0)).collect();
        assert_eq!(r, [(3, 5), (7, 8), (9, 11)]);
        assert_eq!(s.ranges(2).len(), 2);
        assert!(s.contains(Seq(10)) && !s.contains(Seq(8)) && !s.contains(Seq(11)));
    }

    #[test]
    fn fill_below_counts_the_numbers_that_never_arrived() {
        let mut s = set(&[0, 3, 4, 8]);
        // 1, 2, 5 are missing below 6.
        assert_eq!(s.fill_below(Seq(6)), 3);
        assert_eq!(s.base(), Seq(6));
        assert!(s.contains(Seq(8)) && !s.contains(Seq(7)));
        assert_eq!(
            s.fill_below(Seq(3)),
            0,
            "filling below the base changes nothing"
        );
        // 6 and 7 missing; 8 joins the base.
        assert_eq!(s.fill_below(Seq(8)), 2);
        assert_eq!(s.base(), Seq(9));
    }

    #[test]
    fn fill_below_inside_a_range_absorbs_the_whole_range() {
        let mut s = set(&[5, 6, 7]);
        assert_eq!(s.fill_below(Seq(6)), 5);
        assert_eq!(s.base(), Seq(8));
    }

    #[test]
    fn ack_covers_cumulative_and_selective_numbers() {
        let ack = Ack {
            epoch: Epoch(1),
            below: Seq(3),
            ranges: vec![SeqRange {
                start: Seq(5),
                end: Seq(7),
            }],
            late: vec![],
            refused: vec![],
            credit: Seq(10),
        };
        let covered: Vec<u64> = (0..9).filter(|&s| ack.covers(Seq(s))).collect();
        assert_eq!(covered, [0, 1, 2, 5, 6]);
        assert_eq!(ack.credit().limit, Seq(10));
    }
}
