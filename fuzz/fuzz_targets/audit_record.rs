//! Audit records from arbitrary bytes (DESIGN §3.9): decoding must never panic, and whatever
//! decodes re-encodes to exactly the input — a record's bytes are its Merkle leaf, so one record
//! must have one encoding. Its JSON view must always serialise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_audit::record::Record;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = Record::from_bytes(data) else {
        return;
    };
    assert_eq!(
        record.to_bytes(),
        data,
        "a record decoded from another encoding"
    );
    let json = record.to_json();
    assert_eq!(json["kind"].as_str(), Some(record.kind()));
    let _ = record.peer();
});
