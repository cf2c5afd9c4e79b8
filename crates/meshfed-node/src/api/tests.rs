//! The OpenAPI document against the router and the models: every route the router serves is
//! documented and every documented operation is served, with the token check the document
//! names; every model serializes to exactly what its schema says.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::SystemTime;

use axum::routing::get;
use meshfed_proto::envelope::{ContentType, EnvelopeId, Priority, Qos};
use meshfed_proto::policy::SignatureMode as AgreedSignatureMode;
use meshfed_proto::{FederationState, Termination};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::models::*;
use super::{api, document};
use crate::config::{NodeConfig, Role, SignatureMode};
use crate::{Gateway, InitOptions, init};

/// The methods probed on every served path. HEAD is left out: axum answers it for every GET.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"];

/// Every path `router` serves, read from the router itself: axum has no API that lists
/// routes, but its `Debug` shows the path table (`node: Node { paths: {RouteId(1): "/healthz",
/// …} }`) of the path router, before the fallback router.
fn served_paths<S>(router: &axum::Router<S>) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let table = debug
        .split("fallback_router")
        .next()
        .and_then(|r| r.split_once("paths: {"))
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("axum's Router Debug no longer shows its paths:\n{debug}"));
    let paths: BTreeSet<String> = table
        .split("): \"")
        .skip(1)
        .filter_map(|p| p.split_once('"').map(|(path, _)| path.to_owned()))
        .collect();
    assert!(
        paths.contains("/healthz"),
        "reading the paths out of axum's Router Debug failed: {paths:?}\n{debug}"
    );
    paths
}

