//! Error texts a user meets, each saying what was wrong and what to do: a port in use, a
//! damaged token, a deadline or an invitation lifetime out of range, message properties out of
//! their bounds, a request body over the API's limit, a second `terminate`. The built binary against real gateways on loopback.

mod common;

use std::net::TcpListener;

use common::{federate, mesh, started};
use meshfed_testkit::process::DEADLINE;

#[test]
fn a_port_in_use_says_so_and_names_the_setting_to_change() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cases = [
        (
            "federation",
            "federation links",
            "[federation] listen",
            "--listen",
        ),
        ("api", "the admin API", "[api] listen", "--api"),
    ];
    for (section, what, setting, flag) in cases {
        let mut m = mesh("plant-a");
        m.configure(section, "listen", &addr);
        let out = m.spawn_cli(&["gateway"]).finish(DEADLINE);
        // With the federation listener on port 0 the gateway warns before the API fails.
        assert_eq!(out.code, Some(1), "{out}");
        let line = format!(
            "error: cannot listen for {what} on {addr}: the address is already in use (by another gateway or program); choose another address with `{setting}` in meshfed.toml (`meshfed init {flag} ADDR` for a new node)"
        );
        assert!(out.stderr.lines().any(|l| l == line), "{out}");
    }
}

#[test]
fn a_damaged_token_says_to_copy_it_again_without_decoder_details() {
    let a = started("plant-a");
    // Base64url of three zero bytes: CBOR, but not a token.
    let out = a.cli(&["federation", "join", "mfi1.AAAA"]);
    let err = out.fails(
        2,
        "invitation token is damaged or incomplete: copy the whole token again, as `meshfed federation invite` printed it on the inviting mesh",
    );
    assert!(!err.contains("Semantic"), "{out}");
    assert!(!err.contains("invalid type"), "{out}");
}

#[test]
fn out_of_range_durations_state_the_allowed_range() {
    let a = started("plant-a");
    let out = a.cli(&[
        "federation",
        "invite",
        "--peer",
        "supplier-b",
        "--ttl",
        "1000d",
    ]);
    out.fails(
        2,
        "ttl 1000 days is too long: an invitation works for at most 7 days",
    );
    let out = a.cli(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "t",
        "--max-latency",
        "100d",
        "1",
    ]);
    out.fails(
        2,
        "max_latency: 8640000000 is out of range: give whole milliseconds from 1 to 4294967295 (about 49 days), or a duration like \"5s\"",
    );
}

#[test]
fn message_properties_out_of_their_bounds_name_the_option_and_the_bound() {
    let a = mesh("plant-a");
    let send = |extra: &[&str]| {
        let mut args = vec!["send", "--to", "supplier-b", "--topic", "t"];
        args.extend_from_slice(extra);
        args.push("1");
        a.cli(&args)
    };
    send(&["--property", "no-equals-sign"]).fails(2, "\"no-equals-sign\" is not NAME=VALUE");
    send(&["--property", "=v"]).fails(2, "--property: user[0]: the name is empty");
    let long = format!("big={}", "v".repeat(4097));
    send(&["--property", &long]).fails(
        2,
        "--property: user[0] \"big\": the value is 4097 bytes, at most 4096 are allowed",
    );
    let long = "c".repeat(257);
    send(&["--correlation-data", &long]).fails(
        2,
        "--correlation-data: correlation_data: is 257 bytes, at most 256 are allowed",
    );
    send(&["--reply-to", "replies/#"]).fails(2, "invalid topic \"replies/#\"");
}

#[test]
fn a_body_over_the_api_limit_is_too_large_and_names_the_limit() {
    let a = started("plant-a");
    let file = a.dir().join("big.txt");
    std::fs::write(&file, "a".repeat(20 * 1024 * 1024)).unwrap();
    let data = format!("@{}", file.display());
    let out = a.cli(&["send", "--to", "supplier-b", "--topic", "t", &data]);
    let err = out.fails(2, "the request body is larger than the API accepts (2 MiB)");
    assert!(err.contains("(too_large, HTTP 413)"), "{out}");
}

#[test]
fn a_second_terminate_says_the_federation_is_already_terminated() {
    let a = started("plant-a");
    let b = started("supplier-b");
    let id = federate(&a, &b);
    a.cli(&["federation", "terminate", &id]).ok();
    let out = a.cli(&["federation", "terminate", &id]);
    out.fails(
        1,
        &format!("federation {id}: it is already terminated (terminated-graceful)"),
    );
}
