//! The pure apply of a write to the map: shared by the writer, log replay and (later) every
//! Raft replica, so all of them reach the same seqs, versions and values.
//!
//! [`Apply`] looks keys up in a state it does not own (the published copy, or a replica during
//! replay) through an overlay of what the same batch changed so far. Applying a [`Write`]
//! checks its preconditions, spends seqs exactly as the contract says (a refused write or a
//! batch that changes nothing spends none), and collects the map's [`Op`]s and the
//! [`Logged`] form of each accepted write. Nothing here reads a clock or does I/O.

use std::collections::HashMap;
use std::sync::Arc;

use super::op::Op;
use super::value::{Entry, PendingValue};
use super::{Conditions, WriteError, Written};

/// A write as a client sent it, before the writer gives it a seq.
#[derive(Debug)]
pub enum Write {
    /// Set one key, if its conditions hold.
    Put {
        /// The key.
        key: Arc<str>,
        /// Its new value, encoded.
        value: PendingValue,
        /// `If-Match` / `If-None-Match`.
        cond: Conditions,
    },
    /// Remove one key, if present and its conditions hold.
    Delete {
        /// The key.
        key: Arc<str>,
        /// `If-Match`.
        cond: Conditions,
    },
    /// Set and remove many keys at one seq (the caller has checked they are disjoint).
    Batch {
        /// Keys to set.
        puts: Vec<(Arc<str>, PendingValue)>,
        /// Keys to remove; absent ones are skipped.
        deletes: Vec<Arc<str>>,
    },
}

/// An accepted write as the log records it: the command as sent, its value already sealed in
/// the entry the map holds (the log reads the value's bytes from there; the version is not
/// logged, replay derives it).
#[derive(Debug, Clone)]
pub enum Logged {
    /// A put and its conditions.
    Put {
        /// The entry stored.
        entry: Entry,
        /// The conditions it was checked against.
        cond: Conditions,
    },
    /// A delete and its conditions.
    Delete {
        /// The key removed.
        key: Arc<str>,
        /// The conditions it was checked against.
        cond: Conditions,
    },
    /// A batch, as sent (including deletes of absent keys).
    Batch {
        /// The entries stored.
        puts: Vec<Entry>,
        /// The keys named for deletion.
        deletes: Vec<Arc<str>>,
    },
}

impl Logged {
    /// Turns a logged write back into the write it was, for replay.
    pub fn into_write(self) -> Write {
        match self {
            Logged::Put { entry, cond } => Write::Put {
                key: Arc::from(entry.key()),
                value: PendingValue::from_raw(entry.json()),
                cond,
            },
            Logged::Delete { key, cond } => Write::Delete { key, cond },
            Logged::Batch { puts, deletes } => Write::Batch {
                puts: puts
                    .into_iter()
                    .map(|e| (Arc::from(e.key()), PendingValue::from_raw(e.json())))
                    .collect(),
                deletes,
            },
        }
    }
}

/// One batch being applied over a state it reads through `lookup`.
pub struct Apply<L: Fn(&str) -> Option<Entry>> {
    /// The state before the batch.
    lookup: L,
    /// Keys changed earlier in this batch: the state does not show them yet.
    overlay: HashMap<Arc<str>, Option<Entry>>,
    /// The map's changes, in order.
    pub ops: Vec<Op>,
    /// The accepted writes, for the log.
    pub logged: Vec<Logged>,
    /// The last seq spent.
    pub seq: u64,
}

impl<L: Fn(&str) -> Option<Entry>> std::fmt::Debug for Apply<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apply")
            .field("seq", &self.seq)
            .field("ops", &self.ops.len())
            .finish_non_exhaustive()
    }
}

impl<L: Fn(&str) -> Option<Entry>> Apply<L> {
    /// A batch over `lookup`, whose last seq is `seq`.
    pub fn new(lookup: L, seq: u64) -> Self {
        Apply {
            lookup,
            overlay: HashMap::new(),
            ops: Vec::new(),
            logged: Vec::new(),
            seq,
        }
    }

    /// The value of `key` as this batch has left it so far.
    fn current(&self, key: &str) -> Option<Entry> {
        match self.overlay.get(key) {
            Some(v) => v.clone(),
            None => (self.lookup)(key),
        }
    }

    fn put(&mut self, key: Arc<str>, value: PendingValue) -> Entry {
        let entry = value.seal(&key, self.seq);
        self.overlay.insert(key, Some(entry.clone()));
        self.ops.push(Op::Put {
            entry: entry.clone(),
        });
        entry
    }

    /// Applies one write; an error changes nothing and spends no seq.
    pub fn apply(&mut self, write: Write) -> Result<Written, WriteError> {
        match write {
            Write::Put { key, value, cond } => {
                let current = self.current(&key);
                cond.check(current.as_ref())?;
                self.seq += 1;
                let entry = self.put(key, value);
                self.logged.push(Logged::Put { entry, cond });
                Ok(Written {
                    seq: self.seq,
                    created: current.is_none(),
                })
            }
            Write::Delete { key, cond } => {
                let current = self.current(&key);
                cond.check(current.as_ref())?;
                if current.is_none() {
                    return Err(WriteError::NotFound);
                }
                self.seq += 1;
                self.overlay.insert(Arc::clone(&key), None);
                self.ops.push(Op::Delete {
                    key: Arc::clone(&key),
                });
                self.logged.push(Logged::Delete { key, cond });
                Ok(Written {
                    seq: self.seq,
                    created: false,
                })
            }
            Write::Batch { puts, deletes } => {
                let changes = !puts.is_empty() || deletes.iter().any(|k| self.current(k).is_some());
                if changes {
                    self.seq += 1;
                    for key in &deletes {
                        if self.current(key).is_some() {
                            self.overlay.insert(Arc::clone(key), None);
                            self.ops.push(Op::Delete {
                                key: Arc::clone(key),
                            });
                        }
                    }
                    let puts = puts
                        .into_iter()
                        .map(|(key, value)| self.put(key, value))
                        .collect();
                    self.logged.push(Logged::Batch { puts, deletes });
                }
                // A batch that changes nothing spends no seq and returns the current one.
                Ok(Written {
                    seq: self.seq,
                    created: false,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ETags, Entries};

    fn text(s: &str) -> PendingValue {
        PendingValue::from_text(s)
    }

    /// Replaying what a batch logged, over the same state, gives the same ops and seq.
    #[test]
    fn replaying_the_logged_writes_reproduces_the_batch() {
        let state: Entries = [Entry::new("a", 1, b"\"x\"")].into();
        let lookup = |k: &str| state.get(k.as_bytes()).cloned();
        let mut first = Apply::new(lookup, 1);
        let at = |v| Conditions {
            if_match: Some(ETags::List(vec![v])),
            ..Default::default()
        };
        assert!(first
            .apply(Write::Put {
                key: Arc::from("a"),
                value: text("refused"),
                cond: at(7),
            })
            .is_err());
        first
            .apply(Write::Put {
                key: Arc::from("a"),
                value: text("y"),
                cond: at(1),
            })
            .unwrap();
        first
            .apply(Write::Batch {
                puts: vec![(Arc::from("b"), text("z"))],
                deletes: vec![Arc::from("a"), Arc::from("absent")],
            })
            .unwrap();
        assert_eq!(first.seq, 3);
        let mut again = Apply::new(lookup, 1);
        for w in first.logged.clone() {
            again.apply(w.into_write()).unwrap();
        }
        assert_eq!(again.seq, first.seq);
        let show = |ops: &[Op]| format!("{ops:?}");
        assert_eq!(show(&again.ops), show(&first.ops));
    }
}
