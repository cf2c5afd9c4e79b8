//! Interest: the topics a mesh has subscribers for, as it tells each partner (DESIGN §3.6,
//! "only topics with interest on the far side are forwarded").
//!
//! A node sends an [`Interest`] on a link session when the session comes up and whenever the
//! set changes; each is the sender's whole interest for that partner (a pattern it no longer
//! names is withdrawn), with a `version` that grows within the session. The receiver keeps
//! the last one and answers an [`InterestAck`] naming the version it applied, so the sender
//! knows from when on its partner forwards what it asked for.
//!
//! Wire form (CBOR, one value, exact arrays): `Interest` (frame 0x1d) is
//! `[version, [pattern…]]`, `InterestAck` (frame 0x24) is `[version]`. What the node does with
//! them (which messages it does not send) is the node's; this module only encodes, decodes and
//! matches.

use serde::Serialize;

use crate::cbor::{self, CborFault, exact_array};
use crate::topic::{Topic, TopicPattern};

/// Most patterns one interest may name, so that it always fits the smallest frame a link may
/// negotiate (64 KiB: 200 patterns of at most 256 bytes). A sender with more says `#` instead
/// ([`Interest::new`]): more is forwarded than needed, never less.
pub const MAX_PATTERNS: usize = 200;

/// A mesh's interest: every topic pattern it has subscribers for, from one partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interest {
    /// From 1, growing with each change within a link session.
    pub version: u64,
    patterns: Vec<TopicPattern>,
}

/// The answer to an [`Interest`]: the receiver applied this version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterestAck {
    /// The version applied.
    pub version: u64,
}

/// An interest or acknowledgement that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterestError {
    /// Not one CBOR value of its form (a pattern that breaks the topic rules included).
    #[error("{what} is not well-formed: {reason}")]
    Malformed {
        /// `interest` or `interest acknowledgement`.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Bytes follow the value.
    #[error("{what} is followed by {count} more bytes")]
    Trailing {
        /// `interest` or `interest acknowledgement`.
        what: &'static str,
        /// How many.
        count: usize,
    },
    /// Version 0 (versions start at 1).
    #[error("interest version 0 is not a version (they start at 1)")]
    VersionZero,
    /// More than [`MAX_PATTERNS`] patterns.
    #[error("interest names {0} patterns, at most {MAX_PATTERNS}")]
    TooMany(usize),
    /// The same pattern twice.
    #[error("interest names pattern {0} twice")]
    Duplicate(TopicPattern),
}

exact_array! {
    struct InterestIn(u64, Vec<TopicPattern>);
    struct AckIn(u64);
}

#[derive(Serialize)]
struct InterestOut<'a>(u64, &'a [TopicPattern]);

const INTEREST: &str = "interest";
const ACK: &str = "interest acknowledgement";

fn fault(what: &'static str) -> impl Fn(CborFault) -> InterestError {
    move |f| match f {
        CborFault::NotCbor(reason) => InterestError::Malformed { what, reason },
        CborFault::Trailing(count) => InterestError::Trailing { what, count },
    }
}

impl Interest {
    /// The interest of version `version` in `patterns`, in a canonical form: sorted, each once,
    /// `#` alone if any pattern is `#` or there are more than [`MAX_PATTERNS`].
    pub fn new(version: u64, patterns: impl IntoIterator<Item = TopicPattern>) -> Self {
        let mut patterns: Vec<TopicPattern> = patterns.into_iter().collect();
        patterns.sort();
        patterns.dedup();
        let all = TopicPattern::all();
        if patterns.len() > MAX_PATTERNS || patterns.contains(&all) {
            patterns = vec![all];
        }
        Self { version, patterns }
    }

    /// The patterns, sorted.
    pub fn patterns(&self) -> &[TopicPattern] {
        &self.patterns
    }

    /// Whether a message on `topic` has a subscriber on the sender's side.
    pub fn wants(&self, topic: &Topic) -> bool {
        self.patterns.iter().any(|p| p.matches(topic))
    }

    /// The wire form (the frame's body).
    pub fn encode(&self) -> Vec<u8> {
        let size = self
            .patterns
            .iter()
            .map(|p| p.as_str().len() + 3)
            .sum::<usize>()
            + 12;
        cbor::to_vec(&InterestOut(self.version, &self.patterns), size)
    }

    /// Reads an interest, refusing version 0, more than [`MAX_PATTERNS`] patterns, a pattern
    /// named twice and anything but exactly one value.
    pub fn decode(bytes: &[u8]) -> Result<Self, InterestError> {
        let InterestIn(version, mut patterns) = cbor::from_slice(bytes).map_err(fault(INTEREST))?;
        if version == 0 {
            return Err(InterestError::VersionZero);
        }
        if patterns.len() > MAX_PATTERNS {
            return Err(InterestError::TooMany(patterns.len()));
        }
        patterns.sort();
        if let Some(twice) = patterns.windows(2).find(|w| w[0] == w[1]) {
            return Err(InterestError::Duplicate(twice[0].clone()));
        }
        Ok(Self { version, patterns })
    }
}

