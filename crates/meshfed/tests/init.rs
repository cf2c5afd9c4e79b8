//! `meshfed init`, run as a user would: the built binary in a temporary directory.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a step that fails is the test failing"
)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use meshfed_testkit::temp_dir;
use meshfed_trust::{KeyPurpose, TrustBundle, verify_node_cert};
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

const SECP384R1: &str = "1.3.132.0.34";

/// The binary with a clean environment for the variables it reads.
fn meshfed() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshfed"));
    cmd.env_remove("MESHFED_DIR").env_remove("MESHFED_LOG");
    cmd
}

fn run(args: &[&str]) -> Output {
    meshfed().args(args).output().unwrap()
}

fn init(dir: &Path, extra: &[&str]) -> Output {
    let dir = dir.to_str().unwrap();
    let mut args = vec!["init", "--dir", dir];
    args.extend_from_slice(extra);
    run(&args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}, stderr:\n{}",
        out.status,
        stderr(out)
    );
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn cert_der(path: &Path) -> Vec<u8> {
    let block = pem::parse(fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(block.tag(), "CERTIFICATE");
    block.into_contents()
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["", "ca", "node"] {
        for entry in fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                out.push((path.clone(), fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn init_writes_the_identity_and_summarises_it() {
    let tmp = temp_dir();
    let dir = tmp.path().join("node");
    let out = init(&dir, &["--mesh", "plant-a", "--node", "gw1"]);
    assert_ok(&out);
    for rel in [
        "ca/ca.crt",
        "ca/ca.key",
        "ca/issuing.crt",
        "ca/issuing.key",
        "node/node.crt",
        "node/node.key",
        "tokens/issuer.key",
        "admin.token",
        "meshfed.toml",
    ] {
        assert!(dir.join(rel).is_file(), "{rel} missing");
    }
    let summary = stdout(&out);
    assert!(summary.contains("mesh:              plant-a"), "{summary}");
    assert!(summary.contains("meshfed://plant-a/gw1"), "{summary}");
    let bundle =
        TrustBundle::from_pem(&fs::read_to_string(dir.join("ca/ca.crt")).unwrap()).unwrap();
    let fingerprint = bundle.cas()[0].fingerprint().to_string();
    assert!(
        summary.contains(&format!("CA fingerprint:    SHA-384 {fingerprint}")),
        "{summary}"
    );
    assert!(summary.contains("node cert expires: "), "{summary}");
    assert!(
        summary.contains(&dir.join("ca/ca.key").display().to_string()),
        "{summary}"
    );
}

#[test]
fn keys_and_token_are_mode_0600() {
    let tmp = temp_dir();
    let dir = tmp.path().join("node");
    assert_ok(&init(&dir, &["--mesh", "plant-a"]));
    for rel in [
        "ca/ca.key",
        "ca/issuing.key",
        "node/node.key",
        "tokens/issuer.key",
        "admin.token",
    ] {
        assert_eq!(mode(&dir.join(rel)), 0o600, "{rel}");
    }
    let token = fs::read_to_string(dir.join("admin.token")).unwrap();
    assert_eq!(token.trim_end().len(), 64, "256 bits as hex: {token:?}");
}

#[test]
fn rerun_refuses_and_leaves_every_file_byte_identical() {
    let tmp = temp_dir();
    let dir = tmp.path().join("node");
    assert_ok(&init(&dir, &["--mesh", "plant-a"]));
    let before = files(&dir);
    let out = init(&dir, &["--mesh", "plant-b"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("meshfed.toml already exists"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(files(&dir), before);
}

#[test]
fn force_replaces_the_identity() {
    let tmp = temp_dir();
    let dir = tmp.path().join("node");
    assert_ok(&init(&dir, &["--mesh", "plant-a"]));
    let old_ca = fs::read(dir.join("ca/ca.crt")).unwrap();
    let out = init(&dir, &["--mesh", "plant-b", "--node", "gw2", "--force"]);
    assert_ok(&out);
    assert_ne!(fs::read(dir.join("ca/ca.crt")).unwrap(), old_ca);
    assert!(stdout(&out).contains("meshfed://plant-b/gw2"));
    let config = fs::read_to_string(dir.join("meshfed.toml")).unwrap();
    assert!(config.contains("mesh = \"plant-b\""), "{config}");
    assert_eq!(mode(&dir.join("ca/ca.key")), 0o600);
}

#[test]
fn bad_values_exit_2_naming_the_value_and_the_rule() {
    let tmp = temp_dir();
    let dir = tmp.path().join("node");
    let cases: [(&[&str], &str, &str); 6] = [
        (
            &["--mesh", "Plant_A"],
            "'Plant_A'",
            "[a-z0-9][a-z0-9-]{0,62}",
        ),
        (
            &["--mesh", "m", "--node=-gw"],
            "'-gw'",
            "not starting with '-'",
        ),
        (
            &["--mesh", "m", "--listen", "localhost:7443"],
            "'localhost:7443'",
            "socket address",
        ),
        (
            &["--mesh", "m", "--api", "127.0.0.1"],
            "'127.0.0.1'",
            "socket address",
        ),
        (
            &["--mesh", "m", "--node-cert-validity", "400days"],
            "'400days'",
            "must be from 1s to 365 days",
        ),
        (
            &["--mesh", "m", "--node-cert-validity", "soon"],
            "'soon'",
            "--node-cert-validity",
        ),
    ];
    for (args, value, rule) in cases {
        let out = init(&dir, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error:"), "{err}");
        assert!(err.contains(value), "{args:?}: {err}");
        assert!(err.contains(rule), "{args:?}: {err}");
        assert!(!dir.exists(), "nothing is written for bad input");
    }
}

#[test]
fn node_cert_validity_sets_the_first_certificate_and_the_configuration() {
    let tmp = temp_dir();
    let dir = tmp.path().join("node");
    assert_ok(&init(
        &dir,
        &["--mesh", "plant-a", "--node-cert-validity", "90s"],
    ));
    let der = cert_der(&dir.join("node/node.crt"));
    let (_, node) = x509_parser::parse_x509_certificate(&der).unwrap();
    let lifetime = node.validity().not_after.timestamp() - node.validity().not_before.timestamp();
    // Issued with a small allowance for clock skew before now.
    assert!((90..=90 + 300).contains(&lifetime), "{lifetime} s");
    let config = std::fs::read_to_string(dir.join("meshfed.toml")).unwrap();
    assert!(config.contains("node_cert_validity = \"90s\""), "{config}");
}

#[test]
fn certificates_are_p384_with_the_meshfed_names_and_usages() {
    let tmp = temp_dir();
    let dir = tmp.path().join("node");
    assert_ok(&init(&dir, &["--mesh", "plant-a", "--node", "edge-7"]));

    let ca_der = cert_der(&dir.join("ca/ca.crt"));
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert_eq!(curve(&ca), SECP384R1);
    assert!(ca.basic_constraints().unwrap().unwrap().value.ca, "CA:true");
    assert_eq!(san_uris(&ca), ["meshfed://plant-a"]);

    let issuing_der = cert_der(&dir.join("ca/issuing.crt"));
    let (_, issuing) = x509_parser::parse_x509_certificate(&issuing_der).unwrap();
    assert_eq!(curve(&issuing), SECP384R1);
    let bc = issuing.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca, "CA:true");
    assert_eq!(bc.path_len_constraint, Some(0));
    assert_eq!(san_uris(&issuing), ["meshfed://plant-a"]);
    assert_eq!(issuing.issuer(), ca.subject());

    let node_der = cert_der(&dir.join("node/node.crt"));
    let (_, node) = x509_parser::parse_x509_certificate(&node_der).unwrap();
    assert_eq!(curve(&node), SECP384R1);
    assert_eq!(san_uris(&node), ["meshfed://plant-a/edge-7"]);
    let eku = node.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
    assert!(!node.is_ca());
}

#[test]
fn node_cert_verifies_against_the_ca() {
    let tmp = temp_dir();
    let dir = tmp.path().join("node");
    assert_ok(&init(&dir, &["--mesh", "plant-a"]));
    let bundle =
        TrustBundle::from_pem(&fs::read_to_string(dir.join("ca/ca.crt")).unwrap()).unwrap();
    let node = CertificateDer::from(cert_der(&dir.join("node/node.crt")));
    let issuing = [CertificateDer::from(cert_der(&dir.join("ca/issuing.crt")))];
    for purpose in [KeyPurpose::ClientAuth, KeyPurpose::ServerAuth] {
        let info = verify_node_cert(&bundle, &node, &issuing, purpose, SystemTime::now()).unwrap();
        assert_eq!(info.identity().uri(), "meshfed://plant-a/gw1");
    }
    // The node certificate is the issuing CA's: without it, it does not chain to the root.
    let alone = verify_node_cert(
        &bundle,
        &node,
        &[],
        KeyPurpose::ClientAuth,
        SystemTime::now(),
    );
    assert!(alone.is_err(), "{alone:?}");
}

#[test]
fn root_key_out_keeps_the_mesh_ca_key_out_of_the_directory_and_never_overwrites() {
    let tmp = temp_dir();
    let dir = tmp.path().join("node");
    let out_file = tmp.path().join("offline").join("root.key");
    fs::create_dir(tmp.path().join("offline")).unwrap();
    let out_arg = out_file.to_str().unwrap();
    let out = init(&dir, &["--mesh", "plant-a", "--root-key-out", out_arg]);
    assert_ok(&out);
    assert!(
        !dir.join("ca/ca.key").exists(),
        "root key left in the directory"
    );
    assert_eq!(mode(&out_file), 0o600);
    assert_eq!(mode(&dir.join("ca/issuing.key")), 0o600);
    let summary = stdout(&out);
    assert!(summary.contains(out_arg), "{summary}");
    // The key written out is the mesh CA's.
    let ca = meshfed_trust::MeshCa::from_pem(
        &fs::read_to_string(dir.join("ca/ca.crt")).unwrap(),
        &fs::read_to_string(&out_file).unwrap(),
    );
    assert!(ca.is_ok(), "{ca:?}");

    // An existing FILE is never overwritten, not even with --force.
    let before = fs::read(&out_file).unwrap();
    let again = tmp.path().join("other");
    let out = init(
        &again,
        &["--mesh", "plant-b", "--root-key-out", out_arg, "--force"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{out_arg} already exists: the mesh CA key is never written over an existing file"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(&out_file).unwrap(), before);
    assert!(!again.exists(), "nothing written");

    // Replacing an identity whose root key was in the directory removes that key.
    let old = tmp.path().join("old");
    assert_ok(&init(&old, &["--mesh", "plant-c"]));
    let elsewhere = tmp.path().join("offline").join("plant-c.key");
    let elsewhere_arg = elsewhere.to_str().unwrap();
    assert_ok(&init(
        &old,
        &[
            "--mesh",
            "plant-c",
            "--force",
            "--root-key-out",
            elsewhere_arg,
        ],
    ));
    assert!(
        !old.join("ca/ca.key").exists(),
        "stale root key left behind"
    );
    assert!(elsewhere.is_file());
}

#[test]
fn dir_comes_from_meshfed_dir_then_defaults_to_meshfed() {
    let tmp = temp_dir();
    let from_env = tmp.path().join("from-env");
    let out = meshfed()
        .args(["init", "--mesh", "m"])
        .env("MESHFED_DIR", &from_env)
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(from_env.join("meshfed.toml").is_file());

    let out = meshfed()
        .args(["init", "--mesh", "m"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(tmp.path().join("meshfed/meshfed.toml").is_file());
}

fn curve(cert: &X509Certificate<'_>) -> String {
    let params = cert.public_key().algorithm.parameters.as_ref().unwrap();
    params.as_oid().unwrap().to_id_string()
}

fn san_uris(cert: &X509Certificate<'_>) -> Vec<String> {
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    san.general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

/// Every file under `dir` holding a PEM certificate or CSR, relative to `dir`, sorted.
fn pem_cert_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if fs::read_to_string(&path).is_ok_and(|t| t.contains("-----BEGIN CERTIFICATE"))
            {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_written_certificate_loads_in_openssl_and_python_cryptography() {
    let tmp = temp_dir();
    let dir = tmp.path().join("node");
    assert_ok(&init(&dir, &["--mesh", "plant-a", "--node", "gw1"]));
    let written = pem_cert_files(&dir);
    assert_eq!(
        written,
        [
            PathBuf::from("ca/ca.crt"),
            PathBuf::from("ca/issuing.crt"),
            PathBuf::from("node/node.crt")
        ]
    );
    let failures: Vec<String> = written
        .iter()
        .flat_map(|rel| meshfed_testkit::strict::strict_parse_failures(&dir.join(rel)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
