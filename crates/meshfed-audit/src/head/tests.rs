use std::sync::OnceLock;

use meshfed_proto::batch::merkle::{Tree, leaf_hash};
use proptest::prelude::*;

use super::*;
use crate::record::tests::{fed, mesh};

pub(crate) struct Keys {
    pub(crate) signing: SigningKey,
    pub(crate) verifying: VerifyingKey,
}

pub(crate) fn keys(i: usize) -> &'static Keys {
    static KEYS: OnceLock<Vec<Keys>> = OnceLock::new();
    &KEYS.get_or_init(|| {
        (0..3)
            .map(|_| {
                let signing = SigningKey::generate().unwrap();
                let verifying = VerifyingKey::from_sec1(signing.public_key()).unwrap();
                Keys { signing, verifying }
            })
            .collect()
    })[i]
}

fn tree(n: usize) -> Tree {
    Tree::from_leaves((0..n).map(|i| format!("record {i}")))
}

fn head(tree: &Tree, size: u64, time: u64) -> TreeHead {
    TreeHead {
        mesh: mesh("plant-a"),
        scope: fed(),
        size,
        root: tree.root_at(size).unwrap(),
        time: Timestamp(time),
    }
}

fn offer(tree: &Tree, from: Option<u64>, size: u64, time: u64) -> HeadOffer {
    HeadOffer {
        head: SignedHead::sign(head(tree, size, time), &keys(0).signing).unwrap(),
        consistency: from.map(|from| tree.consistency(from, size).unwrap()),
    }
}

fn cosigner() -> Cosigner {
    Cosigner {
        mesh: mesh("plant-a"),
        scope: fed(),
    }
}

#[test]
fn signed_head_verifies_under_its_key_only() {
    let t = tree(5);
    let signed = SignedHead::sign(head(&t, 5, 10), &keys(0).signing).unwrap();
    signed.verify(&keys(0).verifying).unwrap();
    assert_eq!(
        signed.verify(&keys(1).verifying).unwrap_err().to_string(),
        "the tree head signature does not verify (the head was altered, or another key signed it)"
    );
    let mut altered = signed.clone();
    altered.head.size = 4;
    assert!(altered.verify(&keys(0).verifying).is_err());
    // A head signature is not a countersignature of the same head.
    let as_counter = Countersignature {
        by: mesh("plant-a"),
        time: Timestamp(10),
        signature: signed.signature,
    };
    assert!(as_counter.verify(&signed.head, &keys(0).verifying).is_err());
}

#[test]
fn countersignature_binds_who_and_when() {
    let h = head(&tree(3), 3, 10);
    let c = Countersignature::sign(&h, mesh("plant-b"), Timestamp(11), &keys(1).signing).unwrap();
    c.verify(&h, &keys(1).verifying).unwrap();
    let mut other = c.clone();
    other.by = mesh("plant-c");
    assert!(other.verify(&h, &keys(1).verifying).is_err());
    let mut later = c.clone();
    later.time = Timestamp(12);
    assert!(later.verify(&h, &keys(1).verifying).is_err());
    let bigger = head(&tree(4), 4, 10);
    assert!(c.verify(&bigger, &keys(1).verifying).is_err());
}

#[test]
fn encodings_round_trip() {
    let t = tree(9);
    let o = offer(&t, Some(4), 9, 20);
    assert_eq!(HeadOffer::from_bytes(&o.to_bytes()).unwrap(), o);
    let first = offer(&t, None, 9, 20);
    assert_eq!(HeadOffer::from_bytes(&first.to_bytes()).unwrap(), first);
    assert_eq!(SignedHead::from_bytes(&o.head.to_bytes()).unwrap(), o.head);
    assert_eq!(
        TreeHead::from_bytes(&o.head.head.to_bytes()).unwrap(),
        o.head.head
    );
    let c =
        Countersignature::sign(&o.head.head, mesh("b"), Timestamp(1), &keys(1).signing).unwrap();
    assert_eq!(Countersignature::from_bytes(&c.to_bytes()).unwrap(), c);
    let ch = CountersignedHead {
        head: o.head.head.clone(),
        countersignature: c,
    };
    assert_eq!(CountersignedHead::from_bytes(&ch.to_bytes()).unwrap(), ch);
}

#[test]
fn decoders_name_what_is_wrong() {
    let o = offer(&tree(9), Some(4), 9, 20);
    let mut bytes = o.to_bytes();
    bytes.push(0);
    assert_eq!(
        HeadOffer::from_bytes(&bytes).unwrap_err().to_string(),
        "head offer is malformed: 1 stray bytes follow the value"
    );
    // A proof one hash short.
    let mut short = o.clone();
    let p = short.consistency.take().unwrap();
    let path = p.path()[1..].to_vec();
    let bytes = codec::encode(&OfferOut(
        short.head.wire(),
        Some((
            4,
            9,
            Bytes::new(&path.iter().flat_map(|h| *h.as_bytes()).collect::<Vec<_>>()),
        )),
    ));
    let err = HeadOffer::from_bytes(&bytes).unwrap_err().to_string();
    assert!(
        err.starts_with("head offer: consistency consistency proof from 4 to 9 leaves has"),
        "{err}"
    );
    // A short signature.
    let bytes = codec::encode(&SignedOut(&o.head.head, Bytes::new(&[0; 95])));
    assert_eq!(
        SignedHead::from_bytes(&bytes).unwrap_err().to_string(),
        "signed head: signature has 95 bytes, must have 96"
    );
}

#[test]
fn first_offer_is_countersigned_without_proof() {
    cosigner()
        .check(None, &offer(&tree(5), None, 5, 10), &keys(0).verifying)
        .unwrap();
}

