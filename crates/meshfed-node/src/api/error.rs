//! Every API error as `{"error": {"code", "message"}}` with its HTTP status — mapped here only.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use meshfed_proto::admission::Refusal;

use super::models::{ErrorBody, ErrorDetail};
use crate::gateway::PolicyError;
use crate::gateway::federations::FederationError;
use crate::gateway::revocation::RevokeError;
use crate::gateway::stream::Refused;
use crate::gateway::submit::SendError;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `Retry-After` (seconds) of an answer to try again later.
    retry_after: Option<u64>,
}

/// `Retry-After` of a `queue_full` answer, in seconds: the queue drains at the link's pace,
/// so room comes back within moments unless the peer is away.
pub(crate) const QUEUE_FULL_RETRY_AFTER_SECS: u64 = 1;

impl ApiError {
    /// A request the API cannot accept.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            retry_after: None,
        }
    }

    /// No or a wrong bearer token.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or wrong bearer token; the admin token is in the node directory's admin.token".into(),
            retry_after: None,
        }
    }

    /// A bearer token that is neither the admin token nor a valid component token; says
    /// what is wrong with it (never the token).
    pub(crate) fn refused_token(e: &crate::credentials::TokenError) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: format!("the bearer token is refused: {e}"),
            retry_after: None,
        }
    }

    /// A token in the URL's query: never accepted there (URLs end up in logs and histories).
    pub(crate) fn token_in_url() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "token_in_url",
            message: "a token is never accepted in the URL: send it in the Authorization header (`Authorization: Bearer TOKEN`), and drop token= or access_token= from the query".into(),
            retry_after: None,
        }
    }

    /// A valid credential asking for what it does not grant.
    pub(crate) fn forbidden(e: &crate::credentials::Forbidden) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: e.to_string(),
            retry_after: None,
        }
    }

    /// Nothing of that name.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            retry_after: None,
        }
    }

    /// A delegation that is not granted, does not verify or may not be taken.
    pub(crate) fn invalid_delegation(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_delegation",
            message: message.into(),
            retry_after: None,
        }
    }

    /// The message will not be delivered.
    pub fn dead_lettered(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "dead_lettered",
            message: message.into(),
            retry_after: None,
        }
    }

    /// The gateway is stopping.
    pub fn stopping() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "stopping",
            message: "the gateway is stopping".into(),
            retry_after: None,
        }
    }

    /// A failure inside the gateway.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
            retry_after: None,
        }
    }

    /// A broker's feature asked of a gateway.
    pub fn not_a_broker(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_a_broker",
            message: message.into(),
            retry_after: None,
        }
    }

    /// A feature that is not available in this version.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_IMPLEMENTED,
            code: "not_implemented",
            message: message.into(),
            retry_after: None,
        }
    }

    /// The error body, `{"error": {"code", "message"}}`: what a response carries and what a
    /// WebSocket answers with in place of a status (the publish stream).
    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // Over the body limit: the same answer as a payload over the agreed size.
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "too_large",
                message: format!(
                    "the request body is larger than the API accepts ({} MiB); a message's payload may be at most the agreed maximum (`max frame` in `meshfed federation show`)",
                    super::BODY_LIMIT >> 20
                ),
                retry_after: None,
            };
        }
        Self::bad_request(format!("request body: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(format!("query: {}", r.body_text()))
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Invalid(problems) => Self {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_policy",
                message: problems.to_string(),
                retry_after: None,
            },
            PolicyError::Write(why) => Self::internal(why),
            PolicyError::Federations(e) => e.into(),
        }
    }
}

impl From<FederationError> for ApiError {
    fn from(e: FederationError) -> Self {
        use FederationError as E;
        let (status, code) = match &e {
            E::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            E::Token(_) => (StatusCode::BAD_REQUEST, "invalid_token"),
            E::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            E::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            E::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "peer_unreachable"),
            E::Refused { .. } => (StatusCode::BAD_GATEWAY, "federation_refused"),
            E::Renegotiation(_) => (StatusCode::BAD_GATEWAY, "renegotiation_failed"),
            E::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
        };
        Self {
            status,
            code,
            message: error_chain(&e),
            retry_after: None,
        }
    }
}

/// The HTTP status of each refusal (its code is its reason): mapped here only.
fn refusal_status(r: &Refusal) -> StatusCode {
    match r {
        Refusal::UnknownDestination(_) => StatusCode::NOT_FOUND,
        Refusal::NotActive { .. } | Refusal::Suspended => StatusCode::CONFLICT,
        Refusal::TopicNotAgreed { .. }
        | Refusal::NotRedacted { .. }
        | Refusal::Denied(_)
        | Refusal::Transit(_) => StatusCode::FORBIDDEN,
        Refusal::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::QosNotAgreed { .. }
        | Refusal::WrongFederation { .. }
        | Refusal::WrongSource { .. }
        | Refusal::NotForUs { .. }
        | Refusal::Hop(_)
        | Refusal::NotEncrypted
        | Refusal::Unsealable(_)
        | Refusal::UntrustedSigner(_)
        | Refusal::RevokedSigner(_)
        | Refusal::BadSignature(_)
        | Refusal::Malformed(_)
        | Refusal::WrongAgreementVersion { .. }
        | Refusal::PriorityNotAgreed { .. }
        | Refusal::LatencyNotAgreed { .. }
        | Refusal::SchemaNotAgreed { .. }
        | Refusal::ClassificationNotAgreed { .. }
        | Refusal::SignatureModeNotAgreed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Refusal::ContentTypeNotAgreed { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
    }
}

/// The API code of a refusal: its reason, except where clients already know another name.
fn refusal_code(r: &Refusal) -> &'static str {
    match r {
        Refusal::NotActive { .. } => "federation_not_active",
        Refusal::Unreachable(_) => "peer_unreachable",
        other => other.reason(),
    }
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        use SendError as E;
        let retry_after = match e {
            E::Queue(Refused::Full { .. }) => Some(QUEUE_FULL_RETRY_AFTER_SECS),
            // The bucket holds a second's messages: it is full again a second on.
            E::Refused(Refusal::RateLimited { .. }) => Some(1),
            _ => None,
        };
        let (status, code) = match &e {
            E::Refused(r) => (refusal_status(r), refusal_code(r)),
            E::Queue(Refused::Full { .. }) => (StatusCode::SERVICE_UNAVAILABLE, "queue_full"),
            E::Queue(Refused::Offer(_)) => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
            E::Queue(Refused::Stopping) => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
            E::Queue(Refused::NotActive { .. }) => (StatusCode::CONFLICT, "federation_not_active"),
            E::Queue(Refused::Store(_)) | E::Random(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        Self {
            status,
            code,
            message: e.to_string(),
            retry_after,
        }
    }
}

/// The error and its causes, joined: `a: b: c`, without repeating a cause already in the text.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

impl From<RevokeError> for ApiError {
    fn from(e: RevokeError) -> Self {
        match e {
            RevokeError::OtherMesh { .. } | RevokeError::Itself(_) => {
                Self::bad_request(e.to_string())
            }
            RevokeError::List(_) => Self {
                status: StatusCode::CONFLICT,
                code: "conflict",
                message: e.to_string(),
                retry_after: None,
            },
            RevokeError::Local(_) => Self::internal(e.to_string()),
        }
    }
}
