//! Header hygiene: the headers as the upstream will receive them, and so as the policy sees
//! them.
//!
//! regate is the first hop. Whatever a client says about an earlier hop, its own address,
//! the original URL or method, or its certificate, is only the client's word; regate removes
//! it or replaces it with what it knows itself. In order:
//!
//! 1. headers whose name, with `_` read as `-`, collides with one regate controls or with
//!    another header of the request ([`UnderscoreHeaders`]): many application servers (CGI,
//!    WSGI, Rack) fold the two together, so `X_Forwarded_Client_Cert` would reach the
//!    application as the identity header;
//! 2. hop-by-hop headers (RFC 9110 §7.6.1), every header `Connection` names, and
//!    `HTTP2-Settings`; `TE: trailers` is kept, and an allowed upgrade keeps its `Upgrade`;
//! 3. [`CLIENT_CLAIMS`] (unless the operator keeps one) and every `x-regate-*` header: those
//!    are the policy's to set;
//! 4. regate's own `x-forwarded-client-cert`, `x-forwarded-for`, `x-forwarded-proto` and
//!    `Host`, replacing anything the client sent, and the `x-request-id` the caller says
//!    (the client's well-formed one, [`client_request_id`], or regate's).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::{RequestError, Rules};
use crate::tls::identity::PeerIdentity;

pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client `x-request-id` kept.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The client's `x-request-id`, when it is 1 to 128 printable ASCII characters. It is
/// forwarded and kept in the record so a call can be followed across services, but it never
/// names the request in regate's record: an id a client chooses could collide with, or
/// impersonate, another request's.
pub fn client_request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_REQUEST_ID_LEN
                && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_string)
}
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Headers regate itself sets on every forwarded request.
const SET_BY_REGATE: &[&str] = &[
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
    "host",
];

/// Headers that frame a message or apply to one hop only. Never forwarded as the client sent
/// them, and never accepted from a policy.
pub const FRAMING_AND_HOP_BY_HOP: &[&str] = &[
    "connection",
    "content-length",
    "http2-settings",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What a client may claim about earlier hops, its address, or the request's original form.
/// regate is the first hop, so these are stripped unless `--keep-client-header` names one.
pub const CLIENT_CLAIMS: &[&str] = &[
    "cf-connecting-ip",
    "fastly-client-ip",
    "forwarded",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-http-method",
    "x-http-method-override",
    "x-method-override",
    "x-original-method",
    "x-original-uri",
    "x-original-url",
    "x-real-ip",
    "x-rewrite-url",
];

/// The longest `x-forwarded-client-cert` regate writes. A certificate can carry thousands of
/// SANs; past this, the rest are left out (the `Hash` still names the certificate exactly).
pub const MAX_XFCC_LEN: usize = 4096;

/// Names only a policy may set on a forwarded request.
pub const REGATE_PREFIX: &str = "x-regate-";

/// What to do with a header whose name has an `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    /// Drop it when, read with `-` for `_`, it names a header regate controls or another
    /// header of the same request (the default).
    DropColliding,
    /// Refuse the request (400) in the same cases.
    RejectColliding,
    /// Drop every header with an `_` (Envoy's `DROP_HEADER`).
    DropAll,
    /// Refuse every request with such a header (Envoy's `REJECT_REQUEST`).
    RejectAll,
}

impl UnderscoreHeaders {
    pub fn parse(s: &str) -> Option<UnderscoreHeaders> {
        Some(match s {
            "drop-colliding" => UnderscoreHeaders::DropColliding,
            "reject-colliding" => UnderscoreHeaders::RejectColliding,
            "drop-all" => UnderscoreHeaders::DropAll,
            "reject-all" => UnderscoreHeaders::RejectAll,
            _ => return None,
        })
    }
}

/// What regate adds to a forwarded request, known once per connection except the id and host.
pub struct Forwarded<'a> {
    pub xfcc: &'a HeaderValue,
    pub xff: &'a HeaderValue,
    pub request_id: &'a str,
    pub host: &'a str,
}

