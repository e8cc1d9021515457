//! The store: a left-right map read without locks, changed only by one writer thread.
//!
//! [`Store::start`] spawns the writer and hands out two things: a [`ReaderFactory`] (one
//! [`Reader`] per HTTP worker) and a cloneable [`StoreHandle`] that sends write commands over a
//! channel. The writer answers each command through a oneshot channel once the change is
//! visible to readers and as durable as its mode promises. Persistence plugs in through the
//! [`seam`] module: the writer appends every accepted write to a [`Journal`] (the log) before
//! it applies it, flushing first in `sync`, and hands every published batch to the attached
//! [`Sink`]s (the snapshot thread).
//!
//! ```
//! use std::sync::Arc;
//! use twinkv::store::{Downstream, Initial, PendingValue};
//! use twinkv::{Durability, Store};
//!
//! // Nothing downstream: the map lives in memory only.
//! let store = Store::start(Initial::default(), Durability::Async, Downstream::default())?;
//! let reader = store.readers().reader();
//! let written = store.handle().put_blocking(Arc::from("greeting"), PendingValue::from_text("hello"))?;
//! // Answered means visible: the reader sees the write at once, at its version.
//! let entry = reader.get("greeting").expect("visible once answered");
//! assert_eq!((entry.version(), entry.text().as_deref()), (written.seq, Some("hello")));
//! store.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod apply;
mod op;
mod reader;
mod rebuild;
pub mod seam;
mod value;
mod writer;

use std::str::FromStr;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

pub use apply::{Apply, Expiry, Logged, Write};
pub use op::{Entries, Index, Op};
pub use reader::{Lookup, Page, Reader, ReaderFactory, Stats};
pub use rebuild::Rebuild;
pub use seam::{
    marks, Appended, Committed, Faults, Journal, MarkSender, MarkWatch, NotDurable, Outcome,
    Proposer, Published, Settled, SharedError, Sink,
};
pub use value::{now_ms, value_problem, Entry, PendingValue};

/// When a write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Once visible to readers; made durable in the background.
    Async,
    /// Once downstream reports it durable.
    Sync,
}

impl Durability {
    /// The name used on the command line and in `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Async => "async",
            Durability::Sync => "sync",
        }
    }
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "async" => Ok(Durability::Async),
            "sync" => Ok(Durability::Sync),
            other => Err(format!(
                "unknown durability {other:?} (expected async or sync)"
            )),
        }
    }
}

/// What a successful write reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The write's `seq` (for a single key, its new version).
    pub seq: u64,
    /// Whether a put created the key (201) rather than replaced it (200).
    pub created: bool,
}

/// Why a write was not applied, or not confirmed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// An `If-Match` or `If-None-Match` condition did not hold.
    #[error("precondition failed")]
    PreconditionFailed,
    /// A delete named an absent key.
    #[error("key not found")]
    NotFound,
    /// The write was applied but could not be made durable.
    #[error(transparent)]
    NotDurable(#[from] NotDurable),
    /// The log could not take the write: nothing was applied.
    #[error("the write was not applied: the log failed")]
    LogFailed(#[source] SharedError),
    /// A background thread died: no write is accepted any more.
    #[error("no write is accepted: {0}")]
    Halted(Arc<String>),
    /// The store is shutting down.
    #[error("the store is shutting down")]
    ShuttingDown,
    /// Cluster mode: this node does not lead; the leader's API address, when one is known.
    #[error("this node is not the leader")]
    NotLeader(Option<Arc<str>>),
    /// Cluster mode: the entry was not committed (leadership lost, quorum unreachable); it may
    /// still be applied later, under a new leader.
    #[error("the write was not confirmed by a majority: {0}")]
    Unconfirmed(Arc<str>),
}

impl PartialEq for WriteError {
    fn eq(&self, other: &Self) -> bool {
        use WriteError::*;
        match (self, other) {
            (PreconditionFailed, PreconditionFailed)
            | (NotFound, NotFound)
            | (ShuttingDown, ShuttingDown) => true,
            (Halted(a), Halted(b)) => a == b,
            (NotDurable(a), NotDurable(b)) => a.to_string() == b.to_string(),
            (LogFailed(a), LogFailed(b)) => a.to_string() == b.to_string(),
            (NotLeader(a), NotLeader(b)) => a == b,
            (Unconfirmed(a), Unconfirmed(b)) => a == b,
            _ => false,
        }
    }
}

/// A set of entity tags from `If-Match` or `If-None-Match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ETags {
    /// `*`: any current version.
    Any,
    /// The listed versions (tags that are not a version number never match).
    List(Vec<u64>),
}

