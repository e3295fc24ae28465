//! Decision records: one JSON line per request, on a stream of their own (stdout or a file),
//! apart from the diagnostic log on stderr.
//!
//! The request path serializes a record and appends it to a shared buffer under a short
//! lock; it neither writes nor wakes anyone. A writer thread swaps the buffer out every
//! [`FLUSH_INTERVAL`] (sooner when it grows past [`EARLY_FLUSH_BYTES`]) and writes it in one
//! go, so a slow disk or a blocked pipe never stalls a tokio worker, and a busy proxy pays one
//! `write` per batch instead of one wake-up and one `write` per request.
//! [`AuditWriter::finish`] writes whatever is left. Records carry no header values, so
//! credentials cannot leak through them; with `--decision-log-input` a record also carries
//! the policy input, with credential headers digested and no body ([`input`]).
//!
//! The writer thread also links every line into a hash chain ([`chain`]), in file order, so
//! the request path pays nothing for it: each line gets `seq` and `chain`, and the first line
//! after a start is a `chain_checkpoint` record that links to the last line of the file it
//! appends to. The head of the chain is published ([`Audit::chain_head`], an `info` line on
//! stderr every [`ANCHOR_INTERVAL`]) so it can be kept off the log; [`verify`] checks it.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::DecisionLog;

pub mod chain;
pub mod input;
pub mod signing;
pub mod verify;

/// One decision, as logged. Field names are a contract (docs/policy-input.md).
#[derive(Debug, Serialize)]
pub struct DecisionRecord<'a> {
    /// regate's own id for the request, also sent upstream as `x-request-id`.
    pub request_id: &'a str,
    /// The `x-request-id` the client sent, when it was a sane one; never used as regate's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<&'a str>,
    /// From the request's W3C `traceparent`, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    pub spiffe_id: Option<&'a str>,
    pub serial: &'a str,
    /// From a verified delegation token: on whose behalf (`sub`), through whom (`act.sub`),
    /// and which token (`jti`). Never the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation_subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation_actor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation_jti: Option<&'a str>,
    /// The JSON-RPC call that was denied, of a tool-call request: `index` in the batch,
    /// `method`, `tool`, `id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied_call: Option<&'a serde_json::Value>,
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub allowed: bool,
    pub http_status: u16,
    pub reason: &'a str,
    pub policy_revision: &'a str,
    pub eval_ns: u64,
    /// True when the decision came from the decision cache, not from an evaluation.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    pub upstream_status: Option<u16>,
    /// From sending the request upstream to its response head.
    pub upstream_ns: Option<u64>,
    pub duration_ns: u64,
    /// The policy input as evaluated, recorded ([`input::Recording`]), when
    /// `--decision-log-input` is on and the decision came from the policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<&'a regorus::Value>,
    /// `--mode audit`: the policy denied (for `reason`) and the request was forwarded anyway.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub would_deny: bool,
    /// The shadow policy set's decision, when it differs from the main policy's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowOutcome<'a>>,
}

/// What the shadow policy set (`--shadow-policies`) decided for a request, when it differs
/// from the main set's decision in `allowed` or in `reason`. An evaluation that failed is a
/// deny with its reason (`policy_error`, `policy_timeout`, ...), as for the main set.
#[derive(Debug, Serialize)]
pub struct ShadowOutcome<'a> {
    pub allowed: bool,
    pub reason: &'a str,
    /// The shadow set's revision that decided.
    pub revision: &'a str,
}

/// The end of an upgraded connection (a WebSocket, say): after its `101`, the request's own
/// record is written, and this one follows when the tunnel closes.
#[derive(Debug, Serialize)]
pub struct TunnelRecord<'a> {
    /// Always `tunnel_closed`; decision records have no `event`.
    pub event: &'static str,
    /// The request that opened the tunnel.
    pub request_id: &'a str,
    pub spiffe_id: Option<&'a str>,
    pub serial: &'a str,
    pub protocol: &'a str,
    /// `client_closed`, `upstream_closed`, `error`, `certificate_expired`, `untrusted_issuer`,
    /// `shutdown`, or the policy's reason when a reload denies what the tunnel was opened
    /// for.
    pub reason: &'a str,
    /// The policy revision that last allowed (or closed) the tunnel.
    pub policy_revision: &'a str,
    pub bytes_from_client: u64,
    pub bytes_from_upstream: u64,
    pub duration_ns: u64,
}

