use meshfed_proto::batch::merkle::Tree;
use meshfed_proto::batch::{SignedBatch, UnsignedEnvelope};
use meshfed_proto::envelope::{
    ContentType, DeliveryPolicy, Destination, Flags, Hop, Metadata, Priority, Qos,
    SignerCertificate, Source, Version,
};

use super::*;
use crate::head::TreeHead;
use crate::head::tests::keys;
use crate::record::tests::{fed, key, mesh};
use crate::record::{BatchRef, Record, Scope};

const CERT_A: &[u8] = b"certificate of plant-a/gw1";
const CERT_B: &[u8] = b"certificate of plant-b/gw1";

fn header(n: u8) -> Header {
    Header {
        version: Version::CURRENT,
        id: EnvelopeId::new(Timestamp(1_777_636_800_000), [n; 10]),
        timestamp: Timestamp(1_777_636_800_000),
        source: Source {
            mesh: mesh("plant-a"),
            gateway: "gw1".parse().unwrap(),
        },
        destination: Destination {
            mesh: mesh("plant-b"),
            gateway: None,
        },
        flags: Flags::RELIABLE,
        federation_id: "fed_0123abcd".parse().unwrap(),
        agreement_version: 1,
        certificate: SignerCertificate::new(CERT_A.to_vec()),
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

/// Chains are accepted by their first certificate, for the mesh it names.
fn ca(chain: &[Vec<u8>], signer: Signer<'_>) -> Result<VerifyingKey, String> {
    match (chain.first().map(Vec::as_slice), signer.mesh.as_str()) {
        (Some(CERT_A), "plant-a") => Ok(keys(1).verifying.clone()),
        (Some(CERT_B), "plant-b") => Ok(keys(0).verifying.clone()),
        _ => Err("not issued by the mesh's CA".to_owned()),
    }
}

/// plant-b received envelope 1 of a batch of 3 from plant-a and logged it as record 2 of 5;
/// its head at size 5 is countersigned by plant-a.
fn proof() -> MessageProof {
    let envelopes: Vec<UnsignedEnvelope> = (0..3)
        .map(|n| {
            UnsignedEnvelope::clear(
                header(n),
                Hop::origin(mesh("plant-a"), 10),
                format!("payload {n}").into_bytes(),
            )
        })
        .collect();
    let batch = SignedBatch::sign(envelopes, &keys(1).signing).unwrap();
    let receipt = batch.verify(&keys(1).verifying).unwrap();
    let envelope = &batch.envelopes()[1];
    let batch_head = BatchHead {
        number: 7,
        signature: batch.signature().clone(),
    };
    let (commitment, opening) = key().commit(&envelope.header().id, envelope.payload_digest());
    let record = Record {
        scope: fed(),
        seq: 2,
        time: Timestamp(1_777_636_800_010),
        event: Event::Messages {
            direction: Delivery::Received,
            peer: mesh("plant-a"),
            batch: Some(BatchRef {
                number: 7,
                count: 3,
                root: *batch.signature().root(),
            }),
            messages: vec![
                // Another envelope of the batch comes first: the proof finds its own.
                MessageDigest {
                    envelope: batch.envelopes()[0].header().id,
                    source: mesh("plant-a"),
                    destination: mesh("plant-b"),
                    topic: "line-3/temperature".into(),
                    size: 9,
                    qos: 1,
                    index: 0,
                    commitment: key()
                        .commit(
                            &batch.envelopes()[0].header().id,
                            batch.envelopes()[0].payload_digest(),
                        )
                        .0,
                },
                MessageDigest {
                    envelope: envelope.header().id,
                    source: mesh("plant-a"),
                    destination: mesh("plant-b"),
                    topic: "line-3/temperature".into(),
                    size: 9,
                    qos: 1,
                    index: 1,
                    commitment,
                },
            ],
        },
    };
    let inclusion = receipt.proof(1).unwrap();
    logged(
        &record,
        5,
        envelope.header_bytes(),
        envelope.payload_digest(),
        &opening,
        SignedBy::Batch {
            head: &batch_head,
            inclusion: &inclusion,
        },
    )
}

/// The proof of `record`, logged by plant-b among `size` records under a head plant-a
/// countersigned, for the envelope `header` whose payload digest is `payload_digest`.
fn logged(
    record: &Record,
    size: u64,
    header: &[u8],
    payload_digest: &[u8; 48],
    opening: &Opening,
    signed: SignedBy<'_>,
) -> MessageProof {
    let at = record.seq as usize;
    let mut leaves: Vec<Vec<u8>> = (0..size)
        .map(|i| format!("record {i}").into_bytes())
        .collect();
    leaves[at] = record.to_bytes();
    let tree = Tree::from_leaves(&leaves);
    let head = SignedHead::sign(
        TreeHead {
            mesh: mesh("plant-b"),
            scope: fed(),
            size,
            root: tree.root(),
            time: Timestamp(1_777_636_900_000),
        },
        &keys(0).signing,
    )
    .unwrap();
    let countersignature = Countersignature::sign(
        &head.head,
        mesh("plant-a"),
        Timestamp(1_777_636_900_500),
        &keys(1).signing,
    )
    .unwrap();
    MessageProof::new(ProofParts {
        record: &leaves[at],
        inclusion: &tree.proof(at as u64).unwrap(),
        head: &head,
        head_chain: &[CERT_B.to_vec()],
        countersignature: &countersignature,
        countersigner_chain: &[CERT_A.to_vec()],
        opening,
        header,
        payload_digest,
        signed,
        batch_chain: &[CERT_A.to_vec()],
    })
}

/// plant-b received one envelope plant-a signed alone and logged it as record 1 of 3; its
/// head at size 3 is countersigned by plant-a.
fn alone_proof() -> MessageProof {
    let wire = UnsignedEnvelope::clear(
        header(7),
        Hop::origin(mesh("plant-a"), 10),
        b"payload 7".to_vec(),
    )
    .sign(&keys(1).signing)
    .unwrap();
    let id = wire.header().id;
    let (commitment, opening) = key().commit(&id, wire.payload_digest());
    let record = Record {
        scope: fed(),
        seq: 1,
        time: Timestamp(1_777_636_800_010),
        event: Event::Messages {
            direction: Delivery::Received,
            peer: mesh("plant-a"),
            batch: None,
            messages: vec![MessageDigest {
                envelope: id,
                source: mesh("plant-a"),
                destination: mesh("plant-b"),
                topic: "line-3/temperature".into(),
                size: 9,
                qos: 1,
                index: 0,
                commitment,
            }],
        },
    };
    logged(
        &record,
        3,
        wire.header_bytes(),
        wire.payload_digest(),
        &opening,
        SignedBy::Alone(wire.signature()),
    )
}

#[test]
fn an_envelope_signed_alone_is_proven_by_its_own_signature() {
    let p = alone_proof();
    assert!(p.envelope.batch_head.is_none() && p.envelope.signature.is_some());
    let checked = p.check(ca).unwrap();
    assert_eq!(checked.envelope, header(7).id);
    assert_eq!(checked.batch_signer, mesh("plant-a"));
    let back = MessageProof::from_json(&p.to_json()).unwrap();
    assert!(back.check(ca).is_ok());

    // Another signature: a flipped byte.
    let mut forged = p.clone();
    let mut sig = B64
        .decode(forged.envelope.signature.as_ref().unwrap())
        .unwrap();
    sig[10] ^= 1;
    forged.envelope.signature = Some(B64.encode(&sig));
    assert_eq!(
        fails(&forged),
        "the envelope's own signature does not verify under its signer's certificate"
    );
    // A signature of the wrong length.
    let mut short = p.clone();
    short.envelope.signature = Some(B64.encode(&sig[..20]));
    assert_eq!(
        fails(&short),
        "proof field envelope.signature: is 20 bytes, not 96"
    );
    // The batch evidence of another proof in place of the signature.
    let mut mixed = p;
    let batch = proof();
    mixed.envelope.signature = None;
    mixed.envelope.batch_head = batch.envelope.batch_head;
    mixed.envelope.inclusion = batch.envelope.inclusion;
    assert_eq!(
        fails(&mixed),
        "the record says the envelope was signed alone, the evidence carries a batch signature"
    );
}

#[test]
fn a_whole_proof_checks_and_says_what_it_proves() {
    let p = proof();
    let checked = p.check(ca).unwrap();
    assert_eq!(checked.envelope, header(1).id);
    assert_eq!(checked.source, mesh("plant-a"));
    assert_eq!(checked.destination, mesh("plant-b"));
    assert_eq!(checked.topic, "line-3/temperature");
    assert_eq!(checked.head_signer, mesh("plant-b"));
    assert_eq!(checked.head_size, 5);
    assert_eq!(checked.countersigned_by, mesh("plant-a"));
    assert_eq!(checked.batch_signer, mesh("plant-a"));
    // Through its JSON file.
    let back = MessageProof::from_json(&p.to_json()).unwrap();
    assert_eq!(back, p);
    assert!(back.check(ca).is_ok());
    assert_eq!(p.record.json["kind"], "messages");
}

fn fails(p: &MessageProof) -> String {
    p.check(ca).unwrap_err().to_string()
}

#[test]
fn each_broken_link_is_named() {
    let good = proof();

    let mut p = good.clone();
    p.version = 2;
    assert_eq!(
        fails(&p),
        "proof format version 2 is not supported (this build reads version 1)"
    );

    // Another record in place of the proven one (its JSON view updated too).
    let mut p = good.clone();
    let mut r = Record::from_bytes(&B64.decode(&p.record.cbor).unwrap()).unwrap();
    r.time = Timestamp(1);
    p.record.cbor = B64.encode(r.to_bytes());
    p.record.json = r.to_json();
    assert_eq!(
        fails(&p),
        "the record is not in the log under the signed head: inclusion proof does not lead from the leaf to the root (leaf, proof or root altered)"
    );

    // The JSON view edited alone.
    let mut p = good.clone();
    p.record.json["topic"] = "other".into();
    assert_eq!(
        fails(&p),
        "the record's JSON view does not match its CBOR bytes"
    );

    // The head signer's chain refused.
    let mut p = good.clone();
    p.head.chain = vec![B64.encode(CERT_A)];
    assert_eq!(
        fails(&p),
        "the head signer's certificate chain for mesh plant-b is not accepted: not issued by the mesh's CA"
    );

    // Countersigned by someone else's key (plant-b countersigning its own head).
    let mut p = good.clone();
    let h = SignedHead::from_bytes(&B64.decode(&p.head.cbor).unwrap()).unwrap();
    let c =
        Countersignature::sign(&h.head, mesh("plant-a"), Timestamp(5), &keys(0).signing).unwrap();
    p.countersignature.cbor = B64.encode(c.to_bytes());
    assert_eq!(
        fails(&p),
        "the countersignature by plant-a does not verify under its certificate"
    );

    // The wrong opening.
    let mut p = good.clone();
    p.opening = key().opening(&header(0).id).to_string();
    assert_eq!(
        fails(&p),
        "the commitment does not open to the envelope's payload digest with this opening"
    );

    // The header of a sibling envelope the record does not name.
    let mut p = good.clone();
    p.envelope.header = B64.encode(header(2).encode());
    assert_eq!(
        fails(&p),
        format!(
            "the record has no digest of envelope {}, which the header names",
            header(2).id
        )
    );
    // The header of a sibling envelope the record names: the opening is not its own.
    let mut p = good.clone();
    p.envelope.header = B64.encode(header(0).encode());
    assert_eq!(
        fails(&p),
        "the commitment does not open to the envelope's payload digest with this opening"
    );

    // The payload digest of another payload.
    let mut p = good.clone();
    p.envelope.payload_digest = hex::encode([0u8; 48]);
    assert_eq!(
        fails(&p),
        "the commitment does not open to the envelope's payload digest with this opening"
    );

    // The envelope's path in its batch altered.
    let mut p = good.clone();
    p.envelope.inclusion.as_mut().unwrap().path[0] = TreeHash::from_bytes([1; 48]).to_string();
    assert!(
        fails(&p).starts_with("the envelope's batch does not verify"),
        "{}",
        fails(&p)
    );

    // A batch signer certificate the header does not name.
    let mut p = good.clone();
    p.envelope.chain = vec![B64.encode(CERT_B)];
    assert_eq!(
        fails(&p),
        "the batch signer's certificate is not the one the envelope header names"
    );

    // Bad base64.
    let mut p = good;
    p.head.cbor = "not base64!".into();
    assert!(
        fails(&p).starts_with("proof field head.cbor: is not base64"),
        "{}",
        fails(&p)
    );
}

#[test]
fn a_record_of_another_kind_is_not_a_message_proof() {
    let mut p = proof();
    let r = Record {
        scope: Scope::Node,
        seq: 0,
        time: Timestamp(0),
        event: Event::Pruned {
            before_seq: 1,
            records: 1,
            reason: "".into(),
        },
    };
    p.record.cbor = B64.encode(r.to_bytes());
    p.record.json = r.to_json();
    assert_eq!(
        fails(&p),
        "the record is a pruned record, not a messages record"
    );
}
