//! Reliable delivery (QoS 1 and 2) between two meshes, seen from the CLI: real `meshfed
//! gateway` processes on ephemeral loopback ports, killed and restarted mid-stream; durable
//! subscribers that resume; the sending gateway's backlog draining in priority order; and
//! messages whose deadline passes in the queue being dead-lettered and reported.
//!
//! In every test `plant-a` (A) joins an invitation of `supplier-b` (B) and sends to B, where a
//! durable subscriber reads. Both gateways keep their federation address across restarts, so
//! the joiner (A) finds B again where its invitation said.

#![expect(
    clippy::unwrap_used,
    reason = "end-to-end tests: a step that fails is the test failing"
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{federate, http_get, mesh, metric, show, started, wait_for_status};
use meshfed_testkit::process::{DEADLINE, poll, wait_until};
use meshfed_testkit::{Mesh, Spawned};
use serde_json::Value;

/// Messages in the bulk tests.
const BULK: usize = 20_000;

/// How long a bulk test waits for all of its messages: persisting, forwarding and printing
/// 20,000 envelopes, with a gateway restart in between, on a loaded 2-core machine. The qos-2
/// run took 33 s in CI and once more than 40 s with the whole workspace's tests beside it; a
/// bound on failure, not a wait, so it is generous.
const BULK_DEADLINE: Duration = Duration::from_secs(120);

/// The topic of every message sent; the durable subscribers subscribe to `bulk/#`.
const TOPIC: &str = "bulk/data";

/// Interval between two looks at a bulk subscriber's output.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The durable subscription's name.
const DURABLE: &str = "orders-db";

/// Two federated meshes, both running: A (`plant-a`) has joined B's (`supplier-b`) invitation.
/// Returns A, B and the federation id.
fn federated() -> (Mesh, Mesh, String) {
    federated_with(|_| {})
}

/// [`federated`], with `configure` applied to A's configuration before it first starts.
fn federated_with(configure: impl FnOnce(&Mesh)) -> (Mesh, Mesh, String) {
    let mut a = mesh("plant-a");
    configure(&a);
    a.start();
    let b = started("supplier-b");
    // A re-dials B's address after a restart of either; B must come back on the same port.
    a.keep_federation_address();
    b.keep_federation_address();
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    wait_for_status(&b, &id, "active");
    (a, b, id)
}

/// Starts `subscribe --durable DURABLE --topic bulk/#` on `m` and waits for `subscribed at`.
fn durable_subscriber(m: &mut Mesh) -> Spawned {
    let mut sub = m.spawn_cli(&["subscribe", "--durable", DURABLE, "--topic", "bulk/#"]);
    poll(
        "the durable subscriber prints `subscribed at`",
        DEADLINE,
        || {
            let err = sub.stderr_so_far();
            if err.contains("subscribed at ") {
                return Ok(());
            }
            if sub.has_exited() {
                panic!(
                    "the durable subscriber exited before it was registered; stderr:\n{err}\nlog of {}:\n{}",
                    m.name(),
                    m.log()
                );
            }
            Err(format!("stderr: {err:?}"))
        },
    );
    sub
}

/// One envelope a subscriber printed.
#[derive(Debug, Clone)]
struct Delivered {
    id: String,
    payload: String,
    priority: u64,
}

/// What a subscriber has printed, read a piece at a time (its output grows to megabytes).
struct Printed {
    path: PathBuf,
    offset: u64,
    partial: String,
    lines: Vec<Delivered>,
}

impl Printed {
    fn of(sub: &Spawned) -> Self {
        Self {
            path: sub.stdout_path().to_owned(),
            offset: 0,
            partial: String::new(),
            lines: Vec::new(),
        }
    }

    /// Reads what has been printed since the last look; returns the number of envelopes so far.
    fn refresh(&mut self) -> usize {
        let mut file = File::open(&self.path).unwrap();
        file.seek(SeekFrom::Start(self.offset)).unwrap();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8(bytes).unwrap());
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.lines.push(parse(line.trim_end()));
        }
        self.lines.len()
    }
}

