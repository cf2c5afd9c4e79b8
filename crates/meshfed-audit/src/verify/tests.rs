use meshfed_proto::batch::merkle::Tree;
use meshfed_proto::envelope::Timestamp;

use super::*;
use crate::head::tests::keys;
use crate::head::{Countersignature, TreeHead};
use crate::record::tests::{fed, key, mesh, message};

/// An honest log of `n` records: the rows, and the tree over them.
fn log(n: u64) -> (Vec<StoredRecord>, Tree) {
    let rows: Vec<StoredRecord> = (0..n)
        .map(|seq| row(&message(seq, &[seq as u8; 48]), seq))
        .collect();
    let tree = Tree::from_leaf_hashes(rows.iter().map(|r| r.leaf_hash).collect());
    (rows, tree)
}

/// A row as the node writes it (with the audit key).
fn row(record: &Record, position: u64) -> StoredRecord {
    let bytes = record.to_bytes();
    let leaf_hash = merkle::leaf_hash(&bytes);
    StoredRecord {
        position,
        seq: record.seq,
        mac: key().mac(&fed(), record.seq, &leaf_hash),
        bytes: Some(bytes),
        leaf_hash,
    }
}

fn head(tree: &Tree, size: u64, signer: usize) -> SignedHead {
    let head = TreeHead {
        mesh: mesh("plant-b"),
        scope: fed(),
        size,
        root: tree.root_at(size).unwrap(),
        time: Timestamp(1000 + size),
    };
    SignedHead::sign(head, &keys(signer).signing).unwrap()
}

fn countersigned(tree: &Tree, size: u64) -> CountersignedHead {
    let head = head(tree, size, 0).head;
    let countersignature =
        Countersignature::sign(&head, mesh("plant-a"), Timestamp(2000), &keys(1).signing).unwrap();
    CountersignedHead {
        head,
        countersignature,
    }
}

fn check(
    rows: Vec<StoredRecord>,
    heads: &[SignedHead],
    countersigned: &[CountersignedHead],
) -> Verification {
    // Heads at sizes below 8 were signed under the old certificate (key 2).
    let own = |h: &SignedHead| Some(keys(if h.head.size < 8 { 2 } else { 0 }).verifying.clone());
    let partner = |_: &CountersignedHead| Some(keys(1).verifying.clone());
    verify(
        fed(),
        &key(),
        rows,
        heads,
        countersigned,
        Keys {
            own: &own,
            partner: &partner,
        },
    )
}

fn sentences(v: &Verification) -> Vec<String> {
    v.problems.iter().map(ToString::to_string).collect()
}

#[test]
fn an_intact_log_has_no_problems() {
    let (rows, tree) = log(20);
    let heads = [
        head(&tree, 0, 2),
        head(&tree, 5, 2),
        head(&tree, 12, 0),
        head(&tree, 20, 0),
    ];
    let v = check(
        rows,
        &heads,
        &[countersigned(&tree, 12), countersigned(&tree, 20)],
    );
    assert_eq!(sentences(&v), Vec::<String>::new());
    assert_eq!((v.records, v.heads, v.countersignatures), (20, 4, 2));
    assert!(v.is_intact());
}

#[test]
fn an_edited_record_with_a_recomputed_hash_is_named_by_its_mac() {
    let (mut rows, tree) = log(10);
    let mut edited = message(3, &[3; 48]);
    edited.time = Timestamp(1);
    let forged = row(&edited, 3);
    rows[3].bytes = forged.bytes;
    rows[3].leaf_hash = forged.leaf_hash; // the attacker recomputed the hash, not the MAC
    let v = check(
        rows,
        &[head(&tree, 2, 2), head(&tree, 10, 0)],
        &[countersigned(&tree, 10)],
    );
    assert_eq!(
        sentences(&v),
        [
            "record 3 of log fed_0123abcd (stored at position 3) was edited: its MAC does not match (its body, hash or seq was changed by someone without the audit key)",
            "the signed head of log fed_0123abcd at size 10 does not match the log's first 10 records (the log was rewritten)",
            "log fed_0123abcd was rewritten: its first 10 records do not match the head plant-a countersigned",
        ]
    );
    assert_eq!(v.problems[0].record().map(|r| r.seq), Some(3));
    assert_eq!(v.problems[1].head_size(), Some(10));
}

#[test]
fn an_edited_body_under_its_old_hash_is_named() {
    let (mut rows, tree) = log(6);
    let mut edited = message(4, &[4; 48]);
    edited.time = Timestamp(1);
    rows[4].bytes = Some(edited.to_bytes());
    let v = check(rows, &[head(&tree, 6, 2)], &[]);
    assert_eq!(
        sentences(&v),
        [
            "record 4 of log fed_0123abcd (stored at position 4) was altered: its body does not match its stored hash"
        ]
    );
}

#[test]
fn garbage_is_named_undecodable() {
    let (mut rows, _) = log(3);
    let garbage = b"\xa1\x61v\x02".to_vec();
    rows[1].leaf_hash = merkle::leaf_hash(&garbage);
    rows[1].mac = key().mac(&fed(), 1, &rows[1].leaf_hash);
    rows[1].bytes = Some(garbage);
    let v = check(rows, &[], &[]);
    assert_eq!(v.problems.len(), 1);
    let text = v.problems[0].to_string();
    assert!(
        text.starts_with("record 1 of log fed_0123abcd (stored at position 1) cannot be read: audit record is malformed"),
        "{text}"
    );
}

