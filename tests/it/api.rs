//! The HTTP API against the real binary: every route but `/snapshot` (see `recovery`), every
//! status the contract names, key and query decoding, size limits, conditional requests,
//! batches, listing, `/health`, `/metrics`, and the concurrency promises (compare-and-set,
//! atomic batches, read-your-writes).
//!
//! Each test starts its own server on a fresh data dir, so figures such as `seq` are exact.
//! Every rejected write is followed by a check that the stored state (seq, keys, values and
//! versions) did not change. Requests whose exact bytes matter (bad percent-encoding, malformed
//! HTTP, chunked bodies) go through [`Server::raw`], the bare TCP client of `util`, because a URL library would
//! normalise them before they reach the server. Table-driven tests collect every violation
//! before failing, so one run reports them all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;

use serde_json::{json, Value};

use crate::util::{agent, encode, Fixture, Outcome, Resp, Server};

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// What a rejected write must leave alone: the seq and every key with its value and version.
#[derive(Debug, PartialEq)]
struct State {
    seq: u64,
    items: Value,
}

fn state(s: &Server) -> State {
    let r = s.get("/kv?values=true&limit=10000");
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.json();
    assert_eq!(page["next"], Value::Null, "state() expects a single page");
    State {
        seq: metric(s, "twinkv_seq").expect("twinkv_seq is exported") as u64,
        items: page["items"].clone(),
    }
}

/// The value of one series (`name` or `name{labels}`) in `/metrics`, if present.
fn metric(s: &Server, series: &str) -> Option<f64> {
    let r = s.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| {
                value
                    .parse()
                    .unwrap_or_else(|e| panic!("{series}: {value:?}: {e}"))
            })
        })
}

/// The keys and `next` of one listing page.
fn list(s: &Server, query: &str) -> (Vec<String>, Value) {
    let r = s.get(&format!("/kv?{query}"));
    assert_eq!(r.status, 200, "GET /kv?{query}: {}", r.text());
    assert_eq!(r.header("content-type"), Some(JSON));
    let page = r.json();
    let keys = page["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys array in {page}"))
        .iter()
        .map(|k| k.as_str().expect("string key").to_string())
        .collect();
    (keys, page["next"].clone())
}

fn put_with(s: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    s.request("PUT", path, headers, Some(body))
}

fn get_with(s: &Server, path: &str, headers: &[(&str, &str)]) -> Resp {
    s.request("GET", path, headers, None)
}

fn form(s: &Server, key: &str, content_type: Option<&str>, body: &str) -> Resp {
    let headers: Vec<(&str, &str)> = content_type
        .map(|t| ("Content-Type", t))
        .into_iter()
        .collect();
    s.request(
        "POST",
        &format!("/kv/{key}"),
        &headers,
        Some(body.as_bytes()),
    )
}

