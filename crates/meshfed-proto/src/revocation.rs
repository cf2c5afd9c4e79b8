//! A mesh's revocation list: the nodes and the single certificates it no longer trusts, and the
//! delegations it withdrew, as it publishes them to its partners in a [`crate::statement::SignedStatement`] of kind
//! [`crate::statement::StatementKind::Revocations`].
//!
//! A node entry revokes **every** certificate naming `meshfed://<mesh>/<node>`, including those
//! the publisher never saw (a stolen gateway holding the issuing CA key can mint more); a serial
//! entry revokes one certificate; a delegation entry withdraws one delegation the mesh signed (by
//! its id, the JWT's `jti`), wherever it is presented. Lists only grow: each change is the next version, holding
//! everything the one before it held ([`RevocationList::check_successor`]); a receiver keeps the
//! list it stored when offered one that is not a successor.
//!
//! This module only encodes, decodes and compares; who may sign a list is the trust crate's
//! question, what a revocation closes is the node's.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::envelope::Timestamp;
use crate::{MeshId, NodeName};

/// Most entries (nodes and serials together) in one list, so that a signed list always fits in
/// the smallest frame a link may negotiate (64 KiB).
pub const MAX_REVOCATIONS: usize = 512;
/// Longest certificate serial number, in bytes (RFC 5280: at most 20 octets).
pub const MAX_SERIAL_LEN: usize = 20;
/// Highest version a list may have (what a signed 64-bit integer holds, as stores keep it).
pub const MAX_VERSION: u64 = i64::MAX.unsigned_abs();

/// A mesh's revocation list, one version of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    /// The mesh whose nodes and certificates are revoked.
    pub mesh: MeshId,
    /// From 1, one more per change.
    pub version: u64,
    /// When this version was made.
    pub issued_at: Timestamp,
    /// Nodes revoked: every certificate naming one of them.
    pub nodes: Vec<RevokedNode>,
    /// Single certificates revoked, by serial number.
    pub serials: Vec<RevokedSerial>,
    /// Delegations withdrawn, by id. Absent from the wire form while empty, so a list without
    /// any reads (and verifies) as it did before delegations existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegations: Vec<RevokedDelegation>,
}

/// Longest delegation id, in characters (a JWT `jti`; this mesh's own are 32 hex digits).
pub const MAX_DELEGATION_ID_LEN: usize = 64;

/// A delegation withdrawn, by its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedDelegation {
    /// The delegation's id (`jti`): 1 to [`MAX_DELEGATION_ID_LEN`] ASCII letters and digits.
    pub id: String,
    /// When it was withdrawn.
    pub revoked_at: Timestamp,
}

/// A node whose every certificate is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedNode {
    /// The node's name within the list's mesh.
    pub node: NodeName,
    /// When it was revoked.
    pub revoked_at: Timestamp,
}

/// A certificate revoked by its serial number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedSerial {
    /// The serial number, big-endian, without leading zero bytes, 1 to [`MAX_SERIAL_LEN`] bytes.
    pub serial: ByteBuf,
    /// When it was revoked.
    pub revoked_at: Timestamp,
}

/// A list that does not decode, is out of bounds, or may not replace the stored one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationListError {
    /// Not one CBOR revocation list.
    #[error("revocation list does not decode: {0}")]
    Malformed(String),
    /// More than [`MAX_REVOCATIONS`] entries.
    #[error("revocation list has {count} entries, at most {MAX_REVOCATIONS} are accepted")]
    TooManyEntries {
        /// Nodes, serials and delegations together.
        count: usize,
    },
    /// A serial number that is empty, too long or has a leading zero byte.
    #[error(
        "revocation list names a serial number of {len} bytes (1 to {MAX_SERIAL_LEN}, no leading zero)"
    )]
    BadSerial {
        /// Its length.
        len: usize,
    },
    /// A delegation id that is empty, too long or not letters and digits.
    #[error(
        "revocation list names delegation {0:?}: an id is 1 to {MAX_DELEGATION_ID_LEN} ASCII letters and digits"
    )]
    BadDelegationId(String),
    /// The same node, serial or delegation twice.
    #[error("revocation list names {0} twice")]
    Duplicate(String),
    /// Version 0 (versions start at 1).
    #[error("revocation list version 0 is not a version (they start at 1)")]
    VersionZero,
    /// A version above [`MAX_VERSION`].
    #[error("revocation list version {0} is above the highest version, {MAX_VERSION}")]
    VersionTooHigh(u64),
    /// A list of another mesh than the one it should be.
    #[error("revocation list is mesh {found}'s, expected mesh {expected}'s")]
    WrongMesh {
        /// The mesh expected.
        expected: MeshId,
        /// The mesh the list names.
        found: MeshId,
    },
    /// Not newer than the stored list.
    #[error("revocation list version {offered} is not newer than the stored version {stored}")]
    NotNewer {
        /// The stored version.
        stored: u64,
        /// The version offered.
        offered: u64,
    },
    /// Drops an entry the stored list has: lists only grow.
    #[error("revocation list version {offered} drops {entry}, which version {stored} revoked")]
    Dropped {
        /// The stored version.
        stored: u64,
        /// The version offered.
        offered: u64,
        /// What it drops.
        entry: String,
    },
}

