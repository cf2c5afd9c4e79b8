//! `meshfed bench --buses`: the path through both meshes' own buses, end to end —
//! MQTT client → Mosquitto → gateway A (MQTT connector) → gateway B (NATS connector) →
//! nats-server → NATS client. Both gateways run in this process; the brokers are the machine's
//! (`mosquitto`, `nats-server`) on free loopback ports.
//!
//! Two phases, as for the API path: throughput (the MQTT client publishes as fast as the broker
//! takes it, at the chosen QoS; msg/s = distinct messages received / (last receipt − first
//! send)) and latency (paced at `--rate`, each payload stamped with its scheduled send time;
//! percentiles of receipt − stamp).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::Bytes;
use futures_util::StreamExt as _;
use meshfed_proto::envelope::Qos;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde::Serialize;

use super::{payload, percentile_ms, since, stamp};
use crate::cli::{BenchArgs, OutputFormat};
use crate::demo::start_mesh_with;
use crate::demo_buses;
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::output::{Layout, outln, structured};

/// Messages of the throughput phase when no --count is given.
const DEFAULT_COUNT: u64 = 50_000;
/// A phase stops when nothing arrived for this long.
const STALL: Duration = Duration::from_secs(10);

fn failed(what: &str) -> impl Fn(String) -> Failure + '_ {
    move |e| Failure::Runtime(anyhow!("bench --buses: {what}: {e}"))
}

/// What one phase measured.
#[derive(Debug, Serialize)]
struct PhaseReport {
    phase: &'static str,
    sent: u64,
    delivered: u64,
    duplicates: u64,
    seconds: f64,
    msg_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// What the NATS subscriber saw of one phase.
#[derive(Default)]
struct Seen {
    seqs: HashSet<u64>,
    duplicates: u64,
    last: Option<Instant>,
    latencies_ns: Vec<u64>,
}

pub(crate) fn run(args: &BenchArgs, output: OutputFormat) -> Result<(), Failure> {
    let size = usize::try_from(args.payload.0).unwrap_or(usize::MAX);
    let qos = args.qos;
    if qos == Qos::ExactlyOnce {
        return Err(Failure::Input(anyhow!(
            "bench --buses measures qos 0 and 1 (NATS core carries at most qos 1)"
        )));
    }
    runtime()?.block_on(async {
        let root = tempfile::Builder::new()
            .prefix("meshfed-bench-buses-")
            .tempdir()
            .map_err(|e| failed("temporary directory")(e.to_string()))?;
        let Some(buses) = demo_buses::start(root.path()).await? else {
            return Err(failed("brokers")(format!(
                "needs mosquitto and nats-server: {}",
                demo_buses::INSTALL
            )));
        };
        let q = qos.level();
        let a_bus = demo_buses::connectors(
            "bench-a",
            &format!(
                "[[connector]]\nname = \"a-bus\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\n\
                 [[connector.export]]\nlocal = \"bench/#\"\ntopic = \"bench/#\"\nto = \"bench-b\"\nqos = {q}\n",
                buses.mqtt
            ),
        )?;
        let b_bus = demo_buses::connectors(
            "bench-b",
            &format!(
                "[[connector]]\nname = \"b-bus\"\nkind = \"nats\"\nurl = \"nats://127.0.0.1:{}\"\n\
                 [[connector.import]]\ntopic = \"bench/#\"\nlocal = \"bench.>\"\nqos = {q}\n",
                buses.nats
            ),
        )?;
        let window = args.sign_window;
        let tweak = |bus| {
            move |c: &mut meshfed_node::config::NodeConfig| {
                c.connectors = bus;
                if let Some(w) = window {
                    c.delivery.sign_window = w;
                }
            }
        };
        let (gw_a, a) = start_mesh_with(root.path(), "bench-a", tweak(a_bus)).await?;
        let (gw_b, b) = start_mesh_with(root.path(), "bench-b", tweak(b_bus)).await?;
        crate::demo::invite_and_join(
            &b,
            (&a, "bench-a".parse().map_err(|e| failed("mesh")(format!("{e}")))?),
            None,
        )
        .await?;
        for (client, name) in [(&a, "a-bus"), (&b, "b-bus")] {
            demo_buses::connected(client, name).await?;
        }
        let origin = Instant::now();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let nats = async_nats::connect(format!("nats://127.0.0.1:{}", buses.nats))
            .await
            .map_err(|e| failed("NATS subscriber")(e.to_string()))?;
        let mut sub = nats
            .subscribe("bench.>")
            .await
            .map_err(|e| failed("NATS subscriber")(e.to_string()))?;
        nats.flush().await.map_err(|e| failed("NATS subscriber")(e.to_string()))?;
        let phase_tag = Arc::new(std::sync::atomic::AtomicU8::new(0));
        let receiving = {
            let seen = seen.clone();
            let phase_tag = phase_tag.clone();
            tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    let now = Instant::now();
                    let Some((tag, seq, at)) = stamp(&m.payload) else { continue };
                    if tag != phase_tag.load(std::sync::atomic::Ordering::Relaxed) {
                        continue;
                    }
                    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if s.seqs.insert(seq) {
                        s.latencies_ns.push(since(origin).saturating_sub(at));
                        s.last = Some(now);
                    } else {
                        s.duplicates += 1;
                    }
                }
            })
        };
        let count = args.count.unwrap_or(DEFAULT_COUNT);
        let secs = args.duration.unwrap_or(Duration::from_secs(10));
        let mut reports = Vec::new();
        for (tag, name) in [(1u8, "throughput"), (2u8, "latency")] {
            phase_tag.store(tag, std::sync::atomic::Ordering::Relaxed);
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Seen::default();
            let pace = (tag == 2).then_some(args.rate);
            let n = match (pace, args.count) {
                (_, Some(n)) => n,
                (Some(rate), None) => (u64::from(rate) * secs.as_secs()).max(1),
                (None, None) => count,
            };
            let started = Instant::now();
            publish(buses.mqtt, qos, size, tag, n, pace, origin).await?;
            // Until every message arrived, or nothing did for a while.
            let mut last_progress = (0, Instant::now());
            loop {
                let got = seen.lock().unwrap_or_else(|e| e.into_inner()).seqs.len();
                if got as u64 >= n {
                    break;
                }
                if got != last_progress.0 {
                    last_progress = (got, Instant::now());
                } else if last_progress.1.elapsed() > STALL {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let s = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
            reports.push(report(name, n, started, s));
        }
        receiving.abort();
        gw_a.shutdown().await;
        gw_b.shutdown().await;
        drop(buses);
        let report = serde_json::json!({
            "path": "mqtt client -> mosquitto -> gateway A -> gateway B -> nats-server -> nats client",
            "qos": q,
            "payload_bytes": size,
            "rate": args.rate,
            "phases": reports,
        });
        if let Some(printed) = structured(output, &report, Layout::Line) {
            return printed;
        }
        outln!("meshfed bench --buses: MQTT client → mosquitto → gateway A → gateway B → nats-server → NATS client")?;
        outln!("qos {q}, {size} B payloads, both gateways and both brokers on this machine")?;
        outln!("{:<11} {:>8} {:>10} {:>6} {:>10} {:>9} {:>9} {:>9}", "PHASE", "SENT", "DELIVERED", "DUPS", "MSG/S", "P50 MS", "P99 MS", "MAX MS")?;
        for r in &reports {
            outln!(
                "{:<11} {:>8} {:>10} {:>6} {:>10.0} {:>9.3} {:>9.3} {:>9.3}",
                r.phase, r.sent, r.delivered, r.duplicates, r.msg_per_s, r.p50_ms, r.p99_ms, r.max_ms
            )?;
        }
        Ok(())
    })
}

