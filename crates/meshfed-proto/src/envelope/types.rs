//! The envelope's value types, each parsed once into a form that cannot be wrong.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value outside its field's rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value}: {rule}")]
pub struct InvalidValue {
    /// The field (`priority`, `qos`, ...).
    pub field: &'static str,
    /// The rejected value as text.
    pub value: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

impl InvalidValue {
    pub(crate) fn new(field: &'static str, value: impl fmt::Display, rule: &'static str) -> Self {
        let value: String = value.to_string().chars().take(80).collect();
        Self { field, value, rule }
    }
}

/// An envelope's identifier: 128 bits, time-ordered (48-bit millisecond timestamp, then 80
/// random bits), shown as `fed_` and 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvelopeId(pub [u8; 16]);

impl EnvelopeId {
    /// A new id for an envelope made at `now`, with 80 bits from `random`.
    pub fn new(now: Timestamp, random: [u8; 10]) -> Self {
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&now.0.to_be_bytes()[2..]);
        id[6..].copy_from_slice(&random);
        Self(id)
    }
}

impl fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fed_{}", hex::encode(self.0))
    }
}

impl fmt::Debug for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for EnvelopeId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        const RULE: &str = "must be fed_ followed by 32 lowercase hex digits";
        let hex_part = s
            .strip_prefix("fed_")
            .ok_or_else(|| InvalidValue::new("envelope id", s, RULE))?;
        if hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(InvalidValue::new("envelope id", s, RULE));
        }
        let mut id = [0u8; 16];
        hex::decode_to_slice(hex_part, &mut id)
            .map_err(|_| InvalidValue::new("envelope id", s, RULE))?;
        Ok(Self(id))
    }
}

/// Milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This timestamp plus `d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }
}

/// The envelope format's version; this implementation speaks 1.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Incompatible changes.
    pub major: u8,
    /// Compatible additions.
    pub minor: u8,
}

impl Version {
    /// The version this implementation writes.
    pub const CURRENT: Self = Self { major: 1, minor: 0 };
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for Version {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let bad = || InvalidValue::new("version", s, "must be MAJOR.MINOR with major 1");
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        let major: u8 = major.parse().map_err(|_| bad())?;
        let minor: u8 = minor.parse().map_err(|_| bad())?;
        if major != 1 {
            return Err(bad());
        }
        Ok(Self { major, minor })
    }
}

/// Message priority, 0 (lowest) to 7 (highest). Higher priority overtakes queued lower priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Priority(u8);

impl Priority {
    /// The highest priority.
    pub const MAX: Self = Self(7);

    /// The priority as a number 0–7.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Priority {
    type Error = InvalidValue;
    fn try_from(v: u8) -> Result<Self, InvalidValue> {
        if v > 7 {
            return Err(InvalidValue::new("priority", v, "must be 0 to 7"));
        }
        Ok(Self(v))
    }
}

/// Delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Qos {
    /// 0: at most once.
    #[default]
    AtMostOnce,
    /// 1: at least once: persisted before acknowledgement, retransmitted until acknowledged.
    AtLeastOnce,
    /// 2: exactly once: at least once plus a persistent dedup window at the destination.
    ExactlyOnce,
}

impl Qos {
    /// The spec's number for this level.
    pub fn level(self) -> u8 {
        match self {
            Self::AtMostOnce => 0,
            Self::AtLeastOnce => 1,
            Self::ExactlyOnce => 2,
        }
    }
}

impl TryFrom<u8> for Qos {
    type Error = InvalidValue;
    fn try_from(v: u8) -> Result<Self, InvalidValue> {
        match v {
            0 => Ok(Self::AtMostOnce),
            1 => Ok(Self::AtLeastOnce),
            2 => Ok(Self::ExactlyOnce),
            _ => Err(InvalidValue::new("qos", v, "must be 0, 1 or 2")),
        }
    }
}

/// A delivery deadline relative to the envelope's timestamp; at least 1 ms, at most ~49 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaxLatency(u32);

