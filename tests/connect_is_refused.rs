//! regate does not serve CONNECT, whatever the policy says: a CONNECT names a host and port,
//! not a resource, so there is no path to decide on and the upstream would receive a target
//! the policy never saw. It is answered 405 with an `Allow` header, recorded as
//! `method_not_allowed`, and never forwarded, over HTTP/1.1 and HTTP/2 alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use http_body_util::BodyExt;

const ALLOW_ALL: &str = r#"package regate.authz
allow := true
"#;

/// The status and the headers (lowercase names) of a raw response.
fn head_of(response: &str) -> (u16, Vec<(String, String)>) {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

#[tokio::test]
async fn connect_over_http1_is_405_and_never_forwarded() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;

    let attempts = [
        "CONNECT /x HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        "CONNECT example.org:443 HTTP/1.1\r\nhost: example.org:443\r\nconnection: close\r\n\r\n",
    ];
    for req in attempts {
        let response = raw_http1(
            &regate,
            &setup,
            &setup.ca.client(SUMMARIZER),
            req.as_bytes(),
        )
        .await;
        let (status, headers) = head_of(&response);
        assert_eq!(status, 405, "{req:?}: {response}");
        let allow = headers
            .iter()
            .find(|(n, _)| n == "allow")
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no Allow header: {response}"));
        assert!(allow.contains("GET"), "{allow}");
        assert!(!allow.contains("CONNECT"), "{allow}");
    }
    assert!(
        upstream.requests().is_empty(),
        "a CONNECT reached the upstream: {:?}",
        upstream.requests()
    );
    let records = regate.decisions(attempts.len()).await;
    for record in &records {
        assert_eq!(record["reason"], "method_not_allowed", "{record}");
        assert_eq!(record["allowed"], false);
        assert_eq!(record["http_status"], 405);
        assert_eq!(record["method"], "CONNECT");
    }
    regate.stop().await;
}

#[tokio::test]
async fn connect_over_http2_is_405_and_never_forwarded() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http2(&setup, &setup.ca.client(SUMMARIZER)).await;

    // An authority-only URI: h2 sends `:method CONNECT` and `:authority`, no `:path`.
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri("example.org:443")
        .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 405);
    let allow = resp.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET"), "{allow}");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["reason"], "method_not_allowed");

    assert!(upstream.requests().is_empty());
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["reason"], "method_not_allowed");
    assert_eq!(records[0]["allowed"], false);
    assert_eq!(records[0]["http_status"], 405);
    regate.stop().await;
}
