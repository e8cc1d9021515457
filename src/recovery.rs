//! What a data dir holds, put together: the newest valid snapshot, then every log record after
//! the position it covers, applied with the store's own pure apply. Shared by start-up (which
//! then cuts a torn tail) and `inspect` (which only reports). Reads only; writes nothing.

use std::path::Path;

use crate::log::scan::{self, Damage, LogReport};
use crate::snapshot::recover::{Depth, RecoverError, Scan};
use crate::store::{Apply, Entries, Rebuild};

/// What recovery would load.
#[derive(Debug)]
pub struct Recovery {
    /// The image loaded: its file and length on disk, and what it holds.
    pub image: Option<Loaded>,
    /// The map after the log.
    pub entries: Entries,
    /// The seq after the log.
    pub seq: u64,
    /// The index of the last record applied (the image's, when the log adds none).
    pub log_index: u64,
    /// Records applied after the image.
    pub replayed: u64,
    /// Their bytes.
    pub replayed_bytes: u64,
    /// What the log scan found (segments, a torn tail).
    pub log: LogReport,
}

pub use crate::snapshot::Loaded;

/// Why the data dir cannot be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The snapshot files cannot be used.
    #[error(transparent)]
    Snapshot(#[from] RecoverError),
    /// The log is damaged somewhere other than its tail.
    #[error(transparent)]
    Log(#[from] Damage),
    /// The log does not reach back to the position the snapshot covers.
    #[error("the log starts at index {first} but {snapshot} needs every record after index {needed}: segments are missing")]
    Unreachable {
        /// The log's first index.
        first: u64,
        /// The record the snapshot holds up to.
        needed: u64,
        /// Which snapshot (or "an empty store", without one).
        snapshot: String,
    },
}

/// Reads the data dir `dir` and works out what recovery would load.
pub fn recover(dir: &Path, depth: Depth) -> Result<Recovery, RecoveryError> {
    recover_scan(Scan::dir(dir, depth)?, Some(&dir.join(crate::log::DIR)))
}

/// Like [`recover`], from a slot scan already made; `inspect` of a single slot file passes
/// no log.
pub fn recover_scan(mut slots: Scan, log_dir: Option<&Path>) -> Result<Recovery, RecoveryError> {
    let (image, loaded) = match slots.take_recovery()? {
        Some((path, capacity, image)) => {
            let loaded = Loaded {
                path,
                capacity,
                seq: image.seq,
                log_index: image.log_index,
                bytes: image.len as u64,
                keys: image.entries.len() as u64,
                written_at: image.written_at.clone(),
            };
            (Some(image), Some(loaded))
        }
        None => (None, None),
    };
    let (entries, mut seq, after) = match image {
        Some(img) => (img.entries, img.seq, img.log_index),
        None => (Entries::new(), 0, 0),
    };
    let mut map = Rebuild::new(entries);
    let mut replayed = 0;
    let mut last_index = after;
    let visit = |rec: crate::log::record::Record| {
        if rec.index != last_index + 1 {
            return Err(format!(
                "record {} follows record {last_index}: the log skips records the snapshot lacks",
                rec.index
            ));
        }
        let replica = &map;
        // The record's own instant, not a clock: replay reaches what the writer reached.
        let mut apply = Apply::new(|k: &str| replica.get(k), seq, rec.now);
        for (i, w) in rec.writes.into_iter().enumerate() {
            apply
                .apply(w)
                .map_err(|e| format!("write {i} does not apply on replay ({e})"))?;
        }
        if apply.seq != rec.seq {
            return Err(format!(
                "replay reaches seq {} where the record says {}",
                apply.seq, rec.seq
            ));
        }
        let Apply { ops, seq: s, .. } = apply;
        for op in ops {
            map.apply(op);
        }
        seq = s;
        last_index = rec.index;
        replayed += 1;
        Ok(())
    };
    let log = match log_dir {
        Some(dir) => scan::scan(dir, after, visit),
        None => LogReport::default(),
    };
    if let Some(d) = &log.damage {
        return Err(RecoveryError::Log(d.clone()));
    }
    if let Some(first) = log.first_index {
        if first > after + 1 {
            return Err(RecoveryError::Unreachable {
                first,
                needed: after,
                snapshot: loaded
                    .as_ref()
                    .map_or("an empty store".into(), |l| l.path.display().to_string()),
            });
        }
    }
    let replayed_bytes = log.bytes_after;
    Ok(Recovery {
        image: loaded,
        entries: map.finish(),
        seq,
        log_index: last_index,
        replayed,
        replayed_bytes,
        log,
    })
}
