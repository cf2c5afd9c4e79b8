//! An established link: a verified TLS 1.3 stream carrying meshfed frames, or an end-to-end
//! tunnel through relays that carries them the same way ([`Link::tunnel`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use meshfed_proto::frame::{DEFAULT_MAX_FRAME, Frame, FrameDecoder, FrameError};
use meshfed_proto::handshake::Channel;
use meshfed_trust::{NodeIdentity, inspect_node_cert};
use rustls::{ConnectionCommon, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// The byte stream under a link: TLS over TCP, or one end of a tunnel's in-process pipe.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug> Io for T {}
type Stream = Box<dyn Io>;

use crate::ALPN;
use crate::error::{self, TransportError, link_error};

/// How long a send may wait for the peer to take the bytes, unless changed with
/// [`Link::set_write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// RFC 9266 `tls-exporter` label.
const BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// Room made in the receive buffer before each read.
const READ_CHUNK: usize = 16 << 10;

/// What the TLS handshake established about the peer; shared by the halves of a split link.
#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    identity: NodeIdentity,
    chain: Vec<Vec<u8>>,
    binding: [u8; 32],
    /// For a tunnel, the relays between the ends.
    relays: Vec<meshfed_proto::MeshId>,
}

impl Peer {
    /// Reads the facts off a finished handshake, refusing anything but TLS 1.3 with ALPN
    /// `meshfed/1` and a meshfed node certificate (the verifiers have already judged it).
    fn from_connection<D>(
        conn: &ConnectionCommon<D>,
        addr: SocketAddr,
    ) -> Result<Self, TransportError> {
        let refuse = |reason: String| TransportError::TlsHandshake { addr, reason };
        if conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
            return Err(refuse(format!(
                "negotiated {:?}, not TLS 1.3",
                conn.protocol_version()
            )));
        }
        if conn.alpn_protocol() != Some(ALPN) {
            return Err(refuse(format!(
                "the peer did not agree on ALPN meshfed/1 (selected {:?})",
                conn.alpn_protocol().map(String::from_utf8_lossy)
            )));
        }
        let chain: Vec<Vec<u8>> = conn
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.to_vec())
            .collect();
        let leaf = chain
            .first()
            .ok_or_else(|| refuse("the peer presented no certificate".to_owned()))?;
        let identity = inspect_node_cert(leaf)
            .map_err(|e| refuse(format!("peer certificate: {}", error::chain(&e))))?
            .identity();
        let mut binding = [0u8; 32];
        conn.export_keying_material(&mut binding, BINDING_LABEL, None)
            .map_err(|e| refuse(format!("channel binding export failed: {e}")))?;
        Ok(Self {
            addr,
            identity,
            chain,
            binding,
            relays: Vec::new(),
        })
    }

    fn leaf(&self) -> &[u8] {
        // `from_connection` refuses a peer without a certificate: the chain is never empty.
        self.chain.first().map_or(&[], Vec::as_slice)
    }
}

/// A verified TLS 1.3 link to a peer node, carrying meshfed frames; or a tunnel to a node of a
/// mesh that is not adjacent, whose ends authenticated each other end to end ([`Link::tunnel`]).
///
/// The peer's certificate chain was verified during the handshake (by [`crate::ServerTrust`] when
/// we dialled, by the listener's self-consistent-chain rule when the peer dialled us); whether
/// the peer's mesh is trusted is the federation handshake's decision, which it takes with
/// [`Link::channel`].
#[derive(Debug)]
pub struct Link {
    stream: Stream,
    peer: Arc<Peer>,
    decoder: FrameDecoder,
    out: BytesMut,
    max_frame: u32,
    write_timeout: Duration,
}

impl Link {
    pub(crate) fn client(
        stream: tokio_rustls::client::TlsStream<TcpStream>,
        addr: SocketAddr,
    ) -> Result<Self, TransportError> {
        let peer = Peer::from_connection(stream.get_ref().1, addr)?;
        Ok(Self::new(Box::new(TlsStream::Client(stream)), peer))
    }

