//! The segment log against real files: replay, torn tails, damage, compaction, and a random
//! sequence of writes against a model.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use meshfed_proto::MeshId;
use meshfed_proto::envelope::{EnvelopeId, Priority, Qos, Timestamp};
use proptest::prelude::*;

use crate::journal::tests::{chain, ids};
use crate::journal::{DeliveredId, Journal, JournalConfig, OutboundMessage, Ticket, Write};
use crate::{JournalError, StoreError};

fn id(n: u32) -> EnvelopeId {
    let mut b = [0u8; 16];
    b[12..].copy_from_slice(&n.to_be_bytes());
    EnvelopeId(b)
}

fn mesh(s: &str) -> MeshId {
    s.parse().unwrap()
}

fn outbound(n: u32, destination: &str, priority: u8, size: usize) -> OutboundMessage {
    OutboundMessage {
        id: id(n),
        destination: mesh(destination),
        priority: Priority::try_from(priority).unwrap(),
        qos: Qos::AtLeastOnce,
        deadline: None,
        order: None,
        enqueued: Timestamp(u64::from(n)),
        payload: vec![n as u8; size],
    }
}

fn small_segments() -> JournalConfig {
    JournalConfig {
        segment_bytes: 4096,
        ..JournalConfig::default()
    }
}

struct Files {
    _dir: tempfile::TempDir,
    store: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("node.sqlite");
        Self { _dir: dir, store }
    }

    fn open(&self, config: JournalConfig) -> Journal {
        Journal::open(&self.store, config).unwrap()
    }

    fn segments(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(super::dir_of(&self.store))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        files.sort();
        files
    }
}

#[test]
fn a_reopened_log_replays_messages_removals_and_the_dedup_window() {
    let files = Files::new();
    let j = files.open(small_segments());
    for n in 1..=40 {
        j.append_outbound(outbound(n, "plant-b", (n % 8) as u8, 300))
            .wait()
            .unwrap();
    }
    j.remove_outbound((1..=40).filter(|n| n % 3 == 0).map(id).collect())
        .wait()
        .unwrap();
    j.acknowledge([id(1), id(2)]);
    j.remember_delivered(id(500), Timestamp(100))
        .wait()
        .unwrap();
    j.remember_delivered(id(501), Timestamp(200))
        .wait()
        .unwrap();
    j.submit(Write::ForgetDelivered(vec![id(501)]))
        .wait()
        .unwrap();
    let before = j.pending_outbound(&mesh("plant-b")).unwrap();
    let backlog = j.backlog().unwrap();
    j.close().unwrap();
    assert!(
        files.segments().len() > 1,
        "rolled over: {:?}",
        files.segments()
    );

    let again = files.open(small_segments());
    assert_eq!(again.pending_outbound(&mesh("plant-b")).unwrap(), before);
    assert_eq!(again.backlog().unwrap(), backlog);
    assert_eq!(before.len(), 40 - 13 - 2);
    assert_eq!(
        again.delivered_ids(Timestamp(0)).unwrap(),
        vec![DeliveredId {
            id: id(500),
            until: Timestamp(100)
        }]
    );
    // New messages keep coming after the old ones.
    again
        .append_outbound(outbound(41, "plant-b", 7, 10))
        .wait()
        .unwrap();
    let pending = again.pending_outbound(&mesh("plant-b")).unwrap();
    let newest = pending.iter().find(|p| p.message.id == id(41)).unwrap();
    assert!(pending.iter().all(|p| p.position <= newest.position));
}