impl MaxLatency {
    /// The deadline as a duration.
    pub fn duration(self) -> Duration {
        Duration::from_millis(u64::from(self.0))
    }

    /// The deadline in whole milliseconds.
    pub fn millis(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for MaxLatency {
    type Error = InvalidValue;
    fn try_from(ms: u32) -> Result<Self, InvalidValue> {
        if ms == 0 {
            return Err(InvalidValue::new(
                "max_latency",
                ms,
                "must be at least 1 ms",
            ));
        }
        Ok(Self(ms))
    }
}

impl TryFrom<Duration> for MaxLatency {
    type Error = InvalidValue;
    fn try_from(d: Duration) -> Result<Self, InvalidValue> {
        let ms = u32::try_from(d.as_millis()).map_err(|_| {
            InvalidValue::new("max_latency", format!("{d:?}"), "must be under 49 days")
        })?;
        Self::try_from(ms)
    }
}

/// Delivery flags carried in `routing.flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// `reliable`: delivered at least once (qos ≥ 1).
    pub const RELIABLE: Self = Self(1);
    /// `ordered`: delivered in order per (source mesh, destination mesh, topic).
    pub const ORDERED: Self = Self(2);
    /// `identified`: the sealed part begins with the sender's identity, as its gateway
    /// verified it ([`super::Sender`]); set by the sending gateway, never by a client.
    pub const IDENTIFIED: Self = Self(4);
    /// `transit`: the sealed part begins with what a trusted intermediary presents for a
    /// message it relays on another mesh's behalf ([`super::Transit`]); set by the relaying
    /// gateway, never by a client.
    pub const TRANSIT: Self = Self(8);
    /// `properties`: the sealed part holds the message's properties (user properties,
    /// correlation data, reply-to) after the sender's identity ([`super::Properties`]); set by
    /// the sending gateway for properties that are not empty, never by a client.
    pub const PROPERTIES: Self = Self(16);
    const NAMES: [(&'static str, Self); 5] = [
        ("reliable", Self::RELIABLE),
        ("ordered", Self::ORDERED),
        ("identified", Self::IDENTIFIED),
        ("transit", Self::TRANSIT),
        ("properties", Self::PROPERTIES),
    ];

    /// No flags.
    pub fn empty() -> Self {
        Self(0)
    }

    /// Whether every flag of `other` is set here.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// These flags plus `other`.
    pub fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// These flags without `other`.
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// The flags as bits (wire form).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Flags from bits, refusing unknown ones.
    pub fn from_bits(bits: u8) -> Result<Self, InvalidValue> {
        if bits & !31 != 0 {
            return Err(InvalidValue::new(
                "flags",
                bits,
                "only bits 0 (reliable), 1 (ordered), 2 (identified), 3 (transit) and 4 \
                 (properties) are defined",
            ));
        }
        Ok(Self(bits))
    }

    /// The set flags' names, in a fixed order.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(_, f)| self.contains(*f))
            .map(|(n, _)| *n)
            .collect()
    }

    /// Parses one flag name.
    pub fn from_name(name: &str) -> Result<Self, InvalidValue> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                InvalidValue::new(
                    "flag",
                    name,
                    "must be \"reliable\", \"ordered\", \"identified\", \"transit\" or \
                     \"properties\"",
                )
            })
    }
}

/// A media type such as `application/json`: `type/subtype`, optionally with parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContentType(String);

impl ContentType {
    /// `application/octet-stream`, for payloads of unknown type.
    pub fn octet_stream() -> Self {
        Self("application/octet-stream".to_owned())
    }

    /// `application/json`.
    pub fn json() -> Self {
        Self("application/json".to_owned())
    }

