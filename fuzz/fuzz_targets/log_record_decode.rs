//! `log_record_decode`: arbitrary bytes as one log line, through the log record decoder.
//!
//! Oracle: it never panics; an accepted standalone record has an index of at least 1, at least
//! one write, and keys of 1..=65536 bytes; an accepted Raft record (a cluster node's) has no
//! seq, and writes only when it is a normal entry; encoding what was decoded and decoding that
//! gives the same record (the encoder and the decoder agree on every field), and that
//! encoding is one line of JSON that `serde_json` (as `jq` would) reads as an object. Each
//! input is decoded as it stands and resealed (see `resealed`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use twinkv::fuzzing::{
    decode_log_record, encode_log_record, encode_log_writes, encode_raft_log_record, RaftBody,
    RaftPayload,
};
use twinkv::store::{Expiry, Logged, Write};
use twinkv::Entry;

/// A record holds absolute expiry times only; an `Expiry::After` never comes out of one.
fn at(e: Expiry) -> Option<u64> {
    match e {
        Expiry::Never => None,
        Expiry::At(t) => Some(t),
        Expiry::After(_) => panic!("a decoded record holds a relative TTL"),
    }
}

fn logged(w: &Write) -> Logged {
    match w {
        Write::Put {
            key,
            value,
            cond,
            expires,
        } => Logged::Put {
            entry: Entry::expiring(key, 0, value.json(), at(*expires)),
            cond: cond.clone(),
        },
        Write::Delete { key, cond } => Logged::Delete {
            key: key.clone(),
            cond: cond.clone(),
        },
        Write::Batch { puts, deletes } => Logged::Batch {
            puts: puts
                .iter()
                .map(|(k, v, t)| Entry::expiring(k, 0, v.json(), at(*t)))
                .collect(),
            deletes: deletes.clone(),
        },
        Write::Expire { key } => Logged::Expire { key: key.clone() },
    }
}

/// The input cut at its last `,"crc32c":"` and given a correct checksum tail: libFuzzer cannot
/// forge a CRC-32C in hex, so without this nearly every mutation would stop at the checksum.
fn resealed(data: &[u8]) -> Option<Vec<u8>> {
    const PREFIX: &[u8] = b",\"crc32c\":\"";
    let at = data.windows(PREFIX.len()).rposition(|w| w == PREFIX)?;
    let body = &data[..at];
    let mut out = body.to_vec();
    out.extend_from_slice(format!(",\"crc32c\":\"{:08x}\"}}", crc32c::crc32c(body)).as_bytes());
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(sealed) = resealed(data) {
        check(&sealed);
    }
});

fn check(data: &[u8]) {
    let Ok(rec) = decode_log_record(data) else {
        return;
    };
    let logged: Vec<Logged> = rec.writes.iter().map(logged).collect();
    let mut line = Vec::new();
    match &rec.raft {
        None => {
            assert!(rec.index >= 1, "accepted index {}", rec.index);
            assert!(!rec.writes.is_empty(), "accepted a record without writes");
            encode_log_record(&mut line, rec.index, rec.seq, rec.now, &logged);
        }
        Some(raft) => {
            assert_eq!(rec.seq, 0, "a Raft record has no seq");
            let mut array = Vec::new();
            encode_log_writes(&mut array, &logged);
            let writes = serde_json::value::RawValue::from_string(
                String::from_utf8(array).expect("UTF-8"),
            )
            .expect("a writes array");
            let body = match &raft.payload {
                RaftPayload::Normal => RaftBody::Normal {
                    now: rec.now,
                    writes: &writes,
                },
                RaftPayload::Blank => RaftBody::Blank,
                RaftPayload::Membership(m) => RaftBody::Membership(m),
            };
            if !matches!(raft.payload, RaftPayload::Normal) {
                assert!(rec.writes.is_empty(), "writes in a blank or membership entry");
            }
            encode_raft_log_record(&mut line, rec.index, raft.term, raft.leader, body);
        }
    }
    assert_eq!(line.pop(), Some(b'\n'));
    assert!(!line.contains(&b'\n'), "a record must be one line");
    let v: serde_json::Value = serde_json::from_slice(&line).expect("the encoding is JSON");
    assert!(v.is_object());
    let again = decode_log_record(&line).expect("the encoding decodes");
    assert_eq!(format!("{:?}", again.writes), format!("{:?}", rec.writes));
    assert_eq!(format!("{:?}", again.raft), format!("{:?}", rec.raft));
    assert_eq!(
        (again.index, again.seq, again.now),
        (rec.index, rec.seq, rec.now)
    );
}
