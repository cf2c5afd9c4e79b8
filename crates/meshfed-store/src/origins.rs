//! The CAs of each mesh whose messages a trusted intermediary relayed here, as this node last
//! accepted them with one of those messages: kept so that the origin's revocation lists, which
//! relays pass on, verify after a restart as before it. Kept as `[u32 length][DER]...`.

use meshfed_proto::MeshId;
use meshfed_proto::envelope::Timestamp;
use rusqlite::params;

use crate::Store;
use crate::cells::{Cells, rows};
use crate::error::{Doing, StoreError};
use crate::time_fmt::to_sql;

/// A relayed mesh and its CAs (DER), as kept.
pub type OriginCas = (MeshId, Vec<Vec<u8>>);

impl Store {
    /// Keeps `cas` (DER certificates) as the CAs of relayed mesh `mesh`, replacing any before.
    pub fn put_origin_cas(
        &self,
        mesh: &MeshId,
        cas: &[Vec<u8>],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut bytes = Vec::new();
        for der in cas {
            let len = u32::try_from(der.len()).map_err(|_| {
                StoreError::corrupt(
                    "origin_cas",
                    mesh.as_str(),
                    "cas",
                    "a certificate over 4 GiB",
                )
            })?;
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(der);
        }
        self.conn()
            .execute(
                "INSERT INTO origin_cas (mesh, cas, updated) VALUES (?1, ?2, ?3)
                 ON CONFLICT (mesh) DO UPDATE SET cas = excluded.cas, updated = excluded.updated",
                params![mesh.as_str(), bytes, to_sql("updated", at)?],
            )
            .doing(|| format!("keep the CAs of relayed mesh {mesh}"))?;
        Ok(())
    }

    /// Every relayed mesh's CAs, as kept.
    pub fn origin_cas(&self) -> Result<Vec<OriginCas>, StoreError> {
        rows(
            &self.conn(),
            "SELECT mesh, cas FROM origin_cas ORDER BY mesh",
            [],
            || "list the relayed meshes' CAs".to_owned(),
            |row| {
                let c = Cells::keyed("origin_cas", "mesh", row);
                let mesh: MeshId = c.parse("mesh")?;
                let bytes = c.blob("cas")?;
                let mut rest = bytes.as_slice();
                let mut cas = Vec::new();
                while let Some((len, after)) = rest.split_first_chunk::<4>() {
                    let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
                    let (der, next) = after
                        .split_at_checked(len)
                        .ok_or_else(|| c.corrupt("cas", "a certificate cut short"))?;
                    cas.push(der.to_vec());
                    rest = next;
                }
                if !rest.is_empty() {
                    return Err(c.corrupt("cas", "bytes after the last certificate"));
                }
                Ok((mesh, cas))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_meshs_cas_read_back_and_are_replaced() {
        let store = Store::open_in_memory().unwrap();
        let c: MeshId = "supplier-c".parse().unwrap();
        store
            .put_origin_cas(&c, &[vec![1, 2], vec![3]], Timestamp(1))
            .unwrap();
        store.put_origin_cas(&c, &[vec![4]], Timestamp(2)).unwrap();
        assert_eq!(store.origin_cas().unwrap(), vec![(c, vec![vec![4]])]);
    }
}