impl InterestAck {
    /// The wire form (the frame's body).
    pub fn encode(&self) -> Vec<u8> {
        cbor::to_vec(&(self.version,), 12)
    }

    /// Reads an acknowledgement.
    pub fn decode(bytes: &[u8]) -> Result<Self, InterestError> {
        let AckIn(version) = cbor::from_slice(bytes).map_err(fault(ACK))?;
        if version == 0 {
            return Err(InterestError::VersionZero);
        }
        Ok(Self { version })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn p(s: &str) -> TopicPattern {
        s.parse().unwrap()
    }

    fn t(s: &str) -> Topic {
        s.parse().unwrap()
    }

    #[test]
    fn an_interest_round_trips_and_matches_its_patterns() {
        let interest = Interest::new(3, [p("sensors/#"), p("alarms/+/high")]);
        let again = Interest::decode(&interest.encode()).unwrap();
        assert_eq!(again, interest);
        assert!(again.wants(&t("sensors/x")));
        assert!(again.wants(&t("alarms/7/high")));
        assert!(!again.wants(&t("other/y")));
        assert!(!Interest::new(1, []).wants(&t("sensors/x")));
    }

    #[test]
    fn new_sorts_dedups_and_falls_back_to_everything() {
        let i = Interest::new(1, [p("b"), p("a"), p("b")]);
        assert_eq!(i.patterns(), &[p("a"), p("b")]);
        let i = Interest::new(1, [p("a"), p("#")]);
        assert_eq!(i.patterns(), &[TopicPattern::all()]);
        let many = (0..=MAX_PATTERNS).map(|n| p(&format!("t/{n}")));
        let i = Interest::new(1, many);
        assert_eq!(i.patterns(), &[TopicPattern::all()]);
        assert!(i.wants(&t("anything")));
    }

    #[test]
    fn the_largest_interest_fits_the_smallest_frame() {
        let long = |n: usize| p(&format!("{n:03}/{}", "x".repeat(252)));
        let i = Interest::new(u64::MAX, (0..MAX_PATTERNS).map(long));
        assert_eq!(i.patterns().len(), MAX_PATTERNS);
        assert!(i.encode().len() <= crate::frame::MIN_MAX_FRAME as usize);
    }

    #[test]
    fn bad_interests_are_refused_with_what_is_wrong() {
        let enc = |v: u64, ps: &[&str]| {
            let ps: Vec<String> = ps.iter().map(|s| (*s).to_owned()).collect();
            cbor::to_vec(&(v, ps), 64)
        };
        assert_eq!(
            Interest::decode(&enc(0, &["a"])),
            Err(InterestError::VersionZero)
        );
        assert_eq!(
            Interest::decode(&enc(1, &["a", "b", "a"])),
            Err(InterestError::Duplicate(p("a")))
        );
        let err = Interest::decode(&enc(1, &["a/#/b"]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("interest is not well-formed"), "{err}");
        assert!(err.contains("must stand alone"), "{err}");
        let names: Vec<String> = (0..=MAX_PATTERNS).map(|n| format!("t/{n}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            Interest::decode(&enc(1, &refs)),
            Err(InterestError::TooMany(MAX_PATTERNS + 1))
        );
        let mut trailing = Interest::new(1, [p("a")]).encode();
        trailing.push(0);
        assert_eq!(
            Interest::decode(&trailing),
            Err(InterestError::Trailing {
                what: INTEREST,
                count: 1
            })
        );
        // One item too many in the outer array.
        let three = cbor::to_vec(&(1u64, vec!["a"], 2u64), 16);
        let err = Interest::decode(&three).unwrap_err().to_string();
        assert!(err.contains("an array of 2 items"), "{err}");
    }

    #[test]
    fn an_ack_round_trips_and_refuses_version_zero() {
        let ack = InterestAck { version: 9 };
        assert_eq!(InterestAck::decode(&ack.encode()), Ok(ack));
        assert_eq!(
            InterestAck::decode(&cbor::to_vec(&(0u64,), 4)),
            Err(InterestError::VersionZero)
        );
        let err = InterestAck::decode(b"\xff").unwrap_err().to_string();
        assert!(
            err.starts_with("interest acknowledgement is not well-formed"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(i) = Interest::decode(&bytes) {
                prop_assert!(i.patterns().len() <= MAX_PATTERNS);
                prop_assert_eq!(Interest::decode(&i.encode()).unwrap(), i);
            }
            let _ = InterestAck::decode(&bytes);
        }
    }
}
