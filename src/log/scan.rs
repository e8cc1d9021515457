//! Reading the log back: every segment checked record by record, for recovery and `inspect`.
//!
//! Files are read with ordinary reads, never mapped, and nothing here writes: cutting a torn
//! tail is [`repair`]'s job, which only recovery calls (it holds the data dir's lock).
//!
//! The rules (contract, "Recovery"): indexes run on with no gap from segment to segment and
//! from record to record, each segment's first record carries the index of its name, and
//! every line is one record whose checksum holds. A bad line with nothing valid after it, at
//! the end of the last segment, is a torn tail: a record that was never answered (in `sync`)
//! or never flushed. Any other bad line, a gap, or an unreadable file is damage, reported with
//! the file and byte offset. The scan reads on past damage, checking each later segment on its
//! own, so that `inspect` can list every segment and say which one is bad.
//!
//! A log holds standalone records or Raft records (a cluster node's, see `record.rs`), never
//! both: the first valid record says which, and a record of the other kind is damage.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::record::{self, Record, RecordError};
use super::{list, segment_name};

/// What the scan found in one segment.
#[derive(Debug, Clone)]
pub struct SegmentReport {
    /// The file, absolute.
    pub path: PathBuf,
    /// Its length on disk.
    pub bytes: u64,
    /// The index its name stands for.
    pub first_index: u64,
    /// The last valid record's index, if it holds any.
    pub last_index: Option<u64>,
    /// The seq after its first and last valid records (`None` for Raft records, which carry
    /// no seq).
    pub seqs: Option<(u64, u64)>,
    /// Whether its records are Raft records.
    pub raft: bool,
    /// Why it is damaged, if it is.
    pub error: Option<String>,
}

/// A torn tail: where the last good record ends and how many bytes follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// The segment.
    pub path: PathBuf,
    /// Where the good part ends.
    pub offset: u64,
    /// Bytes after it.
    pub bytes: u64,
}

