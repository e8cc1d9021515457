//! openraft's state machine: committed entries go to the store's writer, which applies them with
//! the same pure apply as a standalone write or a log replay, so every node reaches the same
//! seqs, versions and values; the Raft snapshot is the JSON image of the map.
//!
//! The snapshot this node last built or installed is kept in `data/raft/snapshot.json`:
//! `{"meta":{…openraft's snapshot meta…},"image":{…a twinkv-snapshot/1 document…}}`, so
//! `jq '.image.data["k"]'` reads a value. A node starts from it and openraft applies the
//! committed entries after it again.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Entry, Member, NodeId, TypeConfig};
use crate::snapshot::format::{self, Position};
use crate::store::{Committed, Entries, Outcome, ReaderFactory, StoreHandle};

/// The snapshot file's name inside the Raft dir.
pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// The snapshot file's document, as written.
#[derive(Serialize)]
struct SnapshotDoc<'a> {
    meta: &'a SnapshotMeta<NodeId, Member>,
    image: &'a RawValue,
}

/// The snapshot file's document, as read.
#[derive(Deserialize)]
struct SnapshotFile<'a> {
    meta: SnapshotMeta<NodeId, Member>,
    #[serde(borrow)]
    image: &'a RawValue,
}

/// A snapshot: its meta and the image's bytes.
#[derive(Debug, Clone)]
pub struct Stored {
    /// openraft's meta: last log id and membership.
    pub meta: SnapshotMeta<NodeId, Member>,
    /// A twinkv-snapshot/1 document.
    pub image: Arc<Vec<u8>>,
}

/// Reads the snapshot file in `dir`, if there is one; a damaged one is an error (never start
/// from part of a state).
pub fn load(dir: &Path) -> io::Result<Option<(Stored, format::Image)>> {
    let bytes = match fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let doc: SnapshotFile<'_> = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    let image_bytes = doc.image.get().as_bytes().to_vec();
    let image = format::decode(&image_bytes).map_err(io::Error::other)?;
    Ok(Some((
        Stored {
            meta: doc.meta,
            image: Arc::new(image_bytes),
        },
        image,
    )))
}

fn save(dir: &Path, stored: &Stored) -> io::Result<()> {
    let text = std::str::from_utf8(&stored.image).map_err(io::Error::other)?;
    let image: &RawValue = serde_json::from_str(text).map_err(io::Error::other)?;
    let doc = serde_json::to_vec(&SnapshotDoc {
        meta: &stored.meta,
        image,
    })
    .map_err(io::Error::other)?;
    let tmp = dir.join("snapshot.json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&doc)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    File::open(dir)?.sync_all()
}

fn write_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&io::Error::other(e.to_string())).into()
}

/// What the state machine and its snapshot builder share.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    current: Mutex<Option<Stored>>,
}

/// The state machine: a front for the store's writer.
#[derive(Debug)]
pub struct StateMachine {
    store: StoreHandle,
    readers: ReaderFactory,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    shared: Arc<Shared>,
}

impl StateMachine {
    /// A state machine over a store started from `stored`'s image (or empty).
    pub fn new(
        dir: &Path,
        store: StoreHandle,
        readers: ReaderFactory,
        stored: Option<Stored>,
    ) -> StateMachine {
        StateMachine {
            store,
            readers,
            applied: stored.as_ref().and_then(|s| s.meta.last_log_id),
            membership: stored
                .as_ref()
                .map(|s| s.meta.last_membership.clone())
                .unwrap_or_default(),
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                current: Mutex::new(stored),
            }),
        }
    }
}

/// Builds a snapshot of the map as it stood when the builder was made.
#[derive(Debug)]
pub struct Builder {
    entries: Entries,
    seq: u64,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut image = Vec::new();
        // The image's own log position is the standalone log's, which a cluster node does not
        // write: 0. Its Raft position is `meta.last_log_id`, beside it in the file.
        let at = Position {
            seq: self.seq,
            log_index: 0,
        };
        format::encode(
            &mut image,
            at,
            &crate::snapshot::now_rfc3339(),
            &self.entries,
        )
        .map_err(write_err)?;
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                self.applied.map_or(0, |l| l.index),
                crate::store::now_ms()
            ),
        };
        let stored = Stored {
            meta: meta.clone(),
            image: Arc::new(image),
        };
        save(&self.shared.dir, &stored).map_err(write_err)?;
        *self.shared.current.lock().expect("snapshot lock") = Some(stored.clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(stored.image.to_vec()),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>), StorageError<NodeId>>
    {
        Ok((self.applied, self.membership.clone()))
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
            self.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => shape.push(false),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    shape.push(false);
                }
                EntryPayload::Normal(p) => {
                    let (now, writes) = p.decode().unwrap_or_else(|e| {
                        // A leader proposes only records it encoded; one that does not decode
                        // is applied as nothing, on every node alike.
                        tracing::error!(index = entry.log_id.index, error = %e, "an undecodable Raft entry");
                        (0, Vec::new())
                    });
                    committed.push(Committed {
                        index: entry.log_id.index,
                        now,
                        writes,
                    });
                    shape.push(true);
                }
            }
        }
        let mut outcomes = if committed.is_empty() {
            Vec::new()
        } else {
            self.store.commit(committed).await.map_err(write_err)?
        }
        .into_iter();
        Ok(shape
            .into_iter()
            .map(|normal| {
                if normal {
                    outcomes.next().unwrap_or_default()
                } else {
                    Vec::new()
                }
            })
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        let (entries, seq) = self.readers.reader().copy_all();
        Builder {
            entries,
            seq,
            applied: self.applied,
            membership: self.membership.clone(),
            shared: Arc::clone(&self.shared),
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
        self.store
            .reset(image.entries, image.seq)
            .await
            .map_err(write_err)?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let stored = Stored {
            meta: meta.clone(),
            image: Arc::new(*snapshot),
        };
        save(&self.shared.dir, &stored).map_err(write_err)?;
        *self.shared.current.lock().expect("snapshot lock") = Some(stored);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self.shared.current.lock().expect("snapshot lock").clone();
        Ok(current.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(s.image.to_vec()),
        }))
    }
}
