//! The file edge: `meshfed.toml` as serde sees it, and its conversion into [`NodeConfig`].

use std::fmt::Display;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod connector;

use super::{
    ApiConfig, ConnectionsConfig, DeliveryConfig, FederationConfig, IdentityConfig,
    MAX_HEAD_TIMEOUT, MAX_MAX_FRAME_SIZE, MAX_NODE_CERT_VALIDITY, MAX_SIGN_WINDOW,
    MIN_MAX_FRAME_SIZE, NodeConfig, NodeSection, StaticPeer, StoreConfig,
};
use super::{AuditConfig, MAX_HEAD_EVERY};

/// Smallest `delivery.max_batch` accepted.
pub(super) const MIN_MAX_BATCH: usize = 1;
/// Largest `delivery.max_batch` accepted.
pub(super) const MAX_MAX_BATCH: usize = 65_536;
/// Smallest `delivery.window` accepted.
pub(super) const MIN_WINDOW: u64 = 256;
/// Largest `delivery.window` accepted.
pub(super) const MAX_WINDOW: u64 = 1_000_000;
/// Smallest `delivery.max_queued_messages` accepted.
pub(super) const MIN_MAX_QUEUED_MESSAGES: usize = 1;
/// Smallest `delivery.max_queued_bytes` accepted: 1 MiB.
pub(super) const MIN_MAX_QUEUED_BYTES: u64 = 1 << 20;
/// Largest `connections.max_unauthenticated` accepted.
pub(super) const MAX_MAX_UNAUTHENTICATED: usize = 65_536;

