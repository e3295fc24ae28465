//! Bodies stream through regate: 64 MiB arrives intact while regate's memory stays flat.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;

const SIZE: usize = 64 * 1024 * 1024;

#[tokio::test]
async fn large_body_arrives_intact_with_bounded_memory() {
    let setup = Setup::new(&[(
        "authz.rego",
        "package regate.authz\nallow if input.attributes.request.http.method == \"PUT\"\n",
    )]);
    let upstream = Upstream::start().await;
    let process = Process::start(&setup.args(&upstream.url()), &[]);
    let mut client = process.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    // A small request first, so the baseline includes a warmed-up connection.
    let warm = http::Request::builder()
        .method("PUT")
        .uri("/upload")
        .header("host", "localhost")
        .body(PatternBody::new(1024).boxed())
        .unwrap();
    assert_eq!(client.send_request(warm).await.unwrap().status(), 200);
    let baseline = process.peak_rss_kib();

    let req = http::Request::builder()
        .method("PUT")
        .uri("/upload")
        .header("host", "localhost")
        .body(PatternBody::new(SIZE).boxed())
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let expected = PatternBody::sha256(SIZE);
    assert_eq!(body, Bytes::from(format!("ok {SIZE} {expected}")));
    let seen = upstream.requests();
    assert_eq!(seen[1].body_len, SIZE);
    assert_eq!(seen[1].body_sha256, expected);

    let peak = process.peak_rss_kib();
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!("regate peak RSS: baseline {baseline} KiB, after 64 MiB body {peak} KiB (+{growth_mib} MiB)");
    // Buffering the body whole would add at least 64 MiB; streaming adds a few buffers.
    assert!(
        growth_mib < 16,
        "regate grew by {growth_mib} MiB for a 64 MiB body"
    );
}
