//! Federations this node holds: peer, role, lifecycle state, where to re-dial the peer, the
//! peer's trust bundle and the signed agreement (DESIGN.md §3.2, §3.3).
//!
//! At most one federation per peer mesh is live (not terminated) at a time; terminated ones stay
//! as history. State changes follow [`FederationState::transition`].

use std::fmt;

use meshfed_proto::envelope::Timestamp;
use meshfed_proto::{FederationId, FederationState, MeshId, NodeName};
use rusqlite::{Connection, Row, Transaction, TransactionBehavior, params};

use crate::Store;
use crate::cells::{Cells, row, rows};
use crate::error::{Doing, StoreError};
use crate::time_fmt::{Shown, to_sql};

const TABLE: &str = "federations";
const SELECT: &str = "SELECT id, peer_mesh, peer_node, role, state, state_reason, agreement,
                             agreement_digest, created, updated
                      FROM federations";
/// The SQL list of terminated state names; the partial unique index in the schema uses the same.
const TERMINATED: &str = "('terminated-graceful', 'terminated-forced')";

/// Which side of the handshake this node took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// This node dialled the peer (it joined with the peer's invitation); it re-dials after a
    /// restart.
    Initiator,
    /// The peer dialled this node (this node issued the invitation).
    Responder,
}

