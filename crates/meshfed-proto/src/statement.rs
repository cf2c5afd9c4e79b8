//! Statements a mesh signs for its partners and sends over the control channel: a new trust
//! bundle (a CA rollover), a revocation list. A [`SignedStatement`] carries the statement's
//! bytes exactly as signed, the signer's certificate chain and the signature; the signature
//! covers [`signed_message`] — a fixed prefix, the kind and the bytes — so a signature made for
//! one kind of statement is never accepted as another, nor as an envelope or an agreement.
//!
//! This module only encodes and decodes; whether the signer is trusted is the trust crate's
//! question (`meshfed_trust::statement`), answered against the partner's stored bundle.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::cbor::{self, CborFault};
use crate::envelope::Timestamp;
use crate::id::MeshId;

/// Longest statement body, chain included, a peer may send (a bundle of two CAs, or a
/// revocation list of some thousand entries).
pub const MAX_STATEMENT_LEN: usize = 256 * 1024;
/// Most certificates in a signer chain: the signer and its issuing CA.
pub const MAX_CHAIN: usize = 2;

/// Prefix of every signed statement message.
const CONTEXT: &[u8] = b"meshfed signed statement v1\0";

/// What a statement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    /// The mesh's trust bundle from now on (signed by a CA of the bundle it replaces).
    TrustBundle,
    /// The mesh's revocation list (signed by its CA or one of its nodes).
    Revocations,
    /// The mesh's descriptor for a broker's discovery directory (signed by one of its nodes).
    Descriptor,
}

impl StatementKind {
    fn tag(self) -> u8 {
        match self {
            Self::TrustBundle => 1,
            Self::Revocations => 2,
            Self::Descriptor => 3,
        }
    }
}

/// A statement, its signer and its signature, as it crosses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedStatement {
    /// What the body is.
    pub kind: StatementKind,
    /// The statement's bytes (CBOR of its type), exactly as signed.
    pub body: ByteBuf,
    /// The signer's certificate (DER) first, then the CA that issued it if that is not in the
    /// receiver's bundle (an issuing CA).
    pub chain: Vec<ByteBuf>,
    /// ECDSA P-384 / SHA-384 over [`signed_message`] of `kind` and `body`, 96 bytes (r ‖ s).
    pub signature: ByteBuf,
}

/// A statement that does not decode or is out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// Not one CBOR statement.
    #[error("signed statement does not decode: {0}")]
    Malformed(String),
    /// Larger than [`MAX_STATEMENT_LEN`].
    #[error("signed statement is {len} bytes, at most {MAX_STATEMENT_LEN} are accepted")]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// No signer certificate, or more than [`MAX_CHAIN`].
    #[error("signed statement carries {count} signer certificates, 1 to {MAX_CHAIN} are accepted")]
    Chain {
        /// How many it carries.
        count: usize,
    },
}

impl SignedStatement {
    /// The wire form (CBOR).
    pub fn encode(&self) -> Vec<u8> {
        cbor::to_vec(self, self.body.len() + 1024)
    }

    /// Reads the wire form, refusing oversized input, trailing bytes and a chain of the wrong
    /// length. The signature is not checked here.
    pub fn decode(bytes: &[u8]) -> Result<Self, StatementError> {
        if bytes.len() > MAX_STATEMENT_LEN {
            return Err(StatementError::TooLarge { len: bytes.len() });
        }
        let statement: Self = cbor::from_slice(bytes).map_err(|e| malformed(e, "statement"))?;
        if statement.chain.is_empty() || statement.chain.len() > MAX_CHAIN {
            return Err(StatementError::Chain {
                count: statement.chain.len(),
            });
        }
        Ok(statement)
    }
}

/// What a [`StatementKind::TrustBundle`] statement says: mesh `mesh`'s trust bundle is `cas`
/// from now on. Serials only grow: a partner refuses one not above what it stored (so an older
/// statement, replayed, cannot bring back a retired CA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleStatement {
    /// The mesh whose bundle it is.
    pub mesh: MeshId,
    /// 1 for the first rollover's bundle, +1 at each change; the bundle of `meshfed init` is 0.
    pub serial: u64,
    /// When it was signed.
    pub issued_at: Timestamp,
    /// The CA certificates (DER), the one in use first: two during a rollover, one after.
    pub cas: Vec<ByteBuf>,
    /// Issuing CA certificates (DER) below those CAs that the mesh's node certificates will
    /// come from: links already up learn the new issuing CA here, as they saw the old one only
    /// in their TLS handshake.
    pub issuing: Vec<ByteBuf>,
}

impl BundleStatement {
    /// The bytes that are signed.
    pub fn encode(&self) -> Vec<u8> {
        cbor::to_vec(self, 4096)
    }

    /// Reads the signed bytes of a statement, refusing trailing bytes and an empty bundle.
    pub fn decode(bytes: &[u8]) -> Result<Self, StatementError> {
        let statement: Self =
            cbor::from_slice(bytes).map_err(|e| malformed(e, "bundle statement"))?;
        if statement.cas.is_empty() {
            return Err(StatementError::Malformed(
                "the bundle statement holds no CA certificate".to_owned(),
            ));
        }
        Ok(statement)
    }
}

