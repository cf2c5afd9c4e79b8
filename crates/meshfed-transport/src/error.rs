//! What can go wrong on a link, named as facts, and the one place where rustls errors are turned
//! into readable reasons.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::{AlertDescription, CertificateError, OtherError, PeerIncompatible};

/// A link could not be set up, or broke.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// This node's own certificate, CA certificate or key cannot be used.
    #[error("node TLS identity is unusable: {reason}")]
    Identity {
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the TLS configuration built from the identity.
    #[error("TLS configuration was refused: {reason}")]
    TlsConfig {
        /// rustls's reason.
        reason: String,
    },
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// Accepting a TCP connection failed (for example: too many open files). The listener
    /// itself is still usable.
    #[error("accepting a TCP connection failed")]
    Accept {
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The TCP connection to a peer could not be made.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address dialled (`host:port`).
        addr: String,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed; `reason` names the fact (a certificate refused and why, a
    /// missing protocol, an alert from the peer).
    #[error("TLS handshake with {addr} failed: {reason}")]
    TlsHandshake {
        /// The peer's address.
        addr: SocketAddr,
        /// What decided it.
        reason: String,
    },
    /// A wait ran out of time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// The time allowed.
        after: Duration,
    },
    /// A frame is longer than the link's maximum frame size (received: announced by the peer;
    /// sent: refused before anything was written).
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The frame body's length.
        len: u64,
        /// The link's maximum.
        max: u32,
    },
    /// The peer sent a frame whose type byte is not a known frame type.
    #[error("peer sent a frame of unknown type 0x{code:02x}")]
    UnknownFrameType {
        /// The type byte.
        code: u8,
    },
    /// The peer ended the link cleanly (TLS close_notify) in the middle of a frame.
    #[error("peer {addr} closed the link in the middle of a frame ({pending} bytes received)")]
    TruncatedFrame {
        /// The peer's address.
        addr: SocketAddr,
        /// Bytes of the unfinished frame.
        pending: usize,
    },
    /// The TCP connection ended without a TLS close_notify: the peer vanished or the
    /// connection was cut, and what was in flight may be lost.
    #[error("connection to {addr} ended without a TLS close_notify")]
    ConnectionLost {
        /// The peer's address.
        addr: SocketAddr,
    },
    /// TLS failed on an established link (an alert from the peer, a corrupt record).
    #[error("TLS failure on the link with {addr}: {reason}")]
    Tls {
        /// The peer's address.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// Another input/output failure.
    #[error("{what} failed")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
}

/// Why a certificate verifier refused a peer: carried through rustls inside
/// `CertificateError::Other`, so that its text reaches [`TransportError::TlsHandshake`].
#[derive(Debug)]
pub(crate) struct Refusal(pub(crate) String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Refusal {}

impl Refusal {
    /// The rustls error a verifier returns: the peer gets a `certificate_unknown` alert, we get
    /// the text back from the handshake.
    pub(crate) fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }
}

/// `err` and its sources, joined with ": ".
pub(crate) fn chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

/// The rustls error inside an IO error from tokio-rustls, if there is one.
pub(crate) fn rustls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Turns an IO error from a TLS handshake into the error to report.
pub(crate) fn handshake_error(err: io::Error, addr: SocketAddr) -> TransportError {
    if let Some(tls) = rustls_error(&err) {
        return TransportError::TlsHandshake {
            addr,
            reason: describe(tls),
        };
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof => TransportError::TlsHandshake {
            addr,
            reason: "the peer closed the connection during the handshake".to_owned(),
        },
        io::ErrorKind::ConnectionReset => TransportError::TlsHandshake {
            addr,
            reason: "the peer reset the connection during the handshake".to_owned(),
        },
        _ => TransportError::Io {
            what: format!("TLS handshake with {addr}"),
            source: err,
        },
    }
}

/// Turns an IO error on an established link into the error to report.
pub(crate) fn link_error(err: io::Error, addr: SocketAddr, what: &str) -> TransportError {
    if let Some(tls) = rustls_error(&err) {
        return TransportError::Tls {
            addr,
            reason: describe(tls),
        };
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof => TransportError::ConnectionLost { addr },
        _ => TransportError::Io {
            what: format!("{what} {addr}"),
            source: err,
        },
    }
}

/// The fact behind a rustls error, in words.
pub(crate) fn describe(err: &rustls::Error) -> String {
    use rustls::Error as E;
    match err {
        // Our own verifiers' refusals: their text is the reason.
        E::InvalidCertificate(CertificateError::Other(other)) => other.to_string(),
        E::InvalidCertificate(e) => format!("peer certificate refused: {e}"),
        E::General(text) => text.clone(),
        E::AlertReceived(alert) => describe_alert(*alert),
        E::NoApplicationProtocol => "the peer does not speak ALPN meshfed/1".to_owned(),
        E::NoCertificatesPresented => "the peer presented no certificate".to_owned(),
        E::PeerIncompatible(p) => describe_incompatible(p),
        E::InvalidMessage(m) => format!("the peer sent something that is not TLS 1.3 ({m:?})"),
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            format!("the peer broke the TLS handshake sequence ({err})")
        }
        E::PeerMisbehaved(m) => format!("the peer misbehaved ({m:?})"),
        E::DecryptError => "a TLS record or Finished message failed to verify".to_owned(),
        other => other.to_string(),
    }
}

