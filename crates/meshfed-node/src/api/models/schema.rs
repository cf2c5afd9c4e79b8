//! OpenAPI schemas of the domain types the models carry. Those types live in crates that know
//! nothing of OpenAPI (and the orphan rule keeps `ToSchema` off them here), so each has a
//! stand-in named like it, used as `#[schema(value_type = schema::MeshId)]`: one component per
//! domain type in the document, with its rule.

use meshfed_proto::FederationState as State;
use meshfed_proto::Termination;
use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::{PartialSchema, ToSchema};

/// A stand-in type: its schema, with `description`, is the component named after it.
macro_rules! stand_in {
    ($(#[doc = $doc:literal])+ $name:ident => $schema:expr) => {
        $(#[doc = $doc])+
        pub(crate) struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                let description = [$($doc),+].map(str::trim).join("\n");
                let schema: ObjectBuilder = $schema;
                schema.description(Some(description)).into()
            }
        }

        impl ToSchema for $name {}
    };
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn names<const N: usize>(names: [&str; N]) -> ObjectBuilder {
    string().enum_values(Some(names))
}

fn integer(min: u8, max: u8) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min))
        .maximum(Some(max))
}

/// The lifecycle states, in the order of the lifecycle.
const STATES: [State; 7] = [
    State::Negotiating,
    State::Active,
    State::Suspended,
    State::Renegotiating,
    State::Terminated(Termination::Graceful),
    State::Terminated(Termination::Forced),
    State::Reestablishing,
];

/// Does not compile once the lifecycle has a state [`STATES`] lacks.
const _: fn(State) = |state| match state {
    State::Negotiating
    | State::Active
    | State::Suspended
    | State::Renegotiating
    | State::Terminated(Termination::Graceful | Termination::Forced)
    | State::Reestablishing => {}
};

