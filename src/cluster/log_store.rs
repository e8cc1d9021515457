//! openraft's log storage: the Raft log is the write-ahead log of `data/log/`, one Raft record
//! per entry (`log/record.rs`, "Raft records"), in segments named by their first index as a
//! standalone server's are, so `jq -c . data/log/*.jsonl` and `twinkv inspect` read it.
//!
//! The segments hold the entries in index order with no gap, each segment starting at the index
//! of its name. An append goes to the last segment, and a new one starts once it reaches the
//! segment size. A truncate (a new leader overwrote entries) cuts the segment holding the first
//! dropped entry at that record's start and deletes every later segment; the next append then
//! starts a segment of its own, so the rules hold. A purge (entries now in a Raft snapshot)
//! deletes whole segments only, so the point it reached is kept in `data/raft/purged.json`:
//! after a restart, entries at or below it are skipped. The vote is in `data/raft/vote.json`.
//! Both files are replaced atomically (write a temporary file, flush, rename, flush the dir).
//!
//! Opening reads the segments with the log's own scan, which checks every checksum, index and
//! name: a torn last record is cut off (kept in a `.broken` file, as a standalone start does),
//! any other damage refuses the start, naming the file and offset. The entries not yet purged
//! are also kept in memory, with each record's end offset: replication reads entries
//! constantly, and a truncate needs no rescan.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    CommittedLeaderId, EntryPayload, LogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;

use super::{Entry, NodeId, Proposal, TypeConfig};
use crate::log::record::{self, RaftBody, RaftPayload, Record};
use crate::log::{scan, segment_name};
use crate::store::Logged;

/// The vote file's name inside the Raft dir.
pub const VOTE_FILE: &str = "vote.json";
/// The purge point's file name inside the Raft dir: the last log id purged.
pub const PURGED_FILE: &str = "purged.json";

/// One segment as the store knows it.
#[derive(Debug, Default)]
struct Segment {
    /// The end offset of each record, the `i`th being the entry at the segment's first index
    /// plus `i`: where a truncate cuts, without reading the file again.
    ends: Vec<u64>,
}

impl Segment {
    fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// The index the next record of a segment starting at `first` has.
    fn next(&self, first: u64) -> u64 {
        first + self.ends.len() as u64
    }

    /// Whether a purge through `through` covers all of a segment starting at `first` (an empty
    /// one is covered once its first index is).
    fn covered(&self, first: u64, through: u64) -> bool {
        if self.ends.is_empty() {
            first <= through
        } else {
            self.next(first) - 1 <= through
        }
    }
}

/// What the log and its reader share.
#[derive(Debug)]
struct Inner {
    /// `data/log`: the segments.
    log_dir: PathBuf,
    /// `data/raft`: the vote and the purge point.
    raft_dir: PathBuf,
    /// Every segment on disk, by first index.
    segments: BTreeMap<u64, Segment>,
    /// The last segment, open for appending; `None`: the next append starts a new segment
    /// (after a roll, a truncate that cut an earlier segment, or a purge of everything).
    tail: Option<File>,
    /// Encoded records not yet written to `tail` (one write per segment per append).
    pending: Vec<u8>,
    /// The entries above the purge point, by index.
    entries: BTreeMap<u64, Entry>,
    purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    /// The index of the older slot image: segments holding anything after it stay, whatever
    /// openraft purged, so a start from either slot finds the log after its image (the
    /// contract's rule for the log, as standalone). `u64::MAX`: no image to keep a log for.
    floor: u64,
}

/// The Raft log storage (and, cloned, its reader).
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// Whether every append is flushed before it is acknowledged (`sync`).
    flush: bool,
    /// A segment is closed once it holds this many bytes.
    segment_bytes: u64,
    /// The highest index known committed (for `GET /cluster`).
    pub committed: Arc<AtomicU64>,
    /// Bytes of records appended since the log was opened: what decides when a Raft
    /// snapshot is due by size (see `Cluster::start`).
    pub written: Arc<AtomicU64>,
}

