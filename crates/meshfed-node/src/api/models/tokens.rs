//! The bodies of the component token routes (`GET` and `POST /v1/tokens`,
//! `POST /v1/tokens/{jti}/revoke`).

use std::collections::BTreeMap;

use meshfed_proto::TopicPattern;
use meshfed_store::ComponentToken;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::schema;
use crate::gateway::federations::rfc3339;

/// Issue a token to a component of this mesh (`POST /v1/tokens`, `meshfed token issue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueTokenRequest {
    /// The component it is for (`sub`): 1 to 128 characters without spaces.
    pub subject: String,
    /// Its roles: 1 to 64 letters, digits, `.`, `_`, `-` or `:` each; `admin` makes the token
    /// count as the admin token.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Its attributes (`{"site": "north"}`): they cross with what it sends, for identity
    /// mapping and access rules to match on; at most 32.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// The topic patterns it may publish on or subscribe within.
    #[serde(default)]
    #[schema(value_type = Vec<schema::TopicPattern>)]
    pub topics: Vec<TopicPattern>,
    /// What it may do on them: `publish`, `subscribe`, `request`.
    #[serde(default)]
    pub actions: Vec<String>,
    /// How long it works, e.g. `1h` (default), at most `30d`.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// A token just issued: the token itself (shown once, never stored) and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IssuedToken {
    /// The JWT (ES384), to send as `Authorization: Bearer …`.
    pub token: String,
    /// Its id (`jti`), by which it is revoked.
    pub jti: String,
    /// The gateway that issued it (`iss`).
    pub issuer: String,
    /// The mesh it is for (`aud`).
    pub audience: String,
    /// The id of the issuer key that signed it (`kid`).
    pub kid: String,
    /// The component it is for (`sub`).
    pub subject: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Its attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// The topic patterns it may use.
    #[schema(value_type = Vec<schema::TopicPattern>)]
    pub topics: Vec<TopicPattern>,
    /// What it may do on them.
    pub actions: Vec<String>,
    /// When it was issued (RFC 3339).
    pub issued: String,
    /// When it expires (RFC 3339).
    pub expires: String,
}

/// A token this gateway issued, as recorded (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// Its id (`jti`).
    pub jti: String,
    /// The component it is for.
    pub subject: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Its attributes (`name: value`), which cross with what it sends.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// The topic patterns it may use.
    #[schema(value_type = Vec<schema::TopicPattern>)]
    pub topics: Vec<TopicPattern>,
    /// What it may do on them.
    pub actions: Vec<String>,
    /// When it was issued (RFC 3339).
    pub issued: String,
    /// When it expires (RFC 3339).
    pub expires: String,
    /// When it was revoked (RFC 3339); `null` if it was not.
    pub revoked: Option<String>,
}

impl TokenView {
    /// The view of a recorded token.
    pub(crate) fn of(t: &ComponentToken) -> Self {
        Self {
            jti: t.jti.clone(),
            subject: t.subject.clone(),
            roles: t.roles.clone(),
            attributes: t.attributes.clone(),
            topics: t.topics.clone(),
            actions: t.actions.clone(),
            issued: rfc3339(t.issued),
            expires: rfc3339(t.expires),
            revoked: t.revoked.map(rfc3339),
        }
    }
}

/// The tokens this gateway issued that have not expired (`GET /v1/tokens`), the latest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// The tokens.
    pub tokens: Vec<TokenView>,
}
