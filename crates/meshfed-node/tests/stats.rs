//! What a monitoring stack and the console see of traffic between two federated gateways in
//! one process: `/metrics` read with a Prometheus text parser (prometheus-parse), its
//! histograms moving; `GET /v1/stats` (rates, latency percentiles, round trip) moving; and the
//! Grafana dashboard in `docs/grafana/` using only metric names a live node exposes.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test on any error"
)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Node, federate, wait_for};
use meshfed_proto::{Topic, TopicPattern};
use prometheus_parse::{Sample, Scrape, Value as Parsed};
use serde_json::{Value, json};

/// `node`'s `/metrics`, parsed.
async fn scrape(node: &Node) -> Scrape {
    let text = node.metrics().await;
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The observations of histogram `name` whose labels hold `labels`, summed over its series.
fn observed(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    histograms(scrape, name, labels)
        .filter_map(|s| match &s.value {
            Parsed::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than == f64::INFINITY)
                .map(|b| b.count),
            _ => None,
        })
        .sum()
}

fn histograms<'s>(
    scrape: &'s Scrape,
    name: &'s str,
    labels: &'s [(&str, &str)],
) -> impl Iterator<Item = &'s Sample> {
    scrape.samples.iter().filter(move |s| {
        s.metric == name
            && matches!(s.value, Parsed::Histogram(_))
            && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
    })
}

/// The value of the counter or gauge sample `name` with exactly `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            Parsed::Counter(v) | Parsed::Gauge(v) | Parsed::Untyped(v) => Some(v),
            _ => None,
        })
}

