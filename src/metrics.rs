//! The `/metrics` text: what HTTP and the log record here, plus the figures the caller hands in
//! at scrape time, encoded by `prometheus-client`.
//!
//! A leaf: this module names nothing else in the crate. Whoever owns a figure (seq, keys, the
//! snapshot and log status, the watcher count, the Raft state) keeps it and gathers it into a
//! [`Figures`] when `/metrics` is scraped. [`Metrics`] holds only what nobody else owns: the
//! request counters and the two latency histograms, fed by [`Metrics::record_request`] and
//! [`Metrics::record_fsync`] and read back only by [`Metrics::render`].
//!
//! # The hot path
//!
//! `record_request` runs on every request in every worker. prometheus-client's own `Family` is
//! an `RwLock<HashMap>` and its `Histogram` a `Mutex`, and even a shared `AtomicU64` would bounce
//! one cache line between the cores. So the counters here are split into shards, each aligned to
//! 128 bytes (two cache lines, as `crossbeam_utils::CachePadded` does on x86-64, whose spatial
//! prefetcher pulls lines in pairs). A thread picks its shard once, at its first request, in
//! turns, so up to as many workers as there are shards (the core count rounded up to a power of
//! two, 4 to 64) never share one; a request is three relaxed `fetch_add`s on lines only its own
//! thread writes. `render` sums the shards into plain totals and encodes them through a
//! [`Collector`] registered in a [`Registry`] made for that scrape.
//!
//! # Output
//!
//! The Prometheus text format 0.0.4 ([`Metrics::CONTENT_TYPE`]), which every Prometheus server,
//! `curl` and `grep` read as it stands: each counter's `# TYPE` line and samples read
//! `..._total`, and there is no `# EOF` (the OpenMetrics encoder would write both differently).
//! prometheus-client appends `_total` to a counter's name, so counters are named here without it.
//!
//! | metric | type | labels | from |
//! |---|---|---|---|
//! | `twinkv_keys` | gauge | | [`Figures::keys`] |
//! | `twinkv_seq` | gauge | | [`Figures::seq`] |
//! | `twinkv_durable_seq` | gauge | | [`Figures::durable_seq`] |
//! | `twinkv_snapshot_bytes` | gauge | | [`Figures::snapshot_bytes`] |
//! | `twinkv_snapshot_capacity_bytes` | gauge | | [`Figures::snapshot_capacity_bytes`] |
//! | `twinkv_snapshot_duration_seconds` | gauge | | [`Figures::snapshot_duration_seconds`] |
//! | `twinkv_snapshot_failures_total` | counter | | [`Figures::snapshot_failures_total`] |
//! | `twinkv_snapshots_total` | counter | | [`Figures::snapshots_total`] |
//! | `twinkv_log_bytes` | gauge | | [`Figures::log_bytes`] |
//! | `twinkv_log_fsyncs_total` | counter | | [`Figures::log_fsyncs_total`] |
//! | `twinkv_log_fsync_duration_seconds` | histogram | | [`Metrics::record_fsync`] |
//! | `twinkv_watchers` | gauge | | [`Figures::watchers`] |
//! | `twinkv_http_requests_total` | counter | `method`, `status` | [`Metrics::record_request`] |
//! | `twinkv_http_request_duration_seconds` | histogram | `method` | [`Metrics::record_request`] |
//! | `twinkv_raft_term` | gauge | | [`RaftFigures::term`] |
//! | `twinkv_raft_is_leader` | gauge (0 or 1) | | [`RaftFigures::is_leader`] |
//! | `twinkv_raft_commit_index` | gauge | | [`RaftFigures::commit_index`] |
//! | `twinkv_raft_applied_index` | gauge | | [`RaftFigures::applied_index`] |
//!
//! The four `twinkv_raft_*` metrics appear only when [`Figures::raft`] is `Some` (cluster mode).
//! `method` is `GET`, `HEAD`, `PUT`, `POST`, `DELETE` or `OTHER` (any other method, matched
//! case-sensitively as HTTP does); `status` is clamped into `100..=599`. A
//! `method`/`status` pair, and a method's duration histogram, appear once counted at least once.
//!
//! # Buckets
//!
//! Both histograms share one set of upper bounds: 5 µs to 10 s in 1–2.5–5 steps (`5e-06`,
//! `1e-05`, `2.5e-05`, `5e-05`, … `1`, `2.5`, `5`, `10`; 20 bounds, then `+Inf`). A GET costs the
//! server 2–3 µs of CPU and rarely more than tens of µs under load, so the low end tells cached
//! reads from slow ones; a `sync` write or an `fdatasync` takes 0.1–10 ms on an SSD and tens of
//! ms on a spinning disk, and seconds only when storage is in trouble, which the top buckets
//! catch. Long polls (blocking reads, watch streams) land in `+Inf` by design.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeGaugeValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Point-in-time figures the caller gathers at scrape time (gauges and monotonic totals it
/// already owns).
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Keys in the store.
    pub keys: u64,
    /// Seq of the last applied write.
    pub seq: u64,
    /// Every write at or below this seq survives power loss.
    pub durable_seq: u64,
    /// Length of the newest snapshot's image in bytes.
    pub snapshot_bytes: u64,
    /// Size of the newest snapshot's slot file in bytes (a README addition to the contract).
    pub snapshot_capacity_bytes: u64,
    /// How long the last successful snapshot took, from start to flushed.
    pub snapshot_duration_seconds: f64,
    /// Snapshot attempts that failed since start.
    pub snapshot_failures_total: u64,
    /// Snapshots written and flushed since start (a README addition to the contract).
    pub snapshots_total: u64,
    /// Bytes of log written since the newest snapshot.
    pub log_bytes: u64,
    /// Log flushes (`fdatasync` or equivalent) since start.
    pub log_fsyncs_total: u64,
    /// Watch streams open now.
    pub watchers: u64,
    /// Cluster mode only; None in standalone (then the four twinkv_raft_* metrics are left out).
    pub raft: Option<RaftFigures>,
}

