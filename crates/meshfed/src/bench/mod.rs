//! `meshfed bench`: what a user's program sees from one mesh's local publish API to another
//! mesh's local subscriber.
//!
//! By default two meshes (`plant-a`, `supplier-b`) start in this process on loopback, each with
//! its own CA, in a temporary directory, and federate by invitation through their APIs — the
//! code paths of a real deployment. With `--publisher DIR --subscriber DIR` bench starts
//! nothing: it measures two gateways already running, found through their node directories,
//! once it has checked that the publisher has an active federation with the subscriber's mesh
//! (or, without one, a valid delegation to a partner that relays to it: a trusted intermediary).
//! A publisher WebSocket (`/v1/messages/publish`) on the one and a subscriber WebSocket
//! (`/v1/messages/stream`) on the other then carry two phases:
//!
//! - **throughput**: messages as fast as the publish socket takes them (TCP back-pressure
//!   paces the publisher);
//! - **latency**: messages at a fixed rate, each stamped with its *scheduled* send time, so a
//!   publisher that falls behind shows up as latency instead of hiding it.
//!
//! Every payload starts with 32 hex digits: the phase, the sequence number and the send time
//! in nanoseconds since a shared [`Instant`] (both sockets are in this process, so one
//! monotonic clock serves both ends, wherever the gateways run). Latency is the subscriber's
//! receive time minus that stamp. Each phase stops by itself: after its count or duration, once
//! every reply and delivery is in, or when nothing has moved for [`STALL`].
//!
//! Each phase also reads, from `/proc`, the peak resident memory and the CPU time per message
//! delivered of the processes it measures ([`usage`]): each running gateway (its pid is in
//! `GET /v1/node`; they must run on this host), or bench's own process when the gateways run in
//! it (then the figures are both gateways' and bench's client's together).
//!
//! Every message carries the `--qos` asked for. At QoS 1 and 2 the publisher's gateway answers
//! a publish once it has persisted the message, so that write is part of the measured path; the
//! subscriber stays a live stream, and a message delivered twice counts once (and as a
//! duplicate). `--signatures` sets `[delivery] signatures` on both gateways bench starts;
//! `--compare` runs everything once per signature mode, each on a fresh pair of meshes, and
//! prints the ratio. Running gateways sign as they are configured; the report names the mode
//! the publishing gateway reports in `GET /v1/node` (the publisher is the side that signs).
//!
//! Both sockets speak the `--format` asked for: binary frames (the default: raw payloads, no
//! JSON or base64 per message on either side) or JSON text frames; the report names it.
//!
//! With `--via-broker` bench also starts a broker mesh (`bench-hub`) in this process. Each
//! gateway federates with it (the broker invites, the gateway joins), and then the two
//! gateways federate with each other through it (`JoinRequest::via`): every message crosses
//! the broker inside the end-to-end tunnel it relays. The report names the broker in its path
//! (and in `via` of the JSON); the usage figures of this process then include the broker's.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use futures_util::{SinkExt as _, StreamExt as _};
use meshfed_node::api::binary::{self, Delivered, Publish};
use meshfed_node::api::models::{
    DelegationList, ErrorBody, FederationList, FederationStatus, FederationView, Format, NodeInfo,
    PublishReply, SendRequest,
};
use meshfed_node::config::{NodeConfig, Role, SignatureMode};
use meshfed_proto::envelope::{ContentType, Qos};
use meshfed_proto::{MeshId, Topic};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{BenchArgs, OutputFormat};
use crate::client::{ApiClient, WebSocket};
use crate::demo::{start_mesh_with, start_node};
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::output::{Layout, outln, print};

mod buses;
mod report;
#[cfg(test)]
mod tests;
mod usage;

use report::{print_table, report_json};

const PUBLISHER: &str = "plant-a";
const SUBSCRIBER: &str = "supplier-b";
/// The broker mesh of `--via-broker`.
const BROKER: &str = "bench-hub";
const TOPIC: &str = "bench/load";
/// The stamp at the start of every payload: phase (2), sequence (14), send time in ns (16).
const STAMP_LEN: usize = 32;
/// A phase that has made no progress for this long ends; what did not arrive counts as lost.
const STALL: Duration = Duration::from_secs(5);
/// How long each phase sends when neither `--count` nor `--duration` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// How late a timer may wake before the publisher counts as behind schedule: tokio's timer
/// wheel has millisecond ticks.
const TIMER_SLACK_NS: u64 = 2_000_000;
/// Frames the publisher writes at once when it sends as fast as it can.
const MAX_PACE_BURST: u64 = 32;
/// Phase tag of the messages that check the path is open before a phase starts.
const WARM_UP: u8 = 0xff;

/// When a phase stops sending.
#[derive(Debug, Clone, Copy)]
enum Stop {
    After(u64),
    Elapsed(Duration),
}

