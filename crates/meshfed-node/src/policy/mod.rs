//! The policy file, `DIR/policy.toml` (DESIGN §3.7): what this mesh allows every partner (its
//! offer) and what it insists on (each kind's `requires`), in the spec's five kinds, compiled
//! into the handshake's [`PolicyOffer`] and the topics of the services offer. A gateway without
//! the file offers the defaults ([`Policy::default`]).
//!
//! ```toml
//! [access]                         # which topics cross, each way
//! publishes = ["orders/#"]         # this mesh sends these to partners
//! wants = ["shipments/#"]          # and takes these from them
//! rules = '''
//! permit (principal in Meshfed::Role::"buyer", action == Meshfed::Action::"publish", resource)
//! when { resource.name like "orders/*" };
//! permit (principal in Meshfed::Mesh::"supplier-b", action, resource)
//! when { resource.name like "shipments/*" };
//! '''                              # Cedar access rules (see `access`)
//!
//! [data]
//! max_message_size = 65536         # bytes
//! content_types = ["application/json"]
//! redact = ["/customer/email"]     # JSON pointers removed before sealing
//! schemas = ["order-v2"]           # a message must name one of these schema ids
//! classifications = ["public", "internal"]  # and carry one of these labels
//! [data.requires]
//! min_message_size = 4096
//!
//! [qos]
//! max_rate = 1000                  # messages per second, each way, per partner
//! max_priority = 6
//! max_latency = "30s"
//! [[qos.limits]]                   # per topic pattern, each way, per partner
//! topics = "telemetry/#"
//! rate = 200                       # messages per second
//! [qos.requires]
//! min_rate = 100
//!
//! [security]
//! require_encryption = true
//! signature_modes = ["batch", "per-message"]
//! algorithms = ["ecdsa-p384-sha384", "aes-256-gcm"]
//!
//! [compliance]
//! frameworks = ["gdpr", "iso27001"]  # this mesh complies with these
//! residency = ["eu"]               # exchanged data stays in these regions, on both sides
//! region = "eu"                    # where this mesh keeps what it receives
//! retention_days = 365
//! audit_level = "refusals"         # lifecycle | refusals | full
//! [compliance.requires]
//! frameworks = ["gdpr"]            # partners must comply with these
//! min_retention_days = 30
//!
//! [[identity]]                     # identity mapping, first match wins (see `access::map`)
//! mesh = "supplier-b"              # matchers: mesh, subject, role, attributes
//! subject = "erp"
//! to = "supplier-erp"              # the local subject
//! roles = ["supplier"]             # the local roles
//! translate = "1h"                 # credential translation: subscribers get a token of this
//!                                  # mesh for it (never past the sender's own credential)
//! [[identity]]
//! role = "buyer"
//! roles = ["purchasing"]
//! [[identity]]
//! mesh = "supplier-b"              # the partner as a whole: federation::supplier-b
//! subject = "federation::supplier-b"
//! roles = ["supplier"]
//!
//! [[transit]]                      # messages of a mesh this one does not federate with,
//! origin = "supplier-c"            # relayed by a partner on its behalf (trusted intermediary)
//! via = "hub-b"                    # the partner that relays them
//! topics = ["parts/#"]
//! max_depth = 1                    # delegations in the chain, at most (default 1)
//! # ca = "<96 hex digits>"         # optional: the origin's CA fingerprint (SHA-384), pinned;
//!                                  # without it the relay's copy of the origin's CA is trusted
//!
//! [anomaly]                        # this mesh's own watch on what partners send (not
//! action = "breaker"               # negotiated; see `anomaly`): record | breaker | suspend
//! window = "1s"                    # baselines per partner and topic, in windows this long
//! k = 4                            # a measure deviates beyond mean + k·σ (and a floor)
//! min_rate = 50                    # messages per second below which a rate never deviates
//! warmup_windows = 10              # windows learned from before rates and sizes are judged
//! sig_failures_burst = 5           # signature failures in one window that deviate at once
//! open_for = "5s"                  # a tripped breaker holds the partner's traffic this long,
//! max_open = "5m"                  # doubling (up to this) each time it trips while half-open
//! probes_to_close = 3              # clean windows or probes in a row that close it
//! ```
//!
//! A file is checked whole: a TOML syntax or shape error stops at its place; past that, every
//! value that is wrong is reported, each with its line and column ([`PolicyErrors`]).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshfed_proto::MeshId;
use meshfed_proto::capability::{compliance, services};
use meshfed_proto::envelope::ContentType;
use meshfed_proto::policy::{
    Algorithm, AuditLevel, PolicyOffer, Requirements, SignatureMode, TopicRate,
};
use meshfed_proto::topic::TopicPattern;
use serde::Deserialize;

