//! The persistence seam: what the store hands downstream and what it learns back.
//!
//! The store names no snapshot, log or watch type; it defines what it needs of them. Before it
//! applies a batch the writer records its accepted writes in the [`Journal`] (flushed first in
//! `sync`); after each publish it gives every attached [`Sink`] the [`Published`] batch.
//! Whatever makes the map durable in the background reports how far it got through a
//! [`MarkSender`]; callers that must wait (`POST /snapshot`) wait on the matching [`MarkWatch`]
//! for their own seq. A background thread that dies is recorded in [`Faults`], which the writer
//! checks before it applies anything.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use super::apply::{Logged, Write};
use super::op::Op;

/// An error many waiters share: the same failure answers every write that waited on it.
pub type SharedError = Arc<dyn Error + Send + Sync>;

/// One published batch, as the writer hands it downstream (cheap to clone).
#[derive(Debug, Clone)]
pub struct Published {
    /// The seq after the batch: every write in it is at or below this seq.
    pub seq: u64,
    /// Its ops, in the order they were applied.
    pub ops: Arc<[Op]>,
    /// Where the journal recorded it (index 0, no bytes, without a journal); in cluster mode,
    /// the index of the last Raft entry applied.
    pub logged: Appended,
    /// Cluster mode: the replication state the map is at after the batch, which an image of
    /// it records (opaque to the store; see [`Committed::tag`]). `None` standalone.
    pub tag: Option<Arc<str>>,
}

/// Where the journal put a record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    /// The record's index: one more than the previous record's, with no gaps.
    pub index: u64,
    /// The bytes it takes in the log.
    pub bytes: u64,
}

/// Where accepted writes are recorded before they are applied: the write-ahead log.
///
/// Called on the writer thread, once per batch that changes anything.
pub trait Journal: Send + fmt::Debug + 'static {
    /// Records `writes`, applied at `now` (ms since the epoch), which bring the map to `seq`, as
    /// the next record; with `flush`, makes it durable before returning. On error nothing of the
    /// record remains in the log, so the writer can refuse the batch and go on.
    fn append(
        &mut self,
        seq: u64,
        now: u64,
        writes: &[Logged],
        flush: bool,
    ) -> Result<Appended, SharedError>;
}

/// Something downstream of the writer: it is told each published batch, in order.
///
/// Called on the writer thread, so an implementation only hands the batch on (a channel
/// send); it never blocks or does I/O.
pub trait Sink: Send + fmt::Debug + 'static {
    /// One batch the readers can now see.
    fn published(&mut self, batch: &Published);
    /// Make everything up to `seq` durable soon (`POST /snapshot`).
    fn checkpoint(&mut self, seq: u64);
}

/// One write a replica must apply, as the Raft log carries it: the writes of one drained
/// batch, the leader's clock when it drained them, and the entry's Raft index.
#[derive(Debug)]
pub struct Committed {
    /// The entry's index in the Raft log.
    pub index: u64,
    /// The leader writer's clock when it drained the batch: what replay uses as `now`.
    pub now: u64,
    /// The writes, as the client sent them (expiry absolute); none for Raft's own entries.
    pub writes: Vec<Write>,
    /// The replication state once the entry is applied (a JSON object the store does not
    /// read): handed on in [`Published::tag`], so a snapshot records what it is a snapshot of.
    pub tag: Arc<str>,
}

/// How one replicated write came out on the replica that applied it (the same on every one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// Applied at this seq (`created`: a put created its key).
    Applied {
        /// Its seq.
        seq: u64,
        /// Whether a put created the key.
        created: bool,
    },
    /// An `If-Match` / `If-None-Match` condition did not hold.
    PreconditionFailed,
    /// A delete named an absent key.
    NotFound,
}

/// Where a cluster node's writer sends its drained batches instead of applying them: the Raft
/// log. The replies go with the batch; they are answered once the entry is committed and
/// applied (through [`Committed`] commands the writer gets back), or refused.
///
/// Called on the writer thread: an implementation hands the batch on and never blocks.
pub trait Proposer: Send + fmt::Debug + 'static {
    /// Whether this node leads: only the leader proposes the removal of expired keys.
    fn leads(&self) -> bool;
    /// Proposes `writes`, drained at `now`, as one entry; `replies[i]` answers `writes[i]`.
    /// Dropping `settled` once the entry is applied or refused tells the writer.
    fn propose(
        &mut self,
        now: u64,
        writes: Vec<Logged>,
        replies: Vec<super::Reply>,
        settled: Settled,
    );
}

