//! The audit trail read back: verify, export, report and prove — for the API while the gateway
//! runs, and for `meshfed audit` on a stopped node alike (the audit file is WAL SQLite: a
//! reader does not disturb the writer).
//!
//! What a check trusts: the audit key in the node directory (the MACs), this mesh's CA
//! certificate (the heads), and each partner's trust bundle as the registry stores it (their
//! countersignatures) — certificates are checked as they stood when they signed.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, SystemTime};

use meshfed_audit::head::{Countersignature, CountersignedHead, SignedHead};
use meshfed_audit::proof::{MessageProof, ProofParts, SignedBy};
use meshfed_audit::record::{AuditKey, Event, Record, RecordMac, Scope};
use meshfed_audit::verify::{Keys, LogCheck, StoredRecord};
use meshfed_proto::batch::BatchHead;
use meshfed_proto::batch::merkle::TreeHash;
use meshfed_proto::crypto::VerifyingKey;
use meshfed_proto::envelope::{EnvelopeId, Timestamp};
use meshfed_proto::{FederationId, MeshId};
use meshfed_store::audit::RecordFilter;
use meshfed_store::{AuditLog, Store};
use meshfed_trust::TrustBundle;

use super::views::{
    AgreementEntry, AuditPage, AuditRecordView, AuditReport, AuditVerification, Count,
    FederationReport, LogVerification,
};
use super::writer::{Evidence, HeadBlob};
use super::{KEY_FILE, chain_key};
use crate::clock::rfc3339;
use crate::config::NodeConfig;

/// Most records one page of `GET /v1/audit` holds.
pub const MAX_PAGE: u64 = 10_000;

/// A node's audit trail, open for reading.
pub struct Inspector {
    log: AuditLog,
    key: AuditKey,
    own: TrustBundle,
    /// Each federation's partner and its stored trust bundle.
    partners: HashMap<String, (MeshId, Option<TrustBundle>)>,
}

impl Inspector {
    /// Opens the audit trail of the node in `dir`.
    pub fn open(dir: &Path, config: &NodeConfig) -> Result<Self, String> {
        let key_path = dir.join(KEY_FILE);
        let key = super::read_key(&key_path).map_err(|e| match e {
            super::KeyFault::Missing => format!(
                "there is no audit key at {}: the gateway makes it when it first starts",
                key_path.display()
            ),
            other => other.to_string(),
        })?;
        let ca_path = config.identity.ca_cert.resolve(dir);
        let ca = std::fs::read_to_string(&ca_path)
            .map_err(|e| format!("cannot read the mesh CA {}: {e}", ca_path.display()))?;
        let own = TrustBundle::from_pem(&ca).map_err(|e| format!("the mesh CA: {e}"))?;
        let store_path = config.store.path.resolve(dir);
        let audit_path = meshfed_store::audit::audit_path(&store_path);
        if !audit_path.exists() {
            return Err(format!(
                "there is no audit log at {}: the gateway creates it when it first starts",
                audit_path.display()
            ));
        }
        let log = AuditLog::open(&store_path).map_err(|e| crate::chain::chain(&e))?;
        let store = Store::open(&store_path).map_err(|e| crate::chain::chain(&e))?;
        let federations = store.federations().map_err(|e| crate::chain::chain(&e))?;
        let partners = federations
            .into_iter()
            .map(|f| {
                let certs = (f.peer_bundle.iter())
                    .map(|d| rustls_pki_types::CertificateDer::from(d.clone()))
                    .collect();
                (
                    f.id.to_string(),
                    (f.peer_mesh, TrustBundle::new(certs).ok()),
                )
            })
            .collect();
        Ok(Self {
            log,
            key,
            own,
            partners,
        })
    }

    /// Every log's name: the node's and each federation's.
    fn logs(&self) -> Result<Vec<String>, String> {
        self.log.log_names().map_err(|e| crate::chain::chain(&e))
    }

