//! What charging a budget costs (`rate_limits`, `--budget-store`): one charge of
//! `regate::budgets::Store` kept in this process's memory against one kept in a real
//! `redis-server` on 127.0.0.1, and then the same through regate, end to end.
//!
//! The store, called directly: the latency of each charge, one after another (one limit, and
//! three limits in one charge, as a policy attaching a per-tool, a per-agent and a per-tenant
//! limit does), and the throughput of one limit charged by 1 and by 8 concurrent tasks.
//! Through regate: three instances side by side on the same policy, one request path
//! attaching no limit (the baseline), the other one limit, kept in memory or in Redis; the
//! latency of requests one after another on one keep-alive mTLS HTTP/1.1 connection, and the
//! throughput of 8 connections. Every limit is large enough that nothing is ever refused:
//! what is measured is the charge, not a 429.
//!
//! Everything is measured in one run, interleaved round after round, so that whatever else
//! this shared machine does falls on every subject alike. The bench starts its own
//! `redis-server` (a free port, no persistence) and kills it at the end. A plain `fn main`
//! (`harness = false`); BENCHMARKS.md keeps the figures. `REGATE_BENCH_QUICK=1` cuts every
//! count and time limit by 10x. Every loop is bounded by a count and a deadline, and nothing
//! asserts on a timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use common::{Http1, Setup, SUMMARIZER};
use regate::budgets::{self, Charge, Store};

/// `/docs/free/…` attaches no limit; `/docs/limited/…` attaches one, per caller, far above
/// what this machine can send (a million a second).
const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := false

allow if {
	input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/summarizer"
	input.parsed_path[1] == "free"
}

allow := {
	"allowed": true,
	"rate_limits": [{"key": concat(":", ["docs", input.peer.spiffe_id]), "limit": 1000000, "per": "1s", "name": "docs"}],
} if {
	input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/summarizer"
	input.parsed_path[1] == "limited"
}
"#;

/// Agents the store-level charges rotate over, so keys are many, as in a fleet.
const AGENTS: usize = 100;

#[derive(Clone, Copy)]
struct Plan {
    quick: bool,
    rounds: usize,
    charges: usize,
    load_charges: usize,
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
            quick,
            rounds: 5,
            charges: 10_000 / div,
            load_charges: 20_000 / div,
            warmup: 200 / div,
            requests: 2_000 / div,
            load_requests: 10_000 / div,
            limit: Duration::from_secs(10) / div as u32,
        }
    }
}

/// A redis-server of our own on a free port of 127.0.0.1, with no persistence; killed when
/// dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        "regate budgets benchmark ({} cores, {} run)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if plan.quick { "quick" } else { "full" }
    );
    let redis = Redis::start();
    runtime.block_on(stores(plan, &redis));
    runtime.block_on(end_to_end(plan, &redis));
    drop(redis);
}

/// One store under test, and what was measured of it.
struct Subject {
    name: &'static str,
    store: Arc<Store>,
    one: Vec<u64>,
    three: Vec<u64>,
    tasks_1: Vec<f64>,
    tasks_8: Vec<f64>,
}

