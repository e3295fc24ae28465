//! Step 5 of a request: its decision record, and the request metrics.
//!
//! [`Seen`] is what every record carries, taken from the request head before anything else;
//! [`Noted`] is what the steps learn for it on the way (the delegation token's names, the
//! denied call, the recorded input, audit mode's `would_deny`, the shadow set's outcome to
//! come, what filtering a `tools/list` result hid). [`Pending`] writes the record once: when the response head is ready, or as
//! `client_cancelled` when the request is dropped first. The shadow set's outcome is joined
//! to the record by the audit writer when it comes in (`crate::audit::later`); the record is
//! handed over at once either way. With tracing on, the same moment hands the request's
//! span to the exporter (`crate::telemetry`), without waiting for it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderMap, Request, StatusCode, Version};
use hyper::body::Incoming;
use regorus::Value;

use super::connection::Connection;
use super::error::ProxyError;
use crate::audit::input::Recording;
use crate::audit::later::Later;
use crate::audit::{ApprovalAskedRecord, ApprovalSeen, Audit, DecisionRecord, RateLimitedRecord};
use crate::limits::RateLimited;
use crate::metrics::Metrics;
use crate::policy::Decision;
use crate::request::headers::client_request_id;
use crate::telemetry::{CallNames, Finished, Trace, TraceParent, Tracing};

/// What a record says when the client went away before its response head: nginx's 499.
const CLIENT_CLOSED: u16 = 499;

/// Where records and request metrics go. Shared by every connection and tunnel.
#[derive(Clone)]
pub struct Recorder {
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
    /// `--decision-log-input`: records keep the policy input, as `redaction` records it.
    pub record_input: bool,
    /// Credential headers and query parameters: digested in a recorded input, masked in a
    /// record's `path`, kept out of a policy error's log line.
    pub redaction: Recording,
    /// Policy failures are logged at most once a second.
    pub failure_log: Arc<RateLimited>,
    /// Where each request's span goes (`--otlp-endpoint`); off, nothing happens.
    pub tracing: Tracing,
}

/// The parts of a request every decision record carries, whatever the outcome.
#[derive(Clone)]
pub struct Seen {
    /// regate's own id: the record's, and the one its answers name.
    pub request_id: String,
    /// The client's own `x-request-id`, when it is sane.
    pub client_request_id: Option<String>,
    /// Whether the upstream gets the client's id (else regate's).
    forward_client_id: bool,
    /// The client's W3C `traceparent`, when it is well formed.
    pub traceparent: Option<TraceParent>,
    /// The trace the request is in: the client's; with tracing on and none from the
    /// client, the one regate started.
    pub trace_id: Option<String>,
    pub method: http::Method,
    pub path: String,
    pub host: String,
}

