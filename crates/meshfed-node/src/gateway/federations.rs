//! Federations as operators see them: invitations, joining by token, listing and lifecycle.

use std::sync::Arc;
use std::time::Duration;

pub(crate) use crate::clock::rfc3339;
use meshfed_proto::handshake::{Target, invitation_key};
use meshfed_proto::invitation::{InvitationToken, TokenError};
use meshfed_proto::session::LinkSession;
use meshfed_proto::{FederationId, FederationState, MeshId, Termination};
use meshfed_store::{FederationRecord, InvitationRecord, StoreError};
use meshfed_transport::ServerTrust;

use super::context::Context;
use super::links::{self, LinkError, Links};
use super::port::Renegotiated;
use super::route::Routes;

/// The federation operations of a running gateway: invitations, joining, lifecycle.
pub(crate) struct Federations {
    pub(crate) ctx: Arc<Context>,
    pub(crate) links: Arc<Links>,
    pub(crate) routes: Arc<Routes>,
}

/// Default lifetime of an invitation.
pub const DEFAULT_INVITATION_TTL: Duration = Duration::from_secs(3600);
/// Longest lifetime of an invitation.
pub const MAX_INVITATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a new policy was not put in force.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file is wrong (each problem with its line and column).
    #[error(transparent)]
    Invalid(#[from] crate::policy::PolicyErrors),
    /// It could not be written to the node directory.
    #[error("cannot write the policy file: {0}")]
    Write(String),
    /// Listing the federations to propose it to failed.
    #[error(transparent)]
    Federations(#[from] FederationError),
}

/// What became of a changed policy proposed to one live partner.
#[derive(Debug)]
pub(crate) struct Proposed {
    /// The federation.
    pub(crate) federation_id: FederationId,
    /// The partner.
    pub(crate) peer: MeshId,
    /// The agreement version now in force, or why the old one stays.
    pub(crate) outcome: Result<u32, FederationError>,
}

/// Puts `policy` in force for handshakes to come and for answering renegotiations, then
/// proposes it to every live partner in turn. A partner that refuses (or is not connected: it
/// is proposed again when its link comes up, the offer having changed) keeps the agreement in
/// force: a policy is never applied to a federation that did not agree to it.
pub(crate) async fn replace_policy(
    f: &Federations,
    policy: crate::policy::Policy,
) -> Result<Vec<Proposed>, FederationError> {
    let changed = *f.ctx.policy() != policy;
    f.ctx.set_policy(policy);
    if !changed {
        return Ok(Vec::new());
    }
    let offer = f.ctx.offer();
    for port in f.links.ports() {
        port.with_session(|s| s.set_offer(offer.capabilities.clone(), offer.policy.clone()));
    }
    let mut proposed = Vec::new();
    for record in list(f).await? {
        if !record.state.is_live() {
            continue;
        }
        let outcome = renegotiate(f, record.id.clone()).await.and_then(|r| {
            meshfed_proto::agreement::SignedAgreement::decode(&r.agreement)
                .and_then(|s| s.agreement())
                .map(|a| a.version)
                .map_err(|e| FederationError::Renegotiation(e.to_string()))
        });
        if let Err(e) = &outcome {
            tracing::warn!(federation = %record.id, peer = %record.peer_mesh, error = %e, "the partner did not agree to the changed policy; the agreement in force stays");
        }
        proposed.push(Proposed {
            federation_id: record.id,
            peer: record.peer_mesh,
            outcome,
        });
    }
    Ok(proposed)
}

/// Why an operation on federations failed. The API maps each to an HTTP status in one place.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The request itself is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The token cannot be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No such federation.
    #[error("no federation {0}")]
    NotFound(FederationId),
    /// The federation is in a state that does not allow the operation.
    #[error("{0}")]
    Conflict(String),
    /// The peer could not be reached.
    #[error("cannot reach {peer} at {addrs}: {reason}")]
    Unreachable {
        /// The peer mesh.
        peer: MeshId,
        /// The addresses tried.
        addrs: String,
        /// The last failure.
        reason: String,
    },
    /// The peer refused, or the handshake failed.
    #[error("federation with {peer} failed: {source}")]
    Refused {
        /// The peer mesh.
        peer: MeshId,
        /// What happened.
        source: LinkError,
    },
    /// A renegotiation ended without a new agreement; the one in force stays.
    #[error("{0}")]
    Renegotiation(String),
    /// The registry failed.
    #[error("registry: {0}")]
    Store(#[from] StoreError),
}

/// `d` as people count long spans: whole days (`1000 days`), else humantime's form.
fn in_days(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(86_400) && d.subsec_nanos() == 0 {
        format!("{} days", secs / 86_400)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// Issues an invitation for mesh `peer`, valid for `ttl`; returns the token and its record.
pub(crate) async fn invite(
    f: &Federations,
    peer: MeshId,
    ttl: Duration,
) -> Result<(InvitationToken, InvitationRecord), FederationError> {
    if peer == f.ctx.id.mesh {
        return Err(FederationError::BadRequest(format!(
            "mesh {peer} cannot invite itself"
        )));
    }
    if ttl < Duration::from_secs(1) {
        return Err(FederationError::BadRequest(format!(
            "ttl {} is too short: an invitation must work for at least 1 second",
            humantime::format_duration(ttl)
        )));
    }
    if ttl > MAX_INVITATION_TTL {
        return Err(FederationError::BadRequest(format!(
            "ttl {} is too long: an invitation works for at most {} days",
            in_days(ttl),
            MAX_INVITATION_TTL.as_secs() / 86_400
        )));
    }
    let mut secret = [0u8; 32];
    let mut id = [0u8; 12];
    meshfed_proto::crypto::random_fill(&mut secret)
        .map_err(|e| FederationError::BadRequest(e.to_string()))?;
    meshfed_proto::crypto::random_fill(&mut id)
        .map_err(|e| FederationError::BadRequest(e.to_string()))?;
    let created = f.ctx.now();
    let record = InvitationRecord {
        token_id: format!("tok_{}", hex::encode(id)),
        peer_mesh: peer.clone(),
        secret_hash: invitation_key(&secret),
        created,
        expires: created.saturating_add(ttl),
        used: None,
    };
    let rec = record.clone();
    f.ctx.blocking(move |s| s.put_invitation(&rec)).await?;
    let token = InvitationToken {
        inviter: f.ctx.id.mesh.clone(),
        invitee: peer,
        addresses: f.ctx.advertised(),
        ca_fingerprint: *f.ctx.id.trust().ca_fingerprint.as_bytes(),
        token_id: record.token_id.clone(),
        secret,
        expires: record.expires,
    };
    tracing::info!(token = %record.token_id, peer = %record.peer_mesh, "invitation issued");
    Ok((token, record))
}

/// Joins the federation a token offers: dials the inviter pinning its CA (or reaches it through
/// broker `via`), runs the handshake, records the federation and keeps its link up. A failure
/// is logged here as well as returned.
pub(crate) async fn join(
    f: &Federations,
    token: &str,
    via: Option<MeshId>,
) -> Result<FederationRecord, FederationError> {
    let result = try_join(f, token, via).await;
    if let Err(e) = &result {
        tracing::warn!(error = %e, "joining a federation failed");
    }
    result
}

async fn try_join(
    f: &Federations,
    token: &str,
    via: Option<MeshId>,
) -> Result<FederationRecord, FederationError> {
    let token = InvitationToken::decode(token)?;
    if token.invitee != f.ctx.id.mesh {
        return Err(FederationError::BadRequest(format!(
            "this invitation is for mesh {}, and this node belongs to mesh {}",
            token.invitee, f.ctx.id.mesh
        )));
    }
    let at = f.ctx.now();
    if token.expires <= at {
        return Err(FederationError::BadRequest(format!(
            "invitation {} expired at {}",
            token.token_id,
            rfc3339(token.expires)
        )));
    }
    let inviter = token.inviter.clone();
    if let Some(existing) = f
        .ctx
        .blocking(move |s| s.live_federation_with(&inviter))
        .await?
    {
        return Err(FederationError::Conflict(format!(
            "mesh {} is already federated as {} ({})",
            existing.peer_mesh, existing.id, existing.state
        )));
    }
    if let Some(broker) = via {
        let target = Target::Join(token.invitation());
        let peer = token.inviter.clone();
        let joined = links::relay::initiate(&f.links, &broker, peer, target).await;
        let record = keep_up(f, &token, joined)?;
        tracing::info!(federation = %record.id, peer = %record.peer_mesh, via = %broker, "joined federation through a broker");
        return Ok(record);
    }
    let timeout = f.ctx.config.federation.handshake_timeout;
    let mut last = String::new();
    for addr in &token.addresses {
        let trust = ServerTrust::PinnedCa {
            mesh: token.inviter.clone(),
            fingerprint: token.ca_fingerprint,
        };
        let link = match meshfed_transport::dial(addr, &f.ctx.id.tls, trust, timeout).await {
            Ok(link) => link,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let target = Target::Join(token.invitation());
        let joined = links::initiate(&f.links, link, target, token.addresses.clone()).await;
        let record = keep_up(f, &token, joined)?;
        tracing::info!(federation = %record.id, peer = %record.peer_mesh, "joined federation");
        return Ok(record);
    }
    Err(FederationError::Unreachable {
        peer: token.inviter.clone(),
        addrs: token.addresses.join(", "),
        reason: last,
    })
}

/// A federation just joined (or why not): from now on its link is kept up.
fn keep_up(
    f: &Federations,
    token: &InvitationToken,
    joined: Result<(FederationRecord, Arc<super::port::LinkPort>), LinkError>,
) -> Result<FederationRecord, FederationError> {
    let (record, session) = joined.map_err(|source| FederationError::Refused {
        peer: token.inviter.clone(),
        source,
    })?;
    f.ctx.tracker.spawn(links::maintain(
        f.links.clone(),
        record.id.clone(),
        Some(session),
    ));
    Ok(record)
}

/// Every federation in the registry.
pub(crate) async fn list(f: &Federations) -> Result<Vec<FederationRecord>, FederationError> {
    Ok(f.ctx.blocking(|s| s.federations()).await?)
}

/// One federation.
pub(crate) async fn get(
    f: &Federations,
    id: FederationId,
) -> Result<FederationRecord, FederationError> {
    let lookup = id.clone();
    f.ctx
        .blocking(move |s| s.federation(&lookup))
        .await?
        .ok_or(FederationError::NotFound(id))
}

/// The lifecycle operations an operator can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Pause message flow; the agreement stands.
    Suspend,
    /// Resume message flow.
    Resume,
    /// End the federation; forced revokes at once, graceful lets the link drain first.
    Terminate {
        /// Forced rather than graceful.
        forced: bool,
    },
}

/// Applies a lifecycle operation, tells the peer, and records it. The peer follows a
/// suspension or a resumption, whichever side asked for it.
pub(crate) async fn operate(
    f: &Federations,
    id: FederationId,
    op: Operation,
) -> Result<FederationRecord, FederationError> {
    operate_because(f, id, op, None).await
}

/// [`operate`], recording `because` (if given) as the reason instead of the operator's.
pub(crate) async fn operate_because(
    f: &Federations,
    id: FederationId,
    op: Operation,
    because: Option<&str>,
) -> Result<FederationRecord, FederationError> {
    let record = get(f, id.clone()).await?;
    let target = match op {
        Operation::Suspend => FederationState::Suspended,
        Operation::Resume => FederationState::Active,
        Operation::Terminate { forced: true } => FederationState::Terminated(Termination::Forced),
        Operation::Terminate { forced: false } => {
            FederationState::Terminated(Termination::Graceful)
        }
    };
    record
        .state
        .transition(target)
        .map_err(|e| FederationError::Conflict(format!("federation {id}: {e}")))?;
    let reason = because.unwrap_or(match op {
        Operation::Suspend => links::SUSPENDED_HERE,
        Operation::Resume => "resumed by an operator",
        Operation::Terminate { forced: true } => "terminated (forced) by an operator",
        Operation::Terminate { forced: false } => "terminated by an operator",
    });
    let port = f.links.port(&id);
    let at = f.ctx.now();
    let (lookup, recorded) = (id.clone(), reason.to_owned());
    let updated = f
        .ctx
        .blocking(move |s| s.set_state(&lookup, target, Some(&recorded), at))
        .await?;
    crate::audit::lifecycle(
        &f.ctx.audit,
        &id,
        &updated.peer_mesh,
        (record.state, updated.state),
        meshfed_audit::record::By::Us,
        reason,
    );
    (f.ctx.changes).lifecycle(
        &id,
        &updated.peer_mesh,
        (record.state, updated.state),
        reason,
    );
    if let Some(port) = &port {
        let told = match op {
            Operation::Suspend => port.command(LinkSession::suspend),
            Operation::Resume => port.command(LinkSession::resume),
            Operation::Terminate { .. } => Ok(()),
        };
        if told.is_err() {
            tracing::debug!(federation = %id, "the link closed before the peer was told");
        }
    }
    f.routes.state_changed(&updated.peer_mesh, updated.state);
    if op == (Operation::Terminate { forced: false })
        && let Some(stream) = f.routes.to(&updated.peer_mesh)
    {
        // DESIGN §3.3: graceful termination delivers what is in flight (no new sends are taken
        // from now on) before the peer is told; what is left after that is dead-lettered.
        stream.drained().await;
    }
    if let Operation::Terminate { forced } = op
        && let Some(port) = f.links.port(&id)
    {
        // The writer sends what is already queued, then the termination, then closes the link.
        // Either way the registry already says terminated, so nothing new is sent.
        let kind = if forced {
            Termination::Forced
        } else {
            Termination::Graceful
        };
        let _ = port.command(|s| s.terminate(kind, reason));
    }
    tracing::info!(federation = %id, state = %updated.state, "federation {reason}");
    Ok(updated)
}

/// Renegotiates the agreement of federation `id` over its link: proposes the next version with
/// this side's current offer and waits for the outcome. Returns the record with the new
/// agreement in force; a refusal, a timeout or a link that drops leaves the old one in force
/// and is a [`FederationError::Renegotiation`] saying why.
pub(crate) async fn renegotiate(
    f: &Federations,
    id: FederationId,
) -> Result<FederationRecord, FederationError> {
    let record = get(f, id.clone()).await?;
    if !record.state.is_live() {
        return Err(FederationError::Conflict(format!(
            "federation {id} is {}: only a live federation renegotiates",
            record.state
        )));
    }
    let port = f.links.port(&id).ok_or_else(|| {
        FederationError::Renegotiation(format!(
            "federation {id} has no link to {} now; the agreement in force stays",
            record.peer_mesh
        ))
    })?;
    let mut outcomes = port.renegotiations();
    let now = f.ctx.clock.instant();
    let offer = f.ctx.offer();
    let proposed = port.with_session(|s| {
        s.set_offer(offer.capabilities, offer.policy);
        s.renegotiate(now)
    });
    port.wake();
    let version =
        proposed.map_err(|e| FederationError::Conflict(format!("federation {id}: {e}")))?;
    tracing::info!(federation = %id, version, "proposing a new agreement version");
    loop {
        let outcome = tokio::select! {
            () = port.closed() => {
                return Err(FederationError::Renegotiation(format!(
                    "the link to {} closed before version {version} was agreed; the agreement in force stays",
                    record.peer_mesh
                )));
            }
            o = outcomes.recv() => o,
        };
        match outcome {
            Ok(Renegotiated::Switched(v)) if v == version => return get(f, id).await,
            Ok(Renegotiated::Failed(v, why)) if v == version => {
                return Err(FederationError::Renegotiation(format!(
                    "agreement version {version} was not agreed: {why}"
                )));
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return Err(FederationError::Renegotiation(format!(
                    "the link to {} ended before version {version} was agreed",
                    record.peer_mesh
                )));
            }
        }
    }
}
