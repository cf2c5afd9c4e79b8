//! Envelope round trips, tamper detection and decoder robustness.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use proptest::prelude::*;

use super::super::VerifyError;
use super::*;
use crate::crypto::{ContentSecret, KeyEpoch};

struct Fixture {
    signer: SigningKey,
    verifier: VerifyingKey,
    secret: ContentSecret,
    sealer: Sealer,
}

fn fixture() -> Fixture {
    let signer = SigningKey::generate().unwrap();
    let verifier = VerifyingKey::from_sec1(signer.public_key()).unwrap();
    let secret = ContentSecret::derive(b"ecdh shared secret", b"fed_test");
    let sealer = secret
        .sealer(&"plant-a".parse().unwrap(), KeyEpoch([9; 16]))
        .unwrap();
    Fixture {
        signer,
        verifier,
        secret,
        sealer,
    }
}

fn header(topic: &str) -> Header {
    Header {
        version: Version::CURRENT,
        id: EnvelopeId::new(Timestamp(1_621_234_567_890), [1; 10]),
        timestamp: Timestamp(1_621_234_567_890),
        source: Source {
            mesh: "plant-a".parse().unwrap(),
            gateway: "gw1".parse().unwrap(),
        },
        destination: Destination {
            mesh: "supplier-b".parse().unwrap(),
            gateway: Some("gw2".parse().unwrap()),
        },
        flags: Flags::RELIABLE.with(Flags::ORDERED),
        federation_id: "fed_plant-a_supplier-b".parse().unwrap(),
        agreement_version: 1,
        certificate: SignerCertificate::new(vec![0x30, 0x82, 1, 2, 3, 4]),
        encryption: None,
        policy: DeliveryPolicy {
            priority: Priority::try_from(2).unwrap(),
            qos: Qos::AtLeastOnce,
            max_latency: Some(MaxLatency::try_from(5000u32).unwrap()),
            classification: None,
        },
        metadata: Metadata {
            topic: topic.parse().unwrap(),
            content_type: ContentType::json(),
            content_encoding: Some(Label::parse("content_encoding", "utf-8").unwrap()),
            schema_id: Some(Label::parse("schema_id", "schema_12345").unwrap()),
        },
    }
}

fn sealed(fx: &mut Fixture, payload: &[u8]) -> WireEnvelope {
    let hop = Hop::origin("plant-a".parse().unwrap(), Hop::DEFAULT_TTL);
    WireEnvelope::seal(
        header("line-3/temperature"),
        hop,
        payload,
        &mut fx.sealer,
        &fx.signer,
    )
    .unwrap()
}

/// An envelope whose header names a certificate of a real one's size (600 bytes of 0x30).
fn sealed_naming_a_600_byte_certificate(fx: &mut Fixture) -> WireEnvelope {
    let mut h = header("line-3/temp");
    h.certificate = SignerCertificate::new(vec![0x30; 600]);
    let hop = Hop::origin("plant-a".parse().unwrap(), 8);
    WireEnvelope::seal(h, hop, b"{}", &mut fx.sealer, &fx.signer).unwrap()
}

fn open(fx: &Fixture, bytes: &[u8]) -> Result<(WireEnvelope, Vec<u8>), EnvelopeError> {
    let env = WireEnvelope::decode(bytes)?;
    env.verify(&fx.verifier)?;
    let key_id = &env
        .header()
        .encryption
        .as_ref()
        .ok_or(EnvelopeError::NotEncrypted)?
        .key_id;
    let opener = fx.secret.opener(&env.header().source.mesh, key_id).unwrap();
    let clear = env.open(&opener)?;
    Ok((env, clear))
}

