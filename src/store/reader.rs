//! The per-worker reader: enters the published copy, copies out what it needs, leaves at once.
//!
//! A live read guard stalls the writer's next `publish`, so no method here returns a guard or
//! anything borrowed from the map: entries come back as cloned `Arc`s.

use std::ops::Bound;

use left_right::{ReadHandle, ReadHandleFactory};

use super::op::{Entries, Map};
use super::value::{now_ms, Entry};

/// `entry`, unless it is past its expiry time: an expired key is absent to every read from its
/// time on, before the writer removes it. The clock is read only for keys that expire.
fn live(entry: Entry) -> Option<Entry> {
    match entry.expires_at() {
        Some(_) if entry.expired(now_ms()) => None,
        _ => Some(entry),
    }
}

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
#[derive(Debug, Default)]
pub struct Page {
    /// The matching entries, in byte order of the key.
    pub items: Vec<Entry>,
    /// Whether more keys match after the last one.
    pub more: bool,
    /// The seq of the state the page was read from: a watch from here misses nothing.
    pub seq: u64,
}

/// One key read, with the seq of the state it was read from.
#[derive(Debug, Default)]
pub struct Lookup {
    /// The key's entry, if present.
    pub entry: Option<Entry>,
    /// The seq of the published state read.
    pub seq: u64,
}

/// The size of the published map.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// The seq of the last publish.
    pub seq: u64,
    /// Keys in the map.
    pub keys: u64,
}

impl Page {
    /// The key to continue after: the last key of this page when more match, else `None`.
    pub fn next(&self) -> Option<&str> {
        if self.more {
            self.items.last().map(Entry::key)
        } else {
            None
        }
    }
}

impl Reader {
    /// The current entry of `key`, or `None` if absent (or if the store has shut down).
    pub fn get(&self, key: &str) -> Option<Entry> {
        let entry = self.0.enter()?.get(key.as_bytes()).cloned()?;
        live(entry)
    }

    /// The current entry of `key` and the seq of the state it came from, in one enter.
    pub fn lookup(&self, key: &str) -> Lookup {
        match self.0.enter() {
            Some(map) => Lookup {
                entry: map.get(key.as_bytes()).cloned().and_then(live),
                seq: map.seq,
            },
            None => Lookup::default(),
        }
    }

    /// Every entry and the seq, from one publish: what a cluster node's Raft snapshot holds.
    /// Copies pointers, not values, but holds the guard for the copy (milliseconds at a
    /// million keys), which delays the writer's next publish that long.
    pub fn copy_all(&self) -> (Entries, u64) {
        self.0
            .enter()
            .map_or_else(Default::default, |m| (m.entries.clone(), m.seq))
    }

    /// The seq and key count of the published map, from one publish.
    pub fn stats(&self) -> Stats {
        self.0.enter().map_or(Stats::default(), |m| Stats {
            seq: m.seq,
            keys: m.entries.len() as u64,
        })
    }

    /// Entries whose key starts with `prefix`, strictly after `after`, at most `limit`.
    ///
    /// A range scan over the ordered map: cost is the page, not the map.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Page {
        let Some(map) = self.0.enter() else {
            return Page::default();
        };
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.as_bytes()),
            _ => Bound::Included(prefix.as_bytes()),
        };
        // The clock is read once, and only if a key in the page has an expiry time.
        let mut now = None;
        let mut iter = map
            .entries
            .range::<[u8], _>((start, Bound::Unbounded))
            .take_while(|e| e.key_bytes().starts_with(prefix.as_bytes()))
            .filter(|e| e.expires_at().is_none() || !e.expired(*now.get_or_insert_with(now_ms)));
        let items: Vec<Entry> = iter.by_ref().take(limit).cloned().collect();
        let more = iter.next().is_some();
        Page {
            items,
            more,
            seq: map.seq,
        }
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
