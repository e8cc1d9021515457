//! A stored entry: key, version and ready-made JSON value, in one thin shared allocation.
//!
//! Both left-right copies, the snapshot replica and every in-flight GET hold the same
//! allocation, so an entry costs its bytes once however many structures point at it, and each
//! of those structures pays one pointer (8 bytes) per key. At 1 000 000 keys that is what keeps
//! two read copies plus a replica under the memory of one plain `HashMap<String, String>`.

use std::borrow::{Borrow, Cow};
use std::cmp::Ordering;
use std::fmt;

use triomphe::ThinArc;

/// The fixed part of an entry's allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    /// The `seq` of the write that stored this value; its ETag.
    version: u64,
    /// When the key expires, in milliseconds since the Unix epoch; 0: never.
    expires_at: u64,
    /// Bytes of key at the start of the slice; the JSON follows.
    key_len: u32,
}

/// One key with its value: immutable, cheap to clone, ordered and compared by key alone.
///
/// The value is compact JSON exactly as a snapshot or an `application/json` GET carries it.
#[derive(Clone)]
pub struct Entry(ThinArc<Header, u8>);

thread_local! {
    /// Where an entry's key and JSON are laid side by side before being copied into their one
    /// allocation (`ThinArc` copies a slice with one `memcpy`; filling it byte by byte from an
    /// iterator was a quarter of recovery time).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Scratch buffers above this are released after use rather than kept per thread.
const SCRATCH_KEEP: usize = 64 * 1024;

impl Entry {
    /// Builds an entry; `json` must be one valid, compact JSON value.
    pub fn new(key: &str, version: u64, json: &[u8]) -> Entry {
        Entry::expiring(key, version, json, None)
    }

    /// Builds an entry that expires at `expires_at` (milliseconds since the Unix epoch).
    pub fn expiring(key: &str, version: u64, json: &[u8], expires_at: Option<u64>) -> Entry {
        // Every decoder refuses keys over 64 KiB before building an entry.
        let key_len = u32::try_from(key.len()).expect("keys are far shorter than 4 GiB");
        let header = Header {
            version,
            expires_at: expires_at.unwrap_or(0),
            key_len,
        };
        SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            buf.clear();
            buf.extend_from_slice(key.as_bytes());
            buf.extend_from_slice(json);
            let entry = Entry(ThinArc::from_header_and_slice(header, &buf));
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            entry
        })
    }

    /// The key's bytes (valid UTF-8).
    pub fn key_bytes(&self) -> &[u8] {
        &self.0.slice[..self.0.header.header.key_len as usize]
    }

    /// The key.
    pub fn key(&self) -> &str {
        std::str::from_utf8(self.key_bytes()).expect("an entry's key is built from a str")
    }

    /// The `seq` of the write that stored this value; its ETag.
    pub fn version(&self) -> u64 {
        self.0.header.header.version
    }

    /// When the key expires (milliseconds since the Unix epoch), if it does.
    pub fn expires_at(&self) -> Option<u64> {
        match self.0.header.header.expires_at {
            0 => None,
            t => Some(t),
        }
    }

    /// Whether the key is past its expiry time at `now_ms`: then it is absent to every read.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at().is_some_and(|t| now_ms >= t)
    }

    /// The value as compact JSON.
    pub fn json(&self) -> &[u8] {
        &self.0.slice[self.0.header.header.key_len as usize..]
    }

    /// Whether the value is a JSON string (served as raw text unless JSON is asked for).
    pub fn is_string(&self) -> bool {
        self.json().first() == Some(&b'"')
    }

    /// The raw text of a string value, without quotes or escapes; `None` for other values.
    ///
    /// Most strings contain no escape, so this borrows the stored bytes instead of parsing them.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        let json = self.json();
        if !self.is_string() || json.len() < 2 {
            return None;
        }
        let inner = &json[1..json.len() - 1];
        if !inner.contains(&b'\\') {
            return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
        }
        serde_json::from_slice::<String>(json).ok().map(Cow::Owned)
    }

    /// Key, version and value together: what "the same entry" means to a test.
    pub fn parts(&self) -> (&str, u64, &[u8]) {
        (self.key(), self.version(), self.json())
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key_bytes() == other.key_bytes()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key_bytes().cmp(other.key_bytes())
    }
}

