//! Node certificates of a few seconds (`meshfed init --node-cert-validity 4s`), renewed by the
//! running gateways while messages cross for several of their lifetimes, over the link made at
//! the join: no message lost, every certificate file replaced. The built binary, on loopback.

#![expect(clippy::unwrap_used, reason = "a step that fails is the test failing")]

mod common;

use std::collections::HashSet;
use std::io::Write as _;
use std::time::{Duration, Instant};

use common::{envelope_id, federate, show, subscribe, wait_for_status};
use meshfed_testkit::Mesh;
use meshfed_testkit::process::{DEADLINE, poll};

/// Lifetime of every node certificate here; renewed a third of it before expiry.
const VALIDITY: &str = "4s";
/// How long messages flow: three lifetimes and a half.
const FLOW: Duration = Duration::from_millis(14_000);

fn short_lived(name: &str) -> Mesh {
    Mesh::init_with_args(
        env!("CARGO_BIN_EXE_meshfed"),
        name,
        &["--node-cert-validity", VALIDITY],
    )
}

/// The node certificate file of `m`, as it is now.
fn cert(m: &Mesh) -> Vec<u8> {
    std::fs::read(m.dir().join("node/node.crt")).unwrap()
}

#[test]
fn messages_cross_while_running_gateways_renew_certificates_of_a_few_seconds() {
    let mut b = short_lived("supplier-b");
    b.start();
    let mut a = short_lived("plant-a");
    a.start();
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    let linked = show(&a, &id)["connected_since"].clone();
    assert!(linked.is_string(), "{linked}");

    let sub = subscribe(&mut b, &a, &["--topic", "renew/#"]);
    let (sender, mut input) = a.spawn_cli_piped(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "renew/n",
        "--qos",
        "1",
        "-",
    ]);
    let (mut seen_a, mut seen_b) = (HashSet::new(), HashSet::new());
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < FLOW {
        input
            .write_all(format!("{{\"n\":{n}}}\n").as_bytes())
            .unwrap();
        input.flush().unwrap();
        n += 1;
        poll("the sender accepts each message", DEADLINE, || {
            let accepted = sender.stdout_so_far().lines().count();
            if accepted >= n {
                Ok(())
            } else {
                Err(format!("{accepted} of {n} accepted"))
            }
        });
        seen_a.insert(cert(&a));
        seen_b.insert(cert(&b));
    }
    drop(input);
    let sent: HashSet<String> = sender
        .finish(DEADLINE)
        .ok()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(sent.len(), n);
    // Three lifetimes and a half: at least three certificates each, the first included.
    assert!(
        seen_a.len() >= 3 && seen_b.len() >= 3,
        "plant-a presented {} and supplier-b {} certificates",
        seen_a.len(),
        seen_b.len()
    );
    let delivered = poll("every message reaches supplier-b", DEADLINE, || {
        let got: HashSet<String> = sub.stdout_so_far().lines().map(envelope_id).collect();
        if got == sent {
            Ok(got)
        } else {
            Err(format!("{} of {} delivered", got.len(), sent.len()))
        }
    });
    assert_eq!(delivered.len(), n);
    // The link made at the join carried them all, through every renewal on both sides.
    let f = show(&a, &id);
    assert_eq!(f["health"], "healthy", "{f:#}");
    assert_eq!(f["connected_since"], linked, "{f:#}");
}
