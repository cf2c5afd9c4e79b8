//! Every request and response body of the node API (DESIGN.md §9.2) as serde structs: what the
//! server builds and the CLI reads, and what the OpenAPI document at `/v1/openapi.json` is
//! generated from (`#[derive(ToSchema)]`).
//!
//! The JSON they produce is the API's contract: field names, shapes and the `null`s of absent
//! values are what scripts read. Domain values keep their types (`MeshId`, `Topic`, `Qos`, …);
//! their schemas come from stand-ins in `schema`, since the domain crates know nothing of
//! OpenAPI. Timestamps are RFC 3339 text.
//!
//! Where to start reading: [`FederationView`] (what `federation list` and `show` display), then
//! [`SendRequest`] and [`PublishReply`] (sending, over HTTP or the publish WebSocket).

use std::net::SocketAddr;

use meshfed_proto::TopicPattern;
use meshfed_proto::agreement::SignedAgreement;
use meshfed_proto::envelope::export::Form;
use meshfed_proto::envelope::{ContentType, EnvelopeId, Priority, Properties, Qos};
use meshfed_proto::policy::{
    Algorithm, AuditLevel, PolicyTerms, Requirements, SignatureMode as AgreedSignatureMode,
};
use meshfed_proto::{FederationId, FederationState, MeshId, NodeName, Termination, Topic};
use meshfed_queue::DeadLetterReason;
use meshfed_store::FederationRecord;
use meshfed_store::journal::DeadLetter;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::config::{Role as NodeRole, SignatureMode};
use crate::gateway::federations::rfc3339;
use crate::gateway::stream as outbound;
use crate::gateway::{Health, LinkStatus, NodeFacts};

mod connectors;
mod delegations;
mod policy;
mod revocations;
pub(crate) mod schema;
mod stats;
mod tokens;

pub use crate::audit::views::{
    AgreementEntry, AuditPage, AuditRecordView, AuditReport, AuditVerification, Count,
    FederationReport, LogVerification,
};
pub use connectors::{ConnectorList, ConnectorView};
pub use delegations::{
    AddDelegationRequest, DelegationList, DelegationView, IssueDelegationRequest, IssuedDelegation,
};
pub use policy::{
    PolicyAgreementView, PolicyOfferView, PolicyProposalView, PolicyUpdate, PolicyUpdated,
    PolicyView,
};
pub use revocations::{
    RevocationListView, RevocationsView, RevokeNodeRequest, RevokedDelegationView, RevokedNodeView,
    RevokedSerialView,
};
pub use stats::{FederationStats, LatencyPercentiles, StatsBacklog, StatsRates, StatsView};
pub use tokens::{IssueTokenRequest, IssuedToken, TokenList, TokenView};

pub use crate::gateway::events::{Change, ChangeKind};

/// `GET /v1/node`: this node's identity and addresses, and how it signs what it sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    /// The mesh this node belongs to.
    #[schema(value_type = schema::MeshId)]
    pub mesh: MeshId,
    /// The node's name within its mesh.
    #[schema(value_type = schema::NodeName)]
    pub node: NodeName,
    /// What the node runs as.
    #[serde(with = "via_str")]
    #[schema(value_type = schema::NodeRole)]
    pub role: NodeRole,
    /// `meshfed://<mesh>/<node>`, the name in the node's certificate.
    pub uri: String,
    /// Where peer gateways reach this node (`host:port`).
    #[schema(value_type = String, example = "127.0.0.1:7443")]
    pub federation_address: SocketAddr,
    /// SHA-384 of the mesh CA certificate, hex.
    pub ca_fingerprint: String,
    /// When the node's certificate expires.
    #[schema(format = DateTime)]
    pub node_cert_expires: String,
    /// The mesh the node's trust bundle is for.
    #[schema(value_type = schema::MeshId)]
    pub trust_bundle_mesh: MeshId,
    /// How this gateway delivers, as it runs (its file may have changed since).
    pub delivery: NodeDelivery,
    /// meshfed's version.
    pub version: String,
    /// The gateway's process id on its host: where a tool on the same host (`meshfed bench`)
    /// reads its memory and CPU use (`/proc/PID`).
    pub pid: u32,
}

impl NodeInfo {
    /// What `node` is.
    pub(crate) fn of(node: NodeFacts) -> Self {
        Self {
            uri: format!("meshfed://{}/{}", node.mesh, node.node),
            mesh: node.mesh,
            node: node.node,
            role: node.role,
            federation_address: node.federation_addr,
            ca_fingerprint: node.ca_fingerprint,
            node_cert_expires: rfc3339(node.node_cert_expires),
            trust_bundle_mesh: node.trust_bundle_mesh,
            delivery: NodeDelivery {
                signatures: node.signatures,
            },
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
        }
    }
}

/// [`NodeInfo::delivery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeDelivery {
    /// How this gateway signs what it sends: one signature per batch, or per message.
    #[serde(with = "via_str")]
    #[schema(value_type = schema::SignatureMode)]
    pub signatures: SignatureMode,
}

/// `GET /v1/routes`: the routing table (path vector) and the federations relayed by brokers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RouteList {
    /// Every mesh this node reaches over its links or through neighbour brokers, by mesh.
    pub routes: Vec<RouteView>,
}

