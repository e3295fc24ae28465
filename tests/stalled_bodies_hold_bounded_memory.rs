//! A client that sends JSON bodies just under the inspection limit and then stalls cannot pin
//! memory: the bytes held for the policy come out of a budget, in all and per identity, and a
//! body that does not fit is refused at once (503 `body_budget_exhausted`), never queued.
//! Meanwhile another identity is served. A body that stalls past `--inspect-body-timeout` is
//! answered 408.
//!
//! The attack of issue 18: 4 HTTP/2 connections × 100 streams, each `content-length:
//! limit+1` with all but two bytes sent. Before the budget it raised regate's resident memory
//! by about 700 MiB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::{Channel, Sender};
use http_body_util::BodyExt;

const LIMIT: usize = 1 << 20;
const PER_IDENTITY: usize = 8 << 20;

const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := false

allow if input.mcp.method == "tools/call"
"#;

/// Resident memory now, from /proc, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

type Stalled = http::Request<http_body_util::combinators::BoxBody<Bytes, std::io::Error>>;

/// A tool call whose `content-length` promises `limit + 1` bytes, and a sender that will
/// deliver all but two of them.
fn stalled_request() -> (Stalled, Sender<Bytes, std::io::Error>) {
    let (tx, body) = Channel::<Bytes, std::io::Error>::new(4);
    let req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, (LIMIT + 1).to_string())
        .body(body.boxed())
        .unwrap();
    (req, tx)
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

fn tool_call() -> Stalled {
    request_with(
        "POST",
        "/mcp",
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}"#,
    )
}

fn request_with(method: &str, uri: &str, body: &'static [u8]) -> Stalled {
    let mut req = request(method, uri, body);
    req.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_hold_at_most_their_identitys_share_and_others_are_served() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let mut args = setup.args(&upstream.url());
    args.extend(
        [
            "--inspect-body-limit",
            "1MiB",
            "--inspect-body-budget",
            "32MiB",
            "--inspect-body-budget-per-identity",
            "8MiB",
            // Long enough that the stall outlasts the measurement.
            "--inspect-body-timeout",
            "120s",
            "--upstream-timeout",
            "120s",
        ]
        .map(String::from),
    );
    let process = Process::start(&args, &[]);
    let pid = process.child.id();

    // Warm up: a tool call from each identity, so what a first request allocates is counted
    // in the baseline.
    let attacker = setup.ca.client(EXECUTOR);
    let bystander = setup.ca.client(SUMMARIZER);
    let mut other = process.http1(&setup, &bystander).await;
    assert_eq!(send(&mut other, tool_call()).await.0, 200);
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(h2(&process, &setup, &attacker).await);
    }
    let mut warm = conns[0].clone();
    let resp = warm.send_request(tool_call()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let before = rss_kib(pid);

    // The attack: 400 streams, each stalled one byte short of a whole body at the limit.
    let (answered_tx, mut answered) =
        tokio::sync::mpsc::unbounded_channel::<(u16, Option<String>)>();
    let mut senders = Vec::new();
    let chunk = Bytes::from(vec![b' '; 64 << 10]);
    for conn in &conns {
        for _ in 0..100 {
            let (req, mut tx) = stalled_request();
            let mut conn = conn.clone();
            let answered_tx = answered_tx.clone();
            tokio::spawn(async move {
                if let Ok(resp) = conn.send_request(req).await {
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    let _ = answered_tx.send((resp.status().as_u16(), retry_after));
                }
            });
            let chunk = chunk.clone();
            senders.push(tokio::spawn(async move {
                let mut sent = 0;
                while sent < LIMIT - 1 {
                    let n = (LIMIT - 1 - sent).min(chunk.len());
                    if tx.send_data(chunk.slice(..n)).await.is_err() {
                        return None;
                    }
                    sent += n;
                }
                // Stalled: the sender is kept, the last two bytes never come.
                Some(tx)
            }));
        }
    }
    // Every stream that does not fit is answered 503 at once, asking to retry in a second;
    // the rest stay stalled. At most the identity's share is held: 8 bodies of 1 MiB.
    let held_at_most = PER_IDENTITY / (LIMIT - 1);
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while refused < 400 - held_at_most {
        let (status, retry_after) = tokio::time::timeout_at(deadline, answered.recv())
            .await
            .expect("the attack's streams were not answered in time")
            .unwrap();
        assert_eq!(status, 503, "a stalled body was answered {status}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        refused += 1;
    }
    // The streams still held have every byte sent: wait until their senders are done.
    let mut stalled = Vec::new();
    for sender in senders {
        if let Ok(Ok(Some(tx))) = tokio::time::timeout_at(deadline, sender).await {
            stalled.push(tx);
        }
    }
    let (_, metrics) = admin_get(process.admin.unwrap(), "/metrics").await;
    let held: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("regate_inspected_body_bytes "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(held <= PER_IDENTITY, "{held} bytes held for one identity");
    assert!(
        held > 0,
        "no stalled body is held: the attack did not happen"
    );
    let during = rss_kib(pid);
    let grown_mib = (during.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "RSS before {before} KiB, during the attack {during} KiB (+{grown_mib:.1} MiB), \
         {held} bytes held, {refused} streams refused"
    );
    // The identity's share (8 MiB) and a small constant for 400 streams' worth of state.
    assert!(
        grown_mib <= 8.0 + 24.0,
        "resident memory grew by {grown_mib:.1} MiB under the attack"
    );

    // Another identity is served meanwhile, its JSON body read for the policy as usual.
    for _ in 0..5 {
        assert_eq!(send(&mut other, tool_call()).await.0, 200);
    }
    drop(stalled);
    // Every refusal is recorded with its reason.
    // Two warm-up calls and five from the bystander besides.
    let records = wait_for_lines(&setup.path("decisions.log"), refused + 7).await;
    let recorded = records
        .iter()
        .filter(|r| r["reason"] == "body_budget_exhausted" && r["http_status"] == 503)
        .count();
    assert!(
        recorded >= refused,
        "{recorded} of {refused} refusals recorded"
    );
    drop(process);
}

#[tokio::test]
async fn a_body_that_stalls_past_the_inspection_deadline_is_answered_408() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--inspect-body-timeout", "300ms"])
        .await;
    let mut client = regate.http2(&setup, &setup.ca.client(EXECUTOR)).await;
    let (req, mut tx) = stalled_request();
    let answer = tokio::spawn(async move { client.send_request(req).await.unwrap() });
    tx.send_data(Bytes::from_static(b"{\"jsonrpc\":\"2.0\","))
        .await
        .unwrap();
    let resp = answer.await.unwrap();
    assert_eq!(resp.status(), 408);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("body_timeout"));
    assert!(upstream.requests().is_empty());
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["reason"], "body_timeout");
    drop(tx);
    regate.stop().await;
}
