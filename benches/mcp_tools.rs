//! What filtering an MCP `tools/list` result costs per request (`--mcp-tools-list-query`): a
//! 50-tool result, of which the caller may see 25, answered by the upstream as JSON or as an
//! event stream, through regate without the query (passed on as it is) and with it (each tool
//! asked of the policy, from the decision cache or, with the cache off, evaluated every time).
//!
//! Five regates run side by side in this process, on the example policy of
//! `policies/examples/mcp_tools`, in front of one upstream that answers every request with the
//! same bytes. They are measured in turns, round after round, so that whatever else the machine
//! does falls on all five alike: sequential `tools/list` requests on one mTLS HTTP/1.1
//! keep-alive connection each, latency to the whole response. A plain `fn main` (`harness =
//! false`); BENCHMARKS.md keeps the figures. `REGATE_BENCH_QUICK=1` cuts every count and time
//! limit by 10x. Every loop is bounded by a count and a deadline, and nothing asserts on a
//! timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use common::scripted::{self, Scripted};
use common::{Http1, Regate, Setup, SUMMARIZER};

const TOOLS: usize = 50;

/// The tool names: the summarizer is granted every other one.
fn names() -> Vec<String> {
    (0..TOOLS).map(|i| format!("tool_{i:02}")).collect()
}

fn data() -> String {
    let granted: Vec<String> = names().into_iter().step_by(2).collect();
    serde_json::json!({
        "agents": {SUMMARIZER: {"tools": granted}},
        "arguments": {},
        "scopes": {},
    })
    .to_string()
}

/// A realistic result: each tool with a description and an input schema, as SDKs list them.
fn result() -> serde_json::Value {
    let tools: Vec<_> = names()
        .iter()
        .map(|n| {
            serde_json::json!({"name": n, "description": format!("Does {n}'s one thing, well."),
                "inputSchema": {"type": "object", "properties": {"q": {"type": "string"},
                    "limit": {"type": "integer"}}, "required": ["q"]}})
        })
        .collect();
    serde_json::json!({"jsonrpc": "2.0", "id": 1,
        "result": {"tools": tools, "resultType": "complete", "ttlMs": 0, "cacheScope": "public"}})
}

struct Instance {
    name: &'static str,
    regate: Regate,
    client: Http1,
    times: Vec<f64>,
    bytes: usize,
}

async fn instance(name: &'static str, setup: &Setup, upstream: &str, extra: &[&str]) -> Instance {
    let mut args = vec!["--query", "data.examples.mcp_tools.allow"];
    args.extend_from_slice(extra);
    let regate = setup.start(upstream, &args).await;
    let client = regate.http1(setup, &setup.ca.client(SUMMARIZER)).await;
    Instance {
        name,
        regate,
        client,
        times: Vec::new(),
        bytes: 0,
    }
}

async fn list_tools(client: &mut Http1) -> usize {
    let body = r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}"#;
    let req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("mcp-method", "tools/list")
        .body(
            Full::new(Bytes::from_static(body.as_bytes()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    client.ready().await.unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap().to_bytes().len()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var("REGATE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let div = if quick { 10 } else { 1 };
    let (rounds, per_round, limit) = (5, 1_000 / div, Duration::from_secs(20) / div as u32);
    let json = Bytes::from(result().to_string());
    let sse = Bytes::from(format!("event: message\ndata: {}\n\n", result()));
    let upstream_json =
        Scripted::start(move |_, _| scripted::answer("application/json", json.clone())).await;
    let upstream_sse =
        Scripted::start(move |_, _| scripted::answer("text/event-stream", sse.clone())).await;
    let setup = Setup::new(&[
        (
            "examples/mcp_tools/policy.rego",
            include_str!("../policies/examples/mcp_tools/policy.rego"),
        ),
        ("examples/mcp_tools/data.json", &data()),
    ]);
    let filter = [
        "--mcp-tools-list-query",
        "data.examples.mcp_tools.tool_visible",
    ];
    let no_cache = ["--decision-cache-entries", "0"];
    let mut instances = vec![
        instance("JSON, not filtered", &setup, &upstream_json.url(), &[]).await,
        instance(
            "JSON, filtered, cache on",
            &setup,
            &upstream_json.url(),
            &filter,
        )
        .await,
        instance(
            "JSON, filtered, cache off",
            &setup,
            &upstream_json.url(),
            &[filter[0], filter[1], no_cache[0], no_cache[1]],
        )
        .await,
        instance(
            "event stream, not filtered",
            &setup,
            &upstream_sse.url(),
            &[],
        )
        .await,
        instance(
            "event stream, filtered, cache on",
            &setup,
            &upstream_sse.url(),
            &filter,
        )
        .await,
    ];
    // Warm every connection and cache.
    for i in &mut instances {
        for _ in 0..50 {
            i.bytes = list_tools(&mut i.client).await;
        }
    }
    for _ in 0..rounds {
        for i in &mut instances {
            let deadline = Instant::now() + limit;
            for _ in 0..per_round {
                if Instant::now() > deadline {
                    break;
                }
                let start = Instant::now();
                list_tools(&mut i.client).await;
                i.times.push(start.elapsed().as_nanos() as f64 / 1000.0);
            }
        }
    }
    println!("| {TOOLS}-tool tools/list result | response bytes | p50 µs | p99 µs | requests |");
    println!("|---|---:|---:|---:|---:|");
    for i in &mut instances {
        i.times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {} | {} | {:.1} | {:.1} | {} |",
            i.name,
            i.bytes,
            percentile(&i.times, 0.5),
            percentile(&i.times, 0.99),
            i.times.len()
        );
    }
    for i in instances {
        i.regate.stop().await;
    }
}
