//! `--output json|table|yaml` (and `--json`, the same as `--output json`) on real `meshfed`
//! processes against a running gateway: each format reads back to the same data, the table
//! has its header row, and `--json` with another `--output` is refused naming both.

mod common;

use common::{federate, wait_for_status};
use meshfed_testkit::Mesh;
use serde_json::Value;

/// What changes between two reads of a federation while its link is up.
const LIVE: [&str; 3] = ["last_heartbeat", "rtt_ms", "health"];

#[test]
fn every_format_reads_back_to_the_same_federations_and_the_table_has_its_header() {
    let a = common::started("plant-a");
    let b = common::started("supplier-b");
    let fed = federate(&a, &b);
    wait_for_status(&b, &fed, "active");

    let json = parsed(&b, &["federation", "list", "--json"], json_of);
    let output_json = parsed(&b, &["federation", "list", "--output", "json"], json_of);
    let yaml = parsed(&b, &["--output", "yaml", "federation", "list"], yaml_of);
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 1, "{json:#}");
    assert_eq!(list[0]["id"], fed.as_str(), "{json:#}");
    assert_eq!(list[0]["peer"], "plant-a", "{json:#}");
    assert_eq!(settled(&output_json), settled(&json));
    assert_eq!(settled(&yaml), settled(&json));

    // One object: the same, and its YAML is a mapping, not a list.
    let show = ["federation", "show", fed.as_str()];
    let json = parsed(&b, &[&show[..], &["--json"]].concat(), json_of);
    let yaml = parsed(&b, &[&show[..], &["--output", "yaml"]].concat(), yaml_of);
    assert!(yaml.is_object(), "{yaml:#}");
    assert_eq!(settled(&yaml), settled(&json));

    // The table: its header row, then a row for the federation, in aligned columns.
    let out = b.cli(&["federation", "list", "--output", "table"]);
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let header: Vec<&str> = lines[0].split("  ").filter(|c| !c.is_empty()).collect();
    let header: Vec<&str> = header.iter().map(|c| c.trim()).collect();
    assert_eq!(
        header,
        [
            "FEDERATION",
            "PEER",
            "STATUS",
            "ROLE",
            "LAST HEARTBEAT",
            "RTT"
        ],
        "{out}"
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..3], [fed.as_str(), "plant-a", "active"], "{out}");
    let peer_column = lines[0].find("PEER").unwrap();
    assert_eq!(lines[1].find("plant-a"), Some(peer_column), "{out}");
    // Without --output the table is the default.
    assert_eq!(
        b.cli(&["federation", "list"]).ok().lines().next(),
        Some(lines[0])
    );

    // Another command's list, the same way: the component tokens.
    b.cli(&[
        "token",
        "issue",
        "--subject",
        "line-3",
        "--topics",
        "t/#",
        "--actions",
        "publish",
    ])
    .ok();
    let json = parsed(&b, &["token", "list", "--json"], json_of);
    let yaml = parsed(&b, &["token", "list", "--output", "yaml"], yaml_of);
    assert_eq!(json[0]["subject"], "line-3", "{json:#}");
    assert_eq!(yaml, json);
}

#[test]
fn json_with_another_output_is_refused_naming_both() {
    let b = common::mesh("supplier-b");
    for (args, other) in [
        (
            &["federation", "list", "--json", "--output", "yaml"][..],
            "yaml",
        ),
        (&["--output", "table", "route", "list", "--json"], "table"),
    ] {
        let out = b.cli(args);
        out.fails(
            2,
            &format!("--json means --output json; it cannot be used with --output {other}"),
        );
    }
    let out = b.cli(&["federation", "list", "--output", "xml"]);
    out.fails(2, "invalid value 'xml' for '--output <FORMAT>'");
}

/// Runs `meshfed ARGS` on `m` and reads its stdout with `read`.
fn parsed(m: &Mesh, args: &[&str], read: fn(&str) -> Value) -> Value {
    let out = m.cli(args);
    read(out.ok())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn yaml_of(text: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"))
}

/// `v` without the live measurements of its federations.
fn settled(v: &Value) -> Value {
    let mut v = v.clone();
    let strip = |o: &mut Value| {
        if let Some(map) = o.as_object_mut() {
            for key in LIVE {
                map.remove(key);
            }
        }
    };
    match &mut v {
        Value::Array(items) => items.iter_mut().for_each(strip),
        other => strip(other),
    }
    v
}
