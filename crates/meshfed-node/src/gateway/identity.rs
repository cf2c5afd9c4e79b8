//! This node's identity: its mesh and name, its signing key and certificate, its mesh CA (and
//! issuing CA); and the renewal of its certificate while the gateway runs ([`renew_loop`]),
//! from the issuing CA key when the node has it, else from the mesh CA key. A CA rollover
//! changes the mesh's trust bundle, issuing CA and certificate under a running gateway:
//! [`Identity::reload`] reads them again from the node directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use meshfed_proto::crypto::SigningKey;
use meshfed_proto::envelope::SignerCertificate;
use meshfed_proto::statement::{BundleStatement, SignedStatement};
use meshfed_proto::{MeshId, NodeName};
use meshfed_transport::TlsIdentity;
use meshfed_trust::{
    CaError, Fingerprint, IssuingCa, MeshCa, NodeCert as IssuedCert, P384PublicKey, TrustBundle,
};

use tokio_util::sync::CancellationToken;

use super::error::{GatewayError, chain};
use crate::clock::Clock;
use crate::config::NodeConfig;

/// This node's identity, loaded (and its certificate renewed when due) at start. The node
/// certificate and key change while the gateway runs ([`Identity::renew`]), and so do the
/// mesh's trust bundle and issuing CA in a CA rollover ([`Identity::reload`]).
pub(crate) struct Identity {
    pub(crate) mesh: MeshId,
    pub(crate) node: NodeName,
    /// What TLS presents: follows [`Identity::renew`] and [`Identity::reload`].
    pub(crate) tls: TlsIdentity,
    trust: RwLock<Arc<MeshTrust>>,
    current: RwLock<Arc<NodeCert>>,
    renewal: RwLock<Option<Arc<Renewal>>>,
    /// Held while the certificate or the trust changes: one change at a time.
    changing: std::sync::Mutex<()>,
    /// Feature `test-hooks`: a key that signs envelopes in place of the node key, so that a
    /// test has this gateway misbehave as a peer whose signatures do not verify.
    #[cfg(feature = "test-hooks")]
    wrong_key: RwLock<Option<Arc<SigningKey>>>,
}

/// This mesh's trust bundle as it presents it.
#[derive(Debug)]
pub(crate) struct MeshTrust {
    /// The CA certificates, the one in use first (two during a rollover).
    pub(crate) bundle: TrustBundle,
    /// The fingerprint of the CA in use (what invitations pin).
    pub(crate) ca_fingerprint: Fingerprint,
    /// The issuing CA certificate (DER) behind the node certificate, if the mesh has one: what
    /// a statement this node signs carries after its certificate.
    pub(crate) issuing_der: Option<Vec<u8>>,
    /// The latest signed statement of the bundle, with its serial; `None` while the bundle is
    /// the one `meshfed init` made (serial 0).
    pub(crate) statement: Option<(SignedStatement, u64)>,
}

impl MeshTrust {
    /// The serial of the bundle (0: the one `meshfed init` made).
    pub(crate) fn serial(&self) -> u64 {
        self.statement.as_ref().map_or(0, |(_, serial)| *serial)
    }
}

/// The node certificate in use.
#[derive(Debug)]
pub(crate) struct NodeCert {
    /// As envelope headers name it (its digest computed once), with its DER, which TLS
    /// presents and links announce ([`NodeCert::der`]).
    pub(crate) signer: SignerCertificate,
    /// End of its validity.
    pub(crate) not_after: SystemTime,
    /// The node key it certifies, which signs envelopes and agreements.
    pub(crate) key: Arc<SigningKey>,
}

impl NodeCert {
    /// The certificate's DER.
    pub(crate) fn der(&self) -> &[u8] {
        self.signer.der_bytes()
    }
}

/// The CA whose key this node holds to issue its certificates.
enum Issuer {
    /// The mesh's issuing CA: the root key stays elsewhere.
    Issuing(IssuingCa),
    /// The mesh CA itself (a node directory from before issuing CAs).
    Root(MeshCa),
}

impl Issuer {
    fn issue_api_cert(
        &self,
        node: &NodeName,
        key: &P384PublicKey,
        addresses: &[std::net::IpAddr],
        now: SystemTime,
        validity: Duration,
    ) -> Result<rustls_pki_types::CertificateDer<'static>, CaError> {
        match self {
            Self::Issuing(ca) => ca.issue_api_cert(node, key, addresses, now, validity),
            Self::Root(ca) => ca.issue_api_cert(node, key, addresses, now, validity),
        }
    }

    fn issue_node_cert(
        &self,
        node: &NodeName,
        key: &P384PublicKey,
        now: SystemTime,
        validity: Duration,
    ) -> Result<IssuedCert, CaError> {
        match self {
            Self::Issuing(ca) => ca.issue_node_cert(node, key, now, validity),
            Self::Root(ca) => ca.issue_node_cert(node, key, now, validity),
        }
    }
}