/// A change to the revocations (the kill switch), through the admin API or the file.
#[derive(Debug, Serialize)]
pub struct RevocationRecord<'a> {
    /// `revocation_added`, `revocation_removed` or `revocations_reloaded`.
    pub event: &'static str,
    /// `api` or `file`.
    pub source: &'static str,
    /// The revocation added or removed; absent for a file reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<&'a crate::revocations::Revocation>,
    /// The admin client's address, for an API change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// How many revocations are in force after the change.
    pub in_force: usize,
}

/// The first line after a start: where the chain picks up.
#[derive(Debug, Serialize)]
pub struct CheckpointRecord {
    /// Always `chain_checkpoint`.
    pub event: &'static str,
    /// When this regate started writing, RFC 3339.
    pub started: String,
    /// The `chain` of the last line of the file appended to; null when the file was new or
    /// its last line carried no chain (and always on stdout).
    pub previous_chain: Option<String>,
    pub regate_version: &'static str,
    pub pid: u32,
}

#[derive(Serialize)]
struct Line<'a, R> {
    timestamp: String,
    decision_id: String,
    #[serde(flatten)]
    record: &'a R,
}

/// How long a record may wait in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// A buffer this large is written at once rather than at the next interval.
pub const EARLY_FLUSH_BYTES: usize = 256 * 1024;

/// How often the writer logs the chain head on stderr (when it moved), to anchor it off the
/// log.
pub const ANCHOR_INTERVAL: Duration = Duration::from_secs(60);

struct Shared {
    buffer: Mutex<Vec<u8>>,
    wake: Condvar,
    closed: AtomicBool,
    /// The last line written: `seq` (0: none yet) and `chain`.
    head: Mutex<(u64, Option<String>)>,
}

/// The sending side, shared by every connection.
#[derive(Clone)]
pub struct Audit {
    shared: Arc<Shared>,
}

/// The writer thread; [`AuditWriter::finish`] it at shutdown so no record is lost.
pub struct AuditWriter {
    shared: Arc<Shared>,
    thread: JoinHandle<io::Result<()>>,
}

impl Audit {
    /// Open the decision log (appending to a file), pick the chain up from its last line,
    /// and queue the checkpoint record that starts this run's lines.
    pub fn start(target: &DecisionLog) -> io::Result<(Audit, AuditWriter)> {
        let (out, tail): (Box<dyn Write + Send>, chain::Tail) = match target {
            DecisionLog::Stdout => (Box::new(io::stdout()), chain::Tail::default()),
            DecisionLog::File(path) => {
                let tail = chain::read_tail(path)?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                (Box::new(file), tail)
            }
        };
        let links = chain::Chain::after(tail.last.as_ref());
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(EARLY_FLUSH_BYTES)),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            head: Mutex::new((links.head().0, links.head().1.map(str::to_string))),
        });
        let audit = Audit {
            shared: shared.clone(),
        };
        audit.log(&CheckpointRecord {
            event: "chain_checkpoint",
            started: OffsetDateTime::from(SystemTime::now())
                .format(&Rfc3339)
                .unwrap_or_default(),
            previous_chain: tail.last.map(|l| l.chain),
            regate_version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
        });
        let writer_side = shared.clone();
        // A line cut short by a regate killed mid-write is ended, so this run's lines stand
        // on their own; `audit verify` reports it.
        let first = match tail.incomplete {
            true => b"\n".to_vec(),
            false => Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("regate-audit".into())
            .spawn(move || write_loop(&writer_side, out, links, first))?;
        Ok((audit, AuditWriter { shared, thread }))
    }

    /// The last line written to the decision log: its `seq` (0: none yet) and `chain`.
    pub fn chain_head(&self) -> (u64, Option<String>) {
        self.shared
            .head
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Queue one record (a [`DecisionRecord`] or a [`TunnelRecord`]) for the writer.
    pub fn log(&self, record: &impl Serialize) {
        let line = Line {
            timestamp: OffsetDateTime::from(SystemTime::now())
                .format(&Rfc3339)
                .unwrap_or_default(),
            decision_id: uuid::Uuid::new_v4().to_string(),
            record,
        };
        let mut bytes = match serde_json::to_vec(&line) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize decision record");
                return;
            }
        };
        bytes.push(b'\n');
        // A poisoned lock only means another thread panicked mid-append; the bytes are
        // still a buffer, and losing the record would be worse.
        let mut buffer = self
            .shared
            .buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        buffer.extend_from_slice(&bytes);
        if buffer.len() >= EARLY_FLUSH_BYTES {
            self.shared.wake.notify_one();
        }
    }
}

