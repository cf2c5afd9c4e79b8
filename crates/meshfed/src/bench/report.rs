//! What `meshfed bench` prints: the table, the JSON report and the batch/message ratios.

use std::collections::BTreeMap;

use serde::Serialize;

use super::*;

/// The JSON report (`--json`): one run's phases at the top level, or with `--compare` one object
/// per signature mode and the ratios batch/message.
#[derive(Serialize)]
pub(super) struct ReportJson {
    payload_bytes: usize,
    qos: Qos,
    /// The frames of the publish and subscriber sockets: `binary` or `json`.
    format: &'static str,
    path: String,
    /// The broker the messages crossed (`--via-broker`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<&'static str>,
    /// The running gateways measured, if bench did not start its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    publisher: Option<SideJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriber: Option<SideJson>,
    /// The mode measured, or both modes compared.
    signatures: Signatures,
    /// The phases by name, or (compared) the phases by mode and the ratios.
    #[serde(flatten)]
    runs: BTreeMap<String, Section>,
}

/// A running gateway in the report.
#[derive(Serialize)]
struct SideJson {
    mesh: MeshId,
    api: SocketAddr,
}

/// `signatures`: `"batch"`, or `["batch", "message"]` when compared.
#[derive(Serialize)]
#[serde(untagged)]
enum Signatures {
    One(&'static str),
    Compared([&'static str; 2]),
}

/// A top-level entry after the header: one phase, one mode's phases, or the ratios.
#[derive(Serialize)]
#[serde(untagged)]
enum Section {
    Phase(PhaseJson),
    Phases(BTreeMap<&'static str, PhaseJson>),
    Ratios(BTreeMap<&'static str, RatiosJson>),
}

/// What one phase measured.
#[derive(Serialize)]
pub(super) struct PhaseJson {
    pub(super) rate: Rate,
    pub(super) sent: u64,
    pub(super) accepted: u64,
    pub(super) refused: u64,
    pub(super) delivered: u64,
    pub(super) duplicates: u64,
    pub(super) lost: u64,
    pub(super) stalled: bool,
    pub(super) first_refusal: Option<String>,
    pub(super) seconds: f64,
    pub(super) msg_per_s: f64,
    pub(super) mb_per_s: f64,
    pub(super) latency_ms: Latencies<f64>,
    /// What each measured process used during the phase.
    pub(super) processes: Vec<ProcessJson>,
}

/// What one process used during a phase; `null` where `/proc` could not be read.
#[derive(Serialize)]
pub(super) struct ProcessJson {
    /// Which process: a running gateway, or bench's own (both gateways and its client).
    pub(super) process: String,
    pub(super) pid: u32,
    /// The most memory resident at once (`VmHWM`).
    pub(super) peak_rss_bytes: Option<u64>,
    /// `"phase"`: the peak was reset when the phase started; `"process start"`: the kernel
    /// refused the reset, so it is the process's peak so far.
    pub(super) peak_rss_since: &'static str,
    /// CPU time (user and system, all threads) during the phase per message delivered.
    pub(super) cpu_us_per_msg: Option<f64>,
}

/// A phase's rate: `"max"` or messages per second.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Rate {
    Max(&'static str),
    PerSecond(u32),
}

/// Latency percentiles (or their ratios), in milliseconds.
#[derive(Serialize)]
pub(super) struct Latencies<T> {
    pub(super) p50: T,
    pub(super) p90: T,
    pub(super) p99: T,
    pub(super) max: T,
}

/// `batch / message` for the figures compared; `null` where the divisor is zero.
#[derive(Serialize)]
struct RatiosJson {
    msg_per_s: Option<f64>,
    mb_per_s: Option<f64>,
    latency_ms: Latencies<Option<f64>>,
}

/// The report of `runs` as `--json` prints it.
pub(super) fn report_json(plan: &Plan, measured: &Measured, runs: &[Run]) -> ReportJson {
    let side = |s: &Side| SideJson {
        mesh: s.mesh.clone(),
        api: s.api,
    };
    let (publisher, subscriber) = match measured {
        Measured::InProcess { .. } => (None, None),
        Measured::Running {
            publisher,
            subscriber,
        } => (Some(side(publisher)), Some(side(subscriber))),
    };
    let phases = |run: &Run| -> BTreeMap<&'static str, PhaseJson> {
        run.phases
            .iter()
            .map(|r| (r.name, r.to_json(plan.payload)))
            .collect()
    };
    let (signatures, runs) = match runs {
        [batch, message] => {
            let over = batch
                .phases
                .iter()
                .zip(&message.phases)
                .map(|(b, m)| {
                    let r = ratios(b.figures(plan.payload), m.figures(plan.payload));
                    (b.name, ratios_json(r))
                })
                .collect();
            let sections = BTreeMap::from([
                (
                    batch.mode.as_str().to_owned(),
                    Section::Phases(phases(batch)),
                ),
                (
                    message.mode.as_str().to_owned(),
                    Section::Phases(phases(message)),
                ),
                (
                    format!("{}_over_{}", batch.mode, message.mode),
                    Section::Ratios(over),
                ),
            ]);
            let modes = [batch.mode.as_str(), message.mode.as_str()];
            (Signatures::Compared(modes), sections)
        }
        runs => {
            let mode = runs.first().map_or(SignatureMode::default(), |r| r.mode);
            let sections = runs
                .iter()
                .flat_map(|run| &run.phases)
                .map(|r| (r.name.to_owned(), Section::Phase(r.to_json(plan.payload))))
                .collect();
            (Signatures::One(mode.as_str()), sections)
        }
    };
    ReportJson {
        payload_bytes: plan.payload,
        qos: plan.qos,
        format: plan.format.as_str(),
        path: measured.path(),
        via: match measured {
            Measured::InProcess { via } => *via,
            Measured::Running { .. } => None,
        },
        publisher,
        subscriber,
        signatures,
        runs,
    }
}

/// `batch / message` for each of [`Report::figures`]; `None` where the divisor is zero.
fn ratios(batch: [f64; 6], message: [f64; 6]) -> [Option<f64>; 6] {
    std::array::from_fn(|i| (message[i] > 0.0).then(|| batch[i] / message[i]))
}

fn ratios_json(r: [Option<f64>; 6]) -> RatiosJson {
    RatiosJson {
        msg_per_s: r[0],
        mb_per_s: r[1],
        latency_ms: Latencies {
            p50: r[2],
            p90: r[3],
            p99: r[4],
            max: r[5],
        },
    }
}

fn qos_label(qos: Qos) -> &'static str {
    match qos {
        Qos::AtMostOnce => "at most once",
        Qos::AtLeastOnce => "at least once",
        Qos::ExactlyOnce => "exactly once",
    }
}

pub(super) fn print_table(plan: &Plan, measured: &Measured, runs: &[Run]) -> Result<(), Failure> {
    let modes: Vec<&str> = runs.iter().map(|r| r.mode.as_str()).collect();
    let path = match measured {
        Measured::InProcess { via: None } => format!(
            "{PUBLISHER} publish API → {SUBSCRIBER} subscriber (one process, loopback, mutual TLS)"
        ),
        Measured::InProcess { via: Some(broker) } => format!(
            "{PUBLISHER} publish API → {broker} broker → {SUBSCRIBER} subscriber (one process, loopback, mutual TLS to the broker, end-to-end tunnel through it)"
        ),
        Measured::Running {
            publisher,
            subscriber,
        } => format!(
            "{} publish API at {} → {} subscriber at {} (running gateways, mutual TLS)",
            publisher.mesh, publisher.api, subscriber.mesh, subscriber.api
        ),
    };
    outln!(
        "meshfed bench — {} B payloads, qos {} ({}), signatures {}, {} frames, {path}",
        plan.payload,
        plan.qos.level(),
        qos_label(plan.qos),
        modes.join(" vs "),
        plan.format.as_str(),
    )?;
    outln!(
        "{:<11} {:<13} {:>7} {:>9} {:>9} {:>6} {:>5} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "phase",
        "signatures",
        "rate",
        "sent",
        "delivered",
        "lost",
        "dup",
        "msg/s",
        "MB/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms"
    )?;
    let Some(first) = runs.first() else {
        return Ok(());
    };
    for i in 0..first.phases.len() {
        for run in runs {
            let Some(r) = run.phases.get(i) else { continue };
            print_row(plan, run.mode, r)?;
        }
        if let [batch, message] = runs
            && let (Some(b), Some(m)) = (batch.phases.get(i), message.phases.get(i))
        {
            let r = ratios(b.figures(plan.payload), m.figures(plan.payload))
                .map(|r| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")));
            outln!(
                "{:<11} {:<13} {:>7} {:>9} {:>9} {:>6} {:>5} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8}",
                first.phases[i].name,
                format!("{}/{}", batch.mode, message.mode),
                "",
                "",
                "",
                "",
                "",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
            )?;
        }
    }
    print_usage(runs)?;
    let (p, s) = (measured.publisher(), measured.subscriber());
    outln!(
        "latency: scheduled send on {p}'s publish socket to receipt on {s}'s stream; throughput: first send to last delivery"
    )?;
    outln!(
        "lost: accepted by {p} but never received on {s}'s live stream (the gateway logs what it dropped for a stream that fell behind)"
    )?;
    if plan.qos == Qos::AtMostOnce {
        outln!(
            "qos 0: a publisher faster than the link fills {p}'s queue for {s}; what it sheds then is lost here (`shed` in `meshfed federation show`)"
        )?;
    }
    if plan.qos != Qos::AtMostOnce {
        outln!(
            "qos {}: each publish is answered once {p} has persisted the message; dup: deliveries of a message already delivered (counted once)",
            plan.qos.level()
        )?;
    }
    if let [batch, message] = runs {
        outln!(
            "{b}/{m}: above 1 in msg/s and MB/s, {b} signatures carry more; below 1 in the latency columns, {b} is faster",
            b = batch.mode,
            m = message.mode,
        )?;
    }
    Ok(())
}

/// The memory and CPU of the processes measured, per phase.
fn print_usage(runs: &[Run]) -> Result<(), Failure> {
    outln!(
        "{:<11} {:<13} {:>13} {:>11}  process (from /proc)",
        "phase",
        "signatures",
        "peak RSS",
        "CPU µs/msg"
    )?;
    for run in runs {
        for r in &run.phases {
            for u in &r.usage {
                let peak = u.peak_rss_bytes.map_or_else(
                    || "n/a".to_owned(),
                    |b| {
                        let since = if u.peak_of_phase { "" } else { "*" };
                        format!("{:.1} MiB{since}", b as f64 / f64::from(1u32 << 20))
                    },
                );
                let cpu = u
                    .cpu_us_per_msg(r.delivered)
                    .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.1}"));
                outln!(
                    "{:<11} {:<13} {:>13} {:>11}  {}",
                    r.name,
                    run.mode.as_str(),
                    peak,
                    cpu,
                    u.process.label
                )?;
            }
        }
    }
    if runs
        .iter()
        .flat_map(|run| &run.phases)
        .flat_map(|r| &r.usage)
        .any(|u| u.peak_rss_bytes.is_some() && !u.peak_of_phase)
    {
        outln!("*: the process's peak since it started (the kernel refused to reset it)")?;
    }
    Ok(())
}

fn print_row(plan: &Plan, mode: SignatureMode, r: &Report) -> Result<(), Failure> {
    outln!(
        "{:<11} {:<13} {:>7} {:>9} {:>9} {:>6} {:>5} {:>9.0} {:>7.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        r.name,
        mode.as_str(),
        r.rate_label(),
        r.sent,
        r.delivered,
        r.accepted.saturating_sub(r.delivered),
        r.duplicates,
        r.msg_per_s(),
        r.mb_per_s(plan.payload),
        r.percentile_ms(0.50),
        r.percentile_ms(0.90),
        r.percentile_ms(0.99),
        r.percentile_ms(1.0),
    )?;
    if let Some(refusal) = &r.first_refusal {
        outln!("  {} refused; the first: {refusal}", r.refused)?;
    }
    Ok(())
}
