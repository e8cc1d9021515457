//! Does a mass expiry stall writes? A store starts with 100 000 keys whose expiry time has
//! passed; the writer removes them at most `MAX_EXPIRE_ROUND` (1000) per batch, between client
//! batches. Measured: the latency of one put (sent, then awaited) while that backlog drains,
//! against the same put on a store with nothing to expire, in the same run.
//!
//! Run with `cargo bench --bench expiry`. Each sample starts a fresh store (not timed) and
//! times `iters` puts one after another, so the first puts of every sample meet the backlog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use twinkv::store::{Downstream, Entries, Entry, Initial, PendingValue};
use twinkv::{Durability, Store};

const KEYS: usize = 100_000;

fn store(expired: bool) -> Store {
    let entries: Entries = (0..KEYS)
        .map(|i| {
            let at = expired.then_some(1);
            Entry::expiring(&format!("key{i:08}"), 1, b"\"v\"", at)
        })
        .collect();
    let initial = Initial {
        entries,
        seq: 1,
        index: None,
    };
    Store::start(initial, Durability::Async, Downstream::default()).expect("start the writer")
}

/// Times `iters` sequential puts on a fresh store; returns the total and the slowest one.
fn puts(expired: bool, iters: u64) -> (Duration, Duration) {
    let s = store(expired);
    let h = s.handle();
    let mut total = Duration::ZERO;
    let mut worst = Duration::ZERO;
    for i in 0..iters {
        let t = Instant::now();
        h.put_blocking(Arc::from(format!("new{i}")), PendingValue::from_text("x"))
            .expect("put");
        let d = t.elapsed();
        total += d;
        worst = worst.max(d);
    }
    s.shutdown();
    (total, worst)
}

fn main() {
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut g = c.benchmark_group("put while keys expire");
    for (name, expired) in [("nothing to expire", false), ("100k keys expired", true)] {
        g.bench_function(name, |b| b.iter_custom(|iters| puts(expired, iters).0));
    }
    g.finish();
    // The figure the issue asks for: the slowest single put while 100 000 keys drain, which
    // waits for at most one bounded round.
    let (_, calm) = puts(false, 200);
    let (total, stalled) = puts(true, 200);
    println!(
        "slowest put of 200: {calm:?} with nothing to expire, {stalled:?} while 100 000 keys \
         expire (mean {:?})",
        total / 200
    );
    c.final_summary();
}