impl Role {
    /// The role's name as stored and shown: `initiator` or `responder`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Initiator => "initiator",
            Self::Responder => "responder",
        }
    }

    /// The same role as the handshake names it.
    pub fn handshake_role(self) -> meshfed_proto::handshake::Role {
        match self {
            Self::Initiator => meshfed_proto::handshake::Role::Initiator,
            Self::Responder => meshfed_proto::handshake::Role::Responder,
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        [Self::Initiator, Self::Responder]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A federation as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationRecord {
    /// The agreement's id, chosen at the handshake.
    pub id: FederationId,
    /// The peer mesh.
    pub peer_mesh: MeshId,
    /// The peer node this node linked with, once known.
    pub peer_node: Option<NodeName>,
    /// Which side of the handshake this node took.
    pub role: Role,
    /// Where the federation stands in its lifecycle.
    pub state: FederationState,
    /// Why it entered that state (operator's note, error text), if given.
    pub state_reason: Option<String>,
    /// `host:port` addresses the initiator re-dials after a restart, in preference order.
    pub peer_addrs: Vec<String>,
    /// The peer's trust bundle: its CA certificates, DER, in order.
    pub peer_bundle: Vec<Vec<u8>>,
    /// The signed federation agreement, opaque CBOR bytes.
    pub agreement: Vec<u8>,
    /// SHA-384 of the agreement.
    pub agreement_digest: [u8; 48],
    /// When the federation was first stored.
    pub created: Timestamp,
    /// When it last changed.
    pub updated: Timestamp,
}

impl FederationRecord {
    /// Parses a `federations` row (selected with [`SELECT`]); the lists are left empty.
    fn from_row(row: &Row<'_>) -> Result<Self, StoreError> {
        let c = Cells::keyed(TABLE, "id", row);
        let role = c.text("role")?;
        Ok(Self {
            id: c.parse("id")?,
            peer_mesh: c.parse("peer_mesh")?,
            peer_node: c.opt_parse("peer_node")?,
            role: Role::from_name(&role).ok_or_else(|| {
                c.corrupt(
                    "role",
                    format!("unknown role {role:?} (initiator or responder)"),
                )
            })?,
            state: c.parse("state")?,
            state_reason: c.opt_text("state_reason")?,
            peer_addrs: Vec::new(),
            peer_bundle: Vec::new(),
            agreement: c.blob("agreement")?,
            agreement_digest: c.digest("agreement_digest")?,
            created: c.time("created")?,
            updated: c.time("updated")?,
        })
    }
}

/// What a federation had before it was re-established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When it was replaced.
    pub replaced: Timestamp,
    /// The state it left (a terminated one).
    pub state: FederationState,
    /// Why it was in that state.
    pub state_reason: Option<String>,
    /// This node's role in it.
    pub role: Role,
    /// SHA-384 of its agreement.
    pub agreement_digest: [u8; 48],
}

impl Store {
    /// Stores a new federation. Refuses an id that is already stored, and a live federation
    /// with a peer mesh that already has a live one (the error names the existing federation).
    pub fn insert_federation(&self, rec: &FederationRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let action = || format!("insert federation {}", rec.id);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        if read(&tx, &rec.id)?.is_some() {
            return Err(StoreError::DuplicateFederation(rec.id.clone()));
        }
        refuse_second_live(&tx, rec)?;
        tx.execute(
            "INSERT INTO federations (id, peer_mesh, peer_node, role, state, state_reason,
                                      agreement, agreement_digest, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                rec.id.as_str(),
                rec.peer_mesh.as_str(),
                rec.peer_node.as_ref().map(NodeName::as_str),
                rec.role.name(),
                rec.state.name(),
                rec.state_reason,
                rec.agreement,
                &rec.agreement_digest[..],
                to_sql("created", rec.created)?,
                to_sql("updated", rec.updated)?,
            ],
        )
        .doing(action)?;
        write_lists(&tx, rec)?;
        tx.commit().doing(action)
    }

    /// Replaces a stored federation's mutable fields with `rec`'s: peer node, state and reason,
    /// addresses, trust bundle, agreement and digest, `updated`.
    ///
    /// `peer_mesh`, `role` and `created` are fixed at creation and must match. A changed state
    /// must be a legal [`FederationState::transition`] and must not make a second live
    /// federation with the peer mesh.
    pub fn update_federation(&self, rec: &FederationRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let action = || format!("update federation {}", rec.id);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        let stored =
            read(&tx, &rec.id)?.ok_or_else(|| StoreError::UnknownFederation(rec.id.clone()))?;
        refuse_fixed_change(&stored, rec)?;
        if stored.state != rec.state {
            transition(&stored, rec.state)?;
            refuse_second_live(&tx, rec)?;
        }
        tx.execute(
            "UPDATE federations
             SET peer_node = ?2, state = ?3, state_reason = ?4, agreement = ?5,
                 agreement_digest = ?6, updated = ?7
             WHERE id = ?1",
            params![
                rec.id.as_str(),
                rec.peer_node.as_ref().map(NodeName::as_str),
                rec.state.name(),
                rec.state_reason,
                rec.agreement,
                &rec.agreement_digest[..],
                to_sql("updated", rec.updated)?,
            ],
        )
        .doing(action)?;
        write_lists(&tx, rec)?;
        tx.commit().doing(action)
    }

    /// Re-establishes a terminated federation under its id with `rec`'s new agreement, peer
    /// node, role, addresses and trust bundle: the stored one moves `terminated →
    /// reestablishing → active` (both moves the lifecycle allows), keeps its `created` time, and
    /// what it had is kept in its history ([`Store::federation_history`]). Refuses an unknown
    /// id, a federation that is not terminated, another peer mesh, and a second live federation
    /// with the peer. Returns the stored record.
    pub fn reestablish_federation(
        &self,
        rec: &FederationRecord,
    ) -> Result<FederationRecord, StoreError> {
        let mut conn = self.conn();
        let action = || format!("re-establish federation {}", rec.id);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        let stored =
            read(&tx, &rec.id)?.ok_or_else(|| StoreError::UnknownFederation(rec.id.clone()))?;
        if stored.peer_mesh != rec.peer_mesh {
            return Err(StoreError::FixedField {
                id: rec.id.clone(),
                field: "peer_mesh",
                stored: stored.peer_mesh.to_string(),
                given: rec.peer_mesh.to_string(),
            });
        }
        if stored.state.is_live() {
            return Err(StoreError::PeerAlreadyFederated {
                peer: stored.peer_mesh.clone(),
                existing: stored.id.clone(),
            });
        }
        let reestablishing = transition(&stored, FederationState::Reestablishing)?;
        let mut next = stored.clone();
        next.state = reestablishing;
        let active = transition(&next, FederationState::Active)?;
        let mut out = rec.clone();
        out.state = active;
        out.created = stored.created;
        refuse_second_live(&tx, &out)?;
        tx.execute(
            "INSERT INTO federation_history (federation_id, replaced, state, state_reason, role,
                                             agreement, agreement_digest)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                stored.id.as_str(),
                to_sql("replaced", rec.updated)?,
                stored.state.name(),
                stored.state_reason,
                stored.role.name(),
                stored.agreement,
                &stored.agreement_digest[..],
            ],
        )
        .doing(action)?;
        tx.execute(
            "UPDATE federations
             SET peer_node = ?2, role = ?3, state = ?4, state_reason = ?5, agreement = ?6,
                 agreement_digest = ?7, updated = ?8
             WHERE id = ?1",
            params![
                out.id.as_str(),
                out.peer_node.as_ref().map(NodeName::as_str),
                out.role.name(),
                out.state.name(),
                out.state_reason,
                out.agreement,
                &out.agreement_digest[..],
                to_sql("updated", out.updated)?,
            ],
        )
        .doing(action)?;
        write_lists(&tx, &out)?;
        tx.commit().doing(action)?;
        Ok(out)
    }

    /// What federation `id` had before each re-establishment, oldest first: when it was
    /// replaced, the state it left, its role and the digest of its agreement.
    pub fn federation_history(&self, id: &FederationId) -> Result<Vec<HistoryEntry>, StoreError> {
        let conn = self.conn();
        let idtext = id.as_str();
        rows(
            &conn,
            "SELECT replaced, state, state_reason, role, agreement_digest FROM federation_history
             WHERE federation_id = ?1 ORDER BY replaced, rowid",
            [idtext],
            || format!("read the history of federation {idtext}"),
            |row| {
                let c = Cells::new("federation_history", idtext.to_owned(), row);
                let role: String = c.text("role")?;
                Ok(HistoryEntry {
                    replaced: c.time("replaced")?,
                    state: c.parse("state")?,
                    state_reason: c.opt_text("state_reason")?,
                    role: Role::from_name(&role)
                        .ok_or_else(|| c.corrupt("role", format!("unknown role {role:?}")))?,
                    agreement_digest: c.digest("agreement_digest")?,
                })
            },
        )
    }

    /// Moves federation `id` to `state` at `now`, recording `reason` (or clearing the previous
    /// one). Refuses an unknown id, a move the lifecycle does not allow, and a move that would
    /// make a second live federation with the peer mesh. Returns the updated record.
    pub fn set_state(
        &self,
        id: &FederationId,
        state: FederationState,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<FederationRecord, StoreError> {
        let now_sql = to_sql("now", now)?;
        let mut conn = self.conn();
        let action = || format!("set the state of federation {id} to {state}");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        let mut rec = read(&tx, id)?.ok_or_else(|| StoreError::UnknownFederation(id.clone()))?;
        rec.state = transition(&rec, state)?;
        rec.state_reason = reason.map(str::to_owned);
        rec.updated = now;
        refuse_second_live(&tx, &rec)?;
        tx.execute(
            "UPDATE federations SET state = ?2, state_reason = ?3, updated = ?4 WHERE id = ?1",
            params![id.as_str(), state.name(), reason, now_sql],
        )
        .doing(action)?;
        tx.commit().doing(action)?;
        Ok(rec)
    }

    /// Replaces federation `id`'s peer addresses (how it is reached: a federation through a
    /// broker records the broker it now runs through). Returns the updated record.
    pub fn set_peer_addrs(
        &self,
        id: &FederationId,
        addrs: &[String],
    ) -> Result<FederationRecord, StoreError> {
        let mut conn = self.conn();
        let action = || format!("set the peer addresses of federation {id}");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        let mut rec = read(&tx, id)?.ok_or_else(|| StoreError::UnknownFederation(id.clone()))?;
        rec.peer_addrs = addrs.to_vec();
        write_lists(&tx, &rec)?;
        tx.commit().doing(action)?;
        Ok(rec)
    }

    /// The federation `id`, if stored.
    pub fn federation(&self, id: &FederationId) -> Result<Option<FederationRecord>, StoreError> {
        read(&self.conn(), id)
    }

    /// The live (not terminated) federation with mesh `peer`, if there is one.
    pub fn live_federation_with(
        &self,
        peer: &MeshId,
    ) -> Result<Option<FederationRecord>, StoreError> {
        live_with(&self.conn(), peer)
    }

    /// Every stored federation, terminated ones included, oldest first (by `created`, then by
    /// insertion order).
    pub fn federations(&self) -> Result<Vec<FederationRecord>, StoreError> {
        let conn = self.conn();
        let sql = format!("{SELECT} ORDER BY created, rowid");
        let found = rows(
            &conn,
            &sql,
            [],
            || "list federations".into(),
            FederationRecord::from_row,
        )?;
        found
            .into_iter()
            .map(|rec| with_lists(&conn, rec))
            .collect()
    }
}

