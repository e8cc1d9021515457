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

use serde_json::json;
use tempfile::TempDir;

use crate::util::{temp_dir, Resp, Server};

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
