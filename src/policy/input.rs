//! The Rego `input` document: the contract with policy authors (docs/policy-input.md).
//!
//! The Envoy-shaped part (`attributes`, `parsed_path`, `parsed_query`) lets
//! opa-envoy-plugin policies run unchanged; `peer` and `context` are regate's own. Everything
//! that depends only on the connection is built once per connection in [`ConnInput`]; a
//! request adds only what is its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use regorus::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::analysis::Step;
use crate::tls::identity::PeerIdentity;

/// The parts of `input` fixed for a connection.
#[derive(Clone)]
pub struct ConnInput {
    source: Value,
    destination: Value,
    /// `input.peer` without the two fields that move with time.
    peer: Value,
    not_before: i64,
    not_after: i64,
    context: Value,
}

/// One request, as policy sees it. `path` is the request target exactly as sent.
pub struct RequestInput<'a> {
    pub id: &'a str,
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    pub path: &'a str,
    pub host: &'a str,
    pub protocol: &'static str,
    pub parsed_path: &'a [String],
    pub parsed_query: &'a BTreeMap<String, Vec<String>>,
    /// The protocol an allowed upgrade request switches to (`websocket`).
    pub upgrade: Option<&'a str>,
    /// The verified delegation token, `input.delegation` ([`crate::delegation`]).
    pub delegation: Option<&'a Value>,
    /// A verified approval for this very action, `input.approval` ([`crate::approvals`]).
    pub approval: Option<&'a Value>,
    /// What was read of a JSON body, and the JSON-RPC call being decided
    /// ([`crate::request::body`]).
    pub body: Option<BodyInput<'a>>,
    pub now: SystemTime,
}

/// A JSON body as the policy sees it, with the one JSON-RPC call this evaluation decides.
#[derive(Clone, Copy)]
pub struct BodyInput<'a> {
    pub inspected: &'a crate::request::body::Inspected,
    pub call: Option<&'a crate::request::body::Call>,
}

fn obj<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::from(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn strings(items: &[String]) -> Value {
    Value::from(
        items
            .iter()
            .map(|s| Value::from(s.as_str()))
            .collect::<Vec<_>>(),
    )
}

/// An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`; policy (and an IPv4
/// CIDR list) sees it as the IPv4 address it is.
fn socket(addr: SocketAddr) -> Value {
    obj([(
        "socketAddress",
        obj([
            ("address", Value::from(addr.ip().to_canonical().to_string())),
            ("portValue", Value::from(u32::from(addr.port()))),
        ]),
    )])
}

fn rfc3339(unix: i64) -> Value {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::from)
}

/// Build `input.context` once, at startup: the `--context` labels.
pub fn context_value(labels: &BTreeMap<String, String>) -> Value {
    Value::from(
        labels
            .iter()
            .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
            .collect::<BTreeMap<_, _>>(),
    )
}

impl ConnInput {
    pub fn new(
        peer: &PeerIdentity,
        local: &PeerIdentity,
        remote: SocketAddr,
        local_addr: SocketAddr,
        context: Value,
    ) -> ConnInput {
        let spiffe = peer.spiffe_id.as_ref();
        let opt = |s: Option<&str>| s.map_or(Value::Null, Value::from);
        ConnInput {
            source: obj([
                ("address", socket(remote)),
                ("principal", Value::from(peer.principal())),
            ]),
            destination: obj([
                ("address", socket(local_addr)),
                ("principal", Value::from(local.principal())),
            ]),
            peer: obj([
                ("spiffe_id", opt(spiffe.map(|s| s.id.as_str()))),
                ("trust_domain", opt(spiffe.map(|s| s.trust_domain.as_str()))),
                ("path", opt(spiffe.map(|s| s.path.as_str()))),
                ("uri_sans", strings(&peer.uri_sans)),
                ("dns_sans", strings(&peer.dns_sans)),
                ("subject", Value::from(peer.subject.as_str())),
                ("issuer", Value::from(peer.issuer.as_str())),
                ("serial", Value::from(peer.serial.as_str())),
                (
                    "fingerprint_sha256",
                    Value::from(peer.fingerprint_sha256.as_str()),
                ),
                ("not_before", rfc3339(peer.not_before)),
                ("not_after", rfc3339(peer.not_after)),
            ]),
            not_before: peer.not_before,
            not_after: peer.not_after,
            context,
        }
    }

