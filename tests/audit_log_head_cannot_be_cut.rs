//! Cutting the head of a decision log up to a restart's checkpoint does not pass for a log
//! that starts there: `regate audit verify` calls it a break unless `--allow-new-chain` says
//! the file was rotated by copying.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;

/// Run regate on `setup` (appending to its decisions.log), send `n` requests and stop it once
/// their records are written.
async fn run_once(setup: &Setup, n: usize) {
    let upstream = Upstream::start().await;
    let before =
        records_in(&std::fs::read_to_string(setup.path("decisions.log")).unwrap_or_default()).len();
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(setup, &setup.ca.client(SUMMARIZER)).await;
    for i in 0..n {
        get(&mut client, &format!("/docs/{i}")).await;
    }
    regate.decisions(before + n).await;
    regate.stop().await;
}

fn lines(setup: &Setup) -> Vec<String> {
    std::fs::read_to_string(setup.path("decisions.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn verify(file: &std::path::Path, extra: &[&str]) -> (Option<i32>, String) {
    let name = file.display().to_string();
    let mut args = vec!["audit", "verify", name.as_str()];
    args.extend_from_slice(extra);
    let out = regate_command(&args);
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn a_log_cut_up_to_a_restart_checkpoint_is_a_break_unless_allowed() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    run_once(&setup, 3).await;
    run_once(&setup, 3).await;
    let log = lines(&setup);
    assert_eq!(log.len(), 8);
    let restart: serde_json::Value = serde_json::from_str(&log[4]).unwrap();
    assert_eq!(restart["event"], "chain_checkpoint");
    assert!(restart["previous_chain"].is_string(), "{restart}");
    let (code, out) = verify(&setup.path("decisions.log"), &[]);
    assert_eq!(code, Some(0), "{out}");

    // The attack: delete everything before the restart, so the log starts at its checkpoint.
    let headless = setup.path("headless.log");
    std::fs::write(&headless, format!("{}\n", log[4..].join("\n"))).unwrap();
    let (code, out) = verify(&headless, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("broken: ") && out.contains("headless.log:1: the log starts at a checkpoint"),
        "{out}"
    );
    assert!(!out.contains("intact"), "{out}");

    // A file rotated by copying at a restart looks the same; the operator can say so.
    let (code, out) = verify(&headless, &["--allow-new-chain"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: ") && out.contains("headless.log:1: the log starts at a checkpoint"),
        "{out}"
    );
    assert!(out.contains("intact: 4 records"), "{out}");
}
