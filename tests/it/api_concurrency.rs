//! The concurrency promises over HTTP: compare-and-set and create-only races have exactly one
//! winner, no reader sees part of a batch, and an answered write is seen by every later read.
//!
//! The rules every api test keeps, and the helpers they share, are in [`crate::api`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;

use serde_json::json;

use crate::api::{metric, put_with};
use crate::util::{agent, Fixture, Resp, Server};

/// A GET on a new agent, hence a new connection (and maybe another worker).
fn fresh_get(s: &Server, path: &str) -> (u16, String) {
    match agent().get(&s.url(path)).call() {
        Ok(r) => (r.status(), r.into_string().expect("body")),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

#[test]
fn compare_and_set_race_has_exactly_one_winner() {
    let s = Fixture::start(&["--workers", "4"]);
    const THREADS: usize = 8;
    const ROUNDS: usize = 10;
    assert_eq!(s.put_text("cas", "start").status, 201);
    for round in 0..ROUNDS {
        let g = s.get("/kv/cas");
        let tag = g.header("etag").expect("ETag").to_string();
        let barrier = Barrier::new(THREADS);
        let results: Vec<(usize, Resp)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (s, barrier, tag) = (&s, &barrier, &tag);
                    scope.spawn(move || {
                        barrier.wait();
                        let body = format!("round {round} thread {t}");
                        (
                            t,
                            put_with(s, "/kv/cas", &[("If-Match", tag)], body.as_bytes()),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let winners: Vec<&(usize, Resp)> =
            results.iter().filter(|(_, r)| r.status == 200).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for (_, r) in &results {
            if r.status != 200 {
                r.assert_error(412);
            }
        }
        let (winner, reply) = winners[0];
        let g = s.get("/kv/cas");
        assert_eq!(g.text(), format!("round {round} thread {winner}"));
        assert_eq!(g.header("etag"), reply.header("etag"));
    }
    assert_eq!(metric(&s, "twinkv_seq"), Some(1.0 + ROUNDS as f64));
}

#[test]
fn create_only_race_has_exactly_one_winner() {
    let s = Fixture::start(&["--workers", "4"]);
    const THREADS: usize = 8;
    for round in 0..10 {
        let key = format!("/kv/create/{round}");
        let barrier = Barrier::new(THREADS);
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (s, barrier, key) = (&s, &barrier, &key);
                    scope.spawn(move || {
                        barrier.wait();
                        let r =
                            put_with(s, key, &[("If-None-Match", "*")], t.to_string().as_bytes());
                        if r.status != 201 {
                            r.assert_error(412);
                        }
                        r.status
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(
            statuses.iter().filter(|&&c| c == 201).count(),
            1,
            "round {round}: {statuses:?}"
        );
        assert_eq!(
            s.get(&key).header("etag"),
            Some(format!("\"{}\"", round + 1).as_str())
        );
    }
}

/// Sets its flag when dropped, on success or panic alike.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[test]
fn readers_never_see_part_of_a_batch() {
    let s = Fixture::start(&["--workers", "4"]);
    const BATCHES: u64 = 300;
    const READERS: usize = 3;
    // Even batches put x, y and z; odd ones put x and y and delete z. So in any state a reader
    // may see, x == y, both at one version, and z is present exactly when x is even.
    let batch = |i: u64| {
        if i.is_multiple_of(2) {
            json!({"put": {"pair/x": i, "pair/y": i, "pair/z": i}})
        } else {
            json!({"put": {"pair/x": i, "pair/y": i}, "delete": ["pair/z"]})
        }
    };
    assert_eq!(s.batch(&batch(0)).status, 200);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let (s, done) = (&s, &done);
                scope.spawn(move || {
                    let mut last = 0;
                    // Bounded: stops once the writer is done (after one read at least), or
                    // after this many reads at most.
                    for _ in 0..100_000 {
                        let r = s.get("/kv?prefix=pair/&values=true");
                        assert_eq!(r.status, 200, "{}", r.text());
                        let page = r.json();
                        let items = page["items"].as_array().expect("items");
                        let field = |i: usize, f: &str| items[i][f].as_u64().expect("number");
                        assert!(items.len() == 2 || items.len() == 3, "{page}");
                        assert_eq!(items[0]["key"], "pair/x", "{page}");
                        assert_eq!(items[1]["key"], "pair/y", "{page}");
                        let x = field(0, "value");
                        assert_eq!(x, field(1, "value"), "x and y differ: {page}");
                        assert_eq!(field(0, "version"), field(1, "version"), "{page}");
                        if x.is_multiple_of(2) {
                            assert_eq!(items.len(), 3, "z missing at an even batch: {page}");
                            assert_eq!(items[2]["key"], "pair/z", "{page}");
                            assert_eq!(field(2, "value"), x, "{page}");
                            assert_eq!(field(2, "version"), field(0, "version"), "{page}");
                        } else {
                            assert_eq!(items.len(), 2, "z present at an odd batch: {page}");
                        }
                        assert!(x >= last, "went back from batch {last} to {x}");
                        last = x;
                        if done.load(Ordering::Acquire) {
                            break;
                        }
                    }
                })
            })
            .collect();
        // Readers stop even if the writer fails midway.
        let stop = SetOnDrop(&done);
        let mut last_seq = None;
        for i in 1..=BATCHES {
            let r = s.batch(&batch(i));
            assert_eq!(r.status, 200, "{}", r.text());
            let seq = r.json()["seq"].as_u64().expect("seq");
            if let Some(prev) = last_seq {
                assert_eq!(seq, prev + 1, "one seq per batch");
            }
            last_seq = Some(seq);
        }
        drop(stop);
        for h in readers {
            h.join().expect("reader");
        }
    });
    let page = s.get("/kv?prefix=pair/&values=true").json();
    assert_eq!(page["items"][0]["value"], BATCHES);
    assert_eq!(page["items"][1]["value"], BATCHES);
}

#[test]
fn a_write_once_answered_is_seen_by_every_later_read() {
    let s = Fixture::start(&["--workers", "4"]);
    for i in 0..100 {
        let r = s.put_text("ryw", &i.to_string());
        assert!(matches!(r.status, 200 | 201), "{}", r.text());
        assert_eq!(
            fresh_get(&s, "/kv/ryw"),
            (200, i.to_string()),
            "iteration {i}"
        );
        let key = format!("ryw-{i}");
        assert_eq!(s.put_json(&key, &json!(i)).status, 201);
        assert_eq!(fresh_get(&s, &format!("/kv/{key}")), (200, i.to_string()));
        if i % 10 == 0 {
            assert_eq!(s.delete(&key).status, 204);
            assert_eq!(fresh_get(&s, &format!("/kv/{key}")).0, 404);
            let r = s.batch(&json!({"put": {"ryw-batch": i}}));
            assert_eq!(r.status, 200);
            assert_eq!(fresh_get(&s, "/kv/ryw-batch"), (200, i.to_string()));
        }
    }
}
