use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceFlags, TraceId};
use opentelemetry::Value;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Sampler, SpanData, SpanExporter};

use super::span::{spans, CallNames, Finished};
use super::*;
use crate::metrics::Metrics;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn a_well_formed_traceparent_is_read_and_a_malformed_one_is_not() {
    let parent = TraceParent::parse(PARENT).unwrap();
    assert_eq!(
        parent.trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(parent.parent_id.to_string(), "00f067aa0ba902b7");
    assert!(parent.flags.is_sampled());
    // A later version may carry more fields; version 00's four are read.
    assert!(TraceParent::parse(&format!("01{}-extra", &PARENT[2..])).is_some());
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    ] {
        assert!(TraceParent::parse(bad).is_none(), "{bad:?}");
    }
}

/// What an exporter was given, and how it answers.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<SpanData>>>,
    calls: Arc<AtomicUsize>,
    /// Never answers, like a collector that accepts the connection and stalls.
    stall: bool,
    fail: bool,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collector")
    }
}

impl SpanExporter for Collector {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.stall {
            std::future::pending::<()>().await;
        }
        if self.fail {
            return Err(OTelSdkError::InternalFailure("refused".into()));
        }
        self.spans.lock().unwrap().extend(batch);
        Ok(())
    }
}

fn tracing_with(
    collector: &Collector,
    ratio: f64,
    queue: usize,
) -> (Tracing, Exporting, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)));
    let (tracing, exporting) = start(collector.clone(), sampler, metrics.clone(), queue);
    (tracing, exporting, metrics)
}

fn finished(status: u16) -> Finished {
    Finished {
        end: Instant::now(),
        method: http::Method::POST,
        path: "/mcp".into(),
        status,
        spiffe_id: Some("spiffe://example.org/agent".into()),
        allowed: true,
        reason: "allowed".into(),
        revision: Arc::from("rev-1"),
        cached: true,
        would_deny: false,
        request_id: "req-1".into(),
        call: Some(CallNames {
            method: Some("tools/call".into()),
            tool: Some("search".into()),
            calls: 1,
        }),
    }
}

/// The value of one metric series in the exposition, 0 when absent.
fn metric(metrics: &Metrics, series: &str) -> u64 {
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0)
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

#[tokio::test]
async fn tracing_off_begins_no_trace() {
    assert!(Tracing::off()
        .begin(TraceParent::parse(PARENT).as_ref())
        .is_none());
}

#[tokio::test]
async fn a_sampled_client_trace_is_continued_and_the_upstream_is_told_of_regates_span() {
    let collector = Collector::default();
    let (tracing, _exporting, _) = tracing_with(&collector, 0.0, 8);
    let parent = TraceParent::parse(PARENT).unwrap();
    let mut trace = tracing.begin(Some(&parent)).unwrap();
    // A ratio of 0 decides only the traces regate starts.
    assert!(trace.sampled());
    assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", PARENT.parse().unwrap());
    trace.upstream_sent(&mut headers);
    trace.upstream_answered(Some(200));
    let sent = TraceParent::from_headers(&headers).unwrap();
    assert_eq!(sent.trace_id, parent.trace_id);
    assert_ne!(sent.parent_id, parent.parent_id);
    assert!(sent.flags.is_sampled());

    let scope = InstrumentationScope::builder("regate").build();
    let made = spans(&trace, &finished(200), &scope);
    assert_eq!(made.len(), 2);
    let (server, client) = (&made[0], &made[1]);
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(server.parent_span_id, parent.parent_id);
    assert!(server.parent_span_is_remote);
    assert_eq!(client.span_kind, SpanKind::Client);
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    // The upstream's parent is the upstream call's span.
    assert_eq!(client.span_context.span_id(), sent.parent_id);
    assert!(client.start_time >= server.start_time && client.end_time <= server.end_time);
    assert_eq!(
        attribute(server, "gen_ai.tool.name"),
        Some(&Value::from("search"))
    );
    assert_eq!(attribute(server, "regate.cached"), Some(&Value::from(true)));
    assert_eq!(server.status, Status::Unset);
}

#[tokio::test]
async fn an_unsampled_client_trace_is_not_exported_but_still_gets_regates_span_upstream() {
    let collector = Collector::default();
    let (tracing, _exporting, _) = tracing_with(&collector, 1.0, 8);
    let parent = TraceParent::parse(&PARENT.replace("-01", "-00")).unwrap();
    let mut trace = tracing.begin(Some(&parent)).unwrap();
    assert!(!trace.sampled());
    let mut headers = HeaderMap::new();
    trace.upstream_sent(&mut headers);
    let sent = TraceParent::from_headers(&headers).unwrap();
    assert_eq!(sent.trace_id, parent.trace_id);
    assert_eq!(sent.flags, TraceFlags::default());
    assert_ne!(sent.parent_id, parent.parent_id);
}

