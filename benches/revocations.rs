//! What the kill switch costs as revocations pile up: `POST /revocations` one after another on
//! one keep-alive connection against the real `regate` binary (a journal line synced per
//! change, folds included), round after round of a thousand; the request path's question
//! (`revoked`) with none and with a hundred thousand in force; memory per revocation; and
//! reading a file of a hundred thousand at start.
//!
//! A plain `fn main`; BENCHMARKS.md keeps the figures. `REGATE_BENCH_QUICK=1` does a tenth.
//! Every loop is bounded by a count (and the HTTP rounds by a deadline); nothing asserts on a
//! timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use regate::revocations::Revocations;
use regate::tls::identity::{PeerIdentity, SpiffeId};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ALLOW_ALL: &str = "package regate.authz\n\nallow := true\n";

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

fn body(i: usize) -> String {
    format!(
        r#"{{"spiffe_id": "spiffe://prod.example.org/ns/agents/sa/agent-{i:06}", "reason": "bench"}}"#
    )
}

fn peer(i: usize) -> PeerIdentity {
    PeerIdentity {
        spiffe_id: SpiffeId::parse(&format!(
            "spiffe://prod.example.org/ns/agents/sa/agent-{i:06}"
        )),
        uri_sans: Vec::new(),
        dns_sans: Vec::new(),
        subject: String::new(),
        issuer: String::new(),
        serial: format!("{:032x}", 0x5eed_0000_0000_0000_u128 + i as u128),
        fingerprint_sha256: String::new(),
        not_before: 0,
        not_after: i64::MAX,
    }
}

/// Rounds of `per_round` POSTs on one connection to the admin listener at `admin`; the time
/// of each round.
async fn rounds(admin: SocketAddr, rounds: usize, per_round: usize) -> Vec<Duration> {
    let tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut times = Vec::new();
    let mut n = 0;
    while times.len() < rounds && Instant::now() < deadline {
        let start = Instant::now();
        for _ in 0..per_round {
            send.ready().await.unwrap();
            let req = http::Request::builder()
                .method("POST")
                .uri("/revocations")
                .header(http::header::HOST, "localhost")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body(n))))
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 201);
            resp.into_body().collect().await.unwrap();
            n += 1;
        }
        times.push(start.elapsed());
    }
    times
}

/// Median nanoseconds per call of `f` over batches of 1,000.
fn median_ns(batches: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut times: Vec<f64> = (0..batches)
        .map(|b| {
            let start = Instant::now();
            for i in 0..1_000 {
                f(b * 1_000 + i);
            }
            start.elapsed().as_nanos() as f64 / 1_000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn main() {
    let quick = std::env::var_os("REGATE_BENCH_QUICK").is_some();
    let (http_rounds, held, batches) = match quick {
        true => (2, 10_000, 100),
        false => (10, 100_000, 1_000),
    };
    println!(
        "regate revocations benchmark ({} run)",
        if quick { "quick" } else { "full" }
    );

    // 1. The API, against the regate binary, as an operator's script would drive it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        common::init();
        let setup = common::Setup::new(&[("authz.rego", ALLOW_ALL)]);
        let upstream = common::Upstream::start().await;
        let mut args = setup.args(&upstream.url());
        let file = setup.path("revocations.json");
        args.extend(["--revocations".to_string(), file.display().to_string()]);
        let regate = common::Process::start(&args, &[]);
        let admin = regate.admin.expect("an admin listener");
        let times = rounds(admin, http_rounds, 1_000).await;
        for (i, t) in times.iter().enumerate() {
            println!(
                "POST /revocations, round {:2}: 1,000 adds in {:.3} s ({:.0} µs each), {} in force after",
                i + 1,
                t.as_secs_f64(),
                t.as_secs_f64() * 1e3,
                (i + 1) * 1_000
            );
        }
        println!(
            "file after the rounds: {} bytes; regate's peak RSS {} KiB",
            std::fs::metadata(&file).map_or(0, |m| m.len()),
            regate.peak_rss_kib()
        );
        regate.stop();
    });

    // 2. The request path's question, with none and with `held` in force.
    let none = Revocations::load(None).unwrap();
    let asked = peer(held + 1);
    let empty_ns = median_ns(batches, |_| {
        black_box(none.revoked(black_box(&asked)));
    });
    let before = rss();
    let start = Instant::now();
    let full = Revocations::load(None).unwrap().with_max(held);
    for i in 0..held {
        full.add(body(i).as_bytes()).unwrap();
    }
    let added = start.elapsed();
    let grown = rss().saturating_sub(before);
    let miss_ns = median_ns(batches, |_| {
        black_box(full.revoked(black_box(&asked)));
    });
    let hit = peer(held / 2);
    let hit_ns = median_ns(batches, |_| {
        black_box(full.revoked(black_box(&hit)));
    });
    println!("revoked(), nothing in force: {empty_ns:.0} ns");
    println!("revoked(), {held} in force, caller not among them: {miss_ns:.0} ns");
    println!("revoked(), {held} in force, caller revoked: {hit_ns:.0} ns");
    println!(
        "{held} adds in memory (no file): {:.3} s ({:.1} µs each); RSS grew {} bytes, {} per revocation",
        added.as_secs_f64(),
        added.as_secs_f64() * 1e6 / held as f64,
        grown,
        grown / held as u64
    );

    // 3. Start: a file of `held`, as a fold writes it, read back.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("revocations.json");
    let listed = serde_json::json!({"revocations": full.list()});
    std::fs::write(&file, serde_json::to_vec_pretty(&listed).unwrap()).unwrap();
    let start = Instant::now();
    let read = Revocations::load(Some(&file)).unwrap();
    println!(
        "load at start, {} in the file ({} bytes): {:.3} s",
        read.len(),
        std::fs::metadata(&file).map_or(0, |m| m.len()),
        start.elapsed().as_secs_f64()
    );
}