/// The configuration file cannot be used. Every variant names the file; those about a value
/// name its line and key too.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {}", file.display())]
    Read {
        /// The configuration file.
        file: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// The file is not TOML of the expected shape (syntax, unknown key, wrong type).
    #[error("{}:{line}:{column}: {message}", file.display())]
    Syntax {
        /// The configuration file.
        file: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the TOML reader said.
        message: String,
    },
    /// A required key is absent.
    #[error("{}: missing required key {key}", file.display())]
    Missing {
        /// The configuration file.
        file: PathBuf,
        /// The key, `section.name`.
        key: &'static str,
    },
    /// A value does not parse into its type or is out of range.
    #[error("{}:{line}: {key} = {value}: {reason}", file.display())]
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// The key, `section.name`.
        key: &'static str,
        /// The value as written.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFile {
    node: RawNode,
    federation: RawFederation,
    api: RawApi,
    identity: RawIdentity,
    store: RawStore,
    audit: RawAudit,
    delivery: RawDelivery,
    connections: RawConnections,
    peers: Vec<RawPeer>,
    connector: Vec<connector::RawConnector>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    head_every: Integer,
    head_interval: Text,
    failure_window: Text,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawPeer {
    mesh: Text,
    address: Text,
    ca_fingerprint: Text,
    dial: Option<Spanned<bool>>,
}

type Text = Option<Spanned<String>>;
type Integer = Option<Spanned<i64>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawNode {
    mesh: Text,
    name: Text,
    role: Text,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFederation {
    listen: Text,
    advertise: Option<Spanned<Vec<String>>>,
    heartbeat_interval: Text,
    handshake_timeout: Text,
    content_key_lifetime: Text,
    content_key_messages: Integer,
    max_frame_size: Integer,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    listen: Text,
    token_file: Text,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawIdentity {
    ca_cert: Text,
    ca_key: Text,
    issuing_ca_cert: Text,
    issuing_ca_key: Text,
    node_cert: Text,
    node_key: Text,
    node_cert_validity: Text,
    node_cert_renew_before: Text,
    rotate_node_key: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    path: Text,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawDelivery {
    signatures: Text,
    max_batch: Integer,
    max_queued_messages: Integer,
    max_queued_bytes: Integer,
    window: Integer,
    sign_window: Text,
    head_timeout: Text,
    custody_max_messages: Integer,
    custody_max_bytes: Integer,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConnections {
    max_unauthenticated: Integer,
    api_idle_timeout: Text,
    refusal_log_interval: Text,
}

pub(super) fn parse(text: &str, file: &Path) -> Result<NodeConfig, ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map_or((1, 1), |span| line_and_column(text, span.start));
        ConfigError::Syntax {
            file: file.to_path_buf(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })?;
    let f = Fields { file, text };
    Ok(NodeConfig {
        node: f.node(raw.node)?,
        federation: f.federation(raw.federation)?,
        api: f.api(raw.api)?,
        identity: f.identity(raw.identity)?,
        store: StoreConfig {
            path: f.value("store.path", raw.store.path, StoreConfig::default().path)?,
        },
        audit: f.audit(raw.audit)?,
        delivery: f.delivery(raw.delivery)?,
        connections: f.connections(raw.connections)?,
        peers: raw
            .peers
            .into_iter()
            .map(|p| f.peer(p))
            .collect::<Result<_, _>>()?,
        connectors: f.connectors(raw.connector)?,
    })
}

/// Whether `s` is `host:port` with a non-empty host and a port number.
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Turns raw values into typed ones, naming the file, line and key on failure.
struct Fields<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Fields<'_> {
    fn node(&self, raw: RawNode) -> Result<NodeSection, ConfigError> {
        Ok(NodeSection {
            mesh: self.required("node.mesh", raw.mesh)?,
            name: self.required("node.name", raw.name)?,
            role: self.value("node.role", raw.role, Default::default())?,
        })
    }

    fn federation(&self, raw: RawFederation) -> Result<FederationConfig, ConfigError> {
        let d = FederationConfig::default();
        Ok(FederationConfig {
            listen: self.value("federation.listen", raw.listen, d.listen)?,
            advertise: self.addresses("federation.advertise", raw.advertise)?,
            heartbeat_interval: self.duration(
                "federation.heartbeat_interval",
                raw.heartbeat_interval,
                d.heartbeat_interval,
                None,
            )?,
            handshake_timeout: self.duration(
                "federation.handshake_timeout",
                raw.handshake_timeout,
                d.handshake_timeout,
                None,
            )?,
            content_key_lifetime: self.duration(
                "federation.content_key_lifetime",
                raw.content_key_lifetime,
                d.content_key_lifetime,
                None,
            )?,
            content_key_messages: self.integer(
                "federation.content_key_messages",
                raw.content_key_messages,
                d.content_key_messages,
                Bound::Between(1, meshfed_proto::crypto::KEY_VOLUME_LIMIT),
                "",
            )?,
            max_frame_size: self.integer(
                "federation.max_frame_size",
                raw.max_frame_size,
                d.max_frame_size,
                Bound::Between(MIN_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE),
                " bytes",
            )?,
        })
    }

    fn api(&self, raw: RawApi) -> Result<ApiConfig, ConfigError> {
        let d = ApiConfig::default();
        Ok(ApiConfig {
            listen: self.value("api.listen", raw.listen, d.listen)?,
            token_file: self.value("api.token_file", raw.token_file, d.token_file)?,
        })
    }

    fn identity(&self, raw: RawIdentity) -> Result<IdentityConfig, ConfigError> {
        let d = IdentityConfig::default();
        let node_cert_validity = self.duration(
            "identity.node_cert_validity",
            raw.node_cert_validity,
            d.node_cert_validity,
            Some(MAX_NODE_CERT_VALIDITY),
        )?;
        let node_cert_renew_before = match raw.node_cert_renew_before {
            None => None,
            Some(raw) => {
                let key = "identity.node_cert_renew_before";
                let (span, value) = (raw.span(), quoted(raw.get_ref()));
                let d = self.duration(key, Some(raw), Duration::ZERO, None)?;
                if d >= node_cert_validity {
                    let reason = format!(
                        "must be shorter than identity.node_cert_validity ({}), or the \
                         certificate would be renewed again as soon as it is issued",
                        humantime::format_duration(node_cert_validity)
                    );
                    return Err(self.invalid(key, span, value, reason));
                }
                Some(d)
            }
        };
        Ok(IdentityConfig {
            ca_cert: self.value("identity.ca_cert", raw.ca_cert, d.ca_cert)?,
            ca_key: self.value("identity.ca_key", raw.ca_key, d.ca_key)?,
            issuing_ca_cert: self.value(
                "identity.issuing_ca_cert",
                raw.issuing_ca_cert,
                d.issuing_ca_cert,
            )?,
            issuing_ca_key: self.value(
                "identity.issuing_ca_key",
                raw.issuing_ca_key,
                d.issuing_ca_key,
            )?,
            node_cert: self.value("identity.node_cert", raw.node_cert, d.node_cert)?,
            node_key: self.value("identity.node_key", raw.node_key, d.node_key)?,
            node_cert_validity,
            node_cert_renew_before,
            rotate_node_key: raw.rotate_node_key.is_none_or(Spanned::into_inner),
        })
    }

    fn audit(&self, raw: RawAudit) -> Result<AuditConfig, ConfigError> {
        let d = AuditConfig::default();
        let positive = |key: &'static str, raw: Text, default: Duration| {
            let at = raw.as_ref().map(|r| (r.span(), r.get_ref().clone()));
            let v = self.duration(key, raw, default, None)?;
            match at {
                Some((span, text)) if v.is_zero() => {
                    Err(self.invalid(key, span, text, "must be longer than zero".to_owned()))
                }
                _ => Ok(v),
            }
        };
        Ok(AuditConfig {
            head_every: self.integer(
                "audit.head_every",
                raw.head_every,
                d.head_every,
                Bound::Between(1, MAX_HEAD_EVERY),
                "records",
            )?,
            head_interval: positive("audit.head_interval", raw.head_interval, d.head_interval)?,
            failure_window: positive("audit.failure_window", raw.failure_window, d.failure_window)?,
        })
    }

    fn delivery(&self, raw: RawDelivery) -> Result<DeliveryConfig, ConfigError> {
        let d = DeliveryConfig::default();
        Ok(DeliveryConfig {
            signatures: self.value("delivery.signatures", raw.signatures, d.signatures)?,
            max_batch: self.integer(
                "delivery.max_batch",
                raw.max_batch,
                d.max_batch,
                Bound::Between(MIN_MAX_BATCH, MAX_MAX_BATCH),
                "",
            )?,
            max_queued_messages: self.integer(
                "delivery.max_queued_messages",
                raw.max_queued_messages,
                d.max_queued_messages,
                Bound::AtLeast(MIN_MAX_QUEUED_MESSAGES),
                "",
            )?,
            max_queued_bytes: self.integer(
                "delivery.max_queued_bytes",
                raw.max_queued_bytes,
                d.max_queued_bytes,
                Bound::AtLeast(MIN_MAX_QUEUED_BYTES),
                " bytes",
            )?,
            window: self.integer(
                "delivery.window",
                raw.window,
                d.window,
                Bound::Between(MIN_WINDOW, MAX_WINDOW),
                "",
            )?,
            sign_window: self.sign_window(raw.sign_window, d.sign_window)?,
            head_timeout: self.duration(
                "delivery.head_timeout",
                raw.head_timeout,
                d.head_timeout,
                Some(MAX_HEAD_TIMEOUT),
            )?,
            custody_max_messages: self.integer(
                "delivery.custody_max_messages",
                raw.custody_max_messages,
                d.custody_max_messages,
                Bound::AtLeast(1),
                "",
            )?,
            custody_max_bytes: self.integer(
                "delivery.custody_max_bytes",
                raw.custody_max_bytes,
                d.custody_max_bytes,
                Bound::AtLeast(MIN_MAX_QUEUED_BYTES),
                " bytes",
            )?,
        })
    }

    fn peer(&self, raw: RawPeer) -> Result<StaticPeer, ConfigError> {
        let dial = raw.dial.is_none_or(Spanned::into_inner);
        let address = match raw.address {
            Some(raw) => {
                if !is_host_port(raw.get_ref()) {
                    let span = raw.span();
                    return Err(self.invalid(
                        "peers.address",
                        span,
                        format!("{:?}", raw.into_inner()),
                        "must be host:port".to_owned(),
                    ));
                }
                Some(raw.into_inner())
            }
            None if dial => {
                return Err(ConfigError::Missing {
                    file: self.file.to_path_buf(),
                    key: "peers.address",
                });
            }
            None => None,
        };
        Ok(StaticPeer {
            mesh: self.required("peers.mesh", raw.mesh)?,
            address,
            ca_fingerprint: self.required("peers.ca_fingerprint", raw.ca_fingerprint)?,
            dial,
        })
    }

    /// A list of `host:port` addresses.
    fn addresses(
        &self,
        key: &'static str,
        raw: Option<Spanned<Vec<String>>>,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Vec::new());
        };
        let span = raw.span();
        let list = raw.into_inner();
        if let Some(bad) = list.iter().find(|a| !is_host_port(a)) {
            return Err(self.invalid(
                key,
                span,
                format!("{bad:?}"),
                "each address must be host:port".to_owned(),
            ));
        }
        Ok(list)
    }

    fn connections(&self, raw: RawConnections) -> Result<ConnectionsConfig, ConfigError> {
        let d = ConnectionsConfig::default();
        Ok(ConnectionsConfig {
            max_unauthenticated: self.integer(
                "connections.max_unauthenticated",
                raw.max_unauthenticated,
                d.max_unauthenticated,
                Bound::Between(1, MAX_MAX_UNAUTHENTICATED),
                "",
            )?,
            api_idle_timeout: self.duration(
                "connections.api_idle_timeout",
                raw.api_idle_timeout,
                d.api_idle_timeout,
                None,
            )?,
            refusal_log_interval: self.duration(
                "connections.refusal_log_interval",
                raw.refusal_log_interval,
                d.refusal_log_interval,
                None,
            )?,
        })
    }

    fn invalid(
        &self,
        key: &'static str,
        span: Range<usize>,
        value: String,
        reason: String,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: line_and_column(self.text, span.start).0,
            key,
            value,
            reason,
        }
    }

    fn required<T>(&self, key: &'static str, raw: Text) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let raw = raw.ok_or_else(|| ConfigError::Missing {
            file: self.file.to_path_buf(),
            key,
        })?;
        self.convert(key, raw, |s| s.parse::<T>().map_err(|e| e.to_string()))
    }

    fn value<T>(&self, key: &'static str, raw: Text, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match raw {
            None => Ok(default),
            Some(raw) => self.convert(key, raw, |s| s.parse::<T>().map_err(|e| e.to_string())),
        }
    }

    /// `delivery.sign_window`: a humantime duration from zero (sign before sending) to
    /// [`MAX_SIGN_WINDOW`].
    fn sign_window(&self, raw: Text, default: Duration) -> Result<Duration, ConfigError> {
        let Some(raw) = raw else {
            return Ok(default);
        };
        self.convert("delivery.sign_window", raw, |s| {
            let d = humantime::parse_duration(s)
                .map_err(|e| format!("{e} (write durations like \"2ms\", \"0ms\")"))?;
            if d > MAX_SIGN_WINDOW {
                return Err(format!(
                    "must be at most {}",
                    humantime::format_duration(MAX_SIGN_WINDOW)
                ));
            }
            Ok(d)
        })
    }

    /// A humantime duration ("5s", "24h"): non-zero and at most `max` if given.
    fn duration(
        &self,
        key: &'static str,
        raw: Text,
        default: Duration,
        max: Option<Duration>,
    ) -> Result<Duration, ConfigError> {
        let Some(raw) = raw else {
            return Ok(default);
        };
        self.convert(key, raw, |s| {
            let d = humantime::parse_duration(s)
                .map_err(|e| format!("{e} (write durations like \"5s\", \"10m\", \"24h\")"))?;
            if d.is_zero() {
                return Err("must be longer than zero".to_owned());
            }
            match max {
                Some(max) if d > max => Err(format!(
                    "must be at most {}",
                    humantime::format_duration(max)
                )),
                _ => Ok(d),
            }
        })
    }

    /// A TOML integer within `bound`; `unit` follows the numbers in the refusal (" bytes").
    fn integer<T>(
        &self,
        key: &'static str,
        raw: Integer,
        default: T,
        bound: Bound<T>,
        unit: &str,
    ) -> Result<T, ConfigError>
    where
        T: TryFrom<i64> + PartialOrd + Display + Copy,
    {
        let Some(raw) = raw else {
            return Ok(default);
        };
        let span = raw.span();
        let n = raw.into_inner();
        T::try_from(n)
            .ok()
            .filter(|v| bound.contains(*v))
            .ok_or_else(|| self.invalid(key, span, n.to_string(), bound.rule(unit)))
    }

    fn convert<T>(
        &self,
        key: &'static str,
        raw: Spanned<String>,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let span = raw.span();
        let value = raw.into_inner();
        f(&value).map_err(|reason| self.invalid(key, span, quoted(&value), reason))
    }
}

