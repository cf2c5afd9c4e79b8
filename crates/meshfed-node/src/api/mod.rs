//! The node's HTTP API: health, metrics, and the admin and messaging endpoints under `/v1`
//! (DESIGN.md §9.2). Every `/v1` route needs the admin bearer token.

mod error;
mod openapi;

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use futures_util::{SinkExt as _, StreamExt as _};
use meshfed_proto::envelope::{ContentType, Flags, MaxLatency, Priority, Qos};
use meshfed_proto::{FederationId, MeshId, Topic, TopicPattern};
use meshfed_store::journal::SubscriptionName;
use serde::Deserialize;
use serde_json::{Value, json};

pub use error::ApiError;

use crate::gateway::federations::{self, Operation};
use crate::gateway::local::durable;
use crate::gateway::submit::Submitted;
use crate::gateway::{DEFAULT_INVITATION_TTL, FederationStatus, GatewayHandle, Outgoing};

type Node = GatewayHandle;

/// Serves the API on `listener` until the gateway stops.
pub(crate) fn serve(node: GatewayHandle, listener: tokio::net::TcpListener) {
    let router = router(node.clone());
    let stopping = node.stopping();
    node.spawn(async move {
        // Messages on the API's WebSockets are small and timed: no Nagle delay.
        let api = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let served = axum::serve(api, router)
            .with_graceful_shutdown(async move { stopping.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
}

/// The router of a running node.
fn router(node: GatewayHandle) -> Router {
    let v1 = Router::new()
        .route("/node", get(node_info))
        .route("/federations", get(list_federations))
        .route("/federations/invite", post(invite))
        .route("/federations/join", post(join))
        .route("/federations/{id}", get(show_federation))
        .route("/federations/{id}/{operation}", post(operate))
        .route("/messages", post(send_message))
        .route("/messages/stream", get(stream))
        .route("/messages/publish", get(publish))
        .route("/messages/dead-letters", get(dead_letters))
        .layer(middleware::from_fn_with_state(node.clone(), authorize));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(metrics))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
        .nest("/v1", v1)
        .with_state(node)
}

async fn authorize(
    State(node): State<Node>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !node.is_admin(presented) {
        return Err(ApiError::unauthorized());
    }
    Ok(next.run(req).await)
}

async fn node_info(State(node): State<Node>) -> Json<Value> {
    let info = node.node_info();
    Json(json!({
        "mesh": info.mesh,
        "node": info.node,
        "role": info.role,
        "uri": format!("meshfed://{}/{}", info.mesh, info.node),
        "federation_address": info.federation_addr.to_string(),
        "ca_fingerprint": info.ca_fingerprint,
        "node_cert_expires": federations::rfc3339(info.node_cert_expires),
        "trust_bundle_mesh": info.trust_bundle_mesh,
        // How this gateway signs what it sends, as it runs (its file may have changed since).
        "delivery": { "signatures": info.signatures },
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn list_federations(State(node): State<Node>) -> Result<Json<Value>, ApiError> {
    let views: Vec<Value> = node.federations().await?.iter().map(with_backlog).collect();
    Ok(Json(json!({ "federations": views })))
}

fn federation_id(raw: &str) -> Result<FederationId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad_request(format!("{e}")))
}

async fn show_federation(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let status = node.federation(federation_id(&id)?).await?;
    Ok(Json(with_backlog(&status)))
}

/// Adds the federation's outbound backlog and dead letters to its view.
fn with_backlog(status: &FederationStatus) -> Value {
    let mut view = federations::view(&status.record, status.link);
    let Some(stats) = &status.stream else {
        return view;
    };
    let b = &stats.backlog;
    if let Some(obj) = view.as_object_mut() {
        obj.insert(
            "backlog".to_owned(),
            json!({
                "messages": b.messages,
                "bytes": b.bytes,
                "by_priority": b.by_priority,
                "in_flight": b.in_flight,
                "awaiting_persistence": b.awaiting_persistence,
                "oldest_ms": b.oldest.map(|d| d.as_millis() as u64),
            }),
        );
        obj.insert(
            "dead_lettered".to_owned(),
            json!(stats.dead_lettered_total()),
        );
        obj.insert(
            "delivery".to_owned(),
            json!({
                "sent": stats.sent,
                "retransmitted": stats.retransmitted,
                "acknowledged": stats.acknowledged,
                "transfers": stats.transfers,
            }),
        );
    }
    view
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    peer: MeshId,
    #[serde(default)]
    ttl: Option<String>,
}

async fn invite(
    State(node): State<Node>,
    body: Result<Json<InviteBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let ttl = match body.ttl.as_deref() {
        None => DEFAULT_INVITATION_TTL,
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| ApiError::bad_request(format!("ttl {t:?}: {e}")))?,
    };
    let (token, record) = node.invite(body.peer, ttl).await?;
    Ok(Json(json!({
        "token": token.encode(),
        "token_id": record.token_id,
        "peer": record.peer_mesh,
        "expires": federations::rfc3339(record.expires),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    token: String,
}

async fn join(
    State(node): State<Node>,
    body: Result<Json<JoinBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let status = node.join(&body.token).await?;
    Ok(Json(federations::view(&status.record, status.link)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OperateBody {
    #[serde(default)]
    force: bool,
}

async fn operate(
    State(node): State<Node>,
    Path((id, operation)): Path<(String, String)>,
    body: Option<Json<OperateBody>>,
) -> Result<Json<Value>, ApiError> {
    let force = body.map(|Json(b)| b.force).unwrap_or_default();
    let op = match operation.as_str() {
        "suspend" => Operation::Suspend,
        "resume" => Operation::Resume,
        "terminate" => Operation::Terminate { forced: force },
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown operation {other:?}: use suspend, resume or terminate"
            )));
        }
    };
    let status = node.operate(federation_id(&id)?, op).await?;
    Ok(Json(federations::view(&status.record, status.link)))
}

/// `POST /v1/messages`, field names as in the spec envelope.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    to: MeshId,
    topic: Topic,
    payload: Value,
    #[serde(default)]
    content_type: Option<ContentType>,
    #[serde(default)]
    qos: Qos,
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    max_latency: Option<Value>,
    #[serde(default)]
    flags: Vec<String>,
    /// Answer only once the destination acknowledged (or the message was dead-lettered).
    #[serde(default)]
    wait: bool,
}

fn max_latency(v: Option<Value>) -> Result<Option<MaxLatency>, ApiError> {
    let bad = |e: String| ApiError::bad_request(format!("max_latency: {e}"));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let ms = n
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .ok_or_else(|| bad(format!("{n} is not a whole number of milliseconds")))?;
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

impl SendBody {
    /// The message this body asks for. Shared by `POST /v1/messages` and the publish stream.
    fn into_outgoing(self) -> Result<(Outgoing, bool), ApiError> {
        if self.wait && self.qos == Qos::AtMostOnce {
            return Err(ApiError::bad_request(
                "wait needs an acknowledged delivery: send with qos 1 or 2",
            ));
        }
        let wait = self.wait;
        let mut flags = self.flags.iter().try_fold(Flags::empty(), |acc, f| {
            Flags::from_name(f)
                .map(|fl| acc.with(fl))
                .map_err(|e| ApiError::bad_request(format!("flags: {e}")))
        })?;
        // DESIGN.md §3.5: `reliable` means qos ≥ 1, and qos ≥ 1 is reliable.
        if flags.contains(Flags::RELIABLE) && self.qos == Qos::AtMostOnce {
            return Err(ApiError::bad_request(
                "flags: reliable needs qos 1 or 2 (the flag means at least once)",
            ));
        }
        if self.qos != Qos::AtMostOnce {
            flags = flags.with(Flags::RELIABLE);
        }
        let content_type = self.content_type.unwrap_or_else(ContentType::json);
        let outgoing = Outgoing {
            to: self.to,
            topic: self.topic,
            payload: payload_bytes(&content_type, self.payload)?,
            content_type,
            qos: self.qos,
            priority: self.priority,
            max_latency: max_latency(self.max_latency)?,
            flags,
        };
        Ok((outgoing, wait))
    }
}

async fn send_message(
    State(node): State<Node>,
    body: Result<Json<SendBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    let (outgoing, wait) = body.into_outgoing()?;
    let submitted = node.submit(outgoing, wait).await?;
    outcome(submitted).await
}

/// The answer for a submitted message: accepted, or (when the sender waits) acknowledged or
/// dead-lettered.
async fn outcome(mut submitted: Submitted) -> Result<(StatusCode, Json<Value>), ApiError> {
    submitted.accepted().await?;
    let id = submitted.id.to_string();
    let Some(outcome) = submitted.outcome else {
        return Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))));
    };
    match outcome.await {
        Ok(Ok(())) => Ok((
            StatusCode::OK,
            Json(json!({ "id": id, "status": "acknowledged" })),
        )),
        Ok(Err(reason)) => Err(ApiError::dead_lettered(format!(
            "message {id} was dead-lettered: {reason}"
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

async fn publish(State(node): State<Node>, ws: WebSocketUpgrade) -> Response {
    ws.read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| publish_loop(node, socket))
        .into_response()
}

/// An answer on the publish socket, ready or waiting for the message's acceptance.
enum Reply {
    Ready(Value),
    Waiting(Submitted),
}

/// Each text frame is one message (the body of `POST /v1/messages`); each gets one answer, in
/// order. Messages are pipelined: the reader submits them as they come, so many wait for the
/// same journal commit; the writer answers them in order as they are accepted.
async fn publish_loop(node: Node, socket: WebSocket) {
    let (mut sink, mut incoming) = socket.split();
    let stopping = node.stopping();
    let (replies, mut queued) = tokio::sync::mpsc::channel::<Reply>(PUBLISH_WINDOW);
    let writer = async move {
        while let Some(reply) = queued.recv().await {
            let value = match reply {
                Reply::Ready(v) => v,
                Reply::Waiting(s) => match outcome(s).await {
                    Ok((_, Json(v))) => v,
                    Err(e) => e.to_json(),
                },
            };
            if sink
                .feed(WsMessage::Text(value.to_string().into()))
                .await
                .is_err()
            {
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
            let reply = match frame {
                Some(Ok(WsMessage::Text(text))) => publish_one(&node, text.as_str()).await,
                Some(Ok(WsMessage::Binary(_))) => Reply::Ready(
                    ApiError::bad_request(
                        "a message is a text frame holding the JSON body of POST /v1/messages",
                    )
                    .to_json(),
                ),
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            if replies.send(reply).await.is_err() {
                break;
            }
        }
        // Dropping `replies` lets the writer answer what is queued, then close.
    };
    tokio::join!(reader, writer);
}

async fn publish_one(node: &Node, text: &str) -> Reply {
    let submitted = async {
        let body: SendBody = serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("message: {e}")))?;
        let (outgoing, wait) = body.into_outgoing()?;
        Ok::<_, ApiError>(node.submit(outgoing, wait).await?)
    };
    match submitted.await {
        Ok(s) => Reply::Waiting(s),
        Err(e) => Reply::Ready(e.to_json()),
    }
}

async fn dead_letters(State(node): State<Node>) -> Result<Json<Value>, ApiError> {
    let letters = node.dead_letters(1000).await.map_err(ApiError::internal)?;
    let list: Vec<Value> = letters
        .iter()
        .map(|d| {
            json!({
                "id": d.id.to_string(),
                "to": d.destination,
                "topic": d.topic,
                "priority": d.priority.get(),
                "qos": d.qos.level(),
                "reason": d.reason,
                "at": federations::rfc3339(d.at),
            })
        })
        .collect();
    Ok(Json(json!({ "dead_letters": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    #[serde(default)]
    topic: Option<TopicPattern>,
    #[serde(default)]
    from: Option<MeshId>,
    #[serde(default)]
    durable: Option<String>,
}

async fn stream(
    State(node): State<Node>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let pattern = q.topic.unwrap_or_else(TopicPattern::all);
    if let Some(name) = q.durable {
        let name: SubscriptionName = name
            .parse()
            .map_err(|e| ApiError::bad_request(format!("durable: {e}")))?;
        // Registered before the upgrade completes: from then on nothing for it is missed.
        let reader = node
            .open_durable(name, pattern, q.from)
            .await
            .map_err(ApiError::internal)?;
        return Ok(ws
            .read_buffer_size(WS_READ_BUFFER)
            .on_upgrade(move |socket| forward_durable(reader, socket))
            .into_response());
    }
    Ok(ws
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| forward(node, socket, pattern, q.from))
        .into_response())
}

/// Sends every matching delivery to one WebSocket client until it or the node goes away.
async fn forward(node: Node, mut socket: WebSocket, pattern: TopicPattern, from: Option<MeshId>) {
    let mut live = node.subscribe(pattern, from);
    let stopping = node.stopping();
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
        // One write (and flush) for whatever is queued, not one per message.
        if socket
            .feed(WsMessage::Text(delivery.text.to_string().into()))
            .await
            .is_err()
            || (live.rx.is_empty() && socket.flush().await.is_err())
        {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(WsMessage::Close(None))).await;
}

/// An acknowledgement from a durable subscriber: `{"ack": "<envelope id>"}` acknowledges that
/// envelope and every one sent before it; with `"confirm": true` the gateway answers
/// `{"acked": "<envelope id>"}` once that is committed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DurableAck {
    ack: String,
    #[serde(default)]
    confirm: bool,
}

async fn forward_durable(
    (mut reader, mut saves): (
        durable::Reader,
        tokio::sync::mpsc::UnboundedReceiver<durable::Saved>,
    ),
    mut socket: WebSocket,
) {
    loop {
        let replies: Vec<Value> = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    let acked = serde_json::from_str::<DurableAck>(text.as_str())
                        .map_err(|e| format!("not an acknowledgement ({e})"))
                        .and_then(|a| reader.ack(&a.ack, a.confirm));
                    match acked {
                        Ok(()) => continue,
                        Err(e) => vec![ApiError::bad_request(e).to_json()],
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
            Some(outcome) = saves.recv() => reader
                .saved(outcome)
                .into_iter()
                .map(|d| match d {
                    Ok(id) => json!({ "acked": id }),
                    Err(e) => ApiError::internal(e).to_json(),
                })
                .collect(),
            next = reader.next() => match next {
                Some(text) => {
                    if socket.send(WsMessage::Text(text.into())).await.is_err() {
                        break;
                    }
                    continue;
                }
                None => break,
            },
        };
        for reply in replies {
            if socket
                .send(WsMessage::Text(reply.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(WsMessage::Close(None))).await;
}

async fn metrics(State(node): State<Node>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics().await,
    )
}
