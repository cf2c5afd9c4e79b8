//! `meshfed bench`: what a user's program sees from one mesh's local publish API to another
//! mesh's local subscriber.
//!
//! Two meshes (`plant-a`, `supplier-b`) start in this process on loopback, each with its own CA,
//! in a temporary directory, and federate by invitation through their APIs — the code paths of a
//! real deployment. A publisher WebSocket (`/v1/messages/publish`) on A and a subscriber
//! WebSocket (`/v1/messages/stream`) on B then carry two phases:
//!
//! - **throughput**: messages as fast as the publish socket takes them (TCP back-pressure
//!   paces the publisher);
//! - **latency**: messages at a fixed rate, each stamped with its *scheduled* send time, so a
//!   publisher that falls behind shows up as latency instead of hiding it.
//!
//! Every payload starts with 32 hex digits: the phase, the sequence number and the send time
//! in nanoseconds since a shared [`Instant`] (both ends are in this process, so one monotonic
//! clock serves both). Latency is the subscriber's receive time minus that stamp. Each phase
//! stops by itself: after its count or duration, once every reply and delivery is in, or when
//! nothing has moved for [`STALL`].

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::BenchArgs;
use crate::client::{ApiClient, WebSocket};
use crate::demo::start_mesh;
use crate::failure::Failure;
use crate::gateway::runtime;

const PUBLISHER: &str = "plant-a";
const SUBSCRIBER: &str = "supplier-b";
const TOPIC: &str = "bench/load";
/// The stamp at the start of every payload: phase (2), sequence (14), send time in ns (16).
const STAMP_LEN: usize = 32;
/// A phase that has made no progress for this long ends; what did not arrive counts as lost.
const STALL: Duration = Duration::from_secs(5);
/// How long each phase sends when neither `--count` nor `--duration` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
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
    json: bool,
}

impl Plan {
    fn from_args(args: BenchArgs) -> Result<Self, Failure> {
        let usage = |m: String| Failure::Config(anyhow!(m));
        if args.qos != 0 {
            return Err(usage(format!(
                "--qos {}: QoS 1 and 2 delivery (persisted, acknowledged, retransmitted) is not available yet; only --qos 0 can be measured",
                args.qos
            )));
        }
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
        Ok(Self {
            payload,
            stop,
            rate: args.rate,
            json: args.json,
        })
    }
}

pub(crate) fn run(args: BenchArgs) -> Result<(), Failure> {
    let plan = Plan::from_args(args)?;
    let root = tempfile::Builder::new()
        .prefix("meshfed-bench-")
        .tempdir()
        .map_err(|e| Failure::Runtime(anyhow!("bench: temporary directory: {e}")))?;
    let reports = runtime()?.block_on(async {
        let (gw_a, a) = start_mesh(root.path(), PUBLISHER).await?;
        let (gw_b, b) = start_mesh(root.path(), SUBSCRIBER).await?;
        let measured = async {
            federate(&a, &b).await?;
            let origin = Instant::now();
            let phases = [
                ("throughput", Pace::Max),
                ("latency", Pace::PerSecond(plan.rate)),
            ];
            let mut reports = Vec::new();
            for (tag, (name, pace)) in (1u8..).zip(phases) {
                reports.push(run_phase(&a, &b, &plan, origin, tag, name, pace).await?);
            }
            Ok::<_, Failure>(reports)
        }
        .await;
        gw_a.shutdown().await;
        gw_b.shutdown().await;
        measured
    })?;
    if plan.json {
        let mut doc = json!({
            "payload_bytes": plan.payload,
            "qos": 0,
            "path": format!("{PUBLISHER} publish API -> {SUBSCRIBER} subscriber stream, one process, loopback"),
        });
        for r in &reports {
            doc[r.name] = r.to_json(plan.payload);
        }
        println!("{doc}");
    } else {
        print_table(&plan, &reports);
    }
    Ok(())
}

/// B invites A, A joins: the federation the messages travel.
async fn federate(a: &ApiClient, b: &ApiClient) -> Result<(), Failure> {
    let invite = b
        .post("/v1/federations/invite", &json!({ "peer": PUBLISHER }))
        .await?;
    a.post("/v1/federations/join", &json!({ "token": invite["token"] }))
        .await?;
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
    first_refusal: Mutex<Option<String>>,
    latencies_ns: Mutex<Vec<u64>>,
}

