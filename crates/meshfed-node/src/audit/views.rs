//! What the audit trail shows when read back: the bodies of the audit routes (`GET /v1/audit`,
//! `GET /v1/audit/verify`, `GET /v1/audit/report`, `GET /v1/audit/proof/{envelope}`), which
//! `meshfed audit` prints too (on a stopped node it reads the audit file itself and prints the
//! same bodies). The API's models re-export them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/audit`: one page of audit records, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// The records of this page.
    pub records: Vec<AuditRecordView>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

/// One audit record as stored: where it is, and what it says (the record's JSON view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecordView {
    /// Its place in the audit file (for paging).
    pub id: i64,
    /// Its log: `node`, or the federation's id.
    pub log: String,
    /// Its index in that log.
    pub seq: u64,
    /// When it happened (RFC 3339).
    pub time: String,
    /// Its kind (`handshake`, `agreement`, `lifecycle`, `refused`, `messages`, …).
    pub kind: String,
    /// The partner it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The record's fields (its JSON view); `null` once retention pruned its body (its hash
    /// stays in the log).
    #[schema(value_type = Object)]
    pub record: serde_json::Value,
}

/// `GET /v1/audit/verify`: the whole audit trail checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// Whether every log is intact and no partner reported a discrepancy.
    pub intact: bool,
    /// Each log's check.
    pub logs: Vec<LogVerification>,
}

/// One log's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogVerification {
    /// `node`, or the federation's id.
    pub log: String,
    /// Records checked.
    pub records: u64,
    /// Of them, pruned by retention (checked by hash and MAC).
    pub pruned: u64,
    /// Signed tree heads checked.
    pub heads: u64,
    /// Partners' countersignatures checked.
    pub countersignatures: u64,
    /// What is wrong, each naming the record or head and what failed.
    pub problems: Vec<String>,
    /// What the partner's audit exchange found that does not hold (a rolled-back or rewritten
    /// log on either side), as recorded in this log.
    pub discrepancies: Vec<String>,
}

/// `GET /v1/audit/report`: per federation, what a compliance officer asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditReport {
    /// Start of the period (RFC 3339), if bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End of the period (RFC 3339), if bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Each federation with records in the period.
    pub federations: Vec<FederationReport>,
}

/// One federation's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FederationReport {
    /// The federation.
    pub federation: String,
    /// The partner mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Agreement versions that came into force, oldest first.
    pub agreements: Vec<AgreementEntry>,
    /// Messages sent and received (digest records; at audit level `full`).
    pub sent: u64,
    /// See `sent`.
    pub received: u64,
    /// Bytes sent and received.
    pub bytes_sent: u64,
    /// See `bytes_sent`.
    pub bytes_received: u64,
    /// Refused messages and envelopes by reason.
    pub refused: Vec<Count>,
    /// Lifecycle transitions, oldest first.
    pub lifecycle: Vec<String>,
    /// Compliance frameworks, data residency, retention and audit level in force (from the
    /// newest agreement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub compliance: Option<serde_json::Value>,
    /// Anomalies and circuit breaker transitions.
    pub anomalies: Vec<String>,
    /// Partner heads countersigned and discrepancies found.
    pub countersigned: u64,
    /// See `countersigned`.
    pub discrepancies: Vec<String>,
}

/// An agreement version in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgreementEntry {
    /// When it came into force (RFC 3339).
    pub time: String,
    /// Its version.
    pub version: u64,
    /// `established`, `renegotiated` or `caught_up`.
    pub cause: String,
    /// SHA-384 of the signed agreement, hex.
    pub digest: String,
}

/// A count by reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Count {
    /// The reason.
    pub reason: String,
    /// How many.
    pub count: u64,
}
