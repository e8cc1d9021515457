//! Deterministic data shared by the benches: keys, values, a random generator and whole
//! snapshot images.
//!
//! Keys are `key00000000`, `key00000001`, … and every value is a 98-character text, 100 bytes
//! once stored as a JSON string: the same scheme `benches/http.sh` preloads and
//! `benches/pipeline.lua` asks for. The store is filled by decoding an image built here, the
//! document the contract describes, so the benches use only the store's public entry points
//! (`decode`, `Initial`, `Store::start`), whatever the map's entries look like inside.

// Each bench includes this file and uses a different part of it.
#![allow(dead_code)]

use std::fmt::Write as _;

/// Length of every value's JSON (a string: 98 characters and two quotes).
pub const VALUE_BYTES: usize = 100;
/// The `written_at` of every image, so two runs build the same bytes.
pub const WRITTEN_AT: &str = "2026-01-01T00:00:00.000Z";
/// Seed of every generator (each thread or bench adds its own number).
pub const SEED: u64 = 0x7769_6e6b_7620_6231;

/// SplitMix64: tiny, fast and deterministic; good enough to pick keys uniformly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (Lemire's multiply-shift: no division on the hot path).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// The `i`th key.
pub fn key(i: usize) -> String {
    format!("key{i:08}")
}

/// A 98-character text (100 bytes as JSON) that names its key and the round that wrote it.
pub fn text(i: usize, round: u64) -> String {
    let head = format!("{i:08}-{round:08}-");
    format!("{head}{}", "v".repeat(VALUE_BYTES - 2 - head.len()))
}

/// A valid snapshot document of keys `0..n`, key `i` at version `i + 1`, taken at seq `n`.
pub fn image(n: usize) -> Vec<u8> {
    let mut doc = String::with_capacity(n * (VALUE_BYTES + 40) + 256);
    write!(
        doc,
        "{{\"format\":\"twinkv-snapshot/1\",\"seq\":{n},\"count\":{n},\
         \"written_at\":\"{WRITTEN_AT}\",\"data\":{{"
    )
    .expect("writing into a String");
    for i in 0..n {
        let sep = if i > 0 { "," } else { "" };
        write!(doc, "{sep}\"{}\":\"{}\"", key(i), text(i, 0)).expect("writing into a String");
    }
    doc.push_str("},\"versions\":{");
    for i in 0..n {
        let sep = if i > 0 { "," } else { "" };
        write!(doc, "{sep}\"{}\":{}", key(i), i + 1).expect("writing into a String");
    }
    doc.push('}');
    let crc = crc32c::crc32c(doc.as_bytes());
    write!(doc, ",\"checksum\":\"crc32c:{crc:08x}\"}}").expect("writing into a String");
    doc.into_bytes()
}
