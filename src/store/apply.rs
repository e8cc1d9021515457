//! The pure apply of a write to the map: shared by the writer, log replay and (later) every
//! Raft replica, so all of them reach the same seqs, versions and values.
//!
//! [`Apply`] looks keys up in a state it does not own (the published copy, or a replica during
//! replay) through an overlay of what the same batch changed so far. Applying a [`Write`]
//! checks its preconditions, spends seqs exactly as the contract says (a refused write or a
//! batch that changes nothing spends none), and collects the map's [`Op`]s and the
//! [`Logged`] form of each accepted write. Nothing here reads a clock or does I/O.

use std::sync::Arc;

use super::op::Op;
use super::value::{Entry, PendingValue};
use super::{Conditions, WriteError, Written};

/// When a put's key expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiry {
    /// Never (a write without a TTL also clears any expiry the key had).
    #[default]
    Never,
    /// This many seconds after the writer accepts the write (a client's `ttl`).
    After(u64),
    /// At this instant, in milliseconds since the Unix epoch (what the log records).
    At(u64),
}

impl Expiry {
    /// The absolute time, given when the write is accepted.
    fn resolve(self, now_ms: u64) -> Option<u64> {
        match self {
            Expiry::Never => None,
            Expiry::After(secs) => Some(now_ms.saturating_add(secs.saturating_mul(1000))),
            Expiry::At(t) => Some(t),
        }
    }
}

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
        /// When it expires.
        expires: Expiry,
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
        /// Keys to set, with when each expires.
        puts: Vec<(Arc<str>, PendingValue, Expiry)>,
        /// Keys to remove; absent ones are skipped.
        deletes: Vec<Arc<str>>,
    },
    /// Remove a key whose expiry time has passed (the writer's own command; a no-op when the
    /// key was overwritten or removed meanwhile).
    Expire {
        /// The key.
        key: Arc<str>,
    },
}

impl Write {
    /// About how many bytes of keys and values the write puts in a log record: what bounds a
    /// drained batch.
    pub fn weight(&self) -> usize {
        // A key's quotes, separators and conditions: a few dozen bytes whatever its length.
        const OVERHEAD: usize = 32;
        match self {
            Write::Put { key, value, .. } => key.len() + value.json_len() + OVERHEAD,
            Write::Delete { key, .. } | Write::Expire { key } => key.len() + OVERHEAD,
            Write::Batch { puts, deletes } => {
                puts.iter()
                    .map(|(k, v, _)| k.len() + v.json_len() + OVERHEAD)
                    .sum::<usize>()
                    + deletes.iter().map(|k| k.len() + OVERHEAD).sum::<usize>()
            }
        }
    }
}

/// An accepted write as the log records it: the command as sent, its value already sealed in
/// the entry the map holds (the log reads the value's bytes and expiry time from there; the
/// version is not logged, replay derives it).
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
    /// The removal of an expired key.
    Expire {
        /// The key removed.
        key: Arc<str>,
    },
}

fn at(entry: &Entry) -> Expiry {
    entry.expires_at().map_or(Expiry::Never, Expiry::At)
}

impl Logged {
    /// A write as sent, before any apply, with its expiry made absolute at `now`: what a
    /// cluster leader proposes. Values are sealed at version 0; replay derives the versions.
    pub fn as_sent(write: Write, now: u64) -> Logged {
        match write {
            Write::Put {
                key,
                value,
                cond,
                expires,
            } => Logged::Put {
                entry: value.seal_expiring(&key, 0, expires.resolve(now)),
                cond,
            },
            Write::Delete { key, cond } => Logged::Delete { key, cond },
            Write::Batch { puts, deletes } => Logged::Batch {
                puts: puts
                    .into_iter()
                    .map(|(key, value, expires)| value.seal_expiring(&key, 0, expires.resolve(now)))
                    .collect(),
                deletes,
            },
            Write::Expire { key } => Logged::Expire { key },
        }
    }

