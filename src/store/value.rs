//! A stored value: its version and its ready-made JSON bytes, in one shared allocation.
//!
//! Both left-right copies, the snapshot replica and every in-flight GET hold the same `Arc`, so a
//! value costs its bytes once however many structures point at it. The version lives in the same
//! allocation (its first eight bytes) rather than beside the `Arc`, which keeps each map entry at
//! two pointers and a key at 1 000 000 keys well under the memory of a plain `HashMap<String,
//! String>` server.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Bytes before the JSON: the little-endian version.
const HEADER: usize = 8;

/// A value as the store keeps it: immutable, cheap to clone, already encoded as compact JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct Value(Arc<[u8]>);

impl Value {
    /// Wraps `json`, which the caller guarantees is one valid JSON value, with its `version`.
    pub fn new(version: u64, json: &[u8]) -> Value {
        let mut buf = Vec::with_capacity(HEADER + json.len());
        buf.extend_from_slice(&version.to_le_bytes());
        buf.extend_from_slice(json);
        Value(Arc::from(buf))
    }

    /// The `seq` of the write that stored this value; its ETag.
    pub fn version(&self) -> u64 {
        let mut v = [0u8; HEADER];
        v.copy_from_slice(&self.0[..HEADER]);
        u64::from_le_bytes(v)
    }

    /// The value as compact JSON, exactly as a snapshot or an `application/json` GET carries it.
    pub fn json(&self) -> &[u8] {
        &self.0[HEADER..]
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
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("version", &self.version())
            .field("json", &String::from_utf8_lossy(self.json()))
            .finish()
    }
}

/// A value encoded by an HTTP worker, waiting for the writer to give it a version.
///
/// The bytes are laid out as a [`Value`]'s with the version left zero, so sealing it writes eight
/// bytes in place: the writer thread never copies a value body.
#[derive(Debug)]
pub struct PendingValue(Vec<u8>);

impl PendingValue {
    /// Encodes a parsed JSON value compactly.
    pub fn from_json(value: &serde_json::Value) -> PendingValue {
        let mut buf = vec![0u8; HEADER];
        serde_json::to_writer(&mut buf, value).expect("serializing a JSON value into memory");
        PendingValue(buf)
    }

    /// Encodes a text body as a JSON string.
    pub fn from_text(text: &str) -> PendingValue {
        let mut buf = Vec::with_capacity(HEADER + text.len() + 2);
        buf.extend_from_slice(&[0u8; HEADER]);
        serde_json::to_writer(&mut buf, text).expect("serializing a string into memory");
        PendingValue(buf)
    }

    /// Length of the encoded JSON, the figure checked against `--max-value-bytes`.
    pub fn json_len(&self) -> usize {
        self.0.len() - HEADER
    }

    /// The encoded JSON.
    pub fn json(&self) -> &[u8] {
        &self.0[HEADER..]
    }

    /// Gives the value its version and freezes it.
    pub fn seal(mut self, version: u64) -> Value {
        self.0[..HEADER].copy_from_slice(&version.to_le_bytes());
        Value(Arc::from(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn version_and_json_round_trip() {
        let v = Value::new(42, br#"{"a":1}"#);
        assert_eq!(v.version(), 42);
        assert_eq!(v.json(), br#"{"a":1}"#);
        assert!(!v.is_string());
        assert_eq!(v.text(), None);
    }

    #[test]
    fn text_borrows_plain_strings_and_unescapes_others() {
        let plain = PendingValue::from_text("héllo world").seal(1);
        assert!(matches!(plain.text(), Some(Cow::Borrowed("héllo world"))));
        let escaped = PendingValue::from_text("a\"b\\c\n").seal(2);
        assert_eq!(escaped.text().as_deref(), Some("a\"b\\c\n"));
        assert_eq!(escaped.version(), 2);
    }

    #[test]
    fn pending_json_is_compact() {
        let p = PendingValue::from_json(&json!({"b": [1, 2], "a": null}));
        assert_eq!(p.json(), br#"{"b":[1,2],"a":null}"#);
        assert_eq!(p.json_len(), p.json().len());
        assert_eq!(p.seal(7).json(), br#"{"b":[1,2],"a":null}"#);
    }
}