    pub(crate) fn server(
        stream: tokio_rustls::server::TlsStream<TcpStream>,
        addr: SocketAddr,
    ) -> Result<Self, TransportError> {
        let peer = Peer::from_connection(stream.get_ref().1, addr)?;
        Ok(Self::new(Box::new(TlsStream::Server(stream)), peer))
    }

    /// A link over one end of a tunnel's pipe (`io`), whose other end a tunnel driver relays:
    /// `chain` (leaf first) and `binding` are what the tunnel's key exchange established about
    /// the far end, in place of TLS's certificate and exporter; `relays` are the relays its
    /// route crossed; `via` is the first hop's address, for messages. As with TLS, the leaf is a claim until the federation handshake
    /// verifies it against the peer mesh's trust.
    pub fn tunnel(
        io: tokio::io::DuplexStream,
        chain: Vec<Vec<u8>>,
        binding: [u8; 32],
        relays: Vec<meshfed_proto::MeshId>,
        via: SocketAddr,
    ) -> Result<Self, TransportError> {
        let refuse = |reason: String| TransportError::TlsHandshake { addr: via, reason };
        let leaf = chain
            .first()
            .ok_or_else(|| refuse("the tunnel's far end presented no certificate".to_owned()))?;
        let identity = inspect_node_cert(leaf)
            .map_err(|e| refuse(format!("tunnel peer certificate: {}", error::chain(&e))))?
            .identity();
        let peer = Peer {
            addr: via,
            identity,
            chain,
            binding,
            relays,
        };
        Ok(Self::new(Box::new(io), peer))
    }

    fn new(stream: Stream, peer: Peer) -> Self {
        Self {
            stream,
            peer: Arc::new(peer),
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
            out: BytesMut::new(),
            max_frame: DEFAULT_MAX_FRAME,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }

    /// The peer's node certificate, DER.
    pub fn peer_leaf(&self) -> &[u8] {
        self.peer.leaf()
    }

    /// Everything the peer presented, leaf first (then, for meshfed nodes, its mesh CA).
    pub fn peer_chain(&self) -> &[Vec<u8>] {
        &self.peer.chain
    }

    /// The node the peer's certificate names, `meshfed://<mesh>/<node>`. Verified as described
    /// on [`Link`]: for a link the peer dialled, it is a claim until the federation handshake.
    pub fn peer(&self) -> &NodeIdentity {
        &self.peer.identity
    }

    /// The RFC 9266 `tls-exporter` channel binding: 32 bytes exported with the label
    /// `EXPORTER-Channel-Binding` and no context. Both ends of a link see the same value.
    pub fn binding(&self) -> &[u8; 32] {
        &self.peer.binding
    }

    /// What the federation handshake needs to know about this channel.
    pub fn channel(&self) -> Channel {
        Channel {
            peer_leaf: self.peer.leaf().to_vec(),
            peer_intermediates: self.peer.chain.iter().skip(1).cloned().collect(),
            binding: self.peer.binding.to_vec(),
        }
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.peer.addr
    }

    /// The relays between this node and the peer: none for a TLS link.
    pub fn relays(&self) -> &[meshfed_proto::MeshId] {
        &self.peer.relays
    }

    /// The largest frame body received or sent (default [`DEFAULT_MAX_FRAME`]); set it to the
    /// negotiated maximum.
    pub fn set_max_frame(&mut self, max: u32) {
        self.max_frame = max;
        self.decoder.set_max(max);
    }

    /// How long a send may wait for the peer to take the bytes (default
    /// [`DEFAULT_WRITE_TIMEOUT`]).
    pub fn set_write_timeout(&mut self, timeout: Duration) {
        self.write_timeout = timeout;
    }

    /// The next frame; `None` when the peer closed the link cleanly (TLS close_notify between
    /// frames).
    ///
    /// Waits as long as the peer is silent: the driver bounds it (heartbeat timeout, shutdown),
    /// for example in `tokio::select!`. Cancel-safe: a cancelled call loses no bytes. After an
    /// error the link is unusable.
    pub async fn recv(&mut self) -> Result<Option<Frame>, TransportError> {
        recv_frame(&mut self.stream, &mut self.decoder, self.peer.addr).await
    }

    /// Sends one frame and flushes it.
    ///
    /// A frame over the maximum is refused before anything is written. After an error (including
    /// a timeout) the link is unusable.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), TransportError> {
        queue(&mut self.out, frame, self.max_frame)?;
        flush(
            &mut self.stream,
            &mut self.out,
            self.peer.addr,
            self.write_timeout,
        )
        .await
    }

