//! A broker's check of the origin signatures in the tunnels it relays.
//!
//! A broker cannot open what a tunnel carries, but it can read it: each direction of a tunnel
//! announces its signer certificates (`SignerCertificate` frames), sends envelopes in streamed
//! batches (`Transfer`) and signs each batch's Merkle root (`BatchHead`), or signs batches or
//! envelopes before sending them. The broker keeps, per tunnel direction, the leaves of each
//! open batch ([`Receiving`]) and verifies each head against them, off the forwarding path, with
//! the signer certificate checked against the sender's mesh: the trust bundle the broker stored
//! for it when it federates with that mesh itself, else the mesh CA the sender presented in the
//! tunnel's key exchange. Frames are forwarded as they come (the destination verifies them all
//! again before anything durable happens); a tunnel whose origin signature fails is refused from
//! then on, both ends told, and the failure counted (`meshfed_relay_proofs_refused_total`).
//!
//! The broker holds what it relays to its own agreements too (the broker level of policy
//! enforcement): an envelope larger than the agreement with the neighbour it came from allows
//! (with [`SEALED_ALLOWANCE`] for what is sealed beside the payload) refuses its tunnel the same
//! way, and so does a neighbour sending more envelopes than that agreement's rate allows
//! ([`take_rate`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshfed_proto::MeshId;
use meshfed_proto::batch::{BatchHead, Receiving, SignedBatch, UnsignedEnvelope};
use meshfed_proto::envelope::WireEnvelope;
use meshfed_proto::frame::FrameType;
use meshfed_proto::relay::{Body, RelayFrame, TunnelId};
use meshfed_queue::{Signed, Transfer};
use meshfed_trust::TrustBundle;
use rustls_pki_types::CertificateDer;

use super::Links;
use crate::gateway::port::PeerTrust;

/// What an envelope may carry beyond the agreed payload size: the sender's sealed identity (at
/// most 4 KiB), a relay's transit part, the tag and the header. (A message's properties count
/// in the agreed size with its payload: both gateways admit them so.)
pub(crate) const SEALED_ALLOWANCE: usize = 16 << 10;

/// What one relayed frame carries: how many envelopes, and the largest one's size as carried.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Carried {
    pub(crate) envelopes: usize,
    pub(crate) largest: usize,
}

/// A tunnel direction idle this long is forgotten.
const IDLE: Duration = Duration::from_secs(600);

/// One direction of a tunnel: the tunnel and the mesh that sends in it.
type Direction = (TunnelId, MeshId);

/// What a broker knows of each tunnel direction it relays.
#[derive(Default)]
pub(crate) struct Witnesses {
    seen: Mutex<HashMap<Direction, Arc<Mutex<Witness>>>>,
    /// Tunnels refused for a bad origin signature, with the reason.
    refused: Mutex<HashMap<TunnelId, String>>,
    /// The agreed rate of each neighbour whose tunnels this broker relays.
    rates: Mutex<HashMap<MeshId, Arc<NeighbourRate>>>,
}

/// A neighbour's agreed rate, as a token bucket holding two seconds of envelopes.
struct NeighbourRate {
    per_second: u32,
    bucket: governor::DefaultDirectRateLimiter,
}

/// Takes `envelopes` of tunnel `frame` from `neighbour`'s agreed rate (`per_second`), with two
/// seconds of envelopes as burst; over it, the tunnel is refused like one whose signatures
/// fail, naming the rate. A broker cannot hold a tunnel back without holding the neighbour's
/// whole link (its heartbeats with it), so it refuses: the ends dial a new tunnel and send
/// again what was not acknowledged.
pub(crate) fn take_rate(
    links: &Links,
    frame: &RelayFrame,
    neighbour: &MeshId,
    per_second: u32,
    envelopes: usize,
) {
    let Some(n) = u32::try_from(envelopes)
        .ok()
        .and_then(std::num::NonZeroU32::new)
    else {
        return;
    };
    let q = std::num::NonZeroU32::new(per_second).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = q.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1));
    // A transfer larger than the burst takes the whole burst: a full bucket lets it through.
    let n = n.min(burst);
    let rate = {
        let mut rates = lock(&links.witnesses.rates);
        let fresh = || {
            Arc::new(NeighbourRate {
                per_second,
                bucket: governor::RateLimiter::direct(
                    governor::Quota::per_second(q).allow_burst(burst),
                ),
            })
        };
        let entry = rates.entry(neighbour.clone()).or_insert_with(fresh);
        if entry.per_second != per_second {
            *entry = fresh();
        }
        entry.clone()
    };
    if rate.bucket.check_n(n).is_ok_and(|r| r.is_ok()) {
        return;
    }
    links.ctx.metrics.relay_over_rate.inc();
    let reason = format!(
        "{neighbour} sent over the {per_second} envelopes a second its agreement with broker {} allows",
        links.ctx.id.mesh
    );
    refuse(links, frame.tunnel, &frame.route.source, reason);
}

