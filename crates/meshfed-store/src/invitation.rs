//! Invitations: one-time tokens this node issued (`meshfed federation invite`), DESIGN.md §3.2.
//!
//! Only a SHA-384 hash of the invitation's secret is stored, never the secret itself.

use meshfed_proto::MeshId;
use meshfed_proto::envelope::Timestamp;
use rusqlite::{TransactionBehavior, params};

use crate::Store;
use crate::cells::{Cells, row, rows};
use crate::error::{ConsumeError, Doing, StoreError};
use crate::time_fmt::to_sql;

const TABLE: &str = "invitations";
const SELECT_ONE: &str = "SELECT token_id, peer_mesh, secret_hash, created, expires, used
                          FROM invitations WHERE token_id = ?1";
const SELECT_CURRENT: &str = "SELECT token_id, peer_mesh, secret_hash, created, expires, used
                              FROM invitations WHERE expires > ?1 ORDER BY created";

/// An invitation this node issued to a peer mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationRecord {
    /// The token's public identifier (e.g. `tok_…`), by which a joiner names it.
    pub token_id: String,
    /// The mesh the invitation is for.
    pub peer_mesh: MeshId,
    /// SHA-384 of the one-time secret. The secret itself is never stored.
    pub secret_hash: [u8; 48],
    /// When it was issued.
    pub created: Timestamp,
    /// When it stops working.
    pub expires: Timestamp,
    /// When it was consumed; `None` while unused.
    pub used: Option<Timestamp>,
}

impl InvitationRecord {
    fn from_row(row: &rusqlite::Row<'_>) -> Result<Self, StoreError> {
        let c = Cells::keyed(TABLE, "token_id", row);
        Ok(Self {
            token_id: c.key().to_owned(),
            peer_mesh: c.parse("peer_mesh")?,
            secret_hash: c.digest("secret_hash")?,
            created: c.time("created")?,
            expires: c.time("expires")?,
            used: c.opt_time("used")?,
        })
    }
}

impl Store {
    /// Stores a newly issued invitation. Refuses a token id that is already stored.
    pub fn put_invitation(&self, inv: &InvitationRecord) -> Result<(), StoreError> {
        let used = inv.used.map(|t| to_sql("used", t)).transpose()?;
        let conn = self.conn();
        let inserted = conn
            .execute(
                "INSERT INTO invitations (token_id, peer_mesh, secret_hash, created, expires, used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (token_id) DO NOTHING",
                params![
                    inv.token_id,
                    inv.peer_mesh.as_str(),
                    &inv.secret_hash[..],
                    to_sql("created", inv.created)?,
                    to_sql("expires", inv.expires)?,
                    used,
                ],
            )
            .doing(|| format!("store invitation {}", inv.token_id))?;
        if inserted == 0 {
            return Err(StoreError::DuplicateInvitation(inv.token_id.clone()));
        }
        Ok(())
    }

    /// Consumes the invitation `token_id` at `now`, once: the check and the mark happen in one
    /// IMMEDIATE transaction, so of two concurrent consumers (threads or processes) exactly one
    /// succeeds. Returns the record as consumed (`used == Some(now)`).
    ///
    /// An invitation is expired from its `expires` instant on. A used invitation reports
    /// [`ConsumeError::AlreadyUsed`] even when it has expired since.
    pub fn consume_invitation(
        &self,
        token_id: &str,
        now: Timestamp,
    ) -> Result<InvitationRecord, ConsumeError> {
        let now_sql = to_sql("now", now)?;
        let mut conn = self.conn();
        let action = || format!("consume invitation {token_id}");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        let found = row(
            &tx,
            SELECT_ONE,
            [token_id],
            action,
            InvitationRecord::from_row,
        )?;
        let Some(mut inv) = found else {
            return Err(ConsumeError::Unknown {
                token_id: token_id.to_owned(),
            });
        };
        if let Some(at) = inv.used {
            return Err(ConsumeError::AlreadyUsed {
                token_id: token_id.to_owned(),
                at,
            });
        }
        if now >= inv.expires {
            return Err(ConsumeError::Expired {
                token_id: token_id.to_owned(),
                at: inv.expires,
            });
        }
        tx.execute(
            "UPDATE invitations SET used = ?2 WHERE token_id = ?1",
            params![token_id, now_sql],
        )
        .doing(action)?;
        tx.commit().doing(action)?;
        inv.used = Some(now);
        Ok(inv)
    }

    /// Invitations that expire after `since`, used or not, oldest first: what a handshake
    /// needs to recognise a token and to say precisely why it is refused.
    pub fn invitations_expiring_after(
        &self,
        since: Timestamp,
    ) -> Result<Vec<InvitationRecord>, StoreError> {
        let action = || "list current invitations".to_owned();
        rows(
            &self.conn(),
            SELECT_CURRENT,
            [to_sql("expires", since)?],
            action,
            InvitationRecord::from_row,
        )
    }

