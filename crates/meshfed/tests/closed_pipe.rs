//! Commands whose reader has gone (`meshfed federation show ID | true`): each ends quietly,
//! without a panic, with its usual exit code. The built binary, its stdout a pipe whose
//! reading end is closed before it starts, so every write fails with `EPIPE`.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a step that fails is the test failing"
)]

mod common;

use std::process::{Command, Stdio};

use common::{federate, started};
use meshfed_testkit::temp_dir;

/// Runs `meshfed ARGS` with stdout a pipe nobody reads: exit code and stderr.
fn into_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .env_remove("MESHFED_DIR")
        .env_remove("MESHFED_LOG")
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn commands_end_quietly_when_nobody_reads_their_output() {
    let a = started("plant-a");
    let b = started("supplier-b");
    let id = federate(&a, &b);
    let dir = a.dir().to_str().unwrap();
    let tmp = temp_dir();
    let new_dir = tmp.path().join("new");
    let new_dir = new_dir.to_str().unwrap();
    let cases: [&[&str]; 6] = [
        &["--dir", dir, "federation", "show", &id],
        &["--dir", dir, "federation", "show", &id, "--json"],
        &["--dir", dir, "federation", "list"],
        &["--dir", dir, "federation", "list", "--json"],
        &[
            "--dir",
            dir,
            "send",
            "--to",
            "supplier-b",
            "--topic",
            "t",
            "1",
        ],
        &["--dir", new_dir, "init", "--mesh", "plant-c"],
    ];
    for args in cases {
        let (code, stderr) = into_closed_pipe(args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}
