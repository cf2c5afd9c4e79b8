//! `meshfed token rotate` replaces the admin token of a running gateway: the new one is in the
//! token file and works at once, the old one is refused, and nothing restarts. The built binary,
//! on loopback, with ephemeral ports.

#![expect(clippy::unwrap_used, reason = "a step that fails is the test failing")]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;

use common::started;
use meshfed_testkit::process::DEADLINE;

/// `GET /v1/node` with `token`: the status line.
fn node_status(api: SocketAddr, token: &str) -> String {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "GET /v1/node HTTP/1.1\r\nHost: meshfed\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn the_admin_token_rotates_while_the_gateway_runs() {
    let mut m = started("plant-a");
    let file = m.dir().join("admin.token");
    let old = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let pid = m.pid();
    assert_eq!(node_status(m.api_addr(), &old), "HTTP/1.1 200 OK");

    let out = m.cli(&["token", "rotate"]);
    assert_eq!(
        out.ok().trim(),
        format!(
            "rotated the admin token: the new one is in {}; the old one no longer works",
            file.display()
        )
    );
    let new = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_ne!(new, old);
    assert!(
        new.len() == 64 && new.bytes().all(|b| b.is_ascii_hexdigit()),
        "{new}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is private");

    assert_eq!(node_status(m.api_addr(), &old), "HTTP/1.1 401 Unauthorized");
    assert_eq!(node_status(m.api_addr(), &new), "HTTP/1.1 200 OK");
    // The CLI reads the file: it goes on working with the new token.
    m.cli(&["federation", "list"]).ok();
    assert_eq!(m.pid(), pid, "the gateway did not restart");

    // A restart keeps the new one.
    m.stop();
    m.start();
    assert_eq!(node_status(m.api_addr(), &new), "HTTP/1.1 200 OK");
    assert_eq!(node_status(m.api_addr(), &old), "HTTP/1.1 401 Unauthorized");
}
