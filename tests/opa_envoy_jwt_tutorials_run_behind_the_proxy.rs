//! OPA's two Envoy JWT tutorials, run behind regate as a user would: the tutorial's policy
//! file unchanged, opa-envoy-plugin's query, a real client over mutual TLS sending a bearer
//! token. A token that verifies reaches the upstream; an expired, forged, mis-addressed or
//! missing one is denied and never does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::path::Path;

/// The corpus case's policy files, and its inputs' `authorization` headers by input name.
fn tutorial(case: &str) -> (Vec<(String, String)>, serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/opa_corpus/cases")
        .join(case);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir.join("policy")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        files.push((name, std::fs::read_to_string(&path).unwrap()));
    }
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    (files, cases["inputs"].clone())
}

fn authorization(inputs: &serde_json::Value, name: &str) -> Option<String> {
    inputs[name]["attributes"]["request"]["http"]["headers"]["authorization"]
        .as_str()
        .map(str::to_string)
}

async fn ask(client: &mut Http1, method: &str, path: &str, auth: Option<&str>) -> u16 {
    let mut req = request(method, path, b"");
    if let Some(auth) = auth {
        req.headers_mut()
            .insert("authorization", auth.parse().unwrap());
    }
    send(client, req).await.0.as_u16()
}

/// The case's policy behind regate, asked as opa-envoy-plugin asks it; and its inputs.
async fn serve(case: &str) -> (Setup, Upstream, Regate, serde_json::Value) {
    let (files, inputs) = tutorial(case);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_str()))
        .collect();
    let setup = Setup::new(&files);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--query", "data.envoy.authz.allow"])
        .await;
    (setup, upstream, regate, inputs)
}

async fn run(case: &str, path: &str, allowed: &[&str], denied: &[&str]) {
    let (setup, upstream, regate, inputs) = serve(case).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    for name in allowed {
        let auth = authorization(&inputs, name);
        assert!(auth.is_some(), "{case}/{name} has no token");
        let status = ask(&mut client, "GET", path, auth.as_deref()).await;
        assert_eq!(status, 200, "{case}/{name}");
    }
    let reached = upstream.requests().len();
    assert_eq!(reached, allowed.len());
    for name in denied {
        let auth = authorization(&inputs, name);
        let status = ask(&mut client, "GET", path, auth.as_deref()).await;
        assert_eq!(status, 403, "{case}/{name}");
    }
    assert_eq!(
        upstream.requests().len(),
        reached,
        "a denied request reached the upstream"
    );
    let records = regate.decisions(allowed.len() + denied.len()).await;
    assert!(records[allowed.len()..]
        .iter()
        .all(|r| r["allowed"] == false && r["reason"] == "denied"));
    regate.stop().await;
}

#[tokio::test]
async fn the_standalone_envoy_tutorial_decides_on_its_hs256_tokens() {
    run(
        "tutorial_standalone_envoy",
        "/people",
        &["alice_list", "bob_list"],
        &["expired", "bad_signature", "other_secret", "no_header"],
    )
    .await;
}

#[tokio::test]
async fn the_jwks_tutorial_checks_signature_issuer_and_audience() {
    run(
        "jwks_decode_verify_iss_aud",
        "/api/items",
        &["valid_get", "aud_list", "ec_key_get"],
        &[
            "wrong_aud",
            "wrong_iss",
            "expired",
            "bad_signature",
            "alg_none",
            "malformed",
            "basic_auth",
        ],
    )
    .await;
}

/// The tutorial's `POST /people` rule reads `input.parsed_body`: a JSON body is read for the
/// policy, and forwarded byte for byte.
#[tokio::test]
async fn the_standalone_tutorials_post_rule_reads_the_json_body() {
    let (setup, upstream, regate, inputs) = serve("tutorial_standalone_envoy").await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    for (name, want) in [
        ("bob_create", 200),
        ("bob_create_self", 403),
        ("alice_create", 403),
    ] {
        let http = &inputs[name]["attributes"]["request"]["http"];
        let body = http["body"].as_str().unwrap().to_string();
        let auth = http["headers"]["authorization"].as_str().unwrap();
        let req = http::Request::builder()
            .method("POST")
            .uri("/people")
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, auth)
            .body({
                use http_body_util::BodyExt;
                http_body_util::Full::new(bytes::Bytes::from(body.clone()))
                    .map_err(|e| match e {})
                    .boxed()
            })
            .unwrap();
        let (status, _, _) = send(&mut client, req).await;
        assert_eq!(status.as_u16(), want, "{name}");
        if want == 200 {
            let seen = upstream.requests();
            assert_eq!(
                seen.last().unwrap().body_sha256,
                sha256_hex(body.as_bytes())
            );
        }
    }
    regate.stop().await;
}
