//! `meshfed ca rotate | retire-old | show`: plant-a rolls its mesh CA over while messages flow
//! to supplier-b, which stores the new bundle (signed by the old CA) from the running link, and
//! after `retire-old` trusts plant-a's new CA alone — also on a fresh link after a restart. The
//! built binary, on loopback, with ephemeral ports.

#![expect(clippy::unwrap_used, reason = "a step that fails is the test failing")]

mod common;

use std::collections::HashSet;
use std::io::Write as _;
use std::process::ChildStdin;

use common::{envelope_id, federate, mesh, show, subscribe, wait_for_status};
use meshfed_testkit::Mesh;
use meshfed_testkit::process::{DEADLINE, Spawned, poll};
use serde_json::{Value, json};

/// Messages sent in each phase of the rollover.
const PHASE: usize = 40;

/// `ca show --json` on `m`.
fn trust(m: &Mesh) -> Value {
    let out = m.cli(&["ca", "show", "--json"]);
    serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// A `send -` on `a` to supplier-b, qos 1, fed through its stdin.
fn sender(a: &mut Mesh) -> (Spawned, ChildStdin) {
    a.spawn_cli_piped(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "roll/n",
        "--qos",
        "1",
        "-",
    ])
}

/// Writes messages `range` to `input`, one line each, and waits until `sender` printed an
/// envelope id for every message written so far (`total`).
fn feed(sender: &Spawned, input: &mut ChildStdin, range: std::ops::Range<usize>, total: usize) {
    let lines: String = range.map(|n| format!("{{\"n\":{n}}}\n")).collect();
    input.write_all(lines.as_bytes()).unwrap();
    input.flush().unwrap();
    poll("the sender accepts every message", DEADLINE, || {
        let accepted = sender.stdout_so_far().lines().count();
        if accepted >= total {
            Ok(())
        } else {
            Err(format!("{accepted} of {total} accepted"))
        }
    });
}

#[test]
fn a_ca_rollover_with_messages_flowing_ends_with_the_partner_trusting_the_new_ca_alone() {
    let mut b = mesh("supplier-b");
    b.start();
    b.keep_federation_address();
    let mut a = mesh("plant-a");
    a.start();
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    let before = trust(&a);
    let old = before["cas"][0]["fingerprint"].clone();
    assert_eq!(before["serial"], 0, "{before:#}");
    assert_eq!(show(&b, &id)["peer_cas"], json!([old]));
    a.cli(&["ca", "retire-old"])
        .fails(2, "no CA rollover is under way");

    let count = (3 * PHASE).to_string();
    let sub = subscribe(&mut b, &a, &["--topic", "roll/#", "--count", &count]);
    let (first, mut input) = sender(&mut a);
    feed(&first, &mut input, 0..PHASE / 2, PHASE / 2);

    // Rotate while the sender is busy: supplier-b stores old + new from the link that is up.
    let out = a.cli(&["ca", "rotate"]);
    let said = out.ok();
    assert!(
        said.contains("started a CA rollover for mesh plant-a")
            && said.contains("sent it to 1 connected partner(s)"),
        "{out}"
    );
    feed(&first, &mut input, PHASE / 2..PHASE, PHASE);
    let overlap = poll("supplier-b stores the new bundle", DEADLINE, || {
        let t = trust(&a);
        if t["partners"][0]["current"] == true {
            Ok(t)
        } else {
            Err(format!("{t:#}"))
        }
    });
    assert_eq!(overlap["serial"], 1, "{overlap:#}");
    assert_eq!(overlap["rollover"], true, "{overlap:#}");
    assert_eq!(overlap["cas"][0]["fingerprint"], old, "{overlap:#}");
    let new = overlap["cas"][1]["fingerprint"].clone();
    assert_eq!(show(&b, &id)["peer_cas"], json!([old, new]));
    a.cli(&["ca", "rotate"]).fails(2, "already under way");
    drop(input);
    let mut sent: Vec<String> = first
        .finish(DEADLINE)
        .ok()
        .lines()
        .map(str::to_owned)
        .collect();

    // Whether every partner has the new CA is the running gateway's to say.
    a.stop();
    a.cli(&["ca", "retire-old"])
        .fails(1, "the gateway is not running");
    a.start();
    wait_for_status(&b, &id, "active");

    // Retire the old CA while the next sender is busy: plant-a's certificate now comes from
    // the new issuing CA, which supplier-b learnt from the rotation's statement.
    let (second, mut input) = sender(&mut a);
    feed(&second, &mut input, PHASE..PHASE + PHASE / 2, PHASE / 2);
    let out = a.cli(&["ca", "retire-old"]);
    assert!(
        out.ok().contains("retired the old CA of mesh plant-a"),
        "{out}"
    );
    feed(&second, &mut input, PHASE + PHASE / 2..2 * PHASE, PHASE);
    poll("supplier-b stores the new CA alone", DEADLINE, || {
        let cas = show(&b, &id)["peer_cas"].clone();
        if cas == json!([new]) {
            Ok(())
        } else {
            Err(format!("{cas}"))
        }
    });
    let retired = trust(&a);
    assert_eq!(retired["serial"], 2, "{retired:#}");
    assert_eq!(retired["cas"], json!([retired["cas"][0]]), "{retired:#}");
    assert_eq!(retired["cas"][0]["fingerprint"], new, "{retired:#}");
    drop(input);
    sent.extend(second.finish(DEADLINE).ok().lines().map(str::to_owned));

    // A fresh link: plant-a restarts and dials supplier-b, which checks it against the new CA
    // alone; the last messages cross over it.
    a.stop();
    a.start();
    wait_for_status(&b, &id, "active");
    let (third, mut input) = sender(&mut a);
    feed(&third, &mut input, 2 * PHASE..3 * PHASE, PHASE);
    drop(input);
    sent.extend(third.finish(DEADLINE).ok().lines().map(str::to_owned));

    let delivered_out = sub.finish(DEADLINE);
    let delivered: Vec<String> = delivered_out.ok().lines().map(envelope_id).collect();
    let distinct: HashSet<&String> = delivered.iter().collect();
    assert_eq!(sent.len(), 3 * PHASE);
    assert_eq!(delivered.len(), 3 * PHASE, "{delivered_out}");
    assert_eq!(
        distinct,
        sent.iter().collect::<HashSet<_>>(),
        "sent and delivered differ"
    );
    assert_eq!(show(&a, &id)["status"], "active");
}
