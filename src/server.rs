//! `serve`: open the engine, run HTTP on a given listener until a shutdown future resolves,
//! then stop in order.
//!
//! Shutdown follows the data: HTTP stops accepting and finishes requests in flight, then the
//! writer drains its channel and stops, which closes the snapshot thread's feed, which writes
//! the final image. Each thread is joined in turn. [`run`] is what the binary calls: it binds
//! the configured address with a real backlog and shuts down on SIGINT or SIGTERM.

use std::future::Future;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::config::{Config, TestFault};
use crate::engine::{Engine, EngineError, Settings};
use crate::http::{self, AppState};
use crate::snapshot::{self, CrashPoint};

/// Pending connections the kernel queues for a listener `run` binds: actix's own default.
/// `std::net::TcpListener::bind` asks for 128, and a burst of connects beyond it waits a second
/// or more for a SYN retransmit.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The engine (data dir, recovery, threads) failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The HTTP server failed.
    #[error("the HTTP server failed")]
    Http(#[source] io::Error),
    /// Cluster mode could not start.
    #[error("cannot start cluster mode: {0}")]
    Cluster(String),
}

/// Binds `addr` with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let bind_err = |source| ServeError::Bind { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket.listen(LISTEN_BACKLOG).map_err(bind_err)?;
    Ok(socket.into())
}

/// What the binary runs: bind, serve until SIGINT or SIGTERM.
pub fn run(config: &Config) -> Result<(), ServeError> {
    let listener = bind(config.addr)?;
    serve(config, listener, signals())
}

/// Resolves on SIGINT or SIGTERM. Only polled inside the server's runtime.
async fn signals() {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received: shutting down");
}

/// Turns on the fault a test asked for, before any thread it concerns starts. `fault` is
/// always `None` in a release build, which never reads `TWINKV_TEST_FAULT`.
fn inject(fault: Option<TestFault>) {
    let crash_at = snapshot::inject_crash_at_second_checkpoint;
    match fault {
        None => {}
        Some(TestFault::SnapshotPanic) => snapshot::inject_panic_at_next_attempt(),
        Some(TestFault::CheckpointCrashWritten) => crash_at(CrashPoint::Written),
        Some(TestFault::CheckpointCrashFlushed) => crash_at(CrashPoint::Flushed),
        Some(TestFault::CheckpointCrashCompacted) => crash_at(CrashPoint::Compacted),
    }
}

/// Recovers the data dir, serves HTTP on `listener` until `shutdown` resolves, then shuts
/// down in order and writes a final snapshot.
///
/// The `listening on` line is printed once recovery is done and the server accepts; until
/// then connections wait in the listener's backlog.
pub fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + 'static,
) -> Result<(), ServeError> {
    inject(config.fault);
    let mut seed = None;
    let mut engine = match &config.cluster {
        None => Engine::open(&config.data_dir, &settings(config))?,
        Some(_) => {
            let flush = config.durability == crate::store::Durability::Sync;
            let mut open = |dir: &std::path::Path, tag: Option<&str>| {
                let (proposer, rest) =
                    crate::cluster::open(dir, flush, config.log_segment_bytes, tag)?;
                let log = rest.log();
                seed = Some(rest);
                let compact: crate::snapshot::Compact =
                    Box::new(move |older| log.keep_after(older));
                Ok((proposer, compact))
            };
            Engine::open_with(&config.data_dir, &settings(config), Some(&mut open))?
        }
    };
    let r = &engine.recovered;
    let ms = r.time.as_millis();
    let from = match &r.image {
        Some(image) => image.path.display().to_string(),
        None => format!("nothing (no snapshot in {})", config.data_dir.display()),
    };
    if let Some((torn, kept)) = &r.torn {
        say(&format!(
            "cut a torn log tail: {} bytes at offset {} of {} (kept in {})",
            torn.bytes,
            torn.offset,
            torn.path.display(),
            kept.display()
        ));
    }
    say(&format!(
        "recovered {from} + {} log records seq={} keys={} in {ms} ms",
        r.replayed, r.seq, r.keys
    ));
    let cluster = match (&config.cluster, seed) {
        (Some(c), Some(seed)) => {
            let raft_listener = bind(c.raft_addr)?;
            let raft_local = raft_listener.local_addr().map_err(ServeError::Http)?;
            let api_local = listener.local_addr().map_err(ServeError::Http)?;
            let settings = crate::cluster::Settings {
                id: c.node_id,
                me: crate::cluster::Member {
                    addr: api_local.to_string(),
                    raft_addr: raft_local.to_string(),
                },
                token: config.auth_token.as_deref().map(std::sync::Arc::from),
                snapshot_entries: c.snapshot_entries,
                checkpoint_log_bytes: config.checkpoint_log_bytes,
            };
            let durable = engine.take_cluster_durable();
            let cluster = crate::cluster::Cluster::start(
                settings,
                &engine.dir,
                seed,
                engine.store.handle(),
                crate::cluster::Images {
                    status: engine.snapshot_status(),
                    marks: engine.snapshot_marks(),
                    log_bytes: engine.log_bytes(),
                    durable: durable.map(std::sync::Arc::new),
                },
            )
            .map_err(|e| ServeError::Cluster(e.to_string()))?;
            say(&format!("raft on {raft_local}"));
            Some((cluster, raft_listener))
        }
        _ => None,
    };
    let raft = cluster.as_ref().map(|(c, _)| std::sync::Arc::clone(c));
    let http_result = run_http(config, listener, &engine, cluster, shutdown);
    // HTTP has stopped: no new writes. Stop Raft, drain the writer, then let the snapshot
    // thread finish.
    if let Some(c) = raft {
        c.shutdown();
    }
    let closed = engine.close();
    http_result?;
    Ok(closed?)
}

