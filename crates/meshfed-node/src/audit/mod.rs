//! The node's audit trail (DESIGN §3.9): what the stages record, and the thread that writes it.
//!
//! Every stage that sees a federation event hands it to [`Audit`] — a handshake step or
//! failure, an agreement, a lifecycle transition, a credential or revocation event, a refused
//! envelope, the digest of an envelope that crossed — and goes on: recording is a channel send,
//! never a wait. One thread ([`writer`]) numbers the records of each log (the node's own, and
//! one per federation, so that what a partner countersigns covers that federation only),
//! encodes them with `meshfed-audit`, appends them to the audit file in batches (one fsync per
//! batch) and signs a tree head of a log once `audit.head_every` records or `audit.head_interval`
//! wait for one. A new head of a federation's log is announced to its link, which offers it to
//! the partner for countersigning (`gateway/links/audit.rs`).
//!
//! What of a federation's traffic is recorded follows its agreement's
//! `compliance.audit_level`: `lifecycle` (handshakes, agreements, lifecycle, credentials,
//! revocations), `refusals` (and every refused envelope), `full` (and a digest record of every
//! envelope that crossed — never its payload, only a keyed commitment to its digest).
//!
//! Reading the log back (verify, prove, export, report) is [`inspect`], used by the API and by
//! the CLI on a stopped node alike.

mod events;
pub mod inspect;
pub mod views;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use meshfed_audit::head::TreeHead;
use meshfed_audit::record::{AuditKey, Event, Scope};
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::policy::AuditLevel;
use meshfed_proto::{FederationId, MeshId};
use meshfed_store::AuditLog;
use meshfed_trust::files::{self, FileMode, IfExists};
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::config::AuditConfig;

pub(crate) use events::{
    agreement, credential, crossed_message, handshake, lifecycle, received_batch, refused, sent,
    sent_alone, signed_batch,
};
pub(crate) use writer::{BatchEvidence, Crossed, CrossedMessage, EnvelopeEvidence, HeadSigner};

/// The audit key's file in the node directory: outside the store, so that whoever edits the
/// store file cannot make an edited record's MAC match.
pub const KEY_FILE: &str = "node/audit.key";

/// Reads the node's audit key, making one the first time.
pub fn load_key(dir: &Path) -> Result<AuditKey, String> {
    let path = dir.join(KEY_FILE);
    match read_key(&path) {
        Err(KeyFault::Missing) => {
            let key = AuditKey::generate().map_err(|e| e.to_string())?;
            files::write_file(&path, key.as_bytes(), FileMode::Private, IfExists::Refuse)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(key)
        }
        other => other.map_err(|e| e.to_string()),
    }
}

/// Why the audit key cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyFault {
    /// There is none (yet).
    #[error("there is no audit key")]
    Missing,
    /// It is there and unusable.
    #[error("{0}")]
    Unusable(String),
}

/// Reads the audit key at `path`.
pub(crate) fn read_key(path: &Path) -> Result<AuditKey, KeyFault> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KeyFault::Missing,
        _ => KeyFault::Unusable(format!("cannot read {}: {e}", path.display())),
    })?;
    let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        KeyFault::Unusable(format!(
            "{} holds {} bytes; an audit key is 32",
            path.display(),
            bytes.len()
        ))
    })?;
    Ok(AuditKey::from_bytes(bytes))
}

/// The key of the node certificate that heads `chain` (DER: the node certificate, then its
/// issuing CA), checked against `bundle` as it stood at `at`.
pub(crate) fn chain_key(
    bundle: &meshfed_trust::TrustBundle,
    chain: &[Vec<u8>],
    at: std::time::SystemTime,
) -> Result<meshfed_proto::crypto::VerifyingKey, String> {
    use rustls_pki_types::CertificateDer;
    let (end, rest) = chain
        .split_first()
        .ok_or_else(|| "an empty certificate chain".to_owned())?;
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let info = meshfed_trust::verify_node_cert(
        bundle,
        &CertificateDer::from(end.as_slice()),
        &intermediates,
        meshfed_trust::KeyPurpose::ClientAuth,
        at,
    )
    .map_err(|e| format!("the signer certificate does not verify: {e}"))?;
    info.public_key
        .verifying_key()
        .map_err(|e| format!("the signer key: {e}"))
}

