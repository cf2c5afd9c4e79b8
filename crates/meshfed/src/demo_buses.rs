//! The meshes' own buses in `meshfed demo`: a Mosquitto broker for plant-a and a NATS server
//! for supplier-b, started from the machine's binaries on free loopback ports, stopped with the
//! demo. Their gateways reach them through connectors (`[[connector]]`).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use meshfed_node::config::NodeConfig;
use meshfed_node::config::connector::ConnectorConfig;

use crate::failure::Failure;

/// How to get the brokers when they are missing.
pub(crate) const INSTALL: &str = "sudo apt-get install mosquitto mosquitto-clients nats-server";

/// A program of the machine: on the PATH, or in /usr/sbin (where Debian puts mosquitto).
pub(crate) fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The two brokers, killed when dropped.
pub(crate) struct Buses {
    children: Vec<Child>,
    /// Mosquitto's port.
    pub(crate) mqtt: u16,
    /// The NATS server's port.
    pub(crate) nats: u16,
}

impl Drop for Buses {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn failed(what: &str) -> impl Fn(String) -> Failure + '_ {
    move |e| Failure::Runtime(anyhow!("demo buses: {what}: {e}"))
}

/// A loopback port free a moment ago.
fn free_port() -> Result<u16, Failure> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| failed("a free port")(e.to_string()))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| failed("a free port")(e.to_string()))
}

/// Waits until something accepts connections on `port`, or `child` exits.
async fn accepting(child: &mut Child, port: u16, what: &str) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(what)(format!(
                "exited ({status}) before it listened on {port}"
            )));
        }
        if Instant::now() > deadline {
            return Err(failed(what)(format!("not listening on {port} within 10 s")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts both brokers in `root`; `None` when either program is not installed.
pub(crate) async fn start(root: &Path) -> Result<Option<Buses>, Failure> {
    let (Some(mosquitto), Some(nats_server)) = (program("mosquitto"), program("nats-server"))
    else {
        return Ok(None);
    };
    let mut buses = Buses {
        children: Vec::new(),
        mqtt: free_port()?,
        nats: free_port()?,
    };
    let conf = root.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {} 127.0.0.1\nallow_anonymous true\n# as root, stay root: the files are ours\nuser root\n",
            buses.mqtt
        ),
    )
    .map_err(|e| failed("mosquitto.conf")(e.to_string()))?;
    let quiet = |p: &Path| {
        let mut c = Command::new(p);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let child = quiet(&mosquitto)
        .arg("-c")
        .arg(&conf)
        .spawn()
        .map_err(|e| failed("mosquitto")(e.to_string()))?;
    buses.children.push(child);
    let child = quiet(&nats_server)
        .args(["-a", "127.0.0.1", "-p", &buses.nats.to_string()])
        .spawn()
        .map_err(|e| failed("nats-server")(e.to_string()))?;
    buses.children.push(child);
    let (mqtt, nats) = (buses.mqtt, buses.nats);
    if let [m, n] = buses.children.as_mut_slice() {
        accepting(m, mqtt, "mosquitto").await?;
        accepting(n, nats, "nats-server").await?;
    }
    Ok(Some(buses))
}

/// Waits until connector `name` of `client`'s gateway is connected (at most 30 s).
pub(crate) async fn connected(
    client: &crate::client::ApiClient,
    name: &str,
) -> Result<(), Failure> {
    use meshfed_node::api::models::ConnectorView;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c: ConnectorView = client.get(&format!("/v1/connectors/{name}")).await?;
        if c.state == "connected" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(failed("connector")(format!(
                "{name} is {}: {}",
                c.state,
                c.last_error.unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `[[connector]]` sections of `toml`, as `meshfed.toml` would hold them.
pub(crate) fn connectors(mesh: &str, toml: &str) -> Result<Vec<ConnectorConfig>, Failure> {
    let text = format!("[node]\nmesh = \"{mesh}\"\nname = \"gw1\"\n{toml}");
    NodeConfig::parse(&text, Path::new("meshfed.toml"))
        .map(|c| c.connectors)
        .map_err(|e| Failure::Config(e.into()))
}
