//! Federation links: accepting and dialling mutual-TLS links, driving the handshake over them,
//! and keeping each established link alive (heartbeats, health, re-dial with backoff).
//!
//! Health follows the last frame received: within two heartbeat intervals a link is
//! `healthy`, within three `degraded`; after that the link is closed and the federation is
//! `unreachable` until a new link is verified against the stored trust bundle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshfed_proto::agreement::SignedAgreement;
use meshfed_proto::capability::Accepted;
use meshfed_proto::crypto::{ContentSecret, Digest384, KeyEpoch, Opener, Sealer, VerifyingKey};
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::handshake::{
    Established, Event, Handshake, HandshakeError, KnownFederation, PendingInvitation,
    ResponderKnowledge, Role as HsRole, Target,
};
use meshfed_proto::policy::PolicyTerms;
use meshfed_proto::{FederationId, FederationState, KeyId, MeshId, NodeName, Termination};
use meshfed_store::{ConsumeError, FederationRecord, Role};
use meshfed_transport::{
    Incoming, Link, LinkReader, LinkWriter, Listener, ServerTrust, TransportError,
};
use meshfed_trust::{KeyPurpose, TrustBundle};
use rustls_pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::delivery::micros_now;
use super::{Node, now};

/// Frames queued for one link before senders wait.
const OUTGOING_QUEUE: usize = 4096;
/// Longest pause between re-dial attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First pause between re-dial attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(200);

/// Why a link could not be set up or ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// TLS or the socket failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The federation handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The peer closed the link during the handshake.
    #[error("the peer closed the link while the handshake expected {0}")]
    Closed(&'static str),
    /// The registry refused or failed.
    #[error("registry: {0}")]
    Store(String),
}

/// The health of one link, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// A frame arrived within two heartbeat intervals.
    Healthy,
    /// A frame arrived within three heartbeat intervals.
    Degraded,
    /// No link, or nothing heard for longer.
    Unreachable,
}

impl Health {
    /// The name shown by the API and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unreachable => "unreachable",
        }
    }
}

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
pub(crate) struct LinkHandle {
    pub(crate) federation_id: FederationId,
    pub(crate) peer: MeshId,
    /// The peer's node at the other end of this link.
    pub(crate) peer_node: NodeName,
    pub(crate) tx: mpsc::Sender<Frame>,
    pub(crate) sealer: Mutex<Sealer>,
    pub(crate) content: ContentSecret,
    pub(crate) peer_bundle: TrustBundle,
    pub(crate) accepted: Accepted,
    pub(crate) terms: PolicyTerms,
    pub(crate) role: Role,
    /// The federation is suspended: nothing is sent or accepted until it resumes.
    pub(crate) suspended: std::sync::atomic::AtomicBool,
    /// Cancelled when the session ends, whichever side ends it.
    pub(crate) closed: CancellationToken,
    pub(crate) connected_since: Timestamp,
    last_rx: AtomicU64,
    last_heartbeat: AtomicU64,
    rtt_us: AtomicU64,
    /// Signer certificates already verified against the peer bundle, by SHA-384, with their expiry.
    pub(crate) signers: Mutex<HashMap<Digest384, (VerifyingKey, std::time::SystemTime)>>,
    /// Openers for the peer's content keys, by key id.
    pub(crate) openers: Mutex<HashMap<KeyId, Arc<Opener>>>,
    heartbeat_interval: Duration,
}

impl LinkHandle {
    /// The link's health at `now`.
    pub(crate) fn status(&self, at: Timestamp) -> LinkStatus {
        let hb = u64::try_from(self.heartbeat_interval.as_millis()).unwrap_or(u64::MAX);
        let age = at.0.saturating_sub(self.last_rx.load(Ordering::Relaxed));
        let health = if self.closed.is_cancelled() {
            Health::Unreachable
        } else if age <= 2 * hb {
            Health::Healthy
        } else if age <= 3 * hb {
            Health::Degraded
        } else {
            Health::Unreachable
        };
        let last = self.last_heartbeat.load(Ordering::Relaxed);
        let rtt = self.rtt_us.load(Ordering::Relaxed);
        LinkStatus {
            health,
            last_heartbeat: (last > 0).then_some(Timestamp(last)),
            rtt: (last > 0).then(|| Duration::from_micros(rtt)),
            connected_since: Some(self.connected_since),
        }
    }
}

