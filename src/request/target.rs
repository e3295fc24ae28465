//! The request target: checked so that policy and upstream cannot read it differently.
//!
//! regate never rewrites a path. The policy sees the target exactly as sent, and the
//! upstream receives those same bytes. Instead of normalising, regate refuses (400) every
//! target that another server could resolve to a different resource than the one the policy
//! judged:
//!
//! - dot segments (`/docs/../admin`, `/./a`), also with a `;` suffix (`/docs/..;/admin`);
//! - empty segments (`//admin`, `/a//b`); a single trailing slash is fine;
//! - `;` in the path (matrix parameters; servlet containers strip them before routing);
//! - a backslash, raw or encoded (`%5C`);
//! - an encoded slash (`%2F`), which some servers decode into a separator;
//! - an encoded unreserved character (`%2e`, `%61dmin`), which RFC 3986 says means the same as
//!   the plain one, so a rule on the plain spelling would be dodged;
//! - a percent-encoded escape (`%252e`), which a server that decodes twice reads as `.`;
//! - encoded control characters (`%00`, `%0A`), malformed escapes (`%zz`), and escapes that
//!   do not decode to UTF-8;
//! - anything that is not origin-form (`*`, or no leading `/`).
//!
//! The query string is passed through as sent; `parsed_query` is its decoded form.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;
use thiserror::Error;

/// The decoded forms of a target that policy reads as `parsed_path` and `parsed_query`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub segments: Vec<String>,
    pub query: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PathError {
    #[error("the request target must be a path starting with /")]
    NotOriginForm,
    #[error("the path has a . or .. segment")]
    DotSegment,
    #[error("the path has an empty segment (//)")]
    EmptySegment,
    #[error("the path has a ; (matrix parameter)")]
    Semicolon,
    #[error("the path has a backslash")]
    Backslash,
    #[error("the path has an encoded / or \\")]
    EncodedSeparator,
    #[error("the path percent-encodes a character that needs no encoding")]
    EncodedUnreserved,
    #[error("the path has a percent-encoded escape (double encoding)")]
    DoubleEncoded,
    #[error("the path has an encoded control character")]
    EncodedControl,
    #[error("the target has a malformed percent-encoding")]
    BadEscape,
    #[error("the target does not decode to UTF-8")]
    NotUtf8,
}

/// Check a request target (`/path?query`) and decode it for policy.
pub fn parse(target: &str) -> Result<Target, PathError> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let rest = path.strip_prefix('/').ok_or(PathError::NotOriginForm)?;
    check_path_bytes(rest)?;
    let raw_segments: Vec<&str> = rest.split('/').collect();
    let last = raw_segments.len() - 1;
    let mut segments = Vec::with_capacity(raw_segments.len());
    for (i, raw) in raw_segments.iter().enumerate() {
        // "" is allowed only for "/" itself and for a trailing slash.
        if raw.is_empty() && i != last {
            return Err(PathError::EmptySegment);
        }
        if *raw == "." || *raw == ".." {
            return Err(PathError::DotSegment);
        }
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| PathError::NotUtf8)?;
        segments.push(decoded.into_owned());
    }
    Ok(Target {
        segments,
        query: query.map(parse_query).transpose()?.unwrap_or_default(),
    })
}

/// Byte-level rules for the path part (after the leading `/`).
fn check_path_bytes(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            b'%' => {
                let byte = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PathError::BadEscape)?;
                match byte {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                        return Err(PathError::EncodedUnreserved)
                    }
                    b if b < 0x20 || b == 0x7f => return Err(PathError::EncodedControl),
                    b'%' if bytes
                        .get(i + 3..i + 5)
                        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                    {
                        return Err(PathError::DoubleEncoded)
                    }
                    _ => {}
                }
                i += 3;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// `a=1&a=2&b` -> {a: [1, 2], b: [""]}, with `+` as space, as Go's url.ParseQuery reads it.
fn parse_query(query: &str) -> Result<BTreeMap<String, Vec<String>>, PathError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(decode_query_part(k)?)
            .or_default()
            .push(decode_query_part(v)?);
    }
    Ok(out)
}

/// A query parameter's name or value as `parsed_query` holds it; one that does not decode is
/// kept as sent.
pub fn decoded_query_part(raw: &str) -> std::borrow::Cow<'_, str> {
    decode_query_part(raw).map_or(std::borrow::Cow::Borrowed(raw), std::borrow::Cow::Owned)
}

