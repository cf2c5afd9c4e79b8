//! Why a gateway could not start.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A gateway that could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A file of the node's identity is missing or unreadable.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What the file is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The node's identity files are not usable.
    #[error("the node identity in {} is not usable: {reason}", dir.display())]
    Identity {
        /// The node directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The registry could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] meshfed_store::StoreError),
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}: {reason}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The runtime address file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}
