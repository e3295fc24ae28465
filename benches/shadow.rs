//! What a shadow policy set (`--shadow-policies`) costs per request: the response latency it
//! adds (none is expected: it is evaluated while the request is forwarded, on threads of its
//! own), and the CPU it takes, with the decision cache on (the default) and off (every
//! request evaluated by both sets).
//!
//! Four regates run side by side in this process, on the shipped policies: without and with a
//! shadow set (a copy of the same policies, so the two always agree and no record grows),
//! each with the decision cache on and off. They are measured in turns, round after round,
//! so that whatever else the machine does falls on all four alike. CPU is this process's
//! (client, regate and upstream together); the difference between two rows is what the
//! shadow set adds. A plain `fn main` (`harness = false`); BENCHMARKS.md keeps the figures.
//! `REGATE_BENCH_QUICK=1` cuts every count and time limit by 10x. Every loop is bounded by a
//! count and a deadline, and nothing asserts on a timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use common::{Regate, Setup, SUMMARIZER};

const PATH: &str = "/docs/readme";

#[derive(Clone, Copy)]
struct Plan {
    rounds: usize,
    seq_per_round: usize,
    load_per_round: usize,
    load_conns: usize,
    limit: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        let quick = std::env::var("REGATE_BENCH_QUICK").is_ok_and(|v| v == "1");
        let div = if quick { 10 } else { 1 };
        Plan {
            rounds: 5,
            seq_per_round: 1_000 / div,
            load_per_round: 4_000 / div,
            load_conns: 8,
            limit: Duration::from_secs(10) / div as u32,
        }
    }
}

/// CPU time this process has used, in nanoseconds.
fn process_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

fn percentile_us(sorted: &[u64], pct: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1_000.0
}

/// One regate and what was measured of it.
struct Subject {
    name: &'static str,
    regate: Regate,
    latencies: Vec<u64>,
    seq_cpu_ns: u64,
    seq_requests: usize,
    load_cpu_ns: u64,
    load_requests: usize,
    load_secs: f64,
}

fn main() {
    let plan = Plan::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(regate::worker_threads())
        .enable_all()
        .build()
        .unwrap();
    println!(
        "regate shadow policy benchmark ({} cores, {} run)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if plan.seq_per_round < 1_000 {
            "quick"
        } else {
            "full"
        }
    );
    runtime.block_on(run(&plan));
}

