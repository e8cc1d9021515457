//! Cluster mode: several nodes replicate one map through Raft, on `openraft` 0.9.
//!
//! Every openraft type lives in this module. The store knows none of them: its writer hands
//! each drained batch to a [`Proposer`] (here, one Raft entry per batch) and applies what comes
//! back committed, through the same pure apply as a standalone write, on every node alike.
//!
//! ```text
//!  HTTP write ─▶ writer: drain a batch ─▶ RaftProposer ─▶ raft.client_write_ff(entry)
//!                                                         │ replicate to a majority (log_store)
//!  every node: StateMachine::apply ─▶ writer: apply, publish ◀┘ then the proposer answers the
//!                                                              batch's replies with outcomes
//! ```
//!
//! Raft runs on a tokio runtime of its own (openraft's futures are `Send`; actix's are not);
//! HTTP handlers reach it through [`Cluster::run`].

mod log_store;
mod network;
pub mod rpc;
mod state_machine;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, ServerState};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::log::record::{self, RecordError};
use crate::store::{Logged, Outcome, Proposer, Settled, StoreHandle, Write, WriteError, Written};

pub use log_store::LogStore;
pub use state_machine::{Images, RaftState};

/// The directory, inside the data dir, of the Raft log, vote and snapshot.
pub const DIR: &str = "raft";

/// A node's id (`--node-id`).
pub type NodeId = u64;

/// What the cluster knows of a node: where its API and its Raft listener are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The API address (`--addr`), where followers redirect writes.
    pub addr: String,
    /// The Raft address (`--raft-addr`).
    pub raft_addr: String,
}

/// One Raft entry's payload: the writes of one drained batch, as the leader's writer drained
/// them. `writes` is the JSON array a log record holds (`record::encode_writes`), kept raw: the
/// log store copies it into the entry's Raft record as it stands, and AppendEntries carries it
/// between nodes as it stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RawProposal")]
pub struct Proposal {
    /// The leader writer's clock when it drained the batch (ms since the epoch): what every
    /// replica's apply uses as `now`.
    pub now: u64,
    /// The writes, one compact JSON array.
    pub writes: Box<RawValue>,
}

/// A proposal as it arrives from a peer, before the one check its Raft record needs.
#[derive(Deserialize)]
struct RawProposal {
    now: u64,
    writes: Box<RawValue>,
}

impl TryFrom<RawProposal> for Proposal {
    type Error = String;

    /// Refuses a `writes` that is not one line: the log store writes it into a record line as
    /// it stands, and a newline there would split the record (every node encodes it compact;
    /// only a broken peer sends one).
    fn try_from(raw: RawProposal) -> Result<Proposal, String> {
        if raw.writes.get().contains(['\n', '\r']) {
            return Err("a proposal whose writes span lines".into());
        }
        Ok(Proposal {
            now: raw.now,
            writes: raw.writes,
        })
    }
}

impl Proposal {
    fn encode(now: u64, writes: &[Logged]) -> Proposal {
        let mut array = Vec::new();
        record::encode_writes(&mut array, writes);
        let text = String::from_utf8(array).expect("a log record is UTF-8");
        Proposal {
            now,
            writes: RawValue::from_string(text).expect("a writes array is one JSON value"),
        }
    }

    /// The batch's clock and writes.
    fn decode(&self) -> Result<(u64, Vec<Write>), RecordError> {
        let writes = record::decode_writes(self.writes.get().as_bytes())?;
        Ok((self.now, writes))
    }
}

openraft::declare_raft_types!(
    /// twinkv's Raft types.
    pub TypeConfig:
        D = Proposal,
        R = Vec<Outcome>,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = Vec<u8>,
);

/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
type Raft = openraft::Raft<TypeConfig>;

/// Why a cluster operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// This node does not lead; the leader's API address, when one is known.
    #[error("this node is not the leader")]
    NotLeader(Option<Arc<str>>),
    /// The operation did not complete in time (no quorum, an election under way).
    #[error("{0}")]
    Unavailable(String),
    /// The request makes no sense for the cluster as it is.
    #[error("{0}")]
    Invalid(String),
    /// The Raft runtime is gone (shutting down).
    #[error("the Raft runtime has stopped")]
    Stopped,
}

