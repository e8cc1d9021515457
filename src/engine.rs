//! The storage composition root: lock the data dir, recover (snapshot, then log), start the
//! writer, the log and the snapshot thread, and wire them through the store's seam.
//! Everything but HTTP.
//!
//! `serve` wraps an [`Engine`] in an HTTP server; the model test and tools use it directly to
//! restart in-process.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwap;

use crate::defaults;
use crate::log::file::Disk;
use crate::log::scan::{self, Torn};
use crate::log::{Compactor, Log, LogError, LogHandle, LogStats};
use crate::metrics::Metrics;
use crate::recovery::{self, Loaded, RecoveryError, Replay};
use crate::snapshot::format::Position;
use crate::snapshot::recover::Depth;
use crate::snapshot::{
    Policy, Priority, SnapshotError, SnapshotStatus, Snapshotter, Start as SnapshotStart,
};
use crate::store::{
    Downstream, Durability, Faults, Initial, MarkSender, MarkWatch, Store, WriteError,
};
use crate::watch::{self, Hub, HubThread};

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
    /// The snapshot files or the log cannot be recovered.
    #[error(transparent)]
    Recover(#[from] RecoveryError),
    /// The log cannot be opened for appending.
    #[error(transparent)]
    Log(Arc<LogError>),
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

/// Opens a cluster node's Raft log once the data dir is locked, given the Raft state of the
/// image the map starts from (its `raft` field): the proposer writes go to, and what the
/// snapshot thread calls with the older image's index after each image (the Raft log's
/// segments before it may go).
pub(crate) type ClusterOpen<'a> = dyn FnMut(
        &Path,
        Option<&str>,
    ) -> io::Result<(Box<dyn crate::store::Proposer>, crate::snapshot::Compact)>
    + 'a;

/// How the engine runs: the durability flags of `serve`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// When writes are answered.
    pub durability: Durability,
    /// In `async`, the longest an answered write stays in the log unflushed.
    pub fsync_interval: Duration,
    /// A checkpoint starts once the log since the newest image holds this many bytes (and at
    /// least as many as that image).
    pub checkpoint_log_bytes: u64,
    /// Log segments roll at this size.
    pub segment_bytes: u64,
    /// Change events kept for watchers to resume from.
    pub watch_history: usize,
}

impl Settings {
    /// The defaults of `serve`, in `durability` mode.
    pub fn new(durability: Durability) -> Settings {
        Settings {
            durability,
            fsync_interval: Duration::from_millis(defaults::FSYNC_INTERVAL_MS),
            checkpoint_log_bytes: defaults::CHECKPOINT_LOG_BYTES,
            segment_bytes: crate::log::SEGMENT_BYTES,
            watch_history: defaults::WATCH_HISTORY,
        }
    }
}

/// What recovery did at start, for the `recovered` line.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The snapshot loaded, if any.
    pub image: Option<Loaded>,
    /// Records replayed after it.
    pub replayed: u64,
    /// The seq recovered.
    pub seq: u64,
    /// Keys recovered.
    pub keys: u64,
    /// How long it took.
    pub time: Duration,
    /// A torn log tail that was cut, and where its bytes were kept.
    pub torn: Option<(Torn, PathBuf)>,
}

/// The store, its log and its snapshot thread, opened on a locked data dir.
#[derive(Debug)]
pub struct Engine {
    /// The map and its writer.
    pub store: Store,
    /// What recovery did.
    pub recovered: Recovered,
    /// The data dir, absolute.
    pub dir: PathBuf,
    /// Background threads that died.
    pub faults: Faults,
    /// Request counters and fsync timings, rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Recent change events and the watchers.
    pub hub: Arc<Hub>,
    hub_thread: HubThread,
    log: LogHandle,
    /// Cluster mode in `sync`: what moves `durable_seq` (see [`Engine::take_cluster_durable`]).
    cluster_durable: Option<MarkSender>,
    snapshotter: Snapshotter,
    _lock: DirLock,
}

impl Engine {
    /// Locks `data_dir` (creating it), recovers the newest valid image and the log after it,
    /// and starts the writer, the log flusher and the snapshot thread.
    pub fn open(data_dir: &Path, settings: &Settings) -> Result<Engine, EngineError> {
        Engine::open_with(data_dir, settings, None)
    }