/// The range an integer setting must fall in.
#[derive(Clone, Copy)]
enum Bound<T> {
    Between(T, T),
    AtLeast(T),
}

impl<T: PartialOrd + Display + Copy> Bound<T> {
    fn contains(self, v: T) -> bool {
        match self {
            Self::Between(min, max) => min <= v && v <= max,
            Self::AtLeast(min) => min <= v,
        }
    }

    fn rule(self, unit: &str) -> String {
        match self {
            Self::Between(min, max) => format!("must be between {min} and {max}{unit}"),
            Self::AtLeast(min) => format!("must be at least {min}{unit}"),
        }
    }
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// 1-based line and column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::super::SignatureMode;
    use super::*;

    fn parse_err(text: &str) -> String {
        parse(text, Path::new("/x/meshfed.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn peers_are_read_and_a_bad_one_is_named() {
        let head = "[node]\nmesh = \"plant-a\"\nname = \"gw1\"\n";
        let fp = "ab".repeat(48);
        let cfg = parse(
            &format!("{head}[[peers]]\nmesh = \"supplier-b\"\naddress = \"127.0.0.1:7444\"\nca_fingerprint = \"{fp}\"\n"),
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(cfg.peers.len(), 1);
        assert_eq!(cfg.peers[0].mesh.as_str(), "supplier-b");
        assert!(cfg.peers[0].dial, "dials by default");
        assert_eq!(cfg.peers[0].ca_fingerprint.to_string(), fp);

        let err = parse_err(&format!(
            "{head}[[peers]]\nmesh = \"supplier-b\"\naddress = \"nowhere\"\nca_fingerprint = \"{fp}\"\n"
        ));
        assert_eq!(
            err,
            "/x/meshfed.toml:6: peers.address = \"nowhere\": must be host:port"
        );
        let err = parse_err(&format!(
            "{head}[[peers]]\nmesh = \"supplier-b\"\naddress = \"h:1\"\nca_fingerprint = \"abc\"\n"
        ));
        assert!(
            err.starts_with("/x/meshfed.toml:7: peers.ca_fingerprint = \"abc\": "),
            "{err}"
        );
        let err = parse_err(&format!("{head}[[peers]]\naddress = \"h:1\"\n"));
        assert!(err.contains("peers.mesh"), "{err}");
    }

    #[test]
    fn advertised_addresses_must_each_be_host_and_port() {
        let head = "[node]\nmesh = \"plant-a\"\nname = \"gw1\"\n[federation]\n";
        let cfg = parse(
            &format!("{head}advertise = [\"gw.plant-a.example:7443\", \"10.0.0.5:7443\"]\n"),
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(
            cfg.federation.advertise,
            ["gw.plant-a.example:7443", "10.0.0.5:7443"]
        );
        let err = parse_err(&format!("{head}advertise = [\"a:1\", \"b\"]\n"));
        assert_eq!(
            err,
            "/x/meshfed.toml:5: federation.advertise = \"b\": each address must be host:port"
        );
    }

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_and_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let cfg = parse(
            "[node]\nmesh = \"plant-a\"\nname = \"gw1\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let expected = NodeConfig::new("plant-a".parse().unwrap(), "gw1".parse().unwrap());
        assert_eq!(cfg, expected);
        assert_eq!(cfg.federation.listen.to_string(), "127.0.0.1:7443");
        assert_eq!(cfg.federation.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(cfg.federation.handshake_timeout, Duration::from_secs(10));
        assert_eq!(cfg.federation.max_frame_size, 1_048_576);
        assert_eq!(cfg.api.listen.to_string(), "127.0.0.1:7080");
        assert_eq!(cfg.identity.node_cert_validity, Duration::from_secs(86_400));
        assert_eq!(cfg.store.path.as_str(), "store/meshfed.db");
        assert_eq!(cfg.delivery.signatures, SignatureMode::Batch);
        assert_eq!(cfg.delivery.max_batch, 1024);
        assert_eq!(cfg.delivery.max_queued_messages, 8192);
        assert_eq!(cfg.delivery.max_queued_bytes, 64 << 20);
        assert_eq!(cfg.delivery.window, DeliveryConfig::default().window);
    }

    const NODE: &str = "[node]\nmesh = \"m\"\nname = \"n\"\n[delivery]\n";

    fn delivery_err(line: &str) -> String {
        parse_err(&format!("{NODE}{line}\n"))
    }

    #[test]
    fn delivery_section_is_read_into_its_types() {
        let text = format!(
            "{NODE}signatures = \"message\"\nmax_batch = 1\nmax_queued_messages = 1\n\
             max_queued_bytes = 1048576\nwindow = 1000000\n"
        );
        let d = parse(&text, Path::new("m.toml")).unwrap().delivery;
        assert_eq!(d.signatures, SignatureMode::Message);
        assert_eq!(
            (
                d.max_batch,
                d.max_queued_messages,
                d.max_queued_bytes,
                d.window
            ),
            (1, 1, 1 << 20, 1_000_000)
        );
        let text = format!("{NODE}max_batch = 65536\nwindow = 256\n");
        let d = parse(&text, Path::new("m.toml")).unwrap().delivery;
        assert_eq!((d.max_batch, d.window), (65_536, 256));
        assert_eq!(
            (d.sign_window, d.head_timeout),
            (Duration::from_millis(2), Duration::from_secs(10))
        );
        let text = format!("{NODE}sign_window = \"0ms\"\nhead_timeout = \"30s\"\n");
        let d = parse(&text, Path::new("m.toml")).unwrap().delivery;
        assert_eq!(
            (d.sign_window, d.head_timeout),
            (Duration::ZERO, Duration::from_secs(30))
        );
    }

    #[test]
    fn unknown_signature_mode_names_the_two_modes() {
        assert_eq!(
            delivery_err("signatures = \"merkle\""),
            "/x/meshfed.toml:5: delivery.signatures = \"merkle\": \
             invalid signature mode \"merkle\": must be \"batch\" or \"message\""
        );
    }

    #[test]
    fn delivery_values_out_of_range_are_refused_with_their_bounds() {
        for (line, message) in [
            (
                "max_batch = 0",
                "delivery.max_batch = 0: must be between 1 and 65536",
            ),
            (
                "max_batch = 65537",
                "delivery.max_batch = 65537: must be between 1 and 65536",
            ),
            (
                "window = 255",
                "delivery.window = 255: must be between 256 and 1000000",
            ),
            (
                "window = 1000001",
                "delivery.window = 1000001: must be between 256 and 1000000",
            ),
            (
                "max_queued_messages = 0",
                "delivery.max_queued_messages = 0: must be at least 1",
            ),
            (
                "max_queued_messages = -5",
                "delivery.max_queued_messages = -5: must be at least 1",
            ),
            (
                "max_queued_bytes = 1048575",
                "delivery.max_queued_bytes = 1048575: must be at least 1048576 bytes",
            ),
            (
                "sign_window = \"2s\"",
                "delivery.sign_window = \"2s\": must be at most 1s",
            ),
            (
                "head_timeout = \"0s\"",
                "delivery.head_timeout = \"0s\": must be longer than zero",
            ),
        ] {
            assert_eq!(
                delivery_err(line),
                format!("/x/meshfed.toml:5: {message}"),
                "{line}"
            );
        }
    }

    #[test]
    fn delivery_size_written_as_text_is_a_syntax_error() {
        let err = delivery_err("max_queued_bytes = \"1GiB\"");
        assert!(
            err.starts_with("/x/meshfed.toml:5:20: invalid type: string \"1GiB\", expected i64"),
            "{err}"
        );
    }

    #[test]
    fn bad_mesh_id_names_file_line_key_and_rule() {
        let err = parse_err("[node]\nmesh = \"Plant_A\"\nname = \"gw1\"\n");
        assert!(
            err.starts_with("/x/meshfed.toml:2: node.mesh = \"Plant_A\": invalid mesh id"),
            "{err}"
        );
        assert!(err.contains("[a-z0-9][a-z0-9-]{0,62}"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key_and_the_expected_form() {
        let err = parse_err(concat!(
            "[node]\nmesh = \"m\"\nname = \"n\"\n",
            "[federation]\nheartbeat_interval = \"5 parsecs\"\n",
        ));
        assert!(
            err.starts_with("/x/meshfed.toml:5: federation.heartbeat_interval = \"5 parsecs\": "),
            "{err}"
        );
        assert!(err.contains("\"24h\""), "{err}");
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let err = parse_err(
            "[node]\nmesh = \"m\"\nname = \"n\"\n[federation]\nhandshake_timeout = \"0s\"\n",
        );
        assert!(
            err.ends_with("federation.handshake_timeout = \"0s\": must be longer than zero"),
            "{err}"
        );
    }

    #[test]
    fn node_cert_renew_before_defaults_to_a_third_and_must_be_shorter_than_the_validity() {
        let base = "[node]\nmesh = \"m\"\nname = \"n\"\n[identity]\nnode_cert_validity = \"90s\"\n";
        let file = Path::new("/x/meshfed.toml");
        let cfg = parse(base, file).unwrap();
        assert_eq!(cfg.identity.renew_before(), Duration::from_secs(30));
        let cfg = parse(&format!("{base}node_cert_renew_before = \"1m\"\n"), file).unwrap();
        assert_eq!(cfg.identity.renew_before(), Duration::from_secs(60));
        let err = parse_err(&format!("{base}node_cert_renew_before = \"2m\"\n"));
        assert!(
            err.starts_with(
                "/x/meshfed.toml:6: identity.node_cert_renew_before = \"2m\": must be shorter than identity.node_cert_validity (1m 30s)"
            ),
            "{err}"
        );
    }

    #[test]
    fn node_cert_validity_beyond_a_year_is_rejected() {
        let err = parse_err(
            "[node]\nmesh = \"m\"\nname = \"n\"\n[identity]\nnode_cert_validity = \"400days\"\n",
        );
        assert!(
            err.contains("identity.node_cert_validity = \"400days\": must be at most"),
            "{err}"
        );
    }

    #[test]
    fn bad_address_names_the_value() {
        let err =
            parse_err("[node]\nmesh = \"m\"\nname = \"n\"\n[api]\nlisten = \"localhost:80\"\n");
        assert_eq!(
            err,
            "/x/meshfed.toml:5: api.listen = \"localhost:80\": invalid socket address syntax"
        );
    }

    #[test]
    fn frame_size_out_of_range_is_rejected() {
        let err =
            parse_err("[node]\nmesh = \"m\"\nname = \"n\"\n[federation]\nmax_frame_size = 0\n");
        assert!(
            err.contains("federation.max_frame_size = 0: must be between 1024 and 16777216"),
            "{err}"
        );
    }

    #[test]
    fn missing_mesh_is_named() {
        let err = parse_err("[node]\nname = \"n\"\n");
        assert_eq!(err, "/x/meshfed.toml: missing required key node.mesh");
    }

    #[test]
    fn unknown_key_is_a_syntax_error_with_its_position() {
        let err = parse_err("[node]\nmesh = \"m\"\nname = \"n\"\ncolour = \"blue\"\n");
        assert!(
            err.starts_with("/x/meshfed.toml:4:1: unknown field `colour`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_is_a_syntax_error_with_its_position() {
        let err =
            parse_err("[node]\nmesh = \"m\"\nname = \"n\"\n[federation]\nheartbeat_interval = 5\n");
        assert!(
            err.starts_with("/x/meshfed.toml:5:22: invalid type: integer `5`"),
            "{err}"
        );
    }
}