fn describe_alert(alert: AlertDescription) -> String {
    use AlertDescription as A;
    let meaning = match alert {
        A::BadCertificate
        | A::UnsupportedCertificate
        | A::CertificateRevoked
        | A::CertificateExpired
        | A::CertificateUnknown
        | A::UnknownCA
        | A::AccessDenied
        | A::CertificateRequired => "the peer refused our certificate",
        A::NoApplicationProtocol => "the peer does not speak ALPN meshfed/1",
        A::ProtocolVersion => "the peer refused the TLS version (meshfed speaks only TLS 1.3)",
        A::HandshakeFailure | A::InsufficientSecurity => {
            "the peer shares no cipher suite, key exchange group or signature scheme with us"
        }
        A::DecryptError => "the peer could not verify our handshake signature or Finished",
        _ => "the peer ended the handshake",
    };
    format!("{meaning} (TLS alert {alert:?})")
}

fn describe_incompatible(p: &PeerIncompatible) -> String {
    use PeerIncompatible as P;
    let meaning = match p {
        P::SupportedVersionsExtensionRequired
        | P::Tls12NotOffered
        | P::Tls12NotOfferedOrEnabled
        | P::ServerDoesNotSupportTls12Or13
        | P::ServerTlsVersionIsDisabledByOurConfig => {
            "the peer does not offer TLS 1.3, the only version meshfed speaks"
        }
        P::NoCipherSuitesInCommon => {
            "the peer offers neither TLS13_AES_256_GCM_SHA384 nor TLS13_AES_128_GCM_SHA256"
        }
        P::NoKxGroupsInCommon | P::KeyShareExtensionRequired | P::NamedGroupsExtensionRequired => {
            "the peer does not offer key exchange group secp384r1"
        }
        P::NoSignatureSchemesInCommon
        | P::NoCertificateRequestSignatureSchemesInCommon
        | P::SignatureAlgorithmsExtensionRequired => {
            "the peer does not offer signature scheme ECDSA_NISTP384_SHA384"
        }
        _ => "the peer is incompatible",
    };
    format!("{meaning} ({p:?})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_text_survives_the_trip_through_rustls_and_io() {
        let tls = Refusal("server certificate names mesh b, expected a".into()).into_rustls();
        let io = io::Error::new(io::ErrorKind::InvalidData, tls);
        let addr: SocketAddr = ([127, 0, 0, 1], 9).into();
        let err = handshake_error(io, addr);
        assert_eq!(
            err.to_string(),
            "TLS handshake with 127.0.0.1:9 failed: server certificate names mesh b, expected a"
        );
    }

    #[test]
    fn alerts_are_explained() {
        let text = describe(&rustls::Error::AlertReceived(
            AlertDescription::CertificateUnknown,
        ));
        assert_eq!(
            text,
            "the peer refused our certificate (TLS alert CertificateUnknown)"
        );
    }

    #[test]
    fn eof_without_close_notify_is_a_lost_connection() {
        let addr: SocketAddr = ([127, 0, 0, 1], 9).into();
        let err = link_error(io::ErrorKind::UnexpectedEof.into(), addr, "receiving from");
        assert!(
            matches!(err, TransportError::ConnectionLost { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn chain_joins_sources() {
        let err = TransportError::Connect {
            addr: "x:1".into(),
            source: io::Error::other("refused"),
        };
        assert_eq!(chain(&err), "cannot connect to x:1: refused");
    }
}
