//! The writer thread: drain a batch of commands, check each, assign seqs, publish once, reply.
//!
//! It is the only owner of the left-right `WriteHandle`, so checks like `If-Match` and the
//! assignment of `seq` need no lock: they run in the order commands leave the channel. One
//! `publish` serves every command drained together (group commit), and in `sync` mode the
//! replies travel on to the snapshot thread, which answers once an image holding them is flushed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use left_right::WriteHandle;
use tokio::sync::oneshot;

use super::op::{Map, Op};
use super::value::{Entry, PendingValue};
use super::{Command, Durability, WriteError, Written};
use crate::metrics::Metrics;
use crate::snapshot::{SnapMsg, Waiter};

/// Most commands one publish serves. Bounds the reply latency of the first command in a batch.
const MAX_BATCH: usize = 4096;

/// Everything the writer thread owns.
pub(super) struct Writer {
    /// The only handle that changes the map.
    pub(super) handle: WriteHandle<Map, Op>,
    /// Where commands arrive, from HTTP workers (or benches and tests).
    pub(super) commands: Receiver<Command>,
    /// Where published ops go, in order, to the snapshot replica; `None` runs without snapshots.
    pub(super) snapshots: Option<Sender<SnapMsg>>,
    /// The last `seq` assigned; the next write gets `seq + 1`.
    pub(super) seq: u64,
    /// Number of keys after the last publish (kept here so counting costs no scan).
    pub(super) keys: u64,
    /// Whether replies wait for a flushed snapshot.
    pub(super) durability: Durability,
    /// Shared figures: the writer publishes `seq` and the key count here.
    pub(super) metrics: Arc<Metrics>,
}

/// A reply decided while processing a batch, sent once the batch is published.
enum Outcome {
    /// Answer now (errors, no-op batches, and every success in `async`).
    Now(
        oneshot::Sender<Result<Written, WriteError>>,
        Result<Written, WriteError>,
    ),
    /// Answer when an image holding `written.seq` is durable.
    Durable(Waiter),
}