pub mod access;
pub mod anomaly;
use toml::Spanned;

/// The policy file's name in the node directory.
pub const FILE: &str = "policy.toml";

/// Largest `data.max_message_size`: 64 MiB.
const MAX_MESSAGE_SIZE: i64 = 64 << 20;
/// Largest `qos.max_rate`.
const MAX_RATE: i64 = 10_000_000;
/// Longest `compliance.retention_days`: a hundred years.
const MAX_RETENTION_DAYS: i64 = 36_500;

/// A mesh's policy: the file's text and what it compiles to; the default is a gateway's
/// without a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// What the handshake offers and requires.
    pub offer: PolicyOffer,
    /// Which topics this mesh publishes to partners and wants from them.
    pub services: services::Offer,
    /// The frameworks this mesh complies with and requires of partners.
    pub compliance: compliance::Offer,
    /// Access rules; `None`: whatever the agreement lets flow.
    pub access: Option<Arc<access::Access>>,
    /// Identity mapping rules, in order.
    pub identities: Arc<[access::Mapping]>,
    /// Which meshes' messages partners may relay here, through whom.
    pub transits: Arc<[TransitRule]>,
    /// What this mesh does when a partner's traffic deviates from its baseline (`[anomaly]`;
    /// its own, not negotiated).
    pub anomaly: anomaly::AnomalyPolicy,
    /// The file's text; `None` for the defaults, without a file.
    pub source: Option<String>,
}

/// One `[[transit]]` rule: messages from mesh `origin`, relayed here by partner `via`, on
/// `topics`, are taken when `via` presents the origin's delegation chain of at most `max_depth`
/// delegations (and, with `ca`, the origin's CAs include that certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitRule {
    /// The mesh the messages come from.
    pub origin: MeshId,
    /// The partner that relays them.
    pub via: MeshId,
    /// The topics it covers.
    pub topics: Vec<TopicPattern>,
    /// Most delegations in the chain.
    pub max_depth: u8,
    /// The origin's CA, pinned by fingerprint.
    pub ca: Option<meshfed_trust::Fingerprint>,
}

impl Policy {
    /// The transit rule that lets `origin`'s message on `topic` through partner `via`.
    pub fn transit(
        &self,
        origin: &MeshId,
        via: &MeshId,
        topic: &meshfed_proto::Topic,
    ) -> Option<&TransitRule> {
        self.transits.iter().find(|r| {
            &r.origin == origin && &r.via == via && r.topics.iter().any(|p| p.matches(topic))
        })
    }

    /// The identity mapping and access check of what partner `peer` sends here.
    pub fn inbound(&self, peer: &MeshId) -> access::Incoming {
        access::Incoming::new(self.access.clone(), self.identities.clone(), peer.clone())
    }

    /// Whether local component `who` may subscribe to `pattern` (for what `from` sends, or any
    /// partner): always without access rules.
    pub fn may_subscribe(
        &self,
        who: &access::Principal,
        pattern: &TopicPattern,
        from: Option<&MeshId>,
    ) -> Result<(), access::Denied> {
        match &self.access {
            Some(access) => access.decide_subscription(who, pattern, from),
            None => Ok(()),
        }
    }

    /// The access check of what local `sender` sends to partner `peer`; `None` without access
    /// rules.
    pub fn outbound(&self, sender: access::Principal, peer: &MeshId) -> Option<access::Guard> {
        let access = self.access.clone()?;
        Some(access::Guard::new(
            access,
            sender,
            peer.clone(),
            access::Way::Outbound,
        ))
    }
}

/// One thing wrong in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, naming the key.
    pub message: String,
}

/// Everything wrong in a policy file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors {
    /// The file, as named to the user.
    pub file: PathBuf,
    /// Each problem.
    pub problems: Vec<Problem>,
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                p.line,
                p.column,
                p.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// The policy file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading failed.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is wrong.
    #[error(transparent)]
    Invalid(#[from] PolicyErrors),
}

/// Reads `DIR/policy.toml`; the defaults when there is none.
pub fn load(dir: &Path) -> Result<Policy, LoadError> {
    let file = dir.join(FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => Ok(parse(&text, &file)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Policy::default()),
        Err(source) => Err(LoadError::Read { file, source }),
    }
}

