//! `meshfed policy show | check | apply`: this mesh's policy file, checked here or read and
//! replaced through the running gateway's API.

use std::fmt::Display;
use std::path::Path;

use anyhow::anyhow;
use meshfed_node::api::models::{AgreedPolicy, PolicyUpdate, PolicyUpdated, PolicyView};
use meshfed_proto::FederationId;

use crate::cli::{OutputFormat, PolicyCommand};
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::output::{Layout, outln, structured};

pub(crate) fn run(dir: &Path, cmd: PolicyCommand, output: OutputFormat) -> Result<(), Failure> {
    match cmd {
        PolicyCommand::Show { federation } => show(dir, federation.as_ref(), output),
        PolicyCommand::Check { file } => check(&file),
        PolicyCommand::Apply { file } => apply(dir, &file, output),
    }
}

fn show(
    dir: &Path,
    federation: Option<&FederationId>,
    output: OutputFormat,
) -> Result<(), Failure> {
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(async move {
        let mut view: PolicyView = client.get("/v1/policy").await?;
        if let Some(id) = federation {
            view.agreements.retain(|a| &a.federation_id == id);
            if view.agreements.is_empty() {
                return Err(Failure::Input(anyhow!("no federation {id}")));
            }
        }
        if let Some(printed) = structured(output, &view, Layout::Indented) {
            return printed;
        }
        if federation.is_none() {
            let o = &view.offer;
            match &view.file {
                Some(_) => outln!("policy in force (policy.toml):")?,
                None => outln!("policy in force: the defaults (no policy.toml)")?,
            }
            outln!("  access.publishes      {}", list(&o.publishes))?;
            outln!("  access.wants          {}", list(&o.wants))?;
            outln!("  compliance.frameworks {}", list(&o.frameworks))?;
            outln!("  requires frameworks   {}", list(&o.requires_frameworks))?;
            clauses(&o.terms)?;
        }
        for a in &view.agreements {
            outln!("")?;
            let Some(agreement) = &a.agreement else {
                outln!(
                    "{} with {} ({}): agreement unreadable",
                    a.federation_id,
                    a.peer,
                    a.state
                )?;
                continue;
            };
            outln!(
                "{} with {} ({}), agreement version {}:",
                a.federation_id,
                a.peer,
                a.state,
                agreement.version
            )?;
            outln!(
                "  topics to responder   {}",
                list(&agreement.topics_to_responder)
            )?;
            outln!(
                "  topics to initiator   {}",
                list(&agreement.topics_to_initiator)
            )?;
            outln!("  compliance.frameworks {}", list(&agreement.compliance))?;
            clauses(&agreement.policy)?;
        }
        Ok(())
    })
}

/// Prints each negotiated clause on a line of its own.
fn clauses(p: &AgreedPolicy) -> Result<(), Failure> {
    let or_none =
        |v: Option<u32>, unit: &str| v.map_or("no limit".to_owned(), |v| format!("{v}{unit}"));
    let any = |v: &[String]| {
        if v.is_empty() {
            "any".to_owned()
        } else {
            list(v)
        }
    };
    let limits: Vec<String> = (p.topic_rates.iter())
        .map(|l| format!("{} {} msg/s", l.topics, l.rate))
        .collect();
    let rows: [(&str, String); 19] = [
        (
            "data.max_message_size",
            format!("{} bytes", p.max_message_size),
        ),
        ("data.content_types", any(&p.content_types)),
        ("data.redact", list(&p.redact)),
        ("data.schemas", any(&p.schemas)),
        ("data.classifications", any(&p.classifications)),
        ("qos.max_rate", or_none(p.max_rate, " msg/s")),
        ("qos.limits", list(&limits)),
        ("qos.max_priority", p.max_priority.to_string()),
        ("qos.max_latency", or_none(p.max_latency_ms, "ms")),
        (
            "security.encryption",
            if p.encryption_required {
                "required"
            } else {
                "optional"
            }
            .to_owned(),
        ),
        ("security.signature_modes", compact(&p.signature_modes)),
        ("security.algorithms", compact(&p.algorithms)),
        (
            "compliance.residency",
            if p.residency.is_empty() {
                "anywhere".to_owned()
            } else {
                list(&p.residency)
            },
        ),
        (
            "compliance.regions",
            if p.regions.is_empty() {
                "not said".to_owned()
            } else {
                list(&p.regions)
            },
        ),
        ("compliance.retention_days", p.retention_days.to_string()),
        ("compliance.audit_level", compact(&p.audit_level)),
        (
            "requires.min_message_size",
            format!("{} bytes", p.min_message_size),
        ),
        (
            "requires.min_rate",
            p.min_rate
                .map_or("none".to_owned(), |r| format!("{r} msg/s")),
        ),
        (
            "requires.min_retention_days",
            p.min_retention_days.to_string(),
        ),
    ];
    for (clause, value) in rows {
        outln!("  {clause:<28} {value}")?;
    }
    Ok(())
}

fn check(file: &Path) -> Result<(), Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Config(anyhow!("cannot read {}: {e}", file.display())))?;
    let policy = meshfed_node::policy::parse(&text, file)
        .map_err(|errors| Failure::Config(anyhow!("{errors}")))?;
    let terms = AgreedPolicy::from(policy.offer.proposal());
    outln!("{}: ok", file.display())?;
    outln!(
        "  access.publishes      {}",
        list(&policy.services.publishes)
    )?;
    outln!("  access.wants          {}", list(&policy.services.wants))?;
    outln!(
        "  compliance.frameworks {}",
        list(&policy.compliance.supports)
    )?;
    outln!(
        "  requires frameworks   {}",
        list(&policy.compliance.requires)
    )?;
    clauses(&terms)
}

fn apply(dir: &Path, file: &Path, output: OutputFormat) -> Result<(), Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Config(anyhow!("cannot read {}: {e}", file.display())))?;
    // Checked here first, so that problems name the file as the user knows it.
    meshfed_node::policy::parse(&text, file)
        .map_err(|errors| Failure::Config(anyhow!("{errors}")))?;
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(async move {
        let updated: PolicyUpdated = client
            .put("/v1/policy", &PolicyUpdate { toml: text })
            .await?;
        if let Some(printed) = structured(output, &updated, Layout::Indented) {
            return printed;
        }
        if updated.proposals.is_empty() {
            return outln!(
                "the policy is in force; no live federation to propose it to, or nothing changed"
            );
        }
        outln!("the policy is in force; proposed to each live partner:")?;
        for p in &updated.proposals {
            match (p.agreed, p.version, &p.reason) {
                (true, Some(v), _) => outln!(
                    "  {} ({}): agreed, version {v} in force",
                    p.federation_id,
                    p.peer
                )?,
                (_, _, reason) => outln!(
                    "  {} ({}): not agreed, the agreement in force stays: {}",
                    p.federation_id,
                    p.peer,
                    reason.as_deref().unwrap_or("no reason given")
                )?,
            }
        }
        Ok(())
    })
}

fn list(items: &[impl Display]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value as compact JSON without quotes around plain strings.
fn compact(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v)
        .unwrap_or_default()
        .replace('"', "")
}
