//! Custody: store-and-forward through brokers for a destination mesh that is away.
//!
//! A tunnel needs both ends online. When the destination of a relayed federation is away, the
//! origin hands its reliable envelopes to the broker it reaches it through, in a
//! [`FrameType::Custody`] frame over their direct link. Each envelope is signed by the origin's
//! node and sealed under the federation's *custody secret*
//! ([`crate::crypto::ContentSecret::custody`]): both ends derived it in their last session and
//! keep it, so the destination opens the envelope when it returns, and no broker can. A
//! broker checks the origin's signature, journals the item, and answers a
//! [`FrameType::CustodyAck`] naming what it took (the previous hop stops sending it) and what
//! it refused and why (its custody is full, the envelope expired, the signature does not
//! verify). It passes what it holds on toward the destination, hop by hop, each hop taking
//! custody in turn, and the destination acknowledges once it has journaled what it delivered.
//!
//! The origin keeps its own copy until the destination's end-to-end acknowledgement, as for any
//! reliable message (DESIGN §3.6): custody stops retransmission by the previous hop, it does not
//! settle the message.
//!
//! Wire form (CBOR, one value, exact arrays):
//! - `Custody`: `[[secret id, [relay…], [cert…], envelope]…]`: per item the custody secret's
//!   id, the brokers that held it so far (oldest first), the signer's certificate chain (leaf
//!   first, then CAs, the mesh CA last) and the signed envelope in its link form;
//! - `CustodyAck`: `[[id…], [[id, reason]…]]`: the envelope ids taken, and those refused with
//!   why.
//!
//! [`FrameType::Custody`]: crate::frame::FrameType::Custody
//! [`FrameType::CustodyAck`]: crate::frame::FrameType::CustodyAck

use serde::Serialize;
use serde_bytes::{ByteBuf, Bytes};

use super::{MAX_PATH, MAX_REASON, check_chain};
use crate::cbor::{self, CborFault, exact_array};
use crate::envelope::EnvelopeId;
use crate::id::{KeyId, MeshId};

/// Most items in one custody frame.
pub const MAX_ITEMS: usize = 4096;

/// One envelope in custody, as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustodyItem {
    /// The custody secret it is sealed under (the destination's stored secret of that id).
    pub secret: KeyId,
    /// The brokers that held it so far, oldest first.
    pub relays: Vec<MeshId>,
    /// The signer's certificate chain: leaf first, the mesh CA last.
    pub chain: Vec<Vec<u8>>,
    /// The signed envelope, in its link form (`WireEnvelope`).
    pub envelope: Vec<u8>,
}

/// A custody frame's body: envelopes handed to the next hop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Custody {
    /// The envelopes.
    pub items: Vec<CustodyItem>,
}

/// What the next hop did with a custody frame's items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustodyAck {
    /// Taken into custody (or, at the destination, delivered and journaled).
    pub taken: Vec<EnvelopeId>,
    /// Refused, each with why.
    pub refused: Vec<(EnvelopeId, String)>,
}

/// A custody frame that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustodyError {
    /// Not one CBOR value of the frame's form.
    #[error("custody frame is not well-formed: {0}")]
    Malformed(String),
    /// Bytes follow the value.
    #[error("custody frame is followed by {0} more bytes")]
    Trailing(usize),
    /// Too many items.
    #[error("custody frame holds {0} items, at most {MAX_ITEMS}")]
    TooMany(usize),
    /// One item is wrong.
    #[error("custody item {index}: {reason}")]
    BadItem {
        /// Its position.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

impl From<CborFault> for CustodyError {
    fn from(f: CborFault) -> Self {
        match f {
            CborFault::NotCbor(reason) => Self::Malformed(reason),
            CborFault::Trailing(n) => Self::Trailing(n),
        }
    }
}

exact_array! {
    struct ItemIn(KeyId, Vec<MeshId>, Vec<ByteBuf>, ByteBuf);
    struct AckIn(Vec<ByteBuf>, Vec<RefusedIn>);
    struct RefusedIn(ByteBuf, String);
}

#[derive(Serialize)]
struct ItemOut<'a>(&'a KeyId, &'a [MeshId], Vec<&'a Bytes>, &'a Bytes);

#[derive(Serialize)]
struct AckOut<'a>(Vec<&'a Bytes>, Vec<(&'a Bytes, &'a str)>);

