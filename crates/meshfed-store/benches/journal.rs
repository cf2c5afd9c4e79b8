//! Group commit: 1 KiB outbound appends, `group` independent requests submitted at once from two
//! threads, then all waited for. Throughput is in messages; the commits each round took are
//! printed from `Journal::stats`. Deleting the round's messages is not timed.
//!
//! Run: `cargo bench -p meshfed-store --bench journal`.

#![expect(clippy::expect_used, reason = "a benchmark stops on any error")]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meshfed_proto::envelope::{EnvelopeId, Priority, Qos, Timestamp};
use meshfed_store::journal::OutboundMessage;
use meshfed_store::{Journal, JournalConfig, Ticket};

const SUBMITTERS: usize = 2;

fn message(n: u64) -> OutboundMessage {
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    OutboundMessage {
        id: EnvelopeId(id),
        destination: "plant-b".parse().expect("a valid mesh id"),
        priority: Priority::default(),
        qos: Qos::AtLeastOnce,
        deadline: None,
        order: None,
        enqueued: Timestamp(n),
        payload: vec![0x5a; 1024],
    }
}

/// Submits `group` appends from `SUBMITTERS` threads, then waits for every ticket.
fn round(journal: &Journal, next: &mut u64, group: usize) -> Vec<EnvelopeId> {
    let first = *next;
    *next += group as u64;
    let per = group.div_ceil(SUBMITTERS);
    let tickets: Vec<Ticket> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..SUBMITTERS)
            .map(|t| {
                let start = first + (t * per) as u64;
                let end = (start + per as u64).min(first + group as u64);
                s.spawn(move || {
                    (start..end)
                        .map(|n| journal.append_outbound(message(n)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a submitter thread"))
            .collect()
    });
    for t in tickets {
        t.wait().expect("append committed");
    }
    (first..first + group as u64)
        .map(|n| message(n).id)
        .collect()
}

fn group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let journal = Journal::open(&dir.path().join("bench.sqlite"), JournalConfig::default())
        .expect("the journal opens");
    let mut next = 0u64;
    let mut g = c.benchmark_group("journal_append_1KiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for group in [1usize, 16, 256, 1024] {
        g.throughput(Throughput::Elements(group as u64));
        let before = journal.stats();
        let mut rounds = 0u64;
        g.bench_with_input(BenchmarkId::new("group", group), &group, |b, &group| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let ids = round(&journal, &mut next, group);
                    spent += start.elapsed();
                    rounds += 1;
                    journal
                        .remove_outbound(ids)
                        .wait()
                        .expect("removal committed");
                }
                spent
            })
        });
        let after = journal.stats();
        // Each round also committed one removal.
        let commits = (after.commits - before.commits).saturating_sub(rounds);
        println!(
            "group {group}: {rounds} rounds, {:.2} append commits per round, {:.0} messages per commit",
            commits as f64 / rounds.max(1) as f64,
            (rounds * group as u64) as f64 / commits.max(1) as f64,
        );
    }
    g.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
