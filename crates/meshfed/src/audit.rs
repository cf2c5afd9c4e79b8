//! `meshfed audit verify | export | report | prove | check-proof`: the audit trail of the node
//! directory, read from its audit file (so a stopped node's trail is checked as it lies on disk).

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, anyhow};
use meshfed_audit::proof::MessageProof;
use meshfed_node::NodeConfig;
use meshfed_node::api::models::{AuditReport, AuditVerification};
use meshfed_node::audit::inspect::{Inspector, check_proof};
use meshfed_proto::FederationId;
use meshfed_proto::envelope::{EnvelopeId, Timestamp};
use meshfed_store::audit::RecordFilter;
use meshfed_trust::TrustBundle;

use crate::cli::{AuditCommand, ExportFormat, OutputFormat};
use crate::failure::Failure;
use crate::output::{Layout, outln, print, stdout_failure};

pub(crate) fn run(dir: &Path, command: AuditCommand, output: OutputFormat) -> Result<(), Failure> {
    // Every command but check-proof reads the node's trail; check-proof needs no node.
    let open = || -> Result<Inspector, Failure> {
        let config = NodeConfig::load(dir).map_err(|e| Failure::Config(e.into()))?;
        Inspector::open(dir, &config).map_err(|e| Failure::Runtime(anyhow!(e)))
    };
    let runtime = |e: String| Failure::Runtime(anyhow!(e));
    match command {
        AuditCommand::CheckProof { file, cas } => check(&file, &cas),
        AuditCommand::Verify => {
            let v = open()?.verify().map_err(runtime)?;
            print(output, &v, Layout::Indented, print_verification)?;
            if v.intact {
                Ok(())
            } else {
                Err(Failure::CheckFailed)
            }
        }
        AuditCommand::Export {
            format,
            from,
            to,
            federation,
            kind,
        } => {
            let filter = RecordFilter {
                scope: federation
                    .map(|f| parse_federation(&f).map(|f| f.to_string()))
                    .transpose()?,
                kind,
                from: time("--from", from.as_deref())?,
                to: time("--to", to.as_deref())?,
                ..RecordFilter::default()
            };
            export(&open()?, filter, format)
        }
        AuditCommand::Report {
            from,
            to,
            federation,
        } => {
            let federation = federation.as_deref().map(parse_federation).transpose()?;
            let report = open()?
                .report(
                    time("--from", from.as_deref())?,
                    time("--to", to.as_deref())?,
                    federation.as_ref(),
                )
                .map_err(runtime)?;
            print(output, &report, Layout::Indented, print_report)
        }
        AuditCommand::Prove { envelope, out } => {
            let id: EnvelopeId = envelope
                .parse()
                .map_err(|e| Failure::Input(anyhow!("{envelope:?} is not an envelope id: {e}")))?;
            let proof = open()?.prove(&id).map_err(runtime)?;
            let text = proof.to_json();
            match out {
                Some(path) => std::fs::write(&path, format!("{text}\n"))
                    .with_context(|| format!("cannot write {}", path.display()))
                    .map_err(Failure::Runtime),
                None => outln!("{text}"),
            }
        }
    }
}

fn parse_federation(f: &str) -> Result<FederationId, Failure> {
    f.parse()
        .map_err(|e| Failure::Input(anyhow!("--federation {f:?}: {e}")))
}

fn time(what: &str, text: Option<&str>) -> Result<Option<Timestamp>, Failure> {
    text.map(|t| {
        humantime::parse_rfc3339_weak(t)
            .map(meshfed_node::clock::timestamp)
            .map_err(|e| Failure::Input(anyhow!("{what} {t:?} is not an RFC 3339 time: {e}")))
    })
    .transpose()
}

fn print_verification(v: &AuditVerification) -> Result<(), Failure> {
    for log in &v.logs {
        let state = if log.problems.is_empty() && log.discrepancies.is_empty() {
            "intact"
        } else {
            "NOT INTACT"
        };
        outln!(
            "log {}: {state}: {} records ({} pruned), {} signed heads, {} countersignatures",
            log.log,
            log.records,
            log.pruned,
            log.heads,
            log.countersignatures
        )?;
        for p in &log.problems {
            outln!("  problem: {p}")?;
        }
        for d in &log.discrepancies {
            outln!("  partner discrepancy: {d}")?;
        }
    }
    if v.logs.is_empty() {
        outln!("the audit trail holds no records yet")?;
    }
    outln!(
        "{}",
        if v.intact {
            "audit trail intact"
        } else {
            "audit trail NOT intact"
        }
    )
}

