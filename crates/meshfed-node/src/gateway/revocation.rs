//! Revocation of node certificates (DESIGN.md §2, Revocation): this mesh's signed revocation
//! list and the lists received from partners, and what they refuse.
//!
//! - **Publishing.** [`revoke_node`] adds a node of this mesh (and the serials of the
//!   certificates this node knows it was issued) to this mesh's list, signs the next version with
//!   this node's key and chain `[node certificate, issuing CA]`, stores it and sends it on every
//!   live link. Every new link, either side, starts by sending the sender's current list
//!   ([`send_own`]), so a partner that was offline gets it when it reconnects.
//! - **Receiving.** [`receive`] verifies a partner's list against the bundle stored for it
//!   (`meshfed_trust::verify_statement`), refuses one of another mesh, one signed by a
//!   certificate it (or the stored list) revokes, and one that is not a successor of the stored
//!   list (lists only grow), stores it and acknowledges the version stored.
//! - **Enforcing.** A stored list takes effect at once: links whose peer certificate it revokes
//!   are closed with an error frame, every link's cache of verified signers is cleared, and from
//!   then on the handshake (`revoked::Verifier`, on accept and dial) and the signer check of
//!   transfers (`PeerTrust::signer_key`) refuse a revoked certificate. The lists are loaded at
//!   start, so all of this holds across restarts.
//!
//! A node entry revokes every certificate naming the node, but a stolen gateway that holds the
//! issuing CA key can still mint certificates for *other* node names of its mesh until the
//! issuing CA is rotated; revocation lists do not cover that.

use std::sync::Arc;
use std::time::SystemTime;

use meshfed_proto::MeshId;
use meshfed_proto::handshake::ErrorCode;
use meshfed_proto::revocation::{RevocationList, RevocationListError};
use meshfed_proto::session::{LinkSession, RevocationsAck, RevocationsBody};
use meshfed_proto::statement::StatementKind;
use meshfed_store::IssuedCert;
use meshfed_trust::{NodeIdentity, Signer, TrustBundle, inspect_node_cert};

use super::context::Context;
use super::error::chain;
use super::port::LinkPort;
use super::revoked::{ListView, RevokedCert, check_in};

/// Why `revoke-node` did not revoke.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RevokeError {
    /// The node is of another mesh: that mesh revokes its own nodes.
    #[error(
        "{node} is a node of mesh {mesh}, not of this mesh ({own}): only mesh {mesh} can revoke its nodes (run revoke-node on one of its gateways)"
    )]
    OtherMesh {
        /// The node named.
        node: NodeIdentity,
        /// Its mesh.
        mesh: MeshId,
        /// This node's mesh.
        own: MeshId,
    },
    /// The node named is this one.
    #[error("{0} is this gateway itself: revoke it from another gateway of the mesh")]
    Itself(NodeIdentity),
    /// The list cannot take another entry.
    #[error(transparent)]
    List(#[from] RevocationListError),
    /// Signing or storing failed.
    #[error("{0}")]
    Local(String),
}

/// Why a partner's list was not stored.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("it is mesh {found}'s list, sent on a link with mesh {peer}")]
    OtherMesh { found: MeshId, peer: MeshId },
    #[error("its signature is not trusted: {0}")]
    Untrusted(String),
    #[error("it is signed by a revoked certificate: {0}")]
    SignerRevoked(RevokedCert),
    #[error(transparent)]
    NotSuccessor(RevocationListError),
}

/// Records the node certificate `der` as one this node issued to itself, so that a later
/// revocation of this node name (from a copy of this store) can list its serial.
pub(crate) async fn record_issued(ctx: &Context, der: &[u8]) {
    let info = match inspect_node_cert(der) {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the node certificate to record its serial");
            return;
        }
    };
    let cert = IssuedCert {
        node: info.node,
        serial: info.serial,
        not_after: crate::clock::timestamp(info.not_after),
        issued: crate::clock::timestamp(info.not_before),
    };
    if let Err(e) = ctx.blocking(move |s| s.record_issued_cert(&cert)).await {
        tracing::warn!(error = %chain(&e), "cannot record the issued node certificate");
    }
}

