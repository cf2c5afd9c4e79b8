//! Policy negotiation (handshake step 4): each side's offer, the terms they agree on, and how a
//! proposal is evaluated. The policy file (`policy.toml`, read by the service) compiles to a
//! [`PolicyOffer`]; negotiation itself stays here, in the sans-IO core.
//!
//! An offer has four of the spec's five kinds — data, QoS, security, compliance — each clause a limit this side allows, and
//! [`Requirements`]: floors this side insists on. Evaluation combines a proposal with the local
//! offer clause by clause into the most restrictive terms both can live with. If that is the
//! proposal itself, it is accepted; otherwise the combination is the counterproposal. Every rule
//! is idempotent, commutative and associative (a meet), so the counterproposal is one the
//! proposer accepts as it stands when it can live with it at all, and negotiation ends within
//! two rounds. A floor above the combined limit or an empty intersection ends the negotiation, naming every conflicting clause. The topics each
//! side publishes and wants (access) and the compliance frameworks are capabilities, settled
//! in step 3 (`capability::services`, `capability::compliance`).
//!
//! | clause | combination |
//! |---|---|
//! | `data.max_message_size` | the lower |
//! | `data.content_types` | the intersection (empty: any) |
//! | `data.redact` | the union (each side's sender removes them before sealing) |
//! | `data.schemas` | the intersection (empty: any), not empty if both name some |
//! | `data.classifications` | the intersection (empty: any), not empty if both name some |
//! | `qos.max_rate` | the lower (none: no limit) |
//! | `qos.limits` (per topic pattern) | the union; the lower rate for a pattern both name |
//! | `qos.max_priority` | the lower |
//! | `qos.max_latency_ms` | the shorter (none: no bound) |
//! | `security.require_encryption` | either requires it |
//! | `security.signature_modes` | the intersection, not empty |
//! | `security.algorithms` | the intersection, a signature and a cipher left |
//! | `compliance.residency` | the intersection (empty: anywhere), not empty if both name some |
//! | `compliance.regions` | the union of the regions each side keeps exchanged data in; with a residency agreed, each side names its region and every region lies within it |
//! | `compliance.retention_days` | the shorter |
//! | `compliance.audit_level` | the higher |
//! | `requires.min_message_size`, `min_rate`, `min_retention_days` | the higher, at most the combined limit |

use serde::{Deserialize, Serialize};

use crate::topic::TopicPattern;

/// A rate limit on the topics of one pattern, each way: at most `rate` messages per second
/// match it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicRate {
    /// The topics it covers.
    pub topics: TopicPattern,
    /// Most messages per second on them.
    pub rate: u32,
}

/// How envelopes are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureMode {
    /// One signature per envelope.
    PerMessage,
    /// One signature over the Merkle root of a batch; each envelope keeps an inclusion proof.
    Batch,
}

/// A cryptographic algorithm a federation may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// ECDSA over P-384 with SHA-384: envelope, batch and agreement signatures.
    #[serde(rename = "ecdsa-p384-sha384")]
    EcdsaP384Sha384,
    /// AES-256-GCM: end-to-end payload encryption.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

impl Algorithm {
    /// Every algorithm meshfed implements.
    pub const ALL: [Self; 2] = [Self::EcdsaP384Sha384, Self::Aes256Gcm];

    /// Whether it signs (else it encrypts).
    pub fn signs(self) -> bool {
        matches!(self, Self::EcdsaP384Sha384)
    }
}

/// How much of the exchanged traffic each side records in its audit trail.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum AuditLevel {
    /// Lifecycle events only (federations, agreements, revocations).
    Lifecycle,
    /// Lifecycle events and every refusal.
    #[default]
    Refusals,
    /// Everything, each envelope crossing included.
    Full,
}

/// Floors a side insists on: a combined limit below one ends the negotiation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Requirements {
    /// Payloads of at least this many bytes must be allowed.
    pub min_message_size: u32,
    /// At least this many messages per second must be allowed.
    pub min_rate: Option<u32>,
    /// Records must be allowed to be kept at least this many days.
    pub min_retention_days: u32,
}

