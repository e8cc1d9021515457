//! Handlers of `/kv` and `/kv/{key}`: decode, call the store, shape the reply.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;

use super::decode::{check_key, check_no_dot_segments, form_pairs, percent_decode, whole};
use super::error::ApiError;
use super::{reader, seq_value, state, SEQ_NAME};
use crate::config::Limits;
use crate::defaults::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, MAX_TTL_SECS};
use crate::store::{now_ms, Conditions, ETags, Entry, Expiry, PendingValue, WriteError};
use crate::watch::{Filter, Since};

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// The key named by the path after `/kv/`, percent-decoded and checked; borrowed when the path
/// has no escapes, so a GET allocates nothing for its key.
fn key_of(req: &HttpRequest) -> Result<Cow<'_, str>, ApiError> {
    let raw = req
        .uri()
        .path()
        .strip_prefix("/kv/")
        .ok_or_else(|| ApiError::NotFound("no such route".into()))?;
    let key = percent_decode(raw, false)?;
    check_key(&key, &state(req).limits, ApiError::UriTooLong)?;
    Ok(key)
}

/// The key of a delete, which the map keeps as a shared `Arc`.
fn write_key(req: &HttpRequest) -> Result<Arc<str>, ApiError> {
    key_of(req).map(|k| Arc::from(k.as_ref()))
}

/// The key of a put, which may not have a `.` or `..` segment (see [`check_no_dot_segments`]).
fn put_key(req: &HttpRequest) -> Result<Arc<str>, ApiError> {
    let key = write_key(req)?;
    check_no_dot_segments(&key)?;
    Ok(key)
}

/// A key's representation is chosen by `Accept` (text or JSON for a string), so caches must
/// key on it; sent on every 200 and 304 of `GET`/`HEAD /kv/{key}`, whatever the value.
const VARY_ACCEPT: (HeaderName, HeaderValue) = (header::VARY, HeaderValue::from_static("Accept"));

///
/// Built from a stack buffer: `format!` and a `String`-to-header conversion were two heap
/// allocations and a copy on every GET (2.7 % of a pipelined GET's server time in a profile).
fn etag(version: u64) -> (HeaderName, HeaderValue) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(version).as_bytes();
    let mut quoted = [b'"'; 22];
    quoted[1..=digits.len()].copy_from_slice(digits);
    let value = HeaderValue::from_bytes(&quoted[..digits.len() + 2])
        .expect("a quoted number is a valid header value");
    (header::ETAG, value)
}

/// `Twinkv-Seq`: the seq of the state read, or after the write.
fn seq_header(seq: u64) -> (HeaderName, HeaderValue) {
    (SEQ_NAME, seq_value(seq))
}

/// Parses `If-Match` / `If-None-Match`: `*` or a list of entity tags.
///
/// `weak` says whether `W/"n"` counts as `"n"` (weak comparison, for `If-None-Match`); for
/// `If-Match` a weak tag never matches. Tags compare as text, so only a version written as the
/// server writes it (digits, no sign, no leading zero) can match; any other tag never does.
fn etags(req: &HttpRequest, name: HeaderName, weak: bool) -> Result<Option<ETags>, ApiError> {
    let mut values = req.headers().get_all(&name).peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let bad = || ApiError::BadRequest(format!("malformed {name} header"));
    let mut list = Vec::new();
    let mut seen = 0;
    for value in values {
        let value = value.to_str().map_err(|_| bad())?;
        for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                return Ok(Some(ETags::Any));
            }
            let (is_weak, quoted) = match tag.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, tag),
            };
            let opaque = quoted
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .filter(|t| !t.contains('"'))
                .ok_or_else(bad)?;
            seen += 1;
            let canonical = opaque == "0" || !opaque.starts_with('0');
            if let Some(v) = whole::<u64>(opaque).filter(|_| canonical) {
                if weak || !is_weak {
                    list.push(v);
                }
            }
        }
    }
    if seen == 0 {
        return Err(bad());
    }
    Ok(Some(ETags::List(list)))
}

