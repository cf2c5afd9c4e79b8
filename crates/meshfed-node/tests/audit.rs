//! The audit trail (issue 16) between two gateways in one process over real mutual TLS: what
//! crosses is recorded on both sides, each side's heads are countersigned by the other, both
//! trails verify, one message's proof checks with the partner's CA alone, and a partner whose
//! whole store was rolled back is caught by the other side.

mod common;

use std::time::Duration;

use common::{Node, federate, wait_for};
use meshfed_audit::proof::MessageProof;
use meshfed_node::audit::inspect::check_proof;
use meshfed_testkit::copy_dir;
use meshfed_trust::TrustBundle;
use serde_json::{Value, json};

/// A gateway whose logs get a signed head every 5 records or 100 ms.
async fn start(mesh: &str) -> Node {
    Node::start_with(mesh, |c| {
        c.audit.head_every = 5;
        c.audit.head_interval = Duration::from_millis(100);
    })
    .await
}

/// Puts `toml` in force as `node`'s policy.
async fn policy(node: &Node, toml: &str) {
    let resp = (node.http.put(node.url("/v1/policy")))
        .bearer_auth(&node.token)
        .json(&json!({ "toml": toml }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT /v1/policy: {e}"));
    let (status, body) = (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    );
    assert_eq!(status, 200, "{body}");
}

/// Sends `count` qos-1 messages from plant-a to supplier-b; returns their envelope ids.
async fn send(a: &Node, count: usize, from: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in from..from + count {
        let (status, sent) = a
            .post(
                "/v1/messages",
                json!({"to": "supplier-b", "topic": "t/reading", "payload": {"n": n}, "qos": 1}),
            )
            .await;
        assert_eq!(status, 202, "{sent}");
        ids.push(sent["id"].as_str().unwrap_or_default().to_owned());
    }
    ids
}

/// The records of `node`'s audit trail of `kind` (all pages).
async fn records(node: &Node, kind: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = node.get(&format!("/v1/audit?kind={kind}{after}")).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["records"].as_array().cloned().unwrap_or_default());
        match page["next"].as_i64() {
            Some(next) => after = format!("&after={next}"),
            None => return out,
        }
    }
}

/// The check of `node`'s log `log`.
async fn verified(node: &Node, log: &str) -> Value {
    let (status, v) = node.get("/v1/audit/verify").await;
    assert_eq!(status, 200, "{v}");
    v["logs"]
        .as_array()
        .and_then(|logs| logs.iter().find(|l| l["log"] == log).cloned())
        .unwrap_or_else(|| panic!("no log {log} in {v}"))
}