/// How fast a phase sends.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// As fast as the publish socket accepts.
    Max,
    /// This many messages per second, on a fixed schedule.
    PerSecond(u32),
}

/// What the command measures, parsed from its arguments.
struct Plan {
    payload: usize,
    stop: Stop,
    rate: u32,
    qos: Qos,
    /// The signature modes to start gateways with, in order: the one asked for, or both with
    /// `--compare`. Empty for running gateways: the publisher reports its own.
    modes: Vec<SignatureMode>,
    /// `[delivery] sign_window` for the gateways bench starts, if asked.
    sign_window: Option<Duration>,
    /// The audit level the meshes bench starts put in their policy, if asked.
    audit: Option<String>,
    /// The frames both sockets carry.
    format: Format,
    output: OutputFormat,
    /// The running gateways to measure; `None` starts two meshes in this process.
    running: Option<Running>,
    /// Whether the meshes started in this process federate through a broker started with them
    /// (`--via-broker`; clap keeps it away from running gateways).
    via_broker: bool,
}

/// Two running gateways (`--publisher`, `--subscriber`).
struct Running {
    /// Node directories.
    publisher: PathBuf,
    subscriber: PathBuf,
}

impl Plan {
    fn from_args(args: BenchArgs, output: OutputFormat) -> Result<Self, Failure> {
        let usage = |m: String| Failure::Config(anyhow!(m));
        let payload = usize::try_from(args.payload.0)
            .ok()
            .filter(|&n| n >= STAMP_LEN)
            .ok_or_else(|| {
                usage(format!(
                    "--payload {}: at least {STAMP_LEN} B are needed to carry the sequence number and send time",
                    args.payload
                ))
            })?;
        let stop = match (args.count, args.duration) {
            (Some(n), _) => Stop::After(n),
            (None, Some(d)) if d.is_zero() => {
                return Err(usage("--duration must be longer than 0s".to_owned()));
            }
            (None, d) => Stop::Elapsed(d.unwrap_or(DEFAULT_DURATION)),
        };
        // clap makes --publisher and --subscriber come together and keeps --signatures and
        // --compare away from them.
        let running = match (args.publisher, args.subscriber) {
            (Some(publisher), Some(subscriber)) => Some(Running {
                publisher,
                subscriber,
            }),
            _ => None,
        };
        if let Some(w) = args.sign_window
            && w > meshfed_node::config::MAX_SIGN_WINDOW
        {
            return Err(usage(format!(
                "--sign-window {}: must be at most {}",
                humantime::format_duration(w),
                humantime::format_duration(meshfed_node::config::MAX_SIGN_WINDOW)
            )));
        }
        let modes = match &running {
            // The publishing gateway says how it signs once bench reaches it.
            Some(_) => Vec::new(),
            None if args.compare => vec![SignatureMode::Batch, SignatureMode::Message],
            None => vec![args.signatures],
        };
        Ok(Self {
            payload,
            stop,
            rate: args.rate,
            qos: args.qos,
            modes,
            sign_window: args.sign_window,
            audit: args.audit,
            format: args.format,
            output,
            running,
            via_broker: args.via_broker,
        })
    }

    fn comparing(&self) -> bool {
        self.modes.len() > 1
    }
}

/// Both phases measured with one signature mode.
struct Run {
    mode: SignatureMode,
    phases: Vec<Report>,
}

/// The gateways a report is about.
enum Measured {
    /// Meshes started in this process, a fresh pair per signature mode; `via` names the broker
    /// started with them, which the messages cross.
    InProcess { via: Option<&'static str> },
    /// Two gateways that were already running.
    Running { publisher: Side, subscriber: Side },
}

/// A running gateway as the report names it.
struct Side {
    mesh: MeshId,
    api: SocketAddr,
}

impl Measured {
    fn publisher(&self) -> &str {
        match self {
            Self::InProcess { .. } => PUBLISHER,
            Self::Running { publisher, .. } => publisher.mesh.as_str(),
        }
    }

    fn subscriber(&self) -> &str {
        match self {
            Self::InProcess { .. } => SUBSCRIBER,
            Self::Running { subscriber, .. } => subscriber.mesh.as_str(),
        }
    }

    /// The measured path, for the report's header.
    fn path(&self) -> String {
        match self {
            Self::InProcess { via: None } => format!(
                "{PUBLISHER} publish API -> {SUBSCRIBER} subscriber stream, one process, loopback"
            ),
            Self::InProcess { via: Some(broker) } => format!(
                "{PUBLISHER} publish API -> {broker} broker -> {SUBSCRIBER} subscriber stream, one process, loopback"
            ),
            Self::Running {
                publisher,
                subscriber,
            } => format!(
                "{} publish API at {} -> {} subscriber stream at {}, running gateways",
                publisher.mesh, publisher.api, subscriber.mesh, subscriber.api
            ),
        }
    }
}

/// One end of the measured path: a gateway's API and the mesh it serves.
struct Endpoint {
    mesh: MeshId,
    /// How the gateway signs what it sends, as it says itself.
    signatures: SignatureMode,
    /// The gateway's process id, as it says itself.
    pid: u32,
    api: ApiClient,
}

impl Endpoint {
    /// Reads the mesh, signature mode and process id of the gateway `api` reaches
    /// (`GET /v1/node`).
    async fn connect(api: ApiClient) -> Result<Self, Failure> {
        let node: NodeInfo = api.get("/v1/node").await?;
        Ok(Self {
            mesh: node.mesh,
            signatures: node.delivery.signatures,
            pid: node.pid,
            api,
        })
    }

