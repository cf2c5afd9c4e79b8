use meshfed_proto::envelope::Qos;

use super::*;
use crate::message::Deadline;
use crate::stream::{Forward, KeySeq, SeqRange};

fn id(n: u64) -> EnvelopeId {
    let mut random = [0u8; 10];
    random[2..].copy_from_slice(&n.to_be_bytes());
    EnvelopeId::new(Timestamp(0), random)
}

fn msg(n: u64) -> Message<u64> {
    Message::new(id(n), 100, n)
}

fn prio(p: u8) -> Priority {
    Priority::try_from(p).unwrap()
}

fn key(topic: &str) -> OrderKey {
    OrderKey {
        source: "a".parse().unwrap(),
        destination: "b".parse().unwrap(),
        topic: topic.parse().unwrap(),
    }
}

fn t(ms: u64) -> Timestamp {
    Timestamp(ms)
}

fn outbox() -> Outbox<u64> {
    Outbox::new(OutboxConfig::default(), Epoch(1))
}

fn events(o: &mut Outbox<u64>) -> Vec<OutboxEvent<u64>> {
    std::iter::from_fn(|| o.poll_event()).collect()
}

/// Takes every event, confirming all persists in one batch (group commit).
fn persist_all(o: &mut Outbox<u64>) -> Vec<OutboxEvent<u64>> {
    let evs = events(o);
    let ids: Vec<EnvelopeId> = evs
        .iter()
        .filter_map(|e| match e {
            OutboxEvent::Persist(m) => Some(m.id),
            _ => None,
        })
        .collect();
    o.handle_persisted(ids);
    evs
}

fn transmits(o: &mut Outbox<u64>, now: Timestamp) -> Vec<Transmit<u64>> {
    std::iter::from_fn(|| o.poll_transmit(now)).collect()
}

fn payloads(ts: &[Transmit<u64>]) -> Vec<u64> {
    ts.iter().map(|t| t.message.payload).collect()
}

fn ack(below: u64, ranges: &[(u64, u64)], credit: u64) -> Ack {
    Ack {
        epoch: Epoch(1),
        below: Seq(below),
        ranges: ranges
            .iter()
            .map(|&(s, e)| SeqRange {
                start: Seq(s),
                end: Seq(e),
            })
            .collect(),
        late: vec![],
        refused: vec![],
        credit: Seq(credit),
    }
}

#[test]
fn reliable_message_is_not_sent_before_it_is_persisted() {
    let mut o = outbox();
    let m = msg(1).with_qos(Qos::AtLeastOnce);
    assert_eq!(o.offer(m.clone(), t(0)), Ok(Offered::AwaitingPersistence));
    assert_eq!(events(&mut o), [OutboxEvent::Persist(m)]);
    assert!(o.poll_transmit(t(0)).is_none());
    assert_eq!(o.backlog(t(0)).awaiting_persistence, 1);
    o.handle_persisted([id(1)]);
    assert_eq!(payloads(&transmits(&mut o, t(0))), [1]);
}

#[test]
fn one_persistence_report_releases_a_whole_batch_in_order() {
    let mut o = outbox();
    for n in 1..=3 {
        o.offer(msg(n).with_qos(Qos::ExactlyOnce), t(0)).unwrap();
    }
    let persisted = persist_all(&mut o);
    assert_eq!(persisted.len(), 3);
    assert_eq!(payloads(&transmits(&mut o, t(0))), [1, 2, 3]);
}

#[test]
fn higher_priority_overtakes_queued_lower_priority_and_fifo_holds_within_one() {
    let mut o = outbox();
    o.offer(msg(1).with_priority(prio(0)), t(0)).unwrap();
    o.offer(msg(2).with_priority(prio(0)), t(0)).unwrap();
    o.offer(msg(3).with_priority(prio(7)), t(0)).unwrap();
    o.offer(msg(4).with_priority(prio(3)), t(0)).unwrap();
    o.offer(msg(5).with_priority(prio(7)), t(0)).unwrap();
    assert_eq!(payloads(&transmits(&mut o, t(0))), [3, 5, 4, 1, 2]);
}

