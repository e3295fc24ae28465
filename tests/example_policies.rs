//! The checked-in example policies pass their own Rego tests, run as CI runs them
//! (`regate policy test policies/`), and the README's quick start (dev certificates,
//! example policies, demo upstream) allows and denies as documented.

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
    ] {
        assert!(
            stdout.lines().filter(|l| l.contains(package)).count() >= 3,
            "expected tests of {package}:\n{stdout}"
        );
    }
    assert!(stdout.contains(" 0 failed, 0 errors"), "{stdout}");
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
    let identity = |name: &str| {
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
    };
    let connect = |name: &'static str| {
        let config = client_config(&ca, Some(&identity(name)), &[b"http/1.1"]);
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
