//! `Op`, the only way the map changes, and the map both left-right copies hold.
//!
//! The writer settles every version before it appends an op, so absorbing an op is a pure,
//! deterministic map update: both copies (and the snapshot replica, which applies the same ops)
//! stay identical.

use std::collections::BTreeSet;
use std::sync::Arc;

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
    },
}

impl Op {
    /// Applies the op to any ordered map: a left-right copy or the snapshot replica.
    pub fn apply_to(&self, map: &mut Entries) {
        match self {
            // `replace`, not `insert`: entries compare by key, and `insert` keeps the old one.
            Op::Put { entry } => {
                map.replace(entry.clone());
            }
            Op::Delete { key } => {
                map.remove(key.as_bytes());
            }
        }
    }

    /// Like [`Op::apply_to`], but moves the entry in instead of cloning the `Arc`.
    pub fn apply_owned(self, map: &mut Entries) {
        match self {
            Op::Put { entry } => {
                map.replace(entry);
            }
            Op::Delete { key } => {
                map.remove(key.as_bytes());
            }
        }
    }
}

/// The data structure each left-right copy holds.
#[derive(Debug, Clone, Default)]
pub struct Map {
    /// Every entry, in byte order of the key.
    pub entries: Entries,
}

impl Absorb<Op> for Map {
    fn absorb_first(&mut self, op: &mut Op, _other: &Self) {
        op.apply_to(&mut self.entries);
    }

    fn absorb_second(&mut self, op: Op, _other: &Self) {
        op.apply_owned(&mut self.entries);
    }

    fn sync_with(&mut self, first: &Self) {
        self.entries = first.entries.clone();
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
        w.append(put("a", 1)).append(put("b", 2)).publish();
        w.append(Op::Delete {
            key: Arc::from("a"),
        })
        .append(put("c", 3))
        .append(put("b", 4))
        .publish();
        // A second publish makes the writer replay the log onto the other copy.
        w.publish();
        let read = versions(&r.enter().expect("writer alive").entries);
        assert_eq!(read, vec![("b".into(), 4), ("c".into(), 3)]);
        let writer_view = versions(&w.enter().expect("writer alive").entries);
        assert_eq!(writer_view, read);
    }

    #[test]
    fn a_put_replaces_the_entry_and_a_delete_of_an_absent_key_is_a_no_op() {
        let mut m = Entries::new();
        put("k", 1).apply_to(&mut m);
        put("k", 2).apply_owned(&mut m);
        assert_eq!(versions(&m), vec![("k".into(), 2)]);
        Op::Delete {
            key: Arc::from("x"),
        }
        .apply_to(&mut m);
        assert_eq!(m.len(), 1);
    }
}