/// What renewing the node certificate takes: the CA that issues it, and where and how.
struct Renewal {
    ca: Issuer,
    path: PathBuf,
    validity: Duration,
    renew_before: Duration,
    /// Where the node key lives, and whether each renewal brings a fresh one.
    key_path: PathBuf,
    rotate_key: bool,
}

impl crate::audit::HeadSigner for Identity {
    fn signer(&self) -> (Arc<meshfed_proto::crypto::SigningKey>, Vec<Vec<u8>>) {
        let cert = self.cert();
        (cert.key.clone(), self.chain(&cert))
    }
}

impl Identity {
    /// The chain a third party checks `cert` with against this mesh's CA: the node certificate
    /// (DER), then the issuing CA's, if the mesh has one.
    pub(crate) fn chain(&self, cert: &NodeCert) -> Vec<Vec<u8>> {
        let mut chain = vec![cert.der().to_vec()];
        chain.extend(self.trust().issuing_der.iter().cloned());
        chain
    }

    /// The node certificate in use now.
    pub(crate) fn cert(&self) -> Arc<NodeCert> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Feature `test-hooks`: from now on envelopes are signed with a fresh key that does not
    /// match the certificate they name (`wrong`), or with the node key again.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn sign_wrongly(&self, wrong: bool) -> Result<(), String> {
        let key = if wrong {
            Some(Arc::new(SigningKey::generate().map_err(|e| e.to_string())?))
        } else {
            None
        };
        *self.wrong_key.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }

    /// Feature `test-hooks`: `cert` with the wrong key of [`Identity::sign_wrongly`], if set.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn misbehaving(&self, cert: Arc<NodeCert>) -> Arc<NodeCert> {
        let wrong = self.wrong_key.read().unwrap_or_else(|e| e.into_inner());
        match &*wrong {
            Some(key) => Arc::new(NodeCert {
                signer: cert.signer.clone(),
                not_after: cert.not_after,
                key: Arc::clone(key),
            }),
            None => cert,
        }
    }

    /// This mesh's trust bundle now.
    pub(crate) fn trust(&self) -> Arc<MeshTrust> {
        Arc::clone(&self.trust.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn renewal(&self) -> Option<Arc<Renewal>> {
        self.renewal
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the identity again from the node directory, as at start, and uses it from now
    /// on: the trust bundle and its statement, the issuing CA renewals come from, and the node
    /// certificate and key (for new links and for signing). Links already up stay up. For a CA
    /// rollover, which changes those files under the running gateway.
    pub(crate) fn reload(
        &self,
        dir: &Path,
        config: &NodeConfig,
        now: SystemTime,
    ) -> Result<Arc<MeshTrust>, String> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = load(dir, config, now).map_err(|e| chain(&e))?;
        self.tls
            .adopt(&fresh.tls)
            .map_err(|e| format!("presenting it in TLS: {}", chain(&e)))?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh.cert();
        *self.renewal.write().unwrap_or_else(|e| e.into_inner()) = fresh.renewal();
        let trust = fresh.trust();
        *self.trust.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&trust);
        Ok(trust)
    }

    /// When the node certificate in use is due for renewal; `None` when this node cannot
    /// renew it (no CA key).
    fn renewal_due(&self) -> Option<SystemTime> {
        let renewal = self.renewal()?;
        let not_after = self.cert().not_after;
        Some(
            not_after
                .checked_sub(renewal.renew_before)
                .unwrap_or(not_after),
        )
    }

    /// Issues a new node certificate, for a fresh node key when `[identity] rotate_node_key`
    /// (the default) else for the same one, writes both to the node directory, and uses them
    /// from now on: for new links (TLS) and for signing. Links already up stay up.
    ///
    /// The key file is written before the certificate: if the gateway stops between the two,
    /// the next start finds a certificate that does not match the key and issues a new one.
    pub(crate) fn renew(&self, now: SystemTime) -> Result<Arc<NodeCert>, String> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = self.renewal() else {
            return Err("no mesh CA key to issue it with".to_owned());
        };
        let key = if r.rotate_key {
            Arc::new(SigningKey::generate().map_err(|e| format!("a new node key: {e}"))?)
        } else {
            Arc::clone(&self.cert().key)
        };
        let cert =
            r.ca.issue_node_cert(&self.node, &P384PublicKey::of(&key), now, r.validity)
                .map_err(|e| format!("issuing: {}", chain(&e)))?;
        if r.rotate_key {
            let pem = meshfed_trust::key_to_pkcs8_pem(&key)
                .map_err(|e| format!("encoding the new node key: {e}"))?;
            meshfed_trust::files::write_file(
                &r.key_path,
                pem.as_bytes(),
                meshfed_trust::files::FileMode::Private,
                meshfed_trust::files::IfExists::Replace,
            )
            .map_err(|e| format!("writing {}: {}", r.key_path.display(), chain(&e)))?;
        }
        meshfed_trust::files::write_file(
            &r.path,
            cert.pem().as_bytes(),
            meshfed_trust::files::FileMode::Public,
            meshfed_trust::files::IfExists::Replace,
        )
        .map_err(|e| format!("writing {}: {}", r.path.display(), chain(&e)))?;
        let presented = if r.rotate_key {
            let pkcs8 = key
                .to_pkcs8()
                .map_err(|e| format!("encoding the new node key: {e}"))?;
            self.tls.rekey(cert.der().to_vec(), pkcs8)
        } else {
            self.tls.renew(cert.der().to_vec())
        };
        presented.map_err(|e| format!("presenting it in TLS: {e}"))?;
        let current = Arc::new(NodeCert {
            signer: SignerCertificate::new(cert.der().to_vec()),
            not_after: cert.info().not_after,
            key,
        });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&current);
        Ok(current)
    }
}

