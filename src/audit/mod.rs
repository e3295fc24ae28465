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
//! appends to. With a signing key ([`signing`]) the writer also signs that checkpoint, writes
//! a signed one every [`ANCHOR_INTERVAL`] the log moved and one at exit, so a forger without
//! the key can at most cut the lines after the last of them. The head of the chain is
//! published ([`Audit::chain_head`], an `info` line on stderr every [`ANCHOR_INTERVAL`]) so it
//! can be kept off the log; `regate audit verify` (`crate::cli::audit`) checks it.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub mod chain;
pub mod input;
pub mod later;
pub mod signing;

/// Where decision records go (`--decision-log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionLog {
    Stdout,
    File(PathBuf),
}

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
    /// An MCP `tools/list` result filtered with `--mcp-tools-list-query`: `listed`, `hidden`,
    /// and `refused` (why) when it could not be filtered and was not passed on. For a result
    /// streamed as events, joined later by the writer ([`later`]) under the same name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools_list: Option<&'a serde_json::Value>,
    /// The budget (`rate_limits`) that refused the request, or would have in audit mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<RateLimitedRecord<'a>>,
    /// The approval the request carried (`x-regate-approval`), verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSeen<'a>>,
    /// The approval request the policy's deny asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_request: Option<ApprovalAskedRecord<'a>>,
    // `shadow`, the shadow policy set's decision when it differs from the main policy's,
    // is published by the shadow set itself and joined to the record by the writer
    // ([`later`]).
}

/// An approval a request carried: who approved, by which issuer, for which digest.
#[derive(Debug, Serialize)]
pub struct ApprovalSeen<'a> {
    pub approver: Option<&'a str>,
    pub issuer: &'a str,
    pub digest: &'a str,
}

/// An approval request a deny asked for: its id and digest.
#[derive(Debug, Serialize)]
pub struct ApprovalAskedRecord<'a> {
    pub id: &'a str,
    pub digest: &'a str,
}

/// A budget that refused a request: the policy's `name` for it and its `key`.
#[derive(Debug, Serialize)]
pub struct RateLimitedRecord<'a> {
    pub name: &'a str,
    pub key: &'a str,
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
    /// `closed` (either side), `error`, `certificate_expired`, `untrusted_issuer`, `revoked`,
    /// `token_expired`, `shutdown`, or the policy's reason when a reload denies what the
    /// tunnel was opened for.
    pub reason: &'a str,
    /// The policy revision that last allowed (or closed) the tunnel.
    pub policy_revision: &'a str,
    pub bytes_from_client: u64,
    pub bytes_from_upstream: u64,
    pub duration_ns: u64,
}

/// Where the chain stands: the first line after a start, and, with a signing key, a line
/// every [`ANCHOR_INTERVAL`] the log moved and the last line at exit.
#[derive(Debug, Serialize)]
pub struct CheckpointRecord<'a> {
    /// Always `chain_checkpoint`.
    pub event: &'static str,
    /// `start`, `interval` or `exit`.
    pub reason: &'static str,
    /// When this regate started writing, RFC 3339.
    pub started: &'a str,
    /// The `chain` of the line before: at a start, the last line of the file appended to;
    /// null when the file was new or its last line carried no chain (and always on stdout).
    pub previous_chain: Option<&'a str>,
    pub regate_version: &'static str,
    pub pid: u32,
    /// With `--decision-log-signing-key`: the hex Ed25519 signature of this line's `seq` and
    /// `previous_chain` ([`signing::signed_bytes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
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
/// log, and, with a signing key, writes a signed checkpoint before it.
pub const ANCHOR_INTERVAL: Duration = Duration::from_secs(60);

struct Shared {
    buffer: Mutex<Vec<u8>>,
    /// Records waiting for a field another producer publishes later ([`later`]).
    waiting: Mutex<Vec<(Vec<u8>, Vec<later::Later>)>>,
    /// How long records may still wait for their field once the log is closing.
    grace: Mutex<Duration>,
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
    /// and start the writer, whose first line is the checkpoint that starts this run's lines.
    /// With `signing`, the writer signs its checkpoints.
    pub fn start(
        target: &DecisionLog,
        signing: Option<signing::SigningKey>,
    ) -> io::Result<(Audit, AuditWriter)> {
        Audit::start_checkpointing(target, signing, ANCHOR_INTERVAL)
    }

