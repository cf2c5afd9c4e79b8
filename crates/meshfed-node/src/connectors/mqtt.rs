//! The MQTT connector: a `rumqttc` client of the mesh's broker, MQTT 5 or 3.1.1.
//!
//! One task drives the client's event loop. It keeps a persistent session (a fixed client id,
//! no clean start; MQTT 5 sessions outlive the connection by a week), so that what the broker
//! queued for the gateway while it was away is delivered when it is back, and subscribes to
//! every export rule's filter at each connection. Messages are acknowledged by hand: a message
//! the broker delivers is acknowledged (PUBACK, or PUBREC for QoS 2) only once the gateway
//! journaled it ([`super::Taken::settle`]).
//!
//! What the connector publishes is accepted once the broker acknowledged it (PUBACK, or PUBCOMP
//! for QoS 2). `rumqttc` assigns packet ids as it sends, in the order publishes were handed to
//! it, and reports each (`Outgoing::Publish(pkid)`): [`Acks`] pairs the waiting publishes with
//! those ids in that order, then with the broker's acknowledgements. A publish sent again after
//! a reconnect keeps its id, and its waiter.
//!
//! MQTT 3.1.1 carries no properties: user properties, content type, correlation data and
//! response topics do not cross, and the origin marker is kept instead as a digest of what the
//! connector published (`Recent`), which a message of the bus with the same topic and payload
//! is taken for.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshfed_proto::MeshId;
use meshfed_proto::envelope::Qos;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{
    Packet as Packet5, PubAckReason, PubCompReason, PublishProperties,
};
use tokio::sync::{mpsc, oneshot};

use super::status::Connection;
use super::{BoxFuture, LocalProps, Put, Shared, Taken};
use crate::config::connector::{MqttBus, MqttVersion};

/// How long an MQTT 5 session outlives its connection at the broker: a week.
const SESSION_EXPIRY_SECS: u32 = 7 * 24 * 3600;
/// How many unacknowledged messages the broker may send the connector (MQTT 5).
const RECEIVE_MAXIMUM: u16 = 1024;
/// Keep-alive: the broker takes the connection for lost after 1.5 times this.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Digests of recently published messages kept for loop prevention on MQTT 3.1.1.
const RECENT: usize = 65_536;

/// The waiters of publishes: first in the order handed to the client, then by packet id.
#[derive(Default)]
struct Acks {
    unassigned: VecDeque<oneshot::Sender<Result<(), String>>>,
    by_id: HashMap<u16, oneshot::Sender<Result<(), String>>>,
}

impl Acks {
    /// The client sent a publish with `pkid` (0 for QoS 0, which waits for nothing).
    fn sent(&mut self, pkid: u16) {
        if pkid == 0 || self.by_id.contains_key(&pkid) {
            return;
        }
        if let Some(waiter) = self.unassigned.pop_front() {
            self.by_id.insert(pkid, waiter);
        }
    }

    /// The broker answered the publish with `pkid`.
    fn answered(&mut self, pkid: u16, outcome: Result<(), String>) {
        if let Some(waiter) = self.by_id.remove(&pkid) {
            let _ = waiter.send(outcome);
        }
    }
}

/// Digests of what the connector published on an MQTT 3.1.1 bus, with the mesh each came
/// from: the bus delivers them back to the connector's own subscriptions without properties.
#[derive(Default)]
struct Recent {
    order: VecDeque<[u8; 32]>,
    origin: HashMap<[u8; 32], MeshId>,
}

impl Recent {
    fn digest(topic: &str, payload: &[u8]) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&(topic.len() as u64).to_be_bytes());
        ctx.update(topic.as_bytes());
        ctx.update(payload);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    fn published(&mut self, topic: &str, payload: &[u8], origin: MeshId) {
        let d = Self::digest(topic, payload);
        if self.origin.insert(d, origin).is_none() {
            self.order.push_back(d);
        }
        while self.order.len() > RECENT {
            if let Some(old) = self.order.pop_front() {
                self.origin.remove(&old);
            }
        }
    }

    fn origin_of(&self, topic: &str, payload: &[u8]) -> Option<MeshId> {
        self.origin.get(&Self::digest(topic, payload)).cloned()
    }
}

