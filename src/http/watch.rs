//! `GET /watch`: a stream of change events, as Server-Sent Events or NDJSON.
//!
//! The handler checks the parameters, subscribes to the hub (which replays the history after
//! `since` or `Last-Event-ID` and then streams live events), and turns each batch into text.
//! An idle stream gets a progress event every `--watch-progress-ms` (10 s); a watcher the hub
//! cut off for falling behind gets a last `reset` event; at shutdown every stream ends.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use futures_util::stream;
use serde_json::json;

use super::decode::{check_key, form_pairs};
use super::error::ApiError;
use super::{reader, state};
use crate::watch::{Event, Filter, Hub, Kind, Since, Subscription, WatchError};

/// How the events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `text/event-stream`: `id:` and `data:` lines.
    Sse,
    /// `application/x-ndjson`: one JSON object per line.
    Ndjson,
}

/// The parameters of a watch (and of a blocking read's subscription).
fn parse_since(value: &str, what: &str) -> Result<Since, ApiError> {
    Since::parse(value).ok_or_else(|| {
        ApiError::BadRequest(format!("{what} must be an event id: <seq> or <seq>.<i>"))
    })
}

/// Subscribes, mapping the hub's refusals to their statuses.
pub(super) fn subscribe(
    req: &HttpRequest,
    filter: Filter,
    since: Option<Since>,
) -> Result<Subscription, ApiError> {
    let current = reader(req).stats().seq;
    if let Some(s) = since {
        if s.seq > current {
            return Err(ApiError::BadRequest(format!(
                "since {} is ahead of the current seq {current}",
                s.seq
            )));
        }
    }
    state(req)
        .hub
        .subscribe(filter, since)
        .map_err(|e| match e {
            WatchError::Gone { oldest, seq, .. } => ApiError::Gone {
                message: e.to_string(),
                oldest_seq: oldest,
                seq,
            },
            WatchError::Closed => ApiError::Unavailable(e.to_string()),
        })
}

/// `GET /watch?prefix=P | key=K [&since=N]`.
pub async fn watch(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let mut prefix = None;
    let mut key = None;
    let mut since = None;
    for (name, value) in form_pairs(req.query_string())? {
        match &*name {
            "prefix" => prefix = Some(value.into_owned()),
            "key" => key = Some(value.into_owned()),
            "since" => since = Some(parse_since(&value, "since")?),
            "consistency" => super::kv::check_consistency(&value)?,
            _ => {}
        }
    }
    // A browser's reconnect sends the last id it saw; it wins over the URL's `since`, which
    // is where the stream first started.
    if let Some(v) = req.headers().get("last-event-id") {
        let v = v
            .to_str()
            .map_err(|_| ApiError::BadRequest("malformed Last-Event-ID header".into()))?;
        if !v.is_empty() {
            since = Some(parse_since(v, "Last-Event-ID")?);
        }
    }
    super::kv::read_barrier(&req).await?;
    let filter = match (prefix, key) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest("give prefix or key, not both".into()))
        }
        (None, Some(k)) => {
            check_key(&k, &state(&req).limits, ApiError::BadRequest)?;
            Filter::Key(k)
        }
        (p, None) => Filter::Prefix(p.unwrap_or_default()),
    };
    let format = if accepts(&req, "application/x-ndjson") {
        Format::Ndjson
    } else {
        Format::Sse
    };
    let sub = subscribe(&req, filter, since)?;
    let content_type = match format {
        Format::Sse => "text/event-stream",
        Format::Ndjson => "application/x-ndjson",
    };
    if req.method() == actix_web::http::Method::HEAD {
        // The same checks and headers as GET, and no stream: an endless body on a HEAD
        // connection would only confuse the client's next request.
        drop(sub);
        return Ok(HttpResponse::Ok()
            .content_type(content_type)
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::VARY, "Accept"))
            .finish());
    }
    let st = state(&req);
    let body = Stream {
        sub,
        format,
        progress: st.watch_progress,
        hub: Arc::clone(&st.hub),
        queued: VecDeque::from([hello(format, st.hub.seq())]),
        done: false,
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::VARY, "Accept"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream::unfold(body, Stream::step)))
}

/// Whether `Accept` names `media` with q > 0.
fn accepts(req: &HttpRequest, media: &str) -> bool {
    req.headers().get_all(header::ACCEPT).any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|range| {
                let mut parts = range.split(';');
                let name = parts.next().unwrap_or("").trim();
                let q_zero = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                name.eq_ignore_ascii_case(media) && !q_zero
            })
        })
    })
}

