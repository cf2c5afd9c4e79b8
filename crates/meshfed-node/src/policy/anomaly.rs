//! The policy file's `[anomaly]` section (DESIGN §3.9, §3.13): how this mesh watches what each
//! partner sends and what it does when the traffic deviates from its baseline. This mesh's own
//! setting, never negotiated: a partner does not learn it.
//!
//! ```toml
//! [anomaly]
//! action = "breaker"        # record | breaker (default) | suspend
//! window = "1s"             # the length of a measuring window
//! k = 4                     # standard deviations above the baseline that deviate
//! min_rate = 50             # messages per second below which a rate never deviates
//! warmup_windows = 10       # windows learned from before rates, sizes and ratios are judged
//! sig_failures_burst = 5    # signature failures in one window that deviate at once
//! open_for = "5s"           # how long a tripped breaker holds the partner's traffic
//! max_open = "5m"           # the longest, doubling each time it trips again while half-open
//! probes_to_close = 3       # clean windows (or probes) in a row that close it again
//! ```
//!
//! Every key is optional; the defaults are [`DetectorConfig::default`] and
//! [`BreakerConfig::default`].

use std::ops::RangeInclusive;
use std::time::Duration;

use meshfed_audit::anomaly::DetectorConfig;
use meshfed_audit::breaker::BreakerConfig;
use serde::Deserialize;
use toml::Spanned;

use super::{Checker, Integer, Text};

/// The shortest and the longest measuring window.
const WINDOW: RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(3600);
/// The shortest and the longest open time.
const OPEN: RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(86_400);

/// What the node does when a partner's traffic deviates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AnomalyAction {
    /// A log line, a metric (and the audit record); traffic keeps flowing.
    Record,
    /// As `Record`, and the partner's circuit breaker trips: its traffic is held (queued,
    /// never dropped) until the breaker closes again.
    #[default]
    Breaker,
    /// As `Record`, and the federation is suspended, as an operator would; an operator
    /// resumes it.
    Suspend,
}

impl AnomalyAction {
    /// The action as the policy file and the logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Breaker => "breaker",
            Self::Suspend => "suspend",
        }
    }
}

