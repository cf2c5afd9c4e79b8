//! A running node: the gateway's federation side and the API that serves its local side,
//! started and stopped together. A broker is the same node without a local side of its own: it
//! relays tunnels between meshes that do not link directly (`gateway/relay.rs`).

use std::net::SocketAddr;
use std::path::Path;

use crate::clock::Clock;
use crate::config::{NodeConfig, Role};
use crate::gateway::{self, GatewayError, GatewayHandle, Listening};

/// Refuses a node directory whose `meshfed.toml` sets another role than `command` runs: a
/// broker's directory is run by `meshfed broker`, a gateway's by `meshfed gateway`.
pub fn check_role(dir: &Path, config: &NodeConfig, command: Role) -> Result<(), GatewayError> {
    if config.node.role == command {
        return Ok(());
    }
    Err(GatewayError::Role {
        config: dir.join(crate::config::CONFIG_FILE),
        role: config.node.role,
        command,
    })
}

/// A running gateway (or broker) with its API.
pub struct Gateway {
    handle: GatewayHandle,
    api_addr: SocketAddr,
}

impl Gateway {
    /// Starts the gateway on the machine's clock: loads the identity, opens the store, binds
    /// both listeners, and starts every task (accepting peers, re-dialling stored federations,
    /// serving the API).
    pub async fn start(dir: &Path, config: NodeConfig) -> Result<Self, GatewayError> {
        Self::start_with_clock(dir, config, Clock::system()).await
    }

    /// Starts the gateway on `clock` (a manual one in tests).
    pub async fn start_with_clock(
        dir: &Path,
        config: NodeConfig,
        clock: Clock,
    ) -> Result<Self, GatewayError> {
        let api_listen = config.api.listen;
        let mesh = config.node.mesh.clone();
        let node_name = config.node.name.clone();
        let handle = gateway::start(dir, config, clock).await?;
        let bound = async {
            let api = tokio::net::TcpListener::bind(api_listen).await?;
            let addr = api.local_addr()?;
            Ok::<_, std::io::Error>((api, addr))
        }
        .await;
        let (api, api_addr) = match bound {
            Ok(b) => b,
            Err(e) => {
                handle.shutdown().await;
                return Err(GatewayError::Bind {
                    listener: Listening::Api,
                    addr: api_listen,
                    reason: gateway::bind_reason(&e),
                });
            }
        };
        if let Err(e) = handle.write_runtime_file(api_addr) {
            handle.shutdown().await;
            return Err(e);
        }
        if let Err(reason) = crate::api::serve(handle.clone(), api, api_addr) {
            handle.shutdown().await;
            return Err(GatewayError::Identity {
                dir: dir.to_path_buf(),
                reason: format!(
                    "the API listens beyond loopback on {api_addr}, so it serves TLS, but its certificate cannot be issued: {reason}"
                ),
            });
        }
        if handle.role() == Role::Gateway {
            crate::connectors::start(&handle, dir);
        }
        tracing::info!(
            mesh = %mesh, node = %node_name, federation = %handle.federation_addr(), api = %api_addr,
            "{} started", handle.role()
        );
        Ok(Self { handle, api_addr })
    }

    /// The gateway behind the API.
    #[cfg(test)]
    pub(crate) fn handle(&self) -> &GatewayHandle {
        &self.handle
    }

    /// Where the admin API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Feature `test-hooks`: signs the envelopes this gateway sends from now on with a fresh
    /// key that does not match the certificate they name (`wrong`), as a misbehaving peer
    /// would, or with the node key again. Everything else (TLS, the link, sealing) is as usual.
    ///
    /// # Errors
    /// When no key can be generated.
    #[cfg(feature = "test-hooks")]
    pub fn sign_wrongly(&self, wrong: bool) -> Result<(), String> {
        self.handle.sign_wrongly(wrong)
    }

    /// Where federation links are accepted.
    pub fn federation_addr(&self) -> SocketAddr {
        self.handle.federation_addr()
    }

    /// Stops every task: links close without a termination (the federation stays active and
    /// resumes when the gateway is back), the API stops accepting, and all tasks are awaited.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
        tracing::info!("gateway stopped");
    }
}

/// Runs a gateway until `shutdown` completes (SIGTERM, Ctrl-C), then stops it cleanly.
pub async fn run(
    dir: &Path,
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), GatewayError> {
    let gateway = Gateway::start(dir, config).await?;
    shutdown.await;
    gateway.shutdown().await;
    Ok(())
}
