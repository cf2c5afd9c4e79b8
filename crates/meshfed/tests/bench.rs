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

#[test]
fn bench_reports_throughput_and_latency_as_json() {
    let out = bench(&["--count", "200", "--rate", "500", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{stdout}"));
    assert_eq!(report["payload_bytes"], 1024, "{report}");
    assert_eq!(report["qos"], 0, "{report}");
    assert_eq!(report["throughput"]["rate"], "max", "{report}");
    assert_eq!(report["latency"]["rate"], 500, "{report}");
    for phase in ["throughput", "latency"] {
        let p = &report[phase];
        let n = |k: &str| {
            p[k].as_u64()
                .unwrap_or_else(|| panic!("{phase}.{k} missing: {report}"))
        };
        let f = |v: &Value, k: &str| {
            v[k].as_f64()
                .unwrap_or_else(|| panic!("{phase} {k} missing: {report}"))
        };
        assert_eq!(n("sent"), 200, "{phase}: {report}");
        assert_eq!(n("delivered"), n("sent"), "{phase}: {report}");
        assert_eq!((n("refused"), n("lost")), (0, 0), "{phase}: {report}");
        assert_eq!(p["stalled"], false, "{phase}: {report}");
        assert!(f(p, "msg_per_s") > 0.0, "{phase}: {report}");
        assert!(f(p, "mb_per_s") > 0.0, "{phase}: {report}");
        let lat = &p["latency_ms"];
        let (p50, p90, p99, max) = (f(lat, "p50"), f(lat, "p90"), f(lat, "p99"), f(lat, "max"));
        assert!(0.0 < p50, "{phase}: {report}");
        assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{phase}: {report}");
    }
    // 200 messages at 500/s take at least 0.398 s from first send to last delivery.
    assert!(
        report["latency"]["seconds"].as_f64().unwrap() >= 0.398,
        "{report}"
    );
}

#[test]
fn bench_refuses_qos_above_zero_as_a_usage_error() {
    let out = bench(&["--qos", "1", "--count", "10"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: --qos 1: QoS 1 and 2 delivery")
            && stderr.contains("not available yet"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bench_refuses_a_payload_too_small_for_its_stamp() {
    let out = bench(&["--payload", "16B", "--count", "10"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--payload 16 B: at least 32 B"), "{stderr}");
}