/// The status of federation `id`'s link.
pub(crate) fn status(node: &Node, id: &FederationId) -> LinkStatus {
    let links = node.links.lock().unwrap_or_else(|e| e.into_inner());
    links
        .get(id)
        .map_or_else(LinkStatus::down, |h| h.status(now()))
}

/// The live link of federation `id`, if any.
pub(crate) fn link(node: &Node, id: &FederationId) -> Option<Arc<LinkHandle>> {
    let links = node.links.lock().unwrap_or_else(|e| e.into_inner());
    links.get(id).filter(|h| !h.closed.is_cancelled()).cloned()
}

/// Accepts peer links until the node stops.
pub(crate) async fn accept_loop(node: Arc<Node>, listener: Listener) {
    loop {
        let incoming = tokio::select! {
            () = node.cancel.cancelled() => return,
            incoming = listener.accept() => incoming,
        };
        match incoming {
            Ok(incoming) => {
                node.tracker.spawn(handle_incoming(node.clone(), incoming));
            }
            Err(e) => tracing::warn!(error = %e, "accepting a federation connection failed"),
        }
    }
}

async fn handle_incoming(node: Arc<Node>, incoming: Incoming) {
    let remote = incoming.remote_addr();
    let timeout = node.config.federation.handshake_timeout;
    let link = tokio::select! {
        () = node.cancel.cancelled() => return,
        link = incoming.handshake(timeout) => link,
    };
    let mut link = match link {
        Ok(link) => link,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "refused a federation connection at TLS");
            return;
        }
    };
    let result = async {
        let knowledge = responder_knowledge(&node).await?;
        let channel = link.channel();
        let hs = Handshake::responder(
            node.local(KeyPurpose::ClientAuth),
            channel,
            knowledge,
            now(),
        );
        let established = drive(&node, &mut link, hs).await?;
        let record = persist(&node, &established, HsRole::Responder, Vec::new()).await?;
        start_session(&node, link, *established, &record)
    }
    .await;
    match result {
        Ok(handle) => {
            tracing::info!(%remote, federation = %handle.federation_id, peer = %handle.peer, "federation link up")
        }
        Err(e) => tracing::warn!(%remote, error = %e, "federation handshake failed"),
    }
}

async fn responder_knowledge(node: &Arc<Node>) -> Result<ResponderKnowledge, LinkError> {
    let day_ago = Timestamp(now().0.saturating_sub(86_400_000));
    let (invitations, federations) = node
        .blocking(move |s| {
            Ok::<_, meshfed_store::StoreError>((
                s.invitations_expiring_after(day_ago)?,
                s.federations()?,
            ))
        })
        .await
        .map_err(|e| LinkError::Store(e.to_string()))?;
    let mut id = [0u8; 16];
    meshfed_proto::crypto::random_fill(&mut id).map_err(|e| LinkError::Store(e.to_string()))?;
    Ok(ResponderKnowledge {
        invitations: invitations
            .into_iter()
            .map(|i| PendingInvitation {
                token_id: i.token_id,
                peer_mesh: i.peer_mesh,
                verifier_key: i.secret_hash,
                expires: i.expires,
                used: i.used,
            })
            .collect(),
        pinned: Vec::new(),
        federations: federations
            .iter()
            .filter(|f| f.state.is_live())
            .map(known)
            .collect(),
        new_federation_id: format!("fed_{}", hex::encode(id)).parse().ok(),
    })
}

fn known(f: &FederationRecord) -> KnownFederation {
    KnownFederation {
        id: f.id.clone(),
        peer_mesh: f.peer_mesh.clone(),
        peer_bundle: f.peer_bundle.clone(),
        agreement_digest: f.agreement_digest,
    }
}

