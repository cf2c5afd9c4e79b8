//! Writing a [`NodeConfig`] as `meshfed.toml`, every setting with a comment stating what it
//! means and its default.

use std::fmt::Write as _;
use std::time::Duration;

use super::parse::{
    MAX_MAX_BATCH, MAX_MAX_UNAUTHENTICATED, MAX_WINDOW, MIN_MAX_BATCH, MIN_MAX_QUEUED_BYTES,
    MIN_MAX_QUEUED_MESSAGES, MIN_WINDOW,
};
use meshfed_proto::crypto::KEY_VOLUME_LIMIT;

use super::{
    ConnectionsConfig, DEFAULT_API_LISTEN, DEFAULT_CONTENT_KEY_LIFETIME,
    DEFAULT_CONTENT_KEY_MESSAGES, DEFAULT_FEDERATION_LISTEN, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_FRAME_SIZE, DeliveryConfig, MAX_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE, NodeConfig,
};

const HEADER: &str = "\
# meshfed node configuration.
# Paths are relative to the directory holding this file unless absolute.
# Durations are written like \"500ms\", \"5s\", \"10m\", \"24h\".
";

/// Width of comment text, after the `# `.
const COMMENT_WIDTH: usize = 96;

/// One `key = value` line and the comment above it.
struct Setting {
    key: &'static str,
    meaning: String,
    default: String,
    value: String,
    /// Written as a comment: the setting is left at a default that follows another setting.
    commented: bool,
}

impl Setting {
    fn new(key: &'static str, meaning: &str, default: String, value: String) -> Self {
        Self {
            key,
            meaning: meaning.to_owned(),
            default,
            value,
            commented: false,
        }
    }
}

pub(super) fn render(cfg: &NodeConfig) -> String {
    let mut out = String::from(HEADER);
    for (section, settings) in sections(cfg) {
        let _ = writeln!(out, "\n[{section}]");
        for s in settings {
            for line in wrap(&s.meaning, COMMENT_WIDTH) {
                let _ = writeln!(out, "# {line}");
            }
            let _ = writeln!(out, "# {}", s.default);
            let comment = if s.commented { "# " } else { "" };
            let _ = writeln!(out, "{comment}{} = {}", s.key, s.value);
        }
    }
    out.push_str(PEERS);
    for p in &cfg.peers {
        let _ = writeln!(out, "\n[[peers]]");
        let _ = writeln!(out, "mesh = {}", quoted(p.mesh.as_str()));
        if let Some(address) = &p.address {
            let _ = writeln!(out, "address = {}", quoted(address));
        }
        let _ = writeln!(
            out,
            "ca_fingerprint = {}",
            quoted(&p.ca_fingerprint.to_string())
        );
        let _ = writeln!(out, "dial = {}", p.dial);
    }
    out
}

/// What `[[peers]]` entries are, with an example.
const PEERS: &str = "
# [[peers]]: a peer mesh federated by configuration, without an invitation (one entry each).
# mesh: its id. address: its gateway's federation address, host:port. ca_fingerprint: SHA-384
# of its mesh CA certificate, as its `meshfed init` and GET /v1/node show it. dial: whether this
# node dials it (default true; without dialling, address may be left out); when both sides
# dial, the link the smaller mesh id dials is kept.
# [[peers]]
# mesh = \"supplier-b\"
# address = \"gw.supplier-b.example:7443\"
# ca_fingerprint = \"<96 hex digits>\"
# dial = true
";

