//! A bounded soak: mixed reads and writes as fast as a few client threads can drive them, with
//! snapshots of a large map running all the while. It ends with RSS stable (no growth after
//! warm-up), no errors, and the recovered state equal to the live one.
//!
//! Long, so ignored by default. Run it on the release binary:
//! `cargo test --release --test it -- --ignored soak --nocapture`
//! (`TWINKV_SOAK_SECS` sets the length; default 300).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{inspect, temp_dir, Server};

const KEYS: u64 = 200_000;

fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
#[ignore = "long: a 5-minute soak; run with --ignored"]
fn soak() {
    let secs: u64 = std::env::var("TWINKV_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    let value = "v".repeat(100);
    for chunk in 0..KEYS / 10_000 {
        let puts: serde_json::Map<_, _> = (0..10_000)
            .map(|i| (format!("key/{:07}", chunk * 10_000 + i), json!(value)))
            .collect();
        assert_eq!(s.batch(&json!({ "put": puts })).status, 200);
    }

    let stop = AtomicBool::new(false);
    let (reads, writes, errors) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let started = Instant::now();
    let mut samples: Vec<(u64, u64, u64)> = Vec::new();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let (s, stop, reads, writes, errors, value) =
                (&s, &stop, &reads, &writes, &errors, &value);
            scope.spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    n += 1;
                    let key = format!("/kv/key/{:07}", x % KEYS);
                    let r = if x.is_multiple_of(10) {
                        writes.fetch_add(1, Ordering::Relaxed);
                        s.request(
                            "PUT",
                            &key,
                            &[],
                            Some(format!("t{t}-{n}-{value}").as_bytes()),
                        )
                    } else {
                        reads.fetch_add(1, Ordering::Relaxed);
                        s.get(&key)
                    };
                    if !matches!(r.status, 200 | 201) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let end = started + Duration::from_secs(secs);
        while Instant::now() < end {
            std::thread::sleep(
                Duration::from_secs(10).min(end.saturating_duration_since(Instant::now())),
            );
            let sample = (
                started.elapsed().as_secs(),
                status_kb(s.pid(), "VmRSS:"),
                status_kb(s.pid(), "RssAnon:"),
            );
            println!("t={}s rss={} kB anon={} kB", sample.0, sample.1, sample.2);
            samples.push(sample);
        }
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (r, w, e) = (reads.into_inner(), writes.into_inner(), errors.into_inner());
    println!(
        "soak: {secs} s, {r} reads, {w} writes, {:.0} req/s, {e} errors",
        (r + w) as f64 / elapsed
    );
    assert_eq!(e, 0, "requests failed during the soak");
    assert!(r > 0 && w > 0);

    // RSS after warm-up (the first fifth) must not keep growing: the last sample stays within
    // 10% (plus 16 MB for allocator slack) of the highest warm-up sample.
    let warm = samples.len().div_ceil(5).max(1);
    let warm_max = samples[..warm].iter().map(|s| s.2).max().unwrap();
    let last = samples.last().unwrap().2;
    println!("anon RSS: warm-up max {warm_max} kB, last {last} kB");
    assert!(
        last <= warm_max + warm_max / 10 + 16 * 1024,
        "anonymous RSS grew from {warm_max} kB to {last} kB"
    );

    // The live state, a flushed snapshot and a restart all agree.
    let live = s.all();
    assert_eq!(live.len() as u64, KEYS);
    s.snapshot_now();
    let (code, dump, _) = inspect(&["--dump", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    let dumped: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&dump).unwrap();
    assert!(dumped == live, "inspect --dump differs from the live state");
    assert_eq!(s.terminate().code(), Some(0));
    let s = Server::start(dir.path(), &[]);
    assert!(
        s.all() == live,
        "the recovered state differs from the live one"
    );
}
