//! Custody: store-and-forward through brokers for a relayed federation whose peer is away
//! (`meshfed_proto::relay::custody` has the frames and why).
//!
//! Three parts, by where a node stands:
//!
//! - **The origin** (a gateway): when a relayed federation has had no tunnel for two heartbeat
//!   intervals, its reliable messages not yet acknowledged are sealed under the federation's
//!   custody secret (derived by both ends at their last session and kept in their stores),
//!   each signed alone, and handed to the broker the federation goes through. What the broker
//!   takes is not handed again; what it refuses (its custody is full, say) is logged with the
//!   broker's reason, counted, and handed again at the next round. The stream keeps every
//!   message until the peer acknowledges it end to end, as always: once the tunnel is back it
//!   sends what is unacknowledged, and the peer's dedup window drops an exactly-once copy it
//!   had from custody.
//! - **A broker**: checks each envelope's origin signature (against the bundle it stored for
//!   the origin's mesh, or the mesh CA the chain presents), journals it (SQLite, committed
//!   before the acknowledgement; bounded by `[delivery] custody_max_*`), answers which it took,
//!   and hands what it holds on toward each destination as soon as it has a route to it — by
//!   priority, then deadline — to the destination itself or to the next broker, which takes
//!   custody in turn. An envelope past its deadline is dropped and counted.
//! - **The destination** (a gateway): checks each envelope against the trust it stored for
//!   the origin's mesh, opens it under the custody secret it names, and hands it to the inbox,
//!   which acknowledges it to the broker once it is journaled (`open::custody`, `inbox.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshfed_proto::MeshId;
use meshfed_proto::crypto::CustodySecret;
use meshfed_proto::envelope::{EnvelopeId, Hop, WireEnvelope};
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::relay::custody::{Custody, CustodyAck, CustodyItem};
use meshfed_proto::{FederationId, FederationState};
use meshfed_queue::{Message, Peer};
use meshfed_store::{CustodyLimits, CustodyRow, FederationRecord};
use meshfed_trust::TrustBundle;
use rustls_pki_types::CertificateDer;
use tokio::sync::Notify;

use super::{Links, relay, routing, stored_bundle};
use crate::config::Role;
use crate::gateway::cores::on_every_core;
use crate::gateway::inbox::Input;
use crate::gateway::open;
use crate::gateway::port::{LinkPort, PeerTrust};

/// Envelopes handed on in one custody frame.
const PER_FRAME: usize = 256;
/// How long an envelope handed on waits for the next hop's acknowledgement before it is handed
/// again.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Room kept in a custody frame for everything but the envelopes.
const FRAME_MARGIN: usize = 64 << 10;

/// A stream an origin handed messages of: its federation and peer.
type Stream = (FederationId, MeshId);

/// What this node has handed on and not yet heard about.
#[derive(Default)]
pub(crate) struct CustodyState {
    /// Handed on, waiting for the next hop's acknowledgement: by envelope id, the federation it
    /// belongs to (at an origin) and when.
    in_flight: Mutex<HashMap<EnvelopeId, (Option<Stream>, Instant)>>,
    /// At an origin: per federation, what a broker took (not handed again).
    taken: Mutex<HashMap<FederationId, HashSet<EnvelopeId>>>,
    /// At an origin: per federation, since when it has had no tunnel.
    away: Mutex<HashMap<FederationId, Instant>>,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CustodyState {
    /// Something changed (a link came up, a route appeared, custody was taken): look again.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Keeps the custody secret of a relayed federation's new session, so that what is sealed for
/// the peer while it is away can be opened when it returns.
pub(crate) async fn keep_secret(
    links: &Links,
    federation: &FederationId,
    content: &meshfed_proto::crypto::ContentSecret,
) {
    let secret = match content.custody() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%federation, error = %e, "cannot derive the custody secret");
            return;
        }
    };
    let (id, bytes, fed) = (secret.id().to_string(), *secret.bytes(), federation.clone());
    let now = links.ctx.now();
    if let Err(e) = links
        .ctx
        .blocking(move |s| s.keep_custody_secret(&fed, &id, &bytes, now))
        .await
    {
        tracing::warn!(%federation, error = %e, "cannot keep the custody secret: messages for the peer cannot be left in custody");
    }
}

