//! The whole MCP authorization dance with implementations nobody here wrote: the official MCP
//! SDK (Python `mcp`) as client and server, and npm's `oidc-provider` as the authorization
//! server, with regate between client and server as the OAuth resource server
//! (`oauth_resource:`, its `resource` regate's own URL so the metadata URL leads back to it).
//!
//! The SDK's client knows only regate's URL, its client certificate, and its client
//! credentials (with the issuer they belong to). Its discovery is the SDK's own
//! (`ClientCredentialsOAuthProvider`; the fixture builds no URL and no token request): the
//! first call is a 401 whose `resource_metadata` leads to regate's metadata, which names the
//! provider; the SDK reads the provider's metadata, gets a token with the client-credentials
//! grant and `resource=` (RFC 8707), and calls again. It then lists the tools, seeing only
//! those both its certificate's grants and its token's scope allow (filtered by regate), calls
//! them, an event-stream one included, and is refused the one it is not granted. The SDK's
//! server behind regate never sees the token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/mcp_sdk.rs"]
mod mcp_sdk;
#[path = "common/oidc.rs"]
mod oidc;

use std::time::Duration;

use common::*;
use mcp_sdk::{requests_seen, run_client, start_server};
use oidc::OidcProvider;

/// The example policy's grants: the summarizer's certificate is granted three tools, and as a
/// token's holder it may use only those its token's scope covers (`read_doc` needs a scope
/// the provider never grants).
const DATA: &str = r#"{
  "agents": {
    "spiffe://example.org/ns/agents/sa/summarizer": {"tools": ["search", "read_doc", "count"]}
  },
  "arguments": {"search": ["q"], "read_doc": ["path"], "count": ["n"], "send_email": ["to"]},
  "scopes": {"search": "tools:call", "count": "tools:call", "read_doc": "docs:read"}
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_client_discovers_authorization_from_regate_gets_a_token_and_calls_tools() {
    let setup = Setup::new(&[
        (
            "examples/mcp_tools/policy.rego",
            include_str!("../policies/examples/mcp_tools/policy.rego"),
        ),
        ("examples/mcp_tools/data.json", DATA),
    ]);
    // regate's port first: its `resource` is its own URL.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let resource = format!(
        "https://localhost:{}/mcp",
        listener.local_addr().unwrap().port()
    );
    let metadata_url = format!(
        "https://localhost:{}/.well-known/oauth-protected-resource/mcp",
        listener.local_addr().unwrap().port()
    );

    let idp_ca = Ca::new("identity provider CA");
    std::fs::write(setup.path("idp-ca.pem"), &idp_ca.pem).unwrap();
    let idp = OidcProvider::start(setup.dir.path(), &idp_ca, &[&resource], 0);
    // No `authorization_servers`: the metadata names the delegation issuer.
    let config = format!(
        "delegation:\n  issuers:\n    - issuer: {}\n      discovery: true\n      ca: idp-ca.pem\n      \
         algorithms: [ES256]\noauth_resource:\n  resource: {resource}\n  \
         scopes_supported: [tools:read, tools:call]\n",
        idp.issuer
    );
    std::fs::write(setup.path("regate.yaml"), config).unwrap();

    let upstream_log = setup.path("upstream-requests.jsonl");
    let (_server, server_port) = start_server(&[
        "--stream-lists",
        "--requests",
        upstream_log.to_str().unwrap(),
    ]);
    let yaml = setup.path("regate.yaml").display().to_string();
    let regate = setup
        .start_on(
            listener,
            &format!("http://127.0.0.1:{server_port}"),
            &[
                "--config",
                &yaml,
                "--query",
                "data.examples.mcp_tools.allow",
                "--mcp-tools-list-query",
                "data.examples.mcp_tools.tool_visible",
            ],
        )
        .await;
    let ready = eventually(Duration::from_secs(20), || async {
        admin_get(regate.admin, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready, "{:?}", admin_get(regate.admin, "/readyz").await);

    let idp_ca_path = setup.path("idp-ca.pem").display().to_string();
    let issuer = idp.issuer.clone();
    let (seen, setup) = tokio::task::spawn_blocking({
        let url = resource.clone();
        move || {
            let seen = run_client(&setup, &url, &["--oauth", &issuer, &idp_ca_path]);
            (seen, setup)
        }
    })
    .await
    .unwrap();

    // (1) The first call carries no token and is challenged, pointing at regate's metadata.
    let exchanges: Vec<&serde_json::Value> = seen["exchanges"].as_array().unwrap().iter().collect();
    let first = exchanges[0];
    assert_eq!(
        (&first["method"], &first["url"], &first["status"]),
        (&"POST".into(), &resource.as_str().into(), &401.into()),
        "{seen}"
    );
    let challenge = first["www_authenticate"].as_str().unwrap();
    assert!(
        challenge.contains(&format!(r#"resource_metadata="{metadata_url}""#)),
        "{challenge}"
    );
    // (2) The SDK followed it to regate, then to the provider regate's metadata names: its
    // metadata (after any well-known URL the provider does not serve), then its token
    // endpoint; then it called again, and was let in.
    assert_eq!(exchanges[1]["url"], metadata_url.as_str(), "{seen}");
    assert_eq!(exchanges[1]["status"], 200, "{seen}");
    let token_at = exchanges
        .iter()
        .position(|e| e["url"] == format!("{}/token", idp.issuer).as_str())
        .unwrap_or_else(|| panic!("no token request: {seen}"));
    let discovery = &exchanges[2..token_at];
    assert!(!discovery.is_empty(), "{seen}");
    for exchange in discovery {
        let url = exchange["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("{}/.well-known/", idp.issuer)),
            "{seen}"
        );
    }
    assert_eq!(discovery.last().unwrap()["status"], 200, "{seen}");
    assert_eq!(exchanges[token_at]["status"], 200, "{seen}");
    assert_eq!(
        (
            &exchanges[token_at + 1]["url"],
            &exchanges[token_at + 1]["status"]
        ),
        (&resource.as_str().into(), &200.into()),
        "{seen}"
    );
    // One challenge, one token: the SDK used its token for everything after.
    let statuses: Vec<_> = exchanges.iter().map(|e| e["status"].clone()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 1, "{seen}");
    assert_eq!(idp.served("token").await, 1);

    // (3) The client-credentials grant, for regate's resource (RFC 8707), with the scope the
    // challenge named; the token's audience is that resource.
    assert_eq!(
        seen["token_request"],
        serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": "agent",
            "resource": resource,
            "scope": "tools:read tools:call",
        }),
        "{seen}"
    );
    assert_eq!(seen["token"]["iss"], idp.issuer.as_str(), "{seen}");
    assert_eq!(seen["token"]["aud"], resource.as_str(), "{seen}");

    // (4) Tools, filtered by certificate grant and token scope; calls, one streamed.
    assert_eq!(
        seen["tools"],
        serde_json::json!(["count", "search"]),
        "{seen}"
    );
    assert_eq!(seen["logs"], serde_json::json!(["listing tools"]), "{seen}");
    assert_eq!(seen["search"]["result"], "results for rego", "{seen}");
    assert_eq!(
        seen["progress"],
        serde_json::json!([1.0, 2.0, 3.0]),
        "{seen}"
    );
    assert_eq!(seen["count"]["result"], "counted to 3", "{seen}");
    assert!(seen["send_email"]["refused"].is_string(), "{seen}");

    // The SDK's server saw the calls regate let through, and never a token.
    let received = requests_seen(&upstream_log);
    assert!(received.len() >= 3, "{received:?}");
    assert!(
        received.iter().all(|r| r["authorization"].is_null()),
        "{received:?}"
    );
    let tools: Vec<&str> = received
        .iter()
        .filter_map(|r| r["x-mcp-tool"].as_str())
        .collect();
    assert_eq!(tools, ["search", "count"], "{received:?}");

    // And regate's records tell the same story.
    let records = regate.decisions(6).await;
    assert_eq!(records[0]["reason"], "token_missing", "{records:?}");
    assert_eq!(records[0]["http_status"], 401);
    assert_eq!(records[1]["reason"], "resource_metadata", "{records:?}");
    let listing = records
        .iter()
        .find(|r| r["tools_list"].is_object())
        .unwrap_or_else(|| panic!("no tools/list record: {records:?}"));
    assert_eq!(
        listing["tools_list"],
        serde_json::json!({"listed": 4, "hidden": 2})
    );
    assert!(
        records
            .iter()
            .any(|r| r["reason"] == "tool_not_granted" && r["http_status"] == 403),
        "{records:?}"
    );
    drop(setup);
}
