//! What MCP's Streamable HTTP transport (revision 2026-07-28) puts in a request's head, read
//! and checked against its body before any policy: the `Mcp-Method`, `Mcp-Name` and
//! `MCP-Protocol-Version` headers, and the `Origin` a browser sends.
//!
//! The transport mirrors body fields into headers so that intermediaries can route on them;
//! a header that says one thing while the body says another would have a router (or a
//! policy) decide on one request and the server execute another. So when a request carries
//! `Mcp-Method` or `Mcp-Name`, [`check`] holds them to the body: `Mcp-Method` is the body's
//! `method`; `Mcp-Name` (base64 sentinel decoded) is `params.name` for `tools/call` and
//! `prompts/get` and `params.uri` for `resources/read`, required for those and refused for any
//! other method; `MCP-Protocol-Version`, when the body's `params._meta` names a version too,
//! is that version. A header sent twice, or with a value a header may not carry, is a
//! mismatch. The revision allows no batches: a batch carrying the headers has no single
//! `method` to hold them to, and is a mismatch too. A mismatch is the spec's `HeaderMismatch`
//! (`-32020`), answered by the proxy.
//!
//! [`Origins`] is the DNS-rebinding defence the transport asks of servers: a request whose
//! `Origin` is not on the operator's list is refused; a request without one (any client but a
//! browser) is not. Nothing here answers a request or reads a response: `proxy::admission`
//! calls these and `proxy::error` answers.

use http::HeaderMap;
use regorus::Value;

use super::body::{Call, Inspected};

/// The JSON-RPC error code of a head that disagrees with its body (MCP's `HeaderMismatch`).
pub const HEADER_MISMATCH: i64 = -32020;

const MCP_METHOD: &str = "mcp-method";
const MCP_NAME: &str = "mcp-name";
const MCP_PROTOCOL_VERSION: &str = "mcp-protocol-version";

/// The `params` field `Mcp-Name` mirrors for each method that has one.
fn named_by(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Why the MCP headers do not match the body: the message for the JSON-RPC error, and the id
/// of the request it answers, when the body has one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Mismatch {
    pub message: String,
    pub id: Option<serde_json::Value>,
}

/// The MCP headers of a request, as sent (`Mcp-Name` decoded).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sent {
    pub method: Option<String>,
    pub name: Option<String>,
    pub protocol_version: Option<String>,
}

impl Sent {
    /// `input.mcp`'s additions for the call these headers came with: `protocol_version`, and
    /// `headers` (`method`, `name`) when the client mirrored the body into them.
    pub fn annotate(&self, call: &mut Call) {
        let Ok(mcp) = call.mcp.as_object_mut() else {
            return;
        };
        if let Some(version) = &self.protocol_version {
            mcp.insert(
                Value::from("protocol_version"),
                Value::from(version.as_str()),
            );
        }
        let mut headers = std::collections::BTreeMap::new();
        if let Some(method) = &self.method {
            headers.insert(Value::from("method"), Value::from(method.as_str()));
        }
        if let Some(name) = &self.name {
            headers.insert(Value::from("name"), Value::from(name.as_str()));
        }
        if !headers.is_empty() {
            mcp.insert(Value::from("headers"), Value::from(headers));
        }
    }
}

