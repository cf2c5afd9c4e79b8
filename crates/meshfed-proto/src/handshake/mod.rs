//! The federation handshake as a sans-IO state machine — the spec's six steps, message for
//! message — and the short resumption of a stored federation.
//!
//! A [`Handshake`] is made for one link, as initiator or responder, with the local identity, the
//! TLS peer's leaf certificate and the channel's RFC 9266 exporter value. The driver then loops:
//! feed each received frame to [`Handshake::handle_frame`], take events from
//! [`Handshake::poll_event`] (acting on them *before* sending, e.g. consuming an invitation in the
//! store, and aborting if that fails), send frames from [`Handshake::poll_transmit`], and call
//! [`Handshake::handle_timeout`] at [`Handshake::poll_timeout`]. Every failure queues an error
//! frame with a code and a reason for the peer, and is returned to the driver.
//!
//! Each state is its own type, named for what it expects next; `handle` consumes it and returns
//! the next, so data exists only in the states where it is valid.

pub mod error;
mod initiator;
pub mod messages;
mod responder;
pub mod resume;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::agreement::{self, ECDH_P384, EphemeralPrivateKey, UnparsedPublicKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;

pub use error::{ErrorCode, HandshakeError};
pub use messages::Message;
pub use resume::CaughtUp;

use crate::agreement::SignedAgreement;
use crate::capability::{Accepted, Capabilities};
use crate::crypto::{
    ContentSecret, DIGEST_LEN, Digest384, SIGNATURE_LEN, Signature, SigningKey, VerifyingKey,
    sha384,
};
use crate::envelope::Timestamp;
use crate::frame::Frame;
use crate::id::{FederationId, MeshId, NodeName};
use crate::policy::PolicyOffer;

/// Most policy rounds before negotiation is abandoned.
pub const MAX_POLICY_ROUNDS: u8 = 4;
/// Most CA certificates in a trust bundle (two during a CA rollover, room for intermediates).
pub const MAX_BUNDLE: usize = 4;
/// Largest certificate accepted in a bundle.
pub const MAX_CERT_LEN: usize = 16 << 10;
/// Length of an uncompressed P-384 key share.
pub const KEY_SHARE_LEN: usize = 97;

/// A verified peer: who its certificate names, and its public key.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// The peer's mesh, from its certificate.
    pub mesh: MeshId,
    /// The peer's node, from its certificate.
    pub node: NodeName,
    /// The certificate's public key.
    pub key: VerifyingKey,
}

/// Certificate verification, supplied by the trust layer (X.509 path validation is not part of
/// this crate): is `leaf` issued by one of the CAs in `bundle` (directly or through one of
/// `intermediates`, the other certificates the peer presented) and valid at `now`?
pub trait PeerVerifier: Send + Sync + fmt::Debug {
    /// The identity `leaf` certifies, or why it is not trusted.
    fn verify(
        &self,
        bundle: &[Vec<u8>],
        leaf: &[u8],
        intermediates: &[Vec<u8>],
        now: Timestamp,
    ) -> Result<PeerIdentity, String>;
}

/// This node, as the handshake presents it.
#[derive(Clone)]
pub struct LocalIdentity {
    /// Our mesh.
    pub mesh: MeshId,
    /// Our node.
    pub node: NodeName,
    /// Our trust bundle (mesh CA certificates, DER).
    pub bundle: Vec<Vec<u8>>,
    /// Our node key, matching the certificate TLS presents.
    pub key: Arc<SigningKey>,
    /// The capabilities we offer (or wish for, as responder).
    pub capabilities: Capabilities,
    /// Our policy offer.
    pub policy: PolicyOffer,
    /// Verifies peer certificates.
    pub verifier: Arc<dyn PeerVerifier>,
    /// How long each step may take.
    pub step_timeout: Duration,
    /// How long a new agreement is valid.
    pub agreement_validity: Duration,
}

