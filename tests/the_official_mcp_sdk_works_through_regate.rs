//! regate in front of an MCP server and an MCP client that nobody here wrote: the official
//! Python SDK (PyPI `mcp`, 2026-07-28's Streamable HTTP) on both sides. The SDK's server runs
//! behind regate on 127.0.0.1 (`tests/fixtures/mcp/server.py`); the SDK's client, presenting
//! a client certificate made here, lists the tools (and sees only those the example policy
//! grants it), calls them (a streaming one too), and is refused the one it may not call.
//! `.ci/mcp-sdk` installs the SDK into `target/mcp-venv`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example policy of policies/examples/mcp_tools, with grants for the fixture's tools.
const DATA: &str = r#"{
  "agents": {
    "spiffe://example.org/ns/agents/sa/summarizer": {"tools": ["search", "read_doc", "count"]}
  },
  "arguments": {"search": ["q"], "read_doc": ["path"], "count": ["n"], "send_email": ["to"]},
  "scopes": {}
}"#;

/// The SDK's Python: `REGATE_MCP_PYTHON`, else the venv `.ci/mcp-sdk` makes in the target
/// directory.
fn python() -> PathBuf {
    if let Ok(path) = std::env::var("REGATE_MCP_PYTHON") {
        return PathBuf::from(path);
    }
    // target/debug/regate -> target/
    let target = PathBuf::from(env!("CARGO_BIN_EXE_regate"))
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf();
    let python = target.join("mcp-venv/bin/python");
    assert!(
        python.exists(),
        "the MCP SDK is not installed at {}: run .ci/mcp-sdk (CI does)",
        python.display()
    );
    python
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mcp")
        .join(name)
}

/// A child process, killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The SDK's server, once it says it listens: its port.
fn start_server(args: &[&str]) -> (Killed, u16) {
    let mut child = Command::new(python())
        .arg(fixture("server.py"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("listening on ") {
                let _ = tx.send(port.trim().parse::<u16>().ok());
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .ok()
        .flatten()
        .expect("the SDK's server did not start");
    (Killed(child), port)
}

/// Run the SDK's client against `url` (bounded in time); what it printed.
fn run_client(setup: &Setup, url: &str) -> serde_json::Value {
    let client = setup.ca.client(SUMMARIZER);
    std::fs::write(setup.path("agent.pem"), &client.chain_pem).unwrap();
    std::fs::write(setup.path("agent.key"), &client.key_pem).unwrap();
    let child = Command::new(python())
        .arg(fixture("client.py"))
        .arg(url)
        .arg(setup.path("ca.pem"))
        .arg(setup.path("agent.pem"))
        .arg(setup.path("agent.key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the SDK's client did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
}

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
        move || (run_client(&setup, &setup_url), setup)
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
