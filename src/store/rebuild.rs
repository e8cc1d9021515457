//! Rebuilding the map from an image and the ops that follow it: recovery's replay.
//!
//! Applying each op to the ordered set is a B-tree search, and at 1 000 000 keys each of its
//! twenty-odd key comparisons is a cache miss into a different entry: about 1.6 µs a put, which
//! was 40 % of a start with a 64 MiB log. So the ops only record each key's final state in a
//! hash table, and [`Rebuild::finish`] merges those changes into the image's entries once, in
//! key order, and bulk-builds the set from the result, and the store's hash index beside it on
//! a second thread (so the store does not build it again after recovery).

use std::cell::{Cell, OnceCell};
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry as Slot, HashTable};

use super::op::{Entries, Index, Op};
use super::value::Entry;

/// From this many changes a merge is split in two halves merged at once.
const SPLIT_FROM: usize = 1 << 14;

/// Below this ratio of changed keys to stored ones, changes go into the set one by one: a
/// handful of searches is cheaper than rebuilding a million-entry set.
const MERGE_WHEN_ONE_IN: usize = 16;

/// A key's state after the ops applied so far.
enum Change {
    /// Stored with this entry.
    Put(Entry),
    /// Removed.
    Gone(Arc<str>),
}

impl Change {
    fn key(&self) -> &[u8] {
        match self {
            Change::Put(e) => e.key_bytes(),
            Change::Gone(k) => k.as_bytes(),
        }
    }
}

/// The image's entries, what the ops changed since, and a hash index over the image's entries
/// for the writes that must look a key up (preconditions, deletes, expiries).
///
/// The image may still be on its way ([`Rebuild::awaiting`]): recovery decodes it on one thread
/// while it replays the log on another, and a log of unconditional puts never needs the image
/// before [`Rebuild::finish`].
pub struct Rebuild<'a> {
    base: OnceCell<Entries>,
    /// Where the image comes from, until it is first needed.
    source: Cell<Option<Source<'a>>>,
    changed: HashTable<Change>,
    hasher: RandomState,
    /// Over the image's entries, built the first time a key the ops have not touched is looked
    /// up (a log of unconditional puts never needs it).
    index: OnceCell<Index>,
}

type Source<'a> = Box<dyn FnOnce() -> Entries + 'a>;