/// Reads one line printed by `subscribe`: a JSON envelope from A to B on [`TOPIC`]. (That it
/// is in the spec's layout is checked once, by `durable_subscriber_prints_spec_layout_envelopes`.)
fn parse(line: &str) -> Delivered {
    let v: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("subscribe printed a line that is not JSON ({e}): {line}"));
    let f = &v["federation"];
    assert_eq!(f["source_mesh"]["id"], "plant-a", "{line}");
    assert_eq!(f["destination_mesh"]["id"], "supplier-b", "{line}");
    assert_eq!(f["metadata"]["topic"], TOPIC, "{line}");
    Delivered {
        id: f["id"].as_str().unwrap().to_owned(),
        payload: v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("the payload is not text: {line}"))
            .to_owned(),
        priority: f["policy"]["priority"].as_u64().unwrap(),
    }
}

/// The payloads of the bulk tests, one per line: `m-00000` … `m-19999`.
fn bulk_payloads() -> Vec<String> {
    (0..BULK).map(|i| format!("m-{i:05}")).collect()
}

/// The distinct payloads among `runs`.
fn distinct_payloads(runs: &[&Printed]) -> HashSet<String> {
    runs.iter()
        .flat_map(|r| r.lines.iter().map(|d| d.payload.clone()))
        .collect()
}

/// The `backlog` of `federation show --json` on `m`.
fn backlog(m: &Mesh, id: &str) -> Value {
    let v = show(m, id);
    assert!(v["backlog"].is_object(), "no backlog in:\n{v:#}");
    v["backlog"].clone()
}

/// `send --qos QOS DATA` on A: returns the envelope id printed.
fn send_one(a: &Mesh, qos: &str, data: &str) -> String {
    let out = a.cli(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        TOPIC,
        "--qos",
        qos,
        data,
    ]);
    let id = out.ok().trim();
    assert!(id.starts_with("fed_") && !id.contains('\n'), "{out}");
    id.to_owned()
}

/// Sends `payloads` as one `send --qos QOS -` on A, left running.
fn send_all(a: &mut Mesh, qos: &str, payloads: &[String]) -> Spawned {
    let mut input = payloads.join("\n");
    input.push('\n');
    a.spawn_cli_with_stdin(
        &[
            "send",
            "--to",
            "supplier-b",
            "--topic",
            TOPIC,
            "--qos",
            qos,
            "-",
        ],
        &input,
    )
}