type List = Option<Spanned<Vec<Spanned<String>>>>;
type Integer = Option<Spanned<i64>>;
type Text = Option<Spanned<String>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawPolicy {
    access: RawAccess,
    identity: Vec<RawMapping>,
    transit: Vec<RawTransit>,
    data: RawData,
    qos: RawQos,
    security: RawSecurity,
    compliance: RawCompliance,
    anomaly: anomaly::RawAnomaly,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawAccess {
    publishes: List,
    wants: List,
    rules: Text,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawMapping {
    mesh: Text,
    subject: Text,
    role: Text,
    attributes: BTreeMap<String, String>,
    to: Text,
    roles: List,
    translate: Text,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransit {
    origin: Spanned<String>,
    via: Spanned<String>,
    topics: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    max_depth: Integer,
    #[serde(default)]
    ca: Text,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawData {
    max_message_size: Integer,
    content_types: List,
    redact: List,
    schemas: List,
    classifications: List,
    requires: RawDataRequires,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawDataRequires {
    min_message_size: Integer,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawQos {
    max_rate: Integer,
    max_priority: Integer,
    max_latency: Text,
    limits: Vec<RawLimit>,
    requires: RawQosRequires,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    topics: Spanned<String>,
    rate: Spanned<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawQosRequires {
    min_rate: Integer,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSecurity {
    require_encryption: Option<bool>,
    signature_modes: List,
    algorithms: List,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawCompliance {
    frameworks: List,
    residency: List,
    region: Text,
    retention_days: Integer,
    audit_level: Text,
    requires: RawComplianceRequires,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawComplianceRequires {
    frameworks: List,
    min_retention_days: Integer,
}

/// Parses and checks a policy file's text; `file` names it in errors.
pub fn parse(text: &str, file: &Path) -> Result<Policy, PolicyErrors> {
    let mut c = Checker {
        text,
        problems: Vec::new(),
    };
    let raw: RawPolicy = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            c.problem(&span, e.message().trim_end().to_owned());
            return Err(c.errors(file));
        }
    };
    let defaults = PolicyOffer::default();
    let publishes = c.patterns("access.publishes", raw.access.publishes);
    let wants = c.patterns("access.wants", raw.access.wants);
    let access = raw.access.rules.and_then(|rules| c.rules(&rules));
    let identities = raw.identity.into_iter().map(|m| c.mapping(m)).collect();
    let transits = raw
        .transit
        .into_iter()
        .filter_map(|t| c.transit(t))
        .collect();
    let d = raw.data;
    let (max_message_size, min_message_size) = c.limit_and_floor(
        ("data.max_message_size", &d.max_message_size),
        (
            "data.requires.min_message_size",
            &d.requires.min_message_size,
        ),
        MAX_MESSAGE_SIZE,
        defaults.max_message_size,
    );
    let content_types = c.each("data.content_types", d.content_types, |s| {
        s.parse::<ContentType>()
            .map(|t| t.essence())
            .map_err(|e| e.to_string())
    });
    let redact = c.each("data.redact", d.redact, |s| {
        json_pointer(s).map(|()| s.to_owned())
    });
    let envelope_label = |field: &'static str| {
        move |s: &str| {
            meshfed_proto::envelope::Label::parse(field, s)
                .map(|l| l.as_str().to_owned())
                .map_err(|e| e.to_string())
        }
    };
    let schemas = c.each("data.schemas", d.schemas, envelope_label("schema_id"));
    let classifications = c.each(
        "data.classifications",
        d.classifications,
        envelope_label("classification"),
    );
    let q = raw.qos;
    let topic_rates = c.limits(q.limits);
    let max_rate = q
        .max_rate
        .as_ref()
        .map(|_| c.integer("qos.max_rate", &q.max_rate, 1..=MAX_RATE, 0u32));
    let min_rate = q.requires.min_rate.as_ref().map(|_| {
        c.integer(
            "qos.requires.min_rate",
            &q.requires.min_rate,
            1..=MAX_RATE,
            0u32,
        )
    });
    if let (Some(min), Some(max)) = (min_rate, max_rate) {
        c.floor(
            "qos.requires.min_rate",
            &q.requires.min_rate,
            min,
            max,
            "qos.max_rate",
        );
    }
    let max_priority = c.integer("qos.max_priority", &q.max_priority, 0..=7, 7u8);
    let max_latency_ms = q.max_latency.map(|raw| {
        let span = raw.span();
        match humantime::parse_duration(raw.get_ref())
            .map_err(|e| e.to_string())
            .and_then(latency_ms)
        {
            Ok(ms) => ms,
            Err(why) => {
                c.problem(
                    &span,
                    format!("qos.max_latency = {:?}: {why}", raw.get_ref()),
                );
                0
            }
        }
    });
    let s = raw.security;
    let signature_modes = c.named(
        "security.signature_modes",
        s.signature_modes,
        &[
            ("batch", SignatureMode::Batch),
            ("per-message", SignatureMode::PerMessage),
        ],
        defaults.signature_modes.clone(),
    );
    let algorithms_span = s.algorithms.as_ref().map(Spanned::span);
    let algorithms = c.named(
        "security.algorithms",
        s.algorithms,
        &[
            ("ecdsa-p384-sha384", Algorithm::EcdsaP384Sha384),
            ("aes-256-gcm", Algorithm::Aes256Gcm),
        ],
        defaults.algorithms.clone(),
    );
    if let Some(span) = algorithms_span
        && (!algorithms.iter().any(|a| a.signs()) || !algorithms.iter().any(|a| !a.signs()))
    {
        c.problem(
            &span,
            "security.algorithms: name a signature algorithm (ecdsa-p384-sha384) and a cipher (aes-256-gcm)".to_owned(),
        );
    }
    let k = raw.compliance;
    let frameworks = c.each("compliance.frameworks", k.frameworks, label);
    let required_span = k.requires.frameworks.as_ref().map(Spanned::span);
    let required = c.each(
        "compliance.requires.frameworks",
        k.requires.frameworks,
        label,
    );
    let uncovered: Vec<&String> = required
        .iter()
        .filter(|f| !frameworks.contains(f))
        .collect();
    if let Some(span) = required_span
        && !uncovered.is_empty()
    {
        c.problem(
            &span,
            format!("compliance.requires.frameworks: {uncovered:?} are required of partners but not in compliance.frameworks (this mesh must comply too)"),
        );
    }
    let residency_span = k.residency.as_ref().map(Spanned::span);
    let residency = c.each("compliance.residency", k.residency, label);
    let region_given = k.region.is_some();
    let region = k.region.and_then(|r| match label(r.get_ref()) {
        Ok(region) => Some(region),
        Err(why) => {
            c.problem(
                &r.span(),
                format!("compliance.region: {:?}: {why}", r.get_ref()),
            );
            None
        }
    });
    if let Some(span) = residency_span
        && !residency.is_empty()
        && !region_given
    {
        c.problem(
            &span,
            "compliance.residency needs compliance.region: say where this mesh keeps what it receives, so partners can hold it to the residency".to_owned(),
        );
    }
    let (retention_days, min_retention_days) = c.limit_and_floor(
        ("compliance.retention_days", &k.retention_days),
        (
            "compliance.requires.min_retention_days",
            &k.requires.min_retention_days,
        ),
        MAX_RETENTION_DAYS,
        defaults.retention_days,
    );
    let audit_level = c
        .named(
            "compliance.audit_level",
            k.audit_level.map(|t| {
                let span = t.span();
                Spanned::new(span.clone(), vec![Spanned::new(span, t.into_inner())])
            }),
            &[
                ("lifecycle", AuditLevel::Lifecycle),
                ("refusals", AuditLevel::Refusals),
                ("full", AuditLevel::Full),
            ],
            vec![defaults.audit_level],
        )
        .first()
        .copied()
        .unwrap_or_default();
    let anomaly = c.anomaly(raw.anomaly);
    if !c.problems.is_empty() {
        return Err(c.errors(file));
    }
    Ok(Policy {
        offer: PolicyOffer {
            max_message_size,
            content_types,
            redact,
            schemas,
            classifications,
            max_rate,
            topic_rates,
            max_priority,
            max_latency_ms,
            require_encryption: s.require_encryption.unwrap_or(defaults.require_encryption),
            signature_modes,
            algorithms,
            residency,
            region,
            retention_days,
            audit_level,
            requires: Requirements {
                min_message_size,
                min_rate,
                min_retention_days,
            },
        },
        compliance: compliance::Offer {
            supports: frameworks,
            requires: required,
        },
        access,
        identities,
        transits,
        services: services::Offer {
            publishes: publishes.unwrap_or_else(|| vec![TopicPattern::all()]),
            wants: wants.unwrap_or_else(|| vec![TopicPattern::all()]),
        },
        anomaly,
        source: Some(text.to_owned()),
    })
}

/// A deadline in whole milliseconds, within the envelope's range.
fn latency_ms(d: Duration) -> Result<u32, String> {
    match u32::try_from(d.as_millis()) {
        Ok(0) => Err("must be at least 1ms".to_owned()),
        Ok(ms) => Ok(ms),
        Err(_) => Err("too long".to_owned()),
    }
}

/// An RFC 6901 JSON pointer naming a field: `/a/b`, with `~0` and `~1` the only escapes.
fn json_pointer(s: &str) -> Result<(), String> {
    let Some(rest) = s.strip_prefix('/') else {
        return Err("a JSON pointer starts with / (e.g. /customer/email)".to_owned());
    };
    for token in rest.split('/') {
        let mut chars = token.chars();
        while let Some(ch) = chars.next() {
            if ch == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!("{token:?}: ~ is only ~0 (for ~) or ~1 (for /)"));
            }
        }
    }
    Ok(())
}

/// A framework or region name: letters, digits, `-`, `_`, `.`, at most 64.
fn label(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("a name of letters, digits, -, _ or . (at most 64)".to_owned())
    }
}

/// A subject or role as identities carry it: 1–128 visible ASCII characters, no quotes.
fn subject(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("1 to 128 visible ASCII characters, without quotes or backslashes".to_owned())
    }
}

/// Collects problems while reading the raw file.
struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, span: &Range<usize>, message: String) {
        let (line, column) = line_and_column(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            message,
        });
    }

    fn errors(mut self, file: &Path) -> PolicyErrors {
        self.problems.sort_by_key(|p| (p.line, p.column));
        PolicyErrors {
            file: file.to_path_buf(),
            problems: self.problems,
        }
    }

    /// An integer within `range`, converted; `default` when absent or wrong.
    fn integer<T: TryFrom<i64> + Copy>(
        &mut self,
        key: &str,
        raw: &Integer,
        range: std::ops::RangeInclusive<i64>,
        default: T,
    ) -> T {
        let Some(raw) = raw else { return default };
        let v = *raw.get_ref();
        match T::try_from(v) {
            Ok(t) if range.contains(&v) => t,
            _ => {
                self.problem(
                    &raw.span(),
                    format!(
                        "{key} = {v}: must be from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
        }
    }

    /// A limit (1 to `max`, `default` when absent) and the floor a partner must allow (0 to
    /// `max`, at most the limit).
    fn limit_and_floor(
        &mut self,
        (limit_key, limit): (&str, &Integer),
        (floor_key, floor): (&str, &Integer),
        max: i64,
        default: u32,
    ) -> (u32, u32) {
        let limit_value = self.integer(limit_key, limit, 1..=max, default);
        let floor_value = self.integer(floor_key, floor, 0..=max, 0);
        self.floor(floor_key, floor, floor_value, limit_value, limit_key);
        (limit_value, floor_value)
    }

    /// A requirement at most the limit it is a floor of.
    fn floor<T: PartialOrd + fmt::Display>(
        &mut self,
        key: &str,
        raw: &Integer,
        floor: T,
        limit: T,
        limit_key: &str,
    ) {
        if let Some(raw) = raw
            && floor > limit
        {
            self.problem(
                &raw.span(),
                format!("{key} = {floor} is above this mesh's own {limit_key} = {limit}: no partner could agree"),
            );
        }
    }

    /// Each string of a list, checked by `parse`; without duplicates.
    fn each<T: PartialEq>(
        &mut self,
        key: &str,
        raw: List,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for item in raw.map(Spanned::into_inner).unwrap_or_default() {
            match parse(item.get_ref()) {
                Ok(v) if !out.contains(&v) => out.push(v),
                Ok(_) => {}
                Err(why) => {
                    self.problem(&item.span(), format!("{key}: {:?}: {why}", item.get_ref()))
                }
            }
        }
        out
    }

    /// Cedar access rules, each problem placed in the file: the string's text starts after its
    /// opening quotes (and the newline a multi-line string drops). Write them as a literal
    /// string (`'''`), whose text is the file's: escapes in a basic string shift columns.
    fn rules(&mut self, raw: &Spanned<String>) -> Option<Arc<access::Access>> {
        let span = raw.span();
        let quoted = &self.text[span.clone()];
        let start = span.start
            + match quoted.get(..3) {
                Some("'''" | "\"\"\"") => {
                    3 + usize::from(quoted[3..].starts_with('\n'))
                        + 2 * usize::from(quoted[3..].starts_with("\r\n"))
                }
                _ => 1,
            };
        match access::Access::parse(raw.get_ref()) {
            Ok(a) => Some(Arc::new(a)),
            Err(problems) => {
                for (offset, message) in problems {
                    let at = start + offset;
                    self.problem(&(at..at), format!("access.rules: {message}"));
                }
                None
            }
        }
    }

    /// The `[[qos.limits]]`: each pattern once, each rate within bounds.
    fn limits(&mut self, raw: Vec<RawLimit>) -> Vec<TopicRate> {
        let mut out: Vec<TopicRate> = Vec::new();
        for l in raw {
            let topics = match l.topics.get_ref().parse::<TopicPattern>() {
                Ok(p) => p,
                Err(e) => {
                    self.problem(
                        &l.topics.span(),
                        format!("qos.limits.topics: {:?}: {e}", l.topics.get_ref()),
                    );
                    continue;
                }
            };
            if out.iter().any(|o| o.topics == topics) {
                self.problem(
                    &l.topics.span(),
                    format!("qos.limits.topics: {topics} has a limit already"),
                );
                continue;
            }
            let rate = self.integer("qos.limits.rate", &Some(l.rate), 1..=MAX_RATE, 0u32);
            if rate > 0 {
                out.push(TopicRate { topics, rate });
            }
        }
        out
    }

    /// One `[[transit]]` rule; `None` when it is wrong (each problem reported).
    fn transit(&mut self, raw: RawTransit) -> Option<TransitRule> {
        let before = self.problems.len();
        let mut mesh = |key: &str, t: &Spanned<String>| match t.get_ref().parse::<MeshId>() {
            Ok(id) => Some(id),
            Err(e) => {
                self.problem(&t.span(), format!("transit.{key}: {:?}: {e}", t.get_ref()));
                None
            }
        };
        let origin = mesh("origin", &raw.origin);
        let via = mesh("via", &raw.via);
        if origin.is_some() && origin == via {
            self.problem(
                &raw.via.span(),
                "transit.via: the origin itself: a partner's own messages need no transit rule"
                    .to_owned(),
            );
        }
        let topics_span = raw.topics.span();
        let topics = self
            .patterns("transit.topics", Some(raw.topics))
            .unwrap_or_default();
        if topics.is_empty() && self.problems.len() == before {
            self.problem(
                &topics_span,
                "transit.topics: name the topics the rule lets through".to_owned(),
            );
        }
        let most = crate::credentials::delegation::MAX_DEPTH + 1;
        let max_depth = match raw.max_depth {
            None => 1,
            Some(d) => match u8::try_from(*d.get_ref()) {
                Ok(n) if (1..=most).contains(&n) => n,
                _ => {
                    self.problem(
                        &d.span(),
                        format!("transit.max_depth: {}: from 1 to {most}", d.get_ref()),
                    );
                    1
                }
            },
        };
        let ca = raw.ca.and_then(|t| match t.get_ref().parse() {
            Ok(f) => Some(f),
            Err(e) => {
                self.problem(&t.span(), format!("transit.ca: {e}"));
                None
            }
        });
        if self.problems.len() != before {
            return None;
        }
        Some(TransitRule {
            origin: origin?,
            via: via?,
            topics,
            max_depth,
            ca,
        })
    }

    /// One `[[identity]]` rule.
    fn mapping(&mut self, raw: RawMapping) -> access::Mapping {
        let mut name = |key: &str, t: Text| {
            t.and_then(|t| match subject(t.get_ref()) {
                Ok(_) => Some(t.into_inner()),
                Err(why) => {
                    self.problem(
                        &t.span(),
                        format!("identity.{key}: {:?}: {why}", t.get_ref()),
                    );
                    None
                }
            })
        };
        let from = name("subject", raw.subject);
        let role = name("role", raw.role);
        let to = name("to", raw.to);
        let mesh = raw.mesh.and_then(|m| match m.get_ref().parse::<MeshId>() {
            Ok(id) => Some(id),
            Err(e) => {
                self.problem(&m.span(), format!("identity.mesh: {:?}: {e}", m.get_ref()));
                None
            }
        });
        let roles = self.each("identity.roles", raw.roles, subject);
        let max = crate::credentials::MAX_TOKEN_TTL;
        let translate = raw
            .translate
            .and_then(|t| match humantime::parse_duration(t.get_ref()) {
                Ok(d) if d >= Duration::from_secs(10) && d <= max => Some(d),
                Ok(_) => {
                    self.problem(
                        &t.span(),
                        format!(
                            "identity.translate = {:?}: from 10s to {}",
                            t.get_ref(),
                            humantime::format_duration(max)
                        ),
                    );
                    None
                }
                Err(e) => {
                    self.problem(
                        &t.span(),
                        format!("identity.translate = {:?}: {e}", t.get_ref()),
                    );
                    None
                }
            });
        access::Mapping {
            mesh,
            subject: from,
            role,
            attributes: raw.attributes,
            to,
            roles,
            translate,
        }
    }

    /// A list of topic patterns; `None` when absent.
    fn patterns(&mut self, key: &str, raw: List) -> Option<Vec<TopicPattern>> {
        raw.as_ref()?;
        Some(self.each(key, raw, |s| {
            s.parse::<TopicPattern>().map_err(|e| e.to_string())
        }))
    }

    /// A non-empty list of names out of `names`; `default` when absent.
    fn named<T: Copy + PartialEq>(
        &mut self,
        key: &str,
        raw: List,
        names: &[(&str, T)],
        default: Vec<T>,
    ) -> Vec<T> {
        let Some(list) = raw else { return default };
        let span = list.span();
        let empty = list.get_ref().is_empty();
        let known = names.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        let out = self.each(key, Some(list), |s| {
            names
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(s))
                .map(|(_, v)| *v)
                .ok_or_else(|| format!("unknown; one of {known}"))
        });
        if empty {
            self.problem(&span, format!("{key}: name at least one of {known}"));
        }
        out
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Policy, PolicyErrors> {
        parse(text, Path::new("policy.toml"))
    }

    #[test]
    fn the_documented_example_compiles() {
        let doc = include_str!("mod.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let p = check(&example).unwrap();
        assert_eq!(p.offer.max_rate, Some(1000));
        assert_eq!(p.offer.max_latency_ms, Some(30_000));
        assert_eq!(p.offer.redact, ["/customer/email"]);
        assert_eq!(p.compliance.requires, ["gdpr"]);
        assert_eq!(p.offer.audit_level, AuditLevel::Refusals);
        assert_eq!(
            (p.offer.residency.as_slice(), p.offer.region.as_deref()),
            (&["eu".to_owned()][..], Some("eu"))
        );
        assert_eq!(
            p.services.wants,
            ["shipments/#".parse::<TopicPattern>().unwrap()]
        );
        assert_eq!(
            (p.offer.schemas, p.offer.classifications),
            (
                vec!["order-v2".to_owned()],
                vec!["public".to_owned(), "internal".to_owned()]
            )
        );
        assert_eq!(
            p.offer.topic_rates,
            [TopicRate {
                topics: "telemetry/#".parse().unwrap(),
                rate: 200
            }]
        );
    }

    #[test]
    fn topic_limits_and_labels_are_checked_in_place() {
        let text = "[data]\nschemas = [\"a b\"]\n\n[[qos.limits]]\ntopics = \"t/#\"\nrate = 0\n[[qos.limits]]\ntopics = \"t/#/x\"\nrate = 5\n[[qos.limits]]\ntopics = \"u/#\"\nrate = 5\n[[qos.limits]]\ntopics = \"u/#\"\nrate = 6\n";
        let err = check(text).unwrap_err().to_string();
        let lines: Vec<&str> = err.lines().collect();
        let want = [
            "policy.toml:2:12: data.schemas: \"a b\"",
            "policy.toml:6:8: qos.limits.rate = 0: must be from 1 to 10000000",
            "policy.toml:8:10: qos.limits.topics: \"t/#/x\"",
            "policy.toml:14:10: qos.limits.topics: u/# has a limit already",
        ];
        assert_eq!(lines.len(), want.len(), "{err}");
        for (line, want) in lines.iter().zip(want) {
            assert!(line.starts_with(want), "{line:?} vs {want:?}\n{err}");
        }
    }

    #[test]
    fn transit_rules_read_and_every_wrong_value_is_placed() {
        let fp = "ab".repeat(48);
        let text = format!(
            "[[transit]]\norigin = \"supplier-c\"\nvia = \"hub-b\"\ntopics = [\"parts/#\"]\nmax_depth = 2\nca = \"{fp}\"\n"
        );
        let p = check(&text).unwrap();
        let rule = p
            .transit(
                &"supplier-c".parse().unwrap(),
                &"hub-b".parse().unwrap(),
                &"parts/gear".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(
            (rule.max_depth, rule.ca.map(|c| c.to_string())),
            (2, Some(fp))
        );
        assert!(
            p.transit(
                &"supplier-c".parse().unwrap(),
                &"hub-x".parse().unwrap(),
                &"parts/gear".parse().unwrap()
            )
            .is_none()
        );
        let text = "[[transit]]\norigin = \"Supplier C\"\nvia = \"hub-b\"\ntopics = []\nmax_depth = 0\nca = \"3f\"\n\n[[transit]]\norigin = \"hub-b\"\nvia = \"hub-b\"\ntopics = [\"a/#\"]\n";
        let err = check(text).unwrap_err().to_string();
        let lines: Vec<&str> = err.lines().collect();
        let want = [
            "policy.toml:2:10: transit.origin: \"Supplier C\"",
            "policy.toml:5:13: transit.max_depth: 0: from 1 to 9",
            "policy.toml:6:6: transit.ca: invalid SHA-384 fingerprint",
            "policy.toml:10:7: transit.via: the origin itself",
        ];
        assert_eq!(lines.len(), want.len(), "{err}");
        for (line, want) in lines.iter().zip(want) {
            assert!(
                line.starts_with(want),
                "{line:?} does not start with {want:?}\n{err}"
            );
        }
        let err = check("[[transit]]\norigin = \"c\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `via`"), "{err}");
    }

    #[test]
    fn no_file_is_the_default_offer() {
        let p = check("").unwrap();
        assert_eq!(
            (p.offer, p.services),
            (PolicyOffer::default(), services::Offer::default())
        );
    }

    #[test]
    fn every_wrong_value_is_reported_with_its_line_and_column() {
        let text = "[data]\nmax_message_size = 0\nredact = [\"customer\"]\n\n[qos]\nmax_priority = 9\nmax_latency = \"soon\"\n[qos.requires]\nmin_rate = 5\n\n[security]\nalgorithms = [\"aes-256-gcm\", \"rot13\"]\n\n[compliance]\nframeworks = [\"gdpr\"]\nretention_days = 30\naudit_level = \"some\"\nresidency = [\"eu\"]\n[compliance.requires]\nframeworks = [\"hipaa\"]\nmin_retention_days = 90\n";
        let err = check(text).unwrap_err().to_string();
        let lines: Vec<&str> = err.lines().collect();
        let want = [
            "policy.toml:2:20: data.max_message_size = 0: must be from 1 to 67108864",
            "policy.toml:3:11: data.redact: \"customer\": a JSON pointer starts with /",
            "policy.toml:6:16: qos.max_priority = 9: must be from 0 to 7",
            "policy.toml:7:15: qos.max_latency = \"soon\"",
            "policy.toml:12:14: security.algorithms: name a signature algorithm",
            "policy.toml:12:30: security.algorithms: \"rot13\": unknown; one of ecdsa-p384-sha384, aes-256-gcm",
            "policy.toml:17:15: compliance.audit_level: \"some\": unknown",
            "policy.toml:18:13: compliance.residency needs compliance.region: say where this mesh keeps",
            "policy.toml:20:14: compliance.requires.frameworks: [\"hipaa\"] are required of partners",
            "policy.toml:21:22: compliance.requires.min_retention_days = 90 is above this mesh's own compliance.retention_days = 30",
        ];
        assert_eq!(lines.len(), want.len(), "{err}");
        for (line, want) in lines.iter().zip(want) {
            assert!(
                line.starts_with(want),
                "{line:?} does not start with {want:?}\n{err}"
            );
        }
    }

    #[test]
    fn access_rules_are_validated_and_placed_in_the_file() {
        let text = "[qos]\nmax_rate = 5\n\n[access]\nrules = '''\npermit (principal, action, resource)\nwhen { resource.size > 3 };\n'''\n";
        let err = check(text).unwrap_err().to_string();
        assert!(err.starts_with("policy.toml:7:8: access.rules: "), "{err}");
        assert!(
            err.contains("attribute `size` on entity type `Meshfed::Topic` not found"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn a_syntax_error_or_unknown_key_names_its_place() {
        let err = check("[qos]\nmax_rat = 5\n").unwrap_err().to_string();
        assert!(
            err.starts_with("policy.toml:2:1: unknown field `max_rat`"),
            "{err}"
        );
        let err = check("[data\n").unwrap_err().to_string();
        assert!(err.starts_with("policy.toml:1:"), "{err}");
    }
}
