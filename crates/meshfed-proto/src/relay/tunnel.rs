//! The tunnel's key exchange and the established tunnel (the protocol is in the
//! [parent module](super)'s doc).

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{self, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, ECDH_P384, EphemeralPrivateKey, UnparsedPublicKey};
use aws_lc_rs::digest;
use aws_lc_rs::hkdf::{self, HKDF_SHA384};
use aws_lc_rs::rand::SystemRandom;

use super::{Accept, Finish, NONCE_LEN, Open, Sealed, TAG_LEN, TunnelId, check_chain};
use crate::crypto::{DIGEST_LEN, Digest384, Signature, SigningKey, VerifyingKey, random_fill};
use crate::frame::{Frame, FrameType};
use crate::handshake::{KEY_SHARE_LEN, Role};
use crate::id::MeshId;

const TRANSCRIPT_LABEL: &[u8] = b"meshfed-tunnel-v1\0";
const INITIATOR_LABEL: &[u8] = b"meshfed-tunnel-initiator-v1\0";
const RESPONDER_LABEL: &[u8] = b"meshfed-tunnel-responder-v1\0";
const INITIATOR_TO_RESPONDER: &[u8] = b"meshfed-tunnel-v1 initiator to responder";
const RESPONDER_TO_INITIATOR: &[u8] = b"meshfed-tunnel-v1 responder to initiator";
const BINDING_LABEL: &[u8] = b"meshfed-tunnel-v1 channel binding";

/// The public key of a leaf certificate, supplied by the trust layer (this crate parses no
/// X.509). Only the key is taken here; whether the leaf is trusted is for the federation
/// handshake inside the tunnel to decide, as it decides for a TLS leaf.
pub trait LeafKey {
    /// The key certified by `leaf_der`, or why there is none.
    fn leaf_key(&self, leaf_der: &[u8]) -> Result<VerifyingKey, String>;
}

/// The meshes at the two ends of a tunnel: the route's source and destination of the [`Open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ends {
    /// The initiator's mesh.
    pub initiator: MeshId,
    /// The responder's mesh.
    pub responder: MeshId,
}

/// Why a tunnel could not be opened, or refused a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// A key-exchange message or the local chain breaks a rule.
    #[error("tunnel {what}: {reason}")]
    Malformed {
        /// The message and field, or the local input.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A key share is not a P-384 point ECDH accepts.
    #[error("the {}'s key share is not a usable P-384 point", side_name(.0))]
    BadShare(Role),
    /// The trust layer has no key for a peer's leaf certificate.
    #[error("no public key for the {}'s leaf certificate: {reason}", side_name(.side))]
    UnknownLeaf {
        /// Whose leaf.
        side: Role,
        /// The trust layer's words.
        reason: String,
    },
    /// A signature over the transcript does not verify with the signer's leaf key.
    #[error(
        "the {}'s signature over the tunnel transcript does not verify with its leaf \
         certificate's key: a relay altered the key exchange, or the peer does not hold that key",
        side_name(.0)
    )]
    BadSignature(Role),
    /// A frame arrived out of order.
    #[error(
        "tunnel frame out of sequence: expected {expected}, got {got} (replayed, reordered or \
         lost on the way)"
    )]
    WrongSequence {
        /// The sequence number due.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// A frame's tag does not match its contents.
    #[error("tunnel frame {seq} fails its authentication tag: it was altered on the way")]
    BadTag {
        /// The frame's sequence number.
        seq: u64,
    },
    /// An authentic frame of a type this build does not know.
    #[error("tunnel frame {seq} carries unknown frame type 0x{ty:02x}")]
    UnknownFrameType {
        /// The frame's sequence number.
        seq: u64,
        /// The type code.
        ty: u8,
    },
    /// An earlier frame was refused; the tunnel must be closed.
    #[error("the tunnel refused a frame earlier and is unusable: close it and open a new one")]
    Broken,
    /// Local cryptography failed (random generator, key generation, signing).
    #[error("local cryptography failed: {0}")]
    Local(String),
}

fn side_name(role: &Role) -> &'static str {
    match role {
        Role::Initiator => "initiator",
        Role::Responder => "responder",
    }
}

/// One end's part of the transcript.
struct Half<'a> {
    chain: &'a [Vec<u8>],
    share: &'a [u8],
    nonce: &'a [u8; NONCE_LEN],
}

