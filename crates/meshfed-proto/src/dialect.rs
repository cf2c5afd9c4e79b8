//! Dialect translation between a mesh's own bus and federation topics (DESIGN §3.11).
//!
//! A mesh's bus names messages in its own dialect: MQTT topics (`plant/line-3/temp`, filters
//! with `+` for one level and a final `#` for any number, including none) or NATS subjects
//! (`plant.line-3.temp`, patterns with `*` for one token and a final `>` for one or more).
//! Federation topics are written like MQTT's ([`crate::topic`]).
//!
//! A [`Mapping`] pairs a pattern of the bus with a federation pattern holding *the same
//! wildcards in the same order*: what each wildcard matched on one side takes its place on the
//! other. `plant/+/temperature` ↔ `readings/+/temperature` maps `plant/line-3/temperature` to
//! `readings/line-3/temperature` and back; `plant.>` ↔ `site-a/#` maps `plant.line-3.temp` to
//! `site-a/line-3/temp`.
//!
//! A name that cannot be written in the other dialect is refused, naming why ([`Unmappable`]):
//! an MQTT level that is empty (`a//b`) or a NATS token holding `/`, which would split into two
//! federation segments; a federation segment holding `.`, which would split into two NATS
//! tokens; anything holding a wildcard character.

use std::fmt;

use crate::topic::{Topic, TopicPattern};

/// How a bus names messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// MQTT 3.1.1 and 5: `/` between levels, `+` and `#` in filters.
    Mqtt,
    /// NATS: `.` between tokens, `*` and `>` in subjects a subscription takes.
    Nats,
}

impl Dialect {
    fn separator(self) -> char {
        match self {
            Self::Mqtt => '/',
            Self::Nats => '.',
        }
    }

    fn one(self) -> &'static str {
        match self {
            Self::Mqtt => "+",
            Self::Nats => "*",
        }
    }

    fn rest(self) -> &'static str {
        match self {
            Self::Mqtt => "#",
            Self::Nats => ">",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mqtt => "MQTT",
            Self::Nats => "NATS",
        })
    }
}

/// Longest name accepted on a bus, in bytes (MQTT allows 65,535; the federation 256).
const MAX_LOCAL_LEN: usize = 1024;

/// One segment of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// Exactly one segment.
    One,
    /// The remaining segments: any number on the federation side and in MQTT, at least one in
    /// NATS.
    Rest,
}

/// A pattern of a bus, in its dialect, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPattern {
    dialect: Dialect,
    text: String,
    segments: Vec<Segment>,
}

/// A pattern that breaks its dialect's rules, or a pair of patterns that cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidMapping(String);

impl LocalPattern {
    /// Parses `text` as a pattern of `dialect`.
    pub fn parse(dialect: Dialect, text: &str) -> Result<Self, InvalidMapping> {
        let bad = |rule: &str| InvalidMapping(format!("{dialect} pattern {text:?} {rule}"));
        if text.is_empty() || text.len() > MAX_LOCAL_LEN {
            return Err(bad(&format!("must be 1 to {MAX_LOCAL_LEN} bytes long")));
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("must not contain spaces or control characters"));
        }
        let parts: Vec<&str> = text.split(dialect.separator()).collect();
        let last = parts.len() - 1;
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = if *part == dialect.one() {
                Segment::One
            } else if *part == dialect.rest() {
                if i != last {
                    return Err(bad(&format!(
                        "may hold {:?} only as its last {}",
                        dialect.rest(),
                        level(dialect)
                    )));
                }
                Segment::Rest
            } else if part.contains(['+', '#', '*', '>']) {
                return Err(bad(&format!(
                    "holds a wildcard character inside {part:?}: wildcards stand alone as a {}",
                    level(dialect)
                )));
            } else if part.is_empty() {
                return Err(bad(&format!("has an empty {}", level(dialect))));
            } else {
                Segment::Literal((*part).to_owned())
            };
            segments.push(segment);
        }
        Ok(Self {
            dialect,
            text: text.to_owned(),
            segments,
        })
    }

    /// The pattern as written, which is what a subscription on the bus takes.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Whether the pattern has no wildcard: it names one subject or topic.
    pub fn is_exact(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }
}

impl fmt::Display for LocalPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn level(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Mqtt => "level",
        Dialect::Nats => "token",
    }
}

/// Why one name could not be carried to the other side of a [`Mapping`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} cannot be written in {to}: {reason}")]
pub struct Unmappable {
    name: String,
    to: &'static str,
    reason: String,
}

/// A pattern of a bus and a federation pattern with the same wildcards in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    local: LocalPattern,
    federation: TopicPattern,
    federation_segments: Vec<Segment>,
}

