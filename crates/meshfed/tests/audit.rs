//! The audit trail (issue 16) as an operator meets it, on real `meshfed gateway` processes on
//! ephemeral loopback ports: plant-a sends to supplier-b at audit level `full`, each side's log
//! of the federation is countersigned by the other, `meshfed audit verify | export | report`
//! show it, `meshfed audit prove` gives a proof that `check-proof` accepts with plant-a's CA
//! alone — and every way of tampering with supplier-b's audit file (an edited body, an edited
//! body with its hash recomputed, a deleted, an inserted and a reordered record) is named by
//! `meshfed audit verify`, while a rollback the stopped node cannot see alone is caught by its
//! partner once it runs again.
//!
//! One pair of gateways and one run of traffic serve every case: supplier-b is stopped
//! (gracefully, so its audit writer flushes and closes the file), its store directory is kept
//! aside, and each case starts from a fresh copy of it.

#![expect(
    clippy::unwrap_used,
    reason = "end-to-end tests: a step that fails is the test failing"
)]

mod common;

use std::path::Path;

use common::{federate, wait_for_status};
use meshfed_testkit::process::{DEADLINE, Outcome, poll};
use meshfed_testkit::{Mesh, copy_dir};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

/// Messages plant-a sends.
const MESSAGES: usize = 30;

/// The topic they go on.
const TOPIC: &str = "t/reading";

/// The audit file of a node directory's store (the default `[store] path`).
const AUDIT_FILE: &str = "meshfed.db-audit";

#[test]
fn the_audit_trail_is_countersigned_proven_and_names_every_tampering() {
    let a = gateway("plant-a");
    let mut b = gateway("supplier-b");
    // Audit level `full` on one side: the agreement takes the higher.
    audit_level_full(&b);
    let fed = federate(&b, &a);
    wait_for_status(&a, &fed, "active");

    let lines: String = (0..MESSAGES).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let out = a.cli_with_stdin(
        &[
            "send",
            "--to",
            "supplier-b",
            "--topic",
            TOPIC,
            "--qos",
            "1",
            "-",
        ],
        &lines,
    );
    let sent: Vec<String> = out.ok().lines().map(str::to_owned).collect();
    assert_eq!(sent.len(), MESSAGES, "{out}");
    let newest = sent.last().unwrap();
    countersigned(&a, &fed, newest);
    countersigned(&b, &fed, newest);

    // plant-a's trail, read while its gateway runs.
    let out = a.cli(&["audit", "verify"]);
    assert!(out.ok().contains(&format!("log {fed}: intact: ")), "{out}");
    assert_eq!(
        out.stdout.lines().last(),
        Some("audit trail intact"),
        "{out}"
    );
    let out = a.cli(&["audit", "report"]);
    let report = out.ok();
    assert!(
        report.contains(&format!("federation {fed} with supplier-b")),
        "{out}"
    );
    assert!(
        report.contains(&format!("  messages: {MESSAGES} sent (")),
        "{out}"
    );

    // supplier-b stopped gracefully: its audit writer flushed and closed the file.
    let status = b.stop();
    assert_eq!(status.code(), Some(0), "supplier-b exited with {status}");
    let pristine = meshfed_testkit::temp_dir();
    copy_dir(&b.dir().join("store"), pristine.path());

    intact_exported_and_reported(&b, &fed);
    proven_to_a_third_party(&a, &b, &sent[3]);
    tampering_is_named(&b, pristine.path(), &fed);
    rollback_is_caught_by_the_partner(&a, &mut b, pristine.path(), &fed);
}

