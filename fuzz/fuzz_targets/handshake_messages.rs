//! Handshake frame bodies and agreements from arbitrary bytes: decoding must never panic, and
//! whatever decodes must encode and decode to the same message. The signed agreement a
//! `Resume` or `ResumeConfirmation` carries (a peer one renegotiation behind takes it over) is
//! decoded further, as the resume handshake does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::agreement::{Agreement, SignedAgreement};
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::handshake::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&code, body)) = data.split_first() else { return };
    if let Some(ty) = FrameType::from_code(code) {
        let frame = Frame::new(ty, body.to_vec());
        if let Ok(Some(msg)) = Message::from_frame(&frame) {
            let again = Message::from_frame(&msg.to_frame()).expect("re-encoded message decodes");
            let carried = match &msg {
                Message::Resume(m) => m.agreement.as_ref(),
                Message::ResumeConfirmation(m) => m.agreement.as_ref(),
                _ => None,
            };
            if let Some(Ok(a)) = carried.map(SignedAgreement::agreement) {
                assert_eq!(Agreement::decode(&a.encode()).expect("re-encoded agreement"), a);
            }
            assert_eq!(again, Some(msg));
        }
    }
    if let Ok(a) = Agreement::decode(body) {
        assert_eq!(Agreement::decode(&a.encode()).expect("re-encoded agreement"), a);
    }
    let _ = SignedAgreement::decode(body);
});
