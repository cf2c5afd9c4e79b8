//! The gateway role: one per mesh (or several for redundancy). Its federation side accepts and
//! dials mutual-TLS links, drives the handshake over them and keeps each federation's link
//! alive; its local side is what the admin and messaging API (and the connectors, `crate::connectors`) reach
//! through a [`GatewayHandle`].
//!
//! The data path runs one way through stages, each a module that owns its state:
//!
//! ```text
//! local side ─► submit ─► route ─► stream ─► link            (sending)
//! link ─► open ─► inbox ─► local (live and durable subscribers)   (receiving)
//! ```
//!
//! `submit` checks a message against the agreement ([`meshfed_proto::admission`]) and wraps
//! it; `route` picks its federation's `stream`, which owns the outbox and journals, seals,
//! signs and sends; `links` accepts, dials and drives each link around the core's link
//! session; `open` verifies, decrypts and checks what arrives with the same admission checks;
//! `inbox` orders, deduplicates and journals; `local` hands it to subscribers. Below them,
//! `port` is an established link as the stages see it and `context` the services they share
//! (identity, configuration, store, journal, clock, metrics); `interest` is what each side of
//! a link wants of qos 0 messages. `federations` invites, joins and
//! applies lifecycle operations. Start at [`start`].

pub(crate) mod context;
pub(crate) mod cores;
pub(crate) mod delegated;
pub(crate) mod delegations;
pub(crate) mod directory;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod federations;
pub(crate) mod guard;
pub(crate) mod guarded;
pub(crate) mod identity;
pub(crate) mod inbox;
pub(crate) mod interest;
pub(crate) mod links;
pub(crate) mod local;
pub(crate) mod open;
pub(crate) mod pace;
pub(crate) mod pending;
pub(crate) mod port;
pub(crate) mod relaying;
pub(crate) mod retention;
pub(crate) mod revocation;
pub(crate) mod revoked;
pub(crate) mod room;
pub(crate) mod route;
pub(crate) mod stats;
pub(crate) mod stream;
pub(crate) mod submit;
mod tokens;
pub(crate) mod transit;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshfed_audit::record::CredentialAction;
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::envelope::export::Form;
use meshfed_proto::{FederationId, MeshId, TopicPattern};
use meshfed_store::journal::{DeadLetter, SubscriptionName};
use meshfed_store::{FederationRecord, Journal, JournalConfig, Store};
use meshfed_transport::Listener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::door::{self, Door};
use crate::metrics::{self, Metrics};
use context::Context;
use federations::{FederationError, Federations, Operation};
use inbox::Inbound;
use links::Links;
use local::Local;
use route::Routes;

pub(crate) use error::bind_reason;
pub use error::{GatewayError, Listening};
pub use federations::PolicyError;
pub use federations::{DEFAULT_INVITATION_TTL, MAX_INVITATION_TTL};
pub(crate) use links::relay::via as relayed_via;
pub use local::Delivery;
pub use meshfed_proto::envelope::Sender;
pub use port::{Health, LinkStatus};
pub use submit::{Outgoing, SendError};

/// How long the readiness check waits for the store's write lock.
const STORE_CHECK_WAIT: Duration = Duration::from_secs(1);

/// The file where a running gateway records the addresses it actually listens on.
pub fn runtime_file(dir: &Path) -> PathBuf {
    dir.join("run").join("gateway.json")
}

/// Opens the audit file beside the store and starts its writer, signing heads with the node
/// key in use.
async fn start_audit(
    dir: &Path,
    store_path: &Path,
    id: &Arc<identity::Identity>,
    clock: &Clock,
    config: &NodeConfig,
    counters: crate::audit::Counters,
) -> Result<crate::audit::Audit, GatewayError> {
    let failed = |reason: String| GatewayError::Audit { reason };
    let key = crate::audit::load_key(dir).map_err(failed)?;
    let path = store_path.to_owned();
    let log = tokio::task::spawn_blocking(move || meshfed_store::AuditLog::open(&path))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(error::chain(&e)))?;
    let audit = crate::audit::Audit::start(crate::audit::Setup {
        log,
        key,
        mesh: id.mesh.clone(),
        signer: id.clone(),
        clock: clock.clone(),
        config: config.audit.clone(),
        counters,
    })
    .map_err(failed)?;
    Ok(audit)
}