fn conditions(req: &HttpRequest) -> Result<Conditions, ApiError> {
    Ok(Conditions {
        if_match: etags(req, header::IF_MATCH, false)?,
        if_none_match: etags(req, header::IF_NONE_MATCH, true)?,
    })
}

/// The media type of the request body, lower-cased, without parameters.
fn content_type(req: &HttpRequest) -> Option<String> {
    let v = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Whether a body of this media type (lower-cased, without parameters) is JSON:
/// `application/json` or any `application/*+json` (RFC 6839 §3.1), such as
/// `application/merge-patch+json`.
fn is_json_type(media_type: &str) -> bool {
    media_type == JSON
        || media_type
            .strip_prefix("application/")
            .and_then(|subtype| subtype.strip_suffix("+json"))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// Whether a string value goes out as JSON (quoted) rather than as its raw text.
fn wants_json(req: &HttpRequest) -> bool {
    json_preferred(
        req.headers()
            .get_all(header::ACCEPT)
            .filter_map(|v| v.to_str().ok()),
    )
}

/// Reads `Accept` for a string value: JSON only when `application/json` is acceptable (q > 0)
/// and preferred to `text/plain` by a strictly higher q.
///
/// Each type takes the q of the most specific range that matches it (`type/subtype` over
/// `type/*` over `*/*`, RFC 9110 §12.5.1), so `*/*`, a tie and no `Accept` at all keep the
/// text, `application/json;q=0, text/plain` is text, and `application/*` alone is JSON. A range
/// with a malformed q is skipped. Nothing is refused with 406: a type neither matches gets the
/// text, the default representation.
fn json_preferred<'a>(values: impl Iterator<Item = &'a str>) -> bool {
    let mut json = Match::default();
    let mut text = Match::default();
    for range in values.flat_map(|v| v.split(',')) {
        let Some((ty, subtype, q)) = media_range(range) else {
            continue;
        };
        json.offer(ty, subtype, q, "application", "json");
        text.offer(ty, subtype, q, "text", "plain");
    }
    json.q > 0 && json.q > text.q
}

/// The most specific media range seen so far for one type, and its q in thousandths.
#[derive(Default)]
struct Match {
    /// 0: none yet; 1: `*/*`; 2: `type/*`; 3: `type/subtype`.
    specificity: u8,
    q: u16,
}

impl Match {
    fn offer(&mut self, ty: &str, subtype: &str, q: u16, want_ty: &str, want_subtype: &str) {
        let specificity = match (ty, subtype) {
            ("*", "*") => 1,
            (t, "*") if t.eq_ignore_ascii_case(want_ty) => 2,
            (t, s) if t.eq_ignore_ascii_case(want_ty) && s.eq_ignore_ascii_case(want_subtype) => 3,
            _ => return,
        };
        // Two ranges equally specific (a repeated type): the more accepting one counts.
        if specificity > self.specificity || (specificity == self.specificity && q > self.q) {
            *self = Match { specificity, q };
        }
    }
}

/// Splits one `Accept` element into type, subtype and q (in thousandths, default 1000); `None`
/// when it is malformed. Media type parameters other than q are ignored.
fn media_range(range: &str) -> Option<(&str, &str, u16)> {
    let mut parts = range.split(';');
    let (ty, subtype) = parts.next()?.trim().split_once('/')?;
    if ty.is_empty() || subtype.is_empty() || (ty == "*" && subtype != "*") {
        return None;
    }
    let mut q = 1000;
    for param in parts {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            q = qvalue(value.trim())?;
            // What follows q are accept-extensions, not media type parameters.
            break;
        }
    }
    Some((ty, subtype, q))
}

/// A qvalue, `0` to `1` with at most three decimals (RFC 9110 §12.4.2), in thousandths.
fn qvalue(s: &str) -> Option<u16> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac = frac
        .bytes()
        .zip([100, 10, 1])
        .map(|(digit, place)| u16::from(digit - b'0') * place)
        .sum::<u16>();
    match whole {
        "0" => Some(frac),
        "1" if frac == 0 => Some(1000),
        _ => None,
    }
}