/// The stopped supplier-b's trail verifies intact, exports every record (CSV and JSON lines)
/// and its report names the federation, its agreement and the messages received.
fn intact_exported_and_reported(b: &Mesh, fed: &str) {
    let out = b.cli(&["audit", "verify"]);
    let text = out.ok();
    assert!(text.contains(&format!("log {fed}: intact: ")), "{out}");
    assert_eq!(text.lines().last(), Some("audit trail intact"), "{out}");
    let (out, v) = verification(b);
    assert_eq!(v["intact"], true, "{out}");
    let total: u64 = v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["records"].as_u64().unwrap())
        .sum();
    let fed_records = log_of(&v, fed).unwrap()["records"].as_u64().unwrap();
    assert!(fed_records > 2, "{v:#}");

    let out = b.cli(&["audit", "export", "--format", "csv"]);
    let csv_text = out.ok();
    assert_eq!(csv_text.lines().count() as u64, total + 1, "{out}");
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        ["id", "log", "seq", "time", "kind", "peer", "record"],
        "{out}"
    );
    let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len() as u64, total, "{out}");
    let received = records
        .iter()
        .filter(|r| &r[1] == fed && &r[4] == "messages" && &r[5] == "plant-a")
        .map(|r| {
            let record: Value = serde_json::from_str(&r[6]).unwrap();
            assert_eq!(record["direction"], "received", "{record}");
            let digests = record["messages"].as_array().unwrap();
            for m in digests {
                assert_eq!(m["topic"], TOPIC, "{record}");
            }
            digests.len()
        })
        .sum::<usize>();
    assert_eq!(received, MESSAGES, "{out}");

    let out = b.cli(&["audit", "export", "--format", "json"]);
    let json_lines: Vec<Value> = out
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(json_lines.len() as u64, total, "{out}");
    let in_fed = json_lines.iter().filter(|r| r["log"] == fed).count() as u64;
    assert_eq!(in_fed, fed_records, "{out}");

    let out = b.cli(&["audit", "report"]);
    let report = out.ok();
    assert!(
        report.contains(&format!("federation {fed} with plant-a")),
        "{out}"
    );
    assert!(report.contains("  agreement v1 (established) at "), "{out}");
    assert!(
        report.contains(&format!(
            "  messages: 0 sent (0 bytes), {MESSAGES} received ("
        )),
        "{out}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("  compliance in force: ") && l.contains("full")),
        "{out}"
    );
}

/// `meshfed audit prove` at supplier-b for a message plant-a sent; `check-proof` accepts it
/// with plant-a's CA, refuses it without the countersigner's CA, and refuses a forged opening.
fn proven_to_a_third_party(a: &Mesh, b: &Mesh, envelope: &str) {
    let files = meshfed_testkit::temp_dir();
    let proof = files.path().join("proof.json");
    let proof_arg = proof.to_str().unwrap();
    b.cli(&["audit", "prove", envelope, "-o", proof_arg]).ok();
    let a_ca = a.dir().join("ca/ca.crt");
    let b_ca = b.dir().join("ca/ca.crt");

    let out = b.cli(&[
        "audit",
        "check-proof",
        proof_arg,
        "--ca",
        a_ca.to_str().unwrap(),
    ]);
    let text = out.ok();
    assert!(
        text.starts_with(&format!("proof valid: envelope {envelope} crossed\n")),
        "{out}"
    );
    assert!(
        text.contains(&format!("  from plant-a to supplier-b on {TOPIC}\n")),
        "{out}"
    );
    assert!(text.contains("countersigned by plant-a\n"), "{out}");

    let out = b.cli(&[
        "audit",
        "check-proof",
        proof_arg,
        "--ca",
        b_ca.to_str().unwrap(),
    ]);
    eprintln!("--- check-proof with supplier-b's CA only:\n{}", out.stdout);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout.starts_with("proof NOT valid: ")
            && out.stdout.contains("countersign")
            && out.stdout.contains("plant-a"),
        "{out}"
    );

    let mut forged: Value =
        serde_json::from_str(&std::fs::read_to_string(&proof).unwrap()).unwrap();
    let opening = forged["opening"].as_str().unwrap().to_owned();
    let flipped = if opening.starts_with('0') { "1" } else { "0" };
    forged["opening"] = Value::String(format!("{flipped}{}", &opening[1..]));
    let forged_path = files.path().join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let out = b.cli(&[
        "audit",
        "check-proof",
        forged_path.to_str().unwrap(),
        "--ca",
        a_ca.to_str().unwrap(),
        "--ca",
        b_ca.to_str().unwrap(),
    ]);
    eprintln!("--- check-proof of a forged opening:\n{}", out.stdout);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout.starts_with("proof NOT valid: ") && out.stdout.contains("commitment"),
        "{out}"
    );
}

