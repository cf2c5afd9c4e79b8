//! Link: accepting and dialling mutual-TLS links, driving the handshake over them, and keeping
//! each federation this node initiated connected (re-dial with jittered backoff). An
//! established link is driven by [`session`] around the core's link session state machine.
//!
//! Health follows the last frame received: within two heartbeat intervals a link is
//! `healthy`, within three `degraded`; after that the link is closed and the federation is
//! `unreachable` until a new link is verified against the stored trust bundle.

mod audit;
mod bundle;
pub(crate) mod custody;
pub(crate) mod interest;
pub(crate) mod relay;
pub(crate) mod routing;
mod session;
pub(crate) mod statics;
mod witness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshfed_proto::agreement::SignedAgreement;
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::handshake::{
    EndedFederation, Established, Event, Handshake, HandshakeError, KnownFederation,
    PendingInvitation, ResponderKnowledge, Role as HsRole, Target,
};
use meshfed_proto::{FederationId, FederationState};
use meshfed_store::{ConsumeError, FederationRecord, Role};
use meshfed_transport::{Incoming, Link, Listener, ServerTrust, TransportError};
use meshfed_trust::{KeyPurpose, TrustBundle};
use rustls_pki_types::CertificateDer;

use super::context::Context;
use super::error::chain;
use super::inbox::Inbound;
use super::local::Local;
use super::port::{LinkPort, LinkStatus};
use super::route::Routes;
use crate::door::{Door, Refused, Unauthenticated};

pub(crate) use session::start as start_session;

/// The registry's reason for a federation the peer suspended; a suspension with another reason
/// is this side's own, announced again on every new link.
pub(crate) const SUSPENDED_BY_PEER: &str = "suspended by the peer";
/// The registry's reason for a suspension this side holds.
pub(crate) const SUSPENDED_HERE: &str = "suspended by an operator";
/// The start of the registry's reason for a suspension after the peer broke the streamed
/// batch protocol (a bad or missing batch head); this side holds it.
pub(crate) const MISBEHAVED: &str = "suspended: the peer misbehaved";
/// Longest pause between re-dial attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Pause after a failed `accept` before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
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
    /// A tunnel through a broker could not be opened or was refused.
    #[error("tunnel: {0}")]
    Tunnel(String),
}

/// The link sessions of this node, and what they feed: the routes (streams) and the inbox.
pub(crate) struct Links {
    ctx: Arc<Context>,
    routes: Arc<Routes>,
    inbound: Inbound,
    /// Live subscribers take a streamed batch's envelopes from the peer on arrival.
    local: Arc<Local>,
    /// What connections that have not authenticated yet may cost.
    door: Arc<Door>,
    sessions: Mutex<HashMap<FederationId, Arc<LinkPort>>>,
    /// The tunnels through brokers this node is an end of.
    tunnels: relay::Tunnels,
    /// What neighbour brokers advertised they reach.
    routing: routing::Routing,
    /// What a broker checks of the origin signatures in the tunnels it relays.
    witnesses: witness::Witnesses,
    /// A broker's discovery directory: the descriptors its neighbours publish.
    pub(crate) directory: super::directory::Directory,
    /// What this node handed into custody, or on from it, and has not heard about yet.
    custody: custody::CustodyState,
    /// Why the listener's last `accept` failed, while no later one has succeeded.
    accept_failure: Mutex<Option<String>>,
}

impl Links {
    /// No sessions yet; also returns where tunnels opened to this node arrive, for
    /// [`relay::answer_loop`].
    pub(crate) fn new(
        ctx: Arc<Context>,
        routes: Arc<Routes>,
        inbound: Inbound,
        local: Arc<Local>,
        door: Arc<Door>,
    ) -> (Self, tokio::sync::mpsc::UnboundedReceiver<relay::Accepted>) {
        let (tunnels, accepted) = relay::Tunnels::new();
        let links = Self {
            ctx,
            routes,
            inbound,
            local,
            door,
            sessions: Mutex::new(HashMap::new()),
            tunnels,
            routing: routing::Routing::default(),
            custody: custody::CustodyState::default(),
            directory: super::directory::Directory::default(),
            witnesses: witness::Witnesses::default(),
            accept_failure: Mutex::new(None),
        };
        (links, accepted)
    }

    /// Why the federation listener cannot accept connections, if it cannot.
    pub(crate) fn accept_failure(&self) -> Option<String> {
        self.accept_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_accept_failure(&self, failure: Option<String>) {
        *self
            .accept_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = failure;
    }

    /// The status of federation `id`'s link.
    pub(crate) fn status(&self, id: &FederationId) -> LinkStatus {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id)
            .map_or_else(LinkStatus::down, |p| p.status(&self.ctx.clock))
    }

