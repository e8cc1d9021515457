//! What a snapshot costs: encoding the whole image, writing it into a memory-mapped slot, and
//! recovering a store from it, at 10 000, 100 000 and 1 000 000 keys with 100-byte values.
//!
//! - `encode`: [`encode`] into a reused `Vec` (no I/O): the serializer and checksum alone.
//! - `write-fresh-slot`: `Slot::open` on a new file, then `write_image` with `encode` as the
//!   server's snapshot thread calls it; the file grows from nothing (fallocate, remap) and is
//!   flushed (msync, fsync, rename, directory fsync). The first snapshot of a new data dir.
//! - `write-reused-slot`: the same into a slot that already has room: the steady state.
//! - `decode`: [`decode`] of the slot file's bytes, already in memory.
//! - `recover`: read the slot file, decode it and rebuild both left-right copies
//!   (`Store::start`); the writer's `shutdown` afterwards is not timed.
//!
//! Throughput is bytes of image (the JSON document, not the padded file), so MB/s compare
//! across steps. Snapshots are otherwise off: no store runs a snapshot thread here. Keys and
//! values are made by index (`key00000000`…, see `benches/support/data.rs`), and the map is
//! loaded by decoding an image of them, as recovery loads it. At the end a summary table gives the median of the measured samples and
//! the targets of BENCHMARKS.md.
//!
//! Run with `cargo bench --bench snapshot`. Without `--bench` (as `cargo test --benches` runs
//! it) each benchmark runs once, at 10 000 keys only.

use std::collections::HashMap;
use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use twinkv::snapshot::format::{decode, encode, Position};
use twinkv::snapshot::slot::Slot;
use twinkv::store::{Downstream, Entries, Initial};
use twinkv::{Durability, Store};

#[path = "support/data.rs"]
mod data;
use data::{image, WRITTEN_AT as AT};

/// Samples per benchmark; the summary takes the median of the last this many.
const SAMPLES: usize = 10;
const STEPS: [&str; 5] = [
    "encode",
    "write-fresh-slot",
    "write-reused-slot",
    "decode",
    "recover",
];

/// Every sample's time per iteration, by benchmark, for the summary at the end.
#[derive(Default)]
struct Tally(Mutex<HashMap<String, Vec<f64>>>);

impl Tally {
    fn record(&self, id: &str, elapsed: Duration, iters: u64) {
        let per_iter = elapsed.as_secs_f64() / iters.max(1) as f64;
        self.0
            .lock()
            .expect("not poisoned")
            .entry(id.to_string())
            .or_default()
            .push(per_iter);
    }

    /// Median seconds per iteration over the measured samples (criterion calls the routine
    /// for its warm-up first, then exactly `SAMPLES` times).
    fn median(&self, id: &str) -> Option<f64> {
        let samples = self.0.lock().expect("not poisoned");
        let all = samples.get(id)?;
        let mut last: Vec<f64> = all[all.len().saturating_sub(SAMPLES)..].to_vec();
        last.sort_by(f64::total_cmp);
        Some(last[last.len() / 2])
    }
}

/// Times `iters` runs of `step`, each given its run number; `step` returns the time to count,
/// so it can leave set-up and clean-up out.
fn timed(tally: &Tally, id: &str, iters: u64, mut step: impl FnMut(u64) -> Duration) -> Duration {
    let elapsed = (0..iters).map(&mut step).sum();
    tally.record(id, elapsed, iters);
    elapsed
}

/// Writes the image of `entries` into the slot at `path` as the snapshot thread does.
fn write_slot(slot: &mut Slot, seq: u64, entries: &Entries) -> u64 {
    slot.write_image(|w| encode(w, Position { seq, log_index: 0 }, AT, entries))
        .expect("write the image into the slot")
}

