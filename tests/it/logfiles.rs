//! The log's files as the real binary leaves them, altered by hand between runs.
//!
//! Every data dir here is made by a real server (writes over HTTP, `POST /snapshot`, then
//! SIGKILL so no final snapshot hides the log, or SIGTERM), copied, and altered on disk:
//!
//! - a torn last record (cut at every byte, or one byte changed) is cut back at start-up, its
//!   bytes kept in `<segment>.<offset>.broken`, and the state before it recovered exactly
//!   (values, versions, seq); `inspect` exits 0 on the torn dir and reports the torn tail;
//! - damage anywhere else (an earlier record, a missing segment, a missing or repeated index, a
//!   log that does not reach back to the snapshot's position) makes the server refuse to start,
//!   exit 1, naming the file (and byte offset), with nothing in the data dir changed, and
//!   `inspect` exits 1 and names the same place, still listing every segment: the one that
//!   holds the damage invalid with that reason, the others valid;
//! - a crash between any two steps of a checkpoint recovers exactly, and the segments kept are
//!   those back to the older slot's position;
//! - every line of every segment is a JSON object `jq` reads, and `inspect --dump` of a live
//!   server's dir is its state.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::util::{clone_dir, inspect, num, temp_dir, Entries, Server};

/// Segments roll at this size in the tests that want several.
const SMALL_SEGMENTS: [&str; 2] = ["--log-segment-bytes", "300"];

/// What a server shows over HTTP: every key with its value and version, and the seq.
#[derive(Debug, Clone, PartialEq)]
struct State {
    entries: Entries,
    seq: u64,
}

fn state(s: &Server) -> State {
    let seq = num(&s.snapshot_status(), "seq");
    State {
        entries: s.entries(),
        seq,
    }
}

/// The segment files of a data dir, in index order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .expect("list the log folder")
        .map(|e| e.expect("a log folder entry").path())
        .filter(|p| first_index(p).is_some())
        .collect();
    out.sort();
    out
}

/// The first index a segment's name stands for (`<20 digits>.jsonl`).
fn first_index(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".jsonl")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The lines of a file with their byte offsets, each with its newline (if it has one).
fn lines(path: &Path) -> Vec<(usize, Vec<u8>)> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let end = bytes[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| at + i + 1);
        out.push((at, bytes[at..end].to_vec()));
        at = end;
    }
    out
}

/// A record line as JSON (it must be one).
fn record(line: &[u8]) -> Value {
    serde_json::from_slice(line).unwrap_or_else(|e| {
        panic!(
            "a log line is not JSON ({e}): {}",
            String::from_utf8_lossy(line)
        )
    })
}

/// `(first index, last index)` of each segment's records, read from the files. A segment a
/// running server deletes while they are read is left out.
fn spans(dir: &Path) -> Vec<(PathBuf, u64, Option<u64>)> {
    segments(dir)
        .into_iter()
        .filter_map(|p| {
            let bytes = match fs::read(&p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => panic!("read {}: {e}", p.display()),
            };
            let last = bytes
                .split(|&b| b == b'\n')
                .rfind(|l| !l.is_empty())
                .map(|l| num(&record(l), "index"));
            Some((p.clone(), first_index(&p).unwrap(), last))
        })
        .collect()
}

/// Every file under `dir` but the lock file (which each start rewrites), by relative path.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("list a data dir") {
            let path = entry.expect("an entry").path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if path.is_dir() {
                out.insert(rel.join(""), Vec::new());
                walk(root, &path, out);
            } else if rel != Path::new("LOCK") {
                out.insert(rel, fs::read(&path).expect("read a file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `twinkv inspect --json DIR`: exit code and the parsed report.
fn inspect_json(dir: &Path) -> (i32, Value) {
    let (code, out, err) = inspect(&["--json", dir.to_str().expect("UTF-8 path")]);
    let report = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("inspect --json printed no JSON ({e}): {out:?}; {err}"));
    (code, report)
}

/// The `log` entry of an inspect report for `segment`.
fn log_entry<'a>(report: &'a Value, segment: &Path) -> &'a Value {
    report["log"]
        .as_array()
        .unwrap_or_else(|| panic!("no log array in {report}"))
        .iter()
        .find(|s| s["path"].as_str() == segment.to_str())
        .unwrap_or_else(|| panic!("{} is not reported in {report}", segment.display()))
}