/// The client, in the protocol version configured.
#[derive(Clone)]
enum Client {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

/// Publishes on the MQTT bus.
#[derive(Clone)]
pub(crate) struct Publisher {
    client: Client,
    acks: Arc<Mutex<Acks>>,
    recent: Arc<Mutex<Recent>>,
    /// Held from queueing a waiter to handing its publish to the client, so that both keep
    /// one order across the import rules.
    order: Arc<tokio::sync::Mutex<()>>,
}

fn qos5(q: Qos) -> QoS5 {
    match q {
        Qos::AtMostOnce => QoS5::AtMostOnce,
        Qos::AtLeastOnce => QoS5::AtLeastOnce,
        Qos::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

fn qos4(q: Qos) -> rumqttc::QoS {
    match q {
        Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
        Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        Qos::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

impl Publisher {
    pub(crate) async fn send(&self, put: Put) -> Result<BoxFuture<Result<(), String>>, String> {
        let _order = self.order.lock().await;
        let (tx, rx) = oneshot::channel();
        if put.qos != Qos::AtMostOnce {
            self.acks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unassigned
                .push_back(tx);
        }
        let handed = match &self.client {
            Client::V5(c) => {
                let mut user = put.props.user;
                if let Some(origin) = &put.props.origin {
                    user.push((super::ORIGIN.to_owned(), origin.to_string()));
                }
                let properties = PublishProperties {
                    user_properties: user,
                    content_type: put.props.content_type,
                    correlation_data: put.props.correlation,
                    response_topic: put.props.reply_to,
                    ..PublishProperties::default()
                };
                c.publish_bytes_with_properties(
                    put.name,
                    qos5(put.qos),
                    put.retain,
                    put.payload,
                    properties,
                )
                .await
                .map_err(|e| e.to_string())
            }
            Client::V311(c) => {
                if let Some(origin) = put.props.origin {
                    self.recent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .published(&put.name, &put.payload, origin);
                }
                c.publish_bytes(put.name, qos4(put.qos), put.retain, put.payload)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        if let Err(e) = handed {
            if put.qos != Qos::AtMostOnce {
                self.acks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .unassigned
                    .pop_back();
            }
            return Err(format!("the MQTT client stopped: {e}"));
        }
        if put.qos == Qos::AtMostOnce {
            return Ok(Box::pin(async { Ok(()) }));
        }
        Ok(Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err("the MQTT client stopped before the broker answered".into())
            })
        }))
    }
}

/// Connects to the broker (in the background, retrying) and starts the event loop's task,
/// which hands what the broker delivers to `taken`.
pub(super) async fn connect(
    shared: Arc<Shared>,
    bus: MqttBus,
    taken: mpsc::Sender<Taken>,
) -> Result<super::Publisher, String> {
    let client_id = bus
        .client_id
        .clone()
        .unwrap_or_else(|| format!("meshfed-{}-{}", shared.gateway.mesh(), shared.config.name));
    let credentials = match (&bus.username, &bus.password_file) {
        (Some(u), Some(f)) => Some((u.clone(), shared.secret(f)?)),
        (Some(u), None) => Some((u.clone(), String::new())),
        _ => None,
    };
    let tls = match &bus.tls {
        Some(files) => Some(Arc::new(super::tls_config(&shared, files)?)),
        None => None,
    };
    let acks = Arc::new(Mutex::new(Acks::default()));
    let recent = Arc::new(Mutex::new(Recent::default()));
    let transport =
        tls.map(|t| rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(t)));
    let (client, events) = match bus.version {
        MqttVersion::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(client_id, bus.host.clone(), bus.port);
            o.set_keep_alive(KEEP_ALIVE)
                .set_clean_start(false)
                .set_session_expiry_interval(Some(SESSION_EXPIRY_SECS))
                .set_receive_maximum(Some(RECEIVE_MAXIMUM))
                .set_manual_acks(true);
            if let Some((u, p)) = credentials {
                o.set_credentials(u, p);
            }
            if let Some(t) = transport {
                o.set_transport(t);
            }
            let (client, events) = rumqttc::v5::AsyncClient::new(o, 2 * super::WINDOW);
            (Client::V5(client), Events::V5(Box::new(events)))
        }
        MqttVersion::V311 => {
            let mut o = rumqttc::MqttOptions::new(client_id, bus.host.clone(), bus.port);
            o.set_keep_alive(KEEP_ALIVE)
                .set_clean_session(false)
                .set_inflight(RECEIVE_MAXIMUM)
                .set_manual_acks(true);
            if let Some((u, p)) = credentials {
                o.set_credentials(u, p);
            }
            if let Some(t) = transport {
                o.set_transport(t);
            }
            let (client, events) = rumqttc::AsyncClient::new(o, 2 * super::WINDOW);
            (Client::V311(client), Events::V311(Box::new(events)))
        }
    };
    let driver = Driver {
        shared: shared.clone(),
        acks: acks.clone(),
        recent: recent.clone(),
        taken,
        client: client.clone(),
    };
    shared.gateway.spawn(driver.run(events));
    Ok(super::Publisher::Mqtt(Publisher {
        client,
        acks,
        recent,
        order: Arc::new(tokio::sync::Mutex::new(())),
    }))
}

/// Drives the client's event loop.
struct Driver {
    shared: Arc<Shared>,
    acks: Arc<Mutex<Acks>>,
    recent: Arc<Mutex<Recent>>,
    taken: mpsc::Sender<Taken>,
    client: Client,
}

impl Driver {
    /// Subscribes to every export rule's filter, off the event loop's task (a full request
    /// channel would otherwise stop the loop that empties it).
    fn subscribe(&self) {
        let rules: Vec<(String, Qos)> = self
            .shared
            .config
            .exports
            .iter()
            .map(|r| (r.mapping.local().as_str().to_owned(), r.qos))
            // Where responders on this bus reply to requests from the federation.
            .chain([(self.shared.replies.local_filter(), Qos::AtLeastOnce)])
            .collect();
        let client = self.client.clone();
        let shared = self.shared.clone();
        self.shared.gateway.spawn(async move {
            for (filter, qos) in rules {
                let done = match &client {
                    Client::V5(c) => c
                        .subscribe(filter.clone(), qos5(qos))
                        .await
                        .map_err(|e| e.to_string()),
                    Client::V311(c) => c
                        .subscribe(filter.clone(), qos4(qos))
                        .await
                        .map_err(|e| e.to_string()),
                };
                if let Err(e) = done {
                    shared.failed(format!("cannot subscribe to {filter}: {e}"));
                }
            }
        });
    }

