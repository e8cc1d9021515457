//! `ApiError` and its one mapping to status codes and JSON bodies.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::store::WriteError;

/// Every way a request can fail, each with its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input: encoding, JSON, parameters, headers.
    #[error("{0}")]
    BadRequest(String),
    /// The bearer token is missing or wrong.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// No such key or route.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("method not allowed (allowed: {0})")]
    MethodNotAllowed(&'static str),
    /// An `If-Match` or `If-None-Match` condition did not hold. Holds the key's current
    /// version, sent as its `ETag` so a compare-and-set can retry without a GET; `None` when
    /// the key is absent (or not yet looked up).
    #[error("precondition failed: the key is not at the expected version")]
    PreconditionFailed(Option<u64>),
    /// A body over its limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A key over its limit.
    #[error("{0}")]
    UriTooLong(String),
    /// The client stopped sending a body it announced.
    #[error("{0}")]
    RequestTimeout(String),
    /// The request head (all headers together) is over its limit.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// A content type the route does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The events after a watch's `since` are no longer kept.
    #[error("{message}")]
    Gone {
        /// For a person.
        message: String,
        /// The smallest `since` still served.
        oldest_seq: u64,
        /// The current seq.
        seq: u64,
    },
    /// The write was applied but not made durable, writes are refused after a fault, a
    /// snapshot failed, or the store is stopping.
    #[error("{0}")]
    Unavailable(String),
    /// Cluster mode: a write (or a read that needs the leader) reached a follower. Holds the
    /// leader's API address; the server adds the request's path and query to the `Location`.
    #[error("this node is not the leader; the leader is at {0}")]
    NotLeader(std::sync::Arc<str>),
    /// Cluster mode: no leader is known (an election is under way, or no quorum): try again.
    #[error("{0}")]
    NoLeader(String),
    /// The request conflicts with the state (`POST /cluster/init` on a cluster that exists).
    #[error("{0}")]
    Conflict(String),
}

impl From<crate::cluster::ClusterError> for ApiError {
    fn from(e: crate::cluster::ClusterError) -> Self {
        use crate::cluster::ClusterError;
        match e {
            ClusterError::NotLeader(Some(addr)) => ApiError::NotLeader(addr),
            ClusterError::NotLeader(None) => {
                ApiError::NoLeader("no leader is known; try again shortly".into())
            }
            ClusterError::Unavailable(m) => ApiError::NoLeader(m),
            ClusterError::Invalid(m) => ApiError::Conflict(m),
            ClusterError::Stopped => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// The `Location` a redirect to the leader starts with; [`crate::http::observe`] appends the
/// request's path and query.
pub(crate) fn leader_location(addr: &str) -> String {
    format!("http://{addr}")
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            // The writer does not say the version it saw; handlers fill it in (`kv::write_error`).
            WriteError::PreconditionFailed => ApiError::PreconditionFailed(None),
            WriteError::NotFound => ApiError::NotFound("key not found".into()),
            WriteError::NotDurable(_)
            | WriteError::LogFailed(_)
            | WriteError::Halted(_)
            | WriteError::ShuttingDown => ApiError::Unavailable(crate::Chain(&e).to_string()),
            WriteError::NotLeader(Some(addr)) => ApiError::NotLeader(addr),
            WriteError::NotLeader(None) => {
                ApiError::NoLeader("no leader is known; try again shortly".into())
            }
            WriteError::Unconfirmed(_) => ApiError::NoLeader(crate::Chain(&e).to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::NotLeader(_) => StatusCode::TEMPORARY_REDIRECT,
            ApiError::NoLeader(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::MethodNotAllowed(allow) => {
                res.insert_header((header::ALLOW, *allow));
            }
            ApiError::NotLeader(addr) => {
                res.insert_header((header::LOCATION, leader_location(addr)));
            }
            ApiError::NoLeader(_) => {
                res.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::PreconditionFailed(Some(version)) => {
                res.insert_header((header::ETAG, format!("\"{version}\"")));
            }
            ApiError::Gone {
                oldest_seq, seq, ..
            } => {
                return res.json(serde_json::json!({
                    "error": self.to_string(),
                    "oldest_seq": oldest_seq,
                    "seq": seq,
                }));
            }
            _ => {}
        }
        res.json(serde_json::json!({ "error": self.to_string() }))
    }
}