    /// This node's signed heads of log `name`, each with the key it verifies under (`None`:
    /// its certificate does not verify against this mesh's CA).
    fn heads(&self, name: &str) -> Result<Vec<(SignedHead, Option<VerifyingKey>)>, String> {
        let stored = self.log.heads(name).map_err(|e| crate::chain::chain(&e))?;
        stored
            .iter()
            .map(|h| {
                let blob = HeadBlob::decode(&h.head)
                    .map_err(|e| format!("log {name}: the head at {} is damaged: {e}", h.size))?;
                let head = SignedHead::from_bytes(&blob.0)
                    .map_err(|e| format!("log {name}: the head at {} is damaged: {e}", h.size))?;
                let key = chain_key(&self.own, &blob.chain(), system_time(head.head.time)).ok();
                Ok((head, key))
            })
            .collect()
    }

    /// Checks every log: each record against its MAC and hash, the order, every signed head
    /// and every partner's countersignature.
    pub fn verify(&self) -> Result<AuditVerification, String> {
        let logs = self
            .log
            .snapshot(|_| {
                let mut logs = Vec::new();
                for name in self.logs()? {
                    logs.push(self.verify_log(&name)?);
                }
                Ok::<_, String>(logs)
            })
            .map_err(|e| crate::chain::chain(&e))??;
        Ok(AuditVerification {
            intact: logs
                .iter()
                .all(|l| l.problems.is_empty() && l.discrepancies.is_empty()),
            logs,
        })
    }

    fn verify_log(&self, name: &str) -> Result<LogVerification, String> {
        let scope: Scope = name
            .parse()
            .map_err(|e| format!("the audit file names a log {name:?}: {e}"))?;
        let heads = self.heads(name)?;
        let mut problems = Vec::new();
        let own_keys: HashMap<u64, VerifyingKey> = heads
            .iter()
            .filter_map(|(h, k)| k.clone().map(|k| (h.head.size, k)))
            .collect();
        let signed: Vec<SignedHead> = heads.into_iter().map(|(h, _)| h).collect();
        let mut countersigned = Vec::new();
        let mut partner_keys: HashMap<(u64, MeshId), VerifyingKey> = HashMap::new();
        let partner_bundle = self.partners.get(name).and_then(|(_, b)| b.clone());
        for c in self
            .log
            .countersignatures(name)
            .map_err(|e| crate::chain::chain(&e))?
        {
            let Some(head) = signed.iter().find(|h| h.head.size == c.size) else {
                problems.push(format!(
                    "log {name}: {} countersigned a head of {} records this node has no signed head of",
                    c.by, c.size
                ));
                continue;
            };
            let parsed = HeadBlob::decode(&c.signature).and_then(|blob| {
                Countersignature::from_bytes(&blob.0)
                    .map(|cs| (cs, blob.chain()))
                    .map_err(|e| e.to_string())
            });
            match parsed {
                Ok((countersignature, chain)) => {
                    if let Some(bundle) = &partner_bundle
                        && let Ok(key) =
                            chain_key(bundle, &chain, system_time(countersignature.time))
                    {
                        partner_keys.insert((c.size, countersignature.by.clone()), key);
                    }
                    countersigned.push(CountersignedHead {
                        head: head.head.clone(),
                        countersignature,
                    });
                }
                Err(e) => problems.push(format!(
                    "log {name}: the countersignature of the head at {} records is damaged: {e}",
                    c.size
                )),
            }
        }
        let own = |h: &SignedHead| own_keys.get(&h.head.size).cloned();
        let partner = |c: &CountersignedHead| {
            partner_keys
                .get(&(c.head.size, c.countersignature.by.clone()))
                .cloned()
        };
        let mut check = LogCheck::new(
            scope,
            &self.key,
            &signed,
            &countersigned,
            Keys {
                own: &own,
                partner: &partner,
            },
        );
        let mut discrepancies = Vec::new();
        let mut damaged = None;
        self.log
            .for_each(name, |row| {
                let (Ok(leaf), Ok(mac)) = (
                    TreeHash::try_from(row.leaf.as_slice()),
                    <[u8; 48]>::try_from(row.mac.as_slice()),
                ) else {
                    damaged = Some(format!(
                        "log {name}: record {} (stored at position {}) has a damaged hash or MAC column",
                        row.seq, row.id
                    ));
                    return ControlFlow::Break(());
                };
                if row.kind == "discrepancy"
                    && let Some(Ok(record)) = row.body.as_deref().map(Record::from_bytes)
                    && let Event::Discrepancy { peer, what } = record.event
                {
                    discrepancies.push(format!(
                        "{}: with {peer}: {what}",
                        rfc3339(record.time)
                    ));
                }
                check.push(&StoredRecord {
                    position: u64::try_from(row.id).unwrap_or_default(),
                    seq: row.seq,
                    bytes: row.body,
                    leaf_hash: leaf,
                    mac: RecordMac::from_bytes(mac),
                });
                ControlFlow::Continue(())
            })
            .map_err(|e| crate::chain::chain(&e))?;
        let result = check.finish();
        problems.extend(damaged);
        problems.extend(result.problems.iter().map(ToString::to_string));
        Ok(LogVerification {
            log: name.to_owned(),
            records: result.records,
            pruned: result.pruned,
            heads: result.heads,
            countersignatures: result.countersignatures,
            problems,
            discrepancies,
        })
    }

