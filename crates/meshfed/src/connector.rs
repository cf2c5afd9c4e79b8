//! `meshfed connector list | show NAME`: the connectors to the mesh's own bus, through the API.

use std::path::Path;

use meshfed_node::api::models::{ConnectorList, ConnectorView};

use crate::cli::ConnectorCommand;
use crate::cli::OutputFormat;
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::output::{Layout, outln, structured, table};

pub(crate) fn run(
    dir: &Path,
    command: ConnectorCommand,
    output: OutputFormat,
) -> Result<(), Failure> {
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(async move {
        match command {
            ConnectorCommand::List => {
                let list: ConnectorList = client.get("/v1/connectors").await?;
                if let Some(printed) = structured(output, &list.connectors, Layout::Line) {
                    return printed;
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
            ConnectorCommand::Show { name } => {
                let c: ConnectorView = client.get(&format!("/v1/connectors/{name}")).await?;
                if let Some(printed) = structured(output, &c, Layout::Line) {
                    return printed;
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
