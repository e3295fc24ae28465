//! The decision cache never answers what a fresh evaluation would not: for every example policy
//! (the demo, each of `policies/examples/`, the benchmark policies, and one written to be
//! awkward), over generated requests that repeat what a policy reads and vary what it does
//! not (request ids and times, other headers, expiry), the answer through the proxy's
//! evaluator, cache and all, is the answer of evaluating that same input afresh.
//!
//! A property test (proptest): each case draws a few requests from small pools and sends them
//! again and again in a random order, a little later each time (new request ids, clocks a
//! few seconds apart), so the cache both fills and hits; every set must have answered some
//! from its cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use regate::policy::analysis::Reads;
use regate::policy::analysis::Step;
use regate::policy::input::{context_value, walk, ConnInput, InputView, RequestInput};
use regate::policy::{Decision, Evaluator, PolicySet};
use regate::tls::identity::{PeerIdentity, SpiffeId};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Reads on purpose what caches get wrong: an import alias, one header, the query, a value
/// that moves with time, the context, a function of input, and two rules that can conflict.
const AWKWARD: &str = r#"package awkward
import input.attributes.request.http as http

default allow := {"allowed": false, "reason": "no"}

allow := {"allowed": true, "reason": sprintf("tenant %s", [tenant]), "headers": {"x-regate-tenant": tenant}} if {
	tenant := http.headers["x-tenant"]
	tenant in {"a", "b"}
	safe(http.method)
	input.peer.expires_in_seconds > 3600
	not input.parsed_query.debug
}

allow := {"allowed": false, "reason": "deep", "http_status": 404} if {
	input.context.env == "dev"
	count(input.parsed_path) > 2
}

safe(m) if m in {"GET", "HEAD"}
"#;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every (policy directory, query) the repository ships, and the awkward one.
fn sets(awkward_dir: &Path) -> Vec<(String, PolicySet)> {
    let policies = root().join("policies");
    let compare = root().join("benches/compare/policies");
    let mut list = vec![
        (policies.clone(), "data.regate.authz.allow".to_string()),
        (policies.clone(), "data.envoy.authz.allow".to_string()),
        (awkward_dir.to_path_buf(), "data.awkward.allow".to_string()),
    ];
    for example in [
        "agent_tools",
        "context_rules",
        "decision_object",
        "kill_switch",
        "spiffe_allowlist",
    ] {
        list.push((policies.clone(), format!("data.examples.{example}.allow")));
    }
    for bench in ["allow", "three-line", "realistic"] {
        list.push((compare.join(bench), "data.regate.authz.allow".to_string()));
    }
    list.into_iter()
        .map(|(dir, query)| {
            let set = PolicySet::load(&dir, &regate::policy::Options::new(&query, TIMEOUT))
                .unwrap_or_else(|e| panic!("{query}: {}", e[0]))
                .with_decision_cache(10_000);
            (format!("{} {query}", dir.display()), set)
        })
        .collect()
}

/// One generated request, by indexes into small pools.
#[derive(Debug, Clone)]
struct Spec {
    caller: usize,
    serial: usize,
    method: usize,
    segments: Vec<usize>,
    trailing_slash: bool,
    query: Vec<(usize, usize)>,
    headers: Vec<(usize, usize)>,
    env: usize,
    expires_in: u64,
    clock: u64,
}

const CALLERS: &[Option<&str>] = &[
    Some("spiffe://example.org/ns/agents/sa/summarizer"),
    Some("spiffe://example.org/ns/agents/sa/executor"),
    Some("spiffe://example.org/ns/agents/sa/planner"),
    Some("spiffe://example.org/ns/agents/sa/retired-1"),
    Some("spiffe://example.org/ns/ops/sa/oncall"),
    None,
];
const SERIALS: &[&str] = &["01", "02", "0000000000000000000000000000000000000001"];
const METHODS: &[&str] = &["GET", "POST", "DELETE", "HEAD", "PUT"];
const SEGMENTS: &[&str] = &[
    "docs", "api", "items", "42", "admin", "reports", "tools", "mcp", "v1", "readme",
];
const QUERY_KEYS: &[&str] = &["debug", "lang", "page", "token"];
const VALUES: &[&str] = &["1", "a", "b", "en", "fr", "Bearer x"];
const HEADERS: &[&str] = &[
    "x-tenant",
    "authorization",
    "user-agent",
    "x-agent-tool",
    "content-type",
    "x-kill",
];
const ENVS: &[&str] = &["prod", "dev", "staging"];

