//! Retention (the compliance clause `retention_days`): what this node keeps of what it
//! exchanged with a partner — the partner's messages held for durable subscribers, the dead
//! letters of messages to it, the bodies of the audit trail's message and refusal records (their
//! hashes stay, so the trail still verifies) — goes once it is older than the agreement with
//! that partner lets it be kept. Checked when the gateway starts and every [`INTERVAL`] after, on the node's
//! clock; each removal is counted (`meshfed_retention_expired_total{kind}`) and logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meshfed_proto::MeshId;
use meshfed_proto::agreement::SignedAgreement;
use meshfed_proto::envelope::Timestamp;

use super::context::Context;

/// How often records are checked against the agreed retention.
pub(crate) const INTERVAL: Duration = Duration::from_secs(3600);

const DAY_MS: u64 = 86_400_000;

/// Starts the retention task.
pub(crate) fn start(ctx: &Arc<Context>) {
    let ctx = ctx.clone();
    ctx.tracker.clone().spawn(async move {
        loop {
            expire(&ctx).await;
            tokio::select! {
                () = ctx.cancel.cancelled() => break,
                () = ctx.clock.sleep(INTERVAL) => {}
            }
        }
    });
}

/// The agreed retention with each partner, in days: the shortest of its federations'.
fn retention(records: &[meshfed_store::FederationRecord]) -> BTreeMap<MeshId, u32> {
    let mut days = BTreeMap::new();
    for r in records {
        let Some(agreed) = SignedAgreement::decode(&r.agreement)
            .ok()
            .and_then(|s| s.agreement().ok())
        else {
            continue;
        };
        let d = agreed.policy.retention_days;
        days.entry(r.peer_mesh.clone())
            .and_modify(|e: &mut u32| *e = (*e).min(d))
            .or_insert(d);
    }
    days
}

/// Removes, for each partner, the records older than its agreed retention.
async fn expire(ctx: &Arc<Context>) {
    let records = match ctx.blocking(|s| s.federations()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the federations to apply retention");
            return;
        }
    };
    let now = ctx.now();
    // The audit logs are per federation: each keeps the records of exchanged messages as long
    // as its own agreement says.
    for r in &records {
        if let Some(days) = SignedAgreement::decode(&r.agreement)
            .ok()
            .and_then(|s| s.agreement().ok())
            .map(|a| a.policy.retention_days)
        {
            let before = Timestamp(now.0.saturating_sub(u64::from(days).saturating_mul(DAY_MS)));
            ctx.audit.prune(&r.id, before, days);
        }
    }
    for (peer, days) in retention(&records) {
        let before = Timestamp(now.0.saturating_sub(u64::from(days).saturating_mul(DAY_MS)));
        let partner = peer.clone();
        match ctx
            .blocking(move |s| s.expire_exchanged(&partner, before))
            .await
        {
            Ok(expired) => {
                let counts = [
                    ("durable", expired.durable),
                    ("dead_letter", expired.dead_letters),
                ];
                for (kind, n) in counts {
                    let n = u64::try_from(n).unwrap_or(u64::MAX);
                    ctx.metrics
                        .retention_expired
                        .get_or_create(&crate::metrics::KindLabel { kind })
                        .inc_by(n);
                }
                if expired.durable + expired.dead_letters > 0 {
                    tracing::info!(%peer, days, durable = expired.durable, dead_letters = expired.dead_letters, "removed records kept past the agreed retention");
                }
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot apply the agreed retention");
            }
        }
    }
}
