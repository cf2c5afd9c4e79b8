//! A renegotiation that one side missed the end of: the proposer stores the new agreement as it
//! sends its confirm, the answerer as it receives it, so a link that drops in between leaves the
//! two sides one version apart. The split is made here by restoring one side's store as it was
//! before the renegotiation; the resume handshake must bring that side up to the newer version
//! instead of failing with `agreement_mismatch`.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test on any error"
)]

mod common;

use std::path::Path;

use common::{Node, federate, next_json, wait_for};
use meshfed_testkit::copy_dir;
use serde_json::{Value, json};

/// Which side's store is put back to agreement version 1.
#[derive(Clone, Copy)]
enum Behind {
    /// plant-a, which dials and so resumes as initiator.
    Initiator,
    /// supplier-b, which answers the resume.
    Responder,
}

/// `node`'s federation `id` as the API shows it.
async fn show(node: &Node, id: &str) -> Value {
    let (status, body) = node.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The agreement version in force and the versions in the history.
fn versions(v: &Value) -> (u64, Vec<u64>) {
    let version = v["agreement"]["version"].as_u64().unwrap_or(0);
    let history = v["agreement_history"]
        .as_array()
        .map(|h| h.iter().filter_map(|p| p["version"].as_u64()).collect())
        .unwrap_or_default();
    (version, history)
}

async fn connected(node: &Node, id: &str) -> bool {
    let v = show(node, id).await;
    v["health"] == "healthy" && !v["connected_since"].is_null()
}

/// Restarts `node` with its store as it was at version 1 (`saved`), after the peer has seen its
/// link go down.
async fn restart_at_version_1(node: Node, peer: &Node, id: &str, saved: &Path) -> Node {
    let stopped = node.stop().await;
    wait_for(|| async { show(peer, id).await["health"] == "unreachable" }).await;
    let store = stopped.dir().join("store");
    std::fs::remove_dir_all(&store).unwrap();
    copy_dir(saved, &store);
    stopped.start().await
}

async fn split_resumes_under_version_2(behind: Behind) {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;
    wait_for(|| async { connected(&a, &id).await && connected(&b, &id).await }).await;

    // The store of the side that will miss the confirm, as it stands at version 1.
    let saved = tempfile::tempdir().unwrap();
    let (a, b) = match behind {
        Behind::Initiator => {
            let stopped = a.stop().await;
            copy_dir(&stopped.dir().join("store"), saved.path());
            (stopped.start().await, b)
        }
        Behind::Responder => {
            let stopped = b.stop().await;
            copy_dir(&stopped.dir().join("store"), saved.path());
            (a, stopped.start().await)
        }
    };
    wait_for(|| async { connected(&a, &id).await && connected(&b, &id).await }).await;
    let (status, renegotiated) = a
        .post(&format!("/v1/federations/{id}/renegotiate"), json!({}))
        .await;
    assert_eq!(status, 200, "{renegotiated}");
    assert_eq!(versions(&renegotiated), (2, vec![1]), "{renegotiated:#}");
    let v2_digest = renegotiated["agreement"]["digest"].clone();

    // That side comes back holding version 1; its peer holds version 2.
    let (a, b) = match behind {
        Behind::Initiator => (restart_at_version_1(a, &b, &id, saved.path()).await, b),
        Behind::Responder => {
            let b = restart_at_version_1(b, &a, &id, saved.path()).await;
            (a, b)
        }
    };
    wait_for(|| async { connected(&a, &id).await && connected(&b, &id).await }).await;
    for node in [&a, &b] {
        let v = show(node, &id).await;
        assert_eq!(versions(&v), (2, vec![1]), "{v:#}");
        assert_eq!(v["agreement"]["digest"], v2_digest, "{v:#}");
        assert_eq!(v["state"], "active", "{v:#}");
    }

    let mut at_b = b.stream("?topic=line-3/%23").await;
    let mut at_a = a.stream("").await;
    let (status, sent) = a
        .post(
            "/v1/messages",
            json!({"to": "supplier-b", "topic": "line-3/temp", "payload": {"celsius": 20}}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let got = next_json(&mut at_b).await;
    assert_eq!(got["message"], json!({"celsius": 20}));
    assert_eq!(got["federation"]["security"]["agreement_version"], 2);
    let (status, sent) = b
        .post(
            "/v1/messages",
            json!({"to": "plant-a", "topic": "orders/new", "payload": "po-2"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let got = next_json(&mut at_a).await;
    assert_eq!(got["message"], "po-2");
    assert_eq!(got["federation"]["security"]["agreement_version"], 2);
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responder_that_missed_the_confirm_resumes_under_the_renegotiated_agreement() {
    split_resumes_under_version_2(Behind::Responder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initiator_that_missed_the_confirm_resumes_under_the_renegotiated_agreement() {
    split_resumes_under_version_2(Behind::Initiator).await;
}
