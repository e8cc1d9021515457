//! The HTTP layer: routes, shared app state, and the middleware that authenticates and counts.
//!
//! Handlers are thin: they decode the request, call the store (reads through the worker's own
//! [`Reader`], writes through the [`StoreHandle`]), and shape the reply. Every failure is an
//! [`ApiError`], turned into a status and a JSON body in one place (`error.rs`).

mod admin;
mod cluster;
pub(crate) mod decode;
mod error;
pub(crate) mod kv;
mod openapi;
mod watch;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, Resource, ResponseError};

pub use error::ApiError;

use arc_swap::ArcSwap;

use std::sync::atomic::AtomicU64;

use crate::config::Limits;
use crate::log::LogStats;
use crate::metrics::Metrics;
use crate::snapshot::SnapshotStatus;
use crate::store::{Durability, Faults, MarkWatch, Reader, StoreHandle};

/// The header on every `/kv` response: the seq of the state read, or after the write.
pub const SEQ_HEADER: &str = "twinkv-seq";

/// [`SEQ_HEADER`] as a header name, checked once at compile time rather than per answer.
const SEQ_NAME: header::HeaderName = header::HeaderName::from_static(SEQ_HEADER);

/// State shared by every worker.
#[derive(Debug)]
pub struct AppState {
    /// Sends writes to the writer thread.
    pub store: StoreHandle,
    /// The snapshot thread's latest report, for `/snapshot`, `/health` and `/metrics`.
    pub snapshot: Arc<ArcSwap<SnapshotStatus>>,
    /// Where `POST /snapshot` waits for its seq to be in a flushed image.
    pub snapshot_marks: MarkWatch,
    /// "Every write up to seq N survives power loss", and the log's last failure.
    pub log_marks: MarkWatch,
    /// Log bytes since the newest snapshot.
    pub log_bytes: Arc<AtomicU64>,
    /// The log's flush and byte counts.
    pub log_stats: Arc<LogStats>,
    /// Background threads that died: `/health` reports them.
    pub faults: Faults,
    /// Request counters and the rendering of `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Recent change events and the watchers.
    pub hub: Arc<crate::watch::Hub>,
    /// An idle watch stream gets a progress event this often.
    pub watch_progress: std::time::Duration,
    /// Request size limits.
    pub limits: Limits,
    /// The bearer token every request but `GET /health` and `GET /openapi.json` must carry, if
    /// set.
    pub auth_token: Option<String>,
    /// The durability mode, reported by `/health`.
    pub durability: Durability,
    /// Cluster mode: the Raft node (reads consult it; `/cluster` reports it).
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl AppState {
    /// The state of an HTTP server over `engine`.
    pub fn new(
        engine: &crate::engine::Engine,
        limits: Limits,
        auth_token: Option<String>,
        durability: Durability,
    ) -> AppState {
        AppState {
            store: engine.store.handle(),
            snapshot: engine.snapshot_status(),
            snapshot_marks: engine.snapshot_marks(),
            log_marks: engine.log_marks(),
            log_bytes: engine.log_bytes(),
            log_stats: engine.log_stats(),
            faults: engine.faults.clone(),
            metrics: Arc::clone(&engine.metrics),
            hub: Arc::clone(&engine.hub),
            watch_progress: std::time::Duration::from_millis(crate::defaults::WATCH_PROGRESS_MS),
            limits,
            auth_token,
            durability,
            cluster: None,
        }
    }
}

/// One path the router answers: the methods it takes, and how [`configure`] registers it.
///
/// [`ROUTES`] is the router's one list: `configure` registers exactly its entries, and the
/// OpenAPI test (`openapi.rs`) compares it with the document and probes every entry with every
/// method in-process, so a route added here without being documented, or documented without
/// being routed, fails `cargo test`.
#[derive(Debug)]
pub(crate) struct Route {
    /// The path as the OpenAPI document writes it (`{key}` for a path parameter).
    pub(crate) path: &'static str,
    /// The methods it answers, as a 405 lists them in `Allow`.
    pub(crate) allow: &'static str,
    /// Adds the handlers to the resource; `None` for `/kv/{key}`, which [`key`] serves by
    /// prefix.
    handlers: Option<fn(Resource) -> Resource>,
}

/// `/kv/{key}`, served by [`key`].
const KEY_ROUTE: Route = Route {
    path: "/kv/{key}",
    allow: "GET, HEAD, PUT, POST, DELETE",
    handlers: None,
};

/// Every route, in the order `configure` registers them.
///
/// Every route that answers GET answers HEAD too, with the same handler (RFC 9110 §9.1): actix
/// sends a HEAD answer's headers, `Content-Length` included, and drops its body.
pub(crate) const ROUTES: &[Route] = &[
    Route {
        path: "/kv",
        allow: "GET, HEAD, POST",
        handlers: Some(|r| {
            r.route(web::get().to(kv::list))
                .route(web::head().to(kv::list))
                .route(web::post().to(kv::batch))
        }),
    },
    // Second, right after `/kv`: the router tries resources in order, and a key read should
    // not pay for matching every other route first.
    KEY_ROUTE,
    Route {
        path: "/health",
        allow: "GET, HEAD",
        handlers: Some(|r| {
            r.route(web::get().to(admin::health))
                .route(web::head().to(admin::health))
        }),
    },
    Route {
        path: "/metrics",
        allow: "GET, HEAD",
        handlers: Some(|r| {
            r.route(web::get().to(admin::metrics))
                .route(web::head().to(admin::metrics))
        }),
    },
    Route {
        path: "/snapshot",
        allow: "GET, HEAD, POST",
        handlers: Some(|r| {
            r.route(web::get().to(admin::snapshot_status))
                .route(web::head().to(admin::snapshot_status))
                .route(web::post().to(admin::snapshot_now))
        }),
    },
    Route {
        path: "/cluster",
        allow: "GET, HEAD",
        handlers: Some(|r| {
            r.route(web::get().to(cluster::status))
                .route(web::head().to(cluster::status))
        }),
    },
    Route {
        path: "/cluster/init",
        allow: "POST",
        handlers: Some(|r| r.route(web::post().to(cluster::init))),
    },
    Route {
        path: "/cluster/nodes",
        allow: "POST",
        handlers: Some(|r| r.route(web::post().to(cluster::add))),
    },
    Route {
        path: "/cluster/nodes/{id}",
        allow: "DELETE",
        handlers: Some(|r| r.route(web::delete().to(cluster::remove))),
    },
    Route {
        path: "/watch",
        allow: "GET, HEAD",
        handlers: Some(|r| {
            r.route(web::get().to(watch::watch))
                .route(web::head().to(watch::watch))
        }),
    },
    Route {
        path: "/openapi.json",
        allow: "GET, HEAD",
        handlers: Some(|r| {
            r.route(web::get().to(openapi::document))
                .route(web::head().to(openapi::document))
        }),
    },
];

/// Registers every route of [`ROUTES`], and nothing else. The server and in-process tests
/// share it.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for route in ROUTES {
        let Some(handlers) = route.handlers else {
            cfg.service(KeyPrefix);
            continue;
        };
        let allow = route.allow;
        cfg.service(
            handlers(web::resource(route.path))
                .default_service(web::to(move || not_allowed(allow))),
        );
    }
    cfg.default_service(web::to(|| async {
        Err::<(), _>(ApiError::NotFound("no such route".into()))
    }));
}

