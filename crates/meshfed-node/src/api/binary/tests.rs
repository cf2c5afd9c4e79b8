use meshfed_proto::batch::merkle::path_len;
use proptest::prelude::*;

use super::*;

fn mesh(s: &str) -> MeshId {
    s.parse().unwrap()
}

/// Properties with every part: repeated names, a tab in a value, correlation data, reply-to.
fn properties() -> Properties {
    Properties::new(
        vec![
            ("trace".to_owned(), "00-4bf9-01".to_owned()),
            ("x-tag".to_owned(), "a\tb".to_owned()),
            ("x-tag".to_owned(), String::new()),
        ],
        Some(vec![0, 0xff, 7]),
        Some("replies/b".parse().unwrap()),
    )
    .unwrap()
}

fn publish() -> Publish {
    Publish {
        content_type: "text/plain".parse().unwrap(),
        qos: Qos::AtLeastOnce,
        priority: Priority::try_from(5).unwrap(),
        max_latency: Some(MaxLatency::try_from(1500u32).unwrap()),
        flags: Flags::RELIABLE.with(Flags::ORDERED),
        wait: true,
        properties: properties(),
        ..Publish::new(mesh("b"), "t/1".parse().unwrap(), b"hi".to_vec())
    }
}

/// An envelope with every optional part: encrypted, signed in a batch, opened.
fn envelope() -> Envelope {
    let root = TreeHash::from_bytes([7; HASH_LEN]);
    let audit_path = vec![9; 2 * HASH_LEN];
    Envelope {
        header: Header {
            version: Version::CURRENT,
            id: EnvelopeId([1; 16]),
            timestamp: Timestamp(1_700_000_000_123),
            source: Source {
                mesh: mesh("plant-a"),
                gateway: "gw1".parse().unwrap(),
            },
            destination: Destination {
                mesh: mesh("supplier-b"),
                gateway: Some("gw2".parse().unwrap()),
            },
            flags: Flags::RELIABLE.with(Flags::PROPERTIES),
            federation_id: "fed_abc".parse().unwrap(),
            agreement_version: 3,
            certificate: meshfed_proto::envelope::SignerCertificate::new(vec![0x30; 700]),
            encryption: Some(Encryption {
                cipher: Cipher::Aes256Gcm,
                key_id: "ck1_x".parse().unwrap(),
                iv: [4; IV_LEN],
            }),
            policy: DeliveryPolicy {
                priority: Priority::try_from(7).unwrap(),
                qos: Qos::ExactlyOnce,
                max_latency: Some(MaxLatency::try_from(5000u32).unwrap()),
                classification: None,
            },
            metadata: Metadata {
                topic: "line-3/temp".parse().unwrap(),
                content_type: "application/cbor".parse().unwrap(),
                content_encoding: Some(Label::parse("e", "gzip").unwrap()),
                schema_id: Some(Label::parse("s", "temp-v2").unwrap()),
            },
        },
        hop: Hop {
            path: vec![mesh("plant-a"), mesh("relay")],
            ttl: 8,
            hops: 1,
        },
        signature: Signature([3; SIGNATURE_LEN]),
        message: Some(vec![0, 1, 2, 255]),
        sender: Some(Sender {
            subject: "plant-buyer".into(),
            roles: vec!["purchasing".into(), "plant".into()],
            attributes: [("site".to_owned(), "north".to_owned())].into(),
            expires: None,
            credential: None,
        }),
        properties: properties(),
        batch: Some(BatchProof::from_parts(root, 4, 1, &audit_path).unwrap()),
    }
}

#[test]
fn a_publish_request_has_the_documented_layout() {
    let mut p = Publish::new(mesh("b"), "t".parse().unwrap(), b"hi".to_vec());
    p.qos = Qos::AtLeastOnce;
    p.priority = Priority::try_from(5).unwrap();
    p.flags = Flags::ORDERED;
    p.wait = true;
    p.max_latency = Some(MaxLatency::try_from(258u32).unwrap());
    p.content_type = "text/plain".parse().unwrap();
    let mut expected = vec![
        1, 0x01, 1, 5, 2, 1, 0, 0, 1, 2, 0, 1, b'b', 0, 1, b't', 0, 10,
    ];
    expected.extend_from_slice(b"text/plainhi");
    assert_eq!(p.encode(), expected);
    assert_eq!(Publish::decode(&expected).unwrap(), p);
}

