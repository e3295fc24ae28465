//! Delegation tokens: an agent's certificate says what it is, a token says on whose behalf it
//! acts. A valid token, bound to the certificate of the connection it arrives on, reaches the
//! policy as `input.delegation`; a token bound to another certificate, expired, for another
//! audience, or unbound where binding is required is a 401 the policy never sees. A JWKS
//! rotation is picked up on reload. Real ES256, ES384 and RS256 tokens are signed here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

const ISSUER: &str = "https://idp.example.org";

/// Allows a delegation for alice with `docs:read`, and shows upstream what it saw.
const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := false

allow := {"allowed": true, "headers": {
	"x-seen-subject": input.delegation.subject,
	"x-seen-actor": input.delegation.actor,
	"x-seen-actors": concat(",", input.delegation.actors),
	"x-seen-scope": concat(" ", input.delegation.scope),
	"x-seen-bound": sprintf("%v", [input.delegation.bound]),
}} if {
	input.delegation.subject == "alice"
	"docs:read" in input.delegation.scope
}
"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims for alice, through two agents, bound to `cert` (its DER) when given.
fn claims(aud: &str, exp: i64, cert: Option<&[u8]>) -> serde_json::Value {
    let mut c = serde_json::json!({
        "iss": ISSUER,
        "sub": "alice",
        "aud": [aud],
        "exp": exp,
        "nbf": now() - 60,
        "jti": "token-1",
        "scope": "docs:read docs:list",
        "act": {"sub": "agent-summarizer", "act": {"sub": "orchestrator"}},
    });
    if let Some(der) = cert {
        c["cnf"] = serde_json::json!({"x5t#S256": cert_thumbprint(der)});
    }
    c
}

