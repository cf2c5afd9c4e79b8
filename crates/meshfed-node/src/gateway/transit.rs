//! Transit (DESIGN §2, Transitive trust, model 2: the trusted intermediary), as the opening
//! stage checks it on either side of the relay:
//!
//! - **At the relay** ([`relaying`]): an envelope from partner C for a mesh other than this one
//!   is taken only when this mesh holds C's delegation, valid now, for that destination and
//!   topic, and only at qos ≥ 1 (the relay keeps it until it has passed it on). It is then not
//!   delivered here: the inbox keeps it for the relay stage (`relaying.rs`).
//! - **At the destination** ([`accept`]): a message partner B relays on mesh C's behalf
//!   (flag `transit`) is taken only when a `[[transit]]` rule of this mesh's policy lets C's
//!   messages on its topic through B; the delegation chain B presents verifies (each signed by
//!   a node of its issuer mesh: C's against C's CAs — pinned by the rule, or as B presents them
//!   — B's against B's, from this link, and an intermediate issuer's, in a longer chain,
//!   against its CAs as B presents them) and holds (`check_chain`: from C, to B, the
//!   authenticated peer of this link, within the rule's depth and each delegation's own, for
//!   this mesh and topic, unexpired, not withdrawn); and C's own envelope, as it crossed to B,
//!   verifies against C's CAs and names this envelope's id and topic and this mesh as its
//!   destination. The unsigned `routing.path` plays no part. A newer revocation list of C that B
//!   presents is taken on the way.
//!
//! What C's signature proves is C's header and the ciphertext B received; that the payload is
//! what that ciphertext held rests on B's word, which is what trusting an intermediary means.

use meshfed_proto::admission::{Refusal, Terms};
use meshfed_proto::envelope::export::Crossed;
use meshfed_proto::envelope::{Header, Qos, Transit};
use meshfed_proto::{MeshId, Topic};
use meshfed_trust::{KeyPurpose, TrustBundle, verify_node_cert};
use rustls_pki_types::CertificateDer;

use super::context::Context;
use super::delegated::Delegations;
use super::revocation;
use crate::credentials::delegation::{self, check_chain};

/// Whether this node takes `header`, arriving from the peer of `terms`, to relay it: `false`
/// for an envelope to this mesh, `true` for one to another mesh that this mesh may relay for
/// the peer; refused otherwise.
pub(crate) fn relaying(ctx: &Context, terms: &Terms, header: &Header) -> Result<bool, Refusal> {
    let to = &header.destination.mesh;
    if *to == ctx.id.mesh {
        return Ok(false);
    }
    let topic = &header.metadata.topic;
    let held = ctx.delegations.usable(
        &terms.peer,
        Some(&ctx.id.mesh),
        to,
        topic,
        ctx.now(),
        |issuer, id| ctx.revocations.delegation_revoked(issuer, id),
    );
    if held.is_empty() {
        return Err(Refusal::Transit(format!(
            "{} holds no valid delegation of {} to relay {topic} to {to}",
            ctx.id.mesh, terms.peer
        )));
    }
    if header.policy.qos == Qos::AtMostOnce {
        return Err(Refusal::Transit(format!(
            "{} relays only qos 1 and 2 messages, this one is qos 0",
            ctx.id.mesh
        )));
    }
    Ok(true)
}