/// Starts a gateway's federation side: loads the identity (renewing the node certificate when
/// due), opens the store, binds the federation listener, starts every stage and re-dials the
/// stored federations this node initiated. The returned handle is the local side's way in.
pub async fn start(
    dir: &Path,
    config: NodeConfig,
    clock: Clock,
) -> Result<GatewayHandle, GatewayError> {
    let id = identity::load(dir, &config, clock.wall())?;
    let policy = crate::policy::load(dir)?;
    let admin_token = identity::read("admin token", config.api.token_file.resolve(dir))?
        .trim()
        .to_owned();
    let issuer =
        crate::credentials::Issuer::load_or_create(dir, &id.mesh, &id.node).map_err(|e| {
            GatewayError::Identity {
                dir: dir.to_path_buf(),
                reason: error::chain(&e),
            }
        })?;
    let store_path = config.store.path.resolve(dir);
    let store_path_for_audit = store_path.clone();
    crate::store_file::check(dir, &store_path)?;
    let horizon = crate::credentials::prune_horizon(clock.now());
    let (store, journal, revocations, revoked_tokens, delegations) =
        tokio::task::spawn_blocking(move || {
            let store = Store::open(&store_path)?;
            let journal = Journal::open(&store_path, JournalConfig::default())?;
            let revocations = revoked::Revocations::load(store.revocation_lists()?)?;
            store.prune_tokens(horizon)?;
            let revoked_tokens = store.revoked_tokens()?;
            store.prune_delegations(horizon)?;
            let delegations =
                delegated::Delegations::load(store.delegations()?, store.origin_cas()?);
            Ok::<_, meshfed_store::StoreError>((
                store,
                journal,
                revocations,
                revoked_tokens,
                delegations,
            ))
        })
        .await
        .map_err(|e| GatewayError::Identity {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })??;
    crate::store_file::record(dir)?;
    let journal = Arc::new(journal);
    let durable = local::durable::Durable::load(&journal, &config.connectors)?;
    let listen = config.federation.listen;
    let listener = Listener::bind(listen, &id.tls)
        .await
        .map_err(|e| GatewayError::Bind {
            listener: Listening::Federation,
            addr: listen,
            reason: match &e {
                meshfed_transport::TransportError::Bind { source, .. } => bind_reason(source),
                other => other.to_string(),
            },
        })?;
    let metrics = Metrics::new(journal.clone());
    let limits = config.connections.clone();
    let federation_door = Door::new(
        door::Listener::Federation,
        limits.max_unauthenticated,
        &metrics,
    );
    let api_door = Door::new(door::Listener::Api, limits.max_unauthenticated, &metrics);
    let connectors = Arc::new(crate::connectors::status::Board::new(
        &config.connectors,
        &metrics,
    ));
    let local = Arc::new(Local {
        live: local::live::Subscribers::new(
            metrics.subscriber_dropped.clone(),
            metrics.subscribers_disconnected.clone(),
        ),
        durable,
    });
    let id = Arc::new(id);
    let counters = crate::audit::Counters {
        records: metrics.audit_records.clone(),
        heads: metrics.audit_heads.clone(),
    };
    let audit = start_audit(dir, &store_path_for_audit, &id, &clock, &config, counters).await?;
    let (guard, watching) = guarded::Guard::new(clock.clone(), guarded::GuardSeries::of(&metrics));
    let changes = events::Changes::new(clock.clone());
    let ctx = Arc::new(Context {
        dir: dir.to_path_buf(),
        federation_addr: listener.local_addr(),
        config,
        id,
        store: Arc::new(store),
        journal,
        clock,
        metrics,
        audit,
        revocations: Arc::new(revocations),
        delegations,
        translator: Arc::new(crate::credentials::translate::Translator::new(
            issuer.clone(),
        )),
        policy: std::sync::RwLock::new(Arc::new(policy)),
        guard,
        changes,
        cancel: CancellationToken::new(),
        tracker: TaskTracker::new(),
    });
    let (inbound, inbound_rx) = Inbound::channel();
    inbox::start(&ctx, &local, inbound_rx);
    let routes = Arc::new(Routes::new(ctx.clone()));
    routes.start().await;
    relaying::start(&ctx, &routes, &local);
    retention::start(&ctx);
    for d in [&federation_door, &api_door] {
        ctx.tracker.spawn(d.clone().summaries(
            limits.refusal_log_interval,
            ctx.clock.clone(),
            ctx.cancel.clone(),
        ));
    }
    let (links, tunnels) = Links::new(
        ctx.clone(),
        routes.clone(),
        inbound,
        local.clone(),
        federation_door,
    );
    let links = Arc::new(links);
    ctx.tracker
        .spawn(links::relay::answer_loop(links.clone(), tunnels));
    ctx.tracker
        .spawn(links::routing::routing_loop(links.clone()));
    ctx.tracker
        .spawn(links::custody::custody_loop(links.clone()));
    if listen.ip().is_unspecified() && ctx.config.federation.advertise.is_empty() {
        tracing::warn!(
            federation = %ctx.federation_addr,
            "the federation listener is on all interfaces, and invitations would carry {}, which no other host can dial; set [federation] advertise to the addresses peers reach this gateway at",
            ctx.federation_addr
        );
    }
    if listen.port() == 0 {
        tracing::warn!(
            federation = %ctx.federation_addr,
            "the federation listener is on an ephemeral port: invitations carry it, so meshes that join cannot re-dial after this gateway restarts; set [federation] listen to a fixed port for lasting federations"
        );
    }
    ctx.tracker
        .spawn(links::accept_loop(links.clone(), listener));
    revocation::record_issued(&ctx, ctx.id.cert().der()).await;
    let renewing = ctx.clone();
    ctx.tracker.spawn(async move {
        let ctx = renewing;
        let recorder = ctx.clone();
        let record = move |der: Vec<u8>| {
            let serial = meshfed_trust::inspect_node_cert(&der)
                .map(|i| hex::encode(i.serial))
                .unwrap_or_default();
            crate::audit::credential(
                &recorder.audit,
                CredentialAction::CertificateRenewed,
                &format!("{}/{}", recorder.id.mesh, recorder.id.node),
                &serial,
            );
            let ctx = recorder.clone();
            recorder
                .tracker
                .spawn(async move { revocation::record_issued(&ctx, &der).await });
        };
        identity::renew_loop(&ctx.id, &ctx.clock, &ctx.cancel, record).await;
    });
    guard::start(&ctx, watching, &links, &routes);
    links::redial_stored(&links).await;
    links::statics::start(&links);
    let federations = Federations {
        ctx: ctx.clone(),
        links: links.clone(),
        routes: routes.clone(),
    };
    let handle = GatewayHandle(Arc::new(Stages {
        ctx,
        admin_token: std::sync::RwLock::new(admin_token),
        credentials: crate::credentials::Credentials::new(issuer, revoked_tokens),
        local,
        routes,
        links,
        federations,
        api_door,
        connectors,
        stats: stats::Sampler::default(),
        scraping: std::sync::Mutex::new(()),
    }));
    handle.spawn(stats::run(handle.clone()));
    Ok(handle)
}