/// The settings of cluster mode.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's id.
    pub id: NodeId,
    /// This node's addresses, as peers reach it.
    pub me: Member,
    /// The API's bearer token: Raft RPCs carry it and require it.
    pub token: Option<Arc<str>>,
    /// A Raft snapshot every this many entries.
    pub snapshot_entries: u64,
    /// A Raft snapshot, too, once the log since the last one holds this many bytes and at
    /// least as many as its image (`--checkpoint-log-bytes`, as standalone).
    pub checkpoint_log_bytes: u64,
}

/// What opening the Raft dir leaves for [`Cluster::start`], once the store runs.
#[derive(Debug)]
pub struct Seed {
    /// The Raft state of the image the store starts from.
    state: RaftState,
    log: LogStore,
    proposals: mpsc::UnboundedReceiver<Batch>,
    leads: Arc<AtomicBool>,
}

impl Seed {
    /// The Raft log store (a handle to it), for the snapshot thread's compaction hook.
    pub fn log(&self) -> LogStore {
        self.log.clone()
    }
}

/// A batch on its way from the writer to Raft.
struct Batch {
    proposal: Proposal,
    replies: Vec<crate::store::Reply>,
    /// Dropped once the entry is applied or refused: the writer then proposes what it held.
    settled: Settled,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("writes", &self.replies.len())
            .finish()
    }
}

/// The writer's end: hands batches to the Raft runtime.
#[derive(Debug)]
struct RaftProposer {
    tx: mpsc::UnboundedSender<Batch>,
    leads: Arc<AtomicBool>,
}

impl Proposer for RaftProposer {
    fn leads(&self) -> bool {
        self.leads.load(Ordering::Relaxed)
    }

    fn propose(
        &mut self,
        now: u64,
        writes: Vec<Logged>,
        replies: Vec<crate::store::Reply>,
        settled: Settled,
    ) {
        let batch = Batch {
            proposal: Proposal::encode(now, &writes),
            replies,
            settled,
        };
        if let Err(mpsc::error::SendError(batch)) = self.tx.send(batch) {
            for r in batch.replies {
                let _ = r.send(Err(WriteError::ShuttingDown));
            }
        }
    }
}

/// Opens the Raft log (`log/`, segments rolled at `segment_bytes`) and the vote (`raft/`) in
/// `data_dir`, for a store that starts from the image whose Raft state is `tag` (its `raft`
/// field; `None`: an empty store). Returns the proposer the writer sends batches to, and the
/// rest for [`Cluster::start`].
pub fn open(
    data_dir: &Path,
    flush: bool,
    segment_bytes: u64,
    tag: Option<&str>,
) -> std::io::Result<(Box<dyn Proposer>, Seed)> {
    let state = match tag {
        Some(t) => RaftState::parse(t).map_err(|e| {
            std::io::Error::other(format!("the snapshot's raft field is not valid: {e}"))
        })?,
        None => RaftState::default(),
    };
    let image = tag.and(state.last_log_id);
    let log = LogStore::open_from(data_dir, flush, segment_bytes, image)?;
    let (tx, proposals) = mpsc::unbounded_channel();
    let leads = Arc::new(AtomicBool::new(false));
    let proposer = Box::new(RaftProposer {
        tx,
        leads: Arc::clone(&leads),
    });
    Ok((
        proposer,
        Seed {
            state,
            log,
            proposals,
            leads,
        },
    ))
}

