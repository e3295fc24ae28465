//! What the safe-policy-change ledger costs: recording the policy input in the decision
//! record (`--decision-log-input`: building it when the decision cache answered, redacting
//! it, serializing it on the request path), and chaining the lines (`seq` and `chain`, in
//! the writer thread).
//!
//! A plain `fn main`; BENCHMARKS.md keeps the figures. Each measurement is bounded by a count
//! and a deadline, and nothing asserts on a timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use regate::audit::chain::Chain;
use regate::audit::input::Recording;
use regate::audit::DecisionLog;
use regate::audit::{Audit, DecisionRecord};
use regate::policy::input::{ConnInput, RequestInput};
use regate::tls::identity::PeerIdentity;

/// Calls per timed sample, so the clock's own cost is spread thin.
const PER_SAMPLE: usize = 32;

/// The median over samples of the time per call, and how many calls were made.
fn median_ns(runs: usize, limit: Duration, mut f: impl FnMut()) -> (f64, usize) {
    let mut times = Vec::with_capacity(runs / PER_SAMPLE + 1);
    let deadline = Instant::now() + limit;
    while times.len() * PER_SAMPLE < runs && Instant::now() < deadline {
        let start = Instant::now();
        for _ in 0..PER_SAMPLE {
            f();
        }
        times.push(start.elapsed().as_nanos() as f64 / PER_SAMPLE as f64);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2], times.len() * PER_SAMPLE)
}

fn record<'a>(input: Option<&'a regorus::Value>) -> DecisionRecord<'a> {
    DecisionRecord {
        request_id: "f143677c-dc7d-4e57-b950-55e0d6fddcc3",
        client_request_id: None,
        trace_id: None,
        spiffe_id: Some("spiffe://example.org/ns/agents/sa/summarizer"),
        serial: "14bb6efcd8319a2b1338eb8968a4d00f854738c3",
        delegation_subject: None,
        delegation_actor: None,
        delegation_jti: None,
        denied_call: None,
        method: "GET",
        path: "/docs/handbook/onboarding",
        host: "docs.internal:8443",
        allowed: true,
        http_status: 200,
        reason: "granted",
        policy_revision: "sha256:91dc7b82c5c6aa0b",
        eval_ns: 6400,
        cached: false,
        upstream_status: Some(200),
        upstream_ns: Some(350_000),
        duration_ns: 420_000,
        input,
        would_deny: false,
        tools_list: None,
        rate_limited: None,
        approval: None,
        approval_request: None,
    }
}

fn main() {
    let quick = std::env::var_os("REGATE_BENCH_QUICK").is_some();
    let (runs, limit) = match quick {
        true => (2_000, Duration::from_secs(2)),
        false => (50_000, Duration::from_secs(10)),
    };
    let peer = PeerIdentity {
        spiffe_id: regate::tls::identity::SpiffeId::parse(
            "spiffe://example.org/ns/agents/sa/summarizer",
        ),
        uri_sans: vec!["spiffe://example.org/ns/agents/sa/summarizer".into()],
        dns_sans: Vec::new(),
        subject: "CN=summarizer".into(),
        issuer: "CN=example CA".into(),
        serial: "14bb6efcd8319a2b1338eb8968a4d00f854738c3".into(),
        fingerprint_sha256: "ab".repeat(32),
        not_before: 0,
        not_after: 4_102_444_800,
    };
    let addr: SocketAddr = "10.0.0.7:41234".parse().unwrap();
    let conn = ConnInput::new(&peer, &peer, addr, addr, regorus::Value::new_object());
    // A typical agent request: eight headers, a bearer token among them.
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("host", "docs.internal:8443"),
        ("user-agent", "agent-runtime/1.4"),
        ("accept", "application/json"),
        (
            "authorization",
            "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
        ),
        ("x-request-id", "f143677c-dc7d-4e57-b950-55e0d6fddcc3"),
        ("x-forwarded-for", "10.0.0.7"),
        ("x-forwarded-proto", "https"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ] {
        headers.insert(k, v.parse().unwrap());
    }
    let segments = vec!["docs".to_string(), "handbook".into(), "onboarding".into()];
    let query = BTreeMap::new();
    let request = RequestInput {
        id: "f143677c-dc7d-4e57-b950-55e0d6fddcc3",
        method: "GET",
        headers: &headers,
        path: "/docs/handbook/onboarding",
        host: "docs.internal:8443",
        protocol: "HTTP/1.1",
        parsed_path: &segments,
        parsed_query: &query,
        upgrade: None,
        delegation: None,
        approval: None,
        body: None,
        now: SystemTime::now(),
    };
    let recording = Recording::new([]);
    let built = conn.build(&request);
    let recorded = recording.record(built.clone());

    let dir = tempfile::tempdir().unwrap();
    let (audit, writer) = Audit::start(&DecisionLog::File(dir.path().join("d.log")), None).unwrap();

    println!("| what | median ns | runs |");
    println!("|---|---:|---:|");
    let (ns, n) = median_ns(runs, limit, || {
        black_box(conn.build(black_box(&request)));
    });
    println!("| build the whole input (only when the decision cache answered) | {ns:.0} | {n} |");
    let (ns, n) = median_ns(runs, limit, || {
        black_box(recording.record(black_box(built.clone())));
    });
    println!("| redact it: digest credential headers, drop body fields | {ns:.0} | {n} |");
    let (ns, n) = median_ns(runs, limit, || {
        audit.log(black_box(&record(None)));
    });
    println!("| queue a record without input (serialize, append) | {ns:.0} | {n} |");
    let (ns, n) = median_ns(runs, limit, || {
        audit.log(black_box(&record(Some(&recorded))));
    });
    println!("| queue a record with its input (serialize, append) | {ns:.0} | {n} |");
    drop(audit);
    writer.finish();

    // The writer's side: one line at a time, as it links a batch.
    let without = serde_json::to_vec(&record(None)).unwrap();
    let with = serde_json::to_vec(&record(Some(&recorded))).unwrap();
    for (what, line) in [("without input", &without), ("with input", &with)] {
        let mut chain = Chain::default();
        let mut out = Vec::with_capacity(64 << 10);
        let (ns, n) = median_ns(runs, limit, || {
            out.clear();
            black_box(chain.append(black_box(line), &mut out));
        });
        println!(
            "| chain one line {what} ({} bytes): seq, SHA-256, copy | {ns:.0} | {n} |",
            line.len()
        );
        let (ns, n) = median_ns(runs, limit, || {
            out.clear();
            out.extend_from_slice(black_box(line));
            black_box(&out);
        });
        println!("| copy the same line unchained (what it replaced) | {ns:.0} | {n} |");
    }
}
