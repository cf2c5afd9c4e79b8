//! meshfed's embedded durable store: the **registry** of a node — invitations it has issued and
//! the federations it holds (peer, role, lifecycle state, peer addresses, the peer's trust bundle,
//! the signed agreement) — in SQLite (bundled), in WAL mode with `synchronous=FULL`, foreign keys
//! on and a busy timeout (DESIGN.md §3.12).
//!
//! This is an adapter: it does file IO, and its API is **synchronous**. It does not depend on an
//! async runtime; async callers wrap each call in `spawn_blocking`. It never reads the clock: times
//! are passed in (`now: Timestamp`). Besides the registry it holds the **journal**: outbound
//! messages awaiting acknowledgement and the exactly-once dedup window in an append-only
//! segment log beside the store file (`<store file>-segments/`), durable subscribers' messages
//! and cursors and dead letters in SQLite, written by one thread with group commit
//! ([`Journal`]). The audit log lives in a file of its own beside it ([`audit`]). There is no JetStream backend.
//!
//! Where to start reading: [`Store`] (opening, durability settings, schema migrations), then
//! [`InvitationRecord`] and [`Store::consume_invitation`], then [`FederationRecord`] and
//! [`Store::set_state`]; for messages, the [`journal`] module and [`Journal`]. Every row read back is parsed into its typed record; a row that does not
//! parse is a [`StoreError::Corrupt`] naming table, row and column.

#![forbid(unsafe_code)]

mod agreements;
pub mod audit;
mod bundles;
mod cells;
mod custody;
mod delegations;
mod error;
mod federation;
mod invitation;
pub mod journal;
mod origins;
mod retention;
mod revocation;
mod schema;
mod time_fmt;
mod tokens;

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::Value;

pub use agreements::{AgreementEntry, Renegotiated};
pub use audit::AuditLog;
pub use bundles::BundleSerials;
pub use custody::{CustodyHeld, CustodyLimits, CustodyRow};
pub use delegations::StoredDelegation;
pub use error::{ConsumeError, JournalError, StoreError};
pub use federation::{FederationRecord, HistoryEntry, Role};
pub use invitation::InvitationRecord;
pub use journal::{Commit, Journal, JournalConfig, JournalStats, Ticket, Write};
pub use origins::OriginCas;
pub use retention::Expired;
pub use revocation::{IssuedCert, StoredRevocations};
pub use tokens::ComponentToken;

use crate::error::Doing;

/// How long a call waits for another connection's write lock before failing with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's registry in one SQLite file.
///
/// One connection behind a mutex: calls from several threads are serialised, and every write
/// is one transaction, committed (and fsynced, `synchronous=FULL`) before the call returns.
/// Several `Store`s (or processes) may open the same file; writes that read-then-write take the
/// write lock up front (`BEGIN IMMEDIATE`) so they cannot interleave.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the store file at `path` and its parent directories, applies
    /// the durability settings and brings the schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        create_parent(path)?;
        let setup = || {
            let conn = connect(path)?;
            Self::set_up(conn, true)
        };
        setup().map_err(|e| StoreError::Open {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Opens a fresh store that lives in memory only (for tests); it is not in WAL mode.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().doing(|| "open an in-memory database".into())?;
        Self::set_up(conn, false)
    }

    fn set_up(mut conn: Connection, wal: bool) -> Result<Self, StoreError> {
        configure(&mut conn, wal)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// The connection. A panic in another thread while it held the lock leaves the connection
    /// usable: an open rusqlite transaction rolls back when it is dropped during unwinding.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether the store file at `path` can be written now: it exists, opens for writing, and its
/// write lock can be taken within `wait` (then released at once, nothing written). A readiness
/// check: a store another process holds locked, or on a file system that turned read-only,
/// cannot take what this node would acknowledge.
pub fn check_writable(path: &Path, wait: Duration) -> Result<(), StoreError> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .doing(|| format!("open {} for writing", path.display()))?;
    conn.busy_timeout(wait)
        .doing(|| "set the busy timeout".into())?;
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK")
        .doing(|| format!("take the write lock of {}", path.display()))
}

/// Creates the directories that should hold the store file at `path`.
pub(crate) fn create_parent(path: &Path) -> Result<(), StoreError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// Opens the database file at `path`.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    Connection::open(path).doing(|| "open the database file".into())
}