impl std::fmt::Display for AnomalyAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[anomaly]` section, read: the action and the detector's and breakers' settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnomalyPolicy {
    /// What a deviation does.
    pub action: AnomalyAction,
    /// How partners' traffic is measured and judged.
    pub detector: DetectorConfig,
    /// How each partner's breaker opens and closes.
    pub breaker: BreakerConfig,
}

// Reflexive: the only floats (`k`, `min_rate` and the detector's fixed defaults) are finite
// numbers, since parsing refuses anything else.
impl Eq for AnomalyPolicy {}

/// A number as TOML writes it: `4` or `4.5`.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
pub(super) enum Number {
    Integer(i64),
    Float(f64),
}

impl Number {
    #[expect(
        clippy::cast_precision_loss,
        reason = "a policy's integers are far below 2^53"
    )]
    fn value(self) -> f64 {
        match self {
            Self::Integer(i) => i as f64,
            Self::Float(f) => f,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAnomaly {
    action: Text,
    window: Text,
    k: Option<Spanned<Number>>,
    min_rate: Option<Spanned<Number>>,
    warmup_windows: Integer,
    sig_failures_burst: Integer,
    open_for: Text,
    max_open: Text,
    probes_to_close: Integer,
}

impl Checker<'_> {
    /// The `[anomaly]` section; each wrong value reported where it is, its default kept.
    pub(super) fn anomaly(&mut self, raw: RawAnomaly) -> AnomalyPolicy {
        let d = DetectorConfig::default();
        let b = BreakerConfig::default();
        let action = raw
            .action
            .map_or(AnomalyAction::default(), |t| match t.get_ref().as_str() {
                "record" => AnomalyAction::Record,
                "breaker" => AnomalyAction::Breaker,
                "suspend" => AnomalyAction::Suspend,
                other => {
                    self.problem(
                        &t.span(),
                        format!(
                            "anomaly.action = {other:?}: unknown; one of record, breaker, suspend"
                        ),
                    );
                    AnomalyAction::default()
                }
            });
        let window = self.duration("anomaly.window", raw.window.as_ref(), &WINDOW, d.window);
        let k = self.number("anomaly.k", raw.k, 0.0..=1000.0, d.k);
        let min_rate = self.number("anomaly.min_rate", raw.min_rate, 0.0..=1e9, d.min_rate);
        let warmup_windows = self.integer(
            "anomaly.warmup_windows",
            &raw.warmup_windows,
            1..=1_000_000,
            d.warmup_windows,
        );
        let sig_failures_burst = self.integer(
            "anomaly.sig_failures_burst",
            &raw.sig_failures_burst,
            1..=1_000_000,
            d.sig_failures_burst,
        );
        let base_open = self.duration(
            "anomaly.open_for",
            raw.open_for.as_ref(),
            &OPEN,
            b.base_open,
        );
        let max_open = self.duration("anomaly.max_open", raw.max_open.as_ref(), &OPEN, b.max_open);
        if let Some(raw_max) = &raw.max_open
            && max_open < base_open
        {
            self.problem(
                &raw_max.span(),
                format!(
                    "anomaly.max_open = {:?} is shorter than anomaly.open_for ({})",
                    raw_max.get_ref(),
                    humantime::format_duration(base_open)
                ),
            );
        }
        let probes_to_close = self.integer(
            "anomaly.probes_to_close",
            &raw.probes_to_close,
            1..=10_000,
            b.probes_to_close,
        );
        AnomalyPolicy {
            action,
            detector: DetectorConfig {
                window,
                k,
                min_rate,
                warmup_windows,
                sig_failures_burst,
                ..d
            },
            breaker: BreakerConfig {
                base_open,
                max_open,
                probes_to_close,
                ..b
            },
        }
    }

    /// A duration (`"100ms"`, `"5s"`) within `range`; `default` when absent or wrong.
    fn duration(
        &mut self,
        key: &str,
        raw: Option<&Spanned<String>>,
        range: &RangeInclusive<Duration>,
        default: Duration,
    ) -> Duration {
        let Some(raw) = raw else { return default };
        let bounds = || {
            format!(
                "from {} to {}",
                humantime::format_duration(*range.start()),
                humantime::format_duration(*range.end())
            )
        };
        let why = match humantime::parse_duration(raw.get_ref()) {
            Ok(d) if range.contains(&d) => return d,
            Ok(_) => bounds(),
            Err(e) => format!("{e} (write it like \"100ms\" or \"5s\")"),
        };
        self.problem(&raw.span(), format!("{key} = {:?}: {why}", raw.get_ref()));
        default
    }

    /// A finite number within `range`; `default` when absent or wrong.
    fn number(
        &mut self,
        key: &str,
        raw: Option<Spanned<Number>>,
        range: RangeInclusive<f64>,
        default: f64,
    ) -> f64 {
        let Some(raw) = raw else { return default };
        let v = raw.get_ref().value();
        if v.is_finite() && range.contains(&v) {
            return v;
        }
        self.problem(
            &raw.span(),
            format!(
                "{key} = {v}: must be a number from {} to {}",
                range.start(),
                range.end()
            ),
        );
        default
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::parse;

    fn anomaly(text: &str) -> AnomalyPolicy {
        parse(text, Path::new("policy.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .anomaly
    }

    #[test]
    fn without_the_section_the_defaults_hold() {
        let a = anomaly("");
        assert_eq!(a.action, AnomalyAction::Breaker);
        assert_eq!(a.detector, DetectorConfig::default());
        assert_eq!(a.breaker, BreakerConfig::default());
    }

    #[test]
    fn the_documented_example_reads_as_the_defaults_it_names() {
        let doc = include_str!("anomaly.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        assert_eq!(anomaly(&example), AnomalyPolicy::default());
    }

    #[test]
    fn every_key_maps_to_the_detector_or_the_breaker() {
        let a = anomaly(
            "[anomaly]\naction = \"suspend\"\nwindow = \"100ms\"\nk = 2.5\nmin_rate = 5\nwarmup_windows = 3\nsig_failures_burst = 2\nopen_for = \"500ms\"\nmax_open = \"2s\"\nprobes_to_close = 1\n",
        );
        assert_eq!(a.action, AnomalyAction::Suspend);
        assert_eq!(
            a.detector,
            DetectorConfig {
                window: Duration::from_millis(100),
                k: 2.5,
                min_rate: 5.0,
                warmup_windows: 3,
                sig_failures_burst: 2,
                ..DetectorConfig::default()
            }
        );
        assert_eq!(
            a.breaker,
            BreakerConfig {
                base_open: Duration::from_millis(500),
                max_open: Duration::from_secs(2),
                probes_to_close: 1,
                ..BreakerConfig::default()
            }
        );
        assert_eq!(
            anomaly("[anomaly]\naction = \"record\"\n").action,
            AnomalyAction::Record
        );
    }

    #[test]
    fn every_wrong_value_is_named_with_its_line_and_column() {
        let text = "[anomaly]\naction = \"panic\"\nwindow = \"1ms\"\nk = -1\nmin_rate = \"lots\"\nwarmup_windows = 0\nsig_failures_burst = -3\nopen_for = \"soon\"\nmax_open = \"1h\"\nprobes_to_close = 0\n";
        let err = parse(text, Path::new("policy.toml")).unwrap_err();
        let lines: Vec<String> = err.to_string().lines().map(str::to_owned).collect();
        // A value of the wrong type stops at its place, as any TOML shape error does.
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].starts_with("policy.toml:5:12: "), "{lines:#?}");
        let text = text.replace("min_rate = \"lots\"", "min_rate = inf");
        let err = parse(&text, Path::new("policy.toml"))
            .unwrap_err()
            .to_string();
        let want = [
            "policy.toml:2:10: anomaly.action = \"panic\": unknown; one of record, breaker, suspend",
            "policy.toml:3:10: anomaly.window = \"1ms\": from 10ms to 1h",
            "policy.toml:4:5: anomaly.k = -1: must be a number from 0 to 1000",
            "policy.toml:5:12: anomaly.min_rate = inf: must be a number from 0 to 1000000000",
            "policy.toml:6:18: anomaly.warmup_windows = 0: must be from 1 to 1000000",
            "policy.toml:7:22: anomaly.sig_failures_burst = -3: must be from 1 to 1000000",
            "policy.toml:8:12: anomaly.open_for = \"soon\": ",
            "policy.toml:10:19: anomaly.probes_to_close = 0: must be from 1 to 10000",
        ];
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), want.len(), "{err}");
        for (line, want) in lines.iter().zip(want) {
            assert!(
                line.starts_with(want),
                "{line:?} does not start with {want:?}\n{err}"
            );
        }
    }

    #[test]
    fn max_open_below_open_for_is_refused_where_it_is_written() {
        let err = parse(
            "[anomaly]\nopen_for = \"10s\"\nmax_open = \"5s\"\n",
            Path::new("policy.toml"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "policy.toml:3:12: anomaly.max_open = \"5s\" is shorter than anomaly.open_for (10s)"
        );
    }

    #[test]
    fn an_unknown_key_names_its_place() {
        let err = parse("[anomaly]\nwindows = \"1s\"\n", Path::new("policy.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("policy.toml:2:1: unknown field `windows`"),
            "{err}"
        );
    }
}