/// One destination of the routing table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RouteView {
    /// The mesh reached.
    #[schema(value_type = String)]
    pub destination: MeshId,
    /// The neighbour tunnel frames for it go to.
    #[schema(value_type = String)]
    pub next_hop: MeshId,
    /// The meshes a frame crosses, this one first, the destination last.
    #[schema(value_type = Vec<String>)]
    pub path: Vec<MeshId>,
    /// Hops to the destination.
    pub hops: usize,
    /// The path's summed round trip (heartbeats of each link), in milliseconds.
    pub rtt_ms: f64,
}

/// `GET /directory`: the mesh descriptors a broker lists. Not a trust anchor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DirectoryView {
    /// Every mesh listed, by mesh id.
    pub descriptors: Vec<DescriptorView>,
}

/// One mesh as its gateway described it, signed under the CA it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DescriptorView {
    /// The mesh.
    #[schema(value_type = String)]
    pub mesh: MeshId,
    /// What it offers, as it says.
    pub capabilities: Vec<String>,
    /// Where its gateway accepts federation links.
    pub addresses: Vec<String>,
    /// SHA-384 fingerprint (hex) of the CA the descriptor was signed under: compare it with one
    /// obtained out of band before trusting it.
    pub ca_fingerprint: String,
    /// When it was signed.
    #[schema(format = DateTime)]
    pub issued: String,
    /// When it stops being listed.
    #[schema(format = DateTime)]
    pub expires: String,
}

/// `GET /v1/federations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FederationList {
    /// Every federation in the registry, terminated ones included.
    pub federations: Vec<FederationView>,
}

/// One federation as `federation list` and `show` display it: the record, its link, its
/// agreement and, while its stream runs, what the stream holds and has done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FederationView {
    /// The federation's id, chosen at the handshake.
    #[schema(value_type = schema::FederationId)]
    pub id: FederationId,
    /// The peer mesh.
    #[schema(value_type = schema::MeshId)]
    pub peer: MeshId,
    /// The peer node this node linked with, once known.
    #[schema(value_type = Option<schema::NodeName>)]
    pub peer_node: Option<NodeName>,
    /// Which side of the handshake this node took.
    pub role: FederationRole,
    /// Where the federation stands in its lifecycle.
    #[serde(with = "via_str")]
    #[schema(value_type = schema::FederationState)]
    pub state: FederationState,
    /// The state, except that an active federation shows its link's health when that is not
    /// healthy: never `active` without a recent heartbeat.
    pub status: FederationStatus,
    /// Why it entered its state (an operator's note, an error), if given.
    pub state_reason: Option<String>,
    /// The link's health.
    pub health: LinkHealth,
    /// When the last heartbeat was answered.
    #[schema(format = DateTime)]
    pub last_heartbeat: Option<String>,
    /// Round trip of the last heartbeat, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// When the current link session was established.
    #[schema(format = DateTime)]
    pub connected_since: Option<String>,
    /// `host:port` addresses of the peer, in the order they are dialled; `via:<broker>` for a
    /// federation through a broker.
    pub peer_addresses: Vec<String>,
    /// The broker mesh a relayed federation runs through (end to end, in a tunnel the broker
    /// relays and cannot read); absent for a direct link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub via: Option<MeshId>,
    /// SHA-384 fingerprints (hex) of the peer mesh's CAs as stored: every new link with the
    /// peer is verified against exactly these. Two while the peer rolls its CA over.
    pub peer_cas: Vec<String>,
    /// When the federation was first stored.
    #[schema(format = DateTime)]
    pub created: String,
    /// When it last changed.
    #[schema(format = DateTime)]
    pub updated: String,
    /// The signed agreement's terms; `null` if the stored agreement cannot be read.
    pub agreement: Option<AgreementSummary>,
    /// Messages queued for the peer. Only while the federation's stream runs, and not in the
    /// answers to join and lifecycle operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub backlog: Option<Backlog>,
    /// Messages that will not be delivered, in total (see `GET /v1/messages/dead-letters`).
    /// Present with `backlog`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub dead_lettered: Option<u64>,
    /// What the stream has sent and had acknowledged. Present with `backlog`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub delivery: Option<DeliveryStats>,
    /// What the peer said it has subscribers for: qos 0 messages on other topics are not sent
    /// to it (counted in `delivery.unwanted`). Present with `backlog`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub peer_interest: Option<PeerInterest>,
    /// The agreement versions this federation replaced by renegotiating, oldest first. Only in
    /// `GET /v1/federations/{id}` and the answer to `renegotiate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub agreement_history: Option<Vec<PastAgreement>>,
    /// The peer's circuit breaker (DESIGN §3.13), tripped by anomalies in what the peer sends
    /// (the policy's `[anomaly]` section) or by repeated link failures. Only in
    /// `GET /v1/federations` and `GET /v1/federations/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub breaker: Option<BreakerView>,
}

/// A partner's circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BreakerView {
    /// Where it is: `closed` (traffic flows), `open` (the peer's traffic is held both ways:
    /// queued here, and not taken from the peer, which sends it again), `half-open` (a few
    /// messages pass as probes; clean windows close it, a deviation opens it again).
    pub state: BreakerState,
    /// When it entered the state; `null` for a breaker that never left closed.
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// Why it did: the deviation that tripped it, the open time that passed, the clean
    /// windows that closed it; `null` with `since`.
    pub reason: Option<String>,
}

