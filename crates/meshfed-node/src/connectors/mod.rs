//! Connectors: the gateway's local side on the mesh's own bus (DESIGN §3.11). A connector is a
//! client of the mesh's MQTT broker ([`mqtt`]) or NATS server ([`nats`]), and one more local
//! side of the gateway beside the API, reaching it only through [`GatewayHandle`].
//!
//! Two pumps per connector, one each way, over what the bus modules provide (a stream of
//! [`Taken`] messages and a [`Publisher`]):
//!
//! ```text
//! export   bus ──► Taken ──► rule (mapping, loop check) ──► submit ──► accepted ──► settle on the bus
//!                                                                      (journaled)   (PUBACK / JetStream ack)
//! import   durable subscription ──► rule (mapping) ──► publish ──► broker accepted ──► acknowledge
//!          meshfed:connector:NAME:i                    (origin)    (PUBACK / flush /     (cursor saved)
//!                                                                   JetStream ack)
//! ```
//!
//! - **Nothing acknowledged is lost.** A message of the bus is settled (MQTT PUBACK, JetStream
//!   ack) only once the gateway journaled it (qos ≥ 1); a federation message is kept in a
//!   durable subscription of the connector's own (journaled, proven envelopes only) until the
//!   bus's broker accepted it. A gateway killed in between, or a broker restarting, costs a
//!   redelivery, never a message.
//! - **Loops.** What a connector publishes on the bus carries the mesh it came from
//!   (`meshfed-origin`, an MQTT 5 user property or a NATS header); a message of the bus marked
//!   with the partner an export rule would send it to is not sent back, and is counted.
//! - **Dialects.** Names are translated by the rules' [`meshfed_proto::dialect::Mapping`]; a
//!   message that fits no rule, or that the other dialect cannot name, is not forwarded, and
//!   is counted.

mod replies;
pub(crate) mod status;

