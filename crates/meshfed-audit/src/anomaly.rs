//! Per partner and topic baselines of federated traffic, and the deviations from them
//! (DESIGN §3.9, "Anomaly detection").
//!
//! **What it is.** A [`Detector`] counts what each partner sends, overall and per topic, in
//! windows of fixed length (default 1 s). When a window ends ([`Detector::tick`]) each key's
//! measures — message rate, mean message size, refusal ratio, error ratio, signature failures —
//! are compared with that key's baseline, an exponentially weighted mean and variance, and a
//! [`Deviation`] is raised for every measure beyond `mean + k·σ` *and* beyond an absolute floor.
//!
//! **What it is not.** No IO and no clock: time is the `now` argument. It decides nothing either:
//! the node turns deviations into audit records and metrics and, by policy, trips the partner's
//! [`Breaker`](crate::breaker::Breaker) or suspends the federation.
//!
//! **Choices worth knowing.**
//! - *Cost on the data path.* [`Detector::observe`] does a lookup of the partner and one of the
//!   topic (by `&str`, in a two-level map) and a few additions; it allocates only when a key is
//!   new. Topic keys are bounded per partner ([`DetectorConfig::max_topics_per_partner`]): the
//!   topics beyond the bound are counted in the partner's overall key only, so a peer cannot grow
//!   memory by inventing topics.
//! - *Deviating windows do not poison the baseline.* A window in which a key raised any deviation
//!   moves that key's means by a much smaller weight (`alpha × deviating_weight`) and leaves its
//!   variances alone, so a sustained attack keeps raising for minutes (a 50× spike about six
//!   and a half minutes with the defaults) instead of becoming the norm within seconds; a lasting
//!   legitimate change is accepted after that, or at once with [`Detector::forget`].
//! - *Quiet is real.* A window in which a key saw nothing folds a rate (and a signature failure
//!   count) of zero, as a genuine quiet period; size and ratios are undefined then and are not
//!   folded (nor are they from windows of fewer than [`DetectorConfig::min_messages`]). A key quiet for [`DetectorConfig::forget_idle_after`] windows is forgotten: a topic
//!   key frees its slot, a partner starts a new warm-up when it comes back.
//! - *Warm-up.* Rate, size and ratio deviations wait until the measure has learned from
//!   [`DetectorConfig::warmup_windows`] windows; a burst of signature failures raises at once,
//!   since a legitimate partner has none. During warm-up the weight of a window is `1/n`
//!   (an exact running mean and variance), then `alpha`.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use meshfed_proto::MeshId;

/// What the data path saw of one message from a partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The message was accepted and delivered; `size` is its payload size in bytes.
    Delivered {
        /// Payload size in bytes.
        size: u64,
    },
    /// The message was refused by policy (topic, rate, size, classification, ...).
    Refused,
    /// The message's signature did not verify.
    SignatureFailure,
    /// Any other fault while handling the message (malformed, undeliverable, ...).
    Error,
}

/// A measure of a key's traffic in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Measure {
    /// Messages per second, whatever became of them.
    Rate,
    /// Mean payload size of the delivered messages, in bytes.
    Size,
    /// Refused messages over all messages.
    RefusalRatio,
    /// Errors over all messages.
    ErrorRatio,
    /// Signature failures in the window.
    SignatureFailures,
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rate => "rate",
            Self::Size => "mean size",
            Self::RefusalRatio => "refusal ratio",
            Self::ErrorRatio => "error ratio",
            Self::SignatureFailures => "signature failures",
        })
    }
}

/// How the detector cuts time, learns and decides. [`Detector::new`] brings values out of range
/// back into range (a window of at least 1 ms and at most 1 h, `alpha` and `deviating_weight`
/// within `0..=1`, `k` and the factors at least 0; a value that is not a number takes its
/// default).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// Length of a window. Default 1 s.
    pub window: Duration,
    /// How many standard deviations above the mean a measure must be. Default 4.
    pub k: f64,
    /// Weight of a new window in the baselines once warmed up (an EWMA's alpha). Default 0.02,
    /// a memory of about 50 windows.
    pub alpha: f64,
    /// Windows a measure learns from before its rate, size or ratio deviations are raised.
    /// Default 10.
    pub warmup_windows: u64,
    /// A rate deviation needs at least this many messages per second. Default 50.
    pub min_rate: f64,
    /// A rate deviation needs at least this multiple of the baseline's mean. Default 3.
    pub rate_factor: f64,
    /// A size deviation needs at least this multiple of the baseline's mean. Default 3.
    pub size_factor: f64,
    /// Size is judged and learned only from windows with at least this many delivered
    /// messages, the ratios only from windows with at least this many messages: a mean or a
    /// ratio of a handful says little, and folding it would widen the baseline. Default 10.
    pub min_messages: u64,
    /// A refusal ratio deviation needs at least this many refusals in the window. Default 10.
    pub min_refusals: u64,
    /// An error ratio deviation needs at least this many errors in the window. Default 10.
    pub min_errors: u64,
    /// This many signature failures in one window raise a deviation, baseline or not, warm-up
    /// or not. Default 5.
    pub sig_failures_burst: u64,
    /// A window that raised a deviation moves the key's means with `alpha` times this weight,
    /// and its variances not at all. Default 0.05 (0.001 per window with the default alpha).
    pub deviating_weight: f64,
    /// Topic keys kept per partner; further topics count only in the partner's overall key.
    /// Default 256.
    pub max_topics_per_partner: usize,
    /// Windows without a single observation after which a key is forgotten. Default 300
    /// (5 minutes with 1 s windows).
    pub forget_idle_after: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(1),
            k: 4.0,
            alpha: 0.02,
            warmup_windows: 10,
            min_rate: 50.0,
            rate_factor: 3.0,
            size_factor: 3.0,
            min_messages: 10,
            min_refusals: 10,
            min_errors: 10,
            sig_failures_burst: 5,
            deviating_weight: 0.05,
            max_topics_per_partner: 256,
            forget_idle_after: 300,
        }
    }
}