    /// Drives the event loop until the gateway stops: the same steps for both protocol
    /// versions, over what [`Events::next`] makes of each version's events.
    async fn run(self, mut events: Events) {
        let mut backoff = super::Backoff::new(self.shared.config.reconnect_max);
        loop {
            let event = tokio::select! {
                () = self.shared.stopping.cancelled() => break,
                e = events.next(&self) => e,
            };
            match event {
                Event::Connected => {
                    backoff.reset();
                    self.shared.entry.set(Connection::Connected);
                    tracing::info!(connector = %self.shared.config.name, "connected to the MQTT broker");
                    self.subscribe();
                }
                Event::Message(taken) => {
                    if self.taken.send(taken).await.is_err() {
                        break;
                    }
                }
                Event::Sent(pkid) => {
                    self.acks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .sent(pkid);
                }
                Event::Answered(pkid, outcome) => self.answered(pkid, outcome),
                Event::Disconnected(why) => self.shared.failed(why),
                Event::Other => {}
                Event::Lost(error) => {
                    self.shared.failed(format!("MQTT connection: {error}"));
                    tokio::select! {
                        () = self.shared.stopping.cancelled() => break,
                        () = tokio::time::sleep(backoff.step()) => {}
                    }
                }
            }
        }
        match &self.client {
            Client::V5(c) => drop(c.try_disconnect()),
            Client::V311(c) => drop(c.try_disconnect()),
        }
    }

