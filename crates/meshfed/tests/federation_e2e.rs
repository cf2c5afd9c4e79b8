//! Two meshes federate as their operators would do it: real `meshfed gateway` processes on
//! ephemeral loopback ports, driven only through the CLI. Invitation and join, messages both
//! ways, restarts, and link health when a peer dies or goes silent.

mod common;

use std::collections::HashMap;

use common::{
    check_envelope, envelope_id, federate, federations, invite, send, show, started, subscribe,
    subscribed, wait_for_status,
};
use meshfed_testkit::process::DEADLINE;
use serde_json::{Value, json};

/// The row of `federation list` (the table) that shows federation `id`.
fn table_row(out: &str, id: &str) -> Vec<String> {
    let mut lines = out.lines();
    let head = lines.next().unwrap_or_default();
    assert!(head.starts_with("FEDERATION  "), "no table header:\n{out}");
    lines
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("no row for {id}:\n{out}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn invite_join_then_messages_cross_both_ways() {
    let mut a = started("plant-a");
    let mut b = started("supplier-b");

    let token = invite(&b, "plant-a", &[]);
    let decoded = meshfed_proto::invitation::InvitationToken::decode(&token).unwrap();
    assert_eq!(decoded.addresses, [b.federation_addr().to_string()]);
    let out = a.cli(&["federation", "join", &token]);
    assert!(out.ok().starts_with("joined federation fed_"), "{out}");
    let id = federations(&a)[0]["id"].as_str().unwrap().to_owned();
    assert!(out.stdout.contains(&id), "{out}");

    wait_for_status(&a, &id, "active");
    wait_for_status(&b, &id, "active");
    let row = table_row(a.cli(&["federation", "list"]).ok(), &id);
    assert_eq!(row[1..4], ["supplier-b", "active", "initiator"], "{row:?}");
    let row = table_row(b.cli(&["federation", "list"]).ok(), &id);
    assert_eq!(row[1..4], ["plant-a", "active", "responder"], "{row:?}");

    let at_a = show(&a, &id);
    let at_b = show(&b, &id);
    let digest = at_a["agreement"]["digest"].as_str().unwrap();
    assert_eq!(digest.len(), 96, "SHA-384 in hex: {at_a:#}");
    assert_eq!(at_b["agreement"]["digest"], digest);
    assert_eq!(at_a["peer"], "supplier-b");
    assert_eq!(at_b["peer"], "plant-a");

    // A → B, one message per command.
    let sub = subscribe(&mut b, &a, &["--count", "2", "--topic", "line/#"]);
    let sent = [json!({"c": 1}), json!({"c": 2})];
    let ids: Vec<String> = sent
        .iter()
        .map(|m| send(&a, "supplier-b", "line/temp", &m.to_string()))
        .collect();
    let out = sub.finish(DEADLINE);
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let by_id: HashMap<String, &str> = lines.iter().map(|l| (envelope_id(l), *l)).collect();
    for (id, message) in ids.iter().zip(&sent) {
        let line = by_id
            .get(id)
            .unwrap_or_else(|| panic!("envelope {id} not delivered:\n{out}"));
        check_envelope(line, id, "plant-a", "supplier-b", "line/temp", message);
    }

    // B → A: one message as DATA, three from standard input (one per line).
    let sub = subscribe(&mut a, &b, &["--count", "4", "--topic", "orders/#"]);
    let mut ids = vec![send(&b, "plant-a", "orders/new", "po-1")];
    let out = b.cli_with_stdin(
        &["send", "--to", "plant-a", "--topic", "orders/new", "-"],
        "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n",
    );
    let printed: Vec<String> = out.ok().lines().map(str::to_owned).collect();
    assert_eq!(printed.len(), 3, "one envelope id per input line:\n{out}");
    assert!(printed.iter().all(|id| id.starts_with("fed_")), "{out}");
    ids.extend(printed);
    let sent = [
        Value::from("po-1"),
        json!({"n": 1}),
        json!({"n": 2}),
        json!({"n": 3}),
    ];
    let out = sub.finish(DEADLINE);
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let by_id: HashMap<String, &str> = lines.iter().map(|l| (envelope_id(l), *l)).collect();
    for (id, message) in ids.iter().zip(&sent) {
        let line = by_id
            .get(id)
            .unwrap_or_else(|| panic!("envelope {id} not delivered:\n{out}"));
        check_envelope(line, id, "supplier-b", "plant-a", "orders/new", message);
    }
}

#[test]
fn federation_survives_restart_of_both_gateways_without_a_new_token() {
    let mut a = started("plant-a");
    let mut b = started("supplier-b");
    // The invitation carries B's address; B must come back on it for A to find it again.
    b.keep_federation_address();
    let b_addr = b.federation_addr();
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    wait_for_status(&b, &id, "active");

    for m in [&mut a, &mut b] {
        let status = m.stop();
        assert_eq!(status.code(), Some(0), "{} exited with {status}", m.name());
        assert!(
            !m.dir().join("run").join("gateway.json").exists(),
            "run/gateway.json of {} outlives its gateway",
            m.name()
        );
        m.wait_for_log(&[&format!("stopping gateway {}/gw1", m.name())]);
        m.wait_for_log(&["gateway stopped"]);
        let out = m.cli(&["federation", "list"]);
        out.fails(1, "cannot reach the gateway");
    }

    let mark = a.log_mark();
    b.start();
    assert_eq!(b.federation_addr(), b_addr);
    a.start();
    let at_a = wait_for_status(&a, &id, "active");
    let at_b = wait_for_status(&b, &id, "active");
    assert_eq!(at_a["agreement"]["digest"], at_b["agreement"]["digest"]);
    assert_eq!(federations(&a).len(), 1, "no new federation on A");
    assert_eq!(federations(&b).len(), 1, "no new federation on B");
    a.wait_for_log_after(mark, &["federation link re-established", &id]);

    let sub = subscribe(&mut b, &a, &["--count", "1", "--topic", "line/#"]);
    let sent = send(&a, "supplier-b", "line/temp", "{\"after\":\"restart\"}");
    let out = sub.finish(DEADLINE);
    check_envelope(
        out.ok().trim(),
        &sent,
        "plant-a",
        "supplier-b",
        "line/temp",
        &json!({"after": "restart"}),
    );
}

#[test]
fn status_turns_unreachable_when_heartbeats_stop() {
    let a = started("plant-a");
    let mut b = started("supplier-b");
    b.keep_federation_address();
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");

    b.kill9();
    let seen = wait_for_status(&a, &id, "unreachable");
    assert_eq!(seen["state"], "active", "the agreement stands: {seen:#}");
    assert_eq!(seen["health"], "unreachable", "{seen:#}");
    let row = table_row(a.cli(&["federation", "list"]).ok(), &id);
    assert_eq!(row[2], "unreachable", "{row:?}");
    let out = a.cli(&["send", "--to", "supplier-b", "--topic", "line/temp", "1"]);
    out.fails(1, "mesh supplier-b is unreachable");

    b.start();
    wait_for_status(&a, &id, "active");
    wait_for_status(&b, &id, "active");
}

#[test]
fn status_turns_unreachable_when_a_frozen_peer_sends_no_heartbeats() {
    let a = started("plant-a");
    let b = started("supplier-b");
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");

    // SIGSTOP keeps B's sockets open: only the missing heartbeats tell A that B is gone.
    let mark = a.log_mark();
    b.signal("STOP");
    let seen = wait_for_status(&a, &id, "unreachable");
    assert_eq!(seen["state"], "active", "{seen:#}");
    a.wait_for_log_after(
        mark,
        &["federation link down", &id, "nothing heard from the peer"],
    );

    b.signal("CONT");
    wait_for_status(&a, &id, "active");
    wait_for_status(&b, &id, "active");
}

/// A subscriber whose gateway restarts says so on stderr, reconnects (finding the gateway's
/// new API address), and goes on: its durable subscription delivers what arrives after.
#[test]
fn subscribe_reconnects_when_its_gateway_restarts() {
    let a = started("plant-a");
    let mut b = started("supplier-b");
    b.keep_federation_address();
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    let sub = subscribed(
        &mut b,
        &["--durable", "erp", "--topic", "line/#", "--count", "1"],
    );
    let status = b.stop();
    assert_eq!(status.code(), Some(0), "{status}");
    meshfed_testkit::process::wait_until("the subscriber notices", DEADLINE, || {
        sub.stderr_so_far().contains("lost the gateway")
    });
    b.start();
    wait_for_status(&a, &id, "active");
    meshfed_testkit::process::wait_until("the subscriber is back", DEADLINE, || {
        sub.stderr_so_far().contains("subscribed again at")
    });
    let out = a.cli(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "line/temp",
        "--qos",
        "1",
        "{\"after\":\"restart\"}",
    ]);
    let sent = out.ok().trim().to_owned();
    let out = sub.finish(DEADLINE);
    let printed: Value = serde_json::from_str(out.ok().trim()).unwrap();
    assert_eq!(printed["federation"]["id"], sent.as_str(), "{out}");
    assert_eq!(printed["message"]["after"], "restart", "{out}");
}