#[test]
fn extension_with_its_proof_is_countersigned() {
    let t = tree(12);
    let last = head(&t, 5, 10);
    cosigner()
        .check(Some(&last), &offer(&t, Some(5), 12, 11), &keys(0).verifying)
        .unwrap();
    // The same head again needs no proof.
    cosigner()
        .check(Some(&last), &offer(&t, None, 5, 10), &keys(0).verifying)
        .unwrap();
}

#[test]
fn rollback_names_both_sizes() {
    let t = tree(12);
    let last = head(&t, 9, 10);
    let err = cosigner()
        .check(Some(&last), &offer(&t, None, 7, 11), &keys(0).verifying)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rollback: the partner's log has 7 records, but 9 were countersigned before"
    );
}

#[test]
fn rewritten_history_is_named() {
    let honest = tree(12);
    let last = head(&honest, 5, 10);
    // The same size with another root.
    let mut rewritten: Vec<String> = (0..12).map(|i| format!("record {i}")).collect();
    rewritten[2] = "edited".into();
    let forged = Tree::from_leaves(&rewritten);
    let err = cosigner()
        .check(
            Some(&last),
            &offer(&forged, None, 5, 11),
            &keys(0).verifying,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("history rewritten: the log of 5 records does not extend the one of 5"),
        "{err}"
    );
    // A larger tree whose first leaves differ, with its own (honest for it) proof.
    let err = cosigner()
        .check(
            Some(&last),
            &offer(&forged, Some(5), 12, 11),
            &keys(0).verifying,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            HeadFault::HistoryRewritten {
                countersigned: 5,
                offered: 12,
                ..
            }
        ),
        "{err}"
    );
    // No proof at all.
    let err = cosigner()
        .check(
            Some(&last),
            &offer(&honest, None, 12, 11),
            &keys(0).verifying,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the head of 12 records comes without a consistency proof from the 5 countersigned"
    );
    // A proof from another size.
    let err = cosigner()
        .check(
            Some(&last),
            &offer(&honest, Some(6), 12, 11),
            &keys(0).verifying,
        )
        .unwrap_err();
    assert!(
        matches!(err, HeadFault::ConsistencyForOtherSizes { old_size: 6, .. }),
        "{err}"
    );
}

#[test]
fn wrong_signer_mesh_scope_or_time_is_refused() {
    let t = tree(6);
    let o = offer(&t, None, 6, 10);
    assert_eq!(
        cosigner().check(None, &o, &keys(1).verifying),
        Err(HeadFault::BadSignature)
    );
    let other_mesh = Cosigner {
        mesh: mesh("plant-z"),
        scope: fed(),
    };
    assert_eq!(
        other_mesh
            .check(None, &o, &keys(0).verifying)
            .unwrap_err()
            .to_string(),
        "the tree head is mesh plant-a's, not the partner plant-z's"
    );
    let node_scope = Cosigner {
        mesh: mesh("plant-a"),
        scope: Scope::Node,
    };
    assert!(matches!(
        node_scope.check(None, &o, &keys(0).verifying),
        Err(HeadFault::WrongScope { .. })
    ));
    let last = head(&t, 4, 1_777_636_800_000);
    let err = cosigner()
        .check(
            Some(&last),
            &offer(&t, Some(4), 6, 1_777_636_799_000),
            &keys(0).verifying,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "time went backwards: the head is from 2026-05-01T11:59:59.000Z, the one countersigned before from 2026-05-01T12:00:00.000Z"
    );
}

fn arb_head() -> impl Strategy<Value = TreeHead> {
    (
        "[a-z][a-z0-9-]{0,10}",
        proptest::option::of("[A-Za-z0-9_]{1,20}"),
        any::<u64>(),
        any::<[u8; 8]>(),
        any::<u64>(),
    )
        .prop_map(|(m, scope, size, r, time)| TreeHead {
            mesh: mesh(&m),
            scope: scope
                .filter(|s| s != "node")
                .map_or(Scope::Node, |s| Scope::Federation(s.parse().unwrap())),
            size,
            root: leaf_hash(&r),
            time: Timestamp(time),
        })
}

proptest! {
    #[test]
    fn heads_and_offers_round_trip(
        h in arb_head(),
        sig in proptest::collection::vec(any::<u8>(), 96),
        proof in proptest::option::of((1u64..40, 0u64..40)),
    ) {
        let signature = Signature(sig.try_into().unwrap());
        let signed = SignedHead { head: h.clone(), signature };
        prop_assert_eq!(SignedHead::from_bytes(&signed.to_bytes()), Ok(signed.clone()));
        let consistency = proof.map(|(old, extra)| {
            tree((old + extra) as usize).consistency(old, old + extra).unwrap()
        });
        let o = HeadOffer { head: signed, consistency };
        prop_assert_eq!(HeadOffer::from_bytes(&o.to_bytes()), Ok(o));
        let c = Countersignature { by: h.mesh.clone(), time: h.time, signature };
        prop_assert_eq!(Countersignature::from_bytes(&c.to_bytes()), Ok(c.clone()));
        let ch = CountersignedHead { head: h, countersignature: c };
        prop_assert_eq!(CountersignedHead::from_bytes(&ch.to_bytes()), Ok(ch));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(o) = HeadOffer::from_bytes(&bytes) {
            prop_assert_eq!(o.to_bytes(), bytes.clone());
        }
        if let Ok(s) = SignedHead::from_bytes(&bytes) {
            prop_assert_eq!(s.to_bytes(), bytes.clone());
        }
        if let Ok(c) = Countersignature::from_bytes(&bytes) {
            prop_assert_eq!(c.to_bytes(), bytes.clone());
        }
        let _ = CountersignedHead::from_bytes(&bytes);
        let _ = TreeHead::from_bytes(&bytes);
    }
}
