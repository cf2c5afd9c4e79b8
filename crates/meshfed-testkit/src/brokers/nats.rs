//! A NATS server (`nats-server` 2.9 or later) for tests: [`NatsServer`], its [`NatsOptions`]
//! and the ways a client may have to authenticate ([`NatsAuth`]).

#![expect(
    clippy::expect_used,
    reason = "test support: a broker that cannot be set up or started is a broken test setup"
)]

pub mod jwt;

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BrokerTls, Launch, find_program, launch, path_str, quoted, terminate};
use crate::process::{DEADLINE, ProcessGuard, poll};

/// The line nats-server logs once it accepts clients (and JetStream is up).
const READY: &str = "Server is ready";

/// The line that names the client port.
const LISTENING: &str = "Listening for client connections on ";

/// What nats-server logs when its port is taken.
const PORT_TAKEN: &str = "address already in use";

/// The token of [`NatsAuth::Token`].
pub const TOKEN: &str = "meshfed-test-token";

/// The user name of [`NatsAuth::UserPassword`].
pub const USER: &str = "meshfed-test";

/// The password of [`NatsAuth::UserPassword`].
pub const PASSWORD: &str = "meshfed-test-password";

/// How clients of a [`NatsServer`] must authenticate. The fixture makes the secrets and
/// exposes them ([`NatsServer::token`], [`NatsServer::nkey_seed`], [`NatsServer::creds_file`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatsAuth {
    /// Anyone may connect.
    #[default]
    Anonymous,
    /// The token [`TOKEN`] (`authorization { token }`).
    Token,
    /// The user [`USER`] with [`PASSWORD`] (`authorization { users }`).
    UserPassword,
    /// A user nkey whose seed is [`NatsServer::nkey_seed`] (`authorization { users: [{nkey}] }`).
    Nkey,
    /// Operator mode: a generated operator, its system account and an account `app`
    /// preloaded in a memory resolver; a user of `app` is in [`NatsServer::creds_file`].
    Jwt,
}

/// Whether and how the server speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Plain,
    Tls,
    TlsWithClientCert,
}

/// How to run a [`NatsServer`]. The default: plain TCP, anonymous, no JetStream. Each method
/// adds one thing.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    transport: Transport,
    auth: NatsAuth,
    jetstream: bool,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            transport: Transport::Plain,
            auth: NatsAuth::Anonymous,
            jetstream: false,
        }
    }
}

impl NatsOptions {
    /// Plain TCP, anonymous, no JetStream (the same as `default()`).
    pub fn plain() -> Self {
        Self::default()
    }

    /// TLS required: the server presents a certificate for `127.0.0.1` and `localhost` issued
    /// by the CA of [`NatsServer::tls`]; [`NatsServer::url`] becomes `tls://…`.
    #[must_use]
    pub fn tls(mut self) -> Self {
        if self.transport == Transport::Plain {
            self.transport = Transport::Tls;
        }
        self
    }

    /// TLS where every client must present a certificate issued by the server's CA
    /// (`verify: true`); [`BrokerTls::client_cert_path`] is one.
    #[must_use]
    pub fn require_client_cert(mut self) -> Self {
        self.transport = Transport::TlsWithClientCert;
        self
    }

    /// How clients authenticate.
    #[must_use]
    pub fn auth(mut self, auth: NatsAuth) -> Self {
        self.auth = auth;
        self
    }

    /// JetStream, its file store in the fixture's directory (kept across restarts).
    #[must_use]
    pub fn jetstream(mut self) -> Self {
        self.jetstream = true;
        self
    }
}

/// The secrets of the server's [`NatsAuth`].
#[derive(Debug)]
enum Secrets {
    None,
    Token,
    UserPassword,
    Nkey {
        /// The user's seed (`SU…`), the client's secret.
        seed: String,
        /// The user's public key (`U…`), what the server knows.
        public_key: String,
    },
    Jwt(Box<JwtSecrets>),
}

/// The secrets of [`NatsAuth::Jwt`].
#[derive(Debug)]
struct JwtSecrets {
    operator: jwt::Operator,
    account: jwt::Account,
    /// The operator JWT's file (the server's `operator`).
    operator_jwt: PathBuf,
    /// The `.creds` file of a user of `account`.
    creds: PathBuf,
}