/// Where a circuit breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// A few messages pass as probes.
    HalfOpen,
    /// The peer's traffic is held, both ways.
    Open,
}

impl BreakerState {
    /// The state as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half-open",
            Self::Open => "open",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&crate::gateway::guarded::Shown> for BreakerView {
    fn from(shown: &crate::gateway::guarded::Shown) -> Self {
        use meshfed_audit::breaker::StateName;
        Self {
            state: match shown.state {
                StateName::Closed => BreakerState::Closed,
                StateName::HalfOpen => BreakerState::HalfOpen,
                StateName::Open => BreakerState::Open,
            },
            since: shown.since.map(rfc3339),
            reason: shown.reason.clone(),
        }
    }
}

/// An agreement version a renegotiation replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PastAgreement {
    /// Its version.
    pub version: u32,
    /// SHA-384 of the signed agreement, hex.
    pub digest: String,
    /// When the next version replaced it.
    #[schema(format = DateTime)]
    pub replaced: String,
}

impl FederationView {
    /// The view of `record`, whose link is `link`; `stream` adds the backlog and delivery
    /// counts of its stream.
    pub(crate) fn new(
        record: &FederationRecord,
        link: LinkStatus,
        stream: Option<&outbound::Stats>,
    ) -> Self {
        let agreement = AgreementSummary::of(record);
        Self {
            id: record.id.clone(),
            peer: record.peer_mesh.clone(),
            peer_node: record.peer_node.clone(),
            role: record.role.into(),
            state: record.state,
            status: FederationStatus::of(record.state, link.health),
            state_reason: record.state_reason.clone(),
            health: link.health.into(),
            last_heartbeat: link.last_heartbeat.map(rfc3339),
            rtt_ms: link.rtt.map(|d| d.as_secs_f64() * 1000.0),
            connected_since: link.connected_since.map(rfc3339),
            peer_addresses: record.peer_addrs.clone(),
            via: crate::gateway::relayed_via(record),
            peer_cas: (record.peer_bundle.iter())
                .map(|der| meshfed_trust::Fingerprint::of(der).to_string())
                .collect(),
            created: rfc3339(record.created),
            updated: rfc3339(record.updated),
            agreement,
            backlog: stream.map(|s| Backlog::from(&s.backlog)),
            dead_lettered: stream.map(outbound::Stats::dead_lettered_total),
            delivery: stream.map(|s| DeliveryStats {
                sent: s.sent,
                retransmitted: s.retransmitted,
                acknowledged: s.acknowledged,
                transfers: s.transfers,
                shed: s
                    .dead_lettered
                    .get(outbound::reason_label(DeadLetterReason::Shed))
                    .copied()
                    .unwrap_or(0),
                unwanted: s.unwanted,
                in_custody: s.custody.held,
                custody_refused: s.custody.refused,
                last_custody_refusal: s.custody.last_refusal.clone(),
            }),
            peer_interest: stream.map(|s| PeerInterest::of(s.peer_interest.as_ref())),
            agreement_history: None,
            breaker: None,
        }
    }

    /// The view with the peer's circuit breaker.
    pub(crate) fn with_breaker(mut self, breaker: &crate::gateway::guarded::Shown) -> Self {
        self.breaker = Some(breaker.into());
        self
    }

    /// The view with the agreement versions the federation replaced.
    pub(crate) fn with_history(mut self, history: &[meshfed_store::AgreementEntry]) -> Self {
        self.agreement_history = Some(
            history
                .iter()
                .map(|e| PastAgreement {
                    version: e.version,
                    digest: hex::encode(e.agreement_digest),
                    replaced: rfc3339(e.replaced),
                })
                .collect(),
        );
        self
    }
}

/// Which side of the handshake a node took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FederationRole {
    /// It dialled (joined with a token).
    Initiator,
    /// It answered (issued the invitation).
    Responder,
}

impl FederationRole {
    /// The role as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initiator => "initiator",
            Self::Responder => "responder",
        }
    }
}

impl From<meshfed_store::Role> for FederationRole {
    fn from(role: meshfed_store::Role) -> Self {
        match role {
            meshfed_store::Role::Initiator => Self::Initiator,
            meshfed_store::Role::Responder => Self::Responder,
        }
    }
}

impl std::fmt::Display for FederationRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A federation's link health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkHealth {
    /// A frame arrived within two heartbeat intervals.
    Healthy,
    /// A frame arrived within three heartbeat intervals.
    Degraded,
    /// No link, or nothing heard for longer.
    Unreachable,
}

impl LinkHealth {
    /// The health as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unreachable => "unreachable",
        }
    }
}

impl From<Health> for LinkHealth {
    fn from(health: Health) -> Self {
        match health {
            Health::Healthy => Self::Healthy,
            Health::Degraded => Self::Degraded,
            Health::Unreachable => Self::Unreachable,
        }
    }
}

