//! Step 4 of a request: forwarding to the local application, within the upstream limits: the
//! pooled upstream client, and the response head on its way back. A `101` is passed on only
//! for the upgrade the client asked for; the tunnel then runs on its own (`super::tunnel`).
//!
//! Bodies are never buffered: the client's body streams to the upstream, and the upstream's
//! body and trailers stream back. The one exception is an MCP `tools/list` result, filtered
//! for the caller (`super::tools_list`): a JSON one is read whole within the inspection
//! limit; an event stream still streams, each event held only until it is whole. With tracing
//! on, the upstream's `traceparent` names regate's span for the call
//! (`crate::telemetry::Trace`); off, the client's passes unchanged.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::request::body::Replay;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use std::sync::Arc;

use http::StatusCode;
use regorus::Value;

use super::connection::Connection;
use super::effects::Allowed;
use super::error::ProxyError;
use super::record::{Noted, Seen};
use super::response::{Body, Slots};
use super::{tunnel, Proxy};
use crate::request::headers::strip_hop_by_hop;
use crate::telemetry::Trace;

/// Protocol spoken to the upstream (`--upstream-protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// Cleartext HTTP/2 with prior knowledge (h2c), e.g. a gRPC server.
    Http2,
    /// HTTP/2 for HTTP/2 clients, HTTP/1.1 otherwise.
    Auto,
}

/// Send an allowed request upstream, within the upstream limits: the response, and the
/// places it holds in those limits until its body is sent (none for a tunnel, which keeps its
/// own).
pub(super) async fn forward(
    proxy: &Proxy,
    conn: &Arc<Connection>,
    allowed: Allowed,
    seen: &Seen,
    noted: &mut Noted,
    trace: Option<&mut Trace>,
) -> Result<(Response<Body>, Option<Slots>), ProxyError> {
    let Allowed {
        mut req,
        decision,
        upgrade,
        input,
        revision,
        listing,
        ..
    } = allowed;
    if listing.is_some() {
        super::tools_list::Listing::prepare(&mut req);
    }
    // An HTTP/2 client can have many streams in flight on one connection; they queue for the
    // connection's share rather than fan out into as many upstream connections.
    let per_connection = match conn.upstream_slots.clone().try_acquire_owned() {
        Ok(permit) => permit,
        // Only a busy connection pays for a timer.
        Err(_) => tokio::time::timeout(
            proxy.upstream.timeout(),
            conn.upstream_slots.clone().acquire_owned(),
        )
        .await
        .map_err(|_| ProxyError::UpstreamOverloaded)?
        .map_err(|_| ProxyError::UpstreamOverloaded)?,
    };
    let total = proxy
        .limits
        .upstream_total
        .clone()
        .try_acquire_owned()
        .map_err(|_| ProxyError::UpstreamOverloaded)?;
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let mut resp = match trace {
        None => proxy.upstream.send(req).await?,
        // The upstream is told of regate's span for the call, which is timed from here to
        // the response head.
        Some(trace) => {
            trace.upstream_sent(req.headers_mut());
            let sent = proxy.upstream.send(req).await;
            trace.upstream_answered(sent.as_ref().ok().map(|r| r.status().as_u16()));
            sent?
        }
    };
    let slots = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(protocol), Some(client_upgrade)) = (upgrade, client_upgrade) else {
            return Err(ProxyError::UpstreamProtocol(
                "it switched protocols on a request that was not an upgrade",
            ));
        };
        if !crate::request::upgrade::switched_to(resp.headers(), &protocol) {
            return Err(ProxyError::UpstreamProtocol(
                "it switched to a protocol the client did not ask for",
            ));
        }
        strip_response(&mut resp, Some(&protocol));
        tunnel::spawn(
            proxy.tunnel_watch(),
            conn.clone(),
            client_upgrade,
            hyper::upgrade::on(&mut resp),
            tunnel::Opened {
                request_id: seen.request_id.clone(),
                protocol,
                input: input.unwrap_or(Value::Undefined),
                revision,
                upstream_slot: total,
            },
        );
        // The client connection is the tunnel's now; only the upstream place stays taken.
        None
    } else {
        strip_response(&mut resp, None);
        Some(Slots {
            _connection: per_connection,
            _total: total,
        })
    };
    let mut resp = match listing {
        Some(listing) => {
            super::tools_list::filter(proxy, conn, listing, resp, &seen.request_id, noted).await?
        }
        None => resp.map(Body::upstream),
    };
    for (name, value) in &decision.response_headers {
        resp.headers_mut().append(name.clone(), value.clone());
    }
    Ok((resp, slots))
}

/// Idle connections to the application kept open for reuse.
const MAX_IDLE_UPSTREAM: usize = 256;

/// The pooled connections to the application.
pub struct Upstream {
    authority: Authority,
    protocol: UpstreamProtocol,
    timeout: Duration,
    http1: Client<UpstreamConnector, Replay>,
    http2: Client<UpstreamConnector, Replay>,
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
                // A burst opens as many upstream connections as it has requests in flight;
                // afterwards, keep only as many idle as nginx's `keepalive 256` would, so the
                // memory of the rest comes back at once.
                .pool_max_idle_per_host(MAX_IDLE_UPSTREAM)
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

    /// How long the upstream may take to answer (`--upstream-timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send the (already checked and decided) request; the response head must arrive within
    /// the upstream timeout.
    pub async fn send(&self, mut req: Request<Replay>) -> Result<Response<Incoming>, ProxyError> {
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

/// Clean the upstream's response head before it goes to the client: hop-by-hop headers
/// out, as on requests. After a `101` to an allowed upgrade, `Upgrade` and
/// `Connection: upgrade` are put back for the client.
pub fn strip_response(resp: &mut Response<Incoming>, upgrade: Option<&str>) {
    strip_hop_by_hop(resp.headers_mut());
    if let Some(protocol) = upgrade {
        if let Ok(value) = HeaderValue::from_str(protocol) {
            resp.headers_mut().insert(header::UPGRADE, value);
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
}