async fn ask(client: &mut Http1, token: Option<&str>) -> (u16, http::HeaderMap, String) {
    let mut req = request("GET", "/docs/a", b"");
    if let Some(token) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (status, headers, body) = send(client, req).await;
    (
        status.as_u16(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

struct World {
    setup: Setup,
    upstream: Upstream,
    regate: Regate,
    keys: serde_json::Value,
}

/// Write a JWKS of `jwks_keys` (test key, kid, alg) beside `setup`'s policies, and the flags
/// that trust it for `ISSUER`, plus `extra`.
fn trust_issuer(
    setup: &Setup,
    keys: &serde_json::Value,
    jwks_keys: &[(&str, &str, &str)],
    extra: &[&str],
) -> Vec<String> {
    let public_keys: Vec<_> = jwks_keys
        .iter()
        .map(|(name, kid, alg)| public_jwk(&keys[*name], kid, alg))
        .collect();
    std::fs::write(setup.path("jwks.json"), jwks(&public_keys)).unwrap();
    let jwks_path = setup.path("jwks.json").display().to_string();
    let mut flags: Vec<String> = [
        "--delegation-issuer",
        ISSUER,
        "--delegation-audience",
        "regate",
        "--delegation-jwks",
        &jwks_path,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

async fn world(jwks_keys: &[(&str, &str, &str)]) -> World {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let keys = signing_keys();
    let flags = trust_issuer(
        &setup,
        &keys,
        jwks_keys,
        &[
            "--delegation-algorithm",
            "ES256",
            "--delegation-algorithm",
            "ES384",
            "--delegation-algorithm",
            "RS256",
            "--delegation-require-binding",
        ],
    );
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &flags).await;
    World {
        setup,
        upstream,
        regate,
        keys,
    }
}

#[tokio::test]
async fn a_bound_token_reaches_the_policy_with_its_subject_actor_and_scope() {
    let w = world(&[("ec256", "ec1", "ES256"), ("rsa", "rsa1", "RS256")]).await;
    let agent = w.setup.ca.client(SUMMARIZER);
    let mut client = w.regate.http1(&w.setup, &agent).await;
    let bound = claims("regate", now() + 300, Some(&agent.chain[0]));

    for (alg, kid, key) in [("ES256", "ec1", "ec256"), ("RS256", "rsa1", "rsa")] {
        let token = sign_jws(alg, kid, &bound, &w.keys[key]);
        let (status, _, body) = ask(&mut client, Some(&token)).await;
        assert_eq!(status, 200, "{alg}: {body}");
    }
    let seen = w.upstream.requests();
    assert_eq!(seen.len(), 2);
    let h = &seen[0].headers;
    assert_eq!(h["x-seen-subject"], "alice");
    assert_eq!(h["x-seen-actor"], "agent-summarizer");
    assert_eq!(h["x-seen-actors"], "agent-summarizer,orchestrator");
    assert_eq!(h["x-seen-scope"], "docs:read docs:list");
    assert_eq!(h["x-seen-bound"], "true");
    // The token goes upstream unchanged.
    assert!(h["authorization"]
        .to_str()
        .unwrap()
        .starts_with("Bearer ey"));

    let records = w.regate.decisions(2).await;
    assert_eq!(records[0]["delegation_subject"], "alice");
    assert_eq!(records[0]["delegation_actor"], "agent-summarizer");
    assert_eq!(records[0]["delegation_jti"], "token-1");
    let log = std::fs::read_to_string(w.setup.path("decisions.log")).unwrap();
    assert!(!log.contains("eyJ"), "a token reached the decision log");

    // The kill switch takes a token by its jti: the agent may go on, that token may not.
    let (status, _) = admin_send(
        w.regate.admin,
        "POST",
        "/revocations",
        r#"{"jti": "token-1", "reason": "alice's session ended"}"#,
    )
    .await;
    assert_eq!(status, 201);
    let token = sign_jws("ES256", "ec1", &bound, &w.keys["ec256"]);
    let (status, _, body) = ask(&mut client, Some(&token)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("revoked"), "{body}");
    let (status, _, _) = ask(&mut client, None).await;
    assert_eq!(status, 403, "no token: the policy's own deny");
    w.regate.stop().await;
}

#[tokio::test]
async fn stolen_expired_misaddressed_and_unbound_tokens_are_401s_the_policy_never_sees() {
    let w = world(&[("ec256", "ec1", "ES256")]).await;
    let agent = w.setup.ca.client(SUMMARIZER);
    let thief = w.setup.ca.client(EXECUTOR);
    let key = &w.keys["ec256"];
    let mut client = w.regate.http1(&w.setup, &agent).await;
    let mut thief_client = w.regate.http1(&w.setup, &thief).await;

    let stolen = sign_jws(
        "ES256",
        "ec1",
        &claims("regate", now() + 300, Some(&agent.chain[0])),
        key,
    );
    // (reason, sent by the thief, token)
    let cases = [
        ("token_binding", true, stolen),
        (
            "token_expired",
            false,
            sign_jws(
                "ES256",
                "ec1",
                &claims("regate", now() - 120, Some(&agent.chain[0])),
                key,
            ),
        ),
        (
            "token_audience",
            false,
            sign_jws(
                "ES256",
                "ec1",
                &claims("another-api", now() + 300, Some(&agent.chain[0])),
                key,
            ),
        ),
        (
            "token_not_bound",
            false,
            sign_jws("ES256", "ec1", &claims("regate", now() + 300, None), key),
        ),
        ("token_invalid", false, "not.a.token".to_string()),
    ];
    let mut reasons = Vec::new();
    for (reason, by_thief, token) in cases {
        let sender = if by_thief {
            &mut thief_client
        } else {
            &mut client
        };
        let (status, headers, body) = ask(sender, Some(&token)).await;
        assert_eq!(status, 401, "{reason}: {body}");
        assert_eq!(
            headers["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
        assert_eq!(headers["content-type"], "application/problem+json");
        assert!(body.contains(reason), "{reason}: {body}");
        reasons.push(reason);
    }
    assert!(
        w.upstream.requests().is_empty(),
        "a refused token reached the upstream"
    );
    let records = w.regate.decisions(reasons.len()).await;
    for (record, reason) in records.iter().zip(&reasons) {
        assert_eq!(record["reason"], *reason);
        assert_eq!(record["http_status"], 401);
        assert_eq!(record["eval_ns"], 0, "the policy was asked");
    }
    // A confirmation regate cannot check is not taken for none; a bearer written oddly, or
    // given twice, is not passed on unverified.
    let mut dpop = claims("regate", now() + 300, None);
    dpop["cnf"] = serde_json::json!({"jkt": "abc"});
    let dpop = sign_jws("ES256", "ec1", &dpop, key);
    let (status, _, body) = ask(&mut client, Some(&dpop)).await;
    assert_eq!(status, 401);
    assert!(body.contains("token_binding"), "{body}");
    let good = sign_jws(
        "ES256",
        "ec1",
        &claims("regate", now() + 300, Some(&agent.chain[0])),
        key,
    );
    for values in [
        vec![format!("Bearer\t{good}x")],
        vec![format!("Bearer {good}"), format!("Bearer {good}")],
    ] {
        let mut req = request("GET", "/docs/a", b"");
        for v in &values {
            req.headers_mut()
                .append("authorization", v.parse().unwrap());
        }
        let (status, _, _) = send(&mut client, req).await;
        assert_eq!(status.as_u16(), 401, "{values:?}");
    }
    assert!(w.upstream.requests().is_empty());

    // Without a token, there is no input.delegation, and this policy denies.
    let (status, _, _) = ask(&mut client, None).await;
    assert_eq!(status, 403);
    w.regate.stop().await;
}

#[tokio::test]
async fn a_jwks_rotation_is_picked_up() {
    let w = world(&[("ec256", "ec1", "ES256")]).await;
    let agent = w.setup.ca.client(SUMMARIZER);
    let mut client = w.regate.http1(&w.setup, &agent).await;
    let bound = claims("regate", now() + 300, Some(&agent.chain[0]));
    let new_token = sign_jws("ES384", "ec2", &bound, &w.keys["ec384"]);
    assert_eq!(ask(&mut client, Some(&new_token)).await.0, 401);

    // The issuer rotates to a new key.
    let rotated = jwks(&[public_jwk(&w.keys["ec384"], "ec2", "ES384")]);
    let tmp = w.setup.path("jwks.json.new");
    std::fs::write(&tmp, rotated).unwrap();
    std::fs::rename(&tmp, w.setup.path("jwks.json")).unwrap();
    let reloader = w.regate.reloader.clone();
    tokio::task::spawn_blocking(move || reloader.reload_all())
        .await
        .unwrap();
    assert_eq!(ask(&mut client, Some(&new_token)).await.0, 200);
    let old_token = sign_jws("ES256", "ec1", &bound, &w.keys["ec256"]);
    assert_eq!(ask(&mut client, Some(&old_token)).await.0, 401);
    w.regate.stop().await;
}

/// A WebSocket opened under a token: the tunnel ends when the token expires, or when its
/// `jti` is revoked.
#[tokio::test]
async fn a_tunnel_lasts_no_longer_than_its_token() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = Setup::new(&[(
        "authz.rego",
        "package regate.authz\n\nimport rego.v1\n\nallow if input.delegation.subject == \"alice\"\n",
    )]);
    let keys = signing_keys();
    let flags = trust_issuer(
        &setup,
        &keys,
        &[("ec256", "ec1", "ES256")],
        &["--delegation-leeway", "0s"],
    );
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let upstream = SwitchingUpstream::start().await;
    let regate = setup.start(&upstream.url(), &flags).await;
    let agent = setup.ca.client(SUMMARIZER);
    let open = |token: String| {
        let config = setup.client_config(Some(&agent), &[b"http/1.1"]);
        let regate = &regate;
        async move {
            let mut tls = regate.connect(config).await.unwrap();
            let head = format!(
                "GET /ws HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\nauthorization: Bearer {token}\r\n\r\n"
            );
            tls.write_all(head.as_bytes()).await.unwrap();
            let answer = read_response(&mut tls).await;
            assert_eq!(status_of(&answer), 101, "{answer}");
            tls
        }
    };
    let closes = |mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>| async move {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(10), tls.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    };

    // A token that ends in two seconds ends its tunnel.
    let mut short = claims("regate", now() + 2, None);
    short["jti"] = "short-lived".into();
    let tunnel = open(sign_jws("ES256", "ec1", &short, &keys["ec256"])).await;
    assert!(closes(tunnel).await, "the tunnel outlived its token");

    // A revoked token ends its tunnel at once.
    let mut long = claims("regate", now() + 3600, None);
    long["jti"] = "to-revoke".into();
    let tunnel = open(sign_jws("ES256", "ec1", &long, &keys["ec256"])).await;
    let (status, _) = admin_send(
        regate.admin,
        "POST",
        "/revocations",
        r#"{"jti": "to-revoke", "reason": "session ended"}"#,
    )
    .await;
    assert_eq!(status, 201);
    assert!(
        closes(tunnel).await,
        "the tunnel outlived its revoked token"
    );
    let records = regate.decisions(5).await;
    let ends: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "tunnel_closed")
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ends, ["token_expired", "revoked"]);
    regate.stop().await;
}