struct Witness {
    trust: PeerTrust,
    receiving: Receiving<()>,
    last: Instant,
}

impl Witnesses {
    /// Why tunnel `id` is refused, if it is.
    pub(crate) fn refused(&self, id: &TunnelId) -> Option<String> {
        lock(&self.refused).get(id).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Looks at a frame the broker passes on, which came from a neighbour whose agreement allows
/// payloads of `max_size` bytes; what it carries, when it is a transfer of a tunnel direction
/// the broker follows.
pub(crate) fn observe(links: &Arc<Links>, frame: &RelayFrame, max_size: u32) -> Carried {
    let sender = frame.route.source.clone();
    let key = (frame.tunnel, sender.clone());
    match &frame.body {
        Body::Open(open) => start(links, key, &open.chain),
        Body::Accept(accept) => start(links, key, &accept.chain),
        Body::Close { .. } | Body::Unreachable { .. } => {
            lock(&links.witnesses.seen).retain(|(id, _), _| *id != frame.tunnel);
        }
        Body::Finish(_) => {}
        Body::Data(sealed) => {
            let Some(witness) = lock(&links.witnesses.seen).get(&key).cloned() else {
                return Carried::default();
            };
            let limit = usize::try_from(max_size)
                .unwrap_or(usize::MAX)
                .saturating_add(SEALED_ALLOWANCE);
            match check(links, &key, &witness, sealed.ty, &sealed.body) {
                Ok(carried) if carried.largest > limit => {
                    let reason = format!(
                        "an envelope of {} bytes, over the {max_size} bytes the agreement with broker {} allows (and {SEALED_ALLOWANCE} sealed beside them)",
                        carried.largest, links.ctx.id.mesh
                    );
                    refuse(links, frame.tunnel, &sender, reason);
                }
                Ok(carried) => return carried,
                Err(reason) => {
                    links.ctx.metrics.relay_proof_checked(false);
                    refuse(links, frame.tunnel, &sender, reason);
                }
            }
        }
    }
    Carried::default()
}

/// A new tunnel direction whose sender presented `chain` (leaf, issuing CA, mesh CA).
fn start(links: &Links, key: Direction, chain: &[Vec<u8>]) {
    let now = links.ctx.clock.instant();
    // Trust the bundle this broker stored for the sender's mesh, if it federates with it.
    let bundle = links
        .ports()
        .into_iter()
        .find(|p| p.relays.is_empty() && p.mesh() == &key.1)
        .map(|p| p.trust.bundle())
        .or_else(|| {
            let ca = chain.last()?;
            TrustBundle::new(vec![CertificateDer::from(ca.clone())]).ok()
        });
    let Some(bundle) = bundle.filter(|b| b.mesh() == &key.1) else {
        tracing::debug!(tunnel = %key.0, sender = %key.1, "no CA of the sender's mesh to check its signatures against");
        return;
    };
    let intermediates = chain
        .iter()
        .skip(1)
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let leaf = chain.first().cloned().unwrap_or_default();
    let window = usize::try_from(links.ctx.config.delivery.window).unwrap_or(usize::MAX);
    let witness = Witness {
        trust: PeerTrust::new(bundle, leaf, intermediates, links.ctx.revocations.clone()),
        // The destination hashes each payload against its digest; the broker checks the
        // signature over the headers that name those digests.
        receiving: Receiving::new(
            window.saturating_mul(2),
            links.ctx.config.delivery.head_timeout,
        )
        .headers_only(),
        last: now,
    };
    let mut seen = lock(&links.witnesses.seen);
    seen.retain(|_, w| now.saturating_duration_since(lock(w).last) < IDLE);
    seen.insert(key, Arc::new(Mutex::new(witness)));
}

/// A signature check to run off the forwarding path.
type Verify = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// Checks one inner frame of a tunnel direction; a signature check goes to a blocking thread.
fn check(
    links: &Arc<Links>,
    tunnel: &Direction,
    witness: &Arc<Mutex<Witness>>,
    ty: u8,
    body: &[u8],
) -> Result<Carried, String> {
    let now = links.ctx.clock.instant();
    let wall = links.ctx.clock.wall();
    let (verify, carried) = lock(witness).check(ty, body, now, wall)?;
    if let Some(verify) = verify {
        verify_off_path(links, tunnel, verify);
    }
    Ok(carried)
}

impl Witness {
    /// Takes one inner frame received at `now` (`wall`): a certificate is noted, a streamed
    /// transfer joins its batch; a head, a signed batch or signed envelopes give the signature
    /// check to run. An error is the sender breaking the protocol or naming a signer its mesh
    /// does not certify.
    fn check(
        &mut self,
        ty: u8,
        body: &[u8],
        now: Instant,
        wall: std::time::SystemTime,
    ) -> Result<(Option<Verify>, Carried), String> {
        self.last = now;
        let mut carried = Carried::default();
        match FrameType::from_code(ty) {
            Some(FrameType::SignerCertificate) => self.trust.announce(body),
            Some(FrameType::Transfer) => {
                let transfer = Transfer::decode(body).map_err(|e| format!("a transfer: {e}"))?;
                carried.envelopes = transfer.items.len();
                match transfer.envelopes {
                    Signed::Streamed {
                        batch,
                        first,
                        members,
                    } => {
                        carried.largest = members.iter().map(Vec::len).max().unwrap_or(0);
                        let envelopes = members
                            .iter()
                            // The payloads go on as received: only headers are checked here.
                            .map(|m| UnsignedEnvelope::decode_headers(m))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| format!("a streamed envelope of batch {batch}: {e}"))?;
                        self.receiving
                            .take(batch, first, envelopes, now, |_| ())
                            .map_err(|e| e.to_string())?;
                    }
                    Signed::Batch(bytes) => {
                        let batch = SignedBatch::decode(&bytes).map_err(|e| e.to_string())?;
                        carried.largest = (batch.envelopes().iter())
                            .map(|e| e.payload().len() + e.header_bytes().len())
                            .max()
                            .unwrap_or(0);
                        let Some(first) = batch.envelopes().first() else {
                            return Ok((None, carried));
                        };
                        let key = self
                            .trust
                            .signer_key(&first.header().certificate, wall)
                            .map_err(|e| e.to_string())?;
                        return Ok((
                            Some(Box::new(move || {
                                batch.verify(&key).map(|_| ()).map_err(|e| e.to_string())
                            })),
                            carried,
                        ));
                    }
                    Signed::Each(list) => {
                        carried.largest = list.iter().map(Vec::len).max().unwrap_or(0);
                        let mut signed = Vec::with_capacity(list.len());
                        for bytes in &list {
                            let wire = WireEnvelope::decode(bytes).map_err(|e| e.to_string())?;
                            let key = self
                                .trust
                                .signer_key(&wire.header().certificate, wall)
                                .map_err(|e| e.to_string())?;
                            signed.push((wire, key));
                        }
                        return Ok((
                            Some(Box::new(move || {
                                signed.iter().try_for_each(|(wire, key)| {
                                    wire.verify(key).map_err(|e| e.to_string())
                                })
                            })),
                            carried,
                        ));
                    }
                }
            }
            Some(FrameType::BatchHead) => {
                let head = BatchHead::decode(body).map_err(|e| format!("a batch head: {e}"))?;
                let (leaves, _) = self.receiving.head(&head).map_err(|e| e.to_string())?;
                let key = self
                    .trust
                    .signer_key(leaves.certificate(), wall)
                    .map_err(|e| e.to_string())?;
                return Ok((
                    Some(Box::new(move || {
                        leaves
                            .verify(&head, &key)
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    })),
                    carried,
                ));
            }
            _ => {}
        }
        Ok((None, carried))
    }
}

/// Runs a signature check on a blocking thread; a failure refuses the tunnel (its later frames
/// are answered `Unreachable`).
fn verify_off_path(links: &Arc<Links>, (id, sender): &Direction, verify: Verify) {
    let (links, id, sender) = (links.clone(), *id, sender.clone());
    let handle = tokio::task::spawn_blocking(verify);
    links.ctx.tracker.clone().spawn(async move {
        match handle.await {
            Ok(Ok(())) => links.ctx.metrics.relay_proof_checked(true),
            Ok(Err(reason)) => {
                links.ctx.metrics.relay_proof_checked(false);
                refuse(&links, id, &sender, reason);
            }
            Err(e) => tracing::warn!(error = %e, "checking an origin signature failed"),
        }
    });
}

/// Refuses tunnel `id` from now on: its sender broke the streamed-batch protocol, signed what
/// does not verify, or went beyond the broker's agreement with the neighbour it came from.
fn refuse(links: &Links, id: TunnelId, sender: &MeshId, reason: String) {
    tracing::warn!(tunnel = %id, %sender, %reason, "refusing a tunnel");
    lock(&links.witnesses.seen).retain(|(t, _), _| *t != id);
    lock(&links.witnesses.refused).insert(
        id,
        format!(
            "broker {} refused the tunnel from {sender}: {reason}",
            links.ctx.id.mesh
        ),
    );
}

#[cfg(test)]
mod tests {
    use meshfed_proto::batch::Leaves;
    use meshfed_proto::crypto::{ContentSecret, KeyEpoch, SigningKey};
    use meshfed_proto::envelope::Hop;
    use meshfed_queue::{Epoch, Item, Seq};
    use meshfed_testkit::pki::{TestNode, TestPki};

