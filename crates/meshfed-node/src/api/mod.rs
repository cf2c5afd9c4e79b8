//! The node's HTTP API: health, metrics, and the admin and messaging endpoints under `/v1`
//! (DESIGN.md §9.2). Every `/v1` route needs a bearer token: the admin token, or a component
//! token this gateway issued ([`crate::credentials`]), which may only publish and subscribe
//! within its scope. The guard ([`authorize`]) puts the caller's
//! [`Principal`](crate::credentials::Principal) in the request's extensions.
//!
//! Every body is a type of [`models`]; every route is registered together with its OpenAPI
//! operation (`#[utoipa::path]` on the handler, `routes!` in `api()`), and the document served at
//! `/v1/openapi.json` is generated from them ([`document`]).

mod audit;
pub mod binary;
mod conn;
mod connectors;
mod console;
mod delegations;
mod error;
mod events;
pub mod models;
mod openapi;
mod policy;
mod revocations;
mod stats;
#[cfg(test)]
mod tests;
mod tls;
mod tokens;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, OriginalUri, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine;
use futures_util::{SinkExt as _, StreamExt as _};
use meshfed_proto::FederationId;
use meshfed_proto::TopicPattern;
use meshfed_proto::envelope::export::{Exported, Form};
use meshfed_proto::envelope::{ContentType, Flags, Label, MaxLatency, Properties, Qos};
use meshfed_store::journal::SubscriptionName;
use serde_json::Value;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use tls::serves_tls;

use crate::credentials::{Action, Principal};
use crate::gateway::federations::{self, Operation};
use crate::gateway::local::durable;
use crate::gateway::local::live::Subscription;
use crate::gateway::local::{Delivery, Parts};
use crate::gateway::room::WhenFull;
use crate::gateway::submit::Submitted;
use crate::gateway::{DEFAULT_INVITATION_TTL, FederationStatus, GatewayHandle, Outgoing, Sender};
use models::schema;
use models::{
    Acked, DeadLetterList, DeadLetterView, DescriptorView, DirectoryView, DurableAck, ErrorBody,
    FederationList, FederationView, Format, InviteRequest, InviteResponse, JoinRequest,
    MessageAccepted, MessageAcknowledged, NodeInfo, OperationRequest, PublishQuery, PublishReply,
    RouteList, RouteView, SendRequest, StreamQuery, StreamReply, TokenRotated, TrustView,
};

/// The largest request body the API reads (axum's default, stated): a larger one is answered
/// 413 `too_large`, as a payload over the agreed size is.
pub(crate) const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The API as its handlers see the gateway.
type Node = GatewayHandle;

/// Serves the API on `listener` until the gateway stops: over TLS when it listens beyond
/// loopback ([`tls`]). Fails when that certificate cannot be issued.
pub(crate) fn serve(
    node: GatewayHandle,
    listener: tokio::net::TcpListener,
    addr: std::net::SocketAddr,
) -> Result<(), String> {
    let tls = tls::acceptor(&node, addr)?;
    let router = router(node.clone());
    conn::serve(&node, listener, router, tls);
    Ok(())
}

/// The router of a running node.
fn router(node: Node) -> Router {
    let guard = middleware::from_fn_with_state(node.clone(), authorize);
    let (router, _) = api(|v1| v1.layer(guard)).split_for_parts();
    router
        .fallback(console::fallback)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(node)
}

/// Every route of the API, each registered with its OpenAPI operation by `routes!`: the one
/// place routes are added, so that what the router serves and what [`document`] describes
/// cannot part (`api::tests` checks both ways). `guard` wraps the `/v1` routes.
fn api(guard: impl FnOnce(OpenApiRouter<Node>) -> OpenApiRouter<Node>) -> OpenApiRouter<Node> {
    let v1 = OpenApiRouter::default()
        .routes(routes!(node_info))
        .routes(routes!(list_federations))
        .routes(routes!(list_routes))
        .routes(routes!(invite))
        .routes(routes!(join))
        .routes(routes!(show_federation))
        .routes(routes!(operate))
        .routes(routes!(send_message))
        .routes(routes!(stream))
        .routes(routes!(publish))
        .routes(routes!(dead_letters))
        .routes(routes!(rotate_token))
        .routes(routes!(policy::show_policy, policy::replace_policy))
        .routes(routes!(tokens::issue_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(
            delegations::issue_delegation,
            delegations::list_delegations
        ))
        .routes(routes!(delegations::add_delegation))
        .routes(routes!(delegations::revoke_delegation))
        .routes(routes!(show_trust))
        .routes(routes!(reload_trust))
        .routes(routes!(
            revocations::list_revocations,
            revocations::revoke_node
        ))
        .routes(routes!(connectors::list_connectors))
        .routes(routes!(connectors::show_connector))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(audit::audit_report))
        .routes(routes!(audit::audit_proof))
        .routes(routes!(stats::stats))
        .routes(routes!(events::events));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(directory))
        .routes(routes!(openapi))
        .nest("/v1", guard(v1))
}

/// The OpenAPI 3.1 document of the API, as `/v1/openapi.json` serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    api(|v1| v1).into_openapi()
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is alive (a liveness check: it asks nothing of the store, the certificate or the listeners; `/readyz` does)", body = String, content_type = "text/plain"))
)]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "The node can do its work: `ready`", body = String, content_type = "text/plain"),
        (status = 503, description = "It cannot, and why: the federation listener cannot accept connections, the node certificate has expired, or the store cannot be written (`not ready: …`, one reason per line)", body = String, content_type = "text/plain"),
    )
)]
async fn readyz(State(node): State<Node>) -> Response {
    let problems = node.unready().await;
    if problems.is_empty() {
        return "ready\n".into_response();
    }
    let mut text = String::from("not ready:\n");
    for p in problems {
        text.push_str(&format!("- {p}\n"));
    }
    (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "health",
    responses((status = 200, description = "This document (OpenAPI 3.1); no token needed", body = Object))
)]
async fn openapi() -> Json<&'static utoipa::openapi::OpenApi> {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(document);
    Json(&DOCUMENT)
}