#[test]
fn publish_requests_and_replies_round_trip() {
    let p = publish();
    assert_eq!(Publish::decode(&p.encode()).unwrap(), p);
    let empty = Publish::new(mesh("b"), "t".parse().unwrap(), Vec::new());
    assert_eq!(Publish::decode(&empty.encode()).unwrap(), empty);

    let id = EnvelopeId([0xab; 16]);
    let replies = [
        PublishReply::Accepted(MessageAccepted { id }),
        PublishReply::Acknowledged(MessageAcknowledged {
            id,
            status: super::super::models::DeliveryStatus::Acknowledged,
        }),
        PublishReply::Refused(ErrorBody {
            error: ErrorDetail {
                code: "queue_full".to_owned(),
                message: "the queue is full — später".to_owned(),
            },
        }),
    ];
    for reply in replies {
        let frame = encode_reply(&reply);
        assert_eq!(decode_reply(&frame).unwrap(), reply);
    }
    assert_eq!(
        encode_reply(&PublishReply::Accepted(MessageAccepted { id }))[..2],
        [1, 2]
    );
}

#[test]
fn an_error_message_too_long_for_its_length_is_cut_at_a_character() {
    let long = "é".repeat(40_000);
    let frame = encode_reply(&PublishReply::Refused(ErrorBody {
        error: ErrorDetail {
            code: "internal".to_owned(),
            message: long,
        },
    }));
    let Ok(PublishReply::Refused(body)) = decode_reply(&frame) else {
        panic!("not a refusal");
    };
    assert_eq!(body.error.message.len(), 65_534);
}

#[test]
fn envelopes_round_trip_with_every_part_and_without() {
    let e = envelope();
    let proof = vec![0xa1, 0x00];
    let d = Delivered::decode(&encode_envelope(&e, false, Some(&proof))).unwrap();
    assert_eq!(d.envelope, e);
    assert_eq!(d.proof, Some(proof));
    assert!(!d.unproven);

    let mut bare = envelope();
    bare.header.encryption = None;
    bare.header.destination.gateway = None;
    bare.header.metadata.content_encoding = None;
    bare.header.metadata.schema_id = None;
    bare.header.policy.max_latency = None;
    bare.batch = None;
    bare.message = None;
    let d = Delivered::decode(&encode_envelope(&bare, false, None)).unwrap();
    assert_eq!(d.envelope, bare);
    assert_eq!(d.proof, None);
}

#[test]
fn an_unproven_envelope_carries_no_signature_and_reads_with_zeros_as_its_json_does() {
    let e = envelope();
    let frame = encode_envelope(&e, true, None);
    assert_eq!(frame[2] & SIGNED, 0);
    let d = Delivered::decode(&frame).unwrap();
    assert!(d.unproven);
    let json = Envelope::from_json(&e.to_json_string_unproven()).unwrap();
    assert_eq!(d.envelope, json);
    assert_eq!(d.envelope.signature, Signature([0; SIGNATURE_LEN]));
    assert_eq!(d.envelope.batch, None);
}

#[test]
fn a_binary_envelope_reads_as_the_same_envelope_as_its_json() {
    let mut e = envelope();
    // JSON shows a text payload as text and reads it back as the same bytes.
    e.header.metadata.content_type = "text/plain".parse().unwrap();
    e.message = Some(b"21.5 C".to_vec());
    let from_json = Envelope::from_json(&e.to_json_string()).unwrap();
    let from_binary = Delivered::decode(&encode_envelope(&e, false, None)).unwrap();
    assert_eq!(from_binary.envelope, from_json);
}

fn error_of(frame: &[u8]) -> String {
    Publish::decode(frame).unwrap_err().to_string()
}

