//! What a gateway refuses, seen as users see it: each refusal is a clear `error:` on the CLI
//! (exit code 1; 2 when the token itself shows it cannot be used here) and a line in the inviting gateway's log, the gateway keeps running and
//! answering, and no federation is created or changed. Real processes on loopback, driven
//! through the CLI; bad tokens are made by decoding a real one and changing one field.

#![expect(
    clippy::unwrap_used,
    reason = "test steps: a step that fails is the test failing"
)]

mod common;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{federate, federations, invite, mesh, show, started, still_serving, wait_for_status};
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::invitation::InvitationToken;
use meshfed_testkit::copy_dir;
use meshfed_testkit::process::{DEADLINE, wait_until};
use serde_json::Value;

/// `token` with one field changed by `change`, encoded again.
fn tampered(token: &str, change: impl FnOnce(&mut InvitationToken)) -> String {
    let mut t = InvitationToken::decode(token).unwrap();
    change(&mut t);
    t.encode()
}

/// Fails the test if `list` (from `federation list --json` on mesh `on`) is not empty.
fn assert_none(list: &[Value], on: &str) {
    assert!(
        list.is_empty(),
        "no federation was created on {on}: {list:#?}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads from `stream` until the peer closes it; fails the test if it stays open.
fn assert_closed_by_peer(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the gateway did not close the connection: {e}"),
        }
    }
}

#[test]
fn join_rejects_a_reused_token() {
    let a = started("plant-a");
    let mut b = started("supplier-b");
    let token = invite(&b, "plant-a", &[]);
    let out = a.cli(&["federation", "join", &token]);
    out.ok();
    let id = federations(&a)[0]["id"].as_str().unwrap().to_owned();
    let out = a.cli(&["federation", "terminate", &id, "--force"]);
    assert_eq!(
        out.ok().trim(),
        format!("federation {id} with supplier-b is now terminated-forced")
    );
    wait_for_status(&b, &id, "terminated-forced");

    let mark = b.log_mark();
    let out = a.cli(&["federation", "join", &token]);
    out.fails(1, "was already used");
    b.wait_for_log_after(
        mark,
        &[
            "refused an unauthenticated connection",
            "reason=\"handshake\"",
            "was already used",
        ],
    );

    for list in [federations(&a), still_serving(&mut b)] {
        assert_eq!(list.len(), 1, "no federation was created: {list:#?}");
        assert_eq!(list[0]["id"], id.as_str());
        assert_eq!(list[0]["state"], "terminated-forced");
    }
}

#[test]
fn join_rejects_an_expired_token() {
    let a = started("plant-a");
    let mut b = started("supplier-b");
    let out = b.cli(&["federation", "invite", "--peer", "plant-a", "--ttl", "1s"]);
    let token = out.ok().trim().to_owned();
    let until = out
        .stderr
        .split_once("until ")
        .and_then(|(_, rest)| rest.split_once(". On"))
        .map(|(time, _)| time)
        .unwrap_or_else(|| panic!("no expiry time on stderr:\n{out}"));
    let expires = humantime::parse_rfc3339(until).unwrap();
    wait_until("the invitation's expiry time passes", DEADLINE, || {
        SystemTime::now() > expires
    });

    let mark = b.log_mark();
    let out = a.cli(&["federation", "join", &token]);
    out.fails(2, "expired");

    // The inviter checks the expiry it recorded, whatever the token says.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let later = tampered(&token, |t| {
        t.expires = Timestamp(u64::try_from(now.as_millis()).unwrap() + 3_600_000);
    });
    let out = a.cli(&["federation", "join", &later]);
    out.fails(1, "has expired");
    b.wait_for_log_after(
        mark,
        &[
            "refused an unauthenticated connection",
            "reason=\"handshake\"",
            "has expired",
        ],
    );

    assert_none(&federations(&a), "A");
    assert_none(&still_serving(&mut b), "B");
}