#[test]
fn ordered_messages_of_one_key_never_overtake_each_other() {
    let mut o = outbox();
    o.offer(msg(1).with_priority(prio(1)).with_order(key("k")), t(0))
        .unwrap();
    o.offer(msg(2).with_priority(prio(7)).with_order(key("k")), t(0))
        .unwrap();
    o.offer(msg(3).with_priority(prio(4)), t(0)).unwrap();
    let sent = transmits(&mut o, t(0));
    // 1 inherits its follower's priority 7, so neither waits behind 3.
    assert_eq!(payloads(&sent), [1, 2, 3]);
    assert_eq!(sent[0].key_seq, Some(KeySeq(0)));
    assert_eq!(sent[1].key_seq, Some(KeySeq(1)));
    assert_eq!(sent[2].key_seq, None);
}

#[test]
fn different_keys_do_not_wait_for_each_other() {
    let mut o = outbox();
    o.offer(msg(1).with_order(key("x")).with_qos(Qos::AtLeastOnce), t(0))
        .unwrap();
    o.offer(msg(2).with_order(key("x")), t(0)).unwrap();
    o.offer(msg(3).with_order(key("y")), t(0)).unwrap();
    // 1 is not persisted yet: its key waits, key y does not.
    assert_eq!(payloads(&transmits(&mut o, t(0))), [3]);
    persist_all(&mut o);
    assert_eq!(payloads(&transmits(&mut o, t(0))), [1, 2]);
}

#[test]
fn credit_bounds_first_transmissions_and_grants_raise_it() {
    let mut o = Outbox::new(
        OutboxConfig {
            initial_credit: 2,
            ..OutboxConfig::default()
        },
        Epoch(1),
    );
    for n in 1..=5 {
        o.offer(msg(n), t(0)).unwrap();
    }
    assert_eq!(payloads(&transmits(&mut o, t(0))), [1, 2]);
    o.handle_credit(Credit {
        epoch: Epoch(0),
        limit: Seq(10),
    });
    assert!(o.poll_transmit(t(0)).is_none(), "another epoch's grant");
    o.handle_credit(Credit {
        epoch: Epoch(1),
        limit: Seq(4),
    });
    o.handle_credit(Credit {
        epoch: Epoch(1),
        limit: Seq(3),
    });
    assert_eq!(o.credit().limit, Seq(4), "grants never shrink");
    assert_eq!(payloads(&transmits(&mut o, t(0))), [3, 4]);
}

