//! The per-request path: check the target, clean the headers, build the input, decide,
//! record, then forward or deny.
//!
//! [`Connection`] holds what is known once per connection (the peer, its XFCC header, the
//! fixed part of the input). [`Proxy::handle`] is the whole life of one request; it reads the
//! current policy set at its start, so a reload applies to the next request on an open
//! connection. Responses for anything but a forwarded request are built in [`error`].

pub mod error;
pub mod forward;
pub mod path;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use regorus::Value;
use rustls_pki_types::CertificateDer;

use crate::audit::{Audit, DecisionRecord};
use crate::metrics::Metrics;
use crate::policy::input::{ConnInput, RequestInput};
use crate::policy::{Decision, PolicySet, PolicyStore};
use crate::tls::identity::PeerIdentity;
use crate::tls::{TlsState, TlsStore};
use error::ProxyError;
use forward::Upstream;

/// Every response body regate sends: the upstream's, streamed, or its own.
pub type Body = Either<Incoming, Full<Bytes>>;

const MAX_REQUEST_ID_LEN: usize = 128;

/// Shared by all connections.
pub struct Proxy {
    pub policies: PolicyStore,
    pub tls: TlsStore,
    pub upstream: Upstream,
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
    pub trust_domains: Vec<String>,
    pub context: Value,
}

/// What regate knows about one client connection, computed at the handshake.
pub struct Connection {
    pub peer: PeerIdentity,
    /// The chain the peer presented, leaf first, kept to re-verify after a CA change.
    chain: Vec<CertificateDer<'static>>,
    /// The CA generation this chain last verified against.
    verified_ca: AtomicU64,
    input: ConnInput,
    xfcc: HeaderValue,
    xff: HeaderValue,
    /// False when trust domains are configured and the peer is in none of them.
    trusted_domain: bool,
}

impl Connection {
    pub fn new(
        proxy: &Proxy,
        chain: Vec<CertificateDer<'static>>,
        peer: PeerIdentity,
        tls: &TlsState,
        remote: SocketAddr,
        local_addr: SocketAddr,
    ) -> Connection {
        let local = &tls.cert.local;
        let trusted_domain = peer.in_trust_domains(&proxy.trust_domains);
        let xfcc = HeaderValue::from_str(&xfcc(&peer, local))
            .unwrap_or_else(|_| HeaderValue::from_static("Hash=invalid"));
        let xff = HeaderValue::from_str(&remote.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Connection {
            input: ConnInput::new(&peer, local, remote, local_addr, proxy.context.clone()),
            peer,
            chain,
            verified_ca: AtomicU64::new(tls.ca_generation),
            xfcc,
            xff,
            trusted_domain,
        }
    }
}

/// Envoy's `x-forwarded-client-cert`: `By` is regate's own URI SAN, `Hash` the SHA-256 of
/// the client leaf, then its subject and SANs. Values with `,;="` are quoted.
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
    out.push_str(&format!(
        ";Subject=\"{}\"",
        clean(&peer.subject)
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    ));
    for uri in &peer.uri_sans {
        out.push_str(&format!(";URI={}", quoted(uri)));
    }
    for dns in &peer.dns_sans {
        out.push_str(&format!(";DNS={}", quoted(dns)));
    }
    out
}

/// The parts of a request every decision record carries, whatever the outcome.
struct Seen {
    request_id: String,
    /// From a W3C `traceparent`, which is itself passed upstream unchanged.
    trace_id: Option<String>,
    method: http::Method,
    path: String,
    host: String,
}