/// What one side allows and requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyOffer {
    /// Largest payload this side accepts, in bytes.
    pub max_message_size: u32,
    /// Media types this side accepts; empty: any.
    pub content_types: Vec<String>,
    /// JSON pointers of payload fields this side's data never crosses with (removed by the
    /// sender before sealing).
    pub redact: Vec<String>,
    /// Most messages per second this side accepts from the partner; `None`: no limit.
    pub max_rate: Option<u32>,
    /// Rate limits per topic pattern, each way.
    #[serde(default)]
    pub topic_rates: Vec<TopicRate>,
    /// Schema ids a message may name; empty: any (and none needed).
    #[serde(default)]
    pub schemas: Vec<String>,
    /// Classification labels a message may carry; empty: any (and none needed).
    #[serde(default)]
    pub classifications: Vec<String>,
    /// Highest priority a message may carry (0–7).
    pub max_priority: u8,
    /// Longest delivery deadline a message may ask for, in milliseconds; `None`: no bound.
    pub max_latency_ms: Option<u32>,
    /// Whether payloads must be encrypted end to end.
    pub require_encryption: bool,
    /// Signature modes this side accepts.
    pub signature_modes: Vec<SignatureMode>,
    /// Algorithms this side accepts.
    pub algorithms: Vec<Algorithm>,
    /// Regions where exchanged data may be kept; empty means anywhere.
    pub residency: Vec<String>,
    /// The region where this side keeps what it receives; `None`: not said (then it cannot
    /// agree to a residency).
    #[serde(default)]
    pub region: Option<String>,
    /// Longest time, in days, either side may keep records of exchanged messages.
    pub retention_days: u32,
    /// The least audit level this side accepts.
    pub audit_level: AuditLevel,
    /// What this side insists on.
    pub requires: Requirements,
}

impl Default for PolicyOffer {
    fn default() -> Self {
        Self {
            max_message_size: 1 << 20,
            content_types: Vec::new(),
            redact: Vec::new(),
            max_rate: None,
            topic_rates: Vec::new(),
            schemas: Vec::new(),
            classifications: Vec::new(),
            max_priority: 7,
            max_latency_ms: None,
            require_encryption: true,
            signature_modes: vec![SignatureMode::Batch, SignatureMode::PerMessage],
            algorithms: Algorithm::ALL.to_vec(),
            residency: Vec::new(),
            region: None,
            retention_days: 365,
            audit_level: AuditLevel::default(),
            requires: Requirements::default(),
        }
    }
}

fn seven() -> u8 {
    7
}

fn all_algorithms() -> Vec<Algorithm> {
    Algorithm::ALL.to_vec()
}

/// Agreed terms: a proposal, a counterproposal, or the final terms of an agreement. Fields
/// added after the first release default when an older agreement is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTerms {
    /// Largest payload, in bytes.
    pub max_message_size: u32,
    /// Most messages per second in each direction; `None`: no limit.
    pub max_rate: Option<u32>,
    /// Payloads are encrypted end to end.
    pub encryption_required: bool,
    /// Signature modes either side may use.
    pub signature_modes: Vec<SignatureMode>,
    /// Regions where exchanged data may be kept; empty means anywhere.
    pub residency: Vec<String>,
    /// Retention limit for records of exchanged messages, in days.
    pub retention_days: u32,
    /// Media types that may cross; empty: any.
    #[serde(default)]
    pub content_types: Vec<String>,
    /// JSON pointers removed from every payload before sealing.
    #[serde(default)]
    pub redact: Vec<String>,
    /// Highest priority a message may carry.
    #[serde(default = "seven")]
    pub max_priority: u8,
    /// Longest delivery deadline a message may ask for, in milliseconds.
    #[serde(default)]
    pub max_latency_ms: Option<u32>,
    /// Algorithms either side may use.
    #[serde(default = "all_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// The audit level both sides keep.
    #[serde(default)]
    pub audit_level: AuditLevel,
    /// The floors both sides insist on.
    #[serde(default)]
    pub floors: Requirements,
    /// The regions the sides keep exchanged data in, as they said them.
    #[serde(default)]
    pub regions: Vec<String>,
    /// A side did not say where it keeps exchanged data.
    #[serde(default)]
    pub region_unsaid: bool,
    /// Rate limits per topic pattern, each way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topic_rates: Vec<TopicRate>,
    /// Schema ids a message must name one of; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    /// Classification labels a message must carry one of; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classifications: Vec<String>,
}

