//! Deterministic simulation of an [`Outbox`](crate::Outbox) and an [`Inbox`](crate::Inbox)
//! talking over a hostile link: scenarios for each promise of "delivery that loses nothing", and
//! property tests over random schedules for the invariants.

mod props;
mod util;

use std::collections::BTreeMap;
use std::time::Duration;

use meshfed_proto::envelope::{MaxLatency, Priority, Qos, Timestamp};

use crate::{DeadLetterReason, Deadline, Limit, Message, OfferError, Offered, OrderKey};
use util::{Knobs, Pair, id};

/// Give up on a run after an hour of virtual time.
const LIMIT: Timestamp = Timestamp(3_600_000);

fn msg(n: u64, qos: Qos) -> Message<u64> {
    Message::new(id(n), 200, n).with_qos(qos)
}

fn key(k: u64) -> OrderKey {
    OrderKey {
        source: "plant-a".parse().expect("valid mesh id"),
        destination: "cloud".parse().expect("valid mesh id"),
        topic: format!("line-{k}/temperature")
            .parse()
            .expect("valid topic"),
    }
}

fn prio(p: u8) -> Priority {
    Priority::try_from(p).expect("priority 0-7")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn hostile() -> Knobs {
    Knobs {
        loss: 0.2,
        delay: ms(20),
        jitter: ms(40),
        persist_delay: ms(2),
        consume_delay: ms(5),
        resume_with_ack_state: true,
    }
}

/// The promises every run keeps, whatever the schedule.
fn check_invariants(pair: &Pair) {
    let log = &pair.log;
    let mut first_per_key: BTreeMap<OrderKey, Vec<u64>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (at, d) in &log.delivered {
        let n = d.message.payload;
        let m = &log.offered[&n];
        if let Some(deadline) = m.deadline {
            assert!(
                !deadline.passed(*at),
                "message {n} delivered at {} after its deadline {deadline}",
                at.0
            );
        }
        if let Some(k) = &m.order
            && seen.insert(n)
        {
            first_per_key.entry(k.clone()).or_default().push(n);
        }
        seen.insert(n);
    }
    for (k, ns) in &first_per_key {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "key {k} delivered out of order: {ns:?}"
        );
    }
    for (&n, m) in &log.offered {
        let deliveries = log.deliveries_of(n);
        match m.qos {
            Qos::AtMostOnce => assert!(deliveries <= 1, "qos 0 message {n} delivered twice"),
            Qos::ExactlyOnce => assert!(deliveries <= 1, "qos 2 message {n} delivered twice"),
            Qos::AtLeastOnce => {}
        }
        if m.qos == Qos::AtMostOnce || !log.accepted.contains(&n) {
            if log.dead.get(&n) == Some(&DeadLetterReason::Shed) {
                assert_eq!(deliveries, 0, "shed message {n} was delivered");
            }
            continue;
        }
        // An accepted reliable message: acknowledged after delivery, or dead-lettered for its
        // deadline, never anything else.
        match (log.acknowledged.contains(&n), log.dead.get(&n)) {
            (true, None) => assert!(deliveries >= 1, "message {n} acknowledged, not delivered"),
            (false, Some(reason)) => {
                assert!(
                    m.deadline.is_some(),
                    "message {n} without deadline dead-lettered"
                );
                assert_ne!(*reason, DeadLetterReason::Shed, "reliable message {n} shed");
                if *reason != DeadLetterReason::ExpiredUnacknowledged {
                    assert_eq!(
                        deliveries, 0,
                        "message {n} dead-lettered ({reason}) yet delivered"
                    );
                }
            }
            (ack, dead) => panic!("message {n}: acknowledged {ack}, dead-lettered {dead:?}"),
        }
    }
    assert_eq!(log.beyond_credit, 0, "sent beyond credit");
    assert_eq!(
        pair.inbox.counters().beyond_credit,
        0,
        "receiver saw sends beyond credit"
    );
}

#[test]
fn qos1_messages_are_all_delivered_despite_loss_reordering_and_link_drops() {
    let mut pair = Pair::with_window(1, hostile(), 64);
    pair.drop_link(Timestamp(300), ms(500));
    pair.drop_link(Timestamp(1_500), ms(2_000));
    pair.drop_link(Timestamp(5_000), ms(100));
    for n in 0..600 {
        pair.run_until(Timestamp(n * 10));
        pair.offer(msg(n, Qos::AtLeastOnce)).expect("room");
    }
    assert!(pair.run_to_completion(LIMIT), "run did not finish");
    check_invariants(&pair);
    for n in 0..600 {
        assert!(pair.log.deliveries_of(n) >= 1, "message {n} lost");
    }
    assert_eq!(pair.log.acknowledged.len(), 600);
    assert!(
        pair.outbox.counters().retransmitted > 0,
        "the loss was real"
    );
}