#[test]
fn sealed_envelope_round_trips_through_the_wire() {
    let mut fx = fixture();
    let env = sealed(&mut fx, br#"{"celsius":21.5}"#);
    assert_ne!(
        env.payload(),
        br#"{"celsius":21.5}"#,
        "payload must be encrypted"
    );
    let (back, clear) = open(&fx, &env.encode()).unwrap();
    assert_eq!(back, env);
    assert_eq!(clear, br#"{"celsius":21.5}"#);
}

#[test]
fn header_names_the_certificate_by_digest_and_only_a_file_carries_it() {
    let mut fx = fixture();
    let env = sealed_naming_a_600_byte_certificate(&mut fx);
    // 48 bytes of digest in the signed header, not 600 of DER.
    assert!(
        env.header_bytes().len() < 400,
        "{}",
        env.header_bytes().len()
    );
    assert!(!env.header_bytes().windows(64).any(|w| w == [0x30; 64]));
    let on_link = WireEnvelope::decode(&env.encode_on_link()).unwrap();
    assert_eq!(on_link.header().certificate.der(), None);
    assert_eq!(on_link.header(), env.header());
    on_link.verify(&fx.verifier).unwrap();
    let alone = WireEnvelope::decode(&env.encode()).unwrap();
    assert_eq!(alone.header().certificate.der().map(|d| d.len()), Some(600));
    // The JSON shows the DER where known, else the digest; both read back.
    for (e, shown) in [
        (&alone, B64.encode([0x30; 600])),
        (&on_link, env.header().certificate.digest_name()),
    ] {
        let json = e.to_envelope(None).to_json_string();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["federation"]["security"]["certificate"], shown.as_str());
        assert_eq!(Envelope::from_json(&json).unwrap().header, *env.header());
    }
}

#[test]
fn a_certificate_made_again_from_the_same_der_is_the_same_and_another_der_is_not() {
    let a = SignerCertificate::new(vec![0x30; 600]);
    let again = SignerCertificate::new(vec![0x30; 600]);
    let b = SignerCertificate::new(vec![0x31; 600]);
    assert_eq!(a.digest(), &crate::crypto::sha384(&[0x30; 600]));
    assert_eq!(again, a);
    // Kept from the first: the DER is shared, not hashed again.
    assert!(Arc::ptr_eq(again.der().unwrap(), a.der().unwrap()));
    assert_eq!(b.digest(), &crate::crypto::sha384(&[0x31; 600]));
    assert_ne!(b, a);
    assert_eq!(SignerCertificate::new(vec![0x30; 600]), a);
}

#[test]
fn a_carried_certificate_that_is_not_the_named_one_is_refused() {
    let mut fx = fixture();
    let env = sealed_naming_a_600_byte_certificate(&mut fx);
    let mut bytes = env.encode();
    // The certificate is the array's last element.
    *bytes.last_mut().unwrap() ^= 1;
    match WireEnvelope::decode(&bytes) {
        Err(EnvelopeError::InvalidField {
            field: "security.certificate",
            reason,
        }) => {
            assert!(reason.contains("not the one the header names"), "{reason}");
        }
        other => panic!("a substituted certificate was accepted: {other:?}"),
    }
}

#[test]
fn headers_the_hand_reader_leaves_to_ciborium_read_as_before() {
    let h = header("line-3/temp");
    let map = |h: &Header| -> Vec<(ciborium::Value, ciborium::Value)> {
        match ciborium::from_reader(&encode_header(h)[..]).unwrap() {
            ciborium::Value::Map(m) => m,
            other => panic!("{other:?}"),
        }
    };
    let write = |m: Vec<(ciborium::Value, ciborium::Value)>| {
        let mut out = Vec::new();
        ciborium::into_writer(&ciborium::Value::Map(m), &mut out).unwrap();
        out
    };
    // An unknown key (a later minor version's field) is skipped either way.
    let mut extra = map(&h);
    extra.push((
        "zz".into(),
        ciborium::Value::Array(vec![1.into(), "x".into()]),
    ));
    let bytes = write(extra);
    assert!(fields(&bytes).is_some());
    assert_eq!(decode_header(&bytes).unwrap(), h);
    // A repeated field, a null optional, a missing field: ciborium decides, and names it.
    let mut twice = map(&h);
    twice.push(("top".into(), "other/topic".into()));
    let bytes = write(twice);
    assert!(fields(&bytes).is_none());
    let err = decode_header(&bytes).unwrap_err();
    assert!(err.to_string().contains("duplicate field"), "{err}");
    let mut null = map(&h);
    null.push(("dgw".into(), ciborium::Value::Null));
    null.retain(|(k, v)| k.as_text() != Some("dgw") || v.is_null());
    let bytes = write(null);
    assert!(fields(&bytes).is_none());
    assert_eq!(decode_header(&bytes).unwrap().destination.gateway, None);
    let mut missing = map(&h);
    missing.retain(|(k, _)| k.as_text() != Some("ts"));
    let bytes = write(missing);
    assert!(fields(&bytes).is_none());
    let err = decode_header(&bytes).unwrap_err();
    assert!(err.to_string().contains("missing field `ts`"), "{err}");
}

#[test]
fn a_header_that_carries_the_certificate_itself_still_reads() {
    // Headers signed or stored before envelopes named the certificate by digest carry its DER
    // under `cert`.
    let h = header("line-3/temp");
    let mut map: Vec<(ciborium::Value, ciborium::Value)> =
        match ciborium::from_reader(&encode_header(&h)[..]).unwrap() {
            ciborium::Value::Map(m) => m,
            other => panic!("{other:?}"),
        };
    let der = vec![0x30, 0x82, 1, 2, 3, 4];
    map.retain(|(k, _)| k.as_text() != Some("crt"));
    map.push(("cert".into(), ciborium::Value::Bytes(der.clone())));
    let mut old = Vec::new();
    ciborium::into_writer(&ciborium::Value::Map(map), &mut old).unwrap();
    let back = decode_header(&old).unwrap();
    assert_eq!(decode_header_with_ciborium(&old).unwrap(), back);
    assert_eq!(back.certificate.der().map(|d| d.to_vec()), Some(der));
    assert_eq!(back, h);
    // Neither form: refused, naming the field.
    let mut none: Vec<(ciborium::Value, ciborium::Value)> =
        match ciborium::from_reader(&encode_header(&h)[..]).unwrap() {
            ciborium::Value::Map(m) => m,
            other => panic!("{other:?}"),
        };
    none.retain(|(k, _)| k.as_text() != Some("crt"));
    let mut bytes = Vec::new();
    ciborium::into_writer(&ciborium::Value::Map(none), &mut bytes).unwrap();
    assert_eq!(
        decode_header(&bytes).unwrap_err(),
        invalid("security.certificate", "is missing")
    );
}

#[test]
fn two_envelopes_never_share_a_nonce() {
    let mut fx = fixture();
    let a = sealed(&mut fx, b"{}");
    let b = sealed(&mut fx, b"{}");
    let iv = |e: &WireEnvelope| e.header().encryption.as_ref().unwrap().iv;
    assert_ne!(iv(&a), iv(&b));
    assert_ne!(a.payload(), b.payload());
}

#[test]
fn altered_header_is_a_bad_signature() {
    let mut fx = fixture();
    let mut env = sealed(&mut fx, b"{}");
    // Change one byte inside the topic string: the header still decodes, the signature fails.
    let at = find(&env.header_bytes, b"temperature");
    env.header_bytes[at] = b'T';
    env.header = decode_header(&env.header_bytes).unwrap();
    assert_eq!(
        open(&fx, &env.encode()).unwrap_err(),
        EnvelopeError::BadSignature
    );
}

#[test]
fn header_that_no_longer_decodes_is_malformed() {
    let mut fx = fixture();
    let mut env = sealed(&mut fx, b"{}");
    env.header_bytes[0] = 0xff;
    let err = WireEnvelope::decode(&env.encode()).unwrap_err();
    assert!(matches!(err, EnvelopeError::MalformedHeader(_)), "{err}");
}

#[test]
fn altered_signature_is_a_bad_signature() {
    let mut fx = fixture();
    let mut env = sealed(&mut fx, b"{}");
    env.signature.0[40] ^= 1;
    assert_eq!(
        open(&fx, &env.encode()).unwrap_err(),
        EnvelopeError::BadSignature
    );
}

#[test]
fn altered_ciphertext_or_tag_is_an_altered_payload() {
    let mut fx = fixture();
    let env = sealed(&mut fx, b"{\"a\":1}");
    for at in [0, env.payload.len() - 1] {
        let mut bad = env.clone();
        bad.payload[at] ^= 0x80;
        assert_eq!(
            open(&fx, &bad.encode()).unwrap_err(),
            EnvelopeError::PayloadAltered,
            "byte {at}"
        );
    }
}

#[test]
fn altered_digest_is_a_bad_signature() {
    let mut fx = fixture();
    let mut env = sealed(&mut fx, b"{}");
    env.digest[0] ^= 1;
    assert_eq!(
        open(&fx, &env.encode()).unwrap_err(),
        EnvelopeError::BadSignature
    );
}

#[test]
fn ciphertext_that_fails_its_tag_is_a_decryption_failure() {
    // Someone holding the signing key but re-signing altered ciphertext still fails at the tag.
    let mut fx = fixture();
    let env = sealed(&mut fx, b"{}");
    let mut payload = env.payload.clone();
    payload[0] ^= 1;
    let digest = sha384(&payload);
    let resigned = WireEnvelope::sign(
        env.header.clone(),
        env.header_bytes.clone(),
        env.hop.clone(),
        payload,
        digest,
        &fx.signer,
    )
    .unwrap();
    let err = open(&fx, &resigned.encode()).unwrap_err();
    assert!(matches!(err, EnvelopeError::DecryptionFailed(_)), "{err}");
}

#[test]
fn opening_with_another_key_names_both_keys() {
    let mut fx = fixture();
    let env = sealed(&mut fx, b"{}");
    let other = fx
        .secret
        .opener(&"plant-a".parse().unwrap(), &KeyEpoch([1; 16]).key_id())
        .unwrap();
    let err = env.open(&other).unwrap_err().to_string();
    assert!(
        err.contains("ck1_0909") && err.contains("ck1_0101"),
        "{err}"
    );
}

#[test]
fn sealing_for_another_source_mesh_is_refused() {
    let mut fx = fixture();
    let mut h = header("a/b");
    h.source.mesh = "intruder".parse().unwrap();
    let hop = Hop::origin(h.source.mesh.clone(), 4);
    let err = WireEnvelope::seal(h, hop, b"{}", &mut fx.sealer, &fx.signer).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the content key is for mesh plant-a, but the envelope's source is intruder"
    );
}