#[test]
fn a_malformed_publish_request_is_refused_naming_what_is_wrong() {
    let good = publish().encode();
    assert_eq!(
        error_of(&[]),
        "an empty frame: a binary frame starts with the format version (1) and the frame kind"
    );
    let mut v2 = good.clone();
    v2[0] = 2;
    assert_eq!(
        error_of(&v2),
        "format version 2: this gateway reads binary frames of version 1"
    );
    let mut kind = good.clone();
    kind[1] = 0x10;
    assert_eq!(
        error_of(&kind),
        "frame kind 0x10 is not a publish request (0x01)"
    );
    let mut qos = good.clone();
    qos[2] = 3;
    assert_eq!(error_of(&qos), "qos: must be 0, 1 or 2");
    let mut priority = good.clone();
    priority[3] = 8;
    assert_eq!(error_of(&priority), "priority: must be 0 to 7");
    let mut flags = good.clone();
    flags[4] = 32;
    assert!(error_of(&flags).starts_with("flags: only bits 0 (reliable)"));
    let mut options = good.clone();
    options[5] = 8;
    assert_eq!(
        error_of(&options),
        "options: 0x08: only bits 0 (wait), 1 (labels) and 2 (properties) are defined"
    );
    assert_eq!(
        error_of(&good[..12]),
        "to: the frame is cut short (1 of its bytes missing)"
    );
    let mut to = good.clone();
    to[12] = b'B';
    assert!(error_of(&to).starts_with("to: "), "{}", error_of(&to));
    let mut utf8 = good.clone();
    utf8[12] = 0xff;
    assert!(error_of(&utf8).starts_with("to: not UTF-8"));
    let mut topic = good.clone();
    topic[15] = b'#';
    assert!(
        error_of(&topic).starts_with("topic: "),
        "{}",
        error_of(&topic)
    );
}

/// A publish request for `b` on `t` whose properties are `block`, then the payload `hi`.
fn with_properties_block(block: &[u8]) -> Vec<u8> {
    let mut frame = vec![
        1, 0x01, 0, 0, 0, PROPERTIES, 0, 0, 0, 0, 0, 1, b'b', 0, 1, b't', 0, 0,
    ];
    frame.extend_from_slice(block);
    frame.extend_from_slice(b"hi");
    frame
}

#[test]
fn properties_have_the_documented_layout_and_a_bad_one_is_refused_naming_it() {
    // One user property, two bytes of correlation data, reply-to `r`.
    let block = [
        &[0, 1, 0, 1, b'k', 0, 1, b'v'][..],
        &[0, 0, 0, 2, 0xca, 0xfe],
        &[0, 1, b'r'],
    ]
    .concat();
    let read = Publish::decode(&with_properties_block(&block)).unwrap();
    let expected = Properties::new(
        vec![("k".to_owned(), "v".to_owned())],
        Some(vec![0xca, 0xfe]),
        Some("r".parse().unwrap()),
    )
    .unwrap();
    assert_eq!(read.properties, expected);
    assert_eq!(read.payload, b"hi");
    assert_eq!(Publish::decode(&read.encode()).unwrap(), read);
    // Empty correlation data and reply-to are none.
    let bare = Publish::decode(&with_properties_block(&[0, 0, 0, 0, 0, 0, 0, 0])).unwrap();
    assert!(bare.properties.is_empty());

    assert_eq!(
        error_of(&with_properties_block(&[0, 65])),
        "properties.user: 65 user properties, at most 64 are allowed"
    );
    assert_eq!(
        error_of(&with_properties_block(
            &[&[0, 1, 0, 1, b'k', 0, 2, b'\r', b'\n'][..], &[0; 6]].concat()
        )),
        "properties: user[0] \"k\": the value holds a control character ('\\r')"
    );
    let mut long = vec![0, 0, 0, 0, 1, 1];
    long.extend_from_slice(&[7; 257]);
    long.extend_from_slice(&[0, 0]);
    assert_eq!(
        error_of(&with_properties_block(&long)),
        "properties: correlation_data: is 257 bytes, at most 256 are allowed"
    );
    assert!(
        error_of(&with_properties_block(&[0, 0, 0, 0, 0, 0, 0, 1, b'#']))
            .starts_with("properties.reply_to: invalid topic \"#\"")
    );
}

