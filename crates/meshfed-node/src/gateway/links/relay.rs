//! Relaying: the *route* stage for meshes that are not adjacent.
//!
//! A `Relay` frame carries one message of an end-to-end tunnel between two meshes
//! ([`meshfed_proto::relay`]). A broker passes it on by destination mesh, appending itself to
//! the route's path; it reads no payload (envelopes inside are sealed end to end) and cannot
//! forge or replay a tunnel frame (each is authenticated end to end, in sequence). A frame that
//! loops, runs out of ttl or has no way on goes back to its source as `Unreachable`. Only a
//! broker relays; a gateway is a tunnel's end.
//!
//! At a tunnel's ends this module runs the tunnel's key exchange and then a [`Link`] over it
//! ([`Link::tunnel`]): the federation handshake and the link session run inside, exactly as
//! over TLS, with the tunnel's peer certificate and exported binding in place of TLS's. Two
//! pumps join the link's pipe to the hop: one seals each frame the link writes and sends it
//! through the first hop, the other writes each opened frame into the pipe. The tunnel ends
//! when either end closes its link or the first hop goes down; the federation above resumes
//! over a new tunnel, as it does over a new TLS link.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use meshfed_proto::MeshId;
use meshfed_proto::frame::{DEFAULT_MAX_FRAME, Frame, FrameDecoder, FrameType};
use meshfed_proto::handshake::{Handshake, Role as HsRole, Target};
use meshfed_proto::relay::{
    Body, Ends, ExpectFinish, LeafKey, RelayFrame, Route, Tunnel, TunnelId, TunnelInitiator,
    TunnelResponder,
};
use meshfed_store::FederationRecord;
use meshfed_transport::Link;
use meshfed_trust::KeyPurpose;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};

use super::{LinkError, Links, drive, persist, responder_knowledge, start_session};
use crate::config::Role;
use crate::gateway::port::LinkPort;

/// How a stored federation reached through a broker names its first hop in `peer_addrs`.
pub(crate) const VIA: &str = "via:";
/// Frames of one tunnel waiting to be written into its pipe.
const INBOUND_QUEUE: usize = 1024;
/// The pipe between a tunnel's link and its pumps.
const PIPE: usize = 256 << 10;

/// The broker a federation reached through one is relayed by, from its stored addresses.
pub(crate) fn via(record: &FederationRecord) -> Option<MeshId> {
    record
        .peer_addrs
        .iter()
        .find_map(|a| a.strip_prefix(VIA))
        .and_then(|m| m.parse().ok())
}

/// The tunnels this node is an end of.
pub(crate) struct Tunnels {
    ends: Mutex<HashMap<TunnelId, End>>,
    /// Tunnels opened to this node, for [`answer_loop`] to run their handshakes (as the
    /// listener hands accepted connections on).
    accepted: mpsc::UnboundedSender<Accepted>,
}

/// A tunnel opened to this node, its link ready for the federation handshake.
pub(crate) struct Accepted {
    link: Link,
    peer: MeshId,
    /// The neighbour it came through.
    via: MeshId,
}

enum End {
    /// This side opened it and waits for the peer's accept.
    Opening(oneshot::Sender<Result<(meshfed_proto::relay::Accept, Vec<MeshId>), String>>),
    /// This side accepted it and waits for the opener's finish.
    Accepting {
        state: Box<ExpectFinish>,
        peer: MeshId,
        via: Arc<LinkPort>,
        relays: Vec<MeshId>,
    },
    /// Established: frames from the peer are opened and go to the link's pipe.
    Open {
        tunnel: Arc<Mutex<Tunnel>>,
        inbound: mpsc::Sender<Frame>,
    },
}

