//! `GET /kv`: byte order, `prefix`, `after`, `limit` and `next` paging, `values=true`, and
//! the parameters it refuses.
//!
//! The rules every api test keeps, and the helpers they share, are in [`crate::api`].

use serde_json::{json, Value};

use crate::api::{assert_none, check_error, list, JSON};
use crate::util::{encode, Fixture, Server};

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
