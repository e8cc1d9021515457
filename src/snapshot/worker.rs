//! The snapshot thread: keeps an ordered replica fed by the writer and, now and then, writes it
//! out as a checkpoint, then deletes the log segments both slots cover.
//!
//! It never reads the left-right copies, so serializing a large map stalls neither the writer's
//! publish nor any reader. It writes an image when the log since the newest image has grown
//! past `--checkpoint-log-bytes` and past that image's own size (so the log never costs more
//! than a few images of disk, and an image is never rewritten for a trickle of writes), when
//! `POST /snapshot` asks, and at shutdown. Every image but the one at shutdown is encoded at
//! idle priority (see `idle`): requests never wait for a checkpoint's CPU.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::format::{self, Position};
use super::idle::{self, Patient};
use super::slot::Slot;
use super::{Msg, Policy, Priority, SnapshotError, SnapshotStatus};
use crate::store::{Entries, MarkSender};

/// After a failed checkpoint, the next automatic attempt waits this long (a `POST /snapshot`
/// tries again at once).
const RETRY: Duration = Duration::from_secs(1);

/// The shortest wait for spare CPU a checkpoint at idle priority is granted before it is
/// written again at normal priority.
const MIN_PATIENCE: Duration = Duration::from_secs(10);

/// A pessimistic encode rate (an image is written at about 200 MB/s here): a checkpoint at
/// idle priority is granted four times the time its image would take at this rate, so a large
/// map on an idle core is never given up for its size alone.
const SLOW_BYTES_PER_SEC: f64 = 100e6;

/// Test-only fault (set from `TWINKV_TEST_FAULT=snapshot-panic` in debug builds): the thread
/// panics at its next attempt, so the supervision of background threads can be tested against
/// the real binary.
pub(crate) static PANIC_AT_NEXT_ATTEMPT: AtomicBool = AtomicBool::new(false);

/// Test-only fault (set from `TWINKV_TEST_FAULT=checkpoint-crash-*` in debug builds): the step
/// of a checkpoint after which the process aborts, as a [`CrashPoint`] (0: none), so recovery
/// can be tested against the real binary crashed at that exact point rather than against
/// files edited after a SIGKILL.
static CRASH_POINT: AtomicU8 = AtomicU8::new(0);

/// Checkpoints attempted since [`CRASH_POINT`] was set. The fault fires in the second: the first
/// gives the dir an image, so the second is written beside an older valid one and its
/// compaction deletes the segments that older image covers.
static CRASH_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// The attempt of the process in which a `checkpoint-crash-*` fault fires.
const CRASH_AT_ATTEMPT: u32 = 2;

/// Where a checkpoint aborts the process under a `checkpoint-crash-*` test fault: each point
/// follows one of the numbered steps of a checkpoint (see `slot.rs` and `Worker::attempt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum CrashPoint {
    /// Every byte of the image is in the slot (step 2), but the old bytes after it are not
    /// yet blanked (step 3) nor anything flushed (step 4).
    Written = 1,
    /// The image is flushed (step 4), but its seq is not yet published (step 5) and no log
    /// segment is deleted (step 6).
    Flushed = 2,
    /// The log segments both slots cover are deleted (step 6).
    Compacted = 3,
}

impl CrashPoint {
    /// Aborts the process when `armed` is this point: a crash, with no destructor run, no
    /// log flushed and no final image written.
    fn reached(self, armed: Option<CrashPoint>) {
        if armed == Some(self) {
            tracing::error!(point = ?self, "injected fault: a crash in the middle of a checkpoint");
            std::process::abort();
        }
    }
}

/// Makes the process abort at `point` of its second checkpoint
/// (`TWINKV_TEST_FAULT=checkpoint-crash-*`; see [`CRASH_POINT`]).
pub(crate) fn inject_crash_at_second_checkpoint(point: CrashPoint) {
    CRASH_ATTEMPTS.store(0, Ordering::Relaxed);
    CRASH_POINT.store(point as u8, Ordering::Relaxed);
}

/// Counts one checkpoint attempt; returns where it must crash, if this is the attempt the
/// `checkpoint-crash-*` fault fires in.
fn armed_crash() -> Option<CrashPoint> {
    let point = match CRASH_POINT.load(Ordering::Relaxed) {
        1 => CrashPoint::Written,
        2 => CrashPoint::Flushed,
        3 => CrashPoint::Compacted,
        _ => return None,
    };
    let attempt = CRASH_ATTEMPTS.fetch_add(1, Ordering::Relaxed) + 1;
    (attempt == CRASH_AT_ATTEMPT).then_some(point)
}

