//! The routing table: which neighbour a tunnel frame for a mesh goes to.
//!
//! Path vector ([`meshfed_proto::relay::routes`]): every live hop link (a TLS link, not a
//! tunnel) reaches its peer mesh directly; every neighbour broker's last advertisement adds the
//! meshes it reaches, each path refused if it holds this mesh already. Per destination the
//! lowest summed round trip wins (this side's link to the neighbour included), fewer hops
//! breaking ties; a destination moves off its current next hop only for a path clearly better
//! (by a quarter of its round trip, at least 1 ms), so that noisy round trips do not make it
//! flap (each move reorders a tunnel's frames, which ends the tunnel). The table is computed
//! when something changes (a link up or down, an advertisement) and at each heartbeat
//! interval, and read by every relayed frame. A broker then advertises it to every neighbour;
//! a gateway only listens, since gateways relay nothing. A link that goes down takes its
//! routes with it at once, so the next frame takes another path.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
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
    /// The table as last computed, by destination.
    current: RwLock<Arc<BTreeMap<MeshId, Route>>>,
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

/// A path of round trip `new_rtt` and `new_hops` hops replaces the current one of `old_rtt`
/// and `old_hops` only if clearly better.
fn clearly_better((new_rtt, new_hops): (u64, usize), (old_rtt, old_hops): (u64, usize)) -> bool {
    let margin = (old_rtt / 4).max(1_000);
    better(
        (new_rtt.saturating_add(margin), new_hops),
        (old_rtt, old_hops),
    )
}

/// Computes the table again: the best route to every mesh this node reaches, each staying on
/// its current next hop unless another is clearly better.
pub(crate) fn recompute(links: &Links) -> Arc<BTreeMap<MeshId, Route>> {
    let own = &links.ctx.id.mesh;
    let previous = links
        .routing
        .current
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut best: BTreeMap<MeshId, Route> = BTreeMap::new();
    let mut offer = |route: Route| {
        let cost = |r: &Route| (r.rtt_us, r.path.len());
        let incumbent = |r: &Route| {
            previous
                .get(&r.destination)
                .is_some_and(|p| p.next_hop.federation_id == r.next_hop.federation_id)
        };
        let wins = match best.get(&route.destination) {
            None => true,
            Some(b) if incumbent(b) => clearly_better(cost(&route), cost(b)),
            Some(b) if incumbent(&route) => !clearly_better(cost(b), cost(&route)),
            Some(b) => better(cost(&route), cost(b)),
        };
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
    let table = Arc::new(best);
    *links
        .routing
        .current
        .write()
        .unwrap_or_else(|e| e.into_inner()) = table.clone();
    table
}

/// The table, computed now, by destination.
pub(crate) fn table(links: &Links) -> Vec<Route> {
    recompute(links).values().cloned().collect()
}

/// The neighbour a frame for `destination` goes to, if any: from the table as computed, or
/// computed again if its next hop has gone down since.
pub(crate) fn next_hop(links: &Links, destination: &MeshId) -> Option<Arc<LinkPort>> {
    let current = links
        .routing
        .current
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(destination)
        .map(|r| r.next_hop.clone());
    match current {
        Some(port) if !port.is_closed() => Some(port),
        _ => recompute(links)
            .get(destination)
            .map(|r| r.next_hop.clone()),
    }
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

/// Computes the table when something changes and at each heartbeat interval; a broker then
/// tells every neighbour.
pub(crate) async fn routing_loop(links: Arc<Links>) {
    let every: Duration = links.ctx.config.federation.heartbeat_interval;
    loop {
        tokio::select! {
            () = links.ctx.cancel.cancelled() => return,
            () = links.routing.changed.notified() => {}
            () = links.ctx.clock.sleep(every) => {}
        }
        let table = recompute(&links);
        if links.ctx.config.node.role == Role::Broker {
            advertise(&links, &table).await;
        }
    }
}

async fn advertise(links: &Links, table: &BTreeMap<MeshId, Route>) {
    let own = links.ctx.id.mesh.clone();
    let routes: Vec<&Route> = table.values().collect();
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

#[cfg(test)]
mod tests {
    use super::clearly_better;

    #[test]
    fn a_route_moves_only_for_a_clearly_better_path() {
        // Noise: a little faster is not enough.
        assert!(!clearly_better((900, 2), (1_000, 2)));
        assert!(!clearly_better((400, 1), (1_200, 1)));
        // A quarter faster, at least a millisecond.
        assert!(clearly_better((2_000, 2), (8_000, 2)));
        assert!(clearly_better((100, 1), (1_200, 1)));
        // Within the margin, fewer hops do not move it either.
        assert!(!clearly_better((1_000, 1), (1_000, 2)));
    }
}
