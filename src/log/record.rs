//! One log record: encode, decode and checksum, as pure functions over bytes.
//!
//! A record is one line of a segment file, one JSON object, so `jq -c . data/log/*.jsonl`
//! prints every record as it stands:
//!
//! ```text
//! {"index":12,"seq":42,"now":1764590000000,"writes":[{"put":"user/1","value":{"n":1},
//!  "if_match":[39],"expires_at":1764590060000},{"delete":"tmp"},{"expire":"session/9"},
//!  {"batch":{"put":{"a":1,"b":"two"},"delete":["old"],"expires":{"a":1764593600000}}}],
//!  "crc32c":"1b2e6f0a"}
//! ```
//! (one line in the file; wrapped here.)
//!
//! - `index`: the record's position in the log, one more than the record before it.
//! - `seq`: the map's seq after the record; replay checks it reaches exactly this.
//! - `now`: the writer's clock when it applied the batch (milliseconds since the Unix epoch):
//!   what the batch's preconditions saw as expired. Replay uses it instead of a clock.
//! - `writes`: the accepted writes of one drained batch, in order, as the client sent them:
//!   `put` (with `value`, and `expires_at` when it has a TTL, already absolute), `delete`,
//!   `batch` (`put` object, `delete` array, `expires` object for its keys with a TTL), each with
//!   its `if_match` / `if_none_match` (`"*"` or a list of versions) when it had one; and
//!   `expire`, the writer's own removal of a key whose time passed. Versions are not stored:
//!   replay derives them, as the writer did.
//! - `crc32c`: eight lower-case hex digits, the CRC-32C of every byte of the line before
//!   `,"crc32c"`. It is the last field and fixed in length, so a torn or altered line never
//!   passes as valid.
//!
//! # Raft records
//!
//! A cluster node's log is openraft's log storage, in the same segments and the same format,
//! one record per Raft entry, told apart by `term` and `leader` in place of `seq`:
//!
//! ```text
//! {"index":12,"term":3,"leader":1,"now":1764590000000,"writes":[…],"crc32c":"…"}  a batch
//! {"index":0,"term":0,"leader":0,"membership":{"configs":[[1]],"nodes":{…}},"writes":[],"crc32c":"…"}
//! {"index":13,"term":4,"leader":2,"writes":[],"crc32c":"…"}                   a blank entry
//! ```
//!
//! - `index`: the entry's Raft index (the first is 0, the membership of `POST /cluster/init`).
//! - `term`, `leader`: the entry's log id, the term and the node that led in it.
//! - `now`, `writes`: a normal entry's batch, exactly as in a standalone record (`now` present
//!   marks a normal entry; its `writes` may be empty). A blank or membership entry has neither.
//! - `membership`: openraft's membership as its own JSON, carried here as raw JSON: this module
//!   names no openraft type, the cluster module reads it.
//!
//! A Raft record has no `seq`: the seq of a batch is decided when the committed entry is
//! applied, which is after it is appended. [`Record::seq`] is 0 for one, and [`Record::raft`]
//! says which kind a record is. A line with both `seq` and `term`, a membership with writes or
//! a `now`, or a standalone record without `seq` or `now`, is refused.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::store::{value_problem, Conditions, ETags, Expiry, Logged, PendingValue, Write};

/// What comes before the eight hex digits of the checksum.
const CRC_PREFIX: &[u8] = b",\"crc32c\":\"";
/// Length of the fixed tail: prefix, eight digits, closing quote and brace (no newline).
const TAIL_LEN: usize = CRC_PREFIX.len() + 8 + 2;
/// Longest key a record may hold: the same bound the server's flags have.
const MAX_KEY: usize = crate::defaults::MAX_KEY_BYTES_LIMIT;

/// A decoded record.
#[derive(Debug)]
pub struct Record {
    /// Its index in the log.
    pub index: u64,
    /// The map's seq after it; 0 in a Raft record, which carries none (its seq is decided when
    /// the entry is applied, after it is appended).
    pub seq: u64,
    /// The writer's clock when it applied the record (ms since the epoch); 0 in a blank or
    /// membership Raft record.
    pub now: u64,
    /// Its writes, in order.
    pub writes: Vec<Write>,
    /// The Raft part, when the record is a cluster node's log entry.
    pub raft: Option<RaftPart>,
}

