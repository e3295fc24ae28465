//! The kill switch: a revocation through the admin API denies the caller's next request, on
//! connections it already has open too, and closes those connections within a second. It is
//! kept in `--revocations FILE` across restarts, and a change made to that file by hand is
//! picked up like a policy change. Every change is in the decision log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::time::Duration;

const ALLOW_ALL: &str = "package regate.authz\n\nallow := true\n";

fn revocations_file(setup: &Setup) -> String {
    setup.path("revocations.json").display().to_string()
}

async fn start(setup: &Setup, upstream: &Upstream) -> Regate {
    let file = revocations_file(setup);
    setup
        .start(&upstream.url(), &["--revocations", &file])
        .await
}

#[tokio::test]
async fn a_revoked_agent_is_denied_at_once_and_its_open_connections_close() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = start(&setup, &upstream).await;
    let agent = setup.ca.client(SUMMARIZER);
    let mut first = regate.http1(&setup, &agent).await;
    let mut second = regate.http1(&setup, &agent).await;
    let mut other = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;
    assert_eq!(get(&mut first, "/a").await.0, 200);
    assert_eq!(get(&mut second, "/a").await.0, 200);

    let body = format!(r#"{{"spiffe_id": "{SUMMARIZER}", "reason": "looping on send_email"}}"#);
    let (status, created) = admin_send(regate.admin, "POST", "/revocations", &body).await;
    assert_eq!(status, 201, "{created}");
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["id"].as_str().unwrap().to_string();

    // The open connections close within a second; until they do, a request is denied.
    let closed = eventually(Duration::from_secs(1), || {
        let closed = first.is_closed() && second.is_closed();
        async move { closed }
    })
    .await;
    assert!(closed, "connections of the revoked identity are still open");
    // A new connection is served, but every request on it is refused before the policy.
    let mut again = regate.http1(&setup, &agent).await;
    let (status, _, body) = get(&mut again, "/a").await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("revoked"));
    // Others are untouched.
    assert_eq!(get(&mut other, "/a").await.0, 200);

    let records = regate.decisions(5).await;
    let added = records
        .iter()
        .find(|r| r["event"] == "revocation_added")
        .expect("the change is in the decision log");
    assert_eq!(added["revocation"]["id"], id.as_str());
    assert_eq!(added["source"], "api");
    let denied = records.iter().filter(|r| r["reason"] == "revoked").count();
    assert_eq!(denied, 1);
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    assert!(metrics.contains("regate_revocations 1"), "{metrics}");
    assert!(
        metrics.contains("regate_revoked_connections_closed_total 2"),
        "{metrics}"
    );

    // Lifting it serves the agent again.
    let (status, _) = admin_send(regate.admin, "DELETE", &format!("/revocations/{id}"), "").await;
    assert_eq!(status, 200);
    assert_eq!(get(&mut again, "/a").await.0, 200);
    let (status, _) = admin_send(regate.admin, "DELETE", &format!("/revocations/{id}"), "").await;
    assert_eq!(status, 404);
    regate.stop().await;
}

#[tokio::test]
async fn a_revocation_survives_a_restart() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let agent = setup.ca.client(SUMMARIZER);
    let serial = regate::tls::identity::PeerIdentity::from_der(&agent.chain[0])
        .unwrap()
        .serial;

    let regate = start(&setup, &upstream).await;
    let body = format!(r#"{{"serial": "{serial}", "reason": "key leaked"}}"#);
    let (status, created) = admin_send(regate.admin, "POST", "/revocations", &body).await;
    assert_eq!(status, 201, "{created}");
    regate.stop().await;

    let regate = start(&setup, &upstream).await;
    let mut client = regate.http1(&setup, &agent).await;
    assert_eq!(get(&mut client, "/a").await.0, 403);
    let (status, listed) = admin_get(regate.admin, "/revocations").await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["revocations"][0]["reason"], "key leaked");
    regate.stop().await;
}