/// Applies the durability settings (WAL if `wal`, `synchronous=FULL`, foreign keys, busy
/// timeout) and brings the schema up to date.
fn configure(conn: &mut Connection, wal: bool) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .doing(|| "set the busy timeout".into())?;
    if wal {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .doing(|| "switch to WAL mode".into())?;
        require("journal_mode", "wal", mode)?;
    }
    set_pragma(conn, "synchronous", "FULL", "2")?;
    set_pragma(conn, "foreign_keys", "ON", "1")?;
    schema::migrate(conn)
}

/// Sets `pragma` to `value` for this connection and checks that SQLite reports `wanted` back.
pub(crate) fn set_pragma(
    conn: &Connection,
    pragma: &'static str,
    value: &str,
    wanted: &'static str,
) -> Result<(), StoreError> {
    conn.pragma_update(None, pragma, value)
        .doing(|| format!("set {pragma}={value}"))?;
    let found: Value = conn
        .pragma_query_value(None, pragma, |row| row.get(0))
        .doing(|| format!("read {pragma}"))?;
    let found = match found {
        Value::Integer(i) => i.to_string(),
        Value::Text(s) => s,
        other => format!("{other:?}"),
    };
    require(pragma, wanted, found)
}

/// Fails unless SQLite reports the `wanted` value for `pragma`.
pub(crate) fn require(
    pragma: &'static str,
    wanted: &'static str,
    found: String,
) -> Result<(), StoreError> {
    if found.eq_ignore_ascii_case(wanted) {
        return Ok(());
    }
    Err(StoreError::Durability {
        pragma,
        wanted,
        found,
    })
}

#[cfg(test)]
mod tests {
    use meshfed_proto::envelope::Timestamp;

    use super::*;

    fn pragma<T: rusqlite::types::FromSql>(conn: &Connection, name: &str) -> T {
        conn.pragma_query_value(None, name, |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn store_file_runs_in_wal_mode_with_synchronous_full_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node").join("registry.sqlite");
        let store = Store::open(&path).unwrap();
        {
            let conn = store.conn();
            assert_eq!(pragma::<String>(&conn, "journal_mode"), "wal");
            assert_eq!(pragma::<i64>(&conn, "synchronous"), 2, "2 is FULL");
            assert_eq!(pragma::<i64>(&conn, "foreign_keys"), 1);
            assert_eq!(pragma::<i64>(&conn, "busy_timeout"), 5000);
            assert_eq!(pragma::<i64>(&conn, "user_version"), schema::VERSION);
        }
        // WAL is a property of the file: a fresh connection sees it too.
        let raw = Connection::open(&path).unwrap();
        assert_eq!(pragma::<String>(&raw, "journal_mode"), "wal");
    }

    #[test]
    fn a_store_is_writable_until_another_connection_holds_its_write_lock_or_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite");
        let _store = Store::open(&path).unwrap();
        let wait = Duration::from_millis(50);
        check_writable(&path, wait).unwrap();

        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = check_writable(&path, wait).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the store could not take the write lock of"),
            "{err}"
        );
        other.execute_batch("ROLLBACK").unwrap();
        check_writable(&path, wait).unwrap();

        let missing = dir.path().join("gone.sqlite");
        let err = check_writable(&missing, wait).unwrap_err();
        assert!(err.to_string().contains("open"), "{err}");
        assert!(!missing.exists(), "the check created the file");
    }

    #[test]
    fn open_creates_missing_parent_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("registry.sqlite");
        Store::open(&path).unwrap();
        assert!(path.is_file());
    }

    #[test]
    fn open_refuses_a_file_from_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Store::open(&path).unwrap_err();
        let StoreError::Open { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(
            matches!(**source, StoreError::UnknownSchema { found: 99, .. }),
            "{source:?}"
        );
        assert_eq!(
            source.to_string(),
            format!(
                "the store file has schema version 99; this build understands versions 0 to {}",
                schema::VERSION
            )
        );
    }

    #[test]
    fn reopening_keeps_the_schema_and_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite");
        let inv = InvitationRecord {
            token_id: "tok_reopen".into(),
            peer_mesh: "plant-a".parse().unwrap(),
            secret_hash: [7; 48],
            created: Timestamp(1_000),
            expires: Timestamp(2_000),
            used: None,
        };
        Store::open(&path).unwrap().put_invitation(&inv).unwrap();
        let again = Store::open(&path).unwrap();
        assert_eq!(again.invitation("tok_reopen").unwrap(), Some(inv));
    }
}
