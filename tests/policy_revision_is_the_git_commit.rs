//! Policies synced from git name their commit: with the directory layout git-sync (v4)
//! keeps, a commit becomes the `policy_revision` of decision records and `/status` when the
//! sync swaps its symlink, and the new commit's rules decide from then on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use http::StatusCode;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=policy author",
            "-c",
            "user.email=a@example.org",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What git-sync does after fetching a commit: check it out as `.worktrees/<commit>` and
/// swap the `current` link to it in one rename.
fn publish(root: &Path, commit: &str) {
    let worktree = format!(".worktrees/{commit}");
    git(
        root,
        &["worktree", "add", "-q", "--detach", &worktree, commit],
    );
    let tmp = root.join("current.tmp");
    std::os::unix::fs::symlink(&worktree, &tmp).unwrap();
    std::fs::rename(&tmp, root.join("current")).unwrap();
}

/// The decision records written so far.
fn records_so_far(regate: &Regate) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(&regate.decisions).unwrap_or_default();
    // The writer may be halfway through a line: only whole lines count.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r.get("event").is_none())
        .collect()
}

const DOCS_ONLY: &str = r#"package regate.authz

default allow := false

allow if input.parsed_path[0] == "docs"
"#;

const DOCS_AND_REPORTS: &str = r#"package regate.authz

default allow := false

allow if input.parsed_path[0] == "docs"

allow if input.parsed_path[0] == "reports"
"#;

#[tokio::test]
async fn a_synced_commit_becomes_the_policy_revision_in_records_and_status() {
    let setup = Setup::new(&[("authz.rego", DOCS_ONLY)]);
    let upstream = Upstream::start().await;
    // The policy repository, as git-sync keeps it under --root.
    let root = setup.path("git");
    std::fs::create_dir_all(root.join("policies")).unwrap();
    std::fs::write(root.join("policies/authz.rego"), DOCS_ONLY).unwrap();
    git(&root, &["init", "-q"]);
    git(&root, &["add", "."]);
    git(&root, &["commit", "-q", "-m", "docs only"]);
    let first = git(&root, &["rev-parse", "HEAD"]);
    publish(&root, &first);

    let policies = root.join("current/policies").display().to_string();
    let mut args = setup.args(&upstream.url());
    let at = args.iter().position(|a| a == "--policies").unwrap();
    args[at + 1] = policies;
    let regate = Regate::start(args, setup.path("decisions.log")).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let (status, _, _) = get(&mut client, "/reports/1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["policy_revision"], format!("git:{first}"));
    let (_, body) = admin_get(regate.admin, "/status").await;
    let status_doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_doc["policy"]["revision"], format!("git:{first}"));
    assert!(status_doc["policy"]["content_hash"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    // A policy author's commit reaches the pod: git-sync checks it out and swaps the link.
    std::fs::write(root.join("policies/authz.rego"), DOCS_AND_REPORTS).unwrap();
    git(&root, &["commit", "-q", "-am", "reports too"]);
    let second = git(&root, &["rev-parse", "HEAD"]);
    publish(&root, &second);

    let allowed = wait_for_status(&mut client, "/reports/1", 200).await;
    assert!(
        allowed.is_some(),
        "the new commit's rules decide after the swap"
    );
    // Every record names the commit that decided it: denials the first, the allow the second.
    let mut records = Vec::new();
    let written = eventually(Duration::from_secs(10), || {
        records = records_so_far(&regate);
        std::future::ready(records.iter().any(|r| r["allowed"] == true))
    })
    .await;
    assert!(written);
    for record in &records {
        let commit = if record["allowed"] == true {
            &second
        } else {
            &first
        };
        assert_eq!(
            record["policy_revision"],
            format!("git:{commit}"),
            "{record}"
        );
    }
    let (_, body) = admin_get(regate.admin, "/status").await;
    let status_doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_doc["policy"]["revision"], format!("git:{second}"));

    // A commit that leaves the policy files as they were still becomes the revision.
    std::fs::write(root.join("README.md"), "policies for the reports API\n").unwrap();
    git(&root, &["add", "README.md"]);
    git(&root, &["commit", "-q", "-m", "readme"]);
    let third = git(&root, &["rev-parse", "HEAD"]);
    publish(&root, &third);
    let named = eventually(Duration::from_secs(10), || async {
        let (_, body) = admin_get(regate.admin, "/status").await;
        body.contains(&format!("git:{third}"))
    })
    .await;
    assert!(
        named,
        "the revision follows the commit even when the files did not change"
    );
    regate.stop().await;
}
