//! MCP's Streamable HTTP (2026-07-28) mirrors the body's `method` and tool name into
//! `Mcp-Method` and `Mcp-Name`, and its protocol version into `MCP-Protocol-Version`, so that
//! intermediaries can route on them. A request whose headers say otherwise than its body is
//! refused before any policy (400, a JSON-RPC `HeaderMismatch` error, code -32020, naming
//! the request's id) and never reaches the upstream; one whose headers match shows them to
//! the policy in `input.mcp`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use http_body_util::{BodyExt, Full};

/// Allows a `tools/call` of `search` only when the client mirrored it into the headers and
/// speaks 2026-07-28; anything else the policy would allow too, so a refusal is regate's own.
const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := {"allowed": true, "reason": "anything"}

allow := {"allowed": true, "reason": "mirrored"} if {
	input.mcp.tool == "search"
	input.mcp.headers.method == "tools/call"
	input.mcp.headers.name == "search"
	input.mcp.protocol_version == "2026-07-28"
}

allow := {"allowed": false, "reason": "old_client"} if input.mcp.protocol_version == "2025-06-18"
"#;

fn call(id: u64, method: &str, params: serde_json::Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

fn search_call() -> String {
    call(
        7,
        "tools/call",
        serde_json::json!({"name": "search", "arguments": {"q": "rego"},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}}}),
    )
}

async fn post(
    client: &mut Http1,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, serde_json::Value) {
    let mut req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(
            Full::new(bytes::Bytes::from(body))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let (status, _, body) = send(client, req).await;
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status.as_u16(), json)
}

const MIRRORED: &[(&str, &str)] = &[
    ("mcp-protocol-version", "2026-07-28"),
    ("mcp-method", "tools/call"),
    ("mcp-name", "search"),
];

#[tokio::test]
async fn headers_that_mirror_the_body_reach_the_policy_in_input_mcp() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    assert_eq!(post(&mut client, MIRRORED, search_call()).await.0, 200);
    // The name in the transport's base64 form is decoded before it is compared and shown.
    let encoded = [
        MIRRORED[0],
        MIRRORED[1],
        ("mcp-name", "=?base64?c2VhcmNo?="),
    ];
    assert_eq!(post(&mut client, &encoded, search_call()).await.0, 200);
    let records = regate.decisions(2).await;
    assert_eq!(records[0]["reason"], "mirrored");
    assert_eq!(records[1]["reason"], "mirrored");
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn the_protocol_version_header_is_input_mcp_protocol_version() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    // A 2025-06-18 client sends the version header alone, and no _meta in the body.
    let old = call(
        1,
        "tools/call",
        serde_json::json!({"name": "search", "arguments": {}}),
    );
    let (status, _) = post(&mut client, &[("mcp-protocol-version", "2025-06-18")], old).await;
    assert_eq!(status, 403);
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["reason"], "old_client");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn headers_that_say_otherwise_than_the_body_are_refused_before_the_policy() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let cases: &[&[(&str, &str)]] = &[
        // A router reading the headers would see a harmless search; the server sends mail.
        &[("mcp-method", "tools/call"), ("mcp-name", "send_email")],
        &[("mcp-method", "tools/list")],
        // tools/call requires the name.
        &[("mcp-method", "tools/call")],
        &[("mcp-name", "search")],
        &[
            ("mcp-method", "tools/call"),
            ("mcp-name", "search"),
            ("mcp-name", "search"),
        ],
        &[
            ("mcp-protocol-version", "2025-11-25"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "search"),
        ],
        &[
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?c2VhcmNp?="),
        ],
    ];
    for headers in cases {
        let (status, body) = post(&mut client, headers, search_call()).await;
        assert_eq!(status, 400, "{headers:?}");
        assert_eq!(body["jsonrpc"], "2.0", "{headers:?}");
        assert_eq!(body["id"], 7, "{headers:?}");
        assert_eq!(body["error"]["code"], -32020, "{headers:?}");
        assert_eq!(body["error"]["data"]["reason"], "mcp_header_mismatch");
    }
    let records = regate.decisions(cases.len()).await;
    assert!(records
        .iter()
        .all(|r| r["reason"] == "mcp_header_mismatch" && r["http_status"] == 400));
    assert!(
        upstream.requests().is_empty(),
        "a mismatched request reached the upstream"
    );
}

#[tokio::test]
async fn headers_with_no_single_request_to_hold_them_to_are_refused() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--inspect-body-limit", "1KiB"])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    // 2026-07-28 has no batches: a batch has no one method for Mcp-Method to mirror.
    let batch = format!("[{}]", search_call());
    let (status, body) = post(&mut client, MIRRORED, batch).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, (-32020).into())
    );
    assert!(body.get("id").is_none(), "a batch has no one id: {body}");
    // A body over the inspection limit cannot be held to the headers.
    let long = call(
        7,
        "tools/call",
        serde_json::json!({"name": "search", "arguments": {"q": "x".repeat(2000)}}),
    );
    let (status, body) = post(&mut client, &MIRRORED[1..], long).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, (-32020).into())
    );
    // Without the headers, the same body is the policy's to judge, as before.
    let long = call(8, "tools/call", serde_json::json!({"q": "x".repeat(2000)}));
    assert_eq!(post(&mut client, &[], long).await.0, 200);
    assert_eq!(upstream.requests().len(), 1);
}
