//! Batch signing and verification, proofs, receipts, tamper detection and decoder robustness.

use proptest::prelude::*;

use super::*;
use crate::crypto::{ContentSecret, KeyEpoch};
use crate::envelope::{
    ContentType, DeliveryPolicy, Destination, EnvelopeId, Flags, Metadata, Priority, Qos,
    Timestamp, Version,
};

pub(super) struct Fixture {
    pub(super) signer: SigningKey,
    pub(super) verifier: VerifyingKey,
    secret: ContentSecret,
    sealer: Sealer,
}

pub(super) fn fixture() -> Fixture {
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

pub(super) fn header(n: u8) -> Header {
    Header {
        version: Version::CURRENT,
        id: EnvelopeId::new(Timestamp(1_621_234_567_890), [n; 10]),
        timestamp: Timestamp(1_621_234_567_890),
        source: Source {
            mesh: "plant-a".parse().unwrap(),
            gateway: "gw1".parse().unwrap(),
        },
        destination: Destination {
            mesh: "supplier-b".parse().unwrap(),
            gateway: None,
        },
        flags: Flags::RELIABLE,
        federation_id: "fed_plant-a_supplier-b".parse().unwrap(),
        agreement_version: 1,
        certificate: crate::envelope::SignerCertificate::new(vec![0x30, 0x82, 1, 2, 3, 4]),
        encryption: None,
        policy: DeliveryPolicy {
            priority: Priority::try_from(2).unwrap(),
            qos: Qos::AtLeastOnce,
            max_latency: None,
            classification: None,
        },
        metadata: Metadata {
            topic: "line-3/temperature".parse().unwrap(),
            content_type: ContentType::json(),
            content_encoding: None,
            schema_id: None,
        },
    }
}

pub(super) fn hop() -> Hop {
    Hop::origin("plant-a".parse().unwrap(), Hop::DEFAULT_TTL)
}

pub(super) fn payload(n: usize) -> Vec<u8> {
    format!(r#"{{"celsius":{n}}}"#).into_bytes()
}

pub(super) fn sealed(fx: &mut Fixture, n: usize) -> Vec<UnsignedEnvelope> {
    (0..n)
        .map(|i| {
            UnsignedEnvelope::seal(header(i as u8), hop(), &payload(i), &mut fx.sealer).unwrap()
        })
        .collect()
}

fn batch(fx: &mut Fixture, n: usize) -> SignedBatch {
    let envelopes = sealed(fx, n);
    SignedBatch::sign(envelopes, &fx.signer).unwrap()
}

fn opener(fx: &Fixture, e: &UnsignedEnvelope) -> Opener {
    let key_id = &e.header().encryption.as_ref().unwrap().key_id;
    fx.secret.opener(&e.header().source.mesh, key_id).unwrap()
}

#[test]
fn batch_round_trips_through_the_wire_and_every_envelope_opens() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 5);
    let back = SignedBatch::decode(&batch.encode()).unwrap();
    assert_eq!(back, batch);
    let receipt = back.verify(&fx.verifier).unwrap();
    assert_eq!(receipt.leaf_hashes().len(), 5);
    for (i, e) in back.envelopes().iter().enumerate() {
        assert_eq!(e.open(&opener(&fx, e)).unwrap(), payload(i));
    }
}

#[test]
fn one_envelope_batch_has_its_leaf_hash_as_root_and_an_empty_proof() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 1);
    assert_eq!(batch.signature().root(), &batch.envelopes()[0].leaf_hash());
    let proven = batch.proof(0).unwrap();
    assert!(proven.proof().path().is_empty());
    proven.verify(&fx.verifier).unwrap();
}

#[test]
fn every_envelope_split_from_a_batch_verifies_alone() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 11);
    batch.verify(&fx.verifier).unwrap();
    for (i, proven) in batch.clone().into_proven().into_iter().enumerate() {
        assert_eq!(proven.index() as usize, i);
        let back = ProvenEnvelope::decode(&proven.encode()).unwrap();
        assert_eq!(back, proven);
        back.verify(&fx.verifier).unwrap();
        assert_eq!(back, batch.proof(i as u32).unwrap());
        let e = back.envelope();
        assert_eq!(e.open(&opener(&fx, e)).unwrap(), payload(i));
    }
}