/// A nats-server listening on an ephemeral port of 127.0.0.1, killed when dropped.
///
/// It first starts with `listen: 127.0.0.1:-1` (a random port), read from the line it logs;
/// [`NatsServer::restart`] starts it again on that port. Configuration, certificates,
/// credentials, the JetStream store and the log live in a temporary directory it owns.
#[derive(Debug)]
pub struct NatsServer {
    // Field order matters: the server is killed before its directory is removed.
    process: Option<ProcessGuard>,
    port: u16,
    options: NatsOptions,
    tls: Option<BrokerTls>,
    secrets: Secrets,
    store_dir: Option<PathBuf>,
    config: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Writes the configuration for `options` (generating certificates and credentials) and
    /// starts the server; returns once it accepts clients. Fails the test when it cannot start
    /// within [`DEADLINE`].
    pub fn start(options: NatsOptions) -> Self {
        let bin = find_program(
            "nats-server",
            &["/usr/sbin", "/usr/local/bin"],
            "apt-get install nats-server (scripts/test does)",
        );
        let dir = crate::temp_dir();
        let tls = (options.transport != Transport::Plain).then(|| BrokerTls::generate(dir.path()));
        let secrets = Secrets::generate(options.auth, dir.path());
        let store_dir = options.jetstream.then(|| dir.path().join("jetstream"));
        let mut server = Self {
            process: None,
            port: 0,
            options,
            tls,
            secrets,
            store_dir,
            config: dir.path().join("nats-server.conf"),
            log: dir.path().join("nats-server.log"),
            bin,
            dir,
        };
        server.write_config(None);
        let (guard, log) = match server.launch() {
            Ok(ready) => ready,
            Err(e) => panic!("nats-server did not start on a random port: {e}"),
        };
        server.port = listening_port(&log);
        server.process = Some(guard);
        // From now on, the same port: a restart is the same server to its clients.
        server.write_config(Some(server.port));
        server
    }

    /// The client port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `nats://127.0.0.1:PORT`, or `tls://127.0.0.1:PORT` when the server requires TLS.
    pub fn url(&self) -> String {
        let scheme = match self.options.transport {
            Transport::Plain => "nats",
            Transport::Tls | Transport::TlsWithClientCert => "tls",
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The TLS material, when started with [`NatsOptions::tls`] or
    /// [`NatsOptions::require_client_cert`].
    pub fn tls(&self) -> Option<&BrokerTls> {
        self.tls.as_ref()
    }

    /// The CA certificate (PEM) a client trusts to accept the server. Fails the test when the
    /// server was started without TLS.
    pub fn ca_pem(&self) -> &str {
        self.tls_or_panic().ca_pem()
    }

    /// The file holding [`NatsServer::ca_pem`] (what async-nats's `add_root_certificates`
    /// takes).
    pub fn ca_path(&self) -> &Path {
        self.tls_or_panic().ca_path()
    }

    /// The token clients must present ([`NatsAuth::Token`]).
    pub fn token(&self) -> &str {
        self.expect_auth(NatsAuth::Token);
        TOKEN
    }

    /// The user name clients must present ([`NatsAuth::UserPassword`]).
    pub fn user(&self) -> &str {
        self.expect_auth(NatsAuth::UserPassword);
        USER
    }

    /// The password of [`NatsServer::user`].
    pub fn password(&self) -> &str {
        self.expect_auth(NatsAuth::UserPassword);
        PASSWORD
    }

    /// The seed (`SU…`) of the user nkey the server knows ([`NatsAuth::Nkey`]).
    pub fn nkey_seed(&self) -> &str {
        match &self.secrets {
            Secrets::Nkey { seed, .. } => seed,
            _ => panic!("this NatsServer was started with {:?}", self.options.auth),
        }
    }

    /// The `.creds` file of a user of the account `app` ([`NatsAuth::Jwt`]).
    pub fn creds_file(&self) -> &Path {
        &self.jwt_secrets().creds
    }

    /// The operator the server trusts ([`NatsAuth::Jwt`]).
    pub fn operator(&self) -> &jwt::Operator {
        &self.jwt_secrets().operator
    }

    /// The account `app` ([`NatsAuth::Jwt`]): issue more users with [`jwt::Account::user`].
    pub fn account(&self) -> &jwt::Account {
        &self.jwt_secrets().account
    }

    /// The JetStream store directory, when started with [`NatsOptions::jetstream`].
    pub fn store_dir(&self) -> Option<&Path> {
        self.store_dir.as_deref()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ProcessGuard::pid)
    }

    /// Stops the server gracefully (SIGTERM) and starts it again on the same port with the
    /// same configuration, credentials and JetStream store; returns once it accepts clients.
    /// Also starts a server that was stopped or killed.
    pub fn restart(&mut self) {
        self.stop();
        let what = format!("nats-server starts again on port {}", self.port);
        let (guard, _) = poll(&what, DEADLINE, || self.launch());
        self.process = Some(guard);
    }

    /// Stops the server gracefully (SIGTERM) and waits until it has exited. Does nothing when
    /// it is not running.
    pub fn stop(&mut self) {
        if let Some(mut guard) = self.process.take() {
            terminate(&mut guard);
        }
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut guard) = self.process.take() {
            guard.kill();
        }
    }

    /// The log file (what the server printed, over all its runs).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the server has logged over all its runs.
    pub fn log(&self) -> String {
        super::read_lossy(&self.log)
    }

