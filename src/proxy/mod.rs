//! The per-request path. [`Proxy::handle`] is the whole life of one request, decided in named
//! steps, each in its own file, called in this order from [`Proxy::handle`] and
//! `Proxy::authorize`:
//!
//! 1. [`admission`]: what regate refuses before any policy: the request's head, trust in the
//!    caller ([`trust`]: the kill switch, its certificate, its trust domain), its delegation
//!    token, its body;
//! 2. [`decision`]: the policy's answer, one evaluation per JSON-RPC call, from the decision
//!    cache where it can; the shadow set ([`shadow`]) is asked the same calls, beside;
//! 3. [`effects`]: what the decision does to the request: audit mode, the policy's rewrites,
//!    a revocation that landed meanwhile; then [`budget`]: the budgets the policy attached,
//!    charged all or nothing;
//! 4. [`forward`]: to the upstream, within its limits; a `101` becomes a [`tunnel`]; an MCP
//!    `tools/list` result is filtered on its way back ([`tools_list`], events split by
//!    [`sse`]);
//! 5. [`record`]: one decision record, once the response head is ready (or the client went
//!    away).
//!
//! Before the first step, [`resource`] answers the OAuth protected resource metadata itself
//! (`oauth_resource:`), recorded without the policy; after admission, it strips the client's
//! bearer token from what the upstream gets, and after the decision it turns a deny asking
//! for more scope into a step-up challenge.
//!
//! [`Connection`] holds what is known once per connection. The policy set is read once, at
//! the request's start, so a reload applies to the next request on an open connection.
//! Responses for anything but a forwarded request are built in [`error`]; every response's
//! body is a [`response::Body`].

pub mod admission;
pub mod approval;
pub mod budget;
pub mod connection;
pub mod decision;
pub mod effects;
pub mod error;
pub mod forward;
pub mod record;
pub mod resource;
pub mod response;
pub mod shadow;
pub mod sse;
pub mod tools_list;
pub mod trust;
pub mod tunnel;

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use regorus::Value;
use tokio::sync::{watch, Semaphore};

use crate::policy::PolicySet;
use crate::request::body::Replay;
pub use admission::{Admission, Inspection};
pub use connection::Connection;
pub use decision::{Decider, Mode};
use effects::Allowed;
use error::ProxyError;
use forward::Upstream;
use record::{Noted, Pending, Recorder, Seen};
use resource::ProtectedResource;
pub use response::Body;
use response::Held;
use trust::Trust;

/// Shared by all connections: each step's settings and state.
pub struct Proxy {
    pub admission: Admission,
    pub trust: Arc<Trust>,
    pub decider: Arc<Decider>,
    /// The budgets policies attach (`rate_limits`).
    pub budgets: budget::Budgets,
    pub upstream: Upstream,
    pub limits: Limits,
    pub recorder: Recorder,
    /// regate as an OAuth protected resource (`oauth_resource:`), if it is one.
    pub resource: Option<Arc<ProtectedResource>>,
    /// `--context` labels, the same in every input.
    pub context: Value,
    /// `--trust-domain`: a caller from another is denied before any policy.
    pub trust_domains: Vec<String>,
    /// Where each connection's identity and its requests are counted.
    pub identities: Arc<crate::identities::Inventory>,
    /// Moves on every policy or CA reload that lands; tunnels judge themselves again.
    pub changes: watch::Receiver<u64>,
    /// True once shutdown has begun.
    pub shutdown: watch::Receiver<bool>,
}

/// What steps 1 to 3 make of a request: one to forward, or one regate answered itself.
enum Authorized {
    Forward(Allowed),
    Answered(resource::Answer),
}

/// Bounds on what the proxy sends upstream.
pub struct Limits {
    /// `--max-upstream-requests`, shared by every connection.
    pub upstream_total: Arc<Semaphore>,
    /// `--max-upstream-requests-per-connection`.
    pub upstream_per_connection: usize,
}

impl Proxy {
    /// Handle one request end to end. Never fails: every error is a response.
    pub async fn handle(
        self: &Arc<Self>,
        conn: &Arc<Connection>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let in_flight = conn.activity.begin();
        let mut seen = Seen::of(&req, self.admission.replace_request_id);
        tracing::Span::current().record("request.id", seen.request_id.as_str());
        // With tracing on, the request is in a trace even when the client began none, and
        // its record names that trace.
        let trace = self.recorder.tracing.begin(seen.traceparent.as_ref());
        if let (None, Some(trace)) = (&seen.trace_id, &trace) {
            seen.trace_id = Some(trace.trace_id());
        }
        // This request is decided, and recorded, with one revision even if a reload lands
        // while it is being forwarded.
        let policies = self.decider.policies.load_full();
        let mut record = Pending::new(&self.recorder, conn, &seen, policies.revision.clone());
        record.trace = trace;
        let (parts, body) = req.into_parts();
        // The body stays here until it is forwarded: a request refused before its body was
        // read keeps it until the answer is sent, then reads what is left of it (within
        // bounds), so the client reads the answer, not a reset of its upload.
        let mut body = Some(Replay::streaming(body));
        let authorized = self
            .authorize(conn, parts, &mut body, &seen, &policies, &mut record.noted)
            .await;
        let (mut response, held) = match authorized {
            Ok(Authorized::Answered(answer)) => {
                record.allowed(&answer.decision);
                let unread = body.take().map(response::Unread);
                let held = Held {
                    _unread: unread,
                    ..Held::default()
                };
                (answer.response, held)
            }
            Err(err) => {
                record.denied(&err);
                let response = err.into_response(&seen.request_id);
                let unread = body.take().map(response::Unread);
                (
                    response,
                    Held {
                        _unread: unread,
                        ..Held::default()
                    },
                )
            }
            Ok(Authorized::Forward(allowed)) => {
                record.allowed(&allowed.decision);
                self.forward_recorded(conn, allowed, &seen, &mut record)
                    .await
            }
        };
        record.finish(response.status());
        response.body_mut().hold(Held {
            _in_flight: Some(in_flight),
            ..held
        });
        response
    }