    /// The records that match `filter` (at most [`MAX_PAGE`]), with the next page's start.
    pub fn page(&self, filter: &RecordFilter) -> Result<AuditPage, String> {
        let limit = filter.limit.unwrap_or(1_000).clamp(1, MAX_PAGE);
        let rows = self
            .log
            .records(&RecordFilter {
                limit: Some(limit + 1),
                ..filter.clone()
            })
            .map_err(|e| crate::chain::chain(&e))?;
        let more = rows.len() as u64 > limit;
        let records: Vec<AuditRecordView> = rows
            .into_iter()
            .take(limit as usize)
            .map(|row| AuditRecordView {
                record: row
                    .body
                    .as_deref()
                    .map(|b| match Record::from_bytes(b) {
                        Ok(r) => r.to_json(),
                        Err(e) => serde_json::json!({ "undecodable": e.to_string() }),
                    })
                    .unwrap_or(serde_json::Value::Null),
                id: row.id,
                log: row.scope,
                seq: row.seq,
                time: rfc3339(row.time),
                kind: row.kind,
                peer: row.peer,
            })
            .collect();
        let next = more.then(|| records.last().map(|r| r.id)).flatten();
        Ok(AuditPage { records, next })
    }

    /// Per federation, over `[from, to)` (and one federation only if `federation`): agreements,
    /// volumes, refusals by reason, lifecycle, compliance in force, anomalies, countersigned
    /// heads and discrepancies.
    pub fn report(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        federation: Option<&FederationId>,
    ) -> Result<AuditReport, String> {
        let mut federations = Vec::new();
        for name in self.logs()? {
            let Ok(Scope::Federation(id)) = name.parse::<Scope>() else {
                continue;
            };
            if federation.is_some_and(|f| *f != id) {
                continue;
            }
            let mut r = FederationReport {
                federation: name.clone(),
                peer: self.partners.get(&name).map(|(m, _)| m.to_string()),
                agreements: Vec::new(),
                sent: 0,
                received: 0,
                bytes_sent: 0,
                bytes_received: 0,
                refused: Vec::new(),
                lifecycle: Vec::new(),
                compliance: None,
                anomalies: Vec::new(),
                countersigned: 0,
                discrepancies: Vec::new(),
            };
            let mut refused: BTreeMap<String, u64> = BTreeMap::new();
            let rows = self
                .log
                .records(&RecordFilter {
                    scope: Some(name.clone()),
                    from,
                    to,
                    ..RecordFilter::default()
                })
                .map_err(|e| crate::chain::chain(&e))?;
            if rows.is_empty() {
                continue;
            }
            for row in rows {
                let Some(Ok(record)) = row.body.as_deref().map(Record::from_bytes) else {
                    continue;
                };
                let at = rfc3339(record.time);
                match record.event {
                    Event::Agreement {
                        version,
                        agreement_digest,
                        policy,
                        cause,
                        ..
                    } => {
                        r.agreements.push(AgreementEntry {
                            time: at,
                            version,
                            cause: serde_json::to_value(cause)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default(),
                            digest: hex::encode(agreement_digest),
                        });
                        r.compliance = serde_json::from_str::<serde_json::Value>(policy.as_str())
                            .ok()
                            .map(compliance_terms);
                    }
                    Event::Messages {
                        direction,
                        messages,
                        ..
                    } => {
                        let (count, bytes) = match direction {
                            meshfed_audit::record::Delivery::Sent => {
                                (&mut r.sent, &mut r.bytes_sent)
                            }
                            meshfed_audit::record::Delivery::Received => {
                                (&mut r.received, &mut r.bytes_received)
                            }
                        };
                        *count += messages.len() as u64;
                        *bytes += messages.iter().map(|m| m.size).sum::<u64>();
                    }
                    Event::Refused { reason, .. } => {
                        *refused.entry(reason.as_str().to_owned()).or_default() += 1;
                    }
                    Event::Lifecycle {
                        from, to, reason, ..
                    } => r.lifecycle.push(format!(
                        "{at}: {} → {} ({reason})",
                        from.name(),
                        to.name()
                    )),
                    Event::Anomaly {
                        topic,
                        measure,
                        observed,
                        baseline,
                        action,
                        ..
                    } => r.anomalies.push(format!(
                        "{at}: {measure}{} {observed:.1} against {baseline:.1}: {action}",
                        topic.map(|t| format!(" on {t}")).unwrap_or_default()
                    )),
                    Event::Breaker {
                        from, to, reason, ..
                    } => r
                        .anomalies
                        .push(format!("{at}: circuit breaker {from} → {to}: {reason}")),
                    Event::Countersigned { .. } => r.countersigned += 1,
                    Event::Discrepancy { what, .. } => {
                        r.discrepancies.push(format!("{at}: {what}"))
                    }
                    _ => {}
                }
            }
            r.refused = refused
                .into_iter()
                .map(|(reason, count)| Count { reason, count })
                .collect();
            federations.push(r);
        }
        Ok(AuditReport {
            from: from.map(rfc3339),
            to: to.map(rfc3339),
            federations,
        })
    }

