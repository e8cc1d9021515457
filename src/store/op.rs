//! `Op`, the only way the map changes, and the map both left-right copies hold.
//!
//! The writer settles every version before it appends an op, so absorbing an op is a pure,
//! deterministic map update: both copies (and the snapshot replica, which applies the same ops)
//! stay identical.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::hash_table::{self, HashTable};
use left_right::Absorb;

use super::value::Entry;

/// The ordered set of entries, searched by key. Ordered, so a listing page is a range scan.
pub type Entries = BTreeSet<Entry>;

/// One change to the map, with everything it needs already decided by the writer.
#[derive(Debug, Clone)]
pub enum Op {
    /// Set a key to a value: the entry carries key, value and the version the writer assigned.
    Put {
        /// The new entry, shared with every copy of the map.
        entry: Entry,
    },
    /// Remove `key`; removing an absent key is a no-op.
    Delete {
        /// The key to remove.
        key: Arc<str>,
        /// The seq of the write that removed it (watchers see it; the map does not keep it).
        seq: u64,
    },
    /// Remove `key` because its expiry time passed (as `Delete`; watchers see `expire`).
    Expire {
        /// The key to remove.
        key: Arc<str>,
        /// The seq of the removal.
        seq: u64,
    },
    /// Set the map's own seq: appended last in every batch, so a reader sees the data and the
    /// seq of one publish together (evmap's `set_meta`).
    Seq {
        /// The seq after the batch.
        seq: u64,
    },
    /// Replace every entry (cluster mode: a replica installs the leader's image).
    Reset {
        /// The new entries, shared by both copies.
        entries: Arc<Entries>,
        /// The image's seq.
        seq: u64,
    },
}

impl Op {
    /// Applies the op to a bare ordered set (the snapshot replica), which keeps no seq.
    pub fn apply_to(&self, map: &mut Entries) {
        match self {
            Op::Seq { .. } => {}
            Op::Reset { entries, .. } => *map = (**entries).clone(),
            // `replace`, not `insert`: entries compare by key, and `insert` keeps the old one.
            Op::Put { entry } => {
                map.replace(entry.clone());
            }
            Op::Delete { key, .. } | Op::Expire { key, .. } => {
                map.remove(key.as_bytes());
            }
        }
    }

    /// Like [`Op::apply_to`], but moves the entry in instead of cloning the `Arc`.
    pub fn apply_owned(self, map: &mut Entries) {
        match self {
            Op::Seq { .. } => {}
            Op::Reset { entries, .. } => *map = (*entries).clone(),
            Op::Put { entry } => {
                map.replace(entry);
            }
            Op::Delete { key, .. } | Op::Expire { key, .. } => {
                map.remove(key.as_bytes());
            }
        }
    }
}

/// A hash index over entries, for point reads: at 1 000 000 keys a lookup in the ordered set
/// alone costs about twenty key comparisons, each a cache miss into a different entry (1.6 µs
/// measured); the index finds the entry in one or two. It costs one pointer and a control byte
/// per bucket (about 19 MB per copy at 1 000 000 keys), and is never iterated, so its order
/// never matters to `Absorb`'s determinism.
///
/// Recovery builds one beside its replay and hands it to the store with the entries
/// ([`super::Initial`]), so a start does not build it again.
#[derive(Clone)]
pub struct Index {
    table: HashTable<Entry>,
    /// Seeded once per index and cloned with it, so both left-right copies hash alike.
    hasher: RandomState,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("len", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl Index {
    /// An index over `entries`, which hold each key once (cloned `Arc`s or moved in).
    pub fn build(entries: impl ExactSizeIterator<Item = Entry>) -> Index {
        let hasher = RandomState::default();
        let mut table = HashTable::with_capacity(entries.len());
        for e in entries {
            table.insert_unique(hasher.hash_one(e.key_bytes()), e, |e| {
                hasher.hash_one(e.key_bytes())
            });
        }
        Index { table, hasher }
    }

    /// The entry of `key`.
    ///
    /// `#[inline]`, as [`Map::get`]: a point read at a million keys is three cache misses, and
    /// when this was a call the reader's loop no longer overlapped one read's misses with the
    /// next one's (0.1's reads were 1.3x faster until it was inlined again; BENCHMARKS.md).
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        let hash = self.hasher.hash_one(key);
        self.table.find(hash, |e| e.key_bytes() == key)
    }

    /// Sets `entry`, replacing any entry of its key.
    pub fn put(&mut self, entry: Entry) {
        let Index { table, hasher } = self;
        let hash = hasher.hash_one(entry.key_bytes());
        match table.entry(
            hash,
            |e| e.key_bytes() == entry.key_bytes(),
            |e| hasher.hash_one(e.key_bytes()),
        ) {
            hash_table::Entry::Occupied(mut o) => *o.get_mut() = entry,
            hash_table::Entry::Vacant(v) => {
                v.insert(entry);
            }
        }
    }

    /// Removes the entry of `key`, if any.
    pub fn remove(&mut self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        if let Ok(found) = self.table.find_entry(hash, |e| e.key_bytes() == key) {
            found.remove();
        }
    }

    /// Keys indexed.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no key is indexed.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// The data structure each left-right copy holds: the ordered set, for listings, and a hash
/// index over the same entries, for point reads.
#[derive(Debug, Clone)]
pub struct Map {
    /// Every entry, in byte order of the key.
    pub entries: Entries,
    /// The same entries, by hash of the key.
    index: Index,
    /// The seq of the last batch applied: travels with the data, so one read sees both.
    pub seq: u64,
    /// Ops absorbed since the map was built: lets `sync_with` see that there is nothing to copy.
    absorbed: u64,
}

impl Default for Map {
    fn default() -> Self {
        Map::new(Entries::new(), 0)
    }
}

impl Map {
    /// Builds the index over `entries`, the map as of `seq`.
    pub fn new(entries: Entries, seq: u64) -> Map {
        let index = Index::build(entries.iter().cloned());
        Map::with_index(entries, index, seq)
    }

    /// The map of `entries` as of `seq`, with `index` already built over exactly them.
    pub fn with_index(entries: Entries, index: Index, seq: u64) -> Map {
        Map {
            entries,
            index,
            seq,
            absorbed: 0,
        }
    }

    /// The entry of `key`, through the hash index.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.index.get(key)
    }

    fn put(&mut self, entry: Entry) {
        self.index.put(entry.clone());
        self.entries.replace(entry);
    }

    fn remove(&mut self, key: &[u8]) {
        self.index.remove(key);
        self.entries.remove(key);
    }

    /// Applies an op to both the ordered set and the index.
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Put { entry } => self.put(entry.clone()),
            Op::Delete { key, .. } | Op::Expire { key, .. } => self.remove(key.as_bytes()),
            Op::Seq { seq } => self.seq = *seq,
            Op::Reset { entries, seq } => *self = Map::new((**entries).clone(), *seq),
        }
    }
}

