//! Wire envelopes from arbitrary bytes: decoding and verifying must never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshfed_proto::crypto::{SigningKey, VerifyingKey};
use meshfed_proto::envelope::WireEnvelope;

fn verifier() -> &'static VerifyingKey {
    static KEY: OnceLock<VerifyingKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = SigningKey::generate().expect("key generation");
        VerifyingKey::from_sec1(key.public_key()).expect("own public key")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = WireEnvelope::decode(data) {
        // Re-encoding what decoded must decode to the same envelope.
        let again = WireEnvelope::decode(&env.encode()).expect("re-encoded envelope decodes");
        assert_eq!(again, env);
        assert!(env.verify(verifier()).is_err(), "an envelope nobody signed verified");
        let _ = env.to_envelope(None).to_json();
    }
});