/// Longest pause allowed between two pieces of a body before the request is dropped with 408;
/// a client that announces a body and goes quiet must not hold a connection forever.
const BODY_IDLE: Duration = Duration::from_secs(5);

/// Reads the whole body, refusing (413) past `limit` without reading further.
async fn body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    what: &str,
) -> Result<BytesMut, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("the {what} is larger than {limit} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
    loop {
        let chunk = actix_web::rt::time::timeout(BODY_IDLE, payload.next())
            .await
            .map_err(|_| {
                ApiError::RequestTimeout(format!(
                    "no body bytes for {} s; the request was dropped",
                    BODY_IDLE.as_secs()
                ))
            })?;
        let Some(chunk) = chunk else {
            return Ok(buf);
        };
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("cannot read the body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
}

/// A write's error; a 412 carries the key's current version, read now through this worker's
/// reader, so the client's next compare-and-set needs no GET.
///
/// The writer does not report the version it compared against; it answers only after
/// publishing, so the version read here is at least that one. Were that ever to change, a stale
/// tag would cost the client one more 412, never a wrong write.
fn write_error(req: &HttpRequest, key: &str, e: WriteError) -> ApiError {
    match e {
        WriteError::PreconditionFailed => {
            ApiError::PreconditionFailed(reader(req).get(key).map(|entry| entry.version()))
        }
        e => e.into(),
    }
}

/// `GET` and `HEAD /kv/{key}`, with `If-Match` and `If-None-Match` evaluated in the order of
/// RFC 9110 §13.2.2: an unmet `If-Match` is 412 (also for an absent key), then a matching
/// `If-None-Match` is 304, then an absent key is 404.
pub async fn get(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let key = key_of(&req)?;
    let if_match = etags(&req, header::IF_MATCH, false)?;
    let if_none_match = etags(&req, header::IF_NONE_MATCH, true)?;
    let mut blocked = None;
    if !req.query_string().is_empty() {
        blocked = blocking(&req)?;
    }
    read_barrier(&req).await?;
    if let Some((wait, index)) = blocked {
        wait_for_change(&req, &key, wait, index).await?;
    }
    let found = reader(&req).lookup(&key);
    let value = found.entry;
    if let Some(tags) = if_match {
        let version = value.as_ref().map(|v| v.version());
        if !tags.matches(version) {
            return Err(ApiError::PreconditionFailed(version));
        }
    }
    let value = value.ok_or_else(|| ApiError::NotFound("key not found".into()))?;
    let version = value.version();
    if let Some(tags) = if_none_match {
        if tags.matches(Some(version)) {
            return Ok(HttpResponse::NotModified()
                .insert_header(etag(version))
                .insert_header(seq_header(found.seq))
                .insert_header(VARY_ACCEPT)
                .finish());
        }
    }
    let mut res = HttpResponse::Ok();
    res.insert_header(etag(version))
        .insert_header(seq_header(found.seq))
        .insert_header(VARY_ACCEPT);
    expiry_headers(&mut res, &value);
    match value.text() {
        Some(text) if !wants_json(&req) => Ok(res
            .content_type(TEXT)
            .body(Bytes::copy_from_slice(text.as_bytes()))),
        _ => Ok(res
            .content_type(JSON)
            .body(Bytes::copy_from_slice(value.json()))),
    }
}

/// Longest a blocking read waits, and how long it waits when `wait` is not given.
const MAX_WAIT: Duration = Duration::from_secs(600);
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Cluster mode: a `linearizable` read (the default) first waits until this node has applied
/// the leader's commit index, confirmed with a quorum; `stale` reads at once. Standalone, a
/// no-op.
pub(super) async fn read_barrier(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(cluster) = &state(req).cluster else {
        return Ok(());
    };
    if !req.query_string().is_empty() {
        for (name, value) in form_pairs(req.query_string())? {
            if name == "consistency" {
                check_consistency(&value)?;
                if value == "stale" {
                    return Ok(());
                }
            }
        }
    }
    match cluster.linearize().await {
        Ok(()) => Ok(()),
        // A read is never redirected: any node serves it once it has caught up.
        Err(crate::cluster::ClusterError::NotLeader(_)) => Err(ApiError::NoLeader(
            "no leader is known to confirm a linearizable read; try again, or read with \
             consistency=stale"
                .into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Checks a read's `consistency`. Standalone, every read is of the one copy, so both levels
/// are the same; cluster mode is where they differ.
pub(super) fn check_consistency(value: &str) -> Result<(), ApiError> {
    match value {
        "linearizable" | "stale" => Ok(()),
        _ => Err(ApiError::BadRequest(
            "consistency must be linearizable or stale".into(),
        )),
    }
}

/// The `wait` and `index` of a blocking read (`None`: an ordinary GET), and `consistency`.
fn blocking(req: &HttpRequest) -> Result<Option<(Duration, u64)>, ApiError> {
    let (mut wait, mut index) = (None, None);
    for (name, value) in form_pairs(req.query_string())? {
        match &*name {
            "wait" => {
                let secs = whole::<u64>(&value)
                    .filter(|s| *s <= MAX_WAIT.as_secs())
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "wait must be whole seconds in 0..={}",
                            MAX_WAIT.as_secs()
                        ))
                    })?;
                wait = Some(Duration::from_secs(secs));
            }
            "index" => {
                index = Some(whole::<u64>(&value).ok_or_else(|| {
                    ApiError::BadRequest("index must be a version: a whole number".into())
                })?);
            }
            "consistency" => check_consistency(&value)?,
            _ => {}
        }
    }
    match (wait, index) {
        (_, Some(i)) => Ok(Some((wait.unwrap_or(DEFAULT_WAIT), i))),
        (Some(_), None) => Err(ApiError::BadRequest(
            "wait needs index: the version last seen (0: absent)".into(),
        )),
        (None, None) => Ok(None),
    }
}

/// Waits until `key` is past version `index` (or deleted; with `index` 0, until it exists),
/// or `wait` passes, or the server shuts down. A subscription from the seq of the state read misses no change.
async fn wait_for_change(
    req: &HttpRequest,
    key: &str,
    wait: Duration,
    index: u64,
) -> Result<(), ApiError> {
    let found = reader(req).lookup(key);
    // Contract: answer once the key's version is greater than `index`, or it is deleted.
    let unchanged = match &found.entry {
        Some(e) => e.version() <= index,
        None => index == 0,
    };
    if !unchanged || wait.is_zero() {
        return Ok(());
    }
    let mut sub = super::watch::subscribe(
        req,
        Filter::Key(key.to_string()),
        Some(Since::after(found.seq)),
    )?;
    let _ = actix_web::rt::time::timeout(wait, sub.next()).await;
    Ok(())
}

#[derive(Serialize)]
struct PutReply<'a> {
    key: &'a str,
    version: u64,
}

/// A TTL in seconds, checked against the contract's range.
fn ttl_secs(value: &str) -> Result<u64, String> {
    whole::<u64>(value)
        .filter(|n| (1..=MAX_TTL_SECS).contains(n))
        .ok_or_else(|| format!("ttl must be a whole number of seconds in 1..={MAX_TTL_SECS}"))
}

/// The `ttl` query parameter of a write: when the key expires.
fn expiry_of(req: &HttpRequest) -> Result<Expiry, ApiError> {
    let mut expiry = Expiry::Never;
    for (name, value) in form_pairs(req.query_string())? {
        if name == "ttl" {
            expiry = Expiry::After(ttl_secs(&value).map_err(ApiError::BadRequest)?);
        }
    }
    Ok(expiry)
}

/// `Twinkv-Expires-At` and `Twinkv-TTL` of an entry with an expiry time.
fn expiry_headers(res: &mut actix_web::HttpResponseBuilder, entry: &Entry) {
    if let Some(at) = entry.expires_at() {
        let left_ms = at.saturating_sub(now_ms());
        res.insert_header((HeaderName::from_static("twinkv-expires-at"), rfc3339(at)))
            .insert_header((
                HeaderName::from_static("twinkv-ttl"),
                HeaderValue::from(left_ms.div_ceil(1000)),
            ));
    }
}

/// An instant in milliseconds since the epoch, as RFC 3339 in UTC with milliseconds.
pub(crate) fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms as i64);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

