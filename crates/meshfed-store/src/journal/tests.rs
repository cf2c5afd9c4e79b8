//! The journal against real files: ordering, removal, the dedup window, cursors, failures,
//! concurrency and shutdown.

use std::sync::Arc;

use meshfed_proto::MeshId;
use meshfed_proto::envelope::{EnvelopeId, Priority, Qos, Timestamp};
use rusqlite::Connection;

use super::*;

fn id(n: u32) -> EnvelopeId {
    let mut b = [0u8; 16];
    b[12..].copy_from_slice(&n.to_be_bytes());
    EnvelopeId(b)
}

fn mesh(s: &str) -> MeshId {
    s.parse().unwrap()
}

fn outbound(n: u32, destination: &str, priority: u8) -> OutboundMessage {
    OutboundMessage {
        id: id(n),
        destination: mesh(destination),
        priority: Priority::try_from(priority).unwrap(),
        qos: Qos::AtLeastOnce,
        deadline: None,
        order: None,
        enqueued: Timestamp(1_000 + u64::from(n)),
        payload: vec![n as u8; 10 + n as usize],
    }
}

fn open() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("node.sqlite"), JournalConfig::default()).unwrap();
    (dir, journal)
}

pub(super) fn ids(pending: &[StoredOutbound]) -> Vec<EnvelopeId> {
    pending.iter().map(|p| p.message.id).collect()
}

pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text += &format!(": {s}");
        cur = s.source();
    }
    text
}

#[test]
fn pending_outbound_is_by_priority_then_acceptance_order() {
    let (_dir, j) = open();
    let plan = [(1, 0), (2, 5), (3, 0), (4, 7), (5, 5), (6, 0)];
    for (n, prio) in plan {
        j.append_outbound(outbound(n, "plant-b", prio))
            .wait()
            .unwrap();
    }
    j.append_outbound(outbound(99, "plant-c", 7))
        .wait()
        .unwrap();
    let pending = j.pending_outbound(&mesh("plant-b")).unwrap();
    assert_eq!(ids(&pending), [4, 2, 5, 1, 3, 6].map(id));
    assert_eq!(pending[0].message, outbound(4, "plant-b", 7), "round trip");
    let mut by_acceptance = pending.clone();
    by_acceptance.sort_by_key(|p| p.position);
    assert_eq!(ids(&by_acceptance), [1, 2, 3, 4, 5, 6].map(id));
}

#[test]
fn outbound_fields_round_trip_including_deadline_and_order_scope() {
    let (_dir, j) = open();
    let mut m = outbound(7, "plant-b", 3);
    m.qos = Qos::ExactlyOnce;
    m.deadline = Some(Timestamp(9_999));
    m.order = Some(OrderScope {
        source: mesh("plant-a"),
        destination: mesh("plant-z"),
        topic: "line/1/temp".parse().unwrap(),
    });
    j.append_outbound(m.clone()).wait().unwrap();
    // Appending the same id again changes nothing (a retried persist is harmless).
    let mut again = m.clone();
    again.payload = b"other".to_vec();
    j.append_outbound(again).wait().unwrap();
    let pending = j.pending_outbound(&mesh("plant-b")).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].message, m);
}

#[test]
fn removing_acknowledged_ids_deletes_only_those() {
    let (_dir, j) = open();
    for n in 1..=5 {
        j.append_outbound(outbound(n, "plant-b", 1)).wait().unwrap();
    }
    j.remove_outbound(vec![id(2), id(4), id(77)])
        .wait()
        .unwrap();
    let pending = j.pending_outbound(&mesh("plant-b")).unwrap();
    assert_eq!(ids(&pending), [1, 3, 5].map(id));
    let backlog = j.backlog_of(&mesh("plant-b")).unwrap();
    assert_eq!((backlog.messages, backlog.bytes), (3, 11 + 13 + 15));
}

