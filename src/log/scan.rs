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
//! the file and byte offset.

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
    /// The seq after its first and last valid records.
    pub seqs: Option<(u64, u64)>,
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
    /// A torn tail to cut, if any.
    pub torn: Option<Torn>,
    /// The first damage found; recovery refuses when there is one.
    pub damage: Option<Damage>,
    /// The last valid record's index and seq.
    pub last: Option<(u64, u64)>,
    /// Bytes of the valid records after `after` (what replay reads).
    pub bytes_after: u64,
    /// The first index the log holds (the first segment's name).
    pub first_index: Option<u64>,
}

/// Reads every segment in `dir` (a missing folder is an empty log), handing each valid record
/// whose index is above `after` to `visit`, in order, with the length of its line. Stops at the
/// first damage.
pub fn scan(
    dir: &Path,
    after: u64,
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
    let mut expected: Option<u64> = None;
    let count = firsts.len();
    // One buffer for every segment: a fresh one each time would fault in every page again.
    let mut bytes = Vec::new();
    for (n, first) in firsts.into_iter().enumerate() {
        let last_segment = n + 1 == count;
        let path = dir.join(segment_name(first));
        let mut seg = SegmentReport {
            path: path.clone(),
            bytes: 0,
            first_index: first,
            last_index: None,
            seqs: None,
            error: None,
        };
        if let Some(e) = expected {
            if e != first {
                let d = Damage::MissingSegment {
                    path: path.clone(),
                    expected: e,
                    named: first,
                };
                seg.error = Some(d.to_string());
                report.segments.push(seg);
                report.damage = Some(d);
                return report;
            }
        }
        bytes.clear();
        if let Err(e) = fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)) {
            let d = Damage::Unreadable {
                path: path.clone(),
                reason: e.to_string(),
            };
            seg.error = Some(d.to_string());
            report.segments.push(seg);
            report.damage = Some(d);
            return report;
        }
        seg.bytes = bytes.len() as u64;
        let mut next = first;
        let mut offset = 0usize;
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
                        seg.error = Some(d.to_string());
                        report.damage = Some(d);
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
                seg.error = Some(d.to_string());
                report.damage = Some(d);
                break;
            }
            let (index, seq) = (rec.index, rec.seq);
            seg.last_index = Some(index);
            seg.seqs = Some(match seg.seqs {
                Some((s, _)) => (s, seq),
                None => (seq, seq),
            });
            report.last = Some((index, seq));
            if index > after {
                report.bytes_after += len as u64;
                if let Err(reason) = visit(rec, len as u64) {
                    let d = Damage::Record {
                        path: path.clone(),
                        offset: offset as u64,
                        reason,
                    };
                    seg.error = Some(d.to_string());
                    report.damage = Some(d);
                    break;
                }
            }
            next += 1;
            offset += len;
        }
        report.segments.push(seg);
        if report.damage.is_some() || report.torn.is_some() {
            return report;
        }
        expected = Some(next);
    }
    report
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
