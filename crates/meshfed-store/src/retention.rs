//! Retention: the records this node keeps of what it exchanged with a partner — its messages
//! kept for durable subscribers, and the dead letters of what was sent to it — go once they
//! are older than the agreement with that partner lets them be kept (its `retention_days`).
//! What the node keeps to do its work (the relay queue, names starting `meshfed:`) is not a
//! record and stays.

use meshfed_proto::MeshId;
use meshfed_proto::envelope::Timestamp;
use rusqlite::params;

use crate::Store;
use crate::error::{Doing, StoreError};
use crate::time_fmt::to_sql;

/// What [`Store::expire_exchanged`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Messages from the partner kept for durable subscribers.
    pub durable: usize,
    /// Dead letters of messages to the partner.
    pub dead_letters: usize,
}

impl Store {
    /// Removes the records of what was exchanged with `partner` before `before`, in one
    /// transaction.
    pub fn expire_exchanged(
        &self,
        partner: &MeshId,
        before: Timestamp,
    ) -> Result<Expired, StoreError> {
        let before = to_sql("before", before)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .doing(|| "begin expiring records".into())?;
        let durable = tx
            .execute(
                "DELETE FROM inbound WHERE source = ?1 AND received < ?2
                 AND subscription NOT LIKE 'meshfed:%'",
                params![partner.as_str(), before],
            )
            .doing(|| format!("expire the durable messages from {partner}"))?;
        let dead_letters = tx
            .execute(
                "DELETE FROM dead_letters WHERE destination = ?1 AND at < ?2",
                params![partner.as_str(), before],
            )
            .doing(|| format!("expire the dead letters to {partner}"))?;
        tx.commit()
            .doing(|| format!("commit expiring the records of {partner}"))?;
        Ok(Expired {
            durable,
            dead_letters,
        })
    }
}