/// Envoy's `x-forwarded-client-cert`: `By` is regate's own URI SAN, `Hash` the SHA-256 of
/// the client leaf, then its subject and SANs. Values with `,;="` are quoted. SANs that would
/// take the header past [`MAX_XFCC_LEN`] are left out.
pub fn xfcc(peer: &PeerIdentity, local: &PeerIdentity) -> String {
    // Certificate names can hold any character; a header value cannot hold controls.
    fn clean(v: &str) -> String {
        v.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    }
    fn quoted(v: &str) -> String {
        let v = clean(v);
        if v.contains([',', ';', '=', '"', '\\']) {
            format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
        } else {
            v
        }
    }
    let mut out = String::new();
    if let Some(by) = local.uri_sans.first() {
        out.push_str(&format!("By={};", quoted(by)));
    }
    out.push_str(&format!("Hash={}", peer.fingerprint_sha256));
    let subject = clean(&peer.subject)
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    if out.len() + subject.len() + 11 <= MAX_XFCC_LEN {
        out.push_str(&format!(";Subject=\"{subject}\""));
    }
    let sans = peer
        .uri_sans
        .iter()
        .map(|u| ("URI", u))
        .chain(peer.dns_sans.iter().map(|d| ("DNS", d)));
    for (key, value) in sans {
        let item = format!(";{key}={}", quoted(value));
        if out.len() + item.len() > MAX_XFCC_LEN {
            break;
        }
        out.push_str(&item);
    }
    out
}

/// Whether regate decides what the upstream receives under `name` (lowercase, `-` form).
fn controlled(name: &str) -> bool {
    SET_BY_REGATE.contains(&name)
        || FRAMING_AND_HOP_BY_HOP.contains(&name)
        || CLIENT_CLAIMS.contains(&name)
        || name.starts_with(REGATE_PREFIX)
}

