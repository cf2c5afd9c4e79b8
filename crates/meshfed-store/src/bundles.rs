//! Trust bundle serials per federation, for CA rollovers (DESIGN.md §2): the serial of the
//! peer's bundle stored with the federation (0: the one of the handshake; a rollover's signed
//! statement brings a higher one), and the serial of this mesh's bundle the peer has
//! acknowledged — what `meshfed ca retire-old` checks before the old CA goes.

use meshfed_proto::FederationId;
use meshfed_proto::envelope::Timestamp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::Store;
use crate::cells::{Cells, rows};
use crate::error::{Doing, StoreError};
use crate::time_fmt::to_sql;

const TABLE: &str = "federation_trust";

/// The bundle serials of one federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BundleSerials {
    /// The serial of the peer's bundle as stored.
    pub peer: u64,
    /// The highest serial of this mesh's bundle the peer acknowledged.
    pub acknowledged: u64,
}

impl Store {
    /// Replaces federation `id`'s stored peer trust bundle with `bundle` (DER, in order), of
    /// `serial`, if `serial` is above the stored one. Returns whether it replaced it: `false`
    /// for a serial not above the stored one (a statement seen before, or replayed).
    pub fn replace_peer_bundle(
        &self,
        id: &FederationId,
        bundle: &[Vec<u8>],
        serial: u64,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let idtext = id.as_str();
        let now_sql = to_sql("now", now)?;
        let serial_sql = to_i64(serial)?;
        let mut conn = self.conn();
        let action = || format!("replace the trust bundle of federation {idtext}");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        let known: Option<i64> = tx
            .query_row("SELECT 1 FROM federations WHERE id = ?1", [idtext], |r| {
                r.get(0)
            })
            .optional()
            .doing(action)?;
        if known.is_none() {
            return Err(StoreError::UnknownFederation(id.clone()));
        }
        if read(&tx, id)?.peer >= serial {
            return Ok(false);
        }
        crate::federation::write_bundle(&tx, id, bundle)?;
        tx.execute(
            "INSERT INTO federation_trust (federation_id, peer_bundle_serial) VALUES (?1, ?2)
             ON CONFLICT (federation_id) DO UPDATE SET peer_bundle_serial = excluded.peer_bundle_serial",
            params![idtext, serial_sql],
        )
        .doing(action)?;
        tx.execute(
            "UPDATE federations SET updated = ?2 WHERE id = ?1",
            params![idtext, now_sql],
        )
        .doing(action)?;
        tx.commit().doing(action)?;
        Ok(true)
    }

    /// Records that the peer of federation `id` acknowledged this mesh's bundle of `serial`
    /// (kept if a higher one was acknowledged before).
    pub fn record_bundle_ack(&self, id: &FederationId, serial: u64) -> Result<(), StoreError> {
        let idtext = id.as_str();
        let serial_sql = to_i64(serial)?;
        let conn = self.conn();
        conn.execute(
            "INSERT INTO federation_trust (federation_id, acked_bundle_serial) VALUES (?1, ?2)
             ON CONFLICT (federation_id) DO UPDATE
             SET acked_bundle_serial = max(acked_bundle_serial, excluded.acked_bundle_serial)",
            params![idtext, serial_sql],
        )
        .doing(|| format!("record the bundle acknowledgement of federation {idtext}"))?;
        Ok(())
    }

    /// The bundle serials of federation `id` (zero where nothing was recorded).
    pub fn bundle_serials(&self, id: &FederationId) -> Result<BundleSerials, StoreError> {
        read(&self.conn(), id)
    }
}

fn read(conn: &Connection, id: &FederationId) -> Result<BundleSerials, StoreError> {
    let idtext = id.as_str();
    let found = rows(
        conn,
        "SELECT federation_id, peer_bundle_serial, acked_bundle_serial FROM federation_trust
         WHERE federation_id = ?1",
        [idtext],
        || format!("read the bundle serials of federation {idtext}"),
        |row| {
            let c = Cells::keyed(TABLE, "federation_id", row);
            Ok(BundleSerials {
                peer: c.uint("peer_bundle_serial")?,
                acknowledged: c.uint("acked_bundle_serial")?,
            })
        },
    )?;
    Ok(found.into_iter().next().unwrap_or_default())
}

fn to_i64(serial: u64) -> Result<i64, StoreError> {
    i64::try_from(serial).map_err(|_| StoreError::SerialOutOfRange(serial))
}

#[cfg(test)]
pub(crate) mod tests {
    use meshfed_proto::FederationState;

    use super::*;
    use crate::{FederationRecord, Role};

    /// A store holding one active federation, `fed_1`, with plant-a.
    pub(crate) fn store_with_federation() -> (Store, FederationId) {
        let store = Store::open_in_memory().unwrap();
        let rec = FederationRecord {
            id: "fed_1".parse().unwrap(),
            peer_mesh: "plant-a".parse().unwrap(),
            peer_node: None,
            role: Role::Initiator,
            state: FederationState::Active,
            state_reason: None,
            peer_addrs: vec![],
            peer_bundle: vec![vec![0x30, 1]],
            agreement: vec![0xa0],
            agreement_digest: [1; 48],
            created: Timestamp(1),
            updated: Timestamp(1),
        };
        store.insert_federation(&rec).unwrap();
        (store, rec.id)
    }

    #[test]
    fn a_higher_serial_replaces_the_bundle_and_a_lower_or_equal_one_is_ignored() {
        let (store, id) = store_with_federation();
        let new = vec![vec![0x30, 7], vec![0x30, 8]];
        assert!(
            store
                .replace_peer_bundle(&id, &new, 1, Timestamp(5))
                .unwrap()
        );
        let rec = store.federation(&id).unwrap().unwrap();
        assert_eq!(rec.peer_bundle, new);
        assert_eq!(rec.updated, Timestamp(5));
        assert_eq!(store.bundle_serials(&id).unwrap().peer, 1);
        assert!(
            !store
                .replace_peer_bundle(&id, &[vec![0x30, 1]], 1, Timestamp(6))
                .unwrap()
        );
        assert_eq!(store.federation(&id).unwrap().unwrap().peer_bundle, new);
        let retired = vec![vec![0x30, 8]];
        assert!(
            store
                .replace_peer_bundle(&id, &retired, 2, Timestamp(7))
                .unwrap()
        );
        assert_eq!(store.federation(&id).unwrap().unwrap().peer_bundle, retired);
    }

    #[test]
    fn acknowledgements_only_grow_and_an_unknown_federation_is_refused() {
        let (store, id) = store_with_federation();
        assert_eq!(store.bundle_serials(&id).unwrap(), BundleSerials::default());
        store.record_bundle_ack(&id, 2).unwrap();
        store.record_bundle_ack(&id, 1).unwrap();
        assert_eq!(store.bundle_serials(&id).unwrap().acknowledged, 2);
        let other: FederationId = "fed_unknown".parse().unwrap();
        assert!(matches!(
            store.replace_peer_bundle(&other, &[], 1, Timestamp(1)),
            Err(StoreError::UnknownFederation(_))
        ));
        assert!(matches!(
            store.record_bundle_ack(&id, u64::MAX),
            Err(StoreError::SerialOutOfRange(u64::MAX))
        ));
    }
}
