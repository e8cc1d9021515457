//! The writer thread: drain a batch of commands, apply each, log them, publish once, reply.
//!
//! It is the only owner of the left-right `WriteHandle`, so checks like `If-Match` and the
//! assignment of `seq` need no lock: they run in the order commands leave the channel. One
//! log record, one flush (in `sync`) and one `publish` serve every command drained together
//! (group commit); while the writer flushes, the next batch gathers in the channel. After the
//! publish the batch goes to every [`Sink`] downstream; the writer never waits for any of them.

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use left_right::WriteHandle;

use super::apply::Logged;
use super::apply::{Apply, Write};
use super::op::{Entries, Map, Op};
use super::seam::{
    Appended, Committed, Faults, Journal, Outcome, Proposer, Published, Settled, Sink,
};
use super::value::now_ms;
use super::{Command, Reply, WriteError, Written};

/// Most commands one publish serves. Bounds the reply latency of the first command in a batch.
const MAX_BATCH: usize = 4096;

/// Most bytes of keys and values ([`Write::weight`]) a drained batch gathers, so one log record
/// (a line that is written, checksummed and decoded whole) stays bounded: the drain stops once
/// a batch reaches it. A single write larger than this (a `POST /kv` of up to
/// `--max-batch-bytes`) still makes a record of its own.
pub(super) const MAX_BATCH_BYTES: usize = 8 << 20;

/// Most expired keys removed in one round: a million keys expiring at once are removed a
/// bounded batch at a time, between client batches, so writes never stall for long.
pub(super) const MAX_EXPIRE_ROUND: usize = 1000;

/// The longest the writer sleeps with keys still to expire: a due key is removed within it.
const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// The keys that have an expiry time, ordered by it: the writer's own index, so finding the
/// due keys costs the due keys, not a scan of the map.
#[derive(Debug, Default)]
pub(super) struct Expiring {
    by_time: BTreeSet<(u64, Arc<str>)>,
    by_key: HashMap<Arc<str>, u64>,
}

impl Expiring {
    /// The index of a recovered map.
    pub(super) fn from_entries(entries: &Entries) -> Expiring {
        let mut e = Expiring::default();
        for entry in entries {
            if let Some(t) = entry.expires_at() {
                e.set(Arc::from(entry.key()), Some(t));
            }
        }
        e
    }

    fn set(&mut self, key: Arc<str>, at: Option<u64>) {
        if let Some(old) = self.by_key.remove(&key) {
            self.by_time.remove(&(old, Arc::clone(&key)));
        }
        if let Some(t) = at {
            self.by_time.insert((t, Arc::clone(&key)));
            self.by_key.insert(key, t);
        }
    }

    /// Follows the ops of a published batch.
    fn follow(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Put { entry } => self.set(Arc::from(entry.key()), entry.expires_at()),
                Op::Delete { key, .. } | Op::Expire { key, .. } => self.set(Arc::clone(key), None),
                Op::Seq { .. } => {}
                Op::Reset { entries, .. } => *self = Expiring::from_entries(entries),
            }
        }
    }

    /// Up to `limit` keys due at `now`.
    fn due(&self, now: u64, limit: usize) -> Vec<Arc<str>> {
        self.by_time
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(limit)
            .map(|(_, k)| Arc::clone(k))
            .collect()
    }

    /// How long until the next key is due (`None`: no key expires).
    fn next_in(&self, now: u64) -> Option<Duration> {
        self.by_time
            .first()
            .map(|(t, _)| Duration::from_millis(t.saturating_sub(now)))
    }
}

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
    /// Keys with an expiry time, by time.
    pub(super) expiring: Expiring,
    /// The last batch could not be applied: expiry waits a tick before it tries again.
    pub(super) stalled: bool,
    /// Cluster mode: drained writes are proposed here and applied when they come back
    /// committed, on this node as on every other.
    pub(super) proposer: Option<Box<dyn Proposer>>,
    /// Cluster mode: a proposal of due keys is in flight; the next waits for it to be applied.
    pub(super) expiring_proposed: bool,
    /// Cluster mode: the answer to the first write of that proposal, to notice a refusal.
    pub(super) expiry_answer: Option<tokio::sync::oneshot::Receiver<Result<Written, WriteError>>>,
    /// Cluster mode: the writer's own inbox, for [`Settled`] notices.
    pub(super) own: Option<std::sync::mpsc::Sender<Command>>,
    /// Cluster mode: proposals not yet settled.
    pub(super) in_flight: usize,
    /// Cluster mode: writes drained while proposals were in flight, for the next entry.
    pub(super) held: Vec<Logged>,
    /// Their replies.
    pub(super) held_replies: Vec<Reply>,
    /// Cluster mode: the index and tag of the last Raft entry applied (see [`Committed::tag`]).
    pub(super) replicated: (u64, Option<Arc<str>>),
    /// Cluster mode: `replicated` moved since the last publish, which must hand it on even
    /// when no key changed (Raft's own entries), so the next image records it.
    pub(super) replicated_moved: bool,
}

