//! Envelope encode/decode, sign/verify and seal/open of 1 KiB payloads, each beside the bare
//! aws-lc-rs operation it is built on, so the envelope's own cost reads as the difference.

#![expect(
    clippy::unwrap_used,
    reason = "benchmark fixtures are constants that parse"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshfed_proto::crypto::{ContentSecret, KeyEpoch, SigningKey, VerifyingKey};
use meshfed_proto::envelope::{
    ContentType, DeliveryPolicy, Destination, EnvelopeId, Flags, Header, Hop, Label, Metadata,
    Priority, Qos, Source, Timestamp, Version, WireEnvelope,
};

const PAYLOAD: usize = 1024;

fn header() -> Header {
    Header {
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
        // A P-384 leaf certificate is about this long.
        agreement_version: 1,
        certificate: meshfed_proto::envelope::SignerCertificate::new(vec![0x30; 620]),
        encryption: None,
        policy: DeliveryPolicy {
            priority: Priority::try_from(3).unwrap(),
            qos: Qos::AtLeastOnce,
            max_latency: None,
            classification: None,
        },
        metadata: Metadata {
            topic: "line-3/temperature".parse().unwrap(),
            content_type: ContentType::json(),
            content_encoding: None,
            schema_id: Some(Label::parse("schema_id", "temp-v1").unwrap()),
        },
    }
}

fn benches(c: &mut Criterion) {
    let signer = SigningKey::generate().unwrap();
    let verifier = VerifyingKey::from_sec1(signer.public_key()).unwrap();
    let secret = ContentSecret::derive(b"shared", b"fed");
    let mesh = "plant-a".parse().unwrap();
    let mut sealer = secret.sealer(&mesh, KeyEpoch([1; 16])).unwrap();
    let payload = vec![b'x'; PAYLOAD];
    let hop = Hop::origin(mesh.clone(), Hop::DEFAULT_TTL);
    let env = WireEnvelope::seal(header(), hop.clone(), &payload, &mut sealer, &signer).unwrap();
    let opener = secret.opener(&mesh, sealer.key_id()).unwrap();
    // As a link carries it: the certificate named by digest, not carried.
    let bytes = env.encode_on_link();

    let mut g = c.benchmark_group("envelope_1KiB");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| b.iter(|| black_box(&env).encode_on_link()));
    g.bench_function("decode", |b| {
        b.iter(|| WireEnvelope::decode(black_box(&bytes)).unwrap())
    });
    g.bench_function("seal_and_sign", |b| {
        b.iter(|| {
            WireEnvelope::seal(
                header(),
                hop.clone(),
                black_box(&payload),
                &mut sealer,
                &signer,
            )
            .unwrap()
        })
    });
    g.bench_function("verify", |b| {
        b.iter(|| black_box(&env).verify(&verifier).unwrap())
    });
    g.bench_function("open", |b| {
        b.iter(|| black_box(&env).open(&opener).unwrap())
    });
    g.bench_function("decode_verify_open", |b| {
        b.iter(|| {
            let e = WireEnvelope::decode(black_box(&bytes)).unwrap();
            e.verify(&verifier).unwrap();
            e.open(&opener).unwrap()
        })
    });
    g.finish();

    // The bare primitives, for comparison.
    let mut g = c.benchmark_group("aws_lc_rs_baseline");
    g.throughput(Throughput::Elements(1));
    let msg = vec![0u8; env.header_bytes().len() + 48];
    let sig = signer.sign(&msg).unwrap();
    g.bench_function("p384_sign", |b| {
        b.iter(|| signer.sign(black_box(&msg)).unwrap())
    });
    g.bench_function("p384_verify", |b| {
        b.iter(|| verifier.verify(black_box(&msg), &sig).unwrap())
    });
    let mut raw_sealer = secret.sealer(&mesh, KeyEpoch([2; 16])).unwrap();
    g.bench_function("aes256gcm_seal_1KiB", |b| {
        b.iter(|| {
            let iv = raw_sealer.next_iv().unwrap();
            let mut buf = payload.clone();
            raw_sealer.seal_in_place(iv, b"aad", &mut buf).unwrap();
            buf
        })
    });
    g.bench_function("sha384_1KiB", |b| {
        b.iter(|| meshfed_proto::crypto::sha384(black_box(&payload)))
    });
    g.finish();
}

criterion_group!(envelope, benches);
criterion_main!(envelope);
