//! An upstream's `text/event-stream` response (MCP's Streamable HTTP answers with one) is
//! streamed, never buffered: each event reaches the client while the upstream still holds the
//! stream open, whether regate only forwards it or filters a `tools/list` result in it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::scripted::{self, Scripted};
use common::*;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};

const POLICY: &str = r#"package regate.authz

import rego.v1

allow := true

tool_visible if input.mcp.tool != "send_email"
"#;

type Senders = Arc<Mutex<Vec<http_body_util::channel::Sender<bytes::Bytes, std::io::Error>>>>;

/// An upstream answering every request with an event stream the test writes.
async fn streaming_upstream() -> (Scripted, Senders) {
    let senders: Senders = Arc::default();
    let kept = senders.clone();
    let upstream = Scripted::start(move |_, _| {
        let (tx, answer) = scripted::stream();
        kept.lock().unwrap().push(tx);
        answer
    })
    .await;
    (upstream, senders)
}

async fn open_stream(client: &mut Http1, method: &str) -> hyper::body::Incoming {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": method,
        "params": {"name": "count", "arguments": {}}})
    .to_string();
    let req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream")
        .body(
            Full::new(bytes::Bytes::from(body))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    client.ready().await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.send_request(req))
        .await
        .expect("no response head while the stream is open")
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body()
}

/// Read from `body` until `want` has arrived (bounded in time), returning all read.
async fn read_until(body: &mut hyper::body::Incoming, seen: &mut String, want: &str) {
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains(want) {
            let frame = body.frame().await.expect("the stream ended").unwrap();
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "{want:?} did not arrive while the upstream held the stream: {seen:?}"
    );
}

/// The upstream's one stream, once it has been opened.
async fn sender(
    senders: &Senders,
) -> http_body_util::channel::Sender<bytes::Bytes, std::io::Error> {
    assert!(
        eventually(Duration::from_secs(10), || async {
            !senders.lock().unwrap().is_empty()
        })
        .await
    );
    senders.lock().unwrap().pop().unwrap()
}

#[tokio::test]
async fn the_first_event_reaches_the_client_before_the_upstream_ends_the_stream() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let (upstream, senders) = streaming_upstream().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let mut body = open_stream(&mut client, "tools/call").await;
    let mut tx = sender(&senders).await;
    let progress = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/progress",
        "params": {"progressToken": 1, "progress": 1}});
    tx.send_data(scripted::event(&progress)).await.unwrap();
    let mut seen = String::new();
    // The upstream still holds the stream open: only a streamed event can be here now.
    read_until(&mut body, &mut seen, "notifications/progress").await;
    let done = serde_json::json!({"jsonrpc": "2.0", "id": 9, "result": {"content": []}});
    tx.send_data(scripted::event(&done)).await.unwrap();
    drop(tx);
    read_until(&mut body, &mut seen, r#""id":9"#).await;
}

#[tokio::test]
async fn a_filtered_tools_list_stream_passes_each_event_before_the_upstream_ends_it() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let (upstream, senders) = streaming_upstream().await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--mcp-tools-list-query", "data.regate.authz.tool_visible"],
        )
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let mut body = open_stream(&mut client, "tools/list").await;
    let mut tx = sender(&senders).await;
    let progress = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/message",
        "params": {"level": "info", "data": "listing"}});
    tx.send_data(scripted::event(&progress)).await.unwrap();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "notifications/message").await;
    // The result, filtered, arrives while the upstream still holds the stream, too.
    let result = scripted::tools_result(9, &["search", "send_email"]);
    tx.send_data(scripted::event(&result)).await.unwrap();
    read_until(&mut body, &mut seen, r#""id":9"#).await;
    assert!(!seen.contains("send_email"), "{seen}");
    assert!(seen.contains(r#""name":"search""#), "{seen}");
    drop(tx);
}