    /// The proof of envelope `id`: its digest record, the record's inclusion in a head a
    /// partner countersigned, that head, and how the envelope was signed. Fails when the
    /// envelope was not recorded (audit level below `full`, or pruned), or no countersigned
    /// head covers its record yet.
    pub fn prove(&self, id: &EnvelopeId) -> Result<MessageProof, String> {
        self.log
            .snapshot(|_| self.prove_now(id))
            .map_err(|e| crate::chain::chain(&e))?
    }

    fn prove_now(&self, id: &EnvelopeId) -> Result<MessageProof, String> {
        let named = self
            .log
            .envelope_records(&id.0)
            .map_err(|e| crate::chain::chain(&e))?;
        let Some((row, evidence)) = named
            .into_iter()
            .find(|(r, e)| r.kind == "messages" && e.is_some())
        else {
            return Err(format!(
                "envelope {id} has no digest record here: it did not cross with this node at audit level full, or retention pruned it"
            ));
        };
        let body = row
            .body
            .ok_or_else(|| format!("the record of envelope {id} was pruned by retention"))?;
        let damaged = |what: &str, e: &dyn std::fmt::Display| {
            format!("the {what} of envelope {id} is damaged: {e}")
        };
        let record = Record::from_bytes(&body).map_err(|e| damaged("record", &e))?;
        let Event::Messages { messages, .. } = &record.event else {
            return Err(damaged(
                "record",
                &format!("it is a {} record", record.kind()),
            ));
        };
        let at = messages
            .iter()
            .position(|m| m.envelope == *id)
            .ok_or_else(|| damaged("record", &"it does not name the envelope"))?;
        let mut evidence = Evidence::decode(evidence.as_deref().unwrap_or_default())
            .map_err(|e| damaged("evidence", &e))?;
        if evidence.envelopes.len() != messages.len() {
            return Err(damaged(
                "evidence",
                &format!(
                    "it holds {} envelopes, the record {}",
                    evidence.envelopes.len(),
                    messages.len()
                ),
            ));
        }
        let envelope = evidence.envelopes.swap_remove(at);
        // Signed in a batch: its head, and the envelope's inclusion proof made from the leaves.
        // Signed alone: its own signature.
        let signed_by = match evidence.batch.take() {
            Some(batch) => {
                let head = BatchHead::decode(&batch.head).map_err(|e| damaged("batch head", &e))?;
                let leaves = batch
                    .leaves
                    .chunks(48)
                    .map(TreeHash::try_from)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| damaged("batch leaves", &e))?;
                let inclusion = meshfed_proto::batch::merkle::Tree::from_leaf_hashes(leaves)
                    .proof(messages[at].index)
                    .map_err(|e| damaged("batch proof", &e))?;
                Signed::Batch(head, inclusion)
            }
            None => {
                let bytes = envelope
                    .signature
                    .as_ref()
                    .map_or(&[][..], |s| s.as_slice());
                let signature = <[u8; meshfed_proto::crypto::SIGNATURE_LEN]>::try_from(bytes)
                    .map_err(|_| damaged("signature", &format!("it is {} bytes", bytes.len())))?;
                Signed::Alone(meshfed_proto::crypto::Signature(signature))
            }
        };
        let header = meshfed_proto::envelope::Header::decode(&envelope.header)
            .map_err(|e| damaged("header", &e))?;
        let kept = self
            .log
            .certificate(header.certificate.digest())
            .map_err(|e| crate::chain::chain(&e))?
            .ok_or_else(|| format!("the signer certificate of envelope {id} was not kept"))?;
        // The certificate, then the intermediates that chain it to its mesh's CA.
        let kept = HeadBlob::decode(&kept).map_err(|e| damaged("signer certificate", &e))?;
        let batch_chain: Vec<Vec<u8>> = std::iter::once(kept.0.to_vec())
            .chain(kept.chain())
            .collect();
        let position = self
            .log
            .position(&row.scope, row.id)
            .map_err(|e| crate::chain::chain(&e))?;
        // The smallest countersigned head that covers the record.
        let signed = self.heads(&row.scope)?;
        let countersignatures = self
            .log
            .countersignatures(&row.scope)
            .map_err(|e| crate::chain::chain(&e))?;
        let (c, head, head_chain) = countersignatures
            .iter()
            .filter(|c| c.size > position)
            .find_map(|c| {
                let (head, _) = signed.iter().find(|(h, _)| h.head.size == c.size)?;
                let blob = self.log.heads(&row.scope).ok()?;
                let chain = blob
                    .iter()
                    .find(|h| h.size == c.size)
                    .and_then(|h| HeadBlob::decode(&h.head).ok())?
                    .chain();
                Some((c, head.clone(), chain))
            })
            .ok_or_else(|| {
                format!(
                    "no head the partner countersigned covers the record of envelope {id} yet (it is record {position} of log {}); heads are countersigned while the link is up",
                    row.scope
                )
            })?;
        let c_blob = HeadBlob::decode(&c.signature)
            .map_err(|e| format!("the countersignature is damaged: {e}"))?;
        let countersignature = Countersignature::from_bytes(&c_blob.0)
            .map_err(|e| format!("the countersignature is damaged: {e}"))?;
        let tree = meshfed_proto::batch::merkle::Tree::from_leaf_hashes(
            self.log
                .leaves(&row.scope)
                .map_err(|e| crate::chain::chain(&e))?
                .iter()
                .map(|l| TreeHash::try_from(l.as_slice()))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("a leaf hash of log {} is damaged: {e}", row.scope))?,
        );
        let inclusion = tree
            .proof_at(position, head.head.size)
            .map_err(|e| format!("cannot prove record {position} in log {}: {e}", row.scope))?;
        let opening = self.key.opening(id);
        Ok(MessageProof::new(ProofParts {
            record: &body,
            inclusion: &inclusion,
            head: &head,
            head_chain: &head_chain,
            countersignature: &countersignature,
            countersigner_chain: &c_blob.chain(),
            opening: &opening,
            header: &envelope.header,
            payload_digest: &envelope.payload_digest,
            signed: match &signed_by {
                Signed::Batch(head, inclusion) => SignedBy::Batch { head, inclusion },
                Signed::Alone(signature) => SignedBy::Alone(signature),
            },
            batch_chain: &batch_chain,
        }))
    }
}