/// Submits `writes`; once they are committed, signals `committed` and holds the writer until
/// `release` is signalled.
fn submit_and_hold(
    j: &Journal,
    writes: Vec<Write>,
) -> (
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::SyncSender<()>,
) {
    let (committed_tx, committed) = std::sync::mpsc::sync_channel(1);
    let (release, release_rx) = std::sync::mpsc::sync_channel::<()>(1);
    j.submit_then(writes, move |outcome| {
        outcome.unwrap();
        committed_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    (committed, release)
}

#[test]
fn acknowledgements_are_committed_with_the_next_batch_not_behind_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        max_batch_writes: 1,
        ..JournalConfig::default()
    };
    let j = Journal::open(&dir.path().join("node.sqlite"), config).unwrap();
    j.append_outbound(outbound(1, "plant-b", 0)).wait().unwrap();
    // The writer stops after committing 2, while 3 to 10 queue behind it.
    let (committed_2, release_2) =
        submit_and_hold(&j, vec![Write::AppendOutbound(outbound(2, "plant-b", 0))]);
    committed_2.recv().unwrap();
    let (committed_3, release_3) =
        submit_and_hold(&j, vec![Write::AppendOutbound(outbound(3, "plant-b", 0))]);
    let rest: Vec<Ticket> = (4..=10)
        .map(|n| j.append_outbound(outbound(n, "plant-b", 0)))
        .collect();
    // 1 is stored; 3 is the next batch; 10 is six batches away.
    j.acknowledge([id(1), id(3), id(10)]);
    release_2.send(()).unwrap();
    committed_3.recv().unwrap();
    assert_eq!(
        ids(&j.pending_outbound(&mesh("plant-b")).unwrap()),
        [id(2)],
        "the batch after the acknowledgement deletes 1 and 3; 4 to 10 are still queued"
    );
    release_3.send(()).unwrap();
    rest.into_iter().try_for_each(Ticket::wait).unwrap();
    j.close().unwrap();
    let again = Journal::open(&dir.path().join("node.sqlite"), JournalConfig::default()).unwrap();
    assert_eq!(
        ids(&again.pending_outbound(&mesh("plant-b")).unwrap()),
        [2, 4, 5, 6, 7, 8, 9].map(id),
        "10, acknowledged while its append was queued, is deleted once it is stored"
    );
}

#[test]
fn closing_commits_the_last_acknowledgements() {
    let (dir, j) = open();
    let tickets: Vec<Ticket> = (1..=50)
        .map(|n| j.append_outbound(outbound(n, "plant-b", 0)))
        .collect();
    // Some appends may still be queued: their deletions wait for them.
    j.acknowledge((1..=50).filter(|n| n % 2 == 0).map(id));
    j.close().unwrap();
    tickets.into_iter().try_for_each(Ticket::wait).unwrap();
    let again = Journal::open(&dir.path().join("node.sqlite"), JournalConfig::default()).unwrap();
    let left = ids(&again.pending_outbound(&mesh("plant-b")).unwrap());
    let odd: Vec<EnvelopeId> = (1..=50).filter(|n| n % 2 == 1).map(id).collect();
    assert_eq!(left, odd);
}

#[test]
fn an_idle_writer_commits_acknowledgements_alone() {
    let (_dir, j) = open();
    for n in 1..=3 {
        j.append_outbound(outbound(n, "plant-b", 0)).wait().unwrap();
    }
    j.acknowledge([id(2), id(77)]);
    // Nothing else is submitted: the acknowledgement wakes the writer. A bound on failure.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while j.stats().acknowledged < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "not committed: {:?}",
            j.stats()
        );
        std::thread::yield_now();
    }
    assert_eq!(j.stats().commits, 4, "one commit for the acknowledgement");
    assert_eq!(
        ids(&j.pending_outbound(&mesh("plant-b")).unwrap()),
        [1, 3].map(id)
    );
}

