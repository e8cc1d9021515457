//! Every default of the command line, once: `cli` shows them in `--help`, `config` and the
//! library fall back to them. A leaf module, so both can use it without importing each other.

/// `--addr`.
pub const ADDR: &str = "127.0.0.1:8080";
/// `--data-dir`.
pub const DATA_DIR: &str = "./data";
/// `--durability`.
pub const DURABILITY: &str = "async";
/// `--fsync-interval-ms`: in `async`, the longest an answered write stays in the log unflushed.
pub const FSYNC_INTERVAL_MS: u64 = 100;
/// `--checkpoint-log-bytes`: a snapshot starts once the log since the newest one holds this
/// many bytes (and at least as many as that snapshot's image).
pub const CHECKPOINT_LOG_BYTES: u64 = 64 * 1024 * 1024;
/// `--max-key-bytes`.
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest `--max-key-bytes` accepted: keys are stored with a 32-bit length, and no URL a
/// client sends is longer in practice.
pub const MAX_KEY_BYTES_LIMIT: usize = 65_536;
/// `--max-value-bytes`.
pub const MAX_VALUE_BYTES: usize = 1_048_576;
/// `--max-batch-bytes`.
pub const MAX_BATCH_BYTES: usize = 16_777_216;
/// Largest page `GET /kv` returns.
pub const MAX_LIST_LIMIT: usize = 10_000;
/// Page size when `limit` is not given.
pub const DEFAULT_LIST_LIMIT: usize = 1000;
/// The hidden `--log-segment-bytes`: log segments roll at this size.
pub const LOG_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// The longest TTL a write may ask for: ten years, in seconds.
pub const MAX_TTL_SECS: u64 = 315_360_000;
/// `--watch-history`: how many recent change events are kept for watchers to resume from.
pub const WATCH_HISTORY: usize = 100_000;
/// The hidden `--watch-progress-ms`: an idle watch stream gets a progress event this often.
pub const WATCH_PROGRESS_MS: u64 = 10_000;

/// Cluster mode: a node builds a Raft snapshot (and purges the log before it) every this many
/// entries.
pub const RAFT_SNAPSHOT_ENTRIES: u64 = 50_000;
