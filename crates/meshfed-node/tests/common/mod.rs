//! Gateways in one process over real mutual TLS on loopback, driven through their HTTP API:
//! shared by the node's integration tests.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test on any error"
)]
#![allow(dead_code, reason = "each test file uses a part of this module")]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use meshfed_node::config::NodeConfig;
use meshfed_node::{Gateway, InitOptions, init};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// A client WebSocket.
pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One gateway started in this process on loopback ports, with its admin token.
pub(crate) struct Node {
    dir: tempfile::TempDir,
    pub(crate) gateway: Gateway,
    pub(crate) token: String,
    pub(crate) http: reqwest::Client,
}

impl Node {
    pub(crate) async fn start(mesh: &str) -> Self {
        Self::start_with(mesh, |_| {}).await
    }

    /// The node directory (identity, configuration, store).
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.api_addr())
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The delivery stream (`/v1/messages/stream` + `query`).
    pub(crate) async fn stream(&self, query: &str) -> Ws {
        let path = format!("/v1/messages/stream{query}");
        self.websocket(&path, &self.token)
            .await
            .unwrap_or_else(|status| panic!("{path}: HTTP {status}"))
    }

    /// A WebSocket to `path` with `token`; the HTTP status when the upgrade is refused.
    pub(crate) async fn websocket(&self, path: &str, token: &str) -> Result<Ws, u16> {
        let mut req = format!("ws://{}{path}", self.gateway.api_addr())
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("connecting {path}: {e}"),
        }
    }
}

impl Node {
    /// The status and body of the answer to a WebSocket upgrade to `path` that the API refuses;
    /// fails the test if it accepts.
    pub(crate) async fn refused_websocket(&self, path: &str) -> (u16, Value) {
        let mut req = format!("ws://{}{path}", self.gateway.api_addr())
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => panic!("{path}: the upgrade was accepted"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp.body().clone().unwrap_or_default();
                let body = serde_json::from_slice(&body)
                    .unwrap_or_else(|e| panic!("{path}: the refusal is not JSON ({e}): {body:?}"));
                (resp.status().as_u16(), body)
            }
            Err(e) => panic!("connecting {path}: {e}"),
        }
    }
}

/// Polls `cond` until it holds; fails after ten seconds.
pub(crate) async fn wait_for<F: std::future::Future<Output = bool>>(mut cond: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Federates `a` (plant-a) with `b` (supplier-b) by invitation; returns the federation id.
pub(crate) async fn federate(a: &Node, b: &Node) -> String {
    let (status, invite) = b
        .post("/v1/federations/invite", json!({"peer": "plant-a"}))
        .await;
    assert_eq!(status, 200, "{invite}");
    let (status, joined) = a
        .post("/v1/federations/join", json!({"token": invite["token"]}))
        .await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["peer"], "supplier-b");
    joined["id"].as_str().unwrap().to_owned()
}

/// The next text frame as JSON, failing the test after ten seconds.
pub(crate) async fn next_json(ws: &mut Ws) -> Value {
    next_json_within(ws, Duration::from_secs(10)).await
}

