//! What can go wrong in the store, stated as facts.

use std::path::PathBuf;
use std::sync::Arc;

use meshfed_proto::envelope::Timestamp;
use meshfed_proto::{FederationId, IllegalTransition, MeshId};

use crate::time_fmt::Shown;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory that should hold the store file could not be created.
    #[error("cannot create the store directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store file could not be opened or set up.
    #[error("cannot open the store at {path}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// SQLite refused an operation; `action` says which.
    #[error("the store could not {action}")]
    Database {
        /// What the store was doing, e.g. `insert federation fed_1`.
        action: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite would not put the file in the durability mode the store requires.
    #[error("the store file runs with {pragma}={found}, not {wanted}")]
    Durability {
        /// The pragma (`journal_mode`, `synchronous`, `foreign_keys`).
        pragma: &'static str,
        /// The value the store asked for.
        wanted: &'static str,
        /// The value SQLite reports.
        found: String,
    },
    /// The file carries a schema version this build does not know (written by a newer meshfed).
    #[error(
        "the store file has schema version {found}; this build understands versions 0 to {supported}"
    )]
    UnknownSchema {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest schema version this build can apply.
        supported: i64,
    },
    /// An audit file in an earlier format this build cannot extend.
    #[error(
        "the audit file has schema version {found}, an earlier format (one record per envelope) this build cannot extend; move the file aside to start a new audit log"
    )]
    AuditSchemaRetired {
        /// `PRAGMA user_version` of the file.
        found: i64,
    },
    /// A row read back from the file does not parse into its typed record.
    #[error("corrupt row in table {table} (row {row:?}), column {column}: {problem}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The row's key (token id, federation id, or `id#position` for list rows).
        row: String,
        /// The column that holds the bad value.
        column: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A timestamp is beyond what the file can hold (SQLite integers are signed 64-bit).
    #[error("{field} {value} ms is beyond the largest timestamp the store can hold")]
    TimestampOutOfRange {
        /// Which timestamp.
        field: &'static str,
        /// Its value in milliseconds since the Unix epoch.
        value: u64,
    },
    /// A trust bundle serial beyond what the file can hold.
    #[error("trust bundle serial {0} is beyond the largest the store can hold ({max})", max = i64::MAX)]
    SerialOutOfRange(u64),
    /// A file or directory of the journal's segment log could not be used.
    #[error("the journal log could not {action} {path}")]
    Log {
        /// What it was doing (`append to`, `create`, `read a record of`, ...).
        action: &'static str,
        /// The segment file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A segment file holds bytes that are not what the journal wrote (not a torn tail).
    #[error("corrupt journal segment {path} at offset {offset}: {problem}")]
    LogCorrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the bad frame or record starts.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// The store file says its journal has a segment log, and the directory is not there.
    #[error(
        "the journal's segment log {path} is missing, though the store file says it was \
         created: its queued messages and dedup window would be lost; put it back beside the \
         store file, or start over with an empty store"
    )]
    LogMissing {
        /// The segment directory.
        path: PathBuf,
    },
    /// Another journal (in this process or another) has the segment directory open.
    #[error("the journal log {path} is in use by another journal")]
    LogLocked {
        /// The segment directory.
        path: PathBuf,
    },
    /// The segment a frame was meant for is not open (a bug, reported rather than panicking).
    #[error("journal segment {segment} is not open")]
    LogLost {
        /// Its number.
        segment: u64,
    },
    /// An earlier failure left the segment log in a state this process cannot append to.
    #[error("the journal log failed earlier and takes no more writes until the node restarts")]
    LogStopped,
    /// A value is too large for the journal's segment log.
    #[error("{what} of {len} bytes is more than the journal log holds ({max} bytes)")]
    TooLargeForLog {
        /// Which value.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The largest the log takes.
        max: usize,
    },
    /// An outbound message was submitted in one request with writes kept in SQLite (inbound
    /// messages, cursors, subscriptions, dead letters): queued messages live in the segment
    /// log, and one request is stored in one place.
    #[error(
        "outbound message {id} cannot be appended in one request with inbound messages, \
         cursors, subscriptions or dead letters"
    )]
    OutboundBesideSqliteWrites {
        /// The message's id.
        id: meshfed_proto::envelope::EnvelopeId,
    },
    /// The journal's writer thread could not be started.
    #[error("cannot start the journal's writer thread")]
    SpawnWriter(#[source] std::io::Error),
    /// An invitation with this token id is already stored.
    #[error("invitation {0} already exists")]
    DuplicateInvitation(String),
    /// A federation with this id is already stored.
    #[error("federation {0} already exists")]
    DuplicateFederation(FederationId),
    /// No federation has this id.
    #[error("there is no federation {0}")]
    UnknownFederation(FederationId),
    /// The peer mesh already has a live (not terminated) federation with this node.
    #[error("mesh {peer} already has a live federation ({existing}); terminate it first")]
    PeerAlreadyFederated {
        /// The peer mesh.
        peer: MeshId,
        /// The live federation with it.
        existing: FederationId,
    },
    /// The lifecycle does not allow the requested state change.
    #[error("federation {id}: {transition}")]
    IllegalTransition {
        /// The federation.
        id: FederationId,
        /// The refused move (its text names both states).
        transition: IllegalTransition,
    },
    /// A renegotiated agreement was to replace one that is no longer in force.
    #[error("federation {id}: the agreement in force changed meanwhile (now version {in_force})")]
    AgreementChanged {
        /// The federation.
        id: FederationId,
        /// The version in force.
        in_force: u32,
    },
    /// An update tried to change a field that is fixed when a federation is created.
    #[error("federation {id}: {field} cannot change (stored {stored}, given {given})")]
    FixedField {
        /// The federation.
        id: FederationId,
        /// The field (`peer_mesh`, `role`, `created`).
        field: &'static str,
        /// The stored value.
        stored: String,
        /// The value the update carried.
        given: String,
    },
}