/// Each edit of the stopped supplier-b's audit file, on a fresh copy of its store, is named by
/// `meshfed audit verify`: the record (its seq and log) and what failed.
fn tampering_is_named(b: &Mesh, pristine: &Path, fed: &str) {
    let at = |seq: i64, id: i64| format!("record {seq} of log {fed} (stored at position {id})");

    let mut target = None;
    let lines = tampered(b, pristine, "a byte of a body flipped", |conn| {
        let m = (fed_records(conn, fed).into_iter())
            .find(|r| r.kind == "messages")
            .unwrap();
        let mut bytes = body(conn, m.id);
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        conn.execute(
            "UPDATE audit_record SET body = ?1 WHERE id = ?2",
            params![bytes, m.id],
        )
        .unwrap();
        target = Some(m);
    });
    let m = target.take().unwrap();
    assert_named(
        &lines,
        &[
            &at(m.seq, m.id),
            "was altered: its body does not match its stored hash",
        ],
    );

    let lines = tampered(
        b,
        pristine,
        "a byte of a body flipped, its leaf hash recomputed",
        |conn| {
            let m = fed_records(conn, fed)[4].clone();
            let mut bytes = body(conn, m.id);
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA384);
            ctx.update(&[0x00]);
            ctx.update(&bytes);
            let leaf = ctx.finish().as_ref().to_vec();
            conn.execute(
                "UPDATE audit_record SET body = ?1, leaf = ?2 WHERE id = ?3",
                params![bytes, leaf, m.id],
            )
            .unwrap();
            target = Some(m);
        },
    );
    let m = target.take().unwrap();
    assert_named(
        &lines,
        &[&at(m.seq, m.id), "was edited: its MAC does not match"],
    );
    assert!(
        !lines.iter().any(|l| l.contains("was altered")),
        "the recomputed leaf hash matches the edited body:\n{}",
        lines.join("\n")
    );

    let lines = tampered(b, pristine, "a record deleted", |conn| {
        let m = fed_records(conn, fed)[5].clone();
        conn.execute("DELETE FROM audit_record WHERE id = ?1", [m.id])
            .unwrap();
        target = Some(m);
    });
    let m = target.take().unwrap();
    assert_named(
        &lines,
        &[&format!(
            "record {} was deleted: it is missing before record {} of log {fed}",
            m.seq,
            m.seq + 1
        )],
    );

    let mut inserted = None;
    let lines = tampered(b, pristine, "a record inserted", |conn| {
        let m = fed_records(conn, fed)[6].clone();
        conn.execute(
            "INSERT INTO audit_record (scope, seq, time_ms, kind, peer, body, leaf, mac)
             SELECT scope, seq, time_ms, kind, peer, body, leaf, mac FROM audit_record WHERE id = ?1",
            [m.id],
        )
        .unwrap();
        inserted = Some(conn.last_insert_rowid());
        target = Some(m);
    });
    let (m, copy) = (target.take().unwrap(), inserted.unwrap());
    assert_named(
        &lines,
        &[
            &at(m.seq, copy),
            "was inserted: its seq is stored a second time",
        ],
    );

    let mut swapped = None;
    let lines = tampered(b, pristine, "two records swapped", |conn| {
        let all = fed_records(conn, fed);
        let i = 6;
        let (first, second) = (all[i].clone(), all[i + 1].clone());
        swap_rows(conn, first.id, second.id);
        swapped = Some((first, second));
    });
    let (first, second) = swapped.unwrap();
    assert_named(
        &lines,
        &[
            &at(first.seq, second.id),
            &format!("was reordered: it is stored after record {}", second.seq),
        ],
    );
}

