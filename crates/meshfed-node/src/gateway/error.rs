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
    /// The node has had a store (its marker says so) and the store file is gone or empty:
    /// opening it would start a blank registry and journal without a word.
    #[error(
        "the store {} is {state}, although this node has run with a store (store {id}, recorded in {}): restore the store file from a backup, or start over with an empty store (no federations, no queued messages) with `meshfed gateway --new-store`",
        path.display(),
        marker.display()
    )]
    StoreLost {
        /// The store file.
        path: PathBuf,
        /// `missing` or `empty`.
        state: &'static str,
        /// The store id in the marker.
        id: String,
        /// The marker file.
        marker: PathBuf,
    },
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
