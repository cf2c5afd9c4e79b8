//! Anomaly detection and the circuit breaker per partner (DESIGN §3.9, §3.13), gateways in one
//! process over real mutual TLS: a traffic spike from a partner opens the receiver's breaker
//! for it, which holds that partner's traffic both ways without losing any of it, lets probes
//! through once half-open, and closes on clean windows; traffic then flows as before.
//!
//! A partner that signs wrongly (plant-a with the `test-hooks` feature's wrong key: its
//! envelopes cross the real link, sealed as usual, under signatures that do not verify) sends
//! a burst that is refused whole and opens the breaker for it; once it signs rightly again the
//! breaker recovers and what it had sent arrives, once.
//!
//! The receiver (supplier-b) runs on a manual clock, so the detector's windows end exactly when
//! the test says; the sender (plant-a) runs on the machine's clock.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use common::{Node, Ws, federate, next_json_within, wait_for};
use meshfed_node::{Clock, ManualClock};
use serde_json::{Value, json};

/// supplier-b's policy: windows of 100 ms, a short warm-up and a short open time.
const POLICY: &str = r#"[anomaly]
action = "breaker"
window = "100ms"
warmup_windows = 4
min_rate = 20
open_for = "1s"
max_open = "4s"
probes_to_close = 2
"#;

const WINDOW: Duration = Duration::from_millis(100);

/// supplier-b's clock, and how far the test moved it.
struct Time {
    hand: ManualClock,
    elapsed: Cell<Duration>,
}

impl Time {
    fn advance(&self, by: Duration) {
        self.elapsed.set(self.elapsed.get() + by);
        self.hand.advance(by);
    }

    /// The detector's windows that ended (they began when the gateway started).
    fn windows(&self) -> u128 {
        self.elapsed.get().as_nanos() / WINDOW.as_nanos()
    }
}

/// The value of the metric line starting with `series ` (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Sends the qos-1 messages named `names` from `from` to `to` on `topic`, 32 at a time.
async fn send(from: &Node, to: &str, topic: &str, names: &[String]) {
    for chunk in names.chunks(32) {
        let posts = chunk.iter().map(|name| {
            from.post(
                "/v1/messages",
                json!({"to": to, "topic": topic, "payload": name, "qos": 1}),
            )
        });
        for (status, body) in futures_util::future::join_all(posts).await {
            assert_eq!(status, 202, "{body}");
        }
    }
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("{prefix}-{n}")).collect()
}

/// Reads `n` deliveries from `ws` into `tally` (payload → times delivered).
/// Longer than the sender's longest retransmission timeout (60 s).
const RETRANSMISSION_CEILING: Duration = Duration::from_secs(90);

async fn receive(ws: &mut Ws, n: usize, tally: &mut BTreeMap<String, u32>) {
    for _ in 0..n {
        // What was refused or held comes again on the sender's retransmission timer, which
        // backs off (doubling, up to a minute) while the peer refuses: wait past its ceiling.
        let got = next_json_within(ws, RETRANSMISSION_CEILING).await;
        let name = got["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message in {got}"))
            .to_owned();
        *tally.entry(name).or_default() += 1;
    }
}

/// The breaker's transitions the audit records name, in order (`closed→open`, …).
fn breaker_cycle(records: &[Value]) -> Vec<String> {
    (records.iter())
        .filter(|r| r["kind"] == "breaker")
        .map(|r| format!("{}→{}", r["record"]["from"], r["record"]["to"]).replace('"', ""))
        .collect()
}

async fn federation(node: &Node, id: &str) -> Value {
    let (status, view) = node.get(&format!("/v1/federations/{id}")).await;
    assert_eq!(status, 200, "{view}");
    view
}

async fn breaker(node: &Node, id: &str) -> Value {
    federation(node, id).await["breaker"].clone()
}

/// Waits until `sender` had `n` messages acknowledged: the receiver's inbox took them (and
/// its guard saw them) before it acknowledged them. Live subscribers may have some earlier,
/// ahead of their batch's head.
async fn acknowledged(sender: &Node, id: &str, n: usize) {
    wait_for(|| async { federation(sender, id).await["delivery"]["acknowledged"] == json!(n) })
        .await;
}