#[test]
fn invitations_carry_the_advertised_address_and_joins_dial_it() {
    let a = started("plant-a");
    let mut b = started("supplier-b");
    // B is reached by a name, not by the address it listens on.
    let port = b.federation_addr().port();
    b.keep_federation_address();
    b.stop();
    b.configure_toml(
        "federation",
        "advertise",
        &format!("[\"localhost:{port}\"]"),
    );
    b.start();

    let token = invite(&b, "plant-a", &[]);
    let decoded = meshfed_proto::invitation::InvitationToken::decode(&token).unwrap();
    assert_eq!(decoded.addresses, [format!("localhost:{port}")]);
    let out = a.cli(&["federation", "join", &token]);
    assert!(out.ok().starts_with("joined federation fed_"), "{out}");
    let id = federations(&a)[0]["id"].as_str().unwrap().to_owned();
    wait_for_status(&b, &id, "active");
    assert_eq!(
        show(&a, &id)["peer_addresses"],
        json!([format!("localhost:{port}")])
    );
}

#[test]
fn a_terminated_federation_is_re_established_under_its_id_by_a_new_invitation() {
    let a = started("plant-a");
    let b = started("supplier-b");
    let id = federate(&a, &b);
    wait_for_status(&b, &id, "active");
    let out = a.cli(&["federation", "terminate", &id, "--force"]);
    out.ok();
    wait_for_status(&b, &id, "terminated-forced");

    // Either side may invite again; the federation comes back under its id.
    let token = invite(&b, "plant-a", &[]);
    let out = a.cli(&["federation", "join", &token]);
    assert_eq!(
        out.ok().trim(),
        format!("joined federation {id} with mesh supplier-b (active)")
    );
    wait_for_status(&b, &id, "active");
    for m in [&a, &b] {
        let list = federations(m);
        assert_eq!(list.len(), 1, "{}: {list:#?}", m.name());
        assert_eq!(list[0]["id"], id.as_str());
    }
    b.wait_for_log(&["federation re-established after its termination", &id]);
    let out = a.cli(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "t",
        "--qos",
        "1",
        "--wait",
        "{}",
    ]);
    out.ok();
    assert!(out.stderr.contains(": acknowledged"), "{out}");
}