    /// The directory holding its configuration, certificates, credentials and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn tls_or_panic(&self) -> &BrokerTls {
        self.tls
            .as_ref()
            .unwrap_or_else(|| panic!("this NatsServer was started without TLS"))
    }

    fn expect_auth(&self, auth: NatsAuth) {
        assert_eq!(
            self.options.auth, auth,
            "this NatsServer was started with another NatsAuth"
        );
    }

    fn jwt_secrets(&self) -> &JwtSecrets {
        match &self.secrets {
            Secrets::Jwt(secrets) => secrets,
            _ => panic!("this NatsServer was started with {:?}", self.options.auth),
        }
    }

    /// Starts the server with the configuration written; returns it and what it logged up to
    /// its ready line. `Err` (for [`poll`] to try again) when its port was taken.
    fn launch(&self) -> Result<(ProcessGuard, String), String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&self.config);
        match launch(cmd, "nats-server", &self.log, READY) {
            Launch::Ready { guard, log } => Ok((guard, log)),
            Launch::Exited { log, .. } if log.contains(PORT_TAKEN) => {
                Err(format!("port taken:\n{log}"))
            }
            Launch::Exited { status, log } => {
                panic!("nats-server exited ({status}) before it was ready:\n{log}")
            }
        }
    }

    /// The configuration file, listening on `port` (`None`: a random port).
    fn write_config(&self, port: Option<u16>) {
        let port = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut conf = format!("listen: \"127.0.0.1:{port}\"\n");
        // No monitoring or cluster ports: only the client port is opened.
        conf.push_str("server_name: meshfed-test\n");
        if let Some(tls) = &self.tls {
            let verify = self.options.transport == Transport::TlsWithClientCert;
            let _ = write!(
                conf,
                "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {verify}\n  timeout: 5\n}}\n",
                quoted(path_str(tls.server_cert_path())),
                quoted(path_str(tls.server_key_path())),
                quoted(path_str(tls.ca_path())),
            );
        }
        if let Some(store) = &self.store_dir {
            let _ = write!(
                conf,
                "jetstream {{\n  store_dir: {}\n  max_memory_store: 256MB\n  max_file_store: 1GB\n}}\n",
                quoted(path_str(store)),
            );
        }
        match &self.secrets {
            Secrets::None => {}
            Secrets::Token => {
                let _ = writeln!(conf, "authorization {{ token: {} }}", quoted(TOKEN));
            }
            Secrets::UserPassword => {
                let _ = writeln!(
                    conf,
                    "authorization {{ users: [ {{ user: {}, password: {} }} ] }}",
                    quoted(USER),
                    quoted(PASSWORD)
                );
            }
            Secrets::Nkey { public_key, .. } => {
                let _ = writeln!(
                    conf,
                    "authorization {{ users: [ {{ nkey: {} }} ] }}",
                    quoted(public_key)
                );
            }
            Secrets::Jwt(jwt) => {
                let system = jwt.operator.system_account();
                let _ = write!(
                    conf,
                    "operator: {}\nsystem_account: {}\nresolver: MEMORY\n\
                     resolver_preload: {{\n  {}: {}\n  {}: {}\n}}\n",
                    quoted(path_str(&jwt.operator_jwt)),
                    system.public_key(),
                    system.public_key(),
                    quoted(system.jwt()),
                    jwt.account.public_key(),
                    quoted(jwt.account.jwt()),
                );
            }
        }
        fs::write(&self.config, conf)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.config.display()));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- log of nats-server on port {} ----\n{}",
                self.port,
                self.log()
            );
        }
    }
}

impl Secrets {
    /// Makes the secrets of `auth`, writing the files it needs into `dir`.
    fn generate(auth: NatsAuth, dir: &Path) -> Self {
        match auth {
            NatsAuth::Anonymous => Self::None,
            NatsAuth::Token => Self::Token,
            NatsAuth::UserPassword => Self::UserPassword,
            NatsAuth::Nkey => {
                let key = nkeys::KeyPair::new_user();
                Self::Nkey {
                    seed: key.seed().expect("a generated user key has a seed"),
                    public_key: key.public_key(),
                }
            }
            NatsAuth::Jwt => {
                let operator = jwt::Operator::generate("meshfed-test");
                let account = operator.account("app");
                let user = account.user("meshfed-test");
                let operator_jwt = dir.join("operator.jwt");
                fs::write(&operator_jwt, operator.jwt()).expect("write the operator JWT");
                let creds = dir.join("user.creds");
                fs::write(&creds, user.creds()).expect("write the user's creds file");
                Self::Jwt(Box::new(JwtSecrets {
                    operator,
                    account,
                    operator_jwt,
                    creds,
                }))
            }
        }
    }
}

/// The port of the line `… Listening for client connections on 127.0.0.1:PORT` in `log`.
fn listening_port(log: &str) -> u16 {
    log.lines()
        .find_map(|line| {
            let (_, addr) = line.split_once(LISTENING)?;
            addr.trim().rsplit(':').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("nats-server logged no {LISTENING:?} line:\n{log}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_port_is_read_from_the_listening_line() {
        let log = "[1] 2026/01/01 00:00:00.000000 [INF] Starting nats-server\n\
                   [1] 2026/01/01 00:00:00.000001 [INF] Listening for client connections on 127.0.0.1:34237\n\
                   [1] 2026/01/01 00:00:00.000002 [INF] Server is ready\n";
        assert_eq!(listening_port(log), 34237);
    }
}
