//! Message ids and federation ids both start `fed_`: wherever the CLI shows one to a person it
//! says which kind it is, while stdout stays machine-readable (`send` prints the bare id).

mod common;

use common::{federate, started, wait_for_status};

#[test]
fn send_prints_the_bare_id_and_names_it_a_message_on_stderr() {
    let a = started("plant-a");
    let b = started("supplier-b");
    let federation = federate(&a, &b);
    wait_for_status(&a, &federation, "active");
    let out = a.cli(&["send", "--to", "supplier-b", "--topic", "t", "1"]);
    let id = out.ok().trim().to_owned();
    assert_eq!(out.stdout, format!("{id}\n"), "{out}");
    assert!(id.starts_with("fed_"), "{out}");
    assert_eq!(
        out.stderr,
        format!("message {id} to supplier-b: accepted\n"),
        "{out}"
    );
    let out = a.cli(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "t",
        "--qos",
        "1",
        "--wait",
        "2",
    ]);
    let id = out.ok().trim().to_owned();
    assert_eq!(
        out.stderr,
        format!("message {id} to supplier-b: acknowledged\n"),
        "{out}"
    );
}

#[test]
fn federation_list_heads_its_id_column_federation() {
    let a = started("plant-a");
    let b = started("supplier-b");
    let federation = federate(&a, &b);
    let out = a.cli(&["federation", "list"]);
    let table = out.ok();
    let mut lines = table.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(head[..2], ["FEDERATION", "PEER"], "{out}");
    assert!(lines.next().unwrap().starts_with(&federation), "{out}");
}

/// `send -` sends each line as it arrives: a producer that keeps its output open has its ids
/// printed while it runs, not at its end.
#[test]
fn send_dash_sends_each_line_as_it_arrives() {
    use std::io::Write as _;
    use std::time::Duration;

    let mut a = started("plant-a");
    let b = started("supplier-b");
    let federation = federate(&a, &b);
    wait_for_status(&a, &federation, "active");
    let (send, mut input) = a.spawn_cli_piped(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "t",
        "--qos",
        "1",
        "-",
    ]);
    let ids = |send: &meshfed_testkit::process::Spawned| {
        send.stdout_so_far()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    writeln!(input, "{{\"n\": 1}}").unwrap();
    input.flush().unwrap();
    meshfed_testkit::process::wait_until(
        "the first line's id, with the input still open",
        Duration::from_secs(10),
        || ids(&send).len() == 1,
    );
    writeln!(input, "{{\"n\": 2}}").unwrap();
    drop(input);
    let out = send.finish(Duration::from_secs(10));
    let printed = out.ok().lines().collect::<Vec<_>>();
    assert_eq!(printed.len(), 2, "{out}");
    assert!(printed.iter().all(|id| id.starts_with("fed_")), "{out}");
}
