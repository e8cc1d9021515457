//! Watches and blocking reads against the real binary: every write of a concurrent load
//! arrives exactly once and in seq order; reconnecting with `Last-Event-ID` at random points
//! gives the exact sequence; a `since` older than the history gets 410 with where to resume; a
//! watcher that never reads is cut off while writes go on; listing then watching leaves no gap;
//! progress on idle streams, `expire` events, NDJSON, auth, SIGTERM with open streams, and every
//! bad parameter refused.

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{num, temp_dir, Server, SseStream};

/// A watch stream on `s`, with the read timeout of every watch test.
fn open(s: &Server, query: &str, headers: &[(&str, &str)]) -> Result<SseStream, (u16, Value)> {
    SseStream::open(
        &s.url(&format!("/watch{query}")),
        headers,
        Duration::from_secs(30),
    )
}

fn start(args: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = temp_dir();
    let s = Server::start(dir.path(), args);
    (dir, s)
}

#[test]
fn every_write_of_a_concurrent_load_arrives_once_in_seq_order() {
    let (_d, s) = start(&[]);
    let mut w = open(&s, "?prefix=", &[]).unwrap();
    const CLIENTS: usize = 4;
    const WRITES: usize = 100;
    std::thread::scope(|scope| {
        for c in 0..CLIENTS {
            let s = &s;
            scope.spawn(move || {
                for i in 0..WRITES {
                    let r = s.put_text(&format!("c{c}%2F{i}"), "v");
                    assert_eq!(r.status, 201);
                }
            });
        }
    });
    let mut seen = Vec::new();
    while seen.len() < CLIENTS * WRITES {
        let e = w.change().expect("the stream goes on");
        let d = e.data.unwrap();
        assert_eq!(d["type"], "put");
        assert_eq!(e.id.as_deref(), Some(d["seq"].to_string().as_str()));
        seen.push((num(&d, "seq"), d["key"].as_str().unwrap().to_string()));
    }
    let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=(CLIENTS * WRITES) as u64).collect::<Vec<_>>());
    let mut keys: Vec<&String> = seen.iter().map(|(_, k)| k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), CLIENTS * WRITES, "a write arrived twice");
}

