//! `meshfed route list`: the node's routing table, through the API.

use std::path::Path;

use meshfed_node::api::models::RouteList;

use crate::cli::OutputFormat;
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::output::{Layout, outln, structured, table};

pub(crate) fn list(dir: &Path, output: OutputFormat) -> Result<(), Failure> {
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(async move {
        let list: RouteList = client.get("/v1/routes").await?;
        if let Some(printed) = structured(output, &list.routes, Layout::Line) {
            return printed;
        }
        if list.routes.is_empty() {
            return outln!(
                "no routes (federate with a broker: meshfed federation invite --peer MESH on the broker, then join)"
            );
        }
        let rows: Vec<[String; 5]> = (list.routes.iter())
            .map(|r| {
                let path: Vec<&str> = r.path.iter().map(|m| m.as_str()).collect();
                [
                    r.destination.to_string(),
                    r.next_hop.to_string(),
                    r.hops.to_string(),
                    format!("{:.1}ms", r.rtt_ms),
                    path.join(" → "),
                ]
            })
            .collect();
        table(["MESH", "NEXT HOP", "HOPS", "RTT", "PATH"], &rows)
    })
}
