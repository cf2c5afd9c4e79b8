//! What each connector is doing, as `connector list`, `/readyz` and `/metrics` show it: its
//! connection to the bus and its counts. The connectors write it; the API reads it.

use std::sync::Mutex;
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::connector::{Bus, ConnectorConfig};
use crate::metrics::{ConnectorDirectionLabels, ConnectorLabel, Metrics};

/// A connector's connection to its bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Connection {
    /// Not connected yet, or reconnecting after `last_error`.
    Connecting {
        /// Why the last attempt or connection failed.
        last_error: Option<String>,
    },
    /// Connected.
    Connected,
    /// The gateway is stopping.
    Stopped,
}

/// The counts of one connector; shared with its `/metrics` series.
#[derive(Debug, Clone)]
pub(crate) struct Counts {
    /// Messages taken from the bus and accepted into the federation.
    pub(crate) exported: Counter,
    /// Federation messages the bus accepted.
    pub(crate) imported: Counter,
    /// Messages of the bus that fit no rule (or could not be written as a federation topic),
    /// and federation messages that could not be written in the bus's dialect.
    pub(crate) unmapped: Counter,
    /// Messages not sent back to the partner they came from.
    pub(crate) loops: Counter,
    /// Messages the federation refused (policy, agreement, unknown destination).
    pub(crate) refused: Counter,
    /// Errors of the bus: failed connections, publishes the broker did not accept.
    pub(crate) errors: Counter,
    up: Gauge,
}

/// One connector's entry.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Its name.
    pub(crate) name: String,
    /// `mqtt` or `nats`.
    pub(crate) kind: &'static str,
    /// Where its broker is.
    pub(crate) url: String,
    /// Its rules, as written: `export local → topic to MESH` and `import topic ← local`.
    pub(crate) rules: Vec<String>,
    /// Its counts.
    pub(crate) counts: Counts,
    state: Mutex<(Connection, SystemTime)>,
}

impl Entry {
    /// The connection's state and since when.
    pub(crate) fn connection(&self) -> (Connection, SystemTime) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records a change of the connection's state (a repeated one keeps its first time).
    pub(crate) fn set(&self, connection: Connection) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let same_kind = std::mem::discriminant(&state.0) == std::mem::discriminant(&connection);
        self.counts
            .up
            .set(i64::from(connection == Connection::Connected));
        if same_kind {
            state.0 = connection;
        } else {
            *state = (connection, SystemTime::now());
        }
    }
}

/// Every connector of the node.
#[derive(Debug, Default)]
pub(crate) struct Board {
    entries: Vec<std::sync::Arc<Entry>>,
}

impl Board {
    /// The entries of `configs`, their series registered in `metrics` at zero.
    pub(crate) fn new(configs: &[ConnectorConfig], metrics: &Metrics) -> Self {
        let entries = configs
            .iter()
            .map(|c| {
                let name = c.name.to_string();
                let counter = |direction: &'static str| {
                    metrics
                        .connector_messages
                        .get_or_create(&ConnectorDirectionLabels {
                            connector: name.clone(),
                            direction,
                        })
                        .clone()
                };
                let label = ConnectorLabel {
                    connector: name.clone(),
                };
                let counts = Counts {
                    exported: counter("export"),
                    imported: counter("import"),
                    unmapped: metrics.connector_unmapped.get_or_create(&label).clone(),
                    loops: metrics.connector_loops.get_or_create(&label).clone(),
                    refused: metrics.connector_refused.get_or_create(&label).clone(),
                    errors: metrics.connector_errors.get_or_create(&label).clone(),
                    up: metrics.connector_up.get_or_create(&label).clone(),
                };
                let url = match &c.bus {
                    Bus::Mqtt(m) => format!(
                        "{}://{}:{}",
                        if m.tls.is_some() { "mqtts" } else { "mqtt" },
                        m.host,
                        m.port
                    ),
                    Bus::Nats(n) => n.url.clone(),
                };
                let rules = c
                    .exports
                    .iter()
                    .map(|r| {
                        format!(
                            "export {} → {} to {} (qos {})",
                            r.mapping.local(),
                            r.mapping.federation(),
                            r.to,
                            r.qos.level()
                        )
                    })
                    .chain(c.imports.iter().map(|r| {
                        format!(
                            "import {}{} → {} (qos {})",
                            r.mapping.federation(),
                            r.from
                                .as_ref()
                                .map(|m| format!(" from {m}"))
                                .unwrap_or_default(),
                            r.mapping.local(),
                            r.qos.level()
                        )
                    }))
                    .collect();
                std::sync::Arc::new(Entry {
                    name,
                    kind: c.bus.kind(),
                    url,
                    rules,
                    counts,
                    state: Mutex::new((
                        Connection::Connecting { last_error: None },
                        SystemTime::now(),
                    )),
                })
            })
            .collect();
        Self { entries }
    }

    /// Every entry, in the configuration's order.
    pub(crate) fn entries(&self) -> &[std::sync::Arc<Entry>] {
        &self.entries
    }

    /// The entry of connector `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&std::sync::Arc<Entry>> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// A sentence per connector that is not connected, for `/readyz`.
    pub(crate) fn unready(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|e| match e.connection().0 {
                Connection::Connected => None,
                Connection::Stopped => Some(format!("connector {} is stopped", e.name)),
                Connection::Connecting { last_error } => Some(format!(
                    "connector {} is not connected to {}{}",
                    e.name,
                    e.url,
                    last_error.map(|e| format!(": {e}")).unwrap_or_default()
                )),
            })
            .collect()
    }
}