/// The origin mesh of a message the peer of `terms` relays (its `transit` part), if this mesh
/// takes it; `peer_bundle` is the peer's trust bundle on this link.
pub(crate) fn accept(
    ctx: &Context,
    terms: &Terms,
    peer_bundle: &TrustBundle,
    header: &Header,
    transit: &Transit,
) -> Result<MeshId, Refusal> {
    let refused = |why: String| Refusal::Transit(why);
    let via = &terms.peer;
    let topic = &header.metadata.topic;
    // The origin is the mesh of the CAs the relay presents; the chain must start there.
    let bundle = ctx
        .delegations
        .presented_bundle(&transit.bundle)
        .map_err(|e| refused(format!("the origin's CAs as {via} presents them: {e}")))?;
    let origin = bundle.mesh().clone();
    let policy = ctx.policy();
    let rule = policy.transit(&origin, via, topic).ok_or_else(|| {
        refused(format!(
            "no [[transit]] rule of {} lets {origin}'s messages on {topic} through {via}",
            ctx.id.mesh
        ))
    })?;
    if let Some(pinned) = &rule.ca
        && !bundle.cas().iter().any(|c| c.fingerprint() == *pinned)
    {
        return Err(refused(format!(
            "{via} presents CAs for {origin} without the one the transit rule pins ({pinned})"
        )));
    }
    if let Some(list) = &transit.revocations
        && let Err(e) = revocation::take_relayed(ctx, &origin, &bundle, list)
    {
        return Err(refused(format!(
            "{origin}'s revocation list from {via}: {e}"
        )));
    }
    let wall = ctx.clock.wall();
    // The CAs of the chain's intermediate issuers, as the relay presents them (a chain longer
    // than one: each relay added its predecessor's).
    let issuers = (transit.issuers.iter())
        .map(|ders| ctx.delegations.presented_bundle(ders))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            refused(format!(
                "an intermediate issuer's CAs as {via} presents them: {e}"
            ))
        })?;
    let chain = transit
        .delegations
        .iter()
        .map(|token| {
            ctx.delegations.verified(token, || {
                delegation::verify(
                    token,
                    |mesh| {
                        if *mesh == origin {
                            Some(bundle.clone())
                        } else if mesh == via {
                            Some(peer_bundle.clone())
                        } else {
                            issuers.iter().find(|b| b.mesh() == mesh).cloned()
                        }
                    },
                    wall,
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(e.to_string()))?;
    check_chain(
        &chain,
        &origin,
        via,
        &ctx.id.mesh,
        topic,
        usize::from(rule.max_depth),
        ctx.now(),
        |issuer, id| ctx.revocations.delegation_revoked(issuer, id),
    )
    .map_err(|e| refused(e.to_string()))?;
    origin_envelope(
        &ctx.delegations,
        transit,
        &bundle,
        &origin,
        header,
        (&ctx.id.mesh, topic),
        wall,
    )?;
    // The origin's CAs, and those of the chain's intermediate issuers: the revocation lists
    // relays pass on for them are checked against these (kept across restarts).
    for b in std::iter::once(&bundle).chain(&issuers) {
        remember_cas(ctx, b);
    }
    Ok(origin)
}

/// Keeps `bundle` as the CAs of its mesh, whose delegation or message was just accepted in
/// transit: in memory, and in the store when they are new.
fn remember_cas(ctx: &Context, bundle: &TrustBundle) {
    let mesh = bundle.mesh().clone();
    if !ctx.delegations.accepted_origin(&mesh, bundle) {
        return;
    }
    let (store, at) = (ctx.store.clone(), ctx.now());
    let cas: Vec<Vec<u8>> = bundle.cas().iter().map(|c| c.der().to_vec()).collect();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = store.put_origin_cas(&mesh, &cas, at) {
            tracing::warn!(%mesh, error = %e, "cannot keep a relayed mesh's CAs: its relayed revocation lists wait for its next message after a restart");
        }
    });
}

/// Checks the origin's own envelope in `transit`: signed by a node of `origin` (through the
/// issuing CA the origin's delegation, the chain's first, names), for this envelope's id and topic, to this
/// mesh (`here`). A signer certificate that verified before (while valid), and a batch head
/// that verified before, are not verified again (`seen`): the envelope's inclusion in its batch
/// and its payload digest are checked every time.
fn origin_envelope(
    seen: &Delegations,
    transit: &Transit,
    bundle: &TrustBundle,
    origin: &MeshId,
    header: &Header,
    (here, topic): (&MeshId, &Topic),
    now: std::time::SystemTime,
) -> Result<(), Refusal> {
    let refused = |why: String| Refusal::Transit(format!("{origin}'s envelope: {why}"));
    let crossed = Crossed::decode(&transit.origin).map_err(|e| refused(e.to_string()))?;
    let oh = crossed.header();
    if &oh.source.mesh != origin {
        return Err(refused(format!("it comes from {}", oh.source.mesh)));
    }
    if &oh.destination.mesh != here {
        return Err(refused(format!("it is for {}", oh.destination.mesh)));
    }
    if oh.id != header.id || &oh.metadata.topic != topic {
        return Err(refused(format!(
            "it is {} on {}, not {} on {topic}",
            oh.id, oh.metadata.topic, header.id
        )));
    }
    let digest = *oh.certificate.digest();
    let key = match seen.origin_signer(origin, &digest, now) {
        Some(key) => key,
        None => {
            let der = oh
                .certificate
                .der()
                .ok_or_else(|| refused("its signer's certificate is not carried".into()))?;
            // The origin's issuing CA, as its delegation (the chain's first) carries it.
            let first = transit.delegations.first().map_or("", String::as_str);
            let intermediates = delegation::chain_of(first).map_err(|e| refused(e.to_string()))?;
            let intermediates: Vec<CertificateDer<'_>> = intermediates
                .iter()
                .skip(1)
                .map(|c| CertificateDer::from(&c[..]))
                .collect();
            let info = verify_node_cert(
                bundle,
                &CertificateDer::from(&der[..]),
                &intermediates,
                KeyPurpose::ClientAuth,
                now,
            )
            .map_err(|e| refused(format!("its signer: {e}")))?;
            if &info.mesh != origin {
                return Err(refused(format!("signed by a node of {}", info.mesh)));
            }
            seen.verified_origin_signer(origin, digest, info.public_key.clone(), info.not_after);
            info.public_key
        }
    };
    let key = key.verifying_key().map_err(|e| refused(e.to_string()))?;
    let bad = |e: &dyn std::fmt::Display| refused(format!("its signature: {e}"));
    match &crossed {
        Crossed::InBatch(proven) => {
            proven.verify_inclusion().map_err(|e| bad(&e))?;
            let head = proven.batch_signature();
            seen.origin_batch(&head.signature().0, &digest, || head.verify(&key))
                .map_err(|e| bad(&e))?;
        }
        Crossed::Alone(_) => crossed
            .to_envelope(None)
            .verify(crossed.header_bytes(), crossed.payload_digest(), &key)
            .map_err(|e| bad(&e))?,
    }
    Ok(())
}