fn write_loop(
    shared: &Shared,
    out: Box<dyn Write + Send>,
    links: chain::Chain,
    first: Vec<u8>,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(EARLY_FLUSH_BYTES);
    let mut out = Chained {
        out,
        links,
        lines: first,
        anchored: (0, std::time::Instant::now()),
    };
    loop {
        let closed = {
            let buffer = shared
                .buffer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let (mut buffer, _) = shared
                .wake
                .wait_timeout_while(buffer, FLUSH_INTERVAL, |b| {
                    b.len() < EARLY_FLUSH_BYTES && !shared.closed.load(Ordering::Acquire)
                })
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::swap(&mut *buffer, &mut batch);
            shared.closed.load(Ordering::Acquire)
        };
        out.write_batch(shared, &batch);
        batch.clear();
        if closed {
            // Anything appended between the swap and now is picked up by one last pass.
            let rest = std::mem::take(
                &mut *shared
                    .buffer
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            out.write_batch(shared, &rest);
            let (seq, chain) = out.links.head();
            tracing::info!(seq, chain, "decision log chain head at exit");
            return Ok(());
        }
        out.anchor();
    }
}

/// The sink and the chain its lines are linked into.
struct Chained {
    out: Box<dyn Write + Send>,
    links: chain::Chain,
    /// The batch's lines, chained: reused from batch to batch.
    lines: Vec<u8>,
    /// The `seq` last logged on stderr, and when.
    anchored: (u64, std::time::Instant),
}

impl Chained {
    /// Link a batch of records (one JSON object a line) and write it. A sink that fails (disk
    /// full, closed pipe) costs that batch, loudly; the writer goes on, so memory stays
    /// bounded and records flow again once the sink recovers. The chain goes on past the
    /// lost lines, so `audit verify` shows the gap where they were.
    fn write_batch(&mut self, shared: &Shared, batch: &[u8]) {
        if batch.is_empty() {
            return;
        }
        for record in batch.split(|b| *b == b'\n').filter(|r| !r.is_empty()) {
            if !self.links.append(record, &mut self.lines) {
                tracing::error!("a decision record is not a JSON object; left out");
            }
        }
        if let Err(e) = self
            .out
            .write_all(&self.lines)
            .and_then(|()| self.out.flush())
        {
            tracing::error!(error = %e, bytes = self.lines.len(), "cannot write decision records; batch lost");
        }
        self.lines.clear();
        let (seq, chain) = self.links.head();
        *shared
            .head
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = (seq, chain.map(str::to_string));
    }

    /// The chain head on stderr, every [`ANCHOR_INTERVAL`] when it moved: a copy off the log
    /// that whoever ships stderr keeps.
    fn anchor(&mut self) {
        let (seq, chain) = self.links.head();
        if seq != self.anchored.0 && self.anchored.1.elapsed() >= ANCHOR_INTERVAL {
            tracing::info!(seq, chain, "decision log chain head");
            self.anchored = (seq, std::time::Instant::now());
        }
    }
}

impl AuditWriter {
    /// Write every record logged so far and stop the writer.
    pub fn finish(self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        match self.thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "writing the decision log failed"),
            Err(_) => tracing::error!("decision log writer panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize, id: &str) -> DecisionRecord<'_> {
        DecisionRecord {
            request_id: id,
            client_request_id: None,
            trace_id: None,
            spiffe_id: None,
            serial: "01",
            delegation_subject: None,
            delegation_actor: None,
            delegation_jti: None,
            denied_call: None,
            method: "GET",
            path: "/",
            host: "h",
            allowed: i % 2 == 0,
            http_status: 200,
            reason: "allowed",
            policy_revision: "sha256:0",
            eval_ns: i as u64,
            cached: false,
            upstream_status: None,
            upstream_ns: None,
            duration_ns: 0,
            input: None,
            would_deny: false,
            shadow: None,
        }
    }

    #[test]
    fn every_record_from_every_thread_is_written_whole_by_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let (audit, writer) = Audit::start(&DecisionLog::File(path.clone())).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let audit = audit.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        let id = format!("{t}-{i}");
                        audit.log(&record(i, &id));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(audit);
        writer.finish();
        let text = std::fs::read_to_string(path).unwrap();
        let mut ids = std::collections::HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["seq"], i as u64 + 1);
            if i == 0 {
                assert_eq!(v["event"], "chain_checkpoint");
                continue;
            }
            ids.insert(v["request_id"].as_str().unwrap().to_string());
        }
        assert_eq!(ids.len(), 20_000);
    }
}
