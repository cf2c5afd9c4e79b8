//! Component tokens on the API: a token issued by the gateway publishes and subscribes within
//! its topics and actions and nowhere else, is never taken from the URL, and once revoked stays
//! refused, also after the gateway restarts. Two gateways in one process over real mutual TLS on
//! loopback.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test on any error"
)]

mod common;

use common::{Node, federate, next_json};
use futures_util::{SinkExt as _, StreamExt as _};
use meshfed_node::api::binary::{self, Publish};
use meshfed_node::api::models::PublishReply;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A component token issued by `node`'s admin: the whole answer.
async fn issue(node: &Node, request: Value) -> Value {
    let (status, issued) = node.post("/v1/tokens", request).await;
    assert_eq!(status, 200, "{issued}");
    issued
}

/// `method path` on `node` with bearer `token` and JSON `body`: the status and the body.
async fn call(node: &Node, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = node.http.request(method, node.url(path)).bearer_auth(token);
    if !body.is_null() {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn send(topic: &str) -> Value {
    json!({"to": "supplier-b", "topic": topic, "payload": {"n": 1}})
}

/// Asserts that `token` (id `jti`) is refused by `node` as revoked.
async fn assert_revoked(node: &Node, token: &str, jti: &str, body: &Value) {
    let (status, answer) = call(node, "POST", "/v1/messages", token, body.clone()).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        format!("the bearer token is refused: token {jti} was revoked")
    );
}

/// The upgrade of `path` with `token`, refused: its status and JSON body.
async fn refused_upgrade(node: &Node, path: &str, token: &str) -> (u16, Value) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{}{path}", node.gateway.api_addr())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => panic!("{path}: the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            (
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap(),
            )
        }
        Err(e) => panic!("{path}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_token_publishes_only_within_its_topics_and_may_do_nothing_else() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let mut at_b = b.stream("").await;
    let issued = issue(
        &a,
        json!({"subject": "erp", "topics": ["orders/#"], "actions": ["publish"], "ttl": "10m"}),
    )
    .await;
    assert_eq!(issued["subject"], "erp");
    assert_eq!(issued["issuer"], "meshfed:plant-a/gw1");
    assert_eq!(issued["audience"], "meshfed:plant-a");
    let token = issued["token"].as_str().unwrap();

    let (status, body) = call(&a, "POST", "/v1/messages", token, send("orders/1")).await;
    assert_eq!(status, 202, "{body}");
    let got = next_json(&mut at_b).await;
    assert_eq!(got["federation"]["metadata"]["topic"], "orders/1", "{got}");

    let (status, body) = call(&a, "POST", "/v1/messages", token, send("invoices/1")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        body["error"]["message"],
        "the token of erp may not publish on invoices/1: its topics are orders/#"
    );

    // It may not subscribe, nor administer.
    let (status, body) = refused_upgrade(&a, "/v1/messages/stream?topic=orders/%23", token).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    let (status, body) = call(&a, "GET", "/v1/federations", token, Value::Null).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = call(&a, "POST", "/v1/tokens", token, json!({"subject": "x"})).await;
    assert_eq!(status, 403);

    // The pipelined publish socket refuses the messages out of scope one by one.
    let mut publisher = a.websocket("/v1/messages/publish", token).await.unwrap();
    for topic in ["orders/2", "invoices/2", "orders/3"] {
        publisher
            .feed(Message::Text(send(topic).to_string().into()))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let replies = [
        next_json(&mut publisher).await,
        next_json(&mut publisher).await,
        next_json(&mut publisher).await,
    ];
    assert!(replies[0]["id"].is_string(), "{}", replies[0]);
    assert_eq!(replies[1]["error"]["code"], "forbidden", "{}", replies[1]);
    assert!(replies[2]["id"].is_string(), "{}", replies[2]);
    for topic in ["orders/2", "orders/3"] {
        assert_eq!(
            next_json(&mut at_b).await["federation"]["metadata"]["topic"],
            topic
        );
    }

    // And so does its binary form.
    let mut binary_publisher = a
        .websocket("/v1/messages/publish?format=binary", token)
        .await
        .unwrap();
    let frame = Publish::new(
        "supplier-b".parse().unwrap(),
        "invoices/3".parse().unwrap(),
        b"x".to_vec(),
    );
    binary_publisher
        .send(Message::Binary(frame.encode().into()))
        .await
        .unwrap();
    let reply = loop {
        match binary_publisher.next().await.unwrap().unwrap() {
            Message::Binary(b) => break binary::decode_reply(&b).unwrap(),
            _ => continue,
        }
    };
    let PublishReply::Refused(refused) = reply else {
        panic!("accepted out of scope: {reply:?}")
    };
    assert_eq!(refused.error.code, "forbidden");

    let metrics = a.metrics().await;
    assert!(
        metrics.contains("meshfed_api_refused_total{reason=\"forbidden\"} 6"),
        "{metrics}"
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_token_subscribes_only_within_its_topics() {
    let a = Node::start("plant-a").await;
    let issued = issue(
        &a,
        json!({"subject": "dashboard", "topics": ["orders/#"], "actions": ["subscribe"]}),
    )
    .await;
    let token = issued["token"].as_str().unwrap();
    assert!(
        a.websocket("/v1/messages/stream?topic=orders/%2B", token)
            .await
            .is_ok()
    );
    for (path, what) in [
        ("/v1/messages/stream", "every topic"),
        ("/v1/messages/stream?topic=%23", "subscribe to #"),
        ("/v1/messages/stream?topic=invoices/%23", "invoices/#"),
    ] {
        let (status, body) = refused_upgrade(&a, path, token).await;
        assert_eq!(status, 403, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(what), "{path}: {message}");
    }
    let (status, body) = call(&a, "POST", "/v1/messages", token, send("orders/1")).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not allow publish"),
        "{body}"
    );
    a.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_needs_the_access_rules_as_well_as_the_token_scope() {
    let a = Node::start("plant-a").await;
    let rules = "[access]\nrules = '''\npermit (principal in Meshfed::Role::\"viewer\", action == Meshfed::Action::\"subscribe\", resource)\nwhen { resource.name like \"orders/*\" };\n'''\n";
    let (status, body) = call(&a, "PUT", "/v1/policy", &a.token, json!({"toml": rules})).await;
    assert_eq!(status, 200, "{body}");
    // Both tokens may subscribe to everything by their scope.
    let token = |issued: Value| issued["token"].as_str().unwrap().to_owned();
    let viewer = token(
        issue(
            &a,
            json!({"subject": "dashboard", "roles": ["viewer"], "topics": ["#"], "actions": ["subscribe"]}),
        )
        .await,
    );
    let clerk = token(
        issue(
            &a,
            json!({"subject": "clerk", "topics": ["#"], "actions": ["subscribe"]}),
        )
        .await,
    );
    assert!(
        a.websocket("/v1/messages/stream?topic=orders/%23", &viewer)
            .await
            .is_ok()
    );
    for (path, token, who) in [
        (
            "/v1/messages/stream?topic=%23",
            &viewer,
            "dashboard of plant-a may not subscribe on #",
        ),
        (
            "/v1/messages/stream?topic=orders/%23",
            &clerk,
            "clerk of plant-a may not subscribe on orders/#",
        ),
    ] {
        let (status, body) = refused_upgrade(&a, path, token).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "access_denied", "{body}");
        assert_eq!(
            body["error"]["message"],
            format!("access denied: {who}: no access rule permits it")
        );
    }
    // The operator's token answers to neither.
    assert!(
        a.websocket("/v1/messages/stream?topic=%23", &a.token)
            .await
            .is_ok()
    );
    a.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_changed_while_a_stream_is_open_hold_for_each_delivery() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let rules = |forbid: &str| {
        format!(
            "[access]\nrules = '''\npermit (principal, action == Meshfed::Action::\"publish\", resource)\nwhen {{ context.direction == \"inbound\" }};\npermit (principal in Meshfed::Role::\"viewer\", action == Meshfed::Action::\"subscribe\", resource)\nwhen {{ resource.name like \"orders/*\" }};\n{forbid}'''\n"
        )
    };
    let (status, body) = call(
        &b,
        "PUT",
        "/v1/policy",
        &b.token,
        json!({"toml": rules("")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let issued = issue(
        &b,
        json!({"subject": "dashboard", "roles": ["viewer"], "topics": ["orders/#"], "actions": ["subscribe"]}),
    )
    .await;
    let viewer = issued["token"].as_str().unwrap();
    let mut stream = b
        .websocket("/v1/messages/stream?topic=orders/%23", viewer)
        .await
        .unwrap();
    let publish = |topic: &'static str| {
        let a = &a;
        async move {
            let body = json!({"to": "supplier-b", "topic": topic, "payload": {"t": topic}, "qos": 1, "wait": true});
            let (status, answer) = a.post("/v1/messages", body).await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    publish("orders/secret-1").await;
    let got = next_json(&mut stream).await;
    assert_eq!(got["message"]["t"], "orders/secret-1", "{got}");

    // Secret orders are forbidden to subscribers from now on: the open stream no longer gets
    // them, and still gets the others.
    let forbid = "forbid (principal, action == Meshfed::Action::\"subscribe\", resource)\nwhen { resource.name like \"orders/secret*\" };\n";
    let (status, body) = call(
        &b,
        "PUT",
        "/v1/policy",
        &b.token,
        json!({"toml": rules(forbid)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    publish("orders/secret-2").await;
    publish("orders/3").await;
    let got = next_json(&mut stream).await;
    assert_eq!(got["message"]["t"], "orders/3", "{got}");
    let metrics = b.metrics().await;
    assert!(
        metrics.contains("meshfed_api_refused_total{reason=\"access_denied\"} 1"),
        "{metrics}"
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_never_taken_from_the_url_and_a_bad_one_is_401() {
    let a = Node::start("plant-a").await;
    let issued = issue(
        &a,
        json!({"subject": "erp", "topics": ["orders/#"], "actions": ["subscribe"]}),
    )
    .await;
    let token = issued["token"].as_str().unwrap();
    for query in ["token", "access_token"] {
        let url = a.url(&format!("/v1/federations?{query}={token}"));
        let resp = a.http.get(url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "token_in_url");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Authorization header"),
            "{body}"
        );
    }
    // Even with a good header beside it.
    let (status, body) = call(
        &a,
        "GET",
        &format!("/v1/messages/stream?topic=orders/1&access_token={token}"),
        &a.token,
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("token_in_url"))
    );

    // A token of another gateway is not this one's.
    let other = Node::start("plant-a").await;
    let foreign = issue(
        &other,
        json!({"subject": "erp", "topics": ["orders/#"], "actions": ["publish"]}),
    )
    .await;
    let (status, body) = call(
        &a,
        "GET",
        "/v1/node",
        foreign["token"].as_str().unwrap(),
        Value::Null,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not this gateway's issuer key"),
        "{body}"
    );
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("meshfed_api_refused_total{reason=\"token_in_url\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshfed_api_refused_total{reason=\"unknown_key\"} 1"),
        "{metrics}"
    );
    a.gateway.shutdown().await;
    other.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stays_refused_after_the_gateway_restarts() {
    let a = Node::start("plant-a").await;
    let revoked = issue(
        &a,
        json!({"subject": "erp", "topics": ["orders/#"], "actions": ["publish"]}),
    )
    .await;
    let kept = issue(
        &a,
        json!({"subject": "mes", "topics": ["orders/#"], "actions": ["publish"]}),
    )
    .await;
    let (revoked_token, kept_token) = (
        revoked["token"].as_str().unwrap().to_owned(),
        kept["token"].as_str().unwrap().to_owned(),
    );
    // Authenticated and in scope, the message reaches the admission checks: no such mesh.
    let nowhere = json!({"to": "nowhere", "topic": "orders/1", "payload": 1});
    let (status, body) = call(&a, "POST", "/v1/messages", &revoked_token, nowhere.clone()).await;
    assert_eq!(status, 404, "{body}");

    let jti = revoked["jti"].as_str().unwrap();
    let (status, body) = a.post(&format!("/v1/tokens/{jti}/revoke"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["revoked"].is_string(), "{body}");
    let (status, body) = a.post("/v1/tokens/nope/revoke", json!({})).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));

    assert_revoked(&a, &revoked_token, jti, &nowhere).await;

    let a = a.stop().await.start().await;
    assert_revoked(&a, &revoked_token, jti, &nowhere).await;
    // The issuer key outlived the restart: the other token still works.
    let (status, body) = call(&a, "POST", "/v1/messages", &kept_token, nowhere).await;
    assert_eq!(status, 404, "{body}");
    let (status, list) = a.get("/v1/tokens").await;
    assert_eq!(status, 200, "{list}");
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{list}");
    for t in tokens {
        assert_eq!(t["revoked"].is_string(), t["jti"] == jti, "{t}");
        assert!(t.get("token").is_none(), "{t}");
    }
    a.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_directory_from_before_tokens_gets_its_issuer_key_at_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let key = |dir: &std::path::Path| dir.join(meshfed_node::credentials::ISSUER_KEY);
    let a = Node::start_on_prepared("plant-a", meshfed_node::Clock::system(), |dir| {
        std::fs::remove_file(key(dir)).unwrap();
    })
    .await;
    let mode = std::fs::metadata(key(a.dir()))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let issued = issue(
        &a,
        json!({"subject": "erp", "topics": ["orders/#"], "actions": ["subscribe"]}),
    )
    .await;
    assert!(
        a.websocket(
            "/v1/messages/stream?topic=orders/1",
            issued["token"].as_str().unwrap()
        )
        .await
        .is_ok()
    );
    a.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_while_its_sockets_are_open_is_refused_on_them() {
    let a = Node::start("plant-a").await;
    let b = Node::start("supplier-b").await;
    federate(&a, &b).await;
    let issued = issue(
        &a,
        json!({"subject": "erp", "topics": ["orders/#"], "actions": ["publish", "subscribe"]}),
    )
    .await;
    let token = issued["token"].as_str().unwrap();
    let mut publisher = a.websocket("/v1/messages/publish", token).await.unwrap();
    let mut subscriber = a
        .websocket("/v1/messages/stream?topic=orders/%23", token)
        .await
        .unwrap();
    let (status, body) = b
        .post(
            "/v1/messages",
            json!({"to": "plant-a", "topic": "orders/1", "payload": 1}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        next_json(&mut subscriber).await["federation"]["metadata"]["topic"],
        "orders/1"
    );

    let jti = issued["jti"].as_str().unwrap();
    let (status, body) = a.post(&format!("/v1/tokens/{jti}/revoke"), json!({})).await;
    assert_eq!(status, 200, "{body}");

    publisher
        .send(Message::Text(send("orders/2").to_string().into()))
        .await
        .unwrap();
    let reply = next_json(&mut publisher).await;
    assert_eq!(reply["error"]["code"], "unauthorized", "{reply}");
    assert_eq!(
        reply["error"]["message"],
        format!("the bearer token is refused: token {jti} was revoked")
    );

    let (status, body) = b
        .post(
            "/v1/messages",
            json!({"to": "plant-a", "topic": "orders/2", "payload": 2}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let close = loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), subscriber.next())
            .await
            .expect("no frame within 10 s");
        match frame {
            Some(Ok(Message::Close(close))) => break close,
            Some(Ok(Message::Text(t))) => panic!("delivered after revocation: {t}"),
            Some(Ok(_)) => continue,
            other => panic!("the stream ended without a close frame: {other:?}"),
        }
    };
    let close = close.expect("a close frame with a reason");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("was revoked"), "{}", close.reason);
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}
