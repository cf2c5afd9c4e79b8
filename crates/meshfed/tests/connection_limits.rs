//! What connections that never authenticate cost a running gateway, as an operator sees it: a
//! few hundred idle connections to each listener are capped, closed (idle API connections after
//! `[connections] api_idle_timeout`, stalled TLS handshakes after the handshake timeout), counted
//! by reason in `/metrics`, and summed up in a few log lines instead of one line each. The built
//! binary, on loopback, with ephemeral ports.

#![expect(clippy::unwrap_used, reason = "a step that fails is the test failing")]

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};

use common::{federate, mesh, started, wait_for_status};
use meshfed_testkit::process::{DEADLINE, poll};

/// Connections opened to each listener.
const CONNECTIONS: usize = 300;
/// `[connections] max_unauthenticated` of the gateway under test.
const CAP: usize = 40;

#[test]
fn idle_unauthenticated_connections_are_capped_closed_and_summed_up_in_the_log() {
    let mut m = mesh("plant-a");
    m.configure_toml("connections", "max_unauthenticated", &CAP.to_string());
    m.configure("connections", "api_idle_timeout", "1s");
    m.configure("connections", "refusal_log_interval", "1s");
    m.configure("federation", "handshake_timeout", "1s");
    m.start();
    let pid = m.pid();
    let baseline = sockets(pid);

    let open = |addr: SocketAddr| -> Vec<TcpStream> {
        (0..CONNECTIONS)
            .map(|i| {
                TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i} to {addr}: {e}"))
            })
            .collect()
    };
    let api = open(m.api_addr());
    let federation = open(m.federation_addr());
    // Accepted or refused, none is left waiting: the gateway holds at most CAP per listener.
    let held = poll(
        "the gateway has taken in every connection",
        DEADLINE,
        || {
            let n = sockets(pid);
            let unauthenticated = n.saturating_sub(baseline);
            // A refused connection is accepted, then dropped: allow a few in between.
            if unauthenticated > 2 * CAP + 4 {
                panic!(
                    "the gateway holds {unauthenticated} unauthenticated sockets, more than \
                     {CAP} per listener"
                );
            }
            let log = m.log();
            let refused_at_capacity = |listener: &str| {
                log.lines().any(|l| {
                    l.contains("refused an unauthenticated connection")
                        && l.contains(&format!("listener={listener} "))
                        && l.contains("reason=\"capacity\"")
                })
            };
            // Both listeners refused one at capacity: they took in more than they hold.
            (refused_at_capacity("api") && refused_at_capacity("federation"))
                .then_some(unauthenticated)
                .ok_or(format!("{unauthenticated} sockets held; log:\n{log}"))
        },
    );
    assert!(held <= 2 * CAP + 4, "{held} sockets held");

    // Every connection ends: refused ones at once, the rest when idle or their handshake times out.
    for (i, mut s) in api.into_iter().chain(federation).enumerate() {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(n) => panic!("connection {i} received {n} bytes: {:?}", &buf[..n]),
            Err(e) => panic!("connection {i} was not closed by the gateway: {e}"),
        }
    }
    poll(
        "the gateway closed every socket it took in",
        DEADLINE,
        || {
            let n = sockets(pid);
            (n <= baseline)
                .then_some(())
                .ok_or(format!("{n} sockets, {baseline} before"))
        },
    );

    let metrics = scrape(m.api_addr());
    let count = |listener: &str, reason: &str| {
        metric(
            &metrics,
            &format!(
                "meshfed_connections_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
            ),
        )
    };
    let api_capacity = count("api", "capacity");
    let fed_capacity = count("federation", "capacity");
    let fed_timeout = count("federation", "timeout");
    let api_idle = metric(
        &metrics,
        "meshfed_connections_idle_closed_total{listener=\"api\"}",
    );
    assert!(api_capacity > 0 && fed_capacity > 0, "{metrics}");
    // Every connection was either refused at the door or admitted and later closed.
    assert_eq!(api_capacity + api_idle, CONNECTIONS as u64, "{metrics}");
    assert_eq!(fed_capacity + fed_timeout, CONNECTIONS as u64, "{metrics}");

    // Stopping writes the last summary; then the log accounts for every refusal in a few lines.
    m.stop();
    let log = m.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("unauthenticated connection"))
        .collect();
    // At most 5 in full and one summary per listener and interval: a handful of intervals.
    assert!(
        lines.len() <= 60,
        "{} log lines about {} refused connections:\n{}",
        lines.len(),
        api_capacity + fed_capacity + fed_timeout,
        lines.join("\n")
    );
    let mut logged: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in &lines {
        let listener = field(line, "listener=").to_owned();
        if line.contains("refused an unauthenticated connection") {
            *logged
                .entry((listener, field(line, "reason=").to_owned()))
                .or_default() += 1;
        } else {
            for pair in field(line, "by_reason=").split(' ') {
                let (reason, n) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                *logged
                    .entry((listener.clone(), reason.to_owned()))
                    .or_default() += n.parse::<u64>().unwrap_or_else(|e| panic!("{line}: {e}"));
            }
        }
    }
    let logged = |listener: &str, reason: &str| {
        logged
            .get(&(listener.to_owned(), reason.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(logged("api", "capacity"), api_capacity, "{log}");
    assert_eq!(logged("federation", "capacity"), fed_capacity, "{log}");
    assert_eq!(logged("federation", "timeout"), fed_timeout, "{log}");
}

#[test]
fn an_api_connection_that_authenticates_stays_usable_beyond_the_cap() {
    let mut m = mesh("plant-a");
    m.configure_toml("connections", "max_unauthenticated", "2");
    m.start();
    // Two places: a client that authenticates gives its place back.
    for _ in 0..5 {
        let out = m.cli(&["federation", "list", "--json"]);
        out.ok();
    }
    let mut idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(m.api_addr()).unwrap())
        .collect();
    // Both places are now held by idle connections: one more is refused at once.
    let mut third = TcpStream::connect(m.api_addr()).unwrap();
    third.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 1];
    let read = third.read(&mut buf);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
    m.wait_for_log(&[
        "refused an unauthenticated connection",
        "listener=api",
        "reason=\"capacity\"",
    ]);
    // Closing one frees its place for the CLI.
    drop(idle.pop());
    poll("the CLI gets a place again", DEADLINE, || {
        let out = m.cli(&["federation", "list", "--json"]);
        (out.code == Some(0)).then_some(()).ok_or(out.to_string())
    });
}

