//! `key_decode`: arbitrary UTF-8 text as a URL path key or a query string / form body.
//!
//! Oracle, for both `percent_decode` modes (path: `+` is literal; form: `+` is a space):
//!
//! - it never panics and agrees (`Ok` text or `Err`) with `reference`, a separate decoder;
//! - a decoded string, escaped again byte by byte as `%XX` (upper- and lower-case hex), decodes to
//!   itself; input with nothing to decode comes back borrowed and unchanged; output never grows;
//! - `check_key` accepts exactly the non-empty keys within the limit and without control
//!   characters, and names an oversized key with the error the caller chose;
//! - `form_pairs` equals splitting on `&` and `=` and decoding each half with `reference`.
//!
//! Non-UTF-8 input is skipped: every caller hands these functions a `&str`.

#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use twinkv::fuzzing::{check_key, form_pairs, percent_decode};
use twinkv::{ApiError, Limits};

/// An independent percent-decoder: `None` where the strict decoder must refuse.
fn reference(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let hex = |j: usize| -> Option<u8> {
        let c = *b.get(j)?;
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                out.push(hex(i + 1)? << 4 | hex(i + 2)?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `s` with every byte escaped as `%XX`.
fn escape_all(s: &str, upper: bool) -> String {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        out.push('%');
        out.push(digits[usize::from(b >> 4)] as char);
        out.push(digits[usize::from(b & 15)] as char);
    }
    out
}

fn check_keys(key: &str) {
    let limits = Limits::default();
    let valid =
        |max: usize| !key.is_empty() && key.len() <= max && !key.chars().any(char::is_control);
    assert_eq!(
        check_key(key, &limits, ApiError::UriTooLong).is_ok(),
        valid(limits.max_key_bytes),
        "check_key disagrees on {key:?}"
    );
    // A tiny limit reaches the too-long branch, which must use the caller's error.
    let tiny = Limits {
        max_key_bytes: 4,
        ..Limits::default()
    };
    match check_key(key, &tiny, ApiError::UriTooLong) {
        Ok(()) => assert!(valid(4)),
        Err(ApiError::UriTooLong(_)) => assert!(key.len() > 4),
        Err(ApiError::BadRequest(_)) => assert!(!valid(4)),
        Err(_) => panic!("check_key returned an unexpected error kind"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // A batch body's key is checked without decoding.
    check_keys(s);
    for plus_is_space in [false, true] {
        let got = percent_decode(s, plus_is_space);
        let want = reference(s, plus_is_space);
        assert_eq!(
            got.as_deref().ok(),
            want.as_deref(),
            "percent_decode({s:?}, {plus_is_space}) disagrees with the reference"
        );
        let Ok(decoded) = got else {
            continue;
        };
        assert!(decoded.len() <= s.len(), "decoding grew the text");
        if !s.contains('%') && !(plus_is_space && s.contains('+')) {
            assert!(matches!(decoded, Cow::Borrowed(d) if d == s));
        }
        for upper in [true, false] {
            let escaped = escape_all(&decoded, upper);
            match percent_decode(&escaped, plus_is_space) {
                Ok(again) => assert_eq!(again, decoded, "escaping every byte changed the text"),
                Err(_) => panic!("refused {escaped:?}, an escape of valid UTF-8"),
            }
        }
        check_keys(&decoded);
    }

    let got: Option<Vec<(String, String)>> = form_pairs(s).ok().map(|pairs| {
        pairs
            .into_iter()
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect()
    });
    let want: Option<Vec<(String, String)>> = s
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            Some((reference(n, true)?, reference(v, true)?))
        })
        .collect();
    assert_eq!(got, want, "form_pairs({s:?}) disagrees with the reference");
});
