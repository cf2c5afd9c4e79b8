//! Identifiers, topics and patterns from arbitrary text: parsing must never panic, and what
//! parses must print back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::{FederationId, MeshId, NodeName, Topic, TopicPattern};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(m) = s.parse::<MeshId>() { assert_eq!(m.as_str(), s) }
    if let Ok(n) = s.parse::<NodeName>() { assert_eq!(n.as_str(), s) }
    if let Ok(f) = s.parse::<FederationId>() { assert_eq!(f.as_str(), s) }
    if let Ok(t) = s.parse::<Topic>() {
        assert_eq!(t.as_str(), s);
        assert!(TopicPattern::all().matches(&t));
        let exact: TopicPattern = s.parse().expect("a topic is a pattern");
        assert!(exact.matches(&t));
    }
    let _ = s.parse::<TopicPattern>();
});
