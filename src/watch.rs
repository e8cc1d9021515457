//! The watch hub: a bounded ring of recent change events and a bounded queue per watcher.
//!
//! Data enters through [`Feed`], the [`Sink`] the writer is given: every published batch, which
//! a hub thread turns into events (one per changed key, each with the seq of its write),
//! appends to the ring (the last `--watch-history` events, evicted a whole seq at a time so a
//! resume point is never split), and hands to every watcher whose filter matches. It leaves
//! through [`Subscription`]s, which `GET /watch` and blocking reads turn into responses.
//!
//! A subscription taken with `since` is filled from the ring and registered for live events
//! under one lock, so it sees every event after `since` exactly once. Each watcher's queue is
//! bounded: a watcher that falls behind is cut off (its stream ends with `event: reset`) and
//! never slows the writer, the hub or the others. In `sync` the writer publishes only flushed
//! writes, so watchers only ever see flushed writes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use tokio::sync::mpsc as queue;

use crate::store::{Entry, Faults, Op, Published, Sink};

/// Batches of events a watcher may have queued before it is cut off.
pub const QUEUE_BATCHES: usize = 1024;

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Set by a write.
    Put,
    /// Removed by a write.
    Delete,
    /// Removed by the server because its expiry time passed.
    Expire,
}

impl Kind {
    /// The `type` of the event's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Put => "put",
            Kind::Delete => "delete",
            Kind::Expire => "expire",
        }
    }
}

/// One change: a key, the seq of the write that changed it, and (for a put) its new entry.
#[derive(Debug, Clone)]
pub struct Event {
    /// The seq of the write (shared by every change of one batch).
    pub seq: u64,
    /// What happened.
    pub kind: Kind,
    /// The key.
    pub key: Arc<str>,
    /// The new entry of a put (its value and version).
    pub entry: Option<Entry>,
}

/// How many text formats a [`Group`] keeps a memo for (SSE and NDJSON).
pub const TEXT_FORMATS: usize = 2;

/// One seq's events as a watcher takes them, with a memo of their text.
///
/// Every watcher that takes all of a seq's events gets the same `Group` (a reference count,
/// not a copy of the events), so the text is formatted once per format, not once per watcher:
/// with 1 000 watchers on a busy prefix, the hub's CPU fell by a third and deliveries rose by
/// 15 % (BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct Group(Arc<GroupInner>);

#[derive(Debug)]
struct GroupInner {
    events: Vec<Event>,
    texts: [OnceLock<Vec<u8>>; TEXT_FORMATS],
}

impl Group {
    fn new(events: Vec<Event>) -> Group {
        Group(Arc::new(GroupInner {
            events,
            texts: Default::default(),
        }))
    }

    /// The text of the whole group in format `slot` (below [`TEXT_FORMATS`]), made by
    /// `render` for the first watcher that asks and shared with the others.
    pub fn text(&self, slot: usize, render: impl FnOnce(&[Event]) -> Vec<u8>) -> &[u8] {
        self.0.texts[slot].get_or_init(|| render(&self.0.events))
    }
}

impl std::ops::Deref for Group {
    type Target = [Event];

    fn deref(&self) -> &[Event] {
        &self.0.events
    }
}

/// Which keys a watcher wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Every key starting with this (empty: every key).
    Prefix(String),
    /// One key.
    Key(String),
}

impl Filter {
    /// Whether the filter takes `key`.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Filter::Prefix(p) => key.starts_with(p.as_str()),
            Filter::Key(k) => key == k,
        }
    }
}

/// A resume point: after every event of seqs below `seq`, and after the first `skip`
/// matching events of `seq` itself (`<seq>.<i>` resumes with `skip = i + 1`; `<seq>` with all
/// of them: `skip = usize::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since {
    /// The seq the client saw (part of).
    pub seq: u64,
    /// How many matching events of that seq it saw.
    pub skip: usize,
}

impl Since {
    /// After everything up to and including `seq`.
    pub fn after(seq: u64) -> Since {
        Since {
            seq,
            skip: usize::MAX,
        }
    }

