//! Federation through brokers, as a user runs it: one real-process test per topology (through
//! one broker, multilateral, hierarchical, a mesh of meshes losing a broker). In the first,
//! gateways of meshes `plant-a` and `cloud-c` each federate with broker mesh `hub-b`, then
//! federate *with each other* through it (`federation join TOKEN --via hub-b`), and a message
//! crosses end to end. The broker relays it without being able to read it: a marker in the
//! payload, and one in each of its properties, appears nowhere in its directory or log. Real processes on loopback, ephemeral
//! ports.

#![expect(
    clippy::unwrap_used,
    reason = "end-to-end tests: a step that fails is the test failing"
)]

mod common;

use base64::Engine as _;
use common::{federate, federations, http_get, metric, send, show, subscribe};
use meshfed_testkit::Mesh;
use meshfed_testkit::process::{DEADLINE, poll};
use serde_json::{Value, json};

fn broker(name: &str) -> Mesh {
    let mut m = Mesh::init_with_args(env!("CARGO_BIN_EXE_meshfed"), name, &["--role", "broker"]);
    m.start();
    m
}

/// Every file under `dir`, read as bytes, that contains `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn meshes_federate_end_to_end_through_a_broker_that_reads_nothing() {
    let hub = broker("hub-b");
    let a = common::started("plant-a");
    let mut c = common::started("cloud-c");
    federate(&a, &hub);
    let token = common::invite(&c, "plant-a", &[]);
    // Before cloud-c links to the broker, the broker has no way to it, and says so.
    let out = a.cli(&["federation", "join", &token, "--via", "hub-b"]);
    out.fails(1, "broker hub-b has no route to mesh cloud-c");
    // A gateway relays nothing.
    let out = c.cli(&[
        "federation",
        "join",
        &common::invite(&hub, "cloud-c", &[]),
        "--via",
        "plant-a",
    ]);
    out.fails(1, "this node has no live link to broker mesh plant-a");

    federate(&c, &hub);
    discovered(&a, &hub, &token);
    // A mesh cannot send through the broker to a mesh it has no federation with.
    let out = a.cli(&["send", "--to", "cloud-c", "--topic", "t", "x"]);
    out.fails(1, "cloud-c");
    wait_for_route(&a, "cloud-c", &["plant-a", "hub-b", "cloud-c"]);

    let out = a.cli(&["federation", "join", &token, "--via", "hub-b"]);
    let stdout = out.ok();
    assert!(
        stdout.starts_with("joined federation fed_")
            && stdout.contains("with mesh cloud-c (active)"),
        "{out}"
    );
    let relayed = federations(&a)
        .into_iter()
        .find(|f| f["peer"] == "cloud-c")
        .unwrap_or_else(|| panic!("no federation with cloud-c on plant-a"));
    assert_eq!(relayed["status"], "active", "{relayed:#}");
    assert_eq!(relayed["peer_addresses"][0], "via:hub-b", "{relayed:#}");
    // The broker holds federations with both gateways and none of its own with their content.
    let on_hub: Vec<_> = federations(&hub)
        .into_iter()
        .map(|f| f["peer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(on_hub.len(), 2, "{on_hub:?}");

    // Interest travels end to end in the tunnel: once cloud-c's (no subscriber yet) reached
    // plant-a, a qos 0 message for it is not sent at all, so the broker carries nothing.
    let fed_id = relayed["id"].as_str().unwrap();
    poll("plant-a learns cloud-c's interest", DEADLINE, || {
        let fed = show(&a, fed_id);
        if fed["peer_interest"]["known"] == true {
            Ok(())
        } else {
            Err(fed.to_string())
        }
    });
    send(&a, "cloud-c", "line/0", "nobody listens");
    let fed = show(&a, fed_id);
    assert_eq!(fed["delivery"]["unwanted"], 1, "{fed:#}");
    assert_eq!(fed["delivery"]["sent"], 0, "{fed:#}");
    let text = a.cli(&["federation", "show", fed_id]);
    let want =
        "peer interest   none (no subscriber there); qos 0 messages not sent for want of it 1";
    assert!(text.ok().contains(want), "{text}");

    let marker = "plaintext-marker-7f3a9c1e5d";
    let sub = subscribe(&mut c, &a, &["--topic", "line/#", "--count", "1"]);
    let fed = show(&a, fed_id);
    let wanted = fed["peer_interest"]["patterns"].as_array().unwrap();
    assert!(wanted.contains(&json!("line/#")), "{fed:#}");
    let text = a.cli(&["federation", "show", fed_id]);
    assert!(text.ok().contains("peer interest   line/#"), "{text}");
    // Its properties are sealed like its payload: each text a marker of its own.
    let (name, value, correlation, reply_to) = (
        "name-marker-2c81",
        "value-marker-93ad",
        "correlation-marker-5e17",
        "replies/reply-marker-b460",
    );
    let property = format!("{name}={value}");
    let out = a.cli(&[
        "send",
        "--to",
        "cloud-c",
        "--topic",
        "line/1",
        "--property",
        &property,
        "--correlation-data",
        correlation,
        "--reply-to",
        reply_to,
        marker,
    ]);
    let id = out.ok().trim().to_owned();
    let out = sub.finish(DEADLINE);
    let line = out.ok();
    assert!(line.contains(&id), "{out}");
    assert!(line.contains(marker), "{out}");
    let envelope: Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        envelope["federation"]["metadata"]["properties"],
        json!({
            "user": [[name, value]],
            "correlation_data": base64::engine::general_purpose::STANDARD.encode(correlation),
            "reply_to": reply_to,
        }),
        "{out}"
    );
    assert_eq!(
        envelope["federation"]["source_mesh"]["id"], "plant-a",
        "{out}"
    );
    // The broker is a hop of the envelope's route.
    assert_eq!(
        envelope["federation"]["routing"]["path"],
        json!(["plant-a", "hub-b", "cloud-c"]),
        "{out}"
    );
    assert_eq!(envelope["federation"]["routing"]["hops"], 2, "{out}");

    // The broker passed the tunnel's frames on, and never saw the payload.
    let metrics = http_get(hub.api_addr(), "/metrics");
    for next in ["cloud-c", "plant-a"] {
        let label = format!("peer=\"{next}\"");
        let relayed = metric(&metrics, "meshfed_relayed_frames_total", &[&label]);
        assert!(relayed.is_some_and(|n| n > 0.0), "{metrics}");
    }
    // It checked the origin's batch signatures it relayed, and every one held.
    let poll_metrics = || http_get(hub.api_addr(), "/metrics");
    poll("the broker checks a batch signature", DEADLINE, || {
        let m = poll_metrics();
        match metric(&m, "meshfed_relay_proofs_total", &["outcome=\"valid\""]) {
            Some(n) if n > 0.0 => Ok(()),
            _ => Err(m),
        }
    });
    assert_eq!(
        metric(
            &poll_metrics(),
            "meshfed_relay_proofs_total",
            &["outcome=\"refused\""]
        ),
        None
    );
    for secret in [marker, name, value, correlation, "reply-marker-b460"] {
        let leaks = files_containing(hub.dir(), secret.as_bytes());
        assert!(
            leaks.is_empty(),
            "the broker's files hold {secret}: {leaks:?}"
        );
        assert!(
            !hub.log().contains(secret),
            "the broker's log holds {secret}"
        );
    }
    drop(a);
}

