//! Renegotiation in place (DESIGN.md §3.3): a federation's new agreement version replaces the
//! one in force, which stays in its agreement history; and the offer (capabilities and policy)
//! this side made for the agreement in force, so a changed offer is noticed when a link comes up.

use meshfed_proto::FederationId;
use meshfed_proto::agreement::SignedAgreement;
use meshfed_proto::envelope::Timestamp;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::Store;
use crate::cells::{Cells, rows};
use crate::error::{Doing, StoreError};
use crate::federation::{FederationRecord, read};
use crate::time_fmt::to_sql;

/// An agreement a federation had before a renegotiation replaced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreementEntry {
    /// Its version.
    pub version: u32,
    /// SHA-384 of the signed agreement.
    pub agreement_digest: [u8; 48],
    /// When the next version replaced it.
    pub replaced: Timestamp,
}

/// A renegotiated agreement to put in force.
#[derive(Debug, Clone, Copy)]
pub struct Renegotiated<'a> {
    /// The version it replaces; it must be the one in force.
    pub replaces: u32,
    /// The digest of the agreement it replaces, as the caller last read it.
    pub replaces_digest: &'a [u8; 48],
    /// The new signed agreement, CBOR.
    pub agreement: &'a [u8],
    /// Its SHA-384.
    pub digest: &'a [u8; 48],
    /// The offer this side made for it, CBOR.
    pub offer: &'a [u8],
    /// When it was put in force.
    pub at: Timestamp,
}

impl Store {
    /// Puts a renegotiated agreement in force for federation `id`, keeping the one it replaces in
    /// the agreement history ([`Store::agreement_history`]) and recording this side's offer.
    /// Refuses an unknown id, and an agreement in force other than the one `new` replaces (the
    /// error names the version in force). Returns the updated record.
    pub fn renegotiate_agreement(
        &self,
        id: &FederationId,
        new: Renegotiated<'_>,
    ) -> Result<FederationRecord, StoreError> {
        let mut conn = self.conn();
        let action = || format!("renegotiate the agreement of federation {id}");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(action)?;
        let mut rec = read(&tx, id)?.ok_or_else(|| StoreError::UnknownFederation(id.clone()))?;
        if &rec.agreement_digest != new.replaces_digest {
            let in_force = SignedAgreement::decode(&rec.agreement)
                .ok()
                .and_then(|s| s.agreement().ok())
                .map_or(0, |a| a.version);
            return Err(StoreError::AgreementChanged {
                id: id.clone(),
                in_force,
            });
        }
        let at = to_sql("at", new.at)?;
        tx.execute(
            "INSERT OR REPLACE INTO federation_agreements
                 (federation_id, version, agreement, agreement_digest, replaced)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id.as_str(),
                new.replaces,
                rec.agreement,
                &rec.agreement_digest[..],
                at
            ],
        )
        .doing(action)?;
        tx.execute(
            "UPDATE federations SET agreement = ?2, agreement_digest = ?3, updated = ?4
             WHERE id = ?1",
            params![id.as_str(), new.agreement, &new.digest[..], at],
        )
        .doing(action)?;
        write_offer(&tx, id, new.offer)?;
        tx.commit().doing(action)?;
        rec.agreement = new.agreement.to_vec();
        rec.agreement_digest = *new.digest;
        rec.updated = new.at;
        Ok(rec)
    }

    /// The agreements federation `id` replaced by renegotiating, oldest version first.
    pub fn agreement_history(&self, id: &FederationId) -> Result<Vec<AgreementEntry>, StoreError> {
        let conn = self.conn();
        let idtext = id.as_str();
        rows(
            &conn,
            "SELECT version, agreement_digest, replaced FROM federation_agreements
             WHERE federation_id = ?1 ORDER BY version",
            [idtext],
            || format!("read the agreement history of federation {idtext}"),
            |row| {
                let c = Cells::new("federation_agreements", idtext.to_owned(), row);
                let version = c.int("version")?;
                Ok(AgreementEntry {
                    version: u32::try_from(version)
                        .map_err(|_| c.corrupt("version", format!("{version} is out of range")))?,
                    agreement_digest: c.digest("agreement_digest")?,
                    replaced: c.time("replaced")?,
                })
            },
        )
    }

    /// The offer this side made for federation `id`'s agreement in force, if recorded.
    pub fn agreed_offer(&self, id: &FederationId) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn()
            .query_row(
                "SELECT offer FROM federation_offers WHERE federation_id = ?1",
                [id.as_str()],
                |row| row.get(0),
            )
            .optional()
            .doing(|| format!("read the offer of federation {id}"))
    }

    /// Records the offer this side made for federation `id`'s agreement in force.
    pub fn set_agreed_offer(&self, id: &FederationId, offer: &[u8]) -> Result<(), StoreError> {
        write_offer(&self.conn(), id, offer)
    }
}

