//! The storage composition root: lock the data dir, recover, start the writer and the
//! snapshot thread, and wire them through the store's seam. Everything but HTTP.
//!
//! `serve` wraps an [`Engine`] in an HTTP server; the model test and tools use it directly to
//! restart in-process.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::snapshot::recover::{Depth, RecoverError, Scan};
use crate::snapshot::{Recovered, SnapshotError, SnapshotStatus, Snapshotter};
use crate::store::{Downstream, Durability, Faults, Initial, MarkWatch, Store, WriteError};

/// Name of the lock file in the data dir.
pub const LOCK_FILE: &str = "LOCK";

/// Why the engine could not open or close cleanly.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The data dir cannot be created or opened.
    #[error("cannot use data dir {path}")]
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another live process holds the data dir.
    #[error("data dir {path} is in use by another twinkv process{holder}")]
    Locked {
        /// The data dir.
        path: PathBuf,
        /// What the lock file says of its holder.
        holder: String,
    },
    /// The snapshot files cannot be recovered.
    #[error(transparent)]
    Recover(#[from] RecoverError),
    /// The snapshot thread failed to start, or its final image failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The writer thread could not be started.
    #[error("cannot start the writer thread")]
    Spawn(#[source] io::Error),
    /// A background thread died while serving; what it could still flush was flushed.
    #[error("stopped after a fault: {0}")]
    Faulted(Arc<String>),
}

/// Holds the data dir's lock for as long as it lives; the OS drops it if the process dies.
#[derive(Debug)]
struct DirLock {
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, EngineError> {
        let path = dir.join(LOCK_FILE);
        let data_dir = |source| EngineError::DataDir {
            path: dir.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(data_dir)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(EngineError::Locked {
                    path: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" ({holder})")
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(data_dir(e)),
        }
        file.set_len(0).map_err(data_dir)?;
        file.rewind().map_err(data_dir)?;
        writeln!(file, "pid {}", std::process::id()).map_err(data_dir)?;
        Ok(DirLock { _file: file })
    }
}

/// The store and its snapshot thread, opened on a locked data dir.
#[derive(Debug)]
pub struct Engine {
    /// The map and its writer.
    pub store: Store,
    /// What recovery loaded, if anything.
    pub recovered: Option<Recovered>,
    /// The data dir, absolute.
    pub dir: PathBuf,
    /// How long recovery took.
    pub recovery_time: Duration,
    /// Background threads that died.
    pub faults: Faults,
    snapshotter: Snapshotter,
    _lock: DirLock,
}

impl Engine {
    /// Locks `data_dir` (creating it), recovers the newest valid image, starts both threads.
    pub fn open(
        data_dir: &Path,
        durability: Durability,
        snapshot_interval: Duration,
    ) -> Result<Engine, EngineError> {
        let dir = std::path::absolute(data_dir).map_err(|source| EngineError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        fs::create_dir_all(&dir).map_err(|source| EngineError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let lock = DirLock::acquire(&dir)?;

        let started = Instant::now();
        tracing::info!(dir = %dir.display(), "recovering");
        let (initial, recovered) = match Scan::dir(&dir, Depth::Newest)?.into_recovery()? {
            Some((path, capacity, image)) => {
                let recovered = Recovered {
                    path,
                    capacity,
                    seq: image.seq,
                    bytes: image.len as u64,
                    written_at: image.written_at,
                };
                let initial = Initial {
                    entries: image.entries,
                    seq: image.seq,
                };
                (initial, Some(recovered))
            }
            None => (Initial::default(), None),
        };
        let keys = initial.entries.len();
        let faults = Faults::default();
        let (feed, snapshotter) = Snapshotter::start(
            &dir,
            &initial.entries,
            recovered.clone(),
            snapshot_interval,
            &faults,
        )?;
        let downstream = Downstream {
            sinks: vec![Box::new(feed)],
            durable: Some(snapshotter.marks.clone()),
            faults: faults.clone(),
        };
        let store = Store::start(initial, durability, downstream).map_err(EngineError::Spawn)?;
        let recovery_time = started.elapsed();
        match &recovered {
            Some(r) => tracing::info!(
                file = %r.path.display(), seq = r.seq, keys,
                ms = recovery_time.as_millis() as u64, "recovered"
            ),
            None => tracing::info!(dir = %dir.display(), "no snapshot: starting empty"),
        }
        Ok(Engine {
            store,
            recovered,
            dir,
            recovery_time,
            faults,
            snapshotter,
            _lock: lock,
        })
    }

    /// The snapshot thread's latest report.
    pub fn snapshot_status(&self) -> Arc<ArcSwap<SnapshotStatus>> {
        Arc::clone(&self.snapshotter.status)
    }

    /// Where `POST /snapshot` waits for its seq.
    pub fn snapshot_marks(&self) -> MarkWatch {
        self.snapshotter.marks.clone()
    }

    /// Waits until every write applied so far is in a flushed snapshot; returns its report.
    pub async fn checkpoint(&self) -> Result<Arc<SnapshotStatus>, WriteError> {
        let waiter = self.snapshotter.marks.waiter();
        let seq = self.store.handle().checkpoint().await?;
        waiter.wait(seq).await?;
        Ok(self.snapshotter.status.load_full())
    }

    /// Stops the writer (after what it has drained), then waits for the final snapshot.
    ///
    /// After a fault it still writes what it can, then reports the fault.
    pub fn close(self) -> Result<(), EngineError> {
        self.store.shutdown();
        let snapshot = self.snapshotter.join();
        if let Some(reason) = self.faults.get() {
            return Err(EngineError::Faulted(reason));
        }
        snapshot.map_err(EngineError::from)
    }
}
