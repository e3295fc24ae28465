//! A policy set that fails only on the made-up request regate evaluates at load (`GET /`, no
//! query string) still loads: real requests carry what the sample lacks. The failure is shown
//! in `/status`, and a request that fails the same way is denied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

/// Two values for one rule when the query string is empty: an evaluation error on the
/// sample request, and on any real request without a query string.
const NEEDS_A_QUERY: &str = r#"package regate.authz

import rego.v1

mode := "read" if count(input.parsed_query) == 0

mode := "write" if count(input.parsed_query) == 0

mode := input.parsed_query.mode[0] if count(input.parsed_query) > 0

allow if mode == "read"
"#;

#[tokio::test]
async fn a_set_failing_only_on_the_sample_request_loads_and_says_so() {
    let setup = Setup::new(&[("authz.rego", NEEDS_A_QUERY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;

    let (code, body) = admin_get(regate.admin, "/status").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let error = status["policy"]["sample_evaluation_error"].as_str();
    assert!(error.is_some_and(|e| !e.is_empty()), "{status}");
    assert_eq!(status["policy"]["strict_builtin_errors"], false);

    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let (status, _, _) = get(&mut client, "/docs/readme?mode=read").await;
    assert_eq!(status, 200);
    let (status, _, _) = get(&mut client, "/docs/readme").await;
    assert_eq!(status, 403);
    let records = regate.decisions(2).await;
    assert_eq!(records[1]["reason"], "policy_error");
    assert_eq!(upstream.requests().len(), 1);
    regate.stop().await;
}
