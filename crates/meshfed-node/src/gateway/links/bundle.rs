//! Trust bundles on live links (CA rollover, DESIGN.md §2): this mesh announces its bundle
//! statement on every new link and to every link when it changes; a peer's statement is checked
//! against the bundle stored for the peer, stored, applied to the link, and acknowledged.

use std::time::SystemTime;

use meshfed_proto::MeshId;
use meshfed_proto::session::LinkSession;
use meshfed_proto::statement::{BundleStatement, SignedStatement};
use meshfed_trust::{Signer, TrustBundle};
use rustls_pki_types::CertificateDer;

use super::{Links, stored_bundle};
use crate::gateway::port::LinkPort;

impl Links {
    /// Sends this mesh's current bundle statement on every open link; returns how many links.
    pub(crate) fn announce_bundle(&self, statement: &SignedStatement) -> usize {
        self.ports()
            .iter()
            .filter(|p| p.command(|s| s.announce_bundle(statement.clone())).is_ok())
            .count()
    }
}

/// The peer mesh of `port` sent its trust bundle from now on. Stored and applied when it is
/// signed by a CA of the bundle stored for the peer and newer than the stored one; answered with
/// an acknowledgement of what is stored. A statement that does not check out is refused with a
/// warning, and not acknowledged: the peer's operator sees its partner has not taken the new CA.
pub(super) async fn on_peer_bundle(links: &Links, port: &LinkPort, statement: SignedStatement) {
    match accept(links, port, statement).await {
        Ok(serial) => {
            let _ = port.command(|s| LinkSession::acknowledge_bundle(s, serial));
        }
        Err(reason) => {
            tracing::warn!(federation = %port.federation_id, peer = %port.peer, %reason, "refused the peer's trust bundle statement");
        }
    }
}

/// Checks, stores and applies a peer's statement; the serial now stored.
async fn accept(links: &Links, port: &LinkPort, statement: SignedStatement) -> Result<u64, String> {
    let ctx = &links.ctx;
    let id = port.federation_id.clone();
    let record = ctx
        .blocking(move |s| s.federation(&id))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("federation {} is not stored", port.federation_id))?;
    let stored = stored_bundle(&record).map_err(|e| e.to_string())?;
    let (body, bundle) = check(&stored, &record.peer_mesh, &statement, ctx.clock.wall())?;
    let ders: Vec<Vec<u8>> = body.cas.iter().map(|c| c.to_vec()).collect();
    let (id, serial, at) = (port.federation_id.clone(), body.serial, ctx.now());
    let (replaced, stored_serial) = ctx
        .blocking(move |s| {
            let replaced = s.replace_peer_bundle(&id, &ders, serial, at)?;
            Ok::<_, meshfed_store::StoreError>((replaced, s.bundle_serials(&id)?.peer))
        })
        .await
        .map_err(|e| e.to_string())?;
    if replaced {
        let fingerprints: Vec<String> = bundle
            .cas()
            .iter()
            .map(|c| c.fingerprint().to_string())
            .collect();
        port.trust.update(
            bundle,
            body.issuing
                .iter()
                .map(|c| CertificateDer::from(c.to_vec()))
                .collect(),
        );
        tracing::info!(federation = %port.federation_id, peer = %port.peer, serial, cas = ?fingerprints, "stored the peer mesh's new trust bundle");
    }
    Ok(stored_serial)
}

/// What a peer's statement says, if it is signed by a CA of the bundle stored for the peer
/// (`stored`, valid at `now`) and states a usable bundle of the peer's mesh.
fn check(
    stored: &TrustBundle,
    peer_mesh: &MeshId,
    statement: &SignedStatement,
    now: SystemTime,
) -> Result<(BundleStatement, TrustBundle), String> {
    match meshfed_trust::verify_statement(stored, statement, now) {
        Ok(Signer::Ca(_)) => {}
        Ok(Signer::Node(info)) => {
            return Err(format!(
                "signed by node {}, not by a CA of the stored bundle",
                info.identity()
            ));
        }
        Err(e) => return Err(e.to_string()),
    }
    let body = BundleStatement::decode(&statement.body).map_err(|e| e.to_string())?;
    if body.mesh != *peer_mesh {
        return Err(format!(
            "it states the bundle of mesh {}, the peer is mesh {peer_mesh}",
            body.mesh
        ));
    }
    let certs: Vec<CertificateDer<'static>> = body
        .cas
        .iter()
        .map(|c| CertificateDer::from(c.to_vec()))
        .collect();
    let bundle = TrustBundle::new(certs).map_err(|e| format!("the bundle it states: {e}"))?;
    if bundle.mesh() != peer_mesh {
        return Err(format!(
            "its CAs are of mesh {}, the peer is mesh {peer_mesh}",
            bundle.mesh()
        ));
    }
    Ok((body, bundle))
}

