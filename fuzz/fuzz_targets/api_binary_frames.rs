//! The binary frames of the messaging WebSockets (`format=binary`, `meshfed_node::api::binary`)
//! from arbitrary bytes: decoding must never panic, and whatever decodes re-encodes to a frame
//! that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_node::api::binary::{Delivered, Publish, decode_reply, encode_envelope, encode_reply};

fuzz_target!(|data: &[u8]| {
    if let Ok(publish) = Publish::decode(data) {
        let again = Publish::decode(&publish.encode()).expect("re-encoded request decodes");
        assert_eq!(again, publish);
    }
    if let Ok(reply) = decode_reply(data) {
        let again = decode_reply(&encode_reply(&reply)).expect("re-encoded reply decodes");
        assert_eq!(again, reply);
    }
    if let Ok(d) = Delivered::decode(data) {
        let frame = encode_envelope(&d.envelope, d.unproven, d.proof.as_deref());
        let again = Delivered::decode(&frame).expect("re-encoded envelope decodes");
        assert_eq!(again, d);
    }
});
