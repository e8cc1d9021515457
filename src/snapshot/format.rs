//! The snapshot document: encode, decode and checksum, as pure functions over bytes.
//!
//! A slot file holds one JSON object followed only by whitespace (the file is a memory map that
//! is longer than the document; the rest is spaces), so `jq` reads the file as it stands:
//!
//! ```text
//! {"format":"twinkv-snapshot/1","seq":7,"count":2,"written_at":"2026-11-27T21:34:53.123Z",
//!  "data":{"a":1,"b/c":"text"},"versions":{"a":3,"b/c":7},"log_index":5,
//!  "checksum":"crc32c:1b2e6f0a"}␠␠␠…
//! ```
//! (one line in the file; wrapped here.)
//!
//! - `format`: always `twinkv-snapshot/1`; anything else is refused.
//! - `seq`: the seq of the last write the image holds; recovery continues from it.
//! - `count`: the number of keys, equal to the entries of `data` and of `versions`.
//! - `written_at`: when the image was started, RFC 3339 in UTC.
//! - `data`: every key mapped to its value, in byte order of the key, values exactly as stored.
//! - `versions`: the same keys, in the same order, mapped to each key's version (its ETag). A
//!   parallel object, so `jq '.data["k"]'` prints the value itself.
//! - `expires`: the keys that have an expiry time, in the same order, mapped to it (milliseconds
//!   since the Unix epoch); left out when no key expires. Expired keys are kept until the writer
//!   removes them (a delete of its own seq, in the log), so the image is exactly the map.
//! - `log_index`: the index of the last log record the image holds; recovery replays the log
//!   from the next one. Absent in images written by 0.1, which had no log: then 0.
//! - `checksum`: `crc32c:` and eight lower-case hex digits, the CRC-32C of every byte of the
//!   document before `,"checksum"`. It is the last field, fixed in length, so a reader finds it
//!   from the end of the document and a torn or altered image never passes as valid.
//!
//! The document begins at offset 0. Everything after its closing `}` up to the end of the file
//! must be ASCII whitespace; the writer blanks whatever an older, longer image left there.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::store::{value_problem, Entries, Entry};

/// The `format` string of every image this version writes and reads.
pub const FORMAT: &str = "twinkv-snapshot/1";

/// What comes before the eight hex digits of the checksum.
const CHECKSUM_PREFIX: &[u8] = b",\"checksum\":\"crc32c:";
/// Length of the fixed tail: prefix, eight digits, closing quote and brace.
const TAIL_LEN: usize = CHECKSUM_PREFIX.len() + 8 + 2;
/// How much the encoder gathers before checksumming and handing bytes to the sink.
const CHUNK: usize = 256 * 1024;

/// Why bytes are not a valid image. Never a panic: every file content maps to one of these.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file has no bytes at all.
    #[error("the file is empty")]
    Empty,
    /// Only whitespace: a slot that was grown or blanked but never finished.
    #[error("the file holds no document, only whitespace")]
    NoDocument,
    /// The last non-blank bytes are not a checksum tail: a torn, truncated or zeroed write.
    #[error("the document is incomplete: no checksum at its end (byte {byte:#04x} at offset {offset}; torn or truncated write)")]
    Incomplete {
        /// The last byte that is not whitespace.
        byte: u8,
        /// Its offset in the file.
        offset: usize,
    },
    /// The stored checksum does not match the bytes: the image was altered or torn.
    #[error("checksum mismatch: stored crc32c:{stored:08x}, computed crc32c:{computed:08x}")]
    Checksum {
        /// The checksum the document claims.
        stored: u32,
        /// The checksum of the bytes as they are.
        computed: u32,
    },
    /// The document is not well-formed JSON of the expected shape.
    #[error("the document is not a valid snapshot")]
    Json(#[from] serde_json::Error),
    /// The format string names another version or another program.
    #[error("unknown format {0:?} (expected {FORMAT:?})")]
    Format(String),
    /// The fields disagree with each other.
    #[error("inconsistent document: {0}")]
    Inconsistent(String),
}

/// Where an image stands: the seq it holds and the last log record that brought it there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// The seq of the last write the image holds.
    pub seq: u64,
    /// The index of the last log record the image holds (0: none).
    pub log_index: u64,
}