mod mqtt;
mod nats;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use meshfed_proto::MeshId;
use meshfed_proto::envelope::export::Form;
use meshfed_proto::envelope::{
    ContentType, Envelope, EnvelopeId, Flags, Properties, Qos, Timestamp,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::connector::{Bus, ConnectorConfig};
use crate::gateway::local::durable::Next;
use crate::gateway::room::WhenFull;
use crate::gateway::{GatewayHandle, Outgoing, SendError, Sender};
use status::{Connection, Entry};

/// The user property (MQTT 5) or header (NATS) naming the mesh a message came from.
pub(crate) const ORIGIN: &str = "meshfed-origin";

/// Messages a pump has in flight (submitted and not yet accepted, or published and not yet
/// accepted by the broker), at most.
const WINDOW: usize = 512;

/// Longest wait for the bus's broker to accept a message the connector published.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A future settling or awaiting something on the bus.
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a message of the bus carries besides its name and payload, in either dialect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LocalProps {
    /// MQTT 5 user properties; NATS headers (each value of a multi-valued one).
    pub(crate) user: Vec<(String, String)>,
    /// MQTT 5 content type; NATS header `Content-Type`.
    pub(crate) content_type: Option<String>,
    /// MQTT 5 correlation data.
    pub(crate) correlation: Option<Bytes>,
    /// MQTT 5 response topic; NATS reply subject.
    pub(crate) reply_to: Option<String>,
    /// The mesh the message came from, when a connector published it.
    pub(crate) origin: Option<MeshId>,
}

impl LocalProps {
    /// Takes the origin marker out of the user properties.
    fn take_origin(&mut self) {
        if let Some(i) = self.user.iter().position(|(k, _)| k == ORIGIN) {
            let (_, v) = self.user.remove(i);
            self.origin = v.parse().ok();
        }
    }
}

/// A message taken from the bus.
pub(crate) struct Taken {
    /// Its topic or subject.
    pub(crate) name: String,
    pub(crate) payload: Bytes,
    pub(crate) props: LocalProps,
    /// Whether the broker delivered it from its retained store (MQTT).
    pub(crate) retained: bool,
    /// The envelope id it crosses under, when the bus fixes one ([`fixed_id`]); else a fresh
    /// one.
    pub(crate) id: Option<EnvelopeId>,
    /// Settles it on the bus (acknowledges it), once the federation took it.
    pub(crate) settle: Option<BoxFuture<()>>,
}

/// A federation message to publish on the bus.
pub(crate) struct Put {
    /// Its topic or subject on the bus.
    pub(crate) name: String,
    pub(crate) payload: Bytes,
    pub(crate) props: LocalProps,
    /// The qos the broker must accept it at.
    pub(crate) qos: Qos,
    /// MQTT: retained.
    pub(crate) retain: bool,
    /// NATS: through JetStream, deduplicated on this id (the envelope id).
    pub(crate) jetstream: Option<String>,
}

/// Publishes on the bus.
#[derive(Clone)]
pub(crate) enum Publisher {
    Mqtt(mqtt::Publisher),
    Nats(Box<nats::Publisher>),
}

impl Publisher {
    /// Hands `put` to the bus's client, in order with the other calls; the future returned
    /// ends when the broker accepted it (at once for qos 0).
    async fn send(&self, put: Put) -> Result<BoxFuture<Result<(), String>>, String> {
        match self {
            Self::Mqtt(p) => p.send(put).await,
            Self::Nats(p) => p.send(put).await,
        }
    }
}

/// What a connector's pumps share.
pub(crate) struct Shared {
    pub(crate) config: ConnectorConfig,
    pub(crate) gateway: GatewayHandle,
    pub(crate) entry: Arc<Entry>,
    /// The node directory, which file paths of the configuration are relative to.
    pub(crate) dir: PathBuf,
    pub(crate) stopping: CancellationToken,
    /// Who the federation's partners see as the sender of what this connector exports.
    sender: Sender,
    /// The requests waiting for replies, both ways.
    pub(crate) replies: replies::Replies,
    /// What publishes on the bus, once connected.
    pub(crate) publisher: std::sync::OnceLock<Publisher>,
}

impl Shared {
    /// `path` of the configuration, on disk.
    pub(crate) fn file(&self, path: &crate::config::DirPath) -> PathBuf {
        path.resolve(&self.dir)
    }

    /// The secret (a password, token or NKey seed) in file `path` of the configuration,
    /// without its final line break.
    pub(crate) fn secret(&self, path: &crate::config::DirPath) -> Result<String, String> {
        let path = self.file(path);
        std::fs::read_to_string(&path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    /// Records that the bus failed: counted, logged and shown in `connector list`.
    pub(crate) fn failed(&self, error: String) {
        self.entry.counts.errors.inc();
        tracing::warn!(connector = %self.config.name, %error, "connector's bus");
        self.entry.set(Connection::Connecting {
            last_error: Some(error),
        });
    }
}

/// Starts every connector of the node's configuration.
pub(crate) fn start(gateway: &GatewayHandle, dir: &Path) {
    for config in &gateway.connector_configs() {
        let Some(entry) = gateway.connectors().get(config.name.as_str()).cloned() else {
            continue;
        };
        let shared = Arc::new(Shared {
            sender: Sender {
                subject: format!("connector:{}", config.name),
                roles: vec!["connector".to_owned()],
                ..Sender::default()
            },
            replies: replies::Replies::new(
                config.name.as_str(),
                match config.bus {
                    Bus::Mqtt(_) => meshfed_proto::dialect::Dialect::Mqtt,
                    Bus::Nats(_) => meshfed_proto::dialect::Dialect::Nats,
                },
                config.request_timeout,
            ),
            publisher: std::sync::OnceLock::new(),
            config: config.clone(),
            gateway: gateway.clone(),
            entry,
            dir: dir.to_path_buf(),
            stopping: gateway.stopping(),
        });
        gateway.spawn(run(shared));
    }
}

/// Connects to the bus and runs both pumps until the gateway stops.
async fn run(shared: Arc<Shared>) {
    let (taken_tx, taken_rx) = mpsc::channel::<Taken>(2 * WINDOW);
    // A file that cannot be read (a certificate, a password) may be put right while the
    // gateway runs: the connector tries again after its backoff.
    let mut backoff = Backoff::new(shared.config.reconnect_max);
    let publisher = loop {
        let connected = match &shared.config.bus {
            Bus::Mqtt(bus) => mqtt::connect(shared.clone(), bus.clone(), taken_tx.clone()).await,
            Bus::Nats(bus) => nats::connect(shared.clone(), bus.clone(), taken_tx.clone()).await,
        };
        match connected {
            Ok(p) => break p,
            Err(e) => {
                shared.failed(format!("cannot start: {e}"));
                if !backoff.wait(&shared.stopping).await {
                    return;
                }
            }
        }
    };
    drop(taken_tx);
    let _ = shared.publisher.set(publisher.clone());
    let imports =
        (0..shared.config.imports.len()).map(|i| import(shared.clone(), publisher.clone(), i));
    tokio::join!(
        export(shared.clone(), taken_rx),
        futures_util::future::join_all(imports),
        replies::deliver(shared.clone(), publisher.clone()),
    );
    shared.entry.set(Connection::Stopped);
}

/// The pump from the bus into the federation.
async fn export(shared: Arc<Shared>, mut taken: mpsc::Receiver<Taken>) {
    let (settle_tx, mut settle_rx) = mpsc::channel::<(
        Option<crate::gateway::submit::Submitted>,
        Option<BoxFuture<()>>,
    )>(WINDOW);
    let counts = shared.entry.counts.clone();
    let name = shared.config.name.clone();
    let settler = async move {
        while let Some((submitted, settle)) = settle_rx.recv().await {
            if let Some(mut s) = submitted
                && let Err(e) = s.accepted().await
            {
                // Not settled: the broker delivers it again.
                tracing::warn!(connector = %name, error = %e, "a message of the bus was not journaled");
                counts.errors.inc();
                continue;
            }
            counts.exported.inc();
            if let Some(settle) = settle {
                settle.await;
            }
        }
    };
    let reader = async {
        loop {
            let message = tokio::select! {
                () = shared.stopping.cancelled() => break,
                m = taken.recv() => m,
            };
            let Some(message) = message else { break };
            match forward(&shared, message).await {
                Forwarded::Submitted(s, settle) => {
                    if settle_tx.send((Some(s), settle)).await.is_err() {
                        break;
                    }
                }
                Forwarded::Done(settle) => {
                    if let Some(settle) = settle {
                        settle.await;
                    }
                }
                Forwarded::Stopping => break,
            }
        }
        drop(settle_tx);
    };
    tokio::join!(reader, settler);
}

/// What became of a message of the bus.
enum Forwarded {
    /// Submitted; settle it once accepted.
    Submitted(crate::gateway::submit::Submitted, Option<BoxFuture<()>>),
    /// Not forwarded, or forwarded at qos 0: settle it now.
    Done(Option<BoxFuture<()>>),
    /// The gateway is stopping.
    Stopping,
}

/// Maps `m` by the first export rule that takes it and submits it.
async fn forward(shared: &Shared, mut m: Taken) -> Forwarded {
    let counts = &shared.entry.counts;
    let settle = m.settle.take();
    if let Some(token) = shared.replies.local_token(&m.name) {
        return answer(shared, token.to_owned(), m, settle).await;
    }
    let mut mapped = None;
    for rule in &shared.config.exports {
        match rule.mapping.to_federation(&m.name) {
            Ok(Some(topic)) => {
                mapped = Some((rule, topic));
                break;
            }
            Ok(None) => {}
            Err(e) => {
                counts.unmapped.inc();
                tracing::debug!(connector = %shared.config.name, error = %e, "not forwarded");
                return Forwarded::Done(settle);
            }
        }
    }
    let Some((rule, topic)) = mapped else {
        counts.unmapped.inc();
        tracing::debug!(connector = %shared.config.name, name = %m.name, "fits no export rule; not forwarded");
        return Forwarded::Done(settle);
    };
    if m.retained && !rule.retained {
        return Forwarded::Done(settle);
    }
    if m.props.origin.as_ref() == Some(&rule.to) {
        counts.loops.inc();
        tracing::debug!(connector = %shared.config.name, name = %m.name, to = %rule.to, "came from the partner it would go to; not sent back");
        return Forwarded::Done(settle);
    }
    // A request: its reply comes back to this connector under a topic of its own.
    let reply_to = match m.props.reply_to.take() {
        None => None,
        Some(reply) => match shared.replies.wait(reply, m.props.correlation.clone()) {
            Ok(topic) => Some(topic),
            Err(e) => {
                shared.failed(format!("request on {} not forwarded: {e}", m.name));
                return Forwarded::Done(settle);
            }
        },
    };
    let base = match outgoing(shared, topic, &mut m, reply_to.clone()) {
        Ok(o) => o,
        Err(e) => {
            counts.refused.inc();
            tracing::info!(connector = %shared.config.name, name = %m.name, error = %e, "a message of the bus has properties the federation cannot carry");
            return Forwarded::Done(settle);
        }
    };
    let flags = if rule.qos == Qos::AtMostOnce {
        Flags::default()
    } else {
        Flags::default().with(Flags::RELIABLE)
    };
    let outgoing = Outgoing {
        to: rule.to.clone(),
        qos: rule.qos,
        flags,
        priority: rule.priority,
        id: m.id,
        ..base
    };
    match shared.gateway.submit(outgoing, false, WhenFull::Wait).await {
        Ok(s) if rule.qos == Qos::AtMostOnce => {
            drop(s);
            counts.exported.inc();
            Forwarded::Done(settle)
        }
        Ok(s) => Forwarded::Submitted(s, settle),
        Err(SendError::Refused(r)) => {
            counts.refused.inc();
            tracing::info!(connector = %shared.config.name, name = %m.name, reason = %r, "the federation refused a message of the bus");
            if let Some(w) = reply_to.as_ref().and_then(|t| shared.replies.replied(t)) {
                replies::tell(shared, w, &format!("refused: {r}")).await;
            }
            Forwarded::Done(settle)
        }
        Err(SendError::Queue(crate::gateway::stream::Refused::Stopping)) => Forwarded::Stopping,
        Err(e) => {
            // Left unsettled: the broker delivers it again after a reconnect.
            shared.failed(format!("cannot take {}: {e}", m.name));
            Forwarded::Done(None)
        }
    }
}

/// A message of the bus as a reliable outgoing message on `topic` (its destination still to
/// set): its payload, content type, user properties and correlation data, and `reply_to`;
/// refused when the properties break the envelope's bounds.
fn outgoing(
    shared: &Shared,
    topic: meshfed_proto::Topic,
    m: &mut Taken,
    reply_to: Option<meshfed_proto::Topic>,
) -> Result<Outgoing, meshfed_proto::envelope::PropertiesError> {
    let properties = Properties::new(
        std::mem::take(&mut m.props.user),
        m.props.correlation.take().map(|b| b.to_vec()),
        reply_to,
    )?;
    let content_type = m
        .props
        .content_type
        .as_deref()
        .and_then(|c| c.parse::<ContentType>().ok())
        .unwrap_or_else(ContentType::octet_stream);
    Ok(Outgoing {
        to: shared.gateway.mesh().clone(),
        topic,
        payload: m.payload.to_vec(),
        content_type,
        qos: Qos::AtLeastOnce,
        priority: meshfed_proto::envelope::Priority::default(),
        max_latency: None,
        flags: Flags::default().with(Flags::RELIABLE),
        schema_id: None,
        classification: None,
        sender: shared.sender.clone(),
        relay: None,
        id: None,
        properties,
    })
}

/// A reply a responder published on this connector's reply name `token`: it goes back to the
/// mesh that asked, under the request's `reply_to`.
async fn answer(
    shared: &Shared,
    token: String,
    mut m: Taken,
    settle: Option<BoxFuture<()>>,
) -> Forwarded {
    let Some(asked) = shared.replies.answered(&token) else {
        shared.entry.counts.unmapped.inc();
        tracing::info!(connector = %shared.config.name, name = %m.name, "a reply to no request waiting (late, or sent twice); not forwarded");
        return Forwarded::Done(settle);
    };
    // The requester matches the reply by its own correlation data.
    m.props.correlation = asked.correlation.map(Bytes::from);
    let outgoing = match outgoing(shared, asked.topic, &mut m, None) {
        Ok(o) => Outgoing { to: asked.to, ..o },
        Err(e) => {
            shared.entry.counts.refused.inc();
            tracing::info!(connector = %shared.config.name, error = %e, "a reply has properties the federation cannot carry");
            return Forwarded::Done(settle);
        }
    };
    match shared.gateway.submit(outgoing, false, WhenFull::Wait).await {
        Ok(s) => Forwarded::Submitted(s, settle),
        Err(SendError::Queue(crate::gateway::stream::Refused::Stopping)) => Forwarded::Stopping,
        Err(e) => {
            shared.entry.counts.refused.inc();
            tracing::info!(connector = %shared.config.name, error = %e, "a reply was refused");
            Forwarded::Done(settle)
        }
    }
}

/// The envelope id of a message the bus names by `key` (a stream and its sequence) and
/// stamped `ms` (milliseconds since the epoch): the same for every delivery of it, so that a
/// redelivered message is the same envelope, which a qos 2 receiver drops.
pub(crate) fn fixed_id(ms: u64, key: &str) -> EnvelopeId {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest.as_ref()[..10]);
    EnvelopeId::new(Timestamp(ms), random)
}

/// One message of an import rule the broker accepted (`counted`), or that was skipped:
/// acknowledge envelope `id` (`None` for a qos 0 message of the live stream, which has nothing
/// to acknowledge).
struct Published {
    id: Option<String>,
    counted: bool,
}

/// The pump from the federation onto the bus, for import rule `index`.
async fn import(shared: Arc<Shared>, publisher: Publisher, index: usize) {
    let rule = &shared.config.imports[index];
    let name = crate::gateway::local::durable::connector_queue(shared.config.name.as_str(), index);
    let mut backoff = Backoff::new(shared.config.reconnect_max);
    loop {
        let opened = shared
            .gateway
            .open_durable(
                name.clone(),
                rule.mapping.federation().clone(),
                rule.from.clone(),
                Form::Spec,
                // Nothing unproven is published on the bus (DESIGN §3.4), qos 0 included.
                true,
            )
            .await;
        let (mut reader, mut saved) = match opened {
            Ok(o) => o,
            Err(e) => {
                shared.failed(format!("cannot open the connector's queue {name}: {e}"));
                if !backoff.wait(&shared.stopping).await {
                    return;
                }
                continue;
            }
        };
        let mut inflight: FuturesOrdered<BoxFuture<Result<Published, String>>> =
            FuturesOrdered::new();
        let failure = loop {
            tokio::select! {
                () = shared.stopping.cancelled() => return,
                Some(s) = saved.recv() => {
                    drop(reader.saved(s));
                }
                Some(done) = inflight.next(), if !inflight.is_empty() => match done {
                    Ok(Published { id, counted }) => {
                        backoff.reset();
                        if counted {
                            shared.entry.counts.imported.inc();
                        }
                        if let Some(id) = id
                            && let Err(e) = reader.ack(&id, false)
                        {
                            break e;
                        }
                    }
                    Err(e) => break e,
                },
                next = reader.next(), if inflight.len() < WINDOW => {
                    let Some(next) = next else { return };
                    let (envelope, id) = match next {
                        Next::Stored(text) => match Envelope::from_json(&text) {
                            Ok(e) => {
                                let id = e.header.id.to_string();
                                (e, Some(id))
                            }
                            Err(e) => {
                                tracing::error!(connector = %shared.config.name, error = %e, "a kept envelope does not read back");
                                continue;
                            }
                        },
                        Next::Live(d) => match d.envelope() {
                            Some(e) => (e.clone(), None),
                            None => continue,
                        },
                    };
                    match put_of(&shared, rule, &envelope) {
                        Ok(put) => match publisher.send(put).await {
                            Ok(accepted) => inflight.push_back(Box::pin(async move {
                                // A broker that never answers (its session lost in a restart)
                                // must not stop the pump: the queue sends it again.
                                match tokio::time::timeout(ACCEPT_TIMEOUT, accepted).await {
                                    Ok(done) => done.map(|()| Published { id, counted: true }),
                                    Err(_) => Err(format!(
                                        "the broker did not accept a message within {}",
                                        humantime::format_duration(ACCEPT_TIMEOUT)
                                    )),
                                }
                            })),
                            Err(e) => break e,
                        },
                        Err(e) => {
                            shared.entry.counts.unmapped.inc();
                            tracing::info!(connector = %shared.config.name, error = %e, "not published on the bus");
                            inflight.push_back(Box::pin(async move {
                                Ok(Published { id, counted: false })
                            }));
                        }
                    }
                }
            }
        };
        // What was not acknowledged comes again from the subscription's cursor.
        shared.failed(failure);
        drop(reader);
        if !backoff.wait(&shared.stopping).await {
            return;
        }
    }
}

/// The publish of `envelope` on the bus under import rule `rule`.
fn put_of(
    shared: &Shared,
    rule: &crate::config::connector::ImportRule,
    envelope: &Envelope,
) -> Result<Put, String> {
    let name = rule
        .mapping
        .to_local(&envelope.header.metadata.topic)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "{} does not match {}",
                envelope.header.metadata.topic,
                rule.mapping.federation()
            )
        })?;
    let payload = envelope
        .message
        .clone()
        .ok_or_else(|| format!("envelope {} has no readable payload", envelope.header.id))?;
    let p = &envelope.properties;
    let (reply_to, correlation) = match p.reply_to() {
        // A request: the responder replies to a name of this connector's, which sends the
        // reply back to the mesh that asked.
        Some(asked) => {
            let (local, correlation) = shared.replies.answer(
                envelope.header.source.mesh.clone(),
                asked.clone(),
                p.correlation().map(<[u8]>::to_vec),
            )?;
            (Some(local), Some(correlation))
        }
        None => (None, p.correlation().map(Bytes::copy_from_slice)),
    };
    Ok(Put {
        name,
        payload: Bytes::from(payload),
        props: LocalProps {
            user: p.user().to_vec(),
            // A payload of no known type came without one: it goes on without one.
            content_type: Some(envelope.header.metadata.content_type.as_str())
                .filter(|c| *c != ContentType::octet_stream().as_str())
                .map(str::to_owned),
            correlation,
            reply_to,
            origin: Some(envelope.header.source.mesh.clone()),
        },
        qos: rule.qos,
        retain: rule.retain,
        jetstream: rule.jetstream.then(|| envelope.header.id.to_string()),
    })
}