#[test]
fn receipt_proves_any_envelope_later() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 6);
    let receipt = batch.verify(&fx.verifier).unwrap();
    let stored = BatchReceipt::decode(&receipt.encode()).unwrap();
    assert_eq!(stored, receipt);
    stored.signature().verify(&fx.verifier).unwrap();
    // The envelope as kept since it arrived, proved against the receipt.
    let kept = UnsignedEnvelope::decode(&batch.envelopes()[4].encode()).unwrap();
    let proven = stored.prove(4, kept).unwrap();
    proven.verify(&fx.verifier).unwrap();
    assert_eq!(proven, batch.proof(4).unwrap());
    // An auditor with only header bytes and the digest checks the leaf.
    let e = &batch.envelopes()[2];
    stored
        .proof(2)
        .unwrap()
        .verify_leaf_hash(
            &leaf_hash(e.header_bytes(), e.payload_digest()),
            stored.signature().root(),
        )
        .unwrap();
}

#[test]
fn receipt_refuses_to_prove_another_envelope_at_an_index() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 3);
    let receipt = batch.verify(&fx.verifier).unwrap();
    let other = batch.envelopes()[1].clone();
    assert_eq!(
        receipt.prove(0, other).unwrap_err(),
        BatchError::ProofInvalid { index: 0 }
    );
    assert_eq!(
        receipt.proof(3).unwrap_err().to_string(),
        "envelope index 3 is out of range for a batch of 3"
    );
}

#[test]
fn stored_receipt_with_altered_leaf_is_a_root_mismatch() {
    let mut fx = fixture();
    let receipt = batch(&mut fx, 4).verify(&fx.verifier).unwrap();
    let mut bytes = receipt.encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(
        BatchReceipt::decode(&bytes).unwrap_err(),
        BatchError::RootMismatch
    );
}

#[test]
fn seal_then_sign_alone_is_a_per_message_envelope() {
    let mut fx = fixture();
    let unsigned = sealed(&mut fx, 1).remove(0);
    let wire = unsigned.clone().sign(&fx.signer).unwrap();
    let wire = WireEnvelope::decode(&wire.encode()).unwrap();
    wire.verify(&fx.verifier).unwrap();
    assert_eq!(wire.header_bytes(), unsigned.header_bytes());
    assert_eq!(wire.payload_digest(), unsigned.payload_digest());
    assert_eq!(wire.open(&opener(&fx, &unsigned)).unwrap(), payload(0));
}

#[test]
fn batch_signature_is_never_a_per_message_signature_and_back() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 1);
    let e = &batch.envelopes()[0];
    let per_message_input = [
        b"meshfed-envelope-v1\0".as_slice(),
        e.header_bytes(),
        e.payload_digest(),
    ]
    .concat();
    assert_eq!(
        fx.verifier
            .verify(&per_message_input, batch.signature().signature()),
        Err(CryptoError::BadSignature)
    );
    let wire = e.clone().sign(&fx.signer).unwrap();
    let forged = BatchSignature {
        signature: *wire.signature(),
        ..batch.signature().clone()
    };
    assert_eq!(forged.verify(&fx.verifier), Err(BatchError::BadSignature));
}

#[test]
fn clear_envelopes_batch_and_refuse_open() {
    let fx = fixture();
    let envelopes = (0..3)
        .map(|i| UnsignedEnvelope::clear(header(i), hop(), payload(i as usize)))
        .collect();
    let batch = SignedBatch::sign(envelopes, &fx.signer).unwrap();
    let back = SignedBatch::decode(&batch.encode()).unwrap();
    back.verify(&fx.verifier).unwrap();
    assert_eq!(back.envelopes()[2].clear_payload().unwrap(), payload(2));
    assert_eq!(
        back.envelopes()[2].open(&opener_for_clear(&fx)),
        Err(EnvelopeError::NotEncrypted)
    );
}

fn opener_for_clear(fx: &Fixture) -> Opener {
    fx.secret
        .opener(&"plant-a".parse().unwrap(), &KeyEpoch([0; 16]).key_id())
        .unwrap()
}