/// Everything the snapshot thread owns.
pub(super) struct Worker {
    /// The two slot files, in the order of `recover::SLOT_NAMES`.
    pub(super) paths: [PathBuf; 2],
    /// Open slots; a slot whose write failed is dropped and reopened on the next attempt.
    pub(super) slots: [Option<Slot>; 2],
    /// Index of the slot to write next: always the one not holding the newest image.
    pub(super) next: usize,
    /// The replica, equal to the store's map at `applied`.
    pub(super) replica: Entries,
    /// Where the replica stands: the seq and log record of the last batch absorbed.
    pub(super) applied: Position,
    /// Seq of the newest flushed image.
    pub(super) durable: u64,
    /// The log index the newest image holds (`None`: no image yet); the segments it and the
    /// image before it cover are what may be deleted.
    pub(super) newest_index: Option<u64>,
    /// The newest image's length: the log must outgrow it before the next checkpoint.
    pub(super) image_bytes: u64,
    /// The highest seq a checkpoint request asked for.
    pub(super) wanted: u64,
    /// Cluster mode: the Raft state the replica is at (see `Published::tag`). Raft's own
    /// entries move it without a new seq.
    pub(super) applied_tag: Option<Arc<str>>,
    /// The Raft state the newest image records.
    pub(super) durable_tag: Option<Arc<str>>,
    /// A checkpoint was asked for while the Raft state had moved past the newest image's: an
    /// image is due even without a new seq (openraft asks for a snapshot of where it is).
    pub(super) wanted_tag: bool,
    /// When to checkpoint, and how to delete covered segments.
    pub(super) policy: Policy,
    /// Where the thread reports its status.
    pub(super) status: Arc<ArcSwap<SnapshotStatus>>,
    /// Where the thread reports the image's seq, and failures, to `POST /snapshot`.
    pub(super) marks: MarkSender,
    /// Log bytes since the newest image, for `/snapshot` and `/metrics`.
    pub(super) log_bytes: Arc<AtomicU64>,
    /// After a failure, no automatic attempt before this instant.
    pub(super) retry_at: Option<Instant>,
    /// Set by `Snapshotter::abandon`: no more attempts, and no final image.
    pub(super) abandoned: Arc<AtomicBool>,
    /// Set by `Snapshotter::hurry` when the server stops: a checkpoint at idle priority is
    /// given up at once and written at normal priority, so shutdown never waits for spare CPU.
    pub(super) hurry: Arc<AtomicBool>,
}

