//! Relay frame bodies from arbitrary bytes (brokers decode them from every hop): decoding must
//! never panic, and whatever decodes re-encodes to bytes that decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::relay::RelayFrame;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = RelayFrame::decode(data) else {
        return;
    };
    let again = RelayFrame::decode(&frame.encode()).expect("re-encoded relay frame decodes");
    assert_eq!(again, frame);
});
