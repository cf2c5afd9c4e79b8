//! `meshfed demo`, the README's first command: two meshes federate by invitation and exchange
//! signed, encrypted messages, including an exactly-once order that is acknowledged; a third
//! federates with one of them through a broker, goes offline and catches up, in order.

use std::process::Command;
use std::time::Duration;

use meshfed_testkit::process::ProcessGuard;

#[test]
fn demo_help_offers_only_what_the_demo_uses() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .args(["demo", "--help"])
        .env_remove("MESHFED_DIR")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{help}");
    assert!(help.contains("--duration"), "{help}");
    assert!(
        !help.contains("--dir"),
        "the demo makes its own directories:\n{help}"
    );
}

#[test]
fn demo_federates_two_meshes_and_messages_cross_both_ways() {
    let dir = meshfed_testkit::temp_dir();
    let out = dir.path().join("demo.out");
    let err = dir.path().join("demo.err");
    let child = Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .args(["demo", "--duration", "1s"])
        .env_remove("MESHFED_LOG")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut demo = ProcessGuard::new(child, "meshfed demo");
    let status = demo.wait(Duration::from_secs(60));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(status.success(), "{status}\n{text}");
    // Nothing a newcomer cannot act on (such as advice on ephemeral ports).
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert_eq!(stderr, "", "the demo prints no warnings");

    let joined = text
        .lines()
        .find(|l| l.starts_with("plant-a joined: federation fed_"))
        .unwrap_or_else(|| panic!("no join line:\n{text}"));
    assert!(joined.contains("(active,"), "{joined}");
    let readings = text
        .lines()
        .filter(|l| l.contains("supplier-b <- plant-a    line-3/temperature"))
        .count();
    assert!(
        readings >= 3,
        "three readings arrive at supplier-b:\n{text}"
    );
    let order = text
        .lines()
        .find(|l| l.contains("plant-a    <- supplier-b orders/new"))
        .unwrap_or_else(|| panic!("the order did not arrive at plant-a:\n{text}"));
    assert!(order.contains(r#"{"po":"PO-1042","qty":40}"#), "{order}");
    assert!(order.contains("qos 2"), "{order}");
    assert!(order.contains("AES-256-GCM"), "{order}");
    let acked = text
        .lines()
        .find(|l| l.contains("qos 2 order, message fed_"))
        .unwrap_or_else(|| panic!("no order acknowledgement:\n{text}"));
    assert!(acked.contains(": acknowledged"), "{acked}");
    // cloud-c federates with plant-a through the broker, goes offline and catches up.
    let relayed = text
        .lines()
        .find(|l| l.starts_with("plant-a joined cloud-c through hub: federation fed_"))
        .unwrap_or_else(|| panic!("no relayed join:\n{text}"));
    assert!(relayed.contains("(active, via hub)"), "{relayed}");
    assert!(
        text.contains("route plant-a → cloud-c: plant-a → hub → cloud-c"),
        "{text}"
    );
    let back = text
        .find("5. cloud-c is back")
        .unwrap_or_else(|| panic!("cloud-c does not come back:\n{text}"));
    let arrived = |seq: u32, from: usize| {
        text[from..]
            .lines()
            .position(|l| {
                l.starts_with("  cloud-c    <- plant-a    fleet/position")
                    && l.contains(&format!("{{\"truck\":7,\"seq\":{seq}}}"))
                    && l.contains("through hub")
            })
            .unwrap_or_else(|| panic!("reading {seq} did not reach cloud-c:\n{text}"))
    };
    assert!(arrived(1, 0) < arrived(2, 0), "{text}");
    // What was sent while cloud-c was away arrives after it is back, in order.
    let caught_up: Vec<usize> = (3..=5).map(|seq| arrived(seq, back)).collect();
    assert!(caught_up.windows(2).all(|w| w[0] < w[1]), "{text}");
    // The hub held them meanwhile; cloud-c gets each once, though plant-a sends its own copies
    // again once the tunnel is back.
    assert!(text.contains("hub holds 3 of them for cloud-c"), "{text}");
    for seq in 3..=5 {
        assert_eq!(
            text.matches(&format!("\"truck\":7,\"seq\":{seq}}}"))
                .count(),
            1,
            "delivered once:\n{text}"
        );
    }
    // The meshes' own buses (the test command installs mosquitto and nats-server): a reading
    // published with mosquitto_pub on plant-a's MQTT bus reaches a NATS subscriber at
    // supplier-b, its topic translated and its origin marked.
    let step6 = text
        .find("6. Each mesh's own bus: plant-a's gateway is an MQTT client")
        .unwrap_or_else(|| {
            panic!(
                "no step 6 with the brokers:
{text}"
            )
        });
    let after = &text[step6..];
    assert!(
        after.contains("   $ mosquitto_pub -h 127.0.0.1 -p "),
        "{text}"
    );
    let received = after
        .find(r#"   [#1] Received on "plant.line-3.temperature" at supplier-b"#)
        .unwrap_or_else(|| {
            panic!(
                "the reading did not reach the NATS subscriber:
{text}"
            )
        });
    let shown: Vec<&str> = after[received..].lines().take(6).collect();
    assert!(shown.contains(&"   meshfed-origin: plant-a"), "{shown:?}");
    assert!(
        shown.contains(&"   Content-Type: application/json"),
        "{shown:?}"
    );
    assert!(shown.contains(&r#"   {"celsius":21.9}"#), "{shown:?}");
    let summary: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("summary, as plant-a sees its federations:"))
        .skip(1)
        .collect();
    assert_eq!(summary.len(), 3, "{text}");
    for peer in [
        "with supplier-b: active",
        "with hub: active",
        "with cloud-c (through hub): active",
    ] {
        assert!(summary.iter().any(|l| l.contains(peer)), "{peer}:\n{text}");
    }
}