impl ETags {
    /// Whether a key at `version` (or absent, `None`) matches.
    pub fn matches(&self, version: Option<u64>) -> bool {
        match (self, version) {
            (_, None) => false,
            (ETags::Any, Some(_)) => true,
            (ETags::List(list), Some(v)) => list.contains(&v),
        }
    }
}

/// The preconditions of a single-key write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// `If-Match`: the key must exist at one of these versions.
    pub if_match: Option<ETags>,
    /// `If-None-Match`: the key must not exist at one of these versions (`*`: must not exist).
    pub if_none_match: Option<ETags>,
}

impl Conditions {
    /// Whether there are none: the write holds whatever the key's state.
    pub fn is_none(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }
    /// Whether the conditions hold for a key at `version` (`None`: absent).
    pub fn hold(&self, version: Option<u64>) -> bool {
        self.if_match.as_ref().is_none_or(|t| t.matches(version))
            && !self
                .if_none_match
                .as_ref()
                .is_some_and(|t| t.matches(version))
    }

    fn check(&self, current: Option<&Entry>) -> Result<(), WriteError> {
        if self.hold(current.map(Entry::version)) {
            Ok(())
        } else {
            Err(WriteError::PreconditionFailed)
        }
    }
}

/// The reply channel of one write.
pub(crate) type Reply = oneshot::Sender<Result<Written, WriteError>>;

/// A message to the writer thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// Apply one write, if its conditions hold.
    Write { write: Write, reply: Reply },
    /// Ask downstream to make everything so far durable; answers with the seq to wait for.
    Checkpoint {
        reply: oneshot::Sender<Result<u64, WriteError>>,
    },
    /// Cluster mode: apply committed Raft entries, in order; answers each entry's outcomes.
    Commit {
        entries: Vec<Committed>,
        reply: oneshot::Sender<Vec<Vec<Outcome>>>,
    },
    /// Cluster mode: replace the whole map with a leader's image (installing a Raft snapshot)
    /// at the Raft entry `index`, whose state is `tag`.
    Reset {
        entries: Entries,
        seq: u64,
        index: u64,
        tag: Arc<str>,
        reply: oneshot::Sender<()>,
    },
    /// Cluster mode: one of the writer's proposals is settled (see [`Settled`]).
    Settled,
    /// Finish the commands drained so far, then stop.
    Shutdown,
}

impl Command {
    /// The bytes of keys and values the command would add to a log record.
    fn weight(&self) -> usize {
        match self {
            Command::Write { write, .. } => write.weight(),
            _ => 0,
        }
    }
}

/// What the store starts from: a recovered map and the seq it was taken at.
#[derive(Debug, Default)]
pub struct Initial {
    /// Every entry: key, value and version.
    pub entries: Entries,
    /// The seq of the image the map came from (0 when starting empty).
    pub seq: u64,
    /// A hash index over exactly `entries`, if recovery built one (else the store builds it).
    pub index: Option<Index>,
}

/// What is attached downstream of the writer.
#[derive(Debug, Default)]
pub struct Downstream {
    /// Where every accepted write is recorded before it is applied; `None`: the map lives in
    /// memory only (benches, the doc example).
    pub journal: Option<Box<dyn Journal>>,
    /// Told every published batch, in order.
    pub sinks: Vec<Box<dyn Sink>>,
    /// Background threads that died; checked before every batch.
    pub faults: Faults,
    /// Cluster mode: where drained writes go instead of being applied (the Raft log); they
    /// come back as [`Committed`] entries, on this node and every other.
    pub proposer: Option<Box<dyn Proposer>>,
}

/// Sends writes to the writer thread. Cheap to clone; shareable between threads.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    /// The writer's inbox; unbounded, since every sender awaits its reply (connections bound it).
    tx: Sender<Command>,
}

impl StoreHandle {
    /// Sets `key`; answers with its new version once the durability mode is satisfied.
    pub async fn put(
        &self,
        key: Arc<str>,
        value: PendingValue,
        cond: Conditions,
        expires: Expiry,
    ) -> Result<Written, WriteError> {
        self.write(Write::Put {
            key,
            value,
            cond,
            expires,
        })
        .await
    }

    /// Removes `key`.
    pub async fn delete(&self, key: Arc<str>, cond: Conditions) -> Result<Written, WriteError> {
        self.write(Write::Delete { key, cond }).await
    }

