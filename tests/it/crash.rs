//! Crashes: SIGKILL the server in the middle of a stream of writes, restart it on the same data
//! dir, and check what recovery loads against what the clients were told.
//!
//! - `sync`: every answered write survives (its value, or a later one from the same client).
//! - `async`: what survives is the exact state at one seq (a prefix of the writes sent), at least
//!   as new as the last `durable_seq` the server reported before the kill.
//! - `sync` writes from concurrent clients share flushes (group commit).
//! - A crash at each step of a checkpoint (the image written, the image flushed, the covered log
//!   segments deleted), made by the debug binary's `TWINKV_TEST_FAULT=checkpoint-crash-*`,
//!   loses no answered write, in either durability mode, in a fresh dir and in one whose slots
//!   both hold images already.
//!
//! Client threads carry their own HTTP agent and the server's base URL, so the test thread owns the
//! `Server` and can kill it while they write. After a kill, transport errors (refused, reset) are
//! expected; a thread stops at its first one. Every loop is bounded by a count and by `OVERALL`.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::util::{agent, clone_dir, command, encode, inspect, num, temp_dir, Entries, Server};

/// The longest any one phase of a test waits before giving up (a bound, not a measurement).
const OVERALL: Duration = Duration::from_secs(30);

/// Sends `body` as JSON. `Ok` with the status and JSON body once a full answer arrived; `Err` on
/// any transport failure (the write may or may not have been applied then).
fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: &Value,
) -> Result<(u16, Value), String> {
    let result = agent
        .request(method, url)
        .set("Content-Type", "application/json")
        .send_string(&body.to_string());
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let text = resp.into_string().map_err(|e| e.to_string())?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, json))
}

/// One Prometheus sample without labels from `/metrics`.
fn metric(s: &Server, name: &str) -> u64 {
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    let text = r.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not an integer: {e}"))
}

/// A large value written first, so each snapshot takes long enough that kills land mid-write.
const FILLER_KEY: &str = "filler";
/// Its length in bytes.
const FILLER_LEN: usize = 600_000;

/// Keys each `sync` client writes in turn.
const KEYS_PER_CLIENT: u64 = 5;

/// What one `sync` client sent and was told, over every round.
#[derive(Debug, Default)]
struct ClientLog {
    /// The next value to send; values only grow, and value `n` goes to key `n % KEYS_PER_CLIENT`.
    next: u64,
    /// Per key, the last value whose write was answered 2xx (or that recovery showed durable).
    floor: BTreeMap<String, u64>,
    /// Per key, the last value sent at all.
    sent: BTreeMap<String, u64>,
    /// Writes answered in the last round.
    answered: u64,
    /// Answers that were neither 200 nor 201: never expected before the kill.
    unexpected: Vec<String>,
}

fn client_key(client: usize, n: u64) -> String {
    format!("c{client}/k{}", n % KEYS_PER_CLIENT)
}

/// Writes until told to stop, the first transport error, or `max` writes.
fn sync_client(
    client: usize,
    mut log: ClientLog,
    base: String,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    max: u64,
) -> ClientLog {
    let agent = agent();
    log.answered = 0;
    for _ in 0..max {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let n = log.next;
        log.next += 1;
        let key = client_key(client, n);
        log.sent.insert(key.clone(), n);
        let url = format!("{base}/kv/{}", encode(&key));
        match send(&agent, "PUT", &url, &json!(n)) {
            Ok((200 | 201, body)) if body["version"].as_u64().is_some() => {
                log.floor.insert(key, n);
                log.answered += 1;
                answered.fetch_add(1, Ordering::AcqRel);
            }
            Ok((status, body)) => {
                log.unexpected
                    .push(format!("PUT {key} = {n}: {status} {body}"));
                break;
            }
            Err(_) => break,
        }
    }
    log
}