/// Why a certificate is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Its node is revoked.
    Node,
    /// Its serial number is revoked.
    Serial,
}

impl RevocationList {
    /// The wire form (CBOR), as signed.
    pub fn encode(&self) -> Vec<u8> {
        crate::cbor::to_vec(self, 256)
    }

    /// Reads the wire form, refusing trailing bytes, too many entries, malformed serials,
    /// duplicates and version 0.
    pub fn decode(bytes: &[u8]) -> Result<Self, RevocationListError> {
        let list: Self = crate::cbor::from_slice(bytes).map_err(|e| {
            RevocationListError::Malformed(match e {
                crate::cbor::CborFault::NotCbor(e) => e,
                crate::cbor::CborFault::Trailing(n) => format!("{n} bytes after the list"),
            })
        })?;
        list.check_bounds()?;
        Ok(list)
    }

    /// `mesh`'s list before any revocation: version 0, empty, never published; the first
    /// [`RevocationList::revoke`] makes version 1 of it.
    pub fn empty(mesh: MeshId, at: Timestamp) -> Self {
        Self {
            mesh,
            version: 0,
            issued_at: at,
            nodes: Vec::new(),
            serials: Vec::new(),
            delegations: Vec::new(),
        }
    }

    /// The next version: this one plus `node` and `serials` (those not listed already), made at
    /// `at`. Refused when it would hold more than [`MAX_REVOCATIONS`] entries.
    pub fn revoke(
        &self,
        node: &NodeName,
        serials: &[Vec<u8>],
        at: Timestamp,
    ) -> Result<Self, RevocationListError> {
        let mut next = self.clone();
        next.version = self.version.saturating_add(1);
        next.issued_at = at;
        if !next.nodes.iter().any(|n| &n.node == node) {
            next.nodes.push(RevokedNode {
                node: node.clone(),
                revoked_at: at,
            });
        }
        for serial in serials {
            if !next.serials.iter().any(|s| s.serial[..] == serial[..]) {
                next.serials.push(RevokedSerial {
                    serial: ByteBuf::from(serial.clone()),
                    revoked_at: at,
                });
            }
        }
        next.check_bounds()?;
        Ok(next)
    }

    /// The next version: this one plus the delegation `id` (if not listed already), made at
    /// `at`.
    pub fn revoke_delegation(&self, id: &str, at: Timestamp) -> Result<Self, RevocationListError> {
        let mut next = self.clone();
        next.version = self.version.saturating_add(1);
        next.issued_at = at;
        if !next.revokes_delegation(id) {
            next.delegations.push(RevokedDelegation {
                id: id.to_owned(),
                revoked_at: at,
            });
        }
        next.check_bounds()?;
        Ok(next)
    }

    /// Whether the delegation `id` (signed by this list's mesh) is withdrawn.
    pub fn revokes_delegation(&self, id: &str) -> bool {
        self.delegations.iter().any(|d| d.id == id)
    }

    /// Whether a certificate of `node` (of this list's mesh) with `serial` is revoked, and why.
    pub fn revokes(&self, node: &NodeName, serial: &[u8]) -> Option<Revoked> {
        if self.nodes.iter().any(|n| &n.node == node) {
            return Some(Revoked::Node);
        }
        if self.serials.iter().any(|s| s.serial[..] == *serial) {
            return Some(Revoked::Serial);
        }
        None
    }

