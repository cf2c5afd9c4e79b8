//! Strict outside parsers over what meshfed writes: `openssl` and Python's `cryptography`.
//!
//! meshfed reads its own certificates with lenient parsers; other tools do not. A DER encoding
//! error (a default value encoded, such as basicConstraints `CA:FALSE`) is accepted by some
//! parsers and refused by others, so every certificate and CSR meshfed writes is run through
//! both tools here. Both must be installed (`scripts/test` installs them when missing).

#![expect(
    clippy::expect_used,
    reason = "test support: a missing tool or a broken pipe is a broken test setup"
)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// Python that loads one PEM certificate or CSR from stdin and reads every part of it, since
/// `cryptography` parses extensions lazily and refuses bad DER only when they are read.
const PYTHON_CHECK: &str = r#"
import sys
from cryptography import x509
data = sys.stdin.buffer.read()
if b"CERTIFICATE REQUEST" in data:
    obj = x509.load_pem_x509_csr(data)
else:
    obj = x509.load_pem_x509_certificate(data)
    obj.issuer, obj.serial_number, obj.not_valid_after_utc
obj.subject, obj.public_key()
for ext in obj.extensions:
    ext.value
"#;

/// Every PEM certificate or CSR block in `path`, checked with `openssl` and Python
/// `cryptography`; the failures, each naming the file, the block, the tool and what it said.
/// Empty when both tools accept everything.
pub fn strict_parse_failures(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read a file meshfed wrote");
    let blocks = pem::parse_many(&text).expect("file meshfed wrote is PEM");
    let mut failures = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let one = pem::encode(block);
        let openssl_kind = match block.tag() {
            "CERTIFICATE" => "x509",
            "CERTIFICATE REQUEST" => "req",
            _ => continue,
        };
        let checks: [(&str, Vec<&str>); 2] = [
            ("openssl", vec![openssl_kind, "-noout", "-text"]),
            ("python3", vec!["-c", PYTHON_CHECK]),
        ];
        for (tool, args) in checks {
            if let Some(why) = run_with_stdin(tool, &args, one.as_bytes()) {
                failures.push(format!(
                    "{} block #{} ({}): {tool} refused it: {why}",
                    path.display(),
                    i + 1,
                    block.tag()
                ));
            }
        }
    }
    failures
}

/// Runs `tool args` with `input` on stdin; `None` on success, else its status and stderr.
fn run_with_stdin(tool: &str, args: &[&str], input: &[u8]) -> Option<String> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {tool} (scripts/test installs it): {e}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .expect("write to the checker's stdin");
    let out = child.wait_with_output().expect("wait for the checker");
    if out.status.success() {
        return None;
    }
    Some(format!(
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}