/// Whether `r` is a JSON error with `status`; the reason otherwise.
fn check_error(r: &Resp, status: u16) -> Result<(), String> {
    if r.status != status {
        return Err(format!(
            "status {} (wanted {status}), body {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    match serde_json::from_slice::<Value>(&r.body) {
        Ok(v) if v["error"].is_string() => Ok(()),
        _ => Err(format!(
            "status {status} but the body is not {{\"error\": \"...\"}}: {:?}",
            String::from_utf8_lossy(&r.body)
        )),
    }
}

/// Fails listing every violation, if any.
fn assert_none(violations: &[String]) {
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A well-formed request with `Connection: close` and, for a body, its `Content-Length`.
fn raw_request(
    s: &Server,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.raw(&bytes)
}

/// Percent-encodes every byte, so no client or server may read a character as syntax.
fn encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// A GET on a new agent, hence a new connection (and maybe another worker).
fn fresh_get(s: &Server, path: &str) -> (u16, String) {
    match agent().get(&s.url(path)).call() {
        Ok(r) => (r.status(), r.into_string().expect("body")),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// GET, HEAD, PUT on /kv/{key}

#[test]
fn put_text_creates_then_replaces_and_get_returns_the_raw_text() {
    let s = Fixture::start(&[]);
    let text = "héllo \"wörld\"\n\ttab \\ backslash";
    let r = s.put_text("greeting", text);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!({"key": "greeting", "version": 1}));
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.header("content-type"), Some(JSON));

    let g = s.get("/kv/greeting");
    assert_eq!(g.status, 200);
    assert_eq!(g.header("content-type"), Some(TEXT));
    assert_eq!(g.header("etag"), Some("\"1\""));
    assert_eq!(g.text(), text);

    let r = s.put_text("greeting", "bye");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"key": "greeting", "version": 2}));
    assert_eq!(r.header("etag"), Some("\"2\""));
    let g = s.get("/kv/greeting");
    assert_eq!((g.status, g.text()), (200, "bye".to_string()));
    assert_eq!(g.header("etag"), Some("\"2\""));

    // With `Accept: application/json` the string comes back quoted.
    let g = get_with(&s, "/kv/greeting", &[("Accept", JSON)]);
    assert_eq!(g.status, 200);
    assert_eq!(g.header("content-type"), Some(JSON));
    assert_eq!(g.header("etag"), Some("\"2\""));
    assert_eq!(g.text(), "\"bye\"");
    let g = get_with(
        &s,
        "/kv/greeting",
        &[("Accept", "text/html, application/json;q=0.9")],
    );
    assert_eq!(g.json(), json!("bye"), "application/json among others");

    // Any other content type is text too, even if it looks like JSON.
    let r = put_with(
        &s,
        "/kv/braces",
        &[("Content-Type", "text/plain")],
        br#"{"a":1}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let g = s.get("/kv/braces");
    assert_eq!(g.header("content-type"), Some(TEXT));
    assert_eq!(g.text(), r#"{"a":1}"#);
    assert_eq!(
        get_with(&s, "/kv/braces", &[("Accept", JSON)]).json(),
        json!(r#"{"a":1}"#)
    );
    let r = put_with(
        &s,
        "/kv/octets",
        &[("Content-Type", "application/octet-stream")],
        b"[1]",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        get_with(&s, "/kv/octets", &[("Accept", JSON)]).json(),
        json!("[1]")
    );

    // An empty text body is the empty string.
    let r = s.put_text("empty", "");
    assert_eq!(r.status, 201, "{}", r.text());
    let g = s.get("/kv/empty");
    assert_eq!(g.status, 200);
    assert_eq!(g.header("content-type"), Some(TEXT));
    assert!(g.body.is_empty(), "{:?}", g.text());
    assert_eq!(
        get_with(&s, "/kv/empty", &[("Accept", JSON)]).text(),
        "\"\""
    );
}

#[test]
fn put_json_stores_any_json_value_and_get_serves_non_strings_as_json() {
    let s = Fixture::start(&[]);
    let values = [
        json!({"a": [1, 2.5, null, true], "b": {"c": "d"}, "": "empty name"}),
        json!(42),
        json!(-1.5e300),
        json!(0.1),
        json!(true),
        json!(false),
        json!(null),
        json!([]),
        json!({}),
        json!([1, "two", [3]]),
    ];
    for (i, v) in values.iter().enumerate() {
        let key = format!("v{i}");
        let r = s.put_json(&key, v);
        assert_eq!(r.status, 201, "{v}: {}", r.text());
        let version = r.json()["version"].as_u64().expect("version");
        let g = s.get(&format!("/kv/{key}"));
        assert_eq!(g.status, 200, "{v}");
        assert_eq!(g.header("content-type"), Some(JSON), "{v}");
        assert_eq!(g.header("etag"), Some(format!("\"{version}\"").as_str()));
        assert_eq!(&g.json(), v);
    }

    // A JSON string is a string: served as raw text unless JSON is asked for.
    let r = put_with(
        &s,
        "/kv/s",
        &[("Content-Type", JSON)],
        br#""line\nbreak \"q\" \u00e9 \ud83d\ude00""#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let g = s.get("/kv/s");
    assert_eq!(g.header("content-type"), Some(TEXT));
    assert_eq!(g.text(), "line\nbreak \"q\" é 😀");
    assert_eq!(
        get_with(&s, "/kv/s", &[("Accept", JSON)]).json(),
        json!("line\nbreak \"q\" é 😀")
    );

    // Media types are case-insensitive and may carry parameters.
    for ct in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/json;charset=UTF-8",
    ] {
        let r = put_with(&s, "/kv/typed", &[("Content-Type", ct)], b"[7]");
        assert!(matches!(r.status, 200 | 201), "{ct}: {}", r.text());
        let g = s.get("/kv/typed");
        assert_eq!(g.header("content-type"), Some(JSON), "{ct}");
        assert_eq!(g.json(), json!([7]), "{ct}");
    }
}

#[test]
fn put_json_refuses_what_is_not_json_or_does_not_fit_and_changes_nothing() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_json("k", &json!({"orig": 1})).status, 201);
    let before = state(&s);
    let bodies: &[&[u8]] = &[
        b"",
        b"{",
        b"{\"a\":1} trailing",
        b"{\"a\":1}{}",
        b"'single'",
        b"NaN",
        b"Infinity",
        b"undefined",
        b"{a: 1}",
        b"[1,]",
        b"1e999999",
        b"-1e999999",
        b"1e309",
        b"[1e999999]",
        b"{\"n\": 1e400}",
        b"\"\\ud800\"",
        b"\"\\udc00\"",
        b"\"a\\ud800b\"",
        b"[\"\\ud800\"]",
        b"{\"\\ud800\": 1}",
        b"\"\\ud800\\u0041\"",
        b"\"\xff\"",
        b"\"\xc3\"",
        b"\"raw\ncontrol\"",
    ];
    let mut violations = Vec::new();
    for body in bodies {
        for path in ["/kv/k", "/kv/new"] {
            let r = put_with(&s, path, &[("Content-Type", JSON)], body);
            if let Err(e) = check_error(&r, 400) {
                violations.push(format!("PUT {path} JSON {:?}: {e}", lossy(body)));
            }
        }
    }
    assert_none(&violations);
    assert_eq!(state(&s), before, "a refused PUT changed the store");
    assert_eq!(s.get("/kv/k").json(), json!({"orig": 1}));
    assert_eq!(s.get("/kv/new").status, 404);

    // The largest finite doubles fit.
    let r = put_with(
        &s,
        "/kv/big",
        &[("Content-Type", JSON)],
        b"1.7976931348623157e308",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s.get("/kv/big").json(), json!(f64::MAX));
}

#[test]
fn put_text_refuses_invalid_utf8_and_changes_nothing() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("k", "orig").status, 201);
    let before = state(&s);
    let mut violations = Vec::new();
    for body in [
        &b"\xff"[..],
        b"ab\xc3",
        b"\xed\xa0\x80",
        b"ok\x80ok",
        b"\xc0\xaf",
    ] {
        for ct in [None, Some("text/plain"), Some("text/plain; charset=utf-8")] {
            for path in ["/kv/k", "/kv/new"] {
                let headers: Vec<(&str, &str)> =
                    ct.map(|t| ("Content-Type", t)).into_iter().collect();
                let r = put_with(&s, path, &headers, body);
                if let Err(e) = check_error(&r, 400) {
                    violations.push(format!("PUT {path} ({ct:?}) {body:?}: {e}"));
                }
            }
        }
    }
    assert_none(&violations);
    assert_eq!(state(&s), before);
    assert_eq!(s.get("/kv/k").text(), "orig");
}

