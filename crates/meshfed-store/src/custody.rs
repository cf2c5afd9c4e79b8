//! Custody (store-and-forward through brokers, `meshfed_proto::relay::custody`): the custody
//! secrets a relayed federation's ends keep, and the items a broker holds for destinations that
//! are away — ciphertext only, durable (each change one committed transaction), bounded, by
//! priority and deadline.

use meshfed_proto::envelope::{EnvelopeId, Timestamp};
use meshfed_proto::{FederationId, MeshId};
use rusqlite::{TransactionBehavior, params};

use crate::Store;
use crate::cells::{Cells, row, rows};
use crate::error::{Doing, StoreError};
use crate::time_fmt::to_sql;

/// Custody secrets kept per federation: envelopes sealed under an older one may still be in a
/// broker's custody when a new session agrees the next.
pub(crate) const SECRETS_KEPT: usize = 8;

/// One envelope a broker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustodyRow {
    /// The envelope's id.
    pub id: EnvelopeId,
    /// Where it goes.
    pub destination: MeshId,
    /// Where it comes from.
    pub origin: MeshId,
    /// Its priority, 0..7 (7 first).
    pub priority: u8,
    /// After this it is not delivered.
    pub deadline: Option<Timestamp>,
    /// When this broker took it.
    pub received: Timestamp,
    /// The custody item as it travels (sealed).
    pub item: Vec<u8>,
}

/// The most a broker holds in custody, over all destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustodyLimits {
    /// Envelopes.
    pub messages: u64,
    /// Bytes of items.
    pub bytes: u64,
}

/// What a broker holds for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustodyHeld {
    /// The destination.
    pub destination: MeshId,
    /// Envelopes held.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
}

const TABLE: &str = "custody";

impl Store {
    /// Keeps federation `id`'s custody secret `secret_id` (a no-op if kept already), and only
    /// the newest [`SECRETS_KEPT`].
    pub fn keep_custody_secret(
        &self,
        id: &FederationId,
        secret_id: &str,
        secret: &[u8; 32],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let idtext = id.as_str();
        let now_sql = to_sql("now", now)?;
        let mut conn = self.conn();
        let action = || format!("keep a custody secret of federation {idtext}");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        tx.execute(
            "INSERT INTO custody_secrets (federation_id, secret_id, secret, created)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            params![idtext, secret_id, secret.as_slice(), now_sql],
        )
        .doing(action)?;
        tx.execute(
            "DELETE FROM custody_secrets WHERE federation_id = ?1 AND secret_id NOT IN
             (SELECT secret_id FROM custody_secrets WHERE federation_id = ?1
              ORDER BY created DESC, rowid DESC LIMIT ?2)",
            params![idtext, SECRETS_KEPT as i64],
        )
        .doing(action)?;
        tx.commit().doing(action)
    }

    /// Federation `id`'s custody secret `secret_id`, if kept.
    pub fn custody_secret(
        &self,
        id: &FederationId,
        secret_id: &str,
    ) -> Result<Option<[u8; 32]>, StoreError> {
        let idtext = id.as_str();
        row(
            &self.conn(),
            "SELECT secret_id, secret FROM custody_secrets WHERE federation_id = ?1 AND secret_id = ?2",
            params![idtext, secret_id],
            || format!("read custody secret {secret_id} of federation {idtext}"),
            |r| secret(&Cells::keyed("custody_secrets", "secret_id", r)),
        )
    }

    /// Federation `id`'s newest custody secret and its id, if it has one.
    pub fn latest_custody_secret(
        &self,
        id: &FederationId,
    ) -> Result<Option<(String, [u8; 32])>, StoreError> {
        let idtext = id.as_str();
        row(
            &self.conn(),
            "SELECT secret_id, secret FROM custody_secrets WHERE federation_id = ?1
             ORDER BY created DESC, rowid DESC LIMIT 1",
            [idtext],
            || format!("read the custody secret of federation {idtext}"),
            |r| {
                let c = Cells::keyed("custody_secrets", "secret_id", r);
                Ok((c.text("secret_id")?, secret(&c)?))
            },
        )
    }