#[test]
fn in_flight_window_bounds_unacknowledged_reliable_messages() {
    let mut o = Outbox::new(
        OutboxConfig {
            max_in_flight: 2,
            ..OutboxConfig::default()
        },
        Epoch(1),
    );
    for n in 1..=4 {
        o.offer(msg(n).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    }
    persist_all(&mut o);
    assert_eq!(payloads(&transmits(&mut o, t(0))), [1, 2]);
    assert_eq!(o.backlog(t(0)).in_flight, 2);
    o.handle_ack(&ack(1, &[], 256), t(10)).unwrap();
    assert_eq!(payloads(&transmits(&mut o, t(10))), [3]);
}

#[test]
fn acknowledgement_releases_messages_and_measures_the_round_trip() {
    let mut o = outbox();
    for n in 0..4 {
        o.offer(msg(n).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    }
    persist_all(&mut o);
    assert_eq!(transmits(&mut o, t(0)).len(), 4);
    // 0 and 1 cumulatively, 3 selectively; 2 is still missing.
    o.handle_ack(&ack(2, &[(3, 4)], 256), t(80)).unwrap();
    assert_eq!(
        events(&mut o),
        [0, 1, 3].map(|n| OutboxEvent::Acknowledged { id: id(n) })
    );
    assert_eq!(o.backlog(t(80)).in_flight, 1);
    assert_eq!(o.rtt().srtt(), Some(Duration::from_millis(80)));
    assert_eq!(o.counters().acknowledged, 3);
}

#[test]
fn acknowledgement_of_a_number_never_sent_is_refused() {
    let mut o = outbox();
    o.offer(msg(1), t(0)).unwrap();
    transmits(&mut o, t(0));
    let err = o.handle_ack(&ack(0, &[(0, 5)], 256), t(1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "acknowledgement covers #4, which was never sent (next is #1)"
    );
}

#[test]
fn acknowledgement_with_an_inverted_range_is_refused_whole() {
    let mut o = outbox();
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    persist_all(&mut o);
    transmits(&mut o, t(0));
    let err = o.handle_ack(&ack(1, &[(3, 2)], 256), t(1)).unwrap_err();
    assert_eq!(err.to_string(), "acknowledgement range #3..#2 is inverted");
    assert!(o.contains(&id(1)), "nothing of it was applied");
}

#[test]
fn acknowledgement_for_another_epoch_is_ignored() {
    let mut o = outbox();
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    persist_all(&mut o);
    transmits(&mut o, t(0));
    let mut old = ack(1, &[], 256);
    old.epoch = Epoch(0);
    o.handle_ack(&old, t(1)).unwrap();
    assert!(o.contains(&id(1)));
    assert_eq!(o.counters().foreign_epoch, 1);
}

#[test]
fn unacknowledged_message_is_retransmitted_with_its_sequence_number_after_the_timeout() {
    let mut o = outbox();
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    persist_all(&mut o);
    let first = transmits(&mut o, t(0));
    assert_eq!(o.poll_timeout(), Some(t(1_000)), "initial RTO is 1 s");
    o.handle_timeout(t(999));
    assert!(o.poll_transmit(t(999)).is_none());
    o.handle_timeout(t(1_000));
    let again = transmits(&mut o, t(1_000));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].seq, first[0].seq);
    assert!(again[0].retransmission);
    // Backed off: the next timeout is 2 s later.
    assert_eq!(o.poll_timeout(), Some(t(3_000)));
    // A retransmitted message gives no RTT sample (Karn).
    o.handle_ack(&ack(1, &[], 256), t(3_100)).unwrap();
    assert_eq!(o.rtt().srtt(), None);
    assert_eq!(o.counters().retransmitted, 1);
}

#[test]
fn qos0_message_is_sent_once_and_forgotten() {
    let mut o = outbox();
    assert_eq!(o.offer(msg(1), t(0)), Ok(Offered::Queued));
    assert!(events(&mut o).is_empty(), "nothing to persist");
    assert_eq!(transmits(&mut o, t(0)).len(), 1);
    assert!(o.is_empty());
    assert!(o.poll_transmit(t(5_000)).is_none(), "never sent again");
}

#[test]
fn floor_goes_on_its_own_when_the_receiver_does_not_catch_up() {
    let mut o = outbox();
    o.offer(msg(1), t(0)).unwrap();
    transmits(&mut o, t(0));
    assert_eq!(
        o.poll_forward(),
        None,
        "not before the receiver had a chance"
    );
    // No acknowledgement within the retransmission timeout: the qos 0 message may be lost.
    assert_eq!(o.poll_timeout(), Some(t(1_000)));
    o.handle_timeout(t(1_000));
    let forward = Forward {
        epoch: Epoch(1),
        floor: Seq(1),
    };
    assert_eq!(o.poll_forward(), Some(forward));
    assert_eq!(o.poll_forward(), None);
    assert_eq!(
        o.poll_timeout(),
        Some(t(2_000)),
        "repeated until acknowledged"
    );
    o.handle_ack(&ack(1, &[], 256), t(1_500)).unwrap();
    assert_eq!(o.poll_timeout(), None);
}

#[test]
fn acknowledgement_up_to_the_floor_makes_a_forward_unnecessary() {
    let mut o = outbox();
    o.offer(msg(1), t(0)).unwrap();
    transmits(&mut o, t(0));
    o.handle_ack(&ack(1, &[], 256), t(40)).unwrap();
    o.handle_timeout(t(5_000));
    assert_eq!(o.poll_forward(), None);
    assert_eq!(o.poll_timeout(), None);
}

#[test]
fn floor_tells_the_receiver_what_is_settled() {
    let mut o = outbox();
    o.offer(msg(0).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    persist_all(&mut o);
    o.offer(msg(1), t(0)).unwrap();
    o.offer(msg(2), t(0)).unwrap();
    let sent = transmits(&mut o, t(0));
    let floors: Vec<u64> = sent.iter().map(|t| t.floor.0).collect();
    assert_eq!(floors, [0, 0, 0], "0 is unacknowledged");
    o.handle_ack(&ack(1, &[], 256), t(5)).unwrap();
    o.offer(msg(3), t(5)).unwrap();
    let sent = transmits(&mut o, t(5));
    assert_eq!((sent[0].seq, sent[0].floor), (Seq(3), Seq(3)));
}

#[test]
fn link_loss_puts_in_flight_messages_back_first_in_sequence_order() {
    let mut o = outbox();
    for n in 1..=3 {
        o.offer(msg(n).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    }
    persist_all(&mut o);
    transmits(&mut o, t(0));
    o.handle_ack(&ack(0, &[(1, 2)], 256), t(5)).unwrap();
    o.offer(
        msg(9)
            .with_qos(Qos::AtLeastOnce)
            .with_priority(Priority::MAX),
        t(5),
    )
    .unwrap();
    persist_all(&mut o);
    o.handle_link_down();
    assert!(o.poll_transmit(t(6)).is_none(), "nothing goes while down");
    assert_eq!(
        o.poll_timeout(),
        None,
        "no retransmission timers while down"
    );
    o.handle_link_up();
    let sent = transmits(&mut o, t(7));
    // 1 and 3 were unacknowledged: they resume before the new message, whatever its priority.
    assert_eq!(payloads(&sent), [1, 3, 9]);
    assert_eq!(sent[0].seq, Seq(0));
    assert_eq!(sent[1].seq, Seq(2));
    assert!(sent[0].retransmission && !sent[2].retransmission);
}

#[test]
fn message_past_its_deadline_in_the_queue_is_dead_lettered_and_never_sent() {
    let mut o = outbox();
    o.handle_link_down();
    o.offer(
        msg(1)
            .with_qos(Qos::AtLeastOnce)
            .with_deadline(Deadline::at(t(100))),
        t(0),
    )
    .unwrap();
    o.offer(msg(2).with_deadline(Deadline::at(t(500))), t(0))
        .unwrap();
    persist_all(&mut o);
    assert_eq!(o.poll_timeout(), Some(t(101)));
    o.handle_timeout(t(101));
    assert_eq!(
        events(&mut o),
        [OutboxEvent::DeadLettered {
            id: id(1),
            reason: DeadLetterReason::ExpiredInQueue
        }]
    );
    o.handle_link_up();
    // Even without a timeout call, a late message is not sent.
    assert!(o.poll_transmit(t(501)).is_none());
    assert_eq!(o.counters().expired_in_queue, 2);
}

#[test]
fn in_flight_message_past_its_deadline_is_not_retransmitted() {
    let mut o = outbox();
    o.offer(
        msg(1)
            .with_qos(Qos::AtLeastOnce)
            .with_deadline(Deadline::at(t(300))),
        t(0),
    )
    .unwrap();
    persist_all(&mut o);
    transmits(&mut o, t(0));
    o.handle_timeout(t(1_000));
    assert_eq!(
        events(&mut o),
        [OutboxEvent::DeadLettered {
            id: id(1),
            reason: DeadLetterReason::ExpiredUnacknowledged
        }]
    );
    assert!(o.poll_transmit(t(1_000)).is_none());
}

#[test]
fn receiver_reporting_a_late_arrival_dead_letters_the_message() {
    let mut o = outbox();
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    persist_all(&mut o);
    transmits(&mut o, t(0));
    let mut a = ack(1, &[], 256);
    a.late = vec![Seq(0)];
    o.handle_ack(&a, t(5)).unwrap();
    assert_eq!(
        events(&mut o),
        [OutboxEvent::DeadLettered {
            id: id(1),
            reason: DeadLetterReason::ArrivedLate
        }]
    );
}

#[test]
fn receiver_reporting_a_refusal_dead_letters_the_message_not_acknowledges_it() {
    let mut o = outbox();
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    o.offer(msg(2).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    persist_all(&mut o);
    transmits(&mut o, t(0));
    let mut a = ack(2, &[], 256);
    a.refused = vec![(Seq(1), 22)];
    o.handle_ack(&a, t(5)).unwrap();
    let evs = events(&mut o);
    assert!(
        evs.contains(&OutboxEvent::DeadLettered {
            id: id(2),
            reason: DeadLetterReason::RefusedByPeer { reason: 22 }
        }),
        "{evs:?}"
    );
    assert!(
        evs.iter()
            .any(|e| matches!(e, OutboxEvent::Acknowledged { id: acked, .. } if *acked == id(1))),
        "{evs:?}"
    );
    assert_eq!(o.counters().refused_by_peer, 1);
}

#[test]
fn full_outbox_refuses_naming_the_limit_and_keeps_what_it_accepted() {
    let mut o = Outbox::new(
        OutboxConfig {
            max_messages: 2,
            ..OutboxConfig::default()
        },
        Epoch(1),
    );
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    o.offer(msg(2).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    let err = o
        .offer(
            msg(3)
                .with_qos(Qos::AtLeastOnce)
                .with_priority(Priority::MAX),
            t(0),
        )
        .unwrap_err();
    assert_eq!(
        err,
        OfferError::Full {
            limit: Limit::Messages { max: 2 }
        }
    );
    assert_eq!(
        err.to_string(),
        "outbox full: at its limit of 2 messages, with nothing of lower priority to shed"
    );
    assert!(o.contains(&id(1)) && o.contains(&id(2)) && !o.contains(&id(3)));
    assert_eq!(o.counters().refused, 1);
}

#[test]
fn byte_limit_refuses_with_the_byte_limit() {
    let mut o = Outbox::new(
        OutboxConfig {
            max_bytes: 250,
            ..OutboxConfig::default()
        },
        Epoch(1),
    );
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    o.offer(msg(2).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    assert_eq!(
        o.offer(msg(3).with_qos(Qos::AtLeastOnce), t(0)),
        Err(OfferError::Full {
            limit: Limit::Bytes { max: 250 }
        })
    );
    let big = Message::new(id(4), 251, 4);
    assert_eq!(
        o.offer(big, t(0)).unwrap_err().to_string(),
        format!(
            "message {} of 251 bytes exceeds the outbox limit of 250 bytes",
            id(4)
        )
    );
}

#[test]
fn overload_sheds_lowest_priority_qos0_first_and_never_a_reliable_message() {
    let mut o = Outbox::new(
        OutboxConfig {
            max_messages: 4,
            ..OutboxConfig::default()
        },
        Epoch(1),
    );
    o.handle_link_down();
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    o.offer(msg(2).with_priority(prio(3)), t(0)).unwrap();
    o.offer(msg(3).with_priority(prio(1)), t(0)).unwrap();
    o.offer(msg(4).with_priority(prio(1)), t(0)).unwrap();
    events(&mut o);
    o.offer(msg(5).with_priority(prio(2)), t(0)).unwrap();
    assert_eq!(
        events(&mut o),
        [OutboxEvent::DeadLettered {
            id: id(3),
            reason: DeadLetterReason::Shed
        }],
        "the oldest of the lowest priority goes"
    );
    // A reliable message of priority 1 outranks qos 0 messages of the same priority.
    o.offer(
        msg(6).with_priority(prio(1)).with_qos(Qos::AtLeastOnce),
        t(0),
    )
    .unwrap();
    assert!(!o.contains(&id(4)));
    // A qos 0 message of priority 1 outranks nothing left (2 and 5 rank higher, 1 and 6 are
    // reliable): it is shed as it comes, counted, and nothing queued goes for it.
    events(&mut o);
    assert_eq!(
        o.offer(msg(7).with_priority(prio(1)), t(0)),
        Ok(Offered::Shed)
    );
    assert!(!o.contains(&id(7)));
    assert!(
        events(&mut o).is_empty(),
        "no event for a message never held"
    );
    assert!(o.contains(&id(1)) && o.contains(&id(2)) && o.contains(&id(5)) && o.contains(&id(6)));
    assert_eq!(o.counters().shed, 3);
    assert_eq!(o.counters().refused, 0);
    // A reliable message that outranks nothing is refused, never shed.
    assert_eq!(
        o.offer(
            msg(8).with_priority(prio(0)).with_qos(Qos::AtLeastOnce),
            t(0)
        ),
        Err(OfferError::Full {
            limit: Limit::Messages { max: 4 }
        })
    );
    assert_eq!(o.counters().shed, 3);
    assert_eq!(o.counters().refused, 1);
}

#[test]
fn shedding_happens_only_if_it_makes_enough_room() {
    let mut o = Outbox::new(
        OutboxConfig {
            max_bytes: 300,
            ..OutboxConfig::default()
        },
        Epoch(1),
    );
    o.handle_link_down();
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    o.offer(Message::new(id(2), 100, 2), t(0)).unwrap();
    o.offer(Message::new(id(3), 100, 3).with_priority(prio(5)), t(0))
        .unwrap();
    events(&mut o);
    // Needs 200 bytes; only message 2 (100 bytes) is outranked by priority 4: the new message
    // is shed rather than message 2 in vain.
    let big = Message::new(id(4), 200, 4).with_priority(prio(4));
    assert_eq!(o.offer(big, t(0)), Ok(Offered::Shed));
    assert!(
        o.contains(&id(2)),
        "nothing queued shed when it would not make room"
    );
    assert!(events(&mut o).is_empty());
    assert_eq!(o.counters().shed, 1);
}

#[test]
fn offer_refuses_a_duplicate_id_and_a_passed_deadline() {
    let mut o = outbox();
    o.offer(msg(1), t(0)).unwrap();
    assert_eq!(
        o.offer(msg(1), t(0)),
        Err(OfferError::AlreadyQueued { id: id(1) })
    );
    let late = msg(2).with_deadline(Deadline::at(t(10)));
    assert!(matches!(
        o.offer(late, t(11)),
        Err(OfferError::DeadlinePassed { .. })
    ));
}

#[test]
fn restore_readmits_stored_messages_beyond_the_limits_without_persisting_again() {
    let mut o = Outbox::new(
        OutboxConfig {
            max_messages: 1,
            ..OutboxConfig::default()
        },
        Epoch(2),
    );
    o.restore(msg(1).with_qos(Qos::AtLeastOnce).with_order(key("k")), t(0))
        .unwrap();
    o.restore(msg(2).with_qos(Qos::AtLeastOnce).with_order(key("k")), t(0))
        .unwrap();
    o.restore(
        msg(3)
            .with_qos(Qos::AtLeastOnce)
            .with_deadline(Deadline::at(t(0))),
        t(1),
    )
    .unwrap();
    assert_eq!(
        events(&mut o),
        [OutboxEvent::DeadLettered {
            id: id(3),
            reason: DeadLetterReason::ExpiredUnacknowledged
        }]
    );
    let sent = transmits(&mut o, t(1));
    assert_eq!(payloads(&sent), [1, 2]);
    assert_eq!(sent[0].epoch, Epoch(2));
}

#[test]
fn backlog_reports_count_bytes_priorities_and_oldest_age() {
    let mut o = outbox();
    o.handle_link_down();
    o.offer(msg(1).with_priority(prio(2)), t(100)).unwrap();
    o.offer(
        Message::new(id(2), 50, 2)
            .with_priority(prio(7))
            .with_qos(Qos::AtLeastOnce),
        t(300),
    )
    .unwrap();
    let b = o.backlog(t(1_000));
    assert_eq!(b.messages, 2);
    assert_eq!(b.bytes, 150);
    assert_eq!(b.by_priority, [0, 0, 1, 0, 0, 0, 0, 1]);
    assert_eq!(b.awaiting_persistence, 1);
    assert_eq!(b.oldest, Some(Duration::from_millis(900)));
}

#[test]
fn acknowledgement_by_id_removes_a_message_wherever_it_is() {
    let mut o = outbox();
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    o.offer(msg(2).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    persist_all(&mut o);
    let sent = transmits(&mut o, t(0));
    assert_eq!(sent.len(), 2);
    o.handle_ack_ids([id(2), id(42)]);
    assert_eq!(events(&mut o), [OutboxEvent::Acknowledged { id: id(2) }]);
    assert_eq!(o.backlog(t(0)).in_flight, 1);
}

#[test]
fn message_whose_persistence_failed_leaves_and_frees_its_room() {
    let mut o = Outbox::new(
        OutboxConfig {
            max_messages: 2,
            max_bytes: 200,
            ..OutboxConfig::default()
        },
        Epoch(1),
    );
    let ordered = |n| msg(n).with_qos(Qos::AtLeastOnce).with_order(key("k"));
    o.offer(ordered(1), t(0)).unwrap();
    o.offer(ordered(2).with_priority(prio(6)), t(0)).unwrap();
    assert!(matches!(
        o.offer(ordered(3), t(0)),
        Err(OfferError::Full { .. })
    ));
    assert_eq!(events(&mut o).len(), 2, "both asked to be persisted");

    assert_eq!(o.handle_persist_failed([id(1), id(42)]), 1);
    assert!(!o.contains(&id(1)));
    assert!(
        events(&mut o).is_empty(),
        "the driver tells the sender, not an event"
    );
    let b = o.backlog(t(0));
    assert_eq!((b.messages, b.bytes, b.awaiting_persistence), (1, 100, 1));
    assert_eq!(b.by_priority, [0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!((o.counters().accepted, o.counters().refused), (1, 2));

    // The room is free again, by count and by bytes.
    assert_eq!(o.offer(ordered(3), t(0)), Ok(Offered::AwaitingPersistence));
    events(&mut o);
    o.handle_persisted([id(2), id(3)]);
    assert_eq!(
        o.handle_persist_failed([id(2)]),
        0,
        "a persisted message stays"
    );
    // The key goes on: the failed message's successors are sent, in order.
    let sent = transmits(&mut o, t(0));
    assert_eq!(payloads(&sent), [2, 3]);
    let key_seqs: Vec<Option<KeySeq>> = sent.iter().map(|t| t.key_seq).collect();
    assert_eq!(key_seqs, [Some(KeySeq(1)), Some(KeySeq(2))]);
    o.handle_ack(&ack(2, &[], 64), t(10)).unwrap();
    assert!(o.is_empty());
    assert_eq!(o.backlog(t(10)).bytes, 0);
}

#[test]
fn send_before_persisted_sends_at_once_and_accepts_only_when_stored() {
    let mut o = Outbox::new(
        OutboxConfig {
            send_before_persisted: true,
            ..OutboxConfig::default()
        },
        Epoch(1),
    );
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    o.offer(msg(2).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    let persist: Vec<EnvelopeId> = events(&mut o)
        .into_iter()
        .filter_map(|e| match e {
            OutboxEvent::Persist(m) => Some(m.id),
            _ => None,
        })
        .collect();
    assert_eq!(persist, vec![id(1), id(2)]);
    // Both go out while their storage is pending.
    assert_eq!(payloads(&transmits(&mut o, t(1))), vec![1, 2]);
    assert_eq!(o.backlog(t(1)).awaiting_persistence, 2);
    // The peer acknowledges the first before it is stored: it leaves the outbox...
    o.handle_ack(&ack(1, &[], 256), t(2)).unwrap();
    assert_eq!(
        events(&mut o),
        vec![OutboxEvent::Acknowledged { id: id(1) }]
    );
    assert_eq!(o.backlog(t(2)).awaiting_persistence, 1);
    // ...and its late persistence changes nothing; the second's counts it accepted.
    o.handle_persisted([id(1), id(2)]);
    let b = o.backlog(t(3));
    assert_eq!((b.messages, b.awaiting_persistence, b.in_flight), (1, 0, 1));
    // A failed store removes a message even though it was sent.
    o.offer(msg(3).with_qos(Qos::AtLeastOnce), t(4)).unwrap();
    let _ = events(&mut o);
    assert_eq!(payloads(&transmits(&mut o, t(4))), vec![3]);
    assert_eq!(o.handle_persist_failed([id(3)]), 1);
    assert!(!o.contains(&id(3)));
    assert_eq!(o.backlog(t(5)).awaiting_persistence, 0);
}

#[test]
fn federation_ended_dead_letters_everything_held_wherever_it_is() {
    let mut o = outbox();
    o.handle_link_up();
    // 1 in flight; 4 (qos 0) sent and so no longer held.
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    o.offer(msg(4), t(0)).unwrap();
    persist_all(&mut o);
    assert_eq!(payloads(&transmits(&mut o, t(1))), [1, 4]);
    // 2 queued behind a link that is down; 3 not yet persisted.
    o.handle_link_down();
    o.offer(msg(2).with_qos(Qos::AtLeastOnce), t(2)).unwrap();
    persist_all(&mut o);
    o.offer(msg(3).with_qos(Qos::ExactlyOnce), t(2)).unwrap();
    let before = events(&mut o);
    assert!(
        matches!(before[..], [OutboxEvent::Persist(_)]),
        "{before:?}"
    );

    o.handle_federation_ended();
    let mut dead: Vec<EnvelopeId> = events(&mut o)
        .into_iter()
        .map(|e| match e {
            OutboxEvent::DeadLettered {
                id,
                reason: DeadLetterReason::FederationEnded,
            } => id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    dead.sort();
    assert_eq!(dead, [id(1), id(2), id(3)]);
    assert!(o.is_empty());
    assert_eq!(o.counters().federation_ended, 3);
    assert_eq!(o.backlog(t(3)).messages, 0);
    // Persistence confirmed late, or an acknowledgement for a gone message, changes nothing.
    o.handle_persisted([id(3)]);
    o.handle_ack(&ack(2, &[], 100), t(4)).unwrap();
    assert!(events(&mut o).is_empty());
}

#[test]
fn messages_a_renegotiated_agreement_refuses_are_dead_lettered_wherever_they_are() {
    let mut o = outbox();
    o.handle_link_up();
    o.offer(msg(1).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    o.offer(msg(2).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    o.offer(msg(3).with_qos(Qos::ExactlyOnce), t(0)).unwrap();
    persist_all(&mut o);
    // 1 just given to the driver (in flight); 2 and 3 still queued.
    let first = o.poll_transmit(t(1)).unwrap();
    assert_eq!(first.message.id, id(1));
    events(&mut o);

    o.handle_refused([id(1), id(3), id(9)]);
    let dead: Vec<EnvelopeId> = events(&mut o)
        .into_iter()
        .map(|e| match e {
            OutboxEvent::DeadLettered {
                id,
                reason: DeadLetterReason::RefusedByAgreement,
            } => id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(dead, [id(1), id(3)]);
    assert_eq!(o.counters().refused_by_agreement, 2);
    assert_eq!(
        DeadLetterReason::RefusedByAgreement.to_string(),
        "the renegotiated agreement refuses it"
    );
    // Only 2 is left, and it is what goes next.
    assert_eq!(payloads(&transmits(&mut o, t(2))), [2]);
    assert_eq!(o.backlog(t(2)).messages, 1);
}

#[test]
fn a_qos0_message_sent_is_released_once_and_a_reliable_one_is_not() {
    let mut o = Outbox::new(OutboxConfig::default(), Epoch(1));
    o.offer(msg(1), t(0)).unwrap();
    o.offer(msg(2).with_qos(Qos::AtLeastOnce), t(0)).unwrap();
    assert_eq!(o.poll_released(), None, "nothing sent yet");
    o.handle_persisted([id(2)]);
    while o.poll_transmit(t(0)).is_some() {}
    assert_eq!(o.poll_released(), Some(id(1)));
    assert_eq!(o.poll_released(), None);
    assert!(!o.contains(&id(1)) && o.contains(&id(2)));
}