    /// Applies puts and deletes atomically at one seq. Keys must not appear in both; of two
    /// puts of one key the last wins, as in a JSON object.
    pub async fn batch(
        &self,
        puts: Vec<(Arc<str>, PendingValue, Expiry)>,
        deletes: Vec<Arc<str>>,
    ) -> Result<Written, WriteError> {
        let puts = last_put_wins(puts);
        self.write(Write::Batch { puts, deletes }).await
    }

    /// Asks downstream to make every write applied so far durable; returns the seq to wait
    /// for (on the checkpointer's own [`MarkWatch`]).
    pub async fn checkpoint(&self) -> Result<u64, WriteError> {
        self.send(|reply| Command::Checkpoint { reply })?
            .await
            .map_err(|_| WriteError::ShuttingDown)?
    }

    /// Cluster mode: applies committed Raft entries in order and answers their outcomes.
    pub async fn commit(&self, entries: Vec<Committed>) -> Result<Vec<Vec<Outcome>>, WriteError> {
        self.send(|reply| Command::Commit { entries, reply })?
            .await
            .map_err(|_| WriteError::ShuttingDown)
    }

    /// Cluster mode: replaces the whole map with `entries`, a leader's image at `seq` that
    /// holds the Raft entries through `index` (state `tag`, see [`Committed::tag`]).
    pub async fn reset(
        &self,
        entries: Entries,
        seq: u64,
        index: u64,
        tag: Arc<str>,
    ) -> Result<(), WriteError> {
        self.send(|reply| Command::Reset {
            entries,
            seq,
            index,
            tag,
            reply,
        })?
        .await
        .map_err(|_| WriteError::ShuttingDown)
    }

    /// Like [`StoreHandle::put`], for threads outside an async runtime (benches, tools).
    pub fn put_blocking(&self, key: Arc<str>, value: PendingValue) -> Result<Written, WriteError> {
        self.put_nowait(key, value)?
            .blocking_recv()
            .map_err(|_| WriteError::ShuttingDown)?
    }

    /// Sends a put without waiting; the receiver yields the reply.
    pub fn put_nowait(
        &self,
        key: Arc<str>,
        value: PendingValue,
    ) -> Result<oneshot::Receiver<Result<Written, WriteError>>, WriteError> {
        let write = Write::Put {
            key,
            value,
            cond: Conditions::default(),
            expires: Expiry::Never,
        };
        self.send(|reply| Command::Write { write, reply })
    }

    fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<oneshot::Receiver<T>, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| WriteError::ShuttingDown)?;
        Ok(rx)
    }

    /// Sends a write and waits for its answer, which the writer sends once the write is
    /// logged (and, in `sync`, flushed) and visible.
    async fn write(&self, write: Write) -> Result<Written, WriteError> {
        self.send(|reply| Command::Write { write, reply })?
            .await
            .map_err(|_| WriteError::ShuttingDown)?
    }
}

/// The running store: owns the writer thread.
#[derive(Debug)]
pub struct Store {
    handle: StoreHandle,
    readers: ReaderFactory,
    writer: Option<JoinHandle<Option<()>>>,
}

impl Store {
    /// Builds both read copies from `initial` and starts the writer thread.
    pub fn start(
        initial: Initial,
        durability: Durability,
        downstream: Downstream,
    ) -> std::io::Result<Store> {
        let expiring = writer::Expiring::from_entries(&initial.entries);
        let Initial {
            entries,
            seq,
            index,
        } = initial;
        let index = index.unwrap_or_else(|| Index::build(entries.iter().cloned()));
        let (mut handle, read) =
            left_right::new_from_empty::<op::Map, Op>(op::Map::with_index(entries, index, seq));
        // An empty first publish: see `Map::sync_with`.
        handle.publish();
        let readers = ReaderFactory(read.factory());
        drop(read);
        let (tx, commands) = mpsc::channel();
        let Downstream {
            journal,
            sinks,
            faults,
            proposer,
        } = downstream;
        let writer = writer::Writer {
            expiring,
            stalled: false,
            handle,
            commands,
            journal,
            sinks,
            seq,
            flush: durability == Durability::Sync,
            faults: faults.clone(),
            own: proposer.as_ref().map(|_| tx.clone()),
            proposer,
            expiring_proposed: false,
            expiry_answer: None,
            in_flight: 0,
            held: Vec::new(),
            held_replies: Vec::new(),
            replicated: (0, None),
            replicated_moved: false,
        };
        let join = faults.spawn("twinkv-writer", move || writer.run())?;
        Ok(Store {
            handle: StoreHandle { tx },
            readers,
            writer: Some(join),
        })
    }

    /// A sender of writes.
    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// The factory of per-thread readers.
    pub fn readers(&self) -> ReaderFactory {
        self.readers.clone()
    }