#[test]
fn absent_keys_are_404() {
    let s = Fixture::start(&[]);
    s.get("/kv/nope").assert_error(404);
    let h = s.request("HEAD", "/kv/nope", &[], None);
    assert_eq!(h.status, 404);
    assert!(h.body.is_empty());
    s.delete("nope").assert_error(404);
    // A deleted key is absent again.
    assert_eq!(s.put_text("k", "v").status, 201);
    assert_eq!(s.delete("k").status, 204);
    s.get("/kv/k").assert_error(404);
}

#[test]
fn head_has_the_headers_of_get_and_no_body() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("t", "some text").status, 201);
    assert_eq!(s.put_json("j", &json!({"a": 1})).status, 201);
    for (key, ct, etag) in [("t", TEXT, "\"1\""), ("j", JSON, "\"2\"")] {
        let g = s.get(&format!("/kv/{key}"));
        let h = s.request("HEAD", &format!("/kv/{key}"), &[], None);
        assert_eq!(h.status, 200, "{key}");
        assert_eq!(h.header("etag"), Some(etag), "{key}");
        assert_eq!(h.header("etag"), g.header("etag"), "{key}");
        assert_eq!(h.header("content-type"), Some(ct), "{key}");
        assert!(h.body.is_empty(), "{key}: HEAD sent a body");
        if let Some(len) = h.header("content-length") {
            assert_eq!(len, g.body.len().to_string(), "{key}: Content-Length");
        }
    }
    // Read on the wire: a HEAD answer carries no body bytes at all.
    let mut c = s.connect();
    c.send(b"HEAD /kv/t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let r = match c.answer_head() {
        Outcome::Response(r) => r,
        other => panic!("HEAD /kv/t: {other:?}"),
    };
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("\"1\""));
    let rest = c
        .read_to_close()
        .expect("the server closes a Connection: close exchange");
    assert!(rest.is_empty(), "HEAD sent body bytes: {r:?} then {rest:?}");
    let h = s.request("HEAD", "/kv/t", &[("If-None-Match", "\"1\"")], None);
    assert_eq!(h.status, 304);
}

#[test]
fn if_none_match_on_get_gives_304_for_the_current_version() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("k", "v1").status, 201);
    assert_eq!(s.put_text("k", "v2").status, 200);
    let not_modified = |tag: &str| {
        let r = get_with(&s, "/kv/k", &[("If-None-Match", tag)]);
        match r.status {
            304 => {
                assert!(r.body.is_empty(), "{tag}: 304 with a body");
                assert_eq!(r.header("etag"), Some("\"2\""), "{tag}");
                true
            }
            200 => {
                assert_eq!(r.text(), "v2", "{tag}");
                assert_eq!(r.header("etag"), Some("\"2\""), "{tag}");
                false
            }
            other => panic!("If-None-Match {tag}: status {other}: {}", r.text()),
        }
    };
    assert!(not_modified("\"2\""));
    assert!(
        not_modified("W/\"2\""),
        "If-None-Match uses weak comparison"
    );
    assert!(not_modified("\"7\", \"2\""));
    assert!(not_modified("*"));
    assert!(!not_modified("\"1\""), "a stale version is modified");
    assert!(!not_modified("\"99\""));
    assert!(!not_modified("\"abc\""));
    // An absent key is still 404.
    get_with(&s, "/kv/absent", &[("If-None-Match", "\"2\"")]).assert_error(404);
}