/// Polls `route list --json` on `m` until `destination` is reached along `path`.
fn wait_for_route(m: &Mesh, destination: &str, path: &[&str]) {
    let what = format!("{} routes to {destination} along {path:?}", m.name());
    poll(&what, DEADLINE, || {
        let out = m.cli(&["route", "list", "--json"]);
        let routes: Value = serde_json::from_str(out.ok()).unwrap();
        let found = routes.as_array().unwrap().iter().any(|r| {
            r["destination"] == destination
                && r["path"] == json!(path)
                && r["hops"] == path.len() - 1
        });
        if found {
            Ok(())
        } else {
            Err(format!("{routes:#}"))
        }
    });
}

/// `joiner` joins `inviter` through broker `via`; returns the federation id.
fn federate_via(joiner: &Mesh, inviter: &Mesh, via: &str) -> String {
    let token = common::invite(inviter, joiner.name(), &[]);
    let out = joiner.cli(&["federation", "join", &token, "--via", via]);
    let stdout = out.ok();
    let expected = format!("with mesh {} (active)", inviter.name());
    assert!(stdout.contains(&expected), "{out}");
    stdout.split_whitespace().nth(2).unwrap().to_owned()
}

/// Hierarchical: site gateways under regional brokers under a cloud broker. Routes propagate
/// up and down the tree (path vector), and a message crosses from one site to the other
/// through three brokers, each a hop of its route.
#[test]
fn a_message_crosses_regions_through_three_brokers() {
    let cloud = broker("cloud");
    let region1 = broker("region-1");
    let region2 = broker("region-2");
    let site1 = common::started("site-1");
    let mut site2 = common::started("site-2");
    federate(&region1, &cloud);
    federate(&region2, &cloud);
    federate(&site1, &region1);
    federate(&site2, &region2);
    let path = ["site-1", "region-1", "cloud", "region-2", "site-2"];
    wait_for_route(&site1, "site-2", &path);
    let out = region1.cli(&["route", "list"]);
    assert!(
        out.ok().lines().any(|l| l.starts_with("site-2 ") && l.contains("region-1 → cloud → region-2 → site-2")),
        "{out}"
    );

    federate_via(&site1, &site2, "region-1");
    let sub = subscribe(&mut site2, &site1, &["--topic", "orders/#", "--count", "1"]);
    let id = send(&site1, "site-2", "orders/7", "hello across regions");
    let out = sub.finish(DEADLINE);
    let envelope: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(envelope["federation"]["id"], id.as_str(), "{out}");
    assert_eq!(
        envelope["federation"]["routing"]["path"],
        json!(path),
        "{out}"
    );
    assert_eq!(envelope["federation"]["routing"]["hops"], 4, "{out}");
}