    /// The gateway's process, as the report names it.
    fn process(&self, role: &str) -> usage::Process {
        usage::Process {
            pid: self.pid,
            label: format!("{} gateway ({role}, pid {})", self.mesh, self.pid),
        }
    }

    fn side(&self) -> Side {
        Side {
            mesh: self.mesh.clone(),
            api: self.api.addr(),
        }
    }
}

/// The two gateways of a run: messages are published on the one and received on the other.
struct Ends {
    publisher: Endpoint,
    subscriber: Endpoint,
}

pub(crate) fn run(args: BenchArgs, output: OutputFormat) -> Result<(), Failure> {
    if args.buses {
        return buses::run(&args, output);
    }
    let plan = Plan::from_args(args, output)?;
    let (runs, measured) = runtime()?.block_on(async {
        let origin = Instant::now();
        match &plan.running {
            Some(target) => {
                let (run, measured) = run_running(target, &plan, origin).await?;
                Ok::<_, Failure>((vec![run], measured))
            }
            None => {
                let runs = run_in_process(&plan, origin).await?;
                let via = plan.via_broker.then_some(BROKER);
                Ok((runs, Measured::InProcess { via }))
            }
        }
    })?;
    let report = report_json(&plan, &measured, &runs);
    print(plan.output, &report, Layout::Line, |_| {
        print_table(&plan, &measured, &runs)
    })
}

/// Starts a pair of meshes per signature mode, in a temporary directory, and measures each.
async fn run_in_process(plan: &Plan, origin: Instant) -> Result<Vec<Run>, Failure> {
    let root = tempfile::Builder::new()
        .prefix("meshfed-bench-")
        .tempdir()
        .map_err(|e| Failure::Runtime(anyhow!("bench: temporary directory: {e}")))?;
    let mut runs = Vec::new();
    for &mode in &plan.modes {
        let dir = root.path().join(mode.as_str());
        runs.push(run_mode(&dir, plan, origin, mode).await?);
    }
    Ok(runs)
}

/// Measures the running gateways of `target` once their federation is checked.
async fn run_running(
    target: &Running,
    plan: &Plan,
    origin: Instant,
) -> Result<(Run, Measured), Failure> {
    let ends = Ends {
        publisher: Endpoint::connect(ApiClient::for_dir(&target.publisher)?).await?,
        subscriber: Endpoint::connect(ApiClient::for_dir(&target.subscriber)?).await?,
    };
    if ends.publisher.mesh == ends.subscriber.mesh {
        return Err(Failure::Config(anyhow!(
            "--publisher {} and --subscriber {} are both gateways of mesh {}: bench measures between two federated meshes",
            target.publisher.display(),
            target.subscriber.display(),
            ends.publisher.mesh
        )));
    }
    check_federation(&ends, target).await?;
    let signatures = ends.publisher.signatures;
    let processes = [
        ends.publisher.process("publisher"),
        ends.subscriber.process("subscriber"),
    ];
    let run = run_phases(&ends, plan, origin, signatures, &processes).await?;
    let measured = Measured::Running {
        publisher: ends.publisher.side(),
        subscriber: ends.subscriber.side(),
    };
    Ok((run, measured))
}

/// Fails unless the publisher has an active federation with the subscriber's mesh, saying what
/// is missing and how to set it up.
async fn check_federation(ends: &Ends, target: &Running) -> Result<(), Failure> {
    let (p, s) = (&ends.publisher.mesh, &ends.subscriber.mesh);
    let list: FederationList = ends.publisher.api.get("/v1/federations").await?;
    let with_subscriber: Vec<&FederationView> =
        list.federations.iter().filter(|f| f.peer == *s).collect();
    if with_subscriber
        .iter()
        .any(|f| f.status == FederationStatus::Active)
    {
        return Ok(());
    }
    // Without a federation of its own, the publisher reaches the subscriber's mesh through a
    // partner it delegated the relaying to (a trusted intermediary): measured as it is.
    if with_subscriber.is_empty() {
        let delegations: DelegationList = ends.publisher.api.get("/v1/delegations").await?;
        if delegations.delegations.iter().any(|d| {
            d.direction == "issued"
                && d.state == "valid"
                && d.audience.as_ref().is_some_and(|a| a.contains(s))
        }) {
            return Ok(());
        }
    }
    let (pub_dir, sub_dir) = (target.publisher.display(), target.subscriber.display());
    let federate = format!(
        "federate them: `meshfed --dir {sub_dir} federation invite --peer {p}` prints a token, then `meshfed --dir {pub_dir} federation join TOKEN`"
    );
    let Some(f) = with_subscriber.first() else {
        return Err(Failure::Runtime(anyhow!(
            "bench: mesh {p} (--publisher {pub_dir}) has no federation with mesh {s} (--subscriber {sub_dir}); {federate}"
        )));
    };
    let (id, status) = (&f.id, f.status);
    let fix = match status {
        FederationStatus::Suspended => {
            format!("resume it: `meshfed --dir {pub_dir} federation resume {id}`")
        }
        ended if ended.is_terminated() => federate,
        _ => format!(
            "its link is not up: is the gateway of {s} running and reachable from {p}'s? `meshfed --dir {pub_dir} federation show {id}` shows the link"
        ),
    };
    Err(Failure::Runtime(anyhow!(
        "bench: mesh {p} (--publisher {pub_dir}) has no active federation with mesh {s} (--subscriber {sub_dir}): federation {id} is {status}; {fix}"
    )))
}

/// Starts two meshes in `root` signing with `mode` (and with `--via-broker` a broker),
/// federates them and runs both phases.
async fn run_mode(
    root: &Path,
    plan: &Plan,
    origin: Instant,
    mode: SignatureMode,
) -> Result<Run, Failure> {
    let tweak = |config: &mut NodeConfig| {
        config.delivery.signatures = mode;
        if let Some(window) = plan.sign_window {
            config.delivery.sign_window = window;
        }
    };
    // Whatever was started is stopped, however far the run got.
    let mut started = Vec::new();
    let measured = async {
        let (gw_a, a) = start_mesh_with(root, PUBLISHER, tweak).await?;
        started.push(gw_a);
        let (gw_b, b) = start_mesh_with(root, SUBSCRIBER, tweak).await?;
        started.push(gw_b);
        let ends = Ends {
            publisher: Endpoint::connect(a).await?,
            subscriber: Endpoint::connect(b).await?,
        };
        if let Some(level) = &plan.audit {
            // In force before the handshake, so the agreement carries it.
            let toml = format!("[compliance]\naudit_level = \"{level}\"\n");
            for end in [&ends.publisher, &ends.subscriber] {
                let _: meshfed_node::api::models::PolicyUpdated = end
                    .api
                    .put(
                        "/v1/policy",
                        &meshfed_node::api::models::PolicyUpdate { toml: toml.clone() },
                    )
                    .await?;
            }
        }
        let label = if plan.via_broker {
            let (hub, broker) = start_node(root, BROKER, Role::Broker, |_| {}).await?;
            started.push(hub);
            federate_via_broker(&ends, &broker).await?;
            "both gateways, the broker and bench's client"
        } else {
            federate(&ends, None).await?;
            "both gateways and bench's client"
        };
        // All the meshes run in this process, with bench's client: their use is measured
        // together.
        let this = usage::Process {
            pid: std::process::id(),
            label: format!("this process, pid {}: {label}", std::process::id()),
        };
        run_phases(&ends, plan, origin, mode, &[this]).await
    }
    .await;
    for gateway in started {
        gateway.shutdown().await;
    }
    measured
}

/// Runs the throughput and then the latency phase between `ends`, measuring what `processes`
/// use in each.
async fn run_phases(
    ends: &Ends,
    plan: &Plan,
    origin: Instant,
    mode: SignatureMode,
    processes: &[usage::Process],
) -> Result<Run, Failure> {
    let phases = [
        ("throughput", Pace::Max),
        ("latency", Pace::PerSecond(plan.rate)),
    ];
    let mut reports = Vec::new();
    for (tag, (name, pace)) in (1u8..).zip(phases) {
        let label = if plan.comparing() {
            format!("{name} ({mode})")
        } else {
            name.to_owned()
        };
        let phase = Phase {
            tag,
            name,
            label,
            pace,
        };
        reports.push(run_phase(ends, plan, origin, phase, processes).await?);
    }
    Ok(Run {
        mode,
        phases: reports,
    })
}

/// The subscriber invites the publisher, which joins (through broker `via`, if given): the
/// federation the messages travel.
async fn federate(ends: &Ends, via: Option<MeshId>) -> Result<(), Failure> {
    invite_and_join(&ends.subscriber.api, &ends.publisher, via).await
}

/// Each gateway federates with the broker `broker` reaches (the broker invites, the gateway
/// joins), then the two gateways federate with each other through it.
async fn federate_via_broker(ends: &Ends, broker: &ApiClient) -> Result<(), Failure> {
    let hub: NodeInfo = broker.get("/v1/node").await?;
    for gateway in [&ends.publisher, &ends.subscriber] {
        invite_and_join(broker, gateway, None).await?;
    }
    federate(ends, Some(hub.mesh)).await
}

/// `inviter` invites `joiner`'s mesh, and `joiner` joins with the token, through broker `via`
/// if given.
async fn invite_and_join(
    inviter: &ApiClient,
    joiner: &Endpoint,
    via: Option<MeshId>,
) -> Result<(), Failure> {
    crate::demo::invite_and_join(inviter, (&joiner.api, joiner.mesh.clone()), via).await?;
    Ok(())
}

/// Counters one phase's tasks share with the progress loop.
#[derive(Default)]
struct Shared {
    sent: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    delivered: AtomicU64,
    /// Nanoseconds since the origin of the first send and of the last delivery.
    first_sent_ns: AtomicU64,
    last_delivered_ns: AtomicU64,
    warm: AtomicU64,
    /// Deliveries of a sequence number already delivered (QoS 1 redelivery).
    duplicates: AtomicU64,
    first_refusal: Mutex<Option<String>>,
    deliveries: Mutex<Deliveries>,
}

/// The phase's deliveries so far.
#[derive(Default)]
struct Deliveries {
    seen: HashSet<u64>,
    latencies_ns: Vec<u64>,
}

/// One phase of a run: its payload tag, its name in reports, its label on the progress line.
struct Phase {
    tag: u8,
    name: &'static str,
    label: String,
    pace: Pace,
}

/// What one phase measured.
struct Report {
    name: &'static str,
    pace: Pace,
    sent: u64,
    accepted: u64,
    refused: u64,
    delivered: u64,
    duplicates: u64,
    stalled: bool,
    first_refusal: Option<String>,
    /// First send to last delivery.
    elapsed: Duration,
    /// Sorted.
    latencies_ns: Vec<u64>,
    /// What each measured process used.
    usage: Vec<usage::Usage>,
}

impl Report {
    fn msg_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.delivered as f64 / secs
        } else {
            0.0
        }
    }

    fn mb_per_s(&self, payload: usize) -> f64 {
        self.msg_per_s() * payload as f64 / 1e6
    }

    /// Nearest-rank percentile, in milliseconds.
    fn percentile_ms(&self, q: f64) -> f64 {
        percentile_ms(&self.latencies_ns, q)
    }

    /// The figures compared between signature modes, in table order: msg/s, MB/s, then the
    /// p50, p90, p99 and max latency in milliseconds.
    fn figures(&self, payload: usize) -> [f64; 6] {
        [
            self.msg_per_s(),
            self.mb_per_s(payload),
            self.percentile_ms(0.50),
            self.percentile_ms(0.90),
            self.percentile_ms(0.99),
            self.percentile_ms(1.0),
        ]
    }

    fn rate_label(&self) -> String {
        match self.pace {
            Pace::Max => "max".to_owned(),
            Pace::PerSecond(r) => format!("{r}/s"),
        }
    }

    fn to_json(&self, payload: usize) -> report::PhaseJson {
        report::PhaseJson {
            rate: match self.pace {
                Pace::Max => report::Rate::Max("max"),
                Pace::PerSecond(r) => report::Rate::PerSecond(r),
            },
            sent: self.sent,
            accepted: self.accepted,
            refused: self.refused,
            delivered: self.delivered,
            duplicates: self.duplicates,
            lost: self.accepted.saturating_sub(self.delivered),
            stalled: self.stalled,
            first_refusal: self.first_refusal.clone(),
            seconds: self.elapsed.as_secs_f64(),
            msg_per_s: self.msg_per_s(),
            mb_per_s: self.mb_per_s(payload),
            latency_ms: report::Latencies {
                p50: self.percentile_ms(0.50),
                p90: self.percentile_ms(0.90),
                p99: self.percentile_ms(0.99),
                max: self.percentile_ms(1.0),
            },
            processes: self
                .usage
                .iter()
                .map(|u| report::ProcessJson {
                    process: u.process.label.clone(),
                    pid: u.process.pid,
                    peak_rss_bytes: u.peak_rss_bytes,
                    peak_rss_since: if u.peak_of_phase {
                        "phase"
                    } else {
                        "process start"
                    },
                    cpu_us_per_msg: u.cpu_us_per_msg(self.delivered),
                })
                .collect(),
        }
    }
}