impl std::fmt::Display for LinkHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A federation's state as operators see it: its lifecycle state, except that an active
/// federation whose link is not healthy shows the link's health instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FederationStatus {
    /// The handshake is under way.
    Negotiating,
    /// Active, with a healthy link.
    Active,
    /// Active, but its link is degraded.
    Degraded,
    /// Active, but its link is down.
    Unreachable,
    /// Paused; no messages flow.
    Suspended,
    /// Agreeing new terms; messages keep flowing.
    Renegotiating,
    /// Ended gracefully.
    TerminatedGraceful,
    /// Ended at once.
    TerminatedForced,
    /// The link is being re-established.
    Reestablishing,
}

impl FederationStatus {
    /// The status of a federation in `state` whose link is `health`.
    pub(crate) fn of(state: FederationState, health: Health) -> Self {
        match (state, health) {
            (FederationState::Active, Health::Healthy) => Self::Active,
            (FederationState::Active, Health::Degraded) => Self::Degraded,
            (FederationState::Active, Health::Unreachable) => Self::Unreachable,
            (FederationState::Negotiating, _) => Self::Negotiating,
            (FederationState::Suspended, _) => Self::Suspended,
            (FederationState::Renegotiating, _) => Self::Renegotiating,
            (FederationState::Terminated(Termination::Graceful), _) => Self::TerminatedGraceful,
            (FederationState::Terminated(Termination::Forced), _) => Self::TerminatedForced,
            (FederationState::Reestablishing, _) => Self::Reestablishing,
        }
    }

    /// The status as the API writes it (`active`, `terminated-forced`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Negotiating => "negotiating",
            Self::Active => "active",
            Self::Degraded => "degraded",
            Self::Unreachable => "unreachable",
            Self::Suspended => "suspended",
            Self::Renegotiating => "renegotiating",
            Self::TerminatedGraceful => "terminated-graceful",
            Self::TerminatedForced => "terminated-forced",
            Self::Reestablishing => "reestablishing",
        }
    }

    /// Whether the federation has ended.
    pub fn is_terminated(self) -> bool {
        matches!(self, Self::TerminatedGraceful | Self::TerminatedForced)
    }
}

impl std::fmt::Display for FederationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The terms of a federation's signed agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgreementSummary {
    /// SHA-384 of the signed agreement, hex.
    pub digest: String,
    /// 1 at the handshake, +1 at each renegotiation.
    pub version: u32,
    /// Start of validity.
    #[schema(format = DateTime)]
    pub valid_from: String,
    /// End of validity.
    #[schema(format = DateTime)]
    pub valid_until: String,
    /// The protocol version spoken.
    pub protocol_version: u16,
    /// The security suite, e.g. `ecdsa-p384-sha384+aes-256-gcm`.
    pub security_suite: String,
    /// The highest QoS either side may use.
    #[schema(value_type = schema::Qos)]
    pub max_qos: Qos,
    /// The largest frame body either side accepts, in bytes.
    pub max_frame: u32,
    /// The compression scheme (`none` for none).
    pub compression: String,
    /// The compliance frameworks both sides keep.
    pub compliance: Vec<String>,
    /// Topics the initiator may send to the responder.
    #[schema(value_type = Vec<schema::TopicPattern>)]
    pub topics_to_responder: Vec<TopicPattern>,
    /// Topics the responder may send to the initiator.
    #[schema(value_type = Vec<schema::TopicPattern>)]
    pub topics_to_initiator: Vec<TopicPattern>,
    /// The agreed policy terms.
    pub policy: AgreedPolicy,
}

impl AgreementSummary {
    /// The agreement in force of `record`; `None` when its stored bytes do not decode.
    pub(crate) fn of(record: &FederationRecord) -> Option<Self> {
        let a = SignedAgreement::decode(&record.agreement)
            .ok()?
            .agreement()
            .ok()?;
        Some(Self {
            digest: hex::encode(record.agreement_digest),
            version: a.version,
            valid_from: rfc3339(a.valid_from),
            valid_until: rfc3339(a.valid_until),
            protocol_version: a.capabilities.version.0,
            security_suite: a.capabilities.security.0,
            max_qos: a.capabilities.qos.0,
            max_frame: a.capabilities.max_frame.0,
            compression: a.capabilities.compression.0,
            compliance: a.capabilities.compliance.0,
            topics_to_responder: a.capabilities.services.to_responder,
            topics_to_initiator: a.capabilities.services.to_initiator,
            policy: a.policy.into(),
        })
    }
}

/// The policy terms both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgreedPolicy {
    /// Largest payload, in bytes.
    pub max_message_size: u32,
    /// Most messages per second in each direction; `null`: no limit.
    pub max_rate: Option<u32>,
    /// Payloads are encrypted end to end.
    pub encryption_required: bool,
    /// The signature modes either side may use.
    #[schema(value_type = Vec<schema::AgreedSignatureMode>)]
    pub signature_modes: Vec<AgreedSignatureMode>,
    /// Regions where exchanged data may be kept; empty: anywhere.
    pub residency: Vec<String>,
    /// The regions the two sides said they keep exchanged data in (within `residency`).
    pub regions: Vec<String>,
    /// How long records of exchanged messages may be kept, in days.
    pub retention_days: u32,
    /// Media types that may cross; empty: any.
    pub content_types: Vec<String>,
    /// JSON pointers of payload fields the sender removes before sealing.
    pub redact: Vec<String>,
    /// Highest priority a message may carry.
    pub max_priority: u8,
    /// Longest delivery deadline a message may ask for, in milliseconds; `null`: no bound.
    pub max_latency_ms: Option<u32>,
    /// Algorithms either side may use.
    #[schema(value_type = Vec<schema::AgreedAlgorithm>)]
    pub algorithms: Vec<Algorithm>,
    /// The audit level both sides keep.
    #[schema(value_type = schema::AuditLevel)]
    pub audit_level: AuditLevel,
    /// Payloads of at least this many bytes are allowed (a side's requirement).
    pub min_message_size: u32,
    /// At least this many messages per second are allowed; `null`: no requirement.
    pub min_rate: Option<u32>,
    /// Records may be kept at least this many days.
    pub min_retention_days: u32,
    /// Rate limits per topic pattern, each way.
    #[serde(default)]
    pub topic_rates: Vec<TopicLimit>,
    /// Schema ids a message must name one of; empty: any.
    #[serde(default)]
    pub schemas: Vec<String>,
    /// Classification labels a message must carry one of; empty: any.
    #[serde(default)]
    pub classifications: Vec<String>,
}