/// `/kv/{key}` as one prefix match on `/kv` (which the `/kv` resource, registered before it,
/// has already taken exactly), so the key is read from the path as it stands.
///
/// As a resource, `/kv/{key:.*}` is a regex match on every request (16 % of a GET's server
/// time in a profile); as the default service, a key request was matched against every other
/// route first (the regex of `/cluster/nodes/{id}` among them: 10 % of a pipelined GET's
/// instructions under callgrind).
struct KeyPrefix;

impl actix_web::dev::HttpServiceFactory for KeyPrefix {
    fn register(self, config: &mut actix_web::dev::AppService) {
        config.register_service(
            actix_web::dev::ResourceDef::prefix("/kv"),
            None,
            web::to(key),
            None,
        );
    }
}

/// `/kv/{key}` by method.
async fn key(req: HttpRequest, payload: web::Payload) -> Result<actix_web::HttpResponse, ApiError> {
    match *req.method() {
        Method::GET | Method::HEAD => kv::get(req).await,
        Method::PUT => kv::put(req, payload).await,
        Method::POST => kv::post_form(req, payload).await,
        Method::DELETE => kv::delete(req).await,
        _ => Err(ApiError::MethodNotAllowed(KEY_ROUTE.allow)),
    }
}

async fn not_allowed(allow: &'static str) -> Result<(), ApiError> {
    Err(ApiError::MethodNotAllowed(allow))
}