/// A deterministic generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn reconnecting_with_last_event_id_at_random_points_misses_nothing_and_repeats_nothing() {
    let (_d, s) = start(&[]);
    // Single puts, deletes, and batches of several matching keys (ids `<seq>.<i>`), plus
    // writes the filter leaves out.
    let mut expected: Vec<(String, String)> = Vec::new();
    for i in 0..60 {
        match i % 4 {
            0 => {
                assert_eq!(s.put_text(&format!("w%2F{i}"), "v").status, 201);
                expected.push((format!("w/{i}"), "put".into()));
            }
            1 => {
                let r = s.batch(
                    &json!({"put": {format!("w/{i}a"): 1, format!("w/{i}b"): 2, "other": 3}}),
                );
                assert_eq!(r.status, 200);
                expected.push((format!("w/{i}a"), "put".into()));
                expected.push((format!("w/{i}b"), "put".into()));
            }
            2 => {
                assert_eq!(s.delete(&format!("w%2F{}", i - 2)).status, 204);
                expected.push((format!("w/{}", i - 2), "delete".into()));
            }
            _ => assert_eq!(s.put_text(&format!("elsewhere{i}"), "x").status, 201),
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut got: Vec<(String, String)> = Vec::new();
    let mut last_id: Option<String> = None;
    while got.len() < expected.len() {
        let headers: Vec<(&str, &str)> = match &last_id {
            Some(id) => vec![("Last-Event-ID", id.as_str())],
            None => vec![],
        };
        // The URL keeps the first `since`, as a browser's EventSource does; the header wins.
        let mut w = open(&s, "?prefix=w/&since=0", &headers).unwrap();
        let take = 1 + rng.below(5);
        for _ in 0..take {
            if got.len() == expected.len() {
                break;
            }
            let e = w.change().unwrap();
            let d = e.data.unwrap();
            got.push((
                d["key"].as_str().unwrap().into(),
                d["type"].as_str().unwrap().into(),
            ));
            last_id = e.id;
        }
    }
    assert_eq!(got, expected);
}

#[test]
fn a_since_older_than_the_history_gets_410_with_where_to_resume() {
    let (_d, s) = start(&["--watch-history", "10"]);
    for i in 0..30 {
        assert_eq!(s.put_text(&format!("k{i}"), "v").status, 201);
    }
    let (status, body) = open(&s, "?since=3", &[]).err().expect("410");
    assert_eq!(status, 410, "{body}");
    assert_eq!(num(&body, "seq"), 30);
    let oldest = num(&body, "oldest_seq");
    assert_eq!(oldest, 20, "{body}");
    assert!(body["error"].as_str().unwrap().contains("list"), "{body}");
    // From the oldest resumable seq on, the stream works and gives what came after it.
    let mut w = open(&s, &format!("?since={oldest}"), &[]).unwrap();
    assert_eq!(num(&w.change().unwrap().data.unwrap(), "seq"), oldest + 1);
    let (status, _) = open(&s, "?since=999", &[]).err().expect("ahead");
    assert_eq!(status, 400);
}

#[test]
fn listing_then_watching_from_its_seq_leaves_no_gap() {
    let (_d, s) = start(&[]);
    assert_eq!(s.put_text("a", "1").status, 201);
    let list = s.get("/kv?prefix=");
    let seq = list.header("twinkv-seq").unwrap().to_string();
    // A write after the listing, before the watch starts.
    assert_eq!(s.put_text("b", "2").status, 201);
    let mut w = open(&s, &format!("?since={seq}"), &[]).unwrap();
    let d = w.change().unwrap().data.unwrap();
    assert_eq!((d["key"].as_str(), num(&d, "seq")), (Some("b"), 2));
}

#[test]
fn a_watcher_that_never_reads_is_cut_off_while_writes_go_on_and_memory_stays_bounded() {
    let (_d, s) = start(&[]);
    // A client that asks and never reads a byte.
    let mut stuck = std::net::TcpStream::connect(s.addr()).unwrap();
    std::io::Write::write_all(
        &mut stuck,
        b"GET /watch HTTP/1.1\r\nHost: x\r\nAccept: application/x-ndjson\r\n\r\n",
    )
    .unwrap();
    let rss = |s: &Server| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let metric = || -> u64 {
        let text = s.get("/metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix("twinkv_watchers "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap() as u64
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(metric(), 1, "the stuck watcher is registered");
    let before = rss(&s);
    let value = "x".repeat(2000);
    let mut writes = 0;
    // Writes go on at full speed; the stuck watcher's queue and socket fill, then it is cut.
    while metric() == 1 {
        let puts: serde_json::Map<String, Value> = (0..50)
            .map(|i| (format!("k{}", (writes + i) % 5000), json!(value)))
            .collect();
        assert_eq!(s.batch(&json!({ "put": puts })).status, 200);
        writes += 50;
        assert!(writes < 2_000_000, "the stuck watcher was never cut off");
    }
    // The map holds at most 5000 × 2 KB; whatever the watcher was sent stays bounded too.
    let after = rss(&s);
    assert!(
        after < before + 200 * 1024,
        "RSS grew from {before} kB to {after} kB over {writes} writes"
    );
    assert_eq!(s.get("/health").status, 200);
    drop(stuck);
}

#[test]
fn idle_streams_get_progress_and_expiry_arrives_as_an_expire_event() {
    let (_d, s) = start(&["--watch-progress-ms", "200"]);
    let mut w = open(&s, "?key=session", &[]).unwrap();
    let e = w.next().unwrap();
    assert_eq!(e.event, "progress");
    assert_eq!(num(&e.data.unwrap(), "seq"), 0);
    assert_eq!(
        s.request("PUT", "/kv/session?ttl=1", &[], Some(b"t"))
            .status,
        201
    );
    let put = w.change().unwrap().data.unwrap();
    assert_eq!(
        (put["type"].as_str(), put["value"].as_str()),
        (Some("put"), Some("t"))
    );
    let gone = w.change().unwrap().data.unwrap();
    assert_eq!(gone["type"], "expire");
    assert_eq!(num(&gone, "seq"), 2, "an expiry is a write of its own seq");
}

#[test]
fn ndjson_carries_the_same_events_one_per_line() {
    let (_d, s) = start(&[]);
    let agent = crate::util::agent();
    let r = agent
        .get(&s.url("/watch?prefix=n/"))
        .set("Accept", "application/x-ndjson")
        .call()
        .unwrap();
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let mut lines = BufReader::new(r.into_reader()).lines();
    let hello: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(hello["type"], "progress");
    // An SSE watcher of the same prefix at once: the two share the event's group, each in its
    // own format.
    let mut sse = open(&s, "?prefix=n/", &[]).unwrap();
    assert_eq!(s.put_json("n%2F1", &json!({"a": [1]})).status, 201);
    let e: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let want = json!({"id": "1", "seq": 1, "type": "put", "key": "n/1", "value": {"a": [1]}, "version": 1});
    assert_eq!(e, want);
    let ev = sse.change().expect("the SSE stream has the event");
    assert_eq!((ev.id.as_deref(), ev.data), (Some("1"), Some(want)));
}

#[test]
fn auth_applies_to_watch() {
    let (_d, s) = start(&["--auth-token", "s3cret"]);
    let (status, _) = open(&s, "", &[]).err().expect("401");
    assert_eq!(status, 401);
    assert!(open(&s, "", &[("Authorization", "Bearer s3cret")]).is_ok());
}

#[test]
fn sigterm_with_100_open_streams_exits_at_once() {
    let (dir, s) = start(&[]);
    let streams: Vec<SseStream> = (0..100)
        .map(|i| open(&s, &format!("?prefix=p{i}"), &[]).unwrap())
        .collect();
    assert_eq!(s.put_text("a", "1").status, 201);
    let started = Instant::now();
    let status = s.terminate();
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0));
    // The contract's "within a few seconds"; actix alone would wait 30 s for open streams.
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    drop(streams);
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.get("/kv/a").text(), "1");
}

