//! The audit log's file: an SQLite database beside the store file (`<store>-audit`), so that
//! its writer never waits for the journal's write lock nor the journal for it (DESIGN §3.9,
//! §3.12). WAL mode, `synchronous=FULL`: a batch of records is on disk when [`AuditLog::append`]
//! returns.
//!
//! The store does not know what a record means: `meshfed-audit` encodes it, hashes it and
//! MACs it, and the node hands the bytes here. What is kept:
//! - `audit_record`: every record of every scope (the node's own tree, one tree per
//!   federation) in the order it was appended, with its leaf hash and MAC. Pruning empties a
//!   record's body and keeps the rest, so the trees and their heads still verify.
//! - `audit_evidence`: beside a `messages` record, the ids of the envelopes it names (16 bytes
//!   each, one after the other: `audit prove` finds a record by scanning them, which costs
//!   nothing on the write path, where an index row per envelope would) and what proves how they
//!   crossed, pruned with it; `audit_certificate`: the signer certificates that evidence names,
//!   once each.
//! - `audit_head`: the tree heads this node signed; `audit_countersignature`: the partners'
//!   countersignatures of them; `audit_partner_head`: the newest head of each partner's tree
//!   this node countersigned (what it checks the partner's next head against).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use meshfed_proto::envelope::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Doing, StoreError};

/// The audit file's schema version (`PRAGMA user_version`).
const VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE audit_record (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    peer TEXT,
    body BLOB,
    leaf BLOB NOT NULL,
    mac BLOB NOT NULL
);
CREATE INDEX audit_record_scope ON audit_record (scope, id);
CREATE TABLE audit_evidence (
    record INTEGER PRIMARY KEY,
    envelopes BLOB NOT NULL,
    evidence BLOB
);
CREATE TABLE audit_certificate (
    digest BLOB PRIMARY KEY,
    der BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE audit_head (
    scope TEXT NOT NULL,
    size INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    head BLOB NOT NULL,
    PRIMARY KEY (scope, size)
);
CREATE TABLE audit_countersignature (
    scope TEXT NOT NULL,
    size INTEGER NOT NULL,
    by_mesh TEXT NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (scope, size, by_mesh)
);
CREATE TABLE audit_partner_head (
    scope TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    offer BLOB NOT NULL,
    countersignature BLOB NOT NULL
);
";

/// Where the audit file of the store file `store` is.
pub fn audit_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push("-audit");
    PathBuf::from(name)
}

/// A record to append.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Its tree (`node` or a federation id).
    pub scope: &'a str,
    /// Its index in that tree.
    pub seq: u64,
    /// When it happened.
    pub time: Timestamp,
    /// Its kind, for filtering.
    pub kind: &'a str,
    /// The partner it concerns, for filtering.
    pub peer: Option<&'a str>,
    /// The record's bytes (its leaf).
    pub body: &'a [u8],
    /// Its leaf hash.
    pub leaf: &'a [u8],
    /// Its MAC.
    pub mac: &'a [u8],
    /// The envelopes it names (ids).
    pub envelopes: &'a [[u8; 16]],
    /// What proves how they crossed (the node's encoding), kept beside the record, not in it,
    /// and pruned with it.
    pub evidence: Option<&'a [u8]>,
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its place in the file (append order over all scopes).
    pub id: i64,
    /// Its tree.
    pub scope: String,
    /// The index it was stored under.
    pub seq: u64,
    /// When it happened.
    pub time: Timestamp,
    /// Its kind.
    pub kind: String,
    /// The partner it concerns.
    pub peer: Option<String>,
    /// Its bytes; `None` once pruned.
    pub body: Option<Vec<u8>>,
    /// Its leaf hash.
    pub leaf: Vec<u8>,
    /// Its MAC.
    pub mac: Vec<u8>,
}

/// A record that names an envelope, and the record's evidence.
pub type NamedEnvelope = (StoredRecord, Option<Vec<u8>>);

