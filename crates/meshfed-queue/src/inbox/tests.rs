use meshfed_proto::envelope::Qos;

use super::*;
use crate::message::Deadline;
use crate::stream::{Seq, SeqRange};

fn id(n: u64) -> EnvelopeId {
    let mut random = [0u8; 10];
    random[2..].copy_from_slice(&n.to_be_bytes());
    EnvelopeId::new(Timestamp(0), random)
}

fn peer() -> Peer {
    Peer {
        mesh: "plant-a".parse().unwrap(),
        node: "gw-1".parse().unwrap(),
    }
}

fn key() -> OrderKey {
    OrderKey {
        source: "plant-a".parse().unwrap(),
        destination: "cloud".parse().unwrap(),
        topic: "line-3/temperature".parse().unwrap(),
    }
}

fn t(ms: u64) -> Timestamp {
    Timestamp(ms)
}

/// Message `n` sent as `seq` with `floor` in epoch 1.
fn tx(seq: u64, floor: u64, n: u64, qos: Qos) -> Transmit<u64> {
    Transmit {
        epoch: Epoch(1),
        seq: Seq(seq),
        floor: Seq(floor),
        key_seq: None,
        retransmission: false,
        message: Message::new(id(n), 10, n).with_qos(qos),
    }
}

/// Message `n` at position `ks` of the test key.
fn ordered(seq: u64, floor: u64, n: u64, ks: u64) -> Transmit<u64> {
    let mut t = tx(seq, floor, n, Qos::AtLeastOnce);
    t.message = t.message.with_order(key());
    t.key_seq = Some(KeySeq(ks));
    t
}

fn inbox() -> Inbox<u64> {
    Inbox::new(InboxConfig::default())
}

fn events(i: &mut Inbox<u64>) -> Vec<InboxEvent<u64>> {
    std::iter::from_fn(|| i.poll_event()).collect()
}

fn delivered(evs: &[InboxEvent<u64>]) -> Vec<u64> {
    evs.iter()
        .filter_map(|e| match e {
            InboxEvent::Deliver(d) => Some(d.message.payload),
            _ => None,
        })
        .collect()
}

fn ranges(ack: &Ack) -> Vec<(u64, u64)> {
    ack.ranges.iter().map(|r| (r.start.0, r.end.0)).collect()
}

#[test]
fn delivers_messages_and_acknowledges_cumulatively() {
    let mut i = inbox();
    i.handle_transmit(&peer(), tx(0, 0, 10, Qos::AtLeastOnce), t(0))
        .unwrap();
    i.handle_transmit(&peer(), tx(1, 0, 11, Qos::AtMostOnce), t(0))
        .unwrap();
    assert_eq!(delivered(&events(&mut i)), [10, 11]);
    let (p, ack) = i.poll_ack().unwrap();
    assert_eq!(p, peer());
    assert_eq!(ack.below, Seq(2));
    assert!(ack.ranges.is_empty());
    assert_eq!(ack.credit, Seq(256));
    assert!(i.poll_ack().is_none(), "one acknowledgement covers both");
}

#[test]
fn acknowledgements_wait_until_every_event_is_taken() {
    let mut i = inbox();
    i.handle_transmit(&peer(), tx(0, 0, 1, Qos::AtLeastOnce), t(0))
        .unwrap();
    assert!(
        i.poll_ack().is_none(),
        "the delivery is not yet in the driver's hands"
    );
    events(&mut i);
    assert!(i.poll_ack().is_some());
}

#[test]
fn selective_acknowledgement_reports_ranges_above_a_hole() {
    let mut i = inbox();
    for s in [0, 2, 3, 5] {
        i.handle_transmit(&peer(), tx(s, 0, s, Qos::AtLeastOnce), t(0))
            .unwrap();
    }
    events(&mut i);
    let (_, ack) = i.poll_ack().unwrap();
    assert_eq!(ack.below, Seq(1));
    assert_eq!(ranges(&ack), [(2, 4), (5, 6)]);
    assert!(ack.covers(Seq(3)) && !ack.covers(Seq(4)));
}