fn print_report(r: &AuditReport) -> Result<(), Failure> {
    if r.federations.is_empty() {
        return outln!("no federation has records in this period");
    }
    for f in &r.federations {
        outln!(
            "federation {} with {}",
            f.federation,
            f.peer.as_deref().unwrap_or("?")
        )?;
        for a in &f.agreements {
            outln!(
                "  agreement v{} ({}) at {}: sha384:{}",
                a.version,
                a.cause,
                a.time,
                a.digest
            )?;
        }
        if let Some(c) = &f.compliance {
            outln!("  compliance in force: {c}")?;
        }
        outln!(
            "  messages: {} sent ({} bytes), {} received ({} bytes)",
            f.sent,
            f.bytes_sent,
            f.received,
            f.bytes_received
        )?;
        for c in &f.refused {
            outln!("  refused: {} × {}", c.count, c.reason)?;
        }
        for l in &f.lifecycle {
            outln!("  lifecycle: {l}")?;
        }
        for a in &f.anomalies {
            outln!("  anomaly: {a}")?;
        }
        outln!("  partner heads countersigned: {}", f.countersigned)?;
        for d in &f.discrepancies {
            outln!("  discrepancy: {d}")?;
        }
    }
    Ok(())
}

/// Writes every record matching `filter`, page by page.
fn export(
    inspector: &Inspector,
    mut filter: RecordFilter,
    format: ExportFormat,
) -> Result<(), Failure> {
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let csv_failure = |e: csv::Error| match e.into_kind() {
        csv::ErrorKind::Io(e) => stdout_failure(e),
        other => Failure::Runtime(anyhow!("cannot write CSV: {other:?}")),
    };
    let mut sink = match format {
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(["id", "log", "seq", "time", "kind", "peer", "record"])
                .map_err(csv_failure)?;
            Sink::Csv(Box::new(w))
        }
        ExportFormat::Json => Sink::Json(out),
    };
    loop {
        let page = inspector
            .page(&RecordFilter {
                limit: Some(meshfed_node::audit::inspect::MAX_PAGE),
                ..filter.clone()
            })
            .map_err(|e| Failure::Runtime(anyhow!(e)))?;
        for r in &page.records {
            match &mut sink {
                Sink::Csv(w) => w
                    .write_record([
                        r.id.to_string(),
                        r.log.clone(),
                        r.seq.to_string(),
                        r.time.clone(),
                        r.kind.clone(),
                        r.peer.clone().unwrap_or_default(),
                        r.record.to_string(),
                    ])
                    .map_err(csv_failure)?,
                Sink::Json(out) => {
                    let line = serde_json::to_string(r)
                        .map_err(|e| Failure::Runtime(anyhow!("cannot write JSON: {e}")))?;
                    writeln!(out, "{line}").map_err(stdout_failure)?;
                }
            }
        }
        match page.next {
            Some(next) => filter.after = Some(next),
            None => break,
        }
    }
    match sink {
        Sink::Csv(mut w) => w.flush().map_err(stdout_failure),
        Sink::Json(mut out) => out.flush().map_err(stdout_failure),
    }
}

/// Where `export` writes.
enum Sink<W: std::io::Write> {
    Csv(Box<csv::Writer<W>>),
    Json(W),
}

/// `meshfed audit check-proof FILE --ca PEM…`.
fn check(file: &Path, cas: &[std::path::PathBuf]) -> Result<(), Failure> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {}", file.display()))
        .map_err(Failure::Config)?;
    let proof = MessageProof::from_json(&text)
        .map_err(|e| Failure::Input(anyhow!("{} is not a proof file: {e}", file.display())))?;
    let bundles = cas
        .iter()
        .map(|path| {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            TrustBundle::from_pem(&pem)
                .map_err(|e| anyhow!("{} is not a mesh CA certificate: {e}", path.display()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Config)?;
    match check_proof(&proof, &bundles) {
        Ok(found) => {
            let c = &found.checked;
            outln!("proof valid: envelope {} crossed", c.envelope)?;
            outln!("  from {} to {} on {}", c.source, c.destination, c.topic)?;
            let how = if c.in_batch { "in a batch" } else { "alone" };
            outln!("  signed {how} by {}", c.batch_signer)?;
            outln!(
                "  recorded by {} in a log of {} records (head of {}), countersigned by {}",
                c.head_signer,
                c.head_size,
                meshfed_node::clock::rfc3339(c.head_time),
                c.countersigned_by
            )?;
            for u in &found.unanchored {
                outln!(
                    "  note: no CA was given for the {u}; its signature was checked under the certificate the proof carries"
                )?;
            }
            Ok(())
        }
        Err(e) => {
            outln!("proof NOT valid: {e}")?;
            Err(Failure::CheckFailed)
        }
    }
}