/// Mesh of meshes: two gateways, each linked to two brokers that are linked to each other. The
/// broker the federation runs through is killed (kill -9); the federation resumes through the
/// other broker, and a reliable message sent meanwhile arrives.
#[test]
fn traffic_takes_the_other_broker_when_one_dies() {
    let mut b1 = broker("broker-1");
    let b2 = broker("broker-2");
    let a = common::started("plant-a");
    let mut d = common::started("depot-d");
    federate(&b1, &b2);
    for gateway in [&a, &d] {
        federate(gateway, &b1);
        federate(gateway, &b2);
    }
    wait_for_route(&a, "depot-d", &["plant-a", "broker-1", "depot-d"]);
    let id = federate_via(&a, &d, "broker-1");

    let sub = subscribe(&mut d, &a, &["--topic", "stock/#", "--count", "2"]);
    // Acknowledged end to end before the broker dies.
    let out = a.cli(&[
        "send", "--to", "depot-d", "--topic", "stock/1", "--qos", "1", "--wait", "before",
    ]);
    let first = out.ok().trim().to_owned();
    b1.kill9();
    let out = a.cli(&[
        "send", "--to", "depot-d", "--topic", "stock/2", "--qos", "1", "after",
    ]);
    let second = out.ok().trim().to_owned();
    let out = sub.finish(DEADLINE);
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains(&first) && lines[0].contains("before"),
        "{out}"
    );
    assert!(
        lines[1].contains(&second) && lines[1].contains("after"),
        "{out}"
    );
    let envelope: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(
        envelope["federation"]["routing"]["path"],
        json!(["plant-a", "broker-2", "depot-d"]),
        "{out}"
    );
    let view = common::wait_for_status(&a, &id, "active");
    assert_eq!(view["via"], "broker-2", "{view:#}");
}

/// `federation discover --broker` (the hub's API) from `m` lists every mesh linked to the
/// hub, cloud-c under the CA its invitation `token` pins, and says the directory is no trust
/// anchor; a gateway has no directory of its own.
fn discovered(m: &Mesh, hub: &Mesh, token: &str) {
    let addr = hub.api_addr().to_string();
    let out = m.cli(&["federation", "discover", "--broker", &addr, "--json"]);
    let listed: Value = serde_json::from_str(out.ok()).unwrap();
    let meshes: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["mesh"].as_str().unwrap())
        .collect();
    assert_eq!(meshes, ["cloud-c", "plant-a"], "{out}");
    let pinned = meshfed_proto::invitation::InvitationToken::decode(token).unwrap();
    assert_eq!(
        listed[0]["ca_fingerprint"],
        pinned
            .ca_fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        "{out}"
    );
    assert!(
        out.stderr.contains("The directory is not a trust anchor"),
        "{out}"
    );
    let out = m.cli(&["federation", "discover"]);
    out.fails(
        1,
        "this node is a gateway: brokers serve the discovery directory",
    );
}