/// Hands messages to custody (a gateway) or on toward their destinations (a broker), at each
/// heartbeat interval and whenever something changed.
pub(crate) async fn custody_loop(links: Arc<Links>) {
    let every = links.ctx.config.federation.heartbeat_interval;
    loop {
        tokio::select! {
            () = links.ctx.cancel.cancelled() => return,
            () = links.custody.wake.notified() => {}
            () = links.ctx.clock.sleep(every) => {}
        }
        if links.ctx.config.node.role == Role::Broker {
            hand_on(&links).await;
        } else {
            hand_over(&links).await;
        }
    }
}

/// At an origin: each relayed federation away for two heartbeat intervals hands its broker
/// what it has not handed yet.
async fn hand_over(links: &Arc<Links>) {
    let ctx = &links.ctx;
    let records = match ctx.blocking(|s| s.federations()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list federations for custody");
            return;
        }
    };
    let now = ctx.clock.instant();
    let patience = ctx.config.federation.heartbeat_interval * 2;
    for record in records {
        let Some(broker) = relay::via(&record) else {
            continue;
        };
        if record.state != FederationState::Active {
            continue;
        }
        let Some(stream) = links.routes.to(&record.peer_mesh) else {
            continue;
        };
        if stream.has_link() {
            // The peer is back: the stream sends what it has not acknowledged, custody or not.
            lock(&links.custody.away).remove(&record.id);
            if lock(&links.custody.taken).remove(&record.id).is_some() {
                stream.custody_changed(0, None);
            }
            continue;
        }
        let since = *lock(&links.custody.away)
            .entry(record.id.clone())
            .or_insert(now);
        if now.saturating_duration_since(since) < patience {
            continue;
        }
        let Some(port) = neighbour(links, &broker) else {
            continue;
        };
        if let Err(e) = hand_federation(links, &record, &stream, &port).await {
            tracing::warn!(federation = %record.id, peer = %record.peer_mesh, %broker, error = %e, "cannot hand messages to the broker's custody");
        }
    }
}

/// The direct link to mesh `mesh`, if up.
fn neighbour(links: &Links, mesh: &MeshId) -> Option<Arc<LinkPort>> {
    (links.ports().into_iter()).find(|p| p.relays.is_empty() && p.mesh() == mesh)
}

async fn hand_federation(
    links: &Arc<Links>,
    record: &FederationRecord,
    stream: &crate::gateway::stream::Stream,
    port: &Arc<LinkPort>,
) -> Result<(), String> {
    let ctx = &links.ctx;
    let held = stream.reliable_held().await;
    let now = ctx.clock.instant();
    // What the broker took and the peer has since acknowledged is no longer held.
    if let Some(t) = lock(&links.custody.taken).get_mut(&record.id) {
        let ids: HashSet<EnvelopeId> = held.iter().map(|p| p.header.id).collect();
        t.retain(|id| ids.contains(id));
        stream.custody_changed(t.len(), None);
    }
    let fresh: Vec<_> = {
        // Locked in the order `acknowledged` locks them.
        let in_flight = lock(&links.custody.in_flight);
        let taken = lock(&links.custody.taken);
        let taken = taken.get(&record.id);
        held.into_iter()
            .filter(|p| {
                taken.is_none_or(|t| !t.contains(&p.header.id))
                    && in_flight
                        .get(&p.header.id)
                        .is_none_or(|(_, at)| now.saturating_duration_since(*at) >= ACK_TIMEOUT)
            })
            .collect()
    };

    if fresh.is_empty() {
        return Ok(());
    }
    let fed = record.id.clone();
    let Some((secret_id, bytes)) = ctx
        .blocking(move |s| s.latest_custody_secret(&fed))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Err("no custody secret is kept for this federation (no session with the peer since it was made)".to_owned());
    };
    let secret = CustodySecret::from_bytes(bytes);
    debug_assert_eq!(secret.id().as_str(), secret_id);
    let cert = ctx.id.cert();
    let version = stream.view().terms.version;
    let mut sealer = secret.sealer(&ctx.id.mesh).map_err(|e| e.to_string())?;
    let mut unsigned = Vec::with_capacity(fresh.len());
    for p in &fresh {
        let mut header = p.header.clone();
        header.certificate.clone_from(&cert.signer);
        header.agreement_version = version;
        let hop = Hop::origin(ctx.id.mesh.clone(), Hop::DEFAULT_TTL);
        let sealed =
            meshfed_proto::batch::UnsignedEnvelope::seal(header, hop, &p.payload, &mut sealer)
                .map_err(|e| e.to_string())?;
        unsigned.push(sealed);
    }
    let key = cert.key.clone();
    let signed = on_every_core(unsigned, move |e| {
        e.sign(&key)
            .map(|w| w.encode_on_link())
            .map_err(|e| e.to_string())
    })
    .await?;
    let chain = relay::own_chain(links);
    let items: Vec<(EnvelopeId, CustodyItem)> = (fresh.iter().zip(signed))
        .map(|(p, envelope)| {
            let item = CustodyItem {
                secret: secret.id().clone(),
                relays: Vec::new(),
                chain: chain.clone(),
                envelope,
            };
            (p.header.id, item)
        })
        .collect();
    let federation = (record.id.clone(), record.peer_mesh.clone());
    send(links, port, items, Some(&federation)).await;
    Ok(())
}