/// Tells the writer, when dropped, that one of its proposals is settled (applied, refused or
/// abandoned). The writer keeps few proposals in flight and gathers the writes that arrive
/// meanwhile into the next one: group commit, as the log's flush gives it standalone (openraft
/// 0.9 flushes each entry on its own).
#[derive(Debug)]
pub struct Settled(pub(super) Option<std::sync::mpsc::Sender<super::Command>>);

impl Drop for Settled {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(super::Command::Settled);
        }
    }
}

/// How far downstream has made the map durable, and its last failure.
#[derive(Debug, Clone, Default)]
pub struct Mark {
    /// Every write at or below this seq is durable.
    pub seq: u64,
    /// Attempts finished so far, failed or not; lets a waiter ignore failures older than it.
    pub attempts: u64,
    /// The newest failed attempt, if it failed after the last success.
    pub failure: Option<Failure>,
}

/// A failed attempt to make writes durable.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The number of the attempt (see [`Mark::attempts`]).
    pub attempt: u64,
    /// Why it failed.
    pub error: SharedError,
}

/// The reporting end, owned by whatever makes writes durable.
#[derive(Debug)]
pub struct MarkSender(watch::Sender<Mark>);

impl MarkSender {
    /// Every write up to `seq` is now durable.
    pub fn durable(&self, seq: u64) {
        self.0.send_modify(|m| {
            m.seq = m.seq.max(seq);
            m.attempts += 1;
            m.failure = None;
        });
    }

    /// An attempt failed: writes waiting on it get `error`.
    pub fn failed(&self, error: SharedError) {
        self.0.send_modify(|m| {
            m.attempts += 1;
            m.failure = Some(Failure {
                attempt: m.attempts,
                error,
            });
        });
    }

    /// The last report.
    pub fn current(&self) -> Mark {
        self.0.borrow().clone()
    }
}

/// The waiting end: cheap to clone, one per caller that needs it.
#[derive(Debug, Clone)]
pub struct MarkWatch(watch::Receiver<Mark>);

/// Why a wait for durability ended without it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotDurable {
    /// The attempt that should have covered the seq failed.
    #[error("the write is applied but not durable")]
    Failed(#[source] SharedError),
    /// Whatever reports durability has stopped (shut down or died).
    #[error("the thread that makes writes durable has stopped")]
    Stopped,
}

impl MarkWatch {
    /// Starts a wait: failures of attempts that finish after this call count against it,
    /// older ones do not. Take it before sending the write, so an attempt that covers the
    /// write and fails is never missed.
    pub fn waiter(&self) -> Waiter {
        let rx = self.0.clone();
        let since = rx.borrow().attempts;
        Waiter { rx, since }
    }

    /// The last report.
    pub fn current(&self) -> Mark {
        self.0.borrow().clone()
    }
}

/// A wait for durability, begun by [`MarkWatch::waiter`].
#[derive(Debug)]
pub struct Waiter {
    rx: watch::Receiver<Mark>,
    since: u64,
}

impl Waiter {
    /// Waits until every write up to `seq` is durable, or a later attempt fails, or the
    /// reporter stops.
    pub async fn wait(mut self, seq: u64) -> Result<(), NotDurable> {
        let since = self.since;
        let mark = self
            .rx
            .wait_for(|m| m.seq >= seq || m.failure.as_ref().is_some_and(|f| f.attempt > since))
            .await
            .map_err(|_| NotDurable::Stopped)?;
        if mark.seq >= seq {
            return Ok(());
        }
        match &mark.failure {
            Some(f) => Err(NotDurable::Failed(Arc::clone(&f.error))),
            None => Err(NotDurable::Stopped),
        }
    }
}

/// A durability channel starting at `seq` (what recovery found durable).
pub fn marks(seq: u64) -> (MarkSender, MarkWatch) {
    let (tx, rx) = watch::channel(Mark {
        seq,
        ..Mark::default()
    });
    (MarkSender(tx), MarkWatch(rx))
}

