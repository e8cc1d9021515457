//! openraft's log storage: the Raft log as JSON lines in `data/raft/log.jsonl`, and the vote.
//!
//! Every line is `{"line":{…},"crc32c":"xxxxxxxx"}`, where the checksum covers the bytes of
//! the inner object as they stand, so a torn or altered line never passes as valid; the inner
//! object is an `entry` (openraft's log entry, whose payload is a twinkv log record), a
//! `truncate` (entries from that index on were dropped, after a leader change) or a `purge`
//! (entries up to that log id are in a snapshot). Loading replays the lines in order and cuts
//! a torn last line off. The entries not yet purged are also kept in memory: replication reads
//! them constantly. The vote lives in `vote.json`, replaced atomically (write, fsync, rename).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use super::{Entry, NodeId, TypeConfig};

/// The log file's name inside the Raft dir.
pub const LOG_FILE: &str = "log.jsonl";
/// The vote file's name inside the Raft dir.
pub const VOTE_FILE: &str = "vote.json";

/// Once the file holds this many more lines than live entries, a purge rewrites it.
const REWRITE_SLACK: u64 = 10_000;

/// One line's content.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Entry(Entry),
    Truncate(u64),
    Purge(LogId<NodeId>),
}

/// What the log and its reader share.
#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    file: File,
    entries: BTreeMap<u64, Entry>,
    purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    /// Lines in the file: when far more than the live entries, a purge rewrites it.
    lines: u64,
}

/// The Raft log storage (and, cloned, its reader).
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// Whether every append is flushed before it is acknowledged (`sync`).
    flush: bool,
    /// The highest index known committed (for `GET /cluster`).
    pub committed: Arc<AtomicU64>,
}

fn io_err(e: io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

/// Splits a line into the inner object and its stored checksum, if it is one of ours.
fn split(line: &[u8]) -> Option<(&[u8], u32)> {
    let body = line.strip_prefix(b"{\"line\":")?;
    let tail = b",\"crc32c\":\"";
    if body.len() < tail.len() + 10 || !body.ends_with(b"\"}") {
        return None;
    }
    let hex = &body[body.len() - 10..body.len() - 2];
    let inner = body[..body.len() - 10].strip_suffix(tail.as_slice())?;
    let crc = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    Some((inner, crc))
}

fn encode(line: &Line, out: &mut Vec<u8>) {
    let inner = serde_json::to_vec(line).expect("a Raft log line serializes");
    out.extend_from_slice(b"{\"line\":");
    out.extend_from_slice(&inner);
    let _ = write!(out, ",\"crc32c\":\"{:08x}\"}}", crc32c::crc32c(&inner));
    out.push(b'\n');
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a scan of the log file found.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The live entries, by index.
    pub entries: BTreeMap<u64, Entry>,
    /// The last purged log id.
    pub purged: Option<LogId<NodeId>>,
    /// Valid lines.
    pub lines: u64,
    /// Bytes up to the end of the last valid line (the rest is a torn tail).
    pub good: usize,
}

/// Replays the log file's lines, stopping at the first that is not valid (a torn tail).
pub fn scan(bytes: &[u8]) -> Scanned {
    let mut s = Scanned::default();
    for raw in bytes.split_inclusive(|b| *b == b'\n') {
        let Some(text) = raw.strip_suffix(b"\n") else {
            break; // torn: no newline
        };
        let Some((inner, crc)) = split(text) else {
            break;
        };
        if crc32c::crc32c(inner) != crc {
            break;
        }
        let Ok(line) = serde_json::from_slice::<Line>(inner) else {
            break;
        };
        match line {
            Line::Entry(e) => {
                s.entries.insert(e.log_id.index, e);
            }
            Line::Truncate(from) => {
                s.entries.split_off(&from);
            }
            Line::Purge(id) => {
                s.entries = s.entries.split_off(&(id.index + 1));
                s.purged = Some(id);
            }
        }
        s.lines += 1;
        s.good += raw.len();
    }
    s
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying it; a torn last line is cut off.
    pub fn open(dir: &Path, flush: bool) -> io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let Scanned {
            entries,
            purged,
            lines,
            good,
        } = scan(&bytes);
        if good < bytes.len() {
            tracing::warn!(
                file = %path.display(), offset = good, bytes = bytes.len() - good,
                "cut a torn line off the end of the Raft log"
            );
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        file.set_len(good as u64)?;
        file.sync_all()?;
        let mut file = file;
        use std::io::Seek as _;
        file.seek(io::SeekFrom::End(0))?;
        let vote = match fs::read(dir.join(VOTE_FILE)) {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(io::Error::other)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                file,
                entries,
                purged,
                vote,
                lines,
            })),
            flush,
            committed: Arc::new(AtomicU64::new(0)),
        })
    }

    fn write(&self, inner: &mut Inner, lines: &[Line], flush: bool) -> io::Result<()> {
        let mut out = Vec::new();
        for l in lines {
            encode(l, &mut out);
        }
        inner.file.write_all(&out)?;
        if flush {
            inner.file.sync_data()?;
        }
        inner.lines += lines.len() as u64;
        Ok(())
    }

    /// Rewrites the file with only what is live, when purges have left it mostly dead lines.
    fn rewrite(inner: &mut Inner) -> io::Result<()> {
        let path = inner.dir.join(LOG_FILE);
        let tmp = inner.dir.join("log.jsonl.tmp");
        let mut out = Vec::new();
        if let Some(p) = inner.purged {
            encode(&Line::Purge(p), &mut out);
        }
        for e in inner.entries.values() {
            encode(&Line::Entry(e.clone()), &mut out);
        }
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(&inner.dir)?;
        inner.file = OpenOptions::new().append(true).open(&path)?;
        inner.lines = inner.entries.len() as u64 + 1;
        Ok(())
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
        let tmp = inner.dir.join("vote.json.tmp");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(vote).map_err(io::Error::other)?)?;
            f.sync_all()?;
            fs::rename(&tmp, inner.dir.join(VOTE_FILE))?;
            sync_dir(&inner.dir)
        };
        write().map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
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
        let mut inner = self.inner.lock().expect("raft log lock");
        let lines: Vec<Line> = entries.into_iter().map(Line::Entry).collect();
        let result = self.write(&mut inner, &lines, self.flush);
        if result.is_ok() {
            for l in lines {
                if let Line::Entry(e) = l {
                    inner.entries.insert(e.log_id.index, e);
                }
            }
        }
        let outcome = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(outcome);
        result.map_err(io_err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().expect("raft log lock");
        self.write(&mut inner, &[Line::Truncate(log_id.index)], true)
            .map_err(io_err)?;
        inner.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().expect("raft log lock");
        self.write(&mut inner, &[Line::Purge(log_id)], false)
            .map_err(io_err)?;
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.purged = Some(log_id);
        if inner.lines > inner.entries.len() as u64 + REWRITE_SLACK {
            LogStore::rewrite(&mut inner).map_err(io_err)?;
        }
        Ok(())
    }
}