/// Runs a handshake to its end over `link`. Events are acted on before anything is sent, so an
/// invitation the store refuses stops the handshake before the peer hears it was accepted.
pub(crate) async fn drive(
    node: &Node,
    link: &mut Link,
    mut hs: Handshake,
) -> Result<Box<Established>, LinkError> {
    let mut established = None;
    let mut failure: Option<LinkError> = None;
    loop {
        while let Some(event) = hs.poll_event() {
            match event {
                Event::Progress(step) => tracing::debug!(?step, "handshake step"),
                Event::InvitationUsed { token_id } => {
                    let at = now();
                    let t = token_id.clone();
                    let consumed = node.blocking(move |s| s.consume_invitation(&t, at)).await;
                    if let Err(e) = consumed {
                        let refusal = match e {
                            ConsumeError::AlreadyUsed { .. } => {
                                HandshakeError::InvitationReused(token_id)
                            }
                            ConsumeError::Expired { .. } => {
                                HandshakeError::InvitationExpired(token_id)
                            }
                            ConsumeError::Unknown { .. } => {
                                HandshakeError::InvitationUnknown(token_id)
                            }
                            other => HandshakeError::Local(other.to_string()),
                        };
                        failure = Some(hs.abort(refusal).into());
                    }
                }
                Event::Established(e) => established = Some(e),
            }
        }
        while let Some(frame) = hs.poll_transmit() {
            link.send(&frame).await?;
        }
        if let Some(f) = failure {
            return Err(f);
        }
        if let Some(e) = established.take() {
            return Ok(e);
        }
        let deadline = hs.poll_timeout().map_or(Duration::from_secs(3600), |d| {
            Duration::from_millis(d.0.saturating_sub(now().0))
        });
        let expects = hs.expects();
        tokio::select! {
            () = node.cancel.cancelled() => return Err(LinkError::Closed(expects)),
            received = link.recv() => match received? {
                Some(frame) => {
                    if let Err(e) = hs.handle_frame(&frame, now()) {
                        failure = Some(e.into());
                    }
                }
                None => return Err(LinkError::Closed(expects)),
            },
            () = tokio::time::sleep(deadline) => {
                if let Err(e) = hs.handle_timeout(now()) {
                    failure = Some(e.into());
                }
            }
        }
    }
}

/// Records a new federation (or marks a resumed one active) in the registry.
pub(crate) async fn persist(
    node: &Arc<Node>,
    est: &Established,
    role: HsRole,
    peer_addrs: Vec<String>,
) -> Result<FederationRecord, LinkError> {
    let id = est.federation_id.clone();
    let at = now();
    let Some(agreement) = &est.agreement else {
        // Resumed: the stored agreement stands; a federation that was re-establishing is active again.
        return node
            .blocking(move |s| {
                let rec = s
                    .federation(&id)?
                    .ok_or_else(|| meshfed_store::StoreError::UnknownFederation(id.clone()))?;
                if rec.state == FederationState::Reestablishing {
                    return s.set_state(
                        &id,
                        FederationState::Active,
                        Some("link re-established"),
                        at,
                    );
                }
                Ok(rec)
            })
            .await
            .map_err(|e| LinkError::Store(e.to_string()));
    };
    let record = FederationRecord {
        id,
        peer_mesh: est.peer.mesh.clone(),
        peer_node: Some(est.peer.node.clone()),
        role: match role {
            HsRole::Initiator => Role::Initiator,
            HsRole::Responder => Role::Responder,
        },
        state: FederationState::Active,
        state_reason: None,
        peer_addrs,
        peer_bundle: est.peer_bundle.clone(),
        agreement: agreement.encode(),
        agreement_digest: agreement.digest(),
        created: at,
        updated: at,
    };
    let rec = record.clone();
    node.blocking(move |s| s.insert_federation(&rec))
        .await
        .map_err(|e| LinkError::Store(e.to_string()))?;
    Ok(record)
}

