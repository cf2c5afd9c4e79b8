//! A message accepted for sending, as it waits in its federation's stream, and its stored form
//! in the journal.

use meshfed_proto::envelope::{Header, SignerCertificate};

use super::room::Reservation;

/// A message accepted for sending: its header and clear payload. It is sealed and signed at
/// each transmission, under the content key of the link session it leaves on, and its header
/// gets the signer's certificate then: kept, stored and restored without it (about 600 bytes
/// of 1.7 KiB for a 1 KiB message), it always names the key that signs it.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) header: Header,
    pub(crate) payload: Vec<u8>,
    /// A reliable message's room in its stream, given back when the last reference to the
    /// message goes (see [`super::room`]); `None` for qos 0 and for messages restored from the
    /// journal (re-admitted beyond the limits: an accepted message is never lost).
    #[expect(dead_code, reason = "held for its drop, which gives the room back")]
    pub(crate) room: Option<Reservation>,
}

/// The stored form of a pending message: the header's CBOR encoding and the clear payload
/// (the journal is this gateway's own disk; the message is sealed for the peer when sent),
/// framed as `[u32 header length, big-endian][header][payload]`.
pub(crate) fn encode_stored(pending: &Pending) -> Vec<u8> {
    let header = pending.header.encode();
    let mut out = Vec::with_capacity(4 + header.len() + pending.payload.len());
    out.extend_from_slice(
        &u32::try_from(header.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&header);
    out.extend_from_slice(&pending.payload);
    out
}

/// Reads a stored pending message back.
pub(crate) fn decode_stored(bytes: &[u8]) -> Result<Pending, String> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or("shorter than its length prefix")?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(format!(
            "header of {len} bytes announced, {} present",
            rest.len()
        ));
    }
    let (header, payload) = rest.split_at(len);
    let mut header = Header::decode(header).map_err(|e| format!("header: {e}"))?;
    header.encryption = None;
    header.certificate = SignerCertificate::default();
    Ok(Pending {
        header,
        payload: payload.to_vec(),
        room: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        let pki = meshfed_testkit::TestPki::new("plant-a");
        let header = pki.node("gw1").envelope_header("supplier-b", "line-3/temp");
        Pending {
            header,
            payload: b"line 3 at 71.5 C".to_vec(),
            room: None,
        }
    }

    #[test]
    fn stored_form_round_trips_and_refuses_truncation() {
        let mut p = pending();
        let bytes = encode_stored(&p);
        let back = decode_stored(&bytes).unwrap();
        // The certificate is the signer's at transmission, never a stored one.
        assert!(p.header.certificate.der().is_some());
        p.header.certificate = SignerCertificate::default();
        assert_eq!(back.header, p.header);
        assert_eq!(back.payload, p.payload);
        assert_eq!(
            decode_stored(&bytes[..3]).unwrap_err(),
            "shorter than its length prefix"
        );
        let err = decode_stored(&bytes[..10]).unwrap_err();
        assert!(err.contains("announced"), "{err}");
        let mut bad = bytes.clone();
        bad[5] ^= 0xff;
        assert!(decode_stored(&bad).unwrap_err().starts_with("header: "));
    }
}
