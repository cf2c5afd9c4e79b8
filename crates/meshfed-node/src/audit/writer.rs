//! The audit writer: one thread that numbers, encodes, appends and signs.
//!
//! It owns the audit file's connection and, per log, the leaf hashes of its tree (48 bytes a
//! record, loaded at start), so that roots and consistency proofs need no read. Each turn takes
//! every command waiting (up to [`TURN`]), appends their records in one transaction, then signs
//! the heads that are due: a log with `head_every` records waiting, or whose oldest waiting
//! record is `head_interval` old. An offer or a flush is answered in order, after the records
//! sent before it are on disk.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use meshfed_audit::head::{HeadOffer, SignedHead, TreeHead};
use meshfed_audit::record::{
    AuditKey, BatchRef, Delivery, Event, MAX_MESSAGES, MessageDigest, Record, Scope, Text,
};
use meshfed_proto::batch::merkle::Tree;
use meshfed_proto::crypto::SigningKey;
use meshfed_proto::envelope::{EnvelopeId, Timestamp};
use meshfed_proto::{FederationId, MeshId};
use meshfed_store::AuditLog;
use meshfed_store::audit::{NewRecord, StoredCountersignature, StoredHead};

use super::{Command, Shared};
use crate::clock::Clock;
use crate::config::AuditConfig;

/// Commands taken in one turn at most: one transaction.
const TURN: usize = 8_192;

/// How long a turn gathers records after its first before it commits them.
const GROUP: std::time::Duration = std::time::Duration::from_millis(10);

impl Command {
    /// Whether a task waits for this command's answer.
    fn asks(&self) -> bool {
        matches!(
            self,
            Self::Offer { .. }
                | Self::Head { .. }
                | Self::PartnerHead { .. }
                | Self::Flush(_)
                | Self::Stop(_)
        )
    }
}

/// What signs tree heads: the node key in use and its certificate.
pub(crate) trait HeadSigner: Send + Sync {
    /// The key and its certificate chain (DER, the node certificate first).
    fn signer(&self) -> (Arc<SigningKey>, Vec<Vec<u8>>);
}

/// Envelopes that crossed one link together: the envelopes of one signed batch (or a few
/// signed alone) sent to or received from one partner. One `messages` record each.
#[derive(Debug, Clone)]
pub(crate) struct Crossed {
    pub(crate) direction: Delivery,
    /// The partner on the link.
    pub(crate) peer: MeshId,
    /// Their signed batch and its evidence; `None` when each was signed alone.
    pub(crate) batch: Option<(BatchRef, BatchEvidence)>,
    pub(crate) messages: Vec<CrossedMessage>,
    /// Shared by every envelope of one link; `None` for this node's own envelopes.
    pub(crate) intermediates: Option<Arc<[Vec<u8>]>>,
}

/// One envelope that crossed.
#[derive(Debug, Clone)]
pub(crate) struct CrossedMessage {
    pub(crate) envelope: EnvelopeId,
    pub(crate) source: MeshId,
    pub(crate) destination: MeshId,
    pub(crate) topic: String,
    pub(crate) size: u64,
    pub(crate) qos: u8,
    /// Its index in its batch.
    pub(crate) index: u32,
    /// What `audit prove` shows of it. Its payload digest is in here, never in the record
    /// (which holds a keyed commitment to it).
    pub(crate) evidence: EnvelopeEvidence,
    /// The signer certificate's DER, kept once (by digest) for every evidence naming it.
    pub(crate) certificate: Option<Arc<[u8]>>,
    /// That certificate's SHA-384 digest, as the header names it.
    pub(crate) certificate_digest: [u8; 48],
}

/// What proves how the envelopes of one `messages` record crossed, kept beside it: their
/// batch's signed head and leaf hashes (once), and each envelope's signed header bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Evidence {
    pub(crate) batch: Option<BatchEvidence>,
    /// In the record's order.
    pub(crate) envelopes: Vec<EnvelopeEvidence>,
}

