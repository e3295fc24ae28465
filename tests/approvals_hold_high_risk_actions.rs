//! Approvals: a policy's deny may ask for a person's approval. regate answers 403
//! `approval_required` with an approval request (for JSON-RPC, an error carrying it in
//! `data`), which approvers list and approve (`GET`/`POST /approvals`, or `regate approve`);
//! the agent repeats the request with the token in `x-regate-approval`, and the policy sees
//! `input.approval`. The token approves exactly that action (its digest), once; a token for
//! another action, an expired or forged one is refused before the policy. Every step is a
//! decision-log event. Over HTTP/1.1 and HTTP/2, in a JSON-RPC batch, and in audit mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use http_body_util::{BodyExt, Full};

/// The executor may mail the company freely; anything else needs a person from
/// group:oncall.
const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := false

allow if input.mcp.tool == "search"

internal if endswith(input.mcp.arguments.to, "@example.org")

allow if {
	input.mcp.tool == "send_email"
	internal
}

allow := {"allowed": false, "reason": "external_email", "approval": {"ttl": "15m", "approvers": "group:oncall"}} if {
	input.mcp.tool == "send_email"
	not internal
	not input.approval
}

allow := {"allowed": true, "reason": "approved"} if {
	input.mcp.tool == "send_email"
	not internal
	input.approval.approver
}
"#;

type Req = http::Request<http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>>;

fn email(id: u32, to: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"send_email","arguments":{{"to":"{to}","subject":"hello"}}}}}}"#
    )
}

fn post(body: &str, approval: Option<&str>) -> Req {
    let mut req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(token) = approval {
        req = req.header("x-regate-approval", token);
    }
    req.body(
        Full::new(bytes::Bytes::from(body.to_string()))
            .map_err(|e| match e {})
            .boxed(),
    )
    .unwrap()
}

/// A setup whose regate trusts a local approval key written beside it.
fn approving_setup() -> (Setup, String) {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let path = setup.path("approval.key");
    std::fs::write(&path, key.serialize_pem()).unwrap();
    (setup, path.display().to_string())
}

async fn admin_post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, text) = admin_send(addr, "POST", path, body).await;
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// The digest of an action as docs/securing-ai-agents.md says to compute it.
fn digest_of(spiffe_id: &str, body: &str) -> String {
    let call: serde_json::Value = serde_json::from_str(body).unwrap();
    let canonical = serde_json::json!({
        "v": 1,
        "spiffe_id": spiffe_id,
        "delegation_subject": null,
        "method": "POST",
        "path": "/mcp",
        "action": {"tool": call["params"]["name"], "arguments": call["params"]["arguments"]},
    })
    .to_string();
    format!("sha256:{}", sha256_hex(canonical.as_bytes()))
}

