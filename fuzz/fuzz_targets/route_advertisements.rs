//! Route advertisements from arbitrary bytes (every node decodes its neighbours'): decoding must
//! never panic, and whatever decodes re-encodes to bytes that decode to the same table.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::relay::routes::Advertisement;

fuzz_target!(|data: &[u8]| {
    let Ok(ad) = Advertisement::decode(data) else {
        return;
    };
    let again = Advertisement::decode(&ad.encode()).expect("re-encoded advertisement decodes");
    assert_eq!(again, ad);
});