/// A decoded image: what recovery loads.
#[derive(Debug)]
pub struct Image {
    /// The seq the image was taken at.
    pub seq: u64,
    /// The last log record the image holds.
    pub log_index: u64,
    /// When it was written (RFC 3339).
    pub written_at: String,
    /// Every entry: key, value and version.
    pub entries: Entries,
    /// Length of the document in bytes (the file may be longer: whitespace padding).
    pub len: usize,
    /// A cluster node's Raft state, as written (see the `raft` field above).
    pub raft: Option<String>,
}

/// Checksums what it is given in large chunks, then hands it on.
struct Out<'w, W: Write> {
    sink: &'w mut W,
    buf: Vec<u8>,
    crc: u32,
    len: u64,
}

impl<W: Write> Out<'_, W> {
    #[inline]
    fn maybe_flush(&mut self) -> io::Result<()> {
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
        self.sink.write_all(&self.buf)?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Writes `"key":` with the key escaped as a JSON string.
#[inline]
fn push_key(buf: &mut Vec<u8>, key: &str) {
    serde_json::to_writer(&mut *buf, key).expect("writing a string into memory");
    buf.push(b':');
}

/// Writes the whole image of `entries` at `seq` into `sink`; returns the document's length.
///
/// Values are copied as stored; only keys are escaped. The sink sees a few large writes.
pub fn encode<W: Write>(
    sink: &mut W,
    at: Position,
    written_at: &str,
    entries: &Entries,
) -> io::Result<u64> {
    encode_tagged(sink, at, written_at, entries, None)
}

/// [`encode`], with a cluster node's Raft state as the `raft` member (one JSON object).
pub fn encode_tagged<W: Write>(
    sink: &mut W,
    at: Position,
    written_at: &str,
    entries: &Entries,
    raft: Option<&str>,
) -> io::Result<u64> {
    let Position { seq, log_index } = at;
    let mut out = Out {
        sink,
        buf: Vec::with_capacity(CHUNK + 64 * 1024),
        crc: 0,
        len: 0,
    };
    write!(
        out.buf,
        "{{\"format\":\"{FORMAT}\",\"seq\":{seq},\"count\":{},\"written_at\":",
        entries.len()
    )?;
    serde_json::to_writer(&mut out.buf, written_at)?;
    out.buf.extend_from_slice(b",\"data\":{");
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.buf.push(b',');
        }
        push_key(&mut out.buf, entry.key());
        out.buf.extend_from_slice(entry.json());
        out.maybe_flush()?;
    }
    out.buf.extend_from_slice(b"},\"versions\":{");
    let mut digits = itoa::Buffer::new();
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.buf.push(b',');
        }
        push_key(&mut out.buf, entry.key());
        out.buf
            .extend_from_slice(digits.format(entry.version()).as_bytes());
        out.maybe_flush()?;
    }
    out.buf.push(b'}');
    let mut first = true;
    for entry in entries.iter().filter(|e| e.expires_at().is_some()) {
        out.buf
            .extend_from_slice(if first { b",\"expires\":{" } else { b"," });
        first = false;
        push_key(&mut out.buf, entry.key());
        let t = entry.expires_at().unwrap_or_default();
        out.buf.extend_from_slice(digits.format(t).as_bytes());
        out.maybe_flush()?;
    }
    if !first {
        out.buf.push(b'}');
    }
    write!(out.buf, ",\"log_index\":{log_index}")?;
    if let Some(raft) = raft {
        out.buf.extend_from_slice(b",\"raft\":");
        out.buf.extend_from_slice(raft.as_bytes());
    }
    out.flush()?;
    let tail = format!(
        "{}{:08x}\"}}",
        std::str::from_utf8(CHECKSUM_PREFIX).expect("ASCII"),
        out.crc
    );
    debug_assert_eq!(tail.len(), TAIL_LEN);
    out.sink.write_all(tail.as_bytes())?;
    Ok(out.len + TAIL_LEN as u64)
}

/// Writes `entries` as one JSON object of key to value (what `inspect --dump` prints).
///
/// Keys past their expiry time at `now_ms` are left out: they are absent to every read.
pub fn dump<W: Write + ?Sized>(sink: &mut W, entries: &Entries, now_ms: u64) -> io::Result<()> {
    let mut buf = Vec::with_capacity(CHUNK + 64 * 1024);
    buf.push(b'{');
    for (i, entry) in entries.iter().filter(|e| !e.expired(now_ms)).enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        push_key(&mut buf, entry.key());
        buf.extend_from_slice(entry.json());
        if buf.len() >= CHUNK {
            sink.write_all(&buf)?;
            buf.clear();
        }
    }
    buf.extend_from_slice(b"}\n");
    sink.write_all(&buf)
}