/// Lets an ordered set of entries be searched by key bytes (byte order is `str` order).
impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key_bytes()
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key())
            .field("version", &self.version())
            .field("expires_at", &self.expires_at())
            .field("json", &String::from_utf8_lossy(self.json()))
            .finish()
    }
}

/// A value encoded by an HTTP worker, waiting for the writer to give it a version.
#[derive(Debug)]
pub struct PendingValue(Vec<u8>);

impl PendingValue {
    /// Encodes a parsed JSON value compactly.
    pub fn from_json(value: &serde_json::Value) -> PendingValue {
        PendingValue(serde_json::to_vec(value).expect("serializing a JSON value into memory"))
    }

    /// Takes bytes that are already one compact JSON value (from the log, whose checksum and
    /// parser vouch for them).
    pub fn from_raw(json: &[u8]) -> PendingValue {
        PendingValue(json.to_vec())
    }

    /// Encodes a text body as a JSON string.
    pub fn from_text(text: &str) -> PendingValue {
        let mut buf = Vec::with_capacity(text.len() + 2);
        serde_json::to_writer(&mut buf, text).expect("serializing a string into memory");
        PendingValue(buf)
    }

    /// Length of the encoded JSON, the figure checked against `--max-value-bytes`.
    pub fn json_len(&self) -> usize {
        self.0.len()
    }

    /// The encoded JSON.
    pub fn json(&self) -> &[u8] {
        &self.0
    }

    /// Gives the value its key and version, frozen in one allocation.
    pub fn seal(self, key: &str, version: u64) -> Entry {
        Entry::new(key, version, &self.0)
    }

    /// Like [`PendingValue::seal`], with an expiry time.
    pub fn seal_expiring(self, key: &str, version: u64, expires_at: Option<u64>) -> Entry {
        Entry::expiring(key, version, &self.0, expires_at)
    }
}

/// What keeps `json`, one value serde_json has already parsed as valid JSON, from being a value
/// the HTTP API would store, if anything: whitespace outside strings (stored values are
/// compact, so a line break can never split a log line or an event), a number beyond a 64-bit
/// float (`1e999`: 400 over HTTP), or a `\u` escape of a UTF-16 surrogate without its pair
/// (not valid Unicode: 400 over HTTP). serde_json checks none of these in a `RawValue`, so the
/// log and snapshot decoders, which take values as raw bytes, ask this. A string is crossed
/// with one `memchr2` per escape, so a plain text value costs about one pass of `memchr`.
pub fn value_problem(json: &[u8]) -> Option<&'static str> {
    const SPACE: &str = "whitespace outside strings (a stored value is compact)";
    const SURROGATE: &str = "a lone surrogate escape (not valid Unicode)";
    let unit = |at: usize| {
        json.get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u16::from_str_radix(h, 16).ok())
    };
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(off) = memchr::memchr2(b'"', b'\\', &json[i..]) else {
                        return Some("an unterminated string");
                    };
                    let at = i + off;
                    if json[at] == b'"' {
                        i = at + 1;
                        break;
                    }
                    if json.get(at + 1) != Some(&b'u') {
                        // `\\`, `\"`, `\n`…: two bytes, whatever the second is.
                        i = at + 2;
                        continue;
                    }
                    match unit(at + 2) {
                        Some(0xD800..=0xDBFF) => {
                            let low = json.get(at + 6..at + 8) == Some(b"\\u".as_slice())
                                && matches!(unit(at + 8), Some(0xDC00..=0xDFFF));
                            if !low {
                                return Some(SURROGATE);
                            }
                            i = at + 12;
                        }
                        Some(0xDC00..=0xDFFF) | None => return Some(SURROGATE),
                        Some(_) => i = at + 6,
                    }
                }
            }
            b' ' | b'\n' | b'\r' | b'\t' => return Some(SPACE),
            b'-' | b'0'..=b'9' => {
                let len = json[i..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .unwrap_or(json.len() - i);
                let finite = std::str::from_utf8(&json[i..i + len])
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .is_some_and(f64::is_finite);
                if !finite {
                    return Some("a number beyond a 64-bit float");
                }
                i += len;
            }
            _ => i += 1,
        }
    }
    None
}