/// The `/v1` guard: refuses a token in the URL, authenticates the bearer token (the admin
/// token, or a component token: signature, claims, revocation), refuses a component token the
/// routes it may not use, and hands the caller's [`Principal`] to the handler, which checks
/// topics and actions.
async fn authorize(
    State(node): State<Node>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if token_in_query(req.uri().query()) {
        node.count_refusal("token_in_url");
        return Err(ApiError::token_in_url());
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let connection = req.extensions().get::<Arc<conn::Connection>>().cloned();
    let authenticated = if presented.is_empty() {
        Err(None)
    } else {
        node.authenticate(presented).map_err(Some)
    };
    let principal = match authenticated {
        Ok(p) => p,
        Err(e) => {
            if let Some(c) = connection {
                c.refused_token();
            }
            let Some(e) = e else {
                node.count_refusal("missing");
                return Err(ApiError::unauthorized());
            };
            node.count_refusal(e.reason());
            tracing::debug!(reason = e.reason(), error = %e, "refused a bearer token");
            return Err(ApiError::refused_token(&e));
        }
    };
    if let Some(c) = connection {
        c.authenticated();
    }
    let path = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().path(), |u| u.path())
        .to_owned();
    if !principal.is_admin() && !component_route(req.method(), &path) {
        node.count_refusal("forbidden");
        tracing::debug!(subject = %principal.subject, jti = ?principal.token_id, method = %req.method(), path, "refused a component token an admin route");
        let what = format!("{} {path}", req.method());
        return Err(ApiError::forbidden(&principal.admin_only(&what)));
    }
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// Whether a query carries a token (`token=` or `access_token=`), which is never accepted.
fn token_in_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            name.eq_ignore_ascii_case("token") || name.eq_ignore_ascii_case("access_token")
        })
    })
}

/// Whether a component token may call `method path` at all: publishing and subscribing. The
/// handler checks its actions and topics.
fn component_route(method: &Method, path: &str) -> bool {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    matches!(
        (method, path),
        (&Method::POST, "/messages")
            | (&Method::GET, "/messages/publish")
            | (&Method::GET, "/messages/stream")
    )
}

/// A component's request refused for asking beyond its scope: counted and logged (subject and
/// token id, never the token).
fn forbidden(node: &Node, principal: &Principal, e: &crate::credentials::Forbidden) -> ApiError {
    node.count_refusal("forbidden");
    tracing::debug!(subject = %principal.subject, jti = ?principal.token_id, refusal = %e, "refused a component token beyond its scope");
    ApiError::forbidden(e)
}

#[utoipa::path(
    get,
    path = "/node",
    tag = "node",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "This node's identity and addresses, and how it signs what it sends", body = NodeInfo),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    )
)]
async fn node_info(State(node): State<Node>) -> Json<NodeInfo> {
    Json(NodeInfo::of(node.node_info()))
}

#[utoipa::path(
    get,
    path = "/federations",
    tag = "federations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every federation with its link health", body = FederationList),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 500, description = "The registry failed (`store`)", body = ErrorBody),
    )
)]
async fn list_federations(State(node): State<Node>) -> Result<Json<FederationList>, ApiError> {
    let federations = node.federations().await?.iter().map(view).collect();
    Ok(Json(FederationList { federations }))
}

#[utoipa::path(
    get,
    path = "/routes",
    tag = "federations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The routing table: each mesh reached, its next hop, path and round trip", body = RouteList),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    )
)]
async fn list_routes(State(node): State<Node>) -> Json<RouteList> {
    let routes = node
        .routes()
        .into_iter()
        .map(|r| RouteView {
            hops: r.path.len().saturating_sub(1),
            destination: r.destination,
            next_hop: r.next_hop,
            path: r.path,
            rtt_ms: r.rtt.as_secs_f64() * 1000.0,
        })
        .collect();
    Json(RouteList { routes })
}

fn federation_id(raw: &str) -> Result<FederationId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad_request(format!("{e}")))
}

#[utoipa::path(
    get,
    path = "/federations/{id}",
    tag = "federations",
    security(("bearer" = [])),
    params(("id" = schema::FederationId, Path, description = "The federation")),
    responses(
        (status = 200, description = "The federation, with its backlog while its stream runs", body = FederationView),
        (status = 400, description = "Not a federation id (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such federation (`not_found`)", body = ErrorBody),
    )
)]
async fn show_federation(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Json<FederationView>, ApiError> {
    let id = federation_id(&id)?;
    let status = node.federation(id.clone()).await?;
    let history = node.agreement_history(id).await?;
    Ok(Json(view(&status).with_history(&history)))
}

/// The view of a federation, with its outbound stream's backlog, dead letters and deliveries
/// while the stream runs.
fn view(status: &FederationStatus) -> FederationView {
    FederationView::new(&status.record, status.link, status.stream.as_ref())
        .with_breaker(&status.breaker)
}

#[utoipa::path(
    post,
    path = "/federations/invite",
    tag = "federations",
    security(("bearer" = [])),
    request_body = InviteRequest,
    responses(
        (status = 200, description = "A one-time invitation token for the peer mesh", body = InviteResponse),
        (status = 400, description = "A wrong peer or ttl (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    )
)]
async fn invite(
    State(node): State<Node>,
    body: Result<Json<InviteRequest>, JsonRejection>,
) -> Result<Json<InviteResponse>, ApiError> {
    let Json(body) = body?;
    let ttl = match body.ttl.as_deref() {
        None => DEFAULT_INVITATION_TTL,
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| ApiError::bad_request(format!("ttl {t:?}: {e}")))?,
    };
    let (token, record) = node.invite(body.peer, ttl).await?;
    Ok(Json(InviteResponse {
        token: token.encode(),
        token_id: record.token_id,
        peer: record.peer_mesh,
        expires: federations::rfc3339(record.expires),
    }))
}

