//! What a data dir holds, put together: the newest valid snapshot, then every log record after
//! the position it covers, applied with the store's own pure apply. Shared by start-up (which
//! then cuts a torn tail) and `inspect` (which only reports). Reads only; writes nothing.

use std::path::Path;

use crate::log::scan::{self, Damage, LogReport};
use crate::snapshot::recover::{Depth, RecoverError, Scan};
use std::collections::HashMap;
use std::sync::Arc;

use crate::store::{Apply, Entries, Entry, Op};

/// Writes replayed before recovery indexes the image by hash (building the index costs about
/// as much as this many B-tree lookups at a million keys).
const INDEX_AFTER_WRITES: usize = 50_000;

/// The image with the log's changes: one by one when they are few, else one sorted merge and a
/// bulk build of the ordered set (linear, where a million inserts are each a descent).
fn merge(mut entries: Entries, changed: HashMap<Arc<str>, Option<Entry>>) -> Entries {
    if changed.len() < entries.len() / 16 + 1024 {
        for (key, v) in changed {
            match v {
                Some(e) => {
                    entries.replace(e);
                }
                None => {
                    entries.remove(key.as_bytes());
                }
            }
        }
        return entries;
    }
    let mut changes: Vec<(Arc<str>, Option<Entry>)> = changed.into_iter().collect();
    changes.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = Vec::with_capacity(entries.len() + changes.len());
    let mut old = entries.into_iter().peekable();
    for (key, v) in changes {
        while let Some(e) = old.next_if(|e| e.key_bytes() < key.as_bytes()) {
            out.push(e);
        }
        old.next_if(|e| e.key_bytes() == key.as_bytes());
        if let Some(e) = v {
            out.push(e);
        }
    }
    out.extend(old);
    // Sorted and unique already: `from_iter` sees the order and builds the tree in one pass.
    out.into_iter().collect()
}

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
    let mut replayed = 0;
    let mut last_index = after;
    // What the log changed, by key: replay reads it first, then the image. The ordered set is
    // changed once at the end, not at every write: at a million keys each B-tree descent is
    // about twenty cache misses, and a put cost two (its precondition's lookup and the insert).
    let mut changed: HashMap<Arc<str>, Option<Entry>> = HashMap::new();
    // A hash index over the image, built once the log proves long enough to pay for it.
    let mut index: Option<HashMap<&[u8], &Entry>> = None;
    let mut writes_seen = 0usize;
    let image_entries = &entries;
    let visit = |rec: crate::log::record::Record| {
        if rec.index != last_index + 1 {
            return Err(format!(
                "record {} follows record {last_index}: the log skips records the snapshot lacks",
                rec.index
            ));
        }
        writes_seen += rec.writes.len();
        if index.is_none() && writes_seen >= INDEX_AFTER_WRITES {
            index = Some(image_entries.iter().map(|e| (e.key_bytes(), e)).collect());
        }
        let (seen, index) = (&changed, &index);
        let lookup = |k: &str| match seen.get(k) {
            Some(v) => v.clone(),
            None => match index {
                Some(ix) => ix.get(k.as_bytes()).map(|e| (*e).clone()),
                None => image_entries.get(k.as_bytes()).cloned(),
            },
        };
        // The record's own instant, not a clock: replay reaches what the writer reached.
        let mut apply = Apply::new(lookup, seq, rec.now);
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
            match op {
                Op::Put { entry } => {
                    changed.insert(Arc::from(entry.key()), Some(entry));
                }
                Op::Delete { key, .. } | Op::Expire { key, .. } => {
                    changed.insert(key, None);
                }
                Op::Seq { .. } | Op::Reset { .. } => {}
            }
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
    drop(index);
    let entries = merge(entries, changed);
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
        entries,
        seq,
        log_index: last_index,
        replayed,
        replayed_bytes,
        log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(mut entries: Entries, changed: &HashMap<Arc<str>, Option<Entry>>) -> Entries {
        for (k, v) in changed {
            match v {
                Some(e) => {
                    entries.replace(e.clone());
                }
                None => {
                    entries.remove(k.as_bytes());
                }
            }
        }
        entries
    }

    fn listing(e: &Entries) -> Vec<(String, u64)> {
        e.iter()
            .map(|e| (e.key().to_string(), e.version()))
            .collect()
    }

    /// Both ways of applying the log's changes (one by one, and the sorted merge) give what
    /// applying each change to the ordered set gives: puts of new and old keys, deletes of
    /// present and absent keys, at both ends of the key range.
    #[test]
    fn the_merge_equals_applying_each_change() {
        for (keys, changes) in [(100usize, 10usize), (100, 3000), (5000, 4000)] {
            let entries: Entries = (0..keys)
                .map(|i| Entry::new(&format!("k{:06}", i * 2), 1, b"1"))
                .collect();
            let mut changed = HashMap::new();
            for j in 0..changes {
                // Every third change deletes; keys run past both ends of the image's range.
                let k = format!("k{:06}", (j * 7919) % (keys * 2 + 50));
                let v = (j % 3 != 0).then(|| Entry::new(&k, 2 + j as u64, b"2"));
                changed.insert(Arc::from(k.as_str()), v);
            }
            changed.insert(Arc::from(""), Some(Entry::new("", 9, b"3")));
            changed.insert(Arc::from("zzz"), None);
            let want = naive(entries.clone(), &changed);
            assert_eq!(listing(&merge(entries, changed)), listing(&want));
        }
    }
}
