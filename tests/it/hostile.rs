//! Hostile clients against the real binary, over bare TCP to `127.0.0.1` so no HTTP library
//! tidies the bytes first.
//!
//! The contract says bad input of any kind gets a 4xx, the server keeps running and no stored
//! data changes; every error a route produces is JSON, while a request the HTTP layer refuses
//! before routing may get an empty body and a closed connection. Each case here sends one kind
//! of bad input and checks that the answer is a 4xx (a JSON `{"error": ...}` body wherever the
//! request reaches our routes) or that the server closes or resets the connection — never a 2xx
//! that changed data, never a 5xx, never a hang. After every case a fresh connection must still be served and `GET /kv?values=true`
//! (every key, value and version) must equal what it was before the case.
//!
//! Covered:
//! - malformed request lines: garbage bytes, no HTTP version, no target, `HTTP/9.9`, lower-case
//!   and absurdly long methods, a 100 KB request line;
//! - bad keys: invalid percent-encoding (`%zz`, `%`, `%E0%A4`), raw NUL/control/DEL bytes in the
//!   request target, percent-encoded `%00`, `%0A`, `%7F` (400 JSON);
//! - oversized heads (one 100 KB header, 500 headers) and bodies (`Content-Length: 10000000000`
//!   with no body sent, a real body and a chunked body over `--max-value-bytes`);
//! - lying `Content-Length` (short body then half-close, short body then silence, long body
//!   whose excess is a garbage pipelined request);
//! - broken chunked encoding (bad size, chunk longer than declared, no final chunk, both
//!   `Content-Length` and `Transfer-Encoding`);
//! - a slowloris sender, thousands of idle connections, 100 pipelined GETs;
//! - wrong methods (405 JSON) and unknown routes (404 JSON);
//! - bad parameters of `GET /watch` (`since`, `Last-Event-ID`, `prefix` with `key`, bad keys,
//!   `consistency`) and of blocking reads (`wait` without `index`, out-of-range or non-numeric
//!   `wait` and `index`).
//!
//! Every socket has read and write timeouts, and every loop is bounded, so a misbehaving server
//! fails a test rather than hanging it. The timeouts are hang guards, not performance claims.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use serde_json::Value;

use crate::util::{encode, show, Conn, Fixture, Outcome, Resp, Server};

/// The largest value the servers here take, so a small real body is already too large.
const MAX_VALUE: usize = 1000;

/// Keys every test seeds, so "nothing changed" compares something.
const SEEDS: [(&str, &str); 3] = [("seed/a", "alpha"), ("seed/b", "beta"), ("seed/c", "gamma")];

/// Starts a server with `--max-value-bytes 1000` on a fresh data dir, seeds [`SEEDS`], and
/// returns it with the listing taken right after seeding: what "nothing changed" compares with.
fn start() -> (Fixture, Value) {
    let max = MAX_VALUE.to_string();
    let f = Fixture::start(&["--max-value-bytes", &max]);
    for (k, v) in SEEDS {
        assert_eq!(f.put_text(k, v).status, 201);
    }
    let before = listing(&f);
    (f, before)
}

/// A normal request on a fresh connection: must be answered with 200.
fn fresh_ok(s: &Server, path: &str, context: &str) -> Resp {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    match s.exchange(req.as_bytes()) {
        Outcome::Response(r) if r.status == 200 => r,
        other => panic!("after {context}: GET {path} on a fresh connection: {other:?}"),
    }
}

/// Every key with its value and version, read on a fresh connection.
fn listing(s: &Server) -> Value {
    let r = fresh_ok(s, "/kv?values=true&limit=10000", "listing");
    let v: Value = serde_json::from_slice(&r.body).expect("listing is JSON");
    assert_eq!(v["next"], Value::Null, "the listing fits one page");
    v
}

/// The server still serves a fresh connection and no stored data changed since `before`.
fn assert_intact(s: &Server, before: &Value, context: &str) {
    fresh_ok(s, "/health", context);
    assert_eq!(&listing(s), before, "after {context}: stored data changed");
}

/// Like [`assert_intact`], but `key` may have been written (correct HTTP allows it).
fn assert_intact_but(s: &Server, before: &Value, key: &str, context: &str) {
    fresh_ok(s, "/health", context);
    let mut now = listing(s);
    now["items"]
        .as_array_mut()
        .expect("items")
        .retain(|item| item["key"] != key);
    assert_eq!(&now, before, "after {context}: stored data changed");
}