/// Multilateral: one mesh federated with three, directly and through a broker at once; a
/// message to each and from each arrives where it was sent.
#[test]
fn one_mesh_federates_with_three_and_messages_cross_each_way() {
    let hub = broker("hub-b");
    let mut a = common::started("plant-a");
    let mut peers = [
        common::started("supplier-b"),
        common::started("carrier-c"),
        common::started("cloud-d"),
    ];
    // Two direct federations; the third through the broker.
    federate(&a, &peers[0]);
    federate(&peers[1], &a);
    federate(&a, &hub);
    federate(&peers[2], &hub);
    wait_for_route(&a, "cloud-d", &["plant-a", "hub-b", "cloud-d"]);
    federate_via(&a, &peers[2], "hub-b");
    let names: Vec<String> = federations(&a)
        .iter()
        .map(|f| f["peer"].as_str().unwrap().to_owned())
        .collect();
    for peer in ["supplier-b", "carrier-c", "cloud-d", "hub-b"] {
        assert!(names.iter().any(|n| n == peer), "{names:?}");
    }

    for peer in &mut peers {
        let name = peer.name().to_owned();
        let sub = subscribe(peer, &a, &["--topic", "to/#", "--count", "1"]);
        let id = send(&a, &name, &format!("to/{name}"), "from plant-a");
        let out = sub.finish(DEADLINE);
        assert!(out.ok().contains(&id), "{name}: {out}");

        let sub = subscribe(&mut a, peer, &["--topic", "from/#", "--count", "1"]);
        let id = send(peer, "plant-a", &format!("from/{name}"), "to plant-a");
        let out = sub.finish(DEADLINE);
        let envelope: Value = serde_json::from_str(out.ok()).unwrap();
        assert_eq!(envelope["federation"]["id"], id.as_str(), "{out}");
        assert_eq!(
            envelope["federation"]["source_mesh"]["id"],
            name.as_str(),
            "{out}"
        );
    }
}

/// Store-and-forward at the broker: cloud-c is away, plant-a hands its reliable messages to
/// the hub's custody (bounded: the one beyond the hub's limit is refused with a clear reason),
/// then plant-a dies for good and the hub is killed -9 and restarted. When cloud-c returns,
/// the hub hands it what it held — by priority — and cloud-c's durable subscriber gets each
/// once, through the hub. The hub held ciphertext only.
#[test]
fn a_broker_keeps_messages_for_a_mesh_that_is_away_across_its_own_kill() {
    let mut hub = Mesh::init_with_args(
        env!("CARGO_BIN_EXE_meshfed"),
        "hub-b",
        &["--role", "broker"],
    );
    hub.configure_toml("delivery", "custody_max_messages", "3");
    hub.start();
    hub.keep_federation_address();
    let mut a = common::started("plant-a");
    let mut c = common::started("cloud-c");
    federate(&a, &hub);
    federate(&c, &hub);
    wait_for_route(&a, "cloud-c", &["plant-a", "hub-b", "cloud-c"]);
    let fed = federate_via(&a, &c, "hub-b");

    let sub = common::subscribed(
        &mut c,
        &["--durable", "erp", "--topic", "line/#", "--count", "3"],
    );
    assert_eq!(c.stop().code(), Some(0));
    common::wait_for_status(&a, &fed, "unreachable");

    let marker = "custody-marker-5be0c7";
    let mut sent = Vec::new();
    for (priority, topic) in [("1", "line/low"), ("7", "line/high"), ("4", "line/mid")] {
        let out = a.cli(&[
            "send",
            "--to",
            "cloud-c",
            "--topic",
            topic,
            "--qos",
            "1",
            "--priority",
            priority,
            &format!("{marker} {topic}"),
        ]);
        sent.push(out.ok().trim().to_owned());
    }
    let over = a.cli(&[
        "send",
        "--to",
        "cloud-c",
        "--topic",
        "line/over",
        "--qos",
        "1",
        "one too many",
    ]);
    over.ok();
    poll("the hub takes three into custody", DEADLINE, || {
        let m = http_get(hub.api_addr(), "/metrics");
        match metric(&m, "meshfed_custody_held_envelopes", &[]) {
            Some(3.0) => Ok(()),
            _ => Err(m),
        }
    });
    poll("plant-a hears the fourth was refused", DEADLINE, || {
        let m = http_get(a.api_addr(), "/metrics");
        match metric(
            &m,
            "meshfed_custody_envelopes_total",
            &["event=\"refused\""],
        ) {
            Some(n) if n >= 1.0 => Ok(()),
            _ => Err(m),
        }
    });
    assert!(
        a.log()
            .contains("custody_full: the broker holds 3 envelopes"),
        "{}",
        a.log()
    );
    let out = a.cli(&["federation", "show", &fed]);
    // The fourth is handed again each round, and refused again while the hub is full.
    let shown = out.ok();
    assert!(
        shown.contains("custody         3 held by hub-b while cloud-c is away; refused ")
            && shown.contains("(last: custody_full: the broker holds 3 envelopes"),
        "{out}"
    );

    // The origin is gone for good, and the broker crashes: only its journal has them now.
    a.kill9();
    hub.kill9();
    hub.start();
    c.start();
    let out = sub.finish(DEADLINE);
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let order: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    // By priority: high (7), mid (4), low (1).
    let ids: Vec<&str> = order
        .iter()
        .map(|e| e["federation"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&sent[1], &sent[2], &sent[0]], "{out}");
    for e in &order {
        assert_eq!(
            e["federation"]["routing"]["path"],
            json!(["plant-a", "hub-b", "cloud-c"]),
            "{out}"
        );
    }
    assert!(lines[0].contains(&format!("{marker} line/high")), "{out}");
    poll("the hub hands everything on", DEADLINE, || {
        let m = http_get(hub.api_addr(), "/metrics");
        match metric(&m, "meshfed_custody_held_envelopes", &[]) {
            Some(0.0) => Ok(()),
            _ => Err(m),
        }
    });
    let leaks = files_containing(hub.dir(), marker.as_bytes());
    assert!(
        leaks.is_empty(),
        "the broker's files hold the plaintext: {leaks:?}"
    );
}