#[test]
fn backlog_counts_messages_and_bytes_per_destination() {
    let (_dir, j) = open();
    for n in 1..=3 {
        j.append_outbound(outbound(n, "plant-b", 0)).wait().unwrap();
    }
    j.append_outbound(outbound(4, "plant-c", 0)).wait().unwrap();
    let all = j.backlog().unwrap();
    assert_eq!(
        all,
        vec![
            Backlog {
                destination: mesh("plant-b"),
                messages: 3,
                bytes: 11 + 12 + 13
            },
            Backlog {
                destination: mesh("plant-c"),
                messages: 1,
                bytes: 14
            },
        ]
    );
    let none = j.backlog_of(&mesh("plant-x")).unwrap();
    assert_eq!((none.messages, none.bytes), (0, 0));
}

#[test]
fn dedup_window_expires_entries_at_until() {
    let (_dir, j) = open();
    j.remember_delivered(id(1), Timestamp(100)).wait().unwrap();
    j.remember_delivered(id(2), Timestamp(200)).wait().unwrap();
    j.remember_delivered(id(3), Timestamp(300)).wait().unwrap();
    // Remembering again keeps the later expiry.
    j.remember_delivered(id(1), Timestamp(50)).wait().unwrap();
    let at = |now| {
        j.delivered_ids(Timestamp(now))
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(at(0), [1, 2, 3].map(id));
    assert_eq!(
        at(100),
        [2, 3].map(id),
        "an entry is gone once now >= until"
    );
    j.submit(Write::ForgetExpired {
        now: Timestamp(200),
    })
    .wait()
    .unwrap();
    assert_eq!(at(0), [id(3)], "expired entries are deleted");
    j.submit(Write::ForgetDelivered(vec![id(3)]))
        .wait()
        .unwrap();
    assert!(at(0).is_empty());
}

#[test]
fn cursor_round_trips_and_consumed_messages_go() {
    let (_dir, j) = open();
    let sub: SubscriptionName = "orders".parse().unwrap();
    let other: SubscriptionName = "audit".parse().unwrap();
    assert_eq!(j.cursor(&sub).unwrap(), None);
    for n in 1..=4 {
        j.append_inbound(InboundMessage {
            subscription: sub.clone(),
            id: id(n),
            received: Timestamp(u64::from(n)),
            source: None,
            payload: vec![1; 3],
        })
        .wait()
        .unwrap();
    }
    let all = j.inbound_after(&sub, None, 10).unwrap();
    assert_eq!(all.len(), 4);
    assert!(j.inbound_after(&other, None, 10).unwrap().is_empty());
    let second = all[1].seq;
    j.save_cursor(sub.clone(), second).wait().unwrap();
    assert_eq!(j.cursor(&sub).unwrap(), Some(second));
    let rest = j.inbound_after(&sub, Some(second), 1).unwrap();
    assert_eq!(rest.len(), 1, "limit holds");
    assert_eq!(rest[0].message.id, id(3));
    assert_eq!(
        j.inbound_after(&sub, None, 10).unwrap().len(),
        2,
        "messages up to the cursor are deleted"
    );
    // A cursor never moves back.
    j.save_cursor(sub.clone(), all[0].seq).wait().unwrap();
    assert_eq!(j.cursor(&sub).unwrap(), Some(second));
    let last = all[3].seq;
    j.save_cursor(sub.clone(), last).wait().unwrap();
    assert_eq!(
        j.cursors().unwrap(),
        vec![Cursor {
            subscription: sub.clone(),
            delivered: last
        }]
    );
    // With every message consumed, new ones still come after the cursor.
    j.append_inbound(InboundMessage {
        subscription: sub.clone(),
        id: id(5),
        received: Timestamp(5),
        source: None,
        payload: vec![],
    })
    .wait()
    .unwrap();
    let after = j.inbound_after(&sub, j.cursor(&sub).unwrap(), 10).unwrap();
    assert_eq!(after.len(), 1);
    assert!(after[0].seq > last);
}

fn inbound(sub: &SubscriptionName, n: u32) -> InboundMessage {
    InboundMessage {
        subscription: sub.clone(),
        id: id(n),
        received: Timestamp(u64::from(n)),
        source: None,
        payload: vec![n as u8; 3],
    }
}

#[test]
fn a_failed_commit_fails_every_ticket_of_the_batch() {
    let (dir, j) = open();
    // Sabotage: every inbound insert leaves a deferred foreign-key violation, which SQLite
    // reports at COMMIT.
    let raw = Connection::open(dir.path().join("node.sqlite")).unwrap();
    raw.execute_batch(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);
         CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
         CREATE TRIGGER sabotage AFTER INSERT ON inbound BEGIN INSERT INTO child VALUES (1); END;",
    )
    .unwrap();
    let sub: SubscriptionName = "orders".parse().unwrap();
    // The exactly-once shape: the copy for a durable subscriber and the delivered id together,
    // with outbound appends (segment log only) in between.
    let mut tickets = Vec::new();
    let mut appends = Vec::new();
    for n in 1..=50 {
        tickets.push(j.submit_all(vec![
            Write::AppendInbound(inbound(&sub, n)),
            Write::RememberDelivered(DeliveredId {
                id: id(n),
                until: Timestamp(10_000),
            }),
        ]));
        appends.push(j.append_outbound(outbound(100 + n, "plant-b", 0)));
    }
    for t in tickets {
        let err = t.wait().unwrap_err();
        assert!(matches!(err, JournalError::CommitFailed { .. }), "{err:?}");
        let text = chain(&err);
        assert!(
            text.starts_with("the journal could not commit a batch of "),
            "{text}"
        );
        assert!(text.contains("none of them is stored"), "{text}");
        assert!(text.contains("FOREIGN KEY constraint failed"), "{text}");
    }
    appends.into_iter().try_for_each(Ticket::wait).unwrap();
    assert!(j.inbound_after(&sub, None, 100).unwrap().is_empty());
    assert!(
        j.delivered_ids(Timestamp(0)).unwrap().is_empty(),
        "all or nothing: no delivered id without its message"
    );
    assert_eq!(j.backlog_of(&mesh("plant-b")).unwrap().messages, 50);
    raw.execute_batch("DROP TRIGGER sabotage").unwrap();
    j.append_inbound(inbound(&sub, 51)).wait().unwrap();
    assert_eq!(j.inbound_after(&sub, None, 100).unwrap().len(), 1);
    j.close().unwrap();
    let again = Journal::open(&dir.path().join("node.sqlite"), JournalConfig::default()).unwrap();
    assert!(again.delivered_ids(Timestamp(0)).unwrap().is_empty());
    assert_eq!(again.backlog_of(&mesh("plant-b")).unwrap().messages, 50);
}

