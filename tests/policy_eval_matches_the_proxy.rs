//! `regate policy eval` answers what the running proxy answers for the same request: the
//! same input document reaches the same policy, and the decision is read the same way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

/// Echoes what the policy saw into headers, so any difference in `input` shows as a
/// difference in the decision.
const ECHO: &str = r#"package regate.authz

default allow := {"allowed": false, "reason": "no_rule"}

seen := {
	"x-echo-method": input.attributes.request.http.method,
	"x-echo-path": input.attributes.request.http.path,
	"x-echo-segments": concat("/", input.parsed_path),
	"x-echo-query": json.marshal(input.parsed_query),
	"x-echo-peer": input.peer.spiffe_id,
	"x-echo-serial": input.peer.serial,
	"x-echo-not-after": input.peer.not_after,
	"x-echo-principal": input.attributes.source.principal,
	"x-echo-env": input.context.env,
	"x-echo-team": input.attributes.request.http.headers["x-team"],
	"x-echo-proto": input.attributes.request.http.headers["x-forwarded-proto"],
	"x-echo-host": input.attributes.request.http.host,
	"x-echo-protocol": input.attributes.request.http.protocol,
}

allow := {"allowed": true, "reason": "echo", "headers": seen} if {
	input.attributes.request.http.method == "GET"
}

allow := {"allowed": false, "reason": "no_deletes", "http_status": 405, "headers": seen} if {
	input.attributes.request.http.method == "DELETE"
}
"#;

fn eval(setup: &Setup, cert: &str, method: &str, path: &str) -> serde_json::Value {
    let policies = setup.path("policies").display().to_string();
    let out = regate_command(&[
        "policy",
        "eval",
        "--policies",
        &policies,
        "--method",
        method,
        "--path",
        path,
        "--header",
        "x-team: blue",
        "--cert",
        cert,
        "--context",
        "env=test",
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    // 0 for an allow, 1 for a deny: never 2, an error.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

fn echo_headers(headers: &http::HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-echo-"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().into()))
        .collect()
}

#[tokio::test]
async fn policy_eval_gives_the_same_answer_as_the_running_proxy() {
    let setup = Setup::new(&[("authz.rego", ECHO)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--context", "env=test"])
        .await;
    let client_id = setup.ca.client(SUMMARIZER);
    let cert = setup.path("client.pem");
    std::fs::write(&cert, &client_id.chain_pem).unwrap();
    let cert = cert.display().to_string();
    let mut client = regate.http1(&setup, &client_id).await;

    // An allow: the policy's headers reach the application.
    let target = "/docs/a%20b/c?x=1&x=2&flag";
    let mut req = request("GET", target, b"");
    req.headers_mut()
        .insert("x-team", http::HeaderValue::from_static("blue"));
    let (status, _, _) = send(&mut client, req).await;
    assert_eq!(status, 200);
    let proxied = echo_headers(&upstream.requests()[0].headers);
    assert_eq!(proxied.len(), 13, "{proxied:?}");

    let evaluated = eval(&setup, &cert, "GET", target);
    assert_eq!(evaluated["allowed"], true);
    assert_eq!(evaluated["reason"], "echo");
    assert_eq!(evaluated["http_status"], serde_json::Value::Null);
    assert_eq!(
        evaluated["headers"].as_object().unwrap(),
        &proxied,
        "policy eval saw a different input than the proxy"
    );

    // A deny with the policy's own status: the client gets the policy's headers.
    let mut req = request("DELETE", "/docs/a", b"");
    req.headers_mut()
        .insert("x-team", http::HeaderValue::from_static("blue"));
    let (status, headers, _) = send(&mut client, req).await;
    assert_eq!(status, 405);
    let evaluated_deny = eval(&setup, &cert, "DELETE", "/docs/a");
    assert_eq!(evaluated_deny["allowed"], false);
    assert_eq!(evaluated_deny["http_status"], 405);
    assert_eq!(
        evaluated_deny["headers"].as_object().unwrap(),
        &echo_headers(&headers)
    );

    // The decision records agree on reason and revision.
    let records = regate.decisions(2).await;
    assert_eq!(records[0]["reason"], evaluated["reason"]);
    assert_eq!(records[1]["reason"], evaluated_deny["reason"]);
    assert_eq!(records[0]["policy_revision"], evaluated["policy_revision"]);
    assert!(evaluated["eval_ns"].as_u64().unwrap() > 0);

    // A target the proxy refuses before any policy is refused the same way.
    let (status, _, _) = get(&mut client, "/docs/../admin").await;
    assert_eq!(status, 400);
    let refused = eval(&setup, &cert, "GET", "/docs/../admin");
    assert_eq!(refused["http_status"], 400);
    assert_eq!(refused["reason"], "invalid_path");
    let records = regate.decisions(3).await;
    assert_eq!(records[2]["reason"], refused["reason"]);
    regate.stop().await;
}

#[test]
fn policy_eval_reads_a_whole_input_document_from_stdin() {
    use std::io::Write;
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let policies = setup.path("policies").display().to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(["policy", "eval", "--policies", &policies, "--input", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::json!({
        "peer": {"spiffe_id": SUMMARIZER},
        "attributes": {"request": {"http": {"method": "GET"}}},
        "parsed_path": ["docs", "x"],
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let decision: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["allowed"], true);
    assert_eq!(decision["reason"], "allowed");
    assert!(decision["policy_revision"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}