/// One envelope as it crossed, without its payload: its signed header bytes (which name the
/// signer certificate's digest) and the payload digest its batch leaf (or its own signature)
/// covers, and its own signature when it was signed alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct EnvelopeEvidence {
    #[serde(with = "serde_bytes")]
    pub(crate) header: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub(crate) payload_digest: [u8; 48],
    pub(crate) signature: Option<serde_bytes::ByteBuf>,
}

/// The batch the envelopes were signed in: its signed head (the `BatchHead` wire form: number,
/// signer, count, root, signature) and its leaf hashes, from which any envelope's inclusion
/// proof is made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct BatchEvidence {
    #[serde(with = "serde_bytes")]
    pub(crate) head: Vec<u8>,
    /// The leaf hashes, 48 bytes each, in signed order.
    #[serde(with = "serde_bytes")]
    pub(crate) leaves: Vec<u8>,
}

impl Evidence {
    /// Its CBOR, as stored.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let size = self
            .envelopes
            .iter()
            .map(|e| e.header.len() + 64)
            .sum::<usize>()
            + self
                .batch
                .as_ref()
                .map_or(0, |b| b.head.len() + b.leaves.len() + 16);
        let mut out = Vec::with_capacity(size + 16);
        // Invariant: encoding plain structs into a Vec cannot fail.
        ciborium::into_writer(self, &mut out).unwrap_or_else(|e| unreachable!("CBOR: {e}"));
        out
    }

    /// The evidence stored as `bytes`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        ciborium::from_reader(bytes).map_err(meshfed_proto::cbor::reason)
    }
}

/// A stored head or countersignature: its bytes and the certificate chain (DER, the node
/// certificate first) it was signed under.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct HeadBlob(
    pub(crate) serde_bytes::ByteBuf,
    pub(crate) Vec<serde_bytes::ByteBuf>,
);

impl HeadBlob {
    pub(crate) fn new(bytes: Vec<u8>, chain: Vec<Vec<u8>>) -> Self {
        Self(
            serde_bytes::ByteBuf::from(bytes),
            chain.into_iter().map(serde_bytes::ByteBuf::from).collect(),
        )
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Invariant: encoding byte strings into a Vec cannot fail.
        ciborium::into_writer(self, &mut out).unwrap_or_else(|e| unreachable!("CBOR: {e}"));
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        ciborium::from_reader(bytes).map_err(meshfed_proto::cbor::reason)
    }

    /// The chain as DER byte vectors.
    pub(crate) fn chain(&self) -> Vec<Vec<u8>> {
        self.1.iter().map(|c| c.to_vec()).collect()
    }
}

/// One log's state.
struct Log {
    scope: Scope,
    name: String,
    tree: Tree,
    /// The newest signed head, and the certificate (DER) it was signed under.
    latest: Option<SignedHead>,
    latest_chain: Vec<Vec<u8>>,
    /// The oldest record waiting for a head that makes one due, when it was appended.
    waiting_since: Option<Instant>,
    /// Records waiting for a head that make one due (all but countersignatures).
    due_records: u64,
    /// The largest size of this log the partner countersigned (or says it did).
    countersigned: u64,
}

impl Log {
    fn waiting(&self) -> u64 {
        self.tree.len() - self.latest.as_ref().map_or(0, |h| h.head.size)
    }
}

/// Failed handshakes from one address for one reason, in the current window.
struct Failures {
    peer: Option<MeshId>,
    reason: String,
    count: u64,
    first: Timestamp,
    last: Timestamp,
    opened: Instant,
}

pub(super) struct Writer {
    log: AuditLog,
    key: AuditKey,
    mesh: MeshId,
    signer: Arc<dyn HeadSigner>,
    clock: Clock,
    config: AuditConfig,
    shared: Arc<Shared>,
    logs: HashMap<String, Log>,
    failures: HashMap<(String, String), Failures>,
    /// Signer certificates already kept (by digest).
    certificates: std::collections::HashSet<[u8; 48]>,
    counters: super::Counters,
}

/// The envelope ids a record names, and its evidence (encoded).
type Named = (Vec<[u8; 16]>, Vec<u8>);

