//! Ingress pacing: the agreed rates — the federation's `max_rate` and each topic pattern's —
//! kept at the receiver too. The sender keeps them at egress (a publisher over them is answered
//! 429); a sender that goes over anyway, say a backlog flushed at once after an outage, or a
//! sender that does not keep the agreement, is slowed here: what it sends within its credit is
//! delivered, but the credit each message over the rates would free is withheld until the
//! rates allow it. The sender then runs out of credit and sends no faster than agreed. Each
//! such message is counted (`meshfed_ingress_paced_total{peer}`).
//!
//! The receiving task (`inbox.rs`) owns it. A bucket holds two seconds of messages at the
//! agreed rate (one more than the sender's), so the jitter of a compliant sender is not paced.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use meshfed_proto::admission::Terms;
use meshfed_proto::envelope::EnvelopeId;
use meshfed_proto::{Topic, TopicPattern};
use meshfed_queue::Peer;

type Bucket = governor::DefaultDirectRateLimiter;

/// One peer's rates as agreed, and the consumption withheld from it.
struct Paced {
    /// The terms the buckets were made for (new terms make new buckets).
    terms: Arc<Terms>,
    federation: Option<Bucket>,
    topics: Vec<(TopicPattern, Bucket)>,
    /// Messages whose credit is withheld, oldest first.
    held: VecDeque<(EnvelopeId, Topic)>,
    /// When the oldest held message may be tried again.
    retry: Option<tokio::time::Instant>,
}

fn bucket(rate: u32) -> Bucket {
    let n = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    let burst = n.saturating_mul(NonZeroU32::MIN.saturating_add(1));
    governor::RateLimiter::direct(governor::Quota::per_second(n).allow_burst(burst))
}

impl Paced {
    fn new(terms: Arc<Terms>) -> Self {
        Self {
            federation: terms.max_rate.map(bucket),
            topics: (terms.topic_rates.iter())
                .map(|r| (r.topics.clone(), bucket(r.rate)))
                .collect(),
            terms,
            held: VecDeque::new(),
            retry: None,
        }
    }

    /// Takes a token from every bucket `topic` falls under; how long until one is there when
    /// a bucket is empty (read on `clock`, made once: making one calibrates it).
    fn take(&self, topic: &Topic, clock: &DefaultClock) -> Result<(), Duration> {
        let buckets = (self.topics.iter())
            .filter(|(p, _)| p.matches(topic))
            .map(|(_, b)| b)
            .chain(&self.federation);
        for b in buckets {
            b.check()
                .map_err(|not_until| not_until.wait_time_from(clock.now()))?;
        }
        Ok(())
    }

    /// Releases the held messages the rates allow now, oldest first, into `out`.
    fn release(&mut self, out: &mut Vec<EnvelopeId>, clock: &DefaultClock) {
        self.retry = None;
        while let Some((_, topic)) = self.held.front() {
            if let Err(wait) = self.take(topic, clock) {
                self.retry = Some(tokio::time::Instant::now() + wait);
                return;
            }
            if let Some((id, _)) = self.held.pop_front() {
                out.push(id);
            }
        }
    }
}

/// Every peer's ingress rates.
#[derive(Default)]
pub(crate) struct Pacing {
    peers: HashMap<Peer, Paced>,
    clock: DefaultClock,
}

impl Pacing {
    /// Whether the credit of a message from `peer` on `topic`, arrived under `terms`, is freed
    /// now (`true`), or withheld until the rates allow it (`false`: it is held here, and
    /// [`Pacing::due`] hands its id back later).
    pub(crate) fn admit(
        &mut self,
        peer: &Peer,
        terms: &Arc<Terms>,
        id: EnvelopeId,
        topic: &Topic,
    ) -> bool {
        let unlimited = terms.max_rate.is_none() && terms.topic_rates.is_empty();
        if unlimited
            && (self.peers.is_empty() || self.peers.get(peer).is_none_or(|p| p.held.is_empty()))
        {
            return true;
        }
        let paced = match self.peers.get_mut(peer) {
            Some(p) if Arc::ptr_eq(&p.terms, terms) => p,
            _ => {
                let mut fresh = Paced::new(terms.clone());
                if let Some(old) = self.peers.remove(peer) {
                    // What was held is tried again at once under the new rates.
                    fresh.held = old.held;
                    fresh.retry = (!fresh.held.is_empty()).then(tokio::time::Instant::now);
                }
                self.peers.entry(peer.clone()).or_insert(fresh)
            }
        };
        if paced.held.is_empty() {
            match paced.take(topic, &self.clock) {
                Ok(()) => return true,
                Err(wait) => paced.retry = Some(tokio::time::Instant::now() + wait),
            }
        }
        paced.held.push_back((id, topic.clone()));
        paced.retry.get_or_insert_with(tokio::time::Instant::now);
        false
    }