/// A certificate for the node's HTTPS API with its own key.
pub(crate) struct ApiCert {
    /// The certificate, then the issuing CA's (if the mesh has one): what TLS presents.
    pub(crate) chain: Vec<Vec<u8>>,
    /// Its private key, PKCS#8 DER.
    pub(crate) key_pkcs8: Vec<u8>,
    /// When it is due for replacement: half way through its validity.
    pub(crate) renew_at: SystemTime,
}

impl Identity {
    /// Issues a certificate for the API, reached at `addresses`, with a fresh key, from the CA
    /// that renews the node certificate and for as long as a node certificate is valid.
    pub(crate) fn issue_api_cert(
        &self,
        addresses: &[std::net::IpAddr],
        now: SystemTime,
    ) -> Result<ApiCert, String> {
        let Some(r) = self.renewal() else {
            return Err("this node holds no CA key to issue its certificate with".to_owned());
        };
        let key = SigningKey::generate().map_err(|e| format!("a new key: {e}"))?;
        let der =
            r.ca.issue_api_cert(
                &self.node,
                &P384PublicKey::of(&key),
                addresses,
                now,
                r.validity,
            )
            .map_err(|e| format!("issuing: {}", chain(&e)))?;
        let mut chain = vec![der.to_vec()];
        chain.extend(self.trust().issuing_der.iter().cloned());
        Ok(ApiCert {
            chain,
            key_pkcs8: key
                .to_pkcs8()
                .map_err(|e| format!("encoding its key: {e}"))?,
            renew_at: now + r.validity / 2,
        })
    }
}

/// Renews the node certificate whenever it is due (`renew_before` its expiry, on the
/// gateway's clock) until the gateway stops, handing each new certificate (DER) to `renewed`.
/// A failed renewal is logged and tried again.
pub(crate) async fn renew_loop(
    id: &Identity,
    clock: &Clock,
    cancel: &CancellationToken,
    renewed: impl Fn(Vec<u8>),
) {
    loop {
        let Some(renewal) = id.renewal() else {
            return;
        };
        let retry =
            (renewal.renew_before / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
        let Some(due) = id.renewal_due() else {
            return;
        };
        let wait = due.duration_since(clock.wall()).unwrap_or(Duration::ZERO);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = clock.sleep(wait) => {}
        }
        if clock.wall() < due {
            continue;
        }
        match id.renew(clock.wall()) {
            Ok(cert) => {
                tracing::info!(
                    path = %renewal.path.display(),
                    expires = %humantime::format_rfc3339_seconds(cert.not_after),
                    "renewed the node certificate"
                );
                renewed(cert.der().to_vec());
            }
            Err(reason) => {
                tracing::warn!(
                    "cannot renew the node certificate ({reason}); trying again in {}",
                    humantime::format_duration(retry)
                );
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = clock.sleep(retry) => {}
                }
            }
        }
    }
}