/// A tree head this node signed, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHead {
    /// Its tree.
    pub scope: String,
    /// The tree size it covers.
    pub size: u64,
    /// When it was signed.
    pub time: Timestamp,
    /// The signed head's bytes.
    pub head: Vec<u8>,
}

/// A partner's countersignature of one of this node's heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCountersignature {
    /// The tree.
    pub scope: String,
    /// The head's size.
    pub size: u64,
    /// The partner's mesh.
    pub by: String,
    /// The countersignature's bytes.
    pub signature: Vec<u8>,
}

/// The newest head of a partner's tree this node countersigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerHead {
    /// The federation.
    pub scope: String,
    /// Its size.
    pub size: u64,
    /// The partner's offer (signed head and consistency proof) as received.
    pub offer: Vec<u8>,
    /// This node's countersignature of it.
    pub countersignature: Vec<u8>,
}

/// What to read of the log: every field narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    /// One tree only.
    pub scope: Option<String>,
    /// One kind only.
    pub kind: Option<String>,
    /// Records about one partner only.
    pub peer: Option<String>,
    /// Happened at or after.
    pub from: Option<Timestamp>,
    /// Happened before.
    pub to: Option<Timestamp>,
    /// Stored after this record (paging).
    pub after: Option<i64>,
    /// At most this many.
    pub limit: Option<u64>,
}

/// One tree of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSummary {
    /// The tree.
    pub scope: String,
    /// Records stored.
    pub records: u64,
    /// The next index (one past the largest stored).
    pub next_seq: u64,
}

