//! `meshfed federation ...`: invitations, joining, listing and lifecycle, through the API.

use std::path::Path;

use serde_json::{Value, json};

use crate::cli::FederationCommand;
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::runtime;

pub(crate) fn run(dir: &Path, cmd: FederationCommand) -> Result<(), Failure> {
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(async move {
        match cmd {
            FederationCommand::Invite { peer, ttl } => {
                let ttl = humantime::format_duration(ttl).to_string();
                let v = client.post("/v1/federations/invite", &json!({ "peer": peer, "ttl": ttl })).await?;
                println!("{}", text(&v["token"]));
                eprintln!(
                    "invitation {} for mesh {} — works once, until {}. On {}: meshfed federation join TOKEN",
                    text(&v["token_id"]),
                    text(&v["peer"]),
                    text(&v["expires"]),
                    text(&v["peer"])
                );
            }
            FederationCommand::Join { token } => {
                let v = client.post("/v1/federations/join", &json!({ "token": token.trim() })).await?;
                println!("joined federation {} with mesh {} ({})", text(&v["id"]), text(&v["peer"]), text(&v["status"]));
            }
            FederationCommand::List { json } => {
                let v = client.get("/v1/federations").await?;
                if json {
                    println!("{}", v["federations"]);
                } else {
                    print_table(v["federations"].as_array().map(Vec::as_slice).unwrap_or_default());
                }
            }
            FederationCommand::Show { id, json } => {
                let v = client.get(&format!("/v1/federations/{id}")).await?;
                if json {
                    println!("{v:#}");
                } else {
                    print_detail(&v);
                }
            }
            FederationCommand::Suspend { id } => operate(&client, &id, "suspend", json!({})).await?,
            FederationCommand::Resume { id } => operate(&client, &id, "resume", json!({})).await?,
            FederationCommand::Terminate { id, force } => operate(&client, &id, "terminate", json!({ "force": force })).await?,
        }
        Ok(())
    })
}

async fn operate(
    client: &ApiClient,
    id: &meshfed_proto::FederationId,
    op: &str,
    body: Value,
) -> Result<(), Failure> {
    let v = client
        .post(&format!("/v1/federations/{id}/{op}"), &body)
        .await?;
    println!(
        "federation {} with {} is now {}",
        text(&v["id"]),
        text(&v["peer"]),
        text(&v["state"])
    );
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn print_table(feds: &[Value]) {
    if feds.is_empty() {
        println!(
            "no federations (meshfed federation invite --peer MESH, then join on the other mesh)"
        );
        return;
    }
    let rows: Vec<[String; 6]> = feds
        .iter()
        .map(|f| {
            let rtt = f["rtt_ms"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}ms"));
            [
                text(&f["id"]),
                text(&f["peer"]),
                text(&f["status"]),
                text(&f["role"]),
                text(&f["last_heartbeat"]),
                rtt,
            ]
        })
        .collect();
    let head = ["ID", "PEER", "STATUS", "ROLE", "LAST HEARTBEAT", "RTT"];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 6]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
    }
}

fn print_detail(f: &Value) {
    let a = &f["agreement"];
    println!("federation      {}", text(&f["id"]));
    println!(
        "peer            {} (node {})",
        text(&f["peer"]),
        text(&f["peer_node"])
    );
    println!(
        "status          {}  (state {}, link {})",
        text(&f["status"]),
        text(&f["state"]),
        text(&f["health"])
    );
    println!("role            {}", text(&f["role"]));
    println!("last heartbeat  {}", text(&f["last_heartbeat"]));
    println!("connected since {}", text(&f["connected_since"]));
    if let Some(reason) = f["state_reason"].as_str() {
        println!("state reason    {reason}");
    }
    println!(
        "agreement       v{} valid {} .. {}",
        text(&a["version"]),
        text(&a["valid_from"]),
        text(&a["valid_until"])
    );
    println!("  digest        {}", text(&a["digest"]));
    println!("  suite         {}", text(&a["security_suite"]));
    println!(
        "  max qos       {}   max frame {} bytes",
        text(&a["max_qos"]),
        text(&a["max_frame"])
    );
    println!(
        "  topics        to responder {}  to initiator {}",
        a["topics_to_responder"], a["topics_to_initiator"]
    );
    println!("  policy        {}", a["policy"]);
    let b = &f["backlog"];
    if b.is_object() {
        println!(
            "backlog         {} messages, {} bytes ({} in flight, {} being stored); by priority 0..7 {}",
            b["messages"], b["bytes"], b["in_flight"], b["awaiting_persistence"], b["by_priority"]
        );
        let d = &f["delivery"];
        println!(
            "delivery        sent {}, sent again {}, acknowledged {}, dead-lettered {}",
            d["sent"], d["retransmitted"], d["acknowledged"], f["dead_lettered"]
        );
    }
}
