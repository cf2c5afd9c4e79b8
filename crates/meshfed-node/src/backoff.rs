//! Jittered exponential backoff, shared by the federation side (re-dialling a peer) and the
//! connectors (reaching a mesh's broker).

use std::time::Duration;

/// `first · 2^attempt`, capped at `max`, scaled by a random factor in [0.5, 1].
pub(crate) fn delay(first: Duration, max: Duration, attempt: u32) -> Duration {
    let base = first.saturating_mul(1u32 << attempt.min(16)).min(max);
    let mut r = [0u8; 2];
    let jitter = match meshfed_proto::crypto::random_fill(&mut r) {
        Ok(()) => f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    base.mul_f64(0.5 + jitter / 2.0)
}