#[test]
fn sync_loses_no_answered_write_across_kills() {
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 3;
    const KILL_AFTER: u64 = 200;
    const MAX_PER_CLIENT: u64 = 5_000;
    let dir = temp_dir();
    let mut logs: Vec<ClientLog> = (0..CLIENTS).map(|_| ClientLog::default()).collect();

    for round in 0..ROUNDS {
        let s = Server::start(dir.path(), &["--durability", "sync"]);
        if round == 0 {
            assert_eq!(s.put_text(FILLER_KEY, &"f".repeat(FILLER_LEN)).status, 201);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = std::mem::take(&mut logs)
            .into_iter()
            .enumerate()
            .map(|(c, log)| {
                let (base, stop, answered) =
                    (s.base.clone(), Arc::clone(&stop), Arc::clone(&answered));
                thread::spawn(move || sync_client(c, log, base, stop, answered, MAX_PER_CLIENT))
            })
            .collect();
        // Kill once enough writes were answered, while the clients are still writing.
        let deadline = Instant::now() + OVERALL;
        while answered.load(Ordering::Acquire) < KILL_AFTER
            && Instant::now() < deadline
            && !handles.iter().all(|h| h.is_finished())
        {
            thread::sleep(Duration::from_millis(1));
        }
        let at_kill = answered.load(Ordering::Acquire);
        s.kill();
        stop.store(true, Ordering::Release);
        logs = handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect();
        for (c, log) in logs.iter().enumerate() {
            assert!(
                log.unexpected.is_empty(),
                "round {round}, client {c}: {:?}",
                log.unexpected
            );
        }
        assert!(
            at_kill >= KILL_AFTER,
            "round {round}: only {at_kill} writes answered before the bound ran out"
        );

        let s = Server::start(dir.path(), &["--durability", "sync"]);
        let state = s.all();
        for (c, log) in logs.iter_mut().enumerate() {
            for (key, &sent) in &log.sent {
                let floor = log.floor.get(key).copied();
                let got = match state.get(key) {
                    Some(v) => v.as_u64().unwrap_or_else(|| panic!("{key} = {v}")),
                    None => {
                        assert!(
                            floor.is_none(),
                            "round {round}: answered write {key} = {floor:?} is lost"
                        );
                        continue;
                    }
                };
                if let Some(floor) = floor {
                    assert!(
                        got >= floor,
                        "round {round}, client {c}: {key} recovered as {got}, \
                         but {floor} was answered (a lost write)"
                    );
                }
                assert!(
                    got <= sent && client_key(c, got) == *key,
                    "round {round}: {key} recovered as {got}, never sent (last sent {sent})"
                );
                // What recovery loaded is on disk: no later crash may lose it.
                log.floor.insert(key.clone(), got);
            }
        }
        assert_eq!(
            state.get(FILLER_KEY).and_then(Value::as_str).map(str::len),
            Some(FILLER_LEN),
            "round {round}: the filler"
        );
        for key in state.keys().filter(|k| *k != FILLER_KEY) {
            assert!(
                logs.iter().any(|l| l.sent.contains_key(key)),
                "round {round}: {key} was never written"
            );
        }
        let st = s.snapshot_status();
        assert_eq!(num(&st, "seq"), num(&st, "durable_seq"), "{st}");
        s.kill();
    }
}

/// What the `async` writer sent and was told in one round.
#[derive(Debug)]
struct CounterLog {
    /// The last `n` whose batch was answered 200 (0 if none).
    last_answered: u64,
    /// The last `n` sent at all (perhaps applied without an answer).
    last_sent: u64,
    /// Answers that were not `200 {"seq": n}`.
    unexpected: Vec<String>,
}

/// Sends batches `n = first, first + 1, …` (up to `max` of them) until the first transport error.
fn counter_writer(
    first: u64,
    max: u64,
    base: String,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> CounterLog {
    let agent = agent();
    let url = format!("{base}/kv");
    let mut log = CounterLog {
        last_answered: 0,
        last_sent: 0,
        unexpected: Vec::new(),
    };
    for n in first..first + max {
        if stop.load(Ordering::Acquire) {
            break;
        }
        log.last_sent = n;
        let body = json!({"put": {"a": n, "b": n, format!("h/{n:06}"): n}});
        match send(&agent, "POST", &url, &body) {
            Ok((200, reply)) if reply["seq"].as_u64() == Some(n) => {
                log.last_answered = n;
                answered.fetch_add(1, Ordering::AcqRel);
            }
            Ok((status, reply)) => {
                // Each batch is one write, so its seq is `n` as long as recovery kept the seq.
                log.unexpected.push(format!("batch {n}: {status} {reply}"));
                break;
            }
            Err(_) => break,
        }
    }
    log
}

#[test]
fn async_recovers_the_exact_state_at_one_seq_after_kills() {
    const ROUNDS: usize = 3;
    const KILL_AFTER: [u64; ROUNDS] = [150, 400, 250];
    const MAX_BATCHES: u64 = 20_000;
    let args = ["--durability", "async", "--fsync-interval-ms", "5"];
    let dir = temp_dir();
    // The filler takes seq 1, so batch `n` is seq `n` from `FIRST` on.
    const FIRST: u64 = 2;
    // The state recovered so far: the filler, `a == b == m` and `h/FIRST..=m` (`m = FIRST - 1`:
    // the filler alone).
    let mut m = FIRST - 1;

    for (round, kill_after) in KILL_AFTER.into_iter().enumerate() {
        let s = Server::start(dir.path(), &args);
        if round == 0 {
            assert_eq!(s.put_text(FILLER_KEY, &"f".repeat(FILLER_LEN)).status, 201);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let writer = {
            let (base, stop, answered) = (s.base.clone(), Arc::clone(&stop), Arc::clone(&answered));
            thread::spawn(move || counter_writer(m + 1, MAX_BATCHES, base, stop, answered))
        };
        // Poll the durable seq now and then, and kill once enough writes were answered and at
        // least one snapshot of this round was reported durable.
        let deadline = Instant::now() + OVERALL;
        let mut durable_reported = m;
        let mut polls = 0u64;
        loop {
            let st = s.snapshot_status();
            polls += 1;
            durable_reported = durable_reported.max(num(&st, "durable_seq"));
            let enough = answered.load(Ordering::Acquire) >= kill_after && durable_reported > m;
            if enough || Instant::now() > deadline || writer.is_finished() {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        s.kill();
        stop.store(true, Ordering::Release);
        let log = writer.join().expect("writer thread");
        assert!(
            log.unexpected.is_empty(),
            "round {round}: {:?}",
            log.unexpected
        );
        assert!(
            answered.load(Ordering::Acquire) >= kill_after && durable_reported > m,
            "round {round}: the bound ran out before the kill point \
             ({} answered, durable {durable_reported}, {polls} polls)",
            answered.load(Ordering::Acquire)
        );

        let s = Server::start(dir.path(), &args);
        let state = s.all();
        let a = state.get("a").and_then(Value::as_u64);
        let b = state.get("b").and_then(Value::as_u64);
        assert_eq!(a, b, "round {round}: a and b differ: a mix of two seqs");
        let got = a.unwrap_or(FIRST - 1);
        assert!(
            got >= durable_reported,
            "round {round}: recovered n = {got}, but durable_seq {durable_reported} was \
             reported before the kill"
        );
        assert!(
            got <= log.last_sent,
            "round {round}: recovered n = {got}, beyond the last batch sent ({})",
            log.last_sent
        );
        // Exactly the prefix up to `got`: the filler, every history key, and nothing after it.
        assert_eq!(
            state.get(FILLER_KEY).and_then(Value::as_str).map(str::len),
            Some(FILLER_LEN),
            "round {round}: the filler"
        );
        let history = state.len() - 1 - usize::from(a.is_some()) - usize::from(b.is_some());
        assert_eq!(
            history as u64,
            got + 1 - FIRST,
            "round {round}: {history} history keys for a = {got}"
        );
        for n in FIRST..=got {
            let key = format!("h/{n:06}");
            assert_eq!(
                state.get(&key).and_then(Value::as_u64),
                Some(n),
                "round {round}: {key} in a state at n = {got}"
            );
        }
        let st = s.snapshot_status();
        assert_eq!(num(&st, "seq"), got, "round {round}: recovered seq: {st}");
        assert!(
            num(&st, "seq") >= durable_reported,
            "round {round}: recovered seq below a reported durable seq: {st}"
        );
        assert!(
            got >= m,
            "round {round}: recovered {got}, older than the last round's {m}"
        );
        m = got;
        s.kill();
    }
}

#[test]
fn sync_writers_share_flushes() {
    const CLIENTS: usize = 8;
    const WRITES: usize = 50;
    let dir = temp_dir();
    let s = Server::start(dir.path(), &["--durability", "sync"]);
    let before = metric(&s, "twinkv_log_fsyncs_total");
    let start = Barrier::new(CLIENTS);
    let failures: Vec<String> = thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (s, start) = (&s, &start);
                scope.spawn(move || {
                    start.wait();
                    let mut failures = Vec::new();
                    for i in 0..WRITES {
                        let r = s.put_text(&format!("g{c}%2F{i}"), "v");
                        if r.status != 201 {
                            failures.push(format!("g{c}/{i}: {} {}", r.status, r.text()));
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    });
    assert!(failures.is_empty(), "{failures:?}");
    let writes = (CLIENTS * WRITES) as u64;
    assert_eq!(metric(&s, "twinkv_seq"), writes);
    assert_eq!(
        metric(&s, "twinkv_durable_seq"),
        writes,
        "sync writes were answered before they were durable"
    );
    let snapshots = metric(&s, "twinkv_log_fsyncs_total") - before;
    assert!(snapshots >= 1);
    assert!(
        snapshots < writes,
        "{writes} concurrent sync writes took {snapshots} snapshots: no flush was shared"
    );
    s.kill();
}

// ---------------------------------------------------------------------------------------------
// A crash at each step of a checkpoint

/// Log segments roll once they hold this many bytes: here, after every record. So a round of
/// writes spans several segments, and the segment holding the record an image ends at holds
/// nothing after it, so the next checkpoint but one deletes it (with segments shared by
/// several records, whether it does depends on the records' lengths).
const SMALL_SEGMENTS: &str = "1";

/// The length of a value written before both slots are filled and deleted before the crash:
/// the image written over the slot that held it is then shorter, so without its blank step
/// the slot still holds old bytes after the new document.
const BIG_LEN: usize = 2_000;

/// Where the process aborts in its second checkpoint: the `checkpoint-crash-*` test faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Every byte of the image is in the slot; nothing blanked after it, nothing flushed.
    Written,
    /// The image is flushed; its seq not yet published, no log segment deleted.
    Flushed,
    /// The log segments both slots cover are deleted.
    Compacted,
}

impl Step {
    /// The `TWINKV_TEST_FAULT` value for this step.
    fn fault(self) -> &'static str {
        match self {
            Step::Written => "checkpoint-crash-written",
            Step::Flushed => "checkpoint-crash-flushed",
            Step::Compacted => "checkpoint-crash-compacted",
        }
    }
}

/// What the clients were told: every key's value and version, and the seq of the last answer.
#[derive(Debug, Default)]
struct Told {
    /// Every key whose last answered write put it, with that value and version.
    entries: Entries,
    /// The seq of the last write answered.
    seq: u64,
}

impl Told {
    /// `PUT /kv/{key}` with a text body, which must be answered.
    fn put(&mut self, s: &Server, key: &str, text: &str) {
        let r = s.put_text(key, text);
        assert!(
            matches!(r.status, 200 | 201),
            "PUT {key}: {} {}",
            r.status,
            r.text()
        );
        let version = num(&r.json(), "version");
        self.answered(version, &format!("PUT {key}"));
        self.entries.insert(key.to_string(), (json!(text), version));
    }

    /// `DELETE /kv/{key}` of a key that exists, which must be answered.
    fn delete(&mut self, s: &Server, key: &str) {
        let r = s.delete(key);
        assert_eq!(r.status, 204, "DELETE {key}: {}", r.text());
        let seq = r
            .header("twinkv-seq")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("DELETE {key}: no Twinkv-Seq in {:?}", r.headers));
        self.answered(seq, &format!("DELETE {key}"));
        assert!(self.entries.remove(key).is_some(), "{key} was never put");
    }

    /// `POST /kv` putting `put` and deleting `delete` at one seq, which must be answered.
    fn batch(&mut self, s: &Server, put: &[(String, Value)], delete: &[String]) {
        let puts: Map<String, Value> = put.iter().cloned().collect();
        let r = s.batch(&json!({ "put": puts, "delete": delete }));
        assert_eq!(r.status, 200, "batch: {}", r.text());
        let seq = num(&r.json(), "seq");
        self.answered(seq, "batch");
        for (key, value) in put {
            self.entries.insert(key.clone(), (value.clone(), seq));
        }
        for key in delete {
            self.entries.remove(key);
        }
    }

    /// Records the seq of an answer, which must follow the last one.
    fn answered(&mut self, seq: u64, what: &str) {
        assert_eq!(seq, self.seq + 1, "{what}: seq {seq} after {}", self.seq);
        self.seq = seq;
    }

    /// Asserts the server holds exactly what was told (no key more or less, each value and
    /// version as answered), at exactly the seq of the last answer.
    fn check(&self, s: &Server, when: &str) {
        assert_eq!(
            s.entries(),
            self.entries,
            "{when}: keys, values and versions"
        );
        let st = s.snapshot_status();
        assert_eq!(num(&st, "seq"), self.seq, "{when}: the seq: {st}");
    }
}

/// A few writes of every kind, each answered: puts (one replacing a value), a delete, and a
/// batch that puts and deletes. Keys start with `round`.
fn write_round(told: &mut Told, s: &Server, round: &str) {
    let key = |k: &str| format!("{round}-{k}");
    told.put(s, &key("a"), "1");
    told.put(s, &key("b"), "2");
    told.put(s, &key("a"), "3");
    told.delete(s, &key("b"));
    told.batch(
        s,
        &[
            (key("c"), json!({ "n": 4 })),
            (key("d"), json!([5, "five"])),
        ],
        &[key("a")],
    );
    told.put(s, &key("e"), &format!("{round}, last"));
}

/// How many log segments the data dir holds.
fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("log"))
        .expect("read the log dir")
        .filter(|e| {
            let name = e.as_ref().expect("a log dir entry").file_name();
            name.to_str().is_some_and(|n| n.ends_with(".jsonl"))
        })
        .count()
}

/// Starts a server on `dir` with `TWINKV_TEST_FAULT=fault` and no core dumps.
fn start_with_fault(dir: &Path, args: &[&str], fault: &str) -> Server {
    let mut cmd = command();
    cmd.env("TWINKV_TEST_FAULT", fault);
    // SAFETY: between fork and exec only setrlimit is called, a raw system call through rustix
    // that allocates nothing. The abort is expected: a core dump of it would only fill the disk.
    unsafe {
        cmd.pre_exec(|| {
            let none = rustix::process::Rlimit {
                current: Some(0),
                maximum: Some(0),
            };
            rustix::process::setrlimit(rustix::process::Resource::Core, none)?;
            Ok(())
        });
    }
    Server::start_with(cmd, dir, args)
        .unwrap_or_else(|(status, err)| panic!("server failed to start ({status:?}): {err}"))
}

/// The entry of an `inspect --json` report for the slot file `name`, if it lists one.
fn slot_entry<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files array in {report}"))
        .iter()
        .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with(name)))
}

