//! The root of the OpenAPI 3.1 document served at `/v1/openapi.json`: its title, the bearer
//! security scheme, the schemas of the WebSocket messages (which no HTTP body refers to) and of
//! the query and path parameters' values (which their operations refer to without adding them).
//! The operations and the schemas of their bodies are added by the routes themselves
//! (`#[utoipa::path]` on each handler, registered with `routes!` in `api::api`).

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::models::{Acked, DurableAck, PublishReply, SendRequest, StreamReply, schema};

/// The document's root.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "meshfed node API",
        description = "The admin and messaging API of a meshfed node (DESIGN.md §9.2). Every \
            `/v1` operation but this document needs a bearer token in the Authorization header \
            (never in the URL): the node's admin token (the node directory's `admin.token`), or \
            a component token the gateway issued (`POST /v1/tokens`), which may only publish \
            and subscribe within its topics and actions (403 `forbidden` elsewhere) unless it \
            has the role `admin`. Errors are `{\"error\": {\"code\", \
            \"message\"}}` with a fitting HTTP status; on a WebSocket the same object is a \
            frame."
    ),
    modifiers(&BearerScheme),
    components(schemas(
        SendRequest,
        PublishReply,
        schema::Envelope,
        schema::Proof,
        schema::Format,
        schema::Operation,
        DurableAck,
        Acked,
        StreamReply
    )),
    tags(
        (name = "health", description = "Liveness, readiness, metrics and this document"),
        (name = "node", description = "This node"),
        (name = "federations", description = "Invitations, joining, listing and lifecycle"),
        (name = "messages", description = "Sending and receiving across federations"),
        (name = "policy", description = "This mesh's policy file, what it offers partners, and each federation's agreement"),
        (name = "revocations", description = "Revoking this mesh's nodes; the revocation lists of this mesh and its partners"),
        (name = "connectors", description = "The connectors to the mesh's own MQTT or NATS bus"),
        (name = "audit", description = "The audit trail: records, verification, compliance report, one message's proof"),
        (name = "delegations", description = "Delegations: what this mesh lets partners relay on its behalf, and what partners let it relay on theirs"),
        (name = "tokens", description = "Component tokens: issuing, listing and revoking the JWTs this gateway grants its mesh's components")
    )
)]
pub(super) struct ApiDoc;

/// The `bearer` security scheme the `/v1` operations name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The name of the security scheme.
const BEARER: &str = "bearer";
