//! Snapshots: a background thread that writes the whole map as one JSON document into one of
//! two memory-mapped slot files, and the recovery that reads them back.
//!
//! Data enters as [`SnapMsg`]s from the writer thread (the ops of each published batch, plus
//! `sync` replies to send once durable) and leaves as files on disk and a [`SnapshotStatus`]
//! published through [`Metrics`](crate::metrics::Metrics). `format` owns the document, `slot` the
//! mapped file, `worker` the thread, `recover` the choice of image at start and in `inspect`.

pub mod format;
pub mod recover;
pub mod slot;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::store::{Entries, Op, WriteError, Written};

/// What the snapshot thread last did, as `GET /snapshot` and `/metrics` report it.
#[derive(Debug, Clone, Default)]
pub struct SnapshotStatus {
    /// Seq held by the newest flushed image.
    pub durable_seq: u64,
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
    pub last_error: Option<String>,
}

/// A `sync` write's reply, held until an image with its seq is flushed.
#[derive(Debug)]
pub struct Waiter {
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Written, WriteError>>,
    /// The answer on success.
    pub written: Written,
}

/// A message from the writer to the snapshot thread.
#[derive(Debug)]
pub enum SnapMsg {
    /// The ops of one published batch, which brought the map to `seq`.
    Batch {
        /// The seq after the batch.
        seq: u64,
        /// Its ops, in order.
        ops: Vec<Op>,
        /// `sync` replies to send once an image at or past `seq` is flushed.
        waiters: Vec<Waiter>,
    },
    /// Answer once every batch sent before this one is in a flushed image.
    Flush {
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Arc<SnapshotStatus>, WriteError>>,
    },
}

/// What was recovered at start, so the thread knows which slot holds the newest image.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The slot file loaded.
    pub path: PathBuf,
    /// Its length on disk.
    pub capacity: u64,
    /// The image's seq.
    pub seq: u64,
    /// The image's length.
    pub bytes: u64,
    /// When it was written.
    pub written_at: String,
}

/// The running snapshot thread.
#[derive(Debug)]
pub struct Snapshotter {
    join: JoinHandle<Result<(), String>>,
}

impl Snapshotter {
    /// Starts the thread with a replica of `entries` (which shares every key and value).
    ///
    /// Returns the sender the writer feeds. Leftover temporary slot files, which never held a
    /// complete image, are removed first.
    pub fn start(
        dir: &Path,
        entries: &Entries,
        recovered: Option<Recovered>,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Sender<SnapMsg>, Snapshotter)> {
        let paths = recover::SLOT_NAMES.map(|n| dir.join(n));
        for p in &paths {
            let tmp = slot::temp_path(p);
            if tmp.exists() {
                tracing::info!(path = %tmp.display(), "removing an unfinished slot file");
                std::fs::remove_file(&tmp)?;
            }
        }
        let seq = recovered.as_ref().map_or(0, |r| r.seq);
        // Overwrite the slot that does not hold the recovered image.
        let next = match &recovered {
            Some(r) if r.path == paths[0] => 1,
            _ => 0,
        };
        if let Some(r) = &recovered {
            metrics.snapshot.store(Arc::new(SnapshotStatus {
                durable_seq: r.seq,
                file: Some(r.path.clone()),
                bytes: r.bytes,
                capacity: r.capacity,
                keys: entries.len() as u64,
                written_at: Some(r.written_at.clone()),
                ..SnapshotStatus::default()
            }));
        }
        let worker = worker::Worker {
            paths,
            slots: [None, None],
            next,
            replica: entries.clone(),
            applied: seq,
            durable: seq,
            interval,
            metrics,
            waiters: Vec::new(),
            flushes: Vec::new(),
            deadline: None,
            retry_at: None,
        };
        let (tx, rx) = mpsc::channel();
        let join = std::thread::Builder::new()
            .name("twinkv-snapshot".into())
            .spawn(move || worker.run(rx))?;
        Ok((tx, Snapshotter { join }))
    }

    /// Waits for the thread, which ends once its sender is dropped and the final image written.
    pub fn join(self) -> Result<(), String> {
        self.join
            .join()
            .unwrap_or_else(|_| Err("the snapshot thread panicked".into()))
    }
}
