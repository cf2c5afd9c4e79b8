//! [`Mosquitto`] with rumqttc: plain, TLS, client certificates, passwords, persistence.

use std::sync::Arc;
use std::time::Duration;

use meshfed_testkit::{Mosquitto, MosquittoOptions};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, MqttOptions,
    Outgoing, Publish, QoS, SubscribeReasonCode, TlsConfiguration, Transport,
};

use crate::{tls_config, within};

/// One MQTT 3.1.1 client connection, driven by polling its event loop in the test's task.
struct Mqtt {
    client: AsyncClient,
    events: EventLoop,
    /// Whether the broker resumed a stored session (CONNACK's session present flag).
    session_present: bool,
}

impl Mqtt {
    /// Connects to `broker` as `id`, letting `setup` change the options (TLS, credentials,
    /// clean session); returns once CONNACK accepted it, or the error that ended the attempt.
    async fn connect(
        broker: &Mosquitto,
        id: &str,
        setup: impl FnOnce(&mut MqttOptions),
    ) -> Result<Self, ConnectionError> {
        let mut options = MqttOptions::new(id, broker.host(), broker.port());
        options.set_keep_alive(Duration::from_secs(30));
        setup(&mut options);
        let (client, mut events) = AsyncClient::new(options, 16);
        let what = format!("{id} connects to port {}", broker.port());
        loop {
            if let Event::Incoming(Incoming::ConnAck(ack)) = within(&what, events.poll()).await? {
                return Ok(Self {
                    client,
                    events,
                    session_present: ack.session_present,
                });
            }
        }
    }

    /// [`Mqtt::connect`], failing the test when the broker does not accept the client.
    async fn open(broker: &Mosquitto, id: &str, setup: impl FnOnce(&mut MqttOptions)) -> Self {
        Self::connect(broker, id, setup)
            .await
            .unwrap_or_else(|e| panic!("{id} could not connect: {e:?}"))
    }

    /// [`Mqtt::connect`], failing the test when the broker accepts the client; returns why it
    /// was not connected.
    async fn refusal(
        broker: &Mosquitto,
        id: &str,
        setup: impl FnOnce(&mut MqttOptions),
    ) -> ConnectionError {
        match Self::connect(broker, id, setup).await {
            Ok(_) => panic!("{id} was connected; a refusal was expected"),
            Err(e) => e,
        }
    }

    /// Polls until `pick` takes an event; fails the test on a connection error.
    async fn until<T>(&mut self, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
        loop {
            let event = within(what, self.events.poll())
                .await
                .unwrap_or_else(|e| panic!("{what}: connection failed: {e}"));
            if let Some(v) = pick(event) {
                return v;
            }
        }
    }

    /// Subscribes to `topic` at QoS 1 and waits until the broker granted it.
    async fn subscribe(&mut self, topic: &str) {
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .unwrap_or_else(|e| panic!("queue SUBSCRIBE: {e}"));
        let codes = self
            .until("SUBACK", |e| match e {
                Event::Incoming(Incoming::SubAck(ack)) => Some(ack.return_codes),
                _ => None,
            })
            .await;
        assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    }

    /// Publishes `payload` to `topic` at QoS 1 and waits for the broker's PUBACK.
    async fn publish(&mut self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap_or_else(|e| panic!("queue PUBLISH: {e}"));
        self.until("PUBACK", |e| {
            matches!(e, Event::Incoming(Incoming::PubAck(_))).then_some(())
        })
        .await;
    }

    /// The next message the broker delivers.
    async fn next_message(&mut self) -> Publish {
        self.until("a message arrives", |e| match e {
            Event::Incoming(Incoming::Publish(p)) => Some(p),
            _ => None,
        })
        .await
    }

    /// Sends DISCONNECT and waits until the broker has closed the connection (so it has
    /// taken the client as gone before the test goes on).
    async fn disconnect(mut self) {
        self.client
            .disconnect()
            .await
            .unwrap_or_else(|e| panic!("queue DISCONNECT: {e}"));
        let mut sent = false;
        loop {
            match within("the broker closes the connection", self.events.poll()).await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => sent = true,
                Ok(_) => {}
                Err(_) if sent => return,
                Err(e) => panic!("connection failed before DISCONNECT was sent: {e}"),
            }
        }
    }
}

fn tls(broker: &Mosquitto, with_client_cert: bool) -> impl FnOnce(&mut MqttOptions) {
    let client = with_client_cert.then(|| (broker.client_cert_pem(), broker.client_key_pem()));
    let config = tls_config(broker.ca_pem(), client);
    move |options| {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
    }
}

