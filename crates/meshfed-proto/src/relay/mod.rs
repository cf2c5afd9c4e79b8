//! End-to-end tunnels between meshes that are not adjacent, relayed by brokers.
//!
//! Mesh A reaches mesh C through one or more brokers B. Each hop is its own mutual-TLS link; over
//! those links A and C open a *tunnel*: every tunnel message rides in a [`FrameType::Relay`]
//! frame whose body is a [`RelayFrame`]. A broker reads only the [`Route`], forwards the frame to
//! the next hop by destination mesh ([`Route::forward`] first), and answers what it cannot
//! forward with [`Body::Unreachable`] along [`Route::reversed`].
//!
//! Inside the tunnel, A and C run the federation handshake and the link session exactly as over
//! TLS. The tunnel gives them what TLS gives them on a direct link:
//!
//! - **The peer's certificate chain** ([`Tunnel::peer_chain`]), exchanged in the tunnel's key
//!   exchange ([`Open`], [`Accept`], [`Finish`], below; signed SIGMA-style with each end's
//!   node key over a transcript of both ends' chains, key shares and nonces). This module checks
//!   only that each end holds its leaf's key; whether the leaf is trusted (the trust bundle or
//!   the pinned fingerprint, the mesh it names) is checked by the federation handshake inside
//!   the tunnel, exactly as it checks a TLS leaf.
//! - **A channel binding** ([`Tunnel::binding`]) in place of the RFC 9266 TLS exporter: equal at
//!   both ends, and out of reach of a broker that substituted key shares.
//! - **Integrity**: each inner frame travels as [`Sealed`], its sequence number, type and body
//!   authenticated with AES-256-GCM over an empty plaintext (GMAC: the body as associated
//!   data, the type and sequence number in the nonce) under a key per direction. Tunnel data is *not* encrypted:
//!   brokers may read inner frames (envelope payloads are sealed end to end already) but cannot
//!   forge, alter, replay or reorder one, nor drop one without the next being refused.
//!
//! # The key exchange
//!
//! SIGMA-style, three messages, all primitives from aws-lc-rs:
//!
//! 1. [`Open`] (initiator → responder): the initiator's chain, ephemeral ECDH P-384 share, nonce.
//! 2. [`Accept`] (responder → initiator): the same for the responder, and its signature over
//!    `"meshfed-tunnel-responder-v1\0" ‖ T`.
//! 3. [`Finish`] (initiator → responder): the initiator's signature over
//!    `"meshfed-tunnel-initiator-v1\0" ‖ T`.
//!
//! `T` is SHA-384 of a domain label, the tunnel id, the tunnel's ends (source and destination
//! mesh, not the route's mutable path, ttl and hops), then each end's chain, share and nonce,
//! every variable-length part prefixed by its length. Each signature is checked with the key of
//! the peer's leaf certificate, which the caller supplies ([`LeafKey`]): a broker that replaces
//! a share, a chain or a nonce changes `T` at one end only, and cannot sign for either end. Both
//! signatures cover both identities, so neither end can be made to think it talks to another.
//!
//! The keys: `PRK = HKDF-Extract(salt = T, ECDH shared secret)`; one AES-256-GCM key per
//! direction and the channel binding are HKDF-Expand of `PRK` under their own labels. The
//! initiator may send data as soon as [`ExpectAccept::accepted`] returns (its [`Finish`] first);
//! the responder only once [`ExpectFinish::finish`] has verified the initiator.
//!
//! # Routes
//!
//! A node that receives a relay frame delivers it if it is the route's destination; otherwise it
//! calls [`Route::forward`] and passes the frame on, or reports why not.
//!
//! The route (path, ttl, hops) is not authenticated: brokers must change it, and a broker that
//! lies about it can only misdirect or drop frames, which it could anyway.
//!
//! # Wire form
//!
//! Wire form (CBOR, one value, every array of exactly its items):
//! `[tunnel id (16 bytes), [source, destination, [path…], ttl, hops], body]`, the body one of
//! `[0, [cert…], share, nonce]` (Open), `[1, [cert…], share, nonce, signature]` (Accept),
//! `[2, signature]` (Finish), `[3, seq, type, body, tag]` (Data), `[4, reason]` (Unreachable),
//! `[5, reason]` (Close). Decoding checks every field and names the one that is wrong.

pub mod custody;
pub mod routes;
mod tunnel;
mod wire;

#[cfg(test)]
mod tests;

use std::fmt;

use bytes::Bytes;

pub use tunnel::{
    Ends, ExpectAccept, ExpectFinish, LeafKey, Tunnel, TunnelError, TunnelInitiator,
    TunnelResponder,
};

