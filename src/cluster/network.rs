//! Raft RPCs between nodes: JSON over HTTP, each a `POST` to the peer's `--raft-addr`.
//!
//! `/raft/append`, `/raft/vote` and `/raft/snapshot` carry openraft's own messages;
//! `/raft/read-index` asks the leader for the index a linearizable read on a follower must wait
//! for. Each carries the API's bearer token when one is set. The client (`reqwest`) is async
//! and runs on the Raft runtime, where openraft's replication tasks call it: a call costs no
//! hand-over to another thread (a blocking client on the blocking pool cost two per call, the
//! largest part of a leader's Raft CPU under load), and openraft's futures must be `Send`,
//! which actix's client is not.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Snapshot, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Member, NodeId, TypeConfig};

/// The body of `/raft/snapshot`: the sender's vote, the snapshot's meta and the image itself.
#[derive(Serialize)]
pub struct SnapshotOut<'a> {
    /// The leader's vote.
    pub vote: Vote<NodeId>,
    /// The snapshot's meta.
    pub meta: &'a openraft::SnapshotMeta<NodeId, Member>,
    /// The image, inline.
    pub image: &'a RawValue,
}

/// `/raft/snapshot` as received.
#[derive(Deserialize)]
pub struct SnapshotIn {
    /// The leader's vote.
    pub vote: Vote<NodeId>,
    /// The snapshot's meta.
    pub meta: openraft::SnapshotMeta<NodeId, Member>,
    /// The image, inline.
    pub image: Box<RawValue>,
}

/// Why a call failed before a peer answered it.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: connection refused, timed out, or a status that is not ours.
    #[error("{0}")]
    Unreachable(String),
    /// An answer that is not the JSON expected.
    #[error("a malformed answer: {0}")]
    Malformed(String),
}

/// The test-only partition switch: in debug builds, while a file of this name exists in the
/// Raft dir, the node neither sends nor answers Raft RPCs, as if its links were cut. Release
/// builds never look.
pub const PARTITION_FILE: &str = "test-partition";

/// Whether the test switch cuts this node off (always `false` in release builds).
pub fn partitioned(switch: Option<&std::path::Path>) -> bool {
    cfg!(debug_assertions) && switch.is_some_and(|p| p.exists())
}

/// Makes a client per peer.
#[derive(Debug, Clone)]
pub struct Network {
    client: reqwest::Client,
    token: Option<Arc<str>>,
    switch: Option<Arc<std::path::Path>>,
}

impl Network {
    /// A network whose calls carry `token` (the API's bearer token) when set; `switch` is the
    /// path of the [`PARTITION_FILE`].
    pub fn new(token: Option<Arc<str>>, switch: Option<Arc<std::path::Path>>) -> Network {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            // Heartbeats, appends and read-index calls to one peer overlap: keep a connection
            // for each instead of reconnecting.
            .pool_max_idle_per_host(8)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .expect("an HTTP client without TLS builds");
        Network {
            client,
            token,
            switch,
        }
    }

    /// POSTs `body` to `http://{addr}{path}` and decodes the JSON answer. Call it on the Raft
    /// runtime (the client's connections live there).
    pub async fn call<T: DeserializeOwned + Send + 'static>(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<T, CallError> {
        if partitioned(self.switch.as_deref()) {
            return Err(CallError::Unreachable("partitioned (test switch)".into()));
        }
        let url = format!("http://{addr}{path}");
        let unreachable = |e: reqwest::Error| CallError::Unreachable(e.to_string());
        let mut req = self
            .client
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.map_err(unreachable)?;
        let status = res.status();
        if !status.is_success() {
            // Not one of openraft's answers (a 401, a peer cut off by the test switch).
            return Err(CallError::Unreachable(format!("status {status}")));
        }
        let bytes = res.bytes().await.map_err(unreachable)?;
        serde_json::from_slice(&bytes).map_err(|e| CallError::Malformed(e.to_string()))
    }
}

/// A client of one peer.
#[derive(Debug)]
pub struct Peer {
    net: Network,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Peer {
        Peer {
            net: self.clone(),
            target,
            addr: node.raft_addr.clone(),
        }
    }
}

fn unreachable<E: std::error::Error>(e: CallError) -> RPCError<NodeId, Member, E> {
    match e {
        CallError::Unreachable(m) => {
            RPCError::Unreachable(Unreachable::new(&CallError::Unreachable(m)))
        }
        CallError::Malformed(m) => RPCError::Network(NetworkError::new(&CallError::Malformed(m))),
    }
}

impl Peer {
    async fn rpc<Req: Serialize, Resp: DeserializeOwned + Send + 'static>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer: Result<Resp, RaftError<NodeId>> = self
            .net
            .call(&self.addr, path, body, option.hard_ttl())
            .await
            .map_err(unreachable)?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let fatal =
            |e: String| StreamingError::Network(NetworkError::new(&CallError::Malformed(e)));
        let text = std::str::from_utf8(&snapshot.snapshot).map_err(|e| fatal(e.to_string()))?;
        let image: &RawValue = serde_json::from_str(text).map_err(|e| fatal(e.to_string()))?;
        let body = serde_json::to_vec(&SnapshotOut {
            vote,
            meta: &snapshot.meta,
            image,
        })
        .map_err(|e| fatal(e.to_string()))?;
        let answer: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> = self
            .net
            .call(&self.addr, "/raft/snapshot", body, option.hard_ttl())
            .await
            .map_err(|e| match e {
                CallError::Unreachable(m) => {
                    StreamingError::Unreachable(Unreachable::new(&CallError::Unreachable(m)))
                }
                CallError::Malformed(m) => fatal(m),
            })?;
        answer.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}