/// A running gateway as its local side reaches it: the API and the connectors submit,
/// subscribe and administer through this, never through the stages' state.
#[derive(Clone)]
pub struct GatewayHandle(Arc<Stages>);

struct Stages {
    ctx: Arc<Context>,
    /// The admin token; replaced by [`GatewayHandle::rotate_admin_token`].
    admin_token: std::sync::RwLock<String>,
    /// What component tokens are checked with: the issuer key and the revoked token ids.
    credentials: crate::credentials::Credentials,
    local: Arc<Local>,
    routes: Arc<Routes>,
    links: Arc<Links>,
    federations: Federations,
    /// What API connections that have not authenticated yet may cost.
    api_door: Arc<Door>,
    /// The connectors to the mesh's own bus, as they are doing.
    connectors: Arc<crate::connectors::status::Board>,
    /// The last samples of the node's metrics, for `/v1/stats`.
    stats: stats::Sampler,
    /// Held while the state gauges are set and encoded ([`GatewayHandle::metrics`]).
    scraping: std::sync::Mutex<()>,
}

/// What this node is, as the API describes it.
#[derive(Debug, Clone)]
pub(crate) struct NodeFacts {
    pub(crate) mesh: MeshId,
    pub(crate) node: meshfed_proto::NodeName,
    pub(crate) role: crate::config::Role,
    /// Where federation links are accepted.
    pub(crate) federation_addr: SocketAddr,
    /// The mesh CA's SHA-384 fingerprint.
    pub(crate) ca_fingerprint: String,
    /// When the node certificate expires.
    pub(crate) node_cert_expires: Timestamp,
    /// The mesh the trust bundle names.
    pub(crate) trust_bundle_mesh: MeshId,
    /// How this gateway signs what it sends, as it runs (its file may have changed since).
    pub(crate) signatures: crate::config::SignatureMode,
}

