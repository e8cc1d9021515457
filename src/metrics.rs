//! Figures shared by the store, the snapshot thread and HTTP, and their Prometheus rendering.
//!
//! Every figure is an atomic or an `ArcSwap`, so the hot paths that update them (a request
//! finishing, a batch publishing) and a scrape reading them never take a lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::snapshot::SnapshotStatus;

/// Methods counted by name; anything else is counted as `OTHER`.
const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OTHER"];
/// Status codes 100..=599, one counter each.
const STATUSES: usize = 500;

/// The shared figures.
#[derive(Debug)]
pub struct Metrics {
    /// The seq of the last published batch (what readers see).
    pub seq: AtomicU64,
    /// Keys in the map after the last published batch.
    pub keys: AtomicU64,
    /// The snapshot thread's latest report; replaced whole after every attempt.
    pub snapshot: ArcSwap<SnapshotStatus>,
    /// Requests by method and status: `METHODS.len() * STATUSES` counters.
    http: Box<[AtomicU64]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            seq: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            snapshot: ArcSwap::from_pointee(SnapshotStatus::default()),
            http: (0..METHODS.len() * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl Metrics {
    /// Counts one finished HTTP request.
    pub fn count_request(&self, method: &str, status: u16) {
        let m = METHODS[..5].iter().position(|&x| x == method).unwrap_or(5);
        let s = usize::from(status.clamp(100, 599) - 100);
        self.http[m * STATUSES + s].fetch_add(1, Ordering::Relaxed);
    }

    /// The current snapshot report.
    pub fn snapshot_status(&self) -> Arc<SnapshotStatus> {
        self.snapshot.load_full()
    }

    /// Renders every figure in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let snap = self.snapshot.load();
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
            self.keys.load(Ordering::Acquire).to_string(),
        );
        gauge(
            "twinkv_seq",
            "gauge",
            "Seq of the last applied write.",
            self.seq.load(Ordering::Acquire).to_string(),
        );
        gauge(
            "twinkv_durable_seq",
            "gauge",
            "Seq held by the newest flushed snapshot.",
            snap.durable_seq.to_string(),
        );
        gauge(
            "twinkv_snapshot_bytes",
            "gauge",
            "Length of the newest snapshot image in bytes.",
            snap.bytes.to_string(),
        );
        gauge(
            "twinkv_snapshot_capacity_bytes",
            "gauge",
            "Size of the newest snapshot's slot file in bytes.",
            snap.capacity.to_string(),
        );
        gauge(
            "twinkv_snapshot_duration_seconds",
            "gauge",
            "How long the last successful snapshot took, from start to flushed.",
            format!("{}", snap.last_duration.as_secs_f64()),
        );
        gauge(
            "twinkv_snapshot_failures_total",
            "counter",
            "Snapshot attempts that failed.",
            snap.failures.to_string(),
        );
        gauge(
            "twinkv_snapshots_total",
            "counter",
            "Snapshots written and flushed.",
            snap.written.to_string(),
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
        m.count_request("GET", 200);
        m.count_request("GET", 200);
        m.count_request("PATCH", 405);
        let text = m.render();
        assert!(text.contains("twinkv_http_requests_total{method=\"GET\",status=\"200\"} 2\n"));
        assert!(text.contains("twinkv_http_requests_total{method=\"OTHER\",status=\"405\"} 1\n"));
        assert!(text.contains("\ntwinkv_keys 0\n"));
        assert!(text.contains("\ntwinkv_snapshot_failures_total 0\n"));
    }
}