impl fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("mesh", &self.mesh)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// What TLS established about the channel.
#[derive(Debug, Clone)]
pub struct Channel {
    /// The peer's leaf certificate (DER).
    pub peer_leaf: Vec<u8>,
    /// The other certificates the peer presented after its leaf (DER): its mesh's issuing CA,
    /// if it has one, and its mesh CA.
    pub peer_intermediates: Vec<Vec<u8>>,
    /// The RFC 9266 `tls-exporter` channel binding (32 bytes).
    pub binding: Vec<u8>,
}

/// An invitation as the joiner holds it (decoded from the token).
#[derive(Debug, Clone)]
pub struct Invitation {
    /// The invitation's public id.
    pub token_id: String,
    /// The inviting mesh.
    pub inviter: MeshId,
    /// SHA-384 of the inviter's CA certificate (DER).
    pub ca_fingerprint: Digest384,
    /// The one-time 256-bit secret.
    pub secret: [u8; 32],
}

/// An invitation as the inviter keeps it: the verifier key, never the secret.
#[derive(Debug, Clone)]
pub struct PendingInvitation {
    /// Public id.
    pub token_id: String,
    /// The mesh invited.
    pub peer_mesh: MeshId,
    /// [`invitation_key`] of the secret.
    pub verifier_key: Digest384,
    /// Expiry.
    pub expires: Timestamp,
    /// When it was used, if it was.
    pub used: Option<Timestamp>,
}

/// Statically configured trust in a peer mesh: its CA fingerprint.
#[derive(Debug, Clone)]
pub struct PinnedPeer {
    /// The peer mesh.
    pub mesh: MeshId,
    /// SHA-384 of its CA certificate (DER).
    pub ca_fingerprint: Digest384,
}

/// A stored federation that can be resumed.
#[derive(Debug, Clone)]
pub struct KnownFederation {
    /// The federation.
    pub id: FederationId,
    /// The peer mesh.
    pub peer_mesh: MeshId,
    /// The peer's trust bundle, exactly as stored.
    pub peer_bundle: Vec<Vec<u8>>,
    /// The stored agreement; resumption names it by its digest and sends it along, so a peer
    /// one renegotiation behind can take it over ([`resume`]).
    pub agreement: SignedAgreement,
}

/// Whom the initiator dials, and on what grounds.
#[derive(Debug, Clone)]
pub enum Target {
    /// Join by invitation token.
    Join(Invitation),
    /// Federate with a statically configured peer.
    Pinned(PinnedPeer),
    /// Resume a stored federation.
    Resume(KnownFederation),
}

/// What the responder knows when a link arrives.
#[derive(Debug, Clone, Default)]
pub struct ResponderKnowledge {
    /// Outstanding (and recently used) invitations.
    pub invitations: Vec<PendingInvitation>,
    /// Statically trusted peers.
    pub pinned: Vec<PinnedPeer>,
    /// Live federations that may resume.
    pub federations: Vec<KnownFederation>,
    /// The id a new federation will get.
    pub new_federation_id: Option<FederationId>,
    /// Terminated federations, the latest per peer mesh: a new federation with one of those
    /// meshes (by invitation or pinned trust) re-establishes it under its id, keeping its
    /// history, instead of starting a new one.
    pub ended: Vec<EndedFederation>,
}

/// A terminated federation that a new handshake with its peer re-establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedFederation {
    /// Its id, which the re-established federation keeps.
    pub id: FederationId,
    /// The peer mesh.
    pub peer_mesh: MeshId,
}

/// Which side of the handshake this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Dialled.
    Initiator,
    /// Answered.
    Responder,
}

/// The handshake's milestones, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Step 2 done.
    CapabilitiesAgreed,
    /// Step 3 done: the peer's certificate and trust are verified.
    PeerVerified,
    /// Step 4 done after this many rounds.
    PolicyAgreed {
        /// Rounds taken.
        rounds: u8,
    },
    /// Step 5 done: the agreement is signed by both sides.
    AgreementSigned,
}