    /// The whole `input` for one request.
    pub fn build(&self, req: &RequestInput<'_>) -> Value {
        let now_unix = req
            .now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut peer = self.peer.clone();
        if let Ok(map) = peer.as_object_mut() {
            map.insert(
                Value::from("expires_in_seconds"),
                Value::from(self.not_after - now_unix),
            );
            map.insert(
                Value::from("age_seconds"),
                Value::from(now_unix - self.not_before),
            );
        }
        let time = OffsetDateTime::from(req.now)
            .format(&Rfc3339)
            .map_or(Value::Null, Value::from);
        let http = obj([
            ("id", Value::from(req.id)),
            ("method", Value::from(req.method)),
            ("headers", headers_value(req)),
            ("path", Value::from(req.path)),
            ("host", Value::from(req.host)),
            ("scheme", Value::from("https")),
            ("protocol", Value::from(req.protocol)),
        ]);
        let mut http = http;
        if let (Some(text), Ok(map)) = (
            req.body.and_then(|b| b.inspected.text.as_ref()),
            http.as_object_mut(),
        ) {
            map.insert(Value::from("body"), Value::String(text.clone()));
        }
        let mut input = obj([
            (
                "attributes",
                obj([
                    ("source", self.source.clone()),
                    ("destination", self.destination.clone()),
                    ("request", obj([("time", time), ("http", http)])),
                ]),
            ),
            ("parsed_path", strings(req.parsed_path)),
            (
                "parsed_query",
                Value::from(
                    req.parsed_query
                        .iter()
                        .map(|(k, v)| (Value::from(k.as_str()), strings(v)))
                        .collect::<BTreeMap<_, _>>(),
                ),
            ),
            ("peer", peer),
            ("context", self.context.clone()),
            (
                "version",
                obj([
                    ("encoding", Value::from("protojson")),
                    ("ext_authz", Value::from("v3")),
                ]),
            ),
        ]);
        regate_fields(&mut input, req);
        input
    }
}

/// What regate adds to the Envoy-shaped input: the upgrade, the delegation token, and what
/// was read of a JSON body with the call being decided.
fn regate_fields(input: &mut Value, req: &RequestInput<'_>) {
    let Ok(map) = input.as_object_mut() else {
        return;
    };
    if let Some(protocol) = req.upgrade {
        map.insert(Value::from("upgrade"), Value::from(protocol));
    }
    if let Some(delegation) = req.delegation {
        map.insert(Value::from("delegation"), delegation.clone());
    }
    if let Some(approval) = req.approval {
        map.insert(Value::from("approval"), approval.clone());
    }
    let Some(body) = req.body else {
        return;
    };
    let inspected = body.inspected;
    if let Some(parsed) = &inspected.parsed {
        map.insert(Value::from("parsed_body"), parsed.clone());
    }
    if inspected.truncated {
        map.insert(Value::from("body_truncated"), Value::from(true));
    }
    if let Some(error) = &inspected.error {
        map.insert(Value::from("body_error"), Value::from(error.as_str()));
    }
    if let Some(call) = body.call {
        map.insert(Value::from("jsonrpc"), call.jsonrpc.clone());
        map.insert(Value::from("mcp"), call.mcp.clone());
    }
}

/// Header names are lowercase already (http normalises them); repeats are joined with ", "
/// as Envoy does. The pseudo-headers Envoy shows policies are included too.
fn headers_value(req: &RequestInput<'_>) -> Value {
    let mut map = BTreeMap::new();
    for name in req.headers.keys() {
        map.insert(
            Value::from(name.as_str()),
            joined(req.headers, name.as_str()),
        );
    }
    for pseudo in [":authority", ":method", ":path", ":scheme"] {
        if let Some(v) = pseudo_header(req, pseudo) {
            map.insert(Value::from(pseudo), v);
        }
    }
    Value::from(map)
}

/// Every value of one header, joined with ", ".
fn joined(headers: &HeaderMap, name: &str) -> Value {
    let mut joined = String::new();
    for (i, v) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            joined.push_str(", ");
        }
        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Value::from(joined)
}