/// Whether `b` may pad a document (JSON's whitespace).
pub fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// The document inside `bytes` (a whole slot file), once its checksum is verified.
fn verified(bytes: &[u8]) -> Result<&[u8], FormatError> {
    if bytes.is_empty() {
        return Err(FormatError::Empty);
    }
    let last = bytes
        .iter()
        .rposition(|&b| !is_blank(b))
        .ok_or(FormatError::NoDocument)?;
    let doc = &bytes[..=last];
    let incomplete = || FormatError::Incomplete {
        byte: bytes[last],
        offset: last,
    };
    if doc.len() < TAIL_LEN {
        return Err(incomplete());
    }
    let (body, tail) = doc.split_at(doc.len() - TAIL_LEN);
    if !tail.starts_with(CHECKSUM_PREFIX) || !tail.ends_with(b"\"}") {
        return Err(incomplete());
    }
    let hex = std::str::from_utf8(&tail[CHECKSUM_PREFIX.len()..CHECKSUM_PREFIX.len() + 8])
        .map_err(|_| incomplete())?;
    let stored = u32::from_str_radix(hex, 16).map_err(|_| incomplete())?;
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(FormatError::Checksum { stored, computed });
    }
    Ok(doc)
}

/// What an image says of itself, read without building it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The seq the image was taken at.
    pub seq: u64,
    /// Its number of keys.
    pub count: u64,
    /// When it was written.
    pub written_at: String,
    /// Length of the document in bytes.
    pub len: usize,
}

/// Verifies the checksum and reads the header fields, skipping over the data: enough to rank
/// slots by seq, at a fraction of the cost of [`decode`]. Only `decode` checks the entries.
pub fn peek(bytes: &[u8]) -> Result<Header, FormatError> {
    #[derive(Deserialize)]
    struct Fields<'a> {
        #[serde(borrow)]
        format: Key<'a>,
        seq: u64,
        count: u64,
        #[serde(borrow)]
        written_at: Key<'a>,
    }
    let doc = verified(bytes)?;
    if let Some(header) = standard_header(doc) {
        return Ok(header);
    }
    let f: Fields<'_> = serde_json::from_slice(doc)?;
    if f.format.0 != FORMAT {
        return Err(FormatError::Format(f.format.0.into_owned()));
    }
    Ok(Header {
        seq: f.seq,
        count: f.count,
        written_at: f.written_at.0.into_owned(),
        len: doc.len(),
    })
}

/// What the first bytes of a file laid out as [`encode`] writes it claim: seq, count and time
/// (`len` is 0: unknown). Not verified: use it to choose which file to [`decode`] first.
pub fn claimed_header(head: &[u8]) -> Option<Header> {
    standard_header(head).map(|h| Header { len: 0, ..h })
}

/// Reads the header of a document laid out as [`encode`] writes it, without parsing the rest;
/// `None` for any other layout (a hand-edited file), which then takes the general path.
fn standard_header(doc: &[u8]) -> Option<Header> {
    fn number(b: &[u8]) -> Option<(u64, &[u8])> {
        let end = b.iter().position(|c| !c.is_ascii_digit())?;
        let n = std::str::from_utf8(&b[..end]).ok()?.parse().ok()?;
        Some((n, &b[end..]))
    }
    let rest = doc.strip_prefix(format!("{{\"format\":\"{FORMAT}\",\"seq\":").as_bytes())?;
    let (seq, rest) = number(rest)?;
    let (count, rest) = number(rest.strip_prefix(b",\"count\":")?)?;
    let rest = rest.strip_prefix(b",\"written_at\":\"")?;
    let end = rest.iter().position(|&c| c == b'"' || c == b'\\')?;
    let written_at = std::str::from_utf8(&rest[..end]).ok()?.to_string();
    rest[end..].strip_prefix(b"\",\"data\":")?;
    Some(Header {
        seq,
        count,
        written_at,
        len: doc.len(),
    })
}

