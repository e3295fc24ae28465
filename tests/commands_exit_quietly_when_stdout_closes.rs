//! `regate policy eval … | head`: a reader that stops early closes the pipe, and the command
//! stops printing without a panic, exiting with its own verdict, as a Unix tool does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const POLICY: &str = "package regate.authz\n\nimport rego.v1\n\n\
                      default allow := false\n\nallow if input.method == \"GET\"\n";

#[test]
fn policy_eval_exits_quietly_when_its_reader_stops_after_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/authz.rego"), POLICY).unwrap();
    // Printed back with --show-input: far more than a pipe holds, so the command is still
    // writing when the reader goes.
    let input = serde_json::json!({"method": "GET", "padding": "x".repeat(4 << 20)});
    let input_file = dir.path().join("input.json");
    std::fs::write(&input_file, input.to_string()).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(["policy", "eval", "--show-input", "--policies"])
        .arg(dir.path().join("policies"))
        .arg("--input")
        .arg(&input_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "{");
    drop(reader);

    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    // The decision's own exit code: allow.
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