#[test]
fn repeated_sequence_number_is_not_delivered_twice_but_acknowledged_again() {
    let mut i = inbox();
    i.handle_transmit(&peer(), tx(0, 0, 1, Qos::AtLeastOnce), t(0))
        .unwrap();
    events(&mut i);
    i.poll_ack().unwrap();
    i.handle_transmit(&peer(), tx(0, 0, 1, Qos::AtLeastOnce), t(5))
        .unwrap();
    assert!(events(&mut i).is_empty());
    assert_eq!(i.counters().duplicates, 1);
    assert_eq!(i.poll_ack().unwrap().1.below, Seq(1));
}

#[test]
fn ordered_message_ahead_of_its_predecessor_is_held_unacknowledged_then_released_in_order() {
    let mut i = inbox();
    i.handle_transmit(&peer(), ordered(1, 0, 21, 1), t(0))
        .unwrap();
    i.handle_transmit(&peer(), ordered(2, 0, 22, 2), t(0))
        .unwrap();
    assert!(events(&mut i).is_empty());
    let (_, ack) = i.poll_ack().unwrap();
    assert_eq!(
        (ack.below, ack.ranges.len()),
        (Seq(0), 0),
        "held is not settled"
    );
    assert_eq!(i.occupancy(&peer()).unwrap().held, 2);
    i.handle_transmit(&peer(), ordered(0, 0, 20, 0), t(3))
        .unwrap();
    let evs = events(&mut i);
    assert_eq!(delivered(&evs), [20, 21, 22]);
    let InboxEvent::Deliver(d) = &evs[2] else {
        panic!("expected a delivery, got {evs:?}");
    };
    assert_eq!(d.key_seq, Some(KeySeq(2)));
    assert_eq!(i.poll_ack().unwrap().1.below, Seq(3));
    assert_eq!(i.occupancy(&peer()).unwrap().held, 0);
}

#[test]
fn gap_older_than_the_timeout_is_reported_once_and_still_waited_on() {
    let mut i = inbox();
    i.handle_transmit(&peer(), ordered(1, 0, 21, 1), t(100))
        .unwrap();
    assert_eq!(i.poll_timeout(), Some(t(5_100)));
    i.handle_timeout(t(5_099));
    assert!(events(&mut i).is_empty());
    i.handle_timeout(t(5_100));
    assert_eq!(
        events(&mut i),
        [InboxEvent::GapDetected {
            peer: peer(),
            key: key(),
            missing: KeySeq(0)..KeySeq(1),
            since: t(100),
        }]
    );
    i.handle_timeout(t(9_000));
    assert!(events(&mut i).is_empty(), "reported once");
    i.handle_transmit(&peer(), ordered(0, 0, 20, 0), t(9_000))
        .unwrap();
    assert_eq!(delivered(&events(&mut i)), [20, 21]);
    assert_eq!(i.counters().gaps_detected, 1);
}

#[test]
fn gap_is_passed_over_once_the_sender_floor_shows_it_cannot_be_filled() {
    let mut i = inbox();
    // Position 0 went as seq 0 (qos 0, lost); position 1 arrives as seq 1.
    i.handle_transmit(&peer(), ordered(1, 0, 21, 1), t(0))
        .unwrap();
    assert!(events(&mut i).is_empty());
    // The sender forgot seq 0: its floor moves past it.
    i.handle_transmit(&peer(), tx(2, 1, 30, Qos::AtMostOnce), t(1))
        .unwrap();
    let evs = events(&mut i);
    assert_eq!(
        evs[1],
        InboxEvent::GapSkipped {
            peer: peer(),
            key: key(),
            missing: KeySeq(0)..KeySeq(1),
        }
    );
    assert_eq!(delivered(&evs), [30, 21]);
    assert_eq!(i.counters().messages_skipped, 1);
    // A straggling copy of position 0 is not delivered out of order.
    i.handle_transmit(&peer(), ordered(0, 0, 20, 0), t(2))
        .unwrap();
    assert!(delivered(&events(&mut i)).is_empty());
}