#[test]
fn every_cut_short_frame_is_refused_without_panicking() {
    let publish = publish().encode();
    let payload_at = publish.len() - 2;
    for end in 0..payload_at {
        assert!(Publish::decode(&publish[..end]).is_err(), "{end}");
    }
    let mut e = envelope();
    e.message = None;
    let frame = encode_envelope(&e, false, Some(b"proof"));
    for end in 0..frame.len() {
        assert!(Delivered::decode(&frame[..end]).is_err(), "{end}");
    }
    let reply = encode_reply(&PublishReply::Accepted(MessageAccepted {
        id: EnvelopeId([0; 16]),
    }));
    for end in 0..reply.len() {
        assert!(decode_reply(&reply[..end]).is_err(), "{end}");
    }
}

#[test]
fn bytes_after_the_last_field_are_refused() {
    let mut reply = encode_reply(&PublishReply::Accepted(MessageAccepted {
        id: EnvelopeId([0; 16]),
    }));
    reply.push(0);
    assert_eq!(decode_reply(&reply).unwrap_err(), FrameError::Trailing(1));
    let mut e = envelope();
    e.message = None;
    let mut frame = encode_envelope(&e, false, None);
    frame.extend_from_slice(b"xy");
    assert_eq!(
        Delivered::decode(&frame).unwrap_err(),
        FrameError::Trailing(2)
    );
}

#[test]
fn a_batch_position_without_a_signature_is_refused() {
    let mut frame = encode_envelope(&envelope(), false, None);
    frame[2] &= !SIGNED;
    let err = Delivered::decode(&frame).unwrap_err().to_string();
    assert!(
        err.starts_with("parts: a batch position (bit 2) needs"),
        "{err}"
    );
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,20}"
}

prop_compose! {
    fn any_publish()(
        to in label(),
        topic in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}",
        content_type in prop_oneof![Just("application/json"), Just("text/plain; charset=utf-8"), Just("application/octet-stream")],
        qos in 0u8..3,
        priority in 0u8..8,
        max_latency in proptest::option::of(1u32..),
        flags in 0u8..8,
        wait in any::<bool>(),
        labels in (proptest::option::of("[!-~]{1,20}"), proptest::option::of("[!-~]{1,20}")),
        properties in any_properties(),
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
    ) -> Publish {
        Publish {
            to: to.parse().unwrap(),
            topic: topic.parse().unwrap(),
            content_type: content_type.parse().unwrap(),
            qos: Qos::try_from(qos).unwrap(),
            priority: Priority::try_from(priority).unwrap(),
            max_latency: max_latency.map(|m| MaxLatency::try_from(m).unwrap()),
            flags: Flags::from_bits(flags).unwrap(),
            wait,
            schema_id: labels.0.map(|l| Label::parse("s", &l).unwrap()),
            classification: labels.1.map(|l| Label::parse("c", &l).unwrap()),
            properties,
            payload,
        }
    }
}

prop_compose! {
    fn any_properties()(
        user in proptest::collection::vec(("[!-~]{1,12}", "[ -~\t]{0,40}"), 0..8),
        correlation in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=256)),
        reply_to in proptest::option::of("[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}"),
    ) -> Properties {
        Properties::new(user, correlation, reply_to.map(|t| t.parse().unwrap())).unwrap()
    }
}

prop_compose! {
    fn any_batch()(count in 1u32..64)(
        index in 0..count,
        count in Just(count),
        root in any::<[u8; 16]>(),
        fill in any::<u8>(),
    ) -> BatchProof {
        let hashes = path_len(u64::from(index), u64::from(count)).unwrap();
        let mut root48 = [0; HASH_LEN];
        root48[..16].copy_from_slice(&root);
        BatchProof::from_parts(TreeHash::from_bytes(root48), count, index, &vec![fill; hashes * HASH_LEN]).unwrap()
    }
}

