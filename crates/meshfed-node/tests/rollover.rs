//! A mesh CA rollover under running gateways: `rotate` (the bundle becomes old + new, signed
//! by the old CA, and partners store it), `retire-old` (the new CA alone), with messages
//! crossing both ways at every step, over the link that stays up and over fresh links.

mod common;

use std::time::SystemTime;

use common::{Node, Ws, federate, next_json, wait_for};
use meshfed_node::config::NodeConfig;
use meshfed_node::rollover::{self, CaFiles, RetireOptions, RotateOptions};
use serde_json::{Value, json};

/// Sends one qos-1 message from `from` to mesh `to`, waits for its acknowledgement, and checks
/// it reaches the subscriber `at`.
async fn cross(from: &Node, to: &str, at: &mut Ws, payload: &str) {
    let send = from.post(
        "/v1/messages",
        json!({"to": to, "topic": "t/rollover", "payload": payload, "qos": 1, "wait": true}),
    );
    let (status, acked) = tokio::time::timeout(std::time::Duration::from_secs(20), send)
        .await
        .unwrap_or_else(|_| panic!("{payload}: not acknowledged within 20 s"));
    assert_eq!(status, 200, "{payload}: {acked}");
    assert_eq!(acked["status"], "acknowledged", "{acked}");
    let got = next_json(at).await;
    assert_eq!(got["message"], payload, "{got}");
}

/// Messages cross both ways, tagged with `step`.
async fn both_ways(a: &Node, b: &Node, at_a: &mut Ws, at_b: &mut Ws, step: &str) {
    for n in 0..3 {
        cross(a, "supplier-b", at_b, &format!("{step} a->b {n}")).await;
        cross(b, "plant-a", at_a, &format!("{step} b->a {n}")).await;
    }
}

fn files(node_dir: &std::path::Path) -> CaFiles {
    CaFiles::of(
        node_dir,
        &NodeConfig::load(node_dir).unwrap_or_else(|e| panic!("{e}")),
    )
}

/// `meshfed ca rotate` on the node directory `dir`, its root key there.
fn rotate(dir: &std::path::Path) {
    rollover::rotate(
        &files(dir),
        &RotateOptions {
            root_key: None,
            new_root_key_out: None,
            now: SystemTime::now(),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

async fn trust(node: &Node) -> Value {
    let (status, view) = node.get("/v1/ca").await;
    assert_eq!(status, 200, "{view}");
    view
}

async fn peer_cas(node: &Node, id: &str) -> Value {
    let (status, fed) = node.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(status, 200, "{fed}");
    fed["peer_cas"].clone()
}

async fn partner_has_it(node: &Node) -> bool {
    trust(node).await["partners"][0]["current"] == true
}

async fn healthy(node: &Node, id: &str) -> bool {
    node.get(&format!("/v1/federations/{id}")).await.1["health"] == "healthy"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rollover_keeps_messages_crossing_and_ends_with_the_partner_trusting_the_new_ca_alone()
{
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;
    let (mut at_a, mut at_b) = (a.stream("").await, b.stream("").await);
    both_ways(&a, &b, &mut at_a, &mut at_b, "before").await;
    let before = trust(&a).await;
    assert_eq!(before["serial"], 0, "{before}");
    assert_eq!(before["rollover"], false, "{before}");
    let old = before["cas"][0]["fingerprint"].clone();
    assert_eq!(peer_cas(&b, &id).await, json!([old]));

    // Rotate: plant-a's bundle is old + new, signed by the old CA; supplier-b stores it.
    rotate(a.dir());
    let (status, view) = a.post("/v1/ca/reload", json!({})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["rollover"], true, "{view}");
    assert_eq!(view["serial"], 1, "{view}");
    assert_eq!(view["announced_on"], 1, "{view}");
    let new = view["cas"][1]["fingerprint"].clone();
    wait_for(|| partner_has_it(&a)).await;
    assert_eq!(peer_cas(&b, &id).await, json!([old, new]));
    both_ways(&a, &b, &mut at_a, &mut at_b, "overlap").await;

    // Retire the old CA: plant-a's certificate now comes from the new issuing CA, and
    // supplier-b verifies it on the link that stayed up through the issuing CA the statement
    // named.
    rollover::retire_old(
        &files(a.dir()),
        &RetireOptions {
            root_key: None,
            now: SystemTime::now(),
            node_cert_validity: std::time::Duration::from_secs(3600),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (status, view) = a.post("/v1/ca/reload", json!({})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["rollover"], false, "{view}");
    assert_eq!(view["cas"], json!([view["cas"][0]]), "{view}");
    assert_eq!(view["cas"][0]["fingerprint"], new, "{view}");
    wait_for(|| partner_has_it(&a)).await;
    assert_eq!(peer_cas(&b, &id).await, json!([new]));
    let (_, node) = a.get("/v1/node").await;
    assert_eq!(node["ca_fingerprint"], new, "{node}");
    both_ways(&a, &b, &mut at_a, &mut at_b, "retired").await;

    // A fresh link: plant-a starts again from its directory and dials supplier-b, which
    // verifies it against the new CA alone.
    drop(at_a);
    let a = a.stop().await.start().await;
    wait_for(|| healthy(&a, &id)).await;
    wait_for(|| healthy(&b, &id)).await;
    let mut at_a = a.stream("").await;
    both_ways(&a, &b, &mut at_a, &mut at_b, "restarted").await;
    // supplier-b, restarted, still holds the new CA alone for plant-a.
    drop(at_b);
    let b = b.stop().await.start().await;
    wait_for(|| healthy(&a, &id)).await;
    assert_eq!(peer_cas(&b, &id).await, json!([new]));
    let mut at_b = b.stream("").await;
    both_ways(&a, &b, &mut at_a, &mut at_b, "both restarted").await;
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_away_during_the_rotation_is_told_on_its_next_link() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;
    let b = b.stop().await;

    rotate(a.dir());
    let (status, view) = a.post("/v1/ca/reload", json!({})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["announced_on"], 0, "{view}");
    assert_eq!(view["partners"][0]["current"], false, "{view}");
    assert_eq!(view["partners"][0]["acknowledged_serial"], 0, "{view}");

    // plant-a dials supplier-b again once it is back, and tells it on the new link.
    let b = b.start().await;
    wait_for(|| partner_has_it(&a)).await;
    let view = trust(&a).await;
    assert_eq!(view["partners"][0]["acknowledged_serial"], 1, "{view}");
    let cas = peer_cas(&b, &id).await;
    assert_eq!(
        cas,
        json!([view["cas"][0]["fingerprint"], view["cas"][1]["fingerprint"]])
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}
