//! The node's configuration: typed, with documented defaults, read from `DIR/meshfed.toml`.
//!
//! The file is TOML. Serde structs exist only at the file's edge (the private `parse` module);
//! every value is turned into its type there (mesh ids, socket addresses, humantime durations
//! like `"5s"` or `"24h"`), and an error names the file, the line, the key and what was wrong.
//! [`NodeConfig::render`] writes the file back with a comment per setting.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use meshfed_proto::{MeshId, NodeName};

pub mod connector;
mod parse;
mod render;

pub use parse::ConfigError;

/// Name of the configuration file inside the node directory.
pub const CONFIG_FILE: &str = "meshfed.toml";

/// Default address of the federation side: loopback, port 7443.
pub const DEFAULT_FEDERATION_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7443);
/// Default address of the admin API: loopback, port 7080.
pub const DEFAULT_API_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7080);
/// Default interval between heartbeats on a federation link.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Default time a federation handshake step may take.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest time one content key seals: an hour.
pub const DEFAULT_CONTENT_KEY_LIFETIME: Duration = Duration::from_secs(3600);
/// Default most envelopes one content key seals: 2^24.
pub const DEFAULT_CONTENT_KEY_MESSAGES: u64 = 1 << 24;
/// Default largest frame offered in the handshake: 1 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 1 << 20;
/// Smallest `max_frame_size` accepted: 1 KiB.
pub const MIN_MAX_FRAME_SIZE: u32 = 1 << 10;
/// Largest `max_frame_size` accepted: 16 MiB.
pub const MAX_MAX_FRAME_SIZE: u32 = 1 << 24;
/// Longest `node_cert_validity` accepted: node certificates are meant to be short-lived.
pub const MAX_NODE_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A node's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Who this node is: `[node]`.
    pub node: NodeSection,
    /// The federation side: `[federation]`.
    pub federation: FederationConfig,
    /// The admin API: `[api]`.
    pub api: ApiConfig,
    /// Certificate and key files: `[identity]`.
    pub identity: IdentityConfig,
    /// The node's store: `[store]`.
    pub store: StoreConfig,
    /// The audit trail: `[audit]`.
    pub audit: AuditConfig,
    /// Message delivery: `[delivery]`.
    pub delivery: DeliveryConfig,
    /// Limits on connections to both listeners: `[connections]`.
    pub connections: ConnectionsConfig,
    /// Peer meshes federated by configuration, without an invitation: `[[peers]]`.
    pub peers: Vec<StaticPeer>,
    /// Connectors to the mesh's own MQTT or NATS bus: `[[connector]]`.
    pub connectors: Vec<connector::ConnectorConfig>,
}

impl NodeConfig {
    /// A configuration for node `name` of mesh `mesh` with every other setting at its default.
    pub fn new(mesh: MeshId, name: NodeName) -> Self {
        Self {
            node: NodeSection {
                mesh,
                name,
                role: Role::default(),
            },
            federation: FederationConfig::default(),
            api: ApiConfig::default(),
            identity: IdentityConfig::default(),
            store: StoreConfig::default(),
            audit: AuditConfig::default(),
            delivery: DeliveryConfig::default(),
            connections: ConnectionsConfig::default(),
            peers: Vec::new(),
            connectors: Vec::new(),
        }
    }

    /// Reads `dir/meshfed.toml`.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let file = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Parses configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        parse::parse(text, file)
    }

    /// The configuration as a `meshfed.toml` file, with a comment per setting stating what it
    /// means and its default.
    pub fn render(&self) -> String {
        render::render(self)
    }
}

/// `[node]`: who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSection {
    /// The mesh this node belongs to. Required.
    pub mesh: MeshId,
    /// This node's name within its mesh (the spec's gateway id). Required.
    pub name: NodeName,
    /// What this node runs as. Default: [`Role::Gateway`].
    pub role: Role,
}

/// What a node runs as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// A gateway: links its mesh's own components to peer meshes.
    #[default]
    Gateway,
    /// A broker: relays envelopes between meshes that do not link directly.
    Broker,
}

impl Role {
    /// The role as written in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Broker => "broker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name is neither `gateway` nor `broker`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid role {value:?}: must be \"gateway\" or \"broker\"")]
pub struct InvalidRole {
    /// The rejected value.
    pub value: String,
}

impl FromStr for Role {
    type Err = InvalidRole;