/// The audit log's file.
#[derive(Debug)]
pub struct AuditLog {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl AuditLog {
    /// Opens (creating if needed) the audit file of the store file `store`.
    pub fn open(store: &Path) -> Result<Self, StoreError> {
        let path = audit_path(store);
        let setup = || -> Result<Connection, StoreError> {
            crate::create_parent(&path)?;
            let mut conn = Connection::open(&path).doing(|| "open the audit file".into())?;
            configure(&mut conn)?;
            Ok(conn)
        };
        let conn = setup().map_err(|e| StoreError::Open {
            path: path.clone(),
            source: Box::new(e),
        })?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on one snapshot of the file: every read `f` makes sees the log as it was when
    /// the first one ran, whatever the writer appends meanwhile (a verification must not see a
    /// countersignature of a head it read no head of).
    pub fn snapshot<T>(&self, f: impl FnOnce(&Self) -> T) -> Result<T, StoreError> {
        self.conn()
            .execute_batch("BEGIN DEFERRED")
            .doing(|| "begin a read of the audit file".into())?;
        let out = f(self);
        self.conn()
            .execute_batch("COMMIT")
            .doing(|| "end a read of the audit file".into())?;
        Ok(out)
    }

    /// Appends `records` in one transaction, on disk when this returns.
    pub fn append(&self, records: &[NewRecord<'_>]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .doing(|| "begin appending audit records".into())?;
        {
            let mut record = tx
                .prepare_cached(
                    "INSERT INTO audit_record (scope, seq, time_ms, kind, peer, body, leaf, mac)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .doing(|| "prepare the audit insert".into())?;
            let mut evidence = tx
                .prepare_cached(
                    "INSERT INTO audit_evidence (record, envelopes, evidence) VALUES (?1, ?2, ?3)",
                )
                .doing(|| "prepare the audit evidence insert".into())?;
            for r in records {
                record
                    .execute(params![
                        r.scope,
                        int(r.seq, "seq")?,
                        int(r.time.0, "time")?,
                        r.kind,
                        r.peer,
                        r.body,
                        r.leaf,
                        r.mac
                    ])
                    .doing(|| format!("append audit record {} of {}", r.seq, r.scope))?;
                if !r.envelopes.is_empty() {
                    let id = tx.last_insert_rowid();
                    evidence
                        .execute(params![id, r.envelopes.as_flattened(), r.evidence])
                        .doing(|| "keep a record's evidence".into())?;
                }
            }
        }
        tx.commit().doing(|| "commit audit records".into())
    }

    /// Every tree, with its count and next index.
    pub fn scopes(&self) -> Result<Vec<ScopeSummary>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT scope, COUNT(*), MAX(seq) FROM audit_record GROUP BY scope ORDER BY scope",
            )
            .doing(|| "prepare the audit scopes query".into())?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .doing(|| "list audit scopes".into())?;
        let mut out = Vec::new();
        for row in rows {
            let (scope, count, max) = row.doing(|| "read an audit scope".into())?;
            out.push(ScopeSummary {
                records: uint(count, &scope, "count")?,
                next_seq: uint(max, &scope, "seq")?.saturating_add(1),
                scope,
            });
        }
        Ok(out)
    }

    /// The name of every log that has records or heads, sorted.
    pub fn log_names(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self.scopes()?.into_iter().map(|s| s.scope).collect();
        names.extend(self.head_scopes()?);
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The leaf hashes of `scope` in stored order.
    pub fn leaves(&self, scope: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT leaf FROM audit_record WHERE scope = ?1 ORDER BY id")
            .doing(|| "prepare the audit leaves query".into())?;
        let rows = stmt
            .query_map([scope], |row| row.get::<_, Vec<u8>>(0))
            .doing(|| format!("read the audit leaves of {scope}"))?;
        rows.map(|r| r.doing(|| format!("read an audit leaf of {scope}")))
            .collect()
    }

    /// Calls `f` with each record of `scope` in stored order, until it breaks.
    pub fn for_each(
        &self,
        scope: &str,
        mut f: impl FnMut(StoredRecord) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("{SELECT} WHERE scope = ?1 ORDER BY id"))
            .doing(|| "prepare the audit records query".into())?;
        let mut rows = stmt
            .query([scope])
            .doing(|| format!("read the audit records of {scope}"))?;
        while let Some(row) = rows
            .next()
            .doing(|| format!("read an audit record of {scope}"))?
        {
            if f(stored(row)?).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The records that match `filter`, in stored order.
    pub fn records(&self, filter: &RecordFilter) -> Result<Vec<StoredRecord>, StoreError> {
        let mut sql = format!("{SELECT} WHERE 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut add = |clause: &str, value: rusqlite::types::Value| {
            args.push(value);
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        };
        if let Some(s) = &filter.scope {
            add("scope =", s.clone().into());
        }
        if let Some(k) = &filter.kind {
            add("kind =", k.clone().into());
        }
        if let Some(p) = &filter.peer {
            add("peer =", p.clone().into());
        }
        if let Some(t) = filter.from {
            add("time_ms >=", int(t.0, "from")?.into());
        }
        if let Some(t) = filter.to {
            add("time_ms <", int(t.0, "to")?.into());
        }
        if let Some(a) = filter.after {
            add("id >", a.into());
        }
        sql.push_str(" ORDER BY id");
        if let Some(l) = filter.limit {
            sql.push_str(&format!(" LIMIT {}", l.min(i64::MAX as u64)));
        }
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&sql)
            .doing(|| "prepare the audit query".into())?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args))
            .doing(|| "query the audit log".into())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().doing(|| "read an audit record".into())? {
            out.push(stored(row)?);
        }
        Ok(out)
    }