/// Waits (bounded) until the server's stderr contains `text`; returns all of it.
fn stderr_with(s: &Server, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let err = s.stderr.lock().unwrap().clone();
        if err.contains(text) || Instant::now() > deadline {
            return err;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts a server refuses to start on `dir`: exit 1, every place in `names` in its message,
/// nothing in the data dir changed; and that `inspect` exits 1 naming the same places, in both
/// its human and its JSON report, and lists every segment with `damaged` (the segment that
/// holds the damage) invalid. Returns the message.
fn assert_refused(dir: &Path, args: &[&str], damaged: &Path, names: &[&str], case: &str) -> String {
    let before = files(dir);
    let err = match Server::try_start(dir, args) {
        Ok(s) => {
            let seen = state(&s);
            panic!("{case}: the server started on a damaged log, at {seen:?}")
        }
        Err((status, err)) => {
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(1),
                "{case}: exit status; stderr: {err}"
            );
            err
        }
    };
    for n in names {
        assert!(
            err.contains(n),
            "{case}: the refusal does not name {n:?}: {err}"
        );
    }
    assert!(
        files(dir) == before,
        "{case}: a refused start changed the data dir"
    );

    let (code, human, _) = inspect(&[dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{case}: inspect: {human}");
    assert!(human.contains("refuse"), "{case}: {human}");
    let (code, report) = inspect_json(dir);
    assert_eq!(code, 1, "{case}: inspect --json: {report}");
    let error = report["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: no error in {report}"));
    for n in names {
        assert!(
            error.contains(n),
            "{case}: inspect does not name {n:?}: {error}"
        );
        assert!(
            human.contains(n),
            "{case}: inspect does not name {n:?}: {human}"
        );
    }
    assert_eq!(report["recovers_from"], Value::Null, "{case}: {report}");
    assert_log_listed(dir, damaged, names, &report, &human, case);
    assert!(files(dir) == before, "{case}: inspect changed the data dir");
    err
}

/// Asserts inspect's reports on a refused `dir` list every segment of its log, in index order,
/// with its size and first index: `damaged` invalid, its error naming each of `names`, and
/// every other one valid, with no error and the last index its file holds. The human report
/// has a paragraph per segment saying the same.
fn assert_log_listed(
    dir: &Path,
    damaged: &Path,
    names: &[&str],
    report: &Value,
    human: &str,
    case: &str,
) {
    let segs = segments(dir);
    assert!(
        segs.iter().any(|s| s == damaged),
        "{case}: {} is not a segment of {segs:?}",
        damaged.display()
    );
    let listed: Vec<&str> = report["log"]
        .as_array()
        .unwrap_or_else(|| panic!("{case}: no log array in {report}"))
        .iter()
        .map(|s| s["path"].as_str().unwrap_or("?"))
        .collect();
    let every: Vec<String> = segs.iter().map(|s| shown(s)).collect();
    assert_eq!(listed, every, "{case}: the segments inspect --json lists");
    let paragraphs = paragraphs(human);
    for seg in &segs {
        let entry = log_entry(report, seg);
        let paragraph = paragraphs.get(&shown(seg)).unwrap_or_else(|| {
            panic!(
                "{case}: the human report has no paragraph for {}: {human}",
                seg.display()
            )
        });
        let size = fs::metadata(seg).unwrap().len();
        assert_eq!(entry["bytes"], json!(size), "{case}: {entry}");
        assert_eq!(
            entry["first_index"],
            json!(first_index(seg).unwrap()),
            "{case}: {entry}"
        );
        assert!(
            paragraph.contains(&format!("file size:  {size} bytes")),
            "{case}: {paragraph}"
        );
        if seg == damaged {
            assert_eq!(entry["valid"], false, "{case}: {entry}");
            let error = entry["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{case}: no error for the damaged segment: {entry}"));
            assert!(
                paragraph.contains("valid:      NO, "),
                "{case}: {paragraph}"
            );
            for n in names {
                assert!(error.contains(n), "{case}: {entry} does not name {n:?}");
                assert!(
                    paragraph.contains(n),
                    "{case}: {paragraph} does not name {n:?}"
                );
            }
        } else {
            let last = lines(seg)
                .last()
                .map(|(_, line)| num(&record(line), "index"));
            assert_eq!(entry["valid"], true, "{case}: {entry}");
            assert_eq!(entry["error"], Value::Null, "{case}: {entry}");
            assert_eq!(entry["last_index"], json!(last), "{case}: {entry}");
            assert!(paragraph.contains("valid:      yes"), "{case}: {paragraph}");
        }
    }
}

/// The paragraphs of a human report by their first line (a path, or a verdict): each runs on
/// over the indented lines after it.
fn paragraphs(human: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut head: Option<String> = None;
    for line in human.lines() {
        match &head {
            Some(h) if line.starts_with(' ') => {
                let text: &mut String = out.get_mut(h).expect("the paragraph begun");
                text.push_str(line);
                text.push('\n');
            }
            _ => {
                head = Some(line.to_string());
                out.insert(line.to_string(), format!("{line}\n"));
            }
        }
    }
    out
}

/// The path of a segment as messages print it.
fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// A line with its checksum made anew over its bytes (as a well-meaning editor would).
fn reseal(line: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(line).unwrap().trim_end_matches('\n');
    let at = text.rfind(",\"crc32c\":\"").expect("a checksum field");
    let body = &text[..at];
    format!(
        "{body},\"crc32c\":\"{:08x}\"}}\n",
        crc32c::crc32c(body.as_bytes())
    )
    .into_bytes()
}

/// Replaces `line` number `n` of `path` (`None`: removes it).
fn replace_line(path: &Path, n: usize, with: Option<Vec<u8>>) {
    let mut out = Vec::new();
    for (i, (_, l)) in lines(path).into_iter().enumerate() {
        if i == n {
            if let Some(w) = &with {
                out.extend_from_slice(w);
            }
        } else {
            out.extend_from_slice(&l);
        }
    }
    fs::write(path, out).unwrap();
}

/// Whether the segments left are those the contract keeps: no gap, back to the older slot's
/// position (`older`: the last record it holds), and none that both slots cover but the last.
fn kept_back_to(dir: &Path, older: u64) -> Result<(), String> {
    let spans = spans(dir);
    for pair in spans.windows(2) {
        let ((a, _, last), (b, first, _)) = (&pair[0], &pair[1]);
        let Some(last) = last else {
            return Err(format!("{} is empty and not last", a.display()));
        };
        if *first != last + 1 {
            return Err(format!("a gap before {}: {spans:?}", b.display()));
        }
    }
    let (first, first_index, _) = &spans[0];
    if *first_index > older + 1 {
        return Err(format!(
            "{} starts at {first_index}, but the older slot needs every record after {older}",
            first.display()
        ));
    }
    for (seg, _, last) in &spans[..spans.len() - 1] {
        if last.unwrap() <= older {
            return Err(format!(
                "{} holds only records both slots have, and was kept: {spans:?}",
                seg.display()
            ));
        }
    }
    Ok(())
}

/// Waits (bounded) until `done` holds of the log: a checkpoint deletes segments after it
/// answers `POST /snapshot`. Panics with the last reason it did not.
fn await_log(dir: &Path, case: &str, done: impl Fn(&Path) -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match done(dir) {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{case}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A torn last record

/// A data dir whose log ends in one batch record after an image, left by SIGKILL.
struct LastRecord {
    dir: tempfile::TempDir,
    /// The state before the last record, and with it.
    before: State,
    after: State,
}

fn made_with_a_last_record() -> LastRecord {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.put_json("a", &json!({"n": 1})).status, 201);
    assert_eq!(s.put_text("b", "bee").status, 201);
    let r = s.batch(&json!({"put": {"c": [1, 2], "d": null}, "delete": ["b"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    s.snapshot_now();
    let r = s.request(
        "PUT",
        "/kv/a",
        &[("Content-Type", "application/json"), ("If-Match", "\"1\"")],
        Some(br#"{"n":2}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.delete("c").status, 204);
    assert_eq!(s.put_text("e", "é \"quoted\"\n").status, 201);
    let before = state(&s);
    // The last record changes a value and a version, adds a key and removes one, at one seq.
    let r = s.batch(&json!({"put": {"a": {"n": 3}, "f": "new"}, "delete": ["d"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    let after = state(&s);
    assert_eq!(after.seq, before.seq + 1);
    s.kill();
    let made = LastRecord { dir, before, after };
    let (_, line) = made.last_line();
    assert_eq!(num(&record(&line), "seq"), made.after.seq);
    made
}

impl LastRecord {
    fn segment(&self) -> PathBuf {
        segments(self.dir.path()).pop().expect("a segment")
    }

    /// The last line of the last segment and its offset.
    fn last_line(&self) -> (usize, Vec<u8>) {
        lines(&self.segment()).pop().expect("a record")
    }
}

/// On a copy of `made`, replaces the last record with `tail`; then checks that inspect reports
/// the torn tail, that start-up cuts it (keeping it in the `.broken` file) and recovers the state
/// before it, and, when `go_on`, that the log goes on from the cut through another restart.
fn assert_torn_tail_cut(made: &LastRecord, tail: &[u8], go_on: bool, case: &str) {
    let (offset, _) = made.last_line();
    let copy = clone_dir(made.dir.path());
    let dir = copy.path();
    let seg = segments(dir).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes.truncate(offset);
    let good = bytes.clone();
    bytes.extend_from_slice(tail);
    fs::write(&seg, &bytes).unwrap();

    let (code, report) = inspect_json(dir);
    assert_eq!(code, 0, "{case}: inspect on a torn tail: {report}");
    let entry = log_entry(&report, &seg);
    assert_eq!(
        entry["torn_tail"],
        json!({"offset": offset, "bytes": tail.len()}),
        "{case}: {report}"
    );
    assert_eq!(entry["valid"], true, "{case}: {report}");
    assert_eq!(
        report["recovers_to_seq"], made.before.seq,
        "{case}: {report}"
    );
    assert_eq!(
        fs::read(&seg).unwrap(),
        bytes,
        "{case}: inspect changed the segment"
    );

    let s = Server::start(dir, &[]);
    assert_eq!(
        state(&s),
        made.before,
        "{case}: not the state before the torn record"
    );
    let name = seg.file_name().unwrap().to_str().unwrap();
    let broken = seg.with_file_name(format!("{name}.{offset}.broken"));
    assert_eq!(
        fs::read(&broken).unwrap_or_else(|e| panic!("{case}: {}: {e}", broken.display())),
        tail,
        "{case}: the .broken file does not hold the cut bytes"
    );
    assert_eq!(fs::read(&seg).unwrap(), good, "{case}: not cut at {offset}");
    let said = s.stdout.lock().unwrap().join("\n");
    assert!(
        said.contains("torn") && said.contains(&shown(&broken)),
        "{case}: start-up does not say where the cut bytes went: {said}"
    );
    let err = stderr_with(&s, "torn");
    assert!(
        err.contains("torn") && err.contains(&shown(&seg)),
        "{case}: stderr: {err}"
    );
    if !go_on {
        s.kill();
        return;
    }
    // The next record takes the cut one's place, and the log reads back whole.
    let r = s.put_text("g", "after the cut");
    assert_eq!(r.status, 201, "{case}");
    assert_eq!(num(&r.json(), "version"), made.before.seq + 1, "{case}");
    let next = state(&s);
    s.kill();
    let (_, line) = lines(&seg).pop().unwrap();
    assert_eq!(
        num(&record(&line), "index"),
        num(&record(&made.last_line().1), "index")
    );
    let s = Server::start(dir, &[]);
    assert_eq!(state(&s), next, "{case}: after a write past the cut");
    let said = s.stdout.lock().unwrap().join("\n");
    assert!(!said.contains("torn"), "{case}: a second cut: {said}");
    s.kill();
    assert!(
        fs::read_dir(dir.join("log"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "broken"))
            .count()
            == 1,
        "{case}: more than one .broken file"
    );
}

#[test]
fn an_untouched_log_recovers_the_last_record() {
    // The baseline the tests below alter: without damage, the last record is recovered.
    let made = made_with_a_last_record();
    let copy = clone_dir(made.dir.path());
    let (code, report) = inspect_json(copy.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["recovers_to_seq"], made.after.seq, "{report}");
    let s = Server::start(copy.path(), &[]);
    assert_eq!(state(&s), made.after);
    assert_ne!(made.before, made.after);
    s.kill();
    assert!(!fs::read_dir(copy.path().join("log")).unwrap().any(|e| e
        .unwrap()
        .path()
        .extension()
        .is_some_and(|x| x == "broken")));
}

#[test]
fn every_truncation_of_the_last_record_is_cut_back_to_the_state_before_it() {
    let made = made_with_a_last_record();
    let (_, line) = made.last_line();
    for cut in 1..line.len() {
        // The log goes on from the cut: checked at a few cuts (each costs two more starts).
        let go_on = cut == 1 || cut == line.len() / 2 || cut == line.len() - 1;
        assert_torn_tail_cut(&made, &line[..cut], go_on, &format!("cut at {cut}"));
    }
}

#[test]
fn a_changed_byte_in_the_last_record_is_cut_back_to_the_state_before_it() {
    let made = made_with_a_last_record();
    let (_, line) = made.last_line();
    let text = std::str::from_utf8(&line).unwrap();
    let find = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} in {text}"));
    let n = line.len();
    // The checksum's eight digits sit before the closing `"}` and the newline.
    let digit = n - 11;
    let cases: Vec<(&str, usize, u8)> = vec![
        ("the opening brace", 0, b'['),
        ("a field name", find("\"index\"") + 1, b'j'),
        ("the index", find("\"index\":") + 8, b'9'),
        ("the seq", find("\"seq\":") + 6, b'9'),
        ("a key", find("\"f\"") + 1, b'g'),
        ("a value", find("\"new\"") + 1, b'm'),
        ("a structural comma", find(",\"seq\""), b' '),
        (
            "a checksum digit (to another hex digit)",
            digit,
            if line[digit] == b'0' { b'1' } else { b'0' },
        ),
        ("a checksum digit (to a non-hex byte)", digit + 5, b'x'),
        ("the checksum's field name", find("\"crc32c\"") + 2, b'C'),
        ("the closing brace", n - 2, b']'),
        ("the newline", n - 1, b' '),
    ];
    for (what, at, to) in cases {
        assert_ne!(line[at], to, "{what}: not a change");
        let mut bad = line.clone();
        bad[at] = to;
        assert_torn_tail_cut(&made, &bad, what == "a value", what);
    }
}

#[test]
fn a_torn_tail_appended_after_a_clean_shutdown_is_cut_and_kept() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.put_text("x", "1").status, 201);
    assert_eq!(s.put_json("y", &json!([true])).status, 201);
    let clean = state(&s);
    assert_eq!(s.terminate().code(), Some(0));
    let seg = segments(dir.path()).pop().expect("a segment");
    let (_, last) = lines(&seg).pop().expect("a record");
    let next = clean.seq + 1;
    let whole = reseal(
        format!(
            "{{\"index\":{next},\"seq\":{next},\"writes\":[{{\"put\":\"z\",\"value\":1}}],\"crc32c\":\"00000000\"}}\n"
        )
        .as_bytes(),
    );
    let mut wrong_crc = whole.clone();
    let d = wrong_crc.len() - 4;
    wrong_crc[d] = if wrong_crc[d] == b'0' { b'1' } else { b'0' };
    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("half a record", whole[..whole.len() / 2].to_vec()),
        (
            "a record without its newline",
            whole[..whole.len() - 1].to_vec(),
        ),
        ("a whole record with a wrong checksum", wrong_crc),
        (
            "a block of zeros (a length that grew before its data)",
            vec![0; 4096],
        ),
        (
            "two bad lines",
            [&whole[..20], b"\n", &whole[5..30]].concat(),
        ),
    ];
    let offset = fs::metadata(&seg).unwrap().len() as usize;
    for (what, tail) in tails {
        let copy = clone_dir(dir.path());
        let seg = segments(copy.path()).pop().unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        assert!(bytes.ends_with(&last));
        let good = bytes.clone();
        bytes.extend_from_slice(&tail);
        fs::write(&seg, &bytes).unwrap();
        let (code, report) = inspect_json(copy.path());
        assert_eq!(code, 0, "{what}: {report}");
        assert_eq!(
            log_entry(&report, &seg)["torn_tail"],
            json!({"offset": offset, "bytes": tail.len()}),
            "{what}: {report}"
        );
        let s = Server::start(copy.path(), &[]);
        assert_eq!(state(&s), clean, "{what}");
        let name = seg.file_name().unwrap().to_str().unwrap();
        let broken = seg.with_file_name(format!("{name}.{offset}.broken"));
        assert_eq!(fs::read(&broken).unwrap(), tail, "{what}");
        assert_eq!(fs::read(&seg).unwrap(), good, "{what}");
        let r = s.put_text("z", "after");
        assert_eq!(num(&r.json(), "version"), next, "{what}");
        let after = state(&s);
        assert_eq!(s.terminate().code(), Some(0));
        let s = Server::start(copy.path(), &[]);
        assert_eq!(state(&s), after, "{what}");
        s.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Damage that is not a torn tail

/// A data dir of at least four segments and no snapshot, left by SIGKILL.
fn made_with_segments() -> tempfile::TempDir {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &SMALL_SEGMENTS);
    for i in 0..16 {
        assert_eq!(
            s.put_text(&format!("k{i:02}"), &format!("value {i}"))
                .status,
            201
        );
    }
    s.kill();
    let segs = spans(dir.path());
    assert!(segs.len() >= 4, "{segs:?}");
    assert!(segs.iter().all(|(_, _, last)| last.is_some()), "{segs:?}");
    dir
}

/// A copy of `made`'s dir with `alter` applied to its segment list; `alter` returns the
/// segment that then holds the damage and what else a report must name (the byte offset, an
/// index). Asserts the server refuses it, naming the segment and each of those.
fn assert_damage_refused(
    made: &Path,
    case: &str,
    alter: impl FnOnce(&[PathBuf]) -> (PathBuf, Vec<String>),
) {
    let copy = clone_dir(made);
    let (damaged, names) = alter(&segments(copy.path()));
    let names: Vec<String> = [shown(&damaged)].into_iter().chain(names).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_refused(copy.path(), &[], &damaged, &names, case);
}

/// Sets byte `at` of line `n` of `path` to `to`.
fn change_byte(path: &Path, n: usize, at: usize, to: u8) -> usize {
    let (offset, mut line) = lines(path)[n].clone();
    assert_ne!(line[at], to);
    line[at] = to;
    replace_line(path, n, Some(line));
    offset
}

#[test]
fn a_resealed_record_holding_a_value_no_server_writes_is_refused_naming_it() {
    let made = made_with_segments();
    // A correct checksum over a value the HTTP API refuses or never stores (found by fuzzing
    // the record decoder): replay would have put it in the map as it stands.
    for (value, why) in [
        ("1e999", "a number beyond a 64-bit float"),
        ("[1, 2]", "whitespace outside strings"),
        (r#""\ud800""#, "a lone surrogate escape"),
    ] {
        assert_damage_refused(made.path(), value, |segs| {
            let seg = &segs[0];
            let (offset, line) = lines(seg)[0].clone();
            let text = String::from_utf8(line).unwrap();
            let changed = text.replacen(r#""value 0""#, value, 1);
            assert_ne!(changed, text, "the first record puts \"value 0\"");
            replace_line(seg, 0, Some(reseal(changed.as_bytes())));
            (
                seg.clone(),
                vec![format!("at byte {offset}"), why.to_string()],
            )
        });
    }
}

#[test]
fn a_changed_byte_in_an_earlier_record_is_refused_naming_file_and_offset() {
    let made = made_with_segments();
    // In the last segment, with a valid record after it: a value, the JSON, the checksum.
    for (what, n, pick) in [
        ("a value", 0usize, "value " as &str),
        ("the JSON", 1, "\"writes\""),
        ("a checksum digit", 2, "\"crc32c\":\""),
    ] {
        assert_damage_refused(made.path(), what, |segs| {
            // The last segment with three records or more: line `n` has a valid one after it.
            let seg = segs
                .iter()
                .rev()
                .find(|s| lines(s).len() >= 3)
                .expect("a segment of three records");
            let (_, line) = lines(seg)[n].clone();
            let text = std::str::from_utf8(&line).unwrap();
            let at = text.find(pick).unwrap() + pick.len();
            let to = if line[at] == b'0' { b'1' } else { b'0' };
            let offset = change_byte(seg, n, at, to);
            (seg.clone(), vec![format!("at byte {offset}")])
        });
    }
    // The last record of an earlier segment: later segments hold valid records.
    assert_damage_refused(made.path(), "the end of the first segment", |segs| {
        let seg = &segs[0];
        let n = lines(seg).len() - 1;
        let (_, line) = lines(seg)[n].clone();
        let offset = change_byte(seg, n, line.len() - 3, b'!');
        (seg.clone(), vec![format!("at byte {offset}")])
    });
    // A torn record in the middle of the log, followed by good ones: not a tail.
    assert_damage_refused(made.path(), "half a record in the middle", |segs| {
        let seg = &segs[1];
        let (offset, line) = lines(seg)[1].clone();
        replace_line(seg, 1, Some([&line[..line.len() / 2], b"\n"].concat()));
        (seg.clone(), vec![format!("at byte {offset}")])
    });
}

#[test]
fn a_missing_middle_segment_is_refused_naming_the_segment_after_the_gap() {
    let made = made_with_segments();
    assert_damage_refused(made.path(), "missing middle segment", |segs| {
        fs::remove_file(&segs[1]).unwrap();
        let expected = first_index(&segs[1]).unwrap();
        (segs[2].clone(), vec![format!("index {expected}")])
    });
}

#[test]
fn a_missing_or_repeated_index_is_refused_naming_file_and_offset() {
    let made = made_with_segments();
    assert_damage_refused(made.path(), "a line removed from a segment", |segs| {
        let seg = &segs[1];
        let (offset, _) = lines(seg)[1].clone();
        replace_line(seg, 1, None);
        (seg.clone(), vec![format!("at byte {offset}")])
    });
    assert_damage_refused(made.path(), "a line repeated", |segs| {
        let seg = &segs[2];
        let (_, line) = lines(seg)[1].clone();
        let (offset, _) = lines(seg)[2].clone();
        let mut bytes = fs::read(seg).unwrap();
        bytes.splice(offset..offset, line);
        fs::write(seg, bytes).unwrap();
        (seg.clone(), vec![format!("at byte {offset}")])
    });
    // Renumbered with its checksum made anew: a sealed record out of sequence is damage, in
    // the middle of the log and at its very end (it is no torn tail).
    for (what, which) in [
        ("a renumbered record", 1usize),
        ("a renumbered last record", 99),
    ] {
        assert_damage_refused(made.path(), what, |segs| {
            let seg = if which == 99 {
                segs.last().unwrap()
            } else {
                &segs[which]
            };
            let all = lines(seg);
            let n = if which == 99 { all.len() - 1 } else { 1 };
            let (offset, line) = all[n].clone();
            let index = num(&record(&line), "index");
            let text = String::from_utf8(line).unwrap().replacen(
                &format!("\"index\":{index},"),
                &format!("\"index\":{},", index + 1),
                1,
            );
            replace_line(seg, n, Some(reseal(text.as_bytes())));
            (
                seg.clone(),
                vec![format!("at byte {offset}"), format!("index {}", index + 1)],
            )
        });
    }
}

#[test]
fn a_sealed_batch_that_puts_a_key_twice_is_refused_naming_file_and_offset() {
    let made = made_with_segments();
    // The writer never logs one (a library batch keeps the last put of a key): its `expires`
    // could not say which put had the TTL, so replay could not be exact.
    assert_damage_refused(made.path(), "a batch putting a key twice", |segs| {
        let seg = &segs[1];
        let (offset, line) = lines(seg)[1].clone();
        let text = String::from_utf8(line).unwrap();
        let start = text.find("\"writes\":[").unwrap() + "\"writes\":[".len();
        let end = text.rfind("],\"crc32c\"").unwrap();
        let text = format!(
            "{}{{\"batch\":{{\"put\":{{\"dup\":1,\"dup\":2}},\"delete\":[]}}}}{}",
            &text[..start],
            &text[end..]
        );
        replace_line(seg, 1, Some(reseal(text.as_bytes())));
        (
            seg.clone(),
            vec![format!("at byte {offset}"), "puts \"dup\" twice".into()],
        )
    });
}

#[test]
fn a_log_that_does_not_reach_back_to_the_snapshot_is_refused() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &SMALL_SEGMENTS);
    for i in 0..6 {
        assert_eq!(s.put_text(&format!("a{i}"), "before").status, 201);
    }
    let image = s.snapshot_now();
    let image_index = num(&image, "log_index");
    await_log(dir.path(), "the checkpoint", |d| {
        kept_back_to(d, image_index)
    });
    for i in 0..10 {
        assert_eq!(s.put_text(&format!("b{i}"), "after").status, 201);
    }
    s.kill();
    let spans = spans(dir.path());
    // The records right after the image are in a segment kept (the first, or one after
    // segments that hold only records the image has), and later ones follow.
    let (_, starts, _) = spans[0].clone();
    assert!(
        starts <= image_index + 1,
        "{spans:?} vs image {image_index}"
    );
    let holder = spans
        .iter()
        .rposition(|(_, s, _)| *s <= image_index + 1)
        .expect("a segment holds the record after the image");
    assert!(spans.len() >= holder + 3, "{spans:?}");
    let slot = PathBuf::from(image["file"].as_str().unwrap());

    // Without the segments up to that one the log starts past the image's position: the
    // first record left is named, with what it follows.
    let copy = clone_dir(dir.path());
    for (seg, _, _) in &spans[..=holder] {
        fs::remove_file(copy.path().join("log").join(seg.file_name().unwrap())).unwrap();
    }
    let (second, starts, _) = spans[holder + 1].clone();
    let second = copy.path().join("log").join(second.file_name().unwrap());
    assert_refused(
        copy.path(),
        &[],
        &second,
        &[
            &shown(&second),
            "at byte 0",
            &format!("record {starts} follows record {image_index}"),
        ],
        "the segment after the image deleted",
    );

    // Only an empty segment named past the image's position: the log cannot reach back.
    let copy = clone_dir(dir.path());
    for (seg, _, _) in &spans {
        fs::remove_file(copy.path().join("log").join(seg.file_name().unwrap())).unwrap();
    }
    let named = image_index + 5;
    let only = copy.path().join("log").join(format!("{named:020}.jsonl"));
    fs::write(&only, b"").unwrap();
    assert_refused(
        copy.path(),
        &[],
        &only,
        &[
            &format!("starts at index {named}"),
            &shown(&copy.path().join(slot.file_name().unwrap())),
            &format!("after index {image_index}"),
        ],
        "only an empty segment past the image",
    );

    // Without any snapshot, the log must start at index 1.
    let made = made_with_segments();
    assert_damage_refused(
        made.path(),
        "the first segment of an image-less dir",
        |segs| {
            fs::remove_file(&segs[0]).unwrap();
            (
                segs[1].clone(),
                vec![
                    "at byte 0".into(),
                    format!("record {} follows record 0", first_index(&segs[1]).unwrap()),
                ],
            )
        },
    );
}

// ---------------------------------------------------------------------------------------------
// A crash between the steps of a checkpoint

/// `n` puts under `prefix`, one record each (writes are sent one at a time), and between them
/// a compare-and-set of the key put before (every third) and a delete of the key put three
/// before (every fourth).
fn writes(s: &Server, prefix: &str, n: usize) {
    for i in 0..n {
        let r = s.put_text(&format!("{prefix}/{i}"), &format!("{prefix} {i}"));
        assert_eq!(r.status, 201, "{}", r.text());
        if i % 3 == 2 {
            let earlier = format!("{prefix}/{}", i - 1);
            let v = version(s, &earlier);
            let r = s.request(
                "PUT",
                &format!("/kv/{earlier}"),
                &[("If-Match", &format!("\"{v}\""))],
                Some(format!("{prefix} {i} replaced").as_bytes()),
            );
            assert_eq!(r.status, 200, "{}", r.text());
        }
        if i % 4 == 3 {
            assert_eq!(s.delete(&format!("{prefix}/{}", i - 3)).status, 204);
        }
    }
}

/// The version of `key`, from the `ETag` of a read.
fn version(s: &Server, key: &str) -> u64 {
    let r = s.get(&format!("/kv/{key}"));
    assert_eq!(r.status, 200, "{key}: {}", r.text());
    let tag = r.header("ETag").expect("an ETag");
    tag.trim_matches('"').parse().expect("a numeric ETag")
}

/// The `files` entry of an inspect report for the slot `name`.
fn slot_entry<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files array in {report}"))
        .iter()
        .find(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| Path::new(p).file_name().is_some_and(|n| n == name))
        })
        .unwrap_or_else(|| panic!("{name} is not reported in {report}"))
}

/// Changes the middle byte of the run of `x`s in `path`'s image (of `len` bytes): a damage
/// only the image's checksum can see.
fn change_image_byte(path: &Path, len: u64) {
    let mut bytes = fs::read(path).unwrap();
    let image = &bytes[..len as usize];
    let start = image
        .windows(100)
        .position(|w| w.iter().all(|&b| b == b'x'))
        .expect("a run of x in the image");
    let run = image[start..].iter().take_while(|&&b| b == b'x').count();
    bytes[start + run / 2] = b'y';
    fs::write(path, bytes).unwrap();
}

#[test]
fn an_image_torn_before_its_flush_recovers_from_the_older_slot_and_the_log() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &SMALL_SEGMENTS);
    assert_eq!(s.put_text("blob", &"x".repeat(3000)).status, 201);
    writes(&s, "w1", 6);
    let older = s.snapshot_now();
    writes(&s, "w2", 9);
    let newer = s.snapshot_now();
    writes(&s, "w3", 9);
    let want = state(&s);
    s.kill();
    let slot = |v: &Value| {
        Path::new(v["file"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    let (older_slot, newer_slot) = (slot(&older), slot(&newer));
    assert_ne!(older_slot, newer_slot);
    let len = num(&newer, "bytes");
    type Tear = fn(&Path, u64);
    let tears: [(&str, Tear); 3] = [
        ("cut to half its image", |p, len| {
            let f = fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(len / 2).unwrap();
        }),
        (
            "the second half of its image never written (zeros)",
            |p, len| {
                let mut bytes = fs::read(p).unwrap();
                bytes[len as usize / 2..len as usize].fill(0);
                fs::write(p, bytes).unwrap();
            },
        ),
        ("one byte of its image not yet written", change_image_byte),
    ];
    for (what, tear) in tears {
        let copy = clone_dir(dir.path());
        let newer_path = copy.path().join(&newer_slot);
        tear(&newer_path, len);
        let (code, report) = inspect_json(copy.path());
        assert_eq!(code, 0, "{what}: {report}");
        assert_eq!(
            slot_entry(&report, &newer_slot)["valid"],
            false,
            "{what}: {report}"
        );
        let older_path = shown(&copy.path().join(&older_slot));
        assert_eq!(
            report["recovers_from"],
            json!(older_path),
            "{what}: {report}"
        );
        assert_eq!(report["recovers_to_seq"], want.seq, "{what}: {report}");

        let s = Server::start(copy.path(), &SMALL_SEGMENTS);
        assert_eq!(state(&s), want, "{what}: not the older slot plus the log");
        let replayed = want.seq - num(&older, "snapshot_seq");
        let said = s.stdout.lock().unwrap().join("\n");
        assert!(
            said.contains(&format!("recovered {older_path} + {replayed} log records")),
            "{what}: {said}"
        );
        s.kill();
    }
}

#[test]
fn segments_a_checkpoint_had_not_yet_deleted_are_skipped_then_deleted() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &SMALL_SEGMENTS);
    // Every segment as it stood before each checkpoint.
    let mut saved: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    let mut save = |dir: &Path| {
        for seg in segments(dir) {
            saved.insert(seg.file_name().unwrap().into(), fs::read(&seg).unwrap());
        }
    };
    writes(&s, "w1", 8);
    save(dir.path());
    let older = num(&s.snapshot_now(), "log_index");
    await_log(dir.path(), "the first checkpoint", |d| {
        kept_back_to(d, older)
    });
    writes(&s, "w2", 8);
    save(dir.path());
    let newer = s.snapshot_now();
    await_log(dir.path(), "the second checkpoint", |d| {
        kept_back_to(d, older)
    });
    writes(&s, "w3", 3);
    let want = state(&s);
    s.kill();

    // The checkpoints' last step undone: every segment they deleted is back.
    let now: Vec<PathBuf> = segments(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().into())
        .collect();
    let restored: Vec<&PathBuf> = saved.keys().filter(|n| !now.contains(n)).collect();
    assert!(
        !restored.is_empty(),
        "the checkpoints deleted nothing: {now:?}"
    );
    for name in &restored {
        fs::write(dir.path().join("log").join(name), &saved[*name]).unwrap();
    }
    let spans = spans(dir.path());
    assert_eq!(spans[0].1, 1, "the whole log is back: {spans:?}");

    let (code, report) = inspect_json(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["recovers_from"], newer["file"], "{report}");
    assert_eq!(report["recovers_to_seq"], want.seq, "{report}");
    let s = Server::start(dir.path(), &SMALL_SEGMENTS);
    assert_eq!(state(&s), want, "records the image holds were not skipped");
    let replayed = want.seq - num(&newer, "snapshot_seq");
    let said = s.stdout.lock().unwrap().join("\n");
    assert!(
        said.contains(&format!("+ {replayed} log records")),
        "only the records after the image are replayed: {said}"
    );

    // The next checkpoint deletes what both slots cover, the restored segments with it.
    assert_eq!(s.put_text("last", "one").status, 201);
    let want = state(&s);
    let third = s.snapshot_now();
    assert_ne!(third["file"], newer["file"]);
    let older = num(&newer, "log_index");
    await_log(dir.path(), "the next checkpoint", |d| {
        kept_back_to(d, older)
    });
    for name in &restored {
        assert!(
            !dir.path().join("log").join(name).exists(),
            "{} was not deleted",
            name.display()
        );
    }
    s.kill();
    let s = Server::start(dir.path(), &SMALL_SEGMENTS);
    assert_eq!(state(&s), want);
    s.kill();
}

#[test]
fn checkpoints_delete_segments_both_slots_cover_and_keep_the_rest() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &SMALL_SEGMENTS);
    assert_eq!(s.put_text("blob", &"x".repeat(2000)).status, 201);
    let mut images = Vec::new();
    let mut firsts = Vec::new();
    for (n, prefix) in ["w1", "w2", "w3"].into_iter().enumerate() {
        writes(&s, prefix, 10);
        images.push(s.snapshot_now());
        // The first checkpoint (no older slot) keeps what follows its own image; each later one
        // what follows the image before it.
        let older = num(&images[n.saturating_sub(1)], "log_index");
        await_log(dir.path(), prefix, |d| kept_back_to(d, older));
        firsts.push(spans(dir.path())[0].1);
    }
    writes(&s, "w4", 5);
    let want = state(&s);
    let indexes: Vec<u64> = images.iter().map(|i| num(i, "log_index")).collect();
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
    assert!(
        firsts[0] > 1,
        "the first checkpoint deleted nothing: {firsts:?}"
    );
    assert!(
        firsts[2] > indexes[0] + 1,
        "the third checkpoint kept what only the first image needed: {firsts:?} {indexes:?}"
    );
    s.kill();

    let s = Server::start(dir.path(), &SMALL_SEGMENTS);
    assert_eq!(state(&s), want);
    s.kill();
    // What is kept is enough for either slot: with the newest image hidden, the older one and
    // the log recover the same state.
    let (older, newest) = (&images[1], &images[2]);
    assert_ne!(older["file"], newest["file"]);
    change_image_byte(
        Path::new(newest["file"].as_str().unwrap()),
        num(newest, "bytes"),
    );
    let s = Server::start(dir.path(), &SMALL_SEGMENTS);
    assert_eq!(state(&s), want, "the older slot plus the kept log");
    assert_eq!(s.snapshot_status()["file"], older["file"]);
    s.kill();
}

#[test]
fn an_image_ahead_of_the_end_of_the_log_starts_and_keeps_starting() {
    // In `async` an image may be flushed before the log records it holds are: after a power loss
    // the log can end before the image's position (its last records lost or torn, its last
    // segment empty). The image holds everything; the log must go on from it.
    let dir = temp_dir();
    let s = Server::start(dir.path(), &SMALL_SEGMENTS);
    writes(&s, "w", 7);
    let image = s.snapshot_now();
    let index = num(&image, "log_index");
    await_log(dir.path(), "the checkpoint", |d| kept_back_to(d, index));
    let want = state(&s);
    s.kill();
    type Loss = fn(&Path);
    let losses: [(&str, Loss); 3] = [
        ("the last record lost", |seg| {
            let n = lines(seg).len();
            replace_line(seg, n - 1, None);
        }),
        ("the last record torn", |seg| {
            let (offset, line) = lines(seg).pop().unwrap();
            let f = fs::OpenOptions::new().write(true).open(seg).unwrap();
            f.set_len((offset + line.len() / 2) as u64).unwrap();
        }),
        ("the last segment empty", |seg| fs::write(seg, b"").unwrap()),
    ];
    for (what, lose) in losses {
        let copy = clone_dir(dir.path());
        lose(&segments(copy.path()).pop().unwrap());
        let (code, report) = inspect_json(copy.path());
        assert_eq!(code, 0, "{what}: {report}");
        assert_eq!(report["recovers_to_seq"], want.seq, "{what}: {report}");

        let s = Server::start(copy.path(), &SMALL_SEGMENTS);
        assert_eq!(state(&s), want, "{what}: not the image's state");
        let r = s.put_text("after", "the loss");
        assert_eq!(num(&r.json(), "version"), want.seq + 1, "{what}");
        let next = state(&s);
        s.kill();
        // The record after the image follows on from it, at the next start too.
        let (code, report) = inspect_json(copy.path());
        assert_eq!(code, 0, "{what}: {report}");
        assert_eq!(report["recovers_to_seq"], next.seq, "{what}: {report}");
        let s = Server::try_start(copy.path(), &SMALL_SEGMENTS)
            .unwrap_or_else(|(_, err)| panic!("{what}: the second start refused: {err}"));
        assert_eq!(state(&s), next, "{what}");
        writes(&s, "more", 6);
        let last = state(&s);
        assert_eq!(s.terminate().code(), Some(0));
        let s = Server::start(copy.path(), &SMALL_SEGMENTS);
        assert_eq!(state(&s), last, "{what}");
        s.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// What jq and inspect read

#[test]
fn every_log_line_is_a_json_object_and_inspect_dump_is_the_live_state() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &["--log-segment-bytes", "400"]);
    assert_eq!(s.put_text("early", "in the image").status, 201);
    s.snapshot_now();
    let obj = json!({
        "nested": {"list": [1, 2.5, -3e-7, null, true]},
        "unicode": "é ✓ 🦀",
        "escapes": "quote \" backslash \\ tab \t newline \n",
    });
    assert_eq!(s.put_json("obj", &obj).status, 201);
    let text = "line one\nline \"two\"\t🦀";
    assert_eq!(s.put_text("text", text).status, 201);
    assert_eq!(s.put_json("null", &Value::Null).status, 201);
    assert_eq!(s.put_json("num", &json!(0.1)).status, 201);
    let r = s.request("PUT", "/kv/once", &[("If-None-Match", "*")], Some(b"1"));
    assert_eq!(r.status, 201);
    let v = version(&s, "text");
    let r = s.request(
        "PUT",
        "/kv/text",
        &[("If-Match", &format!("\"{v}\""))],
        Some(text.as_bytes()),
    );
    assert_eq!(r.status, 200);
    let r = s.request(
        "POST",
        "/kv/form",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"value=a+b%26c"),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        s.put_text(&crate::util::encode("dir/ключ"), "slash").status,
        201
    );
    let r = s.batch(&json!({"put": {"b/1": 1, "b/2": {"x": []}}, "delete": ["null", "absent"]}));
    assert_eq!(r.status, 200);
    let v = version(&s, "num");
    let r = s.request(
        "DELETE",
        "/kv/num",
        &[("If-Match", &format!("\"{v}\""))],
        None,
    );
    assert_eq!(r.status, 204);
    for i in 0..8 {
        assert_eq!(
            s.put_json(&format!("more/{i}"), &json!({"i": i})).status,
            201
        );
    }
    let live = state(&s);

    // Every line of every segment, as jq reads it.
    let mut records = Vec::new();
    let mut next: Option<u64> = None;
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    for seg in &segs {
        let bytes = fs::read(seg).unwrap();
        assert!(
            bytes.ends_with(b"\n"),
            "{} does not end a line",
            seg.display()
        );
        for (n, (offset, line)) in lines(seg).into_iter().enumerate() {
            let place = format!("{} line {n} (byte {offset})", seg.display());
            let doc = record(&line);
            let fields: Vec<&str> = doc
                .as_object()
                .unwrap_or_else(|| panic!("{place}: not an object"))
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                fields,
                ["index", "seq", "now", "writes", "crc32c"],
                "{place}"
            );
            let index = num(&doc, "index");
            if n == 0 {
                assert_eq!(
                    Some(index),
                    first_index(seg),
                    "{place}: not the segment's name"
                );
            }
            if let Some(want) = next {
                assert_eq!(index, want, "{place}");
            }
            next = Some(index + 1);
            let writes = doc["writes"]
                .as_array()
                .unwrap_or_else(|| panic!("{place}"));
            assert!(!writes.is_empty(), "{place}");
            let crc = doc["crc32c"].as_str().unwrap_or_else(|| panic!("{place}"));
            assert!(
                crc.len() == 8 && crc.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{place}: {crc}"
            );
            let text = std::str::from_utf8(&line).unwrap();
            let body = &text[..text.rfind(",\"crc32c\"").unwrap()];
            assert_eq!(
                format!("{:08x}", crc32c::crc32c(body.as_bytes())),
                crc,
                "{place}: the checksum is not over the bytes before it"
            );
            records.push(doc);
        }
    }
    let seqs: Vec<u64> = records.iter().map(|r| num(r, "seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(seqs.last(), Some(&live.seq));
    // The writes as the client sent them, with their preconditions.
    let write_of = |key: &str| -> Vec<&Value> {
        records
            .iter()
            .flat_map(|r| r["writes"].as_array().unwrap())
            .filter(|w| w["put"] == key || w["delete"] == key)
            .collect()
    };
    assert_eq!(write_of("obj")[0]["value"], obj);
    let texts = write_of("text");
    assert_eq!(texts[0]["value"], text);
    assert_eq!(texts[1]["if_match"], json!([write_seq(&records, "text")]));
    assert_eq!(write_of("once")[0]["if_none_match"], "*");
    assert_eq!(write_of("form")[0]["value"], "a b&c");
    assert_eq!(write_of("dir/ключ")[0]["value"], "slash");
    assert_eq!(
        write_of("num")[1]["if_match"],
        json!([write_seq(&records, "num")])
    );
    let batch = records
        .iter()
        .flat_map(|r| r["writes"].as_array().unwrap())
        .find(|w| w.get("batch").is_some())
        .expect("the batch");
    assert_eq!(
        batch["batch"],
        json!({"put": {"b/1": 1, "b/2": {"x": []}}, "delete": ["null", "absent"]})
    );

    // inspect --dump beside the running server: the image plus the log after it.
    let (code, out, err) = inspect(&["--dump", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let dumped: Map<String, Value> = serde_json::from_str(&out).expect("the dump is JSON");
    let values: Map<String, Value> = live
        .entries
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    assert_eq!(dumped, values);
    let image = s.snapshot_status();
    assert_eq!(
        num(&image, "keys"),
        1,
        "the dump holds more than the image: {image}"
    );
    assert_eq!(state(&s), live, "inspect disturbed the server");
    // A start on a copy reads the image beside the log's replay (which waits for the image at
    // the conditional writes and the deletes): it loads what inspect read one step at a time,
    // with the same versions and seq.
    let copy = clone_dir(dir.path());
    let again = Server::start(copy.path(), &[]);
    assert_eq!(
        state(&again),
        live,
        "a start loads what the live server holds"
    );
    assert_eq!(again.terminate().code(), Some(0));
    assert_eq!(s.terminate().code(), Some(0));
}

/// The seq of the first record that puts `key`.
fn write_seq(records: &[Value], key: &str) -> u64 {
    records
        .iter()
        .find(|r| {
            r["writes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["put"] == key)
        })
        .map(|r| num(r, "seq"))
        .unwrap_or_else(|| panic!("no record puts {key}"))
}