fn decode_query_part(s: &str) -> Result<String, PathError> {
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        {
            return Err(PathError::BadEscape);
        }
    }
    let plus_as_space = s.replace('+', " ");
    percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| PathError::NotUtf8)
}

/// What is not percent-encoded in a query name or value regate writes: the unreserved set.
const QUERY_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Apply a policy's `query_parameters_to_remove` and `query_parameters_to_set` to a
/// checked `path?query`. The path and every untouched parameter keep their exact bytes.
pub fn rewrite_query(target: &str, remove: &[String], set: &[(String, String)]) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let dropped = |raw: &str| {
        let name = raw.split_once('=').map_or(raw, |(k, _)| k);
        let name = decode_query_part(name).unwrap_or_else(|_| name.to_string());
        remove.contains(&name) || set.iter().any(|(k, _)| *k == name)
    };
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !dropped(p))
        .map(str::to_string)
        .collect();
    for (k, v) in set {
        pairs.push(format!(
            "{}={}",
            percent_encoding::utf8_percent_encode(k, QUERY_ENCODE),
            percent_encoding::utf8_percent_encode(v, QUERY_ENCODE)
        ));
    }
    match pairs.is_empty() {
        true => path.to_string(),
        false => format!("{path}?{}", pairs.join("&")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(t: &str) -> Vec<String> {
        parse(t).unwrap().segments
    }

    #[test]
    fn plain_paths_decode_like_opa_envoy_plugin() {
        assert_eq!(segs("/"), vec![""]);
        assert_eq!(segs("/people/alice"), vec!["people", "alice"]);
        assert_eq!(segs("/people/alice/"), vec!["people", "alice", ""]);
        assert_eq!(segs("/files/my%20doc"), vec!["files", "my doc"]);
        assert_eq!(segs("/a%3Fb"), vec!["a?b"]);
        assert_eq!(segs("/100%25"), vec!["100%"]);
        let t = parse("/search?q=a+b&tag=x&tag=y&flag&=z").unwrap();
        assert_eq!(t.query["q"], vec!["a b"]);
        assert_eq!(t.query["tag"], vec!["x", "y"]);
        assert_eq!(t.query["flag"], vec![""]);
        assert_eq!(t.query[""], vec!["z"]);
    }

    #[test]
    fn query_rewrites_touch_only_named_parameters() {
        let set = vec![
            ("lang".to_string(), "en gb".to_string()),
            ("t".to_string(), "1".to_string()),
        ];
        assert_eq!(
            rewrite_query(
                "/a/b?lang=fr&keep=%2F&debug=1&t=0&t=9",
                &["debug".into()],
                &set
            ),
            "/a/b?keep=%2F&lang=en%20gb&t=1"
        );
        assert_eq!(rewrite_query("/a?debug=1", &["debug".into()], &[]), "/a");
        assert_eq!(rewrite_query("/a", &[], &set[1..]), "/a?t=1");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        use PathError::*;
        for (target, why) in [
            ("/docs/../admin", DotSegment),
            ("/docs/./admin", DotSegment),
            ("/..", DotSegment),
            ("/docs/%2e%2e/admin", EncodedUnreserved),
            ("/docs/.%2E/admin", EncodedUnreserved),
            ("/%61dmin", EncodedUnreserved),
            ("/docs/..;/admin", Semicolon),
            ("/admin;jsessionid=1", Semicolon),
            ("//admin", EmptySegment),
            ("/docs//admin", EmptySegment),
            ("/docs%2F..%2Fadmin", EncodedSeparator),
            ("/docs%2fadmin", EncodedSeparator),
            ("/docs%5C..%5Cadmin", EncodedSeparator),
            ("/docs\\..\\admin", Backslash),
            ("/a%00b", EncodedControl),
            ("/docs/%252e%252e/admin", DoubleEncoded),
            ("/a%0d%0ab", EncodedControl),
            ("/a%zz", BadEscape),
            ("/a%2", BadEscape),
            ("/a%ff", NotUtf8),
            ("*", NotOriginForm),
            ("admin", NotOriginForm),
            ("/a?x=%zz", BadEscape),
        ] {
            assert_eq!(parse(target), Err(why), "{target}");
        }
    }
}
