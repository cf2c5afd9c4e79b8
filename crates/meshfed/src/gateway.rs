//! `meshfed gateway` and `meshfed broker`: run the node in the foreground, each only a
//! directory made for its role.

use std::io::Write as _;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context as _, anyhow};
use meshfed_node::config::{NodeConfig, Role};
use meshfed_node::{Gateway, GatewayError};

use crate::cli::GatewayArgs;
use crate::failure::Failure;

/// A multi-threaded tokio runtime for the commands that talk to the network.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(anyhow!("cannot start the async runtime: {e}")))
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Starting errors: an unusable node directory is a configuration error (exit 2); a port in
/// use or a failing store is a runtime one (exit 1).
pub(crate) fn start_failure(e: GatewayError) -> Failure {
    match e {
        GatewayError::Read { .. } | GatewayError::Identity { .. } | GatewayError::Role { .. } => {
            Failure::Config(e.into())
        }
        other => Failure::Runtime(other.into()),
    }
}

pub(crate) fn run(dir: &Path, args: &GatewayArgs, role: Role) -> Result<(), Failure> {
    let config = NodeConfig::load(dir).map_err(|e| Failure::Config(e.into()))?;
    meshfed_node::check_role(dir, &config, role).map_err(start_failure)?;
    if args.new_store {
        start_over(dir, &config)?;
    }
    let who = format!("{}/{}", config.node.mesh, config.node.name);
    runtime()?.block_on(async {
        let gateway = Gateway::start(dir, config).await.map_err(start_failure)?;
        // The gateway serves whether or not anyone reads its ready line.
        let _ = writeln!(
            std::io::stdout(),
            "meshfed {role} {who} ready: federation={} api={}://{}",
            gateway.federation_addr(),
            if meshfed_node::api::serves_tls(gateway.api_addr()) {
                "https"
            } else {
                "http"
            },
            gateway.api_addr()
        );
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        eprintln!("stopping {role} {who}");
        gateway.shutdown().await;
        Ok(())
    })
}

/// `--new-store`: moves the store aside so the gateway starts with an empty one, and says so.
fn start_over(dir: &Path, config: &NodeConfig) -> Result<(), Failure> {
    let store = config.store.path.resolve(dir);
    let moved = meshfed_node::store_file::start_over(dir, &store, SystemTime::now())
        .with_context(|| format!("cannot move the store {} aside", store.display()))
        .map_err(Failure::Runtime)?;
    match moved {
        Some(old) => eprintln!(
            "starting over with a new, empty store at {}; the previous store was moved to {}",
            store.display(),
            old.display()
        ),
        None => eprintln!(
            "starting over with a new, empty store at {} (there was no store file)",
            store.display()
        ),
    }
    Ok(())
}
