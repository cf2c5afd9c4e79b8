//! `[[peers]]` in meshfed.toml: two meshes federate by configuration, without an invitation,
//! pinning each other's CA fingerprint; when both sides dial, one federation results. The built
//! binary, on loopback, with ephemeral ports.

#![expect(clippy::unwrap_used, reason = "a step that fails is the test failing")]

mod common;

use common::{federations, mesh, wait_for_status};
use meshfed_testkit::Mesh;
use meshfed_testkit::process::{DEADLINE, poll};
use meshfed_trust::TrustBundle;

/// SHA-384 of `m`'s mesh CA certificate, as `[[peers]] ca_fingerprint` takes it.
fn ca_fingerprint(m: &Mesh) -> String {
    let pem = std::fs::read_to_string(m.dir().join("ca/ca.crt")).unwrap();
    TrustBundle::from_pem(&pem).unwrap().cas()[0]
        .fingerprint()
        .to_string()
}

/// A `[[peers]]` entry for `peer`.
fn peer_entry(peer: &Mesh, address: Option<String>, dial: bool) -> String {
    let address = address.map_or(String::new(), |a| format!("address = \"{a}\"\n"));
    format!(
        "\n[[peers]]\nmesh = \"{}\"\n{address}ca_fingerprint = \"{}\"\ndial = {dial}\n",
        peer.name(),
        ca_fingerprint(peer)
    )
}

/// The one federation `m` lists, once it is active.
fn the_federation(m: &Mesh) -> serde_json::Value {
    poll(
        &format!("{} lists one active federation", m.name()),
        DEADLINE,
        || {
            let list = federations(m);
            match list.as_slice() {
                [one] if one["status"] == "active" => Ok(one.clone()),
                _ => Err(format!("{list:#?}")),
            }
        },
    )
}

#[test]
fn a_configured_peer_is_federated_without_an_invitation_and_stays_so_across_restarts() {
    let mut a = mesh("plant-a");
    let mut b = mesh("supplier-b");
    // B only accepts A; A dials B.
    b.append_config(&peer_entry(&a, None, false));
    b.start();
    b.keep_federation_address();
    a.append_config(&peer_entry(&b, Some(b.federation_addr().to_string()), true));
    a.start();

    let at_a = the_federation(&a);
    let at_b = the_federation(&b);
    assert_eq!(at_a["id"], at_b["id"], "{at_a:#}\n{at_b:#}");
    assert_eq!(at_a["peer"], "supplier-b");
    assert_eq!(at_b["peer"], "plant-a");
    let id = at_a["id"].as_str().unwrap().to_owned();
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

    // Restarts re-dial the stored federation; no second one is made.
    a.stop();
    b.stop();
    b.start();
    a.start();
    wait_for_status(&a, &id, "active");
    wait_for_status(&b, &id, "active");
    for m in [&a, &b] {
        let list = federations(m);
        assert_eq!(
            list.len(),
            1,
            "{} made a second federation: {list:#?}",
            m.name()
        );
    }
}

#[test]
fn when_both_sides_dial_the_smaller_mesh_id_dials_the_one_federation() {
    let mut a = mesh("plant-a");
    let mut b = mesh("supplier-b");
    // Their addresses first: each needs the other's.
    let mut addrs = Vec::new();
    for m in [&mut a, &mut b] {
        m.start();
        m.keep_federation_address();
        addrs.push(m.federation_addr().to_string());
        m.stop();
    }
    a.append_config(&peer_entry(&b, Some(addrs[1].clone()), true));
    b.append_config(&peer_entry(&a, Some(addrs[0].clone()), true));
    // A first: its dials fail until B is up, and B's first dial reaches A while A waits to
    // retry. Only the rule keeps B's dial from making the federation.
    a.start();
    a.wait_for_log(&["federating with a static peer failed", "peer=supplier-b"]);
    b.start();

    let at_a = the_federation(&a);
    let at_b = the_federation(&b);
    assert_eq!(at_a["id"], at_b["id"], "{at_a:#}\n{at_b:#}");
    assert_eq!(
        at_a["role"], "initiator",
        "plant-a < supplier-b dials: {at_a:#}"
    );
    assert_eq!(at_b["role"], "responder", "{at_b:#}");
    b.wait_for_log(&["federating with a static peer failed", "peer=plant-a"]);
}
