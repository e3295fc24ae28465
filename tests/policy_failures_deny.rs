//! Regate fails closed: an evaluation error, a timeout or an undefined result is a deny,
//! logged with its own reason, and credentials never reach any log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

const FRAGILE: &str = r#"package regate.authz

# Errors at evaluation time only for /boom: adding a number to the header string.
allow if {
	input.parsed_path[0] == "boom"
	x := input.attributes.request.http.headers.authorization + 1
	x > 0
}

# The same with a header the operator names with --redact-header, and an x-*-token one.
allow if {
	input.parsed_path[0] == "boom-session"
	x := input.attributes.request.http.headers["x-session"] + 1
	x > 0
}

allow if {
	input.parsed_path[0] == "boom-token"
	x := input.attributes.request.http.headers["x-api-token"] + 1
	x > 0
}

# Runs far past any time limit for /slow.
allow if {
	input.parsed_path[0] == "slow"
	some x in numbers.range(0, 20000)
	some y in numbers.range(0, 20000)
	x + y < 0
}

allow if input.parsed_path[0] == "ok"

# A debugging print of a credential: its output must never reach stderr.
allow if {
	print("debug authorization:", input.attributes.request.http.headers.authorization)
	input.parsed_path[0] == "never"
}
"#;

#[tokio::test]
async fn evaluation_error_is_a_deny() {
    let setup = Setup::new(&[("authz.rego", FRAGILE)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let mut req = request("GET", "/boom", b"");
    req.headers_mut()
        .insert("authorization", "Bearer abc".parse().unwrap());
    let (status, _, body) = send(&mut client, req).await;
    assert_eq!(status, 403);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["reason"], "policy_error");
    // The same connection still works for a request the policy allows.
    assert_eq!(get(&mut client, "/ok").await.0, 200);
    assert_eq!(upstream.requests().len(), 1);
    let records = regate.decisions(2).await;
    assert_eq!(records[0]["reason"], "policy_error");
    assert_eq!(records[0]["allowed"], false);
    regate.stop().await;
}

#[tokio::test]
async fn runaway_policy_is_stopped_and_denied() {
    let setup = Setup::new(&[("authz.rego", FRAGILE)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--policy-timeout", "50ms"])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let (status, _, body) = get(&mut client, "/slow").await;
    assert_eq!(status, 403);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["reason"], "policy_timeout");
    assert!(upstream.requests().is_empty());
    regate.stop().await;
}

#[tokio::test]
async fn undefined_result_is_a_deny() {
    let setup = Setup::new(&[("authz.rego", FRAGILE)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let (status, _, body) = get(&mut client, "/other").await;
    assert_eq!(status, 403);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["reason"], "policy_undefined");
    assert!(upstream.requests().is_empty());
    regate.stop().await;
}

#[tokio::test]
async fn credentials_never_appear_in_any_log() {
    let setup = Setup::new(&[("authz.rego", FRAGILE)]);
    let upstream = Upstream::start().await;
    let mut args = setup.args(&upstream.url());
    args.extend(["--redact-header".to_string(), "x-session".to_string()]);
    let process = Process::start(&args, &[("RUST_LOG", "trace")]);
    let mut client = process.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    // Failure lines are rate limited to one a second: each failing path is sent until its
    // line is out, so every one of them is logged.
    let mut logged = 0;
    for path in ["/boom", "/boom-session", "/boom-token", "/ok"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            send(&mut client, credentialed(path)).await;
            let failures = process.stderr().matches("policy evaluation failed").count();
            if path == "/ok" || failures > logged || std::time::Instant::now() > deadline {
                logged = failures;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let decisions = wait_for_lines(&setup.path("decisions.log"), 4).await;
    let stderr = process.stderr();
    assert!(stderr.contains("policy evaluation failed"), "{stderr}");
    drop(process);
    let decisions = serde_json::to_string(&decisions).unwrap();
    assert_eq!(
        stderr.matches("policy evaluation failed").count(),
        3,
        "{stderr}"
    );
    for secret in [
        "s3cr3t-t0ken-value",
        "c00kie-m0nster",
        "pr0xy-s3cr3t",
        "s3ss10n-v4lue",
        "t0k3n-in-a-header",
    ] {
        assert!(
            !stderr.contains(secret),
            "{secret} leaked into stderr:\n{stderr}"
        );
        assert!(
            !decisions.contains(secret),
            "{secret} leaked into decisions"
        );
    }
    // The upstream got the credentials it is owed; proxy-authorization is for regate only.
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers["authorization"],
        "Bearer s3cr3t-t0ken-value"
    );
    assert!(!seen[0].headers.contains_key("proxy-authorization"));
}

/// A request to `path` carrying every kind of credential header.
fn credentialed(
    path: &str,
) -> http::Request<http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>> {
    let mut req = request("GET", path, b"");
    let h = req.headers_mut();
    h.insert(
        "authorization",
        "Bearer s3cr3t-t0ken-value".parse().unwrap(),
    );
    h.insert("cookie", "session=c00kie-m0nster".parse().unwrap());
    h.insert("proxy-authorization", "Basic pr0xy-s3cr3t".parse().unwrap());
    h.insert("x-session", "s3ss10n-v4lue".parse().unwrap());
    h.insert("x-api-token", "t0k3n-in-a-header".parse().unwrap());
    req
}
