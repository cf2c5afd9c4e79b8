//! The circuit breaker per partner (issue 16, DESIGN §3.9, §3.13) on real `meshfed gateway`
//! processes on ephemeral loopback ports, as an operator sees it through `meshfed` and
//! `/metrics`: plant-a sends supplier-b a steady trickle, then a spike; supplier-b's detector
//! raises the anomaly and opens plant-a's breaker; reliable messages sent while it is open are
//! held, not lost; it goes half-open (supplier-b's own queued messages go as probes), closes
//! on clean windows, and in the end every message `meshfed send` acknowledged reached
//! supplier-b's subscriber exactly once. supplier-b's audit export holds the anomaly and each
//! transition.
//!
//! Both gateways run on the machine's clock: each step waits for what the operator would see
//! (a window counted in `/metrics`, a state in `federation show`), never for a time.

#![expect(
    clippy::unwrap_used,
    reason = "end-to-end tests: a step that fails is the test failing"
)]

mod common;

use std::collections::BTreeMap;

use common::{federate, http_get, metric, show, subscribe, wait_for_status};
use meshfed_testkit::process::{DEADLINE, poll};
use meshfed_testkit::{Mesh, Spawned};
use serde_json::Value;

/// supplier-b's policy: 2 s windows (a spike fits in one), a rate deviates above 30/s, and a
/// tripped breaker holds plant-a for 4 s (time enough to watch it hold).
const POLICY: &str = r#"[anomaly]
action = "breaker"
window = "2s"
warmup_windows = 3
min_rate = 30
open_for = "4s"
max_open = "30s"
probes_to_close = 2
"#;

const TOPIC: &str = "t/reading";

