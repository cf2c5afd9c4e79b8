//! A durable subscriber's exactly-once groups (qos 2) between acknowledgement and print.
//!
//! For qos 2 `meshfed subscribe --durable` acknowledges a group of envelopes, waits until the
//! gateway confirms it committed the acknowledgement, then prints the group: a gateway crash
//! before the commit repeats nothing the subscriber printed. Two moments would still lose the
//! group, since the gateway counts it delivered from its commit on: the gateway dying after the
//! commit and before its confirmation arrives, and the subscriber stopping or dying before it
//! printed. So the group is written to `DIR/subscribers/<name>.held` (fsynced) before it is
//! acknowledged, and removed once printed.
//!
//! A subscriber that starts, or reconnects, with a held group learns from the first qos 2
//! envelope the gateway sends whether that acknowledgement was committed: the group's first
//! envelope again means it was not (the gateway sends the group again; the held copy is
//! dropped), any other means it was (the held copy is printed first). The subscription's
//! cursor only moves forward, and every earlier qos 2 group was confirmed, so nothing else
//! can come first. Until such an envelope comes, the held group waits.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use meshfed_proto::envelope::EnvelopeId;

use crate::failure::Failure;

/// The held group of one durable subscription.
pub(crate) struct Held {
    path: PathBuf,
}

impl Held {
    /// The held group of durable subscription `name` of the node in `dir`.
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        // The name is the subscriber's to choose; hex keeps any name a safe file name.
        Self {
            path: dir
                .join("subscribers")
                .join(format!("{}.held", hex::encode(name))),
        }
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> Failure {
        Failure::Runtime(anyhow!("{what} {}: {e}", self.path.display()))
    }

    /// Keeps `group` (each envelope's id and text, as received) on disk, replacing what was
    /// held: written to a temporary file, fsynced, renamed over the held file.
    pub(crate) fn save<'a>(
        &self,
        group: impl IntoIterator<Item = (EnvelopeId, &'a str)>,
    ) -> Result<(), Failure> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.failed("cannot make the folder of", e))?;
        let tmp = self.path.with_extension("held.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            for (id, text) in group {
                writeln!(file, "{id} {text}")?;
            }
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| self.failed("cannot keep the acknowledged envelopes in", e))
    }

    /// The held group, oldest first; empty when nothing is held.
    pub(crate) fn load(&self) -> Result<Vec<(EnvelopeId, String)>, Failure> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.failed("cannot read", e)),
        };
        text.lines()
            .enumerate()
            .map(|(i, line)| {
                let (id, envelope) = line.split_once(' ').ok_or_else(|| {
                    self.failed(&format!("line {}: no envelope id in", i + 1), "?")
                })?;
                let id = id.parse().map_err(|e| {
                    self.failed(&format!("line {}: a bad envelope id in", i + 1), e)
                })?;
                Ok((id, envelope.to_owned()))
            })
            .collect()
    }

    /// Nothing held any more (the group was printed, or is coming again).
    pub(crate) fn clear(&self) -> Result<(), Failure> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.failed("cannot remove", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_group_round_trips_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let held = Held::new(dir.path(), "erp/orders");
        assert!(held.load().unwrap().is_empty());
        let a: EnvelopeId = format!("fed_{}", "1".repeat(32)).parse().unwrap();
        let b: EnvelopeId = format!("fed_{}", "2".repeat(32)).parse().unwrap();
        held.save([(a, r#"{"n":1}"#), (b, r#"{"n": 2, "s": "a b"}"#)])
            .unwrap();
        assert_eq!(
            held.load().unwrap(),
            [
                (a, r#"{"n":1}"#.to_owned()),
                (b, r#"{"n": 2, "s": "a b"}"#.to_owned())
            ]
        );
        held.clear().unwrap();
        assert!(held.load().unwrap().is_empty());
        held.clear().unwrap();
        std::fs::write(
            dir.path()
                .join("subscribers")
                .join(format!("{}.held", hex::encode("erp/orders"))),
            "garbage\n",
        )
        .unwrap();
        let err = held.load().unwrap_err().summary();
        assert!(err.contains("line 1: no envelope id"), "{err}");
    }
}