    use super::*;
    use crate::gateway::revoked::Revocations;

    /// What a broker sees of plant-a's node `node` in a tunnel: trust in plant-a's CA.
    fn witness(pki: &TestPki, node: &TestNode) -> Witness {
        Witness {
            trust: PeerTrust::new(
                pki.bundle().clone(),
                node.cert.to_vec(),
                Vec::new(),
                Arc::new(Revocations::load(Vec::new()).unwrap()),
            ),
            receiving: Receiving::new(64, Duration::from_secs(10)).headers_only(),
            last: Instant::now(),
        }
    }

    /// Streamed batch 0 of `n` envelopes from `node`: its transfer and its head signed by `key`.
    fn batch(node: &TestNode, n: u64, key: &SigningKey) -> (Vec<u8>, Vec<u8>) {
        let secret = ContentSecret::derive(b"witness test", b"fed");
        let header = node.envelope_header("cloud-c", "stock/1");
        let mut sealer = secret
            .sealer(&header.source.mesh, KeyEpoch::random().unwrap())
            .unwrap();
        let envelopes: Vec<UnsignedEnvelope> = (0..n)
            .map(|_| {
                let header = node.envelope_header("cloud-c", "stock/1");
                let hop = Hop::origin(header.source.mesh.clone(), Hop::DEFAULT_TTL);
                UnsignedEnvelope::seal(header, hop, b"{}", &mut sealer).unwrap()
            })
            .collect();
        let mut leaves = Leaves::new(0, &envelopes[0]);
        for e in &envelopes {
            leaves.push(e).unwrap();
        }
        let head = leaves.sign(key).unwrap();
        let transfer = Transfer {
            epoch: Epoch(1),
            floor: Seq(0),
            items: (0..n)
                .map(|seq| Item {
                    seq: Seq(seq),
                    key_seq: None,
                    retransmission: false,
                })
                .collect(),
            envelopes: Signed::Streamed {
                batch: 0,
                first: 0,
                members: envelopes.iter().map(UnsignedEnvelope::encode).collect(),
            },
        };
        (transfer.encode(), head.encode())
    }