/// What the writer thread is asked to do.
enum Command {
    Record {
        scope: Scope,
        time: Timestamp,
        event: Event,
    },
    Crossed {
        federation: FederationId,
        time: Timestamp,
        items: Vec<Crossed>,
    },
    HandshakeFailed {
        remote: String,
        peer: Option<MeshId>,
        code: String,
        reason: String,
        time: Timestamp,
    },
    /// The newest head of the federation's log, with a consistency proof from the size the
    /// partner last countersigned.
    Offer {
        federation: FederationId,
        reply: oneshot::Sender<Option<Offer>>,
    },
    /// The partner countersigned the head of `size`; `partner_chain` is the certificate
    /// chain its countersignature verified under.
    Countersigned {
        federation: FederationId,
        size: u64,
        by: MeshId,
        countersignature: Vec<u8>,
        partner_chain: Vec<Vec<u8>>,
    },
    /// The partner says it last countersigned our head `head` of this federation's log: it
    /// must be a head of our log, or our log was rolled back or rewritten.
    PartnerClaims {
        federation: FederationId,
        peer: MeshId,
        head: TreeHead,
    },
    /// Our head of `size` of the federation's log, if we signed one.
    Head {
        federation: FederationId,
        size: u64,
        reply: oneshot::Sender<Option<TreeHead>>,
    },
    /// What we last countersigned of the partner's log of `federation`.
    PartnerHead {
        federation: FederationId,
        reply: oneshot::Sender<Option<meshfed_store::audit::PartnerHead>>,
    },
    /// We countersigned the partner's head: keep it, and record it in the federation's log.
    KeepPartnerHead {
        head: meshfed_store::audit::PartnerHead,
        event: Event,
    },
    /// Empties the bodies of the federation's message and refusal records from before
    /// `before` (the agreed retention), keeping their hashes, and records that it did.
    Prune {
        federation: FederationId,
        before: Timestamp,
        days: u32,
    },
    /// Commits everything sent before and signs a head of every log with records waiting.
    Flush(oneshot::Sender<()>),
    /// Flushes, closes the audit file and ends the writer (the gateway stops).
    Stop(oneshot::Sender<()>),
}

/// An offer of a head (encoded) with the certificate chain it was signed under.
pub(crate) type Offer = (Vec<u8>, Vec<Vec<u8>>);

/// What the writer starts from: the audit file, the key, who signs heads, and how.
pub(crate) struct Setup {
    pub(crate) log: AuditLog,
    pub(crate) key: AuditKey,
    pub(crate) mesh: MeshId,
    pub(crate) signer: Arc<dyn HeadSigner>,
    pub(crate) clock: Clock,
    pub(crate) config: AuditConfig,
    pub(crate) counters: Counters,
}

/// What the writer counts: records appended and heads signed.
#[derive(Clone, Default)]
pub(crate) struct Counters {
    pub(crate) records: prometheus_client::metrics::counter::Counter,
    pub(crate) heads: prometheus_client::metrics::counter::Counter,
}

/// The stages' handle on the audit trail. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Audit {
    tx: mpsc::Sender<Command>,
    clock: Clock,
    shared: Arc<Shared>,
}

struct Shared {
    /// A watch per federation log: the size of its newest signed head.
    heads: Mutex<HashMap<FederationId, watch::Sender<u64>>>,
    /// A watch per federation log: the largest size the partner countersigned.
    countersigned: Mutex<HashMap<FederationId, watch::Sender<u64>>>,
}

impl Shared {
    /// The watch of `federation` in `map`, made at 0 the first time.
    fn watch(
        map: &Mutex<HashMap<FederationId, watch::Sender<u64>>>,
        federation: &FederationId,
    ) -> watch::Sender<u64> {
        map.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(federation.clone())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }
}