    /// Every open session.
    pub(crate) fn ports(&self) -> Vec<Arc<LinkPort>> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .values()
            .filter(|p| !p.is_closed())
            .cloned()
            .collect()
    }

    /// The open session of federation `id`, if any.
    pub(crate) fn port(&self, id: &FederationId) -> Option<Arc<LinkPort>> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(id).filter(|p| !p.is_closed()).cloned()
    }
}

/// Accepts peer links until the node stops.
pub(crate) async fn accept_loop(links: Arc<Links>, listener: Listener) {
    loop {
        let incoming = tokio::select! {
            () = links.ctx.cancel.cancelled() => return,
            incoming = listener.accept() => incoming,
        };
        match incoming {
            Ok(incoming) => {
                links.set_accept_failure(None);
                // Refused when full: dropping `incoming` closes the connection.
                if let Some(place) = links.door.admit(incoming.remote_addr()) {
                    links
                        .ctx
                        .tracker
                        .spawn(handle_incoming(links.clone(), incoming, place));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a federation connection failed");
                links.set_accept_failure(Some(chain(&e)));
                // Out of file descriptors, say: give connections in progress time to end. Real
                // time, like the socket's: this is no protocol timer.
                tokio::select! {
                    () = links.ctx.cancel.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_RETRY) => {}
                }
            }
        }
    }
}

/// Runs the TLS and federation handshakes of an accepted connection, which holds `place` until
/// both succeed.
async fn handle_incoming(links: Arc<Links>, incoming: Incoming, place: Unauthenticated) {
    let remote = incoming.remote_addr();
    let timeout = links.ctx.config.federation.handshake_timeout;
    let link = tokio::select! {
        () = links.ctx.cancel.cancelled() => return,
        link = incoming.handshake(timeout) => link,
    };
    let mut link = match link {
        Ok(link) => link,
        Err(e) => {
            let reason = match e {
                TransportError::Timeout { .. } => Refused::Timeout,
                TransportError::TlsHandshake { .. } => Refused::Tls,
                _ => Refused::Io,
            };
            links.door.refuse(reason, remote, &e);
            links.ctx.metrics.handshake("tls");
            links.ctx.audit.handshake_failed(
                remote.ip().to_string(),
                None,
                reason.label(),
                &chain(&e),
            );
            return;
        }
    };
    let result = async {
        let knowledge = responder_knowledge(&links).await?;
        let channel = link.channel();
        let hs = Handshake::responder(
            links.ctx.local(KeyPurpose::ClientAuth),
            channel,
            knowledge,
            links.ctx.now(),
        );
        let established = drive(&links, &mut link, hs).await?;
        let record = persist(&links, &established, HsRole::Responder, Vec::new()).await?;
        start_session(&links, link, *established, &record).await
    }
    .await;
    drop(place);
    match result {
        Ok(handle) => {
            tracing::info!(%remote, federation = %handle.federation_id, peer = %handle.peer, "federation link up")
        }
        Err(e) => {
            let reason = match e {
                LinkError::Transport(TransportError::Timeout { .. }) => Refused::Timeout,
                _ => Refused::Handshake,
            };
            links.door.refuse(reason, remote, &e);
            links.ctx.audit.handshake_failed(
                remote.ip().to_string(),
                None,
                reason.label(),
                &chain(&e),
            );
        }
    }
}

async fn responder_knowledge(links: &Arc<Links>) -> Result<ResponderKnowledge, LinkError> {
    let day_ago = Timestamp(links.ctx.now().0.saturating_sub(86_400_000));
    let (invitations, federations) = links
        .ctx
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
        pinned: statics::accepted(links),
        federations: federations
            .iter()
            .filter(|f| f.state.is_live())
            .filter_map(|f| {
                known(f)
                    .inspect_err(|e| tracing::warn!(federation = %f.id, error = %e, "a live federation cannot resume"))
                    .ok()
            })
            .collect(),
        new_federation_id: format!("fed_{}", hex::encode(id)).parse().ok(),
        ended: ended(&federations),
    })
}

/// The latest terminated federation with each peer mesh that has no live one.
fn ended(federations: &[FederationRecord]) -> Vec<EndedFederation> {
    let mut latest: HashMap<&meshfed_proto::MeshId, &FederationRecord> = HashMap::new();
    for f in federations.iter().filter(|f| !f.state.is_live()) {
        let newer = latest
            .get(&f.peer_mesh)
            .is_none_or(|l| f.updated >= l.updated);
        if newer {
            latest.insert(&f.peer_mesh, f);
        }
    }
    latest
        .into_values()
        .filter(|f| {
            !federations
                .iter()
                .any(|l| l.state.is_live() && l.peer_mesh == f.peer_mesh)
        })
        .map(|f| EndedFederation {
            id: f.id.clone(),
            peer_mesh: f.peer_mesh.clone(),
        })
        .collect()
}

