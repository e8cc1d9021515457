//! GET, HEAD, PUT and DELETE on `/kv/{key}`: text and JSON values, content types, `ETag`,
//! conditional reads and writes (`If-Match`, `If-None-Match`).
//!
//! The rules every api test keeps, and the helpers they share, are in [`crate::api`].

use serde_json::json;

use crate::api::{assert_none, check_error, get_with, lossy, metric, put_with, state, JSON, TEXT};
use crate::util::{Fixture, Outcome};

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
        // An entity tag compares as text: "+1" and "01" are not the tag "1".
        ("k", "If-Match", "\"+1\""),
        ("k", "If-Match", "\"01\""),
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