/// How a proven envelope was signed, as its evidence keeps it.
enum Signed {
    Batch(BatchHead, meshfed_proto::batch::merkle::InclusionProof),
    Alone(meshfed_proto::crypto::Signature),
}

/// The compliance clauses of an agreement's terms (JSON): frameworks, residency, regions,
/// retention, audit level.
fn compliance_terms(terms: serde_json::Value) -> serde_json::Value {
    let keep = [
        "frameworks",
        "residency",
        "regions",
        "retention_days",
        "audit_level",
    ];
    match terms {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .collect(),
        ),
        other => other,
    }
}

fn system_time(t: Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(t.0)
}

/// What checking a proof found: the checked facts, and the signers whose certificate no CA
/// given vouched for (their signatures verified under the certificate the proof carries).
pub struct ProofChecked {
    /// The facts the proof establishes.
    pub checked: meshfed_audit::proof::Checked,
    /// Signers checked without a CA of their mesh (`head signer plant-a`, say).
    pub unanchored: Vec<String>,
}

/// Checks a proof file with the CAs a third party trusts (`cas`, each a mesh's trust bundle).
/// The countersigning partner's chain must lead to the CA given for its mesh; a head or batch
/// signer of a mesh no CA was given for is checked under the certificate the proof carries,
/// and named in `unanchored` — the partner's countersignature vouches for the log it signed.
pub fn check_proof(
    proof: &MessageProof,
    cas: &[TrustBundle],
) -> Result<ProofChecked, meshfed_audit::proof::ProofCheckError> {
    use meshfed_audit::proof::SignerRole;
    let unanchored = std::cell::RefCell::new(Vec::new());
    let checked = proof.check(|chain, signer| {
        let end = chain.first().ok_or_else(|| "an empty chain".to_owned())?;
        let info = meshfed_trust::inspect_node_cert(end).map_err(|e| e.to_string())?;
        match cas.iter().find(|b| b.mesh() == signer.mesh) {
            // When the certificate signed is not in the proof: any time within its validity
            // will do; its chain to the CA is what counts.
            Some(bundle) => chain_key(bundle, chain, info.not_before + Duration::from_secs(1)),
            None if signer.role != SignerRole::Countersigner => {
                unanchored
                    .borrow_mut()
                    .push(format!("{} {}", signer.role, signer.mesh));
                info.public_key
                    .verifying_key()
                    .map_err(|e| format!("the signer key: {e}"))
            }
            None => Err(format!(
                "no CA of mesh {} was given: the countersigning partner's CA is needed",
                signer.mesh
            )),
        }
    })?;
    Ok(ProofChecked {
        checked,
        unanchored: unanchored.into_inner(),
    })
}