#[test]
fn exactly_once_message_sent_again_by_a_restarted_sender_is_not_delivered_twice() {
    let mut i = inbox();
    i.handle_transmit(&peer(), tx(0, 0, 7, Qos::ExactlyOnce), t(10))
        .unwrap();
    let evs = events(&mut i);
    assert_eq!(
        evs[0],
        InboxEvent::RememberDelivered {
            id: id(7),
            until: t(10 + 3_600_000),
        },
        "remembered before it is delivered"
    );
    assert_eq!(delivered(&evs), [7]);
    let mut again = tx(0, 0, 7, Qos::ExactlyOnce);
    again.epoch = Epoch(2);
    i.handle_transmit(&peer(), again, t(20)).unwrap();
    assert!(delivered(&events(&mut i)).is_empty());
    assert_eq!(i.counters().duplicates, 1);
    let (_, ack) = i.poll_ack().unwrap();
    assert_eq!(
        (ack.epoch, ack.below),
        (Epoch(2), Seq(1)),
        "settled all the same"
    );
}

#[test]
fn a_message_from_custody_is_delivered_once_and_its_stream_copy_is_a_duplicate() {
    let mut i = inbox();
    let custody = Message::new(id(7), 10, 7).with_qos(Qos::ExactlyOnce);
    assert!(i.handle_custody(&peer(), custody.clone(), t(10)));
    let evs = events(&mut i);
    assert!(matches!(evs[0], InboxEvent::RememberDelivered { .. }));
    assert_eq!(delivered(&evs), [7]);
    // Handed on again by a broker that did not see the acknowledgement, then sent again by
    // the origin once it reaches the destination: neither is delivered.
    assert!(!i.handle_custody(&peer(), custody, t(11)));
    i.handle_transmit(&peer(), tx(0, 0, 7, Qos::ExactlyOnce), t(12))
        .unwrap();
    assert!(delivered(&events(&mut i)).is_empty());
    assert_eq!(i.counters().duplicates, 2);
    // At least once: delivered each time; late: discarded.
    let once = Message::new(id(8), 10, 8).with_qos(Qos::AtLeastOnce);
    assert!(i.handle_custody(&peer(), once.clone(), t(13)));
    assert!(i.handle_custody(&peer(), once, t(14)));
    let late = Message::new(id(9), 10, 9)
        .with_qos(Qos::AtLeastOnce)
        .with_deadline(Deadline::at(t(5)));
    assert!(!i.handle_custody(&peer(), late, t(15)));
    let evs = events(&mut i);
    assert_eq!(delivered(&evs), [8, 8]);
    assert!(matches!(
        evs.last(),
        Some(InboxEvent::Discarded {
            reason: DiscardReason::ArrivedLate,
            ..
        })
    ));
}

#[test]
fn restored_dedup_entries_catch_copies_after_a_receiver_restart() {
    let mut i = inbox();
    i.restore_delivered(id(7), t(1_000));
    i.handle_transmit(&peer(), tx(0, 0, 7, Qos::ExactlyOnce), t(10))
        .unwrap();
    assert!(events(&mut i).is_empty());
    assert_eq!(i.remembered(), 1);
}

#[test]
fn dedup_entries_are_forgotten_at_their_deadline_and_when_the_window_is_full() {
    let mut i = Inbox::new(InboxConfig {
        dedup_capacity: 2,
        ..InboxConfig::default()
    });
    let mut with_deadline = tx(0, 0, 1, Qos::ExactlyOnce);
    with_deadline.message = with_deadline.message.with_deadline(Deadline::at(t(500)));
    i.handle_transmit(&peer(), with_deadline, t(0)).unwrap();
    i.handle_transmit(&peer(), tx(1, 0, 2, Qos::ExactlyOnce), t(0))
        .unwrap();
    events(&mut i);
    assert_eq!(i.poll_timeout(), Some(t(500)));
    i.handle_timeout(t(500));
    assert_eq!(events(&mut i), [InboxEvent::Forget { ids: vec![id(1)] }]);
    i.handle_transmit(&peer(), tx(2, 0, 3, Qos::ExactlyOnce), t(600))
        .unwrap();
    i.handle_transmit(&peer(), tx(3, 0, 4, Qos::ExactlyOnce), t(600))
        .unwrap();
    let evs = events(&mut i);
    assert!(evs.contains(&InboxEvent::Forget { ids: vec![id(2)] }));
    assert_eq!(i.remembered(), 2);
    assert_eq!(i.counters().dedup_evicted_early, 1);
}