/// Damage that makes recovery refuse to start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Damage {
    /// A bad record with something valid after it, or a bad record not at the log's end.
    #[error("damaged log record in {path} at byte {offset}: {reason}")]
    Record {
        /// The segment.
        path: PathBuf,
        /// Where the bad line starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A record out of sequence: an index is missing or repeated.
    #[error("log record in {path} at byte {offset} has index {found}, expected {expected}: a record or segment is missing")]
    Gap {
        /// The segment.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// The index that should come next.
        expected: u64,
        /// The index found.
        found: u64,
    },
    /// A segment whose first record is not the index of its name, or whose name leaves a gap.
    #[error("log segment {path} should start at index {expected} but its name says {named}: a segment is missing")]
    MissingSegment {
        /// The segment.
        path: PathBuf,
        /// The index that should come next.
        expected: u64,
        /// The index its name says.
        named: u64,
    },
    /// A file that cannot be read.
    #[error("cannot read the log segment {path}: {reason}")]
    Unreadable {
        /// The segment.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
}

/// Everything the scan found.
#[derive(Debug, Default)]
pub struct LogReport {
    /// One report per segment, in index order.
    pub segments: Vec<SegmentReport>,
    /// A torn tail to cut, if any (recovery refuses instead when there is damage too).
    pub torn: Option<Torn>,
    /// The first damage found; recovery refuses when there is one.
    pub damage: Option<Damage>,
    /// The last valid record's index and seq (0 in a Raft log, whose records carry no seq).
    pub last: Option<(u64, u64)>,
    /// Bytes of the valid records from `from` on (what replay reads).
    pub bytes_after: u64,
    /// Whether the log holds Raft records (a cluster node's log).
    pub raft: bool,
    /// The first index the log holds (the first segment's name).
    pub first_index: Option<u64>,
}

/// Reads every segment in `dir` (a missing folder is an empty log), handing each valid record
/// whose index is `from` or above to `visit`, in order, with the length of its line. (A bound
/// from below, not "after": a Raft log starts at index 0.)
///
/// Nothing after the first damage is visited, and `last` and `bytes_after` stop there; the
/// segments after it are still read, each checked on its own from the index of its name, so
/// that the report lists every segment and says which ones are sound.
pub fn scan(
    dir: &Path,
    from: u64,
    mut visit: impl FnMut(Record, u64) -> Result<(), String>,
) -> LogReport {
    let mut report = LogReport::default();
    let mut firsts = match list(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return report,
        Err(e) => {
            report.damage = Some(Damage::Unreadable {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            });
            return report;
        }
    };
    firsts.sort_unstable();
    report.first_index = firsts.first().copied();
    // The index the next segment's name should say; unknown after a segment with damage.
    let mut expected: Option<u64> = None;
    let count = firsts.len();
    // One buffer for every segment: a fresh one each time would fault in every page again.
    let mut bytes = Vec::new();
    // Whether the log's records are Raft records, once the first valid one has said.
    let mut kind: Option<bool> = None;
    for (n, first) in firsts.into_iter().enumerate() {
        let last_segment = n + 1 == count;
        let path = dir.join(segment_name(first));
        let mut seg = SegmentReport {
            path: path.clone(),
            bytes: 0,
            first_index: first,
            last_index: None,
            seqs: None,
            raft: false,
            error: None,
        };
        if let Some(e) = expected.filter(|&e| e != first) {
            let d = Damage::MissingSegment {
                path: path.clone(),
                expected: e,
                named: first,
            };
            found(&mut report, &mut seg, d);
        }
        // Whether the log holds so far: records are visited only then.
        let live = report.damage.is_none();
        bytes.clear();
        if let Err(e) = fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)) {
            let d = Damage::Unreadable {
                path: path.clone(),
                reason: e.to_string(),
            };
            found(&mut report, &mut seg, d);
            report.segments.push(seg);
            expected = None;
            continue;
        }
        seg.bytes = bytes.len() as u64;
        let mut next = first;
        let mut offset = 0usize;
        let mut sound = true;
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            let (line, len) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], i + 1),
                None => (rest, rest.len()),
            };
            let complete = len > line.len();
            let decoded = if complete {
                record::decode(line)
            } else {
                Err(RecordError::Incomplete)
            };
            let rec = match decoded {
                Ok(r) => r,
                Err(e) => {
                    let tail_only = last_segment && !any_valid_after(&bytes[offset + len..]);
                    if tail_only {
                        report.torn = Some(Torn {
                            path: path.clone(),
                            offset: offset as u64,
                            bytes: (bytes.len() - offset) as u64,
                        });
                    } else {
                        let d = Damage::Record {
                            path: path.clone(),
                            offset: offset as u64,
                            reason: crate::Chain(&e).to_string(),
                        };
                        found(&mut report, &mut seg, d);
                        sound = false;
                    }
                    break;
                }
            };
            if rec.index != next {
                let d = Damage::Gap {
                    path: path.clone(),
                    offset: offset as u64,
                    expected: next,
                    found: rec.index,
                };
                found(&mut report, &mut seg, d);
                sound = false;
                break;
            }
            let raft = rec.raft.is_some();
            if *kind.get_or_insert(raft) != raft {
                let reason = if raft {
                    "a Raft record in a log of standalone records"
                } else {
                    "a standalone record in a log of Raft records"
                };
                let d = Damage::Record {
                    path: path.clone(),
                    offset: offset as u64,
                    reason: reason.into(),
                };
                found(&mut report, &mut seg, d);
                sound = false;
                break;
            }
            let (index, seq) = (rec.index, rec.seq);
            seg.last_index = Some(index);
            seg.raft = raft;
            if !raft {
                seg.seqs = Some(match seg.seqs {
                    Some((s, _)) => (s, seq),
                    None => (seq, seq),
                });
            }
            if live {
                report.last = Some((index, seq));
                report.raft = raft;
                if index >= from {
                    report.bytes_after += len as u64;
                    if let Err(reason) = visit(rec, len as u64) {
                        let d = Damage::Record {
                            path: path.clone(),
                            offset: offset as u64,
                            reason,
                        };
                        found(&mut report, &mut seg, d);
                        sound = false;
                        break;
                    }
                }
            }
            next += 1;
            offset += len;
        }
        report.segments.push(seg);
        expected = sound.then_some(next);
    }
    report
}

/// Records damage found in `seg`: its error and, if it is the first, the log's.
fn found(report: &mut LogReport, seg: &mut SegmentReport, d: Damage) {
    seg.error.get_or_insert_with(|| d.to_string());
    report.damage.get_or_insert(d);
}

