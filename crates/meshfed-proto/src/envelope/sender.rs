//! The sender's identity in the sealed part of an envelope (DESIGN §3.8).
//!
//! The sending gateway verified who is sending (a component's token, or the operator's) and puts
//! that identity — subject, roles, attributes — in front of the payload, *inside* what is sealed:
//! relays carry it without reading it, and the origin's signature covers it (encrypt, then sign),
//! bound to the header's destination, source and federation. The header's `identified` flag
//! ([`Flags::IDENTIFIED`]) says it is there; an envelope without the flag carries the payload
//! alone, and its receiver knows the sender only as the partner mesh as a whole.
//!
//! The sealed part is `[u16 length, big-endian][CBOR [subject, [role...], {attribute: value}]]`
//! — with a fourth element, the expiry of the credential the sender was verified by (seconds
//! since the Unix epoch), when it has one — followed by the payload. A receiver parses the identity into a valid [`Sender`] or refuses
//! the envelope naming what is wrong; the sender's bearer token itself never leaves its mesh.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{EnvelopeError, Flags};

/// Longest encoded identity, in bytes.
const MAX_ENCODED: usize = 4096;
/// Longest subject, role, attribute name or attribute value, in bytes.
const MAX_TEXT: usize = 256;
/// Most roles, and most attributes.
const MAX_ENTRIES: usize = 32;

/// Who sent a message, as their gateway verified it (or, delivered, as this mesh maps it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Sender {
    /// The subject within the sending mesh (`erp`, `admin`).
    pub subject: String,
    /// Its roles there.
    pub roles: Vec<String>,
    /// Its attributes there.
    pub attributes: BTreeMap<String, String>,
    /// When the credential its gateway verified it by expires, in seconds since the Unix epoch;
    /// `None` for one without expiry (the operator's admin token). Sealed with the identity: a
    /// receiver translating the credential never lets its own outlive it.
    pub expires: Option<u64>,
    /// Delivered only, never sealed: the token of this mesh the receiving gateway translated the
    /// sender's credential into (an `[[identity]]` rule with `translate`).
    pub credential: Option<String>,
}

/// The identity as read: a CBOR array of three (a credential without expiry) or four
/// (written from borrowed fields, as the same array).
#[derive(Deserialize)]
#[serde(untagged)]
enum Wire {
    Expiring(String, Vec<String>, BTreeMap<String, String>, u64),
    Lasting(String, Vec<String>, BTreeMap<String, String>),
}

fn invalid(reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::InvalidField {
        field: "sender",
        reason: reason.into(),
    }
}

impl Sender {
    /// Checks every field's rule: a non-empty subject, at most 32 roles and 32 attributes, each
    /// name and value non-empty (an attribute's value may be empty), at most 256 bytes and
    /// without control characters. The error says which rule is broken.
    pub fn validate(&self) -> Result<(), String> {
        let text = |what: &str, s: &str, may_be_empty: bool| {
            if (s.is_empty() && !may_be_empty) || s.len() > MAX_TEXT {
                return Err(format!("{what} {s:?} must be 1 to {MAX_TEXT} bytes"));
            }
            if s.chars().any(char::is_control) {
                return Err(format!("{what} {s:?} holds a control character"));
            }
            Ok(())
        };
        text("subject", &self.subject, false)?;
        if self.roles.len() > MAX_ENTRIES || self.attributes.len() > MAX_ENTRIES {
            return Err(format!(
                "at most {MAX_ENTRIES} roles and {MAX_ENTRIES} attributes (it has {} and {})",
                self.roles.len(),
                self.attributes.len()
            ));
        }
        for role in &self.roles {
            text("role", role, false)?;
        }
        for (name, value) in &self.attributes {
            text("attribute", name, false)?;
            text("attribute value", value, true)?;
        }
        Ok(())
    }

    /// The sealed part of a message from this sender: the identity, then `payload`.
    pub fn wrap(&self, payload: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        self.validate().map_err(invalid)?;
        let mut identity = Vec::with_capacity(64);
        // Invariant: encoding strings, a list and a map into a Vec cannot fail.
        match self.expires {
            Some(exp) => ciborium::into_writer(
                &(&self.subject, &self.roles, &self.attributes, exp),
                &mut identity,
            ),
            None => ciborium::into_writer(
                &(&self.subject, &self.roles, &self.attributes),
                &mut identity,
            ),
        }
        .unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
        let len = u16::try_from(identity.len())
            .ok()
            .filter(|n| usize::from(*n) <= MAX_ENCODED)
            .ok_or_else(|| invalid(format!("encodes to more than {MAX_ENCODED} bytes")))?;
        let mut out = Vec::with_capacity(2 + identity.len() + payload.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&identity);
        out.extend_from_slice(payload);
        Ok(out)
    }

