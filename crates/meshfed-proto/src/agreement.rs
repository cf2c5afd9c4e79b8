//! The federation agreement: what both sides agreed in the handshake, signed by both, stored in
//! both registries. Encoded once by the initiator as CBOR; the responder checks every field
//! against its own view before signing, and both keep the identical bytes.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::capability::Accepted;
use crate::crypto::{Digest384, sha384};
use crate::envelope::Timestamp;
use crate::id::{FederationId, MeshId, NodeName};
use crate::policy::PolicyTerms;

/// One side of an agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// Its mesh.
    pub mesh: MeshId,
    /// The node that negotiated.
    pub node: NodeName,
    /// Its trust bundle (CA certificates, DER).
    pub bundle: Vec<ByteBuf>,
}

/// A federation agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// The federation.
    pub federation_id: FederationId,
    /// Agreement version: 1 at the handshake, +1 at each renegotiation.
    pub version: u32,
    /// The side that dialled.
    pub initiator: Party,
    /// The side that answered.
    pub responder: Party,
    /// Accepted capabilities.
    pub capabilities: Accepted,
    /// Agreed policy terms.
    pub policy: PolicyTerms,
    /// Start of validity.
    pub valid_from: Timestamp,
    /// End of validity.
    pub valid_until: Timestamp,
}

/// Agreement bytes that do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agreement does not decode: {0}")]
pub struct MalformedAgreement(pub String);

impl Agreement {
    /// The CBOR bytes that are signed and stored.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2048);
        // Invariant: encoding plain structs into a Vec cannot fail.
        ciborium::into_writer(self, &mut out)
            .unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
        out
    }

    /// Reads agreement bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, MalformedAgreement> {
        ciborium::from_reader(bytes).map_err(|e| MalformedAgreement(e.to_string()))
    }

    /// The party other than `mesh`.
    pub fn peer_of(&self, mesh: &MeshId) -> &Party {
        if &self.initiator.mesh == mesh {
            &self.responder
        } else {
            &self.initiator
        }
    }
}

/// An agreement with both signatures, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAgreement {
    /// The agreement's bytes exactly as signed.
    pub bytes: ByteBuf,
    /// The initiator's signature (over the establishment input).
    pub initiator_signature: ByteBuf,
    /// The responder's signature (over the confirmation input).
    pub responder_signature: ByteBuf,
}

impl SignedAgreement {
    /// SHA-384 of the agreement bytes.
    pub fn digest(&self) -> Digest384 {
        sha384(&self.bytes)
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 256);
        // Invariant: encoding plain structs into a Vec cannot fail.
        ciborium::into_writer(self, &mut out)
            .unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
        out
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<Self, MalformedAgreement> {
        ciborium::from_reader(bytes).map_err(|e| MalformedAgreement(e.to_string()))
    }

    /// The agreement itself.
    pub fn agreement(&self) -> Result<Agreement, MalformedAgreement> {
        Agreement::decode(&self.bytes)
    }
}
