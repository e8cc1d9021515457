//! `inspect`: report on slot files and the log to a person or a script, and say what recovery
//! would load.
//!
//! Reads files with ordinary reads and takes no lock, so it works beside a running server.
//!
//! A cluster node's data dir (one with a `raft/` folder) has Raft records in its log: their
//! seqs are decided when a node applies them, so they cannot be replayed here. Its segments are
//! listed and checked as a standalone log's are, the Raft records are counted, not applied, and
//! what "recovery would load" (and `--dump`) is the slot checkpoint alone; the node itself
//! starts from its Raft snapshot (the `raft` section).

use std::io::{self, Write};
use std::path::Path;

use serde_json::json;

use crate::log::scan::LogReport;
use crate::recovery::{self, Recovery, Refusal, Replay};
use crate::snapshot::format;
use crate::snapshot::recover::{Depth, RecoverError, Scan};
use crate::Chain;

/// How to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A paragraph per file, then the verdict.
    Human,
    /// `{"files": [...], "log": [...], "recovers_from": ..., "recovers_to_seq": n}`.
    Json,
    /// The data map recovery would load.
    Dump,
}

/// Exit status: recovery would succeed (also for a dir with no snapshot).
pub const EXIT_OK: u8 = 0;
/// Exit status: recovery would refuse (no valid snapshot among existing ones, a damaged log).
pub const EXIT_NO_VALID: u8 = 1;
/// Exit status: usage error or missing path.
pub const EXIT_USAGE: u8 = 2;

/// Reports on `path` (a data dir or a slot file) to `out`; returns the exit status.
///
/// A reader of `out` that went away (`inspect --dump | head`) is not an error: the status is
/// what it would have been. Any other failure to write the report is said on `err`, status 1.
pub fn inspect(path: &Path, mode: Mode, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let abs = match std::path::absolute(path) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(err, "twinkv inspect: cannot open {}: {e}", path.display());
            return EXIT_USAGE;
        }
    };
    // A data dir has a log beside its slots; a single slot file is reported alone.
    let log_dir = abs.is_dir().then(|| abs.join(crate::log::DIR));
    let scan = match Scan::dir_or_file(&abs, Depth::Every) {
        Ok(scan) => scan,
        Err(e) => {
            let _ = writeln!(err, "twinkv inspect: {}", Chain(&e));
            return match e {
                RecoverError::Path { .. } => EXIT_USAGE,
                _ => EXIT_NO_VALID,
            };
        }
    };
    let files = slot_reports(&scan);
    let replay = if abs.join(crate::cluster::DIR).is_dir() {
        Replay::Check
    } else {
        Replay::Records
    };
    let result = recovery::recover_scan(scan, log_dir.as_deref(), replay);
    let status = if result.is_ok() {
        EXIT_OK
    } else {
        EXIT_NO_VALID
    };
    match report(&files, &result, &abs, mode, out, err).and_then(|()| out.flush()) {
        Ok(()) => status,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => status,
        Err(e) => {
            let _ = writeln!(err, "twinkv inspect: cannot write the report: {e}");
            EXIT_NO_VALID
        }
    }
}

/// One JSON object per slot file.
fn slot_reports(scan: &Scan) -> Vec<serde_json::Value> {
    scan.files
        .iter()
        .map(|f| match &f.result {
            Ok(s) => json!({
                "path": f.path, "valid": true, "error": null, "seq": s.seq,
                "count": s.count, "bytes": s.bytes, "capacity": f.capacity,
                "written_at": s.written_at, "log_index": s.log_index,
            }),
            Err(e) => json!({
                "path": f.path, "valid": false, "error": Chain(e).to_string(), "seq": null,
                "count": null, "bytes": null, "capacity": f.capacity,
                "written_at": null, "log_index": null,
            }),
        })
        .collect()
}

/// The log as the scan found it: every segment, also when recovery refuses (then empty only
/// when the snapshots were refused before the log was read).
fn log_of(rec: &Result<Recovery, Refusal>) -> &LogReport {
    match rec {
        Ok(r) => &r.log,
        Err(r) => &r.log,
    }
}

/// One JSON object per log segment.
fn log_reports(log: &LogReport) -> Vec<serde_json::Value> {
    log.segments
        .iter()
        .map(|s| {
            let torn = log.torn.as_ref().filter(|t| t.path == s.path);
            json!({
                "path": s.path, "valid": s.error.is_none(), "error": s.error,
                "first_index": s.first_index, "last_index": s.last_index,
                "first_seq": s.seqs.map(|x| x.0), "last_seq": s.seqs.map(|x| x.1),
                "bytes": s.bytes, "raft": s.raft,
                "torn_tail": torn.map(|t| json!({"offset": t.offset, "bytes": t.bytes})),
            })
        })
        .collect()
}