/// A federation ready to carry messages.
pub struct Established {
    /// The federation.
    pub federation_id: FederationId,
    /// Our side.
    pub role: Role,
    /// The verified peer.
    pub peer: PeerIdentity,
    /// The peer's trust bundle, to store and to verify every later link against.
    pub peer_bundle: Vec<Vec<u8>>,
    /// The signed agreement; `None` on resumption (the stored one stands, or `caught_up`).
    pub agreement: Option<SignedAgreement>,
    /// On resumption, the peer's agreement that replaces the stored one: this side missed the
    /// confirm of the renegotiation that made it. Store it as the switch would have.
    pub caught_up: Option<Box<CaughtUp>>,
    /// The accepted capabilities; `None` on resumption.
    pub accepted: Option<Accepted>,
    /// The content secret of this link session (fresh ECDH on every link).
    pub content: ContentSecret,
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Established")
            .field("federation_id", &self.federation_id)
            .field("role", &self.role)
            .field("peer", &self.peer.mesh)
            .field("resumed", &self.agreement.is_none())
            .field(
                "caught_up",
                &self.caught_up.as_ref().map(|c| c.agreement.version),
            )
            .finish_non_exhaustive()
    }
}

/// What the handshake tells its driver.
#[derive(Debug)]
pub enum Event {
    /// A milestone was reached.
    Progress(Step),
    /// The responder accepted this invitation: consume it in the store before sending on.
    InvitationUsed {
        /// The invitation.
        token_id: String,
    },
    /// The federation is active (or resumed).
    Established(Box<Established>),
}

/// Shared by every state of one handshake.
struct Context {
    local: LocalIdentity,
    channel: Channel,
    out: VecDeque<Frame>,
    events: VecDeque<Event>,
    rng: SystemRandom,
}

impl Context {
    fn send(&mut self, msg: Message) {
        self.out.push_back(msg.to_frame());
    }

    fn sign(&self, input: &[u8]) -> Result<Signature, HandshakeError> {
        self.local
            .key
            .sign(input)
            .map_err(|e| HandshakeError::Local(e.to_string()))
    }

    fn verify_peer(
        &self,
        bundle: &[Vec<u8>],
        now: Timestamp,
    ) -> Result<PeerIdentity, HandshakeError> {
        self.local
            .verifier
            .verify(
                bundle,
                &self.channel.peer_leaf,
                &self.channel.peer_intermediates,
                now,
            )
            .map_err(HandshakeError::UntrustedPeer)
    }

    fn key_share(&self) -> Result<(EphemeralPrivateKey, Vec<u8>), HandshakeError> {
        let private = EphemeralPrivateKey::generate(&ECDH_P384, &self.rng)
            .map_err(|_| HandshakeError::Local("ECDH key generation failed".into()))?;
        let public = private
            .compute_public_key()
            .map_err(|_| HandshakeError::Local("ECDH public key failed".into()))?;
        Ok((private, public.as_ref().to_vec()))
    }
}

/// ECDH with the peer's share, then HKDF into the content secret, salted with the transcript.
fn content_secret(
    private: EphemeralPrivateKey,
    peer_share: &[u8],
    transcript: &[&[u8]],
) -> Result<ContentSecret, HandshakeError> {
    let peer = UnparsedPublicKey::new(&ECDH_P384, peer_share);
    let salt = sha384(&transcript.concat());
    agreement::agree_ephemeral(
        private,
        peer,
        HandshakeError::BadSignature("key share"),
        |shared| Ok(ContentSecret::derive(shared, &salt)),
    )
}

/// The key that checks an invitation's proof: SHA-384 of the secret, domain-separated. The
/// inviter stores this, never the secret itself.
pub fn invitation_key(secret: &[u8; 32]) -> Digest384 {
    sha384(&[b"meshfed-invitation-key-v1\0".as_slice(), secret].concat())
}

