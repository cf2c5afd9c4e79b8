//! meshfed's links: mutual-TLS 1.3 connections between nodes, carrying meshfed frames.
//!
//! What it is: the adapter between the sans-IO protocol core (`meshfed-proto`) and the network.
//! It dials ([`dial`]) and listens ([`Listener`]) with tokio and rustls, and hands the driver a
//! [`Link`] that sends and receives [`Frame`](meshfed_proto::frame::Frame)s. It also provides
//! the core's certificate check, [`X509PeerVerifier`]. What it is not: the federation handshake,
//! heartbeats or routing (the core's state machines and the node's drivers), nor certificate
//! issuance (`meshfed-trust`).
//!
//! # The TLS profile
//! rustls with the aws-lc-rs provider, and nothing else negotiable: TLS 1.3 only; cipher suites
//! `TLS13_AES_256_GCM_SHA384` (preferred) and `TLS13_AES_128_GCM_SHA256`; key exchange
//! `secp384r1` only; signatures `ECDSA_NISTP384_SHA384` only, in the handshake and in
//! certificates; ALPN [`ALPN`] (`meshfed/1`) required on both sides; no session resumption, no
//! 0-RTT, no SNI. No public CA is trusted anywhere. Every node presents its leaf certificate
//! followed by its mesh CA certificate.
//!
//! # Who is trusted, and where it is decided
//! - **Dialling** ([`dial`]): the caller says how to trust the server ([`ServerTrust`]): a
//!   pinned CA fingerprint from an invitation, or the peer's trust bundle stored at the
//!   federation handshake. The server's leaf must verify against that CA or bundle (for TLS
//!   server authentication) and name the expected mesh, or the handshake fails naming the fact.
//! - **Listening** ([`Listener`]): the listener cannot know in advance which meshes will dial it
//!   (a joiner comes with an invitation, not with a CA we hold). So it checks only that the
//!   client's chain is *self-consistent*: a P-384 node certificate with a `meshfed://` SAN URI,
//!   valid now and usable for TLS client authentication, signed by the CA certificate the client
//!   presents next, naming a node of that CA's mesh; TLS proves the client holds the key.
//!   **This does not mean the client's mesh is trusted.** That is decided afterwards by the
//!   federation handshake over the link: by the invitation proof bound to this TLS channel
//!   ([`Link::binding`]), or by verifying [`Link::peer_leaf`] against the stored bundle of the
//!   federation the client claims ([`X509PeerVerifier`]). Until then a link accepted by a
//!   listener carries only handshake frames.
//!
//! Where to start reading: [`dial`] and [`Listener`], then [`Link`]; the verifiers are in
//! `tls.rs`, and every failure is a [`TransportError`] naming what happened.

#![forbid(unsafe_code)]

mod error;
mod identity;
mod link;
mod net;
mod peer;
mod tls;

pub use error::TransportError;
pub use identity::TlsIdentity;
pub use link::{DEFAULT_WRITE_TIMEOUT, Link, LinkReader, LinkWriter};
pub use meshfed_trust::KeyPurpose;
pub use net::{Incoming, Listener, dial};
pub use peer::X509PeerVerifier;
pub use tls::ServerTrust;

/// The ALPN protocol of meshfed links. A peer that does not offer (client) or select (server)
/// it is refused.
pub const ALPN: &[u8] = b"meshfed/1";
