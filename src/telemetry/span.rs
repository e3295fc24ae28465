//! One request's spans: [`Trace`] is its place in a trace, taken at its start (the ids of
//! regate's server span and of its upstream call, whether the trace is sampled); the record
//! step ends it with a [`Finished`], a small description of what the request was, and hands
//! both to the exporter, which makes the OTLP spans of them ([`spans`]) off the request path.
//!
//! What a span carries is chosen here, and only here: names regate decided on or computed
//! (identity, decision, reason, revision, the JSON-RPC method and tool), never a header's
//! value, a query string or a body.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::HeaderMap;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::context::{TraceParent, TRACEPARENT};

/// The longest string attribute, in bytes: a path or a tool name is the client's to choose,
/// and a span is no place for a kilobyte of it.
pub const MAX_ATTRIBUTE: usize = 256;

/// One request's place in a trace, from its start.
#[derive(Debug)]
pub struct Trace {
    pub(super) trace_id: TraceId,
    pub(super) span_id: SpanId,
    /// The upstream call's span, chosen at the start so that its `traceparent` is known
    /// before the call.
    pub(super) upstream_span_id: SpanId,
    /// The client's span, when its `traceparent` named one.
    pub(super) parent: Option<SpanId>,
    pub(super) flags: TraceFlags,
    pub(super) started: SystemTime,
    pub(super) start: Instant,
    upstream: Option<UpstreamCall>,
}

/// The upstream call, from its send to its response head.
#[derive(Debug, Clone, Copy)]
struct UpstreamCall {
    sent: Instant,
    answered: Option<Instant>,
    /// None: no response head came (unreachable, timeout, a broken exchange).
    status: Option<u16>,
}

impl Trace {
    pub(super) fn new(
        trace_id: TraceId,
        (span_id, upstream_span_id): (SpanId, SpanId),
        parent: Option<SpanId>,
        flags: TraceFlags,
    ) -> Trace {
        Trace {
            trace_id,
            span_id,
            upstream_span_id,
            parent,
            flags,
            started: SystemTime::now(),
            start: Instant::now(),
            upstream: None,
        }
    }

    /// The trace id, as records and logs write it (32 lowercase hex digits).
    pub fn trace_id(&self) -> String {
        self.trace_id.to_string()
    }

    /// Whether the spans are exported; an unsampled trace still names regate's span upstream.
    pub fn sampled(&self) -> bool {
        self.flags.is_sampled()
    }

    /// The upstream call starts: the upstream gets a `traceparent` naming its span (in place
    /// of the client's), and the call is timed from now.
    pub fn upstream_sent(&mut self, headers: &mut HeaderMap) {
        headers.insert(
            TRACEPARENT,
            TraceParent::child(self.trace_id, self.upstream_span_id, self.flags),
        );
        self.upstream = Some(UpstreamCall {
            sent: Instant::now(),
            answered: None,
            status: None,
        });
    }

    /// The upstream call ended: its response head came with `status`, or none came.
    pub fn upstream_answered(&mut self, status: Option<u16>) {
        if let Some(call) = &mut self.upstream {
            call.answered = Some(Instant::now());
            call.status = status;
        }
    }

    /// Whether the upstream was called.
    pub fn has_upstream(&self) -> bool {
        self.upstream.is_some()
    }

    /// When `at` was, on the wall clock of the trace's start (so durations are monotonic).
    fn wall(&self, at: Instant) -> SystemTime {
        self.started + at.saturating_duration_since(self.start)
    }
}

/// What the record step knows of a finished request, for its span.
#[derive(Debug)]
pub struct Finished {
    pub end: Instant,
    pub method: http::Method,
    /// The path alone: the query can carry credentials.
    pub path: String,
    pub status: u16,
    pub spiffe_id: Option<String>,
    pub allowed: bool,
    pub reason: Cow<'static, str>,
    pub revision: Arc<str>,
    pub cached: bool,
    pub would_deny: bool,
    pub request_id: String,
    /// The JSON-RPC call that decided the request.
    pub call: Option<CallNames>,
}

