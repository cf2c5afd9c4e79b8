//! The admin API as the CLI reaches it: the running gateway's address (from the runtime file it
//! writes, else the configuration) and the bearer token kept in the node directory.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use meshfed_node::api::models::ErrorBody;
use meshfed_node::config::NodeConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::failure::Failure;

/// A WebSocket to the API.
pub(crate) type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A client of one node's API.
pub(crate) struct ApiClient {
    dir: std::path::PathBuf,
    api: SocketAddr,
    /// How an API that listens beyond loopback is reached: over TLS, trusting the mesh CA.
    tls: Option<Arc<rustls::ClientConfig>>,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// The client for the node in `dir`. A missing or broken configuration is a usage error.
    pub(crate) fn for_dir(dir: &Path) -> Result<Self, Failure> {
        let config = NodeConfig::load(dir).map_err(|e| Failure::Config(e.into()))?;
        let token_file = config.api.token_file.resolve(dir);
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("cannot read the admin token {}", token_file.display()))
            .map_err(Failure::Config)?
            .trim()
            .to_owned();
        let runtime = meshfed_node::gateway::runtime_file(dir);
        let api = std::fs::read_to_string(&runtime)
            .ok()
            .and_then(|text| serde_json::from_str::<RuntimeFile>(&text).ok())
            .map_or(config.api.listen, |r| r.api);
        let (tls, http) = if meshfed_node::api::serves_tls(api) {
            let ca = config.identity.ca_cert.resolve(dir);
            let (tls, http) = mesh_tls(&ca).map_err(Failure::Config)?;
            (Some(tls), http)
        } else {
            (None, reqwest::Client::new())
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            api: reachable(api),
            tls,
            token,
            http,
        })
    }

    /// A client without a token for the public parts of another node's API at `api` (a
    /// broker's `/directory`).
    pub(crate) fn public(api: SocketAddr) -> Self {
        Self {
            dir: std::path::PathBuf::new(),
            api,
            tls: None,
            token: String::new(),
            http: reqwest::Client::new(),
        }
    }

    /// The API's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.api
    }

    /// The bearer token.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Opens the WebSocket at `path` (`/v1/messages/stream`, `/v1/messages/publish`) with the
    /// bearer token.
    pub(crate) async fn websocket(
        &self,
        path: &str,
    ) -> Result<WebSocket, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        let mut req = format!("{scheme}://{}{path}", self.api).into_client_request()?;
        let auth = format!("Bearer {}", self.token).parse().map_err(|e| {
            tokio_tungstenite::tungstenite::Error::HttpFormat(
                tokio_tungstenite::tungstenite::http::Error::from(e),
            )
        })?;
        req.headers_mut().insert("authorization", auth);
        // tungstenite zeroes the free part of its read buffer before each read: 16 KiB rather
        // than the default 128 KiB, as messages are a few KiB (a larger one takes more reads).
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(16 * 1024);
        // Messages are small and timed: Nagle's algorithm would hold them back.
        let tls = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        Ok(
            tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, tls)
                .await?
                .0,
        )
    }

    /// `GET path`, its answer read as a `T` (a type of `meshfed_node::api::models`).
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.call(self.http.get(self.url(path))).await
    }

    /// `POST path` with `body` as JSON, its answer read as a `T`.
    pub(crate) async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        self.call(self.http.post(self.url(path)).json(body)).await
    }

    /// `PUT path` with `body` as JSON, its answer read as a `T`.
    pub(crate) async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        self.call(self.http.put(self.url(path)).json(body)).await
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.api)
    }

    /// Sends `req` with the bearer token: the answer as a `T`, or the API's error as a failure
    /// that says `message (code, HTTP status)`.
    /// `GET path` for a stream (`text/event-stream`): the response once the gateway answered
    /// with success, its body to be read as it comes.
    pub(crate) async fn follow(&self, path: &str) -> Result<reqwest::Response, Failure> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.unreadable(status, &e))?;
        Err(self.refused(status, &body))
    }

    async fn call<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, Failure> {
        let resp = self.send(req).await?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.unreadable(status, &e))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| self.unreadable(status, &e));
        }
        Err(self.refused(status, &body))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        req.bearer_auth(&self.token).send().await.map_err(|e| {
            if e.is_connect() && self.token.is_empty() {
                Failure::Runtime(anyhow!("cannot reach the API at {} ({e})", self.api))
            } else if e.is_connect() {
                Failure::Runtime(anyhow!(
                    "cannot reach the gateway's API at {}: is `meshfed gateway --dir {}` running? ({e})",
                    self.api,
                    self.dir.display()
                ))
            } else {
                // Connected, then the request failed: say why, with every cause.
                Failure::Runtime(anyhow!(
                    "the request to the gateway's API at {} failed: {:#}",
                    self.api,
                    anyhow::Error::from(e)
                ))
            }
        })
    }

    /// The failure an answer with `status` and the error `body` stands for.
    fn refused(&self, status: reqwest::StatusCode, body: &[u8]) -> Failure {
        let ErrorBody { error } = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => return self.unreadable(status, &e),
        };
        let err = anyhow!(
            "{} ({}, HTTP {})",
            error.message,
            error.code,
            status.as_u16()
        );
        failure_of(status, err)
    }

    fn unreadable(&self, status: reqwest::StatusCode, e: &dyn std::fmt::Display) -> Failure {
        Failure::Runtime(anyhow!(
            "the gateway at {} answered {status} with a body that is not what this meshfed reads: {e}",
            self.api
        ))
    }
}

/// The address to dial for an API listening on `api`: loopback for an unspecified address
/// (`0.0.0.0`, `::`), which the API's certificate names.
fn reachable(api: SocketAddr) -> SocketAddr {
    match api.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, api.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, api.port()).into(),
        _ => api,
    }
}

/// TLS to an API that trusts only the mesh CA(s) in the PEM file `ca` (two during a rollover):
/// as the WebSockets use it, and an HTTP client doing the same.
fn mesh_tls(ca: &Path) -> anyhow::Result<(Arc<rustls::ClientConfig>, reqwest::Client)> {
    let text = std::fs::read_to_string(ca)
        .with_context(|| format!("cannot read the mesh CA {}", ca.display()))?;
    let bundle = meshfed_trust::TrustBundle::from_pem(&text)
        .with_context(|| format!("the mesh CA {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut certs = Vec::new();
    for c in bundle.cas() {
        roots
            .add(c.der().clone())
            .with_context(|| format!("the mesh CA {}", ca.display()))?;
        certs.push(reqwest::Certificate::from_der(c.der())?);
    }
    let http = reqwest::Client::builder().tls_certs_only(certs);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(config), http.build()?))
}

/// An API error as a failure: the gateway found the user's input wrong (400 `bad_request` or
/// `invalid_token`, 413 `too_large`) is a usage error (exit 2), like the checks the CLI makes
/// itself; anything else (not found, conflict, a refusing peer, the gateway's own trouble) is a
/// runtime one (exit 1).
fn failure_of(status: reqwest::StatusCode, err: anyhow::Error) -> Failure {
    match status {
        reqwest::StatusCode::BAD_REQUEST | reqwest::StatusCode::PAYLOAD_TOO_LARGE => {
            Failure::Input(err)
        }
        _ => Failure::Runtime(err),
    }
}

/// The part of a running gateway's runtime file the CLI reads.
#[derive(serde::Deserialize)]
struct RuntimeFile {
    /// Where the API listens.
    api: SocketAddr,
}
