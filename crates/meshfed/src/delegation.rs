//! `meshfed delegation issue | add | list | revoke`: the delegations of the running gateway,
//! through the API.

use std::io::Read as _;
use std::path::Path;

use anyhow::anyhow;
use meshfed_node::api::models::{
    AddDelegationRequest, DelegationList, DelegationView, IssueDelegationRequest, IssuedDelegation,
};

use crate::cli::{DelegationCommand, OutputFormat};
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::output::{Layout, outln, structured, table};

/// Runs one `meshfed delegation` command.
pub(crate) fn run(
    dir: &Path,
    command: DelegationCommand,
    output: OutputFormat,
) -> Result<(), Failure> {
    let client = ApiClient::for_dir(dir)?;
    match command {
        DelegationCommand::Issue {
            delegate,
            audience,
            topics,
            depth,
            ttl,
        } => {
            let request = IssueDelegationRequest {
                delegate,
                audience,
                topics,
                depth,
                ttl: Some(humantime::format_duration(ttl).to_string()),
            };
            runtime()?.block_on(async move {
                let issued: IssuedDelegation = client.post("/v1/delegations", &request).await?;
                structured(output, &issued, Layout::Indented)
                    .unwrap_or_else(|| outln!("{}", issued.token))
            })
        }
        DelegationCommand::Add { token } => {
            let token = if token == "-" {
                let mut read = String::new();
                std::io::stdin().read_to_string(&mut read).map_err(|e| {
                    Failure::Input(anyhow!("reading the delegation from stdin: {e}"))
                })?;
                read
            } else {
                token
            };
            let request = AddDelegationRequest {
                token: token.trim().to_owned(),
            };
            runtime()?.block_on(async move {
                let taken: DelegationView = client.post("/v1/delegations/held", &request).await?;
                outln!(
                    "holding delegation {} from {}: relay its messages on {} to {} until {}",
                    taken.id,
                    taken.issuer,
                    list(taken.topics.as_deref()),
                    list(taken.audience.as_deref()),
                    taken.expires
                )
            })
        }
        DelegationCommand::List => runtime()?.block_on(async move {
            let all: DelegationList = client.get("/v1/delegations").await?;
            if let Some(printed) = structured(output, &all.delegations, Layout::Indented) {
                return printed;
            }
            let rows: Vec<[String; 9]> = all.delegations.iter().map(row).collect();
            table(
                [
                    "ID",
                    "DIRECTION",
                    "ISSUER",
                    "DELEGATE",
                    "AUDIENCE",
                    "TOPICS",
                    "DEPTH",
                    "EXPIRES",
                    "STATE",
                ],
                &rows,
            )
        }),
        DelegationCommand::Revoke { id } => runtime()?.block_on(async move {
            let path = format!("/v1/delegations/{id}/revoke");
            let revoked: DelegationView = client.post(&path, &serde_json::json!({})).await?;
            outln!(
                "revoked delegation {} to {}: every partner learns it within a heartbeat interval",
                revoked.id,
                revoked.delegate
            )
        }),
    }
}

fn list<T: ToString>(items: Option<&[T]>) -> String {
    match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".to_owned(),
    }
}

fn row(d: &DelegationView) -> [String; 9] {
    [
        d.id.clone(),
        d.direction.clone(),
        d.issuer.to_string(),
        d.delegate.to_string(),
        list(d.audience.as_deref()),
        list(d.topics.as_deref()),
        d.depth.map_or_else(|| "-".to_owned(), |n| n.to_string()),
        d.expires.clone(),
        d.state.clone(),
    ]
}
