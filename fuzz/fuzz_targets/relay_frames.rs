//! Relay and custody frame bodies from arbitrary bytes (brokers decode them from every hop):
//! decoding must never panic, and whatever decodes re-encodes to bytes that decode to the same
//! frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::relay::RelayFrame;
use meshfed_proto::relay::custody::{Custody, CustodyAck};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = RelayFrame::decode(data) {
        let again = RelayFrame::decode(&frame.encode()).expect("re-encoded relay frame decodes");
        assert_eq!(again, frame);
    }
    if let Ok(custody) = Custody::decode(data) {
        let again = Custody::decode(&custody.encode()).expect("re-encoded custody frame decodes");
        assert_eq!(again, custody);
    }
    if let Ok(ack) = CustodyAck::decode(data) {
        let again = CustodyAck::decode(&ack.encode()).expect("re-encoded custody ack decodes");
        assert_eq!(again, ack);
    }
});
