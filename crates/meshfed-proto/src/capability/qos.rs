//! QoS levels: the highest level both sides support.

use serde::{Deserialize, Serialize};

use super::Mismatch;
use crate::envelope::Qos;

/// The highest QoS level a side supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer(pub Qos);

impl Default for Offer {
    fn default() -> Self {
        Self(Qos::ExactlyOnce)
    }
}

/// The highest QoS level usable on the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreed(pub Qos);

/// The lower of the two.
pub fn negotiate(local: &Offer, peer: &Offer) -> Agreed {
    Agreed(local.0.min(peer.0))
}

/// The agreed level must not exceed ours.
pub fn check(own: &Offer, agreed: &Agreed) -> Result<(), Mismatch> {
    if agreed.0 <= own.0 {
        return Ok(());
    }
    Err(Mismatch::new(
        "qos",
        format!(
            "peer chose qos {} above our maximum {}",
            agreed.0.level(),
            own.0.level()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_maximum_wins() {
        assert_eq!(
            negotiate(&Offer(Qos::ExactlyOnce), &Offer(Qos::AtLeastOnce)),
            Agreed(Qos::AtLeastOnce)
        );
        assert!(check(&Offer(Qos::AtMostOnce), &Agreed(Qos::AtLeastOnce)).is_err());
    }
}