/// Clauses no combination of the two offers satisfies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy cannot be agreed: {}", .0.join("; "))]
pub struct Unsatisfiable(pub Vec<String>);

/// The outcome of evaluating a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// The proposal is acceptable as it stands.
    Accept,
    /// These more restrictive terms are acceptable instead.
    Counter(Box<PolicyTerms>),
}

/// A sorted list without duplicates.
fn set<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort();
    v.dedup();
    v
}

/// The intersection of two sets.
fn meet<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    set(&a
        .iter()
        .filter(|x| b.contains(x))
        .cloned()
        .collect::<Vec<_>>())
}

/// The intersection of two sets where empty means any.
fn meet_any<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => set(b),
        (false, true) => set(a),
        (false, false) => meet(a, b),
    }
}

/// The lower of two optional limits, `None` being no limit.
fn lower<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl PolicyOffer {
    /// The terms this side proposes: its own offer.
    pub fn proposal(&self) -> PolicyTerms {
        PolicyTerms {
            max_message_size: self.max_message_size,
            max_rate: self.max_rate,
            encryption_required: self.require_encryption,
            signature_modes: set(&self.signature_modes),
            residency: set(&self.residency),
            retention_days: self.retention_days,
            content_types: set(&self.content_types),
            redact: set(&self.redact),
            max_priority: self.max_priority,
            max_latency_ms: self.max_latency_ms,
            algorithms: set(&self.algorithms),
            audit_level: self.audit_level,
            floors: self.requires.clone(),
            regions: self.region.iter().cloned().collect(),
            region_unsaid: self.region.is_none(),
            topic_rates: rates(&self.topic_rates, &[]),
            schemas: set(&self.schemas),
            classifications: set(&self.classifications),
        }
    }

    /// The most restrictive terms satisfying both this offer and `terms`.
    pub fn combine(&self, terms: &PolicyTerms) -> Result<PolicyTerms, Unsatisfiable> {
        let own = self.proposal();
        let mut conflicts = Vec::new();
        let signature_modes = meet(&own.signature_modes, &terms.signature_modes);
        if signature_modes.is_empty() {
            conflicts.push(format!(
                "security.signature_modes: we accept {:?}, the proposal {:?}",
                own.signature_modes, terms.signature_modes
            ));
        }
        let algorithms = meet(&own.algorithms, &terms.algorithms);
        if !algorithms.iter().any(|a| a.signs()) || !algorithms.iter().any(|a| !a.signs()) {
            conflicts.push(format!(
                "security.algorithms: we accept {:?}, the proposal {:?}; no common signature and cipher",
                own.algorithms, terms.algorithms
            ));
        }
        let residency = meet_any(&own.residency, &terms.residency);
        if residency.is_empty() && !own.residency.is_empty() && !terms.residency.is_empty() {
            conflicts.push(format!(
                "compliance.residency: we let exchanged data stay in {:?}, the proposal in {:?}: no region both allow",
                own.residency, terms.residency
            ));
        }
        let regions = set(&[own.regions.as_slice(), &terms.regions].concat());
        let region_unsaid = own.region_unsaid || terms.region_unsaid;
        if !residency.is_empty() {
            if region_unsaid {
                conflicts.push(format!(
                    "compliance.region: exchanged data must stay in {residency:?}, and {} not say where {} it",
                    if own.region_unsaid { "we do" } else { "the proposal does" },
                    if own.region_unsaid { "we keep" } else { "its side keeps" },
                ));
            }
            for region in regions.iter().filter(|r| !residency.contains(r)) {
                conflicts.push(format!(
                    "compliance.region: exchanged data must stay in {residency:?}, and {} it in {region:?}",
                    if own.regions.contains(region) {
                        "we keep"
                    } else {
                        "the proposal's side keeps"
                    },
                ));
            }
        }
        let content_types = meet_any(&own.content_types, &terms.content_types);
        if content_types.is_empty()
            && !own.content_types.is_empty()
            && !terms.content_types.is_empty()
        {
            conflicts.push(format!(
                "data.content_types: we accept {:?}, the proposal {:?}",
                own.content_types, terms.content_types
            ));
        }
        let schemas = meet_any(&own.schemas, &terms.schemas);
        if schemas.is_empty() && !own.schemas.is_empty() && !terms.schemas.is_empty() {
            conflicts.push(format!(
                "data.schemas: we accept {:?}, the proposal {:?}",
                own.schemas, terms.schemas
            ));
        }
        let classifications = meet_any(&own.classifications, &terms.classifications);
        if classifications.is_empty()
            && !own.classifications.is_empty()
            && !terms.classifications.is_empty()
        {
            conflicts.push(format!(
                "data.classifications: we let {:?} cross, the proposal {:?}",
                own.classifications, terms.classifications
            ));
        }
        let max_message_size = own.max_message_size.min(terms.max_message_size);
        let max_rate = lower(own.max_rate, terms.max_rate);
        let retention_days = own.retention_days.min(terms.retention_days);
        let floors = Requirements {
            min_message_size: own
                .floors
                .min_message_size
                .max(terms.floors.min_message_size),
            min_rate: own.floors.min_rate.max(terms.floors.min_rate),
            min_retention_days: own
                .floors
                .min_retention_days
                .max(terms.floors.min_retention_days),
        };
        if floors.min_message_size > max_message_size {
            conflicts.push(format!(
                "data.max_message_size: at least {1} bytes required by {0}, at most {max_message_size} allowed by {2}",
                who(floors.min_message_size, own.floors.min_message_size, terms.floors.min_message_size),
                floors.min_message_size,
                who(max_message_size, own.max_message_size, terms.max_message_size),
            ));
        }
        if let (Some(need), Some(max)) = (floors.min_rate, max_rate)
            && need > max
        {
            conflicts.push(format!(
                "qos.max_rate: at least {need} msg/s required by {}, at most {max} allowed by {}",
                who(floors.min_rate, own.floors.min_rate, terms.floors.min_rate),
                who(max_rate, own.max_rate, terms.max_rate),
            ));
        }
        if floors.min_retention_days > retention_days {
            conflicts.push(format!(
                "compliance.retention_days: keeping records at least {1} days required by {0}, at most {retention_days} allowed by {2}",
                who(floors.min_retention_days, own.floors.min_retention_days, terms.floors.min_retention_days),
                floors.min_retention_days,
                who(retention_days, own.retention_days, terms.retention_days),
            ));
        }
        if !conflicts.is_empty() {
            return Err(Unsatisfiable(conflicts));
        }
        Ok(PolicyTerms {
            max_message_size,
            max_rate,
            encryption_required: own.encryption_required || terms.encryption_required,
            signature_modes,
            residency,
            retention_days,
            content_types,
            redact: set(&[own.redact.as_slice(), &terms.redact].concat()),
            max_priority: own.max_priority.min(terms.max_priority),
            max_latency_ms: lower(own.max_latency_ms, terms.max_latency_ms),
            algorithms,
            audit_level: own.audit_level.max(terms.audit_level),
            floors,
            regions,
            region_unsaid,
            topic_rates: rates(&own.topic_rates, &terms.topic_rates),
            schemas,
            classifications,
        })
    }

    /// Evaluates a proposal against this offer.
    pub fn evaluate(&self, proposal: &PolicyTerms) -> Result<Evaluation, Unsatisfiable> {
        let combined = self.combine(proposal)?;
        Ok(if &combined == proposal {
            Evaluation::Accept
        } else {
            Evaluation::Counter(Box::new(combined))
        })
    }
}