/// Swaps every column but the id of rows `x` and `y`.
fn swap_rows(conn: &Connection, x: i64, y: i64) {
    const COLUMNS: &str = "scope, seq, time_ms, kind, peer, body, leaf, mac";
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE swap AS SELECT id, {COLUMNS} FROM audit_record WHERE id IN ({x}, {y});
         UPDATE audit_record SET ({COLUMNS}) =
             (SELECT {COLUMNS} FROM swap WHERE swap.id = ({x} + {y} - audit_record.id))
         WHERE id IN ({x}, {y});
         DROP TABLE swap;"
    ))
    .unwrap();
}

/// supplier-b's log of the federation cut back to its first four records, with the heads and
/// countersignatures beyond: the stopped node finds nothing wrong alone; once it runs again,
/// plant-a, which countersigned more of it, reports the rollback, and so does supplier-b.
fn rollback_is_caught_by_the_partner(a: &Mesh, b: &mut Mesh, pristine: &Path, fed: &str) {
    let conn = restored(b, pristine);
    let all = rows(&conn, fed);
    let cut = fed_records(&conn, fed)[4].seq;
    let removed = all.iter().filter(|r| r.seq >= cut).count();
    conn.execute_batch(&format!(
        "BEGIN;
         DELETE FROM audit_record WHERE scope = '{fed}' AND seq >= {cut};
         DELETE FROM audit_head WHERE scope = '{fed}' AND size > {cut};
         DELETE FROM audit_countersignature WHERE scope = '{fed}' AND size > {cut};
         DELETE FROM audit_evidence WHERE record NOT IN (SELECT id FROM audit_record);
         COMMIT;"
    ))
    .unwrap();
    drop(conn);
    eprintln!(
        "--- rollback: the last {removed} of {} records of log {fed} removed, {cut} kept",
        all.len()
    );
    let out = b.cli(&["audit", "verify"]);
    assert_eq!(
        out.code,
        Some(0),
        "a rollback to a consistent earlier state is not visible locally:\n{out}"
    );

    b.start();
    let caught = |m: &Mesh| {
        let what = format!("{}'s verify reports the rollback of log {fed}", m.name());
        poll(&what, DEADLINE, || {
            let out = m.cli(&["audit", "verify"]);
            let lines = problem_lines(&out);
            if lines.iter().any(|l| l.contains("rollback")) {
                Ok((out, lines))
            } else {
                Err(out.to_string())
            }
        })
    };
    let (out, lines) = caught(a);
    eprintln!("--- rollback: plant-a's meshfed audit verify printed:");
    for l in &lines {
        eprintln!("    {l}");
    }
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(
        out.stdout.lines().last(),
        Some("audit trail NOT intact"),
        "{out}"
    );
    assert_named(
        &lines,
        &["partner discrepancy: ", "with supplier-b: rollback"],
    );

    let (out, lines) = caught(b);
    eprintln!("--- rollback: supplier-b's meshfed audit verify printed:");
    for l in &lines {
        eprintln!("    {l}");
    }
    assert_eq!(out.code, Some(1), "{out}");
    assert_named(
        &lines,
        &[
            "partner discrepancy: ",
            "with plant-a: rollback: the partner countersigned this node's log at ",
        ],
    );
}

/// A node of mesh `name` whose logs get a signed head every 5 records or 200 ms, its gateway
/// running, and kept at its federation address across restarts.
fn gateway(name: &str) -> Mesh {
    let mut m = common::mesh(name);
    m.configure_toml("audit", "head_every", "5");
    m.configure("audit", "head_interval", "200ms");
    m.start();
    m.keep_federation_address();
    m
}

/// Puts `[compliance] audit_level = "full"` in force as `m`'s policy.
fn audit_level_full(m: &Mesh) {
    let (status, answer) = common::http(
        m.api_addr(),
        "PUT",
        "/v1/policy",
        &common::admin_token(m),
        &json!({ "toml": "[compliance]\naudit_level = \"full\"\n" }),
    );
    assert_eq!(status, 200, "{answer}");
}

