use meshfed_proto::lifecycle::Termination;
use proptest::prelude::*;

use super::*;

pub(crate) fn mesh(s: &str) -> MeshId {
    s.parse().unwrap()
}

pub(crate) fn fed() -> Scope {
    Scope::Federation("fed_0123abcd".parse().unwrap())
}

pub(crate) fn key() -> AuditKey {
    AuditKey::from_bytes([7; 32])
}

/// A `message` record, committed under `key()`.
pub(crate) fn message(seq: u64, payload_digest: &[u8; 48]) -> Record {
    let envelope = EnvelopeId([seq as u8; 16]);
    let (commitment, _) = key().commit(&envelope, payload_digest);
    Record {
        scope: fed(),
        seq,
        time: Timestamp(1_777_636_800_000 + seq),
        event: Event::Messages {
            direction: Delivery::Received,
            peer: mesh("plant-a"),
            batch: Some(BatchRef {
                number: 4,
                count: 9,
                root: merkle::leaf_hash(b"batch"),
            }),
            messages: vec![MessageDigest {
                envelope,
                source: mesh("plant-a"),
                destination: mesh("plant-b"),
                topic: "telemetry/line-1".into(),
                size: 1200,
                qos: 1,
                index: 2,
                commitment,
            }],
        },
    }
}

/// One record of every kind.
pub(crate) fn every_kind() -> Vec<Record> {
    let peer = mesh("plant-a");
    let events = vec![
        Event::Handshake {
            peer: Some(peer.clone()),
            role: Role::Initiator,
            step: HandshakeStep::PolicyAgreed { rounds: 2 },
        },
        Event::HandshakeFailed {
            peer: None,
            remote: "192.0.2.7:7443".into(),
            code: "untrusted_peer".into(),
            reason: "certificate not issued by the pinned CA".into(),
            count: 12,
            first: Timestamp(1_777_636_000_000),
            last: Timestamp(1_777_636_060_000),
        },
        Event::Agreement {
            peer: peer.clone(),
            version: 3,
            agreement_digest: [9; 48],
            policy: Terms::new(r#"{"topics":["telemetry/#"]}"#),
            cause: AgreementCause::Renegotiated,
        },
        Event::Lifecycle {
            peer: peer.clone(),
            from: FederationState::Active,
            to: FederationState::Terminated(Termination::Forced),
            by: By::Peer,
            reason: "key compromise".into(),
        },
        Event::Credential {
            action: CredentialAction::TokenRevoked,
            subject: "dashboard".into(),
            id: "tok_42".into(),
        },
        Event::Revocation {
            mesh: peer.clone(),
            number: 5,
            serials: vec!["0a1b".into(), "ff".into()],
            accepted: true,
            reason: "newer version".into(),
        },
        Event::Refused {
            direction: Direction::Inbound,
            peer: Some(peer.clone()),
            envelope: Some(EnvelopeId([3; 16])),
            topic: Some("telemetry/x".into()),
            reason: "bad_signature".parse().unwrap(),
            detail: "envelope signature does not verify".into(),
        },
        Event::Anomaly {
            peer: peer.clone(),
            topic: None,
            measure: "rate".into(),
            observed: 950.5,
            baseline: 100.25,
            action: "breaker_opened".into(),
        },
        Event::Breaker {
            peer: peer.clone(),
            from: "closed".into(),
            to: "open".into(),
            reason: "rate 9.5 times its baseline".into(),
        },
        Event::Countersigned {
            peer: peer.clone(),
            size: 77,
            root: merkle::leaf_hash(b"root"),
        },
        Event::Discrepancy {
            peer,
            what: "head at size 12 does not extend the one countersigned at 10".into(),
        },
        Event::Pruned {
            before_seq: 1000,
            records: 1000,
            reason: "retention 90 days".into(),
        },
    ];
    let mut out: Vec<Record> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Record {
            scope: fed(),
            seq: i as u64,
            time: Timestamp(1_777_636_800_000 + i as u64),
            event,
        })
        .collect();
    let mut m = message(out.len() as u64, &[1; 48]);
    m.scope = Scope::Node;
    out.push(m);
    out
}

