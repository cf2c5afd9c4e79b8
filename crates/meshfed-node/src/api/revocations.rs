//! `GET /v1/revocations` (this mesh's revocation list and the partners') and
//! `POST /v1/revocations` (`meshfed federation revoke-node MESH/NODE`).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use meshfed_proto::{MeshId, NodeName};
use meshfed_trust::NodeIdentity;

use super::models::{ErrorBody, RevocationListView, RevocationsView, RevokeNodeRequest};
use super::{ApiError, Node};
use crate::gateway::revoked::ListView;

#[utoipa::path(
    get,
    path = "/revocations",
    tag = "revocations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "This mesh's revocation list and those received from partner meshes (and, `relayed`, from meshes whose messages a partner relays here)", body = RevocationsView),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn list_revocations(State(node): State<Node>) -> Json<RevocationsView> {
    let status = node.revocations();
    let partners: std::collections::HashSet<MeshId> = (node.federations().await)
        .map(|all| all.into_iter().map(|f| f.record.peer_mesh).collect())
        .unwrap_or_default();
    Json(RevocationsView {
        mesh: status.mesh,
        own: status.own.as_ref().map(RevocationListView::of),
        partners: (status.partners.iter())
            .map(|l| RevocationListView {
                relayed: !partners.contains(&l.list.mesh),
                ..RevocationListView::of(l)
            })
            .collect(),
    })
}

#[utoipa::path(
    post,
    path = "/revocations",
    tag = "revocations",
    security(("bearer" = [])),
    request_body = RevokeNodeRequest,
    responses(
        (status = 200, description = "The node is revoked: the new version of this mesh's list, stored and sent to every partner linked now (the others get it when they reconnect)", body = RevocationListView),
        (status = 400, description = "Not `MESH/NODE`, a node of another mesh, or this node itself (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 409, description = "The list is full (`conflict`)", body = ErrorBody),
        (status = 500, description = "Signing or storing the list failed (`internal`)", body = ErrorBody),
    )
)]
pub(super) async fn revoke_node(
    State(node): State<Node>,
    body: Result<Json<RevokeNodeRequest>, JsonRejection>,
) -> Result<Json<RevocationListView>, ApiError> {
    let Json(body) = body?;
    let target = parse_node(&body.node)?;
    let list = node.revoke_node(target).await?;
    let stored = list.issued_at;
    Ok(Json(RevocationListView::of(&ListView { list, stored })))
}

/// `MESH/NODE` as a node identity.
fn parse_node(raw: &str) -> Result<NodeIdentity, ApiError> {
    let bad = |why: String| ApiError::bad_request(format!("node {raw:?}: {why}"));
    let (mesh, node) = raw
        .split_once('/')
        .ok_or_else(|| bad("expected MESH/NODE".into()))?;
    Ok(NodeIdentity {
        mesh: mesh.parse::<MeshId>().map_err(|e| bad(e.to_string()))?,
        node: node.parse::<NodeName>().map_err(|e| bad(e.to_string()))?,
    })
}
