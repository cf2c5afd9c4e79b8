//! `meshfed demo`: three meshes and a broker on this machine, each with its own CA. Two meshes
//! federate directly by invitation; the third federates with one of them end to end through
//! the broker, goes offline for a while and catches up when it returns. Messages are signed
//! and encrypted, all through the same API and the same code paths a real deployment uses.
//! Everything lives in a temporary directory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use futures_util::StreamExt as _;
use meshfed_node::api::models::{
    FederationList, FederationView, InviteRequest, InviteResponse, JoinRequest, MessageAccepted,
    MessageAcknowledged, RouteList, SendRequest,
};
use meshfed_node::config::{NodeConfig, Role};
use meshfed_node::{Gateway, InitOptions, init};
use meshfed_proto::envelope::export::Exported;
use meshfed_proto::envelope::{ContentType, Priority, Qos};
use meshfed_proto::{MeshId, Topic};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::cli::DemoArgs;
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::{runtime, shutdown_signal, start_failure};
use crate::output::outln;

const PLANT: &str = "plant-a";
const SUPPLIER: &str = "supplier-b";
const CLOUD: &str = "cloud-c";
const HUB: &str = "hub";

fn fail(what: &str) -> impl Fn(String) -> Failure + '_ {
    move |e| Failure::Runtime(anyhow!("demo: {what}: {e}"))
}

/// A message of `payload` for mesh `to` on `topic`.
fn message(to: &str, topic: &str, payload: serde_json::Value) -> Result<SendRequest, Failure> {
    let to: MeshId = to.parse().map_err(|e| fail("mesh id")(format!("{e}")))?;
    let topic: Topic = topic.parse().map_err(|e| fail("topic")(format!("{e}")))?;
    Ok(SendRequest::new(to, topic, payload))
}

/// A payload as the envelope's JSON shows it: JSON as it is, text as a JSON string, anything
/// else as base64 in one.
fn shown(content_type: &ContentType, payload: &[u8]) -> String {
    use base64::Engine as _;
    match std::str::from_utf8(payload) {
        Ok(text) if content_type.is_json() => text.to_owned(),
        Ok(text) if content_type.is_text() => format!("{text:?}"),
        _ => format!(
            "{:?}",
            base64::engine::general_purpose::STANDARD.encode(payload)
        ),
    }
}

/// A new mesh `mesh` in `root/mesh` with its gateway started on ephemeral loopback ports and a
/// one-second heartbeat, and a client of its API. `meshfed bench` starts its meshes with
/// [`start_mesh_with`].
pub(crate) async fn start_mesh(root: &Path, mesh: &str) -> Result<(Gateway, ApiClient), Failure> {
    start_mesh_with(root, mesh, |_| {}).await
}