    fn run(
        w: &mut Witness,
        frames: &[(FrameType, &[u8])],
    ) -> Result<Vec<Result<(), String>>, String> {
        let mut outcomes = Vec::new();
        for (ty, body) in frames {
            let now = (Instant::now(), std::time::SystemTime::now());
            if let (Some(verify), _) = w.check(*ty as u8, body, now.0, now.1)? {
                outcomes.push(verify());
            }
        }
        Ok(outcomes)
    }

    /// A signer certificate announced, a streamed transfer and its head, in that order.
    fn streamed(
        w: &mut Witness,
        cert: &[u8],
        transfer: &[u8],
        head: &[u8],
    ) -> Result<Vec<Result<(), String>>, String> {
        run(
            w,
            &[
                (FrameType::SignerCertificate, cert),
                (FrameType::Transfer, transfer),
                (FrameType::BatchHead, head),
            ],
        )
    }

    #[test]
    fn a_head_signed_by_the_announced_signer_verifies() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let (transfer, head) = batch(&node, 3, &node.key);
        let mut w = witness(&pki, &node);
        let outcomes = streamed(&mut w, &node.cert, &transfer, &head).unwrap();
        assert_eq!(outcomes, [Ok(())]);
    }

    #[test]
    fn a_head_signed_by_another_key_or_an_unknown_signer_is_refused() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let forger = SigningKey::generate().unwrap();
        let (transfer, head) = batch(&node, 2, &forger);
        let mut w = witness(&pki, &node);
        let outcomes = streamed(&mut w, &node.cert, &transfer, &head).unwrap();
        assert_eq!(outcomes.len(), 1);
        assert!(outcomes[0].is_err(), "{outcomes:?}");

        // A signer of another mesh's CA, announced in the tunnel, is not plant-a's.
        let impostor_pki = TestPki::new("plant-a");
        let impostor = impostor_pki.node("gw1");
        let (transfer, head) = batch(&impostor, 1, &impostor.key);
        let mut w = witness(&pki, &node);
        let err = streamed(&mut w, &impostor.cert, &transfer, &head).unwrap_err();
        assert!(err.contains("signer"), "{err}");
    }

    #[test]
    fn a_head_for_no_open_batch_breaks_the_protocol() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let (_, head) = batch(&node, 1, &node.key);
        let mut w = witness(&pki, &node);
        let err = run(&mut w, &[(FrameType::BatchHead, &head)]).unwrap_err();
        assert!(err.contains("no streamed batch is open"), "{err}");
    }
}
