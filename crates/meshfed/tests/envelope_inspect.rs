//! `meshfed envelope inspect`, run as the built binary: the spec JSON on stdout, the signature
//! verdict on stderr, and the exit status for each kind of envelope and CA file.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a step that fails is the test failing"
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use meshfed_proto::batch::{SignedBatch, UnsignedEnvelope};
use meshfed_proto::crypto::{ContentSecret, KeyEpoch};
use meshfed_proto::envelope::Hop;
use meshfed_testkit::{TestNode, TestPki, temp_dir};
use serde_json::Value;

const TOPIC: &str = "line-3/temperature";

/// What a run of the command left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().expect("meshfed exited, not killed"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }
}

fn meshfed(args: &[&str]) -> Run {
    Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .args(args)
        .env_remove("MESHFED_DIR")
        .env_remove("MESHFED_LOG")
        .output()
        .unwrap()
        .into()
}

fn inspect(envelope: &Path, ca: Option<&Path>) -> Run {
    let mut args = vec!["envelope", "inspect", path_str(envelope)];
    if let Some(ca) = ca {
        args.extend(["--ca", path_str(ca)]);
    }
    meshfed(&args)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

/// One mesh's CA and a sealed envelope from its node gw1, both as files.
struct Fixture {
    pki: TestPki,
    dir: tempfile::TempDir,
    ca: PathBuf,
    envelope: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let pki = TestPki::new("plant-a");
        let dir = temp_dir();
        let ca = write(dir.path(), "plant-a-ca.pem", pki.ca().cert_pem());
        let envelope = pki
            .node("gw1")
            .sealed_envelope("supplier-b", TOPIC, br#"{"celsius":21.5}"#)
            .encode();
        Self {
            pki,
            dir,
            ca,
            envelope,
        }
    }

    fn envelope_file(&self, bytes: &[u8]) -> PathBuf {
        write(self.dir.path(), "envelope.cbor", bytes)
    }
}

#[test]
fn valid_envelope_with_its_mesh_ca_prints_spec_json_and_says_valid() {
    let fx = Fixture::new();
    let run = inspect(&fx.envelope_file(&fx.envelope), Some(&fx.ca));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json = run.json();
    let fed = &json["federation"];
    assert_eq!(fed["version"], "1.0");
    assert_eq!(fed["source_mesh"]["id"], "plant-a");
    assert_eq!(fed["source_mesh"]["gateway_id"], "gw1");
    assert_eq!(fed["destination_mesh"]["id"], "supplier-b");
    assert_eq!(fed["metadata"]["topic"], TOPIC);
    assert!(
        fed["security"]["signature"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{json:#}"
    );
    assert_eq!(fed["security"]["encryption"]["algorithm"], "AES-256-GCM");
    assert_eq!(
        json["message"],
        Value::Null,
        "a sealed payload stays sealed"
    );
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "signature: valid — signed by meshfed://plant-a/gw1, certificate issued by the CA {}",
            fx.pki.ca().fingerprint()
        )
    );
}

#[test]
fn clear_envelope_shows_its_message() {
    let fx = Fixture::new();
    let clear = fx
        .pki
        .node("gw1")
        .clear_envelope("supplier-b", TOPIC, br#"{"celsius":21.5}"#)
        .encode();
    let run = inspect(&fx.envelope_file(&clear), Some(&fx.ca));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json = run.json();
    assert_eq!(json["message"]["celsius"], 21.5);
    assert_eq!(json["federation"]["security"]["encryption"], Value::Null);
    assert!(run.stderr.contains("signature: valid"), "{}", run.stderr);
}

#[test]
fn envelope_checked_against_another_meshs_ca_is_invalid() {
    let fx = Fixture::new();
    let other = TestPki::new("plant-b");
    let other_ca = write(fx.dir.path(), "plant-b-ca.pem", other.ca().cert_pem());
    let run = inspect(&fx.envelope_file(&fx.envelope), Some(&other_ca));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("signature: INVALID — "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("not issued by a CA in the trust bundle of mesh plant-b"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.json()["federation"]["source_mesh"]["id"],
        "plant-a",
        "the envelope is still shown"
    );
}

#[test]
fn envelope_with_an_expired_signer_certificate_is_invalid() {
    let fx = Fixture::new();
    let stale = fx
        .pki
        .expired_node("gw1")
        .sealed_envelope("supplier-b", TOPIC, b"{}")
        .encode();
    let run = inspect(&fx.envelope_file(&stale), Some(&fx.ca));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("INVALID") && run.stderr.contains("certificate expired at"),
        "{}",
        run.stderr
    );
}

#[test]
fn flipped_payload_byte_is_invalid_as_altered_payload() {
    let fx = Fixture::new();
    let mut bytes = fx.envelope.clone();
    meshfed_testkit::envelope::flip_payload_bit(&mut bytes);
    let run = inspect(&fx.envelope_file(&bytes), Some(&fx.ca));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("signature: INVALID"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("payload does not match its signed SHA-384 digest")
            && run.stderr.contains("altered"),
        "{}",
        run.stderr
    );
}

#[test]
fn flipped_header_byte_is_an_invalid_signature() {
    let fx = Fixture::new();
    let mut bytes = fx.envelope.clone();
    // One letter of the topic: the header still decodes, but not to the bytes that were signed.
    let at = find(&bytes, b"temperature");
    bytes[at] = b'T';
    let run = inspect(&fx.envelope_file(&bytes), Some(&fx.ca));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.json()["federation"]["metadata"]["topic"],
        "line-3/Temperature"
    );
    assert!(
        run.stderr
            .starts_with("signature: INVALID — envelope signature does not verify"),
        "{}",
        run.stderr
    );
}

#[test]
fn garbage_is_not_a_meshfed_envelope() {
    let fx = Fixture::new();
    let garbage = fx.envelope_file(b"\x00\x17 not cbor at all \xff\xfe");
    let run = inspect(&garbage, Some(&fx.ca));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "", "nothing to show");
    assert!(
        run.stderr.starts_with(&format!(
            "error: {} is not a meshfed envelope: envelope frame is malformed",
            garbage.display()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn truncated_envelope_is_not_a_meshfed_envelope() {
    let fx = Fixture::new();
    let cut = fx.envelope_file(&fx.envelope[..fx.envelope.len() / 2]);
    let run = inspect(&cut, None);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("is not a meshfed envelope"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_ca_file_is_a_usage_error_naming_it() {
    let fx = Fixture::new();
    let missing = fx.dir.path().join("no-such-ca.pem");
    let run = inspect(&fx.envelope_file(&fx.envelope), Some(&missing));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!(
            "error: cannot read CA certificate {}",
            missing.display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn ca_file_that_is_not_pem_is_a_usage_error_naming_it() {
    let fx = Fixture::new();
    let not_pem = write(fx.dir.path(), "ca.pem", "this is not a certificate\n");
    let run = inspect(&fx.envelope_file(&fx.envelope), Some(&not_pem));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "error: {} holds no PEM CERTIFICATE block, so it is not a mesh CA certificate",
            not_pem.display()
        )
    );
}

#[test]
fn ca_file_with_a_broken_certificate_is_a_usage_error_naming_it() {
    let fx = Fixture::new();
    let broken = write(
        fx.dir.path(),
        "ca.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let run = inspect(&fx.envelope_file(&fx.envelope), Some(&broken));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!(
            "error: {} is not a usable mesh CA certificate\n  caused by: ",
            broken.display()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn node_certificate_given_as_ca_is_a_usage_error() {
    let fx = Fixture::new();
    let node_cert = write(fx.dir.path(), "gw1.pem", fx.pki.node("gw1").cert_pem());
    let run = inspect(&fx.envelope_file(&fx.envelope), Some(&node_cert));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("is not a usable mesh CA certificate")
            && run.stderr.contains("not a CA certificate"),
        "{}",
        run.stderr
    );
}

#[test]
fn without_ca_the_signature_is_not_checked() {
    let fx = Fixture::new();
    let run = inspect(&fx.envelope_file(&fx.envelope), None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["federation"]["source_mesh"]["id"], "plant-a");
    assert_eq!(
        run.stderr.trim_end(),
        "signature: not checked (pass --ca CERT to verify)"
    );
}

#[test]
fn dash_reads_the_envelope_from_stdin() {
    let fx = Fixture::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .args(["envelope", "inspect", "-", "--ca", path_str(&fx.ca)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&fx.envelope).unwrap();
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("signature: valid"), "{}", run.stderr);
    assert_eq!(run.json()["federation"]["metadata"]["topic"], TOPIC);
}

#[test]
fn json_flag_prints_the_envelope_on_one_line() {
    let fx = Fixture::new();
    let file = fx.envelope_file(&fx.envelope);
    let run = meshfed(&["envelope", "inspect", path_str(&file), "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert_eq!(run.json()["federation"]["source_mesh"]["id"], "plant-a");
}

/// A batch of `n` envelopes from `node` on [`TOPIC`], sealed or clear, signed with one signature.
fn batch(node: &TestNode, n: u8, sealed: bool) -> SignedBatch {
    let mut sealer = ContentSecret::derive(b"inspect test secret", b"fed_test")
        .sealer(&"plant-a".parse().unwrap(), KeyEpoch::random().unwrap())
        .unwrap();
    let envelopes = (0..n)
        .map(|i| {
            let header = node.envelope_header("supplier-b", TOPIC);
            let hop = Hop::origin(header.source.mesh.clone(), Hop::DEFAULT_TTL);
            let payload = format!(r#"{{"celsius":{i}}}"#);
            if sealed {
                UnsignedEnvelope::seal(header, hop, payload.as_bytes(), &mut sealer).unwrap()
            } else {
                UnsignedEnvelope::clear(header, hop, payload.into_bytes())
            }
        })
        .collect();
    SignedBatch::sign(envelopes, &node.key).unwrap()
}

/// Envelope `index` of a clear batch of `n` from gw1, as the spec JSON a gateway delivers.
fn batch_member_json(fx: &Fixture, n: u8, index: u32) -> Value {
    let proven = batch(&fx.pki.node("gw1"), n, false).proof(index).unwrap();
    let message = proven.envelope().payload().to_vec();
    proven.to_envelope(Some(message)).to_json()
}

fn inspect_json(fx: &Fixture, json: &Value) -> Run {
    let file = write(fx.dir.path(), "envelope.json", json.to_string());
    inspect(&file, Some(&fx.ca))
}

/// A change made to an envelope's JSON.
type Edit = fn(&mut Value);

fn b64_flip(v: &mut Value, at: usize) {
    let mut bytes = B64.decode(v.as_str().unwrap()).unwrap();
    bytes[at] ^= 1;
    *v = Value::String(B64.encode(bytes));
}

#[test]
fn batch_signed_envelope_json_is_valid_naming_its_batch_and_leaf() {
    let fx = Fixture::new();
    let json = batch_member_json(&fx, 3, 1);
    let run = inspect_json(&fx, &json);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "signature: valid — batch of 3 (leaf 1), signed by meshfed://plant-a/gw1, certificate \
             issued by the CA {}",
            fx.pki.ca().fingerprint()
        )
    );
    let shown = run.json();
    assert_eq!(shown, json, "the JSON is shown as read");
    let batch = &shown["federation"]["security"]["batch"];
    assert_eq!(
        (batch["count"].clone(), batch["index"].clone()),
        (3.into(), 1.into())
    );
    assert_eq!(shown["message"]["celsius"], 1);
}

#[test]
fn tampered_batch_signed_envelope_json_is_invalid_naming_what_failed() {
    let fx = Fixture::new();
    let json = batch_member_json(&fx, 5, 2);
    let proof_invalid = "signature: INVALID — inclusion proof of envelope";
    let edits: [(&str, Edit, &str); 5] = [
        (
            "proof",
            |j| b64_flip(&mut j["federation"]["security"]["batch"]["proof"], 50),
            proof_invalid,
        ),
        (
            "root",
            |j| b64_flip(&mut j["federation"]["security"]["batch"]["root"], 0),
            proof_invalid,
        ),
        (
            "index",
            |j| j["federation"]["security"]["batch"]["index"] = 3.into(),
            proof_invalid,
        ),
        (
            "payload",
            |j| j["message"]["celsius"] = 99.into(),
            proof_invalid,
        ),
        (
            "signature",
            |j| b64_flip(&mut j["federation"]["security"]["signature"], 30),
            "signature: INVALID — batch signature does not verify over its root and count",
        ),
    ];
    for (what, edit, expect) in edits {
        let mut bad = json.clone();
        edit(&mut bad);
        let run = inspect_json(&fx, &bad);
        assert_eq!(run.code, 1, "{what}: {}", run.stderr);
        assert!(run.stderr.starts_with(expect), "{what}: {}", run.stderr);
        if expect == proof_invalid {
            assert!(
                run.stderr
                    .contains("does not lead to the batch's signed root"),
                "{what}: {}",
                run.stderr
            );
        }
        assert_eq!(run.json(), bad, "{what}: the envelope is still shown");
    }
}

#[test]
fn batch_signed_envelope_json_with_a_malformed_batch_is_not_an_envelope() {
    let fx = Fixture::new();
    let mut json = batch_member_json(&fx, 4, 0);
    json["federation"]["security"]["batch"]["index"] = 4.into();
    let run = inspect_json(&fx, &json);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains(
            "is not a meshfed envelope: envelope JSON field federation.security.batch.index: 4 \
             is not below the count 4"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn proven_envelope_split_from_a_sealed_batch_is_valid() {
    let fx = Fixture::new();
    let proven = batch(&fx.pki.node("gw1"), 4, true).proof(3).unwrap();
    let run = inspect(&fx.envelope_file(&proven.encode()), Some(&fx.ca));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("signature: valid — batch of 4 (leaf 3), signed by meshfed://plant-a/gw1"),
        "{}",
        run.stderr
    );
    let json = run.json();
    assert_eq!(json["federation"]["security"]["batch"]["index"], 3);
    assert_eq!(
        json["message"],
        Value::Null,
        "a sealed payload stays sealed"
    );
}

#[test]
fn proven_envelope_with_a_flipped_payload_byte_is_invalid_as_altered_payload() {
    let fx = Fixture::new();
    let mut bytes = batch(&fx.pki.node("gw1"), 2, true)
        .proof(0)
        .unwrap()
        .encode();
    meshfed_testkit::envelope::flip_payload_bit(&mut bytes);
    let run = inspect(&fx.envelope_file(&bytes), Some(&fx.ca));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(
            "signature: INVALID — envelope 0 of the batch: payload does not match its signed \
             SHA-384 digest"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn batch_signed_json_of_a_sealed_payload_cannot_be_checked() {
    let fx = Fixture::new();
    let proven = batch(&fx.pki.node("gw1"), 2, true).proof(1).unwrap();
    // As a gateway delivers it: the payload opened, its ciphertext gone.
    let json = proven
        .to_envelope(Some(br#"{"celsius":1}"#.to_vec()))
        .to_json();
    let run = inspect_json(&fx, &json);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("signature: not checkable — the payload is encrypted")
            && run
                .stderr
                .contains("inspect its export form (`meshfed subscribe --proof`)"),
        "{}",
        run.stderr
    );
}

#[test]
fn envelope_signed_alone_as_json_is_valid_without_a_batch() {
    let fx = Fixture::new();
    let wire = fx
        .pki
        .node("gw1")
        .clear_envelope("supplier-b", TOPIC, br#"{"celsius":21.5}"#);
    let json = wire
        .to_envelope(Some(br#"{"celsius":21.5}"#.to_vec()))
        .to_json();
    assert!(
        json["federation"]["security"].get("batch").is_none(),
        "{json:#}"
    );
    let run = inspect_json(&fx, &json);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("signature: valid — signed by meshfed://plant-a/gw1"),
        "{}",
        run.stderr
    );
}

/// Envelope `index` of a sealed batch of `n` from gw1 in the export form, as a gateway gives it
/// to a subscriber with `proof=required`: the JSON with the opened message, and `proof`.
fn exported_member(fx: &Fixture, n: u8, index: u32) -> Value {
    let proven = batch(&fx.pki.node("gw1"), n, true).proof(index).unwrap();
    let opened = format!(r#"{{"celsius":{index}}}"#).into_bytes();
    let spec = proven.to_envelope(Some(opened)).to_json_string();
    let text = meshfed_proto::envelope::export::export_json(&spec, &proven.encode()).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn export_form_of_a_sealed_batch_member_is_valid_and_shows_the_opened_message() {
    let fx = Fixture::new();
    let run = inspect_json(&fx, &exported_member(&fx, 3, 1));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "signature: valid — batch of 3 (leaf 1), signed by meshfed://plant-a/gw1, \
             certificate issued by the CA {}; it covers the ciphertext in proof (its SHA-384 \
             digest is signed), not the clear message shown, which the receiving gateway \
             decrypted",
            fx.pki.ca().fingerprint()
        )
    );
    let json = run.json();
    assert_eq!(json["message"], serde_json::json!({"celsius": 1}));
    assert!(
        json.get("proof").is_none(),
        "stdout is the spec JSON:\n{json:#}"
    );
}

#[test]
fn export_form_with_a_flipped_ciphertext_byte_is_invalid() {
    let fx = Fixture::new();
    let mut json = exported_member(&fx, 2, 0);
    let mut cbor = B64.decode(json["proof"].as_str().unwrap()).unwrap();
    meshfed_testkit::envelope::flip_payload_bit(&mut cbor);
    json["proof"] = Value::String(B64.encode(cbor));
    let run = inspect_json(&fx, &json);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim_end(),
        "signature: INVALID — envelope 0 of the batch: payload does not match its signed SHA-384 \
         digest (the payload, ciphertext or tag was altered)"
    );
}

#[test]
fn export_form_whose_json_header_was_changed_is_refused_as_two_envelopes() {
    let fx = Fixture::new();
    let mut json = exported_member(&fx, 2, 0);
    json["federation"]["metadata"]["topic"] = Value::from("line-9/pressure");
    let run = inspect_json(&fx, &json);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains(
            "envelope.json holds two different envelopes: the JSON's federation.metadata is not \
             that of the envelope in proof"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn export_form_with_a_proof_that_is_not_base64_is_not_an_envelope() {
    let fx = Fixture::new();
    let mut json = exported_member(&fx, 1, 0);
    json["proof"] = Value::from("%%%");
    let run = inspect_json(&fx, &json);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "envelope.json is not a meshfed envelope: envelope JSON member proof: is not \
             standard base64"
        ),
        "{}",
        run.stderr
    );
}
