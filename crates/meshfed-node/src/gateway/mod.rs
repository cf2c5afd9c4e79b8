//! The gateway role: one per mesh (or several for redundancy). Its federation side accepts and
//! dials mutual-TLS links, drives the handshake from `meshfed-proto` over them and keeps each
//! federation's link alive with heartbeats; its local side is the admin and messaging API.
//!
//! Start at [`Gateway::start`]; [`links`] drives handshakes and link sessions, [`federations`]
//! invites, joins and describes federations, [`messages`] sends and receives envelopes.

pub(crate) mod delivery;
pub mod federations;
pub mod links;
pub mod messages;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshfed_proto::crypto::SigningKey;
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::handshake::LocalIdentity;
use meshfed_proto::{FederationId, MeshId, NodeName};
use meshfed_store::{Journal, JournalConfig, Store};
use meshfed_transport::{Listener, TlsIdentity, X509PeerVerifier};
use meshfed_trust::{Fingerprint, KeyPurpose, MeshCa, P384PublicKey, TrustBundle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NodeConfig;

pub use links::LinkStatus;
pub use messages::Delivery;

/// A gateway that could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A file of the node's identity is missing or unreadable.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What the file is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The node's identity files are not usable.
    #[error("the node identity in {} is not usable: {reason}", dir.display())]
    Identity {
        /// The node directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The registry could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] meshfed_store::StoreError),
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}: {reason}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The runtime address file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The current time as a protocol timestamp.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// The file where a running gateway records the addresses it actually listens on.
pub fn runtime_file(dir: &Path) -> PathBuf {
    dir.join("run").join("gateway.json")
}

/// This node's identity, loaded (and its certificate renewed when due) at start.
pub(crate) struct Identity {
    pub(crate) mesh: MeshId,
    pub(crate) node: NodeName,
    pub(crate) key: Arc<SigningKey>,
    pub(crate) cert_der: Vec<u8>,
    pub(crate) ca_der: Vec<u8>,
    pub(crate) ca_fingerprint: Fingerprint,
    pub(crate) bundle: TrustBundle,
    pub(crate) tls: TlsIdentity,
    pub(crate) cert_not_after: SystemTime,
}

/// Everything the gateway's tasks share.
pub(crate) struct Node {
    pub(crate) dir: PathBuf,
    pub(crate) config: NodeConfig,
    pub(crate) id: Identity,
    pub(crate) store: Arc<Store>,
    pub(crate) admin_token: String,
    pub(crate) federation_addr: SocketAddr,
    pub(crate) links: Mutex<HashMap<FederationId, Arc<links::LinkHandle>>>,
    pub(crate) subscribers: delivery::live::Subscribers,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) metrics: messages::Counters,
    /// Durable message storage (group commit) on the store's file.
    pub(crate) journal: Arc<Journal>,
    /// The sending stream of each federation, by peer mesh.
    pub(crate) streams: Mutex<HashMap<MeshId, Arc<delivery::outbound::Stream>>>,
    /// The receiving task.
    pub(crate) inbound: delivery::inbound::Inbound,
    /// Durable local subscriptions.
    pub(crate) durable: delivery::durable::Durable,
}

impl Node {
    /// The handshake's view of this node; the verifier checks peers for `purpose`.
    pub(crate) fn local(&self, purpose: KeyPurpose) -> LocalIdentity {
        LocalIdentity {
            mesh: self.id.mesh.clone(),
            node: self.id.node.clone(),
            bundle: vec![self.id.ca_der.clone()],
            key: self.id.key.clone(),
            capabilities: meshfed_proto::capability::Capabilities {
                max_frame: meshfed_proto::capability::frame_size::Offer(
                    self.config.federation.max_frame_size,
                ),
                ..Default::default()
            },
            policy: meshfed_proto::policy::PolicyOffer::default(),
            verifier: Arc::new(X509PeerVerifier::new(purpose)),
            step_timeout: self.config.federation.handshake_timeout,
            agreement_validity: Duration::from_secs(365 * 24 * 3600),
        }
    }

