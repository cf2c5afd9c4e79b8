//! Renegotiation in place on real `meshfed gateway` processes (issue 11, item 2): an operator's
//! `federation renegotiate` while exactly-once messages flow, a restart with a changed maximum
//! frame that the agreement follows, and a proposal the peer refuses.

mod common;

use std::collections::HashSet;
use std::io::Write as _;

use common::{envelope_id, federate, show, started, subscribe, wait_for_status};
use meshfed_testkit::process::{DEADLINE, poll};
use serde_json::Value;

/// Messages sent at qos 2 while the agreement is renegotiated.
const LOAD: usize = 400;

/// `send --qos 2 DATA` to supplier-b on `from`: the envelope id printed.
fn send_qos2(from: &meshfed_testkit::Mesh, data: &str) -> String {
    let out = from.cli(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "bulk/n",
        "--qos",
        "2",
        data,
    ]);
    let id = out.ok().trim();
    assert!(id.starts_with("fed_"), "{out}");
    id.to_owned()
}

/// The agreement version and the replaced versions `federation show --json` reports.
fn versions(v: &Value) -> (u64, Vec<u64>) {
    let version = v["agreement"]["version"].as_u64().unwrap_or(0);
    let history = v["agreement_history"]
        .as_array()
        .map(|h| h.iter().filter_map(|p| p["version"].as_u64()).collect())
        .unwrap_or_default();
    (version, history)
}

#[test]
fn renegotiation_under_qos2_load_loses_nothing_duplicates_nothing_and_both_sides_show_version_2() {
    let mut a = started("plant-a");
    let mut b = started("supplier-b");
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    wait_for_status(&b, &id, "active");
    let v1 = show(&a, &id);
    assert_eq!(versions(&v1), (1, vec![]), "{v1:#}");
    let v1_digest = v1["agreement"]["digest"].clone();

    // The load, and one message sent once the renegotiation has answered.
    let count = (LOAD + 1).to_string();
    let sub = subscribe(&mut b, &a, &["--count", &count, "--topic", "bulk/#"]);
    let (sender, mut input) = a.spawn_cli_piped(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "bulk/n",
        "--qos",
        "2",
        "-",
    ]);
    let write = |input: &mut std::process::ChildStdin, range: std::ops::Range<usize>| {
        let lines: String = range.map(|n| format!("{{\"n\":{n}}}\n")).collect();
        input.write_all(lines.as_bytes()).unwrap();
        input.flush().unwrap();
    };
    write(&mut input, 0..LOAD / 2);
    poll("the first messages reach supplier-b", DEADLINE, || {
        if sub.stdout_so_far().lines().next().is_some() {
            Ok(())
        } else {
            Err(sub.stderr_so_far())
        }
    });
    // The second half goes in one message at a time, each once the previous one was accepted,
    // while the proposal, the answer and the confirm cross: the sender is busy throughout.
    let renegotiation = a.spawn_cli(&["federation", "renegotiate", &id]);
    for n in LOAD / 2..LOAD {
        write(&mut input, n..n + 1);
        poll("the sender accepts each message", DEADLINE, || {
            let accepted = sender.stdout_so_far().lines().count();
            if accepted > n {
                Ok(())
            } else {
                Err(format!("{accepted} accepted"))
            }
        });
    }
    drop(input);
    let out = renegotiation.finish(DEADLINE);
    assert_eq!(
        out.ok().trim(),
        format!("federation {id} with supplier-b renegotiated: agreement v2 in force")
    );
    let after = send_qos2(&a, "{\"after\":true}");

    let sent_out = sender.finish(DEADLINE);
    let mut sent: Vec<String> = sent_out.ok().lines().map(str::to_owned).collect();
    assert_eq!(
        sent.len(),
        LOAD,
        "one envelope id per message sent:\n{sent_out}"
    );
    sent.push(after.clone());
    let delivered_out = sub.finish(DEADLINE);
    let lines: Vec<&str> = delivered_out.ok().lines().collect();
    let delivered: Vec<String> = lines.iter().map(|l| envelope_id(l)).collect();
    let distinct: HashSet<&String> = delivered.iter().collect();
    assert_eq!(delivered.len(), LOAD + 1, "{delivered_out}");
    assert_eq!(distinct.len(), LOAD + 1, "a message was delivered twice");
    assert_eq!(
        distinct,
        sent.iter().collect::<HashSet<_>>(),
        "sent and delivered differ"
    );
    // Each envelope names the agreement version it crossed under; the last one the new one.
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let version = &v["federation"]["security"]["agreement_version"];
        let expected: &[u64] = if envelope_id(line) == after {
            &[2]
        } else {
            &[1, 2]
        };
        assert!(
            version.as_u64().is_some_and(|n| expected.contains(&n)),
            "{line}"
        );
    }

    let at_a = show(&a, &id);
    let at_b = show(&b, &id);
    assert_eq!(versions(&at_a), (2, vec![1]), "{at_a:#}");
    assert_eq!(versions(&at_b), (2, vec![1]), "{at_b:#}");
    assert_eq!(at_a["agreement"]["digest"], at_b["agreement"]["digest"]);
    assert_ne!(at_a["agreement"]["digest"], v1_digest);
    assert_eq!(at_a["agreement_history"][0]["digest"], v1_digest);
    assert_eq!(at_b["agreement_history"][0]["digest"], v1_digest);
    assert_eq!(at_a["status"], "active");
    let text = a.cli(&["federation", "show", &id]);
    assert!(text.ok().contains("agreement       v2 valid"), "{text}");
    assert!(text.ok().contains("  replaced      v1 at "), "{text}");
}

