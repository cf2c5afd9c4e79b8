//! The audit trail's own costs, per envelope and per record.
//!
//! - `messages_record/N`: what the audit writer does for one `messages` record of N envelopes
//!   (a signed batch's digests): a commitment per envelope, the record's CBOR, its leaf hash and
//!   its MAC. Throughput in envelopes (`elem/s`), to read beside `meshfed bench --audit full`.
//! - `verify/100000`: `meshfed audit verify`'s check of a log of 100,000 small records (MAC,
//!   leaf hash, decoding, sequence, the tree's frontier). Throughput in records; a million take
//!   ten times as long.

#![expect(
    clippy::unwrap_used,
    reason = "benchmark fixtures are constants that parse"
)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use meshfed_audit::record::{
    AuditKey, BatchRef, Delivery, Event, MessageDigest, Record, Scope, Text,
};
use meshfed_audit::verify::{Keys, StoredRecord, verify};
use meshfed_proto::batch::merkle;
use meshfed_proto::envelope::{EnvelopeId, Timestamp};

fn scope() -> Scope {
    Scope::Federation("fed_0123456789abcdef0123456789abcdef".parse().unwrap())
}

/// The digests of `n` envelopes of one batch, their commitments made under `key`.
fn messages(key: &AuditKey, n: usize) -> Event {
    let messages = (0..n)
        .map(|i| {
            let envelope = EnvelopeId::new(Timestamp(1_777_636_800_000), [i as u8; 10]);
            let (commitment, _) = key.commit(&envelope, &[i as u8; 48]);
            MessageDigest {
                envelope,
                source: "plant-a".parse().unwrap(),
                destination: "supplier-b".parse().unwrap(),
                topic: Text::new("plant/line-3/temperature"),
                size: 1024,
                qos: 1,
                index: i as u64,
                commitment,
            }
        })
        .collect();
    Event::Messages {
        direction: Delivery::Received,
        peer: "plant-a".parse().unwrap(),
        batch: Some(BatchRef {
            number: 0,
            count: n as u64,
            root: merkle::leaf_hash(b"root"),
        }),
        messages,
    }
}

fn messages_record(c: &mut Criterion) {
    let key = AuditKey::from_bytes([7; 32]);
    let mut group = c.benchmark_group("messages_record");
    for n in [64usize, 625, 2048] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{n}"), |b| {
            b.iter(|| {
                let record = Record {
                    scope: scope(),
                    seq: 42,
                    time: Timestamp(1_777_636_800_000),
                    event: messages(&key, n),
                };
                let body = record.to_bytes();
                let leaf = merkle::leaf_hash(&body);
                black_box(key.mac(&record.scope, record.seq, &leaf));
                body
            });
        });
    }
    group.finish();
}

fn verify_log(c: &mut Criterion) {
    const RECORDS: u64 = 100_000;
    let key = AuditKey::from_bytes([7; 32]);
    let rows: Vec<StoredRecord> = (0..RECORDS)
        .map(|seq| {
            let record = Record {
                scope: scope(),
                seq,
                time: Timestamp(1_777_636_800_000 + seq),
                event: Event::Discrepancy {
                    peer: "plant-a".parse().unwrap(),
                    what: Text::new("a record of about a hundred bytes, as most of a log's are"),
                },
            };
            let bytes = record.to_bytes();
            let leaf_hash = merkle::leaf_hash(&bytes);
            StoredRecord {
                position: seq + 1,
                seq,
                mac: key.mac(&record.scope, seq, &leaf_hash),
                bytes: Some(bytes),
                leaf_hash,
            }
        })
        .collect();
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10);
    group.bench_function(format!("{RECORDS}"), |b| {
        b.iter_batched(
            || rows.clone(),
            |rows| {
                let v = verify(
                    scope(),
                    &key,
                    rows,
                    &[],
                    &[],
                    Keys {
                        own: &|_| None,
                        partner: &|_| None,
                    },
                );
                assert!(v.problems.is_empty(), "{:?}", v.problems.first());
                v.records
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, messages_record, verify_log);
criterion_main!(benches);
