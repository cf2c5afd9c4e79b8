//! Delegations (DESIGN.md §2, Transitive trust): `POST /v1/delegations`
//! (`meshfed delegation issue`), `POST /v1/delegations/held` (`meshfed delegation add`),
//! `GET /v1/delegations` (`meshfed delegation list`) and `POST /v1/delegations/{id}/revoke`
//! (`meshfed delegation revoke`), all admin-only.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};

use super::models::{
    AddDelegationRequest, DelegationList, DelegationView, ErrorBody, IssueDelegationRequest,
    IssuedDelegation,
};
use super::{ApiError, Node};
use crate::credentials::delegation::{self, DelegationGrant};
use crate::gateway::delegations::{DelegationFault, DelegationView as State_};
use crate::gateway::federations::rfc3339;

/// How long a delegation lives unless asked otherwise.
const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn refused(e: DelegationFault) -> ApiError {
    match e {
        DelegationFault::Invalid(_)
        | DelegationFault::NotOurs { .. }
        | DelegationFault::Revoked { .. } => ApiError::invalid_delegation(e.to_string()),
        DelegationFault::NotIssued(_) => ApiError::not_found(e.to_string()),
        DelegationFault::Revoke(_) | DelegationFault::Store(_) => ApiError::internal(e.to_string()),
    }
}

fn view(d: &State_) -> DelegationView {
    let read = delegation::read_recorded(&d.stored.token).ok();
    DelegationView {
        id: d.stored.id.clone(),
        issuer: d.stored.issuer.clone(),
        delegate: d.stored.delegate.clone(),
        direction: if d.issued_here { "issued" } else { "held" }.to_owned(),
        state: if d.revoked {
            "revoked"
        } else if d.expired {
            "expired"
        } else {
            "valid"
        }
        .to_owned(),
        issued: rfc3339(d.stored.issued),
        expires: rfc3339(d.stored.expires),
        audience: read.as_ref().map(|r| r.audience.clone()),
        topics: read.as_ref().map(|r| r.topics.clone()),
        depth: read.as_ref().map(|r| r.depth),
    }
}

#[utoipa::path(
    post,
    path = "/delegations",
    tag = "delegations",
    security(("bearer" = [])),
    request_body = IssueDelegationRequest,
    description = "Delegates the relaying of this mesh's messages on `topics` to the partner \
        mesh `delegate`, towards the meshes of `audience` (DESIGN §2, trusted intermediary). \
        The delegation is a JWT (ES384) signed by this node, its certificate chain in `x5c`; \
        hand it to the delegate (`meshfed delegation add`). Recorded here; withdrawn with \
        `POST /v1/delegations/{id}/revoke`.",
    responses(
        (status = 200, description = "The delegation and what it says", body = IssuedDelegation),
        (status = 400, description = "No topics or audience, a depth above 8, a ttl out of bounds, or a delegation to this mesh itself (`invalid_delegation`); a body that does not parse (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 403, description = "A component token without the admin role (`forbidden`)", body = ErrorBody),
        (status = 500, description = "It could not be signed or recorded (`internal`)", body = ErrorBody),
    )
)]
pub(super) async fn issue_delegation(
    State(node): State<Node>,
    body: Result<Json<IssueDelegationRequest>, JsonRejection>,
) -> Result<Json<IssuedDelegation>, ApiError> {
    let Json(body) = body?;
    let ttl = match body.ttl.as_deref() {
        None => DEFAULT_TTL,
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| ApiError::bad_request(format!("ttl {t:?}: {e}")))?,
    };
    let grant = DelegationGrant {
        delegate: body.delegate,
        audience: body.audience,
        topics: body.topics,
        depth: body.depth,
        ttl,
    };
    let (token, issued) = node.issue_delegation(grant).await.map_err(refused)?;
    Ok(Json(IssuedDelegation {
        token,
        delegation: DelegationView::of(&issued, "issued"),
    }))
}

#[utoipa::path(
    post,
    path = "/delegations/held",
    tag = "delegations",
    security(("bearer" = [])),
    request_body = AddDelegationRequest,
    description = "Takes a delegation a partner mesh issued to this mesh: verified against the \
        partner's stored trust bundle (its signer a node of that mesh when it was issued), \
        issued to this mesh, unexpired and not withdrawn; then recorded, to be presented when \
        this mesh relays that partner's messages.",
    responses(
        (status = 200, description = "Taken: what it says", body = DelegationView),
        (status = 400, description = "It does not verify, is not issued to this mesh, expired or was revoked (`invalid_delegation`); a body that does not parse (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 403, description = "A component token without the admin role (`forbidden`)", body = ErrorBody),
        (status = 500, description = "The registry could not be written (`internal`)", body = ErrorBody),
    )
)]
pub(super) async fn add_delegation(
    State(node): State<Node>,
    body: Result<Json<AddDelegationRequest>, JsonRejection>,
) -> Result<Json<DelegationView>, ApiError> {
    let Json(body) = body?;
    let taken = node
        .add_delegation(body.token.trim())
        .await
        .map_err(refused)?;
    Ok(Json(DelegationView::of(&taken, "held")))
}

#[utoipa::path(
    get,
    path = "/delegations",
    tag = "delegations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The delegations this mesh issued or holds that have not expired long ago, the latest first, each `valid`, `revoked` or `expired`", body = DelegationList),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 403, description = "A component token without the admin role (`forbidden`)", body = ErrorBody),
        (status = 500, description = "The registry could not be read (`internal`)", body = ErrorBody),
    )
)]
pub(super) async fn list_delegations(
    State(node): State<Node>,
) -> Result<Json<DelegationList>, ApiError> {
    let all = node
        .delegations()
        .await
        .map_err(|e| ApiError::internal(crate::gateway::error::chain(&e)))?;
    Ok(Json(DelegationList {
        delegations: all.iter().map(view).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/delegations/{id}/revoke",
    tag = "delegations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The delegation's id, as `meshfed delegation list` shows it")),
    responses(
        (status = 200, description = "Withdrawn: this mesh's revocation list names it (signed, stored, sent to every partner within a heartbeat interval; it holds across restarts)", body = DelegationView),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 403, description = "A component token without the admin role (`forbidden`)", body = ErrorBody),
        (status = 404, description = "This mesh issued no delegation of that id, or it expired (`not_found`)", body = ErrorBody),
        (status = 500, description = "The revocation list could not be signed or stored; nothing is withdrawn (`internal`)", body = ErrorBody),
    )
)]
pub(super) async fn revoke_delegation(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Json<DelegationView>, ApiError> {
    let revoked = node.revoke_delegation(&id).await.map_err(refused)?;
    Ok(Json(view(&revoked)))
}
