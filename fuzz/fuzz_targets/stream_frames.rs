//! Stream frames (transfers, acknowledgements, credit grants, floors) from arbitrary bytes:
//! decoding must never panic, whatever decodes must re-encode to bytes that decode to the same
//! value, and encoding from borrowed parts must write what encoding the value writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_queue::wire::{Signed, SignedRef, Transfer};
use meshfed_queue::{Ack, Credit, Forward};

fuzz_target!(|data: &[u8]| {
    if let Ok(transfer) = Transfer::decode(data) {
        let bytes = transfer.encode();
        let again = Transfer::decode(&bytes).expect("re-encoded transfer decodes");
        assert_eq!(again, transfer);
        let parts = match &transfer.envelopes {
            Signed::Batch(batch) => Transfer::encode_parts(
                transfer.epoch,
                transfer.floor,
                &transfer.items,
                SignedRef::Batch(batch),
            ),
            Signed::Each(each) => {
                let each: Vec<&[u8]> = each.iter().map(Vec::as_slice).collect();
                Transfer::encode_parts(
                    transfer.epoch,
                    transfer.floor,
                    &transfer.items,
                    SignedRef::Each(&each),
                )
            }
            Signed::Streamed {
                batch,
                first,
                members,
            } => {
                let members: Vec<&[u8]> = members.iter().map(Vec::as_slice).collect();
                Transfer::encode_parts(
                    transfer.epoch,
                    transfer.floor,
                    &transfer.items,
                    SignedRef::Streamed {
                        batch: *batch,
                        first: *first,
                        members: &members,
                    },
                )
            }
        };
        assert_eq!(parts, bytes, "encode_parts differs from encode");
    }
    if let Ok(ack) = Ack::decode(data) {
        let again = Ack::decode(&ack.encode()).expect("re-encoded ack decodes");
        assert_eq!(again, ack);
    }
    if let Ok(credit) = Credit::decode(data) {
        let again = Credit::decode(&credit.encode()).expect("re-encoded credit decodes");
        assert_eq!(again, credit);
    }
    if let Ok(forward) = Forward::decode(data) {
        let again = Forward::decode(&forward.encode()).expect("re-encoded forward decodes");
        assert_eq!(again, forward);
    }
});
