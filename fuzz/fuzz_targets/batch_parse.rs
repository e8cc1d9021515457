//! `batch_parse`: arbitrary bytes as a `POST /kv` body, through `parse_batch` with small limits.
//!
//! Oracle: it never panics, and an accepted batch has non-empty keys within the key limit and
//! without control characters, values within the value limit that are each one JSON value, no key
//! put twice, puts and deletes disjoint, and every TTL within 1..=315360000 s. Re-serializing the accepted batch as a body and
//! parsing that gives the same batch (values are stored compact, so they must be a fixed point).

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use twinkv::fuzzing::parse_batch;
use twinkv::store::Expiry;
use twinkv::Limits;

/// Small limits, so the fuzzer reaches the size checks with small inputs.
const LIMITS: Limits = Limits {
    max_key_bytes: 64,
    max_value_bytes: 1024,
    max_batch_bytes: 1 << 20,
};

fn assert_key(key: &str) {
    assert!(!key.is_empty(), "accepted an empty key");
    assert!(
        key.len() <= LIMITS.max_key_bytes,
        "accepted a {}-byte key",
        key.len()
    );
    assert!(
        !key.chars().any(char::is_control),
        "accepted a control character in {key:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok((puts, deletes)) = parse_batch(data, &LIMITS) else {
        return;
    };
    let mut put_keys = HashSet::new();
    for (key, value, _) in &puts {
        assert_key(key);
        assert!(
            value.json_len() <= LIMITS.max_value_bytes,
            "accepted a value over the limit"
        );
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(value.json()).is_ok(),
            "stored value is not one JSON value: {:?}",
            String::from_utf8_lossy(value.json())
        );
        assert!(put_keys.insert(&**key), "key {key:?} put twice");
    }
    for key in &deletes {
        assert_key(key);
        assert!(
            !put_keys.contains(&**key),
            "key {key:?} both put and deleted"
        );
    }

    // The accepted batch, written back as a body.
    let mut body = b"{\"put\":{".to_vec();
    for (i, (key, value, _)) in puts.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &**key).expect("writing into memory");
        body.push(b':');
        body.extend_from_slice(value.json());
    }
    body.extend_from_slice(b"},\"delete\":");
    let deleted: Vec<&str> = deletes.iter().map(|k| &**k).collect();
    serde_json::to_writer(&mut body, &deleted).expect("writing into memory");
    body.extend_from_slice(b",\"ttl\":{");
    let mut first = true;
    for (key, _, ttl) in &puts {
        if let Expiry::After(secs) = ttl {
            if !first {
                body.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut body, &**key).expect("writing into memory");
            body.extend_from_slice(format!(":{secs}").as_bytes());
        }
    }
    body.extend_from_slice(b"}}");
    let (puts2, deletes2) = match parse_batch(&body, &LIMITS) {
        Ok(batch) => batch,
        Err(e) => panic!(
            "the re-serialized batch is refused: {e}: {}",
            String::from_utf8_lossy(&body)
        ),
    };
    type Put = (std::sync::Arc<str>, twinkv::store::PendingValue, Expiry);
    let view = |p: &[Put]| -> Vec<(String, Vec<u8>, Expiry)> {
        p.iter()
            .map(|(k, v, t)| (k.to_string(), v.json().to_vec(), *t))
            .collect()
    };
    assert_eq!(view(&puts2), view(&puts), "puts changed in a round trip");
    assert_eq!(deletes2, deletes, "deletes changed in a round trip");
});