/// What one phase measured.
struct Report {
    name: &'static str,
    pace: Pace,
    sent: u64,
    accepted: u64,
    refused: u64,
    delivered: u64,
    stalled: bool,
    first_refusal: Option<String>,
    /// First send to last delivery.
    elapsed: Duration,
    /// Sorted.
    latencies_ns: Vec<u64>,
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
        let n = self.latencies_ns.len();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies_ns[rank - 1] as f64 / 1e6
    }

    fn rate_label(&self) -> String {
        match self.pace {
            Pace::Max => "max".to_owned(),
            Pace::PerSecond(r) => format!("{r}/s"),
        }
    }

    fn to_json(&self, payload: usize) -> Value {
        json!({
            "rate": match self.pace {
                Pace::Max => json!("max"),
                Pace::PerSecond(r) => json!(r),
            },
            "sent": self.sent,
            "accepted": self.accepted,
            "refused": self.refused,
            "delivered": self.delivered,
            "lost": self.accepted.saturating_sub(self.delivered),
            "stalled": self.stalled,
            "first_refusal": self.first_refusal,
            "seconds": self.elapsed.as_secs_f64(),
            "msg_per_s": self.msg_per_s(),
            "mb_per_s": self.mb_per_s(payload),
            "latency_ms": {
                "p50": self.percentile_ms(0.50),
                "p90": self.percentile_ms(0.90),
                "p99": self.percentile_ms(0.99),
                "max": self.percentile_ms(1.0),
            },
        })
    }
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

/// The phase tag and send time in a delivered envelope's payload.
fn stamp(envelope: &Value) -> Option<(u8, u64)> {
    let text = envelope["message"].as_str()?;
    let tag = u8::from_str_radix(text.get(0..2)?, 16).ok()?;
    let at = u64::from_str_radix(text.get(16..32)?, 16).ok()?;
    Some((tag, at))
}

fn message(to: &str, payload: String) -> Message {
    let body = json!({
        "to": to,
        "topic": TOPIC,
        "payload": payload,
        "content_type": "text/plain",
        "qos": 0,
    });
    Message::Text(body.to_string().into())
}

fn ws_failure(what: &str) -> impl Fn(tokio_tungstenite::tungstenite::Error) -> Failure + '_ {
    move |e| Failure::Runtime(anyhow!("bench: {what}: {e}"))
}