/// `inspect`'s Raft section of a data dir (`None`: not a cluster node's). Reads only.
pub fn inspect(data_dir: &Path) -> Option<serde_json::Value> {
    let dir = data_dir.join(DIR);
    if !dir.is_dir() {
        return None;
    }
    let read = |name: &str| std::fs::read(dir.join(name)).ok();
    let log = log_store::survey(data_dir);
    let vote: Option<serde_json::Value> = read(log_store::VOTE_FILE)
        .and_then(|b| serde_json::from_slice::<openraft::Vote<NodeId>>(&b).ok())
        .map(|v| serde_json::json!({"term": v.leader_id.term, "node": v.leader_id.node_id, "committed": v.committed}));
    // The image a start would load: the newest valid slot, whose `raft` field is its Raft state.
    let newest =
        crate::snapshot::recover::Scan::dir(data_dir, crate::snapshot::recover::Depth::Newest)
            .map_err(|e| e.to_string())
            .and_then(|mut scan| scan.take_recovery().map_err(|e| e.to_string()));
    let snapshot = match newest {
        Ok(Some((path, _, image))) => match image.raft.as_deref().map(RaftState::parse) {
            Some(Ok(state)) => serde_json::json!({
                "path": path,
                "last_log_index": state.last_log_id.map(|l| l.index),
                "last_log_term": state.last_log_id.map(|l| l.leader_id.term),
                "members": state.last_membership.membership().nodes().map(|(id, n)| serde_json::json!({"id": id, "addr": n.addr, "raft_addr": n.raft_addr})).collect::<Vec<_>>(),
                "seq": image.seq,
                "keys": image.entries.len(),
            }),
            Some(Err(e)) => {
                serde_json::json!({"path": path, "error": format!("its raft field is not valid: {e}")})
            }
            None => {
                serde_json::json!({"path": path, "error": "it has no raft field (written by a standalone server)"})
            }
        },
        Ok(None) => serde_json::Value::Null,
        Err(e) => serde_json::json!({"error": e}),
    };
    Some(serde_json::json!({
        "log": {
            "path": log.path,
            "entries": log.entries,
            "first_index": log.first,
            "last_index": log.last,
            "purged_through": log.purged,
            "torn_tail_bytes": log.torn_bytes,
            "error": log.error,
        },
        "vote": vote,
        "snapshot": snapshot,
    }))
}

/// A running cluster node.
pub struct Cluster {
    /// This node's id.
    pub id: NodeId,
    /// This node's addresses.
    pub me: Member,
    pub(crate) token: Option<Arc<str>>,
    raft: Raft,
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    net: network::Network,
    log: LogStore,
    switch: Arc<Path>,
    reads: std::sync::Mutex<Rounds>,
    /// What `lease` counts from.
    epoch: std::time::Instant,
    /// Until when (ns after `epoch`; 0: not) this leader may answer a linearizable read
    /// without a round (see [`LEASE`]). Atomics, so a read takes no lock.
    lease: Arc<AtomicU64>,
    /// The applied index openraft last reported (at most the true one: a read that sees it
    /// far enough need not wait).
    applied: Arc<AtomicU64>,
}

/// Linearizable reads waiting for a read index: all that arrive while one round is out share
/// the next, so a burst of reads costs one quorum round, not one each.
#[derive(Debug, Default)]
struct Rounds {
    running: bool,
    waiting: Vec<tokio::sync::oneshot::Sender<Result<u64, ClusterError>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// What openraft's membership calls fail with.
type MembershipError = RaftError<NodeId, ClientWriteError<NodeId, Member>>;

/// The leader's read lease, counted from the send time of the last heartbeat a majority
/// acknowledged. A follower refuses to vote for another leader for `election_timeout_max`
/// (1 s) after it last heard from this one (openraft's leader lease), so for this much shorter
/// time no other leader can have answered a write, and this leader, which answers a write only
/// once it has applied it, can read its own copy without a ReadIndex round.
const LEASE: Duration = Duration::from_millis(250);

/// How long adding or removing a node may take (a learner catches up first).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a linearizable read may wait for its round and its apply, and a write for a
/// majority to confirm it.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// The Raft timing: heartbeats every 100 ms, an election after 0.5–1 s without one; a snapshot
/// every `snapshot_entries` entries, keeping up to 1 000 entries before it for followers that
/// lag a little (one that lags more receives the image).
fn config(snapshot_entries: u64) -> Config {
    Config {
        cluster_name: "twinkv".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        install_snapshot_timeout: 60_000,
        max_payload_entries: 64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_entries),
        max_in_snapshot_log_to_keep: (snapshot_entries / 2).min(1_000),
        ..Config::default()
    }
}