#[test]
fn signing_refuses_empty_foreign_and_mixed_certificate_batches() {
    let mut fx = fixture();
    assert_eq!(
        SignedBatch::sign(Vec::new(), &fx.signer).unwrap_err(),
        BatchError::Empty
    );

    let mut h = header(1);
    h.source.gateway = "gw2".parse().unwrap();
    let mut envelopes = sealed(&mut fx, 2);
    envelopes.push(UnsignedEnvelope::clear(h, hop(), b"{}".to_vec()));
    assert_eq!(
        SignedBatch::sign(envelopes, &fx.signer)
            .unwrap_err()
            .to_string(),
        "envelope 2 comes from plant-a/gw2, but the batch is signed by plant-a/gw1"
    );

    let mut h = header(1);
    h.certificate = crate::envelope::SignerCertificate::new(vec![0x30, 0x82, 9, 9]);
    let mut envelopes = sealed(&mut fx, 1);
    envelopes.push(UnsignedEnvelope::clear(h, hop(), b"{}".to_vec()));
    assert_eq!(
        SignedBatch::sign(envelopes, &fx.signer).unwrap_err(),
        BatchError::CertificateMismatch { index: 1 }
    );
}

#[test]
fn signing_refuses_more_than_the_maximum() {
    let fx = fixture();
    let one = UnsignedEnvelope::clear(header(0), hop(), Vec::new());
    let envelopes = vec![one; SignedBatch::MAX_LEN + 1];
    assert_eq!(
        SignedBatch::sign(envelopes, &fx.signer).unwrap_err(),
        BatchError::TooLarge {
            len: SignedBatch::MAX_LEN + 1,
            max: SignedBatch::MAX_LEN
        }
    );
}

#[test]
fn batch_signed_by_another_key_is_a_bad_signature() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 3);
    let stranger = SigningKey::generate().unwrap();
    let stranger = VerifyingKey::from_sec1(stranger.public_key()).unwrap();
    assert_eq!(
        batch.verify(&stranger).unwrap_err(),
        BatchError::BadSignature
    );
    assert_eq!(
        batch.proof(1).unwrap().verify(&stranger).unwrap_err(),
        BatchError::BadSignature
    );
}

#[test]
fn altered_root_or_count_is_a_bad_signature() {
    let mut fx = fixture();
    let mut batch = batch(&mut fx, 3);
    let mut proven = batch.proof(2).unwrap();
    proven.batch.count = 4;
    assert_eq!(proven.verify(&fx.verifier), Err(BatchError::BadSignature));
    let mut bytes = batch.signature.root.as_bytes().to_owned();
    bytes[0] ^= 1;
    batch.signature.root = TreeHash::from_bytes(bytes);
    assert_eq!(batch.verify(&fx.verifier), Err(BatchError::BadSignature));
}

#[test]
fn altered_header_digest_or_order_is_a_root_mismatch() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 4);

    let mut bad = batch.clone();
    let at = bad.envelopes[1].header_bytes.len() - 3;
    bad.envelopes[1].header_bytes[at] ^= 1;
    assert_eq!(bad.verify(&fx.verifier), Err(BatchError::RootMismatch));

    let mut bad = batch.clone();
    bad.envelopes[3].digest[0] ^= 1;
    assert_eq!(bad.verify(&fx.verifier), Err(BatchError::RootMismatch));

    let mut bad = batch.clone();
    bad.envelopes.swap(0, 2);
    assert_eq!(bad.verify(&fx.verifier), Err(BatchError::RootMismatch));
}

#[test]
fn altered_payload_names_the_envelope() {
    let mut fx = fixture();
    let mut batch = batch(&mut fx, 4);
    let mut proven = batch.proof(2).unwrap();
    batch.envelopes[2].payload[0] ^= 1;
    assert_eq!(
        batch.verify(&fx.verifier).unwrap_err().to_string(),
        "envelope 2 of the batch: payload does not match its signed SHA-384 digest (the payload, \
         ciphertext or tag was altered)"
    );
    proven.envelope.payload[0] ^= 1;
    assert_eq!(
        proven.verify(&fx.verifier),
        Err(BatchError::PayloadAltered { index: 2 })
    );
}

#[test]
fn proof_from_another_envelope_or_index_is_invalid() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 8);
    let mut proven = batch.proof(5).unwrap();
    proven.envelope = batch.envelopes()[6].clone();
    assert_eq!(
        proven.verify(&fx.verifier),
        Err(BatchError::ProofInvalid { index: 5 })
    );
    // Index 4 of 8 has a proof of the same length as index 5.
    let proven = batch.proof(5).unwrap();
    let moved = ProvenEnvelope::from_parts(
        proven.batch.clone(),
        4,
        &proven.proof.to_bytes(),
        proven.envelope.clone(),
    )
    .unwrap();
    assert_eq!(
        moved.verify(&fx.verifier),
        Err(BatchError::ProofInvalid { index: 4 })
    );
}

