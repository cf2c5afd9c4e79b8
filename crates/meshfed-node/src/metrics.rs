//! The node's metrics, kept with `prometheus-client` and exposed at `/metrics` in the OpenMetrics
//! text format (which Prometheus scrapes).
//!
//! Names follow Prometheus conventions: a `meshfed_` prefix, base units (`_bytes`), counters
//! ending in `_total`. Stages count into the families below as things happen; what is a state
//! rather than an event (backlogs, link health) is set from the stages' own state just before
//! each scrape ([`Metrics::encode`]); the journal's counters are read from it at each scrape.
//! Latencies, round trips and journal commits are [`histogram`]s the node reads back too
//! (the `/v1/stats` sampler, `gateway/stats.rs`).

pub(crate) mod histogram;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshfed_proto::admission::{Direction, Refusal, Terms};
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::{FederationId, MeshId, Topic};
use meshfed_store::Journal;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use histogram::{BATCH_WRITES, Histogram, LATENCY_NS, Series};

/// The peer mesh a series is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabel {
    pub(crate) peer: String,
}

/// Which way a refused message travelled (`inbound`: refused on arrival; `outbound`: refused
/// when a local client submitted it), and why it was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusalLabels {
    pub(crate) direction: &'static str,
    pub(crate) reason: &'static str,
}

/// A peer and a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerReasonLabels {
    pub(crate) peer: String,
    pub(crate) reason: &'static str,
}

/// A federation and its peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FederationLabels {
    pub(crate) federation: String,
    pub(crate) peer: String,
}

/// A federation, its peer and the agreed topic pattern (of the agreement in force) a message
/// matched: `route` never holds a raw topic, so the series stay few.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) federation: String,
    pub(crate) peer: String,
    pub(crate) route: String,
}

/// A peer and which way (`inbound`, `outbound`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerDirectionLabels {
    pub(crate) peer: String,
    pub(crate) direction: &'static str,
}

/// A peer and a message priority (0–7).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerPriorityLabels {
    pub(crate) peer: String,
    pub(crate) priority: u8,
}

/// A listener (`federation` or `api`) and why it refused a connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerReasonLabels {
    pub(crate) listener: &'static str,
    pub(crate) reason: &'static str,
}

/// A listener: `federation` or `api`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabel {
    pub(crate) listener: &'static str,
}

