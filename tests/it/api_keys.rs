//! Keys in the path: slashes, spaces and any Unicode, percent-decoding, malformed encodings
//! (400) and keys over `--max-key-bytes`.
//!
//! The rules every api test keeps, and the helpers they share, are in [`crate::api`].

use serde_json::{json, Value};

use crate::api::{assert_none, check_error, form, list, lossy, state};
use crate::util::{encode, Fixture, Resp, Server};

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
        // `..` itself is a dot segment, refused on writes (see `semantics`); `...` is a name.
        ("%2E%2E%2E", "..."),
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
