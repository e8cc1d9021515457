//! twinkv: a small, fast, inspectable key-value store served over HTTP.
//!
//! ```text
//!  HTTP worker (actix-web, one per core)
//!    GET  ── Reader (per worker) ── enter() ── clone an Arc'd value ── respond      (never blocks)
//!    PUT  ── Command{op, reply} ── channel ──▶ writer thread
//!                                               │ drain a batch of commands
//!                                               │ check If-Match…, assign seq
//!                                               │ append ops to the left-right WriteHandle
//!                                               │ publish()  ── readers see the batch, atomically
//!                                               │ send the ops ──▶ snapshot thread
//!                                               │ reply: async → now; sync → once durable
//!                                               ▼
//!                                    snapshot thread (its own ordered replica)
//!                                               │ apply ops; when due: encode the replica into
//!                                               │ the older slot file (memmap2, grown as needed),
//!                                               │ msync, record durable_seq, wake sync waiters
//! ```
//!
//! Modules: [`store`] (the map, its reader and writer), [`snapshot`] (the image, its files and
//! recovery), `http` (routes and handlers), `server` (start and stop), `inspect`, `config`, `cli`
//! and `metrics`.
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
mod http;
pub mod inspect;
pub mod metrics;
pub mod server;
pub mod snapshot;
pub mod store;

pub use config::{Config, Limits};
pub use http::{configure, observe, ApiError, AppState};
pub use metrics::Metrics;
pub use server::Engine;

/// Pure decoders of untrusted input, exposed for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::http::decode::{check_key, form_pairs, percent_decode};
    pub use crate::http::kv::parse_batch;
    pub use crate::snapshot::format::decode as decode_snapshot;
}
pub use store::{Durability, Entry, Reader, ReaderFactory, Store, StoreHandle};