/// `meshfed audit verify --json` on `m`: what it showed, and its JSON.
fn verification(m: &Mesh) -> (Outcome, Value) {
    let out = m.cli(&["audit", "verify", "--json"]);
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("audit verify --json is not JSON ({e}):\n{out}"));
    (out, v)
}

/// The check of log `name` in a verification.
fn log_of<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["logs"].as_array()?.iter().find(|l| l["log"] == name)
}

/// Waits until `m`'s trail verifies intact, its log `fed` holds a countersignature by the
/// partner, and the proof of `envelope` (the newest message) is served: a head the partner
/// countersigned covers its record.
fn countersigned(m: &Mesh, fed: &str, envelope: &str) {
    let what = format!(
        "{}'s log {fed} is countersigned past the record of {envelope}",
        m.name()
    );
    poll(&what, DEADLINE, || {
        let (out, v) = verification(m);
        let countersignatures = log_of(&v, fed).and_then(|l| l["countersignatures"].as_u64());
        if out.code != Some(0) || countersignatures.unwrap_or(0) == 0 {
            return Err(out.to_string());
        }
        let proof = m.cli(&["audit", "prove", envelope]);
        match proof.code {
            Some(0) => Ok(()),
            _ => Err(proof.to_string()),
        }
    });
}

/// The lines of `meshfed audit verify` that name what is wrong.
fn problem_lines(out: &Outcome) -> Vec<String> {
    out.stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("problem:") || l.starts_with("partner discrepancy:"))
        .map(str::to_owned)
        .collect()
}

/// Fails unless one of `lines` contains every one of `needles`.
#[track_caller]
fn assert_named(lines: &[String], needles: &[&str]) {
    assert!(
        lines.iter().any(|l| needles.iter().all(|n| l.contains(n))),
        "no line names {needles:?}:\n{}",
        lines.join("\n")
    );
}

/// A row of the audit file.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    seq: i64,
    kind: String,
}

/// The rows of log `scope`, in stored order.
fn rows(conn: &Connection, scope: &str) -> Vec<Row> {
    let mut stmt = conn
        .prepare("SELECT id, seq, kind FROM audit_record WHERE scope = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([scope], |r| {
        Ok(Row {
            id: r.get(0)?,
            seq: r.get(1)?,
            kind: r.get(2)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The records of log `scope`, in stored order: enough to edit, delete, insert and swap
/// records in its middle.
fn fed_records(conn: &Connection, scope: &str) -> Vec<Row> {
    let all = rows(conn, scope);
    eprintln!(
        "--- log {scope}: {:?}",
        all.iter().map(|r| &r.kind).collect::<Vec<_>>()
    );
    assert!(all.len() > 7, "{all:?}");
    all
}

/// The body of row `id`.
fn body(conn: &Connection, id: i64) -> Vec<u8> {
    conn.query_row("SELECT body FROM audit_record WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .unwrap()
}

/// Puts `m`'s store directory back as `pristine` holds it, and opens its audit file.
fn restored(m: &Mesh, pristine: &Path) -> Connection {
    let store = m.dir().join("store");
    std::fs::remove_dir_all(&store).unwrap();
    copy_dir(pristine, &store);
    Connection::open(store.join(AUDIT_FILE)).unwrap()
}

/// From a fresh copy of the stopped `m`'s store, `edit` its audit file, then runs
/// `meshfed audit verify`: fails unless it exits 1 saying the trail is not intact. Returns the
/// lines naming the problems (and prints them).
fn tampered(m: &Mesh, pristine: &Path, case: &str, edit: impl FnOnce(&Connection)) -> Vec<String> {
    let conn = restored(m, pristine);
    edit(&conn);
    drop(conn);
    let out = m.cli(&["audit", "verify"]);
    let lines = problem_lines(&out);
    eprintln!("--- {case}: meshfed audit verify printed:");
    for l in &lines {
        eprintln!("    {l}");
    }
    assert_eq!(out.code, Some(1), "{case}: verify did not fail:\n{out}");
    assert!(
        out.stdout.lines().last() == Some("audit trail NOT intact"),
        "{case}:\n{out}"
    );
    lines
}