/// Nearest-rank percentile `q` of `sorted` (nanoseconds), in milliseconds; 0 when empty.
fn percentile_ms(sorted: &[u64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1] as f64 / 1e6
}

fn since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The payload of message `seq` of phase `tag`, stamped `at` ns after the origin.
fn payload(size: usize, tag: u8, seq: u64, at: u64) -> String {
    let mut p = format!("{tag:02x}{:014x}{at:016x}", seq & 0x00ff_ffff_ffff_ffff);
    p.extend(std::iter::repeat_n('.', size.saturating_sub(STAMP_LEN)));
    p
}

/// The part of a delivered envelope the bench reads.
#[derive(serde::Deserialize)]
struct Received<'a> {
    #[serde(borrow)]
    message: Cow<'a, str>,
}

/// The phase tag, sequence number and send time in a delivered envelope's payload.
fn stamp(payload: &[u8]) -> Option<(u8, u64, u64)> {
    let text = std::str::from_utf8(payload.get(..STAMP_LEN)?).ok()?;
    let tag = u8::from_str_radix(text.get(0..2)?, 16).ok()?;
    let seq = u64::from_str_radix(text.get(2..16)?, 16).ok()?;
    let at = u64::from_str_radix(text.get(16..32)?, 16).ok()?;
    Some((tag, seq, at))
}

