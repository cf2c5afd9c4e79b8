//! Invitation tokens from arbitrary text: decoding must never panic and must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::invitation::InvitationToken;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for candidate in [text.to_owned(), format!("mfi1.{text}")] {
        if let Ok(token) = InvitationToken::decode(&candidate) {
            assert_eq!(InvitationToken::decode(&token.encode()).expect("re-encoded token"), token);
        }
    }
});
