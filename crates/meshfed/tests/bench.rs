//! `meshfed bench` as a user runs it: two meshes in one process, a short run, its JSON report.

#![expect(clippy::unwrap_used, reason = "a step that fails is the test failing")]

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .arg("bench")
        .args(args)
        .env_remove("MESHFED_DIR")
        .output()
        .unwrap()
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
    assert_eq!(report["latency"]["rate"], 500, "{report}");
    assert_phases_complete(&report, 200, &report);
    assert_eq!(report["throughput"]["duplicates"], 0, "{report}");
    // 200 messages at 500/s take at least 0.398 s from first send to last delivery.
    assert!(
        report["latency"]["seconds"].as_f64().unwrap() >= 0.398,
        "{report}"
    );
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
fn bench_table_states_qos_and_signature_mode() {
    let out = bench(&["--count", "50", "--rate", "500", "--compare"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("qos 0 (at most once), signatures batch vs message"),
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
fn bench_refuses_a_payload_too_small_for_its_stamp() {
    let out = bench(&["--payload", "16B", "--count", "10"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--payload 16 B: at least 32 B"), "{stderr}");
}
