//! The discovery directory a broker serves: mesh descriptors its neighbours publish.
//!
//! Every node sends its mesh's descriptor (a [`MeshDescriptor`] signed as a statement by its
//! node key, carrying its mesh CA) on each new link it holds directly; a broker checks and lists
//! it. The checks: the signer's certificate chains to the CA the descriptor carries and names
//! the mesh described, the signature verifies, it has not expired, and it is newer than the one
//! listed for that mesh, under the same CA (an older one replayed, or one under another CA while
//! a descriptor is listed, is refused). Entries live in memory: neighbours publish again on
//! every link, so a restarted broker lists them again as they reconnect.
//!
//! The directory is no trust anchor: anyone can make a CA naming any mesh. It says where a
//! mesh may be found and under which CA fingerprint; joining still takes an invitation or the
//! fingerprint obtained out of band.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use meshfed_proto::MeshId;
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::statement::{MeshDescriptor, SignedStatement, StatementKind};
use meshfed_trust::statement::{Signer, sign_statement, verify_statement};
use meshfed_trust::{Fingerprint, TrustBundle};
use rustls_pki_types::CertificateDer;
use serde_bytes::ByteBuf;

use super::context::Context;
use crate::clock::rfc3339;

/// How long a published descriptor is listed.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A listed descriptor.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    /// What the mesh published.
    pub(crate) descriptor: MeshDescriptor,
    /// The fingerprint of the CA it carries.
    pub(crate) ca_fingerprint: Fingerprint,
}

/// Why a descriptor is not listed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// It does not decode.
    #[error("not a mesh descriptor: {0}")]
    Malformed(String),
    /// The signer or the signature does not hold.
    #[error(
        "the descriptor of mesh {mesh} is not signed by a node under the CA it carries: {reason}"
    )]
    BadSignature {
        /// The mesh it names.
        mesh: MeshId,
        /// Why.
        reason: String,
    },
    /// Its time is over.
    #[error("the descriptor of mesh {mesh} expired at {expires}")]
    Expired {
        /// The mesh it names.
        mesh: MeshId,
        /// When it expired.
        expires: String,
    },
    /// Not newer than the one listed.
    #[error(
        "the descriptor of mesh {mesh} issued at {issued} is not newer than the one listed (issued at {listed}): an old one replayed"
    )]
    Replayed {
        /// The mesh it names.
        mesh: MeshId,
        /// When it was issued.
        issued: String,
        /// When the listed one was.
        listed: String,
    },
    /// Another CA's descriptor is listed for the mesh.
    #[error(
        "mesh {mesh} is listed under CA {listed}; a descriptor under CA {offered} is refused while that one is listed"
    )]
    OtherCa {
        /// The mesh it names.
        mesh: MeshId,
        /// The listed CA.
        listed: Fingerprint,
        /// The CA offered.
        offered: Fingerprint,
    },
}

/// The descriptors listed, by mesh.
#[derive(Default)]
pub(crate) struct Directory {
    entries: Mutex<BTreeMap<MeshId, Listed>>,
}

impl Directory {
    /// Checks a published descriptor (a signed statement's wire form) and lists it.
    pub(crate) fn offer(&self, bytes: &[u8], now: SystemTime) -> Result<MeshId, Refused> {
        let statement =
            SignedStatement::decode(bytes).map_err(|e| Refused::Malformed(e.to_string()))?;
        if statement.kind != StatementKind::Descriptor {
            return Err(Refused::Malformed(format!(
                "a {:?} statement, not a descriptor",
                statement.kind
            )));
        }
        let d = MeshDescriptor::decode(&statement.body)
            .map_err(|e| Refused::Malformed(e.to_string()))?;
        let mesh = d.mesh.clone();
        let bad = |reason: String| Refused::BadSignature {
            mesh: mesh.clone(),
            reason,
        };
        let bundle = TrustBundle::new(vec![CertificateDer::from(d.ca.to_vec())])
            .map_err(|e| bad(format!("its CA certificate: {e}")))?;
        if bundle.mesh() != &mesh {
            return Err(bad(format!("its CA is mesh {}'s", bundle.mesh())));
        }
        match verify_statement(&bundle, &statement, now).map_err(|e| bad(e.to_string()))? {
            Signer::Node(info) if info.mesh == mesh => {}
            Signer::Node(info) => return Err(bad(format!("its signer is of mesh {}", info.mesh))),
            Signer::Ca(_) => {}
        }
        let now_ms = Timestamp(
            u64::try_from(
                now.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
        );
        if d.expires <= now_ms {
            return Err(Refused::Expired {
                mesh,
                expires: rfc3339(d.expires),
            });
        }
        let ca_fingerprint = Fingerprint::of(&d.ca);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(listed) = entries.get(&mesh).filter(|l| l.descriptor.expires > now_ms) {
            if listed.ca_fingerprint != ca_fingerprint {
                return Err(Refused::OtherCa {
                    mesh,
                    listed: listed.ca_fingerprint,
                    offered: ca_fingerprint,
                });
            }
            if d.issued <= listed.descriptor.issued {
                return Err(Refused::Replayed {
                    mesh,
                    issued: rfc3339(d.issued),
                    listed: rfc3339(listed.descriptor.issued),
                });
            }
        }
        entries.insert(
            mesh.clone(),
            Listed {
                descriptor: d,
                ca_fingerprint,
            },
        );
        Ok(mesh)
    }

    /// The descriptors listed and not expired at `now`, by mesh.
    pub(crate) fn listed(&self, now: Timestamp) -> Vec<Listed> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .values()
            .filter(|l| l.descriptor.expires > now)
            .cloned()
            .collect()
    }
}