/// Federation `id` with its lists.
pub(crate) fn read(
    conn: &Connection,
    id: &FederationId,
) -> Result<Option<FederationRecord>, StoreError> {
    let sql = format!("{SELECT} WHERE id = ?1");
    let action = || format!("read federation {id}");
    let found = row(
        conn,
        &sql,
        [id.as_str()],
        action,
        FederationRecord::from_row,
    )?;
    found.map(|rec| with_lists(conn, rec)).transpose()
}

/// The live federation with `peer`, with its lists.
fn live_with(conn: &Connection, peer: &MeshId) -> Result<Option<FederationRecord>, StoreError> {
    let sql = format!("{SELECT} WHERE peer_mesh = ?1 AND state NOT IN {TERMINATED}");
    let action = || format!("find the live federation with mesh {peer}");
    let found = row(
        conn,
        &sql,
        [peer.as_str()],
        action,
        FederationRecord::from_row,
    )?;
    found.map(|rec| with_lists(conn, rec)).transpose()
}

/// Fills `rec`'s peer addresses and trust bundle from their tables.
fn with_lists(
    conn: &Connection,
    mut rec: FederationRecord,
) -> Result<FederationRecord, StoreError> {
    let id = rec.id.as_str();
    let action = || format!("read the lists of federation {id}");
    rec.peer_addrs = rows(
        conn,
        "SELECT position, addr FROM federation_addrs WHERE federation_id = ?1 ORDER BY position",
        [id],
        action,
        |row| list_cells("federation_addrs", id, row).text("addr"),
    )?;
    rec.peer_bundle = rows(
        conn,
        "SELECT position, cert_der FROM federation_bundle WHERE federation_id = ?1 ORDER BY position",
        [id],
        action,
        |row| list_cells("federation_bundle", id, row).blob("cert_der"),
    )?;
    Ok(rec)
}

