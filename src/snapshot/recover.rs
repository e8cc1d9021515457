//! Find, validate and choose a slot file; shared by `serve` and `inspect`.
//!
//! Files are read with ordinary reads, never mapped: another process (a running server) may be
//! rewriting them, and a map of a file that changes underneath is undefined behaviour.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::format::{self, FormatError, Image};

/// The two slot files, in the order they are first written.
pub const SLOT_NAMES: [&str; 2] = ["snapshot-a.json", "snapshot-b.json"];

/// Why one file cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The file could not be read.
    #[error("cannot read the file")]
    Io(#[from] io::Error),
    /// The file's bytes are not a valid image.
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// What recovery found in one file.
#[derive(Debug)]
pub struct FileReport {
    /// The file, absolute.
    pub path: PathBuf,
    /// Its length on disk (the slot's capacity).
    pub capacity: u64,
    /// What it holds, or why it is not valid.
    pub result: Result<Summary, SlotError>,
}

/// The figures of a valid image.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Its seq.
    pub seq: u64,
    /// Its number of keys.
    pub count: u64,
    /// The document's length.
    pub bytes: u64,
    /// When it was written.
    pub written_at: String,
    /// The last log record it holds; `None` when only its header was read.
    pub log_index: Option<u64>,
}

/// Every slot file found, and the image recovery would load.
#[derive(Debug)]
pub struct Scan {
    /// One report per file that exists.
    pub files: Vec<FileReport>,
    /// The index in `files` of the valid image with the highest seq, and the image.
    pub best: Option<(usize, Image)>,
    /// The index in `files` of the image [`Scan::take_recovery`] took out.
    pub chosen: Option<usize>,
}

/// Why recovery cannot proceed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// Snapshot files exist but none is valid: starting empty would discard data.
    #[error("snapshot files exist but none is valid: {0}")]
    NoValidSnapshot(String),
    /// A file exists but could not be read, so the newest image may be unknown.
    #[error("cannot read {path}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The data dir or file itself cannot be listed or opened.
    #[error("cannot open {path}")]
    Path {
        /// The path given.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Reads what a file claims of itself from its first bytes, without reading the rest: enough to
/// choose which file to decode first. The claim is checked when that file is decoded (its
/// checksum covers these bytes); a file whose head is not in the standard layout is peeked in
/// full instead, so a valid image never ranks below what it really holds.
fn rank(path: &Path) -> (u64, Result<Summary, SlotError>) {
    let (capacity, head) = match head(path) {
        Ok(h) => h,
        Err(e) => return (0, Err(SlotError::Io(e))),
    };
    let header = match format::claimed_header(&head) {
        Some(h) => Ok(h),
        None => match fs::read(path) {
            Ok(bytes) => format::peek(&bytes).map_err(SlotError::from),
            Err(e) => Err(SlotError::Io(e)),
        },
    };
    let summary = header.map(|h| Summary {
        seq: h.seq,
        count: h.count,
        bytes: h.len as u64,
        written_at: h.written_at,
        log_index: None,
    });
    (capacity, summary)
}

/// A file's length and its first 4 KiB (fewer if it is shorter).
fn head(path: &Path) -> io::Result<(u64, Vec<u8>)> {
    let mut file = fs::File::open(path)?;
    let capacity = file.metadata()?.len();
    let mut head = vec![0u8; 4096];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    Ok((capacity, head))
}

/// The highest seq the slot files of `dir` claim in their first bytes: the image a start-up
/// [`Scan`] decodes first, and almost always the one it loads. `None` when there is no slot
/// file, or one whose first bytes cannot be read or are not in the standard layout (then
/// nothing cheap says which image comes first). Unverified: a guess to start work on early.
pub fn claimed_seq(dir: &Path) -> Option<u64> {
    let mut best = None;
    for path in SLOT_NAMES
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.exists())
    {
        let (_, head) = head(&path).ok()?;
        let seq = format::claimed_header(&head)?.seq;
        best = best.max(Some(seq));
    }
    best
}

/// When an image was written, to rank two of one seq: a cluster node writes a new image without
/// a new seq when only Raft's own entries moved its Raft state, and the later one holds more.
/// Nanoseconds since the epoch (an unreadable time ranks first to go).
fn written(at: &str) -> i128 {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .map_or(i128::MIN, |t| t.unix_timestamp_nanos())
}

/// How much of each file to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Decode every file in full (`inspect`: each file's verdict is complete).
    Every,
    /// Rank files by the seq their first bytes claim, then decode them in that order until one
    /// is valid (start-up: an older image is never read, let alone built, just to be dropped).
    Newest,
}

