//! HTTP/2 clients are served, and a gRPC-style exchange keeps its trailers both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

#[tokio::test]
async fn http2_request_is_decided_and_forwarded() {
    let policy = r#"package regate.authz
allow if {
	input.attributes.request.http.protocol == "HTTP/2"
	input.attributes.request.http.host == "localhost"
	input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/summarizer"
}
"#;
    let setup = Setup::new(&[("authz.rego", policy)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http2(&setup, &setup.ca.client(SUMMARIZER)).await;
    let req = http::Request::builder()
        .uri("https://localhost/docs/a?b=c")
        .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let seen = &upstream.requests()[0];
    // The default upstream protocol is HTTP/1.1, with the host carried over.
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.uri, "/docs/a?b=c");
    assert_eq!(seen.headers["host"], "localhost");
    regate.stop().await;
}

#[tokio::test]
async fn grpc_style_request_keeps_trailers_both_ways() {
    let policy = r#"package regate.authz
allow if {
	input.attributes.request.http.method == "POST"
	input.parsed_path == ["helloworld.Greeter", "SayHello"]
	input.attributes.request.http.headers["content-type"] == "application/grpc"
}
"#;
    let setup = Setup::new(&[("authz.rego", policy)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--upstream-protocol", "auto"])
        .await;
    let mut client = regate.http2(&setup, &setup.ca.client(SUMMARIZER)).await;
    // A length-prefixed gRPC message, then trailers from the client.
    let message = Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-client-trailer", "sent".parse().unwrap());
    trailers.insert("grpc-status", "0".parse().unwrap());
    let body = Full::new(message.clone())
        .map_err(|e| match e {})
        .with_trailers(async move { Some(Ok(trailers)) })
        .boxed();
    let req = http::Request::builder()
        .method("POST")
        .uri("https://localhost/helloworld.Greeter/SayHello")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("response trailers arrived");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-client-trailer"], "sent");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"ok"));

    let seen = &upstream.requests()[0];
    assert_eq!(
        seen.version,
        http::Version::HTTP_2,
        "auto forwards HTTP/2 as HTTP/2"
    );
    assert_eq!(seen.body_sha256, sha256_hex(&message));
    assert_eq!(seen.headers["te"], "trailers");
    let upstream_trailers = seen
        .trailers
        .as_ref()
        .expect("upstream got request trailers");
    assert_eq!(upstream_trailers["x-client-trailer"], "sent");
    regate.stop().await;
}