    /// Parses an event id: `<seq>` or `<seq>.<i>`, digits only (no sign, no spaces).
    pub fn parse(id: &str) -> Option<Since> {
        fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        match id.split_once('.') {
            None => digits(id).map(Since::after),
            Some((seq, i)) => {
                let seq = digits(seq)?;
                let i: usize = digits(i)?;
                Some(Since {
                    seq,
                    skip: i.checked_add(1)?,
                })
            }
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The events after `since` are no longer all kept.
    #[error("the events after seq {since} are no longer kept (the oldest resumable seq is {oldest}); list the keys afresh and watch from the listing's Twinkv-Seq")]
    Gone {
        /// What the client asked for.
        since: u64,
        /// The smallest `since` still served.
        oldest: u64,
        /// The current seq.
        seq: u64,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Closed,
}

/// One watcher's end: the events after its resume point, a batch (one seq's matching events)
/// at a time.
#[derive(Debug)]
pub struct Subscription {
    /// Events taken from the history when subscribing, to deliver first.
    pub backlog: VecDeque<Group>,
    /// Live batches.
    pub live: queue::Receiver<Group>,
    /// Set when the hub cut this watcher off for falling behind (then `live` ends).
    pub cut_off: Arc<AtomicBool>,
    /// Where the stream resumes: earlier events (which may still arrive live, when the hub lags
    /// behind the reader that gave the client its seq) are dropped.
    pub since: Since,
    /// Counts the open subscriptions; decremented on drop.
    count: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    /// The next batch of matching events (one seq's), with the index within that seq's
    /// matching events of the first one returned (not 0 when resuming inside a seq); `None`
    /// once the stream must end (cut off, or the server shuts down; see
    /// [`Subscription::cut_off`]).
    pub async fn next(&mut self) -> Option<(usize, Group)> {
        loop {
            let batch = match self.backlog.pop_front() {
                Some(b) => b,
                None => self.live.recv().await?,
            };
            if let Some(taken) = self.resume(batch) {
                return Some(taken);
            }
        }
    }

    /// Like [`Subscription::next`], but only what is already queued: `None` when nothing is
    /// (the stream then writes what it has gathered instead of waiting).
    pub fn try_next(&mut self) -> Option<(usize, Group)> {
        loop {
            let batch = match self.backlog.pop_front() {
                Some(b) => b,
                None => self.live.try_recv().ok()?,
            };
            if let Some(taken) = self.resume(batch) {
                return Some(taken);
            }
        }
    }

    /// What of `batch` comes after the resume point.
    fn resume(&self, batch: Group) -> Option<(usize, Group)> {
        let seq = batch.first().map_or(0, |e| e.seq);
        if seq < self.since.seq {
            return None;
        }
        if seq == self.since.seq {
            let skip = self.since.skip.min(batch.len());
            if skip == batch.len() {
                return None;
            }
            return Some((skip, Group::new(batch[skip..].to_vec())));
        }
        Some((0, batch))
    }
}

/// A registered watcher, as the hub holds it.
#[derive(Debug)]
struct Watcher {
    filter: Filter,
    tx: queue::Sender<Group>,
    cut_off: Arc<AtomicBool>,
}

/// What the hub keeps under its lock.
#[derive(Debug)]
struct State {
    /// The last `capacity` events (whole seqs), oldest first.
    ring: VecDeque<Event>,
    /// How many events the ring keeps.
    capacity: usize,
    /// Every event at or below this seq may have been evicted (at start: the recovered seq,
    /// whose events were never seen).
    evicted_through: u64,
    /// The seq of the last batch seen.
    seq: u64,
    watchers: Vec<Watcher>,
    /// The watchers (their place in `watchers`) by prefix and by key, so an event costs the
    /// watchers it matches (one lookup per prefix of its key), not one check per watcher.
    by_prefix: HashMap<String, Vec<usize>>,
    by_key: HashMap<String, Vec<usize>>,
    /// Batches since watchers whose clients went away were last swept out.
    since_sweep: u32,
    /// Set at shutdown: no new subscription, every stream ended.
    closed: bool,
}

/// Watchers whose clients went away are swept out at least this often (in batches), and at
/// every subscription.
const SWEEP_EVERY: u32 = 256;

impl State {
    /// Rebuilds the indexes after `watchers` changed.
    fn reindex(&mut self) {
        self.by_prefix.clear();
        self.by_key.clear();
        for (i, w) in self.watchers.iter().enumerate() {
            let (map, name) = match &w.filter {
                Filter::Prefix(p) => (&mut self.by_prefix, p),
                Filter::Key(k) => (&mut self.by_key, k),
            };
            map.entry(name.clone()).or_default().push(i);
        }
    }

    /// Drops the watchers in `dead` (their places), or whose clients went away.
    fn remove(&mut self, dead: &HashSet<usize>) {
        let before = self.watchers.len();
        let mut i = 0;
        self.watchers.retain(|w| {
            let keep = !dead.contains(&i) && !w.tx.is_closed();
            i += 1;
            keep
        });
        if self.watchers.len() != before {
            self.reindex();
        }
    }
}

/// The hub, shared by HTTP workers (who subscribe) and its thread (which fans out).
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    /// Open subscriptions, for `twinkv_watchers`.
    count: Arc<AtomicUsize>,
}

impl Hub {
    /// Subscribes to the events matching `filter` after `since` (`None`: from the next change).
    pub fn subscribe(
        &self,
        filter: Filter,
        since: Option<Since>,
    ) -> Result<Subscription, WatchError> {
        let mut st = self.state.lock().expect("watch hub lock");
        if st.closed {
            return Err(WatchError::Closed);
        }
        // A `since` past the hub's seq is one the reader gave before the hub heard of the
        // batch: its events arrive live and `Subscription::next` drops what it has seen.
        let since = since.unwrap_or(Since::after(st.seq));
        // Resuming inside a seq needs that seq's events, so it must not be evicted either.
        let needs = if since.skip == usize::MAX {
            since.seq
        } else {
            since.seq.saturating_sub(1)
        };
        if needs < st.evicted_through {
            return Err(WatchError::Gone {
                since: since.seq,
                oldest: st.evicted_through,
                seq: st.seq,
            });
        }
        let mut backlog: Vec<Vec<Event>> = Vec::new();
        for e in st.ring.iter() {
            let wanted = e.seq > since.seq || (e.seq == since.seq && since.skip != usize::MAX);
            if !wanted || !filter.matches(&e.key) {
                continue;
            }
            match backlog.last_mut() {
                Some(b) if b[0].seq == e.seq => b.push(e.clone()),
                _ => backlog.push(vec![e.clone()]),
            }
        }
        let backlog = backlog.into_iter().map(Group::new).collect();
        let (tx, live) = queue::channel(QUEUE_BATCHES);
        let cut_off = Arc::new(AtomicBool::new(false));
        st.remove(&HashSet::new());
        st.watchers.push(Watcher {
            filter,
            tx,
            cut_off: Arc::clone(&cut_off),
        });
        st.reindex();
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(Subscription {
            backlog,
            live,
            cut_off,
            since,
            count: Arc::clone(&self.count),
        })
    }

    /// Watchers the hub is feeding (a watcher cut off for falling behind, or whose client
    /// went away, no longer counts).
    pub fn watchers(&self) -> u64 {
        let st = self.state.lock().expect("watch hub lock");
        st.watchers.iter().filter(|w| !w.tx.is_closed()).count() as u64
    }

    /// Subscriptions not yet dropped (their streams may still be ending).
    pub fn subscriptions(&self) -> u64 {
        self.count.load(Ordering::Relaxed) as u64
    }

    /// The seq of the last batch the hub has seen.
    pub fn seq(&self) -> u64 {
        self.state.lock().expect("watch hub lock").seq
    }

    /// Ends every stream and refuses new ones (shutdown: streams must not hold it up).
    pub fn close(&self) {
        let mut st = self.state.lock().expect("watch hub lock");
        st.closed = true;
        st.watchers.clear();
        st.reindex();
    }

    /// Takes one published batch: events into the ring, then to each matching watcher.
    fn take(&self, batch: &Published) {
        let events = events(&batch.ops);
        let mut st = self.state.lock().expect("watch hub lock");
        st.seq = st.seq.max(batch.seq);
        if batch.ops.iter().any(|op| matches!(op, Op::Reset { .. })) {
            // A cluster node installed a leader's image: it cannot say which keys changed on
            // the way, so every watcher ends with `reset`, and resuming from before the image
            // gets 410; the history starts again after it.
            for w in &st.watchers {
                w.cut_off.store(true, Ordering::Relaxed);
            }
            st.watchers.clear();
            st.reindex();
            st.ring.clear();
            st.evicted_through = st.evicted_through.max(batch.seq);
            return;
        }
        if events.is_empty() {
            return;
        }
        st.ring.extend(events.iter().cloned());
        // Evict whole seqs, oldest first, past the capacity.
        while st.ring.len() > st.capacity {
            let Some(oldest) = st.ring.front().map(|e| e.seq) else {
                break;
            };
            while st.ring.front().is_some_and(|e| e.seq == oldest) {
                st.ring.pop_front();
            }
            st.evicted_through = st.evicted_through.max(oldest);
        }
        // Which events each watcher takes, found through the indexes.
        let mut hits: HashMap<usize, Vec<usize>> = HashMap::new();
        for (n, e) in events.iter().enumerate() {
            let key: &str = &e.key;
            if !st.by_prefix.is_empty() {
                for end in (0..=key.len()).filter(|&b| key.is_char_boundary(b)) {
                    if let Some(ws) = st.by_prefix.get(&key[..end]) {
                        for &w in ws {
                            hits.entry(w).or_default().push(n);
                        }
                    }
                }
            }
            if let Some(ws) = st.by_key.get(key) {
                for &w in ws {
                    hits.entry(w).or_default().push(n);
                }
            }
        }
        // Where each seq starts in `events`, and each seq's events as one group shared by
        // every watcher that takes all of them, made when the first such watcher needs it (a
        // batch no watcher takes costs no copy).
        let mut starts = Vec::new();
        if !hits.is_empty() {
            for (n, e) in events.iter().enumerate() {
                if n == 0 || events[n - 1].seq != e.seq {
                    starts.push(n);
                }
            }
            starts.push(events.len());
        }
        let mut shared: Vec<Option<Group>> = vec![None; starts.len().saturating_sub(1)];
        let mut dead = HashSet::new();
        for (w, taken) in hits {
            let watcher = &st.watchers[w];
            // One queue item per seq: the changes of one batch travel together. A watcher
            // that takes all of a seq's events gets the shared group.
            let mut rest = &taken[..];
            while let Some(&n) = rest.first() {
                let g = starts.partition_point(|&s| s <= n) - 1;
                let (start, end) = (starts[g], starts[g + 1]);
                let here = rest.partition_point(|&m| m < end);
                let group = if here == end - start {
                    shared[g]
                        .get_or_insert_with(|| Group::new(events[start..end].to_vec()))
                        .clone()
                } else {
                    Group::new(rest[..here].iter().map(|&m| events[m].clone()).collect())
                };
                rest = &rest[here..];
                match watcher.tx.try_send(group) {
                    Ok(()) => {}
                    Err(queue::error::TrySendError::Full(_)) => {
                        // Too slow: cut off, so it never slows anyone else.
                        watcher.cut_off.store(true, Ordering::Relaxed);
                        dead.insert(w);
                        break;
                    }
                    Err(queue::error::TrySendError::Closed(_)) => {
                        dead.insert(w);
                        break;
                    }
                }
            }
        }
        st.since_sweep += 1;
        if !dead.is_empty() || st.since_sweep >= SWEEP_EVERY {
            st.since_sweep = 0;
            st.remove(&dead);
        }
    }
}

/// The events of a batch's ops, in order.
fn events(ops: &[Op]) -> Vec<Event> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Put { entry } => Some(Event {
                seq: entry.version(),
                kind: Kind::Put,
                key: Arc::from(entry.key()),
                entry: Some(entry.clone()),
            }),
            Op::Delete { key, seq } => Some(Event {
                seq: *seq,
                kind: Kind::Delete,
                key: Arc::clone(key),
                entry: None,
            }),
            Op::Expire { key, seq } => Some(Event {
                seq: *seq,
                kind: Kind::Expire,
                key: Arc::clone(key),
                entry: None,
            }),
            // A replica that installs a leader's image has no per-key events to give.
            Op::Seq { .. } | Op::Reset { .. } => None,
        })
        .collect()
}