#[test]
fn a_bad_request_is_rolled_back_alone() {
    let (_dir, j) = open();
    let mut bad = outbound(2, "plant-b", 0);
    bad.enqueued = Timestamp(u64::MAX);
    let good = j.append_outbound(outbound(1, "plant-b", 0));
    // All-or-nothing: the good write in the same request goes too.
    let mixed = j.submit_all(vec![
        Write::AppendOutbound(outbound(3, "plant-b", 0)),
        Write::AppendOutbound(bad),
    ]);
    let after = j.append_outbound(outbound(4, "plant-b", 0));
    good.wait().unwrap();
    let err = mixed.wait().unwrap_err();
    assert_eq!(
        chain(&err),
        "the journal rolled back a write: enqueued 18446744073709551615 ms is beyond the \
         largest timestamp the store can hold"
    );
    after.wait().unwrap();
    assert_eq!(
        ids(&j.pending_outbound(&mesh("plant-b")).unwrap()),
        [1, 4].map(id)
    );
}

#[test]
fn writes_from_many_threads_are_all_committed() {
    let (dir, j) = open();
    let j = Arc::new(j);
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let j = Arc::clone(&j);
            std::thread::spawn(move || {
                let tickets: Vec<Ticket> = (0..500)
                    .map(|i| j.append_outbound(outbound(t * 1_000 + i, "plant-b", (i % 8) as u8)))
                    .collect();
                tickets.into_iter().try_for_each(Ticket::wait)
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(j.backlog_of(&mesh("plant-b")).unwrap().messages, 2_000);
    drop(j);
    let again = Journal::open(&dir.path().join("node.sqlite"), JournalConfig::default()).unwrap();
    assert_eq!(
        again.pending_outbound(&mesh("plant-b")).unwrap().len(),
        2_000
    );
}

#[test]
fn closing_commits_everything_submitted() {
    let (dir, j) = open();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for n in 0..1_000 {
        let done = done_tx.clone();
        j.submit_then(
            vec![Write::AppendOutbound(outbound(n, "plant-b", 0))],
            move |outcome| done.send(outcome.is_ok()).unwrap(),
        );
    }
    drop(done_tx);
    j.close().unwrap();
    assert_eq!(done_rx.iter().filter(|ok| *ok).count(), 1_000);
    let again = Journal::open(&dir.path().join("node.sqlite"), JournalConfig::default()).unwrap();
    assert_eq!(again.backlog_of(&mesh("plant-b")).unwrap().messages, 1_000);
}

#[test]
fn concurrent_requests_share_commits() {
    let (_dir, j) = open();
    let tickets: Vec<Ticket> = (0..2_000)
        .map(|n| j.append_outbound(outbound(n, "plant-b", 0)))
        .collect();
    tickets.into_iter().try_for_each(Ticket::wait).unwrap();
    let stats = j.stats();
    assert_eq!((stats.requests, stats.failed), (2_000, 0));
    assert!(
        stats.commits < 1_000,
        "requests queued together are committed together: {stats:?}"
    );
}

#[test]
fn the_observer_is_told_of_each_commit_before_its_tickets_complete() {
    let (_dir, j) = open();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = Arc::clone(&seen);
    assert!(j.observe(move |c| into.lock().unwrap().push(c)));
    assert!(!j.observe(|_| {}), "a second observer is refused");
    j.submit_all(vec![
        Write::AppendOutbound(outbound(1, "plant-b", 0)),
        Write::AppendOutbound(outbound(2, "plant-b", 0)),
    ])
    .wait()
    .unwrap();
    j.append_outbound(outbound(3, "plant-b", 0)).wait().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len() as u64, j.stats().commits, "{seen:?}");
    assert_eq!(seen.iter().map(|c| c.writes).sum::<usize>(), 3, "{seen:?}");
    assert!(seen.iter().all(|c| c.took > Duration::ZERO), "{seen:?}");
}

#[test]
fn stats_count_failed_requests() {
    let (_dir, j) = open();
    let mut bad = outbound(1, "plant-b", 0);
    bad.deadline = Some(Timestamp(u64::MAX));
    assert!(j.append_outbound(bad).wait().is_err());
    assert_eq!(j.stats().failed, 1);
}

#[test]
fn a_journal_and_the_registry_share_one_file() {
    let (dir, j) = open();
    j.append_outbound(outbound(1, "plant-b", 0)).wait().unwrap();
    assert_eq!(j.stats().commits, 1);
    // The registry opens the same file at the same schema version.
    crate::Store::open(&dir.path().join("node.sqlite")).unwrap();
    j.close().unwrap();
    let again = Journal::open(&dir.path().join("node.sqlite"), JournalConfig::default()).unwrap();
    assert_eq!(again.backlog_of(&mesh("plant-b")).unwrap().messages, 1);
    assert_eq!(
        JournalStats {
            writer_cpu: None,
            ..again.stats()
        },
        JournalStats::default(),
        "stats start afresh"
    );
}

#[test]
fn small_batch_bounds_still_commit_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        queue_capacity: 1,
        max_batch_writes: 1,
        max_batch_bytes: 1,
        segment_bytes: 4096,
    };
    let j = Journal::open(&dir.path().join("node.sqlite"), config).unwrap();
    let tickets: Vec<Ticket> = (0..20)
        .map(|n| j.append_outbound(outbound(n, "plant-b", 0)))
        .collect();
    tickets.into_iter().try_for_each(Ticket::wait).unwrap();
    assert_eq!(j.backlog_of(&mesh("plant-b")).unwrap().messages, 20);
}