/// Read the MCP headers and hold them to the body as the policy reads it: `inspected` is what
/// was read of a JSON body (`None`: no JSON body was read). With `body_read` false the
/// operator reads no bodies (`--inspect-body-limit 0`), and nothing can be checked.
pub fn check(
    headers: &HeaderMap,
    inspected: Option<&Inspected>,
    body_read: bool,
) -> Result<Sent, Mismatch> {
    let calls = inspected.and_then(|i| i.calls.as_deref());
    // Only a single request has an id an answer can name.
    let id = match calls {
        Some([call]) if call.jsonrpc["batch_index"] == Value::Undefined => {
            json(&call.jsonrpc["id"])
        }
        _ => None,
    };
    let mismatch = |message: String| Mismatch {
        message,
        id: id.clone(),
    };
    let sent = Sent {
        method: single(headers, MCP_METHOD).map_err(&mismatch)?,
        name: single(headers, MCP_NAME)
            .map_err(&mismatch)?
            .map(|v| {
                decoded(&v).ok_or_else(|| {
                    mismatch(format!(
                        "{MCP_NAME} is not valid base64 UTF-8 in its =?base64?…?= form"
                    ))
                })
            })
            .transpose()?,
        protocol_version: single(headers, MCP_PROTOCOL_VERSION).map_err(&mismatch)?,
    };
    if !body_read {
        return Ok(sent);
    }
    let call = match calls {
        Some([call]) if call.jsonrpc["batch_index"] == Value::Undefined => Some(call),
        _ => None,
    };
    let Some(call) = call else {
        if sent.method.is_some() || sent.name.is_some() {
            return Err(mismatch(format!(
                "{MCP_METHOD} or {MCP_NAME} came with a body that is not one JSON-RPC \
                 request read whole ({}), so they cannot be held to it",
                unread(inspected)
            )));
        }
        return Ok(sent);
    };
    let params = &call.jsonrpc["params"];
    let body_version = &params["_meta"]["io.modelcontextprotocol/protocolVersion"];
    if let (Some(header), Value::String(body)) = (&sent.protocol_version, body_version) {
        if header.as_str() != body.as_ref() {
            return Err(mismatch(format!(
                "{MCP_PROTOCOL_VERSION} {header:?} does not match the body's protocol version {:?}",
                body.as_ref()
            )));
        }
    }
    if sent.method.is_none() && sent.name.is_none() {
        return Ok(sent);
    }
    let method = match &call.jsonrpc["method"] {
        Value::String(m) => m.as_ref(),
        _ => "",
    };
    match &sent.method {
        None => {
            return Err(mismatch(format!(
                "{MCP_NAME} came without {MCP_METHOD}, which every request carries"
            )))
        }
        Some(header) if header != method => {
            return Err(mismatch(format!(
                "{MCP_METHOD} {header:?} does not match the body's method {method:?}"
            )))
        }
        Some(_) => {}
    }
    let Some(field) = named_by(method) else {
        if sent.name.is_some() {
            return Err(mismatch(format!(
                "{MCP_NAME} came with {method:?}, which names nothing"
            )));
        }
        return Ok(sent);
    };
    match (&params[field], &sent.name) {
        (Value::String(body), Some(header)) if header.as_str() == body.as_ref() => Ok(sent),
        (Value::String(_), None) => Err(mismatch(format!(
            "{MCP_NAME} is missing; {method:?} requires it to mirror params.{field}"
        ))),
        (_, Some(header)) => Err(mismatch(format!(
            "{MCP_NAME} {header:?} does not match the body's params.{field}"
        ))),
        // Neither names anything: the server answers a call without a name.
        (_, None) => Ok(sent),
    }
}

/// Why a JSON body gave no single request to hold the headers to.
fn unread(inspected: Option<&Inspected>) -> &'static str {
    match inspected {
        None => "no JSON body",
        Some(i) if i.truncated => "the body is over the inspection limit",
        Some(i) if i.error.is_some() => "the body is not JSON",
        Some(i) if i.calls.as_ref().is_some_and(|c| c.len() > 1) => "a batch",
        Some(_) => "the body is not JSON-RPC",
    }
}

/// The one value of header `name`, if sent: sent twice (a reader of the first and one of the
/// last would disagree), or with bytes a header value may not carry, it is a mismatch.
fn single(headers: &HeaderMap, name: &str) -> Result<Option<String>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("{name} is sent more than once"));
    }
    let text = value
        .to_str()
        .ok()
        .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or_else(|| format!("{name} holds bytes a header value may not carry"))?;
    Ok(Some(text.to_string()))
}

