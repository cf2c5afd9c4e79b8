//! Message properties end to end: sent with a message (a JSON `SendRequest` or a binary publish
//! frame), they reach the destination's subscribers exactly as sent — in the JSON's
//! `federation.metadata.properties` and in binary frames, live and from a durable subscription —
//! while the envelope as it crossed (the export form's proof) holds none of them in clear.
//! Properties that break a rule are refused naming the property. Two gateways in one process
//! over real mutual TLS on loopback.

#![expect(
    clippy::unwrap_used,
    reason = "integration tests: a step that fails is the test failing"
)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Node, Ws, federate};
use futures_util::{SinkExt as _, StreamExt as _};
use meshfed_node::api::binary::{self, Delivered, Publish};
use meshfed_node::api::models::PublishReply;
use meshfed_proto::envelope::export::{Crossed, Exported};
use meshfed_proto::envelope::{Flags, Properties};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The next frame, failing the test after ten seconds.
async fn next_frame(ws: &mut Ws) -> Message {
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => panic!("the socket failed: {e}"),
        Ok(None) => panic!("the socket closed"),
        Err(_) => panic!("no frame within 10 s"),
    }
}

async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    match next_frame(ws).await {
        Message::Binary(b) => b.to_vec(),
        other => panic!("not a binary frame: {other:?}"),
    }
}

async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("not a text frame: {other:?}"),
    }
}

/// Correlation data with bytes that are not text.
const CORRELATION: &[u8] = b"req-7f3a\x00\xff";

/// What a requester attaches: a trace header, a name given twice (order kept), an empty value,
/// a value with a tab and non-ASCII text, correlation data and a reply topic.
fn request_json() -> Value {
    json!({
        "user": [
            ["traceparent", "00-4bf92f3577b34da6-01"],
            ["x-route", "north"],
            ["x-route", "south"],
            ["x-empty", ""],
            ["x-note", "Grüße\tvom Werk"],
        ],
        "correlation_data": B64.encode(CORRELATION),
        "reply_to": "replies/plant-a/erp",
    })
}