    /// Steps 1 to 3: admission, decision, effects and budgets. On allow, the request as it
    /// will be forwarded; `body` is taken when it is read or forwarded. The resource metadata
    /// is answered before them.
    async fn authorize(
        &self,
        conn: &Connection,
        parts: http::request::Parts,
        body: &mut Option<Replay>,
        seen: &Seen,
        policies: &Arc<PolicySet>,
        noted: &mut Noted,
    ) -> Result<Authorized, ProxyError> {
        let resource = self.resource.as_deref();
        if let Some(answer) = resource.and_then(|r| r.answer(&parts.method, &seen.path)) {
            return Ok(Authorized::Answered(answer));
        }
        let mut admitted = self
            .admission
            .admit(&self.trust, conn, parts, body, seen, noted)
            .await?;
        if let Some(resource) = resource {
            resource.strip_token(&mut admitted.parts.headers);
        }
        let decided = self
            .decider
            .decide(conn, &admitted, seen, policies, &self.recorder, noted)
            .await;
        let cx = effects::Context {
            decider: &self.decider,
            trust: &self.trust,
            recorder: &self.recorder,
            revision: &policies.revision,
            resource,
            approvals: self.admission.approvals.as_deref(),
        };
        let mut allowed = effects::apply(&cx, conn, admitted, decided, body, seen, noted)?;
        let enforce = self.decider.enforces();
        let limits = std::mem::take(&mut allowed.rate_limits);
        self.budgets
            .charge(&mut allowed, &limits, enforce, noted)
            .await?;
        // Last: an approval is spent only by a request that goes on, so a 429 leaves it for
        // the retry.
        if let Some(step) = &self.admission.approvals {
            let store = &self.budgets.store;
            step.spend(&mut allowed, store, seen, conn.spiffe_id(), enforce, noted)
                .await?;
        }
        Ok(Authorized::Forward(allowed))
    }

    /// Step 4, with what the record says of it: the upstream's status and time, or why it
    /// failed.
    async fn forward_recorded(
        self: &Arc<Self>,
        conn: &Arc<Connection>,
        allowed: Allowed,
        seen: &Seen,
        record: &mut Pending<'_>,
    ) -> (Response<Body>, Held) {
        let sent = Instant::now();
        let trace = record.trace.as_mut();
        match forward::forward(self, conn, allowed, seen, &mut record.noted, trace).await {
            Ok((response, slots)) => {
                let upstream_time = sent.elapsed();
                self.recorder.metrics.upstream(upstream_time);
                record.upstream =
                    Some((response.status().as_u16(), upstream_time.as_nanos() as u64));
                let held = Held {
                    _slots: slots,
                    ..Held::default()
                };
                (response, held)
            }
            Err(err) => {
                if let ProxyError::ToolsListUnfiltered { .. } = &err {
                    // The upstream answered; regate would not pass the answer on. The metric
                    // of tools/list results counts it.
                    tracing::warn!(request.id = %seen.request_id, error = %err, "tools/list result refused");
                } else {
                    self.recorder.metrics.upstream_error(match &err {
                        ProxyError::UpstreamUnreachable(_) => "unreachable",
                        ProxyError::UpstreamTimeout => "timeout",
                        ProxyError::UpstreamOverloaded => "overloaded",
                        _ => "error",
                    });
                }
                // Overload is the clients' doing, one line per request would flood the log;
                // the metric and the records count it.
                let quiet = matches!(
                    err,
                    ProxyError::UpstreamOverloaded | ProxyError::ToolsListUnfiltered { .. }
                );
                if !quiet {
                    tracing::warn!(request.id = %seen.request_id, error = %err, "upstream request failed");
                }
                record.reason = err.reason();
                (err.into_response(&seen.request_id), Held::default())
            }
        }
    }

    /// What a tunnel needs to judge itself after its request: trust, the decider, the
    /// recorder, and the changes it watches.
    pub fn tunnel_watch(&self) -> tunnel::Watch {
        tunnel::Watch {
            trust: self.trust.clone(),
            decider: self.decider.clone(),
            recorder: self.recorder.clone(),
            changes: self.changes.clone(),
            shutdown: self.shutdown.clone(),
            token_leeway: self.admission.delegation.leeway(),
        }
    }
}