/// Validates `bytes` (a whole slot file) and decodes the image it holds.
pub fn decode(bytes: &[u8]) -> Result<Image, FormatError> {
    let doc = verified(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(doc);
    let parsed = DocSeed { len: doc.len() }.deserialize(&mut de)?;
    de.end()?;
    if parsed.format.0 != FORMAT {
        return Err(FormatError::Format(parsed.format.0.into_owned()));
    }
    let inconsistent = |s: String| Err(FormatError::Inconsistent(s));
    if parsed.count != parsed.data.0.len() as u64 {
        return inconsistent(format!(
            "count is {} but data holds {} keys",
            parsed.count,
            parsed.data.0.len()
        ));
    }
    if parsed.versions.0.len() != parsed.data.0.len() {
        return inconsistent(format!(
            "data holds {} keys but versions holds {}",
            parsed.data.0.len(),
            parsed.versions.0.len()
        ));
    }
    if time::OffsetDateTime::parse(
        &parsed.written_at.0,
        &time::format_description::well_known::Rfc3339,
    )
    .is_err()
    {
        return inconsistent(format!(
            "written_at {:?} is not an RFC 3339 time",
            parsed.written_at.0
        ));
    }
    let mut sorted = Vec::with_capacity(parsed.data.0.len());
    let mut prev: Option<&str> = None;
    // `expires` lists a subset of the keys in the same order: walk it beside `data`.
    let mut expiring = parsed.expires.0.iter().peekable();
    for ((key, raw), (vkey, version)) in parsed.data.0.iter().zip(&parsed.versions.0) {
        let key: &str = &key.0;
        if key != &*vkey.0 {
            return inconsistent(format!(
                "versions names {:?} where data has {key:?}",
                vkey.0
            ));
        }
        if key.is_empty() {
            return inconsistent("an empty key".into());
        }
        if prev.is_some_and(|p| p >= key) {
            return inconsistent(format!("key {key:?} is out of order or repeated"));
        }
        if *version == 0 || *version > parsed.seq {
            return inconsistent(format!(
                "key {key:?} has version {version}, outside 1..={}",
                parsed.seq
            ));
        }
        if key.len() > crate::defaults::MAX_KEY_BYTES_LIMIT {
            return inconsistent(format!("a key of {} bytes", key.len()));
        }
        prev = Some(key);
        let expires_at = match expiring.peek() {
            Some((k, t)) if *k.0 == *key => {
                let t = *t;
                expiring.next();
                if t == 0 {
                    return inconsistent(format!("key {key:?} expires at 0"));
                }
                Some(t)
            }
            _ => None,
        };
        let json = raw.get().as_bytes();
        if let Some(problem) = value_problem(json) {
            // The HTTP API refuses (or compacts) such a value, so no server wrote it.
            return inconsistent(format!("the value of key {key:?} has {problem}"));
        }
        sorted.push(Entry::expiring(key, *version, json, expires_at));
    }
    if let Some((k, _)) = expiring.next() {
        return inconsistent(format!(
            "expires names {:?}, which is not in data or not in its order",
            k.0
        ));
    }
    if parsed.raft.is_none() && parsed.log_index > parsed.seq {
        return inconsistent(format!(
            "log_index {} is past seq {}: every record spends a seq",
            parsed.log_index, parsed.seq
        ));
    }
    Ok(Image {
        seq: parsed.seq,
        log_index: parsed.log_index,
        written_at: parsed.written_at.0.into_owned(),
        entries: sorted.into_iter().collect(),
        len: doc.len(),
        raft: parsed.raft.map(|r| r.get().to_owned()),
    })
}

/// The document as parsed: borrowed wherever the bytes allow.
struct Doc<'a> {
    format: Key<'a>,
    seq: u64,
    count: u64,
    written_at: Key<'a>,
    data: Pairs<'a, &'a RawValue>,
    versions: Pairs<'a, u64>,
    expires: Pairs<'a, u64>,
    log_index: u64,
    raft: Option<&'a RawValue>,
}

/// Parses a [`Doc`], sizing the two big vectors from `count` once it has been read (capped by
/// what the input could possibly hold), so a large image is parsed into two exact allocations
/// instead of a trail of doubled and freed ones that would leave the heap fragmented.
struct DocSeed {
    /// Bytes of the document: no entry takes fewer than six, which bounds any capacity.
    len: usize,
}