/// The next text frame as JSON, failing the test after `limit`.
pub(crate) async fn next_json_within(ws: &mut Ws, limit: Duration) -> Value {
    loop {
        let frame = tokio::time::timeout(limit, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no frame within {limit:?}"))
            .unwrap()
            .unwrap();
        if let Message::Text(t) = frame {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

impl Node {
    /// Starts a gateway like [`Node::start`], with `tweak` applied to its configuration first
    /// (say, its `[delivery]` limits).
    pub(crate) async fn start_with(mesh: &str, tweak: impl FnOnce(&mut NodeConfig)) -> Self {
        let (dir, mut config) = initialised(mesh, SystemTime::now());
        config.federation.heartbeat_interval = Duration::from_millis(200);
        tweak(&mut config);
        Self::launch(dir, config).await
    }

    /// Starts a gateway like [`Node::start`] whose node certificates live `validity` (the
    /// first one, made by `init`, too) and are renewed `renew_before` their expiry.
    pub(crate) async fn start_with_short_certificates(
        mesh: &str,
        validity: Duration,
        renew_before: Duration,
    ) -> Self {
        let (dir, mut config) = initialised_with(mesh, SystemTime::now(), validity);
        config.federation.heartbeat_interval = Duration::from_millis(200);
        config.identity.node_cert_renew_before = Some(renew_before);
        Self::launch(dir, config).await
    }

    /// [`Node::start_with_short_certificates`] on a directory holding the issuing CA key but
    /// not the mesh CA key, as `meshfed init --root-key-out` leaves it.
    pub(crate) async fn start_with_short_certificates_and_no_root_key(
        mesh: &str,
        validity: Duration,
        renew_before: Duration,
    ) -> Self {
        let (dir, mut config) = initialised_with(mesh, SystemTime::now(), validity);
        let root_key = config.identity.ca_key.resolve(dir.path());
        std::fs::remove_file(&root_key).unwrap();
        assert!(config.identity.issuing_ca_key.resolve(dir.path()).is_file());
        config.federation.heartbeat_interval = Duration::from_millis(200);
        config.identity.node_cert_renew_before = Some(renew_before);
        Self::launch(dir, config).await
    }

    /// Stops this gateway, keeping its directory (store, journal, federations) to start it
    /// again with [`Stopped::start`].
    pub(crate) async fn stop(self) -> Stopped {
        let Self { dir, gateway, .. } = self;
        let federation = gateway.federation_addr();
        gateway.shutdown().await;
        Stopped { dir, federation }
    }

    /// Starts a gateway on `clock` with the default heartbeat interval: its timers move only
    /// as the test advances the clock.
    pub(crate) async fn start_on(mesh: &str, clock: meshfed_node::Clock) -> Self {
        Self::start_on_prepared(mesh, clock, |_| {}).await
    }

    /// [`Node::start_on`], with `prepare` run on the node directory before the gateway starts.
    pub(crate) async fn start_on_prepared(
        mesh: &str,
        clock: meshfed_node::Clock,
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        let (dir, config) = initialised(mesh, clock.wall());
        prepare(dir.path());
        let gateway = Gateway::start_with_clock(dir.path(), config, clock)
            .await
            .unwrap();
        Self::with_gateway(dir, gateway)
    }

    async fn launch(dir: tempfile::TempDir, config: NodeConfig) -> Self {
        let gateway = Gateway::start(dir.path(), config).await.unwrap();
        Self::with_gateway(dir, gateway)
    }

    fn with_gateway(dir: tempfile::TempDir, gateway: Gateway) -> Self {
        let token = std::fs::read_to_string(dir.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Self {
            dir,
            gateway,
            token,
            http: reqwest::Client::new(),
        }
    }

    /// The `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// A node directory for `mesh` made by `meshfed init` at `now`, listening on ephemeral
/// loopback ports, and its configuration.
fn initialised(mesh: &str, now: SystemTime) -> (tempfile::TempDir, NodeConfig) {
    initialised_with(mesh, now, meshfed_trust::DEFAULT_NODE_CERT_VALIDITY)
}

/// Like [`initialised`], with node certificates of `node_cert_validity`.
fn initialised_with(
    mesh: &str,
    now: SystemTime,
    node_cert_validity: Duration,
) -> (tempfile::TempDir, NodeConfig) {
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut opts = InitOptions::new(
        dir.path().to_path_buf(),
        mesh.parse().unwrap(),
        "gw1".parse().unwrap(),
        now,
    );
    opts.federation_listen = any;
    opts.api_listen = any;
    opts.node_cert_validity = node_cert_validity;
    init(opts).unwrap();
    let config = NodeConfig::load(dir.path()).unwrap();
    (dir, config)
}

/// A gateway stopped by [`Node::stop`].
pub(crate) struct Stopped {
    dir: tempfile::TempDir,
    federation: SocketAddr,
}

impl Stopped {
    /// The node directory, as the stopped gateway left it.
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Starts the gateway again from its directory, with the configuration on disk: its
    /// federation listener comes back on the address it had, the one peers re-dial. The API
    /// gets a new port.
    pub(crate) async fn start(self) -> Node {
        let mut config = NodeConfig::load(self.dir.path()).unwrap();
        config.federation.heartbeat_interval = Duration::from_millis(200);
        config.federation.listen = self.federation;
        Node::launch(self.dir, config).await
    }
}

/// A TCP relay on a loopback port to `target` that can be paused: while paused it forwards
/// nothing either way and keeps every connection open, as a frozen peer would.
pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    paused: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (paused, _) = tokio::sync::watch::channel(false);
        let gate = paused.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pipe(ri, wo, gate.subscribe()));
                tokio::spawn(pipe(ro, wi, gate.subscribe()));
            }
        });
        Self { addr, paused }
    }

    /// Stops forwarding, keeping the connections open.
    pub(crate) fn pause(&self) {
        self.paused.send_replace(true);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let n = tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Paused while waiting to read: hold what comes until resumed.
            _ = paused.wait_for(|p| *p) => continue,
        };
        if paused.wait_for(|p| !*p).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Federates `a` with `b` by invitation like [`federate`], with `a` dialling `b` at `via`.
pub(crate) async fn federate_via(a: &Node, b: &Node, via: SocketAddr) -> String {
    let (status, invite) = b
        .post("/v1/federations/invite", json!({"peer": "plant-a"}))
        .await;
    assert_eq!(status, 200, "{invite}");
    let mut token =
        meshfed_proto::invitation::InvitationToken::decode(invite["token"].as_str().unwrap())
            .unwrap();
    token.addresses = vec![via.to_string()];
    let (status, joined) = a
        .post("/v1/federations/join", json!({"token": token.encode()}))
        .await;
    assert_eq!(status, 200, "{joined}");
    joined["id"].as_str().unwrap().to_owned()
}
