//! Invitation tokens: the opaque string `meshfed federation invite` prints and
//! `meshfed federation join` takes (as Consul peering tokens and Skupper claims).
//!
//! A token is `mfi1.` followed by base64url (no padding) of a CBOR map carrying the inviting mesh,
//! the addresses to dial, the SHA-384 fingerprint of the inviter's CA, the invitation id, the
//! one-time 256-bit secret, the mesh invited and the expiry. Whoever holds the token can join
//! once, as the mesh it names, before it expires; the inviter keeps only a verifier key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::crypto::{DIGEST_LEN, Digest384};
use crate::envelope::Timestamp;
use crate::handshake::Invitation;
use crate::id::MeshId;

const PREFIX: &str = "mfi1.";
/// Longest token accepted, in characters.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Most addresses a token may carry.
pub const MAX_ADDRESSES: usize = 16;

/// A decoded invitation token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationToken {
    /// The inviting mesh.
    pub inviter: MeshId,
    /// The mesh invited; only it can use the token.
    pub invitee: MeshId,
    /// Where the inviter's gateways listen (`host:port`).
    pub addresses: Vec<String>,
    /// SHA-384 of the inviter's CA certificate (DER).
    pub ca_fingerprint: Digest384,
    /// The invitation's public id.
    pub token_id: String,
    /// The one-time secret.
    pub secret: [u8; 32],
    /// When the token stops working.
    pub expires: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    from: String,
    to: String,
    addrs: Vec<String>,
    ca: ByteBuf,
    id: String,
    secret: ByteBuf,
    exp: u64,
}

/// What a damaged token says: the decoder's details mean nothing to the person holding it.
const DAMAGED: &str = "invitation token is damaged or incomplete: copy the whole token again, as `meshfed federation invite` printed it on the inviting mesh";

/// A token that cannot be read; says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a meshfed invitation token at all.
    #[error("not a meshfed invitation token (it should start with {PREFIX})")]
    NotAToken,
    /// Longer than any token meshfed makes.
    #[error("invitation token is {0} characters long, more than {MAX_TOKEN_LEN}")]
    TooLong(usize),
    /// The text after the prefix is not base64url (the decoder's reason, for logs).
    #[error("{DAMAGED}")]
    Encoding(String),
    /// The content does not decode (the decoder's reason, for logs).
    #[error("{DAMAGED}")]
    Content(String),
    /// A field is out of its rule.
    #[error("invitation token field {field}: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn field(field: &'static str, reason: impl std::fmt::Display) -> TokenError {
    TokenError::Field {
        field,
        reason: reason.to_string(),
    }
}

impl InvitationToken {
    /// The token as the string users copy.
    pub fn encode(&self) -> String {
        let wire = Wire {
            from: self.inviter.to_string(),
            to: self.invitee.to_string(),
            addrs: self.addresses.clone(),
            ca: ByteBuf::from(self.ca_fingerprint.to_vec()),
            id: self.token_id.clone(),
            secret: ByteBuf::from(self.secret.to_vec()),
            exp: self.expires.0,
        };
        let mut cbor = Vec::with_capacity(256);
        // Invariant: encoding plain structs into a Vec cannot fail.
        ciborium::into_writer(&wire, &mut cbor)
            .unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(cbor))
    }

    /// Reads a token, checking every field.
    pub fn decode(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong(text.len()));
        }
        let body = text.strip_prefix(PREFIX).ok_or(TokenError::NotAToken)?;
        let cbor = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| TokenError::Encoding(e.to_string()))?;
        let w: Wire = ciborium::from_reader(cbor.as_slice())
            .map_err(|e| TokenError::Content(e.to_string()))?;
        if w.addrs.is_empty() || w.addrs.len() > MAX_ADDRESSES {
            return Err(field(
                "addresses",
                format!(
                    "has {} entries, must have 1 to {MAX_ADDRESSES}",
                    w.addrs.len()
                ),
            ));
        }
        if let Some(bad) = w.addrs.iter().find(|a| !valid_address(a)) {
            return Err(field("addresses", format!("{bad:?} is not host:port")));
        }
        let ok_id = !w.id.is_empty()
            && w.id.len() <= 64
            && w.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok_id {
            return Err(field("id", "must be 1 to 64 letters, digits or '_'"));
        }
        Ok(Self {
            inviter: w.from.parse().map_err(|e| field("inviter", e))?,
            invitee: w.to.parse().map_err(|e| field("invitee", e))?,
            addresses: w.addrs,
            ca_fingerprint: w.ca.as_slice().try_into().map_err(|_| {
                field(
                    "ca_fingerprint",
                    format!("is {} bytes, not {DIGEST_LEN}", w.ca.len()),
                )
            })?,
            token_id: w.id,
            secret: w
                .secret
                .as_slice()
                .try_into()
                .map_err(|_| field("secret", format!("is {} bytes, not 32", w.secret.len())))?,
            expires: Timestamp(w.exp),
        })
    }

    /// The invitation as the joining handshake uses it.
    pub fn invitation(&self) -> Invitation {
        Invitation {
            token_id: self.token_id.clone(),
            inviter: self.inviter.clone(),
            ca_fingerprint: self.ca_fingerprint,
            secret: self.secret,
        }
    }
}

/// `host:port` with a non-empty host of printable characters and a numeric port.
fn valid_address(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_graphic())
        && port.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn token() -> InvitationToken {
        InvitationToken {
            inviter: "supplier-b".parse().unwrap(),
            invitee: "plant-a".parse().unwrap(),
            addresses: vec!["127.0.0.1:7443".into()],
            ca_fingerprint: [3; 48],
            token_id: "tok_0123".into(),
            secret: [9; 32],
            expires: Timestamp(1_700_000_000_000),
        }
    }

    #[test]
    fn token_round_trips_through_its_string() {
        let t = token();
        let s = t.encode();
        assert!(
            s.starts_with("mfi1.") && !s.contains(['+', '/', '=']),
            "{s}"
        );
        assert_eq!(InvitationToken::decode(&format!("  {s}\n")).unwrap(), t);
    }

    #[test]
    fn damaged_tokens_say_what_is_wrong() {
        assert_eq!(
            InvitationToken::decode("hello").unwrap_err(),
            TokenError::NotAToken
        );
        assert!(matches!(
            InvitationToken::decode("mfi1.!!!"),
            Err(TokenError::Encoding(_))
        ));
        let mut s = token().encode();
        s.truncate(s.len() - 10);
        assert!(matches!(
            InvitationToken::decode(&s),
            Err(TokenError::Content(_)) | Err(TokenError::Encoding(_))
        ));
        let mut t = token();
        t.addresses = vec!["no-port".into()];
        let err = InvitationToken::decode(&t.encode())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invitation token field addresses: \"no-port\" is not host:port"
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_text_never_panics(s in "\\PC{0,300}") {
            let _ = InvitationToken::decode(&s);
            let _ = InvitationToken::decode(&format!("mfi1.{s}"));
        }
    }
}
