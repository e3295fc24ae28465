//! W3C trace context: the `traceparent` a client sends, read once per request, and the one
//! the upstream gets while tracing is on. Owns the header's grammar (version `00`); not the
//! ids' randomness nor sampling (`super::Tracer`), and not `tracestate`, which regate passes
//! on untouched.

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

/// The header's name.
pub const TRACEPARENT: &str = "traceparent";

/// A well-formed `traceparent`: `<version>-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`,
/// lowercase, version `ff` and an all-zero trace id refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    /// The client's own span; all zeros is read but parents nothing.
    pub parent_id: SpanId,
    pub flags: TraceFlags,
}

impl TraceParent {
    /// The request's `traceparent`, when it has one that is well formed.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceParent> {
        TraceParent::parse(headers.get(TRACEPARENT)?.to_str().ok()?)
    }

    /// Parse one header value. A later version may add fields after the fourth; they are
    /// ignored, as the specification asks of a reader of version `00`.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let valid = hex(version, 2)
            && version != "ff"
            && hex(trace, 32)
            && trace.bytes().any(|b| b != b'0')
            && hex(parent, 16)
            && hex(flags, 2);
        if !valid {
            return None;
        }
        Some(TraceParent {
            trace_id: TraceId::from_hex(trace).ok()?,
            parent_id: SpanId::from_hex(parent).ok()?,
            flags: TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        })
    }

    /// The header value naming `span_id` as the parent, in version `00`.
    pub fn child(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> HeaderValue {
        let text = format!("00-{trace_id}-{span_id}-{:02x}", flags.to_u8());
        // Hex digits and dashes only: always a valid header value.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// `n` lowercase hex digits.
fn hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
