//! The README's proof example, on messages that just crossed: `meshfed subscribe --proof` prints
//! each envelope in the export form, and `meshfed envelope inspect FILE --ca` checks it against
//! the *source* mesh's CAs (`plant-a/ca/ca.crt` and `plant-a/ca/issuing.crt` for a message
//! plant-a sent to supplier-b) — for
//! batch and per-message signatures, live and from a durable subscription across a restart.
//! Real `meshfed gateway` processes on ephemeral loopback ports.

#![expect(
    clippy::unwrap_used,
    reason = "end-to-end tests: a step that fails is the test failing"
)]

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{federate, send, started, subscribe, wait_for_status};
use meshfed_testkit::process::{DEADLINE, Outcome, poll};
use meshfed_testkit::{Mesh, temp_dir};
use serde_json::{Value, json};

const TOPIC: &str = "line-3/temperature";

/// A (`plant-a`, signing per `signatures`) joined B's (`supplier-b`) invitation; both running.
fn federated(signatures: &str) -> (Mesh, Mesh, String) {
    let mut a = common::mesh("plant-a");
    a.configure("delivery", "signatures", signatures);
    a.start();
    let b = started("supplier-b");
    b.keep_federation_address();
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    wait_for_status(&b, &id, "active");
    (a, b, id)
}

/// Mesh `m`'s CA certificates as the README hands them over: `cat ca/ca.crt ca/issuing.crt`
/// (envelopes carry only the signer's certificate, which the issuing CA issued).
fn ca_of(m: &Mesh) -> PathBuf {
    let ca = m.dir().join("ca");
    let text = ["ca.crt", "issuing.crt"]
        .map(|f| std::fs::read_to_string(ca.join(f)).unwrap())
        .concat();
    write(m.dir(), "source-ca.pem", &text)
}

/// `meshfed envelope inspect FILE --ca CA`, run from `m`'s side (the command needs no gateway).
fn inspect(m: &Mesh, file: &Path, ca: &Path) -> Outcome {
    m.cli(&[
        "envelope",
        "inspect",
        file.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ])
}

/// Writes `text` to `name` in `dir`; returns its path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Sends one message A → B and receives it on B with and without `--proof`; returns both lines
/// printed (export form, spec JSON) and the envelope id.
fn cross_one(a: &Mesh, b: &mut Mesh) -> (String, String, String) {
    let proven = subscribe(b, a, &["--topic", "line-3/#", "--proof", "--count", "1"]);
    let plain = subscribe(b, a, &["--topic", "line-3/#", "--count", "1"]);
    let id = send(a, "supplier-b", TOPIC, r#"{"celsius": 21.5}"#);
    let proven = proven.finish(DEADLINE);
    let plain = plain.finish(DEADLINE);
    (
        proven.ok().trim_end().to_owned(),
        plain.ok().trim_end().to_owned(),
        id,
    )
}

/// The README example on one message that crossed under `signatures`; then tampering.
fn readme_example_checks_a_message_that_just_crossed(signatures: &str, in_batch: bool) {
    let (a, mut b, _) = federated(signatures);
    let (exported, plain, id) = cross_one(&a, &mut b);
    let dir = temp_dir();

    // Without --proof: the spec JSON as before, which cannot be checked.
    let v: Value = serde_json::from_str(&plain).unwrap();
    assert!(v.get("proof").is_none(), "{plain}");
    let file = write(dir.path(), "plain.json", &plain);
    let out = inspect(&b, &file, &ca_of(&a));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("signature: not checkable"), "{out}");

    // With --proof: the export form, checked against the source mesh's CA.
    let v: Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(v["federation"]["id"], id.as_str(), "{exported}");
    assert_eq!(v["message"], json!({"celsius": 21.5}), "{exported}");
    assert_eq!(
        v["federation"]["security"].get("batch").is_some(),
        in_batch,
        "{exported}"
    );
    let msg = write(dir.path(), "msg.json", &exported);
    let out = inspect(&b, &msg, &ca_of(&a));
    let shown: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(shown["federation"]["id"], id.as_str(), "{out}");
    assert_eq!(shown["message"], json!({"celsius": 21.5}), "{out}");
    let signer = if in_batch {
        "), signed by "
    } else {
        "signed by "
    };
    assert!(
        out.stderr.starts_with("signature: valid — ")
            && out.stderr.contains(&format!("{signer}meshfed://plant-a/"))
            && out.stderr.contains("not the clear message shown"),
        "{out}"
    );
    assert_eq!(
        out.stderr.contains("signature: valid — batch of "),
        in_batch,
        "{out}"
    );

    // The receiving mesh's CA did not issue the signer's certificate.
    let out = inspect(&b, &msg, &ca_of(&b));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .contains("signature: INVALID — the signer's certificate is not trusted"),
        "{out}"
    );

    // One bit of the ciphertext in proof flipped.
    let mut tampered = v.clone();
    let mut cbor = B64.decode(v["proof"].as_str().unwrap()).unwrap();
    meshfed_testkit::envelope::flip_payload_bit(&mut cbor);
    tampered["proof"] = Value::from(B64.encode(cbor));
    let file = write(dir.path(), "tampered.json", &tampered.to_string());
    let out = inspect(&b, &file, &ca_of(&a));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.starts_with("signature: INVALID — "), "{out}");
    assert!(
        out.stderr
            .contains("payload does not match its signed SHA-384 digest"),
        "{out}"
    );

    // The JSON's header changed beside an intact proof.
    let mut tampered = v.clone();
    tampered["federation"]["policy"]["priority"] = Value::from(7);
    let file = write(dir.path(), "header.json", &tampered.to_string());
    inspect(&b, &file, &ca_of(&a)).fails(
        1,
        "holds two different envelopes: the JSON's federation.policy is not that of the \
         envelope in proof",
    );
}

