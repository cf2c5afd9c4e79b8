//! The node's store file as the node directory remembers it.
//!
//! What it is: a marker outside the store, `DIR/store.id`, written with a random store id when
//! the gateway creates the store, so that a store that was lost since (deleted, or left as an
//! empty file) stops the gateway at start instead of being silently replaced by a blank one; and
//! [`start_over`], which moves a store aside when the node deliberately starts again with an
//! empty one (`meshfed gateway --new-store`, `meshfed init --force`).
//! What it is not: the store itself (`meshfed-store`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use meshfed_proto::crypto::random_fill;
use meshfed_trust::files::{self, FileMode, IfExists};

use crate::gateway::error::GatewayError;

/// The marker's file name in the node directory.
pub const STORE_ID_FILE: &str = "store.id";

/// Where the marker of the node directory `dir` is.
pub fn marker_path(dir: &Path) -> PathBuf {
    dir.join(STORE_ID_FILE)
}

/// Refuses to start when the marker says this node has had a store and the store file at
/// `store` is missing or empty (opening it would create a blank store). Call before the store
/// is opened.
pub(crate) fn check(dir: &Path, store: &Path) -> Result<(), GatewayError> {
    let marker = marker_path(dir);
    let id = match std::fs::read_to_string(&marker) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(GatewayError::Read {
                what: "store marker",
                path: marker,
                source,
            });
        }
    };
    let state = match std::fs::metadata(store) {
        Ok(m) if m.len() > 0 => return Ok(()),
        Ok(_) => "empty",
        Err(e) if e.kind() == io::ErrorKind::NotFound => "missing",
        // Anything else is for opening the store to report.
        Err(_) => return Ok(()),
    };
    Err(GatewayError::StoreLost {
        path: store.to_path_buf(),
        state,
        id,
        marker,
    })
}

/// Writes the marker with a new store id, unless there is one. Call once the store is open.
pub(crate) fn record(dir: &Path) -> Result<(), GatewayError> {
    let marker = marker_path(dir);
    if marker.exists() {
        return Ok(());
    }
    let mut bytes = [0u8; 16];
    let write = random_fill(&mut bytes)
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|()| {
            let text = format!("{}\n", hex::encode(bytes));
            files::write_file(&marker, text.as_bytes(), FileMode::Public, IfExists::Refuse)
                .map_err(io::Error::other)
        });
    write.map_err(|source| GatewayError::Write {
        path: marker,
        source,
    })
}

/// Moves the store file at `store` (with its `-wal` and `-shm` files, the journal's
/// `-segments` directory and the audit file `-audit` with its own) aside, to
/// `<store>.replaced-<UTC time>`, and removes the marker of `dir`, so that the next gateway
/// start creates an empty store. Returns where the store file went, `None` when there was none.
pub fn start_over(dir: &Path, store: &Path, now: SystemTime) -> io::Result<Option<PathBuf>> {
    let stamp = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(':', "");
    let aside = |suffix: &str| {
        let mut name = store.as_os_str().to_owned();
        name.push(suffix);
        name.push(format!(".replaced-{stamp}"));
        PathBuf::from(name)
    };
    let mut moved = None;
    for suffix in [
        "",
        "-wal",
        "-shm",
        "-segments",
        "-audit",
        "-audit-wal",
        "-audit-shm",
    ] {
        let mut from = store.as_os_str().to_owned();
        from.push(suffix);
        let from = PathBuf::from(from);
        if from.symlink_metadata().is_err() {
            continue;
        }
        let to = aside(suffix);
        if to.symlink_metadata().is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", to.display()),
            ));
        }
        std::fs::rename(&from, &to)?;
        if suffix.is_empty() {
            moved = Some(to);
        }
    }
    match std::fs::remove_file(marker_path(dir)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_store_is_refused_only_once_the_marker_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store/meshfed.db");
        check(tmp.path(), &store).unwrap();
        record(tmp.path()).unwrap();
        let err = check(tmp.path(), &store).unwrap_err();
        assert!(err.to_string().contains("is missing"), "{err}");
        std::fs::create_dir_all(store.parent().unwrap()).unwrap();
        std::fs::write(&store, b"").unwrap();
        let err = check(tmp.path(), &store).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        std::fs::write(&store, b"data").unwrap();
        check(tmp.path(), &store).unwrap();
    }

    #[test]
    fn start_over_moves_the_store_and_its_wal_aside_and_forgets_the_marker() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("meshfed.db");
        std::fs::write(&store, b"db").unwrap();
        std::fs::write(tmp.path().join("meshfed.db-wal"), b"wal").unwrap();
        std::fs::create_dir(tmp.path().join("meshfed.db-segments")).unwrap();
        record(tmp.path()).unwrap();
        let moved = start_over(tmp.path(), &store, SystemTime::UNIX_EPOCH)
            .unwrap()
            .unwrap();
        assert_eq!(
            moved,
            tmp.path().join("meshfed.db.replaced-1970-01-01T000000Z")
        );
        assert_eq!(std::fs::read(&moved).unwrap(), b"db");
        assert!(
            tmp.path()
                .join("meshfed.db-wal.replaced-1970-01-01T000000Z")
                .exists()
        );
        assert!(
            tmp.path()
                .join("meshfed.db-segments.replaced-1970-01-01T000000Z")
                .is_dir(),
            "the journal's segment log goes with the store"
        );
        assert!(!tmp.path().join("meshfed.db-segments").exists());
        assert!(!store.exists());
        check(tmp.path(), &store).unwrap();
    }
}