fn bench_size(c: &mut Criterion, n: usize, dir: &Path, tally: &Tally) -> (u64, u64) {
    let started = Instant::now();
    let source = image(n);
    let img = decode(&source).expect("a valid image");
    let (entries, seq) = (img.entries, img.seq);
    let mut encoded = Vec::new();
    let len = encode(&mut encoded, Position { seq, log_index: 0 }, AT, &entries)
        .expect("encode into memory");
    if encoded != source {
        // Still a fair bench (every step below uses what `encode` writes), but worth knowing.
        eprintln!("note: the store encodes {n} keys differently from benches/support/data.rs");
    }
    drop((source, encoded));
    // The slot file recovery reads: written (and padded) by a slot, as a server leaves it.
    let recover_path = dir.join(format!("recover-{n}.json"));
    write_slot(
        &mut Slot::open(&recover_path).expect("open a slot"),
        seq,
        &entries,
    );
    let file_len = fs::metadata(&recover_path).expect("slot written").len();
    eprintln!(
        "built {n} keys: image {len} bytes, slot file {file_len} bytes, in {:?}",
        started.elapsed()
    );

    let group_name = format!("snapshot/{n}");
    let mut group = c.benchmark_group(&group_name);
    group.throughput(Throughput::Bytes(len));
    // One run of a step at a million keys takes a good part of a second: the same number of
    // runs per sample keeps the bench short (criterion's linear mode would need 55 runs).
    group.sampling_mode(SamplingMode::Flat);

    let id = format!("{group_name}/encode");
    let mut buf = Vec::with_capacity(len as usize);
    group.bench_function("encode", |b| {
        b.iter_custom(|iters| {
            timed(tally, &id, iters, |_| {
                buf.clear();
                let t = Instant::now();
                black_box(
                    encode(&mut buf, Position { seq, log_index: 0 }, AT, &entries).expect("encode"),
                );
                t.elapsed()
            })
        })
    });
    drop(buf);

    let id = format!("{group_name}/write-fresh-slot");
    group.bench_function("write-fresh-slot", |b| {
        b.iter_custom(|iters| {
            timed(tally, &id, iters, |run| {
                let path = dir.join(format!("fresh-{n}-{run}.json"));
                let t = Instant::now();
                let mut slot = Slot::open(&path).expect("open a new slot");
                write_slot(&mut slot, seq, &entries);
                let elapsed = t.elapsed();
                drop(slot);
                fs::remove_file(&path).expect("remove the slot file");
                elapsed
            })
        })
    });

    let id = format!("{group_name}/write-reused-slot");
    let reused_path = dir.join(format!("reused-{n}.json"));
    let mut slot = Slot::open(&reused_path).expect("open a slot");
    write_slot(&mut slot, seq, &entries);
    group.bench_function("write-reused-slot", |b| {
        b.iter_custom(|iters| {
            timed(tally, &id, iters, |_| {
                let t = Instant::now();
                black_box(write_slot(&mut slot, seq, &entries));
                t.elapsed()
            })
        })
    });
    drop(slot);
    fs::remove_file(&reused_path).expect("remove the slot file");
    drop(entries);

    let id = format!("{group_name}/decode");
    let file = fs::read(&recover_path).expect("read the slot file");
    group.bench_function("decode", |b| {
        b.iter_custom(|iters| {
            timed(tally, &id, iters, |_| {
                let t = Instant::now();
                let img = decode(&file).expect("a valid image");
                let elapsed = t.elapsed();
                assert_eq!(img.entries.len(), n);
                drop(img);
                elapsed
            })
        })
    });
    drop(file);

    let id = format!("{group_name}/recover");
    group.bench_function("recover", |b| {
        b.iter_custom(|iters| {
            timed(tally, &id, iters, |_| {
                let t = Instant::now();
                let bytes = fs::read(&recover_path).expect("read the slot file");
                let img = decode(&bytes).expect("a valid image");
                drop(bytes);
                let initial = Initial {
                    entries: img.entries,
                    seq: img.seq,
                    index: None,
                };
                let store = Store::start(initial, Durability::Async, Downstream::default())
                    .expect("start the writer thread");
                let elapsed = t.elapsed();
                assert_eq!(store.readers().reader().len(), n);
                store.shutdown();
                elapsed
            })
        })
    });
    group.finish();
    fs::remove_file(&recover_path).expect("remove the slot file");
    (len, file_len)
}

fn print_summary(tally: &Tally, sizes: &[(usize, u64, u64)]) {
    println!();
    println!("== snapshot summary: median of the {SAMPLES} measured samples of each benchmark ==");
    println!("MB = 10^6 bytes of image (the JSON document; the slot file is padded past it).");
    println!(
        "{:>9}  {:>10}  {:>10}  {:<18}  {:>9}  {:>9}",
        "keys", "image MB", "file MB", "step", "ms", "MB/s"
    );
    for &(n, len, file_len) in sizes {
        for step in STEPS {
            if let Some(s) = tally.median(&format!("snapshot/{n}/{step}")) {
                println!(
                    "{n:>9}  {:>10.1}  {:>10.1}  {step:<18}  {:>9.2}  {:>9.0}",
                    len as f64 / 1e6,
                    file_len as f64 / 1e6,
                    s * 1e3,
                    len as f64 / s / 1e6
                );
            }
        }
    }
    println!("Targets:");
    for &(n, len, _) in sizes {
        let rate = |step: &str| {
            tally
                .median(&format!("snapshot/{n}/{step}"))
                .map(|s| (len as f64 / s / 1e9, s))
        };
        let verdict = |ok: bool| if ok { "met" } else { "missed" };
        for step in ["write-reused-slot", "write-fresh-slot"] {
            if let Some((gbs, _)) = rate(step) {
                println!(
                    "{n:>9} keys: encode + write into the map ({step}) {gbs:.2} GB/s (>= 1 GB/s) {}",
                    verdict(gbs >= 1.0)
                );
            }
        }
        if let Some((gbs, s)) = rate("recover") {
            println!(
                "{n:>9} keys: recovery {:.0} MB/s (>= 300 MB/s) {}",
                gbs * 1e3,
                verdict(gbs >= 0.3)
            );
            if n == 1_000_000 {
                println!(
                    "{n:>9} keys: recovery in {:.0} ms (< 1000 ms) {}",
                    s * 1e3,
                    verdict(s < 1.0)
                );
            }
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; without it (cargo test) criterion runs each benchmark once.
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let sizes: &[usize] = if bench {
        &[10_000, 100_000, 1_000_000]
    } else {
        &[10_000]
    };
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tally = Tally::default();
    let mut done = Vec::new();
    for &n in sizes {
        let (len, file_len) = bench_size(&mut c, n, dir.path(), &tally);
        done.push((n, len, file_len));
    }
    c.final_summary();
    print_summary(&tally, &done);
}
