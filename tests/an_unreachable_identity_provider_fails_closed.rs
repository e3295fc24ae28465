//! A provider that is down never widens access. regate starts while its identity provider
//! is down (startup does not fail), but is not ready (`/readyz` 503) and refuses that
//! issuer's tokens (`issuer_unavailable`) until the keys arrive; once the provider stops
//! answering, its last good keys are used up to `--jwks-max-staleness`, and then its tokens
//! are refused again. The provider is npm's `oidc-provider`, over HTTPS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/oidc.rs"]
mod oidc;

use std::time::Duration;

use common::*;
use oidc::{free_port, OidcProvider};

const MCP: &str = "https://mcp.example.org/mcp";

const POLICY: &str = r#"package regate.authz

default allow := false

allow if input.delegation.subject == "agent"
"#;

/// regate trusting the provider at `https://127.0.0.1:{port}` by discovery.
async fn regate_trusting(setup: &Setup, upstream: &Upstream, port: u16, extra: &[&str]) -> Regate {
    let issuer = format!("https://127.0.0.1:{port}");
    let ca = setup.path("idp-ca.pem").display().to_string();
    let mut flags = vec![
        "--delegation-issuer",
        &issuer,
        "--delegation-discovery",
        "--delegation-ca",
        &ca,
        "--delegation-audience",
        MCP,
        "--delegation-algorithm",
        "ES256",
    ];
    flags.extend_from_slice(extra);
    setup.start(&upstream.url(), &flags).await
}

async fn call(client: &mut Http1, token: &str) -> (u16, String) {
    let mut req = request("GET", "/mcp", b"");
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (status, _, body) = send(client, req).await;
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn regate_starts_unready_while_the_provider_is_down_and_is_ready_once_it_answers() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let idp_ca = Ca::new("identity provider CA");
    std::fs::write(setup.path("idp-ca.pem"), &idp_ca.pem).unwrap();
    let upstream = Upstream::start().await;
    let port = free_port();
    let regate = regate_trusting(&setup, &upstream, port, &[]).await;

    let (status, body) = admin_get(regate.admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains(&format!("https://127.0.0.1:{port}")),
        "{body}"
    );
    // A token that regate cannot check yet is not let through.
    let agent = setup.ca.client(SUMMARIZER);
    let mut client = regate.http1(&setup, &agent).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": format!("https://127.0.0.1:{port}"), "sub": "agent", "aud": MCP, "exp": now + 600,
    });
    let unchecked = sign_jws("ES256", "some-kid", &claims, &signing_keys()["ec256"]);
    let (status, body) = call(&mut client, &unchecked).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("issuer_unavailable"), "{body}");
    assert!(upstream.requests().is_empty());

    let idp = OidcProvider::start(setup.dir.path(), &idp_ca, &[MCP], port);
    let ready = eventually(Duration::from_secs(30), || async {
        admin_get(regate.admin, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready, "regate became ready once the provider answered");
    let token = idp.token(MCP, "tools:read").await;
    assert_eq!(call(&mut client, &token).await.0, 200);
}

#[tokio::test]
async fn keys_older_than_the_maximum_staleness_are_not_used() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let idp_ca = Ca::new("identity provider CA");
    std::fs::write(setup.path("idp-ca.pem"), &idp_ca.pem).unwrap();
    let upstream = Upstream::start().await;
    let idp = OidcProvider::start(setup.dir.path(), &idp_ca, &[MCP], 0);
    let regate =
        regate_trusting(&setup, &upstream, idp.port, &["--jwks-max-staleness", "3s"]).await;
    let ready = eventually(Duration::from_secs(20), || async {
        admin_get(regate.admin, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready);
    let agent = setup.ca.client(SUMMARIZER);
    let mut client = regate.http1(&setup, &agent).await;
    let token = idp.token(MCP, "tools:read").await;
    assert_eq!(call(&mut client, &token).await.0, 200);

    idp.stop();
    // The same token, once the last good keys are too old: refused, with the reason.
    let mut last = (0, String::new());
    for _ in 0..300 {
        last = call(&mut client, &token).await;
        if last.0 == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last.0, 401, "{}", last.1);
    assert!(last.1.contains("issuer_unavailable"), "{}", last.1);
    let recorded = eventually(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&regate.decisions).unwrap_or_default();
        records_in(&text)
            .iter()
            .any(|r| r["reason"] == "issuer_unavailable" && r["http_status"] == 401)
    })
    .await;
    assert!(recorded, "the refusal is recorded with its reason");
    let (_, status) = admin_get(regate.admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let issuer = &status["delegation"]["issuers"][0];
    assert_eq!(issuer["usable"], false);
    assert!(issuer["last_error"].is_string(), "{issuer}");
    // Stale keys refuse tokens; they do not take regate out of the load balancer.
    assert_eq!(admin_get(regate.admin, "/readyz").await.0, 200);
}