/// A rate limit on the topics of one pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopicLimit {
    /// The topics it covers.
    #[schema(value_type = schema::TopicPattern)]
    pub topics: meshfed_proto::TopicPattern,
    /// Most messages per second on them, each way.
    pub rate: u32,
}

impl From<PolicyTerms> for AgreedPolicy {
    fn from(terms: PolicyTerms) -> Self {
        // Every field named: a new term fails to compile here until the API shows it or says why not.
        let PolicyTerms {
            max_message_size,
            max_rate,
            encryption_required,
            signature_modes,
            residency,
            retention_days,
            content_types,
            redact,
            max_priority,
            max_latency_ms,
            algorithms,
            audit_level,
            floors:
                Requirements {
                    min_message_size,
                    min_rate,
                    min_retention_days,
                },
            regions,
            // Only negotiation reads it: with a residency agreed it is always false.
            region_unsaid: _,
            topic_rates,
            schemas,
            classifications,
        } = terms;
        Self {
            max_message_size,
            max_rate,
            encryption_required,
            signature_modes,
            residency,
            regions,
            retention_days,
            content_types,
            redact,
            max_priority,
            max_latency_ms,
            algorithms,
            audit_level,
            min_message_size,
            min_rate,
            min_retention_days,
            topic_rates: (topic_rates.into_iter())
                .map(|r| TopicLimit {
                    topics: r.topics,
                    rate: r.rate,
                })
                .collect(),
            schemas,
            classifications,
        }
    }
}

/// Messages a federation's stream holds for the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Backlog {
    /// Messages held: queued, awaiting persistence or unacknowledged.
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Messages held per priority, 0 to 7.
    #[schema(min_items = 8, max_items = 8)]
    pub by_priority: [u64; 8],
    /// Reliable messages sent and not yet acknowledged.
    pub in_flight: u64,
    /// Reliable messages not yet persisted.
    pub awaiting_persistence: u64,
    /// How long the oldest held message has been held, in milliseconds; `null` when none is.
    pub oldest_ms: Option<u64>,
}

impl From<&meshfed_queue::Backlog> for Backlog {
    fn from(b: &meshfed_queue::Backlog) -> Self {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Self {
            messages: count(b.messages),
            bytes: b.bytes,
            by_priority: b.by_priority.map(count),
            in_flight: count(b.in_flight),
            awaiting_persistence: count(b.awaiting_persistence),
            oldest_ms: b
                .oldest
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// What a federation's stream has sent and had acknowledged since the gateway started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryStats {
    /// Envelopes sent (first transmissions).
    pub sent: u64,
    /// Envelopes sent again for want of an acknowledgement.
    pub retransmitted: u64,
    /// Envelopes the peer acknowledged.
    pub acknowledged: u64,
    /// Transfer frames sent.
    pub transfers: u64,
    /// qos 0 messages shed because the queue was full (DESIGN §3.5), lowest priority first;
    /// counted in `dead_lettered` too.
    pub shed: u64,
    /// qos 0 messages not sent because the peer has no subscriber for their topic (see
    /// `peer_interest`); their publishers were answered as for any accepted message.
    #[serde(default)]
    pub unwanted: u64,
    /// Reliable messages a broker holds in custody for this relayed federation's peer, which is
    /// away (store-and-forward at the broker); they stay queued here too until the peer
    /// acknowledges them.
    #[serde(default)]
    pub in_custody: u64,
    /// Messages the broker refused into custody (they stay queued here and go again).
    #[serde(default)]
    pub custody_refused: u64,
    /// The broker's last refusal, e.g. `custody_full: the broker holds …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_custody_refusal: Option<String>,
}

/// The peer's interest (DESIGN §3.6): the topic patterns it has subscribers for, as it last
/// told this node on the current link. qos ≥ 1 messages are sent whatever it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PeerInterest {
    /// Whether the peer said: false without a link, or before its first interest on it, and
    /// then every message is sent.
    pub known: bool,
    /// The version of the peer's interest, growing with each change it announces on a link;
    /// absent while unknown.
    pub version: Option<u64>,
    /// Its patterns; empty: it has no subscriber that may receive from this mesh.
    #[schema(value_type = Vec<schema::TopicPattern>)]
    pub patterns: Vec<TopicPattern>,
}

impl PeerInterest {
    /// The view of the peer's interest (`None`: unknown).
    pub(crate) fn of(interest: Option<&meshfed_proto::interest::Interest>) -> Self {
        Self {
            known: interest.is_some(),
            version: interest.map(|i| i.version),
            patterns: interest.map(|i| i.patterns().to_vec()).unwrap_or_default(),
        }
    }
}

/// `POST /v1/federations/invite`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// The mesh invited.
    #[schema(value_type = schema::MeshId)]
    pub peer: MeshId,
    /// How long the invitation stays valid, e.g. `1h` (default 1 h, at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "1h")]
    pub ttl: Option<String>,
}