async fn run(plan: &Plan) {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let setup = Setup::new(&[]);
    std::fs::create_dir_all(setup.path("shadow")).unwrap();
    for entry in std::fs::read_dir(&policies).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let body = std::fs::read_to_string(&path).unwrap();
            setup.write_policy(&name, &body);
            std::fs::write(setup.path("shadow").join(&name), &body).unwrap();
        }
    }
    let shadow = setup.path("shadow").display().to_string();
    let summarizer = setup.ca.client(SUMMARIZER);
    let upstream = fast_upstream().await;

    let configs: [(&'static str, Vec<&str>); 4] = [
        ("no shadow, cache on", vec![]),
        ("shadow, cache on", vec!["--shadow-policies", &shadow]),
        (
            "no shadow, cache off",
            vec!["--decision-cache-entries", "0"],
        ),
        (
            "shadow, cache off",
            vec![
                "--shadow-policies",
                &shadow,
                "--decision-cache-entries",
                "0",
            ],
        ),
    ];
    let mut subjects = Vec::new();
    for (i, (name, extra)) in configs.iter().enumerate() {
        let log = setup.path(&format!("decisions-{i}.log"));
        let mut args = setup.args(&format!("http://{upstream}"));
        let at = args.iter().position(|a| a == "--decision-log").unwrap();
        args[at + 1] = log.display().to_string();
        args.extend(extra.iter().map(|s| s.to_string()));
        subjects.push(Subject {
            name,
            regate: Regate::start(args, log).await,
            latencies: Vec::new(),
            seq_cpu_ns: 0,
            seq_requests: 0,
            load_cpu_ns: 0,
            load_requests: 0,
            load_secs: 0.0,
        });
    }

    for round in 0..plan.rounds {
        for subject in subjects.iter_mut() {
            let mut client = subject.regate.http1(&setup, &summarizer).await;
            // Warm the connection (and the caches) outside the measurement.
            for _ in 0..20 {
                get(&mut client).await;
            }
            let deadline = Instant::now() + plan.limit;
            let cpu = process_cpu_ns();
            let mut n = 0;
            while n < plan.seq_per_round && Instant::now() < deadline {
                let start = Instant::now();
                get(&mut client).await;
                subject.latencies.push(start.elapsed().as_nanos() as u64);
                n += 1;
            }
            subject.seq_cpu_ns += process_cpu_ns() - cpu;
            subject.seq_requests += n;

            let mut clients = Vec::new();
            for _ in 0..plan.load_conns {
                clients.push(subject.regate.http1(&setup, &summarizer).await);
            }
            let cpu = process_cpu_ns();
            let (done, secs) = load(plan, clients).await;
            subject.load_cpu_ns += process_cpu_ns() - cpu;
            subject.load_requests += done;
            subject.load_secs += secs;
        }
        println!("round {} of {} done", round + 1, plan.rounds);
    }

    println!(
        "\n{:<22} {:>7} {:>8} {:>8} {:>8} {:>12} {:>9} {:>12}",
        "", "n", "p50 µs", "p90 µs", "p99 µs", "CPU µs/req", "req/s", "CPU µs/req"
    );
    println!(
        "{:<22} {:>7} {:>8} {:>8} {:>8} {:>12} {:>9} {:>12}",
        "", "", "one connection, sequential", "", "", "", "8 connections", ""
    );
    for s in subjects.iter_mut() {
        s.latencies.sort_unstable();
        println!(
            "{:<22} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>12.1} {:>9.0} {:>12.1}",
            s.name,
            s.latencies.len(),
            percentile_us(&s.latencies, 50.0),
            percentile_us(&s.latencies, 90.0),
            percentile_us(&s.latencies, 99.0),
            s.seq_cpu_ns as f64 / s.seq_requests.max(1) as f64 / 1_000.0,
            s.load_requests as f64 / s.load_secs,
            s.load_cpu_ns as f64 / s.load_requests.max(1) as f64 / 1_000.0,
        );
    }
    for s in &subjects {
        let (_, metrics) = common::admin_get(s.regate.admin, "/metrics").await;
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix("regate_shadow_evaluation_duration_seconds_count "))
            .unwrap_or("?");
        let disagreements: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("regate_shadow_disagreements_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        println!(
            "{}: shadow decisions {count}, disagreements {disagreements}",
            s.name
        );
    }
    for s in subjects {
        s.regate.stop().await;
    }
}

type ReqBody = BoxBody<Bytes, std::io::Error>;

/// One GET of [`PATH`], its body read to the end.
async fn get(client: &mut common::Http1) {
    client.ready().await.unwrap();
    let req: Request<ReqBody> = Request::builder()
        .uri(PATH)
        .header("host", "localhost")
        .header("accept", "application/json")
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
}

/// Keep every connection busy until the round's count or the time limit runs out.
async fn load(plan: &Plan, clients: Vec<common::Http1>) -> (usize, f64) {
    let tickets = Arc::new(AtomicUsize::new(0));
    let total = plan.load_per_round;
    let start = Instant::now();
    let deadline = start + plan.limit;
    let mut tasks = Vec::new();
    for mut client in clients {
        let tickets = tickets.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while tickets.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                get(&mut client).await;
                done += 1;
            }
            done
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await.unwrap();
    }
    (done, start.elapsed().as_secs_f64())
}

/// An application that answers 200 `ok` at once (the test suite's upstream waits for a timer
/// tick; see benches/proxy.rs).
async fn fast_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}