impl Worker {
    /// Runs until the writer drops its feed, then writes a final image (unless abandoned).
    pub(super) fn run(mut self, rx: Receiver<Msg>) -> Result<(), SnapshotError> {
        loop {
            let mut closed = false;
            let msg = match self.next_attempt() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match msg {
                Ok(m) => self.absorb(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
            while !closed {
                match rx.try_recv() {
                    Ok(m) => self.absorb(m),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => closed = true,
                }
            }
            if closed {
                return self.finish();
            }
            if self.next_attempt().is_some_and(|at| at <= Instant::now()) {
                self.attempt(self.policy.priority != Priority::Normal);
            }
        }
    }

    /// The final image at shutdown, when anything is not yet in one and the thread was not
    /// abandoned.
    fn finish(&mut self) -> Result<(), SnapshotError> {
        if self.abandoned.load(Ordering::Relaxed) {
            tracing::info!(
                seq = self.durable,
                applied = self.applied.seq,
                "abandoned: no final snapshot"
            );
            return Ok(());
        }
        if self.moved() {
            // At normal priority: the server is stopping, no request waits for the core.
            self.attempt(false);
        }
        match &self.status.load().last_error {
            Some(e) if self.moved() => Err(SnapshotError::Final(Arc::clone(e))),
            _ => {
                tracing::info!(seq = self.durable, "final snapshot is durable");
                Ok(())
            }
        }
    }

    fn absorb(&mut self, msg: Msg) {
        match msg {
            Msg::Published(batch) => {
                let mut reset = false;
                for op in batch.ops.iter() {
                    reset |= matches!(op, crate::store::Op::Reset { .. });
                    op.apply_to(&mut self.replica);
                }
                self.applied = if reset {
                    // A cluster node installed a leader's image: the replica is exactly there.
                    Position {
                        seq: batch.seq,
                        log_index: batch.logged.index,
                    }
                } else {
                    Position {
                        seq: self.applied.seq.max(batch.seq),
                        log_index: self.applied.log_index.max(batch.logged.index),
                    }
                };
                if batch.tag.is_some() {
                    self.applied_tag = batch.tag.clone();
                }
                self.log_bytes
                    .fetch_add(batch.logged.bytes, Ordering::Relaxed);
            }
            Msg::Checkpoint(seq) => {
                self.wanted = self.wanted.max(seq);
                // Asked for explicitly: try at once, even right after a failure.
                self.retry_at = None;
                if self.tag_moved() {
                    self.wanted_tag = true;
                } else if seq <= self.durable {
                    // Already in an image: answer the waiter, who may be the only one.
                    self.marks.durable(self.durable);
                }
            }
        }
    }

    /// Whether the log since the newest image is big enough to be worth a checkpoint.
    fn log_is_due(&self) -> bool {
        let since = self.log_bytes.load(Ordering::Relaxed);
        since >= self.policy.checkpoint_log_bytes && since >= self.image_bytes
    }

    /// Whether the Raft state moved past the newest image's (always `false` standalone).
    fn tag_moved(&self) -> bool {
        self.applied_tag != self.durable_tag
    }

    /// Whether the replica holds anything the newest image does not.
    fn moved(&self) -> bool {
        self.applied.seq > self.durable || self.tag_moved()
    }

    /// When the next snapshot should start: `None` when nothing calls for one.
    fn next_attempt(&self) -> Option<Instant> {
        if !self.moved() || self.abandoned.load(Ordering::Relaxed) {
            return None;
        }
        if self.wanted <= self.durable && !self.wanted_tag && !self.log_is_due() {
            return None;
        }
        let now = Instant::now();
        Some(self.retry_at.map_or(now, |r| r.max(now)))
    }

    /// Writes the replica into the older slot (`idle`: on spare CPU first, see `idle`), then
    /// publishes the outcome and deletes the log segments both slots now cover.
    fn attempt(&mut self, idle: bool) {
        if PANIC_AT_NEXT_ATTEMPT.swap(false, Ordering::Relaxed) {
            panic!("injected fault: TWINKV_TEST_FAULT=snapshot-panic");
        }
        let crash = armed_crash();
        let started = Instant::now();
        let written_at = now_rfc3339();
        let idx = self.next;
        let at = self.applied;
        let tag = self.applied_tag.clone();
        let since = self.log_bytes.load(Ordering::Relaxed);
        let result = self.write_slot(idx, at, tag.as_deref(), &written_at, idle, crash);
        let elapsed = started.elapsed();
        let prev = self.status.load_full();
        match result {
            Ok((len, capacity)) => {
                CrashPoint::Flushed.reached(crash);
                // Step 5, publish: the image is on disk, so its seq is in a checkpoint.
                self.durable = at.seq;
                self.wanted_tag &= tag != self.applied_tag;
                self.durable_tag = tag.clone();
                self.next = 1 - idx;
                self.retry_at = None;
                self.image_bytes = len;
                // Bytes absorbed while the image was written stay counted. Saturating: a
                // cluster node's counter is also set from outside (the Raft log's bytes).
                let _ = self
                    .log_bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                        Some(b.saturating_sub(since))
                    });
                self.status.store(Arc::new(SnapshotStatus {
                    seq: at.seq,
                    log_index: at.log_index,
                    file: Some(self.paths[idx].clone()),
                    bytes: len,
                    capacity,
                    keys: self.replica.len() as u64,
                    last_duration: elapsed,
                    written_at: Some(written_at),
                    failures: prev.failures,
                    written: prev.written + 1,
                    last_error: None,
                    tag,
                }));
                self.marks.durable(at.seq);
                tracing::debug!(
                    seq = at.seq,
                    bytes = len,
                    ms = elapsed.as_millis() as u64,
                    "snapshot flushed"
                );
                // Step 6, compact: the other slot now holds the older image; records it covers
                // are in both, so their segments can go.
                let keep_from = self.newest_index.unwrap_or(at.log_index);
                self.newest_index = Some(at.log_index);
                if let Err(e) = (self.policy.compact)(keep_from) {
                    // Harmless: the segments are deleted after the next checkpoint instead.
                    tracing::warn!(error = %e, "cannot delete old log segments");
                }
                CrashPoint::Compacted.reached(crash);
            }
            Err(source) => {
                self.slots[idx] = None;
                self.retry_at = Some(Instant::now() + RETRY);
                let error = Arc::new(SnapshotError::Write {
                    path: self.paths[idx].clone(),
                    source,
                });
                tracing::error!(
                    seq = at.seq,
                    error = %crate::Chain(&*error),
                    "snapshot failed; the previous image is intact"
                );
                self.status.store(Arc::new(SnapshotStatus {
                    failures: prev.failures + 1,
                    last_error: Some(Arc::clone(&error)),
                    ..(*prev).clone()
                }));
                self.marks.failed(error);
            }
        }
    }

