//! Keys from a real identity provider: npm's `oidc-provider` (not ours) issues JWT access
//! tokens for the MCP resource with the client-credentials grant, and regate finds its JWKS
//! by discovery over HTTPS (the provider's CA given as `ca:`). Its tokens are accepted,
//! forged ones are not; a signing key rotated mid-test is accepted without a restart; and a
//! flood of made-up key ids costs the provider at most one JWKS fetch per interval.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/oidc.rs"]
mod oidc;

use std::time::{Duration, Instant};

use common::*;
use oidc::OidcProvider;

const MCP: &str = "https://mcp.example.org/mcp";
const OTHER: &str = "https://other.example.org/api";

/// Allows the provider's client with `tools:read`, and tells the upstream whom it saw.
const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := false

allow := {"allowed": true, "headers": {"x-seen-subject": input.delegation.subject}} if {
	input.delegation.subject == "agent"
	"tools:read" in input.delegation.scope
}
"#;

struct World {
    setup: Setup,
    upstream: Upstream,
    regate: Regate,
    idp: OidcProvider,
}

/// The provider, and regate trusting it by discovery as the protected resource `MCP`.
async fn world() -> World {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let idp_ca = Ca::new("identity provider CA");
    std::fs::write(setup.path("idp-ca.pem"), &idp_ca.pem).unwrap();
    let idp = OidcProvider::start(setup.dir.path(), &idp_ca, &[MCP, OTHER], 0);
    let config = format!(
        "delegation:\n  issuers:\n    - issuer: {}\n      discovery: true\n      ca: idp-ca.pem\n      \
         algorithms: [ES256]\noauth_resource:\n  resource: {MCP}\n  scopes_supported: [tools:read, tools:call]\n",
        idp.issuer
    );
    std::fs::write(setup.path("regate.yaml"), config).unwrap();
    let upstream = Upstream::start().await;
    let yaml = setup.path("regate.yaml").display().to_string();
    let regate = setup.start(&upstream.url(), &["--config", &yaml]).await;
    let ready = eventually(Duration::from_secs(20), || async {
        admin_get(regate.admin, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready, "{:?}", admin_get(regate.admin, "/readyz").await);
    World {
        setup,
        upstream,
        regate,
        idp,
    }
}

async fn call(client: &mut Http1, token: &str) -> (u16, http::HeaderMap) {
    let mut req = request("GET", "/mcp", b"");
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (status, headers, _) = send(client, req).await;
    (status.as_u16(), headers)
}

/// A token signed with a key of ours, naming `kid`, claiming to be the provider's.
fn forged(issuer: &str, kid: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": issuer, "sub": "agent", "aud": MCP, "exp": now + 600, "iat": now,
        "scope": "tools:read tools:call", "client_id": "agent", "jti": format!("forged-{kid}"),
    });
    sign_jws("ES256", kid, &claims, &signing_keys()["ec256"])
}

/// The kid of a compact JWS.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let bytes = base64url(header);
    let header: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

/// Unpadded base64url, decoded.
fn base64url(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let bits: Vec<u8> = text.bytes().map(value).collect();
    bits.chunks(4)
        .flat_map(|chunk| {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, v)| n | (u32::from(*v) << (18 - 6 * i)));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes[..chunk.len() - 1].to_vec()
        })
        .collect()
}