/// What every message of a run is but its payload, in the format of the publish socket.
#[derive(Clone)]
enum Template {
    Json(SendRequest),
    Binary(Publish),
}

/// What every message of a run is but its payload: text on [`TOPIC`] to `to` with `qos`.
fn template(to: &MeshId, qos: Qos, format: Format) -> Result<Template, Failure> {
    let invalid = |e: String| Failure::Runtime(anyhow!("bench: {e}"));
    let topic: Topic = TOPIC.parse().map_err(|e| invalid(format!("{e}")))?;
    let text: ContentType = "text/plain".parse().map_err(|e| invalid(format!("{e}")))?;
    Ok(match format {
        Format::Json => Template::Json(SendRequest {
            content_type: Some(text),
            qos,
            ..SendRequest::new(to.clone(), topic, Value::Null)
        }),
        Format::Binary => Template::Binary(Publish {
            content_type: text,
            qos,
            ..Publish::new(to.clone(), topic, Vec::new())
        }),
    })
}

/// The publish frame of `template` with `payload`.
fn message(template: &Template, payload: String) -> Message {
    match template {
        Template::Json(t) => crate::messages::text_frame(&SendRequest {
            payload: Value::String(payload),
            ..t.clone()
        }),
        Template::Binary(t) => Message::Binary(
            Publish {
                payload: payload.into_bytes(),
                ..t.clone()
            }
            .encode()
            .into(),
        ),
    }
}