#[test]
fn a_request_in_progress_is_not_an_idle_connection() {
    let mut a = mesh("plant-a");
    a.configure("connections", "api_idle_timeout", "300ms");
    a.start();
    let mut b = started("supplier-b");
    b.keep_federation_address();
    let id = federate(&a, &b);
    wait_for_status(&a, &id, "active");
    b.stop();
    // `send --wait` holds its request open, silent, until supplier-b acknowledges.
    let send = a.spawn_cli(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "t",
        "--qos",
        "1",
        "--wait",
        "{}",
    ]);
    poll("the message waits in the backlog", DEADLINE, || {
        let text = scrape(a.api_addr());
        (metric(&text, "meshfed_backlog_messages{peer=\"supplier-b\"}") == 1)
            .then_some(())
            .ok_or(text)
    });
    // A connection opened now and closed as idle: the idle time has passed for the send's too.
    let mut bare = TcpStream::connect(a.api_addr()).unwrap();
    bare.set_read_timeout(Some(DEADLINE)).unwrap();
    assert!(matches!(bare.read(&mut [0u8; 1]), Ok(0)));
    b.start();
    let out = send.finish(DEADLINE);
    out.ok();
    assert!(out.stderr.contains(": acknowledged"), "{out}");
}

/// The sockets process `pid` has open.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("socket:"))
        .count()
}

/// `GET /metrics` on a fresh connection.
fn scrape(api: SocketAddr) -> String {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: meshfed\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The value of the series named exactly `series`.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The value of `name` (`key=`) in a log line, without quotes.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(name)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + name.len();
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        &quoted[..quoted.find('"').unwrap_or(quoted.len())]
    } else {
        &rest[..rest.find(' ').unwrap_or(rest.len())]
    }
}

#[test]
fn the_field_reader_reads_quoted_and_bare_values() {
    let line = "WARN refused listener=api reason=\"capacity\" by_reason=\"tls=3 capacity=4\" x=1";
    assert_eq!(field(line, "listener="), "api");
    assert_eq!(field(line, "reason="), "capacity");
    assert_eq!(field(line, "by_reason="), "tls=3 capacity=4");
}
