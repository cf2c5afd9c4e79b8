//! `meshfed ca rotate | retire-old | show`: a mesh CA rollover. The CA work is done on the node
//! directory, where the root key is (or with `--root-key`); the running gateway is then told to
//! use the new files and announce the new bundle to its partners.

use std::path::Path;
use std::time::SystemTime;

use anyhow::anyhow;
use meshfed_node::api::models::TrustView;
use meshfed_node::config::NodeConfig;
use meshfed_node::rollover::{self, CaFiles, RetireOptions, RolloverError, RotateOptions};

use crate::cli::CaCommand;
use crate::cli::OutputFormat;
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::output::{Layout, outln, structured};

pub(crate) fn run(dir: &Path, cmd: CaCommand, output: OutputFormat) -> Result<(), Failure> {
    let config = NodeConfig::load(dir).map_err(|e| Failure::Config(e.into()))?;
    let files = CaFiles::of(dir, &config);
    match cmd {
        CaCommand::Show => {
            let view = show(dir)?;
            print(&view, output)
        }
        CaCommand::Rotate {
            root_key,
            new_root_key_out,
        } => {
            let report = rollover::rotate(
                &files,
                &RotateOptions {
                    root_key,
                    new_root_key_out,
                    now: SystemTime::now(),
                },
            )
            .map_err(failure)?;
            outln!(
                "started a CA rollover for mesh {}: the bundle is now {} (in use) and {} (new), serial {}",
                report.mesh,
                report.cas[0],
                report.cas[1],
                report.serial
            )?;
            if let Some(key) = &report.new_root_key {
                outln!("the new mesh CA key is in {}", key.display())?;
            }
            announce(dir)?;
            outln!("once every partner has stored it (meshfed ca show), run: meshfed ca retire-old")
        }
        CaCommand::RetireOld { root_key, force } => {
            if !force {
                check_partners(dir)?;
            }
            let report = rollover::retire_old(
                &files,
                &RetireOptions {
                    root_key,
                    now: SystemTime::now(),
                    node_cert_validity: config.identity.node_cert_validity,
                },
            )
            .map_err(failure)?;
            outln!(
                "retired the old CA of mesh {}: the bundle is now {} alone, serial {}",
                report.mesh,
                report.cas[0],
                report.serial
            )?;
            announce(dir)
        }
    }
}

/// Tells the running gateway to use the new files; says so when no gateway runs.
fn announce(dir: &Path) -> Result<(), Failure> {
    if !meshfed_node::gateway::runtime_file(dir).exists() {
        return outln!(
            "the gateway is not running: it uses the new CA files when it starts, and tells each partner on its next link"
        );
    }
    let client = ApiClient::for_dir(dir)?;
    let view: TrustView =
        runtime()?.block_on(client.post("/v1/ca/reload", &serde_json::json!({})))?;
    outln!(
        "the gateway uses it now and sent it to {} connected partner(s); partners not connected get it on their next link",
        view.announced_on.unwrap_or(0)
    )
}

/// Refuses to retire the old CA while a partner has not stored the new bundle: it would refuse
/// this mesh's certificates from then on.
fn check_partners(dir: &Path) -> Result<(), Failure> {
    if !meshfed_node::gateway::runtime_file(dir).exists() {
        return Err(Failure::Runtime(anyhow!(
            "the gateway is not running, so whether every partner has stored the new CA cannot be checked: start it (partners get the bundle when they connect), or pass --force"
        )));
    }
    let view = show(dir)?;
    let behind: Vec<String> = view
        .partners
        .iter()
        .filter(|p| !p.current)
        .map(|p| {
            format!(
                "{} ({}, has serial {})",
                p.peer, p.federation, p.acknowledged_serial
            )
        })
        .collect();
    if behind.is_empty() {
        return Ok(());
    }
    Err(Failure::Runtime(anyhow!(
        "not every partner has stored this mesh's bundle of serial {}: {}; they would refuse this mesh once the old CA is retired. Wait until they connect (meshfed ca show), or pass --force",
        view.serial,
        behind.join(", ")
    )))
}

fn show(dir: &Path) -> Result<TrustView, Failure> {
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(client.get("/v1/ca"))
}

fn print(view: &TrustView, output: OutputFormat) -> Result<(), Failure> {
    if let Some(printed) = structured(output, view, Layout::Indented) {
        return printed;
    }
    let state = if view.rollover {
        "rollover under way"
    } else {
        "one CA"
    };
    outln!("serial {} — {state}", view.serial)?;
    for (i, ca) in view.cas.iter().enumerate() {
        let role = if i == 0 { "in use" } else { "next" };
        outln!("  CA {} ({role}), expires {}", ca.fingerprint, ca.not_after)?;
    }
    for p in &view.partners {
        let has = if p.current { "has it" } else { "not yet" };
        outln!(
            "  partner {} ({}): acknowledged serial {} — {has}",
            p.peer,
            p.federation,
            p.acknowledged_serial
        )?;
    }
    Ok(())
}

fn failure(e: RolloverError) -> Failure {
    if e.is_usage() {
        Failure::Input(e.into())
    } else {
        Failure::Runtime(e.into())
    }
}
