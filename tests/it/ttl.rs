//! Key expiry against the real binary: `?ttl=` on PUT and POST, `"ttl"` in batches, the
//! headers of a key that expires, absence from the deadline on (reads, listings,
//! preconditions), removal by the writer as a write of its own seq, expiry across restarts, and
//! every bad TTL refused with nothing changed.
//!
//! Short TTLs (1–2 s) and bounded polls, never a timed assertion: a deadline is read from the
//! key's own `Twinkv-Expires-At` and the test waits until the clock has passed it.

use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::util::{num, temp_dir, Server};

/// Milliseconds since the epoch of an RFC 3339 time the server sent.
fn millis(rfc3339: &str) -> u64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?} is not RFC 3339: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as u64
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sleeps until the wall clock is past `deadline_ms`.
fn wait_past(deadline_ms: u64) {
    while now_ms() <= deadline_ms {
        std::thread::sleep(Duration::from_millis(
            deadline_ms + 1 - now_ms().min(deadline_ms),
        ));
    }
}

/// Polls `cond` every 20 ms for at most 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not within 10 s: {what}");
}

/// The deadline a key's GET reports.
fn deadline(s: &Server, key: &str) -> u64 {
    let r = s.get(&format!("/kv/{key}"));
    assert_eq!(r.status, 200, "{}", r.text());
    millis(r.header("twinkv-expires-at").expect("Twinkv-Expires-At"))
}

#[test]
fn a_key_with_a_ttl_reports_it_then_is_absent_to_everything_and_is_removed_with_its_own_seq() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    let before = now_ms();
    let r = s.request("PUT", "/kv/session?ttl=1", &[], Some(b"token"));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s.put_text("stays", "here").status, 201);
    let g = s.get("/kv/session");
    assert_eq!(g.text(), "token");
    let ttl: u64 = g.header("twinkv-ttl").expect("Twinkv-TTL").parse().unwrap();
    assert_eq!(ttl, 1, "whole seconds left of a 1 s TTL");
    let at = millis(g.header("twinkv-expires-at").unwrap());
    assert!(at >= before + 1000 && at <= now_ms() + 1000, "{at}");
    // HEAD carries the same headers; a key without a TTL carries neither.
    let h = s.request("HEAD", "/kv/session", &[], None);
    assert_eq!(h.header("twinkv-expires-at"), g.header("twinkv-expires-at"));
    assert!(s.get("/kv/stays").header("twinkv-ttl").is_none());
    // A listing with values names the expiry time.
    let items = s.get("/kv?values=true").json()["items"].clone();
    assert_eq!(items[0]["key"], "session");
    assert_eq!(millis(items[0]["expires_at"].as_str().unwrap()), at);
    assert!(items[1].get("expires_at").is_none(), "{items}");

    // From the deadline on, absent at once, before any removal.
    wait_past(at);
    assert_eq!(s.get("/kv/session").status, 404);
    assert_eq!(s.request("HEAD", "/kv/session", &[], None).status, 404);
    assert_eq!(s.get("/kv").json()["keys"], json!(["stays"]));
    let cas = s.request("PUT", "/kv/session", &[("If-Match", "*")], Some(b"x"));
    cas.assert_error(412);
    assert_eq!(
        s.request("DELETE", "/kv/session", &[], None).status,
        404,
        "an expired key cannot be deleted"
    );

    // The writer removes it within a second, as a write of its own: the seq moves on.
    eventually("the expired key is removed", || {
        num(&s.snapshot_status(), "seq") == 3
    });
    // And it can be created again, create-only.
    let again = s.request(
        "PUT",
        "/kv/session",
        &[("If-None-Match", "*")],
        Some(b"new"),
    );
    assert_eq!(again.status, 201, "{}", again.text());
    assert_eq!(num(&again.json(), "version"), 4);
}