/// Waits for, and holds while the returned file is open, the turn of one bulk test on this
/// machine. The receiving gateway of a bulk test keeps a core busy (about a millisecond of CPU
/// per envelope in a debug build); two at once on a 2-core machine (nextest runs tests in
/// parallel, one process each) take twice as long each. The lock ends with the process.
fn bulk_turn() -> File {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("delivery-bulk.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    let asked = Instant::now();
    file.lock().unwrap();
    eprintln!(
        "waited {:?} for another bulk test to finish",
        asked.elapsed()
    );
    file
}

/// Kills B's gateway once its durable subscriber has printed some (but not all) of a bulk
/// stream, restarts it and a durable subscriber; returns what both subscriber runs printed.
fn kill_receiver_mid_stream(qos: &str) -> (Printed, Printed, Vec<String>) {
    let _turn = bulk_turn();
    let (mut a, mut b, id) = federated();
    let payloads = bulk_payloads();
    let first = durable_subscriber(&mut b);
    let mut before = Printed::of(&first);
    let sender = send_all(&mut a, qos, &payloads);

    poll(
        "B's subscriber prints 1,000 envelopes",
        BULK_DEADLINE,
        || match before.refresh() {
            n if n >= 1_000 => Ok(()),
            n => Err(format!("{n} printed")),
        },
    );
    b.kill9();
    // The subscriber outlives its gateway (it reconnects); stopped here, as an operator would.
    wait_until(
        "the subscriber notices its gateway has gone",
        DEADLINE,
        || first.stderr_so_far().contains("lost the gateway"),
    );
    first.signal("TERM");
    let out = first.finish(DEADLINE);
    before.refresh();
    assert!(
        before.lines.len() < BULK,
        "the subscriber had all {BULK} envelopes before B was killed, so the kill tested nothing:\n{out}"
    );

    b.start();
    wait_for_status(&a, &id, "active");
    let second = durable_subscriber(&mut b);
    let mut after = Printed::of(&second);
    let want: HashSet<String> = payloads.iter().cloned().collect();
    // Counted as the lines come (the output grows to megabytes): a poll with a deadline.
    let mut got: HashSet<String> = before.lines.iter().map(|d| d.payload.clone()).collect();
    let deadline = Instant::now() + BULK_DEADLINE;
    while got.len() < BULK {
        if Instant::now() > deadline {
            let mut missing: Vec<&String> = want.difference(&got).collect();
            missing.sort();
            panic!(
                "not every payload reached B's durable subscribers within {BULK_DEADLINE:?}: {} distinct of {BULK} (first run {}, second run {} lines); {} missing, the first: {:?}",
                got.len(),
                before.lines.len(),
                after.lines.len(),
                missing.len(),
                &missing[..missing.len().min(5)]
            );
        }
        std::thread::sleep(POLL_INTERVAL);
        let counted = after.lines.len();
        after.refresh();
        got.extend(after.lines[counted..].iter().map(|d| d.payload.clone()));
    }
    assert_eq!(distinct_payloads(&[&before, &after]), want);

    let out = sender.finish(BULK_DEADLINE);
    let ids: Vec<String> = out.ok().lines().map(str::to_owned).collect();
    assert_eq!(ids.len(), BULK, "one envelope id per input line");
    assert!(ids.iter().all(|id| id.starts_with("fed_")), "{out}");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        BULK,
        "envelope ids are distinct"
    );
    drop(second);
    (before, after, ids)
}

#[test]
fn receiver_killed_mid_stream_qos1_loses_nothing() {
    let (before, after, sent) = kill_receiver_mid_stream("1");
    // Every envelope printed is one that `send` reported.
    let sent: HashSet<&String> = sent.iter().collect();
    for d in before.lines.iter().chain(&after.lines) {
        assert!(sent.contains(&d.id), "{d:?} was not sent");
    }
}

#[test]
fn receiver_killed_mid_stream_qos2_delivers_each_exactly_once() {
    let (before, after, sent) = kill_receiver_mid_stream("2");
    // How often each id was printed, by the first and by the second run.
    let mut seen: HashMap<&str, (usize, usize)> = HashMap::new();
    for d in &before.lines {
        seen.entry(&d.id).or_default().0 += 1;
    }
    for d in &after.lines {
        seen.entry(&d.id).or_default().1 += 1;
    }
    let mut twice: Vec<(&str, (usize, usize))> = seen
        .iter()
        .filter(|(_, (x, y))| x + y > 1)
        .map(|(id, n)| (*id, *n))
        .collect();
    twice.sort();
    let across = twice.iter().filter(|(_, (x, y))| *x > 0 && *y > 0).count();
    // Where the ids printed again stand in the first run's output, counted from its end.
    let from_end: Vec<usize> = before
        .lines
        .iter()
        .rev()
        .enumerate()
        .filter(|(_, d)| seen[d.id.as_str()].1 > 0)
        .map(|(i, _)| i)
        .collect();
    assert!(
        twice.is_empty(),
        "{} envelope ids printed more than once: {across} by both runs (in the first run's last {} lines), \
         the rest by one run twice (first run {} lines, second {}); (id, (times in run 1, times in run 2)), e.g. {:?}",
        twice.len(),
        from_end.iter().max().map_or(0, |m| m + 1),
        before.lines.len(),
        after.lines.len(),
        &twice[..twice.len().min(5)]
    );
    let sent: HashSet<&str> = sent.iter().map(String::as_str).collect();
    let got: HashSet<&str> = seen.keys().copied().collect();
    assert_eq!(got, sent, "the ids printed are the ids sent");
}

