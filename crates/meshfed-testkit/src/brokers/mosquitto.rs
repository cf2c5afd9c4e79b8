//! A Mosquitto MQTT broker (`mosquitto` 2.x) for tests: [`Mosquitto`] and its
//! [`MosquittoOptions`].

#![expect(
    clippy::expect_used,
    reason = "test support: a broker that cannot be set up or started is a broken test setup"
)]

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BrokerTls, Launch, find_program, free_port, launch, path_str, terminate};
use crate::process::{DEADLINE, ProcessGuard};

/// The line Mosquitto logs once every listener is open.
const READY: &str = " running";

/// What Mosquitto logs when its port is taken.
const PORT_TAKEN: &str = "Address already in use";

/// How a client reaches a [`Mosquitto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// MQTT over plain TCP.
    Plain,
    /// MQTT over TLS; clients authenticate as they would on plain TCP.
    Tls,
    /// MQTT over TLS; a client must present a certificate issued by the broker's CA.
    TlsWithClientCert,
}

/// How to run a [`Mosquitto`]. The default: plain TCP, anonymous clients allowed, no
/// persistence. Each method adds one thing.
#[derive(Debug, Clone)]
pub struct MosquittoOptions {
    transport: Transport,
    user: Option<(String, String)>,
    persistence: bool,
}

impl Default for MosquittoOptions {
    fn default() -> Self {
        Self {
            transport: Transport::Plain,
            user: None,
            persistence: false,
        }
    }
}

impl MosquittoOptions {
    /// Plain TCP, anonymous clients allowed, no persistence (the same as `default()`).
    pub fn plain() -> Self {
        Self::default()
    }

    /// MQTT over TLS: the broker presents a certificate for `127.0.0.1` and `localhost` issued
    /// by the CA of [`Mosquitto::tls`].
    #[must_use]
    pub fn tls(mut self) -> Self {
        if self.transport == Transport::Plain {
            self.transport = Transport::Tls;
        }
        self
    }

    /// MQTT over TLS where every client must present a certificate issued by the broker's CA
    /// (`require_certificate true`); [`Mosquitto::client_cert_pem`] is one.
    #[must_use]
    pub fn require_client_cert(mut self) -> Self {
        self.transport = Transport::TlsWithClientCert;
        self
    }

    /// Only the user `name` with `password` may connect (a `password_file`; anonymous clients
    /// are refused).
    #[must_use]
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.user = Some((name.to_owned(), password.to_owned()));
        self
    }

    /// `persistence true`: sessions and queued QoS 1/2 messages are saved in a directory of
    /// the fixture when the broker stops gracefully ([`Mosquitto::stop`],
    /// [`Mosquitto::restart`]) and loaded when it starts again.
    #[must_use]
    pub fn persistence(mut self) -> Self {
        self.persistence = true;
        self
    }
}

/// A Mosquitto broker listening on an ephemeral port of 127.0.0.1, killed when dropped.
///
/// Its configuration, certificates, password file, persistence directory and log live in a
/// temporary directory it owns. Mosquitto cannot listen on port 0, so [`Mosquitto::start`]
/// takes a port that was free a moment ago and tries another when Mosquitto fails to bind it.
/// The port is kept across [`Mosquitto::restart`].
#[derive(Debug)]
pub struct Mosquitto {
    // Field order matters: the broker is killed before its directory is removed.
    process: Option<ProcessGuard>,
    port: u16,
    transport: Transport,
    tls: Option<BrokerTls>,
    password_file: Option<PathBuf>,
    persistence_dir: Option<PathBuf>,
    config: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Writes the configuration for `options` and starts the broker; returns once it accepts
    /// connections. Fails the test when it cannot start within [`DEADLINE`].
    pub fn start(options: MosquittoOptions) -> Self {
        let bin = find_program(
            "mosquitto",
            &["/usr/sbin", "/usr/local/sbin"],
            "apt-get install mosquitto mosquitto-clients (scripts/test does)",
        );
        let dir = crate::temp_dir();
        let tls = (options.transport != Transport::Plain).then(|| BrokerTls::generate(dir.path()));
        let persistence_dir = options.persistence.then(|| {
            let path = dir.path().join("persistence");
            fs::create_dir(&path).expect("create the persistence directory");
            path
        });
        let password_file = options
            .user
            .as_ref()
            .map(|(name, password)| write_password_file(dir.path(), name, password));
        let mut broker = Self {
            process: None,
            port: 0,
            transport: options.transport,
            config: dir.path().join("mosquitto.conf"),
            log: dir.path().join("mosquitto.log"),
            tls,
            password_file,
            persistence_dir,
            bin,
            dir,
        };
        let what = "mosquitto starts on a free port";
        crate::process::poll(what, DEADLINE, || {
            let port = free_port();
            broker.write_config(port);
            broker.launch().map(|guard| {
                broker.port = port;
                broker.process = Some(guard);
            })
        });
        broker
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The host clients connect to: `127.0.0.1` (also the name the TLS certificate holds).
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The TLS material, when started with [`MosquittoOptions::tls`] or
    /// [`MosquittoOptions::require_client_cert`].
    pub fn tls(&self) -> Option<&BrokerTls> {
        self.tls.as_ref()
    }

    /// The CA certificate (PEM) a client trusts to accept the broker. Fails the test when the
    /// broker was started without TLS.
    pub fn ca_pem(&self) -> &str {
        self.tls_or_panic().ca_pem()
    }

    /// A client certificate (PEM) the broker accepts. Fails the test when the broker was
    /// started without TLS.
    pub fn client_cert_pem(&self) -> &str {
        self.tls_or_panic().client_cert_pem()
    }

    /// The key (PKCS#8 PEM) of [`Mosquitto::client_cert_pem`].
    pub fn client_key_pem(&self) -> &str {
        self.tls_or_panic().client_key_pem()
    }

    /// Where sessions and queued messages are saved, when started with
    /// [`MosquittoOptions::persistence`].
    pub fn persistence_dir(&self) -> Option<&Path> {
        self.persistence_dir.as_deref()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ProcessGuard::pid)
    }

