//! `meshfed token issue | list | revoke` against a running gateway, the issued token then used
//! by a component over plain HTTP: it publishes within its topics, is refused outside them and
//! on admin routes, and is refused altogether once revoked. The built binary, on loopback, with
//! ephemeral ports.

mod common;

use common::{federate, http, started};
use serde_json::{Value, json};

fn message(topic: &str) -> Value {
    json!({"to": "supplier-b", "topic": topic, "payload": {"n": 1}})
}

#[test]
fn an_issued_token_publishes_in_scope_and_is_refused_outside_it_until_revoked() {
    let a = started("plant-a");
    let b = started("supplier-b");
    federate(&a, &b);
    let api = a.api_addr();

    let out = a.cli(&[
        "token",
        "issue",
        "--subject",
        "erp",
        "--topics",
        "orders/#",
        "--actions",
        "publish",
        "--ttl",
        "10m",
    ]);
    let stdout = out.ok();
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is the token alone:\n{out}"
    );
    let token = stdout.trim();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");

    let (status, answer) = http(api, "POST", "/v1/messages", token, &message("orders/1"));
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["id"].as_str().unwrap().starts_with("fed_"),
        "{answer}"
    );
    let (status, answer) = http(api, "POST", "/v1/messages", token, &message("invoices/1"));
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "forbidden");
    let (status, answer) = http(api, "GET", "/v1/federations", token, &Value::Null);
    assert_eq!(status, 403, "{answer}");

    // The whole answer, with the id to revoke it by.
    let out = a.cli(&[
        "token",
        "issue",
        "--subject",
        "mes",
        "--role",
        "line-3",
        "--attr",
        "site=north",
        "--topics",
        "orders/#,invoices/+",
        "--actions",
        "publish,subscribe",
        "--json",
    ]);
    let issued: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(issued["roles"], json!(["line-3"]));
    assert_eq!(issued["topics"], json!(["orders/#", "invoices/+"]));
    assert_eq!(issued["actions"], json!(["publish", "subscribe"]));
    let jti = issued["jti"].as_str().unwrap();
    let second = issued["token"].as_str().unwrap();
    let (status, answer) = http(api, "POST", "/v1/messages", second, &message("invoices/1"));
    assert_eq!(status, 202, "{answer}");

    let out = a.cli(&["token", "list", "--json"]);
    let listed: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let mes = listed.as_array().unwrap().iter().find(|t| t["jti"] == jti);
    assert_eq!(
        mes.map(|t| &t["attributes"]),
        Some(&json!({"site": "north"})),
        "{listed}"
    );
    let table = a.cli(&["token", "list"]);
    let row = table
        .ok()
        .lines()
        .find(|l| l.contains("mes"))
        .unwrap_or_default();
    assert!(row.contains("site=north"), "{table}");

    let out = a.cli(&["token", "revoke", jti]);
    assert_eq!(
        out.ok().trim(),
        format!("revoked token {jti} of mes: refused from now on")
    );
    let (status, answer) = http(api, "POST", "/v1/messages", second, &message("invoices/2"));
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("was revoked"),
        "{answer}"
    );
    // The first token is untouched.
    let (status, answer) = http(api, "POST", "/v1/messages", token, &message("orders/2"));
    assert_eq!(status, 202, "{answer}");
}

#[test]
fn token_issue_refuses_a_ttl_over_30_days_and_a_grant_of_nothing() {
    let a = started("plant-a");
    let out = a.cli(&[
        "token",
        "issue",
        "--subject",
        "erp",
        "--topics",
        "orders/#",
        "--actions",
        "publish",
        "--ttl",
        "31d",
    ]);
    out.fails(2, "a token lives from 1s to 30 days");
    let out = a.cli(&["token", "issue", "--subject", "erp", "--topics", "orders/#"]);
    out.fails(2, "the token would allow nothing");
    let out = a.cli(&[
        "token",
        "issue",
        "--subject",
        "erp",
        "--topics",
        "orders/#",
        "--actions",
        "delete",
    ]);
    out.fails(2, "unknown action \"delete\"");
    let out = a.cli(&["token", "revoke", "nope"]);
    out.fails(1, "no token \"nope\" was issued by this gateway");
}
