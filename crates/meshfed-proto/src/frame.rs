//! Link framing: `[u32 body length, big-endian][u8 type][body]`.
//!
//! Control bodies are CBOR; an envelope frame's body is the envelope's own wire form. The
//! decoder is sans-IO: feed it bytes as they arrive, take whole frames out; a frame longer than
//! the negotiated maximum is refused before any of it is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before a frame's body.
pub const HEADER_LEN: usize = 5;
/// Maximum frame body before negotiation, and the default offer.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;
/// Smallest maximum frame a peer may negotiate down to.
pub const MIN_MAX_FRAME: u32 = 64 << 10;

macro_rules! frame_types {
    ($($(#[$doc:meta])* $name:ident = $code:literal),* $(,)?) => {
        /// What a frame carries.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum FrameType {
            $($(#[$doc])* $name = $code,)*
        }

        impl FrameType {
            /// The type for a code, if it is one.
            pub fn from_code(code: u8) -> Option<Self> {
                match code {
                    $($code => Some(Self::$name),)*
                    _ => None,
                }
            }
        }
    };
}

frame_types! {
    /// Handshake step 2: the initiator's identity and capabilities.
    FederationRequest = 0x01,
    /// Handshake step 2: the capabilities the responder accepted.
    FederationResponse = 0x02,
    /// Handshake step 3: the initiator's trust bundle and invitation proof.
    TrustCredentialExchange = 0x03,
    /// Handshake step 3: the responder verified the initiator; its own trust bundle.
    TrustCredentialVerification = 0x04,
    /// Handshake step 4: proposed policy terms.
    PolicyProposal = 0x05,
    /// Handshake step 4: the proposal is accepted as is.
    PolicyAcceptance = 0x06,
    /// Handshake step 4: the terms the responder can accept instead.
    PolicyCounterproposal = 0x07,
    /// Handshake step 5: the agreement, signed by the initiator, and its key share.
    ConnectionEstablishment = 0x08,
    /// Handshake step 5: the responder's signature and key share.
    ConnectionConfirmation = 0x09,
    /// Handshake step 6.
    ActivationRequest = 0x0a,
    /// Handshake step 6: the federation is active.
    ActivationConfirmation = 0x0b,
    /// Re-establishes a stored federation over a new link.
    Resume = 0x0c,
    /// The stored federation is resumed.
    ResumeConfirmation = 0x0d,
    /// Liveness probe, answered by a heartbeat ack.
    Heartbeat = 0x10,
    /// Answer to a heartbeat, echoing its sequence number.
    HeartbeatAck = 0x11,
    /// Acknowledges delivered envelopes.
    Ack = 0x12,
    /// Grants the peer credit to send more.
    Credit = 0x13,
    /// A lifecycle change on a live federation (suspend, resume).
    Lifecycle = 0x14,
    /// The sender's floor: every stream sequence number below it is settled at the sender.
    Forward = 0x15,
    /// The sender's mesh's trust bundle from now on: a signed statement (CA rollover).
    TrustBundle = 0x1b,
    /// The trust bundle of that serial is stored.
    TrustBundleAck = 0x1c,
    /// The sender's mesh's revocation list, a signed statement.
    Revocations = 0x16,
    /// The revocation list version the receiver stored.
    RevocationsAck = 0x17,
    /// Renegotiation: the proposer's offer and the agreement version it proposes.
    RenegotiationProposal = 0x18,
    /// Renegotiation: the new agreement signed by the answerer, or its refusal and why.
    RenegotiationAnswer = 0x19,
    /// Renegotiation: the proposer's signature; the switch point to the new agreement.
    RenegotiationConfirm = 0x1a,
    /// The topic patterns the sender has subscribers for (its whole interest; what it no longer
    /// names is withdrawn), versioned: only qos 0 messages it wants are sent to it.
    Interest = 0x1d,
    /// The interest version the receiver applied.
    InterestAck = 0x24,
    /// The audit trail's exchange between partners (DESIGN §3.9): a signed tree head of the
    /// sender's log of this federation with its consistency proof, a countersignature of one,
    /// or what the sender last countersigned. The body is `meshfed-audit`'s to read.
    Audit = 0x25,
    /// A fault: a code and a readable reason. The link closes after it.
    Error = 0x1e,
    /// The federation ends.
    Termination = 0x1f,
    /// One envelope, in its wire form.
    Envelope = 0x20,
    /// Envelopes of a delivery stream with their stream positions, signed as one batch or each
    /// alone, or streamed ahead of their batch's head.
    Transfer = 0x21,
    /// The signature of a streamed batch: its number, count, root and signature.
    BatchHead = 0x22,
    /// A signer certificate (its DER, the whole body) that envelopes sent after it on the link
    /// name by SHA-384 digest: each certificate crosses a link once, not in every envelope.
    SignerCertificate = 0x23,
    /// A frame of an end-to-end tunnel between meshes that are not adjacent, forwarded by
    /// brokers by destination mesh.
    Relay = 0x30,
    /// The meshes the sender reaches, each with its path and summed round trip: its whole
    /// routing table (path vector), sent to each neighbour when it changes.
    RouteAdvertisement = 0x31,
    /// The sender's mesh descriptor (a signed statement) for the broker's discovery directory.
    Descriptor = 0x32,
    /// Envelopes handed into a broker's custody for a destination that is away
    /// (`relay::custody::Custody`), over a direct link.
    Custody = 0x33,
    /// What the next hop took into custody (or delivered) and what it refused
    /// (`relay::custody::CustodyAck`).
    CustodyAck = 0x34,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it carries.
    pub ty: FrameType,
    /// The body.
    pub body: Bytes,
}

impl Frame {
    /// A frame of type `ty` around `body`.
    pub fn new(ty: FrameType, body: impl Into<Bytes>) -> Self {
        Self {
            ty,
            body: body.into(),
        }
    }

    /// Appends the framed bytes to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.reserve(HEADER_LEN + self.body.len());
        // Bodies are bounded by the negotiated maximum (≤ 4 GiB), so the length fits in u32.
        out.put_u32(u32::try_from(self.body.len()).unwrap_or(u32::MAX));
        out.put_u8(self.ty as u8);
        out.put_slice(&self.body);
    }
}

/// A frame that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The announced body is longer than the negotiated maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// Allowed maximum.
        max: u32,
    },
    /// The type byte is not a known frame type.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
}

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: u32,
}

