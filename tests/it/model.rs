//! Model-based property test: random sequences of puts, deletes, batches, compare-and-set,
//! snapshots, clean restarts and crashes against the library (the same `Engine` the server
//! runs), checked after every step against a plain in-memory model.
//!
//! A clean restart ([`Engine::close`]) writes a final snapshot, so the next start loads it and
//! replays no log record; a crash ([`Engine::crash`]) writes none and deletes nothing, so the
//! next start replays every record since the newest image, and the test checks it replayed
//! exactly those. A crash here is a process crash, not a power loss: every record was written
//! before its answer, so in both durability modes every answered write survives (power loss is
//! simulated by the `src/log.rs` tests).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{json, Value as Json};
use twinkv::engine::{EngineError, Settings};
use twinkv::store::{Conditions, ETags, Expiry, PendingValue, WriteError};
use twinkv::{Durability, Engine};

const KEYS: &[&str] = &["a", "a/b", "b", "ключ", "k with space", "z"];

#[derive(Debug, Clone)]
enum Step {
    Put(usize, i64),
    /// Compare-and-set: `true` uses the key's current version, `false` a wrong one.
    PutIfMatch(usize, i64, bool),
    PutIfAbsent(usize, i64),
    Delete(usize),
    DeleteIfMatch(usize, bool),
    Batch(Vec<(usize, i64)>, Vec<usize>),
    Snapshot,
    /// Clean close (with its final snapshot), then open.
    Restart,
    /// Close as a crash would (no final snapshot), then open: recovery through the log.
    Crash,
}

fn step() -> impl Strategy<Value = Step> {
    let key = 0..KEYS.len();
    prop_oneof![
        4 => (key.clone(), any::<i64>()).prop_map(|(k, v)| Step::Put(k, v)),
        2 => (key.clone(), any::<i64>(), any::<bool>()).prop_map(|(k, v, ok)| Step::PutIfMatch(k, v, ok)),
        1 => (key.clone(), any::<i64>()).prop_map(|(k, v)| Step::PutIfAbsent(k, v)),
        2 => key.clone().prop_map(Step::Delete),
        1 => (key.clone(), any::<bool>()).prop_map(|(k, ok)| Step::DeleteIfMatch(k, ok)),
        2 => (
            prop::collection::vec((key.clone(), any::<i64>()), 0..4),
            prop::collection::vec(key, 0..3)
        )
            .prop_map(|(puts, dels)| {
                // A key may not be both put and deleted: the HTTP layer refuses that before
                // the store sees it.
                let dels = dels.into_iter().filter(|d| puts.iter().all(|(p, _)| p != d)).collect();
                Step::Batch(puts, dels)
            }),
        1 => Just(Step::Snapshot),
        1 => Just(Step::Restart),
        2 => Just(Step::Crash),
    ]
}

/// What the store should hold: key to (value, version), the keys with an expiry time, and the
/// last seq.
#[derive(Debug, Default)]
struct Model {
    map: BTreeMap<String, (Json, u64)>,
    ttl: BTreeSet<String>,
    seq: u64,
}

impl Model {
    fn set_ttl(&mut self, key: &str, n: i64) {
        if ttl(n) == Expiry::Never {
            self.ttl.remove(key);
        } else {
            self.ttl.insert(key.to_string());
        }
    }
}

/// Some writes carry a TTL (a day: nothing expires during a run): the expiry time must survive
/// checkpoints, log replay and restarts, and a write without one must clear it.
fn ttl(n: i64) -> Expiry {
    if n.rem_euclid(4) == 1 {
        Expiry::After(86_400)
    } else {
        Expiry::Never
    }
}

fn value(n: i64) -> Json {
    if n % 3 == 0 {
        json!(format!("text {n}"))
    } else {
        json!({ "n": n, "list": [n, null, true] })
    }
}