impl<'de> DeserializeSeed<'de> for DocSeed {
    type Value = Doc<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Doc<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocSeed {
    type Value = Doc<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a snapshot document (an object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
        let (mut format, mut seq, mut count, mut written_at) = (None, None, None, None);
        let (mut data, mut versions, mut log_index) = (None, None, None);
        let (mut expires, mut raft) = (None, None);
        while let Some(field) = map.next_key::<Key<'de>>()? {
            let cap = count.map_or(0, |c: u64| (c as usize).min(self.len / 6));
            // A repeated field is refused, as a derived parser would: keeping either copy
            // would let the header readers (`peek`) and this one disagree about the image.
            fn once<T, E: de::Error>(slot: &Option<T>, name: &'static str) -> Result<(), E> {
                match slot {
                    Some(_) => Err(E::duplicate_field(name)),
                    None => Ok(()),
                }
            }
            match &*field.0 {
                "format" => {
                    once(&format, "format")?;
                    format = Some(map.next_value::<Key<'de>>()?);
                }
                "seq" => {
                    once(&seq, "seq")?;
                    seq = Some(map.next_value()?);
                }
                "count" => {
                    once(&count, "count")?;
                    count = Some(map.next_value()?);
                }
                "written_at" => {
                    once(&written_at, "written_at")?;
                    written_at = Some(map.next_value::<Key<'de>>()?);
                }
                "data" => {
                    once(&data, "data")?;
                    data = Some(map.next_value_seed(PairsSeed::new(cap))?);
                }
                "versions" => {
                    once(&versions, "versions")?;
                    versions = Some(map.next_value_seed(PairsSeed::new(cap))?);
                }
                "log_index" => {
                    once(&log_index, "log_index")?;
                    log_index = Some(map.next_value()?);
                }
                "expires" => {
                    once(&expires, "expires")?;
                    expires = Some(map.next_value_seed(PairsSeed::new(0))?);
                }
                "raft" => {
                    once(&raft, "raft")?;
                    let v: &'de RawValue = map.next_value()?;
                    if !v.get().starts_with('{') {
                        return Err(de::Error::custom("raft is not an object"));
                    }
                    raft = Some(v);
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(Doc {
            format: format.ok_or_else(|| de::Error::missing_field("format"))?,
            seq: seq.ok_or_else(|| de::Error::missing_field("seq"))?,
            count: count.ok_or_else(|| de::Error::missing_field("count"))?,
            written_at: written_at.ok_or_else(|| de::Error::missing_field("written_at"))?,
            data: data.ok_or_else(|| de::Error::missing_field("data"))?,
            versions: versions.ok_or_else(|| de::Error::missing_field("versions"))?,
            expires: expires.unwrap_or(Pairs(Vec::new())),
            log_index: log_index.unwrap_or(0),
            raft,
        })
    }
}

/// A JSON string borrowed from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// A JSON object kept as its entries in document order (duplicates and order are checked after).
struct Pairs<'a, T>(Vec<(Key<'a>, T)>);

/// Parses a [`Pairs`] into a vector of a given capacity.
struct PairsSeed<T> {
    capacity: usize,
    item: PhantomData<T>,
}

impl<T> PairsSeed<T> {
    fn new(capacity: usize) -> Self {
        PairsSeed {
            capacity,
            item: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for PairsSeed<T> {
    type Value = Pairs<'de, T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for PairsSeed<T> {
    type Value = Pairs<'de, T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(self.capacity);
        while let Some(entry) = map.next_entry::<Key<'de>, T>()? {
            out.push(entry);
        }
        Ok(Pairs(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PendingValue;
    use proptest::prelude::*;

    const AT: &str = "2026-11-27T21:34:53.123Z";

    fn entries(pairs: &[(&str, &str, u64)]) -> Entries {
        pairs
            .iter()
            .map(|(k, json, v)| Entry::new(k, *v, json.as_bytes()))
            .collect()
    }

    /// Entries compare by key alone; a round trip must keep versions and values too.
    fn parts(e: &Entries) -> Vec<(String, u64, Vec<u8>)> {
        e.iter()
            .map(|e| (e.key().to_string(), e.version(), e.json().to_vec()))
            .collect()
    }

    fn image(e: &Entries, seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let len = encode(&mut out, Position { seq, log_index: 0 }, AT, e).unwrap();
        assert_eq!(len as usize, out.len());
        out
    }

    #[test]
    fn encodes_readable_json_with_a_checksum() {
        let e = entries(&[("a", "1", 3), ("b/c", "\"t\\\"x\"", 7)]);
        let bytes = image(&e, 7);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["format"], FORMAT);
        assert_eq!(v["seq"], 7);
        assert_eq!(v["count"], 2);
        assert_eq!(v["data"]["b/c"], "t\"x");
        assert_eq!(v["versions"]["a"], 3);
        assert!(v["checksum"].as_str().unwrap().starts_with("crc32c:"));
        let img = decode(&bytes).unwrap();
        assert_eq!(img.seq, 7);
        assert_eq!(parts(&img.entries), parts(&e));
        assert_eq!(img.len, bytes.len());
    }

    #[test]
    fn a_cluster_image_carries_its_raft_state_and_may_run_its_index_past_its_seq() {
        let e = entries(&[("a", "1", 2)]);
        let raft = r#"{"last_log_id":{"leader_id":{"term":2,"node_id":1},"index":9}}"#;
        let at = Position {
            seq: 2,
            log_index: 9,
        };
        let mut bytes = Vec::new();
        let len = encode_tagged(&mut bytes, at, AT, &e, Some(raft)).unwrap();
        assert_eq!(len as usize, bytes.len());
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["raft"]["last_log_id"]["index"], 9);
        let img = decode(&bytes).unwrap();
        assert_eq!(img.raft.as_deref(), Some(raft));
        assert_eq!((img.seq, img.log_index), (2, 9));
        assert_eq!(peek(&bytes).unwrap().seq, 2);
        // Raft's own entries spend no seq, so only a cluster image may stand past its seq.
        let mut plain = Vec::new();
        encode(&mut plain, at, AT, &e).unwrap();
        assert!(matches!(decode(&plain), Err(FormatError::Inconsistent(_))));
        assert_eq!(decode(&image(&e, 2)).unwrap().raft, None);
        // The field is one object, given once.
        let body = r#"{"format":"twinkv-snapshot/1","seq":0,"count":0,"written_at":"2026-11-27T21:34:53Z","data":{},"versions":{},"raft":"#;
        assert!(decode(&sealed(&format!("{body}[1]"))).is_err());
        assert!(decode(&sealed(&format!("{body}{{}},\"raft\":{{}}"))).is_err());
        assert!(decode(&sealed(&format!("{body}{{}}"))).is_ok());
    }

    #[test]
    fn padding_is_allowed_but_not_garbage() {
        let e = entries(&[("k", "null", 1)]);
        let mut bytes = image(&e, 1);
        bytes.extend_from_slice(b"   \n\t  ");
        assert!(decode(&bytes).is_ok());
        bytes.push(0);
        assert!(matches!(
            decode(&bytes),
            Err(FormatError::Incomplete { byte: 0, .. })
        ));
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_detected() {
        let e = entries(&[("alpha", "[1,2,3]", 2), ("beta", "{\"x\":\"y\"}", 5)]);
        let bytes = image(&e, 5);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flipped byte {i}");
        }
    }

    /// `body` (a document without its checksum field and closing brace), given both.
    fn sealed(body: &str) -> Vec<u8> {
        format!(
            "{body},\"checksum\":\"crc32c:{:08x}\"}}",
            crc32c::crc32c(body.as_bytes())
        )
        .into_bytes()
    }

    #[test]
    fn peek_reads_the_header_of_standard_and_hand_made_layouts() {
        let e = entries(&[("a", "1", 3), ("b", "2", 4)]);
        let bytes = image(&e, 4);
        let h = peek(&bytes).unwrap();
        assert_eq!((h.seq, h.count, h.len), (4, 2, bytes.len()));
        assert_eq!(h.written_at, AT);
        // Fields in another order, as a hand edit could leave them: the general path.
        let body = format!("{{\"seq\":4,\"format\":\"{FORMAT}\",\"written_at\":\"{AT}\",\"count\":2,\"data\":{{}},\"versions\":{{}}");
        let doc = sealed(&body);
        let h2 = peek(&doc).unwrap();
        assert_eq!((h2.seq, h2.count), (4, 2));
        assert!(standard_header(&doc).is_none());
        let mut bad = bytes.clone();
        bad[30] ^= 1;
        assert!(peek(&bad).is_err());
    }

    #[test]
    fn a_repeated_field_is_refused_by_every_reader() {
        // Found by fuzzing (fuzz/regressions/snapshot_decode): a second `seq` after `versions`
        // used to win in `decode` while the header readers took the first, so `inspect` and
        // start-up disagreed about which slot is newest.
        let body = format!("{{\"format\":\"{FORMAT}\",\"seq\":1,\"count\":1,\"written_at\":\"{AT}\",\"data\":{{\"k\":\"x\"}},\"versions\":{{\"k\":2}},\"seq\":2");
        let err = crate::Chain(&decode(&sealed(&body)).unwrap_err()).to_string();
        assert!(err.contains("duplicate field `seq`"), "{err}");
        for file in std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/snapshot_decode"
        ))
        .into_iter()
        .flatten()
        .flatten()
        {
            let bytes = std::fs::read(file.path()).unwrap();
            assert!(decode(&bytes).is_err(), "{}", file.path().display());
        }
    }

    #[test]
    fn a_value_no_server_writes_is_refused() {
        // serde_json checks only a raw value's syntax: a lone surrogate escape, whitespace
        // outside strings and a number beyond f64 pass it, and the HTTP API stores none of them.
        for (value, why) in [
            (r#""\ud800""#, "lone surrogate"),
            ("{\n}", "whitespace"),
            ("1e999", "beyond a 64-bit float"),
        ] {
            let body = format!("{{\"format\":\"{FORMAT}\",\"seq\":1,\"count\":1,\"written_at\":\"{AT}\",\"data\":{{\"k\":{value}}},\"versions\":{{\"k\":1}}");
            let err = crate::Chain(&decode(&sealed(&body)).unwrap_err()).to_string();
            assert!(err.contains(why), "{value}: {err}");
        }
    }

    #[test]
    fn zeroed_and_blank_files_are_named() {
        assert!(matches!(decode(b""), Err(FormatError::Empty)));
        assert!(matches!(decode(b"    "), Err(FormatError::NoDocument)));
        assert!(matches!(
            decode(&[0u8; 64]),
            Err(FormatError::Incomplete { .. })
        ));
    }

    #[test]
    fn an_empty_map_round_trips() {
        let e = Entries::new();
        let img = decode(&image(&e, 0)).unwrap();
        assert!(img.entries.is_empty());
    }

    #[test]
    fn inconsistent_documents_are_refused() {
        // A well-checksummed document whose fields disagree (as a hand edit could make).
        let head = format!("{{\"format\":\"{FORMAT}\",\"seq\":2,");
        let cases = [
            format!("{head}\"count\":2,\"written_at\":\"{AT}\",\"data\":{{\"a\":1}},\"versions\":{{\"a\":1}}"),
            format!("{head}\"count\":1,\"written_at\":\"{AT}\",\"data\":{{\"a\":1}},\"versions\":{{\"b\":1}}"),
            format!("{head}\"count\":1,\"written_at\":\"{AT}\",\"data\":{{\"a\":1}},\"versions\":{{\"a\":3}}"),
            format!("{head}\"count\":2,\"written_at\":\"{AT}\",\"data\":{{\"b\":1,\"a\":1}},\"versions\":{{\"b\":1,\"a\":1}}"),
            format!("{head}\"count\":1,\"written_at\":\"yesterday\",\"data\":{{\"a\":1}},\"versions\":{{\"a\":1}}"),
            "{\"format\":\"other/1\",\"seq\":1,\"count\":0,\"written_at\":\"2026-11-27T21:34:53Z\",\"data\":{},\"versions\":{}".to_string(),
        ];
        for body in cases {
            assert!(decode(&sealed(&body)).is_err(), "{body}");
        }
        let ok = format!("{head}\"count\":1,\"written_at\":\"{AT}\",\"data\":{{\"a\":1}},\"versions\":{{\"a\":2}}");
        assert!(decode(&sealed(&ok)).is_ok());
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".*".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_map_round_trips(
            map in prop::collection::btree_map(".{1,12}", (json_value(), 1u64..1000), 0..40)
        ) {
            let e: Entries = map
                .iter()
                .map(|(k, (v, ver))| PendingValue::from_json(v).seal(k, *ver))
                .collect();
            let bytes = image(&e, 1000);
            let img = decode(&bytes).unwrap();
            prop_assert_eq!(img.seq, 1000);
            prop_assert_eq!(parts(&img.entries), parts(&e));
            // And jq's view: the data object holds each value as given.
            let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            for (k, (v, _)) in &map {
                prop_assert_eq!(&doc["data"][k.as_str()], v);
            }
        }
    }
}
