//! The driver of an established link: a thin loop around the core's [`LinkSession`] state
//! machine (heartbeats, health, suspension, termination), which hands data frames on to the
//! delivery stages and turns the session's events into registry changes.
//!
//! Two tasks per link share the session through its [`LinkPort`]: the reader feeds it every
//! frame the peer sends, queues the session's answers behind the stages' frames, and routes what
//! it gives back (transfers to the opening stage, acks and credit to the stream, floors to the
//! inbox); the writer sends the frames the stages queue, and what the session queued on a
//! command or a timer (heartbeats, lifecycle frames, the termination last). Whichever calls into
//! the session acts on the events it produced.

use std::sync::Arc;
use std::time::Duration;

use meshfed_audit::record::{AgreementCause, By};
use meshfed_proto::FederationState;
use meshfed_proto::admission::{Direction, Refusal};
use meshfed_proto::crypto::KeyEpoch;
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::handshake::ErrorCode;
use meshfed_proto::session::{
    AgreementSwitch, CloseReason, FlowState, LinkSession, ProposedBy, Received, RenegotiationSetup,
    SessionConfig, SessionEvent,
};
use meshfed_queue::{Forward, Peer};
use meshfed_store::FederationRecord;
use meshfed_transport::{Link, LinkReader, LinkWriter, TransportError};
use tokio::sync::mpsc;

use super::{LinkError, Links, MISBEHAVED, SUSPENDED_BY_PEER, SUSPENDED_HERE, stored_bundle};
use crate::gateway::inbox::Input;
use crate::gateway::port::{KeyRotation, LinkPort, PeerTrust, Renegotiated, SessionKeys};
use crate::gateway::{open, revocation};

/// Frames queued for one link before senders wait.
const OUTGOING_QUEUE: usize = 4096;