#[test]
fn a_spike_opens_the_breaker_which_holds_loses_nothing_probes_and_closes() {
    let mut b = common::mesh("supplier-b");
    std::fs::write(b.dir().join("policy.toml"), POLICY).unwrap();
    b.start();
    let mut a = common::started("plant-a");
    let fed = federate(&a, &b);
    wait_for_status(&b, &fed, "active");
    let at_b = subscribe(&mut b, &a, &["--topic", "t/#"]);
    let at_a = subscribe(&mut a, &b, &["--topic", "r/#"]);
    let view = breaker(&b, &fed);
    assert_eq!(view["state"], "closed", "{view}");
    // The subscribers' probes crossed both ways: counts start from here.
    let base_a = settled(&a, &fed);
    let base_b = settled(&b, &fed);
    let mut sent: Vec<String> = Vec::new();

    // A steady baseline: 4 messages in each of 4 windows (the warm-up and one more).
    for window in 0..4 {
        let start = windows(&b);
        sent.extend(send(&a, "supplier-b", TOPIC, "steady", window, 4));
        window_ended(&b, start);
    }
    let anomalies = |b: &Mesh| {
        metric(
            &http_get(b.api_addr(), "/metrics"),
            "meshfed_anomalies_total",
            &[r#"peer="plant-a""#],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(anomalies(&b), 0.0, "the baseline is no anomaly");

    // A spike of 150 messages just after a window began: about 40 times the baseline.
    let start = windows(&b);
    window_ended(&b, start);
    sent.extend(send(&a, "supplier-b", TOPIC, "spike", 0, 150));
    let view = poll("supplier-b opens plant-a's breaker", DEADLINE, || {
        let view = breaker(&b, &fed);
        if view["state"] == "open" {
            Ok(view)
        } else {
            Err(view.to_string())
        }
    });
    let reason = view["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("partner plant-a") && reason.contains("rate "),
        "{view}"
    );
    assert!(view["since"].is_string(), "{view}");
    let metrics = http_get(b.api_addr(), "/metrics");
    assert!(anomalies(&b) >= 1.0, "{metrics}");
    let peer = [r#"peer="plant-a""#];
    assert_eq!(
        metric(&metrics, "meshfed_breaker_state", &peer),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "meshfed_breaker_transitions_total",
            &[r#"peer="plant-a""#, r#"to="open""#]
        ),
        Some(1.0),
        "{metrics}"
    );
    // Everything sent so far was taken before the breaker opened.
    acknowledged(&a, &fed, base_a + sent.len());

    // While it is open: what plant-a sends is held by supplier-b (taken, acknowledged, by
    // nobody), and what supplier-b sends plant-a stays queued.
    let held = send(&a, "supplier-b", TOPIC, "held", 0, 10);
    poll("supplier-b holds plant-a's transfers", DEADLINE, || {
        let metrics = http_get(b.api_addr(), "/metrics");
        match metric(&metrics, "meshfed_breaker_held_transfers_total", &peer) {
            Some(n) if n >= 1.0 => Ok(()),
            _ => Err(metrics),
        }
    });
    let at_a_side = show(&a, &fed);
    assert_eq!(
        at_a_side["delivery"]["acknowledged"],
        base_a + sent.len(),
        "none of the held messages was acknowledged: {at_a_side:#}"
    );
    sent.extend(held);
    let sent_by_b = show(&b, &fed)["delivery"]["sent"].clone();
    let back = send(&b, "plant-a", "r/back", "back", 0, 3);
    let at_b_side = poll("supplier-b queues its messages", DEADLINE, || {
        let view = show(&b, &fed);
        (view["backlog"]["messages"] == 3)
            .then_some(view.clone())
            .ok_or(format!("{view:#}"))
    });
    assert_eq!(at_b_side["breaker"]["state"], "open", "{at_b_side:#}");
    assert_eq!(
        at_b_side["delivery"]["sent"], sent_by_b,
        "nothing went to plant-a while open: {at_b_side:#}"
    );

    // The open time passes: half-open, supplier-b's messages go as probes, plant-a's are taken
    // again; clean windows close it.
    poll("the breaker goes half-open", DEADLINE, || {
        let view = breaker(&b, &fed);
        (view["state"] != "open")
            .then_some(())
            .ok_or(view.to_string())
    });
    poll("the breaker closes", DEADLINE, || {
        let view = breaker(&b, &fed);
        (view["state"] == "closed")
            .then_some(view.clone())
            .ok_or(view.to_string())
    });
    acknowledged(&a, &fed, base_a + sent.len());
    acknowledged(&b, &fed, base_b + back.len());

    // After: steady traffic flows again.
    sent.extend(send(&a, "supplier-b", TOPIC, "after", 0, 4));
    acknowledged(&a, &fed, base_a + sent.len());

    // Every acknowledged message reached the subscribers exactly once.
    let got = delivered(&at_b, TOPIC, sent.len());
    assert_counts(&got, &sent);
    let got_back = delivered(&at_a, "r/back", back.len());
    assert_counts(&got_back, &back);
    let metrics = http_get(b.api_addr(), "/metrics");
    assert_eq!(
        metric(
            &metrics,
            "meshfed_breaker_transitions_total",
            &[r#"peer="plant-a""#, r#"to="closed""#]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "meshfed_breaker_state", &peer),
        Some(0.0),
        "{metrics}"
    );

    // supplier-b's audit export: the anomaly and the breaker's cycle, in the federation's log.
    let (anomaly, cycle) = poll("the audit export holds the cycle", DEADLINE, || {
        let out = b.cli(&["audit", "export", "--format", "json"]);
        let records: Vec<Value> = out
            .ok()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|r: &Value| r["log"] == fed.as_str())
            .collect();
        let anomaly = records
            .iter()
            .find(|r| r["kind"] == "anomaly")
            .map(|r| (r["peer"].clone(), r["record"].clone()));
        let cycle: Vec<String> = (records.iter())
            .filter(|r| r["kind"] == "breaker")
            .map(|r| format!("{}→{}", r["record"]["from"], r["record"]["to"]).replace('"', ""))
            .collect();
        match anomaly {
            Some(a) if cycle.len() >= 3 => Ok((a, cycle)),
            _ => Err(out.stdout.clone()),
        }
    });
    assert_eq!(anomaly.0, "plant-a", "{anomaly:?}");
    assert_eq!(anomaly.1["measure"], "rate", "{anomaly:?}");
    assert_eq!(anomaly.1["action"], "breaker", "{anomaly:?}");
    assert_eq!(cycle, ["closed→open", "open→half-open", "half-open→closed"]);
}

/// `meshfed send --qos 1 -` on `from`, one message per line (`{"name": "PREFIX-W-N"}`):
/// returns the names of the messages it printed an envelope id for.
fn send(from: &Mesh, to: &str, topic: &str, prefix: &str, w: usize, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{w}-{i}")).collect();
    let lines: String = names
        .iter()
        .map(|name| format!("{{\"name\":\"{name}\"}}\n"))
        .collect();
    let args = ["send", "--to", to, "--topic", topic, "--qos", "1", "-"];
    let out = from.cli_with_stdin(&args, &lines);
    let ids: Vec<&str> = out.ok().lines().collect();
    assert_eq!(ids.len(), n, "one envelope id per message:\n{out}");
    assert!(ids.iter().all(|id| id.starts_with("fed_")), "{out}");
    names
}

/// The breaker of the federation `fed` as `federation show --json` on `m` shows it.
fn breaker(m: &Mesh, fed: &str) -> Value {
    show(m, fed)["breaker"].clone()
}

/// `meshfed_anomaly_windows_total` on `m`: the detector's windows judged so far.
fn windows(m: &Mesh) -> f64 {
    let metrics = http_get(m.api_addr(), "/metrics");
    metric(&metrics, "meshfed_anomaly_windows_total", &[]).unwrap_or(0.0)
}

/// Waits until a window of `m`'s detector ended after `start` windows had.
fn window_ended(m: &Mesh, start: f64) {
    poll("a detector window ends", DEADLINE, || {
        let now = windows(m);
        (now > start).then_some(()).ok_or(format!("{now} windows"))
    });
}

/// Waits until `m`'s side of `fed` had `n` messages acknowledged by the partner.
fn acknowledged(m: &Mesh, fed: &str, n: usize) {
    let what = format!("{} sees {n} messages acknowledged", m.name());
    poll(&what, DEADLINE, || {
        let view = show(m, fed);
        if view["delivery"]["acknowledged"] == n {
            Ok(())
        } else {
            Err(format!("{:#}", view["delivery"]))
        }
    });
}

/// Waits until `m`'s stream of `fed` holds nothing (every message sent and settled); returns
/// how many the partner acknowledged so far.
fn settled(m: &Mesh, fed: &str) -> usize {
    let what = format!("{} holds nothing for its partner", m.name());
    poll(&what, DEADLINE, || {
        let view = show(m, fed);
        match view["delivery"]["acknowledged"].as_u64() {
            Some(n) if view["backlog"]["messages"] == 0 => Ok(n as usize),
            _ => Err(format!("{view:#}")),
        }
    })
}

/// The names carried by the envelopes on `topic` that `sub` printed, once at least `n` have
/// come: name → times delivered.
fn delivered(sub: &Spawned, topic: &str, n: usize) -> BTreeMap<String, u32> {
    let what = format!("{n} envelopes on {topic} reach the subscriber");
    poll(&what, DEADLINE, || {
        let stdout = sub.stdout_so_far();
        // Whole lines only: the subscriber may be writing the last one.
        let whole = stdout.rsplit_once('\n').map_or("", |(done, _)| done);
        let mut tally = BTreeMap::new();
        for line in whole.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if v["federation"]["metadata"]["topic"] != topic {
                continue;
            }
            let name = v["message"]["name"].as_str().unwrap().to_owned();
            *tally.entry(name).or_insert(0_u32) += 1;
        }
        let total: u32 = tally.values().sum();
        if total as usize >= n {
            Ok(tally)
        } else {
            Err(format!("{total} so far:\n{stdout}"))
        }
    })
}

/// Each of `sent` was delivered exactly once, and nothing else was.
fn assert_counts(got: &BTreeMap<String, u32>, sent: &[String]) {
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let mut expected = sent.to_vec();
    expected.sort();
    let names: Vec<String> = got.keys().cloned().collect();
    assert_eq!(
        names.len(),
        sent.len(),
        "sent {} delivered {}",
        sent.len(),
        names.len()
    );
    assert_eq!(names, expected);
}
