//! Message properties in the sealed part of an envelope: what a local bus attaches to a message
//! beside its payload — MQTT 5 user properties and correlation data, NATS headers, the topic a
//! reply is expected on — carried end to end and, like the sender's identity ([`super::Sender`]),
//! out of sight of the relays in between.
//!
//! The header's `properties` flag ([`Flags::PROPERTIES`]) says they are there. The sealed part
//! is then `[transit part][identity][u16 length, big-endian][CBOR properties]` followed by the
//! payload: the properties come after the sender's identity (when the envelope is
//! `identified`) and right before the payload. An envelope without the flag carries none, and
//! decodes as envelopes did before properties existed. A sending gateway sets the flag only for
//! properties that are not empty.
//!
//! The CBOR is a map with short keys, each left out when empty: `"u"`: the user properties,
//! an array of `[name, value]` text pairs in order (names may repeat: MQTT 5 user properties
//! and NATS headers both allow it); `"c"`: the correlation data, a byte string; `"r"`: the
//! reply-to topic, text. Keys this version does not know are skipped, so that a later minor
//! version may add some.
//!
//! Every reader parses them into valid [`Properties`] or refuses them, naming what is wrong.
//! The bounds (each a constant of [`Properties`]):
//!
//! | what                    | bound                                                       |
//! |-------------------------|-------------------------------------------------------------|
//! | user properties         | at most 64 pairs                                            |
//! | a name                  | 1 to 256 bytes of UTF-8, no control characters              |
//! | a value                 | 0 to 4096 bytes of UTF-8, no control characters but tab    |
//! | correlation data        | 1 to 256 bytes (leave it out rather than send it empty)     |
//! | reply-to                | a federation [`Topic`]                                      |
//! | the whole, encoded      | at most 16 KiB of CBOR                                      |
//!
//! The agreed message size counts the properties with the payload (not the identity): both the
//! sending and the receiving gateway admit `payload + properties` against it.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{EnvelopeError, Flags};
use crate::topic::{InvalidTopic, Topic};

/// The properties of a message: user properties, correlation data, where a reply is expected.
/// Valid by construction ([`Properties::new`]); the empty value (the default) is no properties.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Properties {
    user: Vec<(String, String)>,
    correlation: Option<Vec<u8>>,
    reply_to: Option<Topic>,
}

/// Why properties were refused: the first rule broken, naming the property.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertiesError {
    /// More user properties than [`Properties::MAX_USER`].
    #[error(
        "user: {count} user properties, at most {} are allowed",
        Properties::MAX_USER
    )]
    TooMany {
        /// How many there are.
        count: usize,
    },
    /// A user property's name is empty.
    #[error("user[{index}]: the name is empty")]
    EmptyName {
        /// The property's position (from 0).
        index: usize,
    },
    /// A user property's name is longer than [`Properties::MAX_NAME`].
    #[error(
        "user[{index}] {name:?}: the name is {len} bytes, at most {} are allowed",
        Properties::MAX_NAME
    )]
    LongName {
        /// The property's position (from 0).
        index: usize,
        /// Its name, cut to 80 characters.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A user property's value is longer than [`Properties::MAX_VALUE`].
    #[error(
        "user[{index}] {name:?}: the value is {len} bytes, at most {} are allowed",
        Properties::MAX_VALUE
    )]
    LongValue {
        /// The property's position (from 0).
        index: usize,
        /// Its name, cut to 80 characters.
        name: String,
        /// The value's length in bytes.
        len: usize,
    },
    /// A user property's name or value holds a character it may not.
    #[error("user[{index}] {name:?}: the {part} holds a control character ({found:?})")]
    ControlCharacter {
        /// The property's position (from 0).
        index: usize,
        /// Its name, cut to 80 characters.
        name: String,
        /// `name` or `value`.
        part: &'static str,
        /// The character.
        found: char,
    },
    /// The correlation data is empty.
    #[error("correlation_data: is empty (leave it out instead)")]
    EmptyCorrelation,
    /// The correlation data is longer than [`Properties::MAX_CORRELATION`].
    #[error(
        "correlation_data: is {len} bytes, at most {} are allowed",
        Properties::MAX_CORRELATION
    )]
    LongCorrelation {
        /// Its length in bytes.
        len: usize,
    },
    /// The reply-to topic is not a topic.
    #[error("reply_to: {0}")]
    ReplyTo(#[from] InvalidTopic),
    /// Every part is within its bound, but together they encode to more than
    /// [`Properties::MAX_ENCODED`].
    #[error(
        "the properties encode to {len} bytes, at most {} are allowed",
        Properties::MAX_ENCODED
    )]
    TooLarge {
        /// The encoded length.
        len: usize,
    },
}

