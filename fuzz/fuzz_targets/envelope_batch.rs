//! Envelope batches, proven envelopes and batch receipts from arbitrary bytes: decoding and
//! verifying must never panic, and whatever decodes must re-encode to the same value.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshfed_proto::batch::{BatchReceipt, ProvenEnvelope, SignedBatch, UnsignedEnvelope};
use meshfed_proto::crypto::{SigningKey, VerifyingKey};

fn verifier() -> &'static VerifyingKey {
    static KEY: OnceLock<VerifyingKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = SigningKey::generate().expect("key generation");
        VerifyingKey::from_sec1(key.public_key()).expect("own public key")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = SignedBatch::decode(data) {
        let again = SignedBatch::decode(&batch.encode()).expect("re-encoded batch decodes");
        assert_eq!(again, batch);
        assert!(batch.verify(verifier()).is_err(), "a batch nobody signed verified");
        if let Ok(proven) = batch.proof(0) {
            let _ = proven.verify_inclusion();
            assert!(proven.verify(verifier()).is_err(), "a split envelope nobody signed verified");
        }
    }
    if let Ok(proven) = ProvenEnvelope::decode(data) {
        let again = ProvenEnvelope::decode(&proven.encode()).expect("re-encoded proof decodes");
        assert_eq!(again, proven);
        assert!(proven.verify(verifier()).is_err(), "an envelope nobody signed verified");
    }
    if let Ok(receipt) = BatchReceipt::decode(data) {
        let again = BatchReceipt::decode(&receipt.encode()).expect("re-encoded receipt decodes");
        assert_eq!(again, receipt);
        let _ = receipt.proof(0);
    }
    if let Ok(envelope) = UnsignedEnvelope::decode(data) {
        let again = UnsignedEnvelope::decode(&envelope.encode()).expect("re-encoded member decodes");
        assert_eq!(again, envelope);
    }
});