impl Seen {
    pub fn of(req: &Request<Incoming>, replace_request_id: bool) -> Seen {
        let client_request_id = client_request_id(req.headers());
        let traceparent = TraceParent::from_headers(req.headers());
        Seen {
            request_id: uuid::Uuid::new_v4().to_string(),
            forward_client_id: client_request_id.is_some() && !replace_request_id,
            client_request_id,
            trace_id: traceparent.map(|t| t.trace_id.to_string()),
            traceparent,
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
    pub fn forwarded_request_id(&self) -> &str {
        match (&self.client_request_id, self.forward_client_id) {
            (Some(theirs), true) => theirs,
            _ => &self.request_id,
        }
    }
}

/// What the record names besides the decision: the delegation token's subject, actor and
/// id (never the token), and the JSON-RPC call that was denied.
#[derive(Default)]
pub struct Noted {
    pub delegation: Option<crate::delegation::Delegation>,
    pub denied_call: Option<serde_json::Value>,
    /// The policy input as recorded, when the policy decided and `--decision-log-input` is on.
    pub input: Option<Value>,
    /// The shadow set's outcome, to be joined to the record when it comes in.
    pub shadow: Option<Later>,
    /// Audit mode forwarded what the policy denied.
    pub would_deny: bool,
    /// What filtering an MCP `tools/list` result did (`listed`, `hidden`, and `refused` when
    /// it failed closed), when the result was read before the response head went out.
    pub tools_list: Option<serde_json::Value>,
    /// The same, for a result streamed as events: published when the stream ends.
    pub tools_list_later: Option<Later>,
    /// The budget that refused the request (or would have, in audit mode).
    pub rate_limited: Option<super::budget::Limited>,
    /// The approval the request carried, verified.
    pub approval: Option<super::approval::Verified>,
    /// The approval request the policy's deny asked for (or would have, in audit mode).
    pub approval_request: Option<crate::approvals::Request>,
    /// The JSON-RPC call that decided the request (the denied one, else the first), for
    /// its span.
    pub call: Option<CallNames>,
}

/// The decision record of one request, written once: by [`Pending::finish`], or, if the
/// request's future is dropped first (the client closed its connection or reset its stream
/// while the upstream was still working), as `client_cancelled` when dropped. Every request
/// that reached the policy, and so every one that reached the upstream, is recorded.
pub struct Pending<'a> {
    recorder: &'a Recorder,
    conn: &'a Connection,
    seen: &'a Seen,
    revision: Arc<str>,
    start: Instant,
    allowed: bool,
    pub reason: Cow<'static, str>,
    eval_ns: u64,
    cached: bool,
    /// The upstream's status and how long its response head took.
    pub upstream: Option<(u16, u64)>,
    /// What the steps learnt that the record names.
    pub noted: Noted,
    /// The request's trace, with tracing on; its span is handed over with the record.
    pub trace: Option<Trace>,
    done: bool,
}

impl<'a> Pending<'a> {
    pub fn new(
        recorder: &'a Recorder,
        conn: &'a Connection,
        seen: &'a Seen,
        revision: Arc<str>,
    ) -> Self {
        Pending {
            recorder,
            conn,
            seen,
            revision,
            start: Instant::now(),
            allowed: false,
            reason: Cow::Borrowed("client_cancelled"),
            eval_ns: 0,
            cached: false,
            upstream: None,
            noted: Noted::default(),
            trace: None,
            done: false,
        }
    }

    pub fn denied(&mut self, err: &ProxyError) {
        if let ProxyError::Denied(d) | ProxyError::InsufficientScope(d, _) = err {
            self.eval_ns = d.eval_ns;
            self.cached = d.cached;
        } else {
            // Refused for a reason of regate's own after the policy ran (a query rewrite that
            // is no URI): a replay of the input would compare the policy with regate.
            self.noted.input = None;
        }
        self.reason = err.reason();
    }

    pub fn allowed(&mut self, decision: &Decision) {
        self.allowed = true;
        self.reason = decision.reason.clone();
        self.eval_ns = decision.eval_ns;
        self.cached = decision.cached;
    }

    pub fn finish(mut self, status: StatusCode) {
        self.write(status.as_u16());
    }