/// What the wildcards of a pattern matched.
enum Captured<'a> {
    One(&'a str),
    Rest(Vec<&'a str>),
}

impl Mapping {
    /// Pairs `local` with `federation`; refused unless both hold the same wildcards in the
    /// same order.
    pub fn new(local: LocalPattern, federation: TopicPattern) -> Result<Self, InvalidMapping> {
        let federation_segments: Vec<Segment> = federation
            .as_str()
            .split('/')
            .map(|s| match s {
                "+" => Segment::One,
                "#" => Segment::Rest,
                s => Segment::Literal(s.to_owned()),
            })
            .collect();
        let wild = |segments: &[Segment]| -> Vec<&'static str> {
            segments
                .iter()
                .filter_map(|s| match s {
                    Segment::One => Some("one"),
                    Segment::Rest => Some("rest"),
                    Segment::Literal(_) => None,
                })
                .collect()
        };
        if wild(&local.segments) != wild(&federation_segments) {
            let d = local.dialect;
            return Err(InvalidMapping(format!(
                "{d} pattern {:?} and federation pattern {:?} must hold the same wildcards in \
                 the same order ({} ↔ +, {} ↔ #), so that each name maps to exactly one on the \
                 other side",
                local.text,
                federation.as_str(),
                d.one(),
                d.rest()
            )));
        }
        Ok(Self {
            local,
            federation,
            federation_segments,
        })
    }

    /// The bus side.
    pub fn local(&self) -> &LocalPattern {
        &self.local
    }

    /// The federation side.
    pub fn federation(&self) -> &TopicPattern {
        &self.federation
    }

    /// The federation topic of `name`, a name on the bus; `Ok(None)` when the bus pattern
    /// does not match it.
    pub fn to_federation(&self, name: &str) -> Result<Option<Topic>, Unmappable> {
        let dialect = self.local.dialect;
        let parts: Vec<&str> = name.split(dialect.separator()).collect();
        let Some(captured) = capture(&self.local.segments, &parts, dialect == Dialect::Nats) else {
            return Ok(None);
        };
        let unmappable = |reason: String| Unmappable {
            name: name.to_owned(),
            to: "a federation topic",
            reason,
        };
        for part in &parts {
            if part.is_empty() {
                return Err(unmappable(format!(
                    "it has an empty {}, and federation topics have none",
                    level(dialect)
                )));
            }
            if dialect == Dialect::Nats && part.contains('/') {
                return Err(unmappable(format!(
                    "its token {part:?} holds '/', which separates federation segments"
                )));
            }
        }
        let out = substitute(&self.federation_segments, &captured, "/");
        out.parse::<Topic>()
            .map(Some)
            .map_err(|e| unmappable(e.to_string()))
    }

    /// The name on the bus of federation topic `topic`; `Ok(None)` when the federation
    /// pattern does not match it.
    pub fn to_local(&self, topic: &Topic) -> Result<Option<String>, Unmappable> {
        let dialect = self.local.dialect;
        let parts: Vec<&str> = topic.as_str().split('/').collect();
        let Some(captured) = capture(&self.federation_segments, &parts, false) else {
            return Ok(None);
        };
        let unmappable = |reason: String| Unmappable {
            name: topic.to_string(),
            to: match dialect {
                Dialect::Mqtt => "an MQTT topic",
                Dialect::Nats => "a NATS subject",
            },
            reason,
        };
        if dialect == Dialect::Nats
            && let Some(part) = parts.iter().find(|p| p.contains('.'))
        {
            return Err(unmappable(format!(
                "its segment {part:?} holds '.', which separates NATS tokens"
            )));
        }
        let sep = dialect.separator().to_string();
        let out = substitute(&self.local.segments, &captured, &sep);
        if out.is_empty() {
            return Err(unmappable("it maps to an empty name".to_owned()));
        }
        Ok(Some(out))
    }
}

/// What the wildcards of `pattern` matched in `parts`, in order; `None` if it does not match.
/// With `rest_needs_one`, a final rest wildcard matches one part at least (NATS's `>`).
fn capture<'a>(
    pattern: &[Segment],
    parts: &[&'a str],
    rest_needs_one: bool,
) -> Option<Vec<Captured<'a>>> {
    let mut out = Vec::new();
    for (i, segment) in pattern.iter().enumerate() {
        match segment {
            Segment::Rest => {
                let rest = parts.get(i..).unwrap_or_default();
                if rest_needs_one && rest.is_empty() {
                    return None;
                }
                out.push(Captured::Rest(rest.to_vec()));
                return Some(out);
            }
            Segment::One => out.push(Captured::One(parts.get(i)?)),
            Segment::Literal(l) => {
                if parts.get(i) != Some(&l.as_str()) {
                    return None;
                }
            }
        }
    }
    (parts.len() == pattern.len()).then_some(out)
}