#[test]
fn proven_envelope_with_bad_index_or_proof_shape_is_refused_at_decode() {
    let mut fx = fixture();
    let proven = batch(&mut fx, 5).proof(4).unwrap();
    let out = ProvenEnvelope::from_parts(
        proven.batch.clone(),
        5,
        &proven.proof.to_bytes(),
        proven.envelope.clone(),
    );
    assert_eq!(
        out.unwrap_err(),
        BatchError::IndexOutOfRange { index: 5, count: 5 }
    );
    let mut short = proven.proof.to_bytes();
    short.truncate(short.len() - 1);
    let err = ProvenEnvelope::from_parts(proven.batch.clone(), 4, &short, proven.envelope.clone())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "inclusion proof of envelope 4: 47 bytes are not a whole number of 48-byte SHA-384 hashes"
    );
    let err = ProvenEnvelope::from_parts(proven.batch.clone(), 0, &[], proven.envelope.clone())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "inclusion proof of envelope 0: inclusion proof for leaf 0 of 5 has 0 hashes, must have 3"
    );
}

#[test]
fn decoding_names_the_bad_field() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 2);
    let good: ciborium::Value = ciborium::from_reader(batch.encode().as_slice()).unwrap();
    let cases: [(&[usize], ciborium::Value, &str); 8] = [
        (&[0, 0], "Plant_A".into(), "batch field batch.signer.mesh"),
        (&[0, 1], "".into(), "batch field batch.signer.gateway"),
        (
            &[0, 2],
            0.into(),
            "batch field batch.count: 0 is not 1 to 65536",
        ),
        (
            &[0, 2],
            3.into(),
            "covers 3 envelopes, but the batch carries 2",
        ),
        (
            &[0, 3],
            ciborium::Value::Bytes(vec![0; 47]),
            "batch.root: is 47 bytes, not 48",
        ),
        (
            &[0, 4],
            ciborium::Value::Bytes(vec![0; 64]),
            "batch.signature: is 64 bytes, not 96",
        ),
        (
            &[1, 1, 0],
            ciborium::Value::Array(vec![]),
            "envelope 1 of the batch: envelope field routing.path: has 0 entries",
        ),
        (
            &[1, 0, 3],
            ciborium::Value::Bytes(vec![0xa0]),
            "envelope 0 of the batch: envelope header is malformed",
        ),
    ];
    for (at, value, expect) in cases {
        let mut v = good.clone();
        *pointer(&mut v, at) = value;
        let mut bytes = Vec::new();
        ciborium::into_writer(&v, &mut bytes).unwrap();
        let err = SignedBatch::decode(&bytes).unwrap_err().to_string();
        assert!(err.contains(expect), "{at:?}: {err}");
    }
    let mut trailing = batch.encode();
    trailing.push(0);
    assert_eq!(
        SignedBatch::decode(&trailing).unwrap_err().to_string(),
        "envelope batch is followed by 1 stray bytes"
    );
    let err = SignedBatch::decode(b"\x82\x01").unwrap_err().to_string();
    assert!(err.starts_with("envelope batch is malformed"), "{err}");
}

#[test]
fn decoded_batch_from_another_source_than_its_signer_is_refused() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 2);
    let mut v: ciborium::Value = ciborium::from_reader(batch.encode().as_slice()).unwrap();
    *pointer(&mut v, &[0, 1]) = "gw9".into();
    let mut bytes = Vec::new();
    ciborium::into_writer(&v, &mut bytes).unwrap();
    assert_eq!(
        SignedBatch::decode(&bytes).unwrap_err().to_string(),
        "envelope 0 comes from plant-a/gw1, but the batch is signed by plant-a/gw9"
    );
}

fn pointer<'a>(v: &'a mut ciborium::Value, at: &[usize]) -> &'a mut ciborium::Value {
    at.iter().fold(v, |v, &i| match v {
        ciborium::Value::Array(items) => &mut items[i],
        other => panic!("not an array at {i}: {other:?}"),
    })
}