#[utoipa::path(
    post,
    path = "/federations/join",
    tag = "federations",
    security(("bearer" = [])),
    request_body = JoinRequest,
    responses(
        (status = 200, description = "The federation the token offered, joined and active", body = FederationView),
        (status = 400, description = "A token that is not for this mesh or expired (`bad_request`), or unreadable (`invalid_token`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 409, description = "Already federated with that mesh (`conflict`)", body = ErrorBody),
        (status = 502, description = "The inviter could not be reached (`peer_unreachable`) or refused (`federation_refused`)", body = ErrorBody),
    )
)]
async fn join(
    State(node): State<Node>,
    body: Result<Json<JoinRequest>, JsonRejection>,
) -> Result<Json<FederationView>, ApiError> {
    let Json(body) = body?;
    let status = node.join(&body.token, body.via).await?;
    Ok(Json(FederationView::new(&status.record, status.link, None)))
}

#[utoipa::path(
    post,
    path = "/federations/{id}/{operation}",
    tag = "federations",
    security(("bearer" = [])),
    params(
        ("id" = schema::FederationId, Path, description = "The federation"),
        ("operation" = schema::Operation, Path, description = "`suspend` pauses message flow, `resume` resumes it; `terminate` ends the federation: gracefully, answering once what is in flight is delivered (at most 10 s; the rest is dead-lettered), or with `{\"force\": true}` at once (everything queued is dead-lettered); `renegotiate` proposes the next agreement version with this side's current offer over the live link and answers once both sides signed and switched to it (the old version stays in `agreement_history`)"),
    ),
    request_body(content = Option<OperationRequest>, description = "Optional; `force` applies to `terminate`"),
    responses(
        (status = 200, description = "The federation in its new state", body = FederationView),
        (status = 400, description = "An unknown operation or a wrong id (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such federation (`not_found`)", body = ErrorBody),
        (status = 409, description = "The lifecycle does not allow it from the current state, or a renegotiation is already under way (`conflict`)", body = ErrorBody),
        (status = 422, description = "A body that is JSON but not an OperationRequest (plain text, from the framework)", body = String, content_type = "text/plain"),
        (status = 502, description = "The renegotiation ended without a new agreement: the peer refused (its reason is in the message), did not answer, or the link is down; the agreement in force stays (`renegotiation_failed`)", body = ErrorBody),
    )
)]
async fn operate(
    State(node): State<Node>,
    Path((id, operation)): Path<(String, String)>,
    body: Option<Json<OperationRequest>>,
) -> Result<Json<FederationView>, ApiError> {
    let force = body.map(|Json(b)| b.force).unwrap_or_default();
    let op = match operation.as_str() {
        "suspend" => Operation::Suspend,
        "resume" => Operation::Resume,
        "terminate" => Operation::Terminate { forced: force },
        "renegotiate" => {
            let id = federation_id(&id)?;
            let status = node.renegotiate(id.clone()).await?;
            let history = node.agreement_history(id).await?;
            return Ok(Json(
                FederationView::new(&status.record, status.link, None).with_history(&history),
            ));
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown operation {other:?}: use suspend, resume, terminate or renegotiate"
            )));
        }
    };
    let status = node.operate(federation_id(&id)?, op).await?;
    Ok(Json(FederationView::new(&status.record, status.link, None)))
}

fn max_latency(v: Option<Value>) -> Result<Option<MaxLatency>, ApiError> {
    let bad = |e: String| ApiError::bad_request(format!("max_latency: {e}"));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let ms = n
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "{n} is out of range: give whole milliseconds from 1 to {} (about 49 days), or a duration like \"5s\"",
                        u32::MAX
                    ))
                })?;
            MaxLatency::try_from(ms)
                .map(Some)
                .map_err(|e| bad(e.to_string()))
        }
        Some(Value::String(s)) => {
            let d = humantime::parse_duration(&s).map_err(|e| bad(format!("{s:?}: {e}")))?;
            MaxLatency::try_from(d)
                .map(Some)
                .map_err(|e| bad(e.to_string()))
        }
        Some(other) => Err(bad(format!(
            "{other} is neither milliseconds nor a duration like \"5s\""
        ))),
    }
}

/// The payload bytes for its content type: JSON as JSON, text as text, anything else base64.
fn payload_bytes(ct: &ContentType, payload: Value) -> Result<Vec<u8>, ApiError> {
    if ct.is_json() {
        return Ok(payload.to_string().into_bytes());
    }
    let Value::String(s) = payload else {
        return Err(ApiError::bad_request(format!(
            "payload: a {ct} payload must be a string (base64 unless text/*)"
        )));
    };
    if ct.is_text() {
        return Ok(s.into_bytes());
    }
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| ApiError::bad_request(format!("payload: not base64: {e}")))
}

