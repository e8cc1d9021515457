//! HTTP hygiene that REDbot ("lint for HTTP") checks, on the real binary (issue 12, item 3).
//!
//! REDbot was run against `GET /kv/{key}` (a text value, a JSON value, a missing key),
//! `/kv?prefix=`, `/health`, `/metrics`, `/snapshot` and `/openapi.json`; the README lists each
//! note and what was done about it. What it found is fixed here, each with its test:
//!
//! - no answer said how long it may be cached, so caches could pick their own lifetime
//!   (`FRESHNESS_HEURISTIC`) and serve it stale (`STALE_SERVABLE`): now every answer carries a
//!   `Cache-Control` policy, `no-cache` where there is a validator to revalidate with (a key's
//!   `ETag`, the document's), `no-store` everywhere else (`FRESHNESS_NO_CACHE_NO_VALIDATOR`);
//! - `/openapi.json` had no validator: it has an `ETag` now, and answers `If-None-Match` with 304.
//!
//! And what a linter takes for granted, kept true: HEAD and GET agree on every header.

use std::collections::BTreeMap;

use crate::util::{Fixture, Resp, Server};

fn cache_control(r: &Resp) -> Option<&str> {
    r.header("cache-control")
}

/// A server with a text value at `greeting` and a JSON value at `user/42`.
fn with_two_values() -> Fixture {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("greeting", "hello world").status, 201);
    assert_eq!(
        s.put_json(
            "user/42",
            &serde_json::json!({"name": "Ada", "admin": true})
        )
        .status,
        201
    );
    s
}