/// This node's view of the Raft state, in cluster mode.
#[derive(Debug, Clone, Default)]
pub struct RaftFigures {
    /// The current term.
    pub term: u64,
    /// Whether this node is the leader (exported as 1 or 0).
    pub is_leader: bool,
    /// The highest log index known to be committed.
    pub commit_index: u64,
    /// The highest log index applied to the map.
    pub applied_index: u64,
}

/// Methods counted by name, in label order; the last, `OTHER`, counts every other method.
const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OTHER"];
/// Lowest and highest status counted; statuses outside are counted as the nearest of the two.
const STATUS_RANGE: (u16, u16) = (100, 599);
/// Counters per method, one per status in `STATUS_RANGE`.
const STATUSES: usize = (STATUS_RANGE.1 - STATUS_RANGE.0 + 1) as usize;

/// Upper bounds of both histograms' buckets, in nanoseconds (see "Buckets" in the module docs).
///
/// Kept in integers so the hot path compares integers; `n as f64 / 1e9` is exactly the decimal
/// bound (`5e-6` and so on), because IEEE division of two exact integers rounds correctly.
const BUCKET_NANOS: [u64; 20] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
/// Cells per histogram: one per bound, then one for `+Inf`.
const CELLS: usize = BUCKET_NANOS.len() + 1;

/// Fewest and most shards (see "The hot path" in the module docs).
const SHARDS: (usize, usize) = (4, 64);

/// Hands each thread its shard index at its first request, in turns.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard index, before reducing it modulo the shard count.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
}

/// Aligns `T` to its own pair of cache lines, so a neighbour's writes never invalidate it.
#[repr(align(128))]
struct Padded<T>(T);

/// One histogram's cells: per-bucket counts (not cumulative) and the sum, in nanoseconds.
struct HistogramCells {
    /// Observations per bucket; the last cell counts those above every bound.
    buckets: [AtomicU64; CELLS],
    /// Sum of the observations in nanoseconds (wraps after 584 years of summed time).
    sum_nanos: AtomicU64,
}

