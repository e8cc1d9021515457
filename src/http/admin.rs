//! Handlers of `/health`, `/metrics` and `/snapshot`.

use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use super::error::ApiError;
use std::sync::atomic::Ordering;

use super::{reader, state, AppState};
use crate::metrics::{Figures, Metrics};
use crate::store::NotDurable;
use crate::Chain;

/// `GET /health`: 200 while every background thread runs and the last snapshot attempt
/// succeeded (or none was needed), else 503 with the reason.
pub async fn health(req: HttpRequest) -> HttpResponse {
    let state = state(&req);
    let snap = state.snapshot.load();
    let stats = reader(&req).stats();
    let log = state.log_marks.current();
    let reason = match (state.faults.get(), &log.failure, &snap.last_error) {
        (Some(fault), _, _) => Some(format!("{fault}; writes are refused")),
        (None, Some(f), _) => Some(format!(
            "the last log write or flush failed: {}",
            Chain(&*f.error)
        )),
        (None, None, Some(e)) => Some(format!("the last snapshot attempt failed: {}", Chain(&**e))),
        (None, None, None) => None,
    };
    match reason {
        None => HttpResponse::Ok().json(Healthy {
            status: "ok",
            seq: stats.seq,
            durable_seq: log.seq,
            snapshot_seq: snap.seq,
            keys: stats.keys,
            durability: state.durability.as_str(),
        }),
        Some(reason) => HttpResponse::ServiceUnavailable().json(Degraded {
            status: "degraded",
            reason,
            seq: stats.seq,
            durable_seq: log.seq,
            snapshot_seq: snap.seq,
            snapshot_failures: snap.failures,
        }),
    }
}

/// A healthy `/health` body, serialized straight from the struct: built as a `json!` map,
/// each answer hashed and allocated six keys (a quarter of a pipelined `/health`'s
/// instructions under callgrind; probes poll it).
#[derive(serde::Serialize)]
struct Healthy {
    status: &'static str,
    seq: u64,
    durable_seq: u64,
    snapshot_seq: u64,
    keys: u64,
    durability: &'static str,
}

/// A degraded `/health` body.
#[derive(serde::Serialize)]
struct Degraded {
    status: &'static str,
    reason: String,
    seq: u64,
    durable_seq: u64,
    snapshot_seq: u64,
    snapshot_failures: u64,
}

/// `GET /metrics`, Prometheus text format.
pub async fn metrics(req: HttpRequest) -> HttpResponse {
    let state = state(&req);
    let snap = state.snapshot.load();
    let stats = reader(&req).stats();
    let figures = Figures {
        keys: stats.keys,
        seq: stats.seq,
        durable_seq: state.log_marks.current().seq,
        log_bytes: state.log_bytes.load(Ordering::Relaxed),
        log_fsyncs_total: state.log_stats.fsyncs.load(Ordering::Relaxed),
        snapshot_bytes: snap.bytes,
        snapshot_capacity_bytes: snap.capacity,
        snapshot_duration_seconds: snap.last_duration.as_secs_f64(),
        snapshot_failures_total: snap.failures,
        snapshots_total: snap.written,
        watchers: state.hub.watchers(),
        ..Figures::default()
    };
    HttpResponse::Ok()
        .content_type(Metrics::CONTENT_TYPE)
        .body(state.metrics.render(&figures))
}

fn report(state: &AppState, seq: u64) -> serde_json::Value {
    let snap = state.snapshot.load();
    json!({
        "seq": seq,
        "durable_seq": state.log_marks.current().seq,
        "file": snap.file,
        "bytes": snap.bytes,
        "capacity": snap.capacity,
        "keys": snap.keys,
        "snapshot_seq": snap.seq,
        "log_index": snap.log_index,
        "log_bytes": state.log_bytes.load(Ordering::Relaxed),
        "last_duration_ms": snap.last_duration.as_secs_f64() * 1000.0,
        "written_at": snap.written_at,
        "failures": snap.failures,
        "last_error": snap.last_error.as_ref().map(|e| Chain(&**e).to_string()),
    })
}

/// `GET /snapshot`: what the newest flushed snapshot holds.
pub async fn snapshot_status(req: HttpRequest) -> HttpResponse {
    let state = state(&req);
    let seq = reader(&req).stats().seq;
    HttpResponse::Ok().json(report(state, seq))
}

/// `POST /snapshot`: answers once every write applied before it is in a flushed snapshot.
pub async fn snapshot_now(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let state = state(&req);
    // Taken before asking, so an attempt that covers the request and fails is never missed.
    let waiter = state.snapshot_marks.waiter();
    let seq = state.store.checkpoint().await?;
    waiter.wait(seq).await.map_err(|e| {
        let why = match &e {
            NotDurable::Failed(cause) => Chain(&**cause).to_string(),
            NotDurable::Stopped => "the snapshot thread has stopped".into(),
        };
        ApiError::Unavailable(format!("the snapshot failed: {why}"))
    })?;
    let seq = reader(&req).stats().seq;
    Ok(HttpResponse::Ok().json(report(state, seq)))
}