/// A header value in the transport's `=?base64?…?=` form, decoded (canonical base64 of UTF-8
/// only, so that one name has one spelling); any other value as it is.
pub fn decoded(value: &str) -> Option<String> {
    let Some(payload) = value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    else {
        return Some(value.to_string());
    };
    let bytes = crate::builtins::crypto::std_b64_decode(payload.as_bytes()).ok()?;
    // The one canonical spelling only: no line breaks, no stray bits past the last byte.
    if crate::builtins::crypto::b64_encode(&bytes, false, true) != payload {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// A Rego value as JSON, for an error's `id`.
fn json(value: &Value) -> Option<serde_json::Value> {
    match value {
        Value::Undefined | Value::Null => None,
        v => v
            .to_json_str()
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok()),
    }
}

/// The origins a browser may call from (`--mcp-allowed-origin`), each as [`origin`] writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(Vec<String>);

/// Why a request's `Origin` is refused: the value as sent (bounded), for the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the origin {0:?} is not allowed")]
pub struct OriginRefused(pub String);

impl Origins {
    /// The allowlist; each entry must be an origin (`https://app.example.org`, a port if not
    /// the scheme's own), or the reason it is not.
    pub fn new(entries: &[String]) -> Result<Origins, Vec<String>> {
        let mut origins = Vec::new();
        let mut errors = Vec::new();
        for entry in entries {
            match origin(entry) {
                Some(o) => origins.push(o),
                None => errors.push(format!(
                    "{entry:?} is not an origin like https://app.example.org (a scheme, a \
                     host and a port if not the scheme's own; no path, no `null`, no `*`)"
                )),
            }
        }
        match errors.is_empty() {
            true => Ok(Origins(origins)),
            false => Err(errors),
        }
    }

    /// Whether any origin is listed: without a list, `Origin` is not checked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuse a request whose `Origin` (or any of several) is not listed. A request without
    /// `Origin` passes: only browsers send it, and DNS rebinding is a browser's attack.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), OriginRefused> {
        if self.0.is_empty() {
            return Ok(());
        }
        for value in headers.get_all(http::header::ORIGIN) {
            let text = String::from_utf8_lossy(value.as_bytes());
            let listed = origin(&text).is_some_and(|o| self.0.contains(&o));
            if !listed {
                return Err(OriginRefused(text.chars().take(256).collect()));
            }
        }
        Ok(())
    }
}