    /// Ends the link cleanly: sends TLS close_notify, so the peer's `recv` returns `None`.
    pub async fn close(mut self) -> Result<(), TransportError> {
        close(
            &mut self.stream,
            &mut self.out,
            self.peer.addr,
            self.write_timeout,
        )
        .await
    }

    /// Splits the link for a read task and a write task.
    pub fn split(self) -> (LinkReader, LinkWriter) {
        let (read, write) = tokio::io::split(self.stream);
        let reader = LinkReader {
            read,
            peer: Arc::clone(&self.peer),
            decoder: self.decoder,
        };
        let writer = LinkWriter {
            write,
            peer: self.peer,
            out: self.out,
            max_frame: self.max_frame,
            write_timeout: self.write_timeout,
        };
        (reader, writer)
    }
}

/// The receiving half of a split [`Link`].
#[derive(Debug)]
pub struct LinkReader {
    read: ReadHalf<Stream>,
    peer: Arc<Peer>,
    decoder: FrameDecoder,
}

impl LinkReader {
    /// The next frame; `None` on a clean close. As [`Link::recv`]: unbounded wait, cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<Frame>, TransportError> {
        recv_frame(&mut self.read, &mut self.decoder, self.peer.addr).await
    }

    /// The largest frame body accepted.
    pub fn set_max_frame(&mut self, max: u32) {
        self.decoder.set_max(max);
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.peer.addr
    }
}

/// The sending half of a split [`Link`]. Frames can be queued and flushed together, so a burst
/// costs one write (and few TLS records) instead of one per frame.
#[derive(Debug)]
pub struct LinkWriter {
    write: WriteHalf<Stream>,
    peer: Arc<Peer>,
    out: BytesMut,
    max_frame: u32,
    write_timeout: Duration,
}

impl LinkWriter {
    /// Adds a frame to the queue without writing anything. A frame over the maximum is refused.
    pub fn queue(&mut self, frame: &Frame) -> Result<(), TransportError> {
        queue(&mut self.out, frame, self.max_frame)
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Writes everything queued and flushes it, within the write timeout. Cancel-safe in the
    /// sense that bytes not yet written stay queued.
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        flush(
            &mut self.write,
            &mut self.out,
            self.peer.addr,
            self.write_timeout,
        )
        .await
    }

    /// Queues one frame and flushes the queue.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), TransportError> {
        self.queue(frame)?;
        self.flush().await
    }

    /// Flushes what is queued, then sends TLS close_notify.
    pub async fn close(&mut self) -> Result<(), TransportError> {
        close(
            &mut self.write,
            &mut self.out,
            self.peer.addr,
            self.write_timeout,
        )
        .await
    }

    /// The largest frame body sent.
    pub fn set_max_frame(&mut self, max: u32) {
        self.max_frame = max;
    }

    /// How long a flush may wait for the peer to take the bytes.
    pub fn set_write_timeout(&mut self, timeout: Duration) {
        self.write_timeout = timeout;
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.peer.addr
    }
}

async fn recv_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    decoder: &mut FrameDecoder,
    addr: SocketAddr,
) -> Result<Option<Frame>, TransportError> {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Ok(Some(frame)),
            Ok(None) => {}
            Err(FrameError::TooLarge { len, max }) => {
                return Err(TransportError::FrameTooLarge {
                    len: len.into(),
                    max,
                });
            }
            Err(FrameError::UnknownType(code)) => {
                return Err(TransportError::UnknownFrameType { code });
            }
        }
        let buf = decoder.buffer_mut();
        if buf.capacity() - buf.len() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        // At most one chunk per read: the TLS reader zeroes the whole buffer it is given, and a
        // large frame reserves up to the frame size.
        let n = (&mut *io)
            .take(READ_CHUNK as u64)
            .read_buf(buf)
            .await
            .map_err(|e| link_error(e, addr, "receiving from"))?;
        if n == 0 {
            return match decoder.pending() {
                0 => Ok(None),
                pending => Err(TransportError::TruncatedFrame { addr, pending }),
            };
        }
    }
}

