//! Filtering fails closed: a `tools/list` result regate cannot read within
//! `--inspect-body-limit` (too long, compressed, not JSON) is never passed on unfiltered. A
//! JSON body becomes a 502 with a JSON-RPC error naming the request's id; an event stream gets
//! an error event in place of the result, and ends. The record says why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::scripted::{self, Scripted};
use common::*;

use std::time::Duration;

use http_body_util::{BodyExt, Full};

const POLICY: &str = r#"package regate.authz

import rego.v1

allow := true

tool_visible if input.mcp.tool == "search"
"#;

async fn list_tools(client: &mut Http1) -> (u16, http::HeaderMap, String) {
    let body = r#"{"jsonrpc": "2.0", "id": 3, "method": "tools/list"}"#;
    let req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(bytes::Bytes::from_static(body.as_bytes()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let (status, headers, body) = send(client, req).await;
    (
        status.as_u16(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Many tools the caller may not see, padded past 4 KiB.
fn long_result() -> serde_json::Value {
    let names: Vec<String> = (0..100).map(|i| format!("secret_tool_{i:03}")).collect();
    let names: Vec<&str> = std::iter::once("search")
        .chain(names.iter().map(String::as_str))
        .collect();
    scripted::tools_result(3, &names)
}

async fn regate_before(upstream: &Scripted, setup: &Setup) -> Regate {
    setup
        .start(
            &upstream.url(),
            &[
                "--mcp-tools-list-query",
                "data.regate.authz.tool_visible",
                "--inspect-body-limit",
                "4KiB",
            ],
        )
        .await
}

#[tokio::test]
async fn a_json_result_that_cannot_be_read_is_a_502_not_the_result() {
    let cases: Vec<(&str, scripted::Answer)> = vec![
        (
            "longer than --inspect-body-limit",
            scripted::json(&long_result()),
        ),
        (
            "not JSON",
            scripted::answer(
                "application/json",
                "{\"jsonrpc\": \"2.0\", \"id\": 3, \"result\": {\"tools\": [",
            ),
        ),
        ("compressed", {
            let mut answer = scripted::json(&scripted::tools_result(3, &["search", "secret_tool"]));
            answer
                .headers_mut()
                .insert(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
            answer
        }),
        (
            "neither JSON nor an event stream",
            scripted::answer("text/plain", "secret_tool"),
        ),
        (
            "repeats a key",
            scripted::answer(
                "application/json",
                r#"{"jsonrpc": "2.0", "id": 3, "result": {"tools": [], "tools": [{"name": "secret_tool"}]}}"#,
            ),
        ),
    ];
    for (why, answer) in cases {
        let setup = Setup::new(&[("authz.rego", POLICY)]);
        let answer = std::sync::Mutex::new(Some(answer));
        let upstream = Scripted::start(move |_, _| answer.lock().unwrap().take().unwrap()).await;
        let regate = regate_before(&upstream, &setup).await;
        let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

        let (status, _, body) = list_tools(&mut client).await;
        assert_eq!(status, 502, "{why}: {body}");
        assert!(!body.contains("secret_tool"), "{why}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["id"], 3, "{why}");
        assert_eq!(error["error"]["code"], -32603, "{why}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(why),
            "{why}: {body}"
        );
        let records = regate.decisions(1).await;
        assert_eq!(records[0]["reason"], "tools_list_unfiltered", "{why}");
        assert_eq!(records[0]["http_status"], 502, "{why}");
        assert!(
            records[0]["tools_list"]["refused"]
                .as_str()
                .unwrap()
                .contains(why),
            "{why}"
        );
    }
}

#[tokio::test]
async fn an_event_too_long_to_filter_ends_the_stream_with_an_error_event() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Scripted::start(|_, _| {
        let hello = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "info", "data": "listing"}});
        let mut text = String::from_utf8(scripted::event(&hello).to_vec()).unwrap();
        text.push_str(std::str::from_utf8(&scripted::event(&long_result())).unwrap());
        text.push_str("event: message\ndata: {\"jsonrpc\": \"2.0\", \"method\": \"after\"}\n\n");
        scripted::answer("text/event-stream", text)
    })
    .await;
    let regate = regate_before(&upstream, &setup).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let (status, _, text) = list_tools(&mut client).await;
    assert_eq!(status, 200, "the head went out before the event came");
    assert!(!text.contains("secret_tool"), "{text}");
    let messages = scripted::event_messages(&text);
    assert_eq!(messages.len(), 2, "{text}");
    assert_eq!(messages[0]["method"], "notifications/message");
    assert_eq!(messages[1]["id"], 3);
    assert_eq!(messages[1]["error"]["code"], -32603);
    let joined = eventually(Duration::from_secs(10), || async {
        regate.decisions(1).await[0].get("tools_list").is_some()
    })
    .await;
    assert!(joined);
    let record = &regate.decisions(1).await[0];
    assert!(
        record["tools_list"]["refused"]
            .as_str()
            .unwrap()
            .contains("longer than"),
        "{record}"
    );
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"regate_mcp_tools_lists_total{result="refused"} 1"#),
        "{metrics}"
    );
}