/// HMAC-SHA384 proving knowledge of the invitation on this TLS channel.
pub fn invitation_mac(key: &Digest384, token_id: &str, joiner: &MeshId, binding: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA384, key);
    let mut ctx = hmac::Context::with_key(&key);
    for part in [
        b"meshfed-invitation-v1\0".as_slice(),
        token_id.as_bytes(),
        b"\0",
        joiner.as_str().as_bytes(),
        b"\0",
        binding,
    ] {
        ctx.update(part);
    }
    ctx.sign().as_ref().to_vec()
}

fn verify_invitation_mac(
    key: &Digest384,
    token_id: &str,
    joiner: &MeshId,
    binding: &[u8],
    mac: &[u8],
) -> bool {
    let expected = invitation_mac(key, token_id, joiner, binding);
    aws_lc_rs::constant_time::verify_slices_are_equal(&expected, mac).is_ok()
}

/// What each agreement signature covers: the role, then the agreement's digest.
pub(crate) fn agreement_input(role: Role, digest: &Digest384) -> Vec<u8> {
    let label: &[u8] = match role {
        Role::Initiator => b"meshfed-agreement-initiator-v1\0",
        Role::Responder => b"meshfed-agreement-responder-v1\0",
    };
    [label, digest].concat()
}

/// What a key-share signature covers: the agreement (or federation) digest, both shares so far,
/// and the channel binding.
fn key_share_input(label: &[u8], digest: &[u8], shares: &[&[u8]], binding: &[u8]) -> Vec<u8> {
    let mut v = label.to_vec();
    v.extend_from_slice(digest);
    for s in shares {
        v.extend_from_slice(s);
    }
    v.extend_from_slice(binding);
    v
}

fn signature(
    message: &'static str,
    field: &'static str,
    bytes: &[u8],
) -> Result<Signature, HandshakeError> {
    let arr: [u8; SIGNATURE_LEN] = bytes.try_into().map_err(|_| HandshakeError::InvalidField {
        message,
        field,
        reason: format!("is {} bytes, not {SIGNATURE_LEN}", bytes.len()),
    })?;
    Ok(Signature(arr))
}

fn check_share(message: &'static str, share: &[u8]) -> Result<(), HandshakeError> {
    if share.len() != KEY_SHARE_LEN || share[0] != 4 {
        return Err(HandshakeError::InvalidField {
            message,
            field: "key_share",
            reason: format!("is not an uncompressed P-384 point ({} bytes)", share.len()),
        });
    }
    Ok(())
}

fn bundle(
    message: &'static str,
    certs: &[serde_bytes::ByteBuf],
) -> Result<Vec<Vec<u8>>, HandshakeError> {
    if certs.is_empty() || certs.len() > MAX_BUNDLE {
        return Err(HandshakeError::InvalidField {
            message,
            field: "bundle",
            reason: format!(
                "has {} certificates, must have 1 to {MAX_BUNDLE}",
                certs.len()
            ),
        });
    }
    if let Some(c) = certs.iter().find(|c| c.len() > MAX_CERT_LEN) {
        return Err(HandshakeError::InvalidField {
            message,
            field: "bundle",
            reason: format!("a certificate of {} bytes exceeds {MAX_CERT_LEN}", c.len()),
        });
    }
    Ok(certs.iter().map(|c| c.to_vec()).collect())
}

fn digest(message: &'static str, bytes: &[u8]) -> Result<Digest384, HandshakeError> {
    bytes.try_into().map_err(|_| HandshakeError::InvalidField {
        message,
        field: "agreement_digest",
        reason: format!("is {} bytes, not {DIGEST_LEN}", bytes.len()),
    })
}

fn unexpected(expected: &'static str, got: &Message) -> HandshakeError {
    HandshakeError::UnexpectedMessage {
        expected,
        got: got.name().to_owned(),
    }
}

/// The state a handshake is in; each holds exactly what its step needs.
enum State {
    I(initiator::State),
    R(responder::State),
    Done,
    Failed,
}

