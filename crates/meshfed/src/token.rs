//! `meshfed token rotate | issue | list | revoke`: the admin token and the component tokens of
//! the running gateway, through the API.

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use meshfed_node::api::models::{
    IssueTokenRequest, IssuedToken, TokenList, TokenRotated, TokenView,
};
use meshfed_node::credentials::MAX_TOKEN_TTL;

use crate::cli::{OutputFormat, TokenCommand};
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::output::{Layout, outln, structured, table};

/// Asks the gateway to replace its admin token (authenticating with the current one).
pub(crate) fn rotate(dir: &Path) -> Result<(), Failure> {
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(async move {
        let rotated: TokenRotated = client
            .post("/v1/token/rotate", &serde_json::json!({}))
            .await?;
        outln!(
            "rotated the admin token: the new one is in {}; the old one no longer works",
            rotated.token_file
        )?;
        Ok(())
    })
}

/// `meshfed token issue | list | revoke`.
pub(crate) fn run(dir: &Path, command: TokenCommand, output: OutputFormat) -> Result<(), Failure> {
    match command {
        TokenCommand::Rotate => rotate(dir),
        TokenCommand::Issue {
            subject,
            roles,
            attributes,
            topics,
            actions,
            ttl,
        } => {
            if ttl > MAX_TOKEN_TTL || ttl < Duration::from_secs(1) {
                return Err(Failure::Input(anyhow!(
                    "--ttl {}: a token lives from 1s to 30 days (revoke one to end it early)",
                    humantime::format_duration(ttl)
                )));
            }
            let request = IssueTokenRequest {
                subject,
                roles,
                attributes: attributes.into_iter().collect(),
                topics,
                actions,
                ttl: Some(humantime::format_duration(ttl).to_string()),
            };
            let client = ApiClient::for_dir(dir)?;
            runtime()?.block_on(async move {
                let issued: IssuedToken = client.post("/v1/tokens", &request).await?;
                structured(output, &issued, Layout::Indented)
                    .unwrap_or_else(|| outln!("{}", issued.token))
            })
        }
        TokenCommand::List => {
            let client = ApiClient::for_dir(dir)?;
            runtime()?.block_on(async move {
                let list: TokenList = client.get("/v1/tokens").await?;
                if let Some(printed) = structured(output, &list.tokens, Layout::Indented) {
                    return printed;
                }
                let rows: Vec<[String; 8]> = list.tokens.iter().map(row).collect();
                table(
                    [
                        "JTI",
                        "SUBJECT",
                        "ROLES",
                        "ATTRIBUTES",
                        "TOPICS",
                        "ACTIONS",
                        "EXPIRES",
                        "REVOKED",
                    ],
                    &rows,
                )
            })
        }
        TokenCommand::Revoke { jti } => {
            let client = ApiClient::for_dir(dir)?;
            runtime()?.block_on(async move {
                let path = format!("/v1/tokens/{jti}/revoke");
                let revoked: TokenView = client.post(&path, &serde_json::json!({})).await?;
                outln!(
                    "revoked token {} of {}: refused from now on",
                    revoked.jti,
                    revoked.subject
                )
            })
        }
    }
}

fn row(t: &TokenView) -> [String; 8] {
    let words = |w: &[String]| {
        if w.is_empty() {
            "-".to_owned()
        } else {
            w.join(",")
        }
    };
    let topics: Vec<String> = t.topics.iter().map(ToString::to_string).collect();
    let attributes: Vec<String> = (t.attributes.iter())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    [
        t.jti.clone(),
        t.subject.clone(),
        words(&t.roles),
        words(&attributes),
        words(&topics),
        words(&t.actions),
        t.expires.clone(),
        t.revoked.clone().unwrap_or_else(|| "-".to_owned()),
    ]
}
