//! `--mode audit` forwards what the policy denies (or fails on) and records it as
//! `would_deny`, with the policy's reason and none of its deny answer; TLS, trust domains,
//! revocations, request checks and delegation tokens still refuse. `/status` says which mode
//! is on, and regate warns at start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

const POLICY: &str = r#"package regate.authz

default allow := {
    "allowed": false,
    "reason": "not_docs",
    "http_status": 418,
    "body": "no tea here",
    "headers": {"x-deny": "yes"},
    "response_headers_to_add": {"x-deny-response": "yes"},
}

allow := {"allowed": true, "headers": {"x-granted": "yes"}} if {
    startswith(input.attributes.request.http.path, "/docs/")
}

# A malformed answer: a policy_invalid_result deny.
allow := {"allowed": "perhaps"} if input.attributes.request.http.path == "/broken"
"#;

async fn status_json(regate: &Regate) -> serde_json::Value {
    let (code, body) = admin_get(regate.admin, "/status").await;
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn a_request_the_policy_denies_is_forwarded_and_recorded_as_would_deny() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &["--mode", "audit"]).await;
    assert_eq!(status_json(&regate).await["mode"], "audit");
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let (status, headers, body) = get(&mut client, "/api/reports").await;
    assert_eq!(status, 200);
    assert!(body.starts_with(b"ok "), "{body:?}");
    assert_eq!(headers["x-upstream"], "yes");
    assert!(headers.get("x-deny").is_none() && headers.get("x-deny-response").is_none());
    let (status, _, _) = get(&mut client, "/broken").await;
    assert_eq!(status, 200);
    let (status, _, _) = get(&mut client, "/docs/a").await;
    assert_eq!(status, 200);

    let received = upstream.requests();
    let uris: Vec<_> = received.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, ["/api/reports", "/broken", "/docs/a"]);
    // Forwarded as it came: nothing of the deny reaches the upstream; an allow applies as
    // ever.
    assert!(received[0].headers.get("x-deny").is_none());
    assert!(received[0].headers.get("x-granted").is_none());
    assert_eq!(received[2].headers["x-granted"], "yes");

    let records = regate.decisions(3).await;
    let denied = &records[0];
    assert_eq!(denied["allowed"], true);
    assert_eq!(denied["would_deny"], true);
    assert_eq!(denied["reason"], "not_docs");
    assert_eq!(denied["http_status"], 200);
    assert_eq!(denied["upstream_status"], 200);
    assert_eq!(records[1]["would_deny"], true);
    assert_eq!(records[1]["reason"], "policy_invalid_result");
    assert_eq!(records[2]["allowed"], true);
    assert!(records[2].get("would_deny").is_none(), "{}", records[2]);

    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"regate_would_deny_total{reason="not_docs"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"regate_would_deny_total{reason="policy_invalid_result"} 1"#),
        "{metrics}"
    );
    regate.stop().await;
}

#[tokio::test]
async fn enforce_is_the_default_and_denies() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    assert_eq!(status_json(&regate).await["mode"], "enforce");
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let (status, headers, body) = get(&mut client, "/api/reports").await;
    assert_eq!(status, 418);
    assert_eq!(&body[..], b"no tea here");
    assert_eq!(headers["x-deny"], "yes");
    assert!(upstream.requests().is_empty());
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["allowed"], false);
    assert!(records[0].get("would_deny").is_none());
    regate.stop().await;
}

#[tokio::test]
async fn audit_mode_still_refuses_foreign_trust_domains_revoked_identities_and_bad_requests() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--mode", "audit", "--trust-domain", "example.org"],
        )
        .await;
    let mut foreign = regate
        .http1(&setup, &setup.ca.client("spiffe://other.example/ns/x/sa/y"))
        .await;
    assert_eq!(get(&mut foreign, "/docs/a").await.0, 403);

    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut client, "/docs/a/../../admin").await.0, 400);
    assert_eq!(get(&mut client, "/api/a").await.0, 200);
    let body = format!(r#"{{"spiffe_id": "{SUMMARIZER}", "reason": "audit or not"}}"#);
    let (status, created) = admin_send(regate.admin, "POST", "/revocations", &body).await;
    assert_eq!(status, 201, "{created}");
    // The kill switch takes effect at once, whatever the mode and the policy.
    let mut again = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut again, "/api/a").await.0, 403);

    let uris: Vec<_> = upstream.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris, ["/api/a"]);
    // Four requests and the revocation's own event record.
    let records: Vec<_> = regate
        .decisions(5)
        .await
        .into_iter()
        .filter(|r| r.get("event").is_none())
        .collect();
    let reasons: Vec<_> = records.iter().map(|r| r["reason"].clone()).collect();
    assert_eq!(
        reasons,
        [
            "untrusted_trust_domain",
            "invalid_path",
            "not_docs",
            "revoked"
        ]
    );
    for record in [&records[0], &records[1], &records[3]] {
        assert_eq!(record["allowed"], false, "{record}");
        assert!(record.get("would_deny").is_none(), "{record}");
    }
    assert_eq!(records[2]["would_deny"], true);
    regate.stop().await;
}

#[tokio::test]
async fn audit_mode_still_refuses_a_delegation_token_that_does_not_verify() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let keys = signing_keys();
    std::fs::write(
        setup.path("jwks.json"),
        jwks(&[public_jwk(&keys["ec256"], "k1", "ES256")]),
    )
    .unwrap();
    let jwks_path = setup.path("jwks.json").display().to_string();
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &[
                "--mode",
                "audit",
                "--delegation-issuer",
                "https://issuer.example",
                "--delegation-audience",
                "regate",
                "--delegation-jwks",
                &jwks_path,
            ],
        )
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let mut req = request("GET", "/docs/a", b"");
    req.headers_mut()
        .insert("authorization", "Bearer not.a.token".parse().unwrap());
    let (status, _, _) = send(&mut client, req).await;
    assert_eq!(status, 401);
    assert!(upstream.requests().is_empty());
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["allowed"], false);
    assert!(records[0].get("would_deny").is_none());
    regate.stop().await;
}

#[test]
fn audit_mode_is_announced_with_a_warning_at_start() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let mut args = setup.args("http://127.0.0.1:9");
    args.extend(["--mode".into(), "audit".into()]);
    let process = Process::start(&args, &[]);
    let stderr = process.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("--mode audit"))
        .unwrap_or_else(|| panic!("no warning in:\n{stderr}"));
    assert!(line.contains("WARN"), "{line}");
    process.stop();
}

#[test]
fn an_unknown_mode_is_a_startup_error() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let mut args = setup.args("http://127.0.0.1:9");
    args.extend(["--mode".into(), "permissive".into()]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
        .arg("run")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(r#"mode: "permissive" is not enforce or audit"#),
        "{stderr}"
    );
}
