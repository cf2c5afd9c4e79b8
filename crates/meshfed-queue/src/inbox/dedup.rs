//! The exactly-once dedup window: envelope ids delivered, each remembered until an expiry.

use std::collections::{BTreeSet, HashMap};

use meshfed_proto::envelope::{EnvelopeId, Timestamp};

/// Delivered ids with their expiry, bounded in number; the soonest to expire go first when full.
#[derive(Debug, Default)]
pub(super) struct DedupWindow {
    capacity: usize,
    until: HashMap<EnvelopeId, Timestamp>,
    by_expiry: BTreeSet<(Timestamp, EnvelopeId)>,
}

impl DedupWindow {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            until: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    pub(super) fn contains(&self, id: &EnvelopeId) -> bool {
        self.until.contains_key(id)
    }

    pub(super) fn len(&self) -> usize {
        self.until.len()
    }

    /// Remembers `id` until `until`; the ids evicted to stay within capacity.
    pub(super) fn insert(&mut self, id: EnvelopeId, until: Timestamp) -> Vec<EnvelopeId> {
        if let Some(old) = self.until.insert(id, until) {
            self.by_expiry.remove(&(old, id));
        }
        self.by_expiry.insert((until, id));
        let mut evicted = Vec::new();
        while self.until.len() > self.capacity {
            let Some((_, oldest)) = self.by_expiry.pop_first() else {
                break;
            };
            self.until.remove(&oldest);
            evicted.push(oldest);
        }
        evicted
    }

    /// Forgets every id whose expiry has come; those ids.
    pub(super) fn expire(&mut self, now: Timestamp) -> Vec<EnvelopeId> {
        let mut gone = Vec::new();
        while let Some(&(until, id)) = self.by_expiry.first() {
            if until > now {
                break;
            }
            self.by_expiry.pop_first();
            self.until.remove(&id);
            gone.push(id);
        }
        gone
    }

    /// When the next id expires.
    pub(super) fn next_expiry(&self) -> Option<Timestamp> {
        self.by_expiry.first().map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> EnvelopeId {
        EnvelopeId::new(Timestamp(1), [n; 10])
    }

    #[test]
    fn window_forgets_ids_at_their_expiry() {
        let mut w = DedupWindow::new(10);
        w.insert(id(1), Timestamp(100));
        w.insert(id(2), Timestamp(200));
        assert_eq!(w.next_expiry(), Some(Timestamp(100)));
        assert!(w.expire(Timestamp(99)).is_empty());
        assert_eq!(w.expire(Timestamp(100)), [id(1)]);
        assert!(!w.contains(&id(1)) && w.contains(&id(2)));
    }

    #[test]
    fn full_window_evicts_the_soonest_to_expire() {
        let mut w = DedupWindow::new(2);
        w.insert(id(1), Timestamp(300));
        w.insert(id(2), Timestamp(100));
        let evicted = w.insert(id(3), Timestamp(200));
        assert_eq!(evicted, [id(2)]);
        assert_eq!(w.len(), 2);
        assert!(w.contains(&id(1)) && w.contains(&id(3)));
    }

    #[test]
    fn reinserting_an_id_moves_its_expiry() {
        let mut w = DedupWindow::new(4);
        w.insert(id(1), Timestamp(100));
        w.insert(id(1), Timestamp(500));
        assert!(w.expire(Timestamp(200)).is_empty());
        assert_eq!(w.len(), 1);
    }
}