fn sections(cfg: &NodeConfig) -> [(&'static str, Vec<Setting>); 8] {
    [
        ("node", node(cfg)),
        ("federation", federation(cfg)),
        ("api", api(cfg)),
        ("identity", identity(cfg)),
        ("store", store(cfg)),
        ("audit", audit(cfg)),
        ("delivery", delivery(cfg)),
        ("connections", connections(cfg)),
    ]
}

fn default(v: String) -> String {
    format!("Default: {v}.")
}

fn required() -> String {
    "Required.".to_owned()
}

fn node(cfg: &NodeConfig) -> Vec<Setting> {
    let n = &cfg.node;
    vec![
        Setting::new(
            "mesh",
            "The mesh this node belongs to: [a-z0-9][a-z0-9-]{0,62}.",
            required(),
            quoted(n.mesh.as_str()),
        ),
        Setting::new(
            "name",
            "This node's name within its mesh (its gateway id), same rule as mesh.",
            required(),
            quoted(n.name.as_str()),
        ),
        Setting::new(
            "role",
            "What this node runs as: \"gateway\" or \"broker\".",
            default(quoted("gateway")),
            quoted(n.role.as_str()),
        ),
    ]
}

fn federation(cfg: &NodeConfig) -> Vec<Setting> {
    let f = &cfg.federation;
    vec![
        Setting::new(
            "listen",
            "Address where mutual-TLS federation links from peer gateways and brokers are \
             accepted.",
            default(quoted(&DEFAULT_FEDERATION_LISTEN.to_string())),
            quoted(&f.listen.to_string()),
        ),
        Setting::new(
            "advertise",
            "Addresses (host:port) invitations give peers to dial instead of the one listened \
             on: set it when listening on 0.0.0.0, or behind NAT or a load balancer.",
            default("[] (the address listened on)".to_owned()),
            format!(
                "[{}]",
                f.advertise
                    .iter()
                    .map(|a| quoted(a))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Setting::new(
            "heartbeat_interval",
            "Interval between heartbeats on each link; health, revocation and forced \
             termination act within one interval.",
            default(quoted(&duration(DEFAULT_HEARTBEAT_INTERVAL))),
            quoted(&duration(f.heartbeat_interval)),
        ),
        Setting::new(
            "handshake_timeout",
            "Longest time one federation handshake step may take before the handshake fails.",
            default(quoted(&duration(DEFAULT_HANDSHAKE_TIMEOUT))),
            quoted(&duration(f.handshake_timeout)),
        ),
        Setting::new(
            "content_key_lifetime",
            "Longest time one content key (AES-256-GCM, per link session) seals; the next \
             envelope after it gets a fresh key.",
            default(quoted(&duration(DEFAULT_CONTENT_KEY_LIFETIME))),
            quoted(&duration(f.content_key_lifetime)),
        ),
        Setting::new(
            "content_key_messages",
            &format!(
                "Most envelopes one content key seals (1 to {KEY_VOLUME_LIMIT}) before the next \
                 gets a fresh key."
            ),
            default(DEFAULT_CONTENT_KEY_MESSAGES.to_string()),
            f.content_key_messages.to_string(),
        ),
        Setting::new(
            "max_frame_size",
            &format!(
                "Largest frame in bytes this node offers in the handshake \
                 ({MIN_MAX_FRAME_SIZE} to {MAX_MAX_FRAME_SIZE}); the smaller offer wins."
            ),
            default(DEFAULT_MAX_FRAME_SIZE.to_string()),
            f.max_frame_size.to_string(),
        ),
    ]
}

fn api(cfg: &NodeConfig) -> Vec<Setting> {
    let a = &cfg.api;
    vec![
        Setting::new(
            "listen",
            "Address of the admin REST API (and console, metrics, health).",
            default(quoted(&DEFAULT_API_LISTEN.to_string())),
            quoted(&a.listen.to_string()),
        ),
        Setting::new(
            "token_file",
            "File holding the admin API's bearer token (mode 0600).",
            default(quoted("admin.token")),
            quoted(a.token_file.as_str()),
        ),
    ]
}

fn identity(cfg: &NodeConfig) -> Vec<Setting> {
    let i = &cfg.identity;
    vec![
        Setting::new(
            "ca_cert",
            "The mesh CA certificate (PEM).",
            default(quoted("ca/ca.crt")),
            quoted(i.ca_cert.as_str()),
        ),
        Setting::new(
            "ca_key",
            "The mesh CA private key (PKCS#8 PEM, mode 0600); not needed with an issuing CA.",
            default(quoted("ca/ca.key")),
            quoted(i.ca_key.as_str()),
        ),
        Setting::new(
            "issuing_ca_cert",
            "The mesh's issuing CA certificate (PEM), presented after this node's certificate.",
            default(quoted("ca/issuing.crt")),
            quoted(i.issuing_ca_cert.as_str()),
        ),
        Setting::new(
            "issuing_ca_key",
            "The issuing CA private key (PKCS#8 PEM, mode 0600): renewals use it when present, \
             else ca_key.",
            default(quoted("ca/issuing.key")),
            quoted(i.issuing_ca_key.as_str()),
        ),
        Setting::new(
            "node_cert",
            "This node's certificate, issued by the issuing CA or the mesh CA (PEM).",
            default(quoted("node/node.crt")),
            quoted(i.node_cert.as_str()),
        ),
        Setting::new(
            "node_key",
            "This node's private key (PKCS#8 PEM, mode 0600).",
            default(quoted("node/node.key")),
            quoted(i.node_key.as_str()),
        ),
        Setting::new(
            "node_cert_validity",
            "Lifetime of this node's certificates; they are renewed before they expire. \
             At most 365 days.",
            default(quoted(&duration(meshfed_trust::DEFAULT_NODE_CERT_VALIDITY))),
            quoted(&duration(i.node_cert_validity)),
        ),
        Setting {
            key: "node_cert_renew_before",
            meaning: "How long before its expiry the running node renews its certificate; \
                      shorter than node_cert_validity."
                .to_owned(),
            default: "Default: a third of node_cert_validity (renewed at two thirds of its \
                      lifetime)."
                .to_owned(),
            value: quoted(&duration(i.renew_before())),
            commented: i.node_cert_renew_before.is_none(),
        },
        Setting::new(
            "rotate_node_key",
            "Whether each renewal also brings a fresh node key (written to node_key), not only \
             a new certificate for the same key.",
            default("true".to_owned()),
            i.rotate_node_key.to_string(),
        ),
    ]
}

fn store(cfg: &NodeConfig) -> Vec<Setting> {
    vec![Setting::new(
        "path",
        "The embedded store's database file (registry, queues); the audit log is the file \
         beside it named the same with `-audit` appended.",
        default(quoted("store/meshfed.db")),
        quoted(cfg.store.path.as_str()),
    )]
}

fn audit(cfg: &NodeConfig) -> Vec<Setting> {
    let a = &cfg.audit;
    let d = crate::config::AuditConfig::default();
    vec![
        Setting::new(
            "head_every",
            "A signed tree head of a log once this many records wait for one (federation \
             partners countersign the heads of their federation's log). What is recorded of \
             each federation's traffic is its agreement's compliance.audit_level.",
            default(d.head_every.to_string()),
            a.head_every.to_string(),
        ),
        Setting::new(
            "head_interval",
            "A signed tree head at the latest this long after the first record that waits for one.",
            default(quoted(&duration(d.head_interval))),
            quoted(&duration(a.head_interval)),
        ),
        Setting::new(
            "failure_window",
            "Failed handshakes from one address for one reason make one record per window, \
             with their count.",
            default(quoted(&duration(d.failure_window))),
            quoted(&duration(a.failure_window)),
        ),
    ]
}

fn delivery(cfg: &NodeConfig) -> Vec<Setting> {
    let d = &cfg.delivery;
    let defaults = DeliveryConfig::default();
    vec![
        Setting::new(
            "signatures",
            "How envelopes are signed on the links: \"batch\" (one ECDSA P-384 signature over \
             the Merkle root of the envelopes sent together; each stays verifiable alone with \
             its inclusion proof) or \"message\" (one signature per envelope).",
            default(quoted(defaults.signatures.as_str())),
            quoted(d.signatures.as_str()),
        ),
        Setting::new(
            "max_batch",
            &format!(
                "Most envelopes sent in one transfer frame, and so under one batch signature \
                 ({MIN_MAX_BATCH} to {MAX_MAX_BATCH})."
            ),
            default(defaults.max_batch.to_string()),
            d.max_batch.to_string(),
        ),
        Setting::new(
            "max_queued_messages",
            &format!(
                "Most messages held in memory for one peer mesh while it is away or slow \
                 (store-and-forward). At the limit a qos >= 1 sender waits (the publish socket \
                 stops reading) or is refused (POST: 503, Retry-After), and qos 0 messages are \
                 shed, lowest priority first. At least {MIN_MAX_QUEUED_MESSAGES}."
            ),
            default(defaults.max_queued_messages.to_string()),
            d.max_queued_messages.to_string(),
        ),
        Setting::new(
            "max_queued_bytes",
            &format!(
                "Most payload bytes held in memory for one peer mesh, at least \
                 {MIN_MAX_QUEUED_BYTES} (1 MiB); at the limit, as for max_queued_messages."
            ),
            default(format!(
                "{} ({} MiB)",
                defaults.max_queued_bytes,
                defaults.max_queued_bytes >> 20
            )),
            d.max_queued_bytes.to_string(),
        ),
        Setting::new(
            "window",
            &format!(
                "Messages a peer may have on the way to this node before it waits for credit; \
                 also the most unacknowledged messages this node keeps in flight \
                 ({MIN_WINDOW} to {MAX_WINDOW})."
            ),
            default(defaults.window.to_string()),
            d.window.to_string(),
        ),
        Setting::new(
            "sign_window",
            "With batch signatures, envelopes leave as soon as they are scheduled and their \
             batch's signature follows in a head: a batch closes at max_batch envelopes or this \
             long after its first one (at most 1s). \"0ms\" signs each transfer before it is \
             sent, adding a signature and its verification to every message's latency.",
            default(quoted(&duration(defaults.sign_window))),
            quoted(&duration(d.sign_window)),
        ),
        Setting::new(
            "head_timeout",
            "How long a peer's streamed batch may wait for its signed head, from its first \
             envelope, before the peer counts as misbehaving (the federation is suspended).",
            default(quoted(&duration(defaults.head_timeout))),
            quoted(&duration(d.head_timeout)),
        ),
        Setting::new(
            "custody_max_messages",
            "On a broker: most envelopes held in custody for meshes that are away, over all \
             of them (durable store-and-forward). Beyond it an envelope handed over is \
             refused (custody_full) and stays with whoever handed it.",
            default(defaults.custody_max_messages.to_string()),
            d.custody_max_messages.to_string(),
        ),
        Setting::new(
            "custody_max_bytes",
            &format!(
                "On a broker: most bytes held in custody, at least {MIN_MAX_QUEUED_BYTES} \
                 (1 MiB)."
            ),
            default(format!(
                "{} ({} MiB)",
                defaults.custody_max_bytes,
                defaults.custody_max_bytes >> 20
            )),
            d.custody_max_bytes.to_string(),
        ),
    ]
}

fn connections(cfg: &NodeConfig) -> Vec<Setting> {
    let c = &cfg.connections;
    let defaults = ConnectionsConfig::default();
    vec![
        Setting::new(
            "max_unauthenticated",
            &format!(
                "Most connections per listener that have not authenticated yet: TLS and \
                 federation handshakes in progress on the federation port, API connections \
                 that have not sent a request with a valid token. One more is closed at once \
                 (1 to {MAX_MAX_UNAUTHENTICATED})."
            ),
            default(defaults.max_unauthenticated.to_string()),
            c.max_unauthenticated.to_string(),
        ),
        Setting::new(
            "api_idle_timeout",
            "An API connection with no request in progress that sends and receives nothing for \
             this long is closed (open WebSocket streams are not idle connections).",
            default(quoted(&duration(defaults.api_idle_timeout))),
            quoted(&duration(c.api_idle_timeout)),
        ),
        Setting::new(
            "refusal_log_interval",
            "Refused connections are logged in full once per reason and interval, the rest as \
             one summary line per interval; /metrics counts each by listener and reason.",
            default(quoted(&duration(defaults.refusal_log_interval))),
            quoted(&duration(c.refusal_log_interval)),
        ),
    ]
}

/// Splits `text` into lines of at most `width` characters at spaces (longer words stay whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A duration in the largest unit that states it exactly: `24h`, `90s`, `1500ms`.
pub(super) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if d.as_nanos() != ms * 1_000_000 {
        return humantime::format_duration(d).to_string().replace(' ', "");
    }
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms != 0 && ms / size * size == ms {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn sample() -> NodeConfig {
        let mut cfg = NodeConfig::new("plant-a".parse().unwrap(), "gw1".parse().unwrap());
        cfg.federation.listen = "0.0.0.0:17443".parse().unwrap();
        cfg.federation.heartbeat_interval = Duration::from_millis(1500);
        cfg.api.listen = "[::1]:7081".parse().unwrap();
        cfg.identity.node_cert_validity = Duration::from_secs(12 * 3600);
        cfg.delivery.signatures = super::super::SignatureMode::Message;
        cfg.delivery.max_batch = 64;
        cfg.delivery.max_queued_messages = 5000;
        cfg.delivery.max_queued_bytes = 32 << 20;
        cfg.delivery.window = 256;
        cfg
    }

    #[test]
    fn rendered_file_parses_back_to_the_same_config() {
        let mut cfg = sample();
        let text = cfg.render();
        assert_eq!(NodeConfig::parse(&text, Path::new("m.toml")).unwrap(), cfg);
        cfg.peers.push(crate::config::StaticPeer {
            mesh: "supplier-b".parse().unwrap(),
            address: Some("gw.supplier-b.example:7443".into()),
            ca_fingerprint: meshfed_trust::Fingerprint::of(b"a CA"),
            dial: false,
        });
        let text = cfg.render();
        assert_eq!(NodeConfig::parse(&text, Path::new("m.toml")).unwrap(), cfg);
        let defaults = NodeConfig::new("m".parse().unwrap(), "n".parse().unwrap());
        assert_eq!(
            NodeConfig::parse(&defaults.render(), Path::new("m.toml")).unwrap(),
            defaults
        );
    }

    #[test]
    fn every_setting_has_a_comment_with_its_meaning_and_default() {
        let text = sample().render();
        let lines: Vec<&str> = text.lines().collect();
        let settings: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].contains(" = ") && !lines[i].starts_with('#'))
            .collect();
        assert_eq!(settings.len(), 36, "{text}");
        for i in settings {
            let comment = lines[i - 1];
            assert!(comment.starts_with("# "), "no comment above {:?}", lines[i]);
            assert!(
                comment == "# Required." || comment.starts_with("# Default: "),
                "{comment}"
            );
            let meaning = lines[i - 2];
            assert!(
                meaning.starts_with("# ") && !meaning.contains("Default"),
                "{meaning}"
            );
        }
        assert!(lines.iter().all(|l| l.len() <= 100), "{text}");
        assert!(text.contains("heartbeat_interval = \"1500ms\""), "{text}");
        assert!(text.contains("node_cert_validity = \"12h\""), "{text}");
        // Left at its default, which follows node_cert_validity: shown, commented out.
        assert!(
            text.contains("\n# node_cert_renew_before = \"4h\"\n"),
            "{text}"
        );
        assert!(
            text.contains("# Address where mutual-TLS federation links"),
            "{text}"
        );
        assert!(
            text.contains("# Default: \"127.0.0.1:7443\".\nlisten = \"0.0.0.0:17443\""),
            "{text}"
        );
        assert!(
            text.contains("\n[delivery]\n# How envelopes are signed on the links"),
            "{text}"
        );
        let window_line = format!(
            "(256 to 1000000).\n# Default: {}.\nwindow = 256\n",
            super::super::DeliveryConfig::default().window
        );
        for line in [
            "# Default: \"batch\".\nsignatures = \"message\"\n",
            "# Default: 1024.\nmax_batch = 64\n",
            "# Default: 8192.\nmax_queued_messages = 5000\n",
            "# Default: 67108864 (64 MiB).\nmax_queued_bytes = 33554432\n",
            window_line.as_str(),
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn durations_use_the_largest_exact_unit() {
        assert_eq!(duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(duration(Duration::from_secs(5)), "5s");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_secs(600)), "10m");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_micros(1500)), "1ms500us");
        assert_eq!(
            humantime::parse_duration("1ms500us").unwrap(),
            Duration::from_micros(1500)
        );
    }
}
