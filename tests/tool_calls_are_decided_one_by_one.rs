//! Tool calls: an agent's MCP `tools/call` (JSON-RPC 2.0 in a JSON body) is shown to the
//! policy as `input.mcp`, with the tool's name and arguments, and decided by them. Each call of
//! a batch is decided on its own, and one forbidden call denies the request. The body reaches
//! the upstream byte for byte. A body over the limit, or not JSON, is the policy's to judge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use http_body_util::{BodyExt, Full};

/// A read-only agent: `search` and `read_doc` (outside /secret), never `send_email`; the MCP
/// handshake and listing are fine.
const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := false

allow if input.mcp.method in {"initialize", "tools/list"}

allow if {
	input.mcp.method == "tools/call"
	input.mcp.tool == "search"
}

allow if {
	input.mcp.method == "tools/call"
	input.mcp.tool == "read_doc"
	not startswith(input.mcp.arguments.path, "/secret/")
}

# Not JSON-RPC: plain JSON the policy reads as opa-envoy-plugin policies do.
allow if input.parsed_body.kind == "note"

allow if input.body_truncated

allow := {"allowed": false, "reason": "not_json", "http_status": 400} if input.body_error
"#;

async fn post(client: &mut Http1, body: &'static str, content_type: &str) -> (u16, String) {
    let req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, content_type)
        .body(
            Full::new(bytes::Bytes::from_static(body.as_bytes()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let (status, _, body) = send(client, req).await;
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

fn call(id: u32, tool: &str, arguments: &str) -> String {
    format!(
        r#"{{"jsonrpc": "2.0", "id": {id}, "method": "tools/call", "params": {{"name": "{tool}", "arguments": {arguments}}}}}"#
    )
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[tokio::test]
async fn a_tool_call_is_allowed_or_denied_by_tool_and_argument() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let search = leak(call(1, "search", r#"{"q": "rego"}"#));
    let read = leak(call(2, "read_doc", r#"{"path": "/docs/a.md"}"#));
    let secret = leak(call(3, "read_doc", r#"{"path": "/secret/keys"}"#));
    let email = leak(call(4, "send_email", r#"{"to": "all@example.org"}"#));
    assert_eq!(post(&mut client, search, "application/json").await.0, 200);
    assert_eq!(
        post(&mut client, read, "application/json; charset=utf-8")
            .await
            .0,
        200
    );
    assert_eq!(post(&mut client, secret, "application/json").await.0, 403);
    assert_eq!(post(&mut client, email, "application/json").await.0, 403);

    // What was allowed reached the upstream byte for byte.
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body_sha256, sha256_hex(search.as_bytes()));
    assert_eq!(seen[0].body_len, search.len());
    assert_eq!(seen[1].body_sha256, sha256_hex(read.as_bytes()));

    let records = regate.decisions(4).await;
    assert_eq!(records[3]["denied_call"]["tool"], "send_email");
    assert_eq!(records[3]["denied_call"]["id"], 4);
    regate.stop().await;
}

#[tokio::test]
async fn a_batch_with_one_forbidden_call_is_denied_and_the_record_names_it() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let fine = leak(format!(
        "[{}, {}]",
        call(1, "search", r#"{"q": "a"}"#),
        call(2, "read_doc", r#"{"path": "/docs/b"}"#)
    ));
    let mixed = leak(format!(
        "[{}, {}, {}]",
        call(1, "search", r#"{"q": "a"}"#),
        call(2, "send_email", r#"{"to": "x@example.org"}"#),
        call(3, "read_doc", r#"{"path": "/docs/b"}"#)
    ));
    assert_eq!(post(&mut client, fine, "application/json").await.0, 200);
    let (status, body) = post(&mut client, mixed, "application/json").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(
        upstream.requests()[0].body_sha256,
        sha256_hex(fine.as_bytes())
    );

    let records = regate.decisions(2).await;
    assert_eq!(records[1]["allowed"], false);
    assert_eq!(
        records[1]["denied_call"],
        serde_json::json!({"index": 1, "method": "tools/call", "tool": "send_email", "id": 2})
    );
    regate.stop().await;
}

#[tokio::test]
async fn bodies_that_are_too_long_or_not_json_are_the_policys_to_judge() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--inspect-body-limit", "64"])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    // Plain JSON, as opa-envoy-plugin shows it.
    assert_eq!(
        post(&mut client, r#"{"kind": "note"}"#, "application/json")
            .await
            .0,
        200
    );
    // Not JSON: the policy said 400.
    let (status, body) = post(&mut client, "{not json", "application/json").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not_json"), "{body}");
    // Over the limit: read in part, judged by the policy, and still forwarded whole.
    let long = leak(format!(
        r#"{{"kind": "report", "text": "{}"}}"#,
        "x".repeat(10_000)
    ));
    assert_eq!(post(&mut client, long, "application/json").await.0, 200);
    let seen = upstream.requests();
    assert_eq!(seen.last().unwrap().body_len, long.len());
    assert_eq!(
        seen.last().unwrap().body_sha256,
        sha256_hex(long.as_bytes())
    );
    // Not a JSON content type: not read, so none of the body rules apply.
    assert_eq!(
        post(&mut client, r#"{"kind": "note"}"#, "text/plain")
            .await
            .0,
        403
    );
    regate.stop().await;
}

#[tokio::test]
async fn odd_spellings_big_batches_and_disagreeing_calls_do_not_slip_past() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let email = leak(call(4, "send_email", r#"{"to": "all@example.org"}"#));

    // A content type some servers still read as JSON is read as JSON here too.
    for ct in [
        "text/plain, application/json",
        "text/plain;application/json",
    ] {
        assert_eq!(post(&mut client, email, ct).await.0, 403, "{ct}");
    }
    // Two content types: refused before anything else.
    let req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "text/plain")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(bytes::Bytes::from_static(email.as_bytes()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    assert_eq!(send(&mut client, req).await.0, 400);
    // A byte order mark does not hide the call.
    let bom = leak(format!("\u{feff}{email}"));
    assert_eq!(post(&mut client, bom, "application/json").await.0, 403);
    // More calls than are decided one by one: refused.
    let many = leak(format!(
        "[{}]",
        (0..65)
            .map(|i| call(i, "search", "{}"))
            .collect::<Vec<_>>()
            .join(",")
    ));
    let (status, body) = post(&mut client, many, "application/json").await;
    assert_eq!(status, 403);
    assert!(body.contains("batch_too_large"), "{body}");
    assert!(upstream.requests().is_empty());
    regate.stop().await;
}
