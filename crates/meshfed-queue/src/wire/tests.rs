use ciborium::Value;
use proptest::prelude::*;

use super::*;

fn cbor(v: Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).unwrap();
    out
}

fn int(n: u64) -> Value {
    Value::Integer(n.into())
}

fn arr<const N: usize>(items: [Value; N]) -> Value {
    Value::Array(items.into())
}

fn item(seq: u64, key_seq: Option<u64>, retransmission: bool) -> Item {
    Item {
        seq: Seq(seq),
        key_seq: key_seq.map(KeySeq),
        retransmission,
    }
}

fn item_value(seq: u64) -> Value {
    arr([int(seq), Value::Null, Value::Bool(false)])
}

/// `[epoch 1, floor, items, kind, envelopes]`.
fn transfer_value(floor: u64, items: Vec<Value>, kind: u64, envelopes: Value) -> Vec<u8> {
    cbor(arr([
        int(1),
        int(floor),
        Value::Array(items),
        int(kind),
        envelopes,
    ]))
}

fn transfer(envelopes: Signed) -> Transfer {
    Transfer {
        epoch: Epoch(3),
        floor: Seq(10),
        items: vec![item(12, Some(0), false), item(10, None, true)],
        envelopes,
    }
}

fn ack(below: u64, ranges: &[(u64, u64)], late: &[u64]) -> Ack {
    Ack {
        epoch: Epoch(2),
        below: Seq(below),
        ranges: ranges
            .iter()
            .map(|&(s, e)| SeqRange {
                start: Seq(s),
                end: Seq(e),
            })
            .collect(),
        late: late.iter().copied().map(Seq).collect(),
        refused: vec![],
        credit: Seq(64),
    }
}

/// `[epoch 2, below, ranges, late, refused [], credit 64]`.
fn ack_value(below: u64, ranges: Vec<Value>, late: Value) -> Vec<u8> {
    cbor(arr([
        int(2),
        int(below),
        Value::Array(ranges),
        late,
        Value::Array(vec![]),
        int(64),
    ]))
}

fn range_value(start: u64, end: u64) -> Value {
    arr([int(start), int(end)])
}

fn transfer_error(bytes: &[u8]) -> String {
    Transfer::decode(bytes).unwrap_err().to_string()
}

fn ack_error(bytes: &[u8]) -> String {
    Ack::decode(bytes).unwrap_err().to_string()
}

#[test]
fn transfer_round_trips_with_a_batch_and_with_one_envelope_per_item() {
    for t in [
        transfer(Signed::Batch(vec![7; 5000])),
        transfer(Signed::Each(vec![vec![1, 2, 3], vec![]])),
        transfer(Signed::Streamed {
            batch: 9,
            first: 40,
            members: vec![vec![4; 10], vec![5]],
        }),
    ] {
        assert_eq!(Transfer::decode(&t.encode()), Ok(t));
    }
}

#[test]
fn transfer_is_the_documented_array() {
    let t = Transfer {
        epoch: Epoch(1),
        floor: Seq(2),
        items: vec![item(3, None, false), item(4, Some(5), true)],
        envelopes: Signed::Each(vec![vec![0xaa], vec![0xbb]]),
    };
    let items = vec![
        arr([int(3), Value::Null, Value::Bool(false)]),
        arr([int(4), int(5), Value::Bool(true)]),
    ];
    let envelopes = arr([Value::Bytes(vec![0xaa]), Value::Bytes(vec![0xbb])]);
    assert_eq!(
        t.encode(),
        cbor(arr([
            int(1),
            int(2),
            Value::Array(items),
            int(1),
            envelopes
        ]))
    );
    let batch = Transfer {
        envelopes: Signed::Batch(vec![0xcc]),
        ..t
    };
    assert_eq!(batch.encode()[..2], [0x85, 0x01]);
    assert!(batch.encode().ends_with(&[0x00, 0x41, 0xcc]));
}

