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

/// A reader of the plain CBOR the protocol's hot paths decode by hand (envelope headers):
/// definite lengths, no tags. It answers `None` to anything else — an indefinite length, a tag,
/// a reserved encoding, the input ending early — and its caller then decodes the same bytes
/// with ciborium, which either accepts them or says what is wrong. So this reader only ever
/// makes the common case faster; what is accepted and every error stay ciborium's.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

/// CBOR major types.
pub(crate) const UINT: u8 = 0;
pub(crate) const BYTES: u8 = 2;
pub(crate) const TEXT: u8 = 3;
pub(crate) const ARRAY: u8 = 4;
pub(crate) const MAP: u8 = 5;

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Whether everything was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// The next item's major type and argument (a length, a value or a simple value).
    pub(crate) fn head(&mut self) -> Option<(u8, u64)> {
        let first = *self.take(1)?.first()?;
        let (major, info) = (first >> 5, first & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.take(1)?[0]),
            25 => u64::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?)),
            26 => u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
            27 => u64::from_be_bytes(self.take(8)?.try_into().ok()?),
            _ => return None,
        };
        Some((major, arg))
    }

    /// An unsigned integer.
    pub(crate) fn uint(&mut self) -> Option<u64> {
        match self.head()? {
            (UINT, n) => Some(n),
            _ => None,
        }
    }

    /// A text string, borrowed.
    pub(crate) fn text(&mut self) -> Option<&'a str> {
        match self.head()? {
            (TEXT, n) => std::str::from_utf8(self.take(usize::try_from(n).ok()?)?).ok(),
            _ => None,
        }
    }

    /// A byte string, borrowed.
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        match self.head()? {
            (BYTES, n) => self.take(usize::try_from(n).ok()?),
            _ => None,
        }
    }

    /// Passes over one item (nested at most `depth` deep).
    pub(crate) fn skip(&mut self, depth: u8) -> Option<()> {
        let (major, arg) = self.head()?;
        match major {
            BYTES | TEXT => {
                self.take(usize::try_from(arg).ok()?)?;
            }
            ARRAY | MAP => {
                let depth = depth.checked_sub(1)?;
                let items = if major == MAP {
                    arg.checked_mul(2)?
                } else {
                    arg
                };
                for _ in 0..items {
                    self.skip(depth)?;
                }
            }
            // Integers, simple values and floats are all in the head; tags are not read here.
            0 | 1 | 7 => {}
            _ => return None,
        }
        Some(())
    }
}