impl Custody {
    /// The wire form (the frame's body).
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = (self.items.iter())
            .map(|i| i.envelope.len() + i.chain.iter().map(Vec::len).sum::<usize>() + 128)
            .sum();
        let out: Vec<ItemOut<'_>> = (self.items.iter())
            .map(|i| {
                ItemOut(
                    &i.secret,
                    &i.relays,
                    i.chain.iter().map(|c| Bytes::new(c)).collect(),
                    Bytes::new(&i.envelope),
                )
            })
            .collect();
        cbor::to_vec(&out, size + 8)
    }

    /// Reads a custody frame, refusing one out of bounds: too many items, a relay list longer
    /// than [`MAX_PATH`] or naming a mesh twice, a certificate chain out of bounds, an empty
    /// envelope. Whether the envelope verifies is the receiver's check.
    pub fn decode(bytes: &[u8]) -> Result<Self, CustodyError> {
        let raw: Vec<ItemIn> = cbor::from_slice(bytes)?;
        if raw.len() > MAX_ITEMS {
            return Err(CustodyError::TooMany(raw.len()));
        }
        let mut items = Vec::with_capacity(raw.len());
        for (index, ItemIn(secret, relays, chain, envelope)) in raw.into_iter().enumerate() {
            let bad = |reason: String| CustodyError::BadItem { index, reason };
            if relays.len() > MAX_PATH {
                return Err(bad(format!("{} relays, at most {MAX_PATH}", relays.len())));
            }
            if (1..relays.len()).any(|i| relays[..i].contains(&relays[i])) {
                return Err(bad("the relays name a mesh twice".to_owned()));
            }
            let chain: Vec<Vec<u8>> = chain.into_iter().map(ByteBuf::into_vec).collect();
            check_chain(&chain).map_err(|r| bad(format!("chain: {r}")))?;
            if envelope.is_empty() {
                return Err(bad("an empty envelope".to_owned()));
            }
            items.push(CustodyItem {
                secret,
                relays,
                chain,
                envelope: envelope.into_vec(),
            });
        }
        Ok(Self { items })
    }
}

impl CustodyAck {
    /// The wire form (the frame's body).
    pub fn encode(&self) -> Vec<u8> {
        let taken = self.taken.iter().map(|id| Bytes::new(&id.0)).collect();
        let refused = (self.refused.iter())
            .map(|(id, why)| (Bytes::new(&id.0), why.as_str()))
            .collect();
        cbor::to_vec(
            &AckOut(taken, refused),
            24 * self.taken.len() + 64 * self.refused.len() + 8,
        )
    }

    /// Reads an acknowledgement, refusing ids that are not 16 bytes and reasons longer than
    /// [`MAX_REASON`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CustodyError> {
        let AckIn(taken, refused) = cbor::from_slice(bytes)?;
        if taken.len() + refused.len() > MAX_ITEMS {
            return Err(CustodyError::TooMany(taken.len() + refused.len()));
        }
        let id = |index: usize, b: ByteBuf| {
            <[u8; 16]>::try_from(b.as_slice())
                .map(EnvelopeId)
                .map_err(|_| CustodyError::BadItem {
                    index,
                    reason: format!("an envelope id of {} bytes, not 16", b.len()),
                })
        };
        let taken = (taken.into_iter().enumerate())
            .map(|(i, b)| id(i, b))
            .collect::<Result<Vec<_>, _>>()?;
        let refused = (refused.into_iter().enumerate())
            .map(|(i, RefusedIn(b, why))| {
                if why.len() > MAX_REASON {
                    return Err(CustodyError::BadItem {
                        index: i,
                        reason: format!("a reason of {} bytes, at most {MAX_REASON}", why.len()),
                    });
                }
                Ok((id(i, b)?, why))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { taken, refused })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> MeshId {
        s.parse().unwrap()
    }

    fn item() -> CustodyItem {
        CustodyItem {
            secret: "cs1_0123456789abcdef01234567".parse().unwrap(),
            relays: vec![m("hub-b")],
            chain: vec![vec![0x30, 1, 2], vec![0x30, 3]],
            envelope: vec![9; 40],
        }
    }

    #[test]
    fn a_custody_frame_and_its_ack_round_trip() {
        let c = Custody {
            items: vec![item(), item()],
        };
        assert_eq!(Custody::decode(&c.encode()).unwrap(), c);
        let ack = CustodyAck {
            taken: vec![EnvelopeId([1; 16])],
            refused: vec![(EnvelopeId([2; 16]), "custody_full: at its limit".to_owned())],
        };
        assert_eq!(CustodyAck::decode(&ack.encode()).unwrap(), ack);
    }

    #[test]
    fn bad_custody_frames_are_refused_naming_the_item() {
        let mut twice = item();
        twice.relays = vec![m("hub-b"), m("hub-b")];
        let err = Custody::decode(
            &Custody {
                items: vec![item(), twice],
            }
            .encode(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "custody item 1: the relays name a mesh twice"
        );
        let mut empty = item();
        empty.envelope.clear();
        let err = Custody::decode(&Custody { items: vec![empty] }.encode()).unwrap_err();
        assert!(err.to_string().contains("an empty envelope"), "{err}");
        let mut no_chain = item();
        no_chain.chain.clear();
        let err = Custody::decode(
            &Custody {
                items: vec![no_chain],
            }
            .encode(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("custody item 0: chain"), "{err}");
        let mut extra = Custody {
            items: vec![item()],
        }
        .encode();
        extra.push(0);
        assert_eq!(Custody::decode(&extra), Err(CustodyError::Trailing(1)));
        assert!(matches!(
            CustodyAck::decode(&cbor::to_vec(
                &(vec![Bytes::new(&[1, 2])], Vec::<u8>::new()),
                8
            )),
            Err(CustodyError::BadItem { index: 0, .. })
        ));
        assert!(matches!(
            Custody::decode(b"\xff"),
            Err(CustodyError::Malformed(_))
        ));
    }
}
