//! Wire envelopes, and the sealed part of an opened one (transit part, identity, properties),
//! from arbitrary bytes: decoding and verifying must never panic, and properties that read
//! re-wrap to the same properties.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshfed_proto::crypto::{SigningKey, VerifyingKey};
use meshfed_proto::envelope::{Flags, Properties, Sender, Transit, WireEnvelope};

fn verifier() -> &'static VerifyingKey {
    static KEY: OnceLock<VerifyingKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = SigningKey::generate().expect("key generation");
        VerifyingKey::from_sec1(key.public_key()).expect("own public key")
    })
}

/// Properties read from `sealed` must wrap back into a sealed part that reads the same.
fn properties_round_trip(sealed: Vec<u8>) {
    if let Ok((properties, payload)) = Properties::unwrap(Flags::PROPERTIES, sealed) {
        let again = Properties::unwrap(Flags::PROPERTIES, properties.wrap(&payload))
            .expect("re-wrapped properties read back");
        assert_eq!(again, (properties, payload));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = WireEnvelope::decode(data) {
        // Re-encoding what decoded must decode to the same envelope.
        let again = WireEnvelope::decode(&env.encode()).expect("re-encoded envelope decodes");
        assert_eq!(again, env);
        assert!(env.verify(verifier()).is_err(), "an envelope nobody signed verified");
        let _ = env.to_envelope(None).to_json();
    }
    // An opened sealed part as a receiver reads it, every prefix announced: the transit part,
    // the sender's identity, the properties, then the payload.
    let all = Flags::TRANSIT.with(Flags::IDENTIFIED).with(Flags::PROPERTIES);
    if let Ok((_, rest)) = Transit::unwrap(all, data.to_vec())
        && let Ok((_, rest)) = Sender::unwrap(all, rest)
    {
        properties_round_trip(rest);
    }
    properties_round_trip(data.to_vec());
});
