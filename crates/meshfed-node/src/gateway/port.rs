//! An established link session as the stages see it: where its frames go, the content keys of
//! this session, the peer's trust as the agreement stored it, the agreement's terms, and the
//! session state machine (health, suspension, termination) that the link driver
//! (`links`) runs. The stream, the opening stage and the inbox use it without knowing
//! how the link is driven.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use meshfed_proto::admission::{Refusal, Terms};
use meshfed_proto::crypto::{
    ContentSecret, CryptoError, Digest384, KeyEpoch, Opener, Sealer, VerifyingKey,
};
use meshfed_proto::envelope::{SignerCertificate, Timestamp};
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::session::{LinkSession, SessionClosed};
use meshfed_proto::{FederationId, KeyId, MeshId};
use meshfed_queue::Peer;
use meshfed_trust::{KeyPurpose, NodeCertInfo, TrustBundle};
use rustls_pki_types::CertificateDer;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::interest::LinkInterest;
use super::revoked::Revocations;
use crate::clock::{Clock, timestamp};

pub use meshfed_proto::session::Health;

/// What the API shows of a federation's link.
#[derive(Debug, Clone, Copy)]
pub struct LinkStatus {
    /// Link health.
    pub health: Health,
    /// When the last heartbeat was answered.
    pub last_heartbeat: Option<Timestamp>,
    /// Round trip of the last heartbeat.
    pub rtt: Option<Duration>,
    /// When this link session was established.
    pub connected_since: Option<Timestamp>,
}

impl LinkStatus {
    /// No link at all.
    pub fn down() -> Self {
        Self {
            health: Health::Unreachable,
            last_heartbeat: None,
            rtt: None,
            connected_since: None,
        }
    }
}

/// One established link session of a federation.
pub(crate) struct LinkPort {
    pub(crate) federation_id: FederationId,
    /// The peer mesh and the node at the other end of this session.
    pub(crate) peer: Peer,
    /// The peer's address (for a tunnel, its first hop's).
    pub(crate) remote: std::net::SocketAddr,
    /// For a tunnel, the brokers its frames came through (empty for a direct link).
    pub(crate) relays: Vec<MeshId>,
    /// The agreement as this side applies it; replaced at a renegotiation's switch point.
    terms: RwLock<Arc<Terms>>,
    /// Largest frame body the agreement in force allows.
    max_frame: AtomicU32,
    /// Whether the peer is known to send under the version in force: false from this side's
    /// own switch point (as proposer) until the first envelope of that version arrives.
    peer_switched: AtomicBool,
    /// Held while a transfer is built under the terms in force and queued, and while the terms
    /// are switched: every transfer queued after a switch point is built under the new terms.
    switch: tokio::sync::Mutex<()>,
    /// Renegotiation outcomes, for whoever waits on one.
    renegotiated: tokio::sync::broadcast::Sender<Renegotiated>,
    /// The content keys of this session.
    pub(crate) keys: SessionKeys,
    /// The peer's signers, checked against its stored trust bundle.
    pub(crate) trust: PeerTrust,
    /// The digest of the signer certificate this side last announced on the link.
    announced: Mutex<Option<Digest384>>,
    tx: mpsc::Sender<Frame>,
    /// Cancelled when the session ends, whichever side ends it.
    closed: CancellationToken,
    /// The session state machine; the driver's reader and writer feed it, commands change it.
    session: Mutex<LinkSession>,
    /// Wakes the driver's writer to send what the session queued.
    wake: Notify,
    /// Why the session ended, when its state machine ended it.
    ended: Mutex<Option<String>>,
    connected_since: Timestamp,
    /// What the peer wants of qos 0 messages, and what this side told it it wants.
    pub(crate) interest: LinkInterest,
}

/// How a renegotiation on this link ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Renegotiated {
    /// This version is in force and stored.
    Switched(u32),
    /// The proposal of this version failed, for this reason; the agreement in force stays.
    Failed(u32, String),
}

/// The session is closed: the frame was not sent.
#[derive(Debug)]
pub(crate) struct Closed;

impl From<SessionClosed> for Closed {
    fn from(_: SessionClosed) -> Self {
        Self
    }
}