    fn write_slot(
        &mut self,
        idx: usize,
        at: Position,
        tag: Option<&str>,
        written_at: &str,
        idle: bool,
        crash: Option<CrashPoint>,
    ) -> std::io::Result<(u64, u64)> {
        if idle {
            let patience = self.patience();
            let slot = open_slot(&mut self.slots, &self.paths, idx)?;
            let replica = &self.replica;
            let tried = idle::run(patience, &self.hurry, |stop| {
                slot.write_image(|w| {
                    let len = format::encode_tagged(
                        &mut Patient { inner: w, stop },
                        at,
                        written_at,
                        replica,
                        tag,
                    )?;
                    CrashPoint::Written.reached(crash);
                    Ok(len)
                })
            });
            match tried {
                Some(Ok(len)) => return Ok((len, slot.capacity())),
                Some(Err(e)) if idle::gave_up(&e) => {
                    tracing::info!(
                        seq = at.seq,
                        patience_ms = patience.as_millis() as u64,
                        "no spare CPU for the checkpoint in time; writing it at normal priority"
                    );
                    // Part of an image is in it: open it afresh, as after any failed write.
                    self.slots[idx] = None;
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        let slot = open_slot(&mut self.slots, &self.paths, idx)?;
        let replica = &self.replica;
        let len = slot.write_image(|w| {
            let len = format::encode_tagged(w, at, written_at, replica, tag)?;
            CrashPoint::Written.reached(crash);
            Ok(len)
        })?;
        Ok((len, slot.capacity()))
    }

    /// How long a checkpoint at idle priority may wait for spare CPU: long enough for its
    /// image on a core nothing else wants, never so long that the log outgrows its purpose.
    fn patience(&self) -> Duration {
        if let Priority::Idle(Some(fixed)) = self.policy.priority {
            return fixed;
        }
        let bytes = self.image_bytes.max(self.replica.len() as u64 * 64);
        MIN_PATIENCE.max(Duration::from_secs_f64(
            4.0 * bytes as f64 / SLOW_BYTES_PER_SEC,
        ))
    }
}

/// Slot `idx`, opened now if it is not open (a slot whose write failed was dropped).
fn open_slot<'a>(
    slots: &'a mut [Option<Slot>; 2],
    paths: &[PathBuf; 2],
    idx: usize,
) -> std::io::Result<&'a mut Slot> {
    Ok(match &mut slots[idx] {
        Some(slot) => slot,
        empty => empty.insert(Slot::open(&paths[idx])?),
    })
}

/// Now, as RFC 3339 in UTC with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::recover::{Depth, Scan};
    use super::super::{Policy, Priority, Snapshotter, Start};
    use super::*;
    use crate::store::{Entry, Faults, Sink};

    /// Writes one image of `keys` keys at seq 5 with `priority`; returns the seq and key count
    /// recovery then finds in the dir.
    fn checkpoint(priority: Priority, keys: usize) -> (u64, usize) {
        let dir = tempfile::tempdir().unwrap();
        let entries: Entries = (0..keys)
            .map(|i| Entry::new(&format!("k{i:06}"), 5, b"\"v\""))
            .collect();
        let start = Start {
            image: None,
            at: Position {
                seq: 5,
                log_index: 0,
            },
            log_bytes: 0,
        };
        let policy = Policy {
            checkpoint_log_bytes: u64::MAX,
            compact: Box::new(|_| Ok(0)),
            priority,
        };
        let (mut feed, snap) =
            Snapshotter::start(dir.path(), &entries, start, policy, &Faults::default()).unwrap();
        let waiter = snap.marks.waiter();
        feed.checkpoint(5);
        futures_executor::block_on(waiter.wait(5)).expect("the image is flushed");
        assert_eq!(snap.status.load().written, 1);
        drop(feed);
        snap.join().unwrap();
        let (_, _, image) = Scan::dir(dir.path(), Depth::Newest)
            .unwrap()
            .into_recovery()
            .unwrap()
            .expect("an image");
        (image.seq, image.entries.len())
    }

    #[test]
    fn a_checkpoint_at_idle_priority_is_a_whole_image() {
        assert_eq!(checkpoint(Priority::Idle(None), 3_000), (5, 3_000));
    }

    #[test]
    fn a_checkpoint_that_runs_out_of_patience_is_written_again_whole() {
        // No patience at all: the idle attempt stops at its first chunk (or finishes first,
        // on a quiet core); either way the image that counts is whole.
        assert_eq!(
            checkpoint(Priority::Idle(Some(Duration::ZERO)), 30_000),
            (5, 30_000)
        );
    }

    #[test]
    fn a_checkpoint_at_normal_priority_is_a_whole_image() {
        assert_eq!(checkpoint(Priority::Normal, 3_000), (5, 3_000));
    }
}