#[test]
fn envelope_signed_by_another_key_is_refused() {
    let mut fx = fixture();
    let env = sealed(&mut fx, b"{}");
    let stranger = SigningKey::generate().unwrap();
    let stranger = VerifyingKey::from_sec1(stranger.public_key()).unwrap();
    assert_eq!(env.verify(&stranger), Err(EnvelopeError::BadSignature));
}

#[test]
fn no_single_bit_flip_yields_different_verified_content() {
    let mut fx = fixture();
    let env = sealed(&mut fx, br#"{"celsius":21.5}"#);
    let bytes = env.encode();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        if let Ok((back, clear)) = open(&fx, &bad) {
            // Only the unsigned hop fields may change; they are protected by the link's TLS.
            assert_eq!(
                back.header(),
                env.header(),
                "byte {i} changed the header undetected"
            );
            assert_eq!(
                clear, br#"{"celsius":21.5}"#,
                "byte {i} changed the payload undetected"
            );
            assert_ne!(
                back.hop, env.hop,
                "byte {i}: identical result from different bytes"
            );
        }
    }
}

#[test]
fn clear_envelope_verifies_and_refuses_open() {
    let fx = fixture();
    let hop = Hop::origin("plant-a".parse().unwrap(), 4);
    let env = WireEnvelope::sign_clear(header("a/b"), hop, b"{}".to_vec(), &fx.signer).unwrap();
    let back = WireEnvelope::decode(&env.encode()).unwrap();
    back.verify(&fx.verifier).unwrap();
    assert_eq!(back.clear_payload().unwrap(), b"{}");
    let opener = fx
        .secret
        .opener(&"plant-a".parse().unwrap(), &KeyEpoch([0; 16]).key_id())
        .unwrap();
    assert_eq!(back.open(&opener), Err(EnvelopeError::NotEncrypted));
}

