//! The door of each listener: what a connection that has not proved who it is may cost the node.
//!
//! A listener admits at most `[connections] max_unauthenticated` connections that have not
//! authenticated yet (on the federation port: TLS and federation handshakes in progress; on the
//! API: connections that have not sent a request with a valid token). One more is closed at
//! once. The limit is per listener, not per address: every local client comes from 127.0.0.1.
//!
//! Every refusal is counted in `/metrics` by listener and reason. The log gets the first
//! [`FULL_LINES`] refusals of an interval in full, and the rest as one summary line at the end
//! of the interval: a few refused peers are each explained, but anyone may connect, so no one
//! may write a log line per connection.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::{ListenerLabel, ListenerReasonLabels, Metrics};

/// Refusals per listener and interval logged in full; the rest are summed up.
const FULL_LINES: u32 = 5;

/// Which listener a door guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The mutual-TLS federation port.
    Federation,
    /// The admin and messaging API.
    Api,
}

impl Listener {
    fn label(self) -> &'static str {
        match self {
            Self::Federation => "federation",
            Self::Api => "api",
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a connection was refused before it authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Refused {
    /// The listener already holds its most unauthenticated connections.
    Capacity,
    /// The TLS handshake failed (no meshfed client, an untrusted certificate, an alert).
    Tls,
    /// A handshake did not finish in time.
    Timeout,
    /// The federation handshake failed after TLS.
    Handshake,
    /// An API request without a valid bearer token.
    Token,
    /// The socket failed.
    Io,
}

impl Refused {
    /// Every reason, as `/metrics` lists them from the start.
    const ALL: [Self; 6] = [
        Self::Capacity,
        Self::Tls,
        Self::Timeout,
        Self::Handshake,
        Self::Token,
        Self::Io,
    ];

    /// The reason's label in `/metrics` and the log.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Capacity => "capacity",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Handshake => "handshake",
            Self::Token => "token",
            Self::Io => "io",
        }
    }
}

/// The door of one listener.
pub(crate) struct Door {
    listener: Listener,
    max: usize,
    permits: Arc<Semaphore>,
    tally: Mutex<Tally>,
    refused: Family<ListenerReasonLabels, Counter>,
    open: Gauge,
    idle_closed: Counter,
}

/// The refusals of the current interval.
#[derive(Default)]
struct Tally {
    /// Refusals not logged in full, by reason.
    unlogged: BTreeMap<Refused, u64>,
    /// Refusals logged in full this interval.
    logged: u32,
}

/// A connection that has not authenticated yet: it holds one of its listener's places until it
/// authenticates (drop it then) or closes.
pub(crate) struct Unauthenticated {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Door {
    /// The door of `listener`, holding at most `max` unauthenticated connections.
    pub(crate) fn new(listener: Listener, max: usize, metrics: &Metrics) -> Arc<Self> {
        let refused = metrics.connections_refused.clone();
        for reason in Refused::ALL {
            drop(refused.get_or_create(&ListenerReasonLabels {
                listener: listener.label(),
                reason: reason.label(),
            }));
        }
        let label = ListenerLabel {
            listener: listener.label(),
        };
        Arc::new(Self {
            listener,
            max,
            permits: Arc::new(Semaphore::new(max)),
            tally: Mutex::new(Tally::default()),
            refused,
            open: metrics
                .connections_unauthenticated
                .get_or_create(&label)
                .clone(),
            idle_closed: metrics
                .connections_idle_closed
                .get_or_create(&label)
                .clone(),
        })
    }

