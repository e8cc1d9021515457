//! twinkv: a small, fast, inspectable key-value store served over HTTP.
//!
//! ```text
//!  HTTP worker (actix-web, one per core)
//!    GET  ── Reader (per worker) ── enter() ── clone an Arc'd entry ── respond      (never blocks)
//!    PUT  ── Command{write, reply} ── channel ──▶ writer thread
//!                                               │ drain a batch of commands
//!                                               │ apply: check If-Match…, assign seq (pure)
//!                                               │ append one record to the Journal (the log);
//!                                               │   sync: fdatasync before going on
//!                                               │ append ops (+ the map's seq) to the
//!                                               │   left-right WriteHandle, publish()
//!                                               │ emit Published{seq, ops} to every Sink
//!                                               ▼ reply
//!        log flusher (async): fdatasync at least every --fsync-interval-ms
//!        snapshot thread (its own ordered replica, a Sink): when the log has grown as large as
//!          the image, or POST /snapshot, or shutdown: encode the replica into the older slot
//!          file (memmap2, mapped only while writing), msync, delete covered log segments
//! ```
//!
//! # Module map
//!
//! Dependencies run one way, in the order data flows; nothing points back up:
//!
//! ```text
//!  main ─▶ cli, config, inspect, server  (the binary, through the library's public items)
//!  server ─▶ engine, http, cluster, config, store, snapshot (a test-only fault switch)
//!  http ─▶ engine (to build its state), store, watch, cluster, snapshot, log (status only),
//!          metrics, config, defaults
//!  engine ─▶ recovery, log, snapshot, watch, store, metrics, defaults
//!  inspect ─▶ recovery, log, snapshot, store, cluster (the Raft section)
//!  cluster ─▶ log, snapshot, store     (openraft's log storage, state machine and snapshots)
//!  recovery ─▶ log, snapshot, store   (newest image, then replay the log with store's apply)
//!  log ─▶ store, metrics, defaults    (implements store::Journal)
//!  snapshot ─▶ store, defaults        (implements store::Sink, reports on a store::MarkSender)
//!  watch ─▶ store                     (implements store::Sink: the event ring and watchers)
//!  config ─▶ cli, store, defaults;  cli ─▶ store, defaults
//!  store ─▶ (nothing in the crate)
//!  metrics, defaults ─▶ (nothing in the crate)
//! ```
//!
//! `tests/it/layering.rs` reads every `crate::` path under `src/` and holds this map to them:
//! an edge the code has and the map lacks (or the reverse), or a circle, fails the test.
//!
//! - [`store`]: the map, its reader and writer, the pure apply, and the seam (`Journal`, `Sink`,
//!   `Published`, `MarkWatch`, `Faults`) that persistence plugs into.
//! - [`log`]: the write-ahead log: records, segments, the flusher, the scan that reads it back.
//! - [`snapshot`]: the image, its slot files, the checkpoint thread and the choice of slot.
//! - [`recovery`]: newest valid image plus log replay, shared by start-up and `inspect`.
//! - [`watch`]: the ring of recent change events and the bounded queue of each watcher.
//! - [`engine`]: the composition root: lock, recover, wire the threads.
//! - [`server`]: `serve(config, listener, shutdown)`: HTTP over an engine, stopped in order.
//! - `http`: routes and thin handlers; [`ApiError`] maps every failure to a status once.
//! - [`inspect`], [`config`], [`cli`], [`metrics`], `defaults`.
//!
//! # Trade-offs
//!
//! - **Two copies.** left-right keeps two maps so readers never lock; the second copy costs
//!   pointers, not data, because keys and values are `Arc`s shared by both copies and by the
//!   snapshot replica.
//! - **Read staleness.** A reader sees the map as of the last publish. A write is answered only
//!   after its publish, so once answered it is visible to every later read.
//! - **Flush lag.** In `async` a write is answered once its record is written, not flushed: a
//!   crash of the process loses nothing, power loss at most `--fsync-interval-ms` of writes. In
//!   `sync` every batch waits for one `fdatasync`, shared by every write in it.
//! - **Log and image.** Recovery time grows with the log since the newest image; a checkpoint
//!   starts once that log is as large as the image, so replay never reads much more than an
//!   image's worth of records.

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod cli;
pub(crate) mod cluster;
pub mod config;
mod defaults;
pub mod engine;
mod http;
pub mod inspect;
pub(crate) mod log;
pub mod metrics;
pub(crate) mod recovery;
pub mod server;
pub mod snapshot;
pub mod store;
pub(crate) mod watch;

pub use config::{Config, Limits};
pub use engine::Engine;
pub use http::{configure, observe, ApiError, AppState};
pub use metrics::Metrics;
pub use store::{Durability, Entry, Reader, ReaderFactory, Store, StoreHandle};

/// Pure decoders of untrusted input, exposed for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::http::decode::{check_key, form_pairs, percent_decode};
    pub use crate::http::kv::parse_batch;
    pub use crate::log::record::decode as decode_log_record;
    pub use crate::log::record::encode as encode_log_record;
    pub use crate::log::record::encode_raft as encode_raft_log_record;
    pub use crate::log::record::encode_writes as encode_log_writes;
    pub use crate::log::record::{RaftBody, RaftPayload};
    pub use crate::snapshot::format::decode as decode_snapshot;
}

/// Shows an error and its causes on one line, `outer: cause: root`: each error in a chain
/// states only its own part (its cause is a `source()`), so this is the one place they meet.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'a));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}