#[test]
fn sender_killed_after_send_returned_delivers_on_restart() {
    let (mut a, mut b, id) = federated();
    drop(durable_subscriber(&mut b));
    assert_eq!(b.stop().code(), Some(0));
    wait_for_status(&a, &id, "unreachable");

    let payloads: Vec<String> = (0..5).map(|i| format!("stored-{i}")).collect();
    let out = a.cli_with_stdin(
        &[
            "send",
            "--to",
            "supplier-b",
            "--topic",
            TOPIC,
            "--qos",
            "1",
            "-",
        ],
        &format!("{}\n", payloads.join("\n")),
    );
    let ids: HashSet<String> = out.ok().lines().map(str::to_owned).collect();
    assert_eq!(ids.len(), payloads.len(), "{out}");
    a.kill9();

    b.start();
    let sub = durable_subscriber(&mut b);
    a.start();
    let mut printed = Printed::of(&sub);
    poll("B's durable subscriber gets all 5", DEADLINE, || {
        printed.refresh();
        let got: HashSet<String> = printed.lines.iter().map(|d| d.id.clone()).collect();
        if got == ids {
            return Ok(());
        }
        Err(format!("{:?}", printed.lines))
    });
    let got: HashSet<String> = printed.lines.iter().map(|d| d.payload.clone()).collect();
    assert_eq!(got, payloads.into_iter().collect::<HashSet<_>>());
}

/// Kills A's gateway (the sender) with SIGKILL once B's durable subscriber has printed half of
/// a bulk qos-1 stream, restarts it, and checks that every message A accepted reaches B, and
/// that A sends again hardly more than what B had not acknowledged. Acknowledged messages are
/// deleted from the journal with its next commit, so what B gets twice is what was in flight
/// when A died (at most A's window) and what B acknowledged while A's last commit ran (B
/// grants credit for at most another window meanwhile: a commit takes milliseconds, B needs
/// about one per envelope here). Before, deletions queued behind the appends; if none were
/// recorded, every message B printed before the kill (half the stream) would come twice.
#[test]
fn sender_killed_mid_stream_qos1_resends_little_and_loses_nothing() {
    let _turn = bulk_turn();
    // The smallest window the configuration takes: the bound below is then far from the
    // half of the stream that comes twice when acknowledgements are not recorded.
    let window = 256;
    let (mut a, mut b, id) =
        federated_with(|a| a.configure_toml("delivery", "window", &window.to_string()));
    let sub = durable_subscriber(&mut b);
    let mut printed = Printed::of(&sub);
    let payloads = bulk_payloads();
    let sender = send_all(&mut a, "1", &payloads);
    poll(
        "B's subscriber prints half of the stream",
        BULK_DEADLINE,
        || match printed.refresh() {
            n if n >= BULK / 2 => Ok(()),
            n => Err(format!("{n} printed")),
        },
    );
    a.kill9();
    let at_kill = printed.refresh();
    // `send` may have lost its gateway: what it printed is what A accepted (journaled).
    let out = sender.finish(DEADLINE);
    let accepted: HashSet<String> = out.stdout.lines().map(str::to_owned).collect();
    assert!(
        at_kill < accepted.len(),
        "B had printed {at_kill} of the {} messages A accepted when A was killed, so the kill tested nothing",
        accepted.len()
    );

    a.start();
    wait_for_status(&a, &id, "active");
    poll("A's restored backlog drains", BULK_DEADLINE, || {
        let now = backlog(&a, &id);
        if now["messages"] == 0 && now["in_flight"] == 0 {
            return Ok(());
        }
        Err(format!("{now:#}"))
    });
    // Everything sent again was stored at B before the marker: once the subscriber prints the
    // marker, it has printed all of it.
    let marker = send_one(&a, "1", "marker");
    poll("B's subscriber prints the marker", BULK_DEADLINE, || {
        printed.refresh();
        if printed.lines.iter().any(|d| d.id == marker) {
            return Ok(());
        }
        Err(format!("{} printed", printed.lines.len()))
    });

    let mut times: HashMap<&str, usize> = HashMap::new();
    for d in &printed.lines {
        *times.entry(d.id.as_str()).or_default() += 1;
    }
    let mut lost: Vec<&String> = accepted
        .iter()
        .filter(|id| !times.contains_key(id.as_str()))
        .collect();
    lost.sort();
    assert!(
        lost.is_empty(),
        "{} of the {} messages A accepted never reached B, e.g. {:?}",
        lost.len(),
        accepted.len(),
        &lost[..lost.len().min(5)]
    );
    let twice = times.values().filter(|n| **n > 1).count();
    eprintln!(
        "A accepted {} of {BULK} messages, B had printed {at_kill} when A was killed; B printed {} lines, {} distinct; {twice} delivered more than once (bound {})",
        accepted.len(),
        printed.lines.len(),
        times.len(),
        2 * window
    );
    assert!(
        twice <= 2 * window,
        "{twice} messages reached B twice: more than the {window} A may have had in flight and \
         another window acknowledged during its last commit"
    );
}

