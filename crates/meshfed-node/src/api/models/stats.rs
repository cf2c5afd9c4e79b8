//! The body of `GET /v1/stats`: live figures for the console's plots, sampled once a second
//! from the node's own metrics (`gateway/stats.rs`).

use meshfed_proto::{FederationId, FederationState, MeshId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::schema;

/// `GET /v1/stats`: each live federation's rates, latency and backlog, and their totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsView {
    /// When the figures were taken (RFC 3339).
    pub at: String,
    /// The span the latency percentiles cover, in seconds (up to 10; less just after start).
    pub window_seconds: u64,
    /// Each live federation.
    pub federations: Vec<FederationStats>,
    /// The rates of all of them together.
    pub totals: StatsRates,
}

/// One federation's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FederationStats {
    /// The federation.
    #[schema(value_type = schema::FederationId)]
    pub federation: FederationId,
    /// The partner mesh.
    #[schema(value_type = schema::MeshId)]
    pub peer: MeshId,
    /// Where the federation stands in its lifecycle.
    #[serde(with = "super::via_str")]
    #[schema(value_type = schema::FederationState)]
    pub state: FederationState,
    /// Whether its link is up (healthy).
    pub healthy: bool,
    /// The last heartbeat's round trip, in milliseconds; `null` when unknown.
    pub rtt_ms: Option<f64>,
    /// Envelopes sent to the peer per second, over the last one-second sample.
    pub sent_per_second: f64,
    /// Envelopes received from the peer and delivered here per second, same sample.
    pub delivered_per_second: f64,
    /// Messages from or for the peer refused per second, same sample.
    pub refused_per_second: f64,
    /// Delivery latency over the window; `null` when no message arrived in it.
    pub latency_ms: Option<LatencyPercentiles>,
    /// What is queued for the peer.
    pub backlog: StatsBacklog,
}

/// Latency percentiles in milliseconds (from the histogram's buckets, interpolated within a
/// bucket as Prometheus' `histogram_quantile` does), and how many messages they rest on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LatencyPercentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Messages delivered in the window.
    pub count: u64,
}

/// Messages queued for a peer and their payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatsBacklog {
    /// Messages held: queued, awaiting persistence or unacknowledged.
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// StatsRates per second over the last one-second sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsRates {
    /// Envelopes sent.
    pub sent_per_second: f64,
    /// Envelopes received and delivered here.
    pub delivered_per_second: f64,
    /// Messages refused.
    pub refused_per_second: f64,
}