/// The properties as read: a map of short keys, each absent when empty.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    u: Vec<(String, String)>,
    #[serde(default)]
    c: Option<ByteBuf>,
    #[serde(default)]
    r: Option<String>,
}

fn invalid(reason: impl std::fmt::Display) -> EnvelopeError {
    EnvelopeError::InvalidField {
        field: "properties",
        reason: reason.to_string(),
    }
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

impl Properties {
    /// Most user properties.
    pub const MAX_USER: usize = 64;
    /// Longest user property name, in bytes.
    pub const MAX_NAME: usize = 256;
    /// Longest user property value, in bytes.
    pub const MAX_VALUE: usize = 4096;
    /// Longest correlation data, in bytes.
    pub const MAX_CORRELATION: usize = 256;
    /// Longest encoding of the whole (the CBOR, without its length prefix), in bytes.
    pub const MAX_ENCODED: usize = 16 * 1024;

    /// Properties of these parts, each checked against its bound (see the module doc): the
    /// error names the first part that is wrong.
    pub fn new(
        user: Vec<(String, String)>,
        correlation: Option<Vec<u8>>,
        reply_to: Option<Topic>,
    ) -> Result<Self, PropertiesError> {
        if user.len() > Self::MAX_USER {
            return Err(PropertiesError::TooMany { count: user.len() });
        }
        for (index, (name, value)) in user.iter().enumerate() {
            check_pair(index, name, value)?;
        }
        match correlation.as_ref().map(Vec::len) {
            Some(0) => return Err(PropertiesError::EmptyCorrelation),
            Some(len) if len > Self::MAX_CORRELATION => {
                return Err(PropertiesError::LongCorrelation { len });
            }
            _ => {}
        }
        let properties = Self {
            user,
            correlation,
            reply_to,
        };
        let len = properties.encode().len();
        if len > Self::MAX_ENCODED {
            return Err(PropertiesError::TooLarge { len });
        }
        Ok(properties)
    }

    /// The user properties, `(name, value)`, in order; a name may repeat.
    pub fn user(&self) -> &[(String, String)] {
        &self.user
    }

    /// The correlation data (MQTT 5's), if any: opaque bytes the requester matches replies by.
    pub fn correlation(&self) -> Option<&[u8]> {
        self.correlation.as_deref()
    }

    /// The federation topic a reply is expected on, if any.
    pub fn reply_to(&self) -> Option<&Topic> {
        self.reply_to.as_ref()
    }

    /// Whether there are none: no user property, no correlation data, no reply-to.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty() && self.correlation.is_none() && self.reply_to.is_none()
    }

    /// How many bytes [`Properties::wrap`] puts in front of a payload: the length and the CBOR.
    pub fn sealed_len(&self) -> usize {
        2 + self.encode().len()
    }

    /// The properties then `payload`: what follows the identity in the sealed part of an
    /// envelope with the `properties` flag.
    pub fn wrap(&self, payload: &[u8]) -> Vec<u8> {
        let encoded = self.encode();
        // Invariant: `new` refused anything that encodes to more than MAX_ENCODED (16 KiB).
        let len = u16::try_from(encoded.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(2 + encoded.len() + payload.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&encoded);
        out.extend_from_slice(payload);
        out
    }

    /// The properties and the payload of what follows the identity in an opened sealed part:
    /// with the `properties` flag among `flags`, the properties in front of the payload, parsed
    /// and checked; without it, none, and all of `sealed` is the payload.
    pub fn unwrap(flags: Flags, mut sealed: Vec<u8>) -> Result<(Self, Vec<u8>), EnvelopeError> {
        if !flags.contains(Flags::PROPERTIES) {
            return Ok((Self::default(), sealed));
        }
        let (len, rest) = sealed
            .split_first_chunk::<2>()
            .ok_or_else(|| invalid("the sealed part ends before the properties' length"))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if len > Self::MAX_ENCODED || rest.len() < len {
            return Err(invalid(format!(
                "properties of {len} bytes are announced, {} are sealed (at most {})",
                rest.len(),
                Self::MAX_ENCODED
            )));
        }
        let properties = Self::decode(&rest[..len])?;
        sealed.drain(..2 + len);
        Ok((properties, sealed))
    }

    /// Parses the CBOR of properties (without the length in front of it).
    fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let wire: Wire = crate::cbor::from_slice(bytes).map_err(|e| {
            invalid(match e {
                crate::cbor::CborFault::NotCbor(e) => {
                    format!("not a CBOR map of user, correlation data and reply-to: {e}")
                }
                crate::cbor::CborFault::Trailing(n) => format!("{n} bytes after the CBOR map"),
            })
        })?;
        let reply_to = wire
            .r
            .map(|t| t.parse::<Topic>())
            .transpose()
            .map_err(|e| invalid(PropertiesError::ReplyTo(e)))?;
        Self::new(wire.u, wire.c.map(ByteBuf::into_vec), reply_to).map_err(invalid)
    }

    /// The CBOR map.
    fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct WireOut<'a> {
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            u: &'a [(String, String)],
            #[serde(skip_serializing_if = "Option::is_none")]
            c: Option<&'a serde_bytes::Bytes>,
            #[serde(skip_serializing_if = "Option::is_none")]
            r: Option<&'a str>,
        }
        let out = WireOut {
            u: &self.user,
            c: self.correlation.as_deref().map(serde_bytes::Bytes::new),
            r: self.reply_to.as_ref().map(Topic::as_str),
        };
        let capacity = 8 + self
            .user
            .iter()
            .map(|(n, v)| n.len() + v.len() + 6)
            .sum::<usize>();
        crate::cbor::to_vec(&out, capacity)
    }
}