impl DetectorConfig {
    /// The same configuration with every value brought into its range.
    fn into_range(self) -> Self {
        let d = Self::default();
        let clamp = |v: f64, default: f64, lo: f64, hi: f64| {
            if v.is_nan() { default } else { v.clamp(lo, hi) }
        };
        Self {
            window: self
                .window
                .clamp(Duration::from_millis(1), Duration::from_secs(3600)),
            k: clamp(self.k, d.k, 0.0, f64::MAX),
            alpha: clamp(self.alpha, d.alpha, f64::MIN_POSITIVE, 1.0),
            min_rate: clamp(self.min_rate, d.min_rate, 0.0, f64::MAX),
            rate_factor: clamp(self.rate_factor, d.rate_factor, 0.0, f64::MAX),
            size_factor: clamp(self.size_factor, d.size_factor, 0.0, f64::MAX),
            deviating_weight: clamp(self.deviating_weight, d.deviating_weight, 0.0, 1.0),
            forget_idle_after: self.forget_idle_after.max(1),
            ..self
        }
    }
}

/// A measure of one window beyond its key's baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Deviation {
    /// The partner that sent the traffic.
    pub partner: MeshId,
    /// The topic, or `None` for the partner's traffic as a whole.
    pub topic: Option<String>,
    /// What deviated.
    pub measure: Measure,
    /// The value in the window (per second for the rate, bytes for the size, `0..=1` for the
    /// ratios, a count for signature failures).
    pub observed: f64,
    /// The baseline's mean before this window.
    pub baseline: f64,
    /// The baseline's standard deviation before this window.
    pub sigma: f64,
    /// The value `observed` had to reach: the largest of `mean + k·σ` and the floors (for
    /// signature failures, the burst size).
    pub threshold: f64,
    /// The `k` in force.
    pub k: f64,
    /// Where the window began.
    pub window_start: Instant,
    /// Where the window ended, when the deviation was raised.
    pub at: Instant,
}

impl fmt::Display for Deviation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partner {}", self.partner)?;
        if let Some(topic) = &self.topic {
            write!(f, " topic {topic}")?;
        }
        let (obs, base, k) = (self.observed, self.baseline, number(self.k));
        match self.measure {
            Measure::Rate => write!(
                f,
                ": rate {}/s against a baseline of {}/s (k={k}σ)",
                number(obs),
                number(base)
            ),
            Measure::Size => write!(
                f,
                ": mean size {} B against a baseline of {} B (k={k}σ)",
                number(obs),
                number(base)
            ),
            Measure::RefusalRatio | Measure::ErrorRatio => write!(
                f,
                ": {} {}% against a baseline of {}% (k={k}σ)",
                self.measure,
                number(obs * 100.0),
                number(base * 100.0)
            ),
            Measure::SignatureFailures => write!(
                f,
                ": {} signature failures in one window against a baseline of {} (burst of {})",
                number(obs),
                number(base),
                number(self.threshold)
            ),
        }
    }
}

/// Formats a number for a sentence: whole numbers with thousands separators (`5,210`), others
/// below 10 with one decimal (`0.3`).
fn number(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let rounded = x.round();
    if (x - rounded).abs() >= 0.05 && x.abs() < 10.0 {
        return format!("{x:.1}");
    }
    // `as` saturates; a rate beyond u64 is not a concern for a sentence.
    let digits = (rounded.abs() as u64).to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if rounded < 0.0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A key's baseline of one measure, as [`Detector::baseline`] shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// The weighted mean.
    pub mean: f64,
    /// The weighted standard deviation.
    pub sigma: f64,
    /// Windows folded in (at full weight).
    pub samples: u64,
}

/// Per partner and topic baselines and their deviations; see the module documentation.
///
/// The driver calls [`observe`](Self::observe) for every message from a partner and
/// [`tick`](Self::tick) at [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct Detector {
    config: DetectorConfig,
    partners: HashMap<MeshId, Partner>,
    /// Where the open window began.
    window_start: Instant,
    /// Deviations of closed windows not yet returned by `tick`.
    pending: Vec<Deviation>,
    /// Reused between keys when windows close.
    scratch: Vec<Finding>,
}