    /// The records that name `envelope`, each with its evidence.
    pub fn envelope_records(&self, envelope: &[u8; 16]) -> Result<Vec<NamedEnvelope>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT r.id, r.scope, r.seq, r.time_ms, r.kind, r.peer, r.body, r.leaf, r.mac, v.evidence, v.envelopes
                 FROM audit_evidence v JOIN audit_record r ON r.id = v.record
                 WHERE instr(v.envelopes, ?1) > 0 ORDER BY r.id",
            )
            .doing(|| "prepare the audit envelope query".into())?;
        let mut rows = stmt
            .query([&envelope[..]])
            .doing(|| "find an envelope's audit records".into())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().doing(|| "read an audit record".into())? {
            let evidence = row.get(9).doing(|| "read a record's evidence".into())?;
            let ids: Vec<u8> = row.get(10).doing(|| "read a record's envelopes".into())?;
            // `instr` matches anywhere: the id must be one of the 16-byte ids, not straddle two.
            if ids.chunks_exact(16).any(|id| id == envelope) {
                out.push((stored(row)?, evidence));
            }
        }
        Ok(out)
    }

    /// The position (0-based, in stored order) of record `id` in its scope.
    pub fn position(&self, scope: &str, id: i64) -> Result<u64, StoreError> {
        let conn = self.conn();
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM audit_record WHERE scope = ?1 AND id < ?2",
                params![scope, id],
                |row| row.get(0),
            )
            .doing(|| format!("find the position of audit record {id}"))?;
        uint(n, scope, "position")
    }

    /// Keeps a signer certificate (by its SHA-384 digest), once.
    pub fn keep_certificate(&self, digest: &[u8], der: &[u8]) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("INSERT OR IGNORE INTO audit_certificate (digest, der) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![digest, der]))
            .doing(|| "keep a signer certificate".into())?;
        Ok(())
    }

    /// The signer certificate of SHA-384 `digest`, if kept.
    pub fn certificate(&self, digest: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn()
            .query_row(
                "SELECT der FROM audit_certificate WHERE digest = ?1",
                [digest],
                |row| row.get(0),
            )
            .optional()
            .doing(|| "read a signer certificate".into())
    }

    /// Keeps a head this node signed.
    pub fn add_head(&self, head: &StoredHead) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO audit_head (scope, size, time_ms, head) VALUES (?1, ?2, ?3, ?4)",
                params![
                    head.scope,
                    int(head.size, "size")?,
                    int(head.time.0, "time")?,
                    head.head
                ],
            )
            .doing(|| format!("keep the audit head of {} at {}", head.scope, head.size))?;
        Ok(())
    }

    /// The heads of `scope`, smallest first.
    pub fn heads(&self, scope: &str) -> Result<Vec<StoredHead>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT scope, size, time_ms, head FROM audit_head WHERE scope = ?1 ORDER BY size",
            )
            .doing(|| "prepare the audit heads query".into())?;
        let mut rows = stmt
            .query([scope])
            .doing(|| format!("read the audit heads of {scope}"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().doing(|| "read an audit head".into())? {
            let scope: String = row.get(0).doing(|| "read a head's scope".into())?;
            let size: i64 = row.get(1).doing(|| "read a head's size".into())?;
            let time: i64 = row.get(2).doing(|| "read a head's time".into())?;
            out.push(StoredHead {
                size: uint(size, &scope, "size")?,
                time: Timestamp(uint(time, &scope, "time_ms")?),
                head: row.get(3).doing(|| "read a head".into())?,
                scope,
            });
        }
        Ok(out)
    }

    /// Every scope that has heads, even where its records are gone.
    pub fn head_scopes(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT DISTINCT scope FROM audit_head ORDER BY scope")
            .doing(|| "prepare the head scopes query".into())?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .doing(|| "list head scopes".into())?;
        rows.map(|r| r.doing(|| "read a head scope".into()))
            .collect()
    }

    /// Keeps a partner's countersignature of one of this node's heads.
    pub fn add_countersignature(&self, c: &StoredCountersignature) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO audit_countersignature (scope, size, by_mesh, signature)
                 VALUES (?1, ?2, ?3, ?4)",
                params![c.scope, int(c.size, "size")?, c.by, c.signature],
            )
            .doing(|| {
                format!(
                    "keep {}'s countersignature of {} at {}",
                    c.by, c.scope, c.size
                )
            })?;
        Ok(())
    }

    /// The countersignatures of `scope`'s heads, smallest head first.
    pub fn countersignatures(
        &self,
        scope: &str,
    ) -> Result<Vec<StoredCountersignature>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT scope, size, by_mesh, signature FROM audit_countersignature
                 WHERE scope = ?1 ORDER BY size, by_mesh",
            )
            .doing(|| "prepare the countersignatures query".into())?;
        let mut rows = stmt
            .query([scope])
            .doing(|| format!("read the countersignatures of {scope}"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().doing(|| "read a countersignature".into())? {
            let scope: String = row.get(0).doing(|| "read a scope".into())?;
            let size: i64 = row.get(1).doing(|| "read a size".into())?;
            out.push(StoredCountersignature {
                size: uint(size, &scope, "size")?,
                by: row.get(2).doing(|| "read a countersigner".into())?,
                signature: row.get(3).doing(|| "read a countersignature".into())?,
                scope,
            });
        }
        Ok(out)
    }

    /// The newest head of the partner's tree `scope` that this node countersigned.
    pub fn partner_head(&self, scope: &str) -> Result<Option<PartnerHead>, StoreError> {
        let conn = self.conn();
        conn.query_row(
            "SELECT size, offer, countersignature FROM audit_partner_head WHERE scope = ?1",
            [scope],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                ))
            },
        )
        .optional()
        .doing(|| format!("read the partner head of {scope}"))?
        .map(|(size, offer, countersignature)| {
            Ok(PartnerHead {
                size: uint(size, scope, "size")?,
                scope: scope.to_owned(),
                offer,
                countersignature,
            })
        })
        .transpose()
    }

    /// Keeps `head` as the newest partner head of its scope this node countersigned.
    pub fn set_partner_head(&self, head: &PartnerHead) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO audit_partner_head (scope, size, offer, countersignature)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    head.scope,
                    int(head.size, "size")?,
                    head.offer,
                    head.countersignature
                ],
            )
            .doing(|| format!("keep the partner head of {}", head.scope))?;
        Ok(())
    }

    /// Empties the bodies of `scope`'s records of `kinds` that happened before `before`
    /// (keeping their leaf hashes, MACs and the heads), and forgets which envelopes they named
    /// and their evidence. Returns how many were pruned and the largest pruned index.
    pub fn prune(
        &self,
        scope: &str,
        kinds: &[&str],
        before: Timestamp,
    ) -> Result<(u64, Option<u64>), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .doing(|| "begin pruning the audit log".into())?;
        let before = int(before.0, "before")?;
        let mut pruned = 0u64;
        let mut last: Option<u64> = None;
        for kind in kinds {
            let args = params![scope, before, kind];
            let due = "FROM audit_record WHERE scope = ?1 AND time_ms < ?2 AND kind = ?3 AND body IS NOT NULL";
            tx.execute(
                &format!("DELETE FROM audit_evidence WHERE record IN (SELECT id {due})"),
                args,
            )
            .doing(|| format!("forget the pruned envelopes of {scope}"))?;
            let max: Option<i64> = tx
                .query_row(&format!("SELECT MAX(seq) {due}"), args, |row| row.get(0))
                .doing(|| format!("find what to prune of {scope}"))?;
            let n = tx
                .execute(
                    &format!("UPDATE audit_record SET body = NULL WHERE id IN (SELECT id {due})"),
                    args,
                )
                .doing(|| format!("prune the audit records of {scope}"))?;
            pruned += n as u64;
            if let Some(m) = max.map(|m| uint(m, scope, "seq")).transpose()? {
                last = Some(last.map_or(m, |l| l.max(m)));
            }
        }
        tx.commit().doing(|| "commit the pruning".into())?;
        Ok((pruned, last))
    }
}

