//! openraft's state machine: committed entries go to the store's writer, which applies them with
//! the same pure apply as a standalone write or a log replay, so every node reaches the same
//! seqs, versions and values; the Raft snapshot is the JSON image of the map in the slot files.
//!
//! Every entry applied hands the writer the Raft state it brings the map to (its log id and the
//! membership, as JSON: a [`RaftState`]). The snapshot thread writes it into each image as the
//! document's `raft` field, so a slot image *is* a Raft snapshot: `jq .raft snapshot-a.json`
//! prints its last log id and membership, and a node restarts from it. Building a snapshot asks
//! the snapshot thread for a checkpoint and reads the image back; installing one hands the
//! leader's image to the writer and waits until it is in a slot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{Entry, Member, NodeId, TypeConfig};
use crate::snapshot::format;
use crate::snapshot::SnapshotStatus;
use crate::store::{Committed, MarkSender, MarkWatch, Outcome, StoreHandle};

/// How long building a snapshot may wait for the snapshot thread's image (a checkpoint at idle
/// priority on a busy machine waits up to its patience first).
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// The Raft state an image records (its `raft` field): openraft's snapshot meta but its id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftState {
    /// The last entry the image holds.
    pub last_log_id: Option<LogId<NodeId>>,
    /// The membership as of that entry.
    pub last_membership: StoredMembership<NodeId, Member>,
    /// An image installed from the leader keeps the leader's snapshot id (openraft compares
    /// them); an image of this node's own applies is named by its index, seq and time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
}

impl RaftState {
    /// Reads an image's `raft` field.
    pub fn parse(tag: &str) -> Result<RaftState, serde_json::Error> {
        serde_json::from_str(tag)
    }

    fn tag(&self) -> Arc<str> {
        Arc::from(serde_json::to_string(self).expect("a Raft state serializes"))
    }

    /// openraft's meta for the image at `seq` written at `written_at` (which name it).
    fn meta(self, seq: u64, written_at: &str) -> SnapshotMeta<NodeId, Member> {
        SnapshotMeta {
            snapshot_id: self.snapshot_id.unwrap_or_else(|| {
                format!(
                    "{}-{seq}-{written_at}",
                    self.last_log_id.map_or(0, |l| l.index)
                )
            }),
            last_log_id: self.last_log_id,
            last_membership: self.last_membership,
        }
    }
}

/// Where the snapshot thread reports its images (the engine's): what building and installing
/// a snapshot wait on.
#[derive(Debug, Clone)]
pub struct Images {
    /// The newest image's report, with its `raft` state.
    pub status: Arc<ArcSwap<SnapshotStatus>>,
    /// "Every write up to seq N is in an image" (what `POST /snapshot` waits on).
    pub marks: MarkWatch,
    /// The log's bytes since the newest image, as `/snapshot` and `/metrics` report them.
    pub log_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// In `sync`: "every write up to seq N survives power loss" (`durable_seq`). A node
    /// applies only entries its own log has flushed, so every seq it applies is durable.
    pub durable: Option<Arc<MarkSender>>,
}

