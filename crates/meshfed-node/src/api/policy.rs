//! `GET /v1/policy` (`meshfed policy show`) and `PUT /v1/policy` (a new policy file, proposed
//! to every live partner).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;

use super::models::{
    AgreementSummary, ErrorBody, PolicyAgreementView, PolicyOfferView, PolicyProposalView,
    PolicyUpdate, PolicyUpdated, PolicyView,
};
use super::{ApiError, Node};

#[utoipa::path(
    get,
    path = "/policy",
    tag = "policy",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The policy in force (the file and what it offers) and each federation's agreement", body = PolicyView),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 500, description = "The registry cannot be read (`store`)", body = ErrorBody),
    )
)]
pub(super) async fn show_policy(State(node): State<Node>) -> Result<Json<PolicyView>, ApiError> {
    Ok(Json(view(&node).await?))
}

#[utoipa::path(
    put,
    path = "/policy",
    tag = "policy",
    security(("bearer" = [])),
    request_body = PolicyUpdate,
    responses(
        (status = 200, description = "The policy is checked, written to `policy.toml` and in force for handshakes to come; it was proposed to every live partner, each answer in `proposals` (a partner that refused keeps the agreement in force)", body = PolicyUpdated),
        (status = 400, description = "The file is wrong: every problem with its line and column, one per line of the message (`invalid_policy`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 500, description = "The file cannot be written (`internal`)", body = ErrorBody),
    )
)]
pub(super) async fn replace_policy(
    State(node): State<Node>,
    body: Result<Json<PolicyUpdate>, JsonRejection>,
) -> Result<Json<PolicyUpdated>, ApiError> {
    let Json(body) = body?;
    let proposals = node.replace_policy(body.toml).await?;
    Ok(Json(PolicyUpdated {
        policy: view(&node).await?,
        proposals: proposals
            .into_iter()
            .map(|p| PolicyProposalView {
                federation_id: p.federation_id,
                peer: p.peer,
                agreed: p.outcome.is_ok(),
                version: p.outcome.as_ref().ok().copied(),
                reason: p.outcome.err().map(|e| e.to_string()),
            })
            .collect(),
    }))
}

async fn view(node: &Node) -> Result<PolicyView, ApiError> {
    let policy = node.policy();
    let agreements = node
        .federations()
        .await?
        .into_iter()
        .map(|f| PolicyAgreementView {
            agreement: AgreementSummary::of(&f.record),
            federation_id: f.record.id,
            peer: f.record.peer_mesh,
            state: f.record.state,
        })
        .collect();
    Ok(PolicyView {
        file: policy.source.clone(),
        offer: PolicyOfferView {
            publishes: policy.services.publishes.clone(),
            wants: policy.services.wants.clone(),
            frameworks: policy.compliance.supports.clone(),
            requires_frameworks: policy.compliance.requires.clone(),
            terms: policy.offer.proposal().into(),
        },
        agreements,
    })
}