#[test]
fn join_rejects_a_token_for_another_mesh() {
    let a = started("plant-a");
    let mut b = started("supplier-b");
    let token = invite(&b, "plant-c", &[]);

    let mark = b.log_mark();
    let out = a.cli(&["federation", "join", &token]);
    out.fails(2, "this invitation is for mesh plant-c");

    // The inviter knows whom it invited, whatever the token says.
    let renamed = tampered(&token, |t| t.invitee = "plant-a".parse().unwrap());
    let out = a.cli(&["federation", "join", &renamed]);
    out.fails(1, "mesh plant-a has no invitation");
    b.wait_for_log_after(
        mark,
        &[
            "refused an unauthenticated connection",
            "reason=\"handshake\"",
            "mesh plant-a has no invitation",
        ],
    );

    assert_none(&federations(&a), "A");
    assert_none(&still_serving(&mut b), "B");
}

#[test]
fn join_rejects_an_inviter_whose_ca_does_not_match_the_pinned_fingerprint() {
    let a = started("plant-a");
    let mut b = started("supplier-b");
    let token = invite(&b, "plant-a", &[]);
    let mut pinned = [0u8; 48];
    let wrong = tampered(&token, |t| {
        t.ca_fingerprint[0] ^= 0xff;
        pinned = t.ca_fingerprint;
    });

    let mark = b.log_mark();
    let out = a.cli(&["federation", "join", &wrong]);
    let stderr = out.fails(1, "pinned fingerprint");
    assert!(stderr.contains(&hex(&pinned)), "names the pin:\n{out}");
    b.wait_for_log_after(
        mark,
        &[
            "refused an unauthenticated connection",
            "reason=\"tls\"",
            "refused our certificate",
        ],
    );
    assert_none(&federations(&a), "A");
    assert_none(&still_serving(&mut b), "B");

    // The refused attempt did not use up the invitation.
    let out = a.cli(&["federation", "join", &token]);
    assert!(out.ok().starts_with("joined federation fed_"), "{out}");
}

#[test]
fn resuming_with_a_certificate_from_an_unknown_ca_is_refused() {
    let mut a = started("plant-a");
    let mut b = started("supplier-b");
    let id = federate(&a, &b);
    let before = wait_for_status(&b, &id, "active");
    assert_eq!(a.stop().code(), Some(0));
    wait_for_status(&b, &id, "unreachable");

    // Same mesh name, its own CA, and the real A's registry: it knows the federation and B's
    // address, but cannot prove it is the plant-a that B federated with.
    let mut impostor = mesh("plant-a");
    let store = impostor.dir().join("store");
    std::fs::create_dir_all(&store).unwrap();
    // The store file and its journal's segment log (a directory beside it).
    copy_dir(&a.dir().join("store"), &store);
    let mark = b.log_mark();
    impostor.start();
    // The impostor's CA bears the real one's name, so the refusal is a signature that does
    // not verify with the key of the CA of that name in B's stored bundle.
    b.wait_for_log_after(
        mark,
        &[
            "refused an unauthenticated connection",
            "reason=\"handshake\"",
            "peer certificate not trusted",
            "does not verify with the key of its issuing CA",
        ],
    );
    impostor.wait_for_log(&["re-dial failed", &id, "peer refused (untrusted_peer)"]);

    let after = still_serving(&mut b);
    assert_eq!(after.len(), 1, "{after:#?}");
    let after = &after[0];
    assert_eq!(after["id"], id.as_str());
    assert_eq!(after["state"], "active", "the agreement stands: {after:#}");
    assert_eq!(
        after["status"], "unreachable",
        "no link with the impostor: {after:#}"
    );
    assert_eq!(
        after["agreement"], before["agreement"],
        "agreement unchanged"
    );
    let since = b.log().get(mark..).unwrap_or_default().to_owned();
    assert!(
        !since.contains("federation link up"),
        "B accepted a link from the impostor:\n{since}"
    );
    let at_impostor = show(&impostor, &id);
    assert_eq!(at_impostor["status"], "unreachable", "{at_impostor:#}");
}