#[test]
fn no_single_bit_flip_yields_different_verified_content() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 3);
    let receipt = batch.verify(&fx.verifier).unwrap();
    let bytes = batch.encode();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        let Ok(back) = SignedBatch::decode(&bad) else {
            continue;
        };
        if let Ok(r) = back.verify(&fx.verifier) {
            // Only the unsigned hop fields may change; they are protected by the link's TLS.
            assert_eq!(r, receipt, "byte {i} changed the signed content undetected");
            for (a, b) in back.envelopes().iter().zip(batch.envelopes()) {
                assert_eq!(
                    (a.header_bytes(), a.payload()),
                    (b.header_bytes(), b.payload())
                );
            }
            assert_ne!(
                back, batch,
                "byte {i}: identical result from different bytes"
            );
        }
    }
}

#[test]
fn no_single_bit_flip_in_a_proven_envelope_yields_different_verified_content() {
    let mut fx = fixture();
    let proven = batch(&mut fx, 5).proof(3).unwrap();
    let bytes = proven.encode();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        let Ok(back) = ProvenEnvelope::decode(&bad) else {
            continue;
        };
        if back.verify(&fx.verifier).is_ok() {
            assert_eq!(back.batch, proven.batch, "byte {i}");
            assert_eq!(back.index(), proven.index(), "byte {i}");
            let (a, b) = (back.envelope(), proven.envelope());
            assert_eq!(
                (a.header_bytes(), a.payload()),
                (b.header_bytes(), b.payload())
            );
            assert_ne!(
                a.hop, b.hop,
                "byte {i}: identical result from different bytes"
            );
        }
    }
}

#[test]
fn relay_advances_hops_without_breaking_the_batch() {
    let mut fx = fixture();
    let mut batch = batch(&mut fx, 3);
    let relay: crate::id::MeshId = "broker-x".parse().unwrap();
    for e in batch.envelopes_mut() {
        e.hop.advance(&relay).unwrap();
    }
    let back = SignedBatch::decode(&batch.encode()).unwrap();
    back.verify(&fx.verifier).unwrap();
    assert_eq!(back.envelopes()[0].hop.path.len(), 2);
    let mut proven = back.proof(1).unwrap();
    proven.hop_mut().advance(&"next".parse().unwrap()).unwrap();
    ProvenEnvelope::decode(&proven.encode())
        .unwrap()
        .verify(&fx.verifier)
        .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_batch_round_trips_and_every_proof_verifies(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..40),
        ttl in any::<u8>(),
    ) {
        let mut fx = fixture();
        let envelopes: Vec<UnsignedEnvelope> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let hop = Hop::origin("plant-a".parse().unwrap(), ttl);
                UnsignedEnvelope::seal(header(i as u8), hop, p, &mut fx.sealer).unwrap()
            })
            .collect();
        let batch = SignedBatch::sign(envelopes, &fx.signer).unwrap();
        let back = SignedBatch::decode(&batch.encode()).unwrap();
        prop_assert_eq!(&back, &batch);
        let receipt = back.verify(&fx.verifier).unwrap();
        let tree = receipt.tree();
        for (i, proven) in back.into_proven().into_iter().enumerate() {
            prop_assert_eq!(proven.proof(), &tree.proof(i as u64).unwrap());
            let again = ProvenEnvelope::decode(&proven.encode()).unwrap();
            prop_assert_eq!(again.verify(&fx.verifier), Ok(()));
            let e = again.envelope();
            prop_assert_eq!(&e.open(&opener(&fx, e)).unwrap(), &payloads[i]);
        }
    }

    #[test]
    fn the_hand_read_member_is_the_one_ciborium_reads(
        n in 0usize..8,
        at in any::<prop::sample::Index>(),
        to in any::<u8>(),
    ) {
        let mut fx = fixture();
        let e = sealed(&mut fx, n + 1).pop().unwrap();
        let bytes = e.encode();
        prop_assert_eq!(UnsignedEnvelope::decode(&bytes), Ok(e.clone()));
        // Headers only: the same envelope but for its payload, which is not copied.
        let light = UnsignedEnvelope::decode_headers(&bytes).unwrap();
        prop_assert_eq!(light.header(), e.header());
        prop_assert_eq!(light.leaf_hash(), e.leaf_hash());
        prop_assert!(light.payload().is_empty());
        // A changed byte: the outcome (envelope or error) is ciborium's.
        let mut changed = bytes.clone();
        let i = at.index(changed.len());
        changed[i] = to;
        prop_assert_eq!(
            UnsignedEnvelope::decode(&changed),
            UnsignedEnvelope::decode_with_ciborium(&changed)
        );
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = UnsignedEnvelope::decode_headers(&bytes);
        let _ = SignedBatch::decode(&bytes);
        let _ = ProvenEnvelope::decode(&bytes);
        let _ = BatchReceipt::decode(&bytes);
        let _ = UnsignedEnvelope::decode(&bytes);
    }

    #[test]
    fn decoding_mutated_batches_never_panics(
        at in any::<prop::sample::Index>(),
        to in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut fx = fixture();
        let batch = batch(&mut fx, 3);
        for mut bytes in [batch.encode(), batch.proof(1).unwrap().encode()] {
            let i = at.index(bytes.len());
            bytes[i] = to;
            bytes.truncate(cut.index(bytes.len() + 1).max(1));
            if let Ok(b) = SignedBatch::decode(&bytes) {
                let _ = b.verify(&fx.verifier);
            }
            if let Ok(p) = ProvenEnvelope::decode(&bytes) {
                let _ = p.verify(&fx.verifier);
            }
        }
    }
}