/// The (method, path) of every operation in `doc`.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("the document has paths") {
        for method in item.as_object().expect("a path item is an object").keys() {
            if METHODS.contains(&method.to_uppercase().as_str()) || method == "head" {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// `path` with sample values for its parameters.
fn concrete(path: &str) -> String {
    path.replace("{id}", "fed_probe")
        .replace("{operation}", "suspend")
        .replace("{jti}", "00")
}

/// A gateway started in this process, on loopback ports.
struct Running {
    _dir: tempfile::TempDir,
    gateway: Gateway,
    http: reqwest::Client,
}

impl Running {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut opts = InitOptions::new(
            dir.path().to_path_buf(),
            "plant-a".parse().unwrap(),
            "gw1".parse().unwrap(),
            SystemTime::now(),
        );
        opts.federation_listen = any;
        opts.api_listen = any;
        init(opts).unwrap();
        let config = NodeConfig::load(dir.path()).unwrap();
        let gateway = Gateway::start(dir.path(), config).await.unwrap();
        Self {
            _dir: dir,
            gateway,
            http: reqwest::Client::new(),
        }
    }

    /// `method path`, with the token or without; the status and the body.
    async fn call(&self, method: &str, path: &str, token: bool) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let url = format!("http://{}{}", self.gateway.api_addr(), concrete(path));
        let mut req = self.http.request(method, url);
        if token {
            // Read each time: a rotation (`POST /v1/token/rotate`) replaces it.
            let current = std::fs::read_to_string(self._dir.path().join("admin.token")).unwrap();
            req = req.bearer_auth(current.trim());
        }
        let resp = req.send().await.unwrap();
        // An event stream never ends: its status is the answer.
        let content = resp.headers().get(reqwest::header::CONTENT_TYPE);
        if content.is_some_and(|c| c == "text/event-stream") {
            return (resp.status().as_u16(), String::new());
        }
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let node = Running::start().await;
    let (status, served_doc) = node.call("GET", "/v1/openapi.json", false).await;
    assert_eq!(status, 200, "{served_doc}");
    let doc: Value = serde_json::from_str(&served_doc).unwrap();
    assert_eq!(doc, serde_json::to_value(document()).unwrap());

    // The router as the gateway builds it: the one it serves.
    let router = super::router(node.gateway.handle().clone());
    let mut served = BTreeSet::new();
    for path in served_paths(&router) {
        for method in METHODS {
            // With the token, a method the route lacks is 405; the fallback (no route) is a
            // 404 with an empty body, where a handler's 404 says why in JSON.
            let (status, body) = node.call(method, &path, true).await;
            assert!(
                !(status == 404 && body.is_empty()),
                "{method} {path}: served path not found"
            );
            if status != 405 {
                served.insert((method.to_owned(), path.clone()));
            }
        }
    }
    assert_eq!(
        served,
        documented(&doc),
        "the routes served (left) and documented (right) differ"
    );
    node.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_security_and_answers_are_what_the_gateway_does() {
    let node = Running::start().await;
    let doc = serde_json::to_value(document()).unwrap();
    for (method, path) in documented(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let bearer = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        let (status, body) = node.call(&method, &path, false).await;
        assert_eq!(
            status == 401,
            bearer,
            "{method} {path} without a token: {status} {body}"
        );
        if bearer {
            let schema = &op["responses"]["401"]["content"]["application/json"]["schema"];
            let answer: Value = serde_json::from_str(&body).unwrap();
            check(&doc, schema, &answer, &format!("{method} {path} 401"));
        }
        // The GETs that answer at once with a body: not WebSockets, not one federation.
        let plain =
            !path.contains('{') && !path.ends_with("/stream") && !path.ends_with("/publish");
        if method == "GET" && plain {
            let (status, body) = node.call(&method, &path, true).await;
            // This node is a gateway: it has no directory, and says so as documented.
            let expected = if path == "/directory" { 404 } else { 200 };
            assert_eq!(status, expected, "{method} {path}: {body}");
            let content = &op["responses"][expected.to_string()]["content"];
            if let Some(schema) = content.get("application/json").map(|c| &c["schema"]) {
                let answer: Value = serde_json::from_str(&body).unwrap();
                check(&doc, schema, &answer, &format!("{method} {path} 200"));
            }
        }
    }
    node.gateway.shutdown().await;
}

#[test]
fn a_route_added_around_the_documentation_is_seen_as_served() {
    let (router, api_doc) = api(|v1| v1.route("/sneaky", get(|| async { "" }))).split_for_parts();
    let served = served_paths(&router);
    assert!(served.contains("/v1/sneaky"), "{served:?}");
    let doc = serde_json::to_value(api_doc).unwrap();
    assert!(doc["paths"].get("/v1/sneaky").is_none());
}

#[test]
fn both_messaging_sockets_document_the_format_parameter_and_its_two_values() {
    let doc = serde_json::to_value(document()).unwrap();
    for path in ["/v1/messages/stream", "/v1/messages/publish"] {
        let op = &doc["paths"][path]["get"];
        let params = op["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: {op}"));
        let format = params
            .iter()
            .find(|p| p["name"] == "format")
            .unwrap_or_else(|| panic!("{path} documents no format parameter: {op}"));
        assert_eq!(format["in"], "query", "{path}");
        assert_eq!(format["required"], false, "{path}");
        let description = format["description"].as_str().unwrap();
        assert!(description.contains("`binary`"), "{path}: {description}");
        assert!(
            op["description"]
                .as_str()
                .unwrap()
                .contains("format=binary"),
            "{path}: {op}"
        );
    }
    let names = &doc["components"]["schemas"]["Format"]["enum"];
    assert_eq!(names, &json!(["json", "binary"]), "{doc}");
}

#[test]
fn every_reference_in_the_document_names_a_component_it_has() {
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let doc = serde_json::to_value(document()).unwrap();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 20, "{found:?}");
    let dangling: BTreeSet<&str> = found
        .into_iter()
        .filter(|r| {
            r.strip_prefix("#/components/schemas/")
                .is_none_or(|name| doc["components"]["schemas"].get(name).is_none())
        })
        .collect();
    assert!(
        dangling.is_empty(),
        "references to no component: {dangling:?}"
    );
}

/// `value`, serialized, under the name of its schema.
fn sample<T: Serialize + ToSchema>(value: T) -> (String, Value) {
    (T::name().into_owned(), serde_json::to_value(value).unwrap())
}

fn id() -> EnvelopeId {
    "fed_0192f1b0c6a87d2e9c4b5a6f7e8d9c0b".parse().unwrap()
}

fn error() -> ErrorBody {
    ErrorBody {
        error: ErrorDetail {
            code: "bad_request".into(),
            message: "no".into(),
        },
    }
}

