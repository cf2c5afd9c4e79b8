//! `meshfed events` on real processes: it follows the running gateway's changes and prints
//! one line per change, JSON with `--output json`, the table line by default.

mod common;

use common::{federate, show, wait_for_status};
use meshfed_testkit::process::{DEADLINE, poll, wait_until};
use serde_json::Value;

#[test]
fn events_prints_a_suspension_and_a_resumption_one_line_each() {
    let a = common::started("plant-a");
    let mut b = common::started("supplier-b");
    let fed = federate(&a, &b);
    wait_for_status(&b, &fed, "active");
    // The link is up (its change told already): what the followers see next is the test's.
    poll("supplier-b shows the link connected", DEADLINE, || {
        let view = show(&b, &fed);
        (!view["connected_since"].is_null())
            .then_some(())
            .ok_or(view.to_string())
    });
    let follow = |b: &mut meshfed_testkit::Mesh, args: &[&str]| {
        let events = b.spawn_cli(args);
        wait_until("events follows the gateway", DEADLINE, || {
            events.stderr_so_far().contains("following the changes of ")
        });
        events
    };
    let as_json = follow(&mut b, &["events", "--output", "json", "--count", "2"]);
    let as_table = follow(&mut b, &["events", "--count", "2"]);

    b.cli(&["federation", "suspend", &fed]).ok();
    wait_for_status(&b, &fed, "suspended");
    b.cli(&["federation", "resume", &fed]).ok();

    let out = as_json.finish(DEADLINE);
    let changes: Vec<Value> = out
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let seen: Vec<(&str, &str, &str)> = changes
        .iter()
        .map(|c| {
            assert_eq!(c["federation"], fed.as_str(), "{c}");
            assert_eq!(c["peer"], "plant-a", "{c}");
            let text = |k: &str| c[k].as_str().unwrap_or_default();
            (text("kind"), text("previous"), text("state"))
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("suspended", "active", "suspended"),
            ("resumed", "suspended", "active")
        ],
        "{out}"
    );

    let out = as_table.finish(DEADLINE);
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains(&format!(
            "  suspended  {fed}  plant-a  active → suspended: "
        )),
        "{out}"
    );
    assert!(
        lines[1].contains(&format!("  resumed  {fed}  plant-a  suspended → active")),
        "{out}"
    );
}