use crate::crypto::{CryptoError, Signature, random_fill};
use crate::handshake::{MAX_BUNDLE, MAX_CERT_LEN};
use crate::id::MeshId;

#[cfg(doc)]
use crate::frame::FrameType;

/// Most relays a route may pass (the length of [`Route::path`]).
pub const MAX_PATH: usize = 16;
/// Longest reason in [`Body::Unreachable`] and [`Body::Close`], in bytes.
pub const MAX_REASON: usize = 1024;
/// Most certificates in a chain of [`Open`] or [`Accept`] (leaf, issuing CA, mesh CA, one spare).
pub const MAX_CHAIN: usize = MAX_BUNDLE;
/// Length of a [`Sealed`] frame's AES-256-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of the nonces in [`Open`] and [`Accept`].
pub const NONCE_LEN: usize = 32;

/// CBOR bytes of a text string of a longest mesh id (63 bytes): a two-byte head and the text.
const MESH_ID_MAX: u32 = 2 + 63;

/// An upper bound of the bytes a [`RelayFrame`] adds around the body of the inner frame that its
/// [`Body::Data`] carries, on a route of [`MAX_PATH`] longest mesh ids: size the inner maximum
/// frame as the hop's maximum minus this.
pub const OVERHEAD: u32 = 1 // the frame's array head
    + 1 + 16 // tunnel id
    + 1 + 2 * MESH_ID_MAX // route's array head, source, destination
    + 1 + MAX_PATH as u32 * MESH_ID_MAX // path
    + 2 + 2 // ttl, hops
    + 1 + 1 // body's array head, kind
    + 9 + 2 // seq, type
    + 5 // the inner body's head (bodies under 4 GiB)
    + 2 + TAG_LEN as u32; // tag

/// A tunnel's id: random, chosen by its initiator.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelId(pub [u8; 16]);

impl TunnelId {
    /// A new id from the system's secure random generator.
    pub fn random() -> Result<Self, CryptoError> {
        let mut id = [0u8; 16];
        random_fill(&mut id)?;
        Ok(Self(id))
    }
}

impl fmt::Display for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TunnelId({self})")
    }
}

/// Where a relay frame goes and where it has been. Brokers change it on the way; nothing in it is
/// authenticated (see the [module doc](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The mesh that sent the frame.
    pub source: MeshId,
    /// The mesh the frame is for.
    pub destination: MeshId,
    /// The relays the frame passed, in order (at most [`MAX_PATH`]).
    pub path: Vec<MeshId>,
    /// How many more relays may forward the frame.
    pub ttl: u8,
    /// How many relays forwarded the frame; always the length of `path`.
    pub hops: u8,
}

impl Route {
    /// The ttl a source gives its frames: as many relays as a path can name.
    pub const DEFAULT_TTL: u8 = MAX_PATH as u8;

    /// A route from `source` to `destination` that no relay has forwarded yet.
    pub fn new(source: MeshId, destination: MeshId, ttl: u8) -> Self {
        Self {
            source,
            destination,
            path: Vec::new(),
            ttl,
            hops: 0,
        }
    }

    /// What relay `relay` does before passing the frame on (the destination never calls it): it
    /// refuses a frame that comes back to the source or to a relay already on the path, and one
    /// whose ttl is 0 on arrival or whose path is full; otherwise it appends itself to the path,
    /// decrements the ttl and counts the hop. A frame sent with ttl `n` thus passes at most `n`
    /// relays; it may arrive at its destination with ttl 0.
    pub fn forward(&mut self, relay: &MeshId) -> Result<(), Dropped> {
        if *relay == self.source || self.path.contains(relay) {
            let mut path = Vec::with_capacity(self.path.len() + 1);
            path.push(self.source.clone());
            path.extend(self.path.iter().cloned());
            return Err(Dropped::Loop {
                mesh: relay.clone(),
                path,
            });
        }
        if self.ttl == 0 {
            return Err(Dropped::TtlExpired { hops: self.hops });
        }
        if self.path.len() >= MAX_PATH {
            return Err(Dropped::PathFull);
        }
        self.path.push(relay.clone());
        self.ttl -= 1;
        self.hops = self.hops.saturating_add(1);
        Ok(())
    }

    /// The route of a report that relay `from` sends back to this route's source (an
    /// [`Body::Unreachable`]): a fresh path and the default ttl.
    pub fn reversed(&self, from: &MeshId) -> Route {
        Route::new(from.clone(), self.source.clone(), Self::DEFAULT_TTL)
    }
}