/// Stores `value` under the request's key and shapes the 200/201 reply.
async fn store_value(
    req: &HttpRequest,
    key: Arc<str>,
    value: PendingValue,
) -> Result<HttpResponse, ApiError> {
    let cond = conditions(req)?;
    let expires = expiry_of(req)?;
    let written = state(req)
        .store
        .put(Arc::clone(&key), value, cond, expires)
        .await
        .map_err(|e| write_error(req, &key, e))?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status)
        .insert_header(etag(written.seq))
        .insert_header(seq_header(written.seq))
        .json(PutReply {
            key: &key,
            version: written.seq,
        }))
}

/// `PUT /kv/{key}`: a JSON body with `Content-Type: application/json` or `application/*+json`,
/// else UTF-8 text.
pub async fn put(req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let key = put_key(&req)?;
    let limits = state(&req).limits;
    // Check preconditions' syntax before reading a large body.
    conditions(&req)?;
    let bytes = body(&req, payload, limits.max_value_bytes, "value").await?;
    let value = if content_type(&req).as_deref().is_some_and(is_json_type) {
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        PendingValue::from_json(&v)
    } else {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ApiError::BadRequest("the body is not valid UTF-8".into()))?;
        PendingValue::from_text(text)
    };
    store_value(&req, key, value).await
}