impl HistogramCells {
    const fn new() -> Self {
        HistogramCells {
            buckets: [const { AtomicU64::new(0) }; CELLS],
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // A bucket counts observations at or below its bound (`le`).
        let cell = BUCKET_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[cell].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn add_to(&self, totals: &mut HistogramTotals) {
        for (total, cell) in totals.buckets.iter_mut().zip(&self.buckets) {
            *total += cell.load(Ordering::Relaxed);
        }
        totals.sum_nanos = totals
            .sum_nanos
            .wrapping_add(self.sum_nanos.load(Ordering::Relaxed));
    }
}

/// One thread's share of the request figures.
struct Shard {
    /// Requests answered, by method then status: `requests[m][status - 100]`.
    requests: [[AtomicU64; STATUSES]; METHODS.len()],
    /// Request durations, by method.
    durations: [HistogramCells; METHODS.len()],
}

impl Shard {
    const fn new() -> Self {
        Shard {
            requests: [const { [const { AtomicU64::new(0) }; STATUSES] }; METHODS.len()],
            durations: [const { HistogramCells::new() }; METHODS.len()],
        }
    }
}

/// The counters and histograms nobody else owns; shared by every worker as `Arc<Metrics>`.
pub struct Metrics {
    /// The request figures, one shard per thread (a power of two of them); summed by `render`.
    shards: Box<[Padded<Shard>]>,
    /// Log fsync durations. One thread records them, so they need no shards, only padding away
    /// from `shards`, which every worker reads on every request.
    fsync: Padded<HistogramCells>,
}

impl Default for Metrics {
    fn default() -> Self {
        let shards = std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .next_power_of_two()
            .clamp(SHARDS.0, SHARDS.1);
        Metrics {
            shards: (0..shards).map(|_| Padded(Shard::new())).collect(),
            fsync: Padded(HistogramCells::new()),
        }
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The content type that `render`'s output must be served with.
    pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

    /// One finished HTTP request: counts `twinkv_http_requests_total{method,status}` and
    /// observes `twinkv_http_request_duration_seconds{method}`.
    ///
    /// Takes no lock and writes only this thread's shard, so every worker may call it on every
    /// request.
    pub fn record_request(&self, method: &str, status: u16, elapsed: Duration) {
        let m = method_index(method);
        let s = usize::from(status.clamp(STATUS_RANGE.0, STATUS_RANGE.1) - STATUS_RANGE.0);
        let shard = self.shard();
        shard.requests[m][s].fetch_add(1, Ordering::Relaxed);
        shard.durations[m].observe(elapsed);
    }

    /// One log fsync: observes `twinkv_log_fsync_duration_seconds`. Meant for one thread (the
    /// log's flusher); more are correct, only slower.
    pub fn record_fsync(&self, elapsed: Duration) {
        self.fsync.0.observe(elapsed);
    }

    /// The Prometheus text of every metric, given the caller's figures.
    pub fn render(&self, figures: &Figures) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape {
            figures: figures.clone(),
            totals: self.totals(),
        }));
        let mut text = String::with_capacity(8 * 1024);
        prometheus_text::encode(&mut text, &registry)
            .expect("encoding into a String cannot fail, and Scrape fails only when it does");
        text
    }

    /// The calling thread's shard.
    fn shard(&self) -> &Shard {
        // A thread being torn down has lost its index; any shard is correct, just shared.
        let index = SHARD.try_with(|i| *i).unwrap_or(0);
        // The shard count is a power of two, so the mask is the modulo.
        &self.shards[index & (self.shards.len() - 1)].0
    }