#[test]
fn a_torn_tail_is_cut_and_what_was_committed_stays() {
    let files = Files::new();
    let j = files.open(JournalConfig::default());
    for n in 1..=3 {
        j.append_outbound(outbound(n, "plant-b", 0, 100))
            .wait()
            .unwrap();
    }
    j.close().unwrap();
    let segment = files.segments().pop().unwrap();
    let committed = std::fs::metadata(&segment).unwrap().len();
    // A crash in the middle of writing the next frame: part of it reached the file.
    let j = files.open(JournalConfig::default());
    j.append_outbound(outbound(4, "plant-b", 0, 100))
        .wait()
        .unwrap();
    j.close().unwrap();
    let full = std::fs::read(&segment).unwrap();
    for cut in [
        committed + 1,
        committed + 7,
        committed + 30,
        full.len() as u64 - 1,
    ] {
        std::fs::write(&segment, &full[..cut as usize]).unwrap();
        let j = files.open(JournalConfig::default());
        assert_eq!(
            ids(&j.pending_outbound(&mesh("plant-b")).unwrap()),
            [1, 2, 3].map(id),
            "cut at {cut}"
        );
        j.close().unwrap();
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len(),
            committed,
            "the torn frame is truncated"
        );
    }
    // Zeros where the frame should be (a file extended but never written) are a torn tail too.
    let mut zeros = full[..committed as usize].to_vec();
    zeros.extend([0; 300]);
    std::fs::write(&segment, &zeros).unwrap();
    let j = files.open(JournalConfig::default());
    j.append_outbound(outbound(5, "plant-b", 0, 100))
        .wait()
        .unwrap();
    j.close().unwrap();
    let j = files.open(JournalConfig::default());
    assert_eq!(
        ids(&j.pending_outbound(&mesh("plant-b")).unwrap()),
        [1, 2, 3, 5].map(id),
        "appends go on where the tail was cut"
    );
}

/// The offset of the second frame of `segment` (one frame per committed batch).
fn second_frame(segment: &Path) -> usize {
    let data = std::fs::read(segment).unwrap();
    let first = super::codec::check_frame(&data, super::codec::MAGIC.len()).unwrap();
    assert!(first < data.len());
    first
}

#[test]
fn damage_before_the_last_frame_is_an_error_naming_file_and_offset() {
    let files = Files::new();
    let j = files.open(JournalConfig::default());
    for n in 1..=3 {
        j.append_outbound(outbound(n, "plant-b", 0, 100))
            .wait()
            .unwrap();
    }
    j.close().unwrap();
    let segment = files.segments().pop().unwrap();
    let at = second_frame(&segment);
    let mut data = std::fs::read(&segment).unwrap();
    data[at + 60] ^= 0x10; // inside the second message's payload
    std::fs::write(&segment, &data).unwrap();
    let err = Journal::open(&files.store, JournalConfig::default()).unwrap_err();
    assert_eq!(
        chain(&err),
        format!(
            "cannot open the store at {}: corrupt journal segment {} at offset {at}: the record \
             at offset {} fails its CRC32",
            files.store.display(),
            segment.display(),
            at + 8
        )
    );
}

#[test]
fn damage_in_a_sealed_segment_is_an_error_even_at_its_end() {
    let files = Files::new();
    let j = files.open(small_segments());
    for n in 1..=20 {
        j.append_outbound(outbound(n, "plant-b", 0, 500))
            .wait()
            .unwrap();
    }
    j.close().unwrap();
    let first = files.segments().remove(0);
    let mut data = std::fs::read(&first).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&first, &data).unwrap();
    let err = Journal::open(&files.store, small_segments()).unwrap_err();
    let text = chain(&err);
    assert!(
        text.contains(&format!(
            "corrupt journal segment {} at offset ",
            first.display()
        )),
        "{text}"
    );
    assert!(text.ends_with("fails its CRC32"), "{text}");
}

