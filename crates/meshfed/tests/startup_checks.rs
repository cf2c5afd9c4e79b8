//! What `meshfed gateway` checks as it starts, as a user sees it: each cause of a failure shown
//! once, a role it cannot run refused as a configuration error, private keys others can read
//! warned about. The built binary, on loopback, with ephemeral ports.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use common::mesh;
use meshfed_testkit::process::DEADLINE;

#[test]
fn a_missing_ca_certificate_is_reported_with_its_cause_once() {
    let mut m = mesh("plant-a");
    let ca = m.dir().join("ca/ca.crt");
    fs::remove_file(&ca).unwrap();
    let out = m.spawn_cli(&["gateway"]).finish(DEADLINE);
    let err = out.fails(
        2,
        &format!("error: cannot read mesh CA certificate {}", ca.display()),
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{out}");
}

#[test]
fn a_store_that_cannot_be_opened_is_named_once() {
    let mut m = mesh("plant-a");
    let store = m.dir().join("store/meshfed.db");
    // A directory where the database file should be: SQLite cannot open it.
    fs::create_dir_all(&store).unwrap();
    let out = m.spawn_cli(&["gateway"]).finish(DEADLINE);
    let err = out.fails(
        1,
        &format!("error: cannot open the store at {}", store.display()),
    );
    assert_eq!(err.matches("cannot open the store").count(), 1, "{out}");
}

#[test]
fn each_role_runs_only_its_own_directory() {
    let mut m = mesh("plant-a");
    let out = m.spawn_cli(&["broker"]).finish(DEADLINE);
    out.fails(
        2,
        "meshfed.toml sets role = \"gateway\": this is a gateway's node directory, and `meshfed broker` does not run it; run it with `meshfed gateway`",
    );
    m.configure("node", "role", "broker");
    let out = m.spawn_cli(&["gateway"]).finish(DEADLINE);
    out.fails(
        2,
        "meshfed.toml sets role = \"broker\": this is a broker's node directory, and `meshfed gateway` does not run it; run it with `meshfed broker`",
    );
}

#[test]
fn keys_others_can_read_are_warned_about() {
    let mut m = mesh("plant-a");
    let ca_key = m.dir().join("ca/ca.key");
    let node_key = m.dir().join("node/node.key");
    for key in [&ca_key, &node_key] {
        fs::set_permissions(key, fs::Permissions::from_mode(0o644)).unwrap();
    }
    m.start();
    let log = m.log();
    for (what, key) in [("mesh CA key", &ca_key), ("node key", &node_key)] {
        let key = key.display();
        assert!(
            log.contains(&format!(
                "the {what} {key} can be read by other users (mode 0644); restrict it: chmod 600 {key}"
            )),
            "{log}"
        );
    }
}

#[test]
fn keys_only_their_owner_can_read_are_not_warned_about() {
    let mut m = mesh("plant-a");
    m.start();
    assert!(
        !m.log().contains("can be read by other users"),
        "{}",
        m.log()
    );
}

#[test]
fn a_node_key_whose_certificate_was_not_written_gets_one_at_start() {
    // As if the gateway stopped between writing a rotated key and its certificate.
    let mut m = mesh("plant-a");
    let key = meshfed_proto::crypto::SigningKey::generate().unwrap();
    let pem = meshfed_trust::key_to_pkcs8_pem(&key).unwrap();
    fs::write(m.dir().join("node/node.key"), pem).unwrap();
    m.start();
    m.wait_for_log(&["the node certificate is not for the node key"]);
    let cert = fs::read_to_string(m.dir().join("node/node.crt")).unwrap();
    let der = meshfed_trust::cert::cert_der_from_pem(&cert).unwrap();
    let info = meshfed_trust::inspect_node_cert(&der).unwrap();
    assert_eq!(info.public_key, meshfed_trust::P384PublicKey::of(&key));
    assert!(m.cli(&["federation", "list"]).code == Some(0));
}