/// `POST /kv/{key}` with a form body `value=...`, stored as a string.
pub async fn post_form(req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let key = put_key(&req)?;
    let limits = state(&req).limits;
    if content_type(&req).as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(ApiError::UnsupportedMediaType(
            "POST /kv/{key} takes an application/x-www-form-urlencoded body with a `value` field; use PUT for other bodies".into(),
        ));
    }
    conditions(&req)?;
    // A form escapes each byte in at most three, so this bounds the decoded value too.
    let form_limit = limits.max_value_bytes.saturating_mul(3).saturating_add(64);
    let bytes = body(&req, payload, form_limit, "form body").await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::BadRequest("the body is not valid UTF-8".into()))?;
    let pairs = form_pairs(text)?;
    let value = pairs
        .iter()
        .find(|(name, _)| name == "value")
        .map(|(_, v)| v)
        .ok_or_else(|| ApiError::BadRequest("the form has no `value` field".into()))?;
    if value.len() > limits.max_value_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "the value is larger than {} bytes",
            limits.max_value_bytes
        )));
    }
    store_value(&req, key, PendingValue::from_text(value)).await
}

/// `DELETE /kv/{key}`.
pub async fn delete(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let key = write_key(&req)?;
    let cond = conditions(&req)?;
    let written = state(&req)
        .store
        .delete(Arc::clone(&key), cond)
        .await
        .map_err(|e| write_error(&req, &key, e))?;
    Ok(HttpResponse::NoContent()
        .insert_header(seq_header(written.seq))
        .finish())
}