fn io_err(e: io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` with `bytes` atomically: a crash leaves the old file or the new one.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// The JSON file `path`, or `None` when it does not exist.
fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not valid: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Appends the Raft record of `e` to `out`; returns its length.
fn encode(out: &mut Vec<u8>, e: &Entry) -> u64 {
    let id = e.log_id;
    let (term, leader) = (id.leader_id.term, id.leader_id.node_id);
    let n = match &e.payload {
        EntryPayload::Blank => record::encode_raft(out, id.index, term, leader, RaftBody::Blank),
        EntryPayload::Normal(p) => {
            let body = RaftBody::Normal {
                now: p.now,
                writes: &p.writes,
            };
            record::encode_raft(out, id.index, term, leader, body)
        }
        EntryPayload::Membership(m) => {
            let raw = serde_json::value::to_raw_value(m).expect("a membership serializes");
            record::encode_raft(out, id.index, term, leader, RaftBody::Membership(&raw))
        }
    };
    n as u64
}

/// The entry a Raft record holds.
fn entry(rec: Record) -> Result<Entry, String> {
    let Some(raft) = rec.raft else {
        return Err("a standalone record (this is a standalone server's log)".into());
    };
    let log_id = LogId::new(CommittedLeaderId::new(raft.term, raft.leader), rec.index);
    let payload = match raft.payload {
        RaftPayload::Blank => EntryPayload::Blank,
        RaftPayload::Membership(m) => EntryPayload::Membership(
            serde_json::from_str(m.get())
                .map_err(|e| format!("a membership that is not one: {e}"))?,
        ),
        RaftPayload::Normal => {
            // The record's writes were checked as the scan decoded them; the proposal holds
            // them encoded again, as the leader encoded them (expiry times are absolute).
            let logged: Vec<Logged> = rec
                .writes
                .into_iter()
                .map(|w| Logged::as_sent(w, rec.now))
                .collect();
            EntryPayload::Normal(Proposal::encode(rec.now, &logged))
        }
    };
    Ok(Entry { log_id, payload })
}

/// What the segments of a data dir say, for `inspect`. Reads only.
#[derive(Debug)]
pub struct Survey {
    /// The log's folder.
    pub path: PathBuf,
    /// Entries above the purge point.
    pub entries: u64,
    /// The first and last of them.
    pub first: Option<u64>,
    /// See `first`.
    pub last: Option<u64>,
    /// The last index purged (in a Raft snapshot).
    pub purged: Option<u64>,
    /// Bytes of a torn last record (cut at the next start).
    pub torn_bytes: u64,
    /// Damage that makes the node refuse to start, or an unreadable purge point.
    pub error: Option<String>,
}

/// Reads the Raft log of `data_dir` as a start would, without changing anything.
pub fn survey(data_dir: &Path) -> Survey {
    let log_dir = data_dir.join(crate::log::DIR);
    let purged = read_json::<LogId<NodeId>>(&data_dir.join(super::DIR).join(PURGED_FILE));
    let (purged, mut error) = match purged {
        Ok(p) => (p.map(|p| p.index), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let (mut entries, mut first, mut last) = (0, None, None);
    let report = scan::scan(&log_dir, purged.map_or(0, |p| p + 1), |rec, _| {
        if rec.raft.is_none() {
            return Err("a standalone record (this is a standalone server's log)".into());
        }
        entries += 1;
        first.get_or_insert(rec.index);
        last = Some(rec.index);
        Ok(())
    });
    if let Some(d) = report.damage {
        error.get_or_insert(d.to_string());
    }
    Survey {
        path: log_dir,
        entries,
        first,
        last,
        purged,
        torn_bytes: report.torn.map_or(0, |t| t.bytes),
        error,
    }
}

impl LogStore {
    /// [`LogStore::open_from`] with no image: every segment may go once purged.
    #[cfg(test)]
    pub fn open(data_dir: &Path, flush: bool, segment_bytes: u64) -> io::Result<LogStore> {
        LogStore::open_from(data_dir, flush, segment_bytes, None)
    }

    /// Opens (or creates) the Raft log of the node whose data dir is `data_dir`: the segments
    /// in `data_dir/log`, the vote and purge point in `data_dir/raft`. A torn last record is
    /// cut off; any other damage is an error naming the file and offset. The node's map starts
    /// from the slot image holding the entries through `image`. When that image is older than the purge point (the newest slot was
    /// damaged and the start fell back to the older one), the log is read from the image on:
    /// the segments after it were kept for exactly this (see `Inner::floor`).
    pub fn open_from(
        data_dir: &Path,
        flush: bool,
        segment_bytes: u64,
        image: Option<LogId<NodeId>>,
    ) -> io::Result<LogStore> {
        let log_dir = data_dir.join(crate::log::DIR);
        let raft_dir = data_dir.join(super::DIR);
        fs::create_dir_all(&log_dir)?;
        fs::create_dir_all(&raft_dir)?;
        let mut purged: Option<LogId<NodeId>> = read_json(&raft_dir.join(PURGED_FILE))?;
        if let (Some(i), Some(p)) = (image, purged) {
            if i.index < p.index {
                tracing::warn!(
                    image = i.index,
                    purged = p.index,
                    "starting from an image older than the purge point; reading the log after it"
                );
                purged = Some(i);
            }
        }
        let vote: Option<Vote<NodeId>> = read_json(&raft_dir.join(VOTE_FILE))?;
        let mut entries = BTreeMap::new();
        // Each valid record's index and length, purged or not: the offsets of the records
        // after them depend on them.
        let mut lens = Vec::new();
        let report = scan::scan(&log_dir, 0, |rec, len| {
            lens.push((rec.index, len));
            if purged.is_some_and(|p| rec.index <= p.index) {
                // Only checked: a Raft snapshot holds it.
                return entry(rec).map(|_| ());
            }
            let e = entry(rec)?;
            entries.insert(e.log_id.index, e);
            Ok(())
        });
        if let Some(d) = report.damage {
            return Err(io::Error::new(io::ErrorKind::InvalidData, d.to_string()));
        }
        if let Some(t) = &report.torn {
            let kept = scan::repair(t)?;
            tracing::warn!(
                segment = %t.path.display(), offset = t.offset, bytes = t.bytes,
                kept = %kept.display(),
                "cut a torn record off the end of the Raft log (it was never acknowledged)"
            );
        }
        let mut lens = lens.into_iter();
        let mut segments = BTreeMap::new();
        for s in &report.segments {
            let mut seg = Segment::default();
            let mut end = 0;
            for _ in s.first_index..s.last_index.map_or(s.first_index, |l| l + 1) {
                let (_, len) = lens.next().expect("the scan visited every valid record");
                end += len;
                seg.ends.push(end);
            }
            segments.insert(s.first_index, seg);
        }
        let next = purged.map_or(0, |p| p.index + 1);
        if let Some((&first, _)) = entries.first_key_value() {
            if first > next {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the Raft log in {} starts at index {first}, but only entries up to {} \
                         are purged: entries are missing",
                        log_dir.display(),
                        next as i128 - 1
                    ),
                ));
            }
        }
        let mut inner = Inner {
            log_dir,
            raft_dir,
            segments,
            tail: None,
            pending: Vec::new(),
            entries,
            purged,
            vote,
            floor: image.map_or(u64::MAX, |i| i.index),
        };
        if let Some(p) = purged {
            // A purge interrupted between its file and its deletes ends here.
            inner.delete_covered(p.index)?;
        }
        if let Some((&first, _)) = inner.segments.last_key_value() {
            inner.tail = Some(OpenOptions::new().append(true).open(inner.path(first))?);
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            flush,
            segment_bytes: segment_bytes.max(1),
            committed: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Appends `entries` to the files, then to memory.
    fn append_entries(&self, entries: Vec<Entry>) -> io::Result<()> {
        let mut inner = self.inner.lock().expect("raft log lock");
        let result = self.write(&mut inner, &entries);
        // Records a failed append left unwritten are not written by a later one.
        inner.pending.clear();
        result?;
        for e in entries {
            inner.entries.insert(e.log_id.index, e);
        }
        Ok(())
    }

    /// Appends `entries` in order, rolling segments as they fill; with `flush`, makes them
    /// durable before returning.
    fn write(&self, inner: &mut Inner, entries: &[Entry]) -> io::Result<()> {
        let mut bytes = 0;
        for e in entries {
            let index = e.log_id.index;
            let end = inner.segments.last_key_value().map(|(&f, s)| s.next(f));
            if end.is_some_and(|end| index < end) {
                // An append over entries is a truncate first (openraft truncates itself
                // before it overwrites; this keeps the files right if it ever does not).
                inner.write_pending()?;
                inner.truncate(index)?;
                inner.entries.split_off(&index);
            }
            inner.place(index, self.segment_bytes)?;
            let n = encode(&mut inner.pending, e);
            bytes += n;
            let seg = inner
                .segments
                .values_mut()
                .next_back()
                .expect("place left a segment to append to");
            let end = seg.len() + n;
            seg.ends.push(end);
        }
        inner.write_pending()?;
        self.written.fetch_add(bytes, Ordering::Relaxed);
        if self.flush {
            if let Some(tail) = &inner.tail {
                tail.sync_data()?;
            }
        }
        Ok(())
    }
}

impl Inner {
    fn path(&self, first: u64) -> PathBuf {
        self.log_dir.join(segment_name(first))
    }

    /// Writes the encoded records to the tail segment.
    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let tail = self
            .tail
            .as_mut()
            .expect("pending records have a tail segment");
        tail.write_all(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// Makes the tail a segment whose next record is `index` and that has room: closes a full
    /// one (flushed, never written again) and starts the next, named `index`.
    fn place(&mut self, index: u64, segment_bytes: u64) -> io::Result<()> {
        if let Some((&first, seg)) = self.segments.last_key_value() {
            let next = seg.next(first);
            if seg.ends.is_empty() && next != index {
                // An empty segment (a torn record cut to nothing) named for another index.
                self.tail = None;
                fs::remove_file(self.path(first))?;
                self.segments.remove(&first);
            } else if next < index {
                // A hole: openraft never makes one (its storage suite does, in tests of what it
                // reads back). The entry starts a segment of its own, so every segment still
                // starts at its name, and a later scan reports the missing indexes.
                tracing::warn!(index, next, "a Raft log append leaves a hole");
                self.write_pending()?;
                self.tail = None;
            } else if next > index {
                unreachable!("`write` truncates before an append below the end");
            } else if seg.ends.is_empty() {
                if self.tail.is_none() {
                    self.tail = Some(OpenOptions::new().append(true).open(self.path(first))?);
                }
            } else if self.tail.is_some() && seg.len() >= segment_bytes {
                self.write_pending()?;
                self.tail.take().expect("checked").sync_data()?;
            }
        }
        if self.tail.is_none() {
            let path = self.path(index);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            sync_dir(&self.log_dir)?;
            self.segments.insert(index, Segment::default());
            self.tail = Some(file);
        }
        Ok(())
    }

    /// Deletes every segment a purge through `through` covers (whole segments only).
    fn delete_covered(&mut self, through: u64) -> io::Result<()> {
        let through = through.min(self.floor);
        let mut deleted = false;
        while let Some((&first, seg)) = self.segments.first_key_value() {
            if !seg.covered(first, through) {
                break;
            }
            if self.segments.len() == 1 {
                self.tail = None;
            }
            fs::remove_file(self.path(first))?;
            self.segments.remove(&first);
            deleted = true;
        }
        if deleted {
            sync_dir(&self.log_dir)?;
        }
        Ok(())
    }

    /// Drops the records from `index` on: cuts the segment holding it at that record's start
    /// (deleting it when that is its first), deletes every later segment, and flushes.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let tail_first = self.segments.last_key_value().map(|(&f, _)| f);
        let mut deleted = false;
        while let Some((&first, seg)) = self.segments.last_key_value() {
            if first >= index {
                if Some(first) == tail_first {
                    self.tail = None;
                }
                fs::remove_file(self.path(first))?;
                self.segments.remove(&first);
                deleted = true;
                continue;
            }
            let keep = (index - first) as usize;
            if keep < seg.ends.len() {
                let at = seg.ends[keep - 1];
                match (&self.tail, Some(first) == tail_first) {
                    (Some(tail), true) => {
                        tail.set_len(at)?;
                        tail.sync_all()?;
                    }
                    _ => {
                        let f = OpenOptions::new().write(true).open(self.path(first))?;
                        f.set_len(at)?;
                        f.sync_all()?;
                    }
                }
                self.segments
                    .get_mut(&first)
                    .expect("the segment just read")
                    .ends
                    .truncate(keep);
            }
            break;
        }
        if deleted {
            sync_dir(&self.log_dir)?;
        }
        Ok(())
    }
}

impl LogStore {
    /// A new image was written: `older` is the index of the one now in the other slot. The
    /// segments only before it are no longer needed by either slot, and go if purged.
    pub fn keep_after(&self, older: u64) -> io::Result<usize> {
        let mut inner = self.inner.lock().expect("raft log lock");
        inner.floor = older;
        let before = inner.segments.len();
        if let Some(p) = inner.purged {
            inner.delete_covered(p.index)?;
        }
        Ok(before - inner.segments.len())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let inner = self.inner.lock().expect("raft log lock");
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock().expect("raft log lock");
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().expect("raft log lock");
        let bytes = serde_json::to_vec(vote).expect("a vote serializes");
        replace(&inner.raft_dir, VOTE_FILE, &bytes)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().expect("raft log lock").vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Kept in memory only, for `GET /cluster`: after a restart the leader says it again.
        if let Some(c) = committed {
            self.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let result = self.append_entries(entries.into_iter().collect());
        let outcome = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(outcome);
        result.map_err(io_err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().expect("raft log lock");
        inner.truncate(log_id.index).map_err(io_err)?;
        inner.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().expect("raft log lock");
        if inner.purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        // The point first, then the deletes: a crash between them leaves segments the next
        // start skips and deletes, never a log that starts above the point.
        let bytes = serde_json::to_vec(&log_id).expect("a log id serializes");
        replace(&inner.raft_dir, PURGED_FILE, &bytes).map_err(io_err)?;
        inner.purged = Some(log_id);
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.delete_covered(log_id.index).map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::scan::LogReport;
    use crate::store::{Conditions, Expiry, PendingValue, Write};
    use openraft::Membership;

    fn id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// A normal entry putting `k<index>`, or the first membership at index 0.
    fn entry_at(term: u64, index: u64) -> Entry {
        let payload = if index == 0 {
            let nodes = BTreeMap::from([(1, super::super::Member::default())]);
            EntryPayload::Membership(Membership::new(vec![[1].into()], nodes))
        } else if index.is_multiple_of(5) {
            EntryPayload::Blank
        } else {
            let w = Write::Put {
                key: Arc::from(format!("k{index}")),
                value: PendingValue::from_text("v"),
                cond: Conditions::default(),
                expires: Expiry::At(9_000),
            };
            EntryPayload::Normal(Proposal::encode(7, &[Logged::as_sent(w, 7)]))
        };
        Entry {
            log_id: id(term, index),
            payload,
        }
    }

    fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        range.map(|i| entry_at(term, i)).collect()
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    /// Every entry the store holds, as JSON (entries have no `PartialEq`).
    fn held(store: &mut LogStore) -> Vec<String> {
        block(store.try_get_log_entries(..))
            .expect("read")
            .iter()
            .map(|e| serde_json::to_string(e).expect("serialize"))
            .collect()
    }

    fn json(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| serde_json::to_string(e).expect("serialize"))
            .collect()
    }

    /// The log as `inspect` and a start see it; it must be sound.
    fn sound(dir: &Path) -> LogReport {
        let report = scan::scan(&dir.join(crate::log::DIR), 0, |rec, _| {
            rec.raft.map(|_| ()).ok_or_else(|| "standalone".to_string())
        });
        assert!(report.damage.is_none(), "{:?}", report.damage);
        assert!(report.torn.is_none(), "{:?}", report.torn);
        assert!(report.raft || report.segments.is_empty());
        report
    }

    fn firsts(dir: &Path) -> Vec<u64> {
        let mut f = crate::log::list(&dir.join(crate::log::DIR)).expect("list");
        f.sort_unstable();
        f
    }

    #[test]
    fn segments_roll_at_the_size_and_reopen_to_the_same_entries() {
        let dir = tempfile::tempdir().unwrap();
        let all = entries(1, 0..=9);
        let store = LogStore::open(dir.path(), true, 1).unwrap();
        for batch in [&all[..4], &all[4..5], &all[5..]] {
            store.append_entries(batch.to_vec()).unwrap();
        }
        // Every record fills a one-byte segment: ten segments, each named by its record.
        assert_eq!(firsts(dir.path()), (0..=9).collect::<Vec<_>>());
        let report = sound(dir.path());
        assert_eq!(report.last.map(|l| l.0), Some(9));
        assert!(report.segments.iter().all(|s| s.seqs.is_none() && s.raft));
        drop(store);
        let mut again = LogStore::open(dir.path(), true, 1 << 20).unwrap();
        assert_eq!(held(&mut again), json(&all));
        // Appending goes on in the last segment, which has room now.
        again.append_entries(entries(1, 10..=11)).unwrap();
        assert_eq!(firsts(dir.path()), (0..=9).collect::<Vec<_>>());
        assert_eq!(sound(dir.path()).last.map(|l| l.0), Some(11));
    }

    #[test]
    fn a_truncate_cuts_at_the_record_and_the_next_append_starts_a_segment_named_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&entry_at(1, 3)).unwrap().len() as u64;
        // About three records a segment.
        let mut store = LogStore::open(dir.path(), false, one * 2).unwrap();
        store.append_entries(entries(1, 0..=9)).unwrap();
        let before = firsts(dir.path());
        assert!(before.len() >= 3, "{before:?}");
        // Cut inside the second segment: the ones after it go, it is cut at the record.
        let second = before[1];
        let cut = second + 1;
        block(store.truncate(id(1, cut))).unwrap();
        assert_eq!(firsts(dir.path()), before[..2].to_vec());
        assert_eq!(sound(dir.path()).last.map(|l| l.0), Some(cut - 1));
        store.append_entries(entries(2, cut..=cut + 2)).unwrap();
        let after = firsts(dir.path());
        assert_eq!(after[..3], [before[0], second, cut]);
        assert_eq!(sound(dir.path()).last.map(|l| l.0), Some(cut + 2));
        // A cut in the tail segment itself: appends go on in it.
        block(store.truncate(id(2, cut + 2))).unwrap();
        store.append_entries(entries(3, cut + 2..=cut + 2)).unwrap();
        assert_eq!(firsts(dir.path()), after);
        sound(dir.path());
        let mut want = entries(1, 0..=cut - 1);
        want.extend(entries(2, cut..=cut + 1));
        want.extend(entries(3, cut + 2..=cut + 2));
        assert_eq!(held(&mut store), json(&want));
        drop(store);
        let mut again = LogStore::open(dir.path(), false, one * 2).unwrap();
        assert_eq!(held(&mut again), json(&want));
    }

    #[test]
    fn a_purge_deletes_whole_segments_and_its_point_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), false, 1).unwrap();
        store.append_entries(entries(1, 0..=9)).unwrap();
        block(store.purge(id(1, 5))).unwrap();
        assert_eq!(firsts(dir.path()), (6..=9).collect::<Vec<_>>());
        drop(store);
        // Partly purged segments keep the entries above the point; a restart skips the rest.
        let mut store = LogStore::open(dir.path(), false, 1 << 20).unwrap();
        store.append_entries(entries(1, 10..=12)).unwrap();
        block(store.purge(id(1, 11))).unwrap();
        // 6, 7 and 8 held one record each; 9 holds 9..=12 (the reopened store's size).
        assert_eq!(
            firsts(dir.path()),
            [9],
            "the segment holding 12 stays whole"
        );
        drop(store);
        let mut store = LogStore::open(dir.path(), false, 1 << 20).unwrap();
        let state = block(store.get_log_state()).unwrap();
        assert_eq!(state.last_purged_log_id, Some(id(1, 11)));
        assert_eq!(state.last_log_id, Some(id(1, 12)));
        assert_eq!(held(&mut store), json(&entries(1, 12..=12)));
        // A purge past every entry (a snapshot installed): the log starts after it.
        block(store.purge(id(4, 20))).unwrap();
        assert!(firsts(dir.path()).is_empty());
        store.append_entries(entries(4, 21..=22)).unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path(), false, 1 << 20).unwrap();
        assert_eq!(held(&mut store), json(&entries(4, 21..=22)));
        assert_eq!(firsts(dir.path()), [21]);
        let survey = survey(dir.path());
        assert_eq!(
            (survey.entries, survey.first, survey.last, survey.purged),
            (2, Some(21), Some(22), Some(20))
        );
    }

    #[test]
    fn a_torn_tail_is_cut_on_reopen_and_other_damage_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), true, 1 << 20).unwrap();
        store.append_entries(entries(1, 0..=4)).unwrap();
        drop(store);
        let segment = dir.path().join(crate::log::DIR).join(segment_name(0));
        let good = fs::read(&segment).unwrap();
        let mut torn = good.clone();
        let mut next = Vec::new();
        encode(&mut next, &entry_at(1, 5));
        torn.extend_from_slice(&next[..next.len() / 2]);
        fs::write(&segment, &torn).unwrap();
        assert_eq!(survey(dir.path()).torn_bytes, (next.len() / 2) as u64);
        let mut store = LogStore::open(dir.path(), true, 1 << 20).unwrap();
        assert_eq!(
            fs::read(&segment).unwrap(),
            good,
            "cut back to the last good record"
        );
        let kept = fs::read_dir(dir.path().join(crate::log::DIR))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".broken"))
            .count();
        assert_eq!(kept, 1, "the cut bytes are kept");
        store.append_entries(entries(1, 5..=6)).unwrap();
        assert_eq!(held(&mut store), json(&entries(1, 0..=6)));
        drop(store);
        sound(dir.path());
        // A bad record with good ones after it is damage: the node refuses to start.
        let mut bytes = fs::read(&segment).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[second + 3] ^= 0x01;
        fs::write(&segment, &bytes).unwrap();
        let e = LogStore::open(dir.path(), true, 1 << 20).unwrap_err();
        let e = e.to_string();
        assert!(e.contains(&segment.display().to_string()), "{e}");
        assert!(e.contains(&format!("at byte {second}")), "{e}");
        assert!(survey(dir.path()).error.is_some());
    }

    #[test]
    fn a_standalone_log_is_not_taken_for_a_raft_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(crate::log::DIR);
        fs::create_dir_all(&log).unwrap();
        let mut line = Vec::new();
        let w = Write::Expire {
            key: Arc::from("k"),
        };
        record::encode(&mut line, 1, 1, 7, &[Logged::as_sent(w, 7)]);
        fs::write(log.join(segment_name(1)), &line).unwrap();
        let e = LogStore::open(dir.path(), false, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("standalone"), "{e}");
    }
}