/// The answer to `POST /v1/federations/invite`: a one-time token for the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InviteResponse {
    /// The token the peer joins with (`meshfed federation join TOKEN`).
    pub token: String,
    /// The invitation's id (`tok_…`), as the audit trail names it.
    pub token_id: String,
    /// The mesh invited.
    #[schema(value_type = schema::MeshId)]
    pub peer: MeshId,
    /// When the token stops working.
    #[schema(format = DateTime)]
    pub expires: String,
}

/// `POST /v1/federations/join`; the answer is the new federation's [`FederationView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// An invitation token from the peer mesh.
    pub token: String,
    /// Join through this broker mesh (one this node is federated with) instead of dialling
    /// the token's addresses: the federation runs end to end through a tunnel the broker
    /// relays and cannot read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub via: Option<MeshId>,
}

/// The optional body of `POST /v1/federations/{id}/{operation}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationRequest {
    /// `terminate` only: at once, dead-lettering everything queued, rather than after
    /// delivering what is in flight (at most 10 s).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// `POST /v1/messages`, and each text frame on the publish WebSocket: field names as in the
/// spec envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The destination mesh.
    #[schema(value_type = schema::MeshId)]
    pub to: MeshId,
    /// The federation topic.
    #[schema(value_type = schema::Topic)]
    pub topic: Topic,
    /// The payload: any JSON value for a JSON content type, a string for `text/*`, base64
    /// for anything else.
    pub payload: Value,
    /// The payload's media type (default `application/json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schema::ContentType>)]
    pub content_type: Option<ContentType>,
    /// The delivery guarantee (default 0).
    #[serde(default)]
    #[schema(value_type = schema::Qos)]
    pub qos: Qos,
    /// 0 (lowest, default) to 7.
    #[serde(default)]
    #[schema(value_type = schema::Priority)]
    pub priority: Priority,
    /// A delivery deadline: whole milliseconds, or a duration like `"5s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schema::MaxLatency>)]
    pub max_latency: Option<Value>,
    /// `reliable` (implied by qos ≥ 1) and `ordered`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<schema::Flag>)]
    pub flags: Vec<String>,
    /// Answer only once the destination acknowledged (or the message was dead-lettered); needs
    /// qos 1 or 2.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
    /// The payload's schema id (the envelope's `metadata.schema_id`), checked against the
    /// schemas the agreement lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<String>,
    /// The data's classification label (the envelope's `policy.classification`), checked
    /// against the labels the agreement lets cross.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// The message's properties (user properties, correlation data, reply-to): sealed with the
    /// payload, so that only the destination reads them; its subscribers see them as the
    /// envelope's `metadata.properties`. They count in the agreed message size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<MessageProperties>,
}

/// A message's properties, as a `SendRequest` carries them and the envelope's
/// `metadata.properties` shows them; each member may be left out. Bounds: at most 64 user
/// properties, each name 1 to 256 bytes without control characters, each value at most 4096
/// bytes without control characters but tab; correlation data 1 to 256 bytes; at most 16 KiB
/// in all.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageProperties {
    /// User properties (MQTT 5 user properties, NATS headers): `[name, value]` pairs, in
    /// order; a name may repeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<schema::UserProperty>)]
    pub user: Vec<(String, String)>,
    /// Correlation data (MQTT 5's): standard base64 of 1 to 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_data: Option<String>,
    /// The federation topic a reply is expected on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schema::Topic>)]
    pub reply_to: Option<Topic>,
}

impl From<&Properties> for MessageProperties {
    fn from(p: &Properties) -> Self {
        use base64::Engine as _;
        Self {
            user: p.user().to_vec(),
            correlation_data: p
                .correlation()
                .map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
            reply_to: p.reply_to().cloned(),
        }
    }
}

impl SendRequest {
    /// A message of `payload` (JSON) for mesh `to` on `topic`, every other field at its
    /// default: qos 0, priority 0, no deadline, no flags, no waiting.
    pub fn new(to: MeshId, topic: Topic, payload: Value) -> Self {
        Self {
            to,
            topic,
            payload,
            content_type: None,
            qos: Qos::default(),
            priority: Priority::default(),
            max_latency: None,
            flags: Vec::new(),
            wait: false,
            schema_id: None,
            classification: None,
            properties: None,
        }
    }
}

/// This mesh's trust bundle, and which partners have stored it (`GET /v1/ca`, and
/// `POST /v1/ca/reload` after `meshfed ca rotate` or `retire-old`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrustView {
    /// The bundle's serial: 0 as `meshfed init` made it, +1 at each rollover step.
    pub serial: u64,
    /// Whether a CA rollover is under way (the bundle holds the old and the new CA).
    pub rollover: bool,
    /// The CAs of the bundle, the one in use first.
    pub cas: Vec<CaView>,
    /// Every live federation, with what its partner has stored of this bundle.
    pub partners: Vec<PartnerTrust>,
    /// After a reload: on how many open links the bundle statement was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced_on: Option<usize>,
}

