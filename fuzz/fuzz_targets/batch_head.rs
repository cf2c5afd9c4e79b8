//! Streamed batch heads from arbitrary bytes (DESIGN §3.4): decoding must never panic, whatever
//! decodes re-encodes to the same value, and no head nobody signed verifies against leaves, nor
//! does the protocol state take a head for a batch it never received.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshfed_proto::batch::{BatchHead, Receiving, UnsignedEnvelope};
use meshfed_proto::crypto::{SigningKey, VerifyingKey};

fn verifier() -> &'static VerifyingKey {
    static KEY: OnceLock<VerifyingKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = SigningKey::generate().expect("key generation");
        VerifyingKey::from_sec1(key.public_key()).expect("own public key")
    })
}

fuzz_target!(|data: &[u8]| {
    // The first bytes may be a head, the rest a batch member it is checked against.
    let (head_bytes, member) = data.split_at(data.len() / 2);
    let Ok(head) = BatchHead::decode(head_bytes) else {
        return;
    };
    let again = BatchHead::decode(&head.encode()).expect("re-encoded head decodes");
    assert_eq!(again, head);
    let mut receiving: Receiving<()> = Receiving::new(16, Duration::from_secs(10));
    assert!(
        receiving.head(&head).is_err(),
        "a head was taken for a batch never received"
    );
    if let Ok(envelope) = UnsignedEnvelope::decode(member) {
        if receiving
            .take(head.number, 0, vec![envelope], Instant::now(), |_| ())
            .is_ok()
        {
            if let Ok((leaves, _)) = receiving.head(&head) {
                assert!(
                    leaves.verify(&head, verifier()).is_err(),
                    "a head nobody signed verified"
                );
            }
        }
    }
});
