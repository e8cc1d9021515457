//! The few file operations the log needs, behind a trait, so a test can stand in a file that
//! loses or tears what was written since its last flush (as SQLite's crash-test I/O layer
//! does) and check what recovery makes of it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(test)]
use std::sync::Mutex;

/// One segment file, appended to by the writer and flushed by it or by the flusher thread.
pub trait SegmentFile: Send + Sync + std::fmt::Debug {
    /// Appends `buf` whole (one `write` in the common case).
    fn append(&self, buf: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes (after a failed append).
    fn truncate(&self, len: u64) -> io::Result<()>;
}

/// Where segment files are made.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Creates a new, empty segment at `path` and makes its name durable.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn SegmentFile>>;
    /// Opens an existing segment to append at its end.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn SegmentFile>>;
}

/// The real thing: files in the data dir.
#[derive(Debug, Default, Clone, Copy)]
pub struct Disk;

/// A segment file on disk. `write` on a file opened for append is one system call per record,
/// so a record is handed to the operating system whole or (on error) cut back.
#[derive(Debug)]
struct DiskFile(File);

impl SegmentFile for DiskFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        (&self.0).write_all(buf)
    }

    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Storage for Disk {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        sync_dir(path)?;
        Ok(Arc::new(DiskFile(file)))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Arc::new(DiskFile(file)))
    }
}

/// Makes a new or removed name in `path`'s directory durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
/// A simulated disk for power-loss tests: every file keeps what was flushed apart from what
/// was only written, and [`SimDisk::crash`] decides what of the unflushed part survives.
#[derive(Debug, Default, Clone)]
pub struct SimDisk {
    files: Arc<Mutex<SimFiles>>,
}

/// Every file of a [`SimDisk`], by path, in the order made.
#[cfg(test)]
type SimFiles = Vec<(PathBuf, Arc<SimFile>)>;

/// A file of a [`SimDisk`].
#[cfg(test)]
#[derive(Debug, Default)]
pub struct SimFile {
    state: Mutex<SimState>,
}

#[cfg(test)]
#[derive(Debug, Default)]
struct SimState {
    /// Bytes that survive any crash.
    durable: Vec<u8>,
    /// Bytes written after the last flush.
    pending: Vec<u8>,
}

#[cfg(test)]
impl SegmentFile for SimFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock().expect("sim file lock");
        s.pending.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.state.lock().expect("sim file lock");
        let pending = std::mem::take(&mut s.pending);
        s.durable.extend_from_slice(&pending);
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut s = self.state.lock().expect("sim file lock");
        let len = len as usize;
        if len <= s.durable.len() {
            s.durable.truncate(len);
            s.pending.clear();
        } else {
            let keep = len - s.durable.len();
            s.pending.truncate(keep);
        }
        Ok(())
    }
}

#[cfg(test)]
impl Storage for SimDisk {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn SegmentFile>> {
        let file = Arc::new(SimFile::default());
        self.files
            .lock()
            .expect("sim disk lock")
            .push((path.to_path_buf(), Arc::clone(&file)));
        Ok(file)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn SegmentFile>> {
        let files = self.files.lock().expect("sim disk lock");
        files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, f)| Arc::clone(f) as Arc<dyn SegmentFile>)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such simulated file"))
    }
}

#[cfg(test)]
impl SimDisk {
    /// What each file holds after a power loss: its flushed bytes plus the first `keep(len)`
    /// bytes of what was only written (0: all lost; `len`: all kept; in between: torn).
    pub fn crash(&self, mut keep: impl FnMut(usize) -> usize) -> Vec<(PathBuf, Vec<u8>)> {
        self.files
            .lock()
            .expect("sim disk lock")
            .iter()
            .map(|(p, f)| {
                let s = f.state.lock().expect("sim file lock");
                let mut bytes = s.durable.clone();
                let n = keep(s.pending.len()).min(s.pending.len());
                bytes.extend_from_slice(&s.pending[..n]);
                (p.clone(), bytes)
            })
            .collect()
    }
}
