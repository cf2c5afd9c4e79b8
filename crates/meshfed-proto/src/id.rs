//! Identifiers, parsed once at the edge into types that cannot be wrong.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An identifier that broke its rule: names the kind, the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct InvalidId {
    /// What kind of identifier was parsed (`mesh id`, `node name`, ...).
    pub kind: &'static str,
    /// The rejected value, cut to a readable length.
    pub value: String,
    /// The rule the value breaks.
    pub rule: &'static str,
}

impl InvalidId {
    fn new(kind: &'static str, value: &str, rule: &'static str) -> Self {
        let value = value.chars().take(80).collect();
        Self { kind, value, rule }
    }
}

/// Checks the DNS-label-like rule shared by mesh ids and node names:
/// `[a-z0-9][a-z0-9-]{0,62}`.
fn check_label(kind: &'static str, s: &str) -> Result<(), InvalidId> {
    const RULE: &str = "must match [a-z0-9][a-z0-9-]{0,62} (1 to 63 lowercase letters, digits or '-', not starting with '-')";
    let bytes = s.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !first_ok || !rest_ok || bytes.len() > 63 {
        return Err(InvalidId::new(kind, s, RULE));
    }
    Ok(())
}

/// Checks the rule for opaque ids chosen by peers: `[A-Za-z0-9_-]{1,128}`.
fn check_token(kind: &'static str, s: &str) -> Result<(), InvalidId> {
    const RULE: &str = "must be 1 to 128 ASCII letters, digits, '_' or '-'";
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(InvalidId::new(kind, s, RULE));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                $check($kind, s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                $check($kind, &s)?;
                Ok(Self(s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::try_from(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A mesh's identifier: `[a-z0-9][a-z0-9-]{0,62}`, e.g. `plant-a`.
    MeshId,
    "mesh id",
    check_label
);
string_id!(
    /// A node's name within its mesh (a gateway or a broker): `[a-z0-9][a-z0-9-]{0,62}`.
    /// The spec calls it `gateway_id`.
    NodeName,
    "node name",
    check_label
);
string_id!(
    /// A federation agreement's identifier, chosen at the handshake: `[A-Za-z0-9_-]{1,128}`.
    FederationId,
    "federation id",
    check_token
);
string_id!(
    /// A content key's identifier: `[A-Za-z0-9_-]{1,128}`.
    KeyId,
    "key id",
    check_token
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_id_accepts_dns_like_labels() {
        for ok in ["a", "plant-a", "0", "a-b-c-9", &"a".repeat(63)] {
            assert_eq!(ok.parse::<MeshId>().unwrap().as_str(), ok);
        }
    }

    #[test]
    fn mesh_id_rejects_with_the_rule() {
        for bad in ["", "-a", "Plant", "mesh_abc", "a.b", &"a".repeat(64), "ä"] {
            let err = bad.parse::<MeshId>().unwrap_err();
            assert_eq!(err.kind, "mesh id");
            assert!(err.to_string().contains("[a-z0-9][a-z0-9-]{0,62}"), "{err}");
        }
    }

    #[test]
    fn federation_id_allows_underscores_but_not_spaces() {
        assert!("fed_abc123_def456".parse::<FederationId>().is_ok());
        let err = "fed abc".parse::<FederationId>().unwrap_err();
        assert!(
            err.to_string().contains("federation id \"fed abc\""),
            "{err}"
        );
    }

    #[test]
    fn ids_deserialize_through_their_rule() {
        let err = serde_json::from_str::<MeshId>("\"UPPER\"").unwrap_err();
        assert!(err.to_string().contains("invalid mesh id"), "{err}");
    }
}
