//! Relay: what this node relays as a trusted intermediary (DESIGN §2, Transitive trust,
//! model 2) goes on to its destination. The opening stage took it from the origin's partner C
//! only while this mesh holds C's delegation for it (`transit::relaying`), and the inbox kept it
//! in the journal's relay queue (`local::durable::RELAY_QUEUE`) before acknowledging it to C:
//! from then on it is this node's to pass on, across restarts.
//!
//! This stage reads the queue in order, a page at a time, and submits each message to its
//! destination's stream (a page's submissions share journal commits),
//! as a message of this node: sealed under the B–A agreement, signed by this node, with the
//! same envelope id, the origin's sender and properties, and the transit part in front of its
//! sealed part (C's envelope as it crossed, C's CAs as stored here, the delegation, C's
//! revocation list). A message is taken off the queue once the stream accepted it (journaled,
//! for qos ≥ 1), so none is lost between the two. While the destination's stream cannot take it (no federation yet, suspended, full,
//! over the agreed rate) it waits and tries again; a delegation withdrawn meanwhile, or a
//! refusal by the B–A agreement, drops it, logged and counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use meshfed_proto::MeshId;
use meshfed_proto::admission::{Direction, Refusal};
use meshfed_proto::envelope::export::Crossed;
use meshfed_proto::envelope::{Flags, Properties, Sender, Transit};
use meshfed_store::Write;
use meshfed_store::journal::{InboundSeq, StoredInbound};
use serde_bytes::ByteBuf;

use super::context::Context;
use super::delegations::partner_bundle;
use super::local::Local;
use super::local::durable::relay_queue;
use super::room::WhenFull;
use super::route::Routes;
use super::stream::Refused;
use super::submit::{Outgoing, Relay, SendError, submit};
use meshfed_queue::OfferError;

/// Messages read from the queue at a time.
const PAGE: usize = 64;
/// The first wait before a message the destination's stream could not take is tried again;
/// doubled each time, up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Starts the relay stage.
pub(crate) fn start(ctx: &Arc<Context>, routes: &Arc<Routes>, local: &Arc<Local>) {
    let (ctx, routes, local) = (ctx.clone(), routes.clone(), local.clone());
    ctx.clone().tracker.spawn(async move {
        run(&ctx, &routes, &local).await;
    });
}

