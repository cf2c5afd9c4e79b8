//! `meshfed delegation issue | add | list | revoke`: supplier-c lets hub-b relay its parts
//! messages to plant-a; hub-b takes the delegation (checked against supplier-c's bundle);
//! supplier-c withdraws it and hub-b learns it over their link, also across a restart. The built
//! binary, on loopback, with ephemeral ports.

mod common;

use common::{federate, http_get, mesh, metric};
use meshfed_testkit::Mesh;
use meshfed_testkit::process::{DEADLINE, poll};
use serde_json::Value;

fn delegations(m: &Mesh) -> Vec<Value> {
    let out = m.cli(&["delegation", "list", "--json"]);
    let v: Value =
        serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    v.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not an array:\n{out}"))
}

/// plant-a, started with a rule taking supplier-c's parts messages through `via`, with chains
/// of at most `max_depth` delegations.
fn plant_taking_parts_through(via: &str, max_depth: u8) -> Mesh {
    let mut a = mesh("plant-a");
    let rule = format!(
        "[[transit]]\norigin = \"supplier-c\"\nvia = \"{via}\"\ntopics = [\"parts/#\"]\nmax_depth = {max_depth}\n"
    );
    std::fs::write(a.dir().join("policy.toml"), rule)
        .unwrap_or_else(|e| panic!("writing the policy: {e}"));
    a.start();
    a
}

/// `origin` delegates to `relay` the relaying of `topics` to plant-a, and `relay` takes it:
/// the delegation's id.
fn delegate(origin: &Mesh, relay: &Mesh, topics: &str) -> String {
    delegate_deeper(origin, relay, topics, 0)
}

/// [`delegate`], letting `relay` delegate further, `depth` levels down.
fn delegate_deeper(origin: &Mesh, relay: &Mesh, topics: &str, depth: u8) -> String {
    let issued = origin.cli(&[
        "delegation",
        "issue",
        relay.name(),
        "--audience",
        "plant-a",
        "--topics",
        topics,
        "--depth",
        &depth.to_string(),
        "--json",
    ]);
    let v: Value = serde_json::from_str(issued.ok()).unwrap_or_else(|e| panic!("{e}: {issued}"));
    let text = |field: &Value| {
        field
            .as_str()
            .unwrap_or_else(|| panic!("{issued}"))
            .to_owned()
    };
    relay.cli(&["delegation", "add", &text(&v["token"])]).ok();
    text(&v["delegation"]["id"])
}

#[test]
fn a_delegation_is_issued_taken_by_its_delegate_and_withdrawn_across_restarts() {
    let mut c = mesh("supplier-c");
    c.start();
    let mut b = mesh("hub-b");
    b.start();
    federate(&b, &c);

    // `delegation issue TO` of parts/# for plant-a, with `extra` arguments.
    let issue = |to: &str, extra: &[&str]| {
        let mut args = vec![
            "delegation",
            "issue",
            to,
            "--audience",
            "plant-a",
            "--topics",
            "parts/#",
        ];
        args.extend_from_slice(extra);
        c.cli(&args)
    };
    // What issuing refuses, and says why.
    issue("supplier-c", &[]).fails(2, "mesh supplier-c cannot delegate to itself");
    issue("hub-b", &["--depth", "9"]).fails(
        2,
        "depth 9: a delegation allows at most 8 further delegations",
    );

    let out = issue("hub-b", &["--depth", "1", "--ttl", "2h"]);
    let token = out.ok().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT:\n{out}");
    let issued = delegations(&c);
    assert_eq!(issued.len(), 1, "{issued:#?}");
    let id = issued[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(issued[0]["direction"], "issued");
    assert_eq!(issued[0]["state"], "valid");
    assert_eq!(issued[0]["delegate"], "hub-b");
    assert_eq!(issued[0]["audience"], serde_json::json!(["plant-a"]));
    assert_eq!(issued[0]["topics"], serde_json::json!(["parts/#"]));
    assert_eq!(issued[0]["depth"], 1);

    // A delegation for another mesh, or tampered with, is not taken.
    let out = c.cli(&["delegation", "add", &token]);
    out.fails(2, "is issued to mesh hub-b, not to this mesh (supplier-c)");
    let parts: Vec<&str> = token.split('.').collect();
    let mut sig = parts[2].as_bytes().to_vec();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        String::from_utf8(sig).unwrap()
    );
    let out = b.cli(&["delegation", "add", &forged]);
    out.fails(2, "signature does not verify");

    // hub-b takes it: verified against supplier-c's bundle, from stdin.
    let out = b.cli_with_stdin(&["delegation", "add", "-"], &token);
    assert!(
        out.ok().starts_with(&format!(
            "holding delegation {id} from supplier-c: relay its messages on parts/# to plant-a until "
        )),
        "{out}"
    );
    let held = delegations(&b);
    assert_eq!(held.len(), 1, "{held:#?}");
    assert_eq!(held[0]["direction"], "held");
    assert_eq!(held[0]["state"], "valid");
    let table = b.cli(&["delegation", "list"]);
    assert!(table.ok().contains(&id), "{table}");

    // supplier-c withdraws it; hub-b learns it over the link.
    let out = c.cli(&["delegation", "revoke", &id]);
    assert_eq!(
        out.ok().trim(),
        format!(
            "revoked delegation {id} to hub-b: every partner learns it within a heartbeat interval"
        ),
        "{out}"
    );
    assert_eq!(delegations(&c)[0]["state"], "revoked");
    let out = c.cli(&["delegation", "revoke", "0123abcd"]);
    out.fails(
        1,
        "no delegation \"0123abcd\" issued by this mesh is recorded",
    );
    poll("hub-b learns the revocation", DEADLINE, || {
        let held = delegations(&b);
        if held[0]["state"] == "revoked" {
            Ok(())
        } else {
            Err(format!("{held:#?}"))
        }
    });

    // Across restarts of both, it stays withdrawn, and cannot be taken again.
    b.stop();
    c.stop();
    b.start();
    assert_eq!(delegations(&b)[0]["state"], "revoked");
    let out = b.cli(&["delegation", "add", &token]);
    out.fails(
        2,
        &format!("delegation {id} was revoked by mesh supplier-c"),
    );
    c.start();
    assert_eq!(delegations(&c)[0]["state"], "revoked");
}

