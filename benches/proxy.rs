//! What regate costs per request: policy evaluation on its own, the latency it adds on one
//! keep-alive connection (mTLS HTTP/1.1 and HTTP/2, against the application directly), the
//! throughput of concurrent connections, and the process's memory afterwards.
//!
//! A plain `fn main` (`harness = false`), so one run prints one report; BENCHMARKS.md keeps
//! the figures. `REGATE_BENCH_QUICK=1` cuts every count and time limit by 10x. Every loop is
//! bounded by a count and a deadline, and nothing here asserts on a timing: a benchmark on a
//! shared machine reports, it does not judge.
//!
//! Client, regate and the upstream application share one tokio runtime in this process, so
//! the throughput figures are what the machine's cores do for all three together. The
//! application is a minimal one of our own rather than `common::Upstream`: see
//! [`fast_upstream`] for why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use regate::policy::input::{context_value, ConnInput, RequestInput};
use regate::policy::{Evaluator, PolicySet};
use regate::tls::identity::PeerIdentity;
use tokio::net::{TcpListener, TcpStream};

use common::{Setup, Upstream, SUMMARIZER};

const QUERY: &str = "data.regate.authz.allow";
const PATH: &str = "/docs/readme";
/// As `App::load` configures regorus from the default `--policy-timeout`.
const POLICY_TIMEOUT: Duration = Duration::from_millis(100);

type ReqBody = BoxBody<Bytes, std::io::Error>;

/// How much of everything to do; the quick run is a tenth of it.
#[derive(Clone, Copy)]
struct Plan {
    eval_warmup: usize,
    eval_iters: usize,
    seq_warmup: usize,
    seq_requests: usize,
    seq_limit: Duration,
    load_conns: usize,
    load_requests: usize,
    load_limit: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        let quick = std::env::var("REGATE_BENCH_QUICK").is_ok_and(|v| v == "1");
        let div = if quick { 10 } else { 1 };
        Plan {
            eval_warmup: 2_000 / div,
            eval_iters: 20_000 / div,
            seq_warmup: 500 / div,
            seq_requests: 5_000 / div,
            seq_limit: Duration::from_secs(10) / div as u32,
            load_conns: 8,
            load_requests: 20_000 / div,
            load_limit: Duration::from_secs(5) / div as u32,
        }
    }
}

impl Plan {
    /// A tenth of the sequential counts, for a reference measurement.
    fn tenth(&self) -> Plan {
        Plan {
            seq_warmup: self.seq_warmup / 10,
            seq_requests: self.seq_requests / 10,
            ..*self
        }
    }
}

/// Nanosecond samples, sorted once, read as percentiles in microseconds.
struct Stats {
    sorted: Vec<u64>,
}

impl Stats {
    fn new(mut samples: Vec<u64>) -> Stats {
        samples.sort_unstable();
        Stats { sorted: samples }
    }

    fn n(&self) -> usize {
        self.sorted.len()
    }

    /// Nearest-rank percentile.
    fn p(&self, pct: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((pct / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1] as f64 / 1_000.0
    }

    fn mean(&self) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        self.sorted.iter().sum::<u64>() as f64 / self.sorted.len() as f64 / 1_000.0
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
        "regate proxy benchmark ({} cores, {} run)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if plan.eval_iters < 20_000 {
            "quick"
        } else {
            "full"
        }
    );
    println!("memory at start: {}", memory());
    runtime.block_on(run(&plan));
}