fn report(
    files: &[serde_json::Value],
    rec: &Result<Recovery, Refusal>,
    path: &Path,
    mode: Mode,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    match mode {
        Mode::Human => human(files, rec, path, out),
        Mode::Json => {
            let (from, to, raft_records) = match rec {
                Ok(r) => (
                    json!(r.image.as_ref().map(|i| &i.path)),
                    json!(r.seq),
                    r.raft_records,
                ),
                Err(_) => (json!(null), json!(null), 0),
            };
            let mut doc = json!({
                "files": files,
                "log": log_reports(log_of(rec)),
                "recovers_from": from,
                "recovers_to_seq": to,
            });
            if log_of(rec).raft {
                // Counted, not replayed: `recovers_to_seq` is the checkpoint's.
                doc["log_raft_records"] = json!(raft_records);
            }
            if let Some(raft) = crate::cluster::inspect(path) {
                doc["raft"] = raft;
            }
            if let Err(r) = rec {
                doc["error"] = json!(Chain(&r.error).to_string());
            }
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            writeln!(out)
        }
        Mode::Dump => match rec {
            Ok(r) => format::dump(out, &r.entries, crate::store::now_ms()),
            Err(r) => writeln!(err, "twinkv inspect: nothing to dump: {}", Chain(&r.error)),
        },
    }
}

fn human(
    files: &[serde_json::Value],
    rec: &Result<Recovery, Refusal>,
    path: &Path,
    out: &mut dyn Write,
) -> io::Result<()> {
    if files.is_empty() {
        writeln!(out, "no snapshot files in {}", path.display())?;
    }
    for f in files {
        writeln!(out, "{}", f["path"].as_str().unwrap_or("?"))?;
        writeln!(out, "  file size:  {} bytes", f["capacity"])?;
        if f["valid"] == true {
            writeln!(out, "  valid:      yes")?;
            writeln!(out, "  image:      {} bytes", f["bytes"])?;
            writeln!(out, "  seq:        {}", f["seq"])?;
            writeln!(out, "  keys:       {}", f["count"])?;
            writeln!(out, "  log index:  {}", f["log_index"])?;
            writeln!(
                out,
                "  written at: {}",
                f["written_at"].as_str().unwrap_or("?")
            )?;
        } else {
            writeln!(
                out,
                "  valid:      NO, {}",
                f["error"].as_str().unwrap_or("?")
            )?;
        }
    }
    if let Some(raft) = crate::cluster::inspect(path) {
        // A cluster node: the Raft dir is what it starts from; the slots are checkpoints.
        let log = &raft["log"];
        writeln!(out, "{}", log["path"].as_str().unwrap_or("?"))?;
        writeln!(
            out,
            "  raft log:   {} entries, index {}..={} (purged through {}), torn tail {} bytes \
             (segments below)",
            log["entries"],
            log["first_index"],
            log["last_index"],
            log["purged_through"],
            log["torn_tail_bytes"]
        )?;
        writeln!(out, "  vote:       {}", raft["vote"])?;
        writeln!(out, "  snapshot:   {}", raft["snapshot"])?;
        writeln!(
            out,
            "a cluster node starts from its Raft snapshot and applies the committed entries after it"
        )?;
    }
    let log = log_of(rec);
    if rec.is_ok() && log.segments.is_empty() {
        writeln!(out, "log: no segments")?;
    }
    for s in &log.segments {
        writeln!(out, "{}", s.path.display())?;
        writeln!(out, "  file size:  {} bytes", s.bytes)?;
        match (s.last_index, s.seqs) {
            (Some(last), Some((a, b))) => writeln!(
                out,
                "  records:    index {}..={last}, seq {a}..={b}",
                s.first_index
            )?,
            (Some(last), None) => writeln!(
                out,
                "  records:    index {}..={last}, Raft entries (no seq until applied)",
                s.first_index
            )?,
            _ => writeln!(
                out,
                "  records:    none (starts at index {})",
                s.first_index
            )?,
        }
        match &s.error {
            None => writeln!(out, "  valid:      yes")?,
            Some(e) => writeln!(out, "  valid:      NO, {e}")?,
        }
        if let Some(t) = log.torn.as_ref().filter(|t| t.path == s.path) {
            // A start cuts it only when it goes on to start.
            let cut = if rec.is_ok() { "; cut at start" } else { "" };
            writeln!(
                out,
                "  torn tail:  {} bytes at offset {} (never answered{cut})",
                t.bytes, t.offset
            )?;
        }
    }
    match rec {
        Ok(r) if log.raft => {
            let from = match &r.image {
                Some(i) => format!("{} (seq {})", i.path.display(), i.seq),
                None => "no snapshot".into(),
            };
            writeln!(
                out,
                "the log holds {} Raft records, checked, not replayed (their seqs are decided \
                 when a node applies them); the slot checkpoint is {from}: seq {}, {} keys",
                r.raft_records,
                r.seq,
                r.entries.len()
            )
        }
        Ok(r) => {
            let from = match &r.image {
                Some(i) => format!("{} (seq {})", i.path.display(), i.seq),
                None => "no snapshot".into(),
            };
            writeln!(
                out,
                "recovery would load {from} + {} log records: seq {}, {} keys",
                r.replayed,
                r.seq,
                r.entries.len()
            )
        }
        Err(r) => writeln!(
            out,
            "a server would refuse to start on this data dir: {}",
            Chain(&r.error)
        ),
    }
}
