//! The bodies of the delegation routes (`GET` and `POST /v1/delegations`,
//! `POST /v1/delegations/held`, `POST /v1/delegations/{id}/revoke`).

use meshfed_proto::{MeshId, TopicPattern};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::schema;
use crate::credentials::delegation::Delegation;
use crate::gateway::federations::rfc3339;

/// Delegate the relaying of this mesh's messages to a partner mesh
/// (`POST /v1/delegations`, `meshfed delegation issue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueDelegationRequest {
    /// The mesh it is for: the relay.
    #[schema(value_type = schema::MeshId)]
    pub delegate: MeshId,
    /// The meshes the delegate may present it to (and relay this mesh's messages to).
    #[schema(value_type = Vec<schema::MeshId>)]
    pub audience: Vec<MeshId>,
    /// The topics it covers.
    #[schema(value_type = Vec<schema::TopicPattern>)]
    pub topics: Vec<TopicPattern>,
    /// How many further delegations may hang below it (0, the default: the delegate relays but
    /// cannot pass it on), at most 8.
    #[serde(default)]
    pub depth: u8,
    /// How long it lives, e.g. `24h` (default), at most `365d`.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// Take a delegation a partner issued to this mesh (`POST /v1/delegations/held`,
/// `meshfed delegation add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDelegationRequest {
    /// The delegation (a JWT), as `meshfed delegation issue` printed it on the issuing mesh.
    pub token: String,
}

/// A delegation and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DelegationView {
    /// Its id (`jti`), by which its issuer withdraws it.
    pub id: String,
    /// The mesh that issued it.
    #[schema(value_type = schema::MeshId)]
    pub issuer: MeshId,
    /// The mesh it is for.
    #[schema(value_type = schema::MeshId)]
    pub delegate: MeshId,
    /// `issued` (by this mesh) or `held` (issued to this mesh).
    pub direction: String,
    /// `valid`, `revoked` or `expired`.
    pub state: String,
    /// When it was issued (RFC 3339).
    pub issued: String,
    /// When it expires (RFC 3339).
    pub expires: String,
    /// The meshes it may be presented to; `null` where it was not read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<schema::MeshId>>)]
    pub audience: Option<Vec<MeshId>>,
    /// The topics it covers; `null` where it was not read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<schema::TopicPattern>>)]
    pub topics: Option<Vec<TopicPattern>>,
    /// How many further delegations may hang below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u8>,
}

impl DelegationView {
    /// The view of a delegation just issued or taken.
    pub(crate) fn of(d: &Delegation, direction: &str) -> Self {
        Self {
            id: d.id.clone(),
            issuer: d.issuer.clone(),
            delegate: d.delegate.clone(),
            direction: direction.to_owned(),
            state: "valid".to_owned(),
            issued: rfc3339(d.issued),
            expires: rfc3339(d.expires),
            audience: Some(d.audience.clone()),
            topics: Some(d.topics.clone()),
            depth: Some(d.depth),
        }
    }
}

/// A delegation just issued: the token to hand to the delegate, and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IssuedDelegation {
    /// The delegation (a JWT, ES384, signed by this node with its certificate chain in `x5c`),
    /// for `meshfed delegation add` on the delegate.
    pub token: String,
    /// What it says.
    pub delegation: DelegationView,
}

/// The delegations recorded here (`GET /v1/delegations`), the latest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DelegationList {
    /// The delegations.
    pub delegations: Vec<DelegationView>,
}
