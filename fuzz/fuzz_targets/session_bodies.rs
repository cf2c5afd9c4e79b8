//! Link session control bodies from arbitrary bytes: decoding must never panic, a termination
//! reason must stay within its bound, and whatever decodes must encode and decode to the same
//! body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::session::{
    Control, Heartbeat, HeartbeatAck, LifecycleChange, MAX_REASON_LEN, TerminationBody,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = Heartbeat::decode(data) {
        assert_eq!(
            Heartbeat::decode(&body.encode()).expect("re-encoded heartbeat"),
            body
        );
    }
    if let Ok(body) = HeartbeatAck::decode(data) {
        assert_eq!(
            HeartbeatAck::decode(&body.encode()).expect("re-encoded ack"),
            body
        );
    }
    if let Ok(body) = LifecycleChange::decode(data) {
        assert_eq!(
            LifecycleChange::decode(&body.encode()).expect("re-encoded lifecycle"),
            body
        );
    }
    if let Ok(body) = TerminationBody::decode(data) {
        assert!(body.reason().len() <= MAX_REASON_LEN);
        assert_eq!(
            TerminationBody::decode(&body.encode()).expect("re-encoded termination"),
            body
        );
    }
    for ty in [
        FrameType::Heartbeat,
        FrameType::HeartbeatAck,
        FrameType::Lifecycle,
        FrameType::Termination,
        FrameType::Error,
    ] {
        if let Ok(Some(control)) = Control::from_frame(&Frame::new(ty, data.to_vec())) {
            let again = Control::from_frame(&control.to_frame()).expect("re-encoded control body");
            assert_eq!(again, Some(control));
        }
    }
});
