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