fn open(dir: &std::path::Path, durability: Durability) -> Engine {
    // Small segments and checkpoints, so the steps roll segments, checkpoint on their own and
    // delete covered segments between crashes.
    let settings = Settings {
        fsync_interval: Duration::from_millis(1),
        checkpoint_log_bytes: 512,
        segment_bytes: 300,
        ..Settings::new(durability)
    };
    // A child process another test spawns (a server, `inspect`) starts as a copy of this one,
    // open files included, until it execs: forked while a closed engine's lock file was still
    // open here, it holds that lock for a moment after the close. Retry, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Engine::open(dir, &settings) {
            Err(EngineError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            opened => return opened.expect("engine opens"),
        }
    }
}

fn check(engine: &Engine, model: &Model) -> Result<(), TestCaseError> {
    let reader = engine.store.readers().reader();
    let page = reader.list("", None, 10_000);
    let got: BTreeMap<String, (Json, u64)> = page
        .items
        .iter()
        .map(|e| {
            (
                e.key().to_string(),
                (
                    serde_json::from_slice(e.json()).expect("stored JSON"),
                    e.version(),
                ),
            )
        })
        .collect();
    prop_assert_eq!(&got, &model.map);
    let expiring: BTreeSet<String> = page
        .items
        .iter()
        .filter(|e| e.expires_at().is_some())
        .map(|e| e.key().to_string())
        .collect();
    prop_assert_eq!(&expiring, &model.ttl);
    prop_assert_eq!(reader.stats().seq, model.seq);
    prop_assert_eq!(page.seq, model.seq);
    Ok(())
}

/// Runs `steps`; returns how many log records each reopen after a [`Step::Crash`] replayed.
fn run(steps: Vec<Step>, durability: Durability) -> Result<Vec<u64>, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut engine = open(dir.path(), durability);
    let mut model = Model::default();
    let mut replays = Vec::new();
    for step in steps {
        let h = engine.store.handle();
        let version_of = |m: &Model, k: &str| m.map.get(k).map(|(_, v)| *v);
        match step {
            Step::Put(k, n) | Step::PutIfAbsent(k, n) | Step::PutIfMatch(k, n, _) => {
                let key = KEYS[k];
                let current = version_of(&model, key);
                let (cond, allowed) = match step {
                    Step::PutIfAbsent(..) => (
                        Conditions {
                            if_none_match: Some(ETags::Any),
                            ..Default::default()
                        },
                        current.is_none(),
                    ),
                    Step::PutIfMatch(_, _, right) => {
                        let tag = if right {
                            current.unwrap_or(0)
                        } else {
                            current.unwrap_or(0) + 1000
                        };
                        (
                            Conditions {
                                if_match: Some(ETags::List(vec![tag])),
                                ..Default::default()
                            },
                            right && current.is_some(),
                        )
                    }
                    _ => (Conditions::default(), true),
                };
                let got = rt.block_on(h.put(
                    Arc::from(key),
                    PendingValue::from_json(&value(n)),
                    cond,
                    ttl(n),
                ));
                if allowed {
                    let w = got.expect("put succeeds");
                    model.seq += 1;
                    prop_assert_eq!(w.seq, model.seq);
                    prop_assert_eq!(w.created, current.is_none());
                    model.map.insert(key.to_string(), (value(n), model.seq));
                    model.set_ttl(key, n);
                } else {
                    prop_assert_eq!(got, Err(WriteError::PreconditionFailed));
                }
            }
            Step::Delete(k) | Step::DeleteIfMatch(k, _) => {
                let key = KEYS[k];
                let current = version_of(&model, key);
                let (cond, expect) = match step {
                    Step::DeleteIfMatch(_, right) => {
                        let tag = if right {
                            current.unwrap_or(0)
                        } else {
                            current.unwrap_or(0) + 1000
                        };
                        let cond = Conditions {
                            if_match: Some(ETags::List(vec![tag])),
                            ..Default::default()
                        };
                        let expect = if right && current.is_some() {
                            Ok(())
                        } else {
                            Err(WriteError::PreconditionFailed)
                        };
                        (cond, expect)
                    }
                    _ => (
                        Conditions::default(),
                        if current.is_some() {
                            Ok(())
                        } else {
                            Err(WriteError::NotFound)
                        },
                    ),
                };
                let got = rt.block_on(h.delete(Arc::from(key), cond));
                match expect {
                    Ok(()) => {
                        model.seq += 1;
                        prop_assert_eq!(got.expect("delete succeeds").seq, model.seq);
                        model.map.remove(key);
                        model.ttl.remove(key);
                    }
                    Err(e) => prop_assert_eq!(got, Err(e)),
                }
            }
            Step::Batch(puts, dels) => {
                let changes =
                    !puts.is_empty() || dels.iter().any(|d| model.map.contains_key(KEYS[*d]));
                let got = rt
                    .block_on(
                        h.batch(
                            puts.iter()
                                .map(|(k, n)| {
                                    (
                                        Arc::from(KEYS[*k]),
                                        PendingValue::from_json(&value(*n)),
                                        ttl(*n),
                                    )
                                })
                                .collect(),
                            dels.iter().map(|d| Arc::from(KEYS[*d])).collect(),
                        ),
                    )
                    .expect("batch succeeds");
                if changes {
                    model.seq += 1;
                    for d in &dels {
                        model.map.remove(KEYS[*d]);
                        model.ttl.remove(KEYS[*d]);
                    }
                    for (k, n) in &puts {
                        model.set_ttl(KEYS[*k], *n);
                        model
                            .map
                            .insert(KEYS[*k].to_string(), (value(*n), model.seq));
                    }
                }
                prop_assert_eq!(got.seq, model.seq);
            }
            Step::Snapshot => {
                let status = rt.block_on(engine.checkpoint()).expect("snapshot succeeds");
                prop_assert_eq!(status.seq, model.seq);
            }
            Step::Restart => {
                engine.close().expect("clean close");
                engine = open(dir.path(), durability);
            }
            Step::Crash => {
                let status = engine.snapshot_status();
                engine.crash().expect("crash stops cleanly");
                // The newest image is the last one the snapshot thread reported: the crash
                // wrote none.
                let image_seq = status.load().seq;
                engine = open(dir.path(), durability);
                let r = &engine.recovered;
                prop_assert_eq!(r.image.as_ref().map_or(0, |i| i.seq), image_seq);
                // Every answered write that changed something is one record of one seq (each
                // step waits for its answer, so none share a record): the reopen replays
                // exactly the seqs after the image.
                prop_assert_eq!(r.replayed, model.seq - image_seq);
                replays.push(r.replayed);
            }
        }
        check(&engine, &model)?;
    }
    engine.close().expect("clean close");
    // And a last restart: whatever the steps, the final state survives.
    let engine = open(dir.path(), durability);
    check(&engine, &model)?;
    engine.close().expect("clean close");
    Ok(replays)
}