/// [`start_mesh`], with `tweak` applied to the configuration before the gateway starts.
pub(crate) async fn start_mesh_with(
    root: &Path,
    mesh: &str,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Result<(Gateway, ApiClient), Failure> {
    start_node(root, mesh, Role::Gateway, tweak).await
}

/// [`start_mesh_with`] for a node of any `role`: its directory is made by `init` with that
/// role, and [`Gateway::start`] runs what the configuration says (a broker relays).
pub(crate) async fn start_node(
    root: &Path,
    mesh: &str,
    role: Role,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Result<(Gateway, ApiClient), Failure> {
    let fail =
        |what: &str, e: String| Failure::Runtime(anyhow!("starting mesh {mesh}: {what}: {e}"));
    let dir = root.join(mesh);
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mesh_id = mesh.parse().map_err(|e| fail("mesh id", format!("{e}")))?;
    let node = "gw1"
        .parse()
        .map_err(|e| fail("node name", format!("{e}")))?;
    let mut opts = InitOptions::new(dir.clone(), mesh_id, node, SystemTime::now());
    opts.federation_listen = any;
    opts.api_listen = any;
    opts.role = role;
    init(opts).map_err(|e| fail("creating the mesh identity", e.to_string()))?;
    let mut config = NodeConfig::load(&dir).map_err(|e| Failure::Config(e.into()))?;
    config.federation.heartbeat_interval = Duration::from_secs(1);
    tweak(&mut config);
    let gateway = Gateway::start(&dir, config).await.map_err(start_failure)?;
    let client = ApiClient::for_dir(&dir)?;
    Ok((gateway, client))
}

/// A WebSocket subscription printing what arrives, tagged with the receiving mesh. A durable
/// one (`durable`) acknowledges each envelope once printed, so what arrives while nobody
/// watches is printed when the watch starts again.
async fn watch(
    client: &ApiClient,
    mesh: &'static str,
    durable: Option<&str>,
) -> Result<tokio::task::JoinHandle<()>, Failure> {
    use futures_util::SinkExt as _;
    // The demo shows how each envelope was signed: it asks for proven envelopes only.
    let query = durable.map_or_else(String::new, |name| format!("&durable={name}"));
    let mut req = format!(
        "ws://{}/v1/messages/stream?proof=required{query}",
        client.addr()
    )
    .into_client_request()
    .map_err(|e| fail("stream")(e.to_string()))?;
    let auth = format!("Bearer {}", client.token())
        .parse()
        .map_err(|e| fail("token")(format!("{e}")))?;
    req.headers_mut().insert("authorization", auth);
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| fail("stream")(e.to_string()))?;
    let durable = durable.is_some();
    Ok(tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let Ok(Exported { envelope, .. }) = Exported::from_json(&text) else {
                continue;
            };
            let header = &envelope.header;
            let signed = match &envelope.batch {
                Some(batch) => format!("in a batch of {}", batch.count()),
                None => "alone".to_owned(),
            };
            let message = envelope.message.as_deref().map_or_else(
                || "(sealed)".to_owned(),
                |payload| shown(&header.metadata.content_type, payload),
            );
            let via = if envelope.hop.path.len() > 2 {
                let relays: Vec<&str> = envelope.hop.path[1..envelope.hop.path.len() - 1]
                    .iter()
                    .map(|m| m.as_str())
                    .collect();
                format!(", through {}", relays.join(", "))
            } else {
                String::new()
            };
            let shown = outln!(
                "  {mesh:<10} <- {:<10} {:<20} {message}  (qos {}, signed by {} {signed}, {}{via})",
                header.source.mesh.as_str(),
                header.metadata.topic.as_str(),
                header.policy.qos.level(),
                header.source.gateway,
                header
                    .encryption
                    .as_ref()
                    .map_or("clear", |e| e.cipher.name()),
            );
            // Nobody reads any more (`meshfed demo | head`): stop watching.
            if shown.is_err() {
                break;
            }
            if durable {
                let ack = json!({"ack": header.id.to_string()}).to_string();
                if ws.send(Message::Text(ack.into())).await.is_err() {
                    break;
                }
            }
        }
    }))
}

/// `inviter` invites mesh `joiner_mesh`, whose node `joiner` joins with the token (through
/// broker `via`, if given); returns the join's answer. `meshfed bench` federates with it too.
pub(crate) async fn invite_and_join(
    inviter: &ApiClient,
    (joiner, joiner_mesh): (&ApiClient, MeshId),
    via: Option<MeshId>,
) -> Result<FederationView, Failure> {
    let invite = InviteRequest {
        peer: joiner_mesh,
        ttl: None,
    };
    let invite: InviteResponse = inviter.post("/v1/federations/invite", &invite).await?;
    let join = JoinRequest {
        token: invite.token,
        via,
    };
    joiner.post("/v1/federations/join", &join).await
}

/// `inviter` invites mesh `joiner`, whose node `client` joins (through broker `via`, if
/// given); returns the federation as the joiner shows it.
async fn federate(
    (client, joiner): (&ApiClient, &str),
    inviter: &ApiClient,
    via: Option<&str>,
) -> Result<FederationView, Failure> {
    let mesh = |m: &str| m.parse().map_err(|e| fail("mesh id")(format!("{e}")));
    let via = via.map(mesh).transpose()?;
    let joined = invite_and_join(inviter, (client, mesh(joiner)?), via).await?;
    client.get(&format!("/v1/federations/{}", joined.id)).await
}