/// One destination of the routing table, as the API shows it.
#[derive(Debug, Clone)]
pub(crate) struct RouteFacts {
    /// The mesh reached.
    pub(crate) destination: MeshId,
    /// The neighbour frames for it go to.
    pub(crate) next_hop: MeshId,
    /// The meshes crossed, this one first, the destination last.
    pub(crate) path: Vec<MeshId>,
    /// The path's summed round trip.
    pub(crate) rtt: Duration,
}

/// This mesh's trust bundle and which partners have stored it (`meshfed ca show`).
#[derive(Debug, Clone)]
pub(crate) struct TrustStatus {
    /// The CAs, the one in use first, with their fingerprints and ends of validity.
    pub(crate) cas: Vec<(meshfed_trust::Fingerprint, std::time::SystemTime)>,
    /// The bundle's serial: 0 as `meshfed init` made it, +1 at each rollover step.
    pub(crate) serial: u64,
    /// Live federations, with the serial of this mesh's bundle each partner acknowledged.
    pub(crate) partners: Vec<(FederationRecord, u64)>,
}

/// A federation with its link and its stream, as the API shows it.
#[derive(Debug, Clone)]
pub(crate) struct FederationStatus {
    /// The stored federation.
    pub(crate) record: FederationRecord,
    /// Its link.
    pub(crate) link: LinkStatus,
    /// What its stream holds and did, if one runs.
    pub(crate) stream: Option<stream::Stats>,
    /// The partner's circuit breaker (see [`guard`]).
    pub(crate) breaker: guarded::Shown,
}

