//! Policies on real `meshfed gateway` processes (issue 14, items 1–3): each mesh's
//! `policy.toml` is negotiated in the handshake (a counterproposal where the offers differ, the
//! named clauses where they cannot agree), enforced at the gateways (redaction before sealing,
//! content types, priority cap, the agreed rate, schema ids, classification labels, topic
//! limits), shown by `policy show` and changed on a live
//! federation by `policy apply`.

#![expect(
    clippy::unwrap_used,
    reason = "end-to-end tests: a step that fails is the test failing"
)]

mod common;

use std::path::Path;
use std::time::Instant;

use common::{federate, http_get, metric, show, subscribe, wait_for_status};
use meshfed_testkit::Mesh;
use meshfed_testkit::process::DEADLINE;
use serde_json::Value;

/// The joiner's policy: it would allow 500 messages a second and keeps records a year,
/// redacts its customers' e-mail addresses, and takes envelopes signed one by one only (its
/// gateway's configuration says batch: it signs as agreed).
const PLANT: &str = r#"
[data]
redact = ["/customer/email"]

[qos]
max_rate = 500

[security]
signature_modes = ["per-message"]
"#;

/// The inviter's: JSON only, 20 messages a second, priority at most 5, records 30 days.
const SUPPLIER: &str = r#"
[data]
content_types = ["application/json"]

[qos]
max_rate = 20
max_priority = 5

[compliance]
retention_days = 30
"#;

/// A mesh of `name` with `policy` as its policy file, started.
fn with_policy(name: &str, policy: &str) -> Mesh {
    let mut m = common::mesh(name);
    std::fs::write(m.dir().join("policy.toml"), policy).unwrap();
    m.start();
    m
}

/// Sends `burst` messages from `a` at once (`send ARGS -`, one a line): each is accepted or
/// refused with `over`, and no more are accepted than the bucket holds (a second at `rate`) and
/// refills while the burst lasts. How many were refused.
fn burst_over_rate(a: &Mesh, args: &[&str], burst: usize, rate: f64, over: &str) -> usize {
    let lines: String = (0..burst).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let mut full = vec!["send"];
    full.extend_from_slice(args);
    full.push("-");
    let started = Instant::now();
    let out = a.cli_with_stdin(&full, &lines);
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = out.stdout.lines().count();
    let refused = out.stderr.matches(over).count();
    assert_eq!(accepted + refused, burst, "{out}");
    assert!(accepted >= 1 && refused > 0, "{out}");
    let allowed = rate + rate * elapsed;
    assert!(
        accepted as f64 <= allowed + 1.0,
        "{accepted} accepted in {elapsed:.2}s, at most {allowed:.0} allowed"
    );
    refused
}

