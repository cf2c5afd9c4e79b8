//! Delegations (DESIGN.md §2, Transitive trust): the signed JWTs this mesh issued to other
//! meshes and those other meshes issued to it, which it presents when it relays their
//! messages. The store keeps each token as signed, with who issued it to whom and when it
//! expires; the gateway verifies a token before it records it. A row goes once its delegation
//! has expired ([`Store::prune_delegations`]); whether one was withdrawn is its issuer's
//! revocation list, which the store keeps apart.

use meshfed_proto::MeshId;
use meshfed_proto::envelope::Timestamp;
use rusqlite::params;

use crate::Store;
use crate::cells::{Cells, rows};
use crate::error::{Doing, StoreError};
use crate::time_fmt::to_sql;

/// A delegation as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDelegation {
    /// Its id (`jti`).
    pub id: String,
    /// The mesh that signed it.
    pub issuer: MeshId,
    /// The mesh it is for.
    pub delegate: MeshId,
    /// The JWT as signed.
    pub token: String,
    /// When it was issued.
    pub issued: Timestamp,
    /// When it expires.
    pub expires: Timestamp,
}

impl StoredDelegation {
    fn from_row(row: &rusqlite::Row<'_>) -> Result<Self, StoreError> {
        let c = Cells::keyed("delegations", "id", row);
        Ok(Self {
            id: c.text("id")?,
            issuer: c.parse("issuer")?,
            delegate: c.parse("delegate")?,
            token: c.text("token")?,
            issued: c.time("issued")?,
            expires: c.time("expires")?,
        })
    }
}

impl Store {
    /// Records a delegation; one recorded already (same id) is kept as it was. Returns
    /// whether it is new.
    pub fn put_delegation(&self, d: &StoredDelegation) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO delegations (id, issuer, delegate, token, issued, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    d.id,
                    d.issuer.as_str(),
                    d.delegate.as_str(),
                    d.token,
                    to_sql("issued", d.issued)?,
                    to_sql("expires", d.expires)?,
                ],
            )
            .doing(|| {
                format!(
                    "record delegation {} from {} to {}",
                    d.id, d.issuer, d.delegate
                )
            })?;
        Ok(n == 1)
    }

    /// Every recorded delegation, the latest issued first.
    pub fn delegations(&self) -> Result<Vec<StoredDelegation>, StoreError> {
        rows(
            &self.conn(),
            "SELECT id, issuer, delegate, token, issued, expires FROM delegations
             ORDER BY issued DESC, id",
            [],
            || "list the delegations".to_owned(),
            StoredDelegation::from_row,
        )
    }

    /// Forgets the delegations that expired before `before`; returns how many.
    pub fn prune_delegations(&self, before: Timestamp) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "DELETE FROM delegations WHERE expires < ?1",
                [to_sql("before", before)?],
            )
            .doing(|| "forget expired delegations".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delegation(id: &str, issued: u64, expires: u64) -> StoredDelegation {
        StoredDelegation {
            id: id.into(),
            issuer: "supplier-c".parse().unwrap(),
            delegate: "hub-b".parse().unwrap(),
            token: format!("header.{id}.signature"),
            issued: Timestamp(issued),
            expires: Timestamp(expires),
        }
    }

    #[test]
    fn a_delegation_is_recorded_once_listed_latest_first_and_pruned_once_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db")).unwrap();
        assert!(
            store
                .put_delegation(&delegation("aa", 1_000, 50_000))
                .unwrap()
        );
        assert!(
            store
                .put_delegation(&delegation("bb", 2_000, 9_000))
                .unwrap()
        );
        let mut again = delegation("aa", 1_000, 50_000);
        again.token = "another".into();
        assert!(!store.put_delegation(&again).unwrap());
        let listed = store.delegations().unwrap();
        assert_eq!(
            listed,
            vec![
                delegation("bb", 2_000, 9_000),
                delegation("aa", 1_000, 50_000)
            ]
        );
        assert_eq!(store.prune_delegations(Timestamp(10_000)).unwrap(), 1);
        assert_eq!(
            store.delegations().unwrap(),
            vec![delegation("aa", 1_000, 50_000)]
        );
    }
}
