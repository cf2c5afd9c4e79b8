//! `meshfed demo`: two meshes on this machine, each with its own CA and gateway, federated by
//! invitation and exchanging signed, encrypted messages — all through the same API and the
//! same code paths a real deployment uses. Everything lives in a temporary directory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use futures_util::StreamExt as _;
use meshfed_node::api::models::{
    FederationList, FederationView, InviteRequest, InviteResponse, JoinRequest, MessageAccepted,
    MessageAcknowledged, SendRequest,
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

/// A WebSocket subscription printing what arrives, tagged with the receiving mesh.
async fn watch(
    client: &ApiClient,
    mesh: &'static str,
) -> Result<tokio::task::JoinHandle<()>, Failure> {
    // The demo shows how each envelope was signed: it asks for proven envelopes only.
    let mut req = format!("ws://{}/v1/messages/stream?proof=required", client.addr())
        .into_client_request()
        .map_err(|e| fail("stream")(e.to_string()))?;
    let auth = format!("Bearer {}", client.token())
        .parse()
        .map_err(|e| fail("token")(format!("{e}")))?;
    req.headers_mut().insert("authorization", auth);
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| fail("stream")(e.to_string()))?;
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
            let shown = outln!(
                "  {mesh:<10} <- {:<10} {:<20} {message}  (qos {}, signed by {} {signed}, {})",
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
        }
    }))
}

pub(crate) fn run(args: DemoArgs) -> Result<(), Failure> {
    let root = tempfile::Builder::new()
        .prefix("meshfed-demo-")
        .tempdir()
        .map_err(|e| fail("temporary directory")(e.to_string()))?;
    runtime()?.block_on(async move {
        let started = Instant::now();
        let (gw_a, a) = start_mesh(root.path(), PLANT).await?;
        let (gw_b, b) = start_mesh(root.path(), SUPPLIER).await?;
        outln!("meshfed demo — two meshes, each with its own CA, on this machine ({})", root.path().display())?;
        outln!("  {PLANT:<10} api http://{}  federation {}", a.addr(), gw_a.federation_addr())?;
        outln!("  {SUPPLIER:<10} api http://{}  federation {}", b.addr(), gw_b.federation_addr())?;

        let peer = PLANT.parse().map_err(|e| fail("mesh id")(format!("{e}")))?;
        let invite: InviteResponse = b.post("/v1/federations/invite", &InviteRequest { peer, ttl: None }).await?;
        outln!("\n{SUPPLIER} invites {PLANT}: token {}…", invite.token.chars().take(24).collect::<String>())?;
        let joined: FederationView = a.post("/v1/federations/join", &JoinRequest { token: invite.token, via: None }).await?;
        let id = joined.id;
        let shown: FederationView = a.get(&format!("/v1/federations/{id}")).await?;
        let (digest, suite) = shown
            .agreement
            .map_or_else(|| ("?".to_owned(), "?".to_owned()), |a| (a.digest, a.security_suite));
        outln!(
            "{PLANT} joined: federation {id} ({}, agreement {}…, suite {suite})",
            shown.status,
            digest.chars().take(16).collect::<String>(),
        )?;

        let watch_b = watch(&b, SUPPLIER).await?;
        let watch_a = watch(&a, PLANT).await?;
        outln!("\nmessages (sealed with AES-256-GCM, signed with ECDSA P-384, verified on arrival):")?;
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

        let deadline = args.duration.map(|d| started + d);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        let mut n = 0u32;
        let keep_going = deadline.is_none();
        if keep_going {
            outln!("\nrunning; Ctrl-C stops. `meshfed federation list --dir {}/plant-a` works meanwhile.", root.path().display())?;
        }
        loop {
            let until = deadline.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()));
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
        let list: FederationList = b.get("/v1/federations").await?;
        if let Some(f) = list.federations.first() {
            outln!(
                "\nsummary: federation {} {} — {PLANT} ↔ {SUPPLIER}, last heartbeat {}, rtt {} ms; {} messages sent",
                f.id,
                f.status,
                f.last_heartbeat.as_deref().unwrap_or("-"),
                f.rtt_ms.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
                4 + n,
            )?;
        }
        watch_a.abort();
        watch_b.abort();
        gw_a.shutdown().await;
        gw_b.shutdown().await;
        Ok(())
    })
}