#[test]
fn put_honours_if_match_and_if_none_match() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("k", "v1").status, 201);
    let before = state(&s);
    let mut violations = Vec::new();
    for (key, header, tag) in [
        ("k", "If-Match", "\"2\""),
        ("k", "If-Match", "\"0\""),
        ("k", "If-Match", "W/\"1\""),
        ("k", "If-None-Match", "*"),
        ("k", "If-None-Match", "\"1\""),
        ("absent", "If-Match", "\"1\""),
        ("absent", "If-Match", "*"),
    ] {
        let r = put_with(&s, &format!("/kv/{key}"), &[(header, tag)], b"changed");
        if let Err(e) = check_error(&r, 412) {
            violations.push(format!("PUT /kv/{key} {header}: {tag}: {e}"));
        }
    }
    assert_none(&violations);
    assert_eq!(state(&s), before, "a failed precondition changed the store");

    let r = put_with(&s, "/kv/k", &[("If-Match", "\"1\"")], b"v2");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"key": "k", "version": 2}));
    let r = put_with(&s, "/kv/k", &[("If-Match", "\"9\", \"2\"")], b"v3");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = put_with(&s, "/kv/k", &[("If-Match", "*")], b"v4");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = put_with(&s, "/kv/k", &[("If-None-Match", "\"1\"")], b"v5");
    assert_eq!(
        r.status,
        200,
        "a stale If-None-Match tag holds: {}",
        r.text()
    );
    assert_eq!(r.header("etag"), Some("\"5\""));
    let r = put_with(&s, "/kv/fresh", &[("If-None-Match", "*")], b"new");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s.get("/kv/k").text(), "v5");
    assert_eq!(s.get("/kv/fresh").text(), "new");
    // JSON bodies too.
    let r = put_with(
        &s,
        "/kv/fresh",
        &[("Content-Type", JSON), ("If-None-Match", "*")],
        b"1",
    );
    r.assert_error(412);
    assert_eq!(s.get("/kv/fresh").text(), "new");
}

#[test]
fn delete_removes_a_key_and_honours_if_match() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("k", "v").status, 201);
    assert_eq!(s.put_text("other", "o").status, 201);
    let before = state(&s);
    let mut violations = Vec::new();
    for (key, tag) in [
        ("k", "\"2\""),
        ("k", "\"3\""),
        ("k", "W/\"1\""),
        ("absent", "\"1\""),
        ("absent", "\"2\""),
        ("absent", "*"),
    ] {
        let r = s.request("DELETE", &format!("/kv/{key}"), &[("If-Match", tag)], None);
        if let Err(e) = check_error(&r, 412) {
            violations.push(format!("DELETE /kv/{key} If-Match: {tag}: {e}"));
        }
    }
    assert_none(&violations);
    assert_eq!(state(&s), before);

    let r = s.request("DELETE", "/kv/k", &[("If-Match", "\"1\"")], None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    s.get("/kv/k").assert_error(404);
    s.delete("k").assert_error(404);
    // The delete spent seq 3; the next write gets 4.
    assert_eq!(metric(&s, "twinkv_seq"), Some(3.0));
    assert_eq!(s.put_text("k", "again").json()["version"], 4);
    assert_eq!(s.delete("other").status, 204);
    assert_eq!(s.get("/kv/k").text(), "again");
    assert_eq!(metric(&s, "twinkv_keys"), Some(1.0));
}

// ---------------------------------------------------------------------------------------------
// POST /kv/{key} with a form

#[test]
fn post_form_stores_the_value_field_as_a_string() {
    let s = Fixture::start(&[]);
    let form_type = Some("application/x-www-form-urlencoded");
    let r = form(&s, "f", form_type, "other=1&value=a+b%2Bc%26d%3De%C3%A9&x=");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!({"key": "f", "version": 1}));
    assert_eq!(r.header("etag"), Some("\"1\""));
    let g = s.get("/kv/f");
    assert_eq!(g.header("content-type"), Some(TEXT));
    assert_eq!(g.text(), "a b+c&d=eé");

    // Replacing answers 200; a value that looks like JSON stays a string.
    let r = form(
        &s,
        "f",
        Some("application/x-www-form-urlencoded; charset=utf-8"),
        "value=%7B%22a%22%3A1%7D",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"key": "f", "version": 2}));
    assert_eq!(
        get_with(&s, "/kv/f", &[("Accept", JSON)]).json(),
        json!(r#"{"a":1}"#)
    );

    // An empty value is the empty string.
    let r = form(&s, "e", form_type, "value=");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s.get("/kv/e").text(), "");

    // Preconditions as for PUT.
    let r = s.request(
        "POST",
        "/kv/f",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("If-None-Match", "*"),
        ],
        Some(b"value=x"),
    );
    r.assert_error(412);
    let r = s.request(
        "POST",
        "/kv/f",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("If-Match", "\"2\""),
        ],
        Some(b"value=y"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.get("/kv/f").text(), "y");
}

#[test]
fn post_form_refuses_bad_forms_and_other_content_types() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("f", "orig").status, 201);
    let before = state(&s);
    let form_type = Some("application/x-www-form-urlencoded");
    let mut violations = Vec::new();
    let cases: &[(Option<&str>, &str, u16)] = &[
        (form_type, "", 400),
        (form_type, "other=1", 400),
        (form_type, "values=1", 400),
        (form_type, "Value=1", 400),
        (form_type, "value=%zz", 400),
        (form_type, "value=%4", 400),
        (form_type, "value=%FF", 400),
        (form_type, "value=%C3", 400),
        (form_type, "v%zz=1&value=1", 400),
        (Some(JSON), "value=1", 415),
        (Some(JSON), r#"{"value": "1"}"#, 415),
        (Some("text/plain"), "value=1", 415),
        (Some("multipart/form-data; boundary=x"), "value=1", 415),
        (None, "value=1", 415),
    ];
    for (ct, body, status) in cases {
        for key in ["f", "new"] {
            let r = form(&s, key, *ct, body);
            if let Err(e) = check_error(&r, *status) {
                violations.push(format!("POST /kv/{key} ({ct:?}) {body:?}: {e}"));
            }
        }
    }
    // Invalid UTF-8 in the form body itself.
    let r = s.request(
        "POST",
        "/kv/f",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"value=\xff"),
    );
    if let Err(e) = check_error(&r, 400) {
        violations.push(format!("POST /kv/f value=\\xff: {e}"));
    }
    assert_none(&violations);
    assert_eq!(state(&s), before);
    assert_eq!(s.get("/kv/f").text(), "orig");
}

