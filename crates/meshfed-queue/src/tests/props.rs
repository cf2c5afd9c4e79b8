//! Property tests: random message mixes over random hostile links, restarts included; every run
//! must finish and keep every promise.

use std::time::Duration;

use meshfed_proto::envelope::{MaxLatency, Qos, Timestamp};
use proptest::prelude::*;

use super::{LIMIT, check_invariants, key, msg, prio};
use crate::tests::util::{Knobs, Pair};
use crate::{Deadline, InboxConfig, OutboxConfig};

/// One offer: after `gap` ms, a message with these delivery fields.
#[derive(Debug, Clone)]
struct Op {
    gap: u64,
    qos: Qos,
    priority: u8,
    key: Option<u64>,
    max_latency: Option<u32>,
}

#[derive(Debug, Clone)]
struct Schedule {
    seed: u64,
    loss: f64,
    delay: u64,
    jitter: u64,
    consume_delay: u64,
    window: u64,
    max_messages: usize,
    max_in_flight: usize,
    drops: Vec<(u64, u64)>,
    restart: Option<(u64, u64)>,
    resume_with_ack_state: bool,
    send_before_persisted: bool,
    ops: Vec<Op>,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0..20u64,
        0..3u8,
        0..8u8,
        proptest::option::of(0..3u64),
        proptest::option::weighted(0.3, 30..3_000u32),
    )
        .prop_map(|(gap, qos, priority, key, max_latency)| Op {
            gap,
            qos: Qos::try_from(qos).unwrap_or_default(),
            priority,
            key,
            max_latency,
        })
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        (any::<u64>(), 0.0..0.3f64, 1..50u64, 0..120u64, 0..100u64),
        (
            2..64u64,
            10..300usize,
            1..64usize,
            any::<bool>(),
            any::<bool>(),
        ),
        proptest::collection::vec((0..4_000u64, 1..2_500u64), 0..4),
        proptest::option::weighted(0.3, (0..3_000u64, 1..1_500u64)),
        proptest::collection::vec(op(), 1..200),
    )
        .prop_map(
            |(
                (seed, loss, delay, jitter, consume_delay),
                (window, max_messages, max_in_flight, resume_with_ack_state, send_before_persisted),
                drops,
                restart,
                ops,
            )| Schedule {
                seed,
                loss,
                delay,
                jitter,
                consume_delay,
                window,
                max_messages,
                max_in_flight,
                drops,
                restart,
                resume_with_ack_state,
                send_before_persisted,
                ops,
            },
        )
}

fn run(s: &Schedule) -> Pair {
    let knobs = Knobs {
        loss: s.loss,
        delay: Duration::from_millis(s.delay),
        jitter: Duration::from_millis(s.jitter),
        persist_delay: Duration::from_millis(2),
        consume_delay: Duration::from_millis(s.consume_delay),
        resume_with_ack_state: s.resume_with_ack_state,
    };
    let mut pair = Pair::new(
        s.seed,
        knobs,
        OutboxConfig {
            max_messages: s.max_messages,
            max_in_flight: s.max_in_flight,
            initial_credit: s.window,
            send_before_persisted: s.send_before_persisted,
            ..OutboxConfig::default()
        },
        InboxConfig {
            window: s.window,
            gap_timeout: Duration::from_millis(500),
            ..InboxConfig::default()
        },
    );
    for &(at, down_for) in &s.drops {
        pair.drop_link(Timestamp(at), Duration::from_millis(down_for));
    }
    if let Some((at, down_for)) = s.restart {
        pair.restart_sender(Timestamp(at), Duration::from_millis(down_for));
    }
    let mut now = 0;
    for (n, op) in (0u64..).zip(&s.ops) {
        now += op.gap;
        pair.run_until(Timestamp(now));
        let mut m = msg(n, op.qos).with_priority(prio(op.priority));
        if let Some(k) = op.key {
            m = m.with_order(key(k));
        }
        if let Some(ms) = op.max_latency.and_then(|ms| MaxLatency::try_from(ms).ok()) {
            m = m.with_deadline(Deadline::after(pair.now, ms));
        }
        // Refusals (full queue) are allowed; the checks cover accepted messages.
        let _ = pair.offer(m);
    }
    assert!(
        pair.run_to_completion(LIMIT),
        "run did not finish by {} ms",
        LIMIT.0
    );
    pair
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_schedules_lose_no_accepted_reliable_message_duplicate_no_qos2_and_keep_key_order(
        s in schedule()
    ) {
        let pair = run(&s);
        check_invariants(&pair);
        prop_assert!(pair.log.max_in_flight <= s.max_in_flight);
        prop_assert!(pair.log.max_occupancy <= s.window as usize);
        prop_assert!(pair.log.max_outstanding <= s.window);
        // Reliable messages without a deadline that were accepted are all delivered.
        for &n in &pair.log.accepted {
            let m = &pair.log.offered[&n];
            if m.qos != Qos::AtMostOnce && m.deadline.is_none() {
                prop_assert!(pair.log.deliveries_of(n) >= 1, "message {} lost", n);
            }
        }
    }
}

