//! Routes, methods and malformed HTTP: unknown routes (404), wrong methods (405), requests
//! the HTTP layer refuses before routing, and the JSON body of every error a route produces.
//!
//! The rules every api test keeps, and the helpers they share, are in [`crate::api`].

use serde_json::json;

use crate::api::{assert_none, check_error, form, lossy, put_with, state, JSON};
use crate::util::{Fixture, Outcome, Resp};

#[test]
fn unknown_routes_are_404_and_wrong_methods_405() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("k", "v").status, 201);
    let before = state(&s);
    let mut violations = Vec::new();
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/nope"),
        ("GET", "/kvx"),
        ("GET", "/kv2/k"),
        ("GET", "/KV/k"),
        ("GET", "/health/x"),
        ("GET", "/metrics/x"),
        ("PUT", "/nope"),
        ("POST", "/"),
        ("DELETE", "/anything/k"),
    ] {
        let r = s.request(method, path, &[], None);
        if let Err(e) = check_error(&r, 404) {
            violations.push(format!("{method} {path}: {e}"));
        }
    }
    for (method, path) in [
        ("PATCH", "/kv/k"),
        ("PUT", "/kv"),
        ("DELETE", "/kv"),
        ("PATCH", "/kv"),
        ("POST", "/health"),
        ("PUT", "/health"),
        ("DELETE", "/health"),
        ("POST", "/metrics"),
        ("PUT", "/metrics"),
        ("DELETE", "/metrics"),
    ] {
        let body: Option<&[u8]> = matches!(method, "PUT" | "POST" | "PATCH").then_some(b"x");
        let r = s.request(method, path, &[], body);
        if let Err(e) = check_error(&r, 405) {
            violations.push(format!("{method} {path}: {e}"));
        } else if r.header("allow").is_none() {
            violations.push(format!("{method} {path}: 405 without an Allow header"));
        }
    }
    assert_none(&violations);
    assert_eq!(state(&s), before);
    assert_eq!(s.get("/kv/k").text(), "v");
}

#[test]
fn malformed_http_gets_a_4xx_and_the_server_keeps_running() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("k", "v").status, 201);
    let before = state(&s);
    // Refused by the HTTP layer before any route sees them (contract 0.2): 400 and a closed
    // connection; the body may be empty.
    let pre_routing: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET /kv/k HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /kv/k HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nchanged",
        b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /kv/\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /kv/a b HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    // The head is sound, so the route runs and meets the broken body itself: a JSON 400.
    let routed: &[&[u8]] = &[
        b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nchanged\r\n0\r\n\r\n",
    ];
    let mut violations = Vec::new();
    for req in pre_routing {
        let mut c = s.connect();
        c.send(req);
        match c.answer() {
            Outcome::Response(r) if r.status == 400 => {
                let says_json = r.header("content-type").is_some_and(|t| t.contains("json"));
                if says_json {
                    if let Err(e) = check_error(&r, 400) {
                        violations.push(format!("{:?}: {e}", lossy(req)));
                    }
                }
                if !c.is_closed() {
                    violations.push(format!(
                        "{:?}: 400 but the connection stayed open",
                        lossy(req)
                    ));
                }
            }
            other => violations.push(format!(
                "{:?}: {other:?} (wanted 400 and a closed connection)",
                lossy(req)
            )),
        }
        // Still serving, nothing changed.
        assert_eq!(s.get("/health").status, 200, "after {:?}", lossy(req));
    }
    for req in routed {
        match s.exchange(req) {
            Outcome::Response(r) => {
                if let Err(e) = check_error(&r, 400) {
                    violations.push(format!("{:?}: {e}", lossy(req)));
                }
            }
            other => violations.push(format!("{:?}: {other:?} (wanted a JSON 400)", lossy(req))),
        }
        assert_eq!(s.get("/health").status, 200, "after {:?}", lossy(req));
    }
    assert_eq!(state(&s), before);
    assert_eq!(s.get("/kv/k").text(), "v");
    assert_none(&violations);
}

#[test]
fn every_error_body_is_json_with_an_error_message() {
    let s = Fixture::start(&["--max-value-bytes", "10"]);
    assert_eq!(s.put_text("k", "v").status, 201);
    let cases: Vec<(Resp, u16)> = vec![
        (s.get("/kv/absent"), 404),
        (s.get("/nope"), 404),
        (s.request("PATCH", "/kv/k", &[], Some(b"x")), 405),
        (s.get("/kv/%zz"), 400),
        (s.get("/kv?limit=0"), 400),
        (put_with(&s, "/kv/k", &[("If-Match", "\"9\"")], b"x"), 412),
        (s.put_text("k", "01234567890"), 413),
        (form(&s, "k", Some(JSON), "value=1"), 415),
        (s.batch(&json!({"put": {"a": 1}, "delete": ["a"]})), 400),
    ];
    for (r, status) in &cases {
        let msg = r.assert_error(*status);
        assert!(!msg.trim().is_empty(), "an empty message for {status}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with(JSON)),
            "{status}: content type {:?}",
            r.header("content-type")
        );
    }
    assert_eq!(s.get("/kv/k").text(), "v");
}
