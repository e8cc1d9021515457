//! The store's two hot paths, measured against the maps a user would reach for instead.
//!
//! - **Point reads** through the left-right [`Reader`] versus `DashMap`, `RwLock<HashMap>` and
//!   `Mutex<HashMap>` (and `RwLock<BTreeMap>`, an ordered map like the set each left-right copy
//!   keeps for listings, to show what point reads would cost without the copies' hash index),
//!   at 10 000 and 1 000 000 keys, with no writer and with one writer thread writing as fast as
//!   it can, from 1 and 2 reader threads. Criterion's time per iteration is
//!   the mean latency of one read on one thread; its elements/s are the reads/s of one thread.
//! - **Write throughput** of the writer thread with one publish per batch of 1, 64 and 1024
//!   puts: send N puts with `put_nowait`, then wait for the N replies.
//!
//! Snapshots are off (`None` for the snapshot sender), so each figure is the map alone. Keys
//! (`key00000000`…) and values (100 bytes of JSON) are made by index, and every random choice
//! comes from a SplitMix64 generator with a fixed seed, so two runs read the same keys in the
//! same order. At the end a summary table gives the median of the measured samples and the
//! ratios against `RwLock<HashMap>` of the same run (see BENCHMARKS.md).
//!
//! Run with `cargo bench --bench store`. Without `--bench` (as `cargo test --benches` runs it)
//! each benchmark runs once, at 10 000 keys only.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use dashmap::DashMap;
use twinkv::snapshot::format::decode;
use twinkv::store::{Downstream, Initial, PendingValue};
use twinkv::{Durability, Reader, Store, StoreHandle};

#[path = "support/data.rs"]
mod data;
use data::{image, key, text, Rng, SEED};

/// Samples per benchmark; the summary takes the median of the last this many.
const SAMPLES: usize = 10;

/// A value as the baselines keep it: the version's eight bytes, then the JSON, in one shared
/// allocation (what a user's `HashMap` of ready-to-send values would hold).
type Val = Arc<[u8]>;

/// Encodes `text` as a JSON string behind its version, as a write does.
fn val(text: &str, version: u64) -> Val {
    let mut buf = Vec::with_capacity(8 + text.len() + 2);
    buf.extend_from_slice(&version.to_le_bytes());
    serde_json::to_writer(&mut buf, text).expect("serializing a string into memory");
    Arc::from(buf)
}

/// The key set every contender is filled with, built once per size.
struct Data {
    keys: Vec<Arc<str>>,
    values: Vec<Val>,
}

impl Data {
    fn new(n: usize) -> Data {
        let keys = (0..n).map(|i| Arc::from(key(i))).collect();
        let values = (0..n).map(|i| val(&text(i, 0), i as u64 + 1)).collect();
        Data { keys, values }
    }

    fn pairs(&self) -> impl Iterator<Item = (Arc<str>, Val)> + '_ {
        self.keys.iter().cloned().zip(self.values.iter().cloned())
    }
}

/// Texts the background writer cycles through, so it spends its time writing, not formatting.
fn texts(round: u64) -> Vec<String> {
    (0..256).map(|i| text(i, round)).collect()
}

/// One thread's way of reading a contender.
trait Read {
    /// Looks `key` up and copies its value out (an `Arc` clone), as a GET does; says whether
    /// it was found.
    fn probe(&self, key: &str) -> bool;
}

/// A map under test, shared by reference between the reader threads and the writer thread.
trait Contender: Sync {
    const NAME: &'static str;
    type Reader<'a>: Read
    where
        Self: 'a;
    /// A reader for the calling thread.
    fn reader(&self) -> Self::Reader<'_>;
    /// Sets `key` to a new value. Each call encodes and allocates the value, as a write does.
    fn write(&self, key: &Arc<str>, text: &str, version: u64);
}

/// twinkv's store. Its writes go through the writer thread one `put_blocking` at a time: one
/// publish per write, the most publishes per second, so the worst case for readers.
struct LeftRight {
    store: Store,
    handle: StoreHandle,
}

impl LeftRight {
    /// Starts a store holding keys `0..n`, loaded the way recovery loads them.
    fn new(n: usize) -> LeftRight {
        let img = decode(&image(n)).expect("a valid image");
        let initial = Initial {
            entries: img.entries,
            seq: img.seq,
            index: None,
        };
        let store = Store::start(initial, Durability::Async, Downstream::default())
            .expect("start the writer thread");
        let handle = store.handle();
        LeftRight { store, handle }
    }
}

