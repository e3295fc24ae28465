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
    pub now: SystemTime,
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
        if let (Some(protocol), Ok(map)) = (req.upgrade, input.as_object_mut()) {
            map.insert(Value::from("upgrade"), Value::from(protocol));
        }
        input
    }
}

/// Header names are lowercase already (http normalises them); repeats are joined with ", "
/// as Envoy does. The pseudo-headers Envoy shows policies are included too.
fn headers_value(req: &RequestInput<'_>) -> Value {
    let mut map = BTreeMap::new();
    for name in req.headers.keys() {
        let mut joined = String::new();
        for (i, v) in req.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                joined.push_str(", ");
            }
            joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
        map.insert(Value::from(name.as_str()), Value::from(joined));
    }
    map.insert(Value::from(":authority"), Value::from(req.host));
    map.insert(Value::from(":method"), Value::from(req.method));
    map.insert(Value::from(":path"), Value::from(req.path));
    map.insert(Value::from(":scheme"), Value::from("https"));
    Value::from(map)
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
        now: SystemTime::now(),
    })
}
