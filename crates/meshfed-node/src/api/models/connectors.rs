//! The bodies of the connector routes (`GET /v1/connectors`, `GET /v1/connectors/{name}`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/connectors`: the connectors to the mesh's own MQTT or NATS bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectorList {
    /// Every connector, in the configuration's order.
    pub connectors: Vec<ConnectorView>,
}

/// One connector: its broker, its state and its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectorView {
    /// Its name (`[[connector]] name`).
    pub name: String,
    /// `mqtt` or `nats`.
    pub kind: String,
    /// Where its broker is.
    pub url: String,
    /// `connecting`, `connected` or `stopped`.
    pub state: String,
    /// Since when it is in that state (RFC 3339).
    pub since: String,
    /// Why the last connection failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Messages taken from the bus and accepted into the federation.
    pub exported: u64,
    /// Federation messages the bus's broker accepted.
    pub imported: u64,
    /// Messages that fit no rule, or that the other dialect cannot name: not forwarded.
    pub unmapped: u64,
    /// Messages not sent back to the partner they came from.
    pub loops: u64,
    /// Messages the federation refused (agreement, policy, destination).
    pub refused: u64,
    /// Errors of the bus: connections lost or refused, publishes not accepted.
    pub errors: u64,
    /// Its rules: `export LOCAL → TOPIC to MESH (qos N)`, `import TOPIC [from MESH] → LOCAL (qos N)`.
    pub rules: Vec<String>,
}