impl Read for Reader {
    #[inline]
    fn probe(&self, key: &str) -> bool {
        let found = self.get(key);
        let hit = found.is_some();
        black_box(found);
        hit
    }
}

impl Contender for LeftRight {
    const NAME: &'static str = "left-right";
    type Reader<'a> = Reader;
    fn reader(&self) -> Reader {
        self.store.readers().reader()
    }
    fn write(&self, key: &Arc<str>, text: &str, _version: u64) {
        self.handle
            .put_blocking(Arc::clone(key), PendingValue::from_text(text))
            .expect("the writer is running");
    }
}

/// The sharded-lock map a user would reach for first.
struct Dash(DashMap<Arc<str>, Val>);

impl Read for &Dash {
    #[inline]
    fn probe(&self, key: &str) -> bool {
        black_box(self.0.get(key).map(|v| Arc::clone(v.value()))).is_some()
    }
}

impl Contender for Dash {
    const NAME: &'static str = "dashmap";
    type Reader<'a> = &'a Dash;
    fn reader(&self) -> &Dash {
        self
    }
    fn write(&self, key: &Arc<str>, text: &str, version: u64) {
        let value = val(text, version);
        self.0.insert(Arc::clone(key), value);
    }
}

/// One reader-writer lock around the whole map.
struct Rw(RwLock<HashMap<Arc<str>, Val>>);

impl Read for &Rw {
    #[inline]
    fn probe(&self, key: &str) -> bool {
        black_box(self.0.read().expect("not poisoned").get(key).cloned()).is_some()
    }
}

impl Contender for Rw {
    const NAME: &'static str = "rwlock-hashmap";
    type Reader<'a> = &'a Rw;
    fn reader(&self) -> &Rw {
        self
    }
    fn write(&self, key: &Arc<str>, text: &str, version: u64) {
        let value = val(text, version);
        self.0
            .write()
            .expect("not poisoned")
            .insert(Arc::clone(key), value);
    }
}

/// An ordered map with out-of-line keys (each comparison follows a pointer), like the ordered set
/// each left-right copy keeps for listings, behind one reader-writer lock: what a point read
/// would cost if it searched that set (as before the copies had a hash index) instead of the
/// index.
struct RwTree(RwLock<BTreeMap<Arc<str>, Val>>);

impl Read for &RwTree {
    #[inline]
    fn probe(&self, key: &str) -> bool {
        black_box(self.0.read().expect("not poisoned").get(key).cloned()).is_some()
    }
}

impl Contender for RwTree {
    const NAME: &'static str = "rwlock-btreemap";
    type Reader<'a> = &'a RwTree;
    fn reader(&self) -> &RwTree {
        self
    }
    fn write(&self, key: &Arc<str>, text: &str, version: u64) {
        let value = val(text, version);
        self.0
            .write()
            .expect("not poisoned")
            .insert(Arc::clone(key), value);
    }
}

/// One mutex around the whole map: readers queue behind each other too.
struct Mx(Mutex<HashMap<Arc<str>, Val>>);

impl Read for &Mx {
    #[inline]
    fn probe(&self, key: &str) -> bool {
        black_box(self.0.lock().expect("not poisoned").get(key).cloned()).is_some()
    }
}

impl Contender for Mx {
    const NAME: &'static str = "mutex-hashmap";
    type Reader<'a> = &'a Mx;
    fn reader(&self) -> &Mx {
        self
    }
    fn write(&self, key: &Arc<str>, text: &str, version: u64) {
        let value = val(text, version);
        self.0
            .lock()
            .expect("not poisoned")
            .insert(Arc::clone(key), value);
    }
}

/// Every sample's time per iteration, by benchmark, for the summary at the end.
#[derive(Default)]
struct Tally {
    samples: Mutex<HashMap<String, Vec<f64>>>,
    /// Writes/s the background writer reached, by read group and contender.
    writer: Mutex<HashMap<String, f64>>,
}

impl Tally {
    fn record(&self, id: &str, elapsed: Duration, iters: u64) {
        let per_iter = elapsed.as_secs_f64() / iters.max(1) as f64;
        self.samples
            .lock()
            .expect("not poisoned")
            .entry(id.to_string())
            .or_default()
            .push(per_iter);
    }

    /// Median seconds per iteration over the measured samples (criterion calls the routine
    /// for its warm-up first, then exactly `SAMPLES` times).
    fn median(&self, id: &str) -> Option<f64> {
        let samples = self.samples.lock().expect("not poisoned");
        let all = samples.get(id)?;
        let mut last: Vec<f64> = all[all.len().saturating_sub(SAMPLES)..].to_vec();
        last.sort_by(f64::total_cmp);
        Some(last[last.len() / 2])
    }
}

