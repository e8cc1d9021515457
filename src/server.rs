//! `serve`: lock the data dir, recover, start the threads, run HTTP, shut down in order.
//!
//! Shutdown follows the data: HTTP stops accepting and finishes requests in flight (actix does
//! this on SIGINT and SIGTERM), then the writer drains its channel and stops, which closes the
//! snapshot thread's channel, which writes the final image. Each thread is joined in turn.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::config::Config;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::snapshot::recover::{Depth, RecoverError, Scan};
use crate::snapshot::{Recovered, Snapshotter};
use crate::store::{Durability, Initial, Store};

/// Name of the lock file in the data dir.
pub const LOCK_FILE: &str = "LOCK";

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data dir cannot be created or opened.
    #[error("cannot use data dir {path}: {source}")]
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// The cause.
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
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// A thread could not be started, or HTTP failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The final snapshot could not be written.
    #[error("{0}")]
    FinalSnapshot(String),
}

/// Holds the data dir's lock for as long as it lives; the OS drops it if the process dies.
#[derive(Debug)]
struct DirLock {
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, ServeError> {
        let path = dir.join(LOCK_FILE);
        let data_dir = |source| ServeError::DataDir {
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
                return Err(ServeError::Locked {
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

/// The store and its snapshot thread, opened on a locked data dir: everything but HTTP.
///
/// `serve` wraps it in an HTTP server; tests and tools use it directly to restart in-process.
#[derive(Debug)]
pub struct Engine {
    /// The map and its writer.
    pub store: Store,
    /// Figures shared with HTTP.
    pub metrics: Arc<Metrics>,
    /// What recovery loaded, if anything.
    pub recovered: Option<Recovered>,
    snapshotter: Snapshotter,
    _lock: DirLock,
}

impl Engine {
    /// Locks `data_dir` (creating it), recovers the newest valid image, starts both threads.
    pub fn open(
        data_dir: &Path,
        durability: Durability,
        snapshot_interval: Duration,
    ) -> Result<Engine, ServeError> {
        let dir = std::path::absolute(data_dir).map_err(|source| ServeError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        fs::create_dir_all(&dir).map_err(|source| ServeError::DataDir {
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
        let metrics = Arc::new(Metrics::default());
        let (snap_tx, snapshotter) = Snapshotter::start(
            &dir,
            &initial.entries,
            recovered.clone(),
            snapshot_interval,
            Arc::clone(&metrics),
        )?;
        let store = Store::start(initial, durability, Some(snap_tx), Arc::clone(&metrics))?;
        let ms = started.elapsed().as_millis();
        match &recovered {
            Some(r) => tracing::info!(
                file = %r.path.display(), seq = r.seq, keys, ms = ms as u64, "recovered"
            ),
            None => tracing::info!(dir = %dir.display(), "no snapshot: starting empty"),
        }
        Ok(Engine {
            store,
            metrics,
            recovered,
            snapshotter,
            _lock: lock,
        })
    }

    /// Stops the writer (after what it has drained), then waits for the final snapshot.
    pub fn close(self) -> Result<(), ServeError> {
        self.store.shutdown();
        self.snapshotter.join().map_err(ServeError::FinalSnapshot)
    }
}

/// Runs the server until SIGINT or SIGTERM, then shuts down in order and writes a final snapshot.
pub fn serve(config: &Config) -> Result<(), ServeError> {
    let started = Instant::now();
    let engine = Engine::open(
        &config.data_dir,
        config.durability,
        config.snapshot_interval,
    )?;
    let ms = started.elapsed().as_millis();
    let keys = engine
        .metrics
        .keys
        .load(std::sync::atomic::Ordering::Acquire);
    match &engine.recovered {
        Some(r) => println!(
            "recovered {} seq={} keys={keys} in {ms} ms",
            r.path.display(),
            r.seq
        ),
        None => println!(
            "recovered nothing (no snapshot in {}) seq=0 keys=0 in {ms} ms",
            config.data_dir.display()
        ),
    }

    let listener = match TcpListener::bind(config.addr) {
        Ok(l) => l,
        Err(source) => {
            engine.close()?;
            return Err(ServeError::Bind {
                addr: config.addr,
                source,
            });
        }
    };
    let http_result = run_http(config, listener, &engine.store, Arc::clone(&engine.metrics));

    // HTTP has stopped: no new writes. Drain the writer, then let the snapshot thread finish.
    let closed = engine.close();
    http_result?;
    closed
}

fn run_http(
    config: &Config,
    listener: TcpListener,
    store: &Store,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    let state = web::Data::new(AppState {
        store: store.handle(),
        metrics,
        limits: config.limits,
        auth_token: config.auth_token.clone(),
        durability: config.durability,
    });
    let readers = store.readers();
    let local = listener.local_addr()?;
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            // One reader per worker, made here, before any read guard exists on this thread.
            let reader = readers.reader();
            App::new()
                .app_data(state.clone())
                .app_data(reader)
                .wrap(from_fn(http::observe))
                .configure(http::configure)
        })
        // Replies leave as soon as they are ready: without TCP_NODELAY, Nagle's algorithm holds
        // a small reply until the client acknowledges the previous one, ~40 ms with delayed
        // ACKs, which capped pipelined PUTs (answered one by one) at a few thousand per second.
        .on_connect(|conn, _| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            }
        })
        .workers(config.workers)
        .listen(listener)?
        .run();
        println!("listening on http://{local}");
        io::stdout().flush()?;
        server.await
    })
}
