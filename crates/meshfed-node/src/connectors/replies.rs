//! Request/reply across meshes (DESIGN §3.11): a request on one mesh's bus answered by a
//! responder on another mesh's bus, each side in its own dialect.
//!
//! ```text
//! requester's bus          requester's gateway             responder's gateway          responder's bus
//! NATS reply subject  ──►  Waiting[token]          ──►     Answering[token']    ──►    MQTT 5 response topic
//! MQTT response topic      reply_to = _reply/C/token       local reply name             + correlation data
//!                     ◄──  live subscription       ◄──     (taken from the bus)  ◄──   the responder's reply
//!                          on _reply/C/+                   sent to the source mesh
//! ```
//!
//! - The requester's connector keeps the request's reply name (a NATS reply subject, an MQTT
//!   response topic with its correlation data) under a fresh token, and sends the request with
//!   `reply_to` = `_reply/CONNECTOR/TOKEN`, a federation topic it subscribes to.
//! - The responder's connector publishes the request on its bus with a reply name of its own
//!   (`meshfed/reply/CONNECTOR/TOKEN` on MQTT, `_MESHFED.CONNECTOR.TOKEN` on NATS), which it
//!   subscribes to, and the correlation data (on MQTT, the token when the request had none).
//!   What the responder publishes there goes back to the requesting mesh under the request's
//!   `reply_to`.
//! - A request without a reply within the connector's `request_timeout` is answered on the
//!   requester's bus with an empty message carrying `meshfed-error: timeout …` (a user property
//!   on MQTT, a header on NATS); a request the federation refuses, at once with
//!   `meshfed-error: refused …`. A NATS requester's own timeout may come first.
//!
//! Replies travel under `_reply/#`: an agreement that names its topics must let it cross.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meshfed_proto::dialect::Dialect;
use meshfed_proto::envelope::Qos;
use meshfed_proto::envelope::export::Form;
use meshfed_proto::{MeshId, Topic, TopicPattern};

use super::{LocalProps, Publisher, Put, Shared};

/// The user property (MQTT 5) or header (NATS) of an error answered instead of a reply.
pub(crate) const ERROR: &str = "meshfed-error";

/// Most requests waiting at once, each way; a request beyond is refused.
const MAX_WAITING: usize = 65_536;

/// A request this connector took from its bus and sent into the federation.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    /// Where the requester waits on the bus: a NATS reply subject, an MQTT response topic.
    pub(crate) reply: String,
    /// The requester's correlation data (MQTT 5).
    pub(crate) correlation: Option<Bytes>,
    deadline: Instant,
}

/// A request from the federation this connector published on its bus.
#[derive(Debug, Clone)]
pub(crate) struct Answering {
    /// The mesh that asked.
    pub(crate) to: MeshId,
    /// Where it waits: the request's `reply_to`.
    pub(crate) topic: Topic,
    /// The request's correlation data.
    pub(crate) correlation: Option<Vec<u8>>,
    deadline: Instant,
}

/// The requests of one connector, both ways, by token.
#[derive(Debug)]
pub(crate) struct Replies {
    connector: String,
    dialect: Dialect,
    /// What this connector's reply names on the bus start with, before their token.
    local_prefix: String,
    timeout: Duration,
    waiting: Mutex<HashMap<String, Waiting>>,
    answering: Mutex<HashMap<String, Answering>>,
}

/// A fresh token: 16 random bytes in hex.
fn token() -> Result<String, String> {
    let mut b = [0u8; 16];
    meshfed_proto::crypto::random_fill(&mut b).map_err(|e| e.to_string())?;
    Ok(hex::encode(b))
}

impl Replies {
    pub(crate) fn new(connector: &str, dialect: Dialect, timeout: Duration) -> Self {
        let local_prefix = match dialect {
            Dialect::Mqtt => format!("meshfed/reply/{connector}/"),
            Dialect::Nats => format!("_MESHFED.{connector}."),
        };
        Self {
            connector: connector.to_owned(),
            dialect,
            local_prefix,
            timeout,
            waiting: Mutex::new(HashMap::new()),
            answering: Mutex::new(HashMap::new()),
        }
    }

