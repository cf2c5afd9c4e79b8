//! Security suites: how envelopes are signed and sealed. The local preference order decides.

use serde::{Deserialize, Serialize};

use super::Mismatch;

/// ECDSA P-384 / SHA-384 signatures, AES-256-GCM content keys from ECDH P-384 + HKDF-SHA384.
pub const P384_AES256GCM: &str = "ecdsa-p384-sha384+aes-256-gcm";

/// Suites supported, most preferred first. Unknown names from a peer are simply never chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer(pub Vec<String>);

impl Default for Offer {
    fn default() -> Self {
        Self(vec![P384_AES256GCM.to_owned()])
    }
}

/// The suite in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreed(pub String);

/// Our most preferred suite that the peer also supports.
pub fn negotiate(local: &Offer, peer: &Offer) -> Result<Agreed, Mismatch> {
    local
        .0
        .iter()
        .find(|s| peer.0.contains(s))
        .map(|s| Agreed(s.clone()))
        .ok_or_else(|| {
            Mismatch::new(
                "security",
                format!(
                    "no common security suite: we support {:?}, the peer {:?}",
                    local.0, peer.0
                ),
            )
        })
}

/// The agreed suite must be one we offered.
pub fn check(own: &Offer, agreed: &Agreed) -> Result<(), Mismatch> {
    if own.0.contains(&agreed.0) {
        return Ok(());
    }
    Err(Mismatch::new(
        "security",
        format!("peer chose suite {:?} which we never offered", agreed.0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_preference_decides_among_common_suites() {
        let local = Offer(vec!["b".into(), "a".into()]);
        let peer = Offer(vec!["a".into(), "b".into(), "zz-future".into()]);
        assert_eq!(negotiate(&local, &peer).unwrap(), Agreed("b".into()));
        assert!(negotiate(&local, &Offer(vec!["c".into()])).is_err());
    }
}
