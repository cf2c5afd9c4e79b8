//! Histograms the node can read back as well as expose: the same buckets feed `/metrics` and
//! the `/v1/stats` sampler (one source of truth), which prometheus-client's own `Histogram`
//! (buckets not readable) and `Family` (not iterable) do not allow.
//!
//! A [`Histogram`] counts observations in fixed buckets of integer units (nanoseconds for
//! durations, plain counts otherwise) with atomics, so observing never takes a lock; it is
//! encoded as an OpenMetrics histogram in the exposed unit. A [`Series`] is a family of them by
//! label set. [`quantile`] is Prometheus' `histogram_quantile` over bucket counts.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds, in nanoseconds, for latencies and round trips of a LAN or WAN federation:
/// 100 µs to 10 s, about three buckets a decade.
pub(crate) const LATENCY_NS: &[u64] = &[
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds for the writes of a journal commit: 0 (acknowledgements alone), then powers of
/// two up to the writer's default batch bound (4096).
pub(crate) const BATCH_WRITES: &[u64] =
    &[0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Nanoseconds in the exposed unit (seconds).
const NANOS_PER_SECOND: f64 = 1e9;

/// Counts of observations per bucket.
#[derive(Debug, Clone)]
pub(crate) struct Histogram(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Upper bounds (inclusive) in units, ascending; a last bucket, `+Inf`, follows.
    bounds: &'static [u64],
    /// Units in the exposed unit (1e9 for nanoseconds shown as seconds).
    per_exposed: f64,
    /// Observations per bucket (not cumulative), one more than `bounds`.
    counts: Box<[AtomicU64]>,
    /// Sum of the observations, in units.
    sum: AtomicU64,
}

impl Histogram {
    /// Durations, exposed in seconds, in buckets up to `bounds_ns`.
    pub(crate) fn seconds(bounds_ns: &'static [u64]) -> Self {
        Self::new(bounds_ns, NANOS_PER_SECOND)
    }

    /// Counts, in buckets up to `bounds`.
    pub(crate) fn counts(bounds: &'static [u64]) -> Self {
        Self::new(bounds, 1.0)
    }

    fn new(bounds: &'static [u64], per_exposed: f64) -> Self {
        Self(Arc::new(Inner {
            bounds,
            per_exposed,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }))
    }

    /// Counts one observation of `units`.
    pub(crate) fn observe(&self, units: u64) {
        let i = self.0.bounds.partition_point(|b| *b < units);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum.fetch_add(units, Ordering::Relaxed);
    }

    /// Counts one duration (of a histogram made by [`Histogram::seconds`]).
    pub(crate) fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The upper bounds of the buckets, in the exposed unit (`+Inf` not included).
    pub(crate) fn bounds(&self) -> Vec<f64> {
        let per = self.0.per_exposed;
        self.0.bounds.iter().map(|b| *b as f64 / per).collect()
    }

    /// The observations per bucket so far (not cumulative; the last is `+Inf`'s).
    pub(crate) fn counts_now(&self) -> Vec<u64> {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let counts = self.counts_now();
        let buckets: Vec<(f64, u64)> = self
            .bounds()
            .into_iter()
            // prometheus-client writes f64::MAX as `+Inf`.
            .chain([f64::MAX])
            .zip(counts.iter().copied())
            .collect();
        let sum = self.0.sum.load(Ordering::Relaxed) as f64 / self.0.per_exposed;
        encoder.encode_histogram::<NoLabelSet>(sum, counts.iter().sum(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Histograms by label set, made on first use.
#[derive(Debug, Clone)]
pub(crate) struct Series<L> {
    bounds: &'static [u64],
    by: Arc<RwLock<HashMap<L, Histogram>>>,
}

impl<L: Clone + Eq + Hash> Series<L> {
    /// Duration histograms (exposed in seconds) up to `bounds_ns`.
    pub(crate) fn seconds(bounds_ns: &'static [u64]) -> Self {
        Self {
            bounds: bounds_ns,
            by: Arc::default(),
        }
    }

    /// The histogram of `labels`.
    pub(crate) fn get_or_create(&self, labels: &L) -> Histogram {
        if let Some(h) = self
            .by
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(labels)
        {
            return h.clone();
        }
        self.by
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(labels.clone())
            .or_insert_with(|| Histogram::seconds(self.bounds))
            .clone()
    }

    /// Every label set and its histogram.
    pub(crate) fn all(&self) -> Vec<(L, Histogram)> {
        self.by
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(l, h)| (l.clone(), h.clone()))
            .collect()
    }
}

impl<L> TypedMetric for Series<L> {
    const TYPE: MetricType = MetricType::Histogram;
}

impl<L: EncodeLabelSet + std::fmt::Debug + Send + Sync> EncodeMetric for Series<L> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let by = self.by.read().unwrap_or_else(|e| e.into_inner());
        for (labels, h) in by.iter() {
            h.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of observations counted per bucket (`counts`, not cumulative,
/// one more than `bounds`: the last is `+Inf`'s), as Prometheus' `histogram_quantile` computes
/// it: the bucket holding the rank `q · total`, interpolated linearly within it (from 0 for
/// the first bucket); a rank in `+Inf`'s bucket gives the highest finite bound. `None` when
/// nothing was observed.
pub(crate) fn quantile(q: f64, bounds: &[f64], counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || bounds.is_empty() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        let through = below + n;
        if n > 0 && through as f64 >= rank {
            let Some(&end) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let start = if i == 0 { 0.0 } else { bounds[i - 1] };
            return Some(start + (end - start) * ((rank - below as f64) / n as f64));
        }
        below = through;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [1.0, 2.0, 4.0];

    #[test]
    fn an_empty_window_has_no_quantile() {
        assert_eq!(quantile(0.5, &BOUNDS, &[0, 0, 0, 0]), None);
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket_as_prometheus_does() {
        // 10 in (0, 1], 10 in (1, 2]: the median is the first bucket's top, p75 halfway up the
        // second, p99 near its top.
        let counts = [10, 10, 0, 0];
        assert_eq!(quantile(0.5, &BOUNDS, &counts), Some(1.0));
        assert_eq!(quantile(0.75, &BOUNDS, &counts), Some(1.5));
        assert_eq!(quantile(0.25, &BOUNDS, &counts), Some(0.5));
        let p99 = quantile(0.99, &BOUNDS, &counts).unwrap_or_default();
        assert!((p99 - 1.98).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn a_rank_past_the_last_bound_gives_the_highest_finite_bound() {
        assert_eq!(quantile(0.99, &BOUNDS, &[1, 0, 0, 9]), Some(4.0));
        // Empty buckets before the rank's are passed over.
        assert_eq!(quantile(0.5, &BOUNDS, &[0, 0, 4, 0]), Some(3.0));
    }

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let h = Histogram::seconds(LATENCY_NS);
        h.observe_duration(Duration::from_micros(100)); // on the bound: le="0.0001"
        h.observe_duration(Duration::from_micros(101));
        h.observe_duration(Duration::from_secs(11)); // +Inf
        let counts = h.counts_now();
        assert_eq!((counts[0], counts[1]), (1, 1), "{counts:?}");
        assert_eq!(counts[LATENCY_NS.len()], 1, "{counts:?}");
        assert_eq!(h.bounds()[0], 0.0001);
        assert_eq!(h.bounds()[LATENCY_NS.len() - 1], 10.0);
    }
}