impl LinkPort {
    /// A port whose frames go to `tx` until `closed` is cancelled.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one session, assembled once by the link driver"
    )]
    pub(crate) fn new(
        federation_id: FederationId,
        peer: Peer,
        (remote, relays): (std::net::SocketAddr, Vec<MeshId>),
        terms: Terms,
        max_frame: u32,
        keys: SessionKeys,
        trust: PeerTrust,
        tx: mpsc::Sender<Frame>,
        closed: CancellationToken,
        session: LinkSession,
        connected_since: Timestamp,
    ) -> Self {
        Self {
            federation_id,
            peer,
            remote,
            relays,
            terms: RwLock::new(Arc::new(terms)),
            max_frame: AtomicU32::new(max_frame),
            peer_switched: AtomicBool::new(true),
            switch: tokio::sync::Mutex::new(()),
            renegotiated: tokio::sync::broadcast::channel(8).0,
            keys,
            trust,
            announced: Mutex::new(None),
            tx,
            closed,
            session: Mutex::new(session),
            wake: Notify::new(),
            ended: Mutex::new(None),
            connected_since,
            interest: LinkInterest::default(),
        }
    }

    /// The peer mesh.
    pub(crate) fn mesh(&self) -> &MeshId {
        &self.peer.mesh
    }

    /// The terms of the agreement in force at this point of the link stream.
    pub(crate) fn terms(&self) -> Arc<Terms> {
        self.terms.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Largest frame body the agreement in force allows.
    pub(crate) fn max_frame(&self) -> u32 {
        self.max_frame.load(Ordering::Relaxed)
    }

    /// Waits until no transfer is being built; hold the guard while building and queueing one
    /// (or while switching terms), so none straddles a switch point.
    pub(crate) async fn switch_gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.switch.lock().await
    }

    /// Puts `terms` in force; call with the switch gate held. `peer_switched`: the peer sends
    /// under them already (it proposed, and its confirm was the switch point).
    pub(crate) fn switch_terms(&self, terms: Terms, max_frame: u32, peer_switched: bool) {
        *self.terms.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(terms);
        self.max_frame.store(max_frame, Ordering::Relaxed);
        self.peer_switched.store(peer_switched, Ordering::Relaxed);
    }

    /// Whether the peer is known to send under the version in force.
    pub(crate) fn peer_switched(&self) -> bool {
        self.peer_switched.load(Ordering::Relaxed)
    }

    /// An envelope of the version in force arrived: the peer has switched.
    pub(crate) fn mark_peer_switched(&self) {
        self.peer_switched.store(true, Ordering::Relaxed);
    }

    /// Renegotiation outcomes from now on.
    pub(crate) fn renegotiations(&self) -> tokio::sync::broadcast::Receiver<Renegotiated> {
        self.renegotiated.subscribe()
    }

    /// Tells whoever waits how a renegotiation ended.
    pub(crate) fn renegotiation_ended(&self, outcome: Renegotiated) {
        let _ = self.renegotiated.send(outcome);
    }

    /// Sends `frame` on the link, waiting while its queue is full.
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), Closed> {
        if self.is_closed() {
            return Err(Closed);
        }
        self.tx.send(frame).await.map_err(|_| Closed)
    }

    /// Announces this node's signer certificate `cert` to the peer unless it is the one last
    /// announced on this link: envelopes sent after it name it by digest. Call with the switch
    /// gate held, as transfers are built, so the announcement is queued before any transfer
    /// that names the certificate.
    pub(crate) async fn announce(&self, cert: &SignerCertificate) -> Result<(), Closed> {
        let Some(der) = cert.der() else {
            return Ok(());
        };
        {
            let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
            if announced.as_ref() == Some(cert.digest()) {
                return Ok(());
            }
            *announced = Some(*cert.digest());
        }
        self.send(Frame::new(FrameType::SignerCertificate, der.to_vec()))
            .await
    }

    /// Ends the session (the driver closes the link).
    pub(crate) fn close(&self) {
        self.closed.cancel();
    }

    /// Ends the session for `why` (the driver closes the link).
    pub(crate) fn close_because(&self, why: String) {
        self.ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
        self.closed.cancel();
    }

    /// Why the session ended, if its state machine ended it.
    pub(crate) fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the session has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Completes when the session ends.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// The link's status as its session sees it at `clock`'s time.
    pub(crate) fn status(&self, clock: &Clock) -> LinkStatus {
        let now = clock.instant();
        let s = self.with_session(|s| s.status(now));
        let wall = |at| timestamp(clock.wall_at(at));
        LinkStatus {
            health: if self.is_closed() {
                Health::Unreachable
            } else {
                s.health
            },
            last_heartbeat: s.last_heartbeat_ack.map(wall),
            rtt: s.rtt,
            connected_since: Some(self.connected_since),
        }
    }

    /// Runs `f` on the session state machine.
    pub(crate) fn with_session<T>(&self, f: impl FnOnce(&mut LinkSession) -> T) -> T {
        f(&mut self.session.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs a command on the session (suspend, resume, terminate) and wakes the driver to send
    /// what it queued.
    pub(crate) fn command(
        &self,
        f: impl FnOnce(&mut LinkSession) -> Result<(), SessionClosed>,
    ) -> Result<(), Closed> {
        self.with_session(f)?;
        self.wake();
        Ok(())
    }

    /// Wakes the driver's writer.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Completes when the driver's writer is woken.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// The content keys of one link session: this side's sealer, and openers for the peer's keys.
///
/// Keys rotate within a session by time and by volume (DESIGN.md §3.4): once the sealer is
/// [`KeyRotation::lifetime`] old or has sealed [`KeyRotation::messages`], the next envelope is
/// sealed under a fresh key, derived from the session's secret with a new random epoch. The
/// envelope names its key (`key_id`), so the peer derives the matching opener without an
/// exchange; it keeps the openers of the last [`OPENERS`] keys.
pub(crate) struct SessionKeys {
    sealing: Mutex<Sealing>,
    content: ContentSecret,
    /// The peer's keys, newest last.
    openers: Mutex<VecDeque<(KeyId, Arc<Opener>)>>,
    rotation: KeyRotation,
}

/// Openers kept per session: envelopes sealed under a key the peer has since replaced may
/// still be on their way.
const OPENERS: usize = 8;

/// When a content key is replaced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyRotation {
    /// The longest a key seals.
    pub(crate) lifetime: Duration,
    /// The most envelopes a key seals.
    pub(crate) messages: u64,
}

/// This side's current key and since when it seals.
pub(crate) struct Sealing {
    pub(crate) sealer: Sealer,
    since: Instant,
}

impl SessionKeys {
    /// The keys derived from the session's content secret; this side seals with `sealer`
    /// from `now`.
    pub(crate) fn new(
        content: ContentSecret,
        sealer: Sealer,
        now: Instant,
        rotation: KeyRotation,
    ) -> Self {
        Self {
            sealing: Mutex::new(Sealing { sealer, since: now }),
            content,
            openers: Mutex::new(VecDeque::new()),
            rotation,
        }
    }

    /// This side's sealing, to seal one transfer; call [`SessionKeys::rotate_if_due`] before
    /// each envelope.
    pub(crate) fn sealing(&self) -> MutexGuard<'_, Sealing> {
        self.sealing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces `sealing`'s key with a fresh one when it is due at `now`; says whether it did.
    pub(crate) fn rotate_if_due(
        &self,
        sealing: &mut Sealing,
        now: Instant,
    ) -> Result<bool, CryptoError> {
        let due = sealing.sealer.sealed() >= self.rotation.messages
            || now.saturating_duration_since(sealing.since) >= self.rotation.lifetime;
        if !due {
            return Ok(false);
        }
        let sender = sealing.sealer.sender().clone();
        sealing.sealer = self.content.sealer(&sender, KeyEpoch::random()?)?;
        sealing.since = now;
        Ok(true)
    }

    /// The opener for key `key_id` of mesh `sender`, derived once per key.
    pub(crate) fn opener(&self, sender: &MeshId, key_id: &KeyId) -> Result<Arc<Opener>, Refusal> {
        let mut openers = self.openers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, o)) = openers.iter().rev().find(|(id, _)| id == key_id) {
            return Ok(o.clone());
        }
        let o = Arc::new(
            self.content
                .opener(sender, key_id)
                .map_err(|e| Refusal::Unsealable(e.to_string()))?,
        );
        if openers.len() == OPENERS {
            openers.pop_front();
        }
        openers.push_back((key_id.clone(), o.clone()));
        Ok(o)
    }
}

