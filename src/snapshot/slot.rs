//! One growable memory-mapped slot file; the only `unsafe` in the crate.
//!
//! A slot is written in numbered steps, and a crash between any two leaves this slot invalid
//! (detected by the checksum or the padding rule) while the other slot, which holds the newest
//! valid image, is never touched:
//!
//! 1. **grow**: reserve blocks with `fallocate` (so a full disk is an error now, not a SIGBUS
//!    when a page is later written through the map), which also extends the file; then map it.
//! 2. **write**: copy the document into the map from offset 0.
//! 3. **blank**: spaces over whatever an older, longer document (or a fresh grow) left after it.
//! 4. **flush**: `msync` the map; after a grow also `fsync` the file, since msync does not make
//!    the new length durable; a new slot is renamed from its temporary name into place and the
//!    directory synced, so a slot file only ever appears holding a complete image.
//!    The map is dropped after the flush: a slot is mapped only while an image is written.
//! 5. **publish**: the caller records the new durable seq (see `worker.rs`).
//!
//! While steps 2 and 3 run, the pages more than `RELEASE_EVERY` bytes behind the writer leave
//! the process's page tables (`MADV_DONTNEED`), so a checkpoint adds at most that much to the
//! resident set instead of a whole image (136 MB at a million keys): the bytes stay in the page
//! cache for the flush.

#![allow(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, UncheckedAdvice};

/// The smallest file a slot grows to.
const MIN_CAPACITY: u64 = 64 * 1024;
/// Capacities are whole pages.
const PAGE: u64 = 4096;
/// How far the writer gets ahead of the pages it has released from the mapping.
const RELEASE_EVERY: u64 = 8 * 1024 * 1024;

/// Suffix of a slot file that has not yet held a complete image.
pub const TEMP_SUFFIX: &str = ".tmp";

/// One slot file, mapped read-write, owned by the snapshot thread alone.
#[derive(Debug)]
pub struct Slot {
    /// Where the slot lives once it holds an image (`snapshot-a.json`).
    path: PathBuf,
    /// The open file, at `path` or at its temporary name while `fresh`.
    file: File,
    /// The mapping of the whole file; `None` while the file is empty (an empty map is invalid).
    map: Option<MmapMut>,
    /// Length of the file, and of the map.
    capacity: u64,
    /// From here to `capacity` every byte is known to be a space; before it, anything may be.
    dirty_end: u64,
    /// The file's length changed since its last `fsync`.
    grown: bool,
    /// The file still lives at its temporary name and has never held a complete image.
    fresh: bool,
}

impl Slot {
    /// Opens the slot at `path`, or starts a new one under a temporary name if it does not exist.
    pub fn open(path: &Path) -> io::Result<Slot> {
        if path.exists() {
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            let capacity = file.metadata()?.len();
            let slot = Slot {
                path: path.to_path_buf(),
                file,
                map: None,
                capacity,
                // Nothing is known about the bytes of a file this process did not write.
                dirty_end: capacity,
                grown: false,
                fresh: false,
            };
            Ok(slot)
        } else {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(temp_path(path))?;
            Ok(Slot {
                path: path.to_path_buf(),
                file,
                map: None,
                capacity: 0,
                dirty_end: 0,
                grown: true,
                fresh: true,
            })
        }
    }

