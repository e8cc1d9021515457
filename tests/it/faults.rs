//! Fault injection on the disk path: the server runs with `RLIMIT_FSIZE` set, so growing a slot
//! file past the limit fails inside the real `fallocate`/`memmap2` code, and a log append past
//! it inside the real `write`, with `EFBIG`, as a full disk would. The contract: the last good
//! image is untouched byte for byte, `/health` turns degraded, the failure counter rises, reads
//! go on, a write the log cannot take gets 503 and changes nothing, and everything recovers once
//! the fault clears.

use std::os::unix::process::CommandExt;
use std::path::Path;

use rustix::process::{setrlimit, Resource, Rlimit};
use serde_json::json;

use crate::util::{command, temp_dir, Server};

/// Files may not grow past this; the first slot (64 KiB) fits, a few hundred KiB of data do not.
const LIMIT: u64 = 256 * 1024;

pub(crate) fn start_limited(dir: &Path, args: &[&str]) -> Server {
    let mut cmd = command();
    // SAFETY: between fork and exec only async-signal-safe calls are made: setrlimit(2) (a bare
    // system call through rustix) and signal(2). SIGXFSZ is ignored so that exceeding the limit
    // is an EFBIG error, not a killed process; an ignored disposition survives exec. rustix has
    // no safe call that sets a signal's disposition, so that one call is libc's.
    unsafe {
        cmd.pre_exec(|| {
            let lim = Rlimit {
                current: Some(LIMIT),
                maximum: Some(LIMIT),
            };
            setrlimit(Resource::Fsize, lim)?;
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    Server::start_with(cmd, dir, args).unwrap_or_else(|(s, e)| panic!("start failed {s:?}: {e}"))
}

/// A batch of `n` keys under `prefix` with 1 KiB values: `n` KiB of image.
pub(crate) fn big_batch(prefix: &str, n: usize) -> serde_json::Value {
    let value = "x".repeat(1024);
    let puts: serde_json::Map<_, _> = (0..n)
        .map(|i| (format!("{prefix}{i:05}"), json!(value)))
        .collect();
    json!({ "put": puts })
}

fn failures(s: &Server) -> u64 {
    let text = s.get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix("twinkv_snapshot_failures_total "))
        .expect("failure counter")
        .parse()
        .unwrap()
}

/// Writes `n` KiB under `prefix` in batches of 20 keys, so each log record stays far under the
/// file limit while the image outgrows it.
fn fill(s: &Server, prefix: &str, n: usize) {
    for chunk in 0..n.div_ceil(20) {
        let puts: serde_json::Map<_, _> = (chunk * 20..((chunk + 1) * 20).min(n))
            .map(|i| (format!("{prefix}{i:05}"), json!("x".repeat(1024))))
            .collect();
        let r = s.batch(&json!({ "put": puts }));
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[test]
fn a_failing_snapshot_degrades_health_keeps_the_good_image_and_recovers() {
    let dir = temp_dir();
    // Small log segments: every segment stays under the limit, only the image outgrows it.
    let s = start_limited(dir.path(), &["--log-segment-bytes", "32768"]);
    assert_eq!(s.put_text("small", "fits").status, 201);
    let good = s.snapshot_now();
    let good_file = good["file"].as_str().unwrap().to_string();
    let good_bytes = std::fs::read(&good_file).unwrap();
    assert_eq!(failures(&s), 0);

    // 400 KiB of data cannot fit under the 256 KiB limit as one image; the log takes it.
    fill(&s, "big/", 400);
    let r = s.request("POST", "/snapshot", &[], None);
    let msg = r.assert_error(503);
    // The snapshot failed; no write is said to be lost (issue 13: it used to say "write
    // applied but not durable").
    assert!(msg.contains("the snapshot failed"), "{msg}");
    assert!(!msg.contains("not durable"), "{msg}");
    let health = s.get("/health");
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "degraded");
    assert!(
        health.json()["reason"]
            .as_str()
            .unwrap()
            .contains("snapshot"),
        "{}",
        health.text()
    );
    assert!(failures(&s) >= 1);
    // Reads go on, including of the writes the failed snapshot should have held.
    assert_eq!(s.get("/kv/small").text(), "fits");
    assert_eq!(s.get("/kv/big/00399").status, 200);
    // The good image is untouched, byte for byte, and still what recovery would load, with the
    // log after it: nothing is lost to the failed snapshot.
    assert_eq!(std::fs::read(&good_file).unwrap(), good_bytes);
    let (code, out, _) = crate::util::inspect(&["--json", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["recovers_from"], good_file.as_str());
    assert_eq!(report["recovers_to_seq"], s.snapshot_status()["seq"]);

    // The fault clears (the data shrinks back under the limit): the retry succeeds.
    let dels: Vec<String> = (0..400).map(|i| format!("big/{i:05}")).collect();
    assert_eq!(s.batch(&json!({ "delete": dels })).status, 200);
    let after = s.snapshot_now();
    assert_eq!(after["last_error"], serde_json::Value::Null);
    assert_eq!(s.get("/health").status, 200);
    assert_eq!(s.terminate().code(), Some(0));

    // And a restart, now without any limit, has exactly the live state.
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.get("/kv/small").text(), "fits");
    assert_eq!(s.get("/kv/big/00000").status, 404);
    assert_eq!(s.all().len(), 1);
}

#[test]
fn a_write_the_log_cannot_take_gets_503_changes_nothing_and_the_log_recovers() {
    for durability in ["sync", "async"] {
        let dir = temp_dir();
        // In `async` the flusher's next successful flush clears the failure: a 2 s interval
        // keeps it from doing so before `/health` is asked (at 100 ms, a slow moment of the
        // machine between the failed write and the question made this flaky).
        let s = start_limited(
            dir.path(),
            &["--durability", durability, "--fsync-interval-ms", "2000"],
        );
        assert_eq!(s.put_text("a", "1").status, 201);
        // One record of 400 KiB cannot be written under the 256 KiB limit.
        let r = s.batch(&big_batch("big/", 400));
        let msg = r.assert_error(503);
        assert!(msg.contains("the log failed"), "{durability}: {msg}");
        // Not applied: the batch is not visible, no seq was spent, reads go on.
        assert_eq!(s.get("/kv/big/00000").status, 404, "{durability}");
        assert_eq!(s.get("/kv/a").text(), "1");
        assert_eq!(s.snapshot_status()["seq"], 1, "{durability}");
        let health = s.get("/health");
        assert_eq!(health.status, 503, "{durability}: {}", health.text());
        assert!(health.text().contains("log"), "{}", health.text());
        // The record was cut back out, so the next write follows the last good one, and the
        // log is healthy again once a flush succeeds (at once in `sync`; within the fsync
        // interval in `async`).
        assert_eq!(s.put_text("b", "2").status, 201, "{durability}");
        let healthy = (0..250).any(|_| {
            let ok = s.get("/health").status == 200;
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            ok
        });
        assert!(healthy, "{durability}: {}", s.get("/health").text());
        s.kill();

        // Every answered write is back; the refused one never appears.
        let s = Server::start(dir.path(), &[]);
        assert_eq!(s.get("/kv/a").text(), "1");
        assert_eq!(s.get("/kv/b").text(), "2");
        assert_eq!(s.get("/kv/big/00000").status, 404);
        assert_eq!(s.get("/health").status, 200);
    }
}