impl Tunnels {
    /// No tunnels yet; the receiver goes to [`answer_loop`].
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<Accepted>) {
        let (accepted, rx) = mpsc::unbounded_channel();
        let tunnels = Self {
            ends: Mutex::new(HashMap::new()),
            accepted,
        };
        (tunnels, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TunnelId, End>> {
        self.ends.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The peer leaf's key, read with the trust layer.
struct Leaves;

impl LeafKey for Leaves {
    fn leaf_key(&self, leaf: &[u8]) -> Result<meshfed_proto::crypto::VerifyingKey, String> {
        meshfed_trust::inspect_node_cert(leaf)
            .map_err(|e| e.to_string())?
            .public_key
            .verifying_key()
            .map_err(|e| e.to_string())
    }
}

/// What this node presents at a tunnel's end: its leaf, then its issuing CA (if any) and mesh
/// CA, as TLS presents them.
pub(super) fn own_chain(links: &Links) -> Vec<Vec<u8>> {
    let id = &links.ctx.id;
    let trust = id.trust();
    let mut chain = vec![id.cert().der().to_vec()];
    chain.extend(trust.issuing_der.clone());
    chain.extend(trust.bundle.cas().first().map(|c| c.der().to_vec()));
    chain
}

fn relay_frame(frame: &RelayFrame) -> Frame {
    Frame::new(FrameType::Relay, frame.encode())
}

/// A `Relay` frame from the hop `port`: passed on (a broker), or taken at this end.
pub(crate) async fn receive(links: &Arc<Links>, port: &Arc<LinkPort>, body: &[u8]) {
    let ctx = &links.ctx;
    let frame = match RelayFrame::decode(body) {
        Ok(f) => f,
        Err(e) => {
            ctx.metrics.refused(
                meshfed_proto::admission::Direction::Inbound,
                &meshfed_proto::admission::Refusal::Malformed(e.to_string()),
            );
            tracing::warn!(peer = %port.peer, error = %e, "ignored a malformed relay frame");
            return;
        }
    };
    if frame.route.destination == ctx.id.mesh {
        at_end(links, port, frame).await;
    } else if ctx.config.node.role == Role::Broker {
        pass_on(links, port, frame).await;
    } else {
        let reason = format!(
            "mesh {} reached gateway {}, which relays nothing (only brokers relay)",
            frame.route.destination, ctx.id.mesh
        );
        unreachable(links, port, &frame, reason).await;
    }
}

/// A broker passes `frame` on towards its destination mesh.
async fn pass_on(links: &Arc<Links>, from: &Arc<LinkPort>, mut frame: RelayFrame) {
    let own = links.ctx.id.mesh.clone();
    if let Some(reason) = links.witnesses.refused(&frame.tunnel) {
        unreachable(links, from, &frame, reason).await;
        return;
    }
    let terms = from.terms();
    let carried = super::witness::observe(links, &frame, terms.max_message_size);
    if let Some(rate) = terms.max_rate {
        super::witness::take_rate(links, &frame, from.mesh(), rate, carried.envelopes);
    }
    if let Some(reason) = links.witnesses.refused(&frame.tunnel) {
        unreachable(links, from, &frame, reason).await;
        return;
    }
    if let Err(dropped) = frame.route.forward(&own) {
        unreachable(links, from, &frame, dropped.to_string()).await;
        return;
    }
    let Some(next) = super::routing::next_hop(links, &frame.route.destination) else {
        let reason = format!(
            "broker {own} has no route to mesh {}",
            frame.route.destination
        );
        unreachable(links, from, &frame, reason).await;
        return;
    };
    if next.send(relay_frame(&frame)).await.is_err() {
        let reason = format!(
            "broker {own} lost its link to mesh {}",
            frame.route.destination
        );
        unreachable(links, from, &frame, reason).await;
        return;
    }
    links.ctx.metrics.relayed(next.mesh());
}

/// Tells `frame`'s source, back through `port`, that it could not be delivered; reports about
/// reports are only logged, so two relays cannot bounce one back and forth.
async fn unreachable(links: &Links, port: &LinkPort, frame: &RelayFrame, reason: String) {
    links.ctx.metrics.relay_dropped();
    tracing::warn!(
        tunnel = %frame.tunnel,
        source = %frame.route.source,
        destination = %frame.route.destination,
        %reason,
        "dropped a relay frame"
    );
    if matches!(frame.body, Body::Unreachable { .. } | Body::Close { .. }) {
        return;
    }
    let report = RelayFrame {
        tunnel: frame.tunnel,
        route: frame.route.reversed(&links.ctx.id.mesh),
        body: Body::unreachable(&reason),
    };
    let _ = port.send(relay_frame(&report)).await;
}

/// A frame of a tunnel this node is an end of.
async fn at_end(links: &Arc<Links>, port: &Arc<LinkPort>, frame: RelayFrame) {
    let id = frame.tunnel;
    let peer = frame.route.source.clone();
    let relays = frame.route.path;
    match frame.body {
        Body::Open(open) => {
            let ends = Ends {
                initiator: peer.clone(),
                responder: links.ctx.id.mesh.clone(),
            };
            let key = links.ctx.id.cert().key.clone();
            let accepted = TunnelResponder::accept(id, ends, &open, key, own_chain(links));
            match accepted {
                Ok((state, accept)) => {
                    links.tunnels.lock().insert(
                        id,
                        End::Accepting {
                            state: Box::new(state),
                            peer: peer.clone(),
                            via: port.clone(),
                            relays: relays.clone(),
                        },
                    );
                    let reply = RelayFrame {
                        tunnel: id,
                        route: Route::new(links.ctx.id.mesh.clone(), peer, Route::DEFAULT_TTL),
                        body: Body::Accept(accept),
                    };
                    let _ = port.send(relay_frame(&reply)).await;
                }
                Err(e) => {
                    let reason = format!("tunnel refused: {e}");
                    close(links, port, id, &peer, reason).await;
                }
            }
        }
        Body::Accept(accept) => {
            let opening = links.tunnels.lock().remove(&id);
            if let Some(End::Opening(reply)) = opening {
                let _ = reply.send(Ok((accept, relays)));
            }
        }
        Body::Finish(finish) => {
            let accepting = links.tunnels.lock().remove(&id);
            let Some(End::Accepting {
                state,
                peer,
                via,
                relays,
            }) = accepting
            else {
                return;
            };
            match state.finish(&finish, &Leaves) {
                Ok(tunnel) => {
                    let first_hop = via.mesh().clone();
                    match establish(links, id, (peer.clone(), relays), tunnel, via) {
                        Ok(link) => {
                            let accepted = Accepted {
                                link,
                                peer,
                                via: first_hop,
                            };
                            let _ = links.tunnels.accepted.send(accepted);
                        }
                        Err(e) => {
                            tracing::warn!(tunnel = %id, %peer, error = %e, "refused a tunnel");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(tunnel = %id, %peer, error = %e, "refused a tunnel's finish");
                    close(links, &via, id, &peer, format!("tunnel refused: {e}")).await;
                }
            }
        }
        Body::Data(sealed) => {
            let (opened, inbound) = {
                let ends = links.tunnels.lock();
                let Some(End::Open { tunnel, inbound }) = ends.get(&id) else {
                    return;
                };
                let opened = tunnel
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .open(&sealed);
                (opened, inbound.clone())
            };
            match opened {
                Ok(frame) => {
                    // Waits while the link is behind: back-pressure on the hop, as on a socket.
                    let _ = inbound.send(frame).await;
                }
                Err(e) => {
                    tracing::warn!(tunnel = %id, %peer, error = %e, "refused a tunnel frame; closing the tunnel");
                    close(links, port, id, &peer, format!("tunnel frame refused: {e}")).await;
                }
            }
        }
        Body::Unreachable { reason } | Body::Close { reason } => {
            match links.tunnels.lock().remove(&id) {
                Some(End::Opening(reply)) => {
                    let _ = reply.send(Err(reason));
                }
                Some(_) => {
                    tracing::info!(tunnel = %id, %peer, %reason, "the tunnel closed");
                }
                None => {}
            }
        }
    }
}

/// Tells the peer that tunnel `id` is closed, and forgets it.
async fn close(links: &Links, via: &LinkPort, id: TunnelId, peer: &MeshId, reason: String) {
    links.tunnels.lock().remove(&id);
    let frame = RelayFrame {
        tunnel: id,
        route: Route::new(links.ctx.id.mesh.clone(), peer.clone(), Route::DEFAULT_TTL),
        body: Body::close(&reason),
    };
    let _ = via.send(relay_frame(&frame)).await;
}

/// Opens a tunnel to `peer` through the first hop `via` and returns the link over it.
pub(crate) async fn open(
    links: &Arc<Links>,
    via: Arc<LinkPort>,
    peer: MeshId,
) -> Result<Link, LinkError> {
    let ctx = &links.ctx;
    let id = TunnelId::random().map_err(|e| LinkError::Tunnel(e.to_string()))?;
    let ends = Ends {
        initiator: ctx.id.mesh.clone(),
        responder: peer.clone(),
    };
    let (state, open) =
        TunnelInitiator::start(id, ends, ctx.id.cert().key.clone(), own_chain(links))
            .map_err(|e| LinkError::Tunnel(e.to_string()))?;
    let (tx, rx) = oneshot::channel();
    links.tunnels.lock().insert(id, End::Opening(tx));
    let route = Route::new(ctx.id.mesh.clone(), peer.clone(), Route::DEFAULT_TTL);
    let frame = RelayFrame {
        tunnel: id,
        route: route.clone(),
        body: Body::Open(open),
    };
    if via.send(relay_frame(&frame)).await.is_err() {
        links.tunnels.lock().remove(&id);
        return Err(LinkError::Closed("the tunnel's accept"));
    }
    let timeout = ctx.config.federation.handshake_timeout;
    let answered = tokio::select! {
        () = ctx.cancel.cancelled() => None,
        () = via.closed() => None,
        answered = tokio::time::timeout(timeout, rx) => Some(answered),
    };
    let (accept, relays) = match answered {
        Some(Ok(Ok(Ok(answer)))) => answer,
        Some(Ok(Ok(Err(reason)))) => {
            return Err(LinkError::Tunnel(format!(
                "mesh {peer} through {}: {reason}",
                via.mesh()
            )));
        }
        Some(Err(_)) => {
            links.tunnels.lock().remove(&id);
            return Err(LinkError::Tunnel(format!(
                "mesh {peer} did not answer through {} within {timeout:?}",
                via.mesh()
            )));
        }
        Some(Ok(Err(_))) | None => {
            links.tunnels.lock().remove(&id);
            return Err(LinkError::Closed("the tunnel's accept"));
        }
    };
    let (tunnel, finish) = state
        .accepted(&accept, &Leaves)
        .map_err(|e| LinkError::Tunnel(format!("mesh {peer} through {}: {e}", via.mesh())))?;
    let frame = RelayFrame {
        tunnel: id,
        route,
        body: Body::Finish(finish),
    };
    if via.send(relay_frame(&frame)).await.is_err() {
        return Err(LinkError::Closed("the tunnel's finish"));
    }
    establish(links, id, (peer, relays), tunnel, via)
}

/// Starts the pumps of an established tunnel and returns the link over it.
fn establish(
    links: &Arc<Links>,
    id: TunnelId,
    (peer, relays): (MeshId, Vec<MeshId>),
    tunnel: Tunnel,
    via: Arc<LinkPort>,
) -> Result<Link, LinkError> {
    let (link_io, pump_io) = tokio::io::duplex(PIPE);
    let chain = tunnel.peer_chain().to_vec();
    let link = Link::tunnel(link_io, chain, tunnel.binding(), relays, via.remote)?;
    if link.peer().mesh != peer {
        return Err(LinkError::Tunnel(format!(
            "the tunnel's far end presented a certificate of mesh {}, not of mesh {peer}",
            link.peer().mesh
        )));
    }
    let tunnel = Arc::new(Mutex::new(tunnel));
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
    links.tunnels.lock().insert(
        id,
        End::Open {
            tunnel: tunnel.clone(),
            inbound: tx,
        },
    );
    let (read, write) = tokio::io::split(pump_io);
    links.ctx.tracker.spawn(inbound_pump(rx, write));
    links
        .ctx
        .tracker
        .spawn(outbound_pump(links.clone(), id, peer, tunnel, via, read));
    Ok(link)
}

/// Writes the frames opened from the peer into the link's pipe; closes the pipe when the
/// tunnel is forgotten.
async fn inbound_pump(
    mut rx: mpsc::Receiver<Frame>,
    mut pipe: tokio::io::WriteHalf<tokio::io::DuplexStream>,
) {
    let mut buf = BytesMut::new();
    while let Some(frame) = rx.recv().await {
        frame.encode_into(&mut buf);
        while let Ok(more) = rx.try_recv() {
            more.encode_into(&mut buf);
        }
        if pipe.write_all_buf(&mut buf).await.is_err() {
            return;
        }
    }
    let _ = pipe.shutdown().await;
}

/// Seals each frame the link writes and sends it through the first hop, until the link
/// closes its end (the peer is told) or the hop goes down.
async fn outbound_pump(
    links: Arc<Links>,
    id: TunnelId,
    peer: MeshId,
    tunnel: Arc<Mutex<Tunnel>>,
    via: Arc<LinkPort>,
    mut pipe: tokio::io::ReadHalf<tokio::io::DuplexStream>,
) {
    let own = links.ctx.id.mesh.clone();
    // The link bounds what it writes by the agreement's maximum; the pipe trusts it.
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME.saturating_mul(4));
    let why = loop {
        let read = tokio::select! {
            () = via.closed() => break format!("the link to {} went down", via.mesh()),
            read = pipe.read_buf(decoder.buffer_mut()) => read,
        };
        match read {
            Ok(0) | Err(_) => {
                close(&links, &via, id, &peer, "closed by its end".to_owned()).await;
                return;
            }
            Ok(_) => {}
        }
        let mut failed = None;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let sealed = tunnel
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .seal(&frame);
                    let out = RelayFrame {
                        tunnel: id,
                        route: Route::new(own.clone(), peer.clone(), Route::DEFAULT_TTL),
                        body: Body::Data(sealed),
                    };
                    if via.send(relay_frame(&out)).await.is_err() {
                        failed = Some(format!("the link to {} went down", via.mesh()));
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(format!("the link wrote a bad frame: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = failed {
            break why;
        }
    };
    tracing::info!(tunnel = %id, %peer, reason = %why, "tunnel down");
    // Forgetting it drops the inbound queue: the pipe closes and the link above ends.
    links.tunnels.lock().remove(&id);
}

/// Answers the federation handshake in each tunnel opened to this node, until the node stops.
pub(crate) async fn answer_loop(
    links: Arc<Links>,
    mut accepted: mpsc::UnboundedReceiver<Accepted>,
) {
    loop {
        let next = tokio::select! {
            () = links.ctx.cancel.cancelled() => return,
            next = accepted.recv() => next,
        };
        let Some(accepted) = next else {
            return;
        };
        let links2 = links.clone();
        links.ctx.tracker.spawn(async move {
            let peer = accepted.peer.clone();
            if let Err(e) = answer(&links2, accepted).await {
                tracing::warn!(%peer, error = %e, "a federation through a tunnel failed");
            }
        });
    }
}

/// Answers the federation handshake the opener runs inside a tunnel it opened.
async fn answer(links: &Arc<Links>, accepted: Accepted) -> Result<(), LinkError> {
    let Accepted {
        mut link,
        peer,
        via,
    } = accepted;
    let knowledge = responder_knowledge(links).await?;
    let hs = Handshake::responder(
        links.ctx.local(KeyPurpose::ClientAuth),
        link.channel(),
        knowledge,
        links.ctx.now(),
    );
    let established = drive(links, &mut link, hs).await?;
    if established.peer.mesh != peer {
        return Err(LinkError::Tunnel(format!(
            "the tunnel's far end is mesh {}, and the handshake names mesh {}",
            peer, established.peer.mesh
        )));
    }
    let addrs = vec![format!("{VIA}{via}")];
    let record = persist(links, &established, HsRole::Responder, addrs).await?;
    let port = start_session(links, link, *established, &record).await?;
    tracing::info!(federation = %port.federation_id, peer = %port.peer, "federation link up through a tunnel");
    Ok(())
}

/// Runs the handshake for `target` through a tunnel to `peer` opened through broker `via`, a
/// neighbour.
pub(crate) async fn initiate(
    links: &Arc<Links>,
    via: &MeshId,
    peer: MeshId,
    target: Target,
) -> Result<(FederationRecord, Arc<LinkPort>), LinkError> {
    let first = links
        .ports()
        .into_iter()
        .find(|p| p.relays.is_empty() && p.mesh() == via);
    let Some(first) = first else {
        return Err(LinkError::Tunnel(format!(
            "this node has no live link to broker mesh {via}"
        )));
    };
    through(links, first, peer, target).await
}

/// Resumes a federation through a tunnel to `peer` along the best route the neighbours
/// advertise (another broker than `via`, the one it was joined through, when that one is
/// down or farther), else through `via` itself.
pub(crate) async fn resume(
    links: &Arc<Links>,
    via: &MeshId,
    peer: MeshId,
    target: Target,
) -> Result<(FederationRecord, Arc<LinkPort>), LinkError> {
    match super::routing::next_hop(links, &peer) {
        Some(first) if first.mesh() != &peer => through(links, first, peer, target).await,
        _ => initiate(links, via, peer, target).await,
    }
}

async fn through(
    links: &Arc<Links>,
    first: Arc<LinkPort>,
    peer: MeshId,
    target: Target,
) -> Result<(FederationRecord, Arc<LinkPort>), LinkError> {
    let via = vec![format!("{VIA}{}", first.mesh())];
    let link = open(links, first, peer).await?;
    let (record, port) = super::initiate(links, link, target, via.clone()).await?;
    if record.peer_addrs == via {
        return Ok((record, port));
    }
    // Resumed through another broker than before: the registry says which.
    let id = record.id.clone();
    let record = links
        .ctx
        .blocking(move |s| s.set_peer_addrs(&id, &via))
        .await
        .map_err(|e| LinkError::Store(e.to_string()))?;
    Ok((record, port))
}
