//! Command-line flags and environment variables, kept raw; `config` validates them once.

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand};

use crate::defaults;
use crate::store::Durability;

/// twinkv: a small, fast, inspectable key-value store served over HTTP.
///
/// Without a subcommand it serves, exactly as `twinkv serve` does.
#[derive(Debug, Parser)]
#[command(name = "twinkv", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve(ServeArgs),
    /// Report on the snapshot files and the log of a data dir (or one snapshot file), without
    /// any lock.
    Inspect(InspectArgs),
}

/// Flags of `twinkv serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the chosen one is printed).
    #[arg(long, env = "TWINKV_ADDR", default_value = defaults::ADDR)]
    pub addr: String,
    /// Directory for the log, the snapshot files and the lock file; created if missing.
    #[arg(long, env = "TWINKV_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    /// When a write is answered: `async` once its log record is written, `sync` once it is
    /// flushed to disk.
    #[arg(
        long,
        env = "TWINKV_DURABILITY",
        default_value = defaults::DURABILITY,
        value_parser = clap::builder::PossibleValuesParser::new(["async", "sync"])
            .try_map(|s| s.parse::<Durability>()),
    )]
    pub durability: Durability,
    /// In `async`, the longest an answered write stays in the log unflushed (power loss loses
    /// at most this much; a crash of the process loses nothing).
    #[arg(long, env = "TWINKV_FSYNC_INTERVAL_MS", default_value_t = defaults::FSYNC_INTERVAL_MS)]
    pub fsync_interval_ms: u64,
    /// A snapshot starts once the log since the newest one holds this many bytes and at least
    /// as many as that snapshot's image.
    #[arg(long, env = "TWINKV_CHECKPOINT_LOG_BYTES", default_value_t = defaults::CHECKPOINT_LOG_BYTES)]
    pub checkpoint_log_bytes: u64,
    /// Log segments roll at this size (for tests of rolling and compaction).
    #[arg(long, env = "TWINKV_LOG_SEGMENT_BYTES", default_value_t = defaults::LOG_SEGMENT_BYTES, hide = true)]
    pub log_segment_bytes: u64,
    /// How many recent change events are kept for watchers to resume from (`since`).
    #[arg(long, env = "TWINKV_WATCH_HISTORY", default_value_t = defaults::WATCH_HISTORY)]
    pub watch_history: usize,
    /// How often an idle watch stream gets a progress event (for tests).
    #[arg(long, env = "TWINKV_WATCH_PROGRESS_MS", default_value_t = defaults::WATCH_PROGRESS_MS, hide = true)]
    pub watch_progress_ms: u64,
    /// Longest key, in bytes of UTF-8 (at most 65536).
    #[arg(long, env = "TWINKV_MAX_KEY_BYTES", default_value_t = defaults::MAX_KEY_BYTES)]
    pub max_key_bytes: usize,
    /// Largest value body of a single-key write; larger gets 413.
    #[arg(long, env = "TWINKV_MAX_VALUE_BYTES", default_value_t = defaults::MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,
    /// Largest `POST /kv` batch body; larger gets 413.
    #[arg(long, env = "TWINKV_MAX_BATCH_BYTES", default_value_t = defaults::MAX_BATCH_BYTES)]
    pub max_batch_bytes: usize,
    /// HTTP worker threads [default: number of cores].
    #[arg(long, env = "TWINKV_WORKERS")]
    pub workers: Option<usize>,
    /// When set, every request but `GET /health` needs `Authorization: Bearer <token>`.
    #[arg(long, env = "TWINKV_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Allow a non-loopback address without `--auth-token` (anyone who can connect can write).
    #[arg(long, env = "TWINKV_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Cluster mode: this node's id, an integer of at least 1 (needs --raft-addr).
    #[arg(long, env = "TWINKV_NODE_ID", requires = "raft_addr")]
    pub node_id: Option<u64>,
    /// Cluster mode: the address this node serves Raft traffic on; setting it turns cluster
    /// mode on (needs --node-id).
    #[arg(long, env = "TWINKV_RAFT_ADDR", requires = "node_id")]
    pub raft_addr: Option<String>,
    /// Cluster mode: build a Raft snapshot every this many entries (for tests of snapshot
    /// transfer).
    #[arg(long, env = "TWINKV_RAFT_SNAPSHOT_ENTRIES", default_value_t = defaults::RAFT_SNAPSHOT_ENTRIES, hide = true)]
    pub raft_snapshot_entries: u64,
}

/// Flags of `twinkv inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// A data dir, or one snapshot file.
    #[arg(default_value = defaults::DATA_DIR)]
    pub path: PathBuf,
    /// Print `{"files": [...], "log": [...], "recovers_from": ..., "recovers_to_seq": n}`
    /// instead of the human report.
    #[arg(long, conflicts_with = "dump")]
    pub json: bool,
    /// Print the data map recovery would load (snapshot plus log), as one JSON object.
    #[arg(long)]
    pub dump: bool,
}
