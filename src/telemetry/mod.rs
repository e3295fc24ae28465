//! Traces: one OTLP span per request, and one per upstream call, exported to an OpenTelemetry
//! collector (`--otlp-endpoint`); off without an endpoint.
//!
//! The request path asks [`Tracing::begin`] for a [`Trace`] when a request starts (the
//! client's `traceparent` as its parent, the sampling decision, regate's span ids), names
//! regate's upstream span in the `traceparent` the upstream gets when it forwards
//! ([`Trace::upstream_sent`]), and hands the finished request to [`Tracing::export`] when it
//! writes the record. With tracing off, `begin` answers `None` and nothing else happens: the
//! request path never depends on an exporter being there, and never waits for one.
//!
//! - [`context`]: the W3C `traceparent` header, read and written;
//! - [`span`]: a request's [`Trace`], and the spans made of it with what the record knew;
//! - [`export`]: the bounded queue and the task that posts batches (drops counted);
//! - [`client`]: the HTTP client the exporter posts with (hyper and rustls, regate's own).
//!
//! Not here: deciding anything, records (`audit`), metrics' names (`metrics`).

pub mod client;
pub mod context;
pub mod export;
pub mod span;

use std::path::PathBuf;
use std::sync::Arc;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, Key, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample, SpanExporter,
};
use opentelemetry_sdk::Resource;

pub use context::TraceParent;
pub use export::Exporting;
pub use span::{CallNames, Finished, Trace};

use crate::metrics::Metrics;

/// The default `--trace-sample-ratio`: every trace a client did not decide on is kept.
pub const DEFAULT_SAMPLE_RATIO: f64 = 1.0;

/// `--otlp-endpoint`, `--otlp-ca` and `--trace-sample-ratio`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where spans are posted: the OTLP/HTTP traces URL (`…/v1/traces`).
    pub endpoint: http::Uri,
    /// The roots an `https` endpoint is verified against.
    pub ca: Option<PathBuf>,
    /// Of the traces regate starts (no sampled `traceparent` came), the share kept.
    pub sample_ratio: f64,
}

/// Why tracing cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("otlp-endpoint: {0}")]
    Endpoint(&'static str),
    #[error("otlp-ca: cannot read {path}")]
    Ca {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("otlp-ca: {0} holds no certificate")]
    NoCa(PathBuf),
    #[error("otlp-ca: a certificate is not usable as a root")]
    Tls(#[from] rustls::Error),
    #[error("otlp-endpoint: cannot build the exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// The exporter, built and checked at startup; [`Exporter::start`] runs it.
pub struct Exporter {
    exporter: opentelemetry_otlp::SpanExporter,
    sampler: Sampler,
}

impl Exporter {
    /// Build the exporter `settings` name. Nothing is sent yet.
    pub fn build(settings: &Settings) -> Result<Exporter, TelemetryError> {
        let client = client::CollectorClient::new(&settings.endpoint, settings.ca.as_deref(), {
            // Each try of an export; the exporter retries within its own deadline.
            export::EXPORT_TIMEOUT / 2
        })?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(settings.endpoint.to_string())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(export::EXPORT_TIMEOUT)
            .build()
            .map_err(TelemetryError::Exporter)?;
        exporter.set_resource(&resource());
        Ok(Exporter {
            exporter,
            // A client that decided on its trace is followed; of the traces regate starts,
            // the ratio is kept.
            sampler: Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))),
        })
    }

    /// Start exporting on the current runtime: the handle requests use, and the task to
    /// flush at shutdown.
    pub fn start(self, metrics: Arc<Metrics>) -> (Tracing, Exporting) {
        start(self.exporter, self.sampler, metrics, export::QUEUE)
    }
}

/// Tracing with `exporter`, `sampler` and a queue of `queue` requests.
fn start<E: SpanExporter + 'static>(
    exporter: E,
    sampler: Sampler,
    metrics: Arc<Metrics>,
    queue: usize,
) -> (Tracing, Exporting) {
    let scope = InstrumentationScope::builder("regate")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let (queue, exporting) = export::start(exporter, scope, metrics, queue);
    let tracer = Tracer {
        sampler,
        ids: RandomIdGenerator::default(),
        queue,
    };
    (Tracing(Some(Arc::new(tracer))), exporting)
}

/// `service.name` is `regate` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// name it; the rest of `OTEL_RESOURCE_ATTRIBUTES` is kept as it is.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    match named {
        true => builder.build(),
        false => builder.with_service_name("regate").build(),
    }
}

/// Tracing as the request path sees it: off, or the way to the exporter. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tracing(Option<Arc<Tracer>>);

struct Tracer {
    sampler: Sampler,
    ids: RandomIdGenerator,
    queue: export::Queue,
}

impl Tracing {
    /// Tracing off: no span, and `traceparent` passes upstream unchanged.
    pub fn off() -> Tracing {
        Tracing(None)
    }

    /// A request starts: its trace, continuing the client's when it sent a well-formed
    /// `traceparent`. `None` when tracing is off.
    pub fn begin(&self, parent: Option<&TraceParent>) -> Option<Trace> {
        let tracer = self.0.as_deref()?;
        let trace_id = parent.map_or_else(|| tracer.ids.new_trace_id(), |p| p.trace_id);
        // An all-zero parent id names no span: the trace is continued, from a root span.
        let remote = parent.filter(|p| p.parent_id != SpanId::INVALID);
        let cx = remote.map(|p| {
            Context::new().with_remote_span_context(SpanContext::new(
                p.trace_id,
                p.parent_id,
                p.flags,
                true,
                TraceState::default(),
            ))
        });
        let sampled = tracer
            .sampler
            .should_sample(cx.as_ref(), trace_id, "", &SpanKind::Server, &[], &[])
            .decision
            == SamplingDecision::RecordAndSample;
        let flags = parent
            .map_or(TraceFlags::default(), |p| p.flags)
            .with_sampled(sampled);
        let ids = (tracer.ids.new_span_id(), tracer.ids.new_span_id());
        Some(Trace::new(
            trace_id,
            ids,
            remote.map(|p| p.parent_id),
            flags,
        ))
    }

    /// A request is finished: its spans are queued for export when its trace is sampled.
    /// Never waits; a full queue drops them, counted.
    pub fn export(&self, trace: Trace, finished: Finished) {
        if let Some(tracer) = &self.0 {
            if trace.sampled() {
                tracer.queue.put(export::Queued { trace, finished });
            }
        }
    }
}

#[cfg(test)]
mod tests;