impl Absorb<Op> for Map {
    fn absorb_first(&mut self, op: &mut Op, _other: &Self) {
        self.absorbed += 1;
        self.apply(op);
    }

    fn absorb_second(&mut self, op: Op, _other: &Self) {
        self.absorbed += 1;
        match op {
            Op::Put { entry } => self.put(entry),
            Op::Delete { key, .. } | Op::Expire { key, .. } => self.remove(key.as_bytes()),
            Op::Seq { seq } => self.seq = seq,
            Op::Reset { entries, seq } => *self = Map::new((*entries).clone(), seq),
        }
    }

    /// Called once, at the second publish, to bring this copy up to the ops `first` absorbed
    /// before the first publish (left-right does not log those). Both copies began as clones
    /// of one map, so when `first` absorbed none there is nothing to copy: the store publishes
    /// once before its first write, which spares the first write after a start a copy of the
    /// whole map (0.1–0.2 s at a million keys).
    fn sync_with(&mut self, first: &Self) {
        if first.absorbed > 0 {
            *self = first.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: u64) -> Op {
        Op::Put {
            entry: Entry::new(k, v, b"1"),
        }
    }

    fn versions(m: &Entries) -> Vec<(String, u64)> {
        m.iter()
            .map(|e| (e.key().to_string(), e.version()))
            .collect()
    }

    #[test]
    fn both_copies_agree_after_absorbing() {
        let (mut w, r) = left_right::new_from_empty::<Map, Op>(Map::default());
        w.append(put("a", 1))
            .append(put("b", 2))
            .append(Op::Seq { seq: 2 })
            .publish();
        w.append(Op::Delete {
            key: Arc::from("a"),
            seq: 0,
        })
        .append(put("c", 3))
        .append(put("b", 4))
        .append(Op::Seq { seq: 4 })
        .publish();
        // A second publish makes the writer replay the log onto the other copy.
        w.publish();
        assert_eq!(r.enter().expect("writer alive").seq, 4);
        let read = versions(&r.enter().expect("writer alive").entries);
        assert_eq!(read, vec![("b".into(), 4), ("c".into(), 3)]);
        let writer_view = versions(&w.enter().expect("writer alive").entries);
        assert_eq!(writer_view, read);
        assert_eq!(w.enter().expect("writer alive").seq, 4);
    }

    #[test]
    fn both_copies_agree_when_nothing_was_absorbed_before_the_first_publish() {
        let start = Map::new([Entry::new("a", 1, b"1")].into(), 1);
        let (mut w, r) = left_right::new_from_empty::<Map, Op>(start);
        w.publish();
        w.append(put("b", 2)).append(Op::Seq { seq: 2 }).publish();
        w.append(put("a", 3)).append(Op::Seq { seq: 3 }).publish();
        w.publish();
        let read = versions(&r.enter().expect("writer alive").entries);
        assert_eq!(read, vec![("a".into(), 3), ("b".into(), 2)]);
        let writer = w.enter().expect("writer alive");
        assert_eq!(versions(&writer.entries), read);
        assert_eq!(writer.get(b"a").map(Entry::version), Some(3));
        assert_eq!(writer.seq, 3);
    }

    #[test]
    fn the_index_follows_the_ordered_set() {
        let mut m = Map::new(
            [Entry::new("a", 1, b"1"), Entry::new("b", 2, b"2")].into(),
            2,
        );
        assert_eq!(m.get(b"a").map(Entry::version), Some(1));
        m.apply(&put("a", 5));
        m.apply(&put("c", 6));
        m.apply(&Op::Delete {
            key: Arc::from("b"),
            seq: 0,
        });
        m.apply(&Op::Delete {
            key: Arc::from("zz"),
            seq: 0,
        });
        assert_eq!(m.get(b"a").map(Entry::version), Some(5));
        assert_eq!(m.get(b"b"), None);
        assert_eq!(m.get(b"c").map(Entry::version), Some(6));
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.index.len(), 2);
        let copy = m.clone();
        assert_eq!(copy.get(b"c").map(Entry::version), Some(6));
    }

    #[test]
    fn a_put_replaces_the_entry_and_a_delete_of_an_absent_key_is_a_no_op() {
        let mut m = Entries::new();
        put("k", 1).apply_to(&mut m);
        put("k", 2).apply_owned(&mut m);
        assert_eq!(versions(&m), vec![("k".into(), 2)]);
        Op::Delete {
            key: Arc::from("x"),
            seq: 0,
        }
        .apply_to(&mut m);
        assert_eq!(m.len(), 1);
    }
}