impl SendRequest {
    /// The message this body asks for. Shared by `POST /v1/messages` and the publish stream.
    fn into_outgoing(self, sender: &Principal) -> Result<(Outgoing, bool), ApiError> {
        outgoing(self.into_publish()?, sender)
    }

    /// The message this body asks for, its JSON forms read: flags by name, the payload as
    /// its content type shows it, the deadline in milliseconds or as a duration.
    fn into_publish(self) -> Result<binary::Publish, ApiError> {
        let flags = self.flags.iter().try_fold(Flags::empty(), |acc, f| {
            Flags::from_name(f)
                .map(|fl| acc.with(fl))
                .map_err(|e| ApiError::bad_request(format!("flags: {e}")))
        })?;
        let content_type = self.content_type.unwrap_or_else(ContentType::json);
        Ok(binary::Publish {
            payload: payload_bytes(&content_type, self.payload)?,
            to: self.to,
            topic: self.topic,
            content_type,
            qos: self.qos,
            priority: self.priority,
            max_latency: max_latency(self.max_latency)?,
            flags,
            wait: self.wait,
            schema_id: label("schema_id", self.schema_id)?,
            classification: label("classification", self.classification)?,
            properties: properties(self.properties)?,
        })
    }
}

/// The send request's properties, checked: each bound refused naming the property.
fn properties(p: Option<models::MessageProperties>) -> Result<Properties, ApiError> {
    let Some(p) = p else {
        return Ok(Properties::default());
    };
    let correlation = p
        .correlation_data
        .map(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c)
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "properties: correlation_data: not standard base64: {e}"
                    ))
                })
        })
        .transpose()?;
    Properties::new(p.user, correlation, p.reply_to)
        .map_err(|e| ApiError::bad_request(format!("properties: {e}")))
}