impl Images {
    /// Asks for an image of everything `store` has applied, and waits until the newest image
    /// holds at least the Raft entry `index` (`None`: any image will do).
    async fn checkpoint(
        &self,
        store: &StoreHandle,
        index: Option<u64>,
    ) -> Result<(), StorageError<NodeId>> {
        let waiter = self.marks.waiter();
        let seq = store.checkpoint().await.map_err(write_err)?;
        waiter.wait(seq).await.map_err(write_err)?;
        let deadline = Instant::now() + BUILD_TIMEOUT;
        // The mark counts seqs; Raft's own entries move the Raft state without one, and the
        // thread writes such an image after answering the mark: wait for the state itself.
        while self.held_index() < index {
            if Instant::now() > deadline {
                return Err(write_err("no image of the applied Raft state in time"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The Raft index the newest image holds (`None`: no image with a Raft state).
    fn held_index(&self) -> Option<u64> {
        let status = self.status.load();
        let state = RaftState::parse(status.tag.as_deref()?).ok()?;
        Some(state.last_log_id.map_or(0, |l| l.index))
    }

    /// The newest image as a Raft snapshot: its meta from its `raft` field, its bytes read
    /// back from its slot (the document only, without the slot's padding).
    fn current(&self) -> Result<Option<Snapshot<TypeConfig>>, String> {
        // The slot read is the newest image's; a checkpoint finishing meanwhile can start
        // overwriting it only after the next one, and a torn read fails its checksum: read again.
        for _ in 0..3 {
            let status = self.status.load_full();
            let (Some(path), Some(tag)) = (&status.file, &status.tag) else {
                return Ok(None);
            };
            let state = RaftState::parse(tag).map_err(|e| e.to_string())?;
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            match format::peek(&bytes) {
                Ok(h) if h.seq == status.seq => {
                    let mut doc = bytes;
                    doc.truncate(h.len);
                    let written_at = status.written_at.clone().unwrap_or_default();
                    return Ok(Some(Snapshot {
                        meta: state.meta(status.seq, &written_at),
                        snapshot: Box::new(doc),
                    }));
                }
                _ => continue,
            }
        }
        Err("the newest image changed under every read".into())
    }
}

fn write_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

/// The state machine: a front for the store's writer.
#[derive(Debug)]
pub struct StateMachine {
    store: StoreHandle,
    images: Images,
    state: RaftState,
}

impl StateMachine {
    /// A state machine over a store started from an image with Raft state `state` (the
    /// default for an empty store).
    pub fn new(store: StoreHandle, images: Images, state: RaftState) -> StateMachine {
        StateMachine {
            store,
            images,
            state,
        }
    }
}

/// Builds a snapshot: the snapshot thread's next image.
#[derive(Debug)]
pub struct Builder {
    store: StoreHandle,
    images: Images,
    /// What the state machine had applied when the build was asked for.
    applied: Option<u64>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        if self.applied.is_none() {
            // Nothing applied: the map is empty, and no entry's state asks for an image.
            let state = RaftState::default();
            let written_at = crate::snapshot::now_rfc3339();
            let mut doc = Vec::new();
            format::encode_tagged(
                &mut doc,
                format::Position::default(),
                &written_at,
                &crate::store::Entries::new(),
                Some(&state.tag()),
            )
            .map_err(write_err)?;
            return Ok(Snapshot {
                meta: state.meta(0, &written_at),
                snapshot: Box::new(doc),
            });
        }
        self.images.checkpoint(&self.store, self.applied).await?;
        self.images
            .current()
            .map_err(read_err)?
            .ok_or_else(|| write_err("no image after a checkpoint"))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>), StorageError<NodeId>>
    {
        Ok((self.state.last_log_id, self.state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Which responses are the writer's: the normal entries, in order.
        let mut shape = Vec::new();
        let mut committed = Vec::new();
        for entry in entries {
            self.state.last_log_id = Some(entry.log_id);
            self.state.snapshot_id = None;
            // Every entry goes to the writer, Raft's own with no writes: the images record
            // the Raft state each one brings the map to.
            let (now, writes) = match entry.payload {
                EntryPayload::Blank => {
                    shape.push(false);
                    (0, Vec::new())
                }
                EntryPayload::Membership(m) => {
                    self.state.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    shape.push(false);
                    (0, Vec::new())
                }
                EntryPayload::Normal(p) => {
                    let (now, writes) = p.decode().unwrap_or_else(|e| {
                        // A leader proposes only records it encoded; one that does not decode
                        // is applied as nothing, on every node alike.
                        tracing::error!(index = entry.log_id.index, error = %e, "an undecodable Raft entry");
                        (0, Vec::new())
                    });
                    shape.push(true);
                    (now, writes)
                }
            };
            committed.push(Committed {
                index: entry.log_id.index,
                now,
                writes,
                tag: self.state.tag(),
            });
        }
        let outcomes = if committed.is_empty() {
            Vec::new()
        } else {
            self.store.commit(committed).await.map_err(write_err)?
        };
        if let Some(durable) = &self.images.durable {
            let applied = outcomes.iter().flatten().filter_map(|o| match o {
                Outcome::Applied { seq, .. } => Some(*seq),
                _ => None,
            });
            if let Some(seq) = applied.max() {
                durable.durable(seq);
            }
        }
        // One answer per entry; Raft's own entries have no writes, hence no outcomes.
        Ok(shape
            .into_iter()
            .zip(outcomes.into_iter().chain(std::iter::repeat_with(Vec::new)))
            .map(|(normal, o)| if normal { o } else { Vec::new() })
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        Builder {
            store: self.store.clone(),
            images: self.images.clone(),
            applied: self.state.last_log_id.map(|l| l.index),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Vec<u8>>, StorageError<NodeId>> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Vec<u8>>,
    ) -> Result<(), StorageError<NodeId>> {
        let image = format::decode(&snapshot).map_err(write_err)?;
        let state = RaftState {
            last_log_id: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            snapshot_id: Some(meta.snapshot_id.clone()),
        };
        let index = state.last_log_id.map_or(0, |l| l.index);
        self.store
            .reset(image.entries, image.seq, index, state.tag())
            .await
            .map_err(write_err)?;
        self.state = state;
        // openraft may purge the log up to the image once this returns: it must be in a slot.
        self.images.checkpoint(&self.store, Some(index)).await?;
        if let Some(durable) = &self.images.durable {
            durable.durable(image.seq);
        }
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.images.current().map_err(read_err)
    }
}
