//! The node's store as a user meets it: a store that was lost since the node last ran stops
//! `meshfed gateway` with advice, `--new-store` starts over on purpose, `init --force` moves the
//! old store aside. The built binary, on loopback, with ephemeral ports.

mod common;

use std::fs;

use common::{mesh, started};
use meshfed_testkit::process::{DEADLINE, poll};

/// A gateway that has run once, stopped again.
fn has_run(name: &str) -> meshfed_testkit::Mesh {
    let mut m = started(name);
    m.stop();
    m
}

#[test]
fn gateway_refuses_a_deleted_store_and_says_how_to_restore_or_start_over() {
    let mut m = has_run("plant-a");
    let store = m.dir().join("store/meshfed.db");
    fs::remove_file(&store).unwrap();
    let out = m.spawn_cli(&["gateway"]).finish(DEADLINE);
    let err = out.fails(1, &format!("the store {} is missing", store.display()));
    assert!(
        err.contains("restore the store file from a backup"),
        "{out}"
    );
    assert!(err.contains("meshfed gateway --new-store"), "{out}");
    assert!(!store.exists(), "no blank store was created:\n{out}");
}

#[test]
fn gateway_refuses_an_empty_store_file() {
    let mut m = has_run("plant-a");
    let store = m.dir().join("store/meshfed.db");
    fs::write(&store, b"").unwrap();
    let out = m.spawn_cli(&["gateway"]).finish(DEADLINE);
    out.fails(1, &format!("the store {} is empty", store.display()));
}

#[test]
fn new_store_starts_over_and_says_so() {
    let mut m = has_run("plant-a");
    let store = m.dir().join("store/meshfed.db");
    fs::write(&store, b"").unwrap();
    let gateway = m.spawn_cli(&["gateway", "--new-store"]);
    let stderr = poll("the gateway is ready", DEADLINE, || {
        if gateway.stdout_so_far().contains(" ready: ") {
            Ok(gateway.stderr_so_far())
        } else {
            Err(gateway.stderr_so_far())
        }
    });
    assert!(
        stderr.contains(&format!(
            "starting over with a new, empty store at {}; the previous store was moved to {}.replaced-",
            store.display(),
            store.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_new_node_starts_without_a_store() {
    let mut m = mesh("plant-a");
    assert!(!m.dir().join("store/meshfed.db").exists());
    m.start();
}

#[test]
fn init_force_moves_the_old_store_aside_and_the_new_identity_starts_empty() {
    let mut m = started("plant-a");
    let peer = started("supplier-b");
    common::federate(&m, &peer);
    m.stop();
    let store = m.dir().join("store/meshfed.db");
    let out = m.cli(&[
        "init",
        "--mesh",
        "plant-a",
        "--force",
        "--listen",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
    ]);
    let stdout = out.ok();
    assert!(
        stdout.contains("Replaced the mesh identity plant-a/gw1 (CA fingerprint SHA-384 "),
        "{out}"
    );
    let moved = format!("{}.replaced-", store.display());
    assert!(
        stdout.contains(&format!(
            "Moved the old store (its federations trust the old CA) to {moved}"
        )),
        "{out}"
    );
    assert!(
        stdout.contains("the new identity starts with an empty registry"),
        "{out}"
    );
    assert!(!store.exists(), "{out}");
    m.start();
    assert!(common::federations(&m).is_empty());
}
