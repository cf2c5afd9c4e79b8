//! The one clock of a running node: every time the service reads, waits for or passes into the
//! core comes from here, so that tests can move time by hand.
//!
//! [`Clock::system`] follows the machine's clocks. [`Clock::manual`] stands still until its
//! [`ManualClock`] is advanced; every wait on it ([`Clock::sleep_until`], [`Clock::sleep`])
//! completes once the clock has been moved past its deadline — not tokio's auto-advancing paused
//! time, which would race the journal's writer thread and real sockets.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshfed_proto::envelope::Timestamp;
use tokio::sync::watch;

/// The node's clock; cheap to clone.
#[derive(Clone, Debug)]
pub struct Clock(Source);

#[derive(Clone, Debug)]
enum Source {
    System,
    Manual(Arc<Manual>),
}

/// A clock that moves only when told.
#[derive(Debug)]
struct Manual {
    /// The wall time and the monotonic instant it started at.
    wall: SystemTime,
    start: Instant,
    /// How far it has been advanced.
    offset: watch::Sender<Duration>,
}

/// The hand that moves a [`Clock::manual`].
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Manual>);

impl ManualClock {
    /// Moves the clock forward by `by`; every wait whose deadline is now past completes.
    pub fn advance(&self, by: Duration) {
        self.0.offset.send_modify(|o| *o += by);
    }
}

impl Clock {
    /// The machine's clocks.
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock standing at `wall` until its hand advances it.
    pub fn manual(wall: SystemTime) -> (Self, ManualClock) {
        let manual = Arc::new(Manual {
            wall,
            start: Instant::now(),
            offset: watch::channel(Duration::ZERO).0,
        });
        (Self(Source::Manual(manual.clone())), ManualClock(manual))
    }

    /// Monotonic time, for timers and the core's state machines.
    pub fn instant(&self) -> Instant {
        match &self.0 {
            Source::System => Instant::now(),
            Source::Manual(m) => m.start + *m.offset.borrow(),
        }
    }

    /// Wall time.
    pub fn wall(&self) -> SystemTime {
        match &self.0 {
            Source::System => SystemTime::now(),
            Source::Manual(m) => m.wall + *m.offset.borrow(),
        }
    }

    /// Wall time as a protocol timestamp (milliseconds since the Unix epoch).
    pub fn now(&self) -> Timestamp {
        timestamp(self.wall())
    }

    /// Wall time in microseconds since the Unix epoch (stream epochs, heartbeat stamps).
    pub fn micros(&self) -> u64 {
        let d = self.wall().duration_since(UNIX_EPOCH).unwrap_or_default();
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
    }

    /// The wall time at which the monotonic `at` was (or will be).
    pub fn wall_at(&self, at: Instant) -> SystemTime {
        let now = self.instant();
        let wall = self.wall();
        if at <= now {
            wall - (now - at)
        } else {
            wall + (at - now)
        }
    }

    /// Waits until the monotonic `at`.
    pub async fn sleep_until(&self, at: Instant) {
        match &self.0 {
            Source::System => tokio::time::sleep_until(at.into()).await,
            Source::Manual(m) => {
                let mut moved = m.offset.subscribe();
                while m.start + *moved.borrow_and_update() < at {
                    if moved.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }

    /// Waits for `d`.
    pub async fn sleep(&self, d: Duration) {
        self.sleep_until(self.instant() + d).await;
    }

    /// Waits until the protocol time `at`, or forever when there is nothing to wake for.
    pub async fn sleep_until_timestamp(&self, at: Option<Timestamp>) {
        match at {
            Some(at) => {
                let ms = at.0.saturating_sub(self.now().0);
                self.sleep(Duration::from_millis(ms)).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// RFC 3339 for a timestamp (milliseconds since the epoch, as a count when out of range).
pub fn rfc3339(t: Timestamp) -> String {
    let nanos = i128::from(t.0) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{}ms", t.0))
}

/// A wall time as a protocol timestamp (milliseconds since the Unix epoch).
pub fn timestamp(wall: SystemTime) -> Timestamp {
    let ms = wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_only_when_advanced_past_their_deadline() {
        let (clock, hand) = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_000));
        assert_eq!(clock.now(), Timestamp(1_000_000));
        let deadline = clock.instant() + Duration::from_secs(5);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(deadline).await }
        });
        hand.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke before its deadline");
        hand.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .map_or_else(
                |_| panic!("did not wake"),
                |r| r.map_or_else(|e| panic!("{e}"), |()| ()),
            );
        assert_eq!(clock.now(), Timestamp(1_005_000));
        let earlier = clock.instant() - Duration::from_secs(2);
        assert_eq!(
            clock.wall_at(earlier),
            UNIX_EPOCH + Duration::from_secs(1_003)
        );
    }
}
