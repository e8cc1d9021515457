//! The Raft listener's routes (`--raft-addr`): what peers' [`super::network`] clients call.
//!
//! Every answer is `200` with the JSON of openraft's `Result` (so a peer's refusal travels as
//! openraft's own error), or `401` without the bearer token when one is set: nothing is handed
//! to Raft then.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use openraft::Snapshot;
use serde::Serialize;

use super::network::SnapshotIn;
use super::Cluster;

/// Largest Raft request accepted: a snapshot carries the whole image.
const MAX_BODY: usize = 4 << 30;

/// Registers the Raft routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY))
        .route("/raft/append", web::post().to(append))
        .route("/raft/vote", web::post().to(vote))
        .route("/raft/snapshot", web::post().to(snapshot))
        .route("/raft/read-index", web::post().to(read_index))
        .default_service(web::to(|| async {
            HttpResponse::NotFound().json(serde_json::json!({"error": "no such Raft route"}))
        }));
}

fn cluster(req: &HttpRequest) -> &Arc<Cluster> {
    req.app_data::<web::Data<Arc<Cluster>>>()
        .expect("the Raft listener registers its cluster")
}

/// Checks the bearer token (when the API has one): `Some(401)` when it is missing or wrong;
/// `Some(503)` while the test-only partition switch is on.
fn refused(req: &HttpRequest) -> Option<HttpResponse> {
    if cluster(req).partitioned() {
        return Some(HttpResponse::ServiceUnavailable().finish());
    }
    let token = cluster(req).token.as_deref()?;
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match presented {
        Some(t) if constant_time_eq::constant_time_eq(t.as_bytes(), token.as_bytes()) => None,
        _ => Some(
            HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .json(serde_json::json!({"error": "missing or invalid bearer token"})),
        ),
    }
}

fn bad(e: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({ "error": e.to_string() }))
}

fn answer<T: Serialize>(value: &T) -> HttpResponse {
    HttpResponse::Ok().json(value)
}

/// Authenticates, decodes the body as `Req`, hands it to Raft on its runtime, and answers
/// openraft's result as JSON.
async fn relay<Req, Resp, F, Fut>(req: HttpRequest, body: web::Bytes, call: F) -> HttpResponse
where
    Req: serde::de::DeserializeOwned + Send + 'static,
    F: FnOnce(super::Raft, Req) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    if let Some(r) = refused(&req) {
        return r;
    }
    let rpc: Req = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    // Straight to RaftCore's inbox from this thread: the call only sends a message and awaits
    // the answer, so a hop onto the Raft runtime would cost two thread wake-ups per RPC.
    answer(&call(cluster(&req).raft.clone(), rpc).await)
}

async fn append(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    relay(req, body, |raft, rpc| async move {
        raft.append_entries(rpc).await
    })
    .await
}

async fn vote(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    relay(req, body, |raft, rpc| async move { raft.vote(rpc).await }).await
}

async fn snapshot(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    relay(req, body, |raft, rpc: SnapshotIn| async move {
        let snapshot = Snapshot {
            meta: rpc.meta,
            snapshot: Box::new(rpc.image.get().as_bytes().to_vec()),
        };
        raft.install_full_snapshot(rpc.vote, snapshot).await
    })
    .await
}

/// The leader's answer to a follower's linearizable read: the index to wait for.
async fn read_index(req: HttpRequest) -> HttpResponse {
    if let Some(r) = refused(&req) {
        return r;
    }
    let c = Arc::clone(cluster(&req));
    let res: Result<u64, String> = match c.read_index_here().await {
        Ok(i) => Ok(i),
        Err(e) => Err(e.to_string()),
    };
    answer::<Result<u64, String>>(&res)
}
