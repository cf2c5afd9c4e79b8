//! The bodies of the revocation routes (`GET` and `POST /v1/revocations`).

use meshfed_proto::revocation::RevocationList;
use meshfed_proto::{MeshId, NodeName};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::schema;
use crate::gateway::federations::rfc3339;
use crate::gateway::revoked::ListView;

/// Revoke a node of this mesh (`POST /v1/revocations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokeNodeRequest {
    /// The node, `MESH/NODE`; MESH must be this node's own mesh, and NODE not this node.
    pub node: String,
}

/// A mesh's revocation list as this node stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevocationListView {
    /// The mesh whose nodes and certificates it revokes.
    #[schema(value_type = schema::MeshId)]
    pub mesh: MeshId,
    /// Its version: one more per change.
    pub version: u64,
    /// When the mesh made this version (RFC 3339).
    pub issued_at: String,
    /// When this node stored it (RFC 3339).
    pub stored: String,
    /// Nodes whose every certificate is revoked.
    pub nodes: Vec<RevokedNodeView>,
    /// Single certificates revoked, by serial number.
    pub serials: Vec<RevokedSerialView>,
    /// Delegations the mesh withdrew, by id.
    #[serde(default)]
    pub delegations: Vec<RevokedDelegationView>,
    /// The mesh is no partner: a partner relays its messages here (a trusted intermediary)
    /// and passed its list on.
    #[serde(default)]
    pub relayed: bool,
}

/// A withdrawn delegation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedDelegationView {
    /// The delegation's id.
    pub id: String,
    /// When it was withdrawn (RFC 3339).
    pub revoked_at: String,
}

/// A revoked node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedNodeView {
    /// The node's name in the list's mesh.
    #[schema(value_type = schema::NodeName)]
    pub node: NodeName,
    /// When it was revoked (RFC 3339).
    pub revoked_at: String,
}

/// A certificate revoked by serial number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedSerialView {
    /// The serial number, hex.
    pub serial: String,
    /// When it was revoked (RFC 3339).
    pub revoked_at: String,
}

/// Every revocation list this node holds (`GET /v1/revocations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevocationsView {
    /// This node's mesh.
    #[schema(value_type = schema::MeshId)]
    pub mesh: MeshId,
    /// This mesh's own list, `null` until it revokes something.
    pub own: Option<RevocationListView>,
    /// The lists received from partner meshes, by mesh.
    pub partners: Vec<RevocationListView>,
}

impl RevocationListView {
    pub(crate) fn of(view: &ListView) -> Self {
        let list: &RevocationList = &view.list;
        Self {
            mesh: list.mesh.clone(),
            version: list.version,
            issued_at: rfc3339(list.issued_at),
            stored: rfc3339(view.stored),
            nodes: list
                .nodes
                .iter()
                .map(|n| RevokedNodeView {
                    node: n.node.clone(),
                    revoked_at: rfc3339(n.revoked_at),
                })
                .collect(),
            serials: list
                .serials
                .iter()
                .map(|s| RevokedSerialView {
                    serial: hex::encode(&s.serial),
                    revoked_at: rfc3339(s.revoked_at),
                })
                .collect(),
            delegations: list
                .delegations
                .iter()
                .map(|d| RevokedDelegationView {
                    id: d.id.clone(),
                    revoked_at: rfc3339(d.revoked_at),
                })
                .collect(),
            relayed: false,
        }
    }
}
