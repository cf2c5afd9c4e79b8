//! Component tokens: `POST /v1/tokens` (`meshfed token issue`), `GET /v1/tokens`
//! (`meshfed token list`) and `POST /v1/tokens/{jti}/revoke` (`meshfed token revoke`), all
//! admin-only. The checks a token gets on every request are the guard's (`authorize` in the
//! module above).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};

use super::models::{ErrorBody, IssueTokenRequest, IssuedToken, TokenList, TokenView};
use super::{ApiError, Node};
use crate::credentials::{Action, DEFAULT_TOKEN_TTL, Grant, Role, Subject};
use crate::gateway::federations::rfc3339;

#[utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    security(("bearer" = [])),
    request_body = IssueTokenRequest,
    description = "Issues a JWT (ES384, signed with this gateway's issuer key, `kid` naming it) \
        to a component of this mesh. With it the component may publish (`POST /v1/messages`, \
        the publish WebSocket) on topics its patterns match and subscribe \
        (`GET /v1/messages/stream` with a `topic` within them), as its actions allow; every \
        other route answers it 403, unless it has the role `admin`. The token is shown once \
        and never stored; `GET /v1/tokens` lists what was issued.",
    responses(
        (status = 200, description = "The token and what it grants", body = IssuedToken),
        (status = 400, description = "A wrong subject, role, attribute, action, topic pattern or ttl, or a token that would allow nothing (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 403, description = "A component token without the admin role (`forbidden`)", body = ErrorBody),
        (status = 500, description = "The token could not be made or recorded (`internal`)", body = ErrorBody),
    )
)]
pub(super) async fn issue_token(
    State(node): State<Node>,
    body: Result<Json<IssueTokenRequest>, JsonRejection>,
) -> Result<Json<IssuedToken>, ApiError> {
    let Json(body) = body?;
    let bad = |e: crate::credentials::GrantError| ApiError::bad_request(e.to_string());
    let subject: Subject = body.subject.parse().map_err(bad)?;
    let roles = (body.roles.iter())
        .map(|r| r.parse::<Role>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let actions = (body.actions.iter())
        .map(|a| a.parse::<Action>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let ttl = match body.ttl.as_deref() {
        None => DEFAULT_TOKEN_TTL,
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| ApiError::bad_request(format!("ttl {t:?}: {e}")))?,
    };
    let grant = Grant::new(subject, roles, body.topics, actions, ttl)
        .and_then(|g| g.with_attributes(body.attributes))
        .map_err(bad)?;
    let (token, claims) = node
        .issue_token(grant)
        .await
        .map_err(|e| ApiError::internal(crate::gateway::error::chain(&e)))?;
    let issuer = node.token_issuer();
    Ok(Json(IssuedToken {
        token,
        issuer: claims.iss.clone(),
        audience: claims.aud.clone(),
        kid: issuer.kid().to_owned(),
        issued: rfc3339(claims.issued()),
        expires: rfc3339(claims.expires()),
        jti: claims.jti,
        subject: claims.sub,
        roles: claims.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        attributes: claims.attrs,
        topics: claims.topics,
        actions: claims.actions.iter().map(|a| a.name().to_owned()).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The component tokens this gateway issued that have not expired, the latest first, with whether each was revoked (never the tokens themselves)", body = TokenList),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 403, description = "A component token without the admin role (`forbidden`)", body = ErrorBody),
        (status = 500, description = "The registry could not be read (`internal`)", body = ErrorBody),
    )
)]
pub(super) async fn list_tokens(State(node): State<Node>) -> Result<Json<TokenList>, ApiError> {
    let tokens = node
        .issued_tokens()
        .await
        .map_err(|e| ApiError::internal(crate::gateway::error::chain(&e)))?;
    Ok(Json(TokenList {
        tokens: tokens.iter().map(TokenView::of).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/tokens/{jti}/revoke",
    tag = "tokens",
    security(("bearer" = [])),
    params(("jti" = String, Path, description = "The token's id (`jti`), as `meshfed token issue` and `GET /v1/tokens` show it")),
    responses(
        (status = 200, description = "Revoked: recorded in the registry (it stays revoked across restarts until it expires) and refused from now on", body = TokenView),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 403, description = "A component token without the admin role (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No token of that id was issued here, or it has expired (`not_found`)", body = ErrorBody),
        (status = 500, description = "The registry could not be written; the token is not revoked (`internal`)", body = ErrorBody),
    )
)]
pub(super) async fn revoke_token(
    State(node): State<Node>,
    Path(jti): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    let revoked = node
        .revoke_token(jti.clone())
        .await
        .map_err(|e| ApiError::internal(crate::gateway::error::chain(&e)))?;
    match revoked {
        Some(t) => Ok(Json(TokenView::of(&t))),
        None => Err(ApiError::not_found(format!(
            "no token {jti:?} was issued by this gateway, or it has expired (meshfed token list shows them)"
        ))),
    }
}