#[test]
fn subscribe_proof_output_checks_valid_against_the_source_ca_with_batch_signatures() {
    readme_example_checks_a_message_that_just_crossed("batch", true);
}

#[test]
fn subscribe_proof_output_checks_valid_against_the_source_ca_with_message_signatures() {
    readme_example_checks_a_message_that_just_crossed("message", false);
}

#[test]
fn durable_subscription_with_proof_keeps_the_export_form_across_restarts() {
    let (a, mut b, id) = federated("batch");
    // Registered with --proof, then away.
    let mut first = b.spawn_cli(&[
        "subscribe",
        "--durable",
        "erp",
        "--topic",
        "line-3/#",
        "--proof",
    ]);
    poll("the durable subscriber is registered", DEADLINE, || {
        let err = first.stderr_so_far();
        if err.contains("subscribed at ") {
            return Ok(());
        }
        assert!(!first.has_exited(), "the subscriber exited: {err}");
        Err(err)
    });
    assert!(first.stderr_so_far().contains(", with proof)"));
    drop(first);
    // The form must come from the store: the gateway restarts before the message arrives.
    assert_eq!(b.stop().code(), Some(0));
    b.start();
    wait_for_status(&a, &id, "active");
    let out = a.cli(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        TOPIC,
        "--qos",
        "1",
        "--wait",
        "21.5",
    ]);
    let sent = out.ok().trim().to_owned();
    // And the journaled export form survives another restart.
    assert_eq!(b.stop().code(), Some(0));
    b.start();

    let sub = b.spawn_cli(&[
        "subscribe",
        "--durable",
        "erp",
        "--topic",
        "line-3/#",
        "--proof",
        "--count",
        "1",
    ]);
    let out = sub.finish(DEADLINE);
    let line = out.ok().trim_end();
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["federation"]["id"], sent.as_str(), "{line}");
    assert!(v["proof"].is_string(), "{line}");
    let dir = temp_dir();
    let msg = write(dir.path(), "msg.json", line);
    let out = inspect(&b, &msg, &ca_of(&a));
    out.ok();
    assert!(
        out.stderr.starts_with("signature: valid — batch of "),
        "{out}"
    );
}
