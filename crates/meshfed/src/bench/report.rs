//! What `meshfed bench` prints: the table, the JSON report and the batch/message ratios.

use super::*;

/// The JSON report: one run's phases at the top level, or with `--compare` one object per
/// signature mode and the ratios batch/message.
pub(super) fn report_json(plan: &Plan, measured: &Measured, runs: &[Run]) -> Value {
    let mut doc = json!({
        "payload_bytes": plan.payload,
        "qos": plan.qos.level(),
        "path": measured.path(),
    });
    if let Measured::Running {
        publisher,
        subscriber,
    } = measured
    {
        doc["publisher"] = json!({ "mesh": publisher.mesh, "api": publisher.api.to_string() });
        doc["subscriber"] = json!({ "mesh": subscriber.mesh, "api": subscriber.api.to_string() });
    }
    let phases = |run: &Run| {
        let mut phases = json!({});
        for r in &run.phases {
            phases[r.name] = r.to_json(plan.payload);
        }
        phases
    };
    match runs {
        [run] => {
            doc["signatures"] = json!(run.mode.as_str());
            if let (Value::Object(doc), Value::Object(phases)) = (&mut doc, phases(run)) {
                doc.extend(phases);
            }
        }
        [batch, message] => {
            doc["signatures"] = json!([batch.mode.as_str(), message.mode.as_str()]);
            doc[batch.mode.as_str()] = phases(batch);
            doc[message.mode.as_str()] = phases(message);
            let mut over = json!({});
            for (b, m) in batch.phases.iter().zip(&message.phases) {
                over[b.name] =
                    ratios_json(ratios(b.figures(plan.payload), m.figures(plan.payload)));
            }
            doc[format!("{}_over_{}", batch.mode, message.mode)] = over;
        }
        _ => {}
    }
    doc
}

/// `batch / message` for each of [`Report::figures`]; `None` where the divisor is zero.
fn ratios(batch: [f64; 6], message: [f64; 6]) -> [Option<f64>; 6] {
    std::array::from_fn(|i| (message[i] > 0.0).then(|| batch[i] / message[i]))
}

fn ratios_json(r: [Option<f64>; 6]) -> Value {
    json!({
        "msg_per_s": r[0],
        "mb_per_s": r[1],
        "latency_ms": { "p50": r[2], "p90": r[3], "p99": r[4], "max": r[5] },
    })
}

fn qos_label(qos: Qos) -> &'static str {
    match qos {
        Qos::AtMostOnce => "at most once",
        Qos::AtLeastOnce => "at least once",
        Qos::ExactlyOnce => "exactly once",
    }
}

pub(super) fn print_table(plan: &Plan, measured: &Measured, runs: &[Run]) {
    let modes: Vec<&str> = runs.iter().map(|r| r.mode.as_str()).collect();
    let path = match measured {
        Measured::InProcess => format!(
            "{PUBLISHER} publish API → {SUBSCRIBER} subscriber (one process, loopback, mutual TLS)"
        ),
        Measured::Running {
            publisher,
            subscriber,
        } => format!(
            "{} publish API at {} → {} subscriber at {} (running gateways, mutual TLS)",
            publisher.mesh, publisher.api, subscriber.mesh, subscriber.api
        ),
    };
    println!(
        "meshfed bench — {} B payloads, qos {} ({}), signatures {}, {path}",
        plan.payload,
        plan.qos.level(),
        qos_label(plan.qos),
        modes.join(" vs "),
    );
    println!(
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
    );
    let Some(first) = runs.first() else { return };
    for i in 0..first.phases.len() {
        for run in runs {
            let Some(r) = run.phases.get(i) else { continue };
            print_row(plan, run.mode, r);
        }
        if let [batch, message] = runs
            && let (Some(b), Some(m)) = (batch.phases.get(i), message.phases.get(i))
        {
            let r = ratios(b.figures(plan.payload), m.figures(plan.payload))
                .map(|r| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")));
            println!(
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
            );
        }
    }
    let (p, s) = (measured.publisher(), measured.subscriber());
    println!(
        "latency: scheduled send on {p}'s publish socket to receipt on {s}'s stream; throughput: first send to last delivery"
    );
    println!(
        "lost: accepted by {p} but never received on {s}'s live stream (the gateway logs what it dropped for a stream that fell behind)"
    );
    if plan.qos != Qos::AtMostOnce {
        println!(
            "qos {}: each publish is answered once {p} has persisted the message; dup: deliveries of a message already delivered (counted once)",
            plan.qos.level()
        );
    }
    if let [batch, message] = runs {
        println!(
            "{b}/{m}: above 1 in msg/s and MB/s, {b} signatures carry more; below 1 in the latency columns, {b} is faster",
            b = batch.mode,
            m = message.mode,
        );
    }
}

fn print_row(plan: &Plan, mode: SignatureMode, r: &Report) {
    println!(
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
    );
    if let Some(refusal) = &r.first_refusal {
        println!("  {} refused; the first: {refusal}", r.refused);
    }
}
