//! Delivery that loses nothing: the gateway's drivers around the sans-IO queues of
//! `meshfed-queue`, the journal of `meshfed-store`, and the links.
//!
//! - [`outbound`]: one task per federation owns the outbox of the stream to that peer mesh.
//! - [`inbound`]: one task owns the inbox of every stream from peers.
//! - [`durable`]: durable local subscriptions, read from the journal.
//!
//! This module holds what they share: the message form kept while a message waits
//! ([`Pending`]), the stored form, and the verification of arriving transfer frames (one
//! signature check per batch, then each envelope's own checks).

pub(crate) mod durable;
pub(crate) mod inbound;
pub(crate) mod live;
pub(crate) mod outbound;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use meshfed_proto::batch::SignedBatch;
use meshfed_proto::crypto::Signature;
use meshfed_proto::envelope::{
    BatchProof, Envelope, EnvelopeError, Header, Hop, Timestamp, WireEnvelope,
};
use meshfed_proto::frame::Frame;
use meshfed_proto::{FederationState, MeshId};
use meshfed_queue::wire::{Signed, Transfer};
use meshfed_queue::{Forward, Message, Transmit};
use meshfed_store::FederationRecord;

use super::links::LinkHandle;
use super::messages::{self, Delivery};
use super::{Node, now};
use inbound::{Arrived, Input};

/// Credit a new stream may use before the receiver grants any: every receiver's window is at
/// least this (the configuration refuses smaller windows).
pub(crate) const INITIAL_CREDIT: u64 = 256;

/// A message accepted for sending: its header and clear payload. It is sealed and signed at
/// each transmission, under the content key of the link session it leaves on, and its header
/// gets the signer's certificate then: kept, stored and restored without it (about 600 bytes
/// of 1.7 KiB for a 1 KiB message), it always names the key that signs it.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) header: Header,
    pub(crate) payload: Vec<u8>,
}

/// The stored form of a pending message: the header's CBOR encoding and the clear payload
/// (the journal is this gateway's own disk; the message is sealed for the peer when sent),
/// framed as `[u32 header length, big-endian][header][payload]`.
pub(crate) fn encode_stored(pending: &Pending) -> Vec<u8> {
    let header = pending.header.encode();
    let mut out = Vec::with_capacity(4 + header.len() + pending.payload.len());
    out.extend_from_slice(
        &u32::try_from(header.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&header);
    out.extend_from_slice(&pending.payload);
    out
}

/// Reads a stored pending message back.
pub(crate) fn decode_stored(bytes: &[u8]) -> Result<Pending, String> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or("shorter than its length prefix")?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(format!(
            "header of {len} bytes announced, {} present",
            rest.len()
        ));
    }
    let (header, payload) = rest.split_at(len);
    let mut header = Header::decode(header).map_err(|e| format!("header: {e}"))?;
    header.encryption = None;
    header.certificate.clear();
    Ok(Pending {
        header,
        payload: payload.to_vec(),
    })
}

/// Microseconds since the Unix epoch.
pub(crate) fn micros_now() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Sleeps until `at` (protocol time, ms), or forever when there is nothing to wake for.
pub(crate) async fn sleep_until(at: Option<Timestamp>) {
    match at {
        Some(at) => {
            let ms = at.0.saturating_sub(now().0);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        None => std::future::pending().await,
    }
}

/// Starts one stream per live federation, each with its stored backlog.
///
/// A federation that ended while messages to its peer were still stored (the gateway stopped
/// between storing the termination and recording the dead letters) gets a stream too, if no
/// live federation with the same peer takes those messages: it dead-letters them at once, as
/// the termination would have.
pub(crate) async fn start(node: &Arc<Node>) {
    let records = match node.blocking(|s| s.federations()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot list stored federations");
            return;
        }
    };
    let mut peers: HashSet<MeshId> = records
        .iter()
        .filter(|r| r.state.is_live())
        .map(|r| r.peer_mesh.clone())
        .collect();
    for record in records {
        let live = record.state.is_live();
        if !live && !peers.insert(record.peer_mesh.clone()) {
            continue;
        }
        let journal = node.journal.clone();
        let peer = record.peer_mesh.clone();
        let restored = tokio::task::spawn_blocking(move || journal.pending_outbound(&peer)).await;
        let restored = match restored {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(peer = %record.peer_mesh, error = %e, "cannot read the stored backlog");
                Vec::new()
            }
            Err(e) => {
                tracing::error!(peer = %record.peer_mesh, error = %e, "reading the stored backlog failed");
                Vec::new()
            }
        };
        if live || !restored.is_empty() {
            ensure_stream(node, &record, restored);
        }
    }
}