/// One link's handshake. See the module documentation for the driving loop.
pub struct Handshake {
    cx: Context,
    state: State,
    deadline: Option<Timestamp>,
    /// An error frame was sent or received: nothing more goes to the peer.
    closed: bool,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("expects", &self.expects())
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Starts a handshake as the dialling side; the first message is queued.
    pub fn initiator(
        local: LocalIdentity,
        channel: Channel,
        target: Target,
        now: Timestamp,
    ) -> Result<Self, HandshakeError> {
        let mut cx = Context {
            local,
            channel,
            out: VecDeque::new(),
            events: VecDeque::new(),
            rng: SystemRandom::new(),
        };
        let deadline = Some(now.saturating_add(cx.local.step_timeout));
        let state = initiator::start(&mut cx, target, now)?;
        Ok(Self {
            cx,
            state: State::I(state),
            deadline,
            closed: false,
        })
    }

    /// Starts a handshake as the answering side.
    pub fn responder(
        local: LocalIdentity,
        channel: Channel,
        knowledge: ResponderKnowledge,
        now: Timestamp,
    ) -> Self {
        let cx = Context {
            local,
            channel,
            out: VecDeque::new(),
            events: VecDeque::new(),
            rng: SystemRandom::new(),
        };
        let deadline = Some(now.saturating_add(cx.local.step_timeout));
        Self {
            cx,
            state: State::R(responder::start(knowledge)),
            deadline,
            closed: false,
        }
    }

    /// What the handshake waits for, for logs and timeouts.
    pub fn expects(&self) -> &'static str {
        match &self.state {
            State::I(s) => s.expects(),
            State::R(s) => s.expects(),
            State::Done => "nothing (established)",
            State::Failed => "nothing (failed)",
        }
    }

    /// Whether the handshake has finished, either way.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    /// Handles one received frame.
    pub fn handle_frame(&mut self, frame: &Frame, now: Timestamp) -> Result<(), HandshakeError> {
        let result = Message::from_frame(frame)
            .map_err(HandshakeError::from)
            .and_then(|msg| {
                msg.ok_or_else(|| HandshakeError::UnexpectedMessage {
                    expected: self.expects(),
                    got: format!("{:?} frame", frame.ty),
                })
            });
        let msg = match result {
            Ok(m) => m,
            Err(e) => return Err(self.fail(e)),
        };
        if let Message::Error(e) = &msg {
            let err = HandshakeError::PeerError {
                code: ErrorCode::from_u16(e.code),
                reason: e.reason.chars().take(512).collect(),
            };
            return Err(self.fail(err));
        }
        let state = std::mem::replace(&mut self.state, State::Failed);
        let next = match state {
            State::I(s) => s
                .handle(&mut self.cx, msg, now)
                .map(|n| n.map_or(State::Done, State::I)),
            State::R(s) => s
                .handle(&mut self.cx, msg, now)
                .map(|n| n.map_or(State::Done, State::R)),
            State::Done | State::Failed => Err(unexpected("nothing", &msg)),
        };
        match next {
            Ok(s) => {
                self.deadline = match s {
                    State::Done => None,
                    _ => Some(now.saturating_add(self.cx.local.step_timeout)),
                };
                self.state = s;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Fails the handshake if its current step has timed out.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Result<(), HandshakeError> {
        match self.deadline {
            Some(d) if now >= d && !self.is_finished() => {
                let err = HandshakeError::Timeout {
                    expected: self.expects(),
                };
                Err(self.fail(err))
            }
            _ => Ok(()),
        }
    }

    /// Aborts the handshake on the driver's behalf (e.g. the store refused an invitation),
    /// queueing an error frame for the peer.
    pub fn abort(&mut self, err: HandshakeError) -> HandshakeError {
        self.fail(err)
    }

    fn fail(&mut self, err: HandshakeError) -> HandshakeError {
        if !err.is_from_peer() && !self.closed {
            let reason = err.to_string();
            self.cx.send(Message::Error(messages::ErrorFrame {
                code: err.code().to_u16(),
                reason,
            }));
        }
        self.closed = true;
        self.state = State::Failed;
        self.deadline = None;
        err
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.cx.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.cx.events.pop_front()
    }

    /// When [`Handshake::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.deadline
    }
}
