//! The audit routes (`meshfed audit …` against a running gateway): the records with filters
//! and paging, the whole trail verified, the compliance report, and one message's proof.

use axum::Json;
use axum::extract::{Path, Query, State};
use meshfed_proto::FederationId;
use meshfed_proto::envelope::{EnvelopeId, Timestamp};
use meshfed_store::audit::RecordFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use super::models::{AuditPage, AuditReport, AuditVerification, ErrorBody};
use super::{ApiError, Node};

/// The filters of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// One log only: `node`, or a federation id.
    log: Option<String>,
    /// One kind only (`handshake`, `agreement`, `lifecycle`, `refused`, `messages`, …).
    kind: Option<String>,
    /// Records about one partner mesh only.
    peer: Option<String>,
    /// Happened at or after (RFC 3339).
    from: Option<String>,
    /// Happened before (RFC 3339).
    to: Option<String>,
    /// Stored after this record (the `next` of the page before).
    after: Option<i64>,
    /// At most this many (default 1,000, at most 10,000).
    limit: Option<u64>,
}

/// The filters of `GET /v1/audit/report`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ReportQuery {
    /// From (RFC 3339).
    from: Option<String>,
    /// To (RFC 3339).
    to: Option<String>,
    /// One federation only.
    federation: Option<String>,
}

/// `text` as a timestamp; `what` names the parameter in the error.
pub(crate) fn time(what: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        humantime::parse_rfc3339_weak(t)
            .map(crate::clock::timestamp)
            .map_err(|e| {
                ApiError::bad_request(format!("{what} = {t:?} is not an RFC 3339 time: {e}"))
            })
    })
    .transpose()
}

fn failed(e: String) -> ApiError {
    ApiError::internal(e)
}

#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of audit records, oldest first; `next` starts the next page", body = AuditPage),
        (status = 400, description = "A filter does not parse (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn list_audit(
    State(node): State<Node>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let filter = RecordFilter {
        scope: q.log,
        kind: q.kind,
        peer: q.peer,
        from: time("from", q.from.as_deref())?,
        to: time("to", q.to.as_deref())?,
        after: q.after,
        limit: q.limit,
    };
    node.audit(move |i| i.page(&filter))
        .await
        .map(Json)
        .map_err(failed)
}

#[utoipa::path(
    get,
    path = "/audit/verify",
    tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every audit log checked: records (MAC, hash, order), signed heads, partners' countersignatures, and discrepancies partners reported; `intact` is false when anything failed, each problem naming the record or head", body = AuditVerification),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn verify_audit(
    State(node): State<Node>,
) -> Result<Json<AuditVerification>, ApiError> {
    node.audit(|i| i.verify()).await.map(Json).map_err(failed)
}

#[utoipa::path(
    get,
    path = "/audit/report",
    tag = "audit",
    security(("bearer" = [])),
    params(ReportQuery),
    responses(
        (status = 200, description = "Per federation: agreements, volumes, refusals by reason, lifecycle, compliance in force, anomalies, countersigned heads and discrepancies", body = AuditReport),
        (status = 400, description = "A filter does not parse (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn audit_report(
    State(node): State<Node>,
    Query(q): Query<ReportQuery>,
) -> Result<Json<AuditReport>, ApiError> {
    let from = time("from", q.from.as_deref())?;
    let to = time("to", q.to.as_deref())?;
    let federation = q
        .federation
        .map(|f| {
            f.parse::<FederationId>()
                .map_err(|e| ApiError::bad_request(format!("federation = {f:?}: {e}")))
        })
        .transpose()?;
    node.audit(move |i| i.report(from, to, federation.as_ref()))
        .await
        .map(Json)
        .map_err(failed)
}

#[utoipa::path(
    get,
    path = "/audit/proof/{envelope}",
    tag = "audit",
    security(("bearer" = [])),
    params(("envelope" = String, Path, description = "The envelope id (`env_…`)")),
    responses(
        (status = 200, description = "The envelope's proof: its digest record, the record's inclusion in a tree head the partner countersigned, that head, and the envelope's batch signature — a file a third party checks with `meshfed audit check-proof` and the CAs", body = Object),
        (status = 400, description = "Not an envelope id (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 404, description = "No digest record of it, or no countersigned head covers it yet (`not_found`)", body = ErrorBody),
    )
)]
pub(super) async fn audit_proof(
    State(node): State<Node>,
    Path(envelope): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: EnvelopeId = envelope
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{envelope:?} is not an envelope id: {e}")))?;
    let proof = node
        .audit(move |i| i.prove(&id))
        .await
        .map_err(ApiError::not_found)?;
    serde_json::to_value(&proof)
        .map(Json)
        .map_err(|e| ApiError::internal(e.to_string()))
}