/// Sends one QoS 1 message from `publisher` to `subscriber` over `topic`.
async fn round_trip(subscriber: &mut Mqtt, publisher: &mut Mqtt, topic: &str) {
    subscriber.subscribe(topic).await;
    publisher.publish(topic, "hello over mqtt").await;
    let message = subscriber.next_message().await;
    assert_eq!(message.topic, topic);
    assert_eq!(message.payload, "hello over mqtt".as_bytes());
    assert_eq!(message.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn plain_broker_carries_a_qos1_message() {
    let broker = Mosquitto::start(MosquittoOptions::plain());
    assert_eq!(
        broker.addr().to_string(),
        format!("127.0.0.1:{}", broker.port())
    );
    let mut sub = Mqtt::open(&broker, "sub", |_| {}).await;
    let mut publisher = Mqtt::open(&broker, "pub", |_| {}).await;
    round_trip(&mut sub, &mut publisher, "plant/line-1/temp").await;
}

#[tokio::test]
async fn two_brokers_listen_on_different_ports() {
    let a = Mosquitto::start(MosquittoOptions::plain());
    let b = Mosquitto::start(MosquittoOptions::plain());
    assert_ne!(a.port(), b.port());
}

#[tokio::test]
async fn tls_broker_is_reached_through_its_ca_and_refuses_a_client_that_does_not_trust_it() {
    let broker = Mosquitto::start(MosquittoOptions::plain().tls());
    let mut sub = Mqtt::open(&broker, "sub", tls(&broker, false)).await;
    let mut publisher = Mqtt::open(&broker, "pub", tls(&broker, false)).await;
    round_trip(&mut sub, &mut publisher, "secure/topic").await;

    // A client trusting another CA does not accept the broker's certificate.
    let other = Mosquitto::start(MosquittoOptions::plain().tls());
    let config = tls_config(other.ca_pem(), None);
    let err = Mqtt::refusal(&broker, "stranger", move |o| {
        o.set_transport(Transport::tls_with_config(config.into()));
    })
    .await;
    assert!(
        err.to_string().contains("UnknownIssuer"),
        "unexpected error: {err}"
    );
}

#[tokio::test]
async fn client_cert_broker_accepts_the_issued_certificate_and_refuses_a_client_without_one() {
    let broker = Mosquitto::start(MosquittoOptions::plain().require_client_cert());
    let tls_material = broker.tls().unwrap();
    assert!(tls_material.client_cert_path().is_file());
    let mut sub = Mqtt::open(&broker, "sub", tls(&broker, true)).await;
    let mut publisher = Mqtt::open(&broker, "pub", tls(&broker, true)).await;
    round_trip(&mut sub, &mut publisher, "mutual/topic").await;

    let err = Mqtt::refusal(&broker, "anonymous", tls(&broker, false)).await;
    // OpenSSL ends the handshake with an alert once it sees no certificate; with TLS 1.3 the
    // client learns of it on its first read, while reading CONNACK.
    assert!(
        format!("{err:?}").contains("AlertReceived(CertificateRequired)"),
        "unexpected error: {err:?}"
    );
}

#[tokio::test]
async fn password_broker_accepts_its_user_and_refuses_a_wrong_password_or_anonymous() {
    let broker = Mosquitto::start(MosquittoOptions::plain().user("gateway", "s3cret"));
    let login = |password: &'static str| {
        move |o: &mut MqttOptions| {
            o.set_credentials("gateway", password);
        }
    };
    let mut sub = Mqtt::open(&broker, "sub", login("s3cret")).await;
    let mut publisher = Mqtt::open(&broker, "pub", login("s3cret")).await;
    round_trip(&mut sub, &mut publisher, "auth/topic").await;

    // Mosquitto answers a wrong password, and no credentials, with CONNACK code 5.
    let wrong = Mqtt::refusal(&broker, "intruder", login("guess")).await;
    assert!(
        matches!(
            wrong,
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)
        ),
        "a wrong password: {wrong:?}"
    );
    let anonymous = Mqtt::refusal(&broker, "anonymous", |_| {}).await;
    assert!(
        matches!(
            anonymous,
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)
        ),
        "no credentials: {anonymous:?}"
    );
}

/// A persistent session (clean session off) subscribes and leaves; a message is published to
/// it; the broker restarts (on the same port); returns whether the session was resumed when
/// the subscriber came back and, if it was, the message delivered to it.
async fn message_queued_across_restart(broker: &mut Mosquitto) -> (bool, Option<Publish>) {
    let durable = |o: &mut MqttOptions| {
        o.set_clean_session(false);
    };
    let mut sub = Mqtt::open(broker, "durable-sub", durable).await;
    sub.subscribe("queue/orders").await;
    sub.disconnect().await;

    let mut publisher = Mqtt::open(broker, "pub", |_| {}).await;
    publisher.publish("queue/orders", "order 42").await;
    publisher.disconnect().await;

    let port = broker.port();
    broker.restart();
    assert_eq!(broker.port(), port, "the broker restarts on the same port");

    let mut sub = Mqtt::open(broker, "durable-sub", durable).await;
    if !sub.session_present {
        return (false, None);
    }
    (true, Some(sub.next_message().await))
}

#[tokio::test]
async fn persistent_broker_keeps_a_queued_qos1_message_across_a_restart() {
    let mut broker = Mosquitto::start(MosquittoOptions::plain().persistence());
    let (resumed, message) = message_queued_across_restart(&mut broker).await;
    assert!(resumed, "the broker resumed the stored session");
    let message = message.unwrap();
    assert_eq!(message.topic, "queue/orders");
    assert_eq!(message.payload, "order 42".as_bytes());
    let db = broker.persistence_dir().unwrap().join("mosquitto.db");
    assert!(db.is_file(), "{} was written", db.display());
}

#[tokio::test]
async fn broker_without_persistence_forgets_sessions_across_a_restart() {
    let mut broker = Mosquitto::start(MosquittoOptions::plain());
    let (resumed, _) = message_queued_across_restart(&mut broker).await;
    assert!(
        !resumed,
        "a broker without persistence starts with no session"
    );
}

#[tokio::test]
async fn a_killed_broker_refuses_connections_until_it_is_started_again() {
    let mut broker = Mosquitto::start(MosquittoOptions::plain());
    let pid = broker.pid().unwrap();
    broker.kill();
    assert_eq!(broker.pid(), None);
    let err = Mqtt::refusal(&broker, "early", |_| {}).await;
    assert!(
        matches!(&err, ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
    broker.restart();
    assert_ne!(broker.pid(), Some(pid));
    Mqtt::open(&broker, "late", |_| {}).await;
    assert!(
        broker.log().contains("New client connected"),
        "{}",
        broker.log()
    );
    broker.stop();
    assert!(broker.log().ends_with("terminating\n"), "{}", broker.log());
}
