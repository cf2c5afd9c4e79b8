//! Services: which topics flow in which direction. Each side offers the topics it publishes and
//! names the topics it wants; what flows from A to B is A's offer ∧ B's wish, pattern by pattern.

use serde::{Deserialize, Serialize};

use super::Mismatch;
use crate::topic::TopicPattern;

/// A side's services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Topics this side publishes to the federation.
    pub publishes: Vec<TopicPattern>,
    /// Topics this side wants to receive.
    pub wants: Vec<TopicPattern>,
}

impl Default for Offer {
    fn default() -> Self {
        Self {
            publishes: vec![TopicPattern::all()],
            wants: vec![TopicPattern::all()],
        }
    }
}

/// What flows each way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreed {
    /// Topics the initiator may send to the responder.
    pub to_responder: Vec<TopicPattern>,
    /// Topics the responder may send to the initiator.
    pub to_initiator: Vec<TopicPattern>,
}

fn intersect(offer: &[TopicPattern], wish: &[TopicPattern]) -> Vec<TopicPattern> {
    let mut out: Vec<TopicPattern> = offer
        .iter()
        .flat_map(|o| wish.iter().filter_map(move |w| o.intersect(w)))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The responder's side: `local` is the responder, `peer` the initiator.
pub fn negotiate(local: &Offer, peer: &Offer) -> Agreed {
    Agreed {
        to_responder: intersect(&peer.publishes, &local.wants),
        to_initiator: intersect(&local.publishes, &peer.wants),
    }
}

/// The initiator's side: nothing may flow that we did not offer or want.
pub fn check(own: &Offer, agreed: &Agreed) -> Result<(), Mismatch> {
    let covered = |p: &TopicPattern, by: &[TopicPattern]| {
        by.iter().any(|b| b.intersect(p).as_ref() == Some(p))
    };
    if let Some(p) = agreed
        .to_responder
        .iter()
        .find(|p| !covered(p, &own.publishes))
    {
        return Err(Mismatch::new(
            "services",
            format!("peer lets us send {p}, which we do not publish"),
        ));
    }
    if let Some(p) = agreed.to_initiator.iter().find(|p| !covered(p, &own.wants)) {
        return Err(Mismatch::new(
            "services",
            format!("peer would send us {p}, which we do not want"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(v: &[&str]) -> Vec<TopicPattern> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn each_direction_is_offer_and_wish() {
        let responder = Offer {
            publishes: pats(&["orders/#"]),
            wants: pats(&["telemetry/+/temp"]),
        };
        let initiator = Offer {
            publishes: pats(&["telemetry/#"]),
            wants: pats(&["#"]),
        };
        let agreed = negotiate(&responder, &initiator);
        assert_eq!(agreed.to_responder, pats(&["telemetry/+/temp"]));
        assert_eq!(agreed.to_initiator, pats(&["orders/#"]));
        check(&initiator, &agreed).unwrap();
    }

    #[test]
    fn flows_outside_the_offer_are_refused() {
        let own = Offer {
            publishes: pats(&["a/#"]),
            wants: pats(&["b"]),
        };
        let agreed = Agreed {
            to_responder: pats(&["c"]),
            to_initiator: vec![],
        };
        assert!(
            check(&own, &agreed)
                .unwrap_err()
                .to_string()
                .contains("do not publish")
        );
    }
}