#[test]
fn an_overwrite_without_ttl_clears_it_and_one_with_ttl_sets_a_new_one() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.request("PUT", "/kv/k?ttl=1", &[], Some(b"a")).status, 201);
    assert_eq!(s.put_text("k", "b").status, 200);
    let g = s.get("/kv/k");
    assert!(
        g.header("twinkv-ttl").is_none(),
        "the TTL survived an overwrite"
    );
    // Long past the first TTL, the key is still there.
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(s.get("/kv/k").text(), "b");
    // A form POST takes `?ttl=` too.
    let r = s.request(
        "POST",
        "/kv/k?ttl=100",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"value=c"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let ttl: u64 = s
        .get("/kv/k")
        .header("twinkv-ttl")
        .unwrap()
        .parse()
        .unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
}

#[test]
fn batch_ttls_apply_to_their_puts_only() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    let r = s.batch(&json!({"put": {"a": 1, "b": 2}, "ttl": {"a": 1}}));
    assert_eq!(r.status, 200, "{}", r.text());
    let at = deadline(&s, "a");
    assert!(s.get("/kv/b").header("twinkv-ttl").is_none());
    wait_past(at);
    assert_eq!(s.get("/kv/a").status, 404);
    assert_eq!(s.get("/kv/b").text(), "2");
}

#[test]
fn every_bad_ttl_is_refused_and_changes_nothing() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.put_text("k", "v").status, 201);
    let before = s.entries();
    let mut violations = Vec::new();
    for ttl in [
        "0",
        "-1",
        "abc",
        "1.5",
        "",
        "315360001",
        "99999999999999999999",
    ] {
        for (method, headers, body) in [
            ("PUT", vec![], &b"x"[..]),
            (
                "POST",
                vec![("Content-Type", "application/x-www-form-urlencoded")],
                &b"value=x"[..],
            ),
        ] {
            let r = s.request(method, &format!("/kv/k?ttl={ttl}"), &headers, Some(body));
            if r.status != 400 || !r.text().contains("ttl") {
                violations.push(format!("{method} ttl={ttl:?}: {} {}", r.status, r.text()));
            }
        }
    }
    for body in [
        json!({"put": {"a": 1}, "ttl": {"a": 0}}),
        json!({"put": {"a": 1}, "ttl": {"a": -5}}),
        json!({"put": {"a": 1}, "ttl": {"a": "10"}}),
        json!({"put": {"a": 1}, "ttl": {"a": 315_360_001u64}}),
        json!({"put": {"a": 1}, "ttl": {"b": 10}}),
        json!({"put": {"a": 1}, "ttl": [10]}),
        json!({"delete": ["k"], "ttl": {"k": 10}}),
    ] {
        let r = s.batch(&body);
        if r.status != 400 {
            violations.push(format!("batch {body}: {} {}", r.status, r.text()));
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(s.entries(), before);
    // The largest TTL is accepted.
    let r = s.request("PUT", "/kv/long?ttl=315360000", &[], Some(b"x"));
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn expiry_survives_restarts_including_a_deadline_that_passed_while_down() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    assert_eq!(
        s.request("PUT", "/kv/short?ttl=1", &[], Some(b"x")).status,
        201
    );
    assert_eq!(
        s.request("PUT", "/kv/long?ttl=3600", &[], Some(b"y"))
            .status,
        201
    );
    let long_at = deadline(&s, "long");
    let short_at = deadline(&s, "short");
    s.kill();
    // The short deadline passes while the server is down.
    wait_past(short_at);
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.get("/kv/short").status, 404, "an expired key came back");
    assert_eq!(deadline(&s, "long"), long_at, "the expiry time changed");
    // A snapshot keeps expiry times, and so does a restart from it.
    let snap = s.snapshot_now();
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snap["file"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(doc["expires"]["long"], long_at, "{doc}");
    assert!(doc["data"].get("short").is_none(), "{doc}");
    assert_eq!(s.terminate().code(), Some(0));
    let s = Server::start(dir.path(), &[]);
    assert_eq!(deadline(&s, "long"), long_at);
    // `inspect --dump` leaves out expired keys.
    assert_eq!(
        s.request("PUT", "/kv/soon?ttl=1", &[], Some(b"z")).status,
        201
    );
    let soon = deadline(&s, "soon");
    s.kill();
    wait_past(soon);
    let (code, out, _) = crate::util::inspect(&["--dump", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    let dumped: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dumped, json!({"long": "y"}));
}
