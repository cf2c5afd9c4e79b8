//! Group commit: 1 KiB outbound appends, `group` independent requests submitted at once from two
//! threads, then all waited for. Throughput is in messages; the commits each round took are
//! printed from `Journal::stats`. Deleting the round's messages is not timed.
//!
//! Writer CPU (`journal_writer_cpu_1KiB`): what the journal costs per message at full rate, as
//! the gateway's stream uses it — appends in requests of `per_request` (one request per turn of
//! the stream task), then the round's acknowledgements — measured as the writer thread's CPU
//! time (`JournalStats::writer_cpu`), not wall time: criterion's "time" is CPU per round of
//! [`ROUND`] messages, and the µs per message (append and delete) is printed.
//!
//! Run: `cargo bench -p meshfed-store --bench journal` (`-- writer_cpu` for that part alone).

#![expect(clippy::expect_used, reason = "a benchmark stops on any error")]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meshfed_proto::envelope::{EnvelopeId, Priority, Qos, Timestamp};
use meshfed_store::journal::OutboundMessage;
use meshfed_store::{Journal, JournalConfig, Ticket, Write};

const SUBMITTERS: usize = 2;

/// Messages per round of the writer CPU benchmark.
const ROUND: u64 = 4096;

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
        if rounds == 0 {
            // Filtered out.
            continue;
        }
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

/// Appends `ROUND` messages in requests of `per_request`, acknowledges them, and returns the
/// writer CPU time that took (everything committed).
fn cpu_round(journal: &Journal, next: &mut u64, per_request: u64) -> Duration {
    let first = *next;
    *next += ROUND;
    let before = journal
        .stats()
        .writer_cpu
        .expect("the writer's CPU time (Linux)");
    let tickets: Vec<Ticket> = (first..first + ROUND)
        .step_by(per_request as usize)
        .map(|start| {
            let writes = (start..(start + per_request).min(first + ROUND))
                .map(|n| Write::AppendOutbound(message(n)))
                .collect();
            journal.submit_all(writes)
        })
        .collect();
    for t in tickets {
        t.wait().expect("appends committed");
    }
    journal.acknowledge((first..first + ROUND).map(|n| message(n).id));
    // Acknowledgements made before a request are committed with it at the latest.
    journal.submit_all(Vec::new()).wait().expect("a commit");
    journal.stats().writer_cpu.expect("the writer's CPU time") - before
}

fn writer_cpu(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let journal = Journal::open(&dir.path().join("bench.sqlite"), JournalConfig::default())
        .expect("the journal opens");
    let mut next = 0u64;
    let mut g = c.benchmark_group("journal_writer_cpu_1KiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(ROUND));
    for per_request in [1u64, 64, 1024] {
        let mut cpu = Duration::ZERO;
        let mut messages = 0u64;
        g.bench_with_input(
            BenchmarkId::new("per_request", per_request),
            &per_request,
            |b, &per_request| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        spent += cpu_round(&journal, &mut next, per_request);
                    }
                    cpu += spent;
                    messages += iters * ROUND;
                    spent
                })
            },
        );
        if messages == 0 {
            // Filtered out.
            continue;
        }
        println!(
            "per_request {per_request}: writer CPU {:.2} µs per message (append + acknowledgement), {messages} messages",
            cpu.as_secs_f64() * 1e6 / messages.max(1) as f64
        );
    }
    g.finish();
}

criterion_group!(benches, group_commit, writer_cpu);
criterion_main!(benches);
