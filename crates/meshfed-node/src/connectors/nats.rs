//! The NATS connector: an `async-nats` client of the mesh's NATS server.
//!
//! The client connects in the background and reconnects by itself, after the connector's
//! backoff; its events set the connector's state. Each export rule takes its subject either
//! from a core subscription (at most once on the bus: nothing to acknowledge) or from a durable
//! JetStream pull consumer (`jetstream_stream`), whose messages are acknowledged once the
//! gateway journaled them; the stream sequence then fixes the envelope id, so that a message
//! JetStream delivers again is the same envelope, which a qos 2 receiver drops.
//!
//! What the connector publishes is accepted once the server has it: on core NATS a flush the
//! server answered (qos ≥ 1), through JetStream (`jetstream = true`) the publish
//! acknowledgement, deduplicated on the envelope id (`Nats-Msg-Id`). Headers carry the user
//! properties, `Content-Type`, and the origin marker.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream;
use futures_util::StreamExt;
use meshfed_proto::envelope::Qos;
use tokio::sync::mpsc;

use super::status::Connection;
use super::{BoxFuture, LocalProps, Put, Shared, Taken};
use crate::config::connector::{JetStreamSource, NatsAuth, NatsBus};

/// The header carrying the payload's media type.
const CONTENT_TYPE: &str = "Content-Type";

/// Publishes on the NATS bus.
#[derive(Clone)]
pub(crate) struct Publisher {
    client: async_nats::Client,
    js: jetstream::Context,
}

/// The headers of `props`: each user property, the content type and the origin.
fn headers_of(props: LocalProps) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in props.user {
        h.append(k.as_str(), v.as_str());
    }
    if let Some(ct) = props.content_type {
        h.insert(CONTENT_TYPE, ct.as_str());
    }
    if let Some(origin) = props.origin {
        h.insert(super::ORIGIN, origin.to_string().as_str());
    }
    h
}

/// The properties a message's headers carry.
fn props_of(headers: Option<&HeaderMap>, reply: Option<String>) -> LocalProps {
    let mut props = LocalProps {
        reply_to: reply,
        ..LocalProps::default()
    };
    if let Some(h) = headers {
        for (name, values) in h.iter() {
            let name = name.to_string();
            if name.eq_ignore_ascii_case(CONTENT_TYPE) {
                props.content_type = values.first().map(|v| v.as_str().to_owned());
                continue;
            }
            for v in values {
                props.user.push((name.clone(), v.as_str().to_owned()));
            }
        }
    }
    props.user.sort();
    props.take_origin();
    props
}

impl Publisher {
    pub(crate) async fn send(&self, mut put: Put) -> Result<BoxFuture<Result<(), String>>, String> {
        let reply = put.props.reply_to.take();
        let headers = headers_of(put.props);
        if let Some(id) = put.jetstream {
            let publish = jetstream::message::PublishMessage::build()
                .payload(put.payload)
                .headers(headers)
                .message_id(id);
            let ack = self
                .js
                .send_publish(put.name, publish)
                .await
                .map_err(|e| format!("JetStream publish: {e}"))?;
            return Ok(Box::pin(async move {
                ack.await
                    .map(drop)
                    .map_err(|e| format!("JetStream did not acknowledge the publish: {e}"))
            }));
        }
        match reply {
            Some(reply) => {
                self.client
                    .publish_with_reply_and_headers(put.name, reply, headers, put.payload)
                    .await
            }
            None => {
                self.client
                    .publish_with_headers(put.name, headers, put.payload)
                    .await
            }
        }
        .map_err(|e| format!("NATS publish: {e}"))?;
        if put.qos == Qos::AtMostOnce {
            return Ok(Box::pin(async { Ok(()) }));
        }
        let client = self.client.clone();
        Ok(Box::pin(async move {
            client
                .flush()
                .await
                .map_err(|e| format!("the NATS server did not answer the flush: {e}"))
        }))
    }
}

