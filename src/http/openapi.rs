//! `GET /openapi.json`: the OpenAPI 3.1 document of the API, checked in beside this file.
//!
//! The document is the one description of the HTTP API; nothing generates it. What keeps it
//! true is the test at the bottom: it compares the document's operations with the router's one
//! list of routes ([`super::ROUTES`], which `configure` registers and nothing else), then sends
//! every method to every path in-process through `configure` and checks that what the router
//! answers is what the document and `ROUTES` say:
//!
//! - every operation is routed (answers neither 405 nor the 404 of an unknown route), and every
//!   routed method is documented;
//! - every method a path does not list gets 405 with exactly the `Allow` of its route;
//! - an operation marked `x-twinkv-planned: <reason>` (in the contract, not implemented yet)
//!   must *not* be routed, so the day it is implemented the test fails until the marker goes
//!   and the operation joins the checks above.
//!
//! Parameters and properties can carry `x-twinkv-planned` too; `.ci/schemathesis_hooks.py` leaves
//! everything so marked out of the schemathesis run.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

/// The document, as served.
pub(crate) const DOCUMENT: &str = include_str!("openapi.json");

/// The document's strong `ETag`, from its checksum: it changes only with the build.
fn etag() -> &'static str {
    static ETAG: OnceLock<String> = OnceLock::new();
    ETAG.get_or_init(|| format!("\"{:08x}\"", crc32c::crc32c(DOCUMENT.as_bytes())))
}

/// Whether `If-None-Match` names the document's tag (weak comparison, RFC 9110 §13.1.2) or is
/// `*`.
fn not_modified(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag())
}