// ---------------------------------------------------------------------------------------------
// Keys

#[test]
fn keys_may_hold_slashes_spaces_and_any_unicode() {
    let s = Fixture::start(&[]);
    // `/kv/a/b` and `/kv/a%2Fb` name the same key.
    let r = s.put_text("a/b", "one");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!({"key": "a/b", "version": 1}));
    let g = s.get("/kv/a%2Fb");
    assert_eq!((g.status, g.text()), (200, "one".to_string()));
    assert_eq!(g.header("etag"), Some("\"1\""));
    let r = s.put_text("a%2fb", "two");
    assert_eq!(r.status, 200, "the same key, replaced: {}", r.text());
    assert_eq!(r.json()["key"], "a/b");
    assert_eq!(s.get("/kv/a/b").text(), "two");
    assert_eq!(s.get("/kv/a%2Fb").text(), "two");

    let cases = [
        ("a%20b", "a b"),
        ("a+b", "a+b"),
        ("a%2Bb", "a+b"),
        ("%C3%A9", "é"),
        ("%E6%97%A5%E6%9C%AC", "日本"),
        ("%F0%9F%98%80", "😀"),
        ("q%3Fx%3Dy%26z%23f", "q?x=y&z#f"),
        ("%25", "%"),
        ("%2E%2E", ".."),
        ("x/", "x/"),
        ("/lead", "/lead"),
        ("deep/er/path", "deep/er/path"),
        ("%22quoted%22", "\"quoted\""),
        ("a%252Fb", "a%2Fb"),
    ];
    for (path, key) in cases {
        let r = raw_request(&s, "PUT", &format!("/kv/{path}"), &[], key.as_bytes());
        assert!(
            matches!(r.status, 200 | 201),
            "PUT /kv/{path}: {} {}",
            r.status,
            lossy(&r.body)
        );
        let reply: Value = serde_json::from_slice(&r.body).expect("JSON reply");
        assert_eq!(reply["key"], key, "PUT /kv/{path}");
        // The same key spelled another way: every byte escaped.
        let g = raw_request(&s, "GET", &format!("/kv/{}", encode_all(key)), &[], b"");
        assert_eq!(g.status, 200, "GET {key:?}");
        assert_eq!(lossy(&g.body), key, "GET {key:?}");
    }
    // A query string is not part of the key.
    let r = raw_request(&s, "PUT", "/kv/plain?x=1&y", &[], b"p");
    assert_eq!(r.status, 201, "{}", lossy(&r.body));
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).expect("JSON")["key"],
        "plain"
    );
    assert_eq!(s.get("/kv/plain?z=2").text(), "p");
    // Raw UTF-8 (unencoded) and encoded spellings agree too.
    let g = s.get("/kv/日本");
    assert_eq!(g.text(), "日本");

    let mut expected: Vec<&str> = cases.iter().map(|(_, k)| *k).collect();
    expected.extend(["a/b", "plain"]);
    expected.sort();
    expected.dedup();
    assert_eq!(list(&s, "").0, expected);
}

#[test]
fn malformed_keys_are_400_and_change_nothing() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("k", "orig").status, 201);
    let before = state(&s);
    let paths = [
        "/kv/",
        "/kv/%zz",
        "/kv/%4",
        "/kv/%",
        "/kv/a%",
        "/kv/a%g0",
        "/kv/%FF",
        "/kv/%C3",
        "/kv/%C3%28",
        "/kv/%ED%A0%80",
        "/kv/%C0%AF",
        "/kv/%00",
        "/kv/a%00b",
        "/kv/%0A",
        "/kv/%1F",
        "/kv/%7F",
    ];
    let mut violations = Vec::new();
    for path in paths {
        for method in ["GET", "PUT", "DELETE"] {
            let r = raw_request(&s, method, path, &[], b"x");
            if let Err(e) = check_error(&r, 400) {
                violations.push(format!("{method} {path}: {e}"));
            }
        }
        let r = raw_request(
            &s,
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"value=x",
        );
        if let Err(e) = check_error(&r, 400) {
            violations.push(format!("POST {path}: {e}"));
        }
        let r = raw_request(&s, "HEAD", path, &[], b"");
        if r.status != 400 {
            violations.push(format!("HEAD {path}: status {}", r.status));
        }
    }
    assert_none(&violations);
    assert_eq!(state(&s), before);
}