/// An optional label of the send request, checked.
fn label(field: &'static str, value: Option<String>) -> Result<Option<Label>, ApiError> {
    value
        .map(|v| Label::parse(field, &v))
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The message `p` asks for and whether its sender waits, under the rules every way of
/// sending shares (a JSON body or frame, a binary frame).
fn outgoing(p: binary::Publish, sender: &Principal) -> Result<(Outgoing, bool), ApiError> {
    if p.wait && p.qos == Qos::AtMostOnce {
        return Err(ApiError::bad_request(
            "wait needs an acknowledged delivery: send with qos 1 or 2",
        ));
    }
    if p.flags.contains(Flags::IDENTIFIED) {
        return Err(ApiError::bad_request(
            "flags: identified is the gateway's to set (it seals the identity your credential names)",
        ));
    }
    if p.flags.contains(Flags::TRANSIT) {
        return Err(ApiError::bad_request(
            "flags: transit is the gateway's to set (when it relays a partner's message)",
        ));
    }
    if p.flags.contains(Flags::PROPERTIES) {
        return Err(ApiError::bad_request(
            "flags: properties is the gateway's to set (it seals the properties you give)",
        ));
    }
    // DESIGN.md §3.5: `reliable` means qos ≥ 1, and qos ≥ 1 is reliable.
    if p.flags.contains(Flags::RELIABLE) && p.qos == Qos::AtMostOnce {
        return Err(ApiError::bad_request(
            "flags: reliable needs qos 1 or 2 (the flag means at least once)",
        ));
    }
    let flags = if p.qos == Qos::AtMostOnce {
        p.flags
    } else {
        p.flags.with(Flags::RELIABLE)
    };
    let outgoing = Outgoing {
        to: p.to,
        topic: p.topic,
        payload: p.payload,
        content_type: p.content_type,
        qos: p.qos,
        priority: p.priority,
        max_latency: p.max_latency,
        flags,
        schema_id: p.schema_id,
        classification: p.classification,
        properties: p.properties,
        sender: sender_of(sender),
        relay: None,
        id: None,
    };
    Ok((outgoing, p.wait))
}

/// The identity a component's credential names, as it crosses with what it sends.
fn sender_of(principal: &Principal) -> Sender {
    Sender {
        subject: principal.subject.clone(),
        roles: principal
            .roles
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        attributes: principal.attributes.clone(),
        expires: principal.expires,
        credential: None,
    }
}

#[utoipa::path(
    post,
    path = "/messages",
    tag = "messages",
    security(("bearer" = [])),
    request_body = SendRequest,
    responses(
        (status = 202, description = "Accepted for delivery (qos ≥ 1: persisted; qos 0 on a topic the destination has no subscriber for is accepted and not sent, counted in `delivery.unwanted`)", body = MessageAccepted),
        (status = 200, description = "With `wait`: the destination acknowledged it", body = MessageAcknowledged),
        (status = 400, description = "A body that breaks a rule (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 403, description = "The agreement does not let the topic flow that way (`topic_not_agreed`), or a component token does not allow publishing on it (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No federation with the destination (`unknown_destination`)", body = ErrorBody),
        (status = 409, description = "The federation is not active (`federation_not_active`)", body = ErrorBody),
        (status = 413, description = "Larger than the agreement allows, or a body over the API's 2 MiB limit (`too_large`)", body = ErrorBody),
        (status = 422, description = "A qos above the agreed one (`qos_not_agreed`), refused by the queue (`refused`), or with `wait`: it will not be delivered (`dead_lettered`)", body = ErrorBody),
        (status = 503, description = "The federation's queue is at its limit for a qos ≥ 1 message (`queue_full`, with `Retry-After`: qos 0 messages are shed instead, lowest priority first), the peer is unreachable (`peer_unreachable`), or the gateway is stopping (`stopping`)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "With `queue_full`: seconds to wait before sending again"))),
    )
)]
async fn send_message(
    State(node): State<Node>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<SendRequest>, JsonRejection>,
) -> Result<Sent, ApiError> {
    let Json(body) = body?;
    let (outgoing, wait) = body.into_outgoing(&principal)?;
    principal
        .may_publish(&outgoing.topic)
        .map_err(|e| forbidden(&node, &principal, &e))?;
    // A request does not hold its connection while the queue is full: it is told to come back.
    let submitted = node.submit(outgoing, wait, WhenFull::Refuse).await?;
    outcome(submitted).await
}

/// What became of a submitted message, as `POST /v1/messages` answers.
enum Sent {
    /// `202 Accepted`.
    Accepted(MessageAccepted),
    /// `200 OK`: the sender waited.
    Acknowledged(MessageAcknowledged),
}

impl IntoResponse for Sent {
    fn into_response(self) -> Response {
        match self {
            Self::Accepted(body) => (StatusCode::ACCEPTED, Json(body)).into_response(),
            Self::Acknowledged(body) => (StatusCode::OK, Json(body)).into_response(),
        }
    }
}

impl From<Sent> for PublishReply {
    fn from(sent: Sent) -> Self {
        match sent {
            Sent::Accepted(body) => Self::Accepted(body),
            Sent::Acknowledged(body) => Self::Acknowledged(body),
        }
    }
}

/// The answer for a submitted message: accepted, or (when the sender waits) acknowledged or
/// dead-lettered.
async fn outcome(mut submitted: Submitted) -> Result<Sent, ApiError> {
    submitted.accepted().await?;
    let id = submitted.id;
    let Some(outcome) = submitted.outcome else {
        return Ok(Sent::Accepted(MessageAccepted { id }));
    };
    match outcome.await {
        Ok(Ok(())) => Ok(Sent::Acknowledged(MessageAcknowledged {
            id,
            status: models::DeliveryStatus::Acknowledged,
        })),
        Ok(Err(reason)) => Err(ApiError::dead_lettered(format!(
            "message {id} was dead-lettered: {}",
            crate::gateway::stream::describe(reason)
        ))),
        Err(_) => Err(ApiError::stopping()),
    }
}

/// Messages submitted on one publish socket and not yet answered, at most.
const PUBLISH_WINDOW: usize = 16_384;

/// Read buffer of the API's WebSockets. tungstenite zeroes the free part of its read buffer
/// before every read (128 KiB by default), which cost more CPU than parsing the message in it
/// when messages are a few KiB; a larger message still arrives, over several reads.
const WS_READ_BUFFER: usize = 16 * 1024;

#[utoipa::path(
    get,
    path = "/messages/publish",
    tag = "messages",
    security(("bearer" = [])),
    params(PublishQuery),
    description = "A WebSocket for pipelined sending. Each text frame is one message: a `SendRequest`, \
        the body of `POST /v1/messages`. Each is answered with a `PublishReply` text frame, in the \
        order the messages came: `MessageAccepted`, `MessageAcknowledged` (it asked to `wait`), or an \
        `ErrorBody`, after which the stream goes on. With `format=binary` each message is instead a \
        binary frame (version 1: `u8 1, u8 0x01, u8 qos, u8 priority, u8 flags, u8 options (bit 0 \
        wait, bit 1 labels, bit 2 properties), u32 max_latency ms (0 none), str to, str topic, str \
        content_type (empty: application/octet-stream)`, with labels `str schema_id, str \
        classification`, with properties `u16 n, n x (str name, str value), u32 length and the \
        correlation data, str reply_to`, then the raw payload to the end of the frame; integers \
        big-endian, `str` a u16 length and UTF-8) and each answer a binary frame (`u8 1, u8 0x02` \
        accepted or `0x03` acknowledged, then the 16 bytes of the envelope id; `u8 1, u8 0x04, str \
        code, str message` refused). A frame of the other kind, or a malformed one, is answered with \
        an `ErrorBody` (`bad_request`) naming what is wrong. \
        When the federation's queue is full, a qos ≥ 1 message waits for room and the socket reads \
        nothing more meanwhile (back-pressure); a qos 0 message is accepted and may be shed, lowest \
        priority first.",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "A wrong query (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 403, description = "A component token without the `publish` action (`forbidden`); one with it is answered `forbidden` for each message on a topic outside its patterns, and the stream goes on; once the token is revoked or expires, each message is answered `unauthorized`", body = ErrorBody),
    )
)]
async fn publish(
    State(node): State<Node>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<PublishQuery>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    principal
        .may(Action::Publish)
        .map_err(|e| forbidden(&node, &principal, &e))?;
    let format = q.format.unwrap_or_default();
    Ok(ws
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| publish_loop(node, principal, socket, format))
        .into_response())
}

/// An answer on the publish socket, ready or waiting for the message's acceptance.
enum Reply {
    Ready(PublishReply),
    Waiting(Submitted),
}

