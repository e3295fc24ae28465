//! Budgets: an allowing policy attaches limits (`rate_limits`), and regate charges each. Over
//! any limit the request is 429 `rate_limited` with `Retry-After` and the IETF
//! `RateLimit-Policy`/`RateLimit` headers, never forwarded, and recorded with the limit's key;
//! an allowed request carries the headers too. Over HTTP/1.1 and HTTP/2, a JSON-RPC batch is
//! charged as a whole (one call over budget refuses it and is named, and nothing is charged),
//! and in `--mode audit` the request goes on, recorded as what would have been refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use http_body_util::{BodyExt, Full};

/// Two e-mails an hour per agent, and a generous rate for everything else.
const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := false

allow := {
	"allowed": true,
	"rate_limits": [{
		"key": concat(":", ["send_email", input.peer.spiffe_id]),
		"limit": 2,
		"per": "1h",
		"name": "send_email",
	}],
} if input.mcp.tool == "send_email"

allow := {
	"allowed": true,
	"rate_limits": [{"key": input.peer.spiffe_id, "limit": 1000, "per": "1s", "name": "all"}],
} if input.mcp.tool == "search"
"#;

type Req = http::Request<http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>>;

fn call(id: u32, tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
    )
}

fn post(body: String) -> Req {
    http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(bytes::Bytes::from(body))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

fn header(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_spent_budget_is_a_429_with_its_headers_and_the_record_names_the_key() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut agent = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;

    for (i, left) in [(1, 1), (2, 0)] {
        let (status, headers, _) = send(&mut agent, post(call(i, "send_email"))).await;
        assert_eq!(status, 200);
        assert_eq!(
            header(&headers, "ratelimit-policy"),
            "\"send_email\";q=2;w=3600"
        );
        assert!(
            header(&headers, "ratelimit").starts_with(&format!("\"send_email\";r={left};t=")),
            "{headers:?}"
        );
    }
    let (status, headers, body) = send(&mut agent, post(call(3, "send_email"))).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("\"reason\":\"rate_limited\""), "{body}");
    let retry: u64 = header(&headers, "retry-after").parse().unwrap();
    assert!((1..=1800).contains(&retry), "retry-after {retry}");
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        "\"send_email\";q=2;w=3600"
    );
    assert!(header(&headers, "ratelimit").starts_with("\"send_email\";r=0;t="));
    assert_eq!(
        upstream.requests().len(),
        2,
        "the refused call reached the upstream"
    );

    // Another agent's budget is its own, and other tools are not charged to this one.
    let mut other = regate.http2(&setup, &setup.ca.client(SUMMARIZER)).await;
    let resp = other
        .send_request(post(call(4, "send_email")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(send(&mut agent, post(call(5, "search"))).await.0, 200);

    let records = regate.decisions(5).await;
    let limited = records
        .iter()
        .find(|r| r["reason"] == "rate_limited")
        .unwrap();
    assert_eq!(limited["http_status"], 429);
    assert_eq!(limited["rate_limited"]["name"], "send_email");
    assert_eq!(
        limited["rate_limited"]["key"],
        format!("send_email:{EXECUTOR}")
    );
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"regate_budget_charges_total{name="send_email",result="limited"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"regate_budget_charges_total{name="send_email",result="allowed"} 3"#)
    );
    regate.stop().await;
}

#[tokio::test]
async fn over_http2_a_batch_over_budget_is_refused_whole_names_the_call_and_charges_nothing() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut agent = regate.http2(&setup, &setup.ca.client(EXECUTOR)).await;
    let resp = agent
        .send_request(post(call(1, "send_email")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // One e-mail left; a batch of a search and two e-mails asks for two.
    let batch = format!(
        "[{},{},{}]",
        call(2, "search"),
        call(3, "send_email"),
        call(4, "send_email")
    );
    let resp = agent.send_request(post(batch)).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(upstream.requests().len(), 1);
    let records = regate.decisions(2).await;
    assert_eq!(records[1]["reason"], "rate_limited");
    assert_eq!(records[1]["denied_call"]["index"], 2);
    // Nothing of the refused batch was charged: the last e-mail is still there.
    let resp = agent
        .send_request(post(call(5, "send_email")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = agent
        .send_request(post(call(6, "send_email")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    regate.stop().await;
}

#[tokio::test]
async fn in_audit_mode_a_spent_budget_is_recorded_and_the_request_goes_on() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &["--mode", "audit"]).await;
    let mut agent = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;
    for i in 1..=3 {
        let (status, _, _) = send(&mut agent, post(call(i, "send_email"))).await;
        assert_eq!(status, 200);
    }
    assert_eq!(upstream.requests().len(), 3);
    let records = regate.decisions(3).await;
    assert_eq!(records[2]["allowed"], true);
    assert_eq!(records[2]["would_deny"], true);
    assert_eq!(records[2]["reason"], "rate_limited");
    assert_eq!(records[2]["rate_limited"]["name"], "send_email");
    assert!(records[1].get("would_deny").is_none());
    regate.stop().await;
}