#[test]
fn qos2_messages_are_delivered_exactly_once_across_loss_drops_and_a_sender_restart() {
    let mut pair = Pair::with_window(2, hostile(), 32);
    pair.drop_link(Timestamp(400), ms(300));
    pair.restart_sender(Timestamp(2_000), ms(700));
    pair.drop_link(Timestamp(4_000), ms(1_000));
    for n in 0..500 {
        pair.run_until(Timestamp(n * 10));
        pair.offer(msg(n, Qos::ExactlyOnce)).expect("room");
    }
    assert!(pair.run_to_completion(LIMIT), "run did not finish");
    check_invariants(&pair);
    for &n in &pair.log.accepted {
        assert_eq!(pair.log.deliveries_of(n), 1, "message {n}");
    }
    assert!(
        pair.log.accepted.len() >= 490,
        "nearly all were accepted before the crash"
    );
    assert!(pair.outbox.epoch().0 == 2, "the sender did restart");
}

#[test]
fn ordered_keys_are_delivered_in_order_under_heavy_reordering() {
    let knobs = Knobs {
        jitter: ms(200),
        ..hostile()
    };
    let mut pair = Pair::with_window(3, knobs, 64);
    pair.drop_link(Timestamp(1_000), ms(400));
    for n in 0..400 {
        pair.run_until(Timestamp(n * 5));
        let m = msg(n, Qos::AtLeastOnce)
            .with_order(key(n % 3))
            .with_priority(prio((n % 8) as u8));
        pair.offer(m).expect("room");
    }
    assert!(pair.run_to_completion(LIMIT), "run did not finish");
    check_invariants(&pair);
    for k in 0..3 {
        let got: Vec<u64> = pair
            .log
            .delivered
            .iter()
            .map(|(_, d)| d.message.payload)
            .filter(|n| n % 3 == k)
            .collect();
        let want: Vec<u64> = (0..400).filter(|n| n % 3 == k).collect();
        assert_eq!(got, want, "key {k}");
    }
}

#[test]
fn higher_priority_messages_overtake_a_queued_backlog() {
    let mut pair = Pair::with_window(4, Knobs::default(), 8);
    for n in 0..100 {
        pair.offer(msg(n, Qos::AtMostOnce)).expect("room");
    }
    for n in 100..110 {
        pair.offer(msg(n, Qos::AtMostOnce).with_priority(Priority::MAX))
            .expect("room");
    }
    assert!(pair.run_to_completion(LIMIT));
    check_invariants(&pair);
    let sent = &pair.log.first_sent;
    // The first 8 went before the urgent ones existed; then the urgent ones come first.
    assert_eq!(sent[..8], (0..8).collect::<Vec<_>>());
    assert_eq!(sent[8..18], (100..110).collect::<Vec<_>>());
    assert_eq!(sent[18..], (8..100).collect::<Vec<_>>());
}

#[test]
fn expired_messages_are_dead_lettered_and_never_delivered_late() {
    let mut pair = Pair::with_window(5, hostile(), 64);
    pair.drop_link(Timestamp(1_000), ms(3_000));
    let latency = MaxLatency::try_from(800u32).expect("positive");
    for n in 0..300 {
        pair.run_until(Timestamp(n * 10));
        let qos = [Qos::AtMostOnce, Qos::AtLeastOnce, Qos::ExactlyOnce][(n % 3) as usize];
        let m = msg(n, qos).with_deadline(Deadline::after(pair.now, latency));
        pair.offer(m).expect("room");
    }
    assert!(pair.run_to_completion(LIMIT), "run did not finish");
    check_invariants(&pair);
    let expired = pair
        .log
        .dead
        .values()
        .filter(|r| **r == DeadLetterReason::ExpiredInQueue)
        .count();
    assert!(
        expired > 50,
        "the outage expired queued messages ({expired})"
    );
    let counters = pair.outbox.counters();
    assert_eq!(
        counters.expired_in_queue + counters.expired_unacknowledged + counters.arrived_late,
        pair.log.dead.len() as u64,
        "each dead letter is counted"
    );
}

#[test]
fn credit_bounds_what_is_in_flight_and_held_at_the_receiver() {
    let knobs = Knobs {
        consume_delay: ms(300),
        ..hostile()
    };
    let window = 8;
    let mut pair = Pair::new(
        6,
        knobs,
        crate::OutboxConfig {
            initial_credit: window,
            max_in_flight: 6,
            ..crate::OutboxConfig::default()
        },
        crate::InboxConfig {
            window,
            ..crate::InboxConfig::default()
        },
    );
    for n in 0..200 {
        pair.offer(msg(n, Qos::AtLeastOnce)).expect("room");
    }
    assert!(pair.run_to_completion(LIMIT), "run did not finish");
    check_invariants(&pair);
    assert_eq!(pair.log.acknowledged.len(), 200);
    assert!(pair.log.max_in_flight <= 6, "in-flight window");
    assert!(
        pair.log.max_outstanding <= window,
        "{} sent and not freed with a window of {window}",
        pair.log.max_outstanding
    );
    assert!(pair.log.max_occupancy <= window as usize);
    assert!(
        pair.log.max_outstanding >= window - 1,
        "the window was used"
    );
}