    /// Turns a logged write back into the write it was, for replay.
    pub fn into_write(self) -> Write {
        match self {
            Logged::Put { entry, cond } => Write::Put {
                key: Arc::from(entry.key()),
                value: PendingValue::from_raw(entry.json()),
                cond,
                expires: at(&entry),
            },
            Logged::Delete { key, cond } => Write::Delete { key, cond },
            Logged::Batch { puts, deletes } => Write::Batch {
                puts: puts
                    .into_iter()
                    .map(|e| {
                        let exp = at(&e);
                        (Arc::from(e.key()), PendingValue::from_raw(e.json()), exp)
                    })
                    .collect(),
                deletes,
            },
            Logged::Expire { key } => Write::Expire { key },
        }
    }
}

/// One batch being applied over a state it reads through `lookup`.
pub struct Apply<L: Fn(&str) -> Option<Entry>> {
    /// The state before the batch.
    lookup: L,
    /// Keys changed earlier in this batch: the state does not show them yet.
    overlay: foldhash::HashMap<Arc<str>, Option<Entry>>,
    /// The instant the batch is applied at: keys expired by then are absent to it. The writer
    /// reads its clock once per batch; replay takes the instant from the record.
    pub now: u64,
    /// The map's changes, in order.
    pub ops: Vec<Op>,
    /// The accepted writes, for the log.
    pub logged: Vec<Logged>,
    /// The last seq spent.
    pub seq: u64,
    /// Replaying the log: no caller reads [`Written::created`], so an unconditional put does
    /// not look its key up (at a million keys each lookup is a cache miss), and `logged` stays
    /// empty (the log already holds the writes).
    replay: bool,
}

impl<L: Fn(&str) -> Option<Entry>> std::fmt::Debug for Apply<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apply")
            .field("seq", &self.seq)
            .field("now", &self.now)
            .field("ops", &self.ops.len())
            .finish_non_exhaustive()
    }
}

impl<L: Fn(&str) -> Option<Entry>> Apply<L> {
    /// A batch over `lookup`, whose last seq is `seq`, applied at `now` (ms since the epoch).
    pub fn new(lookup: L, seq: u64, now: u64) -> Self {
        Apply {
            lookup,
            overlay: foldhash::HashMap::default(),
            now,
            ops: Vec::new(),
            logged: Vec::new(),
            seq,
            replay: false,
        }
    }

    /// Like [`Apply::new`], for replaying what the log recorded: the same ops and seqs, but
    /// [`Written::created`] is not worked out for unconditional puts (it is `false`) and
    /// nothing is collected in `logged`.
    pub fn replaying(lookup: L, seq: u64, now: u64) -> Self {
        Apply {
            replay: true,
            ..Apply::new(lookup, seq, now)
        }
    }

    /// The entry of `key` as this batch has left it so far, expired or not.
    fn stored(&self, key: &str) -> Option<Entry> {
        match self.overlay.get(key) {
            Some(v) => v.clone(),
            None => (self.lookup)(key),
        }
    }

    /// The live value of `key`: an expired entry is absent to every precondition.
    fn current(&self, key: &str) -> Option<Entry> {
        self.stored(key).filter(|e| !e.expired(self.now))
    }

    fn log(&mut self, logged: Logged) {
        if !self.replay {
            self.logged.push(logged);
        }
    }

    fn put(&mut self, key: Arc<str>, value: PendingValue, expires: Expiry) -> Entry {
        let entry = value.seal_expiring(&key, self.seq, expires.resolve(self.now));
        self.overlay.insert(key, Some(entry.clone()));
        self.ops.push(Op::Put {
            entry: entry.clone(),
        });
        entry
    }