    /// Whether `next` may replace this list: same mesh, a higher version, and every entry of
    /// this one still in it.
    pub fn check_successor(&self, next: &Self) -> Result<(), RevocationListError> {
        if next.mesh != self.mesh {
            return Err(RevocationListError::WrongMesh {
                expected: self.mesh.clone(),
                found: next.mesh.clone(),
            });
        }
        if next.version <= self.version {
            return Err(RevocationListError::NotNewer {
                stored: self.version,
                offered: next.version,
            });
        }
        let dropped = |entry: String| RevocationListError::Dropped {
            stored: self.version,
            offered: next.version,
            entry,
        };
        if let Some(n) = self
            .nodes
            .iter()
            .find(|n| !next.nodes.iter().any(|m| m.node == n.node))
        {
            return Err(dropped(format!("node {}", n.node)));
        }
        if let Some(s) = self
            .serials
            .iter()
            .find(|s| !next.serials.iter().any(|t| t.serial == s.serial))
        {
            return Err(dropped(format!("serial {}", hex::encode(&s.serial))));
        }
        if let Some(d) = self
            .delegations
            .iter()
            .find(|d| !next.revokes_delegation(&d.id))
        {
            return Err(dropped(format!("delegation {}", d.id)));
        }
        Ok(())
    }