/// Runs `f` while (if `on`) one thread writes random keys of `keys` as fast as it can; returns
/// `f`'s result and the writer's writes/s.
fn with_writer<C: Contender, R>(
    c: &C,
    keys: &[Arc<str>],
    on: bool,
    f: impl FnOnce() -> R,
) -> (R, Option<f64>) {
    if !on {
        return (f(), None);
    }
    let stop = AtomicBool::new(false);
    let texts = texts(1);
    thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut rng = Rng::new(SEED ^ 0x5752_4954_4552);
            let started = Instant::now();
            let mut version = keys.len() as u64;
            while !stop.load(Ordering::Relaxed) {
                let i = rng.below(keys.len());
                version += 1;
                c.write(&keys[i], &texts[i % texts.len()], version);
            }
            (version - keys.len() as u64) as f64 / started.elapsed().as_secs_f64()
        });
        let result = f();
        stop.store(true, Ordering::Relaxed);
        (
            result,
            Some(writer.join().expect("the writer thread panicked")),
        )
    })
}

/// `iters` random point reads on each of `threads` threads at once; returns the slowest
/// thread's time, so time per iteration is one thread's latency per read.
fn read_for<C: Contender>(c: &C, keys: &[Arc<str>], threads: usize, iters: u64) -> Duration {
    let barrier = Barrier::new(threads);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let reader = c.reader();
                    let mut rng = Rng::new(SEED + t as u64);
                    barrier.wait();
                    let started = Instant::now();
                    for _ in 0..iters {
                        let key = &keys[rng.below(keys.len())];
                        black_box(reader.probe(key));
                    }
                    started.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a reader thread panicked"))
            .max()
            .expect("at least one thread")
    })
}

/// Read benchmarks of one contender at 1 and 2 reader threads, with or without the writer.
fn reads<C: Contender>(c: &mut Criterion, map: &C, data: &Data, writer: bool, tally: &Tally) {
    // Every contender holds the same keys: check the first and the last before timing.
    let reader = map.reader();
    assert!(reader.probe(&data.keys[0]) && reader.probe(&data.keys[data.keys.len() - 1]));
    assert!(!reader.probe("absent"));
    drop(reader);

    let group_name = read_group(data.keys.len(), writer);
    let ((), rate) = with_writer(map, &data.keys, writer, || {
        let mut group = c.benchmark_group(&group_name);
        group.throughput(Throughput::Elements(1));
        for threads in READ_THREADS {
            let id = BenchmarkId::new(C::NAME, format!("{threads}-thread"));
            let key = format!("{group_name}/{}/{threads}", C::NAME);
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let elapsed = read_for(map, &data.keys, threads, iters);
                    tally.record(&key, elapsed, iters);
                    elapsed
                })
            });
        }
        group.finish();
    });
    if let Some(rate) = rate {
        tally
            .writer
            .lock()
            .expect("not poisoned")
            .insert(format!("{group_name}/{}", C::NAME), rate);
    }
}

const READ_THREADS: [usize; 2] = [1, 2];
const BATCHES: [usize; 3] = [1, 64, 1024];
const CONTENDERS: [&str; 5] = [
    "left-right",
    "dashmap",
    "rwlock-hashmap",
    "rwlock-btreemap",
    "mutex-hashmap",
];

fn read_group(n: usize, writer: bool) -> String {
    let w = if writer { "one-writer" } else { "no-writer" };
    format!("read/{n}/{w}")
}

/// The writer's throughput with one publish per batch: send `batch` puts, wait for every reply.
fn writes(c: &mut Criterion, lr: &LeftRight, data: &Data, tally: &Tally) {
    let n = data.keys.len();
    let group_name = format!("write/{n}");
    let mut group = c.benchmark_group(&group_name);
    let texts = texts(2);
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch as u64));
        let key = format!("{group_name}/{batch}");
        group.bench_function(BenchmarkId::new("batch", batch), |b| {
            let mut rng = Rng::new(SEED ^ batch as u64);
            let mut replies = Vec::with_capacity(batch);
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    for _ in 0..batch {
                        let i = rng.below(n);
                        let value = PendingValue::from_text(&texts[i % texts.len()]);
                        let rx = lr
                            .handle
                            .put_nowait(Arc::clone(&data.keys[i]), value)
                            .expect("the writer is running");
                        replies.push(rx);
                    }
                    for rx in replies.drain(..) {
                        rx.blocking_recv()
                            .expect("the writer answers")
                            .expect("a plain put succeeds");
                    }
                }
                let elapsed = started.elapsed();
                tally.record(&key, elapsed, iters);
                elapsed
            })
        });
    }
    group.finish();
}

