//! The delegations this node holds in memory (loaded from the store at start, added to as they
//! are issued or taken): which partner may relay this mesh's messages where, and whose messages
//! this mesh may relay where. Whether one is withdrawn is asked of the revocation lists at each
//! use. No stage is imported here.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use meshfed_proto::crypto::Digest384;
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::{MeshId, Topic};
use meshfed_store::StoredDelegation;
use meshfed_trust::{P384PublicKey, TrustBundle};
use rustls_pki_types::CertificateDer;
use serde_bytes::ByteBuf;

use crate::credentials::delegation::{self, Delegation};

/// A delegation and its token as signed.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) token: String,
    pub(crate) delegation: Delegation,
}

/// The delegations issued by this mesh and to it.
#[derive(Debug, Default)]
pub(crate) struct Delegations {
    all: RwLock<Vec<Held>>,
    /// Delegations relays presented that verified, by token: checked once, not per message.
    verified: Mutex<HashMap<String, Delegation>>,
    /// The CAs of each mesh whose relayed messages this node accepted, as last accepted: what a
    /// relay's copy of that mesh's revocation list is checked against.
    origins: Mutex<HashMap<MeshId, TrustBundle>>,
    /// What of relayed origins' envelopes verified already: so that a relayed stream costs one
    /// certificate check per origin signer and one signature check per origin batch.
    seen: Mutex<Seen>,
}

/// Origin signers (by mesh and certificate digest: their key and when their certificate ends)
/// and origin batch heads (by signature and signer) that verified.
#[derive(Debug, Default)]
struct Seen {
    signers: HashMap<(MeshId, Digest384), (P384PublicKey, SystemTime)>,
    batches: HashSet<(Vec<u8>, Digest384)>,
}

/// Most verified delegations remembered; the memory starts again when it is full.
const VERIFIED: usize = 1024;

impl Delegations {
    /// The recorded delegations (each was verified, or issued here, before it was recorded).
    pub(crate) fn load(
        stored: Vec<StoredDelegation>,
        origin_cas: Vec<meshfed_store::OriginCas>,
    ) -> Self {
        let origins = origin_cas
            .into_iter()
            .filter_map(|(mesh, cas)| {
                let ders = cas.into_iter().map(CertificateDer::from).collect();
                match TrustBundle::new(ders) {
                    Ok(b) => Some((mesh, b)),
                    Err(e) => {
                        tracing::warn!(%mesh, error = %e, "the kept CAs of a relayed mesh do not read; its relayed revocation lists wait for its next message");
                        None
                    }
                }
            })
            .collect();
        let all = stored
            .into_iter()
            .filter_map(|s| match delegation::read_recorded(&s.token) {
                Ok(delegation) => Some(Held {
                    token: s.token,
                    delegation,
                }),
                Err(e) => {
                    tracing::warn!(delegation = %s.id, error = %e, "a recorded delegation does not read; it is not used");
                    None
                }
            })
            .collect();
        Self {
            all: RwLock::new(all),
            verified: Mutex::default(),
            origins: Mutex::new(origins),
            seen: Mutex::default(),
        }
    }

    /// What `token` says, verified by `verify` the first time it is presented. Expiry and
    /// revocation are the caller's checks at each use.
    pub(crate) fn verified(
        &self,
        token: &str,
        verify: impl FnOnce() -> Result<Delegation, delegation::DelegationError>,
    ) -> Result<Delegation, delegation::DelegationError> {
        if let Some(d) = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
        {
            return Ok(d.clone());
        }
        let d = verify()?;
        let mut known = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= VERIFIED {
            known.clear();
        }
        known.insert(token.to_owned(), d.clone());
        Ok(d)
    }