/// Cluster mode: most proposals in flight at once. Writes drained meanwhile wait and go out
/// together in the next entry, so a burst costs one entry (and one flush per node), not one
/// each. Measured with 64 writers on three nodes (`benches/cluster.sh`): no limit 6.0k
/// writes/s (entries of one or two writes), 1 in flight 8.6k–9.2k, 2 8.3k, 4 7.5k–7.8k.
const MAX_IN_FLIGHT: usize = 1;

impl Writer {
    /// Runs until a `Shutdown` command arrives or every sender is gone.
    pub(super) fn run(mut self) {
        let mut batch = Vec::with_capacity(64);
        loop {
            // Sleep until a command arrives or the next key is due (at most a tick, so a due
            // key is removed within it whatever the clock does).
            let wait = self.expiring.next_in(now_ms()).map(|d| {
                if self.stalled {
                    // The last round could not remove what was due (the log refused it, or a
                    // fault stops every write): try again a tick later, not in a hot loop.
                    EXPIRY_TICK
                } else {
                    d.min(EXPIRY_TICK)
                }
            });
            let first = match wait {
                None => self
                    .commands
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => self.commands.recv_timeout(d),
            };
            let mut bytes = 0;
            match first {
                Ok(cmd) => {
                    bytes += cmd.weight();
                    batch.push(cmd);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match self.commands.try_recv() {
                    Ok(cmd) => {
                        bytes += cmd.weight();
                        batch.push(cmd);
                    }
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
        if self.proposer.is_some() {
            return self.process_replicated(batch);
        }
        if let Some(reason) = self.faults.get() {
            self.stalled = true;
            return refuse(batch, &reason);
        }
        self.stalled = false;
        let mut stop = false;
        let mut replies: Vec<(Reply, Result<Written, WriteError>)> =
            Vec::with_capacity(batch.len());
        let mut checkpoints = Vec::new();
        // One clock reading per batch: the instant its TTLs count from and its preconditions
        // see expiry at; the log records it, so replay needs no clock.
        let now = now_ms();
        let due = self.expiring.due(now, MAX_EXPIRE_ROUND);
        let handle = &self.handle;
        let mut apply = Apply::new(
            |key: &str| handle.enter()?.get(key.as_bytes()).cloned(),
            self.seq,
            now,
        );
        // Due keys first, each removed as a write of its own seq.
        for key in due {
            let _ = apply.apply(Write::Expire { key });
        }
        for cmd in batch.drain(..) {
            match cmd {
                Command::Write { write, reply } => {
                    let result = apply.apply(write);
                    replies.push((reply, result));
                }
                Command::Checkpoint { reply } => checkpoints.push(reply),
                Command::Shutdown => stop = true,
                // Only a cluster node's writer gets these (it runs `process_replicated`).
                Command::Commit { reply, .. } => drop(reply),
                Command::Reset { reply, .. } => drop(reply),
                Command::Settled => {}
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
                Some(journal) => journal.append(seq, now, &logged, self.flush),
                None => Ok(Appended::default()),
            };
            match appended {
                Ok(appended) => {
                    self.seq = seq;
                    self.expiring.follow(&ops);
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
                        tag: None,
                    };
                    for sink in &mut self.sinks {
                        sink.published(&published);
                    }
                }
                Err(error) => {
                    self.stalled = true;
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

impl Writer {
    /// Cluster mode: proposes the drained writes as one entry, and applies the committed
    /// entries that came back, in order, with one publish. Returns whether a shutdown was
    /// requested.
    fn process_replicated(&mut self, batch: &mut Vec<Command>) -> bool {
        let mut stop = false;
        let now = now_ms();
        let halted = self.faults.get();
        let mut proposed = std::mem::take(&mut self.held);
        let mut replies = std::mem::take(&mut self.held_replies);
        let mut checkpoints = Vec::new();
        let mut ops: Vec<Op> = Vec::new();
        let mut overlay = HashMap::new();
        let mut applied = Vec::new();
        for cmd in batch.drain(..) {
            match cmd {
                Command::Write { write, reply } => match &halted {
                    Some(reason) => {
                        let _ = reply.send(Err(WriteError::Halted(Arc::clone(reason))));
                    }
                    None => {
                        proposed.push(Logged::as_sent(write, now));
                        replies.push(reply);
                    }
                },
                Command::Commit { entries, reply } => {
                    let mut outcomes = Vec::with_capacity(entries.len());
                    for entry in entries {
                        outcomes.push(self.apply_committed(entry, &mut ops, &mut overlay));
                    }
                    // Answered only once published: openraft counts the entries applied when
                    // it hears back, and a linearizable read waits for exactly that.
                    applied.push((reply, outcomes));
                }
                Command::Reset {
                    entries,
                    seq,
                    index,
                    tag,
                    reply,
                } => {
                    // Everything applied before the image is published first, so sinks see
                    // the batches in order.
                    self.publish(std::mem::take(&mut ops));
                    for (reply, outcomes) in applied.drain(..) {
                        let _ = reply.send(outcomes);
                    }
                    overlay.clear();
                    self.seq = seq;
                    self.replicated = (index, Some(tag));
                    self.replicated_moved = true;
                    self.publish(vec![Op::Reset {
                        entries: Arc::new(entries),
                        seq,
                    }]);
                    let _ = reply.send(());
                }
                Command::Checkpoint { reply } => checkpoints.push(reply),
                Command::Settled => self.in_flight = self.in_flight.saturating_sub(1),
                Command::Shutdown => stop = true,
            }
        }
        self.publish(ops);
        for (reply, outcomes) in applied {
            let _ = reply.send(outcomes);
        }
        let leads = self.proposer.as_ref().is_some_and(|p| p.leads());
        // The last expiry proposal was refused (leadership lost, no majority): propose again.
        if let Some(rx) = &mut self.expiry_answer {
            match rx.try_recv() {
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                Ok(Ok(_)) => self.expiry_answer = None,
                Ok(Err(_)) | Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    self.expiry_answer = None;
                    self.expiring_proposed = false;
                }
            }
        }
        if halted.is_none() && leads && !self.expiring_proposed {
            // Only the leader decides expiry, as a write of its own, so every replica removes
            // the same keys at the same seqs. One proposal at a time: the next waits until this
            // one is applied (or refused).
            let due = self.expiring.due(now, MAX_EXPIRE_ROUND);
            if !due.is_empty() {
                self.expiring_proposed = true;
                for (n, key) in due.iter().enumerate() {
                    proposed.push(Logged::Expire {
                        key: Arc::clone(key),
                    });
                    let (reply, rx) = tokio::sync::oneshot::channel();
                    if n == 0 {
                        self.expiry_answer = Some(rx);
                    }
                    replies.push(reply);
                }
            }
        }
        // Keys still due stay so until their removal is committed (a follower waits for the
        // leader's entry, a leader for its proposal): wake a tick later, or as soon as a
        // command comes, not at once, or the writer would spin.
        self.stalled = self.expiring.next_in(now) == Some(Duration::ZERO);
        if stop {
            for reply in replies.drain(..) {
                let _ = reply.send(Err(WriteError::ShuttingDown));
            }
        } else if !proposed.is_empty() {
            if self.in_flight < MAX_IN_FLIGHT {
                if let Some(p) = &mut self.proposer {
                    self.in_flight += 1;
                    p.propose(now, proposed, replies, Settled(self.own.clone()));
                }
            } else {
                // Held for the next entry: one settles soon and its notice wakes the writer.
                self.held = proposed;
                self.held_replies = replies;
            }
        }
        for reply in checkpoints {
            for sink in &mut self.sinks {
                sink.checkpoint(self.seq);
            }
            let _ = reply.send(Ok(self.seq));
        }
        stop
    }

    /// Applies one committed entry onto the map as the last publish left it plus `ops` (whose
    /// changes `overlay` holds by key).
    fn apply_committed(
        &mut self,
        entry: Committed,
        ops: &mut Vec<Op>,
        overlay: &mut HashMap<Arc<str>, Option<super::value::Entry>>,
    ) -> Vec<Outcome> {
        let Committed {
            now,
            writes,
            index,
            tag,
        } = entry;
        self.replicated = (index, Some(tag));
        self.replicated_moved = true;
        let handle = &self.handle;
        let seen = &*overlay;
        let mut apply = Apply::new(
            |key: &str| match seen.get(key) {
                Some(e) => e.clone(),
                None => handle.enter()?.get(key.as_bytes()).cloned(),
            },
            self.seq,
            now,
        );
        let mut expired = false;
        let outcomes = writes
            .into_iter()
            .map(|w| {
                expired |= matches!(w, Write::Expire { .. });
                match apply.apply(w) {
                    Ok(Written { seq, created }) => Outcome::Applied { seq, created },
                    Err(WriteError::PreconditionFailed) => Outcome::PreconditionFailed,
                    Err(_) => Outcome::NotFound,
                }
            })
            .collect();
        let Apply { ops: new, seq, .. } = apply;
        self.seq = seq;
        self.expiring.follow(&new);
        if expired {
            self.expiring_proposed = false;
        }
        for op in &new {
            match op {
                Op::Put { entry } => {
                    overlay.insert(Arc::from(entry.key()), Some(entry.clone()));
                }
                Op::Delete { key, .. } | Op::Expire { key, .. } => {
                    overlay.insert(Arc::clone(key), None);
                }
                Op::Seq { .. } | Op::Reset { .. } => {}
            }
        }
        ops.extend(new);
        outcomes
    }

    /// Publishes `ops` and hands them downstream, with the Raft position they bring the map
    /// to (the log's index is the Raft entry's, the log's bytes are not this writer's to
    /// count). With no ops, only a moved Raft position goes downstream, and readers see
    /// nothing new.
    fn publish(&mut self, mut ops: Vec<Op>) {
        if ops.is_empty() && !self.replicated_moved {
            return;
        }
        self.replicated_moved = false;
        if !ops.is_empty() {
            ops.push(Op::Seq { seq: self.seq });
            for op in &ops {
                self.handle.append(op.clone());
            }
            self.handle.publish();
        }
        let published = Published {
            seq: self.seq,
            ops: ops.into(),
            logged: Appended {
                index: self.replicated.0,
                bytes: 0,
            },
            tag: self.replicated.1.clone(),
        };
        for sink in &mut self.sinks {
            sink.published(&published);
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
            Command::Write { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Command::Checkpoint { reply } => {
                let _ = reply.send(Err(err()));
            }
            Command::Commit { reply, .. } => drop(reply),
            Command::Reset { reply, .. } => drop(reply),
            Command::Settled => {}
            Command::Shutdown => stop = true,
        }
    }
    stop
}