/// `GET /kv?prefix=&after=&limit=&values=`.
pub async fn list(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let mut prefix = String::new();
    let mut after = None;
    let mut limit = DEFAULT_LIST_LIMIT;
    let mut values = false;
    for (name, value) in form_pairs(req.query_string())? {
        match &*name {
            "prefix" => prefix = value.into_owned(),
            "after" => after = Some(value.into_owned()),
            "limit" => {
                limit = whole::<usize>(&value)
                    .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "limit must be an integer in 1..={MAX_LIST_LIMIT}"
                        ))
                    })?;
            }
            "values" => {
                values = match &*value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(ApiError::BadRequest("values must be true or false".into())),
                }
            }
            "consistency" => check_consistency(&value)?,
            _ => {}
        }
    }
    read_barrier(&req).await?;
    let page = reader(&req).list(&prefix, after.as_deref(), limit);
    let next = page.next();
    let body = if values {
        // Values are ready JSON: splice them in rather than parse and re-serialize.
        let mut out = Vec::with_capacity(64 + page.items.len() * 64);
        out.extend_from_slice(b"{\"items\":[");
        for (i, entry) in page.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"key\":");
            serde_json::to_writer(&mut out, entry.key()).expect("writing into memory");
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(entry.json());
            out.extend_from_slice(format!(",\"version\":{}", entry.version()).as_bytes());
            if let Some(at) = entry.expires_at() {
                out.extend_from_slice(format!(",\"expires_at\":\"{}\"", rfc3339(at)).as_bytes());
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"next\":");
        serde_json::to_writer(&mut out, &next).expect("writing into memory");
        out.push(b'}');
        out
    } else {
        let keys: Vec<&str> = page.items.iter().map(|e| e.key()).collect();
        serde_json::to_vec(&serde_json::json!({ "keys": keys, "next": next }))
            .expect("writing into memory")
    };
    Ok(HttpResponse::Ok()
        .content_type(JSON)
        .insert_header(seq_header(page.seq))
        .body(body))
}

/// A parsed batch body: puts (with their expiry) and deletes, disjoint, every key and value
/// checked.
pub type Batch = (Vec<(Arc<str>, PendingValue, Expiry)>, Vec<Arc<str>>);

/// Parses and checks a `POST /kv` body; pure, so fuzzing needs no server.
pub fn parse_batch(bytes: &[u8], limits: &Limits) -> Result<Batch, ApiError> {
    let doc: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let serde_json::Value::Object(fields) = doc else {
        return Err(ApiError::BadRequest(
            "the body must be an object: {\"put\": {...}, \"delete\": [...]}".into(),
        ));
    };
    let mut puts = Vec::new();
    let mut deletes = Vec::new();
    let mut ttls: Vec<(String, u64)> = Vec::new();
    for (name, field) in fields {
        match (name.as_str(), field) {
            ("put", serde_json::Value::Object(map)) => {
                for (key, value) in map {
                    check_key(&key, limits, ApiError::BadRequest)?;
                    check_no_dot_segments(&key)
                        .map_err(|e| ApiError::BadRequest(format!("batch key {key:?}: {e}")))?;
                    let value = PendingValue::from_json(&value);
                    if value.json_len() > limits.max_value_bytes {
                        return Err(ApiError::PayloadTooLarge(format!(
                            "the value of {key:?} is larger than {} bytes",
                            limits.max_value_bytes
                        )));
                    }
                    puts.push((Arc::<str>::from(key), value, Expiry::Never));
                }
            }
            ("delete", serde_json::Value::Array(keys)) => {
                for key in keys {
                    let serde_json::Value::String(key) = key else {
                        return Err(ApiError::BadRequest(
                            "`delete` must be an array of strings".into(),
                        ));
                    };
                    check_key(&key, limits, ApiError::BadRequest)?;
                    deletes.push(Arc::<str>::from(key));
                }
            }
            ("ttl", serde_json::Value::Object(map)) => {
                for (key, secs) in map {
                    let secs = secs
                        .as_u64()
                        .map(|n| n.to_string())
                        .ok_or_else(|| ttl_secs("").unwrap_err())
                        .and_then(|n| ttl_secs(&n))
                        .map_err(|e| ApiError::BadRequest(format!("ttl of {key:?}: {e}")))?;
                    ttls.push((key, secs));
                }
            }
            ("ttl", _) => {
                return Err(ApiError::BadRequest(
                    "`ttl` must be an object of key to seconds".into(),
                ))
            }
            ("put", _) => return Err(ApiError::BadRequest("`put` must be an object".into())),
            ("delete", _) => {
                return Err(ApiError::BadRequest(
                    "`delete` must be an array of strings".into(),
                ))
            }
            (other, _) => {
                return Err(ApiError::BadRequest(format!(
                    "unknown field {other:?}: a batch has only `put`, `delete` and `ttl`"
                )))
            }
        }
    }
    // Each put's position by key, so neither check nor the TTLs scan the puts once per key.
    let put_at: HashMap<&str, usize> = puts
        .iter()
        .enumerate()
        .map(|(i, (k, _, _))| (&**k, i))
        .collect();
    if let Some(k) = deletes.iter().find(|k| put_at.contains_key(&***k)) {
        return Err(ApiError::BadRequest(format!(
            "key {k:?} is both put and deleted"
        )));
    }
    let mut expiring = Vec::with_capacity(ttls.len());
    for (k, secs) in &ttls {
        let Some(&i) = put_at.get(k.as_str()) else {
            return Err(ApiError::BadRequest(format!(
                "ttl names {k:?}, which the batch does not put"
            )));
        };
        expiring.push((i, *secs));
    }
    for (i, secs) in expiring {
        puts[i].2 = Expiry::After(secs);
    }
    Ok((puts, deletes))
}

