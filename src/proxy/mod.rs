//! The per-request path: check the request and clean its headers (`request`), build the
//! input, decide, record, then forward or deny.
//!
//! [`Connection`] holds what is known once per connection (the peer, its XFCC header, the
//! fixed part of the input). [`Proxy::handle`] is the whole life of one request; it reads the
//! current policy set at its start, so a reload applies to the next request on an open
//! connection. Responses for anything but a forwarded request are built in [`error`]. A
//! request that got as far as a decision is recorded whatever happens next, the client
//! going away included (`Pending`).
//!
//! Two things come after the decision without changing it: the shadow policy set ([`shadow`])
//! is started on the same input, and in `--mode audit` a deny by the policy is forwarded and
//! recorded as `would_deny`.

pub mod connection;
pub mod error;
pub mod forward;
pub mod shadow;
pub mod tunnel;

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use regorus::Value;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::audit::{Audit, DecisionRecord, ShadowOutcome};
use crate::config::Mode;
use crate::metrics::Metrics;
use crate::policy::input::{BodyInput, InputView, RequestInput};
use crate::policy::{Decision, Evaluator, PolicySet, PolicyStore};
use crate::request::{self, headers::X_REQUEST_ID, Forwarded};
use crate::tls::TlsStore;
pub use connection::Connection;
use connection::InFlight;
use error::ProxyError;
use forward::Upstream;

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
    pub rules: request::Rules,
    pub evaluator: Evaluator,
    pub limits: Limits,
    /// Moves on every policy or CA reload that lands; tunnels judge themselves again.
    pub changes: watch::Receiver<u64>,
    /// The kill switch, checked before any policy.
    pub revocations: Arc<crate::revocations::Revocations>,
    /// Delegation tokens, verified before any policy.
    pub delegation: Arc<crate::delegation::Verifier>,
    /// How JSON bodies are read for the policy.
    pub inspection: Inspection,
    /// True once shutdown has begun.
    pub shutdown: watch::Receiver<bool>,
    /// Policy failures are logged at most once a second.
    pub failure_log: crate::limits::RateLimited,
    /// Where each connection's identity and its requests are counted.
    pub identities: Arc<crate::identities::Inventory>,
    /// `--decision-log-input`: records keep the policy input, as `redaction` records it.
    pub record_input: bool,
    /// Credential headers: digested in a recorded input, kept out of a policy error's log
    /// line.
    pub redaction: crate::audit::input::Recording,
    /// `--shadow-policies`: evaluated beside the policy, never deciding.
    pub shadow: Option<shadow::Shadow>,
    /// `--mode`: whether a policy deny is answered or only recorded.
    pub mode: Mode,
    /// `--replace-request-id`: the upstream always gets regate's own `x-request-id`, never
    /// the client's.
    pub replace_request_id: bool,
}

/// `--inspect-body-limit`, `--inspect-body-budget[-per-identity]`, `--inspect-body-timeout`.
pub struct Inspection {
    /// JSON bodies up to this many bytes are read for the policy; 0 reads none.
    pub limit: usize,
    /// What every read body is charged to while it is held.
    pub budget: Arc<crate::limits::BodyBudget>,
    /// How long a body may take to arrive.
    pub timeout: std::time::Duration,
}

/// Bounds on what the proxy sends upstream.
pub struct Limits {
    /// `--max-upstream-requests`, shared by every connection.
    pub upstream_total: Arc<Semaphore>,
    /// `--max-upstream-requests-per-connection`.
    pub upstream_per_connection: usize,
}

/// Every response body regate sends: the upstream's, streamed, or its own. It holds the
/// request's place (in flight on its connection, and its upstream slots) until it is sent or
/// dropped.
pub struct Body {
    inner: Either<Incoming, Full<Bytes>>,
    held: Held,
}

#[derive(Default)]
struct Held {
    _in_flight: Option<InFlight>,
    _slots: Option<Slots>,
    /// The body of a request answered without forwarding, read to its end (within bounds)
    /// once the answer is sent.
    unread: Option<request::body::Replay>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(body) = self.unread.take() {
            request::body::drain_later(body);
        }
    }
}