#[tokio::test]
async fn an_external_email_waits_for_a_person_and_the_approval_is_good_once_for_that_email() {
    let (setup, key) = approving_setup();
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--approval-local-key", &key])
        .await;
    let mut agent = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;

    // Internal mail goes; external mail is held.
    assert_eq!(
        send(&mut agent, post(&email(1, "team@example.org"), None))
            .await
            .0,
        200
    );
    let external = email(2, "someone@elsewhere.example");
    let (status, headers, body) = send(&mut agent, post(&external, None)).await;
    assert_eq!(status, 403);
    assert_eq!(headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["id"], 2);
    assert_eq!(body["error"]["code"], -32042);
    let asked = &body["error"]["data"]["approval_request"];
    assert_eq!(asked["reason"], "external_email");
    assert_eq!(asked["approvers"][0], "group:oncall");
    assert_eq!(asked["asked"]["tool"], "send_email");
    assert_eq!(asked["asked"]["spiffe_id"], EXECUTOR);
    // An approver can recompute the digest from what was asked.
    assert_eq!(asked["digest"], digest_of(EXECUTOR, &external));
    assert_eq!(upstream.requests().len(), 1);

    // Approvers see it, and one approves it.
    let (status, listed) = admin_get(regate.admin, "/approvals").await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["approval_requests"][0]["id"], asked["id"]);
    let id = asked["id"].as_str().unwrap();
    let (status, granted) = admin_post(
        regate.admin,
        &format!("/approvals/{id}"),
        r#"{"approver": "alice"}"#,
    )
    .await;
    assert_eq!(status, 200, "{granted}");
    let token = granted["token"].as_str().unwrap().to_string();

    // The same e-mail with the approval goes (the policy allows it only with an approver);
    // the token itself never reaches the application.
    let (status, _, _) = send(&mut agent, post(&external, Some(&token))).await;
    assert_eq!(status, 200);
    let seen = upstream.requests();
    let last = seen.last().unwrap();
    assert!(last.headers.get("x-regate-approval").is_none());

    // Once.
    let (status, _, body) = send(&mut agent, post(&external, Some(&token))).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("approval_used"));
    // Not for another e-mail.
    let other = email(3, "someone-else@elsewhere.example");
    let (status, _, body) = send(&mut agent, post(&other, Some(&token))).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("approval_mismatch"));
    assert_eq!(upstream.requests().len(), 2);

    // Five requests, and the events: requested, granted, used, refused twice.
    let records = regate.decisions(10).await;
    let events: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
    for event in [
        "approval_requested",
        "approval_granted",
        "approval_used",
        "approval_refused",
    ] {
        assert!(events.contains(&event), "{event} missing from {events:?}");
    }
    let approved = records.iter().find(|r| r["reason"] == "approved").unwrap();
    assert_eq!(approved["approval"]["approver"], "alice");
    let required = records
        .iter()
        .find(|r| r["reason"] == "approval_required")
        .unwrap();
    assert_eq!(required["approval_request"]["id"], asked["id"]);
    regate.stop().await;
}

#[tokio::test]
async fn expired_forged_and_cli_signed_tokens_are_judged_before_the_policy() {
    let (setup, key) = approving_setup();
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--approval-local-key", &key])
        .await;
    let mut agent = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;
    let external = email(7, "x@elsewhere.example");
    let digest = digest_of(EXECUTOR, &external);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let local = |path: &str| {
        regate::approvals::token::LocalSigner::new(
            regate::audit::signing::SigningKey::load(std::path::Path::new(path)).unwrap(),
        )
    };

    // Expired an hour ago.
    let stale = local(&key).mint(
        &digest,
        "alice",
        None,
        std::time::Duration::from_secs(60),
        now - 3600,
    );
    let (status, _, body) = send(&mut agent, post(&external, Some(&stale))).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("approval_expired"));
    // Signed with a key regate does not trust, under the local issuer's name.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    std::fs::write(setup.path("other.key"), other.serialize_pem()).unwrap();
    let forged = local(&setup.path("other.key").display().to_string()).mint(
        &digest,
        "mallory",
        None,
        std::time::Duration::from_secs(600),
        now,
    );
    let (status, _, body) = send(&mut agent, post(&external, Some(&forged))).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("approval_invalid"));
    assert!(upstream.requests().is_empty());

    // `regate approve` signs one that works.
    let out = regate_command(&[
        "approve",
        "--key",
        &key,
        "--digest",
        &digest,
        "--approver",
        "bob",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(send(&mut agent, post(&external, Some(&token))).await.0, 200);
    // Three requests, and an event each: refused, refused, used.
    let records = regate.decisions(6).await;
    let approved = records.iter().find(|r| r["reason"] == "approved").unwrap();
    assert_eq!(approved["approval"]["approver"], "bob");
    regate.stop().await;
}

#[tokio::test]
async fn over_http2_a_batch_with_one_call_needing_approval_waits_whole_and_says_which() {
    let (setup, key) = approving_setup();
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--approval-local-key", &key])
        .await;
    let mut agent = regate.http2(&setup, &setup.ca.client(EXECUTOR)).await;
    let search = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}"#;
    let batch = format!("[{search},{}]", email(2, "x@elsewhere.example"));
    let resp = agent.send_request(post(&batch, None)).await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["id"], serde_json::Value::Null);
    assert_eq!(body["error"]["data"]["call"], 1);
    let id = body["error"]["data"]["approval_request"]["id"]
        .as_str()
        .unwrap();
    let (_, granted) = admin_post(
        regate.admin,
        &format!("/approvals/{id}"),
        r#"{"approver": "carol"}"#,
    )
    .await;
    let token = granted["token"].as_str().unwrap();
    let resp = agent.send_request(post(&batch, Some(token))).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.requests().len(), 1);
    regate.stop().await;
}

