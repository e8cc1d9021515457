//! What a data dir holds, put together: the newest valid snapshot, then every log record after
//! the position it covers, applied with the store's own pure apply. Shared by start-up (which
//! then cuts a torn tail) and `inspect` (which only reports). Reads only; writes nothing.

use std::cell::{Cell, OnceCell};
use std::path::{Path, PathBuf};
use std::thread::ScopedJoinHandle;

use crate::log::record::Record;
use crate::log::scan::{self, Damage, LogReport};
use crate::snapshot::format::Image;
use crate::snapshot::recover::{claimed_seq, Depth, RecoverError, Scan};
use crate::store::{Apply, Entries, Index, Rebuild};

/// What recovery would load.
#[derive(Debug)]
pub struct Recovery {
    /// The image loaded: its file and length on disk, and what it holds.
    pub image: Option<Loaded>,
    /// The map after the log.
    pub entries: Entries,
    /// A hash index over exactly `entries`, for the store (built only for a start).
    pub index: Option<Index>,
    /// The seq after the log.
    pub seq: u64,
    /// The index of the last record applied (the image's, when the log adds none).
    pub log_index: u64,
    /// Records applied after the image.
    pub replayed: u64,
    /// Raft records the log holds (a cluster node's, with [`Replay::Check`]): checked, not
    /// applied.
    pub raft_records: u64,
    /// Their bytes.
    pub replayed_bytes: u64,
    /// What the log scan found (segments, a torn tail).
    pub log: LogReport,
}

pub use crate::snapshot::Loaded;

/// What recovery does with the log's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// A standalone server: apply every record after the image. A Raft record (a cluster
    /// node's log) refuses: its seqs are decided when it is applied, so replaying it here
    /// would guess them, and a cluster node starts from its Raft snapshot instead.
    Records,
    /// A cluster node's data dir, for `inspect`: check every segment (checksums, indexes, one
    /// kind of record) but apply nothing; the map is the slot image's.
    Check,
    /// A cluster node's start: the log is openraft's, which its log store reads (and repairs)
    /// itself, so it is not read here at all.
    Skip,
}