impl GatewayHandle {
    /// Runs `f` on the audit trail read back, once everything recorded before is on disk.
    pub(crate) async fn audit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::audit::inspect::Inspector) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let ctx = &self.0.ctx;
        ctx.audit.flush().await;
        let (dir, config) = (ctx.dir.clone(), ctx.config.clone());
        tokio::task::spawn_blocking(move || {
            f(&crate::audit::inspect::Inspector::open(&dir, &config)?)
        })
        .await
        .map_err(|e| format!("the audit reader failed: {e}"))?
    }

    /// A broker's discovery directory; `None` on a gateway.
    pub(crate) fn directory(&self) -> Option<Vec<directory::Listed>> {
        (self.role() == crate::config::Role::Broker)
            .then(|| self.0.links.directory.listed(self.0.ctx.now()))
    }

    /// The routing table, by destination mesh.
    pub(crate) fn routes(&self) -> Vec<RouteFacts> {
        let own = &self.0.ctx.id.mesh;
        links::routing::table(&self.0.links)
            .into_iter()
            .map(|r| RouteFacts {
                next_hop: r.next_hop.mesh().clone(),
                path: std::iter::once(own.clone()).chain(r.path).collect(),
                destination: r.destination,
                rtt: Duration::from_micros(r.rtt_us),
            })
            .collect()
    }

    /// This node's mesh.
    pub(crate) fn mesh(&self) -> &MeshId {
        &self.0.ctx.id.mesh
    }

    /// The connectors to the mesh's own bus, as they are doing.
    pub(crate) fn connectors(&self) -> &crate::connectors::status::Board {
        &self.0.connectors
    }

    /// The connectors' configuration.
    pub(crate) fn connector_configs(&self) -> Vec<crate::config::connector::ConnectorConfig> {
        self.0.ctx.config.connectors.clone()
    }

    /// What this node runs as.
    pub fn role(&self) -> crate::config::Role {
        self.0.ctx.config.node.role
    }

    /// Where federation links are accepted.
    pub fn federation_addr(&self) -> SocketAddr {
        self.0.ctx.federation_addr
    }

    /// Feature `test-hooks`: see [`crate::Gateway::sign_wrongly`].
    #[cfg(feature = "test-hooks")]
    pub(crate) fn sign_wrongly(&self, wrong: bool) -> Result<(), String> {
        self.0.ctx.id.sign_wrongly(wrong)
    }

    /// Whether `presented` is the admin token (compared in constant time).
    pub(crate) fn is_admin(&self, presented: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(
            presented.as_bytes(),
            self.0
                .admin_token
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_bytes(),
        )
        .is_ok()
    }

    /// Replaces the admin token with a fresh one: written to the token file first (atomically,
    /// mode 0600), then in force at once; the old one no longer authenticates a request.
    /// Returns the token file.
    pub(crate) async fn rotate_admin_token(&self) -> Result<PathBuf, String> {
        let ctx = &self.0.ctx;
        let file = ctx.config.api.token_file.resolve(&ctx.dir);
        let token = crate::init::admin_token().map_err(|e| e.to_string())?;
        let (path, text) = (file.clone(), format!("{token}\n"));
        tokio::task::spawn_blocking(move || {
            meshfed_trust::files::write_file(
                &path,
                text.as_bytes(),
                meshfed_trust::files::FileMode::Private,
                meshfed_trust::files::IfExists::Replace,
            )
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| error::chain(&e))?;
        *self
            .0
            .admin_token
            .write()
            .unwrap_or_else(|e| e.into_inner()) = token;
        tracing::info!(file = %file.display(), "rotated the admin token");
        Ok(file)
    }

    /// This mesh's trust bundle and which partners have stored it.
    pub(crate) async fn trust_status(&self) -> Result<TrustStatus, String> {
        let ctx = &self.0.ctx;
        let trust = ctx.id.trust();
        let partners = ctx
            .blocking(|s| {
                s.federations()?
                    .into_iter()
                    .filter(|r| r.state.is_live())
                    .map(|r| {
                        let acked = s.bundle_serials(&r.id)?.acknowledged;
                        Ok((r, acked))
                    })
                    .collect::<Result<Vec<_>, meshfed_store::StoreError>>()
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(TrustStatus {
            cas: trust
                .bundle
                .cas()
                .iter()
                .map(|c| (c.fingerprint(), c.info().not_after))
                .collect(),
            serial: trust.serial(),
            partners,
        })
    }

    /// Reads the mesh's trust bundle, issuing CA and node certificate again from the node
    /// directory (after `meshfed ca rotate` or `retire-old` changed them) and announces the
    /// bundle's statement on every open link. Returns the new status and how many links were
    /// told.
    pub(crate) async fn reload_trust(&self) -> Result<(TrustStatus, usize), String> {
        let ctx = self.0.ctx.clone();
        let trust = tokio::task::spawn_blocking(move || {
            ctx.id.reload(&ctx.dir, &ctx.config, ctx.clock.wall())
        })
        .await
        .map_err(|e| e.to_string())??;
        let told = match &trust.statement {
            Some((statement, serial)) => {
                let told = self.0.links.announce_bundle(statement);
                tracing::info!(serial, links = told, "announced this mesh's trust bundle");
                told
            }
            None => 0,
        };
        Ok((self.trust_status().await?, told))
    }

    /// Runs `task` as one of the gateway's tasks: it is awaited when the gateway stops.
    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.ctx.tracker.spawn(task);
    }

    /// What stops this node from doing its work now, each said in a sentence; empty when it is
    /// ready: the federation listener cannot accept, the node certificate has expired, or the
    /// store cannot be written.
    pub(crate) async fn unready(&self) -> Vec<String> {
        let ctx = &self.0.ctx;
        let mut problems = Vec::new();
        if let Some(failure) = self.0.links.accept_failure() {
            problems.push(format!(
                "the federation listener on {} cannot accept connections: {failure}",
                ctx.federation_addr
            ));
        }
        let expires = ctx.id.cert().not_after;
        if expires <= ctx.clock.wall() {
            problems.push(format!(
                "the node certificate expired at {}",
                federations::rfc3339(crate::clock::timestamp(expires))
            ));
        }
        let store = ctx.config.store.path.resolve(&ctx.dir);
        let checked = tokio::task::spawn_blocking(move || {
            meshfed_store::check_writable(&store, STORE_CHECK_WAIT)
        })
        .await;
        match checked {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("the store is not writable: {}", error::chain(&e))),
            Err(e) => problems.push(format!("the store check failed: {e}")),
        }
        problems.extend(self.0.connectors.unready());
        problems
    }

    /// Records a failed `accept` on the federation listener, as the accept loop does.
    #[cfg(test)]
    pub(crate) fn fail_accept(&self, why: &str) {
        self.0.links.set_accept_failure(Some(why.to_owned()));
    }

    /// The API listener's door.
    pub(crate) fn api_door(&self) -> Arc<Door> {
        self.0.api_door.clone()
    }

    /// A certificate for the HTTPS API, reached at `addresses`, issued now.
    pub(crate) fn issue_api_cert(
        &self,
        addresses: &[std::net::IpAddr],
    ) -> Result<identity::ApiCert, String> {
        let ctx = &self.0.ctx;
        ctx.id.issue_api_cert(addresses, ctx.clock.wall())
    }

    /// The node's clock.
    pub(crate) fn clock(&self) -> crate::clock::Clock {
        self.0.ctx.clock.clone()
    }

    /// How long an idle API connection stays open.
    pub(crate) fn api_idle_timeout(&self) -> std::time::Duration {
        self.0.ctx.config.connections.api_idle_timeout
    }

    /// Cancelled when the gateway stops.
    pub(crate) fn stopping(&self) -> CancellationToken {
        self.0.ctx.cancel.clone()
    }

    /// A follower of the changes of federations, links and breakers from now on.
    pub(crate) fn follow_changes(&self) -> tokio::sync::broadcast::Receiver<events::Change> {
        self.0.ctx.changes.follow()
    }

    /// This node.
    pub(crate) fn node_info(&self) -> NodeFacts {
        let ctx = &self.0.ctx;
        NodeFacts {
            mesh: ctx.id.mesh.clone(),
            node: ctx.id.node.clone(),
            role: ctx.config.node.role,
            federation_addr: ctx.federation_addr,
            ca_fingerprint: ctx.id.trust().ca_fingerprint.to_string(),
            node_cert_expires: crate::clock::timestamp(ctx.id.cert().not_after),
            trust_bundle_mesh: ctx.id.mesh.clone(),
            signatures: ctx.config.delivery.signatures,
        }
    }

    fn status(&self, record: FederationRecord) -> FederationStatus {
        let link = self.0.links.status(&record.id);
        let stream = self
            .0
            .routes
            .to(&record.peer_mesh)
            .filter(|s| s.federation_id == record.id)
            .map(|s| s.stats());
        FederationStatus {
            breaker: self.0.ctx.guard.view(&record.peer_mesh).shown(),
            record,
            link,
            stream,
        }
    }

    /// Every federation in the registry.
    pub(crate) async fn federations(&self) -> Result<Vec<FederationStatus>, FederationError> {
        let records = federations::list(&self.0.federations).await?;
        Ok(records.into_iter().map(|r| self.status(r)).collect())
    }

    /// One federation.
    pub(crate) async fn federation(
        &self,
        id: FederationId,
    ) -> Result<FederationStatus, FederationError> {
        let record = federations::get(&self.0.federations, id).await?;
        Ok(self.status(record))
    }

    /// Issues an invitation for mesh `peer`, valid for `ttl`.
    pub(crate) async fn invite(
        &self,
        peer: MeshId,
        ttl: Duration,
    ) -> Result<
        (
            meshfed_proto::invitation::InvitationToken,
            meshfed_store::InvitationRecord,
        ),
        FederationError,
    > {
        federations::invite(&self.0.federations, peer, ttl).await
    }

    /// Joins the federation a token offers.
    pub(crate) async fn join(
        &self,
        token: &str,
        via: Option<MeshId>,
    ) -> Result<FederationStatus, FederationError> {
        let record = federations::join(&self.0.federations, token, via).await?;
        Ok(self.status(record))
    }

    /// Applies a lifecycle operation.
    pub(crate) async fn operate(
        &self,
        id: FederationId,
        op: Operation,
    ) -> Result<FederationStatus, FederationError> {
        let record = federations::operate(&self.0.federations, id, op).await?;
        Ok(self.status(record))
    }

    /// Renegotiates a federation's agreement (see [`federations::renegotiate`]).
    pub(crate) async fn renegotiate(
        &self,
        id: FederationId,
    ) -> Result<FederationStatus, FederationError> {
        let record = federations::renegotiate(&self.0.federations, id).await?;
        Ok(self.status(record))
    }

    /// This mesh's policy in force.
    pub(crate) fn policy(&self) -> Arc<crate::policy::Policy> {
        self.0.ctx.policy()
    }

    /// Whether local component `who` may subscribe to `pattern` (for what `from` sends, or
    /// any partner) under this mesh's access rules.
    pub(crate) fn may_subscribe(
        &self,
        who: &Sender,
        pattern: &TopicPattern,
        from: Option<&MeshId>,
    ) -> Result<(), meshfed_proto::admission::Refusal> {
        let who = self.local_principal(who);
        self.policy()
            .may_subscribe(&who, pattern, from)
            .map_err(|d| meshfed_proto::admission::Refusal::Denied(d.to_string()))
    }

    /// Local component `who` as the access rules know it.
    pub(crate) fn local_principal(&self, who: &Sender) -> crate::policy::access::Principal {
        crate::policy::access::Principal::of(&self.0.ctx.id.mesh, who)
    }

    /// Whether local component `who` ([`GatewayHandle::local_principal`]), subscribed, may
    /// receive a delivery on `topic` from `from` under the access rules in force now.
    pub(crate) fn may_receive(
        &self,
        who: &crate::policy::access::Principal,
        topic: &meshfed_proto::Topic,
        from: &MeshId,
    ) -> Result<(), meshfed_proto::admission::Refusal> {
        let Some(access) = self.policy().access.clone() else {
            return Ok(());
        };
        access
            .decide_delivery(who, topic, from)
            .map_err(|d| meshfed_proto::admission::Refusal::Denied(d.to_string()))
    }

    /// Checks `text` as a policy file, keeps it as `DIR/policy.toml` (written whole, synced),
    /// puts it in force and proposes it to every live partner (see
    /// [`federations::replace_policy`]).
    pub(crate) async fn replace_policy(
        &self,
        text: String,
    ) -> Result<Vec<federations::Proposed>, PolicyError> {
        let ctx = &self.0.ctx;
        let file = ctx.dir.join(crate::policy::FILE);
        let policy = crate::policy::parse(&text, Path::new(crate::policy::FILE))?;
        tokio::task::spawn_blocking(move || {
            meshfed_trust::files::write_file(
                &file,
                text.as_bytes(),
                meshfed_trust::files::FileMode::Public,
                meshfed_trust::files::IfExists::Replace,
            )
        })
        .await
        .map_err(|e| PolicyError::Write(e.to_string()))?
        .map_err(|e| PolicyError::Write(error::chain(&e)))?;
        tracing::info!("the policy file changed; proposing it to live partners");
        Ok(federations::replace_policy(&self.0.federations, policy).await?)
    }

    /// The agreements a federation replaced by renegotiating, oldest first.
    pub(crate) async fn agreement_history(
        &self,
        id: FederationId,
    ) -> Result<Vec<meshfed_store::AgreementEntry>, FederationError> {
        let ctx = &self.0.federations.ctx;
        Ok(ctx.blocking(move |s| s.agreement_history(&id)).await?)
    }

    /// Submits a message (see [`submit::submit`]); a reliable one finding its stream full
    /// waits for room or is refused, as `when_full` says.
    pub(crate) async fn submit(
        &self,
        msg: Outgoing,
        wait: bool,
        when_full: room::WhenFull,
    ) -> Result<submit::Submitted, SendError> {
        submit::submit(&self.0.ctx, &self.0.routes, msg, wait, when_full).await
    }

    /// The latest `limit` dead letters.
    pub(crate) async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, String> {
        let journal = self.0.ctx.journal.clone();
        tokio::task::spawn_blocking(move || journal.dead_letters(limit))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// A live subscription to what arrives matching `pattern` (from `from`, if given), for a
    /// subscriber that receives it in `form` (the export form: proven envelopes only). Returns
    /// once every connected partner applied an interest that holds it (see [`interest`]), so
    /// that qos 0 messages they publish from then on come; at most a heartbeat interval later.
    pub(crate) async fn subscribe(
        &self,
        pattern: TopicPattern,
        from: Option<MeshId>,
        form: meshfed_proto::envelope::export::Form,
    ) -> local::live::Subscription {
        let proof = form == meshfed_proto::envelope::export::Form::Export;
        let live = self.0.local.live.subscribe(pattern, from, false, proof);
        links::interest::covered(&self.0.links, live.generation()).await;
        live
    }

    /// Creates (or updates) durable subscription `name` and opens it for a connected
    /// subscriber, who receives its messages in `form`, and its qos 0 messages (which the
    /// journal does not keep) once proven when `form` is the export form or `proven`. Returns,
    /// like [`Self::subscribe`], once the partners know of its qos 0 messages.
    pub(crate) async fn open_durable(
        &self,
        name: SubscriptionName,
        pattern: TopicPattern,
        from: Option<MeshId>,
        form: Form,
        proven: bool,
    ) -> Result<
        (
            local::durable::Reader,
            tokio::sync::mpsc::UnboundedReceiver<local::durable::Saved>,
        ),
        String,
    > {
        let ctx = &self.0.ctx;
        let local = &self.0.local;
        // Registered before the subscriber is told: from then on nothing for it is missed.
        local::durable::register(
            ctx,
            local,
            name.clone(),
            pattern.clone(),
            from.clone(),
            form,
        )
        .await?;
        let opened = local::durable::Reader::open(
            ctx.clone(),
            local,
            name,
            pattern,
            from,
            proven || form == Form::Export,
        )
        .await?;
        links::interest::covered(&self.0.links, opened.0.generation()).await;
        Ok(opened)
    }

    /// The metrics in the OpenMetrics text format; what is a state (backlogs, queues by
    /// priority, link health) is read from the stages now.
    pub(crate) async fn metrics(&self) -> String {
        let live = self.live().await;
        // One scrape at a time: another one's clearing must not empty the gauges encoded here.
        let _alone = self.0.scraping.lock().unwrap_or_else(|e| e.into_inner());
        self.set_states(&live);
        self.0.ctx.metrics.encode()
    }

    /// The figures of the last samples of the metrics (`/v1/stats`); none yet (no federation,
    /// an empty window) before the first.
    pub(crate) fn stats(&self) -> stats::Figures {
        self.0.stats.figures().unwrap_or_else(|| stats::Figures {
            at: self.0.ctx.clock.wall(),
            window: Duration::ZERO,
            federations: Vec::new(),
        })
    }

    /// The live federations as they are now (what the state gauges are set from); none when
    /// the registry cannot be read.
    pub(crate) async fn live(&self) -> Vec<FederationStatus> {
        let records = federations::list(&self.0.federations)
            .await
            .inspect_err(|e| tracing::debug!(error = %e, "could not list the federations"))
            .unwrap_or_default();
        records
            .into_iter()
            .filter(|r| r.state.is_live())
            .map(|r| self.status(r))
            .collect()
    }

    /// Sets what is a state in the metrics from the stages: backlogs and queues by priority
    /// per stream, link health per live federation (`live`).
    fn set_states(&self, live: &[FederationStatus]) {
        let m = &self.0.ctx.metrics;
        m.backlog_messages.clear();
        m.backlog_bytes.clear();
        m.queued.clear();
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for s in self.0.routes.all() {
            let backlog = s.stats().backlog;
            let peer = metrics::peer(&s.peer);
            m.backlog_messages
                .get_or_create(&peer)
                .set(gauge(backlog.messages as u64));
            m.backlog_bytes
                .get_or_create(&peer)
                .set(gauge(backlog.bytes));
            for (priority, n) in (0u8..).zip(backlog.by_priority) {
                m.queued
                    .get_or_create(&metrics::PeerPriorityLabels {
                        peer: peer.peer.clone(),
                        priority,
                    })
                    .set(gauge(n as u64));
            }
        }
        m.link_healthy.clear();
        for s in live {
            m.link_healthy
                .get_or_create(&metrics::FederationLabels {
                    federation: s.record.id.to_string(),
                    peer: s.record.peer_mesh.to_string(),
                })
                .set(i64::from(s.link.health == Health::Healthy));
        }
    }

    /// Records the address the API listens on in the runtime file.
    pub(crate) fn write_runtime_file(&self, api: SocketAddr) -> Result<(), GatewayError> {
        let path = runtime_file(&self.0.ctx.dir);
        let body = serde_json::json!({
            "pid": std::process::id(),
            "api": api.to_string(),
            "federation": self.0.ctx.federation_addr.to_string(),
        });
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, body.to_string())
        };
        write().map_err(|source| GatewayError::Write {
            path: path.clone(),
            source,
        })
    }

    /// Stops every task: links close without a termination (the federation stays active and
    /// resumes when the gateway is back), and all tasks are awaited.
    pub async fn shutdown(&self) {
        let ctx = &self.0.ctx;
        ctx.cancel.cancel();
        ctx.tracker.close();
        ctx.tracker.wait().await;
        // Everything recorded is written, the due heads signed, and the audit file closed.
        ctx.audit.stop().await;
        let _ = std::fs::remove_file(runtime_file(&ctx.dir));
    }
}
