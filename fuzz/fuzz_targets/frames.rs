//! Link byte streams: the frame decoder must never panic, never yield a frame over its maximum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_proto::frame::FrameDecoder;

fuzz_target!(|data: &[u8]| {
    let mut dec = FrameDecoder::new(4096);
    for chunk in data.chunks(7) {
        dec.extend(chunk);
        while let Ok(Some(frame)) = dec.next_frame() {
            assert!(frame.body.len() <= 4096);
        }
    }
});
