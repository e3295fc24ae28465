//! A policy that fails to compile is reported by file, line and column, never by quoting its
//! source: /status, the reload error on stderr and the startup error name where to look and
//! leave out what the line holds (a policy may hold secrets). A failure that no longer
//! describes the files (the good policy was put back) is cleared from /status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::Duration;

const SECRET: &str = "hunter2-SECRET-TOKEN";

/// A syntax error on line 5, the line that holds the secret.
fn broken_policy() -> String {
    format!(
        "package regate.authz\n\ndefault allow := false\n\nallow if {{ input.x == \"{SECRET}\" +  }}\n"
    )
}

/// Whether `text` holds `authz.rego:LINE:COL:` for some column.
fn names_file_line_and_column(text: &str, line: u32) -> bool {
    let needle = format!("authz.rego:{line}:");
    text.match_indices(&needle).any(|(i, _)| {
        let rest = &text[i + needle.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with(':')
    })
}

async fn status(admin: std::net::SocketAddr) -> serde_json::Value {
    let (code, body) = admin_get(admin, "/status").await;
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_reload_is_reported_by_location_and_cleared_when_the_good_policy_returns() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let mut args = setup.args(&upstream.url());
    // Only SIGHUP reloads, so every reload here is one this test asked for.
    args.extend(["--watch", "false", "--reload-interval", "0"].map(String::from));
    let process = Process::start(&args, &[]);
    let admin = process.admin.expect("an admin listener");
    let mut client = process.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut client, "/docs/a").await.0, 200);
    let before = status(admin).await;
    let revision = before["policy"]["revision"].clone();
    assert!(revision.as_str().is_some_and(|r| r.starts_with("sha256:")));
    assert_eq!(before["reloads"]["policy"]["last_result"], "none");

    let policy = setup.path("policies/authz.rego");
    replace_file(&policy, &broken_policy());
    process.hangup();
    let failed = eventually(Duration::from_secs(10), || async {
        status(admin).await["reloads"]["policy"]["last_error"].is_string()
    })
    .await;
    let after_broken = status(admin).await;
    assert!(failed, "the broken push was not reported: {after_broken}");
    assert_eq!(after_broken["reloads"]["policy"]["last_result"], "failure");
    let error = after_broken["reloads"]["policy"]["last_error"]
        .as_str()
        .unwrap();
    assert!(
        names_file_line_and_column(error, 5),
        "/status does not name file:line:col: {error}"
    );
    assert!(
        !error.contains(SECRET),
        "/status quotes the policy source: {error}"
    );
    assert_eq!(after_broken["policy"]["revision"], revision);
    let logged = eventually(Duration::from_secs(10), || {
        let stderr = process.stderr();
        async move { stderr.contains("policy reload failed") }
    })
    .await;
    let stderr = process.stderr();
    assert!(logged, "no reload error on stderr:\n{stderr}");
    assert!(
        names_file_line_and_column(&stderr, 5),
        "stderr does not name file:line:col:\n{stderr}"
    );
    assert!(
        !stderr.contains(SECRET),
        "stderr quotes the policy source:\n{stderr}"
    );
    // The last good policy still decides.
    assert_eq!(get(&mut client, "/docs/a").await.0, 200);

    // The exact bytes that are running come back: nothing is reloaded, and the recorded
    // failure no longer describes anything.
    replace_file(&policy, ALLOW_DOCS);
    process.hangup();
    let cleared = eventually(Duration::from_secs(10), || async {
        status(admin).await["reloads"]["policy"]["last_error"].is_null()
    })
    .await;
    let settled = status(admin).await;
    assert!(cleared, "the old failure is still reported: {settled}");
    assert_ne!(settled["reloads"]["policy"]["last_result"], "failure");
    assert_eq!(settled["policy"]["revision"], revision);
    assert_eq!(settled["reloads"]["policy"]["successes"], 0);
    assert_eq!(settled["reloads"]["policy"]["failures"], 1);
    assert_eq!(get(&mut client, "/docs/a").await.0, 200);
    assert_eq!(get(&mut client, "/admin").await.0, 403);
    assert!(!process.stderr().contains(SECRET));
}

#[test]
fn a_broken_policy_at_startup_is_named_by_location_without_its_source() {
    let setup = Setup::new(&[("authz.rego", &broken_policy())]);
    let args = setup.args("http://127.0.0.1:1");
    let mut argv = vec!["run"];
    argv.extend(args.iter().map(String::as_str));
    let out = regate_command(&argv);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        names_file_line_and_column(&stderr, 5),
        "the startup error does not name file:line:col:\n{stderr}"
    );
    assert!(
        !stderr.contains(SECRET),
        "the startup error quotes the policy source:\n{stderr}"
    );
}