fn transcript(
    tunnel: &TunnelId,
    ends: &Ends,
    initiator: &Half<'_>,
    responder: &Half<'_>,
) -> Digest384 {
    let mut ctx = digest::Context::new(&digest::SHA384);
    // Every variable-length item is prefixed by its length and each chain by its count, so no
    // two transcripts hash the same bytes.
    let item = |ctx: &mut digest::Context, bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    ctx.update(TRANSCRIPT_LABEL);
    ctx.update(&tunnel.0);
    item(&mut ctx, ends.initiator.as_str().as_bytes());
    item(&mut ctx, ends.responder.as_str().as_bytes());
    for half in [initiator, responder] {
        ctx.update(&(half.chain.len() as u64).to_be_bytes());
        for cert in half.chain {
            item(&mut ctx, cert);
        }
        item(&mut ctx, half.share);
        ctx.update(half.nonce);
    }
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn signed_input(role: Role, transcript: &Digest384) -> Vec<u8> {
    let label = match role {
        Role::Initiator => INITIATOR_LABEL,
        Role::Responder => RESPONDER_LABEL,
    };
    [label, transcript].concat()
}

/// Our side of the exchange: key, chain, a fresh ephemeral key and nonce.
struct Local {
    key: Arc<SigningKey>,
    chain: Vec<Vec<u8>>,
    private: EphemeralPrivateKey,
    share: Vec<u8>,
    nonce: [u8; NONCE_LEN],
}

impl Local {
    fn new(key: Arc<SigningKey>, chain: Vec<Vec<u8>>) -> Result<Self, TunnelError> {
        check_chain(&chain).map_err(|reason| TunnelError::Malformed {
            what: "local chain",
            reason,
        })?;
        let private = EphemeralPrivateKey::generate(&ECDH_P384, &SystemRandom::new())
            .map_err(|_| TunnelError::Local("ECDH key generation failed".into()))?;
        let share = private
            .compute_public_key()
            .map_err(|_| TunnelError::Local("ECDH public key failed".into()))?
            .as_ref()
            .to_vec();
        let mut nonce = [0u8; NONCE_LEN];
        random_fill(&mut nonce).map_err(|e| TunnelError::Local(e.to_string()))?;
        Ok(Self {
            key,
            chain,
            private,
            share,
            nonce,
        })
    }

    fn half(&self) -> Half<'_> {
        Half {
            chain: &self.chain,
            share: &self.share,
            nonce: &self.nonce,
        }
    }

    fn sign(&self, role: Role, transcript: &Digest384) -> Result<Signature, TunnelError> {
        self.key
            .sign(&signed_input(role, transcript))
            .map_err(|e| TunnelError::Local(e.to_string()))
    }
}

/// Checks what a peer sent before any work is done with it.
fn check_peer(
    what: &'static str,
    peer: Role,
    chain: &[Vec<u8>],
    share: &[u8],
) -> Result<(), TunnelError> {
    check_chain(chain).map_err(|reason| TunnelError::Malformed { what, reason })?;
    if share.len() != KEY_SHARE_LEN || share[0] != 0x04 {
        return Err(TunnelError::BadShare(peer));
    }
    Ok(())
}

/// Checks `signature` by `peer` over `transcript` with the key of the first certificate of `chain`.
fn verify_peer(
    keys: &dyn LeafKey,
    peer: Role,
    chain: &[Vec<u8>],
    transcript: &Digest384,
    signature: &Signature,
) -> Result<(), TunnelError> {
    let leaf = chain.first().ok_or(TunnelError::Malformed {
        what: "peer chain",
        reason: "is empty".into(),
    })?;
    let key = keys
        .leaf_key(leaf)
        .map_err(|reason| TunnelError::UnknownLeaf { side: peer, reason })?;
    key.verify(&signed_input(peer, transcript), signature)
        .map_err(|_| TunnelError::BadSignature(peer))
}

/// The keys of an established tunnel, from our side.
struct Keys {
    send: LessSafeKey,
    receive: LessSafeKey,
    binding: [u8; 32],
}

struct BindingLen;

impl hkdf::KeyType for BindingLen {
    fn len(&self) -> usize {
        32
    }
}

/// ECDH with the peer's share, then the key schedule of the [parent module](super)'s doc.
fn keys(
    us: Role,
    private: EphemeralPrivateKey,
    peer_share: &[u8],
    transcript: &Digest384,
) -> Result<Keys, TunnelError> {
    let peer = match us {
        Role::Initiator => Role::Responder,
        Role::Responder => Role::Initiator,
    };
    let local = |what: &str| TunnelError::Local(format!("HKDF-Expand of the {what} failed"));
    agreement::agree_ephemeral(
        private,
        UnparsedPublicKey::new(&ECDH_P384, peer_share),
        TunnelError::BadShare(peer),
        |shared| {
            let prk = hkdf::Salt::new(HKDF_SHA384, transcript).extract(shared);
            let key = |label: &[u8]| {
                prk.expand(&[label], &AES_256_GCM)
                    .map(UnboundKey::from)
                    .map(LessSafeKey::new)
                    .map_err(|_| local("direction key"))
            };
            let i2r = key(INITIATOR_TO_RESPONDER)?;
            let r2i = key(RESPONDER_TO_INITIATOR)?;
            let mut binding = [0u8; 32];
            prk.expand(&[BINDING_LABEL], BindingLen)
                .and_then(|okm| okm.fill(&mut binding))
                .map_err(|_| local("channel binding"))?;
            let (send, receive) = match us {
                Role::Initiator => (i2r, r2i),
                Role::Responder => (r2i, i2r),
            };
            Ok(Keys {
                send,
                receive,
                binding,
            })
        },
    )
}