/// `pattern` with its wildcards replaced by what was `captured`, joined by `sep`.
fn substitute(pattern: &[Segment], captured: &[Captured<'_>], sep: &str) -> String {
    let mut values = captured.iter();
    let mut out: Vec<&str> = Vec::with_capacity(pattern.len());
    for segment in pattern {
        match segment {
            Segment::Literal(l) => out.push(l),
            // Invariant: `Mapping::new` checked both sides hold the same wildcards in the
            // same order, so each wildcard has its captured value.
            Segment::One | Segment::Rest => match values.next() {
                Some(Captured::One(v)) => out.push(v),
                Some(Captured::Rest(vs)) => out.extend(vs.iter().copied()),
                None => {}
            },
        }
    }
    out.join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(dialect: Dialect, local: &str, federation: &str) -> Mapping {
        Mapping::new(
            LocalPattern::parse(dialect, local).unwrap(),
            federation.parse().unwrap(),
        )
        .unwrap()
    }

    fn topic(s: &str) -> Topic {
        s.parse().unwrap()
    }

    #[test]
    fn mqtt_wildcards_carry_their_levels_both_ways() {
        let m = mapping(Dialect::Mqtt, "plant/+/temperature", "readings/+/temp");
        assert_eq!(
            m.to_federation("plant/line-3/temperature").unwrap(),
            Some(topic("readings/line-3/temp"))
        );
        assert_eq!(m.to_federation("plant/line-3/pressure").unwrap(), None);
        assert_eq!(m.to_federation("plant/a/b/temperature").unwrap(), None);
        assert_eq!(
            m.to_local(&topic("readings/l7/temp")).unwrap().as_deref(),
            Some("plant/l7/temperature")
        );
        let m = mapping(Dialect::Mqtt, "site/#", "plant-a/#");
        assert_eq!(
            m.to_federation("site/a/b/c").unwrap(),
            Some(topic("plant-a/a/b/c"))
        );
        assert_eq!(m.to_federation("site").unwrap(), Some(topic("plant-a")));
        assert_eq!(
            m.to_local(&topic("plant-a/x")).unwrap().as_deref(),
            Some("site/x")
        );
    }

    #[test]
    fn nats_tokens_become_segments_and_back() {
        let m = mapping(Dialect::Nats, "orders.*.>", "orders/+/#");
        assert_eq!(
            m.to_federation("orders.eu.7.new").unwrap(),
            Some(topic("orders/eu/7/new"))
        );
        // `>` takes one token at least.
        assert_eq!(m.to_federation("orders.eu").unwrap(), None);
        assert_eq!(
            m.to_local(&topic("orders/us/1")).unwrap().as_deref(),
            Some("orders.us.1")
        );
        let exact = mapping(Dialect::Nats, "a.b", "x/y/z");
        assert_eq!(exact.to_federation("a.b").unwrap(), Some(topic("x/y/z")));
        assert_eq!(
            exact.to_local(&topic("x/y/z")).unwrap().as_deref(),
            Some("a.b")
        );
    }

    #[test]
    fn names_the_other_dialect_cannot_hold_are_refused_with_the_reason() {
        let m = mapping(Dialect::Mqtt, "a/#", "b/#");
        let e = m.to_federation("a//c").unwrap_err().to_string();
        assert!(e.contains("empty level"), "{e}");
        let n = mapping(Dialect::Nats, "a.>", "b/#");
        let e = n.to_federation("a.x/y").unwrap_err().to_string();
        assert!(e.contains("holds '/'"), "{e}");
        let e = n.to_local(&topic("b/v1.2")).unwrap_err().to_string();
        assert!(e.contains("holds '.'") && e.contains("NATS subject"), "{e}");
        let e = m.to_federation("a/x*").unwrap_err().to_string();
        assert!(e.contains("wildcards"), "{e}");
    }

    #[test]
    fn patterns_must_pair_their_wildcards() {
        let local = LocalPattern::parse(Dialect::Mqtt, "a/+/#").unwrap();
        let e = Mapping::new(local, "b/#".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("same wildcards in the same order"), "{e}");
        for (d, bad, why) in [
            (Dialect::Mqtt, "a/#/b", "only as its last level"),
            (Dialect::Nats, "a.>.b", "only as its last token"),
            (Dialect::Nats, "a..b", "empty token"),
            (Dialect::Mqtt, "a/b+", "wildcard character"),
            (Dialect::Nats, "a b", "spaces"),
        ] {
            let e = LocalPattern::parse(d, bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_mapped_name_maps_back_to_itself(
            levels in proptest::collection::vec("[a-z0-9-]{1,8}", 1..6),
            nats in proptest::bool::ANY,
        ) {
            let (dialect, local, sep) = if nats {
                (Dialect::Nats, "in.*.>", ".")
            } else {
                (Dialect::Mqtt, "in/+/#", "/")
            };
            let m = mapping(dialect, local, "out/+/#");
            let name = format!("in{sep}{}", levels.join(sep));
            let fed = m.to_federation(&name).unwrap();
            if nats && levels.len() < 2 {
                proptest::prop_assert_eq!(fed, None);
            } else {
                let fed = fed.unwrap();
                proptest::prop_assert_eq!(m.to_local(&fed).unwrap(), Some(name));
            }
        }
    }
}
