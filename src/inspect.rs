//! `inspect`: report on slot files to a person or a script, and say what recovery would load.
//!
//! Reads files with ordinary reads and takes no lock, so it works beside a running server.

use std::io::{self, Write};
use std::path::Path;

use serde_json::json;

use crate::snapshot::format;
use crate::snapshot::recover::{Depth, RecoverError, Scan};
use crate::Chain;

/// How to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A line per file, then the verdict.
    Human,
    /// `{"files": [...], "recovers_from": ...}`.
    Json,
    /// The data map recovery would load.
    Dump,
}

/// Exit status: recovery would succeed (also for a dir with no snapshot).
pub const EXIT_OK: u8 = 0;
/// Exit status: snapshot files exist but none is valid.
pub const EXIT_NO_VALID: u8 = 1;
/// Exit status: usage error or missing path.
pub const EXIT_USAGE: u8 = 2;

/// Reports on `path` (a data dir or a slot file) to `out`; returns the exit status.
///
/// A reader of `out` that went away (`inspect --dump | head`) is not an error: the status is
/// what it would have been. Any other failure to write the report is said on `err`, status 1.
pub fn inspect(path: &Path, mode: Mode, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let scan = match Scan::dir_or_file(path, Depth::Every) {
        Ok(scan) => scan,
        Err(e) => {
            let _ = writeln!(err, "twinkv inspect: {}", Chain(&e));
            return match e {
                RecoverError::Path { .. } => EXIT_USAGE,
                _ => EXIT_NO_VALID,
            };
        }
    };
    let status = if scan.files.is_empty() || scan.best.is_some() {
        EXIT_OK
    } else {
        EXIT_NO_VALID
    };
    match report(&scan, path, mode, status, out, err).and_then(|()| out.flush()) {
        Ok(()) => status,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => status,
        Err(e) => {
            let _ = writeln!(err, "twinkv inspect: cannot write the report: {e}");
            EXIT_NO_VALID
        }
    }
}

fn report(
    scan: &Scan,
    path: &Path,
    mode: Mode,
    status: u8,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    match mode {
        Mode::Human => human(scan, path, out)?,
        Mode::Json => {
            let files: Vec<_> = scan
                .files
                .iter()
                .map(|f| match &f.result {
                    Ok(s) => json!({
                        "path": f.path, "valid": true, "error": null, "seq": s.seq,
                        "count": s.count, "bytes": s.bytes, "capacity": f.capacity,
                        "written_at": s.written_at,
                    }),
                    Err(e) => json!({
                        "path": f.path, "valid": false, "error": Chain(e).to_string(), "seq": null,
                        "count": null, "bytes": null, "capacity": f.capacity,
                        "written_at": null,
                    }),
                })
                .collect();
            let doc = json!({ "files": files, "recovers_from": scan.recovers_from() });
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            writeln!(out)?;
        }
        Mode::Dump => match &scan.best {
            Some((_, image)) => format::dump(out, &image.entries)?,
            None if status == EXIT_OK => writeln!(out, "{{}}")?,
            None => writeln!(err, "twinkv inspect: no valid snapshot to dump")?,
        },
    }
    Ok(())
}

fn human(scan: &Scan, path: &Path, out: &mut dyn Write) -> io::Result<()> {
    if scan.files.is_empty() {
        return writeln!(
            out,
            "no snapshot files in {}: a server would start empty",
            path.display()
        );
    }
    for f in &scan.files {
        writeln!(out, "{}", f.path.display())?;
        writeln!(out, "  file size:  {} bytes", f.capacity)?;
        match &f.result {
            Ok(s) => {
                writeln!(out, "  valid:      yes")?;
                writeln!(out, "  image:      {} bytes", s.bytes)?;
                writeln!(out, "  seq:        {}", s.seq)?;
                writeln!(out, "  keys:       {}", s.count)?;
                writeln!(out, "  written at: {}", s.written_at)?;
            }
            Err(e) => writeln!(out, "  valid:      NO, {}", Chain(e))?,
        }
    }
    match &scan.best {
        Some((i, image)) => writeln!(
            out,
            "recovery would load {} (seq {}, {} keys)",
            scan.files[*i].path.display(),
            image.seq,
            image.entries.len()
        ),
        None => writeln!(
            out,
            "no valid snapshot: a server would refuse to start on this data dir"
        ),
    }
}
