//! Retention (issues 14 and 16, compliance): the records a gateway keeps of what it exchanged
//! with a partner — the partner's messages held for an absent durable subscriber, the dead
//! letters of what it sent there, the bodies of its audit trail's message records — go once
//! they are older than the agreed `retention_days`. Two gateways in one process on one manual
//! clock.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test on any error"
)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Node, federate, wait_for};
use meshfed_node::Clock;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_kept_past_the_agreed_retention_are_removed() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let (clock, hand) = Clock::manual(UNIX_EPOCH + Duration::from_secs(now.as_secs()));
    let a = Node::start_on("plant-a", clock.clone()).await;
    let b = Node::start_on("supplier-b", clock).await;
    // plant-a refuses what supplier-b sends on refused/; supplier-b keeps records a day.
    let rules = "[access]\nrules = '''\npermit (principal, action, resource);\nforbid (principal, action, resource) when { resource.name like \"refused/*\" };\n'''\n";
    for (node, toml) in [
        (&a, rules),
        (
            &b,
            "[compliance]\nretention_days = 1\naudit_level = \"full\"\n",
        ),
    ] {
        let resp = (node.http.put(node.url("/v1/policy")))
            .bearer_auth(&node.token)
            .json(&json!({ "toml": toml }))
            .send()
            .await
            .unwrap();
        let (status, body) = (resp.status().as_u16(), resp.text().await.unwrap());
        assert_eq!(status, 200, "{body}");
    }
    let id = federate(&a, &b).await;
    let (_, view) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(view["agreement"]["policy"]["retention_days"], 1, "{view}");

    // A durable subscription at supplier-b whose subscriber is away keeps plant-a's message;
    // supplier-b's message plant-a refuses is a dead letter there. Batches close as the clock
    // moves.
    drop(b.stream("?durable=keep&topic=t/%23").await);
    let kept = json!({"to": "supplier-b", "topic": "t/1", "payload": {"n": 1}, "qos": 1});
    let refused = json!({"to": "plant-a", "topic": "refused/1", "payload": {}, "qos": 1});
    for (from, body) in [(&a, kept), (&b, refused)] {
        let (status, answer) = from.post("/v1/messages", body).await;
        assert_eq!(status, 202, "{answer}");
    }
    wait_for(|| async {
        hand.advance(Duration::from_millis(5));
        let (_, view) = a.get(&format!("/v1/federations/{id}")).await;
        view["delivery"]["acknowledged"] == 1 && letters(&b).await == 1
    })
    .await;

    // A day and an hour later, the hourly check removes both.
    hand.advance(Duration::from_secs(25 * 3600));
    wait_for(|| async { expired(&b, "durable").await == Some(1.0) }).await;
    assert_eq!(expired(&b, "dead_letter").await, Some(1.0));
    assert_eq!(letters(&b).await, 0);
    // plant-a keeps its records a year: nothing of its went.
    assert_eq!(expired(&a, "durable").await, Some(0.0));
    // The audit trail's message records lost their bodies on both sides (the agreement's
    // retention is the shorter, a day), each side recorded that it pruned, and both trails
    // still verify: the hashes stayed.
    for node in [&a, &b] {
        wait_for(|| async {
            let (_, page) = node.get("/v1/audit?kind=pruned").await;
            page["records"].as_array().is_some_and(|r| r.len() == 1)
        })
        .await;
        let (_, page) = node.get("/v1/audit?kind=messages").await;
        let messages = page["records"].as_array().unwrap();
        assert!(!messages.is_empty(), "{page}");
        assert!(messages.iter().all(|m| m["record"].is_null()), "{page}");
        let (_, verified) = node.get("/v1/audit/verify").await;
        assert_eq!(verified["intact"], true, "{verified}");
        let pruned: u64 = (verified["logs"].as_array().unwrap().iter())
            .map(|l| l["pruned"].as_u64().unwrap())
            .sum();
        assert!(pruned >= 1, "{verified}");
    }
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

/// How many dead letters `node` lists.
async fn letters(node: &Node) -> usize {
    let (_, list) = node.get("/v1/messages/dead-letters").await;
    list["dead_letters"].as_array().unwrap().len()
}

/// `meshfed_retention_expired_total{kind}` at `node`; `None` before the check ever ran.
async fn expired(node: &Node, kind: &str) -> Option<f64> {
    let metrics = node.metrics().await;
    let prefix = format!("meshfed_retention_expired_total{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
}