    /// Takes `items` into custody in one transaction, within `limits` over everything held.
    /// Per item: `Ok(())` if it is held now (an id held already counts as taken), or why not.
    pub fn take_custody(
        &self,
        items: &[CustodyRow],
        limits: CustodyLimits,
    ) -> Result<Vec<Result<(), String>>, StoreError> {
        let mut conn = self.conn();
        let action = || "take envelopes into custody".to_owned();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        let (mut messages, mut bytes): (i64, i64) = tx
            .query_row(
                "SELECT count(*), coalesce(sum(length(item)), 0) FROM custody",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .doing(action)?;
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let size = i64::try_from(item.item.len()).unwrap_or(i64::MAX);
            let full = u64::try_from(messages + 1).unwrap_or(u64::MAX) > limits.messages
                || u64::try_from(bytes.saturating_add(size)).unwrap_or(u64::MAX) > limits.bytes;
            if full {
                outcomes.push(Err(format!(
                    "custody_full: the broker holds {messages} envelopes ({bytes} bytes), its limit is {} envelopes ({} bytes)",
                    limits.messages, limits.bytes
                )));
                continue;
            }
            let deadline = item.deadline.map(|d| to_sql("deadline", d)).transpose()?;
            let added = tx
                .execute(
                    "INSERT INTO custody (id, destination, origin, priority, deadline, received, item)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                    params![
                        item.id.0.as_slice(),
                        item.destination.as_str(),
                        item.origin.as_str(),
                        i64::from(item.priority),
                        deadline,
                        to_sql("received", item.received)?,
                        item.item,
                    ],
                )
                .doing(action)?;
            if added == 1 {
                messages += 1;
                bytes = bytes.saturating_add(size);
            }
            outcomes.push(Ok(()));
        }
        tx.commit().doing(action)?;
        Ok(outcomes)
    }

    /// What is held, per destination.
    pub fn custody_held(&self) -> Result<Vec<CustodyHeld>, StoreError> {
        rows(
            &self.conn(),
            "SELECT destination, count(*) AS messages, sum(length(item)) AS bytes FROM custody
             GROUP BY destination ORDER BY destination",
            [],
            || "read what is held in custody".to_owned(),
            |r| {
                let c = Cells::keyed(TABLE, "destination", r);
                Ok(CustodyHeld {
                    destination: c.parse("destination")?,
                    messages: c.uint("messages")?,
                    bytes: c.uint("bytes")?,
                })
            },
        )
    }

    /// Up to `limit` envelopes held for `destination`, in the order they go: priority 7 first,
    /// then the earliest deadline (none last), then the oldest.
    pub fn custody_for(
        &self,
        destination: &MeshId,
        limit: usize,
    ) -> Result<Vec<CustodyRow>, StoreError> {
        let dest = destination.as_str();
        rows(
            &self.conn(),
            "SELECT id, destination, origin, priority, deadline, received, item FROM custody
             WHERE destination = ?1
             ORDER BY priority DESC, deadline IS NULL, deadline, received, rowid LIMIT ?2",
            params![dest, i64::try_from(limit).unwrap_or(i64::MAX)],
            || format!("read what is held in custody for {dest}"),
            custody_row,
        )
    }

    /// Forgets the envelopes `ids` (the next hop took them, or they were refused for good).
    pub fn release_custody(&self, ids: &[EnvelopeId]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let action = || format!("release {} envelopes from custody", ids.len());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        for id in ids {
            tx.execute("DELETE FROM custody WHERE id = ?1", [id.0.as_slice()])
                .doing(action)?;
        }
        tx.commit().doing(action)
    }

    /// Removes and returns the envelopes whose deadline passed before `now`.
    pub fn expire_custody(&self, now: Timestamp) -> Result<Vec<CustodyRow>, StoreError> {
        let now_sql = to_sql("now", now)?;
        let mut conn = self.conn();
        let action = || "expire envelopes held in custody".to_owned();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        let expired = rows(
            &tx,
            "SELECT id, destination, origin, priority, deadline, received, item FROM custody
             WHERE deadline < ?1",
            [now_sql],
            action,
            custody_row,
        )?;
        if !expired.is_empty() {
            tx.execute("DELETE FROM custody WHERE deadline < ?1", [now_sql])
                .doing(action)?;
            tx.commit().doing(action)?;
        }
        Ok(expired)
    }
}

