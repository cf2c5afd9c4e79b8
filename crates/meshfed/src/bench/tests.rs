use serde_json::json;

use super::*;

#[test]
fn payload_carries_its_stamp_and_has_the_asked_size() {
    let p = payload(1024, 1, 42, 123_456_789);
    assert_eq!(p.len(), 1024);
    let text = json!({ "federation": { "id": "fed_1" }, "message": p }).to_string();
    let envelope: Received<'_> = serde_json::from_str(&text).unwrap();
    assert_eq!(stamp(&envelope.message), Some((1, 42, 123_456_789)));
    assert_eq!(payload(STAMP_LEN, 2, 0, 0).len(), STAMP_LEN);
}

#[test]
fn percentiles_are_nearest_rank() {
    let r = Report {
        name: "t",
        pace: Pace::Max,
        sent: 100,
        accepted: 100,
        refused: 0,
        delivered: 100,
        duplicates: 0,
        stalled: false,
        first_refusal: None,
        elapsed: Duration::from_secs(2),
        latencies_ns: (1..=100).map(|i| i * 1_000_000).collect(),
        usage: Vec::new(),
    };
    assert_eq!(r.percentile_ms(0.50), 50.0);
    assert_eq!(r.percentile_ms(0.99), 99.0);
    assert_eq!(r.percentile_ms(1.0), 100.0);
    assert_eq!(r.msg_per_s(), 50.0);
    assert_eq!(r.mb_per_s(1_000_000), 50.0);
}