/// What a Raft record holds beyond a standalone one.
#[derive(Debug)]
pub struct RaftPart {
    /// The term of the entry's log id.
    pub term: u64,
    /// The node that led in that term (the log id's node).
    pub leader: u64,
    /// Which kind of entry it is.
    pub payload: RaftPayload,
}

/// The kind of a Raft entry; a normal entry's batch is in [`Record::now`] and
/// [`Record::writes`].
#[derive(Debug)]
pub enum RaftPayload {
    /// A batch of writes.
    Normal,
    /// A blank entry (a new leader's first).
    Blank,
    /// A membership change: openraft's membership as raw JSON.
    Membership(Box<RawValue>),
}

/// What [`encode_raft`] writes after the log id.
#[derive(Debug, Clone, Copy)]
pub enum RaftBody<'a> {
    /// A batch: its clock and its writes array, as [`encode_writes`] made it.
    Normal {
        /// The leader writer's clock when it drained the batch.
        now: u64,
        /// The JSON array of writes.
        writes: &'a RawValue,
    },
    /// A blank entry.
    Blank,
    /// A membership, as one compact JSON object.
    Membership(&'a RawValue),
}

/// Why bytes are not a valid record. Never a panic: every line maps to one of these.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The line does not end in a checksum: a torn or truncated write.
    #[error("the record is incomplete (no checksum at its end)")]
    Incomplete,
    /// The checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum {
        /// What the line claims.
        stored: u32,
        /// What its bytes give.
        computed: u32,
    },
    /// The checksum holds but the line is not a record of this shape.
    #[error("the record is not valid")]
    Json(#[from] serde_json::Error),
    /// A field is out of range or two disagree.
    #[error("the record is not valid: {0}")]
    Invalid(String),
}

/// Appends the line of a record (with its newline) to `out`; returns its length.
pub fn encode(out: &mut Vec<u8>, index: u64, seq: u64, now: u64, writes: &[Logged]) -> usize {
    let start = out.len();
    let _ = write!(
        out,
        "{{\"index\":{index},\"seq\":{seq},\"now\":{now},\"writes\":"
    );
    encode_writes(out, writes);
    seal(out, start)
}

/// Appends the line of a Raft record (with its newline) to `out`; returns its length. The
/// writes or membership are copied as they stand: they must be compact JSON, one line (what
/// [`encode_writes`] and `serde_json::to_string` write).
pub fn encode_raft(
    out: &mut Vec<u8>,
    index: u64,
    term: u64,
    leader: u64,
    body: RaftBody<'_>,
) -> usize {
    let start = out.len();
    let _ = write!(
        out,
        "{{\"index\":{index},\"term\":{term},\"leader\":{leader}"
    );
    match body {
        RaftBody::Normal { now, writes } => {
            let _ = write!(out, ",\"now\":{now},\"writes\":");
            out.extend_from_slice(writes.get().as_bytes());
        }
        RaftBody::Blank => out.extend_from_slice(b",\"writes\":[]"),
        RaftBody::Membership(m) => {
            out.extend_from_slice(b",\"membership\":");
            out.extend_from_slice(m.get().as_bytes());
            out.extend_from_slice(b",\"writes\":[]");
        }
    }
    seal(out, start)
}

/// Appends the checksum tail and the newline to the record begun at `start`; returns the
/// record's length.
fn seal(out: &mut Vec<u8>, start: usize) -> usize {
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(CRC_PREFIX);
    let _ = write!(out, "{crc:08x}\"}}");
    out.push(b'\n');
    out.len() - start
}

/// Appends the JSON array of `writes` as a record holds it (a cluster proposal carries the
/// same array, so the Raft record of its entry copies it as it stands).
pub fn encode_writes(out: &mut Vec<u8>, writes: &[Logged]) {
    out.push(b'[');
    for (i, w) in writes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match w {
            Logged::Put { entry, cond } => {
                out.extend_from_slice(b"{\"put\":");
                string(out, entry.key());
                out.extend_from_slice(b",\"value\":");
                out.extend_from_slice(entry.json());
                conditions(out, cond);
                if let Some(t) = entry.expires_at() {
                    let _ = write!(out, ",\"expires_at\":{t}");
                }
                out.push(b'}');
            }
            Logged::Expire { key } => {
                out.extend_from_slice(b"{\"expire\":");
                string(out, key);
                out.push(b'}');
            }
            Logged::Delete { key, cond } => {
                out.extend_from_slice(b"{\"delete\":");
                string(out, key);
                conditions(out, cond);
                out.push(b'}');
            }
            Logged::Batch { puts, deletes } => {
                out.extend_from_slice(b"{\"batch\":{\"put\":{");
                for (j, e) in puts.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    string(out, e.key());
                    out.push(b':');
                    out.extend_from_slice(e.json());
                }
                out.extend_from_slice(b"},\"delete\":[");
                for (j, k) in deletes.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    string(out, k);
                }
                out.push(b']');
                let mut first = true;
                for e in puts {
                    if let Some(t) = e.expires_at() {
                        out.extend_from_slice(if first { b",\"expires\":{" } else { b"," });
                        first = false;
                        string(out, e.key());
                        let _ = write!(out, ":{t}");
                    }
                }
                if !first {
                    out.push(b'}');
                }
                out.extend_from_slice(b"}}");
            }
        }
    }
    out.push(b']');
}

