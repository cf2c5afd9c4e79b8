use serde_json::json;

use super::*;

#[test]
fn payload_carries_its_stamp_and_has_the_asked_size() {
    let p = payload(1024, 1, 42, 123_456_789);
    assert_eq!(p.len(), 1024);
    let text = json!({ "federation": { "id": "fed_1" }, "message": p }).to_string();
    let envelope: Received<'_> = serde_json::from_str(&text).unwrap();
    assert_eq!(
        stamp(envelope.message.as_bytes()),
        Some((1, 42, 123_456_789))
    );
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

#[test]
fn a_delivered_payload_reads_from_json_and_binary_frames_alike() {
    let p = payload(64, 2, 7, 99);
    let text = json!({ "federation": {}, "message": p }).to_string();
    let json = Message::Text(text.into());
    assert_eq!(delivered_payload(&json).as_deref(), Some(p.as_bytes()));
    // A binary frame is read whole: one that is no envelope gives nothing.
    let junk = Message::Binary(vec![1, 0x10, 0].into());
    assert_eq!(delivered_payload(&junk), None);
    let refused = binary::encode_reply(&PublishReply::Refused(ErrorBody {
        error: meshfed_node::api::models::ErrorDetail {
            code: "queue_full".to_owned(),
            message: "full".to_owned(),
        },
    }));
    let reply = reply_of(&Message::Binary(refused.into())).unwrap().unwrap();
    assert!(matches!(reply, PublishReply::Refused(_)));
    assert!(reply_of(&Message::Text("{}".into())).unwrap().is_err());
}
