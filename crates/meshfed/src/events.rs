//! `meshfed events`: follows `GET /v1/events` (Server-Sent Events) and prints each change of
//! a federation, a link or a partner's breaker as it comes, one line each, until the gateway
//! stops, `--count` changes came, or the reader of stdout goes.

use std::path::Path;

use anyhow::anyhow;
use meshfed_node::api::models::Change;

use crate::cli::{EventsArgs, OutputFormat};
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::output::{Layout, outln, structured};

/// The longest event this follower keeps reading before it gives up on it.
const MAX_EVENT: usize = 1 << 20;

pub(crate) fn follow(dir: &Path, args: &EventsArgs, output: OutputFormat) -> Result<(), Failure> {
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(async move {
        let mut response = client.follow("/v1/events").await?;
        eprintln!("following the changes of {} (Ctrl-C stops)", client.addr());
        let mut pending = String::new();
        let mut printed = 0;
        loop {
            while let Some((event, rest)) = pending.split_once("\n\n") {
                let event = event.to_owned();
                pending = rest.to_owned();
                if let Some((kind, data)) = fields(&event) {
                    print(&kind, &data, output)?;
                    printed += u64::from(kind != "lagged");
                    if args.count.is_some_and(|n| printed >= n) {
                        return Ok(());
                    }
                }
            }
            if pending.len() > MAX_EVENT {
                return Err(Failure::Runtime(anyhow!(
                    "the gateway at {} sent an event of more than 1 MiB",
                    client.addr()
                )));
            }
            let chunk = response
                .chunk()
                .await
                .map_err(|e| Failure::Runtime(anyhow!("the stream of changes broke off: {e}")))?;
            let Some(chunk) = chunk else {
                eprintln!("the gateway closed the stream of changes");
                return Ok(());
            };
            // The stream is UTF-8 and lines end with `\n` (as the gateway writes them).
            pending.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    })
}

/// An event's kind and data (its `data:` lines joined); `None` for a comment (keep-alive).
fn fields(event: &str) -> Option<(String, String)> {
    let mut kind = None;
    let mut data: Vec<&str> = Vec::new();
    for line in event.lines() {
        if let Some(k) = line.strip_prefix("event:") {
            kind = Some(k.trim_start().to_owned());
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    (!data.is_empty()).then(|| {
        (
            kind.unwrap_or_else(|| "message".to_owned()),
            data.join("\n"),
        )
    })
}

/// Prints one event as `output` asks; a lag goes to stderr, as no change.
fn print(kind: &str, data: &str, output: OutputFormat) -> Result<(), Failure> {
    if kind == "lagged" {
        let missed: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        eprintln!(
            "missed {} changes: this follower read too slowly for the gateway",
            missed["missed"]
        );
        return Ok(());
    }
    let change: Change = serde_json::from_str(data).map_err(|e| {
        Failure::Runtime(anyhow!(
            "the gateway sent a {kind} event this meshfed cannot read ({e}): {data}"
        ))
    })?;
    if output == OutputFormat::Yaml {
        outln!("---")?;
    }
    if let Some(printed) = structured(output, &change, Layout::Line) {
        return printed;
    }
    let federation = change
        .federation
        .as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string);
    let moved = match &change.previous {
        Some(previous) => format!("{previous} → {}", change.state),
        None => change.state.clone(),
    };
    let reason = change
        .reason
        .as_deref()
        .map_or_else(String::new, |r| format!(": {r}"));
    outln!(
        "{}  {}  {federation}  {}  {moved}{reason}",
        change.time,
        change.kind.as_str(),
        change.peer
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_its_kind_and_its_data_lines_and_a_comment_is_nothing() {
        assert_eq!(
            fields("event: suspended\ndata: {\"a\":1}"),
            Some(("suspended".to_owned(), "{\"a\":1}".to_owned()))
        );
        assert_eq!(
            fields("data: one\ndata: two"),
            Some(("message".to_owned(), "one\ntwo".to_owned()))
        );
        assert_eq!(fields(":"), None);
    }
}