/// Every metric of a node.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Envelopes sent to a peer for the first time.
    pub(crate) sent: Family<PeerLabel, Counter>,
    /// Envelopes sent again for want of an acknowledgement.
    pub(crate) retransmitted: Family<PeerLabel, Counter>,
    /// Envelopes the destination acknowledged.
    pub(crate) acknowledged: Family<PeerLabel, Counter>,
    /// qos 0 messages not sent because the peer mesh has no subscriber for their topic.
    pub(crate) unwanted: Family<PeerLabel, Counter>,
    /// Envelopes received, verified and delivered locally.
    pub(crate) delivered: Family<PeerLabel, Counter>,
    /// Envelopes received over the agreed rates, whose credit was withheld.
    pub(crate) ingress_paced: Family<PeerLabel, Counter>,
    /// Tunnels a broker refused for a neighbour sending over its agreed rate.
    pub(crate) relay_over_rate: Counter,
    /// Records removed for being kept past the agreed retention, by kind.
    pub(crate) retention_expired: Family<KindLabel, Counter>,
    /// Envelopes refused on arrival, and messages refused at submission, by reason.
    pub(crate) rejected: Family<RefusalLabels, Counter>,
    /// The same refusals, where the partner is known, by partner and direction.
    pub(crate) peer_refusals: Family<PeerDirectionLabels, Counter>,
    /// From the sender's timestamp to acceptance for delivery here, by federation and route.
    pub(crate) latency: Series<RouteLabels>,
    /// Envelopes whose sender's timestamp was ahead of this node's clock (latency taken as 0).
    pub(crate) clock_skewed: Family<PeerLabel, Counter>,
    /// Heartbeat round trips, by federation.
    pub(crate) link_rtt: Series<FederationLabels>,
    /// Federation handshakes run to their end, by outcome.
    pub(crate) handshakes: Family<OutcomeLabel, Counter>,
    /// How long each journal commit took.
    pub(crate) journal_commit: Histogram,
    /// The writes each journal commit held.
    pub(crate) journal_batch: Histogram,
    /// Messages queued for a peer mesh by priority (set at each scrape).
    pub(crate) queued: Family<PeerPriorityLabels, Gauge>,
    /// Envelopes received and not delivered (late, or held back when their sender restarted).
    pub(crate) discarded: Counter,
    /// Messages this node relayed on another mesh's behalf (trusted intermediary).
    pub(crate) transit_relayed: Counter,
    /// Messages that will not be delivered, by peer and reason.
    pub(crate) dead_lettered: Family<PeerReasonLabels, Counter>,
    /// qos 0 messages dropped for live subscribers that could not keep up.
    pub(crate) subscriber_dropped: Counter,
    /// Live subscribers disconnected for not keeping up.
    pub(crate) subscribers_disconnected: Counter,
    /// Messages queued for a peer mesh (set at each scrape).
    pub(crate) backlog_messages: Family<PeerLabel, Gauge>,
    /// Payload bytes queued for a peer mesh (set at each scrape).
    pub(crate) backlog_bytes: Family<PeerLabel, Gauge>,
    /// 1 while a federation's link is healthy (set at each scrape).
    pub(crate) link_healthy: Family<FederationLabels, Gauge>,
    /// Connections refused before they authenticated, by listener and reason.
    pub(crate) connections_refused: Family<ListenerReasonLabels, Counter>,
    /// Connections open that have not authenticated yet, by listener.
    pub(crate) connections_unauthenticated: Family<ListenerLabel, Gauge>,
    /// API connections closed for being idle.
    pub(crate) connections_idle_closed: Family<ListenerLabel, Counter>,
    /// Partners' revocation lists refused (untrusted signer, another mesh, not a successor).
    pub(crate) revocation_lists_refused: Counter,
    /// Links closed because a revocation list revokes the peer's certificate.
    pub(crate) revoked_links_closed: Counter,
    /// Federations suspended because the peer broke the streamed batch protocol.
    pub(crate) peer_misbehaved: Family<PeerLabel, Counter>,
    /// Partners' audit heads, countersignatures or claims that did not hold.
    pub(crate) audit_discrepancies: Family<PeerLabel, Counter>,
    /// Audit records appended.
    pub(crate) audit_records: Counter,
    /// Audit tree heads signed.
    pub(crate) audit_heads: Counter,
    /// Envelopes handed to live subscribers on arrival, ahead of their batch head.
    pub(crate) delivered_unproven: Counter,
    /// Tunnel frames a broker passed on, by next hop.
    pub(crate) relayed: Family<PeerLabel, Counter>,
    /// Tunnel frames a broker could not pass on (a loop, ttl, no route) or a gateway refused.
    pub(crate) relay_dropped: Counter,
    /// Mesh descriptors a broker's directory refused.
    pub(crate) descriptors_refused: Counter,
    /// Origin signatures (batch heads, signed batches and envelopes) a broker checked in the
    /// tunnels it relays, by outcome.
    pub(crate) relay_proofs: Family<OutcomeLabel, Counter>,
    /// Custody (store-and-forward through brokers) by event.
    pub(crate) custody: Family<EventLabel, Counter>,
    /// Envelopes a broker holds in custody.
    pub(crate) custody_held: Gauge,
    /// API requests refused for their credentials, by reason.
    pub(crate) api_refused: Family<ReasonLabel, Counter>,
    /// 1 while a connector is connected to its bus.
    pub(crate) connector_up: Family<ConnectorLabel, Gauge>,
    /// Messages a connector carried, by direction (`export`: bus → federation, accepted;
    /// `import`: federation → bus, accepted by the broker).
    pub(crate) connector_messages: Family<ConnectorDirectionLabels, Counter>,
    /// Messages that fit no rule of a connector, or that the other dialect cannot name.
    pub(crate) connector_unmapped: Family<ConnectorLabel, Counter>,
    /// Messages a connector did not send back to the partner they came from.
    pub(crate) connector_loops: Family<ConnectorLabel, Counter>,
    /// Messages of a connector the federation refused.
    pub(crate) connector_refused: Family<ConnectorLabel, Counter>,
    /// Errors of a connector's bus (connections lost or refused, publishes not accepted).
    pub(crate) connector_errors: Family<ConnectorLabel, Counter>,
    /// Deviations of partners' traffic from their baselines, by peer and measure.
    pub(crate) anomalies: Family<PeerMeasureLabels, Counter>,
    /// Each partner's breaker: 0 closed, 1 half-open, 2 open.
    pub(crate) breaker_state: Family<PeerLabel, Gauge>,
    /// Changes of partners' breakers, by peer and the state entered.
    pub(crate) breaker_transitions: Family<PeerStateLabels, Counter>,
    /// Transfers not taken from a partner while its breaker is open.
    pub(crate) breaker_held: Family<PeerLabel, Counter>,
    /// Observations the guard was too far behind to take.
    pub(crate) anomaly_dropped: Counter,
    /// Windows the anomaly detector closed.
    pub(crate) anomaly_windows: Counter,
}

