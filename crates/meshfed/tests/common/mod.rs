//! Shared steps of the end-to-end tests: meshes of the built `meshfed` binary, federating them
//! through the CLI, reading `federation list --json`, and a subscriber known to be listening.

#![allow(dead_code, reason = "each test file uses a part of this module")]
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a step that fails is the test failing"
)]

use meshfed_proto::invitation::InvitationToken;
use meshfed_testkit::process::{DEADLINE, connected_to, poll, wait_until};
use meshfed_testkit::{Mesh, Spawned};
use serde_json::Value;

/// A node directory for mesh `name` made by the built binary (`meshfed init`), not started.
pub(crate) fn mesh(name: &str) -> Mesh {
    Mesh::init(env!("CARGO_BIN_EXE_meshfed"), name)
}

/// A node directory for mesh `name` with its gateway running.
pub(crate) fn started(name: &str) -> Mesh {
    let mut m = mesh(name);
    m.start();
    m
}

/// `federation invite --peer PEER` on `inviter`: checks that stdout is the token alone and
/// returns it.
pub(crate) fn invite(inviter: &Mesh, peer: &str, extra: &[&str]) -> String {
    let mut args = vec!["federation", "invite", "--peer", peer];
    args.extend_from_slice(extra);
    let out = inviter.cli(&args);
    let stdout = out.ok();
    assert_eq!(stdout.lines().count(), 1, "stdout is one line:\n{out}");
    let token = stdout.trim();
    let decoded = InvitationToken::decode(token).unwrap();
    assert_eq!(decoded.inviter.as_str(), inviter.name());
    assert_eq!(decoded.invitee.as_str(), peer);
    assert!(
        out.stderr
            .contains(&format!("invitation {} for mesh {peer}", decoded.token_id)),
        "{out}"
    );
    token.to_owned()
}

/// `inviter` invites `joiner`, which joins: returns the federation id printed by `join`.
pub(crate) fn federate(joiner: &Mesh, inviter: &Mesh) -> String {
    let token = invite(inviter, joiner.name(), &[]);
    let out = joiner.cli(&["federation", "join", &token]);
    let stdout = out.ok();
    let id = stdout
        .strip_prefix("joined federation ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected join output:\n{out}"));
    assert!(id.starts_with("fed_"), "{out}");
    assert_eq!(
        stdout.trim(),
        format!(
            "joined federation {id} with mesh {} (active)",
            inviter.name()
        )
    );
    id.to_owned()
}

/// `federation list --json`: every federation the gateway knows.
pub(crate) fn federations(m: &Mesh) -> Vec<Value> {
    let out = m.cli(&["federation", "list", "--json"]);
    let v: Value = serde_json::from_str(out.ok())
        .unwrap_or_else(|e| panic!("federation list --json is not JSON ({e}):\n{out}"));
    v.as_array()
        .unwrap_or_else(|| panic!("federation list --json is not an array:\n{out}"))
        .clone()
}

/// `federation show ID --json`.
pub(crate) fn show(m: &Mesh, id: &str) -> Value {
    let out = m.cli(&["federation", "show", id, "--json"]);
    serde_json::from_str(out.ok()).unwrap()
}

/// Polls `federation list --json` on `m` until federation `id` has `status`; returns its view.
pub(crate) fn wait_for_status(m: &Mesh, id: &str, status: &str) -> Value {
    let what = format!("federation {id} shows status {status} on {}", m.name());
    poll(&what, DEADLINE, || {
        let all = federations(m);
        all.iter()
            .find(|f| f["id"] == id && f["status"] == status)
            .cloned()
            .ok_or_else(|| format!("{all:#?}"))
    })
}

/// Fails the test unless `m`'s gateway is alive and answers `federation list`; returns the list.
pub(crate) fn still_serving(m: &mut Mesh) -> Vec<Value> {
    assert!(m.is_running(), "the gateway of {} has exited", m.name());
    federations(m)
}

/// `meshfed send --to TO --topic TOPIC DATA` on `from`: returns the envelope id it printed.
pub(crate) fn send(from: &Mesh, to: &str, topic: &str, data: &str) -> String {
    let out = from.cli(&["send", "--to", to, "--topic", topic, data]);
    let id = out.ok().trim();
    assert!(id.starts_with("fed_") && !id.contains('\n'), "{out}");
    id.to_owned()
}

