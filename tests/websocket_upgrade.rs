//! An allowed HTTP/1.1 upgrade (WebSocket) passes through, and bytes flow both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let policy = r#"package regate.authz
allow if input.attributes.request.http.headers.upgrade == "websocket"
"#;
    let setup = Setup::new(&[("authz.rego", policy)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let mut req = request("GET", "/ws", b"");
    let h = req.headers_mut();
    h.insert("connection", "Upgrade".parse().unwrap());
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("sec-websocket-version", "13".parse().unwrap());
    h.insert(
        "sec-websocket-key",
        "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
    );
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    io.write_all(b"ping over the upgraded stream")
        .await
        .unwrap();
    let mut buf = [0u8; 29];
    tokio::time::timeout(std::time::Duration::from_secs(10), io.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping over the upgraded stream");
    let seen = &upstream.requests()[0];
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(
        seen.headers["sec-websocket-key"],
        "dGhlIHNhbXBsZSBub25jZQ=="
    );
    regate.stop().await;
}
