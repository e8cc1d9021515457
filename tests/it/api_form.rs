//! `POST /kv/{key}` with a form: the `value` field stored as a string, and the forms and
//! content types it refuses.
//!
//! The rules every api test keeps, and the helpers they share, are in [`crate::api`].

use serde_json::json;

use crate::api::{assert_none, check_error, form, get_with, state, JSON, TEXT};
use crate::util::Fixture;

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