/// Now, in milliseconds since the Unix epoch: the clock expiry is measured by.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_value_the_http_api_would_refuse_is_named_and_one_it_stores_is_not() {
        let refused = [
            (r#""\ud800""#, "surrogate"),
            (r#""\udc00""#, "surrogate"),
            (r#""a\ud800b""#, "surrogate"),
            (r#""\ud800\n""#, "surrogate"),
            (r#""\ud800\u0041""#, "surrogate"),
            (r#""\ud800\ud800""#, "surrogate"),
            (r#"{"no\ud800w":0}"#, "surrogate"),
            (r#"["\uDBFF","\uDFFF"]"#, "surrogate"),
            ("{\n}", "whitespace"),
            ("[1, 2]", "whitespace"),
            ("{\"a\":\t1}", "whitespace"),
            ("1e840", "number"),
            ("[-1e999]", "number"),
            (r#"{"n":1E400}"#, "number"),
        ];
        for (v, why) in refused {
            let problem = value_problem(v.as_bytes());
            assert!(problem.is_some_and(|p| p.contains(why)), "{v}: {problem:?}");
            // What the HTTP API stores: parsed, then written compactly.
            let stored = serde_json::from_str::<serde_json::Value>(v)
                .map(|j| serde_json::to_vec(&j).unwrap());
            assert!(stored.is_err() || stored.unwrap() != v.as_bytes(), "{v}");
        }
        let stored = [
            r#""plain""#,
            r#""\ud83d\ude00""#,
            r#""\\ud800""#,
            r#""\\\ud83d\ude00""#,
            r#""\u00e9\n\"\\ with spaces""#,
            r#"{"k":"\uD83D\uDE00","n":[1,2.5,-3e10,0],"t":true,"z":null}"#,
            "12",
            "-0.5",
            "1.7976931348623157e308",
            "123456789012345678901234567890",
        ];
        for v in stored {
            assert_eq!(value_problem(v.as_bytes()), None, "{v}");
            assert!(serde_json::from_str::<serde_json::Value>(v).is_ok(), "{v}");
        }
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn key_version_and_json_round_trip() {
        let e = Entry::new("a/b", 42, br#"{"a":1}"#);
        assert_eq!(e.parts(), ("a/b", 42, &br#"{"a":1}"#[..]));
        assert!(!e.is_string());
        assert_eq!(e.text(), None);
        let empty = Entry::new("k", 1, b"");
        assert_eq!(empty.parts(), ("k", 1, &b""[..]));
    }

    #[test]
    fn text_borrows_plain_strings_and_unescapes_others() {
        let plain = PendingValue::from_text("héllo world").seal("k", 1);
        assert!(matches!(plain.text(), Some(Cow::Borrowed("héllo world"))));
        let escaped = PendingValue::from_text("a\"b\\c\n").seal("k", 2);
        assert_eq!(escaped.text().as_deref(), Some("a\"b\\c\n"));
        assert_eq!(escaped.version(), 2);
    }

    #[test]
    fn pending_json_is_compact() {
        let p = PendingValue::from_json(&json!({"b": [1, 2], "a": null}));
        assert_eq!(p.json(), br#"{"b":[1,2],"a":null}"#);
        assert_eq!(p.json_len(), p.json().len());
        assert_eq!(p.seal("k", 7).json(), br#"{"b":[1,2],"a":null}"#);
    }

    #[test]
    fn entries_order_and_compare_by_key_bytes() {
        let a = Entry::new("a", 9, b"1");
        let a2 = Entry::new("a", 1, b"2");
        let b = Entry::new("b", 1, b"1");
        assert_eq!(a, a2);
        assert!(a < b);
        let set: std::collections::BTreeSet<Entry> = [b.clone(), a.clone()].into_iter().collect();
        assert_eq!(set.get(&b"b"[..]).map(Entry::version), Some(1));
        assert!(Entry::new("é", 1, b"1") > Entry::new("z", 1, b"1"));
    }
}
