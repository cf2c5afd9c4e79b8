//! A peer's trust bundle frames from arbitrary bytes: the signed statement, the bundle it
//! signs and the acknowledgement must decode without panicking, and whatever decodes must encode
//! and decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::session::{BundleAck, Control};
use meshfed_proto::statement::{BundleStatement, MAX_CHAIN, SignedStatement};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = SignedStatement::decode(data) {
        assert!(!s.chain.is_empty() && s.chain.len() <= MAX_CHAIN);
        assert_eq!(
            SignedStatement::decode(&s.encode()).expect("re-encoded statement"),
            s
        );
    }
    if let Ok(b) = BundleStatement::decode(data) {
        assert!(!b.cas.is_empty());
        assert_eq!(
            BundleStatement::decode(&b.encode()).expect("re-encoded bundle"),
            b
        );
    }
    if let Ok(ack) = BundleAck::decode(data) {
        assert_eq!(BundleAck::decode(&ack.encode()).expect("re-encoded ack"), ack);
    }
    for ty in [FrameType::TrustBundle, FrameType::TrustBundleAck] {
        if let Ok(Some(control)) = Control::from_frame(&Frame::new(ty, data.to_vec())) {
            assert_eq!(
                Control::from_frame(&control.to_frame()).expect("re-encoded frame"),
                Some(control)
            );
        }
    }
});
