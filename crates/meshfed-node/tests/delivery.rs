//! Reliable delivery through the API, gateways in one process over real mutual TLS on loopback:
//! acknowledged sends, the bounded store-and-forward queue, dead letters, both signature modes,
//! durable subscriptions, the stream's `proof` parameter, and the order a backlog drains in.

mod common;

use common::{Node, Ws, federate, next_json, wait_for};
use futures_util::{SinkExt as _, StreamExt as _};
use meshfed_node::config::SignatureMode;
use meshfed_proto::envelope::Envelope;
use meshfed_proto::{FederationState, Termination};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// `POST /v1/messages` with `body`.
async fn send(from: &Node, body: Value) -> (u16, Value) {
    from.post("/v1/messages", body).await
}

/// A qos-1 message to supplier-b on `topic` with `payload` and `priority`, accepted.
async fn send_reliable(from: &Node, topic: &str, payload: &str, priority: u8) -> String {
    let (status, sent) = send(
        from,
        json!({"to": "supplier-b", "topic": topic, "payload": payload, "qos": 1, "priority": priority}),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    sent["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {sent}"))
        .to_owned()
}

/// Waits until `node` sees no link for federation `id`.
async fn wait_link_down(node: &Node, id: &str) {
    wait_for(|| async {
        node.get(&format!("/v1/federations/{id}")).await.1["health"] == "unreachable"
    })
    .await;
}

/// Opens durable subscription `name` on `t/#` and closes it again: from then on the gateway
/// keeps every reliable message on `t/#` for it.
async fn register_durable(node: &Node, name: &str) {
    let mut ws = node.stream(&format!("?durable={name}&topic=t/%23")).await;
    close(&mut ws).await;
}

/// Registers durable subscription `name` on `t/#` at `b`, stops `b`, has `a` queue `m0`,
/// `m1`, … (`count` reliable messages on `t/p`) while it is away, and starts `b` again: returns
/// it and the subscription's stream, which the backlog reaches in transfers of several
/// envelopes.
async fn queue_while_away(a: &Node, b: Node, id: &str, name: &str, count: usize) -> (Node, Ws) {
    register_durable(&b, name).await;
    let stopped = b.stop().await;
    wait_link_down(a, id).await;
    for n in 0..count {
        send_reliable(a, "t/p", &format!("m{n}"), 0).await;
    }
    let b = stopped.start().await;
    let stream = b.stream(&format!("?durable={name}&topic=t/%23")).await;
    (b, stream)
}

/// Closes a WebSocket and waits for the server's close.
async fn close(ws: &mut Ws) {
    if let Err(e) = ws.close(None).await {
        panic!("closing a WebSocket: {e}");
    }
    while let Some(Ok(_)) = ws.next().await {}
}

/// The error code and message of an API error body.
fn error_of(body: &Value) -> (&str, &str) {
    let e = &body["error"];
    (
        e["code"].as_str().unwrap_or_else(|| panic!("{body}")),
        e["message"].as_str().unwrap_or_else(|| panic!("{body}")),
    )
}

/// plant-a and supplier-b, federated; the federation's id.
async fn pair() -> (Node, Node, String) {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;
    (a, b, id)
}

/// Takes the write lock of `node`'s database from another connection, as another process
/// could: until it is rolled back, `node`'s journal commits wait (and fail after the busy
/// timeout, 5 s).
fn hold_write_lock(node: &Node) -> rusqlite::Connection {
    let path = node.dir().join("store/meshfed.db");
    let lock = rusqlite::Connection::open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    lock.execute_batch("BEGIN IMMEDIATE")
        .unwrap_or_else(|e| panic!("taking the write lock of {}: {e}", path.display()));
    lock
}

