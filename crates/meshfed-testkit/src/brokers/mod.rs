//! Real message brokers for connector tests: a Mosquitto MQTT broker ([`Mosquitto`]) and a
//! NATS server ([`NatsServer`]), each a child process on an ephemeral loopback port with its
//! configuration, certificates, credentials and data in a temporary directory of its own.
//!
//! What it is: fixtures that start the broker, wait (by condition, with [`DEADLINE`]) until it
//! accepts connections, and can stop it gracefully, kill it, or restart it on the same port
//! with the same persistent state; the TLS material they use ([`BrokerTls`]: a CA made with
//! rcgen, a server certificate for `127.0.0.1` and `localhost`, a client certificate); and
//! NATS JWT credentials made in Rust ([`nats::jwt`]). Every broker process is killed when its
//! fixture drops, and its log is printed when the test fails.
//!
//! What it is not: a client. Tests bring their own (rumqttc, async-nats), configured from what
//! the fixtures expose ([`Mosquitto::addr`], [`NatsServer::url`], [`BrokerTls::ca_path`],
//! [`NatsServer::creds_file`], …). The brokers are the system's: `mosquitto` and
//! `mosquitto_passwd` from Debian's `mosquitto` and `mosquitto-clients`, `nats-server` from
//! PATH; `scripts/test` installs them.
//!
//! Where to start reading: [`Mosquitto::start`] and [`NatsServer::start`].

#![expect(
    clippy::expect_used,
    reason = "test support: a broker that cannot be set up or started is a broken test setup"
)]

pub mod mosquitto;
pub mod nats;

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

pub use mosquitto::{Mosquitto, MosquittoOptions};
pub use nats::{NatsAuth, NatsOptions, NatsServer};

use crate::process::{DEADLINE, ProcessGuard, poll};

/// TLS material for one broker, written as PEM files into the broker's directory: a CA, a
/// server certificate it issued for `127.0.0.1` and `localhost`, and a client certificate it
/// issued (common name `meshfed-test-client`) for brokers that require one.
///
/// Keys are ECDSA P-256, PKCS#8; rustls, OpenSSL (Mosquitto) and Go (NATS) all read them.
#[derive(Debug)]
pub struct BrokerTls {
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    ca_path: PathBuf,
    server_cert_path: PathBuf,
    server_key_path: PathBuf,
    client_cert_path: PathBuf,
    client_key_path: PathBuf,
}

/// The common name of the client certificate of a [`BrokerTls`].
pub const CLIENT_CERT_NAME: &str = "meshfed-test-client";