/// Opens tunnels: the initiator's entry point.
#[derive(Debug)]
pub struct TunnelInitiator;

impl TunnelInitiator {
    /// Starts tunnel `tunnel` between `ends`, presenting `chain` (leaf first, DER; its leaf
    /// certifies `key`). Send the [`Open`], wait for the [`Accept`].
    pub fn start(
        tunnel: TunnelId,
        ends: Ends,
        key: Arc<SigningKey>,
        chain: Vec<Vec<u8>>,
    ) -> Result<(ExpectAccept, Open), TunnelError> {
        let local = Local::new(key, chain)?;
        let open = Open {
            chain: local.chain.clone(),
            share: local.share.clone(),
            nonce: local.nonce,
        };
        Ok((
            ExpectAccept {
                tunnel,
                ends,
                local,
            },
            open,
        ))
    }
}

/// The initiator has sent its [`Open`] and expects the responder's [`Accept`].
pub struct ExpectAccept {
    tunnel: TunnelId,
    ends: Ends,
    local: Local,
}

impl ExpectAccept {
    /// Checks the responder's signature; on success the tunnel is established at this end (it
    /// may send data at once) and the [`Finish`] is to be sent, before any data.
    pub fn accepted(
        self,
        accept: &Accept,
        keys: &dyn LeafKey,
    ) -> Result<(Tunnel, Finish), TunnelError> {
        check_peer(
            "accept.chain",
            Role::Responder,
            &accept.chain,
            &accept.share,
        )?;
        let peer = Half {
            chain: &accept.chain,
            share: &accept.share,
            nonce: &accept.nonce,
        };
        let transcript = transcript(&self.tunnel, &self.ends, &self.local.half(), &peer);
        verify_peer(
            keys,
            Role::Responder,
            &accept.chain,
            &transcript,
            &accept.signature,
        )?;
        let signature = self.local.sign(Role::Initiator, &transcript)?;
        let keys = self::keys(
            Role::Initiator,
            self.local.private,
            &accept.share,
            &transcript,
        )?;
        let tunnel = Tunnel::new(self.tunnel, Role::Initiator, keys, accept.chain.clone());
        Ok((tunnel, Finish { signature }))
    }
}

impl fmt::Debug for ExpectAccept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectAccept")
            .field("tunnel", &self.tunnel)
            .field("ends", &self.ends)
            .finish_non_exhaustive()
    }
}

/// Answers tunnels: the responder's entry point.
#[derive(Debug)]
pub struct TunnelResponder;

impl TunnelResponder {
    /// Answers the [`Open`] of tunnel `tunnel` between `ends` (as the route named them),
    /// presenting `chain` (leaf first, DER; its leaf certifies `key`). Send the [`Accept`], wait
    /// for the [`Finish`]; send no data before it.
    pub fn accept(
        tunnel: TunnelId,
        ends: Ends,
        open: &Open,
        key: Arc<SigningKey>,
        chain: Vec<Vec<u8>>,
    ) -> Result<(ExpectFinish, Accept), TunnelError> {
        check_peer("open.chain", Role::Initiator, &open.chain, &open.share)?;
        let local = Local::new(key, chain)?;
        let peer = Half {
            chain: &open.chain,
            share: &open.share,
            nonce: &open.nonce,
        };
        let transcript = transcript(&tunnel, &ends, &peer, &local.half());
        let signature = local.sign(Role::Responder, &transcript)?;
        let accept = Accept {
            chain: local.chain,
            share: local.share,
            nonce: local.nonce,
            signature,
        };
        let keys = keys(Role::Responder, local.private, &open.share, &transcript)?;
        let next = ExpectFinish {
            tunnel,
            transcript,
            peer_chain: open.chain.clone(),
            keys,
        };
        Ok((next, accept))
    }
}