    fn from_str(s: &str) -> Result<Self, InvalidRole> {
        match s {
            "gateway" => Ok(Self::Gateway),
            "broker" => Ok(Self::Broker),
            _ => Err(InvalidRole {
                value: s.chars().take(80).collect(),
            }),
        }
    }
}

/// `[federation]`: links to peer gateways and brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationConfig {
    /// Where mutual-TLS federation links are accepted. Default: [`DEFAULT_FEDERATION_LISTEN`].
    pub listen: SocketAddr,
    /// The addresses (`host:port`) invitations give peers to dial, when they are not `listen`:
    /// a gateway listening on `0.0.0.0`, or behind NAT or a load balancer. Default: none, and
    /// invitations carry the address actually listened on.
    pub advertise: Vec<String>,
    /// Interval between heartbeats; liveness and revocation act within one interval.
    /// Default: [`DEFAULT_HEARTBEAT_INTERVAL`].
    pub heartbeat_interval: Duration,
    /// Longest time one handshake step may take. Default: [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// The longest one content key seals before the next envelope gets a fresh one.
    /// Default: [`DEFAULT_CONTENT_KEY_LIFETIME`].
    pub content_key_lifetime: Duration,
    /// The most envelopes one content key seals (1..=[`meshfed_proto::crypto::KEY_VOLUME_LIMIT`]).
    /// Default: [`DEFAULT_CONTENT_KEY_MESSAGES`].
    pub content_key_messages: u64,
    /// Largest frame, in bytes, this node offers in the handshake
    /// ([`MIN_MAX_FRAME_SIZE`]..=[`MAX_MAX_FRAME_SIZE`]). Default: [`DEFAULT_MAX_FRAME_SIZE`].
    pub max_frame_size: u32,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_FEDERATION_LISTEN,
            advertise: Vec::new(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            content_key_lifetime: DEFAULT_CONTENT_KEY_LIFETIME,
            content_key_messages: DEFAULT_CONTENT_KEY_MESSAGES,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

/// `[api]`: the admin REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Where the admin API listens. Default: [`DEFAULT_API_LISTEN`].
    pub listen: SocketAddr,
    /// File holding the admin bearer token. Default: `admin.token`.
    pub token_file: DirPath,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_API_LISTEN,
            token_file: DirPath::from_static("admin.token"),
        }
    }
}

/// `[identity]`: the mesh CA and this node's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// The mesh CA certificate (PEM). Default: `ca/ca.crt`.
    pub ca_cert: DirPath,
    /// The mesh CA private key (PKCS#8 PEM, mode 0600). Default: `ca/ca.key`. A node with an
    /// issuing CA does not need it (`meshfed init --root-key-out` keeps it elsewhere).
    pub ca_key: DirPath,
    /// The mesh's issuing CA certificate (PEM): an intermediate with path length 0 below the
    /// mesh CA, presented on links between the node certificate and the mesh CA. Default:
    /// `ca/issuing.crt`.
    pub issuing_ca_cert: DirPath,
    /// The issuing CA private key (PKCS#8 PEM, mode 0600), from which the node renews its
    /// certificate when it is there (else from `ca_key`). Default: `ca/issuing.key`.
    pub issuing_ca_key: DirPath,
    /// This node's certificate (PEM). Default: `node/node.crt`.
    pub node_cert: DirPath,
    /// This node's private key (PKCS#8 PEM, mode 0600). Default: `node/node.key`.
    pub node_key: DirPath,
    /// Lifetime of node certificates issued for this node (at most [`MAX_NODE_CERT_VALIDITY`]).
    /// Default: 24 h.
    pub node_cert_validity: Duration,
    /// How long before its expiry the running node renews its certificate (shorter than
    /// `node_cert_validity`). Default (`None`): a third of `node_cert_validity`, so a
    /// certificate is renewed at two thirds of its lifetime.
    pub node_cert_renew_before: Option<Duration>,
    /// Whether each renewal brings a fresh node key (written to `node_key`), not only a new
    /// certificate for the same one. Default: true.
    pub rotate_node_key: bool,
}

impl IdentityConfig {
    /// How long before its expiry the node certificate is renewed: `node_cert_renew_before`,
    /// else a third of `node_cert_validity`.
    pub fn renew_before(&self) -> Duration {
        self.node_cert_renew_before
            .unwrap_or(self.node_cert_validity / 3)
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            ca_cert: DirPath::from_static("ca/ca.crt"),
            ca_key: DirPath::from_static("ca/ca.key"),
            issuing_ca_cert: DirPath::from_static("ca/issuing.crt"),
            issuing_ca_key: DirPath::from_static("ca/issuing.key"),
            node_cert: DirPath::from_static("node/node.crt"),
            node_key: DirPath::from_static("node/node.key"),
            node_cert_validity: meshfed_trust::DEFAULT_NODE_CERT_VALIDITY,
            node_cert_renew_before: None,
            rotate_node_key: true,
        }
    }
}