/// A record made in this turn, before it is appended.
struct Row {
    scope: String,
    seq: u64,
    time: Timestamp,
    kind: &'static str,
    peer: Option<String>,
    body: Vec<u8>,
    leaf: [u8; 48],
    mac: [u8; 48],
    envelopes: Vec<[u8; 16]>,
    evidence: Option<Vec<u8>>,
}

impl Writer {
    /// The writer of `setup.log`, with every log's tree loaded from it.
    pub(super) fn load(setup: super::Setup, shared: Arc<Shared>) -> Result<Self, String> {
        let super::Setup {
            log,
            key,
            mesh,
            signer,
            clock,
            config,
            counters,
        } = setup;
        let mut writer = Self {
            log,
            key,
            mesh,
            signer,
            clock,
            config,
            shared,
            logs: HashMap::new(),
            failures: HashMap::new(),
            certificates: std::collections::HashSet::new(),
            counters,
        };
        let e = |e: meshfed_store::StoreError| e.to_string();
        for name in writer.log.log_names().map_err(e)? {
            let scope: Scope = name
                .parse()
                .map_err(|e| format!("the audit file names a log {name:?}: {e}"))?;
            let leaves = writer.log.leaves(&name).map_err(e)?;
            let hashes = leaves
                .iter()
                .map(|l| meshfed_proto::batch::merkle::TreeHash::try_from(l.as_slice()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| format!("audit log {name}: a stored leaf hash is damaged: {err}"))?;
            let tree = Tree::from_leaf_hashes(hashes);
            let (latest, latest_chain) = match writer.log.heads(&name).map_err(e)?.last() {
                Some(stored) => {
                    let damaged = |err: String| {
                        format!(
                            "audit log {name}: the head at {} is damaged: {err}",
                            stored.size
                        )
                    };
                    let blob = HeadBlob::decode(&stored.head).map_err(damaged)?;
                    let head =
                        SignedHead::from_bytes(&blob.0).map_err(|err| damaged(err.to_string()))?;
                    (Some(head), blob.chain())
                }
                None => (None, Vec::new()),
            };
            if let Some(h) = &latest {
                // A quick check at start; `meshfed audit verify` checks everything.
                match tree.root_at(h.head.size) {
                    Ok(root) if root == h.head.root => {}
                    _ => {
                        tracing::error!(log = %name, size = h.head.size, records = tree.len(), "the audit log does not match its newest signed head: it was changed or cut since; run `meshfed audit verify`")
                    }
                }
            }
            let countersigned = writer
                .log
                .countersignatures(&name)
                .map_err(e)?
                .last()
                .map_or(0, |c| c.size);
            let waiting_since =
                (tree.len() > latest.as_ref().map_or(0, |h| h.head.size)).then(Instant::now);
            if let (Scope::Federation(f), Some(h)) = (&scope, &latest) {
                writer.watch(f).send_replace(h.head.size);
            }
            writer.logs.insert(
                name.clone(),
                Log {
                    scope,
                    name,
                    tree,
                    latest,
                    latest_chain,
                    due_records: u64::from(waiting_since.is_some()),
                    waiting_since,
                    countersigned,
                },
            );
        }
        Ok(writer)
    }

    fn watch(&self, federation: &FederationId) -> tokio::sync::watch::Sender<u64> {
        Shared::watch(&self.shared.heads, federation)
    }

    /// Notes that the partner countersigned `federation`'s log up to `size`.
    fn countersigned_up_to(&mut self, federation: &FederationId, size: u64) {
        if let Some(l) = self.logs.get_mut(&federation.to_string()) {
            l.countersigned = size;
        }
        Shared::watch(&self.shared.countersigned, federation).send_replace(size);
    }

    pub(super) fn run(mut self, rx: Receiver<Command>) {
        loop {
            let wait = self
                .next_due()
                .map(|due| due.saturating_duration_since(Instant::now()));
            let first = match wait {
                Some(wait) => rx.recv_timeout(wait),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let mut commands = Vec::new();
            let stopping = match first {
                Ok(c) => {
                    commands.push(c);
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            // Group commit: records that come within `GROUP` of the first share one
            // transaction (one fsync); a question (an offer, a head, a flush, a stop) is
            // answered at once.
            let until = Instant::now() + GROUP;
            while commands.len() < TURN && !commands.last().is_some_and(Command::asks) {
                let left = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(c) => commands.push(c),
                    Err(_) => break,
                }
            }
            let stop = commands.iter().position(|c| matches!(c, Command::Stop(_)));
            let done = stop.map(|i| {
                // Commands after a stop are not taken (the gateway's tasks have ended).
                commands.truncate(i + 1);
                match commands.pop() {
                    Some(Command::Stop(done)) => Some(done),
                    _ => None,
                }
            });
            self.turn(commands, stopping || done.is_some());
            if let Some(done) = done {
                drop(self);
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
            if stopping {
                return;
            }
        }
    }

    /// When the next head or failure record is due.
    fn next_due(&self) -> Option<Instant> {
        let heads = self
            .logs
            .values()
            .filter_map(|l| l.waiting_since)
            .map(|t| t + self.config.head_interval);
        let failures = self
            .failures
            .values()
            .map(|f| f.opened + self.config.failure_window);
        heads.chain(failures).min()
    }

    fn turn(&mut self, commands: Vec<Command>, stopping: bool) {
        let mut rows = Vec::new();
        for command in commands {
            match command {
                Command::Record { scope, time, event } => {
                    self.add(&mut rows, scope, time, event, None)
                }
                Command::Crossed {
                    federation,
                    time,
                    items,
                } => {
                    for c in items {
                        self.messages(&mut rows, &federation, time, c);
                    }
                }
                Command::HandshakeFailed {
                    remote,
                    peer,
                    code,
                    reason,
                    time,
                } => {
                    let f = self
                        .failures
                        .entry((remote, code))
                        .or_insert_with(|| Failures {
                            peer: None,
                            reason: String::new(),
                            count: 0,
                            first: time,
                            last: time,
                            opened: Instant::now(),
                        });
                    f.count += 1;
                    f.last = time;
                    f.reason = reason;
                    if peer.is_some() {
                        f.peer = peer;
                    }
                }
                Command::Offer { federation, reply } => {
                    self.write(&mut rows);
                    self.sign_due(false);
                    let _ = reply.send(self.offer(&federation));
                }
                Command::Countersigned {
                    federation,
                    size,
                    by,
                    countersignature,
                    partner_chain,
                } => {
                    let name = federation.to_string();
                    let stored = self.log.add_countersignature(&StoredCountersignature {
                        scope: name.clone(),
                        size,
                        by: by.to_string(),
                        signature: HeadBlob::new(countersignature, partner_chain).encode(),
                    });
                    match stored {
                        Ok(()) => {
                            let known = self.logs.get(&name).map_or(0, |l| l.countersigned);
                            self.countersigned_up_to(&federation, known.max(size));
                        }
                        Err(e) => {
                            tracing::error!(log = %name, error = %e, "could not keep a countersignature")
                        }
                    }
                }
                Command::PartnerClaims {
                    federation,
                    peer,
                    head,
                } => {
                    self.write(&mut rows);
                    if let Some(what) = self.claim(&federation, &head) {
                        tracing::error!(%federation, %peer, %what, "the partner countersigned a head of this node's audit log that the log does not hold");
                        self.add(
                            &mut rows,
                            Scope::Federation(federation),
                            self.clock.now(),
                            Event::Discrepancy {
                                peer,
                                what: Text::new(what),
                            },
                            None,
                        );
                    }
                }
                Command::Head {
                    federation,
                    size,
                    reply,
                } => {
                    let _ = reply.send(self.head_at(&federation, size));
                }
                Command::PartnerHead { federation, reply } => {
                    let head = self.log.partner_head(federation.as_ref());
                    let _ = reply.send(head.unwrap_or_else(|e| {
                        tracing::error!(%federation, error = %e, "cannot read the partner head this node countersigned");
                        None
                    }));
                }
                Command::KeepPartnerHead { head, event } => {
                    if let Err(e) = self.log.set_partner_head(&head) {
                        tracing::error!(log = %head.scope, error = %e, "cannot keep the partner head this node countersigned");
                    }
                    match head.scope.parse::<Scope>() {
                        Ok(scope) => {
                            let time = self.clock.now();
                            self.add(&mut rows, scope, time, event, None);
                        }
                        Err(e) => {
                            tracing::error!(log = %head.scope, error = %e, "a partner head of no log")
                        }
                    }
                }
                Command::Prune {
                    federation,
                    before,
                    days,
                } => {
                    self.write(&mut rows);
                    let name = federation.to_string();
                    match self.log.prune(&name, &["messages", "refused"], before) {
                        Ok((0, _)) => {}
                        Ok((records, last)) => {
                            tracing::info!(log = %name, records, days, "pruned audit records kept past the agreed retention");
                            let event = Event::Pruned {
                                before_seq: last.map_or(0, |l| l + 1),
                                records,
                                reason: Text::new(format!(
                                    "message and refusal records older than the agreed retention of {days} days"
                                )),
                            };
                            let time = self.clock.now();
                            self.add(&mut rows, Scope::Federation(federation), time, event, None);
                        }
                        Err(e) => {
                            tracing::error!(log = %name, error = %e, "cannot prune the audit log")
                        }
                    }
                }
                Command::Stop(done) => {
                    // Handled by `run`; a stop here would be a bug, answered all the same.
                    let _ = done.send(());
                }
                Command::Flush(done) => {
                    self.failures_due(&mut rows, true);
                    self.write(&mut rows);
                    self.sign_due(true);
                    let _ = done.send(());
                }
            }
        }
        self.failures_due(&mut rows, stopping);
        self.write(&mut rows);
        self.sign_due(stopping);
    }

    /// The intermediates that chain `c`'s signer certificate to its mesh's CA: the ones it
    /// came with, or this node's own when it is this node's certificate.
    /// Adds the `messages` record of `c` (more than one past [`MAX_MESSAGES`]), with its
    /// evidence beside it, and keeps the signer certificates it names.
    fn messages(
        &mut self,
        rows: &mut Vec<Row>,
        federation: &FederationId,
        time: Timestamp,
        c: Crossed,
    ) {
        let Crossed {
            direction,
            peer,
            batch,
            messages,
            intermediates,
        } = c;
        for m in &messages {
            if let Some(der) = &m.certificate
                && self.certificates.insert(m.certificate_digest)
            {
                let chain = self.intermediates(intermediates.as_deref(), der);
                if let Err(err) = self.log.keep_certificate(
                    &m.certificate_digest,
                    &HeadBlob::new(der.to_vec(), chain).encode(),
                ) {
                    self.certificates.remove(&m.certificate_digest);
                    tracing::error!(error = %err, "could not keep a signer certificate for the audit trail");
                }
            }
        }
        let (batch, batch_evidence) = batch.unzip();
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            let chunk: Vec<CrossedMessage> = messages.by_ref().take(MAX_MESSAGES).collect();
            let mut ids = Vec::with_capacity(chunk.len());
            let mut digests = Vec::with_capacity(chunk.len());
            let mut envelopes = Vec::with_capacity(chunk.len());
            for m in chunk {
                let (commitment, _) = self.key.commit(&m.envelope, &m.evidence.payload_digest);
                ids.push(m.envelope.0);
                digests.push(MessageDigest {
                    envelope: m.envelope,
                    source: m.source,
                    destination: m.destination,
                    topic: Text::new(m.topic),
                    size: m.size,
                    qos: m.qos,
                    index: u64::from(m.index),
                    commitment,
                });
                envelopes.push(m.evidence);
            }
            let evidence = Evidence {
                batch: batch_evidence.clone(),
                envelopes,
            };
            let event = Event::Messages {
                direction,
                peer: peer.clone(),
                batch,
                messages: digests,
            };
            self.add(
                rows,
                Scope::Federation(federation.clone()),
                time,
                event,
                Some((ids, evidence.encode())),
            );
        }
    }

    /// The intermediates (issuing CAs) that chain the signer certificate `der` to its mesh's
    /// CA: the link's, for a peer's envelopes; this node's own chain for its own.
    fn intermediates(&self, link: Option<&[Vec<u8>]>, der: &[u8]) -> Vec<Vec<u8>> {
        if let Some(chain) = link {
            return chain.to_vec();
        }
        let (_, chain) = self.signer.signer();
        match chain.split_first() {
            Some((own, rest)) if der == own.as_slice() => rest.to_vec(),
            _ => Vec::new(),
        }
    }

    /// Numbers `event` in its log and adds its row.
    fn add(
        &mut self,
        rows: &mut Vec<Row>,
        scope: Scope,
        time: Timestamp,
        event: Event,
        named: Option<Named>,
    ) {
        let (envelopes, evidence) = named.map_or((Vec::new(), None), |(ids, e)| (ids, Some(e)));
        let name = scope.to_string();
        let log = self.logs.entry(name.clone()).or_insert_with(|| Log {
            scope: scope.clone(),
            name: name.clone(),
            tree: Tree::from_leaf_hashes(Vec::new()),
            latest: None,
            latest_chain: Vec::new(),
            waiting_since: None,
            due_records: 0,
            countersigned: 0,
        });
        let seq = log.tree.len();
        let kind = event.kind();
        let peer = event.peer().map(ToString::to_string);
        let record = Record {
            scope,
            seq,
            time,
            event,
        };
        let body = record.to_bytes();
        let leaf = meshfed_proto::batch::merkle::leaf_hash(&body);
        let mac = self.key.mac(&record.scope, seq, &leaf);
        log.tree.push(leaf);
        // A countersignature of the partner's head is covered by the next head, not one of
        // its own: otherwise each side's countersignature would make a head the other
        // countersigns, for ever, on an idle federation.
        if kind != "countersigned" {
            log.waiting_since.get_or_insert_with(Instant::now);
            log.due_records += 1;
        }
        rows.push(Row {
            scope: name,
            seq,
            time,
            kind,
            peer,
            body,
            leaf: *leaf.as_bytes(),
            mac: *mac.as_bytes(),
            envelopes,
            evidence,
        });
    }

    /// Appends `rows` (emptying it). A failure is logged: the records are in the trees, so the
    /// next head covers leaves the file lacks, which `audit verify` reports.
    fn write(&mut self, rows: &mut Vec<Row>) {
        if rows.is_empty() {
            return;
        }
        let new: Vec<NewRecord<'_>> = rows
            .iter()
            .map(|r| NewRecord {
                scope: &r.scope,
                seq: r.seq,
                time: r.time,
                kind: r.kind,
                peer: r.peer.as_deref(),
                body: &r.body,
                leaf: &r.leaf,
                mac: &r.mac,
                envelopes: &r.envelopes,
                evidence: r.evidence.as_deref(),
            })
            .collect();
        match self.log.append(&new) {
            Ok(()) => {
                self.counters.records.inc_by(new.len() as u64);
            }
            Err(e) => {
                tracing::error!(error = %e, records = new.len(), "could not append audit records");
            }
        }
        drop(new);
        rows.clear();
    }

    /// Records the failed handshakes whose window has passed (all of them if `all`).
    fn failures_due(&mut self, rows: &mut Vec<Row>, all: bool) {
        let window = self.config.failure_window;
        let now = Instant::now();
        let due: Vec<(String, String)> = self
            .failures
            .iter()
            .filter(|(_, f)| all || now >= f.opened + window)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(f) = self.failures.remove(&key) else {
                continue;
            };
            let event = Event::HandshakeFailed {
                peer: f.peer,
                remote: Text::new(key.0),
                code: Text::new(key.1),
                reason: Text::new(f.reason),
                count: f.count,
                first: f.first,
                last: f.last,
            };
            self.add(rows, Scope::Node, f.last, event, None);
        }
    }

    /// Signs a head of every log that is due one (every log with records waiting if `all`).
    fn sign_due(&mut self, all: bool) {
        let now = Instant::now();
        let every = self.config.head_every;
        let interval = self.config.head_interval;
        let due: Vec<String> = self
            .logs
            .values()
            .filter(|l| {
                l.waiting() > 0
                    && (all
                        || l.due_records >= every
                        || l.waiting_since.is_some_and(|t| now >= t + interval))
            })
            .map(|l| l.name.clone())
            .collect();
        for name in due {
            if let Err(e) = self.sign(&name) {
                tracing::error!(log = %name, error = %e, "could not sign an audit tree head");
            }
        }
    }

    fn sign(&mut self, name: &str) -> Result<(), String> {
        let (key, chain) = self.signer.signer();
        let time = self.clock.now();
        let Some(log) = self.logs.get_mut(name) else {
            return Ok(());
        };
        let head = TreeHead {
            mesh: self.mesh.clone(),
            scope: log.scope.clone(),
            size: log.tree.len(),
            root: log.tree.root(),
            time,
        };
        let signed = SignedHead::sign(head, &key).map_err(|e| e.to_string())?;
        self.log
            .add_head(&StoredHead {
                scope: name.to_owned(),
                size: signed.head.size,
                time,
                head: HeadBlob::new(signed.to_bytes(), chain.clone()).encode(),
            })
            .map_err(|e| e.to_string())?;
        let size = signed.head.size;
        log.latest = Some(signed);
        log.latest_chain = chain;
        log.due_records = 0;
        self.counters.heads.inc();
        log.waiting_since = None;
        if let Scope::Federation(f) = log.scope.clone() {
            self.watch(&f).send_replace(size);
        }
        Ok(())
    }

    /// Whether the partner's claim to have countersigned our `head` holds: the log holds that
    /// many records with that root. Takes the size as what the partner countersigned last
    /// when it holds; says what is wrong when it does not.
    fn claim(&mut self, federation: &FederationId, head: &TreeHead) -> Option<String> {
        let name = federation.to_string();
        let Some(log) = self.logs.get_mut(&name) else {
            return Some(format!(
                "the partner countersigned this node's log of {} records, and this node holds no such log: its audit file was lost or replaced",
                head.size
            ));
        };
        match log.tree.root_at(head.size) {
            Ok(root) if root == head.root => {
                self.countersigned_up_to(federation, head.size);
                None
            }
            Ok(_) => Some(format!(
                "the partner countersigned this node's log at {} records, and the log's first {} records hash to another root: it was rewritten",
                head.size, head.size
            )),
            Err(_) => Some(format!(
                "rollback: the partner countersigned this node's log at {} records, and the log holds {}",
                head.size,
                log.tree.len()
            )),
        }
    }

    /// Our signed head of `size` of `federation`'s log.
    fn head_at(&self, federation: &FederationId, size: u64) -> Option<TreeHead> {
        let name = federation.to_string();
        let log = self.logs.get(&name)?;
        if let Some(h) = log.latest.as_ref().filter(|h| h.head.size == size) {
            return Some(h.head.clone());
        }
        let stored = self.log.heads(&name).ok()?;
        let blob = stored.iter().find(|h| h.size == size)?;
        let blob = HeadBlob::decode(&blob.head).ok()?;
        SignedHead::from_bytes(&blob.0).ok().map(|h| h.head)
    }

    /// The newest head of `federation`'s log, with a consistency proof from the size its
    /// partner last countersigned.
    fn offer(&self, federation: &FederationId) -> Option<super::Offer> {
        let log = self.logs.get(&federation.to_string())?;
        let head = log.latest.clone()?;
        let from = log.countersigned;
        let consistency = (from > 0 && from < head.head.size)
            .then(|| log.tree.consistency(from, head.head.size).ok())
            .flatten();
        let offer = HeadOffer { head, consistency };
        Some((offer.to_bytes(), log.latest_chain.clone()))
    }
}