/// Connects to the server (in the background, retrying) and starts a task per export rule,
/// which hands what it takes to `taken`.
pub(super) async fn connect(
    shared: Arc<Shared>,
    bus: NatsBus,
    taken: mpsc::Sender<Taken>,
) -> Result<super::Publisher, String> {
    let events = shared.clone();
    let reconnect_max = shared.config.reconnect_max;
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("meshfed {} {}", shared.gateway.mesh(), shared.config.name))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| {
            let attempt = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
            crate::backoff::delay(super::Backoff::FIRST, reconnect_max, attempt)
        })
        .event_callback(move |event| {
            let shared = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(connector = %shared.config.name, "connected to the NATS server");
                        shared.entry.set(Connection::Connected);
                    }
                    async_nats::Event::Disconnected => {
                        shared.failed("disconnected from the NATS server".to_owned());
                    }
                    async_nats::Event::ServerError(e) => {
                        shared.failed(format!("the NATS server: {e}"));
                    }
                    async_nats::Event::ClientError(e) => {
                        shared.failed(format!("NATS client: {e}"));
                    }
                    other => {
                        tracing::info!(connector = %shared.config.name, event = %other, "NATS");
                    }
                }
            }
        });
    if let Some(files) = &bus.tls {
        options = options
            .require_tls(true)
            .tls_client_config(super::tls_config(&shared, files)?);
    }
    options = match &bus.auth {
        NatsAuth::None => options,
        NatsAuth::Token(f) => options.token(shared.secret(f)?),
        NatsAuth::Password { username, file } => {
            options.user_and_password(username.clone(), shared.secret(file)?)
        }
        NatsAuth::NKey(f) => options.nkey(shared.secret(f)?),
        NatsAuth::Creds(f) => {
            let path = shared.file(f);
            options
                .credentials_file(&path)
                .await
                .map_err(|e| format!("cannot read the credentials file {}: {e}", path.display()))?
        }
    };
    let client = options
        .connect(bus.url.as_str())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", bus.url))?;
    let js = jetstream::new(client.clone());
    for (index, rule) in shared.config.exports.iter().enumerate() {
        let subject = rule.mapping.local().as_str().to_owned();
        match &rule.jetstream {
            None => shared.gateway.spawn(take_core(
                shared.clone(),
                client.clone(),
                subject,
                taken.clone(),
            )),
            Some(source) => shared.gateway.spawn(take_jetstream(
                shared.clone(),
                js.clone(),
                source.clone(),
                subject,
                index,
                taken.clone(),
            )),
        }
    }
    // Where responders on this bus reply to requests from the federation.
    shared.gateway.spawn(take_core(
        shared.clone(),
        client.clone(),
        shared.replies.local_filter(),
        taken,
    ));
    Ok(super::Publisher::Nats(Box::new(Publisher { client, js })))
}

/// Takes the messages of a core subscription to `subject`.
async fn take_core(
    shared: Arc<Shared>,
    client: async_nats::Client,
    subject: String,
    taken: mpsc::Sender<Taken>,
) {
    let mut sub = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            shared.failed(format!("cannot subscribe to {subject}: {e}"));
            return;
        }
    };
    loop {
        let message = tokio::select! {
            () = shared.stopping.cancelled() => break,
            m = sub.next() => m,
        };
        let Some(m) = message else { break };
        let t = Taken {
            name: m.subject.to_string(),
            props: props_of(m.headers.as_ref(), m.reply.map(|r| r.to_string())),
            payload: m.payload,
            retained: false,
            id: None,
            settle: None,
        };
        if taken.send(t).await.is_err() {
            break;
        }
    }
    let _ = sub.unsubscribe().await;
}

/// Takes the messages of durable JetStream consumer `source` (made when missing, filtered on
/// `subject`), acknowledging each once the gateway journaled it; retries after the backoff
/// while the stream cannot be reached.
async fn take_jetstream(
    shared: Arc<Shared>,
    js: jetstream::Context,
    source: JetStreamSource,
    subject: String,
    index: usize,
    taken: mpsc::Sender<Taken>,
) {
    let mut backoff = super::Backoff::new(shared.config.reconnect_max);
    loop {
        let messages = async {
            let stream = js
                .get_stream(&source.stream)
                .await
                .map_err(|e| format!("JetStream stream {}: {e}", source.stream))?;
            let consumer: jetstream::consumer::PullConsumer = stream
                .get_or_create_consumer(
                    &source.durable,
                    jetstream::consumer::pull::Config {
                        durable_name: Some(source.durable.clone()),
                        filter_subject: subject.clone(),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        max_ack_pending: i64::try_from(2 * super::WINDOW).unwrap_or(1024),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| format!("JetStream consumer {}: {e}", source.durable))?;
            consumer
                .messages()
                .await
                .map_err(|e| format!("JetStream consumer {}: {e}", source.durable))
        }
        .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                shared.failed(e);
                if !backoff.wait(&shared.stopping).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                () = shared.stopping.cancelled() => return,
                m = messages.next() => m,
            };
            let m = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    shared.failed(format!("JetStream consumer {}: {e}", source.durable));
                    break;
                }
                None => break,
            };
            backoff.reset();
            // The same message delivered again is the same envelope.
            let id = m.info().ok().map(|i| {
                let ms = i.published.unix_timestamp_nanos() / 1_000_000;
                super::fixed_id(
                    u64::try_from(ms).unwrap_or_default(),
                    &format!(
                        "{}:{index}:{}:{}",
                        shared.config.name, source.stream, i.stream_sequence
                    ),
                )
            });
            let props = props_of(m.headers.as_ref(), None);
            let (message, acker) = m.split();
            let t = Taken {
                name: message.subject.to_string(),
                id,
                props,
                payload: message.payload,
                retained: false,
                settle: Some(Box::pin(async move {
                    let _ = acker.ack().await;
                })),
            };
            if taken.send(t).await.is_err() {
                return;
            }
        }
        if !backoff.wait(&shared.stopping).await {
            return;
        }
    }
}