impl Detector {
    /// A detector with no baselines whose first window begins at `now`.
    pub fn new(config: DetectorConfig, now: Instant) -> Self {
        Self {
            config: config.into_range(),
            partners: HashMap::new(),
            window_start: now,
            pending: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The configuration in force (brought into range).
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Counts one message from `partner` on `topic`. Closes the windows that ended before `now`
    /// first (their deviations wait for [`tick`](Self::tick)).
    pub fn observe(
        &mut self,
        partner: &MeshId,
        topic: &str,
        observation: Observation,
        now: Instant,
    ) {
        self.advance(now);
        let max_topics = self.config.max_topics_per_partner;
        if let Some(known) = self.partners.get_mut(partner) {
            known.record(topic, observation, max_topics);
            return;
        }
        let mut new = Partner::default();
        new.record(topic, observation, max_topics);
        self.partners.insert(partner.clone(), new);
    }

    /// Counts one observation of `partner`'s traffic as a whole, in no topic's key: what was
    /// refused before any of its messages could be read (a transfer whose signature fails).
    pub fn observe_partner(&mut self, partner: &MeshId, observation: Observation, now: Instant) {
        self.advance(now);
        match self.partners.get_mut(partner) {
            Some(known) => known.overall.window.add(observation),
            None => {
                let mut new = Partner::default();
                new.overall.window.add(observation);
                self.partners.insert(partner.clone(), new);
            }
        }
    }

    /// Closes the windows that ended at or before `now` and returns every deviation raised since
    /// the last call, ordered by window, partner, topic and measure.
    pub fn tick(&mut self, now: Instant) -> Vec<Deviation> {
        self.advance(now);
        let mut out = std::mem::take(&mut self.pending);
        out.sort_by(|a, b| {
            (a.window_start, &a.partner, &a.topic, a.measure).cmp(&(
                b.window_start,
                &b.partner,
                &b.topic,
                b.measure,
            ))
        });
        out
    }

    /// When [`tick`](Self::tick) should next be called: the end of the open window, at once if
    /// deviations are waiting, or `None` when nothing is tracked.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.pending.is_empty() {
            return Some(self.window_start);
        }
        if self.partners.is_empty() {
            return None;
        }
        self.window_start.checked_add(self.config.window)
    }

    /// Drops everything learned about `partner` (after a legitimate change of its traffic, or
    /// when the federation ends); it starts a new warm-up if it sends again.
    pub fn forget(&mut self, partner: &MeshId) {
        self.partners.remove(partner);
    }

    /// The baseline of one measure of a key (`topic: None` for the partner overall), if the key
    /// is tracked.
    pub fn baseline(
        &self,
        partner: &MeshId,
        topic: Option<&str>,
        measure: Measure,
    ) -> Option<Baseline> {
        let known = self.partners.get(partner)?;
        let key = match topic {
            None => &known.overall,
            Some(topic) => known.topics.get(topic)?,
        };
        let ewma = key.ewma(measure);
        Some(Baseline {
            mean: ewma.mean,
            sigma: ewma.sigma(),
            samples: ewma.samples,
        })
    }

    /// How many keys are tracked (each partner overall, plus its topics): the detector's memory.
    pub fn len(&self) -> usize {
        self.partners.values().map(|p| 1 + p.topics.len()).sum()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.partners.is_empty()
    }

    /// Closes every window that ended at or before `now`: the open one with what it counted,
    /// the ones after it as quiet windows.
    fn advance(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.window_start) else {
            return;
        };
        if elapsed < self.config.window {
            return;
        }
        let window = self.config.window.as_nanos();
        let ended = u64::try_from(elapsed.as_nanos() / window).unwrap_or(u64::MAX);
        let closed_start = self.window_start;
        let closed_end = closed_start.checked_add(self.config.window).unwrap_or(now);
        self.close(closed_start, closed_end, ended);
        // The remainder is below the window, itself at most an hour: it fits in u64 nanoseconds.
        let into_open = u64::try_from(elapsed.as_nanos() % window).unwrap_or(0);
        self.window_start = now
            .checked_sub(Duration::from_nanos(into_open))
            .unwrap_or(now);
    }

    /// Closes the window `[start, end)` of every key, then `ended - 1` quiet windows, and
    /// forgets the keys that have been quiet too long.
    fn close(&mut self, start: Instant, end: Instant, ended: u64) {
        let Self {
            config,
            partners,
            pending,
            scratch,
            ..
        } = self;
        let quiet = ended.saturating_sub(1);
        let mut raise = |partner: &MeshId, topic: Option<&String>, findings: &mut Vec<Finding>| {
            pending.extend(findings.drain(..).map(|found| Deviation {
                partner: partner.clone(),
                topic: topic.cloned(),
                measure: found.measure,
                observed: found.observed,
                baseline: found.baseline,
                sigma: found.sigma,
                threshold: found.threshold,
                k: config.k,
                window_start: start,
                at: end,
            }));
        };
        for (partner, known) in partners.iter_mut() {
            known.overall.close(config, scratch);
            known.overall.fold_quiet(quiet, config.alpha);
            raise(partner, None, scratch);
            for (topic, key) in &mut known.topics {
                key.close(config, scratch);
                key.fold_quiet(quiet, config.alpha);
                raise(partner, Some(topic), scratch);
            }
            known
                .topics
                .retain(|_, key| key.quiet < config.forget_idle_after);
        }
        // A topic's observations count in its partner's overall key too, so a partner quiet for
        // long has no topic key left either.
        partners.retain(|_, known| known.overall.quiet < config.forget_idle_after);
    }
}

/// One partner's keys.
#[derive(Debug, Default)]
struct Partner {
    overall: Key,
    topics: HashMap<String, Key>,
}