async fn stores(plan: Plan, redis: &Redis) {
    // A generous timeout: a charge that times out would end the bench, not skew it.
    let redis_store = budgets::redis::Store::new(&redis.url(), Duration::from_secs(2)).unwrap();
    let mut subjects: Vec<Subject> = [
        ("memory", Store::Memory(budgets::memory::Store::new())),
        ("redis", Store::Redis(redis_store)),
    ]
    .into_iter()
    .map(|(name, store)| Subject {
        name,
        store: Arc::new(store),
        one: Vec::new(),
        three: Vec::new(),
        tasks_1: Vec::new(),
        tasks_8: Vec::new(),
    })
    .collect();
    let keys = keys();
    // Warm up: the connections, the script loaded into Redis, every key present.
    for subject in &subjects {
        for i in 0..AGENTS * 2 {
            charge(&subject.store, &keys, i, 3).await;
        }
    }
    for round in 0..plan.rounds {
        for subject in &mut subjects {
            subject
                .one
                .append(&mut sequential(&plan, &subject.store, &keys, 1).await);
            subject
                .three
                .append(&mut sequential(&plan, &subject.store, &keys, 3).await);
            subject
                .tasks_1
                .push(concurrent(&plan, &subject.store, &keys, 1).await);
            subject
                .tasks_8
                .push(concurrent(&plan, &subject.store, &keys, 8).await);
        }
        println!("stores: round {} of {} done", round + 1, plan.rounds);
    }
    println!(
        "\n{:<8} {:>8} {:>13} {:>13} {:>8} {:>13} {:>13} {:>14} {:>14}",
        "store",
        "charges",
        "1 limit p50",
        "1 limit p99",
        "charges",
        "3 limits p50",
        "3 limits p99",
        "1 task /s",
        "8 tasks /s"
    );
    for subject in &mut subjects {
        println!(
            "{:<8} {:>8} {:>11.2}µs {:>11.2}µs {:>8} {:>11.2}µs {:>11.2}µs {:>14.0} {:>14.0}",
            subject.name,
            subject.one.len(),
            percentile(&mut subject.one, 50.0),
            percentile(&mut subject.one, 99.0),
            subject.three.len(),
            percentile(&mut subject.three, 50.0),
            percentile(&mut subject.three, 99.0),
            median(&mut subject.tasks_1),
            median(&mut subject.tasks_8),
        );
    }
    let (memory, redis) = subjects.split_at_mut(1);
    let (memory, redis) = (&mut memory[0], &mut redis[0]);
    println!(
        "redis/memory: 1 limit p50 {:.1}×, 3 limits p50 {:.1}×, throughput 1 task {:.4}×, 8 tasks {:.4}×",
        percentile(&mut redis.one, 50.0) / percentile(&mut memory.one, 50.0),
        percentile(&mut redis.three, 50.0) / percentile(&mut memory.three, 50.0),
        median(&mut redis.tasks_1) / median(&mut memory.tasks_1),
        median(&mut redis.tasks_8) / median(&mut memory.tasks_8),
    );
}

/// Each agent's two keys (its `send_email` budget, and its own), made once so that no
/// formatting is timed.
type Keys = Arc<Vec<(String, String)>>;

fn keys() -> Keys {
    Arc::new(
        (0..AGENTS)
            .map(|a| {
                (
                    format!("bench:send_email:agent-{a:03}"),
                    format!("bench:agent-{a:03}"),
                )
            })
            .collect(),
    )
}

/// Charge agent `i`'s `limits` limits (1 or 3) once; every one must be allowed.
async fn charge(store: &Store, keys: &Keys, i: usize, limits: usize) {
    let (tool, caller) = &keys[i % AGENTS];
    let all = [
        Charge {
            key: tool,
            limit: 1_000_000_000,
            per: Duration::from_secs(3600),
        },
        Charge {
            key: caller,
            limit: 1_000_000_000,
            per: Duration::from_secs(3600),
        },
        Charge {
            key: "bench:tenant",
            limit: 1_000_000_000,
            per: Duration::from_secs(60),
        },
    ];
    let verdicts = store.charge(&all[..limits]).await.unwrap();
    assert!(verdicts.iter().all(|v| v.allowed), "{verdicts:?}");
}

/// Charges one after another: nanoseconds each.
async fn sequential(plan: &Plan, store: &Store, keys: &Keys, limits: usize) -> Vec<u64> {
    let deadline = Instant::now() + plan.limit;
    let mut samples = Vec::with_capacity(plan.charges);
    for i in 0..plan.charges {
        if Instant::now() > deadline {
            println!("time limit reached after {i} charges");
            break;
        }
        let start = Instant::now();
        charge(store, keys, i, limits).await;
        samples.push(start.elapsed().as_nanos() as u64);
    }
    samples
}