/// Checks one user property against its bounds.
fn check_pair(index: usize, name: &str, value: &str) -> Result<(), PropertiesError> {
    if name.is_empty() {
        return Err(PropertiesError::EmptyName { index });
    }
    if name.len() > Properties::MAX_NAME {
        return Err(PropertiesError::LongName {
            index,
            name: cut(name),
            len: name.len(),
        });
    }
    if let Some(found) = name.chars().find(|c| c.is_control()) {
        return Err(PropertiesError::ControlCharacter {
            index,
            name: cut(name),
            part: "name",
            found,
        });
    }
    if value.len() > Properties::MAX_VALUE {
        return Err(PropertiesError::LongValue {
            index,
            name: cut(name),
            len: value.len(),
        });
    }
    if let Some(found) = value.chars().find(|&c| c.is_control() && c != '\t') {
        return Err(PropertiesError::ControlCharacter {
            index,
            name: cut(name),
            part: "value",
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    fn request() -> Properties {
        Properties::new(
            vec![
                pair("trace", "00-4bf9-01"),
                pair("x-tag", "a"),
                pair("x-tag", "b"),
            ],
            Some(vec![0, 1, 2, 0xff]),
            Some("replies/plant-a/7".parse().unwrap()),
        )
        .unwrap()
    }

    /// The sealed bytes of a properties map written by hand.
    fn framed(cbor: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(cbor.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(cbor);
        out.extend_from_slice(b"payload");
        out
    }

    fn refusal(sealed: Vec<u8>) -> String {
        Properties::unwrap(Flags::PROPERTIES, sealed)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn wrapped_properties_unwrap_only_with_the_flag_and_leave_the_payload() {
        let sealed = request().wrap(br#"{"n":1}"#);
        assert_eq!(sealed.len(), request().sealed_len() + 7);
        let (read, payload) = Properties::unwrap(Flags::PROPERTIES, sealed.clone()).unwrap();
        assert_eq!(read, request());
        assert_eq!(payload, br#"{"n":1}"#);
        assert_eq!(
            read.user()
                .iter()
                .filter(|(n, _)| n == "x-tag")
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"],
            "repeated names keep their order"
        );
        // Without the flag, the sealed part is the payload as it was before properties.
        let (none, all) = Properties::unwrap(Flags::IDENTIFIED, sealed.clone()).unwrap();
        assert!(none.is_empty());
        assert_eq!(all, sealed);
        // Empty properties encode as an empty map and read back empty.
        let empty = Properties::default().wrap(b"x");
        assert_eq!(empty, b"\x00\x01\xa0x");
        let (read, payload) = Properties::unwrap(Flags::PROPERTIES, empty).unwrap();
        assert!(read.is_empty());
        assert_eq!(payload, b"x");
    }

    #[test]
    fn each_bound_is_refused_naming_the_property_and_the_bound() {
        let err = |user: Vec<(String, String)>, correlation: Option<Vec<u8>>| {
            Properties::new(user, correlation, None)
                .unwrap_err()
                .to_string()
        };
        let many = (0..65).map(|i| pair(&format!("p{i}"), "")).collect();
        assert_eq!(
            err(many, None),
            "user: 65 user properties, at most 64 are allowed"
        );
        assert_eq!(
            err(vec![pair("a", "1"), pair("", "2")], None),
            "user[1]: the name is empty"
        );
        let long = "n".repeat(257);
        assert!(
            err(vec![pair(&long, "")], None)
                .ends_with("the name is 257 bytes, at most 256 are allowed"),
            "{}",
            err(vec![pair(&long, "")], None)
        );
        assert_eq!(
            err(vec![pair("big", &"v".repeat(4097))], None),
            "user[0] \"big\": the value is 4097 bytes, at most 4096 are allowed"
        );
        assert_eq!(
            err(vec![pair("line", "a\r\nb")], None),
            "user[0] \"line\": the value holds a control character ('\\r')"
        );
        assert_eq!(
            err(vec![pair("a\u{0}b", "")], None),
            "user[0] \"a\\0b\": the name holds a control character ('\\0')"
        );
        // A tab is a value's to hold, not a name's.
        assert!(Properties::new(vec![pair("tabbed", "a\tb")], None, None).is_ok());
        assert_eq!(
            err(vec![], Some(Vec::new())),
            "correlation_data: is empty (leave it out instead)"
        );
        assert_eq!(
            err(vec![], Some(vec![7; 257])),
            "correlation_data: is 257 bytes, at most 256 are allowed"
        );
        assert!(Properties::new(vec![], Some(vec![7; 256]), None).is_ok());
        // Each pair within its bounds, the whole over 16 KiB.
        let heavy = (0..5)
            .map(|i| pair(&format!("h{i}"), &"v".repeat(4000)))
            .collect();
        assert!(
            err(heavy, None).starts_with("the properties encode to 20"),
            "the whole is bounded"
        );
    }

    #[test]
    fn bad_sealed_properties_are_refused_naming_what_is_wrong() {
        assert_eq!(
            refusal(b"\x00".to_vec()),
            "envelope field properties: the sealed part ends before the properties' length"
        );
        assert!(
            refusal(b"\x00\x09ab".to_vec()).contains("9 bytes are announced, 2 are sealed"),
            "{}",
            refusal(b"\x00\x09ab".to_vec())
        );
        assert!(refusal(b"\x50\x00".to_vec()).contains("at most 16384"));
        assert!(refusal(framed(b"\xff")).contains("not a CBOR map"));
        // A number where the correlation data's bytes belong.
        assert!(refusal(framed(b"\xa1\x61c\x05")).contains("not a CBOR map"));
        // Two values in the announced length.
        assert!(refusal(framed(b"\xa0\xa0")).contains("1 bytes after the CBOR map"));
        // A reply-to that is no topic.
        let mut bad_topic = Vec::new();
        ciborium::into_writer(
            &std::collections::BTreeMap::from([("r", "replies/#")]),
            &mut bad_topic,
        )
        .unwrap();
        let e = refusal(framed(&bad_topic));
        assert!(
            e.starts_with("envelope field properties: reply_to: invalid topic \"replies/#\""),
            "{e}"
        );
        // A pair over its bound, as a peer could write it.
        let mut long = Vec::new();
        ciborium::into_writer(
            &std::collections::BTreeMap::from([("u", vec![("k", "v".repeat(5000))])]),
            &mut long,
        )
        .unwrap();
        assert_eq!(
            refusal(framed(&long)),
            "envelope field properties: user[0] \"k\": the value is 5000 bytes, at most 4096 are allowed"
        );
        // Keys a later version may add are skipped.
        let mut later = Vec::new();
        ciborium::into_writer(
            &std::collections::BTreeMap::from([("r", "replies/a"), ("zz", "later")]),
            &mut later,
        )
        .unwrap();
        let (read, payload) = Properties::unwrap(Flags::PROPERTIES, framed(&later)).unwrap();
        assert_eq!(read.reply_to().map(Topic::as_str), Some("replies/a"));
        assert_eq!(payload, b"payload");
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[a-zA-Z0-9 \\t/:é€-]{{0,{max}}}")).unwrap()
    }

    fn properties() -> impl Strategy<Value = Properties> {
        // At most 64 x (16 + 64) characters of at most 3 bytes: within 16 KiB but rarely.
        let user = proptest::collection::vec(
            (
                text(16).prop_filter("a name", |n| !n.is_empty() && !n.contains('\t')),
                text(64),
            ),
            0..=Properties::MAX_USER,
        );
        let correlation = proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=256));
        let reply_to = proptest::option::of("[a-z]{1,8}(/[a-z0-9]{1,8}){0,3}");
        (user, correlation, reply_to).prop_filter_map(
            "within 16 KiB",
            |(user, correlation, reply_to)| {
                let reply_to = reply_to.map(|t| t.parse().unwrap());
                Properties::new(user, correlation, reply_to).ok()
            },
        )
    }

    proptest! {
        #[test]
        fn any_valid_properties_read_back_with_the_payload_after_them(
            p in properties(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let sealed = p.wrap(&payload);
            prop_assert_eq!(sealed.len(), p.sealed_len() + payload.len());
            let (read, rest) = Properties::unwrap(Flags::PROPERTIES, sealed).unwrap();
            prop_assert_eq!(read, p);
            prop_assert_eq!(rest, payload);
        }

        #[test]
        fn any_bytes_are_read_or_refused_never_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            if let Ok((p, rest)) = Properties::unwrap(Flags::PROPERTIES, bytes) {
                let again = Properties::unwrap(Flags::PROPERTIES, p.wrap(&rest)).unwrap();
                prop_assert_eq!(again, (p, rest));
            }
        }
    }
}
