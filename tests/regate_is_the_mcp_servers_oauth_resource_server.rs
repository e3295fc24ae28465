//! regate as the MCP server's OAuth 2.1 resource server (`oauth_resource:`; RFC 9728, RFC
//! 8707, MCP authorization 2025-11-25). It serves the protected resource metadata itself,
//! without the policy; answers a request without a token, or with a bad one, with a 401 an
//! MCP client can follow (`resource_metadata`, `scope`); refuses tokens for another
//! resource; never passes the client's token upstream unless told to; and turns a policy's
//! `required_scope` into the 403 `insufficient_scope` step-up challenge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

const ISSUER: &str = "https://idp.example.org";
const MCP: &str = "https://mcp.example.org/mcp";
const METADATA: &str = "https://mcp.example.org/.well-known/oauth-protected-resource/mcp";

/// Reading tools needs `tools:read`; calling one needs `tools:call` too, and a token without
/// it is asked to step up. The upstream is told what the policy saw of the token.
const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := false

saw_authorization := object.get(input.attributes.request.http.headers, "authorization", "none")

allow := {"allowed": true, "headers": {
	"x-seen-subject": input.delegation.subject,
	"x-policy-saw-authorization": saw_authorization,
}} if {
	"tools:read" in input.delegation.scope
	input.parsed_path == ["mcp", "tools"]
}

allow := {"allowed": true} if {
	"tools:call" in input.delegation.scope
	input.parsed_path == ["mcp", "call"]
}

allow := {"allowed": false, "reason": "tool_call_needs_scope", "required_scope": "tools:call"} if {
	not "tools:call" in input.delegation.scope
	input.parsed_path == ["mcp", "call"]
}
"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(aud: &str, scope: &str) -> String {
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "alice", "aud": aud, "exp": now() + 600, "scope": scope,
    });
    sign_jws("ES256", "ec1", &claims, &signing_keys()["ec256"])
}

struct World {
    setup: Setup,
    upstream: Upstream,
    regate: Regate,
}

/// regate as the resource `MCP`, trusting `ISSUER`'s JWKS file; `extra` is more of the
/// `oauth_resource:` section.
async fn world(extra: &str) -> World {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let keys = signing_keys();
    std::fs::write(
        setup.path("jwks.json"),
        jwks(&[public_jwk(&keys["ec256"], "ec1", "ES256")]),
    )
    .unwrap();
    let config = format!(
        "delegation:\n  issuers:\n    - issuer: {ISSUER}\n      jwks_file: jwks.json\n      \
         algorithms: [ES256]\noauth_resource:\n  resource: {MCP}\n  \
         authorization_servers: [{ISSUER}]\n  scopes_supported: [tools:read, tools:call]\n{extra}"
    );
    std::fs::write(setup.path("regate.yaml"), config).unwrap();
    let upstream = Upstream::start().await;
    let yaml = setup.path("regate.yaml").display().to_string();
    let regate = setup.start(&upstream.url(), &["--config", &yaml]).await;
    World {
        setup,
        upstream,
        regate,
    }
}

async fn ask(w: &World, path: &str, token: Option<&str>) -> (u16, http::HeaderMap, String) {
    let agent = w.setup.ca.client(SUMMARIZER);
    let mut client = w.regate.http1(&w.setup, &agent).await;
    let mut req = request("GET", path, b"");
    if let Some(token) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (status, headers, body) = send(&mut client, req).await;
    (
        status.as_u16(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn challenge(headers: &http::HeaderMap) -> &str {
    headers["www-authenticate"].to_str().unwrap()
}

#[tokio::test]
async fn the_metadata_is_served_at_both_well_known_urls_without_the_policy() {
    let w = world("").await;
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        // No token, and a policy that would deny: regate answers itself.
        let (status, headers, body) = ask(&w, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(headers["content-type"], "application/json");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "resource": MCP,
                "authorization_servers": [ISSUER],
                "scopes_supported": ["tools:read", "tools:call"],
                "bearer_methods_supported": ["header"],
                "tls_client_certificate_bound_access_tokens": true,
            })
        );
    }
    // Another resource's metadata is not regate's to serve.
    let (status, _, _) = ask(&w, "/.well-known/oauth-protected-resource/other", None).await;
    assert_eq!(status, 401);
    assert!(w.upstream.requests().is_empty());
    let records = w.regate.decisions(3).await;
    assert_eq!(records[0]["reason"], "resource_metadata");
    assert_eq!(records[0]["allowed"], true);
    assert_eq!(records[0]["http_status"], 200);
    assert_eq!(records[1]["reason"], "resource_metadata");
}

