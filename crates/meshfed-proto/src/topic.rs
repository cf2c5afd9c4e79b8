//! Federation topics: the names messages are published under when they cross meshes.
//!
//! A topic is 1 to 256 bytes of printable UTF-8, made of non-empty segments separated by `/`
//! (`plant-a/line-3/temperature`). Wildcards belong to [`TopicPattern`], never to a topic.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest topic or pattern accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// A topic or pattern that broke its rule: names the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct InvalidTopic {
    kind: &'static str,
    value: String,
    rule: &'static str,
}

impl InvalidTopic {
    fn new(kind: &'static str, value: &str, rule: &'static str) -> Self {
        Self {
            kind,
            value: value.chars().take(80).collect(),
            rule,
        }
    }
}

/// Checks the rules shared by topics and patterns; `wild` allows `+` and `#` segments.
fn check(kind: &'static str, s: &str, wild: bool) -> Result<(), InvalidTopic> {
    if s.is_empty() || s.len() > MAX_TOPIC_LEN {
        return Err(InvalidTopic::new(kind, s, "must be 1 to 256 bytes long"));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(InvalidTopic::new(
            kind,
            s,
            "must not contain spaces or control characters",
        ));
    }
    let segments: Vec<&str> = s.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            return Err(InvalidTopic::new(
                kind,
                s,
                "segments between '/' must not be empty",
            ));
        }
        let has_wild = seg.contains(['+', '#', '*', '>']);
        if !has_wild {
            continue;
        }
        if !wild {
            return Err(InvalidTopic::new(
                kind,
                s,
                "must not contain the wildcards '+', '#', '*' or '>' (patterns may)",
            ));
        }
        let whole_plus = *seg == "+";
        let final_hash = *seg == "#" && i == last;
        if !whole_plus && !final_hash {
            return Err(InvalidTopic::new(
                kind,
                s,
                "'+' must stand alone as a segment and '#' only as the last segment",
            ));
        }
    }
    Ok(())
}

/// A concrete federation topic, e.g. `line-3/temperature`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topic(String);

impl Topic {
    /// The topic as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A subscription pattern: a topic whose segments may be `+` (exactly one segment) or, last,
/// `#` (any number of segments, including none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// The pattern that matches every topic.
    pub fn all() -> Self {
        Self("#".to_owned())
    }

    /// The pattern as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pattern matching exactly the topics both patterns match, if any.
    pub fn intersect(&self, other: &Self) -> Option<Self> {
        let a: Vec<&str> = self.0.split('/').collect();
        let b: Vec<&str> = other.0.split('/').collect();
        let mut out: Vec<&str> = Vec::with_capacity(a.len().max(b.len()));
        let mut i = 0;
        loop {
            match (a.get(i).copied(), b.get(i).copied()) {
                (Some("#"), _) => {
                    out.extend_from_slice(&b[i..]);
                    break;
                }
                (_, Some("#")) => {
                    out.extend_from_slice(&a[i..]);
                    break;
                }
                (None, None) => break,
                (Some("+"), Some(x)) | (Some(x), Some("+")) => out.push(x),
                (Some(x), Some(y)) if x == y => out.push(x),
                _ => return None,
            }
            i += 1;
        }
        // Invariant: joined segments of two valid patterns form a valid pattern.
        out.join("/").parse().ok()
    }

    /// Whether every topic this pattern matches is matched by `wider` too (a subscription
    /// within a scope).
    pub fn is_within(&self, wider: &Self) -> bool {
        // The intersection is exact, so it equals this pattern only if this one lies within.
        self.intersect(wider).is_some_and(|i| i == *self)
    }

    /// Whether `topic` matches this pattern.
    pub fn matches(&self, topic: &Topic) -> bool {
        let mut want = self.0.split('/');
        let mut have = topic.0.split('/');
        loop {
            match (want.next(), have.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(w), Some(h)) if w == h => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

macro_rules! topic_impls {
    ($name:ident, $kind:literal, $wild:literal) => {
        impl FromStr for $name {
            type Err = InvalidTopic;
            fn from_str(s: &str) -> Result<Self, InvalidTopic> {
                check($kind, s, $wild)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidTopic;
            fn try_from(s: String) -> Result<Self, InvalidTopic> {
                check($kind, &s, $wild)?;
                Ok(Self(s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

topic_impls!(Topic, "topic", false);
topic_impls!(TopicPattern, "topic pattern", true);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_within_another_only_when_every_topic_it_matches_is_matched_there() {
        let p = |s: &str| s.parse::<TopicPattern>().unwrap();
        for (narrow, wide) in [
            ("orders/1", "orders/#"),
            ("orders/+", "orders/#"),
            ("orders/#", "orders/#"),
            ("orders", "orders/#"),
            ("orders/+/x", "orders/+/+"),
            ("a/b", "#"),
        ] {
            assert!(p(narrow).is_within(&p(wide)), "{narrow} within {wide}");
        }
        for (wide, narrow) in [
            ("#", "orders/#"),
            ("orders/#", "orders/+"),
            ("+/x", "orders/x"),
            ("invoices/1", "orders/#"),
            ("orders/+/+", "orders/+/x"),
        ] {
            assert!(!p(wide).is_within(&p(narrow)), "{wide} not within {narrow}");
        }
    }

    fn topic(s: &str) -> Topic {
        s.parse().unwrap()
    }

    #[test]
    fn topic_rejects_wildcards_and_empty_segments() {
        for bad in [
            "",
            "a//b",
            "/a",
            "a/",
            "a/+",
            "a/#",
            "a b",
            "a/*",
            &"x".repeat(257),
        ] {
            assert!(bad.parse::<Topic>().is_err(), "{bad:?} accepted");
        }
        let err = "line/+".parse::<Topic>().unwrap_err().to_string();
        assert!(err.contains("wildcards"), "{err}");
    }

    #[test]
    fn pattern_plus_matches_one_segment_and_hash_the_rest() {
        let p: TopicPattern = "line/+/temp".parse().unwrap();
        assert!(p.matches(&topic("line/3/temp")));
        assert!(!p.matches(&topic("line/3/4/temp")));
        assert!(!p.matches(&topic("line/temp")));
        let p: TopicPattern = "line/#".parse().unwrap();
        assert!(p.matches(&topic("line")));
        assert!(p.matches(&topic("line/3/temp")));
        assert!(!p.matches(&topic("lines/3")));
        assert!(TopicPattern::all().matches(&topic("anything/at/all")));
    }

    #[test]
    fn intersection_keeps_exactly_the_common_topics() {
        let p = |s: &str| s.parse::<TopicPattern>().unwrap();
        assert_eq!(p("a/+/c").intersect(&p("a/b/+")), Some(p("a/b/c")));
        assert_eq!(p("a/#").intersect(&p("+/b")), Some(p("a/b")));
        assert_eq!(p("#").intersect(&p("x/+")), Some(p("x/+")));
        assert_eq!(p("a/b").intersect(&p("a/c")), None);
        assert_eq!(p("a/b").intersect(&p("a/b/c")), None);
        assert_eq!(p("a/#").intersect(&p("a")), Some(p("a")));
    }

    #[test]
    fn pattern_rejects_misplaced_wildcards() {
        for bad in ["a/#/b", "a+/b", "#a", "a/b#"] {
            let err = bad.parse::<TopicPattern>().unwrap_err().to_string();
            assert!(err.contains("must stand alone"), "{bad}: {err}");
        }
    }
}