/// Background threads that died: once one has, no write is accepted and `/health` says why.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<ArcSwapOption<String>>);

impl Faults {
    /// The first death recorded, if any.
    pub fn get(&self) -> Option<Arc<String>> {
        self.0.load_full()
    }

    /// Records a death; the first one recorded is kept.
    pub fn record(&self, reason: String) {
        let _ = self
            .0
            .compare_and_swap(&None::<Arc<String>>, Some(Arc::new(reason)));
    }

    /// Runs `body` on a new thread named `name`; a panic in it is recorded here instead of
    /// passing silently, so the server stops accepting writes it could not make durable.
    ///
    /// The death is recorded from the panic hook, before unwinding drops what the thread owns:
    /// recorded after `catch_unwind`, a waiter could see the thread's channel close (and answer
    /// 503) while `/health` still said "ok" and the writer still applied writes. So a panic
    /// that `body` catches itself counts as a death too: supervised threads do not catch panics.
    pub fn spawn<T: Send + 'static>(
        &self,
        name: &str,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<Option<T>>> {
        install_panic_hook();
        let faults = self.clone();
        let label = name.to_string();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                SUPERVISED.set(Some((faults.clone(), label.clone())));
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                    Ok(v) => Some(v),
                    Err(payload) => {
                        // Already recorded by the hook, unless another hook replaced it since.
                        faults.record(death(&label, &*payload));
                        None
                    }
                }
            })
    }
}

thread_local! {
    /// On a thread started by [`Faults::spawn`]: where its death is recorded, and its label.
    static SUPERVISED: std::cell::RefCell<Option<(Faults, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// Wraps the process's panic hook once, so a supervised thread's panic is recorded at the
/// moment it happens; every panic is then reported by the previous hook as before.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = SUPERVISED.try_with(|s| {
                if let Ok(s) = s.try_borrow() {
                    if let Some((faults, label)) = &*s {
                        faults.record(death(label, info.payload()));
                    }
                }
            });
            previous(info);
        }));
    });
}

/// The reason recorded for a thread that panicked with `payload`.
fn death(label: &str, payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    format!("the {label} thread died: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_wait_ends_on_durability_on_a_later_failure_or_when_the_reporter_stops() {
        let (tx, rx) = marks(3);
        assert!(block_on(rx.waiter().wait(3)).is_ok(), "already durable");
        let err = std::io::Error::other("disk full");
        // A failure from before the wait began does not fail it.
        tx.failed(Arc::new(err));
        let waiter = rx.waiter();
        let t = std::thread::spawn(move || block_on(waiter.wait(5)));
        std::thread::sleep(std::time::Duration::from_millis(20));
        tx.durable(5);
        assert!(t.join().unwrap().is_ok());
        let waiter = rx.waiter();
        let t = std::thread::spawn(move || block_on(waiter.wait(9)));
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(tx);
        assert!(matches!(t.join().unwrap(), Err(NotDurable::Stopped)));
    }

    #[test]
    fn a_failure_after_the_wait_began_answers_it() {
        let (tx, rx) = marks(0);
        let fut = rx.waiter().wait(1);
        tx.failed(Arc::new(std::io::Error::other("no space")));
        match block_on(fut) {
            Err(NotDurable::Failed(e)) => assert_eq!(e.to_string(), "no space"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_panicking_thread_is_recorded_once() {
        let faults = Faults::default();
        let j = faults.spawn("test", || panic!("boom")).unwrap();
        assert!(j.join().unwrap().is_none());
        faults.record("later".into());
        assert_eq!(
            faults.get().as_deref().map(String::as_str),
            Some("the test thread died: boom")
        );
    }

    #[test]
    fn a_death_is_recorded_before_the_dying_thread_drops_anything() {
        // Regression: the death was recorded only after unwinding, so whoever watched the
        // thread's channel saw it close while `Faults` (and `/health`) still said nothing.
        let faults = Faults::default();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let j = faults
            .spawn("doomed", move || {
                let _owned = tx;
                panic!("on purpose")
            })
            .unwrap();
        assert!(
            rx.recv().is_err(),
            "the channel closes as the thread unwinds"
        );
        assert_eq!(
            faults.get().as_deref().map(String::as_str),
            Some("the doomed thread died: on purpose")
        );
        assert!(j.join().unwrap().is_none());
    }
}