fn print_summary(tally: &Tally, sizes: &[usize]) {
    println!();
    println!("== store summary: median of the {SAMPLES} measured samples of each benchmark ==");
    println!("Point reads (latency = mean time of one read on one thread):");
    println!(
        "{:>9}  {:<10}  {:>7}  {:<14}  {:>9}  {:>14}  {:>13}  {:>9}",
        "keys",
        "writer",
        "threads",
        "contender",
        "ns/read",
        "reads/s/thread",
        "reads/s total",
        "vs rwlock"
    );
    let mut targets = Vec::new();
    for &n in sizes {
        for writer in [false, true] {
            let group = read_group(n, writer);
            for threads in READ_THREADS {
                let rw = tally.median(&format!("{group}/rwlock-hashmap/{threads}"));
                let tree = tally.median(&format!("{group}/rwlock-btreemap/{threads}"));
                for name in CONTENDERS {
                    let Some(s) = tally.median(&format!("{group}/{name}/{threads}")) else {
                        continue;
                    };
                    let ratio = rw.map_or(f64::NAN, |rw| rw / s);
                    println!(
                        "{:>9}  {:<10}  {:>7}  {:<14}  {:>9.1}  {:>14.0}  {:>13.0}  {:>8.2}x",
                        n,
                        if writer { "one" } else { "none" },
                        threads,
                        name,
                        s * 1e9,
                        1.0 / s,
                        threads as f64 / s,
                        ratio
                    );
                    if writer && name == "left-right" {
                        let vs_tree = tree.map_or(f64::NAN, |t| t / s);
                        targets.push((n, threads, ratio, vs_tree));
                    }
                }
            }
        }
    }
    let rates = tally.writer.lock().expect("not poisoned");
    if !rates.is_empty() {
        println!("Writes/s the background writer reached during the one-writer read runs:");
        for &n in sizes {
            for name in CONTENDERS {
                if let Some(r) = rates.get(&format!("{}/{name}", read_group(n, true))) {
                    println!("{n:>9}  {name:<14}  {r:>12.0} writes/s");
                }
            }
        }
    }
    println!("Writer throughput, one publish per batch (put_nowait x N, then N replies):");
    println!(
        "{:>9}  {:>5}  {:>12}  {:>12}",
        "keys", "batch", "puts/s", "us/batch"
    );
    for &n in sizes {
        for batch in BATCHES {
            if let Some(s) = tally.median(&format!("write/{n}/{batch}")) {
                println!(
                    "{n:>9}  {batch:>5}  {:>12.0}  {:>12.1}",
                    batch as f64 / s,
                    s * 1e6
                );
            }
        }
    }
    println!("Target: with one writer, left-right reads/s >= 2 x rwlock-hashmap reads/s");
    for (n, threads, ratio, tree) in targets {
        let verdict = if ratio >= 2.0 { "met" } else { "missed" };
        println!(
            "{n:>9} keys, {threads} reader thread(s): {ratio:.2}x  {verdict}  \
             (against rwlock-btreemap, an ordered map: {tree:.2}x)"
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; without it (cargo test) criterion runs each benchmark once,
    // and building a million keys would only slow the test down.
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let sizes: &[usize] = if bench {
        &[10_000, 1_000_000]
    } else {
        &[10_000]
    };
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let tally = Tally::default();
    for &n in sizes {
        // Built once per size and shared by every benchmark of that size.
        let started = Instant::now();
        let data = Data::new(n);
        let lr = LeftRight::new(n);
        let dash = Dash(data.pairs().collect());
        let rw = Rw(RwLock::new(data.pairs().collect()));
        let tree = RwTree(RwLock::new(data.pairs().collect()));
        let mx = Mx(Mutex::new(data.pairs().collect()));
        eprintln!("built {n} keys into every map in {:?}", started.elapsed());
        for writer in [false, true] {
            reads(&mut c, &lr, &data, writer, &tally);
            reads(&mut c, &dash, &data, writer, &tally);
            reads(&mut c, &rw, &data, writer, &tally);
            reads(&mut c, &tree, &data, writer, &tally);
            reads(&mut c, &mx, &data, writer, &tally);
        }
        writes(&mut c, &lr, &data, &tally);
        lr.store.shutdown();
    }
    c.final_summary();
    print_summary(&tally, sizes);
}
