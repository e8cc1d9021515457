//! Recovery through a restart, and the snapshot files as a user sees them.
//!
//! Every test here starts the real binary on a temporary data dir, writes through HTTP, takes
//! snapshots (`POST /snapshot`, or the final one on SIGTERM), and then looks at the result three
//! ways: the slot files as they stand on disk (`serde_json` over the whole file, padding included),
//! `twinkv inspect`, and a fresh server started on the same dir. Damage to the slot files is made
//! by hand between runs: truncated, zeroed, emptied, or one byte flipped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::util::{agent, command, encode, inspect, num, temp_dir, Server};

/// The two slot file names the contract fixes.
const SLOTS: [&str; 2] = ["snapshot-a.json", "snapshot-b.json"];

/// The whole slot file, padding included, parsed as one JSON document (what `jq` does).
fn read_doc(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{} ({} bytes) is not one JSON document as it stands: {e}",
            path.display(),
            bytes.len()
        )
    })
}

/// Asserts `s` is an RFC 3339 time.
fn assert_rfc3339(s: &Value) {
    let text = s.as_str().unwrap_or_else(|| panic!("not a string: {s}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
}

/// `twinkv inspect --json PATH`: exit code and the parsed report.
fn inspect_json(path: &Path) -> (i32, Value) {
    let (code, out, err) = inspect(&["--json", path.to_str().expect("UTF-8 path")]);
    let report = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("inspect --json printed no JSON ({e}): {out:?}; stderr {err}"));
    (code, report)
}

/// `twinkv inspect --dump PATH`: exit code, and the map (`None` when stdout is not a JSON object).
fn inspect_dump(path: &Path) -> (i32, Option<Map<String, Value>>) {
    let (code, out, _) = inspect(&["--dump", path.to_str().expect("UTF-8 path")]);
    (code, serde_json::from_str(&out).ok())
}

/// The entry of `report["files"]` for the slot named `name`.
fn file_entry<'a>(report: &'a Value, name: &str) -> &'a Value {
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

/// Checks the contract's shape of an `inspect --json` report: every field, absolute paths.
fn assert_report_shape(report: &Value) {
    let files = report["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files array in {report}"));
    assert!(
        report.as_object().unwrap().contains_key("recovers_from"),
        "no recovers_from in {report}"
    );
    for f in files {
        for field in [
            "path", "valid", "error", "seq", "count", "bytes", "capacity",
        ] {
            assert!(
                f.as_object().is_some_and(|o| o.contains_key(field)),
                "{field} missing in {f}"
            );
        }
        let path = f["path"].as_str().expect("path is a string");
        assert!(Path::new(path).is_absolute(), "relative path {path}");
        assert!(f["valid"].is_boolean(), "{f}");
        if f["valid"] == true {
            assert!(f["error"].is_null(), "a valid file with an error: {f}");
            num(f, "seq");
            num(f, "count");
            assert!(num(f, "capacity") >= num(f, "bytes"), "{f}");
        } else {
            let why = f["error"].as_str().unwrap_or("");
            assert!(
                !why.trim().is_empty(),
                "an invalid file without a reason: {f}"
            );
        }
    }
    match &report["recovers_from"] {
        Value::Null => {}
        Value::String(p) => assert!(Path::new(p).is_absolute(), "relative {p}"),
        other => panic!("recovers_from is neither a path nor null: {other}"),
    }
}

/// The path in `report["recovers_from"]`, or `None`.
fn recovers_from(report: &Value) -> Option<PathBuf> {
    report["recovers_from"].as_str().map(PathBuf::from)
}

/// Asserts the file name of `path` (a JSON string or a path) is `name`.
fn assert_names(path: &Value, name: &str) {
    let p = path
        .as_str()
        .unwrap_or_else(|| panic!("not a path: {path}"));
    assert_eq!(
        Path::new(p).file_name().and_then(|n| n.to_str()),
        Some(name),
        "{p}"
    );
}

/// The slot file name in a `GET /snapshot` report, checked to be absolute and inside `dir`.
fn slot_of(report: &Value, dir: &Path) -> String {
    let file = report["file"]
        .as_str()
        .unwrap_or_else(|| panic!("no file in {report}"));
    let path = Path::new(file);
    assert!(path.is_absolute(), "file is not absolute: {file}");
    assert_eq!(
        fs::canonicalize(path.parent().expect("a parent")).unwrap(),
        fs::canonicalize(dir).unwrap(),
        "{file} is not in the data dir"
    );
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        SLOTS.contains(&name.as_str()),
        "unexpected slot name {name}"
    );
    name
}