/// `key` is not stored (checked on a fresh connection).
fn assert_absent(s: &Server, key: &str, context: &str) {
    let req = format!("GET /kv/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    match s.exchange(req.as_bytes()) {
        Outcome::Response(r) if r.status == 404 => {}
        other => panic!("after {context}: {key} should be absent, GET gave {other:?}"),
    }
}

/// What a case must get back.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A 4xx (any body) or a closed or reset connection: the HTTP parser may refuse it.
    Refused,
    /// Exactly this status with a JSON `{"error": "..."}` body: the request reaches our routes.
    Json(u16),
}

/// Checks `out` against `expect`; `Err` describes the violation with the bytes sent.
fn check(name: &str, sent: &[u8], expect: Expect, out: &Outcome) -> Result<(), String> {
    let fail = |why: &str| {
        Err(format!(
            "{name}: {why}\n  sent: {}\n  got: {out:?}",
            show(sent)
        ))
    };
    match (expect, out) {
        (_, Outcome::TimedOut(_)) => fail("no answer and no close within the timeout"),
        (_, Outcome::Garbled(_)) => fail("not an HTTP response"),
        (Expect::Refused, Outcome::Closed | Outcome::Reset(_)) => Ok(()),
        (Expect::Json(_), Outcome::Closed | Outcome::Reset(_)) => {
            fail("wanted a JSON error, the connection was closed")
        }
        (Expect::Refused, Outcome::Response(r)) if (400..500).contains(&r.status) => {
            // The parser's own refusals may have an empty body; any body that is there and
            // says it is JSON must be a JSON error.
            let says_json = r.header("content-type").is_some_and(|t| t.contains("json"));
            if says_json && !is_json_error(&r.body) {
                return fail("a JSON content type without a JSON error body");
            }
            Ok(())
        }
        (Expect::Refused, Outcome::Response(_)) => fail("wanted a 4xx or a close"),
        (Expect::Json(want), Outcome::Response(r)) => {
            if r.status != want {
                return fail(&format!("wanted {want}"));
            }
            if !is_json_error(&r.body) {
                return fail("the body is not a JSON error object");
            }
            Ok(())
        }
    }
}

fn is_json_error(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .is_ok_and(|v| v["error"].as_str().is_some_and(|m| !m.trim().is_empty()))
}

/// One request's bytes, what it must get, and a key it must not have written.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
    /// A key the request tries to write, which must stay absent.
    absent: Option<&'static str>,
    /// Half-close our side after sending, so the server sees end-of-stream.
    half_close: bool,
}

impl Case {
    fn then_half_close(mut self) -> Case {
        self.half_close = true;
        self
    }
}

fn case(name: &'static str, bytes: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        expect,
        absent: None,
        half_close: false,
    }
}

fn writing(name: &'static str, key: &'static str, bytes: impl Into<Vec<u8>>, e: Expect) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        expect: e,
        absent: Some(key),
        half_close: false,
    }
}