fn secret(c: &Cells<'_, '_>) -> Result<[u8; 32], StoreError> {
    let bytes = c.blob("secret")?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| c.corrupt("secret", format!("{} bytes, not 32", bytes.len())))
}

fn custody_row(r: &rusqlite::Row<'_>) -> Result<CustodyRow, StoreError> {
    let c = Cells::new(TABLE, "custody item".to_owned(), r);
    Ok(CustodyRow {
        id: c.envelope_id("id")?,
        destination: c.parse("destination")?,
        origin: c.parse("origin")?,
        priority: c.small("priority")?,
        deadline: c.opt_time("deadline")?,
        received: c.time("received")?,
        item: c.blob("item")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> MeshId {
        s.parse().unwrap()
    }

    fn held(n: u8, priority: u8, deadline: Option<u64>) -> CustodyRow {
        CustodyRow {
            id: EnvelopeId([n; 16]),
            destination: m("cloud-c"),
            origin: m("plant-a"),
            priority,
            deadline: deadline.map(Timestamp),
            received: Timestamp(u64::from(n)),
            item: vec![n; 10],
        }
    }

    const ROOMY: CustodyLimits = CustodyLimits {
        messages: 100,
        bytes: 1 << 20,
    };

    #[test]
    fn custody_goes_by_priority_then_deadline_and_is_bounded() {
        let store = Store::open_in_memory().unwrap();
        let items = [
            held(1, 3, None),
            held(2, 7, Some(900)),
            held(3, 3, Some(500)),
        ];
        let taken = store.take_custody(&items, ROOMY).unwrap();
        assert!(taken.iter().all(Result::is_ok));
        // Taken again (a resend after a lost acknowledgement): held once.
        assert!(store.take_custody(&items[..1], ROOMY).unwrap()[0].is_ok());
        let order: Vec<u8> = (store.custody_for(&m("cloud-c"), 10).unwrap().iter())
            .map(|r| r.id.0[0])
            .collect();
        assert_eq!(order, [2, 3, 1]);
        let held_now = store.custody_held().unwrap();
        assert_eq!(held_now[0].messages, 3);
        assert_eq!(held_now[0].bytes, 30);
        let tight = CustodyLimits {
            messages: 3,
            bytes: 1 << 20,
        };
        let outcome = store.take_custody(&[held(4, 0, None)], tight).unwrap();
        let why = outcome[0].clone().unwrap_err();
        assert!(
            why.starts_with("custody_full: the broker holds 3 envelopes"),
            "{why}"
        );
        let expired = store.expire_custody(Timestamp(600)).unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].id, EnvelopeId([3; 16]));
        store.release_custody(&[EnvelopeId([2; 16])]).unwrap();
        let left: Vec<u8> = (store.custody_for(&m("cloud-c"), 10).unwrap().iter())
            .map(|r| r.id.0[0])
            .collect();
        assert_eq!(left, [1]);
    }

    #[test]
    fn the_newest_custody_secrets_are_kept() {
        let (store, fed) = crate::bundles::tests::store_with_federation();
        for n in 0..=SECRETS_KEPT as u8 {
            let secret = format!("cs1_{n}");
            store
                .keep_custody_secret(&fed, &secret, &[n; 32], Timestamp(u64::from(n)))
                .unwrap();
        }
        let (latest, bytes) = store.latest_custody_secret(&fed).unwrap().unwrap();
        assert_eq!(latest, format!("cs1_{SECRETS_KEPT}"));
        assert_eq!(bytes, [SECRETS_KEPT as u8; 32]);
        assert_eq!(store.custody_secret(&fed, "cs1_0").unwrap(), None);
        assert_eq!(store.custody_secret(&fed, "cs1_1").unwrap(), Some([1; 32]));
    }
}