/// Whether any file under `dir` holds `needle`.
fn found_under(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn each_mesh_file_is_negotiated_with_a_counterproposal_and_enforced_at_the_gateways() {
    let a = with_policy("plant-a", PLANT);
    let mut b = with_policy("supplier-b", SUPPLIER);
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");

    // plant-a proposed its own terms; supplier-b countered with the stricter combination,
    // which both hold.
    for m in [&a, &b] {
        let p = &show(m, &id)["agreement"]["policy"];
        assert_eq!(p["max_rate"], 20, "{p:#}");
        assert_eq!(p["retention_days"], 30, "{p:#}");
        assert_eq!(p["max_priority"], 5, "{p:#}");
        assert_eq!(
            p["content_types"],
            serde_json::json!(["application/json"]),
            "{p:#}"
        );
        assert_eq!(p["redact"], serde_json::json!(["/customer/email"]), "{p:#}");
        assert_eq!(
            p["signature_modes"],
            serde_json::json!(["per-message"]),
            "{p:#}"
        );
    }
    let shown = b.cli(&["policy", "show", "--federation", &id]);
    assert!(
        shown.ok().contains("qos.max_rate                 20 msg/s"),
        "{shown}"
    );

    // Redaction at plant-a's gateway, before sealing: the field never reaches supplier-b.
    let sub = subscribe(&mut b, &a, &["--topic", "orders/#", "--count", "1"]);
    let order = r#"{"customer":{"email":"ada@example.com","name":"Ada"},"qty":3}"#;
    let out = a.cli(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "orders/1",
        "--qos",
        "1",
        order,
    ]);
    out.ok();
    let got = sub.finish(DEADLINE);
    let line = got.ok();
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(
        v["message"],
        serde_json::json!({"customer":{"name":"Ada"},"qty":3}),
        "{line}"
    );
    for m in [&a, &b] {
        let hits = found_under(m.dir(), b"ada@example.com");
        assert!(
            hits.is_empty(),
            "{} keeps the redacted field in {hits:?}",
            m.name()
        );
    }

    // What the agreement does not allow is refused at the sender, with its reason.
    let text = a.cli(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "orders/2",
        "--content-type",
        "text/plain",
        "hi",
    ]);
    text.fails(
        1,
        "content type text/plain is not agreed (allowed: application/json)",
    );
    let urgent = a.cli(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "orders/3",
        "--priority",
        "7",
        "{}",
    ]);
    urgent.fails(1, "priority 7 is above the federation's cap of 5");

    // A burst over the agreed rate: what the bucket holds (a second's worth) and what refills
    // while the burst lasts goes; the rest is refused (429) and counted.
    let refused = burst_over_rate(
        &a,
        &[
            "--to",
            "supplier-b",
            "--topic",
            "orders/burst",
            "--qos",
            "1",
        ],
        200,
        20.0,
        "over the federation's rate of 20 messages per second",
    );
    let metrics = http_get(a.api_addr(), "/metrics");
    assert_eq!(
        metric(
            &metrics,
            "meshfed_envelopes_rejected_total",
            &["direction=\"outbound\"", "reason=\"rate_limited\""]
        ),
        Some(refused as f64),
    );
}

#[test]
fn a_requirement_no_offer_meets_ends_the_handshake_naming_the_clause_on_both_sides() {
    let b = with_policy("supplier-b", SUPPLIER);
    // plant-c needs 1000 msg/s and keeps exchanged data in the EU; supplier-b allows 20 and
    // does not say where it keeps data.
    let c = with_policy(
        "plant-c",
        "[qos.requires]\nmin_rate = 1000\n[compliance]\nresidency = [\"eu\"]\nregion = \"eu\"\n",
    );
    let token = common::invite(&b, "plant-c", &[]);
    let out = c.cli(&["federation", "join", &token]);
    let err = out.fails(1, "qos.max_rate");
    assert!(err.contains("at least 1000 msg/s"), "{out}");
    assert!(err.contains("compliance.region"), "{out}");
    b.wait_for_log(&[
        "qos.max_rate: at least 1000 msg/s required by the proposal, at most 20 allowed by us",
        "compliance.region: exchanged data must stay in [\"eu\"], and we do not say where we keep it",
    ]);
    assert!(common::federations(&c).is_empty());
}

