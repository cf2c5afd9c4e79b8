//! The `meshfed` command.
//!
//! What it is: a thin front end. It parses the command line (clap), sets up logging (tracing, to
//! stderr, filtered by `MESHFED_LOG`), calls into the libraries and turns the outcome into
//! output and an exit code. What it is not: the place for logic; everything testable lives in
//! `meshfed-node` and the crates below it.
//!
//! Where to start reading: [`cli`] (the commands and their arguments), then [`failure`] (exit
//! codes and how errors are printed).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;

mod audit;
mod bench;
mod ca;
mod cli;
mod client;
mod connector;
mod delegation;
mod demo;
mod demo_buses;
mod envelope;
mod events;
mod failure;
mod federation;
mod gateway;
mod held;
mod init;
mod messages;
mod output;
mod policy;
mod route;
mod token;

use cli::{Cli, Command, EnvelopeCommand, RouteCommand, TokenCommand};
use failure::Failure;
use meshfed_node::config::Role;

/// mimalloc rather than the system allocator: a gateway allocates and frees a few buffers per
/// message on both runtime threads, and glibc's malloc was about a sixth of the CPU time of
/// `meshfed bench` (perf, 1 KiB qos 1).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let outcome = Cli::try_parse().map_err(Failure::from).and_then(|cli| {
        // A daemon reports what it does; one-shot commands only what went wrong. The demo's
        // meshes are temporary, so advice about lasting setups (ephemeral ports) does not
        // apply to them: it reports errors only.
        let default = match cli.command {
            Command::Gateway(_) | Command::Broker(_) => "info",
            Command::Demo(_) => "error",
            _ => "warn",
        };
        init_tracing(default);
        run(cli)
    });
    match outcome {
        Ok(()) => ExitCode::from(failure::SUCCESS),
        Err(failure) => failure.report(),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let output = cli.global.output().map_err(Failure::CommandLine)?;
    match cli.command {
        Command::Init(args) => init::run(&cli.global, args),
        Command::Gateway(args) => gateway::run(&cli.global.dir, &args, Role::Gateway),
        Command::Broker(args) => gateway::run(&cli.global.dir, &args, Role::Broker),
        Command::Federation(cmd) => federation::run(&cli.global.dir, cmd, output),
        Command::Events(args) => events::follow(&cli.global.dir, &args, output),
        Command::Send(args) => messages::send(&cli.global.dir, args),
        Command::Subscribe(args) => messages::subscribe(&cli.global.dir, args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(args, output),
        Command::Envelope(EnvelopeCommand::Inspect(args)) => envelope::inspect(&args, output),
        Command::Token(TokenCommand::Rotate) => token::rotate(&cli.global.dir),
        Command::Token(command) => token::run(&cli.global.dir, command, output),
        Command::Ca(cmd) => ca::run(&cli.global.dir, cmd, output),
        Command::Route(RouteCommand::List) => route::list(&cli.global.dir, output),
        Command::Connector(cmd) => connector::run(&cli.global.dir, cmd, output),
        Command::Audit(cmd) => audit::run(&cli.global.dir, cmd, output),
        Command::Policy(cmd) => policy::run(&cli.global.dir, cmd, output),
        Command::Delegation(cmd) => delegation::run(&cli.global.dir, cmd, output),
    }
}

/// Logs go to stderr, at `default` (`info` for the gateway, `warn` otherwise) unless
/// `MESHFED_LOG` says otherwise (e.g. `MESHFED_LOG=debug`).
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHFED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
