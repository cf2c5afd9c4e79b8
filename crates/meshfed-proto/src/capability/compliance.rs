//! Compliance frameworks: each side's requirements must be supported by the other; the agreement
//! names the frameworks both support.

use serde::{Deserialize, Serialize};

use super::Mismatch;

/// Frameworks a side supports and those it requires of its partners (lowercase names such as
/// `iec-62443`, `gdpr`, `nis2`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Frameworks this side complies with.
    pub supports: Vec<String>,
    /// Frameworks a partner must comply with.
    pub requires: Vec<String>,
}

/// Frameworks both sides comply with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreed(pub Vec<String>);

fn missing<'a>(required: &'a [String], supported: &[String]) -> Vec<&'a str> {
    required
        .iter()
        .filter(|r| !supported.contains(r))
        .map(String::as_str)
        .collect()
}

/// Both sides' requirements must be met; the result is the common set.
pub fn negotiate(local: &Offer, peer: &Offer) -> Result<Agreed, Mismatch> {
    let peer_lacks = missing(&local.requires, &peer.supports);
    if !peer_lacks.is_empty() {
        return Err(Mismatch::new(
            "compliance",
            format!("we require {peer_lacks:?}, which the peer does not support"),
        ));
    }
    let we_lack = missing(&peer.requires, &local.supports);
    if !we_lack.is_empty() {
        return Err(Mismatch::new(
            "compliance",
            format!("the peer requires {we_lack:?}, which we do not support"),
        ));
    }
    let mut common: Vec<String> = local
        .supports
        .iter()
        .filter(|f| peer.supports.contains(f))
        .cloned()
        .collect();
    common.sort();
    common.dedup();
    Ok(Agreed(common))
}

/// The agreement must list what we require and only what we support.
pub fn check(own: &Offer, agreed: &Agreed) -> Result<(), Mismatch> {
    let lacking = missing(&own.requires, &agreed.0);
    if !lacking.is_empty() {
        return Err(Mismatch::new(
            "compliance",
            format!("the agreement omits our required {lacking:?}"),
        ));
    }
    let foreign = missing(&agreed.0, &own.supports);
    if !foreign.is_empty() {
        return Err(Mismatch::new(
            "compliance",
            format!("the agreement lists {foreign:?}, which we do not support"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(supports: &[&str], requires: &[&str]) -> Offer {
        Offer {
            supports: supports.iter().map(|s| s.to_string()).collect(),
            requires: requires.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn unmet_requirement_names_the_framework() {
        let err = negotiate(&offer(&["gdpr"], &["iec-62443"]), &offer(&["gdpr"], &[])).unwrap_err();
        assert!(err.to_string().contains("iec-62443"), "{err}");
    }

    #[test]
    fn common_frameworks_are_agreed() {
        let a = negotiate(
            &offer(&["gdpr", "nis2"], &["gdpr"]),
            &offer(&["nis2", "gdpr"], &[]),
        )
        .unwrap();
        assert_eq!(a, Agreed(vec!["gdpr".into(), "nis2".into()]));
    }
}