prop_compose! {
    fn any_envelope()(
        id in any::<[u8; 16]>(),
        timestamp in any::<u64>(),
        minor in any::<u8>(),
        meshes in proptest::collection::vec(label(), 1..6),
        gateways in (label(), proptest::option::of(label())),
        federation_id in "[A-Za-z0-9_-]{1,40}",
        agreement_version in any::<u32>(),
        certificate in proptest::collection::vec(any::<u8>(), 1..1500),
        encryption in proptest::option::of(("[A-Za-z0-9_-]{1,20}", any::<[u8; 12]>())),
        policy in (0u8..8, 0u8..3, proptest::option::of(1u32..), proptest::option::of("[!-~]{1,20}")),
        labels in (proptest::option::of("[!-~]{1,20}"), proptest::option::of("[!-~]{1,20}")),
        hop in (any::<u8>(), any::<u8>()),
        flags in 0u8..32,
        properties in any_properties(),
        signature in any::<[u8; 32]>(),
        message in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..2048)),
        batch in proptest::option::of(any_batch()),
        sender in proptest::option::of((
            "[!-~]{1,20}",
            proptest::collection::vec("[!-~]{1,20}", 0..4),
            proptest::collection::btree_map("[a-z]{1,8}", "[ -~]{0,20}", 0..4),
            proptest::option::of(1u64..),
            proptest::option::of("[A-Za-z0-9._-]{1,900}"),
        )),
    ) -> Envelope {
        let mut sig = [0; SIGNATURE_LEN];
        sig[..32].copy_from_slice(&signature);
        Envelope {
            header: Header {
                version: Version { major: 1, minor },
                id: EnvelopeId(id),
                timestamp: Timestamp(timestamp),
                source: Source { mesh: meshes[0].parse().unwrap(), gateway: gateways.0.parse().unwrap() },
                destination: Destination {
                    mesh: meshes[meshes.len() - 1].parse().unwrap(),
                    gateway: gateways.1.map(|g| g.parse().unwrap()),
                },
                flags: Flags::from_bits(flags).unwrap(),
                federation_id: federation_id.parse().unwrap(),
                agreement_version,
                certificate: SignerCertificate::new(certificate),
                encryption: encryption.map(|(key_id, iv)| Encryption {
                    cipher: Cipher::Aes256Gcm,
                    key_id: key_id.parse().unwrap(),
                    iv,
                }),
                policy: DeliveryPolicy {
                    priority: Priority::try_from(policy.0).unwrap(),
                    qos: Qos::try_from(policy.1).unwrap(),
                    max_latency: policy.2.map(|m| MaxLatency::try_from(m).unwrap()),
                    classification: policy.3.map(|l| Label::parse("c", &l).unwrap()),
                },
                metadata: Metadata {
                    topic: "a/b".parse().unwrap(),
                    content_type: "application/octet-stream".parse().unwrap(),
                    content_encoding: labels.0.map(|l| Label::parse("e", &l).unwrap()),
                    schema_id: labels.1.map(|l| Label::parse("s", &l).unwrap()),
                },
            },
            hop: Hop {
                path: meshes.iter().map(|m| m.parse().unwrap()).collect(),
                ttl: hop.0,
                hops: hop.1,
            },
            signature: Signature(sig),
            message,
            sender: sender.map(|(subject, roles, attributes, expires, credential)| Sender { subject, roles, attributes, expires, credential }),
            // A frame carries properties when the envelope's flag says it does.
            properties: if flags & Flags::PROPERTIES.bits() != 0 { properties } else { Properties::default() },
            batch,
        }
    }
}

proptest! {
    #[test]
    fn any_publish_request_round_trips(p in any_publish()) {
        prop_assert_eq!(Publish::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn any_envelope_round_trips(
        e in any_envelope(),
        proof in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..512)),
    ) {
        let d = Delivered::decode(&encode_envelope(&e, false, proof.as_deref())).unwrap();
        prop_assert_eq!(d.envelope, e);
        prop_assert_eq!(d.proof, proof);
        prop_assert!(!d.unproven);
    }

    #[test]
    fn any_bytes_decode_to_a_frame_or_an_error_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        kind in prop_oneof![Just(PUBLISH), Just(ACCEPTED), Just(REFUSED), Just(ENVELOPE)],
    ) {
        let mut frame = vec![VERSION, kind];
        frame.extend_from_slice(&bytes);
        let _ = Publish::decode(&frame);
        let _ = decode_reply(&frame);
        let _ = Delivered::decode(&frame);
        let _ = Publish::decode(&bytes);
        let _ = Delivered::decode(&bytes);
    }
}
