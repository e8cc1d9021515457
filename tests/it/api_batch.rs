//! `POST /kv`: a batch of puts and deletes applied at one seq, the empty batch, and bad or
//! oversized batches, which apply nothing.
//!
//! The rules every api test keeps, and the helpers they share, are in [`crate::api`].

use serde_json::{json, Value};

use crate::api::{assert_none, check_error, lossy, metric, state, JSON};
use crate::util::{encode, Fixture};

#[test]
fn batch_applies_everything_at_one_seq() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("old", "x").status, 201);
    assert_eq!(s.put_text("keep", "k").status, 201);
    let r = s.batch(&json!({
        "put": {"a": 1, "b": "two", "c": {"x": [1]}, "old/not": null},
        "delete": ["old", "never-existed"],
    }));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"seq": 3}));
    for key in ["a", "b", "c", "old/not"] {
        let g = s.get(&format!("/kv/{}", encode(key)));
        assert_eq!(g.status, 200, "{key}");
        assert_eq!(g.header("etag"), Some("\"3\""), "{key}");
    }
    assert_eq!(s.get("/kv/a").json(), json!(1));
    assert_eq!(s.get("/kv/b").text(), "two");
    assert_eq!(s.get("/kv/c").json(), json!({"x": [1]}));
    assert_eq!(s.get("/kv/old%2Fnot").json(), Value::Null);
    s.get("/kv/old").assert_error(404);
    s.get("/kv/never-existed").assert_error(404);
    assert_eq!(s.get("/kv/keep").header("etag"), Some("\"2\""));
    assert_eq!(metric(&s, "twinkv_seq"), Some(3.0));
    assert_eq!(metric(&s, "twinkv_keys"), Some(5.0));
    // The next write gets the next seq.
    assert_eq!(s.put_text("after", "y").json()["version"], 4);

    // Either part may be left out.
    let r = s.batch(&json!({"put": {"only": true}}));
    assert_eq!(r.json(), json!({"seq": 5}));
    let r = s.batch(&json!({"delete": ["only"]}));
    assert_eq!(r.json(), json!({"seq": 6}));
    s.get("/kv/only").assert_error(404);
    // A batch that replaces keys replaces their versions.
    let r = s.batch(&json!({"put": {"a": 2, "b": 3}}));
    assert_eq!(r.json(), json!({"seq": 7}));
    assert_eq!(s.get("/kv/a").header("etag"), Some("\"7\""));
    assert_eq!(s.get("/kv/b").json(), json!(3));
}