/// Starts the read and write tasks of an established link and registers it, replacing any
/// older session of the same federation.
pub(crate) fn start_session(
    node: &Arc<Node>,
    mut link: Link,
    est: Established,
    record: &FederationRecord,
) -> Result<Arc<LinkHandle>, LinkError> {
    let signed =
        SignedAgreement::decode(&record.agreement).map_err(|e| LinkError::Store(e.to_string()))?;
    let agreement = signed
        .agreement()
        .map_err(|e| LinkError::Store(e.to_string()))?;
    let bundle = stored_bundle(record)?;
    link.set_max_frame(agreement.capabilities.max_frame.0);
    let epoch = KeyEpoch::random().map_err(|e| LinkError::Store(e.to_string()))?;
    let sealer = est
        .content
        .sealer(&node.id.mesh, epoch)
        .map_err(|e| LinkError::Store(e.to_string()))?;
    let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
    let at = now();
    let handle = Arc::new(LinkHandle {
        federation_id: record.id.clone(),
        peer: record.peer_mesh.clone(),
        peer_node: est.peer.node.clone(),
        tx,
        sealer: Mutex::new(sealer),
        content: est.content,
        peer_bundle: bundle,
        accepted: agreement.capabilities,
        terms: agreement.policy,
        role: record.role,
        suspended: std::sync::atomic::AtomicBool::new(record.state == FederationState::Suspended),
        closed: node.cancel.child_token(),
        connected_since: at,
        last_rx: AtomicU64::new(at.0),
        last_heartbeat: AtomicU64::new(0),
        rtt_us: AtomicU64::new(0),
        signers: Mutex::new(HashMap::new()),
        openers: Mutex::new(HashMap::new()),
        heartbeat_interval: node.config.federation.heartbeat_interval,
    });
    let old = {
        let mut links = node.links.lock().unwrap_or_else(|e| e.into_inner());
        links.insert(record.id.clone(), handle.clone())
    };
    if let Some(old) = old {
        old.closed.cancel();
    }
    let (reader, writer) = link.split();
    node.tracker.spawn(write_loop(handle.clone(), writer, rx));
    node.tracker
        .spawn(read_loop(node.clone(), handle.clone(), reader));
    super::delivery::link_up(node, &handle, record);
    Ok(handle)
}

/// A heartbeat's body; the peer echoes it back in the ack.
#[derive(serde::Serialize, serde::Deserialize)]
struct Beat {
    seq: u64,
    /// When it was sent, in microseconds since the Unix epoch (only the sender reads it).
    sent_us: u64,
}

fn cbor<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    // Invariant: encoding plain structs into a Vec cannot fail.
    ciborium_into(v, &mut out);
    out
}

fn ciborium_into<T: serde::Serialize>(v: &T, out: &mut Vec<u8>) {
    if let Err(e) = ciborium::into_writer(v, out) {
        unreachable!("CBOR into Vec: {e}");
    }
}

