//! Delegations as the running gateway handles them (DESIGN.md §2, Transitive trust): issuing
//! one to a partner mesh (signed with this node's key, recorded), taking one a partner issued to
//! this mesh (verified against that partner's stored bundle, recorded), withdrawing one this
//! mesh issued (the next version of its revocation list, sent on every link) and listing them
//! with their state. The delegations themselves are `crate::credentials::delegation`.

use meshfed_audit::record::CredentialAction;
use meshfed_proto::MeshId;
use meshfed_store::{StoreError, StoredDelegation};
use meshfed_trust::TrustBundle;
use rustls_pki_types::CertificateDer;

use super::GatewayHandle;
use super::context::Context;
use super::error::chain;
use super::revocation::RevokeError;
use crate::credentials::delegation::{self, Delegation, DelegationError, DelegationGrant};

/// What went wrong with a delegation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DelegationFault {
    /// Not granted, or does not verify.
    #[error(transparent)]
    Invalid(#[from] DelegationError),
    /// Taken, but issued to another mesh.
    #[error("delegation {id} is issued to mesh {delegate}, not to this mesh ({own})")]
    NotOurs {
        /// Its id.
        id: String,
        /// Its delegate.
        delegate: MeshId,
        /// This mesh.
        own: MeshId,
    },
    /// Withdrawing one this mesh did not issue (or that expired and was forgotten).
    #[error(
        "no delegation {0:?} issued by this mesh is recorded (meshfed delegation list shows them)"
    )]
    NotIssued(String),
    /// Its issuer withdrew it already.
    #[error("delegation {id} was revoked by mesh {issuer}")]
    Revoked {
        /// Its id.
        id: String,
        /// Its issuer.
        issuer: MeshId,
    },
    /// The revocation list could not be published.
    #[error(transparent)]
    Revoke(#[from] RevokeError),
    /// The registry failed.
    #[error("the registry: {}", chain(.0))]
    Store(#[from] StoreError),
}

/// A recorded delegation with its state now.
#[derive(Debug, Clone)]
pub(crate) struct DelegationView {
    /// As recorded.
    pub(crate) stored: StoredDelegation,
    /// Issued by this mesh (else issued to it).
    pub(crate) issued_here: bool,
    /// Withdrawn by its issuer's revocation list.
    pub(crate) revoked: bool,
    /// Past its expiry.
    pub(crate) expired: bool,
}

/// The trust bundle this node stored for partner mesh `mesh`, if it federates with it.
pub(crate) async fn partner_bundle(ctx: &Context, mesh: &MeshId) -> Option<TrustBundle> {
    let mesh = mesh.clone();
    let records = ctx.blocking(|s| s.federations()).await.ok()?;
    let record = records
        .into_iter()
        .filter(|r| r.peer_mesh == mesh && !r.peer_bundle.is_empty())
        .max_by_key(|r| (r.state.is_live(), r.updated))?;
    let certs = (record.peer_bundle.into_iter())
        .map(CertificateDer::from)
        .collect();
    TrustBundle::new(certs).ok()
}

impl GatewayHandle {
    /// Issues a delegation of `grant` from this mesh, signed with this node's key and chain,
    /// and records it.
    pub(crate) async fn issue_delegation(
        &self,
        grant: DelegationGrant,
    ) -> Result<(String, Delegation), DelegationFault> {
        let ctx = &self.0.ctx;
        let cert = ctx.id.cert();
        let mut chain_der = vec![cert.der().to_vec()];
        chain_der.extend(ctx.id.trust().issuing_der.iter().cloned());
        let (token, issued) = delegation::issue(
            &ctx.id.mesh,
            &grant,
            &cert.key,
            &chain_der,
            ctx.clock.wall(),
        )?;
        record(ctx, &token, &issued).await?;
        tracing::info!(delegation = %issued.id, delegate = %issued.delegate, depth = issued.depth, "issued a delegation");
        crate::audit::credential(
            &ctx.audit,
            CredentialAction::DelegationIssued,
            issued.delegate.as_str(),
            &issued.id,
        );
        Ok((token, issued))
    }

    /// Takes `token`, a delegation a partner mesh issued to this mesh: verified against that
    /// partner's stored trust bundle, not withdrawn, and recorded.
    pub(crate) async fn add_delegation(&self, token: &str) -> Result<Delegation, DelegationFault> {
        let ctx = &self.0.ctx;
        let issuer = delegation::issuer_of(token).ok();
        let bundle = match &issuer {
            Some(mesh) if *mesh == ctx.id.mesh => Some(ctx.id.trust().bundle.clone()),
            Some(mesh) => partner_bundle(ctx, mesh).await,
            None => None,
        };
        let verified = delegation::verify(
            token,
            |mesh| bundle.clone().filter(|_| Some(mesh) == issuer.as_ref()),
            ctx.clock.wall(),
        )?;
        if verified.delegate != ctx.id.mesh {
            return Err(DelegationFault::NotOurs {
                id: verified.id,
                delegate: verified.delegate,
                own: ctx.id.mesh.clone(),
            });
        }
        if ctx
            .revocations
            .delegation_revoked(&verified.issuer, &verified.id)
        {
            return Err(DelegationFault::Revoked {
                id: verified.id,
                issuer: verified.issuer,
            });
        }
        record(ctx, token, &verified).await?;
        tracing::info!(delegation = %verified.id, issuer = %verified.issuer, "took a delegation issued to this mesh");
        Ok(verified)
    }

    /// Withdraws delegation `id`, which this mesh issued.
    pub(crate) async fn revoke_delegation(
        &self,
        id: &str,
    ) -> Result<DelegationView, DelegationFault> {
        let ctx = &self.0.ctx;
        let own = ctx.id.mesh.clone();
        let found = self
            .delegations()
            .await?
            .into_iter()
            .find(|d| d.stored.id == id && d.stored.issuer == own)
            .ok_or_else(|| DelegationFault::NotIssued(id.chars().take(80).collect()))?;
        self.revoke_delegation_list(id).await?;
        crate::audit::credential(
            &self.0.ctx.audit,
            CredentialAction::DelegationRevoked,
            found.stored.delegate.as_str(),
            id,
        );
        Ok(DelegationView {
            revoked: true,
            ..found
        })
    }

    /// The delegations recorded (issued here or to this mesh), the latest first, with their
    /// state.
    pub(crate) async fn delegations(&self) -> Result<Vec<DelegationView>, StoreError> {
        let ctx = &self.0.ctx;
        let now = ctx.now();
        let stored = ctx.blocking(|s| s.delegations()).await?;
        Ok(stored
            .into_iter()
            .map(|d| DelegationView {
                issued_here: d.issuer == ctx.id.mesh,
                revoked: ctx.revocations.delegation_revoked(&d.issuer, &d.id),
                expired: d.expires < now,
                stored: d,
            })
            .collect())
    }
}

/// Records `d` (its `token` as signed) and puts it in use.
async fn record(ctx: &Context, token: &str, d: &Delegation) -> Result<(), StoreError> {
    let row = StoredDelegation {
        id: d.id.clone(),
        issuer: d.issuer.clone(),
        delegate: d.delegate.clone(),
        token: token.to_owned(),
        issued: d.issued,
        expires: d.expires,
    };
    let horizon = crate::credentials::prune_horizon(ctx.now());
    ctx.blocking(move |s| {
        s.prune_delegations(horizon)?;
        s.put_delegation(&row)
    })
    .await?;
    ctx.delegations.add(token.to_owned(), d.clone());
    Ok(())
}