/// A view with every field filled: each optional one present.
fn federation() -> FederationView {
    FederationView {
        id: "fed_1".parse().unwrap(),
        peer: "supplier-b".parse().unwrap(),
        peer_node: Some("gw1".parse().unwrap()),
        role: FederationRole::Initiator,
        state: FederationState::Terminated(Termination::Forced),
        status: FederationStatus::TerminatedForced,
        state_reason: Some("terminated by an operator".into()),
        health: LinkHealth::Degraded,
        last_heartbeat: Some("2026-01-01T00:00:00Z".into()),
        rtt_ms: Some(0.25),
        connected_since: Some("2026-01-01T00:00:00Z".into()),
        peer_addresses: vec!["127.0.0.1:7443".into()],
        via: Some("hub-b".parse().unwrap()),
        peer_cas: vec![],
        created: "2026-01-01T00:00:00Z".into(),
        updated: "2026-01-01T00:00:00Z".into(),
        agreement: Some(AgreementSummary {
            digest: "00".into(),
            version: 1,
            valid_from: "2026-01-01T00:00:00Z".into(),
            valid_until: "2027-01-01T00:00:00Z".into(),
            protocol_version: 1,
            security_suite: "ecdsa-p384-sha384+aes-256-gcm".into(),
            max_qos: Qos::ExactlyOnce,
            max_frame: 1 << 20,
            compression: "none".into(),
            compliance: vec!["gdpr".into()],
            topics_to_responder: vec!["line-3/#".parse().unwrap()],
            topics_to_initiator: vec!["orders/+".parse().unwrap()],
            policy: AgreedPolicy {
                max_message_size: 1 << 20,
                max_rate: Some(100),
                encryption_required: true,
                signature_modes: vec![AgreedSignatureMode::PerMessage, AgreedSignatureMode::Batch],
                residency: vec!["eu".into()],
                regions: vec!["eu".into()],
                retention_days: 365,
                content_types: vec!["application/json".into()],
                redact: vec!["/customer/email".into()],
                max_priority: 6,
                max_latency_ms: Some(30_000),
                algorithms: meshfed_proto::policy::Algorithm::ALL.to_vec(),
                audit_level: meshfed_proto::policy::AuditLevel::Full,
                min_message_size: 4096,
                min_rate: Some(10),
                min_retention_days: 30,
                topic_rates: vec![TopicLimit {
                    topics: "line-3/#".parse().unwrap(),
                    rate: 50,
                }],
                schemas: vec!["order-v2".into()],
                classifications: vec!["internal".into()],
            },
        }),
        backlog: Some(Backlog {
            messages: 3,
            bytes: 30,
            by_priority: [3, 0, 0, 0, 0, 0, 0, 0],
            in_flight: 1,
            awaiting_persistence: 1,
            oldest_ms: Some(12),
        }),
        dead_lettered: Some(2),
        delivery: Some(DeliveryStats {
            sent: 5,
            retransmitted: 1,
            acknowledged: 4,
            transfers: 2,
            shed: 1,
            unwanted: 6,
            in_custody: 2,
            custody_refused: 1,
            last_custody_refusal: Some("custody_full: the broker holds 3 envelopes".to_owned()),
        }),
        peer_interest: Some(PeerInterest {
            known: true,
            version: Some(2),
            patterns: vec!["sensors/#".parse().unwrap()],
        }),
        agreement_history: Some(vec![PastAgreement {
            version: 1,
            digest: "00".into(),
            replaced: "2026-01-01T00:00:00Z".into(),
        }]),
        breaker: Some(BreakerView {
            state: BreakerState::HalfOpen,
            since: Some("2026-01-01T00:00:00Z".into()),
            reason: Some("open time of 5s passed".into()),
        }),
    }
}

/// A view with every optional field absent (`null`, or left out where the API leaves it out).
fn descriptor() -> DescriptorView {
    DescriptorView {
        mesh: "cloud-c".parse().unwrap(),
        capabilities: vec!["role=gateway".into()],
        addresses: vec!["10.0.0.3:7443".into()],
        ca_fingerprint: "ab".repeat(48),
        issued: "2026-01-01T00:00:00Z".into(),
        expires: "2026-01-02T00:00:00Z".into(),
    }
}

fn route() -> RouteView {
    RouteView {
        destination: "cloud-c".parse().unwrap(),
        next_hop: "hub-b".parse().unwrap(),
        path: ["plant-a", "hub-b", "cloud-c"]
            .map(|m| m.parse().unwrap())
            .to_vec(),
        hops: 2,
        rtt_ms: 0.4,
    }
}

fn sparse_federation() -> FederationView {
    FederationView {
        peer_node: None,
        state_reason: None,
        last_heartbeat: None,
        rtt_ms: None,
        connected_since: None,
        peer_addresses: Vec::new(),
        via: None,
        agreement: None,
        backlog: None,
        dead_lettered: None,
        delivery: None,
        agreement_history: None,
        breaker: None,
        ..federation()
    }
}

fn send_request() -> SendRequest {
    SendRequest {
        content_type: Some(ContentType::json()),
        qos: Qos::AtLeastOnce,
        priority: Priority::MAX,
        max_latency: Some(json!("5s")),
        flags: vec!["ordered".into()],
        wait: true,
        properties: Some(message_properties()),
        ..SendRequest::new(
            "supplier-b".parse().unwrap(),
            "line-3/temp".parse().unwrap(),
            json!({"celsius": 21.5}),
        )
    }
}