#[tokio::test]
async fn in_audit_mode_what_would_have_been_asked_is_recorded_and_the_request_goes_on() {
    let (setup, key) = approving_setup();
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--approval-local-key", &key, "--mode", "audit"],
        )
        .await;
    let mut agent = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;
    let (status, _, _) = send(&mut agent, post(&email(1, "x@elsewhere.example"), None)).await;
    assert_eq!(status, 200);
    assert_eq!(upstream.requests().len(), 1);
    let records = regate.decisions(1).await;
    let record = records.iter().find(|r| r["event"].is_null()).unwrap();
    assert_eq!(record["would_deny"], true);
    assert_eq!(record["reason"], "external_email");
    assert!(record["approval_request"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    // Nothing is left waiting for approvers: audit mode asks no one.
    let (_, listed) = admin_get(regate.admin, "/approvals").await;
    assert!(listed.contains("\"approval_requests\":[]"), "{listed}");
    regate.stop().await;
}

/// An approval service of its own: its keys fetched from a `jwks_uri` (and fetched again when
/// it rotates), and every approval request posted to its webhook, retried when the hook fails.
#[tokio::test]
async fn an_approval_service_is_told_of_requests_by_webhook_and_signs_with_keys_regate_fetches() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let keys = signing_keys();
    let served = Arc::new(Mutex::new(jwks(&[public_jwk(
        &keys["ec256"],
        "k1",
        "ES256",
    )])));
    let posts = Arc::new(AtomicUsize::new(0));
    let (jwks_now, posted) = (served.clone(), posts.clone());
    let service = common::scripted::Scripted::start(move |head, _| {
        match head.uri.path() {
            "/keys" => {
                common::scripted::answer("application/json", jwks_now.lock().unwrap().clone())
            }
            // The hook fails the first time: regate must try again.
            _ => {
                let status = match posted.fetch_add(1, Ordering::SeqCst) {
                    0 => 503,
                    _ => 204,
                };
                let mut answer = common::scripted::answer("text/plain", "");
                *answer.status_mut() = http::StatusCode::from_u16(status).unwrap();
                answer
            }
        }
    })
    .await;
    let config = setup.path("approvals.yaml");
    std::fs::write(
        &config,
        format!(
            "approvals:\n  issuers:\n    - issuer: https://approvals.example.org\n      \
             jwks_uri: {0}/keys\n      algorithms: [ES256]\n  webhook: {0}/hooks\n",
            service.url()
        ),
    )
    .unwrap();
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--config", config.to_str().unwrap()])
        .await;
    let mut agent = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;

    let external = email(21, "x@elsewhere.example");
    let (status, _, body) = send(&mut agent, post(&external, None)).await;
    assert_eq!(status, 403);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let asked = &error["error"]["data"]["approval_request"];
    let digest = asked["digest"].as_str().unwrap().to_string();
    assert_eq!(digest, digest_of(EXECUTOR, &external));

    // The hook hears of it: refused once, then delivered on the retry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let hooked = loop {
        let hooks: Vec<_> = service
            .received()
            .into_iter()
            .filter(|r| !r.body.is_empty())
            .collect();
        if hooks.len() >= 2 || std::time::Instant::now() > deadline {
            break hooks;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(hooked.len(), 2, "one failed delivery, then one retry");
    let delivered: serde_json::Value = serde_json::from_slice(&hooked[1].body).unwrap();
    assert_eq!(delivered["approval_request"]["id"], asked["id"]);
    assert_eq!(delivered["approval_request"]["digest"], digest.as_str());

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let approve = |alg: &str, kid: &str, jwk: &serde_json::Value, digest: &str, jti: &str| {
        sign_jws(
            alg,
            kid,
            &serde_json::json!({
                "iss": "https://approvals.example.org", "sub": "alice", "iat": now,
                "exp": now + 600, "jti": jti, "regate_approval_digest": digest,
            }),
            jwk,
        )
    };
    let token = approve("ES256", "k1", &keys["ec256"], &digest, "a-1");
    let (status, _, _) = send(&mut agent, post(&external, Some(&token))).await;
    assert_eq!(status, 200);
    assert_eq!(upstream.requests().len(), 1);

    // The service rotates to a new key: the first token under it makes regate fetch again.
    *served.lock().unwrap() = jwks(&[
        public_jwk(&keys["ec256"], "k1", "ES256"),
        public_jwk(&keys["ec384"], "k2", "ES384"),
    ]);
    let second = email(22, "y@elsewhere.example");
    let rotated = approve(
        "ES384",
        "k2",
        &keys["ec384"],
        &digest_of(EXECUTOR, &second),
        "a-2",
    );
    let (status, _, body) = send(&mut agent, post(&second, Some(&rotated))).await;
    // ES384 is not among the issuer's algorithms: refused, however good the key.
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("approval_invalid"));
    *served.lock().unwrap() = jwks(&[
        public_jwk(&keys["ec256"], "k1", "ES256"),
        public_jwk(&keys["ec256"], "k3", "ES256"),
    ]);
    let rotated = approve(
        "ES256",
        "k3",
        &keys["ec256"],
        &digest_of(EXECUTOR, &second),
        "a-3",
    );
    let (status, _, body) = send(&mut agent, post(&second, Some(&rotated))).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(upstream.requests().len(), 2);
    regate.stop().await;
}