    /// Every shard summed, and the fsync histogram read.
    fn totals(&self) -> Totals {
        let mut requests = vec![[0u64; STATUSES]; METHODS.len()];
        let mut durations: [HistogramTotals; METHODS.len()] = Default::default();
        for Padded(shard) in self.shards.iter() {
            for (totals, cells) in requests.iter_mut().zip(&shard.requests) {
                for (total, cell) in totals.iter_mut().zip(cells) {
                    *total += cell.load(Ordering::Relaxed);
                }
            }
            for (totals, cells) in durations.iter_mut().zip(&shard.durations) {
                cells.add_to(totals);
            }
        }
        let mut fsync = HistogramTotals::default();
        self.fsync.0.add_to(&mut fsync);
        let requests = requests
            .iter()
            .enumerate()
            .flat_map(|(m, counts)| {
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, &n)| n > 0)
                    .map(move |(s, &n)| {
                        let status = STATUS_RANGE.0 + u16::try_from(s).expect("s < STATUSES");
                        (m, status, n)
                    })
            })
            .collect();
        Totals {
            requests,
            durations,
            fsync,
        }
    }
}

/// The index into `METHODS` that `method` is counted under.
fn method_index(method: &str) -> usize {
    match method {
        "GET" => 0,
        "HEAD" => 1,
        "PUT" => 2,
        "POST" => 3,
        "DELETE" => 4,
        _ => METHODS.len() - 1,
    }
}

/// A histogram summed over the shards at scrape time.
#[derive(Debug, Default, Clone, PartialEq)]
struct HistogramTotals {
    /// Observations per bucket, not cumulative; the last counts those above every bound.
    buckets: [u64; CELLS],
    /// Sum of the observations in nanoseconds.
    sum_nanos: u64,
}

impl HistogramTotals {
    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn encode(&self, encoder: &mut MetricEncoder) -> fmt::Result {
        // prometheus-client takes per-bucket counts, makes them cumulative, and adds `+Inf`
        // with the total count itself.
        let buckets: [(f64, u64); BUCKET_NANOS.len()] =
            std::array::from_fn(|i| (BUCKET_NANOS[i] as f64 / 1e9, self.buckets[i]));
        encoder.encode_histogram::<NoLabelSet>(
            self.sum_nanos as f64 / 1e9,
            self.count(),
            &buckets,
            None,
        )
    }
}

/// Everything `record_*` counted, summed at scrape time.
#[derive(Debug, Default)]
struct Totals {
    /// `(method index, status, count)` of every pair counted at least once, in method then
    /// status order.
    requests: Vec<(usize, u16, u64)>,
    /// Request durations, by method index.
    durations: [HistogramTotals; METHODS.len()],
    /// Log fsync durations.
    fsync: HistogramTotals,
}

/// One scrape's collector: owns that scrape's figures and totals, so it is `'static`.
#[derive(Debug)]
struct Scrape {
    figures: Figures,
    totals: Totals,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let f = &self.figures;
        let e = &mut encoder;
        gauge(e, "twinkv_keys", "Keys in the store.", f.keys)?;
        gauge(e, "twinkv_seq", "Seq of the last applied write.", f.seq)?;
        gauge(
            e,
            "twinkv_durable_seq",
            "Every write at or below this seq survives power loss.",
            f.durable_seq,
        )?;
        gauge(
            e,
            "twinkv_snapshot_bytes",
            "Length of the newest snapshot image in bytes.",
            f.snapshot_bytes,
        )?;
        gauge(
            e,
            "twinkv_snapshot_capacity_bytes",
            "Size of the newest snapshot's slot file in bytes.",
            f.snapshot_capacity_bytes,
        )?;
        gauge(
            e,
            "twinkv_snapshot_duration_seconds",
            "How long the last successful snapshot took, from start to flushed.",
            f.snapshot_duration_seconds,
        )?;
        // Counters are named without `_total`: the encoder appends it.
        counter(
            e,
            "twinkv_snapshot_failures",
            "Snapshot attempts that failed.",
            f.snapshot_failures_total,
        )?;
        counter(
            e,
            "twinkv_snapshots",
            "Snapshots written and flushed.",
            f.snapshots_total,
        )?;
        gauge(
            e,
            "twinkv_log_bytes",
            "Bytes of log written since the newest snapshot.",
            f.log_bytes,
        )?;
        counter(
            e,
            "twinkv_log_fsyncs",
            "Log flushes to disk.",
            f.log_fsyncs_total,
        )?;
        let mut fsync = e.encode_descriptor(
            "twinkv_log_fsync_duration_seconds",
            "How long each log flush to disk took.",
            None,
            MetricType::Histogram,
        )?;
        self.totals.fsync.encode(&mut fsync)?;
        gauge(e, "twinkv_watchers", "Watch streams open.", f.watchers)?;