impl Cluster {
    /// Starts Raft over `seed`, applying through `store`; its snapshots are the snapshot
    /// thread's `images`.
    pub fn start(
        settings: Settings,
        data_dir: &Path,
        seed: Seed,
        store: StoreHandle,
        images: Images,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("twinkv-raft")
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        let handle = rt.handle().clone();
        let switch: Arc<Path> = Arc::from(data_dir.join(DIR).join(network::PARTITION_FILE));
        let net = network::Network::new(settings.token.clone(), Some(Arc::clone(&switch)));
        let sm = state_machine::StateMachine::new(store, images.clone(), seed.state);
        let log = seed.log.clone();
        let config = Arc::new(
            config(settings.snapshot_entries)
                .validate()
                .map_err(|e| ClusterError::Invalid(e.to_string()))?,
        );
        let raft = rt
            .block_on(Raft::new(settings.id, config, net.clone(), seed.log, sm))
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        // Who leads (for the writer's expiry) and the leader's read lease, followed from
        // openraft's metrics, which it reports at every quorum acknowledgement.
        let mut metrics = raft.metrics();
        let leads = seed.leads;
        let id = settings.id;
        let epoch = std::time::Instant::now();
        let lease = Arc::new(AtomicU64::new(0));
        let applied = Arc::new(AtomicU64::new(0));
        let (lease_w, applied_w) = (Arc::clone(&lease), Arc::clone(&applied));
        rt.spawn(async move {
            loop {
                let (leader, until, index) = {
                    let m = metrics.borrow();
                    let leader = m.current_leader == Some(id) && m.state == ServerState::Leader;
                    // Nanoseconds since `epoch`; 0: no lease.
                    let until = match m.millis_since_quorum_ack {
                        Some(ms) if leader && ms < LEASE.as_millis() as u64 => {
                            (epoch.elapsed() + LEASE - Duration::from_millis(ms)).as_nanos() as u64
                        }
                        _ => 0,
                    };
                    (leader, until, m.last_applied.map_or(0, |l| l.index))
                };
                leads.store(leader, Ordering::Relaxed);
                lease_w.store(until, Ordering::Relaxed);
                applied_w.store(index, Ordering::Release);
                if metrics.changed().await.is_err() {
                    break;
                }
            }
        });
        rt.spawn(propose(raft.clone(), seed.proposals));
        rt.spawn(snapshot_by_size(
            raft.clone(),
            Arc::clone(&log.written),
            images,
            settings.checkpoint_log_bytes,
        ));
        Ok(Arc::new(Cluster {
            id: settings.id,
            me: settings.me,
            token: settings.token,
            raft,
            rt: Some(rt),
            handle,
            net,
            log,
            switch,
            reads: Default::default(),
            epoch,
            lease,
            applied,
        }))
    }