/// Sends `n` readings from `from` to mesh `to` at qos 1, numbered from `first`; with `wait`,
/// each once the destination has acknowledged it end to end.
async fn readings(
    from: &ApiClient,
    to: &str,
    (first, n): (u32, u32),
    wait: bool,
) -> Result<(), Failure> {
    for seq in first..first + n {
        let reading = SendRequest {
            qos: Qos::AtLeastOnce,
            wait,
            ..message(to, "fleet/position", json!({"truck": 7, "seq": seq}))?
        };
        if wait {
            from.post::<_, MessageAcknowledged>("/v1/messages", &reading)
                .await?;
        } else {
            from.post::<_, MessageAccepted>("/v1/messages", &reading)
                .await?;
        }
    }
    Ok(())
}

/// Waits until the broker holds `n` messages of `id`'s federation on `client` in custody.
async fn in_custody(client: &ApiClient, id: &str, n: u64) -> Result<u64, Failure> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let f: FederationView = client.get(&format!("/v1/federations/{id}")).await?;
        let held = f.delivery.as_ref().map_or(0, |d| d.in_custody);
        if held >= n {
            return Ok(held);
        }
        if Instant::now() > deadline {
            return Err(fail("custody")(format!(
                "the broker holds {held} messages of federation {id}, not {n}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `id`'s federation on `client` is active again.
async fn active(client: &ApiClient, id: &str) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let f: FederationView = client.get(&format!("/v1/federations/{id}")).await?;
        if f.status.to_string() == "active" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(fail("waiting")(format!(
                "federation {id} is still {}",
                f.status
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn run(args: DemoArgs) -> Result<(), Failure> {
    let root = tempfile::Builder::new()
        .prefix("meshfed-demo-")
        .tempdir()
        .map_err(|e| fail("temporary directory")(e.to_string()))?;
    runtime()?.block_on(async move {
        let started = Instant::now();
        // Each mesh's own bus, when the machine has the brokers: plant-a's gateway is an MQTT
        // client of its Mosquitto broker, supplier-b's a NATS client of its NATS server.
        let buses = crate::demo_buses::start(root.path()).await?;
        let (plant_bus, supplier_bus) = match &buses {
            Some(b) => (
                crate::demo_buses::connectors(PLANT, &format!(
                    "[[connector]]\nname = \"plant-bus\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\n\
                     [[connector.export]]\nlocal = \"plant/+/temperature\"\ntopic = \"+/temperature\"\nto = \"{SUPPLIER}\"\nqos = 1\n",
                    b.mqtt
                ))?,
                crate::demo_buses::connectors(SUPPLIER, &format!(
                    "[[connector]]\nname = \"supplier-bus\"\nkind = \"nats\"\nurl = \"nats://127.0.0.1:{}\"\n\
                     [[connector.import]]\ntopic = \"+/temperature\"\nfrom = \"{PLANT}\"\nlocal = \"plant.*.temperature\"\nqos = 1\n",
                    b.nats
                ))?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        let (gw_a, a) = start_mesh_with(root.path(), PLANT, |c| c.connectors = plant_bus).await?;
        let (gw_b, b) = start_mesh_with(root.path(), SUPPLIER, |c| c.connectors = supplier_bus).await?;
        let (gw_hub, hub) = start_node(root.path(), HUB, Role::Broker, |_| {}).await?;
        let (gw_c, c) = start_mesh(root.path(), CLOUD).await?;
        outln!("meshfed demo — three meshes and a broker, each with its own CA, on this machine ({})", root.path().display())?;
        outln!("  {PLANT:<10} gateway  api http://{}  federation {}", a.addr(), gw_a.federation_addr())?;
        outln!("  {SUPPLIER:<10} gateway  api http://{}  federation {}", b.addr(), gw_b.federation_addr())?;
        outln!("  {CLOUD:<10} gateway  api http://{}  federation {}", c.addr(), gw_c.federation_addr())?;
        outln!("  {HUB:<10} broker   api http://{}  federation {}", hub.addr(), gw_hub.federation_addr())?;

        outln!("\n1. {SUPPLIER} invites {PLANT}, which joins: a direct federation.")?;
        let shown = federate((&a, PLANT), &b, None).await?;
        let (digest, suite) = shown
            .agreement
            .map_or_else(|| ("?".to_owned(), "?".to_owned()), |a| (a.digest, a.security_suite));
        outln!(
            "{PLANT} joined: federation {} ({}, agreement {}…, suite {suite})",
            shown.id,
            shown.status,
            digest.chars().take(16).collect::<String>(),
        )?;

        outln!("\n2. {PLANT} and {CLOUD} do not link directly. Each federates with the broker {HUB};")?;
        outln!("   then {CLOUD} invites {PLANT}, which joins through {HUB}: the two federate end to end,")?;
        outln!("   with their own agreement and content keys, and {HUB} relays what it cannot read.")?;
        federate((&a, PLANT), &hub, None).await?;
        let c_hub = federate((&c, CLOUD), &hub, None).await?;
        // The hub learns of cloud-c when its link is up; plant-a, when the hub tells it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let routes: RouteList = a.get("/v1/routes").await?;
            if routes.routes.iter().any(|r| r.destination.as_str() == CLOUD) {
                break;
            }
            if Instant::now() > deadline {
                return Err(fail("routes")(format!("{PLANT} has no route to {CLOUD}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let relayed = federate((&a, PLANT), &c, Some(HUB)).await?;
        outln!(
            "{PLANT} joined {CLOUD} through {HUB}: federation {} ({}, via {})",
            relayed.id,
            relayed.status,
            relayed.via.as_ref().map_or("-", |m| m.as_str()),
        )?;
        let routes: RouteList = a.get("/v1/routes").await?;
        for r in &routes.routes {
            let path: Vec<&str> = r.path.iter().map(|m| m.as_str()).collect();
            outln!("   route {PLANT} → {}: {}", r.destination, path.join(" → "))?;
        }

        let watch_b = watch(&b, SUPPLIER, None).await?;
        let watch_a = watch(&a, PLANT, None).await?;
        let mut watch_c = watch(&c, CLOUD, Some("demo")).await?;
        outln!("\n3. Messages (sealed with AES-256-GCM, signed with ECDSA P-384, verified on arrival):")?;
        for celsius in [21.5, 21.7, 22.0] {
            let reading = message(SUPPLIER, "line-3/temperature", json!({"celsius": celsius}))?;
            a.post::<_, MessageAccepted>("/v1/messages", &reading).await?;
        }
        // An order must not be lost or doubled: exactly once, and wait for the acknowledgement.
        let order = SendRequest {
            qos: Qos::ExactlyOnce,
            priority: Priority::try_from(6).map_err(|e| fail("priority")(e.to_string()))?,
            wait: true,
            ..message(PLANT, "orders/new", json!({"po": "PO-1042", "qty": 40}))?
        };
        let order: MessageAcknowledged = b.post("/v1/messages", &order).await?;
        outln!(
            "  {SUPPLIER} -> {PLANT}    orders/new           qos 2 order, message {}: {} (journaled at {SUPPLIER}, deduplicated at {PLANT})",
            order.id, order.status,
        )?;
        readings(&a, CLOUD, (1, 2), true).await?;

        outln!("\n4. {CLOUD} goes offline. {PLANT} keeps sending; its reliable messages wait in its journal,")?;
        outln!("   and {HUB} takes them into custody: sealed under a secret only {PLANT} and {CLOUD} hold.")?;
        watch_c.abort();
        gw_c.shutdown().await;
        readings(&a, CLOUD, (3, 3), false).await?;
        outln!("  {PLANT} -> {CLOUD}    fleet/position       3 readings at qos 1, accepted while {CLOUD} is away")?;
        let held = in_custody(&a, relayed.id.as_str(), 3).await?;
        outln!("  {HUB} holds {held} of them for {CLOUD} (as {PLANT}'s federation view shows); {PLANT} keeps its copies too")?;
        let (gw_c, c) = restart(root.path(), CLOUD).await?;
        outln!("\n5. {CLOUD} is back (api http://{}): it links to {HUB} again, which hands it what it held;", c.addr())?;
        outln!("   {PLANT} resumes the tunnel, and its own copies are recognised. What {CLOUD} missed arrives, in order:")?;
        watch_c = watch(&c, CLOUD, Some("demo")).await?;
        active(&c, c_hub.id.as_str()).await?;

        buses_step(buses.as_ref(), (&a, &b)).await?;

        let deadline = args.duration.map(|d| started + d);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        let mut n = 0u32;
        let keep_going = deadline.is_none();
        if keep_going {
            outln!("\nrunning; Ctrl-C stops. `meshfed federation list --dir {}/plant-a` works meanwhile.", root.path().display())?;
        }
        // Long enough for the catch-up to show, whatever the duration asked.
        let catch_up = Instant::now() + Duration::from_secs(3);
        loop {
            let until = deadline
                .map_or(Duration::from_secs(3600), |d| d.max(catch_up).saturating_duration_since(Instant::now()));
            tokio::select! {
                () = shutdown_signal() => break,
                () = tokio::time::sleep(until) => break,
                _ = tick.tick() => {
                    n += 1;
                    let reading = message(SUPPLIER, "line-3/temperature", json!({"celsius": 22.0 + f64::from(n % 5) / 10.0, "seq": n}))?;
                    a.post::<_, MessageAccepted>("/v1/messages", &reading).await?;
                }
            }
        }
        let list: FederationList = a.get("/v1/federations").await?;
        outln!("\nsummary, as {PLANT} sees its federations:")?;
        for f in &list.federations {
            outln!(
                "  {} with {}{}: {}, last heartbeat {}, rtt {} ms",
                f.id,
                f.peer,
                f.via.as_ref().map_or_else(String::new, |m| format!(" (through {m})")),
                f.status,
                f.last_heartbeat.as_deref().unwrap_or("-"),
                f.rtt_ms.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
            )?;
        }
        watch_a.abort();
        watch_b.abort();
        watch_c.abort();
        for gw in [gw_a, gw_b, gw_c, gw_hub] {
            gw.shutdown().await;
        }
        Ok(())
    })
}

/// Step 6: a reading published on plant-a's Mosquitto bus with `mosquitto_pub` reaches a NATS
/// subscriber on supplier-b's bus; or, without the brokers, how to get them.
async fn buses_step(
    buses: Option<&crate::demo_buses::Buses>,
    (a, b): (&ApiClient, &ApiClient),
) -> Result<(), Failure> {
    let Some(buses) = buses else {
        outln!(
            "\n6. Each mesh's own bus (an MQTT broker at {PLANT}, a NATS server at {SUPPLIER}) needs"
        )?;
        outln!(
            "   mosquitto and nats-server, which this machine lacks: {}",
            crate::demo_buses::INSTALL
        )?;
        return Ok(());
    };
    outln!(
        "\n6. Each mesh's own bus: {PLANT}'s gateway is an MQTT client of its Mosquitto broker"
    )?;
    outln!(
        "   (127.0.0.1:{}), {SUPPLIER}'s a NATS client of its NATS server (127.0.0.1:{}).",
        buses.mqtt,
        buses.nats
    )?;
    outln!(
        "   Rules map plant/+/temperature (MQTT) to +/temperature (federation) to plant.*.temperature (NATS)."
    )?;
    for (client, name) in [(a, "plant-bus"), (b, "supplier-bus")] {
        crate::demo_buses::connected(client, name).await?;
    }
    let nats = async_nats::connect(format!("nats://127.0.0.1:{}", buses.nats))
        .await
        .map_err(|e| fail("NATS subscriber")(e.to_string()))?;
    let mut sub = nats
        .subscribe("plant.>")
        .await
        .map_err(|e| fail("NATS subscriber")(e.to_string()))?;
    nats.flush()
        .await
        .map_err(|e| fail("NATS subscriber")(e.to_string()))?;
    outln!("   Listening on [plant.>] at {SUPPLIER}'s NATS server")?;
    let payload = r#"{"celsius":21.9}"#;
    let args = [
        "-h".to_owned(),
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        buses.mqtt.to_string(),
        "-V".to_owned(),
        "mqttv5".to_owned(),
        "-q".to_owned(),
        "1".to_owned(),
        "-t".to_owned(),
        "plant/line-3/temperature".to_owned(),
        "-m".to_owned(),
        payload.to_owned(),
        "-D".to_owned(),
        "publish".to_owned(),
        "user-property".to_owned(),
        "unit".to_owned(),
        "celsius".to_owned(),
        "-D".to_owned(),
        "publish".to_owned(),
        "content-type".to_owned(),
        "application/json".to_owned(),
    ];
    match crate::demo_buses::program("mosquitto_pub") {
        Some(pub_) => {
            outln!(
                "   $ mosquitto_pub {}",
                args.join(" ").replace(payload, &format!("'{payload}'"))
            )?;
            let status = tokio::process::Command::new(pub_)
                .args(&args)
                .status()
                .await
                .map_err(|e| fail("mosquitto_pub")(e.to_string()))?;
            if !status.success() {
                return Err(fail("mosquitto_pub")(status.to_string()));
            }
        }
        None => {
            outln!(
                "   (mosquitto_pub is not installed: {}; publishing the same reading from the demo)",
                crate::demo_buses::INSTALL
            )?;
            publish_mqtt(buses.mqtt, "plant/line-3/temperature", payload).await?;
        }
    }
    let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .map_err(|_| fail("NATS subscriber")("no reading within 10 s".to_owned()))?
        .ok_or_else(|| fail("NATS subscriber")("the subscription ended".to_owned()))?;
    outln!("   [#1] Received on \"{}\" at {SUPPLIER}", m.subject)?;
    if let Some(h) = &m.headers {
        let mut headers: Vec<String> = h
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}: {v}")))
            .collect();
        headers.sort();
        for line in headers {
            outln!("   {line}")?;
        }
    }
    outln!("   {}", String::from_utf8_lossy(&m.payload))?;
    Ok(())
}

/// Publishes `payload` on `topic` at QoS 1 to the MQTT broker on `port` (MQTT 5), with user
/// property `unit: celsius`, and waits for its PUBACK.
async fn publish_mqtt(port: u16, topic: &str, payload: &str) -> Result<(), Failure> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    let options = rumqttc::v5::MqttOptions::new("meshfed-demo", "127.0.0.1", port);
    let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 8);
    let properties = PublishProperties {
        user_properties: vec![("unit".into(), "celsius".into())],
        content_type: Some("application/json".into()),
        ..PublishProperties::default()
    };
    client
        .publish_with_properties(
            topic,
            QoS::AtLeastOnce,
            false,
            payload.as_bytes().to_vec(),
            properties,
        )
        .await
        .map_err(|e| fail("MQTT publish")(e.to_string()))?;
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(rumqttc::v5::Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no PUBACK within 10 s".to_owned())
    .and_then(|r| r);
    acked.map_err(fail("MQTT publish"))
}

/// Starts mesh `mesh`'s gateway again on its node directory in `root`.
async fn restart(root: &Path, mesh: &str) -> Result<(Gateway, ApiClient), Failure> {
    let dir = root.join(mesh);
    let mut config = NodeConfig::load(&dir).map_err(|e| Failure::Config(e.into()))?;
    config.federation.heartbeat_interval = Duration::from_secs(1);
    let gateway = Gateway::start(&dir, config).await.map_err(start_failure)?;
    let client = ApiClient::for_dir(&dir)?;
    Ok((gateway, client))
}
