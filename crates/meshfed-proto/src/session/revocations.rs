//! The revocation exchange's control bodies: a mesh's signed revocation list (`Revocations`) and
//! the answer naming the version the receiver stored (`RevocationsAck`).
//!
//! The session checks only the form: the statement decodes, is of kind
//! [`StatementKind::Revocations`] and carries a [`RevocationList`] within its bounds. Whether its
//! signer is trusted and whether it may replace the stored list is for the driver
//! (`meshfed_trust::verify_statement`, [`RevocationList::check_successor`]), which answers with
//! [`super::LinkSession::acknowledge_revocations`] once the list is stored.

use serde::{Deserialize, Serialize};

use super::bodies::{BodyError, BodyFault};
use crate::MeshId;
use crate::frame::FrameType;
use crate::revocation::RevocationList;
use crate::statement::{SignedStatement, StatementKind};

/// The body of a `Revocations` frame: the statement as it crossed and the list it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationsBody {
    statement: SignedStatement,
    list: RevocationList,
}

/// The body of a `RevocationsAck` frame: the receiver stored (or already had) `mesh`'s list at
/// `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationsAck {
    /// The mesh whose list it is (the acknowledging side's peer).
    pub mesh: MeshId,
    /// The version now stored.
    pub version: u64,
}

impl RevocationsBody {
    /// The body for `statement`, if it is a revocation list within bounds.
    pub fn new(statement: SignedStatement) -> Result<Self, BodyError> {
        let fault = |fault| BodyError {
            frame: FrameType::Revocations,
            fault,
        };
        if statement.kind != StatementKind::Revocations {
            return Err(fault(BodyFault::Invalid(format!(
                "a {:?} statement where a revocation list belongs",
                statement.kind
            ))));
        }
        let list = RevocationList::decode(&statement.body)
            .map_err(|e| fault(BodyFault::Invalid(e.to_string())))?;
        Ok(Self { statement, list })
    }

    /// The signed statement, exactly as it crossed (to verify and store).
    pub fn statement(&self) -> &SignedStatement {
        &self.statement
    }

    /// The list it carries (not yet verified).
    pub fn list(&self) -> &RevocationList {
        &self.list
    }

    /// The wire form: the statement's.
    pub fn encode(&self) -> Vec<u8> {
        self.statement.encode()
    }

    /// Reads a body: a signed statement of kind revocations whose list decodes.
    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        let statement = SignedStatement::decode(bytes).map_err(|e| BodyError {
            frame: FrameType::Revocations,
            fault: BodyFault::Invalid(e.to_string()),
        })?;
        Self::new(statement)
    }
}

impl RevocationsAck {
    /// The CBOR body.
    pub fn encode(&self) -> Vec<u8> {
        super::bodies::encode(self)
    }

    /// Reads a body.
    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        super::bodies::decode(FrameType::RevocationsAck, bytes)
    }
}

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::envelope::Timestamp;

    fn statement(kind: StatementKind, body: Vec<u8>) -> SignedStatement {
        SignedStatement {
            kind,
            body: ByteBuf::from(body),
            chain: vec![ByteBuf::from(vec![1; 8])],
            signature: ByteBuf::from(vec![2; 96]),
        }
    }

    fn list() -> RevocationList {
        let mesh: MeshId = "plant-a".parse().unwrap();
        RevocationList::empty(mesh, Timestamp(1))
            .revoke(&"gw2".parse().unwrap(), &[vec![7; 16]], Timestamp(2))
            .unwrap()
    }

    #[test]
    fn a_revocation_list_body_reads_back_with_its_list() {
        let body =
            RevocationsBody::new(statement(StatementKind::Revocations, list().encode())).unwrap();
        let back = RevocationsBody::decode(&body.encode()).unwrap();
        assert_eq!(back, body);
        assert_eq!(back.list(), &list());
    }

    #[test]
    fn another_kind_of_statement_or_a_bad_list_is_refused_naming_the_frame() {
        let err = RevocationsBody::new(statement(StatementKind::TrustBundle, list().encode()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Revocations body refused: a TrustBundle statement where a revocation list belongs"
        );
        let err =
            RevocationsBody::new(statement(StatementKind::Revocations, vec![0xa0])).unwrap_err();
        assert_eq!(err.frame, FrameType::Revocations);
        assert!(err.to_string().contains("revocation list"), "{err}");
        let err = RevocationsBody::decode(&[0x01, 0x02]).unwrap_err();
        assert!(err.to_string().contains("signed statement"), "{err}");
    }

    #[test]
    fn an_ack_reads_back_and_refuses_trailing_bytes() {
        let ack = RevocationsAck {
            mesh: "plant-a".parse().unwrap(),
            version: 3,
        };
        assert_eq!(RevocationsAck::decode(&ack.encode()).unwrap(), ack);
        let mut bytes = ack.encode();
        bytes.push(0);
        assert_eq!(
            RevocationsAck::decode(&bytes).unwrap_err().to_string(),
            "RevocationsAck body refused: 1 bytes follow the body"
        );
    }
}