/// Largest total of request header bytes accepted (names, values, separators), like the 32 KiB
/// of large header buffers nginx allows; actix's own ceiling is its 128 KiB read buffer.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// The `Cache-Control` of every answer to `path`, unless its handler set one.
///
/// Without one, a cache may store a `200` (or a `404`, `405`) and reuse it for as long as its
/// own heuristic says (RFC 9111 §4.2.2), so a key written since would be read stale (REDbot:
/// "allows caches to assign their own freshness lifetimes"). A key changes under the same URL,
/// as the document does on an upgrade, and both carry an `ETag`: `no-cache` lets a cache keep
/// them only to revalidate, which costs a 304. Everything else has no validator, so a cache
/// that kept it would have to fetch it whole anyway (REDbot: "cannot be served from cache
/// without validation, and doesn't have a validator"): listings, `/health`, `/metrics` and
/// `/snapshot` (the live state), 401s and unknown routes get `no-store`.
fn cache_control(path: &str) -> header::HeaderValue {
    if path.starts_with("/kv/") || path == "/openapi.json" {
        header::HeaderValue::from_static("no-cache")
    } else {
        header::HeaderValue::from_static("no-store")
    }
}

/// Refuses oversized heads, authenticates (when a token is set), sets the cache policy and
/// counts every request by method and status.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
        .clone();
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let cache = cache_control(req.path());
    let head: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if head > MAX_HEAD_BYTES {
        let mut res = ApiError::HeadersTooLarge(format!(
            "the request headers total {head} bytes; the limit is {MAX_HEAD_BYTES}"
        ))
        .error_response();
        res.headers_mut().insert(header::CACHE_CONTROL, cache);
        state
            .metrics
            .record_request(method.as_str(), res.status().as_u16(), started.elapsed());
        return Ok(req.into_response(res).map_into_right_body());
    }
    if let Some(token) = &state.auth_token {
        // `/health` for probes, `/openapi.json` for tools that read the document first.
        let open = matches!(req.path(), "/health" | "/openapi.json")
            && (method == Method::GET || method == Method::HEAD);
        if !open && !bearer_matches(req.headers().get(header::AUTHORIZATION), token) {
            let mut res = ApiError::Unauthorized.error_response();
            res.headers_mut().insert(header::CACHE_CONTROL, cache);
            state
                .metrics
                .record_request(method.as_str(), res.status().as_u16(), started.elapsed());
            return Ok(req.into_response(res).map_into_right_body());
        }
    }
    let kv = req.path() == "/kv" || req.path().starts_with("/kv/");
    let mut res = next.call(req).await;
    if let Ok(r) = &mut res {
        if !r.headers().contains_key(header::CACHE_CONTROL) {
            r.headers_mut().insert(header::CACHE_CONTROL, cache);
        }
        if r.status() == actix_web::http::StatusCode::TEMPORARY_REDIRECT {
            // A follower's redirect names the leader; the path and query stay the request's.
            let target = r
                .request()
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned());
            let base = r
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let (Some(base), Some(target)) = (base, target) {
                if let Ok(v) = header::HeaderValue::from_str(&format!("{base}{target}")) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
            }
        }
    }
    if let (true, Ok(r)) = (kv, &mut res) {
        // Handlers set the exact seq where they know it; any other `/kv` answer (a bad key, a
        // refused write) carries the seq of the state it was refused against.
        if !r.headers().contains_key(SEQ_NAME) {
            if let Some(reader) = r.request().app_data::<Reader>() {
                let seq = reader.stats().seq;
                r.headers_mut().insert(SEQ_NAME, seq_value(seq));
            }
        }
    }
    let status = match &res {
        Ok(r) => r.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    state
        .metrics
        .record_request(method.as_str(), status.as_u16(), started.elapsed());
    res.map(ServiceResponse::map_into_left_body)
}

thread_local! {
    /// The `Twinkv-Seq` value last sent by this worker: between writes every answer carries the
    /// same seq, so it is formatted once and shared (a clone is a reference count), rather
    /// than allocated per answer (2 % of a pipelined GET's server time in a profile).
    static SEQ_VALUE: std::cell::RefCell<(u64, header::HeaderValue)> =
        const { std::cell::RefCell::new((0, header::HeaderValue::from_static("0"))) };
}

/// The `Twinkv-Seq` header value of `seq`.
fn seq_value(seq: u64) -> header::HeaderValue {
    SEQ_VALUE.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != seq {
            *last = (seq, header::HeaderValue::from(seq));
        }
        last.1.clone()
    })
}

/// Compares the presented token in constant time, so response timing does not leak a prefix.
///
/// The scheme name is matched without regard to case (`Bearer`, `bearer`, `BEARER`), as RFC
/// 9110 §11.1 has it; the token itself is compared exactly.
fn bearer_matches(value: Option<&header::HeaderValue>, token: &str) -> bool {
    let Some((scheme, presented)) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
    else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq::constant_time_eq(presented.trim().as_bytes(), token.as_bytes())
}

/// The calling worker's reader, registered per worker by the server's app factory.
fn reader(req: &HttpRequest) -> &Reader {
    req.app_data::<Reader>()
        .expect("each worker registers its own Reader")
}

/// The shared state.
fn state(req: &HttpRequest) -> &AppState {
    req.app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
}