fn queue(out: &mut BytesMut, frame: &Frame, max: u32) -> Result<(), TransportError> {
    let len = frame.body.len();
    if u32::try_from(len).map_or(true, |len| len > max) {
        return Err(TransportError::FrameTooLarge {
            len: u64::try_from(len).unwrap_or(u64::MAX),
            max,
        });
    }
    frame.encode_into(out);
    Ok(())
}

async fn flush<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut BytesMut,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), TransportError> {
    let write = async {
        io.write_all_buf(out).await?;
        io.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(result) => result.map_err(|e| link_error(e, addr, "sending to")),
        Err(_) => Err(TransportError::Timeout {
            what: format!("sending to {addr}"),
            after: timeout,
        }),
    }
}

async fn close<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut BytesMut,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), TransportError> {
    flush(io, out, addr, timeout).await?;
    match tokio::time::timeout(timeout, io.shutdown()).await {
        Ok(result) => result.map_err(|e| link_error(e, addr, "closing the link with")),
        Err(_) => Err(TransportError::Timeout {
            what: format!("closing the link with {addr}"),
            after: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use meshfed_proto::frame::FrameType;

    use super::*;

    fn addr() -> SocketAddr {
        ([127, 0, 0, 1], 9).into()
    }

    #[tokio::test]
    async fn frames_are_read_across_short_reads_and_eof_between_frames_is_clean() {
        let mut wire = BytesMut::new();
        Frame::new(FrameType::Heartbeat, vec![1, 2, 3]).encode_into(&mut wire);
        Frame::new(FrameType::Envelope, vec![7; 40_000]).encode_into(&mut wire);
        let mut io = tokio_test_reader(wire.freeze());
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let first = recv_frame(&mut io, &mut dec, addr())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.ty, FrameType::Heartbeat);
        let second = recv_frame(&mut io, &mut dec, addr())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.body.len(), 40_000);
        assert!(
            recv_frame(&mut io, &mut dec, addr())
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn eof_inside_a_frame_is_a_truncated_frame() {
        let mut wire = BytesMut::new();
        Frame::new(FrameType::Envelope, vec![7; 100]).encode_into(&mut wire);
        wire.truncate(50);
        let mut io = tokio_test_reader(wire.freeze());
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let err = recv_frame(&mut io, &mut dec, addr()).await.unwrap_err();
        assert!(
            matches!(err, TransportError::TruncatedFrame { pending: 50, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn unknown_frame_type_is_reported_with_its_code() {
        let mut io = tokio_test_reader(Bytes::from_static(&[0, 0, 0, 0, 0xee]));
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let err = recv_frame(&mut io, &mut dec, addr()).await.unwrap_err();
        assert_eq!(err.to_string(), "peer sent a frame of unknown type 0xee");
    }

    #[test]
    fn queue_refuses_a_frame_over_the_maximum() {
        let mut out = BytesMut::new();
        let frame = Frame::new(FrameType::Envelope, vec![0; 11]);
        let err = queue(&mut out, &frame, 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame of 11 bytes exceeds the maximum of 10"
        );
        assert!(out.is_empty());
        queue(&mut out, &Frame::new(FrameType::Envelope, vec![0; 10]), 10).unwrap();
        assert_eq!(out.len(), 15);
    }

    /// A reader that hands out at most 1000 bytes per read.
    fn tokio_test_reader(data: Bytes) -> impl AsyncRead + Unpin {
        struct Chunked(Bytes);
        impl AsyncRead for Chunked {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let n = self.0.len().min(1000).min(buf.remaining());
                let chunk = self.0.split_to(n);
                buf.put_slice(&chunk);
                std::task::Poll::Ready(Ok(()))
            }
        }
        Chunked(data)
    }
}