impl Proxy {
    /// Handle one request end to end. Never fails: every error is a response.
    pub async fn handle(&self, conn: &Connection, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let seen = Seen {
            request_id: request_id(req.headers()),
            trace_id: trace_id(req.headers()),
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().to_string(), |p| p.as_str().to_string()),
            host: host(&req),
        };
        tracing::Span::current().record("request.id", seen.request_id.as_str());
        // The policy set is read once, at the start: this request is decided, and recorded,
        // with one revision even if a reload lands while it is being forwarded.
        let (decided, revision) = {
            let policies = self.policies.load();
            let decided = self.authorize(conn, req, &seen, &policies);
            (decided, policies.revision.clone())
        };
        let mut upstream = None;
        let (response, allowed, reason, eval_ns) = match decided {
            Err(err) => {
                let eval_ns = match &err {
                    ProxyError::Denied(d) => d.eval_ns,
                    _ => 0,
                };
                let reason = err.reason();
                (err.into_response(&seen.request_id), false, reason, eval_ns)
            }
            Ok((req, decision)) => {
                let sent = Instant::now();
                let forwarded = self.forward(req, &decision).await;
                let upstream_time = sent.elapsed();
                match forwarded {
                    Ok(resp) => {
                        upstream = Some((resp.status().as_u16(), upstream_time.as_nanos() as u64));
                        self.metrics.upstream(upstream_time);
                        (resp, true, decision.reason, decision.eval_ns)
                    }
                    Err(err) => {
                        let reason = err.reason();
                        self.metrics.upstream_error(match &err {
                            ProxyError::UpstreamUnreachable(_) => "unreachable",
                            ProxyError::UpstreamTimeout => "timeout",
                            _ => "error",
                        });
                        tracing::warn!(request.id = %seen.request_id, error = %err, "upstream request failed");
                        (
                            err.into_response(&seen.request_id),
                            true,
                            reason,
                            decision.eval_ns,
                        )
                    }
                }
            }
        };
        let duration = start.elapsed();
        self.audit.log(&DecisionRecord {
            request_id: &seen.request_id,
            trace_id: seen.trace_id.as_deref(),
            spiffe_id: conn.peer.spiffe_id.as_ref().map(|s| s.id.as_str()),
            serial: &conn.peer.serial,
            method: seen.method.as_str(),
            path: &seen.path,
            host: &seen.host,
            allowed,
            http_status: response.status().as_u16(),
            reason: &reason,
            policy_revision: &revision,
            eval_ns,
            upstream_status: upstream.map(|(status, _)| status),
            upstream_ns: upstream.map(|(_, ns)| ns),
            duration_ns: duration.as_nanos() as u64,
        });
        let decision = if allowed { "allow" } else { "deny" };
        self.metrics.request(decision, &reason, duration, eval_ns);
        response
    }

    /// Everything up to the decision. On allow, returns the request as it will be forwarded.
    fn authorize(
        &self,
        conn: &Connection,
        req: Request<Incoming>,
        seen: &Seen,
        policies: &PolicySet,
    ) -> Result<(Request<Incoming>, Decision), ProxyError> {
        let target = path::parse(&seen.path)?;
        // RFC 9112 §3.2: exactly one Host (or an :authority) is required.
        if seen.host.is_empty() || req.headers().get_all(header::HOST).iter().count() > 1 {
            return Err(ProxyError::BadRequest("missing or repeated host"));
        }
        let (mut parts, body) = req.into_parts();
        forward::prepare_headers(
            &mut parts.headers,
            parts.version,
            &forward::Forwarded {
                xfcc: &conn.xfcc,
                xff: &conn.xff,
                request_id: &seen.request_id,
                host: &seen.host,
            },
        )?;

        let now = SystemTime::now();
        // The policy sees the headers exactly as the upstream will receive them.
        let decision = if let Some(reason) = self.still_trusted(conn, now) {
            Decision::deny(reason)
        } else if !conn.trusted_domain {
            Decision::deny("untrusted_trust_domain")
        } else {
            policies.decide(conn.input.build(&RequestInput {
                id: &seen.request_id,
                method: seen.method.as_str(),
                headers: &parts.headers,
                path: &seen.path,
                host: &seen.host,
                protocol: protocol(parts.version),
                parsed_path: &target.segments,
                parsed_query: &target.query,
                now,
            }))
        };
        if let Some(e) = &decision.error {
            tracing::error!(
                request.id = %seen.request_id,
                policy.revision = %policies.revision,
                reason = %decision.reason,
                error = %redact(e, &parts.headers),
                "policy evaluation failed; denying",
            );
        }
        if !decision.allowed {
            return Err(ProxyError::Denied(Box::new(decision)));
        }
        for name in &decision.remove_headers {
            parts.headers.remove(name);
        }
        if !decision.query_set.is_empty() || !decision.query_remove.is_empty() {
            let target =
                path::rewrite_query(&seen.path, &decision.query_remove, &decision.query_set);
            parts.uri = target
                .parse()
                .map_err(|_| ProxyError::BadRequest("the policy's query rewrite is not a URI"))?;
        }
        // A policy header replaces the client's; a list of values for one name is kept whole.
        let mut previous: Option<&http::HeaderName> = None;
        for (name, value) in &decision.headers {
            if previous == Some(name) {
                parts.headers.append(name.clone(), value.clone());
            } else {
                parts.headers.insert(name.clone(), value.clone());
            }
            previous = Some(name);
        }
        Ok((Request::from_parts(parts, body), decision))
    }

    /// The handshake checked the peer once; a connection can outlive that. Per request, its
    /// certificate must still be within its validity, and after the CA bundle changed, its
    /// chain must still verify against the current bundle (checked once per change).
    fn still_trusted(&self, conn: &Connection, now: SystemTime) -> Option<&'static str> {
        let now_unix = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if conn.peer.expired_at(now_unix) {
            return Some("certificate_expired");
        }
        let tls = self.tls.load();
        if conn.verified_ca.load(Ordering::Acquire) != tls.ca_generation {
            if !tls.ca.verifies(&conn.chain) {
                return Some("untrusted_issuer");
            }
            conn.verified_ca.store(tls.ca_generation, Ordering::Release);
        }
        None
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        decision: &Decision,
    ) -> Result<Response<Body>, ProxyError> {
        let client_upgrade =
            forward::is_upgrade(req.version(), req.headers()).then(|| hyper::upgrade::on(&mut req));
        let mut resp = self.upstream.send(req).await?;
        forward::strip_response(&mut resp);
        if let Some(client_upgrade) = client_upgrade {
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                forward::splice_upgrade(client_upgrade, hyper::upgrade::on(&mut resp));
            }
        }
        let (mut head, body) = resp.into_parts();
        for (name, value) in &decision.response_headers {
            head.headers.append(name.clone(), value.clone());
        }
        Ok(Response::from_parts(head, Either::Left(body)))
    }
}

