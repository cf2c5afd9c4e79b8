//! The API's connections: accepted through the API's door ([`Door`]), over TLS when the API
//! listens beyond loopback ([`super::tls`]; a failed or slow handshake is a refusal at the
//! door), served as HTTP/1.1 with upgrades (the WebSocket streams), and closed when idle.
//!
//! A connection holds a place at the door until one of its requests carries the admin token
//! ([`Connection::authenticated`], called by the `/v1` guard). A connection with no request in
//! progress that sends and receives nothing for `[connections] api_idle_timeout` is closed; a
//! request in progress (a `send --wait` waiting for the peer) keeps it open however quiet it
//! is, and an upgraded WebSocket leaves this loop altogether.
//!
//! A connection hyper lets go of is closed the way a server must close one whose request body
//! may still be arriving (a body over the limit is answered 413 before it is read): its write
//! side is shut and what the client still sends is read and discarded for a while
//! ([`LINGER`]), so that the client reads the answer instead of a reset that would discard it.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd as _, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::door::{Door, Refused, Unauthenticated};
use crate::gateway::GatewayHandle;

/// Pause after a failed `accept` (say, out of file descriptors) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How long a closed connection's unread input is still read and discarded.
const LINGER: Duration = Duration::from_secs(2);

/// One API connection, as its requests see it (a request extension).
pub(crate) struct Connection {
    remote: SocketAddr,
    /// The door's place, held until a request authenticates.
    place: Mutex<Option<Unauthenticated>>,
    door: Arc<Door>,
}

impl Connection {
    /// A request on this connection carried the admin token: it gives back its place.
    pub(crate) fn authenticated(&self) {
        drop(self.place.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// No request on this connection has authenticated yet.
    fn is_unauthenticated(&self) -> bool {
        self.place
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// A request on this connection carried no valid token: counted and logged by the door.
    pub(crate) fn refused_token(&self) {
        self.door
            .refuse(Refused::Token, self.remote, &"no valid bearer token");
    }
}

/// Accepts API connections on `listener` until the gateway stops; each is served by `router`,
/// after a TLS handshake with `tls` when given.
pub(crate) fn serve(
    node: &GatewayHandle,
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
) {
    let door = node.api_door();
    let idle = node.api_idle_timeout();
    let stopping = node.stopping();
    let spawner = node.clone();
    node.spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stopping.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an API connection failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            // Refused when full: dropping `tcp` closes the connection.
            let Some(place) = door.admit(remote) else {
                continue;
            };
            // Messages on the API's WebSockets are small and timed: no Nagle delay.
            let _ = tcp.set_nodelay(true);
            let connection = Arc::new(Connection {
                remote,
                place: Mutex::new(Some(place)),
                door: door.clone(),
            });
            spawner.spawn(run(
                tcp,
                tls.clone(),
                connection,
                router.clone(),
                idle,
                stopping.clone(),
            ));
        }
    });
}

/// Serves one connection until it ends, goes idle, or the gateway stops.
async fn run(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    connection: Arc<Connection>,
    router: Router,
    idle: Duration,
    stopping: CancellationToken,
) {
    let tcp = match tls {
        None => Io::Plain(tcp),
        // The handshake must finish within twice the idle time, as a request's headers must.
        Some(tls) => match tokio::time::timeout(idle.saturating_mul(2), tls.accept(tcp)).await {
            Ok(Ok(stream)) => Io::Tls(Box::new(stream)),
            Ok(Err(e)) => {
                connection.door.refuse(Refused::Tls, connection.remote, &e);
                return;
            }
            Err(_) => {
                connection.door.refuse(
                    Refused::Timeout,
                    connection.remote,
                    &"the TLS handshake did not finish in time",
                );
                return;
            }
        },
    };
    let activity = Arc::new(Activity::new());
    let (released, mut let_go) = oneshot::channel();
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: activity.clone(),
        released: Some(released),
    });
    let service = {
        let activity = activity.clone();
        let connection = connection.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(connection.clone());
            let busy = activity.begin();
            let response = router.clone().oneshot(req.map(axum::body::Body::new));
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        })
    };
    // Boxed rather than pinned on the stack, so that it (and hyper's socket) can be dropped
    // before lingering.
    let mut conn = Box::pin(
        http1::Builder::new()
            .timer(TokioTimer::new())
            // A request's headers must all arrive within twice the idle time: a client trickling
            // bytes is never idle, but it is not let in either. (A silent one is closed as idle.)
            .header_read_timeout(idle.saturating_mul(2))
            .serve_connection(io, service)
            .with_upgrades(),
    );
    let mut closing = false;
    loop {
        let quiet_until = activity.quiet_until(idle);
        tokio::select! {
            served = conn.as_mut() => {
                match served {
                    Err(e) if e.is_timeout() && connection.is_unauthenticated() => connection.door.refuse(
                        Refused::Timeout,
                        connection.remote,
                        &"the request headers did not arrive in time",
                    ),
                    Err(e) => tracing::debug!(remote = %connection.remote, error = %e, "API connection ended"),
                    Ok(()) => {}
                }
                break;
            }
            () = stopping.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(quiet_until), if !closing => {
                if activity.idle_for(idle) {
                    tracing::debug!(remote = %connection.remote, "closing an idle API connection");
                    connection.door.closed_idle();
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    // Hyper's socket is dropped here, unless an upgrade took it (then nothing is sent back).
    drop(conn);
    if let Ok(Ok(socket)) = let_go.try_recv() {
        tokio::select! {
            () = stopping.cancelled() => {}
            () = linger(socket) => {}
        }
    }
}

/// Shuts the write side of a socket hyper has finished with (its answer is sent) and discards
/// what the client still sends, until the client closes or [`LINGER`] passes.
async fn linger(socket: OwnedFd) {
    let socket = std::net::TcpStream::from(socket);
    let _ = socket.shutdown(Shutdown::Write);
    let Ok(mut socket) = TcpStream::from_std(socket) else {
        return;
    };
    let mut discard = vec![0; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = socket.read(&mut discard).await {}
    })
    .await;
}

/// When a connection last sent or received a byte, and how many of its requests are in progress.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last byte.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// A request is in progress until the guard drops.
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(self.clone())
    }

    /// When the connection would have been quiet for `idle`, as things stand.
    fn quiet_until(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed)) + idle
    }

    /// Quiet for `idle` with no request in progress.
    fn idle_for(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= self.quiet_until(idle)
    }
}

/// A request in progress.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An API connection's stream: plain TCP on loopback, TLS beyond.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

macro_rules! either {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        either!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        either!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, s => s.poll_shutdown(cx))
    }
}

/// A socket that records when it last moved a byte, and that, when hyper drops it, hands a
/// second descriptor of it back for [`linger`] (so that dropping this one sends no reset).
struct Watched {
    inner: Io,
    activity: Arc<Activity>,
    released: Option<oneshot::Sender<io::Result<OwnedFd>>>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(released) = self.released.take() {
            let _ = released.send(self.inner.tcp().as_fd().try_clone_to_owned());
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
