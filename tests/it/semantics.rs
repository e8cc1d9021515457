//! HTTP semantics a client relies on (issue 13): HEAD wherever GET works, content negotiation
//! by q-value with `Vary: Accept`, conditional requests as RFC 9110 has them (a 412 carries the
//! current `ETag`), the bearer scheme in any case, `application/*+json` bodies, keys with dot
//! segments, 64 KiB keys in a URL, and what a failing `POST /snapshot` or final snapshot says.
//!
//! Requests whose exact bytes matter (dot segments, which every URL library normalises away)
//! go through [`raw`], a bare TCP client; the rest through the harness's client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::util::{num, temp_dir, Resp, Server};

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// A server and the data dir it uses; fields drop in order, so the server dies before its dir.
struct Fixture {
    server: Server,
    _dir: TempDir,
}

impl Deref for Fixture {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

fn start(args: &[&str]) -> Fixture {
    let dir = temp_dir();
    let server = Server::start(dir.path(), args);
    Fixture { server, _dir: dir }
}

/// Sends one request, exactly as given, on a fresh connection with `Connection: close`, and
/// reads the answer to the end. The body of a HEAD answer is whatever bytes arrived, so an
/// empty `body` means none were sent.
fn raw(s: &Server, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let addr = s.base.strip_prefix("http://").expect("http base");
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "PUT" | "POST") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    conn.write_all(&bytes).expect("send");
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf).expect("read");
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&buf)));
    let head = std::str::from_utf8(&buf[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

/// The headers of `r` but `date` (which moves) and those named in `skip`, sorted.
fn headers_but(r: &Resp, skip: &[&str]) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .filter(|(n, _)| n != "date" && !skip.contains(&n.as_str()))
        .collect();
    h.sort();
    h
}

/// Fails with every violation at once.
fn assert_none(violations: &[String]) {
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. HEAD wherever GET works

/// Regression: `HEAD /metrics` and `HEAD /snapshot` got 405 (`Allow: GET` and `GET, POST`),
/// though RFC 9110 §9.1 has every server that answers GET answer HEAD.
#[test]
fn head_answers_wherever_get_does_with_the_same_headers_and_no_body() {
    let s = start(&[]);
    assert_eq!(s.put_text("t", "text").status, 201);
    assert_eq!(s.put_json("j", &json!({"a": [1, 2]})).status, 201);
    s.snapshot_now();
    let mut violations = Vec::new();
    for path in [
        "/health",
        "/metrics",
        "/snapshot",
        "/kv",
        "/kv?values=true",
        "/kv/t",
        "/kv/j",
        "/kv/absent",
    ] {
        let get = raw(&s, "GET", path, &[], b"");
        let head = raw(&s, "HEAD", path, &[], b"");
        if head.status != get.status {
            violations.push(format!(
                "HEAD {path}: {} where GET has {}",
                head.status, get.status
            ));
        }
        if !head.body.is_empty() {
            violations.push(format!("HEAD {path}: {} body bytes", head.body.len()));
        }
        // `/metrics` counts the requests themselves, so its length moves between the two.
        let skip: &[&str] = if path == "/metrics" {
            &["content-length"]
        } else {
            &[]
        };
        if headers_but(&head, skip) != headers_but(&get, skip) {
            violations.push(format!(
                "HEAD {path}: headers {:?} where GET has {:?}",
                headers_but(&head, skip),
                headers_but(&get, skip)
            ));
        }
        if head.header("content-length").is_none() {
            violations.push(format!("HEAD {path}: no content-length"));
        }
    }
    assert_none(&violations);
}

/// Regression: the 405 `Allow` lists of `/metrics` and `/snapshot` left out HEAD.
#[test]
fn every_405_allow_list_names_head() {
    let s = start(&[]);
    let mut violations = Vec::new();
    for (method, path, allow) in [
        ("DELETE", "/metrics", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("DELETE", "/snapshot", "GET, HEAD, POST"),
        ("PUT", "/snapshot", "GET, HEAD, POST"),
        ("DELETE", "/health", "GET, HEAD"),
        ("DELETE", "/kv", "GET, HEAD, POST"),
        ("PATCH", "/kv/k", "GET, HEAD, PUT, POST, DELETE"),
    ] {
        let r = raw(&s, method, path, &[], b"");
        if r.status != 405 || r.header("allow") != Some(allow) {
            violations.push(format!(
                "{method} {path}: {} with Allow {:?}, expected 405 with {allow:?}",
                r.status,
                r.header("allow")
            ));
        }
    }
    assert_none(&violations);
}

// ---------------------------------------------------------------------------------------------
// 3. Content negotiation: `Vary: Accept` and q-values

/// Regression: any mention of `application/json` in `Accept` chose JSON, even with `q=0`
/// (which RFC 9110 §12.4.2 defines as "not acceptable"), and no answer said `Vary: Accept`, so a
/// shared cache could hand a JSON answer to a client that asked for text.
#[test]
fn a_string_is_json_only_when_accept_prefers_it_by_q() {
    let s = start(&[]);
    assert_eq!(s.put_text("s", "hi").status, 201);
    let cases: &[(Option<&str>, bool)] = &[
        (None, false),
        (Some("application/json;q=0, text/plain"), false),
        (Some("application/json;q=0"), false),
        (Some("application/json;q=0, */*"), false),
        (Some("*/*"), false),
        (Some("text/plain, application/json"), false),
        (Some("application/json, text/plain, */*"), false),
        (Some("application/json;q=0.5, text/plain;q=0.9"), false),
        (Some("image/png"), false),
        (Some("application/json;q=nonsense"), false),
        (Some("application/json"), true),
        (Some("text/plain;q=0.5, application/json"), true),
        (Some("text/html, application/json;q=0.9"), true),
        (Some("*/*;q=0.1, application/json;q=0.2"), true),
        (Some("application/*"), true),
        (Some("Application/JSON; charset=utf-8; q=1"), true),
    ];
    let mut violations = Vec::new();
    for &(accept, json) in cases {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        for method in ["GET", "HEAD"] {
            let r = s.request(method, "/kv/s", &headers, None);
            let (ty, body) = if json { (JSON, "\"hi\"") } else { (TEXT, "hi") };
            if r.status != 200 || r.header("content-type") != Some(ty) {
                violations.push(format!(
                    "{method} Accept {accept:?}: {} {:?}, expected {ty}",
                    r.status,
                    r.header("content-type")
                ));
            }
            if method == "GET" && r.text() != body {
                violations.push(format!("GET Accept {accept:?}: body {:?}", r.text()));
            }
            if r.header("vary") != Some("Accept") {
                violations.push(format!(
                    "{method} Accept {accept:?}: Vary {:?}",
                    r.header("vary")
                ));
            }
        }
    }
    assert_none(&violations);
}

/// Regression: a 304 left out `Vary: Accept`, which RFC 9110 §15.4.5 has it repeat from the 200.
#[test]
fn vary_accept_is_on_every_200_and_304_of_a_key() {
    let s = start(&[]);
    assert_eq!(s.put_text("s", "hi").status, 201);
    assert_eq!(s.put_json("j", &json!([1])).status, 201);
    let mut violations = Vec::new();
    for key in ["s", "j"] {
        let path = format!("/kv/{key}");
        for method in ["GET", "HEAD"] {
            let etag = s.request(method, &path, &[], None);
            let r = s.request(
                method,
                &path,
                &[("If-None-Match", etag.header("etag").expect("etag"))],
                None,
            );
            if r.status != 304 {
                violations.push(format!("{method} {path} If-None-Match: {}", r.status));
            }
            for r in [etag, r] {
                if r.header("vary") != Some("Accept") {
                    violations.push(format!(
                        "{method} {path} ({}): Vary {:?}",
                        r.status,
                        r.header("vary")
                    ));
                }
            }
        }
    }
    assert_none(&violations);
}

// ---------------------------------------------------------------------------------------------
// 4. Conditional requests: `If-Match` on reads, and the current `ETag` on every 412

/// Regression: `If-Match` was ignored on GET and HEAD (a stale tag still got 200, and an
/// absent key 404), though RFC 9110 §13.1.1 has a server answer 412 when it does not match.
#[test]
fn if_match_on_get_and_head_gets_412_when_unmet() {
    let s = start(&[]);
    assert_eq!(s.put_text("k", "v1").status, 201);
    assert_eq!(s.put_text("k", "v2").status, 200);
    let mut violations = Vec::new();
    for method in ["GET", "HEAD"] {
        let expect = |headers: &[(&str, &str)], path: &str, status: u16, etag: Option<&str>| {
            let r = s.request(method, path, headers, None);
            let mut bad = Vec::new();
            if r.status != status {
                bad.push(format!(
                    "status {} ({})",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
            if r.header("etag") != etag {
                bad.push(format!("ETag {:?}, expected {etag:?}", r.header("etag")));
            }
            if status == 412 && method == "GET" {
                let ok =
                    serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["error"].is_string());
                if !ok {
                    bad.push(format!("412 body {:?}", String::from_utf8_lossy(&r.body)));
                }
            }
            bad.into_iter()
                .map(|b| format!("{method} {path} {headers:?}: {b}"))
                .collect::<Vec<_>>()
        };
        violations.extend(expect(
            &[("If-Match", "\"2\"")],
            "/kv/k",
            200,
            Some("\"2\""),
        ));
        violations.extend(expect(&[("If-Match", "*")], "/kv/k", 200, Some("\"2\"")));
        violations.extend(expect(
            &[("If-Match", "\"1\", \"2\"")],
            "/kv/k",
            200,
            Some("\"2\""),
        ));
        // Unmet: 412 with the current ETag, so the client learns the version without a GET.
        violations.extend(expect(
            &[("If-Match", "\"1\"")],
            "/kv/k",
            412,
            Some("\"2\""),
        ));
        violations.extend(expect(
            &[("If-Match", "W/\"2\"")],
            "/kv/k",
            412,
            Some("\"2\""),
        ));
        violations.extend(expect(
            &[("If-Match", "\"x\"")],
            "/kv/k",
            412,
            Some("\"2\""),
        ));
        // An absent key matches no tag, not even `*`: 412, and there is no ETag to give.
        violations.extend(expect(&[("If-Match", "\"2\"")], "/kv/absent", 412, None));
        violations.extend(expect(&[("If-Match", "*")], "/kv/absent", 412, None));
        // If-Match is evaluated first (RFC 9110 §13.2.2): unmet, it wins over a 304.
        violations.extend(expect(
            &[("If-Match", "\"1\""), ("If-None-Match", "\"2\"")],
            "/kv/k",
            412,
            Some("\"2\""),
        ));
        // Met, the If-None-Match then decides.
        violations.extend(expect(
            &[("If-Match", "\"2\""), ("If-None-Match", "\"2\"")],
            "/kv/k",
            304,
            Some("\"2\""),
        ));
        violations.extend(expect(&[("If-Match", "2")], "/kv/k", 400, None));
    }
    assert_none(&violations);
}

/// Regression: a 412 from a write carried no `ETag`, so a client whose compare-and-set lost a
/// race had to GET the key before trying again.
#[test]
fn every_412_of_a_write_carries_the_current_etag_when_the_key_exists() {
    let s = start(&[]);
    assert_eq!(s.put_text("k", "v1").status, 201);
    assert_eq!(s.put_text("k", "v2").status, 200);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let mut violations = Vec::new();
    /// Method, path, headers, body, the ETag the 412 must carry.
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a [u8],
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "PUT",
            "/kv/k",
            vec![("If-Match", "\"1\"")],
            b"x",
            Some("\"2\""),
        ),
        (
            "PUT",
            "/kv/k",
            vec![("If-None-Match", "*")],
            b"x",
            Some("\"2\""),
        ),
        (
            "PUT",
            "/kv/k",
            vec![("If-None-Match", "\"2\"")],
            b"x",
            Some("\"2\""),
        ),
        (
            "POST",
            "/kv/k",
            vec![form[0], ("If-Match", "\"1\"")],
            b"value=x",
            Some("\"2\""),
        ),
        (
            "DELETE",
            "/kv/k",
            vec![("If-Match", "\"1\"")],
            b"",
            Some("\"2\""),
        ),
        ("PUT", "/kv/absent", vec![("If-Match", "\"2\"")], b"x", None),
        ("PUT", "/kv/absent", vec![("If-Match", "*")], b"x", None),
        ("DELETE", "/kv/absent", vec![("If-Match", "*")], b"", None),
    ];
    for (method, path, headers, body, etag) in cases {
        let body = (!body.is_empty() || method != "DELETE").then_some(body);
        let r = s.request(method, path, &headers, body);
        let ok = r.status == 412
            && r.header("etag") == etag
            && serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["error"].is_string());
        if !ok {
            violations.push(format!(
                "{method} {path} {headers:?}: {} ETag {:?} body {:?}, expected 412 with ETag {etag:?}",
                r.status,
                r.header("etag"),
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    assert_none(&violations);
    // None of them changed anything.
    let g = s.get("/kv/k");
    assert_eq!((g.text(), g.header("etag")), ("v2".into(), Some("\"2\"")));
    assert_eq!(s.get("/kv/absent").status, 404);
}

/// A compare-and-set loop driven only by the ETag of each 412: several clients race to extend
/// one chain of versions, none ever GETs, and the chain has no gap and no fork.
#[test]
fn a_compare_and_set_loop_needs_no_get() {
    const CLIENTS: usize = 4;
    const WRITES: usize = 25;
    let s = start(&[]);
    let first = s.put_json("chain", &json!({"prev": 0}));
    assert_eq!(first.status, 201);
    let first_tag = first.header("etag").expect("etag").to_string();
    // Each success: (the version it replaced, the version it wrote).
    let links: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let s = &*s;
                let mut tag = first_tag.clone();
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    while mine.len() < WRITES {
                        let prev: u64 = tag.trim_matches('"').parse().expect("numeric tag");
                        let body = json!({"prev": prev, "client": client}).to_string();
                        let r = s.request(
                            "PUT",
                            "/kv/chain",
                            &[("Content-Type", JSON), ("If-Match", &tag)],
                            Some(body.as_bytes()),
                        );
                        match r.status {
                            200 => {
                                mine.push((prev, num(&r.json(), "version")));
                                tag = r.header("etag").expect("etag on 200").to_string();
                            }
                            412 => {
                                tag = r.header("etag").expect("etag on 412").to_string();
                            }
                            other => panic!("PUT: {other} {}", r.text()),
                        }
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client"))
            .collect()
    });
    let mut links = links;
    links.sort_by_key(|&(_, version)| version);
    assert_eq!(links.len(), CLIENTS * WRITES);
    let mut expected_prev = 1;
    for (prev, version) in &links {
        assert_eq!(
            *prev, expected_prev,
            "a write replaced a version that was not current"
        );
        expected_prev = *version;
    }
    let last = s.get("/kv/chain");
    assert_eq!(
        last.header("etag"),
        Some(format!("\"{expected_prev}\"").as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Small things

/// Regression: only `Bearer` in that exact case was taken, though RFC 9110 §11.1 has the scheme
/// name matched without regard to case; `bearer s3cret` got 401.
#[test]
fn the_bearer_scheme_is_matched_in_any_case() {
    let s = start(&["--auth-token", "s3cret"]);
    let mut violations = Vec::new();
    for (auth, status) in [
        ("Bearer s3cret", 200),
        ("bearer s3cret", 200),
        ("BEARER s3cret", 200),
        ("bEaReR s3cret", 200),
        ("bearer   s3cret", 200),
        ("bearer S3CRET", 401),
        ("bearer s3cre", 401),
        ("bearers3cret", 401),
        ("bearer", 401),
        ("Basic s3cret", 401),
        ("Bearerx s3cret", 401),
    ] {
        let r = s.request("GET", "/kv", &[("Authorization", auth)], None);
        if r.status != status {
            violations.push(format!(
                "Authorization {auth:?}: {}, expected {status}",
                r.status
            ));
        }
    }
    assert_none(&violations);
}

/// Regression: only `application/json` bodies were parsed as JSON; an
/// `application/merge-patch+json` or `application/vnd.foo+json` body was stored as a string.
#[test]
fn application_plus_json_bodies_are_stored_as_json() {
    let s = start(&[]);
    let mut violations = Vec::new();
    for (i, ty) in [
        "application/merge-patch+json",
        "application/vnd.foo+json; charset=utf-8",
        "Application/Problem+JSON",
        "application/vnd.api.v2+json;profile=x",
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("/kv/j{i}");
        let r = s.request(
            "PUT",
            &key,
            &[("Content-Type", ty)],
            Some(br#"{ "a" : [1, 2] }"#),
        );
        if r.status != 201 {
            violations.push(format!("PUT {ty}: {} {}", r.status, r.text()));
            continue;
        }
        let g = s.get(&key);
        if g.header("content-type") != Some(JSON) || g.text() != r#"{"a":[1,2]}"# {
            violations.push(format!(
                "{ty}: stored as {:?} {:?}",
                g.header("content-type"),
                g.text()
            ));
        }
        // A JSON string is a string value, served as text.
        let r = s.request("PUT", &key, &[("Content-Type", ty)], Some(br#""quoted""#));
        let g = s.get(&key);
        if r.status != 200 || g.text() != "quoted" {
            violations.push(format!("{ty}: a JSON string came back as {:?}", g.text()));
        }
    }
    // It must parse: 400, and nothing stored.
    for ty in [
        "application/merge-patch+json",
        "application/vnd.foo+json; charset=utf-8",
    ] {
        let r = s.request(
            "PUT",
            "/kv/bad",
            &[("Content-Type", ty)],
            Some(b"{not json"),
        );
        if r.status != 400 || !r.json()["error"].is_string() {
            violations.push(format!("PUT bad JSON as {ty}: {} {}", r.status, r.text()));
        }
    }
    if s.get("/kv/bad").status != 404 {
        violations.push("a refused body was stored".into());
    }
    // Not JSON types: text, as before.
    for ty in ["application/json-seq", "text/x+json", "application/+json"] {
        let r = s.request("PUT", "/kv/t", &[("Content-Type", ty)], Some(b"{not json"));
        let g = s.get("/kv/t");
        if !matches!(r.status, 200 | 201) || g.header("content-type") != Some(TEXT) {
            violations.push(format!(
                "PUT as {ty}: {} then {:?}",
                r.status,
                g.header("content-type")
            ));
        }
    }
    assert_none(&violations);
}

/// The seq and every key with its value and version: what a refused write must leave alone.
fn state(s: &Server) -> (Value, Value) {
    let r = s.get("/kv?values=true&limit=10000");
    assert_eq!(r.status, 200, "{}", r.text());
    (
        s.snapshot_status()["seq"].clone(),
        r.json()["items"].clone(),
    )
}

/// Regression: `PUT /kv/a/../b` stored the key `a/../b`, which no client can read back: each
/// normalises the URL to `/kv/b` first (RFC 3986 §5.2.4). Such writes are 400 now, with the
/// reason; reads and deletes still reach such keys, and names with dots that are not whole
/// segments stay fine.
#[test]
fn writes_of_keys_with_dot_segments_are_refused_with_the_reason() {
    let s = start(&[]);
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let before = state(&s);
    let mut violations = Vec::new();
    for target in [
        "/kv/.",
        "/kv/..",
        "/kv/a/./b",
        "/kv/a/../b",
        "/kv/./x",
        "/kv/x/..",
        "/kv/%2E%2E",
        "/kv/a%2F..%2Fb",
        "/kv/a/%2e/b",
    ] {
        for (method, headers, body) in [
            ("PUT", vec![], &b"v"[..]),
            ("PUT", vec![("Content-Type", JSON)], &b"1"[..]),
            ("POST", vec![form], &b"value=v"[..]),
        ] {
            let r = raw(&s, method, target, &headers, body);
            let msg = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string));
            if r.status != 400 || !msg.as_deref().is_some_and(|m| m.contains("segment")) {
                violations.push(format!(
                    "{method} {target}: {} {:?}, expected 400 naming the dot segment",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
        // Reads and deletes still reach the key (there is none here).
        for method in ["GET", "HEAD", "DELETE"] {
            let r = raw(&s, method, target, &[], b"");
            if r.status != 404 {
                violations.push(format!("{method} {target}: {}, expected 404", r.status));
            }
        }
    }
    for key in [".", "..", "a/./b", "a/../b", "./x", "x/.."] {
        let r = s.batch(&json!({"put": {key: 1, "fine": 2}}));
        if r.status != 400
            || !r.json()["error"]
                .as_str()
                .is_some_and(|m| m.contains("segment"))
        {
            violations.push(format!("batch put {key:?}: {} {}", r.status, r.text()));
        }
        let r = s.batch(&json!({"delete": [key]}));
        if r.status != 200 {
            violations.push(format!("batch delete {key:?}: {} {}", r.status, r.text()));
        }
    }
    assert_none(&violations);
    assert_eq!(state(&s), before, "a refused write changed something");

    // Dots that are not a whole segment are ordinary characters.
    for key in ["a.b", "...", ".hidden", "a/.b/c", "a/..b", "b../c"] {
        let r = raw(&s, "PUT", &format!("/kv/{key}"), &[], key.as_bytes());
        assert_eq!(
            r.status,
            201,
            "PUT {key}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let g = raw(&s, "GET", &format!("/kv/{key}"), &[], b"");
        assert_eq!(
            (g.status, g.body),
            (200, key.as_bytes().to_vec()),
            "GET {key}"
        );
    }
}