/// The trusted intermediary: supplier-c and plant-a do not federate; hub-b federates with both.
/// supplier-c delegates to hub-b the relaying of its `parts/#` messages to plant-a, whose policy
/// lets supplier-c's messages through hub-b. A message from supplier-c reaches plant-a's
/// subscriber, showing where it comes from; what the delegation does not cover does not go; a
/// withdrawn delegation stops the traffic.
#[test]
fn a_trusted_intermediary_relays_what_the_origin_delegated_and_stops_when_it_is_withdrawn() {
    let c = common::started("supplier-c");
    let b = common::started("hub-b");
    let mut a = plant_taking_parts_through("hub-b", 1);
    federate(&b, &c);
    federate(&a, &b);

    let send = |topic: &str, body: &str| {
        c.cli(&[
            "send", "--to", "plant-a", "--topic", topic, "--qos", "1", "--wait", body,
        ])
    };
    let send_with_properties = |topic: &str, body: &str| {
        c.cli(&[
            "send",
            "--to",
            "plant-a",
            "--topic",
            topic,
            "--qos",
            "1",
            "--wait",
            "--property",
            "trace=c-7",
            "--property",
            "lot=A=1",
            "--correlation-data",
            "order-7",
            "--reply-to",
            "replies/supplier-c",
            body,
        ])
    };
    // No delegation yet: supplier-c has no way to plant-a.
    send("parts/gear/7", "{}").fails(1, "plant-a");

    let id = delegate(&c, &b, "parts/#");

    let sub = common::subscribed(
        &mut a,
        &["--durable", "parts", "--topic", "parts/#", "--count", "1"],
    );
    let sent = send_with_properties("parts/gear/7", r#"{"gear":7}"#);
    assert!(sent.stderr.contains("acknowledged"), "{sent}");
    let got = sub.finish(DEADLINE);
    let line = got.stdout.lines().next().unwrap_or_else(|| panic!("{got}"));
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["message"], serde_json::json!({"gear": 7}), "{v:#}");
    assert_eq!(v["federation"]["source_mesh"]["id"], "hub-b", "{v:#}");
    assert_eq!(
        v["federation"]["routing"]["path"][0], "supplier-c",
        "the path starts at the origin:\n{v:#}"
    );
    assert_eq!(v["sender"]["subject"], "admin", "{v:#}");
    assert!(
        v["federation"]["routing"]["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&Value::from("transit"))),
        "{v:#}"
    );
    // The origin's properties, relayed with its message.
    assert_eq!(
        v["federation"]["metadata"]["properties"],
        serde_json::json!({
            "user": [["trace", "c-7"], ["lot", "A=1"]],
            "correlation_data": "b3JkZXItNw==",
            "reply_to": "replies/supplier-c",
        }),
        "{v:#}"
    );

    // What the delegation does not cover has no way to plant-a.
    send("orders/1", "{}").fails(1, "plant-a");

    // A delegation plant-a's transit rule does not cover: hub-b takes and relays the message,
    // plant-a refuses it, counted by its reason.
    delegate(&c, &b, "tools/#");
    let sent = send("tools/drill", "{}");
    assert!(
        sent.stderr.contains("acknowledged"),
        "taken by hub-b: {sent}"
    );
    let refused = poll("plant-a refuses the relayed message", DEADLINE, || {
        let metrics = http_get(a.api_addr(), "/metrics");
        match metric(
            &metrics,
            "meshfed_envelopes_rejected_total",
            &["direction=\"inbound\"", "reason=\"transit_refused\""],
        ) {
            Some(n) if n >= 1.0 => Ok(n),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(refused, 1.0);
    a.wait_for_log_after(
        0,
        &["no [[transit]] rule of plant-a lets supplier-c's messages on tools/drill through hub-b"],
    );

    // plant-a restarts: it keeps supplier-c's CAs as it accepted them, so that a list hub-b
    // passes on verifies before any further message of supplier-c arrives.
    a.stop();
    a.start();

    // supplier-c withdraws it: hub-b learns it, and supplier-c's messages stop.
    c.cli(&["delegation", "revoke", &id]).ok();
    poll("hub-b learns the revocation", DEADLINE, || {
        let held = delegations(&b);
        let parts = held.iter().find(|d| d["id"] == id.as_str());
        match parts.and_then(|d| d["state"].as_str()) {
            Some("revoked") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // plant-a, which takes supplier-c's messages through hub-b, learns it from hub-b as well
    // (restarted since its last message from supplier-c), and keeps it across a restart.
    let withdrawn = |m: &Mesh| {
        let out = m.cli(&["federation", "revocations", "--json"]);
        let v: Value = serde_json::from_str(out.ok()).unwrap();
        v["partners"].as_array().is_some_and(|lists| {
            lists.iter().any(|l| {
                l["mesh"] == "supplier-c"
                    && l["relayed"] == true
                    && l["delegations"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|d| d["id"] == id.as_str()))
            })
        })
    };
    poll("plant-a learns the revocation from hub-b", DEADLINE, || {
        if withdrawn(&a) {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });
    a.stop();
    a.start();
    assert!(
        withdrawn(&a),
        "plant-a keeps supplier-c's list across a restart"
    );
    send("parts/gear/8", "{}").fails(1, "plant-a");
}

/// A chain of two: supplier-c delegates to hub-b, which delegates on to hub-d, the partner of
/// plant-a. plant-a takes supplier-c's message from hub-d only when supplier-c's delegation lets
/// hub-b delegate further (its depth) and plant-a's rule allows a chain that long; hub-d
/// presents both delegations and hub-b's CAs. hub-b's withdrawal reaches plant-a through hub-d.
#[test]
fn a_chain_of_two_delegations_crosses_within_its_depth() {
    let c = common::started("supplier-c");
    let b = common::started("hub-b");
    let d = common::started("hub-d");
    let mut a = plant_taking_parts_through("hub-d", 2);
    federate(&b, &c);
    federate(&d, &b);
    federate(&a, &d);

    let send = |topic: &str| {
        c.cli(&[
            "send",
            "--to",
            "plant-a",
            "--topic",
            topic,
            "--qos",
            "1",
            "--wait",
            "--property",
            "trace=chain",
            "{}",
        ])
    };
    // supplier-c's delegation to hub-b does not let hub-b delegate further (depth 0).
    let shallow = delegate(&c, &b, "parts/#");
    let onward = delegate(&b, &d, "parts/#");
    let sent = send("parts/1");
    assert!(
        sent.stderr.contains("acknowledged"),
        "taken by hub-b: {sent}"
    );
    a.wait_for_log(&["transit refused", "its parent allows 0 below it"]);

    // With depth 1, the chain holds: the message arrives, its path starting at supplier-c.
    c.cli(&["delegation", "revoke", &shallow]).ok();
    poll("hub-b learns the revocation", DEADLINE, || {
        let held = delegations(&b);
        match (held.iter().find(|h| h["id"] == shallow.as_str())).and_then(|h| h["state"].as_str())
        {
            Some("revoked") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    delegate_deeper(&c, &b, "parts/#", 1);
    let sub = common::subscribed(
        &mut a,
        &["--durable", "parts", "--topic", "parts/#", "--count", "1"],
    );
    let sent = send("parts/2");
    assert!(sent.stderr.contains("acknowledged"), "{sent}");
    let got = sub.finish(DEADLINE);
    let line = got.stdout.lines().next().unwrap_or_else(|| panic!("{got}"));
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["federation"]["metadata"]["topic"], "parts/2", "{v:#}");
    assert_eq!(v["federation"]["source_mesh"]["id"], "hub-d", "{v:#}");
    assert_eq!(
        v["federation"]["routing"]["path"][0], "supplier-c",
        "the path starts at the origin:\n{v:#}"
    );
    // The origin's properties, through both relays.
    assert_eq!(
        v["federation"]["metadata"]["properties"],
        serde_json::json!({"user": [["trace", "chain"]]}),
        "{v:#}"
    );

    // hub-b withdraws its delegation to hub-d: hub-d passes hub-b's list on, and plant-a,
    // which accepted hub-b's CAs with the chain, takes it.
    b.cli(&["delegation", "revoke", &onward]).ok();
    poll(
        "plant-a learns hub-b's revocation from hub-d",
        DEADLINE,
        || {
            let out = a.cli(&["federation", "revocations", "--json"]);
            let v: Value = serde_json::from_str(out.ok()).unwrap_or_default();
            let listed = v["partners"].as_array().is_some_and(|lists| {
                lists.iter().any(|l| {
                    l["mesh"] == "hub-b"
                        && l["relayed"] == true
                        && l["delegations"]
                            .as_array()
                            .is_some_and(|d| d.iter().any(|d| d["id"] == onward.as_str()))
                })
            });
            if listed {
                Ok(())
            } else {
                Err(format!("{v:#}"))
            }
        },
    );
}