/// Revokes `node` of this mesh: the next version of this mesh's list, signed, stored and sent
/// on every live link (`ports`). Returns the new list.
pub(crate) async fn revoke_node(
    ctx: &Context,
    ports: Vec<Arc<LinkPort>>,
    node: NodeIdentity,
) -> Result<RevocationList, RevokeError> {
    if node.mesh != ctx.id.mesh {
        return Err(RevokeError::OtherMesh {
            mesh: node.mesh.clone(),
            node,
            own: ctx.id.mesh.clone(),
        });
    }
    if node.node == ctx.id.node {
        return Err(RevokeError::Itself(node));
    }
    let revocations = &ctx.revocations;
    let _one_at_a_time = revocations.changing.lock().await;
    let now = ctx.now();
    let name = node.node.clone();
    let serials = ctx
        .blocking(move |s| s.issued_certs(&name))
        .await
        .map_err(|e| RevokeError::Local(format!("reading the issued certificates: {}", chain(&e))))?
        .into_iter()
        .map(|c| c.serial)
        .collect::<Vec<_>>();
    let current = revocations.held(&ctx.id.mesh).map_or_else(
        || RevocationList::empty(ctx.id.mesh.clone(), now),
        |h| h.body.list().clone(),
    );
    let next = current.revoke(&node.node, &serials, now)?;
    if current.version > 0
        && next.nodes.len() == current.nodes.len()
        && next.serials.len() == current.serials.len()
    {
        // Revoked already: no change, no new version.
        return Ok(current);
    }
    publish(ctx, &ports, next, now).await?;
    tracing::info!(node = %node, "revoked a node of this mesh; sent the list to every partner");
    Ok(current_list(ctx))
}

/// Withdraws delegation `id`, which this mesh issued: the next version of this mesh's list,
/// signed, stored and sent on every live link (`ports`), where relays stop presenting it and
/// receivers stop accepting it. Returns the new list.
pub(crate) async fn revoke_delegation(
    ctx: &Context,
    ports: Vec<Arc<LinkPort>>,
    id: &str,
) -> Result<RevocationList, RevokeError> {
    let revocations = &ctx.revocations;
    let _one_at_a_time = revocations.changing.lock().await;
    let now = ctx.now();
    let current = revocations.held(&ctx.id.mesh).map_or_else(
        || RevocationList::empty(ctx.id.mesh.clone(), now),
        |h| h.body.list().clone(),
    );
    if current.revokes_delegation(id) {
        return Ok(current);
    }
    let next = current.revoke_delegation(id, now)?;
    publish(ctx, &ports, next, now).await?;
    tracing::info!(
        delegation = id,
        "revoked a delegation of this mesh; sent the list to every partner"
    );
    Ok(current_list(ctx))
}

/// This mesh's list as installed.
fn current_list(ctx: &Context) -> RevocationList {
    ctx.revocations.held(&ctx.id.mesh).map_or_else(
        || RevocationList::empty(ctx.id.mesh.clone(), ctx.now()),
        |h| h.body.list().clone(),
    )
}

/// Signs `next` (this mesh's list) with this node's key and chain, stores it, puts it in force
/// and sends it on every live link. The caller holds `revocations.changing`.
async fn publish(
    ctx: &Context,
    ports: &[Arc<LinkPort>],
    next: RevocationList,
    now: meshfed_proto::envelope::Timestamp,
) -> Result<(), RevokeError> {
    let revocations = &ctx.revocations;
    let cert = ctx.id.cert();
    let mut chain_der = vec![cert.der().to_vec()];
    chain_der.extend(ctx.id.trust().issuing_der.iter().cloned());
    let statement = meshfed_trust::sign_statement(
        StatementKind::Revocations,
        next.encode(),
        &cert.key,
        chain_der,
    )
    .map_err(|e| RevokeError::Local(format!("signing the revocation list: {e}")))?;
    let body = RevocationsBody::new(statement)
        .map_err(|e| RevokeError::Local(format!("the signed revocation list: {e}")))?;
    let (mesh, version, bytes) = (next.mesh.clone(), next.version, body.encode());
    let stored = ctx
        .blocking(move |s| s.put_revocations(&mesh, version, &bytes, now))
        .await
        .map_err(|e| RevokeError::Local(format!("storing the revocation list: {}", chain(&e))))?;
    if !stored {
        return Err(RevokeError::Local(format!(
            "the store holds a newer revocation list than version {version}"
        )));
    }
    revocations.install(body.clone(), now);
    tracing::info!(
        version,
        "signed and stored this mesh's revocation list; sending it to every partner"
    );
    for port in ports {
        let _ = port.command(|s| s.send_revocations(body.clone()));
    }
    enforce(ctx, ports);
    Ok(())
}

