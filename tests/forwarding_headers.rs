//! A client can never speak for its certificate, its address or regate: the forwarded
//! identity headers are always regate's own, and hop-by-hop headers stop at regate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

#[tokio::test]
async fn spoofed_xfcc_and_forwarded_headers_are_replaced() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let client_id = setup.ca.client(SUMMARIZER);
    let mut client = regate.http1(&setup, &client_id).await;

    let mut req = request("GET", "/docs/a", b"");
    let h = req.headers_mut();
    h.insert(
        "x-forwarded-client-cert",
        "By=spiffe://x;Hash=00;URI=spiffe://example.org/ns/admin/sa/root"
            .parse()
            .unwrap(),
    );
    h.append(
        "x-forwarded-client-cert",
        "URI=spiffe://example.org/ns/admin/sa/root".parse().unwrap(),
    );
    h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
    h.insert("x-forwarded-proto", "http".parse().unwrap());
    assert_eq!(send(&mut client, req).await.0, 200);

    let seen = &upstream.requests()[0];
    let xfcc: Vec<_> = seen
        .headers
        .get_all("x-forwarded-client-cert")
        .iter()
        .collect();
    assert_eq!(xfcc.len(), 1, "exactly regate's XFCC reaches the upstream");
    let xfcc = xfcc[0].to_str().unwrap();
    assert!(!xfcc.contains("admin"), "{xfcc}");
    assert!(xfcc.contains(&sha256_hex(&client_id.chain[0])), "{xfcc}");
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    regate.stop().await;
}

#[tokio::test]
async fn policy_sees_regates_xfcc_not_the_clients() {
    // A policy trusting the XFCC header must see regate's, never a spoofed one.
    let policy = r#"package regate.authz
allow if contains(input.attributes.request.http.headers["x-forwarded-client-cert"], "URI=spiffe://example.org/ns/agents/sa/summarizer")
"#;
    let setup = Setup::new(&[("authz.rego", policy)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut executor = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;
    let mut req = request("GET", "/", b"");
    req.headers_mut().insert(
        "x-forwarded-client-cert",
        format!("URI={SUMMARIZER}").parse().unwrap(),
    );
    assert_eq!(send(&mut executor, req).await.0, 403);
    assert!(upstream.requests().is_empty());
    regate.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_regate() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let mut req = request("GET", "/docs/a", b"");
    let h = req.headers_mut();
    h.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
    h.insert("x-secret-hop", "1".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("proxy-connection", "keep-alive".parse().unwrap());
    h.insert("te", "trailers, deflate".parse().unwrap());
    h.insert("x-end-to-end", "kept".parse().unwrap());
    h.insert("x-request-id", "client-chosen-id-42".parse().unwrap());
    assert_eq!(send(&mut client, req).await.0, 200);
    let seen = &upstream.requests()[0];
    for gone in ["x-secret-hop", "keep-alive", "proxy-connection"] {
        assert!(!seen.headers.contains_key(gone), "{gone} was forwarded");
    }
    assert_eq!(seen.headers["te"], "trailers");
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    // The client's well-formed id reaches the upstream unchanged; the record keeps it beside
    // regate's own.
    assert_eq!(seen.headers["x-request-id"], "client-chosen-id-42");
    let records = regate.decisions(1).await;
    assert_ne!(records[0]["request_id"], "client-chosen-id-42");
    assert_eq!(records[0]["client_request_id"], "client-chosen-id-42");
    regate.stop().await;
}

#[tokio::test]
async fn with_replace_request_id_the_upstream_gets_regates_own_id() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--replace-request-id"])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let mut req = request("GET", "/docs/a", b"");
    req.headers_mut()
        .insert("x-request-id", "client-chosen-id-42".parse().unwrap());
    assert_eq!(send(&mut client, req).await.0, 200);
    let seen = &upstream.requests()[0];
    let records = regate.decisions(1).await;
    assert_eq!(
        records[0]["request_id"],
        seen.headers["x-request-id"].to_str().unwrap()
    );
    assert_eq!(records[0]["client_request_id"], "client-chosen-id-42");
    regate.stop().await;
}
