//! The sampler behind `GET /v1/stats`, which the console's live plots poll every second.
//!
//! Once a second it reads the node's own metrics — the same counters and latency histograms
//! `/metrics` exposes, and each live federation's state as the scrape sets its gauges from
//! ([`GatewayHandle::live`]) — and keeps the last [`WINDOW`] + 1 samples. Rates are the
//! counters' growth between the last two samples; latency percentiles come from the bucket
//! counts gained over the whole ring, as Prometheus' `histogram_quantile` over `increase` would
//! give them ([`crate::metrics::histogram::quantile`]).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use meshfed_proto::{FederationId, FederationState, MeshId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{GatewayHandle, Health};
use crate::metrics::histogram::{LATENCY_NS, quantile};
use crate::metrics::{self, Metrics, PeerDirectionLabels};

/// Samples the percentiles span, in seconds (one sample a second).
pub(crate) const WINDOW: usize = 10;
/// Between two samples.
const INTERVAL: Duration = Duration::from_secs(1);

/// The last samples, newest last.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    ring: Mutex<VecDeque<Sample>>,
}

/// What one turn of the sampler read.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    wall: SystemTime,
    federations: Vec<Taken>,
}

/// One live federation as a sample read it: its state, and its counters so far.
#[derive(Debug, Clone)]
struct Taken {
    id: FederationId,
    peer: MeshId,
    state: FederationState,
    healthy: bool,
    rtt: Option<Duration>,
    sent: u64,
    delivered: u64,
    refused: u64,
    /// Latency observations per bucket of [`LATENCY_NS`] (summed over routes), so far.
    latency: Vec<u64>,
    backlog: (usize, u64),
}

/// The figures `/v1/stats` shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figures {
    /// When the newest sample was taken.
    pub(crate) at: SystemTime,
    /// The span the latency percentiles cover.
    pub(crate) window: Duration,
    /// Each live federation.
    pub(crate) federations: Vec<FederationFigures>,
}

/// One federation's figures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FederationFigures {
    pub(crate) id: FederationId,
    pub(crate) peer: MeshId,
    pub(crate) state: FederationState,
    /// Its link is up (healthy).
    pub(crate) healthy: bool,
    /// The last heartbeat's round trip.
    pub(crate) rtt: Option<Duration>,
    /// Per second, over the last interval between samples.
    pub(crate) sent: f64,
    pub(crate) delivered: f64,
    pub(crate) refused: f64,
    /// Delivery latency over the window; `None` when nothing arrived in it.
    pub(crate) latency: Option<Percentiles>,
    /// Messages and bytes queued for the peer.
    pub(crate) backlog: (usize, u64),
}

/// Latency percentiles, in seconds, and how many observations they rest on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) count: u64,
}