    fn answered(&self, pkid: u16, outcome: Result<(), String>) {
        if let Err(e) = &outcome {
            self.shared.entry.counts.errors.inc();
            tracing::warn!(connector = %self.shared.config.name, error = %e, "publish refused");
        }
        self.acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answered(pkid, outcome);
    }
}

/// An event of either protocol version's event loop, as the connector acts on it.
enum Event {
    Connected,
    Message(Taken),
    /// The client sent a publish with this packet id.
    Sent(u16),
    /// The broker answered the publish with this packet id.
    Answered(u16, Result<(), String>),
    Disconnected(String),
    Other,
    /// The connection failed or was lost: the next poll reconnects.
    Lost(String),
}

/// The event loop of the version configured.
enum Events {
    V5(Box<rumqttc::v5::EventLoop>),
    V311(Box<rumqttc::EventLoop>),
}

impl Events {
    async fn next(&mut self, d: &Driver) -> Event {
        match self {
            Self::V5(events) => match events.poll().await {
                Ok(e) => v5_event(d, e),
                Err(e) => Event::Lost(e.to_string()),
            },
            Self::V311(events) => match events.poll().await {
                Ok(e) => v311_event(d, e),
                Err(e) => Event::Lost(e.to_string()),
            },
        }
    }
}

fn v5_event(d: &Driver, event: rumqttc::v5::Event) -> Event {
    use rumqttc::v5::{Event as E, Incoming};
    match event {
        E::Incoming(Incoming::ConnAck(_)) => Event::Connected,
        E::Incoming(Packet5::Publish(p)) => {
            let mut props = LocalProps::default();
            if let Some(pp) = &p.properties {
                props.user = pp.user_properties.clone();
                props.content_type = pp.content_type.clone();
                props.correlation = pp.correlation_data.clone();
                props.reply_to = pp.response_topic.clone();
            }
            props.take_origin();
            // Acknowledged (PUBACK, or PUBREC at QoS 2) once the gateway journaled it.
            let settle = (p.qos != QoS5::AtMostOnce).then(|| -> BoxFuture<()> {
                let (client, p) = (d.client.clone(), p.clone());
                Box::pin(async move {
                    if let Client::V5(c) = client {
                        let _ = c.ack(&p).await;
                    }
                })
            });
            Event::Message(Taken {
                name: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload.clone(),
                props,
                retained: p.retain,
                id: None,
                settle,
            })
        }
        E::Outgoing(rumqttc::Outgoing::Publish(pkid)) => Event::Sent(pkid),
        E::Incoming(Packet5::PubAck(a)) => Event::Answered(
            a.pkid,
            match a.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                other => Err(format!("the broker refused the publish: {other:?}")),
            },
        ),
        E::Incoming(Packet5::PubComp(c)) => Event::Answered(
            c.pkid,
            match c.reason {
                PubCompReason::Success => Ok(()),
                other => Err(format!("the broker refused the publish: {other:?}")),
            },
        ),
        E::Incoming(Packet5::Disconnect(x)) => {
            Event::Disconnected(format!("the broker disconnected: {:?}", x.reason_code))
        }
        _ => Event::Other,
    }
}

fn v311_event(d: &Driver, event: rumqttc::Event) -> Event {
    use rumqttc::{Event as E, Incoming};
    match event {
        E::Incoming(Incoming::ConnAck(_)) => Event::Connected,
        E::Incoming(Incoming::Publish(p)) => {
            // No properties: what the connector published itself is known by its digest.
            let origin = d
                .recent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .origin_of(&p.topic, &p.payload);
            // Acknowledged (PUBACK, or PUBREC at QoS 2) once the gateway journaled it.
            let settle = (p.qos != rumqttc::QoS::AtMostOnce).then(|| -> BoxFuture<()> {
                let (client, p) = (d.client.clone(), p.clone());
                Box::pin(async move {
                    if let Client::V311(c) = client {
                        let _ = c.ack(&p).await;
                    }
                })
            });
            Event::Message(Taken {
                name: p.topic.clone(),
                payload: p.payload.clone(),
                props: LocalProps {
                    origin,
                    ..LocalProps::default()
                },
                retained: p.retain,
                id: None,
                settle,
            })
        }
        E::Outgoing(rumqttc::Outgoing::Publish(pkid)) => Event::Sent(pkid),
        E::Incoming(Incoming::PubAck(a)) => Event::Answered(a.pkid, Ok(())),
        E::Incoming(Incoming::PubComp(c)) => Event::Answered(c.pkid, Ok(())),
        _ => Event::Other,
    }
}
