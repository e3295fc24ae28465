//! Forwarding to the local application: header hygiene (RFC 9110 hop-by-hop rules, the
//! forwarded-identity headers), the pooled upstream client, and HTTP/1.1 upgrades.
//!
//! Bodies are never buffered: the client's body streams to the upstream, and the upstream's
//! body and trailers stream back.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::error::ProxyError;
use crate::config::UpstreamProtocol;

pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The pooled connections to the application.
pub struct Upstream {
    authority: Authority,
    protocol: UpstreamProtocol,
    timeout: Duration,
    http1: Client<UpstreamConnector, Incoming>,
    http2: Client<UpstreamConnector, Incoming>,
}

/// Dials the one upstream whatever authority the request URI names. The URI can then
/// carry the client's own authority, which HTTP/2 sends as `:authority`, so the application
/// sees the host the policy saw.
#[derive(Clone)]
pub struct UpstreamConnector {
    inner: HttpConnector,
    target: Uri,
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = <HttpConnector as tower_service::Service<Uri>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _requested: Uri) -> Self::Future {
        self.inner.call(self.target.clone())
    }
}

impl Upstream {
    pub fn new(authority: Authority, protocol: UpstreamProtocol, timeout: Duration) -> Upstream {
        let mut inner = HttpConnector::new();
        inner.set_nodelay(true);
        inner.set_connect_timeout(Some(Duration::from_secs(5)));
        let target = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        let connector = UpstreamConnector { inner, target };
        let client = |http2_only: bool| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .http2_only(http2_only)
                // regate sets Host itself, from what the client sent.
                .set_host(false)
                .build(connector.clone())
        };
        Upstream {
            authority,
            protocol,
            timeout,
            http1: client(false),
            http2: client(true),
        }
    }

    /// Send the (already checked and decided) request; the response head must arrive within
    /// the upstream timeout.
    pub async fn send(&self, mut req: Request<Incoming>) -> Result<Response<Incoming>, ProxyError> {
        let use_h2 = match self.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Auto => req.version() == Version::HTTP_2,
        };
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.path_and_query = Some(path);
        let client = if use_h2 {
            // HTTP/2 carries the host as :authority, taken from the URI.
            let host = req.headers_mut().remove(header::HOST);
            let authority = host
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .ok_or(ProxyError::BadRequest("the host is not a valid authority"))?;
            parts.authority = Some(authority);
            *req.version_mut() = Version::HTTP_2;
            &self.http2
        } else {
            // One pool key for every HTTP/1.1 request; the Host header says the rest.
            parts.authority = Some(self.authority.clone());
            *req.version_mut() = Version::HTTP_11;
            &self.http1
        };
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("bad uri"))?;
        match tokio::time::timeout(self.timeout, client.request(req)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout),
            Ok(Err(e)) if e.is_connect() => Err(ProxyError::UpstreamUnreachable(e)),
            Ok(Err(e)) => Err(ProxyError::Upstream(e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// Whether an HTTP/1.1 request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade(req_version: Version, headers: &HeaderMap) -> bool {
    req_version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Remove what applies only to one hop (RFC 9110 §7.6.1): the fixed hop-by-hop fields and
/// every field the `Connection` header names. For an upgrade, `Upgrade` and
/// `Connection: upgrade` are kept so the application can accept it.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    let upgrade_value = headers.remove(header::UPGRADE);
    for name in [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    // `TE: trailers` is end-to-end in practice: gRPC servers require it.
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
    if upgrade {
        if let Some(v) = upgrade_value {
            headers.insert(header::UPGRADE, v);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
}

/// What regate itself adds to a forwarded request.
pub struct Forwarded<'a> {
    pub xfcc: &'a HeaderValue,
    pub xff: &'a HeaderValue,
    pub request_id: &'a str,
    pub host: &'a str,
}

/// The headers as the upstream will receive them (and so as the policy sees them):
/// hop-by-hop headers removed, regate's forwarded headers set, Host set to the request's
/// host. `regate policy eval` builds its input through here too.
pub fn prepare_headers(
    headers: &mut HeaderMap,
    version: Version,
    forwarded: &Forwarded<'_>,
) -> Result<(), ProxyError> {
    let upgrade = is_upgrade(version, headers);
    strip_hop_by_hop(headers, upgrade);
    let request_id = HeaderValue::from_str(forwarded.request_id)
        .map_err(|_| ProxyError::BadRequest("invalid request id"))?;
    set_forwarded(headers, forwarded.xfcc, forwarded.xff, &request_id);
    let host = HeaderValue::from_str(forwarded.host)
        .map_err(|_| ProxyError::BadRequest("invalid host"))?;
    headers.insert(header::HOST, host);
    Ok(())
}

/// Replace whatever the client sent in the forwarded-identity headers with regate's own.
/// A client must never be able to speak for its certificate or address.
fn set_forwarded(
    headers: &mut HeaderMap,
    xfcc: &HeaderValue,
    xff: &HeaderValue,
    request_id: &HeaderValue,
) {
    headers.insert(X_FORWARDED_CLIENT_CERT, xfcc.clone());
    headers.insert(X_FORWARDED_FOR, xff.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    headers.insert(X_REQUEST_ID, request_id.clone());
}

/// Bridge the two upgraded connections once both sides have switched protocols.
pub fn splice_upgrade(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended");
        }
    });
}

/// Clean the upstream's response head before it goes to the client.
pub fn strip_response(resp: &mut Response<Incoming>) {
    let upgrade = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(resp.headers_mut(), upgrade);
}