#[test]
fn encode_parts_writes_what_encode_writes() {
    let each = transfer(Signed::Each(vec![vec![1; 300], vec![2; 70_000]]));
    let Signed::Each(envelopes) = &each.envelopes else {
        unreachable!()
    };
    let refs: Vec<&[u8]> = envelopes.iter().map(Vec::as_slice).collect();
    let parts = Transfer::encode_parts(each.epoch, each.floor, &each.items, SignedRef::Each(&refs));
    assert_eq!(parts, each.encode());

    let batch = transfer(Signed::Batch(vec![9; 1 << 20]));
    let parts = Transfer::encode_parts(
        batch.epoch,
        batch.floor,
        &batch.items,
        SignedRef::Batch(&[9; 1 << 20]),
    );
    assert_eq!(parts, batch.encode());
}

#[test]
fn item_is_taken_from_a_transmission() {
    let t = Transmit {
        epoch: Epoch(1),
        seq: Seq(9),
        floor: Seq(4),
        key_seq: Some(KeySeq(2)),
        retransmission: true,
        message: crate::Message::new(
            meshfed_proto::envelope::EnvelopeId::new(
                meshfed_proto::envelope::Timestamp(0),
                [0; 10],
            ),
            1,
            (),
        ),
    };
    assert_eq!(Item::from(&t), item(9, Some(2), true));
}

#[test]
fn ack_credit_and_forward_round_trip() {
    for a in [
        ack(0, &[], &[]),
        ack(5, &[(7, 9), (10, 11), (20, 40)], &[3, 8, 1]),
    ] {
        assert_eq!(Ack::decode(&a.encode()), Ok(a));
    }
    let credit = Credit {
        epoch: Epoch(u64::MAX),
        limit: Seq(1 << 40),
    };
    assert_eq!(Credit::decode(&credit.encode()), Ok(credit));
    let forward = Forward {
        epoch: Epoch(0),
        floor: Seq(17),
    };
    assert_eq!(Forward::decode(&forward.encode()), Ok(forward));
    assert_eq!(forward.encode(), cbor(arr([int(0), int(17)])));
}

#[test]
fn transfer_without_items_is_refused() {
    let bytes = transfer_value(0, vec![], 1, arr([]));
    assert_eq!(transfer_error(&bytes), "transfer carries no items");
}

#[test]
fn transfer_with_too_many_items_is_refused() {
    let t = Transfer {
        epoch: Epoch(1),
        floor: Seq(0),
        items: (0..=MAX_ITEMS as u64)
            .map(|s| item(s, None, false))
            .collect(),
        envelopes: Signed::Batch(vec![]),
    };
    assert_eq!(
        Transfer::decode(&t.encode()),
        Err(WireError::TooManyItems { count: 65_537 })
    );
    let at_limit = Transfer {
        items: t.items[..MAX_ITEMS].to_vec(),
        ..t
    };
    assert_eq!(Transfer::decode(&at_limit.encode()), Ok(at_limit));
}

#[test]
fn transfer_item_below_the_floor_is_refused_naming_it() {
    let bytes = transfer_value(
        9,
        vec![item_value(9), item_value(7)],
        0,
        Value::Bytes(vec![]),
    );
    assert_eq!(
        transfer_error(&bytes),
        "transfer item 1: #7 is below the floor #9"
    );
}

#[test]
fn transfer_repeating_a_sequence_number_is_refused() {
    let items = vec![item_value(4), item_value(5), item_value(4)];
    let bytes = transfer_value(0, items, 0, Value::Bytes(vec![]));
    assert_eq!(transfer_error(&bytes), "transfer item 2: #4 repeats item 0");
}

#[test]
fn transfer_needs_one_envelope_per_item() {
    let envelopes = arr([Value::Bytes(vec![1])]);
    let bytes = transfer_value(0, vec![item_value(0), item_value(1)], 1, envelopes);
    assert_eq!(
        transfer_error(&bytes),
        "transfer carries 1 envelopes for 2 items"
    );
}

