//! One delivered envelope with a 1 KiB payload, as a subscriber's frame: the spec JSON the
//! stream sends by default against the binary frame of `format=binary` (and, for scale, the same
//! fields as a CBOR map through ciborium, the codec the wire form uses), encoded as the gateway
//! does once per delivery and decoded as a client does; then one publish request each way.
//! A text payload is JSON's best case (shown as a string), a binary one its worst (base64).

#![expect(
    clippy::unwrap_used,
    reason = "benchmark fixtures are constants that parse"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshfed_node::api::binary::{Delivered, Publish, encode_envelope};
use meshfed_node::api::models::SendRequest;
use meshfed_proto::batch::BatchProof;
use meshfed_proto::batch::merkle::TreeHash;
use meshfed_proto::crypto::Signature;
use meshfed_proto::envelope::{
    Cipher, DeliveryPolicy, Destination, Encryption, Envelope, EnvelopeId, Flags, Header, Hop,
    Metadata, Priority, Qos, Source, Timestamp, Version,
};
use serde::{Deserialize, Serialize};

const PAYLOAD: usize = 1024;

/// A delivered envelope as a gateway hands it to its subscribers: sealed on the link, opened,
/// one of a signed batch of 64.
fn envelope(content_type: &str) -> Envelope {
    Envelope {
        header: Header {
            version: Version::CURRENT,
            id: EnvelopeId::new(Timestamp(1_700_000_000_000), [7; 10]),
            timestamp: Timestamp(1_700_000_000_000),
            source: Source {
                mesh: "plant-a".parse().unwrap(),
                gateway: "gw1".parse().unwrap(),
            },
            destination: Destination {
                mesh: "supplier-b".parse().unwrap(),
                gateway: None,
            },
            flags: Flags::RELIABLE,
            federation_id: "fed_0123456789abcdef0123456789abcdef".parse().unwrap(),
            agreement_version: 1,
            // A P-384 leaf certificate is about this long.
            certificate: meshfed_proto::envelope::SignerCertificate::new(vec![0x30; 523]),
            encryption: Some(Encryption {
                cipher: Cipher::Aes256Gcm,
                key_id: "ck1_0123456789abcdef0123456789abcdef".parse().unwrap(),
                iv: [5; 12],
            }),
            policy: DeliveryPolicy {
                priority: Priority::try_from(3).unwrap(),
                qos: Qos::AtLeastOnce,
                max_latency: None,
                classification: None,
            },
            metadata: Metadata {
                topic: "bench/load".parse().unwrap(),
                content_type: content_type.parse().unwrap(),
                content_encoding: None,
                schema_id: None,
            },
        },
        hop: Hop {
            path: vec!["plant-a".parse().unwrap(), "supplier-b".parse().unwrap()],
            ttl: 9,
            hops: 1,
        },
        signature: Signature([9; 96]),
        message: Some(
            std::iter::repeat_n(b"0123456789abcdef".as_slice(), PAYLOAD / 16)
                .flatten()
                .copied()
                .collect(),
        ),
        sender: None,
        properties: Default::default(),
        batch: Some(
            BatchProof::from_parts(TreeHash::from_bytes([1; 48]), 64, 5, &[2; 6 * 48]).unwrap(),
        ),
    }
}

/// The same fields as a CBOR map (ciborium, as the wire form is encoded), for scale.
#[derive(Serialize)]
struct CborDelivery<'a> {
    version: (u8, u8),
    id: [u8; 16],
    timestamp: u64,
    source: (&'a str, &'a str),
    destination: (&'a str, Option<&'a str>),
    path: Vec<&'a str>,
    ttl: u8,
    hops: u8,
    flags: u8,
    federation_id: &'a str,
    agreement_version: u32,
    #[serde(with = "serde_bytes")]
    signature: &'a [u8],
    #[serde(with = "serde_bytes")]
    certificate: &'a [u8],
    key_id: Option<&'a str>,
    #[serde(with = "serde_bytes")]
    iv: &'a [u8],
    batch: Option<([u8; 16], u32, u32, serde_bytes::ByteBuf)>,
    priority: u8,
    qos: u8,
    max_latency: Option<u32>,
    topic: &'a str,
    content_type: &'a str,
    #[serde(with = "serde_bytes")]
    message: &'a [u8],
}