#[test]
fn a_changed_policy_is_proposed_to_live_partners_and_a_bad_one_is_refused_with_its_lines() {
    let a = with_policy("plant-a", PLANT);
    let b = with_policy("supplier-b", SUPPLIER);
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");

    let bad = b.dir().join("bad.toml");
    std::fs::write(&bad, "[qos]\nmax_rate = 0\nmax_priority = 8\n").unwrap();
    for command in ["apply", "check"] {
        let out = b.cli(&["policy", command, bad.to_str().unwrap()]);
        let err = out.fails(
            2,
            "bad.toml:2:12: qos.max_rate = 0: must be from 1 to 10000000",
        );
        assert!(err.contains("bad.toml:3:16: qos.max_priority = 8"), "{out}");
    }
    // The API checks the same, naming the lines of the body it was given.
    let body = serde_json::json!({"toml": "[qos]\nmax_rate = 0\n"});
    let (status, answer) = common::http(
        b.api_addr(),
        "PUT",
        "/v1/policy",
        &common::admin_token(&b),
        &body,
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_policy", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("policy.toml:2:12: qos.max_rate = 0"),
        "{answer}"
    );

    let stricter = b.dir().join("stricter.toml");
    std::fs::write(&stricter, SUPPLIER.replace("max_rate = 20", "max_rate = 5")).unwrap();
    let out = b.cli(&["policy", "apply", stricter.to_str().unwrap()]);
    assert!(
        out.ok()
            .contains(&format!("{id} (plant-a): agreed, version 2 in force")),
        "{out}"
    );
    for m in [&a, &b] {
        let v = show(m, &id);
        assert_eq!(v["agreement"]["version"], 2, "{v:#}");
        assert_eq!(v["agreement"]["policy"]["max_rate"], 5, "{v:#}");
    }
    let view: Value = serde_json::from_str(b.cli(&["policy", "show", "--json"]).ok()).unwrap();
    assert_eq!(view["offer"]["terms"]["max_rate"], 5, "{view:#}");
    assert!(view["file"].as_str().unwrap().contains("max_rate = 5"));
}

/// plant-a's operator and its buyers may publish orders (the operator the probes the
/// subscriber helper sends, too).
const PLANT_ACCESS: &str = r#"
[access]
rules = '''
permit (principal in Meshfed::Role::"admin", action == Meshfed::Action::"publish", resource)
when { resource.name like "orders/*" || resource.name like "probe/*" };
permit (principal in Meshfed::Role::"buyer", action == Meshfed::Action::"publish", resource)
when { resource.name like "orders/*" };
'''
"#;

/// supplier-b maps plant-a's buyers at its north site (by role and attribute) to its own
/// subject `plant-buyer` with the role `purchasing` (translating their credentials into its
/// own tokens for ten minutes at most), and plant-a as a whole (every other sender of it) to the role `plant`; it lets
/// purchasing publish orders, and plant orders and probes, and forbids recalls from anyone.
const SUPPLIER_ACCESS: &str = r#"
[[identity]]
mesh = "plant-a"
role = "buyer"
attributes = { site = "north" }
to = "plant-buyer"
roles = ["purchasing"]
translate = "10m"

[[identity]]
mesh = "plant-a"
subject = "federation::plant-a"
roles = ["plant"]

[access]
rules = '''
permit (principal in Meshfed::Role::"plant", action == Meshfed::Action::"publish", resource)
when { context.direction == "inbound" && (resource.name like "orders/*" || resource.name like "probe/*") };
permit (principal in Meshfed::Role::"purchasing", action == Meshfed::Action::"publish", resource)
when { resource.name like "orders/*" };
@id("no-recalls")
forbid (principal, action, resource) when { resource.name like "orders/recall*" };
'''
"#;