/// Sends `items` to `port` in custody frames within its frame limit, each recorded in flight.
async fn send(
    links: &Links,
    port: &LinkPort,
    items: Vec<(EnvelopeId, CustodyItem)>,
    federation: Option<&Stream>,
) {
    let room = (port.max_frame() as usize)
        .saturating_sub(FRAME_MARGIN)
        .max(1);
    let mut frame = Custody::default();
    let mut ids = Vec::new();
    let mut size = 0;
    let mut items = items.into_iter().peekable();
    while let Some((id, item)) = items.next() {
        size += item.envelope.len() + item.chain.iter().map(Vec::len).sum::<usize>();
        frame.items.push(item);
        ids.push(id);
        let full = frame.items.len() >= PER_FRAME
            || items
                .peek()
                .is_none_or(|(_, next)| size + next.envelope.len() + 8192 > room);
        if !full {
            continue;
        }
        let now = links.ctx.clock.instant();
        {
            let mut in_flight = lock(&links.custody.in_flight);
            for id in &ids {
                in_flight.insert(*id, (federation.cloned(), now));
            }
        }
        let body = std::mem::take(&mut frame).encode();
        if port
            .send(Frame::new(FrameType::Custody, body))
            .await
            .is_err()
        {
            let mut in_flight = lock(&links.custody.in_flight);
            for id in &ids {
                in_flight.remove(id);
            }
            return;
        }
        tracing::debug!(next = %port.peer, envelopes = ids.len(), "handed envelopes to custody");
        ids.clear();
        size = 0;
    }
}

/// A `CustodyAck` from the next hop `port`.
pub(crate) async fn acknowledged(links: &Arc<Links>, port: &LinkPort, body: &[u8]) {
    let ack = match CustodyAck::decode(body) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(peer = %port.peer, error = %e, "ignored a malformed custody acknowledgement");
            return;
        }
    };
    let ctx = &links.ctx;
    let mut release = Vec::new();
    // At an origin: the streams whose custody changed, with a refusal if there was one.
    let mut changed: HashMap<Stream, Option<&str>> = HashMap::new();
    {
        let mut in_flight = lock(&links.custody.in_flight);
        let mut taken = lock(&links.custody.taken);
        for id in &ack.taken {
            if let Some((Some(fed), _)) = in_flight.remove(id) {
                taken.entry(fed.0.clone()).or_default().insert(*id);
                changed.entry(fed).or_insert(None);
            }
            ctx.metrics.custody("handed");
            release.push(*id);
        }
        for (id, why) in &ack.refused {
            if let Some((Some(fed), _)) = in_flight.remove(id) {
                changed.insert(fed, Some(why));
            }
            ctx.metrics.custody("refused");
            // Full custody is for later; any other refusal is final for what a broker holds.
            if !why.starts_with("custody_full") {
                release.push(*id);
            }
            tracing::warn!(next = %port.peer, %id, reason = %why, "the next hop refused an envelope into custody");
        }
        for ((fed, peer), refused) in &changed {
            let held = taken.get(fed).map_or(0, HashSet::len);
            if let Some(stream) = links.routes.to(peer) {
                stream.custody_changed(held, *refused);
            }
        }
    }
    if ctx.config.node.role == Role::Broker && !release.is_empty() {
        if let Err(e) = ctx.blocking(move |s| s.release_custody(&release)).await {
            tracing::error!(error = %e, "cannot release envelopes from custody; they will be handed on again");
        }
        links.custody.wake();
    }
}