/// Honour a sane incoming `x-request-id` so one id follows the request through every hop;
/// otherwise make one.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(forward::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_REQUEST_ID_LEN
                && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string)
}

/// The trace id of a well-formed W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2);
    valid.then(|| trace.to_string())
}

/// HTTP/2 names the host in the URI (`:authority`), HTTP/1.1 in `Host`.
fn host(req: &Request<Incoming>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// Credentials never reach a log, even inside a policy's error message.
fn redact(message: &str, headers: &http::HeaderMap) -> String {
    let mut out = message.to_string();
    for name in [
        header::AUTHORIZATION,
        header::COOKIE,
        header::PROXY_AUTHORIZATION,
    ] {
        for v in headers.get_all(&name) {
            if let Ok(v) = v.to_str() {
                if !v.is_empty() {
                    out = out.replace(v, "[redacted]");
                    for part in v.split([' ', ';', ',', '=']).filter(|p| p.len() >= 4) {
                        out = out.replace(part, "[redacted]");
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_is_a_valid_header_whatever_the_certificate_names_hold() {
        let peer = PeerIdentity {
            spiffe_id: None,
            uri_sans: vec!["spiffe://example.org/a".into()],
            dns_sans: vec!["x;y".into()],
            subject: "CN=evil\"\nname\\".into(),
            issuer: String::new(),
            serial: "01".into(),
            fingerprint_sha256: "ab".into(),
            not_before: 0,
            not_after: 0,
        };
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
}