fn spec() -> impl Strategy<Value = Spec> {
    (
        (0..CALLERS.len(), 0..SERIALS.len(), 0..METHODS.len()),
        prop::collection::vec(0..SEGMENTS.len(), 1..4),
        any::<bool>(),
        prop::collection::vec((0..QUERY_KEYS.len(), 0..VALUES.len()), 0..3),
        prop::collection::vec((0..HEADERS.len(), 0..VALUES.len()), 0..3),
        0..ENVS.len(),
        prop::sample::select(vec![60u64, 7_200, 86_400]),
        0..10_000u64,
    )
        .prop_map(
            |(
                (caller, serial, method),
                segments,
                trailing_slash,
                query,
                headers,
                env,
                expires_in,
                clock,
            )| {
                Spec {
                    caller,
                    serial,
                    method,
                    segments,
                    trailing_slash,
                    query,
                    headers,
                    env,
                    expires_in,
                    clock,
                }
            },
        )
}

/// A generated request: its connection's part of `input`, and the request's own pieces.
struct Request {
    conn: ConnInput,
    id: String,
    method: &'static str,
    headers: HeaderMap,
    target: String,
    segments: Vec<String>,
    query: BTreeMap<String, Vec<String>>,
    upgrade: Option<&'static str>,
    now: SystemTime,
}

impl Request {
    fn input(&self) -> RequestInput<'_> {
        RequestInput {
            id: &self.id,
            method: self.method,
            headers: &self.headers,
            path: &self.target,
            host: "localhost",
            protocol: "HTTP/1.1",
            parsed_path: &self.segments,
            parsed_query: &self.query,
            upgrade: self.upgrade,
            delegation: None,
            approval: None,
            body: None,
            now: self.now,
        }
    }

    /// The input the proxy would build.
    fn build(&self) -> regorus::Value {
        self.conn.build(&self.input())
    }
}

fn request(spec: &Spec) -> Request {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + spec.clock);
    let now_unix = 1_800_000_000 + spec.clock as i64;
    let caller = CALLERS[spec.caller];
    let peer = PeerIdentity {
        spiffe_id: caller.and_then(SpiffeId::parse),
        uri_sans: caller.iter().map(|s| s.to_string()).collect(),
        dns_sans: Vec::new(),
        subject: "CN=generated".into(),
        issuer: "CN=generated CA".into(),
        serial: SERIALS[spec.serial].into(),
        fingerprint_sha256: "00".repeat(32),
        not_before: now_unix - 3_600,
        not_after: now_unix + spec.expires_in as i64,
    };
    let local = PeerIdentity {
        spiffe_id: None,
        uri_sans: Vec::new(),
        ..peer.clone()
    };
    let mut labels = BTreeMap::new();
    labels.insert("env".to_string(), ENVS[spec.env].to_string());
    let addr = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let conn = ConnInput::new(&peer, &local, addr, addr, context_value(&labels));
    let mut path = String::new();
    for s in &spec.segments {
        path.push('/');
        path.push_str(SEGMENTS[*s]);
    }
    if spec.trailing_slash {
        path.push('/');
    }
    let mut query = BTreeMap::<String, Vec<String>>::new();
    let mut target = path.clone();
    for (i, (k, v)) in spec.query.iter().enumerate() {
        target.push(if i == 0 { '?' } else { '&' });
        target.push_str(&format!(
            "{}={}",
            QUERY_KEYS[*k],
            VALUES[*v].replace(' ', "+")
        ));
        query
            .entry(QUERY_KEYS[*k].to_string())
            .or_default()
            .push(VALUES[*v].to_string());
    }
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HeaderValue::from_static("localhost"));
    for (h, v) in &spec.headers {
        headers.append(
            HeaderName::from_static(HEADERS[*h]),
            HeaderValue::from_static(VALUES[*v]),
        );
    }
    // Unique per request, as in the proxy: the cache must never need it.
    let id = uuid::Uuid::new_v4().to_string();
    headers.insert("x-request-id", HeaderValue::from_str(&id).unwrap());
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    Request {
        conn,
        id,
        method: METHODS[spec.method],
        headers,
        target,
        segments,
        query,
        upgrade: spec.clock.is_multiple_of(7).then_some("websocket"),
        now,
    }
}

/// Everything a decision tells the proxy to do; not how long it took or where it came from.
fn outcome(d: &Decision) -> String {
    format!(
        "allowed={} reason={} status={} body={:?} headers={:?} response_headers={:?} remove={:?} set={:?} drop={:?} failed={}",
        d.allowed,
        d.reason,
        d.status,
        d.body,
        d.headers,
        d.response_headers,
        d.remove_headers,
        d.query_set,
        d.query_remove,
        d.error.is_some()
    )
}