/// Sends this mesh's current list, if it has one, on a new link with mesh `peer`; and, as a
/// trusted intermediary, the lists of the meshes whose messages this mesh relays to `peer`.
pub(crate) fn send_own(ctx: &Context, peer: &MeshId, session: &mut LinkSession) {
    if let Some(held) = ctx.revocations.held(&ctx.id.mesh) {
        let _ = session.send_revocations(held.body);
    }
    for origin in ctx.delegations.relayed_to(peer, &ctx.id.mesh) {
        if let Some(held) = ctx.revocations.held(&origin) {
            let _ = session.send_revocations(held.body);
        }
    }
}

/// Handles a partner's list that arrived on `port`: verified, checked against the stored one,
/// stored, acknowledged and enforced on every link (`ports`). A list that is refused is logged
/// and counted, and the link stays up.
pub(crate) async fn receive(
    ctx: &Context,
    port: &LinkPort,
    ports: Vec<Arc<LinkPort>>,
    body: RevocationsBody,
) {
    let list = body.list().clone();
    if &list.mesh != port.mesh() {
        relayed_list(ctx, port, &body);
        return;
    }
    // Checked and stored as one step, so that two lists arriving at once cannot both pass
    // against the same stored one.
    let _one_at_a_time = ctx.revocations.changing.lock().await;
    let stored = ctx.revocations.held(port.mesh());
    let checked = check_received(
        port.mesh(),
        &port.trust.bundle(),
        &body,
        stored.as_ref().map(|h| h.body.list()),
        ctx.clock.wall(),
    );
    let ack = |version| {
        let _ = port.command(|s| {
            s.acknowledge_revocations(RevocationsAck {
                mesh: list.mesh.clone(),
                version,
            })
        });
    };
    match checked {
        Ok(()) => {}
        // Sent again on a new link, or an older one: the stored list stands.
        Err(Refused::NotSuccessor(RevocationListError::NotNewer { stored, .. })) => {
            ack(stored);
            return;
        }
        Err(e) => {
            ctx.metrics.revocation_list_refused();
            tracing::warn!(federation = %port.federation_id, peer = %port.peer, version = list.version, error = %e, "refused the peer's revocation list; keeping the stored one");
            audit_list(ctx, port, &list, Err(e.to_string()));
            return;
        }
    }
    let now = ctx.now();
    let (mesh, version, bytes) = (list.mesh.clone(), list.version, body.encode());
    match ctx
        .blocking(move |s| s.put_revocations(&mesh, version, &bytes, now))
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(peer = %port.peer, version, "a newer revocation list is stored already");
            return;
        }
        Err(e) => {
            tracing::error!(peer = %port.peer, version, error = %chain(&e), "cannot store the peer's revocation list");
            return;
        }
    }
    ctx.revocations.install(body.clone(), now);
    tracing::info!(federation = %port.federation_id, peer = %port.peer, version, nodes = list.nodes.len(), serials = list.serials.len(), "stored the peer mesh's revocation list");
    audit_list(ctx, port, &list, Ok(()));
    ack(version);
    enforce(ctx, &ports);
    pass_on(ctx, port.mesh(), &ports, &body);
}

/// Records a partner's revocation list in the federation's log: the serials and nodes it
/// names, and whether it was taken.
fn audit_list(
    ctx: &Context,
    port: &LinkPort,
    list: &meshfed_proto::revocation::RevocationList,
    outcome: Result<(), String>,
) {
    use meshfed_audit::record::{Event, Text};
    let serials = (list
        .serials
        .iter()
        .map(|s| Text::new(hex::encode(&s.serial))))
    .chain(
        list.nodes
            .iter()
            .map(|n| Text::new(format!("node:{}", n.node))),
    )
    .take(meshfed_audit::record::MAX_SERIALS)
    .collect();
    let (accepted, reason) = match outcome {
        Ok(()) => (true, "stored and in force".to_owned()),
        Err(e) => (false, e),
    };
    ctx.audit.federation(
        &port.federation_id,
        Event::Revocation {
            mesh: list.mesh.clone(),
            number: list.version,
            serials,
            accepted,
            reason: Text::new(reason),
        },
    );
}