impl Partner {
    fn record(&mut self, topic: &str, observation: Observation, max_topics: usize) {
        self.overall.window.add(observation);
        if let Some(key) = self.topics.get_mut(topic) {
            key.window.add(observation);
            return;
        }
        if self.topics.len() < max_topics {
            let mut key = Key::default();
            key.window.add(observation);
            self.topics.insert(topic.to_owned(), key);
        }
    }
}

/// A measure beyond its baseline, before it is named with its partner and topic.
#[derive(Debug, Clone, Copy)]
struct Finding {
    measure: Measure,
    observed: f64,
    baseline: f64,
    sigma: f64,
    threshold: f64,
}

/// What a key counted in the open window.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    delivered: u64,
    bytes: u64,
    refused: u64,
    errors: u64,
    sig_failures: u64,
}

impl Window {
    fn add(&mut self, observation: Observation) {
        match observation {
            Observation::Delivered { size } => {
                self.delivered = self.delivered.saturating_add(1);
                self.bytes = self.bytes.saturating_add(size);
            }
            Observation::Refused => self.refused = self.refused.saturating_add(1),
            Observation::SignatureFailure => {
                self.sig_failures = self.sig_failures.saturating_add(1);
            }
            Observation::Error => self.errors = self.errors.saturating_add(1),
        }
    }

    fn total(&self) -> u64 {
        self.delivered
            .saturating_add(self.refused)
            .saturating_add(self.errors)
            .saturating_add(self.sig_failures)
    }
}

/// A partner's or a topic's open window and baselines.
#[derive(Debug, Clone)]
struct Key {
    window: Window,
    rate: Ewma,
    size: Ewma,
    refusal: Ewma,
    error: Ewma,
    sig: Ewma,
    /// The key was made during its first window, which saw only part of its traffic: that
    /// window's rate is neither judged nor learned.
    partial: bool,
    /// Windows in a row without a single observation.
    quiet: u64,
}

impl Default for Key {
    fn default() -> Self {
        Self {
            window: Window::default(),
            rate: Ewma::default(),
            size: Ewma::default(),
            refusal: Ewma::default(),
            error: Ewma::default(),
            sig: Ewma::default(),
            partial: true,
            quiet: 0,
        }
    }
}

impl Key {
    fn ewma(&self, measure: Measure) -> &Ewma {
        match measure {
            Measure::Rate => &self.rate,
            Measure::Size => &self.size,
            Measure::RefusalRatio => &self.refusal,
            Measure::ErrorRatio => &self.error,
            Measure::SignatureFailures => &self.sig,
        }
    }

    /// Judges the open window against the baselines (findings go to `out`), then folds it in.
    fn close(&mut self, config: &DetectorConfig, out: &mut Vec<Finding>) {
        let w = std::mem::take(&mut self.window);
        let total = w.total();
        let warm = config.warmup_windows;
        let rate = (!self.partial).then(|| total as f64 / config.window.as_secs_f64());
        let enough = config.min_messages.max(1);
        let size = (w.delivered >= enough).then(|| w.bytes as f64 / w.delivered as f64);
        let refusal = (total >= enough).then(|| w.refused as f64 / total as f64);
        let error = (total >= enough).then(|| w.errors as f64 / total as f64);
        let sig = w.sig_failures as f64;

        let before = out.len();
        if let Some(rate) = rate
            && self.rate.samples >= warm
        {
            let floor = (config.rate_factor * self.rate.mean).max(config.min_rate);
            out.extend(self.rate.beyond(Measure::Rate, rate, config.k, floor));
        }
        if let Some(size) = size
            && self.size.samples >= warm
        {
            let floor = config.size_factor * self.size.mean;
            out.extend(self.size.beyond(Measure::Size, size, config.k, floor));
        }
        if let Some(refusal) = refusal
            && self.refusal.samples >= warm
            && w.refused >= config.min_refusals
        {
            out.extend(
                self.refusal
                    .beyond(Measure::RefusalRatio, refusal, config.k, 0.0),
            );
        }
        if let Some(error) = error
            && self.error.samples >= warm
            && w.errors >= config.min_errors
        {
            out.extend(self.error.beyond(Measure::ErrorRatio, error, config.k, 0.0));
        }
        if w.sig_failures >= config.sig_failures_burst && w.sig_failures > 0 {
            out.push(Finding {
                measure: Measure::SignatureFailures,
                observed: sig,
                baseline: self.sig.mean,
                sigma: self.sig.sigma(),
                threshold: config.sig_failures_burst as f64,
            });
        }

        let deviating = out.len() > before;
        let pairs = [
            (&mut self.rate, rate),
            (&mut self.size, size),
            (&mut self.refusal, refusal),
            (&mut self.error, error),
            (&mut self.sig, Some(sig)),
        ];
        for (ewma, value) in pairs {
            let Some(value) = value else { continue };
            if deviating {
                ewma.nudge(value, config.alpha * config.deviating_weight);
            } else {
                ewma.fold(value, config.alpha);
            }
        }
        self.partial = false;
        self.quiet = if total == 0 {
            self.quiet.saturating_add(1)
        } else {
            0
        };
    }

    /// Folds `n` windows in which nothing was observed.
    fn fold_quiet(&mut self, n: u64, alpha: f64) {
        if n == 0 {
            return;
        }
        self.rate.fold_zeros(n, alpha);
        self.sig.fold_zeros(n, alpha);
        self.quiet = self.quiet.saturating_add(n);
    }
}

