//! The broker fixtures driven by real clients: every mode a fixture offers is shown to work
//! (a message makes the round trip) and, where it guards something, to refuse a wrong
//! credential.
//!
//! MQTT with rumqttc in `mqtt.rs`, NATS with async-nats in `nats.rs`; both build their rustls
//! configuration with the aws-lc-rs provider, as the gateway does.

mod mqtt;
mod nats;

use std::future::Future;
use std::sync::Arc;

use meshfed_testkit::process::DEADLINE;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Awaits `fut`, failing the test after [`DEADLINE`] (naming `what`).
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {DEADLINE:?}"))
}

/// A rustls client configuration (aws-lc-rs) trusting `ca_pem`, presenting `client` (a
/// certificate and key, PEM) when given.
fn tls_config(ca_pem: &str, client: Option<(&str, &str)>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.unwrap_or_else(|e| panic!("read the CA PEM: {e}"));
        roots
            .add(cert)
            .unwrap_or_else(|e| panic!("trust the CA: {e}"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("TLS versions of aws-lc-rs: {e}"))
        .with_root_certificates(roots);
    let Some((cert, key)) = client else {
        return builder.with_no_client_auth();
    };
    let cert = CertificateDer::from_pem_slice(cert.as_bytes())
        .unwrap_or_else(|e| panic!("read the client certificate PEM: {e}"));
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .unwrap_or_else(|e| panic!("read the client key PEM: {e}"));
    builder
        .with_client_auth_cert(vec![cert], key)
        .unwrap_or_else(|e| panic!("use the client certificate: {e}"))
}