/// A peer and a measure of its traffic (`rate`, `size`, `refusal_ratio`, `error_ratio`,
/// `signature_failures`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerMeasureLabels {
    pub(crate) peer: String,
    pub(crate) measure: &'static str,
}

/// A peer and the state its breaker entered (`closed`, `half-open`, `open`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerStateLabels {
    pub(crate) peer: String,
    pub(crate) to: &'static str,
}

/// A connector.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnectorLabel {
    pub(crate) connector: String,
}

/// A connector and a direction (`export`, `import`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnectorDirectionLabels {
    pub(crate) connector: String,
    pub(crate) direction: &'static str,
}

/// Why something was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// Why the API refused a request's credentials, besides each [`TokenError::reason`]
/// (`crate::credentials::TokenError`): no token, a token in the URL, or a valid token asking
/// for more than it grants.
pub(crate) const API_REFUSALS: [&str; 3] = ["missing", "token_in_url", "forbidden"];

/// What kind of thing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: &'static str,
}

/// What happened.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EventLabel {
    pub(crate) event: &'static str,
}

/// Whether a check held.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub(crate) outcome: &'static str,
}

impl Metrics {
    /// The metrics of a node whose journal is `journal`.
    pub(crate) fn new(journal: Arc<Journal>) -> Self {
        let mut registry = Registry::with_prefix("meshfed");
        let m = Self {
            registry: Registry::default(),
            sent: Family::default(),
            retransmitted: Family::default(),
            acknowledged: Family::default(),
            unwanted: Family::default(),
            ingress_paced: Family::default(),
            retention_expired: Family::default(),
            relay_over_rate: Counter::default(),
            delivered: Family::default(),
            rejected: Family::default(),
            peer_refusals: Family::default(),
            latency: Series::seconds(LATENCY_NS),
            clock_skewed: Family::default(),
            link_rtt: Series::seconds(LATENCY_NS),
            handshakes: Family::default(),
            journal_commit: Histogram::seconds(LATENCY_NS),
            journal_batch: Histogram::counts(BATCH_WRITES),
            queued: Family::default(),
            discarded: Counter::default(),
            transit_relayed: Counter::default(),
            dead_lettered: Family::default(),
            subscriber_dropped: Counter::default(),
            subscribers_disconnected: Counter::default(),
            backlog_messages: Family::default(),
            backlog_bytes: Family::default(),
            link_healthy: Family::default(),
            connections_refused: Family::default(),
            connections_unauthenticated: Family::default(),
            connections_idle_closed: Family::default(),
            revocation_lists_refused: Counter::default(),
            revoked_links_closed: Counter::default(),
            peer_misbehaved: Family::default(),
            audit_discrepancies: Family::default(),
            audit_records: Counter::default(),
            audit_heads: Counter::default(),
            delivered_unproven: Counter::default(),
            relayed: Family::default(),
            relay_dropped: Counter::default(),
            descriptors_refused: Counter::default(),
            relay_proofs: Family::default(),
            custody: Family::default(),
            custody_held: Gauge::default(),
            api_refused: Family::default(),
            connector_up: Family::default(),
            connector_messages: Family::default(),
            connector_unmapped: Family::default(),
            connector_loops: Family::default(),
            connector_refused: Family::default(),
            connector_errors: Family::default(),
            anomalies: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            breaker_held: Family::default(),
            anomaly_dropped: Counter::default(),
            anomaly_windows: Counter::default(),
        };
        for reason in API_REFUSALS
            .into_iter()
            .chain(crate::credentials::TokenError::REASONS)
        {
            drop(m.api_refused.get_or_create(&ReasonLabel { reason }));
        }
        drop(m.handshakes.get_or_create(&OutcomeLabel {
            outcome: "established",
        }));
        // Every refusal reason is listed from the start, at zero, so that a rate over it exists
        // before the first refusal.
        for direction in [Direction::Inbound, Direction::Outbound] {
            for reason in Refusal::REASONS {
                drop(m.rejected.get_or_create(&RefusalLabels {
                    direction: direction_label(direction),
                    reason,
                }));
            }
        }
        registry.register(
            "envelopes_sent",
            "Envelopes sent to peer meshes (first transmissions)",
            m.sent.clone(),
        );
        registry.register(
            "envelopes_retransmitted",
            "Envelopes sent again for want of an acknowledgement",
            m.retransmitted.clone(),
        );
        registry.register(
            "envelopes_acknowledged",
            "Envelopes the destination acknowledged",
            m.acknowledged.clone(),
        );
        registry.register(
            "envelopes_unwanted",
            "qos 0 messages not sent because the peer mesh has no subscriber for their topic (its interest); their publishers were answered as for any accepted message",
            m.unwanted.clone(),
        );
        registry.register(
            "ingress_paced",
            "Envelopes a peer sent over the agreed rates (the federation's or a topic's): delivered, and the credit they would free withheld until the rates allow it",
            m.ingress_paced.clone(),
        );
        registry.register(
            "relay_over_rate",
            "Relayed frames over the rate a broker agreed with the neighbour that sent them (their tunnels refused)",
            m.relay_over_rate.clone(),
        );
        registry.register(
            "retention_expired",
            "Records removed for being kept past the retention agreed with their partner: durable subscribers' messages (durable) and dead letters (dead_letter)",
            m.retention_expired.clone(),
        );
        registry.register(
            "envelopes_delivered",
            "Envelopes received, verified and delivered locally",
            m.delivered.clone(),
        );
        registry.register(
            "envelopes_rejected",
            "Envelopes refused on arrival and messages refused at submission, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "peer_refusals",
            "Messages refused from a partner (inbound) or for one (outbound), any reason (by reason: meshfed_envelopes_rejected_total)",
            m.peer_refusals.clone(),
        );
        registry.register_with_unit(
            "delivery_latency",
            "From the sender's envelope timestamp (milliseconds) to this gateway accepting the envelope for delivery, by federation, peer and the agreed topic pattern it matched (route); clocks of both gateways included",
            Unit::Seconds,
            m.latency.clone(),
        );
        registry.register(
            "latency_clock_skewed",
            "Envelopes whose sender's timestamp was ahead of this node's clock: their latency is counted as 0",
            m.clock_skewed.clone(),
        );
        registry.register_with_unit(
            "link_rtt",
            "Round trips of link heartbeats, by federation",
            Unit::Seconds,
            m.link_rtt.clone(),
        );
        registry.register(
            "handshakes",
            "Federation handshakes (joins, resumptions, configured peers) by outcome: established, or the wire code of the failure (timeout, untrusted_peer, invitation_reused, ...), closed (the peer hung up), transport, internal, tunnel; tls: an accepted connection whose TLS handshake failed or timed out",
            m.handshakes.clone(),
        );
        registry.register_with_unit(
            "journal_commit",
            "How long each journal commit took (its writes, fdatasync and SQLite transaction)",
            Unit::Seconds,
            m.journal_commit.clone(),
        );
        registry.register(
            "journal_batch_writes",
            "Writes each journal commit held (0: acknowledgements only)",
            m.journal_batch.clone(),
        );
        registry.register(
            "queued_messages",
            "Messages held for a peer mesh, by priority (0-7)",
            m.queued.clone(),
        );
        registry.register(
            "envelopes_discarded",
            "Envelopes received and not delivered (late, or held back when their sender restarted)",
            m.discarded.clone(),
        );
        registry.register(
            "transit_relayed",
            "Messages relayed on another mesh's behalf, as a trusted intermediary holding its delegation",
            m.transit_relayed.clone(),
        );
        registry.register(
            "dead_lettered",
            "Messages that will not be delivered, by reason",
            m.dead_lettered.clone(),
        );
        registry.register(
            "subscriber_dropped",
            "qos 0 messages dropped for live subscribers that could not keep up",
            m.subscriber_dropped.clone(),
        );
        registry.register(
            "subscribers_disconnected",
            "Live subscribers disconnected for not keeping up",
            m.subscribers_disconnected.clone(),
        );
        registry.register(
            "backlog_messages",
            "Messages queued for a peer mesh (waiting, in flight or awaiting persistence)",
            m.backlog_messages.clone(),
        );
        registry.register_with_unit(
            "backlog",
            "Payload bytes queued for a peer mesh",
            Unit::Bytes,
            m.backlog_bytes.clone(),
        );
        registry.register(
            "link_healthy",
            "Whether a federation's link is healthy (1) or not (0)",
            m.link_healthy.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused before they authenticated, by listener and reason",
            m.connections_refused.clone(),
        );
        registry.register(
            "connections_unauthenticated",
            "Connections open that have not authenticated yet, by listener",
            m.connections_unauthenticated.clone(),
        );
        registry.register(
            "connections_idle_closed",
            "Connections closed for being idle, by listener",
            m.connections_idle_closed.clone(),
        );
        registry.register(
            "revocation_lists_refused",
            "Revocation lists from partners that were refused (untrusted, another mesh's, or not a successor of the stored one)",
            m.revocation_lists_refused.clone(),
        );
        registry.register(
            "revoked_links_closed",
            "Links closed because a revocation list revokes the peer's certificate",
            m.revoked_links_closed.clone(),
        );
        registry.register(
            "peer_misbehaved",
            "Federations suspended because the peer broke the streamed batch protocol (a batch head that does not verify, is out of order or does not come), by peer",
            m.peer_misbehaved.clone(),
        );
        registry.register(
            "audit_discrepancies",
            "Partners' audit tree heads, countersignatures or claims about this node's log that did not hold (a rollback, a rewritten history, a bad signature), by peer",
            m.audit_discrepancies.clone(),
        );
        registry.register(
            "audit_records",
            "Records appended to the audit log",
            m.audit_records.clone(),
        );
        registry.register(
            "audit_heads_signed",
            "Tree heads of the audit logs signed",
            m.audit_heads.clone(),
        );
        registry.register(
            "envelopes_delivered_unproven",
            "Envelopes from the link's peer handed to live subscribers on arrival, ahead of their batch head",
            m.delivered_unproven.clone(),
        );
        registry.register(
            "relayed_frames",
            "Tunnel frames (envelopes, their heads and the end-to-end control frames of relayed federations) this broker passed on, by next hop",
            m.relayed.clone(),
        );
        registry.register(
            "relay_dropped_frames",
            "Tunnel frames that could not be passed on (a loop, ttl expired, no route, or a gateway asked to relay); the source is told",
            m.relay_dropped.clone(),
        );
        registry.register(
            "relay_proofs",
            "Origin signatures (batch heads, signed batches, signed envelopes) this broker checked in the tunnels it relays, by outcome (valid, refused: the tunnel is then refused)",
            m.relay_proofs.clone(),
        );
        registry.register(
            "descriptors_refused",
            "Mesh descriptors the discovery directory refused (a bad signature, expired, an older one replayed, another CA's)",
            m.descriptors_refused.clone(),
        );
        registry.register(
            "custody_envelopes",
            "Custody (store-and-forward through brokers for a relayed federation's peer that is away), by event: handed (the next hop took one this node handed it), refused (the next hop refused one; the reason is logged), taken (this broker took one), expired (this broker dropped one at its deadline), delivered (this gateway opened one handed on from custody)",
            m.custody.clone(),
        );
        registry.register(
            "custody_held_envelopes",
            "Envelopes this broker holds in custody for destinations that are away",
            m.custody_held.clone(),
        );
        registry.register(
            "api_refused",
            "API requests refused for their credentials, by reason: missing (no token), token_in_url, forbidden (a valid component token asking beyond its scope or for an admin route), or what was wrong with the token (malformed, algorithm, unknown_key, signature, claims, issuer, audience, expired, not_yet_valid, revoked)",
            m.api_refused.clone(),
        );
        registry.register(
            "connector_up",
            "1 while a connector to the mesh's own MQTT or NATS bus is connected",
            m.connector_up.clone(),
        );
        registry.register(
            "connector_messages",
            "Messages a connector carried: export (taken from the bus, accepted into the federation), import (federation messages the bus's broker accepted)",
            m.connector_messages.clone(),
        );
        registry.register(
            "connector_unmapped",
            "Messages that fit no mapping rule of a connector, or that the other dialect cannot name; not forwarded",
            m.connector_unmapped.clone(),
        );
        registry.register(
            "connector_loops",
            "Messages a connector did not send back to the partner they came from",
            m.connector_loops.clone(),
        );
        registry.register(
            "connector_refused",
            "Messages of a connector the federation refused (agreement, policy, destination)",
            m.connector_refused.clone(),
        );
        registry.register(
            "connector_errors",
            "Errors of a connector's bus: connections lost or refused, publishes the broker did not accept",
            m.connector_errors.clone(),
        );
        registry.register(
            "anomalies",
            "Deviations of a partner's traffic from its baseline (DESIGN §3.9), by peer and measure: rate, size, refusal_ratio, error_ratio, signature_failures; each acted on as the policy's [anomaly] action says",
            m.anomalies.clone(),
        );
        registry.register(
            "breaker_state",
            "Each partner's circuit breaker: 0 closed, 1 half-open (a few messages pass as probes), 2 open (its traffic is held, queued, both ways)",
            m.breaker_state.clone(),
        );
        registry.register(
            "breaker_transitions",
            "Changes of partners' circuit breakers, by peer and the state entered",
            m.breaker_transitions.clone(),
        );
        registry.register(
            "breaker_held_transfers",
            "Transfers from a partner not taken while its breaker is open (not acknowledged: the partner sends them again)",
            m.breaker_held.clone(),
        );
        registry.register(
            "anomaly_observations_dropped",
            "Observations of partners' traffic the anomaly detector was too far behind to take",
            m.anomaly_dropped.clone(),
        );
        registry.register(
            "anomaly_windows",
            "Windows the anomaly detector closed (each partner's traffic in them judged against its baselines, then learned)",
            m.anomaly_windows.clone(),
        );
        let (commit, batch) = (m.journal_commit.clone(), m.journal_batch.clone());
        journal.observe(move |c| {
            commit.observe_duration(c.took);
            batch.observe(c.writes as u64);
        });
        registry.register_collector(Box::new(JournalCounters(journal)));
        Self { registry, ..m }
    }