/// Regression: `GET /kv/{key}` had no `Cache-Control`, so a cache could serve a value that had
/// since been overwritten for as long as its own heuristic said (REDbot `FRESHNESS_HEURISTIC`).
#[test]
fn every_answer_about_a_key_is_no_cache_and_a_304_keeps_the_validators() {
    let s = with_two_values();
    let mut violations = Vec::new();
    let mut check = |what: &str, r: &Resp, status: u16| {
        if r.status != status || cache_control(r) != Some("no-cache") {
            violations.push(format!(
                "{what}: {} Cache-Control {:?}, expected {status} no-cache",
                r.status,
                cache_control(r)
            ));
        }
    };
    for key in ["/kv/greeting", "/kv/user/42"] {
        let r = s.get(key);
        check(&format!("GET {key}"), &r, 200);
        let tag = r.header("etag").expect("an ETag").to_string();
        assert_eq!(r.header("vary"), Some("Accept"), "GET {key}");
        let r = s.request("GET", key, &[("If-None-Match", &tag)], None);
        check(&format!("GET {key} If-None-Match"), &r, 304);
        assert_eq!(r.header("etag"), Some(tag.as_str()), "304 of {key}");
        assert_eq!(r.header("vary"), Some("Accept"), "304 of {key}");
        check(
            &format!("HEAD {key}"),
            &s.request("HEAD", key, &[], None),
            200,
        );
    }
    check("GET a missing key", &s.get("/kv/missing"), 404);
    check("a replacing PUT", &s.put_text("greeting", "hi"), 200);
    check(
        "a failed If-Match",
        &s.request("PUT", "/kv/greeting", &[("If-Match", "\"1\"")], Some(b"x")),
        412,
    );
    check("DELETE", &s.delete("user/42"), 204);
    check(
        "a wrong method",
        &s.request("PATCH", "/kv/greeting", &[], None),
        405,
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// Regression: listings, `/health`, `/metrics` and `/snapshot` had no `Cache-Control` and no
/// validator, so a cache could serve an old state as the current one (REDbot
/// `FRESHNESS_HEURISTIC`; with `no-cache` and no validator, `FRESHNESS_NO_CACHE_NO_VALIDATOR`).
#[test]
fn listings_and_live_state_are_no_store() {
    let s = with_two_values();
    let mut violations = Vec::new();
    for (method, path, status) in [
        ("GET", "/kv?prefix=", 200),
        ("GET", "/kv?prefix=user/&values=true", 200),
        ("HEAD", "/kv", 200),
        ("GET", "/kv?limit=0", 400),
        ("POST", "/kv", 400),
        ("GET", "/health", 200),
        ("HEAD", "/health", 200),
        ("GET", "/metrics", 200),
        ("GET", "/snapshot", 200),
        ("POST", "/snapshot", 200),
        ("GET", "/nope", 404),
        ("DELETE", "/health", 405),
    ] {
        let r = s.request(method, path, &[], None);
        if r.status != status || cache_control(&r) != Some("no-store") {
            violations.push(format!(
                "{method} {path}: {} Cache-Control {:?}, expected {status} no-store",
                r.status,
                cache_control(&r)
            ));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// The answers `observe` gives before any route runs carry the policy of their path too.
#[test]
fn a_401_carries_the_cache_policy_of_its_path() {
    let s = Fixture::start(&["--auth-token", "s3cret"]);
    for (path, policy) in [
        ("/kv/a", "no-cache"),
        ("/kv", "no-store"),
        ("/metrics", "no-store"),
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path}");
        assert_eq!(cache_control(&r), Some(policy), "{path}");
    }
}

/// Regression: `/openapi.json` had no validator, so a tool's cache could only fetch it whole
/// again (REDbot `FRESHNESS_NO_CACHE_NO_VALIDATOR`).
#[test]
fn the_document_revalidates_with_its_etag() {
    let s = Fixture::start(&[]);
    let r = s.get("/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(cache_control(&r), Some("no-cache"));
    let tag = r.header("etag").expect("an ETag").to_string();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    for inm in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"x\", {tag}"),
        "*".into(),
    ] {
        let r = s.request("GET", "/openapi.json", &[("If-None-Match", &inm)], None);
        assert_eq!(r.status, 304, "If-None-Match {inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(tag.as_str()));
        assert_eq!(cache_control(&r), Some("no-cache"));
    }
    let r = s.request("GET", "/openapi.json", &[("If-None-Match", "\"x\"")], None);
    assert_eq!(r.status, 200);
}

/// Every header but `date`, by lower-case name.
fn headers(r: &Resp) -> BTreeMap<String, String> {
    r.headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("date"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect()
}

fn head_and_get(s: &Server, path: &str, request: &[(&str, &str)]) -> Option<String> {
    let head = s.request("HEAD", path, request, None);
    let get = s.request("GET", path, request, None);
    let (mut h, mut g) = (headers(&head), headers(&get));
    if path == "/metrics" {
        // The GET's body counts the HEAD just answered, so its length may differ.
        h.remove("content-length");
        g.remove("content-length");
    }
    let mismatch = head.status != get.status || h != g || !head.body.is_empty();
    mismatch.then(|| {
        format!(
            "{path} {request:?}: HEAD {} {h:?} ({} body bytes) vs GET {} {g:?}",
            head.status,
            head.body.len(),
            get.status
        )
    })
}

/// HEAD answers with exactly the headers GET does, `Content-Length` included, and no body
/// (RFC 9110 §9.3.2), on every route REDbot was run against and on their errors.
#[test]
fn head_and_get_agree_on_every_header() {
    let s = with_two_values();
    let tag = s.get("/kv/greeting").header("etag").unwrap().to_string();
    let mut violations = Vec::new();
    for (path, request) in [
        ("/kv/greeting", &[][..]),
        ("/kv/greeting", &[("Accept", "application/json")][..]),
        ("/kv/greeting", &[("If-None-Match", tag.as_str())][..]),
        ("/kv/greeting", &[("If-Match", "\"9\"")][..]),
        ("/kv/user/42", &[][..]),
        ("/kv/missing", &[][..]),
        ("/kv?prefix=", &[][..]),
        ("/kv?prefix=user/&values=true", &[][..]),
        ("/kv?limit=0", &[][..]),
        ("/health", &[][..]),
        ("/metrics", &[][..]),
        ("/snapshot", &[][..]),
        ("/openapi.json", &[][..]),
        ("/nope", &[][..]),
    ] {
        violations.extend(head_and_get(&s, path, request));
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
