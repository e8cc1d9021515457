//! `snapshot_decode`: arbitrary bytes as a slot file, through `decode_snapshot`.
//!
//! Each input is decoded twice:
//!
//! 1. As it stands, which exercises the padding, tail and checksum checks.
//! 2. Resealed: cut at its last `,"checksum":"crc32c:` (if any) and given a correct checksum tail.
//!    libFuzzer cannot forge a CRC-32C spelled in hex, so without this almost every mutation of
//!    the JSON body would die at the checksum and the parser behind it would go unfuzzed.
//!
//! Oracle: `decode_snapshot`, `peek` and `claimed_header` never panic, and an accepted image
//!
//! - is consistent: only blanks after the document, non-empty sorted keys, versions in `1..=seq`;
//! - is what the cheap readers recovery ranks slots by say it is: `peek` succeeds with the same
//!   seq, count, `written_at` and length, and `claimed_header` is `None` or agrees (recovery
//!   decodes the slot with the highest claimed seq first, so a wrong claim loads an older image);
//! - re-encodes with `encode` into an image that decodes to the same seq, `written_at` and
//!   entries, and re-encodes to the same bytes again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use twinkv::fuzzing::decode_snapshot;
use twinkv::snapshot::format::{claimed_header, encode, is_blank, peek, Image, Position};

/// What precedes the eight hex digits of the checksum (as in `snapshot/format.rs`).
const CHECKSUM_PREFIX: &[u8] = b",\"checksum\":\"crc32c:";

/// `data` cut before its last checksum prefix, then given a correct checksum tail.
fn reseal(data: &[u8]) -> Vec<u8> {
    let body = data
        .windows(CHECKSUM_PREFIX.len())
        .rposition(|w| w == CHECKSUM_PREFIX)
        .map_or(data, |at| &data[..at]);
    let mut out = body.to_vec();
    out.extend_from_slice(CHECKSUM_PREFIX);
    out.extend_from_slice(format!("{:08x}\"}}", crc32c::crc32c(body)).as_bytes());
    out
}

fn encoded(image: &Image) -> Vec<u8> {
    let mut out = Vec::new();
    let len = encode(&mut out, Position { seq: image.seq, log_index: image.log_index }, &image.written_at, &image.entries)
        .expect("encoding into a Vec cannot fail");
    assert_eq!(len as usize, out.len(), "encode reported a wrong length");
    out
}

fn check(file: &[u8]) {
    let peeked = peek(file);
    let claimed = claimed_header(file);
    let Ok(image) = decode_snapshot(file) else {
        return;
    };
    let header = match peeked {
        Ok(h) => h,
        Err(e) => panic!("decode accepts the image but peek refuses it: {e}"),
    };
    let count = image.entries.len() as u64;
    assert_eq!(
        (header.seq, header.count, &*header.written_at, header.len),
        (image.seq, count, &*image.written_at, image.len),
        "peek disagrees with decode"
    );
    if let Some(c) = claimed {
        assert_eq!(
            (c.seq, c.count, &*c.written_at),
            (image.seq, count, &*image.written_at),
            "claimed_header disagrees with decode"
        );
    }
    assert!(image.len <= file.len(), "document longer than the file");
    assert!(
        file[image.len..].iter().all(|&b| is_blank(b)),
        "accepted a file with non-blank bytes after the document"
    );
    let mut prev: Option<&str> = None;
    for entry in &image.entries {
        let key = entry.key();
        assert!(!key.is_empty(), "accepted an empty key");
        assert!(prev < Some(key), "keys out of order");
        prev = Some(key);
        assert!(
            (1..=image.seq).contains(&entry.version()),
            "version {} outside 1..={}",
            entry.version(),
            image.seq
        );
    }

    let again = encoded(&image);
    let back = match decode_snapshot(&again) {
        Ok(back) => back,
        Err(e) => panic!("the re-encoded image is refused: {e}"),
    };
    assert_eq!(back.seq, image.seq, "seq changed in a round trip");
    assert_eq!(back.written_at, image.written_at, "written_at changed");
    // `Entry`'s `==` compares keys only; compare every part.
    let parts = |i: &Image| -> Vec<(String, u64, Vec<u8>)> {
        i.entries
            .iter()
            .map(|e| (e.key().to_owned(), e.version(), e.json().to_vec()))
            .collect()
    };
    assert_eq!(
        parts(&back),
        parts(&image),
        "entries changed in a round trip"
    );
    assert_eq!(back.len, again.len());
    assert_eq!(encoded(&back), again, "encoding is not a fixed point");
}

fuzz_target!(|data: &[u8]| {
    check(data);
    check(&reseal(data));
});