#[test]
fn every_kind_round_trips_and_is_listed() {
    let records = every_kind();
    let mut kinds: Vec<&str> = records.iter().map(Record::kind).collect();
    kinds.sort_unstable();
    let mut listed = Event::KINDS.to_vec();
    listed.sort_unstable();
    assert_eq!(kinds, listed);
    for r in records {
        let bytes = r.to_bytes();
        assert_eq!(Record::from_bytes(&bytes).unwrap(), r, "{}", r.kind());
        assert_eq!(r.leaf_hash(), merkle::leaf_hash(&bytes));
    }
}

#[test]
fn json_view_is_flat_and_readable() {
    let r = message(3, &[1; 48]);
    let json = r.to_json();
    assert_eq!(json["scope"], "fed_0123abcd");
    assert_eq!(json["seq"], 3);
    assert_eq!(json["time"], "2026-05-01T12:00:00.003Z");
    assert_eq!(json["kind"], "messages");
    assert_eq!(json["direction"], "received");
    assert_eq!(json["peer"], "plant-a");
    assert_eq!(
        json["messages"][0]["envelope"],
        format!("fed_{}", "03".repeat(16))
    );
    assert_eq!(
        json["batch"]["root"],
        merkle::leaf_hash(b"batch").to_string()
    );
    let Event::Messages { messages, .. } = &r.event else {
        unreachable!()
    };
    assert_eq!(
        json["messages"][0]["commitment"],
        messages[0].commitment.to_string()
    );

    let records = every_kind();
    let lifecycle = records[3].to_json();
    assert_eq!(lifecycle["from"], "active");
    assert_eq!(lifecycle["to"], "terminated-forced");
    let failed = records[1].to_json();
    assert_eq!(failed["first"], "2026-05-01T11:46:40.000Z");
    assert_eq!(failed["peer"], serde_json::Value::Null);
    let handshake = records[0].to_json();
    assert_eq!(handshake["step"]["policy_agreed"]["rounds"], 2);
}

#[test]
fn scope_displays_and_parses_back() {
    assert_eq!(Scope::Node.to_string(), "node");
    assert_eq!("node".parse::<Scope>().unwrap(), Scope::Node);
    assert_eq!(fed().to_string().parse::<Scope>().unwrap(), fed());
    let err = "fed x".parse::<Scope>().unwrap_err();
    assert!(err.to_string().contains("invalid federation id"), "{err}");
}

#[test]
fn peer_is_the_other_end() {
    let r = message(0, &[1; 48]);
    assert_eq!(r.peer(), Some(&mesh("plant-a")));
    let records = every_kind();
    assert_eq!(records[4].peer(), None);
    assert_eq!(records[5].peer(), Some(&mesh("plant-a")));
}

#[test]
fn long_text_is_cut_at_a_character_boundary() {
    let t = Text::new("é".repeat(3000));
    assert!(t.as_str().len() <= Text::MAX);
    assert!(t.as_str().ends_with('…'));
    assert_eq!(Text::new("short").as_str(), "short");
}

fn with_reason(len: usize) -> Vec<u8> {
    // Built by hand: Text::new would cut it.
    let r = Record {
        scope: Scope::Node,
        seq: 0,
        time: Timestamp(0),
        event: Event::Discrepancy {
            peer: mesh("a"),
            what: Text("x".repeat(len)),
        },
    };
    r.to_bytes()
}

#[test]
fn decoding_refuses_too_long_text_and_too_many_serials() {
    assert!(Record::from_bytes(&with_reason(4096)).is_ok());
    let err = Record::from_bytes(&with_reason(4097)).unwrap_err();
    assert!(
        err.to_string()
            .contains("a text of 4097 bytes is longer than the 4096 allowed"),
        "{err}"
    );

    let r = Record {
        scope: Scope::Node,
        seq: 0,
        time: Timestamp(0),
        event: Event::Revocation {
            mesh: mesh("a"),
            number: 1,
            serials: vec!["1".into(); MAX_SERIALS + 1],
            accepted: false,
            reason: "".into(),
        },
    };
    let err = Record::from_bytes(&r.to_bytes()).unwrap_err();
    assert!(err.to_string().contains("more than 10000 serials"), "{err}");
}

