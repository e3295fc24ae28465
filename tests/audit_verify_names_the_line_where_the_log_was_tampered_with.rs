//! `regate audit verify` on decision logs written by real runs: an untouched log passes,
//! including across a restart that appends to the same file; a deleted, edited or reordered
//! line fails, named by its line number; an anchored head catches a cut tail.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;

/// Run regate on `setup` (appending to its decisions.log) and send `n` requests, some
/// allowed, some denied; return the admin's `/status` decision_log object from before stop.
async fn run_once(setup: &Setup, n: usize) -> serde_json::Value {
    let upstream = Upstream::start().await;
    let before = requests_in(setup);
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(setup, &setup.ca.client(SUMMARIZER)).await;
    for i in 0..n {
        let path = match i % 3 {
            2 => format!("/admin/{i}"),
            _ => format!("/docs/{i}"),
        };
        get(&mut client, &path).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while requests_in(setup) < before + n {
        assert!(
            std::time::Instant::now() < deadline,
            "the records were not written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Every whole line is chained; a line cut short is not.
    let written = lines(setup)
        .iter()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count() as u64;
    // The writer publishes the head once the lines are written.
    let (status, published) = loop {
        let (_, body) = admin_get(regate.admin, "/status").await;
        let status =
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["decision_log"].clone();
        if status["seq"] == written || std::time::Instant::now() > deadline {
            break (status.clone(), status["seq"] == written);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(published, "{status}");
    regate.stop().await;
    status
}

/// Request records in the log so far; a line cut short is not one.
fn requests_in(setup: &Setup) -> usize {
    std::fs::read_to_string(setup.path("decisions.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r.get("request_id").is_some() && r.get("event").is_none())
        .count()
}

fn verify(files: &[&std::path::Path], extra: &[&str]) -> (Option<i32>, String) {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut args = vec!["audit", "verify"];
    args.extend(names.iter().map(String::as_str));
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

fn lines(setup: &Setup) -> Vec<String> {
    std::fs::read_to_string(setup.path("decisions.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A copy of the log with `lines`, one a line.
fn tampered(setup: &Setup, name: &str, lines: &[String]) -> std::path::PathBuf {
    let path = setup.path(name);
    std::fs::write(&path, format!("{}\n", lines.join("\n"))).unwrap();
    path
}

#[tokio::test]
async fn an_untouched_log_verifies_and_every_line_is_chained() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let status = run_once(&setup, 6).await;
    let log = lines(&setup);
    assert_eq!(log.len(), 7);
    let first: serde_json::Value = serde_json::from_str(&log[0]).unwrap();
    assert_eq!(first["event"], "chain_checkpoint");
    assert_eq!(first["previous_chain"], serde_json::Value::Null);
    for (i, line) in log.iter().enumerate() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["seq"], i as u64 + 1, "{line}");
        assert_eq!(record["chain"].as_str().unwrap().len(), 64, "{line}");
    }
    // The head /status published is the last line's.
    let last: serde_json::Value = serde_json::from_str(&log[6]).unwrap();
    assert_eq!(status["seq"], 7);
    assert_eq!(status["chain_head"], last["chain"]);

    let (code, out) = verify(&[&setup.path("decisions.log")], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("intact: 7 records"), "{out}");
    // Anchored at the head it still verifies.
    let anchor = format!("7:{}", last["chain"].as_str().unwrap());
    let (code, out) = verify(&[&setup.path("decisions.log")], &["--anchor", &anchor]);
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test]
async fn a_deleted_line_is_named_by_the_line_after_it() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    run_once(&setup, 6).await;
    let mut log = lines(&setup);
    log.remove(3);
    let path = tampered(&setup, "deleted.log", &log);
    let (code, out) = verify(&[&path], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("deleted.log:4: seq 5 follows seq 3: seq 4 is missing"),
        "{out}"
    );
}

#[tokio::test]
async fn an_edited_line_is_named() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    run_once(&setup, 6).await;
    let mut log = lines(&setup);
    // A deny turned into an allow after the fact.
    assert!(log[3].contains(r#""allowed":false"#), "{}", log[3]);
    log[3] = log[3].replace(r#""allowed":false"#, r#""allowed":true"#);
    let path = tampered(&setup, "edited.log", &log);
    let (code, out) = verify(&[&path], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("edited.log:4: seq 4: its chain does not follow"),
        "{out}"
    );
}

#[tokio::test]
async fn reordered_lines_are_named() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    run_once(&setup, 6).await;
    let mut log = lines(&setup);
    log.swap(2, 3);
    let path = tampered(&setup, "reordered.log", &log);
    let (code, out) = verify(&[&path], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("reordered.log:3: seq 4 follows seq 2"),
        "{out}"
    );
}

#[tokio::test]
async fn a_cut_tail_is_caught_by_an_anchor() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let status = run_once(&setup, 6).await;
    let mut log = lines(&setup);
    log.truncate(5);
    let path = tampered(&setup, "cut.log", &log);
    // Without an anchor the shorter log is consistent in itself.
    assert_eq!(verify(&[&path], &[]).0, Some(0));
    let anchor = format!(
        "{}:{}",
        status["seq"],
        status["chain_head"].as_str().unwrap()
    );
    let (code, out) = verify(&[&path], &["--anchor", &anchor]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("anchor seq 7 is not in the log"), "{out}");
}

#[tokio::test]
async fn a_restart_appending_to_the_log_links_through_a_checkpoint() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    run_once(&setup, 3).await;
    let before = lines(&setup);
    run_once(&setup, 3).await;
    let log = lines(&setup);
    assert_eq!(log.len(), 8);
    let last_of_first: serde_json::Value = serde_json::from_str(&before[3]).unwrap();
    let restart: serde_json::Value = serde_json::from_str(&log[4]).unwrap();
    assert_eq!(restart["event"], "chain_checkpoint");
    assert_eq!(restart["previous_chain"], last_of_first["chain"]);
    assert_eq!(restart["seq"], 5);
    let (code, out) = verify(&[&setup.path("decisions.log")], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("warning"), "{out}");

    // Deleting the first run's last line breaks the link at the checkpoint.
    let mut cut = log.clone();
    cut.remove(3);
    let path = tampered(&setup, "relinked.log", &cut);
    let (code, out) = verify(&[&path], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("relinked.log:4:"), "{out}");
}

#[tokio::test]
async fn an_unreadable_file_is_exit_2() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let (code, out) = verify(&[&setup.path("nowhere.log")], &[]);
    assert_eq!(code, Some(2), "{out}");
}

#[tokio::test]
async fn a_line_cut_short_by_a_crash_is_a_warning_once_the_restart_links_past_it() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    run_once(&setup, 2).await;
    // What a regate killed in the middle of a write leaves behind.
    let path = setup.path("decisions.log");
    let mut log = std::fs::read_to_string(&path).unwrap();
    log.push_str(r#"{"timestamp":"2026-12-06T20:26:26.34"#);
    std::fs::write(&path, &log).unwrap();
    let (code, out) = verify(&[&path], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("decisions.log:4: the last line is incomplete"),
        "{out}"
    );

    run_once(&setup, 2).await;
    let restart: serde_json::Value = serde_json::from_str(&lines(&setup)[4]).unwrap();
    assert_eq!(restart["event"], "chain_checkpoint");
    let (code, out) = verify(&[&path], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("decisions.log:4: a line cut short"), "{out}");

    // The same cut line anywhere else is a break.
    let mut moved = lines(&setup);
    let cut = moved.remove(3);
    moved.insert(1, cut);
    let path = tampered(&setup, "moved-cut.log", &moved);
    let (code, out) = verify(&[&path], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("moved-cut.log:2: not a chained record"),
        "{out}"
    );
}

#[tokio::test]
async fn deleted_head_lines_and_an_unlinked_new_chain_are_breaks_unless_allowed() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    run_once(&setup, 6).await;
    let log = lines(&setup);

    // The checkpoint and the first records deleted: the log now starts mid-chain.
    let headless = tampered(&setup, "headless.log", &log[3..]);
    let (code, out) = verify(&[&headless], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("headless.log:1: the log starts mid-chain"),
        "{out}"
    );
    // A file rotated by copying looks the same; the operator can say so.
    let (code, out) = verify(&[&headless], &["--allow-new-chain"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("warning:"), "{out}");

    // A second run on a new file starts a chain of its own: read after the first file, the
    // lines before it cannot be proven, so it is a break unless allowed.
    let second = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    run_once(&second, 3).await;
    let first_file = tampered(&setup, "first.log", &log);
    let second_file = tampered(&setup, "second.log", &lines(&second));
    let (code, out) = verify(&[&first_file, &second_file], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("second.log:1: a new chain starts"), "{out}");
    let (code, out) = verify(&[&first_file, &second_file], &["--allow-new-chain"]);
    assert_eq!(code, Some(0), "{out}");

    // seq starts again in the second chain: its anchor is held by its own line, not
    // contradicted by the first chain's line of the same seq.
    let second_line: serde_json::Value = serde_json::from_str(&lines(&second)[1]).unwrap();
    let anchor = format!("2:{}", second_line["chain"].as_str().unwrap());
    let (code, out) = verify(
        &[&first_file, &second_file],
        &["--allow-new-chain", "--anchor", &anchor],
    );
    assert_eq!(code, Some(0), "{out}");
    let wrong = format!("2:{}", "0".repeat(64));
    let (code, out) = verify(
        &[&first_file, &second_file],
        &["--allow-new-chain", "--anchor", &wrong],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("first.log:2: seq 2: its chain is not the anchored"),
        "{out}"
    );
}
