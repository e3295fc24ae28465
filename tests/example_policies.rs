//! The checked-in example policies pass their own Rego tests, run as CI runs them
//! (`regate policy test policies/`), and the README's quick start (dev certificates,
//! example policies, demo upstream) allows and denies as documented; so does the approvals
//! walkthrough of docs/securing-ai-agents.md (`regate.approvals.yaml`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

#[test]
fn example_policies_pass_their_rego_tests() {
    let out = regate_command(&["policy", "test", "policies/"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "regate policy test policies/ failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The demo policy and every example ran its own tests.
    for package in [
        "data.regate.authz_test.",
        "data.examples.spiffe_allowlist_test.",
        "data.envoy.authz_test.",
        "data.examples.agent_tools_test.",
        "data.examples.kill_switch_test.",
        "data.examples.context_rules_test.",
        "data.examples.decision_object_test.",
        "data.examples.mcp_tools_test.",
        "data.examples.deploy_agent_test.",
        "data.examples.agent_approvals_test.",
    ] {
        assert!(
            stdout.lines().filter(|l| l.contains(package)).count() >= 3,
            "expected tests of {package}:\n{stdout}"
        );
    }
    assert!(stdout.contains(" 0 failed, 0 errors"), "{stdout}");
}

/// A client identity of certs-dev: `certs-dev/{name}.pem` and `.key`.
fn dev_identity(name: &str) -> Identity {
    use rustls::pki_types::pem::PemObject;
    let chain_pem = std::fs::read_to_string(format!("certs-dev/{name}.pem")).unwrap();
    let key_pem = std::fs::read_to_string(format!("certs-dev/{name}.key")).unwrap();
    Identity {
        chain: rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
        key: rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
        chain_pem,
        key_pem,
    }
}

#[tokio::test]
async fn readme_quick_start_allows_and_denies() {
    init();
    let args: Vec<String> = [
        "--config",
        "regate.dev.yaml",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let process = Process::start(&args, &[]);
    let ca = std::fs::read_to_string("certs-dev/ca.pem").unwrap();
    let connect = |name: &'static str| {
        let config = client_config(&ca, Some(&dev_identity(name)), &[b"http/1.1"]);
        let addr = process.addr;
        async move { http1_over(tls_connect(addr, config).await.unwrap()).await }
    };

    let mut summarizer = connect("summarizer").await;
    let (status, _, body) = get(&mut summarizer, "/docs/readme").await;
    assert_eq!(status, 200);
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["x-regate-workload"], "summarizer");
    assert!(echo["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap()
        .contains("URI=spiffe://example.org/ns/agents/sa/summarizer"));
    let (status, _, body) = send(&mut summarizer, request("DELETE", "/api/reports/1", b"")).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("no_matching_grant"));

    let mut intruder = connect("intruder").await;
    let (status, _, body) = get(&mut intruder, "/docs/readme").await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("untrusted_trust_domain"));
    assert!(process.stop().success());
}

/// docs/securing-ai-agents.md, section 6, step by step: `regate.approvals.yaml`, the dev
/// certificates and approval key, `policies/examples/agent_approvals`.
#[tokio::test]
async fn the_approvals_walkthrough_runs_as_documented() {
    init();
    let args: Vec<String> = [
        "--config",
        "regate.approvals.yaml",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let process = Process::start(&args, &[]);
    let admin = process.admin.unwrap();
    let ca = std::fs::read_to_string("certs-dev/ca.pem").unwrap();
    let config = client_config(&ca, Some(&dev_identity("executor")), &[b"http/1.1"]);
    let mut executor = http1_over(tls_connect(process.addr, config).await.unwrap()).await;
    let call = |id: u32, to: &str, token: Option<&str>| {
        let body = format!(
            r#"{{"jsonrpc": "2.0", "id": {id}, "method": "tools/call", "params": {{"name": "send_email", "arguments": {{"to": ["{to}"], "subject": "hi", "body": "…"}}}}}}"#
        );
        let mut req = http::Request::builder()
            .method("POST")
            .uri("/mcp")
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            req = req.header("x-regate-approval", token);
        }
        req.body(
            http_body_util::Full::new(bytes::Bytes::from(body))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
    };
    use http_body_util::BodyExt;

    // Inside the company: allowed, with the tightest budget's headers.
    let (status, headers, _) = send(&mut executor, call(1, "carol@example.org", None)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["ratelimit-policy"], "\"send_email\";q=10;w=3600");
    assert!(headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"send_email\";r=9;t="));

    // Outside: held for a person, as a JSON-RPC error.
    let outside = "someone@elsewhere.example";
    let (status, _, body) = send(&mut executor, call(2, outside, None)).await;
    assert_eq!(status, 403);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], -32042);
    let asked = &error["error"]["data"]["approval_request"];
    assert_eq!(asked["approvers"][0], "group:oncall");
    assert_eq!(asked["asked"]["tool"], "send_email");
    // The digest as the walkthrough's Python recomputes it.
    let canonical = serde_json::json!({
        "v": 1, "spiffe_id": "spiffe://example.org/ns/agents/sa/executor",
        "delegation_subject": null, "method": "POST", "path": "/mcp",
        "action": {"tool": "send_email", "arguments": {"to": [outside], "subject": "hi", "body": "…"}},
    })
    .to_string();
    assert_eq!(
        asked["digest"],
        format!("sha256:{}", sha256_hex(canonical.as_bytes()))
    );

    // Someone on call approves through the admin listener.
    let (status, listed) = admin_send(admin, "GET", "/approvals", "").await;
    assert_eq!(status, 200);
    assert!(listed.contains(asked["id"].as_str().unwrap()));
    let path = format!("/approvals/{}", asked["id"].as_str().unwrap());
    let (status, granted) =
        admin_send(admin, "POST", &path, r#"{"approver": "alice@example.org"}"#).await;
    assert_eq!(status, 200, "{granted}");
    let granted: serde_json::Value = serde_json::from_str(&granted).unwrap();
    let token = granted["token"].as_str().unwrap();

    // The very same call with the token goes through, once.
    let (status, _, _) = send(&mut executor, call(3, outside, Some(token))).await;
    assert_eq!(status, 200);
    let (status, _, body) = send(&mut executor, call(4, outside, Some(token))).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("approval_used"));
    // On another recipient it approves nothing.
    let (status, _, body) = send(
        &mut executor,
        call(5, "other@elsewhere.example", Some(token)),
    )
    .await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("approval_mismatch"));

    // The eleventh internal e-mail within the hour is over budget.
    for id in 6..15 {
        let (status, _, _) = send(&mut executor, call(id, "carol@example.org", None)).await;
        assert_eq!(status, 200, "e-mail {id}");
    }
    let (status, headers, body) = send(&mut executor, call(15, "carol@example.org", None)).await;
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));
    assert!(headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"send_email\";r=0;t="));
    assert!(String::from_utf8_lossy(&body).contains("rate_limited"));
    assert!(process.stop().success());
}