/// plant-a on the machine's clock, federated with supplier-b on a manual clock whose policy is
/// `policy`; the federation's id and supplier-b's clock.
async fn pair(policy: &str) -> (Node, Node, String, Time) {
    let (clock, hand) = Clock::manual(SystemTime::now());
    let time = Time {
        hand,
        elapsed: Cell::new(Duration::ZERO),
    };
    let b = Node::start_on_prepared("supplier-b", clock, |dir| {
        std::fs::write(dir.join("policy.toml"), policy).unwrap_or_else(|e| panic!("{e}"));
    })
    .await;
    let a = Node::start("plant-a").await;
    let id = federate(&a, &b).await;
    (a, b, id, time)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_under_the_suspend_action_suspends_the_federation_naming_the_anomaly() {
    let policy = POLICY.replace("action = \"breaker\"", "action = \"suspend\"");
    let (a, b, id, time) = pair(&policy).await;
    let mut at_b = b.stream("?topic=t/%23").await;
    let mut tally = BTreeMap::new();
    let mut sent = 0;
    for window in 0..6 {
        let batch = names(&format!("steady{window}"), 0..5);
        send(&a, "supplier-b", "t/steady", &batch).await;
        receive(&mut at_b, batch.len(), &mut tally).await;
        sent += batch.len();
        acknowledged(&a, &id, sent).await;
        time.advance(WINDOW);
    }
    let spike = names("spike", 0..300);
    send(&a, "supplier-b", "t/steady", &spike).await;
    acknowledged(&a, &id, sent + spike.len()).await;
    time.advance(WINDOW);
    wait_for(|| async { federation(&b, &id).await["state"] == "suspended" }).await;
    let view = federation(&b, &id).await;
    let reason = view["state_reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("suspended: anomaly: partner plant-a: rate 3,000/s"),
        "{view}"
    );
    assert_eq!(view["breaker"]["state"], "closed", "{view}");
    // The partner follows, as for an operator's suspension.
    wait_for(|| async { federation(&a, &id).await["state"] == "suspended" }).await;
    let metrics = b.metrics().await;
    assert!(
        metric(
            &metrics,
            r#"meshfed_anomalies_total{peer="plant-a",measure="rate"}"#
        ) >= 1.0,
        "{metrics}"
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traffic_spike_opens_the_breaker_which_holds_both_ways_loses_nothing_and_closes() {
    let (a, b, id, time) = pair(POLICY).await;
    let mut at_b = b.stream("?topic=t/%23").await;
    let mut at_a = a.stream("?topic=r/%23").await;
    let mut tally = BTreeMap::new();
    let mut sent = Vec::new();
    let view = breaker(&b, &id).await;
    assert_eq!(
        view,
        json!({"state": "closed", "since": null, "reason": null}),
        "{view}"
    );

    // A steady baseline: 5 messages in each window, through the warm-up and beyond.
    for window in 0..6 {
        let batch = names(&format!("steady{window}"), 0..5);
        send(&a, "supplier-b", "t/steady", &batch).await;
        receive(&mut at_b, batch.len(), &mut tally).await;
        sent.extend(batch);
        acknowledged(&a, &id, sent.len()).await;
        time.advance(WINDOW);
    }
    let windows = "meshfed_anomaly_windows_total";
    let ended = time.windows() as f64;
    wait_for(|| async { metric(&b.metrics().await, windows) >= ended }).await;
    let metrics = b.metrics().await;
    let anomalies = r#"meshfed_anomalies_total{peer="plant-a",measure="rate"}"#;
    assert_eq!(
        metric(&metrics, anomalies),
        0.0,
        "the baseline is no anomaly"
    );

    // A spike of 60 times the baseline within one window.
    let spike = names("spike", 0..300);
    send(&a, "supplier-b", "t/steady", &spike).await;
    receive(&mut at_b, spike.len(), &mut tally).await;
    sent.extend(spike);
    acknowledged(&a, &id, sent.len()).await;
    time.advance(WINDOW);
    wait_for(|| async { breaker(&b, &id).await["state"] == "open" }).await;
    let view = breaker(&b, &id).await;
    let reason = view["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("partner plant-a") && reason.contains("rate 3,000/s"),
        "{view}"
    );
    assert!(view["since"].is_string(), "{view}");
    let metrics = b.metrics().await;
    assert!(metric(&metrics, anomalies) >= 1.0, "{metrics}");
    assert_eq!(
        metric(&metrics, r#"meshfed_breaker_state{peer="plant-a"}"#),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"meshfed_breaker_transitions_total{peer="plant-a",to="open"}"#
        ),
        1.0
    );

    // While it is open, what plant-a sends is not taken (nor acknowledged)...
    let held = names("held", 0..5);
    send(&a, "supplier-b", "t/steady", &held).await;
    sent.extend(held);
    let held_series = r#"meshfed_breaker_held_transfers_total{peer="plant-a"}"#;
    wait_for(|| async { metric(&b.metrics().await, held_series) >= 1.0 }).await;
    let d = federation(&a, &id).await["delivery"].clone();
    assert_eq!(d["acknowledged"], json!(sent.len() - 5), "{d}");
    // ... and what supplier-b sends plant-a stays queued.
    let back = names("back", 0..3);
    send(&b, "plant-a", "r/back", &back).await;
    wait_for(|| async { federation(&b, &id).await["backlog"]["messages"] == 3 }).await;
    let d = federation(&b, &id).await["delivery"].clone();
    assert_eq!(d["sent"], 0, "nothing went to plant-a while open: {d}");

    // The open time passes: half-open. supplier-b's messages go as probes, and plant-a's come
    // again and are taken.
    time.advance(Duration::from_secs(1));
    wait_for(|| async { breaker(&b, &id).await["state"] == "half-open" }).await;
    let mut back_tally = BTreeMap::new();
    receive(&mut at_a, back.len(), &mut back_tally).await;
    assert_eq!(back_tally.keys().cloned().collect::<Vec<_>>(), back);
    // Clean windows close it.
    wait_for(|| async {
        time.advance(WINDOW);
        breaker(&b, &id).await["state"] == "closed"
    })
    .await;
    let view = breaker(&b, &id).await;
    assert!(
        view["reason"]
            .as_str()
            .is_some_and(|r| r.contains("in a row succeeded")),
        "{view}"
    );
    // Everything held arrives, once (the sender retransmits it on its own clock).
    receive(&mut at_b, 5, &mut tally).await;
    acknowledged(&a, &id, sent.len()).await;

    // Recovery: steady traffic flows, and nothing deviates again.
    let before = metric(&b.metrics().await, anomalies);
    for window in 0..5 {
        let batch = names(&format!("after{window}"), 0..5);
        send(&a, "supplier-b", "t/steady", &batch).await;
        receive(&mut at_b, batch.len(), &mut tally).await;
        sent.extend(batch);
        acknowledged(&a, &id, sent.len()).await;
        time.advance(WINDOW);
    }
    // Every window has been judged.
    let all = time.windows() as f64;
    wait_for(|| async { metric(&b.metrics().await, windows) >= all }).await;
    let metrics = b.metrics().await;
    assert_eq!(metric(&metrics, anomalies), before, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            r#"meshfed_breaker_transitions_total{peer="plant-a",to="open"}"#
        ),
        1.0
    );
    assert_eq!(breaker(&b, &id).await["state"], "closed");

    // Every qos-1 message sent was delivered exactly once.
    let twice: Vec<_> = tally.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(tally.keys().cloned().collect::<Vec<_>>(), expected);

    // supplier-b's audit trail of the federation holds the anomaly and the breaker's cycle.
    let (status, page) = b.get(&format!("/v1/audit?log={id}")).await;
    assert_eq!(status, 200, "{page}");
    let records = page["records"].as_array().cloned().unwrap_or_default();
    let anomaly = records.iter().find(|r| r["kind"] == "anomaly");
    assert!(
        anomaly.is_some_and(|r| r["record"]["measure"] == "rate" && r["peer"] == "plant-a"),
        "{page}"
    );
    assert_eq!(
        breaker_cycle(&records),
        ["closed→open", "open→half-open", "half-open→closed"],
        "{page}"
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

/// supplier-b's policy for the signature test: three signature failures in a window deviate;
/// rates never do (the held messages arrive together after quiet windows).
const SIGNATURES: &str = r#"[anomaly]
action = "breaker"
window = "100ms"
warmup_windows = 4
min_rate = 1000000
sig_failures_burst = 3
open_for = "1s"
max_open = "4s"
probes_to_close = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_bad_signatures_is_refused_opens_the_breaker_and_recovers_once_signed_rightly() {
    let (clock, hand) = Clock::manual(SystemTime::now());
    let time = Time {
        hand,
        elapsed: Cell::new(Duration::ZERO),
    };
    let b = Node::start_on_prepared("supplier-b", clock, |dir| {
        std::fs::write(dir.join("policy.toml"), SIGNATURES).unwrap_or_else(|e| panic!("{e}"));
    })
    .await;
    // Signed before they leave (no streamed batch): a transfer that does not verify is
    // refused whole and comes again, each time a signature failure.
    let a = Node::start_with("plant-a", |c| c.delivery.sign_window = Duration::ZERO).await;
    let id = federate(&a, &b).await;
    let mut at_b = b.stream("?topic=t/%23").await;
    let mut tally = BTreeMap::new();
    let good = names("good", 0..2);
    send(&a, "supplier-b", "t/sig", &good).await;
    receive(&mut at_b, good.len(), &mut tally).await;
    acknowledged(&a, &id, good.len()).await;

    // plant-a misbehaves: each transfer it sends is refused for its signature.
    a.gateway
        .sign_wrongly(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let bad = names("bad", 0..6);
    for name in &bad {
        send(&a, "supplier-b", "t/sig", std::slice::from_ref(name)).await;
    }
    let refused = r#"meshfed_envelopes_rejected_total{direction="inbound",reason="bad_signature"}"#;
    wait_for(|| async { metric(&b.metrics().await, refused) >= 3.0 }).await;
    let d = federation(&a, &id).await["delivery"].clone();
    assert_eq!(d["acknowledged"], json!(good.len()), "none was taken: {d}");
    let metrics = b.metrics().await;
    let delivered = r#"meshfed_envelopes_delivered_total{peer="plant-a"}"#;
    let before = metric(&metrics, delivered);

    // The window ends: the burst deviates and trips plant-a's breaker.
    time.advance(WINDOW);
    wait_for(|| async { breaker(&b, &id).await["state"] == "open" }).await;
    let view = breaker(&b, &id).await;
    let reason = view["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("partner plant-a: ") && reason.contains("signature failures"),
        "{view}"
    );
    let metrics = b.metrics().await;
    assert!(
        metric(
            &metrics,
            r#"meshfed_anomalies_total{peer="plant-a",measure="signature_failures"}"#
        ) >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, r#"meshfed_breaker_state{peer="plant-a"}"#),
        2.0
    );
    assert_eq!(
        metric(&metrics, delivered),
        before,
        "nothing of the burst was delivered"
    );
    // While open, its transfers are held, not verified: no more signature failures count.
    let held = r#"meshfed_breaker_held_transfers_total{peer="plant-a"}"#;
    wait_for(|| async { metric(&b.metrics().await, held) >= 1.0 }).await;

    // plant-a signs rightly again; the open time passes, the breaker is half-open, what
    // plant-a sends again verifies and is taken, and clean windows close it.
    a.gateway
        .sign_wrongly(false)
        .unwrap_or_else(|e| panic!("{e}"));
    time.advance(Duration::from_secs(1));
    wait_for(|| async { breaker(&b, &id).await["state"] != "open" }).await;
    receive(&mut at_b, bad.len(), &mut tally).await;
    acknowledged(&a, &id, good.len() + bad.len()).await;
    wait_for(|| async {
        time.advance(WINDOW);
        breaker(&b, &id).await["state"] == "closed"
    })
    .await;

    // Good messages flow as before.
    let after = names("after", 0..3);
    send(&a, "supplier-b", "t/sig", &after).await;
    receive(&mut at_b, after.len(), &mut tally).await;
    let sent = good.len() + bad.len() + after.len();
    acknowledged(&a, &id, sent).await;
    let twice: Vec<_> = tally.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let mut expected: Vec<String> = [good, bad, after].concat();
    expected.sort();
    assert_eq!(tally.keys().cloned().collect::<Vec<_>>(), expected);

    // supplier-b's audit trail: the refusals, the anomaly and the breaker's cycle.
    let (status, page) = b.get(&format!("/v1/audit?log={id}")).await;
    assert_eq!(status, 200, "{page}");
    let records = page["records"].as_array().cloned().unwrap_or_default();
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "anomaly" && r["record"]["measure"] == "signature_failures"),
        "{page}"
    );
    assert_eq!(
        breaker_cycle(&records),
        ["closed→open", "open→half-open", "half-open→closed"],
        "{page}"
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}