fn known(f: &FederationRecord) -> Result<KnownFederation, LinkError> {
    let agreement = SignedAgreement::decode(&f.agreement)
        .map_err(|e| LinkError::Store(format!("stored agreement of federation {}: {e}", f.id)))?;
    Ok(KnownFederation {
        id: f.id.clone(),
        peer_mesh: f.peer_mesh.clone(),
        peer_bundle: f.peer_bundle.clone(),
        agreement,
    })
}

/// Runs a handshake to its end over `link` and counts its outcome
/// (`meshfed_handshakes_total`). Events are acted on before anything is sent, so an
/// invitation the store refuses stops the handshake before the peer hears it was accepted.
pub(crate) async fn drive(
    links: &Links,
    link: &mut Link,
    hs: Handshake,
) -> Result<Box<Established>, LinkError> {
    let result = run_handshake(links, link, hs).await;
    links.ctx.metrics.handshake(match &result {
        Ok(_) => "established",
        Err(LinkError::Handshake(e)) => e.code().name(),
        Err(LinkError::Transport(TransportError::Timeout { .. })) => "timeout",
        Err(LinkError::Transport(_)) => "transport",
        Err(LinkError::Closed(_)) => "closed",
        Err(LinkError::Store(_)) => "internal",
        Err(LinkError::Tunnel(_)) => "tunnel",
    });
    result
}