fn pseudo_header(req: &RequestInput<'_>, name: &str) -> Option<Value> {
    Some(match name {
        ":authority" => Value::from(req.host),
        ":method" => Value::from(req.method),
        ":path" => Value::from(req.path),
        ":scheme" => Value::from("https"),
        _ => return None,
    })
}

/// One request's `input`, read part by part, for the decision cache's key: the parts a policy
/// reads most are made on their own, without building the whole document; anything else
/// comes from the whole document, built once. Always the value [`ConnInput::build`] has
/// there (a property test holds the two together).
pub struct InputView<'a> {
    conn: &'a ConnInput,
    req: &'a RequestInput<'a>,
    whole: std::cell::OnceCell<Value>,
}

impl<'a> InputView<'a> {
    pub fn new(conn: &'a ConnInput, req: &'a RequestInput<'a>) -> InputView<'a> {
        InputView {
            conn,
            req,
            whole: std::cell::OnceCell::new(),
        }
    }

    /// The whole document, built at most once.
    pub fn whole(&self) -> &Value {
        self.whole.get_or_init(|| self.conn.build(self.req))
    }

    /// The whole document, to keep.
    pub fn into_value(self) -> Value {
        match self.whole.into_inner() {
            Some(v) => v,
            None => self.conn.build(self.req),
        }
    }

    /// The value at `path`, or `None` where `input` has nothing.
    pub fn at(&self, path: &[Step]) -> Option<Value> {
        use Step::{Index, Key};
        let key = |i: usize| match path.get(i) {
            Some(Key(k)) => Some(k.as_str()),
            _ => None,
        };
        let req = self.req;
        match (key(0), key(1), key(2), key(3)) {
            (Some("attributes"), Some("request"), Some("http"), Some(field)) => {
                let value = match field {
                    "method" => Value::from(req.method),
                    "path" => Value::from(req.path),
                    "host" => Value::from(req.host),
                    "headers" => match path.get(4) {
                        Some(Key(name)) => {
                            let v = match pseudo_header(req, name) {
                                Some(v) => v,
                                None if req.headers.contains_key(name.as_str()) => {
                                    joined(req.headers, name)
                                }
                                None => return None,
                            };
                            return walk(&v, &path[5..]);
                        }
                        _ => return walk(self.whole(), path),
                    },
                    _ => return walk(self.whole(), path),
                };
                walk(&value, &path[4..])
            }
            (Some("attributes"), Some("source"), ..) => walk(&self.conn.source, &path[2..]),
            (Some("attributes"), Some("destination"), ..) => {
                walk(&self.conn.destination, &path[2..])
            }
            (Some("peer"), Some("expires_in_seconds" | "age_seconds"), ..)
            | (Some("peer"), None, ..) => walk(self.whole(), path),
            (Some("peer"), Some(_), ..) => walk(&self.conn.peer, &path[1..]),
            (Some("context"), ..) => walk(&self.conn.context, &path[1..]),
            (Some("parsed_path"), ..) => match path.get(1) {
                Some(Index(i)) => walk(&Value::from(req.parsed_path.get(*i)?.as_str()), &path[2..]),
                _ => walk(&strings(req.parsed_path), &path[1..]),
            },
            (Some("parsed_query"), Some(name), ..) => {
                walk(&strings(req.parsed_query.get(name)?), &path[2..])
            }
            (Some("upgrade"), ..) => walk(&Value::from(req.upgrade?), &path[1..]),
            (Some("delegation"), ..) => walk(req.delegation?, &path[1..]),
            (Some("approval"), ..) => walk(req.approval?, &path[1..]),
            (Some("parsed_body"), ..) => walk(req.body?.inspected.parsed.as_ref()?, &path[1..]),
            (Some("body_truncated"), ..) => req
                .body
                .filter(|b| b.inspected.truncated)
                .and_then(|_| walk(&Value::from(true), &path[1..])),
            (Some("body_error"), ..) => walk(
                &Value::from(req.body?.inspected.error.as_deref()?),
                &path[1..],
            ),
            (Some("jsonrpc"), ..) => walk(&req.body?.call?.jsonrpc, &path[1..]),
            (Some("mcp"), ..) => walk(&req.body?.call?.mcp, &path[1..]),
            _ => walk(self.whole(), path),
        }
    }
}

/// The value under `value` at `path`, as Rego reads it: keys into objects, indexes into
/// arrays (a number index into an object looks for a number key).
pub fn walk(value: &Value, path: &[Step]) -> Option<Value> {
    let mut current = value;
    for step in path {
        current = match (current, step) {
            (Value::Object(map), Step::Key(k)) => map.get(&Value::from(k.as_str()))?,
            (Value::Object(map), Step::Index(i)) => map.get(&Value::from(*i as u64))?,
            (Value::Array(items), Step::Index(i)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(current.clone())
}

/// A representative input, used to smoke-evaluate a policy set before it is published.
pub fn sample() -> Value {
    let peer = PeerIdentity {
        spiffe_id: crate::tls::identity::SpiffeId::parse(
            "spiffe://example.org/ns/default/sa/sample",
        ),
        uri_sans: vec!["spiffe://example.org/ns/default/sa/sample".into()],
        dns_sans: Vec::new(),
        subject: "CN=sample".into(),
        issuer: "CN=sample-ca".into(),
        serial: "01".into(),
        fingerprint_sha256: "00".repeat(32),
        not_before: 0,
        not_after: 4_102_444_800,
    };
    let local = PeerIdentity {
        spiffe_id: None,
        dns_sans: vec!["localhost".into()],
        ..peer.clone()
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], 40000));
    let conn = ConnInput::new(&peer, &local, addr, addr, Value::new_object());
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::HOST,
        http::HeaderValue::from_static("localhost"),
    );
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("regate-smoke-test"),
    );
    conn.build(&RequestInput {
        id: "smoke-test",
        method: "GET",
        headers: &headers,
        path: "/",
        host: "localhost",
        protocol: "HTTP/1.1",
        parsed_path: &[],
        parsed_query: &BTreeMap::new(),
        upgrade: None,
        delegation: None,
        approval: None,
        body: None,
        now: SystemTime::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::body::{calls, Inspected};

    /// The view's body fields are the whole document's, part by part.
    #[test]
    fn body_fields_read_alone_are_the_whole_documents() {
        let peer = PeerIdentity {
            spiffe_id: crate::tls::identity::SpiffeId::parse("spiffe://example.org/a"),
            uri_sans: Vec::new(),
            dns_sans: Vec::new(),
            subject: String::new(),
            issuer: String::new(),
            serial: "01".into(),
            fingerprint_sha256: String::new(),
            not_before: 0,
            not_after: 1,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let conn = ConnInput::new(&peer, &peer, addr, addr, Value::new_object());
        let json = serde_json::json!([
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
             "params": {"name": "search", "arguments": {"q": "x"}}},
        ]);
        let found = calls(&json).unwrap_or_default();
        let inspected = Inspected {
            text: Some(json.to_string().into()),
            parsed: Some(Value::from(json)),
            error: Some("a test's".into()),
            truncated: true,
            calls: None,
            ambiguous: None,
        };
        let headers = HeaderMap::new();
        let delegation = Value::from_json_str(r#"{"subject": "alice"}"#).unwrap_or(Value::Null);
        let req = RequestInput {
            id: "r",
            method: "POST",
            headers: &headers,
            path: "/mcp",
            host: "h",
            protocol: "HTTP/1.1",
            parsed_path: &[],
            parsed_query: &BTreeMap::new(),
            upgrade: None,
            delegation: Some(&delegation),
            approval: None,
            body: Some(BodyInput {
                inspected: &inspected,
                call: found.first(),
            }),
            now: SystemTime::now(),
        };
        let whole = conn.build(&req);
        let view = InputView::new(&conn, &req);
        let key = |s: &str| Step::Key(s.to_string());
        for path in [
            vec![key("parsed_body")],
            vec![key("parsed_body"), Step::Index(0), key("method")],
            vec![key("body_truncated")],
            vec![key("body_error")],
            vec![key("jsonrpc"), key("batch_index")],
            vec![key("mcp"), key("tool")],
            vec![key("mcp"), key("arguments"), key("q")],
            vec![key("delegation"), key("subject")],
            vec![key("attributes"), key("request"), key("http"), key("body")],
        ] {
            let alone = view.at(&path);
            assert!(alone.is_some(), "{path:?}");
            assert_eq!(alone, walk(&whole, &path), "{path:?}");
        }
    }
}