    /// Like [`Engine::open`]; with `cluster`, writes go to the proposer instead of the log, and
    /// the slot images, which record the Raft state they hold, are the Raft snapshots.
    pub(crate) fn open_with(
        data_dir: &Path,
        settings: &Settings,
        cluster: Option<&mut ClusterOpen<'_>>,
    ) -> Result<Engine, EngineError> {
        let dir = std::path::absolute(data_dir).map_err(|source| EngineError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let log_dir = dir.join(crate::log::DIR);
        for d in [&dir, &log_dir] {
            fs::create_dir_all(d).map_err(|source| EngineError::DataDir {
                path: d.clone(),
                source,
            })?;
        }
        let lock = DirLock::acquire(&dir)?;

        let started = Instant::now();
        tracing::info!(dir = %dir.display(), "recovering");
        // A cluster node's `data/log` is openraft's log, read by its log store: the standalone
        // recovery loads only the slot image there (which the Raft snapshot then replaces).
        let replay = match cluster {
            Some(_) => Replay::Skip,
            None => Replay::Records,
        };
        let rec = recovery::recover(&dir, Depth::Newest, replay)?;
        let (proposer, cluster_compact) = match cluster {
            Some(open) => {
                let tag = rec.image.as_ref().and_then(|i| i.tag.clone());
                let (proposer, compact) =
                    open(&dir, tag.as_deref()).map_err(|source| EngineError::DataDir {
                        path: dir.join("raft"),
                        source,
                    })?;
                (Some(proposer), Some(compact))
            }
            None => (None, None),
        };
        let clustered = proposer.is_some();
        let torn = match &rec.log.torn {
            Some(t) => {
                let kept = scan::repair(t).map_err(|source| EngineError::DataDir {
                    path: t.path.clone(),
                    source,
                })?;
                tracing::warn!(
                    segment = %t.path.display(), offset = t.offset, bytes = t.bytes,
                    kept = %kept.display(),
                    "cut a torn record off the end of the log (it was never answered)"
                );
                Some((t.clone(), kept))
            }
            None => None,
        };
        let mut last_segment = rec.log.segments.last();
        // The index the last segment's next record would have. It is behind the next index when
        // the image holds records the log lost: in `async` an image can be flushed before the
        // records it holds are, and a power loss then cuts the log short of it. Every segment
        // then holds only records the image has; appending to the last would leave a gap that
        // the next start refuses, so they are deleted (front first, so a crash midway leaves a
        // log without a gap) and the log starts anew after the image.
        let log_next = last_segment.map(|s| s.last_index.map_or(s.first_index, |i| i + 1));
        if log_next.is_some_and(|n| n <= rec.log_index) {
            for s in &rec.log.segments {
                fs::remove_file(&s.path).map_err(|source| EngineError::DataDir {
                    path: s.path.clone(),
                    source,
                })?;
            }
            tracing::warn!(
                log_end = log_next.map(|n| n - 1),
                image = rec.log_index,
                "the log ends before the snapshot's position (lost in a power loss); \
                 deleted its segments, which the snapshot holds"
            );
            last_segment = None;
        }
        let start = crate::log::Start {
            segment: last_segment.map(|s| s.first_index),
            segment_len: match (last_segment, &torn) {
                (None, _) => 0,
                (Some(_), Some((t, _))) => t.offset,
                (Some(s), None) => s.bytes,
            },
            next_index: rec.log_index + 1,
            seq: rec.seq,
        };
        let metrics = Arc::new(Metrics::default());
        let faults = Faults::default();
        let options = crate::log::Options {
            dir: log_dir.clone(),
            segment_bytes: settings.segment_bytes.max(1),
            fsync_interval: match settings.durability {
                Durability::Async => Some(settings.fsync_interval),
                Durability::Sync => None,
            },
        };
        let mut cluster_durable = None;
        let (log, log_handle) = if clustered {
            let (handle, durable) = LogHandle::idle(rec.seq);
            // In `async` a node's Raft log is not flushed as it goes: nothing moves the mark.
            cluster_durable = (settings.durability == Durability::Sync).then_some(durable);
            (None, handle)
        } else {
            let (log, handle) = Log::open(
                options,
                Arc::new(Disk),
                start,
                Arc::clone(&metrics),
                &faults,
            )
            .map_err(|e| EngineError::Log(Arc::new(e)))?;
            (Some(log), handle)
        };
        let compactor = Compactor { dir: log_dir };
        let policy = Policy {
            // In cluster mode openraft decides when an image is due (by entries, and by the
            // log's bytes: `cluster::snapshot_by_size`), so that each image is one it knows of.
            checkpoint_log_bytes: if clustered {
                u64::MAX
            } else {
                settings.checkpoint_log_bytes
            },
            // In cluster mode the positions are Raft indexes, and the Raft log store keeps the
            // segments after the older image (openraft purges, the store clamps).
            compact: match cluster_compact {
                Some(compact) => compact,
                None => Box::new(move |index| compactor.delete_through(index)),
            },
            priority: Priority::Idle(None),
        };
        let snap_start = SnapshotStart {
            image: rec.image.clone(),
            at: Position {
                seq: rec.seq,
                log_index: rec.log_index,
            },
            log_bytes: rec.replayed_bytes,
        };
        let (feed, snapshotter) =
            Snapshotter::start(&dir, &rec.entries, snap_start, policy, &faults)?;
        let (watch_feed, hub, hub_thread) =
            watch::start(settings.watch_history, rec.seq, &faults).map_err(EngineError::Spawn)?;
        let keys = rec.entries.len() as u64;
        let initial = Initial {
            entries: rec.entries,
            index: rec.index,
            seq: rec.seq,
        };
        let downstream = Downstream {
            journal: log.map(|l| Box::new(l) as Box<dyn crate::store::Journal>),
            sinks: vec![Box::new(feed), Box::new(watch_feed)],
            faults: faults.clone(),
            proposer,
        };
        let store =
            Store::start(initial, settings.durability, downstream).map_err(EngineError::Spawn)?;
        let recovered = Recovered {
            image: rec.image,
            replayed: rec.replayed,
            seq: rec.seq,
            keys,
            time: started.elapsed(),
            torn,
        };
        tracing::info!(
            seq = recovered.seq,
            keys,
            replayed = recovered.replayed,
            ms = recovered.time.as_millis() as u64,
            "recovered"
        );
        Ok(Engine {
            store,
            recovered,
            dir,
            faults,
            metrics,
            hub,
            hub_thread,
            log: log_handle,
            cluster_durable,
            snapshotter,
            _lock: lock,
        })
    }

    /// Cluster mode in `sync`: the sender of `durable_seq`, for the Raft state machine (a node
    /// applies only entries its own log has flushed, so every seq it applies is durable).
    /// `None` standalone, in `async`, or once taken.
    pub(crate) fn take_cluster_durable(&mut self) -> Option<MarkSender> {
        self.cluster_durable.take()
    }

    /// The snapshot thread's latest report.
    pub fn snapshot_status(&self) -> Arc<ArcSwap<SnapshotStatus>> {
        Arc::clone(&self.snapshotter.status)
    }

    /// Where `POST /snapshot` waits for its seq.
    pub fn snapshot_marks(&self) -> MarkWatch {
        self.snapshotter.marks.clone()
    }

    /// Log bytes since the newest snapshot.
    pub fn log_bytes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.snapshotter.log_bytes)
    }

    /// "Every write up to seq N survives power loss", and the log's last failure.
    pub fn log_marks(&self) -> MarkWatch {
        self.log.marks.clone()
    }

    /// The log's flush and byte counts.
    pub fn log_stats(&self) -> Arc<LogStats> {
        Arc::clone(&self.log.stats)
    }

    /// Waits until every write applied so far is in a flushed snapshot; returns its report.
    pub async fn checkpoint(&self) -> Result<Arc<SnapshotStatus>, WriteError> {
        let waiter = self.snapshotter.marks.waiter();
        let seq = self.store.handle().checkpoint().await?;
        waiter.wait(seq).await?;
        Ok(self.snapshotter.status.load_full())
    }

    /// Stops the writer (after what it has drained; dropping it flushes the log), then waits
    /// for the flusher and the final snapshot.
    ///
    /// After a fault it still writes what it can, then reports the fault.
    pub fn close(self) -> Result<(), EngineError> {
        self.stop()
    }

    /// Stops as a crash of the process would leave the data dir, and releases its lock: the
    /// writer and the log stop as in [`Engine::close`] (every answered write is in the log
    /// files), but the snapshot thread starts no image, so there is no final snapshot and no
    /// log segment is deleted, and the next [`Engine::open`] replays the log since the newest
    /// image. A checkpoint already under way is finished first; no thread is left running.
    ///
    /// It exists so that tests can restart through log replay within one process (a killed
    /// process would end the test too); it reports a fault like `close`.
    #[doc(hidden)]
    pub fn crash(self) -> Result<(), EngineError> {
        self.snapshotter.abandon();
        self.stop()
    }

    /// Stops the threads in order and waits for them; what the snapshot thread writes at the
    /// end depends on whether it was abandoned.
    fn stop(self) -> Result<(), EngineError> {
        self.snapshotter.hurry();
        self.hub.close();
        self.store.shutdown();
        self.hub_thread.join();
        self.log.join();
        let snapshot = self.snapshotter.join();
        if let Some(reason) = self.faults.get() {
            return Err(EngineError::Faulted(reason));
        }
        snapshot.map_err(EngineError::from)
    }
}