async fn write_loop(
    handle: Arc<LinkHandle>,
    mut writer: LinkWriter,
    mut rx: mpsc::Receiver<Frame>,
) {
    let mut tick = tokio::time::interval(handle.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let result: Result<(), TransportError> = async {
        loop {
            tokio::select! {
                () = handle.closed.cancelled() => {
                    // Stopping: what was already accepted for this link still goes out, briefly bounded.
                    while let Ok(frame) = rx.try_recv() {
                        writer.queue(&frame)?;
                    }
                    if writer.queued() > 0 {
                        let _ = tokio::time::timeout(Duration::from_secs(2), writer.flush()).await;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(1), writer.close()).await;
                    return Ok(());
                }
                _ = tick.tick() => {
                    seq += 1;
                    writer.send(&Frame::new(FrameType::Heartbeat, cbor(&Beat { seq, sent_us: micros_now() }))).await?;
                }
                frame = rx.recv() => {
                    let Some(frame) = frame else { return Ok(()) };
                    let mut last = frame.ty;
                    writer.queue(&frame)?;
                    // Batch whatever else is already waiting into the same write.
                    while last != FrameType::Termination {
                        let Ok(more) = rx.try_recv() else { break };
                        last = more.ty;
                        writer.queue(&more)?;
                    }
                    writer.flush().await?;
                    if last == FrameType::Termination {
                        // Everything queued before it went out first; the federation has ended.
                        let _ = writer.close().await;
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(federation = %handle.federation_id, error = %e, "link write failed");
    }
    handle.closed.cancel();
}

async fn read_loop(node: Arc<Node>, handle: Arc<LinkHandle>, mut reader: LinkReader) {
    let silence = handle.heartbeat_interval * 3;
    let why = loop {
        let received = tokio::select! {
            () = handle.closed.cancelled() => break "closed locally".to_owned(),
            r = tokio::time::timeout(silence, reader.recv()) => r,
        };
        let frame = match received {
            Err(_) => {
                break format!(
                    "nothing heard from the peer for {}",
                    humantime::format_duration(silence)
                );
            }
            Ok(Err(e)) => break format!("link failed: {e}"),
            Ok(Ok(None)) => break "the peer closed the link".to_owned(),
            Ok(Ok(Some(frame))) => frame,
        };
        handle.last_rx.store(now().0, Ordering::Relaxed);
        match frame.ty {
            FrameType::Heartbeat => {
                let _ = handle
                    .tx
                    .try_send(Frame::new(FrameType::HeartbeatAck, frame.body));
            }
            FrameType::HeartbeatAck => {
                if let Ok(beat) = ciborium::from_reader::<Beat, _>(frame.body.as_ref()) {
                    let at = now();
                    handle.last_heartbeat.store(at.0, Ordering::Relaxed);
                    handle
                        .rtt_us
                        .store(micros_now().saturating_sub(beat.sent_us), Ordering::Relaxed);
                }
            }
            FrameType::Transfer => super::delivery::receive(&node, &handle, &frame.body).await,
            FrameType::Ack | FrameType::Credit => {
                super::delivery::stream_frame(&node, &handle, &frame);
            }
            FrameType::Forward => super::delivery::forward(&node, &handle, &frame.body),
            FrameType::Lifecycle => peer_lifecycle(&node, &handle, &frame.body).await,
            FrameType::Termination => {
                let forced = frame.body.first() == Some(&1);
                let kind = if forced {
                    Termination::Forced
                } else {
                    Termination::Graceful
                };
                let id = handle.federation_id.clone();
                let at = now();
                let _ = node
                    .blocking(move |s| {
                        s.set_state(
                            &id,
                            FederationState::Terminated(kind),
                            Some("terminated by the peer"),
                            at,
                        )
                    })
                    .await;
                super::delivery::state_changed(
                    &node,
                    &handle.peer,
                    FederationState::Terminated(kind),
                );
                break "the peer terminated the federation".to_owned();
            }
            FrameType::Error => {
                let text = String::from_utf8_lossy(&frame.body)
                    .chars()
                    .take(200)
                    .collect::<String>();
                break format!("the peer reported an error: {text}");
            }
            other => {
                tracing::debug!(federation = %handle.federation_id, frame = ?other, "ignored a frame this version does not act on");
            }
        }
    };
    tracing::info!(federation = %handle.federation_id, peer = %handle.peer, reason = %why, "federation link down");
    handle.closed.cancel();
    super::delivery::link_down(&node, &handle);
    let mut links = node.links.lock().unwrap_or_else(|e| e.into_inner());
    if links
        .get(&handle.federation_id)
        .is_some_and(|h| Arc::ptr_eq(h, &handle))
    {
        links.remove(&handle.federation_id);
    }
}

/// The body of a `Lifecycle` frame: the state the sender moved the federation to.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct LifecycleChange {
    /// `suspended` or `active`.
    pub(crate) state: String,
}

/// Encodes a lifecycle frame for `state`.
pub(crate) fn lifecycle_frame(state: FederationState) -> Frame {
    Frame::new(
        FrameType::Lifecycle,
        cbor(&LifecycleChange {
            state: state.name().to_owned(),
        }),
    )
}

/// The peer suspended or resumed the federation: follow it, if the lifecycle allows.
async fn peer_lifecycle(node: &Arc<Node>, handle: &Arc<LinkHandle>, body: &[u8]) {
    let target = ciborium::from_reader::<LifecycleChange, _>(body)
        .ok()
        .and_then(|c| c.state.parse::<FederationState>().ok())
        .filter(|s| matches!(s, FederationState::Suspended | FederationState::Active));
    let Some(target) = target else {
        tracing::warn!(federation = %handle.federation_id, "ignored a malformed lifecycle frame");
        return;
    };
    let id = handle.federation_id.clone();
    let at = now();
    let reason = if target == FederationState::Suspended {
        "suspended by the peer"
    } else {
        "resumed by the peer"
    };
    match node
        .blocking(move |s| s.set_state(&id, target, Some(reason), at))
        .await
    {
        Ok(_) => {
            handle
                .suspended
                .store(target == FederationState::Suspended, Ordering::Relaxed);
            super::delivery::state_changed(node, &handle.peer, target);
            tracing::info!(federation = %handle.federation_id, peer = %handle.peer, "federation {reason}");
        }
        Err(e) => {
            tracing::warn!(federation = %handle.federation_id, error = %e, "could not follow the peer's lifecycle change")
        }
    }
}

/// The trust bundle stored for a federation's peer: every later link is verified against it.
fn stored_bundle(record: &FederationRecord) -> Result<TrustBundle, LinkError> {
    let certs = record
        .peer_bundle
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    TrustBundle::new(certs)
        .map_err(|e| LinkError::Store(format!("stored trust bundle of {}: {e}", record.peer_mesh)))
}

/// Dials a stored federation's peer and resumes it.
async fn resume(node: &Arc<Node>, record: &FederationRecord) -> Result<Arc<LinkHandle>, LinkError> {
    let bundle = stored_bundle(record)?;
    let timeout = node.config.federation.handshake_timeout;
    let mut last = None;
    for addr in &record.peer_addrs {
        let trust = ServerTrust::Bundle {
            mesh: record.peer_mesh.clone(),
            bundle: bundle.clone(),
        };
        match meshfed_transport::dial(addr, &node.id.tls, trust, timeout).await {
            Ok(mut link) => {
                let channel = link.channel();
                let hs = Handshake::initiator(
                    node.local(KeyPurpose::ServerAuth),
                    channel,
                    Target::Resume(known(record)),
                    now(),
                )?;
                let established = drive(node, &mut link, hs).await?;
                let record = persist(
                    node,
                    &established,
                    HsRole::Initiator,
                    record.peer_addrs.clone(),
                )
                .await?;
                return start_session(node, link, *established, &record);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || LinkError::Store(format!("federation {} has no peer address", record.id)),
        LinkError::from,
    ))
}

/// Keeps a federation we initiated connected: waits for the current session to end, then
/// re-dials with jittered exponential backoff until it is back, terminated or the node stops.
pub(crate) async fn maintain(
    node: Arc<Node>,
    id: FederationId,
    mut session: Option<Arc<LinkHandle>>,
) {
    let mut attempt: u32 = 0;
    loop {
        if let Some(handle) = session.take() {
            tokio::select! {
                () = node.cancel.cancelled() => return,
                () = handle.closed.cancelled() => {}
            }
            attempt = 0;
        }
        if node.cancel.is_cancelled() {
            return;
        }
        let lookup = id.clone();
        let record = match node.blocking(move |s| s.federation(&lookup)).await {
            Ok(Some(r)) if r.state.is_live() && r.role == Role::Initiator => r,
            _ => return,
        };
        match resume(&node, &record).await {
            Ok(handle) => {
                tracing::info!(federation = %id, peer = %record.peer_mesh, "federation link re-established");
                session = Some(handle);
            }
            Err(e) => {
                let delay = backoff(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(federation = %id, peer = %record.peer_mesh, attempt, retry_in = ?delay, error = %e, "re-dial failed");
                tokio::select! {
                    () = node.cancel.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// `MIN_BACKOFF · 2^attempt`, capped at `MAX_BACKOFF`, scaled by a random factor in [0.5, 1).
fn backoff(attempt: u32) -> Duration {
    let base = MIN_BACKOFF
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    let mut r = [0u8; 2];
    let jitter = match meshfed_proto::crypto::random_fill(&mut r) {
        Ok(()) => f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    base.mul_f64(0.5 + jitter / 2.0)
}

/// Starts keeping every stored federation this node initiated connected.
pub(crate) async fn redial_stored(node: &Arc<Node>) {
    let records = match node.blocking(|s| s.federations()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot list stored federations");
            return;
        }
    };
    for r in records
        .into_iter()
        .filter(|r| r.state.is_live() && r.role == Role::Initiator)
    {
        node.tracker.spawn(maintain(node.clone(), r.id, None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let first = backoff(0);
        assert!(
            first >= MIN_BACKOFF / 2 && first <= MIN_BACKOFF,
            "{first:?}"
        );
        let late = backoff(20);
        assert!(late >= MAX_BACKOFF / 2 && late <= MAX_BACKOFF, "{late:?}");
    }
}