fn message_properties() -> MessageProperties {
    MessageProperties {
        user: vec![
            ("traceparent".into(), "00-4bf9-01".into()),
            ("x-tag".into(), "a".into()),
            ("x-tag".into(), "b".into()),
        ],
        correlation_data: Some("cmVxLTQy".into()),
        reply_to: Some("replies/plant-a".parse().unwrap()),
    }
}

/// A sample of every model: each with its optional fields present, and again without them
/// where that changes the JSON; every variant of the untagged enums.
fn ca_view() -> CaView {
    CaView {
        fingerprint: "ab".repeat(48),
        not_after: "2036-01-01T00:00:00Z".into(),
    }
}

fn partner_trust() -> PartnerTrust {
    PartnerTrust {
        federation: "fed_abc123".parse().unwrap(),
        peer: "supplier-b".parse().unwrap(),
        acknowledged_serial: 0,
        current: false,
    }
}

fn connector() -> ConnectorView {
    ConnectorView {
        name: "plant-bus".into(),
        kind: "mqtt".into(),
        url: "mqtt://127.0.0.1:1883".into(),
        state: "connecting".into(),
        since: "2026-12-05T01:00:00Z".into(),
        last_error: Some("MQTT connection: connection refused".into()),
        exported: 3,
        imported: 2,
        unmapped: 1,
        loops: 0,
        refused: 0,
        errors: 1,
        rules: vec!["export plant/+/temp → readings/+/temp to supplier-b (qos 1)".into()],
    }
}

fn audit_page() -> AuditPage {
    AuditPage {
        records: vec![AuditRecordView {
            id: 7,
            log: "fed_0192f1b0c6a87d2e9c4b5a6f7e8d9c0b".into(),
            seq: 3,
            time: "2026-01-01T00:00:00Z".into(),
            kind: "lifecycle".into(),
            peer: Some("supplier-b".into()),
            record: json!({"kind": "lifecycle", "from": "active", "to": "suspended"}),
        }],
        next: Some(7),
    }
}

fn audit_verification() -> AuditVerification {
    AuditVerification {
        intact: false,
        logs: vec![LogVerification {
            log: "node".into(),
            records: 12,
            pruned: 2,
            heads: 3,
            countersignatures: 0,
            problems: vec!["record 4 of log node (stored at position 5): its MAC does not match: it was edited".into()],
            discrepancies: vec!["2026-01-01T00:00:00Z: with supplier-b: rollback".into()],
        }],
    }
}

fn audit_report() -> AuditReport {
    AuditReport {
        from: Some("2026-01-01T00:00:00Z".into()),
        to: None,
        federations: vec![FederationReport {
            federation: "fed_0192f1b0c6a87d2e9c4b5a6f7e8d9c0b".into(),
            peer: Some("supplier-b".into()),
            agreements: vec![AgreementEntry {
                time: "2026-01-01T00:00:00Z".into(),
                version: 1,
                cause: "established".into(),
                digest: "00".into(),
            }],
            sent: 10,
            received: 4,
            bytes_sent: 1000,
            bytes_received: 400,
            refused: vec![Count {
                reason: "too_large".into(),
                count: 1,
            }],
            lifecycle: vec!["2026-01-01T00:00:00Z: active → suspended (an operator)".into()],
            compliance: Some(json!({"audit_level": "full", "retention_days": 30})),
            anomalies: Vec::new(),
            countersigned: 2,
            discrepancies: Vec::new(),
        }],
    }
}

fn stats() -> StatsView {
    let active = FederationStats {
        federation: "fed_0123456789abcdef0123456789abcdef".parse().unwrap(),
        peer: "supplier-b".parse().unwrap(),
        state: FederationState::Active,
        healthy: true,
        rtt_ms: Some(0.41),
        sent_per_second: 1234.0,
        delivered_per_second: 1200.0,
        refused_per_second: 0.0,
        latency_ms: Some(LatencyPercentiles {
            p50: 1.2,
            p90: 2.0,
            p99: 5.1,
            count: 1200,
        }),
        backlog: StatsBacklog {
            messages: 0,
            bytes: 0,
        },
    };
    let quiet = FederationStats {
        state: FederationState::Suspended,
        healthy: false,
        rtt_ms: None,
        latency_ms: None,
        ..active.clone()
    };
    StatsView {
        at: "2026-12-05T06:40:00Z".into(),
        window_seconds: 10,
        federations: vec![active, quiet],
        totals: StatsRates {
            sent_per_second: 1234.0,
            delivered_per_second: 1200.0,
            refused_per_second: 0.0,
        },
    }
}