/// This mesh's descriptor, signed by this node.
pub(crate) fn own(ctx: &Context) -> Result<SignedStatement, String> {
    let now = ctx.now();
    let trust = ctx.id.trust();
    let ca = (trust.bundle.cas().first())
        .map(|c| c.der().to_vec())
        .ok_or("the trust bundle holds no CA")?;
    let offer = ctx.offer();
    let descriptor = MeshDescriptor {
        mesh: ctx.id.mesh.clone(),
        capabilities: vec![
            format!("role={}", ctx.config.node.role),
            format!("max-qos={}", offer.capabilities.qos.0.level()),
            format!("max-frame={}", offer.capabilities.max_frame.0),
        ],
        addresses: ctx.advertised(),
        ca: ByteBuf::from(ca),
        issued: now,
        expires: now.saturating_add(LIFETIME),
    };
    let cert = ctx.id.cert();
    let mut chain = vec![cert.der().to_vec()];
    chain.extend(trust.issuing_der.clone());
    sign_statement(
        StatementKind::Descriptor,
        descriptor.encode(),
        &cert.key,
        chain,
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use meshfed_testkit::pki::TestPki;

    use super::*;

    fn ms(t: SystemTime) -> u64 {
        u64::try_from(
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn ca_der(pki: &TestPki) -> Vec<u8> {
        pki.ca().cert_der().to_vec()
    }

    fn signed(pki: &TestPki, issued: u64, tweak: impl FnOnce(&mut MeshDescriptor)) -> Vec<u8> {
        let mut d = MeshDescriptor {
            mesh: pki.mesh().clone(),
            capabilities: vec!["role=gateway".into()],
            addresses: vec!["127.0.0.1:7443".into()],
            ca: ByteBuf::from(ca_der(pki)),
            issued: Timestamp(issued),
            expires: Timestamp(issued + 60_000),
        };
        tweak(&mut d);
        let node = pki.node("gw1");
        sign_statement(
            StatementKind::Descriptor,
            d.encode(),
            &node.key,
            vec![node.cert.to_vec()],
        )
        .unwrap()
        .encode()
    }

    #[test]
    fn a_good_descriptor_is_listed_and_a_newer_one_replaces_it() {
        let pki = TestPki::new("plant-a");
        let now = ms(pki.now());
        let dir = Directory::default();
        let listed = dir.offer(&signed(&pki, now, |_| {}), at(now)).unwrap();
        assert_eq!(&listed, pki.mesh());
        let moved = signed(&pki, now + 1, |d| {
            d.addresses = vec!["10.0.0.2:7443".into()]
        });
        dir.offer(&moved, at(now + 1)).unwrap();
        let listed = dir.listed(Timestamp(now + 1));
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].descriptor.addresses, ["10.0.0.2:7443"]);
        assert_eq!(listed[0].ca_fingerprint, Fingerprint::of(&ca_der(&pki)));
        assert!(
            dir.listed(Timestamp(now + 61_001)).is_empty(),
            "expired ones are not shown"
        );
    }

    #[test]
    fn a_bad_signature_an_expired_or_replayed_descriptor_and_another_ca_are_refused() {
        let pki = TestPki::new("plant-a");
        let now = ms(pki.now());
        let dir = Directory::default();
        let mut forged = signed(&pki, now, |_| {});
        let last = forged.len() - 5;
        forged[last] ^= 1;
        let err = dir.offer(&forged, at(now)).unwrap_err();
        assert!(matches!(err, Refused::BadSignature { .. }), "{err}");

        let err = dir
            .offer(&signed(&pki, now, |_| {}), at(now + 60_000))
            .unwrap_err();
        assert!(matches!(err, Refused::Expired { .. }), "{err}");

        dir.offer(&signed(&pki, now + 10, |_| {}), at(now + 10))
            .unwrap();
        let err = dir
            .offer(&signed(&pki, now, |_| {}), at(now + 20))
            .unwrap_err();
        assert!(
            err.to_string().contains("is not newer than the one listed"),
            "{err}"
        );

        let impostor = TestPki::new("plant-a");
        let err = dir
            .offer(&signed(&impostor, now + 30, |_| {}), at(now + 30))
            .unwrap_err();
        assert!(matches!(err, Refused::OtherCa { .. }), "{err}");

        // A node of one mesh cannot describe another.
        let other = TestPki::new("depot-d");
        let err = dir
            .offer(
                &signed(&other, now, |d| d.mesh = "plant-b".parse().unwrap()),
                at(now),
            )
            .unwrap_err();
        assert!(matches!(err, Refused::BadSignature { .. }), "{err}");
    }
}
