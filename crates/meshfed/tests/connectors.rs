//! Connectors as an operator runs them: `meshfed gateway` processes, a real Mosquitto broker
//! for plant-a's bus and a real NATS server (JetStream) for supplier-b's. QoS 1 readings
//! published on MQTT cross to a JetStream stream at the supplier through a kill -9 of plant-a's
//! gateway, a restart of each broker and the supplier's gateway away: none is lost, and the
//! counts are printed.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on any error"
)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{federate, mesh};
use meshfed_testkit::process::{DEADLINE, poll};
use meshfed_testkit::{Mesh, Mosquitto, MosquittoOptions, NatsOptions, NatsServer};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;

/// Readings per batch.
const BATCH: u32 = 400;

/// `connector show NAME --json` on `m`.
fn connector(m: &Mesh, name: &str) -> Value {
    serde_json::from_str(m.cli(&["connector", "show", name, "--json"]).ok()).unwrap()
}

fn wait_connected(m: &Mesh, name: &str) {
    poll(&format!("{name} connected"), DEADLINE, || {
        let c = connector(m, name);
        if c["state"] == "connected" {
            Ok(())
        } else {
            Err(c.to_string())
        }
    });
}

/// Publishes readings `seqs` at QoS 1 from a fresh MQTT 5 client and returns once the broker
/// acknowledged every one (PUBACK): from then on the broker answers for them.
async fn publish(broker: &Mosquitto, seqs: std::ops::Range<u32>) {
    let mut options = MqttOptions::new(
        format!("sensor-{}", seqs.start),
        broker.host(),
        broker.port(),
    );
    options.set_outgoing_inflight_upper_limit(100);
    let (client, mut events) = AsyncClient::new(options, 256);
    let expected = seqs.len();
    let publisher = client.clone();
    tokio::spawn(async move {
        for seq in seqs {
            let payload = Bytes::from(format!("{{\"seq\":{seq}}}"));
            publisher
                .publish(
                    format!("plant/line-{}/temperature", seq % 4),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .unwrap();
        }
    });
    let mut acked = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while acked < expected {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("the broker acknowledges every reading within 60 s");
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), events.poll()).await;
}

/// Every reading in the JetStream stream: how many times each sequence number is there.
async fn stored(nats: &NatsServer) -> BTreeMap<u32, u32> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("READINGS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut seen = BTreeMap::new();
    for sequence in 1..=last {
        let Ok(m) = stream.get_raw_message(sequence).await else {
            continue;
        };
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        *seen
            .entry(u32::try_from(v["seq"].as_u64().unwrap()).unwrap())
            .or_default() += 1;
    }
    seen
}

#[test]
fn qos1_readings_cross_a_kill_9_broker_restarts_and_a_partner_away_without_loss() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut mosquitto = Mosquitto::start(MosquittoOptions::plain().persistence());
    let mut nats = NatsServer::start(NatsOptions::plain().jetstream());
    rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        async_nats::jetstream::new(client)
            .create_stream(async_nats::jetstream::stream::Config {
                name: "READINGS".into(),
                subjects: vec!["plant.>".into()],
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap();
    });

    let mut a = mesh("plant-a");
    a.append_config(&format!(
        r#"
[[connector]]
name = "plant-bus"
kind = "mqtt"
url = "mqtt://127.0.0.1:{}"
reconnect_max = "1s"

[[connector.export]]
local = "plant/+/temperature"
topic = "readings/+/temperature"
to = "supplier-b"
qos = 1
"#,
        mosquitto.port()
    ));
    let mut b = mesh("supplier-b");
    b.append_config(&format!(
        r#"
[[connector]]
name = "supplier-bus"
kind = "nats"
url = "{}"
reconnect_max = "1s"

[[connector.import]]
topic = "readings/+/temperature"
local = "plant.*.temperature"
qos = 1
jetstream = true
"#,
        nats.url()
    ));
    a.start();
    b.start();
    federate(&a, &b);
    wait_connected(&a, "plant-bus");
    wait_connected(&b, "supplier-bus");

    // Readings in flight when plant-a's gateway is killed; more while it is away (the broker
    // keeps them in the connector's session).
    rt.block_on(publish(&mosquitto, 0..BATCH));
    a.kill9();
    rt.block_on(publish(&mosquitto, BATCH..2 * BATCH));
    a.start();
    wait_connected(&a, "plant-bus");
    // Readings acknowledged by the broker, which then restarts before the gateway took them
    // all.
    rt.block_on(publish(&mosquitto, 2 * BATCH..3 * BATCH));
    mosquitto.restart();
    // Readings while the supplier's NATS server restarts.
    rt.block_on(publish(&mosquitto, 3 * BATCH..4 * BATCH));
    nats.restart();
    // Readings while the supplier's gateway is away: plant-a keeps them (store and forward).
    b.keep_federation_address();
    b.stop();
    rt.block_on(publish(&mosquitto, 4 * BATCH..5 * BATCH));
    b.start();

    let list = a.cli(&["connector", "list"]);
    let row = list
        .ok()
        .lines()
        .find(|l| l.starts_with("plant-bus "))
        .unwrap_or_else(|| panic!("no row for plant-bus:\n{list}"));
    assert!(
        row.contains(" mqtt ") && row.contains(" connected "),
        "{row}"
    );

    let sent = 5 * BATCH;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let seen = loop {
        let seen = rt.block_on(stored(&nats));
        if seen.len() == sent as usize {
            break seen;
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<u32> = (0..sent).filter(|s| !seen.contains_key(s)).collect();
            panic!(
                "{} of {sent} distinct readings after 90 s; missing {} from {:?}\nplant-bus: {}\nsupplier-bus: {}\nplant-a federations: {}\nplant-a log:\n{}\nsupplier-b log:\n{}",
                seen.len(),
                missing.len(),
                &missing[..missing.len().min(10)],
                connector(&a, "plant-bus"),
                connector(&b, "supplier-bus"),
                a.cli(&["federation", "list", "--json"]).stdout,
                a.log(),
                b.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let total: u32 = seen.values().sum();
    let duplicates = total - sent;
    let at_b = connector(&b, "supplier-bus");
    eprintln!(
        "sent {sent}, delivered {} distinct ({total} in the stream, {duplicates} duplicates); supplier-bus: {at_b}",
        seen.len()
    );
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..sent).collect::<Vec<_>>()
    );
    // A reading the killed gateway journaled but had not acknowledged to the broker, or the
    // restarted broker had not received the acknowledgement of, comes again as a new
    // envelope: at most the two batches in flight then.
    assert!(duplicates <= 2 * BATCH, "{duplicates} duplicates");
    // Counted since supplier-b's gateway started again: at least what waited for it.
    assert!(
        at_b["imported"].as_u64().unwrap() >= u64::from(BATCH),
        "{at_b}"
    );
}