    /// How long a request waits for its reply.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The federation topics replies to this connector's requests come on.
    pub(crate) fn federation_pattern(&self) -> TopicPattern {
        // Invariant: connector names are a-z, 0-9 and '-', valid in a topic segment.
        format!("_reply/{}/+", self.connector)
            .parse()
            .unwrap_or_else(|e| unreachable!("reply pattern: {e}"))
    }

    /// The bus's names replies to requests this connector published come on, as a pattern
    /// to subscribe to.
    pub(crate) fn local_filter(&self) -> String {
        let one = match self.dialect {
            Dialect::Mqtt => '+',
            Dialect::Nats => '*',
        };
        format!("{}{one}", self.local_prefix)
    }

    fn local_name(&self, token: &str) -> String {
        format!("{}{token}", self.local_prefix)
    }

    /// The token of `name` when it is one of this connector's reply names on the bus.
    pub(crate) fn local_token<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(self.local_prefix.as_str())
    }

    /// Keeps a request taken from the bus; returns the `reply_to` topic it crosses with.
    pub(crate) fn wait(&self, reply: String, correlation: Option<Bytes>) -> Result<Topic, String> {
        let token = token()?;
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.len() >= MAX_WAITING {
            return Err(format!("{MAX_WAITING} requests already wait for replies"));
        }
        let topic = format!("_reply/{}/{token}", self.connector);
        waiting.insert(
            token,
            Waiting {
                reply,
                correlation,
                deadline: Instant::now() + self.timeout,
            },
        );
        topic.parse().map_err(|e| format!("{e}"))
    }

    /// The request a reply that arrived on `topic` answers (or that did not cross: its
    /// `reply_to`), taken out.
    pub(crate) fn replied(&self, topic: &Topic) -> Option<Waiting> {
        let token = topic.as_str().rsplit('/').next()?;
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token)
    }

    /// Keeps a request from the federation; returns the reply name to publish it with and
    /// the correlation data to give the responder.
    pub(crate) fn answer(
        &self,
        to: MeshId,
        topic: Topic,
        correlation: Option<Vec<u8>>,
    ) -> Result<(String, Bytes), String> {
        let token = token()?;
        let mut answering = self.answering.lock().unwrap_or_else(|e| e.into_inner());
        if answering.len() >= MAX_WAITING {
            return Err(format!(
                "{MAX_WAITING} requests already wait for responders"
            ));
        }
        let local = self.local_name(&token);
        let for_responder = correlation
            .clone()
            .map_or_else(|| Bytes::from(token.clone().into_bytes()), Bytes::from);
        answering.insert(
            token,
            Answering {
                to,
                topic,
                correlation,
                deadline: Instant::now() + self.timeout,
            },
        );
        Ok((local, for_responder))
    }

    /// The request a reply taken from the bus under `token` answers, taken out.
    pub(crate) fn answered(&self, token: &str) -> Option<Answering> {
        self.answering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token)
    }

    /// Takes out what waited past its deadline: the requests of this connector's bus that got
    /// no reply (their requesters are told), and the requests its responders left unanswered.
    pub(crate) fn expired(&self, now: Instant) -> Vec<Waiting> {
        self.answering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, a| a.deadline > now);
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let late: Vec<String> = waiting
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        late.into_iter()
            .filter_map(|k| waiting.remove(&k))
            .collect()
    }
}

