//! Decision records: one JSON line per request, on a stream of their own (stdout or a file),
//! apart from the diagnostic log on stderr.
//!
//! The request path only serializes a record and hands the line to a writer thread, so a
//! slow disk or a blocked pipe never stalls a tokio worker. The writer flushes whenever it
//! has caught up, and drains everything before [`AuditWriter::finish`] returns.
//! Records carry no header values, so credentials cannot leak through them.

use std::io::{self, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::DecisionLog;

/// One decision, as logged. Field names are a contract (docs/policy-input.md).
#[derive(Debug, Serialize)]
pub struct DecisionRecord<'a> {
    pub request_id: &'a str,
    pub spiffe_id: Option<&'a str>,
    pub serial: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub allowed: bool,
    pub http_status: u16,
    pub reason: &'a str,
    pub policy_revision: &'a str,
    pub eval_ns: u64,
    pub upstream_status: Option<u16>,
    pub duration_ns: u64,
}

#[derive(Serialize)]
struct Line<'a> {
    timestamp: String,
    decision_id: String,
    #[serde(flatten)]
    record: &'a DecisionRecord<'a>,
}

/// The sending side, shared by every connection.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<String>,
}

/// The writer thread; join it at shutdown so no record is lost.
pub struct AuditWriter {
    thread: JoinHandle<io::Result<()>>,
}

impl Audit {
    pub fn start(target: &DecisionLog) -> io::Result<(Audit, AuditWriter)> {
        let out: Box<dyn Write + Send> = match target {
            DecisionLog::Stdout => Box::new(io::stdout()),
            DecisionLog::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = mpsc::channel::<String>();
        let thread = std::thread::Builder::new()
            .name("regate-audit".into())
            .spawn(move || write_loop(rx, io::BufWriter::new(out)))?;
        Ok((Audit { tx }, AuditWriter { thread }))
    }

    pub fn log(&self, record: &DecisionRecord<'_>) {
        let line = Line {
            timestamp: OffsetDateTime::from(SystemTime::now())
                .format(&Rfc3339)
                .unwrap_or_default(),
            decision_id: uuid::Uuid::new_v4().to_string(),
            record,
        };
        match serde_json::to_string(&line) {
            Ok(mut s) => {
                s.push('\n');
                if self.tx.send(s).is_err() {
                    tracing::error!("decision log writer is gone; record lost");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot serialize decision record"),
        }
    }
}

fn write_loop(rx: mpsc::Receiver<String>, mut out: impl Write) -> io::Result<()> {
    while let Ok(line) = rx.recv() {
        out.write_all(line.as_bytes())?;
        while let Ok(line) = rx.try_recv() {
            out.write_all(line.as_bytes())?;
        }
        out.flush()?;
    }
    out.flush()
}

impl AuditWriter {
    /// Wait for every record sent so far to be written. Call after the last [`Audit`] is
    /// dropped, or this waits forever.
    pub fn finish(self) {
        match self.thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "writing the decision log failed"),
            Err(_) => tracing::error!("decision log writer panicked"),
        }
    }
}