/// The peer stored this mesh's bundle of `serial`.
pub(super) async fn on_bundle_acknowledged(links: &Links, port: &LinkPort, serial: u64) {
    let id = port.federation_id.clone();
    let stored = links
        .ctx
        .blocking(move |s| s.record_bundle_ack(&id, serial))
        .await;
    match stored {
        Ok(()) => {
            tracing::info!(federation = %port.federation_id, peer = %port.peer, serial, "the peer stored this mesh's trust bundle");
        }
        Err(e) => {
            tracing::warn!(federation = %port.federation_id, error = %e, "could not record the peer's bundle acknowledgement");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshfed_proto::statement::StatementKind;
    use meshfed_trust::{MeshCa, P384PublicKey, SigningKey, sign_statement};
    use serde_bytes::ByteBuf;

    use super::*;

    fn mesh(name: &str) -> MeshId {
        name.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ca(name: &str, now: SystemTime) -> MeshCa {
        MeshCa::generate(&mesh(name), now, Duration::from_secs(3600))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn body(of: &str, cas: &[&MeshCa]) -> Vec<u8> {
        BundleStatement {
            mesh: mesh(of),
            serial: 1,
            issued_at: crate::clock::timestamp(SystemTime::now()),
            cas: cas
                .iter()
                .map(|c| ByteBuf::from(c.cert_der().to_vec()))
                .collect(),
            issuing: vec![],
        }
        .encode()
    }

    fn signed(body: Vec<u8>, by: &MeshCa) -> SignedStatement {
        sign_statement(
            StatementKind::TrustBundle,
            body,
            by.key(),
            vec![by.cert_der().to_vec()],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_bundle_signed_by_the_stored_ca_is_taken() {
        let now = SystemTime::now();
        let (old, new) = (ca("plant-a", now), ca("plant-a", now));
        let statement = signed(body("plant-a", &[&old, &new]), &old);
        let (stated, bundle) = check(old.trust_bundle(), &mesh("plant-a"), &statement, now)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stated.serial, 1);
        assert_eq!(bundle.cas().len(), 2);
    }

    #[test]
    fn a_bundle_signed_by_another_ca_a_node_or_for_another_mesh_is_refused() {
        let now = SystemTime::now();
        let stored = ca("plant-a", now);
        let impostor = ca("plant-a", now);
        let statement = signed(body("plant-a", &[&impostor]), &impostor);
        let err = check(stored.trust_bundle(), &mesh("plant-a"), &statement, now).unwrap_err();
        assert!(err.contains("not trusted"), "{err}");

        let key = SigningKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let node = stored
            .issue_node_cert(
                &"gw1".parse().unwrap_or_else(|e| panic!("{e}")),
                &P384PublicKey::of(&key),
                now,
                Duration::from_secs(600),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let by_node = sign_statement(
            StatementKind::TrustBundle,
            body("plant-a", &[&impostor]),
            &key,
            vec![node.der().to_vec()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = check(stored.trust_bundle(), &mesh("plant-a"), &by_node, now).unwrap_err();
        assert_eq!(
            err,
            "signed by node meshfed://plant-a/gw1, not by a CA of the stored bundle"
        );

        let other = ca("supplier-b", now);
        let statement = signed(body("supplier-b", &[&other]), &stored);
        let err = check(stored.trust_bundle(), &mesh("plant-a"), &statement, now).unwrap_err();
        assert_eq!(
            err,
            "it states the bundle of mesh supplier-b, the peer is mesh plant-a"
        );
        let statement = signed(body("plant-a", &[&other]), &stored);
        let err = check(stored.trust_bundle(), &mesh("plant-a"), &statement, now).unwrap_err();
        assert_eq!(
            err,
            "its CAs are of mesh supplier-b, the peer is mesh plant-a"
        );
    }
}
