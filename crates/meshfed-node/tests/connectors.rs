//! Connectors against real brokers: plant-a's bus is a Mosquitto broker (MQTT 5), supplier-b's
//! a NATS server; the two gateways federate, and what a plant client publishes on MQTT reaches
//! a NATS subscriber at the supplier, and back, with names, properties and headers translated.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on any error"
)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Node, federate, wait_for};
use futures_util::StreamExt as _;
use meshfed_node::config::NodeConfig;
use meshfed_testkit::{Mosquitto, MosquittoOptions, NatsOptions, NatsServer};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;
use tokio::sync::mpsc;

/// The `[[connector]]` sections of `toml`, read as `meshfed.toml` reads them.
fn connectors(mesh: &str, toml: &str) -> Vec<meshfed_node::config::connector::ConnectorConfig> {
    let text = format!("[node]\nmesh = \"{mesh}\"\nname = \"gw\"\n{toml}");
    NodeConfig::parse(&text, std::path::Path::new("meshfed.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .connectors
}

/// An MQTT 5 client of `broker`, its event loop driven in the background; what it receives
/// comes out of the returned channel.
async fn mqtt_client(
    broker: &Mosquitto,
    id: &str,
    subscribe: Option<&str>,
) -> (
    AsyncClient,
    mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Publish>,
) {
    let options = MqttOptions::new(id, broker.host(), broker.port());
    let (client, mut events) = AsyncClient::new(options, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready = Some(ready_tx);
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            match event {
                Event::Incoming(Packet::Publish(p)) => drop(tx.send(p)),
                Event::Incoming(Packet::SubAck(_)) | Event::Incoming(Packet::ConnAck(_)) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                _ => {}
            }
        }
    });
    if let Some(filter) = subscribe {
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("the MQTT client is connected (and subscribed) within 10 s")
        .unwrap();
    (client, rx)
}

/// plant-a and supplier-b, started with connectors `plant-bus` and `supplier-bus` (`plant`,
/// `supplier`), federated, with both connectors connected.
async fn federated(
    plant: Vec<meshfed_node::config::connector::ConnectorConfig>,
    supplier: Vec<meshfed_node::config::connector::ConnectorConfig>,
) -> (Node, Node) {
    let a = Node::start_with("plant-a", |c| c.connectors = plant).await;
    let b = Node::start_with("supplier-b", |c| c.connectors = supplier).await;
    federate(&a, &b).await;
    for (node, name) in [(&a, "plant-bus"), (&b, "supplier-bus")] {
        wait_for(|| async { connector(node, name).await["state"] == "connected" }).await;
    }
    (a, b)
}

async fn connector(node: &Node, name: &str) -> Value {
    let (status, body) = node.get(&format!("/v1/connectors/{name}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_bus_and_a_nats_bus_federate_both_ways_with_their_dialects() {
    let mosquitto = Mosquitto::start(MosquittoOptions::plain());
    let nats = NatsServer::start(NatsOptions::plain());
    let plant_bus = connectors(
        "plant-a",
        &format!(
            r#"
[[connector]]
name = "plant-bus"
kind = "mqtt"
url = "mqtt://127.0.0.1:{}"

[[connector.export]]
local = "plant/+/temperature"
topic = "readings/+/temperature"
to = "supplier-b"
qos = 1

[[connector.export]]
local = "plant/orders/#"
topic = "orders-echo/#"
to = "supplier-b"
qos = 1

[[connector.import]]
topic = "orders/#"
from = "supplier-b"
local = "plant/orders/#"
qos = 1
"#,
            mosquitto.port()
        ),
    );
    let supplier_bus = connectors(
        "supplier-b",
        &format!(
            r#"
[[connector]]
name = "supplier-bus"
kind = "nats"
url = "{}"

[[connector.export]]
local = "orders.>"
topic = "orders/#"
to = "plant-a"
qos = 1

[[connector.import]]
topic = "readings/+/temperature"
local = "plant.*.temperature"
qos = 1
"#,
            nats.url()
        ),
    );
    let (a, b) = federated(plant_bus, supplier_bus).await;

    // MQTT → NATS: the topic's level becomes a token, user properties become headers.
    let nc = async_nats::connect(nats.url()).await.unwrap();
    let mut readings = nc.subscribe("plant.*.temperature").await.unwrap();
    nc.flush().await.unwrap();
    let (plant, _) = mqtt_client(&mosquitto, "sensor", None).await;
    plant
        .publish_with_properties(
            "plant/line-3/temperature",
            QoS::AtLeastOnce,
            false,
            Bytes::from_static(br#"{"celsius": 21.5}"#),
            PublishProperties {
                user_properties: vec![("unit".into(), "celsius".into())],
                content_type: Some("application/json".into()),
                ..PublishProperties::default()
            },
        )
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), readings.next())
        .await
        .expect("the reading reaches the NATS subscriber within 10 s")
        .unwrap();
    assert_eq!(got.subject.as_str(), "plant.line-3.temperature");
    assert_eq!(&got.payload[..], br#"{"celsius": 21.5}"#);
    let headers = got.headers.unwrap();
    assert_eq!(headers.get("meshfed-origin").unwrap().as_str(), "plant-a");
    assert_eq!(
        headers.get("Content-Type").unwrap().as_str(),
        "application/json"
    );

    // NATS → MQTT: tokens become levels; the message is marked with the mesh it came from.
    let (_watcher, mut orders) = mqtt_client(&mosquitto, "erp", Some("plant/orders/#")).await;
    let mut h = async_nats::HeaderMap::new();
    h.insert("order-kind", "rush");
    nc.publish_with_headers("orders.7.new", h, Bytes::from_static(b"order 7"))
        .await
        .unwrap();
    nc.flush().await.unwrap();
    let order = tokio::time::timeout(Duration::from_secs(10), orders.recv())
        .await
        .expect("the order reaches the MQTT subscriber within 10 s")
        .unwrap();
    assert_eq!(&order.topic[..], b"plant/orders/7/new");
    assert_eq!(&order.payload[..], b"order 7");
    let props = order.properties.unwrap();
    for expected in [("meshfed-origin", "supplier-b"), ("order-kind", "rush")] {
        assert!(
            props
                .user_properties
                .contains(&(expected.0.into(), expected.1.into())),
            "{:?}",
            props.user_properties
        );
    }

    // plant-a's export rule on plant/orders/# would send the order back to supplier-b: it is
    // counted as a loop instead. A NATS subject the federation cannot name is not forwarded.
    wait_for(|| async { connector(&a, "plant-bus").await["loops"] == 1 }).await;
    nc.publish("orders.a/b", Bytes::from_static(b"x"))
        .await
        .unwrap();
    nc.flush().await.unwrap();
    wait_for(|| async { connector(&b, "supplier-bus").await["unmapped"] == 1 }).await;

    let plant_view = connector(&a, "plant-bus").await;
    assert_eq!(plant_view["exported"], 1, "{plant_view}");
    assert_eq!(plant_view["imported"], 1, "{plant_view}");
    let supplier_view = connector(&b, "supplier-bus").await;
    assert_eq!(supplier_view["exported"], 1, "{supplier_view}");
    assert_eq!(supplier_view["imported"], 1, "{supplier_view}");
    let metrics = b.metrics().await;
    assert!(
        metrics.contains(
            r#"meshfed_connector_messages_total{connector="supplier-bus",direction="import"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"meshfed_connector_up{connector="supplier-bus"} 1"#),
        "{metrics}"
    );
}

/// A rustls client configuration trusting `ca_pem` and presenting `cert`/`key` (PEM).
fn client_tls(ca_pem: &str, cert: &str, key: &str) -> rustls::ClientConfig {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_over_tls_with_a_password_and_nats_jetstream_with_jwt_credentials() {
    let mosquitto = Mosquitto::start(
        MosquittoOptions::plain()
            .require_client_cert()
            .user("plant-gw", "s3cret"),
    );
    let nats = NatsServer::start(
        NatsOptions::plain()
            .auth(meshfed_testkit::NatsAuth::Jwt)
            .jetstream(),
    );
    let js_client = async_nats::ConnectOptions::with_credentials_file(nats.creds_file())
        .await
        .unwrap()
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(js_client.clone());
    for (name, subjects) in [("READINGS", "plant.>"), ("ORDERS", "orders.>")] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    }

    // Files of the configuration may be absolute paths (relative ones are in the node directory).
    let secrets = meshfed_testkit::temp_dir();
    let password = secrets.path().join("bus.password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let tls = mosquitto.tls().unwrap();
    let plant_bus = connectors(
        "plant-a",
        &format!(
            r#"
[[connector]]
name = "plant-bus"
kind = "mqtt"
url = "mqtts://localhost:{port}"
mqtt_version = "3.1.1"
username = "plant-gw"
password_file = "{password}"
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"

[[connector.export]]
local = "plant/+/temperature"
topic = "readings/+/temperature"
to = "supplier-b"
qos = 2

[[connector.export]]
local = "plant/orders/#"
topic = "orders-echo/#"
to = "supplier-b"

[[connector.import]]
topic = "orders/#"
local = "plant/orders/#"
qos = 2
"#,
            port = mosquitto.port(),
            password = password.display(),
            ca = tls.ca_path().display(),
            cert = tls.client_cert_path().display(),
            key = tls.client_key_path().display(),
        ),
    );
    let supplier_bus = connectors(
        "supplier-b",
        &format!(
            r#"
[[connector]]
name = "supplier-bus"
kind = "nats"
url = "{}"
creds_file = "{}"

[[connector.export]]
local = "orders.>"
topic = "orders/#"
to = "plant-a"
qos = 2
jetstream_stream = "ORDERS"

[[connector.import]]
topic = "readings/+/temperature"
local = "plant.*.temperature"
qos = 2
jetstream = true
"#,
            nats.url(),
            nats.creds_file().display()
        ),
    );
    let (a, _b) = federated(plant_bus, supplier_bus).await;

    // A 3.1.1 client of the plant's bus, over TLS with its certificate and the password.
    let mut options = rumqttc::MqttOptions::new("erp", "localhost", mosquitto.port());
    options.set_credentials("plant-gw", "s3cret");
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(client_tls(
            mosquitto.ca_pem(),
            tls.client_cert_pem(),
            tls.client_key_pem(),
        ))),
    ));
    let (plant, mut events) = rumqttc::AsyncClient::new(options, 64);
    let (orders_tx, mut orders) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)) = event {
                let _ = orders_tx.send(p);
            }
        }
    });
    plant
        .subscribe("plant/orders/#", rumqttc::QoS::ExactlyOnce)
        .await
        .unwrap();

    // MQTT 3.1.1 QoS 2 → JetStream, published with the envelope id as its message id.
    plant
        .publish(
            "plant/line-1/temperature",
            rumqttc::QoS::ExactlyOnce,
            false,
            &b"{\"celsius\":19}"[..],
        )
        .await
        .unwrap();
    wait_for(|| {
        let js = js.clone();
        async move {
            let mut readings = js.get_stream("READINGS").await.unwrap();
            readings.info().await.unwrap().state.messages == 1
        }
    })
    .await;
    let readings = js.get_stream("READINGS").await.unwrap();
    let stored = readings.get_raw_message(1).await.unwrap();
    assert_eq!(stored.subject.as_str(), "plant.line-1.temperature");
    assert_eq!(&stored.payload[..], b"{\"celsius\":19}");
    let headers = stored.headers;
    assert_eq!(headers.get("meshfed-origin").unwrap().as_str(), "plant-a");
    assert_eq!(headers.get("Nats-Msg-Id").unwrap().as_str().len(), 36);

    // JetStream (a durable consumer, acknowledged once journaled) → MQTT 3.1.1 QoS 2.
    let ack = js
        .publish("orders.9", Bytes::from_static(b"order 9"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.stream, "ORDERS");
    let order = tokio::time::timeout(Duration::from_secs(10), orders.recv())
        .await
        .expect("the order reaches the MQTT 3.1.1 subscriber within 10 s")
        .unwrap();
    assert_eq!(order.topic, "plant/orders/9");
    assert_eq!(&order.payload[..], b"order 9");
    let consumer = js
        .get_stream("ORDERS")
        .await
        .unwrap()
        .consumer_info("meshfed-orders")
        .await
        .unwrap();
    assert_eq!(consumer.num_ack_pending, 0, "{consumer:?}");
    assert_eq!(consumer.ack_floor.stream_sequence, 1, "{consumer:?}");
    // Without properties, 3.1.1 knows the order came from supplier-b by what the connector
    // published: the export rule on plant/orders/# does not send it back.
    wait_for(|| async { connector(&a, "plant-bus").await["loops"] == 1 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cross_both_ways_and_one_nobody_answers_times_out() {
    let mosquitto = Mosquitto::start(MosquittoOptions::plain());
    let nats = NatsServer::start(NatsOptions::plain());
    let plant_bus = connectors(
        "plant-a",
        &format!(
            r#"
[[connector]]
name = "plant-bus"
kind = "mqtt"
url = "mqtt://127.0.0.1:{}"
request_timeout = "1s"

[[connector.export]]
local = "plant/ask/#"
topic = "ask/#"
to = "supplier-b"

[[connector.export]]
local = "plant/void/#"
topic = "void/#"
to = "supplier-b"

[[connector.import]]
topic = "svc/#"
local = "plant/svc/#"
"#,
            mosquitto.port()
        ),
    );
    let supplier_bus = connectors(
        "supplier-b",
        &format!(
            r#"
[[connector]]
name = "supplier-bus"
kind = "nats"
url = "{}"

[[connector.export]]
local = "svc.>"
topic = "svc/#"
to = "plant-a"

[[connector.import]]
topic = "ask/#"
local = "ask.>"
"#,
            nats.url()
        ),
    );
    let (_a, _b) = federated(plant_bus, supplier_bus).await;

    // An MQTT 5 responder at plant-a answers on each request's response topic, echoing its
    // correlation data.
    let (responder, mut asked) =
        mqtt_client(&mosquitto, "status-service", Some("plant/svc/#")).await;
    tokio::spawn(async move {
        while let Some(request) = asked.recv().await {
            let props = request.properties.unwrap_or_default();
            let mut reply = b"pong:".to_vec();
            reply.extend_from_slice(&request.payload);
            responder
                .publish_with_properties(
                    props.response_topic.unwrap(),
                    QoS::AtLeastOnce,
                    false,
                    reply,
                    PublishProperties {
                        correlation_data: props.correlation_data,
                        ..PublishProperties::default()
                    },
                )
                .await
                .unwrap();
        }
    });
    // A NATS responder at supplier-b answers on each request's reply subject.
    let nc = async_nats::connect(nats.url()).await.unwrap();
    let mut questions = nc.subscribe("ask.>").await.unwrap();
    nc.flush().await.unwrap();
    let answering = nc.clone();
    tokio::spawn(async move {
        while let Some(q) = questions.next().await {
            let mut answer = b"answer:".to_vec();
            answer.extend_from_slice(&q.payload);
            answering
                .publish(q.reply.unwrap(), answer.into())
                .await
                .unwrap();
        }
    });

    // A NATS request at supplier-b, answered by the MQTT responder at plant-a.
    let reply = nc
        .request("svc.status", Bytes::from_static(b"ping"))
        .await
        .unwrap();
    assert_eq!(&reply.payload[..], b"pong:ping");

    // An MQTT 5 request at plant-a, answered by the NATS responder at supplier-b, comes back
    // on its response topic with its correlation data.
    let (requester, mut replies) = mqtt_client(&mosquitto, "planner", Some("app/replies/#")).await;
    for (topic, correlation) in [("plant/ask/price", "c-1"), ("plant/void/nobody", "c-2")] {
        requester
            .publish_with_properties(
                topic,
                QoS::AtLeastOnce,
                false,
                Bytes::from_static(b"what"),
                PublishProperties {
                    response_topic: Some("app/replies/1".into()),
                    correlation_data: Some(Bytes::from(correlation)),
                    ..PublishProperties::default()
                },
            )
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let r = tokio::time::timeout(Duration::from_secs(10), replies.recv())
            .await
            .expect("a reply (or a timeout) within 10 s")
            .unwrap();
        let props = r.properties.unwrap_or_default();
        got.push((
            String::from_utf8_lossy(&props.correlation_data.unwrap_or_default()).into_owned(),
            String::from_utf8_lossy(&r.payload).into_owned(),
            props.user_properties,
        ));
    }
    got.sort();
    assert_eq!(got[0].0, "c-1");
    assert_eq!(got[0].1, "answer:what");
    // Nobody answers plant/void: the requester is told in its own dialect after the
    // connector's request_timeout.
    assert_eq!(got[1].0, "c-2");
    assert_eq!(got[1].1, "");
    assert!(
        got[1]
            .2
            .contains(&("meshfed-error".into(), "timeout: no reply within 1s".into())),
        "{:?}",
        got[1].2
    );
}

/// `/readyz` as status and text.
async fn readyz(node: &Node) -> (u16, String) {
    let r = node.http.get(node.url("/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_whose_broker_is_down_shows_in_readyz_and_reconnects_with_retained_messages() {
    let mut mosquitto = Mosquitto::start(MosquittoOptions::plain().persistence());
    let plant_bus = connectors(
        "plant-a",
        &format!(
            r#"
[[connector]]
name = "plant-bus"
kind = "mqtt"
url = "mqtt://127.0.0.1:{}"
reconnect_max = "200ms"

[[connector.export]]
local = "plant/state/#"
topic = "state/#"
to = "supplier-b"
retained = "forward"

[[connector.export]]
local = "plant/+/temperature"
topic = "readings/+/temperature"
to = "supplier-b"
"#,
            mosquitto.port()
        ),
    );
    // Retained on the bus before the gateway connects: one rule forwards what the broker
    // retained, the other leaves it.
    let (early, _) = mqtt_client(&mosquitto, "early", None).await;
    for topic in ["plant/state/line-1", "plant/line-1/temperature"] {
        early
            .publish(
                topic,
                QoS::AtLeastOnce,
                true,
                Bytes::from_static(b"retained"),
            )
            .await
            .unwrap();
    }
    let a = Node::start_with("plant-a", |c| c.connectors = plant_bus).await;
    let b = Node::start("supplier-b").await;
    let mut sub = b.stream("?topic=%23").await;
    federate(&a, &b).await;
    wait_for(|| async { connector(&a, "plant-bus").await["state"] == "connected" }).await;
    assert_eq!(readyz(&a).await, (200, "ready\n".to_owned()));
    // The retained state arrives only now: it was published before the federation existed,
    // so the connector's first delivery of it was refused; reconnecting delivers it again.
    mosquitto.stop();
    wait_for(|| async { readyz(&a).await.0 == 503 }).await;
    let (_, text) = readyz(&a).await;
    assert!(
        text.contains(&format!(
            "connector plant-bus is not connected to mqtt://127.0.0.1:{}",
            mosquitto.port()
        )),
        "{text}"
    );
    let view = connector(&a, "plant-bus").await;
    assert_eq!(view["state"], "connecting", "{view}");
    assert!(
        view["last_error"]
            .as_str()
            .unwrap()
            .contains("MQTT connection"),
        "{view}"
    );
    mosquitto.restart();
    wait_for(|| async { readyz(&a).await.0 == 200 }).await;
    let got = common::next_json(&mut sub).await;
    assert_eq!(
        got["federation"]["metadata"]["topic"], "state/line-1",
        "{got}"
    );
    // The retained reading is not forwarded (its rule leaves retained messages): the next
    // arrival is a live one.
    let (live, _) = mqtt_client(&mosquitto, "live", None).await;
    live.publish(
        "plant/line-2/temperature",
        QoS::AtLeastOnce,
        false,
        Bytes::from_static(b"live"),
    )
    .await
    .unwrap();
    let got = common::next_json(&mut sub).await;
    assert_eq!(
        got["federation"]["metadata"]["topic"], "readings/line-2/temperature",
        "{got}"
    );
    assert!(connector(&a, "plant-bus").await["errors"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_connector_authenticates_each_way_the_server_asks_and_names_a_refusal() {
    use meshfed_testkit::NatsAuth;
    let secrets = meshfed_testkit::temp_dir();
    let file = |name: &str, text: &str| {
        let path = secrets.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cases = [
        (NatsOptions::plain().auth(NatsAuth::Token), "token"),
        (
            NatsOptions::plain().auth(NatsAuth::UserPassword),
            "password",
        ),
        (NatsOptions::plain().auth(NatsAuth::Nkey), "nkey"),
        (NatsOptions::plain().require_client_cert(), "certificate"),
    ];
    for (options, how) in cases {
        let nats = NatsServer::start(options);
        let auth = match how {
            "token" => format!("token_file = \"{}\"", file("token", nats.token())),
            "password" => format!(
                "username = \"{}\"\npassword_file = \"{}\"",
                nats.user(),
                file("password", nats.password())
            ),
            "nkey" => format!("nkey_file = \"{}\"", file("seed", nats.nkey_seed())),
            _ => {
                let tls = nats.tls().unwrap();
                format!(
                    "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
                    tls.ca_path().display(),
                    tls.client_cert_path().display(),
                    tls.client_key_path().display()
                )
            }
        };
        let bus = connectors(
            "supplier-b",
            &format!(
                "[[connector]]\nname = \"bus\"\nkind = \"nats\"\nurl = \"{}\"\n{auth}\n",
                nats.url()
            ),
        );
        let b = Node::start_with("supplier-b", |c| c.connectors = bus).await;
        wait_for(|| async { connector(&b, "bus").await["state"] == "connected" }).await;
    }
    // A wrong token: not connected, and why is shown.
    let nats = NatsServer::start(NatsOptions::plain().auth(NatsAuth::Token));
    let bus = connectors(
        "supplier-b",
        &format!(
            "[[connector]]\nname = \"bus\"\nkind = \"nats\"\nurl = \"{}\"\ntoken_file = \"{}\"\n",
            nats.url(),
            file("wrong", "not-the-token")
        ),
    );
    let b = Node::start_with("supplier-b", |c| c.connectors = bus).await;
    wait_for(|| async {
        let view = connector(&b, "bus").await;
        view["state"] == "connecting"
            && view["last_error"]
                .as_str()
                .is_some_and(|e| e.to_lowercase().contains("authorization"))
    })
    .await;
}