impl Writer {
    /// Runs until a `Shutdown` command arrives or every sender is gone.
    pub(super) fn run(mut self) {
        let mut batch = Vec::with_capacity(64);
        while let Ok(first) = self.commands.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.commands.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            let stop = self.process(&mut batch);
            if stop {
                break;
            }
        }
        // Dropping `self.snapshots` here tells the snapshot thread to write its final image.
        tracing::debug!(seq = self.seq, "writer stopped");
    }

    /// Applies one drained batch. Returns whether a shutdown was requested.
    fn process(&mut self, batch: &mut Vec<Command>) -> bool {
        let mut stop = false;
        // State of keys changed earlier in this batch: the published copy does not show them yet.
        let mut overlay: HashMap<Arc<str>, Option<Entry>> = HashMap::new();
        let mut ops: Vec<Op> = Vec::new();
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        let start_seq = self.seq;

        for cmd in batch.drain(..) {
            match cmd {
                Command::Put {
                    key,
                    value,
                    cond,
                    reply,
                } => {
                    let current = self.current(&overlay, &key);
                    if let Err(e) = cond.check(current.as_ref()) {
                        outcomes.push(Outcome::Now(reply, Err(e)));
                        continue;
                    }
                    self.seq += 1;
                    let created = current.is_none();
                    if created {
                        self.keys += 1;
                    }
                    self.put(&mut overlay, &mut ops, key, value);
                    outcomes.push(self.success(reply, self.seq, created));
                }
                Command::Delete { key, cond, reply } => {
                    let current = self.current(&overlay, &key);
                    if let Err(e) = cond.check(current.as_ref()) {
                        outcomes.push(Outcome::Now(reply, Err(e)));
                        continue;
                    }
                    if current.is_none() {
                        outcomes.push(Outcome::Now(reply, Err(WriteError::NotFound)));
                        continue;
                    }
                    self.seq += 1;
                    self.keys -= 1;
                    overlay.insert(Arc::clone(&key), None);
                    ops.push(Op::Delete { key });
                    outcomes.push(self.success(reply, self.seq, false));
                }
                Command::Batch {
                    puts,
                    deletes,
                    reply,
                } => {
                    let changes = !puts.is_empty()
                        || deletes.iter().any(|k| self.current(&overlay, k).is_some());
                    if !changes {
                        // Nothing would change: no seq is spent, the current one is returned.
                        let seq = self.seq;
                        outcomes.push(self.no_op(reply, seq));
                        continue;
                    }
                    self.seq += 1;
                    for key in deletes {
                        if self.current(&overlay, &key).is_some() {
                            self.keys -= 1;
                            overlay.insert(Arc::clone(&key), None);
                            ops.push(Op::Delete { key });
                        }
                    }
                    for (key, value) in puts {
                        if self.current(&overlay, &key).is_none() {
                            self.keys += 1;
                        }
                        self.put(&mut overlay, &mut ops, key, value);
                    }
                    outcomes.push(self.success(reply, self.seq, false));
                }
                Command::Snapshot { reply } => flushes.push(reply),
                Command::Shutdown => stop = true,
            }
        }

        if !ops.is_empty() {
            for op in &ops {
                self.handle.append(op.clone());
            }
            self.handle.publish();
        }
        // Readers see the batch from here on; the figures follow.
        self.metrics.seq.store(self.seq, Ordering::Release);
        self.metrics.keys.store(self.keys, Ordering::Release);

        let mut waiters = Vec::new();
        for outcome in outcomes {
            match outcome {
                Outcome::Now(reply, result) => {
                    // The requester may have gone away; nothing to do then.
                    let _ = reply.send(result);
                }
                Outcome::Durable(w) => waiters.push(w),
            }
        }
        match &self.snapshots {
            Some(tx) => {
                if self.seq != start_seq || !waiters.is_empty() {
                    let msg = SnapMsg::Batch {
                        seq: self.seq,
                        ops,
                        waiters,
                    };
                    if let Err(e) = tx.send(msg) {
                        fail_waiters(e.0);
                    }
                }
                for reply in flushes {
                    if let Err(e) = tx.send(SnapMsg::Flush { reply }) {
                        if let SnapMsg::Flush { reply } = e.0 {
                            let _ = reply.send(Err(WriteError::NotDurable(
                                "the snapshot thread has stopped".into(),
                            )));
                        }
                    }
                }
            }
            None => {
                for w in waiters {
                    let _ = w.reply.send(Ok(w.written));
                }
                for reply in flushes {
                    let _ = reply.send(Err(WriteError::NotDurable("snapshots are off".into())));
                }
            }
        }
        stop
    }

    /// The value of `key` as this batch has left it so far.
    fn current(&self, overlay: &HashMap<Arc<str>, Option<Entry>>, key: &str) -> Option<Entry> {
        match overlay.get(key) {
            Some(v) => v.clone(),
            None => self.handle.enter()?.get(key.as_bytes()).cloned(),
        }
    }

    fn put(
        &self,
        overlay: &mut HashMap<Arc<str>, Option<Entry>>,
        ops: &mut Vec<Op>,
        key: Arc<str>,
        value: PendingValue,
    ) {
        let entry = value.seal(&key, self.seq);
        overlay.insert(key, Some(entry.clone()));
        ops.push(Op::Put { entry });
    }

    fn success(
        &self,
        reply: oneshot::Sender<Result<Written, WriteError>>,
        seq: u64,
        created: bool,
    ) -> Outcome {
        let written = Written { seq, created };
        match self.durability {
            Durability::Async => Outcome::Now(reply, Ok(written)),
            Durability::Sync => Outcome::Durable(Waiter { reply, written }),
        }
    }

    /// A batch that changes nothing: in `sync` it still waits until the current seq is durable.
    fn no_op(&self, reply: oneshot::Sender<Result<Written, WriteError>>, seq: u64) -> Outcome {
        self.success(reply, seq, false)
    }
}

/// Answers every waiter of a batch the snapshot thread can no longer take.
fn fail_waiters(msg: SnapMsg) {
    if let SnapMsg::Batch { waiters, .. } = msg {
        for w in waiters {
            let _ = w.reply.send(Err(WriteError::NotDurable(
                "the snapshot thread has stopped".into(),
            )));
        }
    }
}