/// One CA of [`TrustView::cas`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CaView {
    /// SHA-384 of the CA certificate, hex.
    pub fingerprint: String,
    /// When it expires.
    #[schema(format = DateTime)]
    pub not_after: String,
}

/// One partner of [`TrustView::partners`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartnerTrust {
    /// The federation.
    #[schema(value_type = schema::FederationId)]
    pub federation: FederationId,
    /// The partner mesh.
    #[schema(value_type = schema::MeshId)]
    pub peer: MeshId,
    /// The highest serial of this mesh's bundle the partner acknowledged storing.
    pub acknowledged_serial: u64,
    /// Whether that is the current bundle: the old CA may be retired only once every partner
    /// has it.
    pub current: bool,
}

impl TrustView {
    /// The view of `status`.
    pub(crate) fn of(status: crate::gateway::TrustStatus, announced_on: Option<usize>) -> Self {
        let serial = status.serial;
        Self {
            serial,
            rollover: status.cas.len() > 1,
            cas: status
                .cas
                .iter()
                .map(|(fingerprint, not_after)| CaView {
                    fingerprint: fingerprint.to_string(),
                    not_after: rfc3339(crate::clock::timestamp(*not_after)),
                })
                .collect(),
            partners: status
                .partners
                .into_iter()
                .map(|(record, acknowledged)| PartnerTrust {
                    federation: record.id,
                    peer: record.peer_mesh,
                    acknowledged_serial: acknowledged,
                    current: acknowledged >= serial,
                })
                .collect(),
            announced_on,
        }
    }
}

/// The admin token was replaced (`POST /v1/token/rotate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRotated {
    /// The file that holds the new token (the token itself is never sent).
    pub token_file: String,
}

/// A message accepted for delivery (`202 Accepted`): for qos ≥ 1, persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageAccepted {
    /// Its envelope id.
    #[schema(value_type = schema::EnvelopeId)]
    pub id: EnvelopeId,
}

/// A message the destination acknowledged (`200 OK`, when the sender asked to wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageAcknowledged {
    /// Its envelope id.
    #[schema(value_type = schema::EnvelopeId)]
    pub id: EnvelopeId,
    /// Always `acknowledged`.
    pub status: DeliveryStatus,
}

/// [`MessageAcknowledged::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// The destination acknowledged the message.
    Acknowledged,
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Acknowledged => f.write_str("acknowledged"),
        }
    }
}

/// The answer to one message on the publish WebSocket, in the order the messages came: the
/// body `POST /v1/messages` would have answered with, or its error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PublishReply {
    /// Acknowledged by the destination (the message asked to wait).
    Acknowledged(MessageAcknowledged),
    /// Accepted for delivery.
    Accepted(MessageAccepted),
    /// Not accepted; the stream goes on.
    Refused(ErrorBody),
}

/// `GET /v1/messages/dead-letters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    /// The latest 1000, newest first.
    pub dead_letters: Vec<DeadLetterView>,
}

/// A message that will not be delivered, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterView {
    /// Its envelope id.
    #[schema(value_type = schema::EnvelopeId)]
    pub id: EnvelopeId,
    /// The mesh it was for.
    #[schema(value_type = schema::MeshId)]
    pub to: MeshId,
    /// Its topic.
    #[schema(value_type = schema::Topic)]
    pub topic: Topic,
    /// Its priority.
    #[schema(value_type = schema::Priority)]
    pub priority: Priority,
    /// Its delivery guarantee.
    #[schema(value_type = schema::Qos)]
    pub qos: Qos,
    /// Why it was given up.
    pub reason: String,
    /// When.
    #[schema(format = DateTime)]
    pub at: String,
}

impl From<&DeadLetter> for DeadLetterView {
    fn from(d: &DeadLetter) -> Self {
        Self {
            id: d.id,
            to: d.destination.clone(),
            topic: d.topic.clone(),
            priority: d.priority,
            qos: d.qos,
            reason: d.reason.clone(),
            at: rfc3339(d.at),
        }
    }
}

/// The query of `GET /v1/messages/stream`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only envelopes whose topic matches this pattern (`+` one segment, `#` the rest);
    /// default `#`.
    #[serde(default)]
    #[param(value_type = Option<schema::TopicPattern>)]
    pub topic: Option<TopicPattern>,
    /// Only envelopes from this mesh.
    #[serde(default)]
    #[param(value_type = Option<schema::MeshId>)]
    pub from: Option<MeshId>,
    /// A durable subscription's name: qos ≥ 1 envelopes that arrive while no subscriber is
    /// connected are kept and sent when one connects, until acknowledged with a `DurableAck`
    /// frame.
    #[serde(default)]
    pub durable: Option<String>,
    /// `required`: each envelope in the export form — its spec JSON plus `proof`, the base64
    /// CBOR of the envelope exactly as it crossed (with the signer's certificate in its header,
    /// the batch's signature and the inclusion proof), which `meshfed envelope inspect --ca`
    /// checks alone. `none` (the default): the spec JSON. A durable subscription keeps its
    /// messages in the form of its latest registration.
    #[serde(default)]
    #[param(value_type = Option<schema::Proof>)]
    pub proof: Option<Proof>,
    /// `binary`: each envelope as a binary frame (the layout of `meshfed_node::api::binary`:
    /// raw payload, certificate and proof, no base64); `json` (the default): as a JSON text
    /// frame. A durable subscriber's acknowledgements and the gateway's `StreamReply` frames
    /// stay JSON text frames either way.
    #[serde(default)]
    #[param(value_type = Option<schema::Format>)]
    pub format: Option<Format>,
}