#[test]
fn keys_longer_than_max_key_bytes_are_refused() {
    let s = Fixture::start(&["--max-key-bytes", "16"]);
    let at_limit = [
        "a".repeat(16),
        "é".repeat(8),
        format!("{}/{}", "x".repeat(7), "y".repeat(8)),
    ];
    for key in &at_limit {
        let r = s.put_text(&encode(key), "ok");
        assert_eq!(r.status, 201, "{key:?} ({} bytes): {}", key.len(), r.text());
        assert_eq!(s.get(&format!("/kv/{}", encode(key))).text(), "ok");
    }
    let before = state(&s);
    let mut violations = Vec::new();
    let over = [
        "a".repeat(17),
        format!("{}a", "é".repeat(8)),
        "日".repeat(6),
        "b".repeat(2000),
    ];
    for key in &over {
        let path = format!("/kv/{}", encode(key));
        for method in ["GET", "PUT", "DELETE", "HEAD"] {
            let body: Option<&[u8]> = (method == "PUT").then_some(b"x");
            let r = s.request(method, &path, &[], body);
            let ok = if method == "HEAD" {
                matches!(r.status, 400 | 414)
            } else {
                check_error(&r, 400).is_ok() || check_error(&r, 414).is_ok()
            };
            if !ok {
                violations.push(format!(
                    "{method} {key:?} ({} bytes): status {} body {:?}",
                    key.len(),
                    r.status,
                    lossy(&r.body)
                ));
            }
        }
        let r = form(
            &s,
            &encode(key),
            Some("application/x-www-form-urlencoded"),
            "value=x",
        );
        if check_error(&r, 400).is_err() && check_error(&r, 414).is_err() {
            violations.push(format!("POST {key:?}: status {}", r.status));
        }
        // In a batch body the key is no URI: 400.
        let r = s.batch(&json!({"put": {key.as_str(): 1, "fine": 2}}));
        if let Err(e) = check_error(&r, 400) {
            violations.push(format!("batch put {key:?}: {e}"));
        }
        let r = s.batch(&json!({"delete": [key]}));
        if let Err(e) = check_error(&r, 400) {
            violations.push(format!("batch delete {key:?}: {e}"));
        }
    }
    assert_none(&violations);
    assert_eq!(state(&s), before);
}

// ---------------------------------------------------------------------------------------------
// Listing