/// Crashes that must replay the log, in a fixed order: a crash with no image at all, a crash
/// right after a crash (nothing was written or deleted between them), a crash right after a
/// snapshot (nothing to replay), and a clean restart after crashes. The writes are too few
/// (about 100 bytes of log each) to reach the 512-byte automatic checkpoint.
fn crashes_replay_the_log(durability: Durability) {
    use Step::*;
    let steps = vec![
        Put(0, 1),
        Put(1, 5),
        Batch(vec![(2, 3), (3, 4)], vec![0]),
        Crash,
        Crash,
        Delete(1),
        Snapshot,
        Crash,
        PutIfMatch(2, 9, true),
        Crash,
        Crash,
        Restart,
        Put(4, 2),
        Crash,
    ];
    let replays = run(steps, durability).expect("the store agrees with the model");
    assert_eq!(replays, [3, 3, 0, 1, 1, 1]);
}

#[test]
fn async_crashes_replay_the_log() {
    crashes_replay_the_log(Durability::Async);
}

#[test]
fn sync_crashes_replay_the_log() {
    crashes_replay_the_log(Durability::Sync);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn async_store_agrees_with_the_model(steps in prop::collection::vec(step(), 1..40)) {
        run(steps, Durability::Async)?;
    }

    #[test]
    fn sync_store_agrees_with_the_model(steps in prop::collection::vec(step(), 1..30)) {
        run(steps, Durability::Sync)?;
    }
}
