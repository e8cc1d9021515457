//! The write-ahead log: segment files of JSON lines in `data/log/`, one record per drained
//! batch, appended by the writer before it applies the batch.
//!
//! Data enters through [`Log`], the store's [`Journal`]: each record is encoded
//! (`record.rs`), written in one system call, and in `sync` flushed (`fdatasync`) before the
//! writer publishes or replies. In `async` a flusher thread flushes at least every
//! `--fsync-interval-ms`. Either way "durable up to seq N" leaves on a [`MarkSender`], which
//! `/snapshot`, `/metrics` and `/health` read. Segments are named by their first index
//! (`<20 digits>.jsonl`), roll once they reach [`SEGMENT_BYTES`], and are never written again
//! once closed; the snapshot thread deletes those that both slots have covered
//! ([`Compactor`]). `scan.rs` reads them back, for recovery and `inspect`.
//!
//! A cluster node's segments are openraft's log storage instead, written by
//! `cluster/log_store.rs` with Raft records (`record.rs`); the engine opens no [`Log`] there.

pub mod file;
pub mod record;
pub mod scan;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use file::{SegmentFile, Storage};

use crate::metrics::Metrics;
use crate::store::{marks, Appended, Faults, Journal, Logged, MarkSender, MarkWatch, SharedError};

/// A segment is closed and a new one started once it holds this many bytes: small enough that
/// a checkpoint frees space in steps, large enough that rolling (a flush, a new file and a
/// directory sync) is rare.
pub const SEGMENT_BYTES: u64 = crate::defaults::LOG_SEGMENT_BYTES;

/// The name of the log's folder inside the data dir.
pub const DIR: &str = "log";

/// The file name of the segment whose first record is `index`.
pub fn segment_name(index: u64) -> String {
    format!("{index:020}.jsonl")
}

/// The first index a segment file name stands for, if it is one.
pub fn segment_index(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".jsonl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Why the log could not take a record.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Writing or flushing a segment failed; the record was cut back out of it.
    #[error("cannot write the log segment {path}")]
    Write {
        /// The segment.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A failed write could not be cut back; no further record is accepted until a restart
    /// (which cuts the torn tail).
    #[error("the log segment {path} could not be repaired after a failed write")]
    Poisoned {
        /// The segment.
        path: PathBuf,
        /// Why the cut failed.
        #[source]
        source: std::io::Error,
    },
    /// A new segment could not be started.
    #[error("cannot start the log segment {path}")]
    Roll {
        /// The new segment.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The flusher thread could not be started.
    #[error("cannot start the log flusher thread")]
    Spawn(#[source] std::io::Error),
}

/// How the log is run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The log's folder (`data/log`).
    pub dir: PathBuf,
    /// Roll segments at this size.
    pub segment_bytes: u64,
    /// In `async`, flush at least this often; `None` in `sync`, where the writer flushes.
    pub fsync_interval: Option<Duration>,
}

/// Where the log stands at start, as recovery left it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Start {
    /// The first index of the segment to append to, if one exists (else a new one starts).
    pub segment: Option<u64>,
    /// Its length after recovery (a torn tail already cut).
    pub segment_len: u64,
    /// The index the next record gets.
    pub next_index: u64,
    /// The seq after the last record (or of the snapshot, without records).
    pub seq: u64,
}

/// The segment being appended to, shared with the flusher.
#[derive(Debug, Clone)]
struct Tail {
    /// The open file.
    file: Arc<dyn SegmentFile>,
    /// The seq after the last record written to it.
    seq: u64,
}

/// Figures the log keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Flushes since start.
    pub fsyncs: AtomicU64,
    /// Bytes appended since start.
    pub bytes: AtomicU64,
}

/// The writer's end of the log.
#[derive(Debug)]
pub struct Log {
    options: Options,
    storage: Arc<dyn Storage>,
    /// The segment being appended to: its path, first index and length.
    path: PathBuf,
    len: u64,
    next_index: u64,
    /// Shared with the flusher: what it flushes, and the seq that flush makes durable.
    tail: Arc<Mutex<Tail>>,
    /// Scratch for encoding one record.
    buf: Vec<u8>,
    /// Set when a failed write could not be cut back.
    poisoned: Option<Arc<LogError>>,
    /// "Durable up to seq N" and the last failure.
    marks: Arc<MarkSender>,
    stats: Arc<LogStats>,
    metrics: Arc<Metrics>,
    /// Dropped with the log, which tells the flusher to do its last flush and stop.
    _stop: Option<mpsc::Sender<()>>,
}