impl std::fmt::Debug for Rebuild<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuild")
            .field("base", &self.base.get().map(Entries::len))
            .field("changed", &self.changed.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Rebuild<'a> {
    /// Starts from the image's entries.
    pub fn new(base: Entries) -> Rebuild<'a> {
        Rebuild {
            base: OnceCell::from(base),
            source: Cell::new(None),
            changed: HashTable::new(),
            hasher: RandomState::default(),
            index: OnceCell::new(),
        }
    }

    /// Starts from an image `fetch` returns, called the first time the image is needed: by a
    /// lookup of a key the ops have not touched, by [`Rebuild::base`], or by `finish`.
    pub fn awaiting(fetch: impl FnOnce() -> Entries + 'a) -> Rebuild<'a> {
        Rebuild {
            base: OnceCell::new(),
            source: Cell::new(Some(Box::new(fetch))),
            changed: HashTable::new(),
            hasher: RandomState::default(),
            index: OnceCell::new(),
        }
    }

    /// Makes room for `keys` more changed keys, so the table is not rebuilt as it grows.
    pub fn reserve(&mut self, keys: usize) {
        let hasher = &self.hasher;
        self.changed.reserve(keys, |c| hasher.hash_one(c.key()));
    }

    /// The image's entries, fetched now if they have not been.
    pub fn base(&self) -> &Entries {
        self.base
            .get_or_init(|| self.source.take().map_or_else(Entries::new, |f| f()))
    }

    /// The entry of `key` now, expired or not (as the writer's published copy would hold it).
    pub fn get(&self, key: &str) -> Option<Entry> {
        let key = key.as_bytes();
        let hash = self.hasher.hash_one(key);
        if let Some(c) = self.changed.find(hash, |c| c.key() == key) {
            return match c {
                Change::Put(e) => Some(e.clone()),
                Change::Gone(_) => None,
            };
        }
        let base = self.base();
        let index = self
            .index
            .get_or_init(|| Index::build(base.iter().cloned()));
        index.get(key).cloned()
    }

    /// Applies one op.
    pub fn apply(&mut self, op: Op) {
        let change = match op {
            Op::Seq { .. } => return,
            Op::Reset { entries, .. } => {
                // The image is not needed any more: what it would have been is replaced.
                self.source.take();
                self.base = OnceCell::from(
                    Arc::try_unwrap(entries).unwrap_or_else(|shared| (*shared).clone()),
                );
                self.changed.clear();
                self.index = OnceCell::new();
                return;
            }
            Op::Put { entry } => Change::Put(entry),
            Op::Delete { key, .. } | Op::Expire { key, .. } => Change::Gone(key),
        };
        let hasher = &self.hasher;
        let hash = hasher.hash_one(change.key());
        match self.changed.entry(
            hash,
            |c| c.key() == change.key(),
            |c| hasher.hash_one(c.key()),
        ) {
            Slot::Occupied(mut o) => *o.get_mut() = change,
            Slot::Vacant(v) => {
                v.insert(change);
            }
        }
    }

    /// The entries after every op applied (what `inspect` needs).
    pub fn finish(self) -> Entries {
        self.complete(false).0
    }

    /// The entries after every op applied, and a hash index over them for the store.
    ///
    /// After many changes both are built anew, the ordered set on this thread and the index on
    /// a second one; after few, the changes go into the image's set one by one, and into its
    /// index if a lookup built one.
    pub fn finish_indexed(self) -> (Entries, Index) {
        let (set, index) = self.complete(true);
        let index = index.unwrap_or_else(|| Index::build(set.iter().cloned()));
        (set, index)
    }

    /// The entries, and the index if `indexed` (or if a lookup built one and few changed).
    fn complete(self, indexed: bool) -> (Entries, Option<Index>) {
        self.base();
        let Rebuild {
            base,
            changed,
            index,
            ..
        } = self;
        let mut base = base.into_inner().unwrap_or_default();
        if changed.len().saturating_mul(MERGE_WHEN_ONE_IN) < base.len() {
            let mut index = index.into_inner().filter(|_| indexed);
            for c in changed {
                match c {
                    // `replace`: entries compare by key, and `insert` would keep the old one.
                    Change::Put(e) => {
                        if let Some(index) = index.as_mut() {
                            index.put(e.clone());
                        }
                        base.replace(e);
                    }
                    Change::Gone(k) => {
                        if let Some(index) = index.as_mut() {
                            index.remove(k.as_bytes());
                        }
                        base.remove(k.as_bytes());
                    }
                }
            }
            return (base, index);
        }
        // The old index would take a search per change, each a cache miss; building one over
        // the merged entries costs about what building the set does, so they are built at once.
        drop(index);
        let merged = merge(base, changed);
        if !indexed {
            return (merged.into_iter().collect(), None);
        }
        let for_index = merged.clone();
        std::thread::scope(|s| {
            let index = std::thread::Builder::new()
                .name("twinkv-index".into())
                .spawn_scoped(s, move || Index::build(for_index.into_iter()));
            let set: Entries = merged.into_iter().collect();
            // Without a second thread, `finish_indexed` builds it from the set.
            let index = index.ok().map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            (set, index)
        })
    }
}

/// The image's entries with the changes merged in, in key order: sorted, so the set's bulk
/// build finds one run and builds its nodes full. A large merge is split at the middle change's
/// key and the two halves merged on two threads (each step of a merge is a cache miss or two).
fn merge(mut base: Entries, changed: HashTable<Change>) -> Vec<Entry> {
    // Most comparisons settle on the first 16 bytes, held beside each change, so the sort
    // does not chase a pointer into a cold entry for each one.
    let mut changes: Vec<(u128, Change)> =
        changed.into_iter().map(|c| (prefix(c.key()), c)).collect();
    changes.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key().cmp(b.1.key())));
    if changes.len() < SPLIT_FROM {
        return merge_part(base, changes);
    }
    let high_changes = changes.split_off(changes.len() / 2);
    let high_base = base.split_off(high_changes[0].1.key());
    // Handed over through a slot, so that if no thread can be started nothing is lost with it.
    let high = std::sync::Mutex::new(Some((high_base, high_changes)));
    let take = || high.lock().ok().and_then(|mut h| h.take());
    let mut out = std::thread::scope(|s| {
        let helper = std::thread::Builder::new()
            .name("twinkv-merge".into())
            .spawn_scoped(s, || take().map(|(b, c)| merge_part(b, c)));
        let mut out = merge_part(base, changes);
        if let Ok(thread) = helper {
            let merged = thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            out.extend(merged.into_iter().flatten());
        }
        out
    });
    // Without a second thread, the high half is merged here.
    if let Some((b, c)) = take() {
        out.extend(merge_part(b, c));
    }
    out
}

/// One merge, in key order, of entries and the sorted changes to them.
fn merge_part(base: Entries, changes: Vec<(u128, Change)>) -> Vec<Entry> {
    let mut out = Vec::with_capacity(base.len() + changes.len());
    let mut old = base.into_iter().peekable();
    for (_, c) in changes {
        while let Some(e) = old.next_if(|e| e.key_bytes() < c.key()) {
            out.push(e);
        }
        old.next_if(|e| e.key_bytes() == c.key());
        if let Change::Put(e) = c {
            out.push(e);
        }
    }
    out.extend(old);
    out
}