impl StoreError {
    pub(crate) fn corrupt(
        table: &'static str,
        row: impl Into<String>,
        column: &'static str,
        problem: impl ToString,
    ) -> Self {
        Self::Corrupt {
            table,
            row: row.into(),
            column,
            problem: problem.to_string(),
        }
    }
}

/// Why a journal write is not (or not known to be) stored. Every variant says whether the write
/// may be in the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// This request failed on its own (e.g. a timestamp out of range) and was rolled back; the
    /// other requests of its batch were not affected. It is not stored.
    #[error("the journal rolled back a write")]
    Rejected {
        /// What failed (its action names table and id).
        source: Arc<StoreError>,
    },
    /// The transaction holding this request's batch could not begin or commit; nothing of the
    /// batch is stored.
    #[error("the journal could not commit a batch of {requests} requests; none of them is stored")]
    CommitFailed {
        /// How many requests the batch held.
        requests: usize,
        /// What failed.
        source: Arc<StoreError>,
    },
    /// The writer thread stopped (it panicked, or the journal is closing) before confirming
    /// this request; it may or may not be stored.
    #[error(
        "the journal's writer stopped before confirming this write; it may or may not be stored"
    )]
    WriterStopped,
}

/// Why an invitation could not be consumed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// No invitation has this token id.
    #[error("invitation {token_id} is unknown")]
    Unknown {
        /// The token id presented.
        token_id: String,
    },
    /// The invitation was consumed before; a token works once.
    #[error("invitation {token_id} was already used at {}", Shown(*at))]
    AlreadyUsed {
        /// The token id presented.
        token_id: String,
        /// When it was consumed.
        at: Timestamp,
    },
    /// The invitation's expiry has passed.
    #[error("invitation {token_id} expired at {}", Shown(*at))]
    Expired {
        /// The token id presented.
        token_id: String,
        /// Its expiry.
        at: Timestamp,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Attaches what the store was doing to a rusqlite error.
pub(crate) trait Doing<T> {
    /// Maps the error to [`StoreError::Database`] with `action`.
    fn doing(self, action: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Doing<T> for Result<T, rusqlite::Error> {
    fn doing(self, action: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Database {
            action: action(),
            source,
        })
    }
}
