//! `meshfed federation revoke-node MESH/NODE`: a mesh revokes one of its gateways (a stolen
//! one) and its partner cuts that gateway off, across restarts of both. The built binary, on
//! loopback, with ephemeral ports.
//!
//! The scenario: plant-a's gateway gw1 joins supplier-b. A second gateway of plant-a, gw2, is
//! made from a copy of gw1's directory (same CAs, same store: a standby that takes the
//! federation over) and resumes the federation while gw1 is down. Then gw2 is "stolen": gw1 comes
//! back and revokes plant-a/gw2. supplier-b receives plant-a's signed list over gw1's link,
//! stores it, and from then on refuses every link gw2 opens — also after supplier-b restarts —
//! while gw1 keeps the federation.

mod common;

use common::{federate, mesh, wait_for_status};
use meshfed_testkit::Mesh;
use meshfed_testkit::process::{DEADLINE, poll};
use serde_json::Value;

/// `federation revocations --json`.
fn revocations(m: &Mesh) -> Value {
    let out = m.cli(&["federation", "revocations", "--json"]);
    serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[test]
fn a_revoked_gateway_is_refused_by_the_partner_and_stays_refused_across_restarts() {
    let mut b = mesh("supplier-b");
    b.start();
    b.keep_federation_address();
    let mut gw1 = mesh("plant-a");
    gw1.start();
    let id = federate(&gw1, &b);

    // gw2: plant-a's standby, from gw1's directory, takes the federation over.
    gw1.stop();
    let mut gw2 = gw1.copy_as("gw2");
    let mark_b = b.log_mark();
    gw2.start();
    b.wait_for_log_after(mark_b, &["federation link up", "gw2"]);
    wait_for_status(&b, &id, "active");

    // What revoke-node refuses, and says why.
    gw1.start();
    let out = gw1.cli(&["federation", "revoke-node", "supplier-b/b1"]);
    out.fails(2, "only mesh supplier-b can revoke its nodes");
    let out = gw1.cli(&["federation", "revoke-node", "plant-a/gw1"]);
    out.fails(2, "is this gateway itself");
    let out = gw1.cli(&["federation", "revoke-node", "gw2"]);
    out.fails(2, "expected MESH/NODE");

    // gw1 revokes gw2: the list goes to supplier-b over gw1's link (now, or as gw1 next takes
    // the federation back from gw2).
    let mark_b = b.log_mark();
    let mark_gw2 = gw2.log_mark();
    let out = gw1.cli(&["federation", "revoke-node", "plant-a/gw2"]);
    assert_eq!(
        out.ok().trim(),
        "revoked plant-a/gw2: mesh plant-a revocation list version 1",
        "{out}"
    );
    // Revoking it again changes nothing: the same version.
    let out = gw1.cli(&["federation", "revoke-node", "plant-a/gw2"]);
    assert!(out.ok().ends_with("version 1\n"), "{out}");
    let own = revocations(&gw1);
    assert_eq!(own["own"]["version"], 1, "{own:#}");
    assert_eq!(own["own"]["nodes"][0]["node"], "gw2", "{own:#}");

    let received = poll("supplier-b stores plant-a's list", DEADLINE, || {
        let v = revocations(&b);
        match v["partners"].as_array().map(Vec::as_slice) {
            Some([list]) if list["version"] == 1 => Ok(list.clone()),
            _ => Err(format!("{v:#}")),
        }
    });
    assert_eq!(received["mesh"], "plant-a");
    assert_eq!(received["nodes"][0]["node"], "gw2");
    let table = b.cli(&["federation", "revocations"]);
    let text = table.ok();
    assert!(
        text.starts_with("plant-a (partner) version 1 issued "),
        "{table}"
    );
    assert!(text.contains("\n  node   plant-a/gw2  revoked "), "{table}");
    gw1.wait_for_log_after(0, &["the peer stored this mesh's revocation list"]);

    // gw2 is cut off: supplier-b refuses its links, naming the revocation; gw2 sees why.
    b.wait_for_log_after(
        mark_b,
        &[
            "plant-a/gw2",
            "is revoked by mesh plant-a's revocation list version 1",
        ],
    );
    gw2.wait_for_log_after(mark_gw2, &["re-dial failed", "is revoked"]);

    // gw1 keeps the federation and messages flow through it.
    let link = poll("gw1 holds the federation at supplier-b", DEADLINE, || {
        let out = gw1.cli(&[
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
        if out.code == Some(0) && out.stderr.contains(": acknowledged") {
            Ok(out)
        } else {
            Err(out.to_string())
        }
    });
    assert!(link.stderr.contains("acknowledged"), "{link}");

    // Across a restart of supplier-b the list holds: gw2 is refused again. (gw2 restarts too,
    // so that it dials at once rather than after its grown backoff.)
    gw2.stop();
    b.stop();
    let mark_b = b.log_mark();
    b.start();
    gw2.start();
    let after = revocations(&b);
    assert_eq!(after["partners"][0]["version"], 1, "{after:#}");
    b.wait_for_log_after(mark_b, &["plant-a/gw2", "is revoked"]);
    wait_for_status(&b, &id, "active");

    // And across a restart of gw1, its own list is still there to send.
    gw1.stop();
    gw1.start();
    assert_eq!(revocations(&gw1)["own"]["version"], 1);
    gw2.stop();
}

/// Seconds since midnight of a log line's leading RFC 3339 timestamp (`…T19:21:57.933354Z`).
fn log_time(line: &str) -> f64 {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let time = stamp
        .split_once('T')
        .map(|(_, t)| t.trim_end_matches('Z'))
        .unwrap_or_else(|| panic!("no timestamp on {line:?}"));
    let parts: Vec<f64> = time
        .split(':')
        .map(|p| {
            p.parse()
                .unwrap_or_else(|e| panic!("{p:?} in {line:?}: {e}"))
        })
        .collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

#[test]
fn a_live_link_whose_certificate_a_new_list_revokes_is_closed_within_a_heartbeat() {
    // plant-a's list is signed by the gateway that made it and holds wherever it travels: here
    // gw1 revokes plant-a/gw2 while supplier-b is down, and the copy of gw1's directory that
    // runs as gw2 carries that list (it is plant-a's current one) to supplier-b itself, on the
    // very link that gw2's certificate opened.
    let mut b = mesh("supplier-b");
    b.start();
    b.keep_federation_address();
    let mut gw1 = mesh("plant-a");
    gw1.start();
    let id = federate(&gw1, &b);
    b.stop();
    let out = gw1.cli(&["federation", "revoke-node", "plant-a/gw2"]);
    assert!(out.ok().contains("version 1"), "{out}");
    gw1.stop();
    let mut gw2 = gw1.copy_as("gw2");

    let mark_b = b.log_mark();
    b.start();
    gw2.start();
    let up = b.wait_for_log_after(mark_b, &["federation link up", "peer=plant-a/gw2"]);
    let stored = b.wait_for_log_after(
        mark_b,
        &["stored the peer mesh's revocation list", "version=1"],
    );
    let closing = b.wait_for_log_after(
        mark_b,
        &[
            "closing a link whose peer certificate is revoked",
            "peer=plant-a/gw2",
            "the node is revoked",
        ],
    );
    let down = b.wait_for_log_after(
        mark_b,
        &["federation link down", "peer=plant-a/gw2", "untrusted_peer"],
    );
    // One heartbeat interval is FAST_HEARTBEAT (250 ms): the link closes as the list is
    // stored, not when a heartbeat finds it silent.
    let took = log_time(&down) - log_time(&stored);
    assert!(
        (0.0..0.25).contains(&took),
        "closed {took}s after the list was stored:\n{up}\n{stored}\n{closing}\n{down}"
    );
    // gw2 is told why, and every link it opens from now on is refused.
    gw2.wait_for_log_after(0, &["the peer reported an error", "is revoked"]);
    b.wait_for_log_after(mark_b, &["refused", "plant-a/gw2", "is revoked"]);
    let v = revocations(&b);
    assert_eq!(v["partners"][0]["nodes"][0]["node"], "gw2", "{v:#}");
    let federation = common::show(&b, &id);
    assert_ne!(federation["status"], "active", "{federation:#}");
    gw2.stop();
}
