//! Snapshots: a background thread that writes the whole map as one JSON document into one of
//! two memory-mapped slot files, and the recovery that reads them back.
//!
//! Data enters through [`Feed`], the [`Sink`] the writer is given: every published batch, and
//! requests to checkpoint. It leaves as files on disk, as "durable up to seq N" on a
//! [`MarkSender`](crate::store::MarkSender) (which `POST /snapshot` waits on), and as a
//! [`SnapshotStatus`] for `/snapshot`, `/health` and `/metrics`. `format` owns the document,
//! `slot` the mapped file, `worker` the thread, `recover` the choice of image at start and in
//! `inspect`. This module depends on the store; the store names nothing here.

pub mod format;
mod idle;
pub mod recover;
pub mod slot;
mod worker;
pub(crate) use worker::{inject_crash_at_second_checkpoint, now_rfc3339, CrashPoint};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::store::{marks, Entries, Faults, MarkWatch, Published, Sink};

/// Why a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Writing, growing or flushing a slot file failed; the other slot is intact.
    #[error("cannot write the snapshot {path}")]
    Write {
        /// The slot file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An unfinished slot file left by a crash cannot be removed.
    #[error("cannot remove the unfinished slot file {path}")]
    Cleanup {
        /// The temporary file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The thread could not be started.
    #[error("cannot start the snapshot thread")]
    Spawn(#[source] io::Error),
    /// The thread died (a panic) before it could write the final image.
    #[error("the snapshot thread died; the final snapshot was not written")]
    Died,
    /// The final image at shutdown failed.
    #[error("the final snapshot failed")]
    Final(#[source] Arc<SnapshotError>),
}

/// What the snapshot thread last did, as `GET /snapshot` and `/metrics` report it.
#[derive(Debug, Clone, Default)]
pub struct SnapshotStatus {
    /// Seq held by the newest flushed image.
    pub seq: u64,
    /// The last log record that image holds.
    pub log_index: u64,
    /// That image's slot file; `None` before any snapshot exists.
    pub file: Option<PathBuf>,
    /// The image's length in bytes.
    pub bytes: u64,
    /// The slot file's length (its mapped capacity).
    pub capacity: u64,
    /// Keys in the image.
    pub keys: u64,
    /// How long the last successful snapshot took.
    pub last_duration: Duration,
    /// When the image was written (RFC 3339); `None` before any snapshot exists.
    pub written_at: Option<String>,
    /// Failed attempts since start.
    pub failures: u64,
    /// Successful snapshots since start.
    pub written: u64,
    /// Why the last attempt failed; `None` once one succeeds. Makes `/health` degraded.
    pub last_error: Option<Arc<SnapshotError>>,
    /// Cluster mode: the Raft state the image records (its `raft` field).
    pub tag: Option<Arc<str>>,
}

/// A message from the writer (through [`Feed`]) to the snapshot thread.
#[derive(Debug)]
enum Msg {
    /// One published batch.
    Published(Published),
    /// Write an image holding everything up to this seq soon.
    Checkpoint(u64),
}

/// The writer's end of the snapshot thread's inbox.
#[derive(Debug)]
pub struct Feed(Sender<Msg>);

impl Sink for Feed {
    fn published(&mut self, batch: &Published) {
        // A thread that is gone is reported by `Faults` and by its `MarkSender` closing.
        let _ = self.0.send(Msg::Published(batch.clone()));
    }

    fn checkpoint(&mut self, seq: u64) {
        let _ = self.0.send(Msg::Checkpoint(seq));
    }
}

/// What the thread calls after each image with the older image's log index: deletes the log
/// segments wholly at or below it; returns how many.
pub type Compact = Box<dyn FnMut(u64) -> io::Result<usize> + Send>;

/// When the thread writes an image, and what it may delete afterwards.
pub struct Policy {
    /// Write an image once the log since the newest one holds this many bytes and at least
    /// as many as that image.
    pub checkpoint_log_bytes: u64,
    /// Deletes the log segments wholly at or below a record index (both slots cover them).
    pub compact: Compact,
    /// How an image shares the CPU with requests.
    pub priority: Priority,
}

/// How the snapshot thread encodes an image (the final one at shutdown is always `Normal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// On a thread of its own at `SCHED_IDLE`, so it takes only CPU no request wants; given up
    /// and written again at normal priority when it has not finished within a patience derived
    /// from the image's size (at least 10 s), or within this one when set.
    Idle(Option<Duration>),
    /// On the snapshot thread, sharing the CPU fairly.
    Normal,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("checkpoint_log_bytes", &self.checkpoint_log_bytes)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

/// The snapshot recovery starts from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The slot file.
    pub path: PathBuf,
    /// Its length on disk.
    pub capacity: u64,
    /// Its seq.
    pub seq: u64,
    /// The last log record it holds.
    pub log_index: u64,
    /// The document's length.
    pub bytes: u64,
    /// Keys in the image.
    pub keys: u64,
    /// When it was written.
    pub written_at: String,
    /// Cluster mode: the Raft state it records.
    pub tag: Option<Arc<str>>,
}

/// Where the thread starts: the image recovery loaded (if any) and the replica's position.
#[derive(Debug, Clone)]
pub struct Start {
    /// The slot file holding the newest image, with its length on disk, image length, seq,
    /// log index and time.
    pub image: Option<Loaded>,
    /// Where the replica (the recovered map) stands: the image plus the log replayed.
    pub at: format::Position,
    /// Log bytes after the image (what replay read): counts toward the next checkpoint.
    pub log_bytes: u64,
}

/// The running snapshot thread.
#[derive(Debug)]
pub struct Snapshotter {
    /// Ends once the writer drops the [`Feed`] and the final image is written.
    join: JoinHandle<Option<Result<(), SnapshotError>>>,
    /// The thread's latest report, replaced whole after every attempt.
    pub status: Arc<ArcSwap<SnapshotStatus>>,
    /// "Every write up to N is in a flushed image": what `POST /snapshot` waits on.
    pub marks: MarkWatch,
    /// Log bytes written since the newest image.
    pub log_bytes: Arc<AtomicU64>,
    /// Set by [`Snapshotter::abandon`]: the thread writes no more images.
    abandoned: Arc<AtomicBool>,
    /// Set by [`Snapshotter::hurry`]: no more waiting for spare CPU.
    hurry: Arc<AtomicBool>,
}

impl Snapshotter {
    /// Starts the thread with a replica of `entries` (which shares every key and value).
    ///
    /// Returns the [`Feed`] the writer is given. Leftover temporary slot files, which never
    /// held a complete image, are removed first.
    pub fn start(
        dir: &Path,
        entries: &Entries,
        start: Start,
        policy: Policy,
        faults: &Faults,
    ) -> Result<(Feed, Snapshotter), SnapshotError> {
        let paths = recover::SLOT_NAMES.map(|n| dir.join(n));
        for p in &paths {
            let tmp = slot::temp_path(p);
            if tmp.exists() {
                tracing::info!(path = %tmp.display(), "removing an unfinished slot file");
                std::fs::remove_file(&tmp)
                    .map_err(|source| SnapshotError::Cleanup { path: tmp, source })?;
            }
        }
        let image = start.image.as_ref();
        // Overwrite the slot that does not hold the recovered image.
        let next = match image {
            Some(r) if r.path == paths[0] => 1,
            _ => 0,
        };
        let status = Arc::new(ArcSwap::from_pointee(match image {
            Some(r) => SnapshotStatus {
                seq: r.seq,
                log_index: r.log_index,
                file: Some(r.path.clone()),
                bytes: r.bytes,
                capacity: r.capacity,
                keys: r.keys,
                written_at: Some(r.written_at.clone()),
                tag: r.tag.clone(),
                ..SnapshotStatus::default()
            },
            None => SnapshotStatus::default(),
        }));
        let image_seq = image.map_or(0, |r| r.seq);
        let (mark_tx, mark_rx) = marks(image_seq);
        let log_bytes = Arc::new(AtomicU64::new(start.log_bytes));
        let abandoned = Arc::new(AtomicBool::new(false));
        let hurry = Arc::new(AtomicBool::new(false));
        let worker = worker::Worker {
            paths,
            slots: [None, None],
            next,
            replica: entries.clone(),
            applied: start.at,
            durable: image_seq,
            newest_index: image.map(|r| r.log_index),
            image_bytes: image.map_or(0, |r| r.bytes),
            wanted: image_seq,
            applied_tag: image.and_then(|r| r.tag.clone()),
            durable_tag: image.and_then(|r| r.tag.clone()),
            wanted_tag: false,
            policy,
            status: Arc::clone(&status),
            marks: mark_tx,
            log_bytes: Arc::clone(&log_bytes),
            retry_at: None,
            abandoned: Arc::clone(&abandoned),
            hurry: Arc::clone(&hurry),
        };
        let (tx, rx) = mpsc::channel();
        let join = faults
            .spawn("twinkv-snapshot", move || worker.run(rx))
            .map_err(SnapshotError::Spawn)?;
        Ok((
            Feed(tx),
            Snapshotter {
                join,
                status,
                marks: mark_rx,
                log_bytes,
                abandoned,
                hurry,
            },
        ))
    }

    /// From now on the thread starts no image, neither a checkpoint nor the final one once its
    /// feed is dropped (an image already being written is finished), so the data dir is left
    /// as a crash would leave it (for `Engine::crash`, which tests use). Call it before the
    /// writer stops.
    pub fn abandon(&self) {
        // Relaxed: the writer's shutdown, which follows, reaches the thread through its
        // channel, which orders this store before the thread sees the feed dropped.
        self.abandoned.store(true, Ordering::Relaxed);
    }

    /// The server is stopping: a checkpoint waiting at idle priority for spare CPU is given up
    /// and written at normal priority at once, as the final image is, so a stop never waits
    /// out the patience on a busy machine.
    pub fn hurry(&self) {
        self.hurry.store(true, Ordering::Relaxed);
    }

    /// Waits for the thread, which ends once its feed is dropped and the final image written.
    pub fn join(self) -> Result<(), SnapshotError> {
        match self.join.join() {
            Ok(Some(result)) => result,
            Ok(None) | Err(_) => Err(SnapshotError::Died),
        }
    }
}

/// Makes the snapshot thread panic at its next attempt (`TWINKV_TEST_FAULT=snapshot-panic`).
pub(crate) fn inject_panic_at_next_attempt() {
    worker::PANIC_AT_NEXT_ATTEMPT.store(true, std::sync::atomic::Ordering::Relaxed);
}
