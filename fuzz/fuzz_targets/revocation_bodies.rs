//! The revocation exchange's bodies from arbitrary bytes: a revocation list, the `Revocations`
//! frame's signed statement and the `RevocationsAck`. Decoding must never panic, whatever decodes
//! must stay within its bounds and decode again to the same value after encoding, and a list
//! compared with any successor must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::revocation::{MAX_REVOCATIONS, MAX_SERIAL_LEN, RevocationList};
use meshfed_proto::session::{Control, RevocationsAck, RevocationsBody};

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = RevocationList::decode(data) {
        assert!(list.nodes.len() + list.serials.len() <= MAX_REVOCATIONS);
        assert!(
            list.serials
                .iter()
                .all(|s| !s.serial.is_empty() && s.serial.len() <= MAX_SERIAL_LEN)
        );
        assert!(list.version > 0);
        let again = RevocationList::decode(&list.encode()).expect("re-encoded list");
        assert_eq!(again, list);
        assert!(
            list.check_successor(&list).is_err(),
            "a list does not succeed itself"
        );
    }
    if let Ok(body) = RevocationsBody::decode(data) {
        let again = RevocationsBody::decode(&body.encode()).expect("re-encoded revocations");
        assert_eq!(again, body);
    }
    if let Ok(ack) = RevocationsAck::decode(data) {
        assert_eq!(
            RevocationsAck::decode(&ack.encode()).expect("re-encoded ack"),
            ack
        );
    }
    for ty in [FrameType::Revocations, FrameType::RevocationsAck] {
        if let Ok(Some(control)) = Control::from_frame(&Frame::new(ty, data.to_vec())) {
            let again = Control::from_frame(&control.to_frame()).expect("re-encoded control body");
            assert_eq!(again, Some(control));
        }
    }
});
