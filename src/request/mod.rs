//! What regate accepts from a request before the policy sees it, and the head it will forward.
//!
//! [`prepare`] is the one step between a parsed request head and the policy: it refuses what
//! regate does not serve (CONNECT, an ambiguous target, a bad or forged host, a transfer coding
//! it would have to drop, an upgrade that is not allowed, a header spelt to collide with one
//! regate controls), then cleans the headers into exactly what the upstream will receive. The
//! proxy and `regate policy eval` both call it, so the policy sees the same thing in both.
//!
//! It never reads a body and never talks to anyone; refusals become responses in
//! `proxy::error`. Reading a JSON body for the policy is [`body`]'s job; holding MCP's
//! headers to that body, and checking a browser's `Origin`, is [`mcp`]'s.

pub mod body;
pub mod headers;
pub mod json;
pub mod mcp;
pub mod target;
pub mod upgrade;

use http::header::{self, HeaderMap};
use http::{Method, Version};
use thiserror::Error;

pub use headers::{Forwarded, UnderscoreHeaders};
pub use target::{PathError, Target};

/// The operator's settings for what a request may carry.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Upgrade protocols that may be forwarded, lowercase (`websocket`).
    pub upgrade_protocols: Vec<String>,
    pub underscore_headers: UnderscoreHeaders,
    /// Client headers that [`headers::CLIENT_CLAIMS`] would strip but the operator keeps.
    pub keep_client_headers: Vec<String>,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            upgrade_protocols: vec!["websocket".into()],
            underscore_headers: UnderscoreHeaders::DropColliding,
            keep_client_headers: Vec::new(),
        }
    }
}

/// Why a request is refused before policy. `proxy::error` maps each to a status.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("{0}")]
    Target(#[from] PathError),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("the header {0} has an underscore")]
    Underscore(String),
    #[error("CONNECT is not served")]
    Connect,
    #[error("upgrading to {0:?} is not allowed")]
    UpgradeNotAllowed(String),
    #[error("a transfer coding other than chunked is not supported")]
    TransferCoding,
}

impl RequestError {
    /// The status a client is answered with.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            RequestError::Connect => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::UpgradeNotAllowed(_) => StatusCode::FORBIDDEN,
            RequestError::TransferCoding => StatusCode::NOT_IMPLEMENTED,
            RequestError::Target(_) | RequestError::Invalid(_) | RequestError::Underscore(_) => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// The bounded reason a decision record and the metrics carry.
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::Target(_) => "invalid_path",
            RequestError::Invalid(_) => "invalid_request",
            RequestError::Underscore(_) => "invalid_header",
            RequestError::Connect => "method_not_allowed",
            RequestError::UpgradeNotAllowed(_) => "upgrade_not_allowed",
            RequestError::TransferCoding => "unsupported_transfer_coding",
        }
    }
}

/// The request head as the client sent it, before anything is changed.
pub struct Head<'a> {
    pub method: &'a Method,
    pub version: Version,
    /// The target's scheme, when the client sent one (HTTP/2 `:scheme`, absolute-form).
    pub scheme: Option<&'a str>,
    /// The target's authority (HTTP/2 `:authority`, absolute-form), if any.
    pub authority: Option<&'a str>,
    /// The request target, path and query, exactly as sent.
    pub target: &'a str,
}

/// A request regate will put to the policy.
#[derive(Debug)]
pub struct Prepared {
    pub target: Target,
    /// The allowed protocol the client asks to switch to, lowercase.
    pub upgrade: Option<String>,
}

/// Check the head and turn `headers` into what the upstream receives. `forwarded.host` is
/// the host the request names (its authority, else its one `Host` header).
pub fn prepare(
    head: &Head<'_>,
    headers: &mut HeaderMap,
    forwarded: &Forwarded<'_>,
    rules: &Rules,
) -> Result<Prepared, RequestError> {
    // CONNECT names a host:port, not a resource: there is no path to decide on, and the
    // upstream would receive a target the policy never saw.
    if head.method == Method::CONNECT {
        return Err(RequestError::Connect);
    }
    let target = target::parse(head.target)?;
    // regate terminates TLS: a target claiming another scheme is a confused or forged one.
    if head
        .scheme
        .is_some_and(|s| !s.eq_ignore_ascii_case("https"))
    {
        return Err(RequestError::Invalid("the request's scheme is not https"));
    }
    check_host(head.authority, headers, forwarded.host)?;
    check_transfer_coding(headers)?;
    let upgrade = upgrade::requested(head.version, headers, &rules.upgrade_protocols)?;
    headers::prepare(headers, upgrade.as_deref(), forwarded, rules)?;
    Ok(Prepared { target, upgrade })
}

/// RFC 9112 §3.2 and RFC 9113 §8.3.1: exactly one host, the same in `:authority` and `Host`
/// when both are sent, and a plain `host[:port]`. User info (`user@host`) is refused: it is
/// deprecated (RFC 9110 §4.2.4), and it would be logged and forwarded as if part of the host.
fn check_host(
    authority: Option<&str>,
    headers: &HeaderMap,
    host: &str,
) -> Result<(), RequestError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(RequestError::Invalid("repeated host"));
    }
    if host.is_empty() {
        return Err(RequestError::Invalid("missing host"));
    }
    if let (Some(authority), Some(header)) = (authority, first) {
        if !header.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) {
            return Err(RequestError::Invalid("the host differs from the authority"));
        }
    }
    if host.contains('@') {
        return Err(RequestError::Invalid("the host carries user info"));
    }
    if !valid_host(host) {
        return Err(RequestError::Invalid("invalid host"));
    }
    Ok(())
}

/// `name[:port]` or `[ipv6][:port]`: a DNS-style name (letters, digits, `-`, `.`, `_`) or an
/// IP literal, and a port of 1 to 5 digits up to 65535.
pub fn valid_host(host: &str) -> bool {
    let (name_ok, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, after)) => (
                ip.parse::<std::net::Ipv6Addr>().is_ok(),
                match after {
                    "" => None,
                    a => match a.strip_prefix(':') {
                        Some(p) => Some(p),
                        None => return false,
                    },
                },
            ),
            None => return false,
        },
        None => {
            let (name, port) = match host.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (host, None),
            };
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            (ok, port)
        }
    };
    name_ok
        && port.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u32>().is_ok_and(|n| n <= 65535)
        })
}

/// A body's framing must reach the upstream as the client meant it. regate decodes
/// `chunked` and re-frames the body; any other coding (`gzip, chunked`) would be silently
/// lost on the way, leaving the application to read compressed bytes as plain ones. RFC 9112
/// §6.1 says to answer 501.
///
/// (A request with both `Transfer-Encoding` and `Content-Length` never gets here as such:
/// hyper drops the `Content-Length`, reads the body by its chunks alone, and closes the
/// connection after answering, as RFC 9112 §6.1 says.)
fn check_transfer_coding(headers: &HeaderMap) -> Result<(), RequestError> {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(only), None) if only.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(RequestError::TransferCoding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_plain_names_or_ip_literals_with_an_optional_port() {
        for ok in [
            "localhost",
            "localhost:8443",
            "api.example.org",
            "my_svc.ns.svc.cluster.local:80",
            "127.0.0.1:443",
            "[::1]",
            "[::1]:8443",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "evil.org/x",
            "a:b",
            "a:",
            "a:65536",
            "a:123456",
            "[::1",
            "[::1]x",
            "[zz::1]",
            "a,b",
            "a\"b",
            "a%2eb",
            ":80",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
