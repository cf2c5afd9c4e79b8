//! `/healthz` is a liveness check; `/readyz` says whether the node can do its work, and if not,
//! why: a store it cannot write, an expired node certificate, a federation listener that cannot
//! accept. Gateways in one process, on loopback.

mod common;

use std::time::{Duration, SystemTime};

use common::Node;
use meshfed_node::Clock;

/// `GET path` without a token: its status and body.
async fn probe(node: &Node, path: &str) -> (u16, String) {
    let url = node.url(path);
    let r = node
        .http
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_store_cannot_be_written_and_recovers() {
    let a = Node::start("plant-a").await;
    assert_eq!(probe(&a, "/readyz").await, (200, "ready\n".to_owned()));

    // Another process holds the store's write lock: nothing could be journaled now.
    let path = a.dir().join("store/meshfed.db");
    let lock = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
    lock.execute_batch("BEGIN IMMEDIATE")
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, text) = probe(&a, "/readyz").await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.starts_with("not ready:\n- the store is not writable: "),
        "{text}"
    );
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    assert_eq!(probe(&a, "/healthz").await.0, 200, "still alive");

    lock.execute_batch("ROLLBACK")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(probe(&a, "/readyz").await, (200, "ready\n".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_once_the_node_certificate_has_expired() {
    let (clock, hand) = Clock::manual(SystemTime::now());
    // Without a CA key (the root's and the issuing CA's kept offline) the gateway cannot
    // renew its certificate.
    let a = Node::start_on_prepared("plant-a", clock, |dir| {
        for key in ["ca/ca.key", "ca/issuing.key"] {
            std::fs::remove_file(dir.join(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    })
    .await;
    assert_eq!(probe(&a, "/readyz").await.0, 200);

    // The node certificate lives 24 h by default.
    hand.advance(Duration::from_secs(25 * 3600));
    let (status, text) = probe(&a, "/readyz").await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.starts_with("not ready:\n- the node certificate expired at "),
        "{text}"
    );
    assert_eq!(probe(&a, "/healthz").await.0, 200, "still alive");
}
