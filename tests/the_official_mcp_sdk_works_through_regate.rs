//! regate in front of an MCP server and an MCP client that nobody here wrote: the official
//! Python SDK (PyPI `mcp`, 2026-07-28's Streamable HTTP) on both sides. The SDK's server runs
//! behind regate on 127.0.0.1 (`tests/fixtures/mcp/server.py`); the SDK's client, presenting
//! a client certificate made here, lists the tools (and sees only those the example policy
//! grants it), calls them (a streaming one too), and is refused the one it may not call.
//! `.ci/mcp-sdk` installs the SDK into `target/mcp-venv`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/mcp_sdk.rs"]
mod mcp_sdk;

use common::*;
use mcp_sdk::{run_client, start_server};

/// The example policy of policies/examples/mcp_tools, with grants for the fixture's tools.
const DATA: &str = r#"{
  "agents": {
    "spiffe://example.org/ns/agents/sa/summarizer": {"tools": ["search", "read_doc", "count"]}
  },
  "arguments": {"search": ["q"], "read_doc": ["path"], "count": ["n"], "send_email": ["to"]},
  "scopes": {}
}"#;

async fn through_regate(server_args: &[&str]) -> (serde_json::Value, Vec<serde_json::Value>) {
    let setup = Setup::new(&[
        (
            "examples/mcp_tools/policy.rego",
            include_str!("../policies/examples/mcp_tools/policy.rego"),
        ),
        ("examples/mcp_tools/data.json", DATA),
    ]);
    let (_server, port) = start_server(server_args);
    let regate = setup
        .start(
            &format!("http://127.0.0.1:{port}"),
            &[
                "--query",
                "data.examples.mcp_tools.allow",
                "--mcp-tools-list-query",
                "data.examples.mcp_tools.tool_visible",
                "--mcp-allowed-origin",
                "https://app.example.org",
            ],
        )
        .await;
    let url = format!("https://localhost:{}/mcp", regate.addr.port());
    let seen = tokio::task::spawn_blocking({
        let setup_url = url.clone();
        move || (run_client(&setup, &setup_url, &[]), setup)
    })
    .await
    .unwrap();
    let (seen, _setup) = seen;
    let records = regate.decisions(5).await;
    (seen, records)
}

fn assert_the_agent_saw_only_its_tools(seen: &serde_json::Value, records: &[serde_json::Value]) {
    assert_eq!(
        seen["tools"],
        serde_json::json!(["count", "read_doc", "search"]),
        "{seen}"
    );
    assert_eq!(seen["search"]["result"], "results for rego", "{seen}");
    // The streaming tool's progress came through as events, then its result.
    assert_eq!(
        seen["progress"],
        serde_json::json!([1.0, 2.0, 3.0]),
        "{seen}"
    );
    assert_eq!(seen["count"]["result"], "counted to 3", "{seen}");
    // Refused by regate (the record says so below): the SDK raised, and no result came.
    assert!(seen["send_email"]["refused"].is_string(), "{seen}");
    let listing = records
        .iter()
        .find(|r| r["tools_list"].is_object())
        .unwrap_or_else(|| panic!("no tools/list record: {records:?}"));
    assert_eq!(
        listing["tools_list"],
        serde_json::json!({"listed": 4, "hidden": 1})
    );
    assert!(
        records
            .iter()
            .any(|r| r["reason"] == "tool_not_granted" && r["http_status"] == 403),
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_client_lists_and_calls_tools_through_regate_with_streamed_lists() {
    let (seen, records) = through_regate(&["--stream-lists"]).await;
    // The list came as an event stream: the server's log line before it is proof.
    assert_eq!(seen["logs"], serde_json::json!(["listing tools"]), "{seen}");
    assert_the_agent_saw_only_its_tools(&seen, &records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_client_lists_and_calls_tools_through_regate_with_json_lists() {
    let (seen, records) = through_regate(&[]).await;
    assert_eq!(seen["logs"], serde_json::json!([]), "{seen}");
    assert_the_agent_saw_only_its_tools(&seen, &records);
}
