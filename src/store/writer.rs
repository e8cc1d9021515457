//! The writer thread: drain a batch of commands, check each, assign seqs, publish once, reply.
//!
//! It is the only owner of the left-right `WriteHandle`, so checks like `If-Match` and the
//! assignment of `seq` need no lock: they run in the order commands leave the channel. One
//! `publish` serves every command drained together (group commit). After the publish the
//! batch goes to every [`Sink`] downstream; the writer never waits for any of them.

use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use left_right::WriteHandle;

use super::op::{Map, Op};
use super::seam::{Faults, Published, Sink};
use super::value::{Entry, PendingValue};
use super::{Command, Reply, WriteError, Written};

/// Most commands one publish serves. Bounds the reply latency of the first command in a batch.
const MAX_BATCH: usize = 4096;

/// Everything the writer thread owns.
pub(super) struct Writer {
    /// The only handle that changes the map.
    pub(super) handle: WriteHandle<Map, Op>,
    /// Where commands arrive, from HTTP workers (or benches and tests).
    pub(super) commands: Receiver<Command>,
    /// Told every published batch, in order (the snapshot thread, later the log and watches).
    pub(super) sinks: Vec<Box<dyn Sink>>,
    /// The last `seq` assigned; the next write gets `seq + 1`.
    pub(super) seq: u64,
    /// Whether published batches are marked urgent (`sync`: a writer waits for each).
    pub(super) urgent: bool,
    /// Background threads that died: once one has, writes are refused, not applied.
    pub(super) faults: Faults,
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
            if self.process(&mut batch) {
                break;
            }
        }
        // Dropping the sinks here tells each downstream thread to finish.
        tracing::debug!(seq = self.seq, "writer stopped");
    }

    /// Applies one drained batch. Returns whether a shutdown was requested.
    fn process(&mut self, batch: &mut Vec<Command>) -> bool {
        if let Some(reason) = self.faults.get() {
            return refuse(batch, &reason);
        }
        let mut stop = false;
        // State of keys changed earlier in this batch: the published copy does not show them yet.
        let mut overlay: HashMap<Arc<str>, Option<Entry>> = HashMap::new();
        let mut ops: Vec<Op> = Vec::new();
        let mut replies: Vec<(Reply, Result<Written, WriteError>)> =
            Vec::with_capacity(batch.len());
        let mut checkpoints = Vec::new();

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
                        replies.push((reply, Err(e)));
                        continue;
                    }
                    self.seq += 1;
                    self.put(&mut overlay, &mut ops, key, value);
                    let created = current.is_none();
                    replies.push((reply, Ok(self.written(created))));
                }
                Command::Delete { key, cond, reply } => {
                    let current = self.current(&overlay, &key);
                    if let Err(e) = cond.check(current.as_ref()) {
                        replies.push((reply, Err(e)));
                        continue;
                    }
                    if current.is_none() {
                        replies.push((reply, Err(WriteError::NotFound)));
                        continue;
                    }
                    self.seq += 1;
                    overlay.insert(Arc::clone(&key), None);
                    ops.push(Op::Delete { key });
                    replies.push((reply, Ok(self.written(false))));
                }
                Command::Batch {
                    puts,
                    deletes,
                    reply,
                } => {
                    let changes = !puts.is_empty()
                        || deletes.iter().any(|k| self.current(&overlay, k).is_some());
                    if changes {
                        self.seq += 1;
                        for key in deletes {
                            if self.current(&overlay, &key).is_some() {
                                overlay.insert(Arc::clone(&key), None);
                                ops.push(Op::Delete { key });
                            }
                        }
                        for (key, value) in puts {
                            self.put(&mut overlay, &mut ops, key, value);
                        }
                    }
                    // A batch that changes nothing spends no seq and returns the current one;
                    // in `sync` its caller still waits until that seq is durable.
                    replies.push((reply, Ok(self.written(false))));
                }
                Command::Checkpoint { reply } => checkpoints.push(reply),
                Command::Shutdown => stop = true,
            }
        }

        if !ops.is_empty() {
            ops.push(Op::Seq { seq: self.seq });
            for op in &ops {
                self.handle.append(op.clone());
            }
            self.handle.publish();
            // Readers see the batch from here on; downstream hears of it next.
            let published = Published {
                seq: self.seq,
                ops: ops.into(),
                urgent: self.urgent,
            };
            for sink in &mut self.sinks {
                sink.published(&published);
            }
        }
        for (reply, result) in replies {
            // The requester may have gone away; nothing to do then.
            let _ = reply.send(result);
        }
        if !checkpoints.is_empty() {
            for sink in &mut self.sinks {
                sink.checkpoint(self.seq);
            }
            for reply in checkpoints {
                let _ = reply.send(Ok(self.seq));
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

    fn written(&self, created: bool) -> Written {
        Written {
            seq: self.seq,
            created,
        }
    }
}

/// Answers every command of a batch with the fault that stopped the server's writes; applies
/// nothing. Returns whether a shutdown was requested.
fn refuse(batch: &mut Vec<Command>, reason: &Arc<String>) -> bool {
    let mut stop = false;
    let err = || WriteError::Halted(Arc::clone(reason));
    for cmd in batch.drain(..) {
        match cmd {
            Command::Put { reply, .. }
            | Command::Delete { reply, .. }
            | Command::Batch { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Command::Checkpoint { reply } => {
                let _ = reply.send(Err(err()));
            }
            Command::Shutdown => stop = true,
        }
    }
    stop
}