/// The responder has sent its [`Accept`] and expects the initiator's [`Finish`].
pub struct ExpectFinish {
    tunnel: TunnelId,
    transcript: Digest384,
    peer_chain: Vec<Vec<u8>>,
    keys: Keys,
}

impl ExpectFinish {
    /// Checks the initiator's signature; on success the tunnel is established at this end.
    pub fn finish(self, finish: &Finish, keys: &dyn LeafKey) -> Result<Tunnel, TunnelError> {
        verify_peer(
            keys,
            Role::Initiator,
            &self.peer_chain,
            &self.transcript,
            &finish.signature,
        )?;
        Ok(Tunnel::new(
            self.tunnel,
            Role::Responder,
            self.keys,
            self.peer_chain,
        ))
    }
}

impl fmt::Debug for ExpectFinish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectFinish")
            .field("tunnel", &self.tunnel)
            .finish_non_exhaustive()
    }
}

/// An established tunnel: authenticates the frames it sends, checks the ones it receives.
///
/// Once [`Tunnel::open`] refuses a frame the tunnel is unusable (every later `open` fails with
/// [`TunnelError::Broken`]): the driver closes it, and the session above re-establishes over a
/// new tunnel.
pub struct Tunnel {
    id: TunnelId,
    role: Role,
    keys: Keys,
    peer_chain: Vec<Vec<u8>>,
    sent: u64,
    expected: u64,
    broken: bool,
}

impl Tunnel {
    fn new(id: TunnelId, role: Role, keys: Keys, peer_chain: Vec<Vec<u8>>) -> Self {
        Self {
            id,
            role,
            keys,
            peer_chain,
            sent: 0,
            expected: 0,
            broken: false,
        }
    }

    /// The tunnel's id.
    pub fn id(&self) -> TunnelId {
        self.id
    }

    /// The channel binding the handshake inside the tunnel uses in place of the TLS exporter.
    pub fn binding(&self) -> [u8; 32] {
        self.keys.binding
    }

    /// The peer's certificate chain, leaf first: what the handshake inside the tunnel verifies
    /// in place of the TLS peer chain.
    pub fn peer_chain(&self) -> &[Vec<u8>] {
        &self.peer_chain
    }

    /// `frame`, authenticated as the next frame in our direction.
    pub fn seal(&mut self, frame: &Frame) -> Sealed {
        let seq = self.sent;
        // A u64 counter does not wrap within a tunnel's life (2^64 frames).
        self.sent += 1;
        let ty = frame.ty as u8;
        Sealed {
            seq,
            ty,
            body: frame.body.clone(),
            tag: tag(&self.keys.send, seq, ty, &frame.body),
        }
    }

    /// The inner frame `sealed` carries, if it is authentic and the next one due.
    pub fn open(&mut self, sealed: &Sealed) -> Result<Frame, TunnelError> {
        if self.broken {
            return Err(TunnelError::Broken);
        }
        let result = self.check(sealed);
        self.broken = result.is_err();
        result
    }

    fn check(&mut self, sealed: &Sealed) -> Result<Frame, TunnelError> {
        let seq = sealed.seq;
        // GCM with nothing to decrypt: checks the tag over the body, in constant time.
        let mut tag = sealed.tag;
        self.keys
            .receive
            .open_in_place(nonce(seq, sealed.ty), Aad::from(&sealed.body[..]), &mut tag)
            .map_err(|_| TunnelError::BadTag { seq })?;
        if seq != self.expected {
            return Err(TunnelError::WrongSequence {
                expected: self.expected,
                got: seq,
            });
        }
        let ty = FrameType::from_code(sealed.ty)
            .ok_or(TunnelError::UnknownFrameType { seq, ty: sealed.ty })?;
        self.expected += 1;
        Ok(Frame::new(ty, sealed.body.clone()))
    }
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("sent", &self.sent)
            .field("received", &self.expected)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// The GCM nonce of frame `seq` of type `ty`: the type, three zero bytes, then `seq`. Unique
/// under a direction's key, since `seq` never repeats in it.
fn nonce(seq: u64, ty: u8) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[0] = ty;
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The AES-256-GCM tag of an empty plaintext with `body` as associated data (GMAC): it binds
/// `seq` and `ty` through the nonce, the body as associated data.
fn tag(key: &LessSafeKey, seq: u64, ty: u8, body: &[u8]) -> [u8; TAG_LEN] {
    let mut out = [0u8; TAG_LEN];
    // Sealing nothing cannot fail but for a nonce or length misuse, which the types rule out;
    // an all-zero tag would only make the peer refuse the frame.
    if let Ok(t) = key.seal_in_place_separate_tag(nonce(seq, ty), Aad::from(body), &mut []) {
        out.copy_from_slice(t.as_ref());
    }
    out
}
