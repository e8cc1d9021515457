//! The writer thread: drain a batch of commands, apply each, log them, publish once, reply.
//!
//! It is the only owner of the left-right `WriteHandle`, so checks like `If-Match` and the
//! assignment of `seq` need no lock: they run in the order commands leave the channel. One
//! log record, one flush (in `sync`) and one `publish` serve every command drained together
//! (group commit); while the writer flushes, the next batch gathers in the channel. After the
//! publish the batch goes to every [`Sink`] downstream; the writer never waits for any of them.

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use left_right::WriteHandle;

use super::apply::Apply;
use super::op::{Map, Op};
use super::seam::{Appended, Faults, Journal, Published, Sink};
use super::{Command, Reply, WriteError, Written};

/// Most commands one publish serves. Bounds the reply latency of the first command in a batch.
const MAX_BATCH: usize = 4096;

/// Everything the writer thread owns.
pub(super) struct Writer {
    /// The only handle that changes the map.
    pub(super) handle: WriteHandle<Map, Op>,
    /// Where commands arrive, from HTTP workers (or benches and tests).
    pub(super) commands: Receiver<Command>,
    /// Where each batch's accepted writes are recorded before they are applied; `None` runs
    /// in memory only.
    pub(super) journal: Option<Box<dyn Journal>>,
    /// Told every published batch, in order (the snapshot thread, later watches).
    pub(super) sinks: Vec<Box<dyn Sink>>,
    /// The last `seq` assigned; the next write gets `seq + 1`.
    pub(super) seq: u64,
    /// Whether each record is flushed before the batch is published and answered (`sync`).
    pub(super) flush: bool,
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
        // Dropping the journal and the sinks here tells each downstream thread to finish.
        tracing::debug!(seq = self.seq, "writer stopped");
    }

    /// Applies one drained batch. Returns whether a shutdown was requested.
    fn process(&mut self, batch: &mut Vec<Command>) -> bool {
        if let Some(reason) = self.faults.get() {
            return refuse(batch, &reason);
        }
        let mut stop = false;
        let mut replies: Vec<(Reply, Result<Written, WriteError>)> =
            Vec::with_capacity(batch.len());
        let mut checkpoints = Vec::new();
        let handle = &self.handle;
        let mut apply = Apply::new(
            |key: &str| handle.enter()?.get(key.as_bytes()).cloned(),
            self.seq,
        );
        for cmd in batch.drain(..) {
            match cmd {
                Command::Write { write, reply } => {
                    let result = apply.apply(write);
                    replies.push((reply, result));
                }
                Command::Checkpoint { reply } => checkpoints.push(reply),
                Command::Shutdown => stop = true,
            }
        }
        let Apply {
            mut ops,
            logged,
            seq,
            ..
        } = apply;

        if !ops.is_empty() {
            // Log first: a write is applied only once its record is in the log.
            let appended = match &mut self.journal {
                Some(journal) => journal.append(seq, &logged, self.flush),
                None => Ok(Appended::default()),
            };
            match appended {
                Ok(appended) => {
                    self.seq = seq;
                    ops.push(Op::Seq { seq });
                    for op in &ops {
                        self.handle.append(op.clone());
                    }
                    self.handle.publish();
                    // Readers see the batch from here on; downstream hears of it next.
                    let published = Published {
                        seq,
                        ops: ops.into(),
                        logged: appended,
                    };
                    for sink in &mut self.sinks {
                        sink.published(&published);
                    }
                }
                Err(error) => {
                    // Nothing was applied, and the log holds nothing of the batch: every write
                    // in it is refused, and the seqs it would have spent are spent again.
                    tracing::error!(error = %crate::Chain(&*error), "the log refused a batch");
                    for (_, result) in &mut replies {
                        if result.is_ok() {
                            *result = Err(WriteError::LogFailed(Arc::clone(&error)));
                        }
                    }
                }
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
}

/// Answers every command of a batch with the fault that stopped the server's writes; applies
/// nothing. Returns whether a shutdown was requested.
fn refuse(batch: &mut Vec<Command>, reason: &Arc<String>) -> bool {
    let mut stop = false;
    let err = || WriteError::Halted(Arc::clone(reason));
    for cmd in batch.drain(..) {
        match cmd {
            Command::Write { reply, .. } => {
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