/// Why the data dir cannot be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The snapshot files cannot be used.
    #[error(transparent)]
    Snapshot(#[from] RecoverError),
    /// The log is damaged somewhere other than its tail.
    #[error(transparent)]
    Log(#[from] Damage),
    /// A standalone start on a cluster node's data dir.
    #[error("this data dir holds a cluster node's Raft log ({path}); start it with --node-id and --raft-addr")]
    ClusterLog {
        /// The segment holding the first Raft record.
        path: PathBuf,
    },
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

/// A refusal, with what the log scan found (every segment, the damaged one with its error),
/// for `inspect` to show; the log is empty when the snapshots were refused before it was read.
#[derive(Debug)]
pub struct Refusal {
    /// Why recovery refuses.
    pub error: RecoveryError,
    /// The log as the scan found it (boxed, so that the result stays small).
    pub log: Box<LogReport>,
}

/// Reads the data dir `dir` and works out what recovery would load.
///
/// The image and the log are read at once: the image is decoded on a thread of its own while
/// this one reads, checks and replays the log, on the guess that the image loaded will be the
/// one whose first bytes claim the highest seq (see [`speculate`]). When the guess fails, or
/// anything is wrong, the data dir is read again one step after the other, which gives the
/// answer (or the refusal) the guess would have had to match.
///
/// With [`Replay::Skip`] the log is not read: only the image is loaded.
pub fn recover(dir: &Path, depth: Depth, replay: Replay) -> Result<Recovery, RecoveryError> {
    let log_dir = dir.join(crate::log::DIR);
    if replay == Replay::Skip {
        return replay_scan(Scan::dir(dir, depth)?, None, true, replay).map_err(|r| r.error);
    }
    if replay == Replay::Records {
        if let Some(rec) = claimed_seq(dir).and_then(|claim| speculate(dir, depth, &log_dir, claim))
        {
            return Ok(rec);
        }
    }
    replay_scan(Scan::dir(dir, depth)?, Some(&log_dir), true, replay).map_err(|r| r.error)
}

/// Like [`recover`], from a slot scan already made, one step after the other and without the
/// store's index (for `inspect`; a single slot file passes no log). A refusal keeps the log
/// report, so that every segment can still be shown.
pub fn recover_scan(
    slots: Scan,
    log_dir: Option<&Path>,
    replay: Replay,
) -> Result<Recovery, Refusal> {
    replay_scan(slots, log_dir, false, replay)
}

/// The newest image of `slots`, then the log after it (as `replay` says); with the store's
/// index if `indexed`.
fn replay_scan(
    mut slots: Scan,
    log_dir: Option<&Path>,
    indexed: bool,
    mode: Replay,
) -> Result<Recovery, Refusal> {
    let newest = slots.take_recovery().map_err(|e| Refusal {
        error: e.into(),
        log: Box::default(),
    })?;
    let (image, loaded) = match newest {
        Some((path, capacity, image)) => {
            let loaded = loaded(path, capacity, &image);
            (Some(image), Some(loaded))
        }
        None => (None, None),
    };
    let (entries, mut seq, after) = match image {
        Some(img) => (img.entries, img.seq, img.log_index),
        None => (Entries::new(), 0, 0),
    };
    let mut map = Rebuild::new(entries);
    if let Some(dir) = log_dir {
        map.reserve(changes_in(dir));
    }
    let mut replayed = 0;
    let mut raft_records = 0;
    let mut last_index = after;
    // Set when a standalone replay meets a Raft record: the scan stops there, and the refusal
    // says what the data dir is rather than calling the record damaged.
    let mut cluster_log = false;
    let visit =
        |rec: Record, _| {
            match (mode, rec.raft.is_some()) {
                (Replay::Records, true) => {
                    cluster_log = true;
                    return Err("a Raft record".into());
                }
                (Replay::Records, false) => {}
                (_, true) => {
                    raft_records += 1;
                    return Ok(());
                }
                (_, false) => return Err(
                    "a standalone record in a cluster node's log (its data dir has a raft/ folder)"
                        .into(),
                ),
            }
            if rec.index != last_index + 1 {
                return Err(format!(
                "record {} follows record {last_index}: the log skips records the snapshot lacks",
                rec.index
            ));
            }
            last_index = rec.index;
            seq = replay(&mut map, seq, rec)?;
            replayed += 1;
            Ok(())
        };
    // A Raft log is checked from its first record (index 0 exists there); the image's
    // position is not one of its indexes.
    let from = match mode {
        Replay::Records => after + 1,
        Replay::Check | Replay::Skip => 0,
    };
    let mut log = match log_dir {
        Some(dir) => scan::scan(dir, from, visit),
        None => LogReport::default(),
    };
    // Also when no record was visited: records at or below the image's position are only
    // checked, and a Raft log's indexes have nothing to do with that position.
    let raft_segment = log.segments.iter().find(|s| s.raft).map(|s| s.path.clone());
    if cluster_log || (mode == Replay::Records && raft_segment.is_some()) {
        let path = match (&log.damage, raft_segment) {
            (Some(Damage::Record { path, .. }), _) if cluster_log => path.clone(),
            (_, Some(path)) => path,
            _ => log_dir.map(Path::to_path_buf).unwrap_or_default(),
        };
        return Err(Refusal {
            error: RecoveryError::ClusterLog { path },
            log: Box::new(log),
        });
    }
    if let Some(d) = &log.damage {
        let error = RecoveryError::Log(d.clone());
        return Err(Refusal {
            error,
            log: Box::new(log),
        });
    }
    if let Some(first) = log.first_index.filter(|_| mode == Replay::Records) {
        if first > after + 1 {
            let error = RecoveryError::Unreachable {
                first,
                needed: after,
                snapshot: loaded
                    .as_ref()
                    .map_or("an empty store".into(), |l| l.path.display().to_string()),
            };
            // The records missing come before the first segment: it is the one to name.
            if let Some(seg) = log.segments.first_mut() {
                seg.error.get_or_insert_with(|| error.to_string());
            }
            return Err(Refusal {
                error,
                log: Box::new(log),
            });
        }
    }
    let replayed_bytes = log.bytes_after;
    let (entries, index) = if indexed {
        let (entries, index) = map.finish_indexed();
        (entries, Some(index))
    } else {
        (map.finish(), None)
    };
    Ok(Recovery {
        image: loaded,
        entries,
        index,
        seq,
        log_index: last_index,
        replayed,
        raft_records,
        replayed_bytes,
        log,
    })
}

fn loaded(path: std::path::PathBuf, capacity: u64, image: &Image) -> Loaded {
    Loaded {
        path,
        capacity,
        seq: image.seq,
        log_index: image.log_index,
        bytes: image.len as u64,
        keys: image.entries.len() as u64,
        written_at: image.written_at.clone(),
        tag: image.raft.as_deref().map(std::sync::Arc::from),
    }
}

/// About how many keys the log in `dir` changes, to size the table that holds them: a put
/// takes a little over 100 bytes of a record with small values, and keys repeat.
fn changes_in(dir: &Path) -> usize {
    (crate::log::bytes(dir) / 128) as usize
}

/// Applies one record's writes to `map`, which stands at `seq`; returns the seq after it.
fn replay(map: &mut Rebuild<'_>, seq: u64, rec: Record) -> Result<u64, String> {
    let replica = &*map;
    // The record's own instant, not a clock: replay reaches what the writer reached.
    let mut apply = Apply::replaying(|k: &str| replica.get(k), seq, rec.now);
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
    let Apply { ops, seq, .. } = apply;
    for op in ops {
        map.apply(op);
    }
    Ok(seq)
}

/// An image and its file: path and length on disk.
type Found = (PathBuf, u64, Image);

/// The image being decoded on its own thread, handed over once.
struct Reading<'scope> {
    thread: Cell<Option<ScopedJoinHandle<'scope, Option<Found>>>>,
    /// The image loaded and its file, its entries taken out into `entries`.
    found: OnceCell<Option<Found>>,
    entries: Cell<Option<Entries>>,
}

impl Reading<'_> {
    /// Waits for the thread; `None` when it found no image of the seq it was told to expect.
    fn wait(&self) -> Option<&Found> {
        self.found
            .get_or_init(|| {
                let (path, capacity, mut image) = self.thread.take()?.join().ok()??;
                self.entries.set(Some(std::mem::take(&mut image.entries)));
                Some((path, capacity, image))
            })
            .as_ref()
    }

    /// The image's entries (none when it is not the one expected: the replay is then
    /// thrown away).
    fn entries(&self) -> Entries {
        self.wait();
        self.entries.take().unwrap_or_default()
    }
}

