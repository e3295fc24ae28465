//! SIGTERM drains like a Kubernetes sidecar should: /readyz goes to 503, new connections are
//! refused, the request in flight completes, and regate exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn slow_request_completes_after_sigterm_while_new_connections_are_refused() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start_with_delay(Duration::from_secs(3)).await;
    let process = Process::start(&setup.args(&upstream.url()), &[]);
    let admin = process.admin.expect("the admin listener address is logged");
    assert_eq!(admin_get(admin, "/readyz").await.0, 200);

    let mut client = process.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let in_flight = tokio::spawn(async move { get(&mut client, "/docs/slow").await });
    // The request is in flight once the upstream has its head (it answers 3 s later).
    let arrived = eventually(Duration::from_secs(10), || async {
        upstream.arrived.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    assert!(arrived);

    process.terminate();
    let draining = eventually(Duration::from_secs(5), || async {
        admin_try_get(admin, "/readyz").await == Some((503, "draining\n".to_string()))
    })
    .await;
    assert!(
        draining,
        "/readyz did not flip: {}\n{}",
        process.stderr(),
        std::fs::read_to_string(setup.path("decisions.log")).unwrap_or_default()
    );
    let refused = tls_connect(
        process.addr,
        setup.client_config(Some(&setup.ca.client(SUMMARIZER)), &[b"http/1.1"]),
    )
    .await
    .is_err();
    assert!(refused, "a new connection was accepted during the drain");

    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request was cut off");
    assert!(body.starts_with(b"ok"));
    assert!(process.wait().success());
    let records = wait_for_lines(&setup.path("decisions.log"), 1).await;
    assert_eq!(
        records[0]["path"], "/docs/slow",
        "the drained request was recorded"
    );
}