/// A `Custody` frame from the neighbour `port`: taken into custody (a broker) or delivered
/// (the destination).
pub(crate) async fn receive(links: &Arc<Links>, port: &Arc<LinkPort>, body: &[u8]) {
    let custody = match Custody::decode(body) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(peer = %port.peer, error = %e, "refused a malformed custody frame");
            return;
        }
    };
    if !port.relays.is_empty() {
        tracing::warn!(peer = %port.peer, "ignored a custody frame inside a tunnel");
        return;
    }
    let mut refused = Vec::new();
    let mut checked = Vec::new();
    for item in custody.items {
        match WireEnvelope::decode(&item.envelope) {
            Ok(wire) => checked.push((item, wire)),
            Err(e) => {
                tracing::warn!(peer = %port.peer, error = %e, "refused an undecodable envelope handed into custody");
            }
        }
    }
    let own = links.ctx.id.mesh.clone();
    let broker = links.ctx.config.node.role == Role::Broker;
    let mut mine = Vec::new();
    let mut through = Vec::new();
    for (item, wire) in checked {
        let to_me = wire.header().destination.mesh == own;
        match (to_me, broker) {
            (true, false) => mine.push((item, wire)),
            (false, true) => through.push((item, wire)),
            (_, is_broker) => refused.push((
                wire.header().id,
                if is_broker {
                    format!("broker {own} is not a destination")
                } else {
                    format!(
                        "gateway {own} is not a broker: it holds nothing for {}",
                        wire.header().destination.mesh
                    )
                },
            )),
        }
    }
    if broker {
        take(links, port, through, refused).await;
    } else {
        deliver(links, port, mine, refused).await;
    }
}

/// The federation this node has with an origin, if any, and the trust its signatures are
/// checked with.
type OriginTrust = (Option<FederationRecord>, PeerTrust);

/// The trust to check `origin`'s signatures with: the bundle this node stored for it, or, at a
/// broker that does not federate with it, the mesh CA its chain presents.
async fn origin_trust(
    links: &Links,
    origin: &MeshId,
    chain: &[Vec<u8>],
    presented: bool,
) -> Result<OriginTrust, String> {
    let o = origin.clone();
    let record = links
        .ctx
        .blocking(move |s| s.live_federation_with(&o))
        .await
        .map_err(|e| e.to_string())?;
    let bundle = match &record {
        Some(r) => stored_bundle(r).map_err(|e| e.to_string())?,
        None if presented => {
            let ca = chain.last().ok_or("an empty chain")?;
            TrustBundle::new(vec![CertificateDer::from(ca.clone())]).map_err(|e| e.to_string())?
        }
        None => return Err(format!("no federation with {origin}")),
    };
    if bundle.mesh() != origin {
        return Err(format!("the chain's CA is not mesh {origin}'s"));
    }
    let leaf = chain.first().cloned().unwrap_or_default();
    let intermediates = (chain.iter().skip(1))
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let trust = PeerTrust::new(bundle, leaf, intermediates, links.ctx.revocations.clone());
    Ok((record, trust))
}