async fn run_handshake(
    links: &Links,
    link: &mut Link,
    mut hs: Handshake,
) -> Result<Box<Established>, LinkError> {
    let mut established = None;
    let mut failure: Option<LinkError> = None;
    let mut steps = Vec::new();
    loop {
        while let Some(event) = hs.poll_event() {
            match event {
                Event::Progress(step) => {
                    tracing::debug!(?step, "handshake step");
                    steps.push(step);
                }
                Event::InvitationUsed { token_id } => {
                    let at = links.ctx.now();
                    let t = token_id.clone();
                    let consumed = links
                        .ctx
                        .blocking(move |s| s.consume_invitation(&t, at))
                        .await;
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
                Event::Established(e) => {
                    crate::audit::handshake(&links.ctx.audit, &e, std::mem::take(&mut steps));
                    established = Some(e);
                }
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
        let deadline = hs.poll_timeout();
        let expects = hs.expects();
        tokio::select! {
            () = links.ctx.cancel.cancelled() => return Err(LinkError::Closed(expects)),
            received = link.recv() => match received? {
                Some(frame) => {
                    if let Err(e) = hs.handle_frame(&frame, links.ctx.now()) {
                        failure = Some(e.into());
                    }
                }
                None => return Err(LinkError::Closed(expects)),
            },
            () = links.ctx.clock.sleep_until_timestamp(deadline) => {
                if let Err(e) = hs.handle_timeout(links.ctx.now()) {
                    failure = Some(e.into());
                }
            }
        }
    }
}

/// Records a new federation (or marks a resumed one active) in the registry.
pub(crate) async fn persist(
    links: &Arc<Links>,
    est: &Established,
    role: HsRole,
    peer_addrs: Vec<String>,
) -> Result<FederationRecord, LinkError> {
    let id = est.federation_id.clone();
    let at = links.ctx.now();
    let Some(agreement) = &est.agreement else {
        // Resumed: the stored agreement stands, or the peer's renegotiated successor of it, which
        // this side missed the confirm of, replaces it as the switch would have; a federation
        // that was re-establishing is active again.
        let caught_up = est.caught_up.as_ref().map(|c| {
            let version = c.agreement.version;
            tracing::info!(federation = %id, version, "taking over the agreement version the peer switched to while the link was down");
            (version, c.replaces_digest, c.signed.encode(), c.signed.digest())
        });
        let offer = links.ctx.offer().encode();
        let resumed = links
            .ctx
            .blocking(move |s| {
                let mut rec = s
                    .federation(&id)?
                    .ok_or_else(|| meshfed_store::StoreError::UnknownFederation(id.clone()))?;
                if let Some((version, replaces_digest, signed, digest)) = &caught_up {
                    rec = s.renegotiate_agreement(
                        &id,
                        meshfed_store::Renegotiated {
                            replaces: version.saturating_sub(1),
                            replaces_digest,
                            agreement: signed,
                            digest,
                            offer: &offer,
                            at,
                        },
                    )?;
                }
                let before = rec.state;
                if before == FederationState::Reestablishing {
                    rec = s.set_state(
                        &id,
                        FederationState::Active,
                        Some("link re-established"),
                        at,
                    )?;
                }
                Ok((before, rec))
            })
            .await
            .map_err(|e: meshfed_store::StoreError| LinkError::Store(e.to_string()))?;
        let (before, rec) = resumed;
        crate::audit::lifecycle(
            &links.ctx.audit,
            &rec.id,
            &rec.peer_mesh,
            (before, rec.state),
            meshfed_audit::record::By::Us,
            "link re-established",
        );
        let moved = (before, rec.state);
        (links.ctx.changes).lifecycle(&rec.id, &rec.peer_mesh, moved, "link re-established");
        return Ok(rec);
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
    links
        .ctx
        .blocking(move |s| match s.federation(&rec.id)? {
            // A federation that ended comes back under its id, keeping its history.
            Some(old) if !old.state.is_live() => {
                let stored = s.reestablish_federation(&FederationRecord {
                    state_reason: Some(format!("re-established after {}", old.state)),
                    ..rec
                })?;
                tracing::info!(federation = %stored.id, peer = %stored.peer_mesh, "federation re-established after its termination");
                Ok(stored)
            }
            _ => s.insert_federation(&rec).map(|()| rec),
        })
        .await
        .map_err(|e| LinkError::Store(e.to_string()))
        .inspect(|rec| (links.ctx.changes).established(&rec.id, &rec.peer_mesh, rec.state))
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

/// Runs the handshake for `target` as the initiator over the dialled `link`, stores what it
/// established (the peer reached at `peer_addrs`), and starts the link session.
pub(crate) async fn initiate(
    links: &Arc<Links>,
    mut link: Link,
    target: Target,
    peer_addrs: Vec<String>,
) -> Result<(FederationRecord, Arc<LinkPort>), LinkError> {
    let channel = link.channel();
    let hs = Handshake::initiator(
        links.ctx.local(KeyPurpose::ServerAuth),
        channel,
        target,
        links.ctx.now(),
    )?;
    let established = drive(links, &mut link, hs).await?;
    let record = persist(links, &established, HsRole::Initiator, peer_addrs).await?;
    let session = start_session(links, link, *established, &record).await?;
    Ok((record, session))
}

/// Dials a stored federation's peer and resumes it.
async fn resume(links: &Arc<Links>, record: &FederationRecord) -> Result<Arc<LinkPort>, LinkError> {
    if let Some(broker) = relay::via(record) {
        let target = Target::Resume(known(record)?);
        let peer = record.peer_mesh.clone();
        let (_, session) = relay::resume(links, &broker, peer, target).await?;
        return Ok(session);
    }
    let bundle = stored_bundle(record)?;
    let timeout = links.ctx.config.federation.handshake_timeout;
    let mut last = None;
    for addr in &record.peer_addrs {
        let trust = ServerTrust::Bundle {
            mesh: record.peer_mesh.clone(),
            bundle: bundle.clone(),
        };
        match meshfed_transport::dial(addr, &links.ctx.id.tls, trust, timeout).await {
            Ok(link) => {
                let target = Target::Resume(known(record)?);
                let (_, session) = initiate(links, link, target, record.peer_addrs.clone()).await?;
                return Ok(session);
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
    links: Arc<Links>,
    id: FederationId,
    mut session: Option<Arc<LinkPort>>,
) {
    let mut attempt: u32 = 0;
    loop {
        if let Some(handle) = session.take() {
            tokio::select! {
                () = links.ctx.cancel.cancelled() => return,
                () = handle.closed() => {}
            }
            attempt = 0;
        }
        if links.ctx.cancel.is_cancelled() {
            return;
        }
        let lookup = id.clone();
        let record = match links.ctx.blocking(move |s| s.federation(&lookup)).await {
            Ok(Some(r)) if r.state.is_live() && r.role == Role::Initiator => r,
            _ => return,
        };
        match resume(&links, &record).await {
            Ok(handle) => {
                tracing::info!(federation = %id, peer = %record.peer_mesh, "federation link re-established");
                session = Some(handle);
            }
            Err(e) => {
                let delay = backoff(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(federation = %id, peer = %record.peer_mesh, attempt, retry_in = ?delay, error = %e, "re-dial failed");
                links.ctx.audit.handshake_failed(
                    record.peer_addrs.join(","),
                    Some(record.peer_mesh.clone()),
                    "redial",
                    &chain(&e),
                );
                tokio::select! {
                    () = links.ctx.cancel.cancelled() => return,
                    () = links.ctx.clock.sleep(delay) => {}
                }
            }
        }
    }
}

/// `MIN_BACKOFF · 2^attempt`, capped at `MAX_BACKOFF`, scaled by a random factor in [0.5, 1].
fn backoff(attempt: u32) -> Duration {
    crate::backoff::delay(MIN_BACKOFF, MAX_BACKOFF, attempt)
}

/// Starts keeping every stored federation this node initiated connected.
pub(crate) async fn redial_stored(links: &Arc<Links>) {
    let records = match links.ctx.blocking(|s| s.federations()).await {
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
        links.ctx.tracker.spawn(maintain(links.clone(), r.id, None));
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
