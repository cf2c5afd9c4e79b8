//! The OpenAPI 3.1 description of the node API, served at `/v1/openapi.json`.

use serde_json::{Value, json};

fn op(summary: &str, body: Option<&str>) -> Value {
    let mut o = json!({
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {}}},
            "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }
    });
    if let Some(schema) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    o
}

/// The document.
pub(crate) fn document() -> Value {
    let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "meshfed node API", "version": env!("CARGO_PKG_VERSION")},
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": op("Liveness", None)},
            "/readyz": {"get": op("Readiness", None)},
            "/metrics": {"get": op("Prometheus metrics", None)},
            "/v1/node": {"get": op("This node's identity and addresses, and how it signs what it sends (delivery.signatures: batch or message)", None)},
            "/v1/federations": {"get": op("Every federation with its link health", None)},
            "/v1/federations/invite": {"post": op("Issue a one-time invitation token for a peer mesh", Some("Invite"))},
            "/v1/federations/join": {"post": op("Join the federation an invitation token offers", Some("Join"))},
            "/v1/federations/{id}": {"get": {"parameters": id, "summary": "One federation", "responses": {"200": {"description": "OK"}}}},
            "/v1/federations/{id}/suspend": {"post": {"parameters": id, "summary": "Suspend message flow", "responses": {"200": {"description": "OK"}}}},
            "/v1/federations/{id}/resume": {"post": {"parameters": id, "summary": "Resume message flow", "responses": {"200": {"description": "OK"}}}},
            "/v1/federations/{id}/terminate": {"post": {"parameters": id, "summary": "Terminate: gracefully, answering once what is in flight is delivered (at most 10 s; the rest is dead-lettered), or with body {\"force\": true} at once (everything queued is dead-lettered)", "responses": {"200": {"description": "OK"}}}},
            "/v1/messages": {"post": op("Send a message to a federated mesh; answers 202 with the envelope id once accepted (qos >= 1: persisted), or with wait: 200 once the destination acknowledged (422 dead_lettered if it will not be delivered; 503 queue_full when store-and-forward is at its limit)", Some("Message"))},
            "/v1/messages/dead-letters": {"get": op("The latest 1000 messages that will not be delivered, with why", None)},
            "/v1/messages/publish": {"get": {
                "summary": "WebSocket for sending: each text frame is one Message; each is answered in order with {\"id\"} or an Error frame, and the stream continues",
                "responses": {"101": {"description": "Switching to WebSocket"}}
            }},
            "/v1/messages/stream": {"get": {
                "summary": "WebSocket of delivered envelopes in the spec's JSON layout",
                "parameters": [
                    {"name": "topic", "in": "query", "schema": {"type": "string"}, "description": "Topic pattern (+ one segment, # the rest)"},
                    {"name": "from", "in": "query", "schema": {"type": "string"}, "description": "Only envelopes from this mesh"},
                    {"name": "durable", "in": "query", "schema": {"type": "string"}, "description": "Durable subscription name: qos >= 1 envelopes that arrive while no subscriber is connected are kept and sent when one connects; acknowledge each with a text frame {\"ack\": \"<envelope id>\"} (covers every envelope sent before it); with \"confirm\": true the gateway answers {\"acked\": \"<envelope id>\"} once that is committed"}
                ],
                "responses": {"101": {"description": "Switching to WebSocket"}}
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Invite": {"type": "object", "required": ["peer"], "properties": {
                    "peer": {"type": "string"}, "ttl": {"type": "string", "examples": ["1h"]}}},
                "Join": {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}},
                "Message": {"type": "object", "required": ["to", "topic", "payload"], "properties": {
                    "to": {"type": "string"}, "topic": {"type": "string"}, "payload": {},
                    "content_type": {"type": "string", "default": "application/json"},
                    "qos": {"type": "integer", "minimum": 0, "maximum": 2},
                    "priority": {"type": "integer", "minimum": 0, "maximum": 7},
                    "max_latency": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                    "flags": {"type": "array", "items": {"enum": ["reliable", "ordered"]}},
                    "wait": {"type": "boolean", "default": false, "description": "Answer once the destination acknowledged (qos 1 or 2)"}}}
            }
        }
    })
}