/// The stream to `record`'s peer, started if need be.
fn ensure_stream(
    node: &Arc<Node>,
    record: &FederationRecord,
    restored: Vec<meshfed_store::journal::StoredOutbound>,
) -> Option<Arc<outbound::Stream>> {
    let mut streams = node.streams.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = streams.get(&record.peer_mesh)
        && s.federation_id == record.id
    {
        return Some(s.clone());
    }
    let stream = outbound::start(node, record, restored)?;
    streams.insert(record.peer_mesh.clone(), stream.clone());
    Some(stream)
}

/// The stream to mesh `peer`, if federated.
pub(crate) fn stream_to(node: &Node, peer: &MeshId) -> Option<Arc<outbound::Stream>> {
    let streams = node.streams.lock().unwrap_or_else(|e| e.into_inner());
    streams.get(peer).cloned()
}

/// A link session of `record` is up: its stream sends on it, the receiving side acknowledges
/// on it.
pub(crate) fn link_up(node: &Arc<Node>, link: &Arc<LinkHandle>, record: &FederationRecord) {
    if let Some(stream) = ensure_stream(node, record, Vec::new()) {
        stream.set_state(record.state);
        stream.link_up(link.clone());
    }
    node.inbound.notify(Input::LinkUp(link.clone()));
}

/// A link session ended.
pub(crate) fn link_down(node: &Node, link: &Arc<LinkHandle>) {
    if let Some(stream) = stream_to(node, &link.peer) {
        stream.link_down(link.clone());
    }
    node.inbound.notify(Input::LinkDown(link.clone()));
}

/// The federation with `peer` changed state.
pub(crate) fn state_changed(node: &Node, peer: &MeshId, state: FederationState) {
    if let Some(stream) = stream_to(node, peer) {
        stream.set_state(state);
    }
}

/// An acknowledgement or credit frame from the peer of `link`.
pub(crate) fn stream_frame(node: &Node, link: &LinkHandle, frame: &Frame) {
    let outcome = stream_to(node, &link.peer)
        .ok_or_else(|| "no stream to this peer".to_owned())
        .and_then(|s| s.peer_frame(frame));
    if let Err(e) = outcome {
        tracing::warn!(peer = %link.peer, frame = ?frame.ty, error = %e, "ignored a stream frame");
    }
}

/// A forward frame from the peer of `link`.
pub(crate) fn forward(node: &Node, link: &Arc<LinkHandle>, body: &[u8]) {
    match Forward::decode(body) {
        Ok(forward) => node.inbound.notify(Input::Forward {
            link: link.clone(),
            forward,
        }),
        Err(e) => tracing::warn!(peer = %link.peer, error = %e, "ignored a malformed forward"),
    }
}

/// A transfer frame from the peer of `link`: verified, opened, and handed to the receiving
/// task. A transfer that does not decode or verify is refused whole (nothing of it is
/// acknowledged, so the sender sends it again).
pub(crate) async fn receive(node: &Arc<Node>, link: &Arc<LinkHandle>, body: &[u8]) {
    match open_transfer(node, link, body).await {
        Ok(transmits) => {
            node.inbound
                .send(Input::Transmits {
                    link: link.clone(),
                    transmits,
                })
                .await;
        }
        Err(reason) => {
            node.metrics.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(federation = %link.federation_id, peer = %link.peer, %reason, "refused a transfer");
        }
    }
}