impl Audit {
    /// Starts the writer thread over `setup.log`.
    pub(crate) fn start(setup: Setup) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            heads: Mutex::new(HashMap::new()),
            countersigned: Mutex::new(HashMap::new()),
        });
        let clock = setup.clock.clone();
        let writer = writer::Writer::load(setup, shared.clone())?;
        // Not joined: `stop` waits for the writer to close the file, its last act.
        std::thread::Builder::new()
            .name("meshfed-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(Self { tx, clock, shared })
    }

    fn send(&self, command: Command) {
        // The writer ends only when every handle is gone, or the process is going down.
        if self.tx.send(command).is_err() {
            tracing::error!("the audit writer has stopped; a record was not written");
        }
    }

    /// Records `event` in the node's own log.
    pub(crate) fn node(&self, event: Event) {
        self.send(Command::Record {
            scope: Scope::Node,
            time: self.clock.now(),
            event,
        });
    }

    /// Records `event` in the log of `federation`.
    pub(crate) fn federation(&self, federation: &FederationId, event: Event) {
        self.send(Command::Record {
            scope: Scope::Federation(federation.clone()),
            time: self.clock.now(),
            event,
        });
    }

    /// Records `event` in the log of `federation` if its agreed audit level is at least
    /// `needs`.
    pub(crate) fn at_level(
        &self,
        level: AuditLevel,
        needs: AuditLevel,
        federation: &FederationId,
        event: impl FnOnce() -> Event,
    ) {
        if level >= needs {
            self.federation(federation, event());
        }
    }

    /// Records the digests of envelopes that crossed on `federation` (its level is `full`).
    pub(crate) fn crossed(
        &self,
        federation: &FederationId,
        items: impl IntoIterator<Item = Crossed>,
    ) {
        let items: Vec<Crossed> = items.into_iter().collect();
        if items.is_empty() {
            return;
        }
        self.send(Command::Crossed {
            federation: federation.clone(),
            time: self.clock.now(),
            items,
        });
    }

    /// Counts a failed handshake: one record per address and reason per window.
    pub(crate) fn handshake_failed(
        &self,
        remote: String,
        peer: Option<MeshId>,
        code: &str,
        reason: &str,
    ) {
        self.send(Command::HandshakeFailed {
            remote,
            peer,
            code: code.to_owned(),
            reason: reason.to_owned(),
            time: self.clock.now(),
        });
    }

    /// The sizes of the newest signed heads of `federation`'s log, as they come.
    pub(crate) fn heads(&self, federation: &FederationId) -> watch::Receiver<u64> {
        Shared::watch(&self.shared.heads, federation).subscribe()
    }

    /// The largest size of `federation`'s log the partner countersigned, as it grows.
    pub(crate) fn countersigned_sizes(&self, federation: &FederationId) -> watch::Receiver<u64> {
        Shared::watch(&self.shared.countersigned, federation).subscribe()
    }

    /// The offer of the newest head of `federation`'s log (encoded), with the certificate
    /// chain it was signed under, if it has one.
    pub(crate) async fn offer(&self, federation: &FederationId) -> Option<Offer> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Offer {
            federation: federation.clone(),
            reply,
        });
        answer.await.ok().flatten()
    }

    /// Keeps the partner's countersignature of the head of `size` of `federation`'s log.
    pub(crate) fn countersigned(
        &self,
        federation: &FederationId,
        size: u64,
        by: MeshId,
        countersignature: Vec<u8>,
        partner_chain: Vec<Vec<u8>>,
    ) {
        self.send(Command::Countersigned {
            federation: federation.clone(),
            size,
            by,
            countersignature,
            partner_chain,
        });
    }

    /// Checks what the partner says it last countersigned of `federation`'s log against the
    /// log (a mismatch is recorded), and offers heads from that size on.
    pub(crate) fn partner_claims(&self, federation: &FederationId, peer: &MeshId, head: TreeHead) {
        self.send(Command::PartnerClaims {
            federation: federation.clone(),
            peer: peer.clone(),
            head,
        });
    }

    /// Our signed head of `size` of `federation`'s log, if there is one.
    pub(crate) async fn head(&self, federation: &FederationId, size: u64) -> Option<TreeHead> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Head {
            federation: federation.clone(),
            size,
            reply,
        });
        answer.await.ok().flatten()
    }

    /// What this node last countersigned of the partner's log of `federation`.
    pub(crate) async fn partner_head(
        &self,
        federation: &FederationId,
    ) -> Option<meshfed_store::audit::PartnerHead> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::PartnerHead {
            federation: federation.clone(),
            reply,
        });
        answer.await.ok().flatten()
    }

    /// Keeps the partner head this node countersigned, recording `event` in the federation's
    /// log.
    pub(crate) fn keep_partner_head(&self, head: meshfed_store::audit::PartnerHead, event: Event) {
        self.send(Command::KeepPartnerHead { head, event });
    }

    /// Applies the agreed retention (`days`) to `federation`'s log: the bodies of its message
    /// and refusal records from before `before` go; their hashes, MACs and the heads stay, so
    /// the log still verifies.
    pub(crate) fn prune(&self, federation: &FederationId, before: Timestamp, days: u32) {
        self.send(Command::Prune {
            federation: federation.clone(),
            before,
            days,
        });
    }

    /// Flushes, then ends the writer and closes the audit file; records sent after are
    /// logged as lost. Called when the gateway stops, after its tasks ended.
    pub(crate) async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        self.send(Command::Stop(done));
        let _ = wait.await;
    }

    /// Waits until everything recorded before is on disk and every log with records waiting
    /// has a signed head.
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        self.send(Command::Flush(done));
        let _ = wait.await;
    }
}