/// Delivers the replies to this connector's requests on its bus, as they arrive; and answers,
/// once a second, the requests that waited past their deadline.
pub(crate) async fn deliver(shared: Arc<Shared>, publisher: Publisher) {
    let mut replies = shared
        .gateway
        // Proven replies only: nothing unproven is published on the bus (DESIGN §3.4).
        .subscribe(shared.replies.federation_pattern(), None, Form::Export)
        .await;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shared.stopping.cancelled() => return,
            _ = tick.tick() => {
                let timeout = humantime::format_duration(shared.replies.timeout());
                for w in shared.replies.expired(Instant::now()) {
                    tell(&shared, w, &format!("timeout: no reply within {timeout}")).await;
                }
            }
            delivery = replies.rx.recv() => {
                let Some(d) = delivery else { return };
                let Some(envelope) = d.envelope() else { continue };
                let Some(w) = shared.replies.replied(&envelope.header.metadata.topic) else {
                    continue;
                };
                let p = &envelope.properties;
                let put = Put {
                    name: w.reply,
                    payload: Bytes::from(envelope.message.clone().unwrap_or_default()),
                    props: LocalProps {
                        user: p.user().to_vec(),
                        content_type: Some(envelope.header.metadata.content_type.as_str().to_owned()),
                        correlation: w.correlation,
                        reply_to: None,
                        origin: Some(envelope.header.source.mesh.clone()),
                    },
                    qos: Qos::AtMostOnce,
                    retain: false,
                    jetstream: None,
                };
                match publisher.send(put).await {
                    Ok(_) => {
                        shared.entry.counts.imported.inc();
                    }
                    Err(e) => shared.failed(format!("cannot deliver a reply: {e}")),
                }
            }
        }
    }
}

/// Answers request `w` on the bus with an empty message carrying `meshfed-error: why`.
pub(crate) async fn tell(shared: &Shared, w: Waiting, why: &str) {
    let Some(publisher) = shared.publisher.get() else {
        return;
    };
    let put = Put {
        name: w.reply,
        payload: Bytes::new(),
        props: LocalProps {
            user: vec![(ERROR.to_owned(), why.to_owned())],
            correlation: w.correlation,
            ..LocalProps::default()
        },
        qos: Qos::AtMostOnce,
        retain: false,
        jetstream: None,
    };
    if let Err(e) = publisher.send(put).await {
        shared.failed(format!("cannot answer a request ({why}): {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_kept_under_its_token_until_its_reply_or_deadline() {
        let r = Replies::new("bus", Dialect::Nats, Duration::from_secs(5));
        let topic = r.wait("_INBOX.abc".into(), None).unwrap();
        assert!(r.federation_pattern().matches(&topic), "{topic}");
        assert_eq!(r.replied(&topic).unwrap().reply, "_INBOX.abc");
        assert!(r.replied(&topic).is_none(), "taken once");

        let late = r.wait("_INBOX.late".into(), None).unwrap();
        assert!(r.expired(Instant::now()).is_empty());
        let gone = r.expired(Instant::now() + Duration::from_secs(6));
        assert_eq!(gone.len(), 1);
        assert!(r.replied(&late).is_none());
    }

    #[test]
    fn the_responders_side_names_its_reply_in_the_bus_dialect() {
        let r = Replies::new("plant-bus", Dialect::Mqtt, Duration::from_secs(5));
        let asked: Topic = "_reply/supplier-bus/00ff".parse().unwrap();
        let (name, correlation) = r
            .answer("supplier-b".parse().unwrap(), asked.clone(), None)
            .unwrap();
        assert!(name.starts_with("meshfed/reply/plant-bus/"), "{name}");
        let token = r.local_token(&name).unwrap();
        // Without correlation data of its own, the responder is given the token to echo.
        assert_eq!(&correlation[..], token.as_bytes());
        let a = r.answered(token).unwrap();
        assert_eq!((a.to.as_str(), &a.topic), ("supplier-b", &asked));
        assert!(r.local_token("plant/orders/1").is_none());
        let n = Replies::new("bus", Dialect::Nats, Duration::from_secs(5));
        assert_eq!(n.local_filter(), "_MESHFED.bus.*");
    }
}
