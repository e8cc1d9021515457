//! `Config`: the serve flags, validated once. No other module reads flags or the environment.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::ServeArgs;
use crate::defaults;
use crate::store::Durability;

/// Size limits applied to every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key in bytes.
    pub max_key_bytes: usize,
    /// Largest single value body.
    pub max_value_bytes: usize,
    /// Largest batch body.
    pub max_batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: defaults::MAX_KEY_BYTES,
            max_value_bytes: defaults::MAX_VALUE_BYTES,
            max_batch_bytes: defaults::MAX_BATCH_BYTES,
        }
    }
}

/// Everything `serve` needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The data dir.
    pub data_dir: PathBuf,
    /// When writes are answered.
    pub durability: Durability,
    /// In `async`, the longest an answered write stays in the log unflushed.
    pub fsync_interval: Duration,
    /// Log bytes since the newest snapshot that start the next one.
    pub checkpoint_log_bytes: u64,
    /// Log segments roll at this size.
    pub log_segment_bytes: u64,
    /// Change events kept for watchers to resume from.
    pub watch_history: usize,
    /// An idle watch stream gets a progress event this often.
    pub watch_progress: Duration,
    /// Request size limits.
    pub limits: Limits,
    /// HTTP worker threads.
    pub workers: usize,
    /// The bearer token, if required.
    pub auth_token: Option<String>,
    /// A fault to inject (tests of debug builds only).
    pub fault: Option<TestFault>,
    /// Cluster mode: this node's id and Raft address.
    pub cluster: Option<ClusterConfig>,
}

/// `--node-id` and `--raft-addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id (at least 1).
    pub node_id: u64,
    /// Where Raft RPCs are served.
    pub raft_addr: SocketAddr,
    /// A Raft snapshot every this many entries.
    pub snapshot_entries: u64,
}

/// Why the flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The address does not parse or resolve.
    #[error("invalid --addr {0:?}: {1}")]
    Addr(String, String),
    /// A non-loopback address without a token.
    #[error("refusing to listen on non-loopback address {0} without --auth-token (pass --insecure-no-auth to allow it)")]
    NotLoopback(SocketAddr),
    /// A limit or count that must be positive is zero.
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    /// An empty token would accept `Bearer ` and mean nothing.
    #[error("--auth-token must not be empty")]
    EmptyToken,
    /// A key limit past what an entry can hold.
    #[error("--max-key-bytes must be at most {}", defaults::MAX_KEY_BYTES_LIMIT)]
    KeyLimit,
    /// `--node-id 0`.
    #[error("--node-id must be at least 1")]
    NodeId,
    /// The Raft address does not parse or resolve.
    #[error("invalid --raft-addr {0:?}: {1}")]
    RaftAddr(String, String),
    /// An unknown `TWINKV_TEST_FAULT` (debug builds only).
    #[error(
        "unknown TWINKV_TEST_FAULT {0:?} (known: snapshot-panic, checkpoint-crash-written, \
         checkpoint-crash-flushed, checkpoint-crash-compacted)"
    )]
    Fault(String),
}

impl Config {
    /// Validates the raw flags.
    pub fn from_args(args: &ServeArgs) -> Result<Config, ConfigError> {
        let addrs: Vec<SocketAddr> = match args.addr.parse::<SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) => args
                .addr
                .to_socket_addrs()
                .map_err(|e| ConfigError::Addr(args.addr.clone(), e.to_string()))?
                .collect(),
        };
        let addr = *addrs
            .first()
            .ok_or_else(|| ConfigError::Addr(args.addr.clone(), "resolves to nothing".into()))?;
        if args.auth_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken);
        }
        if args.auth_token.is_none() && !args.insecure_no_auth {
            if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                return Err(ConfigError::NotLoopback(*a));
            }
        }
        let positive = |v: usize, name| {
            if v == 0 {
                Err(ConfigError::Zero(name))
            } else {
                Ok(v)
            }
        };
        if args.max_key_bytes > defaults::MAX_KEY_BYTES_LIMIT {
            return Err(ConfigError::KeyLimit);
        }
        let limits = Limits {
            max_key_bytes: positive(args.max_key_bytes, "max-key-bytes")?,
            max_value_bytes: positive(args.max_value_bytes, "max-value-bytes")?,
            max_batch_bytes: positive(args.max_batch_bytes, "max-batch-bytes")?,
        };
        let workers = match args.workers {
            Some(n) => positive(n, "workers")?,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let cluster = match (args.node_id, &args.raft_addr) {
            (Some(0), _) => return Err(ConfigError::NodeId),
            (Some(node_id), Some(raw)) => {
                let bad = |e: String| ConfigError::RaftAddr(raw.clone(), e);
                let raft_addr = raw
                    .to_socket_addrs()
                    .map_err(|e| bad(e.to_string()))?
                    .next()
                    .ok_or_else(|| bad("resolves to nothing".into()))?;
                if args.auth_token.is_none()
                    && !args.insecure_no_auth
                    && !raft_addr.ip().is_loopback()
                {
                    return Err(ConfigError::NotLoopback(raft_addr));
                }
                Some(ClusterConfig {
                    node_id,
                    raft_addr,
                    snapshot_entries: positive(
                        args.raft_snapshot_entries as usize,
                        "raft-snapshot-entries",
                    )? as u64,
                })
            }
            _ => None,
        };
        Ok(Config {
            cluster,
            addr,
            data_dir: args.data_dir.clone(),
            durability: args.durability,
            fsync_interval: Duration::from_millis(positive(
                args.fsync_interval_ms as usize,
                "fsync-interval-ms",
            )? as u64),
            checkpoint_log_bytes: args.checkpoint_log_bytes,
            log_segment_bytes: positive(args.log_segment_bytes as usize, "log-segment-bytes")?
                as u64,
            watch_history: args.watch_history,
            watch_progress: Duration::from_millis(positive(
                args.watch_progress_ms as usize,
                "watch-progress-ms",
            )? as u64),
            limits,
            workers,
            auth_token: args.auth_token.clone(),
            fault: test_fault()?,
        })
    }
}