#[test]
fn a_blocking_read_answers_on_the_next_change_or_after_its_wait() {
    let (_d, s) = start(&[]);
    assert_eq!(s.put_text("k", "one").status, 201);
    // Already changed since version 0: at once.
    assert_eq!(s.get("/kv/k?index=0&wait=600").text(), "one");
    // Unchanged: it waits for the next write to the key (writes elsewhere do not end it).
    let done = Arc::new(AtomicBool::new(false));
    let r = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let r = s.get("/kv/k?index=1&wait=60");
            done.store(true, Ordering::SeqCst);
            r
        });
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(s.put_text("other", "x").status, 201);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !done.load(Ordering::SeqCst),
            "answered before the key changed"
        );
        assert_eq!(s.put_text("k", "two").status, 200);
        waiter.join().unwrap()
    });
    assert_eq!((r.status, r.text()), (200, "two".to_string()));
    assert_eq!(r.header("etag"), Some("\"3\""));
    // A short wait with no change answers with the current state.
    let r = s.get("/kv/k?index=3&wait=1");
    assert_eq!(r.text(), "two");
    // An index ahead of the key's version waits too (until the key's next change).
    let early = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let r = s.get("/kv/k?index=9&wait=60");
            early.store(true, Ordering::SeqCst);
            r
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !early.load(Ordering::SeqCst),
            "answered at version 3 for index 9"
        );
        assert_eq!(s.put_text("k", "three").status, 200);
        assert_eq!(waiter.join().unwrap().text(), "three");
    });
    // A delete ends a wait too; a wait on an absent key (index 0) ends when it is created.
    let r = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| s.get("/kv/k?index=4&wait=60"));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(s.delete("k").status, 204);
        waiter.join().unwrap()
    });
    assert_eq!(r.status, 404);
    let r = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| s.get("/kv/new?index=0&wait=60"));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(s.put_text("new", "here").status, 201);
        waiter.join().unwrap()
    });
    assert_eq!(r.text(), "here");
}

#[test]
fn bad_watch_and_wait_parameters_get_400_and_change_nothing() {
    let (_d, s) = start(&["--max-key-bytes", "8"]);
    assert_eq!(s.put_text("k", "v").status, 201);
    let before = s.entries();
    let mut violations = Vec::new();
    for q in [
        "?since=abc",
        "?since=-1",
        "?since=1.x",
        "?since=1.",
        "?since=",
        "?key=waytoolongkey",
        "?key=",
        "?key=a&prefix=b",
        "?consistency=eventual",
    ] {
        match open(&s, q, &[]) {
            Err((400, body)) if body["error"].is_string() => {}
            Err((code, body)) => violations.push(format!("/watch{q}: {code} {body}")),
            Ok(_) => violations.push(format!("/watch{q}: accepted")),
        }
    }
    match open(&s, "", &[("Last-Event-ID", "nope")]) {
        Err((400, _)) => {}
        _ => violations.push("Last-Event-ID nope accepted".into()),
    }
    for q in [
        "?wait=1",
        "?index=abc",
        "?index=-1",
        "?index=1&wait=601",
        "?index=1&wait=-1",
        "?index=1&wait=1.5",
        "?index=1&consistency=x",
    ] {
        let r = s.get(&format!("/kv/k{q}"));
        if r.status != 400 {
            violations.push(format!("/kv/k{q}: {} {}", r.status, r.text()));
        }
    }
    // HEAD makes the same checks as GET; a signed number is no event id, though Rust's
    // `str::parse` would take it (schemathesis found HEAD answering 200 to this).
    for (q, id) in [("", "+0.0"), ("", "+1"), ("?since=%2B1", ""), ("", "1.+0")] {
        let headers: Vec<(&str, &str)> = if id.is_empty() {
            vec![]
        } else {
            vec![("Last-Event-ID", id)]
        };
        for method in ["GET", "HEAD"] {
            let r = s.request(method, &format!("/watch{q}"), &headers, None);
            if r.status != 400 {
                violations.push(format!(
                    "{method} /watch{q} Last-Event-ID {id:?}: {}",
                    r.status
                ));
            }
        }
    }
    let r = s.request("HEAD", "/watch?key=k", &[("Last-Event-ID", "1")], None);
    if r.status != 200 || r.header("content-type") != Some("text/event-stream") {
        violations.push(format!(
            "HEAD /watch with a good id: {} {:?}",
            r.status,
            r.header("content-type")
        ));
    }
    let r = s.request("POST", "/watch", &[], None);
    if r.status != 405 {
        violations.push(format!("POST /watch: {}", r.status));
    }
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(s.entries(), before);
}