fn samples() -> Vec<(String, Value)> {
    let node = NodeInfo {
        mesh: "plant-a".parse().unwrap(),
        node: "gw1".parse().unwrap(),
        role: Role::Gateway,
        uri: "meshfed://plant-a/gw1".into(),
        federation_address: "127.0.0.1:7443".parse().unwrap(),
        ca_fingerprint: "00".into(),
        node_cert_expires: "2026-01-01T00:00:00Z".into(),
        trust_bundle_mesh: "plant-a".parse().unwrap(),
        delivery: NodeDelivery {
            signatures: SignatureMode::Message,
        },
        version: "0.1.0".into(),
        pid: 4242,
    };
    let accepted = MessageAccepted { id: id() };
    let acknowledged = MessageAcknowledged {
        id: id(),
        status: DeliveryStatus::Acknowledged,
    };
    let acked = Acked {
        acked: id().to_string(),
    };
    let filled = federation();
    let (
        Some(agreement),
        Some(backlog),
        Some(delivery),
        Some(history),
        Some(interest),
        Some(breaker),
    ) = (
        filled.agreement,
        filled.backlog,
        filled.delivery,
        filled.agreement_history,
        filled.peer_interest,
        filled.breaker,
    )
    else {
        unreachable!("federation() fills every field")
    };
    let dead_letter = DeadLetterView {
        id: id(),
        to: "supplier-b".parse().unwrap(),
        topic: "t/late".parse().unwrap(),
        priority: Priority::MAX,
        qos: Qos::AtLeastOnce,
        reason: "deadline passed while queued".into(),
        at: "2026-01-01T00:00:00Z".into(),
    };
    let policy = PolicyView {
        file: Some("[qos]\nmax_rate = 10\n".into()),
        offer: PolicyOfferView {
            publishes: vec!["orders/#".parse().unwrap()],
            wants: vec!["shipments/#".parse().unwrap()],
            frameworks: vec!["gdpr".into()],
            requires_frameworks: vec!["gdpr".into()],
            terms: agreement.policy.clone(),
        },
        agreements: vec![PolicyAgreementView {
            federation_id: "fed_1".parse().unwrap(),
            peer: "supplier-b".parse().unwrap(),
            state: FederationState::Active,
            agreement: Some(agreement.clone()),
        }],
    };
    vec![
        sample(Change {
            kind: ChangeKind::Suspended,
            federation: Some("fed_1".parse().unwrap()),
            peer: "plant-a".parse().unwrap(),
            state: "suspended".into(),
            previous: Some("active".into()),
            reason: Some("suspended by an operator".into()),
            time: "2026-01-01T00:00:00.000Z".into(),
        }),
        sample(PolicyUpdate {
            toml: "[qos]\nmax_rate = 10\n".into(),
        }),
        sample(PolicyUpdated {
            policy: policy.clone(),
            proposals: vec![PolicyProposalView {
                federation_id: "fed_1".parse().unwrap(),
                peer: "supplier-b".parse().unwrap(),
                agreed: false,
                version: Some(2),
                reason: Some("policy cannot be agreed: qos.max_rate: …".into()),
            }],
        }),
        sample(policy.offer.clone()),
        sample(policy.agreements[0].clone()),
        sample(PolicyProposalView {
            federation_id: "fed_1".parse().unwrap(),
            peer: "supplier-b".parse().unwrap(),
            agreed: true,
            version: Some(2),
            reason: None,
        }),
        sample(policy),
        sample(node.delivery.clone()),
        sample(node),
        sample(TokenRotated {
            token_file: "/srv/meshfed/admin.token".into(),
        }),
        sample(ca_view()),
        sample(partner_trust()),
        sample(TrustView {
            serial: 1,
            rollover: true,
            cas: vec![ca_view(), ca_view()],
            partners: vec![partner_trust()],
            announced_on: Some(1),
        }),
        sample(RevokeNodeRequest {
            node: "plant-a/gw2".into(),
        }),
        sample(revocation_list()),
        sample(RevokedDelegationView {
            id: "ab".repeat(16),
            revoked_at: "2026-01-01T00:00:00Z".into(),
        }),
        sample(RevokedNodeView {
            node: "gw2".parse().unwrap(),
            revoked_at: "2026-01-01T00:00:00Z".into(),
        }),
        sample(RevokedSerialView {
            serial: "41".repeat(16),
            revoked_at: "2026-01-01T00:00:00Z".into(),
        }),
        sample(RevocationsView {
            mesh: "plant-a".parse().unwrap(),
            own: Some(revocation_list()),
            partners: vec![revocation_list()],
        }),
        sample(RevocationsView {
            mesh: "plant-a".parse().unwrap(),
            own: None,
            partners: Vec::new(),
        }),
        sample(FederationList {
            federations: vec![federation(), sparse_federation()],
        }),
        sample(RouteList {
            routes: vec![route()],
        }),
        sample(ConnectorList {
            connectors: vec![connector()],
        }),
        sample(stats()),
        sample(stats().federations[0].clone()),
        sample(stats().federations[1].clone()),
        sample(stats().federations[0].latency_ms.unwrap()),
        sample(stats().federations[0].backlog),
        sample(stats().totals),
        sample(connector()),
        sample(audit_page()),
        sample(audit_page().records[0].clone()),
        sample(audit_verification()),
        sample(audit_verification().logs[0].clone()),
        sample(audit_report()),
        sample(audit_report().federations[0].clone()),
        sample(audit_report().federations[0].agreements[0].clone()),
        sample(audit_report().federations[0].refused[0].clone()),
        sample(route()),
        sample(DirectoryView {
            descriptors: vec![descriptor()],
        }),
        sample(descriptor()),
        sample(federation()),
        sample(sparse_federation()),
        sample(agreement.policy.clone()),
        sample(agreement.policy.topic_rates[0].clone()),
        sample(agreement),
        sample(backlog),
        sample(delivery),
        sample(interest),
        sample(breaker),
        sample(history[0].clone()),
        sample(InviteRequest {
            peer: "plant-a".parse().unwrap(),
            ttl: Some("1h".into()),
        }),
        sample(InviteRequest {
            peer: "plant-a".parse().unwrap(),
            ttl: None,
        }),
        sample(InviteResponse {
            token: "mfi1.x".into(),
            token_id: "tok_1".into(),
            peer: "plant-a".parse().unwrap(),
            expires: "2026-01-01T00:00:00Z".into(),
        }),
        sample(JoinRequest {
            token: "mfi1.x".into(),
            via: Some("broker-1".parse().unwrap()),
        }),
        sample(OperationRequest { force: true }),
        sample(OperationRequest::default()),
        sample(send_request()),
        sample(message_properties()),
        sample(MessageProperties::default()),
        sample(SendRequest {
            max_latency: Some(json!(250)),
            ..send_request()
        }),
        sample(SendRequest::new(
            "supplier-b".parse().unwrap(),
            "t".parse().unwrap(),
            json!("text"),
        )),
        sample(accepted),
        sample(acknowledged),
        sample(PublishReply::Accepted(accepted)),
        sample(PublishReply::Acknowledged(acknowledged)),
        sample(PublishReply::Refused(error())),
        sample(dead_letter.clone()),
        sample(DeadLetterList {
            dead_letters: vec![dead_letter],
        }),
        sample(DurableAck {
            ack: id().to_string(),
            confirm: true,
        }),
        sample(DurableAck {
            ack: id().to_string(),
            confirm: false,
        }),
        sample(acked.clone()),
        sample(StreamReply::Acked(acked)),
        sample(StreamReply::Refused(error())),
        sample(error().error),
        sample(error()),
        sample(IssueTokenRequest {
            subject: "erp".into(),
            roles: vec!["writer".into()],
            attributes: [("site".to_owned(), "north".to_owned())].into(),
            topics: vec!["orders/#".parse().unwrap()],
            actions: vec!["publish".into()],
            ttl: Some("1h".into()),
        }),
        sample(IssuedToken {
            token: "eyJ0.eyJ0.c2ln".into(),
            jti: "00".repeat(16),
            issuer: "meshfed:plant-a/gw1".into(),
            audience: "meshfed:plant-a".into(),
            kid: "kid".into(),
            subject: "erp".into(),
            roles: vec![],
            attributes: [("site".to_owned(), "north".to_owned())].into(),
            topics: vec!["orders/#".parse().unwrap()],
            actions: vec!["publish".into()],
            issued: "2026-01-01T00:00:00Z".into(),
            expires: "2026-01-01T01:00:00Z".into(),
        }),
        sample(token_view()),
        sample(TokenList {
            tokens: vec![
                token_view(),
                TokenView {
                    revoked: None,
                    ..token_view()
                },
            ],
        }),
        sample(IssueDelegationRequest {
            delegate: "hub-b".parse().unwrap(),
            audience: vec!["plant-a".parse().unwrap()],
            topics: vec!["parts/#".parse().unwrap()],
            depth: 1,
            ttl: Some("24h".into()),
        }),
        sample(AddDelegationRequest {
            token: "eyJ0.eyJ0.c2ln".into(),
        }),
        sample(delegation_view()),
        sample(IssuedDelegation {
            token: "eyJ0.eyJ0.c2ln".into(),
            delegation: delegation_view(),
        }),
        sample(DelegationList {
            delegations: vec![
                delegation_view(),
                DelegationView {
                    audience: None,
                    topics: None,
                    depth: None,
                    state: "revoked".into(),
                    ..delegation_view()
                },
            ],
        }),
        (
            "Envelope".to_owned(),
            json!({"federation": {"id": id()}, "message": {"celsius": 21.5}}),
        ),
    ]
}

