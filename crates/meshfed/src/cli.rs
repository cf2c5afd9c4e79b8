//! The command line: one subcommand per action, each with its own argument struct.
//!
//! Every value that has a type is parsed into it here (mesh ids, node names, socket addresses),
//! so a bad value is a usage error (exit status 2) naming the value and the rule it breaks.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{PathBufValueParser, TypedValueParser as _};
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
    /// Work with wire-format envelopes.
    #[command(subcommand)]
    Envelope(EnvelopeCommand),
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

/// `meshfed envelope ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum EnvelopeCommand {
    /// Print a wire-format envelope as the spec's JSON (stdout) and say whether its signature
    /// verifies against the source mesh's CA (stderr).
    ///
    /// Exit status: 0 when the envelope decodes (and, with --ca, its signature is valid); 1 when
    /// it does not decode or its signature is invalid; 2 when the CA file is unusable.
    Inspect(InspectArgs),
}

/// `meshfed envelope inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The wire-format envelope; `-` reads it from standard input.
    #[arg(value_name = "FILE", value_parser = PathBufValueParser::new().map(Input::from))]
    pub(crate) file: Input,

    /// The source mesh's CA certificate (PEM) to verify the signature against.
    #[arg(long, value_name = "CERT")]
    pub(crate) ca: Option<PathBuf>,

    /// Print the JSON on one line (for machines) instead of indented.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Where a command reads its input from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// Standard input (written `-`).
    Stdin,
    /// A file.
    File(PathBuf),
}

impl From<PathBuf> for Input {
    fn from(path: PathBuf) -> Self {
        if path.as_os_str() == "-" {
            Self::Stdin
        } else {
            Self::File(path)
        }
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdin => f.write_str("standard input"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
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
        let Command::Init(args) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
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

    #[test]
    fn envelope_inspect_reads_a_file_or_dash_for_stdin() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Envelope(EnvelopeCommand::Inspect(args)) = cli.command else {
                panic!("parsed as {:?}", cli.command)
            };
            args
        };
        let args = parse(&[
            "meshfed", "envelope", "inspect", "env.cbor", "--ca", "ca.pem",
        ]);
        assert_eq!(args.file, Input::File(PathBuf::from("env.cbor")));
        assert_eq!(args.ca, Some(PathBuf::from("ca.pem")));
        assert!(!args.json);
        let args = parse(&["meshfed", "envelope", "inspect", "-", "--json"]);
        assert_eq!(args.file, Input::Stdin);
        assert_eq!(args.ca, None);
        assert!(args.json);
    }

    #[test]
    fn envelope_inspect_needs_a_file() {
        let err = Cli::try_parse_from(["meshfed", "envelope", "inspect"]).unwrap_err();
        assert!(err.to_string().contains("FILE"), "{err}");
    }
}