/// Writes, checkpoints, writes more, and crashes the server at `step` of its second checkpoint;
/// then checks that `inspect` and a restart find every answered write, and that the server
/// goes on from there. `older_slots`: both slots already hold images from an earlier run, so
/// the crashed checkpoint overwrites a slot in place (in a fresh dir it writes a new file).
fn crash_in_a_checkpoint(step: Step, durability: &str, older_slots: bool) {
    let ctx = format!(
        "{} ({durability}, {})",
        step.fault(),
        if older_slots {
            "slots written before"
        } else {
            "fresh dir"
        }
    );
    let args = [
        "--durability",
        durability,
        "--log-segment-bytes",
        SMALL_SEGMENTS,
    ];
    let dir = temp_dir();
    let mut told = Told::default();
    if older_slots {
        let s = Server::start(dir.path(), &args);
        write_round(&mut told, &s, "r0");
        s.snapshot_now();
        told.put(&s, "big", &"b".repeat(BIG_LEN));
        s.snapshot_now();
        let status = s.terminate();
        assert!(status.success(), "{ctx}: the earlier run: {status:?}");
    }

    let s = start_with_fault(dir.path(), &args, step.fault());
    write_round(&mut told, &s, "r1");
    // The first checkpoint of the process: the fault lets it through.
    let first = s.snapshot_now();
    assert_eq!(num(&first, "snapshot_seq"), told.seq, "{ctx}: {first}");
    write_round(&mut told, &s, "r2");
    if older_slots {
        told.delete(&s, "big");
    }
    let before = segments(dir.path());
    assert!(before >= 3, "{ctx}: only {before} log segments");
    let stderr = Arc::clone(&s.stderr);
    match s.try_request("POST", "/snapshot", &[], None) {
        Err(_) => {}
        // The image's seq is published before the segments go: the answer may beat the abort.
        Ok(r) if step == Step::Compacted && r.status == 200 => {}
        Ok(r) => panic!(
            "{ctx}: the second POST /snapshot was answered {} {} instead of crashing",
            r.status,
            r.text()
        ),
    }
    let status = s.wait_within(OVERALL);
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{ctx}: the server did not abort: {status:?}"
    );
    // The reader thread collects the last words once the pipe closes.
    let said = format!("point={step:?}");
    let deadline = Instant::now() + OVERALL;
    while !stderr.lock().unwrap().contains(&said) {
        assert!(
            Instant::now() < deadline,
            "{ctx}: stderr does not name the fault: {}",
            stderr.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(10));
    }
    let after = segments(dir.path());
    if step == Step::Compacted {
        assert!(
            after < before,
            "{ctx}: no segment deleted ({before} before)"
        );
    } else {
        assert_eq!(after, before, "{ctx}: segments deleted before the crash");
    }

    // What recovery would load, before a restart repairs anything.
    let path = dir.path().to_str().expect("UTF-8 path");
    let (code, out, err) = inspect(&["--json", path]);
    assert_eq!(code, 0, "{ctx}: inspect: {out}\n{err}");
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{ctx}: inspect --json printed no JSON ({e}): {out}"));
    assert_eq!(num(&report, "recovers_to_seq"), told.seq, "{ctx}: {report}");
    // Once flushed, the new image is the one recovery takes; before, the older slot is (the new
    // one is a temporary file, or holds the old image's tail after its own).
    let (newer, older) = ("snapshot-b.json", "snapshot-a.json");
    let from = report["recovers_from"].as_str().unwrap_or_default();
    if step == Step::Written {
        assert!(from.ends_with(older), "{ctx}: {report}");
        if older_slots {
            let b = slot_entry(&report, newer).expect("the overwritten slot is listed");
            assert_eq!(b["valid"], json!(false), "{ctx}: {report}");
        }
    } else {
        assert!(from.ends_with(newer), "{ctx}: {report}");
        let b = slot_entry(&report, newer).expect("the new slot is listed");
        assert_eq!(num(b, "seq"), told.seq, "{ctx}: {report}");
        // The log is kept back to the older image, so it recovers the same state: damage the
        // new image in a copy of the dir, and the older one must take its place.
        let copy = clone_dir(dir.path());
        std::fs::OpenOptions::new()
            .write(true)
            .open(copy.path().join(newer))
            .and_then(|f| f.write_all_at(b"#", 0))
            .expect("damage the new image");
        let path = copy.path().to_str().expect("UTF-8 path");
        let (code, out, err) = inspect(&["--json", path]);
        assert_eq!(code, 0, "{ctx}, new image damaged: inspect: {out}\n{err}");
        let report: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{ctx}: inspect --json printed no JSON ({e}): {out}"));
        let from = report["recovers_from"].as_str().unwrap_or_default();
        assert!(from.ends_with(older), "{ctx}, new image damaged: {report}");
        assert_eq!(
            num(&report, "recovers_to_seq"),
            told.seq,
            "{ctx}, new image damaged: {report}"
        );
    }

    let s = Server::start(dir.path(), &args);
    told.check(&s, &format!("{ctx}: after the crash"));
    told.put(&s, "after", "the crash");
    let status = s.terminate();
    assert!(status.success(), "{ctx}: {status:?}");
    let s = Server::start(dir.path(), &args);
    told.check(&s, &format!("{ctx}: after a clean restart"));
    s.kill();
}

