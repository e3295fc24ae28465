//! A request the upstream received is recorded even when the client gives up before the
//! response head: closing an HTTP/1.1 connection or resetting an HTTP/2 stream leaves a
//! decision record with reason `client_cancelled` (status 499), and the metric counts it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

async fn upstream_has(upstream: &Upstream, n: usize) -> bool {
    eventually(Duration::from_secs(10), || async {
        upstream.arrived.load(Ordering::SeqCst) >= n
    })
    .await
}

#[tokio::test]
async fn an_http1_client_that_closes_before_the_answer_is_recorded() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start_with_delay(Duration::from_secs(3)).await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut tls = regate
        .connect(setup.client_config(Some(&setup.ca.client(SUMMARIZER)), &[b"http/1.1"]))
        .await
        .unwrap();
    tls.write_all(b"GET /docs/slow HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(upstream_has(&upstream, 1).await);
    drop(tls);

    let records = regate.decisions(1).await;
    assert_eq!(records[0]["path"], "/docs/slow");
    assert_eq!(records[0]["allowed"], true);
    assert_eq!(records[0]["reason"], "client_cancelled");
    assert_eq!(records[0]["http_status"], 499);
    assert!(records[0]["upstream_status"].is_null());
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"regate_requests_total{decision="allow",reason="client_cancelled"} 1"#),
        "{metrics}"
    );
    regate.stop().await;
}

#[tokio::test]
async fn an_http2_stream_reset_before_the_answer_is_recorded() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start_with_delay(Duration::from_secs(3)).await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http2(&setup, &setup.ca.client(SUMMARIZER)).await;
    let mut req = request("GET", "https://localhost/docs/reset", b"");
    req.headers_mut().remove("host");
    // Dropping the response future resets the stream (RST_STREAM CANCEL).
    let pending = client.send_request(req);
    let waiting = tokio::spawn(pending);
    assert!(upstream_has(&upstream, 1).await);
    waiting.abort();
    // The connection itself stays up: a later request on it is served normally.
    let mut req = request("GET", "https://localhost/docs/after", b"");
    req.headers_mut().remove("host");
    let answered = tokio::spawn(client.send_request(req));

    let records = regate.decisions(1).await;
    let reset = records.iter().find(|r| r["path"] == "/docs/reset").unwrap();
    assert_eq!(reset["reason"], "client_cancelled");
    assert_eq!(reset["http_status"], 499);
    assert_eq!(answered.await.unwrap().unwrap().status(), 200);
    regate.stop().await;
}