/// The flusher thread and what the rest of the server reads of the log.
#[derive(Debug)]
pub struct LogHandle {
    /// "Every write up to seq N survives power loss", and the last write or flush failure.
    pub marks: MarkWatch,
    /// Flushes and bytes.
    pub stats: Arc<LogStats>,
    flusher: Option<JoinHandle<Option<()>>>,
}

impl LogHandle {
    /// The handle of a log this process does not write: a cluster node's `data/log` is
    /// openraft's log storage (`cluster/log_store.rs`), so the engine opens no [`Log`] there
    /// (one would start a segment of its own beside the Raft ones). Durable starts at `seq`;
    /// the returned sender moves it (in `sync`, the cluster's state machine: a node applies only
    /// entries its own log has flushed).
    pub fn idle(seq: u64) -> (LogHandle, MarkSender) {
        let (tx, rx) = marks(seq);
        let handle = LogHandle {
            marks: rx,
            stats: Arc::default(),
            flusher: None,
        };
        (handle, tx)
    }

    /// Waits for the flusher, which ends once the [`Log`] is dropped (after a last flush).
    pub fn join(mut self) {
        if let Some(j) = self.flusher.take() {
            let _ = j.join();
        }
    }
}

impl Log {
    /// Opens the log for appending where recovery left it, starting the flusher in `async`.
    pub fn open(
        options: Options,
        storage: Arc<dyn Storage>,
        start: Start,
        metrics: Arc<Metrics>,
        faults: &Faults,
    ) -> Result<(Log, LogHandle), LogError> {
        let (path, file, len) = match start.segment {
            Some(first) => {
                let path = options.dir.join(segment_name(first));
                let file = storage.open(&path).map_err(|source| LogError::Roll {
                    path: path.clone(),
                    source,
                })?;
                (path, file, start.segment_len)
            }
            None => {
                let path = options.dir.join(segment_name(start.next_index));
                let file = storage.create(&path).map_err(|source| LogError::Roll {
                    path: path.clone(),
                    source,
                })?;
                (path, file, 0)
            }
        };
        let (tx, rx) = marks(start.seq);
        let marks = Arc::new(tx);
        let tail = Arc::new(Mutex::new(Tail {
            file,
            seq: start.seq,
        }));
        let stats = Arc::new(LogStats::default());
        let (stop, flusher) = match options.fsync_interval {
            Some(every) => {
                let (stop_tx, stop_rx) = mpsc::channel::<()>();
                let flusher = Flusher {
                    tail: Arc::clone(&tail),
                    marks: Arc::clone(&marks),
                    stats: Arc::clone(&stats),
                    metrics: Arc::clone(&metrics),
                    flushed: start.seq,
                    path: path.clone(),
                };
                let join = faults
                    .spawn("twinkv-log-flush", move || flusher.run(stop_rx, every))
                    .map_err(LogError::Spawn)?;
                (Some(stop_tx), Some(join))
            }
            None => (None, None),
        };
        Ok((
            Log {
                options,
                storage,
                path,
                len,
                next_index: start.next_index,
                tail,
                buf: Vec::with_capacity(64 * 1024),
                poisoned: None,
                marks,
                stats: Arc::clone(&stats),
                metrics,
                _stop: stop,
            },
            LogHandle {
                marks: rx,
                stats,
                flusher,
            },
        ))
    }