/// Each frame of `format` is one message (the body of `POST /v1/messages`, or its binary
/// frame); each gets one answer in that format, in order. Messages are pipelined: the reader
/// submits them as they come, so many wait for the same journal commit; the writer answers
/// them in order as they are accepted.
async fn publish_loop(node: Node, principal: Principal, socket: WebSocket, format: Format) {
    let stopping = node.stopping();
    let (mut sink, mut incoming) = socket.split();
    let (replies, mut queued) = tokio::sync::mpsc::channel::<Reply>(PUBLISH_WINDOW);
    let writer = async move {
        while let Some(reply) = queued.recv().await {
            let reply = match reply {
                Reply::Ready(reply) => reply,
                Reply::Waiting(s) => match outcome(s).await {
                    Ok(sent) => sent.into(),
                    Err(e) => PublishReply::Refused(e.body()),
                },
            };
            if sink.feed(reply_frame(&reply, format)).await.is_err() {
                return;
            }
            if queued.is_empty() && sink.flush().await.is_err() {
                return;
            }
        }
        let _ =
            tokio::time::timeout(Duration::from_secs(1), sink.send(WsMessage::Close(None))).await;
    };
    let reader = async move {
        loop {
            let frame = tokio::select! {
                () = stopping.cancelled() => break,
                frame = incoming.next() => frame,
            };
            let message = match (frame, format) {
                (Some(Ok(WsMessage::Text(text))), Format::Json) => {
                    serde_json::from_str::<SendRequest>(text.as_str())
                        .map_err(|e| ApiError::bad_request(format!("message: {e}")))
                        .and_then(SendRequest::into_publish)
                }
                (Some(Ok(WsMessage::Binary(bytes))), Format::Binary) => {
                    binary::Publish::decode(&bytes)
                        .map_err(|e| ApiError::bad_request(format!("binary publish frame: {e}")))
                }
                (Some(Ok(WsMessage::Binary(_))), Format::Json) => Err(ApiError::bad_request(
                    "a message is a text frame holding the JSON body of POST /v1/messages \
                     (open the socket with ?format=binary to send binary frames)",
                )),
                (Some(Ok(WsMessage::Text(_))), Format::Binary) => Err(ApiError::bad_request(
                    "this socket was opened with format=binary: a message is a binary frame \
                     (a publish request of binary format version 1), not a text frame",
                )),
                (Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)), _) => break,
                (Some(Ok(_)), _) => continue,
            };
            let reply = publish_one(&node, &principal, message).await;
            if replies.send(reply).await.is_err() {
                break;
            }
        }
        // Dropping `replies` lets the writer answer what is queued, then close.
    };
    tokio::join!(reader, writer);
}

async fn publish_one(
    node: &Node,
    principal: &Principal,
    message: Result<binary::Publish, ApiError>,
) -> Reply {
    let submitted = async {
        node.recheck(principal).map_err(|e| {
            node.count_refusal(e.reason());
            ApiError::refused_token(&e)
        })?;
        let (outgoing, wait) = outgoing(message?, principal)?;
        principal
            .may_publish(&outgoing.topic)
            .map_err(|e| forbidden(node, principal, &e))?;
        // Waiting for room here stops this socket's reader: the publisher feels back-pressure
        // (DESIGN §3.5) while the writer goes on answering what is accepted.
        Ok::<_, ApiError>(node.submit(outgoing, wait, WhenFull::Wait).await?)
    };
    match submitted.await {
        Ok(s) => Reply::Waiting(s),
        Err(e) => Reply::Ready(PublishReply::Refused(e.body())),
    }
}

/// The frame of `reply` in `format`.
fn reply_frame(reply: &PublishReply, format: Format) -> WsMessage {
    match format {
        Format::Json => text_frame(reply),
        Format::Binary => WsMessage::Binary(binary::encode_reply(reply).into()),
    }
}

/// A text frame holding `message` as JSON.
fn text_frame(message: &impl serde::Serialize) -> WsMessage {
    // Invariant: the models serialize to JSON without fail (no maps with non-string keys).
    let text = serde_json::to_string(message)
        .unwrap_or_else(|e| unreachable!("an API model does not serialize: {e}"));
    WsMessage::Text(text.into())
}

#[utoipa::path(
    get,
    path = "/messages/dead-letters",
    tag = "messages",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The latest 1000 messages that will not be delivered, with why", body = DeadLetterList),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 500, description = "The journal failed (`internal`)", body = ErrorBody),
    )
)]
async fn dead_letters(State(node): State<Node>) -> Result<Json<DeadLetterList>, ApiError> {
    let letters = node.dead_letters(1000).await.map_err(ApiError::internal)?;
    Ok(Json(DeadLetterList {
        dead_letters: letters.iter().map(DeadLetterView::from).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/token/rotate",
    tag = "node",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A fresh admin token is in force and in the token file; the one that authenticated this request no longer works", body = TokenRotated),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 500, description = "The token file could not be written; the old token stays in force (`internal`)", body = ErrorBody),
    )
)]
async fn rotate_token(State(node): State<Node>) -> Result<Json<TokenRotated>, ApiError> {
    let file = node
        .rotate_admin_token()
        .await
        .map_err(|e| ApiError::internal(format!("cannot rotate the admin token: {e}")))?;
    Ok(Json(TokenRotated {
        token_file: file.display().to_string(),
    }))
}

#[utoipa::path(
    get,
    path = "/ca",
    tag = "node",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "This mesh's trust bundle and which partners have stored it", body = TrustView),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 500, description = "The registry could not be read (`internal`)", body = ErrorBody),
    )
)]
async fn show_trust(State(node): State<Node>) -> Result<Json<TrustView>, ApiError> {
    let status = node.trust_status().await.map_err(ApiError::internal)?;
    Ok(Json(TrustView::of(status, None)))
}

#[utoipa::path(
    post,
    path = "/ca/reload",
    tag = "node",
    security(("bearer" = [])),
    description = "Reads the mesh's trust bundle, its issuing CA and the node certificate again         from the node directory — after `meshfed ca rotate` or `meshfed ca retire-old` changed         them — uses them for new links and for signing, and sends the bundle's signed         statement to every partner on its open link (partners not connected get it on their         next link).",
    responses(
        (status = 200, description = "In use and announced", body = TrustView),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 500, description = "The files do not make a usable identity; the one in use stays (`internal`)", body = ErrorBody),
    )
)]
async fn reload_trust(State(node): State<Node>) -> Result<Json<TrustView>, ApiError> {
    let (status, told) = node.reload_trust().await.map_err(|e| {
        ApiError::internal(format!("cannot use the node directory's CA files: {e}"))
    })?;
    Ok(Json(TrustView::of(status, Some(told))))
}

