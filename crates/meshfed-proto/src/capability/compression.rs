//! Link compression: our most preferred scheme that the peer supports, else none.

use serde::{Deserialize, Serialize};

use super::Mismatch;

/// No compression.
pub const NONE: &str = "none";

/// Schemes supported, most preferred first. `none` is always possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer(pub Vec<String>);

impl Default for Offer {
    fn default() -> Self {
        Self(vec![NONE.to_owned()])
    }
}

/// The scheme in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreed(pub String);

/// Our most preferred common scheme, or `none`.
pub fn negotiate(local: &Offer, peer: &Offer) -> Agreed {
    let chosen = local.0.iter().find(|s| peer.0.contains(s)).cloned();
    Agreed(chosen.unwrap_or_else(|| NONE.to_owned()))
}

/// The agreed scheme must be `none` or one we offered.
pub fn check(own: &Offer, agreed: &Agreed) -> Result<(), Mismatch> {
    if agreed.0 == NONE || own.0.contains(&agreed.0) {
        return Ok(());
    }
    Err(Mismatch::new(
        "compression",
        format!("peer chose {:?} which we never offered", agreed.0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_to_none() {
        let agreed = negotiate(&Offer(vec!["zstd".into()]), &Offer(vec!["lz4".into()]));
        assert_eq!(agreed, Agreed(NONE.into()));
    }
}