async fn open_transfer(
    node: &Node,
    link: &LinkHandle,
    body: &[u8],
) -> Result<Vec<Transmit<Arc<Arrived>>>, String> {
    if link.suspended.load(Ordering::Relaxed) {
        return Err("the federation is suspended".to_owned());
    }
    let transfer = Transfer::decode(body).map_err(|e| e.to_string())?;
    let Transfer {
        epoch,
        floor,
        items,
        envelopes,
    } = transfer;
    let opened: Vec<Opened> = match envelopes {
        Signed::Batch(bytes) => {
            let batch = SignedBatch::decode(&bytes).map_err(|e| e.to_string())?;
            if batch.len() != items.len() {
                return Err(format!(
                    "the transfer lists {} items and carries {} envelopes",
                    items.len(),
                    batch.len()
                ));
            }
            let cert = batch
                .envelopes()
                .first()
                .map(|e| e.header().certificate.clone())
                .ok_or("an empty batch")?;
            let key = messages::signer_key(link, &cert)?;
            let receipt = batch.verify(&key).map_err(|e| e.to_string())?;
            let signature = *receipt.signature().signature();
            let tree = receipt.tree();
            batch
                .into_envelopes()
                .into_iter()
                .enumerate()
                .map(|(i, env)| {
                    let proof = tree
                        .proof(i as u64)
                        .map_err(|e| e.to_string())
                        .and_then(|p| {
                            BatchProof::new(receipt.signature(), p).map_err(|e| e.to_string())
                        })?;
                    let mut hop = env.hop.clone();
                    let header = env.header().clone();
                    Ok(arrive(
                        node,
                        link,
                        header,
                        &mut hop,
                        signature,
                        Some(proof),
                        |o| env.open(o),
                    ))
                })
                .collect::<Result<_, String>>()?
        }
        Signed::Each(list) => {
            let signed = list
                .iter()
                .map(|bytes| {
                    let wire = WireEnvelope::decode(bytes).map_err(|e| e.to_string())?;
                    let key = messages::signer_key(link, &wire.header().certificate)?;
                    Ok((wire, key))
                })
                .collect::<Result<Vec<_>, String>>()?;
            let verified = on_every_core(signed, |(wire, key)| {
                wire.verify(&key).map_err(|e| e.to_string())?;
                Ok(wire)
            })
            .await?;
            verified
                .into_iter()
                .map(|wire| {
                    let mut hop = wire.hop.clone();
                    arrive(
                        node,
                        link,
                        wire.header().clone(),
                        &mut hop,
                        *wire.signature(),
                        None,
                        |o| wire.open(o),
                    )
                })
                .collect()
        }
    };
    Ok(items
        .into_iter()
        .zip(opened)
        .map(|(item, a)| {
            let header = &a.header;
            let message = Message::from_header(header, a.size, Arc::new(a.arrived));
            Transmit {
                epoch,
                seq: item.seq,
                floor,
                key_seq: item.key_seq,
                retransmission: item.retransmission,
                message,
            }
        })
        .collect())
}

/// The fewest items [`on_every_core`] hands another thread.
const MIN_SHARE: usize = 4;

