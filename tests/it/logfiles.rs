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
//!   `inspect` exits 1 and names the same place;
//! - checkpoints keep the segments back to the older slot's position.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{inspect, num, temp_dir, Entries, Server};

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

/// A fresh copy of a data dir.
fn clone_dir(from: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let dest = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy(&path, &dest);
            } else {
                fs::copy(&path, &dest).unwrap();
            }
        }
    }
    let dir = temp_dir();
    copy(from, dir.path());
    dir
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
/// its human and its JSON report. Returns the message.
fn assert_refused(dir: &Path, args: &[&str], names: &[&str], case: &str) -> String {
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
    assert!(files(dir) == before, "{case}: inspect changed the data dir");
    err
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

/// A copy of `made`'s dir with `alter` applied to its segment list; asserts the server refuses
/// it, naming each of `names(segments)`.
fn assert_damage_refused(made: &Path, case: &str, alter: impl FnOnce(&[PathBuf]) -> Vec<String>) {
    let copy = clone_dir(made);
    let names = alter(&segments(copy.path()));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_refused(copy.path(), &[], &names, case);
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
fn a_changed_byte_in_an_earlier_record_is_refused_naming_file_and_offset() {
    let made = made_with_segments();
    // In the last segment, with a valid record after it: a value, the JSON, the checksum.
    for (what, n, pick) in [
        ("a value", 0usize, "value " as &str),
        ("the JSON", 1, "\"writes\""),
        ("a checksum digit", 2, "\"crc32c\":\""),
    ] {
        assert_damage_refused(made.path(), what, |segs| {
            let seg = segs.last().unwrap();
            let (_, line) = lines(seg)[n].clone();
            let text = std::str::from_utf8(&line).unwrap();
            let at = text.find(pick).unwrap() + pick.len();
            let to = if line[at] == b'0' { b'1' } else { b'0' };
            let offset = change_byte(seg, n, at, to);
            vec![shown(seg), format!("at byte {offset}")]
        });
    }
    // The last record of an earlier segment: later segments hold valid records.
    assert_damage_refused(made.path(), "the end of the first segment", |segs| {
        let seg = &segs[0];
        let n = lines(seg).len() - 1;
        let (_, line) = lines(seg)[n].clone();
        let offset = change_byte(seg, n, line.len() - 3, b'!');
        vec![shown(seg), format!("at byte {offset}")]
    });
    // A torn record in the middle of the log, followed by good ones: not a tail.
    assert_damage_refused(made.path(), "half a record in the middle", |segs| {
        let seg = &segs[1];
        let (offset, line) = lines(seg)[1].clone();
        replace_line(seg, 1, Some([&line[..line.len() / 2], b"\n"].concat()));
        vec![shown(seg), format!("at byte {offset}")]
    });
}

#[test]
fn a_missing_middle_segment_is_refused_naming_the_segment_after_the_gap() {
    let made = made_with_segments();
    assert_damage_refused(made.path(), "missing middle segment", |segs| {
        fs::remove_file(&segs[1]).unwrap();
        let expected = first_index(&segs[1]).unwrap();
        vec![shown(&segs[2]), format!("index {expected}")]
    });
}

#[test]
fn a_missing_or_repeated_index_is_refused_naming_file_and_offset() {
    let made = made_with_segments();
    assert_damage_refused(made.path(), "a line removed from a segment", |segs| {
        let seg = &segs[1];
        let (offset, _) = lines(seg)[1].clone();
        replace_line(seg, 1, None);
        vec![shown(seg), format!("at byte {offset}")]
    });
    assert_damage_refused(made.path(), "a line repeated", |segs| {
        let seg = &segs[2];
        let (_, line) = lines(seg)[1].clone();
        let (offset, _) = lines(seg)[2].clone();
        let mut bytes = fs::read(seg).unwrap();
        bytes.splice(offset..offset, line);
        fs::write(seg, bytes).unwrap();
        vec![shown(seg), format!("at byte {offset}")]
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
            vec![
                shown(seg),
                format!("at byte {offset}"),
                format!("index {}", index + 1),
            ]
        });
    }
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
    // The records right after the image are in the first segment kept, and later ones follow.
    let (first, starts, _) = spans[0].clone();
    assert!(
        starts <= image_index + 1,
        "{spans:?} vs image {image_index}"
    );
    assert!(spans.len() >= 3, "{spans:?}");
    let slot = PathBuf::from(image["file"].as_str().unwrap());

    // Without that segment the log starts past the image's position: the first record left
    // is named, with what it follows.
    let copy = clone_dir(dir.path());
    fs::remove_file(copy.path().join("log").join(first.file_name().unwrap())).unwrap();
    let (second, starts, _) = spans[1].clone();
    assert_refused(
        copy.path(),
        &[],
        &[
            &shown(&copy.path().join("log").join(second.file_name().unwrap())),
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
    fs::write(
        copy.path().join("log").join(format!("{named:020}.jsonl")),
        b"",
    )
    .unwrap();
    assert_refused(
        copy.path(),
        &[],
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
            vec![
                shown(&segs[1]),
                "at byte 0".into(),
                format!("record {} follows record 0", first_index(&segs[1]).unwrap()),
            ]
        },
    );
}
