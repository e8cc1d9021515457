//! Strict decoding of what arrives in a URL: percent-encoding, UTF-8 and keys.
//!
//! Lenient decoders pass `%zz` through or replace bad UTF-8 with U+FFFD, which would store a
//! different key than the client named. Here every such input is an error the client sees.

use std::borrow::Cow;

use super::error::ApiError;
use crate::config::Limits;

/// Percent-decodes `s` (and `+` to a space when `plus_is_space`, as form decoding does), then
/// checks the result is UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Result<Cow<'_, str>, ApiError> {
    if !s.bytes().any(|b| b == b'%' || (plus_is_space && b == b'+')) {
        return Ok(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let digit = |j: usize| bytes.get(j).and_then(|&c| (c as char).to_digit(16));
                let (Some(hi), Some(lo)) = (digit(i + 1), digit(i + 2)) else {
                    return Err(ApiError::BadRequest(format!(
                        "invalid percent-encoding at byte {i}"
                    )));
                };
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| ApiError::BadRequest("percent-decoded text is not valid UTF-8".into()))
}

/// Checks a decoded key: 1..=max bytes, no control characters.
///
/// `too_long` builds the error for an oversized key: 414 for a key in the URL, 400 in a body.
pub fn check_key(
    key: &str,
    limits: &Limits,
    too_long: fn(String) -> ApiError,
) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::BadRequest("the key is empty".into()));
    }
    if key.len() > limits.max_key_bytes {
        return Err(too_long(format!(
            "the key is {} bytes; the limit is {}",
            key.len(),
            limits.max_key_bytes
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "the key contains a control character".into(),
        ));
    }
    Ok(())
}

/// Refuses a key to be written that has a `.` or `..` path segment (`.`, `a/./b`, `x/..`).
///
/// Clients and proxies remove such segments from a URL before sending it (RFC 3986 §5.2.4), so
/// `/kv/a/../b` arrives as `/kv/b` and the key could not be read back as it was written. Only
/// writes are refused: reads and deletes still reach such keys stored by 0.1 (percent-encoded).
/// `a.b`, `...` and `.hidden` are ordinary segments.
pub fn check_no_dot_segments(key: &str) -> Result<(), ApiError> {
    match key.split('/').find(|s| *s == "." || *s == "..") {
        None => Ok(()),
        Some(segment) => Err(ApiError::BadRequest(format!(
            "the key has a `{segment}` path segment; clients remove such segments from URLs \
             (RFC 3986 §5.2.4), so it could not be read back: choose another key"
        ))),
    }
}

/// A whole number written as the contract writes one: ASCII digits only. `str::parse` alone
/// would also take a leading `+`, which the API description's patterns refuse.
pub fn whole<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A decoded name and value of a query string or form.
pub type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Splits a query string or form body into decoded name/value pairs.
pub fn form_pairs(s: &str) -> Result<Vec<Pair<'_>>, ApiError> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            Ok((percent_decode(name, true)?, percent_decode(value, true)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_digits_only() {
        assert_eq!(whole::<u64>("0"), Some(0));
        assert_eq!(whole::<u64>("0042"), Some(42));
        for bad in [
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1.0",
            "0x1",
            "18446744073709551616",
        ] {
            assert_eq!(whole::<u64>(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decodes_valid_escapes() {
        assert_eq!(percent_decode("a%2Fb", false).unwrap(), "a/b");
        assert_eq!(percent_decode("%C3%A9t%C3%A9", false).unwrap(), "été");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("a+b%2B", true).unwrap(), "a b+");
        assert!(matches!(
            percent_decode("plain", false).unwrap(),
            Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn refuses_bad_escapes_and_bad_utf8() {
        for bad in ["%", "%4", "%zz", "a%g0", "%FF", "%C3", "%+1", "%-1"] {
            assert!(percent_decode(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn checks_keys() {
        let l = Limits {
            max_key_bytes: 4,
            ..Limits::default()
        };
        assert!(check_key("abcd", &l, ApiError::UriTooLong).is_ok());
        assert!(matches!(
            check_key("abcde", &l, ApiError::UriTooLong),
            Err(ApiError::UriTooLong(_))
        ));
        assert!(matches!(
            check_key("", &l, ApiError::UriTooLong),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            check_key("a\0", &l, ApiError::UriTooLong),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            check_key("a\u{7f}", &l, ApiError::UriTooLong),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn refuses_dot_segments_only() {
        for bad in [
            ".", "..", "a/./b", "a/../b", "./x", "x/..", "../x", "x/.", "a//..//b",
        ] {
            assert!(
                matches!(check_no_dot_segments(bad), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
        for fine in [
            "a.b", "...", ".hidden", "a/.b/c", "a/..b", "b../c", "x", "a/b/", "/",
        ] {
            assert!(check_no_dot_segments(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn splits_forms() {
        let pairs = form_pairs("value=a+b%26c&x&&y=").unwrap();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (&**a, &**b)).collect();
        assert_eq!(pairs, [("value", "a b&c"), ("x", ""), ("y", "")]);
    }
}
