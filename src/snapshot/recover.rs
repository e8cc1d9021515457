//! Find, validate and choose a slot file; shared by `serve` and `inspect`.
//!
//! Files are read with ordinary reads, never mapped: another process (a running server) may be
//! rewriting them, and a map of a file that changes underneath is undefined behaviour.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::format::{self, FormatError, Image};

/// The two slot files, in the order they are first written.
pub const SLOT_NAMES: [&str; 2] = ["snapshot-a.json", "snapshot-b.json"];

/// Why one file cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(#[from] io::Error),
    /// The file's bytes are not a valid image.
    #[error("{0}")]
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
}

/// Every slot file found, and the image recovery would load.
#[derive(Debug)]
pub struct Scan {
    /// One report per file that exists.
    pub files: Vec<FileReport>,
    /// The index in `files` of the valid image with the highest seq, and the image.
    pub best: Option<(usize, Image)>,
}

/// Why recovery cannot proceed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// Snapshot files exist but none is valid: starting empty would discard data.
    #[error("snapshot files exist but none is valid: {0}")]
    NoValidSnapshot(String),
    /// A file exists but could not be read, so the newest image may be unknown.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The data dir or file itself cannot be listed or opened.
    #[error("cannot open {path}: {source}")]
    Path {
        /// The path given.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl Scan {
    /// Looks at both slot files of the data dir `dir`.
    pub fn dir(dir: &Path) -> Result<Scan, RecoverError> {
        let dir = absolute(dir)?;
        let paths = SLOT_NAMES
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.exists());
        Ok(Scan::paths(paths))
    }

    /// Looks at a data dir, or at one slot file.
    pub fn dir_or_file(path: &Path) -> Result<Scan, RecoverError> {
        let abs = absolute(path)?;
        let meta = fs::metadata(&abs).map_err(|source| RecoverError::Path {
            path: abs.clone(),
            source,
        })?;
        if meta.is_dir() {
            Scan::dir(&abs)
        } else {
            Ok(Scan::paths(std::iter::once(abs)))
        }
    }

    fn paths(paths: impl Iterator<Item = PathBuf>) -> Scan {
        let mut files = Vec::new();
        let mut best: Option<(usize, Image)> = None;
        for path in paths {
            let started = Instant::now();
            let (capacity, result) = match fs::read(&path) {
                Ok(bytes) => (
                    bytes.len() as u64,
                    format::decode(&bytes).map_err(SlotError::from),
                ),
                Err(e) => (0, Err(SlotError::Io(e))),
            };
            let result = match result {
                Ok(image) => {
                    tracing::debug!(
                        path = %path.display(),
                        seq = image.seq,
                        keys = image.entries.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "validated snapshot"
                    );
                    let summary = Summary {
                        seq: image.seq,
                        count: image.entries.len() as u64,
                        bytes: image.len as u64,
                        written_at: image.written_at.clone(),
                    };
                    if best.as_ref().is_none_or(|(_, b)| image.seq > b.seq) {
                        best = Some((files.len(), image));
                    }
                    Ok(summary)
                }
                Err(e) => Err(e),
            };
            files.push(FileReport {
                path,
                capacity,
                result,
            });
        }
        Scan { files, best }
    }

    /// The image to load: `None` when there is no snapshot file at all.
    ///
    /// Refuses when files exist but none is valid, or when one cannot be read (it might be the
    /// newest). Invalid files beside a valid one are logged and skipped.
    pub fn into_recovery(self) -> Result<Option<(PathBuf, u64, Image)>, RecoverError> {
        for f in &self.files {
            if let Err(SlotError::Io(e)) = &f.result {
                return Err(RecoverError::Unreadable {
                    path: f.path.clone(),
                    source: io::Error::new(e.kind(), e.to_string()),
                });
            }
        }
        match self.best {
            Some((i, image)) => {
                for f in &self.files {
                    if let Err(e) = &f.result {
                        tracing::warn!(path = %f.path.display(), reason = %e, "ignoring invalid snapshot file");
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
                        Err(e) => format!("{}: {e}", f.path.display()),
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
            .map(|(i, _)| self.files[*i].path.as_path())
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
        format::encode(&mut out, seq, "2026-11-27T00:00:00Z", &e).unwrap();
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
        Ok(Scan::dir(dir)?.into_recovery()?.map(|(_, _, i)| i.seq))
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