    /// Runs blocking store work off the async threads.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> T {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(v) => v,
            // A panic in store code is a bug; surface it where it happened.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

fn read(what: &'static str, path: PathBuf) -> Result<String, GatewayError> {
    std::fs::read_to_string(&path).map_err(|source| GatewayError::Read { what, path, source })
}

/// Loads the node's identity; re-issues the node certificate from the mesh CA when a third or
/// less of its validity is left ("renewed automatically before expiry").
fn load_identity(dir: &Path, config: &NodeConfig) -> Result<Identity, GatewayError> {
    let ids = &config.identity;
    let bad = |reason: String| GatewayError::Identity {
        dir: dir.to_path_buf(),
        reason,
    };
    let ca_pem = read("mesh CA certificate", ids.ca_cert.resolve(dir))?;
    let key_pem = read("node key", ids.node_key.resolve(dir))?;
    let mut cert_pem = read("node certificate", ids.node_cert.resolve(dir))?;
    let key =
        meshfed_trust::key_from_pkcs8_pem(&key_pem).map_err(|e| bad(format!("node key: {e}")))?;
    let now = SystemTime::now();
    let der = meshfed_trust::cert::cert_der_from_pem(&cert_pem)
        .map_err(|e| bad(format!("node certificate: {e}")))?;
    let info = meshfed_trust::inspect_node_cert(&der)
        .map_err(|e| bad(format!("node certificate: {e}")))?;
    let left = info.not_after.duration_since(now).unwrap_or(Duration::ZERO);
    if left < ids.node_cert_validity / 3 {
        let ca_key_pem = read("mesh CA key", ids.ca_key.resolve(dir))?;
        let ca =
            MeshCa::from_pem(&ca_pem, &ca_key_pem).map_err(|e| bad(format!("mesh CA: {e}")))?;
        let cert = ca
            .issue_node_cert(
                &config.node.name,
                &P384PublicKey::of(&key),
                now,
                ids.node_cert_validity,
            )
            .map_err(|e| bad(format!("renewing the node certificate: {e}")))?;
        cert_pem = cert.pem();
        let path = ids.node_cert.resolve(dir);
        meshfed_trust::files::write_file(
            &path,
            cert_pem.as_bytes(),
            meshfed_trust::files::FileMode::Public,
            meshfed_trust::files::IfExists::Replace,
        )
        .map_err(|e| bad(format!("writing the renewed node certificate: {e}")))?;
        tracing::info!(path = %path.display(), "renewed the node certificate");
    }
    let cert_der = meshfed_trust::cert::cert_der_from_pem(&cert_pem)
        .map_err(|e| bad(format!("node certificate: {e}")))?;
    let info = meshfed_trust::inspect_node_cert(&cert_der)
        .map_err(|e| bad(format!("node certificate: {e}")))?;
    if info.mesh != config.node.mesh || info.node != config.node.name {
        return Err(bad(format!(
            "the node certificate names {}/{}, the configuration {}/{}",
            info.mesh, info.node, config.node.mesh, config.node.name
        )));
    }
    let bundle =
        TrustBundle::from_pem(&ca_pem).map_err(|e| bad(format!("mesh CA certificate: {e}")))?;
    let ca_der = bundle
        .cas()
        .first()
        .map(|c| c.der().to_vec())
        .ok_or_else(|| bad("no CA certificate".into()))?;
    let tls = TlsIdentity::from_pem(&cert_pem, &ca_pem, &key_pem)
        .map_err(|e| bad(format!("TLS identity: {e}")))?;
    Ok(Identity {
        mesh: config.node.mesh.clone(),
        node: config.node.name.clone(),
        key: Arc::new(key),
        cert_der,
        ca_fingerprint: Fingerprint::of(&ca_der),
        ca_der,
        bundle,
        tls,
        cert_not_after: info.not_after,
    })
}

/// A running gateway.
pub struct Gateway {
    node: Arc<Node>,
    api_addr: SocketAddr,
}

impl Gateway {
    /// Loads the identity, opens the store, binds both listeners, and starts every task:
    /// accepting peers, re-dialling stored federations, and serving the API.
    pub async fn start(dir: &Path, config: NodeConfig) -> Result<Self, GatewayError> {
        let id = load_identity(dir, &config)?;
        let admin_token = read("admin token", config.api.token_file.resolve(dir))?
            .trim()
            .to_owned();
        let store_path = config.store.path.resolve(dir);
        let (store, journal) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&store_path)?;
            let journal = Journal::open(&store_path, JournalConfig::default())?;
            Ok::<_, meshfed_store::StoreError>((store, journal))
        })
        .await
        .map_err(|e| GatewayError::Identity {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })??;
        let durable = delivery::durable::Durable::load(&journal)?;
        let (inbound, inbound_rx) = delivery::inbound::Inbound::channel();
        let listen = config.federation.listen;
        let listener = Listener::bind(listen, &id.tls)
            .await
            .map_err(|e| GatewayError::Bind {
                what: "federation links",
                addr: listen,
                reason: e.to_string(),
            })?;
        let api_listen = config.api.listen;
        let api = tokio::net::TcpListener::bind(api_listen)
            .await
            .map_err(|e| GatewayError::Bind {
                what: "the admin API",
                addr: api_listen,
                reason: e.to_string(),
            })?;
        let api_addr = api.local_addr().map_err(|e| GatewayError::Bind {
            what: "the admin API",
            addr: api_listen,
            reason: e.to_string(),
        })?;
        let node = Arc::new(Node {
            dir: dir.to_path_buf(),
            federation_addr: listener.local_addr(),
            config,
            id,
            store: Arc::new(store),
            admin_token,
            links: Mutex::new(HashMap::new()),
            subscribers: delivery::live::Subscribers::default(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            metrics: messages::Counters::default(),
            journal: Arc::new(journal),
            streams: Mutex::new(HashMap::new()),
            inbound,
            durable,
        });
        delivery::inbound::start(&node, inbound_rx);
        delivery::start(&node).await;
        write_runtime_file(&node, api_addr)?;
        if listen.port() == 0 {
            tracing::warn!(
                federation = %node.federation_addr,
                "the federation listener is on an ephemeral port: invitations carry it, so meshes that join cannot re-dial after this gateway restarts; set [federation] listen to a fixed port for lasting federations"
            );
        }
        node.tracker
            .spawn(links::accept_loop(node.clone(), listener));
        links::redial_stored(&node).await;
        let router = crate::api::router(node.clone());
        let cancel = node.cancel.clone();
        node.tracker.spawn(async move {
            // Messages on the API's WebSockets are small and timed: no Nagle delay.
            let api = axum::serve::ListenerExt::tap_io(api, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let served = axum::serve(api, router)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin API stopped");
            }
        });
        tracing::info!(
            mesh = %node.id.mesh, node = %node.id.node, federation = %node.federation_addr, api = %api_addr,
            "gateway started"
        );
        Ok(Self { node, api_addr })
    }

    /// Where the admin API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The node it runs: the API's tests build its router again to read the routes it serves.
    #[cfg(test)]
    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Where federation links are accepted.
    pub fn federation_addr(&self) -> SocketAddr {
        self.node.federation_addr
    }

    /// Stops every task: links send a termination-free close (the federation stays active and
    /// resumes when the gateway is back), the API stops accepting, and all tasks are awaited.
    pub async fn shutdown(self) {
        self.node.cancel.cancel();
        self.node.tracker.close();
        self.node.tracker.wait().await;
        let _ = std::fs::remove_file(runtime_file(&self.node.dir));
        tracing::info!("gateway stopped");
    }
}

fn write_runtime_file(node: &Node, api: SocketAddr) -> Result<(), GatewayError> {
    let path = runtime_file(&node.dir);
    let body = serde_json::json!({
        "pid": std::process::id(),
        "api": api.to_string(),
        "federation": node.federation_addr.to_string(),
    });
    let write = || -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, body.to_string())
    };
    write().map_err(|source| GatewayError::Write {
        path: path.clone(),
        source,
    })
}

/// Runs a gateway until `shutdown` completes (SIGTERM, Ctrl-C), then stops it cleanly.
pub async fn run(
    dir: &Path,
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), GatewayError> {
    let gateway = Gateway::start(dir, config).await?;
    shutdown.await;
    gateway.shutdown().await;
    Ok(())
}