#[test]
fn deleted_inserted_and_reordered_rows_are_told_apart() {
    let (rows, tree) = log(10);
    // Deleted: rows 4 and 5 removed.
    let deleted: Vec<StoredRecord> = rows
        .iter()
        .filter(|r| r.seq != 4 && r.seq != 5)
        .cloned()
        .collect();
    let v = check(deleted, &[head(&tree, 10, 0)], &[countersigned(&tree, 10)]);
    assert_eq!(
        sentences(&v),
        [
            "records 4 to 5 were deleted: they are missing before record 6 of log fed_0123abcd (stored at position 6)",
            "the signed head of log fed_0123abcd at size 10 is beyond the end of the log (8 records): records were removed",
            "log fed_0123abcd was rolled back: plant-a countersigned it at size 10, but it holds 8 records",
        ]
    );

    // Inserted: row 2 stored again after row 7.
    let mut inserted = rows.clone();
    let mut again = rows[2].clone();
    again.position = 100;
    inserted.insert(8, again);
    let v = check(inserted, &[], &[]);
    assert_eq!(
        sentences(&v),
        [
            "record 2 of log fed_0123abcd (stored at position 100) was inserted: its seq is stored a second time"
        ]
    );

    // Reordered: 3 and 4 swapped.
    let mut reordered = rows.clone();
    reordered.swap(3, 4);
    let v = check(reordered, &[], &[]);
    assert_eq!(
        sentences(&v),
        [
            "record 3 was deleted: it is missing before record 4 of log fed_0123abcd (stored at position 4)",
            "record 3 of log fed_0123abcd (stored at position 3) was reordered: it is stored after record 4",
        ]
    );
}

#[test]
fn a_moved_or_foreign_body_is_named() {
    let (mut rows, _) = log(4);
    // The body of record 1 stored under seq 2's row, with a MAC the node made (a node bug,
    // not an attack): the body's own seq tells.
    let mut moved = row(&message(1, &[1; 48]), 2);
    moved.seq = 2;
    moved.mac = key().mac(&fed(), 2, &moved.leaf_hash);
    rows[2] = moved;
    let mut foreign = message(3, &[3; 48]);
    foreign.scope = Scope::Node;
    let mut foreign = row(&foreign, 3);
    foreign.mac = key().mac(&fed(), 3, &foreign.leaf_hash);
    rows[3] = foreign;
    let v = check(rows, &[], &[]);
    assert_eq!(
        sentences(&v),
        [
            "record 2 of log fed_0123abcd (stored at position 2) was moved: its body says it is record 1",
            "record 3 of log fed_0123abcd (stored at position 3) belongs to another log: its body says log node",
        ]
    );
}

#[test]
fn pruned_rows_are_checked_by_hash_and_mac() {
    let (mut rows, tree) = log(8);
    for r in &mut rows[..5] {
        r.bytes = None;
    }
    let v = check(rows.clone(), &[head(&tree, 8, 0)], &[]);
    assert!(v.is_intact(), "{:?}", sentences(&v));
    assert_eq!(v.pruned, 5);
    rows[1].leaf_hash = merkle::leaf_hash(b"other");
    let v = check(rows, &[head(&tree, 8, 0)], &[]);
    assert_eq!(v.problems.len(), 2, "{:?}", sentences(&v));
    assert!(matches!(v.problems[0], Problem::MacMismatch { .. }));
    assert!(matches!(
        v.problems[1],
        Problem::HeadRootMismatch { size: 8, .. }
    ));
}

#[test]
fn bad_head_and_countersignatures_are_named() {
    let (rows, tree) = log(10);
    let mut forged = head(&tree, 9, 0);
    forged.head.time = Timestamp(1);
    let unsigned_by_partner = {
        let mut c = countersigned(&tree, 9);
        c.countersignature.time = Timestamp(1);
        c
    };
    let other_log = {
        let mut h = head(&tree, 4, 2);
        h.head.scope = Scope::Node;
        h
    };
    let no_keys_own = |_: &SignedHead| None;
    let partner = |_: &CountersignedHead| None;
    let v = check(
        rows.clone(),
        &[forged, other_log],
        std::slice::from_ref(&unsigned_by_partner),
    );
    assert_eq!(
        sentences(&v),
        [
            "the signed head at size 4 stored with log fed_0123abcd is a head of log node",
            "the signed head of log fed_0123abcd at size 9 has an invalid signature",
            "the countersignature by plant-a of log fed_0123abcd at size 9 is invalid",
        ]
    );
    let heads = [head(&tree, 10, 0)];
    let v = verify(
        fed(),
        &key(),
        rows,
        &heads,
        &[unsigned_by_partner],
        Keys {
            own: &no_keys_own,
            partner: &partner,
        },
    );
    assert_eq!(
        sentences(&v),
        [
            "the countersignature by plant-a of log fed_0123abcd at size 9 cannot be checked: no key is known for plant-a",
            "the signed head of log fed_0123abcd at size 10 cannot be checked: no certificate of this node is known for it",
        ]
    );
}