#[tokio::test]
async fn tokens_the_provider_issues_are_accepted_and_forged_ones_are_refused() {
    let w = world().await;
    let agent = w.setup.ca.client(SUMMARIZER);
    let mut client = w.regate.http1(&w.setup, &agent).await;

    let token = w.idp.token(MCP, "tools:read").await;
    let (status, _) = call(&mut client, &token).await;
    assert_eq!(status, 200);
    let seen = w.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["x-seen-subject"], "agent");
    assert!(
        seen[0].headers.get("authorization").is_none(),
        "never passed upstream"
    );

    // Our own key, under the provider's key id, or under a key id it never had.
    for kid in [kid_of(&token), "made-up-kid".to_string()] {
        let (status, headers) = call(&mut client, &forged(&w.idp.issuer, &kid)).await;
        assert_eq!(status, 401, "{kid}");
        assert!(headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="invalid_token""#));
    }
    // A real token, for another resource (RFC 8707).
    let elsewhere = w.idp.token(OTHER, "tools:read").await;
    assert_eq!(call(&mut client, &elsewhere).await.0, 401);
    assert_eq!(
        w.upstream.requests().len(),
        1,
        "nothing refused reached the upstream"
    );
    let records = w.regate.decisions(4).await;
    let reasons: Vec<_> = records
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "allowed",
            "token_invalid",
            "token_invalid",
            "token_audience"
        ]
    );

    // What the operator sees of the issuer.
    let (_, status) = admin_get(w.regate.admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let issuer = &status["delegation"]["issuers"][0];
    assert_eq!(issuer["issuer"], w.idp.issuer.as_str());
    assert_eq!(issuer["source"], "discovery");
    assert_eq!(issuer["jwks_uri"], format!("{}/jwks", w.idp.issuer));
    assert_eq!(issuer["key_ids"], serde_json::json!([kid_of(&token)]));
    assert_eq!(issuer["last_error"], serde_json::Value::Null);
    assert!(issuer["last_fetch"].is_string());
    let (_, metrics) = admin_get(w.regate.admin, "/metrics").await;
    let ok = format!(
        "regate_jwks_fetches_total{{issuer=\"{}\",result=\"ok\"}}",
        w.idp.issuer
    );
    assert!(metrics.contains(&ok), "{metrics}");
    assert!(metrics.contains(&format!(
        "regate_jwks_keys{{issuer=\"{}\"}} 1",
        w.idp.issuer
    )));
    assert!(metrics.contains("regate_jwks_age_seconds{"));
}

#[tokio::test]
async fn a_rotated_signing_key_is_accepted_without_a_restart() {
    let w = world().await;
    let agent = w.setup.ca.client(SUMMARIZER);
    let mut client = w.regate.http1(&w.setup, &agent).await;
    let before = w.idp.token(MCP, "tools:read").await;
    assert_eq!(call(&mut client, &before).await.0, 200);
    let fetched = w.idp.served("jwks").await;

    let kids = w.idp.rotate().await;
    let after = w.idp.token(MCP, "tools:read").await;
    assert_eq!(
        kid_of(&after),
        kids[0],
        "the provider signs with its new key"
    );
    assert_ne!(kids[0], kid_of(&before));
    // The first token under the new key waits for the one refetch it asks for.
    assert_eq!(call(&mut client, &after).await.0, 200);
    assert!(
        w.idp.served("jwks").await > fetched,
        "regate fetched the new set"
    );
    // The old key is still published, so its tokens still verify; a forgery under the new
    // key id does not.
    assert_eq!(call(&mut client, &before).await.0, 200);
    assert_eq!(
        call(&mut client, &forged(&w.idp.issuer, &kids[0])).await.0,
        401
    );
    let (_, status) = admin_get(w.regate.admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["delegation"]["issuers"][0]["key_ids"],
        serde_json::json!(kids)
    );
}

#[tokio::test]
async fn a_flood_of_unknown_key_ids_fetches_at_most_once_per_interval() {
    let w = world().await;
    let agent = w.setup.ca.client(SUMMARIZER);
    let before = w.idp.served("jwks").await;
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(w.regate.http1(&w.setup, &agent).await);
    }
    let mut refused = 0;
    for round in 0..50 {
        for (i, client) in clients.iter_mut().enumerate() {
            let kid = format!("forged-{round}-{i}");
            if call(client, &forged(&w.idp.issuer, &kid)).await.0 == 401 {
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 200);
    let fetches = w.idp.served("jwks").await - before;
    // One refetch per 30 s for unknown key ids, and the scheduled refresh (every 225 s
    // without max-age), however long the flood took on this machine.
    let elapsed = start.elapsed().as_secs();
    let allowed = 1 + elapsed / 30 + 1 + elapsed / 225;
    assert!(fetches >= 1, "the first unknown key id asks for a refetch");
    assert!(
        fetches <= allowed,
        "{fetches} JWKS fetches for 200 forged key ids in {elapsed}s"
    );
    assert_eq!(w.upstream.requests().len(), 0);
}