    /// Counts an API request refused for its credentials.
    pub(crate) fn api_refused(&self, reason: &'static str) {
        self.api_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a partner's revocation list that was refused.
    pub(crate) fn revocation_list_refused(&self) {
        self.revocation_lists_refused.inc();
    }

    /// Counts a federation suspended because `peer` broke the streamed batch protocol.
    /// Counts a tunnel frame passed on to `next`.
    pub(crate) fn relayed(&self, next: &meshfed_proto::MeshId) {
        self.relayed.get_or_create(&peer(next)).inc();
    }

    /// Counts an origin signature checked in a relayed tunnel.
    pub(crate) fn relay_proof_checked(&self, valid: bool) {
        let outcome = if valid { "valid" } else { "refused" };
        self.relay_proofs
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts a custody event (see the metric's help).
    pub(crate) fn custody(&self, event: &'static str) {
        self.custody.get_or_create(&EventLabel { event }).inc();
    }

    /// Counts a mesh descriptor the directory refused.
    pub(crate) fn descriptor_refused(&self) {
        self.descriptors_refused.inc();
    }

    /// Counts a tunnel frame that could not be passed on.
    pub(crate) fn relay_dropped(&self) {
        self.relay_dropped.inc();
    }

    pub(crate) fn peer_misbehaved(&self, p: &meshfed_proto::MeshId) {
        self.peer_misbehaved.get_or_create(&peer(p)).inc();
    }

    /// Counts a link closed because its peer's certificate is revoked.
    pub(crate) fn audit_discrepancy(&self, p: &meshfed_proto::MeshId) {
        self.audit_discrepancies.get_or_create(&peer(p)).inc();
    }

    pub(crate) fn revoked_link_closed(&self) {
        self.revoked_links_closed.inc();
    }

    /// Counts a refusal of a message from or for partner `p`, travelling `direction`.
    pub(crate) fn refused_by(&self, p: &MeshId, direction: Direction, refusal: &Refusal) {
        self.refused(direction, refusal);
        self.peer_refusals
            .get_or_create(&PeerDirectionLabels {
                peer: p.to_string(),
                direction: direction_label(direction),
            })
            .inc();
    }

    /// Counts a federation handshake's outcome.
    pub(crate) fn handshake(&self, outcome: &'static str) {
        self.handshakes
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Records a heartbeat's round trip.
    pub(crate) fn link_rtt(&self, federation: &FederationId, p: &MeshId, rtt: Duration) {
        self.link_rtt
            .get_or_create(&FederationLabels {
                federation: federation.to_string(),
                peer: p.to_string(),
            })
            .observe_duration(rtt);
    }

    /// A recorder of the latencies of the envelopes accepted for delivery at `now`.
    pub(crate) fn arrivals(&self, now: SystemTime) -> Arrivals<'_> {
        Arrivals {
            metrics: self,
            now,
            recent: Vec::new(),
        }
    }

    /// Counts a refusal of a message travelling `direction`.
    pub(crate) fn refused(&self, direction: Direction, refusal: &Refusal) {
        self.rejected
            .get_or_create(&RefusalLabels {
                direction: direction_label(direction),
                reason: refusal.reason(),
            })
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records the latency of envelopes accepted for delivery in one turn of the receiving stage,
/// looking each series up once per turn.
pub(crate) struct Arrivals<'m> {
    metrics: &'m Metrics,
    now: SystemTime,
    /// The series met this turn.
    recent: Vec<(Met, Histogram)>,
}

/// A series met in a turn: its federation, the agreement version in force and the index of the
/// route among that agreement's patterns.
#[derive(Debug)]
struct Met {
    federation: FederationId,
    version: u32,
    route: Option<usize>,
}

/// The `route` of a message that matched none of the agreed patterns (in transit).
const NO_ROUTE: &str = "none";

impl Arrivals<'_> {
    /// Records an envelope sent at `sent` on `topic`, received under `terms` (the agreement in
    /// force on its link): its route is the first of the agreed inbound patterns it matches.
    pub(crate) fn observe(&mut self, terms: &Terms, topic: &Topic, sent: Timestamp) {
        let (federation, p) = (&terms.federation_id, &terms.peer);
        let routes = terms.topics(Direction::Inbound);
        let route = routes.iter().position(|r| r.matches(topic));
        let seen = self.recent.iter().find(|(k, _)| {
            k.federation == *federation && k.version == terms.version && k.route == route
        });
        let histogram = match seen {
            Some((_, h)) => h.clone(),
            None => {
                let key = Met {
                    federation: federation.clone(),
                    version: terms.version,
                    route,
                };
                let h = self.metrics.latency.get_or_create(&RouteLabels {
                    federation: federation.to_string(),
                    peer: p.to_string(),
                    route: route.map_or(NO_ROUTE, |i| routes[i].as_str()).to_owned(),
                });
                self.recent.push((key, h.clone()));
                h
            }
        };
        // A timestamp past what the system can represent is as far ahead as any.
        let took = UNIX_EPOCH
            .checked_add(Duration::from_millis(sent.0))
            .and_then(|sent| self.now.duration_since(sent).ok());
        histogram.observe_duration(took.unwrap_or_else(|| {
            self.metrics.clock_skewed.get_or_create(&peer(p)).inc();
            Duration::ZERO
        }));
    }
}

fn direction_label(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// The peer label for `peer`.
pub(crate) fn peer(peer: &meshfed_proto::MeshId) -> PeerLabel {
    PeerLabel {
        peer: peer.to_string(),
    }
}

/// The journal's own counters, read at each scrape.
#[derive(Debug)]
struct JournalCounters(Arc<Journal>);

impl Collector for JournalCounters {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        for (name, help, value) in [
            (
                "journal_commits",
                "Journal transactions committed (one fsync each)",
                stats.commits,
            ),
            (
                "journal_requests",
                "Journal requests committed",
                stats.requests,
            ),
            (
                "journal_failed",
                "Journal requests that failed (rolled back alone, or in a failed commit)",
                stats.failed,
            ),
            (
                "journal_writes",
                "Writes of the journal requests committed (one per outbound message appended)",
                stats.writes,
            ),
            (
                "journal_acknowledged",
                "Outbound messages deleted from the journal as acknowledged",
                stats.acknowledged,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        if let Some(cpu) = stats.writer_cpu {
            let counter = ConstCounter::new(cpu.as_secs_f64());
            let metric = encoder.encode_descriptor(
                "journal_writer_cpu",
                "CPU time of the journal's writer thread (over journal_writes: its cost per message)",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_prometheus_conventions() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let journal = Journal::open(
            &dir.path().join("store.db"),
            meshfed_store::JournalConfig::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let m = Metrics::new(Arc::new(journal));
        m.sent
            .get_or_create(&peer(
                &"supplier-b".parse().unwrap_or_else(|e| panic!("{e}")),
            ))
            .inc();
        m.refused(Direction::Inbound, &Refusal::Suspended);
        m.backlog_bytes
            .get_or_create(&PeerLabel {
                peer: "supplier-b".into(),
            })
            .set(1024);
        let text = m.encode();
        for line in [
            "meshfed_envelopes_sent_total{peer=\"supplier-b\"} 1",
            "meshfed_envelopes_rejected_total{direction=\"inbound\",reason=\"suspended\"} 1",
            "meshfed_envelopes_rejected_total{direction=\"outbound\",reason=\"bad_signature\"} 0",
            "meshfed_backlog_bytes{peer=\"supplier-b\"} 1024",
            "meshfed_journal_commits_total 0",
            "meshfed_journal_writes_total 0",
            "# UNIT meshfed_journal_writer_cpu_seconds seconds",
            "# TYPE meshfed_backlog_bytes gauge",
            "# UNIT meshfed_backlog_bytes bytes",
            "# TYPE meshfed_journal_commit_seconds histogram",
            "meshfed_journal_batch_writes_bucket{le=\"0.0\"} 0",
            "meshfed_handshakes_total{outcome=\"established\"} 0",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn latency_is_labelled_with_the_agreed_route_and_a_clock_ahead_counts_as_skew() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let journal = Journal::open(
            &dir.path().join("store.db"),
            meshfed_store::JournalConfig::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let m = Metrics::new(Arc::new(journal));
        let parse = |s: &str| {
            s.parse::<meshfed_proto::TopicPattern>()
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let terms = Terms {
            federation_id: "fed_0123456789abcdef0123456789abcdef"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            local: "supplier-b".parse().unwrap_or_else(|e| panic!("{e}")),
            peer: "plant-a".parse().unwrap_or_else(|e| panic!("{e}")),
            version: 1,
            outbound: Vec::new(),
            inbound: vec![parse("orders/#"), parse("telemetry/+/temp")],
            max_message_size: 1 << 20,
            max_qos: meshfed_proto::envelope::Qos::ExactlyOnce,
            content_types: Vec::new(),
            max_priority: 7,
            max_latency_ms: None,
            redact: Vec::new(),
            max_rate: None,
            signature_modes: Vec::new(),
            schemas: Vec::new(),
            classifications: Vec::new(),
            topic_rates: Vec::new(),
            audit_level: meshfed_proto::policy::AuditLevel::Refusals,
            retention_days: 30,
        };
        let federation = &terms.federation_id;
        let topic: Topic = "telemetry/line-4/temp"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let now = UNIX_EPOCH + Duration::from_millis(1_000_000);
        let mut arrivals = m.arrivals(now);
        // 3 ms late, then sent "after" now (a clock ahead), then at the end of time.
        for sent in [999_997, 1_000_250, u64::MAX] {
            arrivals.observe(&terms, &topic, Timestamp(sent));
        }
        let text = m.encode();
        let series =
            format!("federation=\"{federation}\",peer=\"plant-a\",route=\"telemetry/+/temp\"}}");
        for line in [
            format!("meshfed_delivery_latency_seconds_count{{{series} 3"),
            format!("meshfed_delivery_latency_seconds_sum{{{series} 0.003"),
            format!("meshfed_delivery_latency_seconds_bucket{{le=\"0.0001\",{series} 2"),
            format!("meshfed_delivery_latency_seconds_bucket{{le=\"0.0025\",{series} 2"),
            format!("meshfed_delivery_latency_seconds_bucket{{le=\"0.005\",{series} 3"),
            "meshfed_latency_clock_skewed_total{peer=\"plant-a\"} 2".to_owned(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(
            !text.contains("line-4"),
            "a raw topic in the labels:\n{text}"
        );
    }
}