/// `[store]`: where the registry, queues and audit log live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The embedded store's database file. Default: `store/meshfed.db`.
    pub path: DirPath,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: DirPath::from_static("store/meshfed.db"),
        }
    }
}

/// `[audit]`: how the audit trail signs its tree heads (DESIGN §3.9). What it records of each
/// federation's traffic is the agreement's `compliance.audit_level`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// A tree head is signed once this many records wait for one. Default 1,000.
    pub head_every: u64,
    /// A tree head is signed at the latest this long after the first record that waits for
    /// one. Default 10 s.
    pub head_interval: Duration,
    /// Failed handshakes from one address for one reason are recorded as one record per this
    /// window, with their count. Default 60 s.
    pub failure_window: Duration,
}

/// Largest `audit.head_every` accepted.
pub const MAX_HEAD_EVERY: u64 = 1_000_000;

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            head_every: 1_000,
            head_interval: Duration::from_secs(10),
            failure_window: Duration::from_secs(60),
        }
    }
}

/// How envelopes are signed on a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignatureMode {
    /// One P-384 signature over the Merkle root of each batch of envelopes sent together
    /// (DESIGN.md §3.4); every envelope stays verifiable alone with its inclusion proof.
    #[default]
    Batch,
    /// One P-384 signature per envelope.
    Message,
}

impl SignatureMode {
    /// The mode as written in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Message => "message",
        }
    }
}