/// The writer's end of the hub's inbox.
#[derive(Debug)]
pub struct Feed(mpsc::Sender<Published>);

impl Sink for Feed {
    fn published(&mut self, batch: &Published) {
        let _ = self.0.send(batch.clone());
    }

    fn checkpoint(&mut self, _seq: u64) {}
}

/// The hub's thread.
#[derive(Debug)]
pub struct HubThread {
    join: JoinHandle<Option<()>>,
}

impl HubThread {
    /// Waits for the thread, which ends once the writer drops the [`Feed`].
    pub fn join(self) {
        let _ = self.join.join();
    }
}

/// Starts a hub keeping `history` events, at `seq` (the recovered seq: no event before it is
/// known).
pub fn start(
    history: usize,
    seq: u64,
    faults: &Faults,
) -> std::io::Result<(Feed, Arc<Hub>, HubThread)> {
    let hub = Arc::new(Hub {
        state: Mutex::new(State {
            ring: VecDeque::new(),
            capacity: history,
            evicted_through: seq,
            seq,
            watchers: Vec::new(),
            by_prefix: HashMap::new(),
            by_key: HashMap::new(),
            since_sweep: 0,
            closed: false,
        }),
        count: Arc::new(AtomicUsize::new(0)),
    });
    let (tx, rx) = mpsc::channel::<Published>();
    let thread_hub = Arc::clone(&hub);
    let join = faults.spawn("twinkv-watch", move || {
        while let Ok(batch) = rx.recv() {
            thread_hub.take(&batch);
        }
    })?;
    Ok((Feed(tx), hub, HubThread { join }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, seq: u64) -> Op {
        Op::Put {
            entry: Entry::new(key, seq, b"1"),
        }
    }

    fn batch(seq: u64, ops: Vec<Op>) -> Published {
        Published {
            seq,
            ops: ops.into(),
            logged: Default::default(),
            tag: None,
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures_executor::block_on(f)
    }

    fn seqs(sub: &mut Subscription) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Some(b) = sub.backlog.front().cloned() {
            let _ = b;
            let (_, got) = block_on(sub.next()).unwrap();
            out.extend(got.iter().map(|e| (e.seq, e.key.to_string())));
        }
        out
    }

    #[test]
    fn watchers_that_take_a_whole_seq_share_its_text_and_the_others_get_their_own() {
        let (_feed, hub, _t) = start(16, 0, &Faults::default()).unwrap();
        let mut all = [(); 3].map(|()| hub.subscribe(Filter::Prefix(String::new()), None).unwrap());
        let mut part = hub.subscribe(Filter::Prefix("a/".into()), None).unwrap();
        // One seq with two changes, then a seq with one.
        hub.take(&batch(5, vec![put("a/1", 5), put("b/1", 5)]));
        hub.take(&batch(6, vec![put("a/2", 6)]));
        let renders = std::cell::Cell::new(0);
        let render = |events: &[Event]| {
            renders.set(renders.get() + 1);
            events
                .iter()
                .map(|e| e.key.as_bytes()[0])
                .collect::<Vec<u8>>()
        };
        for sub in &mut all {
            let (first, group) = block_on(sub.next()).unwrap();
            assert_eq!((first, group.len()), (0, 2));
            assert_eq!(group.text(0, render), b"ab");
        }
        assert_eq!(renders.get(), 1, "formatted once for the three watchers");
        let (_, group) = block_on(part.next()).unwrap();
        assert_eq!(
            group.len(),
            1,
            "a watcher of part of the seq gets only its part"
        );
        assert_eq!(group.text(0, render), b"a");
        assert_eq!(renders.get(), 2, "and a text of its own");
        // A seq whose every change the prefix takes is shared again.
        let (_, group) = block_on(part.next()).unwrap();
        let (_, whole) = block_on(all[0].next()).unwrap();
        assert_eq!(group.text(1, render), whole.text(1, render));
        assert_eq!(renders.get(), 3);
    }

    #[test]
    fn an_installed_image_ends_every_watcher_and_the_history_before_it() {
        let (_feed, hub, _t) = start(16, 0, &Faults::default()).unwrap();
        hub.take(&batch(1, vec![put("a", 1)]));
        let mut sub = hub.subscribe(Filter::Prefix(String::new()), None).unwrap();
        hub.take(&batch(
            9,
            vec![Op::Reset {
                entries: Arc::new(Default::default()),
                seq: 9,
            }],
        ));
        assert!(block_on(sub.next()).is_none(), "the stream ends");
        assert!(
            sub.cut_off.load(Ordering::Relaxed),
            "as cut off: it says reset"
        );
        assert!(matches!(
            hub.subscribe(Filter::Prefix(String::new()), Some(Since::after(1))),
            Err(WatchError::Gone { .. })
        ));
        let mut after = hub
            .subscribe(Filter::Prefix(String::new()), Some(Since::after(9)))
            .unwrap();
        hub.take(&batch(10, vec![put("b", 10)]));
        assert_eq!(block_on(after.next()).unwrap().1[0].seq, 10);
    }

    #[test]
    fn resuming_replays_exactly_what_came_after_and_refuses_a_lost_history() {
        let (_feed, hub, _t) = start(4, 0, &Faults::default()).unwrap();
        hub.take(&batch(1, vec![put("a", 1)]));
        hub.take(&batch(2, vec![put("b/1", 2), put("b/2", 2), put("c", 2)]));
        hub.take(&batch(
            3,
            vec![Op::Delete {
                key: Arc::from("b/1"),
                seq: 3,
            }],
        ));
        // Five events kept in four places: seq 1 was evicted whole.
        let gone = hub.subscribe(Filter::Prefix(String::new()), Some(Since::after(0)));
        assert!(matches!(
            gone,
            Err(WatchError::Gone {
                oldest: 1,
                seq: 3,
                ..
            })
        ));
        let mut all = hub
            .subscribe(Filter::Prefix("b/".into()), Some(Since::after(1)))
            .unwrap();
        assert_eq!(
            seqs(&mut all),
            vec![(2, "b/1".into()), (2, "b/2".into()), (3, "b/1".into())]
        );
        // `2.0` saw the first matching event of seq 2: the rest of it, then seq 3.
        let mut mid = hub
            .subscribe(Filter::Prefix("b/".into()), Since::parse("2.0"))
            .unwrap();
        assert_eq!(
            block_on(mid.next()).unwrap().0,
            1,
            "resumes at index 1 of seq 2"
        );
        assert_eq!(seqs(&mut mid), vec![(3, "b/1".into())]);
        // A resume point the hub has not reached yet: what comes up to it is dropped.
        let mut ahead = hub
            .subscribe(Filter::Prefix(String::new()), Some(Since::after(4)))
            .unwrap();
        hub.take(&batch(4, vec![put("x", 4)]));
        hub.take(&batch(5, vec![put("y", 5)]));
        assert_eq!(block_on(ahead.next()).unwrap().1[0].seq, 5);
        assert_eq!(Since::parse("7"), Some(Since::after(7)));
        assert_eq!(Since::parse("7.2"), Some(Since { seq: 7, skip: 3 }));
        assert_eq!(Since::parse("x"), None);
        assert_eq!(Since::parse("7.x"), None);
        for signed in ["+7", "7.+2", "+0.0", " 7", "7.", ".2", "-1"] {
            assert_eq!(Since::parse(signed), None, "{signed:?}");
        }
    }

    #[test]
    fn a_watcher_that_does_not_read_is_cut_off_and_the_others_go_on() {
        let (_feed, hub, _t) = start(10, 0, &Faults::default()).unwrap();
        let slow = hub.subscribe(Filter::Prefix(String::new()), None).unwrap();
        let mut fast = hub.subscribe(Filter::Key("k".into()), None).unwrap();
        for seq in 1..=(QUEUE_BATCHES as u64 + 5) {
            hub.take(&batch(seq, vec![put("other", seq)]));
        }
        assert!(slow.cut_off.load(Ordering::Relaxed));
        hub.take(&batch(9_999, vec![put("k", 9_999)]));
        let (_, got) = block_on(fast.next()).unwrap();
        assert_eq!(got[0].seq, 9_999);
        assert!(!fast.cut_off.load(Ordering::Relaxed));
        assert_eq!(hub.watchers(), 1, "the slow one is no longer fed");
        assert_eq!(hub.subscriptions(), 2);
        drop(slow);
        assert_eq!(hub.subscriptions(), 1);
        hub.close();
        assert_eq!(block_on(fast.next()).map(|(_, b)| b.len()), None);
    }
}