/// The first bytes of a stream: they let the client see the headers and where it starts.
fn hello(format: Format, seq: u64) -> Bytes {
    match format {
        Format::Sse => Bytes::from(format!(": watching from seq {seq}\n\n")),
        Format::Ndjson => Bytes::from(format!("{}\n", json!({"type": "progress", "seq": seq}))),
    }
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing a string into memory");
}

/// Appends the JSON of one event.
fn event_json(out: &mut Vec<u8>, e: &Event, id: &[u8]) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(id);
    out.extend_from_slice(b"\",\"seq\":");
    out.extend_from_slice(n.format(e.seq).as_bytes());
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(e.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"key\":");
    push_json_str(out, &e.key);
    let version = match (&e.entry, e.kind) {
        (Some(entry), Kind::Put) => {
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(entry.json());
            entry.version()
        }
        _ => e.seq,
    };
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(n.format(version).as_bytes());
    out.push(b'}');
}

/// Appends one batch of events (one seq's matching events, the first at `first`) as text: all
/// but the last carry `id: <seq>.<i>`, the last `id: <seq>`, so a resume never splits a seq
/// wrongly.
fn format_batch(out: &mut Vec<u8>, format: Format, first: usize, batch: &[Event]) {
    let last = batch.len().saturating_sub(1);
    let mut id = Vec::with_capacity(24);
    for (n, e) in batch.iter().enumerate() {
        id.clear();
        id.extend_from_slice(itoa::Buffer::new().format(e.seq).as_bytes());
        if n != last {
            id.push(b'.');
            id.extend_from_slice(itoa::Buffer::new().format(first + n).as_bytes());
        }
        match format {
            Format::Sse => {
                out.extend_from_slice(b"id: ");
                out.extend_from_slice(&id);
                out.extend_from_slice(b"\ndata: ");
                event_json(out, e, &id);
                out.extend_from_slice(b"\n\n");
            }
            Format::Ndjson => {
                event_json(out, e, &id);
                out.push(b'\n');
            }
        }
    }
}

/// Most text one chunk of a watch stream gathers from batches already queued: under a burst
/// of writes a watcher gets one write of many events instead of one per event.
const CHUNK_BYTES: usize = 64 * 1024;

/// A watch response's body.
struct Stream {
    sub: Subscription,
    format: Format,
    progress: Duration,
    hub: Arc<Hub>,
    /// Text to send before waiting for more.
    queued: VecDeque<Bytes>,
    /// The stream has said its last word.
    done: bool,
}

impl Stream {
    async fn step(mut self) -> Option<(Result<Bytes, actix_web::Error>, Self)> {
        if let Some(b) = self.queued.pop_front() {
            return Some((Ok(b), self));
        }
        if self.done {
            return None;
        }
        let progress = self.progress;
        tokio::select! {
            next = self.sub.next() => match next {
                Some((first, batch)) => {
                    let mut text = Vec::with_capacity(256);
                    format_batch(&mut text, self.format, first, &batch);
                    while text.len() < CHUNK_BYTES {
                        let Some((first, batch)) = self.sub.try_next() else {
                            break;
                        };
                        format_batch(&mut text, self.format, first, &batch);
                    }
                    Some((Ok(Bytes::from(text)), self))
                }
                None => {
                    self.done = true;
                    if self.sub.cut_off.load(Ordering::Relaxed) {
                        // The last word of a watcher that fell behind (or whose node installed an image):
                        // where to resume from.
                        let seq = self.hub.seq();
                        let reason = "the watcher fell too far behind, or this cluster node installed a \
                            leader's image; resume with since";
                        let text = match self.format {
                            Format::Sse => format!(
                                "event: reset\ndata: {}\n\n",
                                json!({"reason": reason, "seq": seq})
                            ),
                            Format::Ndjson => format!(
                                "{}\n",
                                json!({"type": "reset", "reason": reason, "seq": seq})
                            ),
                        };
                        Some((Ok(Bytes::from(text)), self))
                    } else {
                        None
                    }
                }
            },
            _ = actix_web::rt::time::sleep(progress) => {
                let seq = self.hub.seq();
                let text = match self.format {
                    Format::Sse => format!("event: progress\ndata: {}\n\n", json!({"seq": seq})),
                    Format::Ndjson => format!("{}\n", json!({"type": "progress", "seq": seq})),
                };
                Some((Ok(Bytes::from(text)), self))
            }
        }
    }
}