/// `bytes` with the first `from` replaced by `to` (of the same length).
pub(crate) fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[test]
fn decoding_names_what_is_wrong() {
    let bytes = message(1, &[1; 48]).to_bytes();
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        Record::from_bytes(&trailing).unwrap_err().to_string(),
        "audit record is followed by 1 stray bytes"
    );
    assert_eq!(
        Record::from_bytes(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .to_string(),
        "audit record is malformed: the input ends early"
    );
    // Another kind name.
    let renamed = replace(&bytes, b"messages", b"massages");
    let err = Record::from_bytes(&renamed).unwrap_err();
    assert!(
        err.to_string().contains("unknown variant `massages`"),
        "{err}"
    );
    // A bad mesh id.
    let bad = replace(&bytes, b"plant-a", b"Plant-a");
    let err = Record::from_bytes(&bad).unwrap_err();
    assert!(err.to_string().contains("invalid mesh id"), "{err}");
    // Version 2.
    let mut v2 = bytes.clone();
    let at = v2.windows(2).position(|w| w == b"v\x01").unwrap();
    v2[at + 1] = 2;
    assert_eq!(
        Record::from_bytes(&v2).unwrap_err(),
        RecordError::Version(2)
    );
}

#[test]
fn decoding_refuses_a_second_encoding_of_the_same_record() {
    // seq 1 as a one-byte argument (0x18 0x01) instead of 0x01: the same value, another leaf.
    let bytes = message(1, &[1; 48]).to_bytes();
    let at = bytes.windows(4).position(|w| w == b"seq\x01").unwrap() + 3;
    let mut long = bytes[..at].to_vec();
    long.extend_from_slice(&[0x18, 0x01]);
    long.extend_from_slice(&bytes[at + 1..]);
    let err = Record::from_bytes(&long).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("audit record is not in the one encoding meshfed writes"),
        "{err}"
    );
}

#[test]
fn mac_binds_scope_seq_and_leaf() {
    let k = key();
    let leaf = merkle::leaf_hash(b"r");
    let mac = k.mac(&fed(), 4, &leaf);
    assert_eq!(mac, k.mac(&fed(), 4, &leaf));
    assert_ne!(mac, k.mac(&Scope::Node, 4, &leaf));
    assert_ne!(mac, k.mac(&fed(), 5, &leaf));
    assert_ne!(mac, k.mac(&fed(), 4, &merkle::leaf_hash(b"s")));
    assert_ne!(mac, AuditKey::from_bytes([8; 32]).mac(&fed(), 4, &leaf));
}

#[test]
fn commitment_opens_only_with_its_opening_and_digest() {
    let k = key();
    let id = EnvelopeId([5; 16]);
    let (c, opening) = k.commit(&id, &[1; 48]);
    assert!(c.check(&opening, &[1; 48]));
    assert!(!c.check(&opening, &[2; 48]));
    assert!(!c.check(&k.opening(&EnvelopeId([6; 16])), &[1; 48]));
    assert_eq!(opening, k.opening(&id));
    // The commitment is not the bare digest's hash: without the key it cannot be guessed.
    assert_ne!(c.0, meshfed_proto::crypto::sha384(&[1; 48]));
    assert_eq!(opening.to_string().parse::<Opening>().unwrap(), opening);
}

#[test]
fn generated_keys_differ() {
    let a = AuditKey::generate().unwrap();
    let b = AuditKey::generate().unwrap();
    assert_ne!(a.as_bytes(), b.as_bytes());
    assert_eq!(format!("{a:?}"), "AuditKey(…)");
}

fn text() -> impl Strategy<Value = Text> {
    "\\PC{0,40}".prop_map(Text::new)
}

fn mesh_id() -> impl Strategy<Value = MeshId> {
    "[a-z0-9][a-z0-9-]{0,20}".prop_map(|s| s.parse().unwrap())
}