/// `tasks` tasks charging one limit until the count or the time runs out: charges a second.
async fn concurrent(plan: &Plan, store: &Arc<Store>, keys: &Keys, tasks: usize) -> f64 {
    let tickets = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let total = plan.load_charges;
    let start = Instant::now();
    let deadline = start + plan.limit;
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (store, keys) = (store.clone(), keys.clone());
            let (tickets, done) = (tickets.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    let i = tickets.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() > deadline {
                        break;
                    }
                    charge(&store, &keys, i, 1).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// One regate under test, and what was measured of it.
struct Instance {
    name: &'static str,
    path: &'static str,
    regate: common::Regate,
    latencies: Vec<u64>,
    throughputs: Vec<f64>,
}

async fn end_to_end(plan: Plan, redis: &Redis) {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let summarizer = setup.ca.client(SUMMARIZER);
    let (upstream, _upstream_task) = fast_upstream().await;
    let upstream = format!("http://{upstream}");
    let redis_url = redis.url();
    let mut instances = Vec::new();
    for (name, path, store) in [
        ("no limit attached", "/docs/free/readme", "memory"),
        ("one limit, memory", "/docs/limited/readme", "memory"),
        (
            "one limit, redis",
            "/docs/limited/readme",
            redis_url.as_str(),
        ),
    ] {
        instances.push(Instance {
            name,
            path,
            regate: setup
                .start(
                    &upstream,
                    &["--budget-store", store, "--budget-timeout", "2s"],
                )
                .await,
            latencies: Vec::new(),
            throughputs: Vec::new(),
        });
    }
    for round in 0..plan.rounds {
        for instance in &mut instances {
            let mut client = instance.regate.http1(&setup, &summarizer).await;
            let mut samples = requests(&plan, &mut client, instance.path).await;
            instance.latencies.append(&mut samples);
            let mut clients = Vec::new();
            for _ in 0..8 {
                clients.push(instance.regate.http1(&setup, &summarizer).await);
            }
            instance
                .throughputs
                .push(load(&plan, clients, instance.path).await);
        }
        println!(
            "through regate: round {} of {} done",
            round + 1,
            plan.rounds
        );
    }
    println!(
        "\n{:<20} {:>8} {:>9} {:>9} {:>10} {:>9} {:>11}",
        "", "n", "p50 µs", "p99 µs", "p50 ratio", "req/s", "req/s ratio"
    );
    let base_p50 = percentile(&mut instances[0].latencies.clone(), 50.0);
    let base_tput = median(&mut instances[0].throughputs.clone());
    for instance in &mut instances {
        let p50 = percentile(&mut instance.latencies, 50.0);
        let p99 = percentile(&mut instance.latencies, 99.0);
        let tput = median(&mut instance.throughputs);
        println!(
            "{:<20} {:>8} {:>9.1} {:>9.1} {:>9.3}× {:>9.0} {:>10.3}×",
            instance.name,
            instance.latencies.len(),
            p50,
            p99,
            p50 / base_p50,
            tput,
            tput / base_tput
        );
    }
    // Whether the decision cache answered, and what the budgets counted: so a difference
    // between the three can be told from the policy's.
    for instance in instances {
        let metrics = common::admin_get(instance.regate.admin, "/metrics").await.1;
        for line in metrics
            .lines()
            .filter(|l| l.starts_with("regate_decision_cache") || l.starts_with("regate_budget"))
        {
            println!("{:<20} {line}", instance.name);
        }
        instance.regate.stop().await;
    }
}

/// Requests one after another on one connection: the latency of each, warm-up excluded.
async fn requests(plan: &Plan, client: &mut Http1, path: &str) -> Vec<u64> {
    let deadline = Instant::now() + plan.limit;
    let mut samples = Vec::with_capacity(plan.requests);
    for i in 0..plan.warmup + plan.requests {
        if Instant::now() > deadline {
            println!("time limit reached after {i} requests");
            break;
        }
        let start = Instant::now();
        assert_eq!(get(client, path).await, 200);
        if i >= plan.warmup {
            samples.push(start.elapsed().as_nanos() as u64);
        }
    }
    samples
}

/// 8 connections kept busy until the count or the time runs out: requests per second.
async fn load(plan: &Plan, clients: Vec<Http1>, path: &'static str) -> f64 {
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
                assert_eq!(get(&mut client, path).await, 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn get(client: &mut Http1, path: &str) -> u16 {
    let req = Request::get(path)
        .header(http::header::HOST, "localhost")
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

/// An upstream that reads each request whole and answers 200 `ok` at once.
async fn fast_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
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
    (addr, task)
}

/// Nearest-rank percentile of nanosecond samples, in microseconds.
fn percentile(samples: &mut [u64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1] as f64 / 1000.0
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