    /// When the next held message may be released; `None` when none is held.
    pub(crate) fn next(&self) -> Option<tokio::time::Instant> {
        self.peers.values().filter_map(|p| p.retry).min()
    }

    /// The ids of held messages the rates allow now.
    pub(crate) fn due(&mut self) -> Vec<EnvelopeId> {
        let now = tokio::time::Instant::now();
        let mut out = Vec::new();
        for p in self.peers.values_mut() {
            if p.retry.is_some_and(|at| at <= now) {
                p.release(&mut out, &self.clock);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshfed_proto::policy::TopicRate;

    fn terms(max_rate: Option<u32>, topic_rates: Vec<TopicRate>) -> Arc<Terms> {
        Arc::new(Terms {
            federation_id: "fed_ab".parse().unwrap(),
            local: "plant-a".parse().unwrap(),
            peer: "supplier-b".parse().unwrap(),
            version: 1,
            outbound: Vec::new(),
            inbound: vec![TopicPattern::all()],
            max_message_size: 1 << 20,
            max_qos: meshfed_proto::envelope::Qos::ExactlyOnce,
            content_types: Vec::new(),
            max_priority: 7,
            max_latency_ms: None,
            redact: Vec::new(),
            max_rate,
            signature_modes: Vec::new(),
            schemas: Vec::new(),
            classifications: Vec::new(),
            topic_rates,
            audit_level: meshfed_proto::policy::AuditLevel::Refusals,
            retention_days: 30,
        })
    }

    fn id(n: u8) -> EnvelopeId {
        EnvelopeId::new(meshfed_proto::envelope::Timestamp(1), [n; 10])
    }

    fn peer() -> Peer {
        Peer {
            mesh: "supplier-b".parse().unwrap(),
            node: "gw1".parse().unwrap(),
        }
    }

    #[test]
    fn a_burst_over_two_seconds_of_the_agreed_rate_has_its_credit_withheld() {
        let t = terms(Some(5), Vec::new());
        let mut pacing = Pacing::default();
        let topic: Topic = "a/b".parse().unwrap();
        let freed = (0..20)
            .filter(|&n| pacing.admit(&peer(), &t, id(n), &topic))
            .count();
        assert_eq!(freed, 10, "two seconds of 5 msg/s are freed at once");
        assert!(
            pacing.next().is_some(),
            "the rest is held with a time to retry"
        );
        assert!(pacing.due().is_empty(), "none is due before its time");
        // Without limits any more (renegotiated), what is held is released at once, in order.
        let unlimited = terms(None, Vec::new());
        assert!(!pacing.admit(&peer(), &unlimited, id(20), &topic));
        let due = pacing.due();
        assert_eq!(due.len(), 11);
        assert_eq!((due[0], due[10]), (id(10), id(20)));
        assert_eq!(pacing.next(), None);
        assert!(pacing.admit(&peer(), &unlimited, id(21), &topic));
    }

    #[test]
    fn a_topic_limit_paces_only_its_topics_and_no_limit_paces_nothing() {
        let t = terms(
            None,
            vec![TopicRate {
                topics: "hot/#".parse().unwrap(),
                rate: 1,
            }],
        );
        let mut pacing = Pacing::default();
        let hot: Topic = "hot/x".parse().unwrap();
        let cold: Topic = "cold/x".parse().unwrap();
        let hot_freed = (0..5)
            .filter(|&n| pacing.admit(&peer(), &t, id(n), &hot))
            .count();
        assert_eq!(hot_freed, 2);
        let unlimited = terms(None, Vec::new());
        let mut other = Pacing::default();
        assert!((0..100).all(|n| other.admit(&peer(), &unlimited, id(n), &cold)));
    }
}
