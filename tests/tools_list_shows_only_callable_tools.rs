//! With `--mcp-tools-list-query`, an MCP `tools/list` result (a JSON body, or an event in an
//! event stream) shows the caller only the tools it may call: the query is asked once per
//! listed tool with `input.mcp.tool` set to it, with the same grants that decide the calls,
//! so an agent never learns of a tool it cannot use. The record says how many were listed
//! and hidden, and the metrics count them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::scripted::{self, Scripted};
use common::*;

use http_body_util::{BodyExt, Full};

/// One set of grants decides both the calls and what each agent sees listed.
const POLICY: &str = r#"package regate.authz

import rego.v1

grants := {
	"spiffe://example.org/ns/agents/sa/summarizer": {"search", "read_doc"},
	"spiffe://example.org/ns/agents/sa/executor": {"search", "read_doc", "send_email"},
}

default allow := false

allow if input.mcp.method == "tools/list"

allow if {
	input.mcp.method == "tools/call"
	input.mcp.tool in grants[input.peer.spiffe_id]
}

tool_visible if input.mcp.tool in grants[input.peer.spiffe_id]
"#;

const QUERY: &[&str] = &["--mcp-tools-list-query", "data.regate.authz.tool_visible"];

const LISTED: &[&str] = &["search", "read_doc", "send_email"];

async fn list_tools(client: &mut Http1, id: u64) -> (u16, http::HeaderMap, bytes::Bytes) {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}).to_string();
    let req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT_ENCODING, "gzip, deflate")
        .header("mcp-method", "tools/list")
        .body(
            Full::new(bytes::Bytes::from(body))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let (status, headers, body) = send(client, req).await;
    (status.as_u16(), headers, body)
}