    /// Closes the full segment (flushed first, so it is never written again) and starts the
    /// next one, named by the index of its first record.
    fn roll(&mut self) -> Result<(), LogError> {
        let old = self.tail.lock().expect("tail lock").file.clone();
        let started = Instant::now();
        old.sync().map_err(|source| LogError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.flushed(started);
        let path = self.options.dir.join(segment_name(self.next_index));
        let file = self
            .storage
            .create(&path)
            .map_err(|source| LogError::Roll {
                path: path.clone(),
                source,
            })?;
        let seq = {
            let mut tail = self.tail.lock().expect("tail lock");
            tail.file = file;
            tail.seq
        };
        // Everything in the closed segment is durable now.
        self.marks.durable(seq);
        self.path = path;
        self.len = 0;
        Ok(())
    }

    fn flushed(&self, started: Instant) {
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.metrics.record_fsync(started.elapsed());
    }

    fn write(
        &mut self,
        seq: u64,
        now: u64,
        writes: &[Logged],
        flush: bool,
    ) -> Result<Appended, LogError> {
        if self.len > 0 && self.len >= self.options.segment_bytes {
            self.roll()?;
        }
        self.buf.clear();
        let index = self.next_index;
        let n = record::encode(&mut self.buf, index, seq, now, writes) as u64;
        let file = self.tail.lock().expect("tail lock").file.clone();
        let mut result = file.append(&self.buf);
        if result.is_ok() && flush {
            let started = Instant::now();
            result = file.sync();
            if result.is_ok() {
                self.flushed(started);
            }
        }
        if let Err(source) = result {
            // Cut the record back out, so the log holds nothing of a refused batch and the
            // next record follows the last good one.
            if let Err(cut) = file.truncate(self.len) {
                let e = LogError::Poisoned {
                    path: self.path.clone(),
                    source: cut,
                };
                tracing::error!(error = %crate::Chain(&e), cause = %source, "log write failed");
                return Err(e);
            }
            return Err(LogError::Write {
                path: self.path.clone(),
                source,
            });
        }
        self.len += n;
        self.next_index += 1;
        self.stats.bytes.fetch_add(n, Ordering::Relaxed);
        self.tail.lock().expect("tail lock").seq = seq;
        if flush {
            self.marks.durable(seq);
        }
        Ok(Appended { index, bytes: n })
    }
}

impl Journal for Log {
    fn append(
        &mut self,
        seq: u64,
        now: u64,
        writes: &[Logged],
        flush: bool,
    ) -> Result<Appended, SharedError> {
        if let Some(p) = &self.poisoned {
            return Err(Arc::clone(p) as SharedError);
        }
        match self.write(seq, now, writes, flush) {
            Ok(a) => Ok(a),
            Err(e) => {
                let e = Arc::new(e);
                if matches!(*e, LogError::Poisoned { .. }) {
                    self.poisoned = Some(Arc::clone(&e));
                }
                self.marks.failed(Arc::clone(&e) as SharedError);
                Err(e)
            }
        }
    }
}

impl Drop for Log {
    /// The writer has stopped: flush what it wrote, so a clean shutdown loses nothing.
    fn drop(&mut self) {
        let (file, seq) = {
            let tail = self.tail.lock().expect("tail lock");
            (tail.file.clone(), tail.seq)
        };
        match file.sync() {
            Ok(()) => self.marks.durable(seq),
            Err(source) => {
                let e = LogError::Write {
                    path: self.path.clone(),
                    source,
                };
                tracing::error!(error = %crate::Chain(&e), "the last log flush failed");
                self.marks.failed(Arc::new(e));
            }
        }
    }
}

/// The `async` flusher: flushes the tail segment every interval while anything is unflushed.
struct Flusher {
    tail: Arc<Mutex<Tail>>,
    marks: Arc<MarkSender>,
    stats: Arc<LogStats>,
    metrics: Arc<Metrics>,
    /// The seq the last successful flush made durable.
    flushed: u64,
    /// For messages only: the segment first flushed (the tail moves on as segments roll).
    path: PathBuf,
}

impl Flusher {
    fn run(mut self, stop: mpsc::Receiver<()>, every: Duration) {
        loop {
            match stop.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => {}
                // The log is gone: it flushed for the last time itself.
                _ => return,
            }
            let (file, seq) = {
                let tail = self.tail.lock().expect("tail lock");
                (tail.file.clone(), tail.seq)
            };
            if seq <= self.flushed {
                continue;
            }
            let started = Instant::now();
            match file.sync() {
                Ok(()) => {
                    self.flushed = seq;
                    self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                    self.metrics.record_fsync(started.elapsed());
                    self.marks.durable(seq);
                }
                Err(source) => {
                    let e = LogError::Write {
                        path: self.path.clone(),
                        source,
                    };
                    tracing::error!(error = %crate::Chain(&e), "log flush failed");
                    self.marks.failed(Arc::new(e));
                }
            }
        }
    }
}

/// Deletes segments the snapshots no longer need; given to the snapshot thread.
#[derive(Debug, Clone)]
pub struct Compactor {
    /// The log's folder.
    pub dir: PathBuf,
}