fn string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing a string into memory");
}

fn conditions(out: &mut Vec<u8>, cond: &Conditions) {
    for (name, tags) in [
        ("if_match", &cond.if_match),
        ("if_none_match", &cond.if_none_match),
    ] {
        let Some(tags) = tags else { continue };
        let _ = write!(out, ",\"{name}\":");
        match tags {
            ETags::Any => out.extend_from_slice(b"\"*\""),
            ETags::List(list) => {
                out.push(b'[');
                for (i, v) in list.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let _ = write!(out, "{v}");
                }
                out.push(b']');
            }
        }
    }
}

/// The part of `line` (without its newline) the checksum covers, once verified.
fn verified(line: &[u8]) -> Result<&[u8], RecordError> {
    if line.len() < TAIL_LEN {
        return Err(RecordError::Incomplete);
    }
    let (body, tail) = line.split_at(line.len() - TAIL_LEN);
    if !tail.starts_with(CRC_PREFIX) || !tail.ends_with(b"\"}") {
        return Err(RecordError::Incomplete);
    }
    let hex = std::str::from_utf8(&tail[CRC_PREFIX.len()..CRC_PREFIX.len() + 8])
        .map_err(|_| RecordError::Incomplete)?;
    if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(RecordError::Incomplete);
    }
    let stored = u32::from_str_radix(hex, 16).map_err(|_| RecordError::Incomplete)?;
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    Ok(body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord<'a> {
    index: u64,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    term: Option<u64>,
    #[serde(default)]
    leader: Option<u64>,
    #[serde(default)]
    now: Option<u64>,
    #[serde(borrow, default)]
    membership: Option<&'a RawValue>,
    #[serde(borrow)]
    writes: Vec<RawWrite<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWrite<'a> {
    #[serde(borrow, default)]
    put: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    value: Value<'a>,
    #[serde(borrow, default)]
    delete: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    batch: Option<RawBatch<'a>>,
    #[serde(borrow, default)]
    if_match: Option<RawTags<'a>>,
    #[serde(borrow, default)]
    if_none_match: Option<RawTags<'a>>,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(borrow, default)]
    expire: Option<Cow<'a, str>>,
}

/// A put's value: present (even `null`) or absent; `Option` would read `null` as absent.
#[derive(Default)]
enum Value<'a> {
    #[default]
    Absent,
    Present(&'a RawValue),
}

impl<'de: 'a, 'a> Deserialize<'de> for Value<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(Value::Present)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch<'a> {
    #[serde(borrow)]
    put: Pairs<'a>,
    #[serde(borrow)]
    delete: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    expires: BTreeMap<Cow<'a, str>, u64>,
}