#[test]
fn transfer_with_an_unknown_envelope_kind_is_refused() {
    let bytes = transfer_value(0, vec![item_value(0)], 3, Value::Bytes(vec![1]));
    assert_eq!(
        Transfer::decode(&bytes),
        Err(WireError::UnknownEnvelopeKind { kind: 3 })
    );
}

#[test]
fn streamed_transfer_is_the_documented_array_and_its_rules_hold() {
    let envelopes = arr([int(3), int(7), arr([Value::Bytes(vec![0xaa])])]);
    let bytes = transfer_value(0, vec![item_value(0)], 2, envelopes);
    let t = Transfer::decode(&bytes).expect("decodes");
    assert_eq!(
        t.envelopes,
        Signed::Streamed {
            batch: 3,
            first: 7,
            members: vec![vec![0xaa]]
        }
    );
    assert_eq!(t.encode(), bytes);
    let refs: [&[u8]; 1] = [&[0xaa]];
    let parts = Transfer::encode_parts(
        t.epoch,
        t.floor,
        &t.items,
        SignedRef::Streamed {
            batch: 3,
            first: 7,
            members: &refs,
        },
    );
    assert_eq!(parts, bytes);
    // One member per item.
    let two = arr([
        int(3),
        int(7),
        arr([Value::Bytes(vec![1]), Value::Bytes(vec![2])]),
    ]);
    assert_eq!(
        transfer_error(&transfer_value(0, vec![item_value(0)], 2, two)),
        "transfer carries 2 envelopes for 1 items"
    );
    // Indices past the largest batch.
    let far = arr([int(3), int(1 << 16), arr([Value::Bytes(vec![1])])]);
    assert_eq!(
        Transfer::decode(&transfer_value(0, vec![item_value(0)], 2, far)),
        Err(WireError::StreamedIndex {
            first: 1 << 16,
            count: 1
        })
    );
    // Exactly three fields.
    let short = arr([int(3), arr([Value::Bytes(vec![1])])]);
    assert!(
        transfer_error(&transfer_value(0, vec![item_value(0)], 2, short))
            .contains("transfer.envelopes")
    );
}

#[test]
fn arrays_with_extra_items_are_refused() {
    let long_item = arr([int(0), Value::Null, Value::Bool(false), int(0)]);
    let bytes = transfer_value(0, vec![long_item], 0, Value::Bytes(vec![]));
    assert_eq!(
        transfer_error(&bytes),
        "malformed transfer: invalid length 4, expected an array [seq, key_seq, \
         retransmission] for transfer.items[0]"
    );
    let mut long_transfer = transfer(Signed::Batch(vec![])).encode();
    long_transfer[0] = 0x86;
    long_transfer.push(0x00);
    assert!(transfer_error(&long_transfer).contains("invalid length 6"));
    let credit = cbor(arr([int(1), int(2), int(3)]));
    assert_eq!(
        Credit::decode(&credit).unwrap_err().to_string(),
        "malformed credit: invalid length 3, expected an array [epoch, limit] for credit"
    );
    let short = cbor(arr([int(1)]));
    assert!(
        Forward::decode(&short)
            .unwrap_err()
            .to_string()
            .contains("invalid length 1, expected an array [epoch, floor] for forward")
    );
}

#[test]
fn byte_strings_and_arrays_are_not_interchangeable() {
    // An envelope as an array of small numbers.
    let bytes = transfer_value(0, vec![item_value(0)], 0, arr([int(1), int(2)]));
    assert!(
        transfer_error(&bytes).contains("expected a byte string for transfer.envelopes"),
        "{}",
        transfer_error(&bytes)
    );
    // A range, and the late list, as byte strings.
    let bytes = ack_value(0, vec![Value::Bytes(vec![3, 4])], arr([]));
    assert!(ack_error(&bytes).contains("expected an array [start, end] for ack.ranges[0]"));
    let bytes = ack_value(0, vec![], Value::Bytes(vec![3, 4]));
    assert!(ack_error(&bytes).contains("expected an array for ack.late"));
}