/// [`CborDelivery`] as ciborium reads it: owned (it does not borrow from its input).
#[derive(Deserialize)]
#[expect(dead_code, reason = "decoded to be timed, not read")]
struct CborDeliveryOwned {
    version: (u8, u8),
    id: [u8; 16],
    timestamp: u64,
    source: (String, String),
    destination: (String, Option<String>),
    path: Vec<String>,
    ttl: u8,
    hops: u8,
    flags: u8,
    federation_id: String,
    agreement_version: u32,
    signature: serde_bytes::ByteBuf,
    certificate: serde_bytes::ByteBuf,
    key_id: Option<String>,
    iv: serde_bytes::ByteBuf,
    batch: Option<([u8; 16], u32, u32, serde_bytes::ByteBuf)>,
    priority: u8,
    qos: u8,
    max_latency: Option<u32>,
    topic: String,
    content_type: String,
    message: serde_bytes::ByteBuf,
}

fn cbor_of(e: &Envelope) -> CborDelivery<'_> {
    let h = &e.header;
    let enc = h.encryption.as_ref().unwrap();
    let b = e.batch.as_ref().unwrap();
    CborDelivery {
        version: (h.version.major, h.version.minor),
        id: h.id.0,
        timestamp: h.timestamp.0,
        source: (h.source.mesh.as_str(), h.source.gateway.as_str()),
        destination: (h.destination.mesh.as_str(), None),
        path: e.hop.path.iter().map(|m| m.as_str()).collect(),
        ttl: e.hop.ttl,
        hops: e.hop.hops,
        flags: h.flags.bits(),
        federation_id: h.federation_id.as_str(),
        agreement_version: h.agreement_version,
        signature: &e.signature.0,
        certificate: h.certificate.der_bytes(),
        key_id: Some(enc.key_id.as_str()),
        iv: &enc.iv,
        batch: Some((
            [1; 16],
            b.count(),
            b.index(),
            serde_bytes::ByteBuf::from(b.proof().to_bytes()),
        )),
        priority: h.policy.priority.get(),
        qos: h.policy.qos.level(),
        max_latency: None,
        topic: h.metadata.topic.as_str(),
        content_type: h.metadata.content_type.as_str(),
        message: e.message.as_deref().unwrap(),
    }
}

fn delivery(c: &mut Criterion) {
    for (name, content_type) in [
        ("text", "text/plain"),
        ("bytes", "application/octet-stream"),
    ] {
        let e = envelope(content_type);
        let json = e.to_json_string();
        let frame = encode_envelope(&e, false, None);
        let mut cbor = Vec::new();
        ciborium::into_writer(&cbor_of(&e), &mut cbor).unwrap();
        let mut g = c.benchmark_group(format!("delivery_1KiB_{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("encode_json", |b| b.iter(|| black_box(&e).to_json_string()));
        g.bench_function("encode_binary", |b| {
            b.iter(|| encode_envelope(black_box(&e), false, None))
        });
        g.bench_function("encode_cbor_ciborium", |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(2048);
                ciborium::into_writer(&cbor_of(black_box(&e)), &mut out).unwrap();
                out
            })
        });
        g.bench_function("decode_json", |b| {
            b.iter(|| Envelope::from_json(black_box(&json)).unwrap())
        });
        g.bench_function("decode_binary", |b| {
            b.iter(|| Delivered::decode(black_box(&frame)).unwrap())
        });
        g.bench_function("decode_cbor_ciborium", |b| {
            b.iter(|| ciborium::from_reader::<CborDeliveryOwned, _>(black_box(&cbor[..])).unwrap())
        });
        g.finish();
        println!(
            "delivery_1KiB_{name}: json {} B, binary {} B, cbor {} B",
            json.len(),
            frame.len(),
            cbor.len()
        );
    }
}

fn publish(c: &mut Criterion) {
    let payload = "0123456789abcdef".repeat(PAYLOAD / 16);
    let request = SendRequest {
        content_type: Some("text/plain".parse().unwrap()),
        qos: Qos::AtLeastOnce,
        ..SendRequest::new(
            "supplier-b".parse().unwrap(),
            "bench/load".parse().unwrap(),
            serde_json::Value::String(payload.clone()),
        )
    };
    let json = serde_json::to_string(&request).unwrap();
    let binary = Publish {
        content_type: "text/plain".parse().unwrap(),
        qos: Qos::AtLeastOnce,
        ..Publish::new(
            "supplier-b".parse().unwrap(),
            "bench/load".parse().unwrap(),
            payload.into_bytes(),
        )
    };
    let frame = binary.encode();
    let mut g = c.benchmark_group("publish_1KiB_text");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_json", |b| {
        b.iter(|| serde_json::to_string(black_box(&request)).unwrap())
    });
    g.bench_function("encode_binary", |b| b.iter(|| black_box(&binary).encode()));
    g.bench_function("decode_json", |b| {
        b.iter(|| serde_json::from_str::<SendRequest>(black_box(&json)).unwrap())
    });
    g.bench_function("decode_binary", |b| {
        b.iter(|| Publish::decode(black_box(&frame)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, delivery, publish);
criterion_main!(benches);
