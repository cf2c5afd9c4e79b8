//! Making links: [`dial`] a peer, or [`Listener::accept`] and [`Incoming::handshake`] one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::Acceptor;
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};

use crate::error::{TransportError, handshake_error};
use crate::{ALPN, Link, ServerTrust, TlsIdentity};

/// Dials `addr` (`host:port`), runs the TLS 1.3 handshake presenting `identity`, and verifies
/// the server by `trust`. `timeout` bounds the whole: name resolution, TCP connect and TLS.
///
/// In TLS 1.3 the client finishes its handshake before the server has judged the client's
/// certificate: a server that refuses us shows as an error on the first [`Link::recv`]
/// ("the peer refused our certificate").
pub async fn dial(
    addr: &str,
    identity: &TlsIdentity,
    trust: ServerTrust,
    timeout: Duration,
) -> Result<Link, TransportError> {
    let now = Instant::now();
    // A timeout too large to add is as good as none: a year is beyond any dial.
    let deadline = now
        .checked_add(timeout)
        .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
    let expected = trust.mesh().clone();
    let config = Arc::new(identity.client_config(trust)?);
    let tcp = timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| TransportError::Timeout {
            what: format!("connecting to {addr}"),
            after: timeout,
        })?
        .map_err(|source| TransportError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let remote = tcp.peer_addr().map_err(|source| TransportError::Connect {
        addr: addr.to_owned(),
        source,
    })?;
    set_nodelay(&tcp, remote)?;
    let server_name = ServerName::IpAddress(remote.ip().into());
    let tls = timeout_at(
        deadline,
        TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .map_err(|_| TransportError::Timeout {
        what: format!("TLS handshake with {remote}"),
        after: timeout,
    })?
    .map_err(|e| handshake_error(e, remote))?;
    let link = Link::client(tls, remote)?;
    tracing::debug!(%remote, peer = %link.peer(), %expected, "dialled a meshfed link");
    Ok(link)
}

/// Listens for peers dialling this node.
///
/// A client is accepted if it presents a P-384 meshfed node certificate followed by the CA
/// certificate that signed it (see the crate documentation: whether that mesh is *trusted* is the
/// federation handshake's decision).
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    local_addr: SocketAddr,
    config: Arc<ServerConfig>,
}

impl Listener {
    /// Listens on `addr` (`127.0.0.1:0` picks a free port; see [`Listener::local_addr`]).
    pub async fn bind(addr: SocketAddr, identity: &TlsIdentity) -> Result<Self, TransportError> {
        let bind_error = |source| TransportError::Bind { addr, source };
        let tcp = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = tcp.local_addr().map_err(bind_error)?;
        Ok(Self {
            tcp,
            local_addr,
            config: identity.server_config(),
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next TCP connection. Cheap: the TLS handshake is left to [`Incoming::handshake`], so
    /// the caller can run it in a task per connection. Waits until a peer connects (bound it
    /// with the caller's shutdown signal). An error concerns one connection; the listener stays
    /// usable.
    pub async fn accept(&self) -> Result<Incoming, TransportError> {
        let (tcp, remote) = self
            .tcp
            .accept()
            .await
            .map_err(|source| TransportError::Accept { source })?;
        Ok(Incoming {
            tcp,
            remote,
            config: Arc::clone(&self.config),
        })
    }
}

/// A TCP connection accepted by a [`Listener`], before its TLS handshake.
#[derive(Debug)]
pub struct Incoming {
    tcp: TcpStream,
    remote: SocketAddr,
    config: Arc<ServerConfig>,
}

impl Incoming {
    /// The address the peer connects from.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Runs the server side of the TLS 1.3 handshake within `timeout`. A client that does not
    /// offer ALPN `meshfed/1`, TLS 1.3, the P-384 profile, or a self-consistent node certificate
    /// chain is refused.
    pub async fn handshake(self, timeout: Duration) -> Result<Link, TransportError> {
        let remote = self.remote;
        let result = tokio::time::timeout(timeout, self.handshake_unbounded()).await;
        let link = result.map_err(|_| TransportError::Timeout {
            what: format!("TLS handshake with {remote}"),
            after: timeout,
        })??;
        tracing::debug!(%remote, peer = %link.peer(), "accepted a meshfed link");
        Ok(link)
    }

    async fn handshake_unbounded(self) -> Result<Link, TransportError> {
        let remote = self.remote;
        set_nodelay(&self.tcp, remote)?;
        let start = LazyConfigAcceptor::new(Acceptor::default(), self.tcp)
            .await
            .map_err(|e| handshake_error(e, remote))?;
        let offered: Option<Vec<String>> = start.client_hello().alpn().map(|protocols| {
            protocols
                .take(8)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        });
        let refused_alpn = match &offered {
            None => {
                // Without an offer rustls would carry on without ALPN: refuse here instead.
                return Err(TransportError::TlsHandshake {
                    addr: remote,
                    reason: "the client did not offer ALPN meshfed/1".to_owned(),
                });
            }
            Some(list) if !list.iter().any(|p| p.as_bytes() == ALPN) => Some(list.clone()),
            Some(_) => None,
        };
        let handshake = start.into_stream(self.config).await;
        if let Some(list) = refused_alpn {
            // rustls has sent the no_application_protocol alert; report what was offered.
            return Err(TransportError::TlsHandshake {
                addr: remote,
                reason: format!("the client offered ALPN {list:?}, not meshfed/1"),
            });
        }
        let tls = handshake.map_err(|e| handshake_error(e, remote))?;
        Link::server(tls, remote)
    }
}

fn set_nodelay(tcp: &TcpStream, addr: SocketAddr) -> Result<(), TransportError> {
    // Frames are flushed deliberately (see `LinkWriter`): Nagle would only add latency.
    tcp.set_nodelay(true).map_err(|source| TransportError::Io {
        what: format!("setting TCP_NODELAY on the connection with {addr}"),
        source,
    })
}