/// Waits until `node`'s log `log` holds the digests of at least `messages` messages, verifies
/// intact, and a head the partner countersigned covers its newest `messages` record (its proof
/// is served).
async fn countersigned(node: &Node, log: &str, messages: usize) {
    wait_for(|| async {
        let v = verified(node, log).await;
        if v["countersignatures"].as_u64().unwrap_or(0) == 0
            || !v["problems"].as_array().is_some_and(Vec::is_empty)
        {
            return false;
        }
        let records: Vec<Value> = self::records(node, "messages")
            .await
            .into_iter()
            .filter(|r| r["log"] == log)
            .collect();
        let digests = records
            .iter()
            .filter_map(|r| r["record"]["messages"].as_array())
            .map(Vec::len)
            .sum::<usize>();
        let Some(newest) = records.last() else {
            return false;
        };
        let id = newest["record"]["messages"][0]["envelope"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        digests >= messages && node.get(&format!("/v1/audit/proof/{id}")).await.0 == 200
    })
    .await;
}

fn ca(node: &Node) -> TrustBundle {
    let pem = std::fs::read_to_string(node.dir().join("ca/ca.crt"))
        .unwrap_or_else(|e| panic!("reading the CA: {e}"));
    TrustBundle::from_pem(&pem).unwrap_or_else(|e| panic!("the CA: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_crosses_is_recorded_on_both_sides_countersigned_and_proven_to_a_third_party() {
    let a = start("plant-a").await;
    let b = start("supplier-b").await;
    // Audit level `full` on one side: the agreement takes the higher.
    policy(&b, "[compliance]\naudit_level = \"full\"\n").await;
    let id = federate(&a, &b).await;
    let (_, view) = a.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(view["agreement"]["policy"]["audit_level"], "full", "{view}");

    let sent = send(&a, 12, 0).await;
    wait_for(|| async {
        let (_, v) = a.get(&format!("/v1/federations/{id}")).await;
        v["delivery"]["acknowledged"] == 12
    })
    .await;

    // Both sides hold the handshake, the agreement and a digest per message, one record per
    // signed batch.
    for (node, direction) in [(&a, "sent"), (&b, "received")] {
        let steps: Vec<String> = records(node, "handshake")
            .await
            .iter()
            .filter(|r| r["log"] == id.as_str())
            .map(|r| r["record"]["step"].to_string())
            .collect();
        assert!(steps.iter().any(|s| s.contains("established")), "{steps:?}");
        assert!(
            steps.iter().any(|s| s.contains("agreement_signed")),
            "{steps:?}"
        );
        let agreements = records(node, "agreement").await;
        assert_eq!(agreements.len(), 1, "{agreements:?}");
        assert_eq!(agreements[0]["record"]["cause"], "established");
        let digests = |records: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
            records
                .iter()
                .filter(|r| r["record"]["direction"] == direction)
                .flat_map(|r| {
                    r["record"]["messages"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .collect()
        };
        wait_for(|| async { digests(records(node, "messages").await).len() == 12 }).await;
        let records = records(node, "messages").await;
        let peer = if direction == "sent" {
            "supplier-b"
        } else {
            "plant-a"
        };
        assert!(records.iter().all(|r| r["record"]["peer"] == peer));
        let messages = digests(records.clone());
        let ids: Vec<&str> = messages
            .iter()
            .map(|m| m["envelope"].as_str().unwrap_or_default())
            .collect();
        for s in &sent {
            assert!(ids.contains(&s.as_str()), "{s} not recorded at {direction}");
        }
        // No payload in the record: a commitment, the size; the record names the batch root.
        assert!(records[0]["record"]["batch"]["root"].as_str().is_some());
        let m = &messages[0];
        assert!(
            m["commitment"].as_str().is_some_and(|c| c.len() == 96),
            "{m}"
        );
        assert!(m.get("payload").is_none(), "{m}");
        assert!(m["size"].as_u64().is_some_and(|n| n > 0), "{m}");
    }

    // Each side's log of the federation is countersigned by the other, and verifies.
    countersigned(&a, &id, 12).await;
    countersigned(&b, &id, 12).await;
    for node in [&a, &b] {
        let (_, v) = node.get("/v1/audit/verify").await;
        assert_eq!(v["intact"], true, "{v}");
        let countersigned = records(node, "countersigned").await;
        assert!(
            !countersigned.is_empty(),
            "each side countersigned the other's heads"
        );
    }

    // The proof of a message supplier-b received checks with plant-a's CA alone.
    let (status, proof) = b.get(&format!("/v1/audit/proof/{}", sent[3])).await;
    assert_eq!(status, 200, "{proof}");
    let proof: MessageProof = serde_json::from_value(proof).unwrap_or_else(|e| panic!("{e}"));
    let found = check_proof(&proof, &[ca(&a)]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.checked.envelope.to_string(), sent[3]);
    assert_eq!(found.checked.source.as_str(), "plant-a");
    assert_eq!(found.checked.countersigned_by.as_str(), "plant-a");
    assert_eq!(found.checked.batch_signer.as_str(), "plant-a");
    assert_eq!(found.unanchored, ["head signer supplier-b"]);
    // Without the countersigning partner's CA it is not accepted.
    let refused = check_proof(&proof, &[ca(&b)]).err().map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("countersigner") && e.contains("plant-a")),
        "{refused:?}"
    );
    // A proof whose record was changed fails, naming the link.
    let mut forged = proof.clone();
    forged.opening = "00".repeat(48);
    let refused = check_proof(&forged, &[ca(&a), ca(&b)])
        .err()
        .map(|e| e.to_string());
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("commitment")),
        "{refused:?}"
    );

    // The report counts the traffic and names the agreement and its compliance terms.
    let (status, report) = a.get("/v1/audit/report").await;
    assert_eq!(status, 200, "{report}");
    let f = &report["federations"][0];
    assert_eq!(f["federation"], id.as_str(), "{report}");
    assert_eq!(f["sent"], 12, "{report}");
    assert_eq!(f["agreements"][0]["version"], 1, "{report}");
    assert_eq!(f["compliance"]["audit_level"], "full", "{report}");
    assert!(f["countersigned"].as_u64().unwrap_or(0) >= 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_whose_store_was_rolled_back_is_caught_by_the_other_side() {
    let a = start("plant-a").await;
    let b = start("supplier-b").await;
    policy(&b, "[compliance]\naudit_level = \"full\"\n").await;
    let id = federate(&a, &b).await;
    send(&a, 6, 0).await;
    countersigned(&b, &id, 6).await;

    // supplier-b's whole store as it was, copied while it was stopped.
    let stopped = b.stop().await;
    let old = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = stopped.dir().join("store");
    copy_dir(&store, old.path());
    let b = stopped.start().await;
    send(&a, 10, 6).await;
    // plant-a countersigns supplier-b's longer log.
    countersigned(&b, &id, 16).await;

    // Stopped again, and its store put back as it was: its log is shorter than what plant-a
    // countersigned.
    let stopped = b.stop().await;
    std::fs::remove_dir_all(&store).unwrap_or_else(|e| panic!("{e}"));
    copy_dir(old.path(), &store);
    let b = stopped.start().await;

    // plant-a refuses to countersign the shorter log, and says why.
    wait_for(|| async {
        let v = verified(&a, &id).await;
        v["discrepancies"].as_array().is_some_and(|d| {
            d.iter()
                .any(|d| d.as_str().is_some_and(|d| d.contains("rollback")))
        })
    })
    .await;
    let (_, v) = a.get("/v1/audit/verify").await;
    assert_eq!(v["intact"], false, "{v}");
    // supplier-b learns it too: plant-a countersigned more of its log than it holds.
    wait_for(|| async {
        let v = verified(&b, &id).await;
        v["discrepancies"].as_array().is_some_and(|d| {
            d.iter()
                .any(|d| d.as_str().is_some_and(|d| d.contains("rollback")))
        })
    })
    .await;
    assert!(
        a.metrics()
            .await
            .lines()
            .any(|l| l.starts_with("meshfed_audit_discrepancies_total{peer=\"supplier-b\"}")),
        "the discrepancy is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_signed_one_by_one_are_proven_by_their_own_signatures() {
    let a = start("plant-a").await;
    let b = start("supplier-b").await;
    // supplier-b takes envelopes signed one by one only: plant-a signs each alone.
    policy(
        &b,
        "[compliance]\naudit_level = \"full\"\n[security]\nsignature_modes = [\"per-message\"]\n",
    )
    .await;
    let id = federate(&a, &b).await;
    let sent = send(&a, 3, 0).await;
    countersigned(&b, &id, 3).await;
    countersigned(&a, &id, 3).await;
    let (_, records) = b.get("/v1/audit?kind=messages").await;
    for r in records["records"].as_array().unwrap_or(&Vec::new()) {
        assert!(r["record"]["batch"].is_null(), "{r}");
    }
    // Each end proves what crossed, with the partner's CA: the receiver by its own log and
    // the sender's signature, the sender by its log that the receiver countersigned.
    for (node, other) in [(&b, &a), (&a, &b)] {
        let (status, proof) = node.get(&format!("/v1/audit/proof/{}", sent[1])).await;
        assert_eq!(status, 200, "{proof}");
        let proof: MessageProof = serde_json::from_value(proof).unwrap_or_else(|e| panic!("{e}"));
        assert!(proof.envelope.batch_head.is_none(), "{proof:?}");
        assert!(proof.envelope.signature.is_some(), "{proof:?}");
        let found = check_proof(&proof, &[ca(&a), ca(other)]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found.checked.envelope.to_string(), sent[1]);
        assert_eq!(found.checked.batch_signer.as_str(), "plant-a");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_from_one_address_make_one_record_with_their_count() {
    use tokio::io::AsyncWriteExt as _;
    let a = start("plant-a").await;
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(a.gateway.federation_addr())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        s.write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The gateway closes the connection once the TLS handshake fails.
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest).await;
    }
    // The three were refused (counted just before each is recorded); reading the trail
    // writes the window's count out as one record.
    let refused = r#"meshfed_connections_refused_total{listener="federation",reason="tls"} 3"#;
    wait_for(|| async { a.metrics().await.lines().any(|l| l == refused) }).await;
    let failed = records(&a, "handshake_failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["record"]["count"], 3, "{failed:?}");
    assert_eq!(failed[0]["log"], "node", "{failed:?}");
    assert_eq!(failed[0]["record"]["remote"], "127.0.0.1", "{failed:?}");
    assert_eq!(failed[0]["record"]["code"], "tls", "{failed:?}");
}
