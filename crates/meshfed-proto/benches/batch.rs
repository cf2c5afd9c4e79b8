//! Batch signatures against per-message signatures, 1 KiB payloads, per envelope.
//!
//! Every group reports throughput in envelopes (criterion's `elem/s` is msg/s):
//! - `sign`: signing already sealed envelopes (batch: leaf hashes, root, one signature);
//! - `verify`: verifying them (batch: one signature, root recomputed, payload digests);
//! - `sign_verify`: both, the cost one hop's two ends pay for each envelope;
//! - `seal_sign_verify`: the whole origin-to-receiver path including AES-256-GCM;
//! - `split_verify`: a relay's split-off envelope verified alone (signature + proof), and with the
//!   batch signature already verified (proof only).
//!
//! `per_message` is the same work with one signature per envelope; batch sizes 1, 16, 64, 256
//! and 1024 sit beside it in one run, so ratios read directly.
//!
//! `streamed_1KiB` is what a streamed batch (DESIGN §3.4) puts on one envelope's path —
//! `sender_leaf` (its leaf added to the open batch) and `receiver_take` (payload digest checked,
//! leaf added, at the receiver) — beside `head_sign_verify/n`, the head of n envelopes signed and
//! checked against the leaves received, which runs off the path.

#![expect(
    clippy::unwrap_used,
    reason = "benchmark fixtures are constants that parse"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use meshfed_proto::batch::{Leaves, Receiving, SignedBatch, UnsignedEnvelope};
use meshfed_proto::crypto::{ContentSecret, KeyEpoch, Sealer, SigningKey, VerifyingKey};
use meshfed_proto::envelope::{
    ContentType, DeliveryPolicy, Destination, EnvelopeId, Flags, Header, Hop, Label, Metadata,
    Priority, Qos, Source, Timestamp, Version,
};

const PAYLOAD: usize = 1024;
const SIZES: [usize; 5] = [1, 16, 64, 256, 1024];