/// `POST path` with `body` on `node`, answered in the background.
fn post_in_background(
    node: &Node,
    path: &str,
    body: Value,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let (http, url, token) = (node.http.clone(), node.url(path), node.token.clone());
    tokio::spawn(async move {
        let answer = async {
            let r = http
                .post(&url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            Ok::<_, reqwest::Error>((r.status().as_u16(), r.json::<Value>().await?))
        };
        answer.await.unwrap_or_else(|e| panic!("POST {url}: {e}"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_send_is_accepted_then_acknowledged_and_arrives_flagged_reliable() {
    let (a, b, id) = pair().await;
    let mut at_b = b.stream("").await;

    let (status, accepted) = send(
        &a,
        json!({"to": "supplier-b", "topic": "t/a", "payload": {"n": 1}, "qos": 1}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let first = accepted["id"].as_str().unwrap();
    assert!(first.starts_with("fed_"), "{accepted}");

    let (status, acked) = send(
        &a,
        json!({"to": "supplier-b", "topic": "t/a", "payload": {"n": 2}, "qos": 1, "wait": true}),
    )
    .await;
    assert_eq!(status, 200, "{acked}");
    let second = acked["id"].as_str().unwrap();
    assert!(second.starts_with("fed_"), "{acked}");
    assert_eq!(acked, json!({"id": second, "status": "acknowledged"}));

    for (n, sent) in [(1, first), (2, second)] {
        let got = next_json(&mut at_b).await;
        assert_eq!(got["message"], json!({"n": n}), "{got}");
        let f = &got["federation"];
        assert_eq!(f["id"], sent, "{got}");
        assert_eq!(f["policy"]["qos"], 1, "{got}");
        let flags = f["routing"]["flags"].as_array().unwrap();
        assert!(flags.contains(&json!("reliable")), "{got}");
    }
    let (_, fed) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(fed["delivery"]["acknowledged"], 2, "{fed}");
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_for_an_unreachable_peer_refuses_sends_beyond_its_limit() {
    let a = Node::start_with("plant-a", |c| c.delivery.max_queued_messages = 3).await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;
    b.gateway.shutdown().await;
    wait_link_down(&a, &id).await;

    let (status, err) = send(
        &a,
        json!({"to": "supplier-b", "topic": "t/a", "payload": 0}),
    )
    .await;
    assert_eq!(status, 503, "{err}");
    let (code, message) = error_of(&err);
    assert_eq!(code, "peer_unreachable");
    assert!(
        message.contains("mesh supplier-b is unreachable") && message.contains("qos 1"),
        "{message}"
    );

    for n in 1..=3 {
        send_reliable(&a, "t/a", &format!("m{n}"), 0).await;
    }
    // The queue is full: a reliable message is refused at once, told when to come back.
    let answer = a
        .http
        .post(a.url("/v1/messages"))
        .bearer_auth(&a.token)
        .json(&json!({"to": "supplier-b", "topic": "t/a", "payload": "m4", "qos": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 503);
    let retry_after = answer.headers().get("retry-after").cloned();
    let err: Value = answer.json().await.unwrap();
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some("1"),
        "{err}"
    );
    let (code, message) = error_of(&err);
    assert_eq!(code, "queue_full");
    assert!(
        message.contains("the queue for supplier-b is full") && message.contains("3 messages"),
        "{message}"
    );

    let (status, fed) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(status, 200, "{fed}");
    assert_eq!(fed["backlog"]["messages"], 3, "{fed}");
    assert_eq!(fed["backlog"]["in_flight"], 0, "{fed}");
    a.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_socket_waits_for_room_in_a_full_queue_instead_of_refusing() {
    let a = Node::start_with("plant-a", |c| c.delivery.max_queued_messages = 2).await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;
    register_durable(&b, "all").await;
    let stopped = b.stop().await;
    wait_link_down(&a, &id).await;

    let mut publisher = a.websocket("/v1/messages/publish", &a.token).await.unwrap();
    for n in 0..4 {
        let body =
            json!({"to": "supplier-b", "topic": "t/p", "payload": format!("m{n}"), "qos": 1});
        publisher
            .feed(Message::Text(body.to_string().into()))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    // Two fit; the third waits for room (the socket reads nothing more meanwhile) rather than
    // being refused with queue_full.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let reply = next_json(&mut publisher).await;
        ids.push(
            reply["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{reply}"))
                .to_owned(),
        );
    }
    let (_, fed) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(fed["backlog"]["messages"], 2, "{fed}");

    // The peer comes back, the queue drains, and the waiting messages go on, in order.
    let b = stopped.start().await;
    for _ in 2..4 {
        let reply = next_json(&mut publisher).await;
        ids.push(
            reply["id"]
                .as_str()
                .unwrap_or_else(|| panic!("not accepted: {reply}"))
                .to_owned(),
        );
    }
    let mut at_b = b.stream("?durable=all&topic=t/%23").await;
    for (n, sent) in ids.iter().enumerate() {
        let got = next_json(&mut at_b).await;
        assert_eq!(got["message"], json!(format!("m{n}")), "{got}");
        assert_eq!(got["federation"]["id"], sent.as_str(), "{got}");
    }
    publisher.close(None).await.unwrap();
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_whose_deadline_passes_in_the_queue_is_dead_lettered_and_reported() {
    let (a, b, id) = pair().await;
    b.gateway.shutdown().await;
    wait_link_down(&a, &id).await;

    let (status, err) = send(
        &a,
        json!({"to": "supplier-b", "topic": "t/late", "payload": 1, "qos": 1,
               "max_latency": 200, "wait": true}),
    )
    .await;
    assert_eq!(status, 422, "{err}");
    let (code, message) = error_of(&err);
    assert_eq!(code, "dead_lettered");
    assert!(
        message.contains("was dead-lettered: deadline passed"),
        "{message}"
    );
    let dead = message
        .strip_prefix("message ")
        .and_then(|m| m.split(' ').next())
        .unwrap_or_else(|| panic!("no id in {message:?}"));

    let (status, list) = a.get("/v1/messages/dead-letters").await;
    assert_eq!(status, 200, "{list}");
    let letters = list["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{list}");
    let letter = &letters[0];
    assert_eq!(letter["id"], dead, "{list}");
    assert_eq!(letter["to"], "supplier-b", "{list}");
    assert_eq!(letter["topic"], "t/late", "{list}");
    assert_eq!(letter["qos"], 1, "{list}");
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .starts_with("deadline passed"),
        "{list}"
    );

    assert_dead_lettered(&a, "expired_in_queue", 1).await;
    let (_, fed) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(fed["dead_lettered"], 1, "{fed}");
    assert_eq!(fed["backlog"]["messages"], 0, "{fed}");
    a.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_signatures_deliver_without_a_batch_proof() {
    let a = Node::start_with("plant-a", |c| {
        c.delivery.signatures = SignatureMode::Message
    })
    .await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let mut at_b = b.stream("").await;

    for n in 0..3 {
        send_reliable(&a, "t/a", &format!("m{n}"), 0).await;
    }
    let (status, sent) = send(
        &a,
        json!({"to": "supplier-b", "topic": "t/a", "payload": "m3"}),
    )
    .await;
    assert_eq!(status, 202, "{sent}");

    for n in 0..4 {
        let got = next_json(&mut at_b).await;
        assert_eq!(got["message"], format!("m{n}"), "{got}");
        let security = got["federation"]["security"].as_object().unwrap();
        assert!(!security.contains_key("batch"), "{got}");
        let env = Envelope::from_json(&got.to_string()).unwrap();
        assert!(env.batch.is_none(), "{got}");
        assert_eq!(env.header.id.to_string(), got["federation"]["id"]);
    }
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

/// A backlog drains in transfers of many envelopes, each signed alone (on every core at the
/// sender, verified on every core at the receiver): all arrive, in the order they were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_signatures_drain_a_backlog_in_order() {
    let a = Node::start_with("plant-a", |c| {
        c.delivery.signatures = SignatureMode::Message
    })
    .await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;
    let (b, mut sub) = queue_while_away(&a, b, &id, "d1", 24).await;
    for n in 0..24 {
        let got = next_json(&mut sub).await;
        assert_eq!(got["message"], format!("m{n}"), "{got}");
    }
    let (_, fed) = a.get(&format!("/v1/federations/{id}")).await;
    assert!(
        fed["delivery"]["transfers"].as_u64().unwrap() < 24,
        "the backlog went in transfers of several envelopes: {fed}"
    );
    close(&mut sub).await;
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_signatures_deliver_each_envelope_with_its_inclusion_proof() {
    let (a, b, id) = pair().await;
    // Queued while B is away, the three leave together when it is back: one batch.
    let (b, mut at_b) = queue_while_away(&a, b, &id, "batch", 3).await;

    let mut root = None;
    for n in 0..3u32 {
        let got = next_json(&mut at_b).await;
        assert_eq!(got["message"], format!("m{n}"), "{got}");
        let batch = &got["federation"]["security"]["batch"];
        assert_eq!(batch["count"], 3, "{got}");
        assert_eq!(batch["index"], n, "{got}");
        assert!(!batch["proof"].as_str().unwrap().is_empty(), "{got}");
        let r = batch["root"].as_str().unwrap().to_owned();
        assert_eq!(
            root.get_or_insert(r.clone()),
            &r,
            "one batch, one root: {got}"
        );
        let env = Envelope::from_json(&got.to_string()).unwrap();
        let proof = env
            .batch
            .unwrap_or_else(|| panic!("no batch read from {got}"));
        assert_eq!(proof.count(), 3, "{got}");
        assert_eq!(env.header.id.to_string(), got["federation"]["id"]);
    }
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_subscriber_gets_what_it_missed_in_order_and_resumes_after_its_ack() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    register_durable(&b, "d1").await;

    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(send_reliable(&a, "t/d", &format!("m{n}"), 0).await);
    }

    let mut sub = b.stream("?durable=d1&topic=t/%23").await;
    for (n, id) in (1..=5).zip(&ids) {
        let got = next_json(&mut sub).await;
        assert_eq!(got["message"], format!("m{n}"), "{got}");
        assert_eq!(got["federation"]["id"], id.as_str(), "{got}");
    }
    let ack = json!({"ack": ids[2], "confirm": true}).to_string();
    sub.send(Message::Text(ack.into())).await.unwrap();
    assert_eq!(next_json(&mut sub).await, json!({"acked": ids[2]}));
    close(&mut sub).await;

    let mut sub = b.stream("?durable=d1&topic=t/%23").await;
    for (n, id) in (4..=5).zip(&ids[3..]) {
        let got = next_json(&mut sub).await;
        assert_eq!(got["message"], format!("m{n}"), "{got}");
        assert_eq!(got["federation"]["id"], id.as_str(), "{got}");
    }
    // Nothing else was pending: the next frame is a message sent now.
    let sixth = send_reliable(&a, "t/d", "m6", 0).await;
    let got = next_json(&mut sub).await;
    assert_eq!(got["federation"]["id"], sixth.as_str(), "{got}");
    close(&mut sub).await;
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_drains_by_priority_and_an_ordered_pair_keeps_its_order() {
    let (a, b, id) = pair().await;
    register_durable(&b, "d6").await;
    let stopped = b.stop().await;
    wait_link_down(&a, &id).await;
    for (payload, priority) in [("a0", 0), ("a7", 7), ("a3", 3)] {
        send_reliable(&a, "t/a", payload, priority).await;
    }
    for (payload, priority) in [("o1", 0), ("o2", 7)] {
        let (status, sent) = send(
            &a,
            json!({"to": "supplier-b", "topic": "t/o", "payload": payload, "qos": 1,
                   "priority": priority, "flags": ["ordered"]}),
        )
        .await;
        assert_eq!(status, 202, "{sent}");
    }
    let (_, fed) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(fed["backlog"]["messages"], 5, "{fed}");
    let b = stopped.start().await;

    let mut sub = b.stream("?durable=d6&topic=t/%23").await;
    let mut order = Vec::new();
    for _ in 0..5 {
        let got = next_json(&mut sub).await;
        order.push(got["message"].as_str().unwrap().to_owned());
    }
    // 7 first; o1 inherits o2's priority 7 so that o2 is not stuck behind it.
    assert_eq!(order, ["a7", "o1", "o2", "a3", "a0"]);
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

/// B's journal cannot commit for a while: another connection holds its database's write lock, so
/// B's writer gives up after the busy timeout with "database is locked". The qos-2 messages
/// that arrived meanwhile are neither acknowledged nor lost: once the lock is gone, each reaches
/// B's subscriber exactly once and A's backlog empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_at_the_receiver_loses_nothing_and_repeats_nothing() {
    let (a, b, id) = pair().await;
    // B keeps a copy for a durable subscriber: each delivered id then goes to SQLite with its
    // copy (one request, all or nothing), where another connection holds the write lock.
    register_durable(&b, "kept").await;
    let mut at_b = b.stream("?topic=t/%23").await;
    let lock = hold_write_lock(&b);

    let payloads: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    for p in &payloads {
        let (status, sent) = send(
            &a,
            json!({"to": "supplier-b", "topic": "t/x", "payload": p, "qos": 2}),
        )
        .await;
        assert_eq!(status, 202, "{sent}");
    }
    wait_for(|| async {
        b.metrics()
            .await
            .lines()
            .any(|l| l.starts_with("meshfed_journal_failed_total ") && !l.ends_with(" 0"))
    })
    .await;
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    wait_for(|| async {
        let (_, fed) = a.get(&format!("/v1/federations/{id}")).await;
        fed["backlog"]["messages"] == 0 && fed["delivery"]["acknowledged"] == 10
    })
    .await;
    // A last message: whatever B delivers of the first ten comes before it.
    let (status, sent) = send(
        &a,
        json!({"to": "supplier-b", "topic": "t/x", "payload": "end", "qos": 2}),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    let mut got = Vec::new();
    loop {
        let envelope = next_json(&mut at_b).await;
        match envelope["message"].as_str().unwrap() {
            "end" => break,
            p => got.push(p.to_owned()),
        }
    }
    got.sort();
    assert_eq!(got, payloads, "each message exactly once");
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

/// A forced termination revokes at once: the backlog for the peer is dead-lettered, the
/// sender waiting for an acknowledgement is told, and the dead letters are listed and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_termination_dead_letters_the_backlog_and_tells_the_sender() {
    let (a, b, id) = pair().await;
    b.gateway.shutdown().await;
    wait_link_down(&a, &id).await;
    for p in ["q1", "q2"] {
        send_reliable(&a, "t/q", p, 0).await;
    }
    let waiting = post_in_background(
        &a,
        "/v1/messages",
        json!({"to": "supplier-b", "topic": "t/q", "payload": "q3", "qos": 2, "wait": true}),
    );
    wait_for(|| async {
        a.get(&format!("/v1/federations/{id}")).await.1["backlog"]["messages"] == 3
    })
    .await;

    let (status, fed) = a
        .post(
            &format!("/v1/federations/{id}/terminate"),
            json!({"force": true}),
        )
        .await;
    assert_eq!(status, 200, "{fed}");
    let (status, err) = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the waiting sender is answered")
        .unwrap();
    assert_eq!(status, 422, "{err}");
    let (code, message) = error_of(&err);
    assert_eq!(code, "dead_lettered");
    assert!(
        message.ends_with("the federation ended before acknowledgement"),
        "{message}"
    );

    let list = dead_letters(&a).await;
    let mut reasons: Vec<&str> = list.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    reasons.dedup();
    assert_eq!(
        reasons,
        ["the federation ended before acknowledgement"],
        "{list:?}"
    );
    assert_eq!(list.len(), 3, "{list:?}");
    assert_dead_lettered(&a, "federation_ended", 3).await;
    let (_, fed) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(fed["backlog"]["messages"], 0, "{fed}");
    a.gateway.shutdown().await;
}

/// A graceful termination delivers what is in flight before it ends the federation. B cannot
/// acknowledge for a moment (it keeps copies for a durable subscriber, which go to SQLite with
/// the delivered ids, and another connection holds its database's write lock, so its journal
/// commit waits); A is terminated meanwhile, and waits for the acknowledgements before it tells
/// B: all twenty messages arrive, none is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_termination_delivers_what_is_in_flight_first() {
    let (a, b, id) = pair().await;
    register_durable(&b, "kept").await;
    let mut at_b = b.stream("?topic=t/%23").await;
    let lock = hold_write_lock(&b);
    for i in 0..20 {
        let (status, sent) = send(
            &a,
            json!({"to": "supplier-b", "topic": "t/g", "payload": i, "qos": 2}),
        )
        .await;
        assert_eq!(status, 202, "{sent}");
    }
    wait_for(|| async {
        a.get(&format!("/v1/federations/{id}")).await.1["backlog"]["in_flight"] == 20
    })
    .await;

    let terminating = post_in_background(&a, &format!("/v1/federations/{id}/terminate"), json!({}));
    wait_for(|| async {
        a.get(&format!("/v1/federations/{id}")).await.1["state"] == "terminated-graceful"
    })
    .await;
    // B's commit goes through now, well inside its busy timeout.
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let (status, fed) = terminating.await.unwrap();
    assert_eq!(status, 200, "{fed}");

    let (_, fed) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(fed["backlog"]["messages"], 0, "{fed}");
    assert_eq!(fed["dead_lettered"], 0, "{fed}");
    assert_eq!(fed["delivery"]["acknowledged"], 20, "{fed}");
    let mut got = std::collections::BTreeSet::new();
    while got.len() < 20 {
        got.insert(next_json(&mut at_b).await["message"].as_u64().unwrap());
    }
    assert_eq!(got, (0..20).collect());
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

/// Fails unless `node`'s metrics count `count` messages to supplier-b dead-lettered for `reason`.
async fn assert_dead_lettered(node: &Node, reason: &str, count: u64) {
    let metrics = node.metrics().await;
    let line =
        format!(r#"meshfed_dead_lettered_total{{peer="supplier-b",reason="{reason}"}} {count}"#);
    assert!(metrics.lines().any(|l| l == line), "no {line} in {metrics}");
}

/// The dead letters `node` lists.
async fn dead_letters(node: &Node) -> Vec<Value> {
    let (_, list) = node.get("/v1/messages/dead-letters").await;
    list["dead_letters"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .clone()
}

/// A gateway that stops after it stored a termination but before it recorded the dead letters
/// (here the termination is written to its store while it is down) dead-letters the stored
/// backlog when it starts again, instead of keeping it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_of_a_federation_that_ended_while_down_is_dead_lettered_at_start() {
    let (a, b, id) = pair().await;
    b.gateway.shutdown().await;
    wait_link_down(&a, &id).await;
    for p in ["q1", "q2", "q3"] {
        send_reliable(&a, "t/q", p, 0).await;
    }
    let a = a.stop().await;
    let store = meshfed_store::Store::open(&a.dir().join("store/meshfed.db")).unwrap();
    store
        .set_state(
            &id.parse().unwrap(),
            FederationState::Terminated(Termination::Forced),
            Some("terminated while the gateway was down"),
            meshfed_node::Clock::system().now(),
        )
        .unwrap();
    drop(store);

    let a = a.start().await;
    wait_for(|| async { dead_letters(&a).await.len() == 3 }).await;
    for letter in dead_letters(&a).await {
        assert_eq!(
            letter["reason"], "the federation ended before acknowledgement",
            "{letter}"
        );
    }
    assert_dead_lettered(&a, "federation_ended", 3).await;

    // Recorded once: the stored copies are gone, and a further start finds nothing to do.
    let a = a.stop().await;
    let db = rusqlite::Connection::open(a.dir().join("store/meshfed.db")).unwrap();
    let stored: i64 = db
        .query_row("SELECT count(*) FROM outbound", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 0);
    drop(db);
    let a = a.start().await;
    let (_, fed) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(fed["state"], "terminated-forced", "{fed}");
    assert_eq!(dead_letters(&a).await.len(), 3);
    a.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_stream_refuses_an_unknown_proof_value_naming_the_parameter() {
    let a = Node::start("plant-a").await;
    for query in ["?proof=bogus", "?durable=d1&proof=Required"] {
        let (status, body) = a
            .refused_websocket(&format!("/v1/messages/stream{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("proof") && message.contains("`none` or `required`"),
            "{message}"
        );
    }
    // What it accepts.
    for query in ["?proof=none", "?proof=required", ""] {
        drop(a.stream(query).await);
    }
    a.gateway.shutdown().await;
}
