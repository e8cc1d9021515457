//! The snapshot thread: keeps an ordered replica fed by the writer, writes it out, reports.
//!
//! It never reads the left-right copies, so serializing a large map stalls neither the writer's
//! publish nor any reader. While it writes, batches queue in its channel; the next image covers
//! them all, which is what lets many `sync` writers share one flush.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::format;
use super::slot::Slot;
use super::{Msg, SnapshotError, SnapshotStatus};
use crate::store::{Entries, MarkSender};

/// The shortest pause before retrying a failed snapshot, whatever the interval.
const MIN_RETRY: Duration = Duration::from_millis(50);

/// Test-only fault (set from `TWINKV_TEST_FAULT=snapshot-panic` in debug builds): the thread
/// panics at its next attempt, so the supervision of background threads can be tested against
/// the real binary.
pub(crate) static PANIC_AT_NEXT_ATTEMPT: AtomicBool = AtomicBool::new(false);

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
    /// Seq of the last batch absorbed into the replica.
    pub(super) applied: u64,
    /// Seq of the newest flushed image.
    pub(super) durable: u64,
    /// The highest seq a checkpoint request asked for.
    pub(super) wanted: u64,
    /// A `sync` write waits for what was absorbed: write now, not at the deadline.
    pub(super) urgent: bool,
    /// The longest a write waits before a snapshot holding it starts (`async`).
    pub(super) interval: Duration,
    /// Where the thread reports its status.
    pub(super) status: Arc<ArcSwap<SnapshotStatus>>,
    /// Where the thread reports the durable seq, and failures, to waiters.
    pub(super) marks: MarkSender,
    /// When the oldest unsnapshotted write arrived plus the interval; `None` when clean.
    pub(super) deadline: Option<Instant>,
    /// After a failure, no attempt before this instant.
    pub(super) retry_at: Option<Instant>,
}

impl Worker {
    /// Runs until the writer drops its feed, then writes a final image.
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
                self.attempt();
            }
        }
    }

    /// The final image at shutdown, when anything is not yet durable.
    fn finish(&mut self) -> Result<(), SnapshotError> {
        if self.applied > self.durable {
            self.attempt();
        }
        match &self.status.load().last_error {
            Some(e) if self.applied > self.durable => Err(SnapshotError::Final(Arc::clone(e))),
            _ => {
                tracing::info!(seq = self.durable, "final snapshot is durable");
                Ok(())
            }
        }
    }

    fn absorb(&mut self, msg: Msg) {
        match msg {
            Msg::Published(batch) => {
                for op in batch.ops.iter() {
                    op.apply_to(&mut self.replica);
                }
                self.applied = self.applied.max(batch.seq);
                self.urgent |= batch.urgent;
                if self.applied > self.durable && self.deadline.is_none() {
                    self.deadline = Some(Instant::now() + self.interval);
                }
            }
            Msg::Checkpoint(seq) => self.wanted = self.wanted.max(seq),
        }
    }

    /// When the next snapshot should start: `None` when nothing is waiting to be written.
    fn next_attempt(&self) -> Option<Instant> {
        if self.applied <= self.durable {
            return None;
        }
        let due = if self.urgent || self.wanted > self.durable {
            Instant::now()
        } else {
            self.deadline.unwrap_or_else(Instant::now)
        };
        Some(match self.retry_at {
            Some(r) => due.max(r),
            None => due,
        })
    }

    /// Writes the replica into the older slot, then publishes the outcome.
    fn attempt(&mut self) {
        if PANIC_AT_NEXT_ATTEMPT.swap(false, Ordering::Relaxed) {
            panic!("injected fault: TWINKV_TEST_FAULT=snapshot-panic");
        }
        let started = Instant::now();
        let written_at = now_rfc3339();
        let idx = self.next;
        let seq = self.applied;
        let result = self.write_slot(idx, seq, &written_at);
        let elapsed = started.elapsed();
        let prev = self.status.load_full();
        match result {
            Ok((len, capacity)) => {
                // Step 5, publish: the image is on disk, so its seq is durable.
                self.durable = seq;
                self.next = 1 - idx;
                self.deadline = None;
                self.retry_at = None;
                self.urgent = false;
                self.status.store(Arc::new(SnapshotStatus {
                    durable_seq: seq,
                    file: Some(self.paths[idx].clone()),
                    bytes: len,
                    capacity,
                    keys: self.replica.len() as u64,
                    last_duration: elapsed,
                    written_at: Some(written_at),
                    failures: prev.failures,
                    written: prev.written + 1,
                    last_error: None,
                }));
                self.marks.durable(seq);
                tracing::debug!(
                    seq,
                    bytes = len,
                    ms = elapsed.as_millis() as u64,
                    "snapshot flushed"
                );
            }
            Err(source) => {
                self.slots[idx] = None;
                self.retry_at = Some(Instant::now() + self.interval.max(MIN_RETRY));
                let error = Arc::new(SnapshotError::Write {
                    path: self.paths[idx].clone(),
                    source,
                });
                tracing::error!(
                    seq,
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
        seq: u64,
        written_at: &str,
    ) -> std::io::Result<(u64, u64)> {
        let slot = match &mut self.slots[idx] {
            Some(slot) => slot,
            empty => empty.insert(Slot::open(&self.paths[idx])?),
        };
        let replica = &self.replica;
        let len = slot.write_image(|w| format::encode(w, seq, written_at, replica))?;
        Ok((len, slot.capacity()))
    }
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
