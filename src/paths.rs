//! Request paths as the gateway authorises them. Every decision (which route,
//! which public prefix) is taken on the normalised path, and the upstream
//! receives exactly that path, so no spelling of a path can be authorised as
//! one route and served as another.
//!
//! Normalising decodes percent-encoded unreserved characters (RFC 3986 6.2.2.2,
//! so `%2e%2e` is `..` and `%70ublic` is `public`), collapses `//`, and resolves
//! `.` and `..` segments. What cannot be normalised safely is refused: encoded
//! slashes and backslashes, raw backslashes, `..` above the root, dot segments
//! with parameters (`..;`, read as `..` by some servers), NUL and control
//! characters, malformed escapes and escapes that are not UTF-8.

use std::borrow::Cow;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with /")]
    NotAbsolute,
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    #[error("the path contains an encoded slash or backslash")]
    EncodedSeparator,
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path contains a control character")]
    ControlCharacter,
    #[error("the path climbs above the root")]
    AboveRoot,
    #[error("the path contains a dot segment with parameters")]
    DotSegmentWithParameters,
    #[error("the path's escapes are not UTF-8")]
    NotUtf8,
}

/// The normalised form of `raw` (a request-target's path, still
/// percent-encoded). Borrowed when `raw` is already normal, which is the
/// common case.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plain(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    let trailing_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for segment in decoded.split('/').skip(1) {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ if is_dot_segment_with_parameters(segment) => {
                return Err(PathError::DotSegmentWithParameters);
            }
            _ => segments.push(segment),
        }
    }
    let mut normalized = String::with_capacity(decoded.len());
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() || (trailing_slash && !segments.is_empty()) {
        normalized.push('/');
    }
    Ok(Cow::Owned(normalized))
}

/// The path prefixes the gateway keeps for itself: never proxied, never
/// routed; an unknown path under one is 404.
pub const OWNED_PREFIXES: [&str; 6] = [
    "/api/auth",
    "/api/admin",
    "/.well-known",
    "/health",
    "/metrics",
    "/api/debug",
];

/// Whether `path` (normalised) is under one of [`OWNED_PREFIXES`].
pub fn is_owned(path: &str) -> bool {
    OWNED_PREFIXES.iter().any(|prefix| is_under(path, prefix))
}

/// Whether `path` (normalised) is `prefix` or below it, on whole segments:
/// `/public` covers `/public` and `/public/x`, not `/publicity`.
pub fn is_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Nothing to decode, collapse or resolve.
fn is_plain(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    !bytes
        .iter()
        .any(|&b| b == b'%' || b == b'\\' || b.is_ascii_control())
        && !raw.contains("//")
        && !raw
            .split('/')
            .any(|segment| segment.starts_with('.') && is_dot_like(segment))
}

/// `.`, `..`, or either with parameters.
fn is_dot_like(segment: &str) -> bool {
    let name = segment.split(';').next().unwrap_or(segment);
    name == "." || name == ".."
}

fn is_dot_segment_with_parameters(segment: &str) -> bool {
    segment.contains(';') && is_dot_like(segment)
}

/// Decodes `%XX` escapes of unreserved characters and keeps every other
/// escape as it was (upper-cased), refusing the ones that could change how
/// the path splits.
fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    // Escaped bytes of one run, to check they form UTF-8.
    let mut escaped_run: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let value = match bytes.get(i + 1..i + 3) {
                Some(&[high, low]) => hex_value(high)
                    .zip(hex_value(low))
                    .map(|(high, low)| high << 4 | low)
                    .ok_or(PathError::BadEscape)?,
                _ => return Err(PathError::BadEscape),
            };
            match value {
                b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                _ => {}
            }
            escaped_run.push(value);
            if is_unreserved(value) {
                out.push(value);
            } else {
                out.extend_from_slice(&[
                    b'%',
                    HEX[usize::from(value >> 4)],
                    HEX[usize::from(value & 0xf)],
                ]);
            }
            i += 3;
            continue;
        }
        check_utf8(&mut escaped_run)?;
        match byte {
            b'\\' => return Err(PathError::Backslash),
            _ if byte.is_ascii_control() => return Err(PathError::ControlCharacter),
            // Raw bytes, multi-byte characters included, are kept as they came.
            _ => out.push(byte),
        }
        i += 1;
    }
    check_utf8(&mut escaped_run)?;
    // Valid: the input was a `str`, and only ASCII was decoded into it.
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn check_utf8(run: &mut Vec<u8>) -> Result<(), PathError> {
    if !run.is_empty() {
        std::str::from_utf8(run).map_err(|_| PathError::NotUtf8)?;
        run.clear();
    }
    Ok(())
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, PathError> {
        normalize(raw).map(Cow::into_owned)
    }

    #[test]
    fn plain_paths_are_borrowed_unchanged() {
        assert!(matches!(
            normalize("/api/tickets/42"),
            Ok(Cow::Borrowed("/api/tickets/42"))
        ));
        assert_eq!(norm("/").unwrap(), "/");
        assert_eq!(norm("/a/b/").unwrap(), "/a/b/");
        assert_eq!(norm("/a/.well-known").unwrap(), "/a/.well-known");
        assert_eq!(norm("/a/..b").unwrap(), "/a/..b");
    }

    #[test]
    fn dot_segments_and_double_slashes_resolve() {
        assert_eq!(norm("/public/../admin").unwrap(), "/admin");
        assert_eq!(norm("/a/./b").unwrap(), "/a/b");
        assert_eq!(norm("//a//b").unwrap(), "/a/b");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/..").unwrap(), "/");
    }

    #[test]
    fn encoded_dots_and_unreserved_characters_decode() {
        assert_eq!(norm("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/public/%2E./admin").unwrap(), "/admin");
        assert_eq!(norm("/%70ublic/x").unwrap(), "/public/x");
        assert_eq!(norm("/a%20b").unwrap(), "/a%20b");
        assert_eq!(norm("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(norm("/caf%C3%A9").unwrap(), "/caf%C3%A9");
        assert_eq!(norm("/%2a¡/./x").unwrap(), "/%2A¡/x");
    }

    #[test]
    fn unsafe_spellings_are_refused() {
        assert_eq!(norm("/public/..%2fadmin"), Err(PathError::EncodedSeparator));
        assert_eq!(
            norm("/public%2F..%2Fadmin"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(norm("/public/..%5cadmin"), Err(PathError::EncodedSeparator));
        assert_eq!(norm("/public\\..\\admin"), Err(PathError::Backslash));
        assert_eq!(norm("/.."), Err(PathError::AboveRoot));
        assert_eq!(norm("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(
            norm("/public/..;/admin"),
            Err(PathError::DotSegmentWithParameters)
        );
        assert_eq!(norm("/a%00b"), Err(PathError::ControlCharacter));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%2"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%+1"), Err(PathError::BadEscape));
        assert_eq!(norm("/%c0%ae%c0%ae/admin"), Err(PathError::NotUtf8));
        assert_eq!(norm("relative"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(is_under("/public", "/public"));
        assert!(is_under("/public/x", "/public"));
        assert!(is_under("/public/", "/public/"));
        assert!(!is_under("/publicity", "/public"));
        assert!(!is_under("/other/public", "/public"));
        assert!(is_under("/anything", "/"));
    }
}
