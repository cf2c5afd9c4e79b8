//! Component tokens as the running gateway handles them: checking a bearer token, issuing,
//! revoking (in the store first, then in force) and listing. The tokens themselves are
//! `crate::credentials`.

use meshfed_audit::record::CredentialAction;
use meshfed_store::{ComponentToken, StoreError};

use super::GatewayHandle;
use crate::credentials::{Claims, Grant, IssueError, Issuer, Principal, TokenError};

/// A token could not be issued.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IssueTokenError {
    /// It could not be made.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// It could not be recorded (and so is not handed out).
    #[error("cannot record the token")]
    Store(#[from] StoreError),
}

impl GatewayHandle {
    /// Who presents the bearer token `presented`: the admin token, or a valid component token
    /// that is not revoked.
    pub(crate) fn authenticate(&self, presented: &str) -> Result<Principal, TokenError> {
        if self.is_admin(presented) {
            return Ok(Principal::admin());
        }
        let ctx = &self.0.ctx;
        self.0.credentials.check(presented, ctx.clock.wall())
    }

    /// Whether the token `principal` authenticated with still holds (not revoked or expired
    /// since): for requests that last, such as WebSockets.
    pub(crate) fn recheck(&self, principal: &Principal) -> Result<(), TokenError> {
        self.0
            .credentials
            .recheck(principal, self.0.ctx.clock.wall())
    }

    /// Counts an API request refused for its credentials.
    pub(crate) fn count_refusal(&self, reason: &'static str) {
        self.0.ctx.metrics.api_refused(reason);
    }

    /// The issuer of this gateway's component tokens.
    pub(crate) fn token_issuer(&self) -> &Issuer {
        &self.0.credentials.issuer
    }

    /// Issues a token for `grant` and records it (never the token itself).
    pub(crate) async fn issue_token(
        &self,
        grant: Grant,
    ) -> Result<(String, Claims), IssueTokenError> {
        let ctx = &self.0.ctx;
        let (token, claims) = self.0.credentials.issuer.issue(&grant, ctx.clock.wall())?;
        let record = ComponentToken {
            jti: claims.jti.clone(),
            subject: claims.sub.clone(),
            roles: claims.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            attributes: claims.attrs.clone(),
            topics: claims.topics.clone(),
            actions: claims.actions.iter().map(|a| a.name().to_owned()).collect(),
            issued: claims.issued(),
            expires: claims.expires(),
            revoked: None,
        };
        let horizon = crate::credentials::prune_horizon(ctx.now());
        ctx.blocking(move |s| {
            s.prune_tokens(horizon)?;
            s.record_token(&record)
        })
        .await?;
        tracing::info!(subject = %claims.sub, jti = %claims.jti, expires = claims.exp, "issued a component token");
        crate::audit::credential(
            &ctx.audit,
            CredentialAction::TokenIssued,
            &claims.sub,
            &claims.jti,
        );
        Ok((token, claims))
    }

    /// Revokes token `jti`: recorded in the store, then refused on every request. `None` if
    /// no such token is recorded (never issued here, or expired).
    pub(crate) async fn revoke_token(
        &self,
        jti: String,
    ) -> Result<Option<ComponentToken>, StoreError> {
        let ctx = &self.0.ctx;
        let now = ctx.now();
        let id = jti.clone();
        let revoked = ctx.blocking(move |s| s.revoke_token(&id, now)).await?;
        if let Some(t) = &revoked {
            self.0.credentials.revoke(jti, t.expires, now);
            tracing::info!(subject = %t.subject, jti = %t.jti, "revoked a component token");
            crate::audit::credential(
                &ctx.audit,
                CredentialAction::TokenRevoked,
                &t.subject,
                &t.jti,
            );
        }
        Ok(revoked)
    }

    /// The tokens this gateway issued that have not expired long ago, the latest first.
    pub(crate) async fn issued_tokens(&self) -> Result<Vec<ComponentToken>, StoreError> {
        self.0.ctx.blocking(|s| s.tokens()).await
    }
}