async fn run_phase(
    a: &ApiClient,
    b: &ApiClient,
    plan: &Plan,
    origin: Instant,
    tag: u8,
    name: &'static str,
    pace: Pace,
) -> Result<Report, Failure> {
    let shared = Arc::new(Shared::default());
    let subscriber = b
        .websocket(&format!("/v1/messages/stream?from={PUBLISHER}"))
        .await
        .map_err(ws_failure("subscribing"))?;
    let publisher = a
        .websocket("/v1/messages/publish")
        .await
        .map_err(ws_failure("opening the publish stream"))?;
    let (mut sink, mut replies) = publisher.split();
    let subscribe_task = tokio::spawn(subscribe(subscriber, shared.clone(), origin, tag));
    warm_up(&mut sink, &mut replies, &shared, plan.payload).await?;

    let reply_task = tokio::spawn(read_replies(replies, shared.clone()));
    let publish_task = tokio::spawn(publish(
        sink,
        shared.clone(),
        origin,
        tag,
        plan.payload,
        plan.stop,
        pace,
    ));
    let stalled = watch_progress(&shared, name, plan.stop, &publish_task).await;
    publish_task.abort();
    reply_task.abort();
    subscribe_task.abort();

    let first = shared.first_sent_ns.load(Ordering::Relaxed);
    let last = shared.last_delivered_ns.load(Ordering::Relaxed);
    let mut latencies_ns = std::mem::take(&mut *lock(&shared.latencies_ns));
    latencies_ns.sort_unstable();
    let report = Report {
        name,
        pace,
        sent: shared.sent.load(Ordering::Relaxed),
        accepted: shared.accepted.load(Ordering::Relaxed),
        refused: shared.refused.load(Ordering::Relaxed),
        delivered: shared.delivered.load(Ordering::Relaxed),
        stalled,
        first_refusal: lock(&shared.first_refusal).take(),
        elapsed: Duration::from_nanos(last.saturating_sub(first)),
        latencies_ns,
    };
    if report.accepted == 0 {
        return Err(Failure::Runtime(anyhow!(
            "bench: the {name} phase: the gateway accepted none of {} messages{}",
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
    size: usize,
) -> Result<(), Failure> {
    let deadline = Instant::now() + STALL;
    for seq in 0.. {
        sink.send(message(SUBSCRIBER, payload(size, WARM_UP, seq, 0)))
            .await
            .map_err(ws_failure("publishing"))?;
        let reply = loop {
            match replies.next().await {
                Some(Ok(Message::Text(t))) => break serde_json::from_str::<Value>(&t).ok(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws_failure("publishing")(e)),
                None => {
                    return Err(Failure::Runtime(anyhow!(
                        "bench: the gateway closed the publish stream"
                    )));
                }
            }
        };
        if let Some(e) = reply.as_ref().and_then(|r| r.get("error")) {
            return Err(Failure::Runtime(anyhow!(
                "bench: the gateway refused a message: {} ({})",
                e["message"].as_str().unwrap_or("no message"),
                e["code"].as_str().unwrap_or("unknown"),
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
        "bench: no message reached {SUBSCRIBER}'s subscriber within {}",
        humantime::format_duration(STALL)
    )))
}

/// Writes the phase's messages; returns when it has sent them all or its time is up.
async fn publish(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    shared: Arc<Shared>,
    origin: Instant,
    tag: u8,
    size: usize,
    stop: Stop,
    pace: Pace,
) {
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
                let offset = Duration::from_secs_f64(seq as f64 / f64::from(rate));
                tokio::time::sleep_until((start + offset).into()).await;
                start_ns + u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX)
            }
        };
        if sink
            .send(message(SUBSCRIBER, payload(size, tag, seq, at)))
            .await
            .is_err()
        {
            break;
        }
        shared.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts the publish stream's replies: ids are accepted messages, errors refused ones.
async fn read_replies(
    mut replies: futures_util::stream::SplitStream<WebSocket>,
    shared: Arc<Shared>,
) {
    while let Some(Ok(frame)) = replies.next().await {
        let Message::Text(text) = frame else { continue };
        let reply: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if reply["id"].is_string() {
            shared.accepted.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        shared.refused.fetch_add(1, Ordering::Relaxed);
        let mut first = lock(&shared.first_refusal);
        if first.is_none() {
            *first = Some(format!(
                "{} ({})",
                reply["error"]["message"].as_str().unwrap_or("no message"),
                reply["error"]["code"].as_str().unwrap_or("unknown"),
            ));
        }
    }
}

/// Records every delivery of phase `tag` with its latency.
async fn subscribe(mut ws: WebSocket, shared: Arc<Shared>, origin: Instant, tag: u8) {
    while let Some(Ok(frame)) = ws.next().await {
        let now = since(origin);
        let Message::Text(text) = frame else { continue };
        let Ok(envelope) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match stamp(&envelope) {
            Some((WARM_UP, _)) => {
                shared.warm.fetch_add(1, Ordering::Relaxed);
            }
            Some((t, at)) if t == tag => {
                lock(&shared.latencies_ns).push(now.saturating_sub(at));
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

fn print_table(plan: &Plan, reports: &[Report]) {
    println!(
        "meshfed bench — {} B payloads, qos 0, {PUBLISHER} publish API → {SUBSCRIBER} subscriber (one process, loopback, mutual TLS)",
        plan.payload
    );
    println!(
        "{:<11} {:>7} {:>9} {:>9} {:>6} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "phase",
        "rate",
        "sent",
        "delivered",
        "lost",
        "msg/s",
        "MB/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms"
    );
    for r in reports {
        println!(
            "{:<11} {:>7} {:>9} {:>9} {:>6} {:>9.0} {:>7.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            r.name,
            r.rate_label(),
            r.sent,
            r.delivered,
            r.accepted.saturating_sub(r.delivered),
            r.msg_per_s(),
            r.mb_per_s(plan.payload),
            r.percentile_ms(0.50),
            r.percentile_ms(0.90),
            r.percentile_ms(0.99),
            r.percentile_ms(1.0),
        );
        if let Some(refusal) = &r.first_refusal {
            println!("  {} refused; the first: {refusal}", r.refused);
        }
    }
    println!(
        "latency: scheduled send on {PUBLISHER}'s publish socket to receipt on {SUBSCRIBER}'s stream; throughput: first send to last delivery"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_its_stamp_and_has_the_asked_size() {
        let p = payload(1024, 1, 42, 123_456_789);
        assert_eq!(p.len(), 1024);
        let envelope = json!({ "message": p });
        assert_eq!(stamp(&envelope), Some((1, 123_456_789)));
        assert_eq!(payload(STAMP_LEN, 2, 0, 0).len(), STAMP_LEN);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let r = Report {
            name: "t",
            pace: Pace::Max,
            sent: 100,
            accepted: 100,
            refused: 0,
            delivered: 100,
            stalled: false,
            first_refusal: None,
            elapsed: Duration::from_secs(2),
            latencies_ns: (1..=100).map(|i| i * 1_000_000).collect(),
        };
        assert_eq!(r.percentile_ms(0.50), 50.0);
        assert_eq!(r.percentile_ms(0.99), 99.0);
        assert_eq!(r.percentile_ms(1.0), 100.0);
        assert_eq!(r.msg_per_s(), 50.0);
        assert_eq!(r.mb_per_s(1_000_000), 50.0);
    }
}