/// The query of `GET /v1/messages/publish`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PublishQuery {
    /// `binary`: each message and each answer is a binary frame (the layout of
    /// `meshfed_node::api::binary`: raw payload, no JSON); `json` (the default): a JSON text
    /// frame.
    #[serde(default)]
    #[param(value_type = Option<schema::Format>)]
    pub format: Option<Format>,
}

/// The frames of the messaging WebSockets (`format=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON text frames.
    #[default]
    Json,
    /// Binary frames ([`crate::api::binary`]).
    Binary,
}

impl Format {
    /// The format as the query names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Binary => "binary",
        }
    }
}

/// [`StreamQuery::proof`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proof {
    /// The spec JSON alone.
    #[default]
    None,
    /// The export form.
    Required,
}

impl From<Proof> for Form {
    fn from(p: Proof) -> Self {
        match p {
            Proof::None => Form::Spec,
            Proof::Required => Form::Export,
        }
    }
}

/// A durable subscriber's acknowledgement, a text frame on the stream: acknowledges that
/// envelope and every one sent before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DurableAck {
    /// The envelope id (`fed_…`). Text, not parsed here: an id that is no unacknowledged
    /// envelope of the subscription is refused with one message, whatever its form.
    #[schema(example = "fed_0192f1b0c6a87d2e9c4b5a6f7e8d9c0b")]
    pub ack: String,
    /// Answer with an [`Acked`] frame once the acknowledgement is committed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm: bool,
}

/// The gateway's confirmation of a [`DurableAck`] that asked for one: it is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Acked {
    /// The envelope id the acknowledgement named.
    pub acked: String,
}

/// A frame the gateway sends on a durable subscription besides envelopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StreamReply {
    /// An acknowledgement is committed.
    Acked(Acked),
    /// An acknowledgement was refused, or could not be committed; the stream goes on.
    Refused(ErrorBody),
}

/// Every API error: `{"error": {"code", "message"}}` with a fitting HTTP status, or as a frame
/// on a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// [`ErrorBody::error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code for programs: `bad_request`, `not_found`, `queue_full`, …
    pub code: String,
    /// What happened, for people.
    pub message: String,
}

impl std::fmt::Display for ErrorBody {
    /// `message (code)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.error.message, self.error.code)
    }
}

/// Serde through `Display` and `FromStr`, for domain types that have no serde of their own.
mod via_str {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lifecycle state, as [`schema`] lists them.
    fn states() -> Vec<FederationState> {
        let names = ["negotiating", "active", "suspended", "renegotiating"];
        let more = ["terminated-graceful", "terminated-forced", "reestablishing"];
        names
            .iter()
            .chain(&more)
            .map(|n| n.parse().unwrap())
            .collect()
    }

    #[test]
    fn status_is_the_state_unless_an_active_link_is_unhealthy() {
        for state in states() {
            let status = FederationStatus::of(state, Health::Healthy);
            assert_eq!(status.as_str(), state.name());
            assert_eq!(serde_json::to_value(status).unwrap(), state.name());
        }
        let active = FederationState::Active;
        assert_eq!(
            FederationStatus::of(active, Health::Degraded),
            FederationStatus::Degraded
        );
        let down = FederationStatus::of(active, Health::Unreachable);
        assert_eq!(serde_json::to_value(down).unwrap(), "unreachable");
        let suspended = FederationStatus::of(FederationState::Suspended, Health::Unreachable);
        assert_eq!(suspended, FederationStatus::Suspended);
    }

    #[test]
    fn names_shown_are_the_names_written() {
        for health in [Health::Healthy, Health::Degraded, Health::Unreachable] {
            let h = LinkHealth::from(health);
            assert_eq!(h.as_str(), health.name());
            assert_eq!(serde_json::to_value(h).unwrap(), health.name());
        }
        for role in [
            meshfed_store::Role::Initiator,
            meshfed_store::Role::Responder,
        ] {
            let r = FederationRole::from(role);
            assert_eq!(serde_json::to_value(r).unwrap(), role.name());
            assert_eq!(r.to_string(), role.name());
        }
    }

    #[test]
    fn domain_values_without_serde_round_trip_through_their_names() {
        let view: NodeDelivery = serde_json::from_str(r#"{"signatures": "message"}"#).unwrap();
        assert_eq!(view.signatures, SignatureMode::Message);
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            r#"{"signatures":"message"}"#
        );
        let wrong = serde_json::from_str::<NodeDelivery>(r#"{"signatures": "each"}"#);
        assert!(
            wrong
                .unwrap_err()
                .to_string()
                .contains("invalid signature mode")
        );
    }
}