/// A list row, named `id#position` in errors.
fn list_cells<'a, 'r>(table: &'static str, id: &str, row: &'a Row<'r>) -> Cells<'a, 'r> {
    let position = row
        .get::<_, i64>("position")
        .map_or_else(|_| "?".to_owned(), |p| p.to_string());
    Cells::new(table, format!("{id}#{position}"), row)
}

/// Replaces `rec`'s stored peer addresses and trust bundle with its current ones.
fn write_lists(tx: &Transaction<'_>, rec: &FederationRecord) -> Result<(), StoreError> {
    let id = rec.id.as_str();
    let action = || format!("store the addresses and trust bundle of federation {id}");
    tx.execute(
        "DELETE FROM federation_addrs WHERE federation_id = ?1",
        [id],
    )
    .doing(action)?;
    let mut add_addr = tx
        .prepare_cached(
            "INSERT INTO federation_addrs (federation_id, position, addr) VALUES (?1, ?2, ?3)",
        )
        .doing(action)?;
    for (position, addr) in (0_i64..).zip(&rec.peer_addrs) {
        add_addr
            .execute(params![id, position, addr])
            .doing(action)?;
    }
    write_bundle(tx, &rec.id, &rec.peer_bundle)
}

/// Replaces federation `id`'s stored peer trust bundle with `bundle` (DER, in order).
pub(crate) fn write_bundle(
    tx: &Transaction<'_>,
    id: &FederationId,
    bundle: &[Vec<u8>],
) -> Result<(), StoreError> {
    let id = id.as_str();
    let action = || format!("store the trust bundle of federation {id}");
    tx.execute(
        "DELETE FROM federation_bundle WHERE federation_id = ?1",
        [id],
    )
    .doing(action)?;
    let mut add_cert = tx
        .prepare_cached(
            "INSERT INTO federation_bundle (federation_id, position, cert_der) VALUES (?1, ?2, ?3)",
        )
        .doing(action)?;
    for (position, der) in (0_i64..).zip(bundle) {
        add_cert.execute(params![id, position, der]).doing(action)?;
    }
    Ok(())
}

