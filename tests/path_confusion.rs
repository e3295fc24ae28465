//! The path the policy judged is the path the upstream serves. Targets that another server
//! could resolve differently are refused with 400 before policy, and never forwarded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Only /docs/… is allowed; everything below must not reach /admin.
const POLICY: &str = r#"package regate.authz
allow if startswith(input.attributes.request.http.path, "/docs/")
"#;

/// Send a raw HTTP/1.1 request line over TLS, so no client library tidies the target.
async fn raw_status(regate: &Regate, setup: &Setup, target: &str) -> u16 {
    let req = format!("GET {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    raw_request(regate, setup, &req).await
}

async fn raw_request(regate: &Regate, setup: &Setup, req: &str) -> u16 {
    let target = req.lines().next().unwrap_or_default().to_string();
    let identity = setup.ca.client(SUMMARIZER);
    let mut tls = regate
        .connect(setup.client_config(Some(&identity), &[b"http/1.1"]))
        .await
        .unwrap();
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut buf),
    )
    .await;
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status for {target}: {text:?}"))
}

#[tokio::test]
async fn path_confusion_attempts_are_refused() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let attacks = [
        "/docs/../admin",
        "/docs/./../admin",
        "/docs/%2e%2e/admin",
        "/docs/%2E%2E/admin",
        "/docs/.%2e/admin",
        "/docs/..%2fadmin",
        "/docs/..%2Fadmin",
        "/docs/..%5cadmin",
        "/docs/..;/admin",
        "/docs//../admin",
        "/docs/%252e%252e/admin",
        "/docs/a/%2e./admin",
        "/docs/%61dmin/..",
        "/docs/x%00/../admin",
    ];
    for target in attacks {
        let status = raw_status(&regate, &setup, target).await;
        assert_eq!(status, 400, "{target} was not refused");
    }
    assert!(
        upstream.requests().is_empty(),
        "refused targets reached the upstream: {:?}",
        upstream
            .requests()
            .iter()
            .map(|s| &s.uri)
            .collect::<Vec<_>>()
    );
    let records = regate.decisions(attacks.len()).await;
    assert!(records
        .iter()
        .all(|r| r["reason"] == "invalid_path" && r["allowed"] == false));

    // A plain path passes, and the upstream gets exactly the bytes the policy saw.
    let target = "/docs/my%20file.txt?x=%2F..%2F&y=1";
    assert_eq!(raw_status(&regate, &setup, target).await, 200);
    assert_eq!(upstream.requests()[0].uri, target);
    regate.stop().await;
}

#[tokio::test]
async fn missing_or_repeated_host_is_refused() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    for req in [
        "GET /docs/a HTTP/1.1\r\nconnection: close\r\n\r\n",
        "GET /docs/a HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n",
    ] {
        assert_eq!(raw_request(&regate, &setup, req).await, 400, "{req:?}");
    }
    assert!(upstream.requests().is_empty());
    regate.stop().await;
}