/// Approved actions are also charged to a budget: one a second.
const APPROVED_WITHIN_BUDGET: &str = r#"package regate.authz

import rego.v1

default allow := {"allowed": false, "reason": "external_email", "approval": {"approvers": "group:oncall"}}

allow := {"allowed": true, "reason": "approved", "rate_limits": [{"key": "email", "limit": 1, "per": "1s", "name": "email"}]} if input.approval.approver
"#;

#[tokio::test]
async fn an_approved_request_refused_by_a_budget_keeps_its_approval_for_the_retry() {
    let setup = Setup::new(&[("authz.rego", APPROVED_WITHIN_BUDGET)]);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let key_path = setup.path("approval.key");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--approval-local-key", key_path.to_str().unwrap()],
        )
        .await;
    let mut agent = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;
    let signer = regate::approvals::token::LocalSigner::new(
        regate::audit::signing::SigningKey::load(&key_path).unwrap(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let approve = |body: &str| {
        let digest = digest_of(EXECUTOR, body);
        signer.mint(
            &digest,
            "alice",
            None,
            std::time::Duration::from_secs(600),
            now,
        )
    };
    let (first, second) = (
        email(31, "a@elsewhere.example"),
        email(32, "b@elsewhere.example"),
    );
    let (token_1, token_2) = (approve(&first), approve(&second));
    assert_eq!(send(&mut agent, post(&first, Some(&token_1))).await.0, 200);
    // The budget is spent for this second: the approved request is a 429, its token unspent.
    let (status, _, _) = send(&mut agent, post(&second, Some(&token_2))).await;
    assert_eq!(status, 429);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (status, _, _) = send(&mut agent, post(&second, Some(&token_2))).await;
        if status != 429 || std::time::Instant::now() > deadline {
            break status;
        }
    };
    assert_eq!(
        status, 200,
        "the retry within budget used the same approval"
    );
    assert_eq!(upstream.requests().len(), 2);
    regate.stop().await;
}