#[test]
fn array_announcing_more_items_than_it_holds_is_malformed() {
    let mut fx = fixture();
    let batch = batch(&mut fx, 2);
    // The outer array's head is the first byte: one more item announced than present.
    let mut bytes = batch.encode();
    bytes[0] += 1;
    let err = SignedBatch::decode(&bytes).unwrap_err();
    assert!(matches!(err, BatchError::Malformed { .. }), "{err}");
    let mut bytes = batch.proof(1).unwrap().encode();
    bytes[0] += 1;
    let err = ProvenEnvelope::decode(&bytes).unwrap_err();
    assert!(matches!(err, BatchError::Malformed { .. }), "{err}");
}

#[test]
fn batch_proof_from_a_receipt_verifies_a_sealed_member_from_its_header_bytes_and_digest() {
    let mut fx = fixture();
    let batch = SignedBatch::sign(sealed(&mut fx, 6), &fx.signer).unwrap();
    let receipt = batch.verify(&fx.verifier).unwrap();
    let member = &batch.envelopes()[4];
    let position = BatchProof::new(receipt.signature(), receipt.proof(4).unwrap()).unwrap();
    assert_eq!(position, batch.proof(4).unwrap().batch_proof());
    assert_eq!((position.count(), position.index()), (6, 4));
    let signature = receipt.signature().signature();
    position
        .verify(
            signature,
            member.header_bytes(),
            member.payload_digest(),
            &fx.verifier,
        )
        .unwrap();
    let other = &batch.envelopes()[3];
    assert_eq!(
        position.verify(
            signature,
            other.header_bytes(),
            other.payload_digest(),
            &fx.verifier
        ),
        Err(BatchError::ProofInvalid { index: 4 })
    );
    let stranger = fixture();
    assert_eq!(
        position.verify(
            signature,
            member.header_bytes(),
            member.payload_digest(),
            &stranger.verifier
        ),
        Err(BatchError::BadSignature)
    );
}

#[test]
fn batch_proof_refuses_a_proof_for_another_batch_size() {
    let mut fx = fixture();
    let batch = SignedBatch::sign(sealed(&mut fx, 3), &fx.signer).unwrap();
    let bigger = Tree::from_leaf_hashes(vec![TreeHash::from_bytes([7; 48]); 4]);
    let err = BatchProof::new(batch.signature(), bigger.proof(1).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "batch field batch.proof: is a proof for a batch of 4, but the batch signs 3"
    );
}

#[test]
fn batch_proof_from_parts_checks_count_index_and_proof_length() {
    let root = TreeHash::from_bytes([1; 48]);
    assert!(matches!(
        BatchProof::from_parts(root, 0, 0, &[]),
        Err(BatchError::InvalidField {
            field: "batch.count",
            ..
        })
    ));
    assert_eq!(
        BatchProof::from_parts(root, 2, 2, &[0; 48]),
        Err(BatchError::IndexOutOfRange { index: 2, count: 2 })
    );
    assert!(matches!(
        BatchProof::from_parts(root, 2, 1, &[0; 96]),
        Err(BatchError::ProofMalformed { index: 1, .. })
    ));
    let one = BatchProof::from_parts(root, 1, 0, &[]).unwrap();
    assert_eq!(
        (one.count(), one.index(), one.proof().path().len()),
        (1, 0, 0)
    );
}
