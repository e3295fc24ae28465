//! `regate policy replay` on a decision log recorded through real mTLS with
//! `--decision-log-input`: the same policy flips nothing; a stricter one flips exactly the
//! requests it now denies, and the run fails unless `--expect` names them. The recorded
//! inputs hold no credential and no body.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

/// summarizer: anything under /docs; executor: GET under /reports.
const POLICY: &str = r#"package regate.authz

default allow := false

allow if {
	input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/summarizer"
	input.parsed_path[0] == "docs"
}

allow if {
	input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/executor"
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "reports"
}
"#;

/// The same, but summarizer may only GET, and never under /docs/private.
const STRICTER: &str = r#"package regate.authz

default allow := false

allow if {
	input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/summarizer"
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "docs"
	input.parsed_path[1] != "private"
}

allow if {
	input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/executor"
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "reports"
}
"#;

const TOKEN: &str = "Bearer replay-secret-token-4711";
const BODY_SECRET: &str = "body-secret-7f3a9c";

fn with(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> http::Request<http_body_util::combinators::BoxBody<Bytes, std::io::Error>> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        .unwrap()
}

/// Run regate with recorded inputs, send a mix of allowed and denied requests, and return
/// the setup (its decisions.log is complete: regate has stopped).
async fn recorded_log() -> Setup {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--decision-log-input"])
        .await;
    let summarizer = setup.ca.client(SUMMARIZER);
    let executor = setup.ca.client(EXECUTOR);
    let mut s = regate.http1(&setup, &summarizer).await;
    let mut e = regate.http1(&setup, &executor).await;
    let sent = [
        (
            send(&mut s, with("GET", "/docs/public", &[], String::new()))
                .await
                .0,
            200,
        ),
        (
            send(
                &mut s,
                with(
                    "GET",
                    "/docs/private/plan",
                    &[("authorization", TOKEN)],
                    String::new(),
                ),
            )
            .await
            .0,
            200,
        ),
        (
            send(
                &mut s,
                with(
                    "POST",
                    "/docs/notes?draft=1",
                    &[("content-type", "application/json")],
                    format!(r#"{{"note": "{BODY_SECRET}"}}"#),
                ),
            )
            .await
            .0,
            200,
        ),
        (
            send(&mut e, with("GET", "/reports/1", &[], String::new()))
                .await
                .0,
            200,
        ),
        (
            send(&mut e, with("DELETE", "/reports/1", &[], String::new()))
                .await
                .0,
            403,
        ),
        (
            send(&mut e, with("GET", "/docs/public", &[], String::new()))
                .await
                .0,
            403,
        ),
    ];
    for (i, (got, want)) in sent.iter().enumerate() {
        assert_eq!(got.as_u16(), *want, "request {i}");
    }
    regate.decisions(6).await;
    regate.stop().await;
    setup
}

fn replay(setup: &Setup, policies: &str, extra: &[&str]) -> std::process::Output {
    let log = setup.path("decisions.log").display().to_string();
    let mut args = vec!["policy", "replay", "--log", &log, "--policies", policies];
    args.extend_from_slice(extra);
    regate_command(&args)
}

fn stricter(setup: &Setup) -> String {
    let dir = setup.path("stricter");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("authz.rego"), STRICTER).unwrap();
    dir.display().to_string()
}

#[tokio::test]
async fn the_same_policy_flips_nothing_and_passes() {
    let setup = recorded_log().await;
    let policies = setup.path("policies").display().to_string();
    let out = replay(&setup, &policies, &["--format", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["replayed"], 6);
    assert_eq!(report["unchanged"], 6);
    assert_eq!(report["allow_to_deny"]["count"], 0);
    assert_eq!(report["deny_to_allow"]["count"], 0);
    assert_eq!(report["reason_changed"]["count"], 0);
    assert_eq!(report["events"]["chain_checkpoint"], 1);
    assert_eq!(report["unexpected"], 0);
}

#[tokio::test]
async fn a_stricter_policy_lists_exactly_the_flipped_requests_and_fails() {
    let setup = recorded_log().await;
    let policies = stricter(&setup);

    let out = replay(&setup, &policies, &["--format", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["allow_to_deny"]["count"], 2);
    assert_eq!(report["deny_to_allow"]["count"], 0);
    assert_eq!(report["unexpected"], 2);
    let mut flipped: Vec<(String, String, String)> = report["allow_to_deny"]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["spiffe_id"].as_str().unwrap().to_string(),
                f["method"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    flipped.sort();
    assert_eq!(
        flipped,
        vec![
            (SUMMARIZER.into(), "GET".into(), "/docs/private/plan".into()),
            (
                SUMMARIZER.into(),
                "POST".into(),
                "/docs/notes?draft=1".into()
            ),
        ]
    );

    // The text report names them too.
    let out = replay(&setup, &policies, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("allow-to-deny: 2 (0 expected)"), "{text}");
    assert!(
        text.contains(&format!("{SUMMARIZER} GET /docs/private/plan")),
        "{text}"
    );

    // Stated as intended, the same flips pass: all of a kind, or each by method and path.
    let out = replay(&setup, &policies, &["--expect", "allow-to-deny"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = replay(
        &setup,
        &policies,
        &[
            "--expect",
            "allow-to-deny:GET /docs/private/*",
            "--expect",
            "allow-to-deny:POST /docs/*",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // One of the two left unstated still fails.
    let out = replay(
        &setup,
        &policies,
        &["--expect", "allow-to-deny:GET /docs/private/*"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // An expectation of the other kind accepts nothing here.
    let out = replay(&setup, &policies, &["--expect", "deny-to-allow"]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn recorded_inputs_hold_no_credential_and_no_body() {
    let setup = recorded_log().await;
    let log = std::fs::read_to_string(setup.path("decisions.log")).unwrap();
    assert!(
        !log.contains("replay-secret-token-4711"),
        "a credential was recorded"
    );
    assert!(
        log.contains(&format!("sha256:{}", sha256_hex(TOKEN.as_bytes()))),
        "the credential's digest was not recorded:\n{log}"
    );
    assert!(!log.contains(BODY_SECRET), "a body was recorded:\n{log}");
    let records = records_in(&log);
    let with_input = records.iter().filter(|r| r.get("input").is_some()).count();
    assert_eq!(with_input, 6, "{log}");
    let post = records.iter().find(|r| r["method"] == "POST").unwrap();
    assert!(post["input"].get("parsed_body").is_none());
    assert!(post["input"]["attributes"]["request"]["http"]
        .get("body")
        .is_none());
    assert_eq!(
        post["input"]["attributes"]["request"]["http"]["method"],
        "POST"
    );
}

#[tokio::test]
async fn a_line_that_is_not_json_is_an_error() {
    let setup = recorded_log().await;
    let path = setup.path("decisions.log");
    let mut log = std::fs::read_to_string(&path).unwrap();
    log.push_str("not json\n");
    std::fs::write(&path, log).unwrap();
    let policies = setup.path("policies").display().to_string();
    let out = replay(&setup, &policies, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("decisions.log:8: not a JSON record"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