/// Puts `keys` (each its own value) in one batch.
fn put_keys(s: &Server, keys: &[&str]) {
    let put: serde_json::Map<String, Value> =
        keys.iter().map(|k| (k.to_string(), json!(k))).collect();
    let r = s.batch(&json!({ "put": put }));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn listing_is_in_byte_order_with_prefix_and_after() {
    let s = Fixture::start(&[]);
    assert_eq!(list(&s, ""), (vec![], Value::Null), "an empty store");
    let keys = [
        "a", "a b", "a/b", "a+b", "ab", "B", "b", "é", "日本", "z", "a😀", "a\u{7ff}", "~",
    ];
    put_keys(&s, &keys);
    let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    // `str` orders by bytes (UTF-8 preserves code point order).
    sorted.sort();
    let (all, next) = list(&s, "");
    assert_eq!(all, sorted);
    assert_eq!(next, Value::Null);

    let want = |f: &dyn Fn(&str) -> bool| -> Vec<String> {
        sorted.iter().filter(|k| f(k)).cloned().collect()
    };
    assert_eq!(list(&s, "prefix=a").0, want(&|k| k.starts_with('a')));
    assert_eq!(list(&s, "prefix=a+").0, ["a b"], "`+` is a space");
    assert_eq!(list(&s, "prefix=a%20").0, ["a b"]);
    assert_eq!(list(&s, "prefix=a%2B").0, ["a+b"]);
    assert_eq!(list(&s, "prefix=a%2F").0, ["a/b"]);
    assert_eq!(list(&s, "prefix=a/").0, ["a/b"]);
    assert_eq!(list(&s, "prefix=%C3%A9").0, ["é"]);
    assert_eq!(list(&s, "prefix=%E6%97%A5").0, ["日本"]);
    assert_eq!(list(&s, "prefix=nothing").0, Vec::<String>::new());
    assert_eq!(list(&s, "prefix=").0, sorted);
    assert_eq!(list(&s, "after=a").0, want(&|k| k > "a"));
    assert_eq!(list(&s, "after=ab").0, want(&|k| k > "ab"));
    assert_eq!(
        list(&s, "prefix=a&after=ab").0,
        want(&|k| k.starts_with('a') && k > "ab")
    );
    assert_eq!(list(&s, "after=a+b").0, want(&|k| k > "a b"));
    assert_eq!(list(&s, "after=%E6%97%A5").0, want(&|k| k > "日"));
    assert_eq!(
        list(&s, "prefix=b&after=a").0,
        ["b"],
        "after before the prefix"
    );
    assert_eq!(list(&s, "prefix=a&after=b").0, Vec::<String>::new());
    assert_eq!(list(&s, "after=~").0, want(&|k| k > "~"));
    // Unknown parameters are ignored; order does not matter.
    assert_eq!(
        list(&s, "limit=3&prefix=a&x=1").0,
        want(&|k| k.starts_with('a'))[..3]
    );
}

#[test]
fn listing_pages_with_limit_and_next() {
    let s = Fixture::start(&[]);
    let keys: Vec<String> = (0..7).map(|i| format!("p/{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    put_keys(&s, &refs);
    put_keys(&s, &["o", "q"]);

    // Walk pages of 3: next is the last key returned while more remain, then null.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    for _ in 0..10 {
        let query = match &after {
            Some(a) => format!("prefix=p/&limit=3&after={}", encode(a)),
            None => "prefix=p/&limit=3".to_string(),
        };
        let (page, next) = list(&s, &query);
        pages += 1;
        seen.extend(page.clone());
        if seen.len() < keys.len() {
            assert_eq!(page.len(), 3, "{query}");
            assert_eq!(next, json!(page.last().unwrap()), "{query}");
            after = Some(page.last().unwrap().clone());
        } else {
            assert_eq!(next, Value::Null, "{query}: nothing remains");
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, keys);

    // A page that ends exactly at the last match has no next.
    let (page, next) = list(&s, "prefix=p/&limit=7");
    assert_eq!(page, keys);
    assert_eq!(next, Value::Null);
    let (page, next) = list(&s, "prefix=p/&limit=6");
    assert_eq!(page.len(), 6);
    assert_eq!(next, json!("p/5"));
    let (page, next) = list(&s, "prefix=p/&after=p/5&limit=1");
    assert_eq!(page, ["p/6"]);
    assert_eq!(next, Value::Null);
    let (page, next) = list(&s, "limit=1");
    assert_eq!(page, ["o"]);
    assert_eq!(next, json!("o"));
    let (page, next) = list(&s, "limit=10000");
    assert_eq!(page.len(), 9);
    assert_eq!(next, Value::Null);
}

#[test]
fn listing_limit_defaults_to_1000() {
    let s = Fixture::start(&[]);
    let keys: Vec<String> = (0..1001).map(|i| format!("k{i:04}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    put_keys(&s, &refs);
    let (page, next) = list(&s, "");
    assert_eq!(page.len(), 1000);
    assert_eq!(page[..], keys[..1000]);
    assert_eq!(next, json!("k0999"));
    let (page, next) = list(&s, "after=k0999");
    assert_eq!(page, ["k1000"]);
    assert_eq!(next, Value::Null);
    let r = s.get("/kv?values=true");
    let body = r.json();
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1000));
    assert_eq!(body["next"], "k0999");
}

#[test]
fn listing_refuses_bad_parameters() {
    let s = Fixture::start(&[]);
    put_keys(&s, &["a", "b"]);
    let mut violations = Vec::new();
    for query in [
        "limit=0",
        "limit=10001",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "limit=",
        "limit=99999999999999999999999",
        "limit=%zz",
        "prefix=%zz",
        "prefix=%4",
        "prefix=%FF",
        "after=%FF",
        "after=%C3",
        "after=%",
    ] {
        let r = s.get(&format!("/kv?{query}"));
        if let Err(e) = check_error(&r, 400) {
            violations.push(format!("GET /kv?{query}: {e}"));
        }
    }
    assert_none(&violations);
    assert_eq!(list(&s, "limit=1").0, ["a"]);
    assert_eq!(list(&s, "limit=10000").0, ["a", "b"]);
    assert_eq!(
        list(&s, "limit=%32").0,
        ["a", "b"],
        "parameters are decoded"
    );
}

#[test]
fn listing_with_values_returns_items() {
    let s = Fixture::start(&[]);
    assert_eq!(s.put_text("l/text", "hello").status, 201);
    assert_eq!(s.put_json("l/obj", &json!({"n": [1, 2]})).status, 201);
    assert_eq!(s.put_json("l/num", &json!(3.5)).status, 201);
    assert_eq!(s.put_text("l/text", "hello again").status, 200);
    assert_eq!(s.put_text("m", "outside").status, 201);
    let r = s.get("/kv?prefix=l/&values=true");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(JSON));
    assert_eq!(
        r.json(),
        json!({
            "items": [
                {"key": "l/num", "value": 3.5, "version": 3},
                {"key": "l/obj", "value": {"n": [1, 2]}, "version": 2},
                {"key": "l/text", "value": "hello again", "version": 4},
            ],
            "next": null,
        })
    );
    let r = s.get("/kv?prefix=l/&values=true&limit=2").json();
    assert_eq!(r["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(r["next"], "l/obj");
    assert!(r.get("keys").is_none(), "{r}");
    // Versions agree with ETags.
    for item in s.get("/kv?values=true").json()["items"].as_array().unwrap() {
        let key = item["key"].as_str().unwrap();
        let g = s.get(&format!("/kv/{}", encode(key)));
        assert_eq!(
            g.header("etag"),
            Some(format!("\"{}\"", item["version"]).as_str()),
            "{key}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Batches

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

// ---------------------------------------------------------------------------------------------
// Value size limits

#[test]
fn a_value_body_over_max_value_bytes_is_413_and_changes_nothing() {
    let s = Fixture::start(&["--max-value-bytes", "100"]);
    let r = s.put_text("k", &"a".repeat(100));
    assert_eq!(r.status, 201, "a body at the limit: {}", r.text());
    let r = put_with(
        &s,
        "/kv/j",
        &[("Content-Type", JSON)],
        format!("[{}11]", "1,".repeat(48)).as_bytes(),
    );
    assert_eq!(r.status, 201, "a JSON body at the limit: {}", r.text());
    let before = state(&s);
    let mut violations = Vec::new();
    for len in [101, 1000, 100_000] {
        for key in ["k", "new"] {
            let body = "b".repeat(len);
            let r = s.put_text(key, &body);
            if let Err(e) = check_error(&r, 413) {
                violations.push(format!("PUT /kv/{key} text of {len} bytes: {e}"));
            }
            let json_body = format!("\"{}\"", "c".repeat(len - 2));
            let r = put_with(
                &s,
                &format!("/kv/{key}"),
                &[("Content-Type", JSON)],
                json_body.as_bytes(),
            );
            if let Err(e) = check_error(&r, 413) {
                violations.push(format!("PUT /kv/{key} JSON of {len} bytes: {e}"));
            }
        }
    }
    // The same without a Content-Length: chunked, so the server must count as it reads.
    let chunk = "d".repeat(60);
    let request = format!(
        "PUT /kv/new HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n\r\n3c\r\n{chunk}\r\n3c\r\n{chunk}\r\n0\r\n\r\n"
    );
    if let Err(e) = check_error(&s.raw(request.as_bytes()), 413) {
        violations.push(format!("chunked PUT of 120 bytes: {e}"));
    }
    // A form whose decoded value is over the limit.
    let r = form(
        &s,
        "new",
        Some("application/x-www-form-urlencoded"),
        &format!("value={}", "e".repeat(101)),
    );
    if let Err(e) = check_error(&r, 413) {
        violations.push(format!("POST form value of 101 bytes: {e}"));
    }
    let r = form(
        &s,
        "new",
        Some("application/x-www-form-urlencoded"),
        &format!("value={}", "%C3%A9".repeat(51)),
    );
    if let Err(e) = check_error(&r, 413) {
        violations.push(format!("POST form value of 102 decoded bytes: {e}"));
    }
    assert_none(&violations);
    assert_eq!(state(&s), before);
    assert_eq!(s.get("/kv/k").text(), "a".repeat(100));

    // Chunked bodies within the limit are fine, and the form limit is on the decoded value.
    let chunk = "f".repeat(40);
    let request = format!(
        "PUT /kv/chunked HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n\r\n28\r\n{chunk}\r\n28\r\n{chunk}\r\n0\r\n\r\n"
    );
    let r = s.raw(request.as_bytes());
    assert_eq!(r.status, 201, "{}", lossy(&r.body));
    assert_eq!(s.get("/kv/chunked").text(), "f".repeat(80));
    let r = form(
        &s,
        "formed",
        Some("application/x-www-form-urlencoded"),
        &format!("value={}", "%C3%A9".repeat(50)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s.get("/kv/formed").text(), "é".repeat(50));
}

// ---------------------------------------------------------------------------------------------
// Routes, methods, malformed HTTP

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

// ---------------------------------------------------------------------------------------------
// /health and /metrics

#[test]
fn health_is_ok() {
    let s = Fixture::start(&[]);
    let r = s.get("/health");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with(JSON)));
    assert_eq!(r.json()["status"], "ok");
}

#[test]
fn metrics_export_keys_seq_and_request_counts() {
    let s = Fixture::start(&[]);
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        r.header("content-type")
    );
    let text = r.text();
    for name in [
        "twinkv_keys",
        "twinkv_seq",
        "twinkv_durable_seq",
        "twinkv_snapshot_bytes",
        "twinkv_snapshot_duration_seconds",
        "twinkv_snapshot_failures_total",
        "twinkv_http_requests_total",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && !l.starts_with('#'))
                || text.contains(&format!("# TYPE {name} ")),
            "{name} missing from:\n{text}"
        );
    }
    assert_eq!(metric(&s, "twinkv_keys"), Some(0.0));
    assert_eq!(metric(&s, "twinkv_seq"), Some(0.0));

    let get_200 = r#"twinkv_http_requests_total{method="GET",status="200"}"#;
    let get_404 = r#"twinkv_http_requests_total{method="GET",status="404"}"#;
    let put_201 = r#"twinkv_http_requests_total{method="PUT",status="201"}"#;
    assert_eq!(metric(&s, get_404), None, "no 404 yet");

    // Between two scrapes: the first scrape itself and three GETs, all answered 200.
    let before = metric(&s, get_200).expect("earlier scrapes were GETs answered 200");
    for _ in 0..3 {
        assert_eq!(s.get("/health").status, 200);
    }
    let after = metric(&s, get_200).expect("GET 200 counted");
    assert_eq!(after - before, 4.0, "before {before}, after {after}");

    assert_eq!(s.put_text("a", "1").status, 201);
    assert_eq!(s.put_text("b", "2").status, 201);
    assert_eq!(s.put_text("b", "3").status, 200);
    s.get("/kv/absent").assert_error(404);
    s.get("/kv/absent").assert_error(404);
    assert_eq!(metric(&s, "twinkv_keys"), Some(2.0));
    assert_eq!(metric(&s, "twinkv_seq"), Some(3.0));
    assert_eq!(metric(&s, put_201), Some(2.0));
    assert_eq!(
        metric(
            &s,
            r#"twinkv_http_requests_total{method="PUT",status="200"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(&s, get_404), Some(2.0));

    assert_eq!(s.delete("a").status, 204);
    assert_eq!(metric(&s, "twinkv_keys"), Some(1.0));
    assert_eq!(metric(&s, "twinkv_seq"), Some(4.0));
    assert_eq!(
        metric(
            &s,
            r#"twinkv_http_requests_total{method="DELETE",status="204"}"#
        ),
        Some(1.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrency

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
