//! What a trusted intermediary presents for a message it relays on another mesh's behalf
//! (DESIGN §2, Transitive trust, model 2): mesh B received the message from its origin C (under
//! the C–B agreement), opened it, and sends it on to A under the B–A agreement — sealed with the
//! B–A key, signed by B — with, in front of the sealed part (flag [`Flags::TRANSIT`]):
//!
//! - `origin`: C's envelope exactly as it crossed to B (a wire or proven envelope, CBOR: C's
//!   header and its origin signature, over the C–B ciphertext), so that A can check that C sent
//!   this envelope id on this topic to A;
//! - `bundle`: C's trust bundle (CA certificates, DER) as B stored it, to check C's signatures
//!   against — A may pin it instead (its transit rule's `ca`);
//! - `delegations`: the chain of delegations (JWTs) that lets B relay C's messages to A, C's
//!   first;
//! - `revocations`: C's signed revocation list as B holds it, if C has one, so that A learns a
//!   withdrawn delegation as soon as B does;
//! - `issuers`: for a chain longer than one — C delegated to B, B to D, and D relays to A — the
//!   CA certificates of each intermediate issuer (B), in chain order, so that A can check the
//!   delegations they signed: each relay that extends the chain adds its predecessor's.
//!
//! The sealed part is `[u32 length, big-endian][CBOR Transit]` followed by the origin's sealed
//! part as it opened at B (the sender's identity first when the origin named one). Everything
//! here is parsed and bounded; whether to believe it is the receiver's policy.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{EnvelopeError, Flags};

/// Longest encoded transit part, in bytes (an origin envelope's header and signer certificate,
/// two CAs, a few delegations; the origin's payload ciphertext is not counted: see
/// `MAX_ORIGIN_PAYLOAD`).
const MAX_ENCODED: usize = 512 * 1024;
/// Most CA certificates in the origin's bundle (two during a rollover).
const MAX_BUNDLE: usize = 4;
/// Most delegations in a chain.
const MAX_CHAIN: usize = 9;
/// The origin's envelope carries its ciphertext: bounded by the largest message.
const MAX_ORIGIN_PAYLOAD: usize = 64 << 20;

/// What a relay presents for a message it relays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transit {
    /// The origin's envelope as it crossed to the relay (CBOR of a wire or proven envelope).
    pub origin: ByteBuf,
    /// The origin mesh's CA certificates (DER), as the relay stored them.
    pub bundle: Vec<ByteBuf>,
    /// The delegations (JWTs), the origin's first.
    pub delegations: Vec<String>,
    /// The origin mesh's signed revocation list as the relay holds it (the CBOR of a
    /// revocations body), so that the receiver learns of a withdrawn delegation from the relay
    /// too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocations: Option<ByteBuf>,
    /// The CA certificates (DER) of each intermediate issuer of the chain, in chain order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<Vec<ByteBuf>>,
}

fn invalid(reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::InvalidField {
        field: "transit",
        reason: reason.into(),
    }
}

impl Transit {
    /// The sealed part of a relayed message: this, then `inner` (the origin's sealed part as it
    /// opened).
    pub fn wrap(&self, inner: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        self.check()?;
        let mut encoded = Vec::with_capacity(self.origin.len() + 4096);
        // Invariant: encoding bytes, lists and strings into a Vec cannot fail.
        ciborium::into_writer(self, &mut encoded)
            .unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
        let len =
            u32::try_from(encoded.len()).map_err(|_| invalid("encodes to more than 4 GiB"))?;
        let mut out = Vec::with_capacity(4 + encoded.len() + inner.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&encoded);
        out.extend_from_slice(inner);
        Ok(out)
    }