/// The most signer certificates a peer's announcements keep on one link: a node announces its
/// certificate once per link and again after each renewal.
const ANNOUNCED: usize = 8;

/// The peer's trust bundle as stored for the federation, the certificates the peer presented on
/// this link (its leaf, and after it its mesh's issuing CA, if it has one) and issuing CAs it
/// named in trust bundle statements since, and the signer certificates already verified against
/// them and the revocation lists.
pub(crate) struct PeerTrust {
    bundle: RwLock<TrustBundle>,
    /// What the peer's TLS certificate says (`None` if it does not read as a node certificate,
    /// which the handshake would have refused).
    leaf: Option<NodeCertInfo>,
    /// The peer's TLS certificate exactly as presented in this session.
    leaf_cert: SignerCertificate,
    /// Signer certificates the peer announced on this link, newest last: envelopes name their
    /// signer's certificate by digest (DESIGN §3.4). At most [`ANNOUNCED`] are kept.
    announced: Mutex<VecDeque<SignerCertificate>>,
    /// Revoked signers are refused; the lists may change while the link is up.
    revocations: Arc<Revocations>,
    /// Envelopes carry only the signer's leaf: a leaf of the peer's issuing CA verifies through
    /// the issuing CA the peer presented in TLS, or named in a later bundle statement.
    intermediates: RwLock<Vec<CertificateDer<'static>>>,
    /// Verified signer certificates by SHA-384, with their keys and expiry.
    signers: Mutex<HashMap<Digest384, (VerifyingKey, SystemTime)>>,
}