/// Checks the origin's signature of each `(item, envelope)`; returns those that verify, with
/// the federation this node has with the origin, if any, and refuses the rest into `refused`.
async fn verified(
    links: &Links,
    items: Vec<(CustodyItem, WireEnvelope)>,
    refused: &mut Vec<(EnvelopeId, String)>,
    presented: bool,
) -> Vec<(CustodyItem, WireEnvelope, Option<FederationRecord>)> {
    let wall = links.ctx.clock.wall();
    let mut to_verify = Vec::new();
    // One look-up and one certificate check per origin and signer, not per envelope.
    let mut trusted: HashMap<(MeshId, Vec<u8>), Result<OriginTrust, String>> = HashMap::new();
    for (item, wire) in items {
        let header = wire.header();
        let id = header.id;
        let key = (header.source.mesh.clone(), item.chain[0].clone());
        if !trusted.contains_key(&key) {
            let trust = origin_trust(links, &key.0, &item.chain, presented).await;
            if let Ok((_, t)) = &trust {
                t.announce(&item.chain[0]);
            }
            trusted.insert(key.clone(), trust);
        }
        let (record, trust) = match &trusted[&key] {
            Ok(t) => t,
            Err(why) => {
                refused.push((id, format!("untrusted_signer: {why}")));
                continue;
            }
        };
        match trust.signer_key(&header.certificate, wall) {
            Ok(key) => to_verify.push((item, wire, record.clone(), key)),
            Err(r) => refused.push((id, format!("untrusted_signer: {r}"))),
        }
    }
    let outcomes = on_every_core(to_verify, |(item, wire, record, key)| {
        let ok = wire.verify(&key).map_err(|e| e.to_string());
        Ok((item, wire, record, ok))
    })
    .await
    .unwrap_or_default();
    let mut good = Vec::new();
    for (item, wire, record, ok) in outcomes {
        match ok {
            Ok(()) => good.push((item, wire, record)),
            Err(e) => refused.push((wire.header().id, format!("bad_signature: {e}"))),
        }
    }
    good
}

