//! The stalled-body attack of issue 18, measured: 4 HTTP/2 connections × 100 streams from
//! one identity, each a JSON body with `content-length: limit+1` of which all but two bytes
//! are sent, then nothing. Reports regate's resident memory before and during the attack,
//! and what another identity's tool calls cost meanwhile (median and slowest of 50) against
//! the same calls without the attack.
//!
//! `REGATE_BIN=/path/to/regate` runs another build of regate (an older one, for a before and
//! after in one run); by default the one cargo built. A plain `fn main`: BENCHMARKS.md keeps
//! the figures; every loop is bounded in count and time, and nothing asserts on a timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
use common::*;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::channel::Channel;
use http_body_util::BodyExt;

const LIMIT: usize = 1 << 20;

const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := false

allow if input.mcp.method == "tools/call"
"#;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn tool_call() -> http::Request<http_body_util::combinators::BoxBody<Bytes, std::io::Error>> {
    let mut req = request(
        "POST",
        "/mcp",
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}"#,
    );
    req.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    req
}

/// Median and slowest of 50 tool calls, in milliseconds.
async fn latency(client: &mut Http1) -> (f64, f64) {
    let mut times = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while times.len() < 50 && Instant::now() < deadline {
        let start = Instant::now();
        let (status, _, _) = send(client, tool_call()).await;
        assert_eq!(status, 200);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2], times[times.len() - 1])
}

async fn h2(process: &Process, setup: &Setup, identity: &Identity) -> Http2 {
    let tls = tls_connect(process.addr, setup.client_config(Some(identity), &[b"h2"]))
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

#[tokio::main]
async fn main() {
    init();
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let mut args = setup.args(&upstream.url());
    args.extend(["--inspect-body-limit", "1MiB", "--upstream-timeout", "120s"].map(String::from));
    let bin = std::env::var("REGATE_BIN").ok();
    let process = match &bin {
        Some(bin) => Process::start_binary(bin, &args, &[]),
        None => Process::start(&args, &[]),
    };
    let pid = process.child.id();
    let bystander = setup.ca.client(SUMMARIZER);
    let attacker = setup.ca.client(EXECUTOR);
    let mut other = process.http1(&setup, &bystander).await;
    let quiet = latency(&mut other).await;
    let before = rss_kib(pid);

    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(h2(&process, &setup, &attacker).await);
    }
    let (answered_tx, mut answered) = tokio::sync::mpsc::unbounded_channel::<u16>();
    let mut held = Vec::new();
    let chunk = Bytes::from(vec![b' '; 64 << 10]);
    let start = Instant::now();
    for conn in &conns {
        for _ in 0..100 {
            let (mut tx, body) = Channel::<Bytes, std::io::Error>::new(4);
            let req = http::Request::builder()
                .method("POST")
                .uri("/mcp")
                .header(http::header::HOST, "localhost")
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::CONTENT_LENGTH, (LIMIT + 1).to_string())
                .body(body.boxed())
                .unwrap();
            let mut conn = conn.clone();
            let answered_tx = answered_tx.clone();
            tokio::spawn(async move {
                if let Ok(resp) = conn.send_request(req).await {
                    let _ = answered_tx.send(resp.status().as_u16());
                }
            });
            let chunk = chunk.clone();
            held.push(tokio::spawn(async move {
                let mut sent = 0;
                while sent < LIMIT - 1 {
                    let n = (LIMIT - 1 - sent).min(chunk.len());
                    if tx.send_data(chunk.slice(..n)).await.is_err() {
                        return None;
                    }
                    sent += n;
                }
                Some(tx)
            }));
        }
    }
    // Until every stream is sent or answered, or 20 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut senders = Vec::new();
    for h in held {
        if let Ok(Ok(Some(tx))) = tokio::time::timeout_at(deadline, h).await {
            senders.push(tx);
        }
    }
    let mut refused = 0;
    while let Ok(status) = answered.try_recv() {
        if status == 503 {
            refused += 1;
        }
    }
    let settled = start.elapsed();
    let during = rss_kib(pid);
    let busy = latency(&mut other).await;
    println!(
        "| {} | {:.0} | {:.0} (+{:.0}) | {refused} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} |",
        bin.as_deref().unwrap_or("this build"),
        before as f64 / 1024.0,
        during as f64 / 1024.0,
        during.saturating_sub(before) as f64 / 1024.0,
        quiet.0,
        quiet.1,
        busy.0,
        busy.1,
        settled.as_secs_f64(),
    );
    drop(senders);
    drop(process);
}