/// Refuses `rec` if it is live and its peer mesh already has another live federation.
fn refuse_second_live(conn: &Connection, rec: &FederationRecord) -> Result<(), StoreError> {
    if !rec.state.is_live() {
        return Ok(());
    }
    match live_with(conn, &rec.peer_mesh)? {
        Some(existing) if existing.id != rec.id => Err(StoreError::PeerAlreadyFederated {
            peer: rec.peer_mesh.clone(),
            existing: existing.id,
        }),
        _ => Ok(()),
    }
}

/// `stored`'s move to `to`, as the lifecycle allows it.
fn transition(
    stored: &FederationRecord,
    to: FederationState,
) -> Result<FederationState, StoreError> {
    stored
        .state
        .transition(to)
        .map_err(|transition| StoreError::IllegalTransition {
            id: stored.id.clone(),
            transition,
        })
}

/// Refuses an update that changes what is fixed when a federation is created.
fn refuse_fixed_change(
    stored: &FederationRecord,
    rec: &FederationRecord,
) -> Result<(), StoreError> {
    let fixed = |field, stored: String, given: String| {
        let id = rec.id.clone();
        if stored == given {
            Ok(())
        } else {
            Err(StoreError::FixedField {
                id,
                field,
                stored,
                given,
            })
        }
    };
    fixed(
        "peer_mesh",
        stored.peer_mesh.to_string(),
        rec.peer_mesh.to_string(),
    )?;
    fixed("role", stored.role.to_string(), rec.role.to_string())?;
    fixed(
        "created",
        Shown(stored.created).to_string(),
        Shown(rec.created).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use meshfed_proto::Termination;

    use super::*;

    const GRACEFUL: FederationState = FederationState::Terminated(Termination::Graceful);

    fn fed(id: &str, peer: &str, created: u64) -> FederationRecord {
        FederationRecord {
            id: id.parse().unwrap(),
            peer_mesh: peer.parse().unwrap(),
            peer_node: Some("gw-1".parse().unwrap()),
            role: Role::Initiator,
            state: FederationState::Negotiating,
            state_reason: Some("joined with tok_1".into()),
            peer_addrs: vec!["10.0.0.1:7443".into(), "gw.plant-a.example:7443".into()],
            peer_bundle: vec![vec![0x30, 0x82, 1, 2], vec![0x30, 0x82, 3, 4, 5]],
            agreement: vec![0xa1, 0x01, 0x02],
            agreement_digest: [0x5a; 48],
            created: Timestamp(created),
            updated: Timestamp(created),
        }
    }

    #[test]
    fn terminated_list_matches_the_lifecycle_names() {
        let names = [Termination::Graceful, Termination::Forced]
            .map(|t| format!("'{}'", FederationState::Terminated(t).name()));
        assert_eq!(TERMINATED, format!("({})", names.join(", ")));
    }

    #[test]
    fn federation_round_trips_every_field() {
        let store = Store::open_in_memory().unwrap();
        let mut rec = fed("fed_1", "plant-a", 1_000);
        rec.role = Role::Responder;
        store.insert_federation(&rec).unwrap();
        assert_eq!(store.federation(&rec.id).unwrap(), Some(rec.clone()));

        let mut bare = fed("fed_2", "plant-b", 2_000);
        (bare.peer_node, bare.state_reason) = (None, None);
        (bare.peer_addrs, bare.peer_bundle, bare.agreement) = (vec![], vec![], vec![]);
        store.insert_federation(&bare).unwrap();
        assert_eq!(store.federation(&bare.id).unwrap(), Some(bare));

        let moved = store
            .set_peer_addrs(&rec.id, &["via:hub".to_owned()])
            .unwrap();
        assert_eq!(moved.peer_addrs, ["via:hub"]);
        assert_eq!(store.federation(&rec.id).unwrap(), Some(moved));
        assert!(matches!(
            store.set_peer_addrs(&"fed_none".parse().unwrap(), &[]),
            Err(StoreError::UnknownFederation(_))
        ));
        assert_eq!(
            store.federation(&"fed_none".parse().unwrap()).unwrap(),
            None
        );
    }

    #[test]
    fn a_terminated_federation_is_reestablished_under_its_id_keeping_its_history() {
        let store = Store::open_in_memory().unwrap();
        let mut old = fed("fed_1", "plant-a", 1_000);
        old.state = FederationState::Active;
        store.insert_federation(&old).unwrap();
        let mut new = fed("fed_1", "plant-a", 9_000);
        new.state = FederationState::Negotiating;
        new.role = Role::Responder;
        new.agreement = vec![0xa2; 8];
        new.agreement_digest = [0x22; 48];
        new.peer_addrs = vec!["10.0.0.9:7443".into()];
        // Not while it is live.
        let err = store.reestablish_federation(&new).unwrap_err();
        assert!(
            matches!(err, StoreError::PeerAlreadyFederated { .. }),
            "{err}"
        );

        store
            .set_state(&old.id, GRACEFUL, Some("by operator"), Timestamp(5_000))
            .unwrap();
        let got = store.reestablish_federation(&new).unwrap();
        assert_eq!(got.state, FederationState::Active);
        assert_eq!(got.created, Timestamp(1_000), "keeps its creation time");
        let stored = store.federation(&old.id).unwrap().unwrap();
        assert_eq!(stored, got);
        assert_eq!(stored.role, Role::Responder);
        assert_eq!(stored.agreement_digest, [0x22; 48]);
        assert_eq!(stored.peer_addrs, ["10.0.0.9:7443"]);
        let history = store.federation_history(&old.id).unwrap();
        assert_eq!(
            history,
            [HistoryEntry {
                replaced: Timestamp(9_000),
                state: GRACEFUL,
                state_reason: Some("by operator".into()),
                role: Role::Initiator,
                agreement_digest: [0x5a; 48],
            }]
        );
        // Another peer's id cannot be taken over.
        let mut other = fed("fed_1", "plant-z", 10_000);
        other.state = FederationState::Active;
        store
            .set_state(&old.id, GRACEFUL, None, Timestamp(9_500))
            .unwrap();
        let err = store.reestablish_federation(&other).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::FixedField {
                    field: "peer_mesh",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn update_replaces_mutable_fields() {
        let store = Store::open_in_memory().unwrap();
        let mut rec = fed("fed_1", "plant-a", 1_000);
        store.insert_federation(&rec).unwrap();
        rec.state = FederationState::Active;
        rec.state_reason = None;
        rec.peer_node = Some("gw-2".parse().unwrap());
        rec.peer_addrs = vec!["10.0.0.9:7443".into()];
        rec.peer_bundle = vec![vec![9; 300], vec![8; 10], vec![7]];
        rec.agreement = vec![0xa2; 64];
        rec.agreement_digest = [0x11; 48];
        rec.updated = Timestamp(5_000);
        store.update_federation(&rec).unwrap();
        assert_eq!(store.federation(&rec.id).unwrap(), Some(rec));
    }

    #[test]
    fn update_refuses_fixed_fields_and_illegal_moves() {
        let store = Store::open_in_memory().unwrap();
        let rec = fed("fed_1", "plant-a", 1_000);
        store.insert_federation(&rec).unwrap();

        let mut moved = rec.clone();
        moved.peer_mesh = "plant-z".parse().unwrap();
        let err = store.update_federation(&moved).unwrap_err();
        assert_eq!(
            err.to_string(),
            "federation fed_1: peer_mesh cannot change (stored plant-a, given plant-z)"
        );

        let mut suspended = rec.clone();
        suspended.state = FederationState::Suspended;
        let err = store.update_federation(&suspended).unwrap_err();
        assert_eq!(
            err.to_string(),
            "federation fed_1: a federation that is negotiating cannot become suspended"
        );

        let err = store
            .update_federation(&fed("fed_9", "plant-a", 1_000))
            .unwrap_err();
        assert_eq!(err.to_string(), "there is no federation fed_9");
        assert_eq!(store.federation(&rec.id).unwrap(), Some(rec));
    }

    #[test]
    fn duplicate_federation_id_is_refused() {
        let store = Store::open_in_memory().unwrap();
        store
            .insert_federation(&fed("fed_1", "plant-a", 1_000))
            .unwrap();
        let mut other = fed("fed_1", "plant-b", 2_000);
        other.state = GRACEFUL;
        let err = store.insert_federation(&other).unwrap_err();
        assert_eq!(err.to_string(), "federation fed_1 already exists");
    }

    #[test]
    fn second_live_federation_with_a_peer_is_refused_until_the_first_terminates() {
        let store = Store::open_in_memory().unwrap();
        let first = fed("fed_1", "plant-a", 1_000);
        store.insert_federation(&first).unwrap();
        store
            .insert_federation(&fed("fed_b", "plant-b", 1_500))
            .unwrap();

        let err = store
            .insert_federation(&fed("fed_2", "plant-a", 2_000))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::PeerAlreadyFederated { existing, .. } if *existing == first.id)
        );
        assert_eq!(
            err.to_string(),
            "mesh plant-a already has a live federation (fed_1); terminate it first"
        );

        store
            .set_state(&first.id, GRACEFUL, Some("operator"), Timestamp(3_000))
            .unwrap();
        assert_eq!(store.live_federation_with(&first.peer_mesh).unwrap(), None);
        store
            .insert_federation(&fed("fed_2", "plant-a", 4_000))
            .unwrap();
        let live = store
            .live_federation_with(&first.peer_mesh)
            .unwrap()
            .unwrap();
        assert_eq!(live.id.as_str(), "fed_2");

        // The old one cannot come back while the new one is live.
        let err = store
            .set_state(
                &first.id,
                FederationState::Reestablishing,
                None,
                Timestamp(5_000),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "mesh plant-a already has a live federation (fed_2); terminate it first"
        );
    }

    #[test]
    fn set_state_follows_the_lifecycle_and_records_reason_and_time() {
        let store = Store::open_in_memory().unwrap();
        let rec = fed("fed_1", "plant-a", 1_000);
        store.insert_federation(&rec).unwrap();
        let active = store
            .set_state(&rec.id, FederationState::Active, None, Timestamp(2_000))
            .unwrap();
        assert_eq!(
            (active.state, active.state_reason, active.updated),
            (FederationState::Active, None, Timestamp(2_000))
        );
        let paused = store
            .set_state(
                &rec.id,
                FederationState::Suspended,
                Some("maintenance"),
                Timestamp(3_000),
            )
            .unwrap();
        assert_eq!(paused.state_reason.as_deref(), Some("maintenance"));
        assert_eq!(store.federation(&rec.id).unwrap(), Some(paused));
    }

    #[test]
    fn illegal_state_transition_is_refused_with_the_lifecycle_message() {
        let store = Store::open_in_memory().unwrap();
        let rec = fed("fed_1", "plant-a", 1_000);
        store.insert_federation(&rec).unwrap();
        store
            .set_state(&rec.id, GRACEFUL, None, Timestamp(2_000))
            .unwrap();
        let err = store
            .set_state(&rec.id, FederationState::Active, None, Timestamp(3_000))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::IllegalTransition { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "federation fed_1: it is already terminated (terminated-graceful); a terminated federation stays so (invite the mesh again to federate anew)"
        );
        assert_eq!(store.federation(&rec.id).unwrap().unwrap().state, GRACEFUL);

        let err = store
            .set_state(
                &"fed_x".parse().unwrap(),
                FederationState::Active,
                None,
                Timestamp(3_000),
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "there is no federation fed_x");
    }

    #[test]
    fn federations_are_listed_oldest_first() {
        let store = Store::open_in_memory().unwrap();
        store
            .insert_federation(&fed("fed_c", "plant-c", 3_000))
            .unwrap();
        store
            .insert_federation(&fed("fed_a", "plant-a", 1_000))
            .unwrap();
        store
            .insert_federation(&fed("fed_b", "plant-b", 2_000))
            .unwrap();
        let ids: Vec<String> = store
            .federations()
            .unwrap()
            .into_iter()
            .map(|f| f.id.to_string())
            .collect();
        assert_eq!(ids, ["fed_a", "fed_b", "fed_c"]);
        assert_eq!(
            store.federations().unwrap()[0],
            fed("fed_a", "plant-a", 1_000)
        );
    }

    #[test]
    fn federations_survive_close_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite");
        let rec = fed("fed_1", "plant-a", 1_000);
        {
            let store = Store::open(&path).unwrap();
            store.insert_federation(&rec).unwrap();
            store
                .set_state(
                    &rec.id,
                    FederationState::Active,
                    Some("up"),
                    Timestamp(2_000),
                )
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let back = store.federation(&rec.id).unwrap().unwrap();
        assert_eq!(back.state, FederationState::Active);
        assert_eq!(back.state_reason.as_deref(), Some("up"));
        assert_eq!(
            (back.peer_addrs, back.peer_bundle),
            (rec.peer_addrs, rec.peer_bundle)
        );
        assert_eq!(
            store
                .live_federation_with(&rec.peer_mesh)
                .unwrap()
                .unwrap()
                .id,
            rec.id
        );
    }

    /// Writes `value` into `column` of `table` with raw SQL, then expects reading federation
    /// `fed_1` to fail naming that table, `row` and column, with `problem` in the text.
    fn assert_corrupt(table: &str, column: &str, value: &str, row: &str, problem: &str) {
        let store = Store::open_in_memory().unwrap();
        store
            .insert_federation(&fed("fed_1", "plant-a", 1_000))
            .unwrap();
        let sql = format!("UPDATE {table} SET {column} = {value}");
        store.conn().execute(&sql, []).unwrap();
        let err = store.federation(&"fed_1".parse().unwrap()).unwrap_err();
        let StoreError::Corrupt {
            table: t,
            row: r,
            column: c,
            ..
        } = &err
        else {
            panic!("{column}: {err:?}")
        };
        assert_eq!((*t, r.as_str(), *c), (table, row, column));
        let text = err.to_string();
        let head = format!("corrupt row in table {table} (row {row:?}), column {column}: ");
        assert!(text.starts_with(&head) && text.contains(problem), "{text}");
        assert!(store.federations().is_err(), "listing must fail too");
    }

    #[test]
    fn corrupt_federation_rows_name_table_row_and_column() {
        assert_corrupt(
            "federations",
            "peer_mesh",
            "'Not A Mesh'",
            "fed_1",
            "invalid mesh id",
        );
        assert_corrupt(
            "federations",
            "peer_node",
            "'gw_1'",
            "fed_1",
            "invalid node name",
        );
        assert_corrupt(
            "federations",
            "state",
            "'paused'",
            "fed_1",
            "unknown federation state \"paused\"",
        );
        assert_corrupt(
            "federations",
            "role",
            "'observer'",
            "fed_1",
            "unknown role \"observer\"",
        );
        assert_corrupt(
            "federations",
            "agreement_digest",
            "x'00'",
            "fed_1",
            "48 bytes, found 1",
        );
        assert_corrupt(
            "federations",
            "updated",
            "-5",
            "fed_1",
            "before the Unix epoch",
        );
    }

    #[test]
    fn corrupt_federation_id_is_named_by_its_stored_text() {
        let store = Store::open_in_memory().unwrap();
        store
            .insert_federation(&fed("fed_1", "plant-a", 1_000))
            .unwrap();
        store
            .conn()
            .execute("PRAGMA foreign_keys = OFF", [])
            .unwrap();
        store
            .conn()
            .execute("UPDATE federations SET id = 'fed 1'", [])
            .unwrap();
        let err = store.federations().unwrap_err();
        assert_eq!(
            err.to_string(),
            "corrupt row in table federations (row \"fed 1\"), column id: \
             invalid federation id \"fed 1\": must be 1 to 128 ASCII letters, digits, '_' or '-'"
        );
    }
}