/// Sanity of a `GET`/`POST /snapshot` report once a snapshot exists; returns its slot name.
fn assert_status_sane(st: &Value, dir: &Path) -> String {
    let name = slot_of(st, dir);
    assert!(num(st, "durable_seq") <= num(st, "seq"), "{st}");
    let bytes = num(st, "bytes");
    let capacity = num(st, "capacity");
    assert!(bytes > 0, "{st}");
    assert!(capacity >= bytes, "capacity below image length: {st}");
    num(st, "keys");
    assert!(
        st["last_duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{st}"
    );
    assert_rfc3339(&st["written_at"]);
    name
}

/// Checks a slot document against the figures of the report that named it.
fn assert_doc_matches(doc: &Value, st: &Value) {
    assert_eq!(doc["format"], "twinkv-snapshot/1");
    assert_eq!(num(doc, "seq"), num(st, "snapshot_seq"), "{st}");
    assert_eq!(num(doc, "count"), num(st, "keys"), "{st}");
    let data = doc["data"].as_object().expect("data is an object");
    assert_eq!(data.len() as u64, num(doc, "count"));
    assert_rfc3339(&doc["written_at"]);
    assert_eq!(doc["written_at"], st["written_at"]);
    let sum = doc["checksum"].as_str().unwrap_or("");
    assert!(!sum.is_empty(), "no checksum in the document");
}

/// A fresh server on `dir`, or a panic with its stderr.
fn start(dir: &Path, args: &[&str]) -> Server {
    Server::start(dir, args)
}

/// SIGTERM and a clean exit.
fn stop(s: Server) {
    let st = s.terminate();
    assert!(st.success(), "server did not exit cleanly: {st:?}");
}

/// PUT with a key that may need percent-encoding; asserts a 2xx and returns the version.
fn put(s: &Server, key: &str, value: &Value) -> u64 {
    let r = s.put_json(&encode(key), value);
    assert!(r.status == 200 || r.status == 201, "{key}: {}", r.text());
    num(&r.json(), "version")
}

#[test]
fn round_trip_through_a_restart_keeps_keys_values_versions_and_seq() {
    let dir = temp_dir();
    let s = start(dir.path(), &[]);

    // Text bodies (stored as strings), including one with a newline and non-ASCII.
    for (key, text) in [
        ("plain", "hello"),
        ("text/with newline", "héllo\nwörld ✓"),
        ("empty-ish", " "),
    ] {
        let r = s.put_text(&encode(key), text);
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // A key given with raw slashes in the path names the same key as its encoded form.
    let r = s.put_text("raw/slash/path", "via raw slashes");
    assert_eq!(r.status, 201, "{}", r.text());
    let values = [
        (
            "obj",
            json!({"nested": {"arr": [1, 2.5, -3, true, null], "s": "ü"}, "empty": {}}),
        ),
        ("arr", json!([1, "two", [3], {"four": 4}, []])),
        ("num/int", json!(42)),
        ("num/neg", json!(-7)),
        ("num/float", json!(3.25)),
        ("num/big", json!(1e300)),
        ("num/zero", json!(0)),
        ("null", Value::Null),
        ("bool", json!(false)),
        ("json string", json!("a \"quoted\" \\ string")),
        ("unicode ключ 🔑", json!("значение 🗝 \u{0001}")),
        ("dir/sub dir/leaf", json!({"k": "v"})),
        ("doomed-1", json!(1)),
        ("doomed-2", json!(2)),
        ("doomed-3", json!(3)),
    ];
    for (key, value) in &values {
        put(&s, key, value);
    }
    // Overwrite one, so its version is not its first write's.
    put(&s, "num/int", &json!(43));
    assert_eq!(s.delete(&encode("doomed-1")).status, 204);
    let r = s.batch(&json!({
        "put": {"batch/one": 1, "batch two": {"x": [1]}, "plain": "replaced in a batch"},
        "delete": ["doomed-2", "never-existed"],
    }));
    assert_eq!(r.status, 200, "{}", r.text());
    // The last write is a delete: the next seq must not be derived from the highest version.
    assert_eq!(s.delete(&encode("doomed-3")).status, 204);

    let before = s.entries();
    assert_eq!(before.len(), 18, "{before:?}");
    assert!(!before.contains_key("doomed-1") && !before.contains_key("doomed-3"));
    assert_eq!(before["raw/slash/path"].0, json!("via raw slashes"));
    assert_eq!(before["plain"].0, json!("replaced in a batch"));
    let max_version = before.values().map(|(_, v)| *v).max().unwrap();

    let snap = s.snapshot_now();
    let seq = num(&snap, "seq");
    assert_eq!(num(&snap, "snapshot_seq"), seq, "{snap}");
    assert!(seq > max_version, "seq {seq} vs max version {max_version}");
    assert_eq!(num(&snap, "keys"), before.len() as u64, "{snap}");
    let slot = assert_status_sane(&snap, dir.path());
    let slot_path = dir.path().join(&slot);
    assert_eq!(
        fs::metadata(&slot_path).unwrap().len(),
        num(&snap, "capacity"),
        "capacity is the file size"
    );
    let get_status = s.snapshot_status();
    assert_eq!(get_status["file"], snap["file"]);
    assert_eq!(num(&get_status, "snapshot_seq"), seq);
    assert_doc_matches(&read_doc(&slot_path), &snap);
    stop(s);

    let s = start(dir.path(), &[]);
    let after = s.entries();
    assert_eq!(
        after, before,
        "keys, values or versions differ after a restart"
    );
    // The ETag of each key is its version, as before the restart.
    for (key, (_, version)) in &before {
        let r = s.get(&format!("/kv/{}", encode(key)));
        assert_eq!(r.status, 200, "{key}");
        assert_eq!(
            r.header("ETag"),
            Some(format!("\"{version}\"").as_str()),
            "{key}"
        );
    }
    assert_eq!(s.get("/kv/raw/slash/path").text(), "via raw slashes");
    assert_eq!(
        s.get(&format!("/kv/{}", encode("text/with newline")))
            .text(),
        "héllo\nwörld ✓"
    );
    let st = s.snapshot_status();
    assert_eq!(num(&st, "seq"), seq, "seq after restart: {st}");
    assert_eq!(num(&st, "snapshot_seq"), seq, "{st}");
    assert_eq!(num(&st, "keys"), before.len() as u64, "{st}");
    assert_eq!(slot_of(&st, dir.path()), slot);
    assert_status_sane(&st, dir.path());

    // `inspect` beside the live server: the dump is what the API lists, the report is well formed.
    let (code, dumped) = inspect_dump(dir.path());
    assert_eq!(code, 0);
    assert_eq!(dumped.expect("dump is a JSON object"), s.all());
    let (code, report) = inspect_json(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_report_shape(&report);
    assert_names(&report["recovers_from"], &slot);
    assert_eq!(num(file_entry(&report, &slot), "seq"), seq);
    assert_eq!(
        num(file_entry(&report, &slot), "count"),
        before.len() as u64
    );

    // Seq continues: the next write is old seq + 1, also as its ETag.
    let r = s.put_text("after-restart", "x");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(num(&r.json(), "version"), seq + 1);
    assert_eq!(r.header("ETag"), Some(format!("\"{}\"", seq + 1).as_str()));
    stop(s);

    // The final snapshot holds that write, and recovery would load it.
    let (code, report) = inspect_json(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_report_shape(&report);
    let best = recovers_from(&report).expect("recovers_from");
    assert_eq!(
        num(
            file_entry(&report, best.file_name().unwrap().to_str().unwrap()),
            "seq"
        ),
        seq + 1
    );
    let (code, dumped) = inspect_dump(dir.path());
    assert_eq!(code, 0);
    let dumped = dumped.expect("dump is a JSON object");
    assert_eq!(dumped.len(), before.len() + 1);
    assert_eq!(dumped["after-restart"], json!("x"));
    for (key, (value, _)) in &before {
        assert_eq!(dumped.get(key), Some(value), "{key}");
    }
}

#[test]
fn inspect_reports_absolute_paths_when_given_a_relative_one() {
    let dir = temp_dir();
    let s = start(dir.path(), &[]);
    s.put_text("k", "v");
    s.snapshot_now();
    stop(s);
    let parent = dir.path().parent().expect("temp dir has a parent");
    let name = dir.path().file_name().expect("temp dir has a name");
    let out = command()
        .current_dir(parent)
        .args(["inspect", "--json"])
        .arg(name)
        .output()
        .expect("run inspect");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_report_shape(&report);
    assert_eq!(report["files"].as_array().unwrap().len(), 1, "{report}");
    let from = recovers_from(&report).expect("recovers_from");
    assert_eq!(
        fs::canonicalize(from.parent().unwrap()).unwrap(),
        fs::canonicalize(dir.path()).unwrap(),
        "{report}"
    );
    assert_eq!(report["files"][0]["path"], report["recovers_from"]);
}

#[test]
fn slot_file_is_valid_json_as_it_stands_and_snapshots_alternate_slots() {
    let dir = temp_dir();
    let s = start(dir.path(), &[]);
    s.put_text("k", "text value");
    put(&s, "obj", &json!({"a": [1, 2, {"b": null}]}));
    put(&s, "a/b c", &json!(12.5));
    let first = s.snapshot_now();
    let first_slot = assert_status_sane(&first, dir.path());
    let doc = read_doc(&dir.path().join(&first_slot));
    assert_doc_matches(&doc, &first);
    assert_eq!(doc["data"]["k"], json!("text value"));
    assert_eq!(doc["data"]["obj"], json!({"a": [1, 2, {"b": null}]}));
    assert_eq!(doc["data"]["a/b c"], json!(12.5));
    assert_eq!(num(&doc, "count"), 3);

    // A snapshot with nothing new writes nothing.
    let again = s.snapshot_now();
    assert_eq!(again["file"], first["file"], "{again}");
    assert_eq!(num(&again, "snapshot_seq"), num(&first, "snapshot_seq"));

    put(&s, "k2", &json!("second"));
    let second = s.snapshot_now();
    let second_slot = assert_status_sane(&second, dir.path());
    assert_ne!(
        first_slot, second_slot,
        "two snapshots in a row share a slot"
    );
    assert!(num(&second, "snapshot_seq") > num(&first, "snapshot_seq"));
    // Both files exist, each valid JSON as it stands, with different seqs.
    let doc1 = read_doc(&dir.path().join(&first_slot));
    let doc2 = read_doc(&dir.path().join(&second_slot));
    assert_eq!(num(&doc1, "seq"), num(&first, "snapshot_seq"));
    assert_doc_matches(&doc2, &second);
    assert_eq!(doc2["data"]["k2"], json!("second"));
    assert!(
        doc1["data"].get("k2").is_none(),
        "the older slot was changed"
    );

    // A third goes back to the first slot.
    put(&s, "k3", &json!(3));
    let third = s.snapshot_now();
    assert_eq!(assert_status_sane(&third, dir.path()), first_slot);
    assert_doc_matches(&read_doc(&dir.path().join(&first_slot)), &third);
    assert_eq!(
        num(&read_doc(&dir.path().join(&second_slot)), "seq"),
        num(&second, "snapshot_seq"),
        "the newer slot was changed by the next snapshot"
    );
    stop(s);
}

#[test]
fn a_growing_slot_parses_as_json_after_every_snapshot_and_survives_a_restart() {
    let dir = temp_dir();
    let s = start(dir.path(), &[]);
    let chunk = 40;
    let value_len = 12_000;
    let rounds = 8;
    let mut capacities: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for round in 0..rounds {
        let mut puts = Map::new();
        for i in 0..chunk {
            let c = (b'a' + ((round * chunk + i) % 26) as u8) as char;
            puts.insert(
                format!("big/{round:02}/{i:03}"),
                json!(c.to_string().repeat(value_len)),
            );
        }
        let r = s.batch(&json!({ "put": puts }));
        assert_eq!(r.status, 200, "{}", r.text());
        let st = s.snapshot_now();
        let slot = assert_status_sane(&st, dir.path());
        let path = dir.path().join(&slot);
        let size = fs::metadata(&path).unwrap().len();
        assert_eq!(
            size,
            num(&st, "capacity"),
            "capacity is the file size: {st}"
        );
        let keys = ((round + 1) * chunk) as u64;
        assert_eq!(num(&st, "keys"), keys);
        assert!(num(&st, "bytes") > keys * value_len as u64, "{st}");
        let doc = read_doc(&path);
        assert_doc_matches(&doc, &st);
        let sample = format!("big/{round:02}/000");
        assert_eq!(
            doc["data"][&sample].as_str().map(str::len),
            Some(value_len),
            "{sample}"
        );
        capacities.entry(slot).or_default().insert(size);
    }
    // Data of about 3.8 MB: the slots grew through several sizes, each image valid.
    let distinct: usize = capacities.values().map(BTreeSet::len).sum();
    assert!(distinct >= 4, "the slot files barely grew: {capacities:?}");
    let before = s.entries();
    stop(s);
    let s = start(dir.path(), &[]);
    assert_eq!(s.entries(), before, "a large image did not round-trip");
    stop(s);
}

#[test]
fn a_shorter_image_in_a_reused_slot_blanks_the_old_bytes() {
    let dir = temp_dir();
    let s = start(dir.path(), &[]);
    let mut puts = Map::new();
    for i in 0..200 {
        puts.insert(format!("key-{i:03}"), json!("z".repeat(8_000)));
    }
    assert_eq!(s.batch(&json!({ "put": puts })).status, 200);
    let big = s.snapshot_now();
    let big_slot = assert_status_sane(&big, dir.path());
    let big_bytes = num(&big, "bytes");
    assert!(big_bytes > 1_500_000, "{big}");

    let deletes: Vec<String> = (5..200).map(|i| format!("key-{i:03}")).collect();
    assert_eq!(s.batch(&json!({ "delete": deletes })).status, 200);
    let small = s.snapshot_now();
    assert_ne!(assert_status_sane(&small, dir.path()), big_slot);
    put(&s, "late", &json!({"after": "the deletes"}));
    let reused = s.snapshot_now();
    assert_eq!(
        assert_status_sane(&reused, dir.path()),
        big_slot,
        "the third snapshot should reuse the first slot"
    );
    assert!(num(&reused, "bytes") < big_bytes / 10, "{reused}");

    // The file still holds the big image's length, yet parses as one document: blanked.
    let path = dir.path().join(&big_slot);
    assert!(fs::metadata(&path).unwrap().len() >= big_bytes);
    let doc = read_doc(&path);
    assert_doc_matches(&doc, &reused);
    let keys: Vec<&String> = doc["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["key-000", "key-001", "key-002", "key-003", "key-004", "late"]
    );
    stop(s);
    let s = start(dir.path(), &[]);
    assert_eq!(s.all().len(), 6);
    stop(s);
}

/// Two snapshots with different contents in `dir`; the server is stopped afterwards.
struct TwoSlots {
    /// The older slot's name, its seq, and every key with value and version at that seq.
    older: String,
    older_seq: u64,
    older_state: BTreeMap<String, (Value, u64)>,
    /// The older image's length.
    older_bytes: u64,
    /// The newer slot's name and seq (highest per `inspect --json`), and the state at that seq
    /// (what the older slot plus the log after it recover to as well).
    newer: String,
    newer_seq: u64,
    newer_state: BTreeMap<String, (Value, u64)>,
    /// The newer image's length.
    newer_bytes: u64,
}

/// Writes two snapshots with different contents into `dir`, then stops the server.
fn two_slots(dir: &Path) -> TwoSlots {
    let s = start(dir, &[]);
    // A long run of one letter makes the middle of each document the inside of a string.
    put(&s, "blob", &json!("x".repeat(30_000)));
    put(&s, "shared", &json!("old"));
    put(&s, "only-old", &json!({"n": 1}));
    let first = s.snapshot_now();
    let older_state = s.entries();
    put(&s, "shared", &json!("new"));
    assert_eq!(s.delete("only-old").status, 204);
    put(&s, "only-new", &json!([2]));
    let second = s.snapshot_now();
    let newer_state = s.entries();
    assert_ne!(first["file"], second["file"]);
    stop(s);

    let (code, report) = inspect_json(dir);
    assert_eq!(code, 0, "{report}");
    assert_report_shape(&report);
    let mut files: Vec<(u64, String, u64)> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["valid"], true, "{f}");
            let name = Path::new(f["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            (num(f, "seq"), name, num(f, "bytes"))
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{report}");
    let (older_seq, older, older_bytes) = files[0].clone();
    let (newer_seq, newer, newer_bytes) = files[1].clone();
    assert_eq!(older_seq, num(&first, "snapshot_seq"));
    assert_eq!(newer_seq, num(&second, "snapshot_seq"));
    assert_names(&report["recovers_from"], &newer);
    TwoSlots {
        older,
        older_seq,
        older_state,
        older_bytes,
        newer,
        newer_seq,
        newer_state,
        newer_bytes,
    }
}

/// Ways to damage a slot file.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut to half the image's length.
    TruncateHalf,
    /// Every byte zero, same length.
    Zero,
    /// One byte in the middle of the image changed (inside a string, so still well-formed JSON).
    FlipMiddle,
    /// Cut to nothing: an empty file.
    Empty,
}

fn damage(path: &Path, image_len: u64, how: Damage) {
    let mut bytes = fs::read(path).unwrap();
    match how {
        Damage::TruncateHalf => bytes.truncate((image_len / 2) as usize),
        Damage::Zero => bytes.iter_mut().for_each(|b| *b = 0),
        Damage::Empty => bytes.clear(),
        Damage::FlipMiddle => {
            let mid = (image_len / 2) as usize;
            let at = (mid..bytes.len())
                .find(|&i| bytes[i] == b'x')
                .expect("an x after the middle");
            bytes[at] = b'y';
            // The damage is one the JSON parser cannot see: only a checksum can.
            serde_json::from_slice::<Value>(&bytes)
                .expect("the flipped file is still well-formed JSON");
        }
    }
    fs::write(path, &bytes).unwrap();
}

fn damaged_newest_slot_falls_back_to_the_older(how: Damage) {
    let dir = temp_dir();
    let two = two_slots(dir.path());
    let newer_path = dir.path().join(&two.newer);
    damage(&newer_path, two.newer_bytes, how);

    let (code, report) = inspect_json(dir.path());
    assert_eq!(code, 0, "{how:?}: {report}");
    assert_report_shape(&report);
    let bad = file_entry(&report, &two.newer);
    assert_eq!(bad["valid"], false, "{how:?}: {report}");
    let good = file_entry(&report, &two.older);
    assert_eq!(good["valid"], true, "{how:?}: {report}");
    assert_eq!(num(good, "seq"), two.older_seq);
    assert_names(&report["recovers_from"], &two.older);
    // Either file given alone: the damaged one is refused, the older one dumps its data.
    let (code, _) = inspect_dump(&newer_path);
    assert_eq!(code, 1, "{how:?}: inspect --dump of the damaged file alone");
    let (code, dumped) = inspect_dump(&dir.path().join(&two.older));
    assert_eq!(code, 0);
    let older_values: Map<String, Value> = two
        .older_state
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    assert_eq!(dumped, Some(older_values));
    let (code, human, _) = inspect(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{human}");
    assert!(
        human.contains(&two.newer) && human.contains(&two.older),
        "{human}"
    );

    assert_eq!(
        report["recovers_to_seq"], two.newer_seq,
        "{how:?}: {report}"
    );

    // The older slot plus the log after it (kept back to the older slot's position) give the
    // newest state: nothing answered is lost to a damaged newest slot.
    let s = start(dir.path(), &[]);
    assert_eq!(
        s.entries(),
        two.newer_state,
        "{how:?}: not the older slot's data plus the log"
    );
    let st = s.snapshot_status();
    assert_eq!(num(&st, "seq"), two.newer_seq, "{how:?}: {st}");
    assert_eq!(num(&st, "snapshot_seq"), two.older_seq, "{how:?}: {st}");
    assert_eq!(slot_of(&st, dir.path()), two.older, "{how:?}: {st}");
    let said = s.stdout.lock().unwrap().join("\n");
    assert!(said.contains(&two.older), "{how:?}: recovery line: {said}");

    // The next snapshot overwrites the damaged slot, never the only valid one.
    let v = put(&s, "after-damage", &json!(true));
    assert_eq!(v, two.newer_seq + 1, "{how:?}");
    let st = s.snapshot_now();
    assert_eq!(slot_of(&st, dir.path()), two.newer, "{how:?}: {st}");
    assert_eq!(
        num(&read_doc(&dir.path().join(&two.older)), "seq"),
        two.older_seq,
        "{how:?}: the valid older slot was overwritten"
    );
    s.kill();
    let (code, report) = inspect_json(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(file_entry(&report, &two.newer)["valid"], true, "{report}");
    assert_names(&report["recovers_from"], &two.newer);
    let s = start(dir.path(), &[]);
    assert_eq!(s.get("/kv/after-damage").json(), json!(true));
    assert_eq!(s.get("/kv/shared").text(), "new");
    stop(s);
}

#[test]
fn a_truncated_newest_slot_falls_back_to_the_older() {
    damaged_newest_slot_falls_back_to_the_older(Damage::TruncateHalf);
}

#[test]
fn a_zeroed_newest_slot_falls_back_to_the_older() {
    damaged_newest_slot_falls_back_to_the_older(Damage::Zero);
}

#[test]
fn a_newest_slot_with_one_flipped_byte_falls_back_to_the_older() {
    damaged_newest_slot_falls_back_to_the_older(Damage::FlipMiddle);
}

#[test]
fn an_emptied_newest_slot_falls_back_to_the_older() {
    damaged_newest_slot_falls_back_to_the_older(Damage::Empty);
}

#[test]
fn both_slots_damaged_refuses_to_start_and_inspect_exits_1() {
    let dir = temp_dir();
    let two = two_slots(dir.path());
    let older_path = dir.path().join(&two.older);
    let newer_path = dir.path().join(&two.newer);
    damage(&newer_path, two.newer_bytes, Damage::TruncateHalf);
    damage(&older_path, two.older_bytes, Damage::FlipMiddle);
    let files_before = (
        fs::read(&older_path).unwrap(),
        fs::read(&newer_path).unwrap(),
    );

    match Server::try_start(dir.path(), &[]) {
        Ok(s) => {
            let keys = s.all().len();
            s.kill();
            panic!("the server started (with {keys} keys) although no snapshot is valid");
        }
        Err((code, stderr)) => {
            let code = code.expect("the server exited on its own");
            assert!(!code.success(), "{code:?}");
            assert!(
                stderr.contains(&two.older) && stderr.contains(&two.newer),
                "stderr does not name both files: {stderr}"
            );
        }
    }
    let files_after = (
        fs::read(&older_path).unwrap(),
        fs::read(&newer_path).unwrap(),
    );
    assert!(
        files_before == files_after,
        "a refused start changed the slot files"
    );

    let (code, report) = inspect_json(dir.path());
    assert_eq!(code, 1, "{report}");
    assert_report_shape(&report);
    assert_eq!(file_entry(&report, &two.older)["valid"], false);
    assert_eq!(file_entry(&report, &two.newer)["valid"], false);
    assert!(report["recovers_from"].is_null(), "{report}");
    let (code, _) = inspect_dump(dir.path());
    assert_eq!(code, 1);
    let (code, out, _) = inspect(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn a_leftover_temporary_slot_is_never_loaded() {
    let dir = temp_dir();
    let two = two_slots(dir.path());
    // The newest image, valid and with the higher seq, but under the temporary name: it never
    // finished becoming a slot, so recovery must not see it. And garbage beside the other slot.
    assert!(two.newer_seq > two.older_seq);
    let newer_path = dir.path().join(&two.newer);
    let newer_tmp = dir.path().join(format!("{}.tmp", two.newer));
    fs::rename(&newer_path, &newer_tmp).unwrap();
    let older_tmp = dir.path().join(format!("{}.tmp", two.older));
    fs::write(
        &older_tmp,
        b"{\"format\":\"twinkv-snapshot/1\",\"seq\":99999, garbage",
    )
    .unwrap();

    let (code, report) = inspect_json(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_report_shape(&report);
    assert_eq!(report["files"].as_array().unwrap().len(), 1, "{report}");
    assert_names(&report["recovers_from"], &two.older);

    let s = start(dir.path(), &[]);
    // The older slot and the log after it: the newest state, though its image was hidden.
    assert_eq!(s.entries(), two.newer_state, "a temporary file was loaded");
    assert_eq!(num(&s.snapshot_status(), "snapshot_seq"), two.older_seq);
    assert_eq!(num(&s.snapshot_status(), "seq"), two.newer_seq);
    put(&s, "new", &json!(1));
    let st = s.snapshot_now();
    assert_eq!(slot_of(&st, dir.path()), two.newer);
    stop(s);
    assert!(!newer_tmp.exists(), "{} lingers", newer_tmp.display());
    let (code, report) = inspect_json(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_names(&report["recovers_from"], &two.newer);
    assert_eq!(
        num(file_entry(&report, &two.newer), "seq"),
        two.newer_seq + 1
    );
}

#[test]
fn inspect_on_an_empty_dir_exits_0_and_on_a_missing_path_exits_2() {
    let dir = temp_dir();
    let (code, report) = inspect_json(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_report_shape(&report);
    assert_eq!(report["files"], json!([]));
    assert!(report["recovers_from"].is_null());
    let (code, dumped) = inspect_dump(dir.path());
    assert_eq!(code, 0);
    assert_eq!(dumped, Some(Map::new()));
    let (code, out, _) = inspect(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    let missing = dir.path().join("no").join("such-dir");
    for args in [vec![], vec!["--json"], vec!["--dump"]] {
        let mut args: Vec<&str> = args;
        args.push(missing.to_str().unwrap());
        let (code, out, err) = inspect(&args);
        assert_eq!(code, 2, "{args:?}: {out} {err}");
    }
}

#[test]
fn sigterm_writes_a_final_snapshot_holding_every_answered_write() {
    let dir = temp_dir();
    let s = start(dir.path(), &["--checkpoint-log-bytes", "1000000000"]);
    for i in 0..150 {
        put(
            &s,
            &format!("k/{i:03}"),
            &json!({"i": i, "s": "v".repeat(i)}),
        );
    }
    for i in (0..150).step_by(7) {
        assert_eq!(s.delete(&format!("k/{i:03}")).status, 204);
    }
    let r = s.batch(&json!({"put": {"batched": [1, 2]}, "delete": ["k/001"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    s.put_text("last", "the very last write");
    let before = s.entries();
    let st = s.snapshot_status();
    let seq = num(&st, "seq");
    // With a ten-minute interval no snapshot has been taken: only the final one can hold these.
    // (A precondition of this test rather than a rule: it makes the final snapshot the only one.)
    assert_eq!(
        num(&st, "snapshot_seq"),
        0,
        "a snapshot was taken early: {st}"
    );
    assert!(st["file"].is_null(), "{st}");
    stop(s);

    let (code, report) = inspect_json(dir.path());
    assert_eq!(code, 0, "{report}");
    let best = recovers_from(&report).expect("a final snapshot exists");
    assert_eq!(
        num(
            file_entry(&report, best.file_name().unwrap().to_str().unwrap()),
            "seq"
        ),
        seq
    );
    let (code, dumped) = inspect_dump(dir.path());
    assert_eq!(code, 0);
    let expected: Map<String, Value> = before
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    assert_eq!(dumped, Some(expected));

    let s = start(dir.path(), &["--checkpoint-log-bytes", "1000000000"]);
    assert_eq!(s.entries(), before);
    assert_eq!(num(&s.snapshot_status(), "seq"), seq);
    stop(s);
}

#[test]
fn sigterm_during_concurrent_writes_keeps_every_answered_write() {
    const CLIENTS: usize = 4;
    const STOP_AFTER: u64 = 300;
    const MAX_PER_CLIENT: u64 = 20_000;
    let dir = temp_dir();
    let args = ["--checkpoint-log-bytes", "1000000000"];
    let s = start(dir.path(), &args);
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (base, answered) = (s.base.clone(), Arc::clone(&answered));
            thread::spawn(move || {
                let agent = agent();
                let mut acked = Vec::new();
                let mut unexpected = Vec::new();
                for i in 0..MAX_PER_CLIENT {
                    let key = format!("c{c}/{i:05}");
                    let url = format!("{base}/kv/{}", encode(&key));
                    match agent.put(&url).send_string(&i.to_string()) {
                        // 201 as the key is new; 200 only if the client resent it on a new
                        // connection after the first attempt was applied.
                        Ok(r) if r.status() == 201 || r.status() == 200 => {
                            acked.push(key);
                            answered.fetch_add(1, Ordering::AcqRel);
                        }
                        Ok(r) => {
                            unexpected.push(format!("{key}: {}", r.status()));
                            break;
                        }
                        // An error status while shutting down (such as 503) is no answer of
                        // success; a transport error means the server has gone.
                        Err(_) => break,
                    }
                }
                (acked, unexpected)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::Acquire) < STOP_AFTER
        && Instant::now() < deadline
        && !clients.iter().all(|h| h.is_finished())
    {
        thread::sleep(Duration::from_millis(1));
    }
    let at_signal = answered.load(Ordering::Acquire);
    let exit = s.terminate();
    let results: Vec<_> = clients
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    assert!(exit.success(), "exit after SIGTERM: {exit:?}");
    assert!(
        at_signal >= STOP_AFTER,
        "only {at_signal} writes answered before the bound ran out"
    );
    for (_, unexpected) in &results {
        assert!(unexpected.is_empty(), "{unexpected:?}");
    }

    let s = start(dir.path(), &args);
    let state = s.all();
    let mut total = 0;
    for (acked, _) in &results {
        for key in acked {
            let i: u64 = key.rsplit('/').next().unwrap().parse().unwrap();
            assert_eq!(
                state.get(key),
                Some(&json!(i.to_string())),
                "answered write {key} is not in the final snapshot"
            );
            total += 1;
        }
    }
    assert!(state.len() >= total);
    let st = s.snapshot_status();
    assert!(num(&st, "seq") >= state.len() as u64, "{st}");
    stop(s);
}

#[test]
fn an_emptied_store_keeps_its_seq_through_a_restart() {
    let dir = temp_dir();
    let s = start(dir.path(), &[]);
    s.put_text("a", "1");
    s.put_text("b", "2");
    let r = s.batch(&json!({"delete": ["a", "b"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    let seq = num(&r.json(), "seq");
    assert_eq!(seq, 3);
    let st = s.snapshot_now();
    assert_eq!(num(&st, "keys"), 0, "{st}");
    let doc = read_doc(&dir.path().join(slot_of(&st, dir.path())));
    assert_doc_matches(&doc, &st);
    assert_eq!(doc["data"], json!({}));
    stop(s);

    let s = start(dir.path(), &[]);
    assert!(s.all().is_empty());
    assert_eq!(num(&s.snapshot_status(), "seq"), seq);
    let r = s.put_text("c", "3");
    assert_eq!(
        num(&r.json(), "version"),
        seq + 1,
        "seq restarted after an empty image"
    );
    stop(s);
    let (code, dumped) = inspect_dump(dir.path());
    assert_eq!(code, 0);
    assert_eq!(dumped, Some(json!({"c": "3"}).as_object().unwrap().clone()));
}

#[test]
fn inspect_reads_a_live_servers_dir_without_disturbing_it() {
    let dir = temp_dir();
    let s = start(dir.path(), &[]);
    for i in 0..20 {
        put(&s, &format!("live/{i}"), &json!(i));
    }
    let first = s.snapshot_now();
    put(&s, "live/extra", &json!("x"));
    let second = s.snapshot_now();

    let (code, report) = inspect_json(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_report_shape(&report);
    assert_eq!(report["recovers_from"], second["file"], "{report}");
    assert_eq!(
        num(file_entry(&report, &slot_of(&first, dir.path())), "seq"),
        num(&first, "snapshot_seq")
    );
    let (code, dumped) = inspect_dump(dir.path());
    assert_eq!(code, 0);
    assert_eq!(dumped.expect("a JSON object"), s.all());
    // One file given directly works too.
    let (code, report) = inspect_json(&dir.path().join(slot_of(&first, dir.path())));
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["files"].as_array().unwrap().len(), 1, "{report}");

    // The server is unaffected: it still writes, snapshots and stops cleanly.
    put(&s, "live/after-inspect", &json!(1));
    let third = s.snapshot_now();
    assert!(num(&third, "snapshot_seq") > num(&second, "snapshot_seq"));
    assert_eq!(s.get("/health").json()["status"], "ok");
    stop(s);
    let (code, dumped) = inspect_dump(dir.path());
    assert_eq!(code, 0);
    assert_eq!(dumped.unwrap()["live/after-inspect"], json!(1));
}

/// The server's resident set now (`VmRSS`) or its peak so far (`VmHWM`), in KiB.
fn vm_kb(s: &Server, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
}

#[test]
fn a_45_mb_image_is_whole_after_a_kill_and_never_resident_at_once() {
    // 64 values of 700 KB: a 45 MB image, five of the slot writer's 8 MiB stretches (the pages
    // behind it leave the mapping while it writes). The file grows by doubling and each grow
    // maps it afresh, so without the release the pages of the mapping in hand pile up.
    let dir = temp_dir();
    let s = start(dir.path(), &[]);
    let value = |i: usize| format!("{i:03}{}", "x".repeat(700_000));
    for i in 0..64 {
        assert_eq!(s.put_text(&format!("big/{i:02}"), &value(i)).status, 201);
    }
    // From the resident set now: the peak so far may come from the requests' bodies.
    let before = vm_kb(&s, "VmRSS");
    let st = s.snapshot_now();
    let grew = vm_kb(&s, "VmHWM").saturating_sub(before);
    let slot = assert_status_sane(&st, dir.path());
    let doc = read_doc(&dir.path().join(&slot));
    assert_doc_matches(&doc, &st);
    for i in 0..64 {
        assert_eq!(
            doc["data"][format!("big/{i:02}")],
            json!(value(i)),
            "key {i}"
        );
    }
    // Measured on the debug build: 8 MB with the release, 22 MB without it.
    assert!(
        grew < 15 * 1024,
        "a snapshot raised the peak resident set by {grew} KiB"
    );
    s.kill();
    let again = start(dir.path(), &[]);
    for i in [0, 17, 63] {
        let r = again.get(&format!("/kv/big/{i:02}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), value(i), "key {i} after the kill");
    }
    assert_eq!(again.entries().len(), 64);
    let (code, _) = inspect_json(dir.path());
    assert_eq!(code, 0);
    stop(again);
}

/// The scheduling policy (`/proc/PID/task/TID/stat`, field 41; 5 is `SCHED_IDLE`) of each
/// of the server's threads whose name starts with `name`.
fn thread_policies(s: &Server, name: &str) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", s.pid())) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            let (head, rest) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1;
            // `rest` starts at field 3 (state): field 41 is its 39th.
            let policy = rest.split(' ').nth(38)?.parse().ok()?;
            comm.starts_with(name).then_some(policy)
        })
        .collect()
}

#[test]
fn a_checkpoint_is_encoded_at_idle_priority_beside_a_snapshot_thread_at_normal_priority() {
    let dir = temp_dir();
    let s = start(dir.path(), &[]);
    let value = |i: usize| format!("{i:03}{}", "x".repeat(700_000));
    for i in 0..64 {
        assert_eq!(s.put_text(&format!("big/{i:02}"), &value(i)).status, 201);
    }
    assert_eq!(thread_policies(&s, "twinkv-snapshot"), [0], "SCHED_OTHER");
    // The encoding thread lives only while an image is written (a 45 MB one here): watch for
    // it during a few checkpoints.
    let mut seen = Vec::new();
    for round in 0..5 {
        assert_eq!(
            s.put_text("round", &round.to_string()).status,
            200 + (round == 0) as u16
        );
        let url = s.url("/snapshot");
        let asked = thread::spawn(move || agent().post(&url).call().map_or(0, |r| r.status()));
        while !asked.is_finished() {
            seen.extend(thread_policies(&s, "twinkv-checkpoi"));
            thread::sleep(Duration::from_micros(200));
        }
        assert_eq!(asked.join().unwrap(), 200, "POST /snapshot");
        if !seen.is_empty() {
            break;
        }
    }
    assert!(
        !seen.is_empty(),
        "no checkpoint thread was seen in five checkpoints"
    );
    assert!(
        seen.iter().all(|&p| p == 5),
        "policies seen: {seen:?} (5 is SCHED_IDLE)"
    );
    // And the image it wrote is whole.
    stop(s);
    let (code, dumped) = inspect_dump(dir.path());
    assert_eq!(code, 0);
    assert_eq!(dumped.unwrap()["big/17"], json!(value(17)));
}