impl Sampler {
    fn push(&self, sample: Sample) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() > WINDOW {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    /// The figures of the samples so far; `None` before the first.
    pub(crate) fn figures(&self) -> Option<Figures> {
        figures(&self.ring.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Samples once a second until the gateway stops.
pub(crate) async fn run(node: GatewayHandle) {
    let (clock, cancel) = (node.0.ctx.clock.clone(), node.0.ctx.cancel.clone());
    let mut next = clock.instant();
    loop {
        let sample = take(&node).await;
        node.0.stats.push(sample);
        next = (next + INTERVAL).max(clock.instant());
        tokio::select! {
            () = cancel.cancelled() => return,
            () = clock.sleep_until(next) => {}
        }
    }
}

async fn take(node: &GatewayHandle) -> Sample {
    let ctx = &node.0.ctx;
    let live = node.live().await;
    let (at, wall) = (ctx.clock.instant(), ctx.clock.wall());
    let m = &ctx.metrics;
    let latencies = m.latency.all();
    let federations = live
        .into_iter()
        .map(|s| {
            let id = s.record.id;
            let peer = s.record.peer_mesh;
            let mut latency = vec![0; LATENCY_NS.len() + 1];
            let key = id.to_string();
            for (_, h) in latencies.iter().filter(|(l, _)| l.federation == key) {
                for (sum, n) in latency.iter_mut().zip(h.counts_now()) {
                    *sum += n;
                }
            }
            Taken {
                sent: count(&m.sent, &metrics::peer(&peer)),
                delivered: count(&m.delivered, &metrics::peer(&peer)),
                refused: refusals(m, &peer),
                latency,
                healthy: s.link.health == Health::Healthy,
                rtt: s.link.rtt,
                backlog: s
                    .stream
                    .map_or((0, 0), |st| (st.backlog.messages, st.backlog.bytes)),
                state: s.record.state,
                id,
                peer,
            }
        })
        .collect();
    Sample {
        at,
        wall,
        federations,
    }
}

/// The count of `labels` in `family` (0 before the first).
fn count<L: Clone + Eq + std::hash::Hash>(family: &Family<L, Counter>, labels: &L) -> u64 {
    family.get(labels).map_or(0, |c| c.get())
}

fn refusals(m: &Metrics, peer: &MeshId) -> u64 {
    ["inbound", "outbound"]
        .into_iter()
        .map(|direction| {
            let labels = PeerDirectionLabels {
                peer: peer.to_string(),
                direction,
            };
            count(&m.peer_refusals, &labels)
        })
        .sum()
}

/// The figures of `ring` (oldest first): rates from its last two samples, percentiles over all
/// of it.
fn figures(ring: &VecDeque<Sample>) -> Option<Figures> {
    let latest = ring.back()?;
    let previous = ring.len().checked_sub(2).and_then(|i| ring.get(i));
    let base = ring.front()?;
    let bounds: Vec<f64> = LATENCY_NS.iter().map(|n| *n as f64 / 1e9).collect();
    let federations = latest
        .federations
        .iter()
        .map(|now| {
            let before = |s: &Sample| s.federations.iter().find(|f| f.id == now.id).cloned();
            let rate = |pick: fn(&Taken) -> u64| {
                let Some((then, s)) = previous.and_then(|p| Some((before(p)?, p))) else {
                    return 0.0;
                };
                let elapsed = latest.at.saturating_duration_since(s.at).as_secs_f64();
                if elapsed <= 0.0 {
                    return 0.0;
                }
                pick(now).saturating_sub(pick(&then)) as f64 / elapsed
            };
            let gained: Vec<u64> = match before(base) {
                Some(then) => now
                    .latency
                    .iter()
                    .zip(&then.latency)
                    .map(|(n, t)| n.saturating_sub(*t))
                    .collect(),
                None => now.latency.clone(),
            };
            let latency = quantile(0.5, &bounds, &gained).map(|p50| Percentiles {
                p50,
                p90: quantile(0.9, &bounds, &gained).unwrap_or(p50),
                p99: quantile(0.99, &bounds, &gained).unwrap_or(p50),
                count: gained.iter().sum(),
            });
            FederationFigures {
                id: now.id.clone(),
                peer: now.peer.clone(),
                state: now.state,
                healthy: now.healthy,
                rtt: now.rtt,
                sent: rate(|t| t.sent),
                delivered: rate(|t| t.delivered),
                refused: rate(|t| t.refused),
                latency,
                backlog: now.backlog,
            }
        })
        .collect();
    Some(Figures {
        at: latest.wall,
        window: latest.at.saturating_duration_since(base.at),
        federations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(sent: u64, latency: Vec<u64>) -> Taken {
        Taken {
            id: "fed_0123456789abcdef0123456789abcdef"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            peer: "supplier-b".parse().unwrap_or_else(|e| panic!("{e}")),
            state: FederationState::Active,
            healthy: true,
            rtt: Some(Duration::from_micros(410)),
            sent,
            delivered: 0,
            refused: 0,
            latency,
            backlog: (0, 0),
        }
    }

    fn ring(samples: &[(u64, u64, Vec<u64>)]) -> VecDeque<Sample> {
        let start = Instant::now();
        samples
            .iter()
            .map(|(secs, sent, latency)| Sample {
                at: start + Duration::from_secs(*secs),
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(*secs),
                federations: vec![taken(*sent, latency.clone())],
            })
            .collect()
    }

    /// Bucket counts with `n` observations in the bucket of index `i`.
    fn at(i: usize, n: u64) -> Vec<u64> {
        let mut v = vec![0; LATENCY_NS.len() + 1];
        v[i] = n;
        v
    }

    #[test]
    fn one_sample_gives_no_rate_and_no_latency() {
        let f = figures(&ring(&[(0, 500, at(3, 7))])).unwrap_or_else(|| panic!("no figures"));
        assert_eq!(f.window, Duration::ZERO);
        assert_eq!(f.federations[0].sent, 0.0);
        assert_eq!(f.federations[0].latency, None);
    }

    #[test]
    fn rates_come_from_the_last_two_samples_and_percentiles_from_the_window() {
        // 1,000 sent before the window, then 100 a second; 10 arrivals in the 1 ms bucket
        // (index 3: 0.5–1 ms) before it, 100 in the 2.5 ms one (index 4) during it.
        let mut samples = vec![(0, 1_000, at(3, 10))];
        for s in 1..=10 {
            let mut latency = at(4, 10 * s);
            latency[3] = 10;
            samples.push((s, 1_000 + 100 * s, latency));
        }
        let figures = figures(&ring(&samples)).unwrap_or_else(|| panic!("no figures"));
        assert_eq!(figures.window, Duration::from_secs(10));
        let fed = &figures.federations[0];
        assert_eq!(fed.sent, 100.0);
        let p = fed.latency.unwrap_or_else(|| panic!("no latency"));
        assert_eq!(p.count, 100);
        // All in (1 ms, 2.5 ms]: the median halfway, p99 near the top.
        assert!((p.p50 - 0.00175).abs() < 1e-9, "{p:?}");
        assert!((p.p99 - (0.001 + 0.0015 * 0.99)).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn a_window_without_arrivals_has_no_latency() {
        let figures = figures(&ring(&[(0, 0, at(3, 10)), (1, 0, at(3, 10))]))
            .unwrap_or_else(|| panic!("no figures"));
        assert_eq!(figures.federations[0].latency, None);
    }
}