/// The broker level of policy enforcement: the hub holds what it relays to its own agreements
/// with its neighbours. A burst from plant-a over the rate the hub agreed with plant-a, and an
/// envelope larger than the size it agreed, each refuse their tunnel, the reason in the hub's
/// log; plant-a keeps what was not acknowledged.
#[test]
fn a_broker_holds_what_it_relays_to_its_own_agreements() {
    let mut hub = Mesh::init_with_args(
        env!("CARGO_BIN_EXE_meshfed"),
        "hub-b",
        &["--role", "broker"],
    );
    std::fs::write(
        hub.dir().join("policy.toml"),
        "[data]\nmax_message_size = 4096\n\n[qos]\nmax_rate = 20\n",
    )
    .unwrap();
    hub.start();
    let a = common::started("plant-a");
    let mut c = common::started("cloud-c");
    federate(&a, &hub);
    federate(&c, &hub);
    wait_for_route(&a, "cloud-c", &["plant-a", "hub-b", "cloud-c"]);
    let id = federate_via(&a, &c, "hub-b");

    // Within the rate, messages cross.
    let sub = subscribe(&mut c, &a, &["--topic", "burst/#", "--count", "1"]);
    let sent = send(&a, "cloud-c", "burst/0", "{}");
    assert!(sub.finish(DEADLINE).ok().contains(&sent));

    let burst = 200;
    let lines: String = (0..burst).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let out = a.cli_with_stdin(
        &[
            "send", "--to", "cloud-c", "--topic", "burst/1", "--qos", "1", "-",
        ],
        &lines,
    );
    assert_eq!(out.stdout.lines().count(), burst, "{out}");
    hub.wait_for_log(&[
        "refusing a tunnel",
        "plant-a sent over the 20 envelopes a second its agreement with broker hub-b allows",
    ]);
    let metrics = http_get(hub.api_addr(), "/metrics");
    assert!(
        metric(&metrics, "meshfed_relay_over_rate_total", &[]).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    // Nothing acknowledged was lost: what did not cross is still queued at plant-a, or crossed.
    // The backlog is read first: acknowledgements arriving between the two reads only add to
    // the count read second (read the other way round, they fell between the two).
    let queued = show(&a, &id)["backlog"]["messages"].as_u64().unwrap();
    let delivery = &show(&a, &id)["delivery"];
    assert!(
        delivery["acknowledged"].as_u64().unwrap() + queued >= burst as u64,
        "{delivery:#} queued {queued}"
    );

    let big = format!("\"{}\"", "x".repeat(40_000));
    let out = a.cli(&[
        "send",
        "--to",
        "cloud-c",
        "--topic",
        "burst/big",
        "--qos",
        "1",
        &big,
    ]);
    out.ok();
    hub.wait_for_log(&[
        "refusing a tunnel",
        "over the 4096 bytes the agreement with broker hub-b allows",
    ]);
}