fn hash() -> impl Strategy<Value = TreeHash> {
    any::<[u8; 32]>().prop_map(|b| merkle::leaf_hash(&b))
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (proptest::option::of(mesh_id()), any::<bool>(), 0u32..10).prop_map(|(peer, i, r)| {
            Event::Handshake {
                peer,
                role: if i { Role::Initiator } else { Role::Responder },
                step: if r == 0 {
                    HandshakeStep::Resumed
                } else {
                    HandshakeStep::PolicyAgreed { rounds: r }
                },
            }
        }),
        (
            proptest::option::of(mesh_id()),
            text(),
            text(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(peer, remote, reason, count, t)| Event::HandshakeFailed {
                peer,
                remote,
                code: "tls".into(),
                reason,
                count,
                first: Timestamp(t / 2),
                last: Timestamp(t),
            }),
        (mesh_id(), any::<u64>(), any::<[u8; 32]>(), "\\PC{0,100}").prop_map(
            |(peer, version, d, policy)| Event::Agreement {
                peer,
                version,
                agreement_digest: meshfed_proto::crypto::sha384(&d),
                policy: Terms::new(policy),
                cause: AgreementCause::CaughtUp,
            }
        ),
        (
            mesh_id(),
            proptest::collection::vec(text(), 0..20),
            any::<bool>()
        )
            .prop_map(|(mesh, serials, accepted)| Event::Revocation {
                mesh,
                number: 1,
                serials,
                accepted,
                reason: "".into(),
            }),
        (
            proptest::option::of(mesh_id()),
            proptest::option::of(any::<[u8; 16]>()),
            proptest::option::of(text()),
            text()
        )
            .prop_map(|(peer, envelope, topic, detail)| Event::Refused {
                direction: Direction::Outbound,
                peer,
                envelope: envelope.map(EnvelopeId),
                topic,
                reason: "too_large".parse().unwrap(),
                detail,
            }),
        (
            proptest::collection::vec(
                (
                    any::<[u8; 16]>(),
                    mesh_id(),
                    mesh_id(),
                    text(),
                    any::<u64>(),
                    0u8..3,
                    any::<u64>(),
                    hash()
                ),
                1..4
            ),
            mesh_id(),
            proptest::option::of((any::<u64>(), any::<u64>(), hash()))
        )
            .prop_map(|(messages, peer, batch)| Event::Messages {
                direction: Delivery::Sent,
                peer,
                batch: batch.map(|(number, count, root)| BatchRef {
                    number,
                    count,
                    root,
                }),
                messages: messages
                    .into_iter()
                    .map(
                        |(id, source, destination, topic, size, qos, index, c)| MessageDigest {
                            envelope: EnvelopeId(id),
                            source,
                            destination,
                            topic,
                            size,
                            qos,
                            index,
                            commitment: Commitment(*c.as_bytes()),
                        },
                    )
                    .collect(),
            }),
        (
            mesh_id(),
            proptest::option::of(text()),
            -1e12f64..1e12,
            -1e12f64..1e12
        )
            .prop_map(|(peer, topic, observed, baseline)| Event::Anomaly {
                peer,
                topic,
                measure: "size".into(),
                observed,
                baseline,
                action: "none".into(),
            }),
        (mesh_id(), any::<u64>(), hash()).prop_map(|(peer, size, root)| Event::Countersigned {
            peer,
            size,
            root
        }),
        (any::<u64>(), any::<u64>(), text()).prop_map(|(before_seq, records, reason)| {
            Event::Pruned {
                before_seq,
                records,
                reason,
            }
        }),
    ]
}

pub(crate) fn record() -> impl Strategy<Value = Record> {
    (
        proptest::option::of("[A-Za-z0-9_-]{1,40}"),
        any::<u64>(),
        any::<u64>(),
        event(),
    )
        .prop_map(|(scope, seq, time, event)| Record {
            scope: match scope {
                Some(s) if s != "node" => Scope::Federation(s.parse().unwrap()),
                _ => Scope::Node,
            },
            seq,
            time: Timestamp(time),
            event,
        })
}

proptest! {
    #[test]
    fn records_round_trip(r in record()) {
        let bytes = r.to_bytes();
        prop_assert_eq!(Record::from_bytes(&bytes), Ok(r.clone()));
        // The JSON view always serialises.
        let json = r.to_json();
        prop_assert_eq!(json["kind"].as_str(), Some(r.kind()));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(r) = Record::from_bytes(&bytes) {
            prop_assert_eq!(r.to_bytes(), bytes);
        }
    }

    #[test]
    fn a_changed_byte_is_refused_or_another_record(
        r in record(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut bytes = r.to_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Ok(other) = Record::from_bytes(&bytes) {
            prop_assert_ne!(&other, &r);
            prop_assert_eq!(other.to_bytes(), bytes);
        }
    }
}