#[test]
fn access_rules_decide_at_the_sender_for_its_components_and_at_the_receiver_for_mapped_partners() {
    let a = with_policy("plant-a", PLANT_ACCESS);
    let mut b = with_policy("supplier-b", SUPPLIER_ACCESS);
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    let sub = subscribe(&mut b, &a, &["--topic", "orders/#", "--count", "3"]);

    // plant-a's own rules, at its gateway: the operator may not publish invoices.
    let out = a.cli(&["send", "--to", "supplier-b", "--topic", "invoices/1", "{}"]);
    out.fails(
        1,
        "access denied: admin of plant-a may not publish on invoices/1: no access rule permits it",
    );
    // A component's token may be scoped wider than the rules: both must allow.
    let issued = a.cli(&[
        "token",
        "issue",
        "--subject",
        "erp",
        "--role",
        "buyer",
        "--attr",
        "site=north",
        "--topics",
        "#",
        "--actions",
        "publish",
    ]);
    let token = issued.ok().trim().to_owned();
    let post = |topic: &str| {
        let body =
            serde_json::json!({"to": "supplier-b", "topic": topic, "payload": {"n": 5}, "qos": 1});
        common::http(a.api_addr(), "POST", "/v1/messages", &token, &body)
    };
    assert_eq!(post("orders/5").0, 202);
    let (status, answer) = post("invoices/5");
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "access_denied", "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "access denied: erp of plant-a may not publish on invoices/5: no access rule permits it"
    );

    // supplier-b's rules, at its gateway, for the operator of plant-a (whom no rule names:
    // plant-a as a whole, mapped to `plant`): orders arrive, a recall does not.
    for (topic, n) in [("orders/7", 7), ("orders/recall-1", 0), ("orders/8", 8)] {
        let data = format!("{{\"n\":{n}}}");
        let args = [
            "send",
            "--to",
            "supplier-b",
            "--topic",
            topic,
            "--qos",
            "1",
            "--wait",
            &data,
        ];
        let out = a.cli(&args);
        if n == 0 {
            // The sender learns it was refused there, and why: dead-lettered, not acknowledged.
            out.fails(1, "the receiving gateway refused it (access_denied)");
        } else {
            out.ok();
        }
    }
    // The subscriber sees each sender as supplier-b maps it: erp, a buyer at the north site,
    // as plant-buyer (its attributes stay).
    let got = sub.finish(DEADLINE);
    let mut seen: Vec<(i64, Value)> = got
        .ok()
        .lines()
        .map(|l| {
            let v = serde_json::from_str::<Value>(l).unwrap();
            (v["message"]["n"].as_i64().unwrap(), v["sender"].clone())
        })
        .collect();
    seen.sort_by_key(|(n, _)| *n);
    // The buyer's credential crossed as its expiry, and came out as a token of supplier-b's.
    let remote = &mut seen[0].1;
    let remote_expires = remote["expires"].take().as_u64().unwrap();
    let credential = remote["credential"].take().as_str().unwrap().to_owned();
    remote.as_object_mut().unwrap().retain(|_, v| !v.is_null());
    translated_token_acts_for_the_buyer_at_supplier_b(&b, &credential, remote_expires);
    let plant =
        serde_json::json!({"subject": "federation::plant-a", "roles": ["plant"], "attributes": {}});
    assert_eq!(
        seen,
        [
            (
                5,
                serde_json::json!({"subject": "plant-buyer", "roles": ["purchasing"], "attributes": {"site": "north"}})
            ),
            (7, plant.clone()),
            (8, plant)
        ],
        "{got}"
    );

    b.wait_for_log(&["access_denied", "forbidden by no-recalls"]);
    let metrics = http_get(b.api_addr(), "/metrics");
    assert_eq!(
        metric(
            &metrics,
            "meshfed_envelopes_rejected_total",
            &["direction=\"inbound\"", "reason=\"access_denied\""]
        ),
        Some(1.0),
    );
}

/// What a subscriber at supplier-b can do with the token plant-a's buyer's credential was
/// translated into: it is supplier-b's, names the buyer it acts for, ends no later than the
/// buyer's own token (and within the rule's ten minutes), and publishes within supplier-b's
/// access rules as the mapped identity.
fn translated_token_acts_for_the_buyer_at_supplier_b(b: &Mesh, token: &str, remote_expires: u64) {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(claims["iss"], "meshfed:supplier-b/gw1", "{claims:#}");
    assert_eq!(claims["sub"], "plant-buyer", "{claims:#}");
    assert_eq!(
        claims["act"],
        serde_json::json!({"sub": "erp", "iss": "meshfed:plant-a"}),
        "{claims:#}"
    );
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(exp <= remote_expires && exp <= iat + 600, "{claims:#}");
    let post = |topic: &str| {
        let body = serde_json::json!({"to": "plant-a", "topic": topic, "payload": {"re": 5}});
        common::http(b.api_addr(), "POST", "/v1/messages", token, &body)
    };
    assert_eq!(post("orders/ack-5").0, 202);
    let (status, answer) = post("invoices/5");
    assert_eq!(status, 403, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "access denied: plant-buyer of supplier-b may not publish on invoices/5: no access rule permits it"
    );
}

