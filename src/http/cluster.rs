//! `/cluster`, `/cluster/init`, `/cluster/nodes`: a cluster node's status and membership.
//!
//! A standalone server answers each with 404 ("not in cluster mode").

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{decode, reader, state, ApiError};
use crate::cluster::{Cluster, Member};

fn cluster(req: &HttpRequest) -> Result<&std::sync::Arc<Cluster>, ApiError> {
    state(req).cluster.as_ref().ok_or_else(|| {
        ApiError::NotFound("not in cluster mode (start with --node-id and --raft-addr)".into())
    })
}

/// `GET /cluster`.
pub async fn status(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let c = cluster(&req)?;
    let seq = reader(&req).stats().seq;
    Ok(HttpResponse::Ok().json(c.status(seq)))
}

/// `POST /cluster/init`.
pub async fn init(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let c = cluster(&req)?;
    c.init().await?;
    Ok(HttpResponse::Ok().json(c.status(reader(&req).stats().seq)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNode {
    id: u64,
    addr: String,
    raft_addr: String,
}

/// `POST /cluster/nodes`.
pub async fn add(req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let c = cluster(&req)?;
    let node: NewNode = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be {{\"id\": n, \"addr\": \"IP:PORT\", \"raft_addr\": \"IP:PORT\"}}: {e}"
        ))
    })?;
    if node.id == 0 {
        return Err(ApiError::BadRequest("a node id is at least 1".into()));
    }
    for (what, a) in [("addr", &node.addr), ("raft_addr", &node.raft_addr)] {
        if a.parse::<std::net::SocketAddr>().is_err() {
            return Err(ApiError::BadRequest(format!("{what} must be IP:PORT")));
        }
    }
    c.add(
        node.id,
        Member {
            addr: node.addr,
            raft_addr: node.raft_addr,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(c.status(reader(&req).stats().seq)))
}

/// `DELETE /cluster/nodes/{id}`.
pub async fn remove(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let c = cluster(&req)?;
    let raw = req.match_info().get("id").unwrap_or_default();
    let id: u64 = decode::percent_decode(raw, false)
        .ok()
        .and_then(|s| decode::whole(&s))
        .filter(|i| *i >= 1)
        .ok_or_else(|| ApiError::BadRequest("a node id is a whole number, at least 1".into()))?;
    c.remove(id).await?;
    Ok(HttpResponse::Ok().json(c.status(reader(&req).stats().seq)))
}