/// Runs each case on a fresh connection, checks the answer, liveness and stored data, and fails
/// once with every violation; prints what each case got.
fn run_cases(s: &Server, before: &mut Value, cases: Vec<Case>) {
    let mut violations = Vec::new();
    for c in cases {
        let mut conn = s.connect();
        conn.send(&c.bytes);
        if c.half_close {
            conn.finish();
        }
        let out = conn.answer();
        eprintln!("{}: {}", c.name, out.summary());
        if let Err(v) = check(c.name, &c.bytes, c.expect, &out) {
            violations.push(v);
        }
        fresh_ok(s, "/health", c.name);
        let now = listing(s);
        if now != *before {
            let changed: Vec<&Value> = now["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter(|i| !before["items"].as_array().expect("items").contains(i))
                .collect();
            violations.push(format!(
                "{}: stored data changed{}: now {changed:?}\n  sent: {}\n  got: {out:?}",
                c.name,
                c.absent
                    .map_or(String::new(), |k| format!(" (it tried to write {k:?})")),
                show(&c.bytes)
            ));
            // Undo, so the later cases are judged on their own.
            for item in changed {
                let key = item["key"].as_str().expect("key");
                let _ = s.delete(&encode(key));
            }
            *before = listing(s);
        }
    }
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// A complete `PUT /kv/{key}` with a short text body, the request line given whole.
fn put_line(line: &[u8]) -> Vec<u8> {
    let mut v = line.to_vec();
    v.extend_from_slice(b"\r\nHost: 127.0.0.1\r\nContent-Length: 7\r\n\r\nchanged");
    v
}

#[test]
fn malformed_request_lines_are_refused() {
    let (f, mut before) = start();
    let mut long_method = vec![b'P'; 64 * 1024];
    long_method.extend_from_slice(b" /kv/longmethod HTTP/1.1");
    let mut long_line = b"PUT /kv/".to_vec();
    long_line.extend(std::iter::repeat_n(b'a', 100 * 1024));
    long_line.extend_from_slice(b" HTTP/1.1");
    let mut long_query = b"GET /kv?values=true&x=".to_vec();
    long_query.extend(std::iter::repeat_n(b'q', 100 * 1024));
    long_query.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    run_cases(
        &f,
        &mut before,
        vec![
            case(
                "garbage bytes",
                b"\x00\xff\xfe\x16\x03\x01 garbage \x80\x81\r\n\r\n".to_vec(),
                Expect::Refused,
            ),
            case(
                "a TLS ClientHello",
                b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
                Expect::Refused,
            ),
            writing(
                "no HTTP version",
                "nover",
                put_line(b"PUT /kv/nover"),
                Expect::Refused,
            ),
            case(
                "no request target",
                b"GET  HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
                Expect::Refused,
            ),
            writing(
                "HTTP/9.9",
                "v99",
                put_line(b"PUT /kv/v99 HTTP/9.9"),
                Expect::Refused,
            ),
            writing(
                "HTTP/2.0 on an HTTP/1 connection",
                "v20",
                put_line(b"PUT /kv/v20 HTTP/2.0"),
                Expect::Refused,
            ),
            // Methods are case-sensitive: `put` is not PUT. An unknown method is a valid token,
            // so it reaches the routes, which answer 405.
            writing(
                "lower-case method",
                "lower",
                put_line(b"put /kv/lower HTTP/1.1"),
                Expect::Json(405),
            ),
            writing(
                "64 KB method",
                "longmethod",
                put_line(&long_method),
                Expect::Json(405),
            ),
            case(
                "100 KB request line (key)",
                put_line(&long_line),
                Expect::Refused,
            ),
            case("100 KB request line (query)", long_query, Expect::Refused),
        ],
    );
}

#[test]
fn bad_watch_and_blocking_read_parameters_are_refused() {
    let (f, mut before) = start();
    let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let with_header = |target: &str, header: &[u8]| {
        let mut v = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
        v.extend_from_slice(header);
        v.extend_from_slice(b"\r\n\r\n");
        v
    };
    let long_since = format!("/watch?since={}", "9".repeat(1000));
    let long_key = format!("/watch?key={}", "k".repeat(2000));
    run_cases(
        &f,
        &mut before,
        vec![
            case(
                "watch since=abc",
                get("/watch?since=abc"),
                Expect::Json(400),
            ),
            case("watch since=-1", get("/watch?since=-1"), Expect::Json(400)),
            case(
                "watch since=1.x",
                get("/watch?since=1.x"),
                Expect::Json(400),
            ),
            case(
                "watch since=1.2.3",
                get("/watch?since=1.2.3"),
                Expect::Json(400),
            ),
            case("watch since=", get("/watch?since="), Expect::Json(400)),
            case(
                "watch since of 1000 digits",
                get(&long_since),
                Expect::Json(400),
            ),
            case(
                "watch prefix and key",
                get("/watch?prefix=a&key=b"),
                Expect::Json(400),
            ),
            case("watch key= (empty)", get("/watch?key="), Expect::Json(400)),
            case(
                "watch key over the limit",
                get(&long_key),
                Expect::Json(400),
            ),
            case(
                "watch key=a%00b",
                get("/watch?key=a%00b"),
                Expect::Json(400),
            ),
            case(
                "watch prefix=%zz",
                get("/watch?prefix=%zz"),
                Expect::Json(400),
            ),
            case(
                "watch prefix=%E0%A4",
                get("/watch?prefix=%E0%A4"),
                Expect::Json(400),
            ),
            case(
                "watch consistency=bogus",
                get("/watch?consistency=bogus"),
                Expect::Json(400),
            ),
            case(
                "watch Last-Event-ID: x",
                with_header("/watch", b"Last-Event-ID: x"),
                Expect::Json(400),
            ),
            case(
                "watch Last-Event-ID: 1.-1",
                with_header("/watch", b"Last-Event-ID: 1.-1"),
                Expect::Json(400),
            ),
            // `str::parse` takes a leading `+`; an event id or a number in the API does not.
            case(
                "watch Last-Event-ID: +0.0",
                with_header("/watch", b"Last-Event-ID: +0.0"),
                Expect::Json(400),
            ),
            case(
                "watch since=%2B1",
                get("/watch?since=%2B1"),
                Expect::Json(400),
            ),
            case("GET index=%2B1", get("/kv/a?index=%2B1"), Expect::Json(400)),
            case(
                "GET wait=%2B1",
                get("/kv/a?index=1&wait=%2B1"),
                Expect::Json(400),
            ),
            case("GET /kv limit=%2B1", get("/kv?limit=%2B1"), Expect::Json(400)),
            writing(
                "PUT ttl=%2B5",
                "signedttl",
                b"PUT /kv/signedttl?ttl=%2B5 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 7\r\n\r\nchanged".to_vec(),
                Expect::Json(400),
            ),
            // Not visible ASCII: the header may be refused by the parser or by the route.
            case(
                "watch Last-Event-ID with a 0xFF byte",
                with_header("/watch", b"Last-Event-ID: 1\xff"),
                Expect::Refused,
            ),
            case(
                "GET wait without index",
                get("/kv/a?wait=5"),
                Expect::Json(400),
            ),
            case("GET index=abc", get("/kv/a?index=abc"), Expect::Json(400)),
            case("GET index=-1", get("/kv/a?index=-1"), Expect::Json(400)),
            case("GET index=%zz", get("/kv/a?index=%zz"), Expect::Json(400)),
            case(
                "GET wait=-1",
                get("/kv/a?index=1&wait=-1"),
                Expect::Json(400),
            ),
            case(
                "GET wait=1.5",
                get("/kv/a?index=1&wait=1.5"),
                Expect::Json(400),
            ),
            case(
                "GET wait=601",
                get("/kv/a?index=1&wait=601"),
                Expect::Json(400),
            ),
            case(
                "GET wait of 30 digits",
                get("/kv/a?index=1&wait=999999999999999999999999999999"),
                Expect::Json(400),
            ),
            case(
                "GET index of 30 digits",
                get("/kv/a?index=999999999999999999999999999999"),
                Expect::Json(400),
            ),
            case(
                "GET consistency=bogus",
                get("/kv/a?consistency=bogus"),
                Expect::Json(400),
            ),
            case(
                "GET /kv consistency=bogus",
                get("/kv?consistency=bogus"),
                Expect::Json(400),
            ),
        ],
    );
}

#[test]
fn bad_keys_in_the_path_are_refused() {
    let (f, mut before) = start();
    let put = |target: &[u8]| {
        let mut v = b"PUT ".to_vec();
        v.extend_from_slice(target);
        v.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 7\r\n\r\nchanged");
        v
    };
    let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    run_cases(
        &f,
        &mut before,
        vec![
            case("PUT /kv/%zz", put(b"/kv/%zz"), Expect::Json(400)),
            case("PUT /kv/%", put(b"/kv/%"), Expect::Json(400)),
            case("PUT /kv/a%", put(b"/kv/a%"), Expect::Json(400)),
            case("PUT /kv/%4", put(b"/kv/%4"), Expect::Json(400)),
            case(
                "PUT /kv/%E0%A4 (truncated UTF-8)",
                put(b"/kv/%E0%A4"),
                Expect::Json(400),
            ),
            case(
                "PUT /kv/%FF (not UTF-8)",
                put(b"/kv/%FF"),
                Expect::Json(400),
            ),
            case(
                "PUT /kv/%ED%A0%80 (a surrogate)",
                put(b"/kv/%ED%A0%80"),
                Expect::Json(400),
            ),
            case("GET /kv/%zz", get("/kv/%zz"), Expect::Json(400)),
            case("GET /kv/%E0%A4", get("/kv/%E0%A4"), Expect::Json(400)),
            case(
                "DELETE /kv/%zz",
                b"DELETE /kv/%zz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
                Expect::Json(400),
            ),
            case("PUT /kv/a%00b", put(b"/kv/a%00b"), Expect::Json(400)),
            case("PUT /kv/a%0Ab", put(b"/kv/a%0Ab"), Expect::Json(400)),
            case("PUT /kv/a%7Fb", put(b"/kv/a%7Fb"), Expect::Json(400)),
            case("PUT /kv/%00", put(b"/kv/%00"), Expect::Json(400)),
            case("PUT /kv/a%0D%0Ab", put(b"/kv/a%0D%0Ab"), Expect::Json(400)),
            case("GET /kv/a%00b", get("/kv/a%00b"), Expect::Json(400)),
            // Raw control bytes are not allowed in a request target: the parser may refuse them.
            case(
                "PUT raw NUL in the target",
                put(b"/kv/a\x00b"),
                Expect::Refused,
            ),
            case(
                "PUT raw 0x01 in the target",
                put(b"/kv/a\x01b"),
                Expect::Refused,
            ),
            case(
                "PUT raw DEL in the target",
                put(b"/kv/a\x7fb"),
                Expect::Refused,
            ),
            case(
                "PUT raw ESC in the target",
                put(b"/kv/a\x1bb"),
                Expect::Refused,
            ),
            case(
                "PUT raw 0xFF in the target",
                put(b"/kv/a\xffb"),
                Expect::Refused,
            ),
            case(
                "PUT raw space in the target",
                put(b"/kv/a b"),
                Expect::Refused,
            ),
            case("PUT /kv/ (empty key)", put(b"/kv/"), Expect::Json(400)),
        ],
    );
}

#[test]
fn oversized_heads_are_refused() {
    let (f, mut before) = start();
    let big_header = |n: usize| {
        let mut v = b"PUT /kv/bighead HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
        v.extend(std::iter::repeat_n(b'h', n));
        v.extend_from_slice(b"\r\nContent-Length: 7\r\n\r\nchanged");
        v
    };
    let mut many = b"PUT /kv/manyheads HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    for i in 0..500 {
        many.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
    }
    many.extend_from_slice(b"Content-Length: 7\r\n\r\nchanged");
    run_cases(
        &f,
        &mut before,
        vec![
            // Under actix-http's fixed 128 KiB head buffer, so only the server's own limit (if
            // any) can refuse it.
            writing(
                "one 100 KB header",
                "bighead",
                big_header(100 * 1024),
                Expect::Refused,
            ),
            writing(
                "one 1 MB header",
                "bighead",
                big_header(1024 * 1024),
                Expect::Refused,
            ),
            writing("500 headers", "manyheads", many, Expect::Refused),
        ],
    );
}

#[test]
fn oversized_bodies_are_413_and_apply_nothing() {
    let (f, mut before) = start();
    let body = vec![b'b'; MAX_VALUE * 5];
    let mut with_length = format!(
        "PUT /kv/big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    with_length.extend_from_slice(&body);
    let mut chunked =
        b"PUT /kv/bigchunked HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n", MAX_VALUE).as_bytes());
        chunked.extend_from_slice(&body[..MAX_VALUE]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let form_body = format!("value={}", "f".repeat(MAX_VALUE * 4));
    let form = format!(
        "POST /kv/bigform HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form_body}",
        form_body.len()
    );
    let batch_body = format!(
        r#"{{"put": {{"bigbatch": "{}"}}}}"#,
        "x".repeat(MAX_VALUE * 2)
    );
    let batch = format!(
        "POST /kv HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{batch_body}",
        batch_body.len()
    );
    run_cases(
        &f,
        &mut before,
        vec![
            // Only the head is sent: the server must refuse on the declared length alone.
            writing(
                "Content-Length: 10000000000, no body sent",
                "huge",
                b"PUT /kv/huge HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000000\r\n\r\n"
                    .to_vec(),
                Expect::Json(413),
            ),
            writing(
                "Content-Length: u64::MAX, no body sent",
                "huge",
                b"PUT /kv/huge HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 18446744073709551615\r\n\r\n"
                    .to_vec(),
                Expect::Refused,
            ),
            writing(
                "Content-Length: 2^64 (overflows), no body sent",
                "huge",
                b"PUT /kv/huge HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 18446744073709551616\r\n\r\n"
                    .to_vec(),
                Expect::Refused,
            ),
            writing(
                "Content-Length: -1",
                "huge",
                b"PUT /kv/huge HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\nchanged"
                    .to_vec(),
                Expect::Refused,
            ),
            writing(
                "a 5000-byte body over --max-value-bytes 1000",
                "big",
                with_length,
                Expect::Json(413),
            ),
            writing(
                "a 5000-byte chunked body over --max-value-bytes 1000",
                "bigchunked",
                chunked,
                Expect::Json(413),
            ),
            writing(
                "a form value over --max-value-bytes 1000",
                "bigform",
                form,
                Expect::Json(413),
            ),
            writing(
                "a batch value over --max-value-bytes 1000",
                "bigbatch",
                batch,
                Expect::Json(413),
            ),
        ],
    );
}

/// `PUT /kv/{key}` declaring `declared` body bytes.
fn put_head(key: &str, declared: usize) -> Vec<u8> {
    format!("PUT /kv/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n\r\n")
        .into_bytes()
}

#[test]
fn a_lying_content_length_applies_nothing_it_should_not() {
    let (f, before) = start();

    // Short body, then silence: runs beside the other cases. The server must give up on the
    // body (4xx or close) within the guard; the guard is longer than the server's ~5 s client
    // timeouts, so it only catches a connection held forever.
    let silent = {
        let addr = f.addr();
        std::thread::spawn(move || {
            let mut sent = put_head("short-silent", 100);
            sent.extend_from_slice(b"0123456789");
            let mut c = Conn::open(addr, Duration::from_secs(15));
            c.send(&sent);
            let out = c.answer();
            (sent, out)
        })
    };

    // Short body, then half-close.
    let mut sent = put_head("short-closed", 100);
    sent.extend_from_slice(b"0123456789");
    let mut c = f.connect();
    c.send(&sent);
    c.finish();
    let out = c.answer();
    eprintln!("declares 100, sends 10, half-closes: {}", out.summary());
    let mut violations = Vec::new();
    if let Err(v) = check("short body then half-close", &sent, Expect::Refused, &out) {
        violations.push(v);
    }
    assert_absent(&f, "short-closed", "short body then half-close");
    assert_intact(&f, &before, "short body then half-close");

    // Long body: the 45 bytes past the declared 5 are a garbage second request. Storing the
    // first 5 bytes is correct HTTP; the garbage must be refused or the connection closed.
    let mut sent = put_head("over", 5);
    sent.extend_from_slice(b"hello");
    sent.extend_from_slice(b"\x00\x01garbage that is no request line at all\r\n\r\n");
    let mut c = f.connect();
    c.send(&sent);
    let first = c.answer();
    let second = match &first {
        Outcome::Response(_) => Some(c.answer()),
        _ => None,
    };
    eprintln!(
        "declares 5, sends 50: {} then {}",
        first.summary(),
        second.as_ref().map_or("nothing".into(), Outcome::summary)
    );
    match &first {
        Outcome::Response(r)
            if (200..300).contains(&r.status) || (400..500).contains(&r.status) => {}
        Outcome::Closed | Outcome::Reset(_) => {}
        other => violations.push(format!(
            "declares 5, sends 50: first answer {other:?}\n  sent: {}",
            show(&sent)
        )),
    }
    if let Some(second) = &second {
        if let Err(v) = check(
            "declares 5, sends 50 (the excess)",
            &sent,
            Expect::Refused,
            second,
        ) {
            violations.push(v);
        }
    }
    let stored = fresh_ok(&f, "/kv?values=true", "declares 5, sends 50");
    let stored: Value = serde_json::from_slice(&stored.body).expect("JSON");
    if let Some(item) = stored["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["key"] == "over")
    {
        assert_eq!(
            item["value"], "hello",
            "only the declared 5 bytes may be stored"
        );
    }
    assert_intact_but(&f, &before, "over", "declares 5, sends 50");

    let (sent, out) = silent.join().expect("the silent sender's thread");
    eprintln!("declares 100, sends 10, waits: {}", out.summary());
    if let Err(v) = check(
        "short body then silence (15 s guard)",
        &sent,
        Expect::Refused,
        &out,
    ) {
        violations.push(v);
    }
    assert_absent(&f, "short-silent", "short body then silence");
    assert_intact_but(&f, &before, "over", "short body then silence");
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn broken_chunked_bodies_apply_nothing() {
    let (f, mut before) = start();
    let chunked = |key: &str, body: &[u8]| {
        let mut v = format!(
            "PUT /kv/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        v.extend_from_slice(body);
        v
    };
    run_cases(
        &f,
        &mut before,
        vec![
            writing(
                "invalid chunk size zz",
                "ch-size",
                chunked("ch-size", b"zz\r\nchanged\r\n0\r\n\r\n"),
                Expect::Refused,
            ),
            writing(
                "chunk size overflowing u64",
                "ch-overflow",
                chunked("ch-overflow", b"fffffffffffffffffffff\r\nchanged\r\n0\r\n\r\n"),
                Expect::Refused,
            ),
            writing(
                "chunk longer than declared",
                "ch-long",
                chunked("ch-long", b"5\r\nhelloEXTRA\r\n0\r\n\r\n"),
                Expect::Refused,
            ),
            writing(
                "no final chunk, then half-close",
                "ch-open",
                chunked("ch-open", b"5\r\nhello\r\n"),
                Expect::Refused,
            )
            .then_half_close(),
            writing(
                "chunk cut short, then half-close",
                "ch-cut",
                chunked("ch-cut", b"a\r\nhel"),
                Expect::Refused,
            )
            .then_half_close(),
            writing(
                "Content-Length and Transfer-Encoding: chunked",
                "ch-both",
                b"PUT /kv/ch-both HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\
                  Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                    .to_vec(),
                Expect::Refused,
            ),
            writing(
                "Transfer-Encoding: chunked on HTTP/1.0",
                "ch-10",
                b"PUT /kv/ch-10 HTTP/1.0\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\n"
                    .to_vec(),
                Expect::Refused,
            ),
            writing(
                "Transfer-Encoding: gzip, chunked",
                "ch-gzip",
                b"PUT /kv/ch-gzip HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\n"
                    .to_vec(),
                Expect::Refused,
            ),
        ],
    );
}

#[test]
fn a_slowloris_sender_is_cut_off_while_others_are_served() {
    let (f, before) = start();
    // A head that never ends: the loop below stops long before its last byte.
    let mut head = b"PUT /kv/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".to_vec();
    head.extend(std::iter::repeat_n(b's', 200));
    const STEP: Duration = Duration::from_millis(200);
    const BOUND: Duration = Duration::from_secs(15);

    let mut c = Conn::open(f.addr(), BOUND + Duration::from_secs(5));
    let mut reader = c.try_clone();
    let (tx, rx) = mpsc::channel();
    let reader_thread = std::thread::spawn(move || {
        let out = reader.answer();
        let _ = tx.send(());
        out
    });
    let started = Instant::now();
    let mut sent = 0;
    let mut served = 0;
    let mut ended = false;
    for (i, byte) in head.iter().enumerate() {
        if rx.try_recv().is_ok() {
            ended = true;
            break;
        }
        if started.elapsed() > BOUND {
            break;
        }
        c.send(&[*byte]);
        if c.write_error().is_some() {
            ended = true;
            break;
        }
        sent += 1;
        if i % 5 == 0 {
            // Others are served meanwhile.
            fresh_ok(&f, "/health", "a slowloris sender is connected");
            served += 1;
        }
        std::thread::sleep(STEP);
    }
    // Wake the reader if the server never ended the connection.
    if !ended && rx.recv_timeout(Duration::from_secs(1)).is_err() {
        c.shutdown();
    }
    let out = reader_thread.join().expect("the reader thread");
    eprintln!(
        "slowloris: {sent} bytes over {:?}, {served} other requests served, write error {:?}, then {}",
        started.elapsed(),
        c.write_error().map(|e| e.kind()),
        out.summary()
    );
    assert!(
        served > 0,
        "no other request was made while the sender was slow"
    );
    assert!(
        ended,
        "the server still held a slowloris connection after {BOUND:?} ({sent} bytes sent: {})",
        show(&head[..sent])
    );
    match &out {
        Outcome::Response(r) => assert!(
            matches!(r.status, 400 | 408 | 431),
            "slowloris: wanted 408, 400 or a close, got {out:?}"
        ),
        Outcome::Closed | Outcome::Reset(_) => {}
        other => panic!("slowloris: wanted 408, 400 or a close, got {other:?}"),
    }
    assert_absent(&f, "slow", "slowloris");
    assert_intact(&f, &before, "slowloris");
}

/// Raises the soft open-files limit to the hard one; returns the soft limit now in force.
/// Raising the soft limit to the hard one is always permitted and only affects this process and
/// the children it spawns.
fn raise_nofile_limit() -> u64 {
    let lim = getrlimit(Resource::Nofile);
    // `None` is no limit at all.
    let current = lim.current.unwrap_or(u64::MAX);
    let maximum = lim.maximum.unwrap_or(u64::MAX);
    if current < maximum {
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return maximum;
        }
    }
    current
}

#[test]
fn thousands_of_idle_connections_do_not_starve_a_client() {
    // Before the server starts, so it inherits the raised limit too.
    let limit = raise_nofile_limit();
    let (f, before) = start();
    // Each side holds one descriptor per connection; stay well below the limit.
    let n = 2000.min(limit.saturating_sub(200) / 2) as usize;
    assert!(n >= 100, "RLIMIT_NOFILE {limit} is too low for this test");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        assert!(
            Instant::now() < deadline,
            "opening {n} connections took over 30 s ({} open)",
            idle.len()
        );
        idle.push(f.connect());
    }
    // While they are all open (the server may start closing them after its ~5 s head timeout),
    // a normal client is still answered, reads and writes alike.
    for i in 0..5 {
        fresh_ok(&f, "/health", &format!("{n} idle connections, request {i}"));
    }
    let body = b"PUT /kv/while-idle HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\nok";
    match f.exchange(body) {
        Outcome::Response(r) if r.status == 201 => {}
        other => panic!("a PUT while {n} connections idle: {other:?}"),
    }
    eprintln!("{n} idle connections open; a normal client was served");
    drop(idle);
    fresh_ok(&f, "/health", "closing the idle connections");
    assert_intact_but(&f, &before, "while-idle", "idle connections");
}

#[test]
fn a_hundred_pipelined_gets_are_answered_in_order() {
    let (f, _) = start();
    let mut put = serde_json::Map::new();
    for i in 0..100 {
        put.insert(format!("p{i:02}"), Value::String(format!("value {i}")));
    }
    let r = f.batch(&serde_json::json!({ "put": put }));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut req = Vec::new();
    for i in 0..100 {
        // Every seventh key is absent, so statuses vary too.
        let key = if i % 7 == 3 {
            format!("absent{i}")
        } else {
            format!("p{i:02}")
        };
        req.extend_from_slice(
            format!("GET /kv/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
        );
    }
    let mut c = f.connect();
    c.send(&req);
    assert!(
        c.write_error().is_none(),
        "writing 100 GETs: {:?}",
        c.write_error()
    );
    for i in 0..100 {
        let out = c.answer();
        let Outcome::Response(r) = &out else {
            panic!("pipelined response {i}: {out:?}");
        };
        if i % 7 == 3 {
            assert_eq!(r.status, 404, "pipelined response {i}: {out:?}");
            assert!(is_json_error(&r.body), "pipelined response {i}: {out:?}");
        } else {
            assert_eq!(r.status, 200, "pipelined response {i}: {out:?}");
            assert_eq!(
                String::from_utf8_lossy(&r.body),
                format!("value {i}"),
                "pipelined response {i} is out of order"
            );
        }
    }
    assert!(
        c.leftover().is_empty(),
        "bytes after the 100th response: {}",
        show(c.leftover())
    );
}

#[test]
fn wrong_methods_are_405_and_unknown_routes_404_as_json() {
    let (f, mut before) = start();
    let req = |method: &str, path: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: 9\r\n\r\n\"changed\""
        )
        .into_bytes()
    };
    run_cases(
        &f,
        &mut before,
        vec![
            writing("PATCH /kv/x", "x", req("PATCH", "/kv/x"), Expect::Json(405)),
            writing(
                "PATCH /kv/seed/a",
                "x",
                req("PATCH", "/kv/seed/a"),
                Expect::Json(405),
            ),
            case("PUT /health", req("PUT", "/health"), Expect::Json(405)),
            case(
                "DELETE /health",
                req("DELETE", "/health"),
                Expect::Json(405),
            ),
            case("POST /metrics", req("POST", "/metrics"), Expect::Json(405)),
            case(
                "DELETE /snapshot",
                req("DELETE", "/snapshot"),
                Expect::Json(405),
            ),
            case("PUT /kv", req("PUT", "/kv"), Expect::Json(405)),
            case("DELETE /kv", req("DELETE", "/kv"), Expect::Json(405)),
            case("TRACE /kv/x", req("TRACE", "/kv/x"), Expect::Json(405)),
            case("GET /", req("GET", "/"), Expect::Json(404)),
            case("GET /nope", req("GET", "/nope"), Expect::Json(404)),
            case("PUT /kvx", req("PUT", "/kvx"), Expect::Json(404)),
            case("PUT /KV/x", req("PUT", "/KV/x"), Expect::Json(404)),
            case(
                "DELETE /kv2/seed/a",
                req("DELETE", "/kv2/seed/a"),
                Expect::Json(404),
            ),
            case("PUT /../kv/x", req("PUT", "/../kv/x"), Expect::Json(404)),
            case("PUT *", req("PUT", "*"), Expect::Refused),
        ],
    );
}
