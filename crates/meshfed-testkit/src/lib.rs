//! Test support for meshfed, usable from the tests of any crate.
//!
//! What it is: a generated test PKI ([`TestPki`]) that makes, for one mesh, a CA and node
//! certificates that are valid, expired, wrongly named (another mesh in the SAN) or wrongly
//! signed (by an impostor CA of the same name); wire envelopes signed by a [`TestNode`], sealed
//! or clear ([`envelope`]); real `meshfed` processes on ephemeral loopback ports, driven
//! through the CLI ([`process`]: [`Mesh`]); real MQTT and NATS brokers for connector tests
//! ([`brokers`]: [`Mosquitto`], [`NatsServer`]); strict outside parsers (`openssl`, Python
//! `cryptography`) over written certificates ([`strict`]); and [`temp_dir`]. What it is not: production code;
//! its helpers panic on failure, because a failure here is a broken test setup.
//!
//! Where to start reading: [`TestPki`], then [`TestNode::sealed_envelope`].

#![forbid(unsafe_code)]

pub mod brokers;
pub mod envelope;
pub mod pki;
pub mod process;
pub mod strict;

pub use brokers::{Mosquitto, MosquittoOptions, NatsAuth, NatsOptions, NatsServer};
pub use pki::{TestNode, TestPki};
pub use process::{Mesh, Outcome, Spawned, copy_dir};

/// A fresh temporary directory, removed when the returned guard drops.
pub fn temp_dir() -> tempfile::TempDir {
    #[expect(
        clippy::expect_used,
        reason = "test support: no temp dir means no test"
    )]
    tempfile::Builder::new()
        .prefix("meshfed-test-")
        .tempdir()
        .expect("create a temporary directory")
}