impl PeerTrust {
    /// Trust in exactly `bundle`, through the `intermediates` the peer presented after its
    /// `leaf`, minus what `revocations` revokes.
    pub(crate) fn new(
        bundle: TrustBundle,
        leaf_der: Vec<u8>,
        intermediates: Vec<CertificateDer<'static>>,
        revocations: Arc<Revocations>,
    ) -> Self {
        Self {
            bundle: RwLock::new(bundle),
            leaf: meshfed_trust::inspect_node_cert(&leaf_der).ok(),
            leaf_cert: SignerCertificate::new(leaf_der),
            announced: Mutex::new(VecDeque::new()),
            revocations,
            intermediates: RwLock::new(intermediates),
            signers: Mutex::new(HashMap::new()),
        }
    }

    /// The peer mesh's bundle from now on (a CA rollover), and issuing CAs below it. Signers
    /// verified before stay verified until their certificates expire: each was checked while
    /// its CA was trusted; every new signer is checked against `bundle` alone.
    pub(crate) fn update(&self, bundle: TrustBundle, issuing: Vec<CertificateDer<'static>>) {
        let mut intermediates = self
            .intermediates
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for cert in issuing {
            if !intermediates.contains(&cert) {
                intermediates.push(cert);
            }
        }
        *self.bundle.write().unwrap_or_else(|e| e.into_inner()) = bundle;
    }

    /// The peer's trust bundle, as stored.
    /// The intermediates (the peer mesh's issuing CAs, DER) the peer presented.
    pub(crate) fn intermediates(&self) -> Vec<Vec<u8>> {
        (self.intermediates.read().unwrap_or_else(|e| e.into_inner()))
            .iter()
            .map(|c| c.to_vec())
            .collect()
    }