    /// Count the request and hand its record to the writer.
    fn write(&mut self, http_status: u16) {
        self.done = true;
        let duration = self.start.elapsed();
        let decision = if self.allowed { "allow" } else { "deny" };
        self.recorder
            .metrics
            .request(decision, &self.reason, duration, self.eval_ns);
        // What the policy decided: a request audit mode forwarded counts as denied.
        self.conn.inventory.request(
            self.allowed && !self.noted.would_deny,
            &self.reason,
            self.noted
                .delegation
                .as_ref()
                .and_then(|d| d.subject.as_deref()),
        );
        let seen = self.seen;
        let peer = &self.conn.peer;
        let delegation = self.noted.delegation.as_ref();
        let record =
            DecisionRecord {
                request_id: &seen.request_id,
                client_request_id: seen.client_request_id.as_deref(),
                trace_id: seen.trace_id.as_deref(),
                spiffe_id: peer.spiffe_id.as_ref().map(|s| s.id.as_str()),
                serial: &peer.serial,
                delegation_subject: delegation.and_then(|d| d.subject.as_deref()),
                delegation_actor: delegation.and_then(|d| d.actor.as_deref()),
                delegation_jti: delegation.and_then(|d| d.jti.as_deref()),
                denied_call: self.noted.denied_call.as_ref(),
                method: seen.method.as_str(),
                path: &self.recorder.redaction.target(&seen.path),
                host: &seen.host,
                allowed: self.allowed,
                http_status,
                reason: &self.reason,
                policy_revision: &self.revision,
                eval_ns: self.eval_ns,
                cached: self.cached,
                upstream_status: self.upstream.map(|(status, _)| status),
                upstream_ns: self.upstream.map(|(_, ns)| ns),
                duration_ns: duration.as_nanos() as u64,
                input: self.noted.input.as_ref(),
                would_deny: self.noted.would_deny,
                tools_list: self.noted.tools_list.as_ref(),
                rate_limited: self.noted.rate_limited.as_ref().map(|l| RateLimitedRecord {
                    name: &l.limit.name,
                    key: &l.limit.key,
                }),
                approval: self.noted.approval.as_ref().map(|a| ApprovalSeen {
                    approver: a.approved.approver.as_deref(),
                    issuer: &a.approved.issuer,
                    digest: &a.approved.digest,
                }),
                approval_request: self.noted.approval_request.as_ref().map(|r| {
                    ApprovalAskedRecord {
                        id: &r.id,
                        digest: &r.digest,
                    }
                }),
            };
        let later: Vec<Later> = [self.noted.shadow.take(), self.noted.tools_list_later.take()]
            .into_iter()
            .flatten()
            .collect();
        match later.is_empty() {
            true => self.recorder.audit.log(&record),
            false => self.recorder.audit.log_with(&record, later),
        }
        if let Some(trace) = self.trace.take().filter(Trace::sampled) {
            let finished = self.finished(http_status);
            self.recorder.tracing.export(trace, finished);
        }
    }

    /// What the request's span says of it: what the record says, less anything a client
    /// may have put a credential in (headers, the query, the body).
    fn finished(&mut self, http_status: u16) -> Finished {
        let seen = self.seen;
        Finished {
            end: Instant::now(),
            method: seen.method.clone(),
            path: seen.path.split('?').next().unwrap_or_default().to_string(),
            status: http_status,
            spiffe_id: self.conn.peer.spiffe_id.as_ref().map(|s| s.id.clone()),
            allowed: self.allowed,
            reason: self.reason.clone(),
            revision: self.revision.clone(),
            cached: self.cached,
            would_deny: self.noted.would_deny,
            request_id: seen.request_id.clone(),
            call: self.noted.call.take(),
        }
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

impl Recorder {
    /// A policy that failed, on stderr. A client can make every one of its requests fail
    /// the policy: a line per second, with the count held back; the records and the metric
    /// have every one. Credentials never reach the line, even inside the policy's message.
    pub fn policy_failed(
        &self,
        seen: &Seen,
        headers: &HeaderMap,
        decision: &Decision,
        error: &str,
        revision: &str,
    ) {
        if let Some(held_back) = self.failure_log.check() {
            tracing::error!(
                request.id = %seen.request_id,
                policy.revision = %revision,
                reason = %decision.reason,
                error = %redact(error, headers, &seen.path, &self.redaction),
                held_back,
                "policy evaluation failed; denying",
            );
        }
    }
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

/// The protocol as the policy reads it (`input.attributes.request.http.protocol`).
pub fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// Credentials never reach a log, even inside a policy's error message: the values of
/// credential headers, and of credential query parameters (as sent and decoded).
fn redact(message: &str, headers: &HeaderMap, target: &str, credentials: &Recording) -> String {
    use crate::request::target::decoded_query_part;
    let mut out = message.to_string();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    for (name, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        if value.is_empty() || !credentials.redacts_query(&decoded_query_part(name)) {
            continue;
        }
        let decoded = decoded_query_part(value).into_owned();
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