/// At a broker: checks, journals and acknowledges what a neighbour hands over.
async fn take(
    links: &Arc<Links>,
    port: &LinkPort,
    items: Vec<(CustodyItem, WireEnvelope)>,
    mut refused: Vec<(EnvelopeId, String)>,
) {
    let ctx = &links.ctx;
    let own = ctx.id.mesh.clone();
    let now = ctx.now();
    let good = verified(links, items, &mut refused, true).await;
    let mut rows = Vec::with_capacity(good.len());
    for (mut item, wire, _) in good {
        let header = wire.header();
        let message = Message::from_header(header, 0, ());
        if message.deadline.is_some_and(|d| d.passed(now)) {
            refused.push((header.id, "expired: its deadline passed".to_owned()));
            continue;
        }
        if item.relays.contains(&own) || item.relays.len() >= meshfed_proto::relay::MAX_PATH {
            refused.push((
                header.id,
                format!("loop: it has been held by {:?}", item.relays),
            ));
            continue;
        }
        item.relays.push(own.clone());
        rows.push(CustodyRow {
            id: header.id,
            destination: header.destination.mesh.clone(),
            origin: header.source.mesh.clone(),
            priority: message.priority.get(),
            deadline: message.deadline.map(|d| d.instant()),
            received: now,
            item: Custody { items: vec![item] }.encode(),
        });
    }
    let limits = CustodyLimits {
        messages: ctx.config.delivery.custody_max_messages,
        bytes: ctx.config.delivery.custody_max_bytes,
    };
    let ids: Vec<EnvelopeId> = rows.iter().map(|r| r.id).collect();
    let origins: Vec<MeshId> = rows.iter().map(|r| r.origin.clone()).collect();
    let outcome = ctx.blocking(move |s| s.take_custody(&rows, limits)).await;
    let mut taken = Vec::new();
    match outcome {
        Ok(outcomes) => {
            for ((id, origin), o) in ids.into_iter().zip(origins).zip(outcomes) {
                match o {
                    Ok(()) => {
                        ctx.metrics.custody("taken");
                        taken.push(id);
                    }
                    Err(why) => {
                        tracing::warn!(%id, %origin, reason = %why, "refused an envelope into custody");
                        refused.push((id, why));
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot journal envelopes taken into custody");
            refused.extend(ids.into_iter().map(|id| (id, format!("store: {e}"))));
        }
    }
    for (id, why) in &refused {
        tracing::info!(from = %port.peer, %id, reason = %why, "refused custody");
    }
    let ack = CustodyAck { taken, refused };
    let _ = port
        .send(Frame::new(FrameType::CustodyAck, ack.encode()))
        .await;
    links.custody.wake();
}

/// At a broker: hands what it holds on toward each destination it has a route to; drops what
/// expired.
async fn hand_on(links: &Arc<Links>) {
    let ctx = &links.ctx;
    let now = ctx.now();
    match ctx.blocking(move |s| s.expire_custody(now)).await {
        Ok(expired) => {
            for row in expired {
                ctx.metrics.custody("expired");
                tracing::warn!(id = %row.id, origin = %row.origin, destination = %row.destination, "dropped an envelope held in custody: its deadline passed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot expire envelopes held in custody"),
    }
    let held = match ctx.blocking(|s| s.custody_held()).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read what is held in custody");
            return;
        }
    };
    ctx.metrics
        .custody_held
        .set(i64::try_from(held.iter().map(|h| h.messages).sum::<u64>()).unwrap_or(i64::MAX));
    let instant = ctx.clock.instant();
    for h in held {
        let Some(port) = routing::next_hop(links, &h.destination) else {
            continue;
        };
        let dest = h.destination.clone();
        let rows = match ctx
            .blocking(move |s| s.custody_for(&dest, PER_FRAME * 4))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(destination = %h.destination, error = %e, "cannot read custody");
                continue;
            }
        };
        let items: Vec<(EnvelopeId, CustodyItem)> = {
            let in_flight = lock(&links.custody.in_flight);
            rows.into_iter()
                .filter(|r| {
                    in_flight
                        .get(&r.id)
                        .is_none_or(|(_, at)| instant.saturating_duration_since(*at) >= ACK_TIMEOUT)
                })
                .filter_map(|r| {
                    let item = Custody::decode(&r.item).ok()?.items.pop()?;
                    Some((r.id, item))
                })
                .collect()
        };
        if !items.is_empty() {
            tracing::info!(destination = %h.destination, next = %port.peer, envelopes = items.len(), "handing on envelopes held in custody");
            send(links, &port, items, None).await;
        }
    }
}

/// At the destination: checks, opens and hands to the inbox what a broker hands on; the inbox
/// acknowledges it once journaled.
async fn deliver(
    links: &Arc<Links>,
    port: &Arc<LinkPort>,
    items: Vec<(CustodyItem, WireEnvelope)>,
    mut refused: Vec<(EnvelopeId, String)>,
) {
    let ctx = &links.ctx;
    let good = verified(links, items, &mut refused, false).await;
    let mut messages = Vec::with_capacity(good.len());
    for (item, wire, record) in good {
        let id = wire.header().id;
        let Some(record) = record else {
            refused.push((id, "no federation with the origin".to_owned()));
            continue;
        };
        let fed = record.id.clone();
        let secret_id = item.secret.to_string();
        let secret = match ctx
            .blocking(move |s| s.custody_secret(&fed, &secret_id))
            .await
        {
            Ok(Some(b)) => CustodySecret::from_bytes(b),
            Ok(None) => {
                refused.push((
                    id,
                    format!(
                        "unsealable: custody secret {} is not kept here",
                        item.secret
                    ),
                ));
                continue;
            }
            Err(e) => {
                refused.push((id, format!("store: {e}")));
                continue;
            }
        };
        let Some(terms) = links.routes.to(&record.peer_mesh).map(|s| s.view().terms) else {
            refused.push((id, "no stream for the origin".to_owned()));
            continue;
        };
        let header = wire.header();
        let Some(enc) = header.encryption.as_ref() else {
            refused.push((id, "not_encrypted".to_owned()));
            continue;
        };
        let opener = match secret.opener(&header.source.mesh, &enc.key_id) {
            Ok(o) => o,
            Err(e) => {
                refused.push((id, format!("unsealable: {e}")));
                continue;
            }
        };
        let peer = Peer {
            mesh: header.source.mesh.clone(),
            node: header.source.gateway.clone(),
        };
        let incoming = links.ctx.policy().inbound(&terms.peer);
        let message = open::custody(&terms, &incoming, &item.relays, wire, &opener);
        ctx.metrics.custody("delivered");
        messages.push((peer, message));
    }
    for (id, why) in &refused {
        tracing::warn!(from = %port.peer, %id, reason = %why, "refused an envelope handed on from custody");
    }
    links
        .inbound
        .send(Input::Custody {
            link: port.clone(),
            messages,
            refused,
        })
        .await;
}
