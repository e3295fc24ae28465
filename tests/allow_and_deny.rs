//! The core promise: an allowed request reaches the upstream with regate's identity headers;
//! a denied one gets a problem+json 403 and never reaches it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

#[tokio::test]
async fn allowed_request_reaches_upstream_with_xfcc() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let client_id = setup.ca.client(SUMMARIZER);
    let mut client = regate.http1(&setup, &client_id).await;

    let (status, headers, body) = get(&mut client, "/docs/readme?lang=en").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-upstream"], "yes");
    assert!(body.starts_with(b"ok"));

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/docs/readme?lang=en");
    let xfcc = seen[0].headers["x-forwarded-client-cert"].to_str().unwrap();
    let leaf_hash = sha256_hex(&client_id.chain[0]);
    assert!(
        xfcc.starts_with(&format!("By={SERVER_ID};Hash={leaf_hash};")),
        "{xfcc}"
    );
    assert!(xfcc.contains(&format!(";URI={SUMMARIZER}")), "{xfcc}");
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
    assert!(seen[0].headers.contains_key("x-request-id"));

    let records = regate.decisions(1).await;
    let r = &records[0];
    assert_eq!(r["allowed"], true);
    assert_eq!(r["http_status"], 200);
    assert_eq!(r["upstream_status"], 200);
    assert_eq!(r["spiffe_id"], SUMMARIZER);
    assert_eq!(r["method"], "GET");
    assert_eq!(r["path"], "/docs/readme?lang=en");
    assert_eq!(r["host"], "localhost");
    assert!(r["policy_revision"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(r["eval_ns"].as_u64().unwrap() > 0);
    assert_eq!(
        r["request_id"],
        seen[0].headers["x-request-id"].to_str().unwrap()
    );
    for field in [
        "timestamp",
        "decision_id",
        "serial",
        "reason",
        "duration_ns",
    ] {
        assert!(!r[field].is_null(), "{field} missing in {r}");
    }
    regate.stop().await;
}

#[tokio::test]
async fn denied_request_is_problem_json_and_never_reaches_upstream() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut summarizer = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let mut executor = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;

    let (status, headers, body) =
        send(&mut summarizer, request("DELETE", "/docs/readme", b"")).await;
    assert_eq!(status, 403);
    assert_eq!(headers["content-type"], "application/problem+json");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["status"], 403);
    assert_eq!(doc["title"], "Forbidden");
    assert!(doc["type"].as_str().unwrap().contains("forbidden"));
    assert!(!doc["request_id"].as_str().unwrap().is_empty());
    assert!(doc["detail"].as_str().unwrap().contains("denied"));

    let (status, _, _) = get(&mut executor, "/docs/readme").await;
    assert_eq!(status, 403);
    assert!(
        upstream.requests().is_empty(),
        "a denied request reached the upstream"
    );

    let records = regate.decisions(2).await;
    assert!(records
        .iter()
        .all(|r| r["allowed"] == false && r["http_status"] == 403));
    assert!(records.iter().all(|r| r["upstream_status"].is_null()));
    assert_eq!(records[0]["request_id"], doc["request_id"]);
    regate.stop().await;
}

#[tokio::test]
async fn untrusted_trust_domain_is_denied_before_policy() {
    // This policy would allow anyone; the trust domain check comes first.
    let setup = Setup::new(&[("authz.rego", "package regate.authz\nallow := true\n")]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--trust-domain", "example.org"])
        .await;
    let mut foreign = regate
        .http1(&setup, &setup.ca.client("spiffe://evil.example/ns/x/sa/y"))
        .await;
    let (status, _, body) = get(&mut foreign, "/").await;
    assert_eq!(status, 403);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["reason"], "untrusted_trust_domain");
    let mut local = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut local, "/").await.0, 200);
    assert_eq!(upstream.requests().len(), 1);
    let records = regate.decisions(2).await;
    assert_eq!(records[0]["reason"], "untrusted_trust_domain");
    regate.stop().await;
}

#[tokio::test]
async fn context_labels_and_peer_reach_policy() {
    let policy = r#"package regate.authz
allow if {
	input.context.env == "prod"
	input.peer.trust_domain == "example.org"
	input.peer.path == "/ns/agents/sa/summarizer"
	input.peer.expires_in_seconds > 0
	input.peer.age_seconds >= 0
	count(input.peer.fingerprint_sha256) == 64
	input.attributes.source.principal == input.peer.spiffe_id
	input.attributes.destination.principal == "spiffe://example.org/ns/default/sa/regate"
	input.attributes.request.http.protocol == "HTTP/1.1"
	input.attributes.request.http.scheme == "https"
}
"#;
    let setup = Setup::new(&[("authz.rego", policy)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--context", "env=prod"])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut client, "/anything").await.0, 200);
    regate.stop().await;

    let regate = setup
        .start(&upstream.url(), &["--context", "env=dev"])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut client, "/anything").await.0, 403);
    regate.stop().await;
}
