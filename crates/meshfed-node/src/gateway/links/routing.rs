//! The routing table: which neighbour a tunnel frame for a mesh goes to.
//!
//! Path vector ([`meshfed_proto::relay::routes`]): every live hop link (a TLS link, not a
//! tunnel) reaches its peer mesh directly; every neighbour broker's last advertisement adds the
//! meshes it reaches, each path refused if it holds this mesh already. Per destination the
//! lowest summed round trip wins (this side's link to the neighbour included), fewer hops
//! breaking ties. A broker advertises its table to every neighbour when it changes (a link up
//! or down, an advertisement that changes it) and at each heartbeat interval (round trips
//! change); a gateway only listens, since gateways relay nothing. A link that goes down takes
//! its routes with it at once, so the next frame takes another path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::relay::routes::{Advertisement, Reach, better};
use meshfed_proto::{FederationId, MeshId};
use tokio::sync::Notify;

use super::Links;
use crate::config::Role;
use crate::gateway::port::LinkPort;

/// One destination of the table.
#[derive(Clone)]
pub(crate) struct Route {
    /// The mesh reached.
    pub(crate) destination: MeshId,
    /// The neighbour frames for it go to.
    pub(crate) next_hop: Arc<LinkPort>,
    /// The meshes a frame crosses from the neighbour (first) to the destination (last).
    pub(crate) path: Vec<MeshId>,
    /// The summed round trip of the path, this side's link included, in microseconds.
    pub(crate) rtt_us: u64,
}

/// What the neighbours advertised, and when to advertise again.
#[derive(Default)]
pub(crate) struct Routing {
    /// Each hop federation's last advertisement.
    heard: Mutex<HashMap<FederationId, Vec<Reach>>>,
    /// What this broker last advertised on each hop federation.
    told: Mutex<HashMap<FederationId, Vec<u8>>>,
    /// Wakes the advertiser: the table may have changed.
    changed: Notify,
}

impl Routing {
    /// The topology changed (a link up or down): a broker advertises again.
    pub(crate) fn changed(&self) {
        self.changed.notify_one();
    }

    /// A link went down: its advertisement no longer counts.
    pub(crate) fn forget(&self, federation: &FederationId) {
        lock(&self.heard).remove(federation);
        lock(&self.told).remove(federation);
        self.changed();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The hop links: live sessions over TLS (not tunnels).
fn hops(links: &Links) -> Vec<Arc<LinkPort>> {
    links
        .ports()
        .into_iter()
        .filter(|p| p.relays.is_empty())
        .collect()
}

fn rtt_us(links: &Links, port: &LinkPort) -> u64 {
    port.status(&links.ctx.clock)
        .rtt
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The table: the best route to every mesh this node reaches, by destination.
pub(crate) fn table(links: &Links) -> Vec<Route> {
    let own = &links.ctx.id.mesh;
    let mut best: HashMap<MeshId, Route> = HashMap::new();
    let mut offer = |route: Route| {
        let wins = best
            .get(&route.destination)
            .is_none_or(|b| better((route.rtt_us, route.path.len()), (b.rtt_us, b.path.len())));
        if wins {
            best.insert(route.destination.clone(), route);
        }
    };
    let heard = lock(&links.routing.heard).clone();
    for port in hops(links) {
        let link = rtt_us(links, &port);
        offer(Route {
            destination: port.mesh().clone(),
            next_hop: port.clone(),
            path: vec![port.mesh().clone()],
            rtt_us: link,
        });
        for reach in heard.get(&port.federation_id).into_iter().flatten() {
            let usable = reach.path.first() == Some(port.mesh())
                && !reach.path.contains(own)
                && reach.destination != *own;
            if usable {
                offer(Route {
                    destination: reach.destination.clone(),
                    next_hop: port.clone(),
                    path: reach.path.clone(),
                    rtt_us: link.saturating_add(reach.rtt_us),
                });
            }
        }
    }
    let mut routes: Vec<Route> = best.into_values().collect();
    routes.sort_by(|a, b| a.destination.cmp(&b.destination));
    routes
}

/// The neighbour a frame for `destination` goes to, if any.
pub(crate) fn next_hop(links: &Links, destination: &MeshId) -> Option<Arc<LinkPort>> {
    table(links)
        .into_iter()
        .find(|r| &r.destination == destination)
        .map(|r| r.next_hop)
}

/// A neighbour's advertisement, from the hop link `port`.
pub(crate) fn receive(links: &Links, port: &LinkPort, body: &[u8]) {
    if !port.relays.is_empty() {
        tracing::warn!(peer = %port.peer, "ignored a route advertisement inside a tunnel");
        return;
    }
    match Advertisement::decode(body) {
        Ok(ad) => {
            let before = lock(&links.routing.heard).insert(port.federation_id.clone(), ad.routes);
            tracing::debug!(peer = %port.peer, replaced = before.is_some(), "route advertisement");
            links.routing.changed();
        }
        Err(e) => {
            tracing::warn!(peer = %port.peer, error = %e, "ignored a malformed route advertisement");
        }
    }
}

/// A broker's advertiser: tells every neighbour its table when it changes, and at each
/// heartbeat interval.
pub(crate) async fn advertise_loop(links: Arc<Links>) {
    if links.ctx.config.node.role != Role::Broker {
        return;
    }
    let every: Duration = links.ctx.config.federation.heartbeat_interval;
    loop {
        tokio::select! {
            () = links.ctx.cancel.cancelled() => return,
            () = links.routing.changed.notified() => {}
            () = links.ctx.clock.sleep(every) => {}
        }
        advertise(&links).await;
    }
}

async fn advertise(links: &Links) {
    let own = links.ctx.id.mesh.clone();
    let routes = table(links);
    for port in hops(links) {
        let ad = Advertisement {
            routes: routes
                .iter()
                // Split horizon: a neighbour is not told paths through itself.
                .filter(|r| !r.path.contains(port.mesh()))
                .map(|r| Reach {
                    destination: r.destination.clone(),
                    path: std::iter::once(own.clone())
                        .chain(r.path.iter().cloned())
                        .collect(),
                    rtt_us: r.rtt_us,
                })
                .collect(),
        };
        let body = ad.encode();
        let unchanged = lock(&links.routing.told).get(&port.federation_id) == Some(&body);
        if unchanged {
            continue;
        }
        if port
            .send(Frame::new(FrameType::RouteAdvertisement, body.clone()))
            .await
            .is_ok()
        {
            lock(&links.routing.told).insert(port.federation_id.clone(), body);
        }
    }
}
