//! The publish WebSocket (`GET /v1/messages/publish`): many messages over one socket, answered
//! in order, delivered to the peer's subscribers; a refused message is answered with an error
//! frame and the stream goes on. Two gateways in one process over real mutual TLS on loopback.

mod common;

use common::{Node, federate, next_json};
use futures_util::SinkExt as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_stream_answers_each_message_in_order_and_delivers_all() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let mut at_b = b.websocket("/v1/messages/stream", &b.token).await.unwrap();
    let mut publisher = a.websocket("/v1/messages/publish", &a.token).await.unwrap();

    // Pipelined: every message is written before any reply is read.
    for seq in 0..100 {
        let body = json!({"to": "supplier-b", "topic": "line-3/temp", "payload": {"seq": seq}});
        publisher
            .feed(Message::Text(body.to_string().into()))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();

    let mut ids = Vec::new();
    for _ in 0..100 {
        let reply = next_json(&mut publisher).await;
        let id = reply["id"]
            .as_str()
            .unwrap_or_else(|| panic!("not an id: {reply}"));
        assert!(id.starts_with("fed_"), "{reply}");
        ids.push(id.to_owned());
    }
    for (seq, id) in ids.iter().enumerate() {
        let got = next_json(&mut at_b).await;
        assert_eq!(got["message"], json!({"seq": seq}));
        // Replies came in the order the messages were written: the n-th id is the n-th message.
        assert_eq!(got["federation"]["id"], id.as_str());
    }
    publisher.close(None).await.unwrap();
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_stream_answers_a_bad_message_with_an_error_and_goes_on() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let mut at_b = b.websocket("/v1/messages/stream", &b.token).await.unwrap();
    let mut publisher = a.websocket("/v1/messages/publish", &a.token).await.unwrap();

    let frames = [
        json!({"to": "supplier-b", "topic": "t", "payload": 1}).to_string(),
        "{not json".to_owned(),
        json!({"to": "supplier-b", "topic": "t", "payload": 2, "colour": "red"}).to_string(),
        json!({"to": "nowhere", "topic": "t", "payload": 3}).to_string(),
        json!({"to": "supplier-b", "topic": "t", "payload": 4, "wait": true}).to_string(),
        json!({"to": "supplier-b", "topic": "t", "payload": 6, "flags": ["identified"]})
            .to_string(),
        json!({"to": "supplier-b", "topic": "t", "payload": 5}).to_string(),
    ];
    for f in &frames {
        publisher
            .feed(Message::Text(f.clone().into()))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();

    let replies = [
        next_json(&mut publisher).await,
        next_json(&mut publisher).await,
        next_json(&mut publisher).await,
        next_json(&mut publisher).await,
        next_json(&mut publisher).await,
        next_json(&mut publisher).await,
        next_json(&mut publisher).await,
    ];
    assert!(replies[0]["id"].is_string(), "{}", replies[0]);
    let error = |i: usize| {
        let e = &replies[i]["error"];
        (
            e["code"]
                .as_str()
                .unwrap_or_else(|| panic!("{}", replies[i])),
            e["message"].as_str().unwrap().to_owned(),
        )
    };
    let (code, message) = error(1);
    assert_eq!(code, "bad_request");
    assert!(message.starts_with("message: "), "{message}");
    let (code, message) = error(2);
    assert_eq!(code, "bad_request");
    assert!(message.contains("unknown field `colour`"), "{message}");
    let (code, message) = error(3);
    assert_eq!(code, "unknown_destination");
    assert!(
        message.contains("no federation with mesh nowhere"),
        "{message}"
    );
    let (code, message) = error(4);
    assert_eq!(code, "bad_request");
    assert!(
        message.contains("wait needs an acknowledged delivery"),
        "{message}"
    );
    // The sender's identity is the gateway's to seal, never a client's to claim.
    let (code, message) = error(5);
    assert_eq!(code, "bad_request");
    assert!(
        message.starts_with("flags: identified is the gateway's to set"),
        "{message}"
    );
    assert!(replies[6]["id"].is_string(), "{}", replies[6]);

    // Only the two good messages arrive, in order.
    assert_eq!(next_json(&mut at_b).await["message"], 1);
    assert_eq!(next_json(&mut at_b).await["message"], 5);
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_stream_needs_the_bearer_token() {
    let a = Node::start("plant-a").await;
    let refused = a.websocket("/v1/messages/publish", "wrong").await;
    assert_eq!(refused.err(), Some(401));
    a.gateway.shutdown().await;
}
