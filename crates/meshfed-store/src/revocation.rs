//! Revocation lists (DESIGN.md §2, Revocation): this mesh's own list as this node signed it and
//! the lists received from each partner mesh, one per mesh, each kept as the signed statement
//! that crossed (so it can be verified again and sent on); and the node certificates this node
//! issued to itself, so that revoking a node can name their serials.
//!
//! The store only keeps versions increasing; whether a list may replace another (same mesh,
//! every entry kept) and who signed it is decided before it is stored.

use meshfed_proto::envelope::Timestamp;
use meshfed_proto::{MeshId, NodeName};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::Store;
use crate::cells::{Cells, rows};
use crate::error::{Doing, StoreError};
use crate::time_fmt::to_sql;

/// A revocation list as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRevocations {
    /// The mesh whose list it is.
    pub mesh: MeshId,
    /// The list's version.
    pub version: u64,
    /// The signed statement carrying it, in its wire form, exactly as received or signed.
    pub statement: Vec<u8>,
    /// When it was stored.
    pub stored: Timestamp,
}

/// A node certificate this node issued to itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The node it names.
    pub node: NodeName,
    /// Its serial number (big-endian, no leading zeros).
    pub serial: Vec<u8>,
    /// End of its validity.
    pub not_after: Timestamp,
    /// When it was issued.
    pub issued: Timestamp,
}

impl StoredRevocations {
    fn from_row(row: &rusqlite::Row<'_>) -> Result<Self, StoreError> {
        let c = Cells::keyed("revocation_lists", "mesh", row);
        Ok(Self {
            mesh: c.parse("mesh")?,
            version: c.uint("version")?,
            statement: c.blob("statement")?,
            stored: c.time("stored")?,
        })
    }
}

impl IssuedCert {
    fn from_row(row: &rusqlite::Row<'_>) -> Result<Self, StoreError> {
        let c = Cells::keyed("issued_certs", "node", row);
        Ok(Self {
            node: c.parse("node")?,
            serial: c.blob("serial")?,
            not_after: c.time("not_after")?,
            issued: c.time("issued")?,
        })
    }
}

impl Store {
    /// Stores `mesh`'s revocation list at `version` unless a version as high or higher is
    /// stored already; says whether it stored it.
    pub fn put_revocations(
        &self,
        mesh: &MeshId,
        version: u64,
        statement: &[u8],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let action = || format!("store mesh {mesh}'s revocation list version {version}");
        let stored_at = to_sql("stored", at)?;
        let version_sql = i64::try_from(version).map_err(|_| {
            StoreError::corrupt(
                "revocation_lists",
                mesh.to_string(),
                "version",
                format!("{version} is out of range"),
            )
        })?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        let current: Option<i64> = tx
            .query_row(
                "SELECT version FROM revocation_lists WHERE mesh = ?1",
                [mesh.as_str()],
                |r| r.get(0),
            )
            .optional()
            .doing(action)?;
        if current.is_some_and(|v| v >= version_sql) {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO revocation_lists (mesh, version, statement, stored) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (mesh) DO UPDATE SET version = excluded.version,
                 statement = excluded.statement, stored = excluded.stored",
            params![mesh.as_str(), version_sql, statement, stored_at],
        )
        .doing(action)?;
        tx.commit().doing(action)?;
        Ok(true)
    }

    /// Every stored revocation list, by mesh.
    pub fn revocation_lists(&self) -> Result<Vec<StoredRevocations>, StoreError> {
        rows(
            &self.conn(),
            "SELECT mesh, version, statement, stored FROM revocation_lists ORDER BY mesh",
            [],
            || "list the stored revocation lists".to_owned(),
            StoredRevocations::from_row,
        )
    }

    /// Records a node certificate this node issued (to itself); recording one twice is a no-op.
    pub fn record_issued_cert(&self, cert: &IssuedCert) -> Result<(), StoreError> {
        let action = || format!("record the certificate issued to node {}", cert.node);
        self.conn()
            .execute(
                "INSERT INTO issued_certs (serial, node, not_after, issued) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (serial) DO NOTHING",
                params![
                    cert.serial,
                    cert.node.as_str(),
                    to_sql("not_after", cert.not_after)?,
                    to_sql("issued", cert.issued)?
                ],
            )
            .doing(action)?;
        Ok(())
    }

    /// The certificates this node issued to `node`, oldest first.
    pub fn issued_certs(&self, node: &NodeName) -> Result<Vec<IssuedCert>, StoreError> {
        rows(
            &self.conn(),
            "SELECT serial, node, not_after, issued FROM issued_certs WHERE node = ?1
             ORDER BY issued",
            [node.as_str()],
            || format!("list the certificates issued to node {node}"),
            IssuedCert::from_row,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(s: &str) -> MeshId {
        s.parse().unwrap()
    }

    #[test]
    fn a_revocation_list_is_replaced_only_by_a_higher_version() {
        let store = Store::open_in_memory().unwrap();
        let a = mesh("plant-a");
        assert!(store.put_revocations(&a, 2, b"v2", Timestamp(10)).unwrap());
        assert!(
            !store
                .put_revocations(&a, 2, b"v2bis", Timestamp(11))
                .unwrap()
        );
        assert!(!store.put_revocations(&a, 1, b"v1", Timestamp(12)).unwrap());
        assert!(store.put_revocations(&a, 3, b"v3", Timestamp(13)).unwrap());
        assert!(
            store
                .put_revocations(&mesh("plant-b"), 1, b"b1", Timestamp(14))
                .unwrap()
        );
        let lists = store.revocation_lists().unwrap();
        assert_eq!(lists.len(), 2);
        assert_eq!(
            lists[0],
            StoredRevocations {
                mesh: a,
                version: 3,
                statement: b"v3".to_vec(),
                stored: Timestamp(13),
            }
        );
    }

    #[test]
    fn issued_certificates_are_listed_per_node_once_each() {
        let store = Store::open_in_memory().unwrap();
        let gw1: NodeName = "gw1".parse().unwrap();
        let cert = |serial: u8, at: u64| IssuedCert {
            node: gw1.clone(),
            serial: vec![serial; 16],
            not_after: Timestamp(at + 100),
            issued: Timestamp(at),
        };
        store.record_issued_cert(&cert(1, 1)).unwrap();
        store.record_issued_cert(&cert(1, 1)).unwrap();
        store.record_issued_cert(&cert(2, 2)).unwrap();
        assert_eq!(store.issued_certs(&gw1).unwrap(), [cert(1, 1), cert(2, 2)]);
        assert_eq!(store.issued_certs(&"gw2".parse().unwrap()).unwrap(), []);
    }
}