#[utoipa::path(
    get,
    path = "/messages/stream",
    tag = "messages",
    security(("bearer" = [])),
    params(StreamQuery),
    description = "A WebSocket of delivered envelopes: each text frame is one `Envelope` in the \
        spec's JSON layout, or with `proof=required` in the export form (the same JSON plus \
        `proof`, the envelope as it crossed, checkable alone against the source mesh's CA). \
        With `format=binary` each envelope is instead a binary frame carrying the same fields, \
        with the certificate, the signature, the proof and the payload as raw bytes (version 1: \
        `u8 1, u8 0x10, u8 parts` (bit 0 signed, 1 encrypted, 2 batch, 3 message, 4 proof), \
        then the fields in a fixed order, the payload last; the layout is documented in \
        `meshfed_node::api::binary`). \
        With `durable`, the subscriber acknowledges with `DurableAck` text \
        frames, and the gateway sends `StreamReply` frames besides envelopes: `Acked` once an \
        acknowledgement that asked to `confirm` is committed, or an `ErrorBody` for one it refuses; \
        these stay JSON text frames with `format=binary` too. A durable subscription keeps its \
        envelopes as JSON: sent as binary frames, their JSON payloads are that JSON re-written \
        (compact, keys sorted), as the JSON frames show them. \
        The upgrade completes once every connected partner has applied an interest that holds \
        the subscription (at most a heartbeat interval): a qos 0 message published there after \
        it is forwarded.",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "A wrong query (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 403, description = "A component token without the `subscribe` action, or whose topic patterns do not hold `topic` (which it must give) (`forbidden`); or one the policy's access rules do not let subscribe to `topic`, decided on the pattern as written (`access_denied`); a live stream's each delivery is decided again on its topic and source under the rules in force, and one they forbid is not sent (counted as `access_denied` in `meshfed_api_refused_total`). A component token revoked or expired while the stream is open closes it (close code 1008, the reason in its text) before the next envelope", body = ErrorBody),
        (status = 500, description = "The durable subscription could not be registered (`internal`)", body = ErrorBody),
    )
)]
async fn stream(
    State(node): State<Node>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    principal
        .may_subscribe(q.topic.as_ref())
        .map_err(|e| forbidden(&node, &principal, &e))?;
    let pattern = q.topic.unwrap_or_else(TopicPattern::all);
    // A component's token scope and the access rules must both allow it (the operator's
    // token answers to neither).
    if !principal.is_admin() {
        node.may_subscribe(&sender_of(&principal), &pattern, q.from.as_ref())
            .map_err(|r| {
                node.count_refusal(r.reason());
                tracing::debug!(subject = %principal.subject, refusal = %r, "refused a subscription by the access rules");
                ApiError::from(crate::gateway::SendError::Refused(r))
            })?;
    }
    let form = Form::from(q.proof.unwrap_or_default());
    let format = q.format.unwrap_or_default();
    if let Some(name) = q.durable {
        let name: SubscriptionName = name
            .parse()
            .map_err(|e| ApiError::bad_request(format!("durable: {e}")))?;
        if crate::gateway::local::durable::reserved(&name) {
            return Err(ApiError::bad_request(format!(
                "durable: {name:?}: names starting with meshfed: are the node's own"
            )));
        }
        // Registered before the upgrade completes: from then on nothing for it is missed.
        let reader = node
            .open_durable(name, pattern, q.from, form, false)
            .await
            .map_err(ApiError::internal)?;
        return Ok(ws
            .read_buffer_size(WS_READ_BUFFER)
            .on_upgrade(move |socket| {
                forward_durable(node, principal, reader, socket, form, format)
            })
            .into_response());
    }
    // Subscribed before the upgrade completes too: a client whose stream is open misses
    // nothing that arrives after, and every connected partner applied an interest holding it
    // (qos 0 messages published there from then on are forwarded).
    let live = node.subscribe(pattern, q.from, form).await;
    Ok(ws
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| forward(node, principal, socket, live, form, format))
        .into_response())
}

/// The close frame for a WebSocket whose component token was revoked or expired since it
/// opened (counted as a refusal); `None` while it holds. Checked before each envelope is sent,
/// so a subscriber that receives nothing is told at its next envelope.
fn lapsed(node: &Node, principal: &Principal) -> Option<WsMessage> {
    let e = node.recheck(principal).err()?;
    node.count_refusal(e.reason());
    tracing::debug!(subject = %principal.subject, jti = ?principal.token_id, reason = e.reason(), "closing a stream whose token no longer holds");
    Some(WsMessage::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::POLICY,
        reason: format!("the bearer token is refused: {e}").into(),
    })))
}

/// Whether the access rules in force now keep `delivery` from a component's live subscription
/// (counted as a refusal): they are asked per delivery, so a rule changed while the stream is
/// open holds for it. `who` is the component as the rules know it; `None` for the operator's
/// token, which answers to no rule.
fn withheld(
    node: &Node,
    principal: &Principal,
    who: Option<&crate::policy::access::Principal>,
    delivery: &Delivery,
) -> bool {
    let Some(who) = who else {
        return false;
    };
    let Err(r) = node.may_receive(who, &delivery.topic, &delivery.source) else {
        return false;
    };
    node.count_refusal(r.reason());
    tracing::debug!(subject = %principal.subject, topic = %delivery.topic, refusal = %r, "withheld a delivery from a subscriber by the access rules");
    true
}