/// Clean `headers` in place; see the module documentation for the order.
pub fn prepare(
    headers: &mut HeaderMap,
    upgrade: Option<&str>,
    forwarded: &Forwarded<'_>,
    rules: &Rules,
) -> Result<(), RequestError> {
    drop_underscored(headers, rules.underscore_headers)?;
    strip_hop_by_hop(headers);
    let stripped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.starts_with(REGATE_PREFIX)
                || (CLIENT_CLAIMS.contains(&name)
                    && !rules.keep_client_headers.iter().any(|k| k == name))
        })
        .cloned()
        .collect();
    for name in stripped {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        let value = HeaderValue::from_str(protocol)
            .map_err(|_| RequestError::Invalid("invalid upgrade protocol"))?;
        headers.insert(header::UPGRADE, value);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let request_id = HeaderValue::from_str(forwarded.request_id)
        .map_err(|_| RequestError::Invalid("invalid request id"))?;
    headers.insert(X_FORWARDED_CLIENT_CERT, forwarded.xfcc.clone());
    headers.insert(X_FORWARDED_FOR, forwarded.xff.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    headers.insert(X_REQUEST_ID, request_id);
    let host =
        HeaderValue::from_str(forwarded.host).map_err(|_| RequestError::Invalid("invalid host"))?;
    headers.insert(header::HOST, host);
    Ok(())
}

fn drop_underscored(headers: &mut HeaderMap, mode: UnderscoreHeaders) -> Result<(), RequestError> {
    let mut doomed = Vec::new();
    for name in headers.keys() {
        let raw = name.as_str();
        if !raw.contains('_') {
            continue;
        }
        let hit = match mode {
            UnderscoreHeaders::DropAll | UnderscoreHeaders::RejectAll => true,
            UnderscoreHeaders::DropColliding | UnderscoreHeaders::RejectColliding => {
                let folded = raw.replace('_', "-");
                controlled(&folded) || headers.contains_key(folded.as_str())
            }
        };
        if hit {
            if matches!(
                mode,
                UnderscoreHeaders::RejectAll | UnderscoreHeaders::RejectColliding
            ) {
                return Err(RequestError::Underscore(raw.to_string()));
            }
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    Ok(())
}

/// The values of every `Connection` header, as tokens.
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Remove what applies only to one hop (RFC 9110 §7.6.1): the fixed hop-by-hop fields and
/// every field `Connection` names. `TE: trailers` is end-to-end in practice (gRPC servers
/// require it) and is kept as exactly that. Used on requests and on responses.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HTTP2_SETTINGS,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(
        pairs: &[(&str, &str)],
        mode: UnderscoreHeaders,
    ) -> Result<HeaderMap, RequestError> {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let xfcc = HeaderValue::from_static("Hash=ab");
        let xff = HeaderValue::from_static("10.0.0.1");
        let rules = Rules {
            underscore_headers: mode,
            ..Rules::default()
        };
        let fwd = Forwarded {
            xfcc: &xfcc,
            xff: &xff,
            request_id: "id-1",
            host: "localhost",
        };
        prepare(&mut headers, None, &fwd, &rules).map(|()| headers)
    }

    #[test]
    fn underscore_spellings_of_controlled_or_present_headers_are_dropped() {
        let h = prepared(
            &[
                ("x_forwarded_client_cert", "By=forged"),
                ("X_Request_Id", "forged"),
                ("x_user", "admin"),
                ("x-user", "alice"),
                ("x_tenant", "kept"),
                ("x_regate_role", "forged"),
            ],
            UnderscoreHeaders::DropColliding,
        )
        .unwrap();
        assert!(!h.contains_key("x_forwarded_client_cert"));
        assert!(!h.contains_key("x_request_id"));
        assert!(!h.contains_key("x_user"));
        assert!(!h.contains_key("x_regate_role"));
        assert_eq!(h["x-user"], "alice");
        assert_eq!(h["x_tenant"], "kept");
        assert_eq!(h["x-forwarded-client-cert"], "Hash=ab");
    }

    #[test]
    fn reject_modes_refuse_and_drop_all_drops_every_underscore() {
        assert_eq!(
            prepared(
                &[("x_forwarded_for", "1.2.3.4")],
                UnderscoreHeaders::RejectColliding
            ),
            Err(RequestError::Underscore("x_forwarded_for".into()))
        );
        assert!(prepared(&[("x_tenant", "a")], UnderscoreHeaders::RejectColliding).is_ok());
        assert!(prepared(&[("x_tenant", "a")], UnderscoreHeaders::RejectAll).is_err());
        let h = prepared(&[("x_tenant", "a")], UnderscoreHeaders::DropAll).unwrap();
        assert!(!h.contains_key("x_tenant"));
    }

    #[test]
    fn client_claims_and_regate_names_are_stripped_and_identity_headers_replaced() {
        let h = prepared(
            &[
                ("forwarded", "for=1.2.3.4"),
                ("x-real-ip", "1.2.3.4"),
                ("x-original-url", "/admin"),
                ("x-http-method-override", "DELETE"),
                ("x-regate-workload", "forged"),
                ("x-forwarded-for", "1.2.3.4"),
                ("http2-settings", "AAMAAABkAAQAAP__"),
                ("accept", "*/*"),
            ],
            UnderscoreHeaders::DropColliding,
        )
        .unwrap();
        for gone in [
            "forwarded",
            "x-real-ip",
            "x-original-url",
            "x-http-method-override",
            "x-regate-workload",
            "http2-settings",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["accept"], "*/*");
        assert_eq!(h["host"], "localhost");
    }

    fn peer() -> PeerIdentity {
        PeerIdentity {
            spiffe_id: None,
            uri_sans: vec!["spiffe://example.org/a".into()],
            dns_sans: vec!["x;y".into()],
            subject: "CN=evil\"\nname\\".into(),
            issuer: String::new(),
            serial: "01".into(),
            fingerprint_sha256: "ab".into(),
            not_before: 0,
            not_after: 0,
        }
    }

    #[test]
    fn xfcc_is_a_valid_header_whatever_the_certificate_names_hold() {
        let peer = peer();
        let local = PeerIdentity {
            uri_sans: vec!["spiffe://example.org/regate".into()],
            ..peer.clone()
        };
        let value = xfcc(&peer, &local);
        assert!(HeaderValue::from_str(&value).is_ok(), "{value:?}");
        assert_eq!(
            value,
            r#"By=spiffe://example.org/regate;Hash=ab;Subject="CN=evil\"?name\\";URI=spiffe://example.org/a;DNS="x;y""#
        );
    }

    #[test]
    fn xfcc_stays_within_its_cap_however_many_names_a_certificate_has() {
        let peer = PeerIdentity {
            dns_sans: (0..1500).map(|i| format!("host-{i}.example.org")).collect(),
            ..peer()
        };
        let value = xfcc(&peer, &peer);
        assert!(value.len() <= MAX_XFCC_LEN, "{}", value.len());
        assert!(value.contains("Hash=ab;Subject="));
        assert!(value.contains(";DNS=host-0.example.org"));
        assert!(!value.contains("host-1499"));
    }
}