/// A fault a test asks the server to inject, so the supervision of background threads and
/// recovery from a crash at a chosen instant can be tested against the real binary. Read only
/// in debug builds; a release build never has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestFault {
    /// `snapshot-panic`: the snapshot thread panics at its first attempt.
    SnapshotPanic,
    /// `checkpoint-crash-written`: the process aborts in its second checkpoint once every byte
    /// of the image is in the slot, before the bytes after it are blanked and before the flush,
    /// so recovery meets a slot caught in the middle of a write.
    CheckpointCrashWritten,
    /// `checkpoint-crash-flushed`: the process aborts in its second checkpoint once the image
    /// is flushed, before its seq is published and before any log segment is deleted, so
    /// recovery meets a newer image than the server ever reported.
    CheckpointCrashFlushed,
    /// `checkpoint-crash-compacted`: the process aborts in its second checkpoint once the log
    /// segments both slots cover are deleted, so recovery meets a log cut back to the older
    /// image.
    CheckpointCrashCompacted,
}

impl TestFault {
    /// Every fault, by its `TWINKV_TEST_FAULT` name.
    pub const ALL: [(&'static str, TestFault); 4] = [
        ("snapshot-panic", TestFault::SnapshotPanic),
        (
            "checkpoint-crash-written",
            TestFault::CheckpointCrashWritten,
        ),
        (
            "checkpoint-crash-flushed",
            TestFault::CheckpointCrashFlushed,
        ),
        (
            "checkpoint-crash-compacted",
            TestFault::CheckpointCrashCompacted,
        ),
    ];

    /// The fault a `TWINKV_TEST_FAULT` value names, if any.
    pub fn from_name(name: &str) -> Option<TestFault> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, fault)| fault)
    }
}

#[cfg(debug_assertions)]
fn test_fault() -> Result<Option<TestFault>, ConfigError> {
    match std::env::var("TWINKV_TEST_FAULT") {
        Err(_) => Ok(None),
        Ok(v) => TestFault::from_name(&v)
            .map(Some)
            .ok_or(ConfigError::Fault(v)),
    }
}

#[cfg(not(debug_assertions))]
fn test_fault() -> Result<Option<TestFault>, ConfigError> {
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("twinkv").chain(args.iter().copied()))
            .expect("flags parse");
        Config::from_args(&cli.serve)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.durability, Durability::Async);
        assert_eq!(c.fsync_interval, Duration::from_millis(100));
        assert_eq!(c.checkpoint_log_bytes, 67_108_864);
        assert_eq!(c.limits, Limits::default());
        assert!(c.workers >= 1);
        assert_eq!(c.auth_token, None);
    }

    #[test]
    fn non_loopback_needs_a_token_or_an_explicit_opt_out() {
        assert!(matches!(
            parse(&["--addr", "0.0.0.0:1"]),
            Err(ConfigError::NotLoopback(_))
        ));
        assert!(parse(&["--addr", "0.0.0.0:1", "--auth-token", "s3"]).is_ok());
        assert!(parse(&["--addr", "0.0.0.0:1", "--insecure-no-auth"]).is_ok());
        assert!(parse(&["--addr", "[::1]:0"]).is_ok());
        assert!(parse(&["--addr", "localhost:0"]).is_ok());
    }

    #[test]
    fn every_test_fault_is_parsed_by_its_name_and_listed_when_one_is_unknown() {
        let unknown = ConfigError::Fault("nonsense".into()).to_string();
        for (name, fault) in TestFault::ALL {
            assert_eq!(TestFault::from_name(name), Some(fault));
            assert!(unknown.contains(name), "{name} is missing from: {unknown}");
        }
        assert_eq!(TestFault::from_name("nonsense"), None);
        assert_eq!(TestFault::from_name("checkpoint-crash"), None);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(matches!(
            parse(&["--addr", "nonsense"]),
            Err(ConfigError::Addr(..))
        ));
        assert!(matches!(
            parse(&["--max-key-bytes", "0"]),
            Err(ConfigError::Zero(_))
        ));
        assert!(matches!(
            parse(&["--workers", "0"]),
            Err(ConfigError::Zero(_))
        ));
        assert!(matches!(
            parse(&["--auth-token", ""]),
            Err(ConfigError::EmptyToken)
        ));
        assert!(parse(&["--max-key-bytes", "65536"]).is_ok());
        assert!(matches!(
            parse(&["--max-key-bytes", "65537"]),
            Err(ConfigError::KeyLimit)
        ));
    }
}