/// As a trusted intermediary: sends partner `origin`'s new list on to the partners this mesh
/// relays `origin`'s messages to (the audiences of the delegations it holds from `origin`), so
/// that a withdrawn delegation reaches them within a heartbeat interval too.
fn pass_on(ctx: &Context, origin: &MeshId, ports: &[Arc<LinkPort>], body: &RevocationsBody) {
    for port in ports.iter().filter(|p| {
        p.mesh() != origin
            && ctx
                .delegations
                .relayed_to(p.mesh(), &ctx.id.mesh)
                .contains(origin)
    }) {
        let _ = port.command(|s| s.send_revocations(body.clone()));
        tracing::debug!(peer = %port.peer, mesh = %origin, version = body.list().version, "passed a relayed mesh's revocation list on");
    }
}

/// A list of another mesh than the peer's, which the peer passes on as the relay of that mesh's
/// messages, or of an intermediate issuer in the chains it presents: taken (see
/// [`take_relayed`]) when a transit rule lets messages through this peer and this node has
/// accepted that mesh's CAs with one of them (kept across restarts); otherwise ignored — the
/// next relayed message carries the origin's list anyway.
fn relayed_list(ctx: &Context, port: &LinkPort, body: &RevocationsBody) {
    let origin = &body.list().mesh;
    let via = port.mesh();
    // The origin of a transit rule through this peer, or an intermediate issuer of a chain
    // this peer presented (whose CAs were accepted with it).
    let ruled = ctx.policy().transits.iter().any(|r| &r.via == via);
    let Some(bundle) = ctx.delegations.origin_bundle(origin).filter(|_| ruled) else {
        tracing::debug!(peer = %port.peer, mesh = %origin, "ignored a revocation list of a mesh this node takes no relayed messages of");
        return;
    };
    if let Err(e) = take_relayed(ctx, origin, &bundle, &body.statement().encode()) {
        ctx.metrics.revocation_list_refused();
        tracing::warn!(peer = %port.peer, mesh = %origin, error = %e, "refused a relayed mesh's revocation list");
    }
}

/// Takes mesh `origin`'s signed list as a trusted intermediary presented it with a message it
/// relays from that mesh (`encoded`, a [`RevocationsBody`]), checked against `bundle` (the
/// origin's CAs, as the transit check accepted them): when it is newer than the list held, it
/// is put in force at once and stored (so it holds across restarts), and the delegations it
/// withdraws are refused from then on. An older one changes nothing; one that does not verify
/// is an error.
pub(crate) fn take_relayed(
    ctx: &Context,
    origin: &MeshId,
    bundle: &TrustBundle,
    encoded: &[u8],
) -> Result<(), String> {
    let statement =
        meshfed_proto::statement::SignedStatement::decode(encoded).map_err(|e| e.to_string())?;
    let body = RevocationsBody::new(statement).map_err(|e| e.to_string())?;
    let held = ctx.revocations.held(origin);
    if held
        .as_ref()
        .is_some_and(|h| h.body.list().version >= body.list().version)
    {
        return Ok(());
    }
    // One change at a time; one in progress means this list (or a newer one) is being taken.
    let Ok(_one_at_a_time) = ctx.revocations.changing.try_lock() else {
        return Ok(());
    };
    check_received(
        origin,
        bundle,
        &body,
        held.as_ref().map(|h| h.body.list()),
        ctx.clock.wall(),
    )
    .map_err(|e| e.to_string())?;
    let now = ctx.now();
    let (mesh, version, bytes) = (origin.clone(), body.list().version, body.encode());
    ctx.revocations.install(body, now);
    tracing::info!(mesh = %mesh, version, "took the origin mesh's revocation list from a relay");
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = store.put_revocations(&mesh, version, &bytes, now) {
            tracing::error!(%mesh, version, error = %chain(&e), "cannot store a relayed revocation list; it holds until the gateway restarts");
        }
    });
    Ok(())
}