#[test]
fn a_record_damaged_after_opening_is_reported_when_read() {
    let files = Files::new();
    let j = files.open(JournalConfig::default());
    j.append_outbound(outbound(1, "plant-b", 0, 100))
        .wait()
        .unwrap();
    let segment = files.segments().pop().unwrap();
    let mut data = std::fs::read(&segment).unwrap();
    let end = data.len();
    data[end - 5] ^= 1;
    std::fs::write(&segment, &data).unwrap();
    let err = j.pending_outbound(&mesh("plant-b")).unwrap_err();
    assert!(matches!(err, StoreError::LogCorrupt { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "corrupt journal segment {} at offset 16: the record fails its CRC32",
            segment.display()
        )
    );
}

#[test]
fn a_second_journal_on_the_same_files_is_refused() {
    let files = Files::new();
    let _j = files.open(JournalConfig::default());
    let err = Journal::open(&files.store, JournalConfig::default()).unwrap_err();
    assert_eq!(
        chain(&err),
        format!(
            "cannot open the store at {}: the journal log {} is in use by another journal",
            files.store.display(),
            super::dir_of(&files.store).display()
        )
    );
}

#[test]
fn a_store_file_whose_segment_log_is_gone_does_not_open_empty() {
    let files = Files::new();
    let j = files.open(JournalConfig::default());
    j.append_outbound(outbound(1, "plant-b", 0, 10))
        .wait()
        .unwrap();
    j.close().unwrap();
    let dir = super::dir_of(&files.store);
    std::fs::rename(&dir, files.store.with_extension("elsewhere")).unwrap();
    let err = Journal::open(&files.store, JournalConfig::default()).unwrap_err();
    assert_eq!(
        chain(&err),
        format!(
            "cannot open the store at {}: the journal's segment log {} is missing, though the \
             store file says it was created: its queued messages and dedup window would be \
             lost; put it back beside the store file, or start over with an empty store",
            files.store.display(),
            dir.display()
        )
    );
    std::fs::rename(files.store.with_extension("elsewhere"), &dir).unwrap();
    let j = files.open(JournalConfig::default());
    assert_eq!(j.backlog_of(&mesh("plant-b")).unwrap().messages, 1);
}

#[test]
fn fully_acknowledged_segments_are_deleted() {
    let files = Files::new();
    let j = files.open(small_segments());
    for round in 0..10u32 {
        let tickets: Vec<Ticket> = (0..10)
            .map(|n| j.append_outbound(outbound(round * 10 + n, "plant-b", 0, 1000)))
            .collect();
        tickets.into_iter().try_for_each(Ticket::wait).unwrap();
        j.remove_outbound((0..10).map(|n| id(round * 10 + n)).collect())
            .wait()
            .unwrap();
    }
    assert!(
        files.segments().len() <= 2,
        "old segments go once nothing in them is live: {:?}",
        files.segments()
    );
    assert_eq!(j.backlog().unwrap(), vec![]);
}

#[test]
fn compaction_moves_the_live_records_forward_and_keeps_exactly_them() {
    let files = Files::new();
    let j = files.open(small_segments());
    // A message for a partner that is down, and a delivered id, in the first segment...
    j.append_outbound(outbound(1, "plant-down", 5, 700))
        .wait()
        .unwrap();
    j.remember_delivered(id(9_000), Timestamp(u64::from(u32::MAX)))
        .wait()
        .unwrap();
    // ...then much traffic that is acknowledged.
    for n in 100..400u32 {
        j.append_outbound(outbound(n, "plant-b", 0, 700))
            .wait()
            .unwrap();
        j.remove_outbound(vec![id(n)]).wait().unwrap();
    }
    let segments = files.segments();
    assert!(
        segments.len() <= 4,
        "the files stay within about twice what is live: {segments:?}"
    );
    assert!(
        !segments
            .iter()
            .any(|p| p.ends_with("00000000000000000001.seg")),
        "the first segment was compacted away: {segments:?}"
    );
    let expect = j.pending_outbound(&mesh("plant-down")).unwrap();
    assert_eq!(ids(&expect), [id(1)]);
    assert_eq!(expect[0].message, outbound(1, "plant-down", 5, 700));
    j.close().unwrap();
    let again = files.open(small_segments());
    assert_eq!(again.pending_outbound(&mesh("plant-down")).unwrap(), expect);
    assert_eq!(
        again.backlog().unwrap().len(),
        1,
        "nothing removed came back"
    );
    assert_eq!(
        again
            .delivered_ids(Timestamp(0))
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        [id(9_000)]
    );
}

#[test]
fn an_outbound_append_beside_a_sqlite_write_is_refused() {
    let files = Files::new();
    let j = files.open(JournalConfig::default());
    let err = j
        .submit_all(vec![
            Write::AppendOutbound(outbound(1, "plant-b", 0, 10)),
            Write::PutSubscription(crate::journal::Subscription {
                name: "erp".parse().unwrap(),
                topic: "orders/#".parse().unwrap(),
                from: None,
                form: meshfed_proto::envelope::export::Form::Spec,
                created: Timestamp(1),
            }),
        ])
        .wait()
        .unwrap_err();
    assert!(matches!(err, JournalError::Rejected { .. }), "{err:?}");
    assert!(
        chain(&err).ends_with(&format!(
            "outbound message {} cannot be appended in one request with inbound messages, \
             cursors, subscriptions or dead letters",
            id(1)
        )),
        "{}",
        chain(&err)
    );
    assert!(j.subscriptions().unwrap().is_empty(), "all or nothing");
    assert_eq!(j.backlog().unwrap(), vec![]);
}

#[test]
fn a_dead_letter_removes_the_queued_copy_after_recording_it() {
    let files = Files::new();
    let j = files.open(JournalConfig::default());
    j.append_outbound(outbound(1, "plant-b", 0, 10))
        .wait()
        .unwrap();
    j.submit(Write::DeadLetter(crate::journal::DeadLetter {
        id: id(1),
        destination: mesh("plant-b"),
        topic: "a/b".parse().unwrap(),
        priority: Priority::default(),
        qos: Qos::AtLeastOnce,
        reason: "expired".into(),
        at: Timestamp(5),
    }))
    .wait()
    .unwrap();
    assert_eq!(j.backlog().unwrap(), vec![]);
    j.close().unwrap();
    let again = files.open(JournalConfig::default());
    assert_eq!(again.backlog().unwrap(), vec![]);
    assert_eq!(again.dead_letters(10).unwrap().len(), 1);
}

/// What a sequence of writes leaves, as the journal promises it.
#[derive(Debug, Default)]
struct Model {
    /// id -> (acceptance number, message)
    outbound: HashMap<EnvelopeId, (u64, OutboundMessage)>,
    next: u64,
    delivered: HashMap<EnvelopeId, Timestamp>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(n, dest, prio, size) => {
                let m = outbound(*n, dest, *prio, *size);
                if !self.outbound.contains_key(&m.id) {
                    self.next += 1;
                    self.outbound.insert(m.id, (self.next, m));
                }
            }
            Op::Remove(ns) | Op::Acknowledge(ns) => ns.iter().for_each(|n| {
                self.outbound.remove(&id(*n));
            }),
            Op::Remember(n, until) => {
                let e = self.delivered.entry(id(*n)).or_insert(Timestamp(*until));
                *e = (*e).max(Timestamp(*until));
            }
            Op::RememberWithInbound(n, until) => {
                self.apply(&Op::Remember(*n, *until));
            }
            Op::Forget(ns) => ns.iter().for_each(|n| {
                self.delivered.remove(&id(*n));
            }),
            Op::ForgetExpired(now) => self.delivered.retain(|_, t| t.0 > *now),
            Op::Reopen => {}
        }
    }

    fn pending(&self, dest: &str) -> Vec<EnvelopeId> {
        let mut v: Vec<_> = self
            .outbound
            .values()
            .filter(|(_, m)| m.destination.as_str() == dest)
            .collect();
        v.sort_by_key(|(seq, m)| (std::cmp::Reverse(m.priority), *seq));
        v.into_iter().map(|(_, m)| m.id).collect()
    }

    fn delivered(&self, now: u64) -> BTreeMap<EnvelopeId, Timestamp> {
        self.delivered
            .iter()
            .filter(|(_, t)| t.0 > now)
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(u32, &'static str, u8, usize),
    Remove(Vec<u32>),
    Acknowledge(Vec<u32>),
    Remember(u32, u64),
    /// With a SQLite write in the same request (the durable subscriber's copy).
    RememberWithInbound(u32, u64),
    Forget(Vec<u32>),
    ForgetExpired(u64),
    Reopen,
}

fn arb_op() -> impl Strategy<Value = Op> {
    let n = 0u32..40;
    prop_oneof![
        6 => (n.clone(), prop_oneof![Just("plant-b"), Just("plant-c")], 0u8..8, 0usize..900)
            .prop_map(|(n, d, p, s)| Op::Append(n, d, p, s)),
        2 => proptest::collection::vec(n.clone(), 0..6).prop_map(Op::Remove),
        2 => proptest::collection::vec(n.clone(), 0..6).prop_map(Op::Acknowledge),
        2 => (n.clone(), 0u64..100).prop_map(|(n, t)| Op::Remember(n, t)),
        1 => (n.clone(), 0u64..100).prop_map(|(n, t)| Op::RememberWithInbound(n, t)),
        1 => proptest::collection::vec(n, 0..4).prop_map(Op::Forget),
        1 => (0u64..100).prop_map(Op::ForgetExpired),
        1 => Just(Op::Reopen),
    ]
}

fn check(j: &Journal, model: &Model) {
    for dest in ["plant-b", "plant-c"] {
        let pending = j.pending_outbound(&mesh(dest)).unwrap();
        assert_eq!(ids(&pending), model.pending(dest), "{dest}");
        for p in &pending {
            assert_eq!(p.message, model.outbound[&p.message.id].1);
        }
    }
    for now in [0, 50] {
        let got: BTreeMap<EnvelopeId, Timestamp> = j
            .delivered_ids(Timestamp(now))
            .unwrap()
            .into_iter()
            .map(|d| (d.id, d.until))
            .collect();
        assert_eq!(got, model.delivered(now), "delivered at {now}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_journal_matches_a_model_through_reopens_and_compaction(
        ops in proptest::collection::vec(arb_op(), 1..80)
    ) {
        let files = Files::new();
        let config = small_segments();
        let mut j = files.open(config);
        let mut model = Model::default();
        let mut inbound = 0u32;
        for op in &ops {
            match op {
                Op::Append(n, d, p, s) => j.append_outbound(outbound(*n, d, *p, *s)).wait().unwrap(),
                Op::Remove(ns) => j.remove_outbound(ns.iter().map(|n| id(*n)).collect()).wait().unwrap(),
                Op::Acknowledge(ns) => {
                    // Only ids whose append was submitted (the contract): one acknowledged
                    // early is carried and deletes the message once it is appended.
                    j.acknowledge(ns.iter().map(|n| id(*n)).filter(|i| model.outbound.contains_key(i)));
                    // Acknowledgements are committed with the next batch at the latest.
                    j.submit_all(Vec::new()).wait().unwrap();
                }
                Op::Remember(n, t) => j.remember_delivered(id(*n), Timestamp(*t)).wait().unwrap(),
                Op::RememberWithInbound(n, t) => {
                    inbound += 1;
                    j.submit_all(vec![
                        Write::AppendInbound(crate::journal::InboundMessage {
                            subscription: "erp".parse().unwrap(),
                            id: id(10_000 + inbound),
                            received: Timestamp(1),
                            source: None,
                            payload: vec![1],
                        }),
                        Write::RememberDelivered(DeliveredId { id: id(*n), until: Timestamp(*t) }),
                    ]).wait().unwrap();
                }
                Op::Forget(ns) => j.submit(Write::ForgetDelivered(ns.iter().map(|n| id(*n)).collect())).wait().unwrap(),
                Op::ForgetExpired(now) => j.submit(Write::ForgetExpired { now: Timestamp(*now) }).wait().unwrap(),
                Op::Reopen => {
                    j.close().unwrap();
                    j = files.open(config);
                }
            }
            model.apply(op);
        }
        check(&j, &model);
        j.close().unwrap();
        let j = files.open(config);
        check(&j, &model);
    }
}