async fn run(plan: &Plan) {
    let policies_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let setup = Setup::new(&[]);
    for file in policy_files(&policies_dir) {
        let body = std::fs::read_to_string(&file).unwrap();
        setup.write_policy(file.file_name().unwrap().to_str().unwrap(), &body);
    }
    let summarizer = setup.ca.client(SUMMARIZER);

    // The demo policy and its data (the top level of policies/), as the proxy below loads
    // them; policies/examples/ is left out, as a deployment would.
    println!("\n== 1. policy evaluation ({QUERY}, {PATH}, the demo policy) ==");
    let (set, input) = policy_eval(plan, &setup.path("policies"), &setup, &summarizer);
    println!("memory after policy evaluation: {}", memory());
    println!("\n== 1b. evaluation off the async workers, one at a time ==");
    evaluator_handoff(plan, set, input).await;

    println!("\n== 2. latency, sequential requests on one keep-alive connection ==");
    // For reference only: the test suite's recording upstream, straight. See fast_upstream.
    let recording = Upstream::start().await;
    let mut client = Client::Direct(direct_http1(recording.addr).await);
    let recording_stats = sequential(&plan.tenth(), "recording-h1", &mut client).await;
    drop(client);
    recording.seen.lock().unwrap().clear();

    let (upstream_addr, upstream_task) = fast_upstream().await;
    let regate = setup.start(&format!("http://{upstream_addr}"), &[]).await;

    let mut direct = Client::Direct(direct_http1(upstream_addr).await);
    let direct_stats = sequential(plan, "direct-h1", &mut direct).await;

    let mut h1 = Client::Tls1(regate.http1(&setup, &summarizer).await);
    let h1_stats = sequential(plan, "regate-h1", &mut h1).await;

    let mut h2 = Client::Tls2(regate.http2(&setup, &summarizer).await);
    let h2_stats = sequential(plan, "regate-h2", &mut h2).await;

    println!(
        "{:<34} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "µs per request", "n", "mean", "p50", "p90", "p99"
    );
    for (name, s) in [
        ("direct to recording upstream", &recording_stats),
        ("direct to upstream, HTTP/1.1", &direct_stats),
        ("through regate, mTLS HTTP/1.1", &h1_stats),
        ("through regate, mTLS HTTP/2", &h2_stats),
    ] {
        println!(
            "{:<34} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            name,
            s.n(),
            s.mean(),
            s.p(50.0),
            s.p(90.0),
            s.p(99.0)
        );
    }
    for (name, s) in [("HTTP/1.1", &h1_stats), ("HTTP/2", &h2_stats)] {
        println!(
            "added by regate over {name}: p50 {:+.1} µs, p99 {:+.1} µs",
            s.p(50.0) - direct_stats.p(50.0),
            s.p(99.0) - direct_stats.p(99.0)
        );
    }
    drop((direct, h1, h2));

    println!(
        "\n== 3. throughput, {} concurrent keep-alive connections ==",
        plan.load_conns
    );
    let mut clients = Vec::new();
    for _ in 0..plan.load_conns {
        clients.push(Client::Direct(direct_http1(upstream_addr).await));
    }
    let direct_rps = load(plan, "direct-load", clients).await;

    let mut clients = Vec::new();
    for _ in 0..plan.load_conns {
        clients.push(Client::Tls1(regate.http1(&setup, &summarizer).await));
    }
    let h1_rps = load(plan, "regate-h1-load", clients).await;

    let mut clients = Vec::new();
    for _ in 0..plan.load_conns {
        clients.push(Client::Tls2(regate.http2(&setup, &summarizer).await));
    }
    let h2_rps = load(plan, "regate-h2-load", clients).await;

    println!(
        "{:<34} {:>9} {:>9} {:>9}",
        "", "requests", "seconds", "req/s"
    );
    for (name, (n, secs)) in [
        ("direct to upstream, HTTP/1.1", direct_rps),
        ("through regate, mTLS HTTP/1.1", h1_rps),
        ("through regate, mTLS HTTP/2", h2_rps),
    ] {
        println!(
            "{:<34} {:>9} {:>9.2} {:>9.0}",
            name,
            n,
            secs,
            n as f64 / secs
        );
    }

    let (_, status) = common::admin_get(regate.admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    println!(
        "policy evaluated inline on the workers: {}",
        if status["policy"]["slow_evaluation_seen"] == false {
            "yes"
        } else {
            "no (an evaluation was slow; the set runs on the evaluation threads)"
        }
    );
    println!("\n== 4. memory after the load ==");
    println!("{}", memory());

    upstream_task.abort();
    // Stopping flushes the decision log; its eval_ns and duration_ns say where time went.
    let decisions = regate.decisions.clone();
    regate.stop().await;
    println!("\n== 5. inside regate, from the decision log ==");
    breakdown(&decisions, plan.seq_warmup);
}

/// The example policy set as it is checked in: every `.rego` and data file.
fn policy_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("rego" | "json" | "yaml" | "yml")
            )
        })
        .collect();
    files.sort();
    files
}

