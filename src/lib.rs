//! twinkv: a small, fast, inspectable key-value store served over HTTP.
//!
//! ```text
//!  HTTP worker (actix-web, one per core)
//!    GET  ── Reader (per worker) ── enter() ── clone an Arc'd entry ── respond      (never blocks)
//!    PUT  ── Command{op, reply} ── channel ──▶ writer thread
//!                                               │ drain a batch of commands
//!                                               │ check If-Match…, assign seq
//!                                               │ append ops (+ the map's seq) to the
//!                                               │   left-right WriteHandle, publish()
//!                                               │ emit Published{seq, ops} to every Sink
//!                                               │ reply: visible now; a `sync` caller then
//!                                               ▼   waits on a MarkWatch for its own seq
//!                                    snapshot thread (its own ordered replica, a Sink)
//!                                               │ apply ops; when due: encode the replica into
//!                                               │ the older slot file (memmap2, grown as needed),
//!                                               │ msync, report "durable up to seq N"
//! ```
//!
//! # Module map
//!
//! Dependencies run one way, in the order data flows; nothing points back up:
//!
//! ```text
//!  main ─▶ cli, config, server, inspect
//!  server ─▶ engine, http, metrics, config
//!  http ─▶ store, snapshot (status only), metrics, config, defaults
//!  engine ─▶ store, snapshot
//!  snapshot ─▶ store            (implements store::Sink, reports on a store::MarkSender)
//!  inspect ─▶ snapshot
//!  store ─▶ (nothing in the crate)
//!  metrics, defaults ─▶ (nothing in the crate)
//! ```
//!
//! - [`store`]: the map, its reader and writer, and the seam (`Sink`, `Published`,
//!   `MarkWatch`, `Faults`) that persistence plugs into.
//! - [`snapshot`]: the image, its slot files, the checkpoint thread and recovery.
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
//! - **Snapshot lag.** In `async` a crash loses the writes after the newest flushed image (at
//!   most the snapshot interval plus one image's write time). In `sync` each flush writes the
//!   whole map, so a write costs O(map), shared by every write that waits on the same flush.

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod cli;
pub mod config;
mod defaults;
pub mod engine;
mod http;
pub mod inspect;
pub mod log;
pub mod metrics;
pub mod recovery;
pub mod server;
pub mod snapshot;
pub mod store;

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