    /// Runs `f` on the Raft runtime; `None` when it has stopped.
    pub async fn run<F, Fut, T>(&self, f: F) -> Option<T>
    where
        F: FnOnce(Raft) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.handle.spawn(f(self.raft.clone())).await.ok()
    }

    /// Whether the test-only partition switch cuts this node off (debug builds).
    pub(crate) fn partitioned(&self) -> bool {
        network::partitioned(Some(&self.switch))
    }

    /// The leader's id and API address, as this node knows them.
    fn leader(&self) -> Option<(NodeId, Member)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    fn not_leader(&self) -> ClusterError {
        ClusterError::NotLeader(self.leader().map(|(_, m)| Arc::from(m.addr)))
    }

    /// As leader: confirms leadership with a quorum and returns the index a linearizable read
    /// must see applied.
    pub async fn read_index_here(&self) -> Result<u64, ClusterError> {
        let res =
            self.run(|raft| async move {
                tokio::time::timeout(OP_TIMEOUT, raft.get_read_log_id()).await
            })
            .await
            .ok_or(ClusterError::Stopped)?;
        match res {
            Err(_) => Err(ClusterError::Unavailable(
                "the leader could not confirm its leadership in time".into(),
            )),
            Ok(Ok((read, _))) => Ok(read.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(_))) => Err(self.not_leader()),
            Ok(Err(e)) => Err(ClusterError::Unavailable(e.to_string())),
        }
    }

    /// The index a linearizable read must see applied: the leader's commit index, confirmed
    /// with a quorum, asked of the leader when this node follows.
    async fn fetch_read_index(&self) -> Result<u64, ClusterError> {
        match self.leader() {
            Some((id, _)) if id == self.id => self.read_index_here().await,
            Some((_, leader)) => {
                let net = self.net.clone();
                let answer: Result<u64, String> = self
                    .run(move |_| async move {
                        net.call(
                            &leader.raft_addr,
                            "/raft/read-index",
                            Vec::new(),
                            OP_TIMEOUT,
                        )
                        .await
                    })
                    .await
                    .ok_or(ClusterError::Stopped)?
                    .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
                answer.map_err(ClusterError::Unavailable)
            }
            None => Err(ClusterError::NotLeader(None)),
        }
    }

    /// Waits until this node's map reflects every write answered before the call: the leader's
    /// commit index, confirmed with a quorum, applied here. Concurrent calls share rounds.
    pub async fn linearize(self: &Arc<Self>) -> Result<(), ClusterError> {
        let until = self.lease.load(Ordering::Relaxed);
        if until != 0 && (self.epoch.elapsed().as_nanos() as u64) < until {
            // Entries a former leader committed may not be applied here yet: wait for them.
            let committed = self.log.committed.load(Ordering::Relaxed);
            return self.wait_applied(committed).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut r = self.reads.lock().expect("read rounds lock");
            r.waiting.push(tx);
            !std::mem::replace(&mut r.running, true)
        };
        if start {
            let me = Arc::clone(self);
            self.handle.spawn(async move {
                loop {
                    // Everyone waiting now arrived before this round asks: it serves them all.
                    let batch = {
                        let mut r = me.reads.lock().expect("read rounds lock");
                        if r.waiting.is_empty() {
                            r.running = false;
                            break;
                        }
                        std::mem::take(&mut r.waiting)
                    };
                    let answer = me.fetch_read_index().await;
                    for tx in batch {
                        let _ = tx.send(answer.clone());
                    }
                }
            });
        }
        let index = rx.await.map_err(|_| ClusterError::Stopped)??;
        self.wait_applied(index).await
    }

    /// Waits until this node has applied `index`.
    async fn wait_applied(&self, index: u64) -> Result<(), ClusterError> {
        if self.applied.load(Ordering::Acquire) >= index {
            return Ok(());
        }
        let waited = self
            .run(move |raft| async move {
                raft.wait(Some(OP_TIMEOUT))
                    .applied_index_at_least(Some(index), "linearizable read")
                    .await
                    .is_ok()
            })
            .await
            .ok_or(ClusterError::Stopped)?;
        if waited {
            Ok(())
        } else {
            Err(ClusterError::Unavailable(
                "this node did not catch up with the leader in time".into(),
            ))
        }
    }

    /// `POST /cluster/init`: a cluster of this node alone.
    pub async fn init(&self) -> Result<(), ClusterError> {
        let (id, me) = (self.id, self.me.clone());
        let res = self
            .run(move |raft| async move {
                raft.initialize(std::collections::BTreeMap::from([(id, me)]))
                    .await
            })
            .await
            .ok_or(ClusterError::Stopped)?;
        res.map_err(|e| ClusterError::Invalid(e.to_string()))
    }

    /// `POST /cluster/nodes`: adds a node as a learner, waits for it to catch up, then makes it
    /// a voter (joint consensus). Answers once it votes.
    pub async fn add(&self, id: NodeId, node: Member) -> Result<(), ClusterError> {
        self.change_members(move |raft| async move {
            raft.add_learner(id, node, true).await?;
            let voters: BTreeSet<NodeId> = [id].into();
            raft.change_membership(ChangeMembers::AddVoterIds(voters), false)
                .await
                .map(|_| ())
        })
        .await
    }

    /// `DELETE /cluster/nodes/{id}`: removes a node from the voters and the members.
    pub async fn remove(&self, id: NodeId) -> Result<(), ClusterError> {
        self.change_members(move |raft| async move {
            let ids: BTreeSet<NodeId> = [id].into();
            raft.change_membership(ChangeMembers::RemoveVoters(ids.clone()), false)
                .await?;
            raft.change_membership(ChangeMembers::RemoveNodes(ids), false)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Runs a membership change on the Raft runtime, bounded by [`MEMBERSHIP_TIMEOUT`].
    async fn change_members<F, Fut>(&self, change: F) -> Result<(), ClusterError>
    where
        F: FnOnce(Raft) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), MembershipError>> + Send + 'static,
    {
        let res =
            self.run(move |raft| async move {
                tokio::time::timeout(MEMBERSHIP_TIMEOUT, change(raft)).await
            })
            .await
            .ok_or(ClusterError::Stopped)?;
        let Ok(res) = res else {
            return Err(ClusterError::Unavailable(format!(
                "the membership change did not complete within {} s (is the node reachable?)",
                MEMBERSHIP_TIMEOUT.as_secs()
            )));
        };
        match res {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(
                ClusterError::NotLeader(f.leader_node.map(|n| Arc::from(n.addr))),
            ),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(ClusterError::Invalid(e.to_string()))
            }
            Err(e) => Err(ClusterError::Unavailable(e.to_string())),
        }
    }

    /// `GET /cluster`.
    pub fn status(&self, seq: u64) -> serde_json::Value {
        let m = self.raft.metrics().borrow().clone();
        let state = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner | ServerState::Shutdown => "learner",
        };
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: Vec<serde_json::Value> = membership
            .nodes()
            .map(|(id, n)| {
                serde_json::json!({
                    "id": id,
                    "addr": n.addr,
                    "raft_addr": n.raft_addr,
                    "voter": voters.contains(id),
                })
            })
            .collect();
        let applied = m.last_applied.map_or(0, |l| l.index);
        let committed = self.log.committed.load(Ordering::Relaxed).max(applied);
        serde_json::json!({
            "id": self.id,
            "state": state,
            "leader": m.current_leader,
            "term": m.current_term,
            "members": members,
            "commit_index": committed,
            "applied_index": applied,
            "seq": seq,
        })
    }

    /// Stops Raft and its runtime.
    pub fn shutdown(&self) {
        let raft = self.raft.clone();
        let _ = self.handle.block_on(async move {
            tokio::time::timeout(Duration::from_secs(5), raft.shutdown()).await
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Not `shutdown_timeout`: the last handle may go inside actix's runtime.
            rt.shutdown_background();
        }
    }
}