const SELECT: &str =
    "SELECT id, scope, seq, time_ms, kind, peer, body, leaf, mac FROM audit_record";

fn stored(row: &rusqlite::Row<'_>) -> Result<StoredRecord, StoreError> {
    let id: i64 = row.get(0).doing(|| "read an audit record's id".into())?;
    let what = || format!("read audit record {id}");
    let scope: String = row.get(1).doing(what)?;
    let seq: i64 = row.get(2).doing(what)?;
    let time: i64 = row.get(3).doing(what)?;
    Ok(StoredRecord {
        id,
        seq: uint(seq, &scope, "seq")?,
        time: Timestamp(uint(time, &scope, "time_ms")?),
        kind: row.get(4).doing(what)?,
        peer: row.get(5).doing(what)?,
        body: row.get(6).doing(what)?,
        leaf: row.get(7).doing(what)?,
        mac: row.get(8).doing(what)?,
        scope,
    })
}

/// The audit connection's page cache.
const CACHE_KIB: i64 = 16 * 1024;
/// Pages the audit WAL grows by between two checkpoints (32 MiB of 4 KiB pages).
const WAL_CHECKPOINT_PAGES: i64 = 8_192;

fn configure(conn: &mut Connection) -> Result<(), StoreError> {
    conn.busy_timeout(crate::BUSY_TIMEOUT)
        .doing(|| "set the busy timeout".into())?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .doing(|| "switch to WAL mode".into())?;
    crate::require("journal_mode", "wal", mode)?;
    crate::set_pragma(conn, "synchronous", "FULL", "2")?;
    // As the journal's writer: a cache that holds a turn's records without spilling them
    // into the WAL mid-transaction, and fewer checkpoints (a page appended to in many turns
    // is copied into the file once). Durability is untouched.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .doing(|| format!("set the audit page cache to {CACHE_KIB} KiB"))?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
        .doing(|| format!("checkpoint the audit WAL every {WAL_CHECKPOINT_PAGES} pages"))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .doing(|| "read the audit schema version".into())?;
    match version {
        0 => {
            let tx = conn
                .transaction()
                .doing(|| "begin the audit schema".into())?;
            tx.execute_batch(SCHEMA)
                .doing(|| "create the audit schema".into())?;
            tx.pragma_update(None, "user_version", VERSION)
                .doing(|| "set the audit schema version".into())?;
            tx.commit().doing(|| "commit the audit schema".into())
        }
        VERSION => Ok(()),
        1 => Err(StoreError::AuditSchemaRetired { found: 1 }),
        found => Err(StoreError::UnknownSchema {
            found,
            supported: VERSION,
        }),
    }
}