/// Whether `body`, arriving from mesh `peer` whose stored bundle is `bundle`, may replace the
/// `stored` list at `now`.
fn check_received(
    peer: &MeshId,
    bundle: &TrustBundle,
    body: &RevocationsBody,
    stored: Option<&RevocationList>,
    now: SystemTime,
) -> Result<(), Refused> {
    let list = body.list();
    if &list.mesh != peer {
        return Err(Refused::OtherMesh {
            found: list.mesh.clone(),
            peer: peer.clone(),
        });
    }
    if let Some(stored) = stored {
        stored
            .check_successor(list)
            .map_err(Refused::NotSuccessor)?;
    }
    let signer = meshfed_trust::verify_statement(bundle, body.statement(), now)
        .map_err(|e| Refused::Untrusted(chain(&e)))?;
    if let Signer::Node(info) = signer {
        if info.mesh != list.mesh {
            return Err(Refused::Untrusted(format!(
                "signed by a node of mesh {}",
                info.mesh
            )));
        }
        check_in(list, &info).map_err(Refused::SignerRevoked)?;
        if let Some(stored) = stored {
            check_in(stored, &info).map_err(Refused::SignerRevoked)?;
        }
    }
    Ok(())
}

/// Applies the stored lists to the live links: each link whose peer certificate is revoked is
/// closed with an error frame; every link's verified signers are forgotten, to be checked again.
fn enforce(ctx: &Context, ports: &[Arc<LinkPort>]) {
    for port in ports {
        port.trust.forget_signers();
        let Some(leaf) = port.trust.leaf() else {
            continue;
        };
        if let Err(revoked) = ctx.revocations.check(leaf) {
            tracing::warn!(federation = %port.federation_id, peer = %port.peer, reason = %revoked, "closing a link whose peer certificate is revoked");
            ctx.metrics.revoked_link_closed();
            let reason = revoked.to_string();
            let _ = port.command(|s| s.close_with_error(ErrorCode::UntrustedPeer, &reason));
        }
    }
}

/// The revocation lists as the API shows them.
#[derive(Debug, Clone)]
pub(crate) struct RevocationsStatus {
    /// This node's mesh.
    pub(crate) mesh: MeshId,
    /// This mesh's own list, if it revoked anything.
    pub(crate) own: Option<ListView>,
    /// The lists received from partners, by mesh.
    pub(crate) partners: Vec<ListView>,
}

impl super::GatewayHandle {
    /// Revokes `node` of this mesh and sends the new list to every partner (`revoke-node`).
    pub(crate) async fn revoke_node(
        &self,
        node: NodeIdentity,
    ) -> Result<RevocationList, RevokeError> {
        revoke_node(&self.0.ctx, self.0.links.ports(), node).await
    }

    /// Withdraws delegation `id` of this mesh and sends the new list to every partner.
    pub(crate) async fn revoke_delegation_list(
        &self,
        id: &str,
    ) -> Result<RevocationList, RevokeError> {
        revoke_delegation(&self.0.ctx, self.0.links.ports(), id).await
    }