#[tokio::test]
async fn a_revocation_written_to_the_file_by_hand_is_picked_up() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = start(&setup, &upstream).await;
    let agent = setup.ca.client(SUMMARIZER);
    let mut client = regate.http1(&setup, &agent).await;
    assert_eq!(get(&mut client, "/a").await.0, 200);

    let file = serde_json::json!({"revocations": [{
        "id": "gitops-1",
        "spiffe_id": SUMMARIZER,
        "reason": "from git",
        "created_at": "2026-11-23T00:00:00Z",
    }]});
    let tmp = setup.path("revocations.json.new");
    std::fs::write(&tmp, file.to_string()).unwrap();
    std::fs::rename(&tmp, setup.path("revocations.json")).unwrap();
    let closed = eventually(Duration::from_secs(5), || {
        let closed = client.is_closed();
        async move { closed }
    })
    .await;
    assert!(closed, "the hand-written revocation was not applied");
    let mut again = regate.http1(&setup, &agent).await;
    assert_eq!(get(&mut again, "/a").await.0, 403);

    // A broken edit lifts nothing.
    std::fs::write(setup.path("revocations.json"), "{broken").unwrap();
    regate.reloader.reload_revocations();
    assert_eq!(get(&mut again, "/a").await.0, 403);
    regate.stop().await;
}

#[tokio::test]
async fn bad_revocation_requests_are_refused_with_a_reason() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = start(&setup, &upstream).await;
    for body in [
        "{",
        r#"{"reason": "which one?"}"#,
        r#"{"spiffe_id": "not-spiffe", "reason": "r"}"#,
        r#"{"spiffe_id": "spiffe://example.org/a"}"#,
    ] {
        let (status, problem) = admin_send(regate.admin, "POST", "/revocations", body).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert!(problem.contains("detail"), "{problem}");
    }
    // Not from a browser: a request with an Origin changes nothing.
    let addr = regate.admin;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri("/revocations")
        .header(http::header::HOST, "localhost")
        .header(http::header::ORIGIN, "https://evil.example")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(format!(
            r#"{{"spiffe_id": "{SUMMARIZER}", "reason": "csrf"}}"#
        ))))
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 403);
    let (status, listed) = admin_get(regate.admin, "/revocations").await;
    assert_eq!((status, listed.trim()), (200, r#"{"revocations":[]}"#));
    regate.stop().await;
}

#[tokio::test]
async fn a_jti_is_revoked_exactly_as_written_leading_space_and_all() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let keys = signing_keys();
    std::fs::write(
        setup.path("jwks.json"),
        jwks(&[public_jwk(&keys["ec256"], "ec1", "ES256")]),
    )
    .unwrap();
    let issuer = "https://idp.example.org";
    let (file, jwks_file) = (revocations_file(&setup), setup.path("jwks.json"));
    let regate = setup
        .start(
            &upstream.url(),
            &[
                "--revocations",
                &file,
                "--delegation-issuer",
                issuer,
                "--delegation-audience",
                "regate",
                "--delegation-jwks",
                &jwks_file.display().to_string(),
            ],
        )
        .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let token = |jti: &str| {
        let claims = serde_json::json!({
            "iss": issuer, "sub": "alice", "aud": "regate", "exp": exp, "jti": jti,
        });
        sign_jws("ES256", "ec1", &claims, &keys["ec256"])
    };
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let mut ask = async |jti: &str| {
        let mut req = request("GET", "/a", b"");
        let bearer = format!("Bearer {}", token(jti));
        req.headers_mut()
            .insert("authorization", bearer.parse().unwrap());
        let (status, _, body) = send(&mut client, req).await;
        (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(ask(" abc").await.0, 200);

    let (status, created) = admin_send(
        regate.admin,
        "POST",
        "/revocations",
        r#"{"jti": " abc", "reason": "leaked"}"#,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (_, listed) = admin_get(regate.admin, "/revocations").await;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["revocations"][0]["jti"], " abc");
    let (status, body) = ask(" abc").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("revoked"), "{body}");
    // Another jti, one space apart, is another token.
    assert_eq!(ask("abc").await.0, 200);

    // A jti is a string (RFC 7519 §4.1.7): a number is refused, not taken as its digits.
    let (status, problem) = admin_send(
        regate.admin,
        "POST",
        "/revocations",
        r#"{"jti": 424242, "reason": "r"}"#,
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(problem.contains("jti must be a string"), "{problem}");
    let (status, _) = admin_send(
        regate.admin,
        "POST",
        "/revocations",
        r#"{"jti": "", "reason": "r"}"#,
    )
    .await;
    assert_eq!(status, 400);
    regate.stop().await;
}