fn request() -> Properties {
    let pairs = request_json()["user"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_owned(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    Properties::new(
        pairs,
        Some(CORRELATION.to_vec()),
        Some("replies/plant-a/erp".parse().unwrap()),
    )
    .unwrap()
}

/// Every text of `request()`, none of which may cross in clear.
const SECRETS: [&[u8]; 6] = [
    b"traceparent",
    b"4bf92f3577b34da6",
    b"x-route",
    b"vom Werk",
    b"req-7f3a",
    b"replies/plant-a",
];

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The envelope of a JSON frame, its proof (the envelope as it crossed) checked to be the same.
fn exported(text: &str) -> Exported {
    Exported::from_json(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_sent_with_a_message_reach_json_and_binary_subscribers_exactly_as_sent() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let mut json_export = b.stream("?topic=orders/%23&proof=required").await;
    let mut binary_spec = b.stream("?topic=orders/%23&format=binary").await;
    // Registered, then away: what arrives meanwhile is kept in the journal as JSON.
    let durable = "?durable=props&topic=orders/%23&format=binary";
    let mut away = b.stream(durable).await;
    away.close(None).await.unwrap();
    while let Some(Ok(_)) = away.next().await {}

    // Over HTTP, JSON.
    let (status, sent) = a
        .post(
            "/v1/messages",
            json!({
                "to": "supplier-b", "topic": "orders/1", "payload": {"qty": 3}, "qos": 1,
                "wait": true, "properties": request_json(),
            }),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    // Over the publish socket, binary: the same properties.
    let mut publisher = a
        .websocket("/v1/messages/publish?format=binary", &a.token)
        .await
        .unwrap();
    let mut frame = Publish::new(
        "supplier-b".parse().unwrap(),
        "orders/2".parse().unwrap(),
        b"second".to_vec(),
    );
    frame.content_type = "text/plain".parse().unwrap();
    frame.qos = meshfed_proto::envelope::Qos::AtLeastOnce;
    frame.wait = true;
    frame.properties = request();
    publisher
        .send(Message::Binary(frame.encode().into()))
        .await
        .unwrap();
    let second = match binary::decode_reply(&next_binary(&mut publisher).await).unwrap() {
        PublishReply::Acknowledged(a) => a.id,
        other => panic!("not acknowledged: {other:?}"),
    };
    // And one without properties.
    let (status, plain) = a
        .post(
            "/v1/messages",
            json!({"to": "supplier-b", "topic": "orders/3", "payload": 1, "qos": 1, "wait": true}),
        )
        .await;
    assert_eq!(status, 200, "{plain}");
    let ids = [
        sent["id"].clone(),
        json!(second.to_string()),
        plain["id"].clone(),
    ];

    for (n, id) in ids.iter().enumerate() {
        let with_properties = n < 2;
        let text = next_text(&mut json_export).await;
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["federation"]["id"], *id);
        let metadata = &doc["federation"]["metadata"];
        let flags = &doc["federation"]["routing"]["flags"];
        if with_properties {
            // Exactly as sent: order, the repeated name, the empty value, bytes and topic.
            assert_eq!(metadata["properties"], request_json(), "{doc:#}");
            assert_eq!(*flags, json!(["reliable", "identified", "properties"]));
        } else {
            assert!(metadata.get("properties").is_none(), "{doc:#}");
            assert_eq!(*flags, json!(["reliable", "identified"]));
        }
        let read = exported(&text);
        let expected = if with_properties {
            request()
        } else {
            Properties::default()
        };
        assert_eq!(read.envelope.properties, expected);
        // The envelope as it crossed the link carries the properties sealed: no name, value,
        // correlation data or reply topic in its bytes, only the flag in its signed header.
        let crossed = read.crossed.as_ref().expect("the export form's proof");
        let bytes = crossed.encode();
        for secret in SECRETS {
            assert!(
                !holds(&bytes, secret),
                "{} is in clear in the envelope as it crossed",
                String::from_utf8_lossy(secret)
            );
        }
        assert_eq!(
            crossed.header().flags.contains(Flags::PROPERTIES),
            with_properties
        );
        assert_eq!(Crossed::decode(&bytes).unwrap(), *crossed);

        let live = Delivered::decode(&next_binary(&mut binary_spec).await).unwrap();
        assert_eq!(live.envelope.header.id.to_string(), *id);
        assert_eq!(live.envelope.properties, expected);
    }

    // The durable subscription kept them (as JSON in the journal) and delivers them in binary.
    let mut back = b.stream(durable).await;
    for (n, id) in ids.iter().enumerate() {
        let kept = Delivered::decode(&next_binary(&mut back).await).unwrap();
        assert_eq!(kept.envelope.header.id.to_string(), *id);
        let expected = if n < 2 {
            request()
        } else {
            Properties::default()
        };
        assert_eq!(kept.envelope.properties, expected);
    }
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_that_break_a_rule_are_refused_naming_the_property() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let send = |properties: Value| json!({"to": "supplier-b", "topic": "t", "payload": 1, "properties": properties});
    let many: Vec<Value> = (0..65).map(|i| json!([format!("p{i}"), "v"])).collect();
    let cases = [
        (
            send(json!({"user": many})),
            "properties: user: 65 user properties, at most 64 are allowed",
        ),
        (
            send(json!({"user": [["ok", "1"], ["", "2"]]})),
            "properties: user[1]: the name is empty",
        ),
        (
            send(json!({"user": [["line", "a\r\nb"]]})),
            "properties: user[0] \"line\": the value holds a control character ('\\r')",
        ),
        (
            send(json!({"correlation_data": "not base64!"})),
            "properties: correlation_data: not standard base64",
        ),
        (
            send(json!({"correlation_data": B64.encode([7; 300])})),
            "properties: correlation_data: is 300 bytes, at most 256 are allowed",
        ),
        (
            json!({"to": "supplier-b", "topic": "t", "payload": 1, "flags": ["properties"]}),
            "flags: properties is the gateway's to set",
        ),
    ];
    for (body, expected) in cases {
        let (status, err) = a.post("/v1/messages", body).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["code"], "bad_request", "{err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(expected), "{message}");
    }
    // A reply topic that is no topic: serde names it, with its place in the body.
    let (status, err) = a
        .post("/v1/messages", send(json!({"reply_to": "replies/#"})))
        .await;
    assert_eq!(status, 400, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("invalid topic \"replies/#\""), "{message}");

    // The properties count in the agreed message size (1 MiB here) with the payload.
    let full = "x".repeat(1 << 20);
    let body =
        json!({"to": "supplier-b", "topic": "t", "payload": full, "content_type": "text/plain"});
    let (status, ok) = a.post("/v1/messages", body.clone()).await;
    assert_eq!(status, 202, "{ok}");
    let mut over = body;
    over["properties"] = json!({"user": [["k", "v"]]});
    let (status, err) = a.post("/v1/messages", over).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (413, &json!("too_large")),
        "{err}"
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}
