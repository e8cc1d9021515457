//! The per-worker reader: enters the published copy, copies out what it needs, leaves at once.
//!
//! A live read guard stalls the writer's next `publish`, so no method here returns a guard or
//! anything borrowed from the map: values come back as cloned `Arc`s, keys as owned strings.

use std::ops::Bound;
use std::sync::Arc;

use left_right::{ReadHandle, ReadHandleFactory};

use super::op::Map;
use super::value::Value;

/// Makes one [`Reader`] per thread. Shareable: hand it to every HTTP worker's factory closure.
#[derive(Clone, Debug)]
pub struct ReaderFactory(pub(super) ReadHandleFactory<Map>);

impl ReaderFactory {
    /// A new reader for the calling thread. Create it up front, never while another read guard
    /// is held on the same thread (left-right PR #159).
    pub fn reader(&self) -> Reader {
        Reader(self.0.handle())
    }
}

/// A reader of the published map. One per thread: it is `Send` but not `Sync`.
///
/// ```compile_fail
/// fn shared<T: Sync>() {}
/// shared::<twinkv::Reader>();
/// ```
#[derive(Debug)]
pub struct Reader(ReadHandle<Map>);

/// A page of a listing.
#[derive(Debug, Default, PartialEq)]
pub struct Page {
    /// The keys (and their values, when asked for) in byte order.
    pub items: Vec<(Arc<str>, Option<Value>)>,
    /// The last key of this page when more keys match, else `None`.
    pub next: Option<Arc<str>>,
}

impl Reader {
    /// The current value of `key`, or `None` if absent (or if the store has shut down).
    pub fn get(&self, key: &str) -> Option<Value> {
        self.0.enter()?.entries.get(key).cloned()
    }

    /// Keys starting with `prefix`, strictly after `after`, at most `limit` of them.
    ///
    /// A range scan over the ordered map: cost is the page, not the map.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize, values: bool) -> Page {
        let Some(map) = self.0.enter() else {
            return Page::default();
        };
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut iter = map
            .entries
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        let mut items = Vec::with_capacity(limit.min(1024));
        for (k, v) in iter.by_ref().take(limit) {
            items.push((Arc::clone(k), values.then(|| v.clone())));
        }
        let next = match iter.next() {
            Some(_) => items.last().map(|(k, _)| Arc::clone(k)),
            None => None,
        };
        Page { items, next }
    }

    /// Number of keys in the published copy.
    pub fn len(&self) -> usize {
        self.0.enter().map_or(0, |m| m.entries.len())
    }

    /// Whether the published copy holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
