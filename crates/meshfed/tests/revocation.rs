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

    // Across a restart of supplier-b the list holds: gw2 is refused again.
    b.stop();
    let mark_b = b.log_mark();
    b.start();
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