    /// The trust bundle of the CA certificates `ders` a relay presents: the one of an origin
    /// accepted before when it is the same certificates (not parsed again), else made now.
    pub(crate) fn presented_bundle(
        &self,
        ders: &[ByteBuf],
    ) -> Result<TrustBundle, meshfed_trust::BundleError> {
        if let Some(known) = self
            .origins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|b| same_cas(b, ders.iter().map(|d| &d[..])))
        {
            return Ok(known.clone());
        }
        TrustBundle::new(
            ders.iter()
                .map(|c| CertificateDer::from(c.to_vec()))
                .collect(),
        )
    }

    /// Remembers `bundle` as the CAs of `origin`, whose relayed message was just accepted;
    /// whether they are new (to be kept in the store, for after a restart).
    pub(crate) fn accepted_origin(&self, origin: &MeshId, bundle: &TrustBundle) -> bool {
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        let known = origins
            .get(origin)
            .is_some_and(|known| same_cas(known, bundle.cas().iter().map(|c| c.der().as_ref())));
        if !known {
            origins.insert(origin.clone(), bundle.clone());
        }
        !known
    }

    /// The CAs of `origin` as last accepted with one of its relayed messages.
    pub(crate) fn origin_bundle(&self, origin: &MeshId) -> Option<TrustBundle> {
        let origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        origins.get(origin).cloned()
    }

    /// The key of `origin`'s signer certificate `digest`, if it verified before and is valid at
    /// `now`.
    pub(crate) fn origin_signer(
        &self,
        origin: &MeshId,
        digest: &Digest384,
        now: SystemTime,
    ) -> Option<P384PublicKey> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.signers
            .get(&(origin.clone(), *digest))
            .filter(|(_, until)| now <= *until)
            .map(|(key, _)| key.clone())
    }

    /// Remembers that `origin`'s signer certificate `digest` verified, valid `until`.
    pub(crate) fn verified_origin_signer(
        &self,
        origin: &MeshId,
        digest: Digest384,
        key: P384PublicKey,
        until: SystemTime,
    ) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.signers.len() >= VERIFIED {
            seen.signers.clear();
        }
        seen.signers.insert((origin.clone(), digest), (key, until));
    }

    /// Whether the origin batch head with `signature` by signer `digest` verified before;
    /// remembers it when `verify` says it does.
    pub(crate) fn origin_batch<E>(
        &self,
        signature: &[u8],
        digest: &Digest384,
        verify: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let mark = (signature.to_vec(), *digest);
        if self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .batches
            .contains(&mark)
        {
            return Ok(());
        }
        verify()?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.batches.len() >= VERIFIED {
            seen.batches.clear();
        }
        seen.batches.insert(mark);
        Ok(())
    }

    /// The meshes whose delegations to `delegate` may be presented to `audience`.
    pub(crate) fn relayed_to(&self, audience: &MeshId, delegate: &MeshId) -> Vec<MeshId> {
        let all = self.all.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<MeshId> = all
            .iter()
            .filter(|h| {
                &h.delegation.delegate == delegate && h.delegation.audience.contains(audience)
            })
            .map(|h| h.delegation.issuer.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// One more, just issued or taken.
    pub(crate) fn add(&self, token: String, delegation: Delegation) {
        let mut all = self.all.write().unwrap_or_else(|e| e.into_inner());
        if !all.iter().any(|h| h.delegation.id == delegation.id) {
            all.push(Held { token, delegation });
        }
    }

    /// Those issued by `issuer` to `delegate`, usable at `now` towards `destination` for
    /// `topic` (`revoked(issuer, id)`: withdrawn), the longest-living first.
    pub(crate) fn usable(
        &self,
        issuer: &MeshId,
        delegate: Option<&MeshId>,
        destination: &MeshId,
        topic: &Topic,
        now: Timestamp,
        revoked: impl Fn(&MeshId, &str) -> bool,
    ) -> Vec<Held> {
        let all = self.all.read().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<Held> = all
            .iter()
            .filter(|h| {
                let d = &h.delegation;
                &d.issuer == issuer
                    && delegate.is_none_or(|m| &d.delegate == m)
                    && d.audience.contains(destination)
                    && d.covers(topic)
                    && d.expires > now
                    && !revoked(&d.issuer, &d.id)
            })
            .cloned()
            .collect();
        found.sort_by_key(|h| std::cmp::Reverse(h.delegation.expires));
        found
    }
}

/// Whether `bundle` holds exactly the CA certificates `ders`, in order.
fn same_cas<'a>(bundle: &TrustBundle, ders: impl ExactSizeIterator<Item = &'a [u8]>) -> bool {
    bundle.cas().len() == ders.len()
        && bundle
            .cas()
            .iter()
            .zip(ders)
            .all(|(c, d)| c.der().as_ref() == d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshfed_proto::crypto::SigningKey;

    use super::*;

    #[test]
    fn a_verified_origin_signer_is_remembered_until_its_certificate_ends() {
        let d = Delegations::default();
        let origin: MeshId = "supplier-c".parse().unwrap();
        let key = P384PublicKey::of(&SigningKey::generate().unwrap());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let digest = [7u8; 48];
        assert!(d.origin_signer(&origin, &digest, t0).is_none());
        d.verified_origin_signer(&origin, digest, key.clone(), t0 + Duration::from_secs(60));
        assert_eq!(d.origin_signer(&origin, &digest, t0), Some(key));
        assert!(
            d.origin_signer(&origin, &digest, t0 + Duration::from_secs(61))
                .is_none()
        );
        let other: MeshId = "hub-b".parse().unwrap();
        assert!(d.origin_signer(&other, &digest, t0).is_none());
    }

    #[test]
    fn a_batch_head_is_verified_once_and_a_failed_one_is_not_remembered() {
        let d = Delegations::default();
        let digest = [1u8; 48];
        let mut checks = 0;
        for _ in 0..3 {
            d.origin_batch(&[9; 96], &digest, || {
                checks += 1;
                Ok::<(), String>(())
            })
            .unwrap();
        }
        assert_eq!(checks, 1);
        let failed = d.origin_batch(&[8; 96], &digest, || Err("bad signature".to_owned()));
        assert_eq!(failed, Err("bad signature".to_owned()));
        let mut again = false;
        d.origin_batch(&[8; 96], &digest, || {
            again = true;
            Err::<(), _>("bad signature".to_owned())
        })
        .unwrap_err();
        assert!(again, "a head that failed is checked again");
    }
}
