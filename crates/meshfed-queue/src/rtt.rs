//! The retransmission timeout, adapted to measured round trips as RFC 6298 computes it.

use std::time::Duration;

/// Bounds of the retransmission timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtoConfig {
    /// The timeout before any round trip has been measured. Default 1 s (RFC 6298).
    pub initial: Duration,
    /// The smallest timeout ever used. Default 200 ms (RFC 6298 says 1 s for TCP; a federation
    /// link's acknowledgements are not delayed, so less is safe).
    pub min: Duration,
    /// The largest timeout, also the cap of exponential back-off. Default 60 s.
    pub max: Duration,
}

impl Default for RtoConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            min: Duration::from_millis(200),
            max: Duration::from_secs(60),
        }
    }
}

/// Smoothed round-trip time and its variation; the retransmission timeout derived from them,
/// doubled for each timeout in a row (back-off) until a new measurement arrives.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    config: RtoConfig,
    srtt: Option<Duration>,
    rttvar: Duration,
    backoff: u32,
}

/// Clock granularity: timestamps are in milliseconds.
const GRANULARITY: Duration = Duration::from_millis(1);

impl RttEstimator {
    /// An estimator with no measurement yet.
    pub fn new(config: RtoConfig) -> Self {
        Self {
            config,
            srtt: None,
            rttvar: Duration::ZERO,
            backoff: 0,
        }
    }

    /// The smoothed round-trip time, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Takes one round-trip measurement (only of messages sent once: Karn's rule) and ends any
    /// back-off.
    pub fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        self.backoff = 0;
    }

    /// Doubles the timeout after a retransmission timeout fired.
    pub fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1).min(16);
    }

    /// Ends back-off without a measurement (e.g. on a new link).
    pub fn reset_back_off(&mut self) {
        self.backoff = 0;
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        let base = match self.srtt {
            None => self.config.initial,
            Some(srtt) => srtt + (self.rttvar * 4).max(GRANULARITY),
        };
        let base = base.clamp(self.config.min, self.config.max);
        base.saturating_mul(1 << self.backoff).min(self.config.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rto_starts_at_the_initial_value() {
        let r = RttEstimator::new(RtoConfig::default());
        assert_eq!(r.rto(), ms(1_000));
        assert_eq!(r.srtt(), None);
    }

    #[test]
    fn first_sample_sets_srtt_and_rto_of_three_rtts() {
        let mut r = RttEstimator::new(RtoConfig::default());
        r.sample(ms(100));
        assert_eq!(r.srtt(), Some(ms(100)));
        // srtt + 4 * rtt/2
        assert_eq!(r.rto(), ms(300));
    }

    #[test]
    fn steady_samples_shrink_the_timeout_to_the_floor() {
        let mut r = RttEstimator::new(RtoConfig::default());
        for _ in 0..50 {
            r.sample(ms(20));
        }
        assert_eq!(r.srtt(), Some(ms(20)));
        assert_eq!(r.rto(), ms(200), "clamped to the minimum");
    }

    #[test]
    fn back_off_doubles_up_to_the_maximum_and_a_sample_ends_it() {
        let mut r = RttEstimator::new(RtoConfig::default());
        r.sample(ms(100));
        r.back_off();
        assert_eq!(r.rto(), ms(600));
        for _ in 0..20 {
            r.back_off();
        }
        assert_eq!(r.rto(), Duration::from_secs(60));
        r.sample(ms(100));
        assert!(r.rto() < ms(600));
    }
}
