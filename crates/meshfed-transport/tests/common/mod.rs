//! Shared setup for the link tests: identities from the test PKI, a dial racing an accept, and
//! raw rustls clients that behave as meshfed nodes must not.

#![allow(dead_code, reason = "each test file uses a part of this module")]
#![expect(
    clippy::unwrap_used,
    reason = "test setup: a failure here is a broken test, and should fail it loudly"
)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshfed_testkit::{TestNode, TestPki};
use meshfed_transport::{Link, Listener, ServerTrust, TlsIdentity, TransportError, dial};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Handshake timeout used where the test expects success or a prompt failure.
pub(crate) const HANDSHAKE: Duration = Duration::from_secs(10);

/// Fails the test instead of hanging it.
pub(crate) async fn within<F: Future>(fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(out) => out,
        Err(_) => panic!("test step did not finish within 30 s"),
    }
}

/// The TLS identity of `node`, presenting `pki`'s CA.
pub(crate) fn identity(pki: &TestPki, node: &TestNode) -> TlsIdentity {
    TlsIdentity::new(
        node.cert.to_vec(),
        pki.ca().cert_der().to_vec(),
        node.key.to_pkcs8().unwrap(),
    )
    .unwrap()
}

/// The TLS identity of `node`, a leaf of `pki`'s issuing CA, presenting it and the mesh CA.
pub(crate) fn issued_identity(pki: &TestPki, node: &TestNode) -> TlsIdentity {
    TlsIdentity::issued_through(
        node.cert.to_vec(),
        Some(pki.issuing_ca().cert_der().to_vec()),
        pki.ca().cert_der().to_vec(),
        node.key.to_pkcs8().unwrap(),
    )
    .unwrap()
}

/// A mesh with a gateway, its identity and a listener on an ephemeral loopback port.
pub(crate) struct Server {
    pub(crate) pki: TestPki,
    pub(crate) node: TestNode,
    pub(crate) identity: TlsIdentity,
    pub(crate) listener: Listener,
}

impl Server {
    pub(crate) async fn start(mesh: &str) -> Self {
        let pki = TestPki::new(mesh);
        let node = pki.node("gw1");
        Self::with(pki, node).await
    }

    pub(crate) async fn with(pki: TestPki, node: TestNode) -> Self {
        let identity = identity(&pki, &node);
        let listener = Listener::bind(loopback(), &identity).await.unwrap();
        Self {
            pki,
            node,
            identity,
            listener,
        }
    }

    pub(crate) fn addr(&self) -> String {
        self.listener.local_addr().to_string()
    }

    /// Trust in this server by its CA fingerprint, as an invitation gives it.
    pub(crate) fn pin(&self) -> ServerTrust {
        ServerTrust::PinnedCa {
            mesh: self.pki.mesh().clone(),
            fingerprint: *self.pki.ca().fingerprint().as_bytes(),
        }
    }

    /// Accepts one connection and runs its handshake.
    pub(crate) async fn accept(&self, timeout: Duration) -> Result<Link, TransportError> {
        self.listener.accept().await?.handshake(timeout).await
    }
}

pub(crate) fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// Dials `server` as `client` with `trust` while the server accepts: (dialler's, listener's).
pub(crate) async fn connect(
    server: &Server,
    client: &TlsIdentity,
    trust: ServerTrust,
) -> (Result<Link, TransportError>, Result<Link, TransportError>) {
    let addr = server.addr();
    within(async {
        tokio::join!(
            dial(&addr, client, trust, HANDSHAKE),
            server.accept(HANDSHAKE)
        )
    })
    .await
}

/// A client identity of a mesh of its own.
pub(crate) fn client(mesh: &str) -> (TestPki, TlsIdentity) {
    let pki = TestPki::new(mesh);
    let node = pki.node("gw1");
    let identity = identity(&pki, &node);
    (pki, identity)
}

/// A rustls client outside meshfed's profile: it accepts any server, presents `chain` with
/// `key`, offers `alpn`, and speaks `versions`.
pub(crate) fn raw_client_config(
    versions: &[&'static SupportedProtocolVersion],
    chain: Vec<CertificateDer<'static>>,
    key: &meshfed_proto::crypto::SigningKey,
    alpn: &[&[u8]],
) -> ClientConfig {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_pkcs8().unwrap()));
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Connects to `addr` and runs a TLS handshake with `config`.
pub(crate) async fn raw_connect(
    addr: SocketAddr,
    config: ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