/// A key's first 16 bytes, zero-padded, as a big-endian number: it orders as the bytes do
/// wherever two keys differ within them.
fn prefix(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(key: &str, version: u64) -> Entry {
        Entry::new(key, version, format!("{version}").as_bytes())
    }

    fn put(key: &str, version: u64) -> Op {
        Op::Put {
            entry: entry(key, version),
        }
    }

    fn delete(key: &str) -> Op {
        Op::Delete {
            key: Arc::from(key),
            seq: 0,
        }
    }

    fn versions(entries: &Entries) -> Vec<(String, u64)> {
        entries
            .iter()
            .map(|e| (e.key().to_string(), e.version()))
            .collect()
    }

    /// What applying each op to the set in turn gives: the rebuild must agree.
    fn one_by_one(base: &Entries, ops: &[Op]) -> Entries {
        let mut set = base.clone();
        for op in ops {
            op.apply_to(&mut set);
        }
        set
    }

    #[test]
    fn lookups_see_the_ops_applied_so_far() {
        let base: Entries = [entry("a", 1), entry("b", 2)].into();
        let mut r = Rebuild::new(base);
        assert_eq!(r.get("a").map(|e| e.version()), Some(1));
        r.apply(put("a", 3));
        r.apply(delete("b"));
        r.apply(put("c", 4));
        assert_eq!(r.get("a").map(|e| e.version()), Some(3));
        assert!(r.get("b").is_none());
        assert_eq!(r.get("c").map(|e| e.version()), Some(4));
        assert!(r.get("d").is_none());
    }

    #[test]
    fn a_reset_replaces_everything_before_it() {
        let mut r = Rebuild::new([entry("a", 1)].into());
        r.apply(put("b", 2));
        r.apply(Op::Reset {
            entries: Arc::new([entry("z", 9)].into()),
            seq: 9,
        });
        r.apply(put("y", 10));
        assert_eq!(
            versions(&r.finish()),
            vec![("y".into(), 10), ("z".into(), 9)]
        );
    }

    #[test]
    fn a_large_merge_split_in_two_agrees_with_applying_each_op() {
        // 49 152 ops over 30 000 keys: most keys are changed more than once.
        let name = |n: u32| format!("key{:06}", n * 7_919 % 30_000);
        let base: Entries = (0..40_000)
            .map(|n| entry(&format!("key{n:06}"), 1))
            .collect();
        let ops: Vec<Op> = (0..3 * SPLIT_FROM as u32)
            .map(|i| {
                if i % 5 == 0 {
                    delete(&name(i))
                } else {
                    put(&name(i), u64::from(i) + 2)
                }
            })
            .collect();
        let want = one_by_one(&base, &ops);
        let mut r = Rebuild::new(base);
        for op in ops {
            r.apply(op);
        }
        let (entries, index) = r.finish_indexed();
        assert_eq!(versions(&entries), versions(&want));
        assert_eq!(index.len(), want.len());
        assert!(want
            .iter()
            .all(|e| index.get(e.key_bytes()).map(Entry::version) == Some(e.version())));
    }

    proptest! {
        /// Keys share long prefixes and differ past byte 16, so both the prefix and the
        /// tie-break order of the merge are exercised, with few and with many changes, and
        /// with lookups at random points (which move the listed changes into the table).
        #[test]
        fn finishing_agrees_with_applying_each_op_to_the_set(
            base in proptest::collection::btree_set(0u16..600, 0..300),
            ops in proptest::collection::vec((0u16..600, 0u8..8), 0..400),
            long in any::<bool>(),
        ) {
            let name = |n: u16| if long {
                format!("a-long-shared-prefix/{n:03}")
            } else {
                format!("{n}")
            };
            let base: Entries = base.iter().map(|&n| entry(&name(n), 1)).collect();
            let mut want = base.clone();
            let mut r = Rebuild::new(base);
            for (i, &(n, kind)) in ops.iter().enumerate() {
                let key = name(n);
                match kind {
                    // A lookup sees every op so far.
                    0 => prop_assert_eq!(
                        r.get(&key).map(|e| e.version()),
                        want.get(key.as_bytes()).map(Entry::version)
                    ),
                    1 | 2 => {
                        let op = delete(&key);
                        op.apply_to(&mut want);
                        r.apply(op);
                    }
                    _ => {
                        let op = put(&key, i as u64 + 2);
                        op.apply_to(&mut want);
                        r.apply(op);
                    }
                }
            }
            let (entries, index) = r.finish_indexed();
            prop_assert_eq!(versions(&entries), versions(&want));
            prop_assert_eq!(index.len(), want.len());
            for e in &want {
                prop_assert_eq!(index.get(e.key_bytes()).map(Entry::version), Some(e.version()));
            }
        }
    }
}