    /// The invitation `token_id`, if stored.
    pub fn invitation(&self, token_id: &str) -> Result<Option<InvitationRecord>, StoreError> {
        let action = || format!("read invitation {token_id}");
        row(
            &self.conn(),
            SELECT_ONE,
            [token_id],
            action,
            InvitationRecord::from_row,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::thread;

    use super::*;

    fn invitation(token_id: &str) -> InvitationRecord {
        InvitationRecord {
            token_id: token_id.into(),
            peer_mesh: "plant-a".parse().unwrap(),
            secret_hash: [0xab; 48],
            created: Timestamp(1_000),
            expires: Timestamp(10_000),
            used: None,
        }
    }

    #[test]
    fn current_invitations_leave_out_long_expired_ones() {
        let store = Store::open_in_memory().unwrap();
        let mut old = invitation("tok_old");
        old.expires = Timestamp(10);
        store.put_invitation(&old).unwrap();
        store.put_invitation(&invitation("tok_new")).unwrap();
        let current = store.invitations_expiring_after(Timestamp(11)).unwrap();
        assert_eq!(
            current
                .iter()
                .map(|i| i.token_id.as_str())
                .collect::<Vec<_>>(),
            ["tok_new"]
        );
    }

    #[test]
    fn invitation_is_consumed_once_then_reports_already_used() {
        let store = Store::open_in_memory().unwrap();
        store.put_invitation(&invitation("tok_once")).unwrap();
        let consumed = store
            .consume_invitation("tok_once", Timestamp(5_000))
            .unwrap();
        assert_eq!(consumed.used, Some(Timestamp(5_000)));
        assert_eq!(store.invitation("tok_once").unwrap(), Some(consumed));

        let err = store
            .consume_invitation("tok_once", Timestamp(6_000))
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConsumeError::AlreadyUsed {
                    at: Timestamp(5_000),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "invitation tok_once was already used at 1970-01-01T00:00:05.000Z"
        );
    }

    #[test]
    fn expired_invitation_is_refused_and_stays_unused() {
        let store = Store::open_in_memory().unwrap();
        store.put_invitation(&invitation("tok_late")).unwrap();
        let err = store
            .consume_invitation("tok_late", Timestamp(10_000))
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConsumeError::Expired {
                    at: Timestamp(10_000),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "invitation tok_late expired at 1970-01-01T00:00:10.000Z"
        );
        assert_eq!(store.invitation("tok_late").unwrap().unwrap().used, None);
    }

    #[test]
    fn unknown_invitation_is_refused() {
        let store = Store::open_in_memory().unwrap();
        let err = store
            .consume_invitation("tok_nope", Timestamp(1))
            .unwrap_err();
        assert!(matches!(err, ConsumeError::Unknown { .. }), "{err:?}");
        assert_eq!(err.to_string(), "invitation tok_nope is unknown");
        assert_eq!(store.invitation("tok_nope").unwrap(), None);
    }

    #[test]
    fn duplicate_token_id_is_refused() {
        let store = Store::open_in_memory().unwrap();
        store.put_invitation(&invitation("tok_dup")).unwrap();
        let err = store.put_invitation(&invitation("tok_dup")).unwrap_err();
        assert_eq!(err.to_string(), "invitation tok_dup already exists");
    }

    #[test]
    fn concurrent_consumers_on_one_file_get_exactly_one_success() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite");
        let tokens: Vec<String> = (0..20).map(|i| format!("tok_race_{i}")).collect();
        let setup = Store::open(&path).unwrap();
        for t in &tokens {
            setup.put_invitation(&invitation(t)).unwrap();
        }
        // Two stores = two connections, as two processes would have; the barrier lines them up.
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (path, tokens, barrier) = (path.clone(), tokens.clone(), barrier.clone());
                thread::spawn(move || {
                    let store = Store::open(&path).unwrap();
                    barrier.wait();
                    tokens
                        .iter()
                        .map(|t| match store.consume_invitation(t, Timestamp(5_000)) {
                            Ok(_) => true,
                            Err(ConsumeError::AlreadyUsed { .. }) => false,
                            Err(e) => panic!("{e}"),
                        })
                        .collect::<Vec<bool>>()
                })
            })
            .collect();
        let results: Vec<Vec<bool>> = racers.into_iter().map(|h| h.join().unwrap()).collect();
        for (i, t) in tokens.iter().enumerate() {
            let wins = results.iter().filter(|r| r[i]).count();
            assert_eq!(wins, 1, "{t} was consumed {wins} times");
        }
    }

    #[test]
    fn corrupt_invitation_row_names_table_row_and_column() {
        let store = Store::open_in_memory().unwrap();
        store.put_invitation(&invitation("tok_bad")).unwrap();
        store
            .conn()
            .execute(
                "UPDATE invitations SET secret_hash = x'0102' WHERE token_id = 'tok_bad'",
                [],
            )
            .unwrap();
        let err = store.invitation("tok_bad").unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { table: "invitations", row, column: "secret_hash", .. } if row == "tok_bad"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "corrupt row in table invitations (row \"tok_bad\"), column secret_hash: \
             a SHA-384 digest has 48 bytes, found 2"
        );
        let err = store
            .consume_invitation("tok_bad", Timestamp(5_000))
            .unwrap_err();
        assert!(
            matches!(err, ConsumeError::Store(StoreError::Corrupt { .. })),
            "{err:?}"
        );
    }
}