    /// This mesh's list and the partners' lists.
    pub(crate) fn revocations(&self) -> RevocationsStatus {
        let ctx = &self.0.ctx;
        let (own, partners): (Vec<ListView>, Vec<ListView>) = ctx
            .revocations
            .views()
            .into_iter()
            .partition(|v| v.list.mesh == ctx.id.mesh);
        RevocationsStatus {
            mesh: ctx.id.mesh.clone(),
            own: own.into_iter().next(),
            partners,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshfed_proto::NodeName;
    use meshfed_proto::crypto::SigningKey;
    use meshfed_proto::envelope::Timestamp;
    use meshfed_trust::{IssuingCa, MeshCa, P384PublicKey};

    use super::*;

    struct Mesh {
        root: MeshCa,
        issuing: IssuingCa,
    }

    /// A node of a mesh: its key and chain `[node cert, issuing CA]`.
    struct Node {
        key: SigningKey,
        chain: Vec<Vec<u8>>,
    }

    fn mesh(name: &str, now: SystemTime) -> Mesh {
        let root =
            MeshCa::generate(&name.parse().unwrap(), now, Duration::from_secs(3600)).unwrap();
        let issuing = root
            .issue_issuing_ca(now, Duration::from_secs(3000))
            .unwrap();
        Mesh { root, issuing }
    }

    fn node(m: &Mesh, name: &str, now: SystemTime) -> Node {
        let key = SigningKey::generate().unwrap();
        let cert = m
            .issuing
            .issue_node_cert(
                &name.parse().unwrap(),
                &P384PublicKey::of(&key),
                now,
                Duration::from_secs(600),
            )
            .unwrap();
        Node {
            key,
            chain: vec![cert.der().to_vec(), m.issuing.cert_der().to_vec()],
        }
    }

    fn revoking(mesh: &str, nodes: &[&str]) -> RevocationList {
        let mut list = RevocationList::empty(mesh.parse().unwrap(), Timestamp(1));
        for n in nodes {
            list = list
                .revoke(&n.parse::<NodeName>().unwrap(), &[], Timestamp(2))
                .unwrap();
        }
        list
    }

    fn signed(list: &RevocationList, by: &Node) -> RevocationsBody {
        let statement = meshfed_trust::sign_statement(
            StatementKind::Revocations,
            list.encode(),
            &by.key,
            by.chain.clone(),
        )
        .unwrap();
        RevocationsBody::new(statement).unwrap()
    }

    #[test]
    fn a_list_signed_by_a_node_or_the_ca_of_the_peer_mesh_is_accepted() {
        let now = SystemTime::now();
        let a = mesh("plant-a", now);
        let gw1 = node(&a, "gw1", now);
        let peer = "plant-a".parse().unwrap();
        let bundle = a.root.trust_bundle();
        let v1 = revoking("plant-a", &["gw2"]);
        assert!(check_received(&peer, bundle, &signed(&v1, &gw1), None, now).is_ok());
        let by_ca = RevocationsBody::new(
            meshfed_trust::sign_statement(
                StatementKind::Revocations,
                v1.encode(),
                a.root.key(),
                vec![a.root.cert_der().to_vec()],
            )
            .unwrap(),
        )
        .unwrap();
        assert!(check_received(&peer, bundle, &by_ca, None, now).is_ok());
    }

    #[test]
    fn another_meshs_list_or_signer_is_refused() {
        let now = SystemTime::now();
        let a = mesh("plant-a", now);
        let b = mesh("supplier-b", now);
        let peer: MeshId = "plant-a".parse().unwrap();
        let list_of_b = signed(&revoking("supplier-b", &["x"]), &node(&b, "b1", now));
        let err = check_received(&peer, a.root.trust_bundle(), &list_of_b, None, now).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is mesh supplier-b's list, sent on a link with mesh plant-a"
        );
        // plant-a's list, signed by a node of supplier-b.
        let forged = signed(&revoking("plant-a", &["gw1"]), &node(&b, "b1", now));
        let err = check_received(&peer, a.root.trust_bundle(), &forged, None, now).unwrap_err();
        assert!(matches!(err, Refused::Untrusted(_)), "{err}");
    }

    #[test]
    fn a_list_signed_by_a_revoked_node_is_refused() {
        let now = SystemTime::now();
        let a = mesh("plant-a", now);
        let gw2 = node(&a, "gw2", now);
        let peer: MeshId = "plant-a".parse().unwrap();
        let bundle = a.root.trust_bundle();
        // gw2 signing a list that revokes itself (and so would look legitimate).
        let own = signed(&revoking("plant-a", &["gw2", "gw1"]), &gw2);
        let err = check_received(&peer, bundle, &own, None, now).unwrap_err();
        assert!(matches!(err, Refused::SignerRevoked(_)), "{err}");
        // gw2, revoked by the stored list, signs a successor that keeps every entry.
        let stored = revoking("plant-a", &["gw2"]);
        let next = stored
            .revoke(&"gw3".parse().unwrap(), &[], Timestamp(3))
            .unwrap();
        let err =
            check_received(&peer, bundle, &signed(&next, &gw2), Some(&stored), now).unwrap_err();
        assert!(
            err.to_string().contains("the certificate of plant-a/gw2"),
            "{err}"
        );
    }

    #[test]
    fn a_list_that_is_not_newer_or_drops_entries_is_refused() {
        let now = SystemTime::now();
        let a = mesh("plant-a", now);
        let gw1 = node(&a, "gw1", now);
        let peer: MeshId = "plant-a".parse().unwrap();
        let bundle = a.root.trust_bundle();
        let stored = revoking("plant-a", &["gw2", "gw3"]);
        let same = signed(&stored, &gw1);
        assert!(matches!(
            check_received(&peer, bundle, &same, Some(&stored), now),
            Err(Refused::NotSuccessor(RevocationListError::NotNewer {
                stored: 2,
                offered: 2
            }))
        ));
        let mut shrunk = revoking("plant-a", &["gw2"]);
        shrunk.version = 3;
        let err =
            check_received(&peer, bundle, &signed(&shrunk, &gw1), Some(&stored), now).unwrap_err();
        assert_eq!(
            err.to_string(),
            "revocation list version 3 drops node gw3, which version 2 revoked"
        );
    }
}