/// The names of a JSON-RPC call: its method, the MCP tool of a `tools/call`, and the size
/// of the batch it came in (1 for a single call).
#[derive(Debug, Clone, Default)]
pub struct CallNames {
    pub method: Option<String>,
    pub tool: Option<String>,
    pub calls: usize,
}

/// The OTLP spans of one request: regate's server span, and its upstream call's when there
/// was one.
pub fn spans(trace: &Trace, done: &Finished, scope: &InstrumentationScope) -> Vec<SpanData> {
    let mut spans = Vec::with_capacity(2);
    let context = |span_id| {
        SpanContext::new(
            trace.trace_id,
            span_id,
            trace.flags,
            false,
            TraceState::default(),
        )
    };
    spans.push(SpanData {
        span_context: context(trace.span_id),
        parent_span_id: trace.parent.unwrap_or(SpanId::INVALID),
        parent_span_is_remote: trace.parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(done.method.as_str().to_string()),
        start_time: trace.started,
        end_time: trace.wall(done.end),
        attributes: server_attributes(done),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        // A refusal is the request's answer, not a fault: only a 5xx is an error of the
        // server span, as HTTP's conventions have it.
        status: match done.status {
            500..=599 => Status::error(done.reason.clone()),
            _ => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    });
    if let Some(call) = trace.upstream {
        let end = call.answered.unwrap_or(done.end);
        let mut attributes = vec![
            KeyValue::new("http.request.method", done.method.as_str().to_string()),
            KeyValue::new("url.path", bounded(&done.path)),
        ];
        let status = match call.status {
            Some(code) => {
                attributes.push(KeyValue::new("http.response.status_code", i64::from(code)));
                match code {
                    500..=599 => Status::error(format!("upstream answered {code}")),
                    _ => Status::Unset,
                }
            }
            None => {
                attributes.push(KeyValue::new("error.type", done.reason.clone()));
                Status::error(done.reason.clone())
            }
        };
        spans.push(SpanData {
            span_context: context(trace.upstream_span_id),
            parent_span_id: trace.span_id,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: Cow::Owned(done.method.as_str().to_string()),
            start_time: trace.wall(call.sent),
            end_time: trace.wall(end),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        });
    }
    spans
}

/// The server span's attributes: HTTP's conventional ones, regate's decision, and MCP's
/// conventional names for the call.
fn server_attributes(done: &Finished) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("http.request.method", done.method.as_str().to_string()),
        KeyValue::new("url.path", bounded(&done.path)),
        KeyValue::new("http.response.status_code", i64::from(done.status)),
        KeyValue::new(
            "regate.decision",
            if done.allowed { "allow" } else { "deny" },
        ),
        KeyValue::new("regate.reason", bounded(&done.reason)),
        KeyValue::new("regate.policy.revision", bounded(&done.revision)),
        KeyValue::new("regate.cached", done.cached),
        KeyValue::new("regate.request_id", done.request_id.clone()),
    ];
    if let Some(id) = &done.spiffe_id {
        attributes.push(KeyValue::new("regate.spiffe_id", bounded(id)));
    }
    if done.would_deny {
        attributes.push(KeyValue::new("regate.would_deny", true));
    }
    if let Some(call) = &done.call {
        if let Some(method) = &call.method {
            attributes.push(KeyValue::new("mcp.method.name", bounded(method)));
        }
        if let Some(tool) = &call.tool {
            attributes.push(KeyValue::new("gen_ai.tool.name", bounded(tool)));
        }
        if call.calls > 1 {
            attributes.push(KeyValue::new(
                "regate.jsonrpc.calls",
                i64::try_from(call.calls).unwrap_or(i64::MAX),
            ));
        }
    }
    attributes
}

/// `text` cut to [`MAX_ATTRIBUTE`] bytes, at a character boundary.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_ATTRIBUTE {
        return text.to_string();
    }
    let mut end = MAX_ATTRIBUTE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