#[test]
fn meshes_whose_root_keys_are_kept_out_federate_and_exchange_a_message() {
    let bin = env!("CARGO_BIN_EXE_meshfed");
    let mut a = meshfed_testkit::Mesh::init_with_root_key_out(bin, "plant-a");
    let mut b = meshfed_testkit::Mesh::init_with_root_key_out(bin, "supplier-b");
    for m in [&a, &b] {
        assert!(
            !m.dir().join("ca/ca.key").exists(),
            "root key in {}",
            m.name()
        );
        assert!(m.dir().join("ca/issuing.key").is_file());
        assert!(m.root_key_out().is_file());
    }
    a.start();
    b.start();
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    wait_for_status(&b, &id, "active");

    let sub = subscribe(&mut b, &a, &["--count", "1", "--topic", "line/#"]);
    let message = json!({"c": 1});
    let sent = send(&a, "supplier-b", "line/temp", &message.to_string());
    let out = sub.finish(DEADLINE);
    let line = out.ok().trim();
    check_envelope(line, &sent, "plant-a", "supplier-b", "line/temp", &message);

    let sub = subscribe(&mut a, &b, &["--count", "1", "--topic", "orders/#"]);
    let sent = send(&b, "plant-a", "orders/new", "po-1");
    let out = sub.finish(DEADLINE);
    assert_eq!(envelope_id(out.ok().trim()), sent, "{out}");
}

#[test]
fn an_initiator_back_on_a_new_address_re_dials_and_the_inviter_takes_it_back() {
    let mut a = started("plant-a");
    let b = started("supplier-b");
    // The inviter keeps its address (its invitation carried it); the joiner does not.
    b.keep_federation_address();
    let id = federate(&a, &b);
    wait_for_status(&b, &id, "active");
    a.stop();
    wait_for_status(&b, &id, "unreachable");
    // Back on whatever port the system gives it now: B never dials, A re-dials B.
    a.start();
    wait_for_status(&b, &id, "active");
    wait_for_status(&a, &id, "active");
    let sub = subscribe(&mut a, &b, &["--count", "1", "--topic", "back/#"]);
    let sent = send(&b, "plant-a", "back/again", "hello");
    let out = sub.finish(DEADLINE);
    assert_eq!(envelope_id(out.ok().trim()), sent, "{out}");
}