/// Stores an outbound message and a delivered id in SQLite as meshfed did before the segment
/// log, and closes the file.
fn store_as_before(path: &std::path::Path, id_bytes: &[u8], n: u32) {
    crate::Store::open(path).unwrap();
    let raw = Connection::open(path).unwrap();
    raw.execute(
        "INSERT INTO outbound (id, destination, priority, qos, deadline, order_source,
             order_destination, order_topic, enqueued, size, payload)
         VALUES (?1, 'plant-b', 3, 1, NULL, NULL, NULL, NULL, ?2, 4, x'01020304')",
        rusqlite::params![id_bytes, 1_000 + i64::from(n)],
    )
    .unwrap();
    raw.execute(
        "INSERT INTO delivered (id, until) VALUES (?1, 5000)",
        [&id(900 + n).0[..]],
    )
    .unwrap();
}

#[test]
fn a_corrupt_id_is_reported_with_table_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite");
    store_as_before(&path, &[1, 2], 1);
    let err = Journal::open(&path, JournalConfig::default()).unwrap_err();
    assert_eq!(
        chain(&err),
        format!(
            "cannot open the store at {}: corrupt row in table outbound (row \"seq 1\"), column \
             id: an envelope id has 16 bytes, found 2",
            path.display()
        )
    );
}

