//! `--health-listen`: probes and metrics on an address kubelet and Prometheus can reach,
//! while `/status` and the kill switch stay on the loopback admin listener.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

#[tokio::test]
async fn the_health_listener_answers_probes_and_metrics_and_nothing_else() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let mut args = setup.args(&upstream.url());
    args.extend(["--health-listen".to_string(), "127.0.0.1:0".to_string()]);
    let regate = Process::start(&args, &[]);
    let mut health: Option<SocketAddr> = None;
    let found = eventually(Duration::from_secs(10), || {
        health = regate
            .stderr()
            .lines()
            .find_map(|l| l.split("health=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        std::future::ready(health.is_some())
    })
    .await;
    assert!(found, "{}", regate.stderr());
    let health = health.unwrap();

    assert_eq!(admin_get(health, "/healthz").await.0, 200);
    assert_eq!(admin_get(health, "/readyz").await.0, 200);
    let (code, metrics) = admin_get(health, "/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("regate_policy_info"), "{metrics}");
    // What reveals the policy and certificates, or changes anything, is not served here.
    assert_eq!(admin_get(health, "/status").await.0, 404);
    assert_eq!(admin_get(health, "/revocations").await.0, 404);
    let (code, _) = admin_send(
        health,
        "POST",
        "/revocations",
        &format!(r#"{{"spiffe_id":"{SUMMARIZER}"}}"#),
    )
    .await;
    assert_eq!(code, 405);
    // The admin listener still serves all of it.
    let admin = regate.admin.expect("the admin listener");
    assert_eq!(admin_get(admin, "/status").await.0, 200);
    assert!(regate.stop().success());
}
