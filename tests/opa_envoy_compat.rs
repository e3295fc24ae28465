//! A policy written for OPA's Envoy plugin runs unchanged with --query data.envoy.authz.allow.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

/// Rego v0, in the style of the opa-envoy-plugin examples.
const ENVOY_POLICY: &str = r#"package envoy.authz

import input.attributes.request.http as http_request

default allow = false

allow = response {
    http_request.method == "GET"
    input.parsed_path = ["people", name]
    input.parsed_query.lang == ["en"]
    startswith(input.attributes.source.principal, "spiffe://example.org/")
    response := {
        "allowed": true,
        "headers": {"x-ext-auth-allow": "yes", "x-person": name, "x-multi": ["a", "b"]},
        "response_headers_to_add": {"x-response-note": "checked"},
        "request_headers_to_remove": ["x-internal-debug"],
        "query_parameters_to_remove": ["debug"],
        "query_parameters_to_set": {"source": "regate"},
    }
}

allow = response {
    http_request.method == "DELETE"
    response := {
        "allowed": false,
        "http_status": 451,
        "body": "deletes are not allowed here",
        "headers": {"x-ext-auth-reason": "no-deletes"},
    }
}
"#;

#[tokio::test]
async fn opa_envoy_plugin_policy_runs_unchanged() {
    let setup = Setup::new(&[("envoy.rego", ENVOY_POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--query", "data.envoy.authz.allow"])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    // Allowed: object result, parsed_path, parsed_query, headers added and removed.
    let mut req = request("GET", "/people/alice?lang=en&debug=1", b"");
    req.headers_mut()
        .insert("x-internal-debug", "1".parse().unwrap());
    let (status, headers, _) = send(&mut client, req).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-response-note"], "checked");
    let seen = &upstream.requests()[0];
    assert_eq!(seen.uri, "/people/alice?lang=en&source=regate");
    assert_eq!(seen.headers["x-ext-auth-allow"], "yes");
    assert_eq!(seen.headers["x-person"], "alice");
    let multi: Vec<_> = seen.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    assert!(!seen.headers.contains_key("x-internal-debug"));

    // Denied with the policy's own status, body and headers.
    let (status, headers, body) = send(&mut client, request("DELETE", "/people/alice", b"")).await;
    assert_eq!(status, 451);
    assert_eq!(&body[..], b"deletes are not allowed here");
    assert_eq!(headers["x-ext-auth-reason"], "no-deletes");

    // The default (false) is a plain deny.
    let (status, headers, _) = get(&mut client, "/people/alice?lang=fr").await;
    assert_eq!(status, 403);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(upstream.requests().len(), 1);

    let records = regate.decisions(3).await;
    assert_eq!(records[1]["http_status"], 451);
    assert_eq!(records[1]["allowed"], false);
    regate.stop().await;
}