/// `GET /v1/stats` on `node`, and the entry of federation `id` in it.
async fn stats(node: &Node, id: &str) -> (Value, Value) {
    let (status, body) = node.get("/v1/stats").await;
    assert_eq!(status, 200, "{body}");
    let fed = body["federations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["federation"] == id)
        .cloned()
        .unwrap_or(Value::Null);
    (body, fed)
}

/// A qos 1 message from plant-a to supplier-b on `t/a`, accepted.
async fn send(a: &Node, n: usize) {
    let (status, body) = a
        .post(
            "/v1/messages",
            json!({"to": "supplier-b", "topic": "t/a", "payload": {"n": n}, "qos": 1}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// A message too large for the agreement, refused with the partner known.
async fn send_too_large(a: &Node) {
    let (status, body) = a
        .post(
            "/v1/messages",
            json!({"to": "supplier-b", "topic": "t/a", "payload": "x".repeat(1_100_000), "content_type": "text/plain"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
}

#[tokio::test]
async fn stats_and_metric_histograms_move_when_messages_cross() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    let id = federate(&a, &b).await;
    let fed = [("federation", id.as_str())];

    let before = scrape(&b).await;
    assert_eq!(
        observed(&before, "meshfed_delivery_latency_seconds", &fed),
        0.0
    );
    let (body, _) = stats(&b, &id).await;
    assert!(
        body["at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );

    // The rates are of the last one-second sample: messages keep going until every figure
    // has been seen to move.
    let (mut sent, mut delivered, mut refused, mut latency) = (false, false, false, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while !(sent && delivered && refused && latency.is_some()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every figure moved within 30 s: sent {sent}, delivered {delivered}, refused {refused}, latency {latency:?}"
        );
        n += 1;
        send(&a, n).await;
        if !refused {
            send_too_large(&a).await;
        }
        let (totals_a, at_a) = stats(&a, &id).await;
        let (totals_b, at_b) = stats(&b, &id).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if at_a.is_null() || at_b.is_null() {
            // Not sampled yet: the sampler reads the federations once a second.
            continue;
        }
        sent |= at_a["sent_per_second"].as_f64().unwrap() > 0.0;
        refused |= at_a["refused_per_second"].as_f64().unwrap() > 0.0;
        delivered |= at_b["delivered_per_second"].as_f64().unwrap() > 0.0;
        for (totals, at) in [(&totals_a, &at_a), (&totals_b, &at_b)] {
            assert_eq!(at["state"], "active", "{at}");
            for rate in [
                "sent_per_second",
                "delivered_per_second",
                "refused_per_second",
            ] {
                assert_eq!(totals["totals"][rate], at[rate], "{totals}");
            }
        }
        if !at_b["latency_ms"].is_null() {
            latency = Some(at_b.clone());
        }
    }
    let at_b = latency.unwrap();
    let l = &at_b["latency_ms"];
    let (p50, p90, p99) = (
        l["p50"].as_f64().unwrap(),
        l["p90"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
    );
    assert!(l["count"].as_u64().unwrap() >= 1, "{at_b}");
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= 10_000.0,
        "{at_b}"
    );
    assert_eq!(at_b["peer"], "plant-a");

    // Round trips and health come with heartbeats (every 200 ms here).
    wait_for(|| async {
        let (_, at) = stats(&b, &id).await;
        at["healthy"] == true && at["rtt_ms"].as_f64().is_some_and(|r| r > 0.0)
    })
    .await;
    let (body, _) = stats(&b, &id).await;
    let window = body["window_seconds"].as_u64().unwrap();
    assert!((1..=10).contains(&window), "{body}");

    // The same figures in `/metrics`, as Prometheus reads them.
    let after = scrape(&b).await;
    let series: Vec<&Sample> =
        histograms(&after, "meshfed_delivery_latency_seconds", &fed).collect();
    assert!(!series.is_empty(), "no latency histogram for {id}");
    let topic: Topic = "t/a".parse().unwrap();
    for s in &series {
        assert_eq!(s.labels.get("peer"), Some("plant-a"));
        let route = s.labels.get("route").unwrap();
        let pattern: TopicPattern = route.parse().unwrap();
        assert!(
            route != "t/a" && pattern.matches(&topic),
            "route {route} is not the agreed pattern t/a matched"
        );
    }
    assert!(
        observed(&after, "meshfed_delivery_latency_seconds", &fed) >= n as f64 * 0.5,
        "fewer than half of {n} messages observed"
    );
    assert!(observed(&after, "meshfed_link_rtt_seconds", &fed) >= 1.0);
    assert_eq!(
        value(
            &after,
            "meshfed_handshakes_total",
            &[("outcome", "established")]
        ),
        Some(1.0)
    );
    let at_a = scrape(&a).await;
    assert!(observed(&at_a, "meshfed_journal_commit_seconds", &[]) >= 1.0);
    assert!(observed(&at_a, "meshfed_journal_batch_writes", &[]) >= 1.0);
    assert!(
        value(
            &at_a,
            "meshfed_peer_refusals_total",
            &[("peer", "supplier-b"), ("direction", "outbound")]
        )
        .is_some_and(|v| v >= 1.0)
    );
    assert_eq!(
        value(
            &at_a,
            "meshfed_queued_messages",
            &[("peer", "supplier-b"), ("priority", "7")]
        ),
        Some(0.0),
        "every priority has its series"
    );
}

/// Every metric name in the expressions and queries of `dashboard`.
fn dashboard_metrics(dashboard: &Value, into: &mut BTreeSet<String>) {
    match dashboard {
        Value::Object(fields) => {
            for (key, v) in fields {
                if let (true, Value::String(expr)) =
                    (["expr", "query", "definition"].contains(&key.as_str()), v)
                {
                    let mut rest = expr.as_str();
                    while let Some(at) = rest.find("meshfed_") {
                        let name: String = rest[at..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        rest = &rest[at + name.len()..];
                        into.insert(name);
                    }
                }
                dashboard_metrics(v, into);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_metrics(v, into)),
        _ => {}
    }
}

#[tokio::test]
async fn the_grafana_dashboard_uses_only_metrics_a_node_exposes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana/meshfed.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        dashboard["templating"]["list"][0]["name"], "DS_PROMETHEUS",
        "the data source is a variable"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    for p in panels {
        for source in std::iter::once(&p["datasource"]).chain(
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| &t["datasource"]),
        ) {
            assert_eq!(source["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        }
    }
    let mut used = BTreeSet::new();
    dashboard_metrics(&dashboard, &mut used);
    assert!(used.len() >= 10, "{used:?}");

    // A connector (its broker a listener that never answers) so that its series exist.
    let quiet = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = quiet.local_addr().unwrap().port();
    let toml = format!(
        "[node]\nmesh = \"plant-a\"\nname = \"gw\"\n\n[[connector]]\nname = \"plant-bus\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{port}\"\n\n[[connector.import]]\ntopic = \"t/#\"\nfrom = \"supplier-b\"\nlocal = \"t/#\"\nqos = 1\n"
    );
    let connectors = meshfed_node::config::NodeConfig::parse(&toml, "meshfed.toml".as_ref())
        .unwrap()
        .connectors;
    let a = Node::start_with("plant-a", |c| c.connectors = connectors).await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    send(&a, 1).await;
    send_too_large(&a).await;
    // Heartbeats (round trips) and the delivery come after a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut exposed = BTreeSet::new();
        for node in [&a, &b] {
            for s in scrape(node).await.samples {
                if matches!(s.value, Parsed::Histogram(_)) {
                    exposed.insert(format!("{}_bucket", s.metric));
                }
                exposed.insert(s.metric);
            }
        }
        let missing: Vec<&String> = used.difference(&exposed).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dashboard uses metrics no node exposes: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