/// An exponentially weighted mean and variance. The `n`-th sample weighs `max(1/n, alpha)`: an
/// exact running mean and (population) variance at first, an EWMA after `1/alpha` samples.
#[derive(Debug, Default, Clone, Copy)]
struct Ewma {
    mean: f64,
    var: f64,
    samples: u64,
}

impl Ewma {
    fn sigma(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }

    fn fold(&mut self, x: f64, alpha: f64) {
        self.samples = self.samples.saturating_add(1);
        let weight = alpha.max(1.0 / self.samples as f64);
        let diff = x - self.mean;
        let step = weight * diff;
        self.mean += step;
        self.var = (1.0 - weight) * (self.var + diff * step);
    }

    /// Moves the mean a little towards `x`, leaving the variance and the sample count alone.
    fn nudge(&mut self, x: f64, weight: f64) {
        if self.samples > 0 {
            self.mean += weight * (x - self.mean);
        }
    }

    /// Folds `n` zeros; in closed form once the weight is `alpha`, so a long gap costs no more
    /// than a short one.
    fn fold_zeros(&mut self, mut n: u64, alpha: f64) {
        while n > 0 && 1.0 / (self.samples.saturating_add(1) as f64) > alpha {
            self.fold(0.0, alpha);
            n -= 1;
        }
        if n == 0 {
            return;
        }
        // Each zero multiplies the mean by (1 - alpha) and sets var = (1 - alpha)(var + alpha·mean²);
        // over n zeros: var_n = d·(var + mean²·(1 - d)) with d = (1 - alpha)^n.
        let d = (1.0 - alpha).powf(n as f64);
        self.var = d * (self.var + self.mean * self.mean * (1.0 - d));
        self.mean *= d;
        self.samples = self.samples.saturating_add(n);
    }

