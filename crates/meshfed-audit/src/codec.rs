//! The one CBOR discipline every decoder of this crate follows: exactly one value, nothing
//! after it, and only the one encoding this crate writes (decoding then re-encoding must give
//! the same bytes), so that a record's bytes, which are its Merkle leaf, stand for one record.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What is wrong with bytes that should hold one value in its one encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Not the value's CBOR form: the decoder's words, with the byte where it saw it.
    NotCbor(String),
    /// The value is followed by this many bytes.
    Trailing(usize),
    /// The value decodes, but its encoding differs from the one written, from this byte on.
    NotCanonical(usize),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotCbor(reason) => f.write_str(reason),
            Self::Trailing(n) => write!(f, "{n} stray bytes follow the value"),
            Self::NotCanonical(at) => write!(
                f,
                "not in the one encoding meshfed writes (it differs from it at byte {at}: another length form, key order, field or float width)"
            ),
        }
    }
}

/// `value` as CBOR.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_sized(value, 256)
}

/// `value` as CBOR, into a buffer of `capacity` bytes to begin with (a large value written
/// into a growing buffer is copied at each doubling).
pub(crate) fn encode_sized<T: Serialize>(value: &T, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    // Invariant: encoding plain structs into a Vec cannot fail (no map keys that are not
    // strings, no sequences without lengths).
    ciborium::into_writer(value, &mut out).unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
    out
}

/// The one value `bytes` hold, checked to be in the encoding `reencode` writes for it.
pub(crate) fn decode<T, F, W>(bytes: &[u8], reencode: F) -> Result<T, Fault>
where
    T: DeserializeOwned,
    F: FnOnce(&T) -> W,
    W: AsRef<[u8]>,
{
    let mut rest = bytes;
    let value: T = ciborium::from_reader(&mut rest)
        .map_err(|e| Fault::NotCbor(meshfed_proto::cbor::reason(e)))?;
    if !rest.is_empty() {
        return Err(Fault::Trailing(rest.len()));
    }
    let again = reencode(&value);
    let again = again.as_ref();
    if again != bytes {
        let at = again
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(again.len().min(bytes.len()));
        return Err(Fault::NotCanonical(at));
    }
    Ok(value)
}

/// Serde helpers for values whose JSON view (human readable) differs from their CBOR form.
pub(crate) mod serde_with {
    use std::fmt;

    use meshfed_proto::batch::merkle::{HASH_LEN, TreeHash};
    use meshfed_proto::envelope::{EnvelopeId, Timestamp};
    use serde::de::{self, Deserializer, Visitor};
    use serde::{Deserialize, Serializer};

    /// Bytes of a fixed length: a byte string in CBOR, hex in JSON.
    pub(crate) fn ser_bytes<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    /// A byte string of exactly `N` bytes.
    pub(crate) fn de_bytes<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        struct V<const N: usize>;
        impl<const N: usize> Visitor<'_> for V<N> {
            type Value = [u8; N];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a byte string of {N} bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<[u8; N], E> {
                v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(V::<N>)
    }

    /// A tree hash (48 bytes).
    pub(crate) mod tree_hash {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(h: &TreeHash, s: S) -> Result<S::Ok, S::Error> {
            ser_bytes(h.as_bytes(), s)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TreeHash, D::Error> {
            de_bytes::<D, HASH_LEN>(d).map(TreeHash::from_bytes)
        }
    }

    /// A 48-byte digest.
    pub(crate) mod digest {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            h: &[u8; HASH_LEN],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            ser_bytes(h, s)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<[u8; HASH_LEN], D::Error> {
            de_bytes::<D, HASH_LEN>(d)
        }
    }

    /// An envelope id: 16 bytes in CBOR, `fed_…` in JSON.
    pub(crate) mod envelope_id {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(id: &EnvelopeId, s: S) -> Result<S::Ok, S::Error> {
            if s.is_human_readable() {
                s.collect_str(id)
            } else {
                s.serialize_bytes(&id.0)
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EnvelopeId, D::Error> {
            de_bytes::<D, 16>(d).map(EnvelopeId)
        }
    }

    /// An optional envelope id.
    pub(crate) mod opt_envelope_id {
        use super::*;

        #[expect(
            clippy::ref_option,
            reason = "serde's serialize_with passes a reference to the field"
        )]
        pub(crate) fn serialize<S: Serializer>(
            id: &Option<EnvelopeId>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match id {
                Some(id) => envelope_id::serialize(id, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<EnvelopeId>, D::Error> {
            #[derive(Deserialize)]
            struct Id(#[serde(with = "envelope_id")] EnvelopeId);
            Ok(Option::<Id>::deserialize(d)?.map(|Id(id)| id))
        }
    }

    /// A timestamp: milliseconds in CBOR, RFC 3339 in JSON.
    pub(crate) mod time {
        use super::*;

        #[expect(
            clippy::trivially_copy_pass_by_ref,
            reason = "serde's serialize_with passes a reference to the field"
        )]
        pub(crate) fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
            if s.is_human_readable() {
                s.serialize_str(&super::super::rfc3339(*t))
            } else {
                s.serialize_u64(t.0)
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
            u64::deserialize(d).map(Timestamp)
        }
    }
}

/// A timestamp as RFC 3339 UTC with milliseconds (`2026-05-01T12:00:00.000Z`); past the year
/// 9999, as milliseconds since the epoch (`…ms`).
pub(crate) fn rfc3339(t: meshfed_proto::envelope::Timestamp) -> String {
    let ms = t.0;
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, sod) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    if year > 9999 {
        return format!("{ms}ms");
    }
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use meshfed_proto::envelope::Timestamp;

    use super::*;

    #[test]
    fn timestamps_show_as_rfc3339_utc() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(Timestamp(1_777_636_800_123)),
            "2026-05-01T12:00:00.123Z"
        );
        // A leap day.
        assert_eq!(
            rfc3339(Timestamp(951_782_400_000)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(rfc3339(Timestamp(u64::MAX)), format!("{}ms", u64::MAX));
    }

    #[test]
    fn decode_refuses_another_encoding_of_the_same_value() {
        // 5 as a one-byte argument (0x18 0x05) instead of the short form 0x05.
        let err = decode::<u64, _, _>(&[0x18, 0x05], encode).unwrap_err();
        assert_eq!(err, Fault::NotCanonical(0));
        assert_eq!(
            decode::<u64, _, _>(&[0x05, 0x00], encode),
            Err(Fault::Trailing(1))
        );
        assert_eq!(decode::<u64, _, _>(&[0x05], encode), Ok(5));
    }
}