/// Whether any complete line after a bad one is a valid record: then the bad one is damage in
/// the middle of the log, not a torn tail.
fn any_valid_after(rest: &[u8]) -> bool {
    rest.split(|&b| b == b'\n')
        .any(|line| !line.is_empty() && record::decode(line).is_ok())
}

/// Cuts a torn tail off its segment, keeping the cut bytes beside it in a `.broken` file.
pub fn repair(torn: &Torn) -> std::io::Result<PathBuf> {
    let bytes = fs::read(&torn.path)?;
    let cut = &bytes[(torn.offset as usize).min(bytes.len())..];
    let name = torn
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment");
    let broken = torn
        .path
        .with_file_name(format!("{name}.{}.broken", torn.offset));
    fs::write(&broken, cut)?;
    fs::File::open(&broken)?.sync_all()?;
    let file = fs::OpenOptions::new().write(true).open(&torn.path)?;
    file.set_len(torn.offset)?;
    file.sync_all()?;
    super::file::sync_dir(&torn.path)?;
    Ok(broken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Apply, Conditions, Entries, Expiry, PendingValue, Write};
    use std::sync::Arc;

    /// The line of a record at `index` that puts one key (its seq is `index`).
    fn line(index: u64) -> Vec<u8> {
        let state = Entries::new();
        let mut apply = Apply::new(|k: &str| state.get(k.as_bytes()).cloned(), index - 1, 7);
        apply
            .apply(Write::Put {
                key: Arc::from("k"),
                value: PendingValue::from_text("v"),
                cond: Conditions::default(),
                expires: Expiry::Never,
            })
            .expect("a put applies");
        let mut out = Vec::new();
        record::encode(&mut out, index, apply.seq, 7, &apply.logged);
        out
    }

    fn lines(indexes: impl IntoIterator<Item = u64>) -> Vec<u8> {
        indexes.into_iter().flat_map(line).collect()
    }

    #[test]
    fn the_scan_reads_on_past_damage_checking_each_later_segment_on_its_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |first: u64, bytes: &[u8]| {
            fs::write(dir.path().join(segment_name(first)), bytes).expect("segment");
        };
        write(1, &lines(1..=3));
        // Record 5's checksum broken, with record 6 after it: damage, not a torn tail.
        let mut second = lines(4..=6);
        let at = line(4).len();
        second[at + line(5).len() - 4] ^= 0x01;
        write(4, &second);
        write(7, &lines(7..=8));
        // Index 9 is nowhere: the segment after the gap is named 10.
        write(10, &lines(10..=11));
        // A torn tail at the end of the last segment.
        write(12, &[line(12), line(13)[..20].to_vec()].concat());

        let mut visited = Vec::new();
        let report = scan(dir.path(), 0, |rec, _| {
            visited.push(rec.index);
            Ok(())
        });
        assert_eq!(visited, [1, 2, 3, 4], "nothing after the damage is visited");
        assert_eq!(report.last, Some((4, 4)));
        assert_eq!(report.bytes_after, (line(1).len() * 4) as u64);
        match &report.damage {
            Some(Damage::Record { path, offset, .. }) => {
                assert_eq!(
                    (path, *offset),
                    (&dir.path().join(segment_name(4)), at as u64)
                );
            }
            other => panic!("{other:?}"),
        }
        let got: Vec<_> = report
            .segments
            .iter()
            .map(|s| (s.first_index, s.last_index, s.bytes, s.error.clone()))
            .collect();
        let len = |first: u64| {
            fs::metadata(dir.path().join(segment_name(first)))
                .unwrap()
                .len()
        };
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], (1, Some(3), len(1), None));
        assert_eq!(got[2], (7, Some(8), len(7), None));
        assert_eq!(got[4], (12, Some(12), len(12), None));
        let error = got[1].3.as_deref().expect("the damaged segment's error");
        assert_eq!(got[1].1, Some(4), "the records before the damage");
        assert!(error.contains(&format!("at byte {at}")), "{error}");
        let error = got[3].3.as_deref().expect("the segment after the gap");
        assert_eq!(got[3].1, Some(11), "the segment is read all the same");
        assert!(error.contains("should start at index 9"), "{error}");
        let torn = report.torn.as_ref().expect("the torn tail");
        assert_eq!(torn.offset, line(12).len() as u64);
    }
}