        let mut requests = e.encode_descriptor(
            "twinkv_http_requests",
            "HTTP requests answered, by method and status.",
            None,
            MetricType::Counter,
        )?;
        for &(m, status, n) in &self.totals.requests {
            let labels = ([("method", METHODS[m])], [("status", status)]);
            ConstCounter::new(n).encode(requests.encode_family(&labels)?)?;
        }
        let mut durations = e.encode_descriptor(
            "twinkv_http_request_duration_seconds",
            "Time from a request reaching the server's routes to its response head, by method.",
            None,
            MetricType::Histogram,
        )?;
        for (method, h) in METHODS.iter().zip(&self.totals.durations) {
            if h.count() > 0 {
                h.encode(&mut durations.encode_family(&[("method", *method)])?)?;
            }
        }

        if let Some(r) = &f.raft {
            gauge(e, "twinkv_raft_term", "The current Raft term.", r.term)?;
            gauge(
                e,
                "twinkv_raft_is_leader",
                "1 when this node is the Raft leader, else 0.",
                u64::from(r.is_leader),
            )?;
            gauge(
                e,
                "twinkv_raft_commit_index",
                "The highest Raft log index known to be committed.",
                r.commit_index,
            )?;
            gauge(
                e,
                "twinkv_raft_applied_index",
                "The highest Raft log index applied to the map.",
                r.applied_index,
            )?;
        }
        Ok(())
    }
}