#[test]
fn backlog_drains_in_priority_order() {
    let (a, mut b, id) = federated();
    drop(durable_subscriber(&mut b));
    assert_eq!(b.stop().code(), Some(0));
    wait_for_status(&a, &id, "unreachable");

    let priorities = [0u64, 7, 3, 7, 0, 5, 1, 6, 2, 4, 0, 7, 3, 5, 6, 1];
    let mut by_id = HashMap::new();
    for (i, p) in priorities.iter().enumerate() {
        let payload = format!("p{p}-n{i:02}");
        let out = a.cli(&[
            "send",
            "--to",
            "supplier-b",
            "--topic",
            TOPIC,
            "--qos",
            "1",
            "--priority",
            &p.to_string(),
            &payload,
        ]);
        let id = out.ok().trim().to_owned();
        assert!(id.starts_with("fed_") && !id.contains('\n'), "{out}");
        by_id.insert(id, (*p, payload));
    }

    let queued = backlog(&a, &id);
    assert_eq!(queued["messages"], priorities.len(), "{queued:#}");
    assert_eq!(queued["in_flight"], 0, "{queued:#}");
    assert!(queued["bytes"].as_u64().unwrap() > 0, "{queued:#}");
    let mut want = [0u64; 8];
    for p in priorities {
        want[p as usize] += 1;
    }
    assert_eq!(queued["by_priority"], serde_json::json!(want), "{queued:#}");
    let metrics = http_get(a.api_addr(), "/metrics");
    assert_eq!(
        metric(
            &metrics,
            "meshfed_backlog_messages",
            &["peer=\"supplier-b\""]
        ),
        Some(priorities.len() as f64),
        "{metrics}"
    );

    b.start();
    let sub = durable_subscriber(&mut b);
    let mut printed = Printed::of(&sub);
    let order = poll("B's durable subscriber gets all 16", DEADLINE, || {
        printed.refresh();
        let mut first_seen = Vec::new();
        let mut seen = HashSet::new();
        for d in &printed.lines {
            if seen.insert(d.id.clone()) {
                first_seen.push(d.clone());
            }
        }
        if first_seen.len() == priorities.len() {
            return Ok(first_seen);
        }
        Err(format!("{:?}", printed.lines))
    });
    for d in &order {
        let (p, payload) = by_id
            .get(&d.id)
            .unwrap_or_else(|| panic!("{d:?} was not sent"));
        assert_eq!((d.priority, &d.payload), (*p, payload), "{d:?}");
    }
    let seen: Vec<u64> = order.iter().map(|d| d.priority).collect();
    assert!(
        seen.windows(2).all(|w| w[0] >= w[1]),
        "priorities in the order received: {seen:?}"
    );

    let drained = poll("A's backlog drains", DEADLINE, || {
        let now = backlog(&a, &id);
        if now["messages"] == 0 && now["in_flight"] == 0 {
            return Ok(now);
        }
        Err(format!("{now:#}"))
    });
    assert_eq!(
        drained["by_priority"],
        serde_json::json!(vec![0u64; 8]),
        "{drained:#}"
    );
}