#[tokio::test]
async fn a_request_without_a_token_is_challenged_with_the_metadata_url_and_scope() {
    let w = world("").await;
    let (status, headers, body) = ask(&w, "/mcp/tools", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        challenge(&headers),
        format!(r#"Bearer scope="tools:read tools:call", resource_metadata="{METADATA}""#)
    );
    assert!(body.contains("token_missing"));
    assert!(w.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_bad_token_is_challenged_as_an_invalid_token() {
    let w = world("").await;
    let expired = {
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": "alice", "aud": MCP, "exp": now() - 3600, "scope": "tools:read",
        });
        sign_jws("ES256", "ec1", &claims, &signing_keys()["ec256"])
    };
    for (token, reason) in [
        ("not.a.token", "token_invalid"),
        (expired.as_str(), "token_expired"),
    ] {
        let (status, headers, body) = ask(&w, "/mcp/tools", Some(token)).await;
        assert_eq!(status, 401);
        assert_eq!(
            challenge(&headers),
            format!(
                r#"Bearer error="invalid_token", scope="tools:read tools:call", resource_metadata="{METADATA}""#
            )
        );
        assert!(body.contains(reason), "{body}");
    }
    assert!(w.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_token_for_another_resource_is_refused_and_never_forwarded() {
    let w = world("").await;
    let elsewhere = token("https://other.example.org/api", "tools:read tools:call");
    let (status, headers, body) = ask(&w, "/mcp/tools", Some(&elsewhere)).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge(&headers).starts_with(r#"Bearer error="invalid_token""#));
    assert!(body.contains("token_audience"));
    assert!(w.upstream.requests().is_empty());
    // The same token for this resource passes.
    let (status, _, _) = ask(&w, "/mcp/tools", Some(&token(MCP, "tools:read"))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_token_is_not_passed_upstream_and_the_policy_sees_only_its_claims() {
    let w = world("").await;
    let (status, _, _) = ask(&w, "/mcp/tools", Some(&token(MCP, "tools:read"))).await;
    assert_eq!(status, 200);
    let seen = w.upstream.requests();
    assert!(seen[0].headers.get("authorization").is_none());
    assert_eq!(seen[0].headers["x-seen-subject"], "alice");
    assert_eq!(seen[0].headers["x-policy-saw-authorization"], "none");
}

#[tokio::test]
async fn with_forward_token_the_token_is_passed_upstream() {
    let w = world("  forward_token: true\n").await;
    let t = token(MCP, "tools:read");
    let (status, _, _) = ask(&w, "/mcp/tools", Some(&t)).await;
    assert_eq!(status, 200);
    let seen = w.upstream.requests();
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {t}"));
    assert_eq!(seen[0].headers["x-seen-subject"], "alice");
}

#[tokio::test]
async fn a_policy_asking_for_more_scope_is_a_403_step_up_challenge() {
    let w = world("").await;
    let (status, headers, body) = ask(&w, "/mcp/call", Some(&token(MCP, "tools:read"))).await;
    assert_eq!(status, 403, "{body}");
    // The scope the token has, and the one the call needs, so asking again loses nothing.
    assert_eq!(
        challenge(&headers),
        format!(
            r#"Bearer error="insufficient_scope", scope="tools:read tools:call", resource_metadata="{METADATA}""#
        )
    );
    assert!(body.contains("tool_call_needs_scope"), "{body}");
    let records = w.regate.decisions(1).await;
    assert_eq!(records[0]["reason"], "tool_call_needs_scope");
    assert_eq!(records[0]["http_status"], 403);
    // With the scope, the call goes through.
    let (status, _, _) = ask(&w, "/mcp/call", Some(&token(MCP, "tools:read tools:call"))).await;
    assert_eq!(status, 200);
    assert_eq!(w.upstream.requests().len(), 1);
}