#[test]
fn messages_and_delivered_ids_stored_in_sqlite_before_are_still_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite");
    store_as_before(&path, &id(1).0, 1);
    store_as_before(&path, &id(2).0, 2);
    let j = Journal::open(&path, JournalConfig::default()).unwrap();
    j.append_outbound(outbound(3, "plant-b", 3)).wait().unwrap();
    let pending = j.pending_outbound(&mesh("plant-b")).unwrap();
    assert_eq!(ids(&pending), [1, 2, 3].map(id), "older first");
    assert_eq!(pending[0].message.payload, [1, 2, 3, 4]);
    assert_eq!(pending[0].message.enqueued, Timestamp(1_001));
    let delivered = |j: &Journal| {
        j.delivered_ids(Timestamp(0))
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(delivered(&j), [901, 902].map(id));
    j.remove_outbound(vec![id(1)]).wait().unwrap();
    j.submit(Write::ForgetDelivered(vec![id(901)]))
        .wait()
        .unwrap();
    j.close().unwrap();
    let raw = Connection::open(&path).unwrap();
    let left: i64 = raw
        .query_row("SELECT count(*) FROM outbound", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "moved into the segment log");
    let again = Journal::open(&path, JournalConfig::default()).unwrap();
    assert_eq!(
        ids(&again.pending_outbound(&mesh("plant-b")).unwrap()),
        [2, 3].map(id)
    );
    assert_eq!(delivered(&again), [id(902)]);
}

#[test]
fn subscription_keeps_its_form_and_a_new_registration_changes_it() {
    use meshfed_proto::envelope::export::Form;
    let (_dir, j) = open();
    let sub = Subscription {
        name: "erp".parse().unwrap(),
        topic: "orders/#".parse().unwrap(),
        from: Some(mesh("plant-a")),
        form: Form::Export,
        created: Timestamp(5),
    };
    j.submit(Write::PutSubscription(sub.clone()))
        .wait()
        .unwrap();
    assert_eq!(j.subscriptions().unwrap(), vec![sub.clone()]);
    let plain = Subscription {
        form: Form::Spec,
        created: Timestamp(6),
        ..sub.clone()
    };
    j.submit(Write::PutSubscription(plain)).wait().unwrap();
    assert_eq!(
        j.subscriptions().unwrap(),
        vec![Subscription {
            form: Form::Spec,
            ..sub
        }],
        "the form changes, the creation time stays"
    );
}