/// The per-topic limits of both lists: each pattern once, at the lower rate where both name it;
/// sorted.
fn rates(a: &[TopicRate], b: &[TopicRate]) -> Vec<TopicRate> {
    let mut out: Vec<TopicRate> = Vec::new();
    for r in a.iter().chain(b) {
        match out.iter_mut().find(|o| o.topics == r.topics) {
            Some(o) => o.rate = o.rate.min(r.rate),
            None => out.push(r.clone()),
        }
    }
    out.sort();
    out
}

/// Which side a combined value came from, as a conflict names it.
fn who<T: PartialEq>(combined: T, ours: T, theirs: T) -> &'static str {
    match (combined == ours, combined == theirs) {
        (true, true) => "both sides",
        (true, false) => "us",
        _ => "the proposal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_offers_accept() {
        let o = PolicyOffer::default();
        assert_eq!(o.evaluate(&o.proposal()).unwrap(), Evaluation::Accept);
    }

    #[test]
    fn counterproposal_is_the_most_restrictive_combination() {
        let a = PolicyOffer {
            max_rate: Some(500),
            require_encryption: false,
            ..PolicyOffer::default()
        };
        let b = PolicyOffer {
            max_message_size: 4096,
            retention_days: 30,
            ..PolicyOffer::default()
        };
        let Evaluation::Counter(t) = b.evaluate(&a.proposal()).unwrap() else {
            panic!("expected a counter")
        };
        assert_eq!(
            (
                t.max_message_size,
                t.max_rate,
                t.encryption_required,
                t.retention_days
            ),
            (4096, Some(500), true, 30)
        );
        // The counterproposal satisfies the proposer too: it accepts it as is.
        assert_eq!(a.evaluate(&t).unwrap(), Evaluation::Accept);
    }

    #[test]
    fn unsatisfiable_names_every_conflicting_clause() {
        let a = PolicyOffer {
            residency: vec!["eu".into()],
            signature_modes: vec![SignatureMode::Batch],
            ..PolicyOffer::default()
        };
        let b = PolicyOffer {
            residency: vec!["us".into()],
            signature_modes: vec![SignatureMode::PerMessage],
            ..PolicyOffer::default()
        };
        let err = b.evaluate(&a.proposal()).unwrap_err().to_string();
        assert!(
            err.contains("compliance.residency") && err.contains("security.signature_modes"),
            "{err}"
        );
    }

    /// Negotiates as the handshake does: `a` proposes, `b` evaluates, `a` evaluates a counter.
    fn negotiate(a: &PolicyOffer, b: &PolicyOffer) -> Result<PolicyTerms, Unsatisfiable> {
        let proposal = a.proposal();
        match b.evaluate(&proposal)? {
            Evaluation::Accept => Ok(proposal),
            Evaluation::Counter(c) => match a.evaluate(&c)? {
                Evaluation::Accept => Ok(*c),
                Evaluation::Counter(d) => panic!("a second counter: {d:?} after {c:?}"),
            },
        }
    }

    type Edit = fn(&mut PolicyOffer);
    type Read = fn(&PolicyTerms) -> String;

    /// Offers × requirements → the agreed clause, read off the terms.
    #[test]
    fn each_clause_combines_by_its_rule() {
        let cases: &[(&str, Edit, Edit, Read, &str)] = &[
            (
                "the lower size",
                |o| o.max_message_size = 4096,
                |o| o.max_message_size = 65536,
                |t| t.max_message_size.to_string(),
                "4096",
            ),
            (
                "the lower rate",
                |o| o.max_rate = Some(500),
                |o| o.max_rate = Some(100),
                |t| format!("{:?}", t.max_rate),
                "Some(100)",
            ),
            (
                "a rate against none",
                |_| {},
                |o| o.max_rate = Some(100),
                |t| format!("{:?}", t.max_rate),
                "Some(100)",
            ),
            (
                "content types intersect",
                |o| o.content_types = vec!["application/json".into(), "text/plain".into()],
                |o| o.content_types = vec!["application/json".into()],
                |t| format!("{:?}", t.content_types),
                "[\"application/json\"]",
            ),
            (
                "any content type meets a list",
                |_| {},
                |o| o.content_types = vec!["text/csv".into()],
                |t| format!("{:?}", t.content_types),
                "[\"text/csv\"]",
            ),
            (
                "redactions unite",
                |o| o.redact = vec!["/price".into()],
                |o| o.redact = vec!["/customer/email".into()],
                |t| format!("{:?}", t.redact),
                "[\"/customer/email\", \"/price\"]",
            ),
            (
                "the lower priority cap",
                |o| o.max_priority = 5,
                |o| o.max_priority = 3,
                |t| t.max_priority.to_string(),
                "3",
            ),
            (
                "the shorter latency bound",
                |o| o.max_latency_ms = Some(2000),
                |_| {},
                |t| format!("{:?}", t.max_latency_ms),
                "Some(2000)",
            ),
            (
                "encryption if either requires it",
                |o| o.require_encryption = false,
                |_| {},
                |t| t.encryption_required.to_string(),
                "true",
            ),
            (
                "signature modes intersect",
                |o| o.signature_modes = vec![SignatureMode::PerMessage],
                |_| {},
                |t| format!("{:?}", t.signature_modes),
                "[PerMessage]",
            ),
            (
                "regions intersect",
                |o| {
                    o.residency = vec!["eu".into(), "ch".into()];
                    o.region = Some("eu".into());
                },
                |o| {
                    o.residency = vec!["eu".into()];
                    o.region = Some("eu".into());
                },
                |t| format!("{:?}", t.residency),
                "[\"eu\"]",
            ),
            (
                "each side's region, within the residency",
                |o| {
                    o.residency = vec!["eu".into(), "ch".into()];
                    o.region = Some("ch".into());
                },
                |o| o.region = Some("eu".into()),
                |t| format!("{:?} {}", t.regions, t.region_unsaid),
                "[\"ch\", \"eu\"] false",
            ),
            (
                "schemas intersect",
                |o| o.schemas = vec!["order-v1".into(), "order-v2".into()],
                |o| o.schemas = vec!["order-v2".into()],
                |t| format!("{:?}", t.schemas),
                "[\"order-v2\"]",
            ),
            (
                "classifications intersect, any meets a list",
                |o| o.classifications = vec!["internal".into(), "public".into()],
                |_| {},
                |t| format!("{:?}", t.classifications),
                "[\"internal\", \"public\"]",
            ),
            (
                "topic limits unite, the lower rate for the same pattern",
                |o| {
                    o.topic_rates = vec![
                        TopicRate {
                            topics: "telemetry/#".parse::<TopicPattern>().unwrap(),
                            rate: 100,
                        },
                        TopicRate {
                            topics: "orders/#".parse::<TopicPattern>().unwrap(),
                            rate: 10,
                        },
                    ]
                },
                |o| {
                    o.topic_rates = vec![TopicRate {
                        topics: "telemetry/#".parse::<TopicPattern>().unwrap(),
                        rate: 50,
                    }]
                },
                |t| {
                    (t.topic_rates.iter())
                        .map(|r| format!("{}={}", r.topics, r.rate))
                        .collect::<Vec<_>>()
                        .join(" ")
                },
                "orders/#=10 telemetry/#=50",
            ),
            (
                "the shorter retention",
                |o| o.retention_days = 30,
                |o| o.retention_days = 90,
                |t| t.retention_days.to_string(),
                "30",
            ),
            (
                "the higher audit level",
                |o| o.audit_level = AuditLevel::Full,
                |_| {},
                |t| format!("{:?}", t.audit_level),
                "Full",
            ),
            (
                "floors take the higher, within the limit",
                |o| o.requires.min_rate = Some(50),
                |o| {
                    o.max_rate = Some(100);
                    o.requires.min_rate = Some(80);
                },
                |t| format!("{:?} {:?}", t.max_rate, t.floors.min_rate),
                "Some(100) Some(80)",
            ),
        ];
        for (name, edit_a, edit_b, read, want) in cases {
            let (mut a, mut b) = (PolicyOffer::default(), PolicyOffer::default());
            edit_a(&mut a);
            edit_b(&mut b);
            for (first, second) in [(&a, &b), (&b, &a)] {
                let t = negotiate(first, second).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(read(&t), *want, "{name}");
            }
        }
    }

    /// Offers × requirements that no terms satisfy → the clause named, on whichever side
    /// finds it.
    #[test]
    fn each_unsatisfiable_requirement_is_named() {
        let cases: &[(&str, Edit, Edit, &str)] = &[
            (
                "size floor",
                |o| o.requires.min_message_size = 65536,
                |o| o.max_message_size = 4096,
                "data.max_message_size",
            ),
            (
                "rate floor",
                |o| o.requires.min_rate = Some(1000),
                |o| o.max_rate = Some(100),
                "qos.max_rate",
            ),
            (
                "retention floor",
                |o| o.requires.min_retention_days = 365,
                |o| o.retention_days = 30,
                "compliance.retention_days",
            ),
            (
                "regions",
                |o| o.residency = vec!["eu".into()],
                |o| o.residency = vec!["us".into()],
                "compliance.residency",
            ),
            (
                "a region outside the residency",
                |o| {
                    o.residency = vec!["eu".into()];
                    o.region = Some("eu".into());
                },
                |o| o.region = Some("us".into()),
                "compliance.region: exchanged data must stay in [\"eu\"], and",
            ),
            (
                "a residency with a side that does not say its region",
                |o| {
                    o.residency = vec!["eu".into()];
                    o.region = Some("eu".into());
                },
                |_| {},
                "not say where",
            ),
            (
                "content types",
                |o| o.content_types = vec!["text/csv".into()],
                |o| o.content_types = vec!["application/json".into()],
                "data.content_types",
            ),
            (
                "schemas",
                |o| o.schemas = vec!["order-v1".into()],
                |o| o.schemas = vec!["order-v2".into()],
                "data.schemas",
            ),
            (
                "classifications",
                |o| o.classifications = vec!["public".into()],
                |o| o.classifications = vec!["secret".into()],
                "data.classifications",
            ),
            (
                "signature modes",
                |o| o.signature_modes = vec![SignatureMode::Batch],
                |o| o.signature_modes = vec![SignatureMode::PerMessage],
                "security.signature_modes",
            ),
            (
                "algorithms",
                |o| o.algorithms = vec![Algorithm::Aes256Gcm],
                |_| {},
                "security.algorithms",
            ),
        ];
        for (name, edit_a, edit_b, clause) in cases {
            let (mut a, mut b) = (PolicyOffer::default(), PolicyOffer::default());
            edit_a(&mut a);
            edit_b(&mut b);
            for (first, second) in [(&a, &b), (&b, &a)] {
                let err = negotiate(first, second).expect_err(name).to_string();
                let clause = clause.split(':').next().unwrap_or(clause);
                assert!(err.contains(clause), "{name}: {err}");
            }
        }
    }

    #[test]
    fn a_conflict_names_the_values_of_each_side() {
        let a = PolicyOffer {
            requires: Requirements {
                min_rate: Some(1000),
                ..Requirements::default()
            },
            ..PolicyOffer::default()
        };
        let b = PolicyOffer {
            max_rate: Some(100),
            ..PolicyOffer::default()
        };
        let err = b.evaluate(&a.proposal()).unwrap_err().to_string();
        assert!(
            err.contains("qos.max_rate: at least 1000 msg/s required by the proposal, at most 100 allowed by us"),
            "{err}"
        );
    }

    #[test]
    fn terms_from_before_the_policy_file_still_decode() {
        #[derive(Serialize)]
        struct Old {
            max_message_size: u32,
            max_rate: Option<u32>,
            encryption_required: bool,
            signature_modes: Vec<SignatureMode>,
            residency: Vec<String>,
            retention_days: u32,
        }
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &Old {
                max_message_size: 10,
                max_rate: None,
                encryption_required: true,
                signature_modes: vec![SignatureMode::Batch],
                residency: vec![],
                retention_days: 3,
            },
            &mut bytes,
        )
        .unwrap();
        let t: PolicyTerms = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(
            (t.max_priority, t.algorithms.len(), t.max_message_size),
            (7, 2, 10)
        );
    }
}