    fn check_bounds(&self) -> Result<(), RevocationListError> {
        if self.version == 0 {
            return Err(RevocationListError::VersionZero);
        }
        if self.version > MAX_VERSION {
            return Err(RevocationListError::VersionTooHigh(self.version));
        }
        let count = self
            .nodes
            .len()
            .saturating_add(self.serials.len())
            .saturating_add(self.delegations.len());
        if count > MAX_REVOCATIONS {
            return Err(RevocationListError::TooManyEntries { count });
        }
        let mut nodes = HashSet::with_capacity(self.nodes.len());
        for n in &self.nodes {
            if !nodes.insert(&n.node) {
                return Err(RevocationListError::Duplicate(format!("node {}", n.node)));
            }
        }
        let mut serials = HashSet::with_capacity(self.serials.len());
        for s in &self.serials {
            if s.serial.is_empty() || s.serial.len() > MAX_SERIAL_LEN || s.serial[0] == 0 {
                return Err(RevocationListError::BadSerial {
                    len: s.serial.len(),
                });
            }
            if !serials.insert(&s.serial[..]) {
                return Err(RevocationListError::Duplicate(format!(
                    "serial {}",
                    hex::encode(&s.serial)
                )));
            }
        }
        let mut delegations = HashSet::with_capacity(self.delegations.len());
        for d in &self.delegations {
            let ok = (1..=MAX_DELEGATION_ID_LEN).contains(&d.id.len())
                && d.id.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok {
                return Err(RevocationListError::BadDelegationId(
                    d.id.chars().take(80).collect(),
                ));
            }
            if !delegations.insert(&d.id) {
                return Err(RevocationListError::Duplicate(format!(
                    "delegation {}",
                    d.id
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeName {
        name.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn first() -> RevocationList {
        let mesh: MeshId = "plant-a".parse().unwrap_or_else(|e| panic!("{e}"));
        RevocationList::empty(mesh, Timestamp(1))
            .revoke(&node("gw2"), &[vec![0x41; 16]], Timestamp(5))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_list_reads_back_as_it_was_written() {
        let list = first();
        assert_eq!(list.version, 1);
        assert_eq!(RevocationList::decode(&list.encode()), Ok(list));
    }

    #[test]
    fn a_node_entry_revokes_every_certificate_of_the_node_and_a_serial_one_certificate() {
        let list = first();
        assert_eq!(list.revokes(&node("gw2"), &[1, 2]), Some(Revoked::Node));
        assert_eq!(
            list.revokes(&node("gw1"), &[0x41; 16]),
            Some(Revoked::Serial)
        );
        assert_eq!(list.revokes(&node("gw1"), &[1, 2]), None);
    }

    #[test]
    fn a_withdrawn_delegation_is_listed_kept_by_successors_and_absent_lists_read_as_before() {
        let v1 = first();
        assert!(
            !v1.encode()
                .windows(b"delegations".len())
                .any(|w| w == b"delegations"),
            "a list without delegations keeps its old wire form"
        );
        let v2 = v1
            .revoke_delegation("00aa11bb", Timestamp(7))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(v2.revokes_delegation("00aa11bb"));
        assert!(!v2.revokes_delegation("00aa11bc"));
        assert_eq!(RevocationList::decode(&v2.encode()), Ok(v2.clone()));
        let mut dropped = v2.clone();
        dropped.version = 3;
        dropped.delegations.clear();
        assert_eq!(
            v2.check_successor(&dropped).map_err(|e| e.to_string()),
            Err(
                "revocation list version 3 drops delegation 00aa11bb, which version 2 revoked"
                    .to_owned()
            )
        );
        let mut bad = v2;
        bad.delegations[0].id = "no spaces".into();
        assert!(matches!(
            RevocationList::decode(&bad.encode()),
            Err(RevocationListError::BadDelegationId(_))
        ));
    }

    #[test]
    fn a_successor_must_be_newer_and_keep_every_entry() {
        let v1 = first();
        let v2 = v1
            .revoke(&node("gw3"), &[], Timestamp(9))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v2.version, 2);
        assert_eq!(v1.check_successor(&v2), Ok(()));
        assert_eq!(
            v2.check_successor(&v1),
            Err(RevocationListError::NotNewer {
                stored: 2,
                offered: 1
            })
        );
        let mut shrunk = v2.clone();
        shrunk.version = 3;
        shrunk.nodes.retain(|n| n.node.as_str() != "gw2");
        assert_eq!(
            v2.check_successor(&shrunk).map_err(|e| e.to_string()),
            Err("revocation list version 3 drops node gw2, which version 2 revoked".to_owned())
        );
        let mut no_serial = v2.clone();
        no_serial.version = 3;
        no_serial.serials.clear();
        assert!(matches!(
            v2.check_successor(&no_serial),
            Err(RevocationListError::Dropped { .. })
        ));
        let mut other = v2.clone();
        other.version = 3;
        other.mesh = "plant-b".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            v2.check_successor(&other),
            Err(RevocationListError::WrongMesh { .. })
        ));
    }

    #[test]
    fn revoking_again_adds_no_duplicate() {
        let v1 = first();
        let v2 = v1
            .revoke(&node("gw2"), &[vec![0x41; 16]], Timestamp(9))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((v2.nodes.len(), v2.serials.len()), (1, 1));
    }

    #[test]
    fn out_of_bounds_lists_are_refused() {
        let mut bytes = first().encode();
        bytes.push(0);
        assert!(matches!(
            RevocationList::decode(&bytes),
            Err(RevocationListError::Malformed(m)) if m.contains("1 bytes after")
        ));
        assert!(matches!(
            RevocationList::decode(&[0xff, 0x00]),
            Err(RevocationListError::Malformed(_))
        ));
        let mut zero = first();
        zero.version = 0;
        assert_eq!(
            RevocationList::decode(&zero.encode()),
            Err(RevocationListError::VersionZero)
        );
        let mut high = first();
        high.version = MAX_VERSION + 1;
        assert_eq!(
            RevocationList::decode(&high.encode()),
            Err(RevocationListError::VersionTooHigh(MAX_VERSION + 1))
        );
        for serial in [vec![], vec![0, 1], vec![1; MAX_SERIAL_LEN + 1]] {
            let mut bad = first();
            bad.serials[0].serial = ByteBuf::from(serial);
            assert!(matches!(
                RevocationList::decode(&bad.encode()),
                Err(RevocationListError::BadSerial { .. })
            ));
        }
        let mut twice = first();
        twice.nodes.push(twice.nodes[0].clone());
        assert_eq!(
            RevocationList::decode(&twice.encode()),
            Err(RevocationListError::Duplicate("node gw2".into()))
        );
        let mut many = first();
        many.serials = (0..MAX_REVOCATIONS)
            .map(|i| RevokedSerial {
                serial: ByteBuf::from(u32::try_from(i + 1).unwrap_or(1).to_be_bytes().to_vec()),
                revoked_at: Timestamp(1),
            })
            .map(|mut s| {
                let start = s.serial.iter().position(|&b| b != 0).unwrap_or(0);
                s.serial = ByteBuf::from(s.serial[start..].to_vec());
                s
            })
            .collect();
        assert_eq!(
            RevocationList::decode(&many.encode()),
            Err(RevocationListError::TooManyEntries {
                count: MAX_REVOCATIONS + 1
            })
        );
    }
}
