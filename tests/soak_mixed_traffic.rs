//! A bounded soak of the real binary: allowed, denied and hostile traffic together (path
//! confusion, smuggling, h2c and unknown upgrades, forged header spellings, CONNECT, bad
//! hosts and transfer codings, WebSocket tunnels, HTTP/2), while the policy is reloaded and
//! the served certificate rotated. Every answer must be the one expected for its kind, the
//! process must not panic, and its memory at the end must be within 16 MiB of what it held
//! after the first round.
//!
//! Bounded by rounds and by time: at most 40 rounds, and no new round after 20 seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POLICY: &str = r#"package regate.authz

default allow := false

allow if {
	input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/summarizer"
	input.attributes.request.http.method in {"GET", "POST"}
	input.parsed_path[0] == "docs"
}

allow if {
	input.upgrade == "websocket"
	input.parsed_path[0] == "ws"
}
"#;

/// What each kind of request must be answered with.
const EXPECTED: &[(&str, &[u16])] = &[
    ("allowed", &[200]),
    ("denied", &[403]),
    ("http2", &[200]),
    ("path_confusion", &[400]),
    ("conflicting_lengths", &[400]),
    // hyper reads the body by its chunks alone and closes the connection after answering.
    ("length_and_chunks", &[200]),
    ("h2c", &[200]),
    ("unknown_upgrade", &[403]),
    ("underscore_spelling", &[200]),
    ("connect", &[405]),
    ("bad_host", &[400]),
    ("gzip_chunked", &[501]),
    ("websocket", &[101]),
];

fn raw_requests() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("path_confusion", b"GET /docs/%2e%2e/admin HTTP/1.1\r\nhost: localhost\r\n\r\n"),
        (
            "conflicting_lengths",
            b"POST /docs/a HTTP/1.1\r\nhost: localhost\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nabcd",
        ),
        (
            "length_and_chunks",
            b"POST /docs/a HTTP/1.1\r\nhost: localhost\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "h2c",
            b"POST /docs/a HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\ncontent-length: 2\r\n\r\nhi",
        ),
        (
            "unknown_upgrade",
            b"GET /docs/a HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: foo\r\n\r\n",
        ),
        (
            "underscore_spelling",
            b"GET /docs/a HTTP/1.1\r\nhost: localhost\r\nx_forwarded_client_cert: URI=spiffe://evil\r\n\r\n",
        ),
        ("connect", b"CONNECT localhost:443 HTTP/1.1\r\nhost: localhost:443\r\n\r\n"),
        ("bad_host", b"GET /docs/a HTTP/1.1\r\nhost: user@localhost\r\n\r\n"),
        (
            "gzip_chunked",
            b"POST /docs/a HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ),
    ]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One round: every kind of request once, several at a time.
async fn round(process: &Process, setup: &Setup, tally: &mut BTreeMap<&'static str, Vec<u16>>) {
    let summarizer = setup.ca.client(SUMMARIZER);
    let mut tasks = Vec::new();
    for (kind, bytes) in raw_requests() {
        let config = setup.client_config(Some(&summarizer), &[b"http/1.1"]);
        let addr = process.addr;
        tasks.push(tokio::spawn(async move {
            let mut tls = tls_connect(addr, config).await.unwrap();
            tls.write_all(bytes).await.unwrap();
            (kind, status_of(&read_response(&mut tls).await))
        }));
    }
    let config = setup.client_config(Some(&summarizer), &[b"http/1.1"]);
    let addr = process.addr;
    tasks.push(tokio::spawn(async move {
        let mut tls = tls_connect(addr, config).await.unwrap();
        tls.write_all(
            b"GET /ws HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
        let status = status_of(&read_response(&mut tls).await);
        tls.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        tls.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
        ("websocket", status)
    }));
    let mut keep_alive = process.http1(setup, &summarizer).await;
    for i in 0..20 {
        tally
            .entry("allowed")
            .or_default()
            .push(get(&mut keep_alive, &format!("/docs/{i}")).await.0.as_u16());
        let denied = send(&mut keep_alive, request("DELETE", "/docs/x", b"")).await;
        tally.entry("denied").or_default().push(denied.0.as_u16());
    }
    let tls = tls_connect(
        process.addr,
        setup.client_config(Some(&summarizer), &[b"h2"]),
    )
    .await
    .unwrap();
    let (send2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut streams = Vec::new();
    for i in 0..10 {
        let mut send2 = send2.clone();
        let mut req = request("GET", &format!("https://localhost/docs/h2-{i}"), b"");
        req.headers_mut().remove("host");
        streams.push(tokio::spawn(async move {
            send2.send_request(req).await.unwrap().status().as_u16()
        }));
    }
    for s in streams {
        tally.entry("http2").or_default().push(s.await.unwrap());
    }
    for t in tasks {
        let (kind, status) = t.await.unwrap();
        tally.entry(kind).or_default().push(status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_with_reloads_and_rotation_gets_only_expected_answers() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = SwitchingUpstream::start().await;
    let mut args = setup.args(&upstream.url());
    args.extend(["--reload-interval".into(), "1s".into()]);
    let process = Process::start(&args, &[]);
    let pid = process.child.id();

    let mut tally: BTreeMap<&'static str, Vec<u16>> = BTreeMap::new();
    round(&process, &setup, &mut tally).await;
    let rss_start = rss_kib(pid);
    let started = Instant::now();
    let mut rounds = 1;
    while rounds < 40 && started.elapsed() < Duration::from_secs(20) {
        match rounds % 10 {
            // A new policy revision (same rules) and a new served certificate, mid-traffic.
            3 => setup.write_policy("authz.rego", &format!("{POLICY}\n# revision {rounds}\n")),
            6 => {
                let server = setup.ca.server();
                replace_file(&setup.path("server.pem"), &server.chain_pem);
                replace_file(&setup.path("server.key"), &server.key_pem);
            }
            _ => {}
        }
        round(&process, &setup, &mut tally).await;
        rounds += 1;
    }
    let rss_end = rss_kib(pid);

    let mut unexpected = Vec::new();
    for (kind, statuses) in &tally {
        let allowed = EXPECTED.iter().find(|(k, _)| k == kind).unwrap().1;
        let wrong: Vec<_> = statuses.iter().filter(|s| !allowed.contains(s)).collect();
        if !wrong.is_empty() {
            unexpected.push(format!("{kind}: {wrong:?}"));
        }
    }
    let total: usize = tally.values().map(Vec::len).sum();
    let stderr = process.stderr();
    println!(
        "soak: {rounds} rounds, {total} requests in {:.1} s; RSS {rss_start} KiB after the first round, {rss_end} KiB at the end",
        started.elapsed().as_secs_f64()
    );
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    assert_eq!(tally.len(), EXPECTED.len(), "{tally:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("policy reloaded") && stderr.contains("served certificate reloaded"),
        "the reload and the rotation did not both land: {stderr}"
    );
    assert!(
        rss_end <= rss_start + 16 * 1024,
        "RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
    // Hostile requests never reached the application.
    let heads = upstream.heads();
    assert!(heads.iter().all(|h| !h.contains("/admin")
        && !h.to_ascii_lowercase().contains("upgrade: h2c")
        && !h.contains("x_forwarded_client_cert")));
    assert!(upstream.h2_requests.lock().unwrap().is_empty());
    let status = process.stop();
    assert!(status.success(), "{status:?}");
}