#[test]
fn the_agreement_version_is_signed_and_shown_under_security_once_stamped() {
    let mut fx = fixture();
    let mut h = header("line-3/temperature");
    h.agreement_version = 7;
    let env = WireEnvelope::seal(
        h.clone(),
        Hop::origin("plant-a".parse().unwrap(), Hop::DEFAULT_TTL),
        b"{}",
        &mut fx.sealer,
        &fx.signer,
    )
    .unwrap();
    let (back, _) = open(&fx, &env.encode()).unwrap();
    assert_eq!(back.header().agreement_version, 7);
    let json = env.to_envelope(Some(b"{}".to_vec())).to_json();
    assert_eq!(json["federation"]["security"]["agreement_version"], 7);
    let again = Envelope::from_json(&json.to_string()).unwrap();
    assert_eq!(again.header.agreement_version, 7);

    // Altering it breaks the signature like any header field.
    let mut other = h.clone();
    other.agreement_version = 8;
    assert_ne!(other.encode(), h.encode());

    // Not yet stamped (0): left out of both forms, read back as 0.
    h.agreement_version = 0;
    assert!(!h.encode().windows(3).any(|w| w == b"agr"));
    assert_eq!(Header::decode(&h.encode()).unwrap().agreement_version, 0);
}

#[test]
fn json_has_the_spec_layout() {
    let mut fx = fixture();
    let env = sealed(&mut fx, br#"{"celsius":21.5}"#);
    let json = env
        .to_envelope(Some(br#"{"celsius":21.5}"#.to_vec()))
        .to_json();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&json), ["federation", "message"]);
    let f = &json["federation"];
    assert_eq!(
        keys(f),
        [
            "destination_mesh",
            "id",
            "metadata",
            "policy",
            "routing",
            "security",
            "source_mesh",
            "timestamp",
            "version"
        ]
    );
    assert_eq!(keys(&f["source_mesh"]), ["gateway_id", "id"]);
    assert_eq!(keys(&f["routing"]), ["flags", "hops", "path", "ttl"]);
    assert_eq!(
        keys(&f["security"]),
        [
            "agreement_version",
            "certificate",
            "encryption",
            "federation_id",
            "signature"
        ]
    );
    assert_eq!(
        keys(&f["security"]["encryption"]),
        ["algorithm", "iv", "key_id"]
    );
    assert_eq!(keys(&f["policy"]), ["max_latency", "priority", "qos"]);
    assert_eq!(
        keys(&f["metadata"]),
        ["content_encoding", "content_type", "schema_id", "topic"]
    );
    assert_eq!(f["version"], "1.0");
    assert_eq!(f["timestamp"], 1_621_234_567_890u64);
    assert_eq!(
        f["routing"]["flags"],
        serde_json::json!(["reliable", "ordered"])
    );
    assert_eq!(f["security"]["encryption"]["algorithm"], "AES-256-GCM");
    assert_eq!(f["policy"]["max_latency"], 5000);
    assert_eq!(json["message"], serde_json::json!({"celsius": 21.5}));
}

#[test]
fn json_round_trips_both_ways() {
    let mut fx = fixture();
    let wire = sealed(&mut fx, br#"{"celsius":21.5}"#);
    let model = wire.to_envelope(Some(br#"{"celsius":21.5}"#.to_vec()));
    let text = model.to_json().to_string();
    let back = Envelope::from_json(&text).unwrap();
    assert_eq!(back, model);
    assert_eq!(back.to_json().to_string(), text);
}

#[test]
fn a_sealed_sender_crosses_inside_the_ciphertext_and_shows_beside_the_message() {
    let mut fx = fixture();
    let erp = crate::envelope::Sender {
        subject: "erp".into(),
        roles: vec!["buyer".into()],
        attributes: [("site".to_owned(), "north".to_owned())].into(),
        expires: None,
        credential: None,
    };
    let mut h = header("line-3/temperature");
    h.flags = Flags::IDENTIFIED;
    let sealed_part = erp.wrap(br#"{"celsius":21.5}"#).unwrap();
    let hop = Hop::origin("plant-a".parse().unwrap(), Hop::DEFAULT_TTL);
    let wire = WireEnvelope::seal(h, hop, &sealed_part, &mut fx.sealer, &fx.signer).unwrap();
    // A relay sees neither the subject nor the role.
    let bytes = wire.encode();
    assert!(!bytes.windows(5).any(|w| w == b"buyer"));
    let (wire, opened) = open(&fx, &bytes).unwrap();
    let (sender, payload) = crate::envelope::Sender::unwrap(wire.header().flags, opened).unwrap();
    assert_eq!(payload, br#"{"celsius":21.5}"#);
    let mut model = wire.to_envelope(Some(payload));
    model.sender = sender;
    let json = model.to_json();
    assert_eq!(
        json["sender"],
        serde_json::json!({"subject": "erp", "roles": ["buyer"], "attributes": {"site": "north"}})
    );
    assert_eq!(
        json["federation"]["routing"]["flags"],
        serde_json::json!(["identified"])
    );
    assert_eq!(Envelope::from_json(&json.to_string()).unwrap(), model);
    let mut bad = json.clone();
    bad["sender"]["subject"] = "".into();
    assert_eq!(
        Envelope::from_json(&bad.to_string())
            .unwrap_err()
            .to_string(),
        "envelope JSON field sender: subject \"\" must be 1 to 256 bytes"
    );
}

fn request_properties() -> crate::envelope::Properties {
    crate::envelope::Properties::new(
        vec![
            ("traceparent".into(), "00-4bf92f35-01".into()),
            ("x-tag".into(), "first".into()),
            ("x-tag".into(), "second".into()),
        ],
        Some(b"req-0042".to_vec()),
        Some("replies/plant-a/erp".parse().unwrap()),
    )
    .unwrap()
}

#[test]
fn sealed_properties_cross_inside_the_ciphertext_after_the_sender_and_show_in_the_metadata() {
    use crate::envelope::{Properties, Sender};
    let mut fx = fixture();
    let erp = Sender {
        subject: "erp".into(),
        ..Sender::default()
    };
    let mut h = header("line-3/temperature");
    h.flags = Flags::IDENTIFIED.with(Flags::PROPERTIES);
    let payload = br#"{"celsius":21.5}"#;
    let sealed_part = erp.wrap(&request_properties().wrap(payload)).unwrap();
    let hop = Hop::origin("plant-a".parse().unwrap(), Hop::DEFAULT_TTL);
    let wire = WireEnvelope::seal(h, hop, &sealed_part, &mut fx.sealer, &fx.signer).unwrap();
    // A relay sees no name, value, correlation data or reply-to.
    let bytes = wire.encode();
    for secret in [
        &b"traceparent"[..],
        b"4bf92f35",
        b"req-0042",
        b"replies/plant-a",
    ] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "{} in clear",
            String::from_utf8_lossy(secret)
        );
    }
    let (wire, opened) = open(&fx, &bytes).unwrap();
    let flags = wire.header().flags;
    let (sender, rest) = Sender::unwrap(flags, opened).unwrap();
    let (properties, message) = Properties::unwrap(flags, rest).unwrap();
    assert_eq!(message, payload);
    assert_eq!(properties, request_properties());
    let mut model = wire.to_envelope(Some(message));
    model.sender = sender;
    model.properties = properties;
    let json = model.to_json();
    assert_eq!(
        json["federation"]["metadata"]["properties"],
        serde_json::json!({
            "user": [["traceparent", "00-4bf92f35-01"], ["x-tag", "first"], ["x-tag", "second"]],
            "correlation_data": B64.encode(b"req-0042"),
            "reply_to": "replies/plant-a/erp",
        })
    );
    assert_eq!(
        json["federation"]["routing"]["flags"],
        serde_json::json!(["identified", "properties"])
    );
    assert_eq!(Envelope::from_json(&json.to_string()).unwrap(), model);
    // Without properties the member is left out, and reads back as none.
    model.properties = Properties::default();
    let json = model.to_json();
    assert!(
        json["federation"]["metadata"].get("properties").is_none(),
        "{json:#}"
    );
    assert_eq!(Envelope::from_json(&json.to_string()).unwrap(), model);
}

#[test]
fn properties_of_a_clear_payload_are_in_front_of_it_as_when_sealed() {
    use crate::envelope::Properties;
    let fx = fixture();
    let mut h = header("a/b");
    h.flags = Flags::PROPERTIES;
    let hop = Hop::origin("plant-a".parse().unwrap(), 4);
    let wire =
        WireEnvelope::sign_clear(h, hop, request_properties().wrap(b"{}"), &fx.signer).unwrap();
    let back = WireEnvelope::decode(&wire.encode()).unwrap();
    back.verify(&fx.verifier).unwrap();
    let clear = back.clear_payload().unwrap().to_vec();
    let (properties, message) = Properties::unwrap(back.header().flags, clear).unwrap();
    assert_eq!(
        (properties, message.as_slice()),
        (request_properties(), &b"{}"[..])
    );
}

#[test]
fn json_properties_that_break_a_rule_are_refused_naming_the_property() {
    let mut fx = fixture();
    let mut model = sealed(&mut fx, b"{}").to_envelope(Some(b"{}".to_vec()));
    model.properties = request_properties();
    let json = model.to_json();
    let cases = [
        (
            "/federation/metadata/properties/user/1/0",
            serde_json::json!(""),
            "envelope JSON field federation.metadata.properties: user[1]: the name is empty",
        ),
        (
            "/federation/metadata/properties/correlation_data",
            serde_json::json!("not base64!"),
            "envelope JSON field federation.metadata.properties.correlation_data: is not base64",
        ),
        (
            "/federation/metadata/properties/correlation_data",
            serde_json::json!(B64.encode([1; 300])),
            "envelope JSON field federation.metadata.properties: correlation_data: is 300 bytes, \
             at most 256 are allowed",
        ),
        (
            "/federation/metadata/properties/reply_to",
            serde_json::json!("replies/+"),
            "invalid topic \"replies/+\"",
        ),
        (
            "/federation/metadata/properties/user/0",
            serde_json::json!(["a", "b", "c"]),
            "envelope JSON: ",
        ),
    ];
    for (pointer, value, expect) in cases {
        let mut bad = json.clone();
        *bad.pointer_mut(pointer).unwrap() = value;
        let err = Envelope::from_json(&bad.to_string())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(expect) || err.contains(expect),
            "{pointer}: {err}"
        );
    }
    let mut extra = json.clone();
    extra["federation"]["metadata"]["properties"]["expiry"] = serde_json::json!(5);
    let err = Envelope::from_json(&extra.to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `expiry`"), "{err}");
}

#[test]
fn json_messages_follow_the_content_type() {
    let fx = fixture();
    let hop = Hop::origin("plant-a".parse().unwrap(), 4);
    for (ct, payload, shown) in [
        ("text/plain", b"hello".to_vec(), serde_json::json!("hello")),
        (
            "application/octet-stream",
            vec![0, 159, 146, 150],
            serde_json::json!("AJ+Slg=="),
        ),
    ] {
        let mut h = header("a/b");
        h.metadata.content_type = ct.parse().unwrap();
        let env = WireEnvelope::sign_clear(h, hop.clone(), payload.clone(), &fx.signer).unwrap();
        let model = env.to_envelope(Some(payload));
        let json = model.to_json();
        assert_eq!(json["message"], shown, "{ct}");
        assert_eq!(Envelope::from_json(&json.to_string()).unwrap(), model);
    }
}

#[test]
fn json_errors_name_the_field() {
    let mut fx = fixture();
    let wire = sealed(&mut fx, b"{}");
    let json = wire.to_envelope(None).to_json();
    let cases = [
        (
            "/federation/policy/priority",
            serde_json::json!(9),
            "priority 9: must be 0 to 7",
        ),
        (
            "/federation/source_mesh/id",
            serde_json::json!("Mesh_A"),
            "invalid mesh id \"Mesh_A\"",
        ),
        (
            "/federation/routing/flags",
            serde_json::json!(["urgent"]),
            "federation.routing.flags",
        ),
        (
            "/federation/security/signature",
            serde_json::json!("AAAA"),
            "is 3 bytes, not 96",
        ),
        (
            "/federation/security/encryption/algorithm",
            serde_json::json!("DES"),
            "not \"AES-256-GCM\"",
        ),
    ];
    for (pointer, value, expect) in cases {
        let mut bad = json.clone();
        *bad.pointer_mut(pointer).unwrap() = value;
        let err = Envelope::from_json(&bad.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expect), "{pointer}: {err}");
    }
    let mut extra = json.clone();
    extra["federation"]["surprise"] = serde_json::json!(1);
    let err = Envelope::from_json(&extra.to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `surprise`"), "{err}");
}

/// A batch of `n` clear JSON envelopes signed by `fx`, and envelope `index` of it as the logical
/// envelope (signature and position of the batch, clear message).
fn batch_member(fx: &Fixture, n: u8, index: u32) -> Envelope {
    let hop = Hop::origin("plant-a".parse().unwrap(), Hop::DEFAULT_TTL);
    let envelopes = (0..n)
        .map(|i| {
            let mut h = header("line-3/temperature");
            h.id = EnvelopeId::new(h.timestamp, [i; 10]);
            let payload = format!(r#"{{"celsius":{i}}}"#).into_bytes();
            crate::batch::UnsignedEnvelope::clear(h, hop.clone(), payload)
        })
        .collect();
    let batch = crate::batch::SignedBatch::sign(envelopes, &fx.signer).unwrap();
    let proven = batch.proof(index).unwrap();
    let message = proven.envelope().payload().to_vec();
    proven.to_envelope(Some(message))
}

/// Verifies `env` as a reader of its JSON can: re-encoded header bytes, digest of the clear message.
fn verify_json_form(env: &Envelope, key: &VerifyingKey) -> Result<(), VerifyError> {
    let digest = env.clear_payload_digest().unwrap();
    env.verify(&env.header_bytes(), &digest, key)
}

#[test]
fn batch_signed_envelope_json_shows_its_batch_and_round_trips() {
    let fx = fixture();
    let env = batch_member(&fx, 5, 3);
    let json = env.to_json();
    let batch = &json["federation"]["security"]["batch"];
    let mut keys: Vec<&String> = batch.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["count", "index", "proof", "root"]);
    assert_eq!(batch["count"], 5);
    assert_eq!(batch["index"], 3);
    let proof_b64 = batch["proof"].as_str().unwrap();
    // Leaf 3 of 5 has two siblings (leaf 2, then the hash of leaves 0 and 1) plus leaf 4's subtree.
    assert_eq!(B64.decode(proof_b64).unwrap().len(), 3 * 48);
    assert_eq!(
        B64.decode(batch["root"].as_str().unwrap()).unwrap().len(),
        48
    );
    let back = Envelope::from_json(&json.to_string()).unwrap();
    assert_eq!(back, env);
    assert_eq!(back.to_json(), json);
    verify_json_form(&back, &fx.verifier).unwrap();
}

#[test]
fn envelope_signed_alone_has_no_batch_key_and_verifies_through_the_same_call() {
    let fx = fixture();
    let payload = br#"{"celsius":21.5}"#.to_vec();
    let hop = Hop::origin("plant-a".parse().unwrap(), 4);
    let wire = WireEnvelope::sign_clear(header("a/b"), hop, payload.clone(), &fx.signer).unwrap();
    let env = wire.to_envelope(Some(payload));
    let json = env.to_json();
    assert!(
        json["federation"]["security"].get("batch").is_none(),
        "{json:#}"
    );
    assert_eq!(env.header_bytes(), wire.header_bytes());
    env.verify(wire.header_bytes(), wire.payload_digest(), &fx.verifier)
        .unwrap();
    let mut forged = env.clone();
    forged.signature.0[10] ^= 1;
    assert_eq!(
        verify_json_form(&forged, &fx.verifier),
        Err(VerifyError::Envelope(EnvelopeError::BadSignature))
    );
    let mut with_null = json.clone();
    with_null["federation"]["security"]["batch"] = serde_json::Value::Null;
    assert_eq!(Envelope::from_json(&with_null.to_string()).unwrap(), env);
}

#[test]
fn batch_member_signed_by_another_key_does_not_verify() {
    let fx = fixture();
    let other = fixture();
    let env = batch_member(&fx, 4, 1);
    let err = verify_json_form(&env, &other.verifier).unwrap_err();
    assert_eq!(
        err,
        VerifyError::Batch(crate::batch::BatchError::BadSignature)
    );
    assert!(
        err.to_string()
            .starts_with("batch signature does not verify over its root and count"),
        "{err}"
    );
}

/// What a reader of `json` after `edit` is told: the parse error, or why it does not verify.
fn tampered(
    json: &serde_json::Value,
    key: &VerifyingKey,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    let mut bad = json.clone();
    edit(&mut bad);
    match Envelope::from_json(&bad.to_string()) {
        Err(e) => e.to_string(),
        Ok(env) => match verify_json_form(&env, key) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("the tampered envelope verifies: {bad:#}"),
        },
    }
}

fn b64_edit(v: &mut serde_json::Value, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = B64.decode(v.as_str().unwrap()).unwrap();
    edit(&mut bytes);
    *v = serde_json::Value::String(B64.encode(bytes));
}

#[test]
fn tampered_batch_member_is_refused_naming_what_failed() {
    let fx = fixture();
    let json = batch_member(&fx, 5, 2).to_json();
    let key = &fx.verifier;
    let proof_invalid = "does not lead to the batch's signed root";
    let cases: [(&str, String); 6] = [
        (
            "proof",
            tampered(&json, key, |j| {
                b64_edit(&mut j["federation"]["security"]["batch"]["proof"], |b| {
                    b[7] ^= 1;
                });
            }),
        ),
        (
            "root",
            tampered(&json, key, |j| {
                b64_edit(&mut j["federation"]["security"]["batch"]["root"], |b| {
                    b[0] ^= 1;
                });
            }),
        ),
        (
            "index",
            // Leaves 2 and 3 have proofs of one length: the proof now folds to another root.
            tampered(&json, key, |j| {
                j["federation"]["security"]["batch"]["index"] = 3.into();
            }),
        ),
        (
            "payload",
            tampered(&json, key, |j| {
                j["message"]["celsius"] = 99.into();
            }),
        ),
        (
            "header",
            tampered(&json, key, |j| {
                j["federation"]["metadata"]["topic"] = "line-3/Temperature".into();
            }),
        ),
        (
            "signature",
            tampered(&json, key, |j| {
                b64_edit(&mut j["federation"]["security"]["signature"], |b| {
                    b[20] ^= 1;
                });
            }),
        ),
    ];
    for (what, err) in &cases[..5] {
        assert!(
            err.starts_with("inclusion proof of envelope ") && err.contains(proof_invalid),
            "{what}: {err}"
        );
    }
    let (_, err) = &cases[5];
    assert!(
        err.starts_with("batch signature does not verify over its root and count"),
        "{err}"
    );
    let count = tampered(&json, key, |j| {
        // 5 → 6 leaves: leaf 2's proof keeps its length and root, but the count is signed.
        j["federation"]["security"]["batch"]["count"] = 6.into();
    });
    assert!(
        count.starts_with("batch signature does not verify") || count.contains(proof_invalid),
        "{count}"
    );
}

#[test]
fn json_batch_errors_name_the_field() {
    let fx = fixture();
    let json = batch_member(&fx, 5, 2).to_json();
    let at = "/federation/security/batch";
    let cases = [
        (
            "root",
            serde_json::json!("not base64!"),
            "federation.security.batch.root: is not base64",
        ),
        (
            "root",
            serde_json::json!(B64.encode([0u8; 47])),
            "federation.security.batch.root: is 47 bytes, not 48",
        ),
        (
            "count",
            serde_json::json!(0),
            "federation.security.batch.count: 0 is not between 1 and 65536",
        ),
        (
            "count",
            serde_json::json!(70_000),
            "federation.security.batch.count: 70000 is not between 1 and 65536",
        ),
        (
            "count",
            serde_json::json!(-1),
            "envelope JSON: invalid value: integer `-1`",
        ),
        (
            "index",
            serde_json::json!(5),
            "federation.security.batch.index: 5 is not below the count 5",
        ),
        (
            "index",
            serde_json::json!(4),
            "federation.security.batch.proof: is 144 bytes, but leaf 4 of a batch of 5 needs 1 hashes of 48 bytes (48 bytes)",
        ),
        (
            "proof",
            serde_json::json!("%%"),
            "federation.security.batch.proof: is not base64",
        ),
        (
            "proof",
            serde_json::json!(B64.encode([0u8; 100])),
            "federation.security.batch.proof: is 100 bytes, but leaf 2 of a batch of 5 needs 3 hashes",
        ),
    ];
    for (name, value, expect) in cases {
        let mut bad = json.clone();
        *bad.pointer_mut(&format!("{at}/{name}")).unwrap() = value;
        let err = Envelope::from_json(&bad.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expect), "{name}: {err}");
    }
    let mut extra = json.clone();
    extra["federation"]["security"]["batch"]["leaves"] = serde_json::json!([]);
    let err = Envelope::from_json(&extra.to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `leaves`"), "{err}");
    let mut missing = json.clone();
    missing["federation"]["security"]["batch"]
        .as_object_mut()
        .unwrap()
        .remove("proof");
    let err = Envelope::from_json(&missing.to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `proof`"), "{err}");
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

fn arb_label() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,20}"
}

prop_compose! {
    fn arb_header()(
        ts in any::<u64>(), rnd in any::<[u8; 10]>(), src in arb_label(), sgw in arb_label(),
        dst in arb_label(), dgw in proptest::option::of(arb_label()), flags in 0u8..4,
        fed in "[A-Za-z0-9_-]{1,40}", cert in proptest::collection::vec(any::<u8>(), 0..64),
        pri in 0u8..8, qos in 0u8..3, lat in proptest::option::of(1u32..),
        topic in "[a-z0-9]{1,8}(/[a-z0-9-]{1,8}){0,4}", schema in proptest::option::of("[!-~]{1,20}"),
        class in proptest::option::of("[!-~]{1,20}"),
    ) -> Header {
        let mut h = header("x");
        h.id = EnvelopeId::new(Timestamp(ts), rnd);
        h.timestamp = Timestamp(ts);
        h.source = Source { mesh: src.parse().unwrap(), gateway: sgw.parse().unwrap() };
        h.destination = Destination { mesh: dst.parse().unwrap(), gateway: dgw.map(|g| g.parse().unwrap()) };
        h.flags = Flags::from_bits(flags).unwrap();
        h.federation_id = fed.parse().unwrap();
        h.certificate = SignerCertificate::new(cert);
        h.policy = DeliveryPolicy {
            priority: Priority::try_from(pri).unwrap(),
            qos: Qos::try_from(qos).unwrap(),
            max_latency: lat.map(|l| MaxLatency::try_from(l).unwrap()),
            classification: class.map(|s| Label::parse("classification", &s).unwrap()),
        };
        h.metadata.topic = topic.parse().unwrap();
        h.metadata.schema_id = schema.map(|s| Label::parse("schema_id", &s).unwrap());
        h
    }
}

proptest! {
    #[test]
    fn any_header_round_trips_wire_and_json(h in arb_header(), payload in proptest::collection::vec(any::<u8>(), 0..300), ttl in any::<u8>()) {
        let mut fx = fixture();
        fx.sealer = fx.secret.sealer(&h.source.mesh, KeyEpoch([3; 16])).unwrap();
        let hop = Hop::origin(h.source.mesh.clone(), ttl);
        let env = WireEnvelope::seal(h, hop, &payload, &mut fx.sealer, &fx.signer).unwrap();
        let (back, clear) = open(&fx, &env.encode()).unwrap();
        prop_assert_eq!(&back, &env);
        prop_assert_eq!(&clear, &payload);
        let mut model = back.to_envelope(None);
        model.header.metadata.content_type = ContentType::octet_stream();
        model.message = Some(payload);
        prop_assert_eq!(Envelope::from_json(&model.to_json().to_string()).unwrap(), model);
    }

    #[test]
    fn any_payload_reads_back_from_json_byte_for_byte(
        payload in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            "[ -~\n\t]{0,40}".prop_map(String::into_bytes),
            Just(br#"{"b": 1.50, "a":[1, 2]}"#.to_vec()),
            Just(b"{\"a\":1}\n".to_vec()),
            Just(br#""a JSON string""#.to_vec()),
        ],
        ct in prop_oneof![Just("application/json"), Just("text/plain"), Just("application/octet-stream")],
    ) {
        let mut fx = fixture();
        let wire = sealed(&mut fx, b"x");
        let mut model = wire.to_envelope(None);
        model.header.metadata.content_type = ct.parse().unwrap();
        model.message = Some(payload.clone());
        let text = model.to_json_string();
        prop_assert_eq!(Envelope::from_json(&text).unwrap().message, Some(payload));
    }

    #[test]
    fn the_hand_read_header_is_the_one_ciborium_reads(h in arb_header(), at in any::<prop::sample::Index>(), to in any::<u8>()) {
        let bytes = encode_header(&h);
        // What this crate writes takes the hand-read way, and reads back the same.
        prop_assert!(fields(&bytes).is_some());
        prop_assert_eq!(decode_header(&bytes), Ok(h));
        // A changed byte: the outcome (header or error) is ciborium's.
        let mut changed = bytes.clone();
        let i = at.index(changed.len());
        changed[i] = to;
        prop_assert_eq!(decode_header(&changed), decode_header_with_ciborium(&changed));
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = WireEnvelope::decode(&bytes);
    }

    #[test]
    fn decoding_mutated_envelopes_never_panics(at in any::<prop::sample::Index>(), to in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut fx = fixture();
        let mut bytes = sealed(&mut fx, b"{}").encode();
        let i = at.index(bytes.len());
        bytes[i] = to;
        bytes.truncate(cut.index(bytes.len() + 1).max(1));
        if let Ok(env) = WireEnvelope::decode(&bytes) {
            let _ = env.verify(&fx.verifier);
        }
    }

    #[test]
    fn reading_arbitrary_json_never_panics(text in "\\PC{0,200}") {
        let _ = Envelope::from_json(&text);
    }
}
