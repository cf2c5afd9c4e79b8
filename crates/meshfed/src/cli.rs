//! The command line: one subcommand per action, each with its own argument struct.
//!
//! Every value that has a type is parsed into it here (mesh ids, node names, socket addresses),
//! so a bad value is a usage error (exit status 2) naming the value and the rule it breaks.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use meshfed_node::config::{DEFAULT_API_LISTEN, DEFAULT_FEDERATION_LISTEN};
use meshfed_proto::{MeshId, NodeName};

/// Federates independently operated messaging meshes.
#[derive(Debug, Parser)]
#[command(name = "meshfed", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Arguments every subcommand takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// The node directory: identity, configuration and store.
    #[arg(
        long,
        global = true,
        env = "MESHFED_DIR",
        default_value = "meshfed",
        value_name = "DIR"
    )]
    pub(crate) dir: PathBuf,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a mesh identity in DIR: the mesh CA, this node's certificate and key, an admin
    /// token and meshfed.toml.
    Init(InitArgs),
}

/// `meshfed init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The new mesh's id (`[a-z0-9][a-z0-9-]{0,62}`).
    #[arg(
        long,
        value_name = "ID",
        help = "The new mesh's id: [a-z0-9][a-z0-9-]{0,62}"
    )]
    pub(crate) mesh: MeshId,

    /// This node's name within the mesh (same rule as the mesh id).
    #[arg(long, value_name = "NAME", default_value = "gw1")]
    pub(crate) node: NodeName,

    /// Address the federation side listens on.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_FEDERATION_LISTEN)]
    pub(crate) listen: SocketAddr,

    /// Address the admin API listens on.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_API_LISTEN)]
    pub(crate) api: SocketAddr,

    /// Replace an existing identity in DIR (its CA, keys, token and configuration).
    #[arg(long)]
    pub(crate) force: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn init_defaults_node_and_addresses() {
        let cli =
            Cli::try_parse_from(["meshfed", "init", "--mesh", "plant-a", "--dir", "d"]).unwrap();
        let Command::Init(args) = cli.command;
        assert_eq!(args.node.as_str(), "gw1");
        assert_eq!(args.listen.to_string(), "127.0.0.1:7443");
        assert_eq!(args.api.to_string(), "127.0.0.1:7080");
        assert!(!args.force);
        assert_eq!(cli.global.dir, PathBuf::from("d"));
    }

    #[test]
    fn dir_may_come_before_the_subcommand() {
        let cli = Cli::try_parse_from(["meshfed", "--dir", "x", "init", "--mesh", "m"]).unwrap();
        assert_eq!(cli.global.dir, PathBuf::from("x"));
    }
}