#[test]
fn a_peer_that_stalls_the_tls_handshake_is_cut_off_while_others_join() {
    let a = started("plant-a");
    let mut b = mesh("supplier-b");
    // Long enough that the real join, on a loaded machine, is done well before the cut-off.
    b.configure("federation", "handshake_timeout", "3s");
    b.start();

    let mut stalled = TcpStream::connect(b.federation_addr()).unwrap();
    let stalled_addr = stalled.local_addr().unwrap().to_string();
    let id = federate(&a, &b);
    wait_for_status(&b, &id, "active");

    let cut_off = b.wait_for_log(&[
        "refused an unauthenticated connection",
        "reason=\"timeout\"",
        &stalled_addr,
        "TLS handshake",
        "timed out after 3s",
    ]);
    assert_closed_by_peer(&mut stalled);
    // The join was served while the stalled connection was still waiting.
    let log = b.log();
    let link_up = log.find("federation link up").unwrap();
    assert!(link_up < log.find(&cut_off).unwrap(), "{log}");
    let list = still_serving(&mut b);
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["status"], "active");
}

#[test]
fn bytes_that_are_not_tls_are_refused_and_the_gateway_keeps_serving() {
    let a = started("plant-a");
    let mut b = started("supplier-b");

    let mut garbage = TcpStream::connect(b.federation_addr()).unwrap();
    let garbage_addr = garbage.local_addr().unwrap().to_string();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    b.wait_for_log(&[
        "refused an unauthenticated connection",
        "reason=\"tls\"",
        &garbage_addr,
        "not TLS",
    ]);
    assert_closed_by_peer(&mut garbage);

    assert_none(&still_serving(&mut b), "B");
    let id = federate(&a, &b);
    wait_for_status(&b, &id, "active");
}

#[test]
fn send_to_a_mesh_without_a_federation_fails_and_names_it() {
    let mut a = started("plant-a");
    let out = a.cli(&["send", "--to", "nowhere", "--topic", "t", "1"]);
    out.fails(1, "no federation with mesh nowhere");
    assert_none(&still_serving(&mut a), "A");
}

#[test]
fn invite_with_a_bad_ttl_or_for_its_own_mesh_is_a_usage_error() {
    let mut b = started("supplier-b");
    let out = b.cli(&["federation", "invite", "--peer", "plant-a", "--ttl", "0s"]);
    out.fails(
        2,
        "ttl 0s is too short: an invitation must work for at least 1 second",
    );
    let out = b.cli(&["federation", "invite", "--peer", "supplier-b"]);
    out.fails(2, "mesh supplier-b cannot invite itself");
    assert_none(&still_serving(&mut b), "B");
}

#[test]
fn join_rejects_text_that_is_not_a_token() {
    let mut a = started("plant-a");
    let out = a.cli(&["federation", "join", "garbage"]);
    out.fails(2, "not a meshfed invitation token");
    let out = a.cli(&["federation", "join", "mfi1.@@@"]);
    out.fails(2, "invitation token is damaged");
    assert_none(&still_serving(&mut a), "A");
}

#[test]
fn admin_commands_say_the_gateway_cannot_be_reached_when_it_is_not_running() {
    let mut a = mesh("plant-a");
    let out = a.cli(&["federation", "list"]);
    out.fails(1, "cannot reach the gateway");
    let out = a.cli(&["send", "--to", "supplier-b", "--topic", "t", "1"]);
    out.fails(1, "cannot reach the gateway");
    let out = a.cli(&["subscribe", "--count", "1"]);
    out.fails(1, "is `meshfed gateway` running for this directory?");

    // Killed without a chance to clean up: its run/gateway.json names an address nobody serves.
    a.start();
    let api = a.api_addr();
    a.kill9();
    assert!(a.dir().join("run").join("gateway.json").exists());
    let out = a.cli(&["federation", "list", "--json"]);
    let stderr = out.fails(1, "cannot reach the gateway");
    assert!(
        stderr.contains(&api.to_string()),
        "names the address tried:\n{out}"
    );
}