/// A publish reply in either format; `None` for a frame that is no reply (ping, pong, close).
fn reply_of(frame: &Message) -> Option<Result<PublishReply, String>> {
    match frame {
        Message::Text(t) => Some(serde_json::from_str(t).map_err(|e| e.to_string())),
        Message::Binary(b) => Some(binary::decode_reply(b).map_err(|e| e.to_string())),
        _ => None,
    }
}

/// The payload of a delivered envelope in either format. Of a JSON frame only `message` is
/// read, and of a binary frame everything: the client's parsing shares the CPU with both
/// gateways, and a real client reads the envelope it is given.
fn delivered_payload(frame: &Message) -> Option<Cow<'_, [u8]>> {
    match frame {
        Message::Text(t) => match serde_json::from_str::<Received<'_>>(t).ok()?.message {
            Cow::Borrowed(s) => Some(Cow::Borrowed(s.as_bytes())),
            Cow::Owned(s) => Some(Cow::Owned(s.into_bytes())),
        },
        Message::Binary(b) => Delivered::decode(b).ok()?.envelope.message.map(Cow::Owned),
        _ => None,
    }
}

fn ws_failure(what: &str) -> impl Fn(tokio_tungstenite::tungstenite::Error) -> Failure + '_ {
    move |e| Failure::Runtime(anyhow!("bench: {what}: {e}"))
}

