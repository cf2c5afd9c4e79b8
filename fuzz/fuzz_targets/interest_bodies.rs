//! The interest exchange's bodies from arbitrary bytes (every node decodes its partners'):
//! decoding must never panic, whatever decodes stays within its bounds (a version from 1, at
//! most `MAX_PATTERNS` patterns, each once) and decodes again to the same value after encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::interest::{Interest, InterestAck, MAX_PATTERNS};

fuzz_target!(|data: &[u8]| {
    if let Ok(interest) = Interest::decode(data) {
        assert!(interest.version > 0);
        assert!(interest.patterns().len() <= MAX_PATTERNS);
        assert!(interest.patterns().windows(2).all(|w| w[0] < w[1]));
        let again = Interest::decode(&interest.encode()).expect("re-encoded interest decodes");
        assert_eq!(again, interest);
    }
    if let Ok(ack) = InterestAck::decode(data) {
        assert!(ack.version > 0);
        assert_eq!(InterestAck::decode(&ack.encode()).expect("re-encoded ack"), ack);
    }
});