#[test]
fn wrong_types_are_refused_saying_where() {
    let bad_item = arr([int(0), Value::Text("x".into()), Value::Bool(false)]);
    let bytes = transfer_value(0, vec![item_value(1), bad_item], 0, Value::Bytes(vec![]));
    assert_eq!(
        transfer_error(&bytes),
        "malformed transfer: invalid type: string \"x\", expected an unsigned integer or \
         null for transfer.items[1].key_seq"
    );
    let bytes = ack_value(0, vec![], arr([int(1), Value::Integer((-1).into())]));
    assert_eq!(
        ack_error(&bytes),
        "malformed ack: invalid type: integer `-1`, expected an unsigned integer for \
         ack.late[1]"
    );
    let retransmission_as_number = arr([int(0), Value::Null, int(1)]);
    let bytes = transfer_value(0, vec![retransmission_as_number], 0, Value::Bytes(vec![]));
    assert!(
        transfer_error(&bytes).contains("expected a boolean for transfer.items[0].retransmission")
    );
}

#[test]
fn tags_truncation_and_trailing_bytes_are_refused() {
    let tagged = cbor(arr([
        Value::Tag(2, Box::new(Value::Bytes(vec![1]))),
        int(2),
    ]));
    assert!(Credit::decode(&tagged).is_err());
    let tagged = cbor(Value::Tag(24, Box::new(arr([int(1), int(2)]))));
    assert!(Credit::decode(&tagged).is_err());

    let whole = transfer(Signed::Each(vec![vec![1], vec![2]])).encode();
    let cut = &whole[..whole.len() - 1];
    assert_eq!(
        transfer_error(cut),
        "malformed transfer: the input ends early"
    );
    let mut longer = whole.clone();
    longer.extend([0, 0]);
    assert_eq!(transfer_error(&longer), "2 stray bytes after the transfer");
    assert!(Forward::decode(&[]).is_err());
    assert!(Forward::decode(&[0xff]).is_err());
}

#[test]
fn ack_ranges_must_be_ascending_non_empty_and_above_the_cumulative_point() {
    let cases: [(&[(u64, u64)], &str); 6] = [
        (&[(6, 8), (10, 4)], "ack range 1: #10..#4 is inverted"),
        (&[(6, 6)], "ack range 0: #6..#6 is empty"),
        (
            &[(5, 8)],
            "ack range 0: #5..#8 does not start above the cumulative point #5",
        ),
        (
            &[(7, 9), (8, 12)],
            "ack range 1: #8..#12 does not start above the end #9 of range 0",
        ),
        (
            &[(7, 9), (9, 12)],
            "ack range 1: #9..#12 does not start above the end #9 of range 0",
        ),
        (
            &[(20, 30), (7, 9)],
            "ack range 1: #7..#9 does not start above the end #30 of range 0",
        ),
    ];
    for (ranges, error) in cases {
        let ranges = ranges.iter().map(|&(s, e)| range_value(s, e)).collect();
        assert_eq!(ack_error(&ack_value(5, ranges, arr([]))), error);
    }
}

#[test]
fn ack_with_too_many_ranges_or_late_entries_is_refused() {
    let ranges = (0..=MAX_ACK_RANGES as u64)
        .map(|i| range_value(2 * i + 1, 2 * i + 2))
        .collect();
    assert_eq!(
        Ack::decode(&ack_value(0, ranges, arr([]))),
        Err(WireError::TooManyRanges { count: 4097 })
    );
    let late = Value::Array((0..=MAX_ACK_LATE as u64).map(int).collect());
    assert_eq!(
        ack_error(&ack_value(0, vec![], late)),
        "ack carries 65537 late or refused entries, more than 65536"
    );
}