#[test]
fn deadline_passing_in_queue_is_dead_lettered_and_reported() {
    let (a, mut b, id) = federated();
    drop(durable_subscriber(&mut b));
    assert_eq!(b.stop().code(), Some(0));
    wait_for_status(&a, &id, "unreachable");

    let started = Instant::now();
    let out = a.cli(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        TOPIC,
        "--qos",
        "1",
        "--max-latency",
        "500ms",
        "--wait",
        "expired",
    ]);
    let took = started.elapsed();
    assert_eq!(out.code, Some(1), "{out}");
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: message fed_"))
        .unwrap_or_else(|| panic!("no dead-letter error:\n{out}"));
    let (expired, reason) = line
        .strip_prefix("error: message ")
        .and_then(|rest| rest.split_once(" was dead-lettered: "))
        .unwrap_or_else(|| panic!("unexpected error line {line:?}:\n{out}"));
    // The CLI adds the API's error code to every error: `… (dead_lettered, HTTP 422)`.
    assert!(reason.starts_with("deadline passed while queued"), "{out}");
    assert!(
        took >= Duration::from_millis(500),
        "dead-lettered after {took:?}, before the deadline of 500ms"
    );

    let shown = show(&a, &id);
    assert_eq!(shown["dead_lettered"], 1, "{shown:#}");
    assert_eq!(shown["backlog"]["messages"], 0, "{shown:#}");
    let metrics = http_get(a.api_addr(), "/metrics");
    assert_eq!(
        metric(
            &metrics,
            "meshfed_dead_lettered_total",
            &["peer=\"supplier-b\"", "reason="]
        ),
        Some(1.0),
        "{metrics}"
    );

    // A later message, queued while B is still down, arrives; the expired one never does.
    let marker = send_one(&a, "1", "marker");
    b.start();
    let sub = durable_subscriber(&mut b);
    let mut printed = Printed::of(&sub);
    poll(
        "the marker reaches B's durable subscriber",
        DEADLINE,
        || {
            printed.refresh();
            if printed.lines.iter().any(|d| d.id == marker) {
                return Ok(());
            }
            Err(format!("{:?}", printed.lines))
        },
    );
    assert!(
        printed
            .lines
            .iter()
            .all(|d| d.id != expired && d.payload != "expired"),
        "the dead-lettered message {expired} was delivered: {:?}",
        printed.lines
    );
}

#[test]
fn durable_subscriber_prints_spec_layout_envelopes() {
    let (a, mut b, _) = federated();
    let sub = durable_subscriber(&mut b);
    let payloads: Vec<String> = (0..3).map(|i| format!("one-of-three-{i}")).collect();
    let out = a.cli_with_stdin(
        &[
            "send",
            "--to",
            "supplier-b",
            "--topic",
            TOPIC,
            "--qos",
            "1",
            "-",
        ],
        &format!("{}\n", payloads.join("\n")),
    );
    let ids: Vec<String> = out.ok().lines().map(str::to_owned).collect();
    assert_eq!(ids.len(), 3, "{out}");
    let mut printed = Printed::of(&sub);
    poll(
        "B's durable subscriber prints 3 envelopes",
        DEADLINE,
        || match printed.refresh() {
            n if n >= 3 => Ok(()),
            n => Err(format!("{n} printed")),
        },
    );
    let text = sub.stdout_so_far();
    for (line, (id, payload)) in text.lines().zip(ids.iter().zip(&payloads)) {
        // The layout `meshfed envelope inspect` and every other reader of the spec takes.
        meshfed_proto::envelope::Envelope::from_json(line)
            .unwrap_or_else(|e| panic!("not a spec-layout envelope ({e}): {line}"));
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["federation"]["id"], id.as_str(), "{line}");
        assert_eq!(v["federation"]["policy"]["qos"], 1, "{line}");
        assert_eq!(v["message"], payload.as_str(), "{line}");
    }
}