/// Encodes one unlabelled gauge.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// Encodes one unlabelled counter; `name` without `_total`, which the encoder appends.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    debug_assert!(!name.ends_with("_total"), "{name}: the encoder adds _total");
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    const MS: Duration = Duration::from_millis(1);

    /// Every sample in `text`, by series (`name` or `name{labels}`), checking each line parses.
    fn samples(text: &str) -> HashMap<String, f64> {
        let mut out = HashMap::new();
        for line in text.lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert!(
                out.insert(series.to_owned(), value).is_none(),
                "{series} twice"
            );
        }
        out
    }

    fn figures() -> Figures {
        Figures {
            keys: 11,
            seq: 22,
            durable_seq: 21,
            snapshot_bytes: 3333,
            snapshot_capacity_bytes: 4096,
            snapshot_duration_seconds: 0.25,
            snapshot_failures_total: 2,
            snapshots_total: 7,
            log_bytes: 555,
            log_fsyncs_total: 66,
            watchers: 3,
            raft: None,
        }
    }

    #[test]
    fn render_has_every_name_with_its_value() {
        let m = Metrics::default();
        m.record_request("GET", 200, MS);
        m.record_fsync(MS);
        let text = m.render(&figures());
        let got = samples(&text);
        for (series, value) in [
            ("twinkv_keys", 11.0),
            ("twinkv_seq", 22.0),
            ("twinkv_durable_seq", 21.0),
            ("twinkv_snapshot_bytes", 3333.0),
            ("twinkv_snapshot_capacity_bytes", 4096.0),
            ("twinkv_snapshot_duration_seconds", 0.25),
            ("twinkv_snapshot_failures_total", 2.0),
            ("twinkv_snapshots_total", 7.0),
            ("twinkv_log_bytes", 555.0),
            ("twinkv_log_fsyncs_total", 66.0),
            ("twinkv_log_fsync_duration_seconds_count", 1.0),
            ("twinkv_watchers", 3.0),
            (
                r#"twinkv_http_requests_total{method="GET",status="200"}"#,
                1.0,
            ),
            (
                r#"twinkv_http_request_duration_seconds_count{method="GET"}"#,
                1.0,
            ),
        ] {
            assert_eq!(got.get(series), Some(&value), "{series} in:\n{text}");
        }
        // A plain Prometheus scraper's format: counters typed under their `_total` name, integer
        // figures written as integers, and no OpenMetrics `# EOF`.
        for (name, kind) in [
            ("twinkv_keys", "gauge"),
            ("twinkv_snapshot_failures_total", "counter"),
            ("twinkv_snapshots_total", "counter"),
            ("twinkv_log_fsyncs_total", "counter"),
            ("twinkv_http_requests_total", "counter"),
            ("twinkv_log_fsync_duration_seconds", "histogram"),
            ("twinkv_http_request_duration_seconds", "histogram"),
        ] {
            assert!(
                text.contains(&format!("\n# TYPE {name} {kind}\n")),
                "{name} {kind} in:\n{text}"
            );
        }
        assert!(text.contains("\ntwinkv_seq 22\n"), "{text}");
        assert!(!text.contains("EOF"), "{text}");
        assert!(Metrics::CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn request_pairs_appear_once_counted() {
        let m = Metrics::default();
        let text = m.render(&Figures::default());
        assert!(text.contains("# TYPE twinkv_http_requests_total counter\n"));
        assert!(!text.contains("twinkv_http_requests_total{"), "{text}");
        assert!(
            !text.contains("twinkv_http_request_duration_seconds_"),
            "{text}"
        );
        m.record_request("DELETE", 404, MS);
        let got = samples(&m.render(&Figures::default()));
        let requests: Vec<_> = got
            .keys()
            .filter(|s| s.starts_with("twinkv_http_requests_total"))
            .collect();
        assert_eq!(
            requests,
            [r#"twinkv_http_requests_total{method="DELETE",status="404"}"#]
        );
        assert!(got.contains_key(r#"twinkv_http_request_duration_seconds_count{method="DELETE"}"#));
        assert!(!got.contains_key(r#"twinkv_http_request_duration_seconds_count{method="GET"}"#));
    }

    #[test]
    fn counters_sum_across_threads() {
        const THREADS: usize = 8;
        const EACH: usize = 1000;
        let m = Metrics::default();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let m = &m;
                s.spawn(move || {
                    for i in 0..EACH {
                        m.record_request("PUT", if t % 2 == 0 { 201 } else { 200 }, MS);
                        m.record_request("GET", 200, Duration::from_micros(i as u64));
                    }
                });
            }
        });
        let got = samples(&m.render(&Figures::default()));
        let each = EACH as f64;
        let half = (THREADS / 2) as f64;
        assert_eq!(
            got[r#"twinkv_http_requests_total{method="PUT",status="201"}"#],
            half * each
        );
        assert_eq!(
            got[r#"twinkv_http_requests_total{method="PUT",status="200"}"#],
            half * each
        );
        let gets = THREADS as f64 * each;
        assert_eq!(
            got[r#"twinkv_http_requests_total{method="GET",status="200"}"#],
            gets
        );
        assert_eq!(
            got[r#"twinkv_http_request_duration_seconds_count{method="GET"}"#],
            gets
        );
        // 0 + 1 + … + 999 µs in each thread.
        let sum = got[r#"twinkv_http_request_duration_seconds_sum{method="GET"}"#];
        let want = THREADS as f64 * (EACH * (EACH - 1) / 2) as f64 * 1e-6;
        assert!((sum - want).abs() < 1e-9, "{sum} != {want}");
        assert_eq!(
            got[r#"twinkv_http_request_duration_seconds_bucket{method="PUT",le="0.001"}"#],
            THREADS as f64 * each
        );
        assert_eq!(
            got[r#"twinkv_http_request_duration_seconds_bucket{method="PUT",le="0.0005"}"#],
            0.0
        );
    }

    #[test]
    fn threads_take_distinct_shards_in_turn() {
        let m = Metrics::default();
        assert!(m.shards.len().is_power_of_two() && m.shards.len() >= SHARDS.0);
        assert_eq!(std::mem::align_of::<Padded<Shard>>(), 128);
        let n = m.shards.len().min(4);
        let indices: Vec<usize> = (0..n)
            .map(|_| std::thread::spawn(|| SHARD.with(|i| *i)).join().unwrap())
            .collect();
        for (a, b) in indices.iter().zip(&indices[1..]) {
            assert!(b > a, "{indices:?}: indices are handed out in turn");
        }
    }

    #[test]
    fn histogram_buckets_count_and_sum() {
        let m = Metrics::default();
        for d in [
            Duration::from_micros(3),
            Duration::from_micros(5), // on a bound: counted in it (`le`)
            Duration::from_nanos(5_001),
            Duration::from_millis(7),
            Duration::from_secs(20), // above every bound
        ] {
            m.record_fsync(d);
        }
        let text = m.render(&Figures::default());
        let got = samples(&text);
        let bucket =
            |le: &str| got[&format!("twinkv_log_fsync_duration_seconds_bucket{{le=\"{le}\"}}")];
        assert_eq!(bucket("5e-06"), 2.0, "{text}");
        assert_eq!(bucket("1e-05"), 3.0);
        assert_eq!(bucket("0.005"), 3.0);
        assert_eq!(bucket("0.01"), 4.0);
        assert_eq!(bucket("10"), 4.0);
        assert_eq!(bucket("+Inf"), 5.0);
        assert_eq!(got["twinkv_log_fsync_duration_seconds_count"], 5.0);
        let sum = got["twinkv_log_fsync_duration_seconds_sum"];
        assert!((sum - 20.007013001).abs() < 1e-9, "{sum}");
        // Every bound, in order, then `+Inf`: 21 buckets, each cumulative count no smaller.
        let les: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("twinkv_log_fsync_duration_seconds_bucket{le=\""))
            .map(|l| l.split('"').next().unwrap())
            .collect();
        assert_eq!(
            les,
            [
                "5e-06", "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001",
                "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
                "10", "+Inf"
            ]
        );
    }

    #[test]
    fn unknown_methods_count_as_other_and_statuses_are_clamped() {
        let m = Metrics::default();
        m.record_request("PATCH", 405, MS);
        m.record_request("get", 200, MS); // methods are case-sensitive
        m.record_request("GET", 42, MS);
        m.record_request("GET", 999, MS);
        let got = samples(&m.render(&Figures::default()));
        let requests = |labels: &str| got.get(&format!("twinkv_http_requests_total{{{labels}}}"));
        assert_eq!(requests(r#"method="OTHER",status="405""#), Some(&1.0));
        assert_eq!(requests(r#"method="OTHER",status="200""#), Some(&1.0));
        assert_eq!(requests(r#"method="GET",status="100""#), Some(&1.0));
        assert_eq!(requests(r#"method="GET",status="599""#), Some(&1.0));
        assert_eq!(
            got[r#"twinkv_http_request_duration_seconds_count{method="OTHER"}"#],
            2.0
        );
        assert!(got
            .keys()
            .all(|s| !s.contains("PATCH") && !s.contains("\"get\"")));
    }

    #[test]
    fn raft_metrics_only_in_cluster_mode() {
        let m = Metrics::default();
        assert!(!m.render(&figures()).contains("twinkv_raft_"));
        let mut f = figures();
        f.raft = Some(RaftFigures {
            term: 4,
            is_leader: true,
            commit_index: 90,
            applied_index: 89,
        });
        let got = samples(&m.render(&f));
        assert_eq!(got["twinkv_raft_term"], 4.0);
        assert_eq!(got["twinkv_raft_is_leader"], 1.0);
        assert_eq!(got["twinkv_raft_commit_index"], 90.0);
        assert_eq!(got["twinkv_raft_applied_index"], 89.0);
        f.raft.as_mut().unwrap().is_leader = false;
        assert_eq!(samples(&m.render(&f))["twinkv_raft_is_leader"], 0.0);
    }

    #[test]
    fn bucket_bounds_rise() {
        assert!(BUCKET_NANOS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(BUCKET_NANOS[0] as f64 / 1e9, 5e-6);
        assert_eq!(BUCKET_NANOS[2] as f64 / 1e9, 2.5e-5);
    }

    #[test]
    fn metrics_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<Metrics>();
        shared::<std::sync::Arc<Metrics>>();
    }
}
