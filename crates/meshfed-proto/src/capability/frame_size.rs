//! Maximum frame size: the smaller of the two, never below [`MIN_MAX_FRAME`].

use serde::{Deserialize, Serialize};

use super::Mismatch;
use crate::frame::{DEFAULT_MAX_FRAME, MIN_MAX_FRAME};

/// The largest frame body a side accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer(pub u32);

impl Default for Offer {
    fn default() -> Self {
        Self(DEFAULT_MAX_FRAME)
    }
}

/// The largest frame body on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreed(pub u32);

/// The smaller offer; refuses offers below the protocol's floor.
pub fn negotiate(local: &Offer, peer: &Offer) -> Result<Agreed, Mismatch> {
    if peer.0 < MIN_MAX_FRAME {
        return Err(Mismatch::new(
            "max_frame",
            format!(
                "peer offers {} bytes, below the minimum of {MIN_MAX_FRAME}",
                peer.0
            ),
        ));
    }
    Ok(Agreed(local.0.min(peer.0)))
}

/// The agreed size must not exceed ours nor fall under the floor.
pub fn check(own: &Offer, agreed: &Agreed) -> Result<(), Mismatch> {
    if agreed.0 <= own.0 && agreed.0 >= MIN_MAX_FRAME {
        return Ok(());
    }
    Err(Mismatch::new(
        "max_frame",
        format!(
            "peer chose {} bytes; we offered {} (minimum {MIN_MAX_FRAME})",
            agreed.0, own.0
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaller_size_wins_above_the_floor() {
        assert_eq!(
            negotiate(&Offer(1 << 20), &Offer(1 << 17)).unwrap(),
            Agreed(1 << 17)
        );
        assert!(negotiate(&Offer(1 << 20), &Offer(100)).is_err());
    }
}