/// Recovery with the image and the log read at once, on the guess that the image loaded
/// holds seq `claim`; `None` when the guess does not hold or anything is wrong (the caller then
/// recovers one step after the other, and reports what it finds).
///
/// The log is replayed from the first record past seq `claim` before the image is there:
/// [`Rebuild`] needs the image only for a lookup (a conditional write, a delete, an expiry),
/// and then waits for it. The result is accepted only if the image loaded has that seq and
/// the records replayed are exactly those after its `log_index`, so it is what
/// [`recover_scan`] would have built.
fn speculate(dir: &Path, depth: Depth, log_dir: &Path, claim: u64) -> Option<Recovery> {
    std::thread::scope(|s| {
        let thread = std::thread::Builder::new()
            .name("twinkv-recover".into())
            .spawn_scoped(s, move || {
                let mut slots = Scan::dir(dir, depth).ok()?;
                slots
                    .take_recovery()
                    .ok()?
                    .filter(|(_, _, image)| image.seq == claim)
            })
            .ok()?;
        let reading = Reading {
            thread: Cell::new(Some(thread)),
            found: OnceCell::new(),
            entries: Cell::new(None),
        };
        let mut map = Rebuild::awaiting(|| reading.entries());
        map.reserve(changes_in(log_dir));
        let (mut seq, mut replayed, mut replayed_bytes) = (claim, 0, 0);
        // The records past `claim` must be exactly those past the image's `log_index`.
        let (mut last_skipped, mut first_replayed, mut last_replayed) = (None, None, None);
        let mut out_of_order = false;
        let log = scan::scan(log_dir, 0, |rec: Record, len| {
            if rec.raft.is_some() {
                // A cluster node's log: the guess fails, and the stepwise replay refuses.
                return Err("a Raft record".into());
            }
            if rec.seq <= claim {
                out_of_order |= first_replayed.is_some();
                last_skipped = Some(rec.index);
                return Ok(());
            }
            first_replayed.get_or_insert(rec.index);
            last_replayed = Some(rec.index);
            seq = replay(&mut map, seq, rec)?;
            replayed += 1;
            replayed_bytes += len;
            Ok(())
        });
        map.base();
        let (path, capacity, image) = reading.wait()?;
        let after = image.log_index;
        let holds = log.damage.is_none()
            && !out_of_order
            && last_skipped.is_none_or(|i| i <= after)
            && first_replayed.is_none_or(|i| i == after + 1)
            && log.first_index.is_none_or(|first| first <= after + 1);
        if !holds {
            tracing::info!(
                "the first guess at recovery did not hold (a damaged newest snapshot or log); \
                 reading both again, one after the other"
            );
            return None;
        }
        let loaded = Loaded {
            keys: map.base().len() as u64,
            ..loaded(path.clone(), *capacity, image)
        };
        let (entries, index) = map.finish_indexed();
        Some(Recovery {
            image: Some(loaded),
            entries,
            index: Some(index),
            seq,
            log_index: last_replayed.unwrap_or(after),
            replayed,
            raft_records: 0,
            replayed_bytes,
            log,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record;
    use crate::snapshot::format::{self, Position};
    use crate::store::{Conditions, ETags, Entry, Expiry, PendingValue, Write};
    use std::sync::Arc;

    /// Builds a data dir: the writes applied one record each, a log holding every record,
    /// and an image taken after each record named in `images` (the last two kept, as slots).
    struct Dir {
        dir: tempfile::TempDir,
        state: Entries,
        seq: u64,
        index: u64,
        log: Vec<u8>,
        slot: usize,
    }

    impl Dir {
        fn new() -> Dir {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::create_dir_all(dir.path().join(crate::log::DIR)).expect("log dir");
            Dir {
                dir,
                state: Entries::new(),
                seq: 0,
                index: 0,
                log: Vec::new(),
                slot: 0,
            }
        }

        fn record(&mut self, writes: Vec<Write>) {
            let state = &self.state;
            let mut apply = Apply::new(|k: &str| state.get(k.as_bytes()).cloned(), self.seq, 7);
            for w in writes {
                apply.apply(w).expect("the test's writes apply");
            }
            self.index += 1;
            record::encode(&mut self.log, self.index, apply.seq, 7, &apply.logged);
            let Apply { ops, seq, .. } = apply;
            for op in ops {
                op.apply_owned(&mut self.state);
            }
            self.seq = seq;
            let segment = self
                .dir
                .path()
                .join(crate::log::DIR)
                .join(crate::log::segment_name(1));
            std::fs::write(segment, &self.log).expect("segment");
        }

        fn image(&mut self) -> PathBuf {
            let path = self
                .dir
                .path()
                .join(crate::snapshot::recover::SLOT_NAMES[self.slot]);
            self.slot = 1 - self.slot;
            let mut doc = Vec::new();
            let at = Position {
                seq: self.seq,
                log_index: self.index,
            };
            format::encode(&mut doc, at, "2026-12-01T00:00:00Z", &self.state).expect("encode");
            std::fs::write(&path, doc).expect("slot");
            path
        }
    }

    fn put(key: &str, text: &str) -> Write {
        Write::Put {
            key: Arc::from(key),
            value: PendingValue::from_text(text),
            cond: Conditions::default(),
            expires: Expiry::Never,
        }
    }

    /// Each entry's key, version, value and expiry time.
    type Contents = Vec<(String, u64, Vec<u8>, Option<u64>)>;

    /// What a recovery loaded, comparable.
    fn summary(r: &Recovery) -> (Contents, u64, u64, u64, u64) {
        let entries = r
            .entries
            .iter()
            .map(|e: &Entry| {
                (
                    e.key().into(),
                    e.version(),
                    e.json().to_vec(),
                    e.expires_at(),
                )
            })
            .collect();
        (entries, r.seq, r.log_index, r.replayed, r.replayed_bytes)
    }

    fn one_step_at_a_time(dir: &Path) -> Recovery {
        let log = dir.join(crate::log::DIR);
        recover_scan(
            Scan::dir(dir, Depth::Newest).expect("scan"),
            Some(&log),
            Replay::Records,
        )
        .expect("recovers")
    }

    /// A log of every kind of write after two images: puts, a conditional put and a delete
    /// (which look the image up, so the replay waits for it), a batch, an expiry time.
    fn busy_dir() -> (Dir, PathBuf, PathBuf) {
        let mut d = Dir::new();
        d.record(vec![put("a", "1"), put("b", "2")]);
        let older = d.image();
        d.record(vec![put("c", "3")]);
        d.record(vec![put("d", "4")]);
        let newest = d.image();
        d.record(vec![Write::Put {
            key: Arc::from("a"),
            value: PendingValue::from_text("5"),
            cond: Conditions {
                if_match: Some(ETags::List(vec![1])),
                ..Default::default()
            },
            expires: Expiry::At(u64::MAX / 2),
        }]);
        d.record(vec![Write::Delete {
            key: Arc::from("b"),
            cond: Conditions::default(),
        }]);
        d.record(vec![
            Write::Batch {
                puts: vec![
                    (Arc::from("e"), PendingValue::from_text("6"), Expiry::Never),
                    (Arc::from("c"), PendingValue::from_text("7"), Expiry::Never),
                ],
                deletes: vec![Arc::from("d"), Arc::from("absent")],
            },
            put("f", "8"),
        ]);
        (d, older, newest)
    }

    #[test]
    fn reading_image_and_log_at_once_loads_what_one_step_at_a_time_does() {
        let (d, _, newest) = busy_dir();
        let dir = d.dir.path();
        let claim = claimed_seq(dir).expect("a claim");
        assert_eq!(claim, 4);
        let at_once = speculate(dir, Depth::Newest, &dir.join(crate::log::DIR), claim)
            .expect("the guess holds");
        let stepwise = one_step_at_a_time(dir);
        assert_eq!(summary(&at_once), summary(&stepwise));
        assert_eq!(at_once.replayed, 3);
        let image = at_once.image.as_ref().expect("an image");
        assert_eq!((image.path.as_path(), image.keys), (newest.as_path(), 4));
        assert_eq!(image.log_index, 3);
        assert_eq!(
            summary(&recover(dir, Depth::Newest, Replay::Records).expect("recovers")),
            summary(&stepwise)
        );
        let keys: Vec<_> = at_once
            .entries
            .iter()
            .map(|e| e.key().to_string())
            .collect();
        assert_eq!(keys, ["a", "c", "e", "f"]);
    }

    #[test]
    fn a_damaged_newest_image_makes_the_guess_fail_and_recovery_read_again() {
        let (d, older, newest) = busy_dir();
        let dir = d.dir.path();
        let mut bytes = std::fs::read(&newest).expect("slot");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x20;
        std::fs::write(&newest, bytes).expect("damage");
        let claim = claimed_seq(dir).expect("a claim");
        assert!(speculate(dir, Depth::Newest, &dir.join(crate::log::DIR), claim).is_none());
        let got =
            recover(dir, Depth::Newest, Replay::Records).expect("recovers from the older image");
        assert_eq!(got.image.as_ref().map(|i| i.path.clone()), Some(older));
        assert_eq!(got.replayed, 5);
        assert_eq!(summary(&got), summary(&one_step_at_a_time(dir)));
    }

    #[test]
    fn a_log_that_does_not_reach_the_image_is_refused_as_before() {
        let (d, _, _) = busy_dir();
        let dir = d.dir.path();
        // The log as if records 1 to 4 were deleted: the image holds 3, so 4 is missing.
        let log = dir.join(crate::log::DIR);
        let lines: Vec<&[u8]> = d.log.split_inclusive(|&b| b == b'\n').collect();
        std::fs::remove_file(log.join(crate::log::segment_name(1))).expect("remove");
        std::fs::write(log.join(crate::log::segment_name(5)), lines[4..].concat()).expect("write");
        let claim = claimed_seq(dir).expect("a claim");
        assert!(speculate(dir, Depth::Newest, &log, claim).is_none());
        let err = recover(dir, Depth::Newest, Replay::Records).expect_err("refused");
        assert!(
            err.to_string().contains("record 5 follows record 3"),
            "{err}"
        );
    }
    /// A standalone start on a cluster node's data dir used to be silent in the worst way:
    /// the first guess skipped every record (a Raft record has no seq above the image's), so
    /// the server would have started from the slot checkpoint alone. It refuses, saying what
    /// the data dir is; `inspect`'s check mode lists the same log without refusing.
    #[test]
    fn a_standalone_start_refuses_a_cluster_nodes_raft_log() {
        let (d, _, _) = busy_dir();
        let dir = d.dir.path();
        let log = dir.join(crate::log::DIR);
        std::fs::remove_file(log.join(crate::log::segment_name(1))).expect("remove");
        let writes = serde_json::value::RawValue::from_string("[]".into()).unwrap();
        let mut raft = Vec::new();
        record::encode_raft(&mut raft, 0, 0, 0, record::RaftBody::Blank);
        for i in 1..=3 {
            let body = record::RaftBody::Normal {
                now: 7,
                writes: &writes,
            };
            record::encode_raft(&mut raft, i, 1, 1, body);
        }
        let segment = log.join(crate::log::segment_name(0));
        std::fs::write(&segment, &raft).expect("write");
        let err = recover(dir, Depth::Newest, Replay::Records).expect_err("refused");
        assert!(matches!(&err, RecoveryError::ClusterLog { path } if *path == segment));
        assert!(
            err.to_string().contains(
                "this data dir holds a cluster node's Raft log ("
                    .to_string()
                    .as_str()
            ) && err
                .to_string()
                .contains("start it with --node-id and --raft-addr"),
            "{err}"
        );
        let checked = recover_scan(
            Scan::dir(dir, Depth::Newest).expect("scan"),
            Some(&log),
            Replay::Check,
        )
        .expect("checked, not replayed");
        assert_eq!((checked.raft_records, checked.replayed), (4, 0));
        assert_eq!(checked.seq, 4, "the slot image's seq");
        let skipped = recover(dir, Depth::Newest, Replay::Skip).expect("not read");
        assert!(skipped.log.segments.is_empty());
    }
}
