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

use meshfed_testkit::{TestPki, temp_dir};
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
    // The payload (ciphertext and tag) is the wire array's last element: its last byte is the file's.
    *bytes.last_mut().unwrap() ^= 0x01;
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
