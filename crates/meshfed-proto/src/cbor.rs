//! The CBOR every signed or stored body of the protocol uses: encoding into a fresh buffer, and
//! decoding exactly one value, refusing bytes after it (so that two encodings never verify as
//! one statement).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What is wrong with bytes that should hold one CBOR value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CborFault {
    /// They are not the value's CBOR form.
    NotCbor(String),
    /// The value is followed by this many bytes.
    Trailing(usize),
}

/// `value` as CBOR, in a buffer of `capacity` to start with.
pub(crate) fn to_vec<T: Serialize>(value: &T, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    // Invariant: encoding plain structs into a Vec cannot fail.
    ciborium::into_writer(value, &mut out).unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
    out
}

/// The one value `bytes` hold.
pub(crate) fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CborFault> {
    let mut rest = bytes;
    let value = ciborium::from_reader(&mut rest).map_err(|e| CborFault::NotCbor(reason(e)))?;
    if !rest.is_empty() {
        return Err(CborFault::Trailing(rest.len()));
    }
    Ok(value)
}

/// The decoder's fault in words a reader can act on (ciborium's own Display is its Debug form).
/// Every crate that reads the protocol's CBOR says it the same way.
pub fn reason<E>(e: ciborium::de::Error<E>) -> String {
    use ciborium::de::Error;
    match e {
        Error::Io(_) => "the input ends early".to_owned(),
        Error::Syntax(at) => format!("not well-formed CBOR at byte {at}"),
        Error::Semantic(Some(at), msg) => format!("{msg} (at byte {at})"),
        Error::Semantic(None, msg) => msg,
        Error::RecursionLimitExceeded => "nested too deeply".to_owned(),
    }
}

/// Declares a tuple struct read from a CBOR array of exactly its fields: serde's derived
/// visitor would accept an array that announces more items than it holds, so two encodings
/// would decode to one value.
macro_rules! exact_array {
    ($(struct $name:ident($($ty:ty),+ $(,)?);)+) => {$(
        struct $name($($ty),+);

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "an array of {} items", [$(stringify!($ty)),+].len())
                    }

                    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<$name, A::Error> {
                        let mut n = 0;
                        let value = $name($({
                            let item = seq
                                .next_element::<$ty>()?
                                .ok_or_else(|| serde::de::Error::invalid_length(n, &self))?;
                            n += 1;
                            item
                        }),+);
                        if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                            return Err(serde::de::Error::invalid_length(n + 1, &self));
                        }
                        Ok(value)
                    }
                }
                d.deserialize_seq(V)
            }
        }
    )+};
}
pub(crate) use exact_array;
