//! `GET /v1/connectors` and `GET /v1/connectors/{name}` (`meshfed connector list | show`): the
//! connectors to the mesh's own MQTT or NATS bus, their state and counts.

use axum::Json;
use axum::extract::{Path, State};

use super::models::{ConnectorList, ConnectorView, ErrorBody};
use super::{ApiError, Node};
use crate::connectors::status::{Connection, Entry};
use crate::gateway::federations::rfc3339;

fn view(e: &Entry) -> ConnectorView {
    let (connection, since) = e.connection();
    let (state, last_error) = match connection {
        Connection::Connecting { last_error } => ("connecting", last_error),
        Connection::Connected => ("connected", None),
        Connection::Stopped => ("stopped", None),
    };
    let c = &e.counts;
    ConnectorView {
        name: e.name.clone(),
        kind: e.kind.to_owned(),
        url: e.url.clone(),
        state: state.to_owned(),
        since: rfc3339(crate::clock::timestamp(since)),
        last_error,
        exported: c.exported.get(),
        imported: c.imported.get(),
        unmapped: c.unmapped.get(),
        loops: c.loops.get(),
        refused: c.refused.get(),
        errors: c.errors.get(),
        rules: e.rules.clone(),
    }
}

#[utoipa::path(
    get,
    path = "/connectors",
    tag = "connectors",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every connector to the mesh's own bus, with its state and counts", body = ConnectorList),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn list_connectors(State(node): State<Node>) -> Json<ConnectorList> {
    Json(ConnectorList {
        connectors: node
            .connectors()
            .entries()
            .iter()
            .map(|e| view(e))
            .collect(),
    })
}

#[utoipa::path(
    get,
    path = "/connectors/{name}",
    tag = "connectors",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The connector")),
    responses(
        (status = 200, description = "The connector, with its rules", body = ConnectorView),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 404, description = "No connector has this name (`not_found`)", body = ErrorBody),
    )
)]
pub(super) async fn show_connector(
    State(node): State<Node>,
    Path(name): Path<String>,
) -> Result<Json<ConnectorView>, ApiError> {
    node.connectors()
        .get(&name)
        .map(|e| Json(view(e)))
        .ok_or_else(|| ApiError::not_found(format!("no connector is named {name:?}")))
}