fn write_offer(
    conn: &rusqlite::Connection,
    id: &FederationId,
    offer: &[u8],
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO federation_offers (federation_id, offer) VALUES (?1, ?2)",
        params![id.as_str(), offer],
    )
    .doing(|| format!("record the offer of federation {id}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use meshfed_proto::FederationState;

    use super::*;
    use crate::Role;

    fn fed() -> FederationRecord {
        FederationRecord {
            id: "fed_1".parse().unwrap(),
            peer_mesh: "plant-a".parse().unwrap(),
            peer_node: Some("gw-1".parse().unwrap()),
            role: Role::Initiator,
            state: FederationState::Active,
            state_reason: None,
            peer_addrs: vec![],
            peer_bundle: vec![vec![0x30, 0x82, 1, 2]],
            agreement: vec![0xa1, 0x01, 0x01],
            agreement_digest: [1; 48],
            created: Timestamp(1_000),
            updated: Timestamp(1_000),
        }
    }

    #[test]
    fn history_keeps_versions_beyond_255() {
        let store = Store::open_in_memory().unwrap();
        let rec = fed();
        store.insert_federation(&rec).unwrap();
        store
            .renegotiate_agreement(
                &rec.id,
                Renegotiated {
                    replaces: 300,
                    replaces_digest: &[1; 48],
                    agreement: &[0xa1, 0x01, 0x02],
                    digest: &[2; 48],
                    offer: b"offer",
                    at: Timestamp(5_000),
                },
            )
            .unwrap();
        let history = store.agreement_history(&rec.id).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].version, 300);
    }

    #[test]
    fn a_renegotiated_agreement_is_in_force_and_the_old_one_kept_by_version() {
        let store = Store::open_in_memory().unwrap();
        let rec = fed();
        store.insert_federation(&rec).unwrap();
        assert_eq!(store.agreed_offer(&rec.id).unwrap(), None);
        let updated = store
            .renegotiate_agreement(
                &rec.id,
                Renegotiated {
                    replaces: 1,
                    replaces_digest: &[1; 48],
                    agreement: &[0xa1, 0x01, 0x02],
                    digest: &[2; 48],
                    offer: b"offer-2",
                    at: Timestamp(5_000),
                },
            )
            .unwrap();
        assert_eq!(updated.agreement, vec![0xa1, 0x01, 0x02]);
        assert_eq!(store.federation(&rec.id).unwrap(), Some(updated));
        assert_eq!(
            store.agreement_history(&rec.id).unwrap(),
            [AgreementEntry {
                version: 1,
                agreement_digest: [1; 48],
                replaced: Timestamp(5_000),
            }]
        );
        assert_eq!(
            store.agreed_offer(&rec.id).unwrap().as_deref(),
            Some(&b"offer-2"[..])
        );

        // A renegotiation that read the old agreement loses.
        let err = store
            .renegotiate_agreement(
                &rec.id,
                Renegotiated {
                    replaces: 1,
                    replaces_digest: &[1; 48],
                    agreement: &[0xa1, 0x01, 0x03],
                    digest: &[3; 48],
                    offer: b"offer-3",
                    at: Timestamp(6_000),
                },
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "federation fed_1: the agreement in force changed meanwhile (now version 0)"
        );
        let unknown = store.renegotiate_agreement(
            &"fed_none".parse().unwrap(),
            Renegotiated {
                replaces: 1,
                replaces_digest: &[1; 48],
                agreement: &[],
                digest: &[0; 48],
                offer: b"",
                at: Timestamp(6_000),
            },
        );
        assert!(matches!(unknown, Err(StoreError::UnknownFederation(_))));
    }
}
