//! The HTTP API against the real binary: every route but `/snapshot` (see `recovery`), every
//! status the contract names, key and query decoding, size limits, conditional requests,
//! batches, listing, `/health`, `/metrics`, and the concurrency promises (compare-and-set,
//! atomic batches, read-your-writes).
//!
//! Each test starts its own server on a fresh data dir, so figures such as `seq` are exact.
//! Every rejected write is followed by a check that the stored state (seq, keys, values and
//! versions) did not change. Requests whose exact bytes matter (bad percent-encoding, malformed
//! HTTP, chunked bodies) go through [`Server::raw`], the bare TCP client of `util`, because a
//! URL library would normalise them before they reach the server. Table-driven tests collect every violation
//! before failing, so one run reports them all.
//!
//! The tests sit in one module per area, beside this one:
//! - `api_kv`: GET, HEAD, PUT and DELETE on `/kv/{key}`, conditional requests;
//! - `api_form`: `POST /kv/{key}` with a form;
//! - `api_keys`: keys in the path, their decoding and their length limit;
//! - `api_listing`: `GET /kv`, its order, paging and parameters;
//! - `api_batch`: `POST /kv` batches;
//! - `api_limits`: value size limits;
//! - `api_routes`: unknown routes, wrong methods, malformed HTTP, JSON error bodies;
//! - `api_health_metrics`: `/health` and `/metrics`;
//! - `api_concurrency`: races, atomic batches and read-your-writes.
//!
//! This module holds what they share: the stored-state snapshot that a rejected write must leave
//! alone, the `/metrics` reader, and the request and error-checking helpers.

use serde_json::Value;

use crate::util::{Resp, Server};

/// The content type of JSON answers.
pub(crate) const JSON: &str = "application/json";
/// The content type of a string value served as raw text.
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";

/// What a rejected write must leave alone: the seq and every key with its value and version.
#[derive(Debug, PartialEq)]
pub(crate) struct State {
    pub(crate) seq: u64,
    pub(crate) items: Value,
}

pub(crate) fn state(s: &Server) -> State {
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
pub(crate) fn metric(s: &Server, series: &str) -> Option<f64> {
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
pub(crate) fn list(s: &Server, query: &str) -> (Vec<String>, Value) {
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

pub(crate) fn put_with(s: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    s.request("PUT", path, headers, Some(body))
}

pub(crate) fn get_with(s: &Server, path: &str, headers: &[(&str, &str)]) -> Resp {
    s.request("GET", path, headers, None)
}

pub(crate) fn form(s: &Server, key: &str, content_type: Option<&str>, body: &str) -> Resp {
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
pub(crate) fn check_error(r: &Resp, status: u16) -> Result<(), String> {
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
pub(crate) fn assert_none(violations: &[String]) {
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