#[test]
fn the_cache_answers_exactly_what_a_fresh_evaluation_would() {
    let awkward = tempfile::tempdir().unwrap();
    std::fs::write(awkward.path().join("awkward.rego"), AWKWARD).unwrap();
    let sets = sets(awkward.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .unwrap();
    let evaluator = runtime.block_on(async { Evaluator::new(TIMEOUT, Default::default()) });
    let mut cacheable = 0;
    for (name, set) in sets {
        let set = Arc::new(set);
        if let Reads::Uncacheable(why) = &set.reads {
            println!("{name}: no cache ({why})");
            continue;
        }
        cacheable += 1;
        let mut runner = TestRunner::new(Config {
            cases: 24,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(
                &(
                    prop::collection::vec(spec(), 1..6),
                    prop::collection::vec((0..6usize, 0..3u64), 20..40),
                ),
                |(population, order)| {
                    for (pick, later) in &order {
                        let mut spec = population[pick % population.len()].clone();
                        spec.clock += later;
                        let spec = &spec;
                        let request = request(spec);
                        let fresh = set.decide(request.build());
                        // As the proxy asks: the cache key read part by part, the whole input
                        // built only on a miss.
                        let asked = request.input();
                        let view = InputView::new(&request.conn, &asked);
                        let (through, _) =
                            runtime.block_on(evaluator.decide_view(set.clone(), view));
                        prop_assert_eq!(
                            outcome(&through),
                            outcome(&fresh),
                            "{} answered differently for {:?} (cached: {})",
                            name,
                            spec,
                            through.cached
                        );
                    }
                    Ok(())
                },
            )
            .unwrap();
        let cache = set.cache().unwrap();
        println!(
            "{name}: {} hits, {} misses, keys {:?}",
            cache.hits(),
            cache.misses(),
            set.reads
        );
        assert!(cache.hits() > 0, "{name}: the test never hit its cache");
    }
    assert!(
        cacheable >= 9,
        "only {cacheable} of the example sets are cacheable"
    );
}

/// Every part of `input` a policy may read, as the cache key reads them: the paths the example
/// policies read, and more, each also one step too far.
fn probe_paths(sets: &[(String, PolicySet)]) -> Vec<Vec<Step>> {
    let key = |k: &str| Step::Key(k.to_string());
    let mut paths: Vec<Vec<Step>> = Vec::new();
    for (_, set) in sets {
        if let Reads::Paths(p) = &set.reads {
            paths.extend(p.iter().cloned());
        }
    }
    let http = ["attributes", "request", "http"];
    for field in [
        "method", "path", "host", "scheme", "protocol", "id", "headers",
    ] {
        paths.push(http.iter().map(|k| key(k)).chain([key(field)]).collect());
    }
    for header in HEADERS.iter().chain(&[
        ":authority",
        ":method",
        ":path",
        ":scheme",
        "host",
        "x-request-id",
        "absent",
    ]) {
        paths.push(
            http.iter()
                .map(|k| key(k))
                .chain([key("headers"), key(header)])
                .collect(),
        );
    }
    for p in [
        vec![key("peer")],
        vec![key("peer"), key("expires_in_seconds")],
        vec![key("peer"), key("age_seconds")],
        vec![key("peer"), key("uri_sans"), Step::Index(0)],
        vec![key("parsed_path")],
        vec![key("parsed_path"), Step::Index(1)],
        vec![key("parsed_path"), Step::Index(9)],
        vec![key("parsed_query")],
        vec![key("parsed_query"), key("lang"), Step::Index(0)],
        vec![key("parsed_query"), key("absent")],
        vec![key("context")],
        vec![key("context"), key("env")],
        vec![key("upgrade")],
        vec![key("version"), key("encoding")],
        vec![key("attributes"), key("source"), key("address")],
        vec![key("attributes"), key("destination"), key("principal")],
        vec![key("attributes"), key("request"), key("time")],
        vec![key("absent")],
    ] {
        paths.push(p);
    }
    let deeper: Vec<Vec<Step>> = paths
        .iter()
        .map(|p| p.iter().cloned().chain([key("x")]).collect())
        .collect();
    paths.extend(deeper);
    paths
}

#[test]
fn the_cache_key_reads_what_the_whole_input_holds() {
    let awkward = tempfile::tempdir().unwrap();
    std::fs::write(awkward.path().join("awkward.rego"), AWKWARD).unwrap();
    let paths = probe_paths(&sets(awkward.path()));
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&spec(), |spec| {
            let request = request(&spec);
            let whole = request.build();
            let asked = request.input();
            let view = InputView::new(&request.conn, &asked);
            for path in &paths {
                prop_assert_eq!(
                    view.at(path),
                    walk(&whole, path),
                    "{} for {:?}",
                    regate::policy::analysis::display(path),
                    spec
                );
            }
            Ok(())
        })
        .unwrap();
}
