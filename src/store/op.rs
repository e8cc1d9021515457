//! `Op`, the only way the map changes, and the map both left-right copies hold.
//!
//! The writer settles every version before it appends an op, so absorbing an op is a pure,
//! deterministic map update: both copies (and the snapshot replica, which applies the same ops)
//! stay identical.

use std::collections::BTreeMap;
use std::sync::Arc;

use left_right::Absorb;

use super::value::Value;

/// The ordered map of keys to values. Ordered, so a listing page is a range scan, not a sort.
pub type Entries = BTreeMap<Arc<str>, Value>;

/// One change to the map, with everything it needs already decided by the writer.
#[derive(Debug, Clone)]
pub enum Op {
    /// Set `key` to `value` (whose version the writer has already assigned).
    Put {
        /// The key, shared with every copy of the map.
        key: Arc<str>,
        /// The new value.
        value: Value,
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
            Op::Put { key, value } => {
                map.insert(Arc::clone(key), value.clone());
            }
            Op::Delete { key } => {
                map.remove(&**key);
            }
        }
    }

    /// Like [`Op::apply_to`], but moves the key and value in instead of cloning the `Arc`s.
    pub fn apply_owned(self, map: &mut Entries) {
        match self {
            Op::Put { key, value } => {
                map.insert(key, value);
            }
            Op::Delete { key } => {
                map.remove(&*key);
            }
        }
    }
}

/// The data structure each left-right copy holds.
#[derive(Debug, Clone, Default)]
pub struct Map {
    /// Every key and its value, in byte order of the key.
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
            key: Arc::from(k),
            value: Value::new(v, b"1"),
        }
    }

    #[test]
    fn both_copies_agree_after_absorbing() {
        let (mut w, r) = left_right::new_from_empty::<Map, Op>(Map::default());
        w.append(put("a", 1)).append(put("b", 2)).publish();
        w.append(Op::Delete {
            key: Arc::from("a"),
        })
        .append(put("c", 3))
        .publish();
        // A second publish makes the writer replay the log onto the other copy.
        w.publish();
        let read: Vec<_> = r
            .enter()
            .expect("writer alive")
            .entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.version()))
            .collect();
        assert_eq!(read, vec![("b".into(), 2), ("c".into(), 3)]);
        let writer_view: Vec<_> = w
            .enter()
            .expect("writer alive")
            .entries
            .keys()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(writer_view, vec!["b", "c"]);
    }

    #[test]
    fn deleting_an_absent_key_is_a_no_op() {
        let mut m = Entries::new();
        Op::Delete {
            key: Arc::from("x"),
        }
        .apply_to(&mut m);
        assert!(m.is_empty());
    }
}