    /// A finding if `x` is beyond `mean + k·σ` and at least `floor`.
    fn beyond(&self, measure: Measure, x: f64, k: f64, floor: f64) -> Option<Finding> {
        let sigma = self.sigma();
        let band = self.mean + k * sigma;
        (x > band && x >= floor).then_some(Finding {
            measure,
            observed: x,
            baseline: self.mean,
            sigma,
            threshold: band.max(floor),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TOPIC: &str = "plant.line-3.temperature";

    fn mesh(name: &str) -> MeshId {
        name.parse().unwrap()
    }

    /// A detector on a virtual clock: window `i` is `[base + i s, base + (i + 1) s)`.
    struct Sim {
        det: Detector,
        base: Instant,
        next: u64,
        rng: u64,
        partner: MeshId,
    }

    impl Sim {
        fn new(config: DetectorConfig) -> Self {
            let base = Instant::now();
            Self {
                det: Detector::new(config, base),
                base,
                next: 0,
                rng: 0x9e37_79b9_7f4a_7c15,
                partner: mesh("supplier-b"),
            }
        }

        fn at(&self, window: u64, frac: f64) -> Instant {
            self.base + Duration::from_secs_f64(window as f64 + frac)
        }

        /// Spreads `observations` over the next window, then ticks at its end.
        fn window(&mut self, observations: &[(Observation, u64)]) -> Vec<Deviation> {
            let n: u64 = observations.iter().map(|(_, count)| count).sum();
            let mut i = 0;
            for &(observation, count) in observations {
                for _ in 0..count {
                    let now = self.at(self.next, i as f64 / (n + 1) as f64);
                    self.det.observe(&self.partner, TOPIC, observation, now);
                    i += 1;
                }
            }
            self.next += 1;
            self.det.tick(self.at(self.next, 0.0))
        }

        /// `n` deliveries of `size` bytes in the next window.
        fn deliver(&mut self, n: u64, size: u64) -> Vec<Deviation> {
            self.window(&[(Observation::Delivered { size }, n)])
        }

        /// `mean` ± `spread`, uniformly (xorshift).
        fn noisy(&mut self, mean: f64, spread: f64) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let unit = (self.rng % 10_000) as f64 / 10_000.0;
            (mean + spread * (2.0 * unit - 1.0)).round() as u64
        }

        /// `windows` windows of `rate` ± 10 % messages of 200 ± 20 bytes; asserts nothing raised.
        fn steady(&mut self, windows: u64, rate: f64) {
            for _ in 0..windows {
                let n = self.noisy(rate, rate / 10.0);
                let size = self.noisy(200.0, 20.0);
                let raised = self.deliver(n, size);
                assert!(raised.is_empty(), "window {}: {raised:?}", self.next - 1);
            }
        }

        fn baseline(&self, topic: Option<&str>, measure: Measure) -> Baseline {
            self.det.baseline(&self.partner, topic, measure).unwrap()
        }
    }

    fn measures(raised: &[Deviation]) -> Vec<(Option<&str>, Measure)> {
        raised
            .iter()
            .map(|d| (d.topic.as_deref(), d.measure))
            .collect()
    }

    #[test]
    fn fifty_fold_traffic_spike_raises_a_rate_deviation() {
        let mut sim = Sim::new(DetectorConfig::default());
        sim.steady(30, 100.0);
        let raised = sim.deliver(5_000, 200);
        assert_eq!(
            measures(&raised),
            [(None, Measure::Rate), (Some(TOPIC), Measure::Rate)]
        );
        let d = &raised[1];
        assert_eq!(d.partner, sim.partner);
        assert_eq!(d.observed, 5_000.0);
        assert!((90.0..110.0).contains(&d.baseline), "{}", d.baseline);
        assert!(d.sigma > 1.0 && d.sigma < 15.0, "{}", d.sigma);
        assert_eq!(d.threshold, 3.0 * d.baseline);
        assert_eq!(d.window_start, sim.at(30, 0.0));
        assert_eq!(d.at, sim.at(31, 0.0));
    }

    #[test]
    fn signature_failure_burst_raises_at_once_without_warm_up() {
        let mut sim = Sim::new(DetectorConfig::default());
        let raised = sim.window(&[(Observation::SignatureFailure, 20)]);
        assert_eq!(
            measures(&raised),
            [
                (None, Measure::SignatureFailures),
                (Some(TOPIC), Measure::SignatureFailures)
            ]
        );
        assert_eq!(raised[0].observed, 20.0);
        assert_eq!(raised[0].threshold, 5.0);
        assert_eq!(raised[0].at, sim.at(1, 0.0));
    }

    #[test]
    fn partner_wide_signature_failures_raise_for_the_partner_alone() {
        let mut sim = Sim::new(DetectorConfig::default());
        let at = sim.at(0, 0.5);
        for _ in 0..5 {
            sim.det
                .observe_partner(&sim.partner, Observation::SignatureFailure, at);
        }
        let raised = sim.det.tick(sim.at(1, 0.0));
        assert_eq!(measures(&raised), [(None, Measure::SignatureFailures)]);
        assert_eq!(sim.det.len(), 1, "no topic key was made");
    }

    #[test]
    fn signature_failures_below_the_burst_raise_nothing() {
        let mut sim = Sim::new(DetectorConfig::default());
        sim.steady(20, 100.0);
        let raised = sim.window(&[
            (Observation::Delivered { size: 200 }, 100),
            (Observation::SignatureFailure, 4),
        ]);
        assert!(raised.is_empty(), "{raised:?}");
        let raised = sim.window(&[(Observation::SignatureFailure, 5)]);
        assert_eq!(raised.len(), 2, "{raised:?}");
    }

    #[test]
    fn slow_ramp_within_noise_raises_nothing_and_is_learned() {
        let mut sim = Sim::new(DetectorConfig::default());
        for i in 0..600 {
            let rate = 100.0 + 900.0 * i as f64 / 600.0;
            sim.steady(1, rate);
        }
        let learned = sim.baseline(Some(TOPIC), Measure::Rate).mean;
        assert!((850.0..1_000.0).contains(&learned), "{learned}");
    }

    #[test]
    fn nothing_more_is_raised_once_a_spike_stops() {
        let mut sim = Sim::new(DetectorConfig::default());
        sim.steady(30, 100.0);
        for _ in 0..5 {
            assert_eq!(sim.deliver(5_000, 200).len(), 2);
        }
        sim.steady(120, 100.0);
        let mean = sim.baseline(None, Measure::Rate).mean;
        assert!(mean < 115.0, "the spike poisoned the baseline: {mean}");
    }

    #[test]
    fn sustained_attack_keeps_raising_for_minutes_then_is_accepted() {
        let mut sim = Sim::new(DetectorConfig::default());
        sim.steady(30, 100.0);
        let mut raising = Vec::new();
        for _ in 0..800 {
            let raised = sim.deliver(5_000, 200);
            raising.push(raised.iter().any(|d| d.topic.is_none()));
        }
        let first_quiet = raising.iter().position(|r| !r).unwrap();
        assert!(
            (360..420).contains(&first_quiet),
            "stopped raising after {first_quiet} windows"
        );
        assert!(raising[first_quiet..].iter().all(|r| !r));
    }

    #[test]
    fn rate_deviations_wait_for_the_warm_up() {
        let mut sim = Sim::new(DetectorConfig::default());
        sim.steady(5, 100.0);
        assert!(sim.deliver(5_000, 200).is_empty());
    }

    #[test]
    fn quiet_baseline_does_not_raise_below_the_rate_floor() {
        let mut sim = Sim::new(DetectorConfig::default());
        for _ in 0..30 {
            assert!(sim.deliver(1, 200).is_empty());
        }
        assert!(sim.deliver(49, 200).is_empty());
        let raised = sim.deliver(60, 200);
        assert_eq!(measures(&raised)[0], (None, Measure::Rate));
        assert_eq!(raised[0].threshold, 50.0);
    }

    #[test]
    fn refusals_raise_only_from_the_floor() {
        let mut sim = Sim::new(DetectorConfig::default());
        sim.steady(30, 100.0);
        let raised = sim.window(&[
            (Observation::Delivered { size: 200 }, 100),
            (Observation::Refused, 9),
        ]);
        assert!(raised.is_empty(), "{raised:?}");
        let raised = sim.window(&[
            (Observation::Delivered { size: 200 }, 100),
            (Observation::Refused, 15),
        ]);
        assert_eq!(
            measures(&raised),
            [
                (None, Measure::RefusalRatio),
                (Some(TOPIC), Measure::RefusalRatio)
            ]
        );
        assert!((raised[0].observed - 15.0 / 115.0).abs() < 1e-12);
    }

    #[test]
    fn errors_raise_an_error_ratio_deviation() {
        let mut sim = Sim::new(DetectorConfig::default());
        sim.steady(30, 100.0);
        let raised = sim.window(&[
            (Observation::Delivered { size: 200 }, 80),
            (Observation::Error, 20),
        ]);
        assert_eq!(measures(&raised)[0], (None, Measure::ErrorRatio));
        assert!((raised[0].observed - 0.2).abs() < 1e-12);
    }

    #[test]
    fn larger_messages_raise_a_size_deviation_from_enough_of_them() {
        let mut sim = Sim::new(DetectorConfig::default());
        sim.steady(30, 100.0);
        assert!(sim.deliver(5, 50_000).is_empty(), "too few to judge");
        let raised = sim.deliver(100, 2_000);
        assert_eq!(
            measures(&raised),
            [(None, Measure::Size), (Some(TOPIC), Measure::Size)]
        );
        assert_eq!(raised[0].observed, 2_000.0);
    }

    #[test]
    fn topics_beyond_the_bound_count_only_in_the_partner_key() {
        let config = DetectorConfig {
            max_topics_per_partner: 4,
            ..DetectorConfig::default()
        };
        let mut sim = Sim::new(config);
        let now = sim.at(0, 0.5);
        for i in 0..10 {
            let topic = format!("t.{i}");
            let partner = sim.partner.clone();
            let seen = Observation::Delivered { size: 10 };
            sim.det.observe(&partner, &topic, seen, now);
        }
        assert_eq!(sim.det.len(), 1 + 4);
        assert!(
            sim.det
                .baseline(&sim.partner, Some("t.9"), Measure::Rate)
                .is_none()
        );
        sim.det.tick(sim.at(2, 0.0));
        // The first, partial window is not learned; the second is a quiet one.
        assert_eq!(sim.baseline(None, Measure::Size).mean, 10.0);
        assert_eq!(sim.baseline(None, Measure::Rate).samples, 1);
    }

    #[test]
    fn forgotten_partner_starts_a_new_warm_up() {
        let mut sim = Sim::new(DetectorConfig::default());
        sim.steady(30, 100.0);
        let partner = sim.partner.clone();
        sim.det.forget(&partner);
        assert!(sim.det.is_empty());
        assert_eq!(sim.det.poll_timeout(), None);
        sim.steady(5, 100.0);
        assert!(sim.deliver(5_000, 200).is_empty());
    }

    #[test]
    fn quiet_windows_fold_zeros_for_the_rate() {
        let mut sim = Sim::new(DetectorConfig::default());
        for _ in 0..60 {
            sim.deliver(100, 200);
        }
        let before = sim.baseline(None, Measure::Rate);
        assert_eq!(before.mean, 100.0);
        // The driver wakes late: ten windows end at once, nine of them quiet.
        let raised = sim.det.tick(sim.at(70, 0.5));
        assert!(raised.is_empty());
        let after = sim.baseline(None, Measure::Rate);
        let expected = 100.0 * 0.98f64.powi(10);
        assert!((after.mean - expected).abs() < 1e-9, "{}", after.mean);
        assert_eq!(after.samples, before.samples + 10);
        assert_eq!(
            sim.baseline(None, Measure::Size).samples,
            before.samples + 1
        );
        assert_eq!(sim.det.poll_timeout(), Some(sim.at(71, 0.0)));
    }

    #[test]
    fn closed_form_of_quiet_windows_matches_folding_them_one_by_one() {
        let mut stepwise = Ewma::default();
        for x in [90.0, 110.0, 100.0, 95.0, 105.0] {
            stepwise.fold(x, 0.02);
        }
        let mut closed = stepwise;
        for _ in 0..500 {
            stepwise.fold(0.0, 0.02);
        }
        closed.fold_zeros(500, 0.02);
        assert_eq!(closed.samples, stepwise.samples);
        assert!((closed.mean - stepwise.mean).abs() < 1e-9);
        assert!((closed.var - stepwise.var).abs() < 1e-6 * stepwise.var.max(1.0));
    }

    #[test]
    fn observation_after_the_window_end_closes_the_window_first() {
        let mut sim = Sim::new(DetectorConfig::default());
        sim.steady(30, 100.0);
        let partner = sim.partner.clone();
        let seen = Observation::Delivered { size: 200 };
        for i in 0..5_000 {
            let now = sim.at(30, f64::from(i) / 5_001.0);
            sim.det.observe(&partner, TOPIC, seen, now);
        }
        sim.det.observe(&partner, TOPIC, seen, sim.at(31, 0.1));
        assert_eq!(sim.det.poll_timeout(), Some(sim.at(31, 0.0)));
        let raised = sim.det.tick(sim.at(31, 0.2));
        assert_eq!(raised.len(), 2, "{raised:?}");
        assert_eq!(raised[0].window_start, sim.at(30, 0.0));
    }

    #[test]
    fn keys_quiet_for_long_are_forgotten() {
        let config = DetectorConfig {
            forget_idle_after: 50,
            ..DetectorConfig::default()
        };
        let mut sim = Sim::new(config);
        sim.steady(20, 100.0);
        let partner = sim.partner.clone();
        let other = "plant.line-4.pressure";
        sim.det
            .observe(&partner, other, Observation::Refused, sim.at(20, 0.5));
        assert_eq!(sim.det.len(), 3);
        sim.det.tick(sim.at(70, 0.0));
        assert_eq!(sim.det.len(), 2, "the topic quiet for 50 windows is gone");
        sim.det.tick(sim.at(71, 0.0));
        assert_eq!(sim.det.len(), 0);
        assert_eq!(sim.det.poll_timeout(), None);
    }

    #[test]
    fn deviations_are_returned_in_order() {
        let mut sim = Sim::new(DetectorConfig::default());
        let (a, b) = (mesh("a"), mesh("b"));
        for partner in [&b, &a] {
            for topic in ["z", "y"] {
                for _ in 0..6 {
                    let now = sim.at(0, 0.5);
                    sim.det
                        .observe(partner, topic, Observation::SignatureFailure, now);
                }
            }
        }
        let raised = sim.det.tick(sim.at(1, 0.0));
        let order: Vec<_> = raised
            .iter()
            .map(|d| (d.partner.as_str(), d.topic.as_deref()))
            .collect();
        assert_eq!(
            order,
            [
                ("a", None),
                ("a", Some("y")),
                ("a", Some("z")),
                ("b", None),
                ("b", Some("y")),
                ("b", Some("z"))
            ]
        );
    }

    fn deviation(measure: Measure, topic: Option<&str>, observed: f64, baseline: f64) -> Deviation {
        let now = Instant::now();
        Deviation {
            partner: mesh("supplier-b"),
            topic: topic.map(str::to_owned),
            measure,
            observed,
            baseline,
            sigma: 9.5,
            threshold: 5.0,
            k: 4.0,
            window_start: now,
            at: now,
        }
    }

    #[test]
    fn deviation_reads_as_a_sentence() {
        let cases = [
            (
                deviation(Measure::Rate, Some(TOPIC), 5_210.0, 98.2),
                "partner supplier-b topic plant.line-3.temperature: rate 5,210/s against a \
                 baseline of 98/s (k=4σ)",
            ),
            (
                deviation(Measure::Size, None, 1_048_576.0, 212.0),
                "partner supplier-b: mean size 1,048,576 B against a baseline of 212 B (k=4σ)",
            ),
            (
                deviation(Measure::RefusalRatio, None, 0.25, 0.003),
                "partner supplier-b: refusal ratio 25% against a baseline of 0.3% (k=4σ)",
            ),
            (
                deviation(Measure::SignatureFailures, None, 20.0, 0.0),
                "partner supplier-b: 20 signature failures in one window against a baseline \
                 of 0 (burst of 5)",
            ),
        ];
        for (d, sentence) in cases {
            assert_eq!(d.to_string(), sentence);
        }
    }

    #[test]
    fn numbers_are_grouped_or_given_one_decimal() {
        assert_eq!(number(0.3), "0.3");
        assert_eq!(number(12.0), "12");
        assert_eq!(number(98.4), "98");
        assert_eq!(number(999.6), "1,000");
        assert_eq!(number(1_234_567.0), "1,234,567");
        assert_eq!(number(-4_200.0), "-4,200");
    }

    #[test]
    fn config_out_of_range_is_brought_into_range() {
        let config = DetectorConfig {
            window: Duration::ZERO,
            alpha: f64::NAN,
            k: -1.0,
            deviating_weight: 7.0,
            forget_idle_after: 0,
            ..DetectorConfig::default()
        };
        let det = Detector::new(config, Instant::now());
        let c = det.config();
        assert_eq!(c.window, Duration::from_millis(1));
        assert_eq!(c.alpha, 0.02);
        assert_eq!(c.k, 0.0);
        assert_eq!(c.deviating_weight, 1.0);
        assert_eq!(c.forget_idle_after, 1);
    }

    fn observation() -> impl Strategy<Value = Observation> {
        prop_oneof![
            (0u64..=u64::MAX).prop_map(|size| Observation::Delivered { size }),
            Just(Observation::Refused),
            Just(Observation::SignatureFailure),
            Just(Observation::Error),
        ]
    }

    proptest! {
        #[test]
        fn random_observations_never_panic_and_stay_bounded(
            steps in prop::collection::vec(
                (0usize..3, 0usize..8, observation(), 0u64..3_000, any::<bool>()),
                0..400,
            ),
            window_ms in 1u64..2_000,
        ) {
            let config = DetectorConfig {
                window: Duration::from_millis(window_ms),
                max_topics_per_partner: 4,
                warmup_windows: 2,
                ..DetectorConfig::default()
            };
            let base = Instant::now();
            let mut det = Detector::new(config, base);
            let partners = [mesh("a"), mesh("b"), mesh("c")];
            let mut now = base;
            for (p, t, seen, advance_ms, tick) in steps {
                now += Duration::from_millis(advance_ms);
                det.observe(&partners[p], &format!("t.{t}"), seen, now);
                prop_assert!(det.len() <= 3 * (1 + 4));
                if tick {
                    for d in det.tick(now) {
                        prop_assert!(d.at > d.window_start && d.at <= now);
                        prop_assert!(d.observed.is_finite() && d.observed >= d.threshold);
                        prop_assert!(d.baseline.is_finite() && d.sigma.is_finite());
                        let _sentence = d.to_string();
                    }
                    if let Some(next) = det.poll_timeout() {
                        prop_assert!(next > now);
                    }
                }
            }
        }
    }
}