    /// Applies one write; an error changes nothing and spends no seq.
    pub fn apply(&mut self, write: Write) -> Result<Written, WriteError> {
        match write {
            Write::Put {
                key,
                value,
                cond,
                expires,
            } => {
                let current = if self.replay && cond.is_none() {
                    None
                } else {
                    self.current(&key)
                };
                cond.check(current.as_ref())?;
                self.seq += 1;
                let entry = self.put(key, value, expires);
                self.log(Logged::Put { entry, cond });
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
                    seq: self.seq,
                });
                self.log(Logged::Delete { key, cond });
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
                                seq: self.seq,
                            });
                        }
                    }
                    if self.replay {
                        for (key, value, expires) in puts {
                            self.put(key, value, expires);
                        }
                    } else {
                        let puts = puts
                            .into_iter()
                            .map(|(key, value, expires)| self.put(key, value, expires))
                            .collect();
                        self.logged.push(Logged::Batch { puts, deletes });
                    }
                }
                // A batch that changes nothing spends no seq and returns the current one.
                Ok(Written {
                    seq: self.seq,
                    created: false,
                })
            }
            Write::Expire { key } => {
                // Only a key still stored and past its time: one overwritten since the writer
                // chose it is left alone, and spends no seq.
                if !self.stored(&key).is_some_and(|e| e.expired(self.now)) {
                    return Err(WriteError::NotFound);
                }
                self.seq += 1;
                self.overlay.insert(Arc::clone(&key), None);
                self.ops.push(Op::Expire {
                    key: Arc::clone(&key),
                    seq: self.seq,
                });
                self.log(Logged::Expire { key });
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
        let mut first = Apply::new(lookup, 1, 1_000);
        let cond_at = |v| Conditions {
            if_match: Some(ETags::List(vec![v])),
            ..Default::default()
        };
        assert!(first
            .apply(Write::Put {
                key: Arc::from("a"),
                value: text("refused"),
                cond: cond_at(7),
                expires: Expiry::Never,
            })
            .is_err());
        first
            .apply(Write::Put {
                key: Arc::from("a"),
                value: text("y"),
                cond: cond_at(1),
                expires: Expiry::After(5),
            })
            .unwrap();
        first
            .apply(Write::Batch {
                puts: vec![(Arc::from("b"), text("z"), Expiry::At(9_000))],
                deletes: vec![Arc::from("a"), Arc::from("absent")],
            })
            .unwrap();
        assert_eq!(first.seq, 3);
        // The TTL became an absolute time when the write was applied.
        assert!(
            matches!(&first.logged[0], Logged::Put { entry, .. } if entry.expires_at() == Some(6_000))
        );
        let mut again = Apply::new(lookup, 1, 1_000);
        for w in first.logged.clone() {
            again.apply(w.into_write()).unwrap();
        }
        assert_eq!(again.seq, first.seq);
        let show = |ops: &[Op]| format!("{ops:?}");
        assert_eq!(show(&again.ops), show(&first.ops));
    }
}

#[cfg(test)]
mod expiry_tests {
    use super::*;
    use crate::store::{ETags, Entries};

    #[test]
    fn an_expired_key_is_absent_to_preconditions_and_removed_only_when_due() {
        let state: Entries = [Entry::expiring("k", 1, b"1", Some(5_000))].into();
        let lookup = |k: &str| state.get(k.as_bytes()).cloned();
        // Before its time: present.
        let mut before = Apply::new(lookup, 1, 4_999);
        let exists = Conditions {
            if_match: Some(ETags::Any),
            ..Default::default()
        };
        assert!(before
            .apply(Write::Delete {
                key: Arc::from("k"),
                cond: exists.clone(),
            })
            .is_ok());
        // From its time on: absent to If-Match, present to nothing, and removable.
        let mut after = Apply::new(lookup, 1, 5_000);
        assert_eq!(
            after.apply(Write::Delete {
                key: Arc::from("k"),
                cond: exists,
            }),
            Err(WriteError::PreconditionFailed)
        );
        let create_only = Conditions {
            if_none_match: Some(ETags::Any),
            ..Default::default()
        };
        let w = after
            .apply(Write::Put {
                key: Arc::from("k"),
                value: PendingValue::from_text("new"),
                cond: create_only,
                expires: Expiry::Never,
            })
            .unwrap();
        assert!(w.created, "an expired key is re-created, not replaced");
        // The overwrite cleared the expiry, so the writer's stale expire is a no-op.
        assert_eq!(
            after.apply(Write::Expire {
                key: Arc::from("k")
            }),
            Err(WriteError::NotFound)
        );
        let mut due = Apply::new(lookup, 1, 6_000);
        assert_eq!(
            due.apply(Write::Expire {
                key: Arc::from("k")
            })
            .unwrap()
            .seq,
            2
        );
        assert!(matches!(due.ops[0], Op::Expire { .. }));
    }
}