    /// A place for a new connection from `remote`, or `None` when every place is taken (the
    /// refusal is counted and logged; the caller closes the connection).
    pub(crate) fn admit(&self, remote: SocketAddr) -> Option<Unauthenticated> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.open.inc();
                Some(Unauthenticated {
                    _permit: permit,
                    open: self.open.clone(),
                })
            }
            Err(_) => {
                let max = self.max;
                self.refuse(
                    Refused::Capacity,
                    remote,
                    &format_args!(
                        "{max} connections are already waiting to authenticate \
                         ([connections] max_unauthenticated)"
                    ),
                );
                None
            }
        }
    }

    /// Counts a connection closed for being idle.
    pub(crate) fn closed_idle(&self) {
        self.idle_closed.inc();
    }

    /// Counts and logs (or tallies) one refusal.
    pub(crate) fn refuse(&self, reason: Refused, remote: SocketAddr, error: &dyn fmt::Display) {
        self.refused
            .get_or_create(&ListenerReasonLabels {
                listener: self.listener.label(),
                reason: reason.label(),
            })
            .inc();
        let first = {
            let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
            if tally.logged < FULL_LINES {
                tally.logged += 1;
                true
            } else {
                *tally.unlogged.entry(reason).or_default() += 1;
                false
            }
        };
        if first {
            tracing::warn!(
                listener = %self.listener, %remote, reason = reason.label(), %error,
                "refused an unauthenticated connection"
            );
        }
    }

    /// Logs what was tallied since the last summary, if anything, and starts a new interval.
    fn summarise(&self, interval: Duration) {
        let tally = std::mem::take(&mut *self.tally.lock().unwrap_or_else(|e| e.into_inner()));
        let total: u64 = tally.unlogged.values().sum();
        if total == 0 {
            return;
        }
        let by_reason = tally
            .unlogged
            .iter()
            .map(|(reason, n)| format!("{}={n}", reason.label()))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::warn!(
            listener = %self.listener, refused = total, by_reason = by_reason.as_str(),
            "refused {total} more unauthenticated connections on the {} listener in the last {} \
             (meshfed_connections_refused_total counts every one)",
            self.listener,
            humantime::format_duration(interval)
        );
    }

    /// Writes a summary line every `interval` until `stop`, then a last one.
    pub(crate) async fn summaries(
        self: Arc<Self>,
        interval: Duration,
        clock: Clock,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = clock.sleep(interval) => self.summarise(interval),
            }
        }
        self.summarise(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn door(max: usize) -> (Arc<Door>, Metrics) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let journal = meshfed_store::Journal::open(
            &dir.path().join("store.db"),
            meshfed_store::JournalConfig::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let metrics = Metrics::new(Arc::new(journal));
        (Door::new(Listener::Api, max, &metrics), metrics)
    }

    fn remote() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40000))
    }

    #[test]
    fn places_are_given_back_when_a_connection_authenticates_or_closes() {
        let (door, metrics) = door(2);
        let a = door.admit(remote());
        let b = door.admit(remote());
        assert!(a.is_some() && b.is_some());
        assert!(door.admit(remote()).is_none(), "a third place was given");
        drop(a);
        assert!(
            door.admit(remote()).is_some(),
            "the freed place was not given"
        );
        let text = metrics.encode();
        assert!(
            text.contains(
                "meshfed_connections_refused_total{listener=\"api\",reason=\"capacity\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("meshfed_connections_unauthenticated{listener=\"api\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn refusals_beyond_the_first_few_of_an_interval_are_summed_up_by_reason() {
        let (door, _metrics) = door(1);
        for _ in 0..FULL_LINES + 3 {
            door.refuse(Refused::Tls, remote(), &"bad");
        }
        door.refuse(Refused::Token, remote(), &"bad");
        {
            let tally = door.tally.lock().unwrap_or_else(|e| e.into_inner());
            assert_eq!(tally.logged, FULL_LINES);
            assert_eq!(tally.unlogged.get(&Refused::Tls), Some(&3));
            assert_eq!(tally.unlogged.get(&Refused::Token), Some(&1));
        }
        door.summarise(Duration::from_secs(10));
        let tally = door.tally.lock().unwrap_or_else(|e| e.into_inner());
        assert!(tally.logged == 0 && tally.unlogged.is_empty());
    }
}
