//! What a span per request costs: regate with tracing off, on (exporting to a collector that
//! answers at once), and on with the collector down, measured in one run, interleaved round
//! by round so the machine's drift falls on all three alike. Every request carries a sampled
//! `traceparent`, so with tracing on each one is two spans: the worst case.
//!
//! Reported: per-request latency on one keep-alive mTLS HTTP/1.1 connection (p50, p99), and
//! the throughput of 8 connections, each as a ratio to tracing off; then how many spans the
//! collector received and how many were counted as dropped. A plain `fn main`
//! (`harness = false`); `REGATE_BENCH_QUICK=1` cuts every count and time by 10x. Every loop is
//! bounded by a count and a deadline, and nothing here asserts on a timing.
//!
//! The collector is a minimal one in this process that reads each post whole and answers 200
//! (decoding is the tests' business: `tests/requests_are_traced_to_an_otlp_collector.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use common::{Http1, Regate, Setup, SUMMARIZER};

const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := false

allow if {
	input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/summarizer"
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "docs"
}
"#;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Clone, Copy)]
struct Plan {
    rounds: usize,
    warmup: usize,
    requests: usize,
    load_requests: usize,
    limit: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        let quick = std::env::var("REGATE_BENCH_QUICK").is_ok_and(|v| v == "1");
        let div = if quick { 10 } else { 1 };
        Plan {
            rounds: 5,
            warmup: 200 / div,
            requests: 2_000 / div,
            load_requests: 10_000 / div,
            limit: Duration::from_secs(10) / div as u32,
        }
    }
}

fn main() {
    let plan = Plan::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(regate::worker_threads())
        .enable_all()
        .build()
        .unwrap();
    println!(
        "regate traces benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    runtime.block_on(run(plan));
}

/// One configuration of regate under test.
struct Subject {
    name: &'static str,
    regate: Regate,
    latencies: Vec<u64>,
    throughputs: Vec<f64>,
}

async fn run(plan: Plan) {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let summarizer = setup.ca.client(SUMMARIZER);
    let (upstream, _upstream_task) = fast_server(None).await;
    let received = Arc::new(AtomicU64::new(0));
    let (collector, _collector_task) = fast_server(Some(received.clone())).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let upstream_url = format!("http://{upstream}");
    let mut subjects = Vec::new();
    for (name, extra) in [
        ("tracing off", vec![]),
        (
            "tracing on",
            vec!["--otlp-endpoint".to_string(), format!("http://{collector}")],
        ),
        (
            "on, collector down",
            vec!["--otlp-endpoint".to_string(), format!("http://{dead}")],
        ),
    ] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        subjects.push(Subject {
            name,
            regate: setup.start(&upstream_url, &extra).await,
            latencies: Vec::new(),
            throughputs: Vec::new(),
        });
    }
    for round in 0..plan.rounds {
        for subject in &mut subjects {
            let mut client = subject.regate.http1(&setup, &summarizer).await;
            let mut samples = sequential(&plan, &mut client).await;
            subject.latencies.append(&mut samples);
            let mut clients = Vec::new();
            for _ in 0..8 {
                clients.push(subject.regate.http1(&setup, &summarizer).await);
            }
            subject.throughputs.push(load(&plan, clients).await);
        }
        println!("round {} of {} done", round + 1, plan.rounds);
    }

    println!(
        "\n{:<22} {:>8} {:>9} {:>9} {:>11} {:>11} {:>11}",
        "", "n", "p50 µs", "p99 µs", "p50 ratio", "req/s", "req/s ratio"
    );
    let base_p50 = percentile(&mut subjects[0].latencies.clone(), 50.0);
    let base_tput = median(&mut subjects[0].throughputs.clone());
    for subject in &mut subjects {
        let p50 = percentile(&mut subject.latencies, 50.0);
        let p99 = percentile(&mut subject.latencies, 99.0);
        let tput = median(&mut subject.throughputs);
        println!(
            "{:<22} {:>8} {:>9.1} {:>9.1} {:>10.3}× {:>11.0} {:>10.3}×",
            subject.name,
            subject.latencies.len(),
            p50,
            p99,
            p50 / base_p50,
            tput,
            tput / base_tput
        );
    }
    for subject in subjects {
        let metrics = common::admin_get(subject.regate.admin, "/metrics").await.1;
        let series = |name: &str| {
            metrics
                .lines()
                .filter(|l| l.starts_with(name))
                .map(|l| {
                    l.rsplit(' ')
                        .next()
                        .unwrap_or("0")
                        .parse::<u64>()
                        .unwrap_or(0)
                })
                .sum::<u64>()
        };
        let (exported, dropped) = (
            series("regate_trace_spans_exported_total"),
            series("regate_trace_spans_dropped_total"),
        );
        subject.regate.stop().await;
        println!(
            "{:<22} spans exported {exported}, dropped {dropped} (by /metrics before shutdown)",
            subject.name
        );
    }
    println!(
        "collector received {} posts",
        received.load(Ordering::Relaxed)
    );
}

/// Requests one after another on one connection: the latency of each, warm-up excluded.
async fn sequential(plan: &Plan, client: &mut Http1) -> Vec<u64> {
    let deadline = Instant::now() + plan.limit;
    let mut samples = Vec::with_capacity(plan.requests);
    for i in 0..plan.warmup + plan.requests {
        if Instant::now() > deadline {
            println!("time limit reached after {i} requests");
            break;
        }
        let start = Instant::now();
        assert_eq!(get(client).await, 200);
        if i >= plan.warmup {
            samples.push(start.elapsed().as_nanos() as u64);
        }
    }
    samples
}

/// 8 connections kept busy until the count or the time runs out: requests per second.
async fn load(plan: &Plan, clients: Vec<Http1>) -> f64 {
    let tickets = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let total = plan.load_requests;
    let start = Instant::now();
    let deadline = start + plan.limit;
    let mut tasks = Vec::new();
    for mut client in clients {
        let (tickets, done) = (tickets.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while tickets.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                assert_eq!(get(&mut client).await, 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn get(client: &mut Http1) -> u16 {
    let req = Request::get("/docs/readme")
        .header(http::header::HOST, "localhost")
        .header("traceparent", TRACEPARENT)
        .body(
            Full::new(Bytes::new())
                .map_err(|e: Infallible| match e {})
                .boxed(),
        )
        .unwrap();
    client.ready().await.unwrap();
    let resp = client.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

/// A server that reads each request whole and answers 200 `ok` at once; counting the
/// requests when given a counter (the collector).
async fn fast_server(count: Option<Arc<AtomicU64>>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let count = count.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        if let Some(count) = &count {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Nearest-rank percentile of nanosecond samples, in microseconds.
fn percentile(samples: &mut [u64], pct: f64) -> f64 {
    samples.sort_unstable();
    if samples.is_empty() {
        return f64::NAN;
    }
    let rank = ((pct / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1] as f64 / 1_000.0
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