/// A request's places in the upstream limits.
struct Slots {
    _connection: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl Body {
    /// A body regate makes itself.
    pub fn own(bytes: Bytes) -> Body {
        Body {
            inner: Either::Right(Full::new(bytes)),
            held: Held::default(),
        }
    }

    fn upstream(body: Incoming) -> Body {
        Body {
            inner: Either::Left(body),
            held: Held::default(),
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = <Either<Incoming, Full<Bytes>> as hyper::body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.held = Held::default();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The parts of a request every decision record carries, whatever the outcome.
#[derive(Clone)]
struct Seen {
    /// regate's own id: the record's, and the one its answers name.
    request_id: String,
    /// The client's own `x-request-id`, when it is sane.
    client_request_id: Option<String>,
    /// Whether the upstream gets the client's id (else regate's).
    forward_client_id: bool,
    /// From a W3C `traceparent`, which is itself passed upstream unchanged.
    trace_id: Option<String>,
    method: http::Method,
    path: String,
    host: String,
}

impl Seen {
    fn of(req: &Request<Incoming>, replace_request_id: bool) -> Seen {
        let client_request_id = client_request_id(req.headers());
        Seen {
            request_id: uuid::Uuid::new_v4().to_string(),
            forward_client_id: client_request_id.is_some() && !replace_request_id,
            client_request_id,
            trace_id: trace_id(req.headers()),
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().to_string(), |p| p.as_str().to_string()),
            host: host(req),
        }
    }

    /// The `x-request-id` the upstream gets: a caller inside the mesh keeps its own, so a
    /// call can be followed across services; regate's when it sent none (or a malformed one),
    /// or with `--replace-request-id`.
    fn forwarded_request_id(&self) -> &str {
        match (&self.client_request_id, self.forward_client_id) {
            (Some(theirs), true) => theirs,
            _ => &self.request_id,
        }
    }
}

/// An allowed request, ready to forward.
struct Allowed {
    req: Request<request::body::Replay>,
    decision: Decision,
    upgrade: Option<String>,
    /// The input that was allowed, kept for a tunnel to be judged again.
    input: Option<Value>,
    revision: Arc<str>,
}

impl Proxy {
    /// Handle one request end to end. Never fails: every error is a response.
    pub async fn handle(
        self: &Arc<Self>,
        conn: &Arc<Connection>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let in_flight = conn.activity.begin();
        let seen = Seen::of(&req, self.replace_request_id);
        tracing::Span::current().record("request.id", seen.request_id.as_str());
        // The policy set is read once, at the start: this request is decided, and recorded,
        // with one revision even if a reload lands while it is being forwarded.
        let policies = self.policies.load_full();
        let mut record = Pending::new(self, conn, &seen, policies.revision.clone());
        let (parts, body) = req.into_parts();
        // The body stays here until it is forwarded: a request refused before its body was
        // read keeps it until the answer is sent, then reads what is left of it (within
        // bounds), so the client reads the answer, not a reset of its upload.
        let mut body = Some(request::body::Replay::streaming(body));
        let authorized = self
            .authorize(conn, parts, &mut body, &seen, &policies, &mut record.noted)
            .await;
        let mut unread = None;
        let (mut response, slots) = match authorized {
            Err(err) => {
                record.denied(&err);
                unread = body.take();
                (err.into_response(&seen.request_id), None)
            }
            Ok(allowed) => {
                record.allowed(&allowed.decision);
                let sent = Instant::now();
                match self.forward(conn, allowed, &seen).await {
                    Ok((resp, slots)) => {
                        let upstream_time = sent.elapsed();
                        self.metrics.upstream(upstream_time);
                        record.upstream =
                            Some((resp.status().as_u16(), upstream_time.as_nanos() as u64));
                        (resp, slots)
                    }
                    Err(err) => {
                        self.metrics.upstream_error(match &err {
                            ProxyError::UpstreamUnreachable(_) => "unreachable",
                            ProxyError::UpstreamTimeout => "timeout",
                            ProxyError::UpstreamOverloaded => "overloaded",
                            _ => "error",
                        });
                        // Overload is the clients' doing, one line per request would flood
                        // the log; the metric and the records count it.
                        if !matches!(err, ProxyError::UpstreamOverloaded) {
                            tracing::warn!(request.id = %seen.request_id, error = %err, "upstream request failed");
                        }
                        record.reason = err.reason();
                        (err.into_response(&seen.request_id), None)
                    }
                }
            }
        };
        record.finish(response.status());
        response.body_mut().held = Held {
            _in_flight: Some(in_flight),
            _slots: slots,
            unread,
        };
        response
    }

    /// Everything up to the decision. On allow, returns the request as it will be forwarded.
    /// `body` is taken when it is read or forwarded; what is left of it is the caller's.
    async fn authorize(
        &self,
        conn: &Connection,
        mut parts: http::request::Parts,
        body: &mut Option<request::body::Replay>,
        seen: &Seen,
        policies: &Arc<PolicySet>,
        noted: &mut Noted,
    ) -> Result<Allowed, ProxyError> {
        let head = request::Head {
            method: &parts.method,
            version: parts.version,
            scheme: parts.uri.scheme_str(),
            authority: parts.uri.authority().map(|a| a.as_str()),
            target: &seen.path,
        };
        let prepared = request::prepare(
            &head,
            &mut parts.headers,
            &Forwarded {
                xfcc: &conn.xfcc,
                xff: &conn.xff,
                request_id: seen.forwarded_request_id(),
                host: &seen.host,
            },
            &self.rules,
        )?;

        let now = SystemTime::now();
        let mut kept_input = None;
        // Refused before anything else: a revoked or expired certificate, a foreign trust
        // domain. Then a token that does not verify is refused (401), and the policy never
        // sees it; a verified one whose jti is revoked is denied.
        let refused = match self.still_trusted(conn, now) {
            Some(reason) => Some(reason),
            None if !conn.trusted_domain => Some("untrusted_trust_domain"),
            None => None,
        };
        if refused.is_none() {
            noted.delegation = self
                .delegation
                .verify(
                    &parts.headers,
                    &prepared.target.query,
                    &conn.cert_sha256,
                    now,
                )
                .map_err(ProxyError::Unauthenticated)?;
        }
        let token_revoked = noted
            .delegation
            .as_ref()
            .and_then(|d| d.jti.as_deref())
            .is_some_and(|jti| self.revocations.jti_revoked(jti));
        // Two content types leave the upstream to pick one; an upgrade carries no body (a body
        // beside it would reach a server that ignores the upgrade, unread by the policy).
        if parts
            .headers
            .get_all(http::header::CONTENT_TYPE)
            .iter()
            .count()
            > 1
        {
            return Err(ProxyError::BadRequest("more than one content-type"));
        }
        if prepared.upgrade.is_some()
            && body
                .as_ref()
                .is_some_and(|b| !hyper::body::Body::is_end_stream(b))
        {
            return Err(ProxyError::BadRequest("an upgrade request carries a body"));
        }
        // A JSON body is read (up to the limit) for the policy, and forwarded as read.
        let inspect = self.inspection.limit > 0
            && refused.is_none()
            && !token_revoked
            && request::body::is_json(&parts.headers);
        let encoded = parts
            .headers
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
        let inspected = if inspect && encoded {
            // regate does not decompress; the policy is told it cannot read this body.
            Some(request::body::Inspected {
                error: Some("the body is compressed (content-encoding)".into()),
                ..Default::default()
            })
        } else if let Some(incoming) = body
            .take_if(|_| inspect)
            .and_then(request::body::Replay::into_incoming)
        {
            let charge = self.inspection.budget.charge(conn.budget_key.clone());
            let (replay, inspected) = tokio::time::timeout(
                self.inspection.timeout,
                request::body::inspect(incoming, self.inspection.limit, charge),
            )
            .await
            .map_err(|_| ProxyError::BodyTimeout)??;
            *body = Some(replay);
            // Keys a server could read otherwise than the policy: refused, as an ambiguous
            // path is.
            if inspected.ambiguous.is_some() {
                return Err(ProxyError::AmbiguousBody);
            }
            Some(inspected)
        } else {
            None
        };
        let calls: &[request::body::Call] = inspected
            .as_ref()
            .and_then(|i| i.calls.as_deref())
            .unwrap_or_default();
        // Whether the policy made the decision (not regate's own refusals before it).
        let mut by_policy = false;
        let mut decision = if let Some(reason) = refused {
            Decision::deny(reason)
        } else if token_revoked {
            Decision::deny("revoked")
        } else if calls.len() > request::body::MAX_BATCH {
            Decision::deny("batch_too_large")
        } else {
            // Each JSON-RPC call of a batch is decided on its own; one denied call denies the
            // request, and the record names it. Without JSON-RPC, one evaluation, with no call.
            let mut outcome: Option<Decision> = None;
            let delegation = noted.delegation.as_ref().map(|d| &d.input);
            // The policy sees the headers exactly as the upstream will receive them.
            let request_for = |call| RequestInput {
                id: &seen.request_id,
                method: seen.method.as_str(),
                headers: &parts.headers,
                path: &seen.path,
                host: &seen.host,
                protocol: protocol(parts.version),
                parsed_path: &prepared.target.segments,
                parsed_query: &prepared.target.query,
                upgrade: prepared.upgrade.as_deref(),
                delegation,
                body: inspected
                    .as_ref()
                    .map(|inspected| BodyInput { inspected, call }),
                now,
            };
            // The shadow set is asked the same calls.
            let mut shadow_ask = self.shadow.as_ref().map(shadow::Shadow::ask);
            for index in 0..calls.len().max(1) {
                let call = calls.get(index);
                let request = request_for(call);
                // The whole input is built only if the decision cache does not answer.
                let view = InputView::new(&conn.input, &request);
                let (decision, built) = self.evaluator.decide_view(policies.clone(), view).await;
                if let Some(ask) = &mut shadow_ask {
                    ask.call(&conn.input, &request, built.as_ref());
                }
                // The record keeps the input of the call that decides: the denied one, or the
                // first. A cached decision built none; it is built now, for the record.
                let recorded = self.record_input && (!decision.allowed || outcome.is_none());
                let whole = match (prepared.upgrade.is_some() || recorded, built) {
                    (true, Some(input)) => Some(input),
                    (true, None) => Some(conn.input.build(&request)),
                    (false, _) => None,
                };
                if let (true, Some(input)) = (recorded, &whole) {
                    noted.input = Some(self.redaction.record(input.clone()));
                }
                if prepared.upgrade.is_some() {
                    kept_input = whole;
                }
                if policies.cache().is_some() {
                    self.metrics.decision_cache(decision.cached);
                }
                if !decision.allowed {
                    if let Some(call) = call {
                        noted.denied_call = Some(denied_call(index, call));
                    }
                    outcome = Some(decision);
                    break;
                }
                // The first allow speaks for the request (its headers, its reason); a later
                // allow that would change the request otherwise cannot be honoured for its
                // own call alone, so the batch is denied rather than forwarded half-changed.
                match &outcome {
                    None => outcome = Some(decision),
                    Some(first) if same_changes(first, &decision) => {}
                    Some(_) => {
                        if let Some(call) = call {
                            noted.denied_call = Some(denied_call(index, call));
                        }
                        // regate's own rule decided, not the policy on one input.
                        noted.input = None;
                        outcome = Some(Decision::deny("batch_decisions_differ"));
                        break;
                    }
                }
            }
            let decision = outcome.unwrap_or_else(|| Decision::deny("policy_undefined"));
            if let (Some(shadow), Some(mut ask)) = (&self.shadow, shadow_ask) {
                // The calls after a denied one were not asked of the main set; the shadow
                // set decides the whole batch as the main set would have on its own.
                for call in calls.iter().skip(ask.len()) {
                    ask.call(&conn.input, &request_for(Some(call)), None);
                }
                noted.shadow = Some(shadow.start(ask, &decision));
            }
            by_policy = true;
            decision
        };
        if let Some(e) = &decision.error {
            // A client can make every one of its requests fail the policy: a line per second,
            // with the count held back; the records and the metric have every one.
            if let Some(held_back) = self.failure_log.check() {
                tracing::error!(
                    request.id = %seen.request_id,
                    policy.revision = %policies.revision,
                    reason = %decision.reason,
                    error = %redact(e, &parts.headers, &seen.path, &self.redaction),
                    held_back,
                    "policy evaluation failed; denying",
                );
            }
        }
        if !decision.allowed {
            if !(by_policy && self.mode == Mode::Audit) {
                return Err(ProxyError::Denied(Box::new(decision)));
            }
            // Audit mode forwards the request as it came; what the policy's answer would have
            // added to the deny (status, body, headers) applies to nothing.
            noted.would_deny = true;
            self.metrics.would_deny(&decision.reason);
            decision = unenforced(decision);
        }
        for name in &decision.remove_headers {
            parts.headers.remove(name);
        }
        if !decision.query_set.is_empty() || !decision.query_remove.is_empty() {
            let target = request::target::rewrite_query(
                &seen.path,
                &decision.query_remove,
                &decision.query_set,
            );
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
        // A revocation that landed while the body was read or the policy ran still stops
        // this request.
        if self.revocations.revoked(&conn.peer) || token_revoked_now(self, noted) {
            noted.input = None;
            // Refused after all: nothing was forwarded, so nothing "would" have been denied.
            noted.would_deny = false;
            return Err(ProxyError::Denied(Box::new(Decision::deny("revoked"))));
        }
        let body = body
            .take()
            .ok_or(ProxyError::BadRequest("the request body was already taken"))?;
        Ok(Allowed {
            req: Request::from_parts(parts, body),
            decision,
            upgrade: prepared.upgrade,
            input: kept_input,
            revision: policies.revision.clone(),
        })
    }

    /// The handshake checked the peer once; a connection can outlive that. Per request (and
    /// for a tunnel, per reload), its identity must not be revoked, its certificate must
    /// still be within its validity, and
    /// after the CA bundle changed, its chain must still verify against the current bundle
    /// (checked once per change).
    fn still_trusted(&self, conn: &Connection, now: SystemTime) -> Option<&'static str> {
        if self.revocations.revoked(&conn.peer) {
            return Some("revoked");
        }
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

    /// Send an allowed request upstream, within the upstream limits. A `101` is passed on only
    /// for the upgrade the client asked for; the tunnel then runs on its own.
    async fn forward(
        self: &Arc<Self>,
        conn: &Arc<Connection>,
        allowed: Allowed,
        seen: &Seen,
    ) -> Result<(Response<Body>, Option<Slots>), ProxyError> {
        let Allowed {
            mut req,
            decision,
            upgrade,
            input,
            revision,
        } = allowed;
        // An HTTP/2 client can have many streams in flight on one connection; they queue for
        // the connection's share rather than fan out into as many upstream connections.
        let per_connection = match conn.upstream_slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            // Only a busy connection pays for a timer.
            Err(_) => tokio::time::timeout(
                self.upstream.timeout(),
                conn.upstream_slots.clone().acquire_owned(),
            )
            .await
            .map_err(|_| ProxyError::UpstreamOverloaded)?
            .map_err(|_| ProxyError::UpstreamOverloaded)?,
        };
        let total = self
            .limits
            .upstream_total
            .clone()
            .try_acquire_owned()
            .map_err(|_| ProxyError::UpstreamOverloaded)?;
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let mut resp = self.upstream.send(req).await?;
        let slots = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(protocol), Some(client_upgrade)) = (upgrade, client_upgrade) else {
                return Err(ProxyError::UpstreamProtocol(
                    "it switched protocols on a request that was not an upgrade",
                ));
            };
            if !request::upgrade::switched_to(resp.headers(), &protocol) {
                return Err(ProxyError::UpstreamProtocol(
                    "it switched to a protocol the client did not ask for",
                ));
            }
            forward::strip_response(&mut resp, Some(&protocol));
            tunnel::spawn(
                self.clone(),
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
            forward::strip_response(&mut resp, None);
            Some(Slots {
                _connection: per_connection,
                _total: total,
            })
        };
        let (mut head, body) = resp.into_parts();
        for (name, value) in &decision.response_headers {
            head.headers.append(name.clone(), value.clone());
        }
        Ok((Response::from_parts(head, Body::upstream(body)), slots))
    }
}

/// The decision record of one request, written once: by [`Pending::finish`], or, if the
/// request's future is dropped first (the client closed its connection or reset its stream
/// while the upstream was still working), as `client_cancelled` when dropped. Every request
/// that reached the policy, and so every one that reached the upstream, is recorded.
struct Pending<'a> {
    proxy: &'a Arc<Proxy>,
    peer: &'a crate::tls::identity::PeerIdentity,
    /// The connection's entry in the identity inventory, counted in [`Pending::write`]; none
    /// for a record written later, which has been counted.
    inventory: Option<&'a crate::identities::Presence>,
    seen: &'a Seen,
    revision: Arc<str>,
    start: Instant,
    allowed: bool,
    reason: Cow<'static, str>,
    eval_ns: u64,
    cached: bool,
    upstream: Option<(u16, u64)>,
    /// What authorizing learnt that the record names.
    noted: Noted,
    done: bool,
}

/// What the record names besides the decision: the delegation token's subject, actor and
/// id (never the token), and the JSON-RPC call that was denied.
#[derive(Default)]
struct Noted {
    delegation: Option<crate::delegation::Delegation>,
    denied_call: Option<serde_json::Value>,
    /// The policy input as recorded, when the policy decided and `--decision-log-input` is on.
    input: Option<Value>,
    /// The shadow set's decision, under way.
    shadow: Option<shadow::Running>,
    /// Audit mode forwarded what the policy denied.
    would_deny: bool,
}

/// A policy deny forwarded in audit mode: its reason and timings are recorded, nothing else
/// of it applies.
fn unenforced(decision: Decision) -> Decision {
    Decision {
        reason: decision.reason,
        error: decision.error,
        eval_ns: decision.eval_ns,
        cached: decision.cached,
        ..Decision::deny("denied")
    }
}

/// Whether the verified delegation token's jti has been revoked since it was checked.
fn token_revoked_now(proxy: &Proxy, noted: &Noted) -> bool {
    noted
        .delegation
        .as_ref()
        .and_then(|d| d.jti.as_deref())
        .is_some_and(|jti| proxy.revocations.jti_revoked(jti))
}

/// Whether two allows change the forwarded request and the response alike.
pub(crate) fn same_changes(a: &Decision, b: &Decision) -> bool {
    a.headers == b.headers
        && a.response_headers == b.response_headers
        && a.remove_headers == b.remove_headers
        && a.query_set == b.query_set
        && a.query_remove == b.query_remove
}

/// A denied call, for the record: its place in the batch, method, tool and id.
fn denied_call(index: usize, call: &request::body::Call) -> serde_json::Value {
    let field = |v: &Value| {
        v.to_json_str()
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    serde_json::json!({
        "index": index,
        "method": field(&call.jsonrpc["method"]),
        "tool": field(&call.mcp["tool"]),
        "id": field(&call.jsonrpc["id"]),
    })
}

/// What a record says when the client went away before its response head: nginx's 499.
const CLIENT_CLOSED: u16 = 499;

impl<'a> Pending<'a> {
    fn new(
        proxy: &'a Arc<Proxy>,
        conn: &'a Connection,
        seen: &'a Seen,
        revision: Arc<str>,
    ) -> Self {
        Pending {
            proxy,
            peer: &conn.peer,
            inventory: Some(&conn.inventory),
            seen,
            revision,
            start: Instant::now(),
            allowed: false,
            reason: Cow::Borrowed("client_cancelled"),
            eval_ns: 0,
            cached: false,
            upstream: None,
            noted: Noted::default(),
            done: false,
        }
    }

    fn denied(&mut self, err: &ProxyError) {
        if let ProxyError::Denied(d) = err {
            self.eval_ns = d.eval_ns;
            self.cached = d.cached;
        } else {
            // Refused for a reason of regate's own after the policy ran (a query rewrite that
            // is no URI): a replay of the input would compare the policy with regate.
            self.noted.input = None;
        }
        self.reason = err.reason();
    }

    fn allowed(&mut self, decision: &Decision) {
        self.allowed = true;
        self.reason = decision.reason.clone();
        self.eval_ns = decision.eval_ns;
        self.cached = decision.cached;
    }

    fn finish(mut self, status: StatusCode) {
        self.write(status.as_u16());
    }

    /// Count the request and write its record: now, or, when the shadow set has not answered
    /// yet, once it has (the response does not wait for that).
    fn write(&mut self, http_status: u16) {
        self.done = true;
        let duration = self.start.elapsed();
        let decision = if self.allowed { "allow" } else { "deny" };
        self.proxy
            .metrics
            .request(decision, &self.reason, duration, self.eval_ns);
        if let Some(inventory) = self.inventory {
            // What the policy decided: a request audit mode forwarded counts as denied.
            inventory.request(
                self.allowed && !self.noted.would_deny,
                &self.reason,
                self.noted
                    .delegation
                    .as_ref()
                    .and_then(|d| d.subject.as_deref()),
            );
        }
        let duration_ns = duration.as_nanos() as u64;
        match self.noted.shadow.take().map(shadow::Running::now) {
            None => self.log(http_status, duration_ns, None),
            Some(Ok(answer)) => self.log(http_status, duration_ns, answer.as_ref()),
            Some(Err(running)) => self.log_later(running, http_status, duration_ns),
        }
    }

    /// Hand the record to a task that writes it once the shadow set has answered. What the
    /// record names is moved or copied out; the request's own borrows end here.
    fn log_later(&mut self, running: shadow::Running, http_status: u16, duration_ns: u64) {
        let Some(shadow) = &self.proxy.shadow else {
            return self.log(http_status, duration_ns, None);
        };
        let proxy = self.proxy.clone();
        let peer = self.peer.clone();
        let seen = self.seen.clone();
        let revision = self.revision.clone();
        let reason = std::mem::take(&mut self.reason);
        let noted = std::mem::take(&mut self.noted);
        let (allowed, eval_ns, cached, upstream, start) = (
            self.allowed,
            self.eval_ns,
            self.cached,
            self.upstream,
            self.start,
        );
        shadow.write_later(running, move |answer| {
            let detached = Pending {
                proxy: &proxy,
                peer: &peer,
                inventory: None,
                seen: &seen,
                revision,
                start,
                allowed,
                reason,
                eval_ns,
                cached,
                upstream,
                noted,
                done: true,
            };
            detached.log(http_status, duration_ns, answer.as_ref());
        });
    }

    fn log(&self, http_status: u16, duration_ns: u64, shadow: Option<&shadow::Answer>) {
        let seen = self.seen;
        self.proxy.audit.log(&DecisionRecord {
            request_id: &seen.request_id,
            client_request_id: seen.client_request_id.as_deref(),
            trace_id: seen.trace_id.as_deref(),
            spiffe_id: self.peer.spiffe_id.as_ref().map(|s| s.id.as_str()),
            serial: &self.peer.serial,
            delegation_subject: self
                .noted
                .delegation
                .as_ref()
                .and_then(|d| d.subject.as_deref()),
            delegation_actor: self
                .noted
                .delegation
                .as_ref()
                .and_then(|d| d.actor.as_deref()),
            delegation_jti: self
                .noted
                .delegation
                .as_ref()
                .and_then(|d| d.jti.as_deref()),
            denied_call: self.noted.denied_call.as_ref(),
            method: seen.method.as_str(),
            path: &self.proxy.redaction.target(&seen.path),
            host: &seen.host,
            allowed: self.allowed,
            http_status,
            reason: &self.reason,
            policy_revision: &self.revision,
            eval_ns: self.eval_ns,
            cached: self.cached,
            upstream_status: self.upstream.map(|(status, _)| status),
            upstream_ns: self.upstream.map(|(_, ns)| ns),
            duration_ns,
            input: self.noted.input.as_ref(),
            would_deny: self.noted.would_deny,
            shadow: shadow.map(|answer| ShadowOutcome {
                allowed: answer.allowed,
                reason: &answer.reason,
                revision: &answer.revision,
            }),
        });
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.reason = Cow::Borrowed("client_cancelled");
            self.upstream = None;
            self.write(CLIENT_CLOSED);
        }
    }
}

/// The client's `x-request-id`, when it is 1 to 128 printable ASCII characters. It is
/// forwarded and kept in the record so a call can be followed across services, but it never
/// names the request in regate's record: an id a client chooses could collide with, or
/// impersonate, another request's.
fn client_request_id(headers: &http::HeaderMap) -> Option<String> {
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

/// Credentials never reach a log, even inside a policy's error message: the values of
/// credential headers, and of credential query parameters (as sent and decoded).
fn redact(
    message: &str,
    headers: &http::HeaderMap,
    target: &str,
    credentials: &crate::audit::input::Recording,
) -> String {
    let mut out = message.to_string();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    for (name, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        if value.is_empty()
            || !credentials.redacts_query(&request::target::decoded_query_part(name))
        {
            continue;
        }
        let decoded = request::target::decoded_query_part(value).into_owned();
        for v in [value, decoded.as_str()] {
            out = out.replace(v, "[redacted]");
        }
    }
    for name in headers.keys().filter(|n| credentials.redacts(n.as_str())) {
        for v in headers.get_all(name) {
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
