//! Value size limits: a body, JSON or text, plain or chunked, or a decoded form value over
//! `--max-value-bytes` gets 413 and changes nothing.
//!
//! The rules every api test keeps, and the helpers they share, are in [`crate::api`].

use crate::api::{assert_none, check_error, form, lossy, put_with, state, JSON};
use crate::util::Fixture;

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