fn int(v: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::TimestampOutOfRange {
        field: what,
        value: v,
    })
}

fn uint(v: i64, scope: &str, column: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        table: "audit_record",
        row: scope.to_owned(),
        column,
        problem: format!("{v} is negative"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(
        scope: &'a str,
        seq: u64,
        body: &'a [u8],
        envelopes: &'a [[u8; 16]],
        evidence: Option<&'a [u8]>,
    ) -> NewRecord<'a> {
        NewRecord {
            scope,
            seq,
            time: Timestamp(1_000 + seq),
            kind: "messages",
            peer: Some("supplier-b"),
            body,
            leaf: &[7; 48],
            mac: &[9; 48],
            envelopes,
            evidence,
        }
    }

    #[test]
    fn records_heads_and_partner_heads_survive_reopening_and_filter_by_scope_time_and_paging() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.sqlite");
        {
            let log = AuditLog::open(&store).unwrap();
            assert_eq!(log.path(), dir.path().join("store.sqlite-audit"));
            log.append(&[
                record("node", 0, b"a", &[], None),
                record("fed_1", 0, b"b", &[[1; 16]], None),
                record("fed_1", 1, b"c", &[[2; 16], [1; 16]], Some(b"proof")),
            ])
            .unwrap();
            log.add_head(&StoredHead {
                scope: "fed_1".into(),
                size: 2,
                time: Timestamp(5),
                head: b"head".to_vec(),
            })
            .unwrap();
            log.set_partner_head(&PartnerHead {
                scope: "fed_1".into(),
                size: 7,
                offer: b"offer".to_vec(),
                countersignature: b"sig".to_vec(),
            })
            .unwrap();
        }
        let log = AuditLog::open(&store).unwrap();
        let scopes = log.scopes().unwrap();
        assert_eq!(
            scopes,
            vec![
                ScopeSummary {
                    scope: "fed_1".into(),
                    records: 2,
                    next_seq: 2
                },
                ScopeSummary {
                    scope: "node".into(),
                    records: 1,
                    next_seq: 1
                },
            ]
        );
        let fed: Vec<_> = log
            .records(&RecordFilter {
                scope: Some("fed_1".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            fed.iter()
                .map(|r| r.body.clone().unwrap())
                .collect::<Vec<_>>(),
            [b"b".to_vec(), b"c".to_vec()]
        );
        let page = log
            .records(&RecordFilter {
                after: Some(fed[0].id),
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].body.as_deref(), Some(&b"c"[..]));
        let early = log
            .records(&RecordFilter {
                to: Some(Timestamp(1_001)),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(early.len(), 2, "both records at seq 0 happened at 1000");
        let named = log.envelope_records(&[1; 16]).unwrap();
        assert_eq!(named.len(), 2);
        assert_eq!(named[0].1, None);
        assert_eq!(named[1].1.as_deref(), Some(&b"proof"[..]));
        assert_eq!(log.envelope_records(&[2; 16]).unwrap().len(), 1);
        // Bytes that straddle two ids name no envelope.
        let mut straddle = [2u8; 16];
        straddle[8..].fill(1);
        assert!(log.envelope_records(&straddle).unwrap().is_empty());
        assert_eq!(log.position("fed_1", fed[1].id).unwrap(), 1);
        assert_eq!(log.heads("fed_1").unwrap()[0].head, b"head");
        assert_eq!(log.partner_head("fed_1").unwrap().unwrap().size, 7);
        assert_eq!(log.partner_head("node").unwrap(), None);
        assert_eq!(log.leaves("fed_1").unwrap(), vec![vec![7; 48]; 2]);
        log.keep_certificate(&[3; 48], b"der").unwrap();
        log.keep_certificate(&[3; 48], b"der").unwrap();
        assert_eq!(
            log.certificate(&[3; 48]).unwrap().as_deref(),
            Some(&b"der"[..])
        );
        assert_eq!(log.certificate(&[4; 48]).unwrap(), None);
    }

    #[test]
    fn pruning_empties_old_bodies_and_keeps_leaves_and_heads() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("s")).unwrap();
        log.append(&[
            record("fed_1", 0, b"old", &[[1; 16]], Some(b"e")),
            record("fed_1", 1, b"new", &[[2; 16]], Some(b"f")),
        ])
        .unwrap();
        assert_eq!(
            log.prune("fed_1", &["lifecycle"], Timestamp(1_001))
                .unwrap(),
            (0, None),
            "only the kinds named"
        );
        assert_eq!(
            log.prune("fed_1", &["messages"], Timestamp(1_001)).unwrap(),
            (1, Some(0))
        );
        let all = log.records(&RecordFilter::default()).unwrap();
        assert_eq!(all[0].body, None);
        assert_eq!(all[0].leaf, vec![7; 48]);
        assert_eq!(all[1].body.as_deref(), Some(&b"new"[..]));
        assert!(log.envelope_records(&[1; 16]).unwrap().is_empty());
        let kept = log.envelope_records(&[2; 16]).unwrap();
        assert_eq!(
            kept[0].1.as_deref(),
            Some(&b"f"[..]),
            "the newer evidence stays"
        );
        assert_eq!(
            log.prune("fed_1", &["messages"], Timestamp(1_001)).unwrap(),
            (0, None)
        );
    }
}
