//! Which protocol switches regate lets through (`--upgrade-protocol`, default `websocket`).
//!
//! After an upstream's `101 Switching Protocols`, the connection is a tunnel: no more request
//! heads, no more decisions. So an upgrade is forwarded only when it is an HTTP/1.1 upgrade
//! request (`Upgrade` and `Connection: upgrade`) offering exactly one protocol, and that
//! protocol is allowed. The policy then sees it as `input.upgrade` and decides.
//!
//! `h2c` and `h2` are never forwarded: an upstream that switched to HTTP/2 would serve every
//! request the client sent afterwards, unseen by the policy. An offer of only those is
//! ignored, as RFC 9110 §7.8 lets a server do, and the request goes on as plain HTTP/1.1;
//! `HTTP2-Settings` is always removed with the other hop-by-hop headers. Any other protocol
//! that is not allowed is refused.

use http::header::{self, HeaderMap};
use http::Version;

use super::headers::connection_tokens;
use super::RequestError;

/// Protocols regate never tunnels, whatever the allowlist says.
pub const NEVER: &[&str] = &["h2c", "h2"];

/// The protocol an allowed upgrade request switches to (lowercase), `None` for a request that
/// is not an upgrade, or an error for an upgrade that must not be forwarded.
pub fn requested(
    version: Version,
    headers: &HeaderMap,
    allowed: &[String],
) -> Result<Option<String>, RequestError> {
    // HTTP/2 has no Upgrade (RFC 9113 §8.2.2), and HTTP/1.0 cannot switch; the header is then
    // just a hop-by-hop field and is removed.
    if version != Version::HTTP_11
        || !connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
    {
        return Ok(None);
    }
    let mut offered: Vec<String> = headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    offered.retain(|t| !NEVER.contains(&name(t)));
    match offered.as_slice() {
        [] => Ok(None),
        [one] if allowed.iter().any(|a| a == one || a == name(one)) => Ok(offered.pop()),
        _ => Err(RequestError::UpgradeNotAllowed(offered.join(", "))),
    }
}

/// `websocket` of `websocket`, `spdy` of `spdy/3.1`.
fn name(protocol: &str) -> &str {
    protocol.split('/').next().unwrap_or(protocol)
}

/// Whether the upstream's `101` switched to the protocol the client asked for.
pub fn switched_to(response: &HeaderMap, protocol: &str) -> bool {
    let mut upgrade = response.get_all(header::UPGRADE).iter();
    match (upgrade.next(), upgrade.next()) {
        (Some(v), None) => v
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case(protocol)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(upgrade: &str, connection: &str) -> Result<Option<String>, RequestError> {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, upgrade.parse().unwrap());
        h.insert(header::CONNECTION, connection.parse().unwrap());
        requested(
            Version::HTTP_11,
            &h,
            &["websocket".to_string(), "spdy/3.1".to_string()],
        )
    }

    #[test]
    fn only_one_allowed_protocol_is_an_upgrade() {
        assert_eq!(
            ask("WebSocket", "Upgrade").unwrap().as_deref(),
            Some("websocket")
        );
        assert_eq!(
            ask("SPDY/3.1", "upgrade").unwrap().as_deref(),
            Some("spdy/3.1")
        );
        assert_eq!(ask("h2c", "Upgrade, HTTP2-Settings").unwrap(), None);
        assert_eq!(ask("websocket", "keep-alive").unwrap(), None);
        assert_eq!(
            ask("foo", "upgrade"),
            Err(RequestError::UpgradeNotAllowed("foo".into()))
        );
        assert!(ask("websocket, foo", "upgrade").is_err());
        assert_eq!(
            ask("h2c, websocket", "upgrade").unwrap().as_deref(),
            Some("websocket")
        );
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::CONNECTION, "upgrade".parse().unwrap());
        assert_eq!(requested(Version::HTTP_10, &h, &[]).unwrap(), None);
    }
}
