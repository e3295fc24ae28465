//! The way out: a bounded queue the record step puts each finished request in without
//! waiting, and one task on regate's runtime that takes them out in batches and posts them
//! with the OTLP/HTTP exporter (`opentelemetry-otlp`, protobuf).
//!
//! The SDK's own batch processor is not used: it runs on a thread of its own, and counts
//! what it drops only for its own log. Here a full queue, a failed export and what is still
//! queued when the shutdown grace ends are each counted (`regate_trace_spans_dropped_total`),
//! and a collector that is down or slow costs a request one `try_send`, whatever it does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::trace::SpanExporter;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::span::{spans, Finished, Trace};
use crate::limits::RateLimited;
use crate::metrics::Metrics;

/// Finished requests waiting for export; past it, a request's spans are dropped.
pub const QUEUE: usize = 4096;
/// Requests (so at most twice as many spans) in one export.
pub const MAX_BATCH: usize = 256;
/// How long a batch may wait to fill before it goes: spans reach the collector within about
/// this, and a quiet sidecar posts at most once per this.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// One export, retries included: the exporter's own deadline, and a little more for ours.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// A collector that is down fails every export: one line this often says so.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// A finished request, queued.
pub(super) struct Queued {
    pub trace: Trace,
    pub finished: Finished,
}

impl Queued {
    /// Its spans: the server span, and the upstream call's.
    pub fn span_count(&self) -> u64 {
        1 + u64::from(self.trace.has_upstream())
    }
}

/// The queue's sending side, shared by every request.
pub(super) struct Queue {
    sender: mpsc::Sender<Queued>,
    /// Spans queued or being exported, so those a shutdown cuts off are counted.
    pending: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// Queue `queued` without waiting; a full queue (the collector is down or slow) or an
    /// exporter that has stopped drops it, counted.
    pub fn put(&self, queued: Queued) {
        let count = queued.span_count();
        self.pending.fetch_add(count, Ordering::Relaxed);
        if let Err(e) = self.sender.try_send(queued) {
            self.pending.fetch_sub(count, Ordering::Relaxed);
            let reason = match e {
                mpsc::error::TrySendError::Full(_) => "queue_full",
                mpsc::error::TrySendError::Closed(_) => "shutdown",
            };
            self.metrics.trace_spans_dropped(reason, count);
        }
    }
}

/// The export task, running: [`Exporting::finish`] flushes it at shutdown.
pub struct Exporting {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    pending: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Exporting {
    /// Export what is queued, for at most `grace`; what is still queued then is dropped,
    /// counted.
    pub async fn finish(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            let left = self.pending.swap(0, Ordering::Relaxed);
            self.metrics.trace_spans_dropped("shutdown", left);
            tracing::warn!(spans = left, "grace period over; spans not exported");
        }
    }
}

/// Start the export task on the current runtime, behind a queue of `capacity` requests.
pub(super) fn start<E>(
    exporter: E,
    scope: InstrumentationScope,
    metrics: Arc<Metrics>,
    capacity: usize,
) -> (Queue, Exporting)
where
    E: SpanExporter + 'static,
{
    let (sender, receiver) = mpsc::channel(capacity);
    let (stop, stopping) = watch::channel(false);
    let pending = Arc::new(AtomicU64::new(0));
    let batcher = Batcher {
        exporter,
        scope,
        receiver,
        pending: pending.clone(),
        metrics: metrics.clone(),
        failure_log: RateLimited::new(FAILURE_LOG_EVERY),
    };
    let task = tokio::spawn(batcher.run(stopping));
    let queue = Queue {
        sender,
        pending: pending.clone(),
        metrics: metrics.clone(),
    };
    let exporting = Exporting {
        stop,
        task,
        pending,
        metrics,
    };
    (queue, exporting)
}

/// The export task's state.
struct Batcher<E> {
    exporter: E,
    scope: InstrumentationScope,
    receiver: mpsc::Receiver<Queued>,
    pending: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    failure_log: RateLimited,
}

impl<E: SpanExporter> Batcher<E> {
    /// Export batches until told to stop; then export what is queued, and end.
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                taken = self.receiver.recv_many(&mut batch, MAX_BATCH) => if taken == 0 {
                    break;
                },
            }
            let filling = tokio::time::sleep(BATCH_DELAY);
            tokio::pin!(filling);
            while batch.len() < MAX_BATCH {
                let room = MAX_BATCH - batch.len();
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => break,
                    () = &mut filling => break,
                    taken = self.receiver.recv_many(&mut batch, room) => if taken == 0 {
                        break;
                    },
                }
            }
            self.export(&mut batch).await;
        }
        // Nothing more comes in; what is queued goes out.
        self.receiver.close();
        loop {
            if batch.is_empty() && self.receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
            self.export(&mut batch).await;
        }
    }

    /// Post one batch, and count it exported or dropped.
    async fn export(&mut self, batch: &mut Vec<Queued>) {
        let count: u64 = batch.iter().map(Queued::span_count).sum();
        let data = batch
            .drain(..)
            .flat_map(|q| spans(&q.trace, &q.finished, &self.scope))
            .collect();
        let result = tokio::time::timeout(EXPORT_TIMEOUT * 2, self.exporter.export(data)).await;
        self.pending.fetch_sub(count, Ordering::Relaxed);
        match result {
            Ok(Ok(())) => self.metrics.trace_spans_exported(count),
            failed => {
                self.metrics.trace_spans_dropped("export_failed", count);
                if let Some(held_back) = self.failure_log.check() {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_string(),
                    };
                    tracing::warn!(spans = count, %error, held_back, "trace export failed");
                }
            }
        }
    }
}
