//! Federation through a broker, as a user runs it: gateways of meshes `plant-a` and
//! `cloud-c` each federate with broker mesh `hub-b`, then federate *with each other* through
//! it (`federation join TOKEN --via hub-b`), and a message crosses end to end. The broker
//! relays it without being able to read it: a marker in the payload appears nowhere in its
//! directory or log. Real processes on loopback, ephemeral ports.

#![expect(
    clippy::unwrap_used,
    reason = "end-to-end tests: a step that fails is the test failing"
)]

mod common;

use common::{federate, federations, http_get, metric, send, subscribe};
use meshfed_testkit::Mesh;
use meshfed_testkit::process::DEADLINE;

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
    federate(&c, &hub);

    // A mesh cannot send through the broker to a mesh it has no federation with.
    let out = a.cli(&["send", "--to", "cloud-c", "--topic", "t", "x"]);
    out.fails(1, "cloud-c");

    let token = common::invite(&c, "plant-a", &[]);
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

    let marker = "plaintext-marker-7f3a9c1e5d";
    let sub = subscribe(&mut c, &a, &["--topic", "line/#", "--count", "1"]);
    let id = send(&a, "cloud-c", "line/1", marker);
    let out = sub.finish(DEADLINE);
    let line = out.ok();
    assert!(line.contains(&id), "{out}");
    assert!(line.contains(marker), "{out}");
    let envelope: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        envelope["federation"]["source_mesh"]["id"], "plant-a",
        "{out}"
    );
    // The broker is a hop of the envelope's route.
    assert_eq!(
        envelope["federation"]["routing"]["path"],
        serde_json::json!(["plant-a", "hub-b", "cloud-c"]),
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
    let leaks = files_containing(hub.dir(), marker.as_bytes());
    assert!(
        leaks.is_empty(),
        "the broker's files hold the plaintext: {leaks:?}"
    );
    assert!(
        !hub.log().contains(marker),
        "the broker's log holds the plaintext"
    );
    drop(a);
}