#[test]
fn full_queue_refuses_new_messages_without_losing_accepted_ones() {
    let mut pair = Pair::new(
        7,
        hostile(),
        crate::OutboxConfig {
            max_messages: 50,
            ..crate::OutboxConfig::default()
        },
        crate::InboxConfig::default(),
    );
    pair.drop_link(Timestamp(0), ms(1_000));
    pair.run_until(Timestamp(0));
    for n in 0..80 {
        let result = pair.offer(msg(n, Qos::AtLeastOnce).with_priority(prio((n % 8) as u8)));
        if n < 50 {
            assert!(result.is_ok(), "message {n}: {result:?}");
        } else {
            assert_eq!(
                result,
                Err(OfferError::Full {
                    limit: Limit::Messages { max: 50 }
                }),
                "message {n}"
            );
        }
    }
    assert!(pair.run_to_completion(LIMIT), "run did not finish");
    check_invariants(&pair);
    for n in 0..50 {
        assert!(pair.log.deliveries_of(n) >= 1, "accepted message {n} lost");
    }
    for n in 50..80 {
        assert_eq!(
            pair.log.deliveries_of(n),
            0,
            "refused message {n} delivered"
        );
    }
}

#[test]
fn overload_sheds_only_low_priority_qos0_messages() {
    let mut pair = Pair::new(
        8,
        Knobs::default(),
        crate::OutboxConfig {
            max_messages: 40,
            ..crate::OutboxConfig::default()
        },
        crate::InboxConfig::default(),
    );
    pair.drop_link(Timestamp(0), ms(1_000));
    pair.run_until(Timestamp(0));
    for n in 0..30 {
        pair.offer(msg(n, Qos::AtMostOnce).with_priority(prio(1)))
            .expect("room");
    }
    for n in 30..40 {
        pair.offer(msg(n, Qos::AtLeastOnce)).expect("room");
    }
    // Full: each urgent message displaces the oldest priority-1 qos 0 message.
    for n in 40..60 {
        pair.offer(msg(n, Qos::ExactlyOnce).with_priority(prio(6)))
            .expect("room by shedding");
    }
    // Still full: a qos 0 message that outranks nothing queued is shed as it comes; one of
    // priority 2 displaces the oldest priority-1 message.
    assert_eq!(
        pair.offer(msg(60, Qos::AtMostOnce).with_priority(prio(1))),
        Ok(Offered::Shed)
    );
    assert_eq!(
        pair.offer(msg(61, Qos::AtMostOnce).with_priority(prio(2))),
        Ok(Offered::Queued)
    );
    assert_eq!(pair.outbox.counters().shed, 22);
    assert!(pair.run_to_completion(LIMIT));
    check_invariants(&pair);
    let shed: Vec<u64> = pair
        .log
        .dead
        .iter()
        .filter(|(_, r)| **r == DeadLetterReason::Shed)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(shed, (0..21).chain([60]).collect::<Vec<_>>());
    for n in (21..60).chain([61]) {
        assert_eq!(pair.log.deliveries_of(n), 1, "message {n}");
    }
}

#[test]
fn unacknowledged_stream_resumes_on_a_new_link_without_resending_what_arrived() {
    let mut pair = Pair::with_window(9, Knobs::default(), 64);
    for n in 0..20 {
        pair.offer(msg(n, Qos::AtLeastOnce)).expect("room");
    }
    // Everything arrives at 10 ms; the link drops before the acknowledgements are back at 20 ms.
    pair.drop_link(Timestamp(15), ms(100));
    assert!(pair.run_to_completion(LIMIT));
    check_invariants(&pair);
    for n in 0..20 {
        assert_eq!(pair.log.deliveries_of(n), 1);
    }
    assert_eq!(
        pair.outbox.counters().retransmitted,
        0,
        "the resumption acknowledgement said all had arrived"
    );
}

#[test]
fn simulation_is_deterministic_for_a_seed() {
    let run = |seed| {
        let mut pair = Pair::with_window(seed, hostile(), 16);
        pair.drop_link(Timestamp(200), ms(300));
        for n in 0..100 {
            pair.run_until(Timestamp(n * 3));
            pair.offer(msg(n, Qos::AtLeastOnce)).expect("room");
        }
        assert!(pair.run_to_completion(LIMIT));
        (pair.now, pair.log.frames, pair.log.first_sent.clone())
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11).1, run(12).1);
}