#[tokio::test]
async fn the_ratio_decides_the_traces_regate_starts() {
    let collector = Collector::default();
    let (all, _e1, _) = tracing_with(&collector, 1.0, 8);
    let (none, _e2, _) = tracing_with(&collector, 0.0, 8);
    for _ in 0..50 {
        let trace = all.begin(None).unwrap();
        assert!(trace.sampled());
        assert_ne!(trace.trace_id, TraceId::INVALID);
        assert!(!none.begin(None).unwrap().sampled());
    }
}

#[tokio::test]
async fn an_upstream_that_never_answered_is_an_error_of_the_client_span() {
    let collector = Collector::default();
    let (tracing, _exporting, _) = tracing_with(&collector, 1.0, 8);
    let mut trace = tracing.begin(None).unwrap();
    trace.upstream_sent(&mut HeaderMap::new());
    trace.upstream_answered(None);
    let mut done = finished(502);
    done.reason = "upstream_unreachable".into();
    let made = spans(
        &trace,
        &done,
        &InstrumentationScope::builder("regate").build(),
    );
    assert_eq!(made[0].parent_span_id, SpanId::INVALID);
    assert!(matches!(made[0].status, Status::Error { .. }));
    assert!(matches!(made[1].status, Status::Error { .. }));
    assert_eq!(
        attribute(&made[1], "error.type"),
        Some(&Value::from("upstream_unreachable"))
    );
}

#[tokio::test]
async fn long_client_chosen_names_are_cut() {
    let collector = Collector::default();
    let (tracing, _exporting, _) = tracing_with(&collector, 1.0, 8);
    let trace = tracing.begin(None).unwrap();
    let mut done = finished(200);
    done.path = format!("/{}", "é".repeat(1000));
    let made = spans(
        &trace,
        &done,
        &InstrumentationScope::builder("regate").build(),
    );
    let path = attribute(&made[0], "url.path").unwrap().as_str();
    assert!(path.len() <= span::MAX_ATTRIBUTE && path.starts_with("/é"));
}

#[tokio::test]
async fn finished_requests_are_exported_and_flushed_at_shutdown() {
    let collector = Collector::default();
    let (tracing, exporting, metrics) = tracing_with(&collector, 1.0, 8);
    for _ in 0..3 {
        let trace = tracing.begin(None).unwrap();
        tracing.export(trace, finished(200));
    }
    // Well within the batch delay: only the shutdown's flush can have sent them.
    exporting.finish(Duration::from_secs(5)).await;
    assert_eq!(collector.spans.lock().unwrap().len(), 3);
    assert_eq!(metric(&metrics, "regate_trace_spans_exported_total"), 3);
}

#[tokio::test]
async fn a_stalled_collector_fills_the_queue_and_every_drop_is_counted() {
    let collector = Collector {
        stall: true,
        ..Collector::default()
    };
    let (tracing, exporting, metrics) = tracing_with(&collector, 1.0, 4);
    let dropped = |reason: &str| {
        metric(
            &metrics,
            &format!("regate_trace_spans_dropped_total{{reason=\"{reason}\"}}"),
        )
    };
    for _ in 0..100 {
        let trace = tracing.begin(None).unwrap();
        tracing.export(trace, finished(200));
    }
    // The queue and the stalled export hold a few; the rest is dropped at once.
    let full = dropped("queue_full");
    assert!(full > 0 && full < 100, "{full}");
    exporting.finish(Duration::from_millis(50)).await;
    assert_eq!(full + dropped("shutdown"), 100);
    assert_eq!(metric(&metrics, "regate_trace_spans_exported_total"), 0);
}

#[tokio::test]
async fn a_failed_export_is_counted_as_dropped() {
    let collector = Collector {
        fail: true,
        ..Collector::default()
    };
    let (tracing, exporting, metrics) = tracing_with(&collector, 1.0, 8);
    let mut trace = tracing.begin(None).unwrap();
    trace.upstream_sent(&mut HeaderMap::new());
    trace.upstream_answered(Some(200));
    tracing.export(trace, finished(200));
    exporting.finish(Duration::from_secs(5)).await;
    assert_eq!(collector.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        metric(
            &metrics,
            "regate_trace_spans_dropped_total{reason=\"export_failed\"}"
        ),
        2
    );
}
