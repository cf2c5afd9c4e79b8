//! `meshfed connector list | show NAME`: the connectors to the mesh's own bus, through the API.

use std::path::Path;

use meshfed_node::api::models::{ConnectorList, ConnectorView};

use crate::cli::ConnectorCommand;
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::output::{outln, table};

pub(crate) fn run(dir: &Path, command: ConnectorCommand) -> Result<(), Failure> {
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(async move {
        match command {
            ConnectorCommand::List { json } => {
                let list: ConnectorList = client.get("/v1/connectors").await?;
                if json {
                    return print_json(&list.connectors);
                }
                if list.connectors.is_empty() {
                    return outln!(
                        "no connectors (add a [[connector]] section to meshfed.toml: see the README)"
                    );
                }
                let rows: Vec<[String; 9]> = (list.connectors.iter())
                    .map(|c| {
                        [
                            c.name.clone(),
                            c.kind.clone(),
                            c.url.clone(),
                            c.state.clone(),
                            c.exported.to_string(),
                            c.imported.to_string(),
                            c.unmapped.to_string(),
                            c.loops.to_string(),
                            (c.refused + c.errors).to_string(),
                        ]
                    })
                    .collect();
                table(
                    [
                        "NAME", "KIND", "BROKER", "STATE", "EXPORTED", "IMPORTED", "UNMAPPED",
                        "LOOPS", "REFUSED+ERRORS",
                    ],
                    &rows,
                )
            }
            ConnectorCommand::Show { name, json } => {
                let c: ConnectorView = client.get(&format!("/v1/connectors/{name}")).await?;
                if json {
                    return print_json(&c);
                }
                outln!("connector {} ({}, {})", c.name, c.kind, c.url)?;
                outln!("  state     {} since {}", c.state, c.since)?;
                if let Some(e) = &c.last_error {
                    outln!("  last error {e}")?;
                }
                outln!(
                    "  messages  exported {}, imported {}, unmapped {}, loops {}, refused {}, errors {}",
                    c.exported,
                    c.imported,
                    c.unmapped,
                    c.loops,
                    c.refused,
                    c.errors
                )?;
                for r in &c.rules {
                    outln!("  {r}")?;
                }
                Ok(())
            }
        }
    })
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string(value)
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("writing JSON: {e}")))?;
    outln!("{text}")
}
