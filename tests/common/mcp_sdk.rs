//! The official MCP SDK (Python `mcp`, installed by `.ci/mcp-sdk`) as the tests drive it: its
//! Streamable HTTP server (tests/fixtures/mcp/server.py) started on 127.0.0.1, and its client
//! (tests/fixtures/mcp/client.py) run to completion against a URL, with what it printed.
//! Included with `#[path]` by the test files that need it; it does not start regate.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Setup, SUMMARIZER};

/// The SDK's Python: `REGATE_MCP_PYTHON`, else the venv `.ci/mcp-sdk` makes in the target
/// directory.
pub fn python() -> PathBuf {
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
pub struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The SDK's server, once it says it listens: its port.
pub fn start_server(args: &[&str]) -> (Killed, u16) {
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

/// What the server (started with `--requests PATH`) wrote of each HTTP request it received.
pub fn requests_seen(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Run the SDK's client against `url` (bounded in time), presenting a certificate for
/// `SUMMARIZER`, with `extra` arguments after the usual four; what it printed.
pub fn run_client(setup: &Setup, url: &str, extra: &[&str]) -> serde_json::Value {
    let client = setup.ca.client(SUMMARIZER);
    std::fs::write(setup.path("agent.pem"), &client.chain_pem).unwrap();
    std::fs::write(setup.path("agent.key"), &client.key_pem).unwrap();
    let child = Command::new(python())
        .arg(fixture("client.py"))
        .arg(url)
        .arg(setup.path("ca.pem"))
        .arg(setup.path("agent.pem"))
        .arg(setup.path("agent.key"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    // Read both pipes while it runs, so a chatty client cannot fill one and stall.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(child.0.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.0.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the SDK's client did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = out.join().unwrap();
    let err = err.join().unwrap();
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
}