    pub(crate) fn bundle(&self) -> TrustBundle {
        self.bundle
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the peer's TLS certificate on this link says.
    pub(crate) fn leaf(&self) -> Option<&NodeCertInfo> {
        self.leaf.as_ref()
    }

    /// Whether the peer is the signer of an envelope with `header` (DESIGN §3.4): its
    /// certificate is exactly the one the peer presented in this TLS session, and its source
    /// mesh and gateway are the peer's. TLS under that key already authenticated its bytes.
    pub(crate) fn is_peer(&self, header: &meshfed_proto::envelope::Header) -> bool {
        self.leaf.as_ref().is_some_and(|leaf| {
            header.certificate == self.leaf_cert
                && header.source.mesh == leaf.mesh
                && header.source.gateway.as_str() == leaf.node.as_str()
        })
    }

    /// Forgets every verified signer: each is checked again (against new revocations) when it
    /// next signs.
    pub(crate) fn forget_signers(&self) {
        self.signers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// A signer certificate the peer announced on this link (the DER of a `SignerCertificate`
    /// frame). Checked when an envelope names it; until then it is only kept, so a peer can
    /// hold at most [`ANNOUNCED`] of them here.
    pub(crate) fn announce(&self, der: &[u8]) {
        let cert = SignerCertificate::new(der);
        let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        if cert == self.leaf_cert || announced.contains(&cert) {
            return;
        }
        if announced.len() == ANNOUNCED {
            announced.pop_front();
        }
        announced.push_back(cert);
    }

    /// The DER of the certificate with SHA-384 `digest`, if the peer presented it in TLS or
    /// announced it on this link.
    pub(crate) fn certificate(&self, digest: &Digest384) -> Option<Arc<[u8]>> {
        let announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        std::iter::once(&self.leaf_cert)
            .chain(announced.iter().rev())
            .find(|c| c.digest() == digest)
            .and_then(|c| c.der().cloned())
    }

    /// `header` with its signer certificate's DER filled in, as the JSON view and the export
    /// form show it (the header bytes name it by digest).
    pub(crate) fn known(
        &self,
        header: &meshfed_proto::envelope::Header,
    ) -> meshfed_proto::envelope::Header {
        let mut header = header.clone();
        header.certificate.fill(|digest| self.certificate(digest));
        header
    }

    /// The verified public key of a signer certificate, checked once per certificate against
    /// the peer's stored bundle and the revocation lists (and again once the cached one expires,
    /// then refused, or once a new revocation list clears the cache). A certificate named by
    /// digest alone must be one the peer presented or announced on this link.
    pub(crate) fn signer_key(
        &self,
        cert: &SignerCertificate,
        now: SystemTime,
    ) -> Result<VerifyingKey, Refusal> {
        let digest = cert.digest();
        let mut signers = self.signers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((key, not_after)) = signers.get(digest)
            && now <= *not_after
        {
            return Ok(key.clone());
        }
        let der = cert
            .der()
            .cloned()
            .or_else(|| self.certificate(digest))
            .ok_or_else(|| {
                Refusal::UntrustedSigner(format!(
                    "the signer certificate {} was not announced on this link",
                    cert.digest_name()
                ))
            })?;
        let der = CertificateDer::from(der.to_vec());
        let info = meshfed_trust::verify_node_cert(
            &self.bundle.read().unwrap_or_else(|e| e.into_inner()),
            &der,
            &self.intermediates.read().unwrap_or_else(|e| e.into_inner()),
            KeyPurpose::ClientAuth,
            now,
        )
        .map_err(|e| Refusal::UntrustedSigner(e.to_string()))?;
        self.revocations
            .check(&info)
            .map_err(|e| Refusal::RevokedSigner(e.to_string()))?;
        let key = info
            .public_key
            .verifying_key()
            .map_err(|e| Refusal::UntrustedSigner(format!("signer key: {e}")))?;
        signers.insert(*digest, (key.clone(), info.not_after));
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(rotation: KeyRotation, now: Instant) -> SessionKeys {
        let content = ContentSecret::derive(b"shared secret", b"context");
        let mesh: MeshId = "plant-a".parse().unwrap_or_else(|e| panic!("{e}"));
        let sealer = content
            .sealer(&mesh, KeyEpoch([1; 16]))
            .unwrap_or_else(|e| panic!("{e}"));
        SessionKeys::new(content, sealer, now, rotation)
    }

    #[test]
    fn a_content_key_is_replaced_once_it_is_old_enough_or_has_sealed_enough() {
        let start = Instant::now();
        let k = keys(
            KeyRotation {
                lifetime: Duration::from_secs(60),
                messages: 2,
            },
            start,
        );
        let mut sealing = k.sealing();
        let first = sealing.sealer.key_id().clone();
        assert!(
            !k.rotate_if_due(&mut sealing, start)
                .unwrap_or_else(|e| panic!("{e}"))
        );
        for _ in 0..2 {
            sealing.sealer.next_iv().unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(
            k.rotate_if_due(&mut sealing, start)
                .unwrap_or_else(|e| panic!("{e}"))
        );
        let second = sealing.sealer.key_id().clone();
        assert_ne!(first, second);
        assert_eq!(sealing.sealer.sealed(), 0, "a fresh key starts its count");

        let later = start + Duration::from_secs(59);
        assert!(
            !k.rotate_if_due(&mut sealing, later)
                .unwrap_or_else(|e| panic!("{e}"))
        );
        let expired = start + Duration::from_secs(60);
        assert!(
            k.rotate_if_due(&mut sealing, expired)
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert_ne!(sealing.sealer.key_id(), &second);
    }

    #[test]
    fn the_peer_opens_every_key_of_a_session_and_keeps_the_latest_few() {
        let start = Instant::now();
        let rotation = KeyRotation {
            lifetime: Duration::from_secs(60),
            messages: 1,
        };
        let sender = keys(rotation, start);
        let receiver = keys(rotation, start);
        let mesh: MeshId = "plant-a".parse().unwrap_or_else(|e| panic!("{e}"));
        let mut sealing = sender.sealing();
        for n in 0..(OPENERS as u8 + 4) {
            sender
                .rotate_if_due(&mut sealing, start)
                .unwrap_or_else(|e| panic!("{e}"));
            let iv = sealing.sealer.next_iv().unwrap_or_else(|e| panic!("{e}"));
            let mut buf = vec![n; 4];
            sealing
                .sealer
                .seal_in_place(iv, b"aad", &mut buf)
                .unwrap_or_else(|e| panic!("{e}"));
            let opener = receiver
                .opener(&mesh, sealing.sealer.key_id())
                .unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(
                opener
                    .open(iv, b"aad", &buf)
                    .unwrap_or_else(|e| panic!("{e}")),
                vec![n; 4]
            );
        }
        assert_eq!(
            receiver
                .openers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
            OPENERS
        );
    }
}