pub(crate) fn read(what: &'static str, path: PathBuf) -> Result<String, GatewayError> {
    std::fs::read_to_string(&path).map_err(|source| GatewayError::Read { what, path, source })
}

/// Warns (on stderr, through the log) when the private key at `path` can be read by users other
/// than its owner: `init` writes keys with mode 0600, so a wider mode is a copy or a mistake.
fn warn_if_others_can_read(what: &str, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the {what} {} can be read by other users (mode {mode:04o}); restrict it: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (what, path);
}

/// Loads the node's identity; re-issues the node certificate when less than `renew_before` of
/// its validity is left ("renewed automatically before expiry"), from the issuing CA key if the
/// node has it, else from the mesh CA key. That CA is kept for renewals while the gateway runs
/// ([`renew_loop`]); without either key the node runs on its certificate until it expires, and
/// says so.
pub(crate) fn load(
    dir: &Path,
    config: &NodeConfig,
    now: SystemTime,
) -> Result<Identity, GatewayError> {
    let ids = &config.identity;
    let bad = |reason: String| GatewayError::Identity {
        dir: dir.to_path_buf(),
        reason,
    };
    let ca_key_path = ids.ca_key.resolve(dir);
    let issuing_cert_path = ids.issuing_ca_cert.resolve(dir);
    let issuing_key_path = ids.issuing_ca_key.resolve(dir);
    warn_if_others_can_read("mesh CA key", &ca_key_path);
    warn_if_others_can_read("issuing CA key", &issuing_key_path);
    warn_if_others_can_read("node key", &ids.node_key.resolve(dir));
    let ca_pem = read("mesh CA certificate", ids.ca_cert.resolve(dir))?;
    let key_pem = read("node key", ids.node_key.resolve(dir))?;
    let mut cert_pem = read("node certificate", ids.node_cert.resolve(dir))?;
    let key =
        meshfed_trust::key_from_pkcs8_pem(&key_pem).map_err(|e| bad(format!("node key: {e}")))?;
    let der = meshfed_trust::cert::cert_der_from_pem(&cert_pem)
        .map_err(|e| bad(format!("node certificate: {e}")))?;
    let info = meshfed_trust::inspect_node_cert(&der)
        .map_err(|e| bad(format!("node certificate: {e}")))?;
    let bundle =
        TrustBundle::from_pem(&ca_pem).map_err(|e| bad(format!("mesh CA certificate: {e}")))?;
    let issuing_pem = if issuing_cert_path.exists() {
        Some(read("issuing CA certificate", issuing_cert_path.clone())?)
    } else {
        None
    };
    let ca = match &issuing_pem {
        Some(issuing_pem) if issuing_key_path.exists() => {
            let key_pem = read("issuing CA key", issuing_key_path.clone())?;
            Some(Issuer::Issuing(
                IssuingCa::from_pem(issuing_pem, &key_pem, &bundle)
                    .map_err(|e| bad(format!("issuing CA: {}", chain(&e))))?,
            ))
        }
        _ if ca_key_path.exists() => {
            let ca_key_pem = read("mesh CA key", ca_key_path.clone())?;
            Some(Issuer::Root(
                MeshCa::from_pem(&ca_pem, &ca_key_pem).map_err(|e| bad(format!("mesh CA: {e}")))?,
            ))
        }
        _ => None,
    };
    // The key a renewal would need, as the node lacks it.
    let missing_key = if issuing_pem.is_some() {
        (issuing_key_path, "issuing CA key")
    } else {
        (ca_key_path.clone(), "mesh CA key")
    };
    let left = info.not_after.duration_since(now).unwrap_or(Duration::ZERO);
    // A key rotation the gateway did not finish: the key is new, the certificate is not.
    let mismatched = P384PublicKey::of(&key) != info.public_key;
    if mismatched {
        tracing::warn!(
            "the node certificate is not for the node key (a key rotation was interrupted?): issuing one for the key"
        );
    }
    if left < ids.renew_before() || mismatched {
        let Some(ca) = &ca else {
            return Err(GatewayError::Read {
                what: missing_key.1,
                path: missing_key.0,
                source: std::io::ErrorKind::NotFound.into(),
            });
        };
        let cert = ca
            .issue_node_cert(
                &config.node.name,
                &P384PublicKey::of(&key),
                now,
                ids.node_cert_validity,
            )
            .map_err(|e| bad(format!("renewing the node certificate: {e}")))?;
        cert_pem = cert.pem();
        let path = ids.node_cert.resolve(dir);
        meshfed_trust::files::write_file(
            &path,
            cert_pem.as_bytes(),
            meshfed_trust::files::FileMode::Public,
            meshfed_trust::files::IfExists::Replace,
        )
        .map_err(|e| bad(format!("writing the renewed node certificate: {e}")))?;
        tracing::info!(path = %path.display(), "renewed the node certificate");
    }
    let cert_der = meshfed_trust::cert::cert_der_from_pem(&cert_pem)
        .map_err(|e| bad(format!("node certificate: {e}")))?;
    let info = meshfed_trust::inspect_node_cert(&cert_der)
        .map_err(|e| bad(format!("node certificate: {e}")))?;
    if info.mesh != config.node.mesh || info.node != config.node.name {
        return Err(bad(format!(
            "the node certificate names {}/{}, the configuration {}/{}",
            info.mesh, info.node, config.node.mesh, config.node.name
        )));
    }
    let issuing_der = issuing_pem
        .as_deref()
        .map(meshfed_trust::cert::cert_der_from_pem)
        .transpose()
        .map_err(|e| bad(format!("issuing CA certificate: {e}")))?;
    let ca_der = bundle
        .cas()
        .first()
        .map(|c| c.der().to_vec())
        .ok_or_else(|| bad("no CA certificate".into()))?;
    let tls = TlsIdentity::from_pem(&cert_pem, issuing_pem.as_deref(), &ca_pem, &key_pem)
        .map_err(|e| bad(format!("TLS identity: {e}")))?;
    match &ca {
        Some(Issuer::Issuing(_)) => {}
        Some(Issuer::Root(_)) => tracing::info!(
            "the node certificate is renewed from the mesh CA key {}; to keep that key off the \
             gateway, give it an issuing CA ([identity] issuing_ca_cert and issuing_ca_key, as \
             `meshfed init --root-key-out FILE` makes them) and move the key away",
            ca_key_path.display()
        ),
        None => tracing::warn!(
            "the {} {} is not in the node directory: the node certificate will not be renewed while the gateway runs (it expires {}); restart the gateway with the key in place before then",
            missing_key.1,
            missing_key.0.display(),
            humantime::format_rfc3339_seconds(info.not_after)
        ),
    }
    let statement = bundle_statement(dir, config, &bundle).map_err(bad)?;
    let renewal = ca.map(|ca| Renewal {
        ca,
        path: ids.node_cert.resolve(dir),
        validity: ids.node_cert_validity,
        renew_before: ids.renew_before(),
        key_path: ids.node_key.resolve(dir),
        rotate_key: ids.rotate_node_key,
    });
    Ok(Identity {
        mesh: config.node.mesh.clone(),
        node: config.node.name.clone(),
        tls,
        trust: RwLock::new(Arc::new(MeshTrust {
            ca_fingerprint: Fingerprint::of(&ca_der),
            issuing_der,
            bundle,
            statement,
        })),
        current: RwLock::new(Arc::new(NodeCert {
            signer: SignerCertificate::new(cert_der),
            not_after: info.not_after,
            key: Arc::new(key),
        })),
        renewal: RwLock::new(renewal.map(Arc::new)),
        changing: std::sync::Mutex::new(()),
        #[cfg(feature = "test-hooks")]
        wrong_key: RwLock::new(None),
    })
}

/// The signed statement of the bundle a CA rollover wrote, with its serial; it must state
/// exactly the bundle in use.
fn bundle_statement(
    dir: &Path,
    config: &NodeConfig,
    bundle: &TrustBundle,
) -> Result<Option<(SignedStatement, u64)>, String> {
    let files = crate::rollover::CaFiles::of(dir, config);
    let Some(statement) = crate::rollover::read_statement(&files).map_err(|e| chain(&e))? else {
        return Ok(None);
    };
    let stated = BundleStatement::decode(&statement.body)
        .map_err(|e| format!("{}: {e}", files.statement.display()))?;
    let in_use: Vec<&[u8]> = bundle.cas().iter().map(|c| c.der().as_ref()).collect();
    let said: Vec<&[u8]> = stated.cas.iter().map(|c| c.as_slice()).collect();
    if stated.mesh != *bundle.mesh() || said != in_use {
        return Err(format!(
            "{} states another trust bundle than {} holds; run `meshfed ca rotate` or `meshfed ca retire-old` again to write both",
            files.statement.display(),
            files.bundle.display()
        ));
    }
    Ok(Some((statement, stated.serial)))
}
