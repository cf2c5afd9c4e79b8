//! Audit tree heads, countersignatures and head offers from arbitrary bytes (DESIGN §3.9):
//! decoding must never panic, whatever decodes re-encodes to the input, and no head or offer
//! nobody signed is accepted by the partner's check.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshfed_audit::head::{
    Cosigner, Countersignature, CountersignedHead, HeadOffer, SignedHead, TreeHead,
};
use meshfed_proto::crypto::{SigningKey, VerifyingKey};

fn verifier() -> &'static VerifyingKey {
    static KEY: OnceLock<VerifyingKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = SigningKey::generate().expect("key generation");
        VerifyingKey::from_sec1(key.public_key()).expect("own public key")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(offer) = HeadOffer::from_bytes(data) {
        assert_eq!(offer.to_bytes(), data);
        let cosigner = Cosigner {
            mesh: offer.head.head.mesh.clone(),
            scope: offer.head.head.scope.clone(),
        };
        assert!(
            cosigner.check(None, &offer, verifier()).is_err(),
            "an offer nobody signed was accepted"
        );
    }
    if let Ok(signed) = SignedHead::from_bytes(data) {
        assert_eq!(signed.to_bytes(), data);
        assert!(
            signed.verify(verifier()).is_err(),
            "a head nobody signed verified"
        );
    }
    if let Ok(c) = Countersignature::from_bytes(data) {
        assert_eq!(c.to_bytes(), data);
    }
    if let Ok(c) = CountersignedHead::from_bytes(data) {
        assert_eq!(c.to_bytes(), data);
        assert!(c.countersignature.verify(&c.head, verifier()).is_err());
    }
    if let Ok(h) = TreeHead::from_bytes(data) {
        assert_eq!(h.to_bytes(), data);
    }
});
