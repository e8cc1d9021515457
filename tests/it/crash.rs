//! Crashes: SIGKILL the server in the middle of a stream of writes, restart it on the same data
//! dir, and check what recovery loads against what the clients were told.
//!
//! - `sync`: every answered write survives (its value, or a later one from the same client).
//! - `async`: what survives is the exact state at one seq (a prefix of the writes sent), at least
//!   as new as the last `durable_seq` the server reported before the kill.
//! - `sync` writes from concurrent clients share flushes (group commit).
//!
//! Client threads carry their own HTTP agent and the server's base URL, so the test thread owns the
//! `Server` and can kill it while they write. After a kill, transport errors (refused, reset) are
//! expected; a thread stops at its first one. Every loop is bounded by a count and by `OVERALL`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{agent, encode, num, temp_dir, Server};

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
