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
    /// Report on the snapshot files of a data dir (or one file), without any lock.
    Inspect(InspectArgs),
}

/// Flags of `twinkv serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the chosen one is printed).
    #[arg(long, env = "TWINKV_ADDR", default_value = defaults::ADDR)]
    pub addr: String,
    /// Directory for the snapshot files and the lock file; created if missing.
    #[arg(long, env = "TWINKV_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    /// When a write is answered: `async` once visible, `sync` once in a flushed snapshot.
    #[arg(
        long,
        env = "TWINKV_DURABILITY",
        default_value = defaults::DURABILITY,
        value_parser = clap::builder::PossibleValuesParser::new(["async", "sync"])
            .try_map(|s| s.parse::<Durability>()),
    )]
    pub durability: Durability,
    /// In `async`, the longest a write waits before a snapshot holding it starts.
    #[arg(long, env = "TWINKV_SNAPSHOT_INTERVAL_MS", default_value_t = defaults::SNAPSHOT_INTERVAL_MS)]
    pub snapshot_interval_ms: u64,
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
}

/// Flags of `twinkv inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// A data dir, or one snapshot file.
    #[arg(default_value = defaults::DATA_DIR)]
    pub path: PathBuf,
    /// Print `{"files": [...], "recovers_from": ...}` instead of the human report.
    #[arg(long, conflicts_with = "dump")]
    pub json: bool,
    /// Print the data map recovery would load, as one JSON object.
    #[arg(long)]
    pub dump: bool,
}