#[test]
fn message_arriving_after_its_deadline_is_discarded_and_acknowledged_as_late() {
    let mut i = inbox();
    let mut late = tx(0, 0, 1, Qos::AtLeastOnce);
    late.message = late.message.with_deadline(Deadline::at(t(100)));
    i.handle_transmit(&peer(), late, t(101)).unwrap();
    assert_eq!(
        events(&mut i),
        [InboxEvent::Discarded {
            peer: peer(),
            id: id(1),
            reason: DiscardReason::ArrivedLate,
        }]
    );
    let (_, ack) = i.poll_ack().unwrap();
    assert_eq!((ack.below, ack.late.clone()), (Seq(1), vec![Seq(0)]));
}

#[test]
fn a_delivery_the_consumer_refuses_is_acknowledged_as_refused_until_the_floor_passes_it() {
    let mut i = inbox();
    i.handle_transmit(&peer(), tx(0, 0, 1, Qos::AtLeastOnce), t(0))
        .unwrap();
    let evs = events(&mut i);
    let [InboxEvent::Deliver(d)] = &evs[..] else {
        panic!("{evs:?}")
    };
    assert_eq!(d.seq, Some(Seq(0)));
    i.handle_refused(&peer(), Seq(0), 22);
    let (_, ack) = i.poll_ack().unwrap();
    assert_eq!(
        (ack.below, ack.refused.clone()),
        (Seq(1), vec![(Seq(0), 22)])
    );
    // Repeated (an acknowledgement may be lost) until the sender's floor moves past it.
    i.handle_transmit(&peer(), tx(1, 0, 2, Qos::AtLeastOnce), t(1))
        .unwrap();
    events(&mut i);
    let (_, ack) = i.poll_ack().unwrap();
    assert_eq!(ack.refused, vec![(Seq(0), 22)]);
    i.handle_transmit(&peer(), tx(2, 1, 3, Qos::AtLeastOnce), t(2))
        .unwrap();
    events(&mut i);
    let (_, ack) = i.poll_ack().unwrap();
    assert_eq!(ack.refused, Vec::<(Seq, u8)>::new());
}

#[test]
fn held_message_whose_deadline_passes_is_discarded_and_its_position_passed_over() {
    let mut i = inbox();
    let mut second = ordered(1, 0, 21, 1);
    second.message = second.message.with_deadline(Deadline::at(t(300)));
    i.handle_transmit(&peer(), second, t(0)).unwrap();
    assert_eq!(i.poll_timeout(), Some(t(301)));
    i.handle_timeout(t(301));
    assert!(matches!(
        events(&mut i)[..],
        [InboxEvent::Discarded {
            reason: DiscardReason::ArrivedLate,
            ..
        }]
    ));
    i.handle_transmit(&peer(), ordered(0, 0, 20, 0), t(400))
        .unwrap();
    assert_eq!(delivered(&events(&mut i)), [20]);
    let (_, ack) = i.poll_ack().unwrap();
    assert_eq!((ack.below, ack.late.clone()), (Seq(2), vec![Seq(1)]));
    assert_eq!(i.occupancy(&peer()).unwrap().held, 0);
}

