//! `GET /v1/stats`: the live figures the console plots (rates, latency percentiles, backlog per
//! federation), from the gateway's sampler (`gateway/stats.rs`).

use axum::Json;
use axum::extract::State;

use super::Node;
use super::models::{
    ErrorBody, FederationStats, LatencyPercentiles, StatsBacklog, StatsRates, StatsView,
};
use crate::gateway::federations::rfc3339;
use crate::gateway::stats::Figures;

const MS_PER_SECOND: f64 = 1e3;

#[utoipa::path(
    get,
    path = "/stats",
    tag = "health",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Each live federation's rates over the last one-second sample, its delivery latency percentiles over the last ten seconds and its backlog, sampled once a second from the node's metrics", body = StatsView),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn stats(State(node): State<Node>) -> Json<StatsView> {
    Json(view(node.stats()))
}

fn view(f: Figures) -> StatsView {
    let federations: Vec<FederationStats> = f
        .federations
        .into_iter()
        .map(|f| FederationStats {
            federation: f.id,
            peer: f.peer,
            state: f.state,
            healthy: f.healthy,
            rtt_ms: f.rtt.map(|d| d.as_secs_f64() * MS_PER_SECOND),
            sent_per_second: f.sent,
            delivered_per_second: f.delivered,
            refused_per_second: f.refused,
            latency_ms: f.latency.map(|p| LatencyPercentiles {
                p50: p.p50 * MS_PER_SECOND,
                p90: p.p90 * MS_PER_SECOND,
                p99: p.p99 * MS_PER_SECOND,
                count: p.count,
            }),
            backlog: StatsBacklog {
                messages: f.backlog.0 as u64,
                bytes: f.backlog.1,
            },
        })
        .collect();
    let total = |pick: fn(&FederationStats) -> f64| federations.iter().map(pick).sum();
    StatsView {
        at: rfc3339(crate::clock::timestamp(f.at)),
        window_seconds: f.window.as_secs_f64().round() as u64,
        totals: StatsRates {
            sent_per_second: total(|f| f.sent_per_second),
            delivered_per_second: total(|f| f.delivered_per_second),
            refused_per_second: total(|f| f.refused_per_second),
        },
        federations,
    }
}
