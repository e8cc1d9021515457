//! Handlers of `/health`, `/metrics` and `/snapshot`.

use std::sync::atomic::Ordering;

use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use super::error::ApiError;
use super::state;
use crate::snapshot::SnapshotStatus;
use crate::store::Durability;

/// `GET /health`: 200 when the last snapshot attempt succeeded (or none was needed), else 503.
pub async fn health(req: HttpRequest) -> HttpResponse {
    let state = state(&req);
    let snap = state.metrics.snapshot_status();
    let seq = state.metrics.seq.load(Ordering::Acquire);
    let durability = match state.durability {
        Durability::Async => "async",
        Durability::Sync => "sync",
    };
    match &snap.last_error {
        None => HttpResponse::Ok().json(json!({
            "status": "ok",
            "seq": seq,
            "durable_seq": snap.durable_seq,
            "keys": state.metrics.keys.load(Ordering::Acquire),
            "durability": durability,
        })),
        Some(reason) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "degraded",
            "reason": format!("the last snapshot attempt failed: {reason}"),
            "seq": seq,
            "durable_seq": snap.durable_seq,
            "snapshot_failures": snap.failures,
        })),
    }
}

/// `GET /metrics`, Prometheus text format.
pub async fn metrics(req: HttpRequest) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state(&req).metrics.render())
}

fn report(seq: u64, snap: &SnapshotStatus) -> serde_json::Value {
    json!({
        "seq": seq,
        "durable_seq": snap.durable_seq,
        "file": snap.file,
        "bytes": snap.bytes,
        "capacity": snap.capacity,
        "keys": snap.keys,
        "last_duration_ms": snap.last_duration.as_secs_f64() * 1000.0,
        "written_at": snap.written_at,
        "failures": snap.failures,
        "last_error": snap.last_error,
    })
}

/// `GET /snapshot`: what the newest flushed snapshot holds.
pub async fn snapshot_status(req: HttpRequest) -> HttpResponse {
    let state = state(&req);
    let seq = state.metrics.seq.load(Ordering::Acquire);
    HttpResponse::Ok().json(report(seq, &state.metrics.snapshot_status()))
}

/// `POST /snapshot`: answers once every write applied before it is in a flushed snapshot.
pub async fn snapshot_now(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let state = state(&req);
    let snap = state.store.snapshot().await?;
    let seq = state.metrics.seq.load(Ordering::Acquire);
    Ok(HttpResponse::Ok().json(report(seq, &snap)))
}
