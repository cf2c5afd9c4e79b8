//! The binary frames of the messaging WebSockets (`format=binary`): published in binary, an
//! envelope reaches binary and JSON subscribers as the same envelope; malformed frames are
//! answered with errors that name what is wrong; durable subscriptions deliver binary frames
//! and take JSON acknowledgements. Two gateways in one process over real mutual TLS on loopback.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{Node, Ws, federate, next_json};
use futures_util::{SinkExt as _, StreamExt as _};
use meshfed_node::api::binary::{self, Delivered, Publish};
use meshfed_node::api::models::{ErrorBody, PublishReply};
use meshfed_proto::envelope::export::{Crossed, Exported};
use meshfed_proto::envelope::{EnvelopeId, Flags, MaxLatency, Priority, Qos};
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

/// The next binary frame; fails on any other.
async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    match next_frame(ws).await {
        Message::Binary(b) => b.to_vec(),
        other => panic!("not a binary frame: {other:?}"),
    }
}

/// The next text frame; fails on any other.
async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("not a text frame: {other:?}"),
    }
}

fn publish(topic: &str, content_type: &str, payload: &[u8]) -> Publish {
    fn parsed<T: std::str::FromStr<Err: std::fmt::Display>>(s: &str) -> T {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    Publish {
        content_type: parsed(content_type),
        ..Publish::new(parsed("supplier-b"), parsed(topic), payload.to_vec())
    }
}

/// The id of an accepted message, failing on any other reply.
fn accepted(reply: PublishReply) -> EnvelopeId {
    match reply {
        PublishReply::Accepted(a) => a.id,
        other => panic!("not accepted: {other:?}"),
    }
}

/// The code and message of a refusal, failing on any other reply.
fn refused(reply: PublishReply) -> (String, String) {
    match reply {
        PublishReply::Refused(ErrorBody { error }) => (error.code, error.message),
        other => panic!("not refused: {other:?}"),
    }
}

/// The JSON stream shows a JSON payload as a JSON value, which reads back re-written (compact,
/// keys sorted), while a binary frame carries the bytes as published: where both are the same
/// JSON value, `json` takes the binary frame's bytes.
fn same_json_payload(binary: &Delivered, json: &mut Exported) {
    if !json.envelope.header.metadata.content_type.is_json() {
        return;
    }
    let value = |m: &Option<Vec<u8>>| {
        serde_json::from_slice::<Value>(m.as_deref().unwrap_or_default())
            .unwrap_or_else(|e| panic!("not a JSON payload: {e}"))
    };
    assert_eq!(
        value(&binary.envelope.message),
        value(&json.envelope.message)
    );
    json.envelope.message.clone_from(&binary.envelope.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_in_binary_an_envelope_reaches_binary_and_json_subscribers_as_the_same_envelope()
{
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let mut json_spec = b.stream("").await;
    let mut binary_spec = b.stream("?format=binary").await;
    let mut json_export = b.stream("?proof=required").await;
    let mut binary_export = b.stream("?format=binary&proof=required").await;
    let mut publisher = a
        .websocket("/v1/messages/publish?format=binary", &a.token)
        .await
        .unwrap();

    let binary_payload: Vec<u8> = (0..=255).collect();
    let mut full = publish("t/all", "text/plain", "é 21.5 °C".as_bytes());
    full.qos = Qos::AtLeastOnce;
    full.priority = Priority::try_from(6).unwrap();
    full.flags = Flags::ORDERED;
    full.max_latency = Some(MaxLatency::try_from(60_000u32).unwrap());
    let messages = [
        full,
        publish("t/bytes", "application/octet-stream", &binary_payload),
        publish("t/json", "application/json", br#"{"seq":1,"ok":true}"#),
        publish("t/empty", "application/octet-stream", b""),
    ];
    for m in &messages {
        publisher
            .feed(Message::Binary(m.encode().into()))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let mut ids = Vec::new();
    for _ in &messages {
        let reply = binary::decode_reply(&next_binary(&mut publisher).await).unwrap();
        ids.push(accepted(reply));
    }

    for (m, id) in messages.iter().zip(&ids) {
        let spec = Delivered::decode(&next_binary(&mut binary_spec).await).unwrap();
        let mut json = Exported::from_json(&next_text(&mut json_spec).await).unwrap();
        same_json_payload(&spec, &mut json);
        assert_eq!(spec.envelope, json.envelope, "{}", m.topic);
        assert_eq!(spec.proof, None);
        assert_eq!(spec.envelope.header.id, *id);
        // The payload exactly as published, and every field the request carried.
        let h = &spec.envelope.header;
        assert_eq!(spec.envelope.message.as_deref(), Some(&m.payload[..]));
        // Its sender, sealed with it: the operator's token (no rule here grants it a role).
        let sender = spec.envelope.sender.as_ref().expect("the sealed sender");
        assert_eq!((sender.subject.as_str(), sender.roles.len()), ("admin", 0));
        assert_eq!(
            (&h.metadata.topic, &h.metadata.content_type),
            (&m.topic, &m.content_type)
        );
        assert_eq!(
            (h.policy.qos, h.policy.priority, h.policy.max_latency),
            (m.qos, m.priority, m.max_latency)
        );
        // The gateway sealed the sender's identity in it: `identified`.
        let reliable = if m.qos == Qos::AtMostOnce {
            m.flags
        } else {
            m.flags.with(Flags::RELIABLE)
        };
        assert_eq!(h.flags, reliable.with(Flags::IDENTIFIED));
        // The wire names the signer's certificate by digest; the receiver delivers its DER.
        let der = h
            .certificate
            .der()
            .expect("the delivered certificate's DER");
        assert_eq!(&meshfed_proto::crypto::sha384(der), h.certificate.digest());

        let export = Delivered::decode(&next_binary(&mut binary_export).await).unwrap();
        let json_text = next_text(&mut json_export).await;
        let mut json = Exported::from_json(&json_text).unwrap();
        same_json_payload(&export, &mut json);
        assert_eq!(export.envelope, json.envelope, "{}", m.topic);
        assert!(!export.unproven);
        // The proof is the export JSON's, without base64, and is the envelope as it crossed.
        let json_proof: Value = serde_json::from_str(&json_text).unwrap();
        let json_proof = base64::engine::general_purpose::STANDARD
            .decode(json_proof["proof"].as_str().unwrap())
            .unwrap();
        let proof = export
            .proof
            .expect("an export-form frame carries its proof");
        assert_eq!(proof, json_proof);
        let crossed = Crossed::decode(&proof).unwrap();
        assert_eq!(crossed.header().id, *id);
        assert_eq!(Some(crossed), json.crossed);
    }
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_binary_frame_is_answered_with_an_error_naming_it_and_the_stream_goes_on() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let mut at_b = b.stream("?format=binary").await;
    let mut publisher = a
        .websocket("/v1/messages/publish?format=binary", &a.token)
        .await
        .unwrap();

    let good = publish("t/1", "text/plain", b"one").encode();
    let mut version = good.clone();
    version[0] = 9;
    let mut qos = good.clone();
    qos[2] = 7;
    let mut bad_topic = publish("t/1", "text/plain", b"x").encode();
    // `to` is "supplier-b" (2 + 10 bytes from offset 10); the topic's first byte follows its
    // length.
    bad_topic[24] = b'#';
    let mut wait_at_qos0 = publish("t/1", "text/plain", b"x");
    wait_at_qos0.wait = true;
    let mut nowhere = publish("t/1", "text/plain", b"x");
    nowhere.to = "nowhere".parse().unwrap();
    let frames = [
        Message::Binary(Vec::new().into()),
        Message::Binary(version.into()),
        Message::Binary(good[..9].to_vec().into()),
        Message::Binary(qos.into()),
        Message::Binary(bad_topic.into()),
        Message::Text(
            json!({"to": "supplier-b", "topic": "t", "payload": 1})
                .to_string()
                .into(),
        ),
        Message::Binary(wait_at_qos0.encode().into()),
        Message::Binary(nowhere.encode().into()),
        Message::Binary(good.into()),
    ];
    for f in frames {
        publisher.feed(f).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let mut replies = Vec::new();
    for _ in 0..9 {
        replies.push(binary::decode_reply(&next_binary(&mut publisher).await).unwrap());
    }
    let mut replies = replies.into_iter();
    let mut next_refusal = || refused(replies.next().unwrap());
    let expected = [
        (
            "bad_request",
            "binary publish frame: an empty frame: a binary frame starts with the format version (1) and the frame kind",
        ),
        (
            "bad_request",
            "binary publish frame: format version 9: this gateway reads binary frames of version 1",
        ),
        (
            "bad_request",
            "binary publish frame: max_latency: the frame is cut short (1 of its bytes missing)",
        ),
        (
            "bad_request",
            "binary publish frame: qos: must be 0, 1 or 2",
        ),
    ];
    for (code, message) in expected {
        assert_eq!(next_refusal(), (code.to_owned(), message.to_owned()));
    }
    let (code, message) = next_refusal();
    assert_eq!(code, "bad_request");
    assert!(
        message.starts_with("binary publish frame: topic: "),
        "{message}"
    );
    let (code, message) = next_refusal();
    assert_eq!(code, "bad_request");
    assert!(
        message.contains("opened with format=binary") && message.contains("not a text frame"),
        "{message}"
    );
    let (code, message) = next_refusal();
    assert_eq!(code, "bad_request");
    assert!(
        message.contains("wait needs an acknowledged delivery"),
        "{message}"
    );
    let (code, message) = next_refusal();
    assert_eq!(code, "unknown_destination");
    assert!(message.contains("nowhere"), "{message}");
    let id = accepted(replies.next().unwrap());

    // Only the good message arrives.
    let got = Delivered::decode(&next_binary(&mut at_b).await).unwrap();
    assert_eq!(got.envelope.header.id, id);
    assert_eq!(got.envelope.message.as_deref(), Some(&b"one"[..]));

    // A JSON socket answers a binary frame in JSON, saying how to send binary.
    let mut json_publisher = a.websocket("/v1/messages/publish", &a.token).await.unwrap();
    json_publisher
        .send(Message::Binary(
            publish("t/1", "text/plain", b"x").encode().into(),
        ))
        .await
        .unwrap();
    let reply = next_json(&mut json_publisher).await;
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("?format=binary"), "{message}");
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_format_is_refused_before_the_upgrade_naming_the_parameter() {
    let a = Node::start("plant-a").await;
    for path in [
        "/v1/messages/stream?format=cbor",
        "/v1/messages/publish?format=Binary",
    ] {
        let (status, body) = a.refused_websocket(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("format") && message.contains("`json` or `binary`"),
            "{message}"
        );
    }
    for path in [
        "/v1/messages/stream?format=json",
        "/v1/messages/publish?format=json",
    ] {
        drop(a.websocket(path, &a.token).await.unwrap());
    }
    a.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscription_sends_binary_frames_kept_and_live_and_takes_json_acks() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let query = "?durable=bin&topic=t/%23&format=binary&proof=required";
    // Registered, then away: what arrives meanwhile is kept in the journal.
    let mut sub = b.stream(query).await;
    sub.close(None).await.unwrap();
    while let Some(Ok(_)) = sub.next().await {}

    let mut publisher = a
        .websocket("/v1/messages/publish?format=binary", &a.token)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (n, ct) in [(1, "text/plain"), (2, "application/octet-stream")] {
        let mut m = publish("t/d", ct, format!("m{n}\u{0}").as_bytes());
        m.qos = Qos::AtLeastOnce;
        m.wait = true;
        publisher
            .send(Message::Binary(m.encode().into()))
            .await
            .unwrap();
        match binary::decode_reply(&next_binary(&mut publisher).await).unwrap() {
            PublishReply::Acknowledged(a) => ids.push(a.id),
            other => panic!("not acknowledged: {other:?}"),
        }
    }

    let mut sub = b.stream(query).await;
    for (n, id) in (1..=2).zip(&ids) {
        let got = Delivered::decode(&next_binary(&mut sub).await).unwrap();
        assert_eq!(got.envelope.header.id, *id);
        assert_eq!(
            got.envelope.message.as_deref(),
            Some(format!("m{n}\u{0}").as_bytes())
        );
        let crossed = Crossed::decode(&got.proof.unwrap()).unwrap();
        assert_eq!(crossed.header().id, *id);
    }
    // A qos 0 message reaches it live, as a binary frame too.
    publisher
        .send(Message::Binary(
            publish("t/live", "text/plain", b"now").encode().into(),
        ))
        .await
        .unwrap();
    accepted(binary::decode_reply(&next_binary(&mut publisher).await).unwrap());
    let live = Delivered::decode(&next_binary(&mut sub).await).unwrap();
    assert_eq!(live.envelope.message.as_deref(), Some(&b"now"[..]));
    assert!(live.proof.is_some());

    let ack = json!({"ack": ids[1].to_string(), "confirm": true}).to_string();
    sub.send(Message::Text(ack.into())).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&next_text(&mut sub).await).unwrap(),
        json!({"acked": ids[1].to_string()})
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}
