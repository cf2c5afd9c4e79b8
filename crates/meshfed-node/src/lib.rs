//! meshfed's service layer: what a node is configured to be and how its identity is set up.
//!
//! What it is: the node's typed configuration ([`config`], the `meshfed.toml` file) and the
//! `meshfed init` procedure ([`mod@init`]) that creates a mesh identity in a node directory. The
//! gateway and broker roles, the admin API and the connectors will live here too.
//! What it is not: the CLI (that is the `meshfed` binary, which only parses arguments and calls
//! in here), nor certificate or protocol logic (`meshfed-trust`, `meshfed-proto`).
//!
//! Where to start reading: [`init::init`], then [`config::NodeConfig`].

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
mod backoff;
pub mod chain;
pub mod clock;
pub mod config;
mod connectors;
pub mod credentials;
mod door;
pub mod gateway;
pub mod init;
mod metrics;
mod node;
pub mod policy;
pub mod rollover;
pub mod store_file;

pub use clock::{Clock, ManualClock};
pub use config::{ConfigError, NodeConfig};
pub use gateway::GatewayError;
pub use init::{InitError, InitOptions, InitReport, init};
pub use node::{Gateway, check_role, run};
