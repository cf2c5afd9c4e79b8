//! Spec-layout JSON envelopes from arbitrary text (signed alone, or in a batch with
//! `security.batch`, or in the export form with `proof`): reading must never panic and must
//! round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::envelope::Envelope;
use meshfed_proto::envelope::export::{Crossed, Exported};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(env) = Envelope::from_json(text) {
        let again = Envelope::from_json(&env.to_json().to_string()).expect("presented JSON reads back");
        assert_eq!(again.header, env.header);
        assert_eq!(again.signature, env.signature);
        assert_eq!(again.batch, env.batch, "security.batch reads back");
    }
    if let Ok(Exported { crossed: Some(crossed), .. }) = Exported::from_json(text) {
        let again = Crossed::decode(&crossed.encode()).expect("the envelope in proof reads back");
        assert_eq!(again, crossed);
    }
});