impl Scan {
    /// Looks at both slot files of the data dir `dir`.
    pub fn dir(dir: &Path, depth: Depth) -> Result<Scan, RecoverError> {
        let dir = absolute(dir)?;
        let paths = SLOT_NAMES
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.exists());
        Ok(Scan::paths(paths, depth))
    }

    /// Looks at a data dir, or at one slot file.
    pub fn dir_or_file(path: &Path, depth: Depth) -> Result<Scan, RecoverError> {
        let abs = absolute(path)?;
        let meta = fs::metadata(&abs).map_err(|source| RecoverError::Path {
            path: abs.clone(),
            source,
        })?;
        if meta.is_dir() {
            Scan::dir(&abs, depth)
        } else {
            Ok(Scan::paths(std::iter::once(abs), depth))
        }
    }

    fn paths(paths: impl Iterator<Item = PathBuf>, depth: Depth) -> Scan {
        let mut scan = Scan {
            files: Vec::new(),
            best: None,
            chosen: None,
        };
        for path in paths {
            let (capacity, result) = match depth {
                Depth::Every => match fs::read(&path) {
                    Ok(bytes) => (
                        bytes.len() as u64,
                        scan.consider(format::decode(&bytes))
                            .map_err(SlotError::from),
                    ),
                    Err(e) => (0, Err(SlotError::Io(e))),
                },
                Depth::Newest => rank(&path),
            };
            scan.files.push(FileReport {
                path,
                capacity,
                result,
            });
        }
        if depth == Depth::Newest {
            scan.decode_newest();
        }
        scan
    }

    /// Keeps `image` as the best so far if its seq is the highest; returns its summary.
    fn consider(&mut self, image: Result<Image, FormatError>) -> Result<Summary, FormatError> {
        let image = image?;
        let summary = Summary {
            seq: image.seq,
            count: image.entries.len() as u64,
            bytes: image.len as u64,
            written_at: image.written_at.clone(),
            log_index: Some(image.log_index),
        };
        let newer =
            |b: &Image| (image.seq, written(&image.written_at)) > (b.seq, written(&b.written_at));
        if self.best.as_ref().is_none_or(|(_, b)| newer(b)) {
            self.best = Some((self.files.len(), image));
        }
        Ok(summary)
    }

    /// Decodes the files whose header checked out, highest seq first, until one decodes in full.
    fn decode_newest(&mut self) {
        let mut ranked: Vec<((u64, i128), usize)> = self
            .files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                f.result
                    .as_ref()
                    .ok()
                    .map(|s| ((s.seq, written(&s.written_at)), i))
            })
            .collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        for (_, i) in ranked {
            let started = Instant::now();
            let path = &self.files[i].path;
            let decoded = fs::read(path)
                .map_err(SlotError::Io)
                .and_then(|bytes| format::decode(&bytes).map_err(SlotError::Format));
            match decoded {
                Ok(image) => {
                    tracing::info!(
                        path = %path.display(),
                        seq = image.seq,
                        keys = image.entries.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "decoded snapshot"
                    );
                    self.best = Some((i, image));
                    return;
                }
                Err(e) => self.files[i].result = Err(e),
            }
        }
    }

    /// The image to load: `None` when there is no snapshot file at all.
    ///
    /// Refuses when files exist but none is valid, or when one cannot be read (it might be the
    /// newest). Invalid files beside a valid one are logged and skipped.
    pub fn into_recovery(mut self) -> Result<Option<(PathBuf, u64, Image)>, RecoverError> {
        self.take_recovery()
    }

    /// Like [`Scan::into_recovery`], leaving the reports in place (for `inspect`).
    pub fn take_recovery(&mut self) -> Result<Option<(PathBuf, u64, Image)>, RecoverError> {
        for f in &self.files {
            if let Err(SlotError::Io(e)) = &f.result {
                return Err(RecoverError::Unreadable {
                    path: f.path.clone(),
                    source: io::Error::new(e.kind(), e.to_string()),
                });
            }
        }
        match self.best.take() {
            Some((i, image)) => {
                self.chosen = Some(i);
                for f in &self.files {
                    if let Err(e) = &f.result {
                        tracing::warn!(path = %f.path.display(), reason = %crate::Chain(e), "ignoring invalid snapshot file");
                    }
                }
                let file = &self.files[i];
                Ok(Some((file.path.clone(), file.capacity, image)))
            }
            None if self.files.is_empty() => Ok(None),
            None => {
                let reasons: Vec<String> = self
                    .files
                    .iter()
                    .map(|f| match &f.result {
                        Err(e) => format!("{}: {}", f.path.display(), crate::Chain(e)),
                        Ok(_) => unreachable!("a valid file would be the best"),
                    })
                    .collect();
                Err(RecoverError::NoValidSnapshot(reasons.join("; ")))
            }
        }
    }

    /// The path recovery would load, if any.
    pub fn recovers_from(&self) -> Option<&Path> {
        self.best
            .as_ref()
            .map(|(i, _)| *i)
            .or(self.chosen)
            .map(|i| self.files[i].path.as_path())
    }
}