stand_in!(
    /// A mesh's id: 1 to 63 lowercase letters, digits or '-', not starting with '-'.
    MeshId => string()
        .pattern(Some("^[a-z0-9][a-z0-9-]{0,62}$"))
        .examples([json!("plant-a")])
);
stand_in!(
    /// A node's name within its mesh (the spec's `gateway_id`), by the rule of mesh ids.
    NodeName => string()
        .pattern(Some("^[a-z0-9][a-z0-9-]{0,62}$"))
        .examples([json!("gw1")])
);
stand_in!(
    /// A federation's id, chosen at the handshake.
    FederationId => string()
        .pattern(Some("^[A-Za-z0-9_-]{1,128}$"))
        .examples([json!("fed_3f6b5b405375efb20f457d1cbafcb2d9")])
);
stand_in!(
    /// An envelope's id: `fed_` and 32 hex digits, time-ordered.
    EnvelopeId => string()
        .pattern(Some("^fed_[0-9a-f]{32}$"))
        .examples([json!("fed_0192f1b0c6a87d2e9c4b5a6f7e8d9c0b")])
);
stand_in!(
    /// A federation topic: 1 to 256 bytes, non-empty segments separated by '/', no spaces,
    /// control characters or wildcards.
    Topic => string().examples([json!("line-3/temperature")])
);
stand_in!(
    /// A topic pattern: a topic whose segments may be `+` (one segment) or, last, `#` (the rest).
    TopicPattern => string().examples([json!("line-3/#")])
);
stand_in!(
    /// Delivery guarantee: 0 at most once, 1 at least once, 2 exactly once.
    Qos => integer(0, 2)
);
stand_in!(
    /// Priority, 0 (lowest) to 7 (highest).
    Priority => integer(0, 7)
);
stand_in!(
    /// A media type, e.g. `application/json` or `text/plain`.
    ContentType => string().examples([json!("application/json")])
);
stand_in!(
    /// A flag of the spec envelope.
    Flag => names(["reliable", "ordered"])
);
stand_in!(
    /// A federation's lifecycle state.
    FederationState => names(STATES.map(State::name))
);
stand_in!(
    /// What a node runs as.
    NodeRole => names(["gateway", "broker"])
);
stand_in!(
    /// How a gateway signs what it sends: one signature per batch of envelopes sent together,
    /// or one per message.
    SignatureMode => names(["batch", "message"])
);
stand_in!(
    /// A signature mode an agreement allows.
    AgreedSignatureMode => names(["per-message", "batch"])
);
stand_in!(
    /// An algorithm an agreement allows.
    AgreedAlgorithm => names(["ecdsa-p384-sha384", "aes-256-gcm"])
);
stand_in!(
    /// How much of the exchanged traffic each side records in its audit trail.
    AuditLevel => names(["lifecycle", "refusals", "full"])
);
stand_in!(
    /// A lifecycle operation, or a renegotiation of the agreement.
    Operation => names(["suspend", "resume", "terminate", "renegotiate"])
);
stand_in!(
    /// Whether a subscriber receives each envelope with its proof: `required` for the export
    /// form, `none` (the default) for the spec JSON alone.
    Proof => names(["none", "required"])
);
stand_in!(
    /// The frames of a messaging WebSocket: `json` (the default) for JSON text frames, `binary`
    /// for the binary layout (version 1; raw payloads, no base64).
    Format => names(["json", "binary"])
);
stand_in!(
    /// A delivered envelope in the spec's JSON layout: `federation` (version, id, timestamp,
    /// source_mesh, destination_mesh, routing, security, policy, metadata) and `message` (a
    /// JSON value for JSON content, a string for text, base64 otherwise, `null` when sealed);
    /// `sender` (`identified` envelopes) is who sent it as this mesh maps them;
    /// `federation.metadata.properties` (a message sent with properties) its user properties,
    /// correlation data and reply-to, as a `MessageProperties`. In the export form (`proof=required`) also `proof`: standard base64 of the CBOR of the
    /// envelope exactly as it crossed — signed alone, or one envelope of a signed batch with the
    /// batch's signature and its inclusion proof — which `meshfed envelope inspect --ca` checks
    /// against the source mesh's CA.
    Envelope => ObjectBuilder::new()
        .property("federation", ObjectBuilder::new().schema_type(Type::Object))
        .required("federation")
        .property("message", ObjectBuilder::new().schema_type(SchemaType::AnyValue))
        .required("message")
        .property(
            "sender",
            ObjectBuilder::new()
                .property("subject", string())
                .required("subject")
                .property("roles", ArrayBuilder::new().items(string()))
                .property(
                    "attributes",
                    ObjectBuilder::new().additional_properties(Some(string())),
                )
                .description(Some(
                    "Who sent it, sealed with it by their gateway, as this mesh maps them",
                )),
        )
        .property(
            "proof",
            string().description(Some(
                "Export form only: base64 of the CBOR of the envelope as it crossed",
            )),
        )
);

/// A user property: `[name, value]`.
pub(crate) struct UserProperty;

impl PartialSchema for UserProperty {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(string())
            .min_items(Some(2))
            .max_items(Some(2))
            .examples([json!(["traceparent", "00-4bf92f3577b34da6-01"])])
            .description(Some(
                "A user property: `[name, value]` (name 1 to 256 bytes, value at most 4096).",
            ))
            .into()
    }
}

impl ToSchema for UserProperty {}

/// A delivery deadline: whole milliseconds, or a duration like `"5s"`.
pub(crate) struct MaxLatency;

impl PartialSchema for MaxLatency {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(u32::MAX)),
            )
            .item(string().examples([json!("5s")]))
            .description(Some(
                "A delivery deadline: whole milliseconds, or a duration like \"5s\".",
            ))
            .into()
    }
}

impl ToSchema for MaxLatency {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_lifecycle_s_and_parse_back() {
        for state in STATES {
            assert_eq!(state.name().parse::<State>(), Ok(state));
        }
        let names: std::collections::HashSet<_> = STATES.map(State::name).into_iter().collect();
        assert_eq!(names.len(), STATES.len());
    }
}