/// Whatever a peer sends, nothing panics and the machines stay usable.
mod hostile_peer {
    use meshfed_proto::envelope::Timestamp;
    use proptest::prelude::*;

    use crate::tests::util::id;
    use crate::{
        Ack, Epoch, Inbox, InboxConfig, KeySeq, Message, Outbox, OutboxConfig, Peer, Seq, SeqRange,
        Transmit,
    };

    fn peer() -> Peer {
        Peer {
            mesh: "evil".parse().expect("valid mesh id"),
            node: "n".parse().expect("valid node name"),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_acknowledgements_never_panic_the_outbox(
            acks in proptest::collection::vec(
                (0..3u64, any::<u64>(), proptest::collection::vec((any::<u64>(), any::<u64>()), 0..4),
                 proptest::collection::vec(any::<u64>(), 0..3), any::<u64>()),
                1..20),
        ) {
            let mut o: Outbox<u64> = Outbox::new(OutboxConfig::default(), Epoch(1));
            for n in 0..10 {
                let m = Message::new(id(n), 10, n).with_qos(meshfed_proto::envelope::Qos::AtLeastOnce);
                let _ = o.offer(m, Timestamp(0));
            }
            o.handle_persisted((0..10).map(id));
            while o.poll_transmit(Timestamp(0)).is_some() {}
            for (epoch, below, ranges, late, credit) in acks {
                let ack = Ack {
                    epoch: Epoch(epoch),
                    below: Seq(below % 16),
                    ranges: ranges.into_iter().map(|(s, e)| SeqRange { start: Seq(s % 16), end: Seq(e % 16) }).collect(),
                    refused: late.iter().map(|s| (Seq(s % 16), 0)).collect(),
                    late: late.into_iter().map(Seq).collect(),
                    credit: Seq(credit),
                };
                let _ = o.handle_ack(&ack, Timestamp(5));
                o.handle_timeout(Timestamp(10_000));
                while o.poll_transmit(Timestamp(10_000)).is_some() {}
                while o.poll_event().is_some() {}
            }
        }

        #[test]
        fn arbitrary_transmissions_never_panic_the_inbox(
            sends in proptest::collection::vec(
                (0..3u64, any::<u64>(), any::<u64>(), proptest::option::of(any::<u64>()), 0..3u8, any::<bool>()),
                1..40),
        ) {
            let mut i: Inbox<u64> = Inbox::new(InboxConfig { window: 4, ..InboxConfig::default() });
            for (n, (epoch, seq, floor, ks, qos, ordered)) in (0u64..).zip(sends) {
                let mut m = Message::new(id(n % 5), 10, n)
                    .with_qos(meshfed_proto::envelope::Qos::try_from(qos).unwrap_or_default());
                if ordered {
                    m = m.with_order(super::key(n % 2));
                }
                let t = Transmit {
                    epoch: Epoch(epoch),
                    seq: Seq(seq),
                    floor: Seq(floor),
                    key_seq: ks.map(KeySeq),
                    retransmission: false,
                    message: m,
                };
                let _ = i.handle_transmit(&peer(), t, Timestamp(n));
                i.handle_timeout(Timestamp(n * 1_000));
                let ids: Vec<_> = std::iter::from_fn(|| i.poll_event())
                    .filter_map(|e| match e {
                        crate::InboxEvent::Deliver(d) => Some(d.message.id),
                        _ => None,
                    })
                    .collect();
                i.handle_consumed(ids);
                while i.poll_ack().is_some() {}
                while i.poll_credit().is_some() {}
                let _ = i.poll_timeout();
            }
        }
    }
}
