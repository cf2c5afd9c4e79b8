//! Node certificates renewed while gateways run: certificates of a few seconds, qos-1 messages
//! crossing for several of their lifetimes, over a link that stays up and one made afresh.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Node, Ws, federate, next_json, wait_for};
use serde_json::{Value, json};

/// Lifetime of every node certificate in these tests.
const VALIDITY: Duration = Duration::from_secs(6);
/// Renewed this long before expiry: at half their lifetime.
const RENEW_BEFORE: Duration = Duration::from_secs(3);

/// The node certificate expiry `node` reports now.
async fn cert_expiry(node: &Node) -> String {
    let (status, info) = node.get("/v1/node").await;
    assert_eq!(status, 200, "{info}");
    info["node_cert_expires"]
        .as_str()
        .unwrap_or_else(|| panic!("no node_cert_expires in {info}"))
        .to_owned()
}

/// Sends qos-1 messages from `a` to `b` one at a time, each acknowledged before the next and
/// each checked as it reaches `at_b`, until both gateways have presented `certificates`
/// different node certificates since this call; returns how many were sent. Fails after 60 s.
async fn send_across_lifetimes(
    a: &Node,
    b: &Node,
    at_b: &mut Ws,
    first: usize,
    certificates: usize,
) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut seen_a, mut seen_b) = (HashSet::new(), HashSet::new());
    // Each renewal brings a fresh node key too (`rotate_node_key`, the default).
    let mut keys_a = HashSet::new();
    let mut n = first;
    while seen_a.len() < certificates || seen_b.len() < certificates {
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {} messages, plant-a presented {} and supplier-b {} certificates, {certificates} expected",
            n - first,
            seen_a.len(),
            seen_b.len()
        );
        seen_a.insert(cert_expiry(a).await);
        seen_b.insert(cert_expiry(b).await);
        keys_a
            .insert(std::fs::read(a.dir().join("node/node.key")).unwrap_or_else(|e| panic!("{e}")));
        let payload = format!("m{n}");
        let (status, acked) = a
            .post(
                "/v1/messages",
                json!({"to": "supplier-b", "topic": "t/renew", "payload": payload, "qos": 1, "wait": true}),
            )
            .await;
        assert_eq!(status, 200, "message {payload}: {acked}");
        assert_eq!(acked["status"], "acknowledged", "{acked}");
        let got: Value = next_json(at_b).await;
        assert_eq!(got["message"], payload, "{got}");
        n += 1;
    }
    // A renewal may fall between reading the expiry and reading the key.
    assert!(
        keys_a.len() + 1 >= seen_a.len() && keys_a.len() >= 2,
        "{} node keys for {} certificates",
        keys_a.len(),
        seen_a.len()
    );
    n - first
}

/// How many envelopes `node` handed to live subscribers ahead of their batch heads.
async fn unproven_deliveries(node: &Node) -> u64 {
    node.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("meshfed_envelopes_delivered_unproven_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_crossing_while_node_certificates_are_renewed() {
    let a = Node::start_with_short_certificates("plant-a", VALIDITY, RENEW_BEFORE).await;
    let b = Node::start_with_short_certificates("supplier-b", VALIDITY, RENEW_BEFORE).await;
    let id = federate(&a, &b).await;
    let mut at_b = b.stream("").await;

    // Four certificates each: every message signed and verified, over the link made at the
    // join, while each side's certificate is replaced three times.
    let sent = send_across_lifetimes(&a, &b, &mut at_b, 0, 4).await;
    let (_, fed) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(fed["health"], "healthy", "{fed}");
    assert_eq!(fed["delivery"]["acknowledged"], sent, "{fed}");
    // Signed with the certificate plant-a presented on this link, an envelope reached the
    // live subscriber ahead of its batch head; signed with a renewed one (not the link's peer
    // certificate any more), only once its head verified (DESIGN §3.4).
    let unproven = unproven_deliveries(&b).await;
    assert!(
        unproven > 0 && unproven < sent as u64,
        "{unproven} of {sent} delivered ahead of their heads"
    );

    // A new link: both sides' certificates from the join have long expired, so it comes up
    // only if each presents its renewed one (and it chains to the bundle the other stored).
    let b = b.stop().await.start().await;
    wait_for(|| async { a.get(&format!("/v1/federations/{id}")).await.1["health"] == "healthy" })
        .await;
    let mut at_b = b.stream("").await;
    let more = send_across_lifetimes(&a, &b, &mut at_b, sent, 2).await;
    let (_, fed) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(fed["health"], "healthy", "{fed}");
    assert_eq!(fed["delivery"]["acknowledged"], sent + more, "{fed}");
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_holding_only_the_issuing_ca_key_renew_and_keep_messages_crossing() {
    let a = Node::start_with_short_certificates_and_no_root_key("plant-a", VALIDITY, RENEW_BEFORE)
        .await;
    let b =
        Node::start_with_short_certificates_and_no_root_key("supplier-b", VALIDITY, RENEW_BEFORE)
            .await;
    let id = federate(&a, &b).await;
    let mut at_b = b.stream("").await;
    // Three certificates each: two renewals from the issuing CA, verified by the peer through
    // the issuing CA presented on the link.
    let sent = send_across_lifetimes(&a, &b, &mut at_b, 0, 3).await;
    let (_, fed) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(fed["health"], "healthy", "{fed}");
    assert_eq!(fed["delivery"]["acknowledged"], sent, "{fed}");
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}