#[test]
fn credit_grows_as_the_consumer_frees_space() {
    let mut i = Inbox::new(InboxConfig {
        window: 4,
        ..InboxConfig::default()
    });
    for s in 0..4 {
        i.handle_transmit(&peer(), tx(s, 0, s, Qos::AtLeastOnce), t(0))
            .unwrap();
    }
    events(&mut i);
    assert_eq!(i.poll_ack().unwrap().1.credit, Seq(4), "window full");
    assert!(i.poll_credit().is_none());
    i.handle_consumed([id(0), id(99)]);
    i.handle_consumed([id(0)]);
    let (_, credit) = i.poll_credit().unwrap();
    assert_eq!(credit.limit, Seq(5), "one slot freed, once");
    assert_eq!(i.occupancy(&peer()).unwrap().unconsumed, 3);
}

#[test]
fn credit_grant_the_sender_does_not_use_is_repeated_with_back_off() {
    let mut i = Inbox::new(InboxConfig {
        window: 2,
        ..InboxConfig::default()
    });
    for s in 0..2 {
        i.handle_transmit(&peer(), tx(s, 0, s, Qos::AtLeastOnce), t(0))
            .unwrap();
    }
    events(&mut i);
    i.poll_ack().unwrap();
    i.handle_consumed([id(0), id(1)]);
    assert_eq!(i.poll_credit().unwrap().1.limit, Seq(4));
    assert_eq!(i.poll_timeout(), Some(t(1_000)));
    i.handle_timeout(t(1_000));
    assert_eq!(i.poll_credit().unwrap().1.limit, Seq(4), "repeated");
    assert_eq!(i.poll_timeout(), Some(t(3_000)), "then after twice as long");
    // Using the new credit shows the grant arrived.
    i.handle_transmit(&peer(), tx(2, 2, 2, Qos::AtLeastOnce), t(1_500))
        .unwrap();
    assert_eq!(i.poll_timeout(), None);
}

#[test]
fn transmission_of_a_replaced_stream_is_refused() {
    let mut i = inbox();
    let mut new = tx(0, 0, 1, Qos::AtLeastOnce);
    new.epoch = Epoch(3);
    i.handle_transmit(&peer(), new, t(0)).unwrap();
    let err = i
        .handle_transmit(&peer(), tx(5, 0, 2, Qos::AtLeastOnce), t(0))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plant-a/gw-1 sent on epoch 1 after epoch 3 had started"
    );
}

#[test]
fn new_stream_discards_what_the_old_one_held_back() {
    let mut i = inbox();
    i.handle_transmit(&peer(), ordered(1, 0, 21, 1), t(0))
        .unwrap();
    let mut restarted = ordered(0, 0, 20, 0);
    restarted.epoch = Epoch(2);
    i.handle_transmit(&peer(), restarted, t(1)).unwrap();
    let evs = events(&mut i);
    assert_eq!(
        evs[0],
        InboxEvent::Discarded {
            peer: peer(),
            id: id(21),
            reason: DiscardReason::SenderRestarted,
        }
    );
    assert_eq!(delivered(&evs), [20]);
}

#[test]
fn nothing_goes_to_a_peer_while_its_link_is_down_and_state_goes_again_on_a_new_link() {
    let mut i = inbox();
    i.handle_transmit(&peer(), tx(0, 0, 1, Qos::AtLeastOnce), t(0))
        .unwrap();
    events(&mut i);
    i.handle_link_down(&peer());
    assert!(i.poll_ack().is_none());
    i.handle_link_up(&peer());
    let (_, ack) = i.poll_ack().unwrap();
    assert_eq!(ack.below, Seq(1));
    assert_eq!(i.ack_state(&peer()).unwrap().below, Seq(1));
    assert!(
        i.ack_state(&Peer {
            mesh: "other".parse().unwrap(),
            node: "n".parse().unwrap()
        })
        .is_none()
    );
}

#[test]
fn ranges_in_one_acknowledgement_are_bounded() {
    let mut i = Inbox::new(InboxConfig {
        max_ack_ranges: 2,
        ..InboxConfig::default()
    });
    for s in [1, 3, 5, 7] {
        i.handle_transmit(&peer(), tx(s, 0, s, Qos::AtLeastOnce), t(0))
            .unwrap();
    }
    events(&mut i);
    let (_, ack) = i.poll_ack().unwrap();
    assert_eq!(
        ack.ranges,
        [(1, 2), (3, 4)].map(|(s, e)| SeqRange {
            start: Seq(s),
            end: Seq(e)
        })
    );
}