/// Both starting points, for one step and one durability mode.
fn crash_in_a_checkpoint_both_ways(step: Step, durability: &str) {
    crash_in_a_checkpoint(step, durability, false);
    crash_in_a_checkpoint(step, durability, true);
}

#[test]
fn a_crash_once_the_image_is_written_loses_no_answered_write_async() {
    crash_in_a_checkpoint_both_ways(Step::Written, "async");
}

#[test]
fn a_crash_once_the_image_is_written_loses_no_answered_write_sync() {
    crash_in_a_checkpoint_both_ways(Step::Written, "sync");
}

#[test]
fn a_crash_once_the_image_is_flushed_loses_no_answered_write_async() {
    crash_in_a_checkpoint_both_ways(Step::Flushed, "async");
}

#[test]
fn a_crash_once_the_image_is_flushed_loses_no_answered_write_sync() {
    crash_in_a_checkpoint_both_ways(Step::Flushed, "sync");
}

#[test]
fn a_crash_once_covered_segments_are_deleted_loses_no_answered_write_async() {
    crash_in_a_checkpoint_both_ways(Step::Compacted, "async");
}

#[test]
fn a_crash_once_covered_segments_are_deleted_loses_no_answered_write_sync() {
    crash_in_a_checkpoint_both_ways(Step::Compacted, "sync");
}