impl FrameDecoder {
    /// A decoder that refuses bodies over `max` bytes.
    pub fn new(max: u32) -> Self {
        Self {
            buf: BytesMut::with_capacity(64 << 10),
            max,
        }
    }

    /// Changes the maximum (after negotiation).
    pub fn set_max(&mut self, max: u32) {
        self.max = max;
    }

    /// Feeds received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The buffer to read into directly, for drivers that avoid a copy.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received but not yet part of a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        let code = self.buf[4];
        let ty = FrameType::from_code(code).ok_or(FrameError::UnknownType(code))?;
        let total = HEADER_LEN + len as usize;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let body = self.buf.split_to(len as usize).freeze();
        Ok(Some(Frame { ty, body }))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encoded(frames: &[Frame]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for f in frames {
            f.encode_into(&mut out);
        }
        out.to_vec()
    }

    #[test]
    fn frames_split_across_reads_come_out_whole() {
        let frames = [
            Frame::new(FrameType::Heartbeat, vec![1, 2, 3]),
            Frame::new(FrameType::Envelope, vec![9; 1000]),
        ];
        let bytes = encoded(&frames);
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut out = Vec::new();
        for chunk in bytes.chunks(7) {
            dec.extend(chunk);
            while let Some(f) = dec.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut dec = FrameDecoder::new(MIN_MAX_FRAME);
        dec.extend(&[0, 2, 0, 0, FrameType::Envelope as u8]);
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                len: 0x20000,
                max: MIN_MAX_FRAME
            })
        );
    }

    #[test]
    fn unknown_type_is_refused() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        dec.extend(&[0, 0, 0, 0, 0xee]);
        assert_eq!(dec.next_frame(), Err(FrameError::UnknownType(0xee)));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoder(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut dec = FrameDecoder::new(1024);
            for c in chunks {
                dec.extend(&c);
                while let Ok(Some(f)) = dec.next_frame() {
                    prop_assert!(f.body.len() <= 1024);
                }
            }
        }
    }
}