/// Hands each batch to Raft in the order the writer drained them, then answers its replies
/// once the entry is committed and applied (or refused).
/// How often [`snapshot_by_size`] looks at the log's size.
const SIZE_CHECK: Duration = Duration::from_millis(500);

/// Asks openraft for a snapshot once the log since the last one holds `limit` bytes and at
/// least as many as the newest image, as a standalone server checkpoints: openraft counts only
/// entries, and one entry is a whole batch, so a count alone would let the log grow without a
/// bound in bytes. Also reports those bytes as the log's bytes since the newest image
/// (`/snapshot`, `/metrics`).
async fn snapshot_by_size(raft: Raft, written: Arc<AtomicU64>, images: Images, limit: u64) {
    let mut snapshot = raft.metrics().borrow().snapshot;
    let mut mark = written.load(Ordering::Relaxed);
    let mut asked = false;
    loop {
        tokio::time::sleep(SIZE_CHECK).await;
        let now = raft.metrics().borrow().snapshot;
        if now != snapshot {
            // A snapshot was built or installed: the log before it is purged (less a margin).
            snapshot = now;
            mark = written.load(Ordering::Relaxed);
            asked = false;
        }
        let since = written.load(Ordering::Relaxed).saturating_sub(mark);
        images.log_bytes.store(since, Ordering::Relaxed);
        if !asked && since >= limit && since >= images.status.load().bytes {
            asked = true;
            if raft.trigger().snapshot().await.is_err() {
                return; // Raft has stopped.
            }
        }
    }
}

