//! `[[connector]]`: the connectors to the mesh's own bus (DESIGN §3.11), each an MQTT or NATS
//! client of the mesh's broker, with the rules that say what crosses from the bus into the
//! federation (`[[connector.export]]`) and from the federation onto the bus
//! (`[[connector.import]]`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use meshfed_proto::MeshId;
use meshfed_proto::dialect::Mapping;
use meshfed_proto::envelope::{Priority, Qos};

use super::DirPath;

/// Default time a request waits for its reply.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest wait between two attempts to reach a connector's broker.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(30);

/// A connector's name: `[a-z0-9][a-z0-9-]{0,62}`, unique within the node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectorName(String);

impl ConnectorName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ConnectorName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err("a connector name is 1 to 63 of a-z, 0-9 and '-', not starting with '-'".into())
        }
    }
}

impl fmt::Display for ConnectorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One connector: its broker and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorConfig {
    /// Its name (metrics, `connector list`, the durable queues it keeps).
    pub name: ConnectorName,
    /// The broker and how to reach it.
    pub bus: Bus,
    /// What crosses from the bus into the federation.
    pub exports: Vec<ExportRule>,
    /// What crosses from the federation onto the bus.
    pub imports: Vec<ImportRule>,
    /// Longest wait between two attempts to reach the broker (the backoff doubles from 100 ms
    /// up to it, with jitter). Default: [`DEFAULT_RECONNECT_MAX`].
    pub reconnect_max: Duration,
    /// How long a request taken from the bus waits for its reply from the federation, and a
    /// request from the federation for its responder on the bus. Default:
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
}

/// The broker a connector is a client of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    /// An MQTT broker (`kind = "mqtt"`).
    Mqtt(MqttBus),
    /// A NATS server (`kind = "nats"`).
    Nats(NatsBus),
}

impl Bus {
    /// `mqtt` or `nats`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mqtt(_) => "mqtt",
            Self::Nats(_) => "nats",
        }
    }
}

/// Which MQTT protocol the connector speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    /// MQTT 3.1.1: no properties, so user properties, content type, correlation data and
    /// response topics do not cross, and loops are prevented by a digest of what the connector
    /// published itself.
    V311,
    /// MQTT 5 (the default).
    V5,
}

/// Certificate files for TLS to a broker, relative to the node directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// CA certificates (PEM) the broker's certificate is checked against.
    pub ca_file: Option<DirPath>,
    /// The client certificate chain (PEM) presented to the broker, with `key_file`.
    pub cert_file: Option<DirPath>,
    /// The client key (PKCS#8 PEM).
    pub key_file: Option<DirPath>,
}

/// `kind = "mqtt"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttBus {
    /// The broker's host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// TLS (`mqtts://`), with its files.
    pub tls: Option<TlsFiles>,
    /// The protocol version.
    pub version: MqttVersion,
    /// The client id (a persistent session is kept under it). Default:
    /// `meshfed-<mesh>-<connector>`.
    pub client_id: Option<String>,
    /// The user name, with `password_file`.
    pub username: Option<String>,
    /// A file holding the password.
    pub password_file: Option<DirPath>,
}

/// How a connector authenticates to a NATS server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NatsAuth {
    /// Anonymously (or by client certificate alone).
    #[default]
    None,
    /// With the token in this file.
    Token(DirPath),
    /// With a user name and the password in a file.
    Password {
        /// The user.
        username: String,
        /// The file holding the password.
        file: DirPath,
    },
    /// With the NKey seed in this file.
    NKey(DirPath),
    /// With a `.creds` file (user JWT and NKey seed).
    Creds(DirPath),
}

/// `kind = "nats"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsBus {
    /// The server (`nats://host:port`, `tls://host:port`).
    pub url: String,
    /// TLS files (TLS is required with `tls://` or when a file is given).
    pub tls: Option<TlsFiles>,
    /// How to authenticate.
    pub auth: NatsAuth,
}

/// A durable JetStream consumer an export rule takes its messages from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamSource {
    /// The stream.
    pub stream: String,
    /// The durable consumer's name (created when missing, filtered on the rule's subject).
    pub durable: String,
}

/// `[[connector.export]]`: messages of the bus matching `local` cross to mesh `to`, under the
/// federation topic the mapping gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRule {
    /// Bus pattern ↔ federation pattern.
    pub mapping: Mapping,
    /// The destination mesh.
    pub to: MeshId,
    /// The federation qos; also the qos of the subscription on an MQTT bus. qos 2 needs a
    /// dedup-capable side: MQTT QoS 2, or JetStream (its stream sequence fixes the envelope
    /// id, so a redelivery is the same envelope and the receiver drops it).
    pub qos: Qos,
    /// The envelopes' priority.
    pub priority: Priority,
    /// Whether an MQTT message the broker delivers from its retained store crosses. Default:
    /// no.
    pub retained: bool,
    /// NATS: consume through this durable JetStream consumer instead of a core subscription.
    pub jetstream: Option<JetStreamSource>,
}

/// `[[connector.import]]`: federation messages matching `topic` (from `from`, if given) are
/// published on the bus under the name the mapping gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRule {
    /// Bus pattern ↔ federation pattern.
    pub mapping: Mapping,
    /// Only what this partner sends.
    pub from: Option<MeshId>,
    /// The qos of the publish on the bus: MQTT QoS 0–2; NATS core carries at most 1 (a flush
    /// the server answered), JetStream 2 (publish acknowledged, deduplicated on the envelope
    /// id).
    pub qos: Qos,
    /// MQTT: publish retained.
    pub retain: bool,
    /// NATS: publish through JetStream and wait for its acknowledgement.
    pub jetstream: bool,
}