async fn run_phase(
    ends: &Ends,
    plan: &Plan,
    origin: Instant,
    phase: Phase,
    processes: &[usage::Process],
) -> Result<Report, Failure> {
    let Phase {
        tag,
        name,
        label,
        pace,
    } = phase;
    let shared = Arc::new(Shared::default());
    let subscriber = ends
        .subscriber
        .api
        .websocket(&format!(
            "/v1/messages/stream?from={}&topic={TOPIC}&format={}",
            ends.publisher.mesh,
            plan.format.as_str()
        ))
        .await
        .map_err(ws_failure("subscribing"))?;
    let publisher = ends
        .publisher
        .api
        .websocket(&format!(
            "/v1/messages/publish?format={}",
            plan.format.as_str()
        ))
        .await
        .map_err(ws_failure("opening the publish stream"))?;
    let (mut sink, mut replies) = publisher.split();
    let template = template(&ends.subscriber.mesh, plan.qos, plan.format)?;
    let subscribe_task = tokio::spawn(subscribe(subscriber, shared.clone(), origin, tag));
    warm_up(&mut sink, &mut replies, &shared, plan, ends, &template).await?;

    let started: Vec<usage::Start> = processes
        .iter()
        .cloned()
        .map(usage::Process::start)
        .collect();
    let reply_task = tokio::spawn(read_replies(replies, shared.clone()));
    let publish_task = tokio::spawn(publish(
        sink,
        shared.clone(),
        origin,
        Sending {
            template,
            tag,
            size: plan.payload,
            stop: plan.stop,
            pace,
        },
    ));
    let stalled = watch_progress(&shared, &label, plan.stop, &publish_task).await;
    let usage = started.into_iter().map(usage::Start::end).collect();
    publish_task.abort();
    reply_task.abort();
    subscribe_task.abort();

    let first = shared.first_sent_ns.load(Ordering::Relaxed);
    let last = shared.last_delivered_ns.load(Ordering::Relaxed);
    let mut latencies_ns = std::mem::take(&mut lock(&shared.deliveries).latencies_ns);
    latencies_ns.sort_unstable();
    let report = Report {
        name,
        pace,
        sent: shared.sent.load(Ordering::Relaxed),
        accepted: shared.accepted.load(Ordering::Relaxed),
        refused: shared.refused.load(Ordering::Relaxed),
        delivered: shared.delivered.load(Ordering::Relaxed),
        duplicates: shared.duplicates.load(Ordering::Relaxed),
        stalled,
        first_refusal: lock(&shared.first_refusal).take(),
        elapsed: Duration::from_nanos(last.saturating_sub(first)),
        latencies_ns,
        usage,
    };
    if report.accepted == 0 {
        return Err(Failure::Runtime(anyhow!(
            "bench: the {label} phase: the gateway accepted none of {} messages{}",
            report.sent,
            report
                .first_refusal
                .as_deref()
                .map(|r| format!("; the first was refused: {r}"))
                .unwrap_or_default()
        )));
    }
    Ok(report)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends warm-up messages until one reaches the subscriber: the stream is registered and the
/// link carries messages before anything is timed.
async fn warm_up(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    replies: &mut futures_util::stream::SplitStream<WebSocket>,
    shared: &Shared,
    plan: &Plan,
    ends: &Ends,
    template: &Template,
) -> Result<(), Failure> {
    let deadline = Instant::now() + STALL;
    for seq in 0.. {
        sink.send(message(template, payload(plan.payload, WARM_UP, seq, 0)))
            .await
            .map_err(ws_failure("publishing"))?;
        let reply = loop {
            match replies.next().await {
                Some(Ok(frame)) => {
                    if let Some(reply) = reply_of(&frame) {
                        break reply;
                    }
                }
                Some(Err(e)) => return Err(ws_failure("publishing")(e)),
                None => {
                    return Err(Failure::Runtime(anyhow!(
                        "bench: the gateway closed the publish stream"
                    )));
                }
            }
        };
        let refusal = match reply {
            Ok(PublishReply::Accepted(_) | PublishReply::Acknowledged(_)) => None,
            Ok(PublishReply::Refused(ErrorBody { error })) => Some((error.message, error.code)),
            Err(e) => Some((
                format!("an answer bench does not read ({e})"),
                "unknown".to_owned(),
            )),
        };
        if let Some((message, code)) = refusal {
            let hint = if code == "topic_not_agreed" {
                format!(
                    "; bench publishes on {TOPIC}, which the federation's agreement must let flow from {} to {}",
                    ends.publisher.mesh, ends.subscriber.mesh
                )
            } else {
                String::new()
            };
            return Err(Failure::Runtime(anyhow!(
                "bench: the gateway of {} at {} refused a message to {} on topic {TOPIC}: {message} ({code}){hint}",
                ends.publisher.mesh,
                ends.publisher.api.addr(),
                ends.subscriber.mesh,
            )));
        }
        let waited = Instant::now() + Duration::from_millis(200);
        while Instant::now() < waited {
            if shared.warm.load(Ordering::Relaxed) > 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if Instant::now() > deadline {
            break;
        }
    }
    Err(Failure::Runtime(anyhow!(
        "bench: no message reached {}'s subscriber within {}",
        ends.subscriber.mesh,
        humantime::format_duration(STALL)
    )))
}

/// What the publisher of one phase sends.
struct Sending {
    /// Every message but its payload.
    template: Template,
    tag: u8,
    size: usize,
    stop: Stop,
    pace: Pace,
}

/// Writes the phase's messages; returns when it has sent them all or its time is up.
async fn publish(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    shared: Arc<Shared>,
    origin: Instant,
    sending: Sending,
) {
    let Sending {
        template,
        tag,
        size,
        stop,
        pace,
    } = sending;
    let start = Instant::now();
    let start_ns = since(origin);
    shared.first_sent_ns.store(start_ns, Ordering::Relaxed);
    for seq in 0u64.. {
        let done = match stop {
            Stop::After(n) => seq >= n,
            Stop::Elapsed(d) => start.elapsed() >= d,
        };
        if done {
            break;
        }
        let at = match pace {
            Pace::Max => since(origin),
            Pace::PerSecond(rate) => {
                // Scheduled time, not the time the write happened: falling behind is latency.
                // Except the timer's own lateness: tokio's timers tick in milliseconds, so a
                // wake-up up to TIMER_SLACK late is the clock, not a publisher behind schedule.
                let offset = Duration::from_secs_f64(seq as f64 / f64::from(rate));
                tokio::time::sleep_until((start + offset).into()).await;
                let scheduled = start_ns + u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX);
                let woke = since(origin);
                if woke.saturating_sub(scheduled) <= TIMER_SLACK_NS {
                    woke
                } else {
                    scheduled
                }
            }
        };
        let frame = message(&template, payload(size, tag, seq, at));
        // At full speed, frames are written in bursts (as NATS and MQTT clients buffer their
        // writes); at a fixed rate each goes out at its time.
        let written = match pace {
            Pace::Max if (seq + 1) % MAX_PACE_BURST != 0 => sink.feed(frame).await,
            _ => sink.send(frame).await,
        };
        if written.is_err() {
            break;
        }
        shared.sent.fetch_add(1, Ordering::Relaxed);
    }
    let _ = sink.flush().await;
}

/// Counts the publish stream's replies: ids are accepted messages, errors refused ones.
async fn read_replies(
    mut replies: futures_util::stream::SplitStream<WebSocket>,
    shared: Arc<Shared>,
) {
    while let Some(Ok(frame)) = replies.next().await {
        let Some(reply) = reply_of(&frame) else {
            continue;
        };
        let refusal = match reply {
            Ok(PublishReply::Accepted(_) | PublishReply::Acknowledged(_)) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(PublishReply::Refused(error)) => error.to_string(),
            Err(e) => format!("an answer bench does not read ({e}) (unknown)"),
        };
        shared.refused.fetch_add(1, Ordering::Relaxed);
        let mut first = lock(&shared.first_refusal);
        if first.is_none() {
            *first = Some(refusal);
        }
    }
}

/// Records every delivery of phase `tag` with its latency.
async fn subscribe(mut ws: WebSocket, shared: Arc<Shared>, origin: Instant, tag: u8) {
    while let Some(Ok(frame)) = ws.next().await {
        let now = since(origin);
        let Some(payload) = delivered_payload(&frame) else {
            continue;
        };
        match stamp(&payload) {
            Some((WARM_UP, _, _)) => {
                shared.warm.fetch_add(1, Ordering::Relaxed);
            }
            Some((t, seq, at)) if t == tag => {
                let mut deliveries = lock(&shared.deliveries);
                if !deliveries.seen.insert(seq) {
                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                deliveries.latencies_ns.push(now.saturating_sub(at));
                drop(deliveries);
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                shared.last_delivered_ns.store(now, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Draws progress on stderr until the phase is complete (everything sent is answered and
/// every accepted message delivered) or stalls; returns whether it stalled.
async fn watch_progress(
    shared: &Shared,
    name: &str,
    stop: Stop,
    publisher: &tokio::task::JoinHandle<()>,
) -> bool {
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_change = Instant::now();
    let mut last_seen = (0, 0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let stalled = loop {
        tick.tick().await;
        let sent = shared.sent.load(Ordering::Relaxed);
        let answered =
            shared.accepted.load(Ordering::Relaxed) + shared.refused.load(Ordering::Relaxed);
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if terminal {
            draw(name, stop, started.elapsed(), sent, delivered);
        }
        let finished = publisher.is_finished();
        if finished && answered >= sent && delivered >= shared.accepted.load(Ordering::Relaxed) {
            break false;
        }
        if (sent, answered, delivered) != last_seen {
            last_seen = (sent, answered, delivered);
            last_change = Instant::now();
        } else if last_change.elapsed() >= STALL {
            break true;
        }
    };
    let (sent, delivered) = (
        shared.sent.load(Ordering::Relaxed),
        shared.delivered.load(Ordering::Relaxed),
    );
    if terminal {
        draw(name, stop, started.elapsed(), sent, delivered);
        eprintln!();
    } else {
        eprintln!("{name}: {sent} sent, {delivered} delivered");
    }
    if stalled {
        eprintln!(
            "{name}: nothing moved for {}; ending the phase with {} of {sent} delivered",
            humantime::format_duration(STALL),
            delivered
        );
    }
    stalled
}

fn draw(name: &str, stop: Stop, elapsed: Duration, sent: u64, delivered: u64) {
    const WIDTH: usize = 30;
    let done = match stop {
        Stop::After(n) => delivered as f64 / n as f64,
        Stop::Elapsed(d) => elapsed.as_secs_f64() / d.as_secs_f64(),
    }
    .clamp(0.0, 1.0);
    let filled = (done * WIDTH as f64) as usize;
    let rate = delivered as f64 / elapsed.as_secs_f64().max(1e-3);
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r{name:<10} [{}{}] {:>3.0}%  sent {sent:>8}  delivered {delivered:>8}  {rate:>8.0} msg/s ",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        done * 100.0,
    );
    let _ = err.flush();
}