impl Compactor {
    /// Deletes every segment all of whose records are at or below `index`, except the last
    /// segment (the one being appended to). Returns how many were deleted.
    pub fn delete_through(&self, index: u64) -> std::io::Result<usize> {
        let mut firsts = list(&self.dir)?;
        firsts.sort_unstable();
        let mut deleted = 0;
        for pair in firsts.windows(2) {
            let (first, next) = (pair[0], pair[1]);
            // This segment holds `first..next`; all of it is covered when `next - 1 <= index`.
            if next <= index.saturating_add(1) {
                let path = self.dir.join(segment_name(first));
                std::fs::remove_file(&path)?;
                tracing::debug!(path = %path.display(), "deleted a log segment both snapshots cover");
                deleted += 1;
            }
        }
        if deleted > 0 {
            file::sync_dir(&self.dir.join("x"))?;
        }
        Ok(deleted)
    }
}

/// The first indexes of the segments in `dir`.
pub fn list(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(i) = entry.file_name().to_str().and_then(segment_index) {
            out.push(i);
        }
    }
    Ok(out)
}

/// The bytes of every segment in `dir` (0 when it cannot be read: only an estimate).
pub fn bytes(dir: &Path) -> u64 {
    list(dir).map_or(0, |firsts| {
        firsts
            .into_iter()
            .filter_map(|i| std::fs::metadata(dir.join(segment_name(i))).ok())
            .map(|m| m.len())
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::mpsc::sync_channel;

    use proptest::prelude::*;

    use super::file::SimDisk;
    use super::*;
    use crate::store::{
        Apply, Downstream, Durability, Entries, Initial, PendingValue, Store, Write,
    };

    fn options(dir: &Path, segment_bytes: u64) -> Options {
        Options {
            dir: dir.to_path_buf(),
            segment_bytes,
            fsync_interval: None,
        }
    }

    fn new_log(dir: &Path, storage: Arc<dyn Storage>, segment_bytes: u64) -> Log {
        let start = Start {
            next_index: 1,
            ..Start::default()
        };
        let metrics = Arc::new(Metrics::default());
        let (log, _handle) = Log::open(
            options(dir, segment_bytes),
            storage,
            start,
            metrics,
            &Faults::default(),
        )
        .expect("open the log");
        log
    }

    /// One batch of the power-loss model: puts (key, value) and deletes, by key number.
    #[derive(Debug, Clone)]
    enum Step {
        Put(u8, u16),
        Delete(u8),
    }

    fn steps() -> impl Strategy<Value = Vec<Vec<Step>>> {
        let step = prop_oneof![
            3 => (0u8..6, any::<u16>()).prop_map(|(k, v)| Step::Put(k, v)),
            1 => (0u8..6).prop_map(Step::Delete),
        ];
        prop::collection::vec(prop::collection::vec(step, 1..4), 1..25)
    }

    fn values(e: &Entries) -> BTreeMap<String, (Vec<u8>, u64)> {
        e.iter()
            .map(|e| (e.key().to_string(), (e.json().to_vec(), e.version())))
            .collect()
    }

    /// Appends the batches through a [`Log`] on a simulated disk, flushing after each batch in
    /// `sync` and at random points in `async`, then "loses power": every file keeps what was
    /// flushed plus a random part of what was not. Recovery through the real scan must give
    /// exactly the state after some prefix of the batches: in `sync` all of them; in `async`
    /// at least every batch before the last flush. Never a mix, never a gap.
    fn power_loss(batches: Vec<Vec<Step>>, sync: bool, flushes: Vec<bool>, tears: Vec<u16>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = SimDisk::default();
        let mut log = new_log(dir.path(), Arc::new(disk.clone()), 200);
        let mut state = Entries::new();
        let mut seq = 0;
        let mut states = vec![(values(&state), 0)];
        let mut flushed_batches = 0;
        for (n, batch) in batches.into_iter().enumerate() {
            let replica = &state;
            let mut apply = Apply::new(|k: &str| replica.get(k.as_bytes()).cloned(), seq, 0);
            for step in batch {
                let _ = match step {
                    Step::Put(k, v) => apply.apply(Write::Put {
                        key: Arc::from(format!("k{k}")),
                        value: PendingValue::from_json(&serde_json::json!(v)),
                        cond: Default::default(),
                        expires: Default::default(),
                    }),
                    Step::Delete(k) => apply.apply(Write::Delete {
                        key: Arc::from(format!("k{k}")),
                        cond: Default::default(),
                    }),
                };
            }
            if apply.ops.is_empty() {
                continue;
            }
            log.append(apply.seq, 0, &apply.logged, sync)
                .expect("the simulated disk takes every record");
            let Apply { ops, seq: s, .. } = apply;
            for op in ops {
                op.apply_owned(&mut state);
            }
            seq = s;
            states.push((values(&state), seq));
            if sync {
                // `append` flushed it: that is what the test checks.
                flushed_batches = states.len() - 1;
            } else if flushes.get(n).copied().unwrap_or(false) {
                // What the flusher thread does every interval.
                let file = log.tail.lock().unwrap().file.clone();
                file.sync().unwrap();
                flushed_batches = states.len() - 1;
            }
        }
        let mut tears = tears.into_iter().cycle();
        let files = disk.crash(|len| {
            let t = tears.next().unwrap_or(0) as usize;
            if len == 0 {
                0
            } else {
                t % (len + 1)
            }
        });
        drop(log);
        // The log is dropped after the crash was taken: its last flush never happened.
        let crashed = tempfile::tempdir().expect("temp dir");
        let log_dir = crashed.path().join(DIR);
        std::fs::create_dir_all(&log_dir).unwrap();
        for (path, bytes) in files {
            std::fs::write(log_dir.join(path.file_name().unwrap()), bytes).unwrap();
        }
        // Replay what survived, as recovery does (without a snapshot).
        let mut replayed = Entries::new();
        let mut replayed_seq = 0;
        let report = scan::scan(&log_dir, 0, |rec, _| {
            let replica = &replayed;
            let mut apply = Apply::new(
                |k: &str| replica.get(k.as_bytes()).cloned(),
                replayed_seq,
                rec.now,
            );
            for w in rec.writes {
                apply.apply(w).map_err(|e| e.to_string())?;
            }
            assert_eq!(apply.seq, rec.seq, "replay reaches the record's seq");
            let Apply { ops, seq, .. } = apply;
            for op in ops {
                op.apply_owned(&mut replayed);
            }
            replayed_seq = seq;
            Ok(())
        });
        assert!(
            report.damage.is_none(),
            "a power loss never damages the log beyond a torn tail: {:?}",
            report.damage
        );
        let got = (values(&replayed), replayed_seq);
        let at = states
            .iter()
            .position(|s| *s == got)
            .unwrap_or_else(|| panic!("recovered a state no prefix of the batches gives"));
        if sync {
            assert_eq!(at, states.len() - 1, "sync lost an answered batch");
        } else {
            assert!(at >= flushed_batches, "async lost a flushed batch");
        }
        assert_eq!(
            report.last.map_or(0, |(i, _)| i) as usize,
            at,
            "records and state disagree"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn power_loss_in_sync_loses_nothing_answered(
            batches in steps(),
            tears in prop::collection::vec(any::<u16>(), 1..8),
        ) {
            power_loss(batches, true, Vec::new(), tears);
        }

        #[test]
        fn power_loss_in_async_loses_at_most_the_unflushed_tail(
            batches in steps(),
            flushes in prop::collection::vec(any::<bool>(), 0..25),
            tears in prop::collection::vec(any::<u16>(), 1..8),
        ) {
            power_loss(batches, false, flushes, tears);
        }
    }

    /// What a test disk runs before each flush: it may wait, or fail the flush.
    type SyncHook = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

    /// A simulated disk whose every flush first runs the test's hook.
    struct Hooked {
        inner: SimDisk,
        hook: SyncHook,
    }

    struct HookedFile {
        inner: Arc<dyn SegmentFile>,
        hook: SyncHook,
    }

    impl std::fmt::Debug for Hooked {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Hooked").finish_non_exhaustive()
        }
    }

    impl std::fmt::Debug for HookedFile {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("HookedFile").finish_non_exhaustive()
        }
    }

    impl SegmentFile for HookedFile {
        fn append(&self, buf: &[u8]) -> std::io::Result<()> {
            self.inner.append(buf)
        }
        fn sync(&self) -> std::io::Result<()> {
            (self.hook)()?;
            self.inner.sync()
        }
        fn truncate(&self, len: u64) -> std::io::Result<()> {
            self.inner.truncate(len)
        }
    }

    impl Storage for Hooked {
        fn create(&self, path: &Path) -> std::io::Result<Arc<dyn SegmentFile>> {
            Ok(Arc::new(HookedFile {
                inner: self.inner.create(path)?,
                hook: Arc::clone(&self.hook),
            }))
        }
        fn open(&self, path: &Path) -> std::io::Result<Arc<dyn SegmentFile>> {
            self.inner.open(path)
        }
    }

    /// In `sync` the flush comes before the publish and the reply: while the flush of a write's
    /// record is held, the write stays unanswered and invisible to readers.
    #[test]
    fn a_sync_write_is_neither_answered_nor_visible_before_its_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (entered_tx, entered) = sync_channel(1);
        let (release, release_rx) = sync_channel(1);
        // Each flush says it has begun, then waits for the test's word.
        let release_rx = Mutex::new(release_rx);
        let disk = Hooked {
            inner: SimDisk::default(),
            hook: Arc::new(move || {
                let _ = entered_tx.send(());
                let _ = release_rx.lock().unwrap().recv();
                Ok(())
            }),
        };
        let log = new_log(dir.path(), Arc::new(disk), 1 << 20);
        let downstream = Downstream {
            journal: Some(Box::new(log)),
            ..Downstream::default()
        };
        let store = Store::start(Initial::default(), Durability::Sync, downstream).unwrap();
        let reader = store.readers().reader();
        let mut reply = store
            .handle()
            .put_nowait(Arc::from("k"), PendingValue::from_text("v"))
            .unwrap();
        entered.recv().expect("the writer reached the flush");
        // The flush is held: nothing may be answered or visible yet.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(matches!(
            reply.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        ));
        assert!(reader.get("k").is_none(), "visible before its flush");
        release.send(()).unwrap();
        let written = reply.blocking_recv().unwrap().unwrap();
        assert_eq!(written.seq, 1);
        assert_eq!(reader.get("k").map(|e| e.version()), Some(1));
        // Let the shutdown's last flush through too.
        let _ = release.try_send(());
        std::thread::spawn(move || {
            while entered.recv().is_ok() {
                let _ = release.send(());
            }
        });
        store.shutdown();
    }

    /// In `async` the flusher's failure is not silent: it is reported where `/health` and the
    /// durable seq are read, the seq it could not flush is not called durable, and the next
    /// good flush clears it.
    #[test]
    fn a_failed_background_flush_is_reported_and_the_next_good_one_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let refuse = Arc::clone(&failing);
        let disk = Hooked {
            inner: SimDisk::default(),
            hook: Arc::new(move || {
                if refuse.load(Ordering::Relaxed) {
                    return Err(std::io::Error::other("injected: the disk refuses to flush"));
                }
                Ok(())
            }),
        };
        let options = Options {
            fsync_interval: Some(Duration::from_millis(10)),
            ..options(dir.path(), 1 << 20)
        };
        let start = Start {
            next_index: 1,
            ..Start::default()
        };
        let (mut log, handle) = Log::open(
            options,
            Arc::new(disk),
            start,
            Arc::new(Metrics::default()),
            &Faults::default(),
        )
        .unwrap();
        let state = Entries::new();
        let mut apply = Apply::new(|k: &str| state.get(k.as_bytes()).cloned(), 0, 7);
        apply
            .apply(Write::Put {
                key: Arc::from("k"),
                value: PendingValue::from_text("v"),
                cond: Default::default(),
                expires: Default::default(),
            })
            .unwrap();
        // Written, not flushed: the append itself succeeds in `async`.
        log.append(apply.seq, 7, &apply.logged, false).unwrap();
        let within = |what: &str, done: &dyn Fn(&crate::store::seam::Mark) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !done(&handle.marks.current()) {
                assert!(Instant::now() < deadline, "timed out waiting until {what}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        within("the failed flush is reported", &|m| m.failure.is_some());
        let mark = handle.marks.current();
        assert_eq!(mark.seq, 0, "a seq whose flush failed is not durable");
        let error = crate::Chain(&*mark.failure.unwrap().error).to_string();
        assert!(error.contains("refuses to flush"), "{error}");
        failing.store(false, Ordering::Relaxed);
        within("the next flush makes the write durable", &|m| m.seq >= 1);
        assert!(handle.marks.current().failure.is_none());
        drop(log);
        handle.join();
    }
}