    /// The media type as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The media type without parameters, lowercased: `application/json`.
    pub fn essence(&self) -> String {
        self.0
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// Whether the payload is JSON (`application/json` or a `+json` type).
    pub fn is_json(&self) -> bool {
        let e = self.essence();
        e == "application/json" || e.ends_with("+json")
    }

    /// Whether the payload is text (`text/*`).
    pub fn is_text(&self) -> bool {
        self.essence().starts_with("text/")
    }
}

impl FromStr for ContentType {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
        };
        let essence = s.split(';').next().unwrap_or_default();
        let ok = s.len() <= 128
            && s.is_ascii()
            && !s.bytes().any(|b| b.is_ascii_control())
            && essence
                .split_once('/')
                .is_some_and(|(t, st)| token(t) && token(st.trim_end()));
        if !ok {
            return Err(InvalidValue::new(
                "content_type",
                s,
                "must be a media type type/subtype (at most 128 ASCII characters)",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

/// A short label such as a content encoding or a schema id: 1–128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label(String);

impl Label {
    /// Parses `s` as the label of `field`.
    pub fn parse(field: &'static str, s: &str) -> Result<Self, InvalidValue> {
        let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(InvalidValue::new(
                field,
                s,
                "must be 1 to 128 printable ASCII characters without spaces",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The label as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_via_str!(EnvelopeId);
serde_via_str!(Version);

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
serde_via_str!(ContentType);

macro_rules! serde_via_u {
    ($t:ty, $u:ty, $get:expr) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let get: fn(&$t) -> $u = $get;
                get(self).serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$t>::try_from(<$u>::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_via_u!(Priority, u8, |p| p.0);
serde_via_u!(Qos, u8, |q| q.level());
serde_via_u!(MaxLatency, u32, |m| m.0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_id_is_time_ordered_and_round_trips() {
        let a = EnvelopeId::new(Timestamp(1_000), [0xff; 10]);
        let b = EnvelopeId::new(Timestamp(1_001), [0; 10]);
        assert!(a < b);
        assert_eq!(a.to_string().parse::<EnvelopeId>().unwrap(), a);
        assert!("fed_1234".parse::<EnvelopeId>().is_err());
        assert!(
            "msg_00000000000000000000000000000000"
                .parse::<EnvelopeId>()
                .is_err()
        );
    }

    #[test]
    fn bounded_numbers_reject_out_of_range_with_the_rule() {
        assert_eq!(
            Priority::try_from(8).unwrap_err().to_string(),
            "priority 8: must be 0 to 7"
        );
        assert_eq!(
            Qos::try_from(3).unwrap_err().to_string(),
            "qos 3: must be 0, 1 or 2"
        );
        assert!(MaxLatency::try_from(0u32).is_err());
        assert_eq!(
            MaxLatency::try_from(Duration::from_secs(5))
                .unwrap()
                .millis(),
            5000
        );
    }

    #[test]
    fn flags_parse_by_name_and_refuse_unknown_bits() {
        let f = Flags::from_name("reliable")
            .unwrap()
            .with(Flags::from_name("ordered").unwrap());
        assert_eq!(f.names(), ["reliable", "ordered"]);
        assert_eq!(
            Flags::from_bits(4).unwrap().names(),
            ["identified"],
            "bit 2 is the sender's identity"
        );
        assert_eq!(Flags::from_bits(8).unwrap().names(), ["transit"]);
        assert_eq!(Flags::from_bits(16).unwrap().names(), ["properties"]);
        assert_eq!(
            Flags::from_bits(32).unwrap_err().to_string(),
            "flags 32: only bits 0 (reliable), 1 (ordered), 2 (identified), 3 (transit) and 4 \
             (properties) are defined"
        );
        assert!(
            Flags::from_name("urgent")
                .unwrap_err()
                .to_string()
                .contains("urgent")
        );
    }

    #[test]
    fn content_type_classifies_json_and_text() {
        let ct: ContentType = "application/vnd.acme+json; charset=utf-8".parse().unwrap();
        assert!(ct.is_json());
        assert!("text/plain".parse::<ContentType>().unwrap().is_text());
        assert!("json".parse::<ContentType>().is_err());
        assert!("text/plain\n".parse::<ContentType>().is_err());
    }

    #[test]
    fn version_accepts_one_dot_x_only() {
        assert_eq!("1.0".parse::<Version>().unwrap(), Version::CURRENT);
        assert!("2.0".parse::<Version>().is_err());
        assert!("1".parse::<Version>().is_err());
    }
}
