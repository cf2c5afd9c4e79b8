//! Two gateways in one process federate over real mutual TLS on loopback, driven only through
//! their HTTP API: invite, join, list, send, and the WebSocket stream.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Node, Relay, federate, federate_via, wait_for};
use futures_util::StreamExt;
use meshfed_node::Clock;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_federate_and_exchange_messages_both_ways() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;

    let (_, list) = b.get("/v1/federations").await;
    let fed = &list["federations"][0];
    assert_eq!(fed["id"], id.as_str());
    assert_eq!(fed["peer"], "plant-a");
    assert_eq!(fed["state"], "active");
    assert_eq!(
        fed["agreement"]["security_suite"],
        "ecdsa-p384-sha384+aes-256-gcm"
    );

    let mut at_b = b.stream("?topic=line-3/%23").await;
    let mut at_a = a.stream("").await;
    let (status, sent) = a
        .post(
            "/v1/messages",
            json!({"to": "supplier-b", "topic": "line-3/temp", "payload": {"celsius": 21.5}}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let got: Value =
        serde_json::from_str(at_b.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(got["message"], json!({"celsius": 21.5}));
    assert_eq!(got["federation"]["id"], sent["id"]);
    assert_eq!(got["federation"]["source_mesh"]["id"], "plant-a");
    assert_eq!(
        got["federation"]["routing"]["path"],
        json!(["plant-a", "supplier-b"])
    );
    assert_eq!(
        got["federation"]["security"]["encryption"]["algorithm"],
        "AES-256-GCM"
    );

    let (status, _) = b.post("/v1/messages", json!({"to": "plant-a", "topic": "orders/new", "payload": "po-1", "content_type": "text/plain"})).await;
    assert_eq!(status, 202);
    let got: Value =
        serde_json::from_str(at_a.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(got["message"], "po-1");
    assert_eq!(got["federation"]["source_mesh"]["id"], "supplier-b");
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_token_is_refused_and_changes_nothing() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    let (_, invite) = b
        .post("/v1/federations/invite", json!({"peer": "plant-a"}))
        .await;
    let (status, _) = a
        .post("/v1/federations/join", json!({"token": invite["token"]}))
        .await;
    assert_eq!(status, 200);
    let id = a.get("/v1/federations").await.1["federations"][0]["id"].clone();
    let (status, _) = a
        .post(
            &format!("/v1/federations/{}/terminate", id.as_str().unwrap()),
            json!({"force": true}),
        )
        .await;
    assert_eq!(status, 200);
    // The peer learns of the termination over the link before the token is tried again.
    wait_for(|| async {
        b.get("/v1/federations").await.1["federations"][0]["state"] == "terminated-forced"
    })
    .await;
    let (status, err) = a
        .post("/v1/federations/join", json!({"token": invite["token"]}))
        .await;
    assert_eq!(status, 502, "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("was already used"), "{msg}");
    let (_, list) = a.get("/v1/federations").await;
    assert_eq!(
        list["federations"].as_array().unwrap().len(),
        1,
        "no federation was created"
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_destination_and_bad_token_are_clear_errors() {
    let a = Node::start("plant-a").await;
    let (status, err) = a
        .post(
            "/v1/messages",
            json!({"to": "nowhere", "topic": "t", "payload": 1}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "unknown_destination");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no federation with mesh nowhere")
    );
    let (status, err) = a
        .post("/v1/federations/join", json!({"token": "garbage"}))
        .await;
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a meshfed invitation token")
    );
    let r = a.http.get(a.url("/v1/federations")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    a.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_stops_both_directions_until_resumed() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;
    let (status, v) = a
        .post(&format!("/v1/federations/{id}/suspend"), json!({}))
        .await;
    assert_eq!((status, v["state"].as_str()), (200, Some("suspended")));
    wait_for(|| async {
        b.get("/v1/federations").await.1["federations"][0]["state"] == "suspended"
    })
    .await;
    for (from, to) in [(&a, "supplier-b"), (&b, "plant-a")] {
        let (status, err) = from
            .post(
                "/v1/messages",
                json!({"to": to, "topic": "t", "payload": 1}),
            )
            .await;
        assert_eq!(status, 409, "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is suspended"),
            "{err}"
        );
    }
    // Resuming is the peer's to do as well: B resumes, A follows.
    let (status, _) = b
        .post(&format!("/v1/federations/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200);
    wait_for(|| async { a.get("/v1/federations").await.1["federations"][0]["state"] == "active" })
        .await;
    let mut at_b = b.stream("").await;
    let (status, _) = a
        .post(
            "/v1/messages",
            json!({"to": "supplier-b", "topic": "t", "payload": 2}),
        )
        .await;
    assert_eq!(status, 202);
    let got: Value =
        serde_json::from_str(at_b.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(got["message"], 2);
    // Resuming what is active is refused, naming the states.
    let (status, err) = a
        .post(&format!("/v1/federations/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("it is already active"),
        "{err}"
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

/// Federation `id` as `node` shows it.
async fn view(node: &Node, id: &str) -> Value {
    node.get(&format!("/v1/federations/{id}")).await.1
}

/// The link session runs on the gateway's clock: each heartbeat interval of that clock sends a
/// heartbeat, and a peer that goes silent (its connection open, nothing arriving) is degraded
/// after two intervals and unreachable, its link closed, after three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_turns_degraded_then_unreachable_as_the_clock_advances() {
    // Whole seconds, so that the API's timestamps (milliseconds) show it exactly.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start = UNIX_EPOCH + Duration::from_secs(now.as_secs());
    let (clock, hand) = Clock::manual(start);
    let a = Node::start_on("plant-a", clock.clone()).await;
    // B's clock stands still: it sends no heartbeat of its own after the first.
    let b = Node::start_on("supplier-b", Clock::manual(start).0).await;
    let relay = Relay::start(b.gateway.federation_addr()).await;
    let id = federate_via(&a, &b, relay.addr).await;
    let at = |offset: Duration| start + offset;
    let shown = |v: &Value| {
        v["last_heartbeat"]
            .as_str()
            .and_then(|s| humantime::parse_rfc3339(s).ok())
    };
    // The first heartbeat goes out when the link comes up and is answered at once.
    wait_for(|| async { shown(&view(&a, &id).await) == Some(at(Duration::ZERO)) }).await;
    let interval = Duration::from_secs(5);
    hand.advance(interval);
    wait_for(|| async { shown(&view(&a, &id).await) == Some(at(interval)) }).await;
    assert_eq!(view(&a, &id).await["health"], "healthy");

    relay.pause();
    hand.advance(interval * 2 + Duration::from_millis(1));
    wait_for(|| async { view(&a, &id).await["health"] == "degraded" }).await;
    let v = view(&a, &id).await;
    assert_eq!(
        (&v["state"], &v["status"]),
        (&json!("active"), &json!("degraded")),
        "{v}"
    );
    hand.advance(interval);
    wait_for(|| async { view(&a, &id).await["health"] == "unreachable" }).await;
    let v = view(&a, &id).await;
    assert_eq!(
        (&v["status"], &v["last_heartbeat"]),
        (&json!("unreachable"), &Value::Null),
        "{v}"
    );
}

/// Every refusal is counted under its own reason and direction, and the API answers with that
/// reason's code and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_per_reason_and_direction() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;
    let count = |text: &str, direction: &str, reason: &str| {
        let series = format!(
            "meshfed_envelopes_rejected_total{{direction=\"{direction}\",reason=\"{reason}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse::<u64>()
            .unwrap()
    };
    let before = a.metrics().await;
    assert_eq!(count(&before, "inbound", "bad_signature"), 0);
    assert_eq!(count(&before, "outbound", "unknown_destination"), 0);

    let refusals = [
        (
            json!({"to": "nowhere", "topic": "t", "payload": 1}),
            404,
            "unknown_destination",
        ),
        (
            json!({"to": "supplier-b", "topic": "t", "payload": "x".repeat(1_100_000), "content_type": "text/plain"}),
            413,
            "too_large",
        ),
    ];
    for (body, status, reason) in refusals {
        let (got, err) = a.post("/v1/messages", body).await;
        assert_eq!(
            (got, err["error"]["code"].as_str()),
            (status, Some(reason)),
            "{err}"
        );
        assert_eq!(count(&a.metrics().await, "outbound", reason), 1, "{reason}");
    }
    let (status, _) = a
        .post(&format!("/v1/federations/{id}/suspend"), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, err) = a
        .post(
            "/v1/messages",
            json!({"to": "supplier-b", "topic": "t", "payload": 1}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("federation_not_active"))
    );
    let after = a.metrics().await;
    assert_eq!(count(&after, "outbound", "not_active"), 1);
    assert_eq!(count(&after, "inbound", "not_active"), 0);
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

/// Content keys rotate within one link session by volume: with at most three envelopes per
/// key, ten messages cross under at least four keys, each opened by the peer, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_keys_rotate_within_a_session_by_volume() {
    let a = Node::start_with("plant-a", |c| c.federation.content_key_messages = 3).await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let mut at_b = b.stream("?topic=t/%23").await;
    let mut keys = Vec::new();
    for n in 0..10 {
        let (status, sent) = a
            .post(
                "/v1/messages",
                json!({"to": "supplier-b", "topic": "t/k", "payload": {"n": n}, "qos": 1, "wait": true}),
            )
            .await;
        assert_eq!(status, 200, "{sent}");
        let got = common::next_json(&mut at_b).await;
        assert_eq!(got["message"], json!({"n": n}));
        let key = got["federation"]["security"]["encryption"]["key_id"].clone();
        if keys.last() != Some(&key) {
            keys.push(key);
        }
    }
    assert!(
        keys.len() >= 4,
        "10 messages under {} keys: {keys:?}",
        keys.len()
    );
    let distinct: std::collections::HashSet<String> = keys.iter().map(Value::to_string).collect();
    assert_eq!(distinct.len(), keys.len(), "a key came back: {keys:?}");
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}
