//! `GET /openapi.json` on the real binary: served without the token, as `application/json`, byte
//! for byte the document checked in as `src/http/openapi.json` (which `src/http/openapi.rs`
//! holds to the router), while every other route but `/health` still needs the token.

use crate::util::Fixture;

/// The document as checked in.
const DOCUMENT: &str = include_str!("../../src/http/openapi.json");

#[test]
fn the_document_is_served_without_the_token_as_checked_in() {
    let s = Fixture::start(&["--auth-token", "s3cret"]);
    let r = s.get("/openapi.json");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), DOCUMENT);
    assert_eq!(r.json()["openapi"], "3.1.0");

    let head = s.request("HEAD", "/openapi.json", &[], None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(DOCUMENT.len().to_string().as_str())
    );

    // Only reading it is open: any other method still needs the token (and is then a 405).
    assert_eq!(s.request("POST", "/openapi.json", &[], None).status, 401);
    for path in ["/kv", "/kv/a", "/metrics", "/snapshot", "/openapi.jsonx"] {
        let r = s.get(path);
        assert_eq!(r.status, 401, "GET {path} without the token: {}", r.text());
    }
    assert_eq!(s.get("/health").status, 200);
}