/// `POST /kv`: `{"put": {k: v, ...}, "delete": [k, ...]}`, applied atomically at one seq.
pub async fn batch(req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let limits = state(&req).limits;
    let bytes = body(&req, payload, limits.max_batch_bytes, "batch body").await?;
    let (puts, deletes) = parse_batch(&bytes, &limits)?;
    let written = state(&req).store.batch(puts, deletes).await?;
    Ok(HttpResponse::Ok()
        .insert_header(seq_header(written.seq))
        .json(serde_json::json!({ "seq": written.seq })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_chosen_for_a_string_only_when_preferred_by_q() {
        let json = |accept: &[&str]| json_preferred(accept.iter().copied());
        for accept in [
            "application/json",
            "application/json;q=0.001",
            "text/plain;q=0.5, application/json",
            "text/html, application/json;q=0.9",
            "application/*",
            "application/*;q=0.4, text/plain;q=0.3",
            "*/*;q=0.9, application/json",
            "APPLICATION/JSON;Q=1.000",
            "application/json; charset=utf-8",
            "application/json, text/plain;q=0",
            "application/json;q=0, application/json;q=0.5",
            "text/plain;q=0.1,application/json;q=0.2",
        ] {
            assert!(json(&[accept]), "{accept:?} should choose JSON");
        }
        assert!(json(&["text/plain;q=0.2", "application/json;q=0.3"]));
        for accept in [
            "",
            "*/*",
            "text/plain",
            "application/json;q=0",
            "application/json;q=0, text/plain",
            "application/json;q=0, */*",
            "application/json;q=0.000",
            "text/plain, application/json",
            "application/json;q=0.5, text/plain;q=0.9",
            "application/*;q=0.5, text/*",
            "image/png",
            "application/json;q=abc",
            "application/json;q=1.5",
            "application/json;q=0.0001",
            "application/json;q=-1",
            "*/json",
            "application",
            "/json",
        ] {
            assert!(!json(&[accept]), "{accept:?} should keep the text");
        }
        assert!(!json(&[]));
    }

    #[test]
    fn json_media_types_are_application_json_and_any_plus_json() {
        for t in [
            "application/json",
            "application/merge-patch+json",
            "application/vnd.foo+json",
            "application/problem+json",
            "application/vnd.api.v2+json",
        ] {
            assert!(is_json_type(t), "{t}");
        }
        for t in [
            "application/+json",
            "application/json-seq",
            "application/jsonx",
            "application/x-ndjson",
            "text/json",
            "text/x+json",
            "application/foo+json/x",
            "application/foo+jsonx",
            "text/plain",
            "",
        ] {
            assert!(!is_json_type(t), "{t}");
        }
    }

    #[test]
    fn qvalues_parse_as_rfc_9110_has_them() {
        for (s, q) in [
            ("0", 0),
            ("0.", 0),
            ("0.5", 500),
            ("0.25", 250),
            ("0.125", 125),
            ("1", 1000),
            ("1.", 1000),
            ("1.000", 1000),
        ] {
            assert_eq!(qvalue(s), Some(q), "{s:?}");
        }
        for s in [
            "", "1.001", "2", "0.1234", "01", ".5", "0.5a", "-0", "+1", "0x1",
        ] {
            assert_eq!(qvalue(s), None, "{s:?}");
        }
    }
}