/// `GET` and `HEAD /openapi.json`, with an `ETag`, so a tool's cache revalidates with a 304
/// (`observe` sends `Cache-Control: no-cache`).
pub async fn document(req: HttpRequest) -> HttpResponse {
    if not_modified(&req) {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag()))
            .finish();
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::ETAG, etag()))
        .body(DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use actix_web::http::{header, Method, StatusCode};
    use actix_web::middleware::from_fn;
    use actix_web::test::{self, TestRequest};
    use actix_web::{web, App};
    use serde_json::Value;

    use super::DOCUMENT;
    use crate::engine::{Engine, Settings};
    use crate::http::{configure, observe, AppState, ROUTES};
    use crate::store::Durability;

    /// The methods an OpenAPI path item can hold, which the probe sends to every path.
    const METHODS: [&str; 8] = [
        "GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE",
    ];

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    /// Every `(path, METHOD)` of the document, with its `x-twinkv-planned` reason if any.
    fn operations(doc: &Value) -> Vec<(String, String, Option<String>)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in METHODS {
                let Some(op) = item.get(method.to_ascii_lowercase()) else {
                    continue;
                };
                let planned = op.get("x-twinkv-planned").map(|reason| {
                    let reason = reason.as_str().unwrap_or_default();
                    assert!(
                        !reason.is_empty(),
                        "{method} {path}: x-twinkv-planned must name its reason"
                    );
                    reason.to_string()
                });
                ops.push((path.clone(), method.to_string(), planned));
            }
        }
        ops
    }

    fn routed() -> BTreeSet<(String, String)> {
        ROUTES
            .iter()
            .flat_map(|r| {
                r.allow
                    .split(", ")
                    .map(|m| (r.path.to_string(), m.to_string()))
            })
            .collect()
    }

    /// A concrete path for a templated one.
    fn concrete(path: &str) -> String {
        path.replace("{key}", "probe").replace("{id}", "1")
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_reference_resolves() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        fn walk(doc: &Value, v: &Value, at: &str) {
            match v {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        let pointer = r.strip_prefix('#').expect("only local references");
                        assert!(doc.pointer(pointer).is_some(), "{at}: {r} does not resolve");
                    }
                    for (k, v) in map {
                        walk(doc, v, &format!("{at}/{k}"));
                    }
                }
                Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        walk(doc, v, &format!("{at}/{i}"));
                    }
                }
                _ => {}
            }
        }
        walk(&doc, &doc, "");
    }

    #[test]
    fn the_document_lists_exactly_the_routed_operations_besides_the_planned_ones() {
        let doc = document();
        let documented: BTreeSet<(String, String)> = operations(&doc)
            .into_iter()
            .filter(|(_, _, planned)| planned.is_none())
            .map(|(path, method, _)| (path, method))
            .collect();
        let routed = routed();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routed but not documented in src/http/openapi.json (or still marked \
             x-twinkv-planned there): {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "in src/http/openapi.json but not in ROUTES (mark an operation that is not \
             implemented yet with x-twinkv-planned and the reason): {unrouted:?}"
        );
    }

    /// Sends every method to every documented path through `configure`, as the server runs it.
    #[actix_web::test]
    async fn the_router_answers_what_the_document_and_routes_say() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let engine =
            Engine::open(dir.path(), &Settings::new(Durability::Async)).expect("open the engine");
        let state = web::Data::new(AppState::new(
            &engine,
            crate::Limits::default(),
            None,
            Durability::Async,
        ));
        let app = test::init_service(
            App::new()
                .app_data(state.clone())
                .app_data(engine.store.readers().reader())
                .wrap(from_fn(observe))
                .configure(configure),
        )
        .await;
        let doc = document();
        let ops = operations(&doc);
        let paths: BTreeSet<&str> = ops.iter().map(|(p, _, _)| p.as_str()).collect();
        let mut failures = Vec::new();
        for path in paths {
            let route = ROUTES.iter().find(|r| r.path == path);
            for method in METHODS {
                let op = ops.iter().find(|(p, m, _)| p == path && m == method);
                let req = TestRequest::default()
                    .method(Method::from_bytes(method.as_bytes()).expect("a method"))
                    .uri(&concrete(path))
                    .to_request();
                let res = test::call_service(&app, req).await;
                let status = res.status();
                let allow = res
                    .headers()
                    .get(header::ALLOW)
                    .map(|v| v.to_str().expect("ASCII").to_string());
                // A watch stream never ends: its status and headers are the answer.
                let streaming = res
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
                let body = if streaming {
                    Default::default()
                } else {
                    test::read_body(res).await
                };
                let unknown_route = status == StatusCode::NOT_FOUND
                    && serde_json::from_slice::<Value>(&body)
                        .is_ok_and(|v| v["error"] == "no such route");
                let body = String::from_utf8_lossy(&body);
                let seen = format!(
                    "{status} (Allow {allow:?}, body {:?})",
                    body.chars().take(120).collect::<String>()
                );
                match (route, op) {
                    (_, Some((_, _, Some(reason)))) => {
                        if !unknown_route && status != StatusCode::METHOD_NOT_ALLOWED {
                            failures.push(format!(
                                "{method} {path} is marked planned ({reason}) but answers \
                                 {seen}: remove x-twinkv-planned and add it to ROUTES"
                            ));
                        }
                    }
                    (_, Some(_)) => {
                        if unknown_route || status == StatusCode::METHOD_NOT_ALLOWED {
                            failures.push(format!("{method} {path} is not routed: {seen}"));
                        }
                    }
                    (Some(route), None) => {
                        if status != StatusCode::METHOD_NOT_ALLOWED
                            || allow.as_deref() != Some(route.allow)
                        {
                            failures.push(format!(
                                "{method} {path} is not documented; expected 405 with Allow \
                                 {:?}, got {seen}",
                                route.allow
                            ));
                        }
                    }
                    (None, None) => {
                        if !unknown_route && status != StatusCode::METHOD_NOT_ALLOWED {
                            failures.push(format!(
                                "{method} {path}: the path is not routed, yet it answers {seen}"
                            ));
                        }
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        drop(app);
        drop(state);
        engine.close().expect("a clean close");
    }
}