fn absolute(path: &Path) -> Result<PathBuf, RecoverError> {
    std::path::absolute(path).map_err(|source| RecoverError::Path {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Entries, Entry};

    fn image(seq: u64, keys: &[&str]) -> Vec<u8> {
        let e: Entries = keys.iter().map(|k| Entry::new(k, seq, b"\"v\"")).collect();
        let mut out = Vec::new();
        format::encode(
            &mut out,
            format::Position { seq, log_index: 0 },
            "2026-11-27T00:00:00Z",
            &e,
        )
        .unwrap();
        out.extend_from_slice(&[b' '; 100]);
        out
    }

    fn setup(a: Option<Vec<u8>>, b: Option<Vec<u8>>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(a) = a {
            fs::write(dir.path().join(SLOT_NAMES[0]), a).unwrap();
        }
        if let Some(b) = b {
            fs::write(dir.path().join(SLOT_NAMES[1]), b).unwrap();
        }
        dir
    }

    fn recovered_seq(dir: &Path) -> Result<Option<u64>, RecoverError> {
        Ok(Scan::dir(dir, Depth::Newest)?
            .into_recovery()?
            .map(|(_, _, i)| i.seq))
    }

    #[test]
    fn an_empty_dir_recovers_nothing() {
        let dir = setup(None, None);
        assert_eq!(recovered_seq(dir.path()).unwrap(), None);
    }

    #[test]
    fn the_highest_valid_seq_wins() {
        let dir = setup(Some(image(5, &["x"])), Some(image(9, &["x", "y"])));
        assert_eq!(recovered_seq(dir.path()).unwrap(), Some(9));
        let dir = setup(Some(image(12, &["x"])), Some(image(9, &["x", "y"])));
        assert_eq!(recovered_seq(dir.path()).unwrap(), Some(12));
    }

    /// A cluster image whose Raft state (`raft`, here its index) is `index`, written at `at`.
    fn cluster_image(seq: u64, index: u64, at: &str) -> Vec<u8> {
        let e: Entries = [Entry::new("x", seq, b"1")].into_iter().collect();
        let mut out = Vec::new();
        let raft = format!(r#"{{"index":{index}}}"#);
        let pos = format::Position {
            seq,
            log_index: index,
        };
        format::encode_tagged(&mut out, pos, at, &e, Some(&raft)).unwrap();
        out
    }

    #[test]
    fn of_two_images_of_one_seq_the_later_written_wins() {
        // Raft's own entries move a cluster node's state without a seq: the later image of
        // the same seq holds more of the log, whichever slot it is in.
        let (early, late) = ("2026-11-27T00:00:59Z", "2026-11-27T00:00:59.001Z");
        for (a, b, want) in [
            (cluster_image(3, 7, early), cluster_image(3, 9, late), 9),
            (cluster_image(3, 9, late), cluster_image(3, 7, early), 9),
        ] {
            for depth in [Depth::Newest, Depth::Every] {
                let dir = setup(Some(a.clone()), Some(b.clone()));
                let got = Scan::dir(dir.path(), depth)
                    .unwrap()
                    .into_recovery()
                    .unwrap()
                    .map(|(_, _, i)| i.log_index);
                assert_eq!(got, Some(want), "{depth:?}");
            }
        }
    }

    #[test]
    fn a_damaged_newest_slot_falls_back_to_the_other() {
        let newest = image(9, &["x", "y"]);
        let mut truncated = newest.clone();
        truncated.truncate(newest.len() / 2);
        let mut flipped = newest.clone();
        flipped[40] ^= 0x20;
        let zeroed = vec![0u8; newest.len()];
        for bad in [truncated, flipped, zeroed, Vec::new()] {
            let dir = setup(Some(image(5, &["x"])), Some(bad));
            assert_eq!(recovered_seq(dir.path()).unwrap(), Some(5));
        }
    }

    #[test]
    fn a_newest_slot_whose_header_checks_out_but_whose_data_does_not_falls_back() {
        // Checksum and header are fine, but count disagrees with data: only a full decode sees
        // it, and start-up decodes only the newest, so it must move on to the next.
        let body = "{\"format\":\"twinkv-snapshot/1\",\"seq\":9,\"count\":5,\"written_at\":\"2026-11-27T00:00:00Z\",\"data\":{\"a\":1},\"versions\":{\"a\":1}";
        let sealed = format!(
            "{body},\"checksum\":\"crc32c:{:08x}\"}}",
            crc32c::crc32c(body.as_bytes())
        );
        let dir = setup(Some(image(5, &["x"])), Some(sealed.into_bytes()));
        assert_eq!(recovered_seq(dir.path()).unwrap(), Some(5));
        let scan = Scan::dir(dir.path(), Depth::Newest).unwrap();
        let err = crate::Chain(scan.files[1].result.as_ref().unwrap_err()).to_string();
        assert!(err.contains("count is 5"), "{err}");
    }

    #[test]
    fn both_damaged_is_refused_and_names_the_files() {
        let mut a = image(5, &["x"]);
        a[10] ^= 1;
        let dir = setup(Some(a), Some(vec![0u8; 10]));
        let err = recovered_seq(dir.path()).unwrap_err().to_string();
        assert!(err.contains("snapshot-a.json"), "{err}");
        assert!(err.contains("snapshot-b.json"), "{err}");
        assert!(err.contains("checksum"), "{err}");
    }
}