async fn propose(raft: Raft, mut proposals: mpsc::UnboundedReceiver<Batch>) {
    while let Some(Batch {
        proposal,
        replies,
        settled,
    }) = proposals.recv().await
    {
        let rx = match raft.client_write_ff(proposal).await {
            Ok(rx) => rx,
            Err(e) => {
                let msg: Arc<str> = Arc::from(e.to_string());
                for r in replies {
                    let _ = r.send(Err(WriteError::Unconfirmed(Arc::clone(&msg))));
                }
                continue;
            }
        };
        tokio::spawn(async move {
            let _settled = settled;
            // A leader cut off from its majority does not learn it has lost: without a bound,
            // its clients would wait forever.
            let Ok(answered) = tokio::time::timeout(OP_TIMEOUT, rx).await else {
                let msg: Arc<str> = Arc::from(format!(
                    "no majority confirmed the write within {} s",
                    OP_TIMEOUT.as_secs()
                ));
                for r in replies {
                    let _ = r.send(Err(WriteError::Unconfirmed(Arc::clone(&msg))));
                }
                return;
            };
            let answer = match answered {
                Ok(Ok(resp)) => Ok(resp.data),
                Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(WriteError::NotLeader(
                    f.leader_node.map(|n| Arc::from(n.addr)),
                )),
                Ok(Err(e)) => Err(WriteError::Unconfirmed(Arc::from(e.to_string()))),
                Err(_) => Err(WriteError::Unconfirmed(Arc::from(
                    "leadership changed before the write was committed",
                ))),
            };
            match answer {
                Ok(outcomes) => {
                    for (r, o) in replies.into_iter().zip(outcomes) {
                        let _ = r.send(match o {
                            Outcome::Applied { seq, created } => Ok(Written { seq, created }),
                            Outcome::PreconditionFailed => Err(WriteError::PreconditionFailed),
                            Outcome::NotFound => Err(WriteError::NotFound),
                        });
                    }
                }
                Err(e) => {
                    for r in replies {
                        let _ = r.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Policy, Priority, Snapshotter, Start};
    use crate::store::{Downstream, Durability, Faults, Initial, Store};

    struct Builder;

    /// What one built store keeps alive: its dir, the writer and the snapshot thread.
    struct Kept(
        #[allow(dead_code)] tempfile::TempDir,
        Option<(Store, Snapshotter)>,
    );

    impl Drop for Kept {
        fn drop(&mut self) {
            if let Some((store, snapshotter)) = self.1.take() {
                store.shutdown();
                let _ = snapshotter.join();
            }
        }
    }

    impl openraft::testing::StoreBuilder<TypeConfig, LogStore, state_machine::StateMachine, Kept>
        for Builder
    {
        async fn build(
            &self,
        ) -> Result<(Kept, LogStore, state_machine::StateMachine), openraft::StorageError<NodeId>>
        {
            let dir = tempfile::tempdir().expect("temp dir");
            // Small segments, so the suite's appends, truncates and purges cross them.
            let (proposer, seed) = open(dir.path(), false, 512, None).expect("open the Raft log");
            // A real snapshot thread: the suite's snapshots are its slot images.
            let faults = Faults::default();
            let policy = Policy {
                checkpoint_log_bytes: u64::MAX,
                compact: Box::new(|_| Ok(0)),
                priority: Priority::Normal,
            };
            let start = Start {
                image: None,
                at: Default::default(),
                log_bytes: 0,
            };
            let entries = crate::store::Entries::new();
            let (feed, snapshotter) =
                Snapshotter::start(dir.path(), &entries, start, policy, &faults)
                    .expect("start the snapshot thread");
            let downstream = Downstream {
                sinks: vec![Box::new(feed)],
                faults,
                proposer: Some(proposer),
                ..Downstream::default()
            };
            let store = Store::start(Initial::default(), Durability::Async, downstream)
                .expect("start the writer");
            let images = Images {
                status: std::sync::Arc::clone(&snapshotter.status),
                marks: snapshotter.marks.clone(),
                log_bytes: std::sync::Arc::clone(&snapshotter.log_bytes),
                durable: None,
            };
            let sm = state_machine::StateMachine::new(store.handle(), images, seed.state);
            Ok((Kept(dir, Some((store, snapshotter))), seed.log, sm))
        }
    }

    /// openraft's own conformance suite, over the real log store and state machine.
    #[test]
    fn openraft_storage_suite() {
        openraft::testing::Suite::test_all(Builder).expect("the storage suite passes");
    }

    #[test]
    fn a_proposal_round_trips_through_the_log_record_format() {
        let writes = vec![
            Logged::as_sent(
                Write::Put {
                    key: Arc::from("k"),
                    value: crate::store::PendingValue::from_text("v"),
                    cond: Default::default(),
                    expires: crate::store::Expiry::After(5),
                },
                1_000,
            ),
            Logged::Expire {
                key: Arc::from("old"),
            },
        ];
        let p = Proposal::encode(1_000, &writes);
        let json = serde_json::to_string(&p).expect("serialize");
        let back: Proposal = serde_json::from_str(&json).expect("deserialize");
        let (now, decoded) = back.decode().expect("the checksum survives the round trip");
        assert_eq!(now, 1_000);
        assert!(matches!(
            &decoded[0],
            Write::Put { key, expires: crate::store::Expiry::At(6_000), .. } if &**key == "k"
        ));
        assert!(matches!(&decoded[1], Write::Expire { key } if &**key == "old"));
    }
}