fn delegation_view() -> DelegationView {
    DelegationView {
        id: "ab".repeat(16),
        issuer: "supplier-c".parse().unwrap(),
        delegate: "hub-b".parse().unwrap(),
        direction: "issued".into(),
        state: "valid".into(),
        issued: "2026-01-01T00:00:00Z".into(),
        expires: "2026-01-02T00:00:00Z".into(),
        audience: Some(vec!["plant-a".parse().unwrap()]),
        topics: Some(vec!["parts/#".parse().unwrap()]),
        depth: Some(1),
    }
}

#[test]
fn every_model_serializes_to_what_its_schema_says() {
    let doc = serde_json::to_value(document()).unwrap();
    for (name, value) in samples() {
        let schema = doc["components"]["schemas"]
            .get(&name)
            .unwrap_or_else(|| panic!("no schema {name} in the document"));
        check(&doc, schema, &value, &name);
    }
}

#[test]
fn every_object_schema_in_the_document_has_a_sample() {
    let doc = serde_json::to_value(document()).unwrap();
    let sampled: BTreeSet<String> = samples().into_iter().map(|(name, _)| name).collect();
    let structured: BTreeSet<String> = doc["components"]["schemas"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| s["type"] == "object" || s.get("oneOf").is_some())
        .map(|(name, _)| name.clone())
        .filter(|name| name != "MaxLatency")
        .collect();
    assert_eq!(structured, sampled);
}