impl fmt::Display for SignatureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signature mode is neither `batch` nor `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signature mode {value:?}: must be \"batch\" or \"message\"")]
pub struct InvalidSignatureMode {
    /// The rejected value.
    pub value: String,
}

impl FromStr for SignatureMode {
    type Err = InvalidSignatureMode;

    fn from_str(s: &str) -> Result<Self, InvalidSignatureMode> {
        match s {
            "batch" => Ok(Self::Batch),
            "message" => Ok(Self::Message),
            _ => Err(InvalidSignatureMode {
                value: s.chars().take(80).collect(),
            }),
        }
    }
}

/// `[delivery]`: queues, flow control and signatures of the messages this node sends and
/// receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// How envelopes are signed on the links. Default: [`SignatureMode::Batch`].
    pub signatures: SignatureMode,
    /// Most envelopes sent in one transfer frame (and so under one batch signature). Default 1024.
    pub max_batch: usize,
    /// Most messages held in memory for one peer mesh (queued, being stored, or sent and not yet
    /// acknowledged; store-and-forward while the peer is away). At the limit a reliable (qos ≥ 1)
    /// sender waits for room (the publish socket stops reading) or is refused (`POST` answers
    /// 503 with `Retry-After`), and qos 0 messages are shed, lowest priority first (DESIGN §3.5).
    /// Default 8192: four default windows, enough to keep a link busy, with the gateway's memory
    /// bounded (see [`DeliveryConfig::DEFAULT_MAX_QUEUED_BYTES`]).
    pub max_queued_messages: usize,
    /// Most payload bytes held in memory for one peer mesh, with the same effect at the limit.
    /// Default 64 MiB.
    pub max_queued_bytes: u64,
    /// Messages a peer may have on the way to this node before it waits for credit; also the
    /// most unacknowledged messages this node keeps in flight. Default 2048.
    pub window: u64,
    /// How long a streamed batch stays open after its first envelope before it is closed and
    /// its head signed (DESIGN §3.4). Zero signs each transfer before it is sent. Default 2 ms.
    pub sign_window: Duration,
    /// How long a peer's streamed batch may wait for its head, from its first envelope, before
    /// the peer counts as misbehaving. Default 10 s.
    pub head_timeout: Duration,
    /// On a broker: most envelopes held in custody for destinations that are away, over all
    /// of them (store-and-forward, durable); beyond it a handed envelope is refused with
    /// `custody_full` and stays with whoever handed it. Default 100,000.
    pub custody_max_messages: u64,
    /// On a broker: most bytes held in custody. Default 1 GiB.
    pub custody_max_bytes: u64,
}

impl DeliveryConfig {
    /// Default [`DeliveryConfig::max_queued_messages`].
    pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 8192;
    /// Default [`DeliveryConfig::max_queued_bytes`]: 64 MiB. With the default message count it
    /// keeps what one peer's stream holds in memory near 100 MiB at most (each message also
    /// carries its header and the queue's bookkeeping, about 1 KiB), so that a gateway under a
    /// publisher faster than its link stays well under 256 MiB resident.
    pub const DEFAULT_MAX_QUEUED_BYTES: u64 = 64 << 20;
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            signatures: SignatureMode::Batch,
            max_batch: 1024,
            max_queued_messages: Self::DEFAULT_MAX_QUEUED_MESSAGES,
            max_queued_bytes: Self::DEFAULT_MAX_QUEUED_BYTES,
            window: 2048,
            sign_window: DEFAULT_SIGN_WINDOW,
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            custody_max_messages: 100_000,
            custody_max_bytes: 1 << 30,
        }
    }
}

/// Default time a streamed batch stays open after its first envelope.
pub const DEFAULT_SIGN_WINDOW: Duration = Duration::from_millis(2);
/// Longest `delivery.sign_window` accepted.
pub const MAX_SIGN_WINDOW: Duration = Duration::from_secs(1);
/// Default time a peer's streamed batch may wait for its head.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `delivery.head_timeout` accepted.
pub const MAX_HEAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Default most connections per listener that have not authenticated yet.
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 256;
/// Default time an API connection may sit idle before it is closed.
pub const DEFAULT_API_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default interval of the summary line of refused connections.
pub const DEFAULT_REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// `[connections]`: what the federation listener and the API accept from clients that have not
/// proved who they are, and how long an idle API connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionsConfig {
    /// Most connections per listener that have not authenticated yet: on the federation port,
    /// TLS and federation handshakes in progress; on the API, connections that have not yet
    /// sent a request with a valid token. A connection beyond it is closed at once, counted and
    /// logged. Not per address: every local client comes from the same one.
    /// Default: [`DEFAULT_MAX_UNAUTHENTICATED`].
    pub max_unauthenticated: usize,
    /// An API connection with no request in progress that sends and receives nothing for this
    /// long is closed. Default: [`DEFAULT_API_IDLE_TIMEOUT`].
    pub api_idle_timeout: Duration,
    /// Refused connections are logged in full once per reason and interval, then as one
    /// summary line per interval; `/metrics` counts every one by reason.
    /// Default: [`DEFAULT_REFUSAL_LOG_INTERVAL`].
    pub refusal_log_interval: Duration,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
            api_idle_timeout: DEFAULT_API_IDLE_TIMEOUT,
            refusal_log_interval: DEFAULT_REFUSAL_LOG_INTERVAL,
        }
    }
}

/// `[[peers]]`: a peer mesh this node federates with by configuration (DESIGN.md §3.2,
/// discovery by static configuration): its gateway's address and the SHA-384 fingerprint of its
/// CA stand in for an invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPeer {
    /// The peer mesh. Required.
    pub mesh: MeshId,
    /// Its gateway's federation address, `host:port`. Required when this node dials.
    pub address: Option<String>,
    /// SHA-384 of its mesh CA certificate (DER), as `meshfed init` and `GET /v1/node` show it.
    /// Required.
    pub ca_fingerprint: meshfed_trust::Fingerprint,
    /// Whether this node dials the peer (else it only accepts the peer's dial). When both sides
    /// dial, the link the mesh with the smaller id dials is the one that is kept. Default: true.
    pub dial: bool,
}

/// A path as written in the configuration: relative to the node directory unless absolute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirPath(String);

/// A configured path is empty or holds a NUL byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {value:?}: must be non-empty and free of NUL bytes")]
pub struct InvalidPath {
    /// The rejected value.
    pub value: String,
}

impl DirPath {
    pub(crate) fn from_static(s: &'static str) -> Self {
        Self(s.to_owned())
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path on disk for a node directory `dir`.
    pub fn resolve(&self, dir: &Path) -> PathBuf {
        dir.join(&self.0)
    }
}

impl FromStr for DirPath {
    type Err = InvalidPath;

    fn from_str(s: &str) -> Result<Self, InvalidPath> {
        if s.is_empty() || s.contains('\0') {
            return Err(InvalidPath {
                value: s.chars().take(80).collect(),
            });
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for DirPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_inside_the_dir_and_absolute_ones_stay() {
        let dir = Path::new("/srv/meshfed");
        let rel: DirPath = "ca/ca.crt".parse().unwrap();
        assert_eq!(rel.resolve(dir), Path::new("/srv/meshfed/ca/ca.crt"));
        let abs: DirPath = "/etc/meshfed/ca.crt".parse().unwrap();
        assert_eq!(abs.resolve(dir), Path::new("/etc/meshfed/ca.crt"));
        assert!("".parse::<DirPath>().is_err());
    }

    #[test]
    fn role_parses_its_two_names_only() {
        assert_eq!("broker".parse::<Role>().unwrap(), Role::Broker);
        let err = "Gateway".parse::<Role>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid role \"Gateway\": must be \"gateway\" or \"broker\""
        );
    }
}