fn header(n: usize) -> Header {
    let mut rnd = [7u8; 10];
    rnd[..8].copy_from_slice(&(n as u64).to_be_bytes());
    Header {
        version: Version::CURRENT,
        id: EnvelopeId::new(Timestamp(1_700_000_000_000), rnd),
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

struct Fixture {
    signer: SigningKey,
    verifier: VerifyingKey,
    sealer: Sealer,
    payload: Vec<u8>,
    hop: Hop,
}

impl Fixture {
    fn new() -> Self {
        let signer = SigningKey::generate().unwrap();
        let verifier = VerifyingKey::from_sec1(signer.public_key()).unwrap();
        let mesh = "plant-a".parse().unwrap();
        let sealer = ContentSecret::derive(b"shared", b"fed")
            .sealer(&mesh, KeyEpoch([1; 16]))
            .unwrap();
        Self {
            signer,
            verifier,
            sealer,
            payload: vec![b'x'; PAYLOAD],
            hop: Hop::origin(mesh, Hop::DEFAULT_TTL),
        }
    }

    fn sealed(&mut self, n: usize) -> Vec<UnsignedEnvelope> {
        (0..n)
            .map(|i| {
                UnsignedEnvelope::seal(header(i), self.hop.clone(), &self.payload, &mut self.sealer)
                    .unwrap()
            })
            .collect()
    }
}

fn per_message(c: &mut Criterion, fx: &mut Fixture) {
    let mut g = c.benchmark_group("per_message_1KiB");
    g.throughput(Throughput::Elements(1));
    let one = fx.sealed(1).remove(0);
    let signed = one.clone().sign(&fx.signer).unwrap();
    g.bench_function("sign", |b| {
        b.iter_batched(
            || one.clone(),
            |e| e.sign(&fx.signer).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("verify", |b| {
        b.iter(|| black_box(&signed).verify(&fx.verifier).unwrap())
    });
    g.bench_function("sign_verify", |b| {
        b.iter_batched(
            || one.clone(),
            |e| e.sign(&fx.signer).unwrap().verify(&fx.verifier).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("seal_sign_verify", |b| {
        b.iter(|| {
            let e = UnsignedEnvelope::seal(header(0), fx.hop.clone(), &fx.payload, &mut fx.sealer)
                .unwrap();
            e.sign(&fx.signer).unwrap().verify(&fx.verifier).unwrap()
        })
    });
    g.finish();
}

fn batches(c: &mut Criterion, fx: &mut Fixture) {
    for op in ["sign", "verify", "sign_verify", "seal_sign_verify"] {
        let mut g = c.benchmark_group(format!("batch_1KiB/{op}"));
        for n in SIZES {
            g.throughput(Throughput::Elements(n as u64));
            let sealed = fx.sealed(n);
            let batch = SignedBatch::sign(sealed.clone(), &fx.signer).unwrap();
            g.bench_function(n.to_string(), |b| match op {
                "sign" => b.iter_batched(
                    || sealed.clone(),
                    |s| SignedBatch::sign(s, &fx.signer).unwrap(),
                    BatchSize::LargeInput,
                ),
                "verify" => b.iter(|| black_box(&batch).verify(&fx.verifier).unwrap()),
                "sign_verify" => b.iter_batched(
                    || sealed.clone(),
                    |s| {
                        SignedBatch::sign(s, &fx.signer)
                            .unwrap()
                            .verify(&fx.verifier)
                            .unwrap()
                    },
                    BatchSize::LargeInput,
                ),
                _ => b.iter(|| {
                    SignedBatch::sign(fx.sealed(n), &fx.signer)
                        .unwrap()
                        .verify(&fx.verifier)
                        .unwrap()
                }),
            });
        }
        g.finish();
    }
}

fn split(c: &mut Criterion, fx: &mut Fixture) {
    let mut g = c.benchmark_group("split_1KiB_of_1024");
    g.throughput(Throughput::Elements(1));
    let proven = SignedBatch::sign(fx.sealed(1024), &fx.signer)
        .unwrap()
        .proof(517)
        .unwrap();
    g.bench_function("verify", |b| {
        b.iter(|| black_box(&proven).verify(&fx.verifier).unwrap())
    });
    g.bench_function("verify_inclusion", |b| {
        b.iter(|| black_box(&proven).verify_inclusion().unwrap())
    });
    g.finish();
}

fn streamed(c: &mut Criterion, fx: &mut Fixture) {
    let mut g = c.benchmark_group("streamed_1KiB");
    g.throughput(Throughput::Elements(1));
    let one = fx.sealed(1).remove(0);
    g.bench_function("sender_leaf", |b| {
        b.iter_batched(
            || Leaves::new(0, &one),
            |mut l| l.push(black_box(&one)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("receiver_take", |b| {
        b.iter_batched(
            || (Receiving::new(4096, Duration::from_secs(10)), one.clone()),
            |(mut r, e)| {
                r.take(0, 0, vec![e], std::time::Instant::now(), |_| ())
                    .unwrap();
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    let mut g = c.benchmark_group("streamed_1KiB/head_sign_verify");
    for n in SIZES {
        g.throughput(Throughput::Elements(n as u64));
        let sealed = fx.sealed(n);
        let mut leaves = Leaves::new(0, &sealed[0]);
        for e in &sealed {
            leaves.push(e).unwrap();
        }
        g.bench_function(n.to_string(), |b| {
            b.iter(|| {
                let head = leaves.sign(&fx.signer).unwrap();
                leaves.clone().verify(&head, &fx.verifier).unwrap()
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let mut fx = Fixture::new();
    per_message(c, &mut fx);
    batches(c, &mut fx);
    split(c, &mut fx);
    streamed(c, &mut fx);
}

criterion_group! {
    name = batch;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = benches
}
criterion_main!(batch);