    /// Asks the writer to finish what it has drained and stop, then waits for it.
    ///
    /// Any sender still alive afterwards gets `ShuttingDown`.
    pub fn shutdown(mut self) {
        let _ = self.handle.tx.send(Command::Shutdown);
        if let Some(join) = self.writer.take() {
            let _ = join.join();
        }
    }
}

/// Drops every put that a later put of the same key overrides. The log records a batch's puts
/// as one JSON object with its TTLs beside it, so a key named twice could not be replayed
/// exactly (which of its puts had the TTL?); the record decoder refuses such a batch.
fn last_put_wins(
    mut puts: Vec<(Arc<str>, PendingValue, Expiry)>,
) -> Vec<(Arc<str>, PendingValue, Expiry)> {
    let mut seen = foldhash::HashSet::with_capacity_and_hasher(
        puts.len(),
        foldhash::fast::RandomState::default(),
    );
    let mut keep = vec![false; puts.len()];
    for (i, (key, ..)) in puts.iter().enumerate().rev() {
        keep[i] = seen.insert(&**key);
    }
    if keep.iter().all(|k| *k) {
        return puts;
    }
    let mut keep = keep.into_iter();
    puts.retain(|_| keep.next().unwrap_or(true));
    puts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> Store {
        Store::start(Initial::default(), Durability::Async, Downstream::default())
            .expect("spawn writer")
    }

    fn text(s: &str) -> PendingValue {
        PendingValue::from_text(s)
    }

    #[test]
    fn put_is_visible_to_a_reader_once_answered() {
        let store = start();
        let h = store.handle();
        let reader = store.readers().reader();
        let w = h.put_blocking(Arc::from("k"), text("v")).unwrap();
        assert_eq!(
            w,
            Written {
                seq: 1,
                created: true
            }
        );
        let v = reader.get("k").expect("visible after reply");
        assert_eq!(v.version(), 1);
        assert_eq!(v.text().as_deref(), Some("v"));
        let w = h.put_blocking(Arc::from("k"), text("w")).unwrap();
        assert_eq!(
            w,
            Written {
                seq: 2,
                created: false
            }
        );
        store.shutdown();
    }

    #[test]
    fn conditions_follow_versions() {
        let store = start();
        let h = store.handle();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let k: Arc<str> = Arc::from("k");
            let create_only = Conditions {
                if_none_match: Some(ETags::Any),
                ..Default::default()
            };
            h.put(k.clone(), text("a"), create_only.clone(), Expiry::Never)
                .await
                .unwrap();
            assert_eq!(
                h.put(k.clone(), text("b"), create_only, Expiry::Never)
                    .await,
                Err(WriteError::PreconditionFailed)
            );
            let at = |v| Conditions {
                if_match: Some(ETags::List(vec![v])),
                ..Default::default()
            };
            assert_eq!(
                h.put(k.clone(), text("c"), at(9), Expiry::Never).await,
                Err(WriteError::PreconditionFailed)
            );
            assert_eq!(
                h.put(k.clone(), text("c"), at(1), Expiry::Never)
                    .await
                    .unwrap()
                    .seq,
                2
            );
            assert_eq!(
                h.delete(Arc::from("absent"), at(1)).await,
                Err(WriteError::PreconditionFailed)
            );
            assert_eq!(
                h.delete(Arc::from("absent"), Conditions::default()).await,
                Err(WriteError::NotFound)
            );
            assert_eq!(h.delete(k.clone(), at(2)).await.unwrap().seq, 3);
        });
        assert!(store.readers().reader().is_empty());
        store.shutdown();
    }

    #[test]
    fn of_two_puts_of_one_key_in_a_batch_the_last_wins() {
        let p = |k: &str, v: &str, e| (Arc::from(k), text(v), e);
        let kept = last_put_wins(vec![
            p("a", "1", Expiry::After(5)),
            p("b", "2", Expiry::Never),
            p("a", "3", Expiry::Never),
        ]);
        let kept: Vec<_> = kept.iter().map(|(k, _, e)| (k.to_string(), *e)).collect();
        assert_eq!(
            kept,
            vec![("b".into(), Expiry::Never), ("a".into(), Expiry::Never)]
        );
    }

    #[test]
    fn batch_spends_one_seq_and_empty_batch_spends_none() {
        let store = start();
        let h = store.handle();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let w = h
                .batch(
                    vec![
                        (Arc::from("a"), text("1"), Expiry::Never),
                        (Arc::from("b"), text("2"), Expiry::Never),
                    ],
                    vec![Arc::from("zz")],
                )
                .await
                .unwrap();
            assert_eq!(w.seq, 1);
            assert_eq!(h.batch(vec![], vec![]).await.unwrap().seq, 1);
            assert_eq!(
                h.batch(vec![], vec![Arc::from("nope")]).await.unwrap().seq,
                1
            );
            let w = h.batch(vec![], vec![Arc::from("a")]).await.unwrap();
            assert_eq!(w.seq, 2);
        });
        let r = store.readers().reader();
        assert_eq!(r.get("b").unwrap().version(), 1);
        assert!(r.get("a").is_none());
        store.shutdown();
    }

    #[test]
    fn listing_pages_in_byte_order() {
        let store = start();
        let h = store.handle();
        for k in ["b/2", "a", "b/1", "b/3", "c"] {
            h.put_blocking(Arc::from(k), text(k)).unwrap();
        }
        let r = store.readers().reader();
        let keys = |p: &Page| {
            p.items
                .iter()
                .map(|e| e.key().to_string())
                .collect::<Vec<_>>()
        };
        let page = r.list("b/", None, 2);
        assert_eq!(keys(&page), ["b/1", "b/2"]);
        assert_eq!(page.next(), Some("b/2"));
        let page = r.list("b/", Some("b/2"), 2);
        assert_eq!(keys(&page), ["b/3"]);
        assert_eq!(page.next(), None);
        assert_eq!(page.items[0].version(), 4);
        let page = r.list("", Some("a"), 10);
        assert_eq!(keys(&page), ["b/1", "b/2", "b/3", "c"]);
        assert!(r.list("", Some("zzz"), 10).items.is_empty());
        let page = r.list("b/", None, 3);
        assert_eq!((page.items.len(), page.next()), (3, None));
        store.shutdown();
    }

    /// A journal that records each record's weight, and holds its first append until told.
    #[derive(Debug)]
    struct Gated {
        records: Arc<std::sync::Mutex<Vec<(usize, usize)>>>,
        gate: Option<std::sync::mpsc::Receiver<()>>,
        index: u64,
    }

    impl Journal for Gated {
        fn append(
            &mut self,
            _seq: u64,
            _now: u64,
            writes: &[Logged],
            _flush: bool,
        ) -> Result<Appended, SharedError> {
            if let Some(gate) = self.gate.take() {
                let _ = gate.recv();
            }
            let weight = writes.iter().map(|w| w.clone().into_write().weight()).sum();
            self.records.lock().unwrap().push((writes.len(), weight));
            self.index += 1;
            Ok(Appended {
                index: self.index,
                bytes: weight as u64,
            })
        }
    }

    #[test]
    fn a_drained_batch_and_so_a_log_record_is_bounded_in_bytes() {
        let records = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (open, gate) = std::sync::mpsc::channel();
        let journal = Gated {
            records: Arc::clone(&records),
            gate: Some(gate),
            index: 0,
        };
        let downstream = Downstream {
            journal: Some(Box::new(journal)),
            ..Downstream::default()
        };
        let store = Store::start(Initial::default(), Durability::Async, downstream).unwrap();
        let h = store.handle();
        // The first write holds the writer in its append while 48 writes of 512 KiB queue.
        let first = {
            let h = h.clone();
            std::thread::spawn(move || h.put_blocking(Arc::from("first"), text("v")))
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        let big = "x".repeat(512 * 1024);
        let writers: Vec<_> = (0..48)
            .map(|i| {
                let (h, big) = (h.clone(), big.clone());
                std::thread::spawn(move || h.put_blocking(Arc::from(format!("k{i}")), text(&big)))
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(500));
        open.send(()).unwrap();
        first.join().unwrap().unwrap();
        for w in writers {
            w.join().unwrap().unwrap();
        }
        let records = records.lock().unwrap().clone();
        let writes: usize = records.iter().map(|(n, _)| n).sum();
        assert_eq!(writes, 49);
        let one = big.len() + 2 + 32;
        for (n, weight) in &records {
            assert!(
                *weight < writer::MAX_BATCH_BYTES + one,
                "a record of {n} writes weighs {weight} bytes"
            );
        }
        // The queued writes were drained together, up to the bound: not one record each.
        assert!(records.len() < 30, "{} records", records.len());
        store.shutdown();
    }

    #[test]
    fn a_sender_after_shutdown_gets_an_error() {
        let store = start();
        let h = store.handle();
        store.shutdown();
        assert_eq!(
            h.put_blocking(Arc::from("k"), text("v")),
            Err(WriteError::ShuttingDown)
        );
    }
}
