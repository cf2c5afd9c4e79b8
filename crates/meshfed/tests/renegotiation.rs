//! Renegotiation in place on real `meshfed gateway` processes (issue 11, item 2): an operator's
//! `federation renegotiate` while exactly-once messages flow, a restart with a changed maximum
//! frame that the agreement follows, and a proposal the peer refuses.

mod common;

use std::collections::HashSet;

use common::{envelope_id, federate, show, started, subscribe, wait_for_status};
use meshfed_testkit::process::{DEADLINE, poll};
use serde_json::Value;

/// Messages sent at qos 2 while the agreement is renegotiated.
const LOAD: usize = 400;

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

    let count = LOAD.to_string();
    let sub = subscribe(&mut b, &a, &["--count", &count, "--topic", "bulk/#"]);
    let payloads: String = (0..LOAD).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let sender = a.spawn_cli_with_stdin(
        &[
            "send",
            "--to",
            "supplier-b",
            "--topic",
            "bulk/n",
            "--qos",
            "2",
            "-",
        ],
        &payloads,
    );
    // Renegotiate once messages are crossing.
    poll("the first messages reach supplier-b", DEADLINE, || {
        if sub.stdout_so_far().lines().next().is_some() {
            Ok(())
        } else {
            Err(sub.stderr_so_far())
        }
    });
    let out = a.cli(&["federation", "renegotiate", &id]);
    assert_eq!(
        out.ok().trim(),
        format!("federation {id} with supplier-b renegotiated: agreement v2 in force")
    );

    let sent_out = sender.finish(DEADLINE);
    let sent: Vec<String> = sent_out.ok().lines().map(str::to_owned).collect();
    assert_eq!(
        sent.len(),
        LOAD,
        "one envelope id per message sent:\n{sent_out}"
    );
    let delivered_out = sub.finish(DEADLINE);
    let delivered: Vec<String> = delivered_out.ok().lines().map(envelope_id).collect();
    let distinct: HashSet<&String> = delivered.iter().collect();
    assert_eq!(delivered.len(), LOAD, "{delivered_out}");
    assert_eq!(distinct.len(), LOAD, "a message was delivered twice");
    assert_eq!(
        distinct,
        sent.iter().collect::<HashSet<_>>(),
        "sent and delivered differ"
    );

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
