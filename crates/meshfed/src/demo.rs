//! `meshfed demo`: two meshes on this machine, each with its own CA and gateway, federated by
//! invitation and exchanging signed, encrypted messages — all through the same API and the
//! same code paths a real deployment uses. Everything lives in a temporary directory.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use futures_util::StreamExt as _;
use meshfed_node::config::NodeConfig;
use meshfed_node::{Gateway, InitOptions, init};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::cli::DemoArgs;
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::{runtime, shutdown_signal, start_failure};

const PLANT: &str = "plant-a";
const SUPPLIER: &str = "supplier-b";

fn fail(what: &str) -> impl Fn(String) -> Failure + '_ {
    move |e| Failure::Runtime(anyhow!("demo: {what}: {e}"))
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
    let mut req = format!("ws://{}/v1/messages/stream", client.addr())
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
            let Ok(env) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let f = &env["federation"];
            let signed = match f["security"]["batch"]["count"].as_u64() {
                Some(n) => format!("in a batch of {n}"),
                None => "alone".to_owned(),
            };
            println!(
                "  {mesh:<10} <- {:<10} {:<20} {}  (qos {}, signed by {} {signed}, {})",
                f["source_mesh"]["id"].as_str().unwrap_or("?"),
                f["metadata"]["topic"].as_str().unwrap_or("?"),
                env["message"],
                f["policy"]["qos"],
                f["source_mesh"]["gateway_id"].as_str().unwrap_or("?"),
                f["security"]["encryption"]["algorithm"]
                    .as_str()
                    .unwrap_or("clear"),
            );
            let _ = std::io::stdout().flush();
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
        println!("meshfed demo — two meshes, each with its own CA, on this machine ({})", root.path().display());
        println!("  {PLANT:<10} api http://{}  federation {}", a.addr(), gw_a.federation_addr());
        println!("  {SUPPLIER:<10} api http://{}  federation {}", b.addr(), gw_b.federation_addr());

        let invite = b.post("/v1/federations/invite", &json!({ "peer": PLANT })).await?;
        let token = invite["token"].as_str().unwrap_or_default().to_owned();
        println!("\n{SUPPLIER} invites {PLANT}: token {}…", token.chars().take(24).collect::<String>());
        let joined = a.post("/v1/federations/join", &json!({ "token": token })).await?;
        let id = joined["id"].as_str().unwrap_or_default().to_owned();
        let shown = a.get(&format!("/v1/federations/{id}")).await?;
        println!(
            "{PLANT} joined: federation {id} ({}, agreement {}…, suite {})",
            shown["status"].as_str().unwrap_or("?"),
            shown["agreement"]["digest"].as_str().unwrap_or("?").chars().take(16).collect::<String>(),
            shown["agreement"]["security_suite"].as_str().unwrap_or("?"),
        );

        let watch_b = watch(&b, SUPPLIER).await?;
        let watch_a = watch(&a, PLANT).await?;
        println!("\nmessages (sealed with AES-256-GCM, signed with ECDSA P-384, verified on arrival):");
        for celsius in [21.5, 21.7, 22.0] {
            a.post("/v1/messages", &json!({"to": SUPPLIER, "topic": "line-3/temperature", "payload": {"celsius": celsius}})).await?;
        }
        // An order must not be lost or doubled: exactly once, and wait for the acknowledgement.
        let order = b.post("/v1/messages", &json!({"to": PLANT, "topic": "orders/new", "payload": {"po": "PO-1042", "qty": 40}, "qos": 2, "priority": 6, "wait": true})).await?;
        println!(
            "  {SUPPLIER} -> {PLANT}    orders/new           qos 2 order {}: {} (journaled at {SUPPLIER}, deduplicated at {PLANT})",
            order["id"].as_str().unwrap_or("?"),
            order["status"].as_str().unwrap_or("?"),
        );

        let deadline = args.duration.map(|d| started + d);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        let mut n = 0u32;
        let keep_going = deadline.is_none();
        if keep_going {
            println!("\nrunning; Ctrl-C stops. `meshfed federation list --dir {}/plant-a` works meanwhile.", root.path().display());
        }
        loop {
            let until = deadline.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = shutdown_signal() => break,
                () = tokio::time::sleep(until) => break,
                _ = tick.tick() => {
                    n += 1;
                    let reading = json!({"celsius": 22.0 + f64::from(n % 5) / 10.0, "seq": n});
                    a.post("/v1/messages", &json!({"to": SUPPLIER, "topic": "line-3/temperature", "payload": reading})).await?;
                }
            }
        }
        let list = b.get("/v1/federations").await?;
        let f = &list["federations"][0];
        println!(
            "\nsummary: federation {} {} — {PLANT} ↔ {SUPPLIER}, last heartbeat {}, rtt {} ms; {} messages sent",
            f["id"].as_str().unwrap_or("?"),
            f["status"].as_str().unwrap_or("?"),
            f["last_heartbeat"].as_str().unwrap_or("-"),
            f["rtt_ms"].as_f64().map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
            4 + n,
        );
        watch_a.abort();
        watch_b.abort();
        gw_a.shutdown().await;
        gw_b.shutdown().await;
        Ok(())
    })
}