    /// The file's length.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Writes one image through `encode` (steps 1 to 4); returns the document's length.
    ///
    /// On error the slot holds no valid image; the caller drops it and reopens it next time.
    pub fn write_image(
        &mut self,
        encode: impl FnOnce(&mut SlotWriter<'_>) -> io::Result<u64>,
    ) -> io::Result<u64> {
        // The file is mapped only while an image is written, so its pages do not count in the
        // process's memory between checkpoints.
        if self.map.is_none() {
            self.remap()?;
        }
        // Steps 1 and 2: `SlotWriter` grows the file whenever the document outruns it.
        let mut writer = SlotWriter {
            slot: self,
            pos: 0,
            released: 0,
        };
        let len = encode(&mut writer)?;
        debug_assert_eq!(len, writer.pos);
        // Step 3: blank. Only the stretch that may hold old bytes needs writing.
        let mut from = len;
        while from < self.dirty_end {
            let to = (from + RELEASE_EVERY).min(self.dirty_end);
            if let Some(map) = self.map.as_mut() {
                map[from as usize..to as usize].fill(b' ');
            }
            self.release(from, to);
            from = to;
        }
        self.dirty_end = len;
        // Step 4: flush data, then metadata, then make a new slot visible under its name.
        if let Some(map) = self.map.take() {
            map.flush()?;
        }
        if self.grown {
            self.file.sync_all()?;
            self.grown = false;
        }
        if self.fresh {
            fs::rename(temp_path(&self.path), &self.path)?;
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            self.fresh = false;
        }
        Ok(len)
    }

    /// Step 1: makes the file at least `min` bytes long, reserving its blocks, and remaps it.
    fn grow(&mut self, min: u64) -> io::Result<()> {
        let target = min.max(self.capacity.saturating_mul(2)).max(MIN_CAPACITY);
        let target = target.div_ceil(PAGE) * PAGE;
        // Unmap before the length changes; nothing may touch the old mapping past this point.
        self.map = None;
        match rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), 0, target) {
            Ok(()) => {}
            Err(rustix::io::Errno::OPNOTSUPP) => {
                // Some file systems cannot reserve blocks; the file is then sparse and a full
                // disk would surface as SIGBUS. Say so once per grow rather than refuse to run.
                tracing::warn!(path = %self.path.display(), "fallocate unsupported; growing a sparse file");
                self.file.set_len(target)?;
            }
            Err(e) => return Err(e.into()),
        }
        if self.file.metadata()?.len() < target {
            self.file.set_len(target)?;
        }
        self.capacity = target;
        // New bytes read as zeros, which are not JSON whitespace: all of them must be blanked.
        self.dirty_end = target;
        self.grown = true;
        self.remap()
    }

    /// Drops the whole pages within `from..to` from this process's mapping; their bytes stay
    /// in the file's page cache (see [`RELEASE_EVERY`]). A failure costs only memory until the
    /// map is dropped, so it is logged, not returned: it must not fail the checkpoint.
    fn release(&self, from: u64, to: u64) {
        let Some(map) = self.map.as_ref() else {
            return;
        };
        let (from, to) = (
            from.div_ceil(PAGE) * PAGE,
            to.min(self.capacity) / PAGE * PAGE,
        );
        if from >= to {
            return;
        }
        // SAFETY: `map` is a shared mapping of the slot file (`MmapMut::map_mut`), so
        // MADV_DONTNEED only removes this process's page-table entries for the range: the
        // bytes written stay in the page cache (a dirty page stays dirty, and the `msync` of
        // step 4 writes back the file's whole range, mapped or not), and a later access reads
        // them back from the file. No reference into the mapping is alive across the call:
        // `SlotWriter::write` and the blank step take their slices and drop them before it.
        // The range lies within the mapping: `to` is clamped to its length.
        let released = unsafe {
            map.unchecked_advise_range(
                UncheckedAdvice::DontNeed,
                from as usize,
                (to - from) as usize,
            )
        };
        if let Err(e) = released {
            tracing::warn!(path = %self.path.display(), reason = %e, "cannot release written pages of the slot; they stay resident until the flush");
        }
    }

    fn remap(&mut self) -> io::Result<()> {
        self.map = None;
        if self.capacity > 0 {
            // SAFETY: the mapping is undefined behaviour if another process (or another handle in
            // this one) changes or truncates the file while it is mapped. The data-dir lock keeps
            // every other twinkv writer out, `inspect` and recovery only read with `read(2)`, and
            // this `Slot` is the sole owner of the file handle and of the mapping, which it drops
            // before every change of length.
            self.map = Some(unsafe { MmapMut::map_mut(&self.file)? });
        }
        Ok(())
    }
}

/// Writes a document into a slot from offset 0, growing the file as needed.
#[derive(Debug)]
pub struct SlotWriter<'s> {
    slot: &'s mut Slot,
    pos: u64,
    /// Bytes before this have been released from the mapping.
    released: u64,
}