/// An origin as compared: `scheme://host[:port]`, scheme and host lowercase, the scheme's
/// default port left out. `None` for what is not an http(s) origin (`null` included: an
/// opaque origin is no one in particular, and listing it would let any sandboxed page in).
pub fn origin(text: &str) -> Option<String> {
    let text = text.trim();
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let authority: http::uri::Authority = rest.parse().ok()?;
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() || host == "*" {
        return None;
    }
    Some(match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        // A `:` with no digits after it.
        None if rest.ends_with(':') => return None,
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::body::examine;
    use bytes::Bytes;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|_| unreachable!()),
                http::HeaderValue::from_str(v).unwrap_or_else(|_| unreachable!()),
            );
        }
        h
    }

    fn body(json: &str) -> Inspected {
        examine(Bytes::from(json.to_string())).1
    }

    const CALL: &str = r#"{"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "search", "arguments": {},
                   "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}"#;

    #[test]
    fn headers_that_mirror_the_body_pass_and_are_shown() {
        let h = headers(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "search"),
            ("mcp-protocol-version", "2026-07-28"),
        ]);
        let inspected = body(CALL);
        let sent = check(&h, Some(&inspected), true).unwrap_or_default();
        assert_eq!(sent.name.as_deref(), Some("search"));
        let mut call = inspected.calls.unwrap_or_default().remove(0);
        sent.annotate(&mut call);
        assert_eq!(call.mcp["headers"]["name"], Value::from("search"));
        assert_eq!(call.mcp["protocol_version"], Value::from("2026-07-28"));
        assert_eq!(call.mcp["tool"], Value::from("search"));
        // No headers: nothing to hold, nothing added.
        assert_eq!(
            check(&HeaderMap::new(), Some(&body(CALL)), true),
            Ok(Sent::default())
        );
    }

    #[test]
    fn every_disagreement_is_a_mismatch_naming_the_request() {
        let inspected = body(CALL);
        for pairs in [
            &[("mcp-method", "tools/list")][..],
            &[("mcp-method", "tools/call"), ("mcp-name", "send_email")],
            &[("mcp-method", "tools/call")],
            &[("mcp-name", "search")],
            &[
                ("mcp-method", "tools/call"),
                ("mcp-name", "search"),
                ("mcp-name", "search"),
            ],
            &[
                ("mcp-method", "tools/call"),
                ("mcp-name", "search"),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            &[
                ("mcp-method", "tools/call"),
                ("mcp-name", "=?base64?c2VhcmNo?"),
            ],
            &[
                ("mcp-method", "tools/call"),
                ("mcp-name", "=?base64?c2VhcmNp?="),
            ],
        ] {
            let err = check(&headers(pairs), Some(&inspected), true);
            assert_eq!(
                err.map_err(|m| m.id),
                Err(Some(serde_json::json!(7))),
                "{pairs:?}"
            );
        }
        let list = body(r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}"#);
        let h = headers(&[("mcp-method", "tools/list"), ("mcp-name", "x")]);
        assert!(check(&h, Some(&list), true).is_err());
    }

    #[test]
    fn a_name_in_its_base64_form_is_decoded() {
        let h = headers(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?c2VhcmNo?="),
        ]);
        let sent = check(&h, Some(&body(CALL)), true).unwrap_or_default();
        assert_eq!(sent.name.as_deref(), Some("search"));
        let read = r#"{"jsonrpc": "2.0", "id": "r", "method": "resources/read",
            "params": {"uri": "file:///a b"}}"#;
        let h = headers(&[
            ("mcp-method", "resources/read"),
            ("mcp-name", "file:///a b"),
        ]);
        assert!(check(&h, Some(&body(read)), true).is_ok());
        assert_eq!(
            decoded("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(
            crate::builtins::crypto::b64_encode("Hello, 世界".as_bytes(), false, true),
            "SGVsbG8sIOS4lueVjA=="
        );
        assert_eq!(decoded("=?base64?!!!!?="), None);
        // Only the canonical spelling: stray bits past the last byte, or a line break, would
        // let two header values name one tool.
        assert_eq!(decoded("=?base64?SGk=?=").as_deref(), Some("Hi"));
        assert_eq!(decoded("=?base64?SGl=?="), None);
        assert_eq!(decoded("=?base64?SG\nk=?="), None);
    }

    #[test]
    fn headers_without_a_single_request_to_hold_them_to_are_refused() {
        let h = headers(&[("mcp-method", "tools/list")]);
        let batch = body(r#"[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]"#);
        let err = check(&h, Some(&batch), true).err();
        assert_eq!(err.map(|m| m.id), Some(None));
        assert!(check(&h, Some(&body("{")), true).is_err());
        assert!(check(&h, None, true).is_err());
        // Bodies are not read at all: nothing to hold them to, nothing refused.
        assert!(check(&h, None, false).is_ok());
        // The version header alone is what clients of 2025-06-18 send: no body mirror.
        let version = headers(&[("mcp-protocol-version", "2025-06-18")]);
        assert!(check(&version, None, true).is_ok());
    }

    #[test]
    fn origins_are_compared_as_browsers_send_them() {
        let listed = Origins::new(&[
            "https://App.example.org:443".into(),
            "http://localhost:3000".into(),
        ])
        .unwrap_or_default();
        for (origin, ok) in [
            ("https://app.example.org", true),
            ("HTTPS://APP.EXAMPLE.ORG", true),
            ("http://localhost:3000", true),
            ("http://localhost", false),
            ("https://app.example.org.evil.example", false),
            ("null", false),
            ("https://app.example.org/", false),
        ] {
            assert_eq!(
                listed.check(&headers(&[("origin", origin)])).is_ok(),
                ok,
                "{origin}"
            );
        }
        assert!(listed.check(&HeaderMap::new()).is_ok());
        let twice = headers(&[
            ("origin", "https://app.example.org"),
            ("origin", "https://evil.example"),
        ]);
        assert!(listed.check(&twice).is_err());
        assert!(Origins::default()
            .check(&headers(&[("origin", "https://evil.example")]))
            .is_ok());
        for bad in [
            "null",
            "*",
            "https://a.example/path",
            "ftp://a.example",
            "a.example",
            "https://",
        ] {
            assert!(Origins::new(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