/// The TLS client configuration for a broker: its CA file (else the machine's roots are not
/// used: a mesh's broker is trusted by its CA), and a client certificate when one is given.
pub(crate) fn tls_config(
    shared: &Shared,
    files: &crate::config::connector::TlsFiles,
) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &files.ca_file {
        let path = shared.file(ca);
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read the CA certificates in {}: {e}", path.display()))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "TLS to the broker needs ca_file: the CA its certificate is checked against".into(),
        );
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            let (cert, key) = (shared.file(cert), shared.file(key));
            let chain = CertificateDer::pem_file_iter(&cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!("cannot read the client certificate {}: {e}", cert.display())
                })?;
            let key = PrivateKeyDer::from_pem_file(&key)
                .map_err(|e| format!("cannot read the client key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key do not fit: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Jittered exponential backoff from 100 ms up to a maximum.
pub(crate) struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    /// The first wait (before jitter).
    pub(crate) const FIRST: Duration = Duration::from_millis(100);

    pub(crate) fn new(max: Duration) -> Self {
        Self { attempt: 0, max }
    }

    /// After a success: the next failure waits the shortest time again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next wait: between half and all of the current step, which then doubles.
    pub(crate) fn step(&mut self) -> Duration {
        let wait = crate::backoff::delay(Self::FIRST, self.max, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        wait
    }

    /// Waits the next step; `false` when the gateway stops meanwhile.
    pub(crate) async fn wait(&mut self, stopping: &CancellationToken) -> bool {
        let wait = self.step();
        tokio::select! {
            () = stopping.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_the_bus_delivers_again_crosses_as_the_same_envelope() {
        let first = fixed_id(1_764_000_000_000, "bus:0:ORDERS:41");
        assert_eq!(first, fixed_id(1_764_000_000_000, "bus:0:ORDERS:41"));
        assert_ne!(first, fixed_id(1_764_000_000_000, "bus:0:ORDERS:42"));
        assert_ne!(first, fixed_id(1_764_000_000_000, "other:0:ORDERS:41"));
    }

    #[test]
    fn the_origin_marker_is_taken_out_of_the_user_properties() {
        let mut p = LocalProps {
            user: vec![
                ("unit".into(), "celsius".into()),
                (ORIGIN.into(), "supplier-b".into()),
            ],
            ..LocalProps::default()
        };
        p.take_origin();
        assert_eq!(p.user, [("unit".to_owned(), "celsius".to_owned())]);
        assert_eq!(p.origin.unwrap().as_str(), "supplier-b");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_maximum() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let waits: Vec<Duration> = (0..8).map(|_| b.step()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(100));
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(1)),
            "{waits:?}"
        );
        assert!(waits[7] >= Duration::from_millis(500), "{waits:?}");
        b.reset();
        assert!(b.step() <= Duration::from_millis(100));
    }
}