/// Why a relay did not forward a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// The relay is the source or already on the path.
    #[error("the route loops: mesh {mesh} is already on the path {}", arrows(.path))]
    Loop {
        /// The relay that would have forwarded the frame a second time.
        mesh: MeshId,
        /// The source, then the relays passed.
        path: Vec<MeshId>,
    },
    /// The frame arrived with ttl 0.
    #[error("ttl expired after {hops} hops")]
    TtlExpired {
        /// Relays the frame passed.
        hops: u8,
    },
    /// The path names [`MAX_PATH`] relays already (the source gave a ttl above the default).
    #[error("the path is full: it names {MAX_PATH} relays, the most a relay frame carries")]
    PathFull,
}

fn arrows(path: &[MeshId]) -> String {
    let names: Vec<&str> = path.iter().map(MeshId::as_str).collect();
    names.join(" → ")
}

/// The body of a [`FrameType::Relay`] frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayFrame {
    /// The tunnel the frame belongs to.
    pub tunnel: TunnelId,
    /// Where it goes.
    pub route: Route,
    /// What it carries.
    pub body: Body,
}

/// What a relay frame carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Key exchange, initiator → responder.
    Open(Open),
    /// Key exchange, responder → initiator.
    Accept(Accept),
    /// Key exchange, initiator → responder; the tunnel is established at both ends.
    Finish(Finish),
    /// One inner frame, authenticated.
    Data(Sealed),
    /// A relay could not forward a frame of the tunnel (a loop, ttl 0, no route); sent back to
    /// the source.
    Unreachable {
        /// Why, in words (at most [`MAX_REASON`] bytes).
        reason: String,
    },
    /// An end closes the tunnel. Unauthenticated, so a hint only: the session inside the tunnel
    /// has its own, authenticated termination.
    Close {
        /// Why, in words (at most [`MAX_REASON`] bytes).
        reason: String,
    },
}

impl Body {
    /// An [`Body::Unreachable`] report, its reason cut to [`MAX_REASON`] bytes.
    pub fn unreachable(reason: &str) -> Self {
        Self::Unreachable {
            reason: cut(reason),
        }
    }

    /// A [`Body::Close`], its reason cut to [`MAX_REASON`] bytes.
    pub fn close(reason: &str) -> Self {
        Self::Close {
            reason: cut(reason),
        }
    }
}

fn cut(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// The initiator's first key-exchange message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The initiator's certificate chain, leaf first (DER).
    pub chain: Vec<Vec<u8>>,
    /// Its ephemeral ECDH P-384 public key (uncompressed point).
    pub share: Vec<u8>,
    /// A random nonce.
    pub nonce: [u8; NONCE_LEN],
}

/// The responder's answer to [`Open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    /// The responder's certificate chain, leaf first (DER).
    pub chain: Vec<Vec<u8>>,
    /// Its ephemeral ECDH P-384 public key (uncompressed point).
    pub share: Vec<u8>,
    /// A random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The responder's signature over the transcript.
    pub signature: Signature,
}

/// The initiator's last key-exchange message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// The initiator's signature over the transcript.
    pub signature: Signature,
}

/// One inner frame as it crosses a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Its position among the frames sent in its direction, from 0.
    pub seq: u64,
    /// The inner frame's type code.
    pub ty: u8,
    /// The inner frame's body.
    pub body: Bytes,
    /// AES-256-GCM's tag over an empty plaintext, `body` the associated data, `ty` and `seq`
    /// in the nonce, under the direction's key.
    pub tag: [u8; TAG_LEN],
}

/// A relay frame body that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// The bytes are not one CBOR value.
    #[error("relay frame is not one CBOR value: {0}")]
    NotCbor(String),
    /// Bytes follow the value.
    #[error("relay frame is followed by {0} more bytes")]
    TrailingBytes(usize),
    /// A field is missing, of the wrong type, or out of bounds.
    #[error("relay frame field {field}: {reason}")]
    InvalidField {
        /// The field, as a path (`route.path`).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Whether `chain` is a chain an [`Open`] or [`Accept`] may carry; what is wrong if not.
fn check_chain(chain: &[Vec<u8>]) -> Result<(), String> {
    if chain.is_empty() || chain.len() > MAX_CHAIN {
        return Err(format!(
            "{} certificates, must be 1 to {MAX_CHAIN}",
            chain.len()
        ));
    }
    if let Some((i, c)) = chain
        .iter()
        .enumerate()
        .find(|(_, c)| c.is_empty() || c.len() > MAX_CERT_LEN)
    {
        return Err(format!(
            "certificate {i} is {} bytes, must be 1 to {MAX_CERT_LEN}",
            c.len()
        ));
    }
    Ok(())
}
