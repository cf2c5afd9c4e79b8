//! The bodies of `GET /v1/policy` and `PUT /v1/policy`.

use meshfed_proto::{FederationId, FederationState, MeshId, TopicPattern};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AgreedPolicy, AgreementSummary, schema};

/// `GET /v1/policy`: the policy in force and the agreement of each federation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    /// The policy file's text; `null` when the node has none and offers the defaults.
    pub file: Option<String>,
    /// What the file compiles to: the terms this mesh proposes to every partner.
    pub offer: PolicyOfferView,
    /// Each federation and the agreement in force with it.
    pub agreements: Vec<PolicyAgreementView>,
}

/// What this mesh offers and requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyOfferView {
    /// Topics this mesh publishes to partners.
    #[schema(value_type = Vec<schema::TopicPattern>)]
    pub publishes: Vec<TopicPattern>,
    /// Topics it takes from partners.
    #[schema(value_type = Vec<schema::TopicPattern>)]
    pub wants: Vec<TopicPattern>,
    /// Compliance frameworks this mesh keeps.
    pub frameworks: Vec<String>,
    /// Compliance frameworks partners must keep.
    pub requires_frameworks: Vec<String>,
    /// The terms proposed: this mesh's limits and its floors.
    pub terms: AgreedPolicy,
}

/// One federation's agreement, as the policy view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyAgreementView {
    /// The federation.
    #[schema(value_type = schema::FederationId)]
    pub federation_id: FederationId,
    /// The partner mesh.
    #[schema(value_type = schema::MeshId)]
    pub peer: MeshId,
    /// The federation's state.
    #[serde(with = "super::via_str")]
    #[schema(value_type = schema::FederationState)]
    pub state: FederationState,
    /// The agreement in force; `null` when it cannot be read.
    pub agreement: Option<AgreementSummary>,
}

/// `PUT /v1/policy`: a new policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    /// The whole policy file, TOML.
    pub toml: String,
}

/// The answer to `PUT /v1/policy`: the policy now in force and what each live partner said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyUpdated {
    /// The policy now in force.
    pub policy: PolicyView,
    /// The proposal to each live partner (none when the policy did not change).
    pub proposals: Vec<PolicyProposalView>,
}

/// What one live partner said to the changed policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyProposalView {
    /// The federation.
    #[schema(value_type = schema::FederationId)]
    pub federation_id: FederationId,
    /// The partner.
    #[schema(value_type = schema::MeshId)]
    pub peer: MeshId,
    /// Whether it agreed: the new agreement version is in force.
    pub agreed: bool,
    /// The agreement version now in force, when it agreed.
    pub version: Option<u32>,
    /// Why the agreement in force stays, when it did not.
    pub reason: Option<String>,
}
