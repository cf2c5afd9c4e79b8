//! meshfed's protocol core.
//!
//! This crate is **sans-IO**: it never touches sockets, files, tasks or the clock. Time is passed in
//! as an argument; outputs (bytes to send, events) are returned to the caller. The async drivers in
//! `meshfed-node` and the transport turn them into IO.
//!
//! Where to start reading: [`envelope`] (the federation envelope: its spec JSON presentation, its
//! CBOR wire form, and how it is signed and sealed), then [`id`] for the identifier types.
//! [`session`] is the link session state machine (heartbeats, health, suspension, termination).
//! [`relay`] tunnels a handshake and its session end to end between meshes that are not
//! adjacent, through brokers.

#![forbid(unsafe_code)]

pub mod id;
pub mod invitation;
pub mod lifecycle;
pub mod policy;
pub mod redact;

pub use id::{FederationId, InvalidId, KeyId, MeshId, NodeName};
pub use lifecycle::{FederationState, IllegalTransition, Termination};
pub mod admission;
pub mod agreement;
pub mod batch;
pub mod capability;
pub mod cbor;
pub mod crypto;
pub mod dialect;
pub mod envelope;
pub mod frame;
pub mod handshake;
pub mod interest;
pub mod relay;
pub mod revocation;
pub mod session;
pub mod statement;
pub mod topic;

pub use topic::{Topic, TopicPattern};
