//! Streamed batch signatures (DESIGN §3.4), gateways in one process over real mutual TLS: an
//! envelope from the link's peer reaches a live subscriber before its batch head, nothing is
//! acknowledged until the head verifies, a subscriber asking for proof gets it only then, and a
//! head that never comes suspends the federation. The sender runs on a manual clock, so its
//! batch closes exactly when the test says.

mod common;

use std::time::{Duration, SystemTime};

use common::{Node, federate, next_json, wait_for};
use meshfed_node::Clock;
use meshfed_proto::envelope::export::Exported;
use serde_json::{Value, json};

async fn send_reliable(from: &Node, payload: &str) {
    let (status, body) = from
        .post(
            "/v1/messages",
            json!({"to": "supplier-b", "topic": "t/s", "payload": payload, "qos": 1}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

async fn delivery(node: &Node, id: &str) -> Value {
    let (status, fed) = node.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(status, 200, "{fed}");
    fed["delivery"].clone()
}

/// The value of the metric line starting with `series ` (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_signed_envelope_is_live_before_its_head_and_proven_acknowledged_only_after() {
    let (clock, hand) = Clock::manual(SystemTime::now());
    let a = Node::start_on("plant-a", clock).await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;
    let mut live = b.stream("").await;
    let mut proven = b.stream("?proof=required").await;

    send_reliable(&a, "m0").await;
    // The batch is open on A's stopped clock: its envelope crossed, its head did not.
    let early = next_json(&mut live).await;
    assert_eq!(early["message"], "m0", "{early}");
    let security = &early["federation"]["security"];
    assert_eq!(
        security["signature"], "",
        "unproven: no signature yet: {early}"
    );
    assert!(security.get("batch").is_none(), "{early}");
    assert_eq!(
        metric(
            &b.metrics().await,
            "meshfed_envelopes_delivered_unproven_total"
        ),
        1.0
    );
    let d = delivery(&a, &id).await;
    assert_eq!(
        (d["sent"].as_u64(), d["acknowledged"].as_u64()),
        (Some(1), Some(0)),
        "nothing is acknowledged before the head: {d}"
    );

    // The window passes: A signs the batch and sends its head; B verifies it, then
    // acknowledges, and the proof subscriber gets the export form.
    hand.advance(Duration::from_millis(2));
    let got = next_json(&mut proven).await;
    assert_eq!(got["message"], "m0", "{got}");
    let exported = Exported::from_json(&got.to_string()).expect("the export form reads");
    let batch = exported.envelope.batch.expect("a batch position");
    assert_eq!((batch.count(), batch.index()), (1, 0), "{got}");
    assert!(exported.crossed.is_some(), "{got}");
    assert_ne!(got["federation"]["security"]["signature"], "", "{got}");
    wait_for(|| async { delivery(&a, &id).await["acknowledged"] == 1 }).await;

    // The spec-form subscriber got m0 once: what comes next is m1.
    send_reliable(&a, "m1").await;
    let next = next_json(&mut live).await;
    assert_eq!(next["message"], "m1", "{next}");
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_sign_window_signs_before_sending_and_nothing_goes_unproven() {
    let a = Node::start_with("plant-a", |c| c.delivery.sign_window = Duration::ZERO).await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let mut live = b.stream("").await;
    send_reliable(&a, "m0").await;
    let got = next_json(&mut live).await;
    assert_eq!(got["message"], "m0", "{got}");
    let security = &got["federation"]["security"];
    assert_ne!(security["signature"], "", "{got}");
    assert_eq!(security["batch"]["count"], 1, "{got}");
    assert_eq!(
        metric(
            &b.metrics().await,
            "meshfed_envelopes_delivered_unproven_total"
        ),
        0.0
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

/// A sender whose head never comes (here: its clock stands still, so its batch never closes)
/// is taken for a misbehaving peer once `head_timeout` has passed: the receiver closes the
/// link, suspends the federation, counts it, and acknowledges nothing of the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_never_comes_suspends_the_federation_and_nothing_is_acknowledged() {
    let (clock, _hand) = Clock::manual(SystemTime::now());
    let a = Node::start_on("plant-a", clock).await;
    let b = Node::start_with("supplier-b", |c| {
        c.delivery.head_timeout = Duration::from_millis(300);
    })
    .await;
    let id = federate(&a, &b).await;
    send_reliable(&a, "m0").await;
    wait_for(|| async {
        let (_, fed) = b.get(&format!("/v1/federations/{id}")).await;
        fed["state"] == "suspended"
    })
    .await;
    let (_, fed) = b.get(&format!("/v1/federations/{id}")).await;
    let reason = fed["state_reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("the peer misbehaved") && reason.contains("no head for streamed batch 0"),
        "{fed}"
    );
    assert_eq!(
        metric(
            &b.metrics().await,
            "meshfed_peer_misbehaved_total{peer=\"plant-a\"}"
        ),
        1.0
    );
    let d = delivery(&a, &id).await;
    assert_eq!(d["acknowledged"], 0, "{d}");
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

/// A suspension while a batch is open is not misbehaviour: the batch goes on after the resume,
/// its head covers what crossed before and after, and everything is delivered and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_open_across_a_suspension_is_proven_after_the_resume() {
    let (clock, hand) = Clock::manual(SystemTime::now());
    let a = Node::start_on("plant-a", clock).await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;
    let mut live = b.stream("").await;
    let mut proven = b.stream("?proof=required").await;
    send_reliable(&a, "m0").await;
    assert_eq!(next_json(&mut live).await["message"], "m0");

    let (status, v) = b
        .post(&format!("/v1/federations/{id}/suspend"), json!({}))
        .await;
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("suspended")),
        "{v}"
    );
    wait_for(|| async { a.get(&format!("/v1/federations/{id}")).await.1["state"] == "suspended" })
        .await;
    let (status, _) = a
        .post(&format!("/v1/federations/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200);
    wait_for(|| async { b.get(&format!("/v1/federations/{id}")).await.1["state"] == "active" })
        .await;
    send_reliable(&a, "m1").await;
    assert_eq!(next_json(&mut live).await["message"], "m1");

    hand.advance(Duration::from_millis(2));
    for n in 0..2 {
        let got = next_json(&mut proven).await;
        assert_eq!(got["message"], format!("m{n}"), "{got}");
        assert_eq!(got["federation"]["security"]["batch"]["count"], 2, "{got}");
    }
    wait_for(|| async { delivery(&a, &id).await["acknowledged"] == 2 }).await;
    let (_, fed) = b.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(fed["state"], "active", "{fed}");
    assert_eq!(
        metric(
            &b.metrics().await,
            "meshfed_peer_misbehaved_total{peer=\"plant-a\"}"
        ),
        0.0
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}