/// Topic of the probes [`subscribe`] sends; the subscription under test must not match it.
const PROBE_TOPIC: &str = "probe/ready";

/// Starts `meshfed subscribe ARGS` on `receiver` and returns once it is listening, so that a
/// qos 0 message sent afterwards reaches it.
///
/// `subscribe` prints nothing until an envelope arrives, so readiness is shown two ways: the
/// subscriber holds a connection to the API, and a probe subscriber started after it (topic
/// `probe/#`, which the subscription under test must not match) has received a probe sent by
/// `sender`. The stream hands each envelope to every subscriber registered at that moment, and
/// the probe subscriber registered after this one.
pub(crate) fn subscribe(receiver: &mut Mesh, sender: &Mesh, args: &[&str]) -> Spawned {
    let mut full = vec!["subscribe"];
    full.extend_from_slice(args);
    let sub = receiver.spawn_cli(&full);
    let api = receiver.api_addr().port();
    wait_until("the subscriber connects to the API", DEADLINE, || {
        connected_to(sub.pid(), api)
    });
    let mut probe = receiver.spawn_cli(&["subscribe", "--topic", "probe/#", "--count", "1"]);
    wait_until("the probe subscriber connects to the API", DEADLINE, || {
        connected_to(probe.pid(), api)
    });
    poll(
        "a probe envelope reaches the probe subscriber",
        DEADLINE,
        || {
            if probe.has_exited() {
                return Ok(());
            }
            send(sender, receiver.name(), PROBE_TOPIC, "1");
            Err(probe.stdout_so_far())
        },
    );
    let out = probe.finish(DEADLINE);
    out.ok();
    sub
}

/// Starts `meshfed subscribe ARGS` on `m` and waits until it says it is subscribed.
pub(crate) fn subscribed(m: &mut Mesh, args: &[&str]) -> Spawned {
    let mut full = vec!["subscribe"];
    full.extend_from_slice(args);
    let sub = m.spawn_cli(&full);
    wait_until("the subscriber is subscribed", DEADLINE, || {
        sub.stderr_so_far().contains("subscribed at")
    });
    sub
}

/// Checks one line printed by `subscribe`: a spec-layout JSON envelope with envelope id `id`,
/// from `from` to `to` on `topic`, sealed with AES-256-GCM, carrying `message`.
pub(crate) fn check_envelope(
    line: &str,
    id: &str,
    from: &str,
    to: &str,
    topic: &str,
    message: &Value,
) {
    meshfed_proto::envelope::Envelope::from_json(line)
        .unwrap_or_else(|e| panic!("not a spec-layout envelope ({e}): {line}"));
    let v: Value = serde_json::from_str(line).unwrap();
    let f = &v["federation"];
    assert_eq!(f["id"], id, "{line}");
    assert_eq!(f["source_mesh"]["id"], from, "{line}");
    assert_eq!(f["destination_mesh"]["id"], to, "{line}");
    assert_eq!(f["metadata"]["topic"], topic, "{line}");
    assert_eq!(
        f["security"]["encryption"]["algorithm"], "AES-256-GCM",
        "{line}"
    );
    assert_eq!(&v["message"], message, "{line}");
}

/// The envelope id of a line printed by `subscribe`.
pub(crate) fn envelope_id(line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap();
    v["federation"]["id"].as_str().unwrap().to_owned()
}

/// `GET path` on the API at `addr`, without authentication (`/metrics`); returns the body.
pub(crate) fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    body.to_owned()
}

/// `method path` with bearer `token` and JSON `body`, as curl would send it: the status code and
/// the JSON answer.
pub(crate) fn http(
    api: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> (u16, Value) {
    use std::io::{Read as _, Write as _};
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: meshfed\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let answer =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}):\n{response}"));
    (status, answer)
}

/// The admin token of `m`, from its node directory.
pub(crate) fn admin_token(m: &Mesh) -> String {
    std::fs::read_to_string(m.dir().join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// The sum of the samples of metric `name` whose labels contain every one of `labels`
/// (`peer="supplier-b"`); `None` when there is no such sample.
pub(crate) fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let samples: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            let ok = (rest.is_empty() || rest.starts_with('{'))
                && labels.iter().all(|want| rest.contains(want));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}
