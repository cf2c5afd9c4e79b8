//! Why a gateway could not start.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A gateway that could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A file of the node's identity is missing or unreadable. (Its cause is the error's
    /// source, so that the CLI's cause chain shows it once.)
    #[error("cannot read {what} {}", path.display())]
    Read {
        /// What the file is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The audit trail cannot be opened (its file, its key, its writer).
    #[error("the audit trail cannot be opened: {reason}")]
    Audit {
        /// What is wrong.
        reason: String,
    },
    /// The node's identity files are not usable.
    #[error("the node identity in {} is not usable: {reason}", dir.display())]
    Identity {
        /// The node directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The policy file is not usable (each problem with its line and column).
    #[error(transparent)]
    Policy(#[from] crate::policy::LoadError),
    /// The registry could not be opened (the store's error says where and why).
    #[error(transparent)]
    Store(#[from] meshfed_store::StoreError),
    /// `meshfed.toml` sets another role than the command runs.
    #[error(
        "{} sets role = \"{}\": this is a {}'s node directory, and `meshfed {}` does not run it; run it with `meshfed {}` (a node's role is chosen by `meshfed init --role`)",
        config.display(),
        role.as_str(),
        role.as_str(),
        command.as_str(),
        role.as_str()
    )]
    Role {
        /// The configuration file.
        config: PathBuf,
        /// The role it sets.
        role: crate::config::Role,
        /// The role the command runs.
        command: crate::config::Role,
    },
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
    #[error(
        "cannot listen for {} on {addr}: {reason}; choose another address with `{}` in meshfed.toml (`meshfed init {} ADDR` for a new node)",
        listener.what(),
        listener.setting(),
        listener.init_flag()
    )]
    Bind {
        /// Which listener.
        listener: Listening,
        /// The address.
        addr: SocketAddr,
        /// Why, in words (the operating system's reason).
        reason: String,
    },
    /// The runtime address file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The gateway's two listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listening {
    /// Federation links from other meshes.
    Federation,
    /// The admin and messaging API.
    Api,
}

impl Listening {
    fn what(self) -> &'static str {
        match self {
            Self::Federation => "federation links",
            Self::Api => "the admin API",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            Self::Federation => "[federation] listen",
            Self::Api => "[api] listen",
        }
    }

    fn init_flag(self) -> &'static str {
        match self {
            Self::Federation => "--listen",
            Self::Api => "--api",
        }
    }
}

/// Why binding `addr` failed, in words: the common cases plainly, others as the OS says them.
pub(crate) fn bind_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "the address is already in use (by another gateway or program)".to_owned()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "the address does not belong to this machine".to_owned()
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("permission denied ({e}; ports below 1024 need privileges)")
        }
        _ => e.to_string(),
    }
}

pub(crate) use crate::chain::chain;
