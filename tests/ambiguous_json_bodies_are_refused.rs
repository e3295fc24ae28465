//! A JSON body that some server would read otherwise than the policy never reaches the
//! upstream. The attacks are those that passed the shipped `mcp_tools` example: a repeated
//! `method` (serde keeps the last, gjson and simdjson the first), `argumentſ` (Go's
//! encoding/json folds `ſ` to `s`), a repeated key inside the arguments, and `Path` for
//! `path` (Go matches struct fields ignoring case). Each is refused before the policy (400
//! `ambiguous_body`) or, for a lone `Path`, denied by the example's argument allowlist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use http_body_util::{BodyExt, Full};

/// The shipped example, as an operator would deploy it.
fn mcp_tools_setup() -> Setup {
    let dir = "policies/examples/mcp_tools";
    let policy = std::fs::read_to_string(format!("{dir}/policy.rego")).unwrap();
    let data = std::fs::read_to_string(format!("{dir}/data.json")).unwrap();
    let setup = Setup::new(&[]);
    setup.write_policy("examples/mcp_tools/policy.rego", &policy);
    setup.write_policy("examples/mcp_tools/data.json", &data);
    setup
}

fn post(
    body: &str,
) -> http::Request<http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>> {
    http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(bytes::Bytes::from(body.to_string()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

const READ_DOC: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_doc","arguments":{"path":"/docs/a.md"}}}"#;

#[tokio::test]
async fn bodies_a_server_could_read_otherwise_are_refused_before_the_policy() {
    let setup = mcp_tools_setup();
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--query", "data.examples.mcp_tools.allow"],
        )
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    // The honest call is allowed: the attacks below are refused for what they add.
    let (status, _, body) = send(&mut client, post(READ_DOC)).await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(upstream.requests().len(), 1);

    let attacks = [
        // serde keeps the last `method` (tools/list, always allowed); gjson the first.
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","method":"tools/list","params":{"name":"send_email","arguments":{"to":"all@example.org"}}}"#,
        // Go's encoding/json folds ſ (U+017F) to s: the last of the two `arguments` wins there.
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_doc","arguments":{"path":"/docs/a.md"},"argumentſ":{"path":"/secret/a"}}}"#,
        // A repeated key inside the arguments.
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"read_doc","arguments":{"path":"/secret/a","path":"/docs/a.md"}}}"#,
        // A repeated tool name.
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"send_email","name":"search","arguments":{}}}"#,
        // Keys equal but for case, deep in a batch.
        r#"[{"jsonrpc":"2.0","id":6,"method":"tools/list"},{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_doc","arguments":{"path":"/docs/a.md","PATH":"/secret/a"}}}]"#,
    ];
    for attack in attacks {
        let (status, headers, body) = send(&mut client, post(attack)).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{attack}: {body}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert!(body.contains("\"reason\":\"ambiguous_body\""), "{body}");
    }
    // Over HTTP/2 as well.
    let mut h2 = regate.http2(&setup, &setup.ca.client(SUMMARIZER)).await;
    let resp = h2.send_request(post(attacks[0])).await.unwrap();
    assert_eq!(resp.status(), 400);

    // Nothing of it reached the upstream, and every refusal is recorded with its reason.
    assert_eq!(upstream.requests().len(), 1);
    let records = regate.decisions(1 + attacks.len() + 1).await;
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r["reason"] == "ambiguous_body")
        .collect();
    assert_eq!(refused.len(), attacks.len() + 1, "{records:?}");
    assert!(refused.iter().all(|r| r["allowed"] == false
        && r["http_status"] == 400
        && r["upstream_status"].is_null()));
    regate.stop().await;
}

#[tokio::test]
async fn a_lone_argument_spelt_in_another_case_is_denied_by_the_example_allowlist() {
    let setup = mcp_tools_setup();
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--query", "data.examples.mcp_tools.allow"],
        )
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    // `object.get(args, "path", "")` is "" here, but a Go server reads `Path` as `path`.
    let attack = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"read_doc","arguments":{"Path":"/secret/a"}}}"#;
    let (status, _, body) = send(&mut client, post(attack)).await;
    assert_eq!(status, 403, "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains("argument_not_allowed"));
    assert!(upstream.requests().is_empty());
    regate.stop().await;
}