/// The joiner's data labels and topic limit.
const PLANT_LABELS: &str = r#"
[data]
classifications = ["public", "internal", "confidential"]

[[qos.limits]]
topics = "telemetry/#"
rate = 5
"#;

/// The inviter's: one schema, two labels, and looser topic limits.
const SUPPLIER_LABELS: &str = r#"
[data]
schemas = ["reading-v1"]
classifications = ["public", "internal"]

[[qos.limits]]
topics = "telemetry/#"
rate = 10

[[qos.limits]]
topics = "alerts/#"
rate = 50
"#;

#[test]
fn schemas_classifications_and_topic_limits_are_negotiated_and_enforced() {
    let a = with_policy("plant-a", PLANT_LABELS);
    let mut b = with_policy("supplier-b", SUPPLIER_LABELS);
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    for m in [&a, &b] {
        let p = &show(m, &id)["agreement"]["policy"];
        assert_eq!(p["schemas"], serde_json::json!(["reading-v1"]), "{p:#}");
        assert_eq!(
            p["classifications"],
            serde_json::json!(["internal", "public"]),
            "{p:#}"
        );
        assert_eq!(
            p["topic_rates"],
            serde_json::json!([{"topics": "alerts/#", "rate": 50}, {"topics": "telemetry/#", "rate": 5}]),
            "{p:#}"
        );
    }

    let shown = b.cli(&["policy", "show", "--federation", &id]);
    for line in [
        "data.schemas                 reading-v1",
        "data.classifications         internal, public",
        "qos.limits                   alerts/# 50 msg/s, telemetry/# 5 msg/s",
    ] {
        assert!(shown.ok().contains(line), "{line}:\n{shown}");
    }

    let send = |extra: &[&str]| {
        let mut args = vec!["send", "--to", "supplier-b", "--topic", "readings/1"];
        args.extend_from_slice(extra);
        args.push("{\"t\":21.5}");
        a.cli(&args)
    };
    send(&[
        "--schema-id",
        "reading-v1",
        "--classification",
        "confidential",
    ])
    .fails(
        1,
        "classification confidential, and the agreement lets only internal, public cross",
    );
    send(&["--classification", "internal"]).fails(
        1,
        "the message has no schema id, and the agreement takes only schemas reading-v1",
    );
    let sub = common::subscribed(&mut b, &["--topic", "readings/#", "--count", "1"]);
    send(&[
        "--schema-id",
        "reading-v1",
        "--classification",
        "internal",
        "--qos",
        "1",
    ])
    .ok();
    let got = sub.finish(DEADLINE);
    let v: Value = serde_json::from_str(got.ok().trim()).unwrap();
    assert_eq!(
        v["federation"]["policy"]["classification"], "internal",
        "{v:#}"
    );
    assert_eq!(
        v["federation"]["metadata"]["schema_id"], "reading-v1",
        "{v:#}"
    );

    // A burst on a limited topic: the bucket's second and what refills go, the rest is refused
    // with the topic's limit named; the federation as a whole has no limit.
    let refused = burst_over_rate(
        &a,
        &[
            "--to",
            "supplier-b",
            "--topic",
            "telemetry/line-3",
            "--schema-id",
            "reading-v1",
            "--classification",
            "public",
        ],
        60,
        5.0,
        "over the federation's rate of 5 messages per second on telemetry/#",
    );
    let metrics = http_get(a.api_addr(), "/metrics");
    for (reason, n) in [
        ("rate_limited", refused as f64),
        ("schema_not_agreed", 1.0),
        ("classification_not_agreed", 1.0),
    ] {
        assert_eq!(
            metric(
                &metrics,
                "meshfed_envelopes_rejected_total",
                &["direction=\"outbound\"", &format!("reason=\"{reason}\"")]
            ),
            Some(n),
            "{reason}"
        );
    }
}
