//! The checked-in example policies pass their own Rego tests, and the README's quick start
//! (dev certificates, example policies, demo upstream) allows and denies as documented.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

/// Every `test_*` rule in `policies/`, as `data.<package>.<rule>`. Listed from the source,
/// because regorus drops a failing test from its results instead of reporting it false.
fn rego_tests() -> Vec<String> {
    let mut tests = Vec::new();
    for entry in std::fs::read_dir("policies").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rego") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let package = text
            .lines()
            .find_map(|l| l.strip_prefix("package "))
            .unwrap()
            .trim()
            .to_string();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("test_") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                tests.push(format!("data.{package}.test_{name}"));
            }
        }
    }
    tests
}

#[test]
fn example_policies_pass_their_rego_tests() {
    let mut engine = regorus::Engine::new();
    for entry in std::fs::read_dir("policies").unwrap() {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("rego") => {
                engine.add_policy_from_file(&path).unwrap();
            }
            Some("json") => engine
                .add_data(regorus::Value::from_json_file(&path).unwrap())
                .unwrap(),
            _ => {}
        }
    }
    let tests = rego_tests();
    assert!(
        tests.len() >= 5,
        "expected the example's tests, found {tests:?}"
    );
    let mut failed = Vec::new();
    for test in &tests {
        match engine.eval_rule(test.clone()) {
            Ok(regorus::Value::Bool(true)) => {}
            other => failed.push(format!("{test}: {other:?}")),
        }
    }
    assert!(
        failed.is_empty(),
        "failing Rego tests:\n{}",
        failed.join("\n")
    );
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