/// A batch's `put` object, its pairs in file order. Not a map: collecting a hundred pairs into
/// a `BTreeMap` was a third of the time spent decoding a batch record. A key twice is refused
/// by [`decode`].
struct Pairs<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Pairs<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Pairs<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of keys and values")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Pairs<'a>, M::Error> {
                let mut pairs = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some((k, v)) = m.next_entry::<Cow<'a, str>, &'a RawValue>()? {
                    pairs.push((k, v));
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTags<'a> {
    Any(#[serde(borrow)] Cow<'a, str>),
    List(Vec<u64>),
}

fn key(k: Cow<'_, str>) -> Result<Arc<str>, RecordError> {
    if k.is_empty() || k.len() > MAX_KEY {
        return Err(RecordError::Invalid(format!(
            "a key of {} bytes (1..={MAX_KEY})",
            k.len()
        )));
    }
    Ok(Arc::from(k.as_ref()))
}

/// A put's value as the map stores it; one the HTTP API would refuse is refused here too.
fn value(v: &RawValue) -> Result<PendingValue, RecordError> {
    let json = v.get().as_bytes();
    if let Some(problem) = value_problem(json) {
        return Err(RecordError::Invalid(format!("a value with {problem}")));
    }
    Ok(PendingValue::from_raw(json))
}

fn tags(t: Option<RawTags<'_>>) -> Result<Option<ETags>, RecordError> {
    match t {
        None => Ok(None),
        Some(RawTags::Any(s)) if s == "*" => Ok(Some(ETags::Any)),
        Some(RawTags::Any(s)) => Err(RecordError::Invalid(format!("a condition {s:?}"))),
        Some(RawTags::List(l)) => Ok(Some(ETags::List(l))),
    }
}

/// Validates one line (without its newline) and decodes the record it holds.
pub fn decode(line: &[u8]) -> Result<Record, RecordError> {
    let body = verified(line)?;
    // The checksum covers the body; the closing brace is part of the fixed tail.
    let mut doc = Vec::with_capacity(body.len() + 1);
    doc.extend_from_slice(body);
    doc.push(b'}');
    let raw: RawRecord<'_> = serde_json::from_slice(&doc)?;
    let invalid = |s: &str| Err(RecordError::Invalid(s.into()));
    let (seq, now, raft) = match (raw.seq, raw.term, raw.leader) {
        (Some(seq), None, None) => {
            // A standalone record: one drained batch that changed something.
            if raw.index == 0 {
                return invalid("index 0 (the first record is 1)");
            }
            if raw.membership.is_some() {
                return invalid("a membership in a record with a seq");
            }
            let Some(now) = raw.now else {
                return invalid("a record without now");
            };
            if raw.writes.is_empty() {
                return invalid("no writes");
            }
            (seq, now, None)
        }
        (None, Some(term), Some(leader)) => {
            let payload = match (raw.membership, raw.now) {
                (Some(_), Some(_)) => return invalid("a membership with now"),
                (Some(m), None) if raw.writes.is_empty() => RaftPayload::Membership(m.to_owned()),
                (Some(_), None) => return invalid("a membership with writes"),
                (None, Some(_)) => RaftPayload::Normal,
                (None, None) if raw.writes.is_empty() => RaftPayload::Blank,
                (None, None) => return invalid("writes without now"),
            };
            let now = raw.now.unwrap_or(0);
            (
                0,
                now,
                Some(RaftPart {
                    term,
                    leader,
                    payload,
                }),
            )
        }
        (Some(_), _, _) => return invalid("a seq together with a term or leader"),
        (None, _, _) => return invalid("neither a seq nor a term and leader"),
    };
    Ok(Record {
        index: raw.index,
        seq,
        now,
        writes: writes(raw.writes)?,
        raft,
    })
}

/// Decodes a JSON array of writes as [`encode_writes`] makes it (a cluster proposal's), with
/// every check [`decode`] makes of a record's writes.
pub fn decode_writes(array: &[u8]) -> Result<Vec<Write>, RecordError> {
    let raw: Vec<RawWrite<'_>> = serde_json::from_slice(array)?;
    writes(raw)
}

/// The writes of a record, each checked: its shape, its keys, its values, its conditions.
fn writes(raw: Vec<RawWrite<'_>>) -> Result<Vec<Write>, RecordError> {
    let invalid = |s: &str| Err(RecordError::Invalid(s.into()));
    let mut writes = Vec::with_capacity(raw.len());
    for w in raw {
        let cond = Conditions {
            if_match: tags(w.if_match)?,
            if_none_match: tags(w.if_none_match)?,
        };
        let expiry = |t: Option<u64>| t.map_or(Expiry::Never, Expiry::At);
        let plain = cond == Conditions::default() && w.expires_at.is_none();
        let write = match (w.put, w.value, w.delete, w.batch, w.expire) {
            (Some(k), Value::Present(v), None, None, None) => Write::Put {
                key: key(k)?,
                value: value(v)?,
                cond,
                expires: expiry(w.expires_at),
            },
            (None, Value::Absent, Some(k), None, None) if w.expires_at.is_none() => {
                Write::Delete { key: key(k)?, cond }
            }
            (None, Value::Absent, None, None, Some(k)) if plain => Write::Expire { key: key(k)? },
            (None, Value::Absent, None, Some(b), None) if plain => {
                let mut named = foldhash::HashSet::with_capacity_and_hasher(
                    b.put.0.len(),
                    foldhash::fast::RandomState::default(),
                );
                if let Some((k, _)) = b.put.0.iter().find(|(k, _)| !named.insert(k.as_ref())) {
                    return Err(RecordError::Invalid(format!("the batch puts {k:?} twice")));
                }
                if let Some(k) = b.expires.keys().find(|k| !named.contains(k.as_ref())) {
                    return Err(RecordError::Invalid(format!(
                        "an expiry for {k:?}, which the batch does not put"
                    )));
                }
                let mut expires = b.expires;
                Write::Batch {
                    puts: b
                        .put
                        .0
                        .into_iter()
                        .map(|(k, v)| {
                            let t = if expires.is_empty() {
                                Expiry::Never
                            } else {
                                expiry(expires.remove(&k))
                            };
                            Ok((key(k)?, value(v)?, t))
                        })
                        .collect::<Result<_, RecordError>>()?,
                    deletes: b.delete.into_iter().map(key).collect::<Result<_, _>>()?,
                }
            }
            _ => return invalid("a write that is not one put, delete, batch or expire"),
        };
        writes.push(write);
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Apply, Entries};

    fn logged() -> Vec<Logged> {
        let state = Entries::new();
        let mut apply = Apply::new(|k: &str| state.get(k.as_bytes()).cloned(), 0, 1_000);
        apply
            .apply(Write::Put {
                key: Arc::from("k \"q\" é"),
                value: PendingValue::from_json(&serde_json::json!({"a": [1, 2.5, null]})),
                cond: Conditions {
                    if_none_match: Some(ETags::Any),
                    ..Default::default()
                },
                expires: Expiry::After(60),
            })
            .unwrap();
        apply
            .apply(Write::Put {
                key: Arc::from("null"),
                value: PendingValue::from_json(&serde_json::Value::Null),
                cond: Conditions::default(),
                expires: Expiry::Never,
            })
            .unwrap();
        apply
            .apply(Write::Put {
                key: Arc::from("k \"q\" é 2"),
                value: PendingValue::from_json(&serde_json::json!({"a": [1, 2.5, null]})),
                cond: Conditions {
                    if_none_match: Some(ETags::Any),
                    ..Default::default()
                },
                expires: Expiry::After(60),
            })
            .unwrap();
        apply
            .apply(Write::Batch {
                puts: vec![
                    (
                        Arc::from("b"),
                        PendingValue::from_text("two"),
                        Expiry::At(9_000),
                    ),
                    (Arc::from("c"), PendingValue::from_text("3"), Expiry::Never),
                ],
                deletes: vec![Arc::from("gone")],
            })
            .unwrap();
        apply
            .apply(Write::Delete {
                key: Arc::from("b"),
                cond: Conditions {
                    if_match: Some(ETags::List(vec![4, 9])),
                    ..Default::default()
                },
            })
            .unwrap();
        apply.logged
    }

    fn line() -> Vec<u8> {
        let mut out = Vec::new();
        let n = encode(&mut out, 7, 3, 1_000, &logged());
        assert_eq!(n, out.len());
        assert_eq!(out.last(), Some(&b'\n'));
        out.pop();
        out
    }

    #[test]
    fn a_record_round_trips_and_is_plain_json() {
        let line = line();
        let v: serde_json::Value = serde_json::from_slice(&line).expect("jq reads it");
        assert_eq!(v["index"], 7);
        assert_eq!(v["writes"][0]["value"]["a"][1], 2.5);
        let rec = decode(&line).unwrap();
        assert_eq!(
            (rec.index, rec.seq, rec.now, rec.writes.len()),
            (7, 3, 1_000, 5)
        );
        match &rec.writes[3] {
            Write::Batch { puts, .. } => {
                assert_eq!(puts[0].2, Expiry::At(9_000));
                assert_eq!(puts[1].2, Expiry::Never);
            }
            other => panic!("{other:?}"),
        }
        match &rec.writes[1] {
            Write::Put { value, .. } => assert_eq!(value.json(), b"null"),
            other => panic!("{other:?}"),
        }
        match &rec.writes[4] {
            Write::Delete { key, cond } => {
                assert_eq!(&**key, "b");
                assert_eq!(cond.if_match, Some(ETags::List(vec![4, 9])));
            }
            other => panic!("{other:?}"),
        }
        match &rec.writes[0] {
            Write::Put {
                key,
                value,
                cond,
                expires,
            } => {
                assert_eq!(&**key, "k \"q\" é");
                assert_eq!(value.json(), br#"{"a":[1,2.5,null]}"#);
                assert_eq!(cond.if_none_match, Some(ETags::Any));
                // The TTL was logged as the absolute time the writer fixed.
                assert_eq!(*expires, Expiry::At(61_000));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let line = line();
        for cut in 0..line.len() {
            assert!(decode(&line[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..line.len() {
            let mut bad = line.clone();
            bad[i] ^= 0x20;
            assert!(decode(&bad).is_err(), "flipped byte {i}");
        }
    }

    #[test]
    fn a_well_sealed_line_of_the_wrong_shape_is_invalid_not_a_panic() {
        for body in [
            r#"{"index":0,"seq":1,"writes":[{"delete":"a"}]"#,
            r#"{"index":1,"seq":1,"writes":[]"#,
            r#"{"index":1,"seq":1,"writes":[{"put":"a"}]"#,
            r#"{"index":1,"seq":1,"writes":[{"delete":""}]"#,
            r#"{"index":1,"seq":1,"writes":[{"delete":"a","if_match":"x"}]"#,
            r#"{"index":1,"seq":1,"writes":[{"delete":"a"}],"extra":1"#,
            r#"{"index":1,"seq":1,"now":0,"writes":[{"batch":{"put":{},"delete":[],"expires":{"x":1}}}]"#,
            r#"{"index":1,"seq":1,"now":0,"writes":[{"expire":"a","if_match":[1]}]"#,
            r#"{"index":1,"seq":1,"now":0,"writes":[{"batch":{"put":{"a":1,"b":2,"a":3},"delete":[]}}]"#,
            r#"{"index":1,"seq":1,"now":0,"writes":[{"batch":{"put":[["a",1]],"delete":[]}}]"#,
            // Found by fuzzing (fuzz/regressions/log_record_decode): serde_json passes a lone
            // surrogate escape inside a raw value through, and replay stored it.
            r#"{"index":1,"seq":1,"now":0,"writes":[{"put":"a","value":{"no\ud800w":0}}]"#,
            r#"{"index":1,"seq":1,"now":0,"writes":[{"batch":{"put":{"a":"\udc00"},"delete":[]}}]"#,
            // Also found by fuzzing: a value no server writes (not compact, or beyond f64).
            "{\"index\":1,\"seq\":1,\"now\":0,\"writes\":[{\"put\":\"a\",\"value\":{\n}}]",
            r#"{"index":1,"seq":1,"now":0,"writes":[{"put":"a","value":[1, 2]}]"#,
            r#"{"index":1,"seq":1,"now":0,"writes":[{"put":"a","value":1e840}]"#,
        ] {
            let sealed = format!(
                "{body},\"crc32c\":\"{:08x}\"}}",
                crc32c::crc32c(body.as_bytes())
            );
            assert!(decode(sealed.as_bytes()).is_err(), "{body}");
        }
        for file in std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/log_record_decode"
        ))
        .into_iter()
        .flatten()
        .flatten()
        {
            let bytes = std::fs::read(file.path()).unwrap();
            // As the fuzz target reads them: as they stand, and resealed.
            let body = match bytes
                .windows(CRC_PREFIX.len())
                .rposition(|w| w == CRC_PREFIX)
            {
                Some(at) => &bytes[..at],
                None => &bytes[..],
            };
            let sealed = [
                body,
                format!(",\"crc32c\":\"{:08x}\"}}", crc32c::crc32c(body)).as_bytes(),
            ]
            .concat();
            for line in [&bytes[..], &sealed[..]] {
                if let Ok(r) = decode(line) {
                    let mut again = Vec::new();
                    let logged: Vec<Logged> = r
                        .writes
                        .into_iter()
                        .map(|w| Logged::as_sent(w, r.now))
                        .collect();
                    encode(&mut again, r.index, r.seq, r.now, &logged);
                    serde_json::from_slice::<serde_json::Value>(&again)
                        .unwrap_or_else(|e| panic!("{}: {e}", file.path().display()));
                }
            }
        }
    }
    fn sealed(body: &str) -> String {
        format!(
            "{body},\"crc32c\":\"{:08x}\"}}",
            crc32c::crc32c(body.as_bytes())
        )
    }

    #[test]
    fn raft_records_round_trip_and_keep_the_standalone_checksum_rule() {
        let mut writes = Vec::new();
        encode_writes(&mut writes, &logged());
        let writes = RawValue::from_string(String::from_utf8(writes).unwrap()).unwrap();
        let membership =
            RawValue::from_string(r#"{"configs":[[1]],"nodes":{"1":{}}}"#.into()).unwrap();
        let mut out = Vec::new();
        let bodies = [
            RaftBody::Membership(&membership),
            RaftBody::Normal {
                now: 1_000,
                writes: &writes,
            },
            RaftBody::Blank,
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            encode_raft(&mut out, i as u64, 3, 2, body);
        }
        let lines: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 3);
        for line in &lines {
            // What `jq -c .` reads: plain JSON, the checksum as in a standalone record.
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert_eq!(
                (v["term"].as_u64(), v["leader"].as_u64()),
                (Some(3), Some(2))
            );
            assert!(v.get("seq").is_none());
        }
        let rec = decode(lines[0]).unwrap();
        assert_eq!(
            (rec.index, rec.seq, rec.now, rec.writes.len()),
            (0, 0, 0, 0)
        );
        match rec.raft.unwrap().payload {
            RaftPayload::Membership(m) => assert_eq!(m.get(), membership.get()),
            other => panic!("{other:?}"),
        }
        let rec = decode(lines[1]).unwrap();
        assert_eq!((rec.index, rec.now, rec.writes.len()), (1, 1_000, 5));
        assert!(matches!(rec.raft.unwrap().payload, RaftPayload::Normal));
        // The same writes as the standalone record of the same batch.
        let standalone = decode(&line()).unwrap();
        assert_eq!(
            format!("{:?}", rec.writes),
            format!("{:?}", standalone.writes)
        );
        assert_eq!(
            format!("{:?}", decode_writes(writes.get().as_bytes()).unwrap()),
            format!("{:?}", standalone.writes)
        );
        let rec = decode(lines[2]).unwrap();
        let raft = rec.raft.unwrap();
        assert!(matches!(raft.payload, RaftPayload::Blank));
        assert_eq!((raft.term, raft.leader, rec.index), (3, 2, 2));
        for line in &lines {
            for cut in 0..line.len() {
                assert!(decode(&line[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_mixture_of_standalone_and_raft_fields_is_refused() {
        for body in [
            // A seq together with a term or a leader.
            r#"{"index":1,"seq":1,"term":1,"leader":1,"now":0,"writes":[{"delete":"a"}]"#,
            r#"{"index":1,"seq":1,"term":1,"now":0,"writes":[{"delete":"a"}]"#,
            // A term without a leader, or neither.
            r#"{"index":1,"term":1,"now":0,"writes":[]"#,
            r#"{"index":1,"now":0,"writes":[{"delete":"a"}]"#,
            // A membership with writes, with now, or in a standalone record.
            r#"{"index":1,"term":1,"leader":1,"membership":{},"writes":[{"delete":"a"}]"#,
            r#"{"index":1,"term":1,"leader":1,"now":0,"membership":{},"writes":[]"#,
            r#"{"index":1,"seq":1,"now":0,"membership":{},"writes":[{"delete":"a"}]"#,
            // Writes without now (neither normal nor blank).
            r#"{"index":1,"term":1,"leader":1,"writes":[{"delete":"a"}]"#,
            // A Raft record's writes are checked as a standalone record's.
            r#"{"index":1,"term":1,"leader":1,"now":0,"writes":[{"delete":""}]"#,
            r#"{"index":1,"term":1,"leader":1,"now":0,"writes":[{"put":"a","value":[1, 2]}]"#,
            // A standalone record still needs now, and index 0 stays a Raft index only.
            r#"{"index":1,"seq":1,"writes":[{"delete":"a"}]"#,
            r#"{"index":0,"seq":1,"now":0,"writes":[{"delete":"a"}]"#,
        ] {
            assert!(decode(sealed(body).as_bytes()).is_err(), "{body}");
        }
        assert!(decode_writes(br#"[{"delete":"a","if_match":"x"}]"#).is_err());
        assert!(decode_writes(br#"{"delete":"a"}"#).is_err());
    }
}