fn report(phase: &'static str, sent: u64, started: Instant, mut s: Seen) -> PhaseReport {
    s.latencies_ns.sort_unstable();
    let pct = |q: f64| percentile_ms(&s.latencies_ns, q);
    let seconds = s
        .last
        .map_or(0.0, |l| l.saturating_duration_since(started).as_secs_f64());
    let delivered = s.seqs.len() as u64;
    PhaseReport {
        phase,
        sent,
        delivered,
        duplicates: s.duplicates,
        seconds,
        msg_per_s: if seconds > 0.0 {
            delivered as f64 / seconds
        } else {
            0.0
        },
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    }
}

/// Publishes `n` stamped messages of phase `tag` from an MQTT 5 client, as fast as the broker
/// takes them or paced at `pace` a second; returns once the broker acknowledged each (QoS 1).
async fn publish(
    port: u16,
    qos: Qos,
    size: usize,
    tag: u8,
    n: u64,
    pace: Option<u32>,
    origin: Instant,
) -> Result<(), Failure> {
    let mut options = MqttOptions::new(format!("bench-publisher-{tag}"), "127.0.0.1", port);
    options.set_outgoing_inflight_upper_limit(1000);
    let (client, mut events) = AsyncClient::new(options, 1024);
    let mqtt_qos = if qos == Qos::AtMostOnce {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let publisher = tokio::spawn(async move {
        let start = Instant::now();
        for seq in 0..n {
            let at = match pace {
                Some(rate) => {
                    let due = start + Duration::from_secs_f64(seq as f64 / f64::from(rate));
                    tokio::time::sleep_until(due.into()).await;
                    u64::try_from(due.duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
                }
                None => since(origin),
            };
            let body = Bytes::from(payload(size, tag, seq, at));
            if client
                .publish(format!("bench/{tag}"), mqtt_qos, false, body)
                .await
                .is_err()
            {
                return client;
            }
        }
        client
    });
    let mut acked = 0u64;
    let mut sent = 0u64;
    let want = if mqtt_qos == QoS::AtMostOnce { 0 } else { n };
    loop {
        if publisher.is_finished() && acked >= want && (want > 0 || sent >= n) {
            break;
        }
        match tokio::time::timeout(STALL, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => sent += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(failed("MQTT publisher")(e.to_string())),
            Err(_) => {
                return Err(failed("MQTT publisher")(
                    "the broker stopped answering".into(),
                ));
            }
        }
    }
    let client = publisher
        .await
        .map_err(|e| failed("MQTT publisher")(e.to_string()))?;
    let _ = client.disconnect().await;
    Ok(())
}