    /// The sender and the payload of an opened sealed part: with the `identified` flag among
    /// `flags`, the identity in front of the payload, parsed and checked; without it, no sender
    /// and all of `sealed` is the payload.
    pub fn unwrap(
        flags: Flags,
        mut sealed: Vec<u8>,
    ) -> Result<(Option<Self>, Vec<u8>), EnvelopeError> {
        if !flags.contains(Flags::IDENTIFIED) {
            return Ok((None, sealed));
        }
        let (len, rest) = sealed
            .split_first_chunk::<2>()
            .ok_or_else(|| invalid("the sealed part ends before the identity's length"))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if len > MAX_ENCODED || rest.len() < len {
            return Err(invalid(format!(
                "an identity of {len} bytes is announced, {} are sealed (at most {MAX_ENCODED})",
                rest.len()
            )));
        }
        let wire: Wire = ciborium::from_reader(&rest[..len]).map_err(|e| {
            invalid(format!(
                "the identity is not CBOR [subject, roles, attributes, expiry?]: {e}"
            ))
        })?;
        let (subject, roles, attributes, expires) = match wire {
            Wire::Expiring(s, r, a, exp) => (s, r, a, Some(exp)),
            Wire::Lasting(s, r, a) => (s, r, a, None),
        };
        let sender = Self {
            subject,
            roles,
            attributes,
            expires,
            credential: None,
        };
        sender.validate().map_err(invalid)?;
        sealed.drain(..2 + len);
        Ok((Some(sender), sealed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erp() -> Sender {
        Sender {
            subject: "erp".into(),
            roles: vec!["buyer".into()],
            attributes: [("site".to_owned(), "north".to_owned())].into(),
            expires: Some(1_900_000_000),
            credential: None,
        }
    }

    #[test]
    fn a_wrapped_identity_unwraps_only_with_the_flag() {
        let sealed = erp().wrap(b"{\"n\":1}").unwrap();
        let (sender, payload) = Sender::unwrap(Flags::IDENTIFIED, sealed.clone()).unwrap();
        assert_eq!(
            (sender, payload.as_slice()),
            (Some(erp()), &b"{\"n\":1}"[..])
        );
        let (none, all) = Sender::unwrap(Flags::RELIABLE, sealed.clone()).unwrap();
        assert_eq!((none, all), (None, sealed));
        // The operator's identity has no expiry: three elements, as before expiries crossed.
        let admin = Sender {
            subject: "admin".into(),
            roles: vec!["admin".into()],
            ..Sender::default()
        };
        let sealed = admin.wrap(b"x").unwrap();
        assert_eq!(
            Sender::unwrap(Flags::IDENTIFIED, sealed).unwrap().0,
            Some(admin)
        );
        // A delivered credential is never sealed.
        let holding = Sender {
            credential: Some("token".into()),
            ..erp()
        };
        let (read, _) = Sender::unwrap(Flags::IDENTIFIED, holding.wrap(b"").unwrap()).unwrap();
        assert_eq!(read, Some(erp()));
    }

    #[test]
    fn a_bad_identity_is_refused_naming_what_is_wrong() {
        let err = |bytes: &[u8]| {
            Sender::unwrap(Flags::IDENTIFIED, bytes.to_vec())
                .unwrap_err()
                .to_string()
        };
        assert!(err(b"\x00").contains("ends before"), "{}", err(b"\x00"));
        assert!(err(b"\x00\x09ab").contains("9 bytes is announced, 2"));
        assert!(err(b"\x00\x01\xff").contains("not CBOR"));
        let mut empty = erp();
        empty.subject.clear();
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &("", Vec::<String>::new(), BTreeMap::<String, String>::new()),
            &mut bytes,
        )
        .unwrap();
        let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        framed.extend(bytes);
        assert_eq!(
            err(&framed),
            "envelope field sender: subject \"\" must be 1 to 256 bytes"
        );
        assert!(empty.wrap(b"").is_err());
        let many = Sender {
            roles: (0..33).map(|i| format!("r{i}")).collect(),
            ..erp()
        };
        assert!(
            many.wrap(b"")
                .unwrap_err()
                .to_string()
                .contains("at most 32 roles")
        );
    }
}