#[test]
fn huge_announced_lengths_fail_without_allocating_them() {
    // An array announcing 2^62 items, then nothing.
    let mut bytes = vec![0x85, 0x01, 0x00, 0x9b];
    bytes.extend((1u64 << 62).to_be_bytes());
    assert_eq!(
        transfer_error(&bytes),
        "malformed transfer: the input ends early"
    );
    // A byte string announcing 2^62 bytes.
    let mut bytes = vec![0x85, 0x01, 0x00, 0x81, 0x83, 0x00, 0xf6, 0xf4, 0x00, 0x5b];
    bytes.extend((1u64 << 62).to_be_bytes());
    assert!(Transfer::decode(&bytes).is_err());
}

fn items() -> impl Strategy<Value = (u64, Vec<Item>)> {
    (
        0..u64::MAX / 2,
        prop::collection::btree_set(0..10_000u64, 1..40),
        prop::collection::vec((any::<Option<u64>>(), any::<bool>()), 40),
    )
        .prop_flat_map(|(floor, offsets, fields)| {
            let items: Vec<Item> = offsets
                .into_iter()
                .zip(fields)
                .map(|(o, (k, r))| item(floor + o, k, r))
                .collect();
            (Just(floor), Just(items).prop_shuffle())
        })
}

fn transfers() -> impl Strategy<Value = Transfer> {
    (
        any::<u64>(),
        items(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(epoch, (floor, items), batch, bytes)| {
            let envelopes = if batch {
                Signed::Batch(bytes)
            } else {
                Signed::Each(
                    items
                        .iter()
                        .map(|i| bytes[..(i.seq.0 % 7) as usize % (bytes.len() + 1)].to_vec())
                        .collect(),
                )
            };
            Transfer {
                epoch: Epoch(epoch),
                floor: Seq(floor),
                items,
                envelopes,
            }
        })
}

fn acks() -> impl Strategy<Value = Ack> {
    (
        any::<(u64, u64)>(),
        0..u64::MAX / 2,
        prop::collection::vec((1..100u64, 1..100u64), 0..20),
        prop::collection::vec(any::<u64>(), 0..20),
    )
        .prop_map(|((epoch, credit), below, gaps, late)| {
            let mut end = below;
            let ranges = gaps
                .into_iter()
                .map(|(gap, len)| {
                    let start = end + gap;
                    end = start + len;
                    SeqRange {
                        start: Seq(start),
                        end: Seq(end),
                    }
                })
                .collect();
            Ack {
                epoch: Epoch(epoch),
                below: Seq(below),
                ranges,
                refused: late
                    .iter()
                    .rev()
                    .map(|&s| (Seq(s), (s % 256) as u8))
                    .collect(),
                late: late.into_iter().map(Seq).collect(),
                credit: Seq(credit),
            }
        })
}

proptest! {
    #[test]
    fn every_valid_frame_round_trips(t in transfers(), a in acks(), (e, s) in any::<(u64, u64)>()) {
        prop_assert_eq!(Transfer::decode(&t.encode()), Ok(t));
        prop_assert_eq!(Ack::decode(&a.encode()), Ok(a));
        let credit = Credit { epoch: Epoch(e), limit: Seq(s) };
        prop_assert_eq!(Credit::decode(&credit.encode()), Ok(credit));
        let forward = Forward { epoch: Epoch(e), floor: Seq(s) };
        prop_assert_eq!(Forward::decode(&forward.encode()), Ok(forward));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Transfer::decode(&bytes);
        let _ = Ack::decode(&bytes);
        let _ = Credit::decode(&bytes);
        let _ = Forward::decode(&bytes);
    }

    #[test]
    fn a_damaged_frame_is_refused_or_decodes_to_what_it_re_encodes(
        t in transfers(),
        a in acks(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = t.encode();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(t) = Transfer::decode(&bytes) {
            prop_assert_eq!(Transfer::decode(&t.encode()), Ok(t));
        }
        let mut bytes = a.encode();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(a) = Ack::decode(&bytes) {
            prop_assert_eq!(Ack::decode(&a.encode()), Ok(a));
        }
    }
}
