//! Prometheus figures: given by their owners at scrape time, rendered here.
//!
//! This module depends on nothing else in the crate. The only state it keeps is what it is
//! told on the hot path (requests), in atomics, so recording never takes a lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Methods counted by name; anything else is counted as `OTHER`.
const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OTHER"];
/// Status codes 100..=599, one counter each.
const STATUSES: usize = 500;

/// Point-in-time figures the caller gathers at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Keys in the map.
    pub keys: u64,
    /// Seq of the last applied write.
    pub seq: u64,
    /// Every write at or below it survives power loss.
    pub durable_seq: u64,
    /// Length of the newest snapshot image.
    pub snapshot_bytes: u64,
    /// How long the last successful snapshot took.
    pub snapshot_duration_seconds: f64,
    /// Failed snapshot attempts since start.
    pub snapshot_failures_total: u64,
    /// Snapshots written and flushed since start.
    pub snapshots_total: u64,
    /// Log bytes written since the newest snapshot.
    pub log_bytes: u64,
    /// Log flushes since start.
    pub log_fsyncs_total: u64,
    /// Open watch streams.
    pub watchers: u64,
}

/// The request counters.
#[derive(Debug)]
pub struct Metrics {
    /// Requests by method and status: `METHODS.len() * STATUSES` counters.
    http: Box<[AtomicU64]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http: (0..METHODS.len() * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl Metrics {
    /// The content type of [`Metrics::render`]'s output.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// Counts one finished HTTP request.
    pub fn record_request(&self, method: &str, status: u16, _elapsed: Duration) {
        let m = METHODS[..5].iter().position(|&x| x == method).unwrap_or(5);
        let s = usize::from(status.clamp(100, 599) - 100);
        self.http[m * STATUSES + s].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every figure in the Prometheus text exposition format.
    pub fn render(&self, f: &Figures) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            "twinkv_keys",
            "gauge",
            "Keys in the store.",
            f.keys.to_string(),
        );
        gauge(
            "twinkv_seq",
            "gauge",
            "Seq of the last applied write.",
            f.seq.to_string(),
        );
        gauge(
            "twinkv_durable_seq",
            "gauge",
            "Seq held by the newest flushed snapshot.",
            f.durable_seq.to_string(),
        );
        gauge(
            "twinkv_snapshot_bytes",
            "gauge",
            "Length of the newest snapshot image in bytes.",
            f.snapshot_bytes.to_string(),
        );
        gauge(
            "twinkv_snapshot_duration_seconds",
            "gauge",
            "How long the last successful snapshot took, from start to flushed.",
            format!("{}", f.snapshot_duration_seconds),
        );
        gauge(
            "twinkv_snapshot_failures_total",
            "counter",
            "Snapshot attempts that failed.",
            f.snapshot_failures_total.to_string(),
        );
        gauge(
            "twinkv_snapshots_total",
            "counter",
            "Snapshots written and flushed.",
            f.snapshots_total.to_string(),
        );
        gauge(
            "twinkv_log_bytes",
            "gauge",
            "Log bytes written since the newest snapshot.",
            f.log_bytes.to_string(),
        );
        gauge(
            "twinkv_log_fsyncs_total",
            "counter",
            "Log flushes.",
            f.log_fsyncs_total.to_string(),
        );
        gauge(
            "twinkv_watchers",
            "gauge",
            "Open watch streams.",
            f.watchers.to_string(),
        );
        out.push_str(
            "# HELP twinkv_http_requests_total HTTP requests answered, by method and status.\n",
        );
        out.push_str("# TYPE twinkv_http_requests_total counter\n");
        for (m, method) in METHODS.iter().enumerate() {
            for s in 0..STATUSES {
                let n = self.http[m * STATUSES + s].load(Ordering::Relaxed);
                if n > 0 {
                    let status = s + 100;
                    let _ = writeln!(
                        out,
                        "twinkv_http_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counted_requests() {
        let m = Metrics::default();
        m.record_request("GET", 200, Duration::ZERO);
        m.record_request("GET", 200, Duration::ZERO);
        m.record_request("PATCH", 405, Duration::ZERO);
        let text = m.render(&Figures::default());
        assert!(text.contains("twinkv_http_requests_total{method=\"GET\",status=\"200\"} 2\n"));
        assert!(text.contains("twinkv_http_requests_total{method=\"OTHER\",status=\"405\"} 1\n"));
        assert!(text.contains("\ntwinkv_keys 0\n"));
        assert!(text.contains("\ntwinkv_snapshot_failures_total 0\n"));
    }
}