    /// [`Audit::start`], with signed checkpoints every `every` the log moved.
    fn start_checkpointing(
        target: &DecisionLog,
        signing: Option<signing::SigningKey>,
        every: Duration,
    ) -> io::Result<(Audit, AuditWriter)> {
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
            waiting: Mutex::default(),
            grace: Mutex::new(Duration::ZERO),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            head: Mutex::new((links.head().0, links.head().1.map(str::to_string))),
        });
        let audit = Audit {
            shared: shared.clone(),
        };
        let writer_side = shared.clone();
        // A line cut short by a regate killed mid-write is ended, so this run's lines stand
        // on their own; `audit verify` reports it.
        let first = match tail.incomplete {
            true => b"\n".to_vec(),
            false => Vec::new(),
        };
        let now = std::time::Instant::now();
        let out = Chained {
            out,
            links,
            lines: first,
            anchored: (0, now),
            checkpoints: Checkpoints {
                started: now_rfc3339(),
                key: signing,
                every,
                last: (0, now),
            },
        };
        let thread = std::thread::Builder::new()
            .name("regate-audit".into())
            .spawn(move || write_loop(&writer_side, out))?;
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
        let Some(bytes) = serialize(record) else {
            return;
        };
        self.append(bytes);
    }

    /// Queue one record that the writer writes once each of `fields` is in, with them. The
    /// caller does not wait; a field already in is joined at once.
    pub fn log_with(&self, record: &impl Serialize, fields: Vec<later::Later>) {
        let Some(bytes) = serialize(record) else {
            return;
        };
        match later::poll(fields, bytes) {
            later::Polled::Ready(bytes) => self.append(bytes),
            later::Polled::Waiting(bytes, later) => lock(&self.shared.waiting).push((bytes, later)),
        }
    }

    /// Append one serialized record (no newline) to the buffer the writer takes.
    fn append(&self, mut bytes: Vec<u8>) {
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

/// `record` as one JSON object, stamped with `timestamp` and `decision_id`, without a
/// newline; none (and an error logged) when it does not serialize.
fn serialize(record: &impl Serialize) -> Option<Vec<u8>> {
    let line = Line {
        timestamp: now_rfc3339(),
        decision_id: uuid::Uuid::new_v4().to_string(),
        record,
    };
    serde_json::to_vec(&line)
        .map_err(|e| tracing::error!(error = %e, "cannot serialize decision record"))
        .ok()
}

fn now_rfc3339() -> String {
    OffsetDateTime::from(SystemTime::now())
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// A lock whose poisoning only means another thread panicked mid-append: the data is still
/// whole enough, and losing records would be worse.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The waiting records whose field is in (all of them when `all`), each ending a line.
fn joined(shared: &Shared, all: bool) -> Vec<u8> {
    let mut waiting = lock(&shared.waiting);
    let mut ready = Vec::new();
    let mut still = Vec::with_capacity(waiting.len());
    for (record, later) in waiting.drain(..) {
        match later::poll(later, record) {
            later::Polled::Ready(bytes) | later::Polled::Waiting(bytes, _) if all => {
                ready.extend_from_slice(&bytes);
                ready.push(b'\n');
            }
            later::Polled::Ready(bytes) => {
                ready.extend_from_slice(&bytes);
                ready.push(b'\n');
            }
            later::Polled::Waiting(bytes, later) => still.push((bytes, later)),
        }
    }
    *waiting = still;
    ready
}

/// At exit, wait (within the grace given to [`AuditWriter::finish_within`]) for the records
/// still waiting on a field, then take every one of them.
fn joined_at_exit(shared: &Shared) -> Vec<u8> {
    let deadline = std::time::Instant::now() + *lock(&shared.grace);
    let mut ready = Vec::new();
    loop {
        ready.extend(joined(shared, false));
        let left = lock(&shared.waiting).len();
        if left == 0 {
            return ready;
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(
                records = left,
                "decision records still waiting at exit for a field published later (the shadow \
                 set's decision, a streamed tools/list's filtering); written without it"
            );
            ready.extend(joined(shared, true));
            return ready;
        }
        std::thread::sleep(FLUSH_INTERVAL.min(Duration::from_millis(5)));
    }
}

fn write_loop(shared: &Shared, mut out: Chained) -> io::Result<()> {
    let mut batch = Vec::with_capacity(EARLY_FLUSH_BYTES);
    out.checkpoint("start");
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
        out.link(&batch);
        batch.clear();
        out.link(&joined(shared, false));
        if closed {
            out.link(&joined_at_exit(shared));
            // Anything appended between the swap and now is picked up by one last pass.
            let rest = std::mem::take(
                &mut *shared
                    .buffer
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            out.link(&rest);
            // Signed last, so a clean exit leaves no line a forger could change unseen.
            if out.checkpoints.key.is_some() && out.moved_since_checkpoint() {
                out.checkpoint("exit");
            }
            out.write(shared);
            let (seq, chain) = out.links.head();
            tracing::info!(seq, chain, "decision log chain head at exit");
            return Ok(());
        }
        if out.checkpoint_due() {
            out.checkpoint("interval");
        }
        out.write(shared);
        out.anchor();
    }
}

/// The sink and the chain its lines are linked into.
struct Chained {
    out: Box<dyn Write + Send>,
    links: chain::Chain,
    /// The lines linked and not yet written: reused from batch to batch.
    lines: Vec<u8>,
    /// The `seq` last logged on stderr, and when.
    anchored: (u64, std::time::Instant),
    checkpoints: Checkpoints,
}

/// What the writer's checkpoints need.
struct Checkpoints {
    /// When this run started, as every checkpoint of it says.
    started: String,
    /// `--decision-log-signing-key`: without it only the start is checkpointed, unsigned.
    key: Option<signing::SigningKey>,
    /// How often a signed checkpoint is written while the log moves.
    every: Duration,
    /// The `seq` of the last checkpoint, and when it was made.
    last: (u64, std::time::Instant),
}

impl Chained {
    /// Link a batch of records (one JSON object a line) into the lines to write.
    fn link(&mut self, batch: &[u8]) {
        for record in batch.split(|b| *b == b'\n').filter(|r| !r.is_empty()) {
            if !self.links.append(record, &mut self.lines) {
                tracing::error!("a decision record is not a JSON object; left out");
            }
        }
    }

    /// Link a checkpoint, signed when there is a key: it links to the line before it, whose
    /// `chain` its signature covers with its own `seq`.
    fn checkpoint(&mut self, reason: &'static str) {
        let (seq, previous) = self.links.head();
        let seq = seq + 1;
        let previous = previous.map(str::to_string);
        let record = CheckpointRecord {
            event: "chain_checkpoint",
            reason,
            started: &self.checkpoints.started,
            previous_chain: previous.as_deref(),
            regate_version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            signature: self
                .checkpoints
                .key
                .as_ref()
                .map(|key| key.sign(seq, previous.as_deref())),
        };
        if let Some(line) = serialize(&record) {
            self.links.append(&line, &mut self.lines);
        }
        self.checkpoints.last = (self.links.head().0, std::time::Instant::now());
    }

    /// Lines were linked since the last checkpoint.
    fn moved_since_checkpoint(&self) -> bool {
        self.links.head().0 > self.checkpoints.last.0
    }

    /// A signed checkpoint is due: there is a key, the log moved, and the interval is over.
    fn checkpoint_due(&self) -> bool {
        self.checkpoints.key.is_some()
            && self.moved_since_checkpoint()
            && self.checkpoints.last.1.elapsed() >= self.checkpoints.every
    }

    /// Write the lines linked so far. A sink that fails (disk full, closed pipe) costs them,
    /// loudly; the writer goes on, so memory stays bounded and records flow again once the
    /// sink recovers. The chain goes on past the lost lines, so `audit verify` shows the gap
    /// where they were.
    fn write(&mut self, shared: &Shared) {
        if self.lines.is_empty() {
            return;
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
    /// Write every record logged so far and stop the writer; a record waiting for a field
    /// another producer publishes later is written without it.
    pub fn finish(self) {
        self.finish_within(Duration::ZERO);
    }

    /// As [`AuditWriter::finish`], letting records wait for their field up to `grace`.
    pub fn finish_within(self, grace: Duration) {
        *lock(&self.shared.grace) = grace;
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
            allowed: i.is_multiple_of(2),
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
            tools_list: None,
            rate_limited: None,
            approval: None,
            approval_request: None,
        }
    }

    #[test]
    fn every_record_from_every_thread_is_written_whole_by_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let (audit, writer) = Audit::start(&DecisionLog::File(path.clone()), None).unwrap();
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

    /// A fresh Ed25519 key pair, loaded as regate loads it: (signing key, public key).
    fn key_pair(dir: &std::path::Path) -> (signing::SigningKey, signing::PublicKey) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        std::fs::write(dir.join("k.pem"), pair.serialize_pem()).unwrap();
        std::fs::write(dir.join("p.pem"), pair.public_key_pem()).unwrap();
        (
            signing::SigningKey::load(&dir.join("k.pem")).unwrap(),
            signing::PublicKey::load(&dir.join("p.pem")).unwrap(),
        )
    }

    fn read_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn checkpoints(lines: &[serde_json::Value]) -> Vec<(usize, &str)> {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l["event"] == "chain_checkpoint")
            .map(|(i, l)| (i, l["reason"].as_str().unwrap()))
            .collect()
    }

    #[test]
    fn without_a_key_only_the_start_is_checkpointed_and_it_is_unsigned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let (audit, writer) =
            Audit::start_checkpointing(&DecisionLog::File(path.clone()), None, Duration::ZERO)
                .unwrap();
        for i in 0..3 {
            audit.log(&record(i, "r"));
        }
        drop(audit);
        writer.finish();
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 4);
        assert_eq!(checkpoints(&lines), vec![(0, "start")]);
        assert!(lines[0].get("signature").is_none(), "{}", lines[0]);
    }

    #[test]
    fn with_a_key_every_checkpoint_is_signed_over_its_seq_and_the_chain_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let (key, public) = key_pair(dir.path());
        let (audit, writer) =
            Audit::start_checkpointing(&DecisionLog::File(path.clone()), Some(key), Duration::ZERO)
                .unwrap();
        audit.log(&record(0, "first"));
        // With no interval, the writer signs after the first batch that holds a record.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&path)
            .unwrap_or_default()
            .contains(r#""reason":"interval""#)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no interval checkpoint"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        audit.log(&record(1, "last"));
        drop(audit);
        writer.finish();

        let lines = read_lines(&path);
        let marks = checkpoints(&lines);
        assert_eq!(marks.first(), Some(&(0, "start")));
        assert!(marks.contains(&(2, "interval")), "{marks:?}");
        // The last record is covered by the checkpoint at exit, the last line.
        assert_eq!(marks.last(), Some(&(lines.len() - 1, "exit")));
        assert_eq!(lines[lines.len() - 2]["request_id"], "last");
        for (i, _) in &marks {
            let line = &lines[*i];
            let previous = line["previous_chain"].as_str();
            let before = i
                .checked_sub(1)
                .map(|b| lines[b]["chain"].as_str().unwrap());
            assert_eq!(previous, before, "{line}");
            let seq = line["seq"].as_u64().unwrap();
            let signature = line["signature"].as_str().unwrap();
            assert!(public.verifies(seq, previous, signature), "{line}");
        }

        // A restart signs its link to the run before; with nothing logged, nothing follows.
        let key = signing::SigningKey::load(&dir.path().join("k.pem")).unwrap();
        let before = lines.len();
        let (audit, writer) = Audit::start(&DecisionLog::File(path.clone()), Some(key)).unwrap();
        drop(audit);
        writer.finish();
        let lines = read_lines(&path);
        assert_eq!(lines.len(), before + 1);
        let restart = &lines[before];
        assert_eq!(restart["reason"], "start");
        assert_eq!(restart["previous_chain"], lines[before - 1]["chain"]);
        assert!(public.verifies(
            restart["seq"].as_u64().unwrap(),
            restart["previous_chain"].as_str(),
            restart["signature"].as_str().unwrap()
        ));
    }
}