/// Time building the input and deciding separately, as the proxy does them back to back.
/// Returns the loaded set and one request's input, for [`evaluator_handoff`].
fn policy_eval(
    plan: &Plan,
    dir: &Path,
    setup: &Setup,
    summarizer: &common::Identity,
) -> (Arc<PolicySet>, regorus::Value) {
    let load_start = Instant::now();
    let policies =
        PolicySet::load(dir, &regate::policy::Options::new(QUERY, POLICY_TIMEOUT)).unwrap();
    println!(
        "load + compile + smoke-evaluate: {:.1} ms (revision {})",
        load_start.elapsed().as_secs_f64() * 1e3,
        policies.revision
    );

    let peer = PeerIdentity::from_der(&summarizer.chain[0]).unwrap();
    let local = PeerIdentity::from_der(&setup.ca.server().chain[0]).unwrap();
    let remote = SocketAddr::from(([127, 0, 0, 1], 51234));
    let local_addr = SocketAddr::from(([127, 0, 0, 1], 8443));
    let conn = ConnInput::new(
        &peer,
        &local,
        remote,
        local_addr,
        context_value(&BTreeMap::new()),
    );

    // The headers as the policy sees them: the client's, then regate's forwarded ones.
    let request_id = "6f1c2b7e-3d4a-4f0b-9a51-2c8e7d9b0a13";
    let mut headers = HeaderMap::new();
    for (k, v) in client_headers(true, request_id) {
        headers.insert(k, v);
    }
    headers.insert(http::header::HOST, HeaderValue::from_static("localhost"));
    let xfcc = HeaderValue::from_str(&regate::request::headers::xfcc(&peer, &local)).unwrap();
    let prepared = regate::request::prepare(
        &regate::request::Head {
            method: &http::Method::GET,
            version: http::Version::HTTP_11,
            scheme: None,
            authority: None,
            target: PATH,
        },
        &mut headers,
        &regate::request::Forwarded {
            xfcc: &xfcc,
            xff: &HeaderValue::from_static("127.0.0.1"),
            request_id,
            host: "localhost",
        },
        &regate::request::Rules::default(),
    )
    .unwrap();
    let target = prepared.target;
    let request = |now| RequestInput {
        id: request_id,
        method: "GET",
        headers: &headers,
        path: PATH,
        host: "localhost",
        protocol: "HTTP/1.1",
        parsed_path: &target.segments,
        parsed_query: &target.query,
        upgrade: None,
        delegation: None,
        approval: None,
        body: None,
        now,
    };
    let check = policies.decide(conn.build(&request(SystemTime::now())));
    assert!(
        check.allowed,
        "the example policy must allow the summarizer: {check:?}"
    );
    println!(
        "input: {} headers, decision: allowed={} reason={} extra headers={}",
        headers.len() + 4,
        check.allowed,
        check.reason,
        check.headers.len()
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut build_ns = Vec::with_capacity(plan.eval_iters);
    let mut decide_ns = Vec::with_capacity(plan.eval_iters);
    let mut engine_ns = Vec::with_capacity(plan.eval_iters);
    for i in 0..plan.eval_warmup + plan.eval_iters {
        if Instant::now() > deadline {
            println!("(time limit reached after {i} iterations)");
            break;
        }
        let t0 = Instant::now();
        let input = conn.build(&request(SystemTime::now()));
        let t1 = Instant::now();
        let decision = policies.decide(black_box(input));
        let t2 = Instant::now();
        black_box(decision.allowed);
        if i >= plan.eval_warmup {
            build_ns.push((t1 - t0).as_nanos() as u64);
            decide_ns.push((t2 - t1).as_nanos() as u64);
            engine_ns.push(decision.eval_ns);
        }
    }
    println!(
        "{:<34} {:>7} {:>9} {:>9} {:>9}",
        "µs per call", "n", "mean", "p50", "p99"
    );
    for (name, samples) in [
        ("build input (ConnInput::build)", build_ns),
        ("decide (eval + interpret result)", decide_ns),
        ("  of which engine eval (eval_ns)", engine_ns),
    ] {
        let s = Stats::new(samples);
        println!(
            "{:<34} {:>7} {:>9.1} {:>9.1} {:>9.1}",
            name,
            s.n(),
            s.mean(),
            s.p(50.0),
            s.p(99.0)
        );
    }
    let input = conn.build(&request(SystemTime::now()));
    (Arc::new(policies), input)
}

/// What handing an evaluation to regate's evaluation threads costs: the same decision,
/// inline and through [`Evaluator::decide`] with no inline place (a slot, `spawn_blocking`,
/// the answer back to the task), one at a time so each measures the whole round trip. The
/// proxy itself evaluates inline unless a policy set was once slow; see
/// `regate::policy::evaluator`.
async fn evaluator_handoff(plan: &Plan, set: Arc<PolicySet>, input: regorus::Value) {
    // Nothing inline: every decision goes to the evaluation threads, as after a slow one.
    let evaluator = Evaluator::with_inline(0, POLICY_TIMEOUT, Default::default());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut inline_ns = Vec::with_capacity(plan.eval_iters);
    let mut handed_ns = Vec::with_capacity(plan.eval_iters);
    for i in 0..plan.eval_warmup + plan.eval_iters {
        if Instant::now() > deadline {
            println!("(time limit reached after {i} iterations)");
            break;
        }
        let t0 = Instant::now();
        black_box(set.decide(input.clone()).allowed);
        let t1 = Instant::now();
        black_box(evaluator.decide(set.clone(), input.clone()).await.allowed);
        let t2 = Instant::now();
        if i >= plan.eval_warmup {
            inline_ns.push((t1 - t0).as_nanos() as u64);
            handed_ns.push((t2 - t1).as_nanos() as u64);
        }
    }
    println!(
        "{:<34} {:>7} {:>9} {:>9} {:>9}",
        "µs per decision", "n", "mean", "p50", "p99"
    );
    for (name, samples) in [
        ("decide inline", inline_ns),
        ("decide via the evaluator threads", handed_ns),
    ] {
        let s = Stats::new(samples);
        println!(
            "{:<34} {:>7} {:>9.1} {:>9.1} {:>9.1}",
            name,
            s.n(),
            s.mean(),
            s.p(50.0),
            s.p(99.0)
        );
    }
}

/// The headers a typical agent sends: eight with `Host` (HTTP/2 carries it as :authority).
fn client_headers(with_host: bool, request_id: &str) -> Vec<(&'static str, HeaderValue)> {
    let mut h = vec![
        (
            "user-agent",
            HeaderValue::from_static("summarizer/1.4.2 hyper/1"),
        ),
        ("accept", HeaderValue::from_static("application/json")),
        ("accept-encoding", HeaderValue::from_static("gzip, br")),
        (
            "accept-language",
            HeaderValue::from_static("en-US,en;q=0.8"),
        ),
        (
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ),
        (
            "authorization",
            HeaderValue::from_static(
                "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzdW1tYXJpemVyIn0.c2ln",
            ),
        ),
        ("x-request-id", HeaderValue::from_str(request_id).unwrap()),
    ];
    if with_host {
        h.insert(0, ("host", HeaderValue::from_static("localhost")));
    }
    h
}

fn get(uri: &str, with_host: bool, request_id: &str) -> Request<ReqBody> {
    let mut req = Request::builder().method("GET").uri(uri);
    for (k, v) in client_headers(with_host, request_id) {
        req = req.header(k, v);
    }
    req.body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap()
}

/// The application behind regate in the latency and throughput phases: it answers 200 `ok`
/// at once. `common::Upstream` records each request and, before answering, awaits
/// `tokio::time::sleep(delay)`; even a zero delay waits for the timer wheel's next 1 ms
/// tick, which would swamp the microseconds measured here (and cap 8 connections at about
/// 8000 requests a second). Its row in the latency table shows that cost.
async fn fast_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        // Ends when the task is aborted at the end of the run.
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .header("x-upstream", "yes")
                            .body(Full::new(Bytes::from_static(b"ok")))
                            .unwrap(),
                    )
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// A plain HTTP/1.1 keep-alive connection to the upstream: the baseline.
async fn direct_http1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<ReqBody> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// Send requests one after another and time each until its whole body has arrived.
async fn sequential(plan: &Plan, phase: &str, client: &mut Client) -> Stats {
    let deadline = Instant::now() + plan.seq_limit;
    let mut samples = Vec::with_capacity(plan.seq_requests);
    for i in 0..plan.seq_warmup + plan.seq_requests {
        if Instant::now() > deadline {
            println!("{phase}: time limit reached after {i} requests");
            break;
        }
        let id = format!("{phase}-{i}");
        let start = Instant::now();
        let status = client.get(&id).await;
        let elapsed = start.elapsed();
        assert_eq!(status, 200, "{phase}");
        if i >= plan.seq_warmup {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    Stats::new(samples)
}

enum Client {
    Direct(hyper::client::conn::http1::SendRequest<ReqBody>),
    Tls1(common::Http1),
    Tls2(common::Http2),
}

impl Client {
    /// One GET, its body read to the end. Waits for the connection to be ready first: an
    /// HTTP/1.1 connection takes the next request only once the last one is done.
    async fn get(&mut self, id: &str) -> http::StatusCode {
        let resp = match self {
            Client::Direct(c) => {
                c.ready().await.unwrap();
                c.send_request(get(PATH, true, id)).await
            }
            Client::Tls1(c) => {
                c.ready().await.unwrap();
                c.send_request(get(PATH, true, id)).await
            }
            Client::Tls2(c) => {
                c.ready().await.unwrap();
                c.send_request(get(&format!("https://localhost{PATH}"), false, id))
                    .await
            }
        }
        .unwrap();
        let status = resp.status();
        resp.into_body().collect().await.unwrap();
        status
    }
}

/// Keep every connection busy until the shared count or the time limit runs out.
/// Returns (requests completed, seconds).
async fn load(plan: &Plan, phase: &str, clients: Vec<Client>) -> (usize, f64) {
    // A short warm-up per connection, outside the timing.
    let mut clients = clients;
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..10 {
            assert_eq!(client.get(&format!("{phase}-warm-{c}-{i}")).await, 200);
        }
    }
    let tickets = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let total = plan.load_requests;
    let start = Instant::now();
    let deadline = start + plan.load_limit;
    let mut tasks = Vec::new();
    for (c, mut client) in clients.into_iter().enumerate() {
        let tickets = tickets.clone();
        let done = done.clone();
        let phase = phase.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = tickets.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() > deadline {
                    break;
                }
                assert_eq!(client.get(&format!("{phase}-{c}-{i}")).await, 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    if n < total {
        println!("{phase}: time limit reached after {n} requests");
    }
    (n, secs)
}

/// VmRSS and VmHWM of this process (client, regate and upstream together).
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or("?".to_string(), |v| v.trim().to_string())
    };
    format!("VmRSS {}, VmHWM {}", field("VmRSS:"), field("VmHWM:"))
}

/// regate's own view of its requests, from the decision log: `eval_ns` is policy evaluation
/// as the proxy sees it, `duration_ns` runs from the request head to the upstream's response
/// head, so it holds the second hop but not the client's TLS and HTTP work.
fn breakdown(decisions: &Path, seq_warmup: usize) {
    let text = std::fs::read_to_string(decisions).unwrap_or_default();
    let mut records = 0;
    // Measured requests only: `regate-h1-<i>` past the warm-up, `regate-h1-load-<conn>-<i>`,
    // by the id the client sent (regate names each request itself).
    let mut seq = (Vec::new(), Vec::new());
    let mut load = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        records += 1;
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["client_request_id"].as_str().unwrap_or_default();
        let into = if let Some(rest) = id.strip_prefix("regate-h1-load-") {
            let conn = rest.split('-').next().unwrap_or_default();
            conn.parse::<usize>().is_ok().then_some(&mut load)
        } else {
            id.strip_prefix("regate-h1-")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|i| *i >= seq_warmup)
                .map(|_| &mut seq)
        };
        if let Some((eval, duration)) = into {
            eval.push(v["eval_ns"].as_u64().unwrap_or_default());
            duration.push(v["duration_ns"].as_u64().unwrap_or_default());
        }
    }
    println!("decision records written: {records}");
    println!(
        "{:<40} {:>7} {:>9} {:>9} {:>9}",
        "µs per request (mTLS HTTP/1.1)", "n", "mean", "p50", "p99"
    );
    for (name, samples) in [
        ("sequential: policy eval (eval_ns)", seq.0),
        ("sequential: handle (duration_ns)", seq.1),
        ("8 connections: policy eval (eval_ns)", load.0),
        ("8 connections: handle (duration_ns)", load.1),
    ] {
        let s = Stats::new(samples);
        println!(
            "{:<40} {:>7} {:>9.1} {:>9.1} {:>9.1}",
            name,
            s.n(),
            s.mean(),
            s.p(50.0),
            s.p(99.0)
        );
    }
}