async fn run(ctx: &Arc<Context>, routes: &Routes, local: &Local) {
    let name = relay_queue();
    let mut changes = local.durable.changes();
    let journal = ctx.journal.clone();
    let lookup = name.clone();
    let mut wait = FIRST_RETRY;
    let mut cursor = match tokio::task::spawn_blocking(move || journal.cursor(&lookup)).await {
        Ok(Ok(c)) => c,
        other => {
            tracing::error!(result = ?other.map(|r| r.map_err(|e| e.to_string())), "cannot read the relay queue's position; relaying is off");
            return;
        }
    };
    loop {
        changes.borrow_and_update();
        let journal = ctx.journal.clone();
        let lookup = name.clone();
        let rows = match tokio::task::spawn_blocking(move || {
            journal.inbound_after(&lookup, cursor, PAGE)
        })
        .await
        {
            Ok(Ok(rows)) => rows,
            other => {
                tracing::error!(result = ?other.map(|r| r.map_err(|e| e.to_string())), "cannot read the relay queue; relaying is off");
                return;
            }
        };
        if rows.is_empty() {
            tokio::select! {
                () = ctx.cancel.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            continue;
        }
        match relay_page(ctx, routes, &rows).await {
            Page::Stopping(done) => {
                save(ctx, &name, done.or(cursor)).await;
                return;
            }
            Page::Done(done) => {
                wait = FIRST_RETRY;
                cursor = done.or(cursor);
            }
            Page::Blocked(done) => {
                // The destination cannot take more now: what was taken is settled, the rest
                // is read again after a wait.
                cursor = done.or(cursor);
                save(ctx, &name, cursor).await;
                tokio::select! {
                    () = ctx.cancel.cancelled() => return,
                    () = ctx.clock.sleep(wait) => {}
                }
                wait = (wait * 2).min(MAX_RETRY);
                continue;
            }
        }
        save(ctx, &name, cursor).await;
    }
}

/// How a page of the queue went, with the last row settled in it (relayed or dropped).
enum Page {
    /// Every row is settled.
    Done(Option<InboundSeq>),
    /// A row could not be taken yet; those before it are settled.
    Blocked(Option<InboundSeq>),
    /// The gateway stops.
    Stopping(Option<InboundSeq>),
}

/// Relays a page of queued messages: each submitted in turn (so that their journal writes share
/// commits), then each acceptance awaited in order. A message that cannot be taken yet (no
/// federation yet, suspended, full, over the agreed rate) ends the page there.
async fn relay_page(ctx: &Context, routes: &Routes, rows: &[StoredInbound]) -> Page {
    // Each origin's CAs are read once per page, not per message.
    let mut bundles = HashMap::new();
    let mut submitted = Vec::with_capacity(rows.len());
    let mut blocked = false;
    for row in rows {
        let msg = match outgoing(ctx, &row.message.payload, &mut bundles).await {
            Ok(msg) => msg,
            Err(refusal) => {
                dropped(ctx, row, &refusal);
                submitted.push((row, None));
                continue;
            }
        };
        match submit(ctx, routes, msg, false, WhenFull::Wait).await {
            Ok(s) => submitted.push((row, Some(s))),
            Err(SendError::Queue(Refused::Stopping)) => {
                blocked = true;
                break;
            }
            Err(e) if transient(&e) => {
                tracing::debug!(id = %row.message.id, error = %e, "cannot relay a message yet; trying again");
                blocked = true;
                break;
            }
            Err(SendError::Refused(refusal)) => {
                dropped(ctx, row, &refusal);
                submitted.push((row, None));
            }
            Err(e) => {
                dropped(ctx, row, &Refusal::Malformed(e.to_string()));
                submitted.push((row, None));
            }
        }
    }
    let mut done = None;
    for (row, s) in submitted {
        if let Some(mut s) = s {
            match s.accepted().await {
                Ok(()) => {
                    ctx.metrics.transit_relayed.inc();
                }
                // Taken in an earlier round (a page that was blocked after it) and not yet
                // acknowledged: it is on its way.
                Err(SendError::Queue(Refused::Offer(OfferError::AlreadyQueued { .. }))) => {}
                Err(SendError::Queue(Refused::Stopping)) => return Page::Stopping(done),
                Err(e) if transient(&e) => {
                    tracing::debug!(id = %row.message.id, error = %e, "cannot relay a message yet; trying again");
                    return Page::Blocked(done);
                }
                Err(e) => dropped(ctx, row, &Refusal::Malformed(e.to_string())),
            }
        }
        done = Some(row.seq);
    }
    if ctx.cancel.is_cancelled() {
        return Page::Stopping(done);
    }
    if blocked {
        Page::Blocked(done)
    } else {
        Page::Done(done)
    }
}

/// Whether the destination's stream may take the message later.
fn transient(e: &SendError) -> bool {
    matches!(
        e,
        SendError::Queue(Refused::Full { .. } | Refused::Store(_) | Refused::NotActive { .. })
            | SendError::Refused(
                Refusal::UnknownDestination(_)
                    | Refusal::NotActive { .. }
                    | Refusal::Suspended
                    | Refusal::Unreachable(_)
                    | Refusal::RateLimited { .. },
            )
    )
}

/// Moves the queue's position to `cursor`, deleting what it passed.
async fn save(
    ctx: &Context,
    name: &meshfed_store::journal::SubscriptionName,
    cursor: Option<InboundSeq>,
) {
    let Some(delivered) = cursor else { return };
    let journal = ctx.journal.clone();
    let subscription = name.clone();
    let saved = tokio::task::spawn_blocking(move || {
        journal
            .submit(Write::SaveCursor {
                subscription,
                delivered,
            })
            .wait()
    })
    .await;
    if !matches!(saved, Ok(Ok(()))) {
        tracing::warn!(
            "could not save the relay queue's position; some relayed messages may be sent again (the destination drops the copies of exactly-once ones)"
        );
    }
}

fn dropped(ctx: &Context, row: &StoredInbound, refusal: &Refusal) {
    ctx.metrics.refused(Direction::Outbound, refusal);
    tracing::warn!(id = %row.message.id, reason = refusal.reason(), error = %refusal, "dropped a message this node was relaying");
}

/// The message to send on for a queued record (see `local::Delivery::relay_record`), with what
/// this node presents for it; refused when this mesh no longer holds a delegation for it.
async fn outgoing(
    ctx: &Context,
    record: &[u8],
    bundles: &mut HashMap<MeshId, Vec<ByteBuf>>,
) -> Result<Outgoing, Refusal> {
    let malformed = |e: String| Refusal::Malformed(format!("a queued relayed message: {e}"));
    let (crossed, sealed): (ByteBuf, ByteBuf) =
        ciborium::from_reader(record).map_err(|e| malformed(e.to_string()))?;
    let origin = Crossed::decode(&crossed).map_err(|e| malformed(e.to_string()))?;
    let h = origin.header();
    let source = h.source.mesh.clone();
    let held = ctx
        .delegations
        .usable(
            &source,
            Some(&ctx.id.mesh),
            &h.destination.mesh,
            &h.metadata.topic,
            ctx.now(),
            |issuer, id| ctx.revocations.delegation_revoked(issuer, id),
        )
        .into_iter()
        .next()
        .ok_or_else(|| {
            Refusal::Transit(format!(
                "{} no longer holds a valid delegation of {source} to relay {} to {}",
                ctx.id.mesh, h.metadata.topic, h.destination.mesh
            ))
        })?;
    let bundle = match bundles.get(&source) {
        Some(b) => b.clone(),
        None => {
            let bundle = partner_bundle(ctx, &source).await.ok_or_else(|| {
                Refusal::Transit(format!("{} holds no trust bundle of {source}", ctx.id.mesh))
            })?;
            let ders: Vec<ByteBuf> = bundle
                .cas()
                .iter()
                .map(|c| ByteBuf::from(c.der().to_vec()))
                .collect();
            bundles.insert(source.clone(), ders.clone());
            ders
        }
    };
    // A message the source itself received in transit (a chain: the origin delegated to the
    // source, the source to this mesh) goes on with the source's transit part extended: the
    // origin's envelope and CAs as they were, this mesh's delegation from the source added to
    // the chain, and the source's CAs to check it by.
    let (inner, sealed) =
        Transit::unwrap(h.flags, sealed.into_vec()).map_err(|e| malformed(e.to_string()))?;
    let (sender, sealed) = Sender::unwrap(h.flags, sealed).map_err(|e| malformed(e.to_string()))?;
    // The origin's properties go on with its message, sealed again for the destination.
    let (properties, payload) =
        Properties::unwrap(h.flags, sealed).map_err(|e| malformed(e.to_string()))?;
    let transit = match inner {
        Some(mut inner) => {
            // The source's own revocation list travels by the session
            // (`revocation::send_own`); the origin's stays as the source presented it.
            inner.delegations.push(held.token);
            inner.issuers.push(bundle);
            inner
        }
        None => Transit {
            origin: crossed.clone(),
            bundle,
            delegations: vec![held.token],
            revocations: ctx
                .revocations
                .held(&source)
                .map(|h| ByteBuf::from(h.body.encode())),
            issuers: Vec::new(),
        },
    };
    Ok(Outgoing {
        to: h.destination.mesh.clone(),
        topic: h.metadata.topic.clone(),
        payload,
        content_type: h.metadata.content_type.clone(),
        qos: h.policy.qos,
        priority: h.policy.priority,
        max_latency: h.policy.max_latency,
        // The gateway's own flags are set again by `submit` for what it seals.
        flags: (h.flags)
            .without(Flags::IDENTIFIED)
            .without(Flags::TRANSIT)
            .without(Flags::PROPERTIES),
        schema_id: h.metadata.schema_id.clone(),
        classification: h.policy.classification.clone(),
        properties,
        sender: Sender::default(),
        relay: Some(Relay {
            id: h.id,
            sender,
            transit,
        }),
        id: None,
    })
}
