//! The API over TLS whenever it listens beyond loopback: the admin token, component tokens and
//! the console then cross a network, so they never do so in the clear.
//!
//! The certificate is the mesh's own: issued at start by the CA that renews the node
//! certificate (the issuing CA, else the mesh CA), with a fresh key, for the IP address the API
//! listens on (127.0.0.1 and ::1 for an unspecified address such as `0.0.0.0`), and replaced
//! half way through its validity while the node runs. A client trusts it by trusting the mesh
//! CA (`meshfed` does so from the node directory); nothing else is needed on the node.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::gateway::GatewayHandle;
use crate::gateway::identity::ApiCert;

/// How long a failed replacement waits before trying again.
const RETRY: Duration = Duration::from_secs(60);

/// Whether an API listening on `listen` serves TLS: whenever it is not loopback.
pub fn serves_tls(listen: SocketAddr) -> bool {
    !listen.ip().is_loopback()
}

/// The addresses an API listening on `ip` is reached at, as its certificate names them.
fn reached_at(ip: IpAddr) -> Vec<IpAddr> {
    if ip.is_unspecified() {
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
    } else {
        vec![ip]
    }
}

/// The TLS acceptor of the API on `listen`, or `None` on loopback. Issues the first certificate
/// now and starts the task that replaces it.
pub(crate) fn acceptor(
    node: &GatewayHandle,
    listen: SocketAddr,
) -> Result<Option<TlsAcceptor>, String> {
    if !serves_tls(listen) {
        return Ok(None);
    }
    let addresses = reached_at(listen.ip());
    let first = node.issue_api_cert(&addresses)?;
    let mut renew_at = first.renew_at;
    let current = Arc::new(Current(RwLock::new(certified(first)?)));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let clock = node.clock();
    let stopping = node.stopping();
    let issuer = node.clone();
    node.spawn(async move {
        loop {
            let wait = renew_at
                .duration_since(clock.wall())
                .unwrap_or(Duration::ZERO);
            tokio::select! {
                () = stopping.cancelled() => return,
                () = clock.sleep(wait) => {}
            }
            match issuer.issue_api_cert(&addresses).and_then(|c| {
                let at = c.renew_at;
                certified(c).map(|k| (k, at))
            }) {
                Ok((key, at)) => {
                    *current.0.write().unwrap_or_else(|e| e.into_inner()) = key;
                    renew_at = at;
                    tracing::info!("replaced the API's TLS certificate");
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot replace the API's TLS certificate ({e}); trying again in a minute"
                    );
                    renew_at = clock.wall() + RETRY;
                }
            }
        }
    });
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// `cert` as TLS presents it.
fn certified(cert: ApiCert) -> Result<Arc<CertifiedKey>, String> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pkcs8));
    let key = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&key)
        .map_err(|e| format!("the API certificate's key: {e}"))?;
    let chain = cert.chain.into_iter().map(CertificateDer::from).collect();
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

/// The certificate the API presents now.
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the API certificate")
    }
}
