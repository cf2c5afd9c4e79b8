//! Protocol versions: the highest version both sides speak.

use serde::{Deserialize, Serialize};

use super::Mismatch;

/// The protocol version this implementation speaks.
pub const CURRENT: u16 = 1;

/// Versions one side speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer(pub Vec<u16>);

impl Default for Offer {
    fn default() -> Self {
        Self(vec![CURRENT])
    }
}

/// The version spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreed(pub u16);

/// The highest common version.
pub fn negotiate(local: &Offer, peer: &Offer) -> Result<Agreed, Mismatch> {
    local
        .0
        .iter()
        .filter(|v| peer.0.contains(v))
        .max()
        .map(|v| Agreed(*v))
        .ok_or_else(|| {
            Mismatch::new(
                "versions",
                format!(
                    "no common protocol version: we speak {:?}, the peer {:?}",
                    local.0, peer.0
                ),
            )
        })
}

/// The agreed version must be one we offered.
pub fn check(own: &Offer, agreed: &Agreed) -> Result<(), Mismatch> {
    if own.0.contains(&agreed.0) {
        return Ok(());
    }
    Err(Mismatch::new(
        "versions",
        format!("peer chose version {} which we never offered", agreed.0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_common_version_wins() {
        assert_eq!(
            negotiate(&Offer(vec![1, 2, 3]), &Offer(vec![2, 3, 4])).unwrap(),
            Agreed(3)
        );
        let err = negotiate(&Offer(vec![1]), &Offer(vec![2])).unwrap_err();
        assert!(
            err.to_string().contains("no common protocol version"),
            "{err}"
        );
    }
}