#[test]
fn transmission_with_a_floor_above_its_number_is_refused() {
    let mut i = inbox();
    let err = i
        .handle_transmit(&peer(), tx(3, 4, 1, Qos::AtLeastOnce), t(0))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plant-a/gw-1 sent #3 with floor #4 above it"
    );
    assert!(events(&mut i).is_empty());
}

#[test]
fn peer_far_beyond_its_window_is_refused_until_the_consumer_catches_up() {
    let mut i = Inbox::new(InboxConfig {
        window: 2,
        ..InboxConfig::default()
    });
    for s in 0..4 {
        i.handle_transmit(&peer(), tx(s, 0, s, Qos::AtLeastOnce), t(0))
            .unwrap();
    }
    assert_eq!(i.counters().beyond_credit, 2);
    let err = i
        .handle_transmit(&peer(), tx(4, 0, 4, Qos::AtLeastOnce), t(0))
        .unwrap_err();
    assert_eq!(
        err,
        InboxError::WindowOverrun {
            peer: peer(),
            occupancy: 4,
            window: 2
        }
    );
    assert_eq!(delivered(&events(&mut i)), [0, 1, 2, 3]);
    let (_, ack) = i.poll_ack().unwrap();
    assert_eq!(ack.below, Seq(4), "the refused one is not acknowledged");
    i.handle_consumed([id(0)]);
    i.handle_transmit(&peer(), tx(4, 0, 4, Qos::AtLeastOnce), t(1))
        .unwrap();
    assert_eq!(delivered(&events(&mut i)), [4]);
}

#[test]
fn forward_floor_releases_messages_held_behind_a_gap_that_will_not_fill() {
    let mut i = Inbox::new(InboxConfig {
        window: 2,
        ..InboxConfig::default()
    });
    // Seq 0 (position 0, qos 0) was lost; 1 and 2 are held and fill the window.
    i.handle_transmit(&peer(), ordered(1, 0, 21, 1), t(0))
        .unwrap();
    i.handle_transmit(&peer(), ordered(2, 0, 22, 2), t(0))
        .unwrap();
    assert!(events(&mut i).is_empty());
    i.handle_forward(
        &peer(),
        crate::Forward {
            epoch: Epoch(1),
            floor: Seq(3),
        },
        t(1_000),
    )
    .unwrap();
    let evs = events(&mut i);
    assert!(matches!(evs[0], InboxEvent::GapSkipped { .. }));
    assert_eq!(delivered(&evs), [21, 22]);
    let (_, ack) = i.poll_ack().unwrap();
    assert_eq!(ack.below, Seq(3), "the forward is acknowledged");
}

#[test]
fn unconfirmed_credit_grant_is_repeated_after_a_link_drop() {
    let mut i = Inbox::new(InboxConfig {
        window: 2,
        ..InboxConfig::default()
    });
    for s in 0..2 {
        i.handle_transmit(&peer(), tx(s, 0, s, Qos::AtLeastOnce), t(0))
            .unwrap();
    }
    events(&mut i);
    i.poll_ack().unwrap();
    i.handle_consumed([id(0), id(1)]);
    assert_eq!(i.poll_credit().unwrap().1.limit, Seq(4));
    i.handle_link_down(&peer());
    i.handle_timeout(t(500));
    i.handle_link_up(&peer());
    // The announcement on the new link may be lost as well...
    assert_eq!(i.poll_ack().unwrap().1.credit, Seq(4));
    // ...so the grant is repeated until the sender uses it.
    assert_eq!(i.poll_timeout(), Some(t(1_500)));
    i.handle_timeout(t(1_500));
    assert_eq!(i.poll_credit().unwrap().1.limit, Seq(4));
}