/// The frame of `delivery` for a subscriber that asked for `form` in `format`, made once per
/// delivery, form and format whatever the number of subscribers.
fn delivery_frame(delivery: &Delivery, form: Form, format: Format) -> WsMessage {
    match format {
        Format::Json => WsMessage::Text(delivery.text_in(form).to_string().into()),
        Format::Binary => WsMessage::Binary(delivery.binary_in(form, encode_parts)),
    }
}

fn encode_parts(p: Parts<'_>) -> Vec<u8> {
    binary::encode_envelope(p.envelope, p.unproven, p.crossed)
}

/// The frame of a durable subscription's stored envelope (its JSON) in `format`.
fn stored_frame(text: String, format: Format) -> WsMessage {
    if format == Format::Json {
        return WsMessage::Text(text.into());
    }
    match Exported::from_json(&text) {
        Ok(e) => {
            let crossed = e.crossed.as_ref().map(|c| c.encode());
            WsMessage::Binary(
                binary::encode_envelope(&e.envelope, false, crossed.as_deref()).into(),
            )
        }
        Err(e) => {
            // Never expected: the gateway wrote this JSON. Better JSON than nothing: the
            // subscriber still gets, and can acknowledge, the envelope.
            tracing::error!(error = %e, "a stored envelope does not read back; sending its JSON to a binary subscriber");
            WsMessage::Text(text.into())
        }
    }
}

/// Sends every delivery of `live`, in `form` and `format`, to one WebSocket client until it or
/// the node goes away.
async fn forward(
    node: Node,
    principal: Principal,
    mut socket: WebSocket,
    mut live: Subscription,
    form: Form,
    format: Format,
) {
    let stopping = node.stopping();
    let who = (!principal.is_admin()).then(|| node.local_principal(&sender_of(&principal)));
    loop {
        let delivery = tokio::select! {
            () = stopping.cancelled() => break,
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
            d = live.rx.recv() => d,
        };
        // None: disconnected as a slow consumer, or the gateway stops.
        let Some(delivery) = delivery else { break };
        if let Some(close) = lapsed(&node, &principal) {
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close)).await;
            return;
        }
        if withheld(&node, &principal, who.as_ref(), &delivery) {
            continue;
        }
        // One write (and flush) for whatever is queued, not one per message.
        if socket
            .feed(delivery_frame(&delivery, form, format))
            .await
            .is_err()
            || (live.rx.is_empty() && socket.flush().await.is_err())
        {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(WsMessage::Close(None))).await;
}

async fn forward_durable(
    node: Node,
    principal: Principal,
    (mut reader, mut saves): (
        durable::Reader,
        tokio::sync::mpsc::UnboundedReceiver<durable::Saved>,
    ),
    mut socket: WebSocket,
    form: Form,
    format: Format,
) {
    loop {
        let replies: Vec<StreamReply> = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    let acked = serde_json::from_str::<DurableAck>(text.as_str())
                        .map_err(|e| format!("not an acknowledgement ({e})"))
                        .and_then(|a| reader.ack(&a.ack, a.confirm));
                    match acked {
                        Ok(()) => continue,
                        Err(e) => vec![StreamReply::Refused(ApiError::bad_request(e).body())],
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
            Some(outcome) = saves.recv() => reader
                .saved(outcome)
                .into_iter()
                .map(|d| match d {
                    Ok(acked) => StreamReply::Acked(Acked { acked }),
                    Err(e) => StreamReply::Refused(ApiError::internal(e).body()),
                })
                .collect(),
            next = reader.next() => match next {
                Some(next) => {
                    if let Some(close) = lapsed(&node, &principal) {
                        let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close)).await;
                        return;
                    }
                    let frame = match next {
                        durable::Next::Stored(text) => stored_frame(text, format),
                        durable::Next::Live(d) => delivery_frame(&d, form, format),
                    };
                    if socket.send(frame).await.is_err() {
                        break;
                    }
                    continue;
                }
                None => break,
            },
        };
        for reply in replies {
            if socket.send(text_frame(&reply)).await.is_err() {
                return;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(WsMessage::Close(None))).await;
}

#[utoipa::path(
    get,
    path = "/directory",
    tag = "health",
    responses(
        (status = 200, description = "A broker's discovery directory: the mesh descriptors its neighbours published, each checked against the CA it carries (no token needed). Not a trust anchor: join with an invitation or a CA fingerprint obtained out of band", body = DirectoryView),
        (status = 404, description = "This node is a gateway (`not_a_broker`)", body = ErrorBody),
    )
)]
async fn directory(State(node): State<Node>) -> Result<Json<DirectoryView>, ApiError> {
    let Some(listed) = node.directory() else {
        return Err(ApiError::not_a_broker(
            "this node is a gateway: brokers serve the discovery directory (meshfed federation discover --broker ADDR)",
        ));
    };
    let descriptors = listed
        .into_iter()
        .map(|l| DescriptorView {
            mesh: l.descriptor.mesh,
            capabilities: l.descriptor.capabilities,
            addresses: l.descriptor.addresses,
            ca_fingerprint: l.ca_fingerprint.to_string(),
            issued: crate::clock::rfc3339(l.descriptor.issued),
            expires: crate::clock::rfc3339(l.descriptor.expires),
        })
        .collect();
    Ok(Json(DirectoryView { descriptors }))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus metrics in the OpenMetrics text format (kept with prometheus-client)", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"))
)]
async fn metrics(State(node): State<Node>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics().await,
    )
}