#[test]
fn a_restart_with_another_max_frame_size_renegotiates_and_a_refused_proposal_keeps_the_agreement() {
    let mut a = started("plant-a");
    let b = started("supplier-b");
    let id = federate(&a, &b);
    wait_for_status(&b, &id, "active");
    assert_eq!(show(&a, &id)["agreement"]["max_frame"], 1 << 20);

    // A smaller frame on plant-a: when its link comes back, the agreement follows on both sides.
    assert_eq!(a.stop().code(), Some(0));
    a.configure_toml("federation", "max_frame_size", &(256 << 10).to_string());
    a.start();
    for m in [&a, &b] {
        let v = poll("agreement v2 with the new maximum frame", DEADLINE, || {
            let v = show(m, &id);
            match versions(&v) {
                (2, h) if h == [1] => Ok(v),
                _ => Err(format!("{v:#}")),
            }
        });
        assert_eq!(
            v["agreement"]["max_frame"],
            256 << 10,
            "{}: {v:#}",
            m.name()
        );
    }

    // An offer supplier-b cannot agree to: refused, and version 2 stays on both sides.
    assert_eq!(a.stop().code(), Some(0));
    a.configure_toml("federation", "max_frame_size", "32768");
    a.start();
    wait_for_status(&a, &id, "active");
    // plant-a proposed on its own as its link came up; an operator's proposal waits for that
    // one to end.
    let out = poll("an operator's renegotiation is answered", DEADLINE, || {
        let out = a.cli(&["federation", "renegotiate", &id]);
        if out.stderr.contains("is under way") {
            return Err(out.to_string());
        }
        Ok(out)
    });
    let err = out.fails(1, "capability max_frame: peer offers 32768 bytes");
    assert!(
        err.starts_with("error: agreement version 3 was not agreed: the peer refused the proposal: capability max_frame: peer offers 32768 bytes, below the minimum of 65536"),
        "{out}"
    );
    for m in [&a, &b] {
        let v = show(m, &id);
        assert_eq!(versions(&v), (2, vec![1]), "{}: {v:#}", m.name());
        assert_eq!(v["agreement"]["max_frame"], 256 << 10);
        assert_eq!(v["status"], "active");
    }
}
