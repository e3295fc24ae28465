//! Silent connections do not stay open: a connection with nothing in flight for
//! `--idle-timeout` is closed, whether it never sent a byte, sits idle between HTTP/1.1
//! requests, or is an idle HTTP/2 connection. A slow answer is not idleness. And one client
//! certificate cannot hold more than `--max-connections-per-identity` connections, so a
//! client the policy denies cannot crowd out one it allows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether the server closes `io` (EOF or an error on read) within twenty seconds; far past
/// the one-second idle timeout, so only a connection nobody closes fails this.
async fn server_closes<S: tokio::io::AsyncRead + Unpin>(io: &mut S) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), io.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--idle-timeout", "1s"])
        .await;
    // ALPN says nothing, so the server must sniff for HTTP/1 or HTTP/2: it waits for a byte.
    let mut silent = regate
        .connect(setup.client_config(Some(&setup.ca.client(SUMMARIZER)), &[]))
        .await
        .unwrap();
    assert!(
        server_closes(&mut silent).await,
        "the silent connection stayed open"
    );
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    assert!(
        metrics.contains("regate_idle_connections_closed_total 1"),
        "{metrics}"
    );
    regate.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_last_request() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--idle-timeout", "1s"])
        .await;
    let mut tls = regate
        .connect(setup.client_config(Some(&setup.ca.client(SUMMARIZER)), &[b"http/1.1"]))
        .await
        .unwrap();
    tls.write_all(b"GET /docs/a HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&read_response(&mut tls).await), 200);
    assert!(
        server_closes(&mut tls).await,
        "the idle connection stayed open"
    );
    regate.stop().await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--idle-timeout", "1s"])
        .await;
    let tls = regate
        .connect(setup.client_config(Some(&setup.ca.client(SUMMARIZER)), &[b"h2"]))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let mut req = request("GET", "https://localhost/docs/a", b"");
    req.headers_mut().remove("host");
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    // The server's GOAWAY ends the client's connection task.
    let ended = tokio::time::timeout(Duration::from_secs(20), conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection stayed open");
    regate.stop().await;
}

#[tokio::test]
async fn a_slow_answer_is_not_idleness() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start_with_delay(Duration::from_millis(2500)).await;
    let regate = setup
        .start(&upstream.url(), &["--idle-timeout", "1s"])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut client, "/docs/slow").await.0, 200);
    regate.stop().await;
}

#[tokio::test]
async fn one_certificate_cannot_hold_every_connection() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--max-connections-per-identity", "3"])
        .await;
    // A caller the policy denies outright opens silent connections.
    let denied = setup.ca.client(EXECUTOR);
    let config = setup.client_config(Some(&denied), &[b"http/1.1"]);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(regate.connect(config.clone()).await.unwrap());
    }
    // A fourth with the same certificate is closed right after its handshake.
    let mut fourth = regate.connect(config.clone()).await.unwrap();
    let _ = fourth
        .write_all(b"GET /docs/a HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    assert!(server_closes(&mut fourth).await);
    // The allowed caller is still served.
    let mut allowed = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut allowed, "/docs/a").await.0, 200);
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"regate_connections_refused_total{reason="per_identity"} 1"#),
        "{metrics}"
    );
    // A closed connection gives its place back, once regate has seen it close.
    drop(held.pop());
    let served_again = eventually(Duration::from_secs(10), || async {
        let Ok(mut again) = regate.connect(config.clone()).await else {
            return false;
        };
        let sent = again
            .write_all(b"GET /docs/a HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await;
        let answer = read_response(&mut again).await;
        sent.is_ok() && answer.starts_with("HTTP/1.1 403")
    })
    .await;
    assert!(served_again, "the certificate never got its place back");
    regate.stop().await;
}