fn names(result: &serde_json::Value) -> Vec<String> {
    result["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_json_result_lists_only_the_tools_the_caller_may_call() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Scripted::start(|_, _| scripted::json(&scripted::tools_result(1, LISTED))).await;
    let regate = setup.start(&upstream.url(), QUERY).await;

    let mut summarizer = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let (status, headers, body) = list_tools(&mut summarizer, 1).await;
    assert_eq!(status, 200);
    let result: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(names(&result), ["search", "read_doc"]);
    // This caller's view: not to be cached for another.
    assert_eq!(result["result"]["cacheScope"], "private");
    assert_eq!(result["result"]["ttlMs"], 60000);
    let length: usize = headers[http::header::CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len());

    let mut executor = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;
    let (_, _, body) = list_tools(&mut executor, 1).await;
    let result: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(names(&result), LISTED);

    let records = regate.decisions(2).await;
    assert_eq!(
        records[0]["tools_list"],
        serde_json::json!({"listed": 3, "hidden": 1})
    );
    assert_eq!(
        records[1]["tools_list"],
        serde_json::json!({"listed": 3, "hidden": 0})
    );
    // The upstream was asked for an answer regate can read.
    for received in upstream.received() {
        assert_eq!(received.headers[http::header::ACCEPT_ENCODING], "identity");
    }
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    assert!(
        metrics.contains("regate_mcp_tools_hidden_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"regate_mcp_tools_lists_total{result="filtered"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_event_stream_result_is_filtered_and_the_other_events_pass_as_they_were() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Scripted::start(|_, _| {
        let progress = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": 1, "progress": 1, "tools": ["send_email"]}});
        let mut text = String::from(": keep-alive\r\n");
        text.push_str(&format!(
            "event: message\r\nid: 1\r\ndata: {progress}\r\n\r\n"
        ));
        text.push_str(&format!(
            "event: message\r\nid: 2\r\ndata: {}\r\n\r\n",
            scripted::tools_result(5, LISTED)
        ));
        scripted::answer("text/event-stream", text)
    })
    .await;
    let regate = setup.start(&upstream.url(), QUERY).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let (status, headers, body) = list_tools(&mut client, 5).await;
    assert_eq!(status, 200);
    assert_eq!(headers[http::header::CONTENT_TYPE], "text/event-stream");
    let text = String::from_utf8(body.to_vec()).unwrap();
    // The comment and the notification pass byte for byte; the result is rewritten.
    assert!(
        text.starts_with(": keep-alive\r\nevent: message\r\nid: 1\r\ndata: "),
        "{text}"
    );
    assert!(text.contains("event: message\r\nid: 2\r\ndata: "), "{text}");
    let messages = scripted::event_messages(&text.replace("\r\n", "\n"));
    assert_eq!(messages.len(), 2, "{text}");
    assert_eq!(
        messages[0]["params"]["tools"],
        serde_json::json!(["send_email"])
    );
    assert_eq!(messages[1]["id"], 5);
    assert_eq!(names(&messages[1]), ["search", "read_doc"]);

    // Filtered as the stream passed: the writer joins the count to the record when it ends.
    let records = regate.decisions(1).await;
    let joined = eventually(std::time::Duration::from_secs(10), || async {
        let records = regate.decisions(1).await;
        records[0].get("tools_list").is_some()
    })
    .await;
    assert!(joined, "{records:?}");
    let records = regate.decisions(1).await;
    assert_eq!(
        records[0]["tools_list"],
        serde_json::json!({"listed": 3, "hidden": 1})
    );
}

#[tokio::test]
async fn a_failing_visibility_query_hides_the_tool_and_other_requests_pass_untouched() {
    let failing = format!(
        "{POLICY}\n# send_email's grant lookup fails outright.\ntool_visible if {{\n\tinput.mcp.tool == \"send_email\"\n\tto_number(\"lots\") > 0\n}}\n"
    );
    let setup = Setup::new(&[("authz.rego", &failing)]);
    let upstream = Scripted::start(|_, body| {
        let call: serde_json::Value = serde_json::from_slice(body).unwrap();
        match call["method"].as_str() {
            Some("tools/list") => scripted::json(&scripted::tools_result(1, LISTED)),
            // Any other call's result is passed on as the upstream wrote it.
            _ => scripted::json(&scripted::tools_result(2, LISTED)),
        }
    })
    .await;
    let regate = setup
        .start(
            &upstream.url(),
            &[QUERY[0], QUERY[1], "--strict-builtin-errors"],
        )
        .await;
    let mut executor = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;
    let (_, _, body) = list_tools(&mut executor, 1).await;
    let result: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(names(&result), ["search", "read_doc"]);

    let call =
        r#"{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "search"}}"#;
    let req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(bytes::Bytes::from_static(call.as_bytes()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let (status, _, body) = send(&mut executor, req).await;
    assert_eq!(status, 200);
    let result: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(names(&result), LISTED);
}

/// A stream the client resumes with `GET` and `Last-Event-ID` carries no call for regate to
/// read, yet the server may replay a `tools/list` result on it: filtered all the same.
#[tokio::test]
async fn a_resumed_stream_replaying_a_list_is_filtered_too() {
    let resuming = format!("{POLICY}\nallow if input.attributes.request.http.method == \"GET\"\n");
    let setup = Setup::new(&[("authz.rego", &resuming)]);
    let upstream = Scripted::start(|_, _| {
        let text = format!(
            "event: message\r\nid: 7\r\ndata: {}\r\n\r\n",
            scripted::tools_result(5, LISTED)
        );
        scripted::answer("text/event-stream", text)
    })
    .await;
    let regate = setup.start(&upstream.url(), QUERY).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let req = http::Request::builder()
        .method("GET")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::ACCEPT, "text/event-stream")
        .header("last-event-id", "6")
        .body(
            Full::new(bytes::Bytes::new())
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let (status, _, body) = send(&mut client, req).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec())
        .unwrap()
        .replace("\r\n", "\n");
    let messages = scripted::event_messages(&text);
    assert_eq!(messages.len(), 1, "{text}");
    assert_eq!(names(&messages[0]), ["search", "read_doc"]);
}

/// In audit mode a batch whose first call is denied is forwarded whole: a `tools/list` later
/// in it is filtered all the same.
#[tokio::test]
async fn in_audit_mode_a_list_behind_a_denied_call_is_filtered() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Scripted::start(|_, _| {
        let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": []}});
        scripted::json(&serde_json::json!([
            call,
            scripted::tools_result(2, LISTED)
        ]))
    })
    .await;
    let mut args = QUERY.to_vec();
    args.extend(["--mode", "audit"]);
    let regate = setup.start(&upstream.url(), &args).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let batch = serde_json::json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "send_email", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ])
    .to_string();
    let req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(bytes::Bytes::from(batch))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let (status, _, body) = send(&mut client, req).await;
    assert_eq!(status, 200);
    let answered: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(names(&answered[1]), ["search", "read_doc"]);
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["would_deny"], true);
}
