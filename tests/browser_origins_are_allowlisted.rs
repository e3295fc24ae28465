//! MCP's DNS-rebinding defence: with `--mcp-allowed-origin`, a request whose `Origin` is not
//! listed is refused (403, a JSON-RPC error without an id) before any policy; a request
//! without `Origin` (a client that is not a browser) is not. Without the flag, `Origin` is
//! the policy's business, as before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use http_body_util::{BodyExt, Full};

const ALLOW_ALL: &str = "package regate.authz\n\nallow := true\n";

async fn post_from(client: &mut Http1, origin: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(origin) = origin {
        req = req.header(http::header::ORIGIN, origin);
    }
    let body = r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}"#;
    let req = req
        .body(
            Full::new(bytes::Bytes::from_static(body.as_bytes()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let (status, _, body) = send(client, req).await;
    (
        status.as_u16(),
        serde_json::from_slice(&body).unwrap_or_default(),
    )
}

#[tokio::test]
async fn an_origin_not_listed_is_refused_and_one_listed_or_none_is_not() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &[
                "--mcp-allowed-origin",
                "https://app.example.org",
                "--mcp-allowed-origin",
                "http://localhost:3000",
            ],
        )
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    // A page on a name the attacker pointed at this host.
    let (status, body) = post_from(&mut client, Some("http://attacker.example")).await;
    assert_eq!(status, 403);
    assert_eq!(body["jsonrpc"], "2.0");
    assert!(body.get("id").is_none(), "{body}");
    assert_eq!(body["error"]["data"]["reason"], "origin_not_allowed");
    for refused in [
        "null",
        "https://app.example.org.attacker.example",
        "http://localhost:3001",
    ] {
        assert_eq!(
            post_from(&mut client, Some(refused)).await.0,
            403,
            "{refused}"
        );
    }
    for allowed in [
        Some("https://app.example.org"),
        Some("https://APP.example.org:443"),
        Some("http://localhost:3000"),
        None,
    ] {
        assert_eq!(post_from(&mut client, allowed).await.0, 200, "{allowed:?}");
    }
    let records = regate.decisions(8).await;
    assert_eq!(records[0]["reason"], "origin_not_allowed");
    assert_eq!(records[0]["http_status"], 403);
    assert_eq!(
        upstream.requests().len(),
        4,
        "only the allowed requests reached the upstream"
    );
}

#[tokio::test]
async fn without_a_list_any_origin_is_the_policys_to_judge() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(
        post_from(&mut client, Some("http://attacker.example"))
            .await
            .0,
        200
    );
}

#[test]
fn an_allowed_origin_that_is_no_origin_is_refused_at_startup() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let mut args = setup.args("http://127.0.0.1:9");
    args.extend([
        "--mcp-allowed-origin".into(),
        "https://app.example.org/path".into(),
    ]);
    args.extend(["--mcp-allowed-origin".into(), "null".into()]);
    let mut cmd = vec!["run"];
    cmd.extend(args.iter().map(String::as_str));
    let out = regate_command(&cmd);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("mcp-allowed-origin:").count(), 2, "{stderr}");
}