/// What a [`StatementKind::Descriptor`] statement says: how to find mesh `mesh` and what it
/// offers, for a broker's discovery directory. It carries its mesh's CA certificate, so the
/// directory checks the signer against it; the directory is no trust anchor for all that
/// (anyone can make a CA naming any mesh): joining takes an invitation or a CA fingerprint
/// obtained out of band.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshDescriptor {
    /// The mesh described.
    pub mesh: MeshId,
    /// What it offers (topics, services, compliance frameworks), as free words.
    pub capabilities: Vec<String>,
    /// Where its gateway accepts federation links (`host:port`).
    pub addresses: Vec<String>,
    /// The mesh CA certificate (DER) the signer's chain leads to.
    pub ca: ByteBuf,
    /// When it was signed; a directory refuses one not newer than what it holds.
    pub issued: Timestamp,
    /// When it stops being listed.
    pub expires: Timestamp,
}

/// Most addresses and capabilities a descriptor lists, each.
pub const MAX_DESCRIPTOR_ITEMS: usize = 32;

impl MeshDescriptor {
    /// The bytes that are signed.
    pub fn encode(&self) -> Vec<u8> {
        cbor::to_vec(self, 2048)
    }

    /// Reads the signed bytes of a descriptor, refusing trailing bytes, too many items, an
    /// item over 256 bytes and an expiry not after its issue time.
    pub fn decode(bytes: &[u8]) -> Result<Self, StatementError> {
        let d: Self = cbor::from_slice(bytes).map_err(|e| malformed(e, "mesh descriptor"))?;
        for (what, items) in [
            ("addresses", &d.addresses),
            ("capabilities", &d.capabilities),
        ] {
            if items.len() > MAX_DESCRIPTOR_ITEMS || items.iter().any(|i| i.len() > 256) {
                return Err(StatementError::Malformed(format!(
                    "the mesh descriptor's {what}: at most {MAX_DESCRIPTOR_ITEMS} of at most 256 bytes each"
                )));
            }
        }
        if d.expires <= d.issued {
            return Err(StatementError::Malformed(
                "the mesh descriptor expires before it is issued".to_owned(),
            ));
        }
        Ok(d)
    }
}

fn malformed(fault: CborFault, what: &str) -> StatementError {
    StatementError::Malformed(match fault {
        CborFault::NotCbor(e) => e,
        CborFault::Trailing(n) => format!("{n} bytes after the {what}"),
    })
}

/// The bytes a statement's signature covers.
pub fn signed_message(kind: StatementKind, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(CONTEXT.len() + 1 + body.len());
    msg.extend_from_slice(CONTEXT);
    msg.push(kind.tag());
    msg.extend_from_slice(body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SignedStatement {
        SignedStatement {
            kind: StatementKind::Revocations,
            body: ByteBuf::from(vec![1, 2, 3]),
            chain: vec![ByteBuf::from(vec![9; 10])],
            signature: ByteBuf::from(vec![7; 96]),
        }
    }

    fn descriptor() -> MeshDescriptor {
        MeshDescriptor {
            mesh: "plant-a".parse().unwrap(),
            capabilities: vec!["telemetry".into()],
            addresses: vec!["10.0.0.1:7443".into()],
            ca: ByteBuf::from(vec![3; 20]),
            issued: Timestamp(1_000),
            expires: Timestamp(2_000),
        }
    }

    #[test]
    fn a_descriptor_reads_back_and_one_out_of_bounds_is_refused() {
        let d = descriptor();
        assert_eq!(MeshDescriptor::decode(&d.encode()), Ok(d));
        let backwards = MeshDescriptor {
            expires: Timestamp(1_000),
            ..descriptor()
        };
        assert_eq!(
            MeshDescriptor::decode(&backwards.encode()),
            Err(StatementError::Malformed(
                "the mesh descriptor expires before it is issued".into()
            ))
        );
        let crowded = MeshDescriptor {
            addresses: vec!["a:1".into(); MAX_DESCRIPTOR_ITEMS + 1],
            ..descriptor()
        };
        assert!(matches!(
            MeshDescriptor::decode(&crowded.encode()),
            Err(StatementError::Malformed(m)) if m.contains("addresses")
        ));
    }

    #[test]
    fn a_statement_reads_back_as_it_was_written() {
        let s = sample();
        assert_eq!(SignedStatement::decode(&s.encode()), Ok(s));
    }

    #[test]
    fn trailing_bytes_an_empty_chain_and_oversized_input_are_refused() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert!(matches!(
            SignedStatement::decode(&bytes),
            Err(StatementError::Malformed(m)) if m.contains("1 bytes after")
        ));
        let mut s = sample();
        s.chain.clear();
        assert_eq!(
            SignedStatement::decode(&s.encode()),
            Err(StatementError::Chain { count: 0 })
        );
        let big = vec![0u8; MAX_STATEMENT_LEN + 1];
        assert_eq!(
            SignedStatement::decode(&big),
            Err(StatementError::TooLarge {
                len: MAX_STATEMENT_LEN + 1
            })
        );
    }

    #[test]
    fn a_bundle_statement_reads_back_and_refuses_an_empty_bundle() {
        let mut b = BundleStatement {
            mesh: "plant-a".parse().unwrap_or_else(|e| panic!("{e}")),
            serial: 3,
            issued_at: Timestamp(1_700_000_000_000),
            cas: vec![ByteBuf::from(vec![0x30, 1]), ByteBuf::from(vec![0x30, 2])],
            issuing: vec![ByteBuf::from(vec![0x30, 3])],
        };
        assert_eq!(BundleStatement::decode(&b.encode()), Ok(b.clone()));
        b.cas.clear();
        assert!(matches!(
            BundleStatement::decode(&b.encode()),
            Err(StatementError::Malformed(m)) if m.contains("no CA")
        ));
    }

    #[test]
    fn the_kind_is_part_of_what_is_signed() {
        assert_ne!(
            signed_message(StatementKind::TrustBundle, b"x"),
            signed_message(StatementKind::Revocations, b"x")
        );
    }
}
