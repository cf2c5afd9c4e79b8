//! `meshfed bench` as a user runs it: two meshes in one process, or two gateways already
//! running as their own processes; a short run, its JSON report or its table.

#![expect(clippy::unwrap_used, reason = "a step that fails is the test failing")]

mod common;

use std::process::Command;

use common::{federate, started, wait_for_status};
use meshfed_testkit::{Mesh, Outcome};
use serde_json::Value;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .arg("bench")
        .args(args)
        .env_remove("MESHFED_DIR")
        .output()
        .unwrap()
}

/// `meshfed bench --publisher A --subscriber B ARGS`, as the user sees it end.
fn bench_running(publisher: &Mesh, subscriber: &Mesh, args: &[&str]) -> Outcome {
    let (p, s) = (dir(publisher), dir(subscriber));
    let out = bench(&[&["--publisher", &p, "--subscriber", &s][..], args].concat());
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn dir(m: &Mesh) -> String {
    m.dir().to_str().unwrap().to_owned()
}

/// Two running gateways, plant-a federated with supplier-b and the link up.
fn federated_pair() -> (Mesh, Mesh) {
    let a = started("plant-a");
    let b = started("supplier-b");
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    wait_for_status(&b, &id, "active");
    (a, b)
}

/// Runs the bench with `args` and `--json`; its report, once it has succeeded.
fn bench_json(args: &[&str]) -> Value {
    let out = bench(&[args, &["--json"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{stdout}"))
}

/// Both phases of `run` sent `count` messages and every one arrived once, with sane figures.
fn assert_phases_complete(run: &Value, count: u64, report: &Value) {
    for phase in ["throughput", "latency"] {
        let p = &run[phase];
        let n = |k: &str| {
            p[k].as_u64()
                .unwrap_or_else(|| panic!("{phase}.{k} missing: {report}"))
        };
        let f = |v: &Value, k: &str| {
            v[k].as_f64()
                .unwrap_or_else(|| panic!("{phase} {k} missing: {report}"))
        };
        assert_eq!(n("sent"), count, "{phase}: {report}");
        assert_eq!(n("accepted"), count, "{phase}: {report}");
        assert_eq!(n("delivered"), count, "{phase}: {report}");
        assert_eq!((n("refused"), n("lost")), (0, 0), "{phase}: {report}");
        assert_eq!(p["stalled"], false, "{phase}: {report}");
        assert!(f(p, "msg_per_s") > 0.0, "{phase}: {report}");
        assert!(f(p, "mb_per_s") > 0.0, "{phase}: {report}");
        let lat = &p["latency_ms"];
        let (p50, p90, p99, max) = (f(lat, "p50"), f(lat, "p90"), f(lat, "p99"), f(lat, "max"));
        assert!(0.0 < p50, "{phase}: {report}");
        assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{phase}: {report}");
    }
    assert_eq!(run["throughput"]["rate"], "max", "{report}");
}

#[test]
fn bench_reports_throughput_and_latency_as_json() {
    let report = bench_json(&["--count", "200", "--rate", "500"]);
    assert_eq!(report["payload_bytes"], 1024, "{report}");
    assert_eq!(report["qos"], 0, "{report}");
    assert_eq!(report["signatures"], "batch", "{report}");
    assert_eq!(report["format"], "binary", "{report}");
    assert_eq!(report["latency"]["rate"], 500, "{report}");
    assert_phases_complete(&report, 200, &report);
    assert_eq!(report["throughput"]["duplicates"], 0, "{report}");
    // 200 messages at 500/s take at least 0.398 s from first send to last delivery.
    assert!(
        report["latency"]["seconds"].as_f64().unwrap() >= 0.398,
        "{report}"
    );
}

/// The `processes` of `phase` in `report`: each names its process and pid, and has a positive
/// peak RSS (reset at the phase's start) and CPU time per message.
fn assert_usage_measured(report: &Value, phase: &str, labels: &[&str]) {
    let processes = report[phase]["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("{phase}.processes missing: {report}"));
    assert_eq!(processes.len(), labels.len(), "{phase}: {report}");
    for (p, label) in processes.iter().zip(labels) {
        let name = p["process"].as_str().unwrap_or_default();
        assert!(name.contains(label), "{label:?} not in {name:?}: {report}");
        assert!(p["pid"].as_u64().is_some_and(|pid| pid > 0), "{report}");
        let peak = p["peak_rss_bytes"].as_u64().unwrap_or_default();
        assert!(peak > 1 << 20, "{phase}: peak RSS {peak}: {report}");
        assert_eq!(p["peak_rss_since"], "phase", "{report}");
        let cpu = p["cpu_us_per_msg"].as_f64().unwrap_or_default();
        assert!(cpu > 0.0, "{phase}: cpu per message {cpu}: {report}");
    }
}

#[test]
fn bench_reports_its_process_peak_memory_and_cpu_per_message() {
    // Enough messages for the CPU time (kept in 10 ms ticks) to show.
    let report = bench_json(&["--count", "3000", "--rate", "20000"]);
    assert_phases_complete(&report, 3000, &report);
    assert_usage_measured(&report, "throughput", &["both gateways and bench's client"]);
}

#[test]
fn bench_measures_qos_1_with_per_message_signatures() {
    let report = bench_json(&[
        "--qos",
        "1",
        "--signatures",
        "message",
        "--count",
        "200",
        "--rate",
        "500",
    ]);
    assert_eq!(report["qos"], 1, "{report}");
    assert_eq!(report["signatures"], "message", "{report}");
    assert_phases_complete(&report, 200, &report);
}

#[test]
fn bench_compares_batch_and_message_signatures() {
    let report = bench_json(&["--compare", "--count", "100", "--rate", "500"]);
    assert_eq!(
        report["signatures"],
        serde_json::json!(["batch", "message"]),
        "{report}"
    );
    assert_eq!(report["qos"], 0, "{report}");
    for mode in ["batch", "message"] {
        assert_phases_complete(&report[mode], 100, &report);
    }
    for phase in ["throughput", "latency"] {
        let ratios = &report["batch_over_message"][phase];
        let ratio = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("{phase}: {report}"));
        let expected = report["batch"][phase]["msg_per_s"].as_f64().unwrap()
            / report["message"][phase]["msg_per_s"].as_f64().unwrap();
        assert!(
            (ratio(&ratios["msg_per_s"]) - expected).abs() < 1e-9,
            "{phase}: {report}"
        );
        assert!(
            ratio(&ratios["latency_ms"]["p99"]) > 0.0,
            "{phase}: {report}"
        );
    }
}

#[test]
fn bench_measures_over_json_frames_when_asked() {
    let report = bench_json(&[
        "--format", "json", "--qos", "1", "--count", "200", "--rate", "500",
    ]);
    assert_eq!(report["format"], "json", "{report}");
    assert_phases_complete(&report, 200, &report);
    let out = bench(&["--format", "cbor", "--count", "10"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'cbor'") && stderr.contains("binary"),
        "{stderr}"
    );
}

#[test]
fn bench_table_states_qos_and_signature_mode() {
    let out = bench(&["--count", "50", "--rate", "500", "--compare"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("qos 0 (at most once), signatures batch vs message, binary frames"),
        "{stdout}"
    );
    for row in [
        "throughput  batch ",
        "throughput  message ",
        "throughput  batch/message ",
        "latency     batch ",
        "latency     message ",
        "latency     batch/message ",
    ] {
        assert!(stdout.contains(row), "{row:?} missing:\n{stdout}");
    }
}

#[test]
fn bench_measures_through_a_broker_when_asked() {
    let args = [
        "--via-broker",
        "--qos",
        "1",
        "--count",
        "200",
        "--rate",
        "500",
    ];
    let report = bench_json(&args);
    assert_eq!(report["via"], "bench-hub", "{report}");
    assert_eq!(
        report["path"],
        "plant-a publish API -> bench-hub broker -> supplier-b subscriber stream, one process, loopback",
        "{report}"
    );
    assert_eq!(report["qos"], 1, "{report}");
    assert_phases_complete(&report, 200, &report);
    let process = report["throughput"]["processes"][0]["process"]
        .as_str()
        .unwrap_or_default();
    assert!(
        process.ends_with("both gateways, the broker and bench's client"),
        "{report}"
    );

    let out = bench(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains("plant-a publish API → bench-hub broker → supplier-b subscriber"),
        "{stdout}"
    );
    for phase in ["throughput", "latency"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{phase:<11} batch ")))
            .unwrap_or_else(|| panic!("no {phase} row:\n{stdout}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        // phase, signatures, rate, sent, delivered, lost: everything sent arrived.
        assert_eq!(cols[3..6], ["200", "200", "0"], "{stdout}");
    }

    // A broker is bench's own: it does not go with running gateways.
    let out = bench(&["--via-broker", "--publisher", "a", "--subscriber", "b"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the argument '--via-broker' cannot be used with"),
        "{stderr}"
    );
}

#[test]
fn bench_refuses_a_payload_too_small_for_its_stamp() {
    let out = bench(&["--payload", "16B", "--count", "10"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--payload 16 B: at least 32 B"), "{stderr}");
}

#[test]
fn bench_measures_two_running_gateways_it_did_not_start() {
    let (mut a, mut b) = federated_pair();
    // The file now says otherwise than the running gateway (which signs in batches): the
    // report names what the gateway does.
    let toml = a.dir().join("meshfed.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains("\nsignatures = \"batch\"\n"), "{text}");
    let text = text.replace("\nsignatures = \"batch\"\n", "\nsignatures = \"message\"\n");
    std::fs::write(&toml, text).unwrap();
    let out = bench_running(
        &a,
        &b,
        &["--count", "200", "--rate", "500", "--qos", "1", "--json"],
    );
    let stdout = out.ok();
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{out}"));
    assert_eq!(report["qos"], 1, "{report}");
    assert_eq!(report["signatures"], "batch", "{report}");
    assert_eq!(report["latency"]["rate"], 500, "{report}");
    assert_phases_complete(&report, 200, &report);
    let (a_api, b_api) = (a.api_addr().to_string(), b.api_addr().to_string());
    assert_eq!(
        report["publisher"],
        serde_json::json!({ "mesh": "plant-a", "api": a_api }),
        "{report}"
    );
    assert_eq!(
        report["subscriber"],
        serde_json::json!({ "mesh": "supplier-b", "api": b_api }),
        "{report}"
    );
    assert_eq!(
        report["path"],
        format!(
            "plant-a publish API at {a_api} -> supplier-b subscriber stream at {b_api}, running gateways"
        ),
        "{report}"
    );

    let out = bench_running(&a, &b, &["--count", "50", "--rate", "500"]);
    let stdout = out.ok();
    let header = stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains(&format!(
            "signatures batch, binary frames, plant-a publish API at {a_api} → supplier-b subscriber at {b_api} (running gateways"
        )),
        "{out}"
    );
    assert!(!stdout.contains("one process"), "{out}");
    assert!(stdout.contains("peak RSS"), "{out}");
    // Bench measured the gateways and left them running.
    assert!(a.is_running() && b.is_running());
}

#[test]
fn bench_reads_each_running_gateways_peak_memory_and_cpu_per_message() {
    let (a, b) = federated_pair();
    // qos 1: nothing is lost should the loaded test machine let the link fall silent.
    let args = ["--count", "3000", "--rate", "20000", "--qos", "1", "--json"];
    let out = bench_running(&a, &b, &args);
    let stdout = out.ok();
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{out}"));
    assert_phases_complete(&report, 3000, &report);
    assert_usage_measured(
        &report,
        "throughput",
        &[
            "plant-a gateway (publisher",
            "supplier-b gateway (subscriber",
        ],
    );
    let pids: Vec<u64> = report["throughput"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    // The gateways' own processes, as they said in GET /v1/node.
    assert_eq!(pids, [u64::from(a.pid()), u64::from(b.pid())], "{report}");
}

#[test]
fn bench_refuses_running_gateways_without_an_active_federation() {
    let a = started("plant-a");
    let b = started("supplier-b");
    let out = bench_running(&a, &b, &["--count", "10"]);
    let (a_dir, b_dir) = (dir(&a), dir(&b));
    out.fails(
        1,
        &format!(
            "mesh plant-a (--publisher {a_dir}) has no federation with mesh supplier-b (--subscriber {b_dir}); federate them: `meshfed --dir {b_dir} federation invite --peer plant-a` prints a token, then `meshfed --dir {a_dir} federation join TOKEN`"
        ),
    );

    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    a.cli(&["federation", "suspend", &id]).ok();
    wait_for_status(&a, &id, "suspended");
    let out = bench_running(&a, &b, &["--count", "10"]);
    out.fails(
        1,
        &format!(
            "has no active federation with mesh supplier-b (--subscriber {b_dir}): federation {id} is suspended; resume it: `meshfed --dir {a_dir} federation resume {id}`"
        ),
    );
}

#[test]
fn bench_shows_the_gateways_refusal_of_its_first_message() {
    let (a, b) = federated_pair();
    let out = bench_running(&a, &b, &["--payload", "2MiB", "--count", "10"]);
    out.fails(
        1,
        &format!(
            "the gateway of plant-a at {} refused a message to supplier-b on topic bench/load: payload of",
            a.api_addr()
        ),
    );
    assert!(
        out.stderr
            .contains("exceeds the agreed maximum of 1048576 bytes (too_large)"),
        "{out}"
    );
}

#[test]
fn bench_running_gateways_is_a_usage_error_with_signature_options_or_one_side() {
    for (args, reason) in [
        (
            &["--publisher", "a", "--subscriber", "b", "--compare"][..],
            "the argument '--publisher <DIR>' cannot be used with '--compare'",
        ),
        (
            &[
                "--publisher",
                "a",
                "--subscriber",
                "b",
                "--signatures",
                "message",
            ],
            "the argument '--publisher <DIR>' cannot be used with '--signatures <MODE>'",
        ),
        (
            &["--publisher", "a"],
            "the following required arguments were not provided:\n  --subscriber <DIR>",
        ),
        (
            &["--subscriber", "b"],
            "the following required arguments were not provided:\n  --publisher <DIR>",
        ),
    ] {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