    /// Stops the broker gracefully (SIGTERM; with persistence it saves its state) and starts
    /// it again on the same port with the same configuration and persistence directory;
    /// returns once it accepts connections. Also starts a broker that was stopped or killed.
    pub fn restart(&mut self) {
        self.stop();
        let what = format!("mosquitto starts again on port {}", self.port);
        let guard = crate::process::poll(&what, DEADLINE, || self.launch());
        self.process = Some(guard);
    }

    /// Stops the broker gracefully (SIGTERM) and waits until it has exited. Does nothing when
    /// it is not running.
    pub fn stop(&mut self) {
        if let Some(mut guard) = self.process.take() {
            terminate(&mut guard);
        }
    }

    /// Kills the broker (SIGKILL): what was not yet saved is lost.
    pub fn kill(&mut self) {
        if let Some(mut guard) = self.process.take() {
            guard.kill();
        }
    }

    /// The log file (what the broker printed, over all its runs).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the broker has logged over all its runs.
    pub fn log(&self) -> String {
        super::read_lossy(&self.log)
    }

    /// The directory holding its configuration, certificates and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn tls_or_panic(&self) -> &BrokerTls {
        self.tls
            .as_ref()
            .unwrap_or_else(|| panic!("this Mosquitto was started without TLS"))
    }

    /// Starts the broker with the configuration written; `Err` (for [`crate::process::poll`]
    /// to try again) when its port was taken.
    fn launch(&self) -> Result<ProcessGuard, String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&self.config);
        match launch(cmd, "mosquitto", &self.log, READY) {
            Launch::Ready { guard, .. } => Ok(guard),
            Launch::Exited { log, .. } if log.contains(PORT_TAKEN) => {
                Err(format!("port taken:\n{log}"))
            }
            Launch::Exited { status, log } => {
                panic!("mosquitto exited ({status}) before it was ready:\n{log}")
            }
        }
    }

    fn write_config(&self, port: u16) {
        let mut conf = String::new();
        // Run as root (in CI), Mosquitto would switch to the `mosquitto` user, who cannot read
        // this directory; `root` keeps the user it is started as. Ignored when not root.
        conf.push_str("user root\n");
        conf.push_str("log_dest stderr\n");
        conf.push_str("log_type error\nlog_type warning\nlog_type notice\nlog_type information\n");
        conf.push_str("log_type subscribe\nlog_type unsubscribe\n");
        conf.push_str("connection_messages true\n");
        conf.push_str("per_listener_settings false\n");
        match &self.persistence_dir {
            Some(dir) => {
                conf.push_str("persistence true\n");
                // A durable session (a gateway's) keeps what arrives while its client is away:
                // the default of 1000 queued messages drops the rest ("Outgoing messages are
                // being dropped"), as the README tells operators.
                conf.push_str("max_queued_messages 1000000\n");
                // Mosquitto joins the location and the file name as strings.
                let location = format!("{}/", path_str(dir));
                let _ = writeln!(conf, "persistence_location {location}");
            }
            None => conf.push_str("persistence false\n"),
        }
        match &self.password_file {
            Some(file) => {
                conf.push_str("allow_anonymous false\n");
                let _ = writeln!(conf, "password_file {}", path_str(file));
            }
            None => conf.push_str("allow_anonymous true\n"),
        }
        let _ = writeln!(conf, "\nlistener {port} 127.0.0.1");
        if let Some(tls) = &self.tls {
            let _ = writeln!(conf, "cafile {}", path_str(tls.ca_path()));
            let _ = writeln!(conf, "certfile {}", path_str(tls.server_cert_path()));
            let _ = writeln!(conf, "keyfile {}", path_str(tls.server_key_path()));
            let require = self.transport == Transport::TlsWithClientCert;
            let _ = writeln!(conf, "require_certificate {require}");
        }
        fs::write(&self.config, conf)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.config.display()));
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- log of mosquitto on port {} ----\n{}",
                self.port,
                self.log()
            );
        }
    }
}

/// `mosquitto_passwd -b -c DIR/passwords NAME PASSWORD`; returns the file.
fn write_password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let tool = find_program(
        "mosquitto_passwd",
        &["/usr/bin", "/usr/sbin"],
        "apt-get install mosquitto (scripts/test does)",
    );
    let file = dir.join("passwords");
    let out = Command::new(&tool)
        .arg("-b")
        .arg("-c")
        .arg(&file)
        .arg(name)
        .arg(password)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "mosquitto_passwd failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    file
}