impl BrokerTls {
    /// Makes a CA and the server and client certificates, and writes them into `dir`.
    pub fn generate(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().expect("generate a test CA key");
        let mut ca_params = CertificateParams::default();
        // Named after its directory: two brokers' CAs never share a name, so a client that
        // trusts the other one sees an unknown issuer, not a forged signature.
        let dir_name = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        ca_params.distinguished_name = common_name(&format!("meshfed test broker CA {dir_name}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .expect("self-sign the test CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |sans: Vec<String>, name: &str, purpose: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("generate a test key");
            let mut params = CertificateParams::new(sans).expect("test names are valid SANs");
            params.distinguished_name = common_name(name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![purpose];
            let cert = params
                .signed_by(&key, &issuer)
                .expect("sign a test certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert_pem, server_key_pem) = leaf(
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert_pem, client_key_pem) = leaf(
            Vec::new(),
            CLIENT_CERT_NAME,
            ExtendedKeyUsagePurpose::ClientAuth,
        );

        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            path
        };
        Self {
            ca_path: write("ca.pem", &ca_cert.pem()),
            server_cert_path: write("server.pem", &server_cert_pem),
            server_key_path: write("server.key", &server_key_pem),
            client_cert_path: write("client.pem", &client_cert_pem),
            client_key_path: write("client.key", &client_key_pem),
            ca_pem: ca_cert.pem(),
            client_cert_pem,
            client_key_pem,
        }
    }

    /// The CA certificate, PEM: what a client trusts to accept the broker.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The file holding [`BrokerTls::ca_pem`].
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The client certificate, PEM, issued by the same CA.
    pub fn client_cert_pem(&self) -> &str {
        &self.client_cert_pem
    }

    /// The client certificate's private key, PKCS#8 PEM.
    pub fn client_key_pem(&self) -> &str {
        &self.client_key_pem
    }

    /// The file holding [`BrokerTls::client_cert_pem`].
    pub fn client_cert_path(&self) -> &Path {
        &self.client_cert_path
    }

    /// The file holding [`BrokerTls::client_key_pem`].
    pub fn client_key_path(&self) -> &Path {
        &self.client_key_path
    }

    /// The file holding the server certificate (for `127.0.0.1` and `localhost`), PEM.
    pub fn server_cert_path(&self) -> &Path {
        &self.server_cert_path
    }

    /// The file holding the server certificate's private key, PKCS#8 PEM.
    pub fn server_key_path(&self) -> &Path {
        &self.server_key_path
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// A port on 127.0.0.1 that was free a moment ago: bound to port 0, read, released. For
/// brokers that cannot listen on port 0 themselves; the caller must retry with another port
/// when the broker then fails to bind it (another process may have taken it meanwhile).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// The path of the program `name`: the first directory of PATH that holds it, else the first
/// of `dirs` that does (Debian puts daemons in `/usr/sbin`, which a user's PATH may lack).
/// Fails the test, saying what to install, when there is none.
pub(crate) fn find_program(name: &str, dirs: &[&str], install: &str) -> PathBuf {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed (looked in PATH and {dirs:?}): {install}")
        })
}

/// How a broker start ended.
#[derive(Debug)]
pub(crate) enum Launch {
    /// The log showed the ready line; `log` is what it logged in this run up to then.
    Ready { guard: ProcessGuard, log: String },
    /// The process ended before it was ready; `log` is what it logged in this run.
    Exited { status: ExitStatus, log: String },
}

/// Spawns `cmd` with stdout and stderr appended to `log`, and waits until a line it logs
/// contains `ready` or it exits. Fails the test when neither happens within [`DEADLINE`].
pub(crate) fn launch(mut cmd: Command, name: &str, log: &Path, ready: &str) -> Launch {
    let mark = fs::metadata(log).map(|m| m.len()).unwrap_or(0);
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let err = out.try_clone().expect("clone a file handle");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut guard = ProcessGuard::new(child, name);
    let since_mark = || {
        let bytes = fs::read(log).unwrap_or_default();
        let start = usize::try_from(mark).unwrap_or(usize::MAX).min(bytes.len());
        String::from_utf8_lossy(bytes.get(start..).unwrap_or_default()).into_owned()
    };
    let what = format!("{name} logs a line with {ready:?} or exits");
    let exited = poll(&what, DEADLINE, || {
        let logged = since_mark();
        if logged.lines().any(|l| l.contains(ready)) {
            return Ok(None);
        }
        match guard.try_wait() {
            Some(status) => Ok(Some(status)),
            None => Err(format!("log of this run so far:\n{logged}")),
        }
    });
    match exited {
        // The process has ended, so its log is complete.
        Some(status) => Launch::Exited {
            status,
            log: since_mark(),
        },
        None => Launch::Ready {
            guard,
            log: since_mark(),
        },
    }
}

/// Stops a broker gracefully: SIGTERM, then waits until it has exited (it saves its state on
/// the way out). Fails the test if it does not exit within [`DEADLINE`].
pub(crate) fn terminate(guard: &mut ProcessGuard) -> ExitStatus {
    if let Some(status) = guard.try_wait() {
        return status;
    }
    guard.signal("TERM");
    guard.wait(DEADLINE)
}

/// The text of `path`, or nothing when it cannot be read.
pub(crate) fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// `s` as a double-quoted string for a Mosquitto or NATS configuration file.
pub(crate) fn quoted(s: &str) -> String {
    assert!(
        !s.contains(['"', '\\', '\n']),
        "test configuration value {s:?} needs no quoting"
    );
    format!("\"{s}\"")
}

/// `path` as text for a configuration file.
pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_material_is_written_as_pem_files() {
        let dir = crate::temp_dir();
        let tls = BrokerTls::generate(dir.path());
        assert!(tls.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            tls.client_key_pem()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert_eq!(fs::read_to_string(tls.ca_path()).unwrap(), tls.ca_pem());
        assert_eq!(
            fs::read_to_string(tls.client_cert_path()).unwrap(),
            tls.client_cert_pem()
        );
        assert!(tls.server_key_path().is_file());
    }

    #[test]
    fn a_missing_program_fails_with_what_to_install() {
        let result = std::panic::catch_unwind(|| {
            find_program("meshfed-no-such-broker", &["/nonexistent"], "install it")
        });
        let err = result.unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("`meshfed-no-such-broker` is not installed"),
            "{msg}"
        );
        assert!(msg.ends_with("install it"), "{msg}");
    }
}
