//! Component tokens (`meshfed_node::credentials`) from arbitrary text, as a bearer header
//! brings them: verifying must never panic, and nothing unsigned by the issuer is accepted.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use meshfed_node::credentials::Issuer;
use meshfed_proto::crypto::SigningKey;

static ISSUER: LazyLock<Issuer> = LazyLock::new(|| {
    let key = SigningKey::generate().expect("a key");
    Issuer::new(&key, &"plant-a".parse().expect("mesh"), &"gw1".parse().expect("node"))
        .expect("an issuer")
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    // The issuer's key is made here and never signs: no input can verify.
    assert!(ISSUER.verify(text, now).is_err());
});