#[test]
fn the_schema_check_refuses_an_undocumented_field_a_missing_one_and_a_wrong_type() {
    let doc = serde_json::to_value(document()).unwrap();
    let fails = |schema: &str, value: Value| {
        conforms(&doc, &doc["components"]["schemas"][schema], &value, schema).is_err()
    };
    assert!(!fails(
        "ErrorBody",
        json!({"error": {"code": "c", "message": "m"}})
    ));
    assert!(fails(
        "ErrorBody",
        json!({"error": {"code": "c", "message": "m", "hint": "h"}})
    ));
    assert!(fails("ErrorBody", json!({"error": {"code": "c"}})));
    assert!(fails(
        "ErrorBody",
        json!({"error": {"code": 1, "message": "m"}})
    ));
    assert!(fails("Qos", json!(3)));
    assert!(fails("FederationState", json!("gone")));
    let mut extra = serde_json::to_value(federation()).unwrap();
    extra["backlog"]["oldest"] = json!(1);
    assert!(fails("FederationView", extra));
}

/// Fails the test unless `value` is what `schema` (in `doc`) describes: every key a property,
/// every required property there, of the documented type, within its enum and bounds,
/// recursively.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) {
    if let Err(e) = conforms(doc, schema, value, at) {
        panic!("{e}");
    }
}

fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .ok_or_else(|| format!("{at}: unknown reference {reference}"))?;
        let target = doc["components"]["schemas"]
            .get(name)
            .ok_or_else(|| format!("{at}: no schema {name}"))?;
        return conforms(doc, target, value, at);
    }
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        let failures: Vec<String> = alternatives
            .iter()
            .filter_map(|s| conforms(doc, s, value, at).err())
            .collect();
        if failures.len() == alternatives.len() {
            return Err(format!(
                "{at}: {value} matches no alternative: {failures:?}"
            ));
        }
        return Ok(());
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => return Err(format!("{at}: a type of {other}")),
        };
        let ok = types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(n) = value.as_f64() {
        let below = schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m);
        let above = schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m);
        if below || above {
            return Err(format!("{at}: {value} is out of bounds"));
        }
    }
    if let (Some(items), Some(elements)) = (schema.get("items"), value.as_array()) {
        for (i, element) in elements.iter().enumerate() {
            conforms(doc, items, element, &format!("{at}[{i}]"))?;
        }
    }
    if let Some(object) = value.as_object() {
        match schema.get("properties").and_then(Value::as_object) {
            Some(properties) => {
                for (key, v) in object {
                    let property = properties
                        .get(key)
                        .ok_or_else(|| format!("{at}: field {key} is not in the schema"))?;
                    conforms(doc, property, v, &format!("{at}.{key}"))?;
                }
            }
            // A free-form value (a payload, an envelope's `federation`): any keys.
            None if schema.get("additionalProperties") != Some(&Value::Bool(false)) => {}
            None if object.is_empty() => {}
            None => return Err(format!("{at}: an object where the schema allows no fields")),
        }
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(required) {
                return Err(format!("{at}: required field {required} is missing"));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_federation_listener_that_cannot_accept() {
    let node = Running::start().await;
    assert_eq!(
        node.call("GET", "/readyz", false).await,
        (200, "ready\n".to_owned())
    );
    node.gateway
        .handle()
        .fail_accept("Too many open files (os error 24)");
    let (status, text) = node.call("GET", "/readyz", false).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(
        text,
        format!(
            "not ready:\n- the federation listener on {} cannot accept connections: Too many \
             open files (os error 24)\n",
            node.gateway.federation_addr()
        )
    );
    assert_eq!(node.call("GET", "/healthz", false).await.0, 200);
}

fn revocation_list() -> RevocationListView {
    RevocationListView {
        mesh: "plant-a".parse().unwrap(),
        version: 2,
        issued_at: "2026-01-01T00:00:00Z".into(),
        stored: "2026-01-01T00:00:01Z".into(),
        nodes: vec![RevokedNodeView {
            node: "gw2".parse().unwrap(),
            revoked_at: "2026-01-01T00:00:00Z".into(),
        }],
        serials: vec![RevokedSerialView {
            serial: "41".repeat(16),
            revoked_at: "2026-01-01T00:00:00Z".into(),
        }],
        delegations: vec![RevokedDelegationView {
            id: "ab".repeat(16),
            revoked_at: "2026-01-01T00:00:00Z".into(),
        }],
        relayed: true,
    }
}

fn token_view() -> TokenView {
    TokenView {
        jti: "00".repeat(16),
        subject: "erp".into(),
        attributes: [("site".to_owned(), "north".to_owned())].into(),
        roles: vec!["writer".into()],
        topics: vec!["orders/#".parse().unwrap()],
        actions: vec!["publish".into(), "subscribe".into()],
        issued: "2026-01-01T00:00:00Z".into(),
        expires: "2026-01-01T01:00:00Z".into(),
        revoked: Some("2026-01-01T00:30:00Z".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_token_gets_403_on_every_route_but_publishing_and_subscribing() {
    let node = Running::start().await;
    let admin = std::fs::read_to_string(node._dir.path().join("admin.token")).unwrap();
    let url = format!("http://{}/v1/tokens", node.gateway.api_addr());
    let issued: Value = node
        .http
        .post(url)
        .bearer_auth(admin.trim())
        .json(
            &json!({"subject": "erp", "topics": ["orders/#"], "actions": ["publish", "subscribe"]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = issued["token"].as_str().unwrap();
    let doc = serde_json::to_value(document()).unwrap();
    let component = [
        ("POST", "/v1/messages"),
        ("GET", "/v1/messages/publish"),
        ("GET", "/v1/messages/stream"),
    ];
    let mut refused = 0;
    for (method, path) in documented(&doc) {
        if !path.starts_with("/v1/") || path == "/v1/openapi.json" {
            continue;
        }
        let url = format!("http://{}{}", node.gateway.api_addr(), concrete(&path));
        let resp = node
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if component.contains(&(method.as_str(), path.as_str())) {
            assert_ne!(status, 403, "{method} {path}: {body}");
            assert_ne!(status, 401, "{method} {path}: {body}");
            continue;
        }
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{method} {path}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("needs the admin token or a token with the admin role")
                && message.contains("erp"),
            "{method} {path}: {message}"
        );
        let op = &doc["paths"][&path][method.to_lowercase()];
        assert!(
            op["responses"].get("403").is_some() || !op["security"].is_null(),
            "{method} {path}"
        );
        refused += 1;
    }
    assert!(refused > 15, "only {refused} admin routes probed");
    node.gateway.shutdown().await;
}