/// Starts the reader and writer of an established link and registers it, replacing any older
/// session of the same federation.
pub(crate) async fn start(
    links: &Arc<Links>,
    mut link: Link,
    established: meshfed_proto::handshake::Established,
    record: &FederationRecord,
) -> Result<Arc<LinkPort>, LinkError> {
    let ctx = &links.ctx;
    let store = |e: &dyn std::fmt::Display| LinkError::Store(e.to_string());
    let signed = meshfed_proto::agreement::SignedAgreement::decode(&record.agreement)
        .map_err(|e| store(&e))?;
    let agreement = signed.agreement().map_err(|e| store(&e))?;
    let bundle = stored_bundle(record)?;
    let max_frame = agreement.capabilities.max_frame.0;
    // A tunnel frame a broker relays may carry a frame of the agreement's maximum.
    link.set_max_frame(max_frame.saturating_add(meshfed_proto::relay::OVERHEAD));
    let epoch = KeyEpoch::random().map_err(|e| store(&e))?;
    let sealer = established
        .content
        .sealer(&ctx.id.mesh, epoch)
        .map_err(|e| store(&e))?;
    // This side holds a suspension whichever side asked for it (it follows its peer), and
    // announces it on every new link.
    let own_hold = if record.state == FederationState::Suspended {
        FlowState::Suspended
    } else {
        FlowState::Active
    };
    let offer = ctx.offer();
    let renegotiate_now =
        offer_changed(links, record, &offer, established.agreement.is_some()).await;
    let mut session = LinkSession::new(
        SessionConfig {
            heartbeat_interval: ctx.config.federation.heartbeat_interval,
        },
        ctx.clock.instant(),
        own_hold,
    )
    .with_renegotiation(RenegotiationSetup {
        role: record.role.handshake_role(),
        key: ctx.id.cert().key.clone(),
        peer_key: established.peer.key.clone(),
        agreement: signed.clone(),
        capabilities: offer.capabilities,
        policy: offer.policy,
        timeout: ctx.config.federation.handshake_timeout,
    })
    .map_err(|e| store(&e))?;
    if renegotiate_now {
        // This side's offer changed since the agreement in force was made (a restart with
        // another `max_frame_size`, say): the agreement follows it.
        match session.renegotiate(ctx.clock.instant()) {
            Ok(version) => {
                tracing::info!(federation = %record.id, version, "this side's offer changed; proposing a new agreement version");
            }
            Err(e) => {
                tracing::warn!(federation = %record.id, error = %e, "could not propose a new agreement version");
            }
        }
    }
    // After a CA rollover, every new link tells the peer (again) what this mesh's bundle is: a
    // partner that was away when it changed learns it now. (A new session is open.)
    if let Some((statement, _)) = &ctx.id.trust().statement {
        let _ = session.announce_bundle(statement.clone());
    }
    // This mesh's revocation list goes out at the start of every link, so a partner that
    // missed it gets it.
    revocation::send_own(ctx, &record.peer_mesh, &mut session);
    if !link.relays().is_empty() {
        // What is sealed for the peer while it is away is opened with this (see `custody`).
        super::custody::keep_secret(links, &record.id, &established.content).await;
    }
    let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
    let port = Arc::new(LinkPort::new(
        record.id.clone(),
        Peer {
            mesh: record.peer_mesh.clone(),
            node: established.peer.node.clone(),
        },
        (link.remote_addr(), link.relays().to_vec()),
        meshfed_proto::admission::Terms::of(&agreement, record.role.handshake_role()),
        max_frame,
        SessionKeys::new(
            established.content,
            sealer,
            ctx.clock.instant(),
            KeyRotation {
                lifetime: ctx.config.federation.content_key_lifetime,
                messages: ctx.config.federation.content_key_messages,
            },
        ),
        PeerTrust::new(
            bundle,
            link.peer_chain().first().cloned().unwrap_or_default(),
            link.peer_chain()
                .iter()
                .skip(1)
                .map(|der| rustls_pki_types::CertificateDer::from(der.clone()))
                .collect(),
            ctx.revocations.clone(),
        ),
        tx,
        ctx.cancel.child_token(),
        session,
        ctx.now(),
    ));
    // Told before the API shows the link, so that a follower who saw it connected has this.
    ctx.changes.link_up(&port.federation_id, &record.peer_mesh);
    let old = {
        let mut sessions = links.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.insert(record.id.clone(), port.clone())
    };
    if let Some(old) = old {
        old.close();
    }
    let (reader, writer) = link.split();
    ctx.tracker
        .spawn(write_loop(links.clone(), port.clone(), writer, rx));
    ctx.tracker
        .spawn(read_loop(links.clone(), port.clone(), reader));
    ctx.tracker
        .spawn(super::interest::announce(links.clone(), port.clone()));
    links.routes.link_up(&port, record);
    links.routing.changed();
    links.custody.wake();
    if port.relays.is_empty() {
        // Each neighbour learns this mesh's descriptor; a broker lists it in its directory.
        match crate::gateway::directory::own(ctx) {
            Ok(descriptor) => {
                let frame = Frame::new(FrameType::Descriptor, descriptor.encode());
                let _ = port.send(frame).await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot sign this mesh's descriptor"),
        }
    }
    links.inbound.notify(Input::LinkUp(port.clone()));
    ctx.guard.link_up(&record.peer_mesh);
    super::audit::start(links, &port).await;
    Ok(port)
}

async fn write_loop(
    links: Arc<Links>,
    port: Arc<LinkPort>,
    mut writer: LinkWriter,
    mut rx: mpsc::Receiver<Frame>,
) {
    let clock = links.ctx.clock.clone();
    // A renegotiated agreement's maximum frame never exceeds this side's offer, and frames
    // built under the agreement before may still be queued: the writer takes either.
    writer.set_max_frame(
        port.max_frame()
            .max(links.ctx.config.federation.max_frame_size)
            .saturating_add(meshfed_proto::relay::OVERHEAD),
    );
    let result: Result<(), TransportError> = async {
        loop {
            // What the session queued — at start its first heartbeat — goes out first.
            let (frames, events) = port.with_session(drain);
            if frames
                .iter()
                .any(|f| matches!(f.ty, FrameType::Termination | FrameType::Error))
            {
                // The session's last frame: everything the stages queued before it (such as
                // acknowledgements of the peer's messages) goes out first.
                while let Ok(frame) = rx.try_recv() {
                    writer.queue(&frame)?;
                }
            }
            for frame in &frames {
                writer.queue(frame)?;
            }
            if writer.queued() > 0 {
                writer.flush().await?;
            }
            if on_events(&links, &port, events).await {
                let _ = writer.close().await;
                return Ok(());
            }
            let next = port.with_session(|s| s.poll_timeout());
            tokio::select! {
                biased;
                () = port.closed() => {
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
                // A command (suspend, resume) goes out before data queued after it was given.
                () = port.woken() => {}
                frame = rx.recv() => {
                    let Some(frame) = frame else { return Ok(()) };
                    writer.queue(&frame)?;
                    // Batch whatever else is already waiting into the same write.
                    while let Ok(more) = rx.try_recv() {
                        writer.queue(&more)?;
                    }
                }
                () = sleep_until(&clock, next) => {
                    port.with_session(|s| s.handle_timeout(clock.instant()));
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(federation = %port.federation_id, error = %e, "link write failed");
    }
    port.close();
}

async fn sleep_until(clock: &crate::clock::Clock, at: Option<std::time::Instant>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the session queued: frames to send and events to act on.
fn drain(s: &mut LinkSession) -> (Vec<Frame>, Vec<SessionEvent>) {
    let frames = std::iter::from_fn(|| s.poll_transmit()).collect();
    let events = std::iter::from_fn(|| s.poll_event()).collect();
    (frames, events)
}

async fn read_loop(links: Arc<Links>, port: Arc<LinkPort>, mut reader: LinkReader) {
    let ctx = links.ctx.clone();
    let mut frame_limit = port.max_frame();
    // The peer's streamed batches waiting for their heads: they live and die with this link.
    let mut heads = open::Heads::new(&ctx);
    let why = loop {
        let (deadline, verifying) = (heads.deadline(), heads.verifying());
        let received = tokio::select! {
            () = port.closed() => break port.ended().unwrap_or_else(|| "closed locally".to_owned()),
            verified = heads.verified(&links.inbound, &port), if verifying => {
                match verified {
                    Ok(()) => continue,
                    Err(fault) => break stream_fault(&links, &port, fault).await,
                }
            }
            () = sleep_until(&ctx.clock, deadline) => {
                match heads.overdue(ctx.clock.instant()) {
                    Ok(()) => continue,
                    Err(fault) => break stream_fault(&links, &port, fault).await,
                }
            }
            r = reader.recv() => r,
        };
        let frame = match received {
            Err(e) => {
                ctx.guard.link_failed(port.mesh());
                break format!("link failed: {e}");
            }
            Ok(None) => break "the peer closed the link".to_owned(),
            Ok(Some(frame)) => frame,
        };
        // Handled and drained at once, so what the frame caused (a renegotiation's switch
        // above all) is acted on here, in stream order, and not by the writer.
        let (handled, frames, events) = port.with_session(|s| {
            let handled = s.handle_frame(&frame, ctx.clock.instant());
            let (frames, events) = drain(s);
            (handled, frames, events)
        });
        // What the session answers (a heartbeat ack, a renegotiation answer or confirm, an
        // error frame) joins the link's queue.
        let switches: Vec<&AgreementSwitch> = events
            .iter()
            .filter_map(|e| match e {
                SessionEvent::AgreementSwitched(s) => Some(&**s),
                _ => None,
            })
            .collect();
        if switches.is_empty() {
            for frame in frames {
                let _ = port.send(frame).await;
            }
        } else {
            // The switch point: no transfer is built while the confirm is queued and the terms
            // change, so every transfer queued after it is built under the new terms.
            let _gate = port.switch_gate().await;
            for frame in frames {
                let _ = port.send(frame).await;
            }
            for switch in switches {
                apply_switch(&links, &port, switch);
            }
            // Frames up to the larger of the two maxima may still be on their way.
            frame_limit = frame_limit.max(port.max_frame());
            reader.set_max_frame(frame_limit.saturating_add(meshfed_proto::relay::OVERHEAD));
        }
        if on_events(&links, &port, events).await {
            break port
                .ended()
                .unwrap_or_else(|| "the session ended".to_owned());
        }
        match handled {
            Ok(Received::Data(frame)) => {
                if let Err(fault) = route(&links, &port, &mut heads, frame).await {
                    break stream_fault(&links, &port, fault).await;
                }
            }
            Ok(Received::Refused { frame: ty, reason }) => {
                let meshfed_proto::session::Refusal::FlowSuspended(by) = reason;
                ctx.metrics
                    .refused_by(port.mesh(), Direction::Inbound, &Refusal::Suspended);
                tracing::debug!(federation = %port.federation_id, frame = ?ty, by = ?by, "refused a data frame while the federation is suspended");
                // Refused envelopes of a streamed batch still count in its head: their leaves
                // are kept, they are not (they come again after the federation resumes).
                if ty == FrameType::Transfer
                    && let Err(fault) = heads.hold_back(&ctx, &frame.body)
                {
                    break stream_fault(&links, &port, fault).await;
                }
            }
            Ok(Received::Consumed | Received::UnknownHeartbeatAck { .. }) => {}
            Err(e) => {
                tracing::warn!(federation = %port.federation_id, peer = %port.peer, error = %e, "the peer broke the link session protocol");
            }
        }
    };
    tracing::info!(federation = %port.federation_id, peer = %port.peer, reason = %why, "federation link down");
    (links.ctx.changes).link_down(&port.federation_id, port.mesh(), &why);
    port.close();
    links.routes.link_down(&port);
    links.routing.forget(&port.federation_id);
    links.inbound.notify(Input::LinkDown(port.clone()));
    let mut sessions = links.sessions.lock().unwrap_or_else(|e| e.into_inner());
    if sessions
        .get(&port.federation_id)
        .is_some_and(|p| Arc::ptr_eq(p, &port))
    {
        sessions.remove(&port.federation_id);
    }
}

/// Hands a data frame to the stage it is for.
async fn route(
    links: &Arc<Links>,
    port: &Arc<LinkPort>,
    heads: &mut open::Heads,
    frame: Frame,
) -> Result<(), open::StreamFault> {
    let ctx = &links.ctx;
    match frame.ty {
        // The partner's breaker is open: held as for a suspended flow (it comes again).
        FrameType::Transfer if ctx.guard.hold_inbound(port.mesh()) => {
            heads.hold_back(ctx, &frame.body)?;
        }
        FrameType::Transfer => {
            open::receive(ctx, &links.inbound, &links.local, port, heads, &frame.body).await?;
        }
        FrameType::BatchHead => heads.head(ctx, port, &frame.body)?,
        FrameType::SignerCertificate => port.trust.announce(&frame.body),
        FrameType::Relay => super::relay::receive(links, port, &frame.body).await,
        FrameType::RouteAdvertisement => super::routing::receive(links, port, &frame.body),
        FrameType::Custody => super::custody::receive(links, port, &frame.body).await,
        FrameType::CustodyAck => super::custody::acknowledged(links, port, &frame.body).await,
        FrameType::Descriptor if ctx.config.node.role == crate::config::Role::Broker => {
            match links.directory.offer(&frame.body, ctx.clock.wall()) {
                Ok(mesh) => tracing::info!(%mesh, peer = %port.peer, "listed a mesh descriptor"),
                Err(e) => {
                    ctx.metrics.descriptor_refused();
                    tracing::warn!(peer = %port.peer, error = %e, "refused a mesh descriptor");
                }
            }
        }
        FrameType::Ack | FrameType::Credit => links.routes.peer_frame(port, &frame),
        FrameType::Interest => super::interest::receive(links, port, &frame.body).await,
        FrameType::InterestAck => super::interest::acknowledged(links, port, &frame.body),
        FrameType::Audit => super::audit::received(links, port, &frame.body).await,
        FrameType::Forward => match Forward::decode(&frame.body) {
            Ok(forward) => links.inbound.notify(Input::Forward {
                link: port.clone(),
                forward,
            }),
            Err(e) => {
                ctx.metrics
                    .refused(Direction::Inbound, &Refusal::Malformed(e.to_string()));
                tracing::warn!(peer = %port.peer, error = %e, "ignored a malformed forward");
            }
        },
        other => {
            tracing::debug!(federation = %port.federation_id, frame = ?other, "ignored a frame this version does not act on");
        }
    }
    Ok(())
}

/// Acts on a fault of the peer's streamed batches; returns why the link ends. A peer that
/// misbehaved is told (a protocol error), and the federation is suspended until an operator
/// resumes it; a batch from an untrusted signer only closes the link (the peer sends it
/// again on the next one).
async fn stream_fault(links: &Links, port: &LinkPort, fault: open::StreamFault) -> String {
    let ctx = &links.ctx;
    match fault {
        open::StreamFault::Misbehaved {
            reason,
            delivered_unproven,
        } => {
            ctx.metrics.peer_misbehaved(port.mesh());
            ctx.guard.signature_failure(port.mesh());
            let refusal = Refusal::BadSignature(reason.clone());
            ctx.metrics
                .refused_by(port.mesh(), Direction::Inbound, &refusal);
            let ids: Vec<String> = delivered_unproven.iter().map(ToString::to_string).collect();
            tracing::error!(
                federation = %port.federation_id,
                peer = %port.peer,
                %reason,
                delivered_unproven = ?ids,
                "the peer misbehaved with a streamed batch; suspending the federation"
            );
            let why = format!("{MISBEHAVED}: {reason}");
            // Always recorded, whatever the audit level: it names what reached subscribers
            // before its proof failed.
            let detail = format!("{reason}; delivered unproven: [{}]", ids.join(", "));
            crate::audit::refused(
                &ctx.audit,
                Some((&port.federation_id, meshfed_proto::policy::AuditLevel::Full)),
                Direction::Inbound,
                Some(port.mesh()),
                None,
                None,
                &Refusal::BadSignature(detail),
            );
            record_state(links, port, FederationState::Suspended, &why, By::Us).await;
            close_telling(port, ErrorCode::BadSignature, &reason).await;
            why
        }
        open::StreamFault::Refused(refusal) => {
            ctx.guard.transfer_refused(port.mesh(), &refusal);
            ctx.metrics
                .refused_by(port.mesh(), Direction::Inbound, &refusal);
            crate::audit::refused(
                &ctx.audit,
                Some((&port.federation_id, port.terms().audit_level)),
                Direction::Inbound,
                Some(port.mesh()),
                None,
                None,
                &refusal,
            );
            tracing::warn!(federation = %port.federation_id, peer = %port.peer, reason = refusal.reason(), error = %refusal, "refused a streamed batch; closing the link");
            close_telling(port, ErrorCode::UntrustedPeer, &refusal.to_string()).await;
            format!("refused a streamed batch: {refusal}")
        }
    }
}

/// Closes the link after telling the peer why (the writer sends the error frame last and
/// then closes; bounded, since a peer that reads nothing must not hold the link).
async fn close_telling(port: &LinkPort, code: ErrorCode, reason: &str) {
    if port.command(|s| s.close_with_error(code, reason)).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), port.closed()).await;
    }
}

/// Acts on the session's events; true once the session has closed.
async fn on_events(links: &Links, port: &LinkPort, events: Vec<SessionEvent>) -> bool {
    let mut closed = false;
    for event in events {
        match event {
            SessionEvent::HealthChanged(health) => {
                tracing::info!(federation = %port.federation_id, peer = %port.peer, %health, "link health changed");
            }
            SessionEvent::RttMeasured(rtt) => {
                links
                    .ctx
                    .metrics
                    .link_rtt(&port.federation_id, port.mesh(), rtt);
            }
            // The gateway follows its peer: a suspension or resumption by either side holds for
            // both, so either side may resume.
            SessionEvent::PeerSuspended => {
                tracing::info!(federation = %port.federation_id, peer = %port.peer, "the peer suspended the federation");
                let target = FederationState::Suspended;
                record_state(links, port, target, SUSPENDED_BY_PEER, By::Peer).await;
                let _ = port.command(LinkSession::suspend);
            }
            SessionEvent::PeerResumed => {
                tracing::info!(federation = %port.federation_id, peer = %port.peer, "the peer resumed the federation");
                let _ = port.command(LinkSession::resume);
            }
            SessionEvent::FlowChanged(flow) => {
                let (target, reason) = match flow {
                    FlowState::Active => (FederationState::Active, "resumed"),
                    FlowState::Suspended => (FederationState::Suspended, SUSPENDED_HERE),
                };
                record_state(links, port, target, reason, By::Us).await;
            }
            SessionEvent::PeerTerminated { kind, reason } => {
                let target = FederationState::Terminated(kind);
                record_state(links, port, target, "terminated by the peer", By::Peer).await;
                tracing::info!(federation = %port.federation_id, peer = %port.peer, %reason, "the peer terminated the federation");
            }
            SessionEvent::PeerReportedError { code, reason } => {
                tracing::warn!(federation = %port.federation_id, peer = %port.peer, %code, %reason, "the peer reported an error");
            }
            SessionEvent::PeerBundle(statement) => {
                super::bundle::on_peer_bundle(links, port, statement).await;
            }
            SessionEvent::BundleAcknowledged { serial } => {
                super::bundle::on_bundle_acknowledged(links, port, serial).await;
            }
            SessionEvent::RevocationsReceived(body) => {
                revocation::receive(&links.ctx, port, links.ports(), *body).await;
            }
            SessionEvent::RevocationsAcknowledged(ack) => {
                tracing::info!(federation = %port.federation_id, peer = %port.peer, mesh = %ack.mesh, version = ack.version, "the peer stored this mesh's revocation list");
            }
            SessionEvent::AgreementSwitched(switch) => record_switch(links, port, *switch).await,
            SessionEvent::RenegotiationFailed { version, failure } => {
                tracing::warn!(federation = %port.federation_id, peer = %port.peer, version, %failure, "renegotiation failed; the agreement in force stays");
                port.renegotiation_ended(Renegotiated::Failed(version, failure.to_string()));
            }
            SessionEvent::Closed(reason) => {
                if let CloseReason::Silent(_) = reason {
                    links.ctx.guard.link_failed(port.mesh());
                    tracing::warn!(federation = %port.federation_id, peer = %port.peer, %reason, "closing a silent link");
                }
                port.close_because(reason.to_string());
                closed = true;
            }
        }
    }
    closed
}

/// Moves the federation to `target` in the registry (unless it is there already) and tells its
/// stream.
async fn record_state(
    links: &Links,
    port: &LinkPort,
    target: FederationState,
    reason: &str,
    by: By,
) {
    let id = port.federation_id.clone();
    let at = links.ctx.now();
    let why = reason.to_owned();
    let stored = links
        .ctx
        .blocking(move |s| {
            let Some(rec) = s.federation(&id)? else {
                return Err(meshfed_store::StoreError::UnknownFederation(id));
            };
            if rec.state == target {
                return Ok((rec.state, rec));
            }
            Ok((rec.state, s.set_state(&id, target, Some(&why), at)?))
        })
        .await;
    match stored {
        Ok((from, rec)) => {
            crate::audit::lifecycle(
                &links.ctx.audit,
                &port.federation_id,
                port.mesh(),
                (from, rec.state),
                by,
                reason,
            );
            let moved = (from, rec.state);
            (links.ctx.changes).lifecycle(&port.federation_id, port.mesh(), moved, reason);
            links.routes.state_changed(port.mesh(), rec.state);
        }
        Err(e) => {
            tracing::warn!(federation = %port.federation_id, error = %e, "could not record the federation's new state");
        }
    }
}

/// Whether this side's `offer` differs from the one the agreement in force was made with. A
/// fresh handshake (`new_agreement`) just made it with this offer, which is recorded; a record
/// from before offers were kept counts as changed when the agreement is not what the offer
/// alone would allow (a capability outside it, or another maximum frame).
async fn offer_changed(
    links: &Links,
    record: &FederationRecord,
    offer: &crate::gateway::context::Offer,
    new_agreement: bool,
) -> bool {
    let encoded = offer.encode();
    let id = record.id.clone();
    if new_agreement {
        let recorded = links
            .ctx
            .blocking(move |s| s.set_agreed_offer(&id, &encoded))
            .await;
        if let Err(e) = recorded {
            tracing::warn!(federation = %record.id, error = %e, "could not record this side's offer");
        }
        return false;
    }
    match links.ctx.blocking(move |s| s.agreed_offer(&id)).await {
        Ok(Some(agreed)) => agreed != encoded,
        Ok(None) => meshfed_proto::agreement::SignedAgreement::decode(&record.agreement)
            .ok()
            .and_then(|s| s.agreement().ok())
            .is_some_and(|a| !offer.allows(&a, record.role.handshake_role())),
        Err(e) => {
            tracing::warn!(federation = %record.id, error = %e, "could not read this side's offer");
            false
        }
    }
}

/// Puts a switched agreement's terms in force on the link and on the stream; called with the
/// port's switch gate held.
fn apply_switch(links: &Links, port: &LinkPort, switch: &AgreementSwitch) {
    let role = if switch.agreement.initiator.mesh == links.ctx.id.mesh {
        meshfed_proto::handshake::Role::Initiator
    } else {
        meshfed_proto::handshake::Role::Responder
    };
    let terms = meshfed_proto::admission::Terms::of(&switch.agreement, role);
    let max_frame = switch.agreement.capabilities.max_frame.0;
    let peer_switched = switch.proposed_by == ProposedBy::Peer;
    port.switch_terms(terms.clone(), max_frame, peer_switched);
    links.routes.terms_changed(port.mesh(), terms);
}

/// Stores a switched agreement, keeping the replaced one in history, and tells whoever waits.
async fn record_switch(links: &Links, port: &LinkPort, switch: AgreementSwitch) {
    let version = switch.agreement.version;
    let id = port.federation_id.clone();
    let at = links.ctx.now();
    let offer = links.ctx.offer().encode();
    let signed = switch.signed.encode();
    let digest = switch.signed.digest();
    let previous = switch.previous;
    let stored = links
        .ctx
        .blocking(move |s| {
            let rec = s
                .federation(&id)?
                .ok_or_else(|| meshfed_store::StoreError::UnknownFederation(id.clone()))?;
            s.renegotiate_agreement(
                &id,
                meshfed_store::Renegotiated {
                    replaces: previous,
                    replaces_digest: &rec.agreement_digest,
                    agreement: &signed,
                    digest: &digest,
                    offer: &offer,
                    at,
                },
            )
        })
        .await;
    match stored {
        Ok(_) => {
            tracing::info!(federation = %port.federation_id, peer = %port.peer, version, previous, proposed_by = ?switch.proposed_by, "agreement renegotiated");
            crate::audit::agreement(
                &links.ctx.audit,
                &port.federation_id,
                port.mesh(),
                &switch.signed,
                AgreementCause::Renegotiated,
            );
            let versions = (previous, version);
            (links.ctx.changes).renegotiated(&port.federation_id, port.mesh(), versions);
            port.renegotiation_ended(Renegotiated::Switched(version));
        }
        Err(e) => {
            // The link runs under the new terms until it closes; the registry keeps the old.
            tracing::error!(federation = %port.federation_id, version, error = %e, "could not store the renegotiated agreement");
            port.renegotiation_ended(Renegotiated::Failed(
                version,
                format!("the new agreement could not be stored: {e}"),
            ));
        }
    }
}
