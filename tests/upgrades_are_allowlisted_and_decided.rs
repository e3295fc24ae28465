//! An upgrade turns a connection into a tunnel that no policy sees again, so regate forwards
//! only the protocols in `--upgrade-protocol` (default `websocket`), never `h2c`, and the
//! policy decides each one knowing it is an upgrade (`input.upgrade`). An upstream that
//! switches protocols when nobody asked it to is answered 502, not tunnelled.
//!
//! The upstream here really switches: asked for h2c, it answers 101 and serves HTTP/2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// POST and GET under /docs are allowed, upgrades only to websocket on /ws.
const POLICY: &str = r#"package regate.authz

default allow := false

allow if {
	input.parsed_path[0] == "docs"
	not input.upgrade
}

allow if {
	input.parsed_path[0] == "ws"
	input.upgrade == "websocket"
}

allow if input.parsed_path[0] in {"unasked-101", "switch-to-h2c"}
"#;

/// The HTTP/2 client preface and an empty SETTINGS frame, as an h2c client sends them right
/// after a 101.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test]
async fn an_h2c_upgrade_is_never_forwarded_and_the_connection_stays_http1() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = SwitchingUpstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let client = setup.ca.client(SUMMARIZER);
    let mut tls = regate
        .connect(setup.client_config(Some(&client), &[b"http/1.1"]))
        .await
        .unwrap();
    // HTTP2-Settings left out of Connection, a body on a POST: the attack as found.
    tls.write_all(
        b"POST /docs/a HTTP/1.1\r\nhost: localhost\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\
          http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(status_of(&answer), 200, "{answer}");
    // Then speak HTTP/2 on the same connection, as a client would after a 101.
    tls.write_all(H2_PREFACE).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut rest),
    )
    .await;

    let heads = upstream.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = heads[0].to_ascii_lowercase();
    assert!(!head.contains("upgrade"), "{head}");
    assert!(!head.contains("http2-settings"), "{head}");
    assert!(
        upstream.h2_requests.lock().unwrap().is_empty(),
        "the upstream served HTTP/2 requests nobody authorized"
    );
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["upstream_status"], 200);
    regate.stop().await;
}

#[tokio::test]
async fn an_upgrade_to_a_protocol_not_allowed_is_refused_before_policy() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = SwitchingUpstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let client = setup.ca.client(SUMMARIZER);
    for protocol in ["foo", "websocket, foo", "TLS/1.2"] {
        let req = format!(
            "GET /docs/a HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
        );
        let answer = raw_http1(&regate, &setup, &client, req.as_bytes()).await;
        assert_eq!(status_of(&answer), 403, "{protocol}: {answer}");
        assert!(answer.contains("upgrade_not_allowed"), "{answer}");
    }
    assert!(upstream.heads().is_empty());
    let records = regate.decisions(3).await;
    assert!(records
        .iter()
        .all(|r| r["reason"] == "upgrade_not_allowed" && r["eval_ns"] == 0));
    regate.stop().await;
}

#[tokio::test]
async fn a_websocket_upgrade_is_decided_by_the_policy_as_an_upgrade() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = SwitchingUpstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let client = setup.ca.client(SUMMARIZER);
    let upgrade = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    // The policy grants /docs only to plain requests: an upgrade there is denied.
    let answer = raw_http1(&regate, &setup, &client, upgrade("/docs/a").as_bytes()).await;
    assert_eq!(status_of(&answer), 403, "{answer}");

    let mut tls = regate
        .connect(setup.client_config(Some(&client), &[b"http/1.1"]))
        .await
        .unwrap();
    tls.write_all(upgrade("/ws").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tls.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert_eq!(status_of(&answer), 101, "{answer}");
    assert!(answer.contains("upgrade: websocket"), "{answer}");
    tls.write_all(b"ping over the tunnel").await.unwrap();
    let mut echo = [0u8; 20];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_exact(&mut echo),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&echo, b"ping over the tunnel");
    drop(tls);

    let heads = upstream.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].to_ascii_lowercase().contains("upgrade: websocket"));
    // The request's record, then the tunnel's end with the bytes each way.
    let records = regate.decisions(3).await;
    let tunnel = records
        .iter()
        .find(|r| r["event"] == "tunnel_closed")
        .unwrap_or_else(|| panic!("no tunnel record in {records:?}"));
    assert_eq!(tunnel["protocol"], "websocket");
    assert_eq!(tunnel["reason"], "closed");
    assert_eq!(tunnel["bytes_from_client"], 20);
    assert_eq!(tunnel["bytes_from_upstream"], 20);
    assert!(tunnel["duration_ns"].as_u64().unwrap() > 0);
    let opened = records
        .iter()
        .find(|r| r["upstream_status"] == 101)
        .unwrap();
    assert_eq!(opened["request_id"], tunnel["request_id"]);
    regate.stop().await;
}

#[tokio::test]
async fn with_no_upgrade_protocols_allowed_a_websocket_is_refused() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = SwitchingUpstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--upgrade-protocol", "none"])
        .await;
    let req =
        b"GET /ws HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
    let answer = raw_http1(&regate, &setup, &setup.ca.client(SUMMARIZER), req).await;
    assert_eq!(status_of(&answer), 403, "{answer}");
    assert!(upstream.heads().is_empty());
    regate.stop().await;
}

#[tokio::test]
async fn an_upstream_that_switches_unasked_or_to_another_protocol_is_a_502() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = SwitchingUpstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let client = setup.ca.client(SUMMARIZER);
    let answer = raw_http1(
        &regate,
        &setup,
        &client,
        b"GET /unasked-101 HTTP/1.1\r\nhost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 502, "{answer}");
    let answer = raw_http1(
        &regate,
        &setup,
        &client,
        b"GET /switch-to-h2c HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 502, "{answer}");
    let records = regate.decisions(2).await;
    assert!(records.iter().all(|r| r["reason"] == "upstream_error"));
    regate.stop().await;
}
