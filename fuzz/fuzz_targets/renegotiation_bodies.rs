//! Renegotiation control bodies (proposal, answer, confirm) from arbitrary bytes: decoding must
//! never panic, a refusal's reason and the signatures must stay within their bounds, and whatever
//! decodes must encode and decode to the same body, also through `Control::from_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::crypto::SIGNATURE_LEN;
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::session::{
    Control, MAX_REASON_LEN, RenegotiationAnswer, RenegotiationConfirm, RenegotiationProposal,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = RenegotiationProposal::decode(data) {
        assert_eq!(
            RenegotiationProposal::decode(&body.encode()).expect("re-encoded proposal"),
            body
        );
    }
    if let Ok(body) = RenegotiationAnswer::decode(data) {
        match &body {
            RenegotiationAnswer::Accept { signature, .. } => {
                assert_eq!(signature.len(), SIGNATURE_LEN)
            }
            RenegotiationAnswer::Refuse { reason, .. } => assert!(reason.len() <= MAX_REASON_LEN),
        }
        assert_eq!(
            RenegotiationAnswer::decode(&body.encode()).expect("re-encoded answer"),
            body
        );
    }
    if let Ok(body) = RenegotiationConfirm::decode(data) {
        assert_eq!(body.signature.len(), SIGNATURE_LEN);
        assert_eq!(
            RenegotiationConfirm::decode(&body.encode()).expect("re-encoded confirm"),
            body
        );
    }
    for ty in [
        FrameType::RenegotiationProposal,
        FrameType::RenegotiationAnswer,
        FrameType::RenegotiationConfirm,
    ] {
        if let Ok(Some(control)) = Control::from_frame(&Frame::new(ty, data.to_vec())) {
            let again = Control::from_frame(&control.to_frame()).expect("re-encoded control body");
            assert_eq!(again, Some(control));
        }
    }
});
