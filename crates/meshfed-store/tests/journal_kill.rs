//! Acknowledged ⇒ never lost: a writer process is killed with SIGKILL mid-stream, and every
//! message whose ticket it saw complete must be in the file afterwards.
//!
//! The test binary plays both parts: run with `MESHFED_JOURNAL_WRITER_DB` set, the
//! `writer_process` test becomes the writer; otherwise it does nothing.

#![expect(
    clippy::expect_used,
    reason = "test helpers fail the test on any error"
)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use meshfed_proto::MeshId;
use meshfed_proto::envelope::{EnvelopeId, Priority, Qos, Timestamp};
use meshfed_store::journal::OutboundMessage;
use meshfed_store::{Journal, JournalConfig, Ticket};

const DB_VAR: &str = "MESHFED_JOURNAL_WRITER_DB";
const TOTAL: u32 = 2_000_000;
const KILL_AFTER: usize = 3_000;
const PREFIX: &str = "committed ";

fn id(thread: u32, n: u32) -> EnvelopeId {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&thread.to_be_bytes());
    b[12..].copy_from_slice(&n.to_be_bytes());
    EnvelopeId(b)
}

fn destination() -> MeshId {
    "plant-b".parse().expect("a valid mesh id")
}

/// The writer: three threads append without waiting; a waiter per thread prints each id as its
/// ticket completes. Runs until killed.
#[test]
fn writer_process() {
    let Some(db) = std::env::var_os(DB_VAR) else {
        return;
    };
    let journal = Arc::new(Journal::open(db.as_ref(), JournalConfig::default()).unwrap());
    let threads: Vec<_> = (0..3u32)
        .map(|t| {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                let (tx, rx) = std::sync::mpsc::sync_channel::<(EnvelopeId, Ticket)>(10_000);
                let waiter = std::thread::spawn(move || {
                    for (id, ticket) in rx {
                        ticket.wait().unwrap();
                        println!("{PREFIX}{id}");
                    }
                });
                for n in 0..TOTAL {
                    let message = OutboundMessage {
                        id: id(t, n),
                        destination: destination(),
                        priority: Priority::try_from((n % 8) as u8).unwrap(),
                        qos: Qos::AtLeastOnce,
                        deadline: None,
                        order: None,
                        enqueued: Timestamp(u64::from(n)),
                        payload: vec![0xab; 256],
                    };
                    let ticket = journal.append_outbound(message);
                    tx.send((id(t, n), ticket)).unwrap();
                }
                drop(tx);
                waiter.join().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn messages_acknowledged_before_sigkill_are_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("node.sqlite");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DB_VAR, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reported = HashSet::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix(PREFIX) {
            reported.insert(id.parse::<EnvelopeId>().unwrap());
            if reported.len() == KILL_AFTER {
                break;
            }
        }
    }
    assert_eq!(reported.len(), KILL_AFTER, "the writer reported too little");
    child.kill().unwrap(); // SIGKILL on Unix: no destructors, no clean shutdown
    // Whatever the writer printed before it died was acknowledged too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(id) = line.strip_prefix(PREFIX) {
            reported.insert(id.parse::<EnvelopeId>().unwrap());
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the writer was killed, not finished");

    let journal = Journal::open(&db, JournalConfig::default()).unwrap();
    let stored: HashSet<EnvelopeId> = journal
        .pending_outbound(&destination())
        .unwrap()
        .into_iter()
        .map(|p| p.message.id)
        .collect();
    let lost: Vec<_> = reported.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages were lost, e.g. {:?}",
        lost.len(),
        reported.len(),
        lost.first()
    );
    assert!(
        stored.len() < 3 * TOTAL as usize,
        "the writer was killed mid-stream"
    );
}
