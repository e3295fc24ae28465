//! When the application is down or slow, the client gets a clear 502 or 504, and the
//! decision is still recorded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn upstream_down_gives_502() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let regate = setup.start(&format!("http://127.0.0.1:{port}"), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let (status, headers, body) = get(&mut client, "/docs/a").await;
    assert_eq!(status, 502);
    assert_eq!(headers["content-type"], "application/problem+json");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["status"], 502);
    assert_eq!(doc["reason"], "upstream_unreachable");
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["allowed"], true);
    assert_eq!(records[0]["http_status"], 502);
    assert_eq!(records[0]["reason"], "upstream_unreachable");
    assert!(records[0]["upstream_status"].is_null());
    regate.stop().await;
}

#[tokio::test]
async fn slow_upstream_gives_504() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start_with_delay(Duration::from_secs(5)).await;
    let regate = setup
        .start(&upstream.url(), &["--upstream-timeout", "200ms"])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let (status, _, body) = get(&mut client, "/docs/a").await;
    assert_eq!(status, 504);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["reason"], "upstream_timeout");
    regate.stop().await;
}