impl Write for SlotWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.pos + buf.len() as u64;
        if end > self.slot.capacity {
            self.slot.grow(end)?;
        }
        let map = self
            .slot
            .map
            .as_mut()
            .expect("a slot with capacity is mapped");
        map[self.pos as usize..end as usize].copy_from_slice(buf);
        self.pos = end;
        if self.pos - self.released >= RELEASE_EVERY {
            self.slot.release(self.released, self.pos);
            self.released = self.pos / PAGE * PAGE;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The temporary name of a slot that has not yet held an image.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::format::is_blank;

    fn write(slot: &mut Slot, doc: &[u8]) -> u64 {
        slot.write_image(|w| {
            w.write_all(doc)?;
            Ok(doc.len() as u64)
        })
        .unwrap()
    }

    fn assert_doc_then_blank(path: &Path, doc: &[u8]) {
        let bytes = fs::read(path).unwrap();
        assert!(bytes.starts_with(doc));
        assert!(bytes[doc.len()..].iter().all(|&b| is_blank(b)));
        assert_eq!(bytes.len() as u64 % PAGE, 0);
    }

    /// Whether this process maps `path` now, as `/proc/self/maps` lists it.
    fn mapped(path: &Path) -> bool {
        let maps = fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
        let path = fs::canonicalize(path).expect("the slot file exists");
        maps.lines().any(|l| l.ends_with(&*path.to_string_lossy()))
    }

    #[test]
    fn a_slot_is_mapped_only_while_an_image_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot-a.json");
        let mut slot = Slot::open(&path).unwrap();
        let doc = br#"{"seq":1}"#;
        let mut seen_while_writing = false;
        slot.write_image(|w| {
            w.write_all(doc)?;
            // Still under its temporary name while the first image is written.
            seen_while_writing = mapped(&temp_path(&path));
            Ok(doc.len() as u64)
        })
        .unwrap();
        assert!(
            seen_while_writing,
            "the file is mapped while the image is written"
        );
        assert!(slot.map.is_none());
        assert!(!mapped(&path), "the file stays mapped after the flush");
        // A reused slot, too.
        write(&mut slot, doc);
        assert!(
            !mapped(&path),
            "the file stays mapped after the second flush"
        );
    }

    #[test]
    fn a_new_slot_appears_only_once_it_holds_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot-a.json");
        let mut slot = Slot::open(&path).unwrap();
        assert!(!path.exists());
        assert!(temp_path(&path).exists());
        write(&mut slot, b"{\"a\":1}");
        assert!(path.exists());
        assert!(!temp_path(&path).exists());
        assert_doc_then_blank(&path, b"{\"a\":1}");
    }

    #[test]
    fn grows_through_many_doublings_and_stays_valid_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot-a.json");
        let mut slot = Slot::open(&path).unwrap();
        let mut caps = Vec::new();
        let sizes = std::iter::successors(Some(10usize), |n| Some(n * 8 / 5))
            .take_while(|&n| n < 3_000_000);
        for n in sizes {
            let doc = format!("{{\"s\":\"{}\"}}", "x".repeat(n));
            write(&mut slot, doc.as_bytes());
            assert_doc_then_blank(&path, doc.as_bytes());
            let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
            assert_eq!(v["s"].as_str().unwrap().len(), n);
            caps.push(slot.capacity());
        }
        assert!(caps.windows(2).all(|w| w[0] <= w[1]));
        caps.dedup();
        // From the first 64 KiB to past 2 MiB: at least five doublings, each image valid.
        assert!(caps.len() >= 6, "{caps:?}");
        assert_eq!(caps[0], MIN_CAPACITY);
    }

    /// Resident pages of the slot file in this process's mappings, from `/proc/self/smaps`.
    fn resident_kb(path: &Path) -> u64 {
        let smaps = fs::read_to_string("/proc/self/smaps").unwrap();
        let name = path.to_str().unwrap();
        let mut inside = false;
        let mut kb = 0;
        for line in smaps.lines() {
            if line.contains('-') && line.split_whitespace().nth(1).is_some_and(|p| p.len() == 4) {
                inside = line.ends_with(name) || line.ends_with(&format!("{name}{TEMP_SUFFIX}"));
            } else if inside {
                if let Some(rest) = line.strip_prefix("Rss:") {
                    kb += rest
                        .trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap();
                }
            }
        }
        kb
    }

    #[test]
    fn pages_behind_the_writer_leave_the_mapping_and_keep_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot-a.json");
        let mut slot = Slot::open(&path).unwrap();
        // Three and a half release stretches, written in 64 KiB pieces as the encoder does.
        let n = (RELEASE_EVERY * 7 / 2) as usize;
        let doc: Vec<u8> = format!("{{\"s\":\"{}\"}}", "ab".repeat(n / 2)).into_bytes();
        // Once to grow the file (each grow maps it afresh), then again into the same mapping.
        write(&mut slot, &doc);
        let mut peak = 0;
        slot.write_image(|w| {
            for piece in doc.chunks(64 * 1024) {
                w.write_all(piece)?;
                peak = peak.max(resident_kb(&path));
            }
            Ok(doc.len() as u64)
        })
        .unwrap();
        assert_doc_then_blank(&path, &doc);
        // Never more than one stretch (plus the piece in hand) resident, not the whole image.
        let bound = (RELEASE_EVERY + 2 * 64 * 1024) / 1024;
        assert!(
            peak > 0 && peak <= bound,
            "{peak} kB resident, bound {bound} kB"
        );
        // And a shorter image blanks what the long one left, releasing as it goes.
        write(&mut slot, b"{}");
        assert_doc_then_blank(&path, b"{}");
    }

    #[test]
    fn a_shorter_image_blanks_what_the_longer_one_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot-b.json");
        let mut slot = Slot::open(&path).unwrap();
        let long = format!("{{\"s\":\"{}\"}}", "y".repeat(10_000));
        write(&mut slot, long.as_bytes());
        write(&mut slot, b"{}");
        assert_doc_then_blank(&path, b"{}");
        // And a slot reopened by a new process blanks bytes it knows nothing about.
        drop(slot);
        let mut again = Slot::open(&path).unwrap();
        write(&mut again, long.as_bytes());
        write(&mut again, b"[1]");
        assert_doc_then_blank(&path, b"[1]");
    }
}