/// The engine's settings from the validated flags.
pub fn settings(config: &Config) -> Settings {
    Settings {
        durability: config.durability,
        fsync_interval: config.fsync_interval,
        checkpoint_log_bytes: config.checkpoint_log_bytes,
        segment_bytes: config.log_segment_bytes,
        watch_history: config.watch_history,
    }
}

/// Prints a line on stdout for scripts; a closed or full stdout is no reason to stop serving.
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn run_http(
    config: &Config,
    listener: TcpListener,
    engine: &Engine,
    cluster: Option<(std::sync::Arc<crate::cluster::Cluster>, TcpListener)>,
    shutdown: impl Future<Output = ()> + 'static,
) -> Result<(), ServeError> {
    let mut state = AppState::new(
        engine,
        config.limits,
        config.auth_token.clone(),
        config.durability,
    );
    state.watch_progress = config.watch_progress;
    state.cluster = cluster.as_ref().map(|(c, _)| std::sync::Arc::clone(c));
    let state = web::Data::new(state);
    let readers = engine.store.readers();
    let hub = std::sync::Arc::clone(&engine.hub);
    let local = listener.local_addr().map_err(ServeError::Http)?;
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
        .disable_signals()
        .listen(listener)
        .map_err(ServeError::Http)?
        .run();
        let handle = server.handle();
        // Cluster mode: Raft RPCs on their own listener, stopped with the API.
        let raft_handle = match cluster {
            Some((c, raft_listener)) => {
                let raft_server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(std::sync::Arc::clone(&c)))
                        .configure(crate::cluster::rpc::configure)
                })
                // As on the API: a peer's next RPC must not wait on Nagle for our answer.
                .on_connect(|conn, _| {
                    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                        let _ = tcp.set_nodelay(true);
                    }
                })
                .workers(1)
                .disable_signals()
                .listen(raft_listener)
                .map_err(ServeError::Http)?
                .run();
                let h = raft_server.handle();
                actix_web::rt::spawn(raft_server);
                Some(h)
            }
            None => None,
        };
        actix_web::rt::spawn(async move {
            shutdown.await;
            if let Some(h) = raft_handle {
                h.stop(false).await;
            }
            // End every watch stream first: a graceful stop waits for open responses, and a
            // stream would hold it up until actix's 30 s deadline.
            hub.close();
            handle.stop(true).await;
        });
        say(&format!("listening on http://{local}"));
        server.await.map_err(ServeError::Http)
    })
}