    /// The transit part and the origin's sealed part of an opened sealed part: with the
    /// `transit` flag among `flags`, parsed and bounded; without it, `None` and all of `sealed`.
    pub fn unwrap(
        flags: Flags,
        mut sealed: Vec<u8>,
    ) -> Result<(Option<Self>, Vec<u8>), EnvelopeError> {
        if !flags.contains(Flags::TRANSIT) {
            return Ok((None, sealed));
        }
        let (len, rest) = sealed
            .split_first_chunk::<4>()
            .ok_or_else(|| invalid("the sealed part ends before the transit part's length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len || len > MAX_ENCODED + MAX_ORIGIN_PAYLOAD {
            return Err(invalid(format!(
                "a transit part of {len} bytes is announced, {} are sealed",
                rest.len()
            )));
        }
        let transit: Self = crate::cbor::from_slice(&rest[..len]).map_err(|e| {
            invalid(match e {
                crate::cbor::CborFault::NotCbor(e) => e,
                crate::cbor::CborFault::Trailing(n) => format!("{n} bytes after it"),
            })
        })?;
        transit.check()?;
        sealed.drain(..4 + len);
        Ok((Some(transit), sealed))
    }

    fn check(&self) -> Result<(), EnvelopeError> {
        if self.bundle.is_empty() || self.bundle.len() > MAX_BUNDLE {
            return Err(invalid(format!(
                "carries {} CA certificates of the origin, 1 to {MAX_BUNDLE} are accepted",
                self.bundle.len()
            )));
        }
        if self.delegations.is_empty() || self.delegations.len() > MAX_CHAIN {
            return Err(invalid(format!(
                "carries {} delegations, 1 to {MAX_CHAIN} are accepted",
                self.delegations.len()
            )));
        }
        if self.issuers.len() >= self.delegations.len()
            || self
                .issuers
                .iter()
                .any(|b| b.is_empty() || b.len() > MAX_BUNDLE)
        {
            return Err(invalid(format!(
                "carries {} intermediate issuers' CAs for {} delegations (fewer, 1 to {MAX_BUNDLE} CAs each)",
                self.issuers.len(),
                self.delegations.len()
            )));
        }
        let rest: usize = self.bundle.iter().map(|c| c.len()).sum::<usize>()
            + (self.issuers.iter().flatten())
                .map(|c| c.len())
                .sum::<usize>()
            + self.delegations.iter().map(String::len).sum::<usize>()
            + self.revocations.as_ref().map_or(0, |r| r.len());
        if rest > MAX_ENCODED || self.origin.len() > MAX_ENCODED + MAX_ORIGIN_PAYLOAD {
            return Err(invalid(format!("is larger than {MAX_ENCODED} bytes")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transit() -> Transit {
        Transit {
            origin: ByteBuf::from(vec![0xa0; 300]),
            bundle: vec![ByteBuf::from(vec![0x30; 500])],
            delegations: vec!["a.b.c".into()],
            revocations: None,
            issuers: Vec::new(),
        }
    }

    #[test]
    fn a_transit_part_reads_back_with_the_inner_sealed_part_after_it() {
        let t = transit();
        let sealed = t.wrap(b"inner").unwrap();
        let (read, inner) = Transit::unwrap(Flags::TRANSIT, sealed.clone()).unwrap();
        assert_eq!(read, Some(t));
        assert_eq!(inner, b"inner");
        let (none, all) = Transit::unwrap(Flags::empty(), sealed.clone()).unwrap();
        assert_eq!((none, all), (None, sealed));
    }

    #[test]
    fn a_short_garbled_or_unbounded_transit_part_is_refused_naming_the_field() {
        let t = transit();
        let sealed = t.wrap(b"inner").unwrap();
        let err = |bytes: Vec<u8>| {
            Transit::unwrap(Flags::TRANSIT, bytes)
                .unwrap_err()
                .to_string()
        };
        assert!(
            err(sealed[..3].to_vec()).contains("transit"),
            "{}",
            err(sealed[..3].to_vec())
        );
        assert!(err(sealed[..40].to_vec()).contains("are sealed"));
        let mut garbled = sealed.clone();
        garbled[4] = 0xff;
        assert!(err(garbled).contains("transit"));
        let mut empty = transit();
        empty.delegations.clear();
        assert!(empty.wrap(b"").unwrap_err().to_string().contains("1 to 9"));
        // Any bytes at all: refused or read, never a panic.
        for n in 0..sealed.len().min(64) {
            let _ = Transit::unwrap(Flags::TRANSIT, sealed[..n].to_vec());
        }
    }
}