#[test]
fn an_empty_batch_changes_nothing_and_returns_the_current_seq() {
    let s = Fixture::start(&[]);
    let r = s.batch(&json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"seq": 0}), "nothing written yet");
    assert_eq!(s.put_text("k", "v").status, 201);
    assert_eq!(s.put_text("k", "w").status, 200);
    let before = state(&s);
    for body in [
        json!({}),
        json!({"put": {}}),
        json!({"delete": []}),
        json!({"put": {}, "delete": []}),
    ] {
        let r = s.batch(&body);
        assert_eq!(r.status, 200, "{body}: {}", r.text());
        assert_eq!(r.json(), json!({"seq": 2}), "{body}");
        assert_eq!(state(&s), before, "{body}");
    }
    // Deleting only absent keys is not an error and leaves every key alone.
    let r = s.batch(&json!({"delete": ["absent", "also/absent"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(state(&s).items, before.items);
    assert_eq!(s.get("/kv/k").text(), "w");
}

#[test]
fn a_bad_batch_is_400_and_applies_nothing() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("x", "orig").status, 201);
    let before = state(&s);
    let bodies: Vec<Vec<u8>> = [
        &b""[..],
        b"not json",
        b"[]",
        b"null",
        b"\"put\"",
        b"42",
        b"{\"put\": {\"y\": 1}} trailing",
        b"{\"put\": {\"y\": 1}",
        b"{\"put\": [\"y\"]}",
        b"{\"put\": \"y\"}",
        b"{\"delete\": {\"x\": 1}}",
        b"{\"delete\": \"x\"}",
        b"{\"delete\": [1]}",
        b"{\"delete\": [null]}",
        b"{\"delete\": [[\"x\"]]}",
        b"{\"put\": {\"y\": 1}, \"delete\": [\"x\", 2]}",
        b"{\"put\": {\"\": 1, \"y\": 1}}",
        b"{\"put\": {\"y\": 1}, \"delete\": [\"\"]}",
        b"{\"put\": {\"a\\u0000b\": 1, \"y\": 1}}",
        b"{\"put\": {\"y\": 1}, \"delete\": [\"a\\nb\"]}",
        b"{\"put\": {\"y\": 1e999999}}",
        b"{\"put\": {\"y\": 1, \"z\": [-1e999999]}}",
        b"{\"put\": {\"y\": \"\\ud800\"}}",
        b"{\"put\": {\"\\udc00\": 1, \"y\": 1}}",
        b"{\"put\": {\"y\": 1}, \"delete\": [\"\\ud800\"]}",
        b"{\"put\": {\"y\": \"\xff\"}}",
        // A key both put and deleted.
        b"{\"put\": {\"y\": 1, \"x\": 2}, \"delete\": [\"x\"]}",
        b"{\"put\": {\"y\": 1}, \"delete\": [\"y\"]}",
        b"{\"put\": {\"y\": 1, \"new\": 2}, \"delete\": [\"absent\", \"new\"]}",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    let mut violations = Vec::new();
    for body in &bodies {
        let r = s.request("POST", "/kv", &[("Content-Type", JSON)], Some(body));
        if let Err(e) = check_error(&r, 400) {
            violations.push(format!("POST /kv {:?}: {e}", lossy(body)));
        }
        let now = state(&s);
        if now != before {
            violations.push(format!(
                "POST /kv {:?} changed the store: {now:?}",
                lossy(body)
            ));
        }
    }
    assert_none(&violations);
    assert_eq!(s.get("/kv/x").text(), "orig");
    s.get("/kv/y").assert_error(404);
}

#[test]
fn oversized_batches_and_batch_values_are_413_and_apply_nothing() {
    let s = Fixture::start(&["--max-batch-bytes", "1000", "--max-value-bytes", "100"]);
    assert_eq!(s.put_text("x", "orig").status, 201);
    let before = state(&s);
    // `{"put":{"pad":"…"}}` is 18 bytes plus the padding.
    let padded = |n: usize| format!(r#"{{"put":{{"pad":"{}"}}}}"#, "p".repeat(n - 18));
    let mut violations = Vec::new();
    let big_batch = {
        // Many small values whose total exceeds the batch limit.
        let put: serde_json::Map<String, Value> = (0..100)
            .map(|i| (format!("b{i}"), json!("0123456789")))
            .collect();
        json!({ "put": put }).to_string()
    };
    assert!(big_batch.len() > 1000);
    for body in [
        padded(1001),
        big_batch,
        format!(r#"{{"put":{{"ok":1,"big":"{}"}}}}"#, "v".repeat(200)),
        format!(r#"{{"put":{{"ok":1,"big":[{}0]}}}}"#, "0,".repeat(100)),
    ] {
        let r = s.request(
            "POST",
            "/kv",
            &[("Content-Type", JSON)],
            Some(body.as_bytes()),
        );
        if let Err(e) = check_error(&r, 413) {
            violations.push(format!("POST /kv ({} bytes): {e}", body.len()));
        }
    }
    // A large body that is also bad JSON is refused by size without being parsed.
    let junk = "x".repeat(5000);
    let r = s.request(
        "POST",
        "/kv",
        &[("Content-Type", JSON)],
        Some(junk.as_bytes()),
    );
    if let Err(e) = check_error(&r, 413) {
        violations.push(format!("POST /kv (5000 bytes of junk): {e}"));
    }
    assert_none(&violations);
    assert_eq!(state(&s), before);

    // At the limit, a batch is fine.
    let body = format!(r#"{{"put":{{"pad":"{}"}}}}"#, "p".repeat(50));
    let body = format!("{body}{}", " ".repeat(1000 - body.len()));
    assert_eq!(body.len(), 1000);
    let r = s.request(
        "POST",
        "/kv",
        &[("Content-Type", JSON)],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.get("/kv/pad").text(), "p".repeat(50));
}