/// Runs `f` over `items` on every core, keeping their order: the first share on this task, the
/// others on blocking threads. For per-message signatures, where one P-384 operation per
/// message is most of the work and a single task would leave the other cores idle.
pub(crate) async fn on_every_core<T, U>(
    mut items: Vec<T>,
    f: impl Fn(T) -> Result<U, String> + Clone + Send + 'static,
) -> Result<Vec<U>, String>
where
    T: Send + 'static,
    U: Send + 'static,
{
    // Asked once: each call reads cgroup files (it cost ~70 µs of latency per message).
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES
        .get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    // A share of a few items is not worth waking a thread for.
    let per = items.len().div_ceil(cores).max(MIN_SHARE);
    let mut others = Vec::new();
    while items.len() > per {
        let share = items.split_off(items.len() - per);
        let f = f.clone();
        others.push(tokio::task::spawn_blocking(move || {
            share
                .into_iter()
                .map(&f)
                .collect::<Result<Vec<U>, String>>()
        }));
    }
    let mut out = items
        .into_iter()
        .map(&f)
        .collect::<Result<Vec<U>, String>>()?;
    // Spawned from the end backwards: the last one holds what follows this task's share.
    for share in others.into_iter().rev() {
        out.extend(share.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

/// One verified envelope, checked and opened.
struct Opened {
    header: Header,
    size: usize,
    arrived: Arrived,
}

/// Checks one envelope whose signature verified, and opens it. A failed check is kept as the
/// reason it is refused (it is settled, not delivered).
fn arrive(
    node: &Node,
    link: &LinkHandle,
    header: Header,
    hop: &mut Hop,
    signature: Signature,
    batch: Option<BatchProof>,
    open: impl FnOnce(&meshfed_proto::crypto::Opener) -> Result<Vec<u8>, EnvelopeError>,
) -> Opened {
    let checked = messages::check(node, link, &header, hop).and_then(|opener| {
        let clear = open(&opener).map_err(|e| e.to_string())?;
        messages::check_payload(link, &header, &clear)?;
        Ok(clear)
    });
    let (size, delivery, refused) = match checked {
        Ok(clear) => {
            let size = clear.len();
            let envelope = Envelope {
                header: header.clone(),
                hop: hop.clone(),
                signature,
                message: Some(clear),
                batch,
            };
            (size, envelope.to_json_string(), None)
        }
        Err(reason) => (0, String::new(), Some(reason)),
    };
    let delivery = Arc::new(Delivery {
        source: header.source.mesh.clone(),
        topic: header.metadata.topic.clone(),
        qos: header.policy.qos,
        text: delivery.into(),
    });
    Opened {
        header,
        size,
        arrived: Arrived { delivery, refused },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        let pki = meshfed_testkit::TestPki::new("plant-a");
        let header = pki.node("gw1").envelope_header("supplier-b", "line-3/temp");
        Pending {
            header,
            payload: b"line 3 at 71.5 C".to_vec(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_every_core_keeps_the_order_and_reports_a_failure() {
        for n in [0usize, 1, 2, 3, 7, 100] {
            let out = on_every_core((0..n).collect(), |i| Ok(i * 2))
                .await
                .unwrap();
            assert_eq!(out, (0..n).map(|i| i * 2).collect::<Vec<_>>(), "{n} items");
        }
        let failed = on_every_core((0..100).collect(), |i: usize| {
            if i == 97 {
                Err(format!("item {i}"))
            } else {
                Ok(i)
            }
        })
        .await;
        assert_eq!(failed, Err("item 97".to_owned()));
    }

    #[test]
    fn stored_form_round_trips_and_refuses_truncation() {
        let mut p = pending();
        let bytes = encode_stored(&p);
        let back = decode_stored(&bytes).unwrap();
        // The certificate is the signer's at transmission, never a stored one.
        assert!(!p.header.certificate.is_empty());
        p.header.certificate.clear();
        assert_eq!(back.header, p.header);
        assert_eq!(back.payload, p.payload);
        assert_eq!(
            decode_stored(&bytes[..3]).unwrap_err(),
            "shorter than its length prefix"
        );
        let err = decode_stored(&bytes[..10]).unwrap_err();
        assert!(err.contains("announced"), "{err}");
        let mut bad = bytes.clone();
        bad[5] ^= 0xff;
        assert!(decode_stored(&bad).unwrap_err().starts_with("header: "));
    }
}
