//! `GET /v1/events` on gateways in one process over real mutual TLS: an operator's suspension
//! and resumption reach a follower as two events, each naming the federation, the partner, the
//! new and the previous state; the partner's follower sees them too (it follows); a component
//! token may not follow.

mod common;

use std::time::Duration;

use common::{Node, federate};
use serde_json::{Value, json};

/// A follower of `/v1/events`: the response, and what it sent that is not a whole event yet.
struct Follower {
    response: reqwest::Response,
    pending: String,
}

impl Follower {
    async fn start(node: &Node) -> Self {
        let response = node
            .http
            .get(node.url("/v1/events"))
            .bearer_auth(&node.token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status(), 200);
        let kind = response.headers()["content-type"].to_str().unwrap_or("");
        assert_eq!(kind, "text/event-stream");
        Self {
            response,
            pending: String::new(),
        }
    }

    /// The next event as (kind, data), failing the test after ten seconds; comments skipped.
    async fn next(&mut self) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((event, rest)) = self.pending.split_once("\n\n") {
                let event = event.to_owned();
                self.pending = rest.to_owned();
                let field = |name: &str| {
                    event
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_owned)
                };
                let (Some(kind), Some(data)) = (field("event: "), field("data: ")) else {
                    continue;
                };
                let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
                return (kind, data);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within 10 s; pending: {:?}", self.pending))
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("the stream ended; pending: {:?}", self.pending));
            self.pending.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event of `kind`, skipping others (link and breaker changes).
    async fn next_of(&mut self, kind: &str) -> Value {
        for _ in 0..100 {
            let (k, data) = self.next().await;
            if k == kind {
                return data;
            }
        }
        panic!("no {kind} event among the next 100");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_and_a_resumption_reach_followers_as_two_events() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    let mut at_b = Follower::start(&b).await;
    let id = federate(&a, &b).await;
    // The new federation, then its link.
    let established = at_b.next_of("established").await;
    assert_eq!(established["federation"], id.as_str(), "{established}");
    assert_eq!(established["peer"], "plant-a", "{established}");
    let mut at_a = Follower::start(&a).await;

    let (status, body) = b
        .post(&format!("/v1/federations/{id}/suspend"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let suspended = at_b.next_of("suspended").await;
    assert_eq!(suspended["kind"], "suspended");
    assert_eq!(suspended["federation"], id.as_str(), "{suspended}");
    assert_eq!(suspended["peer"], "plant-a", "{suspended}");
    assert_eq!(suspended["state"], "suspended", "{suspended}");
    assert_eq!(suspended["previous"], "active", "{suspended}");
    let time = suspended["time"].as_str().unwrap_or_default();
    assert!(
        humantime::parse_rfc3339(time).is_ok(),
        "not RFC 3339: {suspended}"
    );

    let (status, body) = b
        .post(&format!("/v1/federations/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let resumed = at_b.next_of("resumed").await;
    assert_eq!(
        (&resumed["state"], &resumed["previous"]),
        (&json!("active"), &json!("suspended")),
        "{resumed}"
    );

    // The partner follows the suspension and the resumption, and says so.
    let suspended = at_a.next_of("suspended").await;
    assert_eq!(suspended["peer"], "supplier-b", "{suspended}");
    let resumed = at_a.next_of("resumed").await;
    assert_eq!(resumed["federation"], id.as_str(), "{resumed}");

    // The stream is the operator's.
    let (status, issued) = b
        .post(
            "/v1/tokens",
            json!({"subject": "erp", "topics": ["t/#"], "actions": ["subscribe"]}),
        )
        .await;
    assert_eq!(status, 200, "{issued}");
    let refused = b
        .http
        .get(b.url("/v1/events"))
        .bearer_auth(issued["token"].as_str().unwrap_or_default())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status(), 403);
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}
